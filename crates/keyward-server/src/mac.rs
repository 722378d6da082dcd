//! The server's MAC key: 256 random bits, generated on first start and kept in the
//! store (so every replica has the same one), used to authenticate values keyward hands
//! out and takes back without storing them: cookie values the server must recognise as
//! its own (a value planted in a browser is refused), and the successor of a refresh
//! token, derived from the token itself so that a retried rotation gets the same answer.
//!
//! Every use names its purpose, which goes into the MAC, so a tag made for one purpose
//! is never accepted for another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::at_rest::{self, AtRestKey};
use crate::store::{Store, StoreError};

/// Why the MAC key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MacKeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// It is sealed and cannot be opened.
    #[error(transparent)]
    AtRest(#[from] at_rest::AtRestError),
    /// The system's random number generator failed.
    #[error("the random number generator failed")]
    Random,
}

/// The name of the secret in the store.
const SECRET_NAME: &str = "mac-key";

/// What a MAC is for; part of the MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The browser-binding cookie.
    BrowserCookie,
    /// The cookie naming the accounts a browser signed in to before (exempt from the
    /// per-account password throttle).
    KnownBrowser,
    /// The successor of a refresh token.
    RefreshSuccessor,
    /// The client record a token without a grant was issued under.
    ClientRecord,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::BrowserCookie => b"keyward browser cookie\0",
            Self::KnownBrowser => b"keyward known browser\0",
            Self::RefreshSuccessor => b"keyward refresh successor\0",
            Self::ClientRecord => b"keyward client record\0",
        }
    }
}

/// The server's MAC key (HMAC-SHA-256). Cheap to clone; never printed.
#[derive(Clone)]
pub struct MacKey {
    key: hmac::Key,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([redacted])")
    }
}

impl MacKey {
    /// Loads the key from the store, generating and storing it (sealed with `at_rest`
    /// when there is one) on first start.
    pub async fn load(store: &dyn Store, at_rest: Option<&AtRestKey>) -> Result<Self, MacKeyError> {
        let mut fresh = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
            .map_err(|_| MacKeyError::Random)?;
        let candidate = at_rest::store(at_rest, &fresh)?;
        let stored = store
            .get_or_insert_secret(SECRET_NAME, &candidate, crate::domain::now())
            .await?;
        let bytes = at_rest::load(at_rest, &stored)?;
        if bytes.len() < 32 {
            return Err(MacKeyError::Store(StoreError::Corrupt {
                what: "MAC key",
                detail: "shorter than 32 bytes".into(),
            }));
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The MAC of `data` for `purpose`, base64url (43 characters).
    pub fn tag(&self, purpose: Purpose, data: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(purpose.label());
        context.update(data);
        URL_SAFE_NO_PAD.encode(context.sign().as_ref())
    }

    /// Whether `tag` is the MAC of `data` for `purpose` (compared in constant time).
    pub fn verify(&self, purpose: Purpose, data: &[u8], tag: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag.as_bytes()) else {
            return false;
        };
        let mut message = purpose.label().to_vec();
        message.extend_from_slice(data);
        hmac::verify(&self.key, &message, &tag).is_ok()
    }

    /// `value.tag`: a value the server can later recognise as one it made.
    pub fn seal(&self, purpose: Purpose, value: &str) -> String {
        format!("{value}.{}", self.tag(purpose, value.as_bytes()))
    }

    /// The value of a sealed `value.tag`, if the tag is the server's.
    pub fn open<'a>(&self, purpose: Purpose, sealed: &'a str) -> Option<&'a str> {
        let (value, tag) = sealed.rsplit_once('.')?;
        self.verify(purpose, value.as_bytes(), tag).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_bound_to_key_purpose_and_value() {
        let key = MacKey::from_bytes(&[7; 32]);
        let other = MacKey::from_bytes(&[8; 32]);
        let sealed = key.seal(Purpose::BrowserCookie, "abc");
        assert_eq!(key.open(Purpose::BrowserCookie, &sealed), Some("abc"));
        assert_eq!(key.open(Purpose::KnownBrowser, &sealed), None);
        assert_eq!(other.open(Purpose::BrowserCookie, &sealed), None);
        assert_eq!(key.open(Purpose::BrowserCookie, "abc"), None);
        assert_eq!(key.open(Purpose::BrowserCookie, "abd.x"), None);
        let forged = sealed.replacen("abc", "abd", 1);
        assert_eq!(key.open(Purpose::BrowserCookie, &forged), None);
        assert_eq!(
            key.tag(Purpose::RefreshSuccessor, b"t"),
            key.tag(Purpose::RefreshSuccessor, b"t"),
            "deterministic"
        );
        assert!(format!("{key:?}").contains("redacted"));
    }
}
