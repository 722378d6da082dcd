//! Token exchange (RFC 8693) at `/token`: a person's and a client's own keyward tokens
//! traded for short-lived tokens for registered audiences, with the scopes the
//! `[[policies]]` give (wildcards granted and narrowed), actor tokens and their nested
//! `act` claims, and every refusal a client must see.

use reqwest::StatusCode;

use crate::support::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const PORTAL_SECRET: &str = "portal-secret-0123456789abcdef";
const CI_SECRET: &str = "ci-secret-0123456789abcdef";

const CONFIG: &str = r#"
[exchange]
lifetime = "10m"

[[audiences]]
id = "queue"
max_lifetime = "5m"

[[audiences]]
id = "https://secrets.example/api"

[[audiences]]
id = "portal"

[[policies]]
subjects = ["user:alice", "group:corp:sre"]
scopes = ["queue:create-task:proj-infra/*", "secrets:get:infra/*"]

[[policies]]
subjects = ["client:ci"]
scopes = ["queue:create-task:proj-ci/*"]

[[clients]]
client_id = "portal"
client_secret = "portal-secret-0123456789abcdef"
redirect_uris = ["http://127.0.0.1:5555/callback"]
grant_types = ["authorization_code", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["openid", "profile"]
skip_consent = true

[[clients]]
client_id = "ci"
client_secret = "ci-secret-0123456789abcdef"
grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["hooks:trigger:*"]
"#;

/// alice signs in to the portal; its token response.
async fn alice_at_portal(app: &TestApp) -> serde_json::Value {
    portal_sign_in(app, "alice").await
}

/// `who` signs in to the portal (the client of [`CONFIG`] that may exchange); its token
/// response (the access token's audience is `portal`).
pub(crate) async fn portal_sign_in(app: &TestApp, who: &str) -> serde_json::Value {
    let (url, verifier) = authorize_url(&app.issuer, "portal", "openid profile", "");
    let params = drive(&browser(), &url, who, PASSWORD, "approve")
        .await
        .callback();
    let (status, tokens) = redeem_code(
        app,
        "portal",
        Some(PORTAL_SECRET),
        &params["code"],
        verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

/// A token exchange request by `client`, with `form` after the grant type.
async fn exchange(
    app: &TestApp,
    client: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut full = vec![("grant_type", EXCHANGE)];
    full.extend_from_slice(form);
    token_request(app, client, Some(secret), &full).await
}

/// Introspection by demo-app, a resource server.
async fn introspect(app: &TestApp, token: &str) -> serde_json::Value {
    http()
        .post(format!("{}/introspect", app.issuer))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn refused(answer: &(StatusCode, serde_json::Value), error: &str, describes: &str) {
    let (status, body) = answer;
    assert_eq!(
        (*status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some(error)),
        "{body}"
    );
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(describes), "{body}");
}

#[tokio::test]
async fn a_login_is_exchanged_for_a_short_lived_scoped_token() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    app.freeze_clock();
    let discovery = get_json(&format!("{}/.well-known/openid-configuration", app.issuer)).await;
    assert!(
        discovery["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&EXCHANGE.into()),
        "{discovery}"
    );
    let tokens = alice_at_portal(&app).await;
    let subject = tokens["access_token"].as_str().unwrap();
    let alice = jwt_payload(subject)["sub"].clone();

    // A wildcard held narrows to what is asked; what is not held is left out.
    let answer = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "queue"),
            (
                "scope",
                "queue:create-task:proj-infra/build secrets:get:prod/db",
            ),
        ],
    )
    .await;
    let (status, body) = &answer;
    assert_eq!(*status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "queue:create-task:proj-infra/build");
    assert_eq!(body["expires_in"], 300, "the audience's max_lifetime");
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt_payload(token);
    assert_eq!(claims["aud"], "queue");
    assert_eq!(claims["sub"], alice);
    assert_eq!(claims["client_id"], "portal");
    assert_eq!(claims["scope"], "queue:create-task:proj-infra/build");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(claims.get("act").is_none());
    let info = introspect(&app, token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["aud"], "queue");

    // Several targets (an audience and a resource): an array, the shortest lifetime.
    let (status, body) = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", JWT),
            ("audience", "queue"),
            ("resource", "https://secrets.example/api"),
            ("scope", "secrets:get:infra/db"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = jwt_payload(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"],
        serde_json::json!(["queue", "https://secrets.example/api"])
    );
    assert_eq!(body["expires_in"], 300);

    // Asking for no scope grants nothing beyond the audience, for the configured
    // lifetime when the audience sets none.
    let (status, body) = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("resource", "https://secrets.example/api"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "");
    assert_eq!(body["expires_in"], 600);

    // Never past the subject token's own end: 14 minutes into its 15, one is left.
    app.advance(14 * 60);
    let (status, body) = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "queue"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 60);

    // Revoking the login revokes what was exchanged from it.
    let response = http()
        .post(format!("{}/revoke", app.issuer))
        .basic_auth("portal", Some(PORTAL_SECRET))
        .form(&[("token", subject)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "queue"),
        ],
    )
    .await;
    refused(&answer, "invalid_grant", "not an active token");
}

#[tokio::test]
async fn exchanged_tokens_die_with_the_grant_of_their_subject() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let tokens = alice_at_portal(&app).await;
    let (status, body) = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", tokens["access_token"].as_str().unwrap()),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "queue"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exchanged = body["access_token"].as_str().unwrap();
    assert_eq!(introspect(&app, exchanged).await["active"], true);
    keyward_server::admin::set_disabled(app.state.store(), "alice", true)
        .await
        .unwrap();
    assert_eq!(
        introspect(&app, exchanged).await,
        serde_json::json!({"active": false})
    );
}

#[tokio::test]
async fn a_client_exchanges_its_own_token_and_names_actors() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let (status, own) = token_request(
        &app,
        "ci",
        Some(CI_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let own = own["access_token"].as_str().unwrap();

    // A client holds what the policies give client:<id> and what it is registered with.
    let (status, body) = exchange(
        &app,
        "ci",
        CI_SECRET,
        &[
            ("subject_token", own),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "queue"),
            (
                "scope",
                "queue:create-task:proj-ci/nightly hooks:trigger:repo/a queue:create-task:proj-infra/x",
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["scope"],
        "hooks:trigger:repo/a queue:create-task:proj-ci/nightly"
    );
    assert_eq!(
        jwt_payload(body["access_token"].as_str().unwrap())["sub"],
        "ci"
    );

    // An actor: the portal acts for alice; the token says so.
    let tokens = alice_at_portal(&app).await;
    let subject = tokens["access_token"].as_str().unwrap();
    let (status, portal) = token_request(
        &app,
        "portal",
        Some(PORTAL_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{portal}");
    let portal = portal["access_token"].as_str().unwrap();
    let (status, body) = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("actor_token", portal),
            ("actor_token_type", ACCESS_TOKEN),
            ("audience", "portal"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let delegated = body["access_token"].as_str().unwrap().to_owned();
    let claims = jwt_payload(&delegated);
    assert_eq!(claims["act"], serde_json::json!({"sub": "portal"}));
    assert_eq!(introspect(&app, &delegated).await["act"], claims["act"]);

    // An actor token that names an actor itself: the chain nests, outermost first.
    let (status, body) = exchange(
        &app,
        "portal",
        PORTAL_SECRET,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("actor_token", &delegated),
            ("actor_token_type", JWT),
            ("audience", "queue"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = jwt_payload(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["act"],
        serde_json::json!({"sub": claims["sub"], "act": {"sub": "portal"}})
    );
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let tokens = alice_at_portal(&app).await;
    let subject = tokens["access_token"].as_str().unwrap();
    let ask = |client: &'static str, secret: &'static str, form: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            exchange(app, client, secret, &form).await
        }
    };
    let base = |extra: &[(&'static str, &str)]| {
        let mut form = vec![
            ("subject_token", subject.to_owned()),
            ("subject_token_type", ACCESS_TOKEN.to_owned()),
        ];
        form.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        form
    };

    refused(
        &ask("portal", PORTAL_SECRET, base(&[("audience", "payroll")])).await,
        "invalid_target",
        "\"payroll\" is not a registered audience",
    );
    refused(
        &ask("portal", PORTAL_SECRET, base(&[])).await,
        "invalid_request",
        "audience or resource is required",
    );
    refused(
        &ask(
            "portal",
            PORTAL_SECRET,
            base(&[("audience", "queue"), ("scope", "secrets:get:prod/db")]),
        )
        .await,
        "invalid_scope",
        "holds none of the requested scopes",
    );
    refused(
        &ask(
            "portal",
            PORTAL_SECRET,
            base(&[
                ("audience", "queue"),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ]),
        )
        .await,
        "invalid_request",
        "only urn:ietf:params:oauth:token-type:access_token",
    );
    refused(
        &ask(
            "portal",
            PORTAL_SECRET,
            base(&[("audience", "queue"), ("actor_token", subject)]),
        )
        .await,
        "invalid_request",
        "actor_token_type is required",
    );
    refused(
        &ask(
            "portal",
            PORTAL_SECRET,
            vec![
                ("subject_token", "not-a-token".to_owned()),
                ("subject_token_type", ACCESS_TOKEN.to_owned()),
                ("audience", "queue".to_owned()),
            ],
        )
        .await,
        "invalid_grant",
        "subject_token is not an active token",
    );
    refused(
        &ask(
            "portal",
            PORTAL_SECRET,
            vec![
                ("subject_token", subject.to_owned()),
                ("subject_token_type", "urn:x:unknown".to_owned()),
                ("audience", "queue".to_owned()),
            ],
        )
        .await,
        "invalid_request",
        "subject_token_type must be",
    );
    // Another client's token: ci may exchange, but not the portal's tokens.
    refused(
        &ask("ci", CI_SECRET, base(&[("audience", "queue")])).await,
        "invalid_grant",
        "subject_token was issued to another client",
    );
    // A client not registered for the grant.
    let (status, body) = ask("demo-app", SECRET, base(&[("audience", "queue")])).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client")),
        "{body}"
    );
    // A repeated parameter other than audience and resource.
    let mut twice = base(&[("audience", "queue")]);
    twice.push(("subject_token", subject.to_owned()));
    refused(
        &ask("portal", PORTAL_SECRET, twice).await,
        "invalid_request",
        "repeated",
    );
    // An expired subject.
    app.advance(16 * 60);
    refused(
        &ask("portal", PORTAL_SECRET, base(&[("audience", "queue")])).await,
        "invalid_grant",
        "not an active token",
    );
}

/// `keyward scopes expand SUBJECT` prints what a subject holds and which policy (or
/// registration) gives each scope.
#[tokio::test]
async fn scopes_expand_names_the_policy_of_each_scope() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let file = app.dir.join("keyward.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = \"sqlite://{}/keyward.db\"\n{}",
            app.dir.display(),
            base_config(CONFIG)
        ),
    )
    .unwrap();
    let expand = |subject: &'static str| {
        let file = file.clone();
        async move {
            let output = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
                    .arg("--config")
                    .arg(&file)
                    .args(["scopes", "expand", subject])
                    .env("KEYWARD_LOG", "warn")
                    .output(),
            )
            .await
            .expect("keyward scopes expand finished within a minute")
            .unwrap();
            (
                output.status.code(),
                text(&output.stdout),
                text(&output.stderr),
            )
        }
    };
    let (code, out, err) = expand("user:alice").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("user:alice is user:alice, connector:password\n"),
        "{out}"
    );
    assert!(
        out.contains("queue:create-task:proj-infra/*  policies[0] (user:alice)"),
        "{out}"
    );
    assert!(out.contains("secrets:get:infra/*"), "{out}");
    assert!(!out.contains("proj-ci"), "{out}");

    let (code, out, _) = expand("client:ci").await;
    assert_eq!(code, Some(0));
    assert!(out.contains("hooks:trigger:*"), "{out}");
    assert!(out.contains("client registration (client:ci)"), "{out}");
    assert!(out.contains("queue:create-task:proj-ci/*"), "{out}");

    let (code, out, _) = expand("user:bob").await;
    assert_eq!(code, Some(0));
    assert!(out.contains("holds no scopes"), "{out}");

    let (code, out, err) = expand("nobody").await;
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(err.contains("KIND:NAME"), "{err}");
}

/// `keyward token --audience A --scope S`: a short-lived token for that service,
/// exchanged from the stored login, cached per (audience, scopes), renewed by one
/// process while the others wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_an_exchanged_token_and_caches_it() {
    use crate::client::{cli_login, keyward};
    let app = spawn_app(
        Db::Sqlite,
        &format!("device_poll_interval = \"1s\"\n{CONFIG}"),
    )
    .await
    .unwrap();
    let home = temp_dir();
    cli_login(&app, &home, &[]).await;
    let token = |args: &'static [&'static str]| {
        let (home, issuer) = (home.clone(), app.issuer.clone());
        async move {
            let mut full = vec!["token", issuer.as_str()];
            full.extend_from_slice(args);
            let out = keyward(&home, &full).await;
            (
                out.status.code(),
                text(&out.stdout).trim().to_owned(),
                text(&out.stderr),
            )
        }
    };
    let (code, first, err) = token(&[
        "--audience",
        "queue",
        "--scope",
        "queue:create-task:proj-infra/build",
        "--scope",
        "secrets:get:infra/db",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let claims = jwt_payload(&first);
    assert_eq!(claims["aud"], "queue");
    assert_eq!(claims["client_id"], "device");
    assert_eq!(
        claims["scope"],
        "queue:create-task:proj-infra/build secrets:get:infra/db"
    );
    assert!(is_active(&app, &first).await);

    // Cached: the same token, whatever the order of the scopes.
    let (code, again, _) = token(&[
        "--scope",
        "secrets:get:infra/db",
        "--audience",
        "queue",
        "--scope",
        "queue:create-task:proj-infra/build",
    ])
    .await;
    assert_eq!((code, again.as_str()), (Some(0), first.as_str()));
    let cached: Vec<_> = std::fs::read_dir(home.join("servers"))
        .unwrap()
        .flat_map(|server| std::fs::read_dir(server.unwrap().path().join("exchanged")).unwrap())
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&cached[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Another scope set is another token; the login's own token is unchanged.
    let (code, other, _) = token(&["--audience", "queue"]).await;
    assert_eq!(code, Some(0));
    assert_ne!(other, first);
    assert_eq!(jwt_payload(&other)["scope"], "");
    let (_, login, _) = token(&[]).await;
    assert_eq!(jwt_payload(&login)["aud"], "device");

    // With less than the margin left the token is renewed: by one of eight processes,
    // the others finding its result.
    std::fs::remove_file(&cached[0]).unwrap();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(token(&[
                "--audience",
                "queue",
                "--scope",
                "queue:create-task:proj-infra/build",
            ]))
        })
        .collect();
    let mut printed = std::collections::BTreeSet::new();
    for run in runs {
        let (code, out, err) = run.await.unwrap();
        assert_eq!(code, Some(0), "{err}");
        printed.insert(out);
    }
    assert_eq!(printed.len(), 1, "one renewal, not {}", printed.len());

    // A refusal is explained; --scope needs --audience.
    let (code, out, err) = token(&["--audience", "payroll"]).await;
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(err.contains("invalid_target"), "{err}");
    let (code, _, err) = token(&["--scope", "x"]).await;
    assert_eq!(code, Some(2), "{err}");
    let _ = std::fs::remove_dir_all(home);
}

/// The command-line client keyward registers itself (`device`) may exchange tokens;
/// one registered by an earlier version gains the grant at the next start.
#[tokio::test]
async fn the_cli_client_of_an_earlier_version_gains_the_grant() {
    let mut app = spawn_app(Db::Sqlite, "").await.unwrap();
    let store = app.state.store();
    let mut device = store.get_client("device").await.unwrap().unwrap();
    assert!(device.allows_grant(EXCHANGE));
    device.grant_types.retain(|g| g != EXCHANGE);
    store.upsert_client(&device).await.unwrap();
    app.stop();
    let restarted = spawn_on_database(
        &format!("sqlite://{}/keyward.db", app.dir.display()),
        &base_config(""),
    )
    .await;
    let device = restarted
        .state
        .store()
        .get_client("device")
        .await
        .unwrap()
        .unwrap();
    assert!(device.allows_grant(EXCHANGE), "{:?}", device.grant_types);
    assert!(device.allows_grant("refresh_token"));
    drop(app);
}
