//! Backups of the embedded SQLite database, and putting one back.
//!
//! [`snapshot`] copies a live database while servers go on using it: `VACUUM INTO`
//! reads it in one read transaction, so the copy is the database as of one commit
//! (never half a rotation or half a grant), and in WAL mode that reader blocks no
//! writer. The copy is written beside its destination under a temporary name, checked,
//! synced and only then given its name, so a failed backup never leaves a file that
//! looks like one.
//!
//! A restore happens in two steps, so that nothing touches the database until the
//! backup has passed every check: [`stage_restore`] copies the backup next to the
//! database and checks the copy ([`Inspection`]: a SQLite file, whole, undamaged,
//! keyward's, of a schema this build migrates); [`StagedRestore::commit`] then makes
//! sure nothing has the database open, sets the database aside (renamed
//! `NAME.replaced-TIME`, never deleted) and puts the copy in its place. A staged copy
//! that is never committed is removed.
//!
//! The signing keys and the MAC key travel in the backup as they are stored: sealed
//! when `KEYWARD_KEY_ENCRYPTION_KEY_FILE` was set (a restored server then needs that
//! key file), in clear otherwise. [`Inspection::secrets`] lists them, so that the
//! caller can check a key file opens them before anything is replaced.
//!
//! PostgreSQL has its own tools for both ([`BackupError::Postgres`] says which).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};

use crate::config::DatabaseKind;

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database is PostgreSQL, whose own tools do this.
    #[error(
        "keyward backup and restore copy SQLite databases; a PostgreSQL database is saved \
         and restored with PostgreSQL's tools (see README, Backups):\n  \
         pg_dump --format=custom --file=FILE \"$DATABASE_URL\"\n  \
         pg_restore --clean --if-exists --no-owner --single-transaction --dbname=\"$DATABASE_URL\" FILE   \
         (with every keyward serve stopped)"
    )]
    Postgres,
    /// The database URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database URL (use sqlite:… or postgres://…)")]
    UnsupportedUrl,
    /// There is no database to back up.
    #[error("there is no database at {0}")]
    NoDatabase(String),
    /// The backup's destination exists.
    #[error("{0} exists; pass --force to replace it")]
    Exists(String),
    /// The backup file named is the database itself, or one of its companion files.
    #[error("{0} is the database itself (or its log): a backup is another file")]
    IsTheDatabase(String),
    /// A file could not be read, written, renamed or synced.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a SQLite database.
    #[error("{0} is not a SQLite database")]
    NotSqlite(String),
    /// The file is shorter than its header says.
    #[error("{path} is truncated: it has {actual} bytes, its header says {expected}")]
    Truncated {
        /// The file.
        path: String,
        /// The length its header gives.
        expected: u64,
        /// Its length.
        actual: u64,
    },
    /// SQLite found the file damaged.
    #[error("{path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: String,
        /// What SQLite reported.
        detail: String,
    },
    /// A SQLite database, but not keyward's.
    #[error("{0} is a SQLite database, but not keyward's (it has no keyward_schema table)")]
    NotKeyward(String),
    /// Written by a keyward newer than this one.
    #[error(
        "{path} has schema version {found}; this keyward knows versions up to {latest}: \
         restore it with the keyward that made it, or a later one"
    )]
    NewerSchema {
        /// The file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The latest this build knows.
        latest: i64,
    },
    /// Something (a running `keyward serve`) has the database open.
    #[error(
        "the database {0} is in use: stop every keyward serve (and anything else) using it, \
         then restore"
    )]
    InUse(String),
    /// SQLite failed otherwise.
    #[error("database error on {path}")]
    Database {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
}

/// A secret kept in the database (a signing key's private key, a server secret), as
/// stored: sealed or in clear. Never printed.
pub struct StoredSecret {
    /// What it is: `signing key KID` or `server secret NAME`.
    pub name: String,
    /// The stored value.
    pub value: String,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredSecret({}: [redacted])", self.name)
    }
}

/// What a keyward database file holds, as far as a backup or a restore needs to know.
#[derive(Debug)]
pub struct Inspection {
    /// The file's length in bytes.
    pub bytes: u64,
    /// The latest migration applied to it.
    pub schema_version: i64,
    /// Local and linked accounts.
    pub users: i64,
    /// Registered clients.
    pub clients: i64,
    /// Grants, revoked and expired ones included.
    pub grants: i64,
    /// Refresh tokens, rotated ones included.
    pub refresh_tokens: i64,
    /// Signing keys, retired ones included.
    pub signing_keys: i64,
    /// The signing keys' private keys and the server's secrets, as stored.
    pub secrets: Vec<StoredSecret>,
}

/// The latest schema version this build knows (and migrates to).
pub fn latest_schema_version() -> i64 {
    super::sql::MIGRATIONS
        .iter()
        .map(|(version, _)| *version)
        .max()
        .unwrap_or(0)
}

/// The SQLite file a database URL names; [`BackupError::Postgres`] for PostgreSQL.
pub fn sqlite_file(url: &str) -> Result<PathBuf, BackupError> {
    match DatabaseKind::of(url) {
        Some(DatabaseKind::Sqlite) => {
            let options =
                SqliteConnectOptions::from_str(url).map_err(|source| BackupError::Database {
                    path: url.to_owned(),
                    source,
                })?;
            Ok(options.get_filename().to_owned())
        }
        Some(DatabaseKind::Postgres) => Err(BackupError::Postgres),
        None => Err(BackupError::UnsupportedUrl),
    }
}

/// Writes an online, consistent copy of the SQLite database at `url` to `dest` (mode
/// 0600), replacing an existing `dest` only when `force`; returns what the copy holds.
pub async fn snapshot(url: &str, dest: &Path, force: bool) -> Result<Inspection, BackupError> {
    let source = sqlite_file(url)?;
    let source_name = source.display().to_string();
    if !exists(&source)? {
        return Err(BackupError::NoDatabase(source_name));
    }
    refuse_the_database(&source, dest)?;
    if !force && exists(dest)? {
        return Err(BackupError::Exists(dest.display().to_string()));
    }
    let partial = Partial::create(dest, "partial")?;
    // The copy takes as long as the database is large: not a slow statement to warn of.
    let options = SqliteConnectOptions::new()
        .filename(&source)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10))
        .disable_statement_logging();
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| sqlite_error(&source_name, e))?;
    if !has_table(&mut conn, "keyward_schema")
        .await
        .map_err(|e| sqlite_error(&source_name, e))?
    {
        return Err(BackupError::NotKeyward(source_name));
    }
    let into = partial.path.to_str().ok_or_else(|| BackupError::Io {
        what: "name",
        path: partial.shown(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
    })?;
    // One read transaction: the copy is the database as of one commit.
    sqlx::query("VACUUM INTO $1")
        .bind(into)
        .execute(&mut conn)
        .await
        .map_err(|e| sqlite_error(&source_name, e))?;
    conn.close()
        .await
        .map_err(|e| sqlite_error(&source_name, e))?;
    partial.sync()?;
    let inspection = inspect_file(&partial.path, &partial.shown()).await?;
    partial.place(dest, force)?;
    Ok(inspection)
}

/// Checks the file at `path` is a whole, undamaged keyward database of a schema this
/// build can migrate, and says what it holds. Opens it read-only and immutable: nothing
/// is written to it or beside it.
pub async fn inspect(path: &Path) -> Result<Inspection, BackupError> {
    inspect_file(path, &path.display().to_string()).await
}

/// [`inspect`], naming the file `shown` in errors.
async fn inspect_file(path: &Path, shown: &str) -> Result<Inspection, BackupError> {
    let io = |what| {
        move |source| BackupError::Io {
            what,
            path: shown.to_owned(),
            source,
        }
    };
    let mut file = std::fs::File::open(path).map_err(io("read"))?;
    let bytes = file.metadata().map_err(io("read"))?.len();
    let mut header = [0u8; 100];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(BackupError::NotSqlite(shown.to_owned()));
        }
        Err(e) => return Err(io("read")(e)),
    }
    drop(file);
    check_header(shown, &header, bytes)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let failed = |e| sqlite_error(shown, e);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(failed)?;
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(&mut conn)
        .await
        .map_err(failed)?;
    if problems.iter().any(|p| p != "ok") {
        return Err(BackupError::Damaged {
            path: shown.to_owned(),
            detail: problems.into_iter().take(3).collect::<Vec<_>>().join("; "),
        });
    }
    if !has_table(&mut conn, "keyward_schema")
        .await
        .map_err(failed)?
    {
        return Err(BackupError::NotKeyward(shown.to_owned()));
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM keyward_schema ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .map_err(failed)?;
    let schema_version = check_versions(shown, &versions)?;
    let users = count(&mut conn, "users").await.map_err(failed)?;
    let clients = count(&mut conn, "clients").await.map_err(failed)?;
    let grants = count(&mut conn, "grants").await.map_err(failed)?;
    let refresh_tokens = count(&mut conn, "refresh_tokens").await.map_err(failed)?;
    let signing_keys = count(&mut conn, "signing_keys").await.map_err(failed)?;
    let mut secrets: Vec<StoredSecret> = sqlx::query_as::<_, (String, String)>(
        "SELECT kid, private_der FROM signing_keys ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(failed)?
    .into_iter()
    .map(|(kid, value)| StoredSecret {
        name: format!("signing key {kid}"),
        value,
    })
    .collect();
    // Server secrets (the MAC key) exist from schema version 5 on.
    if has_table(&mut conn, "server_secrets")
        .await
        .map_err(failed)?
    {
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value FROM server_secrets ORDER BY 1")
                .fetch_all(&mut conn)
                .await
                .map_err(failed)?;
        secrets.extend(stored.into_iter().map(|(name, value)| StoredSecret {
            name: format!("server secret {name}"),
            value,
        }));
    }
    let _ = conn.close().await;
    Ok(Inspection {
        bytes,
        schema_version,
        users,
        clients,
        grants,
        refresh_tokens,
        signing_keys,
        secrets,
    })
}

/// Checks the first 100 bytes of a SQLite file (<https://www.sqlite.org/fileformat.html>,
/// §1.3): the magic string, a page size SQLite can have, and, when the header's page
/// count is current (its change counter matches the one it was written with), a file
/// at least that long. A file cut short at a page boundary passes SQLite's own checks
/// when the missing pages are never read; this does not.
fn check_header(shown: &str, header: &[u8; 100], len: u64) -> Result<(), BackupError> {
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if &header[..16] != b"SQLite format 3\0" {
        return Err(BackupError::NotSqlite(shown.to_owned()));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size if size >= 512 && size.is_power_of_two() => u64::from(size),
        _ => return Err(BackupError::NotSqlite(shown.to_owned())),
    };
    let truncated = |expected| BackupError::Truncated {
        path: shown.to_owned(),
        expected,
        actual: len,
    };
    let pages = u64::from(word(28));
    if pages > 0 && word(24) == word(92) && len < pages * page_size {
        return Err(truncated(pages * page_size));
    }
    if !len.is_multiple_of(page_size) {
        return Err(truncated(len.div_ceil(page_size) * page_size));
    }
    Ok(())
}

/// The schema version a database with migrations `versions` (ascending) applied is
/// at: they must be the first of this build's migrations, or newer ones.
fn check_versions(shown: &str, versions: &[i64]) -> Result<i64, BackupError> {
    let latest = latest_schema_version();
    let found = versions.last().copied().unwrap_or(0);
    if found > latest {
        return Err(BackupError::NewerSchema {
            path: shown.to_owned(),
            found,
            latest,
        });
    }
    let known: Vec<i64> = super::sql::MIGRATIONS
        .iter()
        .map(|(version, _)| *version)
        .take(versions.len())
        .collect();
    if versions.is_empty() || versions != known.as_slice() {
        return Err(BackupError::Damaged {
            path: shown.to_owned(),
            detail: format!("its keyward_schema lists versions {versions:?}"),
        });
    }
    Ok(found)
}

/// A backup copied beside the database and checked, not yet in place. Dropped without
/// [`StagedRestore::commit`], the copy is removed and the database was never touched.
#[derive(Debug)]
pub struct StagedRestore {
    staged: Partial,
    target: PathBuf,
    inspection: Inspection,
}

/// Where a restore put things.
#[derive(Debug)]
pub struct Restored {
    /// The database now holding the backup.
    pub database: PathBuf,
    /// Where the database it replaced was set aside, when there was one.
    pub replaced: Option<PathBuf>,
    /// What the backup held.
    pub inspection: Inspection,
}

/// Copies `backup` next to the SQLite database at `url` and checks the copy (what will
/// be put in place is what was checked); errors name `backup`. The database itself is
/// not touched.
pub async fn stage_restore(url: &str, backup: &Path) -> Result<StagedRestore, BackupError> {
    let target = sqlite_file(url)?;
    refuse_the_database(&target, backup)?;
    let shown = backup.display().to_string();
    let mut from = std::fs::File::open(backup).map_err(|source| BackupError::Io {
        what: "read",
        path: shown.clone(),
        source,
    })?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::sql::create_private_dir(dir).map_err(|source| BackupError::Io {
            what: "create the directory",
            path: dir.display().to_string(),
            source,
        })?;
    }
    let staged = Partial::create(&target, "restore")?;
    {
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .open(&staged.path)
            .map_err(|source| staged.io("write", source))?;
        std::io::copy(&mut from, &mut to).map_err(|source| BackupError::Io {
            what: "copy",
            path: shown.clone(),
            source,
        })?;
        to.flush().map_err(|source| staged.io("write", source))?;
    }
    staged.sync()?;
    let inspection = inspect_file(&staged.path, &shown).await?;
    Ok(StagedRestore {
        staged,
        target,
        inspection,
    })
}

impl StagedRestore {
    /// What the backup holds.
    pub fn inspection(&self) -> &Inspection {
        &self.inspection
    }

    /// Puts the staged backup in place of the database: refused while anything has
    /// the database open; otherwise the database is set aside whole (its write-ahead
    /// log folded in) as `NAME.replaced-TIME` and the backup takes its name.
    pub async fn commit(self) -> Result<Restored, BackupError> {
        let Self {
            staged,
            target,
            inspection,
        } = self;
        let shown = target.display().to_string();
        let replaced = if exists(&target)? {
            let options = SqliteConnectOptions::new()
                .filename(&target)
                .busy_timeout(Duration::from_millis(500));
            let failed = |e| match sqlite_error(&shown, e) {
                BackupError::Database { source, .. } if is_busy(&source) => {
                    BackupError::InUse(shown.clone())
                }
                other => other,
            };
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .map_err(failed)?;
            // Leaving WAL mode needs the database to itself: it fails while any other
            // connection has it open (a running keyward serve always has one), and it
            // folds the log into the file, so the database set aside is one whole file.
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
                .fetch_one(&mut conn)
                .await
                .map_err(failed)?;
            if !mode.eq_ignore_ascii_case("delete") {
                return Err(BackupError::InUse(shown.clone()));
            }
            // Nobody opens it from here until the backup has taken its name.
            sqlx::raw_sql("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .map_err(failed)?;
            let aside = aside_name(&target)?;
            std::fs::rename(&target, &aside).map_err(|source| BackupError::Io {
                what: "set aside",
                path: shown.clone(),
                source,
            })?;
            let placed = remove_leftovers(&target).and_then(|()| staged.place(&target, true));
            if placed.is_err() {
                // Put the database back where it was.
                let _ = std::fs::rename(&aside, &target);
            }
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
            let _ = conn.close().await;
            placed?;
            Some(aside)
        } else {
            remove_leftovers(&target)?;
            staged.place(&target, true)?;
            None
        };
        Ok(Restored {
            database: target,
            replaced,
            inspection,
        })
    }
}

/// Refuses `file` when it is the database `database` or one of its companion files (log,
/// index, journal): a backup written over them, or restored from them, would wreck the
/// database. Compared as the files they are, whatever the path says.
fn refuse_the_database(database: &Path, file: &Path) -> Result<(), BackupError> {
    let Ok(file_id) = std::fs::canonicalize(file) else {
        // No such file yet: not one of the database's.
        return Ok(());
    };
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut companion = database.as_os_str().to_owned();
        companion.push(suffix);
        if std::fs::canonicalize(&companion).is_ok_and(|id| id == file_id) {
            return Err(BackupError::IsTheDatabase(file.display().to_string()));
        }
    }
    Ok(())
}

/// Removes the write-ahead log, its index and a rollback journal named after `target`
/// (none once a database has left WAL mode; left over when a database file was removed
/// by hand): they must never meet the database a restore puts there.
fn remove_leftovers(target: &Path) -> Result<(), BackupError> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut leftover = target.as_os_str().to_owned();
        leftover.push(suffix);
        match std::fs::remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BackupError::Io {
                    what: "remove",
                    path: PathBuf::from(leftover).display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// A free name beside `target` for the database a restore replaces:
/// `NAME.replaced-YYYYMMDDTHHMMSSZ`.
fn aside_name(target: &Path) -> Result<PathBuf, BackupError> {
    let stamp: String = crate::domain::utc_text(crate::domain::now())
        .chars()
        .filter_map(|c| match c {
            '-' | ':' => None,
            ' ' => Some('T'),
            c => Some(c),
        })
        .collect();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0..100 {
        let suffix = if attempt == 0 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let candidate = target.with_file_name(format!("{name}.replaced-{stamp}{suffix}"));
        if !exists(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(BackupError::Exists(format!("{name}.replaced-{stamp}")))
}

/// A file being written beside its destination under a temporary name (mode 0600),
/// removed on drop unless placed.
#[derive(Debug)]
struct Partial {
    path: PathBuf,
    placed: bool,
}

impl Partial {
    /// Creates an empty `.NAME.WHAT-RANDOM` beside `dest`.
    fn create(dest: &Path, what: &str) -> Result<Self, BackupError> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keyward.db".into());
        let path = dest.with_file_name(format!(
            ".{name}.{what}-{}",
            keyward_proto::secret::random_urlsafe(6)
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path).map_err(|source| BackupError::Io {
            what: "create",
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path,
            placed: false,
        })
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> BackupError {
        BackupError::Io {
            what,
            path: self.shown(),
            source,
        }
    }

    /// Flushes the file to the disk.
    fn sync(&self) -> Result<(), BackupError> {
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|source| self.io("sync", source))
    }

    /// Gives the file its name `dest`: over an existing file only when `replace`
    /// (atomically, by rename); otherwise refused when `dest` exists, even if it
    /// appeared a moment ago.
    fn place(mut self, dest: &Path, replace: bool) -> Result<(), BackupError> {
        let shown = dest.display().to_string();
        let io = |what| {
            let shown = shown.clone();
            move |source| BackupError::Io {
                what,
                path: shown,
                source,
            }
        };
        if replace {
            std::fs::rename(&self.path, dest).map_err(io("write"))?;
        } else {
            match std::fs::hard_link(&self.path, dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(BackupError::Exists(shown));
                }
                // A file system without hard links: checked, then renamed.
                Err(_) if !exists(dest)? => {
                    std::fs::rename(&self.path, dest).map_err(io("write"))?;
                }
                Err(_) => return Err(BackupError::Exists(shown)),
            }
        }
        self.placed = true;
        sync_dir(dest)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Syncs the directory holding `file`, so that a rename in it survives a power loss.
fn sync_dir(file: &Path) -> Result<(), BackupError> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| BackupError::Io {
            what: "sync",
            path: dir.display().to_string(),
            source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn exists(path: &Path) -> Result<bool, BackupError> {
    path.try_exists().map_err(|source| BackupError::Io {
        what: "look for",
        path: path.display().to_string(),
        source,
    })
}

/// The rows of `table` (one of keyward's table names, never input).
async fn count(conn: &mut SqliteConnection, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(conn)
        .await
}

async fn has_table(conn: &mut SqliteConnection, name: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// SQLite's primary result code of an error, if it is SQLite's.
fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db.code()?.parse::<i64>().ok().map(|code| code & 0xff),
        _ => None,
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED: someone else holds a lock.
fn is_busy(error: &sqlx::Error) -> bool {
    matches!(sqlite_code(error), Some(5 | 6))
}

/// A SQLite error on the file `shown`, with "not a database" and "corrupt" told apart.
fn sqlite_error(shown: &str, source: sqlx::Error) -> BackupError {
    match sqlite_code(&source) {
        Some(26) => BackupError::NotSqlite(shown.to_owned()),
        Some(11) => BackupError::Damaged {
            path: shown.to_owned(),
            detail: source.to_string(),
        },
        _ => BackupError::Database {
            path: shown.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, pages: u32, counter: u32, valid_for: u32) -> [u8; 100] {
        let mut h = [0u8; 100];
        h[..16].copy_from_slice(b"SQLite format 3\0");
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[24..28].copy_from_slice(&counter.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h[92..96].copy_from_slice(&valid_for.to_be_bytes());
        h
    }

    #[test]
    fn headers_tell_sqlite_files_and_their_length() {
        assert!(check_header("f", &header(4096, 10, 3, 3), 40_960).is_ok());
        // 65536-byte pages are written as 1.
        assert!(check_header("f", &header(1, 2, 3, 3), 131_072).is_ok());
        assert!(matches!(
            check_header("f", &header(4096, 10, 3, 3), 36_864),
            Err(BackupError::Truncated {
                expected: 40_960,
                actual: 36_864,
                ..
            })
        ));
        // A stale page count (counter mismatch) is not believed, a partial page is
        // still caught.
        assert!(check_header("f", &header(4096, 10, 4, 3), 36_864).is_ok());
        assert!(matches!(
            check_header("f", &header(4096, 10, 4, 3), 36_000),
            Err(BackupError::Truncated { .. })
        ));
        assert!(matches!(
            check_header("f", &header(1000, 1, 1, 1), 1000),
            Err(BackupError::NotSqlite(_))
        ));
        let mut text = [b' '; 100];
        text[..5].copy_from_slice(b"hello");
        assert!(matches!(
            check_header("f", &text, 100),
            Err(BackupError::NotSqlite(_))
        ));
    }

    #[test]
    fn schema_versions_are_this_builds_first_migrations() {
        let latest = latest_schema_version();
        assert!(latest >= 7);
        assert_eq!(check_versions("f", &[1, 2, 3, 4]).unwrap(), 4);
        assert_eq!(
            check_versions("f", &(1..=latest).collect::<Vec<_>>()).unwrap(),
            latest
        );
        assert!(matches!(
            check_versions("f", &[1, 2, latest + 1]),
            Err(BackupError::NewerSchema { found, .. }) if found == latest + 1
        ));
        assert!(matches!(
            check_versions("f", &[1, 3]),
            Err(BackupError::Damaged { .. })
        ));
        assert!(matches!(
            check_versions("f", &[]),
            Err(BackupError::Damaged { .. })
        ));
    }

    /// A snapshot of an open store is a keyward database with its keys; a restore is
    /// refused while the store has the database open, and replaces it once it is
    /// closed, setting the old one aside.
    #[tokio::test]
    async fn snapshots_restore_only_into_a_closed_database() {
        let dir = std::env::temp_dir().join(format!(
            "keyward-backup-{}",
            keyward_proto::secret::random_urlsafe(9)
        ));
        let url = format!("sqlite://{}/data/keyward.db", dir.display());
        let store = crate::store::open(&url).await.unwrap();
        let key = crate::domain::StoredKey {
            kid: "k1".into(),
            alg: crate::domain::SigningAlg::ES256,
            private_der: "c2VjcmV0LWtleS1ieXRlcw==".into(),
            public_jwk: "{}".into(),
            created_at: crate::domain::now(),
            retired_at: None,
        };
        store
            .add_key_retiring_others(&key, crate::domain::now())
            .await
            .unwrap();
        let backup = dir.join("backup.db");
        let taken = snapshot(&url, &backup, false).await.unwrap();
        assert_eq!(taken.schema_version, latest_schema_version());
        assert_eq!(taken.signing_keys, 1);
        assert_eq!(taken.secrets.len(), 1);
        assert!(!format!("{taken:?}").contains(&taken.secrets[0].value));
        assert!(matches!(
            snapshot(&url, &backup, false).await,
            Err(BackupError::Exists(_))
        ));
        // Never over the database or its log, nor from them, however they are named.
        let database = dir.join("data").join("keyward.db");
        for named in [
            database.clone(),
            dir.join("data")
                .join("..")
                .join("data")
                .join("keyward.db-wal"),
        ] {
            assert!(matches!(
                snapshot(&url, &named, true).await,
                Err(BackupError::IsTheDatabase(_))
            ));
            assert!(matches!(
                stage_restore(&url, &named).await,
                Err(BackupError::IsTheDatabase(_))
            ));
        }
        assert_eq!(
            store.list_keys().await.unwrap()[0].kid,
            key.kid,
            "the database is intact"
        );
        snapshot(&url, &backup, true).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let staged = stage_restore(&url, &backup).await.unwrap();
        assert!(matches!(staged.commit().await, Err(BackupError::InUse(_))));
        drop(store);
        // The store's connections close in the background.
        let mut restored = None;
        for _ in 0..100 {
            match stage_restore(&url, &backup).await.unwrap().commit().await {
                Err(BackupError::InUse(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => {
                    restored = Some(other.unwrap());
                    break;
                }
            }
        }
        let restored = restored.expect("the database was never free");
        let aside = restored.replaced.expect("the old database set aside");
        assert!(inspect(&aside).await.is_ok());
        // Nothing staged is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
        let reopened = crate::store::open(&url).await.unwrap();
        assert_eq!(reopened.list_keys().await.unwrap()[0].kid, key.kid);
        drop(reopened);

        // Onto a new machine: the directory is made, and a log left without its
        // database never meets the backup.
        let fresh = dir.join("fresh").join("keyward.db");
        std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
        let orphan = dir.join("fresh").join("keyward.db-wal");
        std::fs::write(&orphan, "a log of another database").unwrap();
        let fresh_url = format!("sqlite://{}", fresh.display());
        let restored = stage_restore(&fresh_url, &backup)
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        assert!(restored.replaced.is_none());
        assert!(!orphan.exists());
        let reopened = crate::store::open(&fresh_url).await.unwrap();
        assert_eq!(reopened.list_keys().await.unwrap()[0].kid, key.kid);
        drop(reopened);
        let _ = std::fs::remove_dir_all(dir);
    }
}
