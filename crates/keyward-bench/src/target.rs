//! The servers under test: keyward (a release build, on a fresh SQLite file or a fresh
//! PostgreSQL database) and the peer, oidc-provider from npm, both started as child
//! processes on loopback with the same client and user; their endpoints found by
//! discovery; their memory read from /proc; and a minimal browser that signs in
//! through either one's pages.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::header::{self, HeaderName};
use keyward_proto::pkce::CodeVerifier;
use keyward_proto::secret::random_urlsafe;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use url::Url;

use crate::load::Conn;

/// The client both servers know, with the redirect URI it registered.
pub const CLIENT_ID: &str = "bench";
/// Where authorization responses go (nothing listens there: the harness reads the
/// `Location` header).
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
/// The user both servers know.
pub const USERNAME: &str = "bench";

/// Which server a [`Server`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// keyward.
    Keyward,
    /// oidc-provider from npm.
    Peer,
}

/// The secrets both servers are configured with, fresh for each run (no `Debug`: they
/// are never printed).
#[derive(Clone)]
pub struct Credentials {
    /// The client secret.
    pub client_secret: String,
    /// The user's password.
    pub password: String,
    /// `Basic …` for the client.
    pub basic: String,
}

impl Credentials {
    /// New random secrets.
    pub fn generate() -> Self {
        let client_secret = random_urlsafe(32);
        let password = random_urlsafe(18);
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("{CLIENT_ID}:{client_secret}"))
        );
        Self {
            client_secret,
            password,
            basic,
        }
    }
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = CodeVerifier::generate();
    let challenge = verifier.challenge().as_str().to_owned();
    (verifier.secret().to_owned(), challenge)
}

/// Percent-encodes a form or query value.
pub fn enc(value: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
}

/// Endpoint paths, from discovery.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The authorization endpoint.
    pub authorize: String,
    /// The token endpoint.
    pub token: String,
    /// The introspection endpoint.
    pub introspect: String,
    /// The device authorization endpoint.
    pub device: String,
    /// The userinfo endpoint, when published.
    pub userinfo: Option<String>,
    /// The revocation endpoint (RFC 7009), when published.
    pub revocation: Option<String>,
    /// The end-session (RP-initiated logout) endpoint, when published.
    pub end_session: Option<String>,
}

/// What a client needs to know of a server under test.
#[derive(Clone)]
pub struct Site {
    /// Which one.
    pub kind: Kind,
    /// Its row label: "keyward", "keyward (PostgreSQL)", "oidc-provider 9.13.3".
    pub label: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its endpoints.
    pub endpoints: Endpoints,
    /// The shared secrets.
    pub credentials: Credentials,
}

/// A running server: its child process, and the [`Site`] it serves.
pub struct Server {
    /// How to reach it.
    pub site: Site,
    child: Child,
    pid: u32,
    dir: Option<PathBuf>,
    /// How keyward was started (none for the peer).
    launch: Option<Launch>,
}

/// How a keyward server was started, to start it again on the same port and database.
struct Launch {
    exe: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    /// The database it runs on.
    database_url: String,
    /// The file its log (stderr) goes to, when not to the terminal.
    log: Option<PathBuf>,
}

impl Launch {
    /// Starts `keyward serve` and waits for it to listen.
    async fn spawn(&self) -> anyhow::Result<Child> {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("open {}", path.display()))?,
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(&self.exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .env("KEYWARD_LOG", "warn")
            .env_remove("KEYWARD_ISSUER")
            .env_remove("KEYWARD_LISTEN")
            .env_remove("KEYWARD_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        wait_for_line(&mut child, "keyward serve", |l| l.contains("listening on ")).await?;
        Ok(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A free port on loopback (bound and released, for a child to bind right after).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Reads `child`'s stdout until `found` accepts a line, within 60 s; the rest of the
/// output is drained in the background.
async fn wait_for_line(
    child: &mut Child,
    what: &str,
    found: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if found(&line) {
                return Ok::<_, std::io::Error>(Some(line));
            }
        }
        Ok(None)
    })
    .await
    .with_context(|| format!("{what} did not start within a minute"))??
    .with_context(|| format!("{what} exited before it was ready"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(line)
}

impl Server {
    /// Starts `keyward serve` (the binary at `exe`) on `database_url`, or on a fresh
    /// SQLite file when `None`.
    pub async fn keyward(
        exe: &Path,
        database_url: Option<&str>,
        credentials: &Credentials,
    ) -> anyhow::Result<Self> {
        Self::start_keyward(exe, database_url, credentials, false, "").await
    }

    /// Like [`Server::keyward`], its log (warnings and errors) in
    /// [`Server::log_file`] instead of on the terminal.
    pub async fn keyward_logged(
        exe: &Path,
        database_url: Option<&str>,
        credentials: &Credentials,
    ) -> anyhow::Result<Self> {
        Self::start_keyward(exe, database_url, credentials, true, "").await
    }

    /// Like [`Server::keyward_logged`], with `extra` added to the generated
    /// configuration among its top-level keys (before the first table): lifetimes,
    /// intervals and the like, one `key = value` a line.
    pub async fn keyward_with(
        exe: &Path,
        database_url: Option<&str>,
        credentials: &Credentials,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::start_keyward(exe, database_url, credentials, true, extra).await
    }

    /// A replica: `keyward serve` with its log in [`Server::log_file`], on
    /// `database_url`, listening on a port of its own but with `issuer` (the balancer in
    /// front of every replica) in its tokens and links.
    pub async fn keyward_replica(
        exe: &Path,
        database_url: &str,
        credentials: &Credentials,
        issuer: &str,
    ) -> anyhow::Result<Self> {
        Self::start_keyward_at(exe, Some(database_url), credentials, true, Some(issuer), "").await
    }

    async fn start_keyward(
        exe: &Path,
        database_url: Option<&str>,
        credentials: &Credentials,
        logged: bool,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::start_keyward_at(exe, database_url, credentials, logged, None, extra).await
    }

    async fn start_keyward_at(
        exe: &Path,
        database_url: Option<&str>,
        credentials: &Credentials,
        logged: bool,
        issuer: Option<&str>,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("keyward-bench-{}", random_urlsafe(6)));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let port = free_port()?;
        let database_url = match database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.join("keyward.db").display()),
        };
        let issuer = issuer.map_or_else(|| format!("http://127.0.0.1:{port}"), str::to_owned);
        let config = format!(
            r#"issuer = "{issuer}"
listen = "127.0.0.1:{port}"
database_url = "{database_url}"
# The load generator is one address starting thousands of logins a minute.
unauthenticated_writes_per_minute = 4000000000
# The memory reading holds 10,000 idle keep-alive connections.
max_connections = 12000
{extra}

[[clients]]
client_id = "{CLIENT_ID}"
client_secret = "{secret}"
redirect_uris = ["{REDIRECT_URI}"]
grant_types = ["authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"]
scopes = ["openid", "profile", "email", "offline_access", "api:read"]
skip_consent = true

[[users]]
username = "{USERNAME}"
email = "bench@example.org"
password = "{password}"
"#,
            secret = credentials.client_secret,
            password = credentials.password,
        );
        let config_path = dir.join("keyward.toml");
        std::fs::write(&config_path, config).context("write keyward.toml")?;
        let launch = Launch {
            exe: exe.to_owned(),
            dir: dir.clone(),
            config: config_path,
            database_url: database_url.clone(),
            log: logged.then(|| dir.join("keyward.log")),
        };
        let child = launch.spawn().await?;
        let label = if database_url.starts_with("postgres") {
            "keyward (PostgreSQL)"
        } else {
            "keyward"
        };
        let mut server =
            Self::ready(Kind::Keyward, label, child, port, Some(dir), credentials).await?;
        server.launch = Some(launch);
        Ok(server)
    }

    /// Kills keyward with SIGKILL (`kill -9`: no shutdown, no flush) and waits for it to
    /// be gone.
    pub async fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("kill -9")?;
        self.child
            .wait()
            .await
            .context("wait for the killed server")?;
        Ok(())
    }

    /// Starts keyward again, on the same port, configuration and database, and waits
    /// for it to listen.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let launch = self.launch.as_ref().context("only keyward restarts")?;
        self.child = launch.spawn().await?;
        self.pid = self.child.id().context("child exited")?;
        Ok(())
    }

    /// Whether the process is still running (it has not exited since it was started).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The keyward binary it runs.
    pub fn exe(&self) -> Option<&Path> {
        self.launch.as_ref().map(|l| l.exe.as_path())
    }

    /// keyward's database.
    pub fn database_url(&self) -> Option<&str> {
        self.launch.as_ref().map(|l| l.database_url.as_str())
    }

    /// keyward's configuration file.
    pub fn config_file(&self) -> Option<&Path> {
        self.launch.as_ref().map(|l| l.config.as_path())
    }

    /// The file keyward's log goes to, when [`Server::keyward_logged`] started it.
    pub fn log_file(&self) -> Option<&Path> {
        self.launch.as_ref().and_then(|l| l.log.as_deref())
    }

    /// Starts the peer: `node peer.mjs` in `peer_dir` (its npm packages installed).
    pub async fn peer(peer_dir: &Path, credentials: &Credentials) -> anyhow::Result<Self> {
        let client = serde_json::json!({
            "client_id": CLIENT_ID,
            "client_secret": credentials.client_secret,
            "redirect_uri": REDIRECT_URI,
        });
        let mut child = Command::new("node")
            .arg("peer.mjs")
            .current_dir(peer_dir)
            .env("KEYWARD_BENCH_CLIENT", client.to_string())
            .env("NODE_ENV", "production")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start node (is Node.js installed?)")?;
        let line = wait_for_line(&mut child, "oidc-provider", |l| l.starts_with('{')).await?;
        let issuer: serde_json::Value = serde_json::from_str(&line).context("peer banner")?;
        let issuer = Url::parse(issuer["issuer"].as_str().context("peer issuer")?)?;
        let port = issuer.port().context("peer port")?;
        let version = peer_version(peer_dir).unwrap_or_else(|| "9".into());
        let label = format!("oidc-provider {version}");
        Self::ready(Kind::Peer, &label, child, port, None, credentials).await
    }

    async fn ready(
        kind: Kind,
        label: &str,
        child: Child,
        port: u16,
        dir: Option<PathBuf>,
        credentials: &Credentials,
    ) -> anyhow::Result<Self> {
        let pid = child.id().context("child exited")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut conn = Conn::new(addr);
        let reply = conn.get("/.well-known/openid-configuration", &[]).await?;
        if !reply.status.is_success() {
            bail!("{label}: discovery answered {}", reply.status);
        }
        let metadata = reply.json()?;
        let path = |key: &str| -> anyhow::Result<String> {
            let url = metadata[key]
                .as_str()
                .with_context(|| format!("{label} does not publish {key}"))?;
            Ok(Url::parse(url)?.path().to_owned())
        };
        let endpoints = Endpoints {
            authorize: path("authorization_endpoint")?,
            token: path("token_endpoint")?,
            introspect: path("introspection_endpoint")?,
            device: path("device_authorization_endpoint")?,
            userinfo: path("userinfo_endpoint").ok(),
            revocation: path("revocation_endpoint").ok(),
            end_session: path("end_session_endpoint").ok(),
        };
        Ok(Self {
            site: Site {
                kind,
                label: label.to_owned(),
                addr,
                endpoints,
                credentials: credentials.clone(),
            },
            child,
            pid,
            dir,
            launch: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The resident set size now, in bytes.
    pub fn rss(&self) -> Option<u64> {
        rss_of(self.pid)
    }

    /// The SQLite file of a keyward server on SQLite.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join("keyward.db"))
            .filter(|p| p.exists())
    }
}

impl Site {
    /// An authorization request URL path for `scope`, with a fresh PKCE pair; returns
    /// the path and the verifier. `prompt=consent` where the server needs it to grant
    /// `offline_access` (the peer follows OpenID Connect Core §11 to the letter).
    pub fn authorize_path(&self, scope: &str) -> (String, String) {
        let (verifier, challenge) = pkce();
        let mut path = format!(
            "{}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={challenge}&code_challenge_method=S256",
            self.endpoints.authorize,
            enc(REDIRECT_URI),
            enc(scope),
            random_urlsafe(12),
            random_urlsafe(12),
        );
        if self.kind == Kind::Peer && scope.split(' ').any(|s| s == "offline_access") {
            path.push_str("&prompt=consent");
        }
        (path, verifier)
    }

    /// The token request body redeeming `code`.
    pub fn code_form(code: &str, verifier: &str) -> String {
        format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
            enc(code),
            enc(REDIRECT_URI)
        )
    }

    /// The headers of an authenticated client request.
    pub fn client_auth(&self) -> [(HeaderName, &str); 1] {
        [(header::AUTHORIZATION, self.credentials.basic.as_str())]
    }
}

/// The RSS of process `pid`, from /proc (Linux).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU time (user and system, all threads) process `pid` has used so far, from
/// `/proc/<pid>/stat` (in clock ticks of 1/100 s, Linux's `USER_HZ`).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; fields count from there:
    // state is the 3rd field, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

fn peer_version(peer_dir: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(peer_dir.join("node_modules/oidc-provider/package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_owned)
}

/// A browser, as far as the benchmarks need one: cookies, redirects, and the login and
/// consent forms of keyward and of oidc-provider's development pages.
#[derive(Clone, Default)]
pub struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    /// The `Cookie` header value.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, reply: &crate::load::Reply) {
        for value in reply.headers.get_all(header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies
                        .insert(name.trim().to_owned(), value.to_owned());
                }
            }
        }
    }

    /// Opens the authorization request `path` and goes wherever it leads (signing in
    /// as the bench user and approving consent when `interactive`, failing on any page
    /// otherwise) until the server redirects to the client; returns the authorization
    /// code.
    pub async fn authorize(
        &mut self,
        conn: &mut Conn,
        site: &Site,
        path: &str,
        interactive: bool,
    ) -> anyhow::Result<String> {
        match self.walk(conn, site, path, interactive, false).await? {
            Walked::Code(code) => Ok(code),
            Walked::Page(reply) => bail!("authorization ended on a page ({})", reply.status),
        }
    }

    /// Opens `path` and goes wherever it leads, filling in every form as the bench
    /// user would (signing in, approving consent, confirming a sign-out) until a page
    /// without a form: that page. For the pages that end elsewhere than at the client:
    /// a device approved at its verification URI, a sign-out.
    pub async fn follow(
        &mut self,
        conn: &mut Conn,
        site: &Site,
        path: &str,
    ) -> anyhow::Result<crate::load::Reply> {
        match self.walk(conn, site, path, true, true).await? {
            Walked::Page(reply) => Ok(reply),
            Walked::Code(_) => bail!("{path} ended at the client with a code"),
        }
    }

    /// Follows redirects and forms from `path` until the server redirects to the
    /// client (its code), or, when `until_page`, shows a page without a form.
    async fn walk(
        &mut self,
        conn: &mut Conn,
        site: &Site,
        path: &str,
        interactive: bool,
        until_page: bool,
    ) -> anyhow::Result<Walked> {
        let base = Url::parse(&format!("http://{}", site.addr))?;
        let mut url = base.join(path)?;
        let mut form: Option<String> = None;
        for _ in 0..12 {
            let target = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            let cookie = self.cookie_header();
            let headers = [(header::COOKIE, cookie.as_str())];
            let reply = match form.take() {
                Some(body) => conn.post(&target, &headers, body).await?,
                None => conn.get(&target, &headers).await?,
            };
            self.remember(&reply);
            if reply.status.is_redirection() {
                let location = reply.location().context("redirect without Location")?;
                if location.starts_with(REDIRECT_URI) {
                    let back = Url::parse(location)?;
                    let pairs: BTreeMap<_, _> = back.query_pairs().into_owned().collect();
                    if let Some(error) = pairs.get("error") {
                        bail!("authorization refused: {error}");
                    }
                    return pairs
                        .get("code")
                        .cloned()
                        .map(Walked::Code)
                        .context("no code in the redirect");
                }
                url = url.join(location)?;
                continue;
            }
            if reply.status != hyper::StatusCode::OK {
                bail!("{}: unexpected answer {}", url.path(), reply.describe());
            }
            if !interactive {
                bail!("a page was shown where the session should have sufficed");
            }
            let html = reply.text();
            let Some((action, body)) = fill_form(&html, &site.credentials.password) else {
                if until_page {
                    return Ok(Walked::Page(reply));
                }
                bail!("a page without a form");
            };
            url = url.join(&action)?;
            form = Some(body);
        }
        bail!("{path} did not finish within 12 steps")
    }
}

/// Where [`Browser::walk`] ended.
enum Walked {
    /// Redirected to the client with this code.
    Code(String),
    /// On a page without a form.
    Page(crate::load::Reply),
}

/// The first form of `html`: its action and the body a person signing in as the bench
/// user (and approving consent) would submit.
fn fill_form(html: &str, password: &str) -> Option<(String, String)> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let action = attribute(&form[..form.find('>')?], "action")?;
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find("<input") {
        let tag_end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
        let tag = &rest[at..tag_end];
        if let Some(name) = attribute(tag, "name") {
            let value = match name.as_str() {
                "username" | "login" => USERNAME.to_owned(),
                "password" => password.to_owned(),
                _ => attribute(tag, "value").unwrap_or_default(),
            };
            fields.push(format!("{}={}", enc(&name), enc(&value)));
        }
        rest = &rest[tag_end..];
    }
    if let Some(decision) = decision(form) {
        fields.push(format!("decision={}", enc(&decision)));
    }
    Some((action, fields.join("&")))
}

/// The `decision` a person submits with `form`'s buttons: `approve` when offered (a
/// consent page), else the first button's (a sign-out's `logout`).
fn decision(form: &str) -> Option<String> {
    let mut values = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find("<button") {
        let tag_end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
        let tag = &rest[at..tag_end];
        if attribute(tag, "name").as_deref() == Some("decision")
            && let Some(value) = attribute(tag, "value")
        {
            values.push(value);
        }
        rest = &rest[tag_end..];
    }
    match values.iter().any(|v| v == "approve") {
        true => Some("approve".into()),
        false => values.into_iter().next(),
    }
}

/// The value of `name="…"` in a tag, with the entities templates escape decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let len = tag[at..].find('"')?;
    Some(
        tag[at..at + len]
            .replace("&#x2f;", "/")
            .replace("&#x3d;", "=")
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_both_servers_are_filled() {
        let keyward = r#"<form method="post" action="http://k/login">
  <input type="hidden" name="req" value="r&amp;1">
  <input type="text" id="username" name="username" value="" required>
  <input type="password" id="password" name="password" required>
  <button type="submit">Sign in</button></form>"#;
        let (action, body) = fill_form(keyward, "pw").unwrap();
        assert_eq!(action, "http://k/login");
        assert_eq!(body, "req=r%261&username=bench&password=pw");
        let peer = r#"<form autocomplete="off" action="/interaction/x/login" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" >
  <input required type="password" name="password" placeholder="and password" ></form>"#;
        let (action, body) = fill_form(peer, "pw").unwrap();
        assert_eq!(action, "/interaction/x/login");
        assert_eq!(body, "prompt=login&login=bench&password=pw");
    }

    #[test]
    fn decisions_approve_consent_and_confirm_sign_out() {
        let consent = r#"<form method="post" action="/consent">
  <input type="hidden" name="req" value="r">
  <button type="submit" name="decision" value="deny" class="secondary">Deny</button>
  <button type="submit" name="decision" value="approve">Allow</button></form>"#;
        let (_, body) = fill_form(consent, "pw").unwrap();
        assert_eq!(body, "req=r&decision=approve");
        let logout = r#"<form method="post" action="/logout">
  <input type="hidden" name="csrf" value="c">
  <button type="submit" name="decision" value="logout">Sign out</button></form>"#;
        let (_, body) = fill_form(logout, "pw").unwrap();
        assert_eq!(body, "csrf=c&decision=logout");
        assert_eq!(decision("<form><button>Go</button></form>"), None);
    }
}
