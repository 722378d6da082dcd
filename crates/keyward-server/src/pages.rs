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
        "admin_base.html",
        include_str!("../templates/admin_base.html"),
    ),
    ("admin.html", include_str!("../templates/admin.html")),
    (
        "admin_users.html",
        include_str!("../templates/admin_users.html"),
    ),
    (
        "admin_user.html",
        include_str!("../templates/admin_user.html"),
    ),
    (
        "admin_clients.html",
        include_str!("../templates/admin_clients.html"),
    ),
    (
        "admin_client.html",
        include_str!("../templates/admin_client.html"),
    ),
    (
        "admin_secret.html",
        include_str!("../templates/admin_secret.html"),
    ),
    (
        "admin_audit.html",
        include_str!("../templates/admin_audit.html"),
    ),
    (
        "admin_link.html",
        include_str!("../templates/admin_link.html"),
    ),
    (
        "password_set.html",
        include_str!("../templates/password_set.html"),
    ),
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

    /// What a hostile value looks like: it closes attributes (both quotes), elements and
    /// scripts, and carries an entity.
    const HOSTILE: &str = "\"'><b>x&amp;</script><!--";
    /// `HOSTILE` as minijinja's HTML escaping writes it.
    const HOSTILE_ESCAPED: &str = "&quot;&#x27;&gt;&lt;b&gt;x&amp;amp;&lt;&#x2f;script&gt;&lt;!--";

    /// Pages of a server whose issuer has a path, so that every form's action must
    /// carry it.
    fn pages() -> Pages {
        let config =
            Config::from_toml(r#"issuer = "https://id.example/kw""#, &Default::default()).unwrap();
        Pages::new(&config)
    }

    fn render(template: &str, context: minijinja::Value) -> String {
        pages().render_html(template, context).unwrap()
    }

    /// The body of a response, as text.
    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Undoes minijinja's HTML escaping.
    fn unescape(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#x2f;", "/")
            .replace("&amp;", "&")
    }

    /// The `(name, value)` of every hidden input of `html`, unescaped, in order.
    fn hidden_fields(html: &str) -> Vec<(String, String)> {
        html.split("<input type=\"hidden\" name=\"")
            .skip(1)
            .map(|rest| {
                let (name, rest) = rest.split_once("\" value=\"").unwrap();
                let (value, _) = rest.split_once("\">").unwrap();
                (unescape(name), unescape(value))
            })
            .collect()
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Every page but the `form_post` one shares the layout: its title, its language,
    /// and no script at all.
    fn assert_layout(html: &str, title: &str) {
        assert!(
            html.starts_with("<!doctype html>\n<html lang=\"en\">"),
            "{html}"
        );
        assert!(
            html.contains(&format!("<title>{title} · keyward</title>")),
            "{html}"
        );
        assert!(html.contains("<p class=\"brand\">keyward</p>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "unescaped markup in {html}");
    }

    #[test]
    fn every_template_compiles() {
        let pages = pages();
        for (name, _) in TEMPLATES {
            pages
                .env
                .get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn login_page_shows_every_way_to_sign_in_with_the_request_in_each_form() {
        let html = render(
            "login.html",
            minijinja::context! {
                client_name => HOSTILE, account => false, req => "req-1", csrf => "csrf-1",
                username => "", email => "", error => None::<&str>,
                providers => vec![
                    minijinja::context! { id => "corp", name => "Corporate SSO", kind => "oidc", initial => "C" },
                    minijinja::context! { id => "github", name => "GitHub", kind => "github", initial => "G" },
                ],
                email_forms => vec![minijinja::context! { id => "email", name => "Email", kind => "email", initial => "E" }],
                password => true,
            },
        );
        assert_layout(&html, "Sign in");
        assert!(html.contains("<h1>Sign in</h1>"), "{html}");
        assert!(
            html.contains(&format!(
                "to continue to <strong>{HOSTILE_ESCAPED}</strong>"
            )),
            "{html}"
        );
        for (id, name) in [("corp", "Corporate SSO"), ("github", "GitHub")] {
            assert!(
                html.contains(&format!(
                    "<form method=\"post\" action=\"&#x2f;kw/login/{id}\">"
                )),
                "{html}"
            );
            assert!(
                html.contains(&format!("</span>Continue with {name}</button>")),
                "{html}"
            );
        }
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/login/email\">"),
            "{html}"
        );
        assert!(
            html.contains("<label for=\"email-email\">Email address</label>"),
            "{html}"
        );
        assert!(html.contains(">Email me a sign-in link</button>"), "{html}");
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/login\">"),
            "{html}"
        );
        assert!(
            html.contains("<label for=\"username\">Username</label>"),
            "{html}"
        );
        assert!(
            html.contains("<label for=\"password\">Password</label>"),
            "{html}"
        );
        assert!(
            html.contains("<div class=\"divider\">or sign in with a password</div>"),
            "{html}"
        );
        // Four forms, each carrying the login in progress and its CSRF token.
        let expected: Vec<_> =
            std::iter::repeat_n(fields(&[("req", "req-1"), ("csrf", "csrf-1")]), 4)
                .flatten()
                .collect();
        assert_eq!(hidden_fields(&html), expected);
        // With providers on the page, no field grabs the focus; no error is shown.
        assert!(!html.contains("autofocus"), "{html}");
        assert!(!html.contains("role=\"alert\""), "{html}");
    }

    #[test]
    fn login_page_after_a_wrong_password_keeps_the_username_and_focuses_the_password() {
        let html = render(
            "login.html",
            minijinja::context! {
                client_name => "Demo", account => false, req => "r", csrf => "c",
                username => HOSTILE, email => "", error => "Invalid username or password.",
                providers => Vec::<minijinja::Value>::new(),
                email_forms => Vec::<minijinja::Value>::new(), password => true,
            },
        );
        assert_layout(&html, "Sign in");
        assert!(
            html.contains(
                "<div class=\"alert\" role=\"alert\">Invalid username or password.</div>"
            ),
            "{html}"
        );
        assert!(
            html.contains(&format!("name=\"username\" value=\"{HOSTILE_ESCAPED}\"")),
            "{html}"
        );
        assert!(
            html.contains("autocomplete=\"current-password\" required autofocus>"),
            "{html}"
        );
        assert_eq!(html.matches("autofocus").count(), 1, "{html}");
        assert!(!html.contains("class=\"divider\""), "{html}");
    }

    #[test]
    fn login_page_for_the_account_and_with_nothing_enabled() {
        let html = render(
            "login.html",
            minijinja::context! {
                client_name => "Demo", account => true, req => "r", csrf => "c",
                username => "", email => "", error => None::<&str>,
                providers => Vec::<minijinja::Value>::new(),
                email_forms => Vec::<minijinja::Value>::new(), password => true,
            },
        );
        assert!(
            html.contains("<p class=\"muted\">to manage your account</p>"),
            "{html}"
        );
        assert!(!html.contains("to continue to"), "{html}");
        // Only the password form: the username field has the focus.
        assert!(
            html.contains("spellcheck=\"false\" required autofocus>"),
            "{html}"
        );

        let html = render(
            "login.html",
            minijinja::context! {
                client_name => "Demo", account => false, req => "r", csrf => "c",
                username => "", email => "", error => None::<&str>,
                providers => Vec::<minijinja::Value>::new(),
                email_forms => Vec::<minijinja::Value>::new(), password => false,
            },
        );
        assert!(
            html.contains("No way to sign in is enabled on this server. Ask its administrator."),
            "{html}"
        );
        assert!(!html.contains("<form"), "{html}");
    }

    #[test]
    fn consent_page_names_the_client_the_user_and_every_scope() {
        let context = |device: bool| {
            minijinja::context! {
                client_name => HOSTILE,
                username => "alice",
                scopes => vec![
                    minijinja::context! { name => "openid", description => "Confirm your identity" },
                    minijinja::context! { name => "email", description => "See your email address" },
                ],
                req => "req-1",
                csrf => "csrf-1",
                device => device,
            }
        };
        let html = render("consent.html", context(false));
        assert_layout(&html, &format!("Authorize {HOSTILE_ESCAPED}"));
        assert!(
            html.contains(&format!("<h1>Authorize {HOSTILE_ESCAPED}</h1>")),
            "{html}"
        );
        assert!(
            html.contains("Signed in as <strong>alice</strong>"),
            "{html}"
        );
        assert!(
            html.contains(&format!(
                "<p><strong>{HOSTILE_ESCAPED}</strong> is asking to:</p>"
            )),
            "{html}"
        );
        assert!(
            html.contains(
                "<li>Confirm your identity <span class=\"muted\">(<code>openid</code>)</span></li>"
            ),
            "{html}"
        );
        assert!(
            html.contains(
                "<li>See your email address <span class=\"muted\">(<code>email</code>)</span></li>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/consent\">"),
            "{html}"
        );
        assert_eq!(
            hidden_fields(&html),
            fields(&[("req", "req-1"), ("csrf", "csrf-1")])
        );
        assert!(
            html.contains("<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>"),
            "{html}"
        );
        assert!(
            html.contains(
                "<button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>"
            ),
            "{html}"
        );
        assert!(!html.contains("A device is asking"), "{html}");

        let html = render("consent.html", context(true));
        assert!(
            html.contains(
                "<div class=\"alert\" role=\"note\">A device is asking to sign in as you."
            ),
            "{html}"
        );
    }

    #[test]
    fn error_page_shows_its_title_and_message() {
        let html = render(
            "error.html",
            minijinja::context! { title => "Unknown application", message => HOSTILE },
        );
        assert_layout(&html, "Unknown application");
        assert!(html.contains("<h1>Unknown application</h1>"), "{html}");
        assert!(
            html.contains(&format!(
                "<div class=\"alert\" role=\"alert\">{HOSTILE_ESCAPED}</div>"
            )),
            "{html}"
        );
    }

    #[test]
    fn logout_page_asks_and_carries_where_to_return() {
        let html = render(
            "logout.html",
            minijinja::context! {
                username => HOSTILE,
                csrf => "csrf-1",
                post_logout_redirect_uri => "https://app.example/bye?a=1&b=2",
                client_id => "demo-app",
                state => HOSTILE,
            },
        );
        assert_layout(&html, "Sign out");
        assert!(html.contains("<h1>Sign out?</h1>"), "{html}");
        assert!(
            html.contains(&format!(
                "You are signed in as <strong>{HOSTILE_ESCAPED}</strong>."
            )),
            "{html}"
        );
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/logout\">"),
            "{html}"
        );
        assert_eq!(
            hidden_fields(&html),
            fields(&[
                ("csrf", "csrf-1"),
                (
                    "post_logout_redirect_uri",
                    "https://app.example/bye?a=1&b=2"
                ),
                ("client_id", "demo-app"),
                ("state", HOSTILE),
            ])
        );
        assert!(
            html.contains(
                "<button type=\"submit\" name=\"decision\" value=\"logout\">Sign out</button>"
            ),
            "{html}"
        );

        // Without a place to return to, only the CSRF token.
        let html = render(
            "logout.html",
            minijinja::context! {
                username => "alice", csrf => "csrf-1", post_logout_redirect_uri => None::<&str>,
                client_id => None::<&str>, state => None::<&str>,
            },
        );
        assert_eq!(hidden_fields(&html), fields(&[("csrf", "csrf-1")]));
    }

    #[test]
    fn signed_out_page() {
        let html = render("signed_out.html", minijinja::context! {});
        assert_layout(&html, "Signed out");
        assert!(html.contains("<h1>You are signed out</h1>"), "{html}");
        assert!(html.contains("You can close this window."), "{html}");
        assert!(!html.contains("<form"), "{html}");
    }

    #[test]
    fn device_page_asks_for_the_code_and_keeps_what_was_typed() {
        let html = render(
            "device.html",
            minijinja::context! { csrf => "csrf-1", user_code => HOSTILE, error => "That code is not valid." },
        );
        assert_layout(&html, "Connect a device");
        assert!(html.contains("<h1>Connect a device</h1>"), "{html}");
        assert!(
            html.contains("<div class=\"alert\" role=\"alert\">That code is not valid.</div>"),
            "{html}"
        );
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/device\">"),
            "{html}"
        );
        assert_eq!(hidden_fields(&html), fields(&[("csrf", "csrf-1")]));
        assert!(
            html.contains("<label for=\"user_code\">Code</label>"),
            "{html}"
        );
        assert!(
            html.contains(&format!("name=\"user_code\" value=\"{HOSTILE_ESCAPED}\"")),
            "{html}"
        );
        assert!(
            html.contains("<button type=\"submit\">Continue</button>"),
            "{html}"
        );

        let html = render(
            "device.html",
            minijinja::context! { csrf => "c", user_code => "", error => None::<&str> },
        );
        assert!(!html.contains("role=\"alert\""), "{html}");
        assert!(html.contains("name=\"user_code\" value=\"\""), "{html}");
    }

    #[test]
    fn device_done_page_says_whether_the_device_was_connected() {
        let html = render("device_done.html", minijinja::context! { approved => true });
        assert_layout(&html, "Device connected");
        assert!(html.contains("<h1>Device connected</h1>"), "{html}");
        assert!(html.contains("return to your device"), "{html}");
        assert!(!html.contains("denied"), "{html}");

        let html = render(
            "device_done.html",
            minijinja::context! { approved => false },
        );
        assert_layout(&html, "Request denied");
        assert!(html.contains("<h1>Request denied</h1>"), "{html}");
        assert!(html.contains("The device was not given access."), "{html}");
        assert!(!html.contains("connected"), "{html}");
    }

    #[test]
    fn email_sent_page_names_the_address_and_the_way_back() {
        let html = render(
            "email_sent.html",
            minijinja::context! { email => HOSTILE, minutes => 15, back => "/kw/login?req=r&x=1" },
        );
        assert_layout(&html, "Check your email");
        assert!(html.contains("<h1>Check your email</h1>"), "{html}");
        assert!(
            html.contains(&format!(
                "If <strong>{HOSTILE_ESCAPED}</strong> can sign in here"
            )),
            "{html}"
        );
        assert!(html.contains("within 15 minutes; it works once."), "{html}");
        assert!(
            html.contains(
                "<a href=\"&#x2f;kw&#x2f;login?req=r&amp;x=1\">Use another way to sign in</a>"
            ),
            "{html}"
        );

        let html = render(
            "email_sent.html",
            minijinja::context! { email => "a@example.com", minutes => 15, back => None::<&str> },
        );
        assert!(!html.contains("Use another way"), "{html}");
    }

    #[test]
    fn email_confirm_page_posts_the_token_to_its_connector() {
        let html = render(
            "email_confirm.html",
            minijinja::context! { connector => "email", token => HOSTILE, name => "id.example" },
        );
        assert_layout(&html, "Continue signing in");
        assert!(html.contains("<h1>Continue signing in</h1>"), "{html}");
        assert!(
            html.contains("You followed a sign-in link for <strong>id.example</strong>."),
            "{html}"
        );
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/callback/email\">"),
            "{html}"
        );
        assert_eq!(hidden_fields(&html), fields(&[("token", HOSTILE)]));
        assert!(
            html.contains("<button type=\"submit\">Continue</button>"),
            "{html}"
        );
    }

    #[test]
    fn account_page_lists_identities_sessions_and_apps_with_their_buttons() {
        let html = render(
            "account.html",
            minijinja::context! {
                user => minijinja::context! {
                    id => "sub-1", username => HOSTILE, name => "Alice Liddell",
                    email => "alice@example.com", email_verified => true,
                },
                csrf => "csrf-1",
                notice => minijinja::context! { ok => true, text => "Linked. You can now sign in with it too." },
                password => true,
                identities => vec![minijinja::context! {
                    connector_id => "github", connector_name => "GitHub", subject => "42",
                    label => "octocat", last_used => "2024-01-02 03:04 UTC", can_unlink => true,
                }],
                link_providers => vec![minijinja::context! { id => "corp", name => "Corporate SSO", kind => "oidc", initial => "C" }],
                link_emails => vec![minijinja::context! { id => "email", name => "Email", kind => "email", initial => "E" }],
                sessions => vec![
                    minijinja::context! { id => "s-1", current => true, browser => "Firefox on Linux", method => "Password", started => "2024-01-02 03:04 UTC", ip => "192.0.2.1" },
                    minijinja::context! { id => "s-2", current => false, browser => "Chromium on Linux", method => "GitHub", started => "2024-01-01 00:00 UTC", ip => None::<&str> },
                ],
                apps => vec![minijinja::context! {
                    client_id => "third-party", name => HOSTILE, scopes => "openid email", since => "2024-01-01 00:00 UTC",
                }],
            },
        );
        assert_layout(&html, "Your account");
        assert!(html.contains("<main class=\"wide\">"), "{html}");
        assert!(html.contains("<h1>Your account</h1>"), "{html}");
        assert!(
            html.contains("<a href=\"&#x2f;kw/logout\">Sign out</a>"),
            "{html}"
        );
        assert!(
            html.contains("<div class=\"notice\" role=\"status\">Linked. You can now sign in with it too.</div>"),
            "{html}"
        );
        assert!(
            html.contains(&format!("<dt>Username</dt><dd>{HOSTILE_ESCAPED}</dd>")),
            "{html}"
        );
        assert!(
            html.contains("<dt>Name</dt><dd>Alice Liddell</dd>"),
            "{html}"
        );
        assert!(
            html.contains("<dd>alice@example.com <span class=\"tag\">verified</span></dd>"),
            "{html}"
        );
        assert!(html.contains("<dd><code>sub-1</code>"), "{html}");
        assert!(
            html.contains(&format!(
                "<strong>Password</strong><span class=\"muted\">as {HOSTILE_ESCAPED}</span>"
            )),
            "{html}"
        );
        assert!(
            html.contains("<strong>GitHub</strong><span class=\"muted\">octocat · last used 2024-01-02 03:04 UTC</span>"),
            "{html}"
        );
        assert!(
            html.contains("aria-label=\"Unlink GitHub octocat\">Unlink</button>"),
            "{html}"
        );
        assert!(!html.contains("only way in"), "{html}");
        assert!(
            html.contains("<form method=\"post\" action=\"&#x2f;kw/account/link/corp\">"),
            "{html}"
        );
        assert!(
            html.contains("</span>Link Corporate SSO</button>"),
            "{html}"
        );
        assert!(
            html.contains(
                "<form method=\"post\" action=\"&#x2f;kw/account/link/email\" class=\"inline-form\">"
            ),
            "{html}"
        );
        assert!(
            html.contains("<label for=\"link-email\">Email address to link</label>"),
            "{html}"
        );
        assert!(
            html.contains("Firefox on Linux <span class=\"tag\">this browser</span></strong><span class=\"muted\">signed in with Password · 2024-01-02 03:04 UTC · 192.0.2.1</span>"),
            "{html}"
        );
        assert!(
            html.contains("<strong>Chromium on Linux</strong><span class=\"muted\">signed in with GitHub · 2024-01-01 00:00 UTC</span>"),
            "{html}"
        );
        // Only the other browser can be signed out from here.
        assert_eq!(
            html.matches("action=\"&#x2f;kw/account/sessions/end\"")
                .count(),
            1,
            "{html}"
        );
        assert!(
            html.contains(
                "aria-label=\"Sign out Chromium on Linux (2024-01-01 00:00 UTC)\">Sign out</button>"
            ),
            "{html}"
        );
        assert!(
            html.contains(&format!("<strong>{HOSTILE_ESCAPED}</strong><span class=\"muted\">openid email · since 2024-01-01 00:00 UTC</span>")),
            "{html}"
        );
        assert!(
            html.contains(&format!(
                "aria-label=\"Revoke access of {HOSTILE_ESCAPED}\">Revoke</button>"
            )),
            "{html}"
        );
        assert!(!html.contains("None yet."), "{html}");
        // Every form carries the CSRF token and names what it acts on.
        assert_eq!(
            hidden_fields(&html),
            fields(&[
                ("csrf", "csrf-1"),
                ("connector", "github"),
                ("subject", "42"),
                ("csrf", "csrf-1"),
                ("csrf", "csrf-1"),
                ("csrf", "csrf-1"),
                ("session", "s-2"),
                ("csrf", "csrf-1"),
                ("client_id", "third-party"),
            ])
        );
    }

    #[test]
    fn account_page_with_one_way_in_and_no_apps() {
        let html = render(
            "account.html",
            minijinja::context! {
                user => minijinja::context! { id => "sub-1", username => "ada", name => None::<&str>, email => None::<&str>, email_verified => false },
                csrf => "csrf-1",
                notice => minijinja::context! { ok => false, text => "That is the only way to sign in to this account. Link another one first." },
                password => false,
                identities => vec![minijinja::context! {
                    connector_id => "corp", connector_name => "Corporate SSO", subject => "ada",
                    label => "ada", last_used => "2024-01-02 03:04 UTC", can_unlink => false,
                }],
                link_providers => Vec::<minijinja::Value>::new(),
                link_emails => Vec::<minijinja::Value>::new(),
                sessions => vec![minijinja::context! { id => "s-1", current => true, browser => "Firefox on Linux", method => "Corporate SSO", started => "2024-01-02 03:04 UTC", ip => None::<&str> }],
                apps => Vec::<minijinja::Value>::new(),
            },
        );
        assert_layout(&html, "Your account");
        assert!(
            html.contains("<div class=\"alert\" role=\"alert\">That is the only way to sign in to this account."),
            "{html}"
        );
        assert!(!html.contains("<dt>Name</dt>"), "{html}");
        assert!(!html.contains("<dt>Email</dt>"), "{html}");
        assert!(!html.contains("<strong>Password</strong>"), "{html}");
        assert!(html.contains(">only way in</span>"), "{html}");
        assert!(!html.contains(">Unlink</button>"), "{html}");
        assert!(!html.contains("Link another way to sign in"), "{html}");
        assert!(html.contains("<p class=\"muted\">None yet.</p>"), "{html}");
        assert!(!html.contains("<form"), "{html}");
    }

    #[tokio::test]
    async fn pages_are_served_with_headers_that_forbid_framing_caching_and_scripts() {
        let response = pages().render(
            StatusCode::NOT_FOUND,
            "error.html",
            minijinja::context! { title => "Not found", message => "Nothing here." },
        );
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
        );
        let html = body(response).await;
        assert!(html.contains("<h1>Not found</h1>"), "{html}");
    }

    /// The nonce of a response's `script-src`, checked to be the only source allowed.
    fn script_nonce(response: &Response) -> String {
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        let (rest, nonce) = policy.split_once("; script-src 'nonce-").unwrap();
        assert_eq!(
            rest,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
        );
        let nonce = nonce.strip_suffix('\'').unwrap();
        assert!(nonce.len() >= 16, "{policy}");
        nonce.to_owned()
    }

    #[tokio::test]
    async fn form_post_carries_hostile_values_exactly_and_runs_only_its_own_script() {
        let action = "https://app.example/cb?x=\"><script>alert(1)</script>&y='1'";
        let params = [
            ("code", "c\"><img src=x onerror=alert(1)>"),
            ("state", "</script><script>alert(2)</script>"),
            ("iss", "https://id.example/kw?a=1&b=<2>"),
            ("x\"onfocus=\"alert(3)", "'&amp;'"),
        ];
        let response = pages().form_post(action, &params);
        assert_eq!(response.status(), StatusCode::OK);
        let nonce = script_nonce(&response);
        let html = body(response).await;

        // The values come back exactly as given: what the client receives is what it
        // was sent, and nothing of them is markup.
        let (_, rest) = html.split_once("<form method=\"post\" action=\"").unwrap();
        let (posted_to, _) = rest.split_once("\" id=\"response\">").unwrap();
        assert_eq!(unescape(posted_to), action);
        assert_eq!(hidden_fields(&html), fields(&params));
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("alert(1)</script>"), "{html}");
        assert!(!html.contains("\"onfocus"), "{html}");
        assert!(
            html.contains("<main>\n<h1>Returning to the application</h1>\n<form method=\"post\""),
            "{html}"
        );
        // One script, with the response's nonce, which submits the form; a button
        // when JavaScript is off.
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(
            html.contains(&format!(
                "<script nonce=\"{nonce}\">document.getElementById('response').submit();</script>"
            )),
            "{html}"
        );
        assert!(
            html.contains("<noscript><p>Signed in. Continue to the application:</p><button type=\"submit\">Continue</button></noscript>"),
            "{html}"
        );
        // A new nonce for every response.
        assert_ne!(script_nonce(&pages().form_post(action, &params)), nonce);
    }

    #[tokio::test]
    async fn web_message_carries_hostile_values_exactly_to_its_origin_only() {
        let origin = "https://app.example";
        let params = [
            ("code", "</script><script>alert(1)</script>"),
            ("state", "\"'<!--&amp;\u{2028}"),
            ("iss", "https://id.example/kw"),
        ];
        let response = pages().web_message(origin, &params);
        assert_eq!(response.status(), StatusCode::OK);
        let nonce = script_nonce(&response);
        let html = body(response).await;
        assert_layout_of_web_message(&html, "Signed in");

        // The message is data, not script: nothing in it ends its element or opens a
        // comment, and it parses back to exactly what was given.
        let (_, rest) = html
            .split_once("<script type=\"application/json\" id=\"message\">")
            .unwrap();
        let (json, _) = rest.split_once("</script>").unwrap();
        assert!(!json.contains('<'), "{json}");
        let message: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            message,
            serde_json::json!({
                "origin": origin,
                "response": {
                    "code": "</script><script>alert(1)</script>",
                    "state": "\"'<!--&amp;\u{2028}",
                    "iss": "https://id.example/kw",
                },
            })
        );
        // Two script elements: the data, and the one that runs, with the nonce and
        // posting to the origin only.
        assert_eq!(html.matches("<script").count(), 2, "{html}");
        assert_eq!(html.matches("<script nonce=").count(), 1, "{html}");
        assert!(
            html.contains(&format!("<script nonce=\"{nonce}\">")),
            "{html}"
        );
        assert!(
            html.contains("window.opener.postMessage({ type: 'authorization_response', response: message.response }, message.origin);"),
            "{html}"
        );

        // An error answer says so.
        let response = pages().web_message(origin, &[("error", "access_denied"), ("state", "<s>")]);
        let html = body(response).await;
        assert_layout_of_web_message(&html, "Sign-in not completed");
        assert!(html.contains("\"error\":\"access_denied\""), "{html}");
    }

    fn assert_layout_of_web_message(html: &str, title: &str) {
        assert!(
            html.contains(&format!("<title>{title} · keyward</title>")),
            "{html}"
        );
        assert!(html.contains(&format!("<h1>{title}</h1>")), "{html}");
    }

    /// The admin console's pages: every form posts to the console under the issuer's
    /// path with the CSRF token, a hostile name or value is escaped everywhere, and a
    /// locked (declared) client shows no form that would change it.
    #[test]
    fn admin_console_pages_escape_what_they_show_and_carry_the_csrf_token() {
        let page = |section: &str| {
            minijinja::context! {
                section => section, admin => "alice", csrf => "csrf-1",
                notice => "Saved.",
            }
        };
        let client = |public: bool| {
            minijinja::context! {
                client_id => "app", path => "/clients/app", name => HOSTILE, public => public,
                redirect_uris => vec![HOSTILE, "https://app.example/cb"],
                post_logout_redirect_uris => Vec::<String>::new(),
                grant_types => "authorization_code refresh_token", scopes => HOSTILE,
                skip_consent => true, introspect => false, created => "2024-01-01 00:00 UTC",
                previous_secret_until => "2024-01-02 00:00 UTC",
            }
        };
        let pages: Vec<(&str, minijinja::Value)> = vec![
            (
                "admin.html",
                minijinja::context! {
                    ..page("overview"),
                    ..minijinja::context! {
                        password => minijinja::context! { id => "password", name => HOSTILE, ok => 3, refused => 1, throttled => 0 },
                        connectors => vec![minijinja::context! { id => "github", name => HOSTILE, ok => 2, refused => 0, failed => 1 }],
                        keys => vec![minijinja::context! { kid => HOSTILE, alg => "ES256", retired => None::<&str>, created => "2024-01-01 00:00 UTC" }],
                    }
                },
            ),
            (
                "admin_users.html",
                minijinja::context! {
                    ..page("users"),
                    ..minijinja::context! {
                        q => HOSTILE, full => false,
                        users => vec![minijinja::context! { username => HOSTILE, path => "/users/x", name => HOSTILE, email => "a@example.com", disabled => true, created => "2024-01-01 00:00 UTC" }],
                    }
                },
            ),
            (
                "admin_user.html",
                minijinja::context! {
                    ..page("users"),
                    ..minijinja::context! {
                        user => minijinja::context! { username => HOSTILE, path => "/users/x", name => HOSTILE, email => HOSTILE, disabled => false, password => true, created => "2024-01-01 00:00 UTC" },
                        sub => "sub-1",
                        identities => vec![minijinja::context! { connector => "GitHub", subject => HOSTILE, label => HOSTILE, linked => "x", last_used => "y" }],
                        sessions => vec![minijinja::context! { id => "ab12", method => "Password", started => "x", ip => "192.0.2.1", agent => HOSTILE, current => true }],
                        grants => vec![minijinja::context! { client_id => HOSTILE, path => "/clients/x", scope => HOSTILE, created => "x", expires => "y" }],
                    }
                },
            ),
            (
                "admin_clients.html",
                minijinja::context! {
                    ..page("clients"),
                    ..minijinja::context! { clients => vec![client(false)], default_grant_types => "authorization_code refresh_token", default_scopes => "openid" }
                },
            ),
            (
                "admin_client.html",
                minijinja::context! {
                    ..page("clients"),
                    ..minijinja::context! { client => client(false), locked => None::<&str>, max_grace_days => 30 }
                },
            ),
            (
                "admin_secret.html",
                minijinja::context! {
                    ..page("clients"),
                    ..minijinja::context! { client => client(false), secret => "s3cret", rotated => true }
                },
            ),
            (
                "admin_link.html",
                minijinja::context! {
                    ..page("users"),
                    ..minijinja::context! {
                        user => minijinja::context! { username => HOSTILE, path => "/users/x", name => HOSTILE },
                        url => "https://id.example/kw/password/set?token=t", expires => "2024-01-02 00:00 UTC",
                    }
                },
            ),
            (
                "admin_audit.html",
                minijinja::context! {
                    ..page("audit"),
                    ..minijinja::context! {
                        entries => vec![minijinja::context! { at => "x", actor => HOSTILE, action => "client.create", target => HOSTILE, address => "192.0.2.1" }],
                        older => minijinja::context! { before => 1234, id => "abc" },
                    }
                },
            ),
        ];
        for (template, context) in pages {
            let html = render(template, context);
            assert!(
                !html.contains("<b>"),
                "{template}: unescaped markup in {html}"
            );
            assert!(html.contains(HOSTILE_ESCAPED), "{template}: {html}");
            assert!(html.contains("Saved."), "{template}: the notice");
            assert!(
                html.contains(r#"aria-current="page""#),
                "{template}: {html}"
            );
            for (at, _) in html.match_indices("<form method=\"post\"") {
                let form = &html[at..at + html[at..].find("</form>").unwrap()];
                assert!(
                    form.contains(r#"action="&#x2f;kw/admin"#),
                    "{template}: {form}"
                );
                assert!(
                    form.contains(r#"name="csrf" value="csrf-1""#),
                    "{template}: {form}"
                );
            }
        }
        let html = render(
            "admin_user.html",
            minijinja::context! {
                user => minijinja::context! { username => "bob", path => "/users/bob", disabled => true },
                csrf => "c", identities => Vec::<u8>::new(), sessions => Vec::<u8>::new(), grants => Vec::<u8>::new(),
            },
        );
        assert!(
            html.contains("Enable account") && !html.contains("Disable account"),
            "{html}"
        );
        let secret = render(
            "admin_secret.html",
            minijinja::context! { client => client(false), secret => "s3cret", rotated => true },
        );
        assert!(
            secret.contains(r#"<code class="secret" id="client-secret">s3cret</code>"#),
            "{secret}"
        );
        let locked = render(
            "admin_client.html",
            minijinja::context! {
                client => client(false), csrf => "c", locked => "client \"app\" is declared in the configuration file", max_grace_days => 30,
            },
        );
        assert!(!locked.contains("<form method=\"post\""), "{locked}");
        assert!(
            locked.contains("declared in the configuration file"),
            "{locked}"
        );
        let public = render(
            "admin_client.html",
            minijinja::context! { client => client(true), csrf => "c", max_grace_days => 30 },
        );
        assert!(
            !public.contains("Rotate secret") && public.contains("Remove app"),
            "{public}"
        );
    }

    /// The set-password page: the form carries the link's token and offers the
    /// username to password managers; once done, it says so and has no form.
    #[test]
    fn set_password_page_asks_twice_then_says_done() {
        let html = render(
            "password_set.html",
            minijinja::context! { username => HOSTILE, token => "tok-1", error => "The two passwords differ.", done => false },
        );
        assert!(
            html.contains(HOSTILE_ESCAPED) && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains(r#"action="&#x2f;kw/password/set""#), "{html}");
        assert!(html.contains(r#"name="token" value="tok-1""#), "{html}");
        assert_eq!(
            html.matches(r#"autocomplete="new-password""#).count(),
            2,
            "{html}"
        );
        assert!(html.contains("The two passwords differ."), "{html}");
        let done = render(
            "password_set.html",
            minijinja::context! { username => "bob", done => true },
        );
        assert!(
            done.contains("<h1>Password set</h1>") && !done.contains("<form"),
            "{done}"
        );
        assert!(!done.contains("tok-1"));
    }

    /// Every template has a test above that checks what it shows.
    #[test]
    fn every_template_is_checked_here() {
        let checked = [
            "base.html",
            "login.html",
            "consent.html",
            "error.html",
            "logout.html",
            "signed_out.html",
            "device.html",
            "device_done.html",
            "email_sent.html",
            "email_confirm.html",
            "account.html",
            "admin_base.html",
            "admin.html",
            "admin_users.html",
            "admin_user.html",
            "admin_clients.html",
            "admin_client.html",
            "admin_secret.html",
            "admin_audit.html",
            "admin_link.html",
            "password_set.html",
            "form_post.html",
            "web_message.html",
        ];
        let templates: Vec<_> = TEMPLATES.iter().map(|(name, _)| *name).collect();
        assert_eq!(templates, checked);
    }
}
