//! The registered clients, kept in memory so that a token request does not cost a
//! database trip to find its client (on SQLite that trip is a hand-off to sqlx's worker
//! thread and back, the largest cost of a client-credentials request).
//!
//! Every change to the `clients` table goes through the store, which bumps the
//! `clients` counter in `keyward_changes` in the same transaction and empties this
//! replica's cache at once. Every replica (and the server beside a `keyward client`
//! command run elsewhere) reads the counter every [`POLL_EVERY`] and empties its cache
//! when the counter moved: a client removed or changed anywhere stops working
//! everywhere within that interval. The cache is used only while a poll has succeeded
//! within [`FRESH_FOR`]; with the database out of reach it steps aside, and lookups go
//! to the database (and fail there, as they should).
//!
//! Only clients that exist are cached (an unknown `client_id`, which anyone can send,
//! adds nothing), and at most [`MAX_ENTRIES`] of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::domain::Client;

/// How often each replica reads the `clients` change counter.
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long after its last successful poll the cache is trusted.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
/// The most clients kept.
const MAX_ENTRIES: usize = 10_000;

/// The SQL that reads the counter (both databases).
pub const VERSION_SQL: &str = "SELECT version FROM keyward_changes WHERE name = 'clients'";
/// The SQL that bumps it, in the transaction of a change (both databases).
pub const BUMP_SQL: &str =
    "UPDATE keyward_changes SET version = version + 1 WHERE name = 'clients'";

/// Clients by id, with what it takes to know they are current.
#[derive(Debug)]
pub struct ClientCache {
    entries: RwLock<HashMap<String, Client>>,
    /// Bumped at every emptying: a lookup that read the database before an emptying
    /// does not put its (maybe stale) answer in after it.
    generation: AtomicU64,
    /// The counter's value at the last poll (`i64::MIN` before the first).
    seen: AtomicI64,
    /// Milliseconds since `base` until which the cache is trusted (0: not trusted).
    fresh_until: AtomicU64,
    base: Instant,
}

impl Default for ClientCache {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            seen: AtomicI64::new(i64::MIN),
            fresh_until: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl ClientCache {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fresh(&self) -> bool {
        self.now_ms() < self.fresh_until.load(Ordering::Acquire)
    }

    /// The cached client `client_id`, while the cache is trusted.
    pub fn get(&self, client_id: &str) -> Option<Client> {
        if !self.fresh() {
            return None;
        }
        self.entries.read().ok()?.get(client_id).cloned()
    }

    /// The generation to pass to [`ClientCache::put`] with what a lookup read after
    /// this call.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `client`, read from the database after [`ClientCache::generation`] gave
    /// `generation`, unless the cache was emptied since (or is not trusted, or full).
    pub fn put(&self, generation: u64, client: &Client) {
        if !self.fresh() {
            return;
        }
        if let Ok(mut entries) = self.entries.write()
            && self.generation.load(Ordering::Acquire) == generation
            && (entries.len() < MAX_ENTRIES || entries.contains_key(&client.client_id))
        {
            entries.insert(client.client_id.clone(), client.clone());
        }
    }

    /// Forgets every client (after a change this replica made, or saw).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// What a poll read: the counter's value, or `None` when the database did not
    /// answer (the cache then stops being trusted once [`FRESH_FOR`] has passed).
    pub fn observe(&self, version: Option<i64>) {
        let Some(version) = version else {
            return;
        };
        if self.seen.swap(version, Ordering::AcqRel) != version {
            self.clear();
        }
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(FRESH_FOR.as_millis()).unwrap_or(0));
        self.fresh_until.store(until, Ordering::Release);
    }
}

/// Polls the counter with `read` every [`POLL_EVERY`] until the cache is dropped.
pub fn spawn_poller<F, Fut>(cache: &Arc<ClientCache>, read: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<i64>> + Send,
{
    let cache: Weak<ClientCache> = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if cache.strong_count() == 0 {
                return;
            }
            let version = read().await;
            match cache.upgrade() {
                Some(cache) => cache.observe(version),
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::SigningAlg;
    use keyward_proto::ScopeSet;

    fn client(id: &str) -> Client {
        Client {
            client_id: id.into(),
            name: id.into(),
            secret_hash: None,
            previous_secret: None,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![],
            scopes: ScopeSet::parse("openid").unwrap(),
            skip_consent: false,
            introspect: false,
            id_token_alg: SigningAlg::ES256,
            created_at: 0,
        }
    }

    #[test]
    fn untrusted_until_polled_and_emptied_when_the_counter_moves() {
        let cache = ClientCache::default();
        let generation = cache.generation();
        cache.put(generation, &client("a"));
        assert!(cache.get("a").is_none(), "trusted before any poll");
        cache.observe(Some(1));
        cache.put(cache.generation(), &client("a"));
        assert!(cache.get("a").is_some());
        cache.observe(Some(1));
        assert!(cache.get("a").is_some(), "the same counter empties nothing");
        cache.observe(Some(2));
        assert!(
            cache.get("a").is_none(),
            "a moved counter empties the cache"
        );
    }

    #[test]
    fn a_lookup_from_before_an_emptying_is_not_kept() {
        let cache = ClientCache::default();
        cache.observe(Some(1));
        let generation = cache.generation();
        cache.clear();
        cache.put(generation, &client("stale"));
        assert!(cache.get("stale").is_none());
    }

    #[test]
    fn a_failed_poll_lets_the_cache_lapse() {
        let cache = ClientCache::default();
        cache.observe(Some(1));
        cache.put(cache.generation(), &client("a"));
        cache.fresh_until.store(0, Ordering::Release);
        cache.observe(None);
        assert!(
            cache.get("a").is_none(),
            "trusted without a successful poll"
        );
    }
}
