//! Device authorization (RFC 8628): starting one (§3.1–3.2: a device code and a user
//! code, stored pending), and the device code grant (§3.4–3.5), polled by the device
//! until the user approves or denies on `/device`, or the codes expire. A Julia
//! classic-flow login is a device authorization too, bound to the client's challenge;
//! it is claimed only at `/auth/claimtoken` ([`collect`]), never polled here.

use keyward_proto::device::UserCode;
use keyward_proto::token::TokenResponse;
use keyward_proto::{ErrorCode, OpaqueToken, ScopeSet, TokenHash};

use super::{GrantError, first_tokens, live_grant};
use crate::domain::{Client, DeviceCode, DeviceStatus, secs};
use crate::issuer::Issuer;
use crate::store::StoreError;

/// How much longer the interval gets at each `slow_down` (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: i64 = 5;

/// The scope a device authorization gets: what was asked for, if the client may have
/// all of it (else `invalid_scope`), or the client's default scope.
pub fn requested_scope(
    client: &Client,
    requested: Option<ScopeSet>,
) -> Result<ScopeSet, GrantError> {
    match requested {
        Some(requested) => {
            let refused = requested.difference(&client.scopes);
            if refused.is_empty() {
                Ok(requested)
            } else {
                Err(GrantError::refused(
                    ErrorCode::InvalidScope,
                    format!("this client may not request: {refused}"),
                ))
            }
        }
        None => Ok(client.default_scope()),
    }
}

/// Stores a pending device authorization for `device_code` and returns its new user
/// code (drawing again on the rare clash with a live one). `challenge_hash` binds a
/// Julia classic-flow login to its client's challenge.
pub async fn start(
    issuer: &Issuer<'_>,
    client_id: &str,
    scope: ScopeSet,
    device_code: &OpaqueToken,
    challenge_hash: Option<TokenHash>,
) -> Result<UserCode, StoreError> {
    let config = issuer.config;
    let issued = issuer.now();
    let mut attempts = 0;
    loop {
        let user_code = UserCode::generate();
        let record = DeviceCode {
            device_code_hash: device_code.hash(),
            user_code: user_code.as_str().to_owned(),
            client_id: client_id.to_owned(),
            scope: scope.clone(),
            created_at: issued,
            expires_at: issued + secs(config.device_code_ttl),
            interval: secs(config.device_poll_interval),
            last_poll_at: None,
            status: DeviceStatus::Pending,
            grant_id: None,
            challenge_hash: challenge_hash.clone(),
        };
        match issuer.store.insert_device_code(&record).await {
            Ok(()) => return Ok(user_code),
            Err(StoreError::Conflict(_)) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A device polling for the outcome of its authorization (§3.4–3.5):
/// `authorization_pending`, `slow_down` (and a longer interval) when it polls too
/// often, `access_denied`, `expired_token`, or the tokens, once.
pub async fn poll(
    issuer: &Issuer<'_>,
    client: &Client,
    device_code: OpaqueToken,
) -> Result<TokenResponse, GrantError> {
    let store = issuer.store;
    let at = issuer.now();
    let hash = device_code.hash();
    // One trip: the poll recorded, and the slow-down decided, in the same statement.
    let Some((record, too_soon)) = store
        .poll_device_code(&hash, &client.client_id, at, SLOW_DOWN_STEP)
        .await?
    else {
        return Err(why_not_polled(issuer, client, &hash, at).await?);
    };
    if too_soon {
        let message = format!("poll at most every {} seconds", record.interval);
        return Err(GrantError::refused(ErrorCode::SlowDown, message));
    }
    match record.status {
        DeviceStatus::Pending => Err(GrantError::refused(
            ErrorCode::AuthorizationPending,
            "the user has not yet approved the device",
        )),
        DeviceStatus::Denied => Err(GrantError::refused(
            ErrorCode::AccessDenied,
            "the user denied the device",
        )),
        DeviceStatus::Used => Err(GrantError::invalid_grant(
            "the device code was already used",
        )),
        DeviceStatus::Approved => collect(issuer, client, &record).await,
    }
}

/// Why a poll found no live device authorization of `client` with that code (the rare
/// path: a second look, to answer precisely).
async fn why_not_polled(
    issuer: &Issuer<'_>,
    client: &Client,
    hash: &TokenHash,
    at: i64,
) -> Result<GrantError, GrantError> {
    // A Julia classic-flow login is claimed with its challenge at /auth/claimtoken
    // only: whoever saw its URL must not take the login by polling here.
    let Some(record) = issuer
        .store
        .get_device_code(hash)
        .await?
        .filter(|record| !record.needs_challenge())
    else {
        return Ok(GrantError::invalid_grant("unknown device code"));
    };
    if record.client_id != client.client_id {
        return Ok(GrantError::invalid_grant(
            "device code was issued to another client",
        ));
    }
    if record.expires_at < at {
        return Ok(GrantError::refused(
            ErrorCode::ExpiredToken,
            "the device code has expired",
        ));
    }
    Ok(GrantError::invalid_grant("unknown device code"))
}

/// Hands an approved device authorization its tokens, once.
pub async fn collect(
    issuer: &Issuer<'_>,
    client: &Client,
    record: &DeviceCode,
) -> Result<TokenResponse, GrantError> {
    if !issuer
        .store
        .consume_device_code(&record.device_code_hash)
        .await?
    {
        return Err(GrantError::invalid_grant(
            "the device code was already used",
        ));
    }
    let grant_id = record.grant_id.as_deref().unwrap_or_default();
    let (grant, user) = live_grant(issuer, grant_id).await?;
    first_tokens(issuer, client, &grant, &user, None).await
}
