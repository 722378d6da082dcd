//! The refresh token grant (RFC 6749 §6) with rotation (RFC 9700 §4.14.2), idempotent:
//! the successor of a token is derived from it ([`issuer::refresh_successor`]), so a
//! rotated token presented again while its successor has never been used gets that same
//! successor back, however late (a lost answer, a crash between commit and answer, two
//! requests racing): one chain, never a fork, and no grant lost to an outage. Once the
//! successor has been used, the old token coming back means it leaked: the whole grant
//! is revoked.

use keyward_proto::token::TokenResponse;
use keyward_proto::{ErrorCode, OpaqueToken, ScopeSet};

use super::GrantError;
use crate::domain::Client;
use crate::issuer::{self, Issuer};

/// Exchanges refresh token `token` of `client` for new tokens, narrowed to `scope` when
/// given.
pub async fn refresh(
    issuer: &Issuer<'_>,
    client: &Client,
    token: OpaqueToken,
    scope: Option<ScopeSet>,
) -> Result<TokenResponse, GrantError> {
    let store = issuer.store;
    let at = issuer.now();
    let hash = token.hash();
    let unknown = || GrantError::invalid_grant("unknown, expired or revoked refresh token");
    let (record, grant, user) = store
        .get_refresh_token_with_grant(&hash)
        .await?
        .ok_or_else(unknown)?;
    if grant.client_id != client.client_id {
        return Err(GrantError::invalid_grant(
            "refresh token was issued to another client",
        ));
    }
    if grant.revoked || record.expires_at < at {
        return Err(unknown());
    }
    if user.disabled {
        return Err(GrantError::invalid_grant("the user is disabled"));
    }
    let scope = match scope {
        Some(requested) if !requested.is_subset(&grant.scope) => {
            return Err(GrantError::refused(
                ErrorCode::InvalidScope,
                "requested scope exceeds the grant",
            ));
        }
        Some(requested) => requested,
        None => grant.scope.clone(),
    };
    let (successor, successor_record) = issuer::refresh_successor(issuer.mac, &token, &grant, at);
    // Not rotated yet: rotate. Exactly one request wins; the others (and every later
    // retry) find the token rotated and check its successor below.
    let rotated_now = record.rotated_at.is_none()
        && store
            .rotate_refresh_token(&hash, &successor_record, at)
            .await?;
    if !rotated_now {
        let successor_unused = store
            .get_refresh_token(&successor_record.token_hash)
            .await?
            .is_some_and(|s| s.rotated_at.is_none());
        if !successor_unused {
            // Many requests reusing one token may race here; one revokes the grant
            // (and says so), the others find it revoked.
            if store.revoke_grant(&grant.id).await? {
                tracing::warn!(client_id = %client.client_id, grant_id = %grant.id, "a refresh token was used again after its successor; grant revoked");
            }
            return Err(GrantError::invalid_grant(
                "refresh token already used; the grant is revoked",
            ));
        }
    }
    Ok(
        issuer::user_grant_response(issuer, client, &user, &grant, &scope, None, Some(successor))
            .await?,
    )
}
