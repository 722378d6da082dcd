//! The token endpoint (RFC 6749 §3.2): reads the request, authenticates the client,
//! checks it may use the grant, and hands over to [`crate::grants`], where the rules of
//! each grant live (token exchange, RFC 8693, included: its `audience` and `resource`
//! are the only parameters that may repeat).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keyward_proto::ErrorCode;
use keyward_proto::exchange::{TOKEN_EXCHANGE_GRANT, TokenExchangeRequest};
use keyward_proto::token::{ClientCredentialsInBody, GRANT_TYPES, TokenRequest};

use super::client_auth::authenticate;
use super::error::{ApiError, OAuthError, no_store};
use super::extract::{Body, parse_form, parse_form_repeating};
use super::routes::Routes;
use crate::grants;
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new().post("/token", token)
}

/// The parameters that may repeat in a token request (RFC 8693 §2.1).
const REPEATABLE: &[&str] = &["audience", "resource"];

/// `unauthorized_client`: the client is not registered for `grant_type`.
fn not_allowed(grant_type: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::UnauthorizedClient,
        format!("this client may not use {grant_type}"),
    )
}

#[derive(serde::Deserialize)]
struct GrantTypeOnly {
    grant_type: Option<String>,
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    // Read the grant type first, to tell a missing or unknown one from a malformed request.
    let GrantTypeOnly { grant_type } = parse_form_repeating(&body, REPEATABLE)?;
    let grant_type =
        grant_type.ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !GRANT_TYPES.contains(&grant_type.as_str()) {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type is not supported",
        )
        .into());
    }
    let credentials: ClientCredentialsInBody = parse_form_repeating(&body, REPEATABLE)?;
    if grant_type == TOKEN_EXCHANGE_GRANT {
        let request = TokenExchangeRequest::from_pairs(url::form_urlencoded::parse(&body))
            .map_err(OAuthError::invalid_request)?;
        let (client, _) = authenticate(&state, &headers, credentials).await?;
        if !client.allows_grant(&grant_type) {
            return Err(not_allowed(&grant_type).into());
        }
        let response =
            grants::exchange::exchange(&state.issuer(), state.connectors(), &client, request)
                .await?;
        state.metrics().increment(
            "keyward_tokens_issued_total",
            &[("grant_type", TOKEN_EXCHANGE_GRANT)],
        );
        return Ok((no_store(), Json(response)).into_response());
    }
    let request: TokenRequest = parse_form(&body)?;
    let (client, auth) = authenticate(&state, &headers, credentials).await?;
    if !client.allows_grant(&grant_type) {
        return Err(not_allowed(&grant_type).into());
    }
    let issuer = state.issuer();
    let response = match request {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            grants::authorization_code::redeem(&issuer, &client, code, redirect_uri, code_verifier)
                .await?
        }
        TokenRequest::RefreshToken {
            refresh_token,
            scope,
        } => grants::refresh::refresh(&issuer, &client, refresh_token, scope).await?,
        TokenRequest::ClientCredentials { scope } => {
            grants::client_credentials::issue(&issuer, &client, auth, scope)?
        }
        TokenRequest::DeviceCode { device_code } => {
            grants::device::poll(&issuer, &client, device_code).await?
        }
    };
    state.metrics().increment(
        "keyward_tokens_issued_total",
        &[("grant_type", &grant_type)],
    );
    Ok((no_store(), Json(response)).into_response())
}
