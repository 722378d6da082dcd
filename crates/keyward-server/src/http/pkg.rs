//! The Julia package-server login protocol (PkgAuthentication.jl 2.x), under `/auth/`,
//! so that unmodified Julia clients log in against keyward.
//!
//! | request | answer |
//! |---|---|
//! | `GET /auth/configuration` | `auth_flows` `["classic","device"]` and the device endpoints |
//! | `POST /auth/challenge` (raw challenge) | an opaque `response` string |
//! | `GET /auth/response?<response>` | the login and consent pages, in the user's browser |
//! | `POST /auth/claimtoken` (`{"challenge","response"}`) | `{"expiry":N}` while pending, `{"token":{…}}` once approved |
//! | `GET /auth/refresh` (`Authorization: Bearer <refresh_token>`) | a complete token file, as TOML |
//!
//! The device flow uses the standard `/device/code` and `/token` endpoints. The classic
//! flow is a device authorization keyed by the response (stored hashed) and bound to
//! the client's challenge (stored hashed): the same login, consent, single use and
//! expiry rules apply. Bodies are accepted without a content type, as the Julia client
//! sends them.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_proto::token::TokenResponse;
use keyward_proto::{ErrorCode, OpaqueToken, TokenHash};
use serde::{Deserialize, Serialize};

use super::browser::Browser;
use super::error::{ApiError, OAuthError, no_store};
use super::extract::{Body, ClientAddr, bearer_token};
use super::login::{error_page, start_login};
use super::page_error::PageError;
use super::routes::Routes;
use crate::domain::{Client, DeviceStatus};
use crate::grants;
use crate::state::AppState;

/// The scope a Julia login asks for: an ID token and a refresh token are required by
/// the client's token file.
pub const PKG_SCOPE: &str = "openid profile email offline_access";

/// Routes of this module (empty when `[pkg_auth] enabled = false`).
pub fn router(enabled: bool) -> Routes {
    if !enabled {
        return Routes::new();
    }
    Routes::new()
        .get("/auth/configuration", configuration)
        .post("/auth/challenge", challenge)
        .get("/auth/response", response_page)
        .post("/auth/claimtoken", claim_token)
        .get("/auth/refresh", refresh_token_file)
}

#[derive(Serialize)]
struct Configuration {
    auth_flows: [&'static str; 2],
    device_authorization_endpoint: String,
    device_token_endpoint: String,
    device_token_refresh_url: String,
    device_token_scope: &'static str,
}

async fn configuration(State(state): State<AppState>) -> Response {
    let config = state.config();
    Json(Configuration {
        auth_flows: ["classic", "device"],
        device_authorization_endpoint: config.endpoint("/device/code"),
        device_token_endpoint: config.endpoint("/token"),
        device_token_refresh_url: config.endpoint("/auth/refresh"),
        device_token_scope: PKG_SCOPE,
    })
    .into_response()
}

/// The token file the Julia client saves (`auth.toml`): it needs `id_token`,
/// `refresh_token` and `refresh_url` as strings and `expires_at` as a number.
#[derive(Serialize)]
pub struct PkgToken {
    /// What Pkg sends to the package server.
    pub access_token: String,
    /// The ID token.
    pub id_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// Where to refresh (`GET` with the refresh token as bearer).
    pub refresh_url: String,
    /// Expiry of the access token, seconds since the epoch.
    pub expires_at: i64,
    /// The same, under its legacy name.
    pub expires: i64,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// The user's login name.
    pub user_name: String,
    /// The user's email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
}

/// Leaves out the tokens.
impl std::fmt::Debug for PkgToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkgToken")
            .field("refresh_url", &self.refresh_url)
            .field("expires_at", &self.expires_at)
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

fn pkg_client_id(state: &AppState) -> &str {
    &state.config().pkg_auth.client_id
}

async fn pkg_client(state: &AppState) -> Result<Client, ApiError> {
    state
        .store()
        .get_client(pkg_client_id(state))
        .await?
        .ok_or_else(|| {
            let message =
                "the package client is not registered; see [pkg_auth] in the configuration";
            ApiError::OAuth(OAuthError::new(ErrorCode::ServerError, message))
        })
}

/// Turns a token response into the Julia token file, for the grant's user.
async fn token_file(
    state: &AppState,
    tokens: TokenResponse,
    grant_id: &str,
) -> Result<PkgToken, ApiError> {
    let misconfigured = || {
        let message = "the package client must be allowed openid, offline_access and refresh_token";
        ApiError::OAuth(OAuthError::new(ErrorCode::ServerError, message))
    };
    let (_, user) = state
        .store()
        .get_grant_with_user(grant_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("the authorization was revoked"))?;
    let expires_in = state.config().access_token_ttl.as_secs();
    let expires_at = state.now() + i64::try_from(expires_in).unwrap_or(0);
    Ok(PkgToken {
        access_token: tokens.access_token,
        id_token: tokens.id_token.ok_or_else(misconfigured)?,
        refresh_token: tokens.refresh_token.ok_or_else(misconfigured)?,
        refresh_url: state.config().endpoint("/auth/refresh"),
        expires_at,
        expires: expires_at,
        expires_in,
        user_name: user.username,
        user_email: user.email,
    })
}

/// The longest challenge accepted (the Julia client sends 32 characters).
pub const MAX_CHALLENGE: usize = 256;

/// Reads the body of `POST /auth/challenge`: the client's challenge, 1 to
/// [`MAX_CHALLENGE`] ASCII letters and digits, around which white space is ignored.
pub fn read_challenge(body: &[u8]) -> Result<&str, OAuthError> {
    let challenge = std::str::from_utf8(body).map(str::trim).unwrap_or_default();
    if challenge.is_empty()
        || challenge.len() > MAX_CHALLENGE
        || !challenge.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(OAuthError::invalid_request(
            "the body must be a challenge of 1 to 256 letters and digits",
        ));
    }
    Ok(challenge)
}

async fn challenge(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    // Anyone may start a Julia login: limit how many per address.
    state.creations().allow(addr).map_err(ApiError::too_many)?;
    let challenge = read_challenge(&body)?;
    let client = pkg_client(&state).await?;
    let response = OpaqueToken::generate();
    let scope = keyward_proto::ScopeSet::parse(PKG_SCOPE)
        .unwrap_or_default()
        .intersection(&client.scopes);
    grants::device::start(
        &state.issuer(),
        &client.client_id,
        scope,
        &response,
        Some(TokenHash::of(challenge)),
    )
    .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        response.secret().to_owned(),
    )
        .into_response())
}

/// `GET /auth/response?<response>`: the whole query string is the response.
async fn response_page(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let browser = Browser::of(&state, &headers);
    let expired = || {
        error_page(
            "Sign-in expired",
            "This sign-in link has expired or was already used. Start again from Julia.",
        )
    };
    let response = query.unwrap_or_default();
    if response.is_empty() || response.len() > 128 {
        return Err(expired());
    }
    let device = state
        .store()
        .get_device_code(&TokenHash::of(&response))
        .await?
        .ok_or_else(expired)?;
    if device.challenge_hash.is_none()
        || device.status != DeviceStatus::Pending
        || device.expires_at <= state.now()
    {
        return Err(expired());
    }
    start_login(&state, addr, &headers, &browser, device).await
}

/// The body of `POST /auth/claimtoken`: the challenge the client made up and the
/// response keyward answered it with.
#[derive(Deserialize)]
pub struct Claim {
    /// The client's challenge.
    pub challenge: String,
    /// keyward's response to it.
    pub response: String,
}

/// Reads the body of `POST /auth/claimtoken`, a JSON object with `challenge` and
/// `response`.
pub fn read_claim(body: &[u8]) -> Result<Claim, OAuthError> {
    serde_json::from_slice(body).map_err(|_| {
        OAuthError::invalid_request("the body must be {\"challenge\": …, \"response\": …}")
    })
}

#[derive(Serialize)]
#[serde(untagged)]
enum ClaimAnswer {
    Pending { expiry: i64 },
    Done { token: PkgToken },
}

async fn claim_token(
    State(state): State<AppState>,
    body: Result<Body, OAuthError>,
) -> Result<Response, ApiError> {
    let Body(body) = body?;
    let claim = read_claim(&body)?;
    let unknown = || OAuthError::invalid_grant("unknown challenge or response");
    let device = state
        .store()
        .get_device_code(&TokenHash::of(&claim.response))
        .await?
        .ok_or_else(unknown)?;
    let bound = device
        .challenge_hash
        .as_ref()
        .is_some_and(|hash| hash.matches(&claim.challenge));
    if !bound {
        return Err(unknown().into());
    }
    if device.expires_at < state.now() {
        return Err(OAuthError::new(ErrorCode::ExpiredToken, "the login has expired").into());
    }
    let answer = match device.status {
        DeviceStatus::Pending => ClaimAnswer::Pending {
            expiry: device.expires_at,
        },
        DeviceStatus::Denied => {
            return Err(
                OAuthError::new(ErrorCode::AccessDenied, "the user denied the login").into(),
            );
        }
        DeviceStatus::Used => {
            return Err(OAuthError::invalid_grant("the token was already claimed").into());
        }
        DeviceStatus::Approved => {
            let client = pkg_client(&state).await?;
            let tokens = grants::device::collect(&state.issuer(), &client, &device).await?;
            let grant_id = device.grant_id.clone().unwrap_or_default();
            ClaimAnswer::Done {
                token: token_file(&state, tokens, &grant_id).await?,
            }
        }
    };
    Ok((no_store(), Json(answer)).into_response())
}

async fn refresh_token_file(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer_token(&headers)
        .ok_or_else(|| OAuthError::invalid_token("send the refresh token as a bearer token"))?;
    let token = OpaqueToken::new(token);
    let record = state
        .store()
        .get_refresh_token(&token.hash())
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("unknown, expired or revoked refresh token"))?;
    let client = pkg_client(&state).await?;
    let tokens = grants::refresh::refresh(&state.issuer(), &client, token, None).await?;
    let file = token_file(&state, tokens, &record.grant_id).await?;
    let text = toml::to_string(&file).map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok((
        no_store(),
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_prints_no_token() {
        let secret = "the-secret-value-41cb";
        let file = PkgToken {
            access_token: secret.into(),
            id_token: secret.into(),
            refresh_token: secret.into(),
            refresh_url: "https://id.example/auth/refresh".into(),
            expires_at: 1,
            expires: 1,
            expires_in: 900,
            user_name: "ann".into(),
            user_email: None,
        };
        assert!(!format!("{file:?}").contains(secret));
    }
}
