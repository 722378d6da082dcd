//! Device authorization (RFC 8628): the `openidconnect` crate's device flow end to end,
//! and every polling answer: authorization_pending, slow_down, access_denied,
//! expired_token, single use; the code-entry page's normalisation and throttling.

use openidconnect::core::{CoreClient, CoreDeviceAuthorizationResponse, CoreProviderMetadata};
use openidconnect::{
    ClientId, DeviceAuthorizationUrl, IssuerUrl, OAuth2TokenResponse as _, Scope,
    TokenResponse as _,
};
use reqwest::StatusCode;

use crate::support::*;

/// Asks for a device authorization as the public `cli` client.
async fn start(app: &TestApp, scope: &str) -> serde_json::Value {
    let response = http()
        .post(format!("{}/device/code", app.issuer))
        .form(&[("client_id", "cli"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

/// Polls once as the `cli` client.
async fn poll(app: &TestApp, device_code: &str) -> (StatusCode, serde_json::Value) {
    token_request(
        app,
        "cli",
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "cli"),
            ("device_code", device_code),
        ],
    )
    .await
}

/// Types `user_code` on the /device page and goes through login and consent.
async fn enter_code(
    app: &TestApp,
    browser: &reqwest::Client,
    user_code: &str,
    decision: &str,
) -> Outcome {
    let page = browser
        .get(format!("{}/device", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let form = [
        ("csrf", hidden(&html, "csrf")),
        ("user_code", user_code.to_owned()),
    ];
    let response = browser
        .post(format!("{}/device", app.issuer))
        .form(&form)
        .send()
        .await
        .unwrap();
    drive_from(browser, response, "alice", PASSWORD, decision).await
}

#[tokio::test]
async fn openidconnect_device_flow_end_to_end() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer.clone()).unwrap(), &http())
            .await
            .unwrap();
    let discovery: serde_json::Value =
        get_json(&format!("{}/.well-known/openid-configuration", app.issuer)).await;
    let endpoint = discovery["device_authorization_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        discovery["grant_types_supported"]
            .to_string()
            .contains("device_code")
    );
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new("cli".into()), None)
        .set_device_authorization_url(DeviceAuthorizationUrl::new(endpoint).unwrap());
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("offline_access".into()))
        .add_scope(Scope::new("profile".into()))
        .request_async(&http())
        .await
        .expect("device authorization");
    let complete = details
        .verification_uri_complete()
        .expect("verification_uri_complete")
        .secret()
        .clone();
    let user_code = details.user_code().secret().clone();
    assert_eq!(user_code.len(), 9);
    assert!(complete.ends_with(&user_code));

    // The person: once the device has polled and been told to wait, opens the complete
    // URI (the code is filled in), signs in and approves.
    let person = async {
        let pending = r#"keyward_http_requests_total{endpoint="/token",status="400"}"#;
        while metric(&app, pending).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let browser = browser();
        let page = browser.get(&complete).send().await.unwrap();
        let html = page.text().await.unwrap();
        assert!(
            html.contains(&format!("value=\"{user_code}\"")),
            "prefilled: {html}"
        );
        let form = [
            ("csrf", hidden(&html, "csrf")),
            ("user_code", hidden(&html, "user_code")),
        ];
        let issuer = url::Url::parse(&complete).unwrap();
        let response = browser
            .post(issuer.join("/device").unwrap())
            .form(&form)
            .send()
            .await
            .unwrap();
        let (status, html) =
            match drive_from(&browser, response, "alice", PASSWORD, "approve").await {
                Outcome::Page(status, html) => (status, html),
                Outcome::Callback(p) => panic!("{p:?}"),
            };
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Device connected"), "{html}");
    };

    // The device: polls, honouring interval and slow_down, until the tokens come; both
    // within a minute (a failing person must not leave the device polling for ten).
    let device_http = http();
    let device = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(&device_http, tokio::time::sleep, None);
    let (tokens, ()) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(device, person)
    })
    .await
    .expect("the device got its tokens within a minute of the person approving");
    let tokens = tokens.expect("device access token");
    assert!(tokens.refresh_token().is_some());
    let id_token = tokens.id_token().expect("id token");
    let claims = id_token
        .claims(
            &client.id_token_verifier(),
            |_: Option<&openidconnect::Nonce>| Ok(()),
        )
        .unwrap();
    assert_eq!(claims.preferred_username().unwrap().as_str(), "alice");
    assert!(is_active(&app, tokens.access_token().secret()).await);
}

#[tokio::test]
async fn polling_answers_follow_rfc8628() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    // Two polls in a row fall within the interval whatever the wall clock does.
    app.freeze_clock();
    let browser = browser();

    // Pending, then slow_down for polling within the interval.
    let started = start(&app, "openid offline_access").await;
    assert_eq!(started["interval"], 1);
    assert_eq!(started["expires_in"], 600);
    assert!(
        started["verification_uri"]
            .as_str()
            .unwrap()
            .ends_with("/device")
    );
    let code = started["device_code"].as_str().unwrap();
    let (status, body) = poll(&app, code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    let (status, body) = poll(&app, code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("slow_down"))
    );

    // Approved with a lower-case code without the dash; collected once.
    let started = start(&app, "openid offline_access").await;
    let code = started["device_code"].as_str().unwrap();
    let user_code = started["user_code"]
        .as_str()
        .unwrap()
        .replace('-', "")
        .to_lowercase();
    let (status, html) = enter_code(&app, &browser, &user_code, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Device connected"));
    let (status, tokens) = poll(&app, code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["refresh_token"].is_string());
    app.advance(2);
    let (status, body) = poll(&app, code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Denied: the device is told access_denied; the page says so.
    let started = start(&app, "openid").await;
    let (status, html) = enter_code(
        &app,
        &browser,
        started["user_code"].as_str().unwrap(),
        "deny",
    )
    .await
    .page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Request denied"));
    let (status, body) = poll(&app, started["device_code"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("access_denied"))
    );

    // A client not registered for the grant cannot poll with it.
    let started = start(&app, "openid").await;
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", started["device_code"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );

    // A client not registered for the grant cannot start one.
    let response = http()
        .post(format!("{}/device/code", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
}

#[tokio::test]
async fn expired_device_codes_are_refused() {
    let app = spawn_app(Db::Sqlite, "device_code_ttl = \"1s\"")
        .await
        .unwrap();
    let started = start(&app, "openid").await;
    app.advance(2);
    let (status, body) = poll(&app, started["device_code"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expired_token")),
        "{body}"
    );
    let (status, html) = enter_code(
        &app,
        &browser(),
        started["user_code"].as_str().unwrap(),
        "approve",
    )
    .await
    .page();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("not valid or has expired"));
}

#[tokio::test]
async fn code_entry_is_forgiving_protected_and_throttled() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    // A body as the Julia client sends it: no content type, no percent-encoding.
    let response = http()
        .post(format!("{}/device/code", app.issuer))
        .body("client_id=cli&scope=openid offline_access")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A forged form is refused.
    let browser = browser();
    browser
        .get(format!("{}/device", app.issuer))
        .send()
        .await
        .unwrap();
    let response = browser
        .post(format!("{}/device", app.issuer))
        .form(&[("csrf", "forged"), ("user_code", "BCDF-GHJK")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Refused as forged, not as a wrong code (which also answers 400).
    let html = response.text().await.unwrap();
    assert!(html.contains("stale or forged"), "{html}");

    // Ten wrong codes lock the address out, even for a right one.
    for i in 0..10 {
        let (status, html) = enter_code(&app, &browser, "BCDF-GHJK", "approve")
            .await
            .page();
        assert_eq!(status, StatusCode::BAD_REQUEST, "attempt {i}");
        assert!(html.contains("not valid or has expired"));
    }
    let started = start(&app, "openid").await;
    let (status, html) = enter_code(
        &app,
        &browser,
        started["user_code"].as_str().unwrap(),
        "approve",
    )
    .await
    .page();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(html.contains("Too many wrong codes"));
}
