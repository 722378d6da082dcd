//! Checking keyward's JWTs: JSON Web Signature in compact form (RFC 7515 §7.1) with the
//! public keys of a JWK Set (RFC 7517), ES256, RS256 or EdDSA (RFC 8037, Ed25519),
//! the signatures checked with `ring`; then the registered claims a verifier must check
//! (RFC 7519 §4.1, RFC 9068 §4 for access tokens): `typ`, `iss`, `exp`, `sub`.
//!
//! The same code serves the authorization server (its own tokens, at introspection and
//! userinfo) and a resource server (an access token, against the published JWKS). It
//! does no I/O: the caller brings the keys and, when a token names a key id the set
//! does not hold, fetches the JWKS again ([`JwtError::UnknownKey`] says so).
//!
//! A verifier that sees the same token many times (a client calling an API with the
//! token it holds until it expires) can keep a [`SignatureCache`]: [`verify_cached`]
//! then checks each token's signature once and, on later calls, only decodes it and
//! checks its claims again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::discovery::Jwks;

/// A JWS algorithm keyward verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 SHA-256 (2048 to 8192 bits).
    RS256,
    /// Ed25519 (RFC 8037).
    EdDSA,
}

impl Algorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// Why a JWK could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    /// Not a signature key of a type and curve keyward verifies.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// A member is missing or not base64url.
    #[error("malformed key: {0}")]
    Malformed(String),
}

/// A public key, ready to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    alg: Algorithm,
    material: Material,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Material {
    /// An uncompressed point, 0x04 ‖ x ‖ y.
    Ec(Vec<u8>),
    /// Modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The 32-byte public key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Reads a JWK: `EC` on `P-256` (ES256), `RSA` (RS256), `OKP` on `Ed25519` (EdDSA).
    /// A key marked for encryption (`use` other than `sig`) or with an `alg` that does
    /// not fit its type is refused.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, JwkError> {
        let text = |name: &str| jwk.get(name).and_then(|v| v.as_str());
        let bytes = |name: &str| {
            text(name)
                .ok_or_else(|| JwkError::Malformed(format!("no {name}")))
                .and_then(|v| {
                    URL_SAFE_NO_PAD
                        .decode(v)
                        .map_err(|_| JwkError::Malformed(format!("{name} is not base64url")))
                })
        };
        if text("use").is_some_and(|u| u != "sig") {
            return Err(JwkError::Unsupported("not a signature key".into()));
        }
        let (alg, material) = match (text("kty"), text("crv")) {
            (Some("EC"), Some("P-256")) => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JwkError::Malformed("not a P-256 point".into()));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Algorithm::ES256, Material::Ec(point))
            }
            (Some("RSA"), _) => (
                Algorithm::RS256,
                Material::Rsa {
                    n: bytes("n")?,
                    e: bytes("e")?,
                },
            ),
            (Some("OKP"), Some("Ed25519")) => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err(JwkError::Malformed("not an Ed25519 key".into()));
                }
                (Algorithm::EdDSA, Material::Ed25519(x))
            }
            (kty, crv) => {
                return Err(JwkError::Unsupported(format!(
                    "kty {} crv {}",
                    kty.unwrap_or("-"),
                    crv.unwrap_or("-")
                )));
            }
        };
        if let Some(named) = text("alg")
            && named != alg.as_str()
            && !(alg == Algorithm::EdDSA && named == "Ed25519")
        {
            return Err(JwkError::Unsupported(format!(
                "alg {named} on a {} key",
                alg.as_str()
            )));
        }
        Ok(Self { alg, material })
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Whether `sig` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Material::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            Material::Ed25519(key) => signature::UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(message, sig)
                .is_ok(),
        }
    }
}

/// The signature keys of a JWK Set, by key id.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
}

impl KeySet {
    /// The usable keys of `jwks`: those with a `kid` that [`PublicKey::from_jwk`]
    /// accepts. Others (encryption keys, other curves) are left out, as a verifier must.
    pub fn from_jwks(jwks: &Jwks) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.get("kid")?.as_str()?.to_owned();
                Some((kid, PublicKey::from_jwk(jwk).ok()?))
            })
            .collect();
        Self { keys }
    }

    /// Adds (or replaces) a key.
    pub fn insert(&mut self, kid: impl Into<String>, key: PublicKey) {
        self.keys.insert(kid.into(), key);
    }

    /// The key with id `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// Whether the set holds `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The JOSE header members keyward reads.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// The algorithm.
    pub alg: String,
    /// The media type: `at+jwt` for access tokens (RFC 9068 §2.1), `JWT` for ID tokens.
    #[serde(default)]
    pub typ: Option<String>,
    /// The key id.
    #[serde(default)]
    pub kid: Option<String>,
}

/// Why a JWT was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not a compact JWS with a JSON header and payload, or without a `kid`.
    #[error("malformed token")]
    Malformed,
    /// Signed by a key the set does not hold: fetch the JWKS again and retry, once.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The header's `typ` is not the one expected (an ID token offered as an access
    /// token, say), or its `alg` is not the key's.
    #[error("wrong token type or algorithm")]
    WrongType,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim (`exp`, `iss`, `sub`) is missing.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
}

/// What a verified JWT must be.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The header's `typ` (compared without case, as RFC 7515 §4.1.9 asks).
    pub typ: &'a str,
    /// The issuer, exactly.
    pub issuer: &'a str,
    /// The current time in seconds since the epoch, or `None` to accept an expired token
    /// (an ID token hint at logout).
    pub now: Option<i64>,
}

/// The header of a compact JWS, unverified: to find its key id before verifying.
pub fn header(token: &str) -> Result<Header, JwtError> {
    let part = token.split('.').next().ok_or(JwtError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// Verifies `token` with `keys` and reads its claims as `T`: the signature by the key
/// its `kid` names, with that key's algorithm; `typ`; then `iss`, `sub` and (unless
/// waived) `exp`. Audience and scope are for the caller, who knows what it expects.
pub fn verify<T: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    expect: &Expect<'_>,
) -> Result<T, JwtError> {
    check(token, keys, expect, None)
}

/// [`verify`], with signatures already checked remembered in `cache`: a token whose
/// signature `cache` holds, by the same key that is still in `keys`, is not checked
/// again. Everything else (`typ`, `alg`, `iss`, `sub`, `exp`) is checked on every call.
pub fn verify_cached<T: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    expect: &Expect<'_>,
    cache: &SignatureCache,
) -> Result<T, JwtError> {
    check(token, keys, expect, Some(cache))
}

/// Signatures that verified, each remembered with the key that verified it, so that a
/// token seen again is not checked again (an ECDSA P-256 check costs about 50 µs; the
/// look-up, a SHA-256 of the token, about 1 µs).
///
/// An entry is found by the SHA-256 of the whole token, so only the very token that was
/// checked matches, and is used only while the key set still holds that key under that
/// id: a key taken out of the JWKS stops its tokens at once. Failures are not
/// remembered. The cache holds at most its capacity and, when full, starts over.
#[derive(Debug)]
pub struct SignatureCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], PublicKey>>,
}

impl SignatureCache {
    /// A cache of at most `capacity` signatures.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How many signatures it holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], PublicKey>> {
        // A panic while holding the lock cannot leave the map half-updated in a way
        // that matters: every entry is a checked signature.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn holds(&self, digest: &[u8; 32], key: &PublicKey) -> bool {
        self.lock().get(digest) == Some(key)
    }

    fn remember(&self, digest: [u8; 32], key: &PublicKey) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(digest, key.clone());
    }
}

fn check<T: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    expect: &Expect<'_>,
    cache: Option<&SignatureCache>,
) -> Result<T, JwtError> {
    #[derive(Deserialize)]
    struct Registered {
        exp: Option<i64>,
        iss: Option<String>,
        sub: Option<String>,
    }
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed)
    };
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload_part), Some(sig_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header =
        serde_json::from_slice(&decode(header_part)?).map_err(|_| JwtError::Malformed)?;
    let kid = header.kid.ok_or(JwtError::Malformed)?;
    if !header
        .typ
        .is_some_and(|t| t.eq_ignore_ascii_case(expect.typ))
    {
        return Err(JwtError::WrongType);
    }
    let key = keys.get(&kid).ok_or(JwtError::UnknownKey(kid))?;
    if key.algorithm().as_str() != header.alg {
        return Err(JwtError::WrongType);
    }
    let signed = &token[..header_part.len() + 1 + payload_part.len()];
    let digest = cache.map(|_| {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        bytes
    });
    let known = matches!((cache, &digest), (Some(cache), Some(d)) if cache.holds(d, key));
    if !known {
        if !key.verify(signed.as_bytes(), &decode(sig_part)?) {
            return Err(JwtError::BadSignature);
        }
        if let (Some(cache), Some(digest)) = (cache, digest) {
            cache.remember(digest, key);
        }
    }
    let payload = decode(payload_part)?;
    let registered: Registered =
        serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
    let exp = registered.exp.ok_or(JwtError::MissingClaim("exp"))?;
    let iss = registered.iss.ok_or(JwtError::MissingClaim("iss"))?;
    registered.sub.ok_or(JwtError::MissingClaim("sub"))?;
    if iss != expect.issuer {
        return Err(JwtError::WrongIssuer);
    }
    if expect.now.is_some_and(|now| exp < now) {
        return Err(JwtError::Expired);
    }
    serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A compact JWS of `claims` signed by `sign`.
    fn token(
        alg: &str,
        kid: &str,
        typ: &str,
        claims: &serde_json::Value,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> String {
        let header = serde_json::json!({"alg": alg, "kid": kid, "typ": typ});
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = sign(signed.as_bytes());
        format!("{signed}.{}", b64(&sig))
    }

    #[test]
    fn es256_and_eddsa_tokens_verify_and_are_checked() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let point = ec.public_key().as_ref();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let jwks = Jwks {
            keys: vec![
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig", "alg": "ES256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.public_key().as_ref())}),
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
                serde_json::json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}),
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            ],
        };
        let keys = KeySet::from_jwks(&jwks);
        assert_eq!(
            keys.len(),
            2,
            "encryption, other curves and keys without kid are left out"
        );
        let now = 1_000;
        let claims = serde_json::json!({"iss": "https://kw", "sub": "u", "exp": now + 60});
        let by_ec = |m: &[u8]| ec.sign(&rng, m).unwrap().as_ref().to_vec();
        let by_ed = |m: &[u8]| ed.sign(m).as_ref().to_vec();
        let expect = Expect {
            typ: "at+jwt",
            issuer: "https://kw",
            now: Some(now),
        };

        let es = token("ES256", "ec", "at+jwt", &claims, by_ec);
        let back: serde_json::Value = verify(&es, &keys, &expect).unwrap();
        assert_eq!(back["sub"], "u");
        let eddsa = token("EdDSA", "ed", "AT+JWT", &claims, by_ed);
        verify::<serde_json::Value>(&eddsa, &keys, &expect).unwrap();

        let check =
            |token: &str, expect: &Expect<'_>| verify::<serde_json::Value>(token, &keys, expect);
        assert_eq!(
            check(
                &es,
                &Expect {
                    typ: "JWT",
                    ..expect
                }
            ),
            Err(JwtError::WrongType)
        );
        assert_eq!(
            check(
                &es,
                &Expect {
                    issuer: "https://other",
                    ..expect
                }
            ),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            check(
                &es,
                &Expect {
                    now: Some(now + 61),
                    ..expect
                }
            ),
            Err(JwtError::Expired)
        );
        assert!(
            check(
                &es,
                &Expect {
                    now: None,
                    ..expect
                }
            )
            .is_ok()
        );
        assert_eq!(
            check(&token("ES256", "gone", "at+jwt", &claims, by_ec), &expect),
            Err(JwtError::UnknownKey("gone".into()))
        );
        assert_eq!(
            check(&token("RS256", "ec", "at+jwt", &claims, by_ec), &expect),
            Err(JwtError::WrongType),
            "alg must be the key's"
        );
        assert_eq!(
            check(&token("ES256", "ec", "at+jwt", &claims, by_ed), &expect),
            Err(JwtError::BadSignature)
        );
        let anonymous = serde_json::json!({"iss": "https://kw", "exp": now + 60});
        assert_eq!(
            check(&token("ES256", "ec", "at+jwt", &anonymous, by_ec), &expect),
            Err(JwtError::MissingClaim("sub"))
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!", &es.replace('.', "")] {
            assert_eq!(
                check(garbage, &expect),
                Err(JwtError::Malformed),
                "{garbage}"
            );
        }
        assert_eq!(header(&es).unwrap().kid.as_deref(), Some("ec"));
    }

    #[test]
    fn the_signature_cache_skips_only_the_signature_of_the_same_token_by_the_same_key() {
        let rng = SystemRandom::new();
        let ec_key = || {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap();
            EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .unwrap()
        };
        let jwk = |pair: &EcdsaKeyPair| {
            let point = pair.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec",
                "x": b64(&point[1..33]), "y": b64(&point[33..65])})
        };
        let (signer, other) = (ec_key(), ec_key());
        let keys = KeySet::from_jwks(&Jwks {
            keys: vec![jwk(&signer)],
        });
        let now = 1_000;
        let claims = serde_json::json!({"iss": "https://kw", "sub": "u", "exp": now + 60});
        let expect = Expect {
            typ: "at+jwt",
            issuer: "https://kw",
            now: Some(now),
        };
        let by = |pair: &EcdsaKeyPair| {
            let sig = |m: &[u8]| pair.sign(&rng, m).unwrap().as_ref().to_vec();
            token("ES256", "ec", "at+jwt", &claims, sig)
        };
        let cache = SignatureCache::new(2);
        let good = by(&signer);
        let check = |token: &str, keys: &KeySet, expect: &Expect<'_>| {
            verify_cached::<serde_json::Value>(token, keys, expect, &cache)
        };

        assert_eq!(check(&good, &keys, &expect).unwrap()["sub"], "u");
        assert_eq!(cache.len(), 1, "a good signature is remembered");
        assert_eq!(check(&good, &keys, &expect).unwrap()["sub"], "u");
        assert_eq!(cache.len(), 1);
        let forged = by(&other);
        assert_eq!(check(&forged, &keys, &expect), Err(JwtError::BadSignature));
        assert_eq!(cache.len(), 1, "a failure is not remembered");

        // The claims are checked on every call, cached or not.
        let later = Expect {
            now: Some(now + 61),
            ..expect
        };
        assert_eq!(check(&good, &keys, &later), Err(JwtError::Expired));
        let elsewhere = Expect {
            issuer: "https://other",
            ..expect
        };
        assert_eq!(check(&good, &keys, &elsewhere), Err(JwtError::WrongIssuer));

        // A remembered signature counts only for the key that verified it.
        let replaced = KeySet::from_jwks(&Jwks {
            keys: vec![jwk(&other)],
        });
        assert_eq!(
            check(&good, &replaced, &expect),
            Err(JwtError::BadSignature),
            "the same kid on another key is checked again"
        );
        assert_eq!(
            check(&good, &KeySet::default(), &expect),
            Err(JwtError::UnknownKey("ec".into())),
            "a key taken out stops its tokens"
        );

        // The cache is consulted: an entry (planted here, as no verified token could
        // make it) lets the forged token through without a signature check.
        let digest = ring::digest::digest(&ring::digest::SHA256, forged.as_bytes());
        let mut planted = [0; 32];
        planted.copy_from_slice(digest.as_ref());
        cache.remember(planted, keys.get("ec").unwrap());
        assert!(check(&forged, &keys, &expect).is_ok());

        // Bounded: full, it starts over.
        let third = by(&signer);
        check(&third, &keys, &expect).unwrap();
        assert_eq!(cache.len(), 1);
        assert!(!cache.is_empty());
    }

    #[test]
    fn unusable_jwks_are_refused_with_a_reason() {
        let cases = [
            serde_json::json!({"kty": "oct", "k": "AA"}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "RSA", "n": "AQAB"}),
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "%%"}),
            serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "ES256"}),
        ];
        for jwk in cases {
            assert!(PublicKey::from_jwk(&jwk).is_err(), "{jwk}");
        }
    }
}
