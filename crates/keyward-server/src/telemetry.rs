//! Telemetry: the counters behind `/metrics` (one set per server, so two servers in
//! one process never count into each other), and the one way internal failures reach
//! the log (with their whole cause chain, never to a client). Below the HTTP layer, so
//! that the state and the serving loop can use it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter: a metric name and its label pairs, in the order the caller gives them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Series {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
}

/// A server's counters, rendered as Prometheus text at `/metrics`. Incrementing an
/// existing series takes a shared lock and one atomic add; only a series seen for the
/// first time takes the exclusive lock.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: RwLock<HashMap<Series, AtomicU64>>,
}

impl Metrics {
    /// Adds one to the counter `name` with `labels` (created at zero first).
    pub fn increment(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to the counter `name` with `labels` (created at zero first).
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let series = Series {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        };
        {
            let counters = self.counters.read().unwrap_or_else(|e| e.into_inner());
            if let Some(counter) = counters.get(&series) {
                counter.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut counters = self.counters.write().unwrap_or_else(|e| e.into_inner());
        counters
            .entry(series)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The current value of one series (0 when it was never incremented).
    pub fn value(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let series = Series {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        };
        let counters = self.counters.read().unwrap_or_else(|e| e.into_inner());
        counters
            .get(&series)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition format (version 0.0.4): a `# TYPE` line per
    /// metric, then its series sorted by labels.
    pub fn render(&self) -> String {
        let counters = self.counters.read().unwrap_or_else(|e| e.into_inner());
        let mut series: Vec<(&Series, u64)> = counters
            .iter()
            .map(|(series, value)| (series, value.load(Ordering::Relaxed)))
            .collect();
        series.sort();
        let mut text = String::new();
        let mut current = "";
        for (series, value) in series {
            if series.name != current {
                current = series.name;
                let _ = writeln!(text, "# TYPE {current} counter");
            }
            text.push_str(series.name);
            if !series.labels.is_empty() {
                text.push('{');
                for (i, (key, label)) in series.labels.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    let _ = write!(text, "{key}=\"{}\"", escape_label(label));
                }
                text.push('}');
            }
            let _ = writeln!(text, " {value}");
        }
        text
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Logs an internal failure with its whole source chain.
pub fn log_internal(error: &(dyn std::error::Error + 'static)) {
    let chain = keyward_proto::error::error_chain(error);
    tracing::error!(error = %chain, "internal error");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.increment(
            "keyward_tokens_issued_total",
            &[("grant_type", "refresh_token")],
        );
        metrics.increment(
            "keyward_tokens_issued_total",
            &[("grant_type", "refresh_token")],
        );
        metrics.increment(
            "keyward_tokens_issued_total",
            &[("grant_type", "client_credentials")],
        );
        metrics.increment(
            "keyward_login_failures_total",
            &[("reason", "say \"hi\"\n\\")],
        );
        assert_eq!(
            metrics.value(
                "keyward_tokens_issued_total",
                &[("grant_type", "refresh_token")]
            ),
            2
        );
        assert_eq!(
            metrics.value("keyward_tokens_issued_total", &[("grant_type", "x")]),
            0
        );
        assert_eq!(
            metrics.render(),
            "# TYPE keyward_login_failures_total counter\n\
             keyward_login_failures_total{reason=\"say \\\"hi\\\"\\n\\\\\"} 1\n\
             # TYPE keyward_tokens_issued_total counter\n\
             keyward_tokens_issued_total{grant_type=\"client_credentials\"} 1\n\
             keyward_tokens_issued_total{grant_type=\"refresh_token\"} 2\n"
        );
    }

    /// The metric names in `text`: `keyward_` and what follows of `[a-z_]`.
    fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("keyward_")
            .map(|(at, _)| {
                text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect::<String>()
            })
            .filter(|name| name.ends_with("_total"))
            .collect()
    }

    /// `contrib/grafana-dashboard.json` charts only what keyward serves: every metric
    /// it queries is one the server's code counts and the README's metrics table lists
    /// (and that table lists no metric the code does not count).
    #[test]
    fn the_dashboard_and_the_readme_name_the_metrics_the_server_counts() {
        let dashboard = include_str!("../../../contrib/grafana-dashboard.json");
        let parsed: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        assert_eq!(parsed["title"], "keyward");
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("| series | labels | what to chart |")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("the README's metrics table");
        let mut counted = std::collections::BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("telemetry.rs")
                {
                    let code = std::fs::read_to_string(&path).unwrap();
                    counted.extend(metric_names(&code));
                }
            }
        }
        let charted = metric_names(dashboard);
        let documented = metric_names(table);
        assert!(charted.len() >= 6, "{charted:?}");
        for name in &charted {
            assert!(
                counted.contains(name),
                "the dashboard queries {name}, which keyward does not count"
            );
            assert!(
                documented.contains(name),
                "the dashboard queries {name}, which the README does not list"
            );
        }
        assert_eq!(documented, counted, "the README's table and the code");
    }

    #[test]
    fn two_registries_do_not_share_counts() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.increment("keyward_http_requests_total", &[]);
        assert_eq!(a.value("keyward_http_requests_total", &[]), 1);
        assert_eq!(b.value("keyward_http_requests_total", &[]), 0);
        assert_eq!(b.render(), "");
    }
}
