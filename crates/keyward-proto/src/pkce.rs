//! Proof Key for Code Exchange (RFC 7636). keyward accepts only the `S256` method.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// A code verifier (RFC 7636 §4.1): 43 to 128 characters of `[A-Za-z0-9-._~]`.
/// Deliberately not `Clone`: a verifier is used once.
pub struct CodeVerifier(String);

/// Why a verifier or challenge was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkceError {
    /// The verifier breaks RFC 7636 §4.1.
    #[error("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")]
    MalformedVerifier,
    /// The challenge is not a base64url SHA-256.
    #[error("code_challenge must be the 43-character base64url SHA-256 of the verifier")]
    MalformedChallenge,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

impl CodeVerifier {
    /// Validates a verifier received from a client.
    pub fn new(value: String) -> Result<Self, PkceError> {
        if (43..=128).contains(&value.len()) && value.bytes().all(is_unreserved) {
            Ok(Self(value))
        } else {
            Err(PkceError::MalformedVerifier)
        }
    }

    /// A fresh random verifier (for clients).
    pub fn generate() -> Self {
        Self(crate::secret::random_urlsafe(32))
    }

    /// The verifier itself.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The `S256` challenge for this verifier.
    pub fn challenge(&self) -> CodeChallenge {
        CodeChallenge(URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl std::fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeVerifier([redacted])")
    }
}

/// An `S256` code challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Validates a challenge received in an authorization request.
    pub fn parse(value: &str) -> Result<Self, PkceError> {
        if value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(PkceError::MalformedChallenge)
        }
    }

    /// The challenge as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` hashes to this challenge (constant time).
    pub fn verify(&self, verifier: &CodeVerifier) -> bool {
        crate::secret::constant_time_eq(verifier.challenge().0.as_bytes(), self.0.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier =
            CodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into()).unwrap();
        assert_eq!(
            verifier.challenge().as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let challenge =
            CodeChallenge::parse("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").unwrap();
        assert!(challenge.verify(&verifier));
        assert!(!challenge.verify(&CodeVerifier::generate()));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(
            CodeVerifier::new("short".into()).unwrap_err(),
            PkceError::MalformedVerifier
        );
        assert!(CodeVerifier::new("a".repeat(129)).is_err());
        assert!(CodeVerifier::new(format!("{}!", "a".repeat(50))).is_err());
        assert!(CodeChallenge::parse("plain-challenge").is_err());
    }
}
