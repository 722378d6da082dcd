//! The admin commands as a user runs them, the configuration errors they see, and the
//! README's walk-through, run as written.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;

use crate::replicas::{start_replica, start_replica_logging};
use crate::support::*;

fn keyward(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .current_dir(dir)
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyward");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn admin_commands_manage_the_database_the_server_uses() {
    let dir = temp_dir();
    let added = stdout(&keyward(
        &dir,
        &[
            "client",
            "add",
            "reports",
            "--grant-type",
            "client_credentials",
            "--scope",
            "api:read",
        ],
        None,
    ));
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("secret shown")
        .trim()
        .to_owned();
    assert_eq!(secret.len(), 43, "256-bit secret");
    stdout(&keyward(
        &dir,
        &[
            "user",
            "add",
            "carol",
            "--email",
            "carol@example.com",
            "--password-stdin",
        ],
        Some("a long password\n"),
    ));
    assert!(stdout(&keyward(&dir, &["client", "list"], None)).contains("reports"));
    let users = stdout(&keyward(&dir, &["user", "list"], None));
    assert!(users.contains("carol@example.com"), "{users}");
    assert!(users.contains("password"), "how carol signs in: {users}");

    // Duplicate names, bad URIs and weak passwords are refused with a message.
    let again = keyward(
        &dir,
        &[
            "client",
            "add",
            "reports",
            "--grant-type",
            "client_credentials",
        ],
        None,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = keyward(
        &dir,
        &[
            "client",
            "add",
            "web",
            "--redirect-uri",
            "http://example.com/cb",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("https"));
    let weak = keyward(
        &dir,
        &["user", "add", "dave", "--password-stdin"],
        Some("short\n"),
    );
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 8"));

    // Keys: rotation adds a new active key per algorithm and retires the old ones.
    stdout(&keyward(&dir, &["key", "rotate"], None));
    stdout(&keyward(&dir, &["key", "rotate"], None));
    let keys = stdout(&keyward(&dir, &["key", "list"], None));
    assert_eq!(keys.matches(" active").count(), 2, "{keys}");
    assert_eq!(keys.matches("retired").count(), 2, "{keys}");

    // The server uses what the commands stored.
    let config = dir.join("keyward.toml");
    std::fs::write(&config, "issuer = \"http://127.0.0.1:9\"\n").unwrap();
    let server = start_replica(&config, &dir);
    let client_credentials = || {
        http()
            .post(format!("{}/token", server.base))
            .basic_auth("reports", Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let response = client_credentials().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token: serde_json::Value = response.json().await.unwrap();
    assert_eq!(token["scope"], "api:read");

    // A removed client is refused at once; a disabled user is listed as such.
    stdout(&keyward(&dir, &["client", "remove", "reports"], None));
    stdout(&keyward(&dir, &["user", "disable", "carol"], None));
    assert!(stdout(&keyward(&dir, &["user", "list"], None)).contains("disabled"));
    let response = client_credentials().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn configuration_errors_name_the_key_before_listening() {
    let dir = temp_dir();
    for (text, key) in [
        ("isuer = \"http://x\"", "isuer"),
        ("listen = \"everywhere\"", "listen"),
        (
            "[[clients]]\nclient_id = \"a\"\nredirect_uris = [\"/relative\"]",
            "clients[0]",
        ),
    ] {
        std::fs::write(dir.join("bad.toml"), text).unwrap();
        let output = keyward(&dir, &["serve", "--config", "bad.toml"], None);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
    }
    let output = keyward(&dir, &["serve", "--config", "missing.toml"], None);
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the README's walk-through block with bash, on a free port instead of 8080.
#[test]
fn readme_walkthrough_runs_as_written() {
    let (mut bash, _port, dir) = readme_script("walkthrough");
    let output = bash.output().expect("bash");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "walkthrough failed:\n{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("\"active\":true"),
        "the walkthrough ends with an active token:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// At the most verbose log level, a whole login, exchange, refresh, failed login and
/// revocation leave no password, secret, code or token in the log.
#[tokio::test]
async fn logs_never_contain_secrets() {
    let dir = temp_dir();
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!("issuer = \"http://127.0.0.1:9\"\n{}", base_config("")),
    )
    .unwrap();
    let log_path = dir.join("keyward.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = start_replica_logging(&config, &dir, "trace", Stdio::from(log));

    let browser = browser();
    let (authorize, verifier) =
        authorize_url(&server.base, "demo-app", "openid offline_access", "");
    let wrong = drive(
        &browser,
        &authorize,
        "alice",
        "a-wrong-password-xyz",
        "approve",
    )
    .await;
    assert!(matches!(wrong, Outcome::Page(..)));
    let code = drive(&browser, &authorize, "alice", PASSWORD, "approve")
        .await
        .callback()["code"]
        .clone();
    let token = |form: Vec<(&'static str, String)>| {
        let base = server.base.clone();
        async move {
            let response = http()
                .post(format!("{base}/token"))
                .basic_auth("demo-app", Some(SECRET))
                .form(&form)
                .send()
                .await
                .unwrap();
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let first = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT.into()),
        ("code_verifier", verifier.secret().clone()),
    ])
    .await;
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let second = token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
    ])
    .await;
    // A retried rotation (the same successor again) and a replayed code (logged).
    token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
    ])
    .await;
    token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT.into()),
        ("code_verifier", verifier.secret().clone()),
    ])
    .await;
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("password sign-in"),
        "the log is at trace level: {log:.500}"
    );
    let secrets = [
        PASSWORD.to_owned(),
        "a-wrong-password-xyz".to_owned(),
        SECRET.to_owned(),
        code,
        verifier.secret().clone(),
        refresh,
        first["access_token"].as_str().unwrap().to_owned(),
        first["id_token"].as_str().unwrap().to_owned(),
        second["refresh_token"].as_str().unwrap().to_owned(),
    ];
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
    let _ = std::fs::remove_dir_all(dir);
}
