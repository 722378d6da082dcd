//! How long a resource server takes to check one of keyward's access tokens: the
//! published JWKS read once into a key set (as a resource server caches it), then, per
//! request, `keyward_proto::jws::verify`: header, key by `kid`, signature, `typ`,
//! `iss`, `sub`, `exp`, and the claims into `AccessTokenClaims`; and the same token
//! seen again with a `jws::SignatureCache` (`verify_cached`). The token and the JWKS
//! come from keyward's own key ring (keys generated and stored as `keyward serve` does).
//!
//! keyward guard's full check is measured too (`guard_check_*`): the same plus `aud`,
//! `nbf` and the required scopes with the wildcard grammar, as it runs per request.
//!
//! `cargo bench -p keyward-bench --bench verify`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_proto::claims::AccessTokenClaims;
use keyward_proto::jws::{self, Expect, KeySet};
use keyward_server::domain::SigningAlg;
use keyward_server::keys::Keys;

const ISSUER: &str = "https://id.example.com";

/// Tokens signed by a fresh key ring, and the JWKS it publishes.
fn issued() -> (String, String, keyward_proto::discovery::Jwks) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!(
            "keyward-bench-verify-{}",
            keyward_proto::secret::random_urlsafe(6)
        ));
        let store = keyward_server::store::open(&format!("sqlite://{}/k.db", dir.display()))
            .await
            .unwrap();
        let keys = Keys::load(
            store,
            Duration::from_secs(900),
            None,
            std::sync::Arc::new(keyward_server::clock::SystemClock),
        )
        .await
        .unwrap();
        let now = keyward_server::domain::now();
        let claims = AccessTokenClaims {
            iss: ISSUER.into(),
            sub: "k3YmL9cQ2vXh0aTu".into(),
            aud: "reports".into(),
            exp: now + 900,
            iat: now,
            jti: "q2Rb7XkWm1PzA0cV".into(),
            client_id: "reports".into(),
            scope: "openid profile api:read".into(),
            auth_time: Some(now),
            gid: Some("f8Zt3LpQ".into()),
            act: None,
            client_tag: None,
        };
        let es256 = keys.sign(SigningAlg::ES256, "at+jwt", &claims).unwrap();
        let rs256 = keys.sign(SigningAlg::RS256, "at+jwt", &claims).unwrap();
        let jwks = (*keys.jwks()).clone();
        drop(keys);
        let _ = std::fs::remove_dir_all(dir);
        (es256, rs256, jwks)
    })
}

fn verification(c: &mut Criterion) {
    let (es256, rs256, jwks) = issued();
    let keys = KeySet::from_jwks(&jwks);
    let expect = Expect {
        typ: "at+jwt",
        issuer: ISSUER,
        now: Some(keyward_server::domain::now()),
    };
    let mut group = c.benchmark_group("resource_server");
    group.bench_function("verify_access_token_es256", |b| {
        b.iter(|| jws::verify::<AccessTokenClaims>(black_box(&es256), &keys, &expect).unwrap())
    });
    group.bench_function("verify_access_token_rs256", |b| {
        b.iter(|| jws::verify::<AccessTokenClaims>(black_box(&rs256), &keys, &expect).unwrap())
    });
    // A token seen before (the client calls again with the token it holds): the
    // signature is found in the cache, the claims are checked again.
    let cache = jws::SignatureCache::new(1024);
    jws::verify_cached::<AccessTokenClaims>(&es256, &keys, &expect, &cache).unwrap();
    group.bench_function("verify_access_token_es256_seen_before", |b| {
        b.iter(|| {
            jws::verify_cached::<AccessTokenClaims>(black_box(&es256), &keys, &expect, &cache)
                .unwrap()
        })
    });
    // keyward guard's check per request: signature, claims, audience and a required
    // scope.
    let requirements = keyward_guard::verify::Requirements {
        issuer: ISSUER.into(),
        audience: Some("reports".into()),
        scopes: vec!["api:read".into()],
    };
    let now = keyward_server::domain::now();
    group.bench_function("guard_check_es256", |b| {
        b.iter(|| {
            keyward_guard::verify::check(black_box(&es256), &keys, &requirements, now, None)
                .unwrap()
        })
    });
    let guard_cache = jws::SignatureCache::new(1024);
    group.bench_function("guard_check_es256_seen_before", |b| {
        b.iter(|| {
            keyward_guard::verify::check(
                black_box(&es256),
                &keys,
                &requirements,
                now,
                Some(&guard_cache),
            )
            .unwrap()
        })
    });
    group.bench_function("read_jwks", |b| {
        b.iter(|| KeySet::from_jwks(black_box(&jwks)))
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
