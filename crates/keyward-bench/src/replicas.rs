//! The replica harness (`keyward-bench replicas`): three `keyward serve` on one
//! PostgreSQL database behind a round-robin balancer ([`crate::proxy`]), under code
//! flows, refresh rotations and client-credentials tokens checked on another replica;
//! one replica killed with SIGKILL mid-load and, a little later, the signing keys
//! rotated with `keyward key rotate`. What must hold:
//!
//! - every request goes out on a new connection, so consecutive requests of one flow
//!   land on different replicas (a code issued by one is redeemed on another);
//! - a flow in flight on the killed replica fails at most once (its connection is cut)
//!   and succeeds when retried a moment later, which the balancer sends to a survivor; no flow fails
//!   twice, no chain breaks, no answer is a 5xx;
//! - after the rotation every surviving replica signs with the new key within its
//!   key-cache interval ([`RELOAD_INTERVAL`] plus a little), and a token signed with a
//!   new key by one replica is accepted by every other at once (a replica that meets an
//!   unknown `kid` reloads its keys);
//! - the killed replica, started again, signs with the new key at once;
//! - `keyward store check` finds the database consistent at the end.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::load::{Conn, Watch, no_answer};
use crate::proxy::Proxy;
use crate::target::{Browser, Credentials, Server, Site, enc};

/// keyward's key-cache interval (`keyward_server::keys::RELOAD_INTERVAL`).
const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// What a replica may take beyond that to sign with a rotated key: the reload's own
/// time and the probe's period.
const RELOAD_SLACK: Duration = Duration::from_secs(5);
/// How long a client waits before it retries a request that got no answer. Without a
/// pause, a retry sent while the killed process is still dying can be queued on its
/// listening socket and cut again: a balancer without a health check cannot know yet.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How many replicas.
const REPLICAS: usize = 3;
/// The scope of every code flow.
const SCOPE: &str = "openid offline_access";

/// Runs the step `$step` (an expression giving a future); when it gets no answer (a
/// connection cut), once more after [`RETRY_AFTER`], as a client backs off before it
/// retries. A second failure of any kind is an error.
macro_rules! with_one_retry {
    ($shared:expr, $what:expr, $step:expr) => {{
        let shared: &Shared = $shared;
        let what: &str = $what;
        match $step.await {
            Ok(()) => Ok(()),
            Err(e) if no_answer(&e).is_some() => match {
                tokio::time::sleep(RETRY_AFTER).await;
                $step.await
            } {
                Ok(()) => {
                    shared.retried.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(again) => {
                    shared.failed_twice.fetch_add(1, Ordering::Relaxed);
                    Err(again.context(format!("{what} failed twice (first: {e:#})")))
                }
            },
            Err(e) => Err(e.context(what.to_owned())),
        }
    }};
}

/// How big a replica run is.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaPlan {
    /// Concurrent clients.
    pub clients: usize,
    /// How long the load runs; the kill falls at 30 % of it, the key rotation at 35 %,
    /// and the load must last [`RELOAD_INTERVAL`] and more after the rotation.
    pub seconds: u64,
    /// The seed of the clients' choices.
    pub seed: u64,
}

/// What one replica run saw.
#[derive(Debug, Default)]
pub struct ReplicaRun {
    /// Steps (a code flow, a rotation, a client-credentials token checked elsewhere)
    /// that succeeded, before and after the kill.
    pub steps: [u64; 2],
    /// Requests answered, before and after the kill.
    pub requests: [u64; 2],
    /// p50 and p99 request latency before and after the kill.
    pub latency: [[Duration; 2]; 2],
    /// Steps that failed once (a connection cut by the kill) and succeeded retried.
    pub retried: u64,
    /// Steps that failed twice.
    pub failed_twice: u64,
    /// Chains kept at the end / broken.
    pub chains: [u64; 2],
    /// For each surviving replica, how long after the rotation it first signed with a
    /// new key (`None`: not within the load).
    pub adopted: Vec<(usize, Option<Duration>)>,
    /// Tokens signed with a new key checked on the other replicas: accepted / refused.
    pub cross_checks: [u64; 2],
    /// Whether the killed replica, started again, signed with the new key at once.
    pub restarted_signs_new: bool,
    /// 5xx answers.
    pub server_errors: u64,
    /// Problems `keyward store check` reported.
    pub store_problems: u64,
    /// What went wrong.
    pub violations: Vec<String>,
}

/// What the clients share.
struct Shared {
    /// The balancer's site (every client request goes through it).
    site: Site,
    sign_in: tokio::sync::Mutex<()>,
    stop: AtomicBool,
    /// Whether the kill has happened (which half the counts go to).
    killed: AtomicBool,
    steps: [AtomicU64; 2],
    requests: [AtomicU64; 2],
    retried: AtomicU64,
    failed_twice: AtomicU64,
    latencies: [std::sync::Mutex<Vec<Duration>>; 2],
    violations: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, what: String) {
        if let Ok(mut list) = self.violations.lock() {
            list.push(what);
        }
    }

    fn half(&self) -> usize {
        usize::from(self.killed.load(Ordering::Relaxed))
    }

    /// Sends one request on a new connection through the balancer, timing it.
    async fn post(&self, conn: &mut Conn, path: &str, form: String) -> anyhow::Result<Reply> {
        let started = Instant::now();
        let reply = conn.post(path, &self.site.client_auth(), form).await?;
        let half = self.half();
        self.requests[half].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies[half].lock() {
            l.push(started.elapsed());
        }
        Ok(reply)
    }
}

type Reply = crate::load::Reply;

/// One client: its session, its chain.
struct Client {
    index: usize,
    conn: Conn,
    browser: Browser,
    /// The last refresh token handed.
    refresh: Option<String>,
    rng: StdRng,
}

/// Runs one replica run against `exe` on the PostgreSQL database `database_url`.
pub async fn run(exe: &Path, database_url: &str, plan: ReplicaPlan) -> anyhow::Result<ReplicaRun> {
    let kill_at = Duration::from_secs(plan.seconds).mul_f64(0.30);
    let rotate_at = Duration::from_secs(plan.seconds).mul_f64(0.35);
    let needed = rotate_at + RELOAD_INTERVAL + RELOAD_SLACK;
    if Duration::from_secs(plan.seconds) < needed {
        bail!(
            "--seconds {} is too short: the load must go on {} s after the key rotation at {:.0} s",
            plan.seconds,
            (RELOAD_INTERVAL + RELOAD_SLACK).as_secs(),
            rotate_at.as_secs_f64()
        );
    }
    crate::say(format!(
        "replicas: {REPLICAS} on PostgreSQL behind a balancer, {} clients for {} s; kill -9 of one at {:.0} s, key rotation at {:.0} s (seed {})",
        plan.clients,
        plan.seconds,
        kill_at.as_secs_f64(),
        rotate_at.as_secs_f64(),
        plan.seed
    ));
    let credentials = Credentials::generate();
    // The balancer's address is the issuer: it listens before the replicas start, and
    // forwards to them once they listen.
    let balancer = Proxy::start(Vec::new())
        .await
        .context("start the balancer")?;
    let issuer = format!("http://{}", balancer.addr);
    let mut replicas = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        replicas.push(Server::keyward_replica(exe, database_url, &credentials, &issuer).await?);
    }
    balancer.set_backends(replicas.iter().map(|r| r.site.addr).collect());
    let mut site = replicas[0].site.clone();
    site.addr = balancer.addr;
    site.label = format!("{REPLICAS} replicas behind a balancer");

    let watch = Arc::new(Watch::default());
    let shared = Arc::new(Shared {
        site,
        sign_in: tokio::sync::Mutex::new(()),
        stop: AtomicBool::new(false),
        killed: AtomicBool::new(false),
        steps: Default::default(),
        requests: Default::default(),
        retried: AtomicU64::new(0),
        failed_twice: AtomicU64::new(0),
        latencies: Default::default(),
        violations: std::sync::Mutex::new(Vec::new()),
    });
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let clients: Vec<_> = (0..plan.clients)
        .map(|index| {
            let client = Client {
                index,
                conn: Conn::watched(balancer.addr, watch.clone()).without_keep_alive(),
                browser: Browser::default(),
                refresh: None,
                rng: StdRng::seed_from_u64(rng.r#gen()),
            };
            tokio::spawn(client_loop(shared.clone(), client))
        })
        .collect();

    let started = Instant::now();
    let old_kids = kids_signed_by(&replicas).await?;
    tokio::time::sleep(kill_at.saturating_sub(started.elapsed())).await;
    let victim = 1;
    replicas[victim].kill_hard().await?;
    shared.killed.store(true, Ordering::Relaxed);
    eprintln!(
        "  replica {victim} killed at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(rotate_at.saturating_sub(started.elapsed())).await;
    rotate_keys(&replicas[0]).await?;
    let rotated = Instant::now();
    eprintln!("  keys rotated at {:.1} s", started.elapsed().as_secs_f64());
    let survivors: Vec<usize> = (0..REPLICAS).filter(|&i| i != victim).collect();
    let adoption = watch_adoption(
        &shared,
        &replicas,
        &survivors,
        &old_kids,
        rotated,
        RELOAD_INTERVAL + RELOAD_SLACK,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(plan.seconds).saturating_sub(started.elapsed())).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for client in clients {
        done.push(client.await.context("a client panicked")?);
    }

    // Every chain goes on with the last token handed.
    let mut chains = [0, 0];
    for client in &mut done {
        if client.refresh.is_some() {
            match with_one_retry!(&shared, "the last rotation", rotate(&shared, client)) {
                Ok(()) => chains[0] += 1,
                Err(e) => {
                    chains[1] += 1;
                    shared.violation(format!("client {}: {e:#}", client.index));
                }
            }
        }
    }

    // The killed replica again: it signs with the new key at once.
    replicas[victim].restart().await?;
    let kids = kid_of_token(&replicas[victim].site).await?;
    let restarted_signs_new = !old_kids.contains(&kids);
    if !restarted_signs_new {
        shared.violation("the restarted replica signs with a retired key".into());
    }

    let (passed, output) = crate::crash::run_store_check(&replicas[0]).await?;
    let store_problems = output
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .count();
    if !passed {
        shared.violation(format!("keyward store check: {}", output.trim()));
    }
    for replica in &replicas {
        if let Some(log) = replica.log_file()
            && let Ok(text) = std::fs::read_to_string(log)
        {
            for line in text.lines().filter(|l| l.contains("panicked")) {
                shared.violation(format!("a replica panicked: {line}"));
            }
        }
    }
    let server_errors = watch.server_errors.load(Ordering::Relaxed);
    if server_errors > 0 {
        let samples = watch
            .samples
            .lock()
            .map(|s| s.join("; "))
            .unwrap_or_default();
        shared.violation(format!("{server_errors} answers were 5xx: {samples}"));
    }
    let mut adopted = Vec::new();
    for &(replica, after) in &adoption.adopted {
        if after.is_none() {
            shared.violation(format!(
                "replica {replica} did not sign with the new key within {} s",
                (RELOAD_INTERVAL + RELOAD_SLACK).as_secs()
            ));
        }
        adopted.push((replica, after));
    }
    if adoption.cross_checks[1] > 0 {
        shared.violation(format!(
            "{} tokens signed with the new key were refused by another replica",
            adoption.cross_checks[1]
        ));
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let latency = [0, 1].map(|half| {
        let mut l = shared.latencies[half]
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        l.sort_unstable();
        [percentile(&l, 0.50), percentile(&l, 0.99)]
    });
    let violations = shared
        .violations
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    Ok(ReplicaRun {
        steps: [get(&shared.steps[0]), get(&shared.steps[1])],
        requests: [get(&shared.requests[0]), get(&shared.requests[1])],
        latency,
        retried: get(&shared.retried),
        failed_twice: get(&shared.failed_twice),
        chains,
        adopted,
        cross_checks: adoption.cross_checks,
        restarted_signs_new,
        server_errors,
        store_problems: u64::try_from(store_problems).unwrap_or(u64::MAX),
        violations,
    })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Rounded index into the sorted sample; the lossy casts are of small counts.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// A client's steps until the run stops: signing in, then rotations, code flows on
/// its session, and client-credentials tokens checked by introspection, each on a new
/// connection through the balancer.
async fn client_loop(shared: Arc<Shared>, mut client: Client) -> Client {
    while !shared.stop.load(Ordering::Relaxed) {
        let roll: f64 = client.rng.r#gen();
        let result = match (&client.refresh, roll) {
            (None, _) => {
                let turn = shared.sign_in.lock().await;
                let result =
                    with_one_retry!(&shared, "signing in", code_flow(&shared, &mut client, true));
                drop(turn);
                result
            }
            (Some(_), r) if r < 0.2 => {
                with_one_retry!(
                    &shared,
                    "a code flow",
                    code_flow(&shared, &mut client, false)
                )
            }
            (Some(_), r) if r < 0.4 => {
                with_one_retry!(
                    &shared,
                    "client credentials",
                    client_credentials(&shared, &mut client.conn)
                )
            }
            _ => with_one_retry!(&shared, "a rotation", rotate(&shared, &mut client)),
        };
        match result {
            Ok(()) => {
                shared.steps[shared.half()].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.violation(format!("client {}: {e:#}", client.index));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    client
}

/// A code flow, signing in when `interactive`; its refresh token starts the client's
/// chain when it has none.
async fn code_flow(shared: &Shared, client: &mut Client, interactive: bool) -> anyhow::Result<()> {
    let site = &shared.site;
    let (path, verifier) = site.authorize_path(SCOPE);
    let mut browser = match interactive {
        true => Browser::default(),
        false => client.browser.clone(),
    };
    let code = browser
        .authorize(&mut client.conn, site, &path, interactive)
        .await?;
    let reply = shared
        .post(
            &mut client.conn,
            &site.endpoints.token,
            Site::code_form(&code, &verifier),
        )
        .await?;
    if reply.status != StatusCode::OK {
        bail!("a code just issued was refused: {}", reply.describe());
    }
    let tokens = reply.json()?;
    if interactive {
        client.browser = browser;
        client.refresh = Some(
            tokens["refresh_token"]
                .as_str()
                .context("no refresh token")?
                .to_owned(),
        );
    }
    Ok(())
}

/// Rotates the client's chain with the last token handed.
async fn rotate(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let current = client.refresh.as_deref().context("no chain")?;
    let form = format!("grant_type=refresh_token&refresh_token={}", enc(current));
    let reply = shared
        .post(&mut client.conn, &shared.site.endpoints.token, form)
        .await?;
    if reply.status != StatusCode::OK {
        bail!(
            "the chain broke: the last token handed was refused with {}",
            reply.describe()
        );
    }
    let next = reply.json()?["refresh_token"]
        .as_str()
        .context("no refresh token in a rotation")?
        .to_owned();
    client.refresh = Some(next);
    Ok(())
}

/// A client-credentials token, introspected on the next connection (another replica).
async fn client_credentials(shared: &Shared, conn: &mut Conn) -> anyhow::Result<()> {
    let token = issue(shared, conn).await?;
    let reply = shared
        .post(
            conn,
            &shared.site.endpoints.introspect,
            format!("token={}", enc(&token)),
        )
        .await?;
    if reply.status != StatusCode::OK || reply.json()?["active"] != true {
        bail!(
            "a token just issued is not active on another replica: {}",
            reply.describe()
        );
    }
    Ok(())
}

async fn issue(shared: &Shared, conn: &mut Conn) -> anyhow::Result<String> {
    let reply = shared
        .post(
            conn,
            &shared.site.endpoints.token,
            "grant_type=client_credentials".into(),
        )
        .await?;
    if reply.status != StatusCode::OK {
        bail!("client credentials refused: {}", reply.describe());
    }
    Ok(reply.json()?["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned())
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> anyhow::Result<String> {
    let header = jwt.split('.').next().context("not a JWT")?;
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?;
    Ok(header["kid"].as_str().context("no kid")?.to_owned())
}

/// A client-credentials access token from one replica, asked directly (not through
/// the balancer).
async fn token_from(site: &Site) -> anyhow::Result<String> {
    let mut conn = Conn::new(site.addr);
    let reply = conn
        .post(
            &site.endpoints.token,
            &site.client_auth(),
            "grant_type=client_credentials".into(),
        )
        .await?;
    if reply.status != StatusCode::OK {
        bail!("client credentials on {}: {}", site.addr, reply.describe());
    }
    Ok(reply.json()?["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned())
}

/// The key id a replica signs access tokens with now.
async fn kid_of_token(site: &Site) -> anyhow::Result<String> {
    kid_of(&token_from(site).await?)
}

/// The key ids the replicas sign with before the rotation.
async fn kids_signed_by(replicas: &[Server]) -> anyhow::Result<Vec<String>> {
    let mut kids = Vec::new();
    for replica in replicas {
        kids.push(kid_of_token(&replica.site).await?);
    }
    kids.dedup();
    Ok(kids)
}

/// `keyward key rotate`, with the configuration of `replica`.
async fn rotate_keys(replica: &Server) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(replica.exe().context("not keyward")?)
        .args(["key", "rotate", "--config"])
        .arg(replica.config_file().context("not keyward")?)
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_CONFIG")
        .output()
        .await
        .context("run keyward key rotate")?;
    if !output.status.success() {
        bail!(
            "keyward key rotate failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// What the watch over a key rotation saw.
struct Adoption {
    adopted: Vec<(usize, Option<Duration>)>,
    cross_checks: [u64; 2],
}

/// Asks each surviving replica for a token every 250 ms until each signs with a key
/// not in `old`, or `within` passes; each token with a new key is introspected on every
/// other survivor at once.
async fn watch_adoption(
    shared: &Shared,
    replicas: &[Server],
    survivors: &[usize],
    old: &[String],
    rotated: Instant,
    within: Duration,
) -> anyhow::Result<Adoption> {
    let mut adopted: Vec<(usize, Option<Duration>)> =
        survivors.iter().map(|&i| (i, None)).collect();
    let mut cross_checks = [0, 0];
    while rotated.elapsed() < within && adopted.iter().any(|(_, at)| at.is_none()) {
        for (replica, at) in &mut adopted {
            if at.is_some() {
                continue;
            }
            let token = token_from(&replicas[*replica].site).await?;
            if old.contains(&kid_of(&token)?) {
                continue;
            }
            *at = Some(rotated.elapsed());
            eprintln!(
                "  replica {replica} signs with the new key {:.1} s after the rotation",
                rotated.elapsed().as_secs_f64()
            );
            for &other in survivors.iter().filter(|&&o| o != *replica) {
                let other_site = &replicas[other].site;
                let mut conn = Conn::new(other_site.addr);
                let reply = conn
                    .post(
                        &other_site.endpoints.introspect,
                        &other_site.client_auth(),
                        format!("token={}", enc(&token)),
                    )
                    .await?;
                if reply.status == StatusCode::OK && reply.json()?["active"] == true {
                    cross_checks[0] += 1;
                } else {
                    cross_checks[1] += 1;
                    shared.violation(format!(
                        "replica {other} refused a token replica {replica} signed with the new key: {}",
                        reply.describe()
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(Adoption {
        adopted,
        cross_checks,
    })
}
