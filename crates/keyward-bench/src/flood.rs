//! The flood harness (`keyward-bench flood`): hostile requests by the thousand, each
//! kind from [`CONNECTIONS`] connections at once, and keyward's memory before, during
//! and after. What must hold:
//!
//! - every request is answered with a 4xx (400, 413, 414 or 431), never a 5xx, and
//!   none goes unanswered;
//! - keyward gives the memory back and does not creep: the flood runs [`ROUNDS`] times,
//!   and [`SETTLE`] after each (housekeeping returns freed memory to the system every
//!   30 s, `keyward_server::memory`) its RSS is within [`SLACK_MIB`] of what it was
//!   before the first, and the last round ends within [`CREEP_MIB`] of the first. (What
//!   the allocator keeps after a round varies by ±3 MiB from run to run; a leak of a
//!   few MiB a round passes the second bound within three rounds.)
//!
//! Requests are written on raw TCP connections, one per request, so that nothing in a
//! client library shapes or refuses them; the answer's status line is read while the
//! body is still being written, as a server may answer (and close) before reading a
//! body it refuses.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::target::{Credentials, Server};

/// Connections sending at once, per kind.
pub const CONNECTIONS: usize = 200;
/// How long after the flood the memory is read again.
pub const SETTLE: Duration = Duration::from_secs(40);
/// How much above its RSS before the flood keyward may stay after [`SETTLE`]: the
/// allocator keeps some of what a burst freed, fragmented, and tokio and hyper keep
/// buffers.
pub const SLACK_MIB: u64 = 12;
/// How much the last round may end above the first.
pub const CREEP_MIB: u64 = 6;
/// How many times the whole flood runs.
pub const ROUNDS: usize = 3;

/// One kind of hostile request.
struct Kind {
    name: &'static str,
    /// Requests per connection.
    rounds: usize,
    /// The request's head (with its blank line) and body.
    head: Vec<u8>,
    body: Arc<Vec<u8>>,
}

fn kinds() -> Vec<Kind> {
    let params = (0..10_000)
        .map(|i| format!("p{i}=v"))
        .collect::<Vec<_>>()
        .join("&");
    let form = |body: Vec<u8>| {
        format!(
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes()
    };
    let many_headers: String = (0..99)
        .map(|i| format!("X-Flood-{i}: {}\r\n", "a".repeat(600)))
        .collect();
    let big_body = vec![b'a'; 10 * 1024 * 1024];
    // Under the 64 KiB body limit, so that the parameter count is what refuses it.
    let short_params = (0..5_000).map(|_| "a=1").collect::<Vec<_>>().join("&");
    vec![
        Kind {
            name: "form of 5,000 parameters (20 KB)",
            rounds: 20,
            head: form(short_params.clone().into_bytes()),
            body: Arc::new(short_params.into_bytes()),
        },
        Kind {
            name: "form of 10,000 parameters (88 KB)",
            rounds: 20,
            head: form(params.clone().into_bytes()),
            body: Arc::new(params.clone().into_bytes()),
        },
        Kind {
            name: "query of 10,000 parameters",
            rounds: 20,
            head: format!(
                "GET /authorize?{params} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            body: Arc::new(Vec::new()),
        },
        Kind {
            name: "99 headers of 600 bytes",
            rounds: 20,
            head: format!(
                "GET /userinfo HTTP/1.1\r\nHost: 127.0.0.1\r\n{many_headers}Connection: close\r\n\r\n"
            )
            .into_bytes(),
            body: Arc::new(Vec::new()),
        },
        Kind {
            name: "one header of 16 KiB",
            rounds: 20,
            head: format!(
                "GET /userinfo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                "a".repeat(16 * 1024)
            )
            .into_bytes(),
            body: Arc::new(Vec::new()),
        },
        Kind {
            name: "body of 10 MB",
            rounds: 2,
            head: form(big_body.clone()),
            body: Arc::new(big_body),
        },
    ]
}

/// What one kind of flood got.
#[derive(Debug, Default)]
pub struct KindResult {
    /// Its name.
    pub name: String,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no status line.
    pub unanswered: u64,
    /// keyward's RSS right after this kind, in bytes.
    pub rss_after: Option<u64>,
}

/// What the flood saw.
#[derive(Debug, Default)]
pub struct FloodRun {
    /// Per kind.
    pub kinds: Vec<KindResult>,
    /// RSS before the flood, and at its peak.
    pub rss: [Option<u64>; 2],
    /// RSS [`SETTLE`] after each round.
    pub settled: Vec<Option<u64>>,
    /// What went wrong.
    pub violations: Vec<String>,
}

/// Floods keyward (the binary `exe`, on a fresh SQLite file) with every kind.
pub async fn run(exe: &Path) -> anyhow::Result<FloodRun> {
    crate::say(format!(
        "flood: {CONNECTIONS} connections at once per kind of hostile request"
    ));
    let server = Server::keyward_logged(exe, None, &Credentials::generate()).await?;
    let addr = server.site.addr;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut run = FloodRun {
        rss: [server.rss(), None],
        ..FloodRun::default()
    };
    let mut peak = run.rss[0].unwrap_or(0);
    for round in 1..=ROUNDS {
        flood_once(addr, &server, round, &mut run, &mut peak).await?;
        tokio::time::sleep(SETTLE).await;
        run.settled.push(server.rss());
    }
    run.rss[1] = Some(peak);
    let mib = |b: u64| b >> 20;
    for (round, settled) in run.settled.iter().enumerate() {
        if let (Some(before), Some(after)) = (run.rss[0], settled)
            && *after > before + SLACK_MIB * 1024 * 1024
        {
            run.violations.push(format!(
                "RSS {} MiB {} s after round {}, {} MiB before the flood",
                mib(*after),
                SETTLE.as_secs(),
                round + 1,
                mib(before)
            ));
        }
    }
    if let (Some(Some(first)), Some(Some(last))) = (run.settled.first(), run.settled.last())
        && *last > first + CREEP_MIB * 1024 * 1024
    {
        run.violations.push(format!(
            "RSS creeps: {} MiB after the first round, {} MiB after the last",
            mib(*first),
            mib(*last)
        ));
    }
    if let Some(log) = server.log_file()
        && let Ok(text) = std::fs::read_to_string(log)
        && text.contains("panicked")
    {
        run.violations.push("keyward panicked (see its log)".into());
    }
    Ok(run)
}

/// One round: every kind in turn.
async fn flood_once(
    addr: std::net::SocketAddr,
    server: &Server,
    round: usize,
    run: &mut FloodRun,
    peak: &mut u64,
) -> anyhow::Result<()> {
    for kind in kinds() {
        let started = Instant::now();
        let kind = Arc::new(kind);
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let kind = kind.clone();
                tokio::spawn(async move {
                    let mut got = Vec::with_capacity(kind.rounds);
                    for _ in 0..kind.rounds {
                        got.push(send(addr, &kind).await);
                    }
                    got
                })
            })
            .collect();
        let mut result = KindResult {
            name: kind.name.to_owned(),
            ..KindResult::default()
        };
        for task in tasks {
            for status in task.await.context("a flooding task panicked")? {
                match status {
                    Some(code) => *result.statuses.entry(code).or_default() += 1,
                    None => result.unanswered += 1,
                }
            }
        }
        result.rss_after = server.rss();
        *peak = (*peak).max(result.rss_after.unwrap_or(0));
        eprintln!(
            "  round {round}, {}: {:?}, {} unanswered, in {:.1} s",
            kind.name,
            result.statuses,
            result.unanswered,
            started.elapsed().as_secs_f64()
        );
        for (&code, &count) in &result.statuses {
            if !(400..500).contains(&code) {
                run.violations
                    .push(format!("{}: {count} answers {code}", kind.name));
            }
        }
        if result.unanswered > 0 {
            run.violations.push(format!(
                "{}: {} requests got no answer",
                kind.name, result.unanswered
            ));
        }
        if round == 1 {
            run.kinds.push(result);
        } else if let Some(first) = run.kinds.iter_mut().find(|k| k.name == result.name) {
            for (code, n) in result.statuses {
                *first.statuses.entry(code).or_default() += n;
            }
            first.unanswered += result.unanswered;
            first.rss_after = first.rss_after.max(result.rss_after);
        }
    }
    Ok(())
}

/// Sends one request on a new connection; the status code of the answer, if one came.
async fn send(addr: std::net::SocketAddr, kind: &Kind) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut read, mut write) = stream.into_split();
    let head = kind.head.clone();
    let body = kind.body.clone();
    // The server may answer and close before it has read everything: write on the
    // side, read the status line meanwhile.
    let writer = tokio::spawn(async move {
        if write.write_all(&head).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
        write
    });
    let mut answer = Vec::with_capacity(64);
    let mut buffer = [0_u8; 1024];
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if let Some(line_end) = answer.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&answer[..line_end]).into_owned();
                        return line.split(' ').nth(1).and_then(|c| c.parse().ok());
                    }
                }
            }
        }
    })
    .await
    .ok()
    .flatten();
    writer.abort();
    status
}
