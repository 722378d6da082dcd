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
    let mut child = tokio::process::Command::new("node")
        .args(args)
        .current_dir(js_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let stdout = Collected::from(child.stdout.take().unwrap());
    let stderr = Collected::from(child.stderr.take().unwrap());
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
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{args:?} printed nothing within 30 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("{args:?} ended before it listened"));
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
/// and a `web_message` popup (tests/js/broker.mjs). Both codes it brings back are
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
