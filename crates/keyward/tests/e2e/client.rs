//! The client library's login machine, transition by transition, against a running
//! keyward; and `keyward login | token | logout | status` run as a user runs them,
//! including sixteen `keyward token` processes at once on an expiring token.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use keyward_client::login::{PendingLogin, unix_now};
use keyward_client::tokenfile::{TokenFile, TokenStore};
use keyward_client::{ClientError, Flow, Options, State, http};
use reqwest::StatusCode;
use url::Url;

use crate::support::*;

fn flow(app: &TestApp, home: &Path, options: Options) -> Flow {
    let http = http::http_client(Duration::from_secs(10)).unwrap();
    Flow::new(home, Url::parse(&app.issuer).unwrap(), http, options).unwrap()
}

fn login_options() -> Options {
    Options {
        login: true,
        ..Options::default()
    }
}

/// RequestLogin → ClaimToken.
async fn request_login(flow: &mut Flow) -> PendingLogin {
    match flow.step(State::RequestLogin).await {
        State::ClaimToken(pending) => pending,
        other => panic!("expected ClaimToken, got {other:?}"),
    }
}

pub fn assert_device_connected(outcome: Outcome) {
    let (status, html) = outcome.page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Device connected"), "{html}");
}

#[tokio::test]
async fn the_login_machine_transition_by_transition() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();
    let mut flow = flow(&app, &home, login_options());

    // NeedAuthentication → NoAuthentication → RequestLogin → ClaimToken.
    let state = flow.step(State::NeedAuthentication).await;
    assert!(matches!(state, State::NoAuthentication), "{state:?}");
    let state = flow.step(state).await;
    assert!(matches!(state, State::RequestLogin), "{state:?}");
    let pending = request_login(&mut flow).await;
    assert_eq!(pending.user_code.len(), 9);
    assert!(pending.url_to_open().unwrap().ends_with(&pending.user_code));
    assert_eq!(pending.poll.interval, Duration::from_secs(1));
    assert_eq!(
        pending.token_endpoint,
        format!("{}/token", app.issuer),
        "from discovery"
    );

    // ClaimToken → ClaimToken while the user has not approved.
    let state = flow.step(State::ClaimToken(pending)).await;
    let State::ClaimToken(pending) = state else {
        panic!("expected to keep polling, got {state:?}")
    };
    assert_eq!(pending.poll.interval, Duration::from_secs(1));

    // The user approves; ClaimToken → HasNewToken → Success, and the file is written.
    assert_device_connected(
        approve_device(
            &browser(),
            pending.url_to_open().unwrap(),
            "alice",
            "approve",
        )
        .await,
    );
    let state = flow.step(State::ClaimToken(pending)).await;
    let State::HasNewToken(token) = state else {
        panic!("expected tokens, got {state:?}")
    };
    assert_eq!(token.user_name.as_deref(), Some("alice"));
    assert_eq!(token.user_email.as_deref(), Some("alice@example.com"));
    assert_eq!(token.client_id.as_deref(), Some("device"));
    assert_eq!(token.server.as_deref(), Some(app.issuer.as_str()));
    assert_eq!(
        token.refresh_url.as_deref(),
        Some(format!("{}/token", app.issuer).as_str())
    );
    assert!(token.id_token.is_some() && token.refresh_token.is_some());
    assert!((token.expires_at - (unix_now() + 900)).abs() <= 5);
    assert!(is_active(&app, &token.access_token).await);
    let state = flow.step(State::HasNewToken(token.clone())).await;
    assert!(matches!(&state, State::Success(t) if *t == token));
    assert_eq!(flow.store().load().unwrap(), Some(token.clone()));

    // NeedAuthentication → HasToken → Success on a fresh token.
    let mut reader = self::flow(&app, &home, Options::default());
    let state = reader.step(State::NeedAuthentication).await;
    assert!(matches!(&state, State::HasToken(t) if *t == token));
    let state = reader.step(state).await;
    assert!(matches!(state, State::Success(_)));
    drop(reader);

    // NeedRefresh → HasNewToken: new access and refresh tokens, the user kept.
    let state = flow.step(State::NeedRefresh(token.clone())).await;
    let State::HasNewToken(refreshed) = state else {
        panic!("expected a refreshed token, got {state:?}")
    };
    assert_ne!(refreshed.access_token, token.access_token);
    assert_ne!(refreshed.refresh_token, token.refresh_token);
    assert_eq!(refreshed.user_name.as_deref(), Some("alice"));
    assert!(is_active(&app, &refreshed.access_token).await);

    // The same rotated-away token again, before its successor was used: the same
    // successor (a retry after a lost answer). Then the successor is used.
    let state = flow.step(State::NeedRefresh(token.clone())).await;
    assert!(
        matches!(&state, State::HasNewToken(t) if t.refresh_token == refreshed.refresh_token),
        "{state:?}"
    );
    let state = flow.step(State::NeedRefresh(refreshed.clone())).await;
    assert!(matches!(state, State::HasNewToken(_)), "{state:?}");

    // NeedRefresh with the rotated-away refresh token, whose successor was used since:
    // the server refuses (and, seeing reuse, revokes the grant) → NoAuthentication →
    // Failure(LoginRequired) for a flow that may not log in.
    let state = flow.step(State::NeedRefresh(token)).await;
    assert!(matches!(state, State::NoAuthentication), "{state:?}");
    let mut no_login = self::flow(&app, &home, Options::default());
    let state = no_login.step(State::NoAuthentication).await;
    assert!(
        matches!(&state, State::Failure(ClientError::LoginRequired { server }) if *server == app.issuer)
    );
    assert!(!is_active(&app, &refreshed.access_token).await);
    let _ = std::fs::remove_dir_all(home);
}

#[tokio::test]
async fn polling_slow_down_denial_expiry_and_refusal() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();
    let mut flow = flow(&app, &home, login_options());
    // Two polls in a row fall within the interval whatever the wall clock does (before,
    // this needed two polls in one wall-clock second and tried three times).
    app.freeze_clock();

    // Polling too fast: the server says slow_down and the interval grows by 5 s.
    let mut pending = request_login(&mut flow).await;
    for poll in 0..2 {
        pending.next_poll = Instant::now();
        pending = match flow.step(State::ClaimToken(pending)).await {
            State::ClaimToken(pending) => pending,
            other => panic!("expected to keep polling, got {other:?}"),
        };
        let expected = if poll == 0 { 1 } else { 6 };
        assert_eq!(
            pending.poll.interval,
            Duration::from_secs(expected),
            "poll {poll}"
        );
    }
    assert_eq!(pending.poll.interval, Duration::from_secs(6));
    assert!(pending.next_poll >= Instant::now() + Duration::from_secs(5));

    // The user denies: ClaimToken → Failure(AccessDenied).
    let pending = request_login(&mut flow).await;
    let (status, _) = approve_device(&browser(), pending.url_to_open().unwrap(), "alice", "deny")
        .await
        .page();
    assert_eq!(status, StatusCode::OK);
    let state = flow.step(State::ClaimToken(pending)).await;
    assert!(
        matches!(state, State::Failure(ClientError::AccessDenied)),
        "{state:?}"
    );

    // An unknown client: RequestLogin → Failure naming the server's refusal.
    let mut stranger = self::flow(
        &app,
        &home,
        Options {
            client_id: "no-such-client".into(),
            ..login_options()
        },
    );
    let state = stranger.step(State::RequestLogin).await;
    assert!(
        matches!(&state, State::Failure(ClientError::Refused { error, .. }) if error == "invalid_client"),
        "{state:?}"
    );
    assert!(!home.join("servers").exists(), "nothing written");

    // The code expires before anyone approves: ClaimToken → Failure(Expired).
    let short = spawn_app(
        Db::Sqlite,
        "device_poll_interval = \"1s\"\ndevice_code_ttl = \"2s\"",
    )
    .await
    .unwrap();
    let mut flow = self::flow(&short, &home, login_options());
    let pending = request_login(&mut flow).await;
    let (state, polls) = tokio::time::timeout(Duration::from_secs(60), async move {
        let mut state = State::ClaimToken(pending);
        let mut polls = 0;
        while let State::ClaimToken(_) = state {
            state = flow.step(state).await;
            polls += 1;
        }
        (state, polls)
    })
    .await
    .expect("the client still polled a minute after its code expired");
    assert!(
        matches!(state, State::Failure(ClientError::Expired)),
        "{state:?}"
    );
    // The first poll is due one interval (1 s) after the request, so the next would be
    // due at or after expires_in (2 s): the client stops after one poll, however late
    // it came, instead of polling on until the server says expired_token.
    assert_eq!(polls, 1, "stops at expires_in");
    let _ = std::fs::remove_dir_all(home);
}

/// An address on 127.0.0.1 that refuses connections for as long as the returned
/// socket lives: bound (so no other test's port-0 bind is handed the port) but not
/// listening (so a connection is refused at once).
pub fn refusing_address() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}

/// Runs `keyward <args>` with `home` as KEYWARD_HOME.
pub async fn keyward(home: &Path, args: &[&str]) -> Output {
    keyward_cli(home, args).output().await.unwrap()
}

/// `keyward login <issuer> --no-browser`, approved as alice in a browser from the URL
/// it prints. Returns its stderr.
pub async fn cli_login(app: &TestApp, home: &Path, extra: &[&str]) -> String {
    let mut args = vec!["login", app.issuer.as_str(), "--no-browser"];
    args.extend_from_slice(extra);
    let mut login = Watched::spawn(keyward_cli(home, &args));
    let url = login.device_url(&app.issuer).await;
    assert_device_connected(approve_device(&browser(), &url, "alice", "approve").await);
    let (status, _, stderr) = login.finish().await;
    assert!(status.success(), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_token_status_logout_as_a_user_runs_them() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();

    // Not logged in: `keyward token` exits 3 and says what to run.
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("run `keyward login {}`", app.issuer)),
        "{stderr}"
    );

    let stderr = cli_login(&app, &home, &[]).await;
    let user_code = stderr
        .lines()
        .find_map(|l| l.strip_prefix("and check that it shows the code "))
        .expect("user code shown");
    assert!(
        stderr.contains(&format!("?user_code={user_code}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "Logged in to {} as alice <alice@example.com>.",
            app.issuer
        )),
        "{stderr}"
    );
    let store = TokenStore::for_server(&home, &Url::parse(&app.issuer).unwrap()).unwrap();
    let saved = store.load().unwrap().expect("token file written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // `keyward token` (the server found from the only token file) prints the token and
    // nothing else; it is accepted by the server.
    let out = keyward(&home, &["token"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n", saved.access_token));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let userinfo = http()
        .get(format!("{}/userinfo", app.issuer))
        .bearer_auth(text(&out.stdout).trim())
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::OK);
    let claims: serde_json::Value = userinfo.json().await.unwrap();
    assert_eq!(claims["preferred_username"], "alice", "{claims}");
    assert_eq!(claims["email"], "alice@example.com", "{claims}");
    assert_eq!(
        claims["sub"],
        jwt_payload(&saved.access_token)["sub"],
        "the token's user: {claims}"
    );

    // `keyward login` again: nothing to do.
    let out = keyward(&home, &["login", &app.issuer, "--no-browser"]).await;
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("Already logged in"),
        "{}",
        text(&out.stderr)
    );

    // `keyward status`: who and until when, never a token.
    let out = keyward(&home, &["status"]).await;
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(table.starts_with("SERVER"), "{table}");
    assert!(table.contains(&app.issuer), "{table}");
    assert!(table.contains("alice <alice@example.com>"), "{table}");
    assert!(
        table.contains("expires in 14m") || table.contains("expires in 15m"),
        "{table}"
    );
    for secret in [
        &saved.access_token,
        saved.refresh_token.as_ref().unwrap(),
        saved.id_token.as_ref().unwrap(),
    ] {
        assert!(!table.contains(secret.as_str()));
    }

    // `keyward logout`: revoked at the server, the file gone; then a login is needed.
    let out = keyward(&home, &["logout", &app.issuer]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Logged out of"),
        "{}",
        text(&out.stderr)
    );
    assert!(!store.path().exists());
    assert!(
        !is_active(&app, &saved.access_token).await,
        "the grant is revoked"
    );
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert_eq!(out.status.code(), Some(3));
    let out = keyward(&home, &["logout", &app.issuer]).await;
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("Not logged in"));

    // Ctrl-C while the login waits for approval: a clear word, the shell's 130, no file.
    let mut login = Watched::spawn(keyward_cli(
        &home,
        &["login", app.issuer.as_str(), "--no-browser"],
    ));
    login.device_url(&app.issuer).await;
    login.interrupt();
    let (status, stdout, stderr) = login.finish().await;
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.ends_with("error: login cancelled\n"), "{stderr}");
    assert!(!store.path().exists());
    let _ = std::fs::remove_dir_all(home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_token_processes_refresh_once_and_agree() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();
    cli_login(&app, &home, &[]).await;
    let store = TokenStore::for_server(&home, &Url::parse(&app.issuer).unwrap()).unwrap();
    let old = store.load().unwrap().unwrap();
    // Almost expired: 10 s left, inside the 60 s margin.
    store
        .save(&TokenFile {
            expires_at: unix_now() + 10,
            ..old.clone()
        })
        .unwrap();

    let children: Vec<_> = (0..16)
        .map(|_| {
            keyward_cli(&home, &["token", &app.issuer])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut printed = Vec::new();
    for child in children {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        printed.push(text(&out.stdout));
    }
    printed.dedup();
    assert_eq!(printed.len(), 1, "all sixteen print the same token");
    let new = store.load().unwrap().expect("the file stays valid");
    assert_eq!(printed[0], format!("{}\n", new.access_token));
    assert_ne!(new.access_token, old.access_token);
    assert!(new.expires_at > unix_now() + 800);
    assert!(is_active(&app, &new.access_token).await);

    // Exactly one refresh reached the server: the login's refresh token and its one
    // rotation. (A second refresh would have added a row; reuse of the old one would
    // have revoked everything.)
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/keyward.db", app.dir.display()))
        .await
        .unwrap();
    let (rows, rotated): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(rotated_at) FROM refresh_tokens")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((rows, rotated), (2, 1));
    let _ = std::fs::remove_dir_all(home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_edges_corrupt_file_server_down_refresh_rejected() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();
    cli_login(&app, &home, &[]).await;
    let store = TokenStore::for_server(&home, &Url::parse(&app.issuer).unwrap()).unwrap();
    let good = store.load().unwrap().unwrap();

    // The server is unreachable: a token still valid for 30 s is printed with a
    // warning; an expired one is an error that names the server, not a login prompt.
    let (_held, refusing) = refusing_address();
    let closed = format!("http://{refusing}/token");
    store
        .save(&TokenFile {
            expires_at: unix_now() + 30,
            refresh_url: Some(closed.clone()),
            ..good.clone()
        })
        .unwrap();
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n", good.access_token));
    assert!(
        text(&out.stderr).contains("warning: could not refresh"),
        "{}",
        text(&out.stderr)
    );
    store
        .save(&TokenFile {
            expires_at: unix_now() - 1,
            refresh_url: Some(closed.clone()),
            ..good.clone()
        })
        .unwrap();
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach {closed}")),
        "{stderr}"
    );
    assert!(!stderr.contains(good.refresh_token.as_deref().unwrap()));

    // A rejected refresh (the grant revoked at the server) means: log in again.
    let revoked = http()
        .post(format!("{}/revoke", app.issuer))
        .form(&[
            ("token", good.refresh_token.as_deref().unwrap()),
            ("client_id", "device"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    store
        .save(&TokenFile {
            expires_at: unix_now() + 5,
            ..good.clone()
        })
        .unwrap();
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("keyward login"));

    // A corrupt or half-written file is no token.
    std::fs::write(store.path(), "access_token = \"abc\nexpires_at = ").unwrap();
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert_eq!(out.status.code(), Some(3));
    let out = keyward(&home, &["status"]).await;
    assert!(
        text(&out.stdout).contains("unreadable file"),
        "{}",
        text(&out.stdout)
    );

    // --force logs in again over it; the new file is whole.
    cli_login(&app, &home, &["--force"]).await;
    let fresh = store.load().unwrap().expect("a whole file");
    assert!(is_active(&app, &fresh.access_token).await);

    // An unwritable home: a clear error, no token on stdout.
    let blocked = home.join("blocked");
    std::fs::write(&blocked, "a file, not a directory").unwrap();
    let out = keyward(&blocked, &["login", &app.issuer, "--no-browser"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot create directory"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(home);
}

/// Runs the README's terminal walk-through with bash, and plays the person: reads the
/// URL `keyward login` prints, signs in as alice and approves in a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_terminal_walkthrough_runs_as_written() {
    let (bash, port, dir) = readme_script("terminal");
    let mut bash = tokio::process::Command::from(bash);
    bash.env("KEYWARD_HOME", dir.join("home"))
        .env_remove("KEYWARD_SERVER")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER");
    let mut walkthrough = Watched::spawn(bash);
    let url = walkthrough
        .device_url(&format!("http://127.0.0.1:{port}"))
        .await;
    assert_device_connected(approve_device(&browser(), &url, "alice", "approve").await);
    let (status, out, stderr) = walkthrough.finish().await;
    assert!(status.success(), "walkthrough failed:\n{out}\n{stderr}");
    assert!(
        out.contains(r#""preferred_username":"alice""#),
        "userinfo:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("alice <alice@example.com>") && l.contains("expires in")),
        "status:\n{out}"
    );
    assert!(stderr.contains("Logged out of"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
