//! The page renderer: server-rendered pages (login with its provider buttons, email
//! sent, consent, account, device entry, sign-out, errors, and the `form_post` and
//! `web_message` responses):
//! minijinja templates compiled into the binary, auto-escaped, usable without
//! JavaScript, served with headers that forbid framing, caching and content sniffing.
//! The two response pages run one inline script each, allowed by a per-response CSP
//! nonce; no other page runs any.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use crate::config::Config;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("consent.html", include_str!("../templates/consent.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("logout.html", include_str!("../templates/logout.html")),
    (
        "signed_out.html",
        include_str!("../templates/signed_out.html"),
    ),
    ("device.html", include_str!("../templates/device.html")),
    (
        "device_done.html",
        include_str!("../templates/device_done.html"),
    ),
    (
        "email_sent.html",
        include_str!("../templates/email_sent.html"),
    ),
    (
        "email_confirm.html",
        include_str!("../templates/email_confirm.html"),
    ),
    ("account.html", include_str!("../templates/account.html")),
    (
        "form_post.html",
        include_str!("../templates/form_post.html"),
    ),
    (
        "web_message.html",
        include_str!("../templates/web_message.html"),
    ),
];

/// The page renderer.
pub struct Pages {
    env: Environment<'static>,
    base: String,
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
    /// Errors meant for a person are [`crate::http::page_error::PageError`]s, rendered
    /// through `error.html` by the HTTP layer.
    pub fn render<C: Serialize>(&self, status: StatusCode, template: &str, context: C) -> Response {
        self.render_scripted(status, template, context, None)
    }

    /// Renders `template`, allowing inline scripts that carry `nonce`.
    fn render_scripted<C: Serialize>(
        &self,
        status: StatusCode,
        template: &str,
        context: C,
        nonce: Option<&str>,
    ) -> Response {
        match self.render_html(template, context) {
            Ok(html) => html_response(status, html, nonce),
            Err(e) => {
                tracing::error!(template, error = %e, "page rendering failed");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Internal error.</p>".into(),
                    None,
                )
            }
        }
    }

    /// The `form_post` response mode (OAuth 2.0 Form Post Response Mode): a form that
    /// submits `params` to `action` by itself, or with one click without JavaScript.
    pub fn form_post(&self, action: &str, params: &[(&str, &str)]) -> Response {
        let nonce = keyward_proto::secret::random_urlsafe(16);
        let fields: Vec<_> = params
            .iter()
            .map(|(name, value)| minijinja::context! { name => name, value => value })
            .collect();
        self.render_scripted(
            StatusCode::OK,
            "form_post.html",
            minijinja::context! { action => action, fields => fields, nonce => nonce },
            Some(&nonce),
        )
    }

    /// The `web_message` response mode: the page posts
    /// `{type: "authorization_response", response: {…params}}` to the window that opened
    /// it, for `origin` only, and closes.
    pub fn web_message(&self, origin: &str, params: &[(&str, &str)]) -> Response {
        let nonce = keyward_proto::secret::random_urlsafe(16);
        let response: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let is_error = response.contains_key("error");
        self.render_scripted(
            StatusCode::OK,
            "web_message.html",
            minijinja::context! {
                message => serde_json::json!({ "origin": origin, "response": response }),
                is_error => is_error,
                nonce => nonce,
            },
            Some(&nonce),
        )
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
}

fn html_response(status: StatusCode, html: String, script_nonce: Option<&str>) -> Response {
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
    let scripts = script_nonce.map_or_else(String::new, |n| format!("; script-src 'nonce-{n}'"));
    let policy = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'{scripts}"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
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
            "email_sent.html",
            "email_confirm.html",
            "account.html",
        ] {
            pages
                .render_html(
                    name,
                    minijinja::context! { scopes => Vec::<String>::new(), user => minijinja::context! { username => "u" } },
                )
                .unwrap();
        }
        let answer = pages.form_post("https://app.example/cb", &[("code", "c\"><x")]);
        assert_eq!(answer.status(), StatusCode::OK);
        let answer = pages.web_message("https://app.example", &[("code", "</script>")]);
        assert_eq!(answer.status(), StatusCode::OK);
    }

    #[test]
    fn response_pages_escape_what_they_carry() {
        let config = Config::from_toml("", &Default::default()).unwrap();
        let pages = Pages::new(&config);
        let html = pages
            .render_html(
                "web_message.html",
                minijinja::context! {
                    message => serde_json::json!({"origin": "https://a.example", "response": {"state": "</script><script>alert(1)"}}),
                    nonce => "n",
                },
            )
            .unwrap();
        assert!(!html.contains("</script><script>alert"), "{html}");
        let html = pages
            .render_html(
                "form_post.html",
                minijinja::context! { action => "https://a.example/cb", fields => vec![minijinja::context! { name => "state", value => "\"><script>" }], nonce => "n" },
            )
            .unwrap();
        assert!(!html.contains("\"><script>"), "{html}");
    }
}
