//! Signing in (and linking) through a connector: the browser's trip to an upstream
//! provider and back, and emailed links.
//!
//! | endpoint | what it does |
//! |---|---|
//! | `POST /login/{connector}` | from the login page: to the provider, or mail a link |
//! | `GET /callback/{connector}` | the provider's redirect back (`code`, `state`), or an emailed link (`token`), which asks for one click so that mail scanners opening links do not use them up |
//! | `POST /callback/{connector}` | that click |
//!
//! A sign-in at a provider is a [`ConnectorLogin`] in the store, found by the hash of
//! the `state` (or emailed token), taken once, and bound to the browser that started it
//! by the browser cookie: a `state` or link carried to another browser is refused.
//! [`crate::accounts::resolve`] then decides which account it is.

use std::net::IpAddr;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyward_proto::TokenHash;
use serde::Deserialize;

use super::browser::{BROWSER_COOKIE, current_session};
use super::error::OAuthError;
use super::extract::{Body, ClientAddr, our_cookie, parse_form};
use super::login::{LoginNotice, check_csrf, load_request, prompt_values, render_login, sign_in};
use super::page_error::{PageError, page_form};
use super::provider::{email_sent_page, not_found, send_email_link, to_account, to_provider};
use super::routes::Routes;
use crate::accounts::{self, AccountError, Intent, Outcome};
use crate::domain::{AuthRequest, ConnectorLogin, ConnectorPurpose, LoginKind, User};
use crate::state::AppState;
use crate::upstream::email::normalize_address;
use crate::upstream::{Connector, Provider, UpstreamError, UpstreamIdentity};

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .post("/login/{connector}", start)
        .get("/callback/{connector}", callback)
        .post("/callback/{connector}", email_confirmed)
}

fn expired() -> PageError {
    PageError::bad_request(
        "Sign-in expired",
        "This sign-in has expired or was already used. Go back to the application and start again.",
    )
}

/// An enabled connector by id.
fn connector(state: &AppState, id: &str) -> Result<std::sync::Arc<Connector>, PageError> {
    state.connectors().enabled(id).ok_or_else(not_found)
}

#[derive(Deserialize)]
struct StartForm {
    req: String,
    csrf: String,
    email: Option<String>,
}

/// `POST /login/{connector}`: leaves the login page for the provider, or mails a link.
async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let connector = connector(&state, &id)?;
    let form: StartForm = page_form(body)?;
    let (request, client) = load_request(&state, &headers, &form.req).await?;
    check_csrf(&request, &form.csrf)?;
    // Each press stores a sign-in at the provider (or a link): limit them per address.
    state.creations().allow(addr).map_err(PageError::too_many)?;
    let purpose = ConnectorPurpose::Login(request.id.clone());
    match &connector.provider {
        Provider::Email(_) => {
            let typed = form.email.as_deref().unwrap_or("");
            let Some(address) = normalize_address(typed) else {
                return Ok(render_login(
                    &state,
                    &request,
                    &client,
                    LoginNotice {
                        email: typed,
                        error: Some("Enter a valid email address."),
                        status: Some(StatusCode::BAD_REQUEST),
                        ..LoginNotice::default()
                    },
                ));
            };
            let back = format!("{}/login?req={}", state.config().base_path(), request.id);
            send_email_link(
                &state,
                &connector,
                &address,
                purpose,
                request.browser_hash.clone(),
                addr,
            )
            .await?;
            Ok(email_sent_page(&state, &address, Some(&back)))
        }
        Provider::Oidc(_) | Provider::Github(_) => {
            let fresh = asks_for_fresh_sign_in(&request);
            to_provider(
                &state,
                &connector,
                purpose,
                request.browser_hash.clone(),
                fresh,
            )
            .await
        }
    }
}

/// Whether a login must not be satisfied by a session the provider already has: when
/// the client asked keyward for one (`prompt=login`, `max_age=0`), and always for the
/// admin console. The provider is then asked for one too (`prompt=login`).
fn asks_for_fresh_sign_in(request: &AuthRequest) -> bool {
    prompt_values(request.prompt.as_deref()).contains(&"login")
        || request.max_age == Some(0)
        || request.kind == LoginKind::Admin
}

#[derive(Debug, Default, Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    token: Option<String>,
}

/// `GET /callback/{connector}`.
async fn callback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let connector = connector(&state, &id)?;
    let params: CallbackParams = parse_form(query.unwrap_or_default().as_bytes())
        .map_err(|e| PageError::bad_request("Invalid request", e.description))?;
    match &connector.provider {
        Provider::Email(_) => {
            let token = params
                .token
                .filter(|t| t.len() <= 128)
                .ok_or_else(expired)?;
            Ok(state.pages().render(
                StatusCode::OK,
                "email_confirm.html",
                minijinja::context! {
                    connector => connector.config.id,
                    token => token,
                    name => state.config().issuer.host_str(),
                },
            ))
        }
        Provider::Oidc(_) | Provider::Github(_) => {
            let value = params.state.as_deref().ok_or_else(expired)?;
            let login = take_login(&state, &headers, &connector, value).await?;
            if let Some(error) = &params.error {
                let refused = UpstreamError::Refused {
                    error: error.chars().take(64).collect(),
                    description: params
                        .error_description
                        .as_ref()
                        .map(|d| d.chars().take(200).collect()),
                };
                return failed(&state, &headers, &connector, &login, &refused).await;
            }
            let code = params.code.as_deref().ok_or_else(|| {
                PageError::bad_request("Invalid request", "The provider sent no code.")
            })?;
            let redirect_uri = state.config().connector_redirect_uri(&connector.config.id);
            let verifier = login.code_verifier.as_deref().unwrap_or_default();
            let identity = match &connector.provider {
                Provider::Oidc(provider) => {
                    let nonce = login.nonce.as_deref().unwrap_or_default();
                    provider.finish(&redirect_uri, code, nonce, verifier).await
                }
                Provider::Github(provider) => provider.finish(&redirect_uri, code, verifier).await,
                Provider::Email(_) => return Err(not_found()),
            };
            match identity {
                Ok(identity) => complete(&state, &headers, addr, &connector, login, identity).await,
                Err(e) => failed(&state, &headers, &connector, &login, &e).await,
            }
        }
    }
}

#[derive(Deserialize)]
struct ConfirmForm {
    token: String,
}

/// `POST /callback/{connector}`: the click that uses an emailed link.
async fn email_confirmed(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let connector = connector(&state, &id)?;
    if !matches!(connector.provider, Provider::Email(_)) {
        return Err(not_found());
    }
    let form: ConfirmForm = page_form(body)?;
    let login = take_login(&state, &headers, &connector, &form.token).await?;
    let address = login.email.clone().ok_or_else(expired)?;
    let identity = UpstreamIdentity {
        subject: address.clone(),
        email: Some(address),
        email_verified: true,
        ..UpstreamIdentity::default()
    };
    complete(&state, &headers, addr, &connector, login, identity).await
}

/// Takes the sign-in `value` (a state or emailed token) names, if it belongs to this
/// connector and this browser.
async fn take_login(
    state: &AppState,
    headers: &HeaderMap,
    connector: &Connector,
    value: &str,
) -> Result<ConnectorLogin, PageError> {
    if value.is_empty() || value.len() > 128 {
        return Err(expired());
    }
    let login = state
        .store()
        .take_connector_login(&TokenHash::of(value), state.now())
        .await?
        .filter(|l| l.connector_id == connector.config.id)
        .ok_or_else(expired)?;
    let same_browser = our_cookie(state, headers, BROWSER_COOKIE)
        .is_some_and(|value| login.browser_hash.matches(value));
    if !same_browser {
        return Err(PageError::bad_request(
            "Open this in the browser you started in",
            "This sign-in was started in another browser (or cookies are blocked), so it cannot finish here. Start again in this browser.",
        ));
    }
    Ok(login)
}

/// A provider sign-in that did not work: back to the login page with what happened,
/// or to the account page when linking.
async fn failed(
    state: &AppState,
    headers: &HeaderMap,
    connector: &Connector,
    login: &ConnectorLogin,
    error: &UpstreamError,
) -> Result<Response, PageError> {
    let name = &connector.config.name;
    let result = if error.is_user_facing() {
        "refused"
    } else {
        "failed"
    };
    state.metrics().increment(
        "keyward_upstream_logins_total",
        &[("connector", &connector.config.id), ("result", result)],
    );
    let message = match error {
        UpstreamError::Refused { error, .. } if error == "access_denied" => {
            format!("Signing in with {name} was cancelled.")
        }
        UpstreamError::NotAllowed(why) => why.clone(),
        e if e.is_user_facing() => format!("{name} refused the sign-in: {e}."),
        e => {
            tracing::warn!(connector = %connector.config.id, error = %e, "upstream sign-in failed");
            format!("Signing in with {name} did not work. Try again in a moment.")
        }
    };
    match &login.purpose {
        ConnectorPurpose::Link(_) => Ok(to_account(state, "link-failed")),
        ConnectorPurpose::Login(request_id) => {
            let (request, client) = load_request(state, headers, request_id).await?;
            Ok(render_login(
                state,
                &request,
                &client,
                LoginNotice {
                    error: Some(&message),
                    status: Some(StatusCode::FORBIDDEN),
                    ..LoginNotice::default()
                },
            ))
        }
    }
}

/// The provider vouched for `identity`: sign in to (or link) the account it belongs to.
async fn complete(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    connector: &Connector,
    login: ConnectorLogin,
    identity: UpstreamIdentity,
) -> Result<Response, PageError> {
    let at = state.now();
    match login.purpose {
        ConnectorPurpose::Login(request_id) => {
            let (request, client) = load_request(state, headers, &request_id).await?;
            // An ordinary sign-in never links to whoever is signed in here; signing in
            // ends that session (sign_in), so the browser holds only the new account.
            let message = match accounts::resolve(
                state.store(),
                &connector.config,
                &identity,
                Intent::SignIn,
                &state.config().reserved_usernames,
                at,
            )
            .await
            {
                Ok((user, outcome)) => {
                    tracing::info!(user_id = %user.id, connector = %connector.config.id, ?outcome, "upstream sign-in");
                    state.metrics().increment(
                        "keyward_upstream_logins_total",
                        &[("connector", &connector.config.id), ("result", "ok")],
                    );
                    return sign_in(
                        state,
                        headers,
                        addr,
                        request,
                        &client,
                        &user,
                        &connector.config.id,
                    )
                    .await;
                }
                Err(AccountError::Disabled) => "This account is disabled.".to_owned(),
                Err(AccountError::NoAccount) => format!(
                    "No account here is linked to this {} identity. Sign in another way, then link it on your account page.",
                    connector.config.name
                ),
                Err(AccountError::HeldByAnother) => {
                    "This identity belongs to another account.".into()
                }
                Err(AccountError::Store(e)) => return Err(e.into()),
            };
            Ok(render_login(
                state,
                &request,
                &client,
                LoginNotice {
                    error: Some(&message),
                    status: Some(StatusCode::FORBIDDEN),
                    ..LoginNotice::default()
                },
            ))
        }
        ConnectorPurpose::Link(user_id) => {
            // Linking needs the same account still signed in here.
            let signed_in = current_session(state, headers).await?;
            let Some((_, user)) = signed_in.filter(|(_, u)| u.id == user_id) else {
                return Err(PageError::bad_request(
                    "Signed out",
                    "You were signed out while linking. Sign in and try again from your account page.",
                ));
            };
            let notice = link(state, connector, &user, &identity, at).await?;
            Ok(to_account(state, notice))
        }
    }
}

async fn link(
    state: &AppState,
    connector: &Connector,
    user: &User,
    identity: &UpstreamIdentity,
    at: i64,
) -> Result<&'static str, PageError> {
    Ok(
        match accounts::resolve(
            state.store(),
            &connector.config,
            identity,
            Intent::Link(user),
            &state.config().reserved_usernames,
            at,
        )
        .await
        {
            Ok((_, Outcome::Existing)) => "already-linked",
            Ok((_, _)) => "linked",
            Err(AccountError::HeldByAnother) => "held-by-another",
            Err(AccountError::Disabled) => "disabled",
            Err(AccountError::NoAccount) => "link-failed",
            Err(AccountError::Store(e)) => return Err(e.into()),
        },
    )
}

#[cfg(test)]
mod tests {
    use keyward_proto::TokenHash;

    use super::*;

    /// Attack: someone at an administrator's browser, whose keyward session is stale but
    /// whose provider session is not, must not pass the console's fresh sign-in by the
    /// provider's say-so.
    #[test]
    fn the_admin_console_and_clients_asking_for_it_get_a_fresh_upstream_sign_in() {
        let request = |kind: LoginKind| AuthRequest::new(kind, TokenHash::of("b"), 1, 2);
        assert!(asks_for_fresh_sign_in(&request(LoginKind::Admin)));
        assert!(!asks_for_fresh_sign_in(&request(LoginKind::Account)));
        let mut asked = request(LoginKind::Account);
        asked.prompt = Some("consent login".into());
        assert!(asks_for_fresh_sign_in(&asked));
        asked.prompt = None;
        asked.max_age = Some(0);
        assert!(asks_for_fresh_sign_in(&asked));
        asked.max_age = Some(60);
        assert!(!asks_for_fresh_sign_in(&asked));
    }
}
