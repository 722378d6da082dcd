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

/// The client id and secret a request presents: from `Authorization: Basic` or from
/// the body (`client_secret_post`, or a public client's bare `client_id`), never both
/// methods at once, and a body `client_id` beside Basic credentials must name the same
/// client. Nothing is looked up: [`authenticate`] checks them.
pub fn presented_credentials(
    headers: &HeaderMap,
    body: ClientCredentialsInBody,
) -> Result<(String, Option<ClientSecret>), OAuthError> {
    let basic = basic_credentials(headers)?;
    match (basic, body.client_id, body.client_secret) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (Some((id, secret)), body_id, None) => {
            if body_id.is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the Authorization header",
                ));
            }
            Ok((id, Some(ClientSecret::new(secret))))
        }
        (None, Some(id), secret) => Ok((id, secret)),
        (None, None, _) => Err(OAuthError::invalid_client("client authentication required")),
    }
}

/// Authenticates the client of a request from its headers and body credentials.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    body: ClientCredentialsInBody,
) -> Result<(Client, ClientAuth), ApiError> {
    let (client_id, secret) = presented_credentials(headers, body)?;
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
        (Some(_), Some(secret)) if client.secret_matches(secret.secret(), state.now()) => {
            // The secret before the last rotation, within its grace period: the request
            // acts under the record as it was then, so that the tokens it gets carry
            // that secret's tag and end with the grace period, not an hour after it.
            let mut as_before = client;
            as_before.secret_hash = as_before.previous_secret.take().map(|p| p.hash);
            Ok((as_before, ClientAuth::Secret))
        }
        (None, None) => Ok((client, ClientAuth::Public)),
        (None, Some(_)) => {
            Err(OAuthError::invalid_client("this is a public client; send no secret").into())
        }
        _ => Err(unknown().into()),
    }
}
