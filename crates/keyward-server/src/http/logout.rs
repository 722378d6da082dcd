//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the
//! `end_session_endpoint`.
//!
//! `post_logout_redirect_uri` must be registered for the client named by the ID token
//! hint or `client_id`; anything else is an error page, never a redirect. A valid
//! `id_token_hint` for the signed-in user logs out at once; otherwise the user confirms
//! with a CSRF-protected form, so that a third-party page cannot sign anyone out.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_proto::TokenHash;
use keyward_proto::claims::IdTokenClaims;
use serde::Deserialize;
use url::Url;

use super::browser::{BROWSER_COOKIE, SESSION_COOKIE, csrf_matches, current_session};
use super::error::OAuthError;
use super::extract::{Body, append_our_cookie, form_value_bytes, our_cookie, parse_form};
use super::page_error::PageError;
use super::routes::Routes;
use crate::domain::ClientState;
use crate::issuer::ID_TOKEN_TYP;
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/logout", logout_get)
        .post("/logout", logout_post)
}

#[derive(Debug, Default, Deserialize)]
struct LogoutParams {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    client_id: Option<String>,
    csrf: Option<String>,
    decision: Option<String>,
}

impl LogoutParams {
    /// Parses a query string or form body. `state` goes back exactly as it came, through
    /// the confirmation page's form too, so it must be text: a `state` whose bytes are
    /// not UTF-8 (or hold NUL) is refused rather than returned altered.
    fn parse(input: &[u8]) -> Result<Self, OAuthError> {
        let params: Self = parse_form(input)?;
        let state_bytes = form_value_bytes(input, "state");
        if state_bytes.is_some_and(|b| ClientState::from_bytes(&b).text().is_none()) {
            return Err(OAuthError::invalid_request(
                "state must be UTF-8 text without NUL",
            ));
        }
        Ok(params)
    }
}

async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = LogoutParams::parse(query.unwrap_or_default().as_bytes());
    logout(&state, &headers, params, false).await
}

async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let params = body.and_then(|Body(bytes)| LogoutParams::parse(&bytes));
    logout(&state, &headers, params, true).await
}

fn bad(message: &str) -> PageError {
    PageError::bad_request("Sign-out failed", message)
}

async fn logout(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<LogoutParams, OAuthError>,
    is_post: bool,
) -> Result<Response, PageError> {
    let params = params.map_err(|e| bad(&e.description))?;

    // The ID token hint may have expired; its signature and issuer must still hold.
    let hint = match &params.id_token_hint {
        Some(token) => Some(
            state
                .keys()
                .verify::<IdTokenClaims>(token, ID_TOKEN_TYP, state.config().issuer_str(), true)
                .await
                .map_err(|_| bad("The id_token_hint is not an ID token issued by this server."))?,
        ),
        None => None,
    };
    let client_id = match (&hint, &params.client_id) {
        (Some(h), Some(id)) if h.aud != *id => {
            return Err(bad("client_id does not match the id_token_hint."));
        }
        (Some(h), _) => Some(h.aud.clone()),
        (None, id) => id.clone(),
    };
    let redirect = match &params.post_logout_redirect_uri {
        Some(uri) => Some(registered_return(state, client_id.as_deref(), uri).await?),
        None => None,
    };

    if let Some((session, user)) = current_session(state, headers).await? {
        let confirmed = is_post
            && params.decision.as_deref() == Some("logout")
            && params
                .csrf
                .as_deref()
                .is_some_and(|c| csrf_matches(&session.csrf, c));
        let hinted = hint.as_ref().is_some_and(|h| h.sub == user.id);
        if !(confirmed || hinted) {
            return Ok(state.pages().render(
                StatusCode::OK,
                "logout.html",
                minijinja::context! {
                    username => user.username,
                    csrf => session.csrf,
                    post_logout_redirect_uri => redirect,
                    client_id => client_id,
                    state => params.state,
                },
            ));
        }
        state.store().delete_session(&session.id_hash).await?;
        // Logins this browser had in progress (a consent page in another tab) end too.
        if let Some(browser) = our_cookie(state, headers, BROWSER_COOKIE) {
            state
                .store()
                .delete_browser_auth_requests(&TokenHash::of(browser))
                .await?;
        }
        tracing::info!(user_id = %user.id, "signed out");
    }

    let mut response = signed_out(state, redirect, params.state.as_deref())?;
    append_our_cookie(state, &mut response, SESSION_COOKIE, "", Some(0));
    Ok(response)
}

/// `post_logout_redirect_uri`, if it is registered for the client the request names
/// (by `client_id` or the ID token hint); anything else is an error page, never a
/// redirect.
async fn registered_return(
    state: &AppState,
    client_id: Option<&str>,
    uri: &str,
) -> Result<String, PageError> {
    let client_id = client_id
        .ok_or_else(|| bad("post_logout_redirect_uri needs client_id or id_token_hint."))?;
    let client = state
        .store()
        .get_client(client_id)
        .await?
        .ok_or_else(|| bad("Unknown application."))?;
    if !client.post_logout_redirect_uris.iter().any(|r| r == uri) {
        return Err(bad(
            "post_logout_redirect_uri is not registered for this application.",
        ));
    }
    Ok(uri.to_owned())
}

/// Where a signed-out browser goes: back to the application (with its `state`), or the
/// signed-out page.
fn signed_out(
    state: &AppState,
    redirect: Option<String>,
    client_state: Option<&str>,
) -> Result<Response, PageError> {
    Ok(match redirect {
        Some(uri) => {
            let mut url = Url::parse(&uri).map_err(|_| bad("Invalid post_logout_redirect_uri."))?;
            if let Some(value) = client_state {
                url.query_pairs_mut().append_pair("state", value);
            }
            Redirect::to(url.as_str()).into_response()
        }
        None => state
            .pages()
            .render(StatusCode::OK, "signed_out.html", minijinja::context! {}),
    })
}
