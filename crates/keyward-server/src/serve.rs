//! Running the server: start-up (store, config sync, keys), the background
//! housekeeping task, and serving HTTP until shutdown, with the limits that keep slow,
//! idle or oversized connections from starving everyone else ([`run`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::{self, AdminError, Synced};
use crate::config::Config;
use crate::http::extract::{MAX_HEAD, MAX_HEADERS};
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

/// Why a reload of the configuration did not (fully) apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new connectors could not be set up; nothing was changed.
    #[error("cannot set up the connectors; nothing was changed")]
    Connectors(#[from] crate::upstream::UpstreamError),
    /// The clients and users could not be written; the connectors were not changed.
    #[error("cannot apply the clients and users; the connectors were not changed")]
    Sync(#[from] AdminError),
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// The clients and users written, removed and disabled.
    pub synced: Synced,
    /// The enabled connectors now, by id.
    pub connectors: Vec<String>,
    /// Settings the new file changes that apply only at the next start.
    pub needs_restart: Vec<&'static str>,
}

/// Applies the clients, users and connectors of `config` (the configuration file read
/// again, on SIGHUP) to the running server, without dropping a connection: the
/// clients and users are written to the store as at start ([`admin::sync_config`]),
/// and the connectors are swapped for the requests that start from now on (a sign-in
/// already at a provider finishes, if its connector is still there). Every other
/// setting stays as it was until a restart; [`Reloaded::needs_restart`] names those
/// that changed.
pub async fn reload(state: &AppState, config: Config) -> Result<Reloaded, ReloadError> {
    let connectors = crate::upstream::Connectors::new(&config)?;
    let synced = admin::sync_config(state.store(), &config).await?;
    let enabled = connectors
        .enabled_ids()
        .into_iter()
        .map(String::from)
        .collect();
    state.replace_connectors(connectors);
    let needs_restart = state.config().changed_until_restart(&config);
    Ok(Reloaded {
        synced,
        connectors: enabled,
        needs_restart,
    })
}

/// Opens the store, applies the configured clients and users, and loads the keys.
pub async fn build(config: Config) -> Result<AppState, ServeError> {
    build_with_clock(config, Arc::new(crate::clock::SystemClock)).await
}

/// [`build`], on `clock` (tests move time with a [`crate::clock::ShiftedClock`]).
pub async fn build_with_clock(
    config: Config,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<AppState, ServeError> {
    for notice in &config.warnings {
        tracing::warn!("{notice}");
    }
    let store = store::open_with(&config.database_url, config.durability).await?;
    let synced = admin::sync_config(store.as_ref(), &config).await?;
    log_taken_out(&synced);
    for admin in &config.admins {
        if store.get_user_by_username(admin).await?.is_none() {
            tracing::warn!(
                admin,
                "`admins` names a user who has no account yet; create it (`keyward user add`, or [[users]]): no sign-in through a provider will take that name"
            );
        }
    }
    Ok(AppState::with_clock(config, store, clock).await?)
}

/// Logs the clients and users the configuration file no longer declares, which the
/// sync took out of service.
pub fn log_taken_out(synced: &Synced) {
    for client in &synced.removed_clients {
        tracing::warn!(
            client,
            "client removed from the configuration file: deleted, with every token issued to it"
        );
    }
    for user in &synced.disabled_users {
        tracing::warn!(
            user,
            "user removed from the configuration file: disabled, sessions ended, tokens revoked"
        );
    }
}

/// File descriptors kept free of connections (the database, log and key files).
const RESERVED_FDS: usize = 64;

/// Serves `state` on `listener` until `shutdown` completes, with housekeeping running
/// beside it.
///
/// Each connection is HTTP/1.1 and must send a whole request head within
/// `http_read_timeout` (idle keep-alive connections wait for their next request under
/// the same limit, then close), of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`]
/// fields; the body then has as long again ([`crate::http::extract::Body`]). At most
/// `max_connections` are served at once (fewer when the process may open fewer files):
/// past that keyward stops accepting, logs it once, and the kernel's queue holds the
/// rest, so that a flood of slow or idle connections cannot take the descriptors every
/// other client needs. On shutdown, open connections finish their request in flight.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let config = state.config();
    let max_connections = connection_cap(config.max_connections);
    let read_timeout = config.http_read_timeout;
    let app = crate::http::app(state);
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let mut at_capacity = false;
    loop {
        if permits.available_permits() == 0 && !at_capacity {
            at_capacity = true;
            tracing::warn!(
                max_connections,
                "connection limit reached: new connections wait until others close"
            );
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        if at_capacity && permits.available_permits() > max_connections / 10 {
            at_capacity = false;
            tracing::info!("connections below the limit again");
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was taken:
                    // wait a little rather than spin, and keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            builder.clone(),
            app.clone(),
            stream,
            peer,
            permit,
            stopping.clone(),
        ));
    }
    let _ = stop.send(true);
    // Wait (a while) for the connections to finish what they were answering.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(all)).await;
    housekeeping.abort();
    Ok(())
}

/// Serves one connection until it ends, or until `stopping` says the server shuts
/// down (then the request in flight is finished). Holds `permit` meanwhile.
async fn serve_connection(
    builder: hyper::server::conn::http1::Builder,
    app: axum::Router,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let _permit = permit;
    let service = TowerToHyperService::new(tower::ServiceExt::map_request(
        app,
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// How many connections to serve at once: the configured number, but no more than the
/// process may open files for (on Linux, read from `/proc/self/limits`).
fn connection_cap(configured: usize) -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|soft| soft.parse::<usize>().ok());
    match soft_limit {
        Some(limit) => configured.min(limit.saturating_sub(RESERVED_FDS).max(16)),
        None => configured,
    }
}

/// Reloads keys every [`RELOAD_INTERVAL`] (and returns freed memory to the system as
/// often, see [`crate::memory`]), and purges expired records every `purge_interval`
/// (five minutes by default), the first time one interval after start (not while a
/// restarted server takes its first requests). A purge goes in small batches (see
/// [`crate::store::Store::purge_expired`]), so requests keep being answered meanwhile;
/// its passes, rows and time are counted at `/metrics`.
async fn housekeeping(state: AppState) {
    let mut reload = tokio::time::interval(RELOAD_INTERVAL);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = state.config().purge_interval;
    let mut purge = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reload.tick() => {
                crate::memory::release_freed_memory();
                if let Err(e) = state.keys().reload().await {
                    crate::telemetry::log_internal(&e);
                }
            }
            _ = purge.tick() => purge_once(&state).await,
        }
    }
}

/// One housekeeping pass: expired records, then signing keys retired long enough ago.
async fn purge_once(state: &AppState) {
    let now = state.now();
    let started = std::time::Instant::now();
    match state.store().purge_expired(now).await {
        Ok(rows) => {
            let metrics = state.metrics();
            metrics.increment("keyward_purge_passes_total", &[]);
            metrics.add("keyward_purged_rows_total", &[], rows);
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            metrics.add("keyward_purge_milliseconds_total", &[], took);
            if rows > 0 {
                tracing::debug!(rows, took_ms = took, "purged expired records");
            }
        }
        Err(e) => crate::telemetry::log_internal(&e),
    }
    let publish_for = state.config().key_publish_window();
    // Retired keys are kept an hour past their publication window, then deleted.
    let cutoff = now - crate::domain::secs(publish_for) - 3600;
    if let Err(e) = state.store().delete_keys_retired_before(cutoff).await {
        crate::telemetry::log_internal(&e);
    }
}
