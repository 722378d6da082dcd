//! What the keys of `[[connectors]]` promise (README, keyward.example.toml), each
//! signed in through: GitHub's `orgs` allow-list, `create_accounts = false` for
//! OpenID Connect and GitHub, `enabled = false` (not offered, callbacks refused,
//! identities kept for when it is turned back on), and the password connector renamed
//! or turned off.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use crate::connectors::{
    GITHUB_SECRET, account, broker_with, fake_github, login_page, password_session, sign_in_as,
};
use crate::fake_github::{FakeGithub, FakeUser};
use crate::support::*;
use keyward_server::store::IdentityKey;

/// GitHub's id of octocat, the fake's member of `acme`.
const OCTOCAT: &str = "583231";

/// Signs in at `down` through connector `id` in `browser`, as `user` when the upstream
/// keyward asks for a password; returns the page it ended on, or the client's callback
/// parameters in `Err`.
async fn sign_in_through(
    browser: &reqwest::Client,
    down: &TestApp,
    id: &str,
    user: &str,
) -> Result<Page, BTreeMap<String, String>> {
    let (page, _) = login_page(browser, down).await;
    let response = submit(browser, &page, &format!("/login/{id}"), "", &[]).await;
    at_upstream_sign_in(browser, settle(browser, response).await?, user).await
}

/// When `page` is the upstream keyward's login page (on `localhost`), signs in there
/// as `user` and follows on; otherwise returns `page`.
async fn at_upstream_sign_in(
    browser: &reqwest::Client,
    page: Page,
    user: &str,
) -> Result<Page, BTreeMap<String, String>> {
    if page.url.host_str() != Some("localhost") {
        return Ok(page);
    }
    let response = submit(
        browser,
        &page,
        "/login",
        "",
        &[("username", user), ("password", PASSWORD)],
    )
    .await;
    settle(browser, response).await
}

/// A sign-in that must end on down's login page with `message` (403).
async fn refused(down: &TestApp, id: &str, user: &str, message: &str) {
    let page = sign_in_through(&browser(), down, id, user)
        .await
        .unwrap_or_else(|params| panic!("{id}: signed in as {user}: {params:?}"));
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{id}: {}", page.html);
    assert_eq!(page.url.path(), format!("/callback/{id}"));
    assert!(
        page.html.contains(message),
        "{id}: {message}: {}",
        page.html
    );
}

async fn github_identity(app: &TestApp, subject: &str) -> Option<String> {
    app.state
        .store()
        .get_identity(IdentityKey {
            connector_id: "github",
            subject,
        })
        .await
        .unwrap()
        .map(|identity| identity.user_id)
}

/// `orgs = ["acme"]`: a member of acme signs in (and read:org is asked for, although
/// `scopes` was left at its default); a GitHub account outside acme is refused, and
/// so is the member when they did not grant read:org, since membership could not be
/// read. Nothing is created for those refused.
#[tokio::test]
async fn github_orgs_admit_only_their_members() {
    let Some(broker) = broker_with(Db::Sqlite, "", "", r#"orgs = ["acme"]"#).await else {
        return;
    };
    let down = &broker.down;
    let store = down.state.store();
    broker.github.add_user(FakeUser {
        id: 4_242,
        login: "mallory".into(),
        name: None,
        emails: vec![("mallory@github.example".into(), true, true)],
        orgs: vec!["umbrella".into()],
        teams: vec![("umbrella".into(), "acme".into())],
    });
    let users = store.list_users().await.unwrap().len();

    broker.github.sign_in_as(Some("mallory"));
    refused(
        down,
        "github",
        "-",
        "The GitHub account mallory is not a member of acme.",
    )
    .await;
    assert_eq!(github_identity(down, "4242").await, None);
    assert_eq!(store.list_users().await.unwrap().len(), users);

    broker.github.sign_in_as(Some("octocat"));
    let claims = sign_in_as(&browser(), down, "github", "-", "").await;
    let request = broker.github.authorize_requests().pop().unwrap();
    assert_eq!(request["scope"], "read:user user:email read:org");
    assert_eq!(
        github_identity(down, OCTOCAT).await.as_deref(),
        claims["sub"].as_str()
    );
    assert_eq!(store.list_users().await.unwrap().len(), users + 1);

    // The member unticks read:org at GitHub: membership cannot be read, so no entry,
    // although the identity is known.
    broker
        .github
        .grant_scopes(Some(&["read:user", "user:email"]));
    refused(
        down,
        "github",
        "-",
        "GitHub did not grant keyward the read:org access it needs to check membership of acme.",
    )
    .await;
}

/// `create_accounts = false` on an OpenID Connect and a GitHub connector: an identity
/// nobody holds is refused with a page that says how to link it, and nothing is
/// created; once bob links both from his account page, each signs in to his account.
#[tokio::test]
async fn create_accounts_false_admits_only_linked_identities() {
    let Some(broker) = broker_with(
        Db::Sqlite,
        "",
        "create_accounts = false",
        "create_accounts = false",
    )
    .await
    else {
        return;
    };
    let down = &broker.down;
    let store = down.state.store();
    let users = store.list_users().await.unwrap().len();
    for (id, name) in [("corp", "Corporate SSO"), ("github", "GitHub")] {
        refused(
            down,
            id,
            "alice",
            &format!(
                "No account here is linked to this {name} identity. Sign in another way, then link it on your account page."
            ),
        )
        .await;
    }
    assert_eq!(store.list_users().await.unwrap().len(), users);
    assert_eq!(github_identity(down, OCTOCAT).await, None);

    let bob = store.get_user_by_username("bob").await.unwrap().unwrap();
    let browser = password_session(down, "bob").await;
    for id in ["corp", "github"] {
        let page = account(&browser, down).await;
        let response = submit(&browser, &page, &format!("/account/link/{id}"), "", &[]).await;
        let page = settle(&browser, response).await.unwrap();
        let page = at_upstream_sign_in(&browser, page, "alice").await.unwrap();
        assert_eq!(page.url.path(), "/account", "{id}");
        assert!(page.html.contains("Linked."), "{id}: {}", page.html);
    }
    assert_eq!(store.list_identities(&bob.id).await.unwrap().len(), 2);
    for id in ["corp", "github"] {
        let claims = sign_in_as(&crate::support::browser(), down, id, "alice", "").await;
        assert_eq!(claims["sub"], bob.id.as_str(), "{id}");
    }
    assert_eq!(store.list_users().await.unwrap().len(), users);
}

/// A configuration with one GitHub connector, on or off.
fn github_only(github: &FakeGithub, enabled: bool) -> String {
    base_config(&format!(
        r#"
[[connectors]]
id = "github"
type = "github"
client_id = "gh-client"
client_secret = "{GITHUB_SECRET}"
base_url = "{}"
api_url = "{}"
enabled = {enabled}
"#,
        github.url,
        github.api_url()
    ))
}

/// `enabled = false`: the connector is not offered, starting a sign-in and a callback
/// for one started before are refused (404), and the identities linked through it
/// stay, shown on the account page; turned back on, the same GitHub account signs in
/// to the same keyward account. (Three servers one after the other on one database,
/// as after edits of the configuration.)
#[tokio::test]
async fn a_disabled_connector_refuses_callbacks_and_keeps_identities() {
    let listener = bind().await;
    let github = fake_github(listener.local_addr().unwrap().port()).await;
    let mut first = spawn_app_on(
        listener,
        "127.0.0.1",
        Db::Sqlite,
        &github_only(&github, true),
    )
    .await
    .unwrap();
    let database_url = format!("sqlite://{}/keyward.db", first.dir.display());

    let signed_in = browser();
    let claims = sign_in_as(&signed_in, &first, "github", "-", "").await;
    let sub = claims["sub"].as_str().unwrap().to_owned();
    let users = first.state.store().list_users().await.unwrap().len();

    // Another browser starts a sign-in; GitHub sends it back just as the connector is
    // turned off.
    let late = browser();
    let (page, _) = login_page(&late, &first).await;
    let response = submit(&late, &page, "/login/github", "", &[]).await;
    let at_github = late.get(location(&response)).send().await.unwrap();
    let callback = location(&at_github);
    assert!(
        callback.query_pairs().any(|(k, _)| k == "code"),
        "{callback}"
    );
    first.stop();

    let off = spawn_on_database(&database_url, &github_only(&github, false)).await;
    let mut moved = callback.clone();
    moved
        .set_port(url::Url::parse(&off.issuer).unwrap().port())
        .unwrap();
    let page = open(&late, moved.as_str()).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.html);
    assert!(
        page.html
            .contains("This way of signing in does not exist or is turned off."),
        "{}",
        page.html
    );
    let (page, _) = login_page(&late, &off).await;
    assert!(!page.html.contains("GitHub"), "not offered: {}", page.html);
    let response = late
        .post(format!("{}/login/github", off.issuer))
        .form(&[
            ("req", hidden(&page.html, "req")),
            ("csrf", hidden(&page.html, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // The identity stays, and its owner still sees it.
    assert_eq!(
        github_identity(&off, OCTOCAT).await.as_deref(),
        Some(sub.as_str())
    );
    let page = account(&signed_in, &off).await;
    assert!(
        page.html.contains("<strong>GitHub</strong>") && page.html.contains("octocat"),
        "{}",
        page.html
    );
    drop(off);

    let on = spawn_on_database(&database_url, &github_only(&github, true)).await;
    github.register_callback(&format!("{}/callback/github", on.issuer));
    let claims = sign_in_as(&browser(), &on, "github", "-", "").await;
    assert_eq!(claims["sub"], sub.as_str(), "the same account");
    assert_eq!(on.state.store().list_users().await.unwrap().len(), users);
    drop(first);
}

/// The password connector: declared with another id and name, the password form stays
/// and a password sign-in is recorded under that name; declared with `enabled =
/// false`, the form is gone and a password posted anyway signs nobody in; with nothing
/// else enabled, the login page says there is no way in.
#[tokio::test]
async fn the_password_connector_can_be_renamed_or_turned_off() {
    let renamed = spawn_app(
        Db::Sqlite,
        "[[connectors]]\nid = \"staff\"\ntype = \"password\"\nname = \"Staff password\"\n",
    )
    .await
    .unwrap();
    let ids: Vec<_> = renamed
        .state
        .config()
        .connectors
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["staff"], "no second password connector added");
    let browser = password_session(&renamed, "alice").await;
    let page = account(&browser, &renamed).await;
    assert!(
        page.html.contains("signed in with Staff password"),
        "{}",
        page.html
    );

    let off = spawn_app(
        Db::Sqlite,
        "[[connectors]]\nid = \"password\"\ntype = \"password\"\nenabled = false\n\n[[connectors]]\nid = \"email\"\ntype = \"email\"\n",
    )
    .await
    .unwrap();
    let browser = crate::support::browser();
    let (page, _) = login_page(&browser, &off).await;
    assert!(!page.html.contains("name=\"password\""), "{}", page.html);
    assert!(
        page.html.contains("Email me a sign-in link"),
        "{}",
        page.html
    );
    let response = browser
        .post(format!("{}/login", off.issuer))
        .form(&[
            ("req", hidden(&page.html, "req")),
            ("csrf", hidden(&page.html, "csrf")),
            ("username", "alice".to_owned()),
            ("password", PASSWORD.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains("Password sign-in is off"), "{html}");
    let alice = off
        .state
        .store()
        .get_user_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(
        off.state
            .store()
            .list_user_sessions(&alice.id, i64::MIN)
            .await
            .unwrap()
            .is_empty(),
        "nobody signed in"
    );

    let none = spawn_app(
        Db::Sqlite,
        "[[connectors]]\nid = \"password\"\ntype = \"password\"\nenabled = false\n",
    )
    .await
    .unwrap();
    let (url, _) = authorize_url(&none.issuer, "demo-app", "openid", "");
    let page = open(&crate::support::browser(), &url).await;
    assert!(!page.html.contains("name=\"password\""), "{}", page.html);
    assert!(
        page.html
            .contains("No way to sign in is enabled on this server. Ask its administrator."),
        "{}",
        page.html
    );
}
