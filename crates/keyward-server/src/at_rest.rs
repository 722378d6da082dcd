//! Encryption at rest of the secrets keyward keeps in its database (signing keys, the
//! MAC key), with a key the operator keeps elsewhere (`KEYWARD_KEY_ENCRYPTION_KEY_FILE`):
//! a copy of the database alone, or a backup, then holds nothing that signs tokens.
//!
//! AES-256-GCM (ring) with a random 96-bit nonce per value; the AES key is derived from
//! the file's contents with HKDF-SHA-256. A sealed value is stored as
//! `enc:v1:<base64(nonce ‖ ciphertext ‖ tag)>`; values stored before a key was set stay
//! readable in clear (new ones are sealed; `keyward key rotate` replaces old keys).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix of a sealed value.
const PREFIX: &str = "enc:v1:";
/// The least bytes the key file must hold.
pub const MIN_KEY_FILE_BYTES: usize = 32;

/// Why a stored secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    /// The value is sealed and no key is configured.
    #[error("the value is encrypted; set KEYWARD_KEY_ENCRYPTION_KEY_FILE to the key file")]
    NoKey,
    /// The value does not open with this key (another key, or it was altered).
    #[error("the value does not decrypt with the configured key (a different key, or altered)")]
    WrongKey,
    /// The value is not what keyward stores.
    #[error("the stored value is malformed")]
    Malformed,
}

/// The key that seals secrets at rest. Never printed.
pub struct AtRestKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtRestKey([redacted])")
    }
}

impl AtRestKey {
    /// Derives the key from the contents of the key file (at least
    /// [`MIN_KEY_FILE_BYTES`] bytes, e.g. `openssl rand -base64 48`); `None` when too
    /// short.
    pub fn from_material(material: &[u8]) -> Option<Self> {
        let material = material.trim_ascii();
        if material.len() < MIN_KEY_FILE_BYTES {
            return None;
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keyward at-rest v1").extract(material);
        let okm = prk.expand(&[b"aes-256-gcm"], &AES_256_GCM).ok()?;
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes).ok()?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// Seals `plaintext` for storage.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, AtRestError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| AtRestError::Malformed)?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(PREFIX),
                &mut sealed,
            )
            .map_err(|_| AtRestError::Malformed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }
}

/// Stores `plaintext` as keyward keeps secrets: sealed when there is a key, else
/// base64.
pub fn store(key: Option<&AtRestKey>, plaintext: &[u8]) -> Result<String, AtRestError> {
    match key {
        Some(key) => key.seal(plaintext),
        None => Ok(STANDARD.encode(plaintext)),
    }
}

/// Whether a stored value is sealed (needs the key file to be read).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Reads a secret as [`store`] wrote it.
pub fn load(key: Option<&AtRestKey>, stored: &str) -> Result<Vec<u8>, AtRestError> {
    let Some(sealed) = stored.strip_prefix(PREFIX) else {
        return STANDARD.decode(stored).map_err(|_| AtRestError::Malformed);
    };
    let key = key.ok_or(AtRestError::NoKey)?;
    let mut bytes = STANDARD
        .decode(sealed)
        .map_err(|_| AtRestError::Malformed)?;
    if bytes.len() < NONCE_LEN {
        return Err(AtRestError::Malformed);
    }
    let mut ciphertext = bytes.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| AtRestError::Malformed)?;
    let plaintext = key
        .key
        .open_in_place(nonce, Aad::from(PREFIX), &mut ciphertext)
        .map_err(|_| AtRestError::WrongKey)?;
    Ok(plaintext.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let key = AtRestKey::from_material(&[1; 40]).unwrap();
        let other = AtRestKey::from_material(&[2; 40]).unwrap();
        let stored = store(Some(&key), b"private key").unwrap();
        assert!(stored.starts_with("enc:v1:"));
        assert!(is_sealed(&stored));
        assert!(!stored.contains("private"));
        assert_eq!(load(Some(&key), &stored).unwrap(), b"private key");
        assert!(matches!(
            load(Some(&other), &stored),
            Err(AtRestError::WrongKey)
        ));
        assert!(matches!(load(None, &stored), Err(AtRestError::NoKey)));
        let mut altered = stored.clone();
        altered.replace_range(stored.len() - 4.., "AAAA");
        assert!(load(Some(&key), &altered).is_err());
        // Two seals of one value differ (fresh nonce); clear values stay readable.
        assert_ne!(
            store(Some(&key), b"x").unwrap(),
            store(Some(&key), b"x").unwrap()
        );
        let clear = store(None, b"plain").unwrap();
        assert!(!is_sealed(&clear));
        assert_eq!(load(Some(&key), &clear).unwrap(), b"plain");
        assert!(AtRestKey::from_material(b"too short").is_none());
        assert!(format!("{key:?}").contains("redacted"));
    }
}
