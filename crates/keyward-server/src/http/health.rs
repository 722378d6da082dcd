//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the store
//! answers), `/metrics` (Prometheus text), and the request-counting middleware.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::{ClientAddr, bearer_token};
use super::routes::Routes;
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/metrics", metrics_text)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store().ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            crate::telemetry::log_internal(&e);
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// `/metrics`: for the addresses in `metrics_allowed` (loopback by default), or with
/// `Authorization: Bearer <metrics_token>`. The counters tell who signs in how often
/// and which clients are busy: not for everyone.
async fn metrics_text(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let config = state.config();
    let allowed_address =
        addr.is_some_and(|ip| config.metrics_allowed.iter().any(|net| net.contains(ip)));
    let token_ok = match (&config.metrics_token, bearer_token(&headers)) {
        (Some(expected), Some(given)) => {
            keyward_proto::secret::constant_time_eq(expected.secret().as_bytes(), given.as_bytes())
        }
        _ => false,
    };
    if !(allowed_address || token_ok) {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to the addresses in metrics_allowed, or with the metrics_token",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

/// Counts requests by route and status (`keyward_http_requests_total`).
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    state.metrics().increment(
        "keyward_http_requests_total",
        &[("endpoint", &endpoint), ("status", status.as_str())],
    );
    response
}
