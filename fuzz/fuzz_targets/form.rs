//! Form and query parsing: every `application/x-www-form-urlencoded` body or query
//! string keyward reads goes through `parse_form` / `parse_form_repeating`
//! (keyward-server `http/extract.rs`); the token endpoint reads its body with
//! `read_token_request` (`http/token.rs`, RFC 8693's repeatable parameters included).
//! The values then met by the protocol types' own parsers (scope, PKCE challenge, user
//! code) are parsed too.
#![no_main]

use keyward_proto::introspect::{IntrospectionRequest, RevocationRequest};
use keyward_proto::token::{ClientCredentialsInBody, TokenRequest};
use keyward_server::http::extract::{parse_form, parse_form_repeating};
use keyward_server::http::token::{GrantRequest, read_token_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_form::<TokenRequest>(data);
    let _ = parse_form::<ClientCredentialsInBody>(data);
    let _ = parse_form::<IntrospectionRequest>(data);
    let _ = parse_form::<RevocationRequest>(data);
    let _ = parse_form_repeating::<ClientCredentialsInBody>(data, &["audience", "resource"]);
    if let Ok(request) = read_token_request(data) {
        assert!(keyward_proto::token::GRANT_TYPES.contains(&request.grant_type.as_str()));
        if let GrantRequest::Exchange(exchange) = request.grant {
            assert_eq!(
                request.grant_type,
                keyward_proto::exchange::TOKEN_EXCHANGE_GRANT
            );
            drop(exchange);
        }
    }
    // The values of any parameter, as the protocol types parse them.
    for (_, value) in url::form_urlencoded::parse(data) {
        let _ = keyward_proto::ScopeSet::parse(&value);
        let _ = keyward_proto::pkce::CodeChallenge::parse(&value);
        let _ = keyward_proto::device::UserCode::parse(&value);
    }
});
