//! The load generator: HTTP/1.1 keep-alive connections over hyper, driven either as
//! fast as the server answers (closed loop, for the maximum rate) or at a fixed rate
//! (open loop, for latency at a given load, measured from when each request was due so
//! that a stalled server cannot hide its queue).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive connection to a server, reopened when the server closes it.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// A response, read whole.
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The `Location` header.
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response is not JSON")
    }

    /// A short description for error reports: status and the OAuth error code, never
    /// the body (which may hold tokens).
    pub fn describe(&self) -> String {
        let code = self
            .json()
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        match code {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }
}

impl Conn {
    /// A connection to `addr` (opened at the first request).
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or(HeaderValue::from_static("localhost"));
        Self {
            addr,
            host,
            sender: None,
        }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_ok()
        {
            return self.sender.as_mut().context("connection");
        }
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends a request for `path_and_query` with `headers` and `body` (a form when
    /// `Some`), and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
        form: Option<String>,
    ) -> anyhow::Result<Reply> {
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, self.host.clone());
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("build request")?;
        let sender = self.sender().await?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                return Err(e).context("request failed");
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.context("read body")?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A form POST.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        form: String,
    ) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, headers, Some(form)).await
    }

    /// A GET.
    pub async fn get(
        &mut self,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> anyhow::Result<Reply> {
        self.send(Method::GET, path_and_query, headers, None).await
    }
}

/// How long or how much to run.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// For this long after the warm-up.
    After(Duration),
    /// Until this many iterations completed (no warm-up).
    Count(u64),
}

/// How fast to go.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each connection sends its next request when the previous one is answered.
    Closed,
    /// This many iterations per second in all, spread over the connections.
    Rate(f64),
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Iterations completed without error, per second.
    pub rate: f64,
    /// Iterations completed without error.
    pub ok: u64,
    /// Iterations that failed.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Median latency of an iteration.
    pub p50: Duration,
    /// 99th percentile latency of an iteration.
    pub p99: Duration,
    /// When the counted part of a timed run began and ended (the warm-up excluded).
    pub window: Option<(Instant, Instant)>,
}

/// Runs `iteration` on `connections` workers until `stop`, at `pace`. Each worker
/// owns its connection and its state (`W`, built by `worker`); `iteration` returns an
/// error for a wrong answer. The first second (or a fifth of a short run) warms up and
/// is not counted.
pub async fn run<W, F, Fut>(
    connections: usize,
    stop: Stop,
    pace: Pace,
    worker: impl Fn(usize) -> W,
    iteration: F,
) -> Stats
where
    W: Send + 'static,
    F: Fn(W) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = (W, anyhow::Result<()>)> + Send,
{
    let connections = connections.max(1);
    let warmup = match stop {
        Stop::After(d) => (d / 5).min(Duration::from_secs(1)),
        Stop::Count(_) => Duration::ZERO,
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = match stop {
        Stop::After(d) => Some(measure_from + d),
        Stop::Count(_) => None,
    };
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(match stop {
        Stop::Count(n) => n,
        Stop::After(_) => u64::MAX,
    }));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(connections);
    for index in 0..connections {
        let mut state = worker(index);
        let iteration = iteration.clone();
        let remaining = remaining.clone();
        let done = done.clone();
        let period = match pace {
            Pace::Closed => None,
            Pace::Rate(rate) => Some(Duration::from_secs_f64(
                connections as f64 / rate.max(0.001),
            )),
        };
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let (mut ok, mut errors, mut first_error) = (0_u64, 0_u64, None);
            // Open loop: worker `index` starts at its slot within the first period.
            let mut due = period.map(|p| start + p.mul_f64(index as f64 / connections as f64));
            loop {
                if done.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
                {
                    done.store(true, Ordering::Relaxed);
                    break;
                }
                let began = match (due, period) {
                    (Some(at), Some(p)) => {
                        tokio::time::sleep_until(at.into()).await;
                        due = Some(at + p);
                        at
                    }
                    _ => Instant::now(),
                };
                let (next, result) = iteration(state).await;
                state = next;
                let ended = Instant::now();
                if began < measure_from {
                    continue;
                }
                if deadline.is_some_and(|d| ended > d) {
                    break;
                }
                match result {
                    Ok(()) => {
                        ok += 1;
                        let micros = (ended - began).as_micros();
                        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            (latencies, ok, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut stats = Stats::default();
    for task in tasks {
        let Ok((mut l, ok, errors, first_error)) = task.await else {
            stats.errors += 1;
            continue;
        };
        latencies.append(&mut l);
        stats.ok += ok;
        stats.errors += errors;
        if stats.first_error.is_none() {
            stats.first_error = first_error;
        }
    }
    let elapsed = match deadline {
        Some(d) => d.saturating_duration_since(measure_from),
        None => start.elapsed(),
    };
    stats.rate = stats.ok as f64 / elapsed.as_secs_f64().max(1e-9);
    stats.window = deadline.map(|end| (measure_from, end));
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_micros(u64::from(latencies[index]))
    };
    stats.p50 = at(0.50);
    stats.p99 = at(0.99);
    stats
}

/// Fails with the reply's status and error code unless `ok` holds.
pub fn expect(reply: &Reply, ok: bool, what: &str) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("{what}: unexpected answer {}", reply.describe())
    }
}
