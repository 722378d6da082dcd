//! The admin commands as a user runs them, the configuration errors they see, and the
//! README's walk-through, run as written.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use crate::replicas::{start_replica, start_replica_env, start_replica_logging};
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

/// Checks that a command failed with exit status 1, saying `message` on stderr, and
/// printed nothing on stdout.
fn refused(output: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The first word of each line of a listing (its header's first, then the ids).
fn first_column(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect()
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
    refused(&again, "client \"reports\" already exists");
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
    refused(
        &bad,
        "\"http://example.com/cb\": http is only allowed for loopback addresses; use https",
    );
    let weak = keyward(
        &dir,
        &["user", "add", "dave", "--password-stdin"],
        Some("short\n"),
    );
    refused(&weak, "a password needs at least 8 characters");
    // Nothing was stored by the refused commands.
    let clients = stdout(&keyward(&dir, &["client", "list"], None));
    assert_eq!(first_column(&clients), ["CLIENT", "reports"], "{clients}");
    let users = stdout(&keyward(&dir, &["user", "list"], None));
    assert_eq!(first_column(&users), ["USERNAME", "carol"], "{users}");

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

    // Every change the commands made, and none they refused, is in the audit log,
    // newest first, as the account that ran them.
    let login = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let audit = stdout(&keyward(&dir, &["audit"], None));
    let logged: Vec<(&str, &str, &str)> = audit
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[2], fields[3], fields[4])
        })
        .collect();
    let actor = format!("cli:{login}");
    assert_eq!(
        logged,
        [
            (actor.as_str(), "user.disable", "carol"),
            (actor.as_str(), "client.delete", "reports"),
            (actor.as_str(), "keys.rotate", "signing-keys"),
            (actor.as_str(), "keys.rotate", "signing-keys"),
            (actor.as_str(), "user.create", "carol"),
            (actor.as_str(), "client.create", "reports"),
        ],
        "{audit}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `sql` on the database at `url` behind keyward's back.
async fn behind_its_back(db: Db, url: &str, sql: &str) {
    match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// A code flow for alice at demo-app, redeemed: the token response.
async fn signed_in(app: &TestApp) -> serde_json::Value {
    let (url, verifier) = authorize_url(&app.issuer, "demo-app", "openid offline_access", "");
    let params = drive(&browser(), &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    let (status, tokens) = redeem_code(
        app,
        "demo-app",
        Some(SECRET),
        &params["code"],
        verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

/// `keyward store check` on the database of a running server, with the server's
/// configuration: after real flows (codes redeemed, a chain rotated) it exits 0; with
/// a rotation chain cut and a grant deleted behind keyward's back it exits 1, naming
/// both grants and never a token or a token's hash.
async fn store_check_finds_a_database_broken_on_purpose(db: Db) {
    let Some(app) = spawn_app(db, "").await else {
        return;
    };
    let url = app.state.config().database_url.clone();
    std::fs::write(
        app.dir.join("check.toml"),
        format!("database_url = \"{url}\"\n"),
    )
    .unwrap();
    let check = || {
        keyward(
            &app.dir,
            &["store", "check", "--config", "check.toml"],
            None,
        )
    };

    let chain = signed_in(&app).await;
    let first = chain["refresh_token"].as_str().unwrap().to_owned();
    let (status, rotated) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let other = signed_in(&app).await;
    let output = check();
    let out = stdout(&output);
    assert!(out.contains("consistent"), "{out}");
    assert!(
        out.contains("2 users, 4 clients, 2 grants, 3 refresh tokens"),
        "{out}"
    );

    let gid = |tokens: &serde_json::Value| {
        jwt_payload(tokens["access_token"].as_str().unwrap())["gid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (cut, lost) = (gid(&chain), gid(&other));
    behind_its_back(
        db,
        &url,
        &format!("UPDATE refresh_tokens SET rotated_at = 1 WHERE grant_id = '{cut}'"),
    )
    .await;
    behind_its_back(db, &url, &format!("DELETE FROM grants WHERE id = '{lost}'")).await;
    let output = check();
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("inconsistent: 3 problem(s)"), "{err}");
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), 3, "{out}");
    assert!(
        problems
            .iter()
            .any(|l| l.contains(&format!("grant {cut} is live")) && l.contains("cut")),
        "{out}"
    );
    assert_eq!(
        problems
            .iter()
            .filter(|l| l.contains(&format!("grant {lost} is missing")))
            .count(),
        2,
        "its refresh token and its code: {out}"
    );
    for token in [
        &first,
        rotated["refresh_token"].as_str().unwrap(),
        other["refresh_token"].as_str().unwrap(),
    ] {
        let hash = keyward_proto::TokenHash::of(token);
        assert!(!out.contains(token) && !err.contains(token));
        assert!(!out.contains(hash.as_str()) && !err.contains(hash.as_str()));
    }
}

#[tokio::test]
async fn store_check_on_sqlite() {
    store_check_finds_a_database_broken_on_purpose(Db::Sqlite).await;
}

#[tokio::test]
async fn store_check_on_postgres() {
    store_check_finds_a_database_broken_on_purpose(Db::Postgres).await;
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
        refused(&output, key);
        assert!(
            !dir.join("keyward-data").exists(),
            "{text}: a database was created"
        );
    }
    let output = keyward(&dir, &["serve", "--config", "missing.toml"], None);
    refused(&output, "missing.toml");
    assert!(
        !dir.join("keyward-data").exists(),
        "a database was created without a configuration"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the README's walk-through block with bash, on a free port instead of 8080.
/// The script waits for the server with an unbounded `until curl …` loop, so the whole
/// run is bounded here: a server that never answers fails the test instead of hanging.
#[tokio::test]
async fn readme_walkthrough_runs_as_written() {
    let (bash, _port, dir) = readme_script("walkthrough");
    let (status, out, err) = run_bounded(
        bash,
        &dir,
        Duration::from_secs(120),
        "the README walk-through (is `keyward serve` answering /readyz?)",
    )
    .await;
    assert!(status.success(), "walkthrough failed:\n{out}\n{err}");
    assert!(
        out.contains("\"active\":true"),
        "the walkthrough ends with an active token:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `command` in a process group of its own, its output in files under `dir`, for
/// at most `limit`; past it, kills the whole group (a script's background server too)
/// and fails, saying that `what` did not finish and what it printed.
async fn run_bounded(
    mut command: Command,
    dir: &std::path::Path,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String, String) {
    use std::os::unix::process::CommandExt as _;
    let out_path = dir.join("bounded-run.stdout");
    let err_path = dir.join("bounded-run.stderr");
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = tokio::process::Command::from(command)
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let finished = tokio::time::timeout(limit, child.wait()).await;
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    match finished {
        Ok(status) => (status.expect("wait"), read(&out_path), read(&err_path)),
        Err(_) => {
            // The group leader is not reaped yet, so the group id is still ours.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = child.wait().await;
            panic!(
                "{what} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
    }
}

/// A fresh directory with a `keyward.toml` of the test clients and users, for a
/// `keyward serve` process: the directory and the file.
fn served_config() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir();
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!("issuer = \"http://127.0.0.1:9\"\n{}", base_config("")),
    )
    .unwrap();
    (dir, config)
}

/// At the most verbose log level, a whole login, exchange, refresh, failed login, failed
/// client authentication, userinfo, introspection and revocation leave no password,
/// client secret, code, verifier, cookie or token the run handled in the log.
#[tokio::test]
async fn logs_never_contain_secrets() {
    let (dir, config) = served_config();
    let log_path = dir.join("keyward.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = start_replica_logging(&config, &dir, "trace", Stdio::from(log));
    let base = server.base.clone();

    // Every secret the run handles, with a name for the failure message.
    let mut secrets: Vec<(String, String)> = vec![
        ("the users' password".into(), PASSWORD.into()),
        ("demo-app's secret".into(), SECRET.into()),
        ("third-party's secret".into(), THIRD_PARTY_SECRET.into()),
    ];

    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (authorize, verifier) = authorize_url(&base, "demo-app", "openid offline_access", "");
    let wrong_password = "a-wrong-password-xyz";
    secrets.push(("a wrong password".into(), wrong_password.into()));
    let wrong = drive(&browser, &authorize, "alice", wrong_password, "approve").await;
    assert!(matches!(wrong, Outcome::Page(..)));
    let code = drive(&browser, &authorize, "alice", PASSWORD, "approve")
        .await
        .callback()["code"]
        .clone();
    secrets.push(("the code".into(), code.clone()));
    secrets.push(("the PKCE verifier".into(), verifier.secret().clone()));
    use reqwest::cookie::CookieStore as _;
    let url = Url::parse(&base).unwrap();
    for path in ["/", "/login", "/consent", "/authorize", "/account"] {
        if let Some(cookies) = jar.cookies(&url.join(path).unwrap()) {
            for pair in cookies.to_str().unwrap().split("; ") {
                let (name, value) = pair.split_once('=').unwrap();
                assert!(value.len() >= 16, "cookie {name} is no secret: {value}");
                secrets.push((format!("the cookie {name}"), value.to_owned()));
            }
        }
    }
    assert!(
        secrets.iter().any(|(name, _)| name.contains("cookie")),
        "the browser holds a session cookie"
    );

    let token = |form: Vec<(&'static str, String)>, secret: &'static str| {
        let base = base.clone();
        async move {
            let response = http()
                .post(format!("{base}/token"))
                .basic_auth("demo-app", Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let exchange = vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT.into()),
        ("code_verifier", verifier.secret().clone()),
    ];
    let mut answers = Vec::new();
    let (status, first) = token(exchange.clone(), SECRET).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    answers.push(first);
    let rotate = vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
    ];
    let (status, second) = token(rotate.clone(), SECRET).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let access = second["access_token"].as_str().unwrap().to_owned();
    let successor = second["refresh_token"].as_str().unwrap().to_owned();
    answers.push(second);
    // The access token used: userinfo, introspection.
    let userinfo = http()
        .get(format!("{base}/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::OK);
    let introspection = http()
        .post(format!("{base}/introspect"))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(introspection.status(), StatusCode::OK);
    let introspection: serde_json::Value = introspection.json().await.unwrap();
    assert_eq!(introspection["active"], true, "{introspection}");
    // A retried rotation (the same successor again), a replayed code (logged), a wrong
    // client secret, an unknown refresh token and client credentials.
    let (status, retried) = token(rotate, SECRET).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    answers.push(retried);
    let (status, replayed) = token(exchange, SECRET).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{replayed}");
    let wrong_secret = "a-wrong-client-secret-0123456789";
    secrets.push(("a wrong client secret".into(), wrong_secret.into()));
    let (status, _) = token(
        vec![("grant_type", "client_credentials".into())],
        wrong_secret,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let unknown = "an-unknown-refresh-token-0123456789";
    secrets.push(("an unknown refresh token".into(), unknown.into()));
    let (status, _) = token(
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", unknown.into()),
        ],
        SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, service) = token(vec![("grant_type", "client_credentials".into())], SECRET).await;
    assert_eq!(status, StatusCode::OK, "{service}");
    answers.push(service);

    // The refresh token revoked (after the replayed code revoked its grant).
    let revocation = http()
        .post(format!("{base}/revoke"))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", successor.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revocation.status(), StatusCode::OK);
    drop(server);

    for (i, answer) in answers.iter().enumerate() {
        for field in ["access_token", "refresh_token", "id_token"] {
            if let Some(value) = answer[field].as_str() {
                secrets.push((format!("{field} of token answer {i}"), value.to_owned()));
            }
        }
    }
    assert_eq!(
        secrets
            .iter()
            .filter(|(name, _)| name.starts_with("access_token"))
            .count(),
        4,
        "every token answer was collected"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("password sign-in"),
        "the log is at trace level: {log:.500}"
    );
    for (name, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{name} reached the log");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts `keyward serve` with `format` (`KEYWARD_LOG_FORMAT`, or the default when
/// `None`) and its log in a file; sends one request with a plain `x-request-id` and one
/// with a hostile one (and a secret in the query); returns the log once both requests'
/// lines are in it, and the id keyward gave the second.
async fn logged_requests(format: Option<&str>) -> (String, String) {
    let (dir, config) = served_config();
    let log_path = dir.join("keyward.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let env: Vec<(&str, &std::ffi::OsStr)> = format
        .map(|f| ("KEYWARD_LOG_FORMAT", std::ffi::OsStr::new(f)))
        .into_iter()
        .collect();
    let server = start_replica_env(&config, &dir, "info", Stdio::from(log), &env);
    let plain = http()
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(plain.headers()["x-request-id"], "trace-me-42");
    let hostile = http()
        .get(format!("{}/token?code=the-secret-code", server.base))
        .header("x-request-id", "forged\" \"level\":\"ERROR")
        .send()
        .await
        .unwrap();
    assert_eq!(hostile.status(), StatusCode::METHOD_NOT_ALLOWED);
    let given = hostile.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        given.len(),
        32,
        "a new id instead of the forged one: {given}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("trace-me-42") && text.contains(&given) {
            drop(server);
            assert!(
                !text.contains("the-secret-code"),
                "the query was logged: {text}"
            );
            assert!(!text.contains("forged"), "the forged id was logged: {text}");
            return (text, given);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the requests' lines never reached the log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `KEYWARD_LOG_FORMAT=json`: every log line is one JSON object, and each request's
/// access line carries its id (the caller's when plain, else a new one, returned as
/// `x-request-id`), method, path without the query, and status.
#[tokio::test]
async fn json_logs_carry_each_requests_id() {
    let (log, given) = logged_requests(Some("json")).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "keyward::access" && l["span"]["id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}: {log}"))
            .clone()
    };
    let plain = access("trace-me-42");
    assert_eq!(plain["level"], "INFO");
    assert_eq!(plain["span"]["method"], "GET");
    assert_eq!(plain["span"]["path"], "/healthz");
    assert_eq!(plain["fields"]["status"], 200);
    assert!(plain["fields"]["micros"].is_u64(), "{plain}");
    let hostile = access(&given);
    assert_eq!(hostile["span"]["path"], "/token");
    assert_eq!(hostile["fields"]["status"], 405);
}

/// The text format (the default) has no colour codes when stderr is not a terminal.
#[tokio::test]
async fn text_logs_have_no_colour_off_a_terminal() {
    let (log, given) = logged_requests(None).await;
    assert!(!log.contains('\u{1b}'), "an escape sequence in: {log}");
    let line = log
        .lines()
        .find(|l| l.contains(&given))
        .unwrap_or_else(|| panic!("no line for {given}: {log}"));
    assert!(line.contains("keyward::access"), "{line}");
    assert!(line.contains("status=405"), "{line}");
}

/// SIGTERM: keyward stops taking requests and lets the one in flight finish (here a
/// token request whose body is still arriving when the signal comes), then exits 0.
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (dir, config) = served_config();
    let mut server = start_replica(&config, &dir);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = "grant_type=client_credentials&scope=api%3Aread";
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("demo-app:{SECRET}"),
    );
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (first, rest) = body.split_at(10);
    stream
        .write_all(format!("{head}{first}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.exit_within(Duration::ZERO).is_none(),
        "keyward exited with a request in flight"
    );
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_string(&mut answer))
        .await
        .expect("the answer, then the connection closed, within 15 s")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"), "{answer}");
    let status = server
        .exit_within(Duration::from_secs(10))
        .expect("keyward still running 10 s after its last request");
    assert!(status.success(), "{status:?}");
}

/// `keyward completions SHELL` prints a script the shell accepts (bash checks its
/// syntax here), naming the subcommands.
#[test]
fn completions_for_each_shell() {
    let dir = temp_dir();
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&keyward(&dir, &["completions", shell], None));
        for word in ["login", "token", "serve", "completions"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let bash = dir.join("keyward.bash");
    std::fs::write(
        &bash,
        stdout(&keyward(&dir, &["completions", "bash"], None)),
    )
    .unwrap();
    let checked = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let refused = keyward(&dir, &["completions", "tcsh"], None);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "clap refuses an unknown shell"
    );
}

/// One request on an open connection, `GET path` kept alive: the status line and body.
async fn get_on(stream: &mut tokio::net::TcpStream, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: keyward\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "the connection was closed");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= length {
                let status = head.lines().next().unwrap().to_owned();
                return (status, body[..length].to_owned());
            }
        }
    }
}

/// Waits (up to 20 s) until the log at `path` has a line containing `text`.
async fn log_line(path: &std::path::Path, text: &str) -> String {
    for _ in 0..200 {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains(text)) {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no log line with {text:?}:\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// `keyward serve` on SIGHUP reads its configuration file again and applies the
/// clients, users and connectors, while a kept-alive connection stays open: a client
/// taken out of the file loses its tokens and can no longer get one, a new one can, a
/// user taken out is disabled, a new connector is on the login page. A file that does
/// not load changes nothing, and settings a reload cannot apply are named.
#[tokio::test]
async fn sighup_reloads_clients_users_and_connectors() {
    let (dir, config) = served_config();
    let log_path = dir.join("keyward.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = start_replica_logging(&config, &dir, "info", Stdio::from(log));
    let base = server.base.clone();
    let addr = base.trim_start_matches("http://").to_owned();
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_on(&mut kept, "/healthz").await.0, "HTTP/1.1 200 OK");

    let cc = |client: &'static str, secret: &'static str| {
        let base = base.clone();
        async move {
            let answer = http()
                .post(format!("{base}/token"))
                .basic_auth(client, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap();
            let status = answer.status();
            (status, answer.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, before) = cc("demo-app", SECRET).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let old_token = before["access_token"].as_str().unwrap().to_owned();
    let introspect = |token: String| {
        let base = base.clone();
        async move {
            http()
                .post(format!("{base}/introspect"))
                .basic_auth("new-app", Some("new-app-secret-0123456789abcdef"))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
        }
    };

    // The new file: demo-app and bob are gone, new-app and a connector are added, and
    // a setting a reload cannot apply has changed.
    let original = std::fs::read_to_string(&config).unwrap();
    let demo_app = original
        .split("[[clients]]")
        .find(|block| block.contains("client_id = \"demo-app\""))
        .unwrap();
    let bob = original
        .split("[[users]]")
        .find(|block| block.contains("username = \"bob\""))
        .unwrap();
    let reloaded = format!(
        "access_token_ttl = \"5m\"\n{}\n\
         [[clients]]\nclient_id = \"new-app\"\nclient_secret = \"new-app-secret-0123456789abcdef\"\n\
         grant_types = [\"client_credentials\"]\nscopes = [\"api:read\"]\nintrospect = true\n\n\
         [[connectors]]\nid = \"corp\"\ntype = \"oidc\"\nname = \"Corporate SSO\"\n\
         issuer = \"https://sso.example.com\"\nclient_id = \"keyward\"\nclient_secret = \"change-me\"\n",
        original
            .replace(&format!("[[clients]]{demo_app}"), "")
            .replace(&format!("[[users]]{bob}"), "")
    );
    // First a file that does not load: logged, nothing changes.
    std::fs::write(&config, "listen = [oops").unwrap();
    server.signal("HUP");
    let refused = log_line(&log_path, "the configuration was not reloaded").await;
    assert!(refused.contains("keyward.toml"), "{refused}");
    assert_eq!(cc("demo-app", SECRET).await.0, StatusCode::OK);

    std::fs::write(&config, reloaded).unwrap();
    server.signal("HUP");
    let done = log_line(&log_path, "configuration reloaded").await;
    assert!(done.contains(r#"connectors="corp,password""#), "{done}");
    let removed = log_line(&log_path, "client removed from the configuration file").await;
    assert!(removed.contains("demo-app"), "{removed}");
    let restart = log_line(&log_path, "apply at the next restart").await;
    assert!(restart.contains("access_token_ttl"), "{restart}");

    // The connection opened before is still served.
    assert_eq!(get_on(&mut kept, "/healthz").await.0, "HTTP/1.1 200 OK");
    // demo-app is gone, with its tokens; new-app is in.
    let (status, refused) = cc("demo-app", SECRET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["error"], "invalid_client");
    let (status, after) = cc("new-app", "new-app-secret-0123456789abcdef").await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let answer = introspect(old_token).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap()["active"],
        false
    );
    // bob is disabled, alice is not.
    let users = stdout(&keyward(
        &dir,
        &["--config", config.to_str().unwrap(), "user", "list"],
        None,
    ));
    let status_of = |name: &str| {
        users
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{users}"))
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_owned()
    };
    assert_eq!(status_of("bob"), "disabled");
    assert_eq!(status_of("alice"), "active");
    // The login page offers the new connector.
    let (authorize, _) = authorize_url(&base, "third-party", "openid", "");
    let html = open(&browser(), &authorize).await.html;
    assert!(html.contains("Corporate SSO"), "{html}");
    assert!(html.contains("name=\"password\""), "{html}");
}
