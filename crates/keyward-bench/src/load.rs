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
    watch: Option<Arc<Watch>>,
    /// Whether a connection carries more than one request (keep-alive).
    reuse: bool,
    pacer: Option<Arc<Pacer>>,
}

/// A pace many connections share: each request sent on a connection that has one waits
/// for a slot of its own, the slots `1/rate` apart, so that all of them together send
/// at most `rate` requests a second however many clients there are. A slot nobody was
/// ready for is lost, not made up later in a burst.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: std::sync::Mutex<Instant>,
    /// Requests sent so far.
    pub sent: std::sync::atomic::AtomicU64,
}

impl Pacer {
    /// A pace of `rate` requests a second.
    pub fn new(rate: f64) -> Self {
        Self {
            period: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: std::sync::Mutex::new(Instant::now()),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits for the next free slot, and counts the request.
    async fn wait(&self) {
        let slot = match self.next.lock() {
            Ok(mut next) => {
                let slot = (*next).max(Instant::now());
                *next = slot + self.period;
                slot
            }
            Err(_) => Instant::now(),
        };
        tokio::time::sleep_until(slot.into()).await;
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// The server gave no answer: no connection could be made (the request never left), or
/// the connection broke before the whole response arrived (the server may have acted
/// on it). The fault harness retries such requests; anything else is an answer.
#[derive(Debug)]
pub struct NoAnswer {
    /// Whether the request may have reached the server.
    pub sent: bool,
    source: anyhow::Error,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.sent {
            true => write!(f, "no answer (the connection broke): {:#}", self.source),
            false => write!(f, "no connection: {:#}", self.source),
        }
    }
}

impl std::error::Error for NoAnswer {}

/// The [`NoAnswer`] somewhere in `error`'s chain, if any.
pub fn no_answer(error: &anyhow::Error) -> Option<&NoAnswer> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<NoAnswer>())
}

/// What the fault harness watches in every answer of the connections it gives a
/// [`Watch`]: server errors (5xx), and bodies that leak a database's lock errors.
#[derive(Debug, Default)]
pub struct Watch {
    /// Answers with a 5xx status.
    pub server_errors: std::sync::atomic::AtomicU64,
    /// Answers whose body mentions a locked database.
    pub locked: std::sync::atomic::AtomicU64,
    /// The first few of those, described (status and OAuth error code, never the body).
    pub samples: std::sync::Mutex<Vec<String>>,
}

impl Watch {
    fn look(&self, path: &str, reply: &Reply) {
        let server_error = reply.status.is_server_error();
        let locked = reply
            .text()
            .to_ascii_lowercase()
            .contains("database is locked");
        if server_error {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if locked {
            self.locked.fetch_add(1, Ordering::Relaxed);
        }
        if (server_error || locked)
            && let Ok(mut samples) = self.samples.lock()
            && samples.len() < 10
        {
            let path = path.split('?').next().unwrap_or_default();
            samples.push(format!("{} {}", path, reply.describe()));
        }
    }
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

    /// The OAuth error code of a JSON error body (`invalid_grant`, …), if any.
    pub fn oauth_error(&self) -> Option<String> {
        self.json()
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
    }

    /// A short description for error reports: status and the OAuth error code, never
    /// the body (which may hold tokens).
    pub fn describe(&self) -> String {
        match self.oauth_error() {
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
            watch: None,
            reuse: true,
            pacer: None,
        }
    }

    /// The same, but every request on a new connection: behind a balancer that picks a
    /// backend per connection, consecutive requests go to different backends.
    pub fn without_keep_alive(self) -> Self {
        Self {
            reuse: false,
            ..self
        }
    }

    /// A connection to `addr` whose every answer `watch` looks at.
    pub fn watched(addr: SocketAddr, watch: Arc<Watch>) -> Self {
        Self {
            watch: Some(watch),
            ..Self::new(addr)
        }
    }

    /// A connection to `addr` whose every request waits for its slot in `pacer`, and
    /// whose every answer `watch` looks at.
    pub fn paced(addr: SocketAddr, watch: Arc<Watch>, pacer: Arc<Pacer>) -> Self {
        Self {
            watch: Some(watch),
            pacer: Some(pacer),
            ..Self::new(addr)
        }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_ok()
        {
            return self.sender.as_mut().context("connection");
        }
        let unconnected = |e: anyhow::Error| NoAnswer {
            sent: false,
            source: e,
        };
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))
            .map_err(unconnected)?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")
            .map_err(unconnected)?;
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
        if let Some(pacer) = &self.pacer {
            pacer.wait().await;
        }
        let sender = self.sender().await?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                // Refused before it was written (a connection the server had already
                // closed), or cut after: hyper cannot always tell, so it may have been sent.
                return Err(NoAnswer {
                    sent: !e.is_canceled(),
                    source: anyhow::Error::new(e).context("request failed"),
                }
                .into());
            }
        };
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Err(NoAnswer {
                    sent: true,
                    source: anyhow::Error::new(e).context("read body"),
                }
                .into());
            }
        };
        if !self.reuse {
            self.sender = None;
        }
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        if let Some(watch) = &self.watch {
            watch.look(path_and_query, &reply);
        }
        Ok(reply)
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
    /// Each counted iteration that succeeded: when it ended (milliseconds after the
    /// window's start) and its latency (µs), in no particular order.
    pub timeline: Vec<(u32, u32)>,
}

impl Stats {
    /// The latencies (µs) of the iterations that ended between `from` and `to`, in no
    /// particular order (none when the run had no timed window).
    pub fn latencies_within(&self, from: Instant, to: Instant) -> Vec<u32> {
        let Some((start, _)) = self.window else {
            return Vec::new();
        };
        let ms = |at: Instant| at.saturating_duration_since(start).as_millis();
        let (from, to) = (ms(from), ms(to));
        self.timeline
            .iter()
            .filter(|(ended, _)| (from..=to).contains(&u128::from(*ended)))
            .map(|&(_, latency)| latency)
            .collect()
    }
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
    Fut: Future<Output = (W, anyhow::Result<()>)> + Send + 'static,
{
    let connections = connections.max(1);
    let warmup = match stop {
        Stop::After(d) => (d / 5).min(Duration::from_secs(1)),
        Stop::Count(_) => Duration::ZERO,
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let clock = Window {
        start,
        measure_from,
        deadline: match stop {
            Stop::After(d) => Some(measure_from + d),
            Stop::Count(_) => None,
        },
        period: match pace {
            Pace::Closed => None,
            Pace::Rate(rate) => Some(Duration::from_secs_f64(
                connections as f64 / rate.max(0.001),
            )),
        },
        connections,
    };
    let budget = Arc::new(Budget {
        remaining: std::sync::atomic::AtomicU64::new(match stop {
            Stop::Count(n) => n,
            Stop::After(_) => u64::MAX,
        }),
        done: AtomicBool::new(false),
    });
    let tasks: Vec<_> = (0..connections)
        .map(|index| {
            let state = worker(index);
            let (iteration, budget) = (iteration.clone(), budget.clone());
            tokio::spawn(drive(index, clock, budget, state, iteration))
        })
        .collect();
    let mut tallies = Vec::with_capacity(connections);
    let mut lost = 0;
    for task in tasks {
        match task.await {
            Ok(tally) => tallies.push(tally),
            Err(_) => lost += 1,
        }
    }
    summarize(tallies, lost, &clock)
}

/// When a run starts, when it measures from and until, and the pace of each worker.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    deadline: Option<Instant>,
    period: Option<Duration>,
    connections: usize,
}

/// The iterations a run may still make, and whether it is over.
struct Budget {
    remaining: std::sync::atomic::AtomicU64,
    done: AtomicBool,
}

impl Budget {
    /// Takes one iteration; false when none is left (and the run is then over).
    fn take(&self) -> bool {
        let taken = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !taken {
            self.done.store(true, Ordering::Relaxed);
        }
        taken
    }
}

/// What one worker saw: latencies of its answers (µs), and its errors.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    /// When each of `latencies` ended, in milliseconds after the window's start.
    ended: Vec<u32>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One worker: iterates until the window or the budget ends, closed loop, or open loop
/// at its slot in each period.
async fn drive<W, F, Fut>(
    index: usize,
    clock: Window,
    budget: Arc<Budget>,
    mut state: W,
    iteration: F,
) -> Tally
where
    F: Fn(W) -> Fut,
    Fut: Future<Output = (W, anyhow::Result<()>)>,
{
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ended: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    // Open loop: worker `index` starts at its slot within the first period.
    let mut due = clock
        .period
        .map(|p| clock.start + p.mul_f64(index as f64 / clock.connections as f64));
    loop {
        let over = clock.deadline.is_some_and(|d| Instant::now() >= d);
        if budget.done.load(Ordering::Relaxed) || over || !budget.take() {
            break;
        }
        let began = match (due, clock.period) {
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
        if began < clock.measure_from {
            continue;
        }
        if clock.deadline.is_some_and(|d| ended > d) {
            break;
        }
        match result {
            Ok(()) => {
                tally.ok += 1;
                let micros = (ended - began).as_micros();
                tally
                    .latencies
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
                let after = (ended - clock.measure_from).as_millis();
                tally.ended.push(u32::try_from(after).unwrap_or(u32::MAX));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    tally
}

/// The statistics of a run from its workers' tallies (`lost`: workers that died).
fn summarize(tallies: Vec<Tally>, lost: u64, clock: &Window) -> Stats {
    let mut latencies = Vec::new();
    let mut stats = Stats {
        errors: lost,
        ..Stats::default()
    };
    for mut tally in tallies {
        stats.timeline.extend(
            tally
                .ended
                .iter()
                .copied()
                .zip(tally.latencies.iter().copied()),
        );
        latencies.append(&mut tally.latencies);
        stats.ok += tally.ok;
        stats.errors += tally.errors;
        if stats.first_error.is_none() {
            stats.first_error = tally.first_error;
        }
    }
    let elapsed = match clock.deadline {
        Some(d) => d.saturating_duration_since(clock.measure_from),
        None => clock.start.elapsed(),
    };
    stats.rate = stats.ok as f64 / elapsed.as_secs_f64().max(1e-9);
    stats.window = clock.deadline.map(|end| (clock.measure_from, end));
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
