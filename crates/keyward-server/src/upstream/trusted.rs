//! Issuers of machine identities that keyward trusts (`[[trusted_issuers]]`): CI
//! systems' workload identity tokens (GitHub Actions' OIDC tokens, GitLab's ID tokens)
//! offered as subject tokens in a token exchange.
//!
//! Such a JWT is accepted when it is signed (`typ` `JWT`, ES256, RS256 or EdDSA, checked
//! by [`keyward_proto::jws`]) by a key of the JWKS its issuer's discovery document
//! (`<issuer>/.well-known/openid-configuration`, whose `issuer` must be the configured
//! one) names, has the configured `iss` and `aud`, has not expired (`exp`) and is
//! already valid (`nbf`), and has every configured subject claim as a string. The
//! machine it names is `trusted:<id>:<values joined by ':'>`; since `:` joins them, only
//! the last value may contain one (so that two tokens never name the same machine by
//! splitting values differently).
//!
//! The keys are fetched at the first such token and kept; a token signed by a key id
//! they do not hold makes keyward fetch the JWKS again, at most once every
//! [`MIN_REFETCH`] seconds per issuer by the server's clock (key rotation needs nothing
//! from anyone; a flood of made-up key ids costs the issuer one request a minute).

use keyward_proto::discovery::Jwks;
use keyward_proto::jws::{self, Expect, JwtError, KeySet};
use url::Url;

use super::guard::{endpoint_allowed, read_capped};
use super::{UpstreamError, printable};
use crate::config::exchange::TrustedIssuerConfig;

/// The least time, in seconds, between two fetches of an issuer's keys.
pub const MIN_REFETCH: i64 = 60;

/// Every trusted issuer, each with the keys fetched so far.
pub struct TrustedIssuers {
    list: Vec<TrustedIssuer>,
}

/// One trusted issuer and its keys.
pub struct TrustedIssuer {
    config: TrustedIssuerConfig,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Fetched>,
}

/// The keys of an issuer as last fetched, and when keys were last fetched.
#[derive(Default)]
struct Fetched {
    keys: Option<KeySet>,
    at: Option<i64>,
}

/// Why a trusted issuer's token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The issuer's discovery document or keys could not be fetched.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The token was not accepted (signature, issuer, expiry, audience, claims).
    #[error("{0}")]
    Token(String),
}

/// The machine a trusted issuer's token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineIdentity {
    /// `trusted:<id>:<values>`.
    pub subject: String,
    /// When the token expires.
    pub exp: i64,
}

impl TrustedIssuers {
    /// The issuers of `configs`, none contacted yet.
    pub fn new(configs: &[TrustedIssuerConfig], http: &reqwest::Client) -> Self {
        Self {
            list: configs
                .iter()
                .map(|config| TrustedIssuer {
                    config: config.clone(),
                    http: http.clone(),
                    keys: tokio::sync::Mutex::new(Fetched::default()),
                })
                .collect(),
        }
    }

    /// The issuer whose `iss` is `iss`.
    pub fn by_issuer(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.list.iter().find(|t| t.config.issuer == iss)
    }
}

impl TrustedIssuer {
    /// Its configuration.
    pub fn config(&self) -> &TrustedIssuerConfig {
        &self.config
    }

    /// Verifies `token` (see the module docs) as of `now`, and names its machine.
    pub async fn verify(&self, token: &str, now: i64) -> Result<MachineIdentity, TrustError> {
        let expect = Expect {
            typ: "JWT",
            issuer: &self.config.issuer,
            now: Some(now),
        };
        let mut fetched = self.keys.lock().await;
        if fetched.keys.is_none() {
            fetched.at = Some(now);
            fetched.keys = Some(self.fetch_keys().await?);
        }
        let claims = loop {
            let keys = fetched
                .keys
                .as_ref()
                .map_or_else(KeySet::default, Clone::clone);
            match jws::verify::<serde_json::Map<String, serde_json::Value>>(token, &keys, &expect) {
                Ok(claims) => break claims,
                Err(JwtError::UnknownKey(kid)) => {
                    if fetched.at.is_some_and(|at| now - at < MIN_REFETCH) {
                        return Err(TrustError::Token(format!(
                            "signed by the unknown key {:?} (the issuer's keys were fetched less than {MIN_REFETCH} s ago)",
                            printable(&kid)
                        )));
                    }
                    fetched.at = Some(now);
                    let keys = self.fetch_keys().await?;
                    let known = keys.contains(&kid);
                    fetched.keys = Some(keys);
                    tracing::info!(issuer = %self.config.issuer, "fetched a trusted issuer's keys again (unknown key id)");
                    if !known {
                        return Err(TrustError::Token(format!(
                            "signed by the unknown key {:?}",
                            printable(&kid)
                        )));
                    }
                }
                Err(e) => return Err(TrustError::Token(e.to_string())),
            }
        };
        drop(fetched);
        machine_identity(&self.config, &claims, now)
    }

    /// Fetches the discovery document, then the JWKS it names.
    async fn fetch_keys(&self) -> Result<KeySet, UpstreamError> {
        let issuer = &self.config.issuer;
        let document = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let jwks_uri = jwks_uri_of(issuer, &document, &self.get(&document).await?)?;
        read_jwks(jwks_uri.as_str(), &self.get(jwks_uri.as_str()).await?)
    }

    /// GETs `url` (checked as any provider URL) and reads its answer, at most
    /// [`super::guard::MAX_ANSWER`] bytes.
    async fn get(&self, url: &str) -> Result<Vec<u8>, UpstreamError> {
        let parsed = Url::parse(url).map_err(|e| UpstreamError::Malformed {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
        endpoint_allowed(&parsed).map_err(|detail| UpstreamError::Malformed {
            url: url.to_owned(),
            detail,
        })?;
        let response = self
            .http
            .get(parsed)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|source| UpstreamError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        read_capped(url, response).await
    }
}

/// The machine named by `claims`, the verified claims of a token of the trusted issuer
/// `config`, once `aud` and `nbf` are checked as of `now` (see the module docs).
pub fn machine_identity(
    config: &TrustedIssuerConfig,
    claims: &serde_json::Map<String, serde_json::Value>,
    now: i64,
) -> Result<MachineIdentity, TrustError> {
    let audience = &config.audience;
    let for_us = match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => aud == audience,
        Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a == audience),
        _ => false,
    };
    if !for_us {
        return Err(TrustError::Token(format!(
            "its aud is not {:?}",
            printable(audience)
        )));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf
            .as_i64()
            .ok_or_else(|| TrustError::Token("nbf is not a number".into()))?;
        if nbf > now {
            return Err(TrustError::Token("not valid yet (nbf)".into()));
        }
    }
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| TrustError::Token("exp is not a number".into()))?;
    let names = &config.subject_claims;
    let mut values = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let value = claims
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                TrustError::Token(format!("the claim {name:?} is missing or not a string"))
            })?;
        if i + 1 < names.len() && value.contains(':') {
            return Err(TrustError::Token(format!(
                "the claim {name:?} contains ':', which only the last subject claim may"
            )));
        }
        values.push(value);
    }
    Ok(MachineIdentity {
        subject: format!("trusted:{}:{}", config.id, values.join(":")),
        exp,
    })
}

/// The `jwks_uri` of the discovery `document` (fetched from `url`) of the trusted
/// issuer `issuer`: the document must name that issuer, and the URL must be one keyward
/// may fetch ([`endpoint_allowed`]).
pub fn jwks_uri_of(issuer: &str, url: &str, document: &[u8]) -> Result<Url, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct Document {
        issuer: String,
        jwks_uri: String,
    }
    let discovery_error = |detail: String| UpstreamError::Discovery {
        issuer: issuer.to_owned(),
        detail,
    };
    let found: Document = parse_json(url, document)?;
    if found.issuer != issuer {
        return Err(discovery_error(format!(
            "the document names the issuer {:?}",
            found.issuer
        )));
    }
    let jwks_uri =
        Url::parse(&found.jwks_uri).map_err(|e| discovery_error(format!("jwks_uri: {e}")))?;
    endpoint_allowed(&jwks_uri).map_err(discovery_error)?;
    Ok(jwks_uri)
}

/// The signature keys of the JWK Set `body` (fetched from `url`).
pub fn read_jwks(url: &str, body: &[u8]) -> Result<KeySet, UpstreamError> {
    let jwks: Jwks = parse_json(url, body)?;
    Ok(KeySet::from_jwks(&jwks))
}

fn parse_json<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, UpstreamError> {
    serde_json::from_slice(body).map_err(|e| UpstreamError::Malformed {
        url: url.to_owned(),
        detail: e.to_string(),
    })
}
