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
pub mod svg;
pub mod verdict;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use hyper::header;
use keyward_proto::secret::random_urlsafe;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use self::sample::{Database, open_fds};
pub use self::sample::{Sample, csv};
use self::verdict::Verdict;
use crate::load::{Conn, Pacer, Reply, Watch};
use crate::target::{Browser, Credentials, Server, Site, enc};

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

/// How often keyward purges expired rows: its housekeeping ticks every
/// [`keyward_server::keys::RELOAD_INTERVAL`] and purges at the first tick (at start)
/// and every tenth after (`serve.rs`, `housekeeping`).
pub const PURGE_INTERVAL: Duration =
    Duration::from_secs(keyward_server::keys::RELOAD_INTERVAL.as_secs() * 10);
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
        match perform(&shared, &mut client, step).await {
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

async fn perform(shared: &Shared, client: &mut Client, step: Step) -> anyhow::Result<()> {
    match step {
        Step::SignIn => sign_in(shared, client).await,
        Step::SignOut => sign_out(shared, client).await,
        Step::CodeFlow => {
            let tokens = code_flow(shared, client).await?;
            client.take_grant(&tokens)
        }
        Step::Refresh => refresh(shared, client).await,
        Step::ClientCredentials => {
            let reply = token_request(
                shared,
                client,
                "grant_type=client_credentials&scope=api%3Aread",
            )
            .await?;
            expect(&reply, StatusCode::OK, None)?;
            access_token(&reply.json()?).map(|_| ())
        }
        Step::Introspect => {
            let token = client.access_token()?;
            let active = introspect(shared, client, &token).await?;
            if !active {
                bail!("a live access token was reported inactive");
            }
            Ok(())
        }
        Step::Userinfo => {
            let bearer = format!("Bearer {}", client.access_token()?);
            let reply = client
                .conn
                .get(
                    &shared.paths.userinfo,
                    &[(header::AUTHORIZATION, bearer.as_str())],
                )
                .await?;
            expect(&reply, StatusCode::OK, None)?;
            if reply.json()?["sub"].as_str().is_none() {
                bail!("userinfo without sub");
            }
            Ok(())
        }
        Step::Revoke => revoke(shared, client).await,
        Step::Device => device(shared, client).await,
        Step::AbandonLogin => abandon_login(shared, client).await,
        Step::WrongSecret => {
            let basic = format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{}:{}", crate::target::CLIENT_ID, random_urlsafe(32))
                )
            );
            shared.failing_request();
            let reply = client
                .conn
                .post(
                    &shared.site.endpoints.token,
                    &[(header::AUTHORIZATION, basic.as_str())],
                    "grant_type=client_credentials".into(),
                )
                .await?;
            expect(&reply, StatusCode::UNAUTHORIZED, Some("invalid_client"))
        }
        Step::GarbageIntrospect => {
            shared.failing_request();
            if introspect(shared, client, &random_urlsafe(32)).await? {
                bail!("a made-up token was reported active");
            }
            Ok(())
        }
        Step::GarbageUserinfo => {
            let bearer = format!("Bearer {}", random_urlsafe(32));
            shared.failing_request();
            let reply = client
                .conn
                .get(
                    &shared.paths.userinfo,
                    &[(header::AUTHORIZATION, bearer.as_str())],
                )
                .await?;
            expect(&reply, StatusCode::UNAUTHORIZED, None)
        }
        Step::ReplayedCode => {
            let (code, verifier) = authorize(shared, client).await?;
            let form = Site::code_form(&code, &verifier);
            let reply = token_request(shared, client, &form).await?;
            expect(&reply, StatusCode::OK, None)?;
            shared.failing_request();
            let reply = token_request(shared, client, &form).await?;
            expect(&reply, StatusCode::BAD_REQUEST, Some("invalid_grant"))
        }
        Step::WrongVerifier => {
            let (code, _) = authorize(shared, client).await?;
            let (other, _) = crate::target::pkce();
            shared.failing_request();
            let reply = token_request(shared, client, &Site::code_form(&code, &other)).await?;
            expect(&reply, StatusCode::BAD_REQUEST, Some("invalid_grant"))
        }
        Step::UnsupportedGrant => {
            let form = format!(
                "grant_type=password&username={}&password={}",
                crate::target::USERNAME,
                random_urlsafe(12)
            );
            shared.failing_request();
            let reply = token_request(shared, client, &form).await?;
            expect(
                &reply,
                StatusCode::BAD_REQUEST,
                Some("unsupported_grant_type"),
            )
        }
    }
}

impl Client {
    /// Keeps the grant and access token of a token response.
    fn take_grant(&mut self, tokens: &serde_json::Value) -> anyhow::Result<()> {
        let refresh_token = tokens["refresh_token"]
            .as_str()
            .context("no refresh token issued")?
            .to_owned();
        let access = access_token(tokens)?;
        let now = Instant::now();
        self.chain = Some(Chain {
            refresh_token,
            started: now,
        });
        self.access = Some((access, now));
        Ok(())
    }

    fn access_token(&self) -> anyhow::Result<String> {
        self.access
            .as_ref()
            .map(|a| a.0.clone())
            .context("no access token")
    }
}

/// Fails unless `reply` has `status` (and, when given, the OAuth error `code`).
fn expect(reply: &Reply, status: StatusCode, code: Option<&str>) -> anyhow::Result<()> {
    let error = reply.oauth_error();
    if reply.status != status || (code.is_some() && error.as_deref() != code) {
        bail!(
            "expected {status}{}, got {}",
            code.map(|c| format!(" {c}")).unwrap_or_default(),
            reply.describe()
        );
    }
    Ok(())
}

fn access_token(tokens: &serde_json::Value) -> anyhow::Result<String> {
    Ok(tokens["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned())
}

/// A request to the token endpoint with the client's credentials.
async fn token_request(shared: &Shared, client: &mut Client, form: &str) -> anyhow::Result<Reply> {
    client
        .conn
        .post(
            &shared.site.endpoints.token,
            &shared.site.client_auth(),
            form.to_owned(),
        )
        .await
}

/// Whether keyward says `token` is active (a 200 answer either way).
async fn introspect(shared: &Shared, client: &mut Client, token: &str) -> anyhow::Result<bool> {
    let reply = client
        .conn
        .post(
            &shared.site.endpoints.introspect,
            &shared.site.client_auth(),
            format!("token={}", enc(token)),
        )
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    Ok(reply.json()?["active"] == true)
}

/// An authorization request on the browser's session: the code and its verifier.
async fn authorize(shared: &Shared, client: &mut Client) -> anyhow::Result<(String, String)> {
    let (path, verifier) = shared.site.authorize_path(SCOPE);
    let code = client
        .browser
        .authorize(&mut client.conn, &shared.site, &path, false)
        .await?;
    Ok((code, verifier))
}

/// A code flow on the browser's session, the code redeemed: the token response.
async fn code_flow(shared: &Shared, client: &mut Client) -> anyhow::Result<serde_json::Value> {
    let (code, verifier) = authorize(shared, client).await?;
    let reply = token_request(shared, client, &Site::code_form(&code, &verifier)).await?;
    expect(&reply, StatusCode::OK, None)?;
    reply.json()
}

/// A fresh browser signs in on the password form, one client at a time.
async fn sign_in(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let (path, verifier) = shared.site.authorize_path(SCOPE);
    let mut browser = Browser::default();
    let turn = shared.sign_in.lock().await;
    let started = Instant::now();
    let code = browser
        .authorize(&mut client.conn, &shared.site, &path, true)
        .await;
    drop(turn);
    let code = code?;
    let reply = token_request(shared, client, &Site::code_form(&code, &verifier)).await?;
    expect(&reply, StatusCode::OK, None)?;
    client.take_grant(&reply.json()?)?;
    client.browser = browser;
    client.signed_in = Some(started);
    Ok(())
}

/// The browser signs out: the confirmation page, the form posted, the session cookie
/// gone. Its grants live on.
async fn sign_out(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let page = client
        .browser
        .follow(&mut client.conn, &shared.site, &shared.paths.end_session)
        .await?;
    if !page.text().contains("signed out") {
        bail!("the sign-out did not end on the signed-out page");
    }
    if client.browser.cookie_header().contains("keyward_session=") {
        bail!("the session cookie outlived the sign-out");
    }
    client.signed_in = None;
    Ok(())
}

/// The grant's refresh token rotated.
async fn refresh(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let Some(chain) = &client.chain else {
        bail!("no grant to refresh");
    };
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        enc(&chain.refresh_token)
    );
    let reply = token_request(shared, client, &form).await?;
    expect(&reply, StatusCode::OK, None)?;
    let tokens = reply.json()?;
    let next = tokens["refresh_token"]
        .as_str()
        .context("no refresh token in a rotation")?;
    let access = access_token(&tokens)?;
    if let Some(chain) = &mut client.chain {
        if next == chain.refresh_token {
            bail!("a rotation handed back the same refresh token");
        }
        chain.refresh_token = next.to_owned();
    }
    client.access = Some((access, Instant::now()));
    Ok(())
}

/// Revokes the refresh token (then refused: the grant is gone) or the access token
/// (then inactive), at random.
async fn revoke(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let whole_grant = client.rng.gen_bool(0.5);
    let (token, hint) = match whole_grant {
        true => (
            client
                .chain
                .as_ref()
                .map(|c| c.refresh_token.clone())
                .context("no grant to revoke")?,
            "refresh_token",
        ),
        false => (client.access_token()?, "access_token"),
    };
    let reply = client
        .conn
        .post(
            &shared.paths.revocation,
            &shared.site.client_auth(),
            format!("token={}&token_type_hint={hint}", enc(&token)),
        )
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    client.access = None;
    if whole_grant {
        client.chain = None;
        let form = format!("grant_type=refresh_token&refresh_token={}", enc(&token));
        let reply = token_request(shared, client, &form).await?;
        expect(&reply, StatusCode::BAD_REQUEST, Some("invalid_grant"))
    } else if introspect(shared, client, &token).await? {
        bail!("a revoked access token was reported active");
    } else {
        Ok(())
    }
}

/// A device authorization: started, polled (pending), approved on the verification
/// page in the client's signed-in browser (consent is always asked for a device),
/// polled again (tokens).
async fn device(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let reply = client
        .conn
        .post(
            &shared.site.endpoints.device,
            &shared.site.client_auth(),
            format!("scope={}", enc(SCOPE)),
        )
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    let started = reply.json()?;
    let device_code = started["device_code"]
        .as_str()
        .context("no device_code")?
        .to_owned();
    let verification = started["verification_uri_complete"]
        .as_str()
        .context("no verification_uri_complete")?;
    let verification = url::Url::parse(verification).context("verification_uri_complete")?;
    let verification = match verification.query() {
        Some(q) => format!("{}?{q}", verification.path()),
        None => verification.path().to_owned(),
    };
    let poll = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code={}",
        enc(&device_code)
    );
    let reply = token_request(shared, client, &poll).await?;
    expect(
        &reply,
        StatusCode::BAD_REQUEST,
        Some("authorization_pending"),
    )?;
    let polled = Instant::now();
    let page = client
        .browser
        .follow(&mut client.conn, &shared.site, &verification)
        .await?;
    if !page.text().contains("Device connected") {
        bail!("the device approval did not end on the device-connected page");
    }
    tokio::time::sleep_until((polled + DEVICE_POLL).into()).await;
    let reply = token_request(shared, client, &poll).await?;
    expect(&reply, StatusCode::OK, None)?;
    access_token(&reply.json()?).map(|_| ())
}

/// A fresh browser opens an authorization request, is sent to the login page, sees
/// it, and goes away.
async fn abandon_login(shared: &Shared, client: &mut Client) -> anyhow::Result<()> {
    let (path, _) = shared.site.authorize_path(SCOPE);
    let reply = client.conn.get(&path, &[]).await?;
    if !reply.status.is_redirection() {
        bail!(
            "authorize without a session: expected a redirect, got {}",
            reply.describe()
        );
    }
    let location = reply.location().context("redirect without Location")?;
    let base = url::Url::parse(&format!("http://{}", shared.site.addr))?;
    let login = base.join(&path)?.join(location)?;
    let target = match login.query() {
        Some(q) => format!("{}?{q}", login.path()),
        None => login.path().to_owned(),
    };
    let cookies: Vec<String> = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_owned))
        .collect();
    let cookie = cookies.join("; ");
    let reply = client
        .conn
        .get(&target, &[(header::COOKIE, cookie.as_str())])
        .await?;
    expect(&reply, StatusCode::OK, None)?;
    if !reply.text().contains("name=\"password\"") {
        bail!("the login page has no password field");
    }
    Ok(())
}
