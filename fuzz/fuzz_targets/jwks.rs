//! JWKS readers: keyward-guard's and the terminal client's key set
//! (`keyward_proto::discovery::Jwks` into `KeySet::from_jwks`, each key through
//! `PublicKey::from_jwk`; guard `jwks.rs`), a trusted issuer's JWKS and discovery
//! document (`upstream/trusted.rs`, `read_jwks`, `jwks_uri_of`), and the discovery
//! members the guard and the client read (`IssuerMetadata`, `ProviderEndpoints`).
//! Each key that is read then checks a token signed by another key (it must refuse it)
//! and a token in its own name with a made-up signature.
#![no_main]

mod common;

use keyward_proto::discovery::{Jwks, ProviderEndpoints};
use keyward_proto::jws::{self, Expect, KeySet, PublicKey};
use keyward_server::upstream::trusted::{jwks_uri_of, read_jwks};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://ci.example.com";

fuzz_target!(|data: &[u8]| {
    let url = "https://ci.example.com/jwks";
    let _ = jwks_uri_of(
        ISSUER,
        "https://ci.example.com/.well-known/openid-configuration",
        data,
    );
    let _ = serde_json::from_slice::<keyward_guard::jwks::IssuerMetadata>(data);
    let _ = serde_json::from_slice::<ProviderEndpoints>(data);
    if let Ok(keys) = read_jwks(url, data) {
        let signer = common::Signer::new();
        let header = br#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz-k1"}"#;
        let token = signer.sign(
            header,
            br#"{"iss":"https://ci.example.com","sub":"x","exp":1}"#,
        );
        let expect = Expect {
            typ: "JWT",
            issuer: ISSUER,
            now: None,
        };
        // The fuzzer's key set may hold fuzz-k1, but not the signer's key: a signature
        // by another key must never pass.
        let fixed = PublicKey::from_jwk(&signer.jwk()).unwrap();
        if keys.get(common::KID) != Some(&fixed) {
            assert!(jws::verify::<serde_json::Value>(&token, &keys, &expect).is_err());
        }
    }
    if let Ok(jwks) = serde_json::from_slice::<Jwks>(data) {
        let set = KeySet::from_jwks(&jwks);
        assert!(set.len() <= jwks.keys.len());
        for jwk in &jwks.keys {
            if let Ok(key) = PublicKey::from_jwk(jwk) {
                assert!(!key.verify(b"message", b"not a signature"));
                let _ = key.verify(b"message", &[0; 64]);
                let _ = key.verify(b"message", &[1; 256]);
            }
        }
    }
});
