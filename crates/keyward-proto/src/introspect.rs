//! Token introspection (RFC 7662) and revocation (RFC 7009).

use serde::{Deserialize, Serialize};

use crate::secret::OpaqueToken;

/// An introspection request (RFC 7662 §2.1).
#[derive(Debug, Deserialize)]
pub struct IntrospectionRequest {
    /// The token to inspect.
    pub token: OpaqueToken,
    /// `access_token` or `refresh_token`; a hint only.
    pub token_type_hint: Option<String>,
}

/// An introspection response (RFC 7662 §2.2). An inactive token is `{"active":false}`
/// and nothing else.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IntrospectionResponse {
    /// Whether the token is currently valid.
    pub active: bool,
    /// The granted scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user's login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<crate::claims::Audience>,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Who acts for the subject (RFC 8693 §4.1), for an exchanged token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<crate::exchange::Actor>,
}

/// A revocation request (RFC 7009 §2.1).
#[derive(Debug, Deserialize)]
pub struct RevocationRequest {
    /// The token to revoke.
    pub token: OpaqueToken,
    /// `access_token` or `refresh_token`; a hint only.
    pub token_type_hint: Option<String>,
}
