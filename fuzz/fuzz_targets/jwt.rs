//! JWT/JWS parsing and verification: `keyward_proto::jws` (`header`, `verify`,
//! `verify_cached`), which keyward-server uses for its own tokens (`keys.rs`, at
//! introspection, userinfo, logout) and keyward-guard for access tokens
//! (`verify::check`); then what is read from verified claims: the access and ID token
//! claims, the guard's `nbf`/`aud`/scope checks, and a trusted issuer's machine
//! identity (`upstream/trusted.rs`, `machine_identity`).
//!
//! The first byte picks the mode: even, the rest is a token as it arrives (any bytes,
//! checked against a key set holding one Ed25519 key); odd, the rest is a header and a
//! payload (split at 0xFF, see `common`), signed with that key, so that the claims are
//! read after a good signature.
#![no_main]

mod common;

use keyward_proto::claims::{AccessTokenClaims, IdTokenClaims};
use keyward_proto::jws::{self, Expect, KeySet, PublicKey, SignatureCache};
use keyward_server::config::exchange::TrustedIssuerConfig;
use keyward_server::upstream::trusted::machine_identity;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://id.example.com";
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let signer = common::Signer::new();
    let mut keys = KeySet::default();
    keys.insert(common::KID, PublicKey::from_jwk(&signer.jwk()).unwrap());
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, payload) = common::header_and_payload(rest, "at+jwt");
        signer.sign(&header, &payload)
    };
    check(&token, &keys);
});

fn check(token: &str, keys: &KeySet) {
    let _ = jws::header(token);
    for (typ, now) in [("at+jwt", Some(NOW)), ("JWT", Some(NOW)), ("JWT", None)] {
        let expect = Expect {
            typ,
            issuer: ISSUER,
            now,
        };
        let _ = jws::verify::<AccessTokenClaims>(token, keys, &expect);
        let _ = jws::verify::<IdTokenClaims>(token, keys, &expect);
        let cache = SignatureCache::new(4);
        let first = jws::verify_cached::<serde_json::Value>(token, keys, &expect, &cache);
        let again = jws::verify_cached::<serde_json::Value>(token, keys, &expect, &cache);
        // A remembered signature changes nothing but the cost.
        assert_eq!(first, again);
        assert_eq!(
            first,
            jws::verify::<serde_json::Value>(token, keys, &expect)
        );
        if let Ok(serde_json::Value::Object(claims)) = first {
            let trusted = TrustedIssuerConfig {
                id: "ci".into(),
                issuer: ISSUER.into(),
                audience: "keyward".into(),
                subject_claims: vec!["repository".into(), "ref".into()],
            };
            if let Ok(machine) = machine_identity(&trusted, &claims, NOW) {
                assert!(machine.subject.starts_with("trusted:ci:"));
            }
        }
    }
    let requirements = keyward_guard::Requirements {
        issuer: ISSUER.into(),
        audience: Some("api".into()),
        scopes: vec!["read".into(), "queue:*".into()],
    };
    let _ = keyward_guard::verify::check(token, keys, &requirements, NOW, None);
    let cache = SignatureCache::new(4);
    let _ = keyward_guard::verify::check(token, keys, &requirements, NOW, Some(&cache));
}
