//! The crash harness (`keyward-bench crash`): keyward under a steady load of code flows
//! and refresh rotations, killed with SIGKILL (`kill -9`) at random moments and started
//! again on the same port and database, then checked. What must hold afterwards:
//!
//! - every rotation chain goes on with the last refresh token its client was handed
//!   (0 chains broken, during the load or at the end);
//! - no code and no refresh token is accepted twice: every redeemed code and every
//!   refresh token whose successor was used is presented again and refused, and the
//!   reuse kills the chain (its newest token and access token stop working);
//! - no answer is a 5xx, and none mentions a locked database;
//! - `keyward store check` finds the database consistent, before and after the replays.
//!
//! The clients keep to the rules a real client can: a request that got no answer (the
//! kill cut its connection, or no server was listening) is sent again, unchanged, once
//! the server answers. keyward's rotation is idempotent (`grants/refresh.rs`): a
//! rotated token whose successor is unused gets that same successor again, however
//! late, so a lost answer never costs the chain. A code whose answer was lost may be
//! refused on the retry (it was redeemed; a code works once, and the replay revokes
//! what it issued); the client then signs in again. A request that got an answer must
//! have been honoured.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::load::{Conn, Reply, Watch, no_answer};
use crate::target::{Browser, Credentials, Server, Site, enc};

/// The scope of every code flow: a refresh token, an ID token.
const SCOPE: &str = "openid offline_access";
/// The share of a client's steps that are a new code flow on its session (the rest
/// rotate its chain).
const CODE_FLOW_SHARE: f64 = 0.2;
/// How long a client waits for a server that does not answer before it gives up.
const PATIENCE: Duration = Duration::from_secs(120);
/// How often a client tries again while the server is away.
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// How big a crash run is.
#[derive(Clone, Copy, Debug)]
pub struct CrashPlan {
    /// How many times the server is killed.
    pub kills: usize,
    /// Concurrent clients, each with its own session and rotation chain.
    pub clients: usize,
    /// How long the load runs (the kills fall inside it).
    pub seconds: u64,
    /// The seed of the kill moments and of the clients' choices.
    pub seed: u64,
}

/// What one crash run saw.
#[derive(Debug, Default)]
pub struct CrashRun {
    /// "SQLite" or "PostgreSQL".
    pub database: String,
    /// The plan it ran.
    pub kills: usize,
    /// The seed.
    pub seed: u64,
    /// How long the load ran.
    pub load: Duration,
    /// Rotations answered 200.
    pub rotations: u64,
    /// Code flows whose code was accepted.
    pub codes: u64,
    /// Requests whose connection a kill cut (the server may have acted on them).
    pub cut: u64,
    /// Token requests answered after an earlier attempt was cut: rotations, codes.
    pub rotations_retried: u64,
    /// Codes redeemed on a retry after a cut (the cut attempt had not committed).
    pub codes_retried_accepted: u64,
    /// Codes refused on a retry after a cut (the cut attempt had redeemed it).
    pub codes_retried_refused: u64,
    /// Time from each kill to the new server listening.
    pub restarts: Vec<Duration>,
    /// Chains refused a token their client was handed (during the load or at the end).
    pub chains_broken: u64,
    /// Chains that went on at the end with the last token handed.
    pub chains_kept: u64,
    /// Old refresh tokens (successor used) and redeemed codes presented again.
    pub replays: u64,
    /// Of those, accepted.
    pub accepted_twice: u64,
    /// Chains still alive after a reuse, or codes whose tokens survived their replay.
    pub survived_reuse: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Answers mentioning a locked database.
    pub locked: u64,
    /// Problems `keyward store check` reported (before and after the replays).
    pub store_problems: u64,
    /// What went wrong, described (ids and statuses, never tokens).
    pub violations: Vec<String>,
}

impl CrashRun {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Counters the clients share.
#[derive(Default)]
struct Counts {
    rotations: AtomicU64,
    codes: AtomicU64,
    cut: AtomicU64,
    rotations_retried: AtomicU64,
    codes_retried_accepted: AtomicU64,
    codes_retried_refused: AtomicU64,
    chains_broken: AtomicU64,
}

/// What the clients share.
struct Shared {
    site: Site,
    /// Taken for a sign-in on the password form: one at a time, as a person would (the
    /// form throttles parallel attempts at one account from one address).
    sign_in: tokio::sync::Mutex<()>,
    counts: Counts,
    stop: AtomicBool,
    violations: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, what: String) {
        if let Ok(mut list) = self.violations.lock() {
            list.push(what);
        }
    }
}

/// A rotation chain: every refresh token its client was handed, oldest first (the
/// last is the one it uses next), and the newest access token.
struct Chain {
    handed: Vec<String>,
    access_token: String,
}

impl Chain {
    /// The tokens whose successor has been used: presented again, each is reuse.
    fn reused(&self) -> &[String] {
        &self.handed[..self.handed.len().saturating_sub(2)]
    }
}

/// A code a client redeemed (or saw refused on a retry), to present again at the end.
struct Redeemed {
    code: String,
    verifier: String,
    /// The access token it gave, when it was accepted.
    access_token: Option<String>,
}

/// One client: its connection, its signed-in browser, its chain.
struct Client {
    index: usize,
    conn: Conn,
    browser: Browser,
    chain: Option<Chain>,
    /// Chains the server broke (kept for the replays).
    broken: Vec<Chain>,
    codes: Vec<Redeemed>,
    rng: StdRng,
}

/// Runs one crash run against `exe` on `database_url` (a fresh SQLite file when
/// `None`).
pub async fn run(
    exe: &Path,
    database_url: Option<&str>,
    database: &str,
    plan: CrashPlan,
) -> anyhow::Result<CrashRun> {
    crate::say(format!(
        "crash safety on {database}: {} kills under {} clients for {} s (seed {})",
        plan.kills, plan.clients, plan.seconds, plan.seed
    ));
    let credentials = Credentials::generate();
    let mut server = Server::keyward_logged(exe, database_url, &credentials).await?;
    let watch = Arc::new(Watch::default());
    let shared = Arc::new(Shared {
        site: server.site.clone(),
        sign_in: tokio::sync::Mutex::new(()),
        counts: Counts::default(),
        stop: AtomicBool::new(false),
        violations: std::sync::Mutex::new(Vec::new()),
    });
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let clients: Vec<_> = (0..plan.clients)
        .map(|index| {
            let client = Client {
                index,
                conn: Conn::watched(shared.site.addr, watch.clone()),
                browser: Browser::default(),
                chain: None,
                broken: Vec::new(),
                codes: Vec::new(),
                rng: StdRng::seed_from_u64(rng.r#gen()),
            };
            tokio::spawn(client_loop(shared.clone(), client))
        })
        .collect();

    // The kills, at random moments: the gaps average the load's length shared out
    // between them, each from a half to one and a half times that.
    let started = Instant::now();
    let mean = Duration::from_secs(plan.seconds) / u32::try_from(plan.kills + 1).unwrap_or(1);
    let mut restarts = Vec::with_capacity(plan.kills);
    for kill in 1..=plan.kills {
        tokio::time::sleep(mean.mul_f64(rng.gen_range(0.5..1.5))).await;
        let at = Instant::now();
        server.kill_hard().await?;
        server
            .restart()
            .await
            .with_context(|| format!("restart after kill {kill}"))?;
        restarts.push(at.elapsed());
        eprintln!(
            "  kill {kill}/{} at {:.1} s: back in {:.0} ms",
            plan.kills,
            started.elapsed().as_secs_f64(),
            at.elapsed().as_secs_f64() * 1000.0
        );
    }
    tokio::time::sleep(mean).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut done = Vec::with_capacity(clients.len());
    for client in clients {
        done.push(client.await.context("a client panicked")?);
    }
    let load = started.elapsed();

    // Every chain goes on with the last token handed.
    let mut chains_kept = 0;
    for client in &mut done {
        if client.chain.is_some() {
            match rotate(&shared, client).await {
                Ok(()) if client.chain.is_some() => chains_kept += 1,
                Ok(()) => {}
                Err(e) => shared.violation(format!("client {}: {e:#}", client.index)),
            }
        }
    }
    let mut store_problems = store_check(&server, &shared, "after the load").await?;

    // Everything presented again: refused, and the reuse kills what it belonged to.
    let replays = replay_all(&shared, done).await;
    store_problems += store_check(&server, &shared, "after the replays").await?;
    if let Some(log) = server.log_file()
        && let Ok(text) = std::fs::read_to_string(log)
    {
        for line in text.lines().filter(|l| l.contains("panicked")) {
            shared.violation(format!("the server panicked: {line}"));
        }
    }

    let counts = &shared.counts;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let server_errors = get(&watch.server_errors);
    let locked = get(&watch.locked);
    if server_errors + locked > 0 {
        let samples = watch
            .samples
            .lock()
            .map(|s| s.join("; "))
            .unwrap_or_default();
        shared.violation(format!(
            "{server_errors} answers were 5xx, {locked} mentioned a locked database: {samples}"
        ));
    }
    let violations = shared
        .violations
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    Ok(CrashRun {
        database: database.to_owned(),
        kills: plan.kills,
        seed: plan.seed,
        load,
        rotations: get(&counts.rotations),
        codes: get(&counts.codes),
        cut: get(&counts.cut),
        rotations_retried: get(&counts.rotations_retried),
        codes_retried_accepted: get(&counts.codes_retried_accepted),
        codes_retried_refused: get(&counts.codes_retried_refused),
        restarts,
        chains_broken: get(&counts.chains_broken),
        chains_kept,
        replays: replays.presented,
        accepted_twice: replays.accepted,
        survived_reuse: replays.survived,
        server_errors,
        locked,
        store_problems,
        violations,
    })
}

/// A client's steps until the run stops: a chain started with a sign-in, then
/// rotations, and now and then a code flow on its session.
async fn client_loop(shared: Arc<Shared>, mut client: Client) -> Client {
    while !shared.stop.load(Ordering::Relaxed) {
        let step = match client.chain {
            None => start_chain(&shared, &mut client).await,
            Some(_) if client.rng.gen_bool(CODE_FLOW_SHARE) => {
                code_flow(&shared, &mut client, false).await.map(|_| ())
            }
            Some(_) => rotate(&shared, &mut client).await,
        };
        if let Err(e) = step {
            shared.violation(format!("client {}: {e:#}", client.index));
            // Not a hot loop on a server that answers wrongly every time.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    client
}

/// Sends a token-endpoint request until it is answered: while the server is away (no
/// connection, or one a kill cut) the same request goes again. Returns the answer, and
/// whether an earlier attempt may have reached the server.
async fn answered(
    shared: &Shared,
    conn: &mut Conn,
    path: &str,
    form: &str,
) -> anyhow::Result<(Reply, bool)> {
    let started = Instant::now();
    let mut cut = false;
    loop {
        match conn
            .post(path, &shared.site.client_auth(), form.to_owned())
            .await
        {
            Ok(reply) => return Ok((reply, cut)),
            Err(e) => {
                let Some(lost) = no_answer(&e) else {
                    return Err(e);
                };
                if lost.sent {
                    cut = true;
                    shared.counts.cut.fetch_add(1, Ordering::Relaxed);
                }
                if started.elapsed() > PATIENCE {
                    bail!("no answer for {} s: {e:#}", PATIENCE.as_secs());
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// Signs in with a fresh browser and starts a chain with the refresh token of the
/// code flow.
async fn start_chain(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let turn = shared.sign_in.lock().await;
    let flow = code_flow(shared, client, true).await;
    drop(turn);
    let Some(tokens) = flow? else {
        return Ok(());
    };
    let refresh = tokens["refresh_token"]
        .as_str()
        .context("no refresh token issued")?;
    client.chain = Some(Chain {
        handed: vec![refresh.to_owned()],
        access_token: access_token(&tokens)?,
    });
    Ok(())
}

/// One code flow: signing in on the pages in a fresh browser when `interactive`, on
/// the client's session otherwise; the code redeemed. `None` when the flow was cut
/// before a code came back, or the code was refused on a retry after a cut.
async fn code_flow(
    shared: &Shared,
    client: &mut Client,
    interactive: bool,
) -> anyhow::Result<Option<serde_json::Value>> {
    let site = &shared.site;
    let (path, verifier) = site.authorize_path(SCOPE);
    let mut browser = match interactive {
        true => Browser::default(),
        false => client.browser.clone(),
    };
    let code = match browser
        .authorize(&mut client.conn, site, &path, interactive)
        .await
    {
        Ok(code) => code,
        // The pages hold no tokens: a flow cut short starts over, once the server is
        // back.
        Err(e) if no_answer(&e).is_some() => {
            tokio::time::sleep(RETRY_EVERY).await;
            return Ok(None);
        }
        Err(e) => {
            let what = match interactive {
                true => "signing in",
                false => "a code flow on the session",
            };
            return Err(e.context(what));
        }
    };
    if interactive {
        client.browser = browser;
    }
    let form = Site::code_form(&code, &verifier);
    let (reply, cut) = answered(shared, &mut client.conn, &site.endpoints.token, &form).await?;
    let counts = &shared.counts;
    if reply.status == StatusCode::OK {
        let tokens = reply.json()?;
        counts.codes.fetch_add(1, Ordering::Relaxed);
        if cut {
            counts
                .codes_retried_accepted
                .fetch_add(1, Ordering::Relaxed);
        }
        client.codes.push(Redeemed {
            code,
            verifier,
            access_token: Some(access_token(&tokens)?),
        });
        return Ok(Some(tokens));
    }
    if cut && oauth_error(&reply).as_deref() == Some("invalid_grant") {
        // The cut attempt redeemed it; the retry is a replay, refused.
        counts.codes_retried_refused.fetch_add(1, Ordering::Relaxed);
        client.codes.push(Redeemed {
            code,
            verifier,
            access_token: None,
        });
        return Ok(None);
    }
    bail!(
        "a code just handed was refused: {}{}",
        reply.describe(),
        if cut { " (a retry after a cut)" } else { "" }
    )
}

/// One rotation of the client's chain with the last token it was handed. A refusal
/// breaks the chain: counted, and the client starts another.
async fn rotate(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let site = &shared.site;
    let Some(chain) = &mut client.chain else {
        return Ok(());
    };
    let current = chain.handed.last().context("an empty chain")?;
    let form = format!("grant_type=refresh_token&refresh_token={}", enc(current));
    let (reply, cut) = answered(shared, &mut client.conn, &site.endpoints.token, &form).await?;
    let counts = &shared.counts;
    if reply.status == StatusCode::OK {
        let tokens = reply.json()?;
        let next = tokens["refresh_token"]
            .as_str()
            .context("no refresh token in a rotation")?;
        if next == current {
            bail!("a rotation handed back the same refresh token");
        }
        chain.handed.push(next.to_owned());
        chain.access_token = access_token(&tokens)?;
        counts.rotations.fetch_add(1, Ordering::Relaxed);
        if cut {
            counts.rotations_retried.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    }
    counts.chains_broken.fetch_add(1, Ordering::Relaxed);
    let rotations = chain.handed.len() - 1;
    shared.violation(format!(
        "client {}: chain broken after {rotations} rotations: the last token handed was refused with {}{}",
        client.index,
        reply.describe(),
        if cut { " (a retry after a cut)" } else { "" }
    ));
    if let Some(chain) = client.chain.take() {
        client.broken.push(chain);
    }
    Ok(())
}

fn access_token(tokens: &serde_json::Value) -> anyhow::Result<String> {
    Ok(tokens["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned())
}

fn oauth_error(reply: &Reply) -> Option<String> {
    reply
        .json()
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
}

/// What the replays found.
#[derive(Default)]
struct Replays {
    presented: u64,
    accepted: u64,
    survived: u64,
}

/// Presents again, client by client in parallel, every refresh token whose successor
/// was used and every code redeemed; then checks that the reuse killed what it
/// belonged to.
async fn replay_all(shared: &Arc<Shared>, clients: Vec<Client>) -> Replays {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let index = client.index;
                match replay(&shared, client).await {
                    Ok(found) => found,
                    Err(e) => {
                        shared.violation(format!("client {index}: replaying: {e:#}"));
                        Replays::default()
                    }
                }
            })
        })
        .collect();
    let mut all = Replays::default();
    for task in tasks {
        if let Ok(found) = task.await {
            all.presented += found.presented;
            all.accepted += found.accepted;
            all.survived += found.survived;
        }
    }
    all
}

async fn replay(shared: &Shared, mut client: Client) -> anyhow::Result<Replays> {
    let site = shared.site.clone();
    let mut found = Replays::default();
    let index = client.index;
    let chains: Vec<Chain> = client
        .chain
        .take()
        .into_iter()
        .chain(client.broken.drain(..))
        .collect();
    for chain in &chains {
        // The newest reused token first (the likeliest to slip through), then the rest.
        for old in chain.reused().iter().rev() {
            let form = format!("grant_type=refresh_token&refresh_token={}", enc(old));
            let (reply, _) =
                answered(shared, &mut client.conn, &site.endpoints.token, &form).await?;
            found.presented += 1;
            if reply.status == StatusCode::OK {
                found.accepted += 1;
                shared.violation(format!(
                    "client {index}: a refresh token whose successor was used was accepted again"
                ));
            }
        }
        if chain.reused().is_empty() {
            continue;
        }
        // The reuse revoked the grant: its newest token and access token are dead.
        let newest = chain.handed.last().context("an empty chain")?;
        let form = format!("grant_type=refresh_token&refresh_token={}", enc(newest));
        let (reply, _) = answered(shared, &mut client.conn, &site.endpoints.token, &form).await?;
        let active = introspect(shared, &mut client.conn, &chain.access_token).await?;
        if reply.status == StatusCode::OK || active {
            found.survived += 1;
            shared.violation(format!(
                "client {index}: the chain survived a reuse (refresh {}, access token active: {active})",
                reply.status
            ));
        }
    }
    for redeemed in &client.codes {
        let form = Site::code_form(&redeemed.code, &redeemed.verifier);
        let (reply, _) = answered(shared, &mut client.conn, &site.endpoints.token, &form).await?;
        found.presented += 1;
        if reply.status == StatusCode::OK {
            found.accepted += 1;
            shared.violation(format!(
                "client {index}: a redeemed code was accepted again"
            ));
        }
        if let Some(token) = &redeemed.access_token
            && introspect(shared, &mut client.conn, token).await?
        {
            found.survived += 1;
            shared.violation(format!(
                "client {index}: an access token survived the replay of its code"
            ));
        }
    }
    Ok(found)
}

/// Whether keyward says `token` is active.
async fn introspect(shared: &Shared, conn: &mut Conn, token: &str) -> anyhow::Result<bool> {
    let form = format!("token={}", enc(token));
    let (reply, _) = answered(shared, conn, &shared.site.endpoints.introspect, &form).await?;
    if reply.status != StatusCode::OK {
        bail!("introspection answered {}", reply.describe());
    }
    Ok(reply.json()?["active"] == true)
}

/// Runs `keyward store check` on the server's configuration; returns how many problems
/// it reported (each also a violation).
async fn store_check(server: &Server, shared: &Shared, when: &str) -> anyhow::Result<u64> {
    let (passed, output) = run_store_check(server).await?;
    let problems: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("problem: "))
        .collect();
    if !passed {
        shared.violation(format!(
            "keyward store check {when}: {}",
            if problems.is_empty() {
                output.trim().to_owned()
            } else {
                problems.join("; ")
            }
        ));
    }
    eprintln!(
        "  store check {when}: {}",
        output.lines().next().unwrap_or_default()
    );
    Ok(u64::try_from(problems.len()).unwrap_or(u64::MAX))
}

/// Runs `keyward store check --config …` for `server`: whether it passed, and what it
/// printed.
pub async fn run_store_check(server: &Server) -> anyhow::Result<(bool, String)> {
    let (exe, config) = (
        server.exe().context("not keyward")?,
        server.config_file().context("not keyward")?,
    );
    let output = tokio::process::Command::new(exe)
        .args(["store", "check", "--config"])
        .arg(config)
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_CONFIG")
        .output()
        .await
        .context("run keyward store check")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}
