//! Request parsing shared by the endpoints: form and query bodies (rejected input
//! becomes `invalid_request`, never axum's plain-text rejection), cookies, client
//! credentials in the `Authorization` header, and the peer address.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::OAuthError;
use crate::state::AppState;

/// The largest request body any endpoint accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// A request body of at most [`MAX_BODY`] bytes. Any content type is accepted, because
/// some clients (the Julia package client) send forms without one.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // A body trickled in a byte at a time must not hold the connection for ever.
        let timeout = state.config().http_read_timeout;
        let Ok(read) = tokio::time::timeout(timeout, Bytes::from_request(req, state)).await else {
            let mut error =
                OAuthError::invalid_request("the request body was not received in time");
            error.status = Some(StatusCode::REQUEST_TIMEOUT);
            return Err(error);
        };
        read.map(Body).map_err(|rejection| {
            let status = rejection.status();
            let mut error =
                OAuthError::invalid_request(if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("request body larger than {MAX_BODY} bytes")
                } else {
                    "unreadable request body".to_owned()
                });
            error.status = Some(if status == StatusCode::PAYLOAD_TOO_LARGE {
                status
            } else {
                StatusCode::BAD_REQUEST
            });
            error
        })
    }
}

/// The most bytes of a request head (request line and headers) read: more is answered
/// 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a request: more is answered 431.
pub const MAX_HEADERS: usize = 100;
/// The largest single header field value accepted: a larger one is answered 431.
pub const MAX_HEADER_VALUE: usize = 16 * 1024;

/// Middleware: answers 431 to a request with a header value over [`MAX_HEADER_VALUE`]
/// bytes, or headers over [`MAX_HEAD`] bytes in all, before any handler
/// parses them. (The connection stops reading a head at that size too, but a head that
/// arrives in one read is parsed whole first.)
pub async fn limit_header_sizes(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let headers = request.headers();
    let total: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if total > MAX_HEAD || headers.values().any(|v| v.len() > MAX_HEADER_VALUE) {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers are limited to 16 KiB each and 64 KiB in all",
        )
            .into_response();
    }
    next.run(request).await
}

/// The most parameters a form body or query string may hold: no request of any
/// protocol keyward speaks needs more than a few dozen.
pub const MAX_PARAMS: usize = 100;

/// The parameter whose value may hold NUL: `state` goes back to the client byte-exact
/// (RFC 6749 §4.1.2) and is read and stored as bytes ([`form_value_bytes`]), never as
/// text.
const BYTE_EXACT: &str = "state";

/// Parses an `application/x-www-form-urlencoded` body or query string into `T`,
/// refusing a repeated parameter (RFC 6749 §3.1, §3.2) and a NUL in any name or value
/// but `state`'s ([`has_nul`]).
pub fn parse_form<T: DeserializeOwned>(input: &[u8]) -> Result<T, OAuthError> {
    parse_form_repeating(input, &[])
}

/// Like [`parse_form`], but the parameters named in `repeatable` may repeat (RFC 8693's
/// `audience` and `resource`); `T` must not take them.
pub fn parse_form_repeating<T: DeserializeOwned>(
    input: &[u8],
    repeatable: &[&str],
) -> Result<T, OAuthError> {
    // Counted before anything is built from them: a hostile form of 10,000 parameters
    // costs a scan, not a set of 10,000 names.
    let count = input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .count();
    if count > MAX_PARAMS {
        return Err(OAuthError::invalid_request(format!(
            "more than {MAX_PARAMS} parameters"
        )));
    }
    let mut seen = HashSet::new();
    for (key, value) in url::form_urlencoded::parse(input) {
        if has_nul(&key) || (key != BYTE_EXACT && has_nul(&value)) {
            return Err(OAuthError::invalid_request(
                "parameters may not contain NUL (%00)",
            ));
        }
        if !repeatable.contains(&key.as_ref()) && !seen.insert(key.clone()) {
            let key: String = key.chars().take(40).collect();
            return Err(OAuthError::invalid_request(format!(
                "parameter {key:?} is repeated"
            )));
        }
    }
    serde_urlencoded::from_bytes(input).map_err(|e| {
        let message: String = e.to_string().chars().take(200).collect();
        OAuthError::invalid_request(format!("malformed parameters: {message}"))
    })
}

/// The bytes of parameter `name` in a form body or query string, exactly as sent
/// (percent-decoded, but not forced into UTF-8 as [`parse_form`]'s strings are): for
/// values that must go back unchanged, such as `state`. The first one if it repeats.
pub fn form_value_bytes(input: &[u8], name: &str) -> Option<Vec<u8>> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            (crate::domain::decode_form_bytes(key) == name.as_bytes())
                .then(|| crate::domain::decode_form_bytes(value))
        })
}

/// Whether `value` holds a NUL character. No OAuth parameter may (RFC 6749 Appendix A
/// allows none; only `state`'s bytes are kept whatever they are), and PostgreSQL cannot
/// store one in text: refused at the edge, a NUL never reaches a database lookup, where
/// it would fail the query.
pub fn has_nul(value: &str) -> bool {
    value.contains('\0')
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// keyward's cookie `base` in the request (named as [`crate::config::Config::cookie_name`]
/// says).
pub fn our_cookie<'h>(state: &AppState, headers: &'h HeaderMap, base: &str) -> Option<&'h str> {
    cookie(headers, &state.config().cookie_name(base))
}

/// Adds keyward's cookie `base` to `response`: at the issuer's path, HttpOnly,
/// SameSite=Lax, `Secure` (and `__Host-` named) under https; `max_age` in seconds, or a
/// browser-session cookie.
pub fn append_our_cookie(
    state: &AppState,
    response: &mut axum::response::Response,
    base: &str,
    value: &str,
    max_age: Option<u64>,
) {
    let config = state.config();
    let path = match config.base_path() {
        "" => "/",
        path => path,
    };
    let cookie = set_cookie(
        &config.cookie_name(base),
        value,
        path,
        max_age,
        config.secure_cookies(),
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Secure` when `secure`.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1): both parts are
/// form-urlencoded before base64. `Ok(None)` when the header is absent or not Basic.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = (form_decode(id)?, form_decode(secret)?);
    if has_nul(&id) || has_nul(&secret) {
        return Err(OAuthError::invalid_client("malformed Basic credentials"));
    }
    Ok(Some((id, secret)))
}

fn form_decode(value: &str) -> Result<String, OAuthError> {
    let plus_decoded = value.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))
}

/// The bearer token of `Authorization: Bearer …` (RFC 6750 §2.1), if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's IP address, for throttling and the account page: the peer of the
/// connection, or, when the peer is one of `trusted_proxies`, the client the proxies
/// name ([`crate::net::client_ip`]). `None` when the server was not started with connect
/// info (router tests).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(Self(None));
        };
        let values = |name: &str| {
            parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
        };
        Ok(Self(Some(crate::net::client_ip(
            peer.ip(),
            values(header::FORWARDED.as_str()),
            values("x-forwarded-for"),
            &state.config().trusted_proxies,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn too_many_parameters_are_refused_before_parsing() {
        let at_limit: Vec<String> = (0..MAX_PARAMS).map(|i| format!("p{i}=v")).collect();
        assert!(parse_form::<serde_json::Value>(at_limit.join("&").as_bytes()).is_ok());
        let over: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=v")).collect();
        let error = parse_form::<serde_json::Value>(over.join("&").as_bytes()).unwrap_err();
        assert_eq!(
            error.description,
            format!("more than {MAX_PARAMS} parameters")
        );
        // Empty pairs (`&&`) are not parameters.
        let sparse = format!("{}{}", at_limit.join("&"), "&".repeat(500));
        assert!(parse_form::<serde_json::Value>(sparse.as_bytes()).is_ok());
    }

    #[test]
    fn form_value_bytes_are_exact() {
        let input = b"client_id=c&state=%FF%00a+b%2B&st%61te=second&flag";
        assert_eq!(
            form_value_bytes(input, "state").as_deref(),
            Some(&b"\xff\x00a b+"[..])
        );
        assert_eq!(
            form_value_bytes(input, "client_id").as_deref(),
            Some(&b"c"[..])
        );
        assert_eq!(form_value_bytes(input, "flag").as_deref(), Some(&b""[..]));
        assert_eq!(form_value_bytes(input, "nonce"), None);
        assert_eq!(
            form_value_bytes(b"&&state=%zz&", "state").as_deref(),
            Some(&b"%zz"[..])
        );
    }

    #[derive(serde::Deserialize, Debug)]
    struct Params {
        a: String,
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let err = parse_form::<Params>(b"a=1&a=2").unwrap_err();
        assert!(err.description.contains("repeated"));
        assert_eq!(parse_form::<Params>(b"a=x+y%21").unwrap().a, "x y!");
        assert!(parse_form::<Params>(b"b=1").is_err());
    }

    #[test]
    fn nul_is_refused_in_names_values_and_basic_credentials() {
        for input in [&b"a=x%00y"[..], b"a=1&b%00=2", b"a=\0"] {
            let err = parse_form::<Params>(input).unwrap_err();
            assert!(err.description.contains("NUL"), "{input:?}");
        }
        // `state` is read as bytes, and goes back as they came.
        assert_eq!(parse_form::<Params>(b"a=1&state=%00").unwrap().a, "1");
        let mut headers = HeaderMap::new();
        for credentials in ["app%00:secret", "app:se\0cret"] {
            let encoded = STANDARD.encode(credentials);
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
            );
            let err = basic_credentials(&headers).unwrap_err();
            assert_eq!(err.code, keyward_proto::ErrorCode::InvalidClient);
        }
    }

    #[test]
    fn cookies_are_found() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; keyward_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, "keyward_session"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_under_https() {
        let plain = set_cookie("keyward_session", "v", "", Some(60), false);
        assert_eq!(
            plain,
            "keyward_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        let secure = set_cookie("keyward_session", "v", "/id", None, true);
        assert_eq!(
            secure,
            "keyward_session=v; Path=/id; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20app:s%3Acret+x");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers).unwrap(),
            Some(("my app".into(), "s:cret x".into()))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(basic_credentials(&headers).unwrap(), None);
        assert_eq!(bearer_token(&headers), Some("abc"));
    }
}
