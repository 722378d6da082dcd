//! keyward as JavaScript sees it (tests/js): `openid-client` from npm as a third-party
//! relying party (discovery, code + PKCE, ID token validation, userinfo, refresh), and
//! the pages in headless Chromium driven by `playwright-core`. Also the other way
//! round: `keyward login | token | logout` against a certified provider from npm
//! (`oidc-provider`), to show the client is not tied to keyward.
//!
//! Each check is skipped when Node.js, the npm packages (`npm ci` in tests/js) or
//! Chromium are missing, unless `KEYWARD_REQUIRE_JS` is set, as .ci/run does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

pub(crate) fn js_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/js")).to_path_buf()
}

/// Whether `packages` are installed and Node.js runs; panics when missing but required.
pub(crate) fn available(packages: &[&str], also: &[&str]) -> bool {
    let dir = js_dir();
    let mut missing: Vec<String> = packages
        .iter()
        .filter(|p| !dir.join("node_modules").join(p).exists())
        .map(|p| format!("npm package {p}"))
        .collect();
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("node".into());
    }
    missing.extend(
        also.iter()
            .filter(|f| !Path::new(f).exists())
            .map(|f| (*f).to_owned()),
    );
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("KEYWARD_REQUIRE_JS").is_none(),
        "KEYWARD_REQUIRE_JS is set but {missing:?} are missing"
    );
    eprintln!("SKIPPED: {missing:?} missing (run `npm ci` in tests/js; install Chromium)");
    false
}

/// How long a script that only talks HTTP may run.
const HTTP_SCRIPT: Duration = Duration::from_secs(120);
/// How long a script that drives Chromium may run (each of its steps is bounded by
/// playwright's own 30 s).
const BROWSER_SCRIPT: Duration = Duration::from_secs(300);

/// Runs `node <args>` in tests/js and waits for it to end, at most `limit`: a script
/// that does not finish is killed and the test fails, with what it printed.
async fn node(args: &[&str], limit: Duration) -> Output {
    let mut child = spawn_node(args, std::process::Stdio::null());
    let stdout = Collected::from(child.stdout.take().unwrap());
    let stderr = Collected::from(child.stderr.take().unwrap());
    bounded_wait(child, stdout, stderr, args, limit).await
}

fn spawn_node(args: &[&str], stdin: std::process::Stdio) -> tokio::process::Child {
    tokio::process::Command::new("node")
        .args(args)
        .current_dir(js_dir())
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node")
}

/// Waits at most `limit` for `child` to end; kills it and fails the test, with what it
/// printed, if it does not.
async fn bounded_wait(
    mut child: tokio::process::Child,
    stdout: Collected,
    stderr: Collected,
    args: &[&str],
    limit: Duration,
) -> Output {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Output {
            status: status.expect("wait for node"),
            stdout: stdout.finish().await,
            stderr: stderr.finish().await,
        },
        Err(_) => {
            child.kill().await.expect("kill node");
            panic!(
                "`node {}` did not finish within {limit:?}; it printed:\n{}\n{}",
                args.join(" "),
                text(&stdout.finish().await),
                text(&stderr.finish().await)
            );
        }
    }
}

/// A script of tests/js that offers something first (one JSON line, such as the port
/// of a server it runs), then reads its input (one JSON line) and runs to its end.
struct Conversation {
    child: tokio::process::Child,
    args: Vec<String>,
    /// The first line it printed.
    offered: serde_json::Value,
    stdout: Collected,
    stderr: Collected,
}

impl Conversation {
    /// Runs `node <args>` in tests/js and waits (at most 30 s) for its first line.
    async fn start(args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = spawn_node(args, std::process::Stdio::piped());
        let stderr = Collected::from(child.stderr.take().unwrap());
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first)).await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            child.kill().await.expect("kill node");
            panic!(
                "`node {}` printed no first line within 30 s:\n{}",
                args.join(" "),
                text(&stderr.finish().await)
            );
        }
        Self {
            child,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            offered: serde_json::from_str(&first).unwrap(),
            stdout: Collected::from(stdout),
            stderr,
        }
    }

    /// Gives the script its input and waits at most `limit` for it to end.
    async fn finish(mut self, input: &serde_json::Value, limit: Duration) -> Output {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = self.child.stdin.take().unwrap();
        stdin
            .write_all(format!("{input}\n").as_bytes())
            .await
            .expect("write the script's input");
        drop(stdin);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        bounded_wait(self.child, self.stdout, self.stderr, &args, limit).await
    }
}

/// What a child process writes to one of its pipes, gathered as it comes, so that
/// what a killed process printed can still be shown.
struct Collected {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Collected {
    fn from(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Self {
        use tokio::io::AsyncReadExt as _;
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = tokio::spawn(async move {
            let mut chunk = [0; 8192];
            while let Ok(n) = pipe.read(&mut chunk).await
                && n > 0
            {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Self { bytes, reader }
    }

    /// Everything written, once the pipe closed (or, if a grandchild keeps it open,
    /// what was written within 10 s).
    async fn finish(self) -> Vec<u8> {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.reader).await;
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

/// A fresh, empty directory for the screenshots of one test,
/// target/tmp/browser-screenshots/<test>: nothing an earlier run left there can stand
/// in for a page this run did not reach.
fn screenshot_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-screenshots")
        .join(test);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", dir.display()),
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that this run took each of `shots` in `dir` (from [`screenshot_dir`]): a
/// PNG image with something in it.
fn assert_screenshots(dir: &Path, shots: &[&str]) {
    for shot in shots {
        let path = dir.join(format!("{shot}.png"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("screenshot {shot} ({}): {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000,
            "screenshot {shot} is not a PNG image of a page ({} bytes)",
            bytes.len()
        );
    }
}

/// A server run by a Node.js script of tests/js that prints one JSON line when it
/// listens and runs until its standard input closes (or it is dropped).
pub(crate) struct NodeServer {
    _child: tokio::process::Child,
    /// The first line it printed.
    pub(crate) started: serde_json::Value,
    /// What it prints after that, line by line.
    pub(crate) lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl NodeServer {
    /// Runs `node <args>` in tests/js and waits (at most 30 s) for its first line.
    pub(crate) async fn start(args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new("node")
            .args(args)
            .current_dir(js_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = child.stderr.take().unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{args:?} printed nothing within 30 s"))
            .unwrap();
        let Some(first) = first else {
            let mut said = String::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said),
            )
            .await;
            panic!("{args:?} ended before it listened:\n{said}");
        };
        // Keep draining what it says, so that it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stderr, &mut sink).await;
        });
        Self {
            _child: child,
            started: serde_json::from_str(&first).unwrap(),
            lines,
        }
    }
}

fn check(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn openid_client_from_npm_logs_in_and_refreshes() {
    if !available(&["openid-client"], &[]) {
        return;
    }
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let args = [
        "openid-client.mjs",
        &app.issuer,
        "demo-app",
        SECRET,
        REDIRECT,
        "alice",
        PASSWORD,
    ];
    let stdout = check(&node(&args, HTTP_SCRIPT).await);
    assert!(stdout.contains("interop ok"), "{stdout}");
}

#[tokio::test]
async fn pages_work_in_chromium() {
    if !available(&["playwright-core"], &["/usr/bin/chromium"]) {
        return;
    }
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let (url, verifier) = authorize_url(&app.issuer, "third-party", "openid email", "");
    let device: serde_json::Value = http()
        .post(format!("{}/device/code", app.issuer))
        .form(&[("client_id", "cli"), ("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_code = device["user_code"].as_str().unwrap();
    let artifacts = screenshot_dir("pages");
    let args = [
        "browser.mjs",
        &app.issuer,
        &url,
        REDIRECT,
        "alice",
        PASSWORD,
        &artifacts.display().to_string(),
        user_code,
    ];
    let stdout = check(&node(&args, BROWSER_SCRIPT).await);
    let response: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(response["state"], "st");
    assert_screenshots(
        &artifacts,
        &[
            "01-login",
            "02-login-error",
            "03-consent",
            "04-callback",
            "05-logout",
            "06-signed-out",
            "07-error",
            "08-device",
            "09-device-consent",
            "10-device-connected",
        ],
    );
    // The code the browser carried back is genuine.
    let (status, body) = token_request(
        &app,
        "third-party",
        Some(THIRD_PARTY_SECRET),
        &[
            ("grant_type", "authorization_code"),
            ("code", response["code"].as_str().unwrap()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The device approved in the browser collects its tokens.
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "cli"),
            ("device_code", device["device_code"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `keyward login` through the browser (RFC 8252) with Chromium as the browser: the
/// page the terminal opened is signed in to and allowed in Chromium, which follows
/// keyward's redirect to the terminal's listener on 127.0.0.1 and shows its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_login_through_chromium_over_a_loopback_redirect() {
    use crate::browser_login::{fake_browser, login_with_browser, opened_page};
    if !available(&["playwright-core"], &["/usr/bin/chromium"]) {
        return;
    }
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let home = temp_dir();
    let (script, opened) = fake_browser(&home);
    let login = login_with_browser(&app, &home, &script, &[]);
    let url = opened_page(&opened).await;
    let artifacts = screenshot_dir("terminal-login");
    let stdout = check(
        &node(
            &[
                "terminal-login.mjs",
                &url,
                "alice",
                PASSWORD,
                &artifacts.display().to_string(),
            ],
            BROWSER_SCRIPT,
        )
        .await,
    );
    assert_eq!(stdout.trim(), r#"{"loggedIn":true}"#);
    assert_screenshots(
        &artifacts,
        &[
            "terminal-1-sign-in",
            "terminal-2-consent",
            "terminal-3-done",
        ],
    );
    let (status, _, stderr) = login.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Logged in to {} as alice", app.issuer)),
        "{stderr}"
    );
}

/// `keyward login | token | logout` against oidc-provider from npm: discovery, the
/// device flow approved in Chromium on the provider's own pages, a refresh, a
/// revocation — nothing keyward-specific.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_login_against_oidc_provider_from_npm() {
    if !available(
        &["oidc-provider", "playwright-core"],
        &["/usr/bin/chromium"],
    ) {
        return;
    }
    let provider = NodeServer::start(&["oidc-provider.mjs", "keyward-cli"]).await;
    let issuer = provider.started["issuer"].as_str().unwrap().to_owned();
    let home = temp_dir();

    let mut login = Watched::spawn(keyward_cli(
        &home,
        &[
            "login",
            &issuer,
            "--client-id",
            "keyward-cli",
            "--no-browser",
        ],
    ));
    let url = login.device_url(&issuer).await;
    let artifacts = screenshot_dir("oidc-provider-device");
    let stdout = check(
        &node(
            &[
                "device-approve.mjs",
                &url,
                "carol",
                &artifacts.display().to_string(),
            ],
            BROWSER_SCRIPT,
        )
        .await,
    );
    assert_eq!(stdout.trim(), r#"{"approved":true}"#);
    assert_screenshots(
        &artifacts,
        &[
            "foreign-1-confirm",
            "foreign-2-sign-in",
            "foreign-3-authorize",
            "foreign-4-success",
        ],
    );
    let (status, _, stderr) = login.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Logged in to {issuer} as carol <carol@example.org>."
        )),
        "{stderr}"
    );

    // The token works at the provider's userinfo endpoint.
    let token = |out: std::process::Output| {
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let userinfo = |access: String| {
        let issuer = issuer.clone();
        async move {
            http()
                .get(format!("{issuer}/me"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let first = token(keyward_cli(&home, &["token"]).output().await.unwrap());
    assert_eq!(userinfo(first.clone()).await, StatusCode::OK);

    // Within the margin: `keyward token` refreshes at the provider.
    let server = url::Url::parse(&issuer).unwrap();
    let store = keyward_client::tokenfile::TokenStore::for_server(&home, &server).unwrap();
    let mut file = store.load().unwrap().unwrap();
    file.expires_at = keyward_client::login::unix_now() + 5;
    store.save(&file).unwrap();
    let second = token(keyward_cli(&home, &["token"]).output().await.unwrap());
    assert_ne!(second, first);
    assert_eq!(userinfo(second).await, StatusCode::OK);
    let refreshed = store.load().unwrap().unwrap();
    assert_eq!(refreshed.user_name.as_deref(), Some("carol"));

    // `keyward logout` revokes the refresh token at the provider.
    let out = keyward_cli(&home, &["logout"]).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!store.path().exists());
    let refused = http()
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "keyward-cli"),
            ("refresh_token", refreshed.refresh_token.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    drop(provider);
    let _ = std::fs::remove_dir_all(home);
}

/// keyward as a broker in Chromium, with oidc-provider from npm as the upstream OpenID
/// provider (ID tokens signed with EdDSA for one connector, RS256 for the other) and
/// the fake GitHub: the login page, the provider round trip, consent, the account page,
/// and a `web_message` popup (tests/js/broker.mjs), each of keyward's pages audited for
/// accessibility. Both codes it brings back are
/// redeemed here, for the same account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_pages_in_chromium_through_oidc_provider() {
    if !available(
        &["oidc-provider", "playwright-core"],
        &["/usr/bin/chromium"],
    ) {
        return;
    }
    const UPSTREAM_SECRET: &str = "npm-upstream-secret-0123456789abcdef";
    let listener = bind().await;
    let port = listener.local_addr().unwrap().port();
    let callback = |id: &str| format!("http://127.0.0.1:{port}/callback/{id}");
    let upstream = NodeServer::start(&[
        "oidc-upstream.mjs",
        UPSTREAM_SECRET,
        &callback("npm-rs"),
        &callback("npm-ed"),
    ])
    .await;
    let npm = upstream.started["issuer"].as_str().unwrap().to_owned();
    let github = crate::fake_github::FakeGithub::start(
        "gh-client",
        "github-secret-0123456789abcdef",
        &callback("github"),
    )
    .await;
    github.add_user(crate::fake_github::FakeUser {
        id: 1,
        login: "octocat".into(),
        name: None,
        emails: vec![("octocat@github.example".into(), true, true)],
        orgs: vec![],
        teams: vec![],
    });
    github.sign_in_as(Some("octocat"));
    let oidc = |id: &str, name: &str, client: &str| {
        format!(
            "[[connectors]]\nid = \"{id}\"\ntype = \"oidc\"\nname = \"{name}\"\nissuer = \"{npm}\"\nclient_id = \"{client}\"\nclient_secret = \"{UPSTREAM_SECRET}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n"
        )
    };
    let connectors = format!(
        "{}\n{}\n[[connectors]]\nid = \"github\"\ntype = \"github\"\nclient_id = \"gh-client\"\nclient_secret = \"github-secret-0123456789abcdef\"\nbase_url = \"{}\"\napi_url = \"{}\"\n\n[[connectors]]\nid = \"email\"\ntype = \"email\"\n",
        oidc("npm-ed", "npm (EdDSA)", "keyward-ed"),
        oidc("npm-rs", "npm (RS256)", "keyward-rs"),
        github.url,
        github.api_url()
    );
    let app = spawn_app_on(listener, "127.0.0.1", Db::Sqlite, &base_config(&connectors))
        .await
        .unwrap();

    let (url, verifier) = authorize_url(&app.issuer, "third-party", "openid email", "");
    let (popup_url, popup_verifier) = authorize_url(
        &app.issuer,
        "third-party",
        "openid email",
        "&response_mode=web_message",
    );
    let artifacts = screenshot_dir("broker");
    let args = [
        "broker.mjs",
        &app.issuer,
        &url,
        &popup_url,
        REDIRECT,
        &artifacts.display().to_string(),
    ];
    let stdout = check(&node(&args, BROWSER_SCRIPT).await);
    let result: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_screenshots(
        &artifacts,
        &[
            "11-login-providers",
            "11b-email-sent",
            "12-upstream-1-sign-in",
            "12-upstream-2-authorize",
            "13-consent-after-provider",
            "14-account",
            "15-upstream-link-1-authorize",
            "16-account-linked",
            "17-other-browser-1-sign-in",
            "17-other-browser-2-authorize",
            "18-sessions",
            "19-app-revoked",
            "20-popup-consent",
        ],
    );

    // keyward's pages on the way, audited for accessibility (the script fails on any
    // violation).
    assert_eq!(
        result["audited"],
        serde_json::json!([
            "login-providers",
            "email-sent",
            "consent-after-provider",
            "account",
            "account-linked",
            "account-sessions",
            "account-app-revoked",
        ])
    );

    // The code from the provider round trip was issued before the app was revoked on
    // the account page: it is refused. The popup's (web_message), issued after a new
    // consent, works: ada, as oidc-provider describes her.
    assert_eq!(result["state"], "st");
    let (status, body) = redeem_code(
        &app,
        "third-party",
        Some(THIRD_PARTY_SECRET),
        result["code"].as_str().unwrap(),
        verifier.secret(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let message = &result["web_message"];
    assert_eq!(message["state"], "st");
    assert_eq!(message["iss"], app.issuer.as_str());
    let (status, body) = redeem_code(
        &app,
        "third-party",
        Some(THIRD_PARTY_SECRET),
        message["code"].as_str().unwrap(),
        popup_verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = jwt_payload(body["id_token"].as_str().unwrap());
    assert_eq!(claims["email"], "ada@npm.example");
    // The npm connectors are not trusted to verify addresses (no trust_email), so
    // what npm claims is not passed on as verified.
    assert_eq!(claims["email_verified"], false);
    let sub = claims["sub"].as_str().unwrap().to_owned();

    // What the account page changed is in the store: two npm identities (EdDSA and
    // RS256 clients, one person at npm), GitHub unlinked, claims from userinfo.
    let store = app.state.store();
    let identities = store.list_identities(&sub).await.unwrap();
    let mut connectors: Vec<_> = identities.iter().map(|i| i.connector_id.as_str()).collect();
    connectors.sort_unstable();
    assert_eq!(connectors, ["npm-ed", "npm-rs"]);
    assert!(identities.iter().all(|i| i.subject == "ada"));
    assert!(
        identities
            .iter()
            .all(|i| i.groups == ["npm-admins", "npm-users"])
    );
    assert_eq!(
        store.get_user(&sub).await.unwrap().unwrap().name.as_deref(),
        Some("ada at npm")
    );
}

/// Every page in Chromium (tests/js/pages.mjs): none has an accessibility violation
/// (axe-core, light and dark), login and consent work with the keyboard alone, Deny
/// sends the application access_denied with its state, an emailed link signs in through
/// the email-sent and confirmation pages, and with JavaScript off login, consent, a
/// form_post response, device approval, the account page and sign-out still work.
/// The script serves the application itself (a real redirect URI, so nothing depends
/// on intercepting requests in the browser); what reached it is checked here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_accessible_keyboard_usable_and_works_without_javascript() {
    if !available(
        &["playwright-core", "axe-core", "smtp-server", "mailparser"],
        &["/usr/bin/chromium"],
    ) {
        return;
    }
    const PAGES_SECRET: &str = "pages-app-secret-0123456789abcdef";
    let script = Conversation::start(&["pages.mjs"]).await;
    let port = |name: &str| script.offered[name].as_u64().unwrap();
    let redirect = format!("http://127.0.0.1:{}/callback", port("app_port"));
    // An application that asks for consent, one that does not, both at the script's
    // redirect URI; an emailed-link connector that sends to the script's SMTP sink.
    let extra = format!(
        r#"
[[connectors]]
id = "email"
type = "email"
from = "keyward <sign-in@keyward.test>"
smtp = {{ host = "127.0.0.1", port = {smtp}, tls = "none" }}

[[clients]]
client_id = "pages-app"
name = "Pages App"
client_secret = "{PAGES_SECRET}"
redirect_uris = ["{redirect}"]
scopes = ["openid", "email"]

[[clients]]
client_id = "pages-first-party"
client_secret = "{PAGES_SECRET}"
redirect_uris = ["{redirect}"]
scopes = ["openid", "email"]
skip_consent = true
"#,
        smtp = port("smtp_port"),
    );
    let app = spawn_app(Db::Sqlite, &extra).await.unwrap();
    let authorize = |client: &str, extra: &str| {
        let (challenge, verifier) = openidconnect::PkceCodeChallenge::new_random_sha256();
        let url = format!(
            "{}/authorize?client_id={client}&response_type=code&scope=openid%20email&redirect_uri={}&state=st&code_challenge={}&code_challenge_method=S256{extra}",
            app.issuer,
            urlencode(&redirect),
            challenge.as_str()
        );
        (url, verifier)
    };
    let (keyboard, keyboard_verifier) = authorize("pages-app", "");
    let (deny, _) = authorize("pages-app", "&prompt=consent");
    let (nojs, nojs_verifier) = authorize("pages-app", "&prompt=consent");
    let (form_post, form_post_verifier) =
        authorize("pages-app", "&prompt=consent&response_mode=form_post");
    let (web_message, _) = authorize("pages-first-party", "&response_mode=web_message");
    let (by_email, email_verifier) = authorize("pages-first-party", "");
    let mut devices = Vec::new();
    for _ in 0..3 {
        let device: serde_json::Value = http()
            .post(format!("{}/device/code", app.issuer))
            .form(&[("client_id", "cli"), ("scope", "openid")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        devices.push(device);
    }
    let user_code = |i: usize| devices[i]["user_code"].as_str().unwrap().to_owned();
    let input = serde_json::json!({
        "issuer": app.issuer,
        "redirect_uri": redirect,
        "username": "alice",
        "password": PASSWORD,
        "email": "erin@example.com",
        "urls": {
            "keyboard": keyboard,
            "deny": deny,
            "web_message": web_message,
            "email": by_email,
            "nojs": nojs,
            "form_post": form_post,
        },
        "device": { "deny": user_code(0), "approve": user_code(1), "approve_nojs": user_code(2) },
    });
    let stdout = check(&script.finish(&input, BROWSER_SCRIPT).await);
    let result: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();

    assert_eq!(
        result["audited"],
        serde_json::json!([
            "login",
            "login-error",
            "consent",
            "device",
            "device-error",
            "device-consent",
            "device-denied",
            "device-connected",
            "account",
            "web-message",
            "error",
            "logout",
            "signed-out",
            "email-sent",
            "email-confirm",
            "form-post",
        ])
    );
    // Deny: access_denied with the application's state, from this issuer, no code.
    assert_eq!(
        result["denied"],
        serde_json::json!({
            "error": "access_denied",
            "error_description": "the user denied the request",
            "state": "st",
            "iss": app.issuer,
        })
    );
    // The codes the browser carried back (by query, and by form_post) are genuine, and
    // for the person who signed in.
    for (name, client, verifier, email) in [
        (
            "keyboard",
            "pages-app",
            &keyboard_verifier,
            "alice@example.com",
        ),
        ("nojs", "pages-app", &nojs_verifier, "alice@example.com"),
        (
            "form_post",
            "pages-app",
            &form_post_verifier,
            "alice@example.com",
        ),
        (
            "email",
            "pages-first-party",
            &email_verifier,
            "erin@example.com",
        ),
    ] {
        let response = &result[name];
        assert_eq!(response["state"], "st", "{name}: {response}");
        assert_eq!(response["iss"], app.issuer.as_str(), "{name}: {response}");
        let (status, body) = token_request(
            &app,
            client,
            Some(PAGES_SECRET),
            &[
                ("grant_type", "authorization_code"),
                ("code", response["code"].as_str().unwrap()),
                ("redirect_uri", &redirect),
                ("code_verifier", verifier.secret()),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        let claims = jwt_payload(body["id_token"].as_str().unwrap());
        assert_eq!(claims["email"], email, "{name}: {claims}");
    }
    // The devices: the one denied is refused, the two approved (with and without
    // JavaScript) get tokens.
    for (i, refused) in [(0, true), (1, false), (2, false)] {
        let (status, body) = token_request(
            &app,
            "cli",
            None,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", "cli"),
                ("device_code", devices[i]["device_code"].as_str().unwrap()),
            ],
        )
        .await;
        if refused {
            assert_eq!(
                (status, body["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("access_denied")),
                "device {i}: {body}"
            );
        } else {
            assert_eq!(status, StatusCode::OK, "device {i}: {body}");
        }
    }
}

/// The admin console walked in Chromium without JavaScript (tests/js/admin-console.mjs):
/// alice, an administrator by `admins`, adds a client, rotates its secret, ends one
/// of bob's sessions and disables him, makes a set-password link for carol, and reads
/// it all in the audit log; carol chooses a password through the link and is refused.
/// What the pages did is then checked from outside: both secrets work (the old one for
/// its grace period), bob's refresh token and sessions are dead, and the audit log
/// names alice and her address. Each console page passes axe-core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_in_chromium() {
    if !available(&["playwright-core", "axe-core"], &["/usr/bin/chromium"]) {
        return;
    }
    let extra = format!(
        "admins = [\"alice\"]\n[[users]]\nusername = \"carol\"\npassword = \"{PASSWORD}\"\n"
    );
    let app = spawn_app(Db::Sqlite, &extra).await.unwrap();
    // bob signs in from two browsers; the second sign-in's refresh token is his.
    demo_app_tokens(&app, "bob", "openid").await;
    let bob = demo_app_tokens(&app, "bob", "openid offline_access").await;
    let artifacts = screenshot_dir("admin-console");
    let args = [
        "admin-console.mjs",
        &app.issuer,
        "alice",
        "bob",
        "carol",
        PASSWORD,
        &artifacts.display().to_string(),
    ];
    let stdout = check(&node(&args, BROWSER_SCRIPT).await);
    let walked: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(walked["violations"], serde_json::json!([]), "{walked:#}");
    assert_screenshots(
        &artifacts,
        &[
            "console-1-sign-in",
            "console-2-overview",
            "console-3-add-client",
            "console-4-secret",
            "console-5-rotated",
            "console-6-session-ended",
            "console-7-disabled",
            "console-8-password-link",
            "console-9-audit",
            "console-10-choose-password",
            "console-11-forbidden",
        ],
    );

    // Both secrets of the new client work: the first for its hour of grace.
    for secret in ["firstSecret", "secondSecret"] {
        let (status, body) = token_request(
            &app,
            "console-app",
            walked[secret].as_str(),
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{secret}: {body}");
    }
    app.advance(3601);
    let (status, _) = token_request(
        &app,
        "console-app",
        walked["firstSecret"].as_str(),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // bob is disabled: his refresh token and his sessions are gone.
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", bob["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let store = app.state.store();
    let bob = store.get_user_by_username("bob").await.unwrap().unwrap();
    assert!(bob.disabled);
    assert!(
        store
            .list_user_sessions(&bob.id, app.state.now())
            .await
            .unwrap()
            .is_empty()
    );
    let log = store.list_audit(10, None).await.unwrap();
    let logged: Vec<_> = log
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.action.as_str(),
                e.target.split(" ").next().unwrap(),
                e.address.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        logged,
        [
            (
                "user:carol",
                "user.password-set",
                "carol",
                Some("127.0.0.1")
            ),
            (
                "user:alice",
                "user.password-link",
                "carol",
                Some("127.0.0.1")
            ),
            ("user:alice", "user.disable", "bob", Some("127.0.0.1")),
            ("user:alice", "session.end", "bob", Some("127.0.0.1")),
            (
                "user:alice",
                "client.rotate-secret",
                "console-app",
                Some("127.0.0.1")
            ),
            (
                "user:alice",
                "client.create",
                "console-app",
                Some("127.0.0.1")
            ),
        ]
    );
}
