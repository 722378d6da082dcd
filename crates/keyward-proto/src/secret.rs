//! Secrets and opaque tokens.
//!
//! Every secret is a newtype that prints `[redacted]` in `Debug`, has no `Display`, is
//! read through `.secret()` and compares in constant time. Opaque tokens (authorization
//! codes, refresh tokens, session ids, client secrets) are 256 random bits in base64url;
//! the server keeps only their SHA-256 ([`TokenHash`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Generates `bytes` random bytes from the OS generator, base64url-encoded without padding.
pub fn random_urlsafe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Compares two byte strings in constant time (for equal lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, serde::Deserialize, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value received from outside.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret value itself; the only way to read it.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// The SHA-256 of the value, which is what the server stores.
            pub fn hash(&self) -> TokenHash {
                TokenHash::of(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }

        impl Eq for $name {}
    };
}

secret_newtype!(
    /// A client secret (RFC 6749 §2.3.1). keyward generates them with 256 bits of entropy.
    ClientSecret
);

secret_newtype!(
    /// An opaque bearer value: authorization code, refresh token, device code, session id.
    OpaqueToken
);

secret_newtype!(
    /// A password a person or a system types: a user's, the SMTP server's. Kept apart
    /// from [`ClientSecret`], which keyward generates.
    Password
);

impl ClientSecret {
    /// A fresh secret of 256 random bits.
    pub fn generate() -> Self {
        Self(random_urlsafe(32))
    }
}

impl OpaqueToken {
    /// A fresh token of 256 random bits.
    pub fn generate() -> Self {
        Self(random_urlsafe(32))
    }
}

/// The hex SHA-256 of a secret or token: safe to store, log-safe, and the lookup key.
#[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes a value.
    pub fn of(value: &str) -> Self {
        let digest = Sha256::digest(value.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Self(hex)
    }

    /// Wraps a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `value` against this hash in constant time.
    pub fn matches(&self, value: &str) -> bool {
        constant_time_eq(Self::of(value).0.as_bytes(), self.0.as_bytes())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = ClientSecret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
        let token = OpaqueToken::generate();
        assert!(!format!("{token:?}").contains(token.secret()));
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = OpaqueToken::generate();
        let b = OpaqueToken::generate();
        assert_eq!(a.secret().len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn hash_matches_only_its_value() {
        let hash = TokenHash::of("abc");
        assert_eq!(
            hash.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(hash.matches("abc"));
        assert!(!hash.matches("abd"));
    }
}
