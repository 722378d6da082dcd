//! Typed configuration, loaded once at start-up: defaults, then a TOML file, then
//! `KEYWARD_*` environment variables. Nothing else in keyward reads the environment.
//!
//! Unknown keys and bad values are errors that name the key, reported before anything
//! listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use keyward_proto::{ClientSecret, OpaqueToken, Password, ScopeSet};
use serde::Deserialize;
use url::Url;

pub mod connectors;
pub mod exchange;

pub use connectors::{ConnectorConfig, ConnectorKind};

use crate::domain::SigningAlg;
use crate::net::IpNet;

/// The default issuer and listen address of a zero-config start.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// What one client address may make keyward store per minute without signing in,
/// unless configured (`unauthenticated_writes_per_minute`).
pub const DEFAULT_UNAUTHENTICATED_WRITES_PER_MINUTE: u32 = 300;
/// The databases keyward stores its data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    /// An embedded SQLite file (`sqlite:…`).
    Sqlite,
    /// A PostgreSQL server (`postgres://…`, `postgresql://…`).
    Postgres,
}

impl DatabaseKind {
    /// The kind of database a URL names, if keyward can use it.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// How far each commit is made durable before it is answered (`durability`). Either
/// way a commit survives the keyward process being killed; they differ on a power loss
/// or an operating-system crash. RELIABILITY.md says what each can lose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// SQLite: write-ahead log with `synchronous = NORMAL`: the log is flushed to disk at
    /// each checkpoint, not at each commit, so a power loss may roll back the commits
    /// since the last one (the database stays consistent). PostgreSQL: the server's own
    /// `synchronous_commit` setting (by default `on`, every commit flushed).
    #[default]
    Normal,
    /// Every commit flushed to disk before it is answered: SQLite `synchronous = FULL`;
    /// PostgreSQL `synchronous_commit = on` for keyward's connections, whatever the
    /// server's default.
    Full,
}

/// How `keyward serve` writes its log lines to stderr (`log_format`, or
/// `KEYWARD_LOG_FORMAT`, which wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: time, level, where, message and fields, one event a line; in colour
    /// only when stderr is a terminal.
    #[default]
    Text,
    /// For a log shipper: one JSON object a line (`timestamp`, `level`, `target`,
    /// `fields`, and `span` with the request's `id`, `method` and `path`).
    Json,
}

impl LogFormat {
    /// The format named `text` or `json`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The default database: an embedded SQLite file.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keyward-data/keyward.db";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a bad value (the message names it).
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML error, which names the key and line.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A secret given inline (`key = "…"`) or in a file (`key_file = "/run/secrets/…"`, its
/// contents without the final line break), not both: secrets then need not sit in the
/// configuration file itself (container and orchestrator secrets are files).
pub(crate) fn secret_from<T>(
    key: &str,
    inline: Option<T>,
    file: Option<&str>,
    make: fn(String) -> T,
) -> Result<Option<T>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            format!("{key}_file"),
            format!("give {key} or {key}_file, not both"),
        )),
        (inline, None) => Ok(inline),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("{key}_file"), format!("cannot read {path}: {e}")))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.is_empty() {
                return Err(invalid(format!("{key}_file"), format!("{path} is empty")));
            }
            Ok(Some(make(value.to_owned())))
        }
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The usernames `admins` and the `user:` subjects of the policies name.
fn reserved_usernames(admins: &[String], exchange: &exchange::ExchangeConfig) -> Vec<String> {
    let mut names: Vec<String> = admins.to_vec();
    for policy in &exchange.policies {
        names.extend(
            policy
                .subjects
                .iter()
                .filter_map(|s| s.strip_prefix("user:"))
                .map(str::to_owned),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// How often expired records are deleted when `purge_interval` is not set.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// The configuration file, as written (see `keyward.example.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    issuer: Option<String>,
    listen: Option<String>,
    database_url: Option<String>,
    durability: Option<Durability>,
    log_format: Option<LogFormat>,
    access_token_ttl: Option<String>,
    id_token_ttl: Option<String>,
    refresh_token_ttl: Option<String>,
    session_ttl: Option<String>,
    /// No longer used (refresh rotation is idempotent); accepted so that old files
    /// still load, with a warning.
    refresh_reuse_grace: Option<String>,
    authorization_code_ttl: Option<String>,
    login_ttl: Option<String>,
    device_code_ttl: Option<String>,
    device_poll_interval: Option<String>,
    groups_max_age: Option<String>,
    purge_interval: Option<String>,
    http_read_timeout: Option<String>,
    max_connections: Option<usize>,
    unauthenticated_writes_per_minute: Option<u32>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    insecure_http: bool,
    metrics_allowed: Option<Vec<String>>,
    metrics_token: Option<OpaqueToken>,
    metrics_token_file: Option<String>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    pkg_auth: PkgAuthConfig,
    #[serde(default)]
    clients: Vec<ClientConfig>,
    #[serde(default)]
    users: Vec<UserConfig>,
    #[serde(default)]
    connectors: Vec<connectors::ConnectorFile>,
    #[serde(default)]
    exchange: exchange::ExchangeFile,
    #[serde(default)]
    audiences: Vec<exchange::AudienceFile>,
    #[serde(default)]
    policies: Vec<exchange::PolicyFile>,
    /// `[guard]`: read by `keyward guard`, which checks it; the server leaves it alone,
    /// so that one file can configure both.
    #[serde(default)]
    #[allow(dead_code)]
    guard: Option<toml::Table>,
    #[serde(default)]
    trusted_issuers: Vec<exchange::TrustedIssuerFile>,
}

/// The Julia package-server login protocol (`[pkg_auth]`): served under `/auth/` so
/// that unmodified PkgAuthentication.jl clients log in.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkgAuthConfig {
    /// Whether `/auth/*` is served.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The public client the Julia client uses; registered automatically when it is
    /// neither declared in `[[clients]]` nor already stored.
    #[serde(default = "default_pkg_client")]
    pub client_id: String,
}

impl Default for PkgAuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            client_id: default_pkg_client(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_pkg_client() -> String {
    "device".into()
}

/// A client declared in the configuration file (`[[clients]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id.
    pub client_id: String,
    /// A display name for the consent page; defaults to the id.
    pub name: Option<String>,
    /// The secret; absent for a public client.
    pub client_secret: Option<ClientSecret>,
    /// A file holding the secret, instead of `client_secret`.
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Exact redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the user back to.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed grant types; defaults to `authorization_code` and `refresh_token`.
    pub grant_types: Option<Vec<String>>,
    /// Scopes the client may ask for; defaults to `openid profile email offline_access`.
    pub scopes: Option<Vec<String>>,
    /// A first-party app: no consent page.
    #[serde(default)]
    pub skip_consent: bool,
    /// A resource server: may introspect any token (other clients only their own).
    #[serde(default)]
    pub introspect: bool,
    /// `ES256` (default) or `RS256`.
    pub id_token_signed_response_alg: Option<SigningAlg>,
}

/// A local user declared in the configuration file (`[[users]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The login name.
    pub username: String,
    /// The email address, taken as verified.
    pub email: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// A plain password, hashed with Argon2id at start.
    pub password: Option<Password>,
    /// A file holding the password, instead of `password`.
    #[serde(default)]
    pub password_file: Option<String>,
    /// A PHC-format Argon2id hash.
    pub password_hash: Option<String>,
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The issuer identifier: scheme, host, optional port and path, no query.
    pub issuer: Url,
    /// The socket to listen on.
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// How far each commit is made durable before it is answered.
    pub durability: Durability,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// ID token lifetime.
    pub id_token_ttl: Duration,
    /// Refresh token (and grant) lifetime.
    pub refresh_token_ttl: Duration,
    /// Browser session lifetime.
    pub session_ttl: Duration,
    /// Authorization code lifetime.
    pub code_ttl: Duration,
    /// How long a started login may take.
    pub login_ttl: Duration,
    /// Lifetime of device and user codes (RFC 8628).
    pub device_code_ttl: Duration,
    /// The polling interval told to devices.
    pub device_poll_interval: Duration,
    /// How long groups an upstream provider reported are released after the last
    /// sign-in through that provider (then they are dropped until the next one).
    pub groups_max_age: Duration,
    /// How often expired records (logins, sessions, codes, grants, refresh tokens,
    /// device codes, throttles) are deleted, the first time one interval after start.
    pub purge_interval: Duration,
    /// How long a connection may take to send a request's head, or its body, and how
    /// long an idle keep-alive connection waits for its next request.
    pub http_read_timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
    /// Logins, device codes (of public clients) and Julia challenges one address may
    /// make the server store per minute, without signing in.
    pub unauthenticated_writes_per_minute: u32,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client
    /// (for throttling and the account page); nobody else's are read.
    pub trusted_proxies: Vec<IpNet>,
    /// The Julia package-server protocol.
    pub pkg_auth: PkgAuthConfig,
    /// Static clients.
    pub clients: Vec<ClientConfig>,
    /// Static local users.
    pub users: Vec<UserConfig>,
    /// The ways to sign in: upstream providers, emailed links and the local password
    /// (always present, perhaps disabled), in the order the login page shows them.
    pub connectors: Vec<ConnectorConfig>,
    /// What the operator must hear at start (obsolete keys, an insecure issuer);
    /// logged as warnings.
    pub warnings: Vec<String>,
    /// Seals the signing keys and the MAC key in the database, when
    /// `KEYWARD_KEY_ENCRYPTION_KEY_FILE` names a key file.
    pub at_rest_key: Option<std::sync::Arc<crate::at_rest::AtRestKey>>,
    /// Addresses `/metrics` answers to without a token.
    pub metrics_allowed: Vec<IpNet>,
    /// A bearer token that opens `/metrics` from anywhere.
    pub metrics_token: Option<OpaqueToken>,
    /// The usernames that may use the admin console (`/admin`), beside those the
    /// `[[policies]]` give the scope `keyward:admin`.
    pub admins: Vec<String>,
    /// The usernames this configuration gives powers to (`admins`, and the `user:`
    /// subjects of the `[[policies]]`): an account an upstream sign-in creates never
    /// takes one ([`crate::accounts::resolve`]).
    pub reserved_usernames: Vec<String>,
    /// Token exchange: lifetime, audiences and scope policies.
    pub exchange: exchange::ExchangeConfig,
}

impl Config {
    /// Loads the configuration: defaults, then `file` when given, then the environment
    /// variables in `env` (`KEYWARD_ISSUER`, `KEYWARD_LISTEN`, `KEYWARD_DATABASE_URL`).
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let parsed = match file {
            Some(path) => {
                let display = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: display.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: display,
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(parsed, env)
    }

    /// Parses TOML text (used by tests and by `load`).
    pub fn from_toml(text: &str, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let parsed = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<inline>".into(),
            source,
        })?;
        Self::from_parts(parsed, env)
    }

    fn from_parts(file: FileConfig, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let pick = |env_key: &str, value: Option<String>| env.get(env_key).cloned().or(value);
        let listen = parse_listen(
            &pick("KEYWARD_LISTEN", file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into()),
        )?;
        let issuer_text =
            pick("KEYWARD_ISSUER", file.issuer).unwrap_or_else(|| format!("http://{listen}"));
        let issuer = parse_issuer(&issuer_text)?;
        let warnings = start_warnings(
            &issuer,
            file.insecure_http,
            file.refresh_reuse_grace.is_some(),
        )?;
        let default_metrics = ["127.0.0.0/8".to_owned(), "::1".to_owned()];
        let metrics_allowed = networks(
            "metrics_allowed",
            file.metrics_allowed.as_deref().unwrap_or(&default_metrics),
        )?;
        let connectors = connectors::validate(file.connectors, &issuer)?;
        let exchange = exchange::validate(exchange::Sections {
            exchange: file.exchange,
            audiences: file.audiences,
            policies: file.policies,
            trusted_issuers: file.trusted_issuers,
        })?;
        let reserved_usernames = reserved_usernames(&file.admins, &exchange);
        for admin in &file.admins {
            crate::domain::validate_username(admin)
                .map_err(|why| invalid("admins", format!("not a username: {why}")))?;
        }

        let database_url = pick("KEYWARD_DATABASE_URL", file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        DatabaseKind::of(&database_url)
            .ok_or_else(|| invalid("database_url", "must start with sqlite: or postgres://"))?;

        let config = Config {
            issuer,
            listen,
            database_url,
            durability: file.durability.unwrap_or_default(),
            log_format: match env.get("KEYWARD_LOG_FORMAT") {
                Some(name) => LogFormat::parse(name)
                    .ok_or_else(|| invalid("KEYWARD_LOG_FORMAT", "must be \"text\" or \"json\""))?,
                None => file.log_format.unwrap_or_default(),
            },
            access_token_ttl: duration("access_token_ttl", file.access_token_ttl, 15 * 60)?,
            id_token_ttl: duration("id_token_ttl", file.id_token_ttl, 60 * 60)?,
            refresh_token_ttl: duration(
                "refresh_token_ttl",
                file.refresh_token_ttl,
                30 * 24 * 3600,
            )?,
            session_ttl: duration("session_ttl", file.session_ttl, 24 * 3600)?,
            code_ttl: duration("authorization_code_ttl", file.authorization_code_ttl, 60)?,
            login_ttl: duration("login_ttl", file.login_ttl, 15 * 60)?,
            device_code_ttl: duration("device_code_ttl", file.device_code_ttl, 10 * 60)?,
            device_poll_interval: duration("device_poll_interval", file.device_poll_interval, 5)?,
            groups_max_age: duration("groups_max_age", file.groups_max_age, 24 * 3600)?,
            purge_interval: duration(
                "purge_interval",
                file.purge_interval,
                DEFAULT_PURGE_INTERVAL.as_secs(),
            )?,
            http_read_timeout: duration("http_read_timeout", file.http_read_timeout, 10)?,
            max_connections: file.max_connections.unwrap_or(4096),
            unauthenticated_writes_per_minute: file
                .unauthenticated_writes_per_minute
                .unwrap_or(DEFAULT_UNAUTHENTICATED_WRITES_PER_MINUTE),
            trusted_proxies: networks("trusted_proxies", &file.trusted_proxies)?,
            pkg_auth: file.pkg_auth,
            clients: client_secrets(file.clients)?,
            users: user_passwords(file.users)?,
            connectors,
            warnings,
            exchange,
            at_rest_key: env
                .get("KEYWARD_KEY_ENCRYPTION_KEY_FILE")
                .map(|path| at_rest_key(path))
                .transpose()?,
            metrics_allowed,
            reserved_usernames,
            admins: file.admins,
            metrics_token: secret_from(
                "metrics_token",
                file.metrics_token,
                file.metrics_token_file.as_deref(),
                OpaqueToken::new,
            )?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_ranges()?;
        self.validate_clients()?;
        self.validate_users()
    }

    /// Lifetimes, intervals and limits within their bounds.
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        for (key, value, least, most, message) in self.ranges() {
            if value < least || value > most {
                return Err(invalid(key, message));
            }
        }
        Ok(())
    }

    /// Each bounded setting: its key, its value, the least and most it may be, and what
    /// to say otherwise.
    fn ranges(&self) -> [(&'static str, u64, u64, u64, &'static str); 11] {
        const DAY: u64 = 24 * 3600;
        [
            (
                "access_token_ttl",
                self.access_token_ttl.as_secs(),
                10,
                DAY,
                "must be between 10s and 24h",
            ),
            (
                "id_token_ttl",
                self.id_token_ttl.as_secs(),
                10,
                DAY,
                "must be between 10s and 24h",
            ),
            (
                "authorization_code_ttl",
                self.code_ttl.as_secs(),
                1,
                600,
                "must be between 1s and 10m",
            ),
            (
                "login_ttl",
                self.login_ttl.as_secs(),
                60,
                DAY,
                "must be between 1m and 24h",
            ),
            (
                "device_code_ttl",
                self.device_code_ttl.as_secs(),
                1,
                3600,
                "must be between 1s and 1h",
            ),
            (
                "device_poll_interval",
                self.device_poll_interval.as_secs(),
                1,
                60,
                "must be between 1s and 60s",
            ),
            (
                "purge_interval",
                self.purge_interval.as_secs(),
                1,
                DAY,
                "must be between 1s and 24h",
            ),
            (
                "http_read_timeout",
                self.http_read_timeout.as_secs(),
                1,
                300,
                "must be between 1s and 5m",
            ),
            (
                "max_connections",
                self.max_connections as u64,
                16,
                u64::MAX,
                "must be at least 16",
            ),
            (
                "unauthenticated_writes_per_minute",
                u64::from(self.unauthenticated_writes_per_minute),
                1,
                u64::MAX,
                "must be at least 1",
            ),
            (
                "metrics_token",
                self.metrics_token
                    .as_ref()
                    .map_or(16, |t| t.secret().len() as u64),
                16,
                u64::MAX,
                "must be at least 16 characters",
            ),
        ]
    }

    /// The declared clients: valid, unique ids; valid redirect URIs, grants, scopes and
    /// secrets.
    fn validate_clients(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{i}].{field}");
            crate::domain::validate_client_id(&client.client_id)
                .map_err(|m| invalid(key("client_id"), m))?;
            if !seen.insert(client.client_id.as_str()) {
                return Err(invalid(
                    key("client_id"),
                    format!("{:?} is declared twice", client.client_id),
                ));
            }
            for uri in client
                .redirect_uris
                .iter()
                .chain(&client.post_logout_redirect_uris)
            {
                crate::domain::validate_redirect_uri(uri)
                    .map_err(|m| invalid(key("redirect_uris"), m))?;
            }
            if let Some(grants) = &client.grant_types {
                for grant in grants {
                    if !keyward_proto::token::GRANT_TYPES.contains(&grant.as_str()) {
                        return Err(invalid(
                            key("grant_types"),
                            format!("unknown grant type {grant:?}"),
                        ));
                    }
                }
                if grants.iter().any(|g| g == "client_credentials")
                    && client.client_secret.is_none()
                {
                    return Err(invalid(
                        key("grant_types"),
                        "client_credentials needs a client_secret",
                    ));
                }
            }
            if let Some(scopes) = &client.scopes {
                ScopeSet::parse(&scopes.join(" "))
                    .map_err(|e| invalid(key("scopes"), e.to_string()))?;
            }
            if let Some(secret) = &client.client_secret
                && secret.secret().len() < 16
            {
                return Err(invalid(
                    key("client_secret"),
                    "must be at least 16 characters",
                ));
            }
        }
        Ok(())
    }

    /// The declared users, and the Julia protocol's client id.
    fn validate_users(&self) -> Result<(), ConfigError> {
        crate::domain::validate_client_id(&self.pkg_auth.client_id)
            .map_err(|m| invalid("pkg_auth.client_id", m))?;
        let mut names = std::collections::BTreeSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = |field: &str| format!("users[{i}].{field}");
            crate::domain::validate_username(&user.username)
                .map_err(|m| invalid(key("username"), m))?;
            if !names.insert(user.username.as_str()) {
                return Err(invalid(
                    key("username"),
                    format!("{:?} is declared twice", user.username),
                ));
            }
            match (&user.password, &user.password_hash) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("password"),
                        "give password or password_hash, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        key("password"),
                        "a password or password_hash is required",
                    ));
                }
                (None, Some(hash)) if !hash.starts_with("$argon2") => {
                    return Err(invalid(
                        key("password_hash"),
                        "must be a PHC-format Argon2 hash ($argon2id$…)",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How long a retired signing key stays published: as long as the longest token
    /// it signed lives.
    pub fn key_publish_window(&self) -> std::time::Duration {
        self.access_token_ttl.max(self.id_token_ttl)
    }

    /// The redirect URI to register at a connector's provider.
    pub fn connector_redirect_uri(&self, id: &str) -> String {
        self.endpoint(&format!("/callback/{id}"))
    }

    /// The settings that differ between `self` (the running configuration) and `new`
    /// and that a reload does not apply (only clients, users and connectors are
    /// reloaded): named as in the file, for the log.
    pub fn changed_until_restart(&self, new: &Config) -> Vec<&'static str> {
        macro_rules! changed {
            ($($field:ident),* $(,)?) => {
                [$((stringify!($field), self.$field != new.$field)),*]
            };
        }
        let mut changed: Vec<&'static str> = changed!(
            issuer,
            listen,
            database_url,
            durability,
            log_format,
            access_token_ttl,
            id_token_ttl,
            refresh_token_ttl,
            session_ttl,
            code_ttl,
            login_ttl,
            device_code_ttl,
            device_poll_interval,
            groups_max_age,
            purge_interval,
            http_read_timeout,
            max_connections,
            unauthenticated_writes_per_minute,
            trusted_proxies,
            metrics_allowed,
            metrics_token,
            admins,
        )
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        if self.pkg_auth.enabled != new.pkg_auth.enabled
            || self.pkg_auth.client_id != new.pkg_auth.client_id
        {
            changed.push("pkg_auth");
        }
        // Policies, audiences and the exchange lifetime; the trusted issuers are
        // reloaded with the connectors. (Their Debug forms hold no secret values.)
        let policies = |c: &Config| {
            format!(
                "{:?} {:?} {:?}",
                c.exchange.policies, c.exchange.audiences, c.exchange.lifetime
            )
        };
        if policies(self) != policies(new) {
            changed.push("exchange");
        }
        if self.at_rest_key.is_some() != new.at_rest_key.is_some() {
            changed.push("KEYWARD_KEY_ENCRYPTION_KEY_FILE");
        }
        changed
    }

    /// The password connector, when enabled.
    pub fn password_login(&self) -> Option<&ConnectorConfig> {
        self.connectors
            .iter()
            .find(|c| c.enabled && matches!(c.kind, ConnectorKind::Password))
    }

    /// Whether cookies must carry `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.scheme() == "https"
    }

    /// The name of keyward's cookie `base`: `__Host-<base>` when the issuer is https at
    /// the root path, so that the browser refuses it from any other host (a sibling
    /// subdomain) or path, and keyward's own is the only one it sends.
    pub fn cookie_name(&self, base: &str) -> String {
        if self.secure_cookies() && self.base_path().is_empty() {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// The issuer as a string without a trailing slash, as it appears in `iss`.
    pub fn issuer_str(&self) -> &str {
        self.issuer.as_str().trim_end_matches('/')
    }

    /// An absolute URL under the issuer.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer_str())
    }

    /// The path prefix of the issuer ("" when the issuer has no path).
    pub fn base_path(&self) -> &str {
        self.issuer.path().trim_end_matches('/')
    }
}

/// A duration key's value, or its default in seconds when the key is absent.
fn duration(key: &str, value: Option<String>, default: u64) -> Result<Duration, ConfigError> {
    match value {
        Some(text) => parse_duration(&text).map_err(|message| invalid(key, message)),
        None => Ok(Duration::from_secs(default)),
    }
}

/// What the operator should hear at start: an insecure issuer that was allowed, keys that
/// no longer do anything. (An insecure issuer that was not allowed is an error.)
fn start_warnings(
    issuer: &Url,
    insecure_http: bool,
    refresh_reuse_grace: bool,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    if let Some(warning) = insecure_issuer(issuer, insecure_http)? {
        warnings.push(warning);
    }
    if refresh_reuse_grace {
        warnings.push(
            "refresh_reuse_grace is no longer used: refresh-token rotation is idempotent \
             (a retried rotation gets the same successor), so no grace window is needed; \
             remove the key"
                .to_owned(),
        );
    }
    Ok(warnings)
}

/// Refuses a plain-http issuer on another machine unless `insecure_http`; then the
/// warning to log at every start.
fn insecure_issuer(issuer: &Url, insecure_http: bool) -> Result<Option<String>, ConfigError> {
    if issuer.scheme() != "http" || crate::net::is_loopback_host(issuer.host_str()) {
        return Ok(None);
    }
    let text = issuer.as_str().trim_end_matches('/');
    if !insecure_http {
        return Err(invalid(
            "issuer",
            format!(
                "{text:?} is plain http on another machine: passwords, codes and tokens would \
                 cross the network in clear. Use https (behind a TLS proxy), or set \
                 insecure_http = true for a closed test network"
            ),
        ));
    }
    Ok(Some(format!(
        "INSECURE: the issuer {text} is plain http and insecure_http = true: passwords, \
         codes and tokens cross the network in clear"
    )))
}

/// A list of networks under `key` (`key[i]` names the bad one).
fn networks(key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, text)| text.parse().map_err(|m| invalid(format!("{key}[{i}]"), m)))
        .collect()
}

/// The declared clients, with secrets given as files read.
fn client_secrets(clients: Vec<ClientConfig>) -> Result<Vec<ClientConfig>, ConfigError> {
    clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            client.client_secret = secret_from(
                &format!("clients[{i}].client_secret"),
                client.client_secret.take(),
                client.client_secret_file.take().as_deref(),
                ClientSecret::new,
            )?;
            Ok(client)
        })
        .collect()
}

/// The declared users, with passwords given as files read.
fn user_passwords(users: Vec<UserConfig>) -> Result<Vec<UserConfig>, ConfigError> {
    users
        .into_iter()
        .enumerate()
        .map(|(i, mut user)| {
            user.password = secret_from(
                &format!("users[{i}].password"),
                user.password.take(),
                user.password_file.take().as_deref(),
                Password::new,
            )?;
            Ok(user)
        })
        .collect()
}

/// The key that seals secrets at rest, from the file `KEYWARD_KEY_ENCRYPTION_KEY_FILE`
/// names.
fn at_rest_key(path: &str) -> Result<std::sync::Arc<crate::at_rest::AtRestKey>, ConfigError> {
    let key = "KEYWARD_KEY_ENCRYPTION_KEY_FILE";
    let material =
        std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
    let at_rest = crate::at_rest::AtRestKey::from_material(&material).ok_or_else(|| {
        invalid(
            key,
            format!(
                "{path} must hold at least {} random bytes (e.g. openssl rand -base64 48)",
                crate::at_rest::MIN_KEY_FILE_BYTES
            ),
        )
    })?;
    Ok(std::sync::Arc::new(at_rest))
}

fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            "listen",
            format!("{text:?} is not an address like 127.0.0.1:8080"),
        )
    })
}

fn parse_issuer(text: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(text).map_err(|e| invalid("issuer", format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("issuer", "must be an http or https URL"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(
            "issuer",
            "must not have a query, fragment or user info",
        ));
    }
    Ok(url)
}

/// Parses `90`, `90s`, `15m`, `12h` or `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 12h or 30d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h or d)"
            ));
        }
    };
    value
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn zero_config_defaults() {
        let config = Config::from_toml("", &env(&[])).unwrap();
        assert_eq!(config.issuer.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(config.issuer_str(), "http://127.0.0.1:8080");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert!(!config.secure_cookies());
    }

    #[test]
    fn settings_a_reload_cannot_apply_are_named() {
        let base = "issuer = \"https://a.example\"\n";
        let old = Config::from_toml(base, &env(&[])).unwrap();
        let same = Config::from_toml(
            &format!(
                "{base}[[users]]\nusername = \"ann\"\npassword = \"correct horse battery staple\"\n"
            ),
            &env(&[]),
        )
        .unwrap();
        assert!(
            old.changed_until_restart(&same).is_empty(),
            "users are reloaded"
        );
        let new = Config::from_toml(
            &format!("{base}access_token_ttl = \"5m\"\nmax_connections = 100\n[pkg_auth]\nenabled = false\n"),
            &env(&[("KEYWARD_LISTEN", "127.0.0.1:1")]),
        )
        .unwrap();
        assert_eq!(
            old.changed_until_restart(&new),
            ["listen", "access_token_ttl", "max_connections", "pkg_auth"]
        );
        let exchange = Config::from_toml(
            &format!("{base}metrics_token = \"0123456789abcdef0123456789\"\n[exchange]\nlifetime = \"5m\"\n"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            old.changed_until_restart(&exchange),
            ["metrics_token", "exchange"]
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = Config::from_toml(
            "issuer = \"https://a.example\"\nlisten = \"127.0.0.1:9000\"",
            &env(&[
                ("KEYWARD_ISSUER", "https://b.example/id"),
                ("KEYWARD_DATABASE_URL", "postgres://x/y"),
            ]),
        )
        .unwrap();
        assert_eq!(config.issuer_str(), "https://b.example/id");
        assert_eq!(config.base_path(), "/id");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.database_url, "postgres://x/y");
        assert!(config.secure_cookies());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("isuer = \"x\"", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("isuer"), "{err}");
        let err = Config::from_toml(
            "[[clients]]\nclient_id = \"a\"\nredirect_uri = []",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("redirect_uri"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("issuer = \"ftp://x\"", "issuer"),
            ("access_token_ttl = \"5y\"", "access_token_ttl"),
            ("database_url = \"mysql://x\"", "database_url"),
            (
                "[[clients]]\nclient_id = \"a\"\nredirect_uris = [\"not a url\"]",
                "clients[0].redirect_uris",
            ),
            (
                "[[clients]]\nclient_id = \"a\"\ngrant_types = [\"password\"]",
                "clients[0].grant_types",
            ),
            (
                "[[clients]]\nclient_id = \"a\"\ngrant_types = [\"client_credentials\"]",
                "clients[0].grant_types",
            ),
            ("[[users]]\nusername = \"bob\"", "users[0].password"),
            ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies[0]"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text, &env(&[])).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// Every bounded setting, as keyward.example.toml and the README state its range:
    /// its least and most values are accepted, one second (or one) beyond either end is
    /// refused with an error naming the key.
    #[test]
    fn each_range_limit_is_enforced_at_its_edges() {
        let durations: [(&str, u64, u64); 8] = [
            ("access_token_ttl", 10, 86_400),
            ("id_token_ttl", 10, 86_400),
            ("authorization_code_ttl", 1, 600),
            ("login_ttl", 60, 86_400),
            ("device_code_ttl", 1, 3600),
            ("device_poll_interval", 1, 60),
            ("purge_interval", 1, 86_400),
            ("http_read_timeout", 1, 300),
        ];
        let parse = |line: String| Config::from_toml(&line, &env(&[]));
        for (key, least, most) in durations {
            for ok in [least, most] {
                parse(format!("{key} = \"{ok}s\""))
                    .unwrap_or_else(|e| panic!("{key} = {ok}s refused: {e}"));
            }
            for bad in [least - 1, most + 1] {
                let err = parse(format!("{key} = \"{bad}s\""))
                    .err()
                    .unwrap_or_else(|| panic!("{key} = {bad}s accepted"));
                assert!(err.to_string().contains(key), "{key} = {bad}s: {err}");
            }
        }
        for (key, least) in [
            ("max_connections", 16),
            ("unauthenticated_writes_per_minute", 1),
        ] {
            parse(format!("{key} = {least}")).unwrap_or_else(|e| panic!("{key}: {e}"));
            let err = parse(format!("{key} = {}", least - 1))
                .err()
                .unwrap_or_else(|| panic!("{key} = {} accepted", least - 1));
            assert!(err.to_string().contains(key), "{err}");
        }
        parse(format!("metrics_token = \"{}\"", "t".repeat(16))).unwrap();
        let err = parse(format!("metrics_token = \"{}\"", "t".repeat(15)))
            .expect_err("a 15-character metrics token accepted");
        assert!(err.to_string().contains("metrics_token"), "{err}");
        assert!(
            !err.to_string().contains("ttttt"),
            "the token is not echoed: {err}"
        );
    }

    #[test]
    fn the_example_file_is_valid_and_matches_the_defaults() {
        let example =
            Config::from_toml(include_str!("../../../keyward.example.toml"), &env(&[])).unwrap();
        let defaults = Config::from_toml("", &env(&[])).unwrap();
        assert_eq!(example.issuer, defaults.issuer);
        assert_eq!(example.listen, defaults.listen);
        assert_eq!(example.database_url, defaults.database_url);
        assert_eq!(example.durability, defaults.durability);
        assert_eq!(defaults.durability, Durability::Normal);
        let full = Config::from_toml("durability = \"full\"", &env(&[])).unwrap();
        assert_eq!(full.durability, Durability::Full);
        assert!(Config::from_toml("durability = \"fsync\"", &env(&[])).is_err());
        assert_eq!(example.log_format, defaults.log_format);
        assert_eq!(defaults.log_format, LogFormat::Text);
        let json = Config::from_toml("log_format = \"json\"", &env(&[])).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let text = Config::from_toml(
            "log_format = \"json\"",
            &env(&[("KEYWARD_LOG_FORMAT", "text")]),
        )
        .unwrap();
        assert_eq!(text.log_format, LogFormat::Text, "the environment wins");
        assert!(Config::from_toml("log_format = \"xml\"", &env(&[])).is_err());
        let err = Config::from_toml("", &env(&[("KEYWARD_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("KEYWARD_LOG_FORMAT"), "{err}");
        for (a, b) in [
            (example.access_token_ttl, defaults.access_token_ttl),
            (example.id_token_ttl, defaults.id_token_ttl),
            (example.refresh_token_ttl, defaults.refresh_token_ttl),
            (example.session_ttl, defaults.session_ttl),
            (example.code_ttl, defaults.code_ttl),
            (example.login_ttl, defaults.login_ttl),
            (example.device_code_ttl, defaults.device_code_ttl),
            (example.device_poll_interval, defaults.device_poll_interval),
            (example.groups_max_age, defaults.groups_max_age),
            (example.purge_interval, defaults.purge_interval),
            (example.http_read_timeout, defaults.http_read_timeout),
            (example.exchange.lifetime, defaults.exchange.lifetime),
        ] {
            assert_eq!(a, b);
        }
        assert_eq!(
            example.unauthenticated_writes_per_minute,
            defaults.unauthenticated_writes_per_minute
        );
        assert_eq!(example.max_connections, defaults.max_connections);
        assert_eq!(example.clients.len(), 1);
        assert_eq!(example.users.len(), 1);
        let types: Vec<_> = example
            .connectors
            .iter()
            .map(|c| c.kind.type_name())
            .collect();
        assert_eq!(types, ["oidc", "github", "email", "password"]);
        assert_eq!(defaults.connectors.len(), 1, "the password connector");
        assert_eq!(example.exchange.audiences.len(), 1);
        assert_eq!(example.exchange.policies.len(), 1);
        assert_eq!(example.exchange.trusted_issuers.len(), 1);
    }

    /// `[exchange]`, `[[audiences]]` and `[[policies]]` are checked at start, each
    /// error naming its key.
    #[test]
    fn exchange_settings_are_validated() {
        let ok = Config::from_toml(
            "[exchange]\nlifetime = \"10s\"\n[[audiences]]\nid = \"q\"\nmax_lifetime = \"1m\"\n\
             [[policies]]\nsubjects = [\"user:a\", \"trusted:gha:acme/x:main\"]\nscopes = [\"q:*\"]",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(ok.exchange.lifetime.as_secs(), 10);
        assert_eq!(
            ok.exchange
                .audience("q")
                .unwrap()
                .max_lifetime
                .unwrap()
                .as_secs(),
            60
        );
        for (text, key) in [
            ("[exchange]\nlifetime = \"9s\"", "exchange.lifetime"),
            ("[exchange]\nlifetime = \"25h\"", "exchange.lifetime"),
            ("[[audiences]]\nid = \"\"", "audiences[0].id"),
            ("[[audiences]]\nid = \"a b\"", "audiences[0].id"),
            (
                "[[audiences]]\nid = \"q\"\n[[audiences]]\nid = \"q\"",
                "audiences[1].id",
            ),
            (
                "[[audiences]]\nid = \"q\"\nmax_lifetime = \"1s\"",
                "audiences[0].max_lifetime",
            ),
            (
                "[[policies]]\nsubjects = [\"alice\"]\nscopes = [\"x\"]",
                "policies[0].subjects[0]",
            ),
            (
                "[[policies]]\nsubjects = [\"robot:x\"]\nscopes = [\"x\"]",
                "policies[0].subjects[0]",
            ),
            (
                "[[policies]]\nsubjects = [\"user:a\"]\nscopes = [\"two scopes\"]",
                "policies[0].scopes[0]",
            ),
            (
                "[[policies]]\nsubjects = [\"user:a\"]\nscopes = [\"\"]",
                "policies[0].scopes[0]",
            ),
        ] {
            let err = Config::from_toml(text, &env(&[])).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// `[[trusted_issuers]]` are checked at start, each error naming its key: an id
    /// that fits in a subject name, an https issuer (http only on this machine) declared
    /// once, an audience, and at least one subject claim.
    #[test]
    fn trusted_issuers_are_validated() {
        let entry = |id: &str, issuer: &str, audience: &str, claims: &str| {
            format!(
                "[[trusted_issuers]]\nid = \"{id}\"\nissuer = \"{issuer}\"\naudience = \"{audience}\"\nsubject_claims = {claims}\n"
            )
        };
        let gha = entry(
            "gha",
            "https://token.actions.githubusercontent.com",
            "https://id.example.com",
            "[\"repository\", \"ref\"]",
        );
        let ok = Config::from_toml(
            &format!(
                "{gha}{}",
                entry("local", "http://127.0.0.1:9000", "keyward", "[\"sub\"]")
            ),
            &env(&[]),
        )
        .unwrap();
        let trusted = &ok.exchange.trusted_issuers;
        assert_eq!(trusted.len(), 2);
        assert_eq!(trusted[0].id, "gha");
        assert_eq!(
            trusted[0].issuer,
            "https://token.actions.githubusercontent.com"
        );
        assert_eq!(trusted[0].audience, "https://id.example.com");
        assert_eq!(trusted[0].subject_claims, ["repository", "ref"]);
        for (text, key) in [
            (entry("", "https://a", "x", "[\"sub\"]"), "trusted_issuers[0].id"),
            (entry("g:h", "https://a", "x", "[\"sub\"]"), "trusted_issuers[0].id"),
            (format!("{gha}{gha}"), "trusted_issuers[1].id"),
            (entry("g", "not a url", "x", "[\"sub\"]"), "trusted_issuers[0].issuer"),
            (
                entry("g", "http://ci.example.com", "x", "[\"sub\"]"),
                "trusted_issuers[0].issuer",
            ),
            (
                format!(
                    "{gha}{}",
                    entry(
                        "other",
                        "https://token.actions.githubusercontent.com",
                        "x",
                        "[\"sub\"]"
                    )
                ),
                "trusted_issuers[1].issuer",
            ),
            (entry("g", "https://a", " ", "[\"sub\"]"), "trusted_issuers[0].audience"),
            (entry("g", "https://a", "x", "[]"), "trusted_issuers[0].subject_claims"),
            (
                entry("g", "https://a", "x", "[\"sub\", \"\"]"),
                "trusted_issuers[0].subject_claims[1]",
            ),
            (
                "[[trusted_issuers]]\nid = \"g\"\nissuer = \"https://a\"\naudience = \"x\"\nsubject_claims = [\"sub\"]\njwks_uri = \"https://a/k\"".to_owned(),
                "jwks_uri",
            ),
        ] {
            let err = Config::from_toml(&text, &env(&[])).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// Attack: listening in. A plain-http issuer on another machine sends passwords,
    /// codes and tokens across the network in clear; it needs an explicit, loudly
    /// logged `insecure_http = true`.
    #[test]
    fn plain_http_elsewhere_needs_insecure_http_and_is_logged() {
        let err = Config::from_toml("issuer = \"http://id.example.com\"", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("insecure_http") && err.contains("issuer"),
            "{err}"
        );
        let config = Config::from_toml(
            "issuer = \"http://id.example.com\"\ninsecure_http = true",
            &env(&[]),
        )
        .unwrap();
        assert!(config.warnings.iter().any(|w| w.starts_with("INSECURE")));
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:9",
            "https://id.example.com",
        ] {
            let config = Config::from_toml(&format!("issuer = \"{ok}\""), &env(&[])).unwrap();
            assert!(config.warnings.is_empty(), "{ok}");
        }
    }

    #[test]
    fn cookies_are_host_prefixed_under_https_at_the_root() {
        let name = |issuer: &str| {
            Config::from_toml(&format!("issuer = \"{issuer}\""), &env(&[]))
                .unwrap()
                .cookie_name("keyward_session")
        };
        assert_eq!(name("https://id.example.com"), "__Host-keyward_session");
        assert_eq!(name("https://id.example.com/"), "__Host-keyward_session");
        // A path (cookies scoped to it) or plain http: no prefix is possible.
        assert_eq!(name("https://example.com/id"), "keyward_session");
        assert_eq!(name("http://127.0.0.1:8080"), "keyward_session");
    }

    /// Secrets can come from files (`*_file`), so that they need not sit in the
    /// configuration file: client secrets, user passwords, upstream secrets, the SMTP
    /// password, the metrics token.
    #[test]
    fn secrets_can_be_read_from_files() {
        let dir = std::env::temp_dir().join(format!(
            "keyward-secrets-{}",
            keyward_proto::secret::random_urlsafe(6)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, value: &str| {
            let path = dir.join(name);
            std::fs::write(&path, value).unwrap();
            path.display().to_string()
        };
        let client = write("client", "client-secret-from-a-file-0123\n");
        let user = write("user", "user password from a file\n");
        let upstream = write("upstream", "upstream-secret\n");
        let smtp = write("smtp", "smtp-password");
        let metrics = write("metrics", "metrics-token-from-a-file\n");
        let text = format!(
            r#"
metrics_token_file = "{metrics}"

[[clients]]
client_id = "app"
client_secret_file = "{client}"

[[users]]
username = "ann"
password_file = "{user}"

[[connectors]]
id = "gh"
type = "github"
client_id = "x"
client_secret_file = "{upstream}"

[[connectors]]
id = "mail"
type = "email"
smtp = {{ host = "smtp.example.com", username = "u", password_file = "{smtp}" }}
"#
        );
        let config = Config::from_toml(&text, &env(&[])).unwrap();
        assert_eq!(
            config.clients[0].client_secret.as_ref().unwrap().secret(),
            "client-secret-from-a-file-0123"
        );
        assert_eq!(
            config.users[0].password.as_ref().unwrap().secret(),
            "user password from a file"
        );
        assert_eq!(
            config.metrics_token.as_ref().unwrap().secret(),
            "metrics-token-from-a-file"
        );
        match &config.connectors[0].kind {
            ConnectorKind::Github(gh) => assert_eq!(gh.client_secret.secret(), "upstream-secret"),
            other => panic!("{other:?}"),
        }
        match &config.connectors[1].kind {
            ConnectorKind::Email(mail) => assert_eq!(
                mail.smtp
                    .as_ref()
                    .unwrap()
                    .password
                    .as_ref()
                    .unwrap()
                    .secret(),
                "smtp-password"
            ),
            other => panic!("{other:?}"),
        }
        // Both, or a missing file: the key is named.
        let both = format!(
            "[[clients]]\nclient_id = \"a\"\nclient_secret = \"x\"\nclient_secret_file = \"{client}\""
        );
        let err = Config::from_toml(&both, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("clients[0].client_secret_file"), "{err}");
        let missing = "[[users]]\nusername = \"a\"\npassword_file = \"/nonexistent/keyward\"";
        let err = Config::from_toml(missing, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("users[0].password_file"), "{err}");
        // The key-encryption key file.
        let short = write("short", "too short");
        let err = Config::from_toml("", &env(&[("KEYWARD_KEY_ENCRYPTION_KEY_FILE", &short)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KEYWARD_KEY_ENCRYPTION_KEY_FILE"), "{err}");
        let good = write("kek", &"k".repeat(48));
        let config =
            Config::from_toml("", &env(&[("KEYWARD_KEY_ENCRYPTION_KEY_FILE", &good)])).unwrap();
        assert!(config.at_rest_key.is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
