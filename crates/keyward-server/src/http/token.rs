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
pub const REPEATABLE: &[&str] = &["audience", "resource"];

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

/// A token request body as read, before the client is authenticated.
pub struct TokenRequestBody {
    /// The grant type, one of [`GRANT_TYPES`].
    pub grant_type: String,
    /// The client credentials in the body, if any.
    pub credentials: ClientCredentialsInBody,
    /// The grant's own parameters.
    pub grant: GrantRequest,
}

/// The parameters of the grant a token request asks for.
pub enum GrantRequest {
    /// A token exchange (RFC 8693), whose `audience` and `resource` may repeat.
    Exchange(TokenExchangeRequest),
    /// Any other grant, no parameter repeated.
    Other(TokenRequest),
}

/// Reads a token request body (`application/x-www-form-urlencoded`, RFC 6749 §3.2):
/// the grant type first, to tell a missing (`invalid_request`) or unknown
/// (`unsupported_grant_type`) one from malformed parameters; then the client's body
/// credentials and the grant's parameters. Only [`REPEATABLE`] parameters of a token
/// exchange may repeat.
pub fn read_token_request(body: &[u8]) -> Result<TokenRequestBody, OAuthError> {
    let GrantTypeOnly { grant_type } = parse_form_repeating(body, REPEATABLE)?;
    let grant_type =
        grant_type.ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !GRANT_TYPES.contains(&grant_type.as_str()) {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type is not supported",
        ));
    }
    let credentials: ClientCredentialsInBody = parse_form_repeating(body, REPEATABLE)?;
    let grant = if grant_type == TOKEN_EXCHANGE_GRANT {
        GrantRequest::Exchange(
            TokenExchangeRequest::from_pairs(url::form_urlencoded::parse(body))
                .map_err(OAuthError::invalid_request)?,
        )
    } else {
        GrantRequest::Other(parse_form(body)?)
    };
    Ok(TokenRequestBody {
        grant_type,
        credentials,
        grant,
    })
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    let TokenRequestBody {
        grant_type,
        credentials,
        grant,
    } = read_token_request(&body)?;
    let request = match grant {
        GrantRequest::Exchange(request) => {
            let (client, _) = authenticate(&state, &headers, credentials).await?;
            if !client.allows_grant(&grant_type) {
                return Err(not_allowed(&grant_type).into());
            }
            let response =
                grants::exchange::exchange(&state.issuer(), &state.connectors(), &client, request)
                    .await?;
            state.metrics().increment(
                "keyward_tokens_issued_total",
                &[("grant_type", TOKEN_EXCHANGE_GRANT)],
            );
            return Ok((no_store(), Json(response)).into_response());
        }
        GrantRequest::Other(request) => request,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> OAuthError {
        match read_token_request(body.as_bytes()) {
            Ok(_) => panic!("{body} was read"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_token_request_names_a_known_grant_type_once() {
        assert_eq!(refused("code=x").code, ErrorCode::InvalidRequest);
        assert_eq!(
            refused("grant_type=password&username=a").code,
            ErrorCode::UnsupportedGrantType
        );
        let twice = refused("grant_type=refresh_token&grant_type=refresh_token");
        assert_eq!(twice.code, ErrorCode::InvalidRequest);
        let read =
            read_token_request(b"grant_type=client_credentials&client_id=svc&scope=a").unwrap();
        assert_eq!(read.grant_type, "client_credentials");
        assert_eq!(read.credentials.client_id.as_deref(), Some("svc"));
        assert!(matches!(
            read.grant,
            GrantRequest::Other(TokenRequest::ClientCredentials { scope: Some(_) })
        ));
    }

    #[test]
    fn only_a_token_exchange_repeats_audience() {
        let exchange = format!(
            "grant_type={}&subject_token=t&subject_token_type={}&audience=a&audience=b",
            urlencode(TOKEN_EXCHANGE_GRANT),
            urlencode("urn:ietf:params:oauth:token-type:access_token"),
        );
        let read = read_token_request(exchange.as_bytes()).unwrap();
        assert!(matches!(read.grant, GrantRequest::Exchange(_)));
        let other = refused("grant_type=client_credentials&audience=a&audience=b");
        assert_eq!(other.code, ErrorCode::InvalidRequest);
    }

    fn urlencode(text: &str) -> String {
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }
}
