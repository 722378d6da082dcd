//! The admin console (`/admin`): server-rendered pages, usable without JavaScript, for
//! the people who run keyward: users (search; identities, sessions and grants;
//! disable, enable, revoke everything, end one session), clients (list, add, edit,
//! rotate the secret, remove), signing keys (rotate), connectors (which are enabled,
//! sign-ins per connector since this server started) and the audit log.
//!
//! Who gets in: a person whose account [`operator::is_admin`] (listed in `admins`, or
//! given `keyward:admin` by the `[[policies]]`), signed in within the last
//! [`FRESH_FOR`] seconds: an older session is sent through a new sign-in of kind
//! [`LoginKind::Admin`], which ends back here. Every form carries the session's CSRF
//! token; every change goes through [`Operator`], so it is checked, written to the
//! audit log as `user:<username>` with the address, then done: the same path as the
//! JSON admin API's. A new or rotated secret is shown once, in the answer to the form.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::browser::{csrf_matches, current_session, see_other};
use super::error::OAuthError;
use super::extract::{Body, ClientAddr};
use super::login::start_own_page_sign_in;
use super::page_error::{PageError, page_form};
use super::routes::Routes;
use crate::admin::{AdminError, ClientChanges, NewClient};
use crate::domain::{Client, LoginKind, Session, User, utc_text};
use crate::operator::{self, Actor, DEFAULT_SECRET_GRACE, Operator};
use crate::state::AppState;
use crate::store::{AuditCursor, StoreError};

/// How old (in seconds) a sign-in may be for the console to act on it.
pub const FRESH_FOR: i64 = 600;

/// Users and audit entries one page lists.
const PAGE_SIZE: u32 = 100;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/admin", overview)
        .post("/admin/keys/rotate", rotate_keys)
        .get("/admin/users", users)
        .get("/admin/users/{username}", user_page)
        .post("/admin/users/{username}/disabled", set_disabled)
        .post("/admin/users/{username}/revoke", revoke_user)
        .post("/admin/users/{username}/password-link", password_link)
        .post("/admin/users/{username}/sessions/end", end_session)
        .get("/admin/clients", clients)
        .post("/admin/clients", create_client)
        .get("/admin/clients/{client_id}", client_page)
        .post("/admin/clients/{client_id}", update_client)
        .post("/admin/clients/{client_id}/secret", rotate_secret)
        .post("/admin/clients/{client_id}/delete", delete_client)
        .get("/admin/audit", audit)
}

/// Whether a sign-in at `auth_time` is recent enough at `now` for the console.
pub fn fresh_enough(auth_time: i64, now: i64) -> bool {
    (0..=FRESH_FOR).contains(&(now - auth_time))
}

/// A signed-in administrator, freshly enough, with what the pages need.
struct Console {
    session: Session,
    user: User,
    actor: Actor,
}

impl Console {
    fn on<'a>(&'a self, state: &'a AppState) -> Operator<'a> {
        Operator::new(state, &self.actor)
    }
}

/// The administrator at the console; `None` when nobody is signed in, or not within
/// [`FRESH_FOR`] (a new sign-in is due); a 403 page for someone who is not one.
async fn gate(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Option<Console>, PageError> {
    let Some((session, user)) = current_session(state, headers).await? else {
        return Ok(None);
    };
    if !fresh_enough(session.auth_time, state.now()) {
        return Ok(None);
    }
    if !operator::is_admin(state, &user).await? {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Not an administrator",
            format!(
                "You are signed in as {}, which may not use the admin console.",
                user.username
            ),
        ));
    }
    let actor = Actor {
        name: format!("user:{}", user.username),
        address: addr.map(|a| a.to_string()),
    };
    Ok(Some(Console {
        session,
        user,
        actor,
    }))
}

/// The administrator behind a page request. Rejected with a 303 to a new sign-in
/// (nobody signed in, or not within [`FRESH_FOR`]) or the 403 page.
struct Viewer(Console);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Ok(ClientAddr(addr)) = ClientAddr::from_request_parts(parts, state).await;
        match gate(state, &parts.headers, addr).await {
            Ok(Some(console)) => Ok(Self(console)),
            Ok(None) => Err(
                start_own_page_sign_in(state, LoginKind::Admin, addr, &parts.headers)
                    .await
                    .into_response(),
            ),
            Err(page) => Err(page.into_response()),
        }
    }
}

/// The administrator behind a form. Rejected with the 401 page (a sign-in older than
/// [`FRESH_FOR`]: the page to go back to signs in again) or the 403 page; the form's
/// CSRF token is checked when it is read ([`Poster::form`]).
struct Poster(Console);

impl FromRequestParts<AppState> for Poster {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let Ok(ClientAddr(addr)) = ClientAddr::from_request_parts(parts, state).await;
        gate(state, &parts.headers, addr).await?.map(Self).ok_or_else(|| {
            PageError::new(
                StatusCode::UNAUTHORIZED,
                "Sign in again",
                "The admin console acts only on a sign-in of the last 10 minutes. Open the console to sign in again; nothing was changed.",
            )
        })
    }
}

impl Poster {
    /// The form posted, once its CSRF token is the session's.
    fn form<T: DeserializeOwned>(&self, body: Result<Body, OAuthError>) -> Result<T, PageError> {
        let bytes = match body {
            Ok(Body(bytes)) => bytes,
            Err(e) => return page_form(Err(e)),
        };
        let form: T = page_form(Ok(Body(bytes.clone())))?;
        let CsrfForm { csrf } = page_form(Ok(Body(bytes)))?;
        if !csrf_matches(&self.0.session.csrf, &csrf) {
            return Err(PageError::bad_request(
                "Form expired",
                "The form was stale or forged; nothing was changed. Open the console and try again.",
            ));
        }
        Ok(form)
    }
}

/// An admin-layer failure as a page.
fn failure(error: AdminError) -> PageError {
    match error {
        AdminError::NotFound(what) => PageError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("{what} not found."),
        ),
        AdminError::Invalid(why) => PageError::bad_request("Not changed", why),
        AdminError::Store(StoreError::Conflict(what)) => PageError::new(
            StatusCode::CONFLICT,
            "Not changed",
            format!("{what} already exists."),
        ),
        e @ (AdminError::Changed(_) | AdminError::Declared(_)) => {
            PageError::new(StatusCode::CONFLICT, "Not changed", e.to_string())
        }
        AdminError::Store(e) => e.into(),
        other => {
            crate::telemetry::log_internal(&other);
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "The change failed; the server's log says why.",
            )
        }
    }
}

/// Back to `path` under the console, with a notice.
fn back(state: &AppState, path: &str, notice: &str) -> Response {
    see_other(&format!(
        "{}/admin{path}?notice={notice}",
        state.config().base_path()
    ))
}

/// What a notice code in `?notice=` says. Only these fixed texts are ever shown.
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "keys-rotated" => {
            "New signing keys are in use; the old ones stay published until their tokens expire."
        }
        "disabled" => "The account is disabled: its sessions are ended and its tokens revoked.",
        "enabled" => "The account is enabled.",
        "revoked" => "Every session is ended and every token revoked.",
        "session-ended" => "That session is ended.",
        "client-saved" => "Saved.",
        "client-removed" => "The client is removed, with everything issued to it.",
        _ => return None,
    })
}

#[derive(Deserialize)]
struct PageQuery {
    notice: Option<String>,
    #[serde(default)]
    q: String,
    /// The audit log page after the entry of this time and `id`.
    before: Option<i64>,
    id: Option<String>,
}

type PageQueryResult = Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>;

fn page_query(query: PageQueryResult) -> PageQuery {
    query.map_or(
        PageQuery {
            notice: None,
            q: String::new(),
            before: None,
            id: None,
        },
        |Query(q)| q,
    )
}

/// Renders a console page: `context` plus who is signed in, the CSRF token and the
/// notice.
fn render(
    state: &AppState,
    console: &Console,
    template: &str,
    notice: Option<&str>,
    context: minijinja::Value,
) -> Response {
    let section = match template {
        "admin_users.html" | "admin_user.html" | "admin_link.html" => "users",
        "admin_clients.html" | "admin_client.html" | "admin_secret.html" => "clients",
        "admin_audit.html" => "audit",
        _ => "overview",
    };
    let page = minijinja::context! {
        section => section,
        admin => console.user.username,
        csrf => console.session.csrf,
        notice => notice.and_then(notice_text),
    };
    state.pages().render(
        StatusCode::OK,
        template,
        minijinja::context! { ..page, ..context },
    )
}

/// `GET /admin`: connectors with their sign-ins, signing keys, and links.
async fn overview(
    State(state): State<AppState>,
    Viewer(console): Viewer,
    query: PageQueryResult,
) -> Result<Response, PageError> {
    let query = page_query(query);
    let metrics = state.metrics();
    let connectors = state.connectors();
    let connector_rows: Vec<_> = connectors
        .all_enabled()
        .map(|c| {
            let count = |result| {
                metrics.value(
                    "keyward_upstream_logins_total",
                    &[("connector", &c.config.id), ("result", result)],
                )
            };
            minijinja::context! {
                id => c.config.id,
                name => c.config.name,
                ok => count("ok"),
                refused => count("refused"),
                failed => count("failed"),
            }
        })
        .collect();
    let password = connectors.password_login().map(|c| {
        minijinja::context! {
            id => c.id,
            name => c.name,
            ok => metrics.value("keyward_password_logins_total", &[]),
            refused => metrics.value("keyward_login_failures_total", &[("reason", "bad_credentials")]),
            throttled => metrics.value("keyward_login_failures_total", &[("reason", "throttled")]),
        }
    });
    let keys: Vec<_> = state
        .store()
        .list_keys()
        .await?
        .iter()
        .map(|k| {
            minijinja::context! {
                kid => k.kid,
                alg => k.alg.as_str(),
                retired => k.retired_at.map(utc_text),
                created => utc_text(k.created_at),
            }
        })
        .collect();
    Ok(render(
        &state,
        &console,
        "admin.html",
        query.notice.as_deref(),
        minijinja::context! {
            connectors => connector_rows,
            password => password,
            keys => keys,
        },
    ))
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// `POST /admin/keys/rotate`.
async fn rotate_keys(
    State(state): State<AppState>,
    poster: Poster,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let _: CsrfForm = poster.form(body)?;
    let console = &poster.0;
    console.on(&state).rotate_keys().await.map_err(failure)?;
    Ok(back(&state, "", "keys-rotated"))
}

fn user_row(user: &User) -> minijinja::Value {
    minijinja::context! {
        username => user.username,
        path => user_path(&user.username),
        name => user.name,
        email => user.email,
        disabled => user.disabled,
        password => user.password_hash.is_some(),
        created => utc_text(user.created_at),
    }
}

/// `GET /admin/users?q=`: users whose username or address contains `q`.
async fn users(
    State(state): State<AppState>,
    Viewer(console): Viewer,
    query: PageQueryResult,
) -> Result<Response, PageError> {
    let query = page_query(query);
    let q: String = query
        .q
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect();
    let found = state.store().search_users(&q, PAGE_SIZE).await?;
    let rows: Vec<_> = found.iter().map(user_row).collect();
    Ok(render(
        &state,
        &console,
        "admin_users.html",
        query.notice.as_deref(),
        minijinja::context! { q => q, users => rows, full => rows.len() == PAGE_SIZE as usize },
    ))
}

/// `GET /admin/users/{username}`: the account, linked identities, sessions and grants.
async fn user_page(
    State(state): State<AppState>,
    Viewer(console): Viewer,
    Path(username): Path<String>,
    query: PageQueryResult,
) -> Result<Response, PageError> {
    let query = page_query(query);
    let user = console
        .on(&state)
        .find_user(&username)
        .await
        .map_err(failure)?;
    let store = state.store();
    let connectors = state.connectors();
    let now = state.now();
    let identities: Vec<_> = store
        .list_identities(&user.id)
        .await?
        .iter()
        .map(|i| {
            minijinja::context! {
                connector => connectors.name_of(&i.connector_id),
                subject => i.subject,
                label => i.username.clone().or_else(|| i.email.clone()),
                linked => utc_text(i.created_at),
                last_used => utc_text(i.last_login_at),
            }
        })
        .collect();
    let sessions: Vec<_> = store
        .list_user_sessions(&user.id, now)
        .await?
        .iter()
        .map(|s| {
            minijinja::context! {
                id => s.id_hash.as_str(),
                method => connectors.name_of(&s.method),
                started => utc_text(s.created_at),
                ip => s.ip,
                agent => s.user_agent,
                current => s.id_hash == console.session.id_hash,
            }
        })
        .collect();
    let grants: Vec<_> = store
        .list_user_grants(&user.id, now)
        .await?
        .iter()
        .map(|g| {
            minijinja::context! {
                client_id => g.client_id,
                path => client_path(&g.client_id),
                scope => g.scope.to_string(),
                created => utc_text(g.created_at),
                expires => utc_text(g.expires_at),
            }
        })
        .collect();
    Ok(render(
        &state,
        &console,
        "admin_user.html",
        query.notice.as_deref(),
        minijinja::context! {
            user => user_row(&user),
            sub => user.id,
            identities => identities,
            sessions => sessions,
            grants => grants,
        },
    ))
}

#[derive(Deserialize)]
struct DisabledForm {
    disabled: String,
}

/// `POST /admin/users/{username}/disabled` with `disabled=true|false`.
async fn set_disabled(
    State(state): State<AppState>,
    poster: Poster,
    Path(username): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: DisabledForm = poster.form(body)?;
    let console = &poster.0;
    let disabled = match form.disabled.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(PageError::bad_request(
                "Invalid request",
                "disabled is true or false.",
            ));
        }
    };
    let user = console
        .on(&state)
        .set_disabled(&username, disabled)
        .await
        .map_err(failure)?;
    let notice = if disabled { "disabled" } else { "enabled" };
    Ok(back(&state, &user_path(&user.username), notice))
}

/// `/users/<username>`, encoded for a URL.
fn user_path(username: &str) -> String {
    format!("/users/{}", urlencoding(username))
}

/// `/clients/<id>`, encoded for a URL.
fn client_path(client_id: &str) -> String {
    format!("/clients/{}", urlencoding(client_id))
}

/// Percent-encodes a path segment.
fn urlencoding(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `POST /admin/users/{username}/revoke`: ends every session, revokes every grant.
async fn revoke_user(
    State(state): State<AppState>,
    poster: Poster,
    Path(username): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let _: CsrfForm = poster.form(body)?;
    let console = &poster.0;
    let user = console
        .on(&state)
        .revoke_user(&username)
        .await
        .map_err(failure)?;
    Ok(back(&state, &user_path(&user.username), "revoked"))
}

/// `POST /admin/users/{username}/password-link`: the link, shown once, to hand over.
async fn password_link(
    State(state): State<AppState>,
    poster: Poster,
    Path(username): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let _: CsrfForm = poster.form(body)?;
    let console = &poster.0;
    let made = console
        .on(&state)
        .password_link(&username)
        .await
        .map_err(failure)?;
    Ok(render(
        &state,
        console,
        "admin_link.html",
        None,
        minijinja::context! {
            user => user_row(&made.user),
            url => made.url,
            expires => utc_text(made.expires_at),
        },
    ))
}

#[derive(Deserialize)]
struct EndSessionForm {
    session: String,
}

/// `POST /admin/users/{username}/sessions/end`: signs one browser out.
async fn end_session(
    State(state): State<AppState>,
    poster: Poster,
    Path(username): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: EndSessionForm = poster.form(body)?;
    let console = &poster.0;
    let user = console
        .on(&state)
        .end_session(&username, &form.session)
        .await
        .map_err(failure)?;
    Ok(back(&state, &user_path(&user.username), "session-ended"))
}

fn client_row(client: &Client) -> minijinja::Value {
    minijinja::context! {
        client_id => client.client_id,
        path => client_path(&client.client_id),
        name => client.name,
        public => client.is_public(),
        redirect_uris => client.redirect_uris,
        post_logout_redirect_uris => client.post_logout_redirect_uris,
        grant_types => client.grant_types.join(" "),
        scopes => client.scopes.to_string(),
        skip_consent => client.skip_consent,
        introspect => client.introspect,
        created => utc_text(client.created_at),
        previous_secret_until => client.previous_secret.as_ref().map(|p| utc_text(p.until)),
    }
}

/// `GET /admin/clients`: every client, and the form to add one.
async fn clients(
    State(state): State<AppState>,
    Viewer(console): Viewer,
    query: PageQueryResult,
) -> Result<Response, PageError> {
    let query = page_query(query);
    let rows: Vec<_> = state
        .store()
        .list_clients()
        .await?
        .iter()
        .map(client_row)
        .collect();
    Ok(render(
        &state,
        &console,
        "admin_clients.html",
        query.notice.as_deref(),
        minijinja::context! {
            clients => rows,
            default_grant_types => crate::admin::DEFAULT_GRANT_TYPES.join(" "),
            default_scopes => crate::admin::DEFAULT_CLIENT_SCOPES,
        },
    ))
}

/// The client form of the console: lists are one item per line (redirect URIs) or
/// space-separated (grant types, scopes); a checkbox is present when ticked.
#[derive(Deserialize)]
struct ClientForm {
    client_id: Option<String>,
    name: Option<String>,
    public: Option<String>,
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_redirect_uris: String,
    #[serde(default)]
    grant_types: String,
    #[serde(default)]
    scopes: String,
    skip_consent: Option<String>,
    introspect: Option<String>,
}

/// The items of a list typed into a form, split on white space (URIs hold none).
pub fn form_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

impl ClientForm {
    /// A blank name means none.
    fn name(&self) -> Option<String> {
        self.name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    /// The form as a change of an existing client: every field replaces the stored one.
    fn changes(&self) -> ClientChanges {
        ClientChanges {
            name: self.name(),
            redirect_uris: Some(form_list(&self.redirect_uris)),
            post_logout_redirect_uris: Some(form_list(&self.post_logout_redirect_uris)),
            grant_types: Some(form_list(&self.grant_types)),
            scopes: Some(form_list(&self.scopes)),
            skip_consent: Some(self.skip_consent.is_some()),
            introspect: Some(self.introspect.is_some()),
        }
    }

    /// The form as a new client (blank grant types and scopes get the defaults).
    fn new_client(&self) -> NewClient {
        NewClient {
            client_id: self.client_id.clone().unwrap_or_default().trim().to_owned(),
            name: self.name(),
            public: self.public.is_some(),
            secret: None,
            redirect_uris: form_list(&self.redirect_uris),
            post_logout_redirect_uris: form_list(&self.post_logout_redirect_uris),
            grant_types: form_list(&self.grant_types),
            scopes: form_list(&self.scopes),
            skip_consent: self.skip_consent.is_some(),
            introspect: self.introspect.is_some(),
            id_token_alg: None,
        }
    }
}

/// The page that shows a client's secret, this once.
fn secret_page(
    state: &AppState,
    console: &Console,
    client: &Client,
    secret: &str,
    rotated: bool,
) -> Response {
    render(
        state,
        console,
        "admin_secret.html",
        None,
        minijinja::context! {
            client => client_row(client),
            secret => secret,
            rotated => rotated,
        },
    )
}

/// `POST /admin/clients`: registers a client; a confidential one's secret is shown
/// once.
async fn create_client(
    State(state): State<AppState>,
    poster: Poster,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: ClientForm = poster.form(body)?;
    let console = &poster.0;
    let (client, secret) = console
        .on(&state)
        .create_client(form.new_client())
        .await
        .map_err(failure)?;
    Ok(match secret {
        Some(secret) => secret_page(&state, console, &client, secret.secret(), false),
        None => back(&state, &client_path(&client.client_id), "client-saved"),
    })
}

/// `GET /admin/clients/{client_id}`: the client, its edit form, rotation and removal.
async fn client_page(
    State(state): State<AppState>,
    Viewer(console): Viewer,
    Path(client_id): Path<String>,
    query: PageQueryResult,
) -> Result<Response, PageError> {
    let query = page_query(query);
    let client = console
        .on(&state)
        .find_client(&client_id)
        .await
        .map_err(failure)?;
    let locked = match console.on(&state).changeable(&client_id).await {
        Ok(()) => None,
        Err(e @ AdminError::Declared(_)) => Some(e.to_string()),
        Err(e) => return Err(failure(e)),
    };
    Ok(render(
        &state,
        &console,
        "admin_client.html",
        query.notice.as_deref(),
        minijinja::context! {
            client => client_row(&client),
            locked => locked,
            max_grace_days => crate::admin::MAX_SECRET_GRACE.as_secs() / 86_400,
        },
    ))
}

/// `POST /admin/clients/{client_id}`: saves the edit form.
async fn update_client(
    State(state): State<AppState>,
    poster: Poster,
    Path(client_id): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: ClientForm = poster.form(body)?;
    let console = &poster.0;
    let client = console
        .on(&state)
        .update_client(&client_id, form.changes())
        .await
        .map_err(failure)?;
    Ok(back(
        &state,
        &client_path(&client.client_id),
        "client-saved",
    ))
}

#[derive(Deserialize)]
struct RotateForm {
    /// Hours the old secret stays valid.
    grace_hours: Option<String>,
}

/// The grace period typed into the rotation form, in hours (blank: the default).
pub fn grace_from_form(hours: Option<&str>) -> Result<std::time::Duration, AdminError> {
    match hours.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(DEFAULT_SECRET_GRACE),
        Some(hours) => hours
            .parse::<u64>()
            .ok()
            .and_then(|h| h.checked_mul(3600))
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| {
                AdminError::Invalid("the grace period is a whole number of hours".into())
            }),
    }
}

/// `POST /admin/clients/{client_id}/secret`: a new secret, shown once; the old one
/// stays valid for the grace period.
async fn rotate_secret(
    State(state): State<AppState>,
    poster: Poster,
    Path(client_id): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: RotateForm = poster.form(body)?;
    let console = &poster.0;
    let grace = grace_from_form(form.grace_hours.as_deref()).map_err(failure)?;
    let (client, secret) = console
        .on(&state)
        .rotate_secret(&client_id, grace)
        .await
        .map_err(failure)?;
    Ok(secret_page(&state, console, &client, secret.secret(), true))
}

/// `POST /admin/clients/{client_id}/delete`.
async fn delete_client(
    State(state): State<AppState>,
    poster: Poster,
    Path(client_id): Path<String>,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let _: CsrfForm = poster.form(body)?;
    let console = &poster.0;
    console
        .on(&state)
        .delete_client(&client_id)
        .await
        .map_err(failure)?;
    Ok(back(&state, "/clients", "client-removed"))
}

/// `GET /admin/audit?before=&id=`: the newest entries first, a page at a time (after
/// the entry of time `before` and id `id`).
async fn audit(
    State(state): State<AppState>,
    Viewer(console): Viewer,
    query: PageQueryResult,
) -> Result<Response, PageError> {
    let query = page_query(query);
    let cursor = query.before.map(|at| match query.id {
        Some(id) => AuditCursor { at, id },
        None => AuditCursor::through(at),
    });
    let entries = state.store().list_audit(PAGE_SIZE, cursor).await?;
    let older = (entries.len() == PAGE_SIZE as usize)
        .then(|| entries.last())
        .flatten()
        .map(|e| minijinja::context! { before => e.at, id => e.id });
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            minijinja::context! {
                at => utc_text(e.at / 1000),
                actor => e.actor,
                action => e.action,
                target => e.target,
                address => e.address,
            }
        })
        .collect();
    Ok(render(
        &state,
        &console,
        "admin_audit.html",
        None,
        minijinja::context! { entries => rows, older => older },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_takes_a_sign_in_of_the_last_ten_minutes() {
        assert!(fresh_enough(1000, 1000));
        assert!(fresh_enough(1000, 1600));
        assert!(!fresh_enough(1000, 1601));
        // A sign-in stamped in the future (a clock stepped back) is not trusted.
        assert!(!fresh_enough(1000, 999));
    }

    #[test]
    fn lists_and_grace_periods_typed_into_forms() {
        assert_eq!(
            form_list(" https://a.example/cb\r\n\r\nhttps://b.example/cb \n"),
            ["https://a.example/cb", "https://b.example/cb"]
        );
        assert!(form_list("  ").is_empty());
        assert_eq!(grace_from_form(None).unwrap(), DEFAULT_SECRET_GRACE);
        assert_eq!(grace_from_form(Some(" ")).unwrap(), DEFAULT_SECRET_GRACE);
        assert_eq!(grace_from_form(Some("0")).unwrap().as_secs(), 0);
        assert_eq!(grace_from_form(Some("2")).unwrap().as_secs(), 7200);
        assert!(grace_from_form(Some("-1")).is_err());
        assert!(grace_from_form(Some("1.5")).is_err());
        assert!(grace_from_form(Some("99999999999999999999")).is_err());
    }

    #[test]
    fn only_known_notices_are_shown() {
        assert!(notice_text("disabled").is_some());
        assert!(notice_text("<b>").is_none());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(user_path("a b/c"), "/users/a%20b%2Fc");
        assert_eq!(client_path("app.1"), "/clients/app.1");
    }
}
