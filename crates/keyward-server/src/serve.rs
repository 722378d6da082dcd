//! Running the server: start-up (store, config sync, keys), the background
//! housekeeping task, and serving HTTP until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::admin::{self, AdminError};
use crate::config::Config;
use crate::keys::RELOAD_INTERVAL;
use crate::state::AppState;
use crate::store::{self, StoreError};

/// A start-up or serving failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened or migrated.
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    /// The configured clients or users could not be written.
    #[error("cannot apply the clients and users of the configuration")]
    Sync(#[from] AdminError),
    /// The signing keys or the connectors could not be set up.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// Serving failed.
    #[error("server failed")]
    Io(#[from] std::io::Error),
}

/// Opens the store, applies the configured clients and users, and loads the keys.
pub async fn build(config: Config) -> Result<AppState, ServeError> {
    for notice in &config.warnings {
        tracing::warn!("{notice}");
    }
    let store = store::open(&config.database_url).await?;
    admin::sync_config(store.as_ref(), &config).await?;
    Ok(AppState::new(config, store).await?)
}

/// Serves `state` on `listener` until `shutdown` completes, with housekeeping running
/// beside it.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let app = crate::http::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    housekeeping.abort();
    Ok(result?)
}

/// Reloads keys every [`RELOAD_INTERVAL`] and purges expired records every few minutes.
async fn housekeeping(state: AppState) {
    let mut ticks: u64 = 0;
    let mut interval = tokio::time::interval(RELOAD_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        ticks += 1;
        if let Err(e) = state.keys().reload().await {
            crate::http::error::log_internal(&e);
        }
        if ticks % 10 == 1 {
            let now = crate::domain::now();
            match state.store().purge_expired(now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "purged expired records"),
                Err(e) => crate::http::error::log_internal(&e),
            }
            let publish_for = state
                .config()
                .access_token_ttl
                .max(state.config().id_token_ttl);
            // Retired keys are kept an hour past their publication window, then deleted.
            let cutoff = now - i64::try_from(publish_for.as_secs()).unwrap_or(0) - 3600;
            if let Err(e) = state.store().delete_keys_retired_before(cutoff).await {
                crate::http::error::log_internal(&e);
            }
        }
    }
}
