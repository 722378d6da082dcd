//! The state shared by every HTTP handler: configuration, store, signing keys, the MAC
//! key, connectors, page templates and the metrics handle. Cheap to clone.

use std::sync::{Arc, PoisonError, RwLock};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::{KeyError, Keys};
use crate::mac::MacKey;
use crate::pages::Pages;
use crate::store::Store;
use crate::throttle::CreationLimiter;
use crate::upstream::{Connectors, UpstreamError};

/// Why the server's state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The signing keys could not be loaded or generated.
    #[error("cannot load the signing keys")]
    Keys(#[from] KeyError),
    /// A connector could not be set up.
    #[error("cannot set up the connectors")]
    Connectors(#[from] UpstreamError),
    /// The MAC key could not be loaded or stored.
    #[error("cannot load the MAC key")]
    MacKey(#[from] crate::mac::MacKeyError),
}

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    keys: Keys,
    clock: Arc<dyn Clock>,
    mac: MacKey,
    creations: CreationLimiter,
    /// Swapped whole when the configuration is reloaded; requests keep the set they
    /// started with.
    connectors: RwLock<Arc<Connectors>>,
    pages: Pages,
    metrics: crate::telemetry::Metrics,
}

impl AppState {
    /// Builds the state on the system clock: loads (or generates) the signing keys from
    /// the store and prepares the connectors.
    pub async fn new(config: Config, store: Arc<dyn Store>) -> Result<Self, StateError> {
        Self::with_clock(config, store, Arc::new(SystemClock)).await
    }

    /// Builds the state on `clock` (tests move time with a [`crate::clock::ShiftedClock`]).
    pub async fn with_clock(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StateError> {
        let connectors = Connectors::new(&config)?;
        let publish_for = config.key_publish_window();
        let at_rest = config.at_rest_key.clone();
        let keys = Keys::load(store.clone(), publish_for, at_rest.clone(), clock.clone()).await?;
        let mac = MacKey::load(store.as_ref(), at_rest.as_deref()).await?;
        let creations = CreationLimiter::new(config.unauthenticated_writes_per_minute);
        let pages = Pages::new(&config);
        let metrics = crate::telemetry::Metrics::default();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                store,
                keys,
                clock,
                mac,
                creations,
                connectors: RwLock::new(Arc::new(connectors)),
                pages,
                metrics,
            }),
        })
    }

    /// What minting and checking tokens needs, borrowed from this state.
    pub fn issuer(&self) -> crate::issuer::Issuer<'_> {
        crate::issuer::Issuer {
            config: self.config(),
            keys: self.keys(),
            store: self.store(),
            mac: self.mac(),
            clock: self.inner.clock.as_ref(),
        }
    }

    /// Seconds since the Unix epoch, now, by the state's clock.
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The server's MAC key.
    pub fn mac(&self) -> &MacKey {
        &self.inner.mac
    }

    /// The limiter of what unauthenticated callers make the server store.
    pub fn creations(&self) -> &CreationLimiter {
        &self.inner.creations
    }

    /// The connectors (upstream providers, emailed links, the local password), as of
    /// now: a reload swaps in a new set, and what a request holds stays valid.
    pub fn connectors(&self) -> Arc<Connectors> {
        self.inner
            .connectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `connectors` in place of the current set, for the requests that start from
    /// now on ([`crate::serve::reload`]).
    pub fn replace_connectors(&self, connectors: Connectors) {
        *self
            .inner
            .connectors
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(connectors);
    }

    /// The page renderer.
    pub fn pages(&self) -> &Pages {
        &self.inner.pages
    }

    /// This server's counters, served at `/metrics`.
    pub fn metrics(&self) -> &crate::telemetry::Metrics {
        &self.inner.metrics
    }
}
