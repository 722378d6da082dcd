//! The authorization endpoint (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2) and the
//! pages a person passes through: login (local password) and consent.
//!
//! A request is validated in two stages. Until the client and its redirect URI are
//! known to be genuine, errors are shown as a page and never redirected; after that
//! they are sent to the client (RFC 6749 §4.1.2.1, with `iss` per RFC 9207) in the
//! requested response mode: `query` (a redirect), `form_post` (an auto-submitted form)
//! or `web_message` (`postMessage` from a popup to the redirect URI's exact origin).
//! A valid request becomes an [`AuthRequest`] in the store (so any replica can finish
//! it), bound to the browser that started it by a cookie and protected by a CSRF token.

use std::net::IpAddr;

use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use keyward_proto::{ErrorCode, OpaqueToken, ScopeSet, TokenHash};
use serde::Deserialize;
use url::Url;

use super::error::{OAuthError, wait_text, with_retry_after};
use super::extract::{Body, ClientAddr, append_our_cookie, our_cookie, parse_form};
use super::page_error::{PageError, page_form};
use crate::domain::{
    AuthCode, AuthRequest, Client, Grant, LoginKind, ResponseMode, Session, User, secs,
};
use crate::mac::Purpose;
use crate::pages::Pages;
use crate::state::AppState;
use crate::throttle;

/// Cookie binding a login in progress to the browser that started it.
pub const BROWSER_COOKIE: &str = "keyward_browser";
/// The browser session cookie.
pub const SESSION_COOKIE: &str = "keyward_session";

/// Longest accepted `state`, `nonce` or `login_hint`.
const MAX_PARAM_LEN: usize = 2048;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/authorize", get(authorize_get).post(authorize_post))
        .route("/login", get(login_page).post(login_submit))
        .route("/consent", get(consent_page).post(consent_submit))
}

/// The parameters of an authorization request.
#[derive(Debug, Default, Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    response_mode: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    login_hint: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
}

async fn authorize_get(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = parse_form(query.unwrap_or_default().as_bytes());
    authorize(&state, addr, &headers, params).await
}

async fn authorize_post(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let params = body.and_then(|Body(bytes)| parse_form(&bytes));
    authorize(&state, addr, &headers, params).await
}

/// Sends authorization responses and errors to the client's redirect URI, in the
/// request's response mode.
struct Responder<'a> {
    pages: &'a Pages,
    redirect_uri: String,
    state: Option<String>,
    issuer: String,
    mode: ResponseMode,
}

impl Responder<'_> {
    fn send(&self, pairs: &[(&str, &str)]) -> Response {
        let mut params: Vec<(&str, &str)> = pairs.to_vec();
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        params.push(("iss", &self.issuer));
        match self.mode {
            ResponseMode::Query => {
                let Ok(mut url) = Url::parse(&self.redirect_uri) else {
                    // Registered redirect URIs are validated URLs; this cannot happen.
                    return (StatusCode::BAD_REQUEST, "invalid redirect URI").into_response();
                };
                url.query_pairs_mut().extend_pairs(&params);
                Redirect::to(url.as_str()).into_response()
            }
            ResponseMode::FormPost => self.pages.form_post(&self.redirect_uri, &params),
            ResponseMode::WebMessage => match web_message_origin(&self.redirect_uri) {
                Some(origin) => self.pages.web_message(&origin, &params),
                None => (StatusCode::BAD_REQUEST, "invalid redirect URI").into_response(),
            },
        }
    }

    fn error(&self, code: ErrorCode, description: &str) -> Response {
        self.send(&[("error", code.as_str()), ("error_description", description)])
    }
}

/// The origin a `web_message` response is posted to: the redirect URI's scheme, host
/// and port. `None` for URIs without a web origin (custom schemes).
fn web_message_origin(redirect_uri: &str) -> Option<String> {
    let url = Url::parse(redirect_uri).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) if matches!(url.scheme(), "http" | "https") => {
            Some(origin.ascii_serialization())
        }
        _ => None,
    }
}

pub(super) fn error_page(title: &'static str, message: impl Into<String>) -> PageError {
    PageError::bad_request(title, message)
}

async fn authorize(
    state: &AppState,
    addr: Option<IpAddr>,
    headers: &HeaderMap,
    params: Result<AuthorizeParams, OAuthError>,
) -> Result<Response, PageError> {
    let params = params.map_err(|e| error_page("Invalid request", e.description))?;

    // Stage 1: until the client and redirect URI are known, errors are pages.
    let client_id = params
        .client_id
        .as_deref()
        .ok_or_else(|| error_page("Invalid request", "The request has no client_id."))?;
    let client = state.store().get_client(client_id).await?.ok_or_else(|| {
        error_page(
            "Unknown application",
            "The application that sent you here is not registered with this server.",
        )
    })?;
    let (redirect_uri, redirect_uri_given) = match &params.redirect_uri {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => (uri.clone(), true),
        Some(_) => {
            return Err(error_page(
                "Invalid redirect",
                "The redirect_uri does not match any redirect URI registered for this application.",
            ));
        }
        None if client.redirect_uris.len() == 1 => (client.redirect_uris[0].clone(), false),
        None => {
            return Err(error_page(
                "Invalid request",
                "The request has no redirect_uri.",
            ));
        }
    };
    // An unknown or unusable response mode is reported in the default one.
    let mode = params
        .response_mode
        .as_deref()
        .and_then(ResponseMode::parse)
        .filter(|m| *m != ResponseMode::WebMessage || web_message_origin(&redirect_uri).is_some())
        .unwrap_or_default();
    let responder = Responder {
        pages: state.pages(),
        redirect_uri: redirect_uri.clone(),
        state: params.state.clone().filter(|s| s.len() <= MAX_PARAM_LEN),
        issuer: state.config().issuer_str().to_owned(),
        mode,
    };

    // Stage 2: errors go back to the client.
    let request = match validate(&client, &params, &responder.redirect_uri) {
        Ok(valid) => valid,
        Err((code, description)) => return Ok(responder.error(code, &description)),
    };

    let browser = Browser::of(state, headers);
    let created = state.now();
    let mut auth_request = AuthRequest {
        id: keyward_proto::secret::random_urlsafe(24),
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_given,
        scope: request.scope,
        state: params.state,
        nonce: params.nonce,
        code_challenge: request.code_challenge,
        prompt: params.prompt,
        max_age: request.max_age,
        login_hint: params.login_hint,
        browser_hash: TokenHash::of(&browser.value),
        csrf: keyward_proto::secret::random_urlsafe(24),
        created_at: created,
        expires_at: created + secs(state.config().login_ttl),
        user_id: None,
        auth_time: None,
        kind: LoginKind::Authorize,
        response_mode: mode,
    };

    attach_session(state, headers, &mut auth_request).await?;
    let prompts = prompt_values(auth_request.prompt.as_deref());
    if auth_request.user_id.is_none() && prompts.contains(&"none") {
        return Ok(responder.error(ErrorCode::LoginRequired, "the user is not signed in"));
    }
    // Not stored yet: a signed-in browser that needs no consent page gets its code at
    // once, and the store sees one write (the grant and its code) instead of three.
    let response = advance(state, auth_request, &client, Stored::No { from: addr }).await?;
    Ok(browser.set_if_new(state, response))
}

/// The browser-binding cookie of a request, or a new one to set.
pub(super) struct Browser {
    /// The cookie value.
    pub(super) value: String,
    is_new: bool,
}

impl Browser {
    /// The request's binding cookie, or a fresh value when it has none. The value is
    /// sealed with the server's MAC key: one keyward did not make (planted by another
    /// site or a script, to tie someone's browser to a login the planter knows) is
    /// ignored, and the browser gets a new one.
    pub(super) fn of(state: &AppState, headers: &HeaderMap) -> Self {
        match our_cookie(state, headers, BROWSER_COOKIE) {
            Some(value)
                if value.len() <= 128
                    && state.mac().open(Purpose::BrowserCookie, value).is_some() =>
            {
                Self {
                    value: value.to_owned(),
                    is_new: false,
                }
            }
            _ => Self {
                value: state.mac().seal(
                    Purpose::BrowserCookie,
                    &keyward_proto::secret::random_urlsafe(32),
                ),
                is_new: true,
            },
        }
    }

    /// Whether the request had no binding cookie.
    pub(super) fn is_new(&self) -> bool {
        self.is_new
    }

    /// Adds `Set-Cookie` to `response` when the value is new.
    pub(super) fn set_if_new(&self, state: &AppState, mut response: Response) -> Response {
        if self.is_new {
            append_our_cookie(state, &mut response, BROWSER_COOKIE, &self.value, None);
        }
        response
    }
}

/// Single sign-on: attaches the browser's session to a new login, unless the request
/// asks for a fresh login (`prompt=login`, or a `max_age` the session is older than).
pub(super) async fn attach_session(
    state: &AppState,
    headers: &HeaderMap,
    request: &mut AuthRequest,
) -> Result<(), PageError> {
    if prompt_values(request.prompt.as_deref()).contains(&"login") {
        return Ok(());
    }
    if let Some((session, _)) = current_session(state, headers).await? {
        // max_age=0 means "log in again", like prompt=login (OpenID Connect Core §3.1.2.1).
        let fresh_enough = request
            .max_age
            .is_none_or(|max| max > 0 && request.created_at - session.auth_time <= max);
        if fresh_enough {
            request.user_id = Some(session.user_id);
            request.auth_time = Some(session.auth_time);
        }
    }
    Ok(())
}

struct ValidRequest {
    scope: ScopeSet,
    code_challenge: String,
    max_age: Option<i64>,
}

/// Stage 2 checks: everything whose failure is reported to the client.
fn validate(
    client: &Client,
    params: &AuthorizeParams,
    redirect_uri: &str,
) -> Result<ValidRequest, (ErrorCode, String)> {
    let invalid = |d: &str| Err((ErrorCode::InvalidRequest, d.to_owned()));
    if params.request.is_some() || params.request_uri.is_some() {
        return invalid("request objects are not supported");
    }
    match params.response_type.as_deref() {
        None => return invalid("response_type is required"),
        Some("code") => {}
        Some(_) => {
            return Err((
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported".into(),
            ));
        }
    }
    match params.response_mode.as_deref().map(ResponseMode::parse) {
        None | Some(Some(ResponseMode::Query | ResponseMode::FormPost)) => {}
        Some(Some(ResponseMode::WebMessage)) => {
            if web_message_origin(redirect_uri).is_none() {
                return invalid("response_mode=web_message needs an http or https redirect URI");
            }
        }
        Some(None) => {
            return invalid("response_mode must be query, form_post or web_message");
        }
    }
    if !client.allows_grant("authorization_code") {
        return Err((
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code flow".into(),
        ));
    }
    for (name, value) in [
        ("state", &params.state),
        ("nonce", &params.nonce),
        ("login_hint", &params.login_hint),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_PARAM_LEN) {
            return invalid(&format!("{name} is longer than {MAX_PARAM_LEN} bytes"));
        }
    }
    let Some(challenge) = &params.code_challenge else {
        return invalid("code_challenge is required (PKCE with S256)");
    };
    if params.code_challenge_method.as_deref() != Some("S256") {
        return invalid("code_challenge_method must be S256");
    }
    if keyward_proto::pkce::CodeChallenge::parse(challenge).is_err() {
        return invalid("code_challenge must be a base64url SHA-256 (43 characters)");
    }
    let mut scope = match &params.scope {
        Some(text) => {
            ScopeSet::parse(text).map_err(|e| (ErrorCode::InvalidScope, e.to_string()))?
        }
        None => client.default_scope(),
    };
    let unknown = scope.difference(&client.scopes);
    if !unknown.is_empty() {
        return Err((
            ErrorCode::InvalidScope,
            format!("this client may not request: {unknown}"),
        ));
    }
    if !client.allows_grant("refresh_token") {
        scope.remove("offline_access");
    }
    let prompts = prompt_values(params.prompt.as_deref());
    if prompts.contains(&"none") && prompts.len() > 1 {
        return invalid("prompt=none cannot be combined with other values");
    }
    let max_age = match &params.max_age {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(value) if value >= 0 => Some(value),
            _ => return invalid("max_age must be a non-negative integer"),
        },
    };
    Ok(ValidRequest {
        scope,
        code_challenge: challenge.clone(),
        max_age,
    })
}

/// The values of a space-separated `prompt`.
pub(super) fn prompt_values(prompt: Option<&str>) -> Vec<&str> {
    prompt
        .map(|p| p.split(' ').filter(|v| !v.is_empty()).collect())
        .unwrap_or_default()
}

/// The browser's session and user, when the session cookie is valid and the user
/// enabled.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, PageError> {
    let Some(value) = our_cookie(state, headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let found = state
        .store()
        .get_session_with_user(&TokenHash::of(value), state.now())
        .await?;
    Ok(found.filter(|(_, user)| !user.disabled))
}

/// Whether a login in progress is in the store yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// Loaded from (or written to) the store: finishing it takes it out.
    Yes,
    /// Only in memory: stored only if a page must be shown before it can finish, and
    /// then only within the creation limit of the address it came `from`.
    No {
        /// The client address.
        from: Option<IpAddr>,
    },
}

/// Stores a new login in progress that an unauthenticated caller at `from` started,
/// unless that address started too many (a 429 page).
pub(super) async fn store_new_request(
    state: &AppState,
    request: &AuthRequest,
    from: Option<IpAddr>,
) -> Result<(), PageError> {
    state.creations().allow(from).map_err(PageError::too_many)?;
    state.store().insert_auth_request(request).await?;
    Ok(())
}

/// Moves a login forward: to the login page, the consent page, or the client. A
/// login not stored yet is stored before the browser is sent to a page.
pub(super) async fn advance(
    state: &AppState,
    request: AuthRequest,
    client: &Client,
    stored: Stored,
) -> Result<Response, PageError> {
    let Some(user_id) = &request.user_id else {
        if let Stored::No { from } = stored {
            store_new_request(state, &request, from).await?;
        }
        return Ok(see_other(&format!(
            "{}/login?req={}",
            state.config().base_path(),
            request.id
        )));
    };
    let (user, approved) = match state
        .store()
        .get_user_with_consent(user_id, &client.client_id)
        .await?
    {
        Some((user, approved)) if !user.disabled => (user, approved),
        _ => {
            return reject(
                state,
                &request,
                ErrorCode::AccessDenied,
                "the account is disabled",
            )
            .await;
        }
    };
    let prompts = prompt_values(request.prompt.as_deref());
    // prompt=consent always asks (device logins set it); otherwise a first-party client
    // never asks and others ask for what the user has not approved yet.
    let needs_consent = prompts.contains(&"consent")
        || (!client.skip_consent
            && !approved.is_some_and(|approved| request.scope.is_subset(&approved)));
    if needs_consent {
        if prompts.contains(&"none") {
            let description = "the user has not approved this application";
            return reject(state, &request, ErrorCode::ConsentRequired, description).await;
        }
        if let Stored::No { from } = stored {
            store_new_request(state, &request, from).await?;
        }
        return Ok(see_other(&format!(
            "{}/consent?req={}",
            state.config().base_path(),
            request.id
        )));
    }
    finish(state, request, client, &user, stored).await
}

/// Ends a login with an error: sent to the client, or, for a device authorization,
/// denied (the device learns it when it polls) and shown as a page.
async fn reject(
    state: &AppState,
    request: &AuthRequest,
    code: ErrorCode,
    description: &str,
) -> Result<Response, PageError> {
    match &request.kind {
        LoginKind::Device(hash) => {
            state.store().take_auth_request(&request.id).await?;
            state.store().deny_device_code(hash).await?;
            Ok(super::device::outcome_page(state, false))
        }
        LoginKind::Account => {
            state.store().take_auth_request(&request.id).await?;
            Err(error_page("Account disabled", "This account is disabled."))
        }
        LoginKind::Authorize => Ok(responder_for(state, request).error(code, description)),
    }
}

fn responder_for<'a>(state: &'a AppState, request: &AuthRequest) -> Responder<'a> {
    Responder {
        pages: state.pages(),
        redirect_uri: request.redirect_uri.clone(),
        state: request.state.clone(),
        issuer: state.config().issuer_str().to_owned(),
        mode: request.response_mode,
    }
}

pub(super) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// Creates the grant, then issues the code and sends it to the client; or, for a
/// device authorization, approves the device code; or, for the account page, goes
/// there.
pub(super) async fn finish(
    state: &AppState,
    request: AuthRequest,
    client: &Client,
    user: &User,
    stored: Stored,
) -> Result<Response, PageError> {
    if stored == Stored::Yes && !state.store().take_auth_request(&request.id).await? {
        return Err(error_page(
            "Sign-in already completed",
            "This sign-in was already completed or has expired.",
        ));
    }
    if request.kind == LoginKind::Account {
        return Ok(see_other(&format!(
            "{}/account",
            state.config().base_path()
        )));
    }
    let issued = state.now();
    let grant = Grant {
        id: keyward_proto::secret::random_urlsafe(16),
        client_id: client.client_id.clone(),
        user_id: user.id.clone(),
        scope: request.scope.clone(),
        auth_time: request.auth_time.unwrap_or(issued),
        nonce: request.nonce.clone(),
        created_at: issued,
        expires_at: issued + secs(state.config().refresh_token_ttl),
        revoked: false,
    };
    if let LoginKind::Device(hash) = &request.kind {
        if !state.store().approve_device_code(hash, &grant).await? {
            return Err(error_page(
                "Code expired",
                "This device code was already used, denied or has expired. Start again on your device.",
            ));
        }
        tracing::info!(user_id = %user.id, client_id = %client.client_id, "device authorized");
        return Ok(super::device::outcome_page(state, true));
    }
    let code = OpaqueToken::generate();
    let record = AuthCode {
        code_hash: code.hash(),
        grant_id: grant.id.clone(),
        client_id: client.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_given: request.redirect_uri_given,
        code_challenge: request.code_challenge.clone(),
        created_at: issued,
        expires_at: issued + secs(state.config().code_ttl),
    };
    state
        .store()
        .insert_grant_with_code(&grant, &record)
        .await?;
    Ok(responder_for(state, &request).send(&[("code", code.secret())]))
}

#[derive(Deserialize)]
struct RequestRef {
    req: String,
}

/// Loads a login in progress and checks it belongs to this browser. The account page's
/// sign-in has no client; it gets [`super::account::console_client`].
pub(super) async fn load_request(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(AuthRequest, Client), PageError> {
    let expired = || {
        error_page(
            "Sign-in expired",
            "This sign-in has expired or was already completed. Return to the application and start again.",
        )
    };
    let request = state
        .store()
        .get_auth_request(id, state.now())
        .await?
        .ok_or_else(expired)?;
    let bound = our_cookie(state, headers, BROWSER_COOKIE)
        .is_some_and(|value| request.browser_hash.matches(value));
    if !bound {
        return Err(error_page(
            "Sign-in interrupted",
            "This sign-in was started in another browser, or cookies are blocked. Return to the application and start again.",
        ));
    }
    let client = match request.kind {
        LoginKind::Account => super::account::console_client(),
        _ => state
            .store()
            .get_client(&request.client_id)
            .await?
            .ok_or_else(expired)?,
    };
    Ok((request, client))
}

pub(super) fn check_csrf(request: &AuthRequest, csrf: &str) -> Result<(), PageError> {
    if keyward_proto::secret::constant_time_eq(request.csrf.as_bytes(), csrf.as_bytes()) {
        Ok(())
    } else {
        Err(error_page(
            "Form expired",
            "The form was stale or forged. Go back to the application and start again.",
        ))
    }
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RequestRef>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Ok(Query(query)) = query else {
        return Err(error_page(
            "Invalid request",
            "The sign-in link is incomplete.",
        ));
    };
    let (request, client) = load_request(&state, &headers, &query.req).await?;
    Ok(render_login(
        &state,
        &request,
        &client,
        LoginNotice {
            username: request.login_hint.as_deref().unwrap_or(""),
            ..LoginNotice::default()
        },
    ))
}

/// What the login page says besides its forms.
#[derive(Default)]
pub(super) struct LoginNotice<'a> {
    /// The username to prefill.
    pub(super) username: &'a str,
    /// The address to prefill in the email forms.
    pub(super) email: &'a str,
    /// An error to show.
    pub(super) error: Option<&'a str>,
    /// The status to answer with (200 when `None`).
    pub(super) status: Option<StatusCode>,
}

/// The login page: a button for each upstream provider, a form for each emailed-link
/// connector, and the password form when that is enabled.
pub(super) fn render_login(
    state: &AppState,
    request: &AuthRequest,
    client: &Client,
    notice: LoginNotice<'_>,
) -> Response {
    let mut providers = Vec::new();
    let mut email_forms = Vec::new();
    for connector in state.connectors().all_enabled() {
        let item = minijinja::context! {
            id => connector.config.id,
            name => connector.config.name,
            kind => connector.config.kind.type_name(),
            initial => connector.config.name.chars().next().map(|c| c.to_uppercase().to_string()),
        };
        if connector.config.kind.uses_redirect() {
            providers.push(item);
        } else if matches!(connector.provider, crate::upstream::Provider::Email(_)) {
            email_forms.push(item);
        }
    }
    state.pages().render(
        notice.status.unwrap_or(StatusCode::OK),
        "login.html",
        minijinja::context! {
            client_name => client.name,
            account => request.kind == LoginKind::Account,
            req => request.id,
            csrf => request.csrf,
            username => notice.username,
            email => notice.email,
            error => notice.error,
            providers => providers,
            email_forms => email_forms,
            password => state.config().password_login().is_some(),
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    req: String,
    csrf: String,
    username: String,
    password: keyward_proto::ClientSecret,
}

async fn login_submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: LoginForm = page_form(body)?;
    let (request, client) = load_request(&state, &headers, &form.req).await?;
    check_csrf(&request, &form.csrf)?;
    let Some(password_login) = state.config().password_login() else {
        return Err(error_page(
            "Password sign-in is off",
            "This server does not accept passwords. Go back and choose another way to sign in.",
        ));
    };
    let username = form.username.trim();
    let store = state.store();
    let client_addr = addr.map(|a| a.to_string()).unwrap_or_default();
    let notice = |error, status| LoginNotice {
        username,
        error: Some(error),
        status: Some(status),
        ..LoginNotice::default()
    };
    // Counted before the password is checked, so parallel guesses are counted too.
    let known = known_browser(&state, &headers, username);
    let attempt = match throttle::password_attempt(store, username, addr, known, state.now())
        .await?
    {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            metrics::counter!("keyward_login_failures_total", "reason" => "throttled").increment(1);
            tracing::warn!(username = ?username, client = %client_addr, retry_after, "password sign-in throttled");
            let message = format!(
                "Too many failed sign-in attempts. Try again in {}.",
                wait_text(retry_after)
            );
            let page = render_login(
                &state,
                &request,
                &client,
                notice(&message, StatusCode::TOO_MANY_REQUESTS),
            );
            return Ok(with_retry_after(page, retry_after));
        }
    };
    let user = if username.is_empty() || username.len() > 256 {
        None
    } else {
        store.get_user_by_username(username).await?
    };
    let password_ok = crate::password::verify(
        form.password,
        user.as_ref().and_then(|u| u.password_hash.clone()),
    )
    .await?;
    let user = match user {
        Some(user) if password_ok => user,
        _ => {
            attempt.failed();
            metrics::counter!("keyward_login_failures_total", "reason" => "bad_credentials")
                .increment(1);
            tracing::warn!(username = ?username, client = %client_addr, client_id = %client.client_id, "failed password sign-in");
            return Ok(render_login(
                &state,
                &request,
                &client,
                notice("Invalid username or password.", StatusCode::UNAUTHORIZED),
            ));
        }
    };
    attempt.succeeded(store).await?;
    if user.disabled {
        metrics::counter!("keyward_login_failures_total", "reason" => "disabled").increment(1);
        tracing::warn!(user_id = %user.id, client = %client_addr, "sign-in to a disabled account");
        return Ok(render_login(
            &state,
            &request,
            &client,
            notice("This account is disabled.", StatusCode::FORBIDDEN),
        ));
    }
    tracing::info!(user_id = %user.id, client = %client_addr, client_id = %client.client_id, "password sign-in");
    let method = password_login.id.clone();
    let mut response = sign_in(&state, &headers, addr, request, &client, &user, &method).await?;
    remember_browser(&state, &mut response, username);
    Ok(response)
}

/// Cookie naming the account this browser last signed in to with a password: the MAC
/// of its name under the server's key, which nobody else can compute (nor learn the
/// name from). Such a browser is exempt from the account-wide password throttle, so
/// that guessers elsewhere cannot keep the owner out.
pub const KNOWN_BROWSER_COOKIE: &str = "keyward_known";

/// Whether this browser signed in to `username` with a password before.
fn known_browser(state: &AppState, headers: &HeaderMap, username: &str) -> bool {
    our_cookie(state, headers, KNOWN_BROWSER_COOKIE).is_some_and(|tag| {
        state.mac().verify(
            Purpose::KnownBrowser,
            username.to_lowercase().as_bytes(),
            tag,
        )
    })
}

/// Sets [`KNOWN_BROWSER_COOKIE`] for `username` (a year).
fn remember_browser(state: &AppState, response: &mut Response, username: &str) {
    let tag = state
        .mac()
        .tag(Purpose::KnownBrowser, username.to_lowercase().as_bytes());
    append_our_cookie(
        state,
        response,
        KNOWN_BROWSER_COOKIE,
        &tag,
        Some(365 * 86_400),
    );
}

/// Ends a successful sign-in: starts a browser session for `user` (a new session id at
/// every sign-in, so none can be fixed; the browser's previous session ends), records
/// the user on the login in progress and moves it on.
pub(super) async fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    request: AuthRequest,
    client: &Client,
    user: &User,
    method: &str,
) -> Result<Response, PageError> {
    let store = state.store();
    let at = state.now();
    if let Some(old) = our_cookie(state, headers, SESSION_COOKIE) {
        store.delete_session(&TokenHash::of(old)).await?;
    }
    let token = OpaqueToken::generate();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect::<String>());
    let session = Session {
        id_hash: token.hash(),
        user_id: user.id.clone(),
        auth_time: at,
        created_at: at,
        expires_at: at + secs(state.config().session_ttl),
        csrf: keyward_proto::secret::random_urlsafe(24),
        method: method.to_owned(),
        user_agent,
        ip: addr.map(|a| a.to_string()),
    };
    store.insert_session(&session).await?;
    store
        .set_auth_request_user(&request.id, &user.id, at)
        .await?;
    let request = AuthRequest {
        user_id: Some(user.id.clone()),
        auth_time: Some(at),
        ..request
    };
    let mut response = advance(state, request, client, Stored::Yes).await?;
    append_our_cookie(
        state,
        &mut response,
        SESSION_COOKIE,
        token.secret(),
        Some(state.config().session_ttl.as_secs()),
    );
    Ok(response)
}

/// What a scope lets an application do, for the consent page.
fn describe_scope(scope: &str) -> String {
    match scope {
        "openid" => "Confirm your identity".into(),
        "profile" => "See your name and username".into(),
        "email" => "See your email address".into(),
        "groups" => "See the groups and teams you belong to".into(),
        "offline_access" => "Stay signed in and act for you while you are away".into(),
        other => format!("Use the {other} permission"),
    }
}

async fn consent_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RequestRef>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Ok(Query(query)) = query else {
        return Err(error_page(
            "Invalid request",
            "The consent link is incomplete.",
        ));
    };
    let (request, client) = load_request(&state, &headers, &query.req).await?;
    let user = consenting_user(&state, &headers, &request).await?;
    let scopes: Vec<_> = request
        .scope
        .iter()
        .map(|s| minijinja::context! { name => s, description => describe_scope(s) })
        .collect();
    Ok(state.pages().render(
        StatusCode::OK,
        "consent.html",
        minijinja::context! {
            client_name => client.name,
            username => user.username,
            scopes => scopes,
            req => request.id,
            csrf => request.csrf,
            device => matches!(request.kind, LoginKind::Device(_)),
        },
    ))
}

/// The user who is asked to consent: the one the login in progress is for, and still
/// the one signed in in this browser. A consent (or device approval) submitted after
/// the browser signed out, or after someone else signed in there, is refused.
async fn consenting_user(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthRequest,
) -> Result<User, PageError> {
    let user_id = request
        .user_id
        .as_deref()
        .ok_or_else(|| error_page("Not signed in", "Sign in first."))?;
    match current_session(state, headers).await? {
        Some((_, user)) if user.id == user_id => Ok(user),
        _ => Err(error_page(
            "Signed out",
            "You are no longer signed in as the person this request was for. Go back to the application and start again.",
        )),
    }
}

#[derive(Deserialize)]
struct ConsentForm {
    req: String,
    csrf: String,
    decision: String,
}

async fn consent_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let form: ConsentForm = page_form(body)?;
    let (request, client) = load_request(&state, &headers, &form.req).await?;
    check_csrf(&request, &form.csrf)?;
    let user = consenting_user(&state, &headers, &request).await?;
    match form.decision.as_str() {
        "approve" => {
            let store = state.store();
            let mut approved = store
                .get_consent(&user.id, &client.client_id)
                .await?
                .unwrap_or_default();
            approved = approved.union(&request.scope);
            store
                .put_consent(&user.id, &client.client_id, &approved, state.now())
                .await?;
            finish(&state, request, &client, &user, Stored::Yes).await
        }
        "deny" => {
            if !matches!(request.kind, LoginKind::Device(_)) {
                state.store().take_auth_request(&request.id).await?;
            }
            reject(
                &state,
                &request,
                ErrorCode::AccessDenied,
                "the user denied the request",
            )
            .await
        }
        _ => Err(error_page("Invalid request", "Unknown decision.")),
    }
}
