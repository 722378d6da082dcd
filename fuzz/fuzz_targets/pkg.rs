//! The Julia package-server protocol bodies keyward's server reads (keyward-server
//! `http/pkg.rs`): the challenge of `POST /auth/challenge` (`read_challenge`) and the
//! JSON of `POST /auth/claimtoken` (`read_claim`), and the bearer token of
//! `GET /auth/refresh`.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use keyward_server::http::extract::bearer_token;
use keyward_server::http::pkg::{MAX_CHALLENGE, read_challenge, read_claim};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(challenge) = read_challenge(data) {
        assert!(!challenge.is_empty() && challenge.len() <= MAX_CHALLENGE);
        assert!(challenge.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    let _ = read_claim(data);
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        let _ = bearer_token(&headers);
    }
});
