//! Token files: `$KEYWARD_HOME/servers/<host>[_<port>]/auth.toml`, one per server.
//!
//! The format is PkgAuthentication.jl's (`access_token`, `id_token`, `refresh_token`,
//! `refresh_url`, `expires_at`, `expires`, `expires_in`, …), so a file keyward writes is
//! one a Julia client accepts and the other way round; fields keyward does not know are
//! kept as they are.
//!
//! Writes replace the file atomically (a temporary file in the same directory, fsync,
//! rename, fsync of the directory), with mode 0600. Readers never see half a file; a
//! file that does not parse, or lacks what makes a token usable, reads as no token. A
//! lock file beside it (`auth.toml.lock`, an OS advisory lock) lets one process refresh
//! while the others wait and then read its result.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use url::Url;

/// A token file failure.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The server URL has no host.
    #[error("server URL {0} has no host")]
    NoHost(String),
    /// Reading, writing or locking failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token directory is not this user's alone: another user could read, replace
    /// or redirect the tokens in it.
    #[error("refusing to keep tokens in {path}: {reason}")]
    NotPrivate {
        /// The directory.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The lock stayed taken for longer than the timeout.
    #[error("timed out after {0:?} waiting for the lock on {1}")]
    LockTimeout(Duration, String),
    /// The token could not be encoded.
    #[error("cannot encode the token file")]
    Encode(#[from] toml::ser::Error),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TokenFileError {
    let path = path.display().to_string();
    move |source| TokenFileError::Io {
        action,
        path,
        source,
    }
}

/// The contents of `auth.toml`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenFile {
    /// The access token.
    pub access_token: String,
    /// The ID token (required by the Julia client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Where to refresh: keyward's `/auth/refresh`, or a token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_url: Option<String>,
    /// When the access token expires, seconds since the epoch.
    pub expires_at: i64,
    /// The same, under its legacy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The access token's lifetime when issued, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The signed-in user's name (the Julia package server sends it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// The signed-in user's email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    /// keyward: the server (issuer) this token is for, as logged in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// keyward: the client the token was issued to. Present: `refresh_url` is an OAuth
    /// token endpoint (RFC 6749 §6 refresh). Absent: a file the Julia client wrote,
    /// refreshed with its `GET refresh_url` protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// keyward: the granted scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Fields this version does not know, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads the text of an `auth.toml`: `None` when it is not a token file, or one
    /// without an access token (a corrupt or half-written file is as good as absent).
    pub fn parse(text: &str) -> Option<Self> {
        toml::from_str::<TokenFile>(text)
            .ok()
            .filter(|t| !t.access_token.is_empty())
    }

    /// Whether the access token is still good `margin` seconds after `now`.
    pub fn is_fresh(&self, now: i64, margin: i64) -> bool {
        self.expires_at > now.saturating_add(margin)
    }
}

/// The directory of a server's files: `<home>/servers/<host>[_<port>]` (the port only
/// when it is not the scheme's default), as the Julia client names it.
pub fn server_dir(home: &Path, server: &Url) -> Result<PathBuf, TokenFileError> {
    let host = server
        .host_str()
        .ok_or_else(|| TokenFileError::NoHost(server.to_string()))?;
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = match server.port() {
        Some(port) => format!("{host}_{port}"),
        None => host,
    };
    Ok(home.join("servers").join(name))
}

/// The default `KEYWARD_HOME`: `keyward` under the user's configuration directory
/// (`$XDG_CONFIG_HOME` or `~/.config` on Unix, `~/Library/Application Support` on
/// macOS, `%APPDATA%` on Windows). `None` when no home directory is known.
pub fn default_home() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let config = if cfg!(windows) {
        var("APPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|home| home.join("Library").join("Application Support"))
    } else {
        var("XDG_CONFIG_HOME")
            .filter(|dir| dir.is_absolute())
            .or_else(|| var("HOME").map(|home| home.join(".config")))
    };
    config.map(|dir| dir.join("keyward"))
}

/// Every server directory under `home` that holds a token file, sorted, with the
/// token (`None` when the file is corrupt or incomplete).
pub fn list_servers(home: &Path) -> Result<Vec<(TokenStore, Option<TokenFile>)>, TokenFileError> {
    let servers = home.join("servers");
    let entries = match fs::read_dir(&servers) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("cannot list", &servers)(e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("auth.toml"))
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let store = TokenStore::at(path);
            let token = store.load()?;
            Ok((store, token))
        })
        .collect()
}

/// The token file of one server.
#[derive(Clone, Debug)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    /// The store for `server` under `home`.
    pub fn for_server(home: &Path, server: &Url) -> Result<Self, TokenFileError> {
        Ok(Self {
            path: server_dir(home, server)?.join("auth.toml"),
        })
    }

    /// The store at an explicit path.
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the token. `Ok(None)` when there is no file, or when it is corrupt or
    /// incomplete (it is then as good as absent); `Err` only when the file exists but
    /// cannot be read.
    pub fn load(&self) -> Result<Option<TokenFile>, TokenFileError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(io("cannot read", &self.path)(e)),
        };
        Ok(TokenFile::parse(&text))
    }

    /// Replaces the token atomically, with mode 0600, creating the directory (0700).
    pub fn save(&self, token: &TokenFile) -> Result<(), TokenFileError> {
        let dir = self.dir();
        create_private_dir(dir)?;
        let text = toml::to_string(token)?;
        let temp = dir.join(format!(
            ".auth.toml.{}.{}.tmp",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let result = (|| {
            let mut file = private_file(&temp)?;
            file.write_all(text.as_bytes())
                .map_err(io("cannot write", &temp))?;
            file.sync_all().map_err(io("cannot sync", &temp))?;
            fs::rename(&temp, &self.path).map_err(io("cannot replace", &self.path))?;
            // The rename itself must reach the disk too.
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Removes the token file; no error when there is none.
    pub fn remove(&self) -> Result<(), TokenFileError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &self.path)(e)),
        }
    }

    /// Takes the exclusive lock of this server's token, waiting at most `timeout`. The
    /// lock is released when the guard is dropped (or the process dies).
    pub fn lock(&self, timeout: Duration) -> Result<TokenLock, TokenFileError> {
        let dir = self.dir();
        create_private_dir(dir)?;
        let path = dir.join("auth.toml.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open the lock file", &path))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(TokenLock { file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= timeout {
                        return Err(TokenFileError::LockTimeout(
                            timeout,
                            path.display().to_string(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", &path)(e)),
            }
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// A held token lock; released on drop.
#[derive(Debug)]
pub struct TokenLock {
    file: File,
}

impl Drop for TokenLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TokenFileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(io("cannot create directory", dir))?;
    check_private_dir(dir)
}

/// Refuses a token directory that another user owns or may write to (one made in a
/// shared place such as `/tmp` by someone else, or left open by `chmod`): whoever
/// controls the directory can swap the files in it.
#[cfg(unix)]
fn check_private_dir(dir: &Path) -> Result<(), TokenFileError> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |reason| {
        Err(TokenFileError::NotPrivate {
            path: dir.display().to_string(),
            reason,
        })
    };
    let meta = fs::metadata(dir).map_err(io("cannot inspect directory", dir))?;
    // The owner of /proc/self is this process's user (Linux); elsewhere only the
    // permission bits are checked.
    if let Ok(me) = fs::metadata("/proc/self").map(|m| m.uid())
        && meta.uid() != me
    {
        return refuse("it is owned by another user");
    }
    if meta.mode() & 0o022 != 0 {
        return refuse("other users may write to it (chmod go-w)");
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_dir(_dir: &Path) -> Result<(), TokenFileError> {
    Ok(())
}

fn private_file(path: &Path) -> Result<File, TokenFileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io("cannot create", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_home() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keyward-client-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn token(access: &str) -> TokenFile {
        TokenFile {
            access_token: access.into(),
            id_token: Some("id".into()),
            refresh_token: Some("refresh".into()),
            refresh_url: Some("https://kw.example/auth/refresh".into()),
            expires_at: 2_000_000_000,
            expires: Some(2_000_000_000),
            expires_in: Some(900),
            ..TokenFile::default()
        }
    }

    #[test]
    fn directories_are_named_like_the_julia_client_names_them() {
        let home = Path::new("/h");
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            server_dir(home, &url("https://pkg.example.com")).unwrap(),
            Path::new("/h/servers/pkg.example.com")
        );
        assert_eq!(
            server_dir(home, &url("http://127.0.0.1:8080/x")).unwrap(),
            Path::new("/h/servers/127.0.0.1_8080")
        );
        assert_eq!(
            server_dir(home, &url("https://h.example:443")).unwrap(),
            Path::new("/h/servers/h.example")
        );
        assert!(server_dir(home, &url("file:///tmp")).is_err());
    }

    #[test]
    fn save_load_round_trip_keeps_unknown_fields_and_is_private() {
        let home = temp_home();
        let store =
            TokenStore::for_server(&home, &Url::parse("http://127.0.0.1:8080").unwrap()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut saved = token("a1");
        saved.user_name = Some("alice".into());
        saved
            .extra
            .insert("julia_extra".into(), toml::Value::String("kept".into()));
        store.save(&saved).unwrap();
        assert_eq!(store.load().unwrap(), Some(saved));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        store.remove().unwrap();
        store.remove().unwrap();
        assert_eq!(store.load().unwrap(), None);
        let _ = fs::remove_dir_all(home);
    }

    #[test]
    fn a_corrupt_or_half_written_file_reads_as_no_token() {
        let home = temp_home();
        let store = TokenStore::at(home.join("auth.toml"));
        store.save(&token("a1")).unwrap();
        let text = fs::read_to_string(store.path()).unwrap();
        for broken in [
            &text[..text.len() / 2],
            "not = [toml",
            "",
            "access_token = \"\"\nexpires_at = 1",
            "\u{0}\u{1}",
        ] {
            fs::write(store.path(), broken).unwrap();
            assert_eq!(store.load().unwrap(), None, "{broken:?}");
        }
        fs::write(store.path(), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let _ = fs::remove_dir_all(home);
    }

    /// Attack: a local user prepares the token directory (in a shared place, or
    /// opened up with chmod) to read or swap another user's tokens. keyward refuses
    /// to write there.
    #[cfg(unix)]
    #[test]
    fn a_directory_others_control_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let home = temp_home();
        let server = Url::parse("https://pkg.example.com/").unwrap();
        let store = TokenStore::for_server(&home, &server).unwrap();
        let dir = store.path().parent().unwrap().to_owned();
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = store.save(&token("a")).unwrap_err();
        assert!(matches!(err, TokenFileError::NotPrivate { .. }), "{err}");
        assert!(store.lock(Duration::from_millis(10)).is_err());
        assert!(!store.path().exists());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        store.save(&token("a")).unwrap();
        // Owned by someone else (only root can arrange that for a test).
        if fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
            std::os::unix::fs::chown(&dir, Some(4242), None).unwrap();
            let err = store.save(&token("b")).unwrap_err();
            assert!(err.to_string().contains("owned by another user"), "{err}");
        }
        let _ = fs::remove_dir_all(home);
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let home = temp_home();
        let blocker = home.join("file");
        fs::write(&blocker, "x").unwrap();
        let store = TokenStore::at(blocker.join("servers").join("auth.toml"));
        let err = store.save(&token("a1")).unwrap_err().to_string();
        assert!(err.contains("cannot create directory"), "{err}");
        assert!(!err.contains("a1"), "no token in errors");
        let _ = fs::remove_dir_all(home);
    }

    #[test]
    fn the_lock_serialises_writers_and_times_out() {
        let home = temp_home();
        let store = TokenStore::at(home.join("auth.toml"));
        let guard = store.lock(Duration::from_secs(1)).unwrap();
        let err = store.lock(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, TokenFileError::LockTimeout(..)));
        drop(guard);

        // Eight threads each read-modify-write under the lock: no update is lost.
        store
            .save(&TokenFile {
                expires_at: 0,
                ..token("a")
            })
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let _lock = store.lock(Duration::from_secs(10)).unwrap();
                        let mut current = store.load().unwrap().unwrap();
                        current.expires_at += 1;
                        store.save(&current).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(store.load().unwrap().unwrap().expires_at, 80);
        let _ = fs::remove_dir_all(home);
    }

    #[test]
    fn freshness_keeps_a_margin_and_debug_hides_tokens() {
        let t = TokenFile {
            expires_at: 1000,
            refresh_token: Some("refresh-XYZ".into()),
            ..token("access-XYZ")
        };
        assert!(t.is_fresh(900, 60));
        assert!(!t.is_fresh(950, 60));
        assert!(!t.is_fresh(1000, 0));
        assert!(!format!("{t:?}").contains("XYZ"));
    }
}
