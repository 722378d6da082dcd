//! The admin console (`/admin`) over HTTP: who gets in (an administrator by `admins` or
//! by `[[policies]]`, signed in within ten minutes), what a stale sign-in, a missing or
//! forged CSRF token, a non-administrator and hostile input get, and that nothing
//! refused reaches the audit log or the store. The walk through every page in Chromium
//! is `js::admin_console_in_chromium`.

use reqwest::StatusCode;

use crate::support::*;

/// `admins` makes alice an administrator and a policy carol; bob is neither, though a
/// token-exchange policy gives him `keyward:*` (a wildcard does not open the console).
fn console_config() -> String {
    format!(
        "admins = [\"alice\"]\n\
         [[policies]]\nsubjects = [\"user:carol\"]\nscopes = [\"keyward:admin\"]\n\
         [[policies]]\nsubjects = [\"user:bob\"]\nscopes = [\"keyward:*\"]\n\
         [[users]]\nusername = \"carol\"\npassword = \"{PASSWORD}\"\n"
    )
}

/// Opens the console in `browser`, signs in as `user` on the login page it leads to,
/// and returns where that ends.
async fn sign_in(app: &TestApp, browser: &reqwest::Client, user: &str) -> Page {
    let page = open(browser, &format!("{}/admin", app.issuer)).await;
    assert_eq!(page.url.path(), "/login", "{}", page.html);
    assert!(page.html.contains("to the admin console"), "{}", page.html);
    let response = submit(
        browser,
        &page,
        "/login",
        "",
        &[("username", user), ("password", PASSWORD)],
    )
    .await;
    settle(browser, response).await.expect("a page")
}

#[tokio::test]
async fn only_a_freshly_signed_in_administrator_gets_in_and_forms_need_the_csrf_token() {
    let app = spawn_app(Db::Sqlite, &console_config()).await.unwrap();

    // bob is signed in, but not an administrator.
    let bob = browser();
    let page = sign_in(&app, &bob, "bob").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    assert!(page.html.contains("Not an administrator"), "{}", page.html);
    let response = bob
        .post(format!("{}/admin/keys/rotate", app.issuer))
        .form(&[("csrf", "anything")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // alice by `admins`, carol by a policy.
    let alice = browser();
    let page = sign_in(&app, &alice, "alice").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(
        page.html.contains("<h1>Admin console</h1>"),
        "{}",
        page.html
    );
    let carol = browser();
    let page_of_carol = sign_in(&app, &carol, "carol").await;
    assert_eq!(
        page_of_carol.status,
        StatusCode::OK,
        "{}",
        page_of_carol.html
    );

    // Attack: a form without the session's CSRF token (a cross-site post riding on
    // alice's cookies) or with a forged one changes nothing.
    let keys_before = app.state.store().list_keys().await.unwrap().len();
    for form in [vec![], vec![("csrf", "forged")]] {
        let response = alice
            .post(format!("{}/admin/keys/rotate", app.issuer))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let response = alice
        .post(format!("{}/admin/users/bob/disabled", app.issuer))
        .form(&[("csrf", "forged"), ("disabled", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.state.store().list_keys().await.unwrap().len(),
        keys_before
    );
    let bob_user = app
        .state
        .store()
        .get_user_by_username("bob")
        .await
        .unwrap()
        .unwrap();
    assert!(!bob_user.disabled);

    // With the token, it is done and logged.
    let response = submit(&alice, &page, "/admin/keys/rotate", "", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = settle(&alice, response).await.unwrap();
    assert!(
        page.html.contains("New signing keys are in use"),
        "{}",
        page.html
    );
    assert!(app.state.store().list_keys().await.unwrap().len() > keys_before);

    // Hostile and malformed input: unknown records are 404, bad values 400, the
    // clients of the configuration file and `[pkg_auth]` cannot be changed (409),
    // and none of it reaches the audit log.
    let users = open(&alice, &format!("{}/admin/users", app.issuer)).await;
    assert!(
        users.html.contains(">bob<") && users.html.contains(">carol<"),
        "{}",
        users.html
    );
    let found = open(&alice, &format!("{}/admin/users?q=%25", app.issuer)).await;
    assert!(
        !found.html.contains(">bob<"),
        "`%` is a character, not a wildcard"
    );
    let found = open(
        &alice,
        &format!("{}/admin/users?q=%00%3Cscript%3E", app.issuer),
    )
    .await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(!found.html.contains("<script>"));
    for path in [
        "/admin/users/nobody",
        "/admin/users/%00",
        "/admin/clients/nope",
    ] {
        let page = open(&alice, &format!("{}{path}", app.issuer)).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
    }
    let csrf = hidden(&page.html, "csrf");
    let post = |path: &str, form: Vec<(&str, &str)>| {
        let mut form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        form.push(("csrf".into(), csrf.clone()));
        alice
            .post(format!("{}{path}", app.issuer))
            .form(&form)
            .send()
    };
    let refused = [
        (
            "/admin/users/nobody/disabled",
            vec![("disabled", "true")],
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/users/bob/disabled",
            vec![("disabled", "maybe")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/users/bob/sessions/end",
            vec![("session", "0123")],
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/clients",
            vec![("client_id", "bad id!")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/clients",
            vec![
                ("client_id", "demo-app"),
                ("redirect_uris", "https://x.example/cb"),
            ],
            StatusCode::CONFLICT,
        ),
        (
            "/admin/clients",
            vec![("client_id", "web"), ("grant_types", "authorization_code")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/clients/demo-app",
            vec![("scopes", "openid")],
            StatusCode::CONFLICT,
        ),
        (
            "/admin/clients/demo-app/secret",
            vec![],
            StatusCode::CONFLICT,
        ),
        ("/admin/clients/device/delete", vec![], StatusCode::CONFLICT),
        ("/admin/clients/cli/secret", vec![], StatusCode::BAD_REQUEST),
        ("/admin/clients/nope/delete", vec![], StatusCode::NOT_FOUND),
    ];
    for (path, form, status) in refused {
        let response = post(path, form.clone()).await.unwrap();
        assert_eq!(response.status(), status, "{path} {form:?}");
        let html = response.text().await.unwrap();
        assert!(html.contains("<h1>"), "{path}: a page says why: {html}");
    }
    let oversized = "x".repeat(70 * 1024);
    let response = post("/admin/clients", vec![("client_id", &oversized)])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let log = app.state.store().list_audit(10, None).await.unwrap();
    let actions: Vec<_> = log
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(actions, [("user:alice", "keys.rotate")]);

    // Ten minutes after signing in, a form is refused and the console asks again.
    app.advance(601);
    let response = post("/admin/keys/rotate", vec![]).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let page = sign_in(&app, &alice, "alice").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.url.path(), "/admin");
    assert_eq!(
        app.state.store().list_audit(10, None).await.unwrap().len(),
        1
    );

    // A disabled administrator is out at once (carol's sign-in is stale too).
    sign_in(&app, &carol, "carol").await;
    let page = open(&carol, &format!("{}/admin/users/alice", app.issuer)).await;
    let response = submit(&carol, &page, "/admin/users/alice/disabled", "Disable", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = open(&alice, &format!("{}/admin", app.issuer)).await;
    assert_eq!(
        page.url.path(),
        "/login",
        "a disabled account's session is gone"
    );
}

/// Attack: the operator lists `octocat` in `admins` before that person has an account;
/// a stranger whose GitHub login is `octocat` signs in first. The account a provider
/// sign-in creates never takes a reserved name, so the stranger is `octocat-2` and gets
/// 403 at the console.
#[tokio::test]
async fn a_provider_sign_in_never_takes_an_administrators_name() {
    use crate::connectors::{broker_with, sign_in_as};
    let broker = broker_with(
        Db::Sqlite,
        "admins = [\"octocat\"]",
        "",
        r#"scopes = ["read:user", "user:email", "read:org"]"#,
    )
    .await
    .unwrap();
    let down = &broker.down;
    let stranger = browser();
    let claims = sign_in_as(&stranger, down, "github", "", "").await;
    let store = down.state.store();
    assert!(
        store
            .get_user_by_username("octocat")
            .await
            .unwrap()
            .is_none()
    );
    let created = store
        .get_user(claims["sub"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.username, "octocat-2");
    let page = open(&stranger, &format!("{}/admin", down.issuer)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
}
