//! The JSON admin API under `/admin/api/`: users, clients, signing keys and the audit
//! log, for automation. What `keyward user|client|key` do on the server's machine,
//! over HTTP.
//!
//! Who may call it: a confidential client registered with the scope `keyward:admin`
//! and the `client_credentials` grant, with a client-credentials token of its own that
//! carries that scope ([`admin_rule`]). A person's token, a token exchanged for another
//! audience, or a token whose client has since lost the scope is refused (403
//! `insufficient_scope`); no token or a bad one is 401 `invalid_token`.
//!
//! Every change is written to the audit log (who, what, to which record, when, from
//! where) before it is carried out, so that nothing is done that the log does not
//! show. It is checked first (the record exists, the id is free, the new values are
//! valid), so the log holds what was done, not what was refused; only a store failing
//! between the entry and the change leaves an entry for a change that did not happen. Errors are the
//! OAuth error body (`error`, `error_description`): `invalid_request` with 400, 404
//! (no such record) or 409 (the id is taken).

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use keyward_proto::ErrorCode;
use keyward_proto::claims::{AccessTokenClaims, Audience};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, OAuthError, no_store};
use super::extract::{Body, ClientAddr, bearer_token};
use super::routes::Routes;
use crate::admin::{AdminError, ClientChanges, NewClient};
use crate::domain::{Client, SigningAlg, StoredKey, User};
use crate::issuer::validate_access_token;
use crate::operator::{ADMIN_SCOPE, Actor, DEFAULT_SECRET_GRACE, Operator};
use crate::state::AppState;
use crate::store::{AuditCursor, StoreError};

/// Users or audit entries listed when the caller names no `limit`.
const DEFAULT_LIMIT: u32 = 100;
/// The most users or audit entries one request lists.
const MAX_LIMIT: u32 = 1000;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/admin/api/users", list_users)
        .get("/admin/api/users/{username}", get_user)
        .patch("/admin/api/users/{username}", patch_user)
        .post("/admin/api/users/{username}/revoke", revoke_user)
        .post("/admin/api/users/{username}/password-link", password_link)
        .get("/admin/api/clients", list_clients)
        .post("/admin/api/clients", create_client)
        .get("/admin/api/clients/{client_id}", get_client)
        .patch("/admin/api/clients/{client_id}", patch_client)
        .delete("/admin/api/clients/{client_id}", delete_client)
        .post("/admin/api/clients/{client_id}/secret", rotate_secret)
        .get("/admin/api/keys", list_keys)
        .post("/admin/api/keys/rotate", rotate_keys)
        .get("/admin/api/audit", list_audit)
}

/// Whether an access token that passed every check of [`validate_access_token`] opens
/// the admin API: it is `client`'s own client-credentials token (no user, no actor, its
/// audience the client alone, so not one exchanged for a service that could replay
/// it), it carries [`ADMIN_SCOPE`], and the client as registered now is confidential
/// and still holds the scope and the `client_credentials` grant (taking either away
/// ends its tokens' access at once).
pub fn admin_rule(claims: &AccessTokenClaims, client: Option<&Client>) -> Result<(), &'static str> {
    let own_token = claims.gid.is_none()
        && claims.act.is_none()
        && claims.sub == claims.client_id
        && matches!(&claims.aud, Audience::One(aud) if *aud == claims.client_id);
    if !own_token {
        return Err("the admin API takes an admin client's own client-credentials token");
    }
    if !claims.scope.split(' ').any(|s| s == ADMIN_SCOPE) {
        return Err("the token does not carry the scope keyward:admin");
    }
    match client {
        Some(client)
            if !client.is_public()
                && client.scopes.contains(ADMIN_SCOPE)
                && client.grant_types.iter().any(|g| g == "client_credentials") =>
        {
            Ok(())
        }
        _ => Err("the token's client is not registered with the scope keyward:admin"),
    }
}

/// A caller the admin API lets in ([`admin_rule`]), as the audit log names them.
pub struct Admin(Actor);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Ok(ClientAddr(address)) = ClientAddr::from_request_parts(parts, state).await;
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| OAuthError::invalid_token("an access token is required"))?;
        let valid = validate_access_token(&state.issuer(), token)
            .await?
            .map_err(|refused| OAuthError::invalid_token(refused.to_string()))?;
        let client = state.store().get_client(&valid.claims.client_id).await?;
        admin_rule(&valid.claims, client.as_ref())
            .map_err(|reason| OAuthError::new(ErrorCode::InsufficientScope, reason))?;
        Ok(Self(Actor {
            name: format!("client:{}", valid.claims.client_id),
            address: address.map(|a| a.to_string()),
        }))
    }
}

impl Admin {
    /// This caller's operations.
    fn on<'a>(&'a self, state: &'a AppState) -> Operator<'a> {
        Operator::new(state, &self.0)
    }
}

/// An admin-layer failure as the API answers it.
impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        admin_error(error)
    }
}

fn admin_error(error: AdminError) -> ApiError {
    let refused = |status: StatusCode, text: String| {
        let mut error = OAuthError::invalid_request(text);
        error.status = Some(status);
        ApiError::OAuth(error)
    };
    match error {
        AdminError::NotFound(what) => refused(StatusCode::NOT_FOUND, format!("{what} not found")),
        AdminError::Invalid(why) => refused(StatusCode::BAD_REQUEST, why),
        AdminError::Store(StoreError::Conflict(what)) => {
            refused(StatusCode::CONFLICT, format!("{what} already exists"))
        }
        e @ (AdminError::Changed(_) | AdminError::Declared(_)) => {
            refused(StatusCode::CONFLICT, e.to_string())
        }
        AdminError::Store(e) => e.into(),
        other => ApiError::Internal(Box::new(other)),
    }
}

/// A JSON request body (at most 64 KiB), or `invalid_request`.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Body, OAuthError>,
) -> Result<T, ApiError> {
    let Body(bytes) = body?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let text: String = e
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        OAuthError::invalid_request(format!("the body is not the JSON expected: {text}")).into()
    })
}

/// `200` with `body`, never cached.
fn ok(body: serde_json::Value) -> Response {
    (no_store(), Json(body)).into_response()
}

/// How many to list: `limit`, between 1 and [`MAX_LIMIT`].
#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    q: String,
    limit: Option<u32>,
    /// Audit entries at or before this time (milliseconds since the epoch).
    before: Option<i64>,
}

impl Listing {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            n @ 1..=MAX_LIMIT => Ok(n),
            _ => Err(OAuthError::invalid_request(format!("limit must be 1 to {MAX_LIMIT}")).into()),
        }
    }
}

/// A query string, or `invalid_request`.
type ListQuery = Result<Query<Listing>, axum::extract::rejection::QueryRejection>;

fn listing(query: ListQuery) -> Result<Listing, ApiError> {
    query
        .map(|Query(listing)| listing)
        .map_err(|_| OAuthError::invalid_request("the query parameters are malformed").into())
}

/// A user as the API shows them: never the password hash.
#[derive(Serialize)]
struct UserView<'a> {
    username: &'a str,
    sub: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    name: Option<&'a str>,
    has_password: bool,
    disabled: bool,
    created_at: i64,
}

fn user_view(user: &User) -> UserView<'_> {
    UserView {
        username: &user.username,
        sub: &user.id,
        email: user.email.as_deref(),
        email_verified: user.email_verified,
        name: user.name.as_deref(),
        has_password: user.password_hash.is_some(),
        disabled: user.disabled,
        created_at: user.created_at,
    }
}

/// `GET /admin/api/users?q=&limit=`: users whose username or address contains `q`.
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let listing = listing(query)?;
    if listing.q.contains('\0') || listing.q.chars().count() > 256 {
        return Err(OAuthError::invalid_request("q is at most 256 characters, without NUL").into());
    }
    let users = state
        .store()
        .search_users(&listing.q, listing.limit()?)
        .await?;
    let users: Vec<_> = users.iter().map(user_view).collect();
    Ok(ok(json!({ "users": users })))
}

/// `GET /admin/api/users/{username}`: the user, linked identities, sessions and the
/// applications holding grants.
async fn get_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let user = admin.on(&state).find_user(&username).await?;
    let store = state.store();
    let now = state.now();
    let identities: Vec<_> = store
        .list_identities(&user.id)
        .await?
        .into_iter()
        .map(|i| {
            json!({
                "connector": i.connector_id, "subject": i.subject, "username": i.username,
                "email": i.email, "linked_at": i.created_at,
            })
        })
        .collect();
    let sessions: Vec<_> = store
        .list_user_sessions(&user.id, now)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "method": s.method, "created_at": s.created_at, "expires_at": s.expires_at,
                "ip": s.ip, "user_agent": s.user_agent,
            })
        })
        .collect();
    let grants: Vec<_> = store
        .list_user_grants(&user.id, now)
        .await?
        .into_iter()
        .map(|g| {
            json!({
                "client_id": g.client_id, "scope": g.scope.to_string(),
                "created_at": g.created_at, "expires_at": g.expires_at,
            })
        })
        .collect();
    Ok(ok(json!({
        "user": user_view(&user),
        "identities": identities,
        "sessions": sessions,
        "grants": grants,
    })))
}

/// What `PATCH /admin/api/users/{username}` may change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChanges {
    /// Disable (ending sessions, revoking grants) or enable.
    disabled: bool,
}

/// `PATCH /admin/api/users/{username}` `{"disabled": true|false}`.
async fn patch_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let changes: UserChanges = json_body(body)?;
    let user = admin
        .on(&state)
        .set_disabled(&username, changes.disabled)
        .await?;
    Ok(ok(json!({ "user": user_view(&user) })))
}

/// `POST /admin/api/users/{username}/revoke`: ends every session and revokes every
/// grant; the account stays enabled.
async fn revoke_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let user = admin.on(&state).revoke_user(&username).await?;
    Ok(ok(json!({ "user": user_view(&user) })))
}

/// `POST /admin/api/users/{username}/password-link`: a one-time link for the person to
/// choose a new password (201, shown this once), working for a day; it replaces the
/// account's earlier link.
async fn password_link(
    State(state): State<AppState>,
    admin: Admin,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let made = admin.on(&state).password_link(&username).await?;
    let body = json!({
        "user": user_view(&made.user),
        "url": made.url,
        "expires_at": made.expires_at,
    });
    Ok((StatusCode::CREATED, no_store(), Json(body)).into_response())
}

/// A client as the API shows it: never the secret's hash.
fn client_view(client: &Client) -> serde_json::Value {
    json!({
        "client_id": client.client_id,
        "name": client.name,
        "public": client.is_public(),
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": client.grant_types,
        "scopes": client.scopes.iter().collect::<Vec<_>>(),
        "skip_consent": client.skip_consent,
        "introspect": client.introspect,
        "id_token_signed_response_alg": client.id_token_alg.as_str(),
        "created_at": client.created_at,
        "previous_secret_valid_until": client.previous_secret.as_ref().map(|p| p.until),
    })
}

/// `GET /admin/api/clients`.
async fn list_clients(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let clients: Vec<_> = state
        .store()
        .list_clients()
        .await?
        .iter()
        .map(client_view)
        .collect();
    Ok(ok(json!({ "clients": clients })))
}

/// `GET /admin/api/clients/{client_id}`.
async fn get_client(
    State(state): State<AppState>,
    admin: Admin,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let client = admin.on(&state).find_client(&client_id).await?;
    Ok(ok(json!({ "client": client_view(&client) })))
}

/// The body of `POST /admin/api/clients`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientForm {
    client_id: String,
    name: Option<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    skip_consent: bool,
    #[serde(default)]
    introspect: bool,
    id_token_signed_response_alg: Option<String>,
}

/// `POST /admin/api/clients`: registers a client; the answer holds its secret, shown
/// this once (keyward keeps only a hash).
async fn create_client(
    State(state): State<AppState>,
    admin: Admin,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let form: ClientForm = json_body(body)?;
    let id_token_alg = match form.id_token_signed_response_alg.as_deref() {
        None => None,
        Some(alg) => Some(SigningAlg::parse(alg).ok_or_else(|| {
            admin_error(AdminError::Invalid(
                "id_token_signed_response_alg must be ES256 or RS256".into(),
            ))
        })?),
    };
    let new = NewClient {
        client_id: form.client_id,
        name: form.name,
        public: form.public,
        secret: None,
        redirect_uris: form.redirect_uris,
        post_logout_redirect_uris: form.post_logout_redirect_uris,
        grant_types: form.grant_types,
        scopes: form.scopes,
        skip_consent: form.skip_consent,
        introspect: form.introspect,
        id_token_alg,
    };
    let (client, secret) = admin.on(&state).create_client(new).await?;
    let body = json!({
        "client": client_view(&client),
        "client_secret": secret.as_ref().map(|s| s.secret()),
    });
    Ok((StatusCode::CREATED, no_store(), Json(body)).into_response())
}

/// `PATCH /admin/api/clients/{client_id}`: changes what is given; the secret stays.
async fn patch_client(
    State(state): State<AppState>,
    admin: Admin,
    Path(client_id): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let changes: ClientChanges = json_body(body)?;
    let client = admin.on(&state).update_client(&client_id, changes).await?;
    Ok(ok(json!({ "client": client_view(&client) })))
}

/// `DELETE /admin/api/clients/{client_id}`: removes the client and everything issued
/// to it. Other servers on the same database stop honouring it within half a second.
async fn delete_client(
    State(state): State<AppState>,
    admin: Admin,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    admin.on(&state).delete_client(&client_id).await?;
    Ok((StatusCode::NO_CONTENT, no_store()).into_response())
}

/// The body of `POST /admin/api/clients/{client_id}/secret`, which may be empty.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// How long the old secret is still accepted; 24 hours when not given.
    grace_seconds: Option<u64>,
}

/// `POST /admin/api/clients/{client_id}/secret`: a new secret, shown this once; the
/// old one (and the tokens issued under it) stays valid for the grace period.
async fn rotate_secret(
    State(state): State<AppState>,
    admin: Admin,
    Path(client_id): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let rotation: Rotation = match body {
        Ok(Body(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => Rotation {
            grace_seconds: None,
        },
        other => json_body(other)?,
    };
    let grace = rotation
        .grace_seconds
        .map_or(DEFAULT_SECRET_GRACE, std::time::Duration::from_secs);
    let (client, secret) = admin.on(&state).rotate_secret(&client_id, grace).await?;
    let body = json!({
        "client": client_view(&client),
        "client_secret": secret.secret(),
    });
    Ok(ok(body))
}

fn key_view(key: &StoredKey) -> serde_json::Value {
    json!({
        "kid": key.kid,
        "alg": key.alg.as_str(),
        "state": if key.retired_at.is_some() { "retired" } else { "active" },
        "created_at": key.created_at,
        "retired_at": key.retired_at,
    })
}

/// `GET /admin/api/keys`: the signing keys, newest first, never their private parts.
async fn list_keys(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let keys: Vec<_> = state
        .store()
        .list_keys()
        .await?
        .iter()
        .map(key_view)
        .collect();
    Ok(ok(json!({ "keys": keys })))
}

/// `POST /admin/api/keys/rotate`: a new key per algorithm; the old ones are retired and
/// stay published until the tokens they signed have expired.
async fn rotate_keys(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let keys = admin.on(&state).rotate_keys().await?;
    let keys: Vec<_> = keys.iter().map(key_view).collect();
    Ok(ok(json!({ "keys": keys })))
}

/// `GET /admin/api/audit?limit=&before=`: the newest entries first.
async fn list_audit(
    State(state): State<AppState>,
    _admin: Admin,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let listing = listing(query)?;
    let entries = state
        .store()
        .list_audit(listing.limit()?, listing.before.map(AuditCursor::through))
        .await?;
    Ok(ok(json!({ "entries": entries })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_proto::{ScopeSet, TokenHash};

    fn claims(client_id: &str, scope: &str) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://id.example".into(),
            sub: client_id.into(),
            aud: Audience::One(client_id.into()),
            exp: 2_000_000_000,
            iat: 1_000_000_000,
            jti: "j".into(),
            client_id: client_id.into(),
            scope: scope.into(),
            auth_time: None,
            gid: None,
            act: None,
            client_tag: Some("t".into()),
        }
    }

    fn client(id: &str, scopes: &str, public: bool) -> Client {
        Client {
            client_id: id.into(),
            name: id.into(),
            secret_hash: (!public).then(|| TokenHash::of("s")),
            previous_secret: None,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: ScopeSet::parse(scopes).unwrap(),
            skip_consent: false,
            introspect: false,
            id_token_alg: SigningAlg::ES256,
            created_at: 0,
        }
    }

    #[test]
    fn an_admin_clients_own_token_with_the_scope_opens_the_api() {
        let ops = client("ops", "keyward:admin api", false);
        assert_eq!(
            admin_rule(&claims("ops", "keyward:admin"), Some(&ops)),
            Ok(())
        );
        assert_eq!(
            admin_rule(&claims("ops", "api keyward:admin"), Some(&ops)),
            Ok(())
        );
    }

    /// Attack: tokens that are valid, but not an admin's: a person's (through an app
    /// allowed the scope), one exchanged for a service (which could replay it here),
    /// one with an actor, one without the scope, one whose client lost the scope or
    /// was removed, or a public client's.
    #[test]
    fn every_other_valid_token_is_refused() {
        let ops = client("ops", "keyward:admin", false);
        let mut person = claims("ops", "keyward:admin");
        person.sub = "user-1".into();
        person.gid = Some("g".into());
        assert!(admin_rule(&person, Some(&ops)).is_err());
        let mut exchanged = claims("ops", "keyward:admin");
        exchanged.aud = Audience::One("reports".into());
        assert!(admin_rule(&exchanged, Some(&ops)).is_err());
        let mut two = claims("ops", "keyward:admin");
        two.aud = Audience::Many(vec!["ops".into(), "reports".into()]);
        assert!(admin_rule(&two, Some(&ops)).is_err());
        let mut acted = claims("ops", "keyward:admin");
        acted.act = Some(serde_json::from_value(json!({"sub": "bot"})).unwrap());
        assert!(admin_rule(&acted, Some(&ops)).is_err());
        assert!(admin_rule(&claims("ops", "api keyward:adminx"), Some(&ops)).is_err());
        let demoted = client("ops", "api", false);
        assert!(admin_rule(&claims("ops", "keyward:admin"), Some(&demoted)).is_err());
        let mut no_grant = client("ops", "keyward:admin", false);
        no_grant.grant_types = vec!["authorization_code".into()];
        assert!(admin_rule(&claims("ops", "keyward:admin"), Some(&no_grant)).is_err());
        assert!(admin_rule(&claims("ops", "keyward:admin"), None).is_err());
        let public = client("ops", "keyward:admin", true);
        assert!(admin_rule(&claims("ops", "keyward:admin"), Some(&public)).is_err());
    }
}
