//! Storage: the [`Store`] trait every part of the server uses (made of one trait per
//! kind of record: [`ClientStore`], [`UserStore`], [`LoginStore`], [`SessionStore`],
//! [`GrantStore`], [`DeviceStore`], [`ThrottleStore`], [`KeyStore`], [`IdentityStore`]),
//! its two implementations
//! ([`sql::SqliteStore`], the embedded default, and [`sql::PostgresStore`], for several
//! replicas), and one contract test suite that runs against both.
//!
//! [`backup`] copies the SQLite database while it serves and puts a copy back.
//!
//! Everything a second replica would need lives here: logins in progress (also those
//! waiting at an upstream provider), sessions, codes, grants, refresh tokens, signing
//! keys, and the identities linked to each account. Lookups return
//! `Result<Option<T>, StoreError>`; a database failure is never turned into "not found".
//! Operations that must happen once (redeeming a code, rotating a refresh token) are
//! single conditional statements, so two replicas racing cannot both win.

use std::sync::Arc;

use keyward_proto::{ScopeSet, TokenHash};

use crate::config::{DatabaseKind, Durability};

use crate::domain::{
    AuditEntry, AuthCode, AuthRequest, Client, CodeRedemption, ConnectorLogin, DeviceCode, Grant,
    Identity, PasswordLink, RefreshToken, Session, StoredKey, ThrottleAttempt, ThrottlePolicy,
    Unlink, User,
};

pub mod backup;
pub mod cache;
pub mod check;
#[cfg(test)]
pub(crate) mod contract;
pub mod sql;

pub use check::{Consistency, Inconsistency};

/// A user and a client: the key of a consent, and of "revoke this application's
/// access". Named fields, so that the two ids cannot be passed the wrong way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserClient<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// The client's id.
    pub client_id: &'a str,
}

/// An identity at an upstream provider: the connector and the subject the provider
/// knows the person by (unique together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityKey<'a> {
    /// The connector's id.
    pub connector_id: &'a str,
    /// The provider's subject.
    pub subject: &'a str,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A unique key is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// A stored value could not be decoded.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A write's task ended before the write did (a panic, or the runtime shutting
    /// down); what it wrote was rolled back.
    #[error("a database write was interrupted")]
    Interrupted,
    /// The database URL is not one keyward can use.
    #[error("unsupported database URL (use sqlite:… or postgres://…)")]
    UnsupportedUrl,
    /// Creating the SQLite file's directory failed.
    #[error("cannot create database directory {path}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the database could not be reached or could not take the request (refused
    /// or lost connections, a pool that waited in vain, a server shutting down or not
    /// accepting connections; for SQLite a full disk, an I/O error or a lock held past
    /// the busy timeout): a passing condition to answer with 503, unlike a query keyward
    /// got wrong. SQLite rolls back the statement that failed, so nothing already
    /// committed is lost, and writes go on once there is room again.
    pub fn is_unavailable(&self) -> bool {
        let Self::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(db)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
            {
                // The extended result code; its low byte is the primary code.
                let code: i32 = db.code().and_then(|c| c.parse().ok()).unwrap_or_default();
                matches!(
                    code & 0xff,
                    SQLITE_BUSY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
                )
            }
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: class 08 connection exceptions, 57P01-03 shutting down
                // or starting, 53300 too many connections, and a database that does
                // not accept connections (55000 with that message).
                code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
                    || (code == "55000" && db.message().contains("accepting connections"))
            }
            _ => false,
        }
    }
}

/// SQLite's primary result codes that mean "not now" rather than "wrong"
/// (<https://www.sqlite.org/rescode.html>).
const SQLITE_BUSY: i32 = 5;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage every replica shares: every part, and what spans them.
#[async_trait::async_trait]
pub trait Store:
    ClientStore
    + UserStore
    + LoginStore
    + SessionStore
    + GrantStore
    + DeviceStore
    + ThrottleStore
    + KeyStore
    + IdentityStore
    + AuditStore
    + Send
    + Sync
    + 'static
{
    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// The clients or users the configuration file declared at its last sync, by id
    /// or username.
    async fn declared(&self, kind: DeclaredKind) -> StoreResult<Vec<String>>;
    /// Records what the configuration file declares now, replacing the last record.
    async fn set_declared(&self, kind: DeclaredKind, names: &[String]) -> StoreResult<()>;
    /// Deletes what has expired: logins in progress, sessions, codes, device codes,
    /// grants with everything that names them, refresh tokens, revocation entries,
    /// throttles quiet for a day. Returns rows deleted. Goes a few hundred rows at a
    /// time, each batch its own transaction (a grant with what names it), and pauses
    /// between batches, so that requests writing meanwhile wait for one batch at most
    /// and keep most of the writer; a large backlog takes minutes.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;
    /// Checks that the records agree with each other at `now` ([`check`]): what a write
    /// cut in half, or a lost commit, would leave behind. Reads only.
    async fn check_consistency(&self, now: i64) -> StoreResult<Consistency>;
}

/// What the configuration file declares, recorded by [`Store::set_declared`] so that
/// what is taken out of the file can be taken out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclaredKind {
    /// `[[clients]]`, by client id.
    Client,
    /// `[[users]]`, by username.
    User,
}

impl DeclaredKind {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::User => "user",
        }
    }
}

/// Registered clients. Part of [`Store`].
#[async_trait::async_trait]
pub trait ClientStore: Send + Sync {
    /// Inserts or replaces a client.
    async fn upsert_client(&self, client: &Client) -> StoreResult<()>;
    /// Inserts a client; `Conflict` when the id is taken.
    async fn insert_client(&self, client: &Client) -> StoreResult<()>;
    /// Replaces the stored client with `client` only if it is still there with the
    /// secret hash `expected` (what the caller read): false when it was removed or its
    /// secret rotated meanwhile, so that two admins' changes cannot undo each other,
    /// and a removed client is never brought back.
    async fn update_client(
        &self,
        client: &Client,
        expected: Option<&TokenHash>,
    ) -> StoreResult<bool>;
    /// A client by id.
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    /// Every client, by id.
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Removes a client and everything issued to it; false when there was none.
    async fn delete_client(&self, client_id: &str) -> StoreResult<bool>;
}

/// Local accounts: users, their passwords and state. Part of [`Store`].
#[async_trait::async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user; `Conflict` when the username is taken.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    /// Creates or updates the user with `user.username`, keeping an existing id and
    /// disabled flag. Returns the stored user.
    async fn sync_user(&self, user: &User) -> StoreResult<User>;
    /// A user by id.
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// A user by username.
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// Every user, by username.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// At most `limit` users, by username, whose username or email contains `text`
    /// (ignoring ASCII case; every user when `text` is empty).
    async fn search_users(&self, text: &str, limit: u32) -> StoreResult<Vec<User>>;
    /// How many users there are (without reading them: a store may hold millions).
    async fn count_users(&self) -> StoreResult<u64>;
    /// Sets a user's password hash; false when there is no such user.
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> StoreResult<bool>;
    /// Disables or enables a user; false when there is no such user.
    async fn set_user_disabled(&self, user_id: &str, disabled: bool) -> StoreResult<bool>;
    /// Stores a set-password link, replacing the account's earlier one.
    async fn insert_password_link(&self, link: &PasswordLink) -> StoreResult<()>;
    /// The account an unexpired set-password link is for.
    async fn password_link_user(
        &self,
        token_hash: &TokenHash,
        now: i64,
    ) -> StoreResult<Option<User>>;
    /// Takes an unexpired set-password link and, in the same transaction, sets its
    /// enabled account's password hash, ends the account's sessions and revokes its
    /// grants (whoever held the account keeps nothing), and appends `audit`. The user id,
    /// or `None` when the link was not there (used, replaced, expired) or the account
    /// is disabled; either way the link is gone.
    async fn use_password_link(
        &self,
        token_hash: &TokenHash,
        password_hash: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> StoreResult<Option<String>>;
    /// Forgets the account's set-password link, if any.
    async fn delete_password_links(&self, user_id: &str) -> StoreResult<()>;
}

/// Logins in progress: authorization requests, and sign-ins waiting at an upstream provider (or an emailed link). Part of [`Store`].
#[async_trait::async_trait]
pub trait LoginStore: Send + Sync {
    /// Stores a new authorization request.
    async fn insert_auth_request(&self, request: &AuthRequest) -> StoreResult<()>;
    /// An authorization request by id, if not expired at `now`.
    async fn get_auth_request(&self, id: &str, now: i64) -> StoreResult<Option<AuthRequest>>;
    /// Records who logged in for an authorization request (the user as a record, so
    /// that the two ids cannot be swapped).
    async fn set_auth_request_user(
        &self,
        id: &str,
        user: &User,
        auth_time: i64,
    ) -> StoreResult<bool>;
    /// Deletes an authorization request; true for the one caller that deleted it.
    async fn take_auth_request(&self, id: &str) -> StoreResult<bool>;
    /// Deletes every login in progress started in the browser with this binding-cookie
    /// hash (at sign-out: nothing that browser started may finish afterwards).
    async fn delete_browser_auth_requests(&self, browser_hash: &TokenHash) -> StoreResult<u64>;
    /// Stores a sign-in waiting for the provider (or an emailed link).
    async fn insert_connector_login(&self, login: &ConnectorLogin) -> StoreResult<()>;
    /// Takes (deletes and returns) a sign-in by the hash of its state; `None` when
    /// unknown, already taken, or expired at `now`. Exactly one caller gets it.
    async fn take_connector_login(
        &self,
        state_hash: &TokenHash,
        now: i64,
    ) -> StoreResult<Option<ConnectorLogin>>;
}

/// Browser sessions. Part of [`Store`].
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session.
    async fn insert_session(&self, session: &Session) -> StoreResult<()>;
    /// A session by cookie hash, if not expired at `now`, with its user, in one read.
    async fn get_session_with_user(
        &self,
        id_hash: &TokenHash,
        now: i64,
    ) -> StoreResult<Option<(Session, User)>>;
    /// Ends a session.
    async fn delete_session(&self, id_hash: &TokenHash) -> StoreResult<()>;
    /// Ends every session of a user.
    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64>;
    /// A user's unexpired sessions, newest first.
    async fn list_user_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<Session>>;
    /// Ends one of a user's sessions; false when the user has no such session.
    async fn delete_user_session(&self, user_id: &str, id_hash: &TokenHash) -> StoreResult<bool>;
}

/// What users authorised: consents, grants, their codes, refresh tokens and revoked access tokens. Part of [`Store`].
#[async_trait::async_trait]
pub trait GrantStore: Send + Sync {
    /// The scopes a user has approved for a client.
    async fn get_consent(&self, key: UserClient<'_>) -> StoreResult<Option<ScopeSet>>;
    /// A user and the scopes they have approved for a client, in one read; `None` when
    /// there is no such user.
    async fn get_user_with_consent(
        &self,
        key: UserClient<'_>,
    ) -> StoreResult<Option<(User, Option<ScopeSet>)>>;
    /// Records approved scopes (replacing earlier ones).
    async fn put_consent(&self, key: UserClient<'_>, scope: &ScopeSet, now: i64)
    -> StoreResult<()>;
    /// Stores a grant and the code that starts it, in one transaction.
    async fn insert_grant_with_code(&self, grant: &Grant, code: &AuthCode) -> StoreResult<()>;
    /// Stores a grant that starts with no code (a token exchange's, whose access token
    /// is issued at once).
    async fn insert_grant(&self, grant: &Grant) -> StoreResult<()>;
    /// A grant by id.
    async fn get_grant(&self, id: &str) -> StoreResult<Option<Grant>>;
    /// A grant by id with its user, in one read.
    async fn get_grant_with_user(&self, id: &str) -> StoreResult<Option<(Grant, User)>>;
    /// Revokes a grant: its refresh tokens and access tokens stop working. True for the
    /// one caller that revoked it (false when it was revoked already, or is unknown).
    async fn revoke_grant(&self, id: &str) -> StoreResult<bool>;
    /// Revokes every grant of a user.
    async fn revoke_user_grants(&self, user_id: &str) -> StoreResult<u64>;
    /// Marks a code used. Exactly one caller gets `Redeemed`.
    async fn redeem_code(&self, code_hash: &TokenHash, now: i64) -> StoreResult<CodeRedemption>;
    /// Stores a refresh token.
    async fn insert_refresh_token(&self, token: &RefreshToken) -> StoreResult<()>;
    /// A refresh token by hash.
    async fn get_refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>>;
    /// A refresh token by hash with its grant and the grant's user, in one read (the
    /// refresh grant's every check needs all three).
    async fn get_refresh_token_with_grant(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshToken, Grant, User)>>;
    /// Marks `old` rotated and stores `new`, in one transaction. False (and nothing
    /// stored) when `old` had already been rotated by someone else.
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        new: &RefreshToken,
        now: i64,
    ) -> StoreResult<bool>;
    /// Records a revoked access token id until its expiry.
    async fn revoke_jti(&self, jti: &str, expires_at: i64) -> StoreResult<()>;
    /// Whether an access token id was revoked.
    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool>;
    /// A user's grants that are neither revoked nor expired, newest first.
    async fn list_user_grants(&self, user_id: &str, now: i64) -> StoreResult<Vec<Grant>>;
    /// A user's remembered consents: client id, approved scope, when approved.
    async fn list_user_consents(&self, user_id: &str) -> StoreResult<Vec<(String, ScopeSet, i64)>>;
    /// Revokes every grant a user gave a client and forgets the consent, in one
    /// transaction. Returns the grants revoked.
    async fn revoke_user_client(&self, key: UserClient<'_>) -> StoreResult<u64>;
}

/// Device authorizations (RFC 8628). Part of [`Store`].
#[async_trait::async_trait]
pub trait DeviceStore: Send + Sync {
    /// Stores a device authorization; `Conflict` when the user code is taken.
    async fn insert_device_code(&self, code: &DeviceCode) -> StoreResult<()>;
    /// A device authorization by the hash of its device code.
    async fn get_device_code(&self, hash: &TokenHash) -> StoreResult<Option<DeviceCode>>;
    /// A pending, unexpired device authorization by its normalised user code.
    async fn find_pending_device_code(
        &self,
        user_code: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceCode>>;
    /// Records a poll at `now` of the live device authorization `hash` (issued to
    /// `client_id`, unexpired, not one claimed with a challenge), in one step: when it
    /// comes less than the interval after the previous poll, the interval grows by
    /// `slow_down_step`. Returns the authorization as it stands after the poll, and
    /// whether this poll came too soon; `None`, and nothing recorded, when there is no
    /// such authorization.
    async fn poll_device_code(
        &self,
        hash: &TokenHash,
        client_id: &str,
        now: i64,
        slow_down_step: i64,
    ) -> StoreResult<Option<(DeviceCode, bool)>>;
    /// Approves a pending device authorization and stores its grant, in one
    /// transaction. False (and nothing stored) when it was no longer pending.
    async fn approve_device_code(&self, hash: &TokenHash, grant: &Grant) -> StoreResult<bool>;
    /// Denies a pending device authorization; false when it was no longer pending.
    async fn deny_device_code(&self, hash: &TokenHash) -> StoreResult<bool>;
    /// Marks an approved device authorization collected. Exactly one caller gets true.
    async fn consume_device_code(&self, hash: &TokenHash) -> StoreResult<bool>;
}

/// Throttles (passwords, user codes, emailed links). Part of [`Store`].
#[async_trait::async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Counts an attempt against `key` under `policy`, unless the key is waiting out a
    /// delay: one atomic step, so parallel attempts cannot all slip past the check.
    /// Keys are hashes, so what a caller typed cannot grow a row.
    async fn throttle_attempt(
        &self,
        key: &TokenHash,
        policy: &ThrottlePolicy,
        now: i64,
    ) -> StoreResult<ThrottleAttempt>;
    /// Takes one counted attempt back (it turned out to be right).
    async fn throttle_undo(&self, key: &TokenHash) -> StoreResult<()>;
    /// Forgets every attempt against `key`.
    async fn throttle_clear(&self, key: &TokenHash) -> StoreResult<()>;
}

/// Where a page of the audit log starts: the entries just older than one, in the order
/// the log lists them (newest first; within a millisecond, by id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCursor {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Entries of that millisecond come after it if their id sorts below this one.
    pub id: String,
}

impl AuditCursor {
    /// Every entry at or before `at`, whatever its id (ids are URL-safe base64, which
    /// sorts below `~`).
    pub fn through(at: i64) -> Self {
        Self { at, id: "~".into() }
    }
}

/// The audit log of administrators' actions. Part of [`Store`].
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry.
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The newest `limit` entries after `before` in the log's order (newest first).
    async fn list_audit(
        &self,
        limit: u32,
        before: Option<AuditCursor>,
    ) -> StoreResult<Vec<AuditEntry>>;
}

/// Signing keys and the server's other secrets. Part of [`Store`].
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored key, newest first.
    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Stores a new key and retires the other active keys of its algorithm.
    async fn add_key_retiring_others(&self, key: &StoredKey, now: i64) -> StoreResult<()>;
    /// Deletes retired keys retired before `before`.
    async fn delete_keys_retired_before(&self, before: i64) -> StoreResult<u64>;
    /// The secret stored under `name`, storing `candidate` first when there is none, so
    /// that every replica ends up with the same one.
    async fn get_or_insert_secret(
        &self,
        name: &str,
        candidate: &str,
        now: i64,
    ) -> StoreResult<String>;
}

/// Identities at upstream providers, linked to accounts. Part of [`Store`].
#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync {
    /// The identity a provider knows as `subject`, if anyone holds it.
    async fn get_identity(&self, key: IdentityKey<'_>) -> StoreResult<Option<Identity>>;
    /// The identities linked to an account, oldest first.
    async fn list_identities(&self, user_id: &str) -> StoreResult<Vec<Identity>>;
    /// Links an identity to its account; `Conflict` when someone already holds it.
    async fn insert_identity(&self, identity: &Identity) -> StoreResult<()>;
    /// Creates an account with its first identity, in one transaction; `Conflict` when
    /// the username or the identity is taken.
    async fn insert_user_with_identity(&self, user: &User, identity: &Identity) -> StoreResult<()>;
    /// Records what the provider said at this sign-in (email, name, username, groups,
    /// time). False when the identity is gone.
    async fn update_identity(&self, identity: &Identity) -> StoreResult<bool>;
    /// Unlinks an identity from an account, unless it is the account's last way to sign
    /// in (its last identity, and no password, or passwords do not count).
    async fn delete_identity(
        &self,
        user_id: &str,
        identity: IdentityKey<'_>,
        password_counts: bool,
    ) -> StoreResult<Unlink>;
    /// The users whose verified address is `email` (compared without case).
    async fn find_users_by_verified_email(&self, email: &str) -> StoreResult<Vec<User>>;
}

/// Opens the store named by a database URL, creating the SQLite file (and its
/// directory) when missing, and runs the migrations; commits as durable as the default
/// [`Durability`].
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, Durability::default()).await
}

/// Like [`open`], with commits as durable as `durability` says.
pub async fn open_with(url: &str, durability: Durability) -> StoreResult<Arc<dyn Store>> {
    match DatabaseKind::of(url) {
        Some(DatabaseKind::Sqlite) => Ok(Arc::new(sql::SqliteStore::open(url, durability).await?)),
        Some(DatabaseKind::Postgres) => {
            Ok(Arc::new(sql::PostgresStore::open(url, durability).await?))
        }
        None => Err(StoreError::UnsupportedUrl),
    }
}
