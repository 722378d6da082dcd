//! Test support: start a keyward in-process (`spawn_app`) or as a process, drive a
//! browser-like HTTP client through the login pages, and create fresh databases.

use std::collections::BTreeMap;

use keyward_server::config::Config;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use url::Url;

/// Where a test's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh database URL, or `None` when PostgreSQL is wanted but
/// `KEYWARD_TEST_DATABASE_URL` is unset (the caller reports the test skipped).
pub async fn database_url(db: Db, dir: &std::path::Path) -> Option<String> {
    match db {
        Db::Sqlite => Some(format!("sqlite://{}/keyward.db", dir.display())),
        Db::Postgres => {
            let Ok(admin_url) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
                assert!(
                    std::env::var_os("KEYWARD_REQUIRE_POSTGRES").is_none(),
                    "KEYWARD_REQUIRE_POSTGRES is set but KEYWARD_TEST_DATABASE_URL is not"
                );
                eprintln!("SKIPPED: KEYWARD_TEST_DATABASE_URL is not set; PostgreSQL part not run");
                return None;
            };
            let name = format!("keyward_e2e_{}", random_name());
            let admin = sqlx::PgPool::connect(&admin_url)
                .await
                .expect("connect to KEYWARD_TEST_DATABASE_URL");
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("create database");
            admin.close().await;
            let mut url = Url::parse(&admin_url).expect("database url");
            url.set_path(&name);
            Some(url.to_string())
        }
    }
}

pub fn random_name() -> String {
    keyward_proto::secret::random_urlsafe(9)
        .to_lowercase()
        .replace(['-', '_'], "x")
}

pub fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keyward-e2e-{}", random_name()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub const SECRET: &str = "demo-app-secret-0123456789abcdef";
pub const THIRD_PARTY_SECRET: &str = "third-party-secret-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery staple";
pub const REDIRECT: &str = "http://127.0.0.1:5555/callback";

/// The configuration every test starts from: two clients and two users.
pub fn base_config(extra: &str) -> String {
    format!(
        r#"
{extra}

[[clients]]
client_id = "demo-app"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
post_logout_redirect_uris = ["http://127.0.0.1:5555/bye"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
scopes = ["openid", "profile", "email", "offline_access", "api:read"]
skip_consent = true
introspect = true

[[clients]]
client_id = "third-party"
name = "Third Party App"
client_secret = "{THIRD_PARTY_SECRET}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "email"]
id_token_signed_response_alg = "RS256"

[[clients]]
client_id = "cli"
name = "keyward CLI"
redirect_uris = ["http://127.0.0.1:5555/callback"]
grant_types = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]
scopes = ["openid", "profile", "offline_access"]
skip_consent = true

[[users]]
username = "alice"
email = "alice@example.com"
name = "Alice Liddell"
password = "{PASSWORD}"

[[users]]
username = "bob"
email = "bob@example.com"
password = "{PASSWORD}"
"#
    )
}

/// A keyward server running in this process.
pub struct TestApp {
    pub issuer: String,
    pub state: keyward_server::state::AppState,
    /// The server's clock: tests move it forward instead of sleeping.
    pub clock: std::sync::Arc<keyward_server::clock::ShiftedClock>,
    pub dir: std::path::PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    /// Moves the server's clock `seconds` forward (past an expiry, an interval).
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(seconds);
    }

    /// Stops the server's clock: it moves only with [`TestApp::advance`] from now on
    /// (for checks that two requests fall within one interval).
    pub fn freeze_clock(&self) {
        self.clock.freeze();
    }

    /// Stops serving (its database stays, for another server to open).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts keyward on 127.0.0.1:0 with `base_config(extra)`, or `None` when the
/// database is unavailable (PostgreSQL without `KEYWARD_TEST_DATABASE_URL`).
pub async fn spawn_app(db: Db, extra: &str) -> Option<TestApp> {
    spawn_app_on(bind().await, "127.0.0.1", db, &base_config(extra)).await
}

/// A listener on 127.0.0.1 port 0, for a server whose address must be known before it
/// starts (to register it at another one).
pub async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
}

/// Starts keyward on `listener` with the configuration `config_text`, its issuer named
/// `http://<host>:<port>`. Two servers in one test take different host names
/// (`127.0.0.1`, `localhost`), as two sites would, so that a browser keeps their
/// cookies apart (cookies ignore ports).
pub async fn spawn_app_on(
    listener: tokio::net::TcpListener,
    host: &str,
    db: Db,
    config_text: &str,
) -> Option<TestApp> {
    let dir = temp_dir();
    let database_url = database_url(db, &dir).await?;
    Some(start_app(listener, host, dir, database_url, config_text).await)
}

/// Starts keyward on 127.0.0.1:0 on an existing database (another server's, as after
/// a restart).
pub async fn spawn_on_database(database_url: &str, config_text: &str) -> TestApp {
    start_app(
        bind().await,
        "127.0.0.1",
        temp_dir(),
        database_url.to_owned(),
        config_text,
    )
    .await
}

async fn start_app(
    listener: tokio::net::TcpListener,
    host: &str,
    dir: std::path::PathBuf,
    database_url: String,
    config_text: &str,
) -> TestApp {
    start_app_as(listener, "http", host, "", dir, database_url, config_text).await
}

/// Starts keyward on 127.0.0.1:0 with `base_config(extra)`, its issuer named
/// `https://127.0.0.1:<port>` (as behind a TLS proxy) while the test talks plain http
/// to it: to check what keyward does under https (cookies, HSTS).
pub async fn spawn_https_app(extra: &str) -> TestApp {
    let dir = temp_dir();
    let database_url = database_url(Db::Sqlite, &dir).await.expect("sqlite");
    start_app_as(
        bind().await,
        "https",
        "127.0.0.1",
        "",
        dir,
        database_url,
        &base_config(extra),
    )
    .await
}

/// Starts keyward on 127.0.0.1:0 with `base_config(extra)` on SQLite, its issuer
/// `http://127.0.0.1:<port><path>`, so that every endpoint is served under `path`.
pub async fn spawn_app_under(path: &str, extra: &str) -> TestApp {
    let dir = temp_dir();
    let database_url = database_url(Db::Sqlite, &dir).await.expect("sqlite");
    start_app_as(
        bind().await,
        "http",
        "127.0.0.1",
        path,
        dir,
        database_url,
        &base_config(extra),
    )
    .await
}

/// Starts keyward on `listener`, its issuer `<scheme>://<host>:<port><path>`; the
/// test talks plain http to it, at `TestApp::issuer` (which includes `path`).
async fn start_app_as(
    listener: tokio::net::TcpListener,
    scheme: &str,
    host: &str,
    path: &str,
    dir: std::path::PathBuf,
    database_url: String,
    config_text: &str,
) -> TestApp {
    let addr = listener.local_addr().expect("addr");
    let issuer = format!("http://{host}:{}{path}", addr.port());
    let env: BTreeMap<String, String> = [
        (
            "KEYWARD_ISSUER".to_owned(),
            format!("{scheme}://{host}:{}{path}", addr.port()),
        ),
        ("KEYWARD_LISTEN".to_owned(), addr.to_string()),
        ("KEYWARD_DATABASE_URL".to_owned(), database_url),
    ]
    .into();
    let config = Config::from_toml(config_text, &env).expect("config");
    let clock = std::sync::Arc::new(keyward_server::clock::ShiftedClock::default());
    let state = keyward_server::serve::build_with_clock(config, clock.clone())
        .await
        .expect("build");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(keyward_server::serve::run(
        state.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    TestApp {
        issuer,
        state,
        clock,
        dir,
        shutdown: Some(tx),
    }
}

/// A browser: keeps cookies, does not follow redirects (the test follows them).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// A plain HTTP client for the back channel.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// The value of a hidden input in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in page: {html}"))
        + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// Follows one redirect, returning the Location resolved against `base`.
pub fn location(response: &reqwest::Response) -> Url {
    assert!(
        response.status().is_redirection(),
        "expected a redirect, got {}",
        response.status()
    );
    let value = response.headers()["location"].to_str().expect("location");
    response.url().join(value).expect("location url")
}

/// The outcome of driving the browser from an authorization URL.
pub enum Outcome {
    /// Redirected back to the client with these query parameters.
    Callback(BTreeMap<String, String>),
    /// Stopped at a page: status and HTML.
    Page(StatusCode, String),
}

impl Outcome {
    /// The page the browser stopped at; panics on a callback.
    pub fn page(self) -> (StatusCode, String) {
        match self {
            Outcome::Page(status, html) => (status, html),
            Outcome::Callback(params) => panic!("expected a page, got a callback: {params:?}"),
        }
    }

    pub fn callback(self) -> BTreeMap<String, String> {
        match self {
            Outcome::Callback(params) => params,
            Outcome::Page(status, html) => panic!("expected a callback, got page {status}: {html}"),
        }
    }
}

/// Opens `url` in `browser`, signs in as `user` when the login page appears, answers
/// the consent page with `decision` (when it appears), and returns where it ends.
pub async fn drive(
    browser: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    decision: &str,
) -> Outcome {
    let response = browser.get(url).send().await.expect("authorize");
    drive_from(browser, response, user, password, decision).await
}

/// Like [`drive`], from a response already received.
pub async fn drive_from(
    browser: &reqwest::Client,
    mut response: reqwest::Response,
    user: &str,
    password: &str,
    decision: &str,
) -> Outcome {
    loop {
        if response.status().is_redirection() {
            let next = location(&response);
            // The clients' redirects (REDIRECT, or `keyward login`'s listener on any
            // loopback port) and post-logout page; keyward serves neither path.
            if next.path() == "/callback" || next.path() == "/bye" {
                return Outcome::Callback(next.query_pairs().into_owned().collect());
            }
            response = browser.get(next).send().await.expect("follow");
            continue;
        }
        let status = response.status();
        let page_url = response.url().clone();
        let html = response.text().await.expect("page");
        if status == StatusCode::OK && html.contains("name=\"password\"") {
            let form = [
                ("req", hidden(&html, "req")),
                ("csrf", hidden(&html, "csrf")),
                ("username", user.to_owned()),
                ("password", password.to_owned()),
            ];
            response = browser
                .post(page_url.join("login").expect("url"))
                .form(&form)
                .send()
                .await
                .expect("login");
            continue;
        }
        if status == StatusCode::OK && html.contains("name=\"decision\"") {
            let form = [
                ("req", hidden(&html, "req")),
                ("csrf", hidden(&html, "csrf")),
                ("decision", decision.to_owned()),
            ];
            response = browser
                .post(page_url.join("consent").expect("url"))
                .form(&form)
                .send()
                .await
                .expect("consent");
            continue;
        }
        return Outcome::Page(status, html);
    }
}

/// `user` signs in to demo-app (code flow with PKCE, asking for `scope`): the token
/// response.
pub async fn demo_app_tokens(app: &TestApp, user: &str, scope: &str) -> serde_json::Value {
    let (authorize, verifier) = authorize_url(&app.issuer, "demo-app", scope, "");
    let code = drive(&browser(), &authorize, user, PASSWORD, "approve")
        .await
        .callback()["code"]
        .clone();
    let (status, tokens) =
        redeem_code(app, "demo-app", Some(SECRET), &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

/// A token endpoint request with Basic client authentication.
pub async fn token_request(
    app: &TestApp,
    client_id: &str,
    secret: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut request = http().post(format!("{}/token", app.issuer)).form(form);
    if let Some(secret) = secret {
        request = request.basic_auth(client_id, Some(secret));
    }
    let response = request.send().await.expect("token request");
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Redeems an authorization code sent to [`REDIRECT`] (Basic client authentication when
/// `secret` is given).
pub async fn redeem_code(
    app: &TestApp,
    client_id: &str,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> (StatusCode, serde_json::Value) {
    token_request(
        app,
        client_id,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Introspects `token` as demo-app (registered as a resource server, so it may ask
/// about anyone's tokens); returns `active`.
pub async fn is_active(app: &TestApp, token: &str) -> bool {
    let response = http()
        .post(format!("{}/introspect", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    body["active"].as_bool().expect("active")
}

/// An authorization URL at `base` with a fresh PKCE pair, `state=st`, and `extra`
/// appended (already encoded, starting with `&`).
pub fn authorize_url(
    base: &str,
    client_id: &str,
    scope: &str,
    extra: &str,
) -> (String, openidconnect::PkceCodeVerifier) {
    let (challenge, verifier) = openidconnect::PkceCodeChallenge::new_random_sha256();
    let url = format!(
        "{base}/authorize?client_id={client_id}&response_type=code&scope={}&redirect_uri={}&state=st&code_challenge={}&code_challenge_method=S256{extra}",
        urlencode(scope),
        urlencode(REDIRECT),
        challenge.as_str()
    );
    (url, verifier)
}

/// Form-urlencodes a value.
pub fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(url: &str) -> serde_json::Value {
    http()
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// Opens a device login's `verification_uri_complete` in `browser` (the code is filled
/// in), confirms it, signs in as `user` and answers the consent page with `decision`.
pub async fn approve_device(
    browser: &reqwest::Client,
    complete: &str,
    user: &str,
    decision: &str,
) -> Outcome {
    let page = browser.get(complete).send().await.expect("device page");
    let page_url = page.url().clone();
    let html = page.text().await.expect("device page");
    let form = [
        ("csrf", hidden(&html, "csrf")),
        ("user_code", hidden(&html, "user_code")),
    ];
    let response = browser
        .post(page_url.as_str().split('?').next().expect("url"))
        .form(&form)
        .send()
        .await
        .expect("confirm code");
    drive_from(browser, response, user, PASSWORD, decision).await
}

/// The bash code blocks of the README between `<!-- NAME:start -->` and
/// `<!-- NAME:end -->`, joined.
pub fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme
        .find(&format!("<!-- {name}:start -->"))
        .expect("start marker");
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .expect("end marker");
    readme[start..end]
        .split("```bash")
        .skip(1)
        .filter_map(|part| part.split("```").next())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A port for a README script's server, which must be named before the server starts
/// (the script says `127.0.0.1:8080`). Binding port 0 and letting go would leave a
/// window in which another test's port-0 bind takes the same number; so the port comes
/// from below the kernel's ephemeral range (32768–60999 by default), which port-0 binds
/// never use, and is checked free.
fn readme_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    (0..2_000)
        .map(|_| start + NEXT.fetch_add(1, Ordering::Relaxed) % 2_000)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port between 20000 and 32000")
}

/// A bash command running the README block `name` as written, but on a free port
/// instead of 8080 ([`readme_port`]), in a fresh directory (also returned), with this
/// build's `keyward` first on the PATH.
pub fn readme_script(name: &str) -> (std::process::Command, u16, std::path::PathBuf) {
    let port = readme_port();
    let script = readme_block(name).replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let dir = temp_dir();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_keyward"))
        .parent()
        .expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let full =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");
    let mut bash = std::process::Command::new("bash");
    bash.arg("-c")
        .arg(full)
        .current_dir(&dir)
        .env("PATH", path)
        .env("KEYWARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYWARD_LOG", "warn");
    (bash, port, dir)
}

/// `keyward <args>` with `home` as KEYWARD_HOME, no browser to open, output piped.
pub fn keyward_cli(home: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .args(args)
        .env("KEYWARD_HOME", home)
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_SERVER")
        .env_remove("KEYWARD_CLIENT_ID")
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    command
}

/// Bytes as text, for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `keyward login` (or a script running one) whose stderr is read line by
/// line, to catch the URL it prints for the person.
pub struct Watched {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    stderr: String,
}

impl Watched {
    /// Starts `command` with stdout and stderr piped, in a process group of its own
    /// (so that dropping it ends what it started too, such as a README script's
    /// background server).
    pub fn spawn(mut command: tokio::process::Command) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = command
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        Self {
            child,
            lines: tokio::io::BufReader::new(stderr).lines(),
            stderr: String::new(),
        }
    }

    /// Reads stderr until a line with the device page of `issuer` appears, within a
    /// minute; returns that URL.
    pub async fn device_url(&mut self, issuer: &str) -> String {
        let prefix = format!("{issuer}/device?user_code=");
        let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = self.lines.next_line().await.expect("stderr") {
                self.stderr.push_str(&line);
                self.stderr.push('\n');
                if line.trim().starts_with(&prefix) {
                    return Some(line.trim().to_owned());
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(url)) => url,
            _ => panic!("no {prefix}… printed:\n{}", self.stderr),
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid}");
    }

    /// Waits (at most a minute) for the end: exit status, stdout, all of stderr.
    pub async fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        use tokio::io::AsyncReadExt as _;
        let mut stdout = self.child.stdout.take().expect("stdout");
        let mut out = String::new();
        let mut stderr = std::mem::take(&mut self.stderr);
        let lines = &mut self.lines;
        let child = &mut self.child;
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            let rest = async {
                while let Some(line) = lines.next_line().await.expect("stderr") {
                    stderr.push_str(&line);
                    stderr.push('\n');
                }
            };
            let (_, read) = tokio::join!(rest, stdout.read_to_string(&mut out));
            read.expect("stdout");
            child.wait().await.expect("wait")
        })
        .await
        .expect("finished within a minute");
        (status, out, stderr)
    }
}

impl Drop for Watched {
    /// A test that failed half-way leaves nothing running: the whole group is killed.
    fn drop(&mut self) {
        if let (Some(pid), Ok(None)) = (self.child.id(), self.child.try_wait()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// The claims of a JWT (its signature is the issuer's business; tests that care verify
/// it with a client library).
pub fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A page the browser stopped at: where, with what status and HTML.
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub html: String,
}

/// Follows redirects from `response` in `browser`, across servers, until a page; or,
/// when the client's redirect URI is reached, returns its query in `Err`.
pub async fn settle(
    browser: &reqwest::Client,
    mut response: reqwest::Response,
) -> Result<Page, BTreeMap<String, String>> {
    loop {
        if response.status().is_redirection() {
            let next = location(&response);
            if next.as_str().starts_with(REDIRECT) {
                return Err(next.query_pairs().into_owned().collect());
            }
            response = browser.get(next).send().await.expect("follow");
            continue;
        }
        let url = response.url().clone();
        let status = response.status();
        let html = response.text().await.expect("page");
        return Ok(Page { url, status, html });
    }
}

/// Opens `url` in `browser` and follows redirects to a page.
pub async fn open(browser: &reqwest::Client, url: &str) -> Page {
    let response = browser.get(url).send().await.expect("GET");
    match settle(browser, response).await {
        Ok(page) => page,
        Err(params) => panic!("expected a page at {url}, came back to the client: {params:?}"),
    }
}

/// Submits the first form on `page` whose action is `action` and whose HTML contains
/// `marker` (use "" for any), with its hidden inputs and `fields`; returns the answer.
pub async fn submit(
    browser: &reqwest::Client,
    page: &Page,
    action: &str,
    marker: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let opening = format!("action=\"{action}\"");
    // An action built from escaped values spells its slashes `&#x2f;`.
    let html = page.html.replace("&#x2f;", "/");
    let form = html
        .match_indices(&opening)
        .map(|(at, _)| {
            let rest = &html[at..];
            &rest[..rest.find("</form>").expect("form end")]
        })
        .find(|form| form.contains(marker))
        .unwrap_or_else(|| {
            panic!(
                "no form for {action} with {marker:?} on {}: {}",
                page.url, page.html
            )
        });
    let mut values: Vec<(String, String)> = Vec::new();
    let mut rest = form;
    let input = "type=\"hidden\" name=\"";
    while let Some(at) = rest.find(input) {
        rest = &rest[at + input.len()..];
        let name = &rest[..rest.find('"').expect("name end")];
        let marker = "value=\"";
        let v_start = rest.find(marker).expect("value") + marker.len();
        let v_end = rest[v_start..].find('"').expect("value end") + v_start;
        values.push((name.to_owned(), html_unescape(&rest[v_start..v_end])));
        rest = &rest[v_end..];
    }
    for (name, value) in fields {
        values.push(((*name).to_owned(), (*value).to_owned()));
    }
    browser
        .post(page.url.join(action).expect("action URL"))
        .form(&values)
        .send()
        .await
        .expect("submit")
}

/// Undoes the HTML escaping of an attribute value.
pub fn html_unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of one series in `app`'s `/metrics` (its own counters: every server has
/// its own), written as Prometheus prints it, e.g.
/// `keyward_login_failures_total{reason="throttled"}`; 0 when it is absent.
pub async fn metric(app: &TestApp, series: &str) -> u64 {
    let response = http()
        .get(format!("{}/metrics", app.issuer))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK, "/metrics");
    let text = response.text().await.expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().expect("a counter value"))
}
