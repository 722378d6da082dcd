//! Discovery: provider metadata (OpenID Connect Discovery 1.0, RFC 8414) and the JWKS.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyward_proto::discovery::ProviderMetadata;

use super::routes::Routes;
use crate::domain::SigningAlg;
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> Routes {
    Routes::new()
        .get("/.well-known/openid-configuration", metadata)
        .get("/.well-known/oauth-authorization-server", metadata)
        .get("/jwks", jwks)
}

/// The metadata document of this server.
pub fn provider_metadata(state: &AppState) -> ProviderMetadata {
    let config = state.config();
    let strings = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    ProviderMetadata {
        issuer: config.issuer_str().to_owned(),
        authorization_endpoint: config.endpoint("/authorize"),
        token_endpoint: config.endpoint("/token"),
        userinfo_endpoint: config.endpoint("/userinfo"),
        jwks_uri: config.endpoint("/jwks"),
        revocation_endpoint: config.endpoint("/revoke"),
        introspection_endpoint: config.endpoint("/introspect"),
        end_session_endpoint: config.endpoint("/logout"),
        device_authorization_endpoint: config.endpoint("/device/code"),
        scopes_supported: strings(&["openid", "profile", "email", "groups", "offline_access"]),
        response_types_supported: strings(&["code"]),
        response_modes_supported: strings(&["query", "form_post", "web_message"]),
        grant_types_supported: strings(keyward_proto::token::GRANT_TYPES),
        subject_types_supported: strings(&["public"]),
        id_token_signing_alg_values_supported: SigningAlg::ALL
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        token_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "none",
        ]),
        introspection_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
        ]),
        revocation_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "none",
        ]),
        code_challenge_methods_supported: strings(&["S256"]),
        claims_supported: strings(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "azp",
            "name",
            "preferred_username",
            "email",
            "email_verified",
            "groups",
        ]),
        authorization_response_iss_parameter_supported: true,
        prompt_values_supported: strings(&["none", "login", "consent"]),
    }
}

async fn metadata(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(provider_metadata(&state)),
    )
        .into_response()
}

async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.keys().jwks().as_ref().clone()),
    )
        .into_response()
}
