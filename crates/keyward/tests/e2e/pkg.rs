//! The Julia package-server protocol, replayed exactly as PkgAuthentication.jl 2.x sends
//! it (no content types, a form without percent-encoding, the response pasted as the
//! whole query string), checking that the token file it would save is one it accepts.

use reqwest::StatusCode;

use keyward_client::login::unix_now;
use keyward_client::tokenfile::TokenStore;
use keyward_client::{Flow, Options, State};

use crate::support::*;

/// What PkgAuthentication.jl requires of auth.toml before it uses it.
fn julia_accepts(token: &toml::Table) -> bool {
    ["id_token", "refresh_token", "refresh_url", "access_token"]
        .iter()
        .all(|k| token.get(*k).is_some_and(toml::Value::is_str))
        && token
            .get("expires_at")
            .is_some_and(|v| v.is_integer() || v.is_float())
}

/// The status and JSON error code of a refused request.
async fn refusal(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Opens `/auth/response?<answer>` in `browser`, signs in as alice and approves, as the
/// person at the Julia client does.
async fn approve_response(app: &TestApp, browser: &reqwest::Client, answer: &str) {
    let outcome = drive(
        browser,
        &format!("{}/auth/response?{answer}", app.issuer),
        "alice",
        PASSWORD,
        "approve",
    )
    .await;
    let (status, html) = outcome.page();
    assert!(
        status == StatusCode::OK && html.contains("Device connected"),
        "{html}"
    );
}

fn to_toml(json: &serde_json::Value) -> toml::Table {
    toml::Table::try_from(json).expect("a token object maps to TOML")
}

#[tokio::test]
async fn julia_classic_flow_and_toml_refresh() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let client = http();

    // As the Julia client asks: GET with Accept: application/json.
    let configuration: serde_json::Value = client
        .get(format!("{}/auth/configuration", app.issuer))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        configuration["auth_flows"],
        serde_json::json!(["classic", "device"])
    );
    assert_eq!(
        configuration["device_token_refresh_url"],
        format!("{}/auth/refresh", app.issuer)
    );

    // 1. The challenge: a raw 32-character body, no content type.
    let challenge = "Abc123Def456Ghi789Jkl012Mno345Pq";
    let response = client
        .post(format!("{}/auth/challenge", app.issuer))
        .body(challenge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = response.text().await.unwrap();
    assert!(
        !answer.ends_with('\n')
            && answer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // 2. Polling before the user acted: an absolute expiry in the future.
    let claim = serde_json::json!({ "challenge": challenge, "response": answer }).to_string();
    let claim_once = || {
        client
            .post(format!("{}/auth/claimtoken", app.issuer))
            .body(claim.clone())
            .send()
    };
    let pending: serde_json::Value = claim_once().await.unwrap().json().await.unwrap();
    assert!(pending["expiry"].as_i64().unwrap() > keyward_server::domain::now());

    // A wrong challenge with the right response gets nothing.
    let forged = serde_json::json!({ "challenge": "x".repeat(32), "response": answer }).to_string();
    let response = client
        .post(format!("{}/auth/claimtoken", app.issuer))
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal(response).await,
        (
            StatusCode::BAD_REQUEST,
            "invalid_grant".into(),
            "unknown challenge or response".into()
        )
    );

    // 3. The browser opens S/auth/response?<response>, signs in and approves.
    approve_response(&app, &browser(), &answer).await;

    // 4. The claim now returns the token file, once.
    let response = claim_once().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    let token = &body["token"];
    assert!(
        token.get("token_type").is_none() && token.get("scope").is_none(),
        "{token}"
    );
    assert_eq!(token["user_name"], "alice");
    let file = to_toml(token);
    assert!(julia_accepts(&file), "{file}");
    assert_eq!(
        refusal(claim_once().await.unwrap()).await,
        (
            StatusCode::BAD_REQUEST,
            "invalid_grant".into(),
            "the token was already claimed".into()
        ),
        "claimed once only"
    );

    // 5. Refresh: GET refresh_url with the refresh token as bearer; the answer is a
    //    complete token file in TOML, saved as is.
    let refresh_url = file["refresh_url"].as_str().unwrap();
    let old_refresh = file["refresh_token"].as_str().unwrap();
    let response = client
        .get(refresh_url)
        .bearer_auth(old_refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed: toml::Table = response.text().await.unwrap().parse().unwrap();
    assert!(julia_accepts(&refreshed), "{refreshed}");
    assert_eq!(refreshed["expires"], refreshed["expires_at"]);
    assert_eq!(refreshed["refresh_url"].as_str(), Some(refresh_url));
    assert_ne!(
        refreshed["refresh_token"].as_str().unwrap(),
        old_refresh,
        "rotated"
    );
    assert!(is_active(&app, refreshed["access_token"].as_str().unwrap()).await);

    // 6. keyward's own client reads the file the Julia client saved and, when it is
    //    about to expire, refreshes it the Julia way (no client_id in the file).
    let home = temp_dir();
    let server = url::Url::parse(&app.issuer).unwrap();
    let store = TokenStore::for_server(&home, &server).unwrap();
    let mut julia_file = refreshed.clone();
    julia_file.insert("expires_at".into(), toml::Value::Integer(unix_now() + 5));
    std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
    std::fs::write(store.path(), toml::to_string(&julia_file).unwrap()).unwrap();
    let http = keyward_client::http::http_client(std::time::Duration::from_secs(10)).unwrap();
    let mut flow = Flow::new(&home, server, http, Options::default()).unwrap();
    let mut names = Vec::new();
    let token = flow
        .run(State::NeedAuthentication, |state| names.push(state.name()))
        .await
        .unwrap();
    assert_eq!(names, ["HasToken", "NeedRefresh", "HasNewToken", "Success"]);
    assert_ne!(
        token.access_token,
        refreshed["access_token"].as_str().unwrap()
    );
    assert!(is_active(&app, &token.access_token).await);
    let saved: toml::Table = std::fs::read_to_string(store.path())
        .unwrap()
        .parse()
        .unwrap();
    assert!(julia_accepts(&saved), "{saved}");
    assert!(saved.get("client_id").is_none(), "still a Julia file");
    let _ = std::fs::remove_dir_all(home);

    // 7. The rotated token, whose successor keyward's client used in step 6, is reuse
    //    and refused; and so is nothing.
    let reused = client
        .get(refresh_url)
        .bearer_auth(old_refresh)
        .send()
        .await
        .unwrap();
    let (status, error, _) = refusal(reused).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    let (status, error, _) = refusal(client.get(refresh_url).send().await.unwrap()).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}

/// Attack: skipping the classic flow's challenge. The `response` travels in the
/// browser's URL (`/auth/response?<response>`: history, proxy logs, a shared screen);
/// the challenge never leaves the Julia client. Before the fix the response was also a
/// device code that `/token` redeemed for the public client, so whoever saw the URL
/// took the login once the user approved it. Now only `/auth/claimtoken` with the
/// challenge hands out the tokens, and the user code behind it cannot be typed on
/// `/device` either.
#[tokio::test]
async fn the_julia_response_is_useless_without_its_challenge() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let client = http();
    let challenge = "Abc123Def456Ghi789Jkl012Mno345Pq";
    let response = client
        .post(format!("{}/auth/challenge", app.issuer))
        .body(challenge)
        .send()
        .await
        .unwrap();
    let answer = response.text().await.unwrap();
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", answer.as_str()),
        ("client_id", "device"),
    ];
    let steal = || token_request(&app, "device", None, &form);
    let (status, body) = steal().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );

    // The user code behind the response is not accepted on /device.
    let record = app
        .state
        .store()
        .get_device_code(&keyward_proto::TokenHash::of(&answer))
        .await
        .unwrap()
        .unwrap();
    let browser = browser();
    let page = open(&browser, &format!("{}/device", app.issuer)).await;
    let response = submit(
        &browser,
        &page,
        "/device",
        "",
        &[("user_code", &record.user_code)],
    )
    .await;
    let page = settle(&browser, response).await.unwrap();
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.html.contains("not valid or has expired"),
        "{}",
        page.html
    );

    // The user approves; the thief polling /token still gets nothing.
    approve_response(&app, &browser, &answer).await;
    let (status, body) = steal().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    assert!(body.get("access_token").is_none());

    // The Julia client, with its challenge, still gets its login.
    let claim = serde_json::json!({ "challenge": challenge, "response": answer }).to_string();
    let response = client
        .post(format!("{}/auth/claimtoken", app.issuer))
        .body(claim)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token"]["user_name"], "alice", "{body}");
}

#[tokio::test]
async fn julia_device_flow() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let client = http();
    let configuration: serde_json::Value =
        get_json(&format!("{}/auth/configuration", app.issuer)).await;
    let scope = configuration["device_token_scope"].as_str().unwrap();

    // The form body is built without percent-encoding: the scope has literal spaces.
    let body = format!("client_id=device&scope={scope}");
    let response = client
        .post(
            configuration["device_authorization_endpoint"]
                .as_str()
                .unwrap(),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started: serde_json::Value = response.json().await.unwrap();
    assert!(started["device_code"].is_string() && started["expires_in"].is_u64());
    let device_code = started["device_code"].as_str().unwrap().to_owned();

    let token_endpoint = configuration["device_token_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let poll_body = format!(
        "client_id=device&device_code={device_code}&grant_type=urn:ietf:params:oauth:grant-type:device_code"
    );
    let pending = client
        .post(&token_endpoint)
        .body(poll_body.clone())
        .send()
        .await
        .unwrap();
    let (status, error, _) = refusal(pending).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_REQUEST, "authorization_pending"),
        "400 means: keep polling"
    );

    // The user opens verification_uri_complete and approves.
    let complete = started["verification_uri_complete"].as_str().unwrap();
    let (status, html) = approve_device(&browser(), complete, "bob", "approve")
        .await
        .page();
    assert!(
        status == StatusCode::OK && html.contains("Device connected"),
        "{html}"
    );
    app.advance(2);
    let response = client
        .post(&token_endpoint)
        .body(poll_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body: serde_json::Value = response.json().await.unwrap();

    // What the server must send: the three tokens as strings and a positive lifetime.
    // The rest of the file is the Julia client's: it adds `expires`, `expires_at` and
    // `refresh_url` itself, so the server's answer must not carry other values for them.
    for key in ["access_token", "id_token", "refresh_token"] {
        assert!(
            body[key].as_str().is_some_and(|t| !t.is_empty()),
            "{key}: {body}"
        );
    }
    let expires_in = body["expires_in"].as_i64().expect("expires_in");
    assert!(expires_in > 0, "{body}");
    for key in ["expires", "expires_at", "refresh_url"] {
        assert!(
            body.get(key).is_none(),
            "{key} is the client's to add: {body}"
        );
    }
    let expires = keyward_server::domain::now() + expires_in;
    body["expires"] = expires.into();
    body["expires_at"] = expires.into();
    body["refresh_url"] = configuration["device_token_refresh_url"].clone();
    let file = to_toml(&body);
    assert!(julia_accepts(&file), "{file}");

    // Its refresh token works at the TOML refresh URL.
    let response = client
        .get(file["refresh_url"].as_str().unwrap())
        .bearer_auth(file["refresh_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed: toml::Table = response.text().await.unwrap().parse().unwrap();
    assert!(julia_accepts(&refreshed), "{refreshed}");
    assert_eq!(refreshed["expires"], refreshed["expires_at"]);
    assert_eq!(refreshed["refresh_url"], file["refresh_url"]);
    assert!(refreshed["expires_in"].as_integer().is_some_and(|s| s > 0));
    assert_eq!(refreshed["user_name"].as_str(), Some("bob"));
}

#[tokio::test]
async fn julia_protocol_refuses_bad_input_and_can_be_turned_off() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let client = http();
    for body in ["", "not alphanumeric!", &"a".repeat(300)] {
        let response = client
            .post(format!("{}/auth/challenge", app.issuer))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let (status, error, _) = refusal(response).await;
        assert_eq!(
            (status, error.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
    }
    for body in [
        "",
        "{",
        "[]",
        "{\"challenge\":1}",
        "{\"challenge\":\"a\",\"response\":\"b\"}",
    ] {
        let response = client
            .post(format!("{}/auth/claimtoken", app.issuer))
            .body(body)
            .send()
            .await
            .unwrap();
        let expected = if body.contains("response") {
            "invalid_grant"
        } else {
            "invalid_request"
        };
        let (status, error, _) = refusal(response).await;
        assert_eq!(
            (status, error.as_str()),
            (StatusCode::BAD_REQUEST, expected),
            "{body}"
        );
    }
    let response = browser()
        .get(format!("{}/auth/response?nonsense", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains("has expired or was already used"), "{html}");

    let off = spawn_app(Db::Sqlite, "[pkg_auth]\nenabled = false")
        .await
        .unwrap();
    let response = client
        .get(format!("{}/auth/configuration", off.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Every route of the protocol is gone, not only the configuration.
    let response = client
        .post(format!("{}/auth/challenge", off.issuer))
        .body("Abc123Def456Ghi789Jkl012Mno345Pq")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        off.state
            .store()
            .get_client("device")
            .await
            .unwrap()
            .is_none(),
        "no client registered when off"
    );
}

/// `[pkg_auth] client_id` names the client the protocol registers and issues to.
#[tokio::test]
async fn the_package_client_id_is_configurable() {
    let app = spawn_app(Db::Sqlite, "[pkg_auth]\nclient_id = \"julia-pkg\"")
        .await
        .unwrap();
    let store = app.state.store();
    assert!(store.get_client("julia-pkg").await.unwrap().is_some());
    assert!(store.get_client("device").await.unwrap().is_none());

    let client = http();
    let challenge = "Abc123Def456Ghi789Jkl012Mno345Pq";
    let answer = client
        .post(format!("{}/auth/challenge", app.issuer))
        .body(challenge)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    approve_response(&app, &browser(), &answer).await;
    let claim = serde_json::json!({ "challenge": challenge, "response": answer }).to_string();
    let response = client
        .post(format!("{}/auth/claimtoken", app.issuer))
        .body(claim)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    let access = body["token"]["access_token"].as_str().unwrap();
    assert_eq!(jwt_payload(access)["client_id"], "julia-pkg");

    // The device flow takes that client id, and only that one.
    let start = |client_id: &str| {
        client
            .post(format!("{}/device/code", app.issuer))
            .body(format!("client_id={client_id}&scope=openid offline_access"))
            .send()
    };
    assert_eq!(start("julia-pkg").await.unwrap().status(), StatusCode::OK);
    let (status, error, _) = refusal(start("device").await.unwrap()).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
}
