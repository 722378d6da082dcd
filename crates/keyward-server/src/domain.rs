//! The records keyward keeps (clients, users, logins in progress, sessions, grants,
//! codes, refresh tokens, signing keys) and the validation rules for their fields.
//!
//! Times are seconds since the Unix epoch. Secrets are never stored: only their
//! SHA-256 ([`TokenHash`]) or, for passwords, an Argon2id PHC string.

use keyward_proto::{ScopeSet, TokenHash};
use url::Url;

use crate::config::SigningAlg;

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A registered OAuth client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<TokenHash>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Allowed `post_logout_redirect_uri` values.
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed grant types, by wire name.
    pub grant_types: Vec<String>,
    /// Scopes the client may obtain.
    pub scopes: ScopeSet,
    /// A first-party client: no consent page.
    pub skip_consent: bool,
    /// Algorithm of its ID tokens.
    pub id_token_alg: SigningAlg,
    /// When it was registered.
    pub created_at: i64,
}

impl Client {
    /// Whether the client has no secret.
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    /// Whether the client may use `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// A person who can log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable opaque id: the `sub` clients see.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Email address.
    pub email: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// Full name.
    pub name: Option<String>,
    /// Argon2id PHC string; `None` for an account without a local password.
    pub password_hash: Option<String>,
    /// A disabled user cannot log in and their tokens stop working.
    pub disabled: bool,
    /// When the account was created.
    pub created_at: i64,
}

/// A login in progress: an authorization request that passed validation and waits for
/// the user to log in and consent. Lives in the store so any replica can finish it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    /// Random id, carried in the login and consent pages.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The redirect URI the response goes to.
    pub redirect_uri: String,
    /// Whether the request named `redirect_uri` (then the token request must repeat it).
    pub redirect_uri_given: bool,
    /// Requested scope, already narrowed to what the client may have.
    pub scope: ScopeSet,
    /// The client's `state`.
    pub state: Option<String>,
    /// The client's `nonce`.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// Space-separated `prompt` values.
    pub prompt: Option<String>,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// `login_hint`, prefilled into the username field.
    pub login_hint: Option<String>,
    /// Hash of the browser-binding cookie of the browser that started the request.
    pub browser_hash: TokenHash,
    /// CSRF token of the login and consent forms.
    pub csrf: String,
    /// When it was created.
    pub created_at: i64,
    /// When it stops being usable.
    pub expires_at: i64,
    /// The user, once logged in.
    pub user_id: Option<String>,
    /// When the user authenticated.
    pub auth_time: Option<i64>,
    /// The device code this login approves (device flow), instead of issuing a code.
    pub device_code_hash: Option<TokenHash>,
}

/// Where a device authorization stands (RFC 8628).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Waiting for the user.
    Pending,
    /// The user approved; the device may collect its tokens once.
    Approved,
    /// The user denied.
    Denied,
    /// The device collected its tokens.
    Used,
}

impl DeviceStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "denied" => Some(Self::Denied),
            "used" => Some(Self::Used),
            _ => None,
        }
    }
}

/// A device authorization (RFC 8628 §3.2), by the hash of its device code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCode {
    /// SHA-256 of the device code.
    pub device_code_hash: TokenHash,
    /// The normalised user code (no dash).
    pub user_code: String,
    /// The client that asked.
    pub client_id: String,
    /// The scope asked for.
    pub scope: ScopeSet,
    /// When it was issued.
    pub created_at: i64,
    /// When both codes expire.
    pub expires_at: i64,
    /// The least seconds between polls; grows on `slow_down`.
    pub interval: i64,
    /// When the device last polled.
    pub last_poll_at: Option<i64>,
    /// Where it stands.
    pub status: DeviceStatus,
    /// The grant created on approval.
    pub grant_id: Option<String>,
    /// SHA-256 of the Julia client's challenge (classic package-server flow only).
    pub challenge_hash: Option<TokenHash>,
}

/// A browser session: a logged-in user, by the hash of the session cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id_hash: TokenHash,
    /// The user.
    pub user_id: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// When it was created.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
    /// CSRF token of forms shown to this session (logout).
    pub csrf: String,
}

/// One authorization of a client by a user: the root of its codes, refresh tokens and
/// access tokens, revoked as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Random id (`gid` in access tokens).
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub user_id: String,
    /// Granted scope.
    pub scope: ScopeSet,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The ID token nonce, echoed on the first token response.
    pub nonce: Option<String>,
    /// When it was created.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// An authorization code, by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCode {
    /// SHA-256 of the code.
    pub code_hash: TokenHash,
    /// The grant it belongs to.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// Whether the authorization request named the redirect URI.
    pub redirect_uri_given: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// When it was created.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
}

/// What happened when a code was redeemed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use: the code is now spent.
    Redeemed(AuthCode),
    /// The code was already used: a replay.
    AlreadyUsed(AuthCode),
    /// No such code.
    NotFound,
}

/// A refresh token, by hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the token.
    pub token_hash: TokenHash,
    /// The grant it belongs to.
    pub grant_id: String,
    /// When it was issued.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
    /// When it was exchanged for a new one.
    pub rotated_at: Option<i64>,
}

/// A signing key pair, kept in the store so that every replica signs with the same key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// The private key, base64 DER (PKCS#8 for EC, PKCS#1 for RSA).
    pub private_der: String,
    /// The public JWK, as JSON.
    pub public_jwk: String,
    /// When it was created.
    pub created_at: i64,
    /// When a newer key replaced it; it stays published for a while after.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Checks a client id: 1 to 128 printable ASCII characters, no spaces or `:`.
pub fn validate_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!(
            "{id:?} must be 1 to 128 printable ASCII characters without ':'"
        ));
    }
    Ok(())
}

/// Checks a username: 1 to 64 characters of letters, digits and `._-@+`.
pub fn validate_username(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1 to 64 letters, digits or ._-@+"))
    }
}

/// Checks a redirect URI (RFC 6749 §3.1.2): absolute, no fragment; http only for
/// loopback hosts; custom schemes allowed for native apps (RFC 8252 §7.1).
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    if url.scheme() == "http" {
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if !loopback {
            return Err(format!(
                "{uri:?}: http is only allowed for loopback addresses; use https"
            ));
        }
    }
    if matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript") {
        return Err(format!("{uri:?}: scheme {} is not allowed", url.scheme()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        assert!(validate_redirect_uri("https://app.example/cb").is_ok());
        assert!(validate_redirect_uri("http://127.0.0.1:5555/callback").is_ok());
        assert!(validate_redirect_uri("com.example.app:/cb").is_ok());
        assert!(validate_redirect_uri("http://app.example/cb").is_err());
        assert!(validate_redirect_uri("https://app.example/cb#x").is_err());
        assert!(validate_redirect_uri("javascript:alert(1)").is_err());
        assert!(validate_redirect_uri("/relative").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_username("alice@example.com").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_client_id("demo-app").is_ok());
        assert!(validate_client_id("a:b").is_err());
    }
}
