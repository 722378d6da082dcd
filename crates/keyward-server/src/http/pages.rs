//! Server-rendered pages (login, consent, sign-out, errors): minijinja templates
//! compiled into the binary, auto-escaped, served with headers that forbid framing,
//! caching and content sniffing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use crate::config::Config;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("consent.html", include_str!("../../templates/consent.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("logout.html", include_str!("../../templates/logout.html")),
    (
        "signed_out.html",
        include_str!("../../templates/signed_out.html"),
    ),
    ("device.html", include_str!("../../templates/device.html")),
    (
        "device_done.html",
        include_str!("../../templates/device_done.html"),
    ),
];

/// The page renderer.
pub struct Pages {
    env: Environment<'static>,
    base: String,
}

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
}

impl PageError {
    /// A 400 page.
    pub fn bad_request(title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title,
            message: message.into(),
            internal: None,
        }
    }
}

impl<E: Into<super::error::ApiError>> From<E> for PageError {
    fn from(error: E) -> Self {
        match error.into() {
            super::error::ApiError::OAuth(e) => Self::bad_request("Invalid request", e.description),
            super::error::ApiError::Internal(e) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Something went wrong",
                message: "keyward could not complete this request. Please try again in a moment."
                    .into(),
                internal: Some(e),
            },
        }
    }
}

impl Pages {
    /// Loads the templates.
    pub fn new(config: &Config) -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are compiled into the binary and covered by tests.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "template does not compile");
            }
        }
        Self {
            env,
            base: config.base_path().to_owned(),
        }
    }

    /// Renders `template` with `context` (plus `base`, the issuer's path prefix).
    pub fn render<C: Serialize>(&self, status: StatusCode, template: &str, context: C) -> Response {
        match self.render_html(template, context) {
            Ok(html) => html_response(status, html),
            Err(e) => {
                tracing::error!(template, error = %e, "page rendering failed");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Internal error.</p>".into(),
                )
            }
        }
    }

    fn render_html<C: Serialize>(
        &self,
        template: &str,
        context: C,
    ) -> Result<String, minijinja::Error> {
        self.env.get_template(template).and_then(|t| {
            t.render(minijinja::context! { base => self.base.clone(), ..minijinja::Value::from_serialize(&context) })
        })
    }

    /// Renders an error page (logging the internal cause, if any).
    pub fn error(&self, error: PageError) -> Response {
        if let Some(cause) = &error.internal {
            super::error::log_internal(cause.as_ref());
        }
        self.render(
            error.status,
            "error.html",
            minijinja::context! { title => error.title, message => error.message },
        )
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let config = Config::from_toml("", &Default::default()).unwrap();
        let pages = Pages::new(&config);
        let html = pages
            .render_html(
                "login.html",
                minijinja::context! { client_name => "<script>x</script>", req => "r", csrf => "c", username => "", error => "" },
            )
            .unwrap();
        assert!(
            html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>x"));
        for name in [
            "consent.html",
            "logout.html",
            "signed_out.html",
            "error.html",
            "device.html",
            "device_done.html",
        ] {
            pages
                .render_html(name, minijinja::context! { scopes => Vec::<String>::new() })
                .unwrap();
        }
    }
}
