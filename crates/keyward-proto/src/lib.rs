//! keyward's wire types: what travels between the authorization server, its clients and
//! the resource servers it protects, with no I/O of its own.
//!
//! - [`secret`]: newtypes for secrets and opaque tokens (redacted `Debug`, constant-time
//!   comparison, generation and hashing).
//! - [`scope`]: a parsed scope set (RFC 6749 §3.3).
//! - [`error`]: the OAuth 2.0 error codes and the JSON error body (RFC 6749 §5.2).
//! - [`pkce`]: proof key for code exchange (RFC 7636).
//! - [`token`]: token endpoint requests and responses (RFC 6749 §4, §5, §6).
//! - [`device`]: device authorization (RFC 8628) and user codes.
//! - [`introspect`]: introspection and revocation (RFC 7662, RFC 7009).
//! - [`exchange`]: token exchange (RFC 8693) and the wildcard grammar of its scopes.
//! - [`discovery`]: provider metadata (OpenID Connect Discovery 1.0, RFC 8414) and JWKS.
//! - [`claims`]: the claims of keyward's access tokens (RFC 9068) and ID tokens.
//! - [`jws`]: checking a JWT against a JWK Set (RFC 7515, 7517, 7519, 9068): the same
//!   code for the server's own tokens and a resource server's.

pub mod claims;
pub mod device;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod introspect;
pub mod jws;
pub mod pkce;
pub mod scope;
pub mod secret;
pub mod token;

pub use error::{ErrorCode, ErrorResponse};
pub use scope::ScopeSet;
pub use secret::{ClientSecret, OpaqueToken, Password, TokenHash};
