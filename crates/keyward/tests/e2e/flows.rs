//! Every grant driven by the `openidconnect` crate, on SQLite and on PostgreSQL, and the
//! failures a client must see: wrong verifier, replayed code, reused refresh token,
//! redirect URI mismatch, expired code, wrong secret, disabled user, consent, prompt,
//! throttling and logout.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use reqwest::StatusCode;

use crate::support::*;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

async fn oidc_client(app: &TestApp, client_id: &str, secret: &str) -> Client {
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer.clone()).unwrap(), &http())
            .await
            .expect("discovery");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.into()),
        Some(ClientSecret::new(secret.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
}

struct Authorized {
    code: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
}

async fn authorize(
    client: &Client,
    browser: &reqwest::Client,
    scopes: &[&str],
    user: &str,
) -> Authorized {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in scopes {
        request = request.add_scope(Scope::new((*scope).into()));
    }
    let (url, state, nonce) = request.url();
    let params = drive(browser, url.as_str(), user, PASSWORD, "approve")
        .await
        .callback();
    assert_eq!(params.get("state"), Some(state.secret()), "state is echoed");
    assert!(params.contains_key("iss"), "RFC 9207 iss");
    Authorized {
        code: params["code"].clone(),
        verifier,
        nonce,
    }
}

/// The whole tour on one store: code + PKCE, ID token, userinfo, refresh rotation,
/// client credentials, introspection, revocation.
async fn tour(db: Db) {
    let Some(app) = spawn_app(db, "").await else {
        return;
    };
    let client = oidc_client(&app, "demo-app", SECRET).await;
    let browser = browser();

    let auth = authorize(
        &client,
        &browser,
        &["profile", "email", "offline_access"],
        "alice",
    )
    .await;
    let tokens = client
        .exchange_code(AuthorizationCode::new(auth.code))
        .unwrap()
        .set_pkce_verifier(auth.verifier)
        .request_async(&http())
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("id token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &auth.nonce)
        .expect("valid id token");
    assert_eq!(claims.preferred_username().unwrap().as_str(), "alice");
    assert_eq!(claims.email().unwrap().as_str(), "alice@example.com");
    assert_eq!(claims.email_verified(), Some(true));
    assert!(claims.auth_time().is_some());
    let at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&at_hash));
    let sub = claims.subject().clone();

    // The access token is an RFC 9068 JWT.
    let header = tokens
        .access_token()
        .secret()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let header: serde_json::Value = serde_json::from_slice(&base64_url(&header)).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");

    let info: openidconnect::core::CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http())
        .await
        .expect("userinfo");
    assert_eq!(info.subject(), &sub);
    assert_eq!(info.email().unwrap().as_str(), "alice@example.com");

    // Refresh rotates: the new pair works, the old refresh token does not.
    let refresh = tokens.refresh_token().expect("refresh token").clone();
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http())
        .await
        .expect("refresh");
    let rotated = refreshed
        .refresh_token()
        .expect("rotated refresh token")
        .clone();
    assert_ne!(rotated.secret(), refresh.secret());
    let new_id = refreshed.id_token().expect("id token on refresh");
    assert_eq!(
        new_id
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .unwrap()
            .subject(),
        &sub
    );
    assert!(is_active(&app, refreshed.access_token().secret()).await);
    assert!(is_active(&app, rotated.secret()).await);
    assert!(
        !is_active(&app, refresh.secret()).await,
        "a rotated refresh token is inactive"
    );

    // Client credentials.
    let cc = client
        .exchange_client_credentials()
        .unwrap()
        .add_scope(Scope::new("api:read".into()))
        .request_async(&http())
        .await
        .expect("client credentials");
    assert!(cc.refresh_token().is_none());
    assert!(is_active(&app, cc.access_token().secret()).await);
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "client_credentials"), ("scope", "openid")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    // Revoking the access token makes it inactive and useless at userinfo.
    let response = http()
        .post(format!("{}/revoke", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", refreshed.access_token().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!is_active(&app, refreshed.access_token().secret()).await);
    let response = http()
        .get(format!("{}/userinfo", app.issuer))
        .bearer_auth(refreshed.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // Revoking the refresh token ends the grant.
    http()
        .post(format!("{}/revoke", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[
            ("token", rotated.secret().as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    let refused = client
        .exchange_refresh_token(&rotated)
        .unwrap()
        .request_async(&http())
        .await
        .expect_err("a revoked refresh token is refused");
    match refused {
        openidconnect::RequestTokenError::ServerResponse(answer) => assert_eq!(
            *answer.error(),
            openidconnect::core::CoreErrorResponseType::InvalidGrant,
            "{answer:?}"
        ),
        other => panic!("expected invalid_grant from the server, got {other:?}"),
    }

    // Single sign-on: a second authorization in the same browser needs no password.
    let second = authorize(&client, &browser, &["profile"], "nobody-needed").await;
    assert!(!second.code.is_empty());
}

fn base64_url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn tour_on_sqlite() {
    tour(Db::Sqlite).await;
}

#[tokio::test]
async fn tour_on_postgres() {
    tour(Db::Postgres).await;
}

/// A manual authorization URL with the default scope `openid offline_access`.
fn authorize_url(app: &TestApp, client_id: &str, extra: &str) -> (String, PkceCodeVerifier) {
    crate::support::authorize_url(&app.issuer, client_id, "openid offline_access", extra)
}

async fn code_for(
    app: &TestApp,
    browser: &reqwest::Client,
    user: &str,
) -> (String, PkceCodeVerifier) {
    let (url, verifier) = authorize_url(app, "demo-app", "");
    let params = drive(browser, &url, user, PASSWORD, "approve")
        .await
        .callback();
    (params["code"].clone(), verifier)
}

async fn exchange(app: &TestApp, code: &str, verifier: &str) -> (StatusCode, serde_json::Value) {
    token_request(
        app,
        "demo-app",
        Some(SECRET),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Each refusal is checked by its description too: every case gets `invalid_grant`,
/// so a code that merely expired (or a server that refuses everything) would otherwise
/// pass the wrong-verifier and redirect-mismatch cases. The code lives a minute and the
/// expiry case moves the server's clock instead of racing a one-second lifetime.
#[tokio::test]
async fn code_failures() {
    let app = spawn_app(Db::Sqlite, "authorization_code_ttl = \"60s\"")
        .await
        .unwrap();
    let browser = browser();

    // Wrong verifier.
    let (code, _) = code_for(&app, &browser, "alice").await;
    let (status, body) = exchange(
        &app,
        &code,
        &PkceCodeVerifier::new("x".repeat(43)).secret().clone(),
    )
    .await;
    assert_eq!(
        (
            status,
            body["error"].as_str(),
            body["error_description"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_grant"),
            Some("code_verifier does not match the code_challenge")
        )
    );

    // Redirect URI mismatch at the token endpoint.
    let (code, verifier) = code_for(&app, &browser, "alice").await;
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:5555/other"),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(
        (
            status,
            body["error"].as_str(),
            body["error_description"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_grant"),
            Some("redirect_uri differs from the authorization request")
        )
    );

    // Wrong client secret.
    let (code, verifier) = code_for(&app, &browser, "alice").await;
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some("wrong-secret"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // Replayed code: the second use fails and revokes what the first one issued.
    let (code, verifier) = code_for(&app, &browser, "alice").await;
    let (status, first) = exchange(&app, &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert!(is_active(&app, access).await);
    let (status, body) = exchange(&app, &code, verifier.secret()).await;
    assert_eq!(
        (
            status,
            body["error"].as_str(),
            body["error_description"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_grant"),
            Some("authorization code already used; the tokens issued with it are revoked")
        )
    );
    assert!(
        !is_active(&app, access).await,
        "replay revokes the access token"
    );
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "replay revokes the refresh token: {body}"
    );

    // Expired code.
    let (code, verifier) = code_for(&app, &browser, "alice").await;
    app.advance(61);
    let (status, body) = exchange(&app, &code, verifier.secret()).await;
    assert_eq!(
        (
            status,
            body["error"].as_str(),
            body["error_description"].as_str()
        ),
        (
            StatusCode::BAD_REQUEST,
            Some("invalid_grant"),
            Some("authorization code expired")
        )
    );
}

/// Reuse detection (RFC 9700 §4.14.2): a rotated token coming back after its
/// successor was used means it leaked, and the whole grant is revoked.
#[tokio::test]
async fn refresh_reuse_after_the_successor_was_used_revokes_the_grant() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let (code, verifier) = code_for(&app, &browser(), "alice").await;
    let (_, first) = exchange(&app, &code, verifier.secret()).await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            token_request(
                app,
                "demo-app",
                Some(SECRET),
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
            )
            .await
        }
    };
    let old = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = refresh(old.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let newer = second["refresh_token"].as_str().unwrap().to_owned();
    // The successor is used…
    let (status, third) = refresh(newer.clone()).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    // …so the old token coming back is theft.
    let (status, body) = refresh(old).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("grant is revoked"),
        "{body}"
    );
    let (status, body) = refresh(third["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "the whole grant is revoked: {body}"
    );
    assert!(!is_active(&app, third["access_token"].as_str().unwrap()).await);
}

/// Attack (and accident): forking the grant. Before the fix a rotated token redeemed
/// again within the grace window gave a new, independent successor each time (50
/// concurrent reuses left 51 live chains, and a token stolen within the window kept
/// working for good), and after the window the client's own retry revoked the grant.
/// Now the successor is derived from the token: every one of 50 concurrent requests
/// gets the same successor, the store holds one chain, and it keeps working.
#[tokio::test]
async fn concurrent_refreshes_of_one_token_get_one_successor() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let (code, verifier) = code_for(&app, &browser(), "alice").await;
    let (_, first) = exchange(&app, &code, verifier.secret()).await;
    let old = first["refresh_token"].as_str().unwrap().to_owned();
    let base = app.issuer.clone();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (base, old) = (base.clone(), old.clone());
            tokio::spawn(async move {
                let response = http()
                    .post(format!("{base}/token"))
                    .basic_auth("demo-app", Some(SECRET))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &old)])
                    .send()
                    .await
                    .unwrap();
                (
                    response.status(),
                    response.json::<serde_json::Value>().await.unwrap(),
                )
            })
        })
        .collect();
    let mut successors = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        successors.insert(body["refresh_token"].as_str().unwrap().to_owned());
        assert!(is_active(&app, body["access_token"].as_str().unwrap()).await);
    }
    assert_eq!(
        successors.len(),
        1,
        "one successor, not {}",
        successors.len()
    );
    let successor = successors.pop_first().unwrap();
    assert!(is_active(&app, &successor).await);
    let db = app.dir.join("keyward.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let (rows, live): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(*) - COUNT(rotated_at) FROM refresh_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (rows, live),
        (2, 1),
        "one chain: the old token and its successor"
    );
    pool.close().await;
    // And the chain goes on.
    let (status, next) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &successor),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
}

/// A rotation whose answer never reached the client (the server was killed between
/// commit and answer, the network cut): after a restart, however much later, the
/// client's retry with the old token gets the same successor and the grant lives.
/// Before the fix the retry after the grace window revoked the grant.
#[tokio::test]
async fn a_rotation_whose_answer_was_lost_is_retried_after_a_restart() {
    let listener = bind().await;
    let mut app = spawn_app_on(listener, "127.0.0.1", Db::Sqlite, &base_config(""))
        .await
        .unwrap();
    let (code, verifier) = code_for(&app, &browser(), "alice").await;
    let (_, first) = exchange(&app, &code, verifier.secret()).await;
    let old = first["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", old.as_str()),
    ];
    let (status, lost) = token_request(&app, "demo-app", Some(SECRET), &form).await;
    assert_eq!(status, StatusCode::OK);
    // The server goes away with its answer; a new one starts on the same database.
    app.stop();
    let database_url = format!("sqlite://{}/keyward.db", app.dir.display());
    let restarted = spawn_on_database(&database_url, &base_config("")).await;
    let (status, retried) = token_request(&restarted, "demo-app", Some(SECRET), &form).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["refresh_token"], lost["refresh_token"]);
    assert!(is_active(&restarted, retried["access_token"].as_str().unwrap()).await);
    drop(app);
}

#[tokio::test]
async fn public_client_and_scope_narrowing() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (url, verifier) = authorize_url(&app, "cli", "");
    let params = drive(&browser, &url, "bob", PASSWORD, "approve")
        .await
        .callback();
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "cli"),
            ("code", &params["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap();
    // Narrowing on refresh is allowed, widening is not.
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cli"),
            ("refresh_token", refresh),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "openid");
    let refresh = body["refresh_token"].as_str().unwrap();
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cli"),
            ("refresh_token", refresh),
            ("scope", "openid email"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // A public client cannot use client_credentials, and cannot introspect.
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[("grant_type", "client_credentials"), ("client_id", "cli")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    let response = http()
        .post(format!("{}/introspect", app.issuer))
        .form(&[("client_id", "cli"), ("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn disabled_user_cannot_log_in_and_loses_tokens() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let (code, verifier) = code_for(&app, &browser(), "bob").await;
    let (_, tokens) = exchange(&app, &code, verifier.secret()).await;
    keyward_server::admin::set_disabled(app.state.store(), "bob", true)
        .await
        .unwrap();
    assert!(!is_active(&app, tokens["access_token"].as_str().unwrap()).await);
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (url, _) = authorize_url(&app, "demo-app", "");
    let (status, html) = drive(&browser(), &url, "bob", PASSWORD, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("disabled"));
}

#[tokio::test]
async fn consent_is_asked_remembered_and_can_be_denied() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (url, _) = crate::support::authorize_url(&app.issuer, "third-party", "openid email", "");
    let denied = drive(&browser, &url, "alice", PASSWORD, "deny")
        .await
        .callback();
    assert_eq!(
        denied.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert_eq!(denied.get("state").map(String::as_str), Some("st"));

    // Approve; the consent page showed the client's name.
    let consent = browser.get(&url).send().await.unwrap();
    let consent = browser.get(location(&consent)).send().await.unwrap();
    assert!(consent.url().path().ends_with("/consent"));
    let html = consent.text().await.unwrap();
    assert!(html.contains("Third Party App") && html.contains("See your email address"));
    let approved = drive(&browser, &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    assert!(approved.contains_key("code"));

    // Remembered: prompt=none now succeeds without a page; a wider scope needs consent.
    let again = drive(
        &browser,
        &format!("{url}&prompt=none"),
        "alice",
        PASSWORD,
        "approve",
    )
    .await
    .callback();
    assert!(again.contains_key("code"), "{again:?}");
    let wider = drive(
        &browser,
        &format!(
            "{}&prompt=none",
            url.replace("openid+email", "openid+email+profile")
        ),
        "alice",
        PASSWORD,
        "approve",
    )
    .await
    .callback();
    assert_eq!(
        wider.get("error").map(String::as_str),
        Some("consent_required")
    );

    // prompt=consent asks again even though consent is remembered.
    let response = browser
        .get(format!("{url}&prompt=consent"))
        .send()
        .await
        .unwrap();
    assert!(location(&response).path().ends_with("/consent"));
}

/// Attack: approving after signing out. alice leaves a consent page (or a device's
/// consent page) open in a tab and signs out; whoever uses the browser next clicks
/// "approve". Before the fix that still issued a code (and approved the device) for
/// alice. Now consent needs the request's user still signed in here, and sign-out
/// ends the logins the browser had in progress.
#[tokio::test]
async fn consent_after_signing_out_is_refused() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (url, _) = crate::support::authorize_url(&app.issuer, "third-party", "openid profile", "");
    let page = open(&browser, &url).await;
    let response = submit(
        &browser,
        &page,
        "/login",
        "",
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    let consent = settle(&browser, response).await.unwrap();
    assert!(
        consent.html.contains("name=\"decision\""),
        "{}",
        consent.html
    );

    // A device consent page too.
    let (status, started) = token_request_device(&app).await;
    assert_eq!(status, StatusCode::OK);
    let device_page = open(
        &browser,
        started["verification_uri_complete"].as_str().unwrap(),
    )
    .await;
    let user_code = started["user_code"].as_str().unwrap();
    let response = submit(
        &browser,
        &device_page,
        "/device",
        "",
        &[("user_code", user_code)],
    )
    .await;
    let device_consent = settle(&browser, response).await.unwrap();
    assert!(
        device_consent.html.contains("name=\"decision\""),
        "{}",
        device_consent.html
    );

    // Sign out in another tab.
    let logout = open(&browser, &format!("{}/logout", app.issuer)).await;
    let response = submit(&browser, &logout, "/logout", "", &[("decision", "logout")]).await;
    assert_eq!(response.status(), StatusCode::OK);

    for page in [&consent, &device_consent] {
        let response = submit(&browser, page, "/consent", "", &[("decision", "approve")]).await;
        let outcome = settle(&browser, response).await;
        let page = outcome.expect("no code may reach the client");
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.html);
        assert!(!page.html.contains("Device connected"), "{}", page.html);
    }
    // The device never gets tokens.
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", started["device_code"].as_str().unwrap()),
            ("client_id", "cli"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending")),
        "{body}"
    );
}

/// Starts a device authorization for the public client `cli`.
async fn token_request_device(app: &TestApp) -> (StatusCode, serde_json::Value) {
    let response = http()
        .post(format!("{}/device/code", app.issuer))
        .form(&[("client_id", "cli"), ("scope", "openid")])
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Attack: learning whose a token is. Before the fix any confidential client could
/// introspect any token and read its subject, scope and client. Now a client learns
/// only about its own tokens; a resource server registered with `introspect = true`
/// learns about all of them.
#[tokio::test]
async fn introspection_tells_a_client_only_about_its_own_tokens() {
    let app = spawn_app(
        Db::Sqlite,
        r#"
[[clients]]
client_id = "gateway"
client_secret = "gateway-secret-0123456789abcdef"
grant_types = ["client_credentials"]
scopes = ["api:read"]
introspect = true

[[clients]]
client_id = "nosy"
client_secret = "nosy-secret-0123456789abcdef"
grant_types = ["client_credentials"]
scopes = ["api:read"]
"#,
    )
    .await
    .unwrap();
    let (code, verifier) = code_for(&app, &browser(), "alice").await;
    let (_, tokens) = exchange(&app, &code, verifier.secret()).await;
    let introspect = |client: &'static str, secret: &'static str, token: String| {
        let issuer = app.issuer.clone();
        async move {
            http()
                .post(format!("{issuer}/introspect"))
                .basic_auth(client, Some(secret))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let nosy = ("nosy", "nosy-secret-0123456789abcdef");
    let gateway = ("gateway", "gateway-secret-0123456789abcdef");
    for token in [&tokens["access_token"], &tokens["refresh_token"]] {
        let token = token.as_str().unwrap().to_owned();
        let answer = introspect(nosy.0, nosy.1, token.clone()).await;
        assert_eq!(
            answer,
            serde_json::json!({"active": false}),
            "told nosy: {answer}"
        );
        let answer = introspect(gateway.0, gateway.1, token).await;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["client_id"], "demo-app");
        assert!(answer["sub"].is_string());
    }
    // A client learns about its own tokens.
    let (status, own) = token_request(
        &app,
        nosy.0,
        Some(nosy.1),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer = introspect(
        nosy.0,
        nosy.1,
        own["access_token"].as_str().unwrap().to_owned(),
    )
    .await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["client_id"], "nosy");
}

#[tokio::test]
async fn prompt_and_authorize_errors() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();

    // prompt=none without a session.
    let (url, _) = authorize_url(&app, "demo-app", "&prompt=none");
    let params = drive(&browser, &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("login_required")
    );

    // Sign in, then prompt=login shows the login page again.
    code_for(&app, &browser, "alice").await;
    let (url, _) = authorize_url(&app, "demo-app", "&prompt=login");
    let response = browser.get(&url).send().await.unwrap();
    assert!(location(&response).path().ends_with("/login"));

    // max_age=0 asks for a fresh login even with a session.
    let (url, _) = authorize_url(&app, "demo-app", "&max_age=0");
    let response = browser.get(&url).send().await.unwrap();
    assert!(location(&response).path().ends_with("/login"));
    // max_age of an hour accepts the session.
    let (url, _) = authorize_url(&app, "demo-app", "&max_age=3600");
    let response = browser.get(&url).send().await.unwrap();
    assert!(location(&response).as_str().starts_with(REDIRECT));

    // login_hint prefills the username.
    let (url, _) = authorize_url(&app, "demo-app", "&prompt=login&login_hint=bob");
    let response = browser.get(&url).send().await.unwrap();
    let html = browser
        .get(location(&response))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"username\" value=\"bob\""), "{html}");

    // Unknown client and unregistered redirect URI: an error page, never a redirect.
    let (url, _) = authorize_url(&app, "nobody", "");
    let response = browser.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    let url = format!(
        "{}/authorize?client_id=demo-app&response_type=code&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        app.issuer
    );
    let response = browser.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    assert!(response.text().await.unwrap().contains("redirect_uri"));

    // Errors after the redirect URI is known go back to the client.
    for (query, error) in [
        ("response_type=token", "unsupported_response_type"),
        ("response_type=code", "invalid_request"),
        (
            "response_type=code&code_challenge=abc&code_challenge_method=plain",
            "invalid_request",
        ),
        (
            "response_type=code&scope=admin&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
            "invalid_scope",
        ),
    ] {
        let url = format!(
            "{}/authorize?client_id=demo-app&redirect_uri={}&state=s1&{query}",
            app.issuer,
            urlencode(REDIRECT)
        );
        let response = browser.get(&url).send().await.unwrap();
        let target = location(&response);
        let params: std::collections::BTreeMap<_, _> = target.query_pairs().into_owned().collect();
        assert_eq!(
            params.get("error").map(String::as_str),
            Some(error),
            "{query}"
        );
        assert_eq!(params.get("state").map(String::as_str), Some("s1"));
    }
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    for _ in 0..5 {
        let (url, _) = authorize_url(&app, "demo-app", "");
        let (status, html) = drive(&browser(), &url, "alice", "wrong password", "approve")
            .await
            .page();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(html.contains("Invalid username or password"));
    }
    let (url, _) = authorize_url(&app, "demo-app", "");
    match drive(&browser(), &url, "alice", PASSWORD, "approve").await {
        Outcome::Page(status, _) => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
        Outcome::Callback(_) => panic!("throttled account logged in"),
    }
    // Another account is unaffected.
    code_for(&app, &browser(), "bob").await;
    for (reason, count) in [("bad_credentials", 5), ("throttled", 1)] {
        let series = format!(r#"keyward_login_failures_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&app, &series).await, count, "{series}");
    }
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    // Fifty failures spread over many accounts, all from 127.0.0.1.
    for i in 0..50 {
        let (url, _) = authorize_url(&app, "demo-app", "");
        match drive(
            &browser(),
            &url,
            &format!("user{i}"),
            "wrong password",
            "approve",
        )
        .await
        {
            Outcome::Page(status, _) => assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}"),
            Outcome::Callback(_) => panic!("unknown user logged in"),
        }
    }
    let (url, _) = authorize_url(&app, "demo-app", "");
    let (status, html) = drive(&browser(), &url, "bob", PASSWORD, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(html.contains("Too many failed sign-in attempts"));
}

#[tokio::test]
async fn rp_initiated_logout() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (url, verifier) = authorize_url(&app, "demo-app", "");
    let params = drive(&browser, &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    let (_, tokens) = exchange(&app, &params["code"], verifier.secret()).await;
    let id_token = tokens["id_token"].as_str().unwrap();

    // An unregistered post_logout_redirect_uri is refused with a page.
    let bad = format!(
        "{}/logout?id_token_hint={id_token}&post_logout_redirect_uri={}",
        app.issuer,
        urlencode("https://evil.example/")
    );
    let response = browser.get(&bad).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());

    // Without a hint the user must confirm; the page carries a CSRF token.
    let response = browser
        .get(format!("{}/logout", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Sign out?"));

    // With the hint: signed out at once and sent back with state.
    let good = format!(
        "{}/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye1",
        app.issuer,
        urlencode("http://127.0.0.1:5555/bye")
    );
    let response = browser.get(&good).send().await.unwrap();
    let target = location(&response);
    assert_eq!(target.path(), "/bye");
    assert!(target.query().unwrap().contains("state=bye1"));

    // The session is gone.
    let (url, _) = authorize_url(&app, "demo-app", "&prompt=none");
    let params = drive(&browser, &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("login_required")
    );
}

#[tokio::test]
async fn id_token_algorithm_follows_the_client() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let client = oidc_client(&app, "third-party", "third-party-secret-0123456789abcdef").await;
    let browser = browser();
    let auth = authorize(&client, &browser, &["email"], "alice").await;
    let tokens = client
        .exchange_code(AuthorizationCode::new(auth.code))
        .unwrap()
        .set_pkce_verifier(auth.verifier)
        .request_async(&http())
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().unwrap();
    assert_eq!(
        *id_token.signing_alg().unwrap(),
        openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
    );
    id_token
        .claims(&client.id_token_verifier(), &auth.nonce)
        .expect("RS256 ID token verifies");
}

/// `response_mode=form_post` answers with a form that posts itself to the redirect URI;
/// `web_message` with a page that posts the response to the redirect URI's exact origin
/// (the JavaScript itself runs in `tests/js/browser.mjs`); errors after the client is
/// known travel the same way; an unknown mode is refused in the default one.
#[tokio::test]
async fn form_post_and_web_message_response_modes() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let url = |extra: &str| crate::support::authorize_url(&app.issuer, "demo-app", "openid", extra);

    let (form_post, verifier) = url("&response_mode=form_post");
    let (status, html) = drive(&browser, &form_post, "alice", PASSWORD, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!("action=\"{}\"", REDIRECT.replace('/', "&#x2f;"))),
        "{html}"
    );
    assert_eq!(hidden(&html, "state"), "st");
    assert_eq!(html_unescape(&hidden(&html, "iss")), app.issuer);
    let code = hidden(&html, "code");
    let (status, body) = exchange(&app, &code, verifier.secret()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The page's one script is allowed by a nonce in its CSP, nothing else is.
    let response = browser
        .get(&url("&response_mode=form_post").0)
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        html.contains(&format!("<script nonce=\"{nonce}\">")),
        "{html}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");

    let (web_message, _) = url("&response_mode=web_message");
    let (status, html) = drive(&browser, &web_message, "alice", PASSWORD, "approve")
        .await
        .page();
    assert_eq!(status, StatusCode::OK);
    let start = html.find("id=\"message\">").unwrap() + "id=\"message\">".len();
    let json = &html[start..start + html[start..].find("</script>").unwrap()];
    let message: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        message["origin"], "http://127.0.0.1:5555",
        "the exact origin, no path"
    );
    assert_eq!(message["response"]["state"], "st");
    assert_eq!(message["response"]["iss"], app.issuer.as_str());
    assert!(message["response"]["code"].as_str().is_some());
    assert!(html.contains("window.opener.postMessage"), "{html}");

    // An error after the client is known goes back in the requested mode.
    let (bad_scope, _) = crate::support::authorize_url(
        &app.issuer,
        "demo-app",
        "openid admin",
        "&response_mode=form_post",
    );
    let (status, html) = drive(&browser, &bad_scope, "-", "-", "-").await.page();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hidden(&html, "error"), "invalid_scope");

    // An unknown mode is refused, in the default query mode.
    let (unknown, _) = url("&response_mode=fragment");
    let params = drive(&browser, &unknown, "-", "-", "-").await.callback();
    assert_eq!(params["error"], "invalid_request");
    assert!(params["error_description"].contains("response_mode"));
}

/// RFC 7009 §2.1: a client may revoke only its own tokens. Another client's request is
/// answered 200 (it learns nothing) and changes nothing.
#[tokio::test]
async fn revocation_by_another_client_changes_nothing() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let (code, verifier) = code_for(&app, &browser(), "alice").await;
    let (_, tokens) = exchange(&app, &code, verifier.secret()).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    for token in [access, refresh] {
        let response = http()
            .post(format!("{}/revoke", app.issuer))
            .basic_auth("third-party", Some(THIRD_PARTY_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "");
        assert!(is_active(&app, token).await, "another client revoked it");
    }
    // The owner's refresh still works, and the owner can revoke.
    let (status, body) = token_request(
        &app,
        "demo-app",
        Some(SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = http()
        .post(format!("{}/revoke", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!is_active(&app, access).await);
}

/// Introspection (RFC 7662 §2.2) says more than `active`: what the token is, whose,
/// for whom, since and until when; for an access token the same as its claims.
#[tokio::test]
async fn introspection_describes_the_token() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    app.freeze_clock();
    let (code, verifier) = code_for(&app, &browser(), "alice").await;
    let (_, tokens) = exchange(&app, &code, verifier.secret()).await;
    let introspect = |token: String| {
        let issuer = app.issuer.clone();
        async move {
            http()
                .post(format!("{issuer}/introspect"))
                .basic_auth("demo-app", Some(SECRET))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let scopes = |v: &serde_json::Value| {
        let mut words: Vec<String> = v.as_str().unwrap().split(' ').map(str::to_owned).collect();
        words.sort();
        words
    };
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_payload(access);
    let info = introspect(access.to_owned()).await;
    assert_eq!(info["active"], true, "{info}");
    for key in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "jti",
    ] {
        assert_eq!(info[key], claims[key], "{key}: {info}");
    }
    assert_eq!(scopes(&info["scope"]), ["offline_access", "openid"]);
    assert_eq!(info["client_id"], "demo-app");
    assert_eq!(info["username"], "alice");
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(info["iss"], app.issuer.as_str());

    let refresh = tokens["refresh_token"].as_str().unwrap();
    let info = introspect(refresh.to_owned()).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["token_type"], "refresh_token");
    assert_eq!(info["client_id"], "demo-app");
    assert_eq!(info["username"], "alice");
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(scopes(&info["scope"]), ["offline_access", "openid"]);
    assert_eq!(info["iss"], app.issuer.as_str());
    // The default refresh lifetime, 30 days, counted from the login.
    let lifetime = info["exp"].as_i64().unwrap() - info["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 30 * 24 * 3600, "{info}");
}

/// A logout whose `id_token_hint` is not an ID token of this server (garbage, an
/// access token, another issuer's token) is an error page; it signs nobody out and
/// sends nobody anywhere.
#[tokio::test]
async fn logout_with_a_bad_id_token_hint_is_refused() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (code, verifier) = code_for(&app, &browser, "alice").await;
    let (_, tokens) = exchange(&app, &code, verifier.secret()).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    // Signed by nobody: the ID token's header and claims with another signature.
    let mut forged = id_token.rsplit_once('.').unwrap().0.to_owned();
    forged.push_str(".AAAA");
    for hint in [
        "garbage",
        tokens["access_token"].as_str().unwrap(),
        forged.as_str(),
    ] {
        let url = format!(
            "{}/logout?id_token_hint={}&post_logout_redirect_uri={}",
            app.issuer,
            urlencode(hint),
            urlencode("http://127.0.0.1:5555/bye")
        );
        let response = browser.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("location").is_none());
        let html = response.text().await.unwrap();
        assert!(
            html.contains("not an ID token issued by this server"),
            "{html}"
        );
    }
    // alice is still signed in.
    let (url, _) = authorize_url(&app, "demo-app", "&prompt=none");
    let params = drive(&browser, &url, "-", "-", "-").await.callback();
    assert!(params.contains_key("code"), "{params:?}");
}

/// RFC 6749 §4.1.2: `state` comes back exactly as the client sent it, also bytes that
/// are not UTF-8 (and NUL, `+`, `%`), through a stored login on SQLite and PostgreSQL;
/// and, where a page would have to carry it as text, it is refused instead of altered.
#[tokio::test]
async fn state_comes_back_byte_exact() {
    // Percent-encoded as a client that sends raw random bytes would.
    let sent = "%FF%FE%00a+b%2B%25%C0%AF%E2%82";
    let exact = |location: &str| {
        let query = location.split_once('?').expect("a query").1;
        let values: Vec<&str> = query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("state="))
            .collect();
        assert_eq!(values.len(), 1, "one state in {location}");
        percent_decode_form(values[0])
    };
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = spawn_app(db, "").await else {
            continue;
        };
        let (url, _) =
            crate::support::authorize_url(&app.issuer, "demo-app", "openid", "&prompt=login");
        let url = url.replace("state=st", &format!("state={sent}"));
        // The login is stored (prompt=login), so the state makes a trip to the database.
        let browser = browser();
        let to_login = browser.get(&url).send().await.unwrap();
        assert_eq!(to_login.status(), StatusCode::SEE_OTHER, "{db:?}");
        let page = browser.get(location(&to_login)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{db:?}");
        let login_url = page.url().join("login").unwrap();
        let html = page.text().await.unwrap();
        let mut response = browser
            .post(login_url.clone())
            .form(&[
                ("req", hidden(&html, "req")),
                ("csrf", hidden(&html, "csrf")),
                ("username", "alice".to_owned()),
                ("password", PASSWORD.to_owned()),
            ])
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let html = response.text().await.unwrap();
            assert!(html.contains("name=\"decision\""), "{db:?}: {html}");
            response = browser
                .post(login_url.join("consent").unwrap())
                .form(&[
                    ("req", hidden(&html, "req")),
                    ("csrf", hidden(&html, "csrf")),
                    ("decision", "approve".to_owned()),
                ])
                .send()
                .await
                .unwrap();
        }
        assert!(
            response.status().is_redirection(),
            "{db:?}: {}",
            response.status()
        );
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert!(location.contains("code="), "{location}");
        assert_eq!(
            exact(&location),
            percent_decode_form(sent),
            "{db:?}: {location}"
        );

        // An error redirect (prompt=none without a session) returns it exactly too.
        let (url, _) =
            crate::support::authorize_url(&app.issuer, "demo-app", "openid", "&prompt=none");
        let url = url.replace("state=st", &format!("state={sent}"));
        let response = self::browser().get(&url).send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("error=login_required"), "{location}");
        assert_eq!(exact(&location), percent_decode_form(sent));

        // form_post can only carry text: refused, not altered.
        let url = url.replace("prompt=none", "response_mode=form_post");
        let response = self::browser().get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        assert!(html.contains("state must be UTF-8 text"), "{html}");
        assert!(!html.contains("name=\"state\""), "{html}");
    }
}

/// The bytes of one form-urlencoded value (`+` is a space), not forced into UTF-8.
fn percent_decode_form(value: &str) -> Vec<u8> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).collect()
}

/// RFC 8252 §7.3: a native app registered with a loopback IP redirect (`cli`:
/// `http://127.0.0.1:5555/callback`) gets its code on whatever port it listens on, and
/// redeems it with that same redirect URI; a `localhost` name, another path or another
/// host is a page, never a redirect.
#[tokio::test]
async fn a_loopback_redirect_matches_on_any_port() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    // Signed in (through the registered port), so that the next requests are answered at once.
    let (url, _) = crate::support::authorize_url(&app.issuer, "cli", "openid", "");
    assert!(matches!(
        drive(&browser, &url, "alice", PASSWORD, "approve").await,
        Outcome::Callback(_)
    ));
    let listener = "http://127.0.0.1:49152/callback";
    let code_at = |redirect: &'static str| {
        let browser = browser.clone();
        let issuer = app.issuer.clone();
        async move {
            let (url, verifier) = crate::support::authorize_url(&issuer, "cli", "openid", "");
            let url = url.replace(&urlencode(REDIRECT), &urlencode(redirect));
            let response = browser.get(&url).send().await.unwrap();
            (response, verifier)
        }
    };
    let redeem = |code: String, redirect: &'static str, verifier: String| {
        let app = &app;
        async move {
            token_request(
                app,
                "cli",
                None,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", "cli"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", &verifier),
                ],
            )
            .await
        }
    };
    for attempt in 0..2 {
        let (response, verifier) = code_at(listener).await;
        let to = location(&response);
        assert_eq!(&to[..url::Position::AfterPath], listener);
        let query: std::collections::BTreeMap<String, String> =
            to.query_pairs().into_owned().collect();
        assert_eq!(query["state"], "st");
        let code = query["code"].clone();
        let verifier = verifier.secret().clone();
        if attempt == 0 {
            // The token request must name the very redirect the code went to.
            let (status, body) = redeem(code, REDIRECT, verifier).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "invalid_grant", "{body}");
        } else {
            let (status, body) = redeem(code, listener, verifier).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body["access_token"].is_string(), "{body}");
        }
    }
    for refused in [
        "http://localhost:49152/callback",
        "http://127.0.0.1:49152/elsewhere",
        "http://127.0.0.2:49152/callback",
        "http://[::1]:49152/callback",
    ] {
        let (response, _) = code_at(refused).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{refused}");
        assert!(response.headers().get("location").is_none(), "{refused}");
    }
}
