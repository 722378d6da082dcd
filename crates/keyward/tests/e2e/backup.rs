//! `keyward backup` and `keyward restore` as an operator runs them, on a server whose
//! keys are encrypted at rest: a backup taken while a client rotates its refresh token
//! over and over, the live state moving on, the server killed, hostile backups refused
//! with the database untouched, the backup restored, and then the tokens handed out
//! before the backup working while those handed out after it are gone.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use reqwest::StatusCode;

use crate::replicas::{Replica, start_replica_env};
use crate::support::*;

/// The issuer every server of a site names, whatever port it listens on.
const ISSUER: &str = "http://127.0.0.1:9";
const KEY_FILE_VAR: &str = "KEYWARD_KEY_ENCRYPTION_KEY_FILE";

/// A deployment in a directory: its configuration (SQLite under `data/`) and the key
/// file that encrypts its signing keys.
pub struct Site {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub key_file: PathBuf,
    pub data: PathBuf,
}

impl Site {
    pub fn new() -> Self {
        let dir = temp_dir();
        let data = dir.join("data");
        let key_file = dir.join("at-rest.key");
        std::fs::write(&key_file, keyward_proto::secret::random_urlsafe(48)).unwrap();
        let config = dir.join("keyward.toml");
        let text = format!(
            "issuer = \"{ISSUER}\"\ndatabase_url = \"sqlite://{}/keyward.db\"\n{}",
            data.display(),
            base_config("")
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            config,
            key_file,
            data,
        }
    }

    /// `keyward serve` on this site, with its key file.
    pub fn serve(&self) -> Replica {
        start_replica_env(
            &self.config,
            &self.dir,
            "warn",
            Stdio::inherit(),
            &[(KEY_FILE_VAR, self.key_file.as_os_str())],
        )
    }

    /// `keyward --config … ARGS` with `key_file` as the key file (none when `None`),
    /// `stdin` as its input.
    pub async fn run(&self, key_file: Option<&Path>, args: &[&str], stdin: &str) -> Output {
        use tokio::io::AsyncWriteExt as _;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .env("KEYWARD_LOG", "warn")
            .env_remove("KEYWARD_DATABASE_URL")
            .env_remove(KEY_FILE_VAR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(key_file) = key_file {
            command.env(KEY_FILE_VAR, key_file);
        }
        let mut child = command.spawn().expect("run keyward");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    /// Every file of the data directory with its contents, to tell it was not touched.
    fn data_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.data)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(entry.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks a command succeeded; returns its stdout.
pub fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A confidential client: id and secret.
pub type ClientCredentials<'a> = (&'a str, &'a str);

/// demo-app of [`base_config`].
const DEMO_APP: ClientCredentials<'static> = ("demo-app", SECRET);

/// Signs `user` in with `password` at the server at `base` (whose issuer may name
/// another port) through `client`'s code flow (skipping consent); returns the token
/// response.
pub async fn sign_in(
    base: &str,
    client: ClientCredentials<'_>,
    user: &str,
    password: &str,
) -> serde_json::Value {
    let browser = browser();
    let (url, verifier) = authorize_url(base, client.0, "openid profile offline_access", "");
    let response = browser.get(&url).send().await.unwrap();
    let login = location(&response);
    let page = browser
        .get(format!("{base}{}?{}", login.path(), login.query().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("req", hidden(&page, "req")),
        ("csrf", hidden(&page, "csrf")),
        ("username", user.to_owned()),
        ("password", password.to_owned()),
    ];
    let response = browser
        .post(format!("{base}/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let callback = location(&response);
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("a code")
        .1
        .into_owned();
    let (status, tokens) = post_token(
        base,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

/// A token request of `client` at `base`.
async fn post_token(
    base: &str,
    client: ClientCredentials<'_>,
    form: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let response = http()
        .post(format!("{base}/token"))
        .basic_auth(client.0, Some(client.1))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Refreshes with demo-app's `refresh_token` at `base`.
pub async fn refresh(base: &str, refresh_token: &str) -> (StatusCode, serde_json::Value) {
    refresh_as(base, DEMO_APP, refresh_token).await
}

/// Refreshes with `client`'s `refresh_token` at `base`.
pub async fn refresh_as(
    base: &str,
    client: ClientCredentials<'_>,
    refresh_token: &str,
) -> (StatusCode, serde_json::Value) {
    post_token(
        base,
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The `sub` userinfo answers for `access_token` at `base`, or its status.
pub async fn userinfo_sub(base: &str, access_token: &str) -> Result<String, StatusCode> {
    let response = http()
        .get(format!("{base}/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let body: serde_json::Value = response.json().await.unwrap();
    Ok(body["sub"].as_str().unwrap().to_owned())
}

/// Whether introspection (as demo-app, a resource server) finds `token` active.
async fn active(base: &str, token: &str) -> bool {
    introspect_as(base, DEMO_APP, token).await["active"]
        .as_bool()
        .unwrap()
}

/// What introspection as `client` says of `token` at `base`.
pub async fn introspect_as(
    base: &str,
    client: ClientCredentials<'_>,
    token: &str,
) -> serde_json::Value {
    let response = http()
        .post(format!("{base}/introspect"))
        .basic_auth(client.0, Some(client.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub fn token(tokens: &serde_json::Value, name: &str) -> String {
    tokens[name].as_str().expect(name).to_owned()
}

/// Checks a command was refused with exit status 1, saying `message`, with nothing on
/// stdout.
pub fn refused(output: &Output, message: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
}

#[tokio::test]
async fn a_backup_of_a_live_server_restores_its_tokens_and_forgets_what_came_after() {
    let site = Site::new();
    let key = Some(site.key_file.as_path());
    let server = site.serve();
    let alice = sign_in(&server.base, DEMO_APP, "alice", PASSWORD).await;
    let alice_sub = userinfo_sub(&server.base, &token(&alice, "access_token"))
        .await
        .unwrap();
    let bob = sign_in(&server.base, DEMO_APP, "bob", PASSWORD).await;

    // Bob's client rotates its refresh token over and over while the backup is taken,
    // and reports each rotation.
    let (rotated, mut rotations) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let base = server.base.clone();
    let first = token(&bob, "refresh_token");
    let chain = tokio::spawn(async move {
        let mut chain = vec![first];
        let mut stopped = std::pin::pin!(stopped);
        loop {
            let (status, body) = refresh(&base, chain.last().unwrap()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "a rotation during the backup: {body}"
            );
            chain.push(token(&body, "refresh_token"));
            let _ = rotated.send(chain.len());
            if stopped.as_mut().try_recv().is_ok() {
                return chain;
            }
        }
    });
    while rotations.recv().await.unwrap() < 4 {}
    let backup = site.dir.join("backup.db");
    let started = std::time::Instant::now();
    let taken = site
        .run(key, &["backup", backup.to_str().unwrap()], "")
        .await;
    let took = started.elapsed();
    let report = succeeded(&taken);
    stop.send(()).unwrap();
    let bob_chain = chain.await.unwrap();
    eprintln!(
        "backup of a live database: {took:?} for the command, {} rotations meanwhile; it said:\n{report}",
        bob_chain.len()
    );
    assert!(
        report.contains("a consistent copy of sqlite://"),
        "{report}"
    );
    assert!(report.contains("2 users, 4 clients"), "{report}");
    assert!(
        report.contains("encrypted at rest; the configured key file opens them")
            && report.contains("a restore needs that key file"),
        "the backup says it needs the key file: {report}"
    );
    assert!(!report.contains("in clear"), "{report}");
    assert!(
        !report.contains(SECRET) && !report.contains(&token(&alice, "refresh_token")),
        "{report}"
    );
    let backup_bytes = std::fs::read(&backup).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the backup is private");
    }
    // An existing file is replaced only with --force.
    let again = site
        .run(key, &["backup", backup.to_str().unwrap()], "")
        .await;
    refused(&again, "exists; pass --force to replace it");
    assert_eq!(std::fs::read(&backup).unwrap(), backup_bytes);
    let spare = site.dir.join("spare.db");
    std::fs::write(&spare, "an older backup").unwrap();
    succeeded(
        &site
            .run(key, &["backup", "--force", spare.to_str().unwrap()], "")
            .await,
    );
    assert_ne!(std::fs::read(&spare).unwrap(), b"an older backup");

    // The live state moves on: Alice's refresh token is rotated twice (so that the
    // first one would now be a reuse), and a user is added.
    let alice_r0 = token(&alice, "refresh_token");
    let (status, body) = refresh(&server.base, &alice_r0).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = refresh(&server.base, &token(&body, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_r2 = token(&body, "refresh_token");
    succeeded(
        &site
            .run(
                key,
                &["user", "add", "carol", "--password-stdin"],
                "a long password\n",
            )
            .await,
    );

    // Not while the server runs.
    let running = site
        .run(key, &["restore", backup.to_str().unwrap()], "")
        .await;
    refused(&running, "is in use: stop every keyward serve");
    refused(&running, "nothing restored into sqlite://");
    assert_eq!(
        userinfo_sub(&server.base, &token(&alice, "access_token")).await,
        Ok(alice_sub.clone()),
        "the server goes on serving"
    );

    // Killed: its write-ahead log stays behind, as after a crash.
    drop(server);
    let before = site.data_files();

    // Hostile backups: each refused with a reason, the database untouched.
    let missing = site.dir.join("missing.db");
    let prose = site.dir.join("prose.db");
    std::fs::write(&prose, "this is not a database\n".repeat(500)).unwrap();
    let empty = site.dir.join("empty.db");
    std::fs::write(&empty, "").unwrap();
    let foreign = site.dir.join("foreign.db");
    foreign_sqlite(&foreign).await;
    let half = site.dir.join("half.db");
    std::fs::write(&half, &backup_bytes[..backup_bytes.len() / 2]).unwrap();
    let torn = site.dir.join("torn.db");
    std::fs::write(&torn, &backup_bytes[..backup_bytes.len() - 100]).unwrap();
    let newer = site.dir.join("newer.db");
    std::fs::write(&newer, &backup_bytes).unwrap();
    with_schema_version(&newer, 9999).await;
    let wrong_key = site.dir.join("wrong.key");
    std::fs::write(&wrong_key, keyward_proto::secret::random_urlsafe(48)).unwrap();
    let cases: [(&Path, Option<&Path>, &str); 8] = [
        (&missing, key, "cannot read"),
        (&prose, key, "is not a SQLite database"),
        (&empty, key, "is not a SQLite database"),
        (&foreign, key, "is a SQLite database, but not keyward's"),
        (&half, key, "is truncated"),
        (&torn, key, "is truncated"),
        (
            &newer,
            key,
            "has schema version 9999; this keyward knows versions up to",
        ),
        (&backup, None, KEY_FILE_VAR),
    ];
    for (file, key_file, message) in cases {
        let output = site
            .run(key_file, &["restore", file.to_str().unwrap()], "")
            .await;
        refused(&output, message);
        refused(&output, "nothing restored into sqlite://");
        refused(&output, &file.display().to_string());
        assert!(
            site.data_files() == before,
            "restoring {} touched the database",
            file.display()
        );
    }
    let output = site
        .run(Some(&wrong_key), &["restore", backup.to_str().unwrap()], "")
        .await;
    refused(&output, "is encrypted at rest and cannot be read");
    refused(&output, "does not decrypt with the configured key");
    assert!(site.data_files() == before);

    // The restore, and a server on it.
    let restored = succeeded(
        &site
            .run(key, &["restore", backup.to_str().unwrap()], "")
            .await,
    );
    assert!(restored.contains("restored"), "{restored}");
    let kept = restored
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("the database it replaced is kept at ")
        })
        .expect("where the old database went");
    assert!(
        usernames(Path::new(kept))
            .await
            .contains(&"carol".to_owned()),
        "the database set aside is whole, its write-ahead log folded in"
    );
    let server = site.serve();

    // The access token issued before the backup verifies; the refresh token handed
    // out before the backup refreshes, because its rotations after the backup are gone
    // (and so is the token they handed out).
    let access = token(&alice, "access_token");
    assert_eq!(userinfo_sub(&server.base, &access).await, Ok(alice_sub));
    assert!(active(&server.base, &access).await);
    let (status, body) = refresh(&server.base, &alice_r2).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    let (status, body) = refresh(&server.base, &alice_r0).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        userinfo_sub(&server.base, &token(&body, "access_token"))
            .await
            .is_ok()
    );
    let users = succeeded(&site.run(key, &["user", "list"], "").await);
    assert!(
        !users.contains("carol"),
        "a user added after the backup: {users}"
    );
    let check = succeeded(&site.run(key, &["store", "check"], "").await);
    assert!(check.contains("consistent"), "{check}");

    // Bob's chain continues from the token that was current when the backup was
    // taken: the newer ones are unknown, that one refreshes, and to the very token
    // the live server had handed out next (the successor is derived with the MAC key,
    // which came back with the backup).
    let mut current = None;
    for (i, refresh_token) in bob_chain.iter().enumerate().rev() {
        let (status, body) = refresh(&server.base, refresh_token).await;
        if status == StatusCode::OK {
            current = Some((i, token(&body, "refresh_token")));
            break;
        }
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    let (i, next) = current.expect("one token of bob's chain refreshes");
    assert!(
        i >= 3,
        "the backup began after the fourth rotation, found {i}"
    );
    assert_eq!(Some(&next), bob_chain.get(i + 1), "the same successor");
    let check = succeeded(&site.run(key, &["store", "check"], "").await);
    assert!(check.contains("consistent"), "{check}");
    drop(server);
}

/// The users of the keyward database at `path`.
async fn usernames(path: &Path) -> Vec<String> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let names = sqlx::query_scalar("SELECT username FROM users ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    names
}

/// Makes `path` a SQLite database that is not keyward's.
async fn foreign_sqlite(path: &Path) {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hello')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Records schema version `version` in the keyward database at `path`, as a later
/// keyward would.
async fn with_schema_version(path: &Path, version: i64) {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("INSERT INTO keyward_schema (version, applied_at) VALUES ($1, 0)")
        .bind(version)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// On PostgreSQL both commands say how to use pg_dump and pg_restore, fail, write
/// nothing, and never print the database password.
#[tokio::test]
async fn on_postgresql_backup_and_restore_point_to_its_tools() {
    let site = Site::new();
    let url = "postgres://keyward:hunter2-secret@127.0.0.1:1/keyward";
    let config = std::fs::read_to_string(&site.config).unwrap();
    let config: String = config
        .lines()
        .map(|line| {
            if line.starts_with("database_url") {
                format!("database_url = \"{url}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&site.config, config).unwrap();
    let file = site.dir.join("pg.dump");
    for (command, tool) in [("backup", "pg_dump"), ("restore", "pg_restore")] {
        let output = site.run(None, &[command, file.to_str().unwrap()], "").await;
        refused(&output, tool);
        refused(&output, "postgres://keyward:redacted@127.0.0.1:1/keyward");
        assert!(!text(&output.stderr).contains("hunter2"));
        assert!(!file.exists());
    }
}
