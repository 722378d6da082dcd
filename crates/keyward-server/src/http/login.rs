//! The login-in-progress machine every browser flow runs on: an [`AuthRequest`] in the
//! store, bound to the browser that started it, moved forward by `advance` through
//! the login page, single sign-on and consent to its end (`finish`): a code for the
//! client (in the request's response mode), a device approval, or the account page.
//! The authorization, device, Julia, connector and account endpoints all start or
//! continue logins through it; none of them calls another.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_proto::{ErrorCode, OpaqueToken, ScopeSet, TokenHash};
use serde::Deserialize;
use url::Url;

use super::browser::{
    BROWSER_COOKIE, Browser, SESSION_COOKIE, csrf_matches, current_session, see_other,
};
use super::extract::{append_our_cookie, our_cookie};
use super::page_error::PageError;
use super::provider::connector_buttons;
use crate::domain::{
    AuthCode, AuthRequest, Client, ClientState, CodeFlow, DeviceCode, Grant, LoginKind,
    ResponseMode, Session, SigningAlg, User, secs,
};
use crate::pages::Pages;
use crate::state::AppState;
use crate::store::UserClient;

pub(super) fn error_page(title: &'static str, message: impl Into<String>) -> PageError {
    PageError::bad_request(title, message)
}

/// Sends authorization responses and errors to the client's redirect URI, in the
/// request's response mode.
pub(super) struct Responder<'a> {
    /// The page renderer (`form_post` and `web_message` are pages).
    pub(super) pages: &'a Pages,
    /// Where the response goes.
    pub(super) redirect_uri: String,
    /// The client's `state`, returned as it came.
    pub(super) state: Option<ClientState>,
    /// This issuer (`iss`, RFC 9207).
    pub(super) issuer: String,
    /// How the response is delivered.
    pub(super) mode: ResponseMode,
}

impl Responder<'_> {
    /// Sends `pairs` (with `state` and `iss`) to the client.
    /// In a redirect, `state` goes back as the exact bytes the client sent; a page
    /// (`form_post`, `web_message`) can only carry text, and the authorization request
    /// refuses a state that is not.
    pub(super) fn send(&self, pairs: &[(&str, &str)]) -> Response {
        match self.mode {
            ResponseMode::Query => {
                let Ok(mut url) = Url::parse(&self.redirect_uri) else {
                    // Registered redirect URIs are validated URLs; this cannot happen.
                    return (StatusCode::BAD_REQUEST, "invalid redirect URI").into_response();
                };
                let query = redirect_query(url.query(), pairs, self.state.as_ref(), &self.issuer);
                url.set_query(Some(&query));
                Redirect::to(url.as_str()).into_response()
            }
            ResponseMode::FormPost | ResponseMode::WebMessage => self.send_in_page(pairs),
        }
    }

    fn send_in_page(&self, pairs: &[(&str, &str)]) -> Response {
        let state = self.state.as_ref().and_then(ClientState::text);
        let mut params: Vec<(&str, &str)> = pairs.to_vec();
        if let Some(state) = &state {
            params.push(("state", state));
        }
        params.push(("iss", &self.issuer));
        match self.mode {
            ResponseMode::Query | ResponseMode::FormPost => {
                self.pages.form_post(&self.redirect_uri, &params)
            }
            ResponseMode::WebMessage => match web_message_origin(&self.redirect_uri) {
                Some(origin) => self.pages.web_message(&origin, &params),
                None => (StatusCode::BAD_REQUEST, "invalid redirect URI").into_response(),
            },
        }
    }

    /// Sends an error to the client (RFC 6749 §4.1.2.1).
    pub(super) fn error(&self, code: ErrorCode, description: &str) -> Response {
        self.send(&[("error", code.as_str()), ("error_description", description)])
    }
}

/// The query of an authorization response redirect: the redirect URI's own query (kept,
/// RFC 6749 §3.1.2), then `pairs`, the client's `state` in its exact encoded bytes, and
/// `iss`.
pub(super) fn redirect_query(
    existing: Option<&str>,
    pairs: &[(&str, &str)],
    client_state: Option<&ClientState>,
    issuer: &str,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(existing.unwrap_or_default().to_owned());
    query.extend_pairs(pairs);
    let mut query = query.finish();
    if let Some(client_state) = client_state {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("state=");
        query.push_str(client_state.encoded());
    }
    url::form_urlencoded::Serializer::for_suffix(query, 0)
        .append_pair("iss", issuer)
        .finish()
}

/// The origin a `web_message` response is posted to: the redirect URI's scheme, host
/// and port. `None` for URIs without a web origin (custom schemes).
pub(super) fn web_message_origin(redirect_uri: &str) -> Option<String> {
    let url = Url::parse(redirect_uri).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) if matches!(url.scheme(), "http" | "https") => {
            Some(origin.ascii_serialization())
        }
        _ => None,
    }
}

/// Where and how the response of authorization request `flow` goes.
fn responder_for<'a>(state: &'a AppState, flow: &CodeFlow) -> Responder<'a> {
    Responder {
        pages: state.pages(),
        redirect_uri: flow.redirect_uri.clone(),
        state: flow.state.clone(),
        issuer: state.config().issuer_str().to_owned(),
        mode: flow.response_mode,
    }
}

/// Single sign-on: attaches the browser's session to a new login, unless the request
/// asks for a fresh login (`prompt=login`, or a `max_age` the session is older than).
/// Returns the session's user when attached (read with the session, enabled), for
/// [`advance`].
pub(super) async fn attach_session(
    state: &AppState,
    headers: &HeaderMap,
    request: &mut AuthRequest,
) -> Result<Option<User>, PageError> {
    if prompt_values(request.prompt.as_deref()).contains(&"login") {
        return Ok(None);
    }
    if let Some((session, user)) = current_session(state, headers).await? {
        // max_age=0 means "log in again", like prompt=login (OpenID Connect Core §3.1.2.1).
        let fresh_enough = request
            .max_age
            .is_none_or(|max| max > 0 && request.created_at - session.auth_time <= max);
        if fresh_enough {
            request.user_id = Some(session.user_id);
            request.auth_time = Some(session.auth_time);
            return Ok(Some(user));
        }
    }
    Ok(None)
}

/// The values of a space-separated `prompt`.
pub(super) fn prompt_values(prompt: Option<&str>) -> Vec<&str> {
    prompt
        .map(|p| p.split(' ').filter(|v| !v.is_empty()).collect())
        .unwrap_or_default()
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

/// Starts a sign-in to one of keyward's own pages (`kind` is [`LoginKind::Account`] or
/// [`LoginKind::Admin`]): a login in progress bound to this browser, which ends on
/// that page; a 303 to the login page, which always asks, whatever session the browser
/// has.
pub(super) async fn start_own_page_sign_in(
    state: &AppState,
    kind: LoginKind,
    addr: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Response, PageError> {
    debug_assert!(kind.is_own_page());
    let browser = Browser::of(state, headers);
    let at = state.now();
    let request = AuthRequest::new(
        kind,
        TokenHash::of(&browser.value),
        at,
        at + secs(state.config().login_ttl),
    );
    store_new_request(state, &request, addr).await?;
    let response = see_other(&format!(
        "{}/login?req={}",
        state.config().base_path(),
        request.id
    ));
    Ok(browser.set_if_new(state, response))
}

/// Moves a login forward: to the login page, the consent page, or the client. A
/// login not stored yet is stored before the browser is sent to a page. `signed_in` is
/// the signed-in user when the caller has just read them (enabled): for a first-party
/// client, whose consent never matters, the store is then not asked again.
pub(super) async fn advance(
    state: &AppState,
    request: AuthRequest,
    client: &Client,
    stored: Stored,
    signed_in: Option<User>,
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
    let signed_in = signed_in.filter(|u| &u.id == user_id && !u.disabled);
    let found = match signed_in {
        // needs_consent ignores a remembered approval for a first-party client.
        Some(user) if client.skip_consent => Some((user, None)),
        _ => {
            state
                .store()
                .get_user_with_consent(UserClient {
                    user_id,
                    client_id: &client.client_id,
                })
                .await?
        }
    };
    let (user, approved) = match found {
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
    let needs_consent = client.needs_consent(
        prompts.contains(&"consent"),
        approved.as_ref(),
        &request.scope(),
    );
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
pub(super) async fn reject(
    state: &AppState,
    request: &AuthRequest,
    code: ErrorCode,
    description: &str,
) -> Result<Response, PageError> {
    match &request.kind {
        LoginKind::Device {
            device_code_hash, ..
        } => {
            state.store().take_auth_request(&request.id).await?;
            state.store().deny_device_code(device_code_hash).await?;
            Ok(outcome_page(state, false))
        }
        LoginKind::Account | LoginKind::Admin => {
            state.store().take_auth_request(&request.id).await?;
            Err(error_page("Account disabled", "This account is disabled."))
        }
        LoginKind::Authorize(flow) => Ok(responder_for(state, flow).error(code, description)),
    }
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
    let issued = state.now();
    let auth_time = request.auth_time.unwrap_or(issued);
    let grant = |scope: ScopeSet, nonce: Option<String>| Grant {
        id: keyward_proto::secret::random_urlsafe(16),
        client_id: client.client_id.clone(),
        user_id: user.id.clone(),
        scope,
        auth_time,
        nonce,
        created_at: issued,
        expires_at: issued + secs(state.config().refresh_token_ttl),
        revoked: false,
    };
    let flow = match request.kind {
        LoginKind::Account => {
            return Ok(see_other(&format!(
                "{}/account",
                state.config().base_path()
            )));
        }
        LoginKind::Admin => {
            return Ok(see_other(&format!("{}/admin", state.config().base_path())));
        }
        LoginKind::Device {
            scope,
            device_code_hash,
            ..
        } => {
            if !state
                .store()
                .approve_device_code(&device_code_hash, &grant(scope, None))
                .await?
            {
                return Err(error_page(
                    "Code expired",
                    "This device code was already used, denied or has expired. Start again on your device.",
                ));
            }
            tracing::info!(user_id = %user.id, client_id = %client.client_id, "device authorized");
            return Ok(outcome_page(state, true));
        }
        LoginKind::Authorize(flow) => flow,
    };
    let grant = grant(flow.scope.clone(), flow.nonce.clone());
    let code = OpaqueToken::generate();
    let record = AuthCode {
        code_hash: code.hash(),
        grant_id: grant.id.clone(),
        client_id: client.client_id.clone(),
        redirect_uri: flow.redirect_uri.clone(),
        redirect_uri_given: flow.redirect_uri_given,
        code_challenge: flow.code_challenge.clone(),
        created_at: issued,
        expires_at: issued + secs(state.config().code_ttl),
    };
    state
        .store()
        .insert_grant_with_code(&grant, &record)
        .await?;
    Ok(responder_for(state, &flow).send(&[("code", code.secret())]))
}

#[derive(Deserialize)]
pub(super) struct RequestRef {
    /// The id of the login in progress.
    pub(super) req: String,
}

/// Loads a login in progress and checks it belongs to this browser. The account page's
/// sign-in has no client; it gets [`console_client`].
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
    let client = match request.client_id() {
        None => console_client(),
        Some(client_id) => state
            .store()
            .get_client(client_id)
            .await?
            .ok_or_else(expired)?,
    };
    Ok((request, client))
}

pub(super) fn check_csrf(request: &AuthRequest, csrf: &str) -> Result<(), PageError> {
    if csrf_matches(&request.csrf, csrf) {
        Ok(())
    } else {
        Err(error_page(
            "Form expired",
            "The form was stale or forged. Go back to the application and start again.",
        ))
    }
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
    let (providers, email_forms) = connector_buttons(state);
    state.pages().render(
        notice.status.unwrap_or(StatusCode::OK),
        "login.html",
        minijinja::context! {
            client_name => client.name,
            account => request.kind == LoginKind::Account,
            admin => request.kind == LoginKind::Admin,
            req => request.id,
            csrf => request.csrf,
            username => notice.username,
            email => notice.email,
            error => notice.error,
            providers => providers,
            email_forms => email_forms,
            password => state.connectors().password_login().is_some(),
        },
    )
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
    store.set_auth_request_user(&request.id, user, at).await?;
    let request = AuthRequest {
        user_id: Some(user.id.clone()),
        auth_time: Some(at),
        ..request
    };
    let mut response = advance(state, request, client, Stored::Yes, Some(user.clone())).await?;
    append_our_cookie(
        state,
        &mut response,
        SESSION_COOKIE,
        token.secret(),
        Some(state.config().session_ttl.as_secs()),
    );
    Ok(response)
}

/// The account page as the "client" of its own sign-in: first-party, no consent, no
/// redirect URI (the login ends on the page itself).
pub fn console_client() -> Client {
    Client {
        client_id: String::new(),
        name: "your account".into(),
        secret_hash: None,
        previous_secret: None,
        redirect_uris: Vec::new(),
        post_logout_redirect_uris: Vec::new(),
        grant_types: Vec::new(),
        scopes: ScopeSet::default(),
        skip_consent: true,
        introspect: false,
        id_token_alg: SigningAlg::ES256,
        created_at: 0,
    }
}

/// Starts the login that approves a pending device authorization: the code-flow login
/// and consent pages, ending on [`outcome_page`].
pub(super) async fn start_login(
    state: &AppState,
    addr: Option<IpAddr>,
    headers: &HeaderMap,
    browser: &Browser,
    device: DeviceCode,
) -> Result<Response, PageError> {
    let store = state.store();
    let at = state.now();
    let client = store.get_client(&device.client_id).await?.ok_or_else(|| {
        error_page(
            "Unknown application",
            "The device's application is no longer registered.",
        )
    })?;
    let kind = LoginKind::Device {
        client_id: client.client_id.clone(),
        scope: device.scope.clone(),
        device_code_hash: device.device_code_hash,
    };
    let mut request = AuthRequest {
        // A device login always asks, so nobody approves a stranger's code unawares.
        prompt: Some("consent".into()),
        ..AuthRequest::new(
            kind,
            TokenHash::of(&browser.value),
            at,
            device.expires_at.min(at + secs(state.config().login_ttl)),
        )
    };
    let signed_in = attach_session(state, headers, &mut request).await?;
    let response = advance(
        state,
        request,
        &client,
        Stored::No { from: addr },
        signed_in,
    )
    .await?;
    Ok(browser.set_if_new(state, response))
}

/// The page that ends a device login.
pub(super) fn outcome_page(state: &AppState, approved: bool) -> Response {
    state.pages().render(
        StatusCode::OK,
        "device_done.html",
        minijinja::context! { approved => approved },
    )
}
