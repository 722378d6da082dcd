//! The userinfo endpoint (OpenID Connect Core §5.3): the claims of the user behind an
//! access token, as far as its scope releases them.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keyward_proto::{ErrorCode, ScopeSet};

use super::error::{ApiError, OAuthError, no_store};
use super::extract::{Body, bearer_token, parse_form};
use super::routes::Routes;
use crate::issuer::{user_claims, validate_access_token};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/userinfo", userinfo_get)
        .post("/userinfo", userinfo_post)
}

async fn userinfo_get(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    userinfo(&state, bearer_token(&headers)).await
}

#[derive(serde::Deserialize)]
struct FormToken {
    access_token: Option<String>,
}

async fn userinfo_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    if let Some(token) = bearer_token(&headers) {
        return userinfo(&state, Some(token)).await;
    }
    // RFC 6750 §2.2: the token in a form body.
    let Body(bytes) = body?;
    let form: FormToken = parse_form(&bytes)?;
    userinfo(&state, form.access_token.as_deref()).await
}

async fn userinfo(state: &AppState, token: Option<&str>) -> Result<Response, ApiError> {
    let token = token.ok_or_else(|| OAuthError::invalid_token("an access token is required"))?;
    let valid = validate_access_token(&state.issuer(), token)
        .await?
        .map_err(|refused| OAuthError::invalid_token(refused.to_string()))?;
    let scope = ScopeSet::parse(&valid.claims.scope).unwrap_or_default();
    let user = match valid.user {
        Some(user) if scope.contains("openid") => user,
        _ => {
            return Err(OAuthError::new(
                ErrorCode::InsufficientScope,
                "the token was not granted the openid scope",
            )
            .into());
        }
    };
    let mut body = serde_json::to_value(user_claims(&state.issuer(), &user, &scope).await?)
        .unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        object.insert("sub".into(), user.id.into());
    }
    Ok((no_store(), Json(body)).into_response())
}
