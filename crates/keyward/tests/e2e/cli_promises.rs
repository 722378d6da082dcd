//! What the README and keyward.example.toml promise of the admin commands' flags, the
//! terminal client's flags and environment, and the clients and users declared in the
//! configuration file: each promise held by a test that fails when it breaks.

use std::process::{Output, Stdio};
use std::time::Duration;

use keyward_client::tokenfile::TokenStore;
use reqwest::StatusCode;
use url::Url;

use crate::client::{assert_device_connected, cli_login, keyward};
use crate::support::*;

/// `keyward <args>` on the database at `database_url` (an in-process server's), with
/// `stdin` as standard input; at most a minute.
async fn admin(database_url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KEYWARD_DATABASE_URL", database_url)
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run keyward");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`keyward {}` did not finish within a minute",
                args.join(" ")
            )
        })
        .expect("wait")
}

/// The stdout of a command that must have succeeded.
fn succeeded(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", text(&output.stderr));
    text(&output.stdout)
}

/// The SQLite database of an in-process server.
fn sqlite_url(app: &TestApp) -> String {
    format!("sqlite://{}/keyward.db", app.dir.display())
}

/// The `client_secret:` line of `keyward client add`.
fn shown_secret(added: &str) -> String {
    added
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("no secret shown: {added}"))
        .trim()
        .to_owned()
}

/// The line of a listing whose first column is `id`.
fn row<'a>(listing: &'a str, id: &str) -> &'a str {
    listing
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("{id} not listed: {listing}"))
}

/// `url` with [`REDIRECT`] replaced by `redirect`.
fn with_redirect(url: &str, redirect: &str) -> String {
    url.replace(&urlencode(REDIRECT), &urlencode(redirect))
}

/// Follows redirects from `url` until one leaves `issuer`; returns where it goes.
async fn redirected_out(browser: &reqwest::Client, url: &str, issuer: &str) -> Url {
    let mut response = browser.get(url).send().await.expect("GET");
    for _ in 0..10 {
        let next = location(&response);
        if !next.as_str().starts_with(issuer) {
            return next;
        }
        response = browser.get(next).send().await.expect("follow");
    }
    panic!("still at {issuer} after ten redirects from {url}");
}

/// An authorization request to `client_id` with `redirect` from a browser that is not
/// signed in: a registered URI is sent on to the login page, another is refused.
async fn redirect_uri_accepted(app: &TestApp, client_id: &str, redirect: &str) -> bool {
    let (url, _) = authorize_url(&app.issuer, client_id, "openid", "");
    let response = http()
        .get(with_redirect(&url, redirect))
        .send()
        .await
        .expect("authorize");
    if response.status().is_redirection() {
        let next = location(&response);
        assert_eq!(next.path(), "/login", "{next}");
        return true;
    }
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.expect("page");
    assert!(html.contains("redirect"), "{html}");
    false
}

/// The scopes of an access token, sorted.
fn scope_of(access_token: &str) -> Vec<String> {
    let claims = jwt_payload(access_token);
    let mut scopes: Vec<String> = claims["scope"]
        .as_str()
        .expect("a scope claim")
        .split_whitespace()
        .map(String::from)
        .collect();
    scopes.sort();
    scopes
}

/// The claims of an ID token.
fn id_claims(tokens: &serde_json::Value) -> serde_json::Value {
    jwt_payload(tokens["id_token"].as_str().expect("an ID token"))
}

#[tokio::test]
async fn client_add_public_skip_consent_and_redirect_uris_do_what_they_say() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let db = sqlite_url(&app);
    let elsewhere = "https://app.example.com/cb";

    // --public --skip-consent, with two redirect URIs.
    let added = succeeded(
        &admin(
            &db,
            &[
                "client",
                "add",
                "native",
                "--public",
                "--redirect-uri",
                REDIRECT,
                "--redirect-uri",
                elsewhere,
                "--skip-consent",
            ],
            None,
        )
        .await,
    );
    assert!(
        added.contains("public client: no secret; PKCE required"),
        "{added}"
    );
    assert!(!added.contains("client_secret"), "{added}");
    // The same without the flags: a confidential client that asks for consent.
    let conf = succeeded(
        &admin(
            &db,
            &["client", "add", "conf", "--redirect-uri", REDIRECT],
            None,
        )
        .await,
    );
    assert_eq!(shown_secret(&conf).len(), 43, "{conf}");
    let list = succeeded(&admin(&db, &["client", "list"], None).await);
    let native = row(&list, "native");
    assert!(native.contains(" public "), "{native}");
    assert!(
        native.ends_with(&format!("{REDIRECT} {elsewhere}")),
        "{native}"
    );
    assert!(row(&list, "conf").contains(" confidential "), "{list}");

    // Both redirect URIs are registered; another is not.
    assert!(redirect_uri_accepted(&app, "native", REDIRECT).await);
    assert!(redirect_uri_accepted(&app, "native", elsewhere).await);
    assert!(!redirect_uri_accepted(&app, "native", "https://app.example.com/other").await);
    assert!(!redirect_uri_accepted(&app, "conf", elsewhere).await);

    // --skip-consent: no consent page to deny, the code comes back at once.
    let browser = browser();
    let (url, verifier) = authorize_url(&app.issuer, "native", "openid", "");
    let callback = drive(&browser, &url, "alice", PASSWORD, "deny")
        .await
        .callback();
    let code = callback
        .get("code")
        .unwrap_or_else(|| panic!("a consent page was shown and denied: {callback:?}"));
    // --public: the code is redeemed with the client id alone and the verifier.
    let (status, tokens) = token_request(
        &app,
        "native",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
            ("client_id", "native"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(
        jwt_payload(tokens["access_token"].as_str().unwrap())["client_id"],
        "native"
    );
    // The second redirect URI gets the code too (the browser is signed in now).
    let (url, _) = authorize_url(&app.issuer, "native", "openid", "");
    let out = redirected_out(&browser, &with_redirect(&url, elsewhere), &app.issuer).await;
    assert!(out.as_str().starts_with(&format!("{elsewhere}?")), "{out}");
    assert!(out.query_pairs().any(|(k, _)| k == "code"), "{out}");

    // Without --skip-consent the consent page is shown (and can be denied); without
    // --public a code is not redeemed without the secret.
    let (url, verifier) = authorize_url(&app.issuer, "conf", "openid", "");
    let denied = drive(&browser, &url, "alice", PASSWORD, "deny")
        .await
        .callback();
    assert_eq!(
        denied.get("error").map(String::as_str),
        Some("access_denied"),
        "{denied:?}"
    );
    let code = drive(&browser, &url, "alice", PASSWORD, "approve")
        .await
        .callback()["code"]
        .clone();
    let (status, body) = token_request(
        &app,
        "conf",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
            ("client_id", "conf"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
}

#[tokio::test]
async fn user_add_name_passwd_and_enable_do_what_they_say() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let db = sqlite_url(&app);
    let first = "the first password 1";
    let second = "the second password 2";
    succeeded(
        &admin(
            &db,
            &[
                "user",
                "add",
                "carol",
                "--email",
                "carol@example.com",
                "--name",
                "Carol Danvers",
                "--password-stdin",
            ],
            Some(&format!("{first}\n")),
        )
        .await,
    );

    // --name: the name in the ID token and at userinfo.
    let signed_in = browser();
    let (url, verifier) = authorize_url(&app.issuer, "demo-app", "openid profile email", "");
    let code = drive(&signed_in, &url, "carol", first, "approve")
        .await
        .callback()["code"]
        .clone();
    let (status, tokens) =
        redeem_code(&app, "demo-app", Some(SECRET), &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(id_claims(&tokens)["name"], "Carol Danvers", "{tokens}");
    let userinfo: serde_json::Value = http()
        .get(format!("{}/userinfo", app.issuer))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["name"], "Carol Danvers", "{userinfo}");
    assert_eq!(userinfo["preferred_username"], "carol", "{userinfo}");
    // Signed in: the next authorization needs no password.
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    drive(&signed_in, &url, "carol", "not asked", "approve")
        .await
        .callback();

    // passwd: the new password works, the old one no longer does, and the browser
    // that was signed in is asked to sign in again.
    let changed = succeeded(
        &admin(
            &db,
            &["user", "passwd", "carol", "--password-stdin"],
            Some(&format!("{second}\n")),
        )
        .await,
    );
    assert!(
        changed.contains("password of carol changed; their sessions are ended"),
        "{changed}"
    );
    let page = open(&signed_in, &url).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("name=\"password\""), "{}", page.html);
    let (status, html) = drive(&browser(), &url, "carol", first, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Invalid username or password."), "{html}");
    drive(&browser(), &url, "carol", second, "approve")
        .await
        .callback();

    // disable, then enable: refused while disabled, back afterwards.
    succeeded(&admin(&db, &["user", "disable", "carol"], None).await);
    let (status, html) = drive(&browser(), &url, "carol", second, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("This account is disabled."), "{html}");
    let enabled = succeeded(&admin(&db, &["user", "enable", "carol"], None).await);
    assert!(enabled.contains("enabled carol"), "{enabled}");
    let users = succeeded(&admin(&db, &["user", "list"], None).await);
    assert!(row(&users, "carol").contains(" active "), "{users}");
    let callback = drive(&browser(), &url, "carol", second, "approve")
        .await
        .callback();
    assert!(callback.contains_key("code"), "{callback:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_margin_login_scope_and_keyward_server_pick_what_they_say() {
    let a = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let b = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();

    // login --scope: the token carries exactly that scope (no offline_access: no
    // refresh token).
    cli_login(&a, &home, &["--scope", "openid profile"]).await;
    let store_a = TokenStore::for_server(&home, &Url::parse(&a.issuer).unwrap()).unwrap();
    let token_a = store_a.load().unwrap().expect("a's token saved");
    assert_eq!(scope_of(&token_a.access_token), ["openid", "profile"]);
    assert_eq!(token_a.refresh_token, None);

    // KEYWARD_SERVER names the server to log in to (the default scope this time).
    let mut command = keyward_cli(&home, &["login", "--no-browser"]);
    command.env("KEYWARD_SERVER", &b.issuer);
    let mut login = Watched::spawn(command);
    let url = login.device_url(&b.issuer).await;
    assert_device_connected(approve_device(&browser(), &url, "alice", "approve").await);
    let (status, _, stderr) = login.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Logged in to {}", b.issuer)),
        "{stderr}"
    );
    let store_b = TokenStore::for_server(&home, &Url::parse(&b.issuer).unwrap()).unwrap();
    let token_b = store_b.load().unwrap().expect("b's token saved");
    assert_eq!(
        scope_of(&token_b.access_token),
        ["email", "offline_access", "openid", "profile"]
    );

    // Logged in to two servers, none named: an error naming both, no token.
    let out = keyward(&home, &["token"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("logged in to several servers (")
            && stderr.contains(&a.issuer)
            && stderr.contains(&b.issuer)
            && stderr.contains("name one, or set KEYWARD_SERVER"),
        "{stderr}"
    );
    // KEYWARD_SERVER picks one.
    for (app, token) in [(&a, &token_a), (&b, &token_b)] {
        let out = keyward_cli(&home, &["token"])
            .env("KEYWARD_SERVER", &app.issuer)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{}\n", token.access_token));
    }

    // --margin: with about 900 s left, a margin of ten minutes prints the token as it
    // is; a margin of an hour refreshes it first.
    let out = keyward(&home, &["token", &b.issuer, "--margin", "600"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n", token_b.access_token));
    let out = keyward(&home, &["token", &b.issuer, "--margin", "3600"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refreshed = store_b.load().unwrap().expect("b's token kept");
    assert_ne!(refreshed.access_token, token_b.access_token);
    assert_ne!(refreshed.refresh_token, token_b.refresh_token);
    assert_eq!(text(&out.stdout), format!("{}\n", refreshed.access_token));
    assert!(is_active(&b, &refreshed.access_token).await);
    let _ = std::fs::remove_dir_all(home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_second_login_leaves_the_saved_token_alone() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let home = temp_dir();
    cli_login(&app, &home, &[]).await;
    let store = TokenStore::for_server(&home, &Url::parse(&app.issuer).unwrap()).unwrap();
    let saved = store.load().unwrap().expect("token saved");

    // A second login (--force, or it would say "Already logged in"), interrupted while
    // it waits for approval.
    let mut login = Watched::spawn(keyward_cli(
        &home,
        &["login", app.issuer.as_str(), "--no-browser", "--force"],
    ));
    login.device_url(&app.issuer).await;
    login.interrupt();
    let (status, stdout, stderr) = login.finish().await;
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.ends_with("error: login cancelled\n"), "{stderr}");

    // The saved token is as it was, and works: printed, accepted, and refreshable.
    assert_eq!(store.load().unwrap().as_ref(), Some(&saved));
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}\n", saved.access_token));
    assert!(is_active(&app, &saved.access_token).await);
    let out = keyward(&home, &["token", &app.issuer, "--margin", "3600"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refreshed = store.load().unwrap().expect("token kept");
    assert_ne!(refreshed.access_token, saved.access_token);
    assert!(is_active(&app, &refreshed.access_token).await);
    let _ = std::fs::remove_dir_all(home);
}

/// An Argon2id hash made by the reference implementation (Debian's `argon2`), with the
/// parameters keyward uses: `echo -n 'declared by hash 42' | argon2 keywardtestsalt1
/// -id -t 2 -k 19456 -p 1 -e`.
const DECLARED_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$a2V5d2FyZHRlc3RzYWx0MQ$qhxbrxd9ckO3kytwAixDjxCsQk4H5Aa2vnfzdzyZLj4";
const DECLARED_PASSWORD: &str = "declared by hash 42";

#[tokio::test]
async fn a_user_declared_with_an_argon2_hash_signs_in() {
    let extra = format!(
        "[[users]]\nusername = \"hashed\"\nemail = \"hashed@example.com\"\npassword_hash = \"{DECLARED_HASH}\"\n"
    );
    let app = spawn_app(Db::Sqlite, &extra).await.unwrap();
    let (url, verifier) = authorize_url(&app.issuer, "demo-app", "openid email", "");
    let (status, html) = drive(&browser(), &url, "hashed", "declared by hash 43", "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Invalid username or password."), "{html}");
    let code = drive(&browser(), &url, "hashed", DECLARED_PASSWORD, "approve")
        .await
        .callback()["code"]
        .clone();
    let (status, tokens) =
        redeem_code(&app, "demo-app", Some(SECRET), &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(id_claims(&tokens)["email"], "hashed@example.com");
}

/// A configuration with a declared client `synced` (redirect URI `redirect`) and a
/// declared user `dora`.
fn declared(redirect: &str, email: &str, password: &str) -> String {
    base_config(&format!(
        r#"
[[clients]]
client_id = "synced"
client_secret = "{SECRET}"
redirect_uris = ["{redirect}"]
skip_consent = true

[[users]]
username = "dora"
email = "{email}"
password = "{password}"
"#
    ))
}

/// Signs in as dora at `synced` with `password`; returns the ID token's claims.
async fn dora_signs_in(app: &TestApp, password: &str) -> serde_json::Value {
    let (url, verifier) = authorize_url(&app.issuer, "synced", "openid email", "");
    let code = drive(&browser(), &url, "dora", password, "approve")
        .await
        .callback()["code"]
        .clone();
    let (status, tokens) = redeem_code(app, "synced", Some(SECRET), &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    id_claims(&tokens)
}

/// keyward.example.toml: declared clients are written at every start, replacing the
/// stored client of the same id; declared users are created or updated at every start,
/// keeping their id (`sub`); `keyward client add` adds more. (Neither the README nor
/// the example says what happens to a declaration removed from the file.)
#[tokio::test]
async fn declared_clients_and_users_are_written_again_at_every_start() {
    for db in [Db::Sqlite, Db::Postgres] {
        let dir = temp_dir();
        let Some(database) = database_url(db, &dir).await else {
            continue;
        };
        let old_uri = "http://127.0.0.1:5555/old";
        let mut first = spawn_on_database(
            &database,
            &declared(old_uri, "dora@old.example", "dora's first password"),
        )
        .await;
        assert!(
            redirect_uri_accepted(&first, "synced", old_uri).await,
            "{db:?}"
        );
        assert!(
            !redirect_uri_accepted(&first, "synced", REDIRECT).await,
            "{db:?}"
        );
        // Added between the starts with the command, not declared.
        let added = succeeded(
            &admin(
                &database,
                &[
                    "client",
                    "add",
                    "extra",
                    "--grant-type",
                    "client_credentials",
                ],
                None,
            )
            .await,
        );
        let extra_secret = shown_secret(&added);
        let sub = {
            // dora's id (her sub) before the restart, as `keyward user list` shows it.
            let users = succeeded(&admin(&database, &["user", "list"], None).await);
            row(&users, "dora")
                .split_whitespace()
                .nth(3)
                .expect("sub column")
                .to_owned()
        };
        first.stop();

        // The file changed: the client's redirect URI, dora's address and password.
        let second = spawn_on_database(
            &database,
            &declared(REDIRECT, "dora@new.example", "dora's second password"),
        )
        .await;
        assert!(
            redirect_uri_accepted(&second, "synced", REDIRECT).await,
            "{db:?}"
        );
        assert!(
            !redirect_uri_accepted(&second, "synced", old_uri).await,
            "{db:?}"
        );
        let claims = dora_signs_in(&second, "dora's second password").await;
        assert_eq!(claims["email"], "dora@new.example", "{db:?}");
        assert_eq!(claims["sub"], sub, "{db:?}: dora keeps her sub");
        let (url, _) = authorize_url(&second.issuer, "synced", "openid", "");
        let (status, _) = drive(&browser(), &url, "dora", "dora's first password", "approve")
            .await
            .page();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{db:?}: the old password");
        // The client added by the command is still there, with its secret.
        let (status, body) = token_request(
            &second,
            "extra",
            Some(&extra_secret),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{db:?}: {body}");
        drop(first);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// README: `keyward client remove ID` — "everything issued to it stops working",
/// tokens issued before the removal included.
#[tokio::test]
async fn client_remove_ends_the_tokens_already_issued() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let db = sqlite_url(&app);
    // A resource server to ask about the tokens, and the client to remove.
    let rs = shown_secret(&succeeded(
        &admin(
            &db,
            &[
                "client",
                "add",
                "rs",
                "--grant-type",
                "client_credentials",
                "--introspect",
            ],
            None,
        )
        .await,
    ));
    let add_doomed = [
        "client",
        "add",
        "doomed",
        "--redirect-uri",
        REDIRECT,
        "--skip-consent",
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--grant-type",
        "client_credentials",
    ];
    let doomed = shown_secret(&succeeded(&admin(&db, &add_doomed, None).await));
    let (url, verifier) = authorize_url(&app.issuer, "doomed", "openid offline_access", "");
    let code = drive(&browser(), &url, "alice", PASSWORD, "approve")
        .await
        .callback()["code"]
        .clone();
    let (status, user_tokens) =
        redeem_code(&app, "doomed", Some(&doomed), &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{user_tokens}");
    let access = user_tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = user_tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, service_tokens) = token_request(
        &app,
        "doomed",
        Some(&doomed),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{service_tokens}");
    let service = service_tokens["access_token"].as_str().unwrap().to_owned();

    // Before: all good.
    for token in [&access, &refresh, &service] {
        let answer = introspect(&app, &rs, token).await;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["client_id"], "doomed", "{answer}");
    }
    assert_eq!(userinfo(&app, &access).await.status(), StatusCode::OK);

    let removed = succeeded(&admin(&db, &["client", "remove", "doomed"], None).await);
    assert!(removed.contains("removed client doomed"), "{removed}");

    assert_dead(
        &app,
        &rs,
        &[&access, &refresh, &service],
        "after the removal",
    )
    .await;
    // The refresh token is refused: first because its client is gone.
    let (status, body) = token_request(
        &app,
        "doomed",
        Some(&doomed),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");

    // A client registered again under the same id inherits none of the old record's
    // tokens: neither the user's nor its own (which has no grant). Attack: before the
    // fix, whoever held a token of a removed client had it work again for the rest of
    // its life as soon as anyone registered a client of that id.
    let again = shown_secret(&succeeded(&admin(&db, &add_doomed, None).await));
    assert_dead(
        &app,
        &rs,
        &[&access, &refresh, &service],
        "after the id was registered again",
    )
    .await;
    assert_eq!(
        userinfo(&app, &service).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The new record's own tokens work.
    let (status, fresh) = token_request(
        &app,
        "doomed",
        Some(&again),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let answer = introspect(&app, &rs, fresh["access_token"].as_str().unwrap()).await;
    assert_eq!(answer["active"], true, "{answer}");
    let (status, body) = token_request(
        &app,
        "doomed",
        Some(&again),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// Introspection of `token` by the resource server `rs`.
async fn introspect(app: &TestApp, rs_secret: &str, token: &str) -> serde_json::Value {
    let response = http()
        .post(format!("{}/introspect", app.issuer))
        .basic_auth("rs", Some(rs_secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// `/userinfo` with `token`.
async fn userinfo(app: &TestApp, token: &str) -> reqwest::Response {
    http()
        .get(format!("{}/userinfo", app.issuer))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Checks that `tokens` are inactive (nothing else said about them) and that the first,
/// an access token, is refused at userinfo as an invalid token.
async fn assert_dead(app: &TestApp, rs_secret: &str, tokens: &[&String], when: &str) {
    for token in tokens {
        let answer = introspect(app, rs_secret, token).await;
        assert_eq!(answer, serde_json::json!({"active": false}), "{when}");
    }
    let response = userinfo(app, tokens[0]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{when}");
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{when}: {challenge}"
    );
}
