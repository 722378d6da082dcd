//! Contention (`keyward-bench contention`): many writes to the store at the same
//! instant, through the token endpoint.
//!
//! - N concurrent refreshes of N distinct grants (each on a connection of its own,
//!   opened beforehand, all released together): every one must succeed.
//! - M concurrent reuses of one rotated refresh token whose successor has been used
//!   (keyward's rotation is idempotent, with no time window: a rotated token is reuse
//!   once its successor was used): every one refused, the grant revoked exactly once
//!   (one revocation in the server's log, one revoked grant in the store, its newest
//!   refresh and access token dead), no 5xx, no answer mentioning a locked database.
//!
//! Latencies are measured from the common release to each complete answer.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use sqlx::Connection as _;
use tokio::sync::Barrier;

use crate::load::{Conn, Watch};
use crate::scenario::code_flow;
use crate::target::{Browser, Credentials, Server, Site, enc};

/// The scope of the grants.
const SCOPE: &str = "openid offline_access";

/// How big a contention run is.
#[derive(Clone, Copy, Debug)]
pub struct ContentionPlan {
    /// Concurrent refreshes of distinct grants.
    pub refreshes: usize,
    /// Concurrent reuses of one token.
    pub reuses: usize,
}

/// What one contention run measured.
#[derive(Debug, Default)]
pub struct ContentionRun {
    /// "SQLite" or "PostgreSQL".
    pub database: String,
    /// Concurrent refreshes sent, and how many succeeded.
    pub refreshes: usize,
    /// Refreshes answered 200 with a new refresh token.
    pub refreshed: usize,
    /// Their latencies: p50, p99, max.
    pub refresh_latency: [Duration; 3],
    /// Concurrent reuses sent, and how many were refused with `invalid_grant`.
    pub reuses: usize,
    /// Reuses refused with `invalid_grant`.
    pub reuses_refused: usize,
    /// Their latencies: p50, p99, max.
    pub reuse_latency: [Duration; 3],
    /// "grant revoked" lines the server logged during the reuses.
    pub revocations_logged: usize,
    /// Revoked grants in the store afterwards.
    pub revoked_in_store: i64,
    /// Whether the chain's newest refresh token and access token were dead afterwards.
    pub chain_dead: bool,
    /// 5xx answers, and answers mentioning a locked database.
    pub server_errors: u64,
    /// Answers mentioning a locked database.
    pub locked: u64,
    /// Whether `keyward store check` passed afterwards.
    pub store_consistent: bool,
    /// What went wrong.
    pub violations: Vec<String>,
}

impl ContentionRun {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs the contention checks against `exe` on `database_url` (a fresh SQLite file when
/// `None`).
pub async fn run(
    exe: &Path,
    database_url: Option<&str>,
    database: &str,
    plan: ContentionPlan,
) -> anyhow::Result<ContentionRun> {
    crate::say(format!(
        "contention on {database}: {} concurrent refreshes of distinct grants, {} concurrent reuses of one token",
        plan.refreshes, plan.reuses
    ));
    let credentials = Credentials::generate();
    let server = Server::keyward_logged(exe, database_url, &credentials).await?;
    let site = server.site.clone();
    let watch = Arc::new(Watch::default());
    let mut run = ContentionRun {
        database: database.to_owned(),
        refreshes: plan.refreshes,
        reuses: plan.reuses,
        ..ContentionRun::default()
    };

    // The grants: one sign-in, then a code flow on its session per grant.
    let mut conn = Conn::watched(site.addr, watch.clone());
    let mut session = Browser::default();
    let (path, _) = site.authorize_path(SCOPE);
    session.authorize(&mut conn, &site, &path, true).await?;
    let tokens = grants(&site, &session, &watch, plan.refreshes + 1).await?;
    let (chain, distinct) = tokens.split_first().context("no grants")?;

    // N refreshes of N grants at once.
    let forms: Vec<String> = distinct.iter().map(|t| refresh_form(&t.0)).collect();
    let answers = all_at_once(&site, &watch, &site.endpoints.token, forms).await?;
    let mut latencies = Vec::with_capacity(answers.len());
    for ((status, body, latency), (old, _)) in answers.iter().zip(distinct) {
        latencies.push(*latency);
        let rotated = body["refresh_token"].as_str().is_some_and(|new| new != old);
        if *status == StatusCode::OK && rotated {
            run.refreshed += 1;
        } else {
            run.violations.push(format!(
                "a concurrent refresh answered {status} {}",
                body["error"]
            ));
        }
    }
    run.refresh_latency = spread(&mut latencies);
    eprintln!(
        "  {}/{} refreshes succeeded; p50 {}, p99 {}, max {}",
        run.refreshed,
        run.refreshes,
        crate::ms(run.refresh_latency[0]),
        crate::ms(run.refresh_latency[1]),
        crate::ms(run.refresh_latency[2])
    );

    // One chain rotated twice: its first token's successor has been used.
    let first = chain.0.clone();
    let second = rotate_once(&mut conn, &site, &first).await?;
    let third = rotate_once(&mut conn, &site, &second.0).await?;
    let log_before = log_len(&server);
    let forms = vec![refresh_form(&first); plan.reuses];
    let answers = all_at_once(&site, &watch, &site.endpoints.token, forms).await?;
    let mut latencies = Vec::with_capacity(answers.len());
    for (status, body, latency) in &answers {
        latencies.push(*latency);
        if *status == StatusCode::BAD_REQUEST && body["error"] == "invalid_grant" {
            run.reuses_refused += 1;
        } else {
            run.violations
                .push(format!("a reuse answered {status} {}", body["error"]));
        }
    }
    run.reuse_latency = spread(&mut latencies);
    run.revocations_logged = log_since(&server, log_before)
        .lines()
        .filter(|l| l.contains("grant revoked"))
        .count();
    if run.revocations_logged != 1 {
        run.violations.push(format!(
            "the grant was revoked {} times (the log's count), not once",
            run.revocations_logged
        ));
    }
    run.revoked_in_store = revoked_grants(&server).await?;
    if run.revoked_in_store != 1 {
        run.violations.push(format!(
            "{} grants are revoked in the store, not the one",
            run.revoked_in_store
        ));
    }
    let form = refresh_form(&third.0);
    let newest = conn
        .post(&site.endpoints.token, &site.client_auth(), form)
        .await?;
    let reply = conn
        .post(
            &site.endpoints.introspect,
            &site.client_auth(),
            format!("token={}", enc(&third.1)),
        )
        .await?;
    let active = reply.json()?["active"] == true;
    run.chain_dead = newest.status == StatusCode::BAD_REQUEST && !active;
    if !run.chain_dead {
        run.violations.push(format!(
            "the chain lives on after the reuse: its newest token answered {}, its access token active: {active}",
            newest.status
        ));
    }
    eprintln!(
        "  {}/{} reuses refused, {} revocation(s) logged, {} revoked grant(s) in the store, chain dead: {}; p50 {}, p99 {}, max {}",
        run.reuses_refused,
        run.reuses,
        run.revocations_logged,
        run.revoked_in_store,
        run.chain_dead,
        crate::ms(run.reuse_latency[0]),
        crate::ms(run.reuse_latency[1]),
        crate::ms(run.reuse_latency[2])
    );

    let (passed, output) = crate::crash::run_store_check(&server).await?;
    run.store_consistent = passed;
    if !passed {
        run.violations
            .push(format!("keyward store check: {}", output.trim()));
    }
    run.server_errors = watch
        .server_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    run.locked = watch.locked.load(std::sync::atomic::Ordering::Relaxed);
    if run.server_errors + run.locked > 0 {
        let samples = watch
            .samples
            .lock()
            .map(|s| s.join("; "))
            .unwrap_or_default();
        run.violations.push(format!(
            "{} answers were 5xx, {} mentioned a locked database: {samples}",
            run.server_errors, run.locked
        ));
    }
    Ok(run)
}

fn refresh_form(token: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={}", enc(token))
}

/// `count` grants of the signed-in `session`, 16 code flows at a time: each one's
/// refresh token and access token.
async fn grants(
    site: &Site,
    session: &Browser,
    watch: &Arc<Watch>,
    count: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (site, mut browser, next) = (site.clone(), session.clone(), next.clone());
            let mut conn = Conn::watched(site.addr, watch.clone());
            tokio::spawn(async move {
                let mut found = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let tokens = code_flow(&mut conn, &site, &mut browser, SCOPE, false).await?;
                    found.push(pair(&tokens)?);
                }
                Ok::<_, anyhow::Error>(found)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.context("a code flow task")??);
    }
    Ok(all)
}

/// The refresh token and access token of a token response.
fn pair(tokens: &serde_json::Value) -> anyhow::Result<(String, String)> {
    Ok((
        tokens["refresh_token"]
            .as_str()
            .context("no refresh token")?
            .to_owned(),
        tokens["access_token"]
            .as_str()
            .context("no access token")?
            .to_owned(),
    ))
}

/// One rotation: the new refresh token and access token.
async fn rotate_once(
    conn: &mut Conn,
    site: &Site,
    token: &str,
) -> anyhow::Result<(String, String)> {
    let reply = conn
        .post(
            &site.endpoints.token,
            &site.client_auth(),
            refresh_form(token),
        )
        .await?;
    if reply.status != StatusCode::OK {
        bail!("a rotation answered {}", reply.describe());
    }
    pair(&reply.json()?)
}

/// Posts each form to `path` on a connection of its own, all released at the same
/// instant (the connections opened beforehand); each answer's status, JSON body and
/// latency from the release.
async fn all_at_once(
    site: &Site,
    watch: &Arc<Watch>,
    path: &str,
    forms: Vec<String>,
) -> anyhow::Result<Vec<(StatusCode, serde_json::Value, Duration)>> {
    let barrier = Arc::new(Barrier::new(forms.len()));
    let mut tasks = Vec::with_capacity(forms.len());
    for form in forms {
        let mut conn = Conn::watched(site.addr, watch.clone());
        let reply = conn.get("/healthz", &[]).await?;
        if reply.status != StatusCode::OK {
            bail!("/healthz answered {}", reply.status);
        }
        let (barrier, path, basic) = (
            barrier.clone(),
            path.to_owned(),
            site.credentials.basic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let released = Instant::now();
            let reply = conn
                .post(
                    &path,
                    &[(hyper::header::AUTHORIZATION, basic.as_str())],
                    form,
                )
                .await?;
            let latency = released.elapsed();
            let body = reply.json().unwrap_or(serde_json::Value::Null);
            Ok::<_, anyhow::Error>((reply.status, body, latency))
        }));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.context("a request task")??);
    }
    Ok(answers)
}

/// p50, p99 and max of `latencies`.
fn spread(latencies: &mut [Duration]) -> [Duration; 3] {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index]
    };
    [at(0.5), at(0.99), at(1.0)]
}

fn log_len(server: &Server) -> u64 {
    server
        .log_file()
        .and_then(|f| std::fs::metadata(f).ok())
        .map_or(0, |m| m.len())
}

/// What the server logged after the first `from` bytes.
fn log_since(server: &Server, from: u64) -> String {
    let text = server
        .log_file()
        .and_then(|f| std::fs::read(f).ok())
        .unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
    String::from_utf8_lossy(&text[from..]).into_owned()
}

/// How many grants are revoked in the server's database.
async fn revoked_grants(server: &Server) -> anyhow::Result<i64> {
    let sql = "SELECT COUNT(*) FROM grants WHERE revoked";
    let (n,): (i64,) = match server.sqlite_file() {
        Some(file) => {
            let url = format!("sqlite://{}?mode=ro", file.display());
            let mut db = sqlx::SqliteConnection::connect(&url).await?;
            sqlx::query_as(sql).fetch_one(&mut db).await?
        }
        None => {
            let url = server.database_url().context("no database URL")?;
            let mut db = sqlx::PgConnection::connect(url).await?;
            sqlx::query_as(sql).fetch_one(&mut db).await?
        }
    };
    Ok(n)
}
