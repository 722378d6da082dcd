//! `keyward-bench guard`: what `keyward guard` costs in front of a service, measured
//! against that service alone in the same run, and what idle authenticated WebSockets
//! cost it in memory.
//!
//! The service is the floor: a bare axum handler in this process answering a fixed
//! body (and echoing WebSocket frames). keyward serve issues a client-credentials token
//! whose audience the guard requires; the guard verifies it on every request (ES256
//! signature, `iss`, `aud`, expiry; no introspection) and forwards it. The same closed
//! loop of GETs runs against the service directly and through the guard; the report
//! gives both rates, their ratio and the guard's cost per request (the difference of
//! the two per-request times), and the guard's CPU time per request. Then many
//! WebSockets are opened through the guard, authenticated by header and left idle,
//! and the guard's RSS is read before and after.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use hyper::header;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use crate::load::{Conn, Pace, Stats, Stop, expect, run};
use crate::target::{CLIENT_ID, Credentials, Server, cpu_of, rss_of};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct GuardPlan {
    /// Seconds measured per rate.
    pub seconds: u64,
    /// Concurrent connections of the HTTP load.
    pub connections: usize,
    /// Idle WebSockets to hold (fewer when the open-file limit does not allow them).
    pub websockets: usize,
}

/// One measured HTTP rate.
struct Measured {
    stats: Stats,
    /// CPU time of the guard per request (None for the service alone).
    guard_cpu: Option<Duration>,
}

/// Runs the guard benchmark and returns the report (Markdown).
pub async fn bench(exe: &Path, plan: GuardPlan) -> anyhow::Result<String> {
    let credentials = Credentials::generate();
    let server = Server::keyward(exe, None, &credentials).await?;
    let token = client_token(&server, &credentials).await?;
    let upstream = spawn_upstream().await?;
    let issuer = format!("http://{}", server.site.addr);
    let mut guard = GuardChild::start(exe, &issuer, upstream).await?;
    say(format!("guard on {}, upstream {upstream}", guard.addr));

    let alone = http(upstream, &token, plan, None).await?;
    let through = http(guard.addr, &token, plan, Some(guard.pid)).await?;
    let held = hold_websockets(&guard, &token, plan.websockets).await?;
    guard.stop().await;

    let mut report = String::new();
    report.push_str(&format!(
        "`cargo run --release -p keyward-bench -- guard` — {} s per rate, {} connections, GET with a bearer token (ES256) through `keyward guard --audience {CLIENT_ID}` to a bare axum handler in the harness, against that handler alone.\n\n",
        plan.seconds, plan.connections
    ));
    report.push_str("| path | requests/s | p50 | p99 | errors | guard CPU per request |\n|---|---:|---:|---:|---:|---:|\n");
    for (label, measured) in [
        ("service alone (the floor)", &alone),
        ("through keyward guard", &through),
    ] {
        let s = &measured.stats;
        report.push_str(&format!(
            "| {label} | {:.0} | {:.2} ms | {:.2} ms | {} | {} |\n",
            s.rate,
            ms(s.p50),
            ms(s.p99),
            s.errors,
            measured
                .guard_cpu
                .map_or_else(String::new, |cpu| format!("{} µs", cpu.as_micros())),
        ));
    }
    let ratio = through.stats.rate / alone.stats.rate.max(1.0);
    let overhead = 1e6 / through.stats.rate.max(1.0) - 1e6 / alone.stats.rate.max(1.0);
    report.push_str(&format!(
        "\nThrough the guard: {:.0} % of the service's rate alone; {overhead:.0} µs more per request at this concurrency (the two per-request times subtracted).\n\n",
        ratio * 100.0
    ));
    report.push_str(&format!(
        "Idle authenticated WebSockets through the guard: {} held (asked {}{}); guard RSS {:.1} MiB before, {:.1} MiB with them open: {:.1} KiB per connection (each is two sockets in the guard, the client's and the upstream's).\n",
        held.count,
        plan.websockets,
        held.limited
            .map_or_else(String::new, |limit| format!(", the open-file limit {limit} allows no more")),
        mib(held.rss_before),
        mib(held.rss_after),
        (held.rss_after.saturating_sub(held.rss_before)) as f64 / 1024.0 / held.count.max(1) as f64,
    ));
    if alone.stats.errors + through.stats.errors > 0 {
        bail!(
            "errors: {:?} / {:?}\n{report}",
            alone.stats.first_error,
            through.stats.first_error
        );
    }
    drop(server);
    Ok(report)
}

fn say(text: impl AsRef<str>) {
    eprintln!("» {}", text.as_ref());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A client-credentials token of the bench client (audience: the client id).
async fn client_token(server: &Server, credentials: &Credentials) -> anyhow::Result<String> {
    let mut conn = Conn::new(server.site.addr);
    let reply = conn
        .post(
            "/token",
            &server.site.client_auth(),
            "grant_type=client_credentials&scope=api%3Aread".into(),
        )
        .await?;
    expect(&reply, reply.status == StatusCode::OK, "client_credentials")?;
    let _ = credentials;
    reply.json()?["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

/// The service: a fixed body for any HTTP request, an echo for WebSockets.
async fn spawn_upstream() -> anyhow::Result<SocketAddr> {
    use axum::extract::ws::WebSocketUpgrade;
    use axum::extract::{FromRequestParts as _, Request};
    use axum::response::IntoResponse as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new().fallback(|request: Request| async move {
        let (mut parts, _body) = request.into_parts();
        match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade
                .on_upgrade(|mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        if socket.send(message).await.is_err() {
                            break;
                        }
                    }
                })
                .into_response(),
            Err(_) => "ok".into_response(),
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// A running `keyward guard`.
struct GuardChild {
    child: Child,
    addr: SocketAddr,
    pid: u32,
}

impl GuardChild {
    async fn start(exe: &Path, issuer: &str, upstream: SocketAddr) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(["guard", "--issuer", issuer])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(["--listen", "127.0.0.1:0", "--audience", CLIENT_ID])
            .env("KEYWARD_LOG", "warn")
            .env_remove("KEYWARD_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start keyward guard")?;
        let pid = child.id().context("guard pid")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("keyward guard listening on ") {
                    return Ok::<_, std::io::Error>(Some(
                        rest.split(',').next().unwrap_or("").to_owned(),
                    ));
                }
            }
            Ok(None)
        })
        .await
        .context("keyward guard did not start within a minute")??
        .context("keyward guard exited before listening")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("guard address {url:?}"))?;
        Ok(Self { child, addr, pid })
    }

    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// GETs with the bearer token on `addr` as fast as they are answered; the CPU time of
/// `guard` per request when given.
async fn http(
    addr: SocketAddr,
    token: &str,
    plan: GuardPlan,
    guard: Option<u32>,
) -> anyhow::Result<Measured> {
    say(format!(
        "GET on {addr} ({})",
        if guard.is_some() {
            "through the guard"
        } else {
            "the service alone"
        }
    ));
    let bearer: Arc<str> = format!("Bearer {token}").into();
    let cpu_before = guard.and_then(cpu_of);
    let stats = run(
        plan.connections,
        Stop::After(Duration::from_secs(plan.seconds)),
        Pace::Closed,
        |_| Conn::new(addr),
        move |mut conn: Conn| {
            let bearer = bearer.clone();
            async move {
                let result = conn
                    .get("/api/items?x=1", &[(header::AUTHORIZATION, &bearer)])
                    .await
                    .and_then(|reply| {
                        expect(
                            &reply,
                            reply.status == StatusCode::OK && &reply.body[..] == b"ok",
                            "GET",
                        )
                    });
                (conn, result)
            }
        },
    )
    .await;
    let guard_cpu = match (guard.and_then(cpu_of), cpu_before) {
        (Some(after), Some(before)) if stats.ok > 0 => {
            // The warm-up's requests are in the CPU time but not in `ok`: count them
            // at the measured rate.
            let requests = stats.ok as f64 * (1.0 + 1.0 / plan.seconds.max(1) as f64);
            Some(Duration::from_secs_f64(
                after.saturating_sub(before).as_secs_f64() / requests,
            ))
        }
        _ => None,
    };
    Ok(Measured { stats, guard_cpu })
}

/// What holding idle WebSockets cost.
struct Held {
    count: usize,
    limited: Option<u64>,
    rss_before: u64,
    rss_after: u64,
}

/// Opens up to `wanted` WebSockets through the guard, authenticated by header, each
/// answered `auth_success`, and reads the guard's RSS with them all open.
async fn hold_websockets(guard: &GuardChild, token: &str, wanted: usize) -> anyhow::Result<Held> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    // Each connection is two sockets in the guard (and one here, one in the service,
    // which is this process too): keep well inside the open-file limit.
    let limit = open_file_limit();
    let fits = limit.map_or(wanted, |l| ((l.saturating_sub(256)) / 2) as usize);
    let count = wanted.min(fits);
    let limited = (count < wanted).then_some(limit).flatten();
    say(format!("opening {count} idle WebSockets through the guard"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_of(guard.pid).unwrap_or(0);
    let url = format!("ws://{}/live", guard.addr);
    let opened = Arc::new(AtomicU64::new(0));
    let mut sockets = Vec::with_capacity(count);
    // Opened in batches, so that the guard's accept queue never overflows.
    for batch in (0..count).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|_| {
                let (url, token, opened) = (url.clone(), token.to_owned(), opened.clone());
                tokio::spawn(async move {
                    let mut request = url.into_client_request()?;
                    request
                        .headers_mut()
                        .insert("authorization", format!("Bearer {token}").parse()?);
                    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
                    use futures_util::StreamExt as _;
                    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
                        .await
                        .context("no auth answer")?
                        .context("closed")??;
                    let text = first.into_text()?;
                    if !text.contains("auth_success") {
                        bail!("expected auth_success, got {text}");
                    }
                    opened.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, anyhow::Error>(ws)
                })
            })
            .collect();
        for task in tasks {
            sockets.push(task.await.context("a WebSocket task")??);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_of(guard.pid).unwrap_or(0);
    let count = usize::try_from(opened.load(Ordering::Relaxed)).unwrap_or(0);
    drop(sockets);
    Ok(Held {
        count,
        limited,
        rss_before,
        rss_after,
    })
}

/// This process's open-file limit (its children inherit it), from /proc (Linux).
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}
