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
//! | [`admin_api`] | `/admin/api/*`: users, clients, keys and the audit log, as JSON, for an admin client |
//! | [`console`] | `/admin`, `/admin/*`: the admin console, pages for administrators |
//! | [`password`] | `/password/set`: choosing a password through a one-time link |
//! | [`openapi`] | `/openapi.json`: the OpenAPI 3.1 description of all of the above |
//!
//! The endpoint modules above never use one another; what they share sits beside them:
//! [`browser`] (cookies, the session, CSRF), [`login`] (the login-in-progress machine),
//! [`provider`] (leaving for an upstream provider, mailing a link), [`client_auth`],
//! [`extract`] (request parsing), [`error`] (protocol errors), [`page_error`]
//! (errors shown as pages), [`routes`] (routers that list what they serve, so that a
//! test holds the description and the router to each other) and [`trace`] (request ids
//! and the access log).
//!
//! Every path is served under the issuer's path, so `issuer = "https://h/id"` serves
//! `https://h/id/token`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::state::AppState;
use routes::Routes;

pub mod account;
pub mod admin_api;
pub mod authorize;
pub mod browser;
pub mod callback;
pub mod client_auth;
pub mod consent;
pub mod console;
pub mod device;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod health;
pub mod introspect;
pub mod login;
pub mod logout;
pub mod openapi;
pub mod page_error;
pub mod password;
pub mod pkg;
pub mod provider;
pub mod routes;
pub mod signin;
pub mod token;
pub mod trace;
pub mod userinfo;

/// Every endpoint family's routes, merged (`/auth/*` only with `pkg_auth`), with the
/// list of what they serve.
pub fn endpoints(pkg_auth: bool) -> Routes {
    Routes::new()
        .merge(discovery::router())
        .merge(authorize::router())
        .merge(signin::router())
        .merge(consent::router())
        .merge(callback::router())
        .merge(account::router())
        .merge(device::router())
        .merge(pkg::router(pkg_auth))
        .merge(token::router())
        .merge(userinfo::router())
        .merge(introspect::router())
        .merge(logout::router())
        .merge(health::router())
        .merge(admin_api::router())
        .merge(console::router())
        .merge(password::router())
        .merge(openapi::router())
}

/// The whole server as one router.
pub fn app(state: AppState) -> Router {
    let routes = endpoints(state.config().pkg_auth.enabled).into_router();
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
        .layer(axum::middleware::from_fn(trace::trace_requests))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// What the router serves, as (method, path).
    fn served(pkg_auth: bool) -> BTreeSet<(String, String)> {
        let routes = endpoints(pkg_auth);
        let served: BTreeSet<_> = routes
            .served()
            .iter()
            .map(|(method, path)| (method.to_string(), (*path).to_owned()))
            .collect();
        assert_eq!(served.len(), routes.served().len(), "a route added twice");
        served
    }

    /// No route without a description, no description without a route: the routers
    /// list what they serve ([`Routes`]), the description what it describes, for a
    /// server with and without the Julia protocol.
    #[test]
    fn every_route_is_described_and_every_description_served() {
        for pkg_auth in [true, false] {
            let config = crate::config::Config::from_toml(
                &format!("[pkg_auth]\nenabled = {pkg_auth}"),
                &Default::default(),
            )
            .unwrap();
            let described = openapi::operations(&openapi::describe(&config).unwrap());
            let served = served(pkg_auth);
            let undescribed: Vec<_> = served.difference(&described).collect();
            let unserved: Vec<_> = described.difference(&served).collect();
            assert!(
                undescribed.is_empty(),
                "served but not in openapi.json: {undescribed:?}"
            );
            assert!(
                unserved.is_empty(),
                "in openapi.json but not served: {unserved:?}"
            );
        }
        assert!(served(true).len() > served(false).len());
    }

    /// The comparison sees a difference in either direction.
    #[test]
    fn the_check_finds_a_missing_route_or_description() {
        let served = served(true);
        let mut description =
            openapi::describe(&crate::config::Config::from_toml("", &Default::default()).unwrap())
                .unwrap();
        let paths = description["paths"].as_object_mut().unwrap();
        paths.remove("/token");
        paths.insert("/nowhere".into(), serde_json::json!({"get": {}}));
        let described = openapi::operations(&description);
        assert_eq!(
            served.difference(&described).collect::<Vec<_>>(),
            [&("POST".to_owned(), "/token".to_owned())]
        );
        assert_eq!(
            described.difference(&served).collect::<Vec<_>>(),
            [&("GET".to_owned(), "/nowhere".to_owned())]
        );
    }
}
