//! The HTTP surface: one router per endpoint family, merged by [`app`].
//!
//! | module | endpoints |
//! |---|---|
//! | [`discovery`] | `/.well-known/openid-configuration`, `/.well-known/oauth-authorization-server`, `/jwks` |
//! | [`authorize`] | `/authorize` |
//! | [`signin`] | `/login`: the login page and the password sign-in |
//! | [`consent`] | `/consent` |
//! | [`callback`] | `/login/{connector}`, `/callback/{connector}`: sign-in at upstream providers and by emailed link |
//! | [`account`] | `/account`: linked identities, sessions, authorised applications |
//! | [`device`] | `/device/code` (RFC 8628 device authorization), `/device` (code entry) |
//! | [`pkg`] | `/auth/*`: the Julia package-server login protocol |
//! | [`token`] | `/token` |
//! | [`userinfo`] | `/userinfo` |
//! | [`introspect`] | `/introspect`, `/revoke` |
//! | [`logout`] | `/logout` (end session) |
//! | [`health`] | `/healthz`, `/readyz`, `/metrics` |
//!
//! The endpoint modules above never use one another; what they share sits beside them:
//! [`browser`] (cookies, the session, CSRF), [`login`] (the login-in-progress machine),
//! [`provider`] (leaving for an upstream provider, mailing a link), [`client_auth`],
//! [`extract`] (request parsing), [`error`] (protocol errors) and [`page_error`]
//! (errors shown as pages).
//!
//! Every path is served under the issuer's path, so `issuer = "https://h/id"` serves
//! `https://h/id/token`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::state::AppState;

pub mod account;
pub mod authorize;
pub mod browser;
pub mod callback;
pub mod client_auth;
pub mod consent;
pub mod device;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod health;
pub mod introspect;
pub mod login;
pub mod logout;
pub mod page_error;
pub mod pkg;
pub mod provider;
pub mod signin;
pub mod token;
pub mod userinfo;

/// The whole server as one router.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(discovery::router())
        .merge(authorize::router())
        .merge(signin::router())
        .merge(consent::router())
        .merge(callback::router())
        .merge(account::router())
        .merge(device::router())
        .merge(pkg::router(state.config().pkg_auth.enabled))
        .merge(token::router())
        .merge(userinfo::router())
        .merge(introspect::router())
        .merge(logout::router())
        .merge(health::router());
    let base = state.config().base_path().to_owned();
    let mut routes = if base.is_empty() {
        routes
    } else {
        Router::new().nest(&base, routes)
    };
    // Under https, browsers are told to use nothing else for a year (RFC 6797).
    if state.config().secure_cookies() {
        routes = routes.layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                response.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000"),
                );
                response
            },
        ));
    }
    routes
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
        .method_not_allowed_fallback(|| async {
            let mut error =
                error::OAuthError::invalid_request("method not allowed on this endpoint");
            error.status = Some(StatusCode::METHOD_NOT_ALLOWED);
            error.into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            page_error::render_page_errors,
        ))
        .layer(axum::middleware::from_fn(extract::limit_header_sizes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            health::count_requests,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .with_state(state)
}
