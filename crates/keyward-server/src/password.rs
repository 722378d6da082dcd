//! Password hashing with Argon2id (RFC 9106), using the OWASP-recommended parameters
//! (19 MiB, 2 passes, 1 lane). Hashing runs on the blocking pool so that a burst of
//! logins cannot stall the request workers.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use keyward_proto::ClientSecret;

/// A password-hashing failure.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Argon2 refused the input or parameters.
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    /// A stored hash is not a PHC string.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The blocking task was cancelled.
    #[error("password hashing task failed")]
    Task(#[from] tokio::task::JoinError),
}

fn hasher() -> Argon2<'static> {
    // OWASP: m=19456 KiB, t=2, p=1. Params::new only fails on out-of-range values.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The Argon2id parameters in force, for display (`m=…,t=…,p=…`).
pub fn parameters() -> String {
    let argon = hasher();
    let p = argon.params();
    format!(
        "argon2id m={}KiB t={} p={}",
        p.m_cost(),
        p.t_cost(),
        p.p_cost()
    )
}

/// Hashes a password into a PHC string (blocking; call from a blocking context).
pub fn hash_blocking(password: &ClientSecret) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher()
        .hash_password(password.secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// Hashes a password on the blocking pool.
pub async fn hash(password: ClientSecret) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

/// Checks a password against a stored hash on the blocking pool. With no stored hash a
/// dummy hash is checked, so that unknown users take as long as known ones.
pub async fn verify(password: ClientSecret, stored: Option<String>) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let (stored, real) = match stored {
            Some(hash) => (hash, true),
            None => (DUMMY_HASH.to_owned(), false),
        };
        let parsed = PasswordHash::new(&stored).map_err(|_| PasswordError::MalformedHash)?;
        let ok = hasher()
            .verify_password(password.secret().as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await?
}

/// An Argon2id hash of a random password, verified against when a user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2y+fhSnp6UXB5f1MZ9bcdBP+B2cWZBj1ZEN9D2cGQ7A";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hash = hash(ClientSecret::new("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify(ClientSecret::new("correct horse"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify(ClientSecret::new("wrong"), Some(hash))
                .await
                .unwrap()
        );
        assert!(!verify(ClientSecret::new("x"), None).await.unwrap());
        assert!(
            verify(ClientSecret::new("x"), Some("garbage".into()))
                .await
                .is_err()
        );
    }
}
