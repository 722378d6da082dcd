//! The state shared by every HTTP handler: configuration, store, keys, page templates
//! and the metrics handle. Cheap to clone.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::http::pages::Pages;
use crate::keys::{KeyError, Keys};
use crate::store::Store;

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    keys: Keys,
    pages: Pages,
    metrics: PrometheusHandle,
}

impl AppState {
    /// Builds the state: loads (or generates) the signing keys from the store.
    pub async fn new(config: Config, store: Arc<dyn Store>) -> Result<Self, KeyError> {
        let publish_for = config.access_token_ttl.max(config.id_token_ttl);
        let keys = Keys::load(store.clone(), publish_for).await?;
        let pages = Pages::new(&config);
        let metrics = crate::http::health::metrics_handle();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                store,
                keys,
                pages,
                metrics,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The store, shared.
    pub fn store_arc(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The page renderer.
    pub fn pages(&self) -> &Pages {
        &self.inner.pages
    }

    /// The Prometheus handle.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }
}
