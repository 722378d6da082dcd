//! OAuth 2.0 error codes and the JSON error body.
//!
//! The codes of RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1, RFC 8628
//! §3.5 and OpenID Connect Core §3.1.2.6, in one enum. How each maps to an HTTP status
//! is decided by the server, in one place.

use serde::{Deserialize, Serialize};

/// An error with its causes on one line, `a: b: c`, for messages and logs (server and
/// client alike print errors this way).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An OAuth 2.0 / OpenID Connect error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// RFC 6749 §5.2: the request is missing a parameter, repeats one or is malformed.
    InvalidRequest,
    /// RFC 6749 §5.2: client authentication failed.
    InvalidClient,
    /// RFC 6749 §5.2: the code, refresh token or verifier is invalid, expired or revoked.
    InvalidGrant,
    /// RFC 6749 §5.2: this client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749 §5.2: the grant type is not supported.
    UnsupportedGrantType,
    /// RFC 6749 §5.2: the requested scope is invalid or exceeds what was granted.
    InvalidScope,
    /// RFC 6749 §4.1.2.1: the resource owner or the server denied the request.
    AccessDenied,
    /// RFC 6749 §4.1.2.1: the response type is not supported.
    UnsupportedResponseType,
    /// RFC 6749 §4.1.2.1: an unexpected condition on the server.
    ServerError,
    /// RFC 6749 §4.1.2.1: the server is temporarily unable to handle the request.
    TemporarilyUnavailable,
    /// RFC 6750 §3.1: the access token is expired, revoked or malformed.
    InvalidToken,
    /// RFC 6750 §3.1: the token lacks the scope the resource needs.
    InsufficientScope,
    /// RFC 7009 §2.2.1: revocation of this token type is not supported.
    UnsupportedTokenType,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` but the user must log in.
    LoginRequired,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` but the user must consent.
    ConsentRequired,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` but the user must interact.
    InteractionRequired,
    /// RFC 8628 §3.5: the user has not yet completed the device authorization.
    AuthorizationPending,
    /// RFC 8628 §3.5: the client polls too fast.
    SlowDown,
    /// RFC 8628 §3.5: the device code has expired.
    ExpiredToken,
    /// RFC 8707 §2, RFC 8693 §2.2.2: the requested audience or resource is unknown.
    InvalidTarget,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::InvalidTarget => "invalid_target",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of an error response (RFC 6749 §5.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error code.
    pub error: ErrorCode,
    /// Human-readable text for the developer; never contains a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in [
            ErrorCode::InvalidGrant,
            ErrorCode::SlowDown,
            ErrorCode::LoginRequired,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
