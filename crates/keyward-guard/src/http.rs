//! The HTTP checks, RFC 6750: the bearer token from `Authorization` (§2.1), and the
//! error answers of §3 — 401 with `WWW-Authenticate: Bearer error="invalid_token"` for
//! a missing or bad token, 403 with `error="insufficient_scope"` and the `scope` that
//! is missing. As an extractor ([`Authenticated`]) for one handler, or as a tower layer
//! ([`GuardLayer`]) in front of a whole service, which hands the [`Principal`] on in the
//! request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{Guard, Principal, VerifyError};

/// The bearer token of `Authorization: Bearer …` (the scheme in any case), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A refused request, answered per RFC 6750 §3.
#[derive(Debug)]
pub struct Rejection(pub VerifyError);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let error = &self.0;
        let code = error.code();
        let description = error.to_string();
        let (status, challenge) = match error {
            VerifyError::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{scope}\""
                ),
            ),
            VerifyError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
            _ => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            ),
        };
        let body = serde_json::json!({"error": code, "error_description": description});
        let mut response = (status, axum::Json(body)).into_response();
        if !challenge.is_empty()
            && let Ok(value) = HeaderValue::from_str(&challenge.replace(['\r', '\n'], " "))
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Checks the request's bearer token with `guard`.
pub async fn authenticate(guard: &Guard, headers: &HeaderMap) -> Result<Principal, Rejection> {
    let token = bearer(headers).ok_or(Rejection(VerifyError::Missing))?;
    guard.verify(token).await.map_err(Rejection)
}

/// The caller, authenticated: a handler taking it runs only for a good token with the
/// guard's scopes. The state must give an `Arc<Guard>`.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<Guard>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            // Already checked by a GuardLayer.
            return Ok(Self(principal.clone()));
        }
        let guard = Arc::<Guard>::from_ref(state);
        authenticate(&guard, &parts.headers).await.map(Self)
    }
}

/// A tower layer that lets through only requests with a good token, the [`Principal`]
/// in their extensions.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    guard: Arc<Guard>,
}

impl GuardLayer {
    /// Requests checked by `guard`.
    pub fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            guard: Arc::clone(&self.guard),
            inner,
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    guard: Arc<Guard>,
    inner: S,
}

impl<S> tower::Service<Request> for GuardService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone is the one polled ready; take it, leave the fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            match authenticate(&guard, request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_read_from_authorization() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn rejections_are_rfc_6750_answers() {
        let response = Rejection(VerifyError::Missing).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{challenge}"
        );
        assert_eq!(body(response).await["error"], "invalid_token");

        let response =
            Rejection(VerifyError::InsufficientScope("queue:write".into())).into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer error=\"insufficient_scope\"")
                && challenge.ends_with("scope=\"queue:write\""),
            "{challenge}"
        );
        let body = body(response).await;
        assert_eq!(body["error"], "insufficient_scope");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("queue:write")
        );

        let response = Rejection(VerifyError::Revoked).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_extractor_and_the_layer_let_through_only_good_tokens_with_the_scopes() {
        use crate::fixture::Issuer;
        use crate::verify::tests::Signer;
        use axum::routing::get;
        use tower::ServiceExt as _;

        let signer = Signer::new("k1");
        let issuer = Issuer::start(vec![signer.jwk()]).await;
        let guard = Guard::start(issuer.config(&["queue:read"])).await.unwrap();
        let app = axum::Router::new()
            .route(
                "/extractor",
                get(|Authenticated(who): Authenticated| async move { who.sub }),
            )
            .route(
                "/layered",
                get(
                    |axum::Extension(who): axum::Extension<Principal>| async move {
                        format!("{} {}", who.sub, who.scopes.join(","))
                    },
                )
                .layer(GuardLayer::new(Arc::clone(&guard))),
            )
            .with_state(Arc::clone(&guard));
        let call = |path: &'static str, token: Option<String>| {
            let app = app.clone();
            async move {
                let mut request = axum::http::Request::get(path);
                if let Some(token) = token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let response = app
                    .oneshot(request.body(axum::body::Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap().to_owned());
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (
                    status,
                    challenge,
                    String::from_utf8(bytes.to_vec()).unwrap(),
                )
            }
        };
        let good = signer.sign(&issuer.claims("alice", "queue:*"));
        let narrow = signer.sign(&issuer.claims("alice", "queue:write"));
        let foreign = Signer::new("k1").sign(&issuer.claims("alice", "queue:*"));
        for path in ["/extractor", "/layered"] {
            let (status, _, body) = call(path, Some(good.clone())).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert!(body.starts_with("alice"), "{path}: {body}");
            for (token, why) in [(None, "no token"), (Some(foreign.clone()), "forged")] {
                let (status, challenge, body) = call(path, token).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {why}");
                assert!(
                    challenge
                        .unwrap()
                        .starts_with("Bearer error=\"invalid_token\""),
                    "{path} {why}"
                );
                assert!(body.contains("invalid_token"), "{path} {why}: {body}");
            }
            let (status, challenge, _) = call(path, Some(narrow.clone())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert!(
                challenge.unwrap().ends_with("scope=\"queue:read\""),
                "{path}"
            );
        }
        assert_eq!(call("/layered", Some(good)).await.2, "alice queue:*");
    }
}
