//! The contract every [`Store`] implementation meets, run against SQLite and, when
//! `KEYWARD_TEST_DATABASE_URL` names a PostgreSQL server, against PostgreSQL (each run
//! in a database of its own).

use std::sync::Arc;

use keyward_proto::{OpaqueToken, ScopeSet, TokenHash};

use super::{AuditCursor, IdentityKey, Inconsistency, Store, StoreError, UserClient};
use crate::domain::{AuditEntry, SigningAlg};
use crate::domain::{
    AuthCode, AuthRequest, Client, ClientState, CodeFlow, CodeRedemption, ConnectorLogin,
    ConnectorPurpose, DeviceCode, DeviceStatus, Grant, Identity, LoginKind, PasswordLink,
    RefreshToken, ResponseMode, Session, StoredKey, Unlink, User,
};

pub(crate) async fn sqlite_store() -> (Arc<dyn Store>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "keyward-store-{}",
        keyward_proto::secret::random_urlsafe(9)
    ));
    let url = format!("sqlite://{}/nested/keyward.db", dir.display());
    (super::open(&url).await.unwrap(), dir)
}

/// A fresh PostgreSQL database, or `None` (the test reports itself skipped).
pub(crate) async fn postgres_store() -> Option<Arc<dyn Store>> {
    let url = postgres_url().await?;
    Some(super::open(&url).await.unwrap())
}

/// The URL of a fresh PostgreSQL database, or `None` (the test reports itself skipped).
async fn postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("KEYWARD_REQUIRE_POSTGRES").is_none(),
            "KEYWARD_REQUIRE_POSTGRES is set but KEYWARD_TEST_DATABASE_URL is not"
        );
        eprintln!("SKIPPED: KEYWARD_TEST_DATABASE_URL is not set; PostgreSQL contract not run");
        return None;
    };
    let name = format!(
        "keyward_test_{}",
        keyward_proto::secret::random_urlsafe(9)
            .to_lowercase()
            .replace(['-', '_'], "x")
    );
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    Some(url.into())
}

fn client(id: &str) -> Client {
    Client {
        client_id: id.into(),
        name: "Demo".into(),
        secret_hash: Some(TokenHash::of("secret")),
        previous_secret: None,
        redirect_uris: vec!["http://127.0.0.1:5555/cb".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scopes: ScopeSet::parse("openid profile").unwrap(),
        skip_consent: true,
        introspect: true,
        id_token_alg: SigningAlg::RS256,
        created_at: 100,
    }
}

fn user(name: &str) -> User {
    User {
        id: format!("id-{name}"),
        username: name.into(),
        email: Some(format!("{name}@example.com")),
        email_verified: true,
        name: None,
        password_hash: Some("$argon2id$x".into()),
        disabled: false,
        created_at: 100,
    }
}

fn grant(id: &str) -> (Grant, AuthCode, OpaqueToken) {
    let code = OpaqueToken::generate();
    let g = Grant {
        id: id.into(),
        client_id: "app".into(),
        user_id: "id-alice".into(),
        scope: ScopeSet::parse("openid").unwrap(),
        auth_time: 100,
        nonce: Some("n".into()),
        created_at: 100,
        expires_at: 10_000,
        revoked: false,
    };
    let c = AuthCode {
        code_hash: code.hash(),
        grant_id: id.into(),
        client_id: "app".into(),
        redirect_uri: "http://127.0.0.1:5555/cb".into(),
        redirect_uri_given: true,
        code_challenge: "x".repeat(43),
        created_at: 100,
        expires_at: 160,
    };
    (g, c, code)
}

/// Clients: ids are unique; upsert replaces; removal is reported once.
async fn clients(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    // Clients.
    let mut app = client("app");
    store.insert_client(&app).await.unwrap();
    assert!(matches!(
        store.insert_client(&app).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_client("app").await.unwrap(), Some(app.clone()));
    app.redirect_uris.push("https://app.example/cb".into());
    app.secret_hash = None;
    store.upsert_client(&app).await.unwrap();
    store.upsert_client(&client("zzz")).await.unwrap();
    assert_eq!(store.get_client("app").await.unwrap(), Some(app.clone()));
    assert_eq!(store.list_clients().await.unwrap().len(), 2);
    // A change applies only to the record as read: not after a rotation, not to a
    // removed client.
    let mut renamed = app.clone();
    renamed.name = "Renamed".into();
    assert!(
        !store
            .update_client(&renamed, Some(&TokenHash::of("other")))
            .await
            .unwrap()
    );
    assert_eq!(store.get_client("app").await.unwrap(), Some(app.clone()));
    assert!(
        store
            .update_client(&renamed, app.secret_hash.as_ref())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_client("app").await.unwrap(),
        Some(renamed.clone())
    );
    let mut gone = client("gone");
    gone.secret_hash = None;
    assert!(!store.update_client(&gone, None).await.unwrap());
    assert_eq!(store.get_client("gone").await.unwrap(), None);
    store.upsert_client(&app).await.unwrap();
    // A rotated secret: the old one is kept with its end, and forgotten again.
    app.previous_secret = Some(crate::domain::PreviousSecret {
        hash: TokenHash::of("old"),
        until: 12_345,
    });
    store.upsert_client(&app).await.unwrap();
    assert_eq!(store.get_client("app").await.unwrap(), Some(app.clone()));
    app.previous_secret = None;
    store.upsert_client(&app).await.unwrap();
    assert_eq!(store.get_client("app").await.unwrap(), Some(app.clone()));
    assert!(store.delete_client("zzz").await.unwrap());
    assert!(!store.delete_client("zzz").await.unwrap());
    assert_eq!(store.get_client("zzz").await.unwrap(), None);

    // What the configuration file declared: kept per kind, replaced whole.
    use super::DeclaredKind::{Client as Clients, User as Users};
    assert!(store.declared(Clients).await.unwrap().is_empty());
    let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    store
        .set_declared(Clients, &names(&["b", "a", "a"]))
        .await
        .unwrap();
    store.set_declared(Users, &names(&["ann"])).await.unwrap();
    assert_eq!(store.declared(Clients).await.unwrap(), ["a", "b"]);
    store.set_declared(Clients, &names(&["c"])).await.unwrap();
    assert_eq!(store.declared(Clients).await.unwrap(), ["c"]);
    assert_eq!(store.declared(Users).await.unwrap(), ["ann"]);
    store.set_declared(Users, &[]).await.unwrap();
    assert!(store.declared(Users).await.unwrap().is_empty());

    // The audit log: newest first, limited, from a point in time back.
    let entry = |id: &str, at: i64| crate::domain::AuditEntry {
        id: id.into(),
        at,
        actor: "client:admin".into(),
        action: "user.disable".into(),
        target: "bob".into(),
        address: (at % 2000 == 0).then(|| "127.0.0.1".into()),
    };
    for (id, at) in [("e1", 1_000), ("e2", 2_000), ("e3", 3_000)] {
        store.append_audit(&entry(id, at)).await.unwrap();
    }
    let newest = store.list_audit(2, None).await.unwrap();
    assert_eq!(newest, [entry("e3", 3_000), entry("e2", 2_000)]);
    let older = store
        .list_audit(10, Some(AuditCursor::through(1_999)))
        .await
        .unwrap();
    assert_eq!(older, [entry("e1", 1_000)]);
    // Entries of one millisecond are paged by id: none is skipped or shown twice.
    for id in ["f1", "f2", "f3"] {
        store.append_audit(&entry(id, 2_500)).await.unwrap();
    }
    let first = store.list_audit(3, None).await.unwrap();
    assert_eq!(
        first,
        [entry("e3", 3_000), entry("f3", 2_500), entry("f2", 2_500)]
    );
    let last = first.last().unwrap();
    let next = AuditCursor {
        at: last.at,
        id: last.id.clone(),
    };
    let rest = store.list_audit(10, Some(next)).await.unwrap();
    assert_eq!(
        rest,
        [entry("f1", 2_500), entry("e2", 2_000), entry("e1", 1_000)]
    );
    assert!(
        store.append_audit(&entry("e1", 4_000)).await.is_err(),
        "ids are unique"
    );
}

/// Users: usernames are unique; sync keeps the id; password and disabled flag are kept.
async fn users(store: Arc<dyn Store>) {
    // Users.
    let alice = user("alice");
    store.insert_user(&alice).await.unwrap();
    assert!(matches!(
        store
            .insert_user(&User {
                id: "other".into(),
                ..alice.clone()
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_user_by_username("alice").await.unwrap(),
        Some(alice.clone())
    );
    let synced = store
        .sync_user(&User {
            id: "new-id".into(),
            email: Some("a2@example.com".into()),
            ..alice.clone()
        })
        .await
        .unwrap();
    assert_eq!(synced.id, "id-alice", "sync keeps the existing id");
    assert_eq!(synced.email.as_deref(), Some("a2@example.com"));
    let bob = store.sync_user(&user("bob")).await.unwrap();
    assert_eq!(bob.id, "id-bob");

    assert!(
        store
            .set_password_hash("id-bob", "$argon2id$y")
            .await
            .unwrap()
    );
    assert!(store.set_user_disabled("id-bob", true).await.unwrap());
    let bob = store.get_user("id-bob").await.unwrap().unwrap();
    assert!(bob.disabled);
    assert_eq!(bob.password_hash.as_deref(), Some("$argon2id$y"));
    assert!(!store.set_user_disabled("nobody", true).await.unwrap());
    assert_eq!(
        store
            .list_users()
            .await
            .unwrap()
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(store.count_users().await.unwrap(), 2);
    // Search: by a piece of the username or the address, any ASCII case; `%` and `_`
    // are themselves, not wildcards.
    store.sync_user(&user("Carol_X")).await.unwrap();
    let found = |text: &'static str, limit| {
        let store = store.clone();
        async move {
            let users = store.search_users(text, limit).await.unwrap();
            users.into_iter().map(|u| u.username).collect::<Vec<_>>()
        }
    };
    assert_eq!(found("", 10).await, ["Carol_X", "alice", "bob"]);
    assert_eq!(found("", 2).await, ["Carol_X", "alice"]);
    assert_eq!(found("LIC", 10).await, ["alice"]);
    assert_eq!(found("a2@EXAMPLE", 10).await, ["alice"]);
    assert_eq!(found("l_x", 10).await, ["Carol_X"]);
    assert!(found("a_i", 10).await.is_empty(), "_ is no wildcard");
    assert!(found("%", 10).await.is_empty(), "% is no wildcard");
}

/// Logins in progress: every kind comes back as it went in; expiry, the signed-in user, single take, and sign-out ending a browser's logins.
async fn logins_in_progress(store: Arc<dyn Store>) {
    // Logins in progress.
    let request = AuthRequest {
        id: "req1".into(),
        prompt: Some("login".into()),
        max_age: Some(30),
        user_id: None,
        auth_time: None,
        csrf: "csrf".into(),
        ..AuthRequest::new(
            LoginKind::Device {
                client_id: "app".into(),
                scope: ScopeSet::parse("openid").unwrap(),
                device_code_hash: TokenHash::of("device"),
            },
            TokenHash::of("browser"),
            100,
            200,
        )
    };
    store.insert_auth_request(&request).await.unwrap();
    assert_eq!(
        store.get_auth_request("req1", 150).await.unwrap(),
        Some(request.clone())
    );
    // Every kind comes back as it went in, with what only that kind has.
    let code_flow = |mode| {
        LoginKind::Authorize(CodeFlow {
            client_id: "app".into(),
            scope: ScopeSet::parse("openid profile").unwrap(),
            redirect_uri: "http://127.0.0.1:5555/cb".into(),
            redirect_uri_given: true,
            // Bytes that are not UTF-8, NUL, `+` and space come back exact on both.
            state: Some(ClientState::from_bytes(b"s\xff\x00 +%")),
            nonce: Some("n".into()),
            code_challenge: "c".repeat(43),
            response_mode: mode,
        })
    };
    for (id, kind) in [
        ("req2", LoginKind::Account),
        ("req6", LoginKind::Admin),
        ("req3", code_flow(ResponseMode::WebMessage)),
        ("req5", code_flow(ResponseMode::FormPost)),
    ] {
        let other = AuthRequest {
            id: id.into(),
            kind,
            login_hint: Some("ann".into()),
            ..request.clone()
        };
        store.insert_auth_request(&other).await.unwrap();
        assert_eq!(store.get_auth_request(id, 150).await.unwrap(), Some(other));
    }
    assert_eq!(
        store.get_auth_request("req1", 250).await.unwrap(),
        None,
        "expired"
    );
    assert!(
        store
            .set_auth_request_user("req1", &user("alice"), 120)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_auth_request("req1", 150)
            .await
            .unwrap()
            .unwrap()
            .user_id
            .as_deref(),
        Some("id-alice")
    );
    assert!(store.take_auth_request("req1").await.unwrap());
    assert!(!store.take_auth_request("req1").await.unwrap());
    // Sign-out ends what the browser had in progress (req2, req3, req5, req6), nobody
    // else's.
    let elsewhere = AuthRequest {
        id: "req4".into(),
        browser_hash: TokenHash::of("another browser"),
        ..request.clone()
    };
    store.insert_auth_request(&elsewhere).await.unwrap();
    assert_eq!(
        store
            .delete_browser_auth_requests(&TokenHash::of("browser"))
            .await
            .unwrap(),
        4
    );
    assert_eq!(store.get_auth_request("req3", 150).await.unwrap(), None);
    assert!(store.get_auth_request("req4", 150).await.unwrap().is_some());
}

/// Sessions: read with their user until they expire; ended one by one or all of a user's.
async fn sessions(store: Arc<dyn Store>) {
    let alice = user("alice");
    store.insert_user(&alice).await.unwrap();
    // Sessions.
    let session = Session {
        id_hash: TokenHash::of("cookie"),
        user_id: "id-alice".into(),
        auth_time: 100,
        created_at: 100,
        expires_at: 500,
        csrf: "c".into(),
        method: "github".into(),
        user_agent: Some("Firefox".into()),
        ip: Some("127.0.0.1".into()),
    };
    store.insert_session(&session).await.unwrap();
    let alice = store.get_user("id-alice").await.unwrap().unwrap();
    assert_eq!(
        store
            .get_session_with_user(&session.id_hash, 200)
            .await
            .unwrap(),
        Some((session.clone(), alice.clone()))
    );
    assert_eq!(
        store
            .get_session_with_user(&session.id_hash, 600)
            .await
            .unwrap(),
        None
    );
    store.delete_session(&session.id_hash).await.unwrap();
    assert_eq!(
        store
            .get_session_with_user(&session.id_hash, 200)
            .await
            .unwrap(),
        None
    );
    store.insert_session(&session).await.unwrap();
    assert_eq!(store.delete_user_sessions("id-alice").await.unwrap(), 1);
}

/// Set-password links: one per account (a new one replaces the old), read with the
/// account, used once (setting the password and ending the sessions in the same
/// transaction), never after expiry, never for a disabled account; expired ones are
/// purged.
async fn password_links(store: Arc<dyn Store>) {
    store.insert_user(&user("alice")).await.unwrap();
    store.insert_user(&user("bob")).await.unwrap();
    let link = |token: &str, user_id: &str, expires_at: i64| PasswordLink {
        token_hash: TokenHash::of(token),
        user_id: user_id.into(),
        created_at: 100,
        expires_at,
    };
    store
        .insert_password_link(&link("first", "id-alice", 500))
        .await
        .unwrap();
    store
        .insert_password_link(&link("second", "id-alice", 500))
        .await
        .unwrap();
    store
        .insert_password_link(&link("bobs", "id-bob", 500))
        .await
        .unwrap();
    let of = |token: &str, at: i64| {
        let store = store.clone();
        let token = token.to_owned();
        async move {
            store
                .password_link_user(&TokenHash::of(&token), at)
                .await
                .unwrap()
                .map(|u| u.username)
        }
    };
    assert_eq!(of("first", 200).await, None, "replaced by the second");
    assert_eq!(of("second", 200).await.as_deref(), Some("alice"));
    assert_eq!(of("second", 500).await, None, "expired");
    let session = Session {
        id_hash: TokenHash::of("cookie"),
        user_id: "id-alice".into(),
        auth_time: 100,
        created_at: 100,
        expires_at: 900,
        csrf: "c".into(),
        method: "password".into(),
        user_agent: None,
        ip: None,
    };
    store.insert_session(&session).await.unwrap();
    let used = |token: &str, at: i64| {
        let store = store.clone();
        let token = token.to_owned();
        async move {
            store
                .use_password_link(
                    &TokenHash::of(&token),
                    "new-hash",
                    at,
                    &AuditEntry::new("user:x".into(), "user.password-set", &token, None, at),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(used("second", 500).await, None, "expired");
    let (alices, ..) = grant("g-alice");
    store.insert_grant(&alices).await.unwrap();
    assert_eq!(used("second", 200).await.as_deref(), Some("id-alice"));
    let revoked = store.get_grant("g-alice").await.unwrap().unwrap();
    assert!(revoked.revoked, "the account's grants are revoked with it");
    let logged = store.list_audit(10, None).await.unwrap();
    assert_eq!(
        logged.len(),
        1,
        "only the use that set the password is logged"
    );
    assert_eq!(logged[0].target, "second");
    assert_eq!(used("second", 200).await, None, "used once");
    let alice = store.get_user("id-alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash.as_deref(), Some("new-hash"));
    assert!(
        store
            .list_user_sessions("id-alice", 200)
            .await
            .unwrap()
            .is_empty()
    );
    // A link of an account disabled since is spent without setting anything.
    store.set_user_disabled("id-bob", true).await.unwrap();
    assert_eq!(used("bobs", 200).await, None);
    assert_eq!(of("bobs", 200).await, None);
    let bob = store.get_user("id-bob").await.unwrap().unwrap();
    assert_ne!(bob.password_hash.as_deref(), Some("new-hash"));
    // Forgotten on request (disabling or revoking the account does it).
    store.set_user_disabled("id-bob", false).await.unwrap();
    store
        .insert_password_link(&link("kept", "id-bob", 500))
        .await
        .unwrap();
    store.delete_password_links("id-bob").await.unwrap();
    assert_eq!(of("kept", 200).await, None);
    store.set_user_disabled("id-bob", true).await.unwrap();
    // Expired links are purged.
    store
        .insert_password_link(&link("late", "id-bob", 300))
        .await
        .unwrap();
    assert!(store.purge_expired(400).await.unwrap() >= 1);
    store.set_user_disabled("id-bob", false).await.unwrap();
    assert_eq!(used("late", 200).await, None, "purged");
}

/// Consent: per user and client, replaced on each approval, read with the user in one trip.
async fn consent(store: Arc<dyn Store>) {
    let alice = user("alice");
    store.insert_user(&alice).await.unwrap();
    // Consent.
    assert_eq!(
        store
            .get_consent(UserClient {
                user_id: "id-alice",
                client_id: "app"
            })
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_user_with_consent(UserClient {
                user_id: "id-alice",
                client_id: "app"
            })
            .await
            .unwrap(),
        Some((alice.clone(), None))
    );
    assert_eq!(
        store
            .get_user_with_consent(UserClient {
                user_id: "id-nobody",
                client_id: "app"
            })
            .await
            .unwrap(),
        None
    );
    let scopes = ScopeSet::parse("openid email").unwrap();
    store
        .put_consent(
            UserClient {
                user_id: "id-alice",
                client_id: "app",
            },
            &scopes,
            1,
        )
        .await
        .unwrap();
    store
        .put_consent(
            UserClient {
                user_id: "id-alice",
                client_id: "app",
            },
            &scopes,
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get_consent(UserClient {
                user_id: "id-alice",
                client_id: "app"
            })
            .await
            .unwrap(),
        Some(scopes.clone())
    );
    assert_eq!(
        store
            .get_user_with_consent(UserClient {
                user_id: "id-alice",
                client_id: "app"
            })
            .await
            .unwrap(),
        Some((alice.clone(), Some(scopes.clone())))
    );
    assert_eq!(
        store
            .get_user_with_consent(UserClient {
                user_id: "id-alice",
                client_id: "other-app"
            })
            .await
            .unwrap(),
        Some((alice.clone(), None)),
        "consent is per client"
    );
}

/// Grants and codes: stored together or not at all; exactly one of many concurrent redemptions wins.
async fn codes(store: Arc<dyn Store>) {
    let alice = user("alice");
    store.insert_user(&alice).await.unwrap();
    // Grants and codes: exactly one of many concurrent redemptions wins.
    let (g, c, code) = grant("g1");
    store.insert_grant_with_code(&g, &c).await.unwrap();
    assert_eq!(store.get_grant("g1").await.unwrap(), Some(g.clone()));
    assert_eq!(
        store.get_grant_with_user("g1").await.unwrap(),
        Some((
            g.clone(),
            store.get_user(&g.user_id).await.unwrap().unwrap()
        ))
    );
    assert_eq!(store.get_grant_with_user("nope").await.unwrap(), None);
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        let hash = code.hash();
        tokio::spawn(async move { store.redeem_code(&hash, 120).await.unwrap() })
    });
    let mut redeemed = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            CodeRedemption::Redeemed(found) => {
                assert_eq!(found, c);
                redeemed += 1;
            }
            CodeRedemption::AlreadyUsed(found) => assert_eq!(found.grant_id, "g1"),
            CodeRedemption::NotFound => panic!("code vanished"),
        }
    }
    assert_eq!(redeemed, 1);

    // A grant and its code are stored together or not at all, and a failed write
    // leaves nothing open behind it: the next write lands and is seen.
    let (clash, mut clash_code, _) = grant("g-clash");
    clash_code.code_hash = c.code_hash.clone();
    assert!(
        store
            .insert_grant_with_code(&clash, &clash_code)
            .await
            .is_err()
    );
    assert_eq!(store.get_grant("g-clash").await.unwrap(), None);
    let (after, after_code, _) = grant("g-after");
    store
        .insert_grant_with_code(&after, &after_code)
        .await
        .unwrap();
    assert_eq!(store.get_grant("g-after").await.unwrap(), Some(after));
    assert_eq!(
        store
            .redeem_code(&TokenHash::of("nope"), 120)
            .await
            .unwrap(),
        CodeRedemption::NotFound
    );
}

/// Refresh tokens: a failed rotation changes nothing; exactly one of concurrent rotations wins and stores its successor.
async fn refresh_rotation(store: Arc<dyn Store>) {
    // Refresh tokens: exactly one concurrent rotation wins.
    let first = RefreshToken {
        token_hash: TokenHash::of("r1"),
        grant_id: "g1".into(),
        created_at: 100,
        expires_at: 1000,
        rotated_at: None,
    };
    store.insert_refresh_token(&first).await.unwrap();
    assert_eq!(
        store.get_refresh_token(&first.token_hash).await.unwrap(),
        Some(first.clone())
    );
    // With its grant and user in one read; not without its grant.
    assert_eq!(
        store
            .get_refresh_token_with_grant(&first.token_hash)
            .await
            .unwrap(),
        None,
        "no grant g1 yet"
    );
    let alice = user("alice");
    store.insert_user(&alice).await.unwrap();
    let (g1, ..) = grant("g1");
    store.insert_grant(&g1).await.unwrap();
    assert_eq!(
        store
            .get_refresh_token_with_grant(&first.token_hash)
            .await
            .unwrap(),
        Some((first.clone(), g1.clone(), alice.clone()))
    );
    assert_eq!(
        store
            .get_refresh_token_with_grant(&TokenHash::of("nope"))
            .await
            .unwrap(),
        None
    );
    // A rotation that cannot store its new token leaves the old one unrotated.
    assert!(
        store
            .rotate_refresh_token(&first.token_hash, &first, 120)
            .await
            .is_err()
    );
    assert_eq!(
        store.get_refresh_token(&first.token_hash).await.unwrap(),
        Some(first.clone())
    );
    let rotations = (0..8).map(|i| {
        let store = store.clone();
        let next = RefreshToken {
            token_hash: TokenHash::of(&format!("r2-{i}")),
            ..first.clone()
        };
        tokio::spawn(async move {
            store
                .rotate_refresh_token(&TokenHash::of("r1"), &next, 130)
                .await
                .unwrap()
        })
    });
    let mut rotated = 0;
    for rotation in rotations {
        rotated += usize::from(rotation.await.unwrap());
    }
    assert_eq!(rotated, 1);
    let mut successors = 0;
    for i in 0..8 {
        let hash = TokenHash::of(&format!("r2-{i}"));
        successors += usize::from(store.get_refresh_token(&hash).await.unwrap().is_some());
    }
    assert_eq!(successors, 1, "only the rotation that won stores its token");
    assert_eq!(
        store
            .get_refresh_token(&first.token_hash)
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(130)
    );
}

/// Grants are revoked one by one, or all of a user's at once.
async fn grant_revocation(store: Arc<dyn Store>) {
    store.insert_user(&user("alice")).await.unwrap();
    let (g1, c1, _) = grant("g1");
    store.insert_grant_with_code(&g1, &c1).await.unwrap();
    let (after, after_code, _) = grant("g-after");
    store
        .insert_grant_with_code(&after, &after_code)
        .await
        .unwrap();
    // Of many callers revoking one grant at once, one revoked it.
    let revocations = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.revoke_grant("g1").await.unwrap() })
    });
    let mut revoked = 0;
    for revocation in revocations {
        revoked += usize::from(revocation.await.unwrap());
    }
    assert_eq!(revoked, 1, "revoked exactly once");
    assert!(store.get_grant("g1").await.unwrap().unwrap().revoked);
    assert!(!store.revoke_grant("unknown").await.unwrap());
    let (g2, c2, _) = grant("g2");
    store.insert_grant_with_code(&g2, &c2).await.unwrap();
    // A grant without a code (a token exchange's) is stored as it is, and revoked with
    // the user's others.
    let (g3, _, _) = grant("g3");
    store.insert_grant(&g3).await.unwrap();
    assert_eq!(store.get_grant("g3").await.unwrap(), Some(g3));
    // g2, g3 and g-after.
    assert_eq!(store.revoke_user_grants("id-alice").await.unwrap(), 3);
    assert!(store.get_grant("g3").await.unwrap().unwrap().revoked);
}

/// Device authorization: user codes are unique; approval and collection happen once.
async fn device_codes(store: Arc<dyn Store>) {
    // Device authorization: user codes are unique; approval and collection happen once.
    let device = DeviceCode {
        device_code_hash: TokenHash::of("dc1"),
        user_code: "BCDFGHJK".into(),
        client_id: "app".into(),
        scope: ScopeSet::parse("openid offline_access").unwrap(),
        created_at: 100,
        expires_at: 700,
        interval: 5,
        last_poll_at: None,
        status: DeviceStatus::Pending,
        grant_id: None,
        challenge_hash: Some(TokenHash::of("challenge")),
    };
    store.insert_device_code(&device).await.unwrap();
    let clash = DeviceCode {
        device_code_hash: TokenHash::of("dc2"),
        ..device.clone()
    };
    assert!(matches!(
        store.insert_device_code(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .find_pending_device_code("BCDFGHJK", 200)
            .await
            .unwrap(),
        Some(device.clone())
    );
    assert_eq!(
        store
            .find_pending_device_code("BCDFGHJK", 800)
            .await
            .unwrap(),
        None,
        "expired"
    );
    // A code claimed with a challenge (the Julia classic flow) is not polled here.
    assert!(
        store
            .poll_device_code(&device.device_code_hash, "app", 210, 5)
            .await
            .unwrap()
            .is_none()
    );
    let polled_code = DeviceCode {
        device_code_hash: TokenHash::of("dc-polled"),
        user_code: "PPPPPPPP".into(),
        challenge_hash: None,
        ..device.clone()
    };
    store.insert_device_code(&polled_code).await.unwrap();
    let hash = &polled_code.device_code_hash;
    let poll = |client: &'static str, at: i64| {
        let store = store.clone();
        let hash = hash.clone();
        async move {
            store
                .poll_device_code(&hash, client, at, 5)
                .await
                .unwrap()
                .map(|(d, too_soon)| (d.last_poll_at, d.interval, too_soon))
        }
    };
    // The first poll, then one in time, then one too soon (the interval grows by the
    // step), then one too soon for the new interval.
    assert_eq!(poll("app", 200).await, Some((Some(200), 5, false)));
    assert_eq!(poll("app", 205).await, Some((Some(205), 5, false)));
    assert_eq!(poll("app", 207).await, Some((Some(207), 10, true)));
    assert_eq!(poll("app", 215).await, Some((Some(215), 15, true)));
    assert_eq!(poll("app", 230).await, Some((Some(230), 15, false)));
    // Another client's poll, or one after expiry, records nothing.
    assert_eq!(poll("other", 231).await, None);
    assert_eq!(poll("app", 701).await, None);
    let polled = store.get_device_code(hash).await.unwrap().unwrap();
    assert_eq!((polled.last_poll_at, polled.interval), (Some(230), 15));
    assert!(
        !store
            .consume_device_code(&device.device_code_hash)
            .await
            .unwrap(),
        "not approved yet"
    );
    let (g3, _, _) = grant("g3");
    assert!(
        store
            .approve_device_code(&device.device_code_hash, &g3)
            .await
            .unwrap()
    );
    assert!(
        !store
            .approve_device_code(&device.device_code_hash, &g3)
            .await
            .unwrap(),
        "approved once"
    );
    assert!(
        !store
            .deny_device_code(&device.device_code_hash)
            .await
            .unwrap(),
        "no longer pending"
    );
    assert_eq!(
        store.get_grant("g3").await.unwrap().unwrap().client_id,
        "app"
    );
    assert_eq!(
        store
            .find_pending_device_code("BCDFGHJK", 200)
            .await
            .unwrap(),
        None
    );
    let collections = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .consume_device_code(&TokenHash::of("dc1"))
                .await
                .unwrap()
        })
    });
    let mut collected = 0;
    for collection in collections {
        collected += usize::from(collection.await.unwrap());
    }
    assert_eq!(collected, 1);
    let denied = DeviceCode {
        device_code_hash: TokenHash::of("dc3"),
        user_code: "ZZZZZZZZ".into(),
        ..device.clone()
    };
    store.insert_device_code(&denied).await.unwrap();
    assert!(
        store
            .deny_device_code(&denied.device_code_hash)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_device_code(&denied.device_code_hash)
            .await
            .unwrap()
            .unwrap()
            .status,
        DeviceStatus::Denied
    );
}

/// Revoked access token ids are remembered (recording one twice is fine).
async fn access_token_revocation(store: Arc<dyn Store>) {
    // Access token revocation.
    assert!(!store.is_jti_revoked("j1").await.unwrap());
    store.revoke_jti("j1", 1000).await.unwrap();
    store.revoke_jti("j1", 1000).await.unwrap();
    assert!(store.is_jti_revoked("j1").await.unwrap());
}

/// Signing keys: adding one retires the previous key of the same algorithm; retired keys are deleted after a while.
async fn signing_keys(store: Arc<dyn Store>) {
    // Signing keys: adding one retires the previous key of the same algorithm.
    let key = |kid: &str, alg, created_at| StoredKey {
        kid: kid.into(),
        alg,
        private_der: "cHJpdmF0ZQ".into(),
        public_jwk: "{}".into(),
        created_at,
        retired_at: None,
    };
    store
        .add_key_retiring_others(&key("k1", SigningAlg::ES256, 1), 1)
        .await
        .unwrap();
    store
        .add_key_retiring_others(&key("r1", SigningAlg::RS256, 1), 1)
        .await
        .unwrap();
    store
        .add_key_retiring_others(&key("k2", SigningAlg::ES256, 2), 2)
        .await
        .unwrap();
    let keys = store.list_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k2", "k1", "r1"]
    );
    assert_eq!(keys[1].retired_at, Some(2));
    assert_eq!(keys[2].retired_at, None);
    assert_eq!(store.delete_keys_retired_before(3).await.unwrap(), 1);
}

/// The housekeeping purge removes what expired and keeps the rest.
async fn purge(store: Arc<dyn Store>) {
    store.insert_client(&client("app")).await.unwrap();
    store.insert_user(&user("alice")).await.unwrap();
    let (g1, c1, _) = grant("g1");
    store.insert_grant_with_code(&g1, &c1).await.unwrap();
    let first = RefreshToken {
        token_hash: TokenHash::of("r1"),
        grant_id: "g1".into(),
        created_at: 100,
        expires_at: 1000,
        rotated_at: None,
    };
    store.insert_refresh_token(&first).await.unwrap();
    // Purge removes what expired and keeps the rest.
    assert!(store.purge_expired(100_000).await.unwrap() > 0);
    assert_eq!(store.get_grant("g1").await.unwrap(), None);
    assert_eq!(
        store.get_refresh_token(&first.token_hash).await.unwrap(),
        None
    );
    assert!(store.get_client("app").await.unwrap().is_some());

    // Many expired grants (more than a few of the purge's batches), each with a code and
    // a refresh token, among grants still alive: every expired one goes with what names
    // it, the live ones stay whole, and nothing is left naming a grant that is gone.
    const EXPIRED: usize = 1_234;
    for i in 0..EXPIRED + 10 {
        let (mut g, mut c, _) = grant(&format!("many-{i}"));
        let alive = i >= EXPIRED;
        g.expires_at = if alive { 200_000 } else { 50_000 };
        // Codes are kept a day past their expiry, unless their grant goes.
        c.expires_at = 99_000;
        store.insert_grant_with_code(&g, &c).await.unwrap();
        let mut token = refresh_token(&format!("many-{i}"), &g.id);
        token.expires_at = g.expires_at;
        store.insert_refresh_token(&token).await.unwrap();
    }
    let purged = store.purge_expired(100_000).await.unwrap();
    assert_eq!(
        purged,
        3 * EXPIRED as u64,
        "grant, code and refresh token each"
    );
    for i in [0, 499, 500, 501, EXPIRED - 1] {
        assert_eq!(store.get_grant(&format!("many-{i}")).await.unwrap(), None);
        let token = TokenHash::of(&format!("many-{i}"));
        assert_eq!(store.get_refresh_token(&token).await.unwrap(), None);
    }
    for i in EXPIRED..EXPIRED + 10 {
        assert!(
            store
                .get_grant(&format!("many-{i}"))
                .await
                .unwrap()
                .is_some()
        );
        let token = TokenHash::of(&format!("many-{i}"));
        assert!(store.get_refresh_token(&token).await.unwrap().is_some());
    }
    let consistency = store.check_consistency(100_000).await.unwrap();
    assert_eq!(consistency.problems, vec![], "{consistency:?}");
    assert_eq!(consistency.checked.grants, 10);
    assert_eq!(consistency.checked.refresh_tokens, 10);
    assert_eq!(consistency.checked.auth_codes, 10);
    assert_eq!(
        store.purge_expired(100_000).await.unwrap(),
        0,
        "nothing left"
    );
}

/// Identities, sign-ins at providers, and what the account page reads and changes.
/// Throttles: back-off doubles up to its cap, is forgotten after a quiet spell, and
/// gates parallel attempts atomically; server secrets are stored once.
async fn throttles(store: Arc<dyn Store>) {
    let _turn = HEAVY_WRITES.lock().await;
    use crate::domain::{ThrottleAttempt, ThrottlePolicy};
    let policy = ThrottlePolicy {
        free: 3,
        first_delay: 2,
        max_delay: 8,
        forget_after: 100,
    };
    let key = TokenHash::of("throttle-test");
    let attempt = |at: i64| {
        let (store, key) = (store.clone(), key.clone());
        async move { store.throttle_attempt(&key, &policy, at).await.unwrap() }
    };
    use ThrottleAttempt::{Allowed, Refused};
    for _ in 0..3 {
        assert_eq!(attempt(1000).await, Allowed);
    }
    // The third attempt made the next one wait 2 s; a refused attempt changes nothing.
    assert_eq!(attempt(1000).await, Refused { retry_after: 2 });
    assert_eq!(attempt(1001).await, Refused { retry_after: 1 });
    assert_eq!(attempt(1002).await, Allowed);
    assert_eq!(attempt(1005).await, Refused { retry_after: 1 });
    assert_eq!(attempt(1006).await, Allowed);
    assert_eq!(attempt(1013).await, Refused { retry_after: 1 });
    assert_eq!(attempt(1014).await, Allowed);
    assert_eq!(
        attempt(1021).await,
        Refused { retry_after: 1 },
        "capped at 8 s"
    );
    // After a quiet spell longer than forget_after, the count starts over.
    for _ in 0..3 {
        assert_eq!(attempt(1200).await, Allowed);
    }
    assert_eq!(attempt(1200).await, Refused { retry_after: 2 });
    // Taking attempts back, and forgetting a key.
    store.throttle_clear(&key).await.unwrap();
    assert_eq!(attempt(1200).await, Allowed);
    assert_eq!(attempt(1200).await, Allowed);
    store.throttle_undo(&key).await.unwrap();
    assert_eq!(
        attempt(1200).await,
        Allowed,
        "the undone attempt is free again"
    );
    assert_eq!(attempt(1200).await, Allowed);
    assert_eq!(attempt(1200).await, Refused { retry_after: 2 });

    // 50 parallel attempts on a fresh key: exactly `free` pass.
    let racing = TokenHash::of("throttle-race");
    let policy = ThrottlePolicy {
        free: 5,
        first_delay: 60,
        max_delay: 600,
        forget_after: 3600,
    };
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, key) = (store.clone(), racing.clone());
            tokio::spawn(async move { store.throttle_attempt(&key, &policy, 5000).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() == Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);

    // 10,000 device codes nobody finished (what anyone can make the server store)
    // are gone after one housekeeping pass.
    for i in 0..10_000 {
        let code = crate::domain::DeviceCode {
            device_code_hash: TokenHash::of(&format!("flood-{i}")),
            user_code: format!("FLOOD{i:05}"),
            client_id: "cli".into(),
            scope: ScopeSet::default(),
            created_at: 100,
            expires_at: 700,
            interval: 5,
            last_poll_at: None,
            status: crate::domain::DeviceStatus::Pending,
            grant_id: None,
            challenge_hash: None,
        };
        store.insert_device_code(&code).await.unwrap();
    }
    // Kept an hour past expiry (a late poll hears expired_token), then gone.
    store.purge_expired(701).await.unwrap();
    assert!(
        store
            .get_device_code(&TokenHash::of("flood-0"))
            .await
            .unwrap()
            .is_some()
    );
    store.purge_expired(700 + 3601).await.unwrap();
    for i in [0, 4_999, 9_999] {
        assert_eq!(
            store
                .get_device_code(&TokenHash::of(&format!("flood-{i}")))
                .await
                .unwrap(),
            None
        );
    }

    // Throttles quiet for a day are purged.
    store.purge_expired(5000 + 86_401).await.unwrap();
    assert_eq!(
        store
            .throttle_attempt(&racing, &policy, 5000 + 86_401)
            .await
            .unwrap(),
        Allowed
    );

    // A secret is stored once; later candidates are ignored.
    let first = store.get_or_insert_secret("s", "one", 1).await.unwrap();
    let second = store.get_or_insert_secret("s", "two", 2).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
}

async fn accounts(store: Arc<dyn Store>) {
    let mut alice = user("alice");
    alice.password_hash = None;
    alice.email_verified = false;
    let identity = |connector: &str, subject: &str, user_id: &str| Identity {
        connector_id: connector.into(),
        subject: subject.into(),
        user_id: user_id.into(),
        email: Some("Alice@Example.com".into()),
        email_verified: true,
        name: Some("Alice".into()),
        username: Some("alice".into()),
        groups: vec!["acme".into(), "acme:ops".into()],
        created_at: 10,
        last_login_at: 10,
        groups_confirmed_at: 9,
    };

    // An account and its first identity arrive together, or not at all.
    let github = identity("github", "42", "id-alice");
    store
        .insert_user_with_identity(&alice, &github)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_identity(IdentityKey {
                connector_id: "github",
                subject: "42"
            })
            .await
            .unwrap(),
        Some(github.clone())
    );
    let clash = User {
        id: "id-other".into(),
        ..alice.clone()
    };
    assert!(matches!(
        store.insert_user_with_identity(&clash, &identity("github", "43", "id-other")).await,
        Err(StoreError::Conflict(what)) if what.starts_with("user")
    ));
    assert_eq!(
        store
            .get_identity(IdentityKey {
                connector_id: "github",
                subject: "43"
            })
            .await
            .unwrap(),
        None,
        "rolled back"
    );
    let bob = user("bob");
    assert!(matches!(
        store
            .insert_user_with_identity(&bob, &identity("github", "42", "id-bob"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_user("id-bob").await.unwrap(), None, "rolled back");

    // Linking: one holder per identity.
    let corp = Identity {
        created_at: 11,
        ..identity("corp", "sub-1", "id-alice")
    };
    store.insert_identity(&corp).await.unwrap();
    assert!(matches!(
        store
            .insert_identity(&identity("corp", "sub-1", "id-bob"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut updated = corp.clone();
    updated.groups = vec![];
    updated.last_login_at = 20;
    updated.groups_confirmed_at = 20;
    updated.name = None;
    assert!(store.update_identity(&updated).await.unwrap());
    assert_eq!(
        store.list_identities("id-alice").await.unwrap(),
        vec![github.clone(), updated]
    );

    // Addresses compare without case, and only verified ones.
    store.insert_user(&bob).await.unwrap();
    let found = store
        .find_users_by_verified_email("BOB@example.COM")
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["id-bob"]
    );
    assert!(
        store
            .find_users_by_verified_email("alice@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    // Unlinking never removes the last way in.
    assert_eq!(
        store
            .delete_identity(
                "id-alice",
                IdentityKey {
                    connector_id: "corp",
                    subject: "nope"
                },
                false
            )
            .await
            .unwrap(),
        Unlink::NotFound
    );
    assert_eq!(
        store
            .delete_identity(
                "id-nobody",
                IdentityKey {
                    connector_id: "corp",
                    subject: "sub-1"
                },
                false
            )
            .await
            .unwrap(),
        Unlink::NotFound
    );
    assert_eq!(
        store
            .delete_identity(
                "id-bob",
                IdentityKey {
                    connector_id: "corp",
                    subject: "sub-1"
                },
                false
            )
            .await
            .unwrap(),
        Unlink::NotFound
    );
    assert_eq!(
        store
            .delete_identity(
                "id-alice",
                IdentityKey {
                    connector_id: "corp",
                    subject: "sub-1"
                },
                false
            )
            .await
            .unwrap(),
        Unlink::Done
    );
    assert_eq!(
        store
            .delete_identity(
                "id-alice",
                IdentityKey {
                    connector_id: "github",
                    subject: "42"
                },
                true
            )
            .await
            .unwrap(),
        Unlink::LastSignInMethod,
        "alice has no password"
    );
    store
        .insert_identity(&identity("github", "7", "id-bob"))
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_identity(
                "id-bob",
                IdentityKey {
                    connector_id: "github",
                    subject: "7"
                },
                false
            )
            .await
            .unwrap(),
        Unlink::LastSignInMethod,
        "passwords do not count"
    );
    assert_eq!(
        store
            .delete_identity(
                "id-bob",
                IdentityKey {
                    connector_id: "github",
                    subject: "7"
                },
                true
            )
            .await
            .unwrap(),
        Unlink::Done
    );

    // A sign-in at a provider is taken once, and not after it expired.
    let login = ConnectorLogin {
        state_hash: TokenHash::of("state"),
        connector_id: "corp".into(),
        purpose: ConnectorPurpose::Login("req9".into()),
        browser_hash: TokenHash::of("browser"),
        nonce: Some("n".into()),
        code_verifier: Some("v".repeat(43)),
        email: None,
        created_at: 100,
        expires_at: 200,
    };
    store.insert_connector_login(&login).await.unwrap();
    assert_eq!(
        store
            .take_connector_login(&login.state_hash, 150)
            .await
            .unwrap(),
        Some(login.clone())
    );
    assert_eq!(
        store
            .take_connector_login(&login.state_hash, 150)
            .await
            .unwrap(),
        None
    );
    let link = ConnectorLogin {
        state_hash: TokenHash::of("mailed"),
        purpose: ConnectorPurpose::Link("id-alice".into()),
        nonce: None,
        code_verifier: None,
        email: Some("alice@example.com".into()),
        ..login.clone()
    };
    store.insert_connector_login(&link).await.unwrap();
    assert_eq!(
        store
            .take_connector_login(&link.state_hash, 250)
            .await
            .unwrap(),
        None,
        "expired"
    );
    store
        .insert_connector_login(&ConnectorLogin {
            state_hash: TokenHash::of("old"),
            ..link.clone()
        })
        .await
        .unwrap();
    store.purge_expired(1_000).await.unwrap();
    assert_eq!(
        store
            .take_connector_login(&TokenHash::of("old"), 150)
            .await
            .unwrap(),
        None,
        "purged"
    );

    // Sessions of a user, and ending one of them.
    for (cookie, created) in [("s1", 100), ("s2", 200)] {
        store
            .insert_session(&Session {
                id_hash: TokenHash::of(cookie),
                user_id: "id-alice".into(),
                auth_time: created,
                created_at: created,
                expires_at: 5_000,
                csrf: "c".into(),
                method: "corp".into(),
                user_agent: None,
                ip: None,
            })
            .await
            .unwrap();
    }
    let sessions = store.list_user_sessions("id-alice", 300).await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| s.created_at).collect::<Vec<_>>(),
        [200, 100]
    );
    assert!(
        !store
            .delete_user_session("id-bob", &TokenHash::of("s1"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_user_session("id-alice", &TokenHash::of("s1"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .list_user_sessions("id-alice", 300)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .list_user_sessions("id-alice", 6_000)
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );

    // Authorised applications, and revoking one.
    let (mut g, c, _) = grant("g-app");
    g.expires_at = 50_000;
    store.insert_grant_with_code(&g, &c).await.unwrap();
    let (mut other, c2, _) = grant("g-other");
    other.client_id = "other".into();
    other.expires_at = 50_000;
    store
        .insert_grant_with_code(
            &other,
            &AuthCode {
                client_id: "other".into(),
                ..c2
            },
        )
        .await
        .unwrap();
    store
        .put_consent(
            UserClient {
                user_id: "id-alice",
                client_id: "app",
            },
            &ScopeSet::parse("openid").unwrap(),
            5,
        )
        .await
        .unwrap();
    assert_eq!(
        store.list_user_grants("id-alice", 300).await.unwrap().len(),
        2
    );
    assert_eq!(store.list_user_consents("id-alice").await.unwrap().len(), 1);
    assert_eq!(
        store
            .revoke_user_client(UserClient {
                user_id: "id-alice",
                client_id: "app"
            })
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .revoke_user_client(UserClient {
                user_id: "id-alice",
                client_id: "app"
            })
            .await
            .unwrap(),
        0
    );
    let left = store.list_user_grants("id-alice", 300).await.unwrap();
    assert_eq!(
        left.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["g-other"]
    );
    assert!(
        store
            .list_user_consents("id-alice")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_grant("g-app").await.unwrap().unwrap().revoked);
}

/// Runs `sql` on the database at `url` behind the store's back: the half-written
/// states no write of keyward leaves, made on purpose.
async fn behind_its_back(url: &str, sql: &str) {
    match crate::config::DatabaseKind::of(url) {
        Some(crate::config::DatabaseKind::Sqlite) => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Some(crate::config::DatabaseKind::Postgres) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => panic!("not a database URL"),
    }
}

/// A refresh token of grant `grant_id`, never rotated.
fn refresh_token(name: &str, grant_id: &str) -> RefreshToken {
    RefreshToken {
        token_hash: TokenHash::of(name),
        grant_id: grant_id.into(),
        created_at: 100,
        expires_at: 10_000,
        rotated_at: None,
    }
}

/// A device authorization of client "app", pending.
fn device_code(name: &str, user_code: &str) -> DeviceCode {
    DeviceCode {
        device_code_hash: TokenHash::of(name),
        user_code: user_code.into(),
        client_id: "app".into(),
        scope: ScopeSet::parse("openid").unwrap(),
        created_at: 100,
        expires_at: 700,
        interval: 5,
        last_poll_at: None,
        status: DeviceStatus::Pending,
        grant_id: None,
        challenge_hash: None,
    }
}

/// The consistency check: every state keyward's writes leave (rotated chains, a
/// revoked grant, a grant without a code, device authorizations at each step, and what
/// purge leaves) passes; each kind of half-written state, made on purpose, is found
/// and named by its ids (never by token material).
async fn consistency(store: Arc<dyn Store>, url: &str) {
    const NOW: i64 = 200;
    let check = async || store.check_consistency(NOW).await.unwrap();
    assert_eq!(check().await.problems, [], "an empty store");

    // What keyward writes: a chain rotated twice.
    store.insert_client(&client("app")).await.unwrap();
    store.insert_client(&client("other")).await.unwrap();
    store.insert_user(&user("alice")).await.unwrap();
    let (chain, chain_code, code) = grant("g-chain");
    store
        .insert_grant_with_code(&chain, &chain_code)
        .await
        .unwrap();
    assert!(matches!(
        store.redeem_code(&code.hash(), 120).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    store
        .insert_refresh_token(&refresh_token("r0", "g-chain"))
        .await
        .unwrap();
    for (old, new) in [("r0", "r1"), ("r1", "r2")] {
        assert!(
            store
                .rotate_refresh_token(&TokenHash::of(old), &refresh_token(new, "g-chain"), 130)
                .await
                .unwrap()
        );
    }
    // A grant revoked after a reuse; a grant with no code (a token exchange's); a
    // grant whose code was never redeemed.
    let (revoked, revoked_code, _) = grant("g-revoked");
    store
        .insert_grant_with_code(&revoked, &revoked_code)
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh_token("rv0", "g-revoked"))
        .await
        .unwrap();
    assert!(
        store
            .rotate_refresh_token(
                &TokenHash::of("rv0"),
                &refresh_token("rv1", "g-revoked"),
                130
            )
            .await
            .unwrap()
    );
    assert!(store.revoke_grant("g-revoked").await.unwrap());
    store.insert_grant(&grant("g-exchange").0).await.unwrap();
    let (unredeemed, unredeemed_code, _) = grant("g-unredeemed");
    store
        .insert_grant_with_code(&unredeemed, &unredeemed_code)
        .await
        .unwrap();
    // Device authorizations: pending, denied, approved, collected.
    for (name, user_code) in [("d-pending", "BBBBBBBB"), ("d-denied", "CCCCCCCC")] {
        store
            .insert_device_code(&device_code(name, user_code))
            .await
            .unwrap();
    }
    assert!(
        store
            .deny_device_code(&TokenHash::of("d-denied"))
            .await
            .unwrap()
    );
    for (name, user_code, grant_id) in [
        ("d-approved", "DDDDDDDD", "g-approved"),
        ("d-used", "FFFFFFFF", "g-device"),
    ] {
        store
            .insert_device_code(&device_code(name, user_code))
            .await
            .unwrap();
        assert!(
            store
                .approve_device_code(&TokenHash::of(name), &grant(grant_id).0)
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .consume_device_code(&TokenHash::of("d-used"))
            .await
            .unwrap()
    );
    store
        .insert_refresh_token(&refresh_token("rd0", "g-device"))
        .await
        .unwrap();
    // A grant that expires before its code does, and the purge that removes it.
    let (short, short_code, _) = grant("g-short");
    let short = Grant {
        expires_at: 150,
        ..short
    };
    store
        .insert_grant_with_code(&short, &short_code)
        .await
        .unwrap();
    assert!(store.purge_expired(NOW).await.unwrap() > 0);
    assert_eq!(store.get_grant("g-short").await.unwrap(), None);
    let consistent = check().await;
    assert_eq!(consistent.problems, [], "what keyward writes is consistent");
    assert_eq!(
        (
            consistent.checked.users,
            consistent.checked.clients,
            consistent.checked.grants,
            consistent.checked.refresh_tokens,
            consistent.checked.auth_codes,
            consistent.checked.device_codes,
        ),
        (1, 2, 6, 6, 3, 4)
    );

    // Each kind of breakage, on records of its own; the check finds exactly it.
    let mut found = Vec::new();
    let mut expect = async |what: &str, expected: Vec<Inconsistency>| {
        let problems = check().await.problems;
        let new: Vec<_> = problems
            .iter()
            .filter(|p| !found.contains(*p))
            .cloned()
            .collect();
        assert_eq!(new, expected, "{what}");
        assert_eq!(problems.len(), found.len() + expected.len(), "{what}");
        found = problems;
    };

    // A grant that never landed while its code and first refresh token did.
    let (lost, lost_code, _) = grant("g-lost");
    store
        .insert_grant_with_code(&lost, &lost_code)
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh_token("rl0", "g-lost"))
        .await
        .unwrap();
    behind_its_back(url, "DELETE FROM grants WHERE id = 'g-lost'").await;
    expect(
        "grant lost",
        vec![
            Inconsistency::RefreshTokensWithoutGrant {
                grant_id: "g-lost".into(),
                count: 1,
            },
            Inconsistency::CodesWithoutGrant {
                grant_id: "g-lost".into(),
                count: 1,
            },
        ],
    )
    .await;

    // A rotation that marked the old token and lost its successor: the chain is cut.
    let (cut, cut_code, _) = grant("g-cut");
    store.insert_grant_with_code(&cut, &cut_code).await.unwrap();
    store
        .insert_refresh_token(&refresh_token("rc0", "g-cut"))
        .await
        .unwrap();
    behind_its_back(
        url,
        "UPDATE refresh_tokens SET rotated_at = 130 WHERE grant_id = 'g-cut'",
    )
    .await;
    expect(
        "rotation half-written",
        vec![Inconsistency::CutChain {
            grant_id: "g-cut".into(),
        }],
    )
    .await;

    // Two live tokens in one chain: a fork.
    let (fork, fork_code, _) = grant("g-fork");
    store
        .insert_grant_with_code(&fork, &fork_code)
        .await
        .unwrap();
    for name in ["rf0", "rf1"] {
        store
            .insert_refresh_token(&refresh_token(name, "g-fork"))
            .await
            .unwrap();
    }
    expect(
        "forked chain",
        vec![Inconsistency::ForkedChain {
            grant_id: "g-fork".into(),
            live: 2,
        }],
    )
    .await;

    // A code that says it belongs to another client than its grant.
    let (mixed, mixed_code, _) = grant("g-mixed");
    store
        .insert_grant_with_code(&mixed, &mixed_code)
        .await
        .unwrap();
    behind_its_back(
        url,
        "UPDATE auth_codes SET client_id = 'other' WHERE grant_id = 'g-mixed'",
    )
    .await;
    expect(
        "code of another client",
        vec![Inconsistency::CodesOfAnotherClient {
            grant_id: "g-mixed".into(),
            count: 1,
        }],
    )
    .await;

    // An approval whose grant never landed, and one that lost its grant's id.
    for (name, user_code, grant_id) in [
        ("d-lost", "GGGGGGGG", "g-device-lost"),
        ("d-bare", "HHHHHHHH", "g-device-bare"),
    ] {
        store
            .insert_device_code(&device_code(name, user_code))
            .await
            .unwrap();
        assert!(
            store
                .approve_device_code(&TokenHash::of(name), &grant(grant_id).0)
                .await
                .unwrap()
        );
    }
    behind_its_back(url, "DELETE FROM grants WHERE id = 'g-device-lost'").await;
    expect(
        "device approval without its grant",
        vec![Inconsistency::DeviceCodesWithoutGrant {
            grant_id: "g-device-lost".into(),
            count: 1,
        }],
    )
    .await;
    behind_its_back(
        url,
        "UPDATE device_codes SET grant_id = NULL WHERE grant_id = 'g-device-bare'",
    )
    .await;
    expect(
        "device approval naming no grant",
        vec![Inconsistency::DeviceCodesInBadState {
            status: "approved".into(),
            count: 1,
        }],
    )
    .await;

    // A user lost with their grant, session, identity and consent left behind.
    store.insert_user(&user("carol")).await.unwrap();
    let carol = Grant {
        user_id: "id-carol".into(),
        ..grant("g-carol").0
    };
    store.insert_grant(&carol).await.unwrap();
    store
        .insert_session(&Session {
            id_hash: TokenHash::of("carol-cookie"),
            user_id: "id-carol".into(),
            auth_time: 100,
            created_at: 100,
            expires_at: 500,
            csrf: "c".into(),
            method: "password".into(),
            user_agent: None,
            ip: None,
        })
        .await
        .unwrap();
    store
        .insert_identity(&Identity {
            connector_id: "github".into(),
            subject: "carol-at-github".into(),
            user_id: "id-carol".into(),
            email: None,
            email_verified: false,
            name: None,
            username: None,
            groups: vec![],
            created_at: 100,
            last_login_at: 100,
            groups_confirmed_at: 100,
        })
        .await
        .unwrap();
    let carol_at_app = UserClient {
        user_id: "id-carol",
        client_id: "app",
    };
    store
        .put_consent(carol_at_app, &ScopeSet::parse("openid").unwrap(), 100)
        .await
        .unwrap();
    behind_its_back(url, "DELETE FROM users WHERE id = 'id-carol'").await;
    expect(
        "user lost",
        vec![
            Inconsistency::GrantWithoutUser {
                grant_id: "g-carol".into(),
                user_id: "id-carol".into(),
            },
            Inconsistency::SessionsWithoutUser {
                user_id: "id-carol".into(),
                count: 1,
            },
            Inconsistency::IdentitiesWithoutUser {
                user_id: "id-carol".into(),
                count: 1,
            },
            Inconsistency::ConsentsWithoutUser {
                user_id: "id-carol".into(),
                count: 1,
            },
        ],
    )
    .await;

    // A client lost with a grant and a consent left behind.
    store.insert_client(&client("gone")).await.unwrap();
    let gone = Grant {
        client_id: "gone".into(),
        ..grant("g-gone").0
    };
    store.insert_grant(&gone).await.unwrap();
    let alice_at_gone = UserClient {
        user_id: "id-alice",
        client_id: "gone",
    };
    store
        .put_consent(alice_at_gone, &ScopeSet::parse("openid").unwrap(), 100)
        .await
        .unwrap();
    behind_its_back(url, "DELETE FROM clients WHERE client_id = 'gone'").await;
    expect(
        "client lost",
        vec![
            Inconsistency::GrantWithoutClient {
                grant_id: "g-gone".into(),
                client_id: "gone".into(),
            },
            Inconsistency::ConsentsWithoutClient {
                client_id: "gone".into(),
                count: 1,
            },
        ],
    )
    .await;

    // What is reported names ids, never a token's hash.
    let report: String = check()
        .await
        .problems
        .iter()
        .map(|p| format!("{p}\n"))
        .collect();
    for token in [
        "rl0",
        "rc0",
        "rf0",
        "rf1",
        "d-lost",
        "d-bare",
        "carol-cookie",
    ] {
        assert!(!report.contains(TokenHash::of(token).as_str()), "{report}");
    }
}

/// Two stores on one database, as two replicas (or a server and a `keyward client`
/// command) are: each keeps the clients in memory ([`super::cache`]). A change made
/// through one is seen by it at once and by the other within its polling interval; a
/// client removed stops being found everywhere. Before the counter, the other replica
/// kept serving its copy.
async fn client_changes_reach_every_replica(url: &str) {
    let a = super::open(url).await.unwrap();
    let b = super::open(url).await.unwrap();
    let settle = super::cache::POLL_EVERY * 4;
    // Both trust their caches once they have polled.
    tokio::time::sleep(settle).await;
    a.insert_client(&client("shared")).await.unwrap();
    tokio::time::sleep(settle).await;
    assert!(a.get_client("shared").await.unwrap().is_some());
    assert!(b.get_client("shared").await.unwrap().is_some());
    // Read again: now from memory on both.
    assert!(b.get_client("shared").await.unwrap().is_some());

    // Changed through b: b at once, a within the interval.
    let mut changed = client("shared");
    changed.scopes = ScopeSet::parse("openid profile").unwrap();
    b.upsert_client(&changed).await.unwrap();
    assert_eq!(
        b.get_client("shared").await.unwrap().unwrap().scopes,
        changed.scopes
    );
    tokio::time::sleep(settle).await;
    assert_eq!(
        a.get_client("shared").await.unwrap().unwrap().scopes,
        changed.scopes
    );

    // Removed through b: gone from a within the interval.
    assert!(a.get_client("shared").await.unwrap().is_some());
    assert!(b.delete_client("shared").await.unwrap());
    assert!(b.get_client("shared").await.unwrap().is_none());
    tokio::time::sleep(settle).await;
    assert!(
        a.get_client("shared").await.unwrap().is_none(),
        "a removed client is still served from memory"
    );

    // An unknown id, asked for many times, is not remembered.
    for i in 0..100 {
        assert!(
            a.get_client(&format!("nobody-{i}"))
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn client_changes_reach_every_replica_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "keyward-store-{}",
        keyward_proto::secret::random_urlsafe(9)
    ));
    let url = format!("sqlite://{}/keyward.db", dir.display());
    client_changes_reach_every_replica(&url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn client_changes_reach_every_replica_on_postgres() {
    if let Some(url) = postgres_url().await {
        client_changes_reach_every_replica(&url).await;
    }
}

#[tokio::test]
async fn consistency_check_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "keyward-store-{}",
        keyward_proto::secret::random_urlsafe(9)
    ));
    let url = format!("sqlite://{}/keyward.db", dir.display());
    let store = super::open(&url).await.unwrap();
    consistency(store, &url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn consistency_check_on_postgres() {
    if let Some(url) = postgres_url().await {
        let store = super::open(&url).await.unwrap();
        consistency(store, &url).await;
    }
}

/// Attack: a local user reading the database (password hashes, signing keys). Before
/// the fix its directory and files were made with the umask (0755, 0644): readable by
/// everyone on the machine. Now the directory keyward creates is 0700 and the files
/// 0600, and a database left readable by an older version is tightened at start.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_private_to_keywards_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let (store, dir) = sqlite_store().await;
    // A write, so that the log exists.
    store.revoke_jti("j", 1).await.unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let db_dir = dir.join("nested");
    assert_eq!(mode(&db_dir), 0o700, "the directory");
    assert_eq!(mode(&db_dir.join("keyward.db")), 0o600);
    assert_eq!(mode(&db_dir.join("keyward.db-wal")), 0o600);
    drop(store);
    // An older, world-readable database is made private when opened.
    std::fs::set_permissions(
        db_dir.join("keyward.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let url = format!("sqlite://{}/keyward.db", db_dir.display());
    let _store = super::open(&url).await.unwrap();
    assert_eq!(mode(&db_dir.join("keyward.db")), 0o600);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sqlite_reopens_an_existing_database() {
    let (store, dir) = sqlite_store().await;
    store.insert_user(&user("alice")).await.unwrap();
    drop(store);
    let url = format!("sqlite://{}/nested/keyward.db", dir.display());
    let again = super::open(&url).await.unwrap();
    assert!(again.get_user("id-alice").await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(dir);
}

/// Tests that write thousands of rows take turns, so that one's load does not starve
/// another's background work on a two-core runner (the log test measures the
/// checkpointer keeping up).
static HEAVY_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Under steady writes the write-ahead log starts over instead of growing without
/// end: 12,000 writes would leave well over 100 MiB of log otherwise. The bound holds
/// even when the background checkpointer is starved (the writer's own backstop), and
/// the log file must exist: a missing one is a store not in WAL mode, not a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_stays_bounded_under_steady_writes() {
    let _turn = HEAVY_WRITES.lock().await;
    let (store, dir) = sqlite_store().await;
    let (g, c, _) = grant("g-log");
    store.insert_grant_with_code(&g, &c).await.unwrap();
    for i in 0..12_000 {
        let token = RefreshToken {
            token_hash: TokenHash::of(&format!("token-{i}")),
            grant_id: "g-log".into(),
            created_at: 100,
            expires_at: 10_000,
            rotated_at: None,
        };
        store.insert_refresh_token(&token).await.unwrap();
    }
    let wal = dir.join("nested/keyward.db-wal");
    let size = std::fs::metadata(&wal)
        .expect("the -wal file exists while the store is open")
        .len();
    assert!(size > 0, "the log was written to");
    assert!(size < 48 << 20, "the log is {} MiB", size >> 20);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// One test per clause, for each backend: a failing clause does not hide the others.
macro_rules! contract_tests {
    ($($clause:ident),* $(,)?) => {
        /// The contract on a fresh SQLite file per clause.
        mod sqlite {
            $(
                #[tokio::test]
                async fn $clause() {
                    let (store, dir) = super::sqlite_store().await;
                    super::$clause(store).await;
                    let _ = std::fs::remove_dir_all(dir);
                }
            )*
        }

        /// The contract on a fresh PostgreSQL database per clause.
        mod postgres {
            $(
                #[tokio::test]
                async fn $clause() {
                    if let Some(store) = super::postgres_store().await {
                        super::$clause(store).await;
                    }
                }
            )*
        }
    };
}

contract_tests!(
    clients,
    users,
    logins_in_progress,
    sessions,
    password_links,
    consent,
    codes,
    refresh_rotation,
    grant_revocation,
    device_codes,
    access_token_revocation,
    signing_keys,
    purge,
    throttles,
    accounts,
);
