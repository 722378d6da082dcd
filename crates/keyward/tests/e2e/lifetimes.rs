//! The configured lifetimes, each set to a non-default value and checked on both sides
//! of its end with the server's clock moved: `access_token_ttl`, `id_token_ttl`,
//! `refresh_token_ttl` (absolute, counted from the login, not renewed by rotation),
//! `session_ttl` and `login_ttl`.

use reqwest::StatusCode;

use crate::support::*;

const LIFETIMES: &str = r#"
access_token_ttl = "30s"
id_token_ttl = "20s"
refresh_token_ttl = "5m"
session_ttl = "10m"
login_ttl = "2m"
authorization_code_ttl = "60s"
"#;

/// Signs in as alice in `browser` and redeems the code for demo-app's tokens.
async fn sign_in(app: &TestApp, browser: &reqwest::Client, extra: &str) -> serde_json::Value {
    let (url, verifier) = authorize_url(&app.issuer, "demo-app", "openid offline_access", extra);
    let params = drive(browser, &url, "alice", PASSWORD, "approve")
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

async fn refresh(app: &TestApp, token: &str) -> (StatusCode, serde_json::Value) {
    token_request(
        app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn userinfo_status(app: &TestApp, access_token: &str) -> StatusCode {
    http()
        .get(format!("{}/userinfo", app.issuer))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn access_and_id_tokens_live_as_configured() {
    let app = spawn_app(Db::Sqlite, LIFETIMES).await.unwrap();
    app.freeze_clock();
    let tokens = sign_in(&app, &browser(), "").await;
    assert_eq!(tokens["expires_in"], 30, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_payload(access);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30
    );
    let id = jwt_payload(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        id["exp"].as_i64().unwrap() - id["iat"].as_i64().unwrap(),
        20
    );

    // Still good at its last second, refused after it.
    app.advance(30);
    assert!(is_active(&app, access).await);
    assert_eq!(userinfo_status(&app, access).await, StatusCode::OK);
    app.advance(1);
    assert!(!is_active(&app, access).await);
    assert_eq!(
        userinfo_status(&app, access).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refresh_tokens_end_a_fixed_time_after_the_login() {
    let app = spawn_app(Db::Sqlite, LIFETIMES).await.unwrap();
    app.freeze_clock();
    let tokens = sign_in(&app, &browser(), "").await;

    // Rotating four minutes in works, but does not move the end.
    app.advance(240);
    let (status, rotated) = refresh(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let latest = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert!(is_active(&app, &latest).await);

    // Five minutes after the login the grant is over, the newest token included.
    app.advance(61);
    assert!(!is_active(&app, &latest).await);
    let (status, body) = refresh(&app, &latest).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn sessions_end_after_session_ttl() {
    let app = spawn_app(Db::Sqlite, LIFETIMES).await.unwrap();
    app.freeze_clock();
    let browser = browser();
    sign_in(&app, &browser, "").await;
    let silent = || authorize_url(&app.issuer, "demo-app", "openid", "&prompt=none");

    // Nine minutes later the session still signs in without a page.
    app.advance(9 * 60);
    let params = drive(&browser, &silent().0, "-", "-", "-").await.callback();
    assert!(params.contains_key("code"), "{params:?}");

    // After ten it is over.
    app.advance(61);
    let params = drive(&browser, &silent().0, "-", "-", "-").await.callback();
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("login_required"),
        "{params:?}"
    );
}

#[tokio::test]
async fn a_login_page_left_open_past_login_ttl_is_refused() {
    let app = spawn_app(Db::Sqlite, LIFETIMES).await.unwrap();
    app.freeze_clock();
    let browser = browser();
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let page = open(&browser, &url).await;
    assert!(page.html.contains("name=\"password\""), "{}", page.html);
    let credentials = [("username", "alice"), ("password", PASSWORD)];

    // Within the two minutes the same page still works…
    let (url2, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let page2 = open(&browser, &url2).await;
    app.advance(119);
    let response = submit(&browser, &page2, "/login", "", &credentials).await;
    assert!(
        settle(&browser, response).await.is_err(),
        "signed in within login_ttl"
    );

    // …and after them it is refused, with nothing sent to the client.
    app.advance(2);
    let response = submit(&browser, &page, "/login", "", &credentials).await;
    let refused = settle(&browser, response)
        .await
        .expect("no code may reach the client");
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.html);
    assert!(refused.html.contains("has expired"), "{}", refused.html);
}

/// Housekeeping deletes what expired every `purge_interval` (not at start), and
/// `/metrics` counts its passes and the rows they deleted.
#[tokio::test]
async fn housekeeping_purges_every_interval_and_counts_it() {
    let extra = format!("{LIFETIMES}\npurge_interval = \"1s\"\n");
    let app = spawn_app(Db::Sqlite, &extra).await.unwrap();
    let store = app.state.store();
    sign_in(&app, &browser(), "").await;
    let grants = |c: keyward_server::store::Consistency| c.checked.grants;
    let now = keyward_server::domain::now();
    assert_eq!(grants(store.check_consistency(now).await.unwrap()), 1);
    assert_eq!(metric(&app, "keyward_purged_rows_total").await, 0);

    // A pass finds nothing to delete while the grant lives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(&app, "keyward_purge_passes_total").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no purge pass in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&app, "keyward_purged_rows_total").await, 0);
    assert_eq!(grants(store.check_consistency(now).await.unwrap()), 1);

    // Past the refresh token's end (5 minutes), the next pass deletes the grant with
    // its code and refresh token.
    app.advance(301);
    while metric(&app, "keyward_purged_rows_total").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing purged in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let later = now + 301;
    let after = store.check_consistency(later).await.unwrap();
    assert_eq!(after.checked.grants, 0, "{after:?}");
    assert_eq!(after.checked.refresh_tokens, 0, "{after:?}");
    assert!(after.problems.is_empty(), "{after:?}");
}
