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

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use keyward_proto::{ErrorCode, ScopeSet, TokenHash};
use serde::Deserialize;

use super::browser::Browser;
use super::error::OAuthError;
use super::extract::{Body, ClientAddr, form_value_bytes, parse_form};
use super::login::{
    Responder, Stored, advance, attach_session, error_page, prompt_values, web_message_origin,
};
use super::page_error::PageError;
use super::routes::Routes;
use crate::domain::{
    AuthRequest, Client, ClientState, CodeFlow, LoginKind, ResponseMode, redirect_uri_matches, secs,
};
use crate::state::AppState;

/// Longest accepted `state`, `nonce` or `login_hint`.
const MAX_PARAM_LEN: usize = 2048;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/authorize", authorize_get)
        .post("/authorize", authorize_post)
}

/// The parameters of an authorization request.
#[derive(Debug, Default, Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    response_mode: Option<String>,
    scope: Option<String>,
    /// Not parsed as text: read by [`AuthorizeParams::parse`], byte-exact.
    #[serde(skip)]
    state: Option<ClientState>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    login_hint: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
}

impl AuthorizeParams {
    /// Parses a query string or form body; `state` keeps the bytes the client sent.
    fn parse(input: &[u8]) -> Result<Self, OAuthError> {
        let mut params: Self = parse_form(input)?;
        params.state = form_value_bytes(input, "state").map(|b| ClientState::from_bytes(&b));
        Ok(params)
    }
}

async fn authorize_get(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = AuthorizeParams::parse(query.unwrap_or_default().as_bytes());
    authorize(&state, addr, &headers, params).await
}

async fn authorize_post(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, PageError> {
    let params = body.and_then(|Body(bytes)| AuthorizeParams::parse(&bytes));
    authorize(&state, addr, &headers, params).await
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
    let (redirect_uri, redirect_uri_given) =
        redirect_target(&client, params.redirect_uri.as_deref())?;
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
    let flow = CodeFlow {
        client_id: client.client_id.clone(),
        scope: request.scope,
        redirect_uri,
        redirect_uri_given,
        state: params.state,
        nonce: params.nonce,
        code_challenge: request.code_challenge,
        response_mode: mode,
    };
    let mut auth_request = AuthRequest {
        prompt: params.prompt,
        max_age: request.max_age,
        login_hint: params.login_hint,
        ..AuthRequest::new(
            LoginKind::Authorize(flow),
            TokenHash::of(&browser.value),
            created,
            created + secs(state.config().login_ttl),
        )
    };

    let signed_in = attach_session(state, headers, &mut auth_request).await?;
    let prompts = prompt_values(auth_request.prompt.as_deref());
    if auth_request.user_id.is_none() && prompts.contains(&"none") {
        return Ok(responder.error(ErrorCode::LoginRequired, "the user is not signed in"));
    }
    // Not stored yet: a signed-in browser that needs no consent page gets its code at
    // once, and the store sees one write (the grant and its code) instead of three.
    let response = advance(
        state,
        auth_request,
        &client,
        Stored::No { from: addr },
        signed_in,
    )
    .await?;
    Ok(browser.set_if_new(state, response))
}

/// Where the response goes (RFC 6749 §3.1.2.3): the requested redirect URI if it is
/// registered, exactly, or on another port of a loopback IP (RFC 8252 §7.3, see
/// [`redirect_uri_matches`]); or the client's only one when none was named. The flag
/// says whether the request named it (then the token request must repeat it). Anything
/// else is a page, never a redirect.
fn redirect_target(client: &Client, requested: Option<&str>) -> Result<(String, bool), PageError> {
    match requested {
        Some(uri)
            if client
                .redirect_uris
                .iter()
                .any(|r| redirect_uri_matches(r, uri)) =>
        {
            Ok((uri.to_owned(), true))
        }
        Some(_) => Err(error_page(
            "Invalid redirect",
            "The redirect_uri does not match any redirect URI registered for this application.",
        )),
        None if client.redirect_uris.len() == 1 => Ok((client.redirect_uris[0].clone(), false)),
        None => Err(error_page(
            "Invalid request",
            "The request has no redirect_uri.",
        )),
    }
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
    if let Some(client_state) = &params.state {
        if client_state.len() > MAX_PARAM_LEN {
            return invalid(&format!("state is longer than {MAX_PARAM_LEN} bytes"));
        }
        let in_a_page = matches!(
            params
                .response_mode
                .as_deref()
                .and_then(ResponseMode::parse),
            Some(ResponseMode::FormPost | ResponseMode::WebMessage)
        );
        if in_a_page && client_state.text().is_none() {
            return invalid(
                "state must be UTF-8 text without NUL with response_mode=form_post or web_message",
            );
        }
    }
    for (name, value) in [("nonce", &params.nonce), ("login_hint", &params.login_hint)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_PARAM_LEN) {
            return invalid(&format!("{name} is longer than {MAX_PARAM_LEN} bytes"));
        }
    }
    let challenge = pkce_challenge(params)?;
    let scope = requested_scope(client, params.scope.as_deref())?;
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
        code_challenge: challenge,
        max_age,
    })
}

/// The PKCE challenge of a request (RFC 7636 §4.3): required, S256 only.
fn pkce_challenge(params: &AuthorizeParams) -> Result<String, (ErrorCode, String)> {
    let invalid = |d: &str| Err((ErrorCode::InvalidRequest, d.to_owned()));
    let Some(challenge) = &params.code_challenge else {
        return invalid("code_challenge is required (PKCE with S256)");
    };
    if params.code_challenge_method.as_deref() != Some("S256") {
        return invalid("code_challenge_method must be S256");
    }
    if keyward_proto::pkce::CodeChallenge::parse(challenge).is_err() {
        return invalid("code_challenge must be a base64url SHA-256 (43 characters)");
    }
    Ok(challenge.clone())
}

/// The scope of a request: what it names (the client's default when nothing), all of
/// which the client must be allowed (else `invalid_scope`); `offline_access` only for
/// a client that may refresh.
fn requested_scope(
    client: &Client,
    requested: Option<&str>,
) -> Result<ScopeSet, (ErrorCode, String)> {
    let mut scope = match requested {
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
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SigningAlg;

    fn client(redirects: &[&str], grants: &[&str], scopes: &str) -> Client {
        Client {
            client_id: "app".into(),
            name: "app".into(),
            secret_hash: None,
            previous_secret: None,
            redirect_uris: redirects.iter().map(|r| (*r).to_owned()).collect(),
            post_logout_redirect_uris: vec![],
            grant_types: grants.iter().map(|g| (*g).to_owned()).collect(),
            scopes: ScopeSet::parse(scopes).unwrap(),
            skip_consent: false,
            introspect: false,
            id_token_alg: SigningAlg::ES256,
            created_at: 0,
        }
    }

    #[test]
    fn the_redirect_uri_must_match_exactly() {
        let one = client(&["https://app.example/cb"], &[], "openid");
        assert_eq!(
            redirect_target(&one, Some("https://app.example/cb")).unwrap(),
            ("https://app.example/cb".to_owned(), true)
        );
        assert_eq!(
            redirect_target(&one, None).unwrap(),
            ("https://app.example/cb".to_owned(), false)
        );
        for near in [
            "https://app.example/cb/",
            "https://app.example/CB",
            "https://app.example/cb?x=1",
        ] {
            assert!(redirect_target(&one, Some(near)).is_err(), "{near}");
        }
        let two = client(
            &["https://a.example/cb", "https://b.example/cb"],
            &[],
            "openid",
        );
        assert!(redirect_target(&two, None).is_err(), "which one?");
        // A native app's loopback listener: any port, the rest exact (RFC 8252 §7.3).
        let native = client(&["http://127.0.0.1/callback"], &[], "openid");
        assert_eq!(
            redirect_target(&native, Some("http://127.0.0.1:49152/callback")).unwrap(),
            ("http://127.0.0.1:49152/callback".to_owned(), true)
        );
        for other in [
            "http://localhost:49152/callback",
            "http://127.0.0.1:49152/elsewhere",
        ] {
            assert!(redirect_target(&native, Some(other)).is_err(), "{other}");
        }
    }

    #[test]
    fn scopes_are_what_the_client_may_have() {
        let refreshing = client(
            &[],
            &["authorization_code", "refresh_token"],
            "openid profile offline_access",
        );
        assert_eq!(
            requested_scope(&refreshing, None).unwrap().to_string(),
            "openid profile"
        );
        assert_eq!(
            requested_scope(&refreshing, Some("openid offline_access"))
                .unwrap()
                .to_string(),
            "offline_access openid"
        );
        assert_eq!(
            requested_scope(&refreshing, Some("openid admin"))
                .unwrap_err()
                .0,
            ErrorCode::InvalidScope
        );
        let no_refresh = client(&[], &["authorization_code"], "openid offline_access");
        assert_eq!(
            requested_scope(&no_refresh, Some("openid offline_access"))
                .unwrap()
                .to_string(),
            "openid"
        );
    }
}
