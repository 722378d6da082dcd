//! Floors: the least each scenario's work can cost on this machine, measured in the
//! same run as keyward, so that the report can say how close keyward comes to it
//! ("% of floor") whatever the machine's speed and noise.
//!
//! The parts are measured one by one:
//!
//! - **HTTP**: a bare axum handler in this process that reads a form body and answers a
//!   fixed one, driven by the same load generator on the same number of connections;
//!   its cost per request is the machine's time per request (both cores, the load
//!   generator's share included).
//! - **Crypto**, per core: an ES256 signature and its verification (ring, as keyward
//!   uses), and an Argon2id hash with keyward's parameters; divided by the cores, since
//!   requests in parallel use them all.
//! - **Storage**: commits per second of one small insert each, on SQLite with
//!   keyward's pragmas (WAL, `synchronous = NORMAL`, one writer) and on PostgreSQL, each
//!   through sqlx on one connection. Commits are serial (one writer), so they are not
//!   divided by the cores.
//!
//! A scenario's floor is then 1 / (round trips × HTTP + (signatures × sign + checks ×
//! verify + hashes × Argon2id) / cores + durable writes × commit): what the protocol
//! forces it to do ([`minimal_work`], each count explained there), done at the cost of
//! the fastest parts available here, and nothing else (no parsing beyond a form, no
//! logging, no second query). It is a bound, not a target: keyward's rate over it says
//! where the remaining cost lies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use sqlx::Connection as _;

use crate::load::{Conn, Pace, Stats, run};
use crate::scenario::{Load, Scenario};

/// What one iteration of a scenario must do at the least.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// HTTP requests.
    pub trips: u32,
    /// ES256 signatures made.
    pub signs: u32,
    /// ES256 signatures checked.
    pub verifies: u32,
    /// Argon2id password hashes.
    pub hashes: u32,
    /// Durable writes (commits), each on the one writer.
    pub commits: u32,
}

/// The least work of one iteration of `scenario` as keyward-bench sends it, and why.
pub fn minimal_work(scenario: Scenario) -> (Work, &'static str) {
    let work = |trips, signs, verifies, hashes, commits| Work {
        trips,
        signs,
        verifies,
        hashes,
        commits,
    };
    match scenario {
        Scenario::ClientCredentials => (
            work(1, 1, 0, 0, 0),
            "one request; the client secret hashed (SHA-256) and compared; one JWT signed. Nothing stored: the token is self-contained.",
        ),
        Scenario::SsoCodeFlow => (
            work(2, 2, 0, 0, 2),
            "two requests (authorize, token); the code stored durably at authorize, because any replica may redeem it and a restart must not lose it; at the token request the code consumed and the grant written in one commit, because a code works once; an access token and an ID token signed (scope `openid`).",
        ),
        Scenario::PasswordLogin => (
            work(3, 0, 0, 1, 2),
            "three requests (authorize, the login page, the form posted); one Argon2id hash; the pending login stored, then the session and the code.",
        ),
        Scenario::RefreshRotation => (
            work(1, 2, 0, 0, 1),
            "one request; the presented token marked used and its successor written in one commit (rotation must survive a crash and be seen by every replica); an access token and an ID token signed.",
        ),
        Scenario::Introspection => (
            work(1, 0, 1, 0, 0),
            "one request; the client secret checked; the token's signature checked. Nothing written.",
        ),
        Scenario::DevicePolling => (
            work(1, 0, 0, 0, 1),
            "one request; the device code looked up and the time of this poll written, shared by every replica so that `slow_down` holds however polls are spread.",
        ),
    }
}

/// The measured cost of each part.
#[derive(Clone, Copy, Debug)]
pub struct Costs {
    /// The bare handler's rate on the benchmark's connections.
    pub http_rate: f64,
    /// Machine time per HTTP request (1 / `http_rate`).
    pub http: Duration,
    /// The bare handler at half its rate (open loop): the least latency "half the
    /// maximum rate" can show on this machine, load generator included.
    pub http_at_half: AtHalf,
    /// One ES256 signature on one core.
    pub sign: Duration,
    /// One ES256 check on one core.
    pub verify: Duration,
    /// One Argon2id hash with keyward's parameters on one core.
    pub hash: Duration,
    /// One SQLite commit with keyward's pragmas.
    pub sqlite_commit: Duration,
    /// One PostgreSQL commit, when a server was given.
    pub postgres_commit: Option<Duration>,
    /// Cores the work spreads over.
    pub cores: u32,
}

/// A run at half the maximum rate: its rate and latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct AtHalf {
    /// Requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Costs {
    /// The floor of `work` in iterations per second, with commits on SQLite or on
    /// PostgreSQL.
    pub fn floor(&self, work: Work, postgres: bool) -> Option<f64> {
        let commit = if postgres {
            self.postgres_commit?
        } else {
            self.sqlite_commit
        };
        let crypto = self.sign * work.signs + self.verify * work.verifies + self.hash * work.hashes;
        let per_iteration =
            self.http * work.trips + crypto / self.cores.max(1) + commit * work.commits;
        Some(1.0 / per_iteration.as_secs_f64())
    }

    /// One line for the report: what each part cost.
    pub fn describe(&self) -> String {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        format!(
            "bare HTTP handler {:.0} requests/s ({} of the machine per request); ES256 sign {} and verify {} per core; Argon2id {:.1} ms per core; commit of one small insert: SQLite (WAL, synchronous NORMAL) {} ({:.0}/s){}; {} cores",
            self.http_rate,
            us(self.http),
            us(self.sign),
            us(self.verify),
            self.hash.as_secs_f64() * 1000.0,
            us(self.sqlite_commit),
            1.0 / self.sqlite_commit.as_secs_f64(),
            self.postgres_commit.map_or(String::new(), |c| format!(
                ", PostgreSQL {} ({:.0}/s)",
                us(c),
                1.0 / c.as_secs_f64()
            )),
            self.cores
        )
    }
}

/// Measures every part: the bare handler under `load`, the crypto and the commits.
pub async fn measure(load: Load, argon: Duration, postgres: Option<&str>) -> anyhow::Result<Costs> {
    crate::say("floor: a bare HTTP handler, ES256, commits");
    let http = bare_http(load).await?;
    let half = Load {
        pace: Pace::Rate(http.rate / 2.0),
        ..load
    };
    let http_at_half = bare_http(half).await?;
    let http_at_half = AtHalf {
        rate: http_at_half.rate,
        p50: http_at_half.p50,
        p99: http_at_half.p99,
    };
    let (sign, verify) = tokio::task::spawn_blocking(es256_costs)
        .await
        .context("ES256 timing panicked")??;
    let sqlite_commit = sqlite_commit().await?;
    let postgres_commit = match postgres {
        Some(url) => Some(postgres_commit(url).await?),
        None => None,
    };
    let cores =
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
    Ok(Costs {
        http_rate: http.rate,
        http: Duration::from_secs_f64(1.0 / http.rate.max(1.0)),
        http_at_half,
        sign,
        verify,
        hash: argon,
        sqlite_commit,
        postgres_commit,
        cores,
    })
}

/// The bare handler's rate: a form posted, a fixed answer read.
async fn bare_http(load: Load) -> anyhow::Result<Stats> {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(|body: bytes::Bytes| async move {
            // The body is read (and looked at) as a server must.
            let _ = body.len();
            ([("content-type", "application/json")], "{\"ok\":true}")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let stats = run(
        load.connections,
        load.stop,
        load.pace,
        move |_| Conn::new(addr),
        |mut conn: Conn| async move {
            let result = conn
                .post(
                    "/token",
                    &[],
                    "grant_type=client_credentials&scope=api%3Aread".into(),
                )
                .await
                .and_then(|reply| match reply.status {
                    StatusCode::OK => Ok(()),
                    other => Err(anyhow::anyhow!("bare handler answered {other}")),
                });
            (conn, result)
        },
    )
    .await;
    server.abort();
    if stats.errors > 0 || stats.rate <= 0.0 {
        anyhow::bail!("the bare handler failed: {:?}", stats.first_error);
    }
    Ok(stats)
}

/// The median time of `f` over rounds of `batch` calls for about half a second.
fn median_of(batch: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(500) || times.len() < 5 {
        let at = Instant::now();
        for _ in 0..batch {
            f()?;
        }
        times.push(at.elapsed() / batch);
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

/// ES256 sign and verify of a token-sized message, on this thread.
fn es256_costs() -> anyhow::Result<(Duration, Duration)> {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| anyhow::anyhow!("generate a key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("load the key"))?;
    let message = vec![b'x'; 320];
    let sign = median_of(100, || {
        pair.sign(&rng, &message)
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("sign"))
    })?;
    let sig = pair
        .sign(&rng, &message)
        .map_err(|_| anyhow::anyhow!("sign"))?;
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        pair.public_key().as_ref().to_vec(),
    );
    let verify = median_of(100, || {
        public
            .verify(&message, sig.as_ref())
            .map_err(|_| anyhow::anyhow!("verify"))
    })?;
    Ok((sign, verify))
}

/// Inserts rows of 64 bytes on the connection `$db` with `$sql` (id, bytes), each its
/// own transaction, for [`COMMIT_TIMING`]; the median time per commit over rounds of
/// [`COMMITS_PER_ROUND`]. A macro: the two drivers' connections share no trait to write
/// this once as a function.
macro_rules! timed_commits {
    ($db:expr, $sql:expr) => {{
        let row = vec![7_u8; 64];
        let mut rounds = Vec::new();
        let mut id: i64 = 0;
        let started = Instant::now();
        while started.elapsed() < COMMIT_TIMING || rounds.len() < 5 {
            let at = Instant::now();
            for _ in 0..COMMITS_PER_ROUND {
                id += 1;
                sqlx::query($sql)
                    .bind(id)
                    .bind(&row)
                    .execute(&mut $db)
                    .await?;
            }
            rounds.push(at.elapsed() / COMMITS_PER_ROUND);
        }
        rounds.sort_unstable();
        rounds[rounds.len() / 2]
    }};
}

/// Rounds of this many commits are timed.
const COMMITS_PER_ROUND: u32 = 50;
/// How long commits are timed.
const COMMIT_TIMING: Duration = Duration::from_secs(1);

/// The time of one commit of one small insert on SQLite with keyward's pragmas (the
/// median over rounds of [`COMMITS_PER_ROUND`] for [`COMMIT_TIMING`]).
async fn sqlite_commit() -> anyhow::Result<Duration> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let dir = std::env::temp_dir().join(format!(
        "keyward-floor-{}",
        keyward_proto::secret::random_urlsafe(6)
    ));
    std::fs::create_dir_all(&dir)?;
    let options = SqliteConnectOptions::new()
        .filename(dir.join("floor.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let mut db = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("CREATE TABLE floor (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        .execute(&mut db)
        .await?;
    let cost = timed_commits!(db, "INSERT INTO floor (id, v) VALUES (?1, ?2)");
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(cost)
}

/// The same on PostgreSQL (a temporary table; the server's own `synchronous_commit`).
async fn postgres_commit(url: &str) -> anyhow::Result<Duration> {
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .context("connect to PostgreSQL")?;
    sqlx::query("CREATE TEMPORARY TABLE floor (id BIGINT PRIMARY KEY, v BYTEA NOT NULL)")
        .execute(&mut db)
        .await?;
    Ok(timed_commits!(
        db,
        "INSERT INTO floor (id, v) VALUES ($1, $2)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor adds what the work needs: trips at HTTP cost, crypto spread over the
    /// cores, commits in series.
    #[test]
    fn the_floor_adds_the_parts() {
        let costs = Costs {
            http_rate: 10_000.0,
            http: Duration::from_micros(100),
            http_at_half: AtHalf::default(),
            sign: Duration::from_micros(40),
            verify: Duration::from_micros(60),
            hash: Duration::from_millis(20),
            sqlite_commit: Duration::from_micros(50),
            postgres_commit: None,
            cores: 2,
        };
        let (refresh, _) = minimal_work(Scenario::RefreshRotation);
        // 100 + (2 × 40) / 2 + 50 = 190 µs.
        let floor = costs.floor(refresh, false).unwrap_or_default();
        assert!((floor - 1e6 / 190.0).abs() < 0.5, "{floor}");
        assert_eq!(costs.floor(refresh, true), None);
        let (login, _) = minimal_work(Scenario::PasswordLogin);
        // 300 + 20000 / 2 + 100 = 10400 µs.
        let floor = costs.floor(login, false).unwrap_or_default();
        assert!((floor - 1e6 / 10_400.0).abs() < 0.01, "{floor}");
    }
}
