//! What several targets share: a fixed Ed25519 signing key, so that a target can sign
//! header and payload bytes the fuzzer chose and reach the code that reads claims
//! after the signature check (the fuzzer cannot forge a signature).

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// The key id of [`Signer`]'s key.
pub const KID: &str = "fuzz-k1";

/// An Ed25519 key made from a fixed seed (no randomness: a crash must reproduce).
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl Signer {
    /// The fixed key.
    pub fn new() -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
        Self { pair }
    }

    /// Its public JWK (RFC 8037), with `kid` [`KID`].
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": KID,
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
        })
    }

    /// A compact JWS of exactly these header and payload bytes, signed by the key.
    pub fn sign(&self, header: &[u8], payload: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = self.pair.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// Splits `data` at its first byte 0xFF: the header and the payload of a token to sign
/// (the whole of `data` as the payload when there is none, with a header that names
/// [`KID`]).
pub fn header_and_payload(data: &[u8], typ: &str) -> (Vec<u8>, Vec<u8>) {
    match data.iter().position(|b| *b == 0xFF) {
        Some(at) => (data[..at].to_vec(), data[at + 1..].to_vec()),
        None => (
            format!(r#"{{"alg":"EdDSA","typ":"{typ}","kid":"{KID}"}}"#).into_bytes(),
            data.to_vec(),
        ),
    }
}
