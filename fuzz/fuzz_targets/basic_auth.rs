//! HTTP Basic client authentication (RFC 6749 §2.3.1): the `Authorization` header as
//! `basic_credentials` reads it (base64, then form-urlencoded id and secret;
//! keyward-server `http/extract.rs`), the bearer token reader beside it, and the choice
//! between header and body credentials (`presented_credentials`, `http/client_auth.rs`).
//! The input is the header value, then optionally a 0x00 byte and the form body.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use keyward_proto::token::ClientCredentialsInBody;
use keyward_server::http::client_auth::presented_credentials;
use keyward_server::http::extract::{basic_credentials, bearer_token, parse_form};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (value, body) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    // What hyper would refuse never reaches keyward.
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Ok(Some((id, secret))) = basic_credentials(&headers) {
        // Whatever was decoded is what a client could have encoded.
        drop((id, secret));
    }
    if let Some(token) = bearer_token(&headers) {
        assert!(!token.is_empty());
    }
    let credentials = parse_form::<ClientCredentialsInBody>(body).unwrap_or_default();
    let _ = presented_credentials(&headers, credentials);
});
