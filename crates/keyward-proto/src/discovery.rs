//! Provider metadata (OpenID Connect Discovery 1.0 §3, RFC 8414 §2) and the JSON Web Key
//! Set (RFC 7517 §5).

use serde::{Deserialize, Serialize};

/// The provider metadata document served at `/.well-known/openid-configuration` and
/// `/.well-known/oauth-authorization-server`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProviderMetadata {
    /// The issuer identifier.
    pub issuer: String,
    /// The authorization endpoint.
    pub authorization_endpoint: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The userinfo endpoint.
    pub userinfo_endpoint: String,
    /// The JWKS document.
    pub jwks_uri: String,
    /// RFC 7009 revocation.
    pub revocation_endpoint: String,
    /// RFC 7662 introspection.
    pub introspection_endpoint: String,
    /// OpenID Connect RP-Initiated Logout.
    pub end_session_endpoint: String,
    /// RFC 8628 device authorization.
    pub device_authorization_endpoint: String,
    /// Scopes clients may ask for.
    pub scopes_supported: Vec<String>,
    /// Only `code`.
    pub response_types_supported: Vec<String>,
    /// `query`, `form_post`, `web_message`.
    pub response_modes_supported: Vec<String>,
    /// Grant types the token endpoint accepts.
    pub grant_types_supported: Vec<String>,
    /// `public`.
    pub subject_types_supported: Vec<String>,
    /// Algorithms ID tokens can be signed with.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Client authentication methods at the token endpoint.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Client authentication methods at the introspection endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// Client authentication methods at the revocation endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// Only `S256`.
    pub code_challenge_methods_supported: Vec<String>,
    /// Claims that may appear in ID tokens and userinfo.
    pub claims_supported: Vec<String>,
    /// RFC 9207: the authorization response carries `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    /// `prompt` values understood.
    pub prompt_values_supported: Vec<String>,
}

/// What a client needs from any provider's metadata (keyward's, Google's, Auth0's…):
/// the issuer and the endpoints, each optional but the token endpoint, every other
/// member ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderEndpoints {
    /// The issuer identifier; must equal the URL discovery started from.
    pub issuer: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The authorization endpoint, when the provider has one (the code flow).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// RFC 9207: the provider names itself (`iss`) in every authorization response,
    /// so one without it is not from this provider.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 8628 device authorization, when the provider supports it.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// RFC 7009 revocation, when the provider supports it.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// The userinfo endpoint, when the provider has one.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<serde_json::Value>,
}
