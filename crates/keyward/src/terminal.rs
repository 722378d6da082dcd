//! `keyward login | token | logout | status`: the terminal side of keyward, over the
//! client library. Everything meant for people goes to stderr; stdout carries only what
//! scripts read (the token, the status table).

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use keyward_client::exchange::{Target, exchanged_token};
use keyward_client::login::{PendingLogin, server_name, unix_now};
use keyward_client::loopback::BrowserLogin;
use keyward_client::tokenfile::{self, TokenFile, TokenStore};
use keyward_client::{ClientError, Flow, LoginMethod, Options, State, http};
use url::Url;

/// Exit status of `keyward token` when a login is needed.
pub const EXIT_LOGIN_REQUIRED: u8 = 3;

/// Where token files live and how long requests may take.
#[derive(Args)]
pub struct ClientArgs {
    /// Where token files are kept [default: keyward/ under the user's config directory]
    #[arg(long, env = "KEYWARD_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Give up on a request to the server after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub(crate) timeout: u64,
}

/// The server to talk to.
#[derive(Args)]
pub struct ServerArg {
    /// The server (its issuer URL). Default: KEYWARD_SERVER, else the one server logged in to.
    #[arg(env = "KEYWARD_SERVER")]
    server: Option<String>,
}

/// `keyward login`.
#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    client: ClientArgs,
    /// Log in again even when the current token is valid.
    #[arg(long)]
    force: bool,
    /// Log in with a code to confirm on a page (RFC 8628), in a browser on any device.
    /// The default when no browser can be opened here: over SSH (SSH_CONNECTION set),
    /// or with neither BROWSER nor a desktop.
    #[arg(long)]
    device: bool,
    /// Open no browser: log in with a code (as --device) and only print the page and
    /// the code.
    #[arg(long)]
    no_browser: bool,
    /// The OAuth client to log in as: a public client allowed the device grant and, for
    /// the browser, the code flow with a redirect to http://127.0.0.1/callback.
    #[arg(long, env = "KEYWARD_CLIENT_ID", default_value = keyward_client::login::DEFAULT_CLIENT_ID)]
    client_id: String,
    /// The scope to ask for.
    #[arg(long, default_value = keyward_client::login::DEFAULT_SCOPE)]
    scope: String,
}

/// `keyward token`.
#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    client: ClientArgs,
    /// Refresh first when the token has less than this many seconds left.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    margin: u64,
    /// Print a short-lived token for this service instead of the login's, exchanged
    /// from the login (RFC 8693) and cached per audience and scopes until less than
    /// the margin is left.
    #[arg(long, value_name = "AUDIENCE")]
    audience: Option<String>,
    /// A scope to ask for in the exchanged token (repeatable; needs --audience).
    #[arg(long = "scope", value_name = "SCOPE", requires = "audience")]
    scopes: Vec<String>,
}

/// `keyward logout`.
#[derive(Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    client: ClientArgs,
}

/// `keyward status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
}

impl ClientArgs {
    pub(crate) fn home(&self) -> anyhow::Result<PathBuf> {
        match &self.home {
            Some(home) => Ok(home.clone()),
            None => tokenfile::default_home()
                .context("no home directory is known: set KEYWARD_HOME or pass --home"),
        }
    }

    pub(crate) fn http(&self) -> anyhow::Result<reqwest::Client> {
        Ok(http::http_client(Duration::from_secs(self.timeout.max(1)))?)
    }
}

impl ServerArg {
    /// The server named, or the only one logged in to.
    pub(crate) fn resolve(&self, home: &Path) -> anyhow::Result<Url> {
        if let Some(server) = &self.server {
            return parse_server(server);
        }
        let known: Vec<String> = tokenfile::list_servers(home)?
            .into_iter()
            .filter_map(|(_, token)| token.and_then(|t| t.server))
            .collect();
        match known.as_slice() {
            [] => bail!(
                "name the server, e.g. `keyward login https://id.example.com` (or set KEYWARD_SERVER)"
            ),
            [one] => parse_server(one),
            many => bail!(
                "logged in to several servers ({}): name one, or set KEYWARD_SERVER",
                many.join(", ")
            ),
        }
    }
}

/// A server URL; `id.example.com` means `https://id.example.com`.
fn parse_server(text: &str) -> anyhow::Result<Url> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let url = Url::parse(&with_scheme).with_context(|| format!("{text:?} is not a server URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        bail!("{text:?}: a server URL has no query or fragment");
    }
    http::check_secure(&url)?;
    Ok(url)
}

/// How `keyward login` logs a person in: through a browser on this machine unless told
/// otherwise (`--device`, `--no-browser`), logged in over SSH (where a browser would
/// open on another screen, if at all), or without a browser to open.
fn login_method(device_asked: bool, over_ssh: bool, browser: Option<&str>) -> LoginMethod {
    if device_asked || over_ssh || browser.is_none() {
        LoginMethod::Device
    } else {
        LoginMethod::Browser
    }
}

/// Whether this process runs in an SSH session.
fn over_ssh() -> bool {
    std::env::var_os("SSH_CONNECTION").is_some_and(|v| !v.is_empty())
}

/// `keyward login [SERVER]`.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let home = args.client.home()?;
    let server = args.server.resolve(&home)?;
    let browser = browser_command();
    let options = Options {
        client_id: args.client_id.clone(),
        scope: args.scope.clone(),
        login: true,
        method: login_method(
            args.device || args.no_browser,
            over_ssh(),
            browser.as_deref(),
        ),
        ..Options::default()
    };
    let mut flow = Flow::new(&home, server.clone(), args.client.http()?, options)?;
    let start = if args.force {
        State::NoAuthentication
    } else {
        State::NeedAuthentication
    };
    let mut waiting: Option<Spinner> = None;
    let open_browser = !args.no_browser;
    let run = async {
        let mut state = start;
        loop {
            state = flow.step(state).await;
            match state {
                State::Success(token) => return Ok(token),
                State::Failure(error) => return Err(error),
                State::AwaitRedirect(ref login) if waiting.is_none() => {
                    if open_login_page(&server, login, browser.as_deref()) {
                        waiting = Some(Spinner::start(
                            login.deadline(),
                            "Waiting for the login in the browser",
                        ));
                    } else {
                        eprintln!("Could not start a browser; logging in with a code instead.");
                        state = flow.fall_back_to_device(state);
                    }
                }
                State::ClaimToken(ref pending) if waiting.is_none() => {
                    show_instructions(&server, pending, open_browser);
                    waiting = Some(Spinner::start(
                        pending.poll.deadline,
                        "Waiting for the login to be approved",
                    ));
                }
                _ => {}
            }
        }
    };
    let result = tokio::select! {
        result = run => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    let logged_in_now = waiting.is_some();
    drop(waiting);
    warn(&mut flow);
    let token = result.ok_or(Cancelled)??;
    let who = who(&token);
    let name = server_name(&server);
    if logged_in_now {
        eprintln!("Logged in to {name}{who}.");
    } else {
        eprintln!(
            "Already logged in to {name}{who}; the token is valid for {}. Use --force to log in again.",
            duration(token.expires_at - unix_now())
        );
    }
    eprintln!("Tokens are in {}", flow.store().path().display());
    Ok(())
}

/// `keyward token [SERVER]`: the token on stdout, nothing else.
pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let home = args.client.home()?;
    let server = args.server.resolve(&home)?;
    let options = Options {
        margin: Duration::from_secs(args.margin),
        login: false,
        ..Options::default()
    };
    let mut flow = Flow::new(&home, server, args.client.http()?, options)?;
    let result = match &args.audience {
        Some(audience) => {
            let target = Target::new(audience.clone(), args.scopes.iter().cloned());
            exchanged_token(&mut flow, &home, &target, Duration::from_secs(args.margin)).await
        }
        None => flow.run(State::NeedAuthentication, |_| {}).await,
    };
    warn(&mut flow);
    let token = result?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", token.access_token).context("cannot write to stdout")?;
    Ok(())
}

/// `keyward logout [SERVER]`: revoke at the server, then remove the file — the file
/// goes even when the server cannot be reached, and the command then says so and fails.
pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let home = args.client.home()?;
    let server = args.server.resolve(&home)?;
    let name = server_name(&server);
    let store = TokenStore::for_server(&home, &server)?;
    let lock_store = store.clone();
    let _lock = tokio::task::spawn_blocking(move || {
        lock_store.lock(keyward_client::login::DEFAULT_LOCK_TIMEOUT)
    })
    .await
    .context("cannot lock the token file")??;
    let Some(token) = store.load()? else {
        store.remove()?;
        eprintln!("Not logged in to {name}.");
        return Ok(());
    };
    let revoked = revoke(&args.client.http()?, &server, &token).await;
    store.remove()?;
    match revoked {
        Ok(()) => {
            eprintln!("Logged out of {name}{}.", who(&token));
            Ok(())
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "removed the token file, but {name} did not confirm the token is revoked"
        ))),
    }
}

/// Revokes the refresh token (which ends the whole grant at keyward), or the access
/// token when there is none.
async fn revoke(
    http: &reqwest::Client,
    server: &Url,
    token: &TokenFile,
) -> Result<(), ClientError> {
    let endpoints = http::discover(http, server).await?;
    let Some(endpoint) = endpoints.revocation_endpoint else {
        return Err(ClientError::Discovery {
            server: server_name(server),
            reason: "it offers no revocation endpoint (RFC 7009)".into(),
        });
    };
    let client_id = token
        .client_id
        .as_deref()
        .unwrap_or(keyward_client::login::DEFAULT_CLIENT_ID);
    match &token.refresh_token {
        Some(refresh) => http::revoke(http, &endpoint, client_id, refresh, "refresh_token").await,
        None => {
            http::revoke(
                http,
                &endpoint,
                client_id,
                &token.access_token,
                "access_token",
            )
            .await
        }
    }
}

/// `keyward status`: servers, users, expiry; never a token.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let home = args.client.home()?;
    let servers = tokenfile::list_servers(&home)?;
    if servers.is_empty() {
        eprintln!(
            "Not logged in to any server (tokens are kept in {}).",
            home.display()
        );
        return Ok(());
    }
    let now = unix_now();
    let mut rows = vec![[
        "SERVER".to_owned(),
        "USER".to_owned(),
        "ACCESS TOKEN".to_owned(),
        "REFRESH TOKEN".to_owned(),
    ]];
    for (store, token) in servers {
        let dir = store
            .path()
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        rows.push(match token {
            Some(token) => [
                token.server.clone().unwrap_or(dir),
                who(&token).trim_start_matches(" as ").to_owned(),
                if token.expires_at > now {
                    format!("expires in {}", duration(token.expires_at - now))
                } else {
                    format!("expired {} ago", duration(now - token.expires_at))
                },
                if token.refresh_token.is_some() {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
            ],
            None => [dir, "-".into(), "unreadable file".into(), "-".into()],
        });
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
        .context("cannot write to stdout")?;
    }
    Ok(())
}

/// ` as alice <alice@example.com>`, or nothing when the token names no one.
fn who(token: &TokenFile) -> String {
    match (&token.user_name, &token.user_email) {
        (Some(name), Some(email)) => format!(" as {name} <{email}>"),
        (Some(name), None) => format!(" as {name}"),
        (None, Some(email)) => format!(" as {email}"),
        (None, None) => String::new(),
    }
}

/// `14m 2s`, `3h 5m`, `2d 4h`.
fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn warn(flow: &mut Flow) {
    for warning in flow.take_warnings() {
        eprintln!("warning: {warning}");
    }
}

/// The exit status for an error: [`EXIT_LOGIN_REQUIRED`] when a login is needed, 130
/// (as shells report SIGINT) when the user cancelled.
pub fn exit_status(error: &anyhow::Error) -> Option<u8> {
    if error.is::<Cancelled>() {
        return Some(130);
    }
    match error.downcast_ref::<ClientError>() {
        Some(ClientError::LoginRequired { .. }) => Some(EXIT_LOGIN_REQUIRED),
        _ => None,
    }
}

/// The user pressed Ctrl-C while a login was waiting.
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("login cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// A hint printed under an error.
pub fn hint(error: &anyhow::Error) -> Option<String> {
    match error.downcast_ref::<ClientError>() {
        Some(ClientError::LoginRequired { server }) => {
            Some(format!("run `keyward login {server}` first"))
        }
        _ => None,
    }
}

/// Tells the user where to go, with a QR code of the page when stderr is a terminal,
/// and opens the browser when asked and there is one.
fn show_instructions(server: &Url, pending: &PendingLogin, open_browser: bool) {
    let mut err = std::io::stderr().lock();
    // Only an https page (or http on this machine) is shown, QR-coded or opened; and
    // nothing the server sent reaches the terminal with its control characters.
    let Some(url) = pending.url_to_open() else {
        let _ = writeln!(
            err,
            "{} names no https page to log in at ({}); not opening it.",
            server_name(server),
            terminal_safe(&pending.verification_uri)
        );
        return;
    };
    let url = terminal_safe(url);
    let url = url.as_str();
    let _ = writeln!(
        err,
        "To log in to {}, open this page in a browser:\n\n    {url}\n\nand check that it shows the code {}\n",
        server_name(server),
        terminal_safe(&pending.user_code)
    );
    if std::io::stderr().is_terminal()
        && let Ok(code) = qrcode::QrCode::new(url.as_bytes())
    {
        let image = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build();
        let _ = writeln!(err, "{image}\n");
    }
    drop(err);
    if open_browser
        && let Some(browser) = browser_command()
        && open_in_browser(&browser, url)
    {
        eprintln!("(opened in your browser)");
    }
}

/// Text from the server for the terminal: control characters (escape sequences that
/// could rewrite the screen) escaped, at most 300 characters.
fn terminal_safe(text: &str) -> String {
    text.chars()
        .take(300)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Opens a browser login's page, telling the user, with the page to open by hand in
/// case the browser shows nothing. Returns whether a browser was started.
fn open_login_page(server: &Url, login: &BrowserLogin, browser: Option<&str>) -> bool {
    let Some(browser) = browser else { return false };
    if !open_in_browser(browser, login.authorize_url()) {
        return false;
    }
    eprintln!(
        "Opened your browser to log in to {}. If it shows nothing, open this page:\n\n    {}\n",
        server_name(server),
        terminal_safe(login.authorize_url())
    );
    true
}

/// The command that opens a page: `$BROWSER`, or the desktop's opener when there is a
/// desktop; `None` when there is neither.
fn browser_command() -> Option<String> {
    let custom = std::env::var("BROWSER").ok().filter(|b| !b.is_empty());
    match custom {
        Some(browser) => Some(browser),
        None if cfg!(target_os = "macos") => Some("open".into()),
        None if cfg!(windows) => Some("explorer".into()),
        None => {
            let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
            desktop.then(|| "xdg-open".into())
        }
    }
}

/// Opens `url` with `command`. Returns whether it could be started.
fn open_in_browser(command: &str, url: &str) -> bool {
    std::process::Command::new(command)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// "Waiting…" on stderr while the user logs in: an animated line on a terminal, one
/// plain line otherwise. Stops (and clears its line) when dropped.
struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    fn start(deadline: Instant, what: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            eprintln!("{what}…");
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for frame in FRAMES.iter().cycle() {
                tick.tick().await;
                let left = deadline.saturating_duration_since(Instant::now()).as_secs();
                eprint!(
                    "\r{frame} {what} (gives up in {}:{:02}) ",
                    left / 60,
                    left % 60
                );
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_default_to_https_and_refuse_plain_http_elsewhere() {
        assert_eq!(
            parse_server("id.example.com").unwrap().as_str(),
            "https://id.example.com/"
        );
        assert!(parse_server("http://127.0.0.1:8080").is_ok());
        assert!(parse_server("http://id.example.com").is_err());
        assert!(parse_server("https://id.example.com/?x=1").is_err());
        assert!(parse_server("https://").is_err());
    }

    #[test]
    fn the_browser_is_used_only_when_one_can_open_here() {
        let xdg = Some("xdg-open");
        assert_eq!(login_method(false, false, xdg), LoginMethod::Browser);
        assert_eq!(login_method(true, false, xdg), LoginMethod::Device);
        assert_eq!(login_method(false, true, xdg), LoginMethod::Device);
        assert_eq!(login_method(false, false, None), LoginMethod::Device);
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(14 * 60 + 2), "14m 2s");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h 5m");
        assert_eq!(duration(2 * 86400 + 4 * 3600), "2d 4h");
        assert_eq!(duration(-5), "0s");
    }
}
