//! Signing in through upstream providers: another keyward as an `oidc` connector,
//! GitHub (the fake in `fake_github`, since GitHub itself is out of reach), and linking
//! several identities to one account from the account page.

use reqwest::StatusCode;

use crate::fake_github::{FakeGithub, FakeUser, Trouble};
use crate::support::*;
use keyward_server::store::IdentityKey;

const DOWNSTREAM_SECRET: &str = "downstream-secret-0123456789abcdef";
pub(crate) const GITHUB_SECRET: &str = "github-secret-0123456789abcdef";

/// A keyward ("down", on 127.0.0.1) that signs people in through another keyward
/// ("up", on localhost, so a browser keeps their cookies apart) and a fake GitHub.
pub(crate) struct Broker {
    pub(crate) down: TestApp,
    pub(crate) up: TestApp,
    pub(crate) github: FakeGithub,
}

/// The fake GitHub of a downstream that will listen on `down_port`, with down's
/// callback registered and octocat (a member of `acme`, in its team `ops`) signed in.
pub(crate) async fn fake_github(down_port: u16) -> FakeGithub {
    let github = FakeGithub::start(
        "gh-client",
        GITHUB_SECRET,
        &format!("http://127.0.0.1:{down_port}/callback/github"),
    )
    .await;
    github.add_user(FakeUser {
        id: 583_231,
        login: "octocat".into(),
        name: Some("The Octocat".into()),
        emails: vec![
            ("octocat@github.example".into(), true, true),
            ("old@github.example".into(), false, false),
        ],
        orgs: vec!["acme".into()],
        teams: vec![("acme".into(), "ops".into())],
    });
    github.sign_in_as(Some("octocat"));
    github
}

/// The upstream keyward's configuration: the base users, and down (listening on
/// `down_port`) as its client `downstream`.
fn upstream_config(down_port: u16) -> String {
    base_config(&format!(
        r#"
[[clients]]
client_id = "downstream"
name = "Downstream"
client_secret = "{DOWNSTREAM_SECRET}"
redirect_uris = ["http://127.0.0.1:{down_port}/callback/corp"]
scopes = ["openid", "profile", "email"]
skip_consent = true
"#
    ))
}

/// The upstream keyward and the fake GitHub of a downstream that will listen on
/// `down_port`, with down's callbacks registered at both.
async fn upstreams(down_port: u16) -> (TestApp, FakeGithub) {
    let github = fake_github(down_port).await;
    let up = spawn_app_on(
        bind().await,
        "localhost",
        Db::Sqlite,
        &upstream_config(down_port),
    )
    .await
    .expect("upstream keyward");
    (up, github)
}

/// down's `[[connectors]]`: `corp` (the upstream keyward at `up_issuer`) and `github`
/// (the fake), with `corp_keys` and `github_keys` added to them (TOML lines).
fn connectors_config_with(
    up_issuer: &str,
    github: &FakeGithub,
    corp_keys: &str,
    github_keys: &str,
) -> String {
    format!(
        r#"
[[connectors]]
id = "corp"
type = "oidc"
name = "Corporate SSO"
issuer = "{}"
client_id = "downstream"
client_secret = "{DOWNSTREAM_SECRET}"
{corp_keys}

[[connectors]]
id = "github"
type = "github"
client_id = "gh-client"
client_secret = "{GITHUB_SECRET}"
base_url = "{}"
api_url = "{}"
{github_keys}
"#,
        up_issuer,
        github.url,
        github.api_url()
    )
}

async fn broker(db: Db, down_extra: &str) -> Option<Broker> {
    broker_with(
        db,
        down_extra,
        "",
        r#"scopes = ["read:user", "user:email", "read:org"]"#,
    )
    .await
}

/// A [`Broker`] whose down has `down_extra` in its configuration and `corp_keys` and
/// `github_keys` in its connectors (TOML lines).
pub(crate) async fn broker_with(
    db: Db,
    down_extra: &str,
    corp_keys: &str,
    github_keys: &str,
) -> Option<Broker> {
    let down_listener = bind().await;
    let down_port = down_listener.local_addr().unwrap().port();
    let (up, github) = upstreams(down_port).await;
    let config = base_config(&format!(
        "{down_extra}\n{}",
        connectors_config_with(&up.issuer, &github, corp_keys, github_keys)
    ));
    let down = spawn_app_on(down_listener, "127.0.0.1", db, &config).await?;
    Some(Broker { down, up, github })
}

/// Starts an authorization at `down` for demo-app and returns its login page and the
/// PKCE verifier.
pub(crate) async fn login_page(
    browser: &reqwest::Client,
    down: &TestApp,
) -> (Page, openidconnect::PkceCodeVerifier) {
    let (url, verifier) = authorize_url(&down.issuer, "demo-app", "openid profile email", "");
    let page = open(browser, &url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.url.path() == "/login", "{}", page.url);
    (page, verifier)
}

/// Redeems a code at `down` as demo-app; returns the ID token's claims.
pub(crate) async fn redeem(
    down: &TestApp,
    params: &std::collections::BTreeMap<String, String>,
    verifier: &openidconnect::PkceCodeVerifier,
) -> serde_json::Value {
    assert_eq!(
        params.get("state").map(String::as_str),
        Some("st"),
        "{params:?}"
    );
    let (status, body) = redeem_code(
        down,
        "demo-app",
        Some(SECRET),
        &params["code"],
        verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    jwt_payload(body["id_token"].as_str().unwrap())
}

/// Signs in at `down` through connector `id`, as alice when up asks for a password
/// (the fake GitHub asks nothing).
async fn sign_in_with(browser: &reqwest::Client, broker: &Broker, id: &str) -> serde_json::Value {
    sign_in_as(browser, &broker.down, id, "alice", "").await
}

/// Signs in at `down` through connector `id` (`extra` appended to the authorization
/// request), as `user` when the upstream asks for a password; returns the ID token's
/// claims.
pub(crate) async fn sign_in_as(
    browser: &reqwest::Client,
    down: &TestApp,
    id: &str,
    user: &str,
    extra: &str,
) -> serde_json::Value {
    let (url, verifier) = authorize_url(&down.issuer, "demo-app", "openid profile email", extra);
    let page = open(browser, &url).await;
    assert_eq!(page.url.path(), "/login", "{}", page.html);
    let response = submit(browser, &page, &format!("/login/{id}"), "", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let params = drive_from(browser, response, user, PASSWORD, "approve")
        .await
        .callback();
    redeem(down, &params, &verifier).await
}

/// A fresh browser in which `user` signed in at `down` with a password.
pub(crate) async fn password_session(down: &TestApp, user: &str) -> reqwest::Client {
    let browser = browser();
    let (url, _) = authorize_url(&down.issuer, "demo-app", "openid", "");
    drive(&browser, &url, user, PASSWORD, "approve")
        .await
        .callback();
    browser
}

pub(crate) async fn account(browser: &reqwest::Client, down: &TestApp) -> Page {
    let page = open(browser, &format!("{}/account", down.issuer)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains("Your account"), "{}", page.html);
    page
}

async fn linking_keeps_one_account(db: Db) {
    let Some(broker) = broker(db, "").await else {
        return;
    };
    let down = &broker.down;
    let store = down.state.store();

    // The login page offers both providers next to the password form.
    let browser = browser();
    let (page, _) = login_page(&browser, down).await;
    for text in [
        "Continue with Corporate SSO",
        "Continue with GitHub",
        "name=\"password\"",
    ] {
        assert!(page.html.contains(text), "{text}: {}", page.html);
    }

    // Provider A (another keyward): a new account, with the upstream's claims.
    let first = sign_in_with(&browser, &broker, "corp").await;
    let sub = first["sub"].as_str().unwrap().to_owned();
    let upstream_alice = broker
        .up
        .state
        .store()
        .get_user_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(sub, upstream_alice.id, "down has its own subjects");
    assert_eq!(first["email"], "alice@example.com");
    // corp is not trusted to verify addresses (no trust_email): what it claims is not
    // passed on as verified.
    assert_eq!(first["email_verified"], false);
    let user = store.get_user(&sub).await.unwrap().unwrap();
    assert_eq!(user.username, "alice-2", "down's own alice keeps her name");
    assert!(user.password_hash.is_none());
    let identities = store.list_identities(&sub).await.unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(
        (
            identities[0].connector_id.as_str(),
            identities[0].subject.as_str()
        ),
        ("corp", upstream_alice.id.as_str())
    );

    // Link provider B (GitHub) from the account page.
    let page = account(&browser, down).await;
    assert!(page.html.contains("Corporate SSO"), "{}", page.html);
    let response = submit(&browser, &page, "/account/link/github", "", &[]).await;
    let page = settle(&browser, response).await.unwrap();
    assert_eq!(page.url.path(), "/account");
    assert!(page.html.contains("Linked."), "{}", page.html);
    assert!(page.html.contains("octocat"), "{}", page.html);
    let request = broker.github.authorize_requests().pop().unwrap();
    assert_eq!(
        request["code_challenge_method"], "S256",
        "PKCE at GitHub too"
    );
    assert_eq!(request["scope"], "read:user user:email read:org");
    let github = store
        .get_identity(IdentityKey {
            connector_id: "github",
            subject: "583231",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(github.user_id, sub);
    assert_eq!(github.username.as_deref(), Some("octocat"));
    assert_eq!(github.email.as_deref(), Some("octocat@github.example"));
    assert!(github.email_verified, "the verified primary address");
    assert_eq!(github.groups, ["acme", "acme:ops"]);

    // Log out, log in with B: the same account, the same sub.
    let page = open(&browser, &format!("{}/logout", down.issuer)).await;
    let response = submit(&browser, &page, "/logout", "", &[("decision", "logout")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let again = sign_in_with(&browser, &broker, "github").await;
    assert_eq!(again["sub"], sub.as_str());
    assert_eq!(
        store.list_users().await.unwrap().len(),
        3,
        "alice, bob, alice-2"
    );

    // A stranger's browser cannot finish someone else's sign-in.
    let (url, _) = authorize_url(&down.issuer, "demo-app", "openid", "&prompt=login");
    let page = open(&browser, &url).await;
    let response = submit(&browser, &page, "/login/github", "", &[]).await;
    let to_github = location(&response);
    let back = browser.get(to_github).send().await.unwrap();
    let callback = location(&back);
    let stranger = crate::support::browser();
    let page = open(&stranger, callback.as_str()).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.html.contains("another browser"), "{}", page.html);
    // … and the state was used up: the right browser cannot replay it either.
    let page = open(&browser, callback.as_str()).await;
    assert!(page.html.contains("Sign-in expired"), "{}", page.html);

    // Unlink A; B, now the last way in, cannot be unlinked.
    let page = account(&browser, down).await;
    let response = submit(&browser, &page, "/account/unlink", "value=\"corp\"", &[]).await;
    let page = settle(&browser, response).await.unwrap();
    assert!(page.html.contains("Unlinked."), "{}", page.html);
    assert!(
        !page.html.contains("Corporate SSO</strong>"),
        "{}",
        page.html
    );
    assert!(page.html.contains("only way in"), "{}", page.html);
    let forged = browser
        .post(format!("{}/account/unlink", down.issuer))
        .form(&[
            ("csrf", hidden(&page.html, "csrf").as_str()),
            ("connector", "github"),
            ("subject", "583231"),
        ])
        .send()
        .await
        .unwrap();
    let page = settle(&browser, forged).await.unwrap();
    assert!(page.html.contains("only way to sign in"), "{}", page.html);
    assert_eq!(store.list_identities(&sub).await.unwrap().len(), 1);

    // Without the session's CSRF token nothing changes.
    let response = browser
        .post(format!("{}/account/unlink", down.issuer))
        .form(&[
            ("csrf", "forged"),
            ("connector", "github"),
            ("subject", "583231"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// Attack: account pre-hijacking through a provider that is not trusted to verify
/// addresses. mallory, at an upstream keyward keyward does not trust (`corp`), claims
/// carol's address with `email_verified = true`. That must not make the account
/// verified (nor say so to applications), and carol's later sign-in through a trusted
/// provider (`trust_email = true`) must not land in mallory's account. Before the fix
/// the provider's flag was copied into the account, and carol signed in to mallory's.
#[tokio::test]
async fn an_untrusted_provider_cannot_vouch_for_an_address() {
    let down_listener = bind().await;
    let down_port = down_listener.local_addr().unwrap().port();
    let callback = |id: &str| format!("http://127.0.0.1:{down_port}/callback/{id}");
    let up = spawn_app_on(
        bind().await,
        "localhost",
        Db::Sqlite,
        &base_config(&format!(
            r#"
[[clients]]
client_id = "downstream"
client_secret = "{DOWNSTREAM_SECRET}"
redirect_uris = ["{}", "{}"]
scopes = ["openid", "profile", "email"]
skip_consent = true

[[users]]
username = "mallory"
email = "carol@example.com"
password = "{PASSWORD}"

[[users]]
username = "carol"
email = "carol@example.com"
password = "{PASSWORD}"
"#,
            callback("corp"),
            callback("trusted")
        )),
    )
    .await
    .expect("upstream keyward");
    let connector = |id: &str, trust: bool| {
        format!(
            r#"
[[connectors]]
id = "{id}"
type = "oidc"
issuer = "{}"
client_id = "downstream"
client_secret = "{DOWNSTREAM_SECRET}"
trust_email = {trust}
"#,
            up.issuer
        )
    };
    let config = base_config(&format!(
        "{}{}",
        connector("corp", false),
        connector("trusted", true)
    ));
    let down = spawn_app_on(down_listener, "127.0.0.1", Db::Sqlite, &config)
        .await
        .expect("downstream keyward");
    let store = down.state.store();

    // mallory, through the untrusted provider, claims carol's verified address.
    let mallory = sign_in_as(&browser(), &down, "corp", "mallory", "").await;
    assert_eq!(mallory["email"], "carol@example.com");
    assert_eq!(mallory["email_verified"], false, "{mallory}");
    let account = store
        .get_user(mallory["sub"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!account.email_verified, "stored unverified");
    assert!(
        store
            .find_users_by_verified_email("carol@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    // carol, through the trusted provider, gets an account of her own, verified.
    let carol = sign_in_as(&browser(), &down, "trusted", "carol", "").await;
    assert_ne!(
        carol["sub"], mallory["sub"],
        "carol landed in mallory's account"
    );
    assert_eq!(carol["email_verified"], true);
    let carol_identities = store
        .list_identities(carol["sub"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(carol_identities.len(), 1);
    assert_eq!(carol_identities[0].connector_id, "trusted");
}

/// Attack: two people on one browser. alice is signed in; bob, at the same browser,
/// signs in through a provider with an identity keyward has not seen. Before the fix,
/// that identity was linked to alice's account without asking (even with
/// prompt=login), and bob was signed in as alice from then on, with any of his
/// sign-ins. Now bob gets his own account, alice's account is untouched, and her
/// session in that browser is over.
async fn two_people_on_one_browser_never_merge_accounts(db: Db) {
    let Some(broker) = broker(db, "").await else {
        return;
    };
    let down = &broker.down;
    let store = down.state.store();
    let alice = store.get_user_by_username("alice").await.unwrap().unwrap();

    let browser = password_session(down, "alice").await;
    let page = account(&browser, down).await;
    assert!(page.html.contains(">alice<"), "{}", page.html);

    let bob = sign_in_as(&browser, down, "corp", "bob", "&prompt=login").await;
    assert_ne!(bob["sub"], alice.id.as_str(), "bob was signed in as alice");
    assert!(store.list_identities(&alice.id).await.unwrap().is_empty());
    let bob_identities = store
        .list_identities(bob["sub"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(bob_identities.len(), 1);
    // The browser now holds bob's session only; alice's is gone from the store.
    let page = account(&browser, down).await;
    assert!(!page.html.contains(">alice<"), "{}", page.html);
    assert!(
        store
            .list_user_sessions(&alice.id, keyward_server::domain::now())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn two_people_on_one_browser_never_merge_accounts_on_sqlite() {
    two_people_on_one_browser_never_merge_accounts(Db::Sqlite).await;
}

#[tokio::test]
async fn two_people_on_one_browser_never_merge_accounts_on_postgres() {
    two_people_on_one_browser_never_merge_accounts(Db::Postgres).await;
}

/// A fake OpenID provider on 127.0.0.1 that answers discovery with `document(base)`
/// (its own base URL in) and `{"keys": []}` at `/jwks`. Returns its base URL.
async fn fake_provider(document: fn(&str) -> String) -> String {
    let listener = bind().await;
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let doc = document(&base);
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([("content-type", "application/json")], doc) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async {
                ([("content-type", "application/json")], "{\"keys\":[]}")
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn discovery_document(base: &str, authorize: &str, token: &str) -> String {
    serde_json::json!({
        "issuer": base,
        "authorization_endpoint": authorize,
        "token_endpoint": token,
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string()
}

/// Attack: a hostile (or hijacked) provider. One announces endpoints on the cloud
/// metadata address, so that keyward would send browsers, codes and its client
/// secret there; another answers with 2 MiB, to make keyward read without limit.
/// Before the fix keyward took both documents and sent the browser on; now each is
/// refused (the provider "cannot be reached", 502) before anything is sent anywhere.
#[tokio::test]
async fn a_hostile_provider_cannot_aim_keyward_at_metadata_or_flood_it() {
    let metadata = fake_provider(|base| {
        discovery_document(
            base,
            "http://169.254.169.254/authorize",
            "http://169.254.169.254/latest/meta-data/token",
        )
    })
    .await;
    let flood = fake_provider(|base| {
        let doc = discovery_document(base, &format!("{base}/authorize"), &format!("{base}/token"));
        format!("{}{doc}", " ".repeat(2 << 20))
    })
    .await;
    let connector = |id: &str, issuer: &str| {
        format!(
            "[[connectors]]\nid = \"{id}\"\ntype = \"oidc\"\nname = \"{id}\"\nissuer = \"{issuer}\"\nclient_id = \"keyward\"\n"
        )
    };
    let app = spawn_app(
        Db::Sqlite,
        &format!(
            "{}\n{}",
            connector("meta", &metadata),
            connector("flood", &flood)
        ),
    )
    .await
    .unwrap();
    for id in ["meta", "flood"] {
        let browser = browser();
        let (page, _) = login_page(&browser, &app).await;
        let response = submit(&browser, &page, &format!("/login/{id}"), "", &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_GATEWAY,
            "{id}: {:?}",
            response.headers().get("location")
        );
        let html = response.text().await.unwrap();
        assert!(html.contains("cannot be reached right now"), "{html}");
    }
}

#[tokio::test]
async fn linking_keeps_one_account_on_sqlite() {
    linking_keeps_one_account(Db::Sqlite).await;
}

#[tokio::test]
async fn linking_keeps_one_account_on_postgres() {
    linking_keeps_one_account(Db::Postgres).await;
}

/// Linking is the account page's explicit action: bob links GitHub there, and then an
/// identity someone holds signs in to its holder; a denied or failed provider sign-in
/// says so on the login page; a provider that rotates its keys is followed.
#[tokio::test]
async fn linked_identities_sign_in_and_provider_failures_are_explained() {
    let team_app = format!(
        r#"
[[clients]]
client_id = "team-app"
client_secret = "team-app-secret-0123456789abcdef"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "groups"]
skip_consent = true

[[connectors]]
id = "dead"
type = "oidc"
name = "Dead IdP"
issuer = "http://127.0.0.1:9"
client_id = "x"

[[connectors]]
id = "retired"
type = "oidc"
name = "Retired IdP"
issuer = "http://127.0.0.1:9"
client_id = "x"
enabled = false
"#
    );
    let Some(broker) = broker(Db::Sqlite, &team_app).await else {
        return;
    };
    let down = &broker.down;
    let store = down.state.store();
    let bob = store.get_user_by_username("bob").await.unwrap().unwrap();

    // bob signs in with his password and links GitHub from his account page.
    let browser = password_session(down, "bob").await;
    let page = account(&browser, down).await;
    let response = submit(&browser, &page, "/account/link/github", "", &[]).await;
    let page = settle(&browser, response).await.unwrap();
    assert!(page.html.contains("Linked."), "{}", page.html);
    assert_eq!(
        store
            .get_identity(IdentityKey {
                connector_id: "github",
                subject: "583231"
            })
            .await
            .unwrap()
            .unwrap()
            .user_id,
        bob.id
    );

    // In another browser, GitHub signs in to bob's account, whoever asks.
    let other = crate::support::browser();
    let claims = sign_in_with(&other, &broker, "github").await;
    assert_eq!(claims["sub"], bob.id.as_str());

    // GitHub's organisations and teams are bob's groups, for a client granted `groups`,
    // named for the connector that reported them. (Attack: a GitHub organisation named
    // like a corporate group. Before the fix the groups of every identity were merged
    // verbatim, so `acme` from GitHub passed for anyone's `acme`.)
    let (url, verifier) = authorize_url(&down.issuer, "team-app", "openid groups", "");
    let params = drive(&other, &url, "-", "-", "approve").await.callback();
    let (status, body) = redeem_code(
        down,
        "team-app",
        Some("team-app-secret-0123456789abcdef"),
        &params["code"],
        verifier.secret(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let groups = serde_json::json!(["github:acme", "github:acme:ops"]);
    assert_eq!(
        jwt_payload(body["id_token"].as_str().unwrap())["groups"],
        groups
    );
    let userinfo: serde_json::Value = http()
        .get(format!("{}/userinfo", down.issuer))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["groups"], groups);
    assert_eq!(userinfo["sub"], bob.id.as_str());
    assert!(claims.get("groups").is_none(), "not without the scope");

    // Groups go stale: a day after the last sign-in through GitHub (groups_max_age),
    // they are no longer released, since bob may have left the organisation.
    let mut identity = store
        .get_identity(IdentityKey {
            connector_id: "github",
            subject: "583231",
        })
        .await
        .unwrap()
        .unwrap();
    identity.groups_confirmed_at -= 24 * 3600 + 1;
    assert!(store.update_identity(&identity).await.unwrap());
    let userinfo: serde_json::Value = http()
        .get(format!("{}/userinfo", down.issuer))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["groups"], serde_json::json!([]), "{userinfo}");

    // The person declines at GitHub: the login page says so, nothing is created.
    broker.github.sign_in_as(None);
    let fresh = crate::support::browser();
    let (page, _) = login_page(&fresh, down).await;
    let response = submit(&fresh, &page, "/login/github", "", &[]).await;
    let page = settle(&fresh, response).await.unwrap();
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.html.contains("Signing in with GitHub was cancelled."),
        "{}",
        page.html
    );

    // The upstream rotates its signing keys after down fetched them: the next ID token
    // names a key id down has not seen, and down fetches the keys again.
    let corp_browser = crate::support::browser();
    let claims = sign_in_with(&corp_browser, &broker, "corp").await;
    let corp_sub = claims["sub"].clone();

    // A fresh sign-in asked of down (prompt=login) is asked of the upstream too: its
    // login page shows although the browser is signed in there.
    let (url, _) = authorize_url(&down.issuer, "demo-app", "openid", "&prompt=login");
    let page = open(&corp_browser, &url).await;
    let response = submit(&corp_browser, &page, "/login/corp", "", &[]).await;
    assert!(
        location(&response)
            .query_pairs()
            .any(|(k, v)| k == "prompt" && v == "login")
    );
    let page = settle(&corp_browser, response).await.unwrap();
    assert_eq!(page.url.host_str(), Some("localhost"), "at the upstream");
    assert!(page.html.contains("name=\"password\""), "{}", page.html);

    let before = broker.up.state.keys().jwks();
    keyward_server::keys::rotate(broker.up.state.store(), None)
        .await
        .unwrap();
    broker.up.state.keys().reload().await.unwrap();
    assert_ne!(before.keys, broker.up.state.keys().jwks().keys);
    let claims = sign_in_with(&crate::support::browser(), &broker, "corp").await;
    assert_eq!(claims["sub"], corp_sub);

    // A provider that cannot be reached: a page that says so (502), not a crash.
    let (page, _) = login_page(&fresh, down).await;
    let response = submit(&fresh, &page, "/login/dead", "", &[]).await;
    let page = settle(&fresh, response).await.unwrap();
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(
        page.html.contains("Dead IdP cannot be reached right now"),
        "{}",
        page.html
    );

    // A disabled connector is not offered and answers nothing.
    let (page, _) = login_page(&fresh, down).await;
    assert!(page.html.contains("Dead IdP") && !page.html.contains("Retired IdP"));
    let response = fresh
        .post(format!("{}/login/retired", down.issuer))
        .form(&[
            ("req", hidden(&page.html, "req")),
            ("csrf", hidden(&page.html, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // An unknown connector, or a callback without state, is a page, not a crash.
    let page = open(
        &fresh,
        &format!("{}/callback/nope?code=x&state=y", down.issuer),
    )
    .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = open(&fresh, &format!("{}/callback/corp?code=x", down.issuer)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = open(
        &fresh,
        &format!("{}/callback/corp?state={}", down.issuer, "x".repeat(5000)),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

/// What crossed a forwarded connection: one buffer per connection and direction.
type Wire = std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>>>;

/// Joins every connection accepted on `listener` to a new connection to `to`, copying
/// both ways, and keeps what crossed in `wire` (all of it plain HTTP, for the test to
/// read). The listener stays open as long as the test runs: nobody else can take its
/// port.
fn forward(listener: tokio::net::TcpListener, to: std::net::SocketAddr, wire: Wire) {
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let wire = wire.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::join!(
                    pipe(in_read, out_write, &wire),
                    pipe(out_read, in_write, &wire)
                );
            });
        }
    });
}

/// Copies `from` to `to` until either ends, recording the bytes in `wire`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    wire: &Wire,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    wire.lock().unwrap().push(seen.clone());
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Everything that crossed, each connection's direction whole.
fn wire_text(wire: &Wire) -> Vec<String> {
    wire.lock()
        .unwrap()
        .iter()
        .map(|seen| text(&seen.lock().unwrap()))
        .collect()
}

/// The values of `key` in what crossed: as a JSON string member (`"key":"…"`) or a
/// form field (`key=…`).
fn values_of(wire: &[String], key: &str) -> Vec<String> {
    let json = format!("\"{key}\":\"");
    let form = format!("{key}=");
    let mut found = Vec::new();
    for text in wire {
        for (at, _) in text.match_indices(&json) {
            let rest = &text[at + json.len()..];
            found.push(rest[..rest.find('"').unwrap_or(rest.len())].to_owned());
        }
        for (at, _) in text.match_indices(&form) {
            let starts_field = at == 0 || matches!(text.as_bytes()[at - 1], b'&' | b'?' | b'\n');
            if starts_field {
                let rest = &text[at + form.len()..];
                let end = rest
                    .find(|c: char| c == '&' || c.is_whitespace())
                    .unwrap_or(rest.len());
                found.push(rest[..end].to_owned());
            }
        }
    }
    found.retain(|v| !v.is_empty());
    found
}

/// The upstream keyward for a downstream process on `down_port`, started here rather
/// than by `spawn_app_on` so that its issuer is a recording [`forward`]er in front of
/// it: every byte down (and the browser) exchange with it is in the returned wire, the
/// ID and access tokens it issues and the PKCE verifier down presents included. Its
/// database goes in `dir`.
async fn recorded_upstream(down_port: u16, dir: &std::path::Path) -> (String, Wire) {
    let front = bind().await;
    let back = bind().await;
    let issuer = format!("http://localhost:{}", front.local_addr().unwrap().port());
    let back_addr = back.local_addr().unwrap();
    let env: std::collections::BTreeMap<String, String> = [
        ("KEYWARD_ISSUER".to_owned(), issuer.clone()),
        ("KEYWARD_LISTEN".to_owned(), back_addr.to_string()),
        (
            "KEYWARD_DATABASE_URL".to_owned(),
            format!("sqlite://{}/upstream.db", dir.display()),
        ),
    ]
    .into();
    let config =
        keyward_server::config::Config::from_toml(&upstream_config(down_port), &env).unwrap();
    let state = keyward_server::serve::build(config).await.unwrap();
    tokio::spawn(keyward_server::serve::run(
        state,
        back,
        std::future::pending(),
    ));
    let wire = Wire::default();
    forward(front, back_addr, wire.clone());
    (issuer, wire)
}

/// `keyward serve` as a process with every kind of connector, its log at trace level:
/// the banner names the redirect URIs to register and says where emailed links go
/// without SMTP; the link is in the log and works; signing in through another keyward
/// and GitHub leaves no secret, code, state or token of theirs in the log: not the
/// upstream's ID and access tokens (read off the wire to the upstream keyward, and from
/// the fake GitHub), nor the PKCE verifiers keyward itself presented there.
///
/// The process binds port 0 and says where it listens; the test keeps the listener
/// behind the issuer's port and forwards it there, so no port is let go and taken again.
#[tokio::test]
async fn serve_prints_redirect_uris_and_logs_no_upstream_secret() {
    let front = bind().await;
    let port = front.local_addr().unwrap().port();
    let dir = temp_dir();
    let github = fake_github(port).await;
    let (up_issuer, up_wire) = recorded_upstream(port, &dir).await;
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"http://127.0.0.1:{port}\"\n{}",
            base_config(&format!(
                "{}\n[[connectors]]\nid = \"email\"\ntype = \"email\"\n",
                connectors_config_with(
                    &up_issuer,
                    &github,
                    "",
                    r#"scopes = ["read:user", "user:email", "read:org"]"#
                )
            ))
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env("KEYWARD_LISTEN", "127.0.0.1:0")
        .env("KEYWARD_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log, kept whole, and line by line for whoever waits for one.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (log_lines, mut new_lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    {
        use std::io::BufRead as _;
        let stderr = child.stderr.take().unwrap();
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&line);
                let _ = log_lines.send(line);
            }
        });
    }
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let server = Kill(child);
    // The banner, up to the last connector line, read on a thread of its own.
    let (banner_tx, banner_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut banner = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let done = line.contains("Password (password");
            banner.push_str(&line);
            banner.push('\n');
            if done {
                break;
            }
        }
        let _ = banner_tx.send(banner);
        for _ in lines {}
    });
    let banner = tokio::time::timeout(std::time::Duration::from_secs(60), banner_rx)
        .await
        .expect("keyward serve printed its banner within 60 s")
        .unwrap();
    let listening: std::net::SocketAddr = banner
        .lines()
        .find_map(|line| line.split("listening on http://").nth(1))
        .unwrap_or_else(|| panic!("no listening address in the banner: {banner}"))
        .trim()
        .parse()
        .unwrap();
    forward(front, listening, Wire::default());
    let base = format!("http://127.0.0.1:{port}");
    for expected in [
        format!("register the redirect URI {base}/callback/corp"),
        format!("register the redirect URI {base}/callback/github"),
        "sign-in links go to the server log".to_owned(),
    ] {
        assert!(banner.contains(&expected), "{expected}: {banner}");
    }

    // Through the other keyward and through GitHub, remembering what crossed.
    let browser = browser();
    let mut crossed: Vec<String> = vec![DOWNSTREAM_SECRET.into(), GITHUB_SECRET.into()];
    for connector in ["corp", "github"] {
        let (url, verifier) = authorize_url(&base, "demo-app", "openid", "&prompt=login");
        let page = open(&browser, &url).await;
        let response = submit(&browser, &page, &format!("/login/{connector}"), "", &[]).await;
        let to_provider = location(&response);
        crossed.extend(
            to_provider
                .query_pairs()
                .filter(|(k, _)| k == "state" || k == "nonce" || k == "code_challenge")
                .map(|(_, v)| v.into_owned()),
        );
        let mut response = browser.get(to_provider).send().await.unwrap();
        if connector == "corp" {
            let page = settle(&browser, response).await.unwrap();
            response = submit(
                &browser,
                &page,
                "/login",
                "",
                &[("username", "alice"), ("password", PASSWORD)],
            )
            .await;
        }
        let back = location(&response);
        assert!(
            back.as_str()
                .starts_with(&format!("{base}/callback/{connector}")),
            "{back}"
        );
        crossed.extend(
            back.query_pairs()
                .filter(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned()),
        );
        let params = settle(&browser, browser.get(back).send().await.unwrap())
            .await
            .unwrap_err();
        crossed.push(params["code"].clone());
        crossed.push(verifier.secret().clone());
    }
    crossed.extend(github.issued_tokens());
    assert!(crossed.len() >= 12, "{crossed:?}");
    // What keyward and the upstream keyward exchanged: the tokens it answered with, the
    // PKCE verifier keyward presented; and the verifier keyward presented to GitHub.
    let up_wire = wire_text(&up_wire);
    let mut upstream_secrets = Vec::new();
    for key in ["id_token", "access_token", "code_verifier"] {
        let values = values_of(&up_wire, key);
        assert!(!values.is_empty(), "no {key} crossed to the upstream");
        upstream_secrets.extend(values);
    }
    upstream_secrets.extend(values_of(&up_wire, "refresh_token"));
    let github_verifiers: Vec<String> = github
        .token_requests()
        .into_iter()
        .filter_map(|form| form.get("code_verifier").cloned())
        .collect();
    assert_eq!(github_verifiers.len(), 1, "one code redeemed at GitHub");
    upstream_secrets.extend(github_verifiers);
    assert!(
        upstream_secrets.iter().all(|s| s.len() >= 32),
        "{upstream_secrets:?}"
    );
    crossed.extend(upstream_secrets);

    // The emailed link, from the log, signs in.
    let (url, _) = authorize_url(&base, "demo-app", "openid", "&prompt=login");
    let page = open(&browser, &url).await;
    let response = submit(
        &browser,
        &page,
        "/login/email",
        "",
        &[("email", "dev@example.com")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let prefix = format!("{base}/callback/email?token=");
    let link = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = new_lines.recv().await {
            if let Some(at) = line.find(&prefix) {
                return line[at..]
                    .split(|c: char| c.is_whitespace() || c == '"' || c == '\x1b')
                    .next()
                    .unwrap()
                    .to_owned();
            }
        }
        panic!("the server ended without logging the link");
    })
    .await
    .expect("the link in the log within 30 s");
    let confirm = open(&browser, &link).await;
    let response = submit(&browser, &confirm, "/callback/email", "", &[]).await;
    assert!(
        settle(&browser, response)
            .await
            .unwrap_err()
            .contains_key("code")
    );
    drop(server);

    let log = log.lock().unwrap().clone();
    assert!(log.contains("upstream sign-in"), "trace log: {log:.300}");
    for secret in &crossed {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }

    // The admin commands see the same: connectors with their redirect URIs, and how
    // each account signs in.
    let admin = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .env("KEYWARD_LOG", "warn")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let connectors = admin(&["connector", "list"]);
    assert!(
        connectors.contains(&format!("{base}/callback/github")),
        "{connectors}"
    );
    let users = admin(&["user", "list"]);
    for expected in ["corp:alice", "github:octocat", "email:dev@example.com"] {
        assert!(users.contains(expected), "{expected}: {users}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Signs in at `down` through GitHub in a fresh browser, expecting GitHub's answer to
/// fail; returns the page keyward stopped at.
async fn failed_github_sign_in(down: &TestApp) -> Page {
    let browser = browser();
    let (page, _) = login_page(&browser, down).await;
    let response = submit(&browser, &page, "/login/github", "", &[]).await;
    settle(&browser, response)
        .await
        .unwrap_or_else(|params| panic!("signed in although GitHub failed: {params:?}"))
}

/// GitHub's documented failures, from the fake: a code that expired before keyward
/// redeemed it (`bad_verification_code` in a 200 answer), a token revoked at once (401
/// `Bad credentials` from /user), a used-up rate limit (403 and 429 with
/// `x-ratelimit-remaining: 0`). Each ends on the login page with what happened
/// (403), with no account or identity created and nobody signed in; once GitHub
/// answers again, the same sign-in works.
#[tokio::test]
async fn github_failures_are_explained_and_create_nothing() {
    let Some(broker) = broker(Db::Sqlite, "").await else {
        return;
    };
    let down = &broker.down;
    let store = down.state.store();
    let users = store.list_users().await.unwrap().len();
    let try_later = "Signing in with GitHub did not work. Try again in a moment.";
    for (trouble, message) in [
        (
            Trouble::ExpiredCode,
            "GitHub refused the sign-in: the provider refused: bad_verification_code (The code passed is incorrect or expired.).",
        ),
        (Trouble::RevokedToken, try_later),
        (Trouble::RateLimited(StatusCode::FORBIDDEN), try_later),
        (
            Trouble::RateLimited(StatusCode::TOO_MANY_REQUESTS),
            try_later,
        ),
    ] {
        broker.github.trouble(Some(trouble));
        let page = failed_github_sign_in(down).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{trouble:?}: {}",
            page.html
        );
        assert_eq!(page.url.path(), "/callback/github", "{trouble:?}");
        assert!(page.html.contains(message), "{trouble:?}: {}", page.html);
        assert!(
            page.html.contains("Continue with GitHub") && page.html.contains("name=\"password\""),
            "{trouble:?}: the login page, to try again or another way: {}",
            page.html
        );
        assert!(
            store
                .get_identity(IdentityKey {
                    connector_id: "github",
                    subject: "583231",
                })
                .await
                .unwrap()
                .is_none(),
            "{trouble:?}"
        );
        assert_eq!(
            store.list_users().await.unwrap().len(),
            users,
            "{trouble:?}"
        );
    }
    let tokens = broker.github.issued_tokens();
    assert_eq!(
        tokens.len(),
        3,
        "the code expired before any token: {tokens:?}"
    );

    broker.github.trouble(None);
    let claims = sign_in_with(&browser(), &broker, "github").await;
    assert_eq!(store.list_users().await.unwrap().len(), users + 1);
    let identity = store
        .get_identity(IdentityKey {
            connector_id: "github",
            subject: "583231",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.user_id, claims["sub"].as_str().unwrap());
}

/// "Users can edit the scopes you requested": the person grants read:user only, no
/// user:email nor read:org (GitHub's `scope` in the token answer says so, and the API
/// answers /user/emails with 404 and /user/teams with 403 for such a token). keyward
/// signs the person in without an address or groups (rather than failing on the
/// missing scopes, or trusting anything else): nothing is released that was not read.
#[tokio::test]
async fn github_scopes_the_person_declined_are_done_without() {
    let Some(broker) = broker(Db::Sqlite, "").await else {
        return;
    };
    let down = &broker.down;
    broker.github.grant_scopes(Some(&["read:user"]));
    let claims = sign_in_with(&browser(), &broker, "github").await;
    let request = broker.github.authorize_requests().pop().unwrap();
    assert_eq!(
        request["scope"], "read:user user:email read:org",
        "asked for all"
    );
    let identity = down
        .state
        .store()
        .get_identity(IdentityKey {
            connector_id: "github",
            subject: "583231",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.user_id, claims["sub"].as_str().unwrap());
    assert_eq!(identity.username.as_deref(), Some("octocat"));
    assert_eq!(identity.email, None, "user:email was not granted");
    assert!(identity.groups.is_empty(), "read:org was not granted");
    assert!(claims.get("email").is_none(), "{claims}");

    // Granted in full the next time: the address and groups come.
    broker.github.grant_scopes(None);
    sign_in_with(&browser(), &broker, "github").await;
    let identity = down
        .state
        .store()
        .get_identity(IdentityKey {
            connector_id: "github",
            subject: "583231",
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.email.as_deref(), Some("octocat@github.example"));
    assert_eq!(identity.groups, ["acme", "acme:ops"]);
}
