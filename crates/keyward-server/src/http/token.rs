//! The token endpoint (RFC 6749 §3.2): the authorization code grant with PKCE, refresh
//! with idempotent rotation and reuse detection, client credentials and device codes.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keyward_proto::pkce::{CodeChallenge, CodeVerifier};
use keyward_proto::token::{ClientCredentialsInBody, GRANT_TYPES, TokenRequest, TokenResponse};
use keyward_proto::{ErrorCode, OpaqueToken, ScopeSet};

use super::client_auth::{ClientAuth, authenticate};
use super::error::{ApiError, OAuthError, no_store};
use super::extract::{Body, parse_form};
use crate::domain::{Client, CodeRedemption, DeviceCode, DeviceStatus, Grant, User, now};
use crate::state::AppState;
use crate::tokens;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/token", post(token))
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
    let GrantTypeOnly { grant_type } = parse_form(&body)?;
    let grant_type =
        grant_type.ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !GRANT_TYPES.contains(&grant_type.as_str()) {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type is not supported",
        )
        .into());
    }
    let request: TokenRequest = parse_form(&body)?;
    let credentials: ClientCredentialsInBody = parse_form(&body)?;
    let (client, auth) = authenticate(&state, &headers, credentials).await?;
    if !client.allows_grant(&grant_type) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("this client may not use {grant_type}"),
        )
        .into());
    }
    let response = match request {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => authorization_code(&state, &client, code, redirect_uri, code_verifier).await?,
        TokenRequest::RefreshToken {
            refresh_token,
            scope,
        } => refresh(&state, &client, refresh_token, scope).await?,
        TokenRequest::ClientCredentials { scope } => {
            client_credentials(&state, &client, auth, scope)?
        }
        TokenRequest::DeviceCode { device_code } => {
            device_code_grant(&state, &client, device_code).await?
        }
    };
    metrics::counter!("keyward_tokens_issued_total", "grant_type" => grant_type).increment(1);
    Ok((no_store(), Json(response)).into_response())
}

async fn authorization_code(
    state: &AppState,
    client: &Client,
    code: OpaqueToken,
    redirect_uri: Option<String>,
    verifier: Option<String>,
) -> Result<TokenResponse, ApiError> {
    let store = state.store();
    let at = now();
    let record = match store.redeem_code(&code.hash(), at).await? {
        CodeRedemption::Redeemed(record) => record,
        CodeRedemption::AlreadyUsed(record) => {
            // RFC 6749 §4.1.2 / RFC 9700 §4.5: a replayed code revokes what it issued.
            store.revoke_grant(&record.grant_id).await?;
            tracing::warn!(client_id = %client.client_id, grant_id = %record.grant_id, "authorization code replayed; grant revoked");
            return Err(OAuthError::invalid_grant(
                "authorization code already used; the tokens issued with it are revoked",
            )
            .into());
        }
        CodeRedemption::NotFound => {
            return Err(OAuthError::invalid_grant("unknown authorization code").into());
        }
    };
    if record.client_id != client.client_id {
        return Err(
            OAuthError::invalid_grant("authorization code was issued to another client").into(),
        );
    }
    if record.expires_at < at {
        return Err(OAuthError::invalid_grant("authorization code expired").into());
    }
    match (&redirect_uri, record.redirect_uri_given) {
        (Some(uri), _) if *uri != record.redirect_uri => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request",
            )
            .into());
        }
        (None, true) => return Err(OAuthError::invalid_request("redirect_uri is required").into()),
        _ => {}
    }
    let verifier =
        verifier.ok_or_else(|| OAuthError::invalid_request("code_verifier is required"))?;
    let verifier =
        CodeVerifier::new(verifier).map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let challenge = CodeChallenge::parse(&record.code_challenge)
        .map_err(|e| OAuthError::invalid_grant(e.to_string()))?;
    if !challenge.verify(&verifier) {
        return Err(
            OAuthError::invalid_grant("code_verifier does not match the code_challenge").into(),
        );
    }
    let (grant, user) = live_grant(state, &record.grant_id).await?;
    first_tokens(state, client, &grant, &user, grant.nonce.clone()).await
}

/// A grant that is not revoked, and its user, who is not disabled.
async fn live_grant(state: &AppState, grant_id: &str) -> Result<(Grant, User), ApiError> {
    let (grant, user) = state
        .store()
        .get_grant_with_user(grant_id)
        .await?
        .filter(|(g, _)| !g.revoked)
        .ok_or_else(|| OAuthError::invalid_grant("the authorization was revoked"))?;
    if user.disabled {
        return Err(OAuthError::invalid_grant("the user is disabled").into());
    }
    Ok((grant, user))
}

/// The first tokens of a new grant: an access token, an ID token when `openid` was
/// granted, and a refresh token when `offline_access` was and the client may refresh.
async fn first_tokens(
    state: &AppState,
    client: &Client,
    grant: &Grant,
    user: &User,
    nonce: Option<String>,
) -> Result<TokenResponse, ApiError> {
    let refresh = if grant.scope.contains("offline_access") && client.allows_grant("refresh_token")
    {
        let (token, record) = tokens::new_refresh_token(grant);
        state.store().insert_refresh_token(&record).await?;
        Some(token)
    } else {
        None
    };
    let scope = grant.scope.clone();
    Ok(tokens::user_grant_response(state, client, user, grant, &scope, nonce, refresh).await?)
}

/// RFC 8628 §3.4–3.5: a device polling for the outcome of its authorization.
async fn device_code_grant(
    state: &AppState,
    client: &Client,
    device_code: OpaqueToken,
) -> Result<TokenResponse, ApiError> {
    let store = state.store();
    let at = now();
    let hash = device_code.hash();
    // A Julia classic-flow login is claimed with its challenge at /auth/claimtoken
    // only: whoever saw its URL must not take the login by polling here.
    let record = store
        .get_device_code(&hash)
        .await?
        .filter(|record| !record.needs_challenge())
        .ok_or_else(|| OAuthError::invalid_grant("unknown device code"))?;
    if record.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("device code was issued to another client").into());
    }
    if record.expires_at < at {
        return Err(OAuthError::new(ErrorCode::ExpiredToken, "the device code has expired").into());
    }
    // Polling faster than the interval earns slow_down and a longer interval (§3.5).
    if record
        .last_poll_at
        .is_some_and(|last| at - last < record.interval)
    {
        store
            .record_device_poll(&hash, at, record.interval + 5)
            .await?;
        let message = format!("poll at most every {} seconds", record.interval + 5);
        return Err(OAuthError::new(ErrorCode::SlowDown, message).into());
    }
    store.record_device_poll(&hash, at, record.interval).await?;
    match record.status {
        DeviceStatus::Pending => {
            let message = "the user has not yet approved the device";
            Err(OAuthError::new(ErrorCode::AuthorizationPending, message).into())
        }
        DeviceStatus::Denied => {
            Err(OAuthError::new(ErrorCode::AccessDenied, "the user denied the device").into())
        }
        DeviceStatus::Used => {
            Err(OAuthError::invalid_grant("the device code was already used").into())
        }
        DeviceStatus::Approved => collect_device(state, client, &record).await,
    }
}

/// Hands an approved device authorization its tokens, once.
pub(super) async fn collect_device(
    state: &AppState,
    client: &Client,
    record: &DeviceCode,
) -> Result<TokenResponse, ApiError> {
    let store = state.store();
    if !store.consume_device_code(&record.device_code_hash).await? {
        return Err(OAuthError::invalid_grant("the device code was already used").into());
    }
    let grant_id = record.grant_id.as_deref().unwrap_or_default();
    let (grant, user) = live_grant(state, grant_id).await?;
    first_tokens(state, client, &grant, &user, None).await
}

/// Refresh with rotation (RFC 9700 §4.14.2), idempotent: the successor of a token is
/// derived from it ([`tokens::refresh_successor`]), so a rotated token presented again
/// while its successor has never been used gets that same successor back, however
/// late (a lost answer, a crash between commit and answer, two requests racing): one
/// chain, never a fork, and no grant lost to an outage. Once the successor has been
/// used, the old token coming back means it leaked: the whole grant is revoked.
pub(super) async fn refresh(
    state: &AppState,
    client: &Client,
    token: OpaqueToken,
    scope: Option<ScopeSet>,
) -> Result<TokenResponse, ApiError> {
    let store = state.store();
    let at = now();
    let hash = token.hash();
    let unknown = || OAuthError::invalid_grant("unknown, expired or revoked refresh token");
    let record = store.get_refresh_token(&hash).await?.ok_or_else(unknown)?;
    let (grant, user) = store
        .get_grant_with_user(&record.grant_id)
        .await?
        .ok_or_else(unknown)?;
    if grant.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("refresh token was issued to another client").into());
    }
    if grant.revoked || record.expires_at < at {
        return Err(unknown().into());
    }
    if user.disabled {
        return Err(OAuthError::invalid_grant("the user is disabled").into());
    }
    let scope = match scope {
        Some(requested) if !requested.is_subset(&grant.scope) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "requested scope exceeds the grant",
            )
            .into());
        }
        Some(requested) => requested,
        None => grant.scope.clone(),
    };
    let (successor, successor_record) = tokens::refresh_successor(state.mac(), &token, &grant, at);
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
            store.revoke_grant(&grant.id).await?;
            tracing::warn!(client_id = %client.client_id, grant_id = %grant.id, "a refresh token was used again after its successor; grant revoked");
            return Err(OAuthError::invalid_grant(
                "refresh token already used; the grant is revoked",
            )
            .into());
        }
    }
    Ok(
        tokens::user_grant_response(state, client, &user, &grant, &scope, None, Some(successor))
            .await?,
    )
}

fn client_credentials(
    state: &AppState,
    client: &Client,
    auth: ClientAuth,
    scope: Option<ScopeSet>,
) -> Result<TokenResponse, ApiError> {
    if auth != ClientAuth::Secret {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client_credentials needs a confidential client",
        )
        .into());
    }
    let mut allowed = client.scopes.clone();
    for user_scope in ["openid", "offline_access", "profile", "email"] {
        allowed.remove(user_scope);
    }
    let scope = match scope {
        Some(requested) if !requested.is_subset(&allowed) => {
            let refused = requested.difference(&allowed);
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("this client may not request: {refused}"),
            )
            .into());
        }
        Some(requested) => requested,
        None => allowed,
    };
    let (access, _) = tokens::access_token(state, client, &client.client_id, &scope, None)?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: Some(state.config().access_token_ttl.as_secs()),
        refresh_token: None,
        id_token: None,
        scope,
    })
}
