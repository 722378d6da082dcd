//! Errors shown to a person as a page ([`PageError`]), for the browser-facing handlers:
//! a handler returns `Result<Response, PageError>`, and the error becomes the error page
//! in one place ([`render_page_errors`]), which also logs an internal cause once.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// An error shown to a person as a page: a title, a message and a status. Never
/// redirects; used when a redirect would be unsafe (unknown client, bad redirect URI)
/// or there is nowhere to redirect to.
#[derive(Debug)]
pub struct PageError {
    /// HTTP status.
    pub status: StatusCode,
    /// Page title.
    pub title: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// The internal cause, logged and never shown.
    pub internal: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// For a 429 or 503: seconds until trying again makes sense (`Retry-After`).
    pub retry_after: Option<i64>,
}

impl PageError {
    /// A 400 page.
    pub fn bad_request(title: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, title, message)
    }

    /// A page with another status.
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
            internal: None,
            retry_after: None,
        }
    }

    /// A 429 page: this address asked for too much; try again in `retry_after` s.
    pub fn too_many(retry_after: i64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                format!(
                    "Too many sign-ins were started from your network. Try again in {}.",
                    super::error::wait_text(retry_after)
                ),
            )
        }
    }
}

/// Parses a form posted from one of keyward's pages; bad input becomes a 400 page (413
/// for a body over the limit).
pub fn page_form<T: serde::de::DeserializeOwned>(
    body: Result<super::extract::Body, super::error::OAuthError>,
) -> Result<T, PageError> {
    body.and_then(|super::extract::Body(bytes)| super::extract::parse_form(&bytes))
        .map_err(|e| {
            let status = e.status.unwrap_or(StatusCode::BAD_REQUEST);
            PageError::new(status, "Invalid request", e.description)
        })
}

impl<E: Into<super::error::ApiError>> From<E> for PageError {
    fn from(error: E) -> Self {
        match error.into() {
            super::error::ApiError::OAuth(e) => Self::bad_request("Invalid request", e.description),
            super::error::ApiError::Unavailable(e) => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Try again in a moment",
                message:
                    "keyward cannot reach its database right now. Please try again in a moment."
                        .into(),
                internal: Some(Box::new(e)),
                retry_after: Some(super::error::UNAVAILABLE_RETRY_AFTER),
            },
            super::error::ApiError::Internal(e) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Something went wrong",
                message: "keyward could not complete this request. Please try again in a moment."
                    .into(),
                internal: Some(e),
                retry_after: None,
            },
        }
    }
}

/// What is left of a [`PageError`] once its cause is logged: carried in the response's
/// extensions to [`render_page_errors`], which turns it into the page.
#[derive(Clone, Debug)]
struct ErrorPage {
    title: &'static str,
    message: String,
    retry_after: Option<i64>,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            crate::telemetry::log_internal(cause.as_ref());
        }
        let mut response = self.status.into_response();
        response.extensions_mut().insert(ErrorPage {
            title: self.title,
            message: self.message,
            retry_after: self.retry_after,
        });
        response
    }
}

/// Middleware: renders the error page of a [`PageError`] a handler returned (through
/// `error.html`, with its status, and `Retry-After` for a 429 or 503). The one place page
/// errors become pages.
pub async fn render_page_errors(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    let rendered = state.pages().render(
        response.status(),
        "error.html",
        minijinja::context! { title => page.title, message => page.message },
    );
    match page.retry_after {
        Some(seconds) => super::error::with_retry_after(rendered, seconds),
        None => rendered,
    }
}
