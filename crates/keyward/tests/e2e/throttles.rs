//! Guessing, throttled: attempts counted before they are checked (parallel guesses
//! cannot slip through), back-off per account and address instead of lock-outs that a
//! stranger could impose on the owner, client addresses behind trusted proxies, IPv6
//! grouped by /64, and `Retry-After` on every 429.

use reqwest::StatusCode;

use crate::support::*;

/// A login page at `app` in a fresh browser: the browser and the form's `req` and
/// `csrf`.
async fn login_form(app: &TestApp) -> (reqwest::Client, String, String) {
    let browser = browser();
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let page = open(&browser, &url).await;
    assert_eq!(page.url.path(), "/login", "{}", page.html);
    let (req, csrf) = (hidden(&page.html, "req"), hidden(&page.html, "csrf"));
    (browser, req, csrf)
}

/// Posts a password from `browser` (as from `forwarded_for` when given, which only a
/// trusted proxy's word makes the client address).
async fn post_password(
    app: &TestApp,
    browser: &reqwest::Client,
    (req, csrf): (&str, &str),
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = browser.post(format!("{}/login", app.issuer)).form(&[
        ("req", req),
        ("csrf", csrf),
        ("username", username),
        ("password", password),
    ]);
    if let Some(addr) = forwarded_for {
        request = request.header("x-forwarded-for", addr);
    }
    request.send().await.expect("login")
}

/// One password attempt in a fresh browser; the status, and `Retry-After` of a 429.
async fn try_password(
    app: &TestApp,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Option<u64>) {
    let (browser, req, csrf) = login_form(app).await;
    let response = post_password(
        app,
        &browser,
        (&req, &csrf),
        username,
        password,
        forwarded_for,
    )
    .await;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "429 without Retry-After"
        );
        let html = response.text().await.unwrap();
        assert!(html.contains("Too many failed sign-in attempts"), "{html}");
    }
    (status, retry_after)
}

/// Attack: guessing in parallel. Before the fix the failure count was read, the
/// password checked, and the failure recorded afterwards, so 50 guesses sent at once
/// all passed the check (50 × 401). Now each is counted before it is checked: at most
/// the 5 free attempts reach the password check, the rest wait (429 + Retry-After).
#[tokio::test]
async fn parallel_wrong_passwords_get_through_at_most_the_limit() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let mut forms = Vec::new();
    for _ in 0..50 {
        forms.push(login_form(&app).await);
    }
    let url = format!("{}/login", app.issuer);
    let attempts = forms.into_iter().map(|(browser, req, csrf)| {
        let url = url.clone();
        async move {
            browser
                .post(url)
                .form(&[
                    ("req", req.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", "alice"),
                    ("password", "wrong"),
                ])
                .send()
                .await
                .expect("login")
        }
    });
    let responses = futures_join_all(attempts).await;
    let mut checked = 0;
    let mut throttled = 0;
    for response in responses {
        match response.status() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                throttled += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(checked <= 5, "{checked} guesses reached the password check");
    assert_eq!(checked + throttled, 50);
}

/// Runs futures at once (a tiny `join_all`, to keep the dependency tree as it is).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

/// Attack: keeping the owner out. Before the fix five wrong passwords from anywhere
/// locked the account for 15 minutes from every address, right password included, and
/// behind a reverse proxy every client shared the proxy's address, so fifty failures
/// locked everyone out. Now the proxy's `X-Forwarded-For` names the client (the proxy
/// is in `trusted_proxies`), the attacker's address waits, and the owner elsewhere
/// signs in.
#[tokio::test]
async fn a_guesser_elsewhere_cannot_keep_the_owner_out() {
    let app = spawn_app(Db::Sqlite, "trusted_proxies = [\"127.0.0.1/32\"]")
        .await
        .unwrap();
    for _ in 0..5 {
        let (status, _) = try_password(&app, "alice", "wrong", Some("203.0.113.66")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry_after) = try_password(&app, "alice", PASSWORD, Some("203.0.113.66")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the guesser waits");
    assert!(retry_after.unwrap() <= 30);
    // A back-off, not a lock-out: once the wait is over, the right password works
    // from that address too.
    app.advance(i64::try_from(retry_after.unwrap()).unwrap());
    let (status, _) = try_password(&app, "alice", PASSWORD, Some("203.0.113.66")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "still locked after the wait");
    for _ in 0..5 {
        let (status, _) = try_password(&app, "alice", "wrong", Some("203.0.113.66")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "a success starts the count over"
        );
    }
    // The owner, at another address behind the same proxy, is not affected.
    let (status, _) = try_password(&app, "alice", PASSWORD, Some("198.51.100.7")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the owner signs in");

    // IPv6 clients are counted by /64: a guesser cannot walk through its own /64.
    for i in 1..=5 {
        let addr = format!("2001:db8:5:6::{i}");
        let (status, _) = try_password(&app, "bob", "wrong", Some(&addr)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{addr}");
    }
    let (status, _) = try_password(&app, "bob", "wrong", Some("2001:db8:5:6:ffff::1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = try_password(&app, "bob", PASSWORD, Some("2001:db8:5:7::1")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "another /64");
}

/// Attack: choosing one's own address. Without `trusted_proxies`, `X-Forwarded-For`
/// is the client's own word and is ignored: a guesser cannot reset its count by
/// sending a new address with every guess.
#[tokio::test]
async fn forwarded_headers_of_an_untrusted_peer_are_ignored() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    for i in 0..5 {
        let addr = format!("192.0.2.{i}");
        let (status, _) = try_password(&app, "alice", "wrong", Some(&addr)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = try_password(&app, "alice", "wrong", Some("192.0.2.99")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// Guessers spread over many addresses meet the account-wide ceiling, which does not
/// apply to a browser that signed in to the account before: the owner's.
#[tokio::test]
async fn the_account_ceiling_spares_the_owners_browser() {
    let app = spawn_app(Db::Sqlite, "trusted_proxies = [\"127.0.0.1\"]")
        .await
        .unwrap();
    // The owner signs in once: the browser is remembered (a MAC only keyward can make).
    let (owner, req, csrf) = login_form(&app).await;
    let response = post_password(
        &app,
        &owner,
        (&req, &csrf),
        "alice",
        PASSWORD,
        Some("198.51.100.7"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(
        cookies.iter().any(|c| c.starts_with("keyward_known=")),
        "{cookies:?}"
    );
    // 50 wrong passwords from ten addresses (five each, within each pair's allowance).
    for i in 0..50 {
        let addr = format!("203.0.113.{}", i / 5);
        let (status, _) = try_password(&app, "alice", "wrong", Some(&addr)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // A stranger's browser at a new address meets the ceiling, even with the password.
    let (status, retry_after) = try_password(&app, "alice", PASSWORD, Some("192.0.2.1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some());
    // The owner's browser signs in.
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "&prompt=login");
    let page = open(&owner, &url).await;
    let response = post_password(
        &app,
        &owner,
        (&hidden(&page.html, "req"), &hidden(&page.html, "csrf")),
        "alice",
        PASSWORD,
        Some("198.51.100.7"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // A planted cookie (not keyward's MAC) earns nothing.
    use reqwest::cookie::CookieStore as _;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let stranger = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let page = open(&stranger, &url).await;
    let issuer: url::Url = app.issuer.parse().unwrap();
    let cookies = jar.cookies(&issuer).unwrap();
    let planted = format!(
        "{}; keyward_known=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        cookies.to_str().unwrap()
    );
    let response = stranger
        .post(format!("{}/login", app.issuer))
        .header("cookie", planted)
        .header("x-forwarded-for", "192.0.2.2")
        .form(&[
            ("req", hidden(&page.html, "req").as_str()),
            ("csrf", hidden(&page.html, "csrf").as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Wrong user codes: counted before they are looked up (parallel guesses included),
/// then back-off with Retry-After.
#[tokio::test]
async fn parallel_user_code_guesses_get_through_at_most_the_limit() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let page = open(&browser, &format!("{}/device", app.issuer)).await;
    let csrf = hidden(&page.html, "csrf");
    let guesses = (0..40).map(|i| {
        let (browser, csrf, url) = (
            browser.clone(),
            csrf.clone(),
            format!("{}/device", app.issuer),
        );
        async move {
            browser
                .post(url)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("user_code", &format!("BCDF-GH{:02}", i % 20)),
                ])
                .send()
                .await
                .unwrap()
        }
    });
    let responses = futures_join_all(guesses).await;
    let mut looked_up = 0;
    for response in responses {
        match response.status() {
            StatusCode::BAD_REQUEST => looked_up += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(looked_up <= 10, "{looked_up} codes were looked up");
}

/// Attack: filling the database without signing in. Before the fix anyone could make
/// keyward store a device code (public client), a Julia challenge or a login in
/// progress with every request, without limit. Now each address gets a burst
/// (`unauthenticated_writes_per_minute`, 300 by default) and then 5 a second, answered
/// 429 with Retry-After (JSON for the APIs, a page for browsers); what was stored
/// expires and is purged.
#[tokio::test]
async fn unauthenticated_callers_cannot_grow_the_store_without_bound() {
    // A small allowance (one more every 30 s), so that a slow runner cannot refill it
    // while the test runs; the default is 300 a minute.
    let app = spawn_app(Db::Sqlite, "unauthenticated_writes_per_minute = 2")
        .await
        .unwrap();
    let limit = 2;
    let client = http();
    let mut statuses = Vec::new();
    for _ in 0..limit + 5 {
        let response = client
            .post(format!("{}/device/code", app.issuer))
            .form(&[("client_id", "cli"), ("scope", "openid")])
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        }
    }
    let created = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(
        (limit..=limit + 1).contains(&created),
        "{created} device codes stored"
    );
    assert!(statuses.ends_with(&[StatusCode::TOO_MANY_REQUESTS; 3]));

    // The same address has spent its allowance on Julia challenges and logins too.
    let response = client
        .post(format!("{}/auth/challenge", app.issuer))
        .body("Abc123Def456Ghi789Jkl012Mno345Pq")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let response = browser().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));

    // A confidential client (authenticated) is not limited this way.
    let response = client
        .post(format!("{}/token", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
