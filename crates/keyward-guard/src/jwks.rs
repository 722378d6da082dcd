//! The issuer's signing keys: found through its discovery document's `jwks_uri`
//! (OpenID Connect Discovery §3), kept in memory, and fetched again when a token names a
//! key id the set does not hold (a key rotation) — at most once every
//! [`JwksCache::MIN_REFETCH`], so that tokens with made-up key ids cannot make the guard
//! hammer the issuer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyward_proto::discovery::Jwks;
use keyward_proto::jws::KeySet;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why the issuer's metadata or keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or the answer was not the JSON expected.
    #[error("cannot fetch {url}")]
    Http {
        /// What was fetched.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The discovery document names another issuer.
    #[error("the discovery document names the issuer {found:?}, not {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's.
        found: String,
    },
}

/// The members of the discovery document the guard reads.
#[derive(Clone, Debug, Deserialize)]
pub struct IssuerMetadata {
    /// The issuer identifier.
    pub issuer: String,
    /// Where the JWK Set is.
    pub jwks_uri: String,
    /// RFC 7662 introspection, when offered.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

impl IssuerMetadata {
    /// Reads `<issuer>/.well-known/openid-configuration` and checks that it names
    /// `issuer`.
    pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Self, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let metadata: Self = get_json(http, &url).await?;
        if metadata.issuer != issuer {
            return Err(FetchError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: metadata.issuer,
            });
        }
        Ok(metadata)
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, FetchError> {
    let wrap = |source| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    http.get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(wrap)?
        .json()
        .await
        .map_err(wrap)
}

/// The issuer's keys, refetched on an unknown key id at most once a minute.
#[derive(Debug)]
pub struct JwksCache {
    http: reqwest::Client,
    jwks_uri: String,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last fetched again (not counting the first load, so that a key
    /// rotated in just after start is picked up at once); held across a fetch so that one
    /// runs at a time.
    refetched: Mutex<Option<Instant>>,
    refetches: AtomicU64,
}

impl JwksCache {
    /// The least time between two fetches.
    pub const MIN_REFETCH: Duration = Duration::from_secs(60);

    /// Fetches the keys at `jwks_uri` once.
    pub async fn load(http: reqwest::Client, jwks_uri: String) -> Result<Self, FetchError> {
        let jwks: Jwks = get_json(&http, &jwks_uri).await?;
        Ok(Self {
            http,
            jwks_uri,
            keys: RwLock::new(Arc::new(KeySet::from_jwks(&jwks))),
            refetched: Mutex::new(None),
            refetches: AtomicU64::new(0),
        })
    }

    /// The keys as last fetched.
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many times the keys were fetched again after the first time.
    pub fn refetches(&self) -> u64 {
        self.refetches.load(Ordering::Relaxed)
    }

    /// Called when a token names `kid` and the set does not hold it: fetches the keys
    /// again unless they were fetched again less than [`Self::MIN_REFETCH`] ago (or
    /// another caller just did), and returns the keys to retry with, or `None` when there is
    /// nothing new to try.
    pub async fn refetch_for(&self, kid: &str) -> Result<Option<Arc<KeySet>>, FetchError> {
        let mut refetched = self.refetched.lock().await;
        let current = self.keys();
        if current.contains(kid) {
            // Someone else fetched while this caller waited.
            return Ok(Some(current));
        }
        if refetched.is_some_and(|last| !refetch_due(last, Instant::now(), Self::MIN_REFETCH)) {
            return Ok(None);
        }
        *refetched = Some(Instant::now());
        self.refetches.fetch_add(1, Ordering::Relaxed);
        let jwks: Jwks = get_json(&self.http, &self.jwks_uri).await?;
        let keys = Arc::new(KeySet::from_jwks(&jwks));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&keys);
        Ok(Some(keys))
    }
}

/// Whether a fetch made at `last` may be followed by another at `now`.
pub fn refetch_due(last: Instant, now: Instant, min: Duration) -> bool {
    now.duration_since(last) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refetch_waits_a_minute_after_the_last_fetch() {
        let last = Instant::now();
        let min = JwksCache::MIN_REFETCH;
        assert!(!refetch_due(last, last, min));
        assert!(!refetch_due(last, last + Duration::from_secs(59), min));
        assert!(refetch_due(last, last + Duration::from_secs(60), min));
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_the_keys_again_at_most_once_a_minute() {
        use crate::fixture::Issuer;
        use crate::verify::tests::Signer;
        use crate::{Guard, VerifyError};
        use keyward_proto::jws::JwtError;

        let (old, new, later) = (Signer::new("k1"), Signer::new("k2"), Signer::new("k3"));
        let issuer = Issuer::start(vec![old.jwk()]).await;
        let guard = Guard::start(issuer.config(&[])).await.unwrap();
        assert_eq!(issuer.fetches(), 1);
        let by_old = old.sign(&issuer.claims("alice", ""));
        assert_eq!(guard.verify(&by_old).await.unwrap().sub, "alice");
        assert_eq!(issuer.fetches(), 1, "a known key needs no fetch");

        // A rotation: the new key is fetched on its first token.
        issuer.keys.lock().unwrap().push(new.jwk());
        let by_new = new.sign(&issuer.claims("bob", ""));
        assert_eq!(guard.verify(&by_new).await.unwrap().sub, "bob");
        assert_eq!((issuer.fetches(), guard.jwks_refetches()), (2, 1));
        assert_eq!(guard.verify(&by_new).await.unwrap().sub, "bob");
        assert_eq!(issuer.fetches(), 2);

        // Within the minute, another unknown kid is refused without a fetch, even once
        // the issuer publishes it.
        let by_later = later.sign(&issuer.claims("carol", ""));
        issuer.keys.lock().unwrap().push(later.jwk());
        for _ in 0..3 {
            assert_eq!(
                guard.verify(&by_later).await,
                Err(VerifyError::Jwt(JwtError::UnknownKey("k3".into())))
            );
        }
        assert_eq!((issuer.fetches(), guard.jwks_refetches()), (2, 1));
    }
}
