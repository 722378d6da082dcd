//! Token introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Introspection is for confidential clients: a resource server (registered with
//! `introspect = true`) learns about any token, other clients only about their own (any
//! other token is `{"active": false}` to them). Either kind of token is recognised by
//! its shape: access tokens are JWTs, refresh tokens are opaque. Revocation answers 200 whatever the token was (RFC 7009 §2.2); revoking a
//! refresh token revokes its whole grant, and with it the grant's access tokens.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keyward_proto::claims::AccessTokenClaims;
use keyward_proto::introspect::{IntrospectionRequest, IntrospectionResponse, RevocationRequest};
use keyward_proto::token::ClientCredentialsInBody;

use super::client_auth::{ClientAuth, authenticate};
use super::error::{ApiError, OAuthError, no_store};
use super::extract::{Body, parse_form};
use super::routes::Routes;
use crate::domain::Client;
use crate::issuer::{ACCESS_TOKEN_TYP, validate_access_token};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .post("/introspect", introspect)
        .post("/revoke", revoke)
}

/// Whether `client` may learn what introspection says about a token: a resource
/// server (`introspect = true`) may about any token, other clients only about their
/// own. To anyone else a token is just inactive (RFC 7662 §2.2), so that a client
/// cannot find out whose a stolen token is.
fn may_see(client: &Client, info: &IntrospectionResponse) -> bool {
    client.introspect || info.client_id.as_deref() == Some(client.client_id.as_str())
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    let credentials: ClientCredentialsInBody = parse_form(&body)?;
    let (client, auth) = authenticate(&state, &headers, credentials).await?;
    if auth != ClientAuth::Secret {
        return Err(OAuthError::invalid_client("introspection needs a confidential client").into());
    }
    let request: IntrospectionRequest = parse_form(&body)?;
    let token = request.token.secret();
    let answer = if looks_like_jwt(token) {
        access_token_info(&state, token).await?
    } else {
        refresh_token_info(&state, token).await?
    };
    let answer = answer.filter(|info| may_see(&client, info));
    Ok((no_store(), Json(answer.unwrap_or_default())).into_response())
}

async fn access_token_info(
    state: &AppState,
    token: &str,
) -> Result<Option<IntrospectionResponse>, ApiError> {
    let Ok(valid) = validate_access_token(&state.issuer(), token).await? else {
        return Ok(None);
    };
    let claims = valid.claims;
    Ok(Some(IntrospectionResponse {
        active: true,
        scope: Some(claims.scope),
        client_id: Some(claims.client_id),
        username: valid.user.map(|u| u.username),
        token_type: Some("Bearer".into()),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        sub: Some(claims.sub),
        aud: Some(claims.aud),
        iss: Some(claims.iss),
        jti: Some(claims.jti),
        act: claims.act,
    }))
}

async fn refresh_token_info(
    state: &AppState,
    token: &str,
) -> Result<Option<IntrospectionResponse>, ApiError> {
    let store = state.store();
    let Some(record) = store
        .get_refresh_token(&keyward_proto::TokenHash::of(token))
        .await?
    else {
        return Ok(None);
    };
    let Some((grant, user)) = store.get_grant_with_user(&record.grant_id).await? else {
        return Ok(None);
    };
    if grant.revoked
        || user.disabled
        || record.rotated_at.is_some()
        || record.expires_at < state.now()
    {
        return Ok(None);
    }
    Ok(Some(IntrospectionResponse {
        active: true,
        scope: Some(grant.scope.to_string()),
        client_id: Some(grant.client_id.clone()),
        username: Some(user.username),
        token_type: Some("refresh_token".into()),
        exp: Some(record.expires_at),
        iat: Some(record.created_at),
        sub: Some(user.id),
        aud: Some(grant.client_id.into()),
        iss: Some(state.config().issuer_str().to_owned()),
        jti: None,
        act: None,
    }))
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    let credentials: ClientCredentialsInBody = parse_form(&body)?;
    let (client, _) = authenticate(&state, &headers, credentials).await?;
    let request: RevocationRequest = parse_form(&body)?;
    let token = request.token.secret();
    let store = state.store();
    if looks_like_jwt(token) {
        // An expired or foreign token needs nothing; a bad signature is ignored too.
        if let Ok(claims) = state
            .keys()
            .verify::<AccessTokenClaims>(
                token,
                ACCESS_TOKEN_TYP,
                state.config().issuer_str(),
                false,
            )
            .await
            && claims.client_id == client.client_id
        {
            store.revoke_jti(&claims.jti, claims.exp).await?;
        }
    } else if let Some(record) = store.get_refresh_token(&request.token.hash()).await?
        && let Some(grant) = store.get_grant(&record.grant_id).await?
        && grant.client_id == client.client_id
    {
        store.revoke_grant(&grant.id).await?;
    }
    Ok((no_store(), "").into_response())
}
