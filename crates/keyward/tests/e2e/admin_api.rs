//! The JSON admin API (`/admin/api/`), driven as automation drives it: with a
//! client-credentials token of a client registered with `keyward:admin`. Every change
//! shows in the audit log, over the API and in `keyward audit`; tokens that are not an
//! admin client's own are refused.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const OPS_SECRET: &str = "ops-secret-0123456789abcdef0123456789";

/// An admin client beside the usual ones.
fn admin_config() -> String {
    format!(
        "[[clients]]\nclient_id = \"ops\"\nclient_secret = \"{OPS_SECRET}\"\n\
         grant_types = [\"client_credentials\"]\nscopes = [\"keyward:admin\"]\n"
    )
}

/// A client-credentials token of `client`, asking for `scope`.
async fn cc_token(app: &TestApp, client: &str, secret: &str, scope: &str) -> String {
    let (status, body) = token_request(
        app,
        client,
        Some(secret),
        &[("grant_type", "client_credentials"), ("scope", scope)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// `method path` with `token` and a JSON `body`: status and JSON answer (null when
/// there is none).
async fn call(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http().request(method, format!("{}/admin/api{path}", app.issuer));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_manages_users_clients_and_keys_and_logs_every_change() {
    let app = spawn_app(Db::Sqlite, &admin_config()).await.unwrap();
    let admin = cc_token(&app, "ops", OPS_SECRET, "keyward:admin").await;
    let admin = Some(admin.as_str());

    // Users: search, detail.
    let (status, found) = call(&app, admin, Method::GET, "/users?q=ALI", None).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["users"].as_array().unwrap().len(), 1);
    assert_eq!(found["users"][0]["username"], "alice");
    assert!(found["users"][0].get("password_hash").is_none());

    // bob holds a refresh token through demo-app; disabling him ends it.
    let tokens = demo_app_tokens(&app, "bob", "openid offline_access").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, bob) = call(&app, admin, Method::GET, "/users/bob", None).await;
    assert_eq!(status, StatusCode::OK, "{bob}");
    assert_eq!(bob["grants"][0]["client_id"], "demo-app");
    assert_eq!(bob["sessions"].as_array().unwrap().len(), 1);
    let (status, body) = call(
        &app,
        admin,
        Method::PATCH,
        "/users/bob",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["disabled"], true);
    let (status, _) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "bob's refresh token is dead"
    );
    let (status, _) = call(
        &app,
        admin,
        Method::PATCH,
        "/users/bob",
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, admin, Method::POST, "/users/alice/revoke", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&app, admin, Method::GET, "/users/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Clients: create (the secret shown once), use, change, remove.
    let new = json!({
        "client_id": "reports",
        "grant_types": ["client_credentials"],
        "scopes": ["api:read"],
    });
    let (status, created) = call(&app, admin, Method::POST, "/clients", Some(new.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(created["client"].get("secret_hash").is_none());
    let reports = cc_token(&app, "reports", &secret, "api:read").await;
    assert!(is_active(&app, &reports).await);
    let (status, taken) = call(&app, admin, Method::POST, "/clients", Some(new)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    let (status, changed) = call(
        &app,
        admin,
        Method::PATCH,
        "/clients/reports",
        Some(json!({"name": "Reports", "scopes": ["api:read", "openid"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["client"]["name"], "Reports");
    assert_eq!(changed["client"]["scopes"], json!(["api:read", "openid"]));
    assert!(
        is_active(&app, &reports).await,
        "its tokens outlive a change"
    );
    let (status, _) = call(
        &app,
        admin,
        Method::PATCH,
        "/clients/reports",
        Some(json!({"grant_types": ["authorization_code"]})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a code flow needs a redirect URI"
    );
    let (status, _) = call(
        &app,
        admin,
        Method::PATCH,
        "/clients/reports",
        Some(json!({"scopes": []})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no scope at all is a mistake"
    );
    // A new secret; the old one, and the token it got, keep working for the grace
    // period; a rotation without grace ends both.
    let (status, rotated) = call(
        &app,
        admin,
        Method::POST,
        "/clients/reports/secret",
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(second, secret);
    assert!(rotated["client"]["previous_secret_valid_until"].is_i64());
    let via_old = cc_token(&app, "reports", &secret, "api:read").await;
    let newer = cc_token(&app, "reports", &second, "api:read").await;
    assert!(
        is_active(&app, &reports).await,
        "a token from before the rotation"
    );
    assert!(is_active(&app, &via_old).await);
    let (status, _) = call(&app, admin, Method::POST, "/clients/reports/secret", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the body may be left out: 24 hours of grace"
    );
    // Attack: whoever holds a leaked old secret gets tokens during the grace period;
    // they end with that secret's grace, not an access-token lifetime after it.
    assert!(
        !is_active(&app, &via_old).await,
        "minted with the first secret"
    );
    assert!(
        is_active(&app, &newer).await,
        "minted with the second, now in grace"
    );
    let (status, rotated) = call(
        &app,
        admin,
        Method::POST,
        "/clients/reports/secret",
        Some(json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let third = rotated["client_secret"].as_str().unwrap().to_owned();
    for (old, what) in [
        (&secret, "the first secret"),
        (&second, "the second secret"),
    ] {
        let (status, _) = token_request(
            &app,
            "reports",
            Some(old),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    }
    assert!(
        !is_active(&app, &newer).await,
        "tokens of the old secret end with it"
    );
    let reports = cc_token(&app, "reports", &third, "api:read").await;
    let secret = third;
    let (status, _) = call(
        &app,
        admin,
        Method::POST,
        "/clients/reports/secret",
        Some(json!({"grace_seconds": 99_999_999})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "at most 30 days");
    let (status, _) = call(&app, admin, Method::POST, "/clients/cli/secret", None).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a public client has no secret"
    );

    let (status, listed) = call(&app, admin, Method::GET, "/clients", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == "reports")
    );
    let (status, _) = call(&app, admin, Method::DELETE, "/clients/reports", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!is_active(&app, &reports).await, "its tokens died with it");
    let (status, _) = token_request(
        &app,
        "reports",
        Some(&secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, admin, Method::DELETE, "/clients/reports", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Keys: listed without their private parts, rotated.
    let (status, keys) = call(&app, admin, Method::GET, "/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    let before: Vec<Value> = keys["keys"].as_array().unwrap().clone();
    assert!(
        before
            .iter()
            .all(|k| k["state"] == "active" && k.get("private_der").is_none())
    );
    let (status, rotated) = call(&app, admin, Method::POST, "/keys/rotate", None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let after = rotated["keys"].as_array().unwrap();
    assert_eq!(after.len(), before.len() * 2);
    for old in &before {
        let now = after.iter().find(|k| k["kid"] == old["kid"]).unwrap();
        assert_eq!(now["state"], "retired");
    }

    // The audit log: every change, newest first, by whom and from where.
    let (status, log) = call(&app, admin, Method::GET, "/audit?limit=100", None).await;
    assert_eq!(status, StatusCode::OK);
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("keys.rotate", "signing-keys"),
            ("client.delete", "reports"),
            ("client.rotate-secret", "reports"),
            ("client.rotate-secret", "reports"),
            ("client.rotate-secret", "reports"),
            ("client.update", "reports"),
            ("client.create", "reports"),
            ("user.revoke", "alice"),
            ("user.enable", "bob"),
            ("user.disable", "bob"),
        ],
        "only what was carried out, and every one of those"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "client:ops" && e["address"] == "127.0.0.1")
    );
    let (status, older) = call(
        &app,
        admin,
        Method::GET,
        &format!("/audit?limit=1&before={}", entries[8]["at"]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(older["entries"][0]["at"].as_i64() <= entries[8]["at"].as_i64());

    // `keyward audit` prints the same log.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["audit", "--limit", "3"])
        .env(
            "KEYWARD_DATABASE_URL",
            format!("sqlite://{}/keyward.db", app.dir.display()),
        )
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 4, "{printed}");
    assert!(
        lines[1].contains("client:ops") && lines[1].contains("keys.rotate"),
        "{printed}"
    );
    assert!(
        lines[3].contains("client.rotate-secret") && lines[3].contains("127.0.0.1"),
        "{printed}"
    );

    // `keyward client rotate-secret`, on the server's database: refused for a client
    // the configuration file declares (a reload would bring its old secret back); for
    // one added through the API, a new secret without grace, which ends its token.
    let rotate = |client: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["client", "rotate-secret", client, "--grace", "0s"])
            .env(
                "KEYWARD_DATABASE_URL",
                format!("sqlite://{}/keyward.db", app.dir.display()),
            )
            .env("KEYWARD_LOG", "warn")
            .env_remove("KEYWARD_CONFIG")
            .output()
            .unwrap()
    };
    let refused = rotate("ops");
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("declared in the configuration file"));
    let nightly = json!({
        "client_id": "nightly",
        "grant_types": ["client_credentials"],
        "scopes": ["keyward:admin"],
    });
    let (status, created) = call(&app, admin, Method::POST, "/clients", Some(nightly)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let nightly_secret = created["client_secret"].as_str().unwrap().to_owned();
    let old_token = cc_token(&app, "nightly", &nightly_secret, "keyward:admin").await;
    let out = rotate("nightly");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let new_secret = printed
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("{printed}"))
        .trim()
        .to_owned();
    assert!(
        printed.contains("the old secret no longer works"),
        "{printed}"
    );
    // The server's client cache sees the change within half a second.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (status, _) = call(&app, Some(&old_token), Method::GET, "/keys", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old secret's token is gone"
    );
    let fresh = cc_token(&app, "nightly", &new_secret, "keyward:admin").await;
    let (status, _) = call(&app, Some(&fresh), Method::GET, "/keys", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Who is refused: no token or a bad one (401), a valid token that is not an admin
/// client's own with the scope (403), including one whose client lost the scope after
/// it was issued; and malformed requests get `invalid_request`, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_clients_token_opens_the_admin_api() {
    // On PostgreSQL, which refuses NUL in text where SQLite stores it.
    let Some(app) = spawn_app(Db::Postgres, &admin_config()).await else {
        return;
    };
    let response = http()
        .get(format!("{}/admin/api/users", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    let (status, body) = call(&app, Some("not-a-token"), Method::GET, "/users", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    // demo-app's own token, without the scope.
    let other = cc_token(&app, "demo-app", SECRET, "api:read").await;
    let (status, body) = call(&app, Some(&other), Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    // ops's token without asking for the scope.
    let plain = cc_token(&app, "ops", OPS_SECRET, "").await;
    let (status, _) = call(&app, Some(&plain), Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A person's token.
    let tokens = demo_app_tokens(&app, "alice", "openid").await;
    let person = tokens["access_token"].as_str().unwrap();
    let (status, _) = call(&app, Some(person), Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Malformed requests.
    let token = cc_token(&app, "ops", OPS_SECRET, "keyward:admin").await;
    let admin = Some(token.as_str());
    for query in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?q=a&q=b",
        "?q=a%00b",
    ] {
        let (status, body) = call(&app, admin, Method::GET, &format!("/users{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    // Found by Schemathesis: NUL in a path or a name reached PostgreSQL (500).
    for path in ["/users/a%00b", "/clients/a%00b", "/clients/a%00b/secret"] {
        let method = if path.ends_with("secret") {
            Method::POST
        } else {
            Method::GET
        };
        let (status, body) = call(&app, admin, method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let named =
        json!({"client_id": "nul", "name": "a\u{0}b", "grant_types": ["client_credentials"]});
    let (status, _) = call(&app, admin, Method::POST, "/clients", Some(named)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a control character in the name"
    );
    // Found by Schemathesis: deleting the command-line client broke /auth/* (500).
    let (status, body) = call(&app, admin, Method::DELETE, "/clients/device", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("[pkg_auth]")
    );
    let garbage = http()
        .patch(format!("{}/admin/api/users/bob", app.issuer))
        .bearer_auth(&token)
        .body("{\"disabled\": tru")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &app,
        admin,
        Method::PATCH,
        "/users/bob",
        Some(json!({"disabled": true, "role": "root"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
    let huge = http()
        .post(format!("{}/admin/api/clients", app.issuer))
        .bearer_auth(&token)
        .body(vec![b'x'; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = call(
        &app,
        admin,
        Method::POST,
        "/clients",
        Some(json!({"client_id": "bad id"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, log) = call(&app, admin, Method::GET, "/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log["entries"], json!([]), "nothing refused reached the log");

    // A client the configuration file declares is changed there, not here: a reload
    // would put it back as declared.
    for (method, path) in [
        (Method::PATCH, "/clients/ops"),
        (Method::POST, "/clients/ops/secret"),
        (Method::DELETE, "/clients/ops"),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"name": "x"}));
        let (status, body) = call(&app, admin, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {path}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("configuration file")
        );
    }

    // An admin client added through the API loses the scope: its token, still valid,
    // opens nothing from then on.
    let second = json!({
        "client_id": "second-admin",
        "grant_types": ["client_credentials"],
        "scopes": ["keyward:admin"],
    });
    let (status, created) = call(&app, admin, Method::POST, "/clients", Some(second)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["client_secret"].as_str().unwrap();
    let token = cc_token(&app, "second-admin", secret, "keyward:admin").await;
    let (status, _) = call(&app, Some(&token), Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        admin,
        Method::PATCH,
        "/clients/second-admin",
        Some(json!({"scopes": ["api:read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, Some(&token), Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

/// A set-password link, on PostgreSQL: made through the API for bob (who has a
/// session and a refresh token), it shows his name, refuses passwords that differ or
/// are short without being spent, then sets the password once: his sessions end, the
/// old password stops working, the new one works, and the link is dead. A newer link
/// replaces an older one; a link dies after a day; hostile tokens get 410, never a
/// lookup of something keyward could not have made.
#[tokio::test]
async fn a_set_password_link_works_once_and_for_a_day() {
    let Some(app) = spawn_app(Db::Postgres, &admin_config()).await else {
        return;
    };
    let token = cc_token(&app, "ops", OPS_SECRET, "keyward:admin").await;
    let bobs_browser = browser();
    drive(
        &bobs_browser,
        &authorize_url(&app.issuer, "demo-app", "openid", "").0,
        "bob",
        PASSWORD,
        "approve",
    )
    .await;
    let store = app.state.store();
    let bob_id = store.get_user_by_username("bob").await.unwrap().unwrap().id;
    assert_eq!(
        store
            .list_user_sessions(&bob_id, app.state.now())
            .await
            .unwrap()
            .len(),
        1
    );

    let (status, first) = call(
        &app,
        Some(&token),
        Method::POST,
        "/users/bob/password-link",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, made) = call(
        &app,
        Some(&token),
        Method::POST,
        "/users/bob/password-link",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let url = made["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/password/set?token=", app.issuer)),
        "{url}"
    );
    assert_eq!(made["user"]["username"], "bob");
    assert_eq!(made["expires_at"], app.state.now() + 86_400);

    // The first link was replaced by the second.
    let page = open(&browser(), first["url"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);

    let person = browser();
    let page = open(&person, url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains("<strong>bob</strong>"), "{}", page.html);
    for (password, repeat, says) in [
        (
            "a new long password",
            "another long password",
            "The two passwords differ.",
        ),
        ("short", "short", "at least 8 characters"),
    ] {
        let response = submit(
            &person,
            &page,
            "/password/set",
            "",
            &[("password", password), ("repeat", repeat)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains(says));
    }
    let response = submit(
        &person,
        &page,
        "/password/set",
        "",
        &[
            ("password", "a new long password"),
            ("repeat", "a new long password"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<h1>Password set</h1>")
    );
    assert!(
        store
            .list_user_sessions(&bob_id, app.state.now())
            .await
            .unwrap()
            .is_empty()
    );
    // Used once.
    let again = submit(
        &person,
        &page,
        "/password/set",
        "",
        &[
            ("password", "a third long password"),
            ("repeat", "a third long password"),
        ],
    )
    .await;
    assert_eq!(again.status(), StatusCode::GONE);
    assert_eq!(open(&person, url).await.status, StatusCode::GONE);
    // The new password signs bob in; the old one does not.
    let (authorize, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let (status, html) = drive(&browser(), &authorize, "bob", PASSWORD, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{html}");
    drive(
        &browser(),
        &authorize,
        "bob",
        "a new long password",
        "approve",
    )
    .await
    .callback();

    // A day later a link is dead; hostile tokens are simply dead.
    let (_, made) = call(
        &app,
        Some(&token),
        Method::POST,
        "/users/alice/password-link",
        None,
    )
    .await;
    app.advance(86_401);
    let late = made["url"].as_str().unwrap();
    assert_eq!(open(&browser(), late).await.status, StatusCode::GONE);
    for query in [
        "",
        "?token=",
        "?token=%00",
        "?token=x&token=y",
        &format!("?token={}", "A".repeat(5000)),
    ] {
        let response = http()
            .get(format!("{}/password/set{query}", app.issuer))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(
                response.status(),
                StatusCode::BAD_REQUEST | StatusCode::GONE
            ),
            "{query}"
        );
    }
    // A disabled account, or no such account, gets no link; each link made is logged.
    let token = cc_token(&app, "ops", OPS_SECRET, "keyward:admin").await;
    call(
        &app,
        Some(&token),
        Method::PATCH,
        "/users/bob",
        Some(json!({"disabled": true})),
    )
    .await;
    let (status, _) = call(
        &app,
        Some(&token),
        Method::POST,
        "/users/bob/password-link",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &app,
        Some(&token),
        Method::POST,
        "/users/nobody/password-link",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let log = store.list_audit(10, None).await.unwrap();
    let actions: Vec<_> = log
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("user.disable", "bob"),
            ("user.password-link", "alice"),
            ("user.password-set", "bob"),
            ("user.password-link", "bob"),
            ("user.password-link", "bob"),
        ]
    );
}
