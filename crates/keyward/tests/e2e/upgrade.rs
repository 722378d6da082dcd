//! An upgrade: a database written by an earlier keyward opens under this one, is
//! migrated, and serves what the earlier one issued. The database and the tokens are
//! the fixture in `tests/fixtures/upgrade-d475d4f/`, written by keyward built at commit
//! d475d4f (schema version 4, before migrations 0005-0007) with the fixture's
//! `make.sh`; its README says how.
//!
//! The earlier keyward allowed access tokens 24 hours at most, so its access token has
//! expired by the time this runs: `keyward serve` (the process) checks its signature
//! against `/jwks` as of its issue time, and a server built in this process on a clock
//! started at that time checks it at `/userinfo` and `/introspect`. The refresh token
//! lives a hundred years and is refreshed on the real clock.

use std::path::{Path, PathBuf};

use keyward_proto::jws;
use reqwest::StatusCode;

use crate::backup::{introspect_as, refresh_as, refused, sign_in, succeeded, token, userinfo_sub};
use crate::replicas::start_replica;
use crate::support::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/upgrade-d475d4f"
);

/// The fixture's description (`fixture.json`): the tokens and credentials.
fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("fixture.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn field<'a>(fixture: &'a serde_json::Value, name: &str) -> &'a str {
    fixture[name].as_str().expect(name)
}

/// A copy of the fixture's database in a fresh directory, and a configuration that
/// names it and the fixture's issuer, nothing else: the client and the user are in the
/// database, as the earlier keyward's admin commands stored them.
fn copy_of_fixture(issuer: &str) -> (PathBuf, PathBuf, String) {
    let dir = temp_dir();
    let db = dir.join("keyward.db");
    std::fs::copy(Path::new(FIXTURE).join("keyward.db"), &db).unwrap();
    let url = format!("sqlite://{}", db.display());
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!("issuer = \"{issuer}\"\ndatabase_url = \"{url}\"\n"),
    )
    .unwrap();
    (dir, config, url)
}

/// The schema versions recorded in the SQLite database at `url`.
async fn schema_versions(url: &str) -> Vec<i64> {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let versions = sqlx::query_scalar("SELECT version FROM keyward_schema ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    versions
}

#[tokio::test]
async fn keyward_serve_migrates_an_earlier_database_and_serves_its_tokens() {
    let fixture = fixture();
    let issuer = field(&fixture, "issuer");
    let client = (
        field(&fixture, "client_id"),
        field(&fixture, "client_secret"),
    );
    let (dir, config, url) = copy_of_fixture(issuer);
    assert_eq!(schema_versions(&url).await, [1, 2, 3, 4], "the fixture");
    let server = start_replica(&config, &dir);
    let latest = keyward_server::store::backup::latest_schema_version();
    assert_eq!(
        schema_versions(&url).await,
        (1..=latest).collect::<Vec<_>>(),
        "migrated"
    );

    // The earlier access token: signed by a key the JWKS still publishes.
    let access = field(&fixture, "access_token");
    let claims = jwt_payload(access);
    let jwks: keyward_proto::discovery::Jwks =
        serde_json::from_value(get_json(&format!("{}/jwks", server.base)).await).unwrap();
    let keys = jws::KeySet::from_jwks(&jwks);
    let kid = jws::header(access).unwrap().kid.unwrap();
    assert!(keys.contains(&kid), "{kid} not in {jwks:?}");
    let expect = jws::Expect {
        typ: "at+jwt",
        issuer,
        now: Some(claims["iat"].as_i64().unwrap() + 60),
    };
    let verified: serde_json::Value = jws::verify(access, &keys, &expect).unwrap();
    assert_eq!(verified["sub"], field(&fixture, "sub"));

    // The earlier refresh token refreshes, into tokens this keyward honours.
    let (status, body) = refresh_as(&server.base, client, field(&fixture, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = token(&body, "access_token");
    assert_eq!(
        userinfo_sub(&server.base, &fresh).await,
        Ok(field(&fixture, "sub").to_owned())
    );
    let introspected = introspect_as(&server.base, client, &fresh).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    let (status, body) = refresh_as(&server.base, client, &token(&body, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "the chain goes on: {body}");

    // The user's password and the client's secret, stored by the earlier keyward's
    // admin commands, still sign in.
    let again = sign_in(
        &server.base,
        client,
        field(&fixture, "username"),
        field(&fixture, "password"),
    )
    .await;
    assert_eq!(
        jwt_payload(&token(&again, "access_token"))["sub"],
        field(&fixture, "sub")
    );
    drop(server);

    // Its keys were written in clear (the earlier keyward could not encrypt them), and
    // a backup of it says so.
    let check = succeeded(&keyward_admin(&dir, &config, &["store", "check"]).await);
    // The command-line client the earlier keyward registered gained what `keyward
    // login` needs now: the code flow, redirected to a loopback listener.
    let clients = succeeded(&keyward_admin(&dir, &config, &["client", "list"]).await);
    let device = clients
        .lines()
        .find(|l| l.starts_with("device "))
        .unwrap_or_else(|| panic!("{clients}"));
    assert!(device.contains("authorization_code"), "{device}");
    assert!(
        device.contains("http://127.0.0.1/callback http://[::1]/callback"),
        "{device}"
    );
    assert!(check.contains("consistent"), "{check}");
    let report = succeeded(&keyward_admin(&dir, &config, &["backup", "backup.db"]).await);
    assert!(
        report.contains("are in clear: this file can sign tokens"),
        "{report}"
    );
    let again = keyward_admin(&dir, &config, &["backup", "backup.db"]).await;
    refused(&again, "exists");
    let _ = std::fs::remove_dir_all(dir);
}

/// `keyward --config CONFIG ARGS` in `dir`.
async fn keyward_admin(dir: &Path, config: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_KEY_ENCRYPTION_KEY_FILE")
        .output()
        .await
        .unwrap()
}

/// On a clock started when the earlier keyward issued them, its access token passes
/// userinfo and introspection after the migration.
#[tokio::test]
async fn an_earlier_access_token_verifies_as_of_its_issue_time() {
    let fixture = fixture();
    let issuer = field(&fixture, "issuer");
    let client = (
        field(&fixture, "client_id"),
        field(&fixture, "client_secret"),
    );
    let (dir, _, url) = copy_of_fixture(issuer);
    let access = field(&fixture, "access_token");
    let issued_at = jwt_payload(access)["iat"].as_i64().unwrap();
    let listener = bind().await;
    let base = format!("http://{}", listener.local_addr().unwrap());
    let env = [
        ("KEYWARD_ISSUER".to_owned(), issuer.to_owned()),
        ("KEYWARD_DATABASE_URL".to_owned(), url),
    ]
    .into();
    let config = keyward_server::config::Config::from_toml("", &env).unwrap();
    let clock = keyward_server::clock::ShiftedClock::starting_at(issued_at + 60);
    let state = keyward_server::serve::build_with_clock(config, std::sync::Arc::new(clock))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(keyward_server::serve::run(state, listener, async move {
        let _ = stopped.await;
    }));

    assert_eq!(
        userinfo_sub(&base, access).await,
        Ok(field(&fixture, "sub").to_owned())
    );
    let introspected = introspect_as(&base, client, access).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["sub"], field(&fixture, "sub"));
    let (status, body) = refresh_as(&base, client, field(&fixture, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
