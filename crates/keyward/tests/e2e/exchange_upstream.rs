//! Token exchange (RFC 8693) with subject tokens keyward did not issue:
//! - a JWT from a `[[trusted_issuers]]` entry (a CI system's workload identity, served
//!   here by a tiny discovery + JWKS server signing with ring), traded for a token about
//!   the machine it names; its keys fetched again on an unknown key id at most once a
//!   minute; refusals (unknown issuer, wrong audience, expired, not yet valid, a subject
//!   claim missing, a bad signature);
//! - a GitHub access token (the fake GitHub), checked as the connector's app's, for a
//!   token about the linked account;
//! - an upstream ID token (a second keyward, and oidc-provider from npm), for a token
//!   about the linked account.
//!
//! For both of the latter: the account's grant (a disabled user's exchanged token is
//! inactive), and the refusals (another app or audience, expired, a connector without
//! `token_exchange`, an unlinked identity with `create_accounts = false`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

use crate::support::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const CI_SECRET: &str = "ci-secret-0123456789abcdef";
/// The `aud` the trusted issuer's tokens must have.
const TRUSTED_AUDIENCE: &str = "https://keyward.test";
/// The machine subject of acme/infra's main branch.
const MACHINE: &str = "trusted:gha:acme/infra:refs/heads/main";

/// A trusted issuer the test runs: discovery and JWKS on 127.0.0.1, keys made and
/// published on demand, JWKS fetches counted.
struct FakeIssuer {
    issuer: String,
    shared: Arc<Shared>,
}

struct Shared {
    issuer: String,
    published: Mutex<Vec<serde_json::Value>>,
    jwks_fetches: AtomicUsize,
}

/// A signing key of the fake issuer.
struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            kid: kid.to_owned(),
            pair,
        }
    }

    /// The public JWK.
    fn jwk(&self) -> serde_json::Value {
        let point = self.pair.public_key().as_ref();
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A compact JWS of `claims`, `typ` `JWT`, signed ES256 under this key's id.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

impl FakeIssuer {
    async fn start() -> Self {
        let listener = bind().await;
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            published: Mutex::new(Vec::new()),
            jwks_fetches: AtomicUsize::new(0),
        });
        async fn discovery(State(shared): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
            axum::Json(serde_json::json!({
                "issuer": shared.issuer,
                "jwks_uri": format!("{}/.well-known/jwks", shared.issuer),
                "id_token_signing_alg_values_supported": ["ES256"],
            }))
        }
        async fn jwks(State(shared): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
            shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let keys = shared.published.lock().unwrap().clone();
            axum::Json(serde_json::json!({ "keys": keys }))
        }
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { issuer, shared }
    }

    /// Publishes `key` in the JWKS.
    fn publish(&self, key: &SigningKey) {
        self.shared.published.lock().unwrap().push(key.jwk());
    }

    /// How many times the JWKS was fetched.
    fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a CI job of acme/infra on main, for keyward, valid from `now`
    /// for an hour.
    fn ci_claims(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": self.issuer,
            "aud": TRUSTED_AUDIENCE,
            "sub": "repo:acme/infra:ref:refs/heads/main",
            "repository": "acme/infra",
            "ref": "refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        })
    }
}

/// keyward trusting `issuer` as `gha`, with a policy for acme/infra's main branch and
/// a client `ci` that may exchange.
fn trusting(issuer: &str) -> String {
    format!(
        r#"
[[audiences]]
id = "queue"

[[policies]]
subjects = ["{MACHINE}"]
scopes = ["queue:create-task:proj-infra/*"]

[[trusted_issuers]]
id = "gha"
issuer = "{issuer}"
audience = "{TRUSTED_AUDIENCE}"
subject_claims = ["repository", "ref"]

[[clients]]
client_id = "ci"
client_secret = "{CI_SECRET}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
"#
    )
}

/// `ci` exchanges the JWT `subject` for a token for `queue` with `scope`.
async fn exchange_jwt(
    app: &TestApp,
    subject: &str,
    scope: &str,
) -> (StatusCode, serde_json::Value) {
    token_request(
        app,
        "ci",
        Some(CI_SECRET),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", JWT),
            ("audience", "queue"),
            ("scope", scope),
        ],
    )
    .await
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
async fn a_trusted_issuers_jwt_is_exchanged_for_a_token_about_the_machine() {
    let ci = FakeIssuer::start().await;
    let key = SigningKey::new("k1");
    ci.publish(&key);
    let app = spawn_app(Db::Sqlite, &trusting(&ci.issuer)).await.unwrap();
    app.freeze_clock();
    let now = app.state.now();

    // The job's token expires in 10 minutes: the exchanged token (15 by default) with it.
    let mut claims = ci.ci_claims(now);
    claims["exp"] = (now + 600).into();
    let (status, body) = exchange_jwt(
        &app,
        &key.sign(&claims),
        "queue:create-task:proj-infra/build",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["scope"], "queue:create-task:proj-infra/build",
        "{body}"
    );
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["expires_in"], 600, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let payload = jwt_payload(token);
    assert_eq!(payload["sub"], MACHINE, "{payload}");
    assert_eq!(payload["aud"], "queue", "{payload}");
    assert_eq!(payload["client_id"], "ci", "{payload}");
    assert_eq!(payload["exp"], now + 600, "{payload}");
    assert!(payload.get("gid").is_none(), "{payload}");
    assert!(payload["client_tag"].is_string(), "{payload}");
    assert!(
        is_active(&app, token).await,
        "the machine's token is active"
    );
    assert_eq!(ci.jwks_fetches(), 1);

    // Another branch of the same repository is another machine, which holds nothing.
    let mut other = ci.ci_claims(now);
    other["ref"] = "refs/heads/feature".into();
    refused(
        &exchange_jwt(
            &app,
            &key.sign(&other),
            "queue:create-task:proj-infra/build",
        )
        .await,
        "invalid_scope",
        "holds none",
    );
    // The keys are kept: no fetch for a key id already known.
    assert_eq!(ci.jwks_fetches(), 1);
}

#[tokio::test]
async fn a_trusted_issuers_keys_are_fetched_again_for_an_unknown_key_at_most_once_a_minute() {
    let ci = FakeIssuer::start().await;
    let first = SigningKey::new("k1");
    ci.publish(&first);
    let app = spawn_app(Db::Sqlite, &trusting(&ci.issuer)).await.unwrap();
    app.freeze_clock();
    let now = app.state.now();
    let claims = ci.ci_claims(now);
    let scope = "queue:create-task:proj-infra/build";
    let ok = |answer: (StatusCode, serde_json::Value)| {
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    };
    ok(exchange_jwt(&app, &first.sign(&claims), scope).await);
    assert_eq!(ci.jwks_fetches(), 1);

    // The issuer rotates to k2: within the minute of the last fetch, keyward does not
    // fetch again, and the token is refused.
    let second = SigningKey::new("k2");
    ci.publish(&second);
    let by_second = second.sign(&claims);
    refused(
        &exchange_jwt(&app, &by_second, scope).await,
        "invalid_grant",
        "fetched less than 60 s ago",
    );
    app.advance(59);
    refused(
        &exchange_jwt(&app, &by_second, scope).await,
        "invalid_grant",
        "unknown key",
    );
    assert_eq!(ci.jwks_fetches(), 1, "no fetch within the minute");

    // A minute after the last fetch, the unknown key id makes keyward fetch again.
    app.advance(1);
    ok(exchange_jwt(&app, &by_second, scope).await);
    assert_eq!(ci.jwks_fetches(), 2);
    ok(exchange_jwt(&app, &first.sign(&claims), scope).await);
    assert_eq!(ci.jwks_fetches(), 2, "both keys are known now");

    // A made-up key id costs the issuer at most one fetch a minute.
    let stranger = SigningKey::new("k3");
    let by_stranger = stranger.sign(&claims);
    app.advance(60);
    refused(
        &exchange_jwt(&app, &by_stranger, scope).await,
        "invalid_grant",
        "unknown key",
    );
    assert_eq!(ci.jwks_fetches(), 3);
    for _ in 0..3 {
        refused(
            &exchange_jwt(&app, &by_stranger, scope).await,
            "invalid_grant",
            "fetched less than 60 s ago",
        );
    }
    assert_eq!(ci.jwks_fetches(), 3);
    // Published later, it is accepted once the minute is over.
    ci.publish(&stranger);
    app.advance(60);
    ok(exchange_jwt(&app, &by_stranger, scope).await);
    assert_eq!(ci.jwks_fetches(), 4);
}

#[tokio::test]
async fn trusted_issuer_tokens_that_do_not_verify_are_refused() {
    let ci = FakeIssuer::start().await;
    let key = SigningKey::new("k1");
    ci.publish(&key);
    let app = spawn_app(Db::Sqlite, &trusting(&ci.issuer)).await.unwrap();
    app.freeze_clock();
    let now = app.state.now();
    let scope = "queue:create-task:proj-infra/build";
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = ci.ci_claims(now);
        claims[name] = value;
        key.sign(&claims)
    };
    let cases = [
        (
            with("iss", "https://token.actions.githubusercontent.com".into()),
            "its issuer is not trusted here",
        ),
        (
            with("aud", "https://elsewhere.example".into()),
            "its aud is not",
        ),
        (
            with("aud", serde_json::json!(["https://elsewhere.example"])),
            "its aud is not",
        ),
        (with("exp", (now - 1).into()), "expired"),
        (with("nbf", (now + 30).into()), "not valid yet"),
        (with("ref", serde_json::Value::Null), "\"ref\" is missing"),
        (with("ref", 7.into()), "\"ref\" is missing or not a string"),
        (
            with("repository", "acme:infra".into()),
            "only the last subject claim",
        ),
        // Signed by another key under the published key id.
        (
            SigningKey::new("k1").sign(&ci.ci_claims(now)),
            "bad signature",
        ),
    ];
    for (token, describes) in &cases {
        refused(
            &exchange_jwt(&app, token, scope).await,
            "invalid_grant",
            describes,
        );
    }
    // Every one of them was checked against the keys fetched once.
    assert_eq!(ci.jwks_fetches(), 1);
    // The same claims, well signed, pass: what was refused was what the cases changed.
    let (status, body) = exchange_jwt(&app, &key.sign(&ci.ci_claims(now)), scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An audience in a list is one of its audiences.
    let (status, body) = exchange_jwt(
        &app,
        &with("aud", serde_json::json!(["other", TRUSTED_AUDIENCE])),
        scope,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const PORTAL_SECRET: &str = "portal-secret-0123456789abcdef";

/// The downstream's exchange settings: the `queue` audience, scopes for GitHub's acme
/// organisation and for anyone signed in through `github` or `corp`, and `portal`, a
/// client that may exchange.
fn person_policies() -> String {
    format!(
        r#"
[[audiences]]
id = "queue"

[[policies]]
subjects = ["group:github:acme", "group:corp:sre"]
scopes = ["queue:create-task:proj-infra/*"]

[[policies]]
subjects = ["connector:github", "connector:corp"]
scopes = ["hooks:read"]

[[clients]]
client_id = "portal"
client_secret = "{PORTAL_SECRET}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
"#
    )
}

/// `portal` exchanges `subject` of `kind` for a token for `queue` with `scope`.
async fn portal_exchange(
    app: &TestApp,
    subject: &str,
    kind: &str,
    scope: &str,
) -> (StatusCode, serde_json::Value) {
    token_request(
        app,
        "portal",
        Some(PORTAL_SECRET),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", kind),
            ("audience", "queue"),
            ("scope", scope),
        ],
    )
    .await
}

const GITHUB_SCOPES: &str = r#"scopes = ["read:user", "user:email", "read:org"]"#;

#[tokio::test]
async fn a_github_token_is_exchanged_for_a_token_about_the_linked_account() {
    let broker = crate::connectors::broker_with(
        Db::Sqlite,
        &person_policies(),
        "",
        &format!("{GITHUB_SCOPES}\ntoken_exchange = true"),
    )
    .await
    .unwrap();
    let (app, github) = (&broker.down, &broker.github);
    let token = github.issue_token("octocat", &["read:user", "user:email", "read:org"]);
    let scope = "queue:create-task:proj-infra/build hooks:read";

    let (status, body) = portal_exchange(app, &token, ACCESS_TOKEN, scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Held through the acme organisation and through signing in with GitHub.
    assert_eq!(
        body["scope"], "hooks:read queue:create-task:proj-infra/build",
        "{body}"
    );
    let exchanged = body["access_token"].as_str().unwrap().to_owned();
    let payload = jwt_payload(&exchanged);
    let octocat = app
        .state
        .store()
        .get_user_by_username("octocat")
        .await
        .unwrap()
        .expect("an account was created for octocat, as a sign-in would");
    assert_eq!(payload["sub"], octocat.id.as_str(), "{payload}");
    assert_eq!(payload["client_id"], "portal");
    assert!(payload["gid"].is_string(), "{payload}");
    assert!(payload.get("client_tag").is_none(), "{payload}");
    assert!(is_active(app, &exchanged).await);
    assert_eq!(
        github.token_checks(),
        1,
        "the token was checked as the app's"
    );

    // Again: the same account, not a new one.
    let (status, again) = portal_exchange(app, &token, ACCESS_TOKEN, "hooks:read").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        jwt_payload(again["access_token"].as_str().unwrap())["sub"],
        payload["sub"]
    );

    // Disabling the account (without revoking anything) ends the exchanged tokens and
    // refuses new exchanges.
    app.state
        .store()
        .set_user_disabled(&octocat.id, true)
        .await
        .unwrap();
    assert!(
        !is_active(app, &exchanged).await,
        "a disabled user's exchanged token"
    );
    refused(
        &portal_exchange(app, &token, ACCESS_TOKEN, "hooks:read").await,
        "invalid_grant",
        "the account is disabled",
    );
}

#[tokio::test]
async fn github_tokens_of_another_app_or_unknown_are_refused() {
    let broker = crate::connectors::broker_with(
        Db::Sqlite,
        &person_policies(),
        "",
        &format!("{GITHUB_SCOPES}\ntoken_exchange = true"),
    )
    .await
    .unwrap();
    let (app, github) = (&broker.down, &broker.github);
    // Another app's token works at GitHub's API, but is not this connector's.
    let foreign = github.issue_token_for_another_app("octocat", &["read:user"]);
    refused(
        &portal_exchange(app, &foreign, ACCESS_TOKEN, "hooks:read").await,
        "invalid_grant",
        "not know the token as one of this connector's app",
    );
    refused(
        &portal_exchange(app, "gho_madeup0123456789", ACCESS_TOKEN, "hooks:read").await,
        "invalid_grant",
        "not know the token",
    );
    assert_eq!(github.token_checks(), 2);
    assert!(
        app.state
            .store()
            .get_user_by_username("octocat")
            .await
            .unwrap()
            .is_none(),
        "no account was made for a refused token"
    );
}

#[tokio::test]
async fn github_tokens_are_refused_without_token_exchange_or_an_account_to_map_to() {
    // Without token_exchange, a GitHub token is just not a token of this server.
    let broker = crate::connectors::broker_with(Db::Sqlite, &person_policies(), "", GITHUB_SCOPES)
        .await
        .unwrap();
    let token = broker.github.issue_token("octocat", &["read:user"]);
    refused(
        &portal_exchange(&broker.down, &token, ACCESS_TOKEN, "hooks:read").await,
        "invalid_grant",
        "not an active token of this server",
    );
    assert_eq!(broker.github.token_checks(), 0, "GitHub was not asked");

    // With create_accounts = false, an identity nobody holds maps to no account.
    let broker = crate::connectors::broker_with(
        Db::Sqlite,
        &person_policies(),
        "",
        &format!("{GITHUB_SCOPES}\ntoken_exchange = true\ncreate_accounts = false"),
    )
    .await
    .unwrap();
    let token = broker.github.issue_token("octocat", &["read:user"]);
    refused(
        &portal_exchange(&broker.down, &token, ACCESS_TOKEN, "hooks:read").await,
        "invalid_grant",
        "no account is linked to this identity",
    );
}

const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const DOWNSTREAM_SECRET: &str = "downstream-secret-0123456789abcdef";

/// An upstream keyward (on localhost, its client `downstream`) and a downstream one
/// whose `corp` connector signs in there, with `corp_keys` (TOML lines) in it.
async fn oidc_pair(corp_keys: &str) -> (TestApp, TestApp) {
    let up = spawn_app_on(
        bind().await,
        "localhost",
        Db::Sqlite,
        &base_config(&format!(
            r#"
[[clients]]
client_id = "downstream"
client_secret = "{DOWNSTREAM_SECRET}"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "email"]
skip_consent = true
"#
        )),
    )
    .await
    .unwrap();
    let down = spawn_app(
        Db::Sqlite,
        &format!(
            r#"{}
[[connectors]]
id = "corp"
type = "oidc"
issuer = "{}"
client_id = "downstream"
client_secret = "{DOWNSTREAM_SECRET}"
{corp_keys}
"#,
            person_policies(),
            up.issuer
        ),
    )
    .await
    .unwrap();
    (up, down)
}

/// alice signs in at `app` through `client`; the ID token it is given.
async fn id_token_of_alice(app: &TestApp, client: &str, secret: &str) -> String {
    let (url, verifier) = authorize_url(&app.issuer, client, "openid profile email", "");
    let params = drive(&browser(), &url, "alice", PASSWORD, "approve")
        .await
        .callback();
    let (status, tokens) = redeem_code(
        app,
        client,
        Some(secret),
        &params["code"],
        verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens["id_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_upstream_id_token_is_exchanged_for_a_token_about_the_linked_account() {
    let (up, down) = oidc_pair("token_exchange = true").await;
    let id_token = id_token_of_alice(&up, "downstream", DOWNSTREAM_SECRET).await;
    let upstream_sub = jwt_payload(&id_token)["sub"].as_str().unwrap().to_owned();
    let id_token_exp = jwt_payload(&id_token)["exp"].as_i64().unwrap();

    let (status, body) = portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "hooks:read", "held through connector:corp");
    let exchanged = body["access_token"].as_str().unwrap().to_owned();
    let payload = jwt_payload(&exchanged);
    let store = down.state.store();
    let identity = store
        .get_identity(keyward_server::store::IdentityKey {
            connector_id: "corp",
            subject: &upstream_sub,
        })
        .await
        .unwrap()
        .expect("the identity was linked to an account, as a sign-in would");
    assert_eq!(payload["sub"], identity.user_id.as_str(), "{payload}");
    let local_alice = store.get_user_by_username("alice").await.unwrap().unwrap();
    assert_ne!(
        identity.user_id, local_alice.id,
        "a new account: addresses are not matched without trust_email"
    );
    assert!(payload["gid"].is_string(), "{payload}");
    assert!(
        payload["exp"].as_i64().unwrap() <= id_token_exp,
        "{payload}"
    );
    assert!(is_active(&down, &exchanged).await);

    // Again: the same account.
    let (status, again) = portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        jwt_payload(again["access_token"].as_str().unwrap())["sub"],
        payload["sub"]
    );

    // Disabled (nothing revoked): the exchanged token is inactive, exchanges refused.
    store
        .set_user_disabled(&identity.user_id, true)
        .await
        .unwrap();
    assert!(
        !is_active(&down, &exchanged).await,
        "a disabled user's exchanged token"
    );
    refused(
        &portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await,
        "invalid_grant",
        "the account is disabled",
    );
}

#[tokio::test]
async fn upstream_id_tokens_are_refused_for_another_audience_expired_or_from_elsewhere() {
    let (up, down) = oidc_pair("token_exchange = true").await;
    // For another client of the provider, not listed in exchange_audiences.
    let for_demo = id_token_of_alice(&up, "demo-app", SECRET).await;
    refused(
        &portal_exchange(&down, &for_demo, ID_TOKEN, "hooks:read").await,
        "invalid_grant",
        "its aud is neither the connector's client_id nor one of its exchange_audiences",
    );
    // From an issuer that is no connector: the downstream's own ID token.
    let own = id_token_of_alice(&down, "demo-app", SECRET).await;
    refused(
        &portal_exchange(&down, &own, ID_TOKEN, "hooks:read").await,
        "invalid_grant",
        "its issuer is not an oidc connector with token_exchange = true",
    );
    // Expired, by the downstream's clock (ID tokens live an hour).
    let id_token = id_token_of_alice(&up, "downstream", DOWNSTREAM_SECRET).await;
    let (status, body) = portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    down.advance(3601);
    refused(
        &portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await,
        "invalid_grant",
        "expired",
    );

    // Listed in exchange_audiences, another client's ID token is accepted.
    let (up, down) = oidc_pair("token_exchange = true\nexchange_audiences = [\"demo-app\"]").await;
    let for_demo = id_token_of_alice(&up, "demo-app", SECRET).await;
    let (status, body) = portal_exchange(&down, &for_demo, ID_TOKEN, "hooks:read").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn upstream_id_tokens_are_refused_without_token_exchange_or_an_account_to_map_to() {
    let (up, down) = oidc_pair("").await;
    let id_token = id_token_of_alice(&up, "downstream", DOWNSTREAM_SECRET).await;
    refused(
        &portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await,
        "invalid_grant",
        "its issuer is not an oidc connector with token_exchange = true",
    );

    let (up, down) = oidc_pair("token_exchange = true\ncreate_accounts = false").await;
    let id_token = id_token_of_alice(&up, "downstream", DOWNSTREAM_SECRET).await;
    refused(
        &portal_exchange(&down, &id_token, ID_TOKEN, "hooks:read").await,
        "invalid_grant",
        "no account is linked to this identity",
    );
}

/// Signs `login` in at oidc-provider (its development login and consent pages) for
/// `client`, redeems the code and returns the ID token.
async fn npm_id_token(issuer: &str, client: &str, secret: &str, login: &str) -> String {
    let browser = browser();
    let (challenge, verifier) = openidconnect::PkceCodeChallenge::new_random_sha256();
    let mut response = browser
        .get(format!(
            "{issuer}/auth?client_id={client}&response_type=code&scope=openid&redirect_uri={}&state=st&code_challenge={}&code_challenge_method=S256",
            urlencode(REDIRECT),
            challenge.as_str()
        ))
        .send()
        .await
        .unwrap();
    let mut code = None;
    for _ in 0..12 {
        if response.status().is_redirection() {
            let next = location(&response);
            if next.as_str().starts_with(REDIRECT) {
                let params: std::collections::BTreeMap<String, String> =
                    next.query_pairs().into_owned().collect();
                code = Some(
                    params
                        .get("code")
                        .cloned()
                        .unwrap_or_else(|| panic!("oidc-provider refused: {params:?}")),
                );
                break;
            }
            response = browser.get(next).send().await.unwrap();
            continue;
        }
        let page = response.url().clone();
        let html = response.text().await.unwrap();
        let start = html.find("action=\"").expect("a form at oidc-provider") + 8;
        let action = &html[start..start + html[start..].find('"').unwrap()];
        let form: Vec<(&str, &str)> = if html.contains("name=\"login\"") {
            vec![
                ("prompt", "login"),
                ("login", login),
                ("password", "any password works here"),
            ]
        } else {
            vec![("prompt", "consent")]
        };
        response = browser
            .post(page.join(action).unwrap())
            .form(&form)
            .send()
            .await
            .unwrap();
    }
    let code = code.expect("oidc-provider sent the browser back within 12 steps");
    let tokens: serde_json::Value = http()
        .post(format!("{issuer}/token"))
        .basic_auth(client, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {tokens}"))
        .to_owned()
}

/// oidc-provider from npm as the upstream: its ID tokens (RS256 for one client, EdDSA
/// for the other, two connectors on one issuer) are exchanged for tokens about the
/// account linked to the identity; one for a client no connector is refused.
#[tokio::test]
async fn an_id_token_from_oidc_provider_from_npm_is_exchanged() {
    if !crate::js::available(&["oidc-provider"], &[]) {
        return;
    }
    const NPM_SECRET: &str = "npm-upstream-secret-0123456789abcdef";
    let upstream =
        crate::js::NodeServer::start(&["oidc-upstream.mjs", NPM_SECRET, REDIRECT, REDIRECT]).await;
    let npm = upstream.started["issuer"].as_str().unwrap().to_owned();
    let connector = |id: &str, client: &str| {
        format!(
            "[[connectors]]\nid = \"{id}\"\ntype = \"oidc\"\nissuer = \"{npm}\"\nclient_id = \"{client}\"\nclient_secret = \"{NPM_SECRET}\"\ntoken_exchange = true\n"
        )
    };
    let down = spawn_app(
        Db::Sqlite,
        &format!(
            "{}\n{}\n{}",
            person_policies().replace("connector:corp", "connector:npm-rs"),
            connector("npm-rs", "keyward-rs"),
            connector("npm-ed", "keyward-ed"),
        ),
    )
    .await
    .unwrap();

    let rs = npm_id_token(&npm, "keyward-rs", NPM_SECRET, "ada").await;
    let (status, body) = portal_exchange(&down, &rs, ID_TOKEN, "hooks:read").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "hooks:read", "held through connector:npm-rs");
    let store = down.state.store();
    let ada = store
        .get_identity(keyward_server::store::IdentityKey {
            connector_id: "npm-rs",
            subject: "ada",
        })
        .await
        .unwrap()
        .expect("ada's npm identity was linked to a new account");
    let exchanged = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_payload(&exchanged)["sub"], ada.user_id.as_str());
    assert!(is_active(&down, &exchanged).await);

    // The EdDSA client's ID token goes through the other connector on the same issuer;
    // the policies give connector:npm-ed nothing it asks for.
    let ed = npm_id_token(&npm, "keyward-ed", NPM_SECRET, "grace").await;
    refused(
        &portal_exchange(&down, &ed, ID_TOKEN, "hooks:read").await,
        "invalid_scope",
        "holds none",
    );
    let grace = store
        .get_identity(keyward_server::store::IdentityKey {
            connector_id: "npm-ed",
            subject: "grace",
        })
        .await
        .unwrap();
    assert!(grace.is_some(), "grace's identity came through npm-ed");
    drop(upstream);
}
