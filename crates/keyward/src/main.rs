//! `keyward`: the one binary. `serve` runs the authorization server; `client`, `user`,
//! `key` and `store` administer its database, `backup` and `restore` save and put it
//! back; `login`, `token`, `logout` and `status` are the
//! terminal client of any keyward (or RFC 8628) server, in [`terminal`]; `guard` is the
//! reverse proxy that protects a service with keyward's tokens, in [`guard`].

mod guard;
mod terminal;
mod ws;

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use keyward_proto::Password;
use keyward_server::admin::{self, NewClient};
use keyward_server::config::{Config, ConnectorKind, LogFormat};
use keyward_server::domain::utc_text;
use keyward_server::domain::{AuditEntry, SigningAlg};
use keyward_server::store::{self, Store};

/// keyward: an OAuth 2.0 / OpenID Connect identity broker in one binary.
#[derive(Parser)]
#[command(name = "keyward", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). KEYWARD_ISSUER, KEYWARD_LISTEN, KEYWARD_DATABASE_URL
    /// and KEYWARD_LOG_FORMAT override it.
    #[arg(long, short, global = true, env = "KEYWARD_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authorization server (default: http://127.0.0.1:8080, SQLite under ./keyward-data/).
    #[command(
        after_help = "Signals: SIGHUP reads the configuration file again and applies its clients, \
        users and connectors without closing a connection (other settings need a restart); \
        SIGTERM or Ctrl-C stops taking requests and lets those in flight finish (up to 10 s)."
    )]
    Serve,
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage local users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Copy the database into a new file FILE while keyward serve runs (SQLite: a
    /// consistent snapshot as of one commit; PostgreSQL: says how to use pg_dump).
    #[command(after_help = BACKUP_HELP)]
    Backup {
        /// The backup file to write (mode 0600).
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup made by `keyward backup` in place of the database, with every
    /// keyward serve stopped; the database it replaces is kept beside it.
    #[command(after_help = RESTORE_HELP)]
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Look after the database.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Show the configured ways to sign in ([[connectors]] in the configuration file).
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// What a subject may hold in a token exchange, and which policy gives each scope.
    #[command(subcommand)]
    Scopes(ScopesCommand),
    /// Print the audit log: what administrators changed through the admin API
    /// (/admin/api/), the admin console (/admin) or these commands, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Log in to a server from this terminal (through the browser, or with a code to
    /// confirm on another device) and keep its tokens.
    Login(terminal::LoginArgs),
    /// Print a valid access token for a server, refreshing it first when it is about to
    /// expire: `curl -H "Authorization: Bearer $(keyward token)" …`; with --audience, a
    /// short-lived token for that service, exchanged from the login.
    #[command(
        after_help = "Exit status: 0 with the token on stdout; 3 when a login is needed \
        (run `keyward login`); 1 on any other error (server unreachable, …), explained on stderr."
    )]
    Token(terminal::TokenArgs),
    /// Connect to a WebSocket behind keyward guard with the stored login, piping stdin
    /// and stdout (like websocat) and re-authenticating in-band before the token ends.
    #[command(
        after_help = "Exit status: 0 when either side closed normally; 1 when the guard         refused the token or closed the connection (the close code and reason on stderr)."
    )]
    Ws(ws::WsArgs),
    /// Revoke a server's tokens at the server and remove them from this machine.
    Logout(terminal::LogoutArgs),
    /// List the servers logged in to: who, and when the tokens expire (never the tokens).
    Status(terminal::StatusArgs),
    /// Protect an HTTP and WebSocket service with keyward's tokens: a reverse proxy that
    /// checks each request's bearer token (and each WebSocket's, in-band) and forwards
    /// the caller's identity.
    Guard(guard::GuardArgs),
    /// Print the completion script for a shell.
    ///
    /// bash: `keyward completions bash > /etc/bash_completion.d/keyward`; zsh:
    /// `keyward completions zsh > "${fpath[1]}/_keyward"`; fish: `keyward completions
    /// fish > ~/.config/fish/completions/keyward.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const BACKUP_HELP: &str = "The backup holds everything a restored server needs: \
clients, users, grants, refresh tokens, and the signing keys and MAC key. With \
KEYWARD_KEY_ENCRYPTION_KEY_FILE set, those keys are encrypted in it and the key file is \
not: keep a copy of the key file apart from the backups, a restore needs it. Without it \
they are in clear and the backup can sign tokens: keep it as secret as the database.";

const RESTORE_HELP: &str = "FILE is checked before anything is touched: a whole, \
undamaged keyward database of a schema this keyward can migrate, whose encrypted keys \
open with KEYWARD_KEY_ENCRYPTION_KEY_FILE. Refused while anything has the database \
open. The replaced database is renamed NAME.replaced-TIME; the next keyward serve \
migrates the backup if it is older.";

#[derive(Subcommand)]
enum ScopesCommand {
    /// Print the scopes SUBJECT holds ([[policies]] in the configuration file): for
    /// `user:NAME` also through the user's groups and ways to sign in, for `client:ID`
    /// also the scopes the client is registered with.
    Expand {
        /// `user:NAME`, `client:ID`, `group:CONNECTOR:GROUP`, `connector:ID` or
        /// `trusted:ID:VALUES`.
        subject: String,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; a confidential client's secret is generated and shown once.
    Add(ClientAdd),
    /// List clients.
    List,
    /// Remove a client and revoke everything issued to it (one the configuration file
    /// declares is removed from the file instead).
    Remove {
        /// The client id.
        client_id: String,
    },
    /// Give a confidential client a new secret, shown once; the old one (and the tokens
    /// issued under it) stays valid for the grace period, then is forgotten. A client
    /// the configuration file declares gets its new secret there.
    RotateSecret {
        /// The client id.
        client_id: String,
        /// How long the old secret is still accepted (`0s` to `30d`).
        #[arg(long, default_value = "24h", value_parser = parse_grace)]
        grace: std::time::Duration,
    },
}

/// A grace period: a duration such as `90m`, `24h` or `7d`.
fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    keyward_server::config::parse_duration(text)
}

#[derive(Args)]
struct ClientAdd {
    /// The client id.
    client_id: String,
    /// Display name shown on the consent page.
    #[arg(long)]
    name: Option<String>,
    /// A public client (native app, SPA, CLI): no secret, PKCE only.
    #[arg(long)]
    public: bool,
    /// An exact redirect URI (repeatable).
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (repeatable).
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    post_logout_redirect_uris: Vec<String>,
    /// Allowed grant type (repeatable): authorization_code, refresh_token,
    /// client_credentials, urn:ietf:params:oauth:grant-type:device_code,
    /// urn:ietf:params:oauth:grant-type:token-exchange.
    /// Default: authorization_code and refresh_token.
    #[arg(long = "grant-type", value_name = "GRANT")]
    grant_types: Vec<String>,
    /// Allowed scope (repeatable). Default: openid profile email offline_access.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// A first-party application: skip the consent page.
    #[arg(long)]
    skip_consent: bool,
    /// A resource server: may introspect any token (other clients only their own).
    #[arg(long)]
    introspect: bool,
    /// ID token signing algorithm.
    #[arg(long, value_parser = ["ES256", "RS256"], default_value = "ES256")]
    id_token_alg: String,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a local user; the password is read from the terminal or, with
    /// --password-stdin, from the first line of standard input.
    Add {
        /// Login name.
        username: String,
        /// Email address (taken as verified).
        #[arg(long)]
        email: Option<String>,
        /// Full name.
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users, with how each signs in (password, linked identities).
    List,
    /// Set a user's password (ends their sessions).
    Passwd {
        /// Login name.
        username: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: ends their sessions and revokes their tokens.
    Disable {
        /// Login name.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Login name.
        username: String,
    },
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// List the connectors, with the redirect URI to register at each provider.
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Generate new signing keys; the old ones stay published until their tokens expire.
    Rotate,
    /// List signing keys.
    List,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Check that the database's records agree with each other: every refresh token's,
    /// code's and device authorization's grant exists, every grant's user and client
    /// exist, each rotation chain has exactly one live token. Safe while servers run.
    #[command(
        after_help = "Exit status: 0 when consistent; 1 with one line per problem on stdout \
        (ids and counts only, never token material), or on any other error."
    )]
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` starts its log once its configuration has said which format
    // (`log_format`); the other commands take `KEYWARD_LOG_FORMAT` or text.
    if !matches!(cli.command, Command::Serve) {
        let format = std::env::var("KEYWARD_LOG_FORMAT").ok();
        init_logging(
            format
                .as_deref()
                .and_then(LogFormat::parse)
                .unwrap_or_default(),
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Nothing is left to finish; a blocking read of stdin (`keyward ws`) must not keep
    // the process alive.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = terminal::hint(&e) {
                eprintln!("hint: {hint}");
            }
            terminal::exit_status(&e).map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}

/// Logs to stderr at `KEYWARD_LOG` (default `info,sqlx=warn`), as text (in colour only
/// on a terminal) or one JSON object a line with the request's span (`id`, `method`,
/// `path`) in each.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KEYWARD_"))
        .collect();
    Ok(Config::load(path, &env)?)
}

async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    store::open_with(&config.database_url, config.durability)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(&config.database_url)
            )
        })
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve => {
            let path = config.map(std::path::Path::to_path_buf);
            let config = load_config(config)?;
            init_logging(config.log_format);
            serve(config, path).await
        }
        Command::Client(command) => client_command(&*server_store(config).await?, command).await,
        Command::User(command) => user_command(&*server_store(config).await?, command).await,
        Command::Key(command) => {
            let at_rest = load_config(config)?.at_rest_key;
            key_command(&*server_store(config).await?, command, at_rest).await
        }
        Command::Backup { file, force } => backup(&load_config(config)?, &file, force).await,
        Command::Restore { file } => restore(&load_config(config)?, &file).await,
        Command::Store(StoreCommand::Check) => {
            let config = load_config(config)?;
            store_check(&*open_store(&config).await?, &config).await
        }
        Command::Scopes(ScopesCommand::Expand { subject }) => {
            let config = load_config(config)?;
            let store = open_store(&config).await?;
            scopes_expand(&config, &*store, &subject).await
        }
        Command::Audit { limit } => audit(&*server_store(config).await?, limit).await,
        Command::Connector(ConnectorCommand::List) => {
            connector_list(&load_config(config)?);
            Ok(())
        }
        // The terminal client needs no server configuration.
        Command::Login(args) => terminal::login(args).await,
        Command::Token(args) => terminal::token(args).await,
        Command::Ws(args) => ws::ws(args).await,
        Command::Logout(args) => terminal::logout(args).await,
        Command::Status(args) => terminal::status(args),
        Command::Guard(args) => guard::run(args, config, shutdown_signal()).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "keyward", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `keyward audit`: one line per entry, newest first.
async fn audit(store: &dyn Store, limit: u32) -> anyhow::Result<()> {
    let entries = store.list_audit(limit, None).await?;
    if entries.is_empty() {
        eprintln!(
            "The audit log is empty: nothing was changed through the admin API, the console or the admin commands."
        );
        return Ok(());
    }
    println!(
        "{:<21} {:<24} {:<16} {:<24} FROM",
        "WHEN", "WHO", "ACTION", "TARGET"
    );
    for entry in entries {
        println!(
            "{:<21} {:<24} {:<16} {:<24} {}",
            keyward_server::domain::utc_text(entry.at.div_euclid(1000)),
            entry.actor,
            entry.action,
            entry.target,
            entry.address.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// The server's database, for the admin commands.
async fn server_store(
    config: Option<&std::path::Path>,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    open_store(&load_config(config)?).await
}

async fn serve(config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let database = redact_url(&config.database_url);
    let state = keyward_server::serve::build(config)
        .await
        .with_context(|| format!("cannot start on {database}"))?;
    reload_on_hangup(state.clone(), path);
    let config = state.config();
    // The Julia package client is registered automatically; it does not count here.
    let pkg_client = &config.pkg_auth.client_id;
    let clients = state
        .store()
        .list_clients()
        .await?
        .iter()
        .filter(|c| &c.client_id != pkg_client)
        .count();
    let users = state.store().count_users().await?;
    println!(
        "keyward {} listening on http://{listen}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  issuer:     {}", config.issuer_str());
    println!(
        "  discovery:  {}",
        config.endpoint("/.well-known/openid-configuration")
    );
    println!("  database:   {database} ({clients} clients, {users} users)");
    println!("  account:    {}", config.endpoint("/account"));
    for (i, line) in connector_lines(config).iter().enumerate() {
        let label = if i == 0 { "sign-in:" } else { "" };
        println!("  {label:<11} {line}");
    }
    if clients == 0 || users == 0 {
        println!();
        println!("Next steps, in another terminal:");
        if clients == 0 {
            println!(
                "  keyward client add demo-app --redirect-uri http://127.0.0.1:5555/callback --skip-consent"
            );
        }
        if users == 0 {
            println!("  keyward user add alice --email alice@example.com");
        }
    }
    keyward_server::serve::run(state, listener, shutdown_signal()).await?;
    Ok(())
}

/// `keyward backup FILE`: the snapshot, what it holds, and what a restore will need.
async fn backup(config: &Config, file: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let report = admin::backup(
        &config.database_url,
        file,
        force,
        config.at_rest_key.as_deref(),
    )
    .await
    .with_context(|| format!("backup of {} failed", redact_url(&config.database_url)))?;
    let held = &report.inspection;
    println!(
        "wrote {}: {} bytes in {:.2} s, a consistent copy of {}",
        file.display(),
        held.bytes,
        report.took.as_secs_f64(),
        redact_url(&config.database_url)
    );
    println!("  {}", holdings(held));
    let sealing = report.sealing;
    if sealing.sealed > 0 {
        let check = match sealing.opens {
            Some(true) => "the configured key file opens them",
            Some(false) => "WARNING: the configured key file does not open them",
            None => "KEYWARD_KEY_ENCRYPTION_KEY_FILE is not set here, so they were not checked",
        };
        println!(
            "  {} secrets (signing keys, MAC key) are encrypted at rest; {check}",
            sealing.sealed
        );
        println!(
            "  a restore needs that key file (KEYWARD_KEY_ENCRYPTION_KEY_FILE), which is not \
             in the backup: keep a copy of it apart from the backups"
        );
    }
    if sealing.clear > 0 {
        println!(
            "  {} secrets (signing keys, MAC key) are in clear: this file can sign tokens as \
             the server; keep it as secret as the database (see README, Backups)",
            sealing.clear
        );
    }
    Ok(())
}

/// `keyward restore FILE`: the checks, the swap, and where the old database went.
async fn restore(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let restored = admin::restore(&config.database_url, file, config.at_rest_key.as_deref())
        .await
        .with_context(|| format!("nothing restored into {}", redact_url(&config.database_url)))?;
    let held = &restored.inspection;
    println!(
        "restored {} into {}",
        file.display(),
        restored.database.display()
    );
    println!("  {}", holdings(held));
    let latest = keyward_server::store::backup::latest_schema_version();
    if held.schema_version < latest {
        println!(
            "  schema version {}: keyward serve migrates it to {latest} when it starts",
            held.schema_version
        );
    }
    if let Some(replaced) = &restored.replaced {
        println!(
            "  the database it replaced is kept at {}",
            replaced.display()
        );
    }
    Ok(())
}

/// One line saying what a database file holds.
fn holdings(held: &keyward_server::store::backup::Inspection) -> String {
    format!(
        "schema version {}; {} users, {} clients, {} grants, {} refresh tokens, {} signing keys",
        held.schema_version,
        held.users,
        held.clients,
        held.grants,
        held.refresh_tokens,
        held.signing_keys
    )
}

/// One line per connector: name, type, and what its provider needs to know (the
/// redirect URI to register) or what to know about it.
fn connector_lines(config: &Config) -> Vec<String> {
    config
        .connectors
        .iter()
        .map(|c| {
            let mut line = format!("{} ({}, id {})", c.name, c.kind.type_name(), c.id);
            if !c.enabled {
                line.push_str(": disabled");
            } else if c.kind.uses_redirect() {
                line.push_str(&format!(
                    ": register the redirect URI {}",
                    config.connector_redirect_uri(&c.id)
                ));
            } else if let ConnectorKind::Email(settings) = &c.kind {
                match &settings.smtp {
                    Some(smtp) => line.push_str(&format!(": mail through {}:{}", smtp.host, smtp.port)),
                    None => line.push_str(
                        ": no SMTP server configured, sign-in links go to the server log (development only)",
                    ),
                }
            }
            line
        })
        .collect()
}

/// `keyward scopes expand SUBJECT`: the subject's names, then each scope it holds with
/// where it comes from.
async fn scopes_expand(config: &Config, store: &dyn Store, subject: &str) -> anyhow::Result<()> {
    use keyward_server::policy::{self, Held};
    let policies = &config.exchange.policies;
    let (names, mut held) = match subject.split_once(':') {
        Some(("user", username)) => {
            let user = store
                .get_user_by_username(username)
                .await?
                .with_context(|| format!("no user {username:?}"))?;
            let password = config.password_login().map(|c| c.id.as_str());
            let names = policy::user_subjects(
                store,
                &user,
                password,
                keyward_server::domain::now(),
                config.groups_max_age,
            )
            .await?;
            let held = policy::held_scopes(policies, &names);
            (names, held)
        }
        Some(("client", client_id)) => {
            let client = store
                .get_client(client_id)
                .await?
                .with_context(|| format!("no client {client_id:?}"))?;
            let names = vec![policy::client_subject(client_id)];
            let mut held = policy::held_scopes(policies, &names);
            held.extend(client.scopes.iter().map(|scope| Held {
                scope: scope.to_owned(),
                source: "client registration".into(),
                subject: names[0].clone(),
            }));
            (names, held)
        }
        Some((kind, rest))
            if keyward_server::config::exchange::SUBJECT_KINDS.contains(&kind)
                && !rest.is_empty() =>
        {
            let names = vec![subject.to_owned()];
            let held = policy::held_scopes(policies, &names);
            (names, held)
        }
        _ => anyhow::bail!(
            "a subject is KIND:NAME with KIND one of {}",
            keyward_server::config::exchange::SUBJECT_KINDS.join(", ")
        ),
    };
    held.sort_by(|a, b| a.scope.cmp(&b.scope));
    println!("{subject} is {}", names.join(", "));
    if held.is_empty() {
        println!("  holds no scopes");
    }
    let width = held.iter().map(|h| h.scope.len()).max().unwrap_or(0);
    for h in &held {
        println!("  {:<width$}  {} ({})", h.scope, h.source, h.subject);
    }
    Ok(())
}

fn connector_list(config: &Config) {
    println!(
        "{:<16} {:<9} {:<24} {:<8} REDIRECT URI",
        "ID", "TYPE", "NAME", "ENABLED"
    );
    for c in &config.connectors {
        let redirect = if c.kind.uses_redirect() {
            config.connector_redirect_uri(&c.id)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<16} {:<9} {:<24} {:<8} {redirect}",
            c.id,
            c.kind.type_name(),
            c.name,
            if c.enabled { "yes" } else { "no" }
        );
    }
}

/// Reads the configuration file (and the environment) again on every SIGHUP and applies
/// its clients, users and connectors ([`keyward_server::serve::reload`]). A file that
/// does not load is logged and changes nothing.
fn reload_on_hangup(state: keyward_server::state::AppState, path: Option<std::path::PathBuf>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP: the configuration will not be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                reload(&state, path.as_deref()).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (state, path);
}

/// One reload, logged.
async fn reload(state: &keyward_server::state::AppState, path: Option<&std::path::Path>) {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "SIGHUP: the configuration was not reloaded; nothing changed"
            );
            return;
        }
    };
    match keyward_server::serve::reload(state, config).await {
        Ok(reloaded) => {
            keyward_server::serve::log_taken_out(&reloaded.synced);
            tracing::info!(
                clients = reloaded.synced.clients,
                users = reloaded.synced.users,
                connectors = reloaded.connectors.join(","),
                "SIGHUP: configuration reloaded (clients, users, connectors)"
            );
            if !reloaded.needs_restart.is_empty() {
                tracing::warn!(
                    settings = reloaded.needs_restart.join(","),
                    "SIGHUP: these changed settings apply at the next restart"
                );
            }
        }
        Err(error) => tracing::error!(
            error = keyward_proto::error::error_chain(&error),
            "SIGHUP: the configuration was not reloaded"
        ),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Writes what an admin command did to the audit log, once done, as `cli:<login>`:
/// the account running it on the server's machine (`SUDO_USER` under sudo). Whoever
/// can run the command can write the database, so this records, it does not guard.
async fn audited(store: &dyn Store, action: &str, target: &str) -> anyhow::Result<()> {
    let login: String = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let actor = format!("cli:{}", if login.is_empty() { "unknown" } else { &login });
    let entry = AuditEntry::new(actor, action, target, None, keyward_server::domain::now());
    store
        .append_audit(&entry)
        .await
        .context("the change is made, but the audit log could not be written")?;
    Ok(())
}

async fn client_command(store: &dyn Store, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Add(add) => {
            let new = NewClient {
                client_id: add.client_id,
                name: add.name,
                public: add.public,
                secret: None,
                redirect_uris: add.redirect_uris,
                post_logout_redirect_uris: add.post_logout_redirect_uris,
                grant_types: add.grant_types,
                scopes: add.scopes,
                skip_consent: add.skip_consent,
                introspect: add.introspect,
                id_token_alg: SigningAlg::parse(&add.id_token_alg),
            };
            let (client, secret) = admin::add_client(store, new).await?;
            audited(store, "client.create", &client.client_id).await?;
            println!("client_id:     {}", client.client_id);
            match secret {
                Some(secret) => {
                    println!("client_secret: {}", secret.secret());
                    println!("(shown once: keyward stores only its hash)");
                }
                None => println!("public client: no secret; PKCE required"),
            }
        }
        ClientCommand::List => {
            println!(
                "{:<24} {:<13} {:<45} REDIRECT URIS",
                "CLIENT ID", "TYPE", "GRANTS"
            );
            for client in store.list_clients().await? {
                let kind = match (client.is_public(), client.introspect) {
                    (true, _) => "public",
                    (false, true) => "resource",
                    (false, false) => "confidential",
                };
                println!(
                    "{:<24} {:<13} {:<45} {}",
                    client.client_id,
                    kind,
                    client.grant_types.join(","),
                    client.redirect_uris.join(" ")
                );
            }
        }
        ClientCommand::RotateSecret { client_id, grace } => {
            let now = keyward_server::domain::now();
            let (client, secret) =
                admin::rotate_client_secret(store, &client_id, grace, now).await?;
            audited(store, "client.rotate-secret", &client_id).await?;
            println!("client_id:     {}", client.client_id);
            println!("client_secret: {}", secret.secret());
            println!("(shown once: keyward stores only its hash)");
            match &client.previous_secret {
                Some(old) => println!(
                    "the old secret is accepted until {}",
                    keyward_server::domain::utc_text(old.until)
                ),
                None => println!("the old secret no longer works"),
            }
        }
        ClientCommand::Remove { client_id } => {
            admin::remove_client(store, &client_id).await?;
            audited(store, "client.delete", &client_id).await?;
            println!("removed client {client_id}");
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<Password> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let second =
            rpassword::prompt_password("Repeat:   ").context("cannot read the password")?;
        if first != second {
            bail!("the passwords differ");
        }
        first
    };
    Ok(Password::new(password))
}

async fn user_command(store: &dyn Store, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            username,
            email,
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let user = admin::add_user(store, &username, email, name, password).await?;
            audited(store, "user.create", &user.username).await?;
            println!("created user {} (sub {})", user.username, user.id);
        }
        UserCommand::List => {
            println!(
                "{:<24} {:<32} {:<9} {:<24} SIGN-IN",
                "USERNAME", "EMAIL", "STATUS", "SUB"
            );
            for user in store.list_users().await? {
                let status = if user.disabled { "disabled" } else { "active" };
                // How the account signs in: a password, and each linked identity.
                let mut ways: Vec<String> = user
                    .password_hash
                    .as_ref()
                    .map(|_| "password".to_owned())
                    .into_iter()
                    .collect();
                ways.extend(
                    store
                        .list_identities(&user.id)
                        .await?
                        .into_iter()
                        .map(|i| format!("{}:{}", i.connector_id, i.username.unwrap_or(i.subject))),
                );
                println!(
                    "{:<24} {:<32} {:<9} {:<24} {}",
                    user.username,
                    user.email.as_deref().unwrap_or("-"),
                    status,
                    user.id,
                    ways.join(" ")
                );
            }
        }
        UserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            admin::set_password(store, &username, password).await?;
            audited(store, "user.set-password", &username).await?;
            println!("password of {username} changed; their sessions are ended");
        }
        UserCommand::Disable { username } => {
            admin::set_disabled(store, &username, true).await?;
            audited(store, "user.disable", &username).await?;
            println!("disabled {username}: sessions ended, tokens revoked");
        }
        UserCommand::Enable { username } => {
            admin::set_disabled(store, &username, false).await?;
            audited(store, "user.enable", &username).await?;
            println!("enabled {username}");
        }
    }
    Ok(())
}

async fn key_command(
    store: &dyn Store,
    command: KeyCommand,
    at_rest: Option<std::sync::Arc<keyward_server::at_rest::AtRestKey>>,
) -> anyhow::Result<()> {
    match command {
        KeyCommand::Rotate => {
            let keys = admin::rotate_keys(store, at_rest).await?;
            audited(store, "keys.rotate", "signing-keys").await?;
            for key in keys {
                println!("new {} key {}", key.alg.as_str(), key.kid);
            }
            println!(
                "running servers switch to the new keys within a minute; old keys stay published until their tokens expire"
            );
        }
        KeyCommand::List => {
            println!("{:<18} {:<6} {:<22} STATUS", "KID", "ALG", "CREATED");
            for key in store.list_keys().await? {
                let status = match key.retired_at {
                    None => "active".to_owned(),
                    Some(at) => format!("retired {}", utc_text(at)),
                };
                println!(
                    "{:<18} {:<6} {:<22} {status}",
                    key.kid,
                    key.alg.as_str(),
                    utc_text(key.created_at)
                );
            }
        }
    }
    Ok(())
}

/// `keyward store check`: what was checked, then each problem on a line of its own;
/// an error (exit status 1) when there is any.
async fn store_check(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    let report = store
        .check_consistency(keyward_server::domain::now())
        .await
        .context("the consistency check failed to run")?;
    let database = redact_url(&config.database_url);
    println!("checked {database}: {}", report.checked);
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    match report.problems.len() {
        0 => {
            println!("consistent");
            Ok(())
        }
        n => bail!("the database is inconsistent: {n} problem(s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:redacted@h/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
