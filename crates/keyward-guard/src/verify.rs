//! Checking an access token without I/O: the signature against a JWK Set (through
//! [`keyward_proto::jws`]), `typ = at+jwt` (RFC 9068 §4), `iss`, `aud`, `exp` and `nbf`
//! with [`SKEW`] seconds of clock skew, then the scopes a service requires, in
//! Taskcluster's wildcard grammar ([`keyward_proto::exchange::satisfies`]).

use keyward_proto::claims::{AccessTokenClaims, Audience};
use keyward_proto::exchange::{Actor, any_satisfies};
use keyward_proto::jws::{self, Expect, JwtError, KeySet, SignatureCache};
use serde::Deserialize;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const SKEW: i64 = 30;

/// What a token must be to pass: issued by `issuer`, for `audience` (when set), holding
/// every one of `scopes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// The issuer, exactly as in the tokens' `iss`.
    pub issuer: String,
    /// The audience the token's `aud` must name; `None` accepts any audience.
    pub audience: Option<String>,
    /// Scopes the token must satisfy (a held `queue:*` satisfies `queue:x`).
    pub scopes: Vec<String>,
}

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The subject.
    pub sub: String,
    /// The granted scopes, in the token's order.
    pub scopes: Vec<String>,
    /// Who acts for the subject (RFC 8693 §4.1), if anyone.
    pub act: Option<Actor>,
    /// The client the token was issued to.
    pub client_id: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// The token's id.
    pub jti: String,
    /// The audience.
    pub aud: Audience,
}

impl Principal {
    /// Whether the token's scopes satisfy `wanted`.
    pub fn holds(&self, wanted: &str) -> bool {
        any_satisfies(self.scopes.iter().map(String::as_str), wanted)
    }

    /// The first of `required` the token does not satisfy.
    pub fn missing<'a>(&self, required: &'a [String]) -> Option<&'a str> {
        required
            .iter()
            .map(String::as_str)
            .find(|wanted| !self.holds(wanted))
    }

    /// The actor chain as the `x-keyward-act` header carries it: subjects, outermost
    /// first, separated by spaces; `None` without an actor.
    pub fn act_header(&self) -> Option<String> {
        self.act.as_ref().map(|act| act.chain().join(" "))
    }
}

/// Why a token was refused. Every variant is an `invalid_token` (RFC 6750 §3.1) but
/// [`VerifyError::InsufficientScope`] and [`VerifyError::Unavailable`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// No bearer token in the request.
    #[error("no bearer token")]
    Missing,
    /// The JWT itself was refused.
    #[error("{0}")]
    Jwt(#[from] JwtError),
    /// `nbf` is still ahead.
    #[error("not yet valid")]
    NotYetValid,
    /// `aud` does not name this service.
    #[error("wrong audience")]
    WrongAudience,
    /// keyward says the token is no longer active (revoked, user disabled, signed out).
    #[error("token revoked")]
    Revoked,
    /// Valid, but without a scope the service requires (RFC 6750 §3.1
    /// `insufficient_scope`).
    #[error("insufficient scope: {0} is required")]
    InsufficientScope(String),
    /// The issuer's keys or introspection could not be reached: no answer either way.
    #[error("the issuer cannot be reached")]
    Unavailable,
}

impl VerifyError {
    /// The RFC 6750 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Unavailable => "temporarily_unavailable",
            _ => "invalid_token",
        }
    }
}

#[derive(Deserialize)]
struct WithNbf {
    #[serde(flatten)]
    claims: AccessTokenClaims,
    #[serde(default)]
    nbf: Option<i64>,
}

/// Checks `token` against `keys` and `requirements` at `now` (seconds since the epoch).
/// A [`JwtError::UnknownKey`] tells the caller to fetch the JWKS again. Scopes are
/// checked last, so that an [`VerifyError::InsufficientScope`] means the token itself
/// is good.
pub fn check(
    token: &str,
    keys: &KeySet,
    requirements: &Requirements,
    now: i64,
    cache: Option<&SignatureCache>,
) -> Result<Principal, VerifyError> {
    let expect = Expect {
        typ: "at+jwt",
        issuer: &requirements.issuer,
        now: Some(now - SKEW),
    };
    let read: WithNbf = match cache {
        Some(cache) => jws::verify_cached(token, keys, &expect, cache)?,
        None => jws::verify(token, keys, &expect)?,
    };
    if read.nbf.is_some_and(|nbf| nbf > now + SKEW) {
        return Err(VerifyError::NotYetValid);
    }
    let claims = read.claims;
    if let Some(audience) = &requirements.audience
        && !claims.aud.contains(audience)
    {
        return Err(VerifyError::WrongAudience);
    }
    let principal = Principal {
        sub: claims.sub,
        scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        act: claims.act,
        client_id: claims.client_id,
        exp: claims.exp,
        jti: claims.jti,
        aud: claims.aud,
    };
    if let Some(missing) = principal.missing(&requirements.scopes) {
        return Err(VerifyError::InsufficientScope(missing.to_owned()));
    }
    Ok(principal)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use keyward_proto::discovery::Jwks;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

    /// An ES256 signer with key id `kid`, and its JWK.
    pub(crate) struct Signer {
        pair: EcdsaKeyPair,
        pub(crate) kid: String,
    }

    impl Signer {
        pub(crate) fn new(kid: &str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.as_ref(),
                &rng,
            )
            .unwrap();
            Self {
                pair,
                kid: kid.into(),
            }
        }

        pub(crate) fn jwk(&self) -> serde_json::Value {
            let point = self.pair.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
        }

        pub(crate) fn keys(&self) -> KeySet {
            KeySet::from_jwks(&Jwks {
                keys: vec![self.jwk()],
            })
        }

        pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
            let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "at+jwt"});
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), signed.as_bytes())
                .unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    pub(crate) const NOW: i64 = 1_700_000_000;

    pub(crate) fn claims(sub: &str, aud: serde_json::Value, scope: &str) -> serde_json::Value {
        serde_json::json!({"iss": "https://kw.example", "sub": sub, "aud": aud,
            "exp": NOW + 600, "iat": NOW, "jti": "j1", "client_id": "portal", "scope": scope})
    }

    fn requirements(scopes: &[&str]) -> Requirements {
        Requirements {
            issuer: "https://kw.example".into(),
            audience: Some("queue".into()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_good_token_passes_with_its_principal() {
        let signer = Signer::new("k1");
        let mut body = claims("alice", "queue".into(), "queue:create-task:proj/* other");
        body["act"] = serde_json::json!({"sub": "ci", "act": {"sub": "bot"}});
        let token = signer.sign(&body);
        let principal = check(
            &token,
            &signer.keys(),
            &requirements(&["queue:create-task:proj/x"]),
            NOW,
            None,
        )
        .unwrap();
        assert_eq!(principal.sub, "alice");
        assert_eq!(principal.scopes, ["queue:create-task:proj/*", "other"]);
        assert_eq!(principal.act_header().as_deref(), Some("ci bot"));
        assert_eq!(principal.exp, NOW + 600);

        // An array audience naming this service passes too.
        let token = signer.sign(&claims("alice", serde_json::json!(["x", "queue"]), ""));
        assert!(check(&token, &signer.keys(), &requirements(&[]), NOW, None).is_ok());
    }

    #[test]
    fn audience_issuer_signature_and_scope_are_each_checked() {
        let signer = Signer::new("k1");
        let keys = signer.keys();
        let run = |body: &serde_json::Value, scopes: &[&str]| {
            check(&signer.sign(body), &keys, &requirements(scopes), NOW, None)
        };
        assert_eq!(
            run(&claims("a", "portal".into(), ""), &[]),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            run(&claims("a", serde_json::json!(["x", "y"]), ""), &[]),
            Err(VerifyError::WrongAudience)
        );
        let mut foreign = claims("a", "queue".into(), "");
        foreign["iss"] = "https://evil.example".into();
        assert_eq!(
            run(&foreign, &[]),
            Err(VerifyError::Jwt(JwtError::WrongIssuer))
        );
        let err = run(&claims("a", "queue".into(), "queue:read"), &["queue:write"]).unwrap_err();
        assert_eq!(err, VerifyError::InsufficientScope("queue:write".into()));
        assert_eq!(err.code(), "insufficient_scope");
        // The wildcard grammar, and nothing more.
        assert!(run(&claims("a", "queue".into(), "queue:*"), &["queue:write"]).is_ok());
        assert!(run(&claims("a", "queue".into(), "q*ue"), &["queue"]).is_err());

        let other = Signer::new("k1");
        let forged = other.sign(&claims("a", "queue".into(), ""));
        assert_eq!(
            check(&forged, &keys, &requirements(&[]), NOW, None),
            Err(VerifyError::Jwt(JwtError::BadSignature))
        );
        let unknown = Signer::new("k2").sign(&claims("a", "queue".into(), ""));
        assert_eq!(
            check(&unknown, &keys, &requirements(&[]), NOW, None),
            Err(VerifyError::Jwt(JwtError::UnknownKey("k2".into())))
        );
        assert_eq!(
            VerifyError::Jwt(JwtError::BadSignature).code(),
            "invalid_token"
        );
    }

    #[test]
    fn exp_and_nbf_allow_thirty_seconds_of_skew() {
        let signer = Signer::new("k1");
        let keys = signer.keys();
        let mut body = claims("a", "queue".into(), "");
        body["exp"] = NOW.into();
        body["nbf"] = (NOW + 30).into();
        let token = signer.sign(&body);
        let at = |now| check(&token, &keys, &requirements(&[]), now, None);
        assert!(at(NOW).is_ok(), "nbf 30 s ahead is within the skew");
        assert!(at(NOW + 30).is_ok(), "exp 30 s ago is within the skew");
        assert_eq!(at(NOW + 31), Err(VerifyError::Jwt(JwtError::Expired)));
        assert_eq!(at(NOW - 1), Err(VerifyError::NotYetValid));
    }
}
