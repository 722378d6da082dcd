//! The SQL implementations of [`Store`]: SQLite (embedded, WAL) and PostgreSQL.
//!
//! Both run the same statements: the schema in `migrations/` uses only types and syntax
//! the two share (`BIGINT`, `BOOLEAN`, `TEXT`, `ON CONFLICT`, `RETURNING`, `$n`
//! parameters). The `sql_store!` macro writes the `Store` impl once for each driver, so
//! the two cannot drift apart; what differs (connecting, locking for migrations, and
//! the two writes of two statements each that `OneTrip` sends as one) is written per
//! driver beside it.
//!
//! Each store has a `pool` for reads and a `writer` for statements that write. On
//! SQLite the writer is one connection: SQLite lets one writer in at a time, and
//! writers queuing for the pool wait without cost, where writers racing for the file
//! lock would sleep in SQLite's busy handler (milliseconds each time, the latency
//! tail under load). Readers use their own read-only connections and, in WAL mode,
//! never wait for the writer. On PostgreSQL both are the same pool.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use keyward_proto::{ScopeSet, TokenHash};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::cache::{self, ClientCache};
use super::check;
use super::{
    AuditCursor, AuditStore, ClientStore, Consistency, DeclaredKind, DeviceStore, GrantStore,
    IdentityKey, IdentityStore, KeyStore, LoginStore, SessionStore, Store, StoreError, StoreResult,
    ThrottleStore, UserClient, UserStore,
};
use crate::config::Durability;
use crate::domain::SigningAlg;
use crate::domain::{
    AuditEntry, AuthCode, AuthRequest, Client, ClientState, CodeFlow, CodeRedemption,
    ConnectorLogin, ConnectorPurpose, DeviceCode, DeviceStatus, Grant, Identity, LoginKind,
    PasswordLink, PreviousSecret, RefreshToken, ResponseMode, Session, StoredKey, ThrottleAttempt,
    ThrottlePolicy, Unlink, User,
};

/// The schema, in order; each entry runs once per database.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_initial.sql")),
    (2, include_str!("../../migrations/0002_device.sql")),
    (3, include_str!("../../migrations/0003_pkg_challenge.sql")),
    (4, include_str!("../../migrations/0004_connectors.sql")),
    (5, include_str!("../../migrations/0005_throttles.sql")),
    (6, include_str!("../../migrations/0006_introspect.sql")),
    (
        7,
        include_str!("../../migrations/0007_groups_confirmed.sql"),
    ),
    (8, include_str!("../../migrations/0008_state_bytes.sql")),
    (9, include_str!("../../migrations/0009_change_counters.sql")),
    (10, include_str!("../../migrations/0010_device_poll.sql")),
    (11, include_str!("../../migrations/0011_expiry_indexes.sql")),
    (
        12,
        include_str!("../../migrations/0012_config_declared.sql"),
    ),
    (13, include_str!("../../migrations/0013_audit_log.sql")),
    (
        14,
        include_str!("../../migrations/0014_previous_secret.sql"),
    ),
    (15, include_str!("../../migrations/0015_password_links.sql")),
];

/// `text` for a `LIKE … ESCAPE '\'` pattern: its `%`, `_` and `\` match themselves.
fn like_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Rows a purge deletes per statement (of grants: per transaction, with what names
/// them). A batch takes a few milliseconds, which is the most a request arriving during
/// a purge waits for the writer.
const PURGE_BATCH: u16 = 200;

/// After each batch a purge rests this many times as long as the batch took, so that
/// it takes at most a third of the writer's time (and of a core) from the requests: a
/// backlog of a million expired grants, whose keys are random and so touch a page
/// each, takes minutes rather than stalling every write for a minute.
const PURGE_REST: u32 = 2;

/// Waits after a purge's batch that began at `began` (see [`PURGE_REST`]).
async fn rest_after_batch(began: std::time::Instant) {
    tokio::time::sleep(began.elapsed() * PURGE_REST).await;
}

/// `$first, $first+1, …`: `n` numbered parameters, for an `IN (…)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The embedded SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Read-only connections.
    pool: SqlitePool,
    /// The one connection that writes.
    writer: SqlitePool,
    /// Keeps the background checkpointer running while the store lives.
    _checkpoints: Arc<Checkpointer>,
    /// The registered clients, in memory.
    clients: Arc<ClientCache>,
}

/// Creates the database's directory, readable by keyward's user only (0700), when it
/// does not exist; an existing directory is left as its owner made it.
pub(super) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the database file with mode 0600 when it does not exist, before SQLite
/// creates it with the process's umask: it holds password hashes, and signing keys.
fn create_private_file(file: &std::path::Path) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // Exists already, or cannot be made: SQLite reports what matters when it opens it.
    let _ = options.open(file);
}

/// Takes group and other permissions off `path`, if it exists.
fn make_private(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the database file private");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Copies the write-ahead log into the database file every [`CHECKPOINT_EVERY`], on a
/// connection of its own, so that no commit waits for a checkpoint's `fsync` (with
/// SQLite's automatic checkpoints, every thousandth page written makes one commit
/// slow). The log only starts over once it is fully copied while nobody writes, which
/// under steady writes never happens by itself: when it passes [`RESTART_AFTER_FRAMES`],
/// the checkpointer takes the writer connection between two writes and checkpoints
/// there (little is left to copy by then), so that the next write starts the log over.
/// Nothing waits on a lock: readers are never blocked, and writers queue for the pool.
/// Stops when the store is dropped. Should it fall behind (a starved task on a loaded
/// machine), the writer's own automatic checkpoint at [`BACKSTOP_FRAMES`] bounds the
/// log anyway, at the cost of one slow commit.
#[derive(Debug)]
struct Checkpointer {
    _alive: tokio::sync::oneshot::Sender<()>,
}

/// How long a request waits for a PostgreSQL connection before it is answered 503
/// `temporarily_unavailable`. While the database is away (stopped, restarting, out of
/// reach) a new connection is refused and sqlx tries again until this deadline; a short
/// one makes requests fail fast instead of hanging, and `/readyz` answer 503 within it.
/// Under normal load a connection is free within milliseconds (16 per replica).
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the write-ahead log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The log size (in 4 KiB pages) past which the checkpointer makes it start over:
/// 16 MiB.
const RESTART_AFTER_FRAMES: i64 = 4096;
/// The log size (in 4 KiB pages, 32 MiB) at which the writer checkpoints by itself
/// after a commit: never reached while the checkpointer keeps up, so that the log's
/// bound does not depend on a background task being scheduled.
const BACKSTOP_FRAMES: i64 = 8192;
/// How much of the log may still be uncopied for the writer to finish the job (the
/// writer waits for that copy); a log past [`RESTART_AFTER_FRAMES`] × 16 (256 MiB) is
/// made to start over whatever is left.
const LEFT_FOR_THE_WRITER: i64 = 256;

async fn checkpointer(
    options: &SqliteConnectOptions,
    writer: SqlitePool,
) -> StoreResult<Checkpointer> {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect_with(options).await?;
    let (alive, mut dropped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut dropped => break,
                _ = tick.tick() => {
                    // The answer is (busy, frames in the log, frames copied).
                    let (frames, copied) = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut conn).await {
                        Ok(row) => (row.try_get::<i64, _>(1).unwrap_or(0), row.try_get::<i64, _>(2).unwrap_or(0)),
                        Err(e) => {
                            tracing::warn!(error = %e, "WAL checkpoint failed");
                            continue;
                        }
                    };
                    let restart = frames > RESTART_AFTER_FRAMES
                        && (frames - copied <= LEFT_FOR_THE_WRITER || frames > RESTART_AFTER_FRAMES * 16);
                    if restart
                        && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&writer).await
                    {
                        tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
                    }
                }
            }
        }
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    });
    Ok(Checkpointer { _alive: alive })
}

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL takes concurrent writers.
    writer: PgPool,
    /// The registered clients, in memory.
    clients: Arc<ClientCache>,
}

impl SqliteStore {
    /// Opens (creating when missing) the SQLite database at `url` and migrates it. The
    /// write-ahead log is synced at each commit with [`Durability::Full`], at each
    /// checkpoint otherwise.
    pub async fn open(url: &str, durability: Durability) -> StoreResult<Self> {
        let synchronous = match durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let file = options.get_filename().to_owned();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        create_private_file(&file);
        // An embedded database cannot drop a connection: a ping before every query would
        // only add a round trip to its worker thread.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", BACKSTOP_FRAMES.to_string()),
            )
            .await?;
        let checkpoints = Arc::new(checkpointer(&options, writer.clone()).await?);
        let store = Self {
            pool: writer.clone(),
            writer,
            _checkpoints: checkpoints,
            clients: Arc::new(ClientCache::default()),
        };
        store.migrate().await?;
        // SQLite gives its -wal and -shm files the database file's mode; an older
        // database made with a looser one is tightened (keyward owns these files).
        for suffix in ["", "-wal", "-shm"] {
            let mut path = file.clone().into_os_string();
            path.push(suffix);
            make_private(std::path::Path::new(&path));
        }
        // Readers connect once the schema exists.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let store = Self { pool, ..store };
        store.poll_client_changes();
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await?;
        // BEGIN IMMEDIATE takes the write lock, so two processes cannot both migrate.
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = apply_migrations_sqlite(&mut conn).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::raw_sql(end).execute(&mut *conn).await?;
        result
    }
}

/// Applies the migrations not yet applied, on `$conn` (a connection or transaction of
/// either driver, which holds the migration lock), recording each in `keyward_schema`.
macro_rules! apply_migrations {
    ($conn:expr) => {{
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS keyward_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *$conn)
            .await?;
        for (version, script) in MIGRATIONS {
            let done = sqlx::query("SELECT version FROM keyward_schema WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *$conn)
                .await?;
            if done.is_none() {
                sqlx::raw_sql(script).execute(&mut *$conn).await?;
                sqlx::query("INSERT INTO keyward_schema (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(crate::domain::now())
                    .execute(&mut *$conn)
                    .await?;
            }
        }
        StoreResult::Ok(())
    }};
}

async fn apply_migrations_sqlite(conn: &mut sqlx::SqliteConnection) -> StoreResult<()> {
    apply_migrations!(conn)
}

impl PostgresStore {
    /// Connects to PostgreSQL at `url` and migrates the database. With
    /// [`Durability::Full`], keyward's connections commit with `synchronous_commit = on`
    /// even where the server's default is lower.
    pub async fn open(url: &str, durability: Durability) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(url)?;
        if durability == Durability::Full {
            options = options.options([("synchronous_commit", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        let store = Self {
            writer: pool.clone(),
            pool,
            clients: Arc::new(ClientCache::default()),
        };
        store.migrate().await?;
        store.poll_client_changes();
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        // A transaction-scoped advisory lock: replicas starting together migrate one by one.
        sqlx::query("SELECT pg_advisory_xact_lock(7389120412)")
            .execute(&mut *tx)
            .await?;
        apply_migrations!(tx)?;
        tx.commit().await?;
        Ok(())
    }
}

/// The writes that take two statements, each made one trip to the database: on SQLite,
/// several statements in one transaction sent together (`$n` numbers the parameters
/// across them); on PostgreSQL, one statement with a data-modifying `WITH`. Either way
/// all of it happens or none of it does.
trait OneTrip {
    /// Whether a failed write may leave a transaction open on its connection.
    const OPEN_TRANSACTION_ON_ERROR: bool;
    /// Inserts a grant (`$1`–`$9`, [`GRANT_COLUMNS`]) and its code (`$10`–`$17`,
    /// [`CODE_COLUMNS`]).
    fn grant_with_code() -> &'static str;
    /// Marks refresh token `$2` rotated at `$1` unless it already was, and only then
    /// inserts the new token (`$3`–`$7`); answers one row when it rotated, none when
    /// not.
    fn rotate_refresh() -> &'static str;
}

/// Counts an attempt against a throttle that is not waiting out a delay (`$1` key,
/// `$2` forget attempts before this time, `$3` now, `$4`–`$6` the policy's `free`,
/// `first_delay`, `max_delay`); answers a row when it counted. SET expressions see the
/// row as it was, so the new count and delay are spelled out where they are used; the
/// same rule as [`ThrottlePolicy::next_delay`].
static THROTTLE_UPDATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let forgotten = "throttles.last_at < $2";
    let attempts = format!("(CASE WHEN {forgotten} THEN 1 ELSE throttles.failures + 1 END)");
    let delay = format!(
        "(CASE WHEN {attempts} < $4 THEN 0 WHEN {forgotten} OR throttles.delay = 0 THEN $5
          WHEN throttles.delay * 2 > $6 THEN $6 ELSE throttles.delay * 2 END)"
    );
    format!(
        "UPDATE throttles SET failures = {attempts}, delay = {delay}, blocked_until = $3 + {delay}, last_at = $3
         WHERE key = $1 AND blocked_until <= $3 RETURNING failures"
    )
});

/// The new refresh token's columns, in the order of `$3`–`$7` of
/// [`OneTrip::rotate_refresh`].
const REFRESH_COLUMNS: &str = "token_hash, grant_id, created_at, expires_at, rotated_at";

impl OneTrip for SqliteStore {
    const OPEN_TRANSACTION_ON_ERROR: bool = true;

    fn grant_with_code() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "BEGIN IMMEDIATE;
                 INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);
                 INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES ($10, $11, $12, $13, $14, $15, $16, $17);
                 COMMIT"
            )
        });
        &SQL
    }

    fn rotate_refresh() -> &'static str {
        // changes() counts the rows of the last INSERT, UPDATE or DELETE: first the
        // UPDATE's, then the INSERT's. (The row counts sqlx adds up are no use here:
        // SQLite reports BEGIN and COMMIT with the count of the statement before.)
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "BEGIN IMMEDIATE;
                 UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL;
                 INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) SELECT $3, $4, $5, $6, $7 WHERE changes() = 1;
                 SELECT 1 WHERE changes() = 1;
                 COMMIT"
            )
        });
        &SQL
    }
}

impl OneTrip for PostgresStore {
    const OPEN_TRANSACTION_ON_ERROR: bool = false;

    fn grant_with_code() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH g AS (INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9))
                 INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES ($10, $11, $12, $13, $14, $15, $16, $17)"
            )
        });
        &SQL
    }

    fn rotate_refresh() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH old AS (UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL RETURNING token_hash)
                 INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) SELECT $3, $4, $5, $6, $7 FROM old RETURNING 1"
            )
        });
        &SQL
    }
}

/// How a read of several queries sees one state of the database.
trait Snapshot {
    /// What starts such a read inside a transaction just begun, if anything.
    const BEGIN: Option<&'static str>;
}

impl Snapshot for SqliteStore {
    /// Any transaction: a reader of a WAL database keeps the snapshot of its first read.
    const BEGIN: Option<&'static str> = None;
}

impl Snapshot for PostgresStore {
    /// Read committed would give each statement a snapshot of its own.
    const BEGIN: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
}

/// Runs a write of several statements in a task of its own, so that a caller that
/// stops waiting (a client that hung up) cannot stop it between two statements.
async fn to_completion<T: Send + 'static>(
    write: impl Future<Output = StoreResult<T>> + Send + 'static,
) -> StoreResult<T> {
    tokio::spawn(write)
        .await
        .map_err(|_| StoreError::Interrupted)?
}

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

fn json_list(what: &'static str, text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

fn to_json(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

fn scope(what: &'static str, text: &str) -> StoreResult<ScopeSet> {
    ScopeSet::parse(text).map_err(|e| corrupt(what, e))
}

fn alg(text: &str) -> StoreResult<SigningAlg> {
    SigningAlg::parse(text).ok_or_else(|| corrupt("signing algorithm", text))
}

fn unique_violation(err: sqlx::Error, what: impl Into<String>) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.into()),
        _ => StoreError::Database(err),
    }
}

const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, redirect_uris, post_logout_redirect_uris, grant_types, scopes, skip_consent, id_token_alg, created_at, introspect, previous_secret_hash, previous_secret_until";
const USER_COLUMNS: &str =
    "id, username, email, email_verified, name, password_hash, disabled, created_at";
const AUTH_REQUEST_COLUMNS: &str = "id, client_id, redirect_uri, redirect_uri_given, scope, state_encoded, nonce, code_challenge, prompt, max_age, login_hint, browser_hash, csrf, created_at, expires_at, user_id, auth_time, device_code_hash, kind, response_mode";
const SESSION_COLUMNS: &str =
    "id_hash, user_id, auth_time, created_at, expires_at, csrf, method, user_agent, ip";
const IDENTITY_COLUMNS: &str = "connector_id, subject, user_id, email, email_verified, name, username, group_names, created_at, last_login_at, groups_confirmed_at";
const CONNECTOR_LOGIN_COLUMNS: &str = "state_hash, connector_id, auth_request_id, link_user_id, browser_hash, nonce, code_verifier, email, created_at, expires_at";
const DEVICE_COLUMNS: &str = "device_code_hash, user_code, client_id, scope, created_at, expires_at, poll_interval, last_poll_at, status, grant_id, challenge_hash";
const GRANT_COLUMNS: &str =
    "id, client_id, user_id, scope, auth_time, nonce, created_at, expires_at, revoked";
const CODE_COLUMNS: &str = "code_hash, grant_id, client_id, redirect_uri, redirect_uri_given, code_challenge, created_at, expires_at";
const KEY_COLUMNS: &str = "kid, alg, private_der, public_jwk, created_at, retired_at";
// How many columns the lists name, for reads that join two tables and decode each by
// position.
const USER_COLUMN_COUNT: usize = column_count(USER_COLUMNS);
const SESSION_COLUMN_COUNT: usize = column_count(SESSION_COLUMNS);
const GRANT_COLUMN_COUNT: usize = column_count(GRANT_COLUMNS);

/// How many columns a comma-separated list names.
const fn column_count(columns: &str) -> usize {
    let bytes = columns.as_bytes();
    let (mut i, mut count) = (0, 1);
    while i < bytes.len() {
        if bytes[i] == b',' {
            count += 1;
        }
        i += 1;
    }
    count
}

/// `columns` (a list above) prefixed with the table alias `alias`, for a join.
fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the `Store` impl and the row decoders for one sqlx driver.
macro_rules! sql_store {
    ($store:ty, $row:ty) => {
        impl $store {
            /// Starts reading the `clients` change counter for the client cache
            /// ([`cache`]), until the store is dropped.
            fn poll_client_changes(&self) {
                let pool = self.pool.clone();
                cache::spawn_poller(&self.clients, move || {
                    let pool = pool.clone();
                    async move {
                        sqlx::query_scalar::<_, i64>(cache::VERSION_SQL)
                            .fetch_one(&pool)
                            .await
                            .ok()
                    }
                });
            }

            fn client(row: &$row) -> StoreResult<Client> {
                Ok(Client {
                    client_id: row.try_get("client_id")?,
                    name: row.try_get("name")?,
                    secret_hash: row.try_get::<Option<String>, _>("secret_hash")?.map(TokenHash::from_stored),
                    redirect_uris: json_list("client redirect_uris", &row.try_get::<String, _>("redirect_uris")?)?,
                    post_logout_redirect_uris: json_list(
                        "client post_logout_redirect_uris",
                        &row.try_get::<String, _>("post_logout_redirect_uris")?,
                    )?,
                    grant_types: json_list("client grant_types", &row.try_get::<String, _>("grant_types")?)?,
                    scopes: scope("client scopes", &row.try_get::<String, _>("scopes")?)?,
                    skip_consent: row.try_get("skip_consent")?,
                    id_token_alg: alg(&row.try_get::<String, _>("id_token_alg")?)?,
                    created_at: row.try_get("created_at")?,
                    introspect: row.try_get("introspect")?,
                    previous_secret: match (
                        row.try_get::<Option<String>, _>("previous_secret_hash")?,
                        row.try_get::<Option<i64>, _>("previous_secret_until")?,
                    ) {
                        (Some(hash), Some(until)) => Some(PreviousSecret { hash: TokenHash::from_stored(hash), until }),
                        _ => None,
                    },
                })
            }

            fn user(row: &$row) -> StoreResult<User> {
                Self::user_at(row, 0)
            }

            /// A user from the [`USER_COLUMNS`] that start at column `at`.
            fn user_at(row: &$row, at: usize) -> StoreResult<User> {
                Ok(User {
                    id: row.try_get(at)?,
                    username: row.try_get(at + 1)?,
                    email: row.try_get(at + 2)?,
                    email_verified: row.try_get(at + 3)?,
                    name: row.try_get(at + 4)?,
                    password_hash: row.try_get(at + 5)?,
                    disabled: row.try_get(at + 6)?,
                    created_at: row.try_get(at + 7)?,
                })
            }

            /// A code flow's `state`: its exact bytes, or the text a row written before
            /// migration 8 kept.
            fn client_state(row: &$row) -> StoreResult<Option<ClientState>> {
                match row.try_get::<Option<String>, _>("state_encoded")? {
                    Some(encoded) => ClientState::from_encoded(&encoded)
                        .map(Some)
                        .ok_or_else(|| corrupt("auth request state", encoded)),
                    None => Ok(row
                        .try_get::<Option<String>, _>("state")?
                        .map(|text| ClientState::from_bytes(text.as_bytes()))),
                }
            }

            /// An auth request from its row: the columns of the code flow (blank for the
            /// other kinds, where the schema keeps them NOT NULL) become the kind's.
            fn auth_request(row: &$row) -> StoreResult<AuthRequest> {
                let client_id: String = row.try_get("client_id")?;
                let scope = scope("auth request scope", &row.try_get::<String, _>("scope")?)?;
                let kind = match (row.try_get::<String, _>("kind")?.as_str(), row.try_get::<Option<String>, _>("device_code_hash")?) {
                    ("authorize", None) => LoginKind::Authorize(CodeFlow {
                        client_id,
                        scope,
                        redirect_uri: row.try_get("redirect_uri")?,
                        redirect_uri_given: row.try_get("redirect_uri_given")?,
                        state: Self::client_state(row)?,
                        nonce: row.try_get("nonce")?,
                        code_challenge: row.try_get("code_challenge")?,
                        response_mode: {
                            let mode: String = row.try_get("response_mode")?;
                            ResponseMode::parse(&mode).ok_or_else(|| corrupt("auth request response_mode", mode))?
                        },
                    }),
                    ("device", Some(hash)) => LoginKind::Device {
                        client_id,
                        scope,
                        device_code_hash: TokenHash::from_stored(hash),
                    },
                    ("account", None) => LoginKind::Account,
                    ("admin", None) => LoginKind::Admin,
                    (kind, _) => return Err(corrupt("auth request kind", kind)),
                };
                Ok(AuthRequest {
                    id: row.try_get("id")?,
                    kind,
                    prompt: row.try_get("prompt")?,
                    max_age: row.try_get("max_age")?,
                    login_hint: row.try_get("login_hint")?,
                    browser_hash: TokenHash::from_stored(row.try_get("browser_hash")?),
                    csrf: row.try_get("csrf")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    user_id: row.try_get("user_id")?,
                    auth_time: row.try_get("auth_time")?,
                })
            }

            fn session(row: &$row) -> StoreResult<Session> {
                Ok(Session {
                    id_hash: TokenHash::from_stored(row.try_get(0)?),
                    user_id: row.try_get(1)?,
                    auth_time: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    expires_at: row.try_get(4)?,
                    csrf: row.try_get(5)?,
                    method: row.try_get(6)?,
                    user_agent: row.try_get(7)?,
                    ip: row.try_get(8)?,
                })
            }

            fn identity(row: &$row) -> StoreResult<Identity> {
                Ok(Identity {
                    connector_id: row.try_get("connector_id")?,
                    subject: row.try_get("subject")?,
                    user_id: row.try_get("user_id")?,
                    email: row.try_get("email")?,
                    email_verified: row.try_get("email_verified")?,
                    name: row.try_get("name")?,
                    username: row.try_get("username")?,
                    groups: json_list("identity groups", &row.try_get::<String, _>("group_names")?)?,
                    created_at: row.try_get("created_at")?,
                    last_login_at: row.try_get("last_login_at")?,
                    groups_confirmed_at: row.try_get("groups_confirmed_at")?,
                })
            }

            fn connector_login(row: &$row) -> StoreResult<ConnectorLogin> {
                let purpose = match (
                    row.try_get::<Option<String>, _>("auth_request_id")?,
                    row.try_get::<Option<String>, _>("link_user_id")?,
                ) {
                    (Some(request), None) => ConnectorPurpose::Login(request),
                    (None, Some(user)) => ConnectorPurpose::Link(user),
                    _ => return Err(corrupt("connector login purpose", "neither or both of login and link")),
                };
                Ok(ConnectorLogin {
                    state_hash: TokenHash::from_stored(row.try_get("state_hash")?),
                    connector_id: row.try_get("connector_id")?,
                    purpose,
                    browser_hash: TokenHash::from_stored(row.try_get("browser_hash")?),
                    nonce: row.try_get("nonce")?,
                    code_verifier: row.try_get("code_verifier")?,
                    email: row.try_get("email")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            }

            fn identity_query<'q>(sql: &'q str, i: &'q Identity) -> sqlx::query::Query<'q, <$row as sqlx::Row>::Database, <<$row as sqlx::Row>::Database as sqlx::Database>::Arguments<'q>> {
                sqlx::query(sql)
                    .bind(&i.connector_id)
                    .bind(&i.subject)
                    .bind(&i.user_id)
                    .bind(&i.email)
                    .bind(i.email_verified)
                    .bind(&i.name)
                    .bind(&i.username)
                    .bind(to_json(&i.groups))
                    .bind(i.created_at)
                    .bind(i.last_login_at)
                    .bind(i.groups_confirmed_at)
            }

            /// The statement that appends `entry` to the audit log.
            fn audit_query(entry: &AuditEntry) -> sqlx::query::Query<'_, <$row as sqlx::Row>::Database, <<$row as sqlx::Row>::Database as sqlx::Database>::Arguments<'_>> {
                sqlx::query("INSERT INTO audit_log (id, at, actor, action, target, address) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&entry.id)
                    .bind(entry.at)
                    .bind(&entry.actor)
                    .bind(&entry.action)
                    .bind(&entry.target)
                    .bind(&entry.address)
            }

            fn user_query<'q>(sql: &'q str, user: &'q User) -> sqlx::query::Query<'q, <$row as sqlx::Row>::Database, <<$row as sqlx::Row>::Database as sqlx::Database>::Arguments<'q>> {
                sqlx::query(sql)
                    .bind(&user.id)
                    .bind(&user.username)
                    .bind(&user.email)
                    .bind(user.email_verified)
                    .bind(&user.name)
                    .bind(&user.password_hash)
                    .bind(user.disabled)
                    .bind(user.created_at)
            }

            fn device(row: &$row) -> StoreResult<DeviceCode> {
                let status: String = row.try_get("status")?;
                Ok(DeviceCode {
                    device_code_hash: TokenHash::from_stored(row.try_get("device_code_hash")?),
                    user_code: row.try_get("user_code")?,
                    client_id: row.try_get("client_id")?,
                    scope: scope("device scope", &row.try_get::<String, _>("scope")?)?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    interval: row.try_get("poll_interval")?,
                    last_poll_at: row.try_get("last_poll_at")?,
                    status: DeviceStatus::parse(&status).ok_or_else(|| corrupt("device status", status))?,
                    grant_id: row.try_get("grant_id")?,
                    challenge_hash: row
                        .try_get::<Option<String>, _>("challenge_hash")?
                        .map(TokenHash::from_stored),
                })
            }

            /// A grant from the [`GRANT_COLUMNS`] that start at column 0.
            fn grant(row: &$row) -> StoreResult<Grant> {
                Ok(Grant {
                    id: row.try_get(0)?,
                    client_id: row.try_get(1)?,
                    user_id: row.try_get(2)?,
                    scope: scope("grant scope", &row.try_get::<String, _>(3)?)?,
                    auth_time: row.try_get(4)?,
                    nonce: row.try_get(5)?,
                    created_at: row.try_get(6)?,
                    expires_at: row.try_get(7)?,
                    revoked: row.try_get(8)?,
                })
            }

            fn code(row: &$row) -> StoreResult<AuthCode> {
                Ok(AuthCode {
                    code_hash: TokenHash::from_stored(row.try_get("code_hash")?),
                    grant_id: row.try_get("grant_id")?,
                    client_id: row.try_get("client_id")?,
                    redirect_uri: row.try_get("redirect_uri")?,
                    redirect_uri_given: row.try_get("redirect_uri_given")?,
                    code_challenge: row.try_get("code_challenge")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            }

            fn refresh(row: &$row) -> StoreResult<RefreshToken> {
                Ok(RefreshToken {
                    token_hash: TokenHash::from_stored(row.try_get("token_hash")?),
                    grant_id: row.try_get("grant_id")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    rotated_at: row.try_get("rotated_at")?,
                })
            }

            /// A refresh token from the [`REFRESH_COLUMNS`] that start at column `at`.
            fn refresh_at(row: &$row, at: usize) -> StoreResult<RefreshToken> {
                Ok(RefreshToken {
                    token_hash: TokenHash::from_stored(row.try_get(at)?),
                    grant_id: row.try_get(at + 1)?,
                    created_at: row.try_get(at + 2)?,
                    expires_at: row.try_get(at + 3)?,
                    rotated_at: row.try_get(at + 4)?,
                })
            }

            fn key(row: &$row) -> StoreResult<StoredKey> {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    alg: alg(&row.try_get::<String, _>("alg")?)?,
                    private_der: row.try_get("private_der")?,
                    public_jwk: row.try_get("public_jwk")?,
                    created_at: row.try_get("created_at")?,
                    retired_at: row.try_get("retired_at")?,
                })
            }

            /// Deletes the rows of `table` (keyed by `key`) whose `column` is below
            /// `cutoff`, [`PURGE_BATCH`] rows per statement, so that a write arriving
            /// meanwhile waits for one batch at most, not for the whole purge.
            async fn purge_table(&self, table: &str, key: &str, column: &str, cutoff: i64) -> StoreResult<u64> {
                let sql = format!("DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)");
                let mut deleted = 0;
                loop {
                    let began = std::time::Instant::now();
                    let batch = sqlx::query(&sql)
                        .bind(cutoff)
                        .bind(i64::from(PURGE_BATCH))
                        .execute(&self.writer)
                        .await?
                        .rows_affected();
                    deleted += batch;
                    if batch < u64::from(PURGE_BATCH) {
                        return Ok(deleted);
                    }
                    rest_after_batch(began).await;
                }
            }

            async fn move_device_status(&self, hash: &TokenHash, from: DeviceStatus, to: DeviceStatus) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE device_codes SET status = $1 WHERE device_code_hash = $2 AND status = $3")
                    .bind(to.as_str())
                    .bind(hash.as_str())
                    .bind(from.as_str())
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            /// The outcome of a write of several statements ([`OneTrip`]); when it
            /// failed, the transaction it may have left open on `conn` is rolled back
            /// (on PostgreSQL, where it is one statement, there is none).
            async fn rolled_back_on_error<T>(
                conn: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
                done: Result<T, sqlx::Error>,
            ) -> Result<T, sqlx::Error> {
                if done.is_err() && <$store>::OPEN_TRANSACTION_ON_ERROR {
                    // Nothing to roll back is fine (SQLite rolled back already).
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                }
                done
            }

            fn grant_query<'q>(
                sql: &'q str,
                g: &'q Grant,
            ) -> sqlx::query::Query<
                'q,
                <$row as sqlx::Row>::Database,
                <<$row as sqlx::Row>::Database as sqlx::Database>::Arguments<'q>,
            > {
                sqlx::query(sql)
                    .bind(&g.id)
                    .bind(&g.client_id)
                    .bind(&g.user_id)
                    .bind(g.scope.to_string())
                    .bind(g.auth_time)
                    .bind(&g.nonce)
                    .bind(g.created_at)
                    .bind(g.expires_at)
                    .bind(g.revoked)
            }

            fn client_query<'q>(sql: &'q str, client: &'q Client) -> sqlx::query::Query<'q, <$row as sqlx::Row>::Database, <<$row as sqlx::Row>::Database as sqlx::Database>::Arguments<'q>> {
                sqlx::query(sql)
                    .bind(&client.client_id)
                    .bind(&client.name)
                    .bind(client.secret_hash.as_ref().map(TokenHash::as_str))
                    .bind(to_json(&client.redirect_uris))
                    .bind(to_json(&client.post_logout_redirect_uris))
                    .bind(to_json(&client.grant_types))
                    .bind(client.scopes.to_string())
                    .bind(client.skip_consent)
                    .bind(client.id_token_alg.as_str())
                    .bind(client.created_at)
                    .bind(client.introspect)
                    .bind(client.previous_secret.as_ref().map(|p| p.hash.as_str()))
                    .bind(client.previous_secret.as_ref().map(|p| p.until))
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn declared(&self, kind: DeclaredKind) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT name FROM config_declared WHERE kind = $1 ORDER BY name")
                    .bind(kind.as_str())
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn set_declared(&self, kind: DeclaredKind, names: &[String]) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM config_declared WHERE kind = $1")
                    .bind(kind.as_str())
                    .execute(&mut *tx)
                    .await?;
                for name in names {
                    sqlx::query("INSERT INTO config_declared (kind, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(kind.as_str())
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
                let day_ago = now - 86_400;
                // Expired device codes stay an hour, so that a device polling late hears
                // expired_token (RFC 8628 §3.5) rather than that its code is unknown.
                let hour_ago = now - 3600;
                let mut deleted = 0;
                // Refresh tokens past their own expiry first: they name a grant, but
                // nothing names them.
                deleted += self.purge_table("refresh_tokens", "token_hash", "expires_at", now).await?;
                // Expired grants, a batch at a time, each with what names it in the same
                // transaction, so that nothing names a grant that is gone (a code
                // presented again then is unknown rather than replayed: refused either
                // way).
                loop {
                    let began = std::time::Instant::now();
                    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM grants WHERE expires_at < $1 LIMIT $2")
                        .bind(now)
                        .bind(i64::from(PURGE_BATCH))
                        .fetch_all(&self.pool)
                        .await?;
                    if ids.is_empty() {
                        break;
                    }
                    let listed = placeholders(2, ids.len());
                    let mut tx = self.writer.begin().await?;
                    // Still expired when the batch is deleted: the condition is checked
                    // again under the write.
                    for table in ["refresh_tokens", "auth_codes", "device_codes"] {
                        let sql = format!("DELETE FROM {table} WHERE grant_id IN (SELECT id FROM grants WHERE expires_at < $1 AND id IN ({listed}))");
                        let mut query = sqlx::query(&sql).bind(now);
                        for id in &ids {
                            query = query.bind(id);
                        }
                        deleted += query.execute(&mut *tx).await?.rows_affected();
                    }
                    let sql = format!("DELETE FROM grants WHERE expires_at < $1 AND id IN ({listed})");
                    let mut query = sqlx::query(&sql).bind(now);
                    for id in &ids {
                        query = query.bind(id);
                    }
                    deleted += query.execute(&mut *tx).await?.rows_affected();
                    tx.commit().await?;
                    if ids.len() < usize::from(PURGE_BATCH) {
                        break;
                    }
                    rest_after_batch(began).await;
                }
                for (table, key, column, cutoff) in [
                    ("auth_codes", "code_hash", "expires_at", day_ago),
                    ("auth_requests", "id", "expires_at", now),
                    ("sessions", "id_hash", "expires_at", now),
                    ("revoked_tokens", "jti", "expires_at", now),
                    ("device_codes", "device_code_hash", "expires_at", hour_ago),
                    ("connector_logins", "state_hash", "expires_at", now),
                    ("password_links", "token_hash", "expires_at", now),
                    ("throttles", "key", "last_at", day_ago),
                ] {
                    deleted += self.purge_table(table, key, column, cutoff).await?;
                }
                Ok(deleted)
            }

            async fn check_consistency(&self, now: i64) -> StoreResult<Consistency> {
                // One snapshot for every query: on SQLite a read transaction, on
                // PostgreSQL a repeatable-read one, so that writes landing meanwhile
                // (a live server's) cannot make the queries disagree with each other.
                let mut tx = self.pool.begin().await?;
                if let Some(sql) = <$store as Snapshot>::BEGIN {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                let counts = sqlx::query(check::COUNTS).fetch_one(&mut *tx).await?;
                let count = |i: usize| -> StoreResult<u64> { Ok(u64::try_from(counts.try_get::<i64, _>(i)?).unwrap_or(0)) };
                let checked = check::Checked {
                    users: count(0)?,
                    clients: count(1)?,
                    grants: count(2)?,
                    refresh_tokens: count(3)?,
                    auth_codes: count(4)?,
                    device_codes: count(5)?,
                };
                let mut problems = Vec::new();
                for query in check::QUERIES.iter() {
                    let mut q = sqlx::query(&query.sql);
                    if query.takes_now {
                        q = q.bind(now);
                    }
                    for row in q.fetch_all(&mut *tx).await? {
                        problems.push(query.finding.of(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
                    }
                }
                tx.rollback().await?;
                Ok(Consistency { checked, problems })
            }
        }

        #[async_trait::async_trait]
        impl ClientStore for $store {
            async fn upsert_client(&self, client: &Client) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash,
                     redirect_uris = excluded.redirect_uris, post_logout_redirect_uris = excluded.post_logout_redirect_uris,
                     grant_types = excluded.grant_types, scopes = excluded.scopes, skip_consent = excluded.skip_consent,
                     id_token_alg = excluded.id_token_alg, introspect = excluded.introspect,
                     previous_secret_hash = excluded.previous_secret_hash, previous_secret_until = excluded.previous_secret_until"
                );
                Self::client_query(&sql, client).execute(&mut *tx).await?;
                sqlx::query(cache::BUMP_SQL).execute(&mut *tx).await?;
                tx.commit().await?;
                self.clients.clear();
                Ok(())
            }

            async fn insert_client(&self, client: &Client) -> StoreResult<()> {
                let sql = format!("INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)");
                let mut tx = self.writer.begin().await?;
                Self::client_query(&sql, client)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| unique_violation(e, format!("client {:?}", client.client_id)))?;
                sqlx::query(cache::BUMP_SQL).execute(&mut *tx).await?;
                tx.commit().await?;
                self.clients.clear();
                Ok(())
            }

            async fn update_client(&self, client: &Client, expected: Option<&TokenHash>) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let sql = "UPDATE clients SET name = $2, secret_hash = $3, redirect_uris = $4,
                     post_logout_redirect_uris = $5, grant_types = $6, scopes = $7, skip_consent = $8,
                     id_token_alg = $9, created_at = $10, introspect = $11, previous_secret_hash = $12,
                     previous_secret_until = $13
                     WHERE client_id = $1 AND (secret_hash = $14 OR (secret_hash IS NULL AND $14 IS NULL))";
                let updated = Self::client_query(sql, client)
                    .bind(expected.map(TokenHash::as_str))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(cache::BUMP_SQL).execute(&mut *tx).await?;
                tx.commit().await?;
                self.clients.clear();
                Ok(updated == 1)
            }

            async fn get_client(&self, client_id: &str) -> StoreResult<Option<Client>> {
                if let Some(client) = self.clients.get(client_id) {
                    return Ok(Some(client));
                }
                let generation = self.clients.generation();
                let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1");
                let row = sqlx::query(&sql).bind(client_id).fetch_optional(&self.pool).await?;
                let client = row.as_ref().map(Self::client).transpose()?;
                if let Some(client) = &client {
                    self.clients.put(generation, client);
                }
                Ok(client)
            }

            async fn list_clients(&self) -> StoreResult<Vec<Client>> {
                let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY client_id");
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                rows.iter().map(Self::client).collect()
            }

            async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                for sql in [
                    "DELETE FROM refresh_tokens WHERE grant_id IN (SELECT id FROM grants WHERE client_id = $1)",
                    "DELETE FROM grants WHERE client_id = $1",
                    "DELETE FROM auth_codes WHERE client_id = $1",
                    "DELETE FROM auth_requests WHERE client_id = $1",
                    "DELETE FROM device_codes WHERE client_id = $1",
                    "DELETE FROM consents WHERE client_id = $1",
                ] {
                    sqlx::query(sql).bind(client_id).execute(&mut *tx).await?;
                }
                let deleted = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(cache::BUMP_SQL).execute(&mut *tx).await?;
                tx.commit().await?;
                self.clients.clear();
                Ok(deleted > 0)
            }
        }

        #[async_trait::async_trait]
        impl UserStore for $store {
            async fn insert_user(&self, user: &User) -> StoreResult<()> {
                let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
                Self::user_query(&sql, user)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| unique_violation(e, format!("user {:?}", user.username)))?;
                Ok(())
            }

            async fn sync_user(&self, user: &User) -> StoreResult<User> {
                let sql = format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (username) DO UPDATE SET email = excluded.email, email_verified = excluded.email_verified,
                     name = excluded.name, password_hash = excluded.password_hash
                     RETURNING {USER_COLUMNS}"
                );
                let row = Self::user_query(&sql, user)
                    .fetch_one(&self.writer)
                    .await?;
                Self::user(&row)
            }

            async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::user).transpose()
            }

            async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
                let row = sqlx::query(&sql).bind(username).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::user).transpose()
            }

            async fn list_users(&self) -> StoreResult<Vec<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                rows.iter().map(Self::user).collect()
            }

            async fn search_users(&self, text: &str, limit: u32) -> StoreResult<Vec<User>> {
                let pattern = format!("%{}%", like_escape(&text.to_ascii_lowercase()));
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users
                     WHERE LOWER(username) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(email, '')) LIKE $1 ESCAPE '\\'
                     ORDER BY username LIMIT $2"
                );
                let rows = sqlx::query(&sql)
                    .bind(pattern)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::user).collect()
            }

            async fn count_users(&self) -> StoreResult<u64> {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn set_password_hash(&self, user_id: &str, hash: &str) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(hash)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_password_link(&self, link: &PasswordLink) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM password_links WHERE user_id = $1")
                    .bind(&link.user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO password_links (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(link.token_hash.as_str())
                    .bind(&link.user_id)
                    .bind(link.created_at)
                    .bind(link.expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn password_link_user(&self, token_hash: &TokenHash, now: i64) -> StoreResult<Option<User>> {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!(
                    "SELECT {} FROM password_links l JOIN users u ON u.id = l.user_id WHERE l.token_hash = $1 AND l.expires_at > $2",
                    qualified("u", USER_COLUMNS),
                ));
                let row = sqlx::query(&SQL).bind(token_hash.as_str()).bind(now).fetch_optional(&self.pool).await?;
                row.map(|row| Self::user_at(&row, 0)).transpose()
            }

            async fn use_password_link(&self, token_hash: &TokenHash, password_hash: &str, now: i64, audit: &AuditEntry) -> StoreResult<Option<String>> {
                let mut tx = self.writer.begin().await?;
                let user_id: Option<String> = sqlx::query_scalar(
                    "DELETE FROM password_links WHERE token_hash = $1 AND expires_at > $2 RETURNING user_id",
                )
                .bind(token_hash.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(user_id) = user_id else {
                    return Ok(None);
                };
                let set = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND NOT disabled")
                    .bind(password_hash)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await?;
                if set.rows_affected() == 0 {
                    // The account was disabled (or is gone) since the link was made:
                    // the link is spent, the password unchanged.
                    tx.commit().await?;
                    return Ok(None);
                }
                sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(&user_id).execute(&mut *tx).await?;
                sqlx::query("UPDATE grants SET revoked = $1 WHERE user_id = $2 AND revoked = $3")
                    .bind(true)
                    .bind(&user_id)
                    .bind(false)
                    .execute(&mut *tx)
                    .await?;
                Self::audit_query(audit).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(user_id))
            }

            async fn delete_password_links(&self, user_id: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM password_links WHERE user_id = $1").bind(user_id).execute(&self.writer).await?;
                Ok(())
            }

            async fn set_user_disabled(&self, user_id: &str, disabled: bool) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
                    .bind(disabled)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl LoginStore for $store {
            async fn insert_auth_request(&self, r: &AuthRequest) -> StoreResult<()> {
                let sql = format!(
                    "INSERT INTO auth_requests ({AUTH_REQUEST_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
                );
                // The schema's columns, blank where the kind has no such field.
                let none = String::new();
                let empty = ScopeSet::default();
                let (kind, client_id, scope, device_code_hash, flow) = match &r.kind {
                    LoginKind::Authorize(flow) => ("authorize", &flow.client_id, &flow.scope, None, Some(flow)),
                    LoginKind::Device { client_id, scope, device_code_hash } => ("device", client_id, scope, Some(device_code_hash.as_str()), None),
                    LoginKind::Account => ("account", &none, &empty, None, None),
                    LoginKind::Admin => ("admin", &none, &empty, None, None),
                };
                sqlx::query(&sql)
                    .bind(&r.id)
                    .bind(client_id)
                    .bind(flow.map_or("", |f| f.redirect_uri.as_str()))
                    .bind(flow.is_some_and(|f| f.redirect_uri_given))
                    .bind(scope.to_string())
                    .bind(flow.and_then(|f| f.state.as_ref().map(ClientState::encoded)))
                    .bind(flow.and_then(|f| f.nonce.as_deref()))
                    .bind(flow.map_or("", |f| f.code_challenge.as_str()))
                    .bind(&r.prompt)
                    .bind(r.max_age)
                    .bind(&r.login_hint)
                    .bind(r.browser_hash.as_str())
                    .bind(&r.csrf)
                    .bind(r.created_at)
                    .bind(r.expires_at)
                    .bind(&r.user_id)
                    .bind(r.auth_time)
                    .bind(device_code_hash)
                    .bind(kind)
                    .bind(flow.map_or(ResponseMode::Query, |f| f.response_mode).as_str())
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn get_auth_request(&self, id: &str, now: i64) -> StoreResult<Option<AuthRequest>> {
                let sql = format!("SELECT {AUTH_REQUEST_COLUMNS}, state FROM auth_requests WHERE id = $1 AND expires_at > $2");
                let row = sqlx::query(&sql).bind(id).bind(now).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::auth_request).transpose()
            }

            async fn set_auth_request_user(&self, id: &str, user: &User, auth_time: i64) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE auth_requests SET user_id = $1, auth_time = $2 WHERE id = $3")
                    .bind(&user.id)
                    .bind(auth_time)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn take_auth_request(&self, id: &str) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM auth_requests WHERE id = $1").bind(id).execute(&self.writer).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_browser_auth_requests(&self, browser_hash: &TokenHash) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM auth_requests WHERE browser_hash = $1")
                    .bind(browser_hash.as_str())
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn insert_connector_login(&self, login: &ConnectorLogin) -> StoreResult<()> {
                let (request, link) = match &login.purpose {
                    ConnectorPurpose::Login(request) => (Some(request.as_str()), None),
                    ConnectorPurpose::Link(user) => (None, Some(user.as_str())),
                };
                let sql = format!("INSERT INTO connector_logins ({CONNECTOR_LOGIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
                sqlx::query(&sql)
                    .bind(login.state_hash.as_str())
                    .bind(&login.connector_id)
                    .bind(request)
                    .bind(link)
                    .bind(login.browser_hash.as_str())
                    .bind(&login.nonce)
                    .bind(&login.code_verifier)
                    .bind(&login.email)
                    .bind(login.created_at)
                    .bind(login.expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn take_connector_login(&self, state_hash: &TokenHash, now: i64) -> StoreResult<Option<ConnectorLogin>> {
                let sql = format!("DELETE FROM connector_logins WHERE state_hash = $1 RETURNING {CONNECTOR_LOGIN_COLUMNS}");
                let row = sqlx::query(&sql).bind(state_hash.as_str()).fetch_optional(&self.writer).await?;
                let login = row.as_ref().map(Self::connector_login).transpose()?;
                Ok(login.filter(|l| l.expires_at > now))
            }

        }

        #[async_trait::async_trait]
        impl SessionStore for $store {
            async fn insert_session(&self, s: &Session) -> StoreResult<()> {
                let sql = format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
                sqlx::query(&sql)
                .bind(s.id_hash.as_str())
                .bind(&s.user_id)
                .bind(s.auth_time)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(&s.csrf)
                .bind(&s.method)
                .bind(&s.user_agent)
                .bind(&s.ip)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_session_with_user(&self, id_hash: &TokenHash, now: i64) -> StoreResult<Option<(Session, User)>> {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!(
                    "SELECT {}, {} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
                    qualified("s", SESSION_COLUMNS),
                    qualified("u", USER_COLUMNS),
                ));
                let row = sqlx::query(&SQL).bind(id_hash.as_str()).bind(now).fetch_optional(&self.pool).await?;
                row.map(|row| Ok((Self::session(&row)?, Self::user_at(&row, SESSION_COLUMN_COUNT)?))).transpose()
            }

            async fn delete_session(&self, id_hash: &TokenHash) -> StoreResult<()> {
                sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash.as_str()).execute(&self.writer).await?;
                Ok(())
            }

            async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&self.writer).await?;
                Ok(done.rows_affected())
            }

            async fn list_user_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<Session>> {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC, id_hash");
                let rows = sqlx::query(&sql).bind(user_id).bind(now).fetch_all(&self.pool).await?;
                rows.iter().map(Self::session).collect()
            }

            async fn delete_user_session(&self, user_id: &str, id_hash: &TokenHash) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash = $2")
                    .bind(user_id)
                    .bind(id_hash.as_str())
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl GrantStore for $store {
            async fn get_consent(&self, key: UserClient<'_>) -> StoreResult<Option<ScopeSet>> {
                let row = sqlx::query("SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2")
                    .bind(key.user_id)
                    .bind(key.client_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| scope("consent scope", &row.try_get::<String, _>("scope")?)).transpose()
            }

            async fn get_user_with_consent(&self, key: UserClient<'_>) -> StoreResult<Option<(User, Option<ScopeSet>)>> {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!(
                    "SELECT {}, c.scope FROM users u LEFT JOIN consents c ON c.user_id = u.id AND c.client_id = $2 WHERE u.id = $1",
                    qualified("u", USER_COLUMNS),
                ));
                let Some(row) = sqlx::query(&SQL).bind(key.user_id).bind(key.client_id).fetch_optional(&self.pool).await? else {
                    return Ok(None);
                };
                let consent = row
                    .try_get::<Option<String>, _>(USER_COLUMN_COUNT)?
                    .map(|text| scope("consent scope", &text))
                    .transpose()?;
                Ok(Some((Self::user(&row)?, consent)))
            }

            async fn put_consent(&self, key: UserClient<'_>, granted: &ScopeSet, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO consents (user_id, client_id, scope, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
                )
                .bind(key.user_id)
                .bind(key.client_id)
                .bind(granted.to_string())
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn insert_grant_with_code(&self, g: &Grant, c: &AuthCode) -> StoreResult<()> {
                let (writer, g, c) = (self.writer.clone(), g.clone(), c.clone());
                to_completion(async move {
                    let mut conn = writer.acquire().await?;
                    let done = Self::grant_query(Self::grant_with_code(), &g)
                        .bind(c.code_hash.as_str())
                        .bind(&c.grant_id)
                        .bind(&c.client_id)
                        .bind(&c.redirect_uri)
                        .bind(c.redirect_uri_given)
                        .bind(&c.code_challenge)
                        .bind(c.created_at)
                        .bind(c.expires_at)
                        .execute(&mut *conn)
                        .await;
                    Self::rolled_back_on_error(&mut conn, done).await?;
                    Ok(())
                })
                .await
            }

            async fn insert_grant(&self, g: &Grant) -> StoreResult<()> {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    format!("INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                });
                let (writer, g) = (self.writer.clone(), g.clone());
                to_completion(async move {
                    Self::grant_query(&SQL, &g).execute(&writer).await?;
                    Ok(())
                })
                .await
            }

            async fn get_grant(&self, id: &str) -> StoreResult<Option<Grant>> {
                let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::grant).transpose()
            }

            async fn get_grant_with_user(&self, id: &str) -> StoreResult<Option<(Grant, User)>> {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!(
                    "SELECT {}, {} FROM grants g JOIN users u ON u.id = g.user_id WHERE g.id = $1",
                    qualified("g", GRANT_COLUMNS),
                    qualified("u", USER_COLUMNS),
                ));
                let row = sqlx::query(&SQL).bind(id).fetch_optional(&self.pool).await?;
                row.map(|row| Ok((Self::grant(&row)?, Self::user_at(&row, GRANT_COLUMN_COUNT)?))).transpose()
            }

            async fn revoke_grant(&self, id: &str) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE grants SET revoked = $1 WHERE id = $2 AND revoked = $3")
                    .bind(true)
                    .bind(id)
                    .bind(false)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn revoke_user_grants(&self, user_id: &str) -> StoreResult<u64> {
                let done = sqlx::query("UPDATE grants SET revoked = $1 WHERE user_id = $2 AND revoked = $3")
                    .bind(true)
                    .bind(user_id)
                    .bind(false)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn redeem_code(&self, code_hash: &TokenHash, now: i64) -> StoreResult<CodeRedemption> {
                let sql = format!("UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL RETURNING {CODE_COLUMNS}");
                if let Some(row) = sqlx::query(&sql).bind(now).bind(code_hash.as_str()).fetch_optional(&self.writer).await? {
                    return Ok(CodeRedemption::Redeemed(Self::code(&row)?));
                }
                let sql = format!("SELECT {CODE_COLUMNS} FROM auth_codes WHERE code_hash = $1");
                match sqlx::query(&sql).bind(code_hash.as_str()).fetch_optional(&self.writer).await? {
                    Some(row) => Ok(CodeRedemption::AlreadyUsed(Self::code(&row)?)),
                    None => Ok(CodeRedemption::NotFound),
                }
            }

            async fn insert_refresh_token(&self, t: &RefreshToken) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at, rotated_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(t.token_hash.as_str())
                .bind(&t.grant_id)
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(t.rotated_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>> {
                let row = sqlx::query(
                    "SELECT token_hash, grant_id, created_at, expires_at, rotated_at FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(hash.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::refresh).transpose()
            }

            async fn get_refresh_token_with_grant(&self, hash: &TokenHash) -> StoreResult<Option<(RefreshToken, Grant, User)>> {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!(
                    "SELECT {}, {}, {} FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id \
                     JOIN users u ON u.id = g.user_id WHERE r.token_hash = $1",
                    qualified("g", GRANT_COLUMNS),
                    qualified("u", USER_COLUMNS),
                    qualified("r", REFRESH_COLUMNS),
                ));
                let row = sqlx::query(&SQL).bind(hash.as_str()).fetch_optional(&self.pool).await?;
                row.map(|row| {
                    Ok((
                        Self::refresh_at(&row, GRANT_COLUMN_COUNT + USER_COLUMN_COUNT)?,
                        Self::grant(&row)?,
                        Self::user_at(&row, GRANT_COLUMN_COUNT)?,
                    ))
                })
                .transpose()
            }

            async fn rotate_refresh_token(&self, old: &TokenHash, new: &RefreshToken, now: i64) -> StoreResult<bool> {
                let (writer, old, new) = (self.writer.clone(), old.clone(), new.clone());
                to_completion(async move {
                    let mut conn = writer.acquire().await?;
                    let done = sqlx::query(Self::rotate_refresh())
                        .bind(now)
                        .bind(old.as_str())
                        .bind(new.token_hash.as_str())
                        .bind(&new.grant_id)
                        .bind(new.created_at)
                        .bind(new.expires_at)
                        .bind(new.rotated_at)
                        .fetch_all(&mut *conn)
                        .await;
                    Ok(!Self::rolled_back_on_error(&mut conn, done).await?.is_empty())
                })
                .await
            }

            async fn revoke_jti(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
                sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
                let row = sqlx::query("SELECT jti FROM revoked_tokens WHERE jti = $1").bind(jti).fetch_optional(&self.pool).await?;
                Ok(row.is_some())
            }

            async fn list_user_grants(&self, user_id: &str, now: i64) -> StoreResult<Vec<Grant>> {
                let sql = format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE user_id = $1 AND revoked = $2 AND expires_at > $3 ORDER BY created_at DESC, id"
                );
                let rows = sqlx::query(&sql).bind(user_id).bind(false).bind(now).fetch_all(&self.pool).await?;
                rows.iter().map(Self::grant).collect()
            }

            async fn list_user_consents(&self, user_id: &str) -> StoreResult<Vec<(String, ScopeSet, i64)>> {
                let rows = sqlx::query("SELECT client_id, scope, updated_at FROM consents WHERE user_id = $1 ORDER BY client_id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get("client_id")?,
                            scope("consent scope", &row.try_get::<String, _>("scope")?)?,
                            row.try_get("updated_at")?,
                        ))
                    })
                    .collect()
            }

            async fn revoke_user_client(&self, key: UserClient<'_>) -> StoreResult<u64> {
                let UserClient { user_id, client_id } = key;
                let mut tx = self.writer.begin().await?;
                let revoked = sqlx::query("UPDATE grants SET revoked = $1 WHERE user_id = $2 AND client_id = $3 AND revoked = $4")
                    .bind(true)
                    .bind(user_id)
                    .bind(client_id)
                    .bind(false)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user_id)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(revoked)
            }
        }

        #[async_trait::async_trait]
        impl DeviceStore for $store {
            async fn insert_device_code(&self, d: &DeviceCode) -> StoreResult<()> {
                let sql = format!("INSERT INTO device_codes ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
                sqlx::query(&sql)
                    .bind(d.device_code_hash.as_str())
                    .bind(&d.user_code)
                    .bind(&d.client_id)
                    .bind(d.scope.to_string())
                    .bind(d.created_at)
                    .bind(d.expires_at)
                    .bind(d.interval)
                    .bind(d.last_poll_at)
                    .bind(d.status.as_str())
                    .bind(&d.grant_id)
                    .bind(d.challenge_hash.as_ref().map(TokenHash::as_str))
                    .execute(&self.writer)
                    .await
                    .map_err(|e| unique_violation(e, "user code"))?;
                Ok(())
            }

            async fn get_device_code(&self, hash: &TokenHash) -> StoreResult<Option<DeviceCode>> {
                let sql = format!("SELECT {DEVICE_COLUMNS} FROM device_codes WHERE device_code_hash = $1");
                let row = sqlx::query(&sql).bind(hash.as_str()).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::device).transpose()
            }

            async fn find_pending_device_code(&self, user_code: &str, now: i64) -> StoreResult<Option<DeviceCode>> {
                let sql = format!(
                    "SELECT {DEVICE_COLUMNS} FROM device_codes WHERE user_code = $1 AND status = $2 AND expires_at > $3"
                );
                let row = sqlx::query(&sql)
                    .bind(user_code)
                    .bind(DeviceStatus::Pending.as_str())
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::device).transpose()
            }

            async fn poll_device_code(
                &self,
                hash: &TokenHash,
                client_id: &str,
                now: i64,
                slow_down_step: i64,
            ) -> StoreResult<Option<(DeviceCode, bool)>> {
                // Every SET expression sees the row as it was before this UPDATE.
                let sql = format!(
                    "UPDATE device_codes SET
                       last_poll_too_soon = (last_poll_at IS NOT NULL AND $1 - last_poll_at < poll_interval),
                       poll_interval = CASE WHEN last_poll_at IS NOT NULL AND $1 - last_poll_at < poll_interval
                                            THEN poll_interval + $2 ELSE poll_interval END,
                       last_poll_at = $1
                     WHERE device_code_hash = $3 AND client_id = $4 AND expires_at >= $1 AND challenge_hash IS NULL
                     RETURNING {DEVICE_COLUMNS}, last_poll_too_soon"
                );
                let row = sqlx::query(&sql)
                    .bind(now)
                    .bind(slow_down_step)
                    .bind(hash.as_str())
                    .bind(client_id)
                    .fetch_optional(&self.writer)
                    .await?;
                row.as_ref()
                    .map(|row| Ok((Self::device(row)?, row.try_get::<bool, _>("last_poll_too_soon")?)))
                    .transpose()
            }

            async fn approve_device_code(&self, hash: &TokenHash, g: &Grant) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query(
                    "UPDATE device_codes SET status = $1, grant_id = $2 WHERE device_code_hash = $3 AND status = $4",
                )
                .bind(DeviceStatus::Approved.as_str())
                .bind(&g.id)
                .bind(hash.as_str())
                .bind(DeviceStatus::Pending.as_str())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                let sql = format!("INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
                Self::grant_query(&sql, g).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn deny_device_code(&self, hash: &TokenHash) -> StoreResult<bool> {
                self.move_device_status(hash, DeviceStatus::Pending, DeviceStatus::Denied).await
            }

            async fn consume_device_code(&self, hash: &TokenHash) -> StoreResult<bool> {
                self.move_device_status(hash, DeviceStatus::Approved, DeviceStatus::Used).await
            }
        }

        #[async_trait::async_trait]
        impl ThrottleStore for $store {
            async fn throttle_attempt(&self, key: &TokenHash, policy: &ThrottlePolicy, now: i64) -> StoreResult<ThrottleAttempt> {
                let forget_before = now - policy.forget_after;
                for _ in 0..3 {
                    // The common case: the key exists and is not waiting out a delay.
                    let counted = sqlx::query(&THROTTLE_UPDATE)
                        .bind(key.as_str())
                        .bind(forget_before)
                        .bind(now)
                        .bind(policy.free)
                        .bind(policy.first_delay)
                        .bind(policy.max_delay)
                        .fetch_optional(&self.writer)
                        .await?;
                    if counted.is_some() {
                        return Ok(ThrottleAttempt::Allowed);
                    }
                    // A first attempt.
                    let delay = policy.next_delay(1, 0);
                    let inserted = sqlx::query(
                        "INSERT INTO throttles (key, failures, delay, last_at, blocked_until) VALUES ($1, 1, $2, $3, $4)
                         ON CONFLICT (key) DO NOTHING RETURNING failures",
                    )
                    .bind(key.as_str())
                    .bind(delay)
                    .bind(now)
                    .bind(now + delay)
                    .fetch_optional(&self.writer)
                    .await?;
                    if inserted.is_some() {
                        return Ok(ThrottleAttempt::Allowed);
                    }
                    // Waiting out a delay, unless the key changed between the two
                    // statements (then try again).
                    let row = sqlx::query("SELECT blocked_until FROM throttles WHERE key = $1")
                        .bind(key.as_str())
                        .fetch_optional(&self.writer)
                        .await?;
                    if let Some(row) = row {
                        let blocked_until: i64 = row.try_get("blocked_until")?;
                        if blocked_until > now {
                            return Ok(ThrottleAttempt::Refused { retry_after: blocked_until - now });
                        }
                    }
                }
                // Three races lost in a row: refuse this once rather than count blindly.
                Ok(ThrottleAttempt::Refused { retry_after: 1 })
            }

            async fn throttle_undo(&self, key: &TokenHash) -> StoreResult<()> {
                sqlx::query("UPDATE throttles SET failures = failures - 1 WHERE key = $1 AND failures > 0")
                    .bind(key.as_str())
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn throttle_clear(&self, key: &TokenHash) -> StoreResult<()> {
                sqlx::query("DELETE FROM throttles WHERE key = $1").bind(key.as_str()).execute(&self.writer).await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl AuditStore for $store {
            async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
                Self::audit_query(entry).execute(&self.writer).await?;
                Ok(())
            }

            async fn list_audit(&self, limit: u32, before: Option<AuditCursor>) -> StoreResult<Vec<AuditEntry>> {
                let before = before.unwrap_or_else(|| AuditCursor::through(i64::MAX));
                let rows = sqlx::query(
                    "SELECT id, at, actor, action, target, address FROM audit_log
                     WHERE at < $1 OR (at = $1 AND id < $2)
                     ORDER BY at DESC, id DESC LIMIT $3",
                )
                .bind(before.at)
                .bind(&before.id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AuditEntry {
                            id: row.try_get(0)?,
                            at: row.try_get(1)?,
                            actor: row.try_get(2)?,
                            action: row.try_get(3)?,
                            target: row.try_get(4)?,
                            address: row.try_get(5)?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl KeyStore for $store {
            async fn list_keys(&self) -> StoreResult<Vec<StoredKey>> {
                let sql = format!("SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid");
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                rows.iter().map(Self::key).collect()
            }

            async fn add_key_retiring_others(&self, key: &StoredKey, now: i64) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE alg = $2 AND retired_at IS NULL")
                    .bind(now)
                    .bind(key.alg.as_str())
                    .execute(&mut *tx)
                    .await?;
                let sql = format!("INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)");
                sqlx::query(&sql)
                    .bind(&key.kid)
                    .bind(key.alg.as_str())
                    .bind(&key.private_der)
                    .bind(&key.public_jwk)
                    .bind(key.created_at)
                    .bind(key.retired_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_keys_retired_before(&self, before: i64) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn get_or_insert_secret(&self, name: &str, candidate: &str, now: i64) -> StoreResult<String> {
                sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(candidate)
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.writer)
                    .await?;
                Ok(row.try_get("value")?)
            }
        }

        #[async_trait::async_trait]
        impl IdentityStore for $store {
            async fn get_identity(&self, key: IdentityKey<'_>) -> StoreResult<Option<Identity>> {
                let sql = format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE connector_id = $1 AND subject = $2");
                let row = sqlx::query(&sql).bind(key.connector_id).bind(key.subject).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::identity).transpose()
            }

            async fn list_identities(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
                let sql = format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE user_id = $1 ORDER BY created_at, connector_id, subject");
                let rows = sqlx::query(&sql).bind(user_id).fetch_all(&self.pool).await?;
                rows.iter().map(Self::identity).collect()
            }

            async fn insert_identity(&self, identity: &Identity) -> StoreResult<()> {
                let sql = format!("INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
                Self::identity_query(&sql, identity)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| unique_violation(e, "identity"))?;
                Ok(())
            }

            async fn insert_user_with_identity(&self, user: &User, identity: &Identity) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
                Self::user_query(&sql, user)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| unique_violation(e, format!("user {:?}", user.username)))?;
                let sql = format!("INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
                Self::identity_query(&sql, identity)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| unique_violation(e, "identity"))?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_identity(&self, identity: &Identity) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE identities SET email = $1, email_verified = $2, name = $3, username = $4, group_names = $5, last_login_at = $6,
                     groups_confirmed_at = $9 WHERE connector_id = $7 AND subject = $8",
                )
                .bind(&identity.email)
                .bind(identity.email_verified)
                .bind(&identity.name)
                .bind(&identity.username)
                .bind(to_json(&identity.groups))
                .bind(identity.last_login_at)
                .bind(&identity.connector_id)
                .bind(&identity.subject)
                .bind(identity.groups_confirmed_at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_identity(&self, user_id: &str, identity: IdentityKey<'_>, password_counts: bool) -> StoreResult<Unlink> {
                let IdentityKey { connector_id, subject } = identity;
                let mut tx = self.writer.begin().await?;
                // Writing the account row first locks it (a row lock on PostgreSQL, the
                // write lock on SQLite): two unlinks racing cannot both leave it empty.
                let Some(row) = sqlx::query("UPDATE users SET disabled = disabled WHERE id = $1 RETURNING password_hash")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    tx.rollback().await?;
                    return Ok(Unlink::NotFound);
                };
                let has_password = password_counts && row.try_get::<Option<String>, _>("password_hash")?.is_some();
                let held = sqlx::query("SELECT subject FROM identities WHERE user_id = $1 AND connector_id = $2 AND subject = $3")
                    .bind(user_id)
                    .bind(connector_id)
                    .bind(subject)
                    .fetch_optional(&mut *tx)
                    .await?;
                if held.is_none() {
                    tx.rollback().await?;
                    return Ok(Unlink::NotFound);
                }
                let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM identities WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                if count <= 1 && !has_password {
                    tx.rollback().await?;
                    return Ok(Unlink::LastSignInMethod);
                }
                sqlx::query("DELETE FROM identities WHERE user_id = $1 AND connector_id = $2 AND subject = $3")
                    .bind(user_id)
                    .bind(connector_id)
                    .bind(subject)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Unlink::Done)
            }

            async fn find_users_by_verified_email(&self, email: &str) -> StoreResult<Vec<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1) AND email_verified = $2 ORDER BY created_at, id");
                let rows = sqlx::query(&sql).bind(email).bind(true).fetch_all(&self.pool).await?;
                rows.iter().map(Self::user).collect()
            }
        }
    };
}

sql_store!(SqliteStore, sqlx::sqlite::SqliteRow);
sql_store!(PostgresStore, sqlx::postgres::PgRow);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `durability` reaches the connections that commit: SQLite's `synchronous` (1 is
    /// NORMAL, 2 FULL) on the writer and on the checkpointer's connection.
    #[tokio::test]
    async fn sqlite_durability_sets_synchronous() {
        for (durability, expected) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let dir = std::env::temp_dir().join(format!(
                "keyward-durability-{}",
                keyward_proto::secret::random_urlsafe(9)
            ));
            let url = format!("sqlite://{}/k.db", dir.display());
            let store = SqliteStore::open(&url, durability).await.unwrap();
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&store.writer)
                .await
                .unwrap();
            assert_eq!(level, expected, "{durability:?}");
            drop(store);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// A full disk is a passing condition (503), not a fault of keyward's (500): the
    /// write that did not fit fails with SQLITE_FULL, classed as unavailable, and rolls
    /// back; everything committed before stays; writes go on once there is room. The
    /// disk is made "full" with `max_page_count` on the writer's one connection (the
    /// harness, `keyward-bench outage`, fills a real tmpfs).
    #[tokio::test]
    async fn sqlite_full_disk_is_unavailable_and_loses_nothing() {
        use crate::domain::ThrottlePolicy;
        use keyward_proto::TokenHash;
        let dir = std::env::temp_dir().join(format!(
            "keyward-full-{}",
            keyward_proto::secret::random_urlsafe(9)
        ));
        let url = format!("sqlite://{}/k.db", dir.display());
        let store = SqliteStore::open(&url, Durability::Normal).await.unwrap();
        let policy = ThrottlePolicy {
            free: 5,
            first_delay: 1,
            max_delay: 60,
            forget_after: 3600,
        };
        let kept = TokenHash::of("committed before the disk filled");
        store.throttle_attempt(&kept, &policy, 1000).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&store.writer)
            .await
            .unwrap();
        // Distinct keys, each a new row, until one does not fit.
        let mut failure = None;
        for i in 0..10_000 {
            let key = TokenHash::of(&format!("filler {i}"));
            if let Err(e) = store.throttle_attempt(&key, &policy, 1000).await {
                failure = Some(e);
                break;
            }
        }
        let failure = failure.expect("the database never filled up");
        assert!(failure.is_unavailable(), "{failure:?}");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM throttles WHERE key = $1")
            .bind(kept.as_str())
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(count, 1, "a row committed before the disk filled is gone");
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&store.writer)
            .await
            .unwrap();
        store
            .throttle_attempt(&TokenHash::of("after"), &policy, 1000)
            .await
            .unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With `durability = "full"`, PostgreSQL commits synchronously even when the
    /// database's default says otherwise.
    #[tokio::test]
    async fn postgres_full_durability_overrides_the_server_default() {
        let Some(admin_url) = std::env::var("KEYWARD_TEST_DATABASE_URL").ok() else {
            assert!(std::env::var_os("KEYWARD_REQUIRE_POSTGRES").is_none());
            eprintln!("SKIPPED: KEYWARD_TEST_DATABASE_URL is not set");
            return;
        };
        let name = format!(
            "keyward_test_{}",
            keyward_proto::secret::random_urlsafe(9)
                .to_lowercase()
                .replace(['-', '_'], "x")
        );
        let admin = PgPool::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::raw_sql(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .execute(&admin)
        .await
        .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        for (durability, expected) in [(Durability::Normal, "off"), (Durability::Full, "on")] {
            let store = PostgresStore::open(url.as_str(), durability).await.unwrap();
            let level: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&store.writer)
                .await
                .unwrap();
            assert_eq!(level, expected, "{durability:?}");
            store.writer.close().await;
        }
        sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
