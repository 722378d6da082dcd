//! What protects the browser side: cookies keyward recognises as its own (a planted
//! binding cookie is replaced), `__Host-` cookies and HSTS under https, and `/metrics`
//! kept for the operator.

use reqwest::StatusCode;

use crate::support::*;

/// The `Set-Cookie` values of a response.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Attack: planting the binding cookie. Someone who can set a cookie in the victim's
/// browser (a sibling subdomain, a script elsewhere) plants a value they know, to tie
/// the victim's browser to logins they start. Before the fix keyward took any value of
/// the right length as the browser's; now only a value it sealed with its own key is
/// kept, and the planted one is replaced.
#[tokio::test]
async fn a_planted_binding_cookie_is_replaced() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let planted = "P".repeat(43);
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let response = http()
        .get(&url)
        .header("cookie", format!("keyward_browser={planted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookies = set_cookies(&response);
    let fresh = cookies
        .iter()
        .find(|c| c.starts_with("keyward_browser="))
        .unwrap_or_else(|| panic!("the planted cookie was kept: {cookies:?}"));
    assert!(!fresh.contains(&planted));

    // keyward's own value is kept from one request to the next.
    let browser = browser();
    let first = browser.get(&url).send().await.unwrap();
    assert!(
        set_cookies(&first)
            .iter()
            .any(|c| c.starts_with("keyward_browser="))
    );
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let second = browser.get(&url).send().await.unwrap();
    assert!(
        !set_cookies(&second)
            .iter()
            .any(|c| c.starts_with("keyward_browser=")),
        "{:?}",
        set_cookies(&second)
    );
}

/// Under https: cookies are `__Host-` (no other host or path can set or shadow them),
/// Secure, at `/`; and browsers are told to use https only (HSTS).
#[tokio::test]
async fn under_https_cookies_are_host_only_and_hsts_is_sent() {
    let app = spawn_https_app("").await;
    let (url, _) = authorize_url(&app.issuer, "demo-app", "openid", "");
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let cookies = set_cookies(&response);
    let binding = cookies
        .iter()
        .find(|c| c.starts_with("__Host-keyward_browser="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    for part in ["; Path=/;", "; HttpOnly", "; SameSite=Lax", "; Secure"] {
        assert!(binding.contains(part), "{part}: {binding}");
    }
    // A plain-http issuer (this machine) sends neither.
    let plain = spawn_app(Db::Sqlite, "").await.unwrap();
    let (url, _) = authorize_url(&plain.issuer, "demo-app", "openid", "");
    let response = http().get(&url).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    assert!(
        set_cookies(&response)
            .iter()
            .all(|c| !c.starts_with("__Host-"))
    );
}

/// Attack: reading the metrics from outside. They tell who signs in how often and which
/// clients are busy. Before the fix anyone who reached keyward read them; now only the
/// addresses in `metrics_allowed` (loopback by default) or a holder of the
/// `metrics_token`.
#[tokio::test]
async fn metrics_are_for_the_operator_only() {
    let app = spawn_app(
        Db::Sqlite,
        "trusted_proxies = [\"127.0.0.1\"]\nmetrics_token = \"metrics-token-0123456789abcdef\"",
    )
    .await
    .unwrap();
    let metrics = |from: Option<&'static str>, token: Option<&'static str>| {
        let url = format!("{}/metrics", app.issuer);
        async move {
            let mut request = http().get(url);
            if let Some(addr) = from {
                request = request.header("x-forwarded-for", addr);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.unwrap().status()
        }
    };
    assert_eq!(
        metrics(Some("203.0.113.9"), None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        metrics(Some("203.0.113.9"), Some("wrong-token")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        metrics(Some("203.0.113.9"), Some("metrics-token-0123456789abcdef")).await,
        StatusCode::OK
    );
    assert_eq!(metrics(None, None).await, StatusCode::OK, "loopback");
}
