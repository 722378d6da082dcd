//! Asking keyward whether a token is still active (RFC 7662), so that a revoked token,
//! a disabled user or a sign-out everywhere stops a token before its `exp`. Answers are
//! remembered for a short time for HTTP; live WebSockets ask afresh at every recheck.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keyward_proto::ClientSecret;
use keyward_proto::introspect::IntrospectionResponse;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// Why introspection gave no answer.
#[derive(Debug, thiserror::Error)]
#[error("introspection at {endpoint} failed")]
pub struct IntrospectError {
    endpoint: String,
    #[source]
    source: reqwest::Error,
}

/// The most answers remembered; when full, the memory starts over.
const CAPACITY: usize = 10_000;

/// A resource server's client at keyward's introspection endpoint.
#[derive(Debug)]
pub struct Introspector {
    http: reqwest::Client,
    endpoint: String,
    client_id: String,
    secret: ClientSecret,
    ttl: Duration,
    answers: Mutex<HashMap<[u8; 32], (Instant, bool)>>,
}

impl Introspector {
    /// Introspection at `endpoint` as `client_id`, answers remembered for `ttl`.
    pub fn new(
        http: reqwest::Client,
        endpoint: String,
        client_id: String,
        secret: ClientSecret,
        ttl: Duration,
    ) -> Self {
        Self {
            http,
            endpoint,
            client_id,
            secret,
            ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `token` is active, from memory if asked less than the cache time ago.
    pub async fn active(&self, token: &str) -> Result<bool, IntrospectError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((at, active)) = self.lock().get(&key)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(*active);
        }
        let active = self.ask(token).await?;
        let mut answers = self.lock();
        if answers.len() >= CAPACITY {
            answers.clear();
        }
        answers.insert(key, (now, active));
        Ok(active)
    }

    /// Whether `token` is active, asked now.
    pub async fn ask(&self, token: &str) -> Result<bool, IntrospectError> {
        let wrap = |source| IntrospectError {
            endpoint: self.endpoint.clone(),
            source,
        };
        let answer: IntrospectionResponse = self
            .http
            .post(&self.endpoint)
            .basic_auth(&self.client_id, Some(self.secret.secret()))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(wrap)?
            .json()
            .await
            .map_err(wrap)?;
        Ok(answer.active)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, bool)>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
