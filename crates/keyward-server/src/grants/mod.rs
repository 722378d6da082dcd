//! The grants of the token endpoint: one module per grant, each a function from what the
//! client sent (already authenticated) to a token response or a [`GrantError`], with no
//! HTTP in sight. `http/token.rs` and the Julia protocol (`http/pkg.rs`) are thin
//! adapters over them; the protocol rules (code replay, rotation, polling, scopes) live
//! here, where unit and router tests can reach them.
//!
//! | module | grant |
//! |---|---|
//! | [`authorization_code`] | `authorization_code` with PKCE (RFC 6749 §4.1.3, RFC 7636) |
//! | [`refresh`] | `refresh_token` with idempotent rotation (RFC 6749 §6, RFC 9700 §4.14.2) |
//! | [`device`] | device authorization and `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628) |
//! | [`client_credentials`] | `client_credentials` (RFC 6749 §4.4) |
//! | [`exchange`] | `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693) |

use std::borrow::Cow;

use keyward_proto::ErrorCode;
use keyward_proto::token::TokenResponse;

use crate::domain::{Client, Grant, User};
use crate::issuer::{self, IssueError, Issuer};
use crate::store::StoreError;

pub mod authorization_code;
pub mod client_credentials;
pub mod device;
pub mod exchange;
pub mod refresh;

/// Why a grant gave no tokens.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Refused, with the RFC error code and a description for the client.
    #[error("{code}: {description}")]
    Refused {
        /// The OAuth error code.
        code: ErrorCode,
        /// What the client is told.
        description: Cow<'static, str>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Minting the tokens failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
}

impl GrantError {
    /// Refused with `code`.
    pub fn refused(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self::Refused {
            code,
            description: description.into(),
        }
    }

    /// `invalid_grant` (RFC 6749 §5.2).
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::refused(ErrorCode::InvalidGrant, description)
    }

    /// `invalid_request` (RFC 6749 §5.2).
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::refused(ErrorCode::InvalidRequest, description)
    }
}

/// A grant that is not revoked, and its user, who is not disabled.
async fn live_grant(issuer: &Issuer<'_>, grant_id: &str) -> Result<(Grant, User), GrantError> {
    let (grant, user) = issuer
        .store
        .get_grant_with_user(grant_id)
        .await?
        .filter(|(g, _)| !g.revoked)
        .ok_or_else(|| GrantError::invalid_grant("the authorization was revoked"))?;
    if user.disabled {
        return Err(GrantError::invalid_grant("the user is disabled"));
    }
    Ok((grant, user))
}

/// The first tokens of a new grant: an access token, an ID token when `openid` was
/// granted, and a refresh token when `offline_access` was and the client may refresh.
async fn first_tokens(
    issuer: &Issuer<'_>,
    client: &Client,
    grant: &Grant,
    user: &User,
    nonce: Option<String>,
) -> Result<TokenResponse, GrantError> {
    let refresh = if grant.scope.contains("offline_access") && client.allows_grant("refresh_token")
    {
        let (token, record) = issuer::new_refresh_token(grant, issuer.now());
        issuer.store.insert_refresh_token(&record).await?;
        Some(token)
    } else {
        None
    };
    let scope = grant.scope.clone();
    Ok(issuer::user_grant_response(issuer, client, user, grant, &scope, nonce, refresh).await?)
}
