//! Token endpoint requests and responses (RFC 6749 §4.1.3, §4.4.2, §5.1, §6).

use serde::{Deserialize, Serialize};

use crate::scope::ScopeSet;
use crate::secret::OpaqueToken;

/// A token request, by grant type. Client credentials travel beside it (in the
/// `Authorization` header or as `client_id` / `client_secret` body fields) and are read
/// separately, see [`ClientCredentialsInBody`]. Its `Debug` shows no code, verifier or
/// token.
#[derive(Deserialize)]
#[serde(tag = "grant_type")]
pub enum TokenRequest {
    /// RFC 6749 §4.1.3, with PKCE (RFC 7636 §4.5).
    #[serde(rename = "authorization_code")]
    AuthorizationCode {
        /// The authorization code.
        code: OpaqueToken,
        /// Must equal the redirect URI of the authorization request when it had one.
        redirect_uri: Option<String>,
        /// The PKCE verifier.
        code_verifier: Option<String>,
    },
    /// RFC 6749 §6.
    #[serde(rename = "refresh_token")]
    RefreshToken {
        /// The refresh token.
        refresh_token: OpaqueToken,
        /// An optional narrowing of the granted scope.
        scope: Option<ScopeSet>,
    },
    /// RFC 6749 §4.4.
    #[serde(rename = "client_credentials")]
    ClientCredentials {
        /// The requested scope; defaults to every scope the client may have.
        scope: Option<ScopeSet>,
    },
    /// RFC 8628 §3.4: polling with a device code.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode {
        /// The device code of the device authorization response.
        device_code: OpaqueToken,
    },
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthorizationCode { redirect_uri, .. } => f
                .debug_struct("AuthorizationCode")
                .field("redirect_uri", redirect_uri)
                .finish_non_exhaustive(),
            Self::RefreshToken { scope, .. } => f
                .debug_struct("RefreshToken")
                .field("scope", scope)
                .finish_non_exhaustive(),
            Self::ClientCredentials { scope } => f
                .debug_struct("ClientCredentials")
                .field("scope", scope)
                .finish(),
            Self::DeviceCode { .. } => f.debug_struct("DeviceCode").finish_non_exhaustive(),
        }
    }
}

/// The wire name of the device authorization grant (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The grant types keyward knows, as their wire names.
pub const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "client_credentials",
    DEVICE_CODE_GRANT,
    crate::exchange::TOKEN_EXCHANGE_GRANT,
];

/// Client credentials sent in the request body (`client_secret_post`, RFC 6749 §2.3.1),
/// or a public client's bare `client_id`.
#[derive(Debug, Default, Deserialize)]
pub struct ClientCredentialsInBody {
    /// The client id.
    pub client_id: Option<String>,
    /// The client secret.
    pub client_secret: Option<crate::secret::ClientSecret>,
}

/// A successful token response (RFC 6749 §5.1; OpenID Connect Core §3.1.3.3).
///
/// keyward always sends every field but `refresh_token` and `id_token`; read from
/// another provider, `expires_in` and `scope` may be missing (RFC 6749 §5.1 only
/// recommends them). Its `Debug` shows no token.
#[derive(Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token (a JWT, RFC 9068, when keyward issued it).
    pub access_token: String,
    /// `Bearer` (compared case-insensitively, RFC 6749 §5.1).
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The refresh token, when the grant allows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The ID token, when `openid` was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The granted scope (absent: as requested, RFC 6749 §5.1).
    #[serde(default)]
    pub scope: ScopeSet,
    /// What kind of token `access_token` is, in a token exchange answer (RFC 8693
    /// §2.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceAuthorizationResponse;
    use crate::introspect::IntrospectionRequest;

    /// Every wire type that carries a secret prints without it: requests and answers
    /// end up in `{:?}` of error messages and traces.
    #[test]
    fn no_debug_shows_a_secret() {
        let secret = "the-secret-value-7c1d";
        let form = |body: &str| -> TokenRequest { serde_urlencoded::from_str(body).unwrap() };
        let printed = [
            format!(
                "{:?}",
                form(&format!(
                    "grant_type=authorization_code&code={secret}&code_verifier={secret}"
                ))
            ),
            format!(
                "{:?}",
                form(&format!("grant_type=refresh_token&refresh_token={secret}"))
            ),
            format!(
                "{:?}",
                form(&format!(
                    "grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={secret}"
                ))
            ),
            format!(
                "{:?}",
                serde_urlencoded::from_str::<ClientCredentialsInBody>(&format!(
                    "client_id=a&client_secret={secret}"
                ))
                .unwrap()
            ),
            format!(
                "{:?}",
                serde_urlencoded::from_str::<IntrospectionRequest>(&format!("token={secret}"))
                    .unwrap()
            ),
            format!(
                "{:?}",
                TokenResponse {
                    access_token: secret.into(),
                    token_type: "Bearer".into(),
                    expires_in: Some(60),
                    refresh_token: Some(secret.into()),
                    id_token: Some(secret.into()),
                    scope: ScopeSet::default(),
                    issued_token_type: None,
                }
            ),
            format!(
                "{:?}",
                DeviceAuthorizationResponse {
                    device_code: secret.into(),
                    user_code: "BCDF-GHJK".into(),
                    verification_uri: "https://id.example/device".into(),
                    verification_uri_complete: None,
                    expires_in: 600,
                    interval: 5,
                }
            ),
        ];
        for text in printed {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
