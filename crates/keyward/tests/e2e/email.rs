//! Signing in by emailed link, over a real SMTP conversation: the test starts an SMTP
//! sink (`smtp-server` from npm, tests/js/smtp-sink.mjs), reads the delivered message
//! and follows its link. Without SMTP, in development, the link goes to the log.

use reqwest::StatusCode;

use crate::support::*;
use keyward_server::store::IdentityKey;

/// The SMTP sink: every message it accepts arrives here as JSON, and so do refused
/// logins and failed TLS handshakes.
struct SmtpSink {
    server: crate::js::NodeServer,
    port: u16,
    /// The certificate authority that signed its certificate (PEM), with `--tls`.
    ca: Option<String>,
}

impl SmtpSink {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the sink with `args` (`--tls starttls|tls`, `--auth USER:PASSWORD`).
    async fn start_with(args: &[&str]) -> Self {
        let mut command = vec!["smtp-sink.mjs"];
        command.extend(args);
        let server = crate::js::NodeServer::start(&command).await;
        let port = u16::try_from(server.started["port"].as_u64().unwrap()).unwrap();
        let ca = server.started["ca"].as_str().map(str::to_owned);
        Self { server, port, ca }
    }

    /// The next line the sink prints (waiting at most 30 s).
    async fn next_event(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.server.lines.next_line(),
        )
        .await
        .expect("the SMTP sink said something within 30 s")
        .unwrap()
        .expect("the sink is running");
        serde_json::from_str(&line).unwrap()
    }

    /// The next message delivered (waiting at most 30 s), passing over the repeats of
    /// a failed TLS handshake that smtp-server may report.
    async fn next_message(&mut self) -> serde_json::Value {
        loop {
            let event = self.next_event().await;
            if event.get("tls_error").is_none() {
                assert!(event.get("to").is_some(), "not a message: {event}");
                return event;
            }
        }
    }
}

/// The first URL in `text` that starts with `prefix`.
fn link_in(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {text}"));
    text[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap()
        .to_owned()
}

fn email_connectors(smtp_port: u16) -> String {
    format!(
        r#"
[[connectors]]
id = "email"
type = "email"
from = "keyward <sign-in@keyward.test>"
smtp = {{ host = "127.0.0.1", port = {smtp_port}, tls = "none" }}

[[connectors]]
id = "members"
type = "email"
name = "Members' address"
create_accounts = false
trust_email = true
smtp = {{ host = "127.0.0.1", port = {smtp_port}, tls = "none" }}
"#
    )
}

/// Asks `app` for a link for `address` through connector `id`; returns the page.
async fn ask_for_link(browser: &reqwest::Client, app: &TestApp, id: &str, address: &str) -> Page {
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid email", "&prompt=login");
    let page = open(browser, &url).await;
    let response = submit(
        browser,
        &page,
        &format!("/login/{id}"),
        "",
        &[("email", address)],
    )
    .await;
    settle(browser, response).await.unwrap()
}

#[tokio::test]
async fn emailed_links_sign_in_once_in_the_browser_that_asked() {
    if !crate::js::available(&["smtp-server", "mailparser"], &[]) {
        return;
    }
    let mut sink = SmtpSink::start().await;
    let app = spawn_app(Db::Sqlite, &email_connectors(sink.port))
        .await
        .unwrap();
    let store = app.state.store();
    let link_prefix = format!("{}/callback/email?token=", app.issuer);

    // Ask, as a person types it.
    let browser = browser();
    let (url, verifier) = authorize_url(&app.issuer, "demo-app", "openid email", "");
    let page = open(&browser, &url).await;
    assert!(
        page.html.contains("Email me a sign-in link"),
        "{}",
        page.html
    );
    let response = submit(
        &browser,
        &page,
        "/login/email",
        "",
        &[("email", " Carol@Example.COM ")],
    )
    .await;
    let sent = settle(&browser, response).await.unwrap();
    assert_eq!(sent.status, StatusCode::OK);
    assert!(sent.html.contains("Check your email"), "{}", sent.html);
    assert!(sent.html.contains("carol@example.com"), "{}", sent.html);

    // A real SMTP delivery, with the link in both parts.
    let message = sink.next_message().await;
    assert_eq!(message["to"], serde_json::json!(["carol@example.com"]));
    assert_eq!(message["from"], "sign-in@keyward.test");
    assert!(
        message["subject"]
            .as_str()
            .unwrap()
            .contains("sign-in link")
    );
    let link = link_in(message["text"].as_str().unwrap(), &link_prefix);
    assert_eq!(
        link,
        link_in(message["html"].as_str().unwrap(), &link_prefix)
    );

    // Opening the link (as a mail scanner might, twice) uses nothing; the click does.
    let confirm = open(&browser, &link).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let confirm = open(&browser, &link).await;
    assert!(
        confirm.html.contains("Continue signing in"),
        "{}",
        confirm.html
    );
    let response = submit(&browser, &confirm, "/callback/email", "", &[]).await;
    let params = settle(&browser, response).await.unwrap_err();
    let (status, body) = redeem_code(
        &app,
        "demo-app",
        Some(SECRET),
        &params["code"],
        verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = jwt_payload(body["id_token"].as_str().unwrap());
    assert_eq!(claims["email"], "carol@example.com");
    assert_eq!(claims["email_verified"], true);
    let carol = claims["sub"].as_str().unwrap().to_owned();
    assert_eq!(
        store.get_user(&carol).await.unwrap().unwrap().username,
        "carol"
    );

    // Single use.
    let response = submit(&browser, &confirm, "/callback/email", "", &[]).await;
    let page = settle(&browser, response).await.unwrap();
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.html.contains("Sign-in expired"), "{}", page.html);

    // A link followed in another browser than the one that asked does not sign in.
    ask_for_link(&browser, &app, "email", "carol@example.com").await;
    let link = link_in(
        sink.next_message().await["text"].as_str().unwrap(),
        &link_prefix,
    );
    let elsewhere = crate::support::browser();
    let confirm = open(&elsewhere, &link).await;
    let response = submit(&elsewhere, &confirm, "/callback/email", "", &[]).await;
    let page = settle(&elsewhere, response).await.unwrap();
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.html.contains("another browser"), "{}", page.html);

    // In a browser where nobody is signed in: a connector that creates no accounts
    // answers the same for an unknown address, and sends nothing to it; carol's
    // verified address (the connector trusts addresses) gets her link, which signs in
    // to her account.
    let other = crate::support::browser();
    let unknown = ask_for_link(&other, &app, "members", "dave@example.com").await;
    let known = ask_for_link(&other, &app, "members", "carol@example.com").await;
    assert_eq!(unknown.status, known.status);
    let strip = |page: &Page, address: &str| {
        let req = hidden_req(&page.html);
        page.html.replace(address, "ADDRESS").replace(&req, "REQ")
    };
    assert_eq!(
        strip(&unknown, "dave@example.com"),
        strip(&known, "carol@example.com")
    );
    let message = sink.next_message().await;
    assert_eq!(
        message["to"],
        serde_json::json!(["carol@example.com"]),
        "nothing for dave"
    );
    let link = link_in(
        message["text"].as_str().unwrap(),
        &format!("{}/callback/members?token=", app.issuer),
    );
    let confirm = open(&other, &link).await;
    let response = submit(&other, &confirm, "/callback/members", "", &[]).await;
    let params = settle(&other, response).await.unwrap_err();
    assert!(params.contains_key("code"), "{params:?}");
    let members = store
        .get_identity(IdentityKey {
            connector_id: "members",
            subject: "carol@example.com",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        members.user_id, carol,
        "linked by the trusted, verified address"
    );

    // Throttled per address: the sixth request within the window sends nothing. The
    // messages go out from tasks spawned per request, so they may arrive in any order:
    // the recipients are compared sorted, and each message is checked whole.
    for _ in 0..6 {
        let page = ask_for_link(&browser, &app, "email", "frank@example.com").await;
        assert!(page.html.contains("Check your email"));
    }
    ask_for_link(&browser, &app, "email", "erin@example.com").await;
    let mut recipients = Vec::new();
    let mut links = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let message = sink.next_message().await;
        let to = message["to"].as_array().unwrap();
        assert_eq!(to.len(), 1, "{message}");
        assert_eq!(message["from"], "sign-in@keyward.test");
        assert!(
            message["subject"]
                .as_str()
                .unwrap()
                .contains("sign-in link"),
            "{message}"
        );
        let link = link_in(message["text"].as_str().unwrap(), &link_prefix);
        assert_eq!(
            link,
            link_in(message["html"].as_str().unwrap(), &link_prefix)
        );
        assert!(links.insert(link), "each message has its own link");
        recipients.push(to[0].as_str().unwrap().to_owned());
    }
    recipients.sort();
    assert_eq!(
        recipients,
        [
            "erin@example.com",
            "frank@example.com",
            "frank@example.com",
            "frank@example.com",
            "frank@example.com",
            "frank@example.com",
        ]
    );
    // Had a sixth link for frank gone out, it would (barring a delivery slower than a
    // whole later request) arrive before this one.
    ask_for_link(&browser, &app, "email", "grace@example.com").await;
    assert_eq!(
        sink.next_message().await["to"],
        serde_json::json!(["grace@example.com"]),
        "no sixth link for frank"
    );

    // Not an address: the login page says so.
    let page = ask_for_link(&browser, &app, "email", "not an address").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.html.contains("Enter a valid email address."),
        "{}",
        page.html
    );
}

/// The `req` of the "Use another way to sign in" link on an email-sent page.
fn hidden_req(html: &str) -> String {
    let marker = "login?req=";
    let start = html.find(marker).map_or(0, |at| at + marker.len());
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The address of the next message the sink delivers.
async fn next_recipient(sink: &mut SmtpSink) -> String {
    let message = sink.next_message().await;
    let to = message["to"].as_array().unwrap();
    assert_eq!(to.len(), 1, "{message}");
    to[0].as_str().unwrap().to_owned()
}

/// Asks for a link for `address`, which must not be sent (throttled); shown by asking
/// for one for `witness`, an address never used before, whose link is the next
/// message delivered. (Had a link for `address` gone out, it would, barring a delivery
/// slower than a whole later request, have arrived first.)
async fn not_sent(
    browser: &reqwest::Client,
    app: &TestApp,
    sink: &mut SmtpSink,
    address: &str,
    witness: &str,
) {
    let page = ask_for_link(browser, app, "email", address).await;
    assert!(page.html.contains("Check your email"), "{}", page.html);
    ask_for_link(browser, app, "email", witness).await;
    assert_eq!(
        next_recipient(sink).await,
        witness,
        "a link for {address} was sent"
    );
}

/// An emailed link works for 15 minutes, on the server's clock (moved, not waited for;
/// real time runs on beside it, hence the margins): one used 14:50 after it was asked
/// for signs in, one used at 15:10 is refused. And
/// links for one address are limited: five at once, then one after a minute, then the
/// wait doubles (two minutes), whatever the page says (it says the same every time).
#[tokio::test]
async fn emailed_links_expire_after_15_minutes_and_are_limited_per_address() {
    if !crate::js::available(&["smtp-server", "mailparser"], &[]) {
        return;
    }
    let mut sink = SmtpSink::start().await;
    // Logins in progress live as long as the links here, so that only the link expires.
    let app = spawn_app(
        Db::Sqlite,
        &format!("login_ttl = \"1h\"\n{}", email_connectors(sink.port)),
    )
    .await
    .unwrap();
    let link_prefix = format!("{}/callback/email?token=", app.issuer);

    let browser = browser();
    let sent = ask_for_link(&browser, &app, "email", "carol@example.com").await;
    assert!(sent.html.contains("15 minutes"), "{}", sent.html);
    let first = sink.next_message().await;
    assert!(
        first["text"].as_str().unwrap().contains("for 15 minutes"),
        "{first}"
    );
    let first = link_in(first["text"].as_str().unwrap(), &link_prefix);
    ask_for_link(&browser, &app, "email", "carol@example.com").await;
    let second = link_in(
        sink.next_message().await["text"].as_str().unwrap(),
        &link_prefix,
    );

    app.advance(15 * 60 - 10);
    let confirm = open(&browser, &first).await;
    let response = submit(&browser, &confirm, "/callback/email", "", &[]).await;
    let params = settle(&browser, response).await.unwrap_err();
    assert!(params.contains_key("code"), "{params:?}");

    app.advance(20);
    let confirm = open(&browser, &second).await;
    let response = submit(&browser, &confirm, "/callback/email", "", &[]).await;
    let page = settle(&browser, response).await.unwrap();
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.html);
    assert!(page.html.contains("Sign-in expired"), "{}", page.html);

    // Five links for henry at once (delivered in any order).
    for _ in 0..5 {
        ask_for_link(&browser, &app, "email", "henry@example.com").await;
    }
    for _ in 0..5 {
        assert_eq!(next_recipient(&mut sink).await, "henry@example.com");
    }
    // The sixth waits a minute.
    not_sent(
        &browser,
        &app,
        &mut sink,
        "henry@example.com",
        "ivy@example.com",
    )
    .await;
    app.advance(60);
    ask_for_link(&browser, &app, "email", "henry@example.com").await;
    assert_eq!(next_recipient(&mut sink).await, "henry@example.com");
    // The next waits twice as long: not after 110 s, after 121.
    not_sent(
        &browser,
        &app,
        &mut sink,
        "henry@example.com",
        "jack@example.com",
    )
    .await;
    app.advance(110);
    not_sent(
        &browser,
        &app,
        &mut sink,
        "henry@example.com",
        "kate@example.com",
    )
    .await;
    app.advance(11);
    ask_for_link(&browser, &app, "email", "henry@example.com").await;
    assert_eq!(next_recipient(&mut sink).await, "henry@example.com");
}

/// `smtp.tls = "starttls"` and `"tls"`, each with SMTP authentication: the sink
/// requires TLS (offered by STARTTLS, or from the first byte) and AUTH (accepted only
/// over TLS), with a certificate for 127.0.0.1 signed by an authority made for the
/// run, which keyward trusts through `ca_file`. The link arrives over TLS from the
/// configured user and signs in. The same server with a wrong password is refused at
/// AUTH, and without `ca_file` keyward refuses the certificate (an unknown authority)
/// and sends nothing, not even its password.
#[tokio::test]
async fn links_go_out_over_starttls_and_tls_with_smtp_authentication() {
    if !crate::js::available(&["smtp-server", "mailparser", "node-forge"], &[]) {
        return;
    }
    const SMTP_PASSWORD: &str = "smtp-password-0123456789";
    for mode in ["starttls", "tls"] {
        let mut sink =
            SmtpSink::start_with(&["--tls", mode, "--auth", &format!("keyward:{SMTP_PASSWORD}")])
                .await;
        let dir = temp_dir();
        let ca_file = dir.join("smtp-ca.pem");
        std::fs::write(&ca_file, sink.ca.as_deref().expect("the sink's CA")).unwrap();
        let connector = |id: &str, password: &str, ca: bool| {
            let ca = if ca {
                format!(", ca_file = \"{}\"", ca_file.display())
            } else {
                String::new()
            };
            format!(
                r#"
[[connectors]]
id = "{id}"
type = "email"
from = "keyward <sign-in@keyward.test>"
smtp = {{ host = "127.0.0.1", port = {port}, tls = "{mode}", username = "keyward", password = "{password}"{ca} }}
"#,
                port = sink.port
            )
        };
        let app = spawn_app(
            Db::Sqlite,
            &format!(
                "{}{}{}",
                connector("email", SMTP_PASSWORD, true),
                connector("wrong", "not-the-password", true),
                connector("untrusted", SMTP_PASSWORD, false),
            ),
        )
        .await
        .unwrap();

        let browser = browser();
        let (url, verifier) = authorize_url(&app.issuer, "demo-app", "openid email", "");
        let page = open(&browser, &url).await;
        let response = submit(
            &browser,
            &page,
            "/login/email",
            "",
            &[("email", "carol@example.com")],
        )
        .await;
        let sent = settle(&browser, response).await.unwrap();
        assert!(sent.html.contains("Check your email"), "{}", sent.html);
        let message = sink.next_message().await;
        assert_eq!(message["secure"], true, "{mode}: {message}");
        assert_eq!(message["user"], "keyward", "{mode}: {message}");
        assert_eq!(message["to"], serde_json::json!(["carol@example.com"]));
        let link = link_in(
            message["text"].as_str().unwrap(),
            &format!("{}/callback/email?token=", app.issuer),
        );
        let confirm = open(&browser, &link).await;
        let response = submit(&browser, &confirm, "/callback/email", "", &[]).await;
        let params = settle(&browser, response).await.unwrap_err();
        let (status, body) = redeem_code(
            &app,
            "demo-app",
            Some(SECRET),
            &params["code"],
            verifier.secret(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{mode}: {body}");

        let page = ask_for_link(&browser, &app, "wrong", "dave@example.com").await;
        assert!(page.html.contains("Check your email"), "{}", page.html);
        assert_eq!(
            sink.next_event().await,
            serde_json::json!({"auth_failed": "keyward"}),
            "{mode}"
        );

        let page = ask_for_link(&browser, &app, "untrusted", "erin@example.com").await;
        assert!(page.html.contains("Check your email"), "{}", page.html);
        let event = sink.next_event().await;
        assert!(
            event["tls_error"]
                .as_str()
                .is_some_and(|e| e.contains("UNKNOWN_CA")),
            "{mode}: {event}"
        );
        // Nothing went out for dave or erin: the next message is the next link asked for.
        ask_for_link(&browser, &app, "email", "frank@example.com").await;
        assert_eq!(
            sink.next_message().await["to"],
            serde_json::json!(["frank@example.com"]),
            "{mode}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
