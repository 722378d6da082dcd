//! keyward-guard: the resource-server side of keyward.
//!
//! A [`Guard`] checks keyward's JWT access tokens (RFC 9068) against the issuer's JWK
//! Set ([`jwks`]), its `iss`, `aud`, `exp`/`nbf` and the required scopes ([`verify`]),
//! and, when given a client for it, asks keyward's introspection endpoint whether the
//! token was revoked ([`introspect`]). On top of it:
//! - [`http`]: an axum extractor ([`http::Authenticated`]) and a tower layer
//!   ([`http::GuardLayer`]) answering RFC 6750 errors;
//! - [`ws`]: the WebSocket authentication protocol (WebsockexNova's AuthFlow) as a state
//!   machine with no I/O;
//! - [`proxy`]: the reverse proxy that `keyward guard` runs, with its metrics.

pub mod http;
pub mod introspect;
pub mod jwks;
pub mod proxy;
pub mod verify;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_proto::ClientSecret;
use keyward_proto::jws::{JwtError, SignatureCache};

pub use http::{Authenticated, GuardLayer};
pub use verify::{Principal, Requirements, VerifyError};

/// How the guard is set up.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// The issuer, exactly as in its tokens' `iss` (`https://id.example.com`).
    pub issuer: String,
    /// The audience tokens must name; `None` accepts any (not advised).
    pub audience: Option<String>,
    /// Scopes every request must hold.
    pub scopes: Vec<String>,
    /// A client allowed to introspect any token (`introspect = true` in keyward), to
    /// notice revoked tokens; `None` trusts a token until its `exp`.
    pub introspection: Option<(String, ClientSecret)>,
    /// How often a live WebSocket's token is checked again at introspection; HTTP
    /// answers are remembered for at most this long (and at most [`HTTP_CACHE`]).
    pub recheck: Duration,
}

/// The longest an introspection answer is remembered for HTTP requests.
pub const HTTP_CACHE: Duration = Duration::from_secs(10);

/// Why a guard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The issuer's metadata or keys could not be read.
    #[error(transparent)]
    Fetch(#[from] jwks::FetchError),
    /// Introspection was asked for and the issuer offers none.
    #[error("the issuer's discovery document has no introspection_endpoint")]
    NoIntrospection,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Token checks for one service: keys, requirements, introspection.
#[derive(Debug)]
pub struct Guard {
    requirements: Requirements,
    keys: jwks::JwksCache,
    signatures: SignatureCache,
    introspector: Option<introspect::Introspector>,
    recheck: Duration,
}

impl Guard {
    /// Reads the issuer's discovery document and keys, and is ready.
    pub async fn start(config: GuardConfig) -> Result<Arc<Self>, StartError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(StartError::Client)?;
        let metadata = jwks::IssuerMetadata::discover(&http, &config.issuer).await?;
        let keys = jwks::JwksCache::load(http.clone(), metadata.jwks_uri).await?;
        let introspector = match config.introspection {
            None => None,
            Some((client_id, secret)) => Some(introspect::Introspector::new(
                http,
                metadata
                    .introspection_endpoint
                    .ok_or(StartError::NoIntrospection)?,
                client_id,
                secret,
                config.recheck.min(HTTP_CACHE),
            )),
        };
        Ok(Arc::new(Self {
            requirements: Requirements {
                issuer: config.issuer,
                audience: config.audience,
                scopes: config.scopes,
            },
            keys,
            signatures: SignatureCache::new(10_000),
            introspector,
            recheck: config.recheck,
        }))
    }

    /// What tokens must be.
    pub fn requirements(&self) -> &Requirements {
        &self.requirements
    }

    /// How often live connections are checked again.
    pub fn recheck(&self) -> Duration {
        self.recheck
    }

    /// Whether revocation is checked at introspection.
    pub fn introspects(&self) -> bool {
        self.introspector.is_some()
    }

    /// How many times the JWKS was fetched again for an unknown key id.
    pub fn jwks_refetches(&self) -> u64 {
        self.keys.refetches()
    }

    /// Checks `token`: signature (the keys fetched again for an unknown key id, at most
    /// once a minute), claims, scopes, and then, with introspection, that keyward still
    /// holds it active (answers remembered briefly).
    pub async fn verify(&self, token: &str) -> Result<Principal, VerifyError> {
        let principal = self.verify_signed(token).await?;
        if let Some(introspector) = &self.introspector {
            match introspector.active(token).await {
                Ok(true) => {}
                Ok(false) => return Err(VerifyError::Revoked),
                Err(e) => {
                    tracing::warn!(error = %e, "introspection failed");
                    return Err(VerifyError::Unavailable);
                }
            }
        }
        Ok(principal)
    }

    /// Checks `token` without introspection.
    pub async fn verify_signed(&self, token: &str) -> Result<Principal, VerifyError> {
        let now = unix_now();
        let keys = self.keys.keys();
        match verify::check(
            token,
            &keys,
            &self.requirements,
            now,
            Some(&self.signatures),
        ) {
            Err(VerifyError::Jwt(JwtError::UnknownKey(kid))) => {
                match self.keys.refetch_for(&kid).await {
                    Ok(Some(keys)) => verify::check(
                        token,
                        &keys,
                        &self.requirements,
                        now,
                        Some(&self.signatures),
                    ),
                    Ok(None) => Err(VerifyError::Jwt(JwtError::UnknownKey(kid))),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fetch the JWKS again");
                        Err(VerifyError::Jwt(JwtError::UnknownKey(kid)))
                    }
                }
            }
            other => other,
        }
    }

    /// Asks keyward now whether `token` is still active: `Some(false)` when it is not,
    /// `None` when there is no introspection or it could not be reached (a live
    /// connection is then left alone until the next check).
    pub async fn still_active(&self, token: &str) -> Option<bool> {
        let introspector = self.introspector.as_ref()?;
        match introspector.ask(token).await {
            Ok(active) => Some(active),
            Err(e) => {
                tracing::warn!(error = %e, "introspection failed");
                None
            }
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the epoch.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads a duration written like keyward's configuration: a number followed by `s`,
/// `m`, `h` or `d` (`30s`, `5m`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s or 5m"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} is not a duration like 30s or 5m")),
    };
    number
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1"), Ok(Duration::from_secs(1)));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("s").is_err());
    }

    /// Found while writing the `config` fuzz target's duration check, which reproduces
    /// it with fuzz/corpus/config/duration-overflow (`x = "9223372036854775807m"`): the
    /// number times the unit overflowed, a panic in a debug build and a wrapped, far
    /// shorter duration in a release build.
    #[test]
    fn a_duration_too_long_to_count_is_refused() {
        for text in [
            "9223372036854775807m",
            "213503982334602d",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(
            parse_duration("213503982334601d"),
            Ok(Duration::from_secs(213_503_982_334_601 * 86_400))
        );
    }
}

/// A stand-in issuer for the unit tests: discovery and a JWKS that a test can change,
/// counting the JWKS fetches.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::routing::get;

    pub(crate) struct Issuer {
        pub(crate) url: String,
        pub(crate) keys: Arc<Mutex<Vec<serde_json::Value>>>,
        pub(crate) fetches: Arc<AtomicUsize>,
    }

    impl Issuer {
        pub(crate) async fn start(keys: Vec<serde_json::Value>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let keys = Arc::new(Mutex::new(keys));
            let fetches = Arc::new(AtomicUsize::new(0));
            let discovery = serde_json::json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
            let (served, counter) = (Arc::clone(&keys), Arc::clone(&fetches));
            let router = axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { axum::Json(discovery) }),
                )
                .route(
                    "/jwks",
                    get(move || async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let keys = served.lock().unwrap().clone();
                        axum::Json(serde_json::json!({ "keys": keys }))
                    }),
                );
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            Self { url, keys, fetches }
        }

        pub(crate) fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        /// Claims for a token of this issuer.
        pub(crate) fn claims(&self, sub: &str, scope: &str) -> serde_json::Value {
            let mut claims = crate::verify::tests::claims(sub, "queue".into(), scope);
            claims["iss"] = self.url.clone().into();
            claims["exp"] = (crate::unix_now() + 600).into();
            claims
        }

        pub(crate) fn config(&self, scopes: &[&str]) -> crate::GuardConfig {
            crate::GuardConfig {
                issuer: self.url.clone(),
                audience: Some("queue".into()),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                introspection: None,
                recheck: std::time::Duration::from_secs(30),
            }
        }
    }
}
