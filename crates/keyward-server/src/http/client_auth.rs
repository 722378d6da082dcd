//! Client authentication at the token, introspection and revocation endpoints
//! (RFC 6749 §2.3.1): `client_secret_basic`, `client_secret_post`, or `none` for public
//! clients. Secrets are compared by SHA-256 in constant time.

use axum::http::HeaderMap;
use keyward_proto::ClientSecret;
use keyward_proto::token::ClientCredentialsInBody;

use super::error::{ApiError, OAuthError};
use super::extract::basic_credentials;
use crate::domain::Client;
pub use crate::domain::ClientAuth;
use crate::state::AppState;

/// Authenticates the client of a request from its headers and body credentials.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    body: ClientCredentialsInBody,
) -> Result<(Client, ClientAuth), ApiError> {
    let basic = basic_credentials(headers)?;
    let (client_id, secret) = match (basic, body.client_id, body.client_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            )
            .into());
        }
        (Some((id, secret)), body_id, None) => {
            if body_id.is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the Authorization header",
                )
                .into());
            }
            (id, Some(ClientSecret::new(secret)))
        }
        (None, Some(id), secret) => (id, secret),
        (None, None, _) => {
            return Err(OAuthError::invalid_client("client authentication required").into());
        }
    };
    let unknown = || OAuthError::invalid_client("unknown client or bad credentials");
    if client_id.len() > 256 {
        return Err(unknown().into());
    }
    let client = state
        .store()
        .get_client(&client_id)
        .await?
        .ok_or_else(unknown)?;
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if hash.matches(secret.secret()) => {
            Ok((client, ClientAuth::Secret))
        }
        (None, None) => Ok((client, ClientAuth::Public)),
        (None, Some(_)) => {
            Err(OAuthError::invalid_client("this is a public client; send no secret").into())
        }
        _ => Err(unknown().into()),
    }
}
