//! Errors of the HTTP layer, mapped to responses in one place.
//!
//! Protocol endpoints answer with RFC 6749 §5.2 JSON: `invalid_client` is 401 with
//! `WWW-Authenticate: Basic`, `invalid_token` is 401 and `insufficient_scope` 403 with
//! `WWW-Authenticate: Bearer …` (RFC 6750 §3), a database out of reach is 503
//! `temporarily_unavailable` with `Retry-After`, internal failures are 500 with a
//! generic body (the cause goes to the log, never to the client), the rest are 400.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_proto::{ErrorCode, ErrorResponse};

/// A protocol error for the client.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// The RFC error code.
    pub code: ErrorCode,
    /// A description for the developer; never a secret.
    pub description: Cow<'static, str>,
    /// A status other than the code's usual one (413 for an oversized body).
    pub status: Option<StatusCode>,
    /// For a 429: seconds until trying again makes sense (`Retry-After`).
    pub retry_after: Option<i64>,
}

impl OAuthError {
    /// An error with a description.
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            status: None,
            retry_after: None,
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client`.
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    /// `invalid_grant`.
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    /// `invalid_token` (RFC 6750).
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidToken, description)
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(match self.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        })
    }
}

fn quoted(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after;
        let challenge = match self.code {
            ErrorCode::InvalidClient => Some("Basic realm=\"keyward\"".to_owned()),
            ErrorCode::InvalidToken | ErrorCode::InsufficientScope => Some(format!(
                "Bearer realm=\"keyward\", error=\"{}\", error_description=\"{}\"",
                self.code,
                quoted(&self.description)
            )),
            _ => None,
        };
        let body = ErrorResponse {
            error: self.code,
            error_description: Some(self.description.into_owned()),
        };
        let mut response = (status, no_store(), Json(body)).into_response();
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        match retry_after {
            Some(seconds) => with_retry_after(response, seconds),
            None => response,
        }
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, for every response that carries a
/// token or an error about one (RFC 6749 §5.1).
pub fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

/// An error of a protocol endpoint: a client error, a database out of reach (logged,
/// answered 503 `temporarily_unavailable` with `Retry-After`), or an internal failure
/// (logged, answered with a generic 500).
#[derive(Debug)]
pub enum ApiError {
    /// A protocol error for the client.
    OAuth(OAuthError),
    /// The database cannot be reached; the same request may work in a moment.
    Unavailable(crate::store::StoreError),
    /// A failure of keyward itself.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

/// How long a client is told to wait when the database is out of reach.
pub const UNAVAILABLE_RETRY_AFTER: i64 = 5;

impl ApiError {
    /// 429 `temporarily_unavailable` with `Retry-After`: this address asked for too
    /// much.
    pub fn too_many(retry_after: i64) -> Self {
        let mut error = OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "too many requests from this address; retry later",
        );
        error.status = Some(StatusCode::TOO_MANY_REQUESTS);
        error.retry_after = Some(retry_after);
        Self::OAuth(error)
    }
}

impl From<crate::grants::GrantError> for ApiError {
    fn from(error: crate::grants::GrantError) -> Self {
        use crate::grants::GrantError;
        match error {
            GrantError::Refused { code, description } => {
                Self::OAuth(OAuthError::new(code, description))
            }
            GrantError::Store(e) => e.into(),
            GrantError::Issue(e) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(e)
    }
}

macro_rules! internal_from {
    ($($t:ty),*) => {
        $(impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                Self::Internal(Box::new(e))
            }
        })*
    };
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e)
        } else {
            Self::Internal(Box::new(e))
        }
    }
}

internal_from!(
    crate::keys::KeyError,
    crate::password::PasswordError,
    crate::issuer::IssueError
);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::OAuth(e) => e.into_response(),
            Self::Unavailable(e) => {
                let chain = keyward_proto::error::error_chain(&e);
                tracing::warn!(error = %chain, "database unavailable");
                let mut error = OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the database is unavailable (out of reach, or out of room); retry later",
                );
                error.status = Some(StatusCode::SERVICE_UNAVAILABLE);
                error.retry_after = Some(UNAVAILABLE_RETRY_AFTER);
                error.into_response()
            }
            Self::Internal(e) => {
                crate::telemetry::log_internal(e.as_ref());
                OAuthError::new(ErrorCode::ServerError, "internal error; see the server log")
                    .into_response()
            }
        }
    }
}

/// Adds `Retry-After` (RFC 9110 §10.2.3) to a 429 answer.
pub fn with_retry_after(mut response: Response, seconds: i64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// How long to wait, in words, for a page.
pub fn wait_text(seconds: i64) -> String {
    match seconds.max(1) {
        1 => "a second".to_owned(),
        s @ 2..=90 => format!("{s} seconds"),
        s => format!("{} minutes", (s + 59) / 60),
    }
}
