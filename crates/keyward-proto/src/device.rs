//! Device authorization (RFC 8628): the response of the device authorization endpoint
//! and the user codes people type.
//!
//! A user code is 8 characters from a 20-letter alphabet of consonants without vowels
//! (no words can form) and without look-alikes, shown as `XXXX-XXXX`; input is
//! accepted in any case, with or without dashes and spaces (RFC 8628 §6.1).

use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// A device authorization response (RFC 8628 §3.2).
///
/// keyward sends every field; read from another provider, `verification_uri_complete`
/// may be missing, `interval` defaults to 5 seconds (§3.2), and Google's older
/// `verification_url` spelling is accepted.
#[derive(Serialize, Deserialize)]
pub struct DeviceAuthorizationResponse {
    /// The code the device polls with.
    pub device_code: String,
    /// The code the user types, `XXXX-XXXX`.
    pub user_code: String,
    /// Where the user types it.
    #[serde(alias = "verification_url")]
    pub verification_uri: String,
    /// The same page with the code filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    /// Lifetime of both codes, in seconds.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

/// Leaves out the device code, a credential until the login ends.
impl std::fmt::Debug for DeviceAuthorizationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorizationResponse")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The polling interval when the server names none (RFC 8628 §3.2).
pub const DEFAULT_INTERVAL: u64 = 5;

fn default_interval() -> u64 {
    DEFAULT_INTERVAL
}

/// The user code alphabet: consonants only, no look-alikes.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters in a user code.
pub const USER_CODE_LEN: usize = 8;

/// A normalised user code: 8 characters of [`USER_CODE_ALPHABET`], no dash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserCode(String);

impl UserCode {
    /// A fresh random code.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let code = (0..USER_CODE_LEN)
            .map(|_| char::from(USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())]))
            .collect();
        Self(code)
    }

    /// Normalises what a person typed: case, dashes and spaces do not matter. `None`
    /// when the result cannot be a user code.
    pub fn parse(input: &str) -> Option<Self> {
        let code: String = input
            .chars()
            .filter(|c| !matches!(c, '-' | ' ' | '\t'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let valid =
            code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
        valid.then_some(Self(code))
    }

    /// The stored form, without the dash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The displayed form, `XXXX-XXXX`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..4], &self.0[4..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_round_trip() {
        for _ in 0..100 {
            let code = UserCode::generate();
            assert_eq!(UserCode::parse(&code.display()), Some(code.clone()));
            assert_eq!(
                UserCode::parse(&code.display().to_lowercase()),
                Some(code.clone())
            );
            assert_eq!(code.display().len(), 9);
        }
    }

    #[test]
    fn input_is_forgiving_but_strict_about_letters() {
        assert_eq!(UserCode::parse(" bcdf-ghjk ").unwrap().as_str(), "BCDFGHJK");
        assert_eq!(UserCode::parse("BCDF GHJK").unwrap().display(), "BCDF-GHJK");
        assert!(UserCode::parse("BCDF-GHJ").is_none(), "too short");
        assert!(
            UserCode::parse("ABCD-EFGH").is_none(),
            "vowels are not in the alphabet"
        );
        assert!(UserCode::parse("BCDF-GHJ0").is_none());
    }
}
