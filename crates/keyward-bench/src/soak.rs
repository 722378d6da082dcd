//! The soak (`keyward-bench soak`): keyward under a long, paced, mixed load, with its
//! resources sampled, then judged.
//!
//! keyward runs on a fresh database with short lifetimes ([`LIFETIMES`]: grants and
//! sessions live 10 minutes, access tokens 5), so that within half an hour everything
//! it stores expires, and its housekeeping (which purges every
//! [`PURGE_INTERVAL`]) has work many times over. Clients share one pace (`--rate`
//! requests a second in all) and drive every flow the harness can: password sign-ins
//! and sign-outs, single-sign-on code flows with PKCE, refresh rotations,
//! client_credentials, introspection, userinfo, revocation (of refresh and of access
//! tokens), device authorizations started, polled, approved in the browser and
//! collected, and logins abandoned on the login page. About a tenth of the requests
//! fail on purpose, each with its expected answer checked ([`Step::failing`]). Every
//! 10 s a [`Sample`] is taken: keyward's RSS, its open file descriptors, the database's
//! size, the rows of each table keyward purges (live, expired, purgeable, overdue),
//! and the requests and 5xx so far. The verdicts ([`verdict`]) say what must hold.

pub mod report;
mod sample;
mod steps;
pub mod svg;
pub mod verdict;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use self::sample::{Database, open_fds};
pub use self::sample::{Sample, csv};
use self::verdict::Verdict;
use crate::load::{Conn, Pacer, Watch};
use crate::target::{Browser, Credentials, Server, Site};

/// The lifetimes keyward runs with during a soak (top-level configuration keys): short
/// enough that sessions, grants, codes, refresh and access tokens, device codes and
/// logins in progress expire and are purged several times in 30 minutes.
pub const LIFETIMES: &str = r#"access_token_ttl = "5m"
id_token_ttl = "5m"
refresh_token_ttl = "10m"
session_ttl = "10m"
authorization_code_ttl = "60s"
login_ttl = "2m"
device_code_ttl = "2m"
device_poll_interval = "1s"
"#;

/// The longest lifetime in [`LIFETIMES`] (grants, refresh tokens, sessions).
pub const LONGEST_TTL: Duration = Duration::from_secs(600);
/// `session_ttl` in [`LIFETIMES`].
const SESSION_TTL: Duration = Duration::from_secs(600);
/// `refresh_token_ttl` in [`LIFETIMES`]: a grant's absolute lifetime.
const GRANT_TTL: Duration = Duration::from_secs(600);
/// `access_token_ttl` in [`LIFETIMES`].
const ACCESS_TTL: Duration = Duration::from_secs(300);
/// How long before its end a client stops using a session, grant or access token and
/// gets a new one (a request must never meet an expiry it did not ask for).
const MARGIN: Duration = Duration::from_secs(60);
/// `device_poll_interval` in [`LIFETIMES`], with a margin for keyward's whole seconds.
const DEVICE_POLL: Duration = Duration::from_millis(1100);

/// How often keyward purges expired rows: its default `purge_interval`, the first
/// pass one interval after start (`serve.rs`, `housekeeping`).
pub const PURGE_INTERVAL: Duration = keyward_server::config::DEFAULT_PURGE_INTERVAL;
/// What a purge may be late by: the ticks drift by the time each housekeeping round
/// takes, the purge itself takes time, and keyward compares whole seconds.
pub const PURGE_SLACK: Duration = Duration::from_secs(60);

/// The scope of sign-ins and code flows: an ID token, a refresh token, an API token.
const SCOPE: &str = "openid offline_access api:read";
/// The share of requests that fail on purpose.
const FAILING_SHARE: f64 = 0.10;
/// How many problems are kept word for word (the rest are counted).
const PROBLEMS_KEPT: usize = 20;

/// How big a soak is.
#[derive(Clone, Copy, Debug)]
pub struct SoakPlan {
    /// How long the load runs.
    pub seconds: u64,
    /// Requests per second, all clients together.
    pub rate: f64,
    /// Concurrent clients, each with its own browser, session and grants.
    pub clients: usize,
    /// How often a sample is taken.
    pub sample_every: Duration,
    /// The seed of the clients' choices.
    pub seed: u64,
}

/// What one soak saw.
#[derive(Debug)]
pub struct SoakRun {
    /// "SQLite" or "PostgreSQL".
    pub database: String,
    /// The plan it ran.
    pub plan: SoakPlan,
    /// How long the load really ran.
    pub load: Duration,
    /// Every sample, the first before the load, the last after it.
    pub samples: Vec<Sample>,
    /// Steps completed, by kind ([`Step::ALL`] order).
    pub steps: Vec<(Step, u64)>,
    /// Requests sent.
    pub requests: u64,
    /// Of those, meant to fail (and failing as expected, or counted in `unexpected`).
    pub on_purpose: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Steps that met an answer other than the one expected (or none).
    pub unexpected: u64,
    /// The first few problems, described (ids, steps and statuses, never tokens).
    pub problems: Vec<String>,
    /// Whether `keyward store check` passed at the end, and its first line.
    pub store_check: (bool, String),
    /// Lines of keyward's log saying it panicked.
    pub panics: Vec<String>,
    /// What was judged.
    pub verdicts: Vec<Verdict>,
}

impl SoakRun {
    /// Whether no verdict failed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| !v.failed())
    }
}

/// One thing a client does: a few requests, each answer checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A fresh browser signs in on the password form (code flow with PKCE, redeemed):
    /// a new session and grant.
    SignIn,
    /// The browser signs out (the confirmation page, then the form).
    SignOut,
    /// A code flow with PKCE on the browser's session: a new grant.
    CodeFlow,
    /// The grant's refresh token rotated.
    Refresh,
    /// `client_credentials`.
    ClientCredentials,
    /// The client's access token introspected: active.
    Introspect,
    /// The access token at userinfo.
    Userinfo,
    /// The refresh token revoked (its grant with it, then refused), or the access token
    /// revoked (then inactive at introspection).
    Revoke,
    /// A device authorization started, polled (pending), approved in the browser,
    /// polled again (tokens).
    Device,
    /// A fresh browser opens an authorization request and leaves at the login page: a
    /// login in progress that expires.
    AbandonLogin,
    /// Failing on purpose: `client_credentials` with a wrong secret (401
    /// `invalid_client`).
    WrongSecret,
    /// Failing on purpose: a made-up token introspected (200, `active: false`).
    GarbageIntrospect,
    /// Failing on purpose: a made-up token at userinfo (401).
    GarbageUserinfo,
    /// Failing on purpose: a code redeemed twice (the second 400 `invalid_grant`).
    ReplayedCode,
    /// Failing on purpose: a code redeemed with the wrong PKCE verifier (400
    /// `invalid_grant`).
    WrongVerifier,
    /// Failing on purpose: `grant_type=password` (400 `unsupported_grant_type`).
    UnsupportedGrant,
}

impl Step {
    /// Every step, in report order.
    pub const ALL: [Step; 16] = [
        Step::SignIn,
        Step::SignOut,
        Step::CodeFlow,
        Step::Refresh,
        Step::ClientCredentials,
        Step::Introspect,
        Step::Userinfo,
        Step::Revoke,
        Step::Device,
        Step::AbandonLogin,
        Step::WrongSecret,
        Step::GarbageIntrospect,
        Step::GarbageUserinfo,
        Step::ReplayedCode,
        Step::WrongVerifier,
        Step::UnsupportedGrant,
    ];

    /// The steps that fail on purpose.
    const FAILING: [Step; 6] = [
        Step::WrongSecret,
        Step::GarbageIntrospect,
        Step::GarbageUserinfo,
        Step::ReplayedCode,
        Step::WrongVerifier,
        Step::UnsupportedGrant,
    ];

    /// The ordinary steps a signed-in client with a grant picks from, and how often
    /// (per mille). Sign-outs are rare because each costs a password sign-in.
    const MIX: [(Step, u32); 9] = [
        (Step::Refresh, 300),
        (Step::ClientCredentials, 150),
        (Step::Introspect, 150),
        (Step::Userinfo, 150),
        (Step::CodeFlow, 150),
        (Step::Revoke, 50),
        (Step::Device, 12),
        (Step::AbandonLogin, 30),
        (Step::SignOut, 8),
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Step::SignIn => "password sign-in",
            Step::SignOut => "sign-out",
            Step::CodeFlow => "code flow on the session",
            Step::Refresh => "refresh rotation",
            Step::ClientCredentials => "client_credentials",
            Step::Introspect => "introspection",
            Step::Userinfo => "userinfo",
            Step::Revoke => "revocation",
            Step::Device => "device authorization",
            Step::AbandonLogin => "login abandoned",
            Step::WrongSecret => "wrong client secret → 401",
            Step::GarbageIntrospect => "made-up token introspected → inactive",
            Step::GarbageUserinfo => "made-up token at userinfo → 401",
            Step::ReplayedCode => "code replayed → 400",
            Step::WrongVerifier => "wrong PKCE verifier → 400",
            Step::UnsupportedGrant => "unsupported grant_type → 400",
        }
    }

    /// Whether it fails on purpose.
    pub fn failing(self) -> bool {
        Self::FAILING.contains(&self)
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// What the clients share.
struct Shared {
    site: Site,
    pacer: Arc<Pacer>,
    watch: Arc<Watch>,
    paths: Paths,
    /// Taken for a sign-in on the password form: one at a time, as a person would (the
    /// form throttles parallel attempts at one account from one address).
    sign_in: tokio::sync::Mutex<()>,
    stop: AtomicBool,
    on_purpose: AtomicU64,
    unexpected: AtomicU64,
    done: [AtomicU64; Step::ALL.len()],
    problems: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn problem(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut list) = self.problems.lock()
            && list.len() < PROBLEMS_KEPT
        {
            list.push(what);
        }
    }

    /// Counts a request about to be sent that must fail.
    fn failing_request(&self) {
        self.on_purpose.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether fewer than [`FAILING_SHARE`] of the requests so far failed on purpose.
    fn owes_failures(&self) -> bool {
        let sent = self.pacer.sent.load(Ordering::Relaxed);
        let failing = self.on_purpose.load(Ordering::Relaxed);
        (failing as f64) < FAILING_SHARE * sent as f64
    }
}

/// The endpoints keyward publishes beyond those every server under test has.
struct Paths {
    userinfo: String,
    revocation: String,
    end_session: String,
}

/// A grant the client holds: its newest refresh token, and since when.
struct Chain {
    refresh_token: String,
    started: Instant,
}

/// One client: a connection, a browser with its session, a grant and an access token.
struct Client {
    index: usize,
    conn: Conn,
    browser: Browser,
    signed_in: Option<Instant>,
    chain: Option<Chain>,
    access: Option<(String, Instant)>,
    rng: StdRng,
}

impl Client {
    /// What to do next: renew what is about to expire, owe the failures the share asks
    /// for, or pick from [`Step::MIX`].
    fn choose(&mut self, shared: &Shared) -> Step {
        let fresh = |since: Option<Instant>, ttl: Duration| {
            since.is_some_and(|at| at.elapsed() + MARGIN < ttl)
        };
        if !fresh(self.signed_in, SESSION_TTL) {
            return Step::SignIn;
        }
        if !fresh(self.chain.as_ref().map(|c| c.started), GRANT_TTL) {
            return Step::CodeFlow;
        }
        if !fresh(self.access.as_ref().map(|a| a.1), ACCESS_TTL) {
            return Step::Refresh;
        }
        if shared.owes_failures() {
            return Step::FAILING[self.rng.gen_range(0..Step::FAILING.len())];
        }
        let total: u32 = Step::MIX.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.gen_range(0..total);
        for (step, weight) in Step::MIX {
            if pick < weight {
                return step;
            }
            pick -= weight;
        }
        Step::Refresh
    }
}

/// Runs one soak against `exe` on `database_url` (a fresh SQLite file when `None`).
pub async fn run(
    exe: &Path,
    database_url: Option<&str>,
    database: &str,
    plan: SoakPlan,
) -> anyhow::Result<SoakRun> {
    crate::say(format!(
        "soak on {database}: {} s at {:.0} requests/s from {} clients (seed {})",
        plan.seconds, plan.rate, plan.clients, plan.seed
    ));
    let credentials = Credentials::generate();
    let server = Server::keyward_with(exe, database_url, &credentials, LIFETIMES).await?;
    let site = server.site.clone();
    let endpoint = |path: &Option<String>, what: &str| {
        path.clone()
            .with_context(|| format!("keyward does not publish its {what} endpoint"))
    };
    let paths = Paths {
        userinfo: endpoint(&site.endpoints.userinfo, "userinfo")?,
        revocation: endpoint(&site.endpoints.revocation, "revocation")?,
        end_session: endpoint(&site.endpoints.end_session, "end-session")?,
    };
    let db = match (server.sqlite_file(), server.database_url()) {
        (Some(file), _) => Database::Sqlite(file),
        (None, Some(url)) if url.starts_with("postgres") => Database::Postgres(url.to_owned()),
        _ => bail!("keyward's database is neither a SQLite file nor PostgreSQL"),
    };
    let shared = Arc::new(Shared {
        site,
        pacer: Arc::new(Pacer::new(plan.rate)),
        watch: Arc::new(Watch::default()),
        paths,
        sign_in: tokio::sync::Mutex::new(()),
        stop: AtomicBool::new(false),
        on_purpose: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        done: std::array::from_fn(|_| AtomicU64::new(0)),
        problems: std::sync::Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let mut samples = vec![take_sample(&shared, &server, &db, started).await?];
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let clients: Vec<_> = (0..plan.clients.max(1))
        .map(|index| {
            let client = Client {
                index,
                conn: Conn::paced(shared.site.addr, shared.watch.clone(), shared.pacer.clone()),
                browser: Browser::default(),
                signed_in: None,
                chain: None,
                access: None,
                rng: StdRng::seed_from_u64(rng.r#gen()),
            };
            tokio::spawn(client_loop(shared.clone(), client))
        })
        .collect();

    let end = started + Duration::from_secs(plan.seconds);
    let mut next = started + plan.sample_every;
    while next <= end {
        tokio::time::sleep_until(next.into()).await;
        let sample = take_sample(&shared, &server, &db, started).await?;
        progress(&sample, &samples);
        samples.push(sample);
        next += plan.sample_every;
    }
    tokio::time::sleep_until(end.into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.context("a client panicked")?;
    }
    let load = started.elapsed();
    samples.push(take_sample(&shared, &server, &db, started).await?);

    let (passed, output) = crate::crash::run_store_check(&server).await?;
    let first_line = output.lines().next().unwrap_or_default().to_owned();
    eprintln!("  store check: {first_line}");
    let store_check = (
        passed,
        if passed {
            // "checked <database URL>: 1 users, …": the counts, not the temporary path.
            match first_line.split_once(": ") {
                Some((_, counts)) => format!("consistent ({counts})"),
                None => first_line,
            }
        } else {
            output
                .lines()
                .filter_map(|l| l.strip_prefix("problem: "))
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    let panics = match server.log_file() {
        Some(log) => std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut problems = shared
        .problems
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    if let Ok(samples) = shared.watch.samples.lock() {
        problems.extend(samples.iter().map(|s| format!("5xx: {s}")));
    }
    let mut run = SoakRun {
        database: database.to_owned(),
        plan,
        load,
        steps: Step::ALL
            .iter()
            .map(|s| (*s, get(&shared.done[s.index()])))
            .collect(),
        requests: get(&shared.pacer.sent),
        on_purpose: get(&shared.on_purpose),
        server_errors: get(&shared.watch.server_errors),
        unexpected: get(&shared.unexpected),
        problems,
        store_check,
        panics,
        samples,
        verdicts: Vec::new(),
    };
    run.verdicts = verdict::judge(&run);
    Ok(run)
}

/// One line of progress a minute.
fn progress(sample: &Sample, before: &[Sample]) {
    if (sample.at.as_secs() % 60) >= 10 && !before.is_empty() {
        return;
    }
    eprintln!(
        "  {:>4.1} min: {} requests, {} 5xx, {} unexpected; RSS {}, {} fds, database {}, rows {} ({} expired)",
        sample.at.as_secs_f64() / 60.0,
        sample.requests,
        sample.server_errors,
        sample.unexpected,
        crate::mib(sample.rss),
        sample.fds.map_or("?".into(), |n| n.to_string()),
        crate::mib(sample.db_bytes),
        sample.rows(),
        sample.expired(),
    );
}

/// Reads keyward's resources, the database, and the counters now.
async fn take_sample(
    shared: &Shared,
    server: &Server,
    db: &Database,
    started: Instant,
) -> anyhow::Result<Sample> {
    let at = started.elapsed();
    let now = crate::unix_now();
    let cutoff = now - i64::try_from((PURGE_INTERVAL + PURGE_SLACK).as_secs()).unwrap_or(0);
    let reading = db
        .read(now, cutoff)
        .await
        .context("sampling the database")?;
    Ok(Sample {
        at,
        requests: shared.pacer.sent.load(Ordering::Relaxed),
        on_purpose: shared.on_purpose.load(Ordering::Relaxed),
        server_errors: shared.watch.server_errors.load(Ordering::Relaxed),
        unexpected: shared.unexpected.load(Ordering::Relaxed),
        rss: server.rss(),
        fds: open_fds(server.pid()),
        db_bytes: reading.db_bytes,
        wal_bytes: reading.wal_bytes,
        tables: reading.tables,
    })
}

/// A client's steps until the run stops.
async fn client_loop(shared: Arc<Shared>, mut client: Client) {
    while !shared.stop.load(Ordering::Relaxed) {
        let step = client.choose(&shared);
        match steps::perform(&shared, &mut client, step).await {
            Ok(()) => {
                shared.done[step.index()].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.problem(format!("client {}, {}: {e:#}", client.index, step.name()));
                // Start over from nothing: whatever the client held may be what failed.
                client.browser = Browser::default();
                client.signed_in = None;
                client.chain = None;
                client.access = None;
                // Not a hot loop on a server that answers wrongly every time.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
