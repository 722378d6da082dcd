//! Telemetry: the process-wide Prometheus recorder behind `/metrics`, and the one way
//! internal failures reach the log (with their whole cause chain, never to a client).
//! Below the HTTP layer, so that the state and the serving loop can use it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder (the `metrics` facade is global by design),
/// installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Logs an internal failure with its whole source chain.
pub fn log_internal(error: &(dyn std::error::Error + 'static)) {
    let chain = keyward_proto::error::error_chain(error);
    tracing::error!(error = %chain, "internal error");
}
