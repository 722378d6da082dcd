//! What keyward-server reads from upstream providers (`upstream/`): an OpenID Connect
//! provider's discovery document (through `openidconnect`, then `oidc::check_metadata`),
//! its JWKS and ID tokens (`oidc::check_exchange_id_token`, the token exchange's check
//! of a provider's ID token), its userinfo answer (`oidc::UserInfo`, then
//! `oidc::merge_userinfo`), and GitHub's `Link` header (`github::next_page`, with
//! `github::is_under` on the page it names).
//!
//! The first byte picks what the rest is: 0 a discovery document, 1 a JWKS, 2 a
//! userinfo answer, 3 an ID token as it arrives, 4 an ID token's header and payload
//! (split at 0xFF) signed by a key of the provider's JWKS, 5 a `Link` header.
#![no_main]

mod common;

use axum::http::{HeaderMap, HeaderValue, header};
use keyward_server::config::connectors::OidcSettings;
use keyward_server::upstream::UpstreamIdentity;
use keyward_server::upstream::github::{is_under, next_page};
use keyward_server::upstream::oidc::{
    UserInfo, check_exchange_id_token, check_metadata, merge_userinfo,
};
use libfuzzer_sys::fuzz_target;
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};

const DISCOVERY: &str = r#"{
  "issuer": "https://op.example.com",
  "authorization_endpoint": "https://op.example.com/authorize",
  "token_endpoint": "https://op.example.com/token",
  "userinfo_endpoint": "https://op.example.com/userinfo",
  "jwks_uri": "https://op.example.com/jwks",
  "response_types_supported": ["code"],
  "subject_types_supported": ["public"],
  "id_token_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"]
}"#;
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let signer = common::Signer::new();
    let settings = OidcSettings {
        issuer: url::Url::parse("https://op.example.com").unwrap(),
        client_id: "keyward".into(),
        client_secret: None,
        exchange_audiences: vec!["cli".into()],
        scopes: vec!["openid".into()],
    };
    let metadata: CoreProviderMetadata = serde_json::from_str(DISCOVERY).unwrap();
    let own_keys: CoreJsonWebKeySet =
        serde_json::from_value(serde_json::json!({ "keys": [signer.jwk()] })).unwrap();
    match mode % 6 {
        0 => {
            if let Ok(found) = serde_json::from_slice::<CoreProviderMetadata>(rest) {
                let _ = check_metadata(&found);
            }
        }
        1 => {
            if let Ok(keys) = serde_json::from_slice::<CoreJsonWebKeySet>(rest) {
                let header = br#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz-k1"}"#;
                let payload = br#"{"iss":"https://op.example.com","sub":"s","aud":"keyward","exp":1900000000,"iat":1700000000}"#;
                let token = signer.sign(header, payload);
                let _ = check_exchange_id_token(&settings, &metadata.set_jwks(keys), &token, NOW);
            }
        }
        2 => {
            // As openidconnect reads a JSON userinfo answer for the ID token's subject.
            let subject = openidconnect::SubjectIdentifier::new("s".into());
            if let Ok(info) = UserInfo::from_json::<std::io::Error>(rest, Some(&subject)) {
                let mut identity = UpstreamIdentity {
                    subject: "s".into(),
                    ..UpstreamIdentity::default()
                };
                merge_userinfo(&mut identity, &info);
                assert!(identity.groups.len() <= 256);
            }
        }
        3 => {
            let token = String::from_utf8_lossy(rest);
            let _ = check_exchange_id_token(&settings, &metadata.set_jwks(own_keys), &token, NOW);
        }
        4 => {
            let (header, payload) = common::header_and_payload(rest, "JWT");
            let token = signer.sign(&header, &payload);
            let checked =
                check_exchange_id_token(&settings, &metadata.set_jwks(own_keys), &token, NOW);
            if let Ok(Some((identity, _))) = checked {
                assert!(identity.groups.len() <= 256);
            }
        }
        _ => {
            if let Ok(value) = HeaderValue::from_bytes(rest) {
                let mut headers = HeaderMap::new();
                headers.insert(header::LINK, value);
                if let Some(next) = next_page(&headers) {
                    let api = url::Url::parse("https://api.github.com/").unwrap();
                    let _ = is_under(&api, &next);
                }
            }
        }
    }
});
