//! Request ids and the access log. Every request gets an id: the `x-request-id` it
//! came with when that is a plain token (up to 64 letters, digits and `-_.:`, as a
//! proxy in front sets it), else a new random one. The answer returns it as
//! `x-request-id`, and every log line written while the request is handled carries it
//! (the `request` span, with the method and the path). When it is answered, one line at
//! `info` (target `keyward::access`) gives its status and time. The query string is
//! never logged: it may carry codes and states.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a request.
const MAX_ID: usize = 64;

/// The longest path written to the log (the rest is cut): a head may be 64 KiB.
const MAX_LOGGED_PATH: usize = 256;

/// The request's own id when it is acceptable (see the module's documentation), else a
/// new random one (32 hexadecimal digits).
pub fn request_id(given: Option<&HeaderValue>) -> String {
    match given.and_then(|v| v.to_str().ok()) {
        Some(id) if acceptable(id) => id.to_owned(),
        _ => format!("{:032x}", rand::random::<u128>()),
    }
}

/// Whether `id` is short and made of characters that cannot break a log line.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `path`, cut to [`MAX_LOGGED_PATH`] bytes (at a character boundary).
fn logged_path(path: &str) -> &str {
    if path.len() <= MAX_LOGGED_PATH {
        return path;
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// The middleware: names the request, logs it within its span, returns its id.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    let id = request_id(request.headers().get(&REQUEST_ID));
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = logged_path(request.uri().path()),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            target: "keyward::access",
            status = response.status().as_u16(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_id_is_kept_and_anything_else_replaced() {
        for kept in ["abc-123", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "a.b_c:d"] {
            assert_eq!(request_id(Some(&HeaderValue::from_static(kept))), kept);
        }
        let long = "a".repeat(MAX_ID);
        assert_eq!(
            request_id(Some(&HeaderValue::from_str(&long).unwrap())),
            long
        );
        for replaced in [
            "",
            "two words",
            "line\tbreak",
            "quote\"",
            "{\"json\":1}",
            "ünïcode",
            &"a".repeat(MAX_ID + 1),
        ] {
            let given = HeaderValue::from_bytes(replaced.as_bytes()).unwrap();
            let id = request_id(Some(&given));
            assert_ne!(id, replaced);
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        let (a, b) = (request_id(None), request_id(None));
        assert_ne!(a, b, "each request a new id");
    }

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        assert_eq!(logged_path("/token"), "/token");
        let long = format!("/{}", "é".repeat(200));
        let cut = logged_path(&long);
        assert!(cut.len() <= MAX_LOGGED_PATH && cut.len() >= MAX_LOGGED_PATH - 1);
        assert!(long.starts_with(cut));
    }
}
