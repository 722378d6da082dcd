//! keyward's benchmark harness, in one command:
//!
//! ```text
//! cargo run --release -p keyward-bench -- all      # keyward vs oidc-provider, ~8 minutes
//! cargo run --release -p keyward-bench -- smoke    # keyward only, a few seconds each (CI)
//! cargo run --release -p keyward-bench -- guard    # keyward guard vs the service alone
//! cargo run --release -p keyward-bench -- crash    # kill -9 under load, on SQLite and PostgreSQL
//! cargo run --release -p keyward-bench -- contention  # concurrent refreshes and reuses
//! cargo run --release -p keyward-bench -- replicas # 3 replicas, one killed, keys rotated
//! cargo run --release -p keyward-bench -- outage   # PostgreSQL away; SQLite disk full
//! cargo run --release -p keyward-bench -- soak     # 30 minutes of mixed load, sampled
//! cargo run --release -p keyward-bench -- flood    # hostile requests by the thousand; RSS after
//! ```
//!
//! `crash`, `contention`, `replicas`, `outage`, `soak` and `flood` check promises rather
//! than measure speed ([`crash`], [`contention`], [`replicas`], [`outage`], [`soak`],
//! [`flood`]); they print a Markdown table and exit non-zero on any violation.
//!
//! It builds keyward in release mode, starts it on a fresh SQLite database (then on a
//! fresh PostgreSQL database, as one replica and as two), measures each scenario's
//! floor ([`floor`]), installs and starts the peer
//! (oidc-provider 9 from npm, `bench/peer/`) with the same client, user and scopes,
//! runs every scenario against both in the same run, one server at a time, and prints
//! a Markdown table: rate, p50 and p99 latency, errors, peak RSS, the server's CPU
//! time per iteration, the load generator's share of the cores, and the ratios
//! keyward/peer of rate and of CPU per iteration. Results are ratios on purpose: the
//! machines are shared and noisy.
//! Everything listens on 127.0.0.1 and every run stops by itself.

mod contention;
mod crash;
mod flood;
mod floor;
mod guard;
mod load;
mod outage;
mod proxy;
mod replicas;
mod scale;
mod scenario;
mod soak;
mod target;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use sqlx::Connection as _;

use crate::load::{Conn, Pace, Stats, Stop};
use crate::scenario::{Load, Scenario};
use crate::target::{Credentials, Server, Site, cpu_of, rss_of};

/// Benchmark keyward against oidc-provider from npm, scenario by scenario.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// `all`: keyward (SQLite, then PostgreSQL, one replica and two) against the peer,
    /// full length, with each scenario's floor. `smoke`: keyward on SQLite only, a few seconds per scenario, failing
    /// on any error (what CI runs). `guard`: keyward guard in front of a bare service
    /// against the service alone, and idle WebSockets held through it. `crash`: keyward
    /// killed with SIGKILL at random moments under code flows and refresh rotations,
    /// restarted on the same database; then no chain broken, no code or token accepted
    /// twice, no 5xx, `keyward store check` consistent. `contention`: concurrent
    /// refreshes of distinct grants, and concurrent reuses of one rotated token.
    /// `replicas`: three keyward on one PostgreSQL behind a round-robin balancer, one
    /// killed with SIGKILL mid-load, the signing keys rotated; flows fail at most once,
    /// every replica signs with the new key within its cache interval. `outage`:
    /// PostgreSQL away for 10 s under load (fast JSON 503s, /readyz 503, recovery
    /// without a restart), and SQLite on a full tmpfs (503, nothing committed lost;
    /// needs root). `soak`: 30 minutes of paced, mixed load (every flow, a tenth of the requests
    /// failing on purpose) on keyward with short lifetimes, its RSS, open descriptors,
    /// database size and rows sampled every 10 s and plotted; then no 5xx, no unexpected
    /// answer, no growth, expired rows kept bounded by housekeeping, `keyward store
    /// check` consistent. `flood`: 200 connections at once sending forms and queries of
    /// 10,000 parameters, 99 large headers, a 16 KiB header, 10 MB bodies; every answer a
    /// 4xx, and keyward's RSS back near where it was 40 s later. `scale`: the store
    /// filled directly with each of `--sizes` grants (with refresh tokens), then
    /// refresh_rotation, introspection and the code flow measured on it (rate, p99, RSS,
    /// size on disk, against the empty store); then `--expired` expired grants deleted by
    /// one housekeeping pass while refresh rotations run (the pass's length, p99 during
    /// it). Not in CI: ten million grants take a few minutes to fill.
    #[arg(value_enum)]
    mode: Mode,
    /// Seconds measured per scenario (after a one-second warm-up). Default: 10 (all),
    /// 2 (smoke), 30 (crash: the load, with the kills inside it), 1800 (soak: the load;
    /// the growth verdicts need 24 minutes, the housekeeping one 11, shorter runs skip
    /// them and say so).
    #[arg(long)]
    seconds: Option<u64>,
    /// `crash`: how many times keyward is killed in each run.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// `crash`, `replicas`, `outage`, `soak`: concurrent clients, each with its own
    /// session and grants. Default: 20 (crash, replicas, outage), 16 (soak).
    #[arg(long)]
    clients: Option<usize>,
    /// `soak`: requests per second, all clients together (a shared pace, so that the
    /// machine keeps room for other work).
    #[arg(long, default_value_t = 120.0)]
    rate: f64,
    /// `crash`, `contention`, `outage`, `soak`: the databases, comma-separated (a fresh
    /// one per run; a PostgreSQL database is created on --postgres and dropped).
    /// Default: sqlite,postgres (crash, contention, outage), sqlite (soak).
    #[arg(long, value_enum, value_delimiter = ',')]
    database: Vec<Database>,
    /// `scale`: the store sizes measured, in grants (each with a refresh token),
    /// comma-separated; 0 is the empty store the others are compared with.
    #[arg(long, value_delimiter = ',', default_value = "0,1000000,10000000")]
    sizes: Vec<u64>,
    /// `scale`: expired grants (each with a refresh token) deleted by the housekeeping
    /// pass measured on the largest store.
    #[arg(long, default_value_t = 1_000_000)]
    expired: u64,
    /// `crash`: runs per database.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// `crash`, `soak`: the seed of the kill moments and the clients' choices in the
    /// first run (each further run adds one). Default: random, printed.
    #[arg(long)]
    seed: Option<u64>,
    /// `contention`: concurrent refreshes of distinct grants.
    #[arg(long, default_value_t = 200)]
    refreshes: usize,
    /// `contention`: concurrent reuses of one rotated refresh token.
    #[arg(long, default_value_t = 50)]
    reuses: usize,
    /// Concurrent connections per scenario.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Only these scenarios (comma-separated): client_credentials, sso_code_flow,
    /// password_login, refresh_rotation, introspection, device_polling.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Pending device authorizations polled. Default: 10000 (all), 1000 (smoke).
    #[arg(long)]
    pending_devices: Option<usize>,
    /// Idle WebSockets held through the guard (`guard`; fewer when the open-file limit
    /// does not allow them).
    #[arg(long, default_value_t = 10_000)]
    websockets: usize,
    /// Active refresh tokens stored before the memory reading. Default: 100000 (all),
    /// 2000 (smoke).
    #[arg(long)]
    refresh_tokens: Option<u64>,
    /// Idle keep-alive connections held open for the memory reading. Default: 10000
    /// (all), 1000 (smoke); fewer when the open-file limit does not allow them.
    #[arg(long)]
    idle_connections: Option<usize>,
    /// PostgreSQL server for the PostgreSQL row (a database is created and dropped).
    #[arg(
        long,
        env = "KEYWARD_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Skip the PostgreSQL row.
    #[arg(long)]
    no_postgres: bool,
    /// Skip the peer (keyward only).
    #[arg(long)]
    no_peer: bool,
    /// Use this keyward binary instead of building one.
    #[arg(long)]
    keyward: Option<PathBuf>,
    /// Also write the report to this file. `soak`: the directory for report.md,
    /// samples.csv and soak.svg (default: bench/results/soak-<database>-<UTC date>/, with
    /// -2, -3, … when taken).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    All,
    Smoke,
    Guard,
    Crash,
    Contention,
    Replicas,
    Outage,
    Soak,
    Flood,
    Scale,
}

/// A database keyward runs on in the fault modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Database {
    Sqlite,
    Postgres,
}

impl Database {
    fn name(self) -> &'static str {
        match self {
            Database::Sqlite => "SQLite",
            Database::Postgres => "PostgreSQL",
        }
    }

    /// Its name in paths: `sqlite`, `postgres`.
    fn slug(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres => "postgres",
        }
    }
}

/// The databases `--database` names, or the mode's default.
fn databases(args: &Args) -> Vec<Database> {
    match (args.database.is_empty(), args.mode) {
        (false, _) => args.database.clone(),
        (true, Mode::Soak | Mode::Scale) => vec![Database::Sqlite],
        (true, _) => vec![Database::Sqlite, Database::Postgres],
    }
}

/// One row of the report.
struct Row {
    scenario: String,
    server: String,
    stats: Stats,
    peak_rss: Option<u64>,
    /// Rate ratio keyward/peer, on keyward's rows.
    ratio: Option<f64>,
    /// The server's CPU time (all threads) per completed iteration.
    cpu: Option<Duration>,
    /// The peer's CPU per iteration over keyward's, on keyward's rows.
    cpu_ratio: Option<f64>,
    /// The share of the cores the load generator used meanwhile.
    load_cores: Option<f64>,
    /// keyward's rate over the scenario's floor ([`floor`]), on keyward's rows.
    of_floor: Option<f64>,
}

/// What one measured run saw besides its [`Stats`].
struct Usage {
    /// The server's peak RSS.
    peak_rss: Option<u64>,
    /// The server's CPU time per completed iteration.
    cpu: Option<Duration>,
    /// The share of the machine's cores the load generator (this process) used.
    load_cores: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Interrupted or terminated, the bench future is dropped, and with it the servers
    // it started (their processes are killed on drop).
    let run = async {
        tokio::select! {
            result = bench(args) => result,
            signal = interrupted() => Err(anyhow::anyhow!("stopped by {signal}")),
        }
    };
    match runtime.block_on(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM; names the signal.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// The workspace root (this crate lives in `crates/keyward-bench`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn say(text: impl AsRef<str>) {
    eprintln!("» {}", text.as_ref());
}

/// How big a run is: the mode's defaults, overridden by the flags given.
struct Plan {
    seconds: u64,
    pending_devices: usize,
    refresh_tokens: u64,
    idle_connections: usize,
    with_peer: bool,
    with_postgres: bool,
}

impl Plan {
    fn of(args: &Args) -> Self {
        let smoke = args.mode == Mode::Smoke;
        Plan {
            seconds: args.seconds.unwrap_or(if smoke { 2 } else { 10 }),
            pending_devices: args
                .pending_devices
                .unwrap_or(if smoke { 1_000 } else { 10_000 }),
            refresh_tokens: args
                .refresh_tokens
                .unwrap_or(if smoke { 2_000 } else { 100_000 }),
            idle_connections: args
                .idle_connections
                .unwrap_or(if smoke { 1_000 } else { 10_000 }),
            with_peer: !smoke && !args.no_peer,
            with_postgres: !smoke && !args.no_postgres,
        }
    }
}

/// The keyward binary to measure: the one named, or a fresh release build.
fn keyward_binary(named: Option<&Path>) -> anyhow::Result<PathBuf> {
    match named {
        Some(path) => std::fs::canonicalize(path)
            .with_context(|| format!("no keyward binary at {}", path.display())),
        None => build_keyward(),
    }
}

/// Runs the benchmarks; `Ok(false)` when a smoke run saw errors.
async fn bench(args: Args) -> anyhow::Result<bool> {
    if matches!(args.mode, Mode::Crash | Mode::Contention) {
        return faults(&args).await;
    }
    if matches!(args.mode, Mode::Replicas | Mode::Outage) {
        return replicas_and_outages(&args).await;
    }
    if args.mode == Mode::Soak {
        return soak_runs(&args).await;
    }
    if args.mode == Mode::Flood {
        return flood_run(&args).await;
    }
    if args.mode == Mode::Scale {
        return scale_runs(&args).await;
    }
    if args.mode == Mode::Guard {
        let exe = keyward_binary(args.keyward.as_deref())?;
        let plan = guard::GuardPlan {
            seconds: args.seconds.unwrap_or(10),
            connections: args.connections,
            websockets: args.websockets,
        };
        let report = guard::bench(&exe, plan).await?;
        println!("{report}");
        if let Some(out) = &args.out {
            std::fs::write(out, &report).with_context(|| format!("write {}", out.display()))?;
        }
        return Ok(true);
    }
    let plan = Plan::of(&args);
    let scenarios = chosen_scenarios(&args.only)?;
    let load = Load {
        connections: args.connections,
        stop: Stop::After(Duration::from_secs(plan.seconds)),
        pace: Pace::Closed,
        pending_devices: plan.pending_devices,
    };
    let exe = keyward_binary(args.keyward.as_deref())?;
    let peer_dir = workspace().join("bench/peer");
    if plan.with_peer {
        install_peer(&peer_dir)?;
    }
    let argon = argon2_cost();
    let credentials = Credentials::generate();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut half_rate: Vec<(String, Stats)> = Vec::new();
    // The floors, measured in this run, right before keyward.
    let postgres_for_floor = plan.with_postgres.then_some(args.postgres.as_str());
    let costs = match floor::measure(load, argon.1, postgres_for_floor).await {
        Ok(costs) => costs,
        Err(e) if postgres_for_floor.is_some() => {
            notes.push(format!("PostgreSQL commit floor skipped: {e:#}"));
            floor::measure(load, argon.1, None).await?
        }
        Err(e) => return Err(e.context("measuring the floors")),
    };

    // keyward on SQLite: memory idle and with many refresh tokens stored (first, so
    // that no scenario's peak is in the reading), then every scenario, each followed by
    // latency at half its maximum rate.
    let server = Server::keyward(&exe, None, &credentials).await?;
    let memory = Memory::measure(
        &server,
        plan.refresh_tokens,
        args.connections,
        plan.idle_connections,
    )
    .await?;
    for &scenario in &scenarios {
        let (full, at_half) = keyward_row(&server, scenario, load).await?;
        rows.push(full);
        half_rate.extend(at_half.map(|stats| (scenario.name().to_owned(), stats)));
    }
    drop(server);

    // The peer, same scenarios.
    let idle_peer = match plan.with_peer {
        true => peer_rows(&peer_dir, &credentials, &scenarios, load, &mut rows).await?,
        false => None,
    };

    // keyward on PostgreSQL: every scenario; then the writing flows on one replica
    // and on two behind a balancer.
    let mut replica_rows = Vec::new();
    if plan.with_postgres {
        match PostgresDb::create(&args.postgres).await {
            Ok(db) => {
                let result = postgres_rows(&exe, &db, &credentials, &scenarios, load).await;
                db.drop().await;
                let (full, half) = result?;
                rows.extend(full);
                half_rate.extend(half);
            }
            Err(e) => notes.push(format!("PostgreSQL rows skipped: {e:#}")),
        }
        let writing: Vec<Scenario> = scenarios
            .iter()
            .copied()
            .filter(|s| {
                matches!(
                    s,
                    Scenario::SsoCodeFlow | Scenario::RefreshRotation | Scenario::DevicePolling
                )
            })
            .collect();
        if !writing.is_empty() {
            match PostgresDb::create(&args.postgres).await {
                Ok(db) => {
                    let result =
                        replicas_on_postgres(&exe, &db, &credentials, &writing, load).await;
                    db.drop().await;
                    replica_rows = result?;
                }
                Err(e) => notes.push(format!("replica rows skipped: {e:#}")),
            }
        }
    }

    set_ratios(&mut rows, &scenarios);
    set_floors(&mut rows, &scenarios, &costs);

    let report = Report {
        args: &args,
        costs: &costs,
        scenarios: &scenarios,
        seconds: plan.seconds,
        pending_devices: plan.pending_devices,
        rows: &rows,
        half_rate: &half_rate,
        argon,
        idle_keyward: memory.idle,
        idle_peer,
        refresh_tokens: memory.stored,
        counted: memory.counted,
        many_keyward: memory.with_tokens,
        with_connections: memory.with_connections,
        replicas: &replica_rows,
        notes: &notes,
    }
    .render();
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("write {}", out.display()))?;
    }
    Ok(report_failures(&rows))
}

/// `crash` or `contention`, on each database asked for: the report, and whether every
/// promise held.
async fn faults(args: &Args) -> anyhow::Result<bool> {
    let exe = keyward_binary(args.keyward.as_deref())?;
    let first_seed = args
        .seed
        .unwrap_or_else(|| rand::Rng::r#gen(&mut rand::rngs::OsRng));
    let mut report = String::new();
    let mut violations = Vec::new();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let _ = writeln!(
        report,
        "`cargo run --release -p keyward-bench -- {command}` on {}, {}.\n",
        machine(),
        utc_now()
    );
    if args.mode == Mode::Crash {
        let _ = writeln!(
            report,
            "| run | database | kills | seed | load | rotations | codes redeemed | requests cut by a kill | rotations retried after a cut | codes retried: accepted / refused | back after a kill (mean / max) | chains kept / broken | replays: refused / accepted | left alive by a replay | 5xx / \"locked\" | store problems | result |"
        );
        let _ = writeln!(
            report,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
    } else {
        let _ = writeln!(
            report,
            "| database | refreshes of distinct grants: ok | p50 | p99 | max | reuses of one token: refused | p50 | p99 | max | revocations logged | revoked grants in the store | chain dead | 5xx | \"database is locked\" | store check | result |"
        );
        let _ = writeln!(
            report,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
        );
    }
    let mut run_number = 0;
    for database in databases(args) {
        let runs = if args.mode == Mode::Crash {
            args.runs
        } else {
            1
        };
        for _ in 0..runs {
            run_number += 1;
            let db = match database {
                Database::Sqlite => None,
                Database::Postgres => Some(PostgresDb::create(&args.postgres).await?),
            };
            let url = db.as_ref().map(|db| db.url.as_str());
            let result = match args.mode {
                Mode::Crash => {
                    let plan = crash::CrashPlan {
                        kills: args.kills,
                        clients: args.clients.unwrap_or(20),
                        seconds: args.seconds.unwrap_or(30),
                        seed: first_seed.wrapping_add(run_number - 1),
                    };
                    crash::run(&exe, url, database.name(), plan)
                        .await
                        .map(|run| {
                            crash_row(&mut report, run_number, &run);
                            run.violations
                        })
                }
                _ => {
                    let plan = contention::ContentionPlan {
                        refreshes: args.refreshes,
                        reuses: args.reuses,
                    };
                    contention::run(&exe, url, database.name(), plan)
                        .await
                        .map(|run| {
                            contention_row(&mut report, &run);
                            run.violations
                        })
                }
            };
            if let Some(db) = db {
                db.drop().await;
            }
            for violation in result? {
                violations.push(format!(
                    "{} (run {run_number}): {violation}",
                    database.name()
                ));
            }
        }
    }
    conclude(report, &violations, args.out.as_deref())
}

/// `replicas` or `outage`: the report, and whether every promise held.
async fn replicas_and_outages(args: &Args) -> anyhow::Result<bool> {
    let exe = keyward_binary(args.keyward.as_deref())?;
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut report = String::new();
    let _ = writeln!(
        report,
        "`cargo run --release -p keyward-bench -- {command}` on {}, {}.\n",
        machine(),
        utc_now()
    );
    let mut violations = Vec::new();
    if args.mode == Mode::Replicas {
        let plan = replicas::ReplicaPlan {
            clients: args.clients.unwrap_or(20),
            seconds: args.seconds.unwrap_or(60),
            seed: args
                .seed
                .unwrap_or_else(|| rand::Rng::r#gen(&mut rand::rngs::OsRng)),
        };
        let db = PostgresDb::create(&args.postgres).await?;
        let result = replicas::run(&exe, &db.url, plan).await;
        db.drop().await;
        let run = result?;
        let [p50a, p99a] = run.latency[0];
        let [p50b, p99b] = run.latency[1];
        let _ = writeln!(
            report,
            "| replicas | clients | seconds | seed | steps before / after the kill | requests before / after | p50 / p99 before | p50 / p99 after | steps retried once | failed twice | chains kept / broken | new key signed by the survivors after | new-key tokens accepted / refused elsewhere | restarted replica signs with the new key | 5xx | store problems | result |"
        );
        let _ = writeln!(
            report,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|"
        );
        let adopted = run
            .adopted
            .iter()
            .map(|(replica, after)| match after {
                Some(d) => format!("#{replica}: {:.1} s", d.as_secs_f64()),
                None => format!("#{replica}: never"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            report,
            "| 3 | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} | {} / {} | {adopted} | {} / {} | {} | {} | {} | {} |",
            plan.clients,
            plan.seconds,
            plan.seed,
            run.steps[0],
            run.steps[1],
            run.requests[0],
            run.requests[1],
            ms(p50a),
            ms(p99a),
            ms(p50b),
            ms(p99b),
            run.retried,
            run.failed_twice,
            run.chains[0],
            run.chains[1],
            run.cross_checks[0],
            run.cross_checks[1],
            if run.restarted_signs_new { "yes" } else { "no" },
            run.server_errors,
            run.store_problems,
            if run.violations.is_empty() {
                "pass"
            } else {
                "FAIL"
            },
        );
        violations.extend(run.violations);
    } else {
        let _ = writeln!(
            report,
            "| fault | 200 before / during / after | JSON 503s | slowest answer during the fault | slowest 503 | /readyz 503 after / 200 again after | first token after the fault | chains kept / broken | same process | other 5xx | store problems | result |"
        );
        let _ = writeln!(
            report,
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
        );
        for database in databases(args) {
            let run = match database {
                Database::Postgres => {
                    let db = PostgresDb::create(&args.postgres).await?;
                    let result =
                        outage::postgres_away(&exe, &db.url, args.clients.unwrap_or(20)).await;
                    db.drop().await;
                    result?
                }
                Database::Sqlite => {
                    outage::sqlite_disk_full(&exe, args.clients.unwrap_or(20)).await?
                }
            };
            if let Some(reason) = &run.skipped {
                let _ = writeln!(report, "| {} | skipped: {reason} |||||||||||", run.fault);
            } else {
                let readyz = run.readyz.map_or_else(
                    || "not checked".to_owned(),
                    |(down, up)| format!("{:.1} s / {:.1} s", down.as_secs_f64(), up.as_secs_f64()),
                );
                let _ = writeln!(
                    report,
                    "| {} | {} / {} / {} | {} | {} | {} | {readyz} | {} | {} / {} | {} | {} | {} | {} |",
                    run.fault,
                    run.ok[0],
                    run.ok[1],
                    run.ok[2],
                    run.unavailable,
                    ms(run.slowest_in_fault),
                    ms(run.slowest_503),
                    run.recovered_in.map_or_else(
                        || "never".to_owned(),
                        |d| format!("{:.1} s", d.as_secs_f64())
                    ),
                    run.chains[0],
                    run.chains[1],
                    if run.same_process { "yes" } else { "no" },
                    run.server_errors,
                    run.store_problems,
                    if run.violations.is_empty() {
                        "pass"
                    } else {
                        "FAIL"
                    },
                );
            }
            violations.extend(
                run.violations
                    .into_iter()
                    .map(|v| format!("{}: {v}", run.fault)),
            );
        }
    }
    conclude(report, &violations, args.out.as_deref())
}

/// `scale`, on each database asked for: the reports, and whether every verdict held.
async fn scale_runs(args: &Args) -> anyhow::Result<bool> {
    let exe = keyward_binary(args.keyward.as_deref())?;
    let mut report = String::new();
    let mut ok = true;
    for database in databases(args) {
        let plan = scale::Plan {
            sizes: args.sizes.clone(),
            expired: args.expired,
            load: Load {
                connections: args.connections,
                stop: Stop::After(Duration::from_secs(args.seconds.unwrap_or(10))),
                pace: Pace::Closed,
                pending_devices: 0,
            },
            database,
            postgres: args.postgres.clone(),
        };
        let (text, held) = scale::run(&exe, &plan).await?;
        println!("{text}");
        report.push_str(&text);
        ok &= held;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("write {}", out.display()))?;
    }
    Ok(ok)
}

/// `flood`: the report, and whether every promise held.
async fn flood_run(args: &Args) -> anyhow::Result<bool> {
    let exe = keyward_binary(args.keyward.as_deref())?;
    let run = flood::run(&exe).await?;
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut report = String::new();
    let _ = writeln!(
        report,
        "`cargo run --release -p keyward-bench -- {command}` on {}, {}: {} connections at once per kind.\n",
        machine(),
        utc_now(),
        flood::CONNECTIONS
    );
    let _ = writeln!(
        report,
        "| request | answers (all rounds) | unanswered | RSS after it (highest) |"
    );
    let _ = writeln!(report, "|---|---|---:|---:|");
    for kind in &run.kinds {
        let answers = kind
            .statuses
            .iter()
            .map(|(code, n)| format!("{n} × {code}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            report,
            "| {} | {answers} | {} | {} |",
            kind.name,
            kind.unanswered,
            mib(kind.rss_after)
        );
    }
    let settled = run
        .settled
        .iter()
        .map(|rss| mib(*rss))
        .collect::<Vec<_>>()
        .join(", then ");
    let _ = writeln!(
        report,
        "\nThe flood ran {} times. RSS before it {}, at its peak {}, {} s after each round {settled} (allowed: at most {} MiB above the start after any round, and the last at most {} MiB above the first).",
        flood::ROUNDS,
        mib(run.rss[0]),
        mib(run.rss[1]),
        flood::SETTLE.as_secs(),
        flood::SLACK_MIB,
        flood::CREEP_MIB
    );
    conclude(report, &run.violations, args.out.as_deref())
}

/// `soak` on each database asked for: runs it, writes report.md, samples.csv and
/// soak.svg, prints the report; whether every verdict held.
async fn soak_runs(args: &Args) -> anyhow::Result<bool> {
    let exe = keyward_binary(args.keyward.as_deref())?;
    let first_seed = args
        .seed
        .unwrap_or_else(|| rand::Rng::r#gen(&mut rand::rngs::OsRng));
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let databases = databases(args);
    let mut passed = true;
    for (number, &database) in (0u64..).zip(&databases) {
        let plan = soak::SoakPlan {
            seconds: args.seconds.unwrap_or(1800),
            rate: args.rate,
            clients: args.clients.unwrap_or(16),
            sample_every: Duration::from_secs(10),
            seed: first_seed.wrapping_add(number),
        };
        let db = match database {
            Database::Sqlite => None,
            Database::Postgres => Some(PostgresDb::create(&args.postgres).await?),
        };
        let when = utc_now();
        let url = db.as_ref().map(|db| db.url.as_str());
        let result = soak::run(&exe, url, database.name(), plan).await;
        if let Some(db) = db {
            db.drop().await;
        }
        let run = result?;
        let dir = match &args.out {
            Some(out) if databases.len() == 1 => out.clone(),
            Some(out) => out.join(database.slug()),
            None => fresh_dir(&format!(
                "soak-{}-{}",
                database.slug(),
                when.get(..10).unwrap_or("undated")
            )),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let report = soak::report::render(&run, &command, &machine(), &when);
        let files = [
            ("report.md", report.clone()),
            ("samples.csv", soak::csv(&run.samples)),
            (
                "soak.svg",
                soak::svg::render(&soak::report::chart(&run, &when)),
            ),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
        println!("{report}");
        say(format!(
            "report.md, samples.csv and soak.svg in {}",
            dir.display()
        ));
        passed &= run.passed();
    }
    Ok(passed)
}

/// bench/results/`name`, or `name`-2, -3, … when that is taken.
fn fresh_dir(name: &str) -> PathBuf {
    let root = workspace();
    let results = std::fs::canonicalize(&root)
        .unwrap_or(root)
        .join("bench/results");
    let mut dir = results.join(name);
    let mut n = 2;
    while dir.exists() {
        dir = results.join(format!("{name}-{n}"));
        n += 1;
    }
    dir
}

/// Ends a fault mode's report with its verdict (every promise held, or the violations
/// listed), prints it, writes it to `out` when asked; whether every promise held.
fn conclude(mut report: String, violations: &[String], out: Option<&Path>) -> anyhow::Result<bool> {
    if violations.is_empty() {
        let _ = writeln!(report, "\nEvery promise held.");
    } else {
        let _ = writeln!(report, "\nViolations:\n");
        for violation in violations {
            let _ = writeln!(report, "- {violation}");
        }
    }
    println!("{report}");
    if let Some(out) = out {
        std::fs::write(out, &report).with_context(|| format!("write {}", out.display()))?;
    }
    Ok(violations.is_empty())
}

fn crash_row(out: &mut String, number: u64, run: &crash::CrashRun) {
    let restarts = &run.restarts;
    let mean = match restarts.len() {
        0 => Duration::ZERO,
        n => restarts.iter().sum::<Duration>() / u32::try_from(n).unwrap_or(1),
    };
    let max = restarts.iter().max().copied().unwrap_or_default();
    let _ = writeln!(
        out,
        "| {number} | {} | {} | {} | {:.0} s | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} / {} | {} | {} |",
        run.database,
        run.kills,
        run.seed,
        run.load.as_secs_f64(),
        run.rotations,
        run.codes,
        run.cut,
        run.rotations_retried,
        run.codes_retried_accepted,
        run.codes_retried_refused,
        ms(mean),
        ms(max),
        run.chains_kept,
        run.chains_broken,
        run.replays - run.accepted_twice,
        run.accepted_twice,
        run.survived_reuse,
        run.server_errors,
        run.locked,
        run.store_problems,
        if run.passed() { "pass" } else { "FAIL" },
    );
}

fn contention_row(out: &mut String, run: &contention::ContentionRun) {
    let [p50, p99, max] = run.refresh_latency;
    let [r50, r99, rmax] = run.reuse_latency;
    let _ = writeln!(
        out,
        "| {} | {}/{} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        run.database,
        run.refreshed,
        run.refreshes,
        ms(p50),
        ms(p99),
        ms(max),
        run.reuses_refused,
        run.reuses,
        ms(r50),
        ms(r99),
        ms(rmax),
        run.revocations_logged,
        run.revoked_in_store,
        if run.chain_dead { "yes" } else { "NO" },
        run.server_errors,
        run.locked,
        if run.store_consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        },
        if run.passed() { "pass" } else { "FAIL" },
    );
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The date and time now, UTC, to the minute.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    keyward_server::domain::utc_text(i64::try_from(secs).unwrap_or_default())
}

/// keyward's resident memory idle and with many refresh tokens stored.
struct Memory {
    idle: Option<u64>,
    with_tokens: Option<u64>,
    /// The RSS with idle keep-alive connections open, and how many.
    with_connections: (Option<u64>, usize),
    /// How many refresh tokens were stored through the token endpoint.
    stored: u64,
    /// How many active refresh tokens the SQLite file holds afterwards (a check on `stored`).
    counted: Option<i64>,
}

impl Memory {
    /// Reads memory before any scenario runs, so that no scenario's peak is in it.
    async fn measure(
        server: &Server,
        refresh_tokens: u64,
        connections: usize,
        idle_connections: usize,
    ) -> anyhow::Result<Self> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = server.rss();
        let stored = store_refresh_tokens(server, refresh_tokens, connections).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let with_tokens = server.rss();
        let counted = match server.sqlite_file() {
            Some(file) => active_refresh_tokens(&file).await.ok(),
            None => None,
        };
        let with_connections = with_idle_connections(server, idle_connections).await?;
        Ok(Memory {
            idle,
            with_tokens,
            with_connections,
            stored,
            counted,
        })
    }
}

/// Opens `wanted` keep-alive connections (fewer when this process may not open that
/// many files), each answered once (`/healthz`) and then left idle, and reads keyward's
/// RSS with them open. Returns the RSS and how many were held.
async fn with_idle_connections(
    server: &Server,
    wanted: usize,
) -> anyhow::Result<(Option<u64>, usize)> {
    let limit = guard::open_file_limit().unwrap_or(1024);
    let count = wanted.min(usize::try_from(limit.saturating_sub(256)).unwrap_or(wanted));
    say(format!(
        "holding {count} idle keep-alive connections to keyward"
    ));
    let mut held = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(batch.iter().map(|_| async {
            let mut conn = Conn::new(server.site.addr);
            conn.get("/healthz", &[]).await.map(|_| conn)
        }))
        .await;
        for conn in opened {
            held.push(conn.context("an idle connection")?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss();
    drop(held);
    Ok((rss, count))
}

/// Runs every scenario against the peer, adding its rows; returns the peer's idle memory.
async fn peer_rows(
    peer_dir: &Path,
    credentials: &Credentials,
    scenarios: &[Scenario],
    load: Load,
    rows: &mut Vec<Row>,
) -> anyhow::Result<Option<u64>> {
    let peer = Server::peer(peer_dir, credentials).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = peer.rss();
    for &scenario in scenarios {
        let (stats, usage) = measured(&peer, scenario, load).await?;
        rows.push(row(scenario, &peer.site, stats, usage));
    }
    Ok(idle)
}

/// One scenario on keyward: the row at full rate and, for the scenarios whose latency
/// matters, the latency at half of it.
async fn keyward_row(
    server: &Server,
    scenario: Scenario,
    load: Load,
) -> anyhow::Result<(Row, Option<Stats>)> {
    let (stats, usage) = measured(server, scenario, load).await?;
    let mut at_half = None;
    if matches!(
        scenario,
        Scenario::ClientCredentials
            | Scenario::SsoCodeFlow
            | Scenario::RefreshRotation
            | Scenario::Introspection
    ) && stats.rate > 0.0
    {
        let half = Load {
            pace: Pace::Rate(stats.rate / 2.0),
            ..load
        };
        at_half = Some(measured(server, scenario, half).await?.0);
    }
    Ok((row(scenario, &server.site, stats, usage), at_half))
}

/// keyward on PostgreSQL, every scenario: the rows at full rate, and the latency at
/// half of it for the scenarios that measure it.
async fn postgres_rows(
    exe: &Path,
    db: &PostgresDb,
    credentials: &Credentials,
    scenarios: &[Scenario],
    load: Load,
) -> anyhow::Result<(Vec<Row>, Vec<(String, Stats)>)> {
    let server = Server::keyward(exe, Some(&db.url), credentials).await?;
    let mut rows = Vec::new();
    let mut half_rate = Vec::new();
    // Not password_login: Argon2id bounds it whatever the database, and 32 parallel
    // sign-ins to one account from one address meet the password throttle, which counts
    // attempts before checking them (on PostgreSQL one in ~750 was refused with 429).
    for &scenario in scenarios.iter().filter(|s| **s != Scenario::PasswordLogin) {
        let (full, at_half) = keyward_row(&server, scenario, load).await?;
        rows.push(full);
        half_rate.extend(at_half.map(|stats| (format!("{} (PostgreSQL)", scenario.name()), stats)));
    }
    Ok((rows, half_rate))
}

/// A writing flow on one keyward replica and on two, on one PostgreSQL database,
/// behind the harness's balancer either way (so that both pay for it).
struct ReplicaRow {
    scenario: Scenario,
    /// Iterations per second on one replica, and on two.
    rates: [f64; 2],
    /// Errors on one, on two.
    errors: [u64; 2],
    /// The share of the machine's cores PostgreSQL's processes used, and the replicas'.
    postgres_share: [Option<f64>; 2],
    keyward_share: [Option<f64>; 2],
}

/// Runs `scenarios` on one replica, then two, behind [`proxy::Proxy`].
async fn replicas_on_postgres(
    exe: &Path,
    db: &PostgresDb,
    credentials: &Credentials,
    scenarios: &[Scenario],
    load: Load,
) -> anyhow::Result<Vec<ReplicaRow>> {
    let balancer = proxy::Proxy::start(Vec::new()).await?;
    let issuer = format!("http://{}", balancer.addr);
    let first = Server::keyward_replica(exe, &db.url, credentials, &issuer).await?;
    let second = Server::keyward_replica(exe, &db.url, credentials, &issuer).await?;
    let mut site = first.site.clone();
    site.addr = balancer.addr;
    let mut rows = Vec::new();
    for &scenario in scenarios {
        let mut row = ReplicaRow {
            scenario,
            rates: [0.0; 2],
            errors: [0; 2],
            postgres_share: [None; 2],
            keyward_share: [None; 2],
        };
        for (i, replicas) in [vec![&first], vec![&first, &second]]
            .into_iter()
            .enumerate()
        {
            balancer.set_backends(replicas.iter().map(|r| r.site.addr).collect());
            site.label = format!("keyward, {} on PostgreSQL", replicas.len());
            say(format!("{} on {}", scenario.name(), site.label));
            let pids: Vec<u32> = replicas.iter().map(|r| r.pid()).collect();
            let before = (cpu_of_postgres(), cpu_sum(&pids), Instant::now());
            let stats = scenario::measure(&site, scenario, load).await?;
            let wall = before.2.elapsed().as_secs_f64();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let share = |from: Option<Duration>, to: Option<Duration>| match (from, to) {
                (Some(from), Some(to)) => Some((to - from).as_secs_f64() / wall / cores),
                _ => None,
            };
            row.rates[i] = stats.rate;
            row.errors[i] = stats.errors;
            row.postgres_share[i] = share(before.0, cpu_of_postgres());
            row.keyward_share[i] = share(before.1, cpu_sum(&pids));
            eprintln!("  {:.0}/s, {} errors", stats.rate, stats.errors);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The CPU time all processes named `postgres` have used so far (readable in /proc
/// whoever owns them).
fn cpu_of_postgres() -> Option<Duration> {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|name| name.trim() == "postgres");
        if is_postgres && let Some(cpu) = cpu_of(pid) {
            total += cpu;
        }
    }
    Some(total)
}

fn cpu_sum(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|&pid| cpu_of(pid)).sum()
}

/// The scenarios named with `--only`, or all of them.
fn chosen_scenarios(only: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if only.is_empty() {
        return Ok(Scenario::ALL.to_vec());
    }
    only.iter()
        .map(|name| Scenario::from_name(name).with_context(|| format!("unknown scenario {name:?}")))
        .collect()
}

/// Fills in each keyward row's ratios to the peer's row of the same scenario: of the
/// rate, and of the CPU time per iteration.
/// keyward's rate over each scenario's floor, on keyward's rows.
fn set_floors(rows: &mut [Row], scenarios: &[Scenario], costs: &floor::Costs) {
    for row in rows.iter_mut().filter(|r| r.server.starts_with("keyward")) {
        let Some(scenario) = scenarios.iter().find(|s| s.name() == row.scenario) else {
            continue;
        };
        let (work, _) = floor::minimal_work(*scenario);
        let postgres = row.server.contains("PostgreSQL");
        row.of_floor = costs
            .floor(work, postgres)
            .map(|floor| row.stats.rate / floor);
    }
}

fn set_ratios(rows: &mut [Row], scenarios: &[Scenario]) {
    for scenario in scenarios {
        let Some((peer_rate, peer_cpu)) = rows
            .iter()
            .find(|r| r.scenario == scenario.name() && r.server.starts_with("oidc-provider"))
            .map(|r| (r.stats.rate, r.cpu))
        else {
            continue;
        };
        for r in rows
            .iter_mut()
            .filter(|r| r.scenario == scenario.name() && r.server.starts_with("keyward"))
        {
            r.ratio = (peer_rate > 0.0).then(|| r.stats.rate / peer_rate);
            r.cpu_ratio = match (peer_cpu, r.cpu) {
                (Some(peer), Some(own)) if !own.is_zero() => {
                    Some(peer.as_secs_f64() / own.as_secs_f64())
                }
                _ => None,
            };
        }
    }
}

/// Says which rows had errors (or no answer at all); true when none did.
fn report_failures(rows: &[Row]) -> bool {
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.stats.errors > 0 || r.stats.ok == 0)
        .collect();
    for r in &failed {
        eprintln!(
            "error: {} on {}: {} errors, {} ok; first: {}",
            r.scenario,
            r.server,
            r.stats.errors,
            r.stats.ok,
            r.stats.first_error.as_deref().unwrap_or("-")
        );
    }
    failed.is_empty()
}

fn row(scenario: Scenario, site: &Site, stats: Stats, usage: Usage) -> Row {
    Row {
        scenario: scenario.name().into(),
        server: site.label.clone(),
        stats,
        peak_rss: usage.peak_rss,
        ratio: None,
        cpu: usage.cpu,
        cpu_ratio: None,
        load_cores: usage.load_cores,
        of_floor: None,
    }
}

/// Runs a scenario while sampling the server's RSS and the CPU time of the server and
/// of this process every 50 ms; returns the stats and what the samples show over the
/// counted part of the run.
async fn measured(
    server: &Server,
    scenario: Scenario,
    load: Load,
) -> anyhow::Result<(Stats, Usage)> {
    let what = match load.pace {
        Pace::Closed => "as fast as it answers".to_owned(),
        Pace::Rate(rate) => format!("at {rate:.0}/s"),
    };
    say(format!(
        "{} on {}, {what}",
        scenario.name(),
        server.site.label
    ));
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(std::sync::Mutex::new(Vec::<CpuSample>::new()));
    let sampler = {
        let (peak, stop, samples, pid) =
            (peak.clone(), stop.clone(), samples.clone(), server.pid());
        tokio::spawn(async move {
            let me = std::process::id();
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                if let (Some(server), Some(load)) = (cpu_of(pid), cpu_of(me))
                    && let Ok(mut samples) = samples.lock()
                {
                    samples.push(CpuSample {
                        at: Instant::now(),
                        server,
                        load,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let stats = scenario::measure(&server.site, scenario, load).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let stats = stats?;
    if let Some(path) = std::env::var_os("KEYWARD_BENCH_TIMELINE") {
        let mut lines = String::new();
        for (ended, latency) in &stats.timeline {
            let _ = writeln!(lines, "{},{what},{ended},{latency}", scenario.name());
        }
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .with_context(|| format!("write {}", path.to_string_lossy()))?;
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let (cpu, load_cores) = match stats.window {
        Some((from, to)) if stats.ok > 0 => {
            let server = cpu_between(&samples, from, to, |s| s.server);
            let load = cpu_between(&samples, from, to, |s| s.load);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            (
                server.map(|cpu| cpu / u32::try_from(stats.ok).unwrap_or(u32::MAX)),
                load.map(|cpu| cpu.as_secs_f64() / (to - from).as_secs_f64() / cores),
            )
        }
        _ => (None, None),
    };
    eprintln!(
        "  {:.0}/s, p50 {}, p99 {}, {} errors, {} µs of server CPU each{}",
        stats.rate,
        ms(stats.p50),
        ms(stats.p99),
        stats.errors,
        cpu.map_or("?".into(), |c| format!("{:.0}", c.as_secs_f64() * 1e6)),
        stats
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let peak = peak.load(Ordering::Relaxed);
    Ok((
        stats,
        Usage {
            peak_rss: (peak > 0).then_some(peak),
            cpu,
            load_cores,
        },
    ))
}

/// The CPU time of the server and of the load generator at one instant.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    server: Duration,
    load: Duration,
}

/// The CPU time `of` a process used between `from` and `to`, from the samples taken
/// nearest inside that window (so slightly less than the window; scaled up to it).
fn cpu_between(
    samples: &[CpuSample],
    from: Instant,
    to: Instant,
    of: impl Fn(&CpuSample) -> Duration,
) -> Option<Duration> {
    let first = samples.iter().find(|s| s.at >= from)?;
    let last = samples.iter().rev().find(|s| s.at <= to)?;
    let span = last.at.checked_duration_since(first.at)?;
    if span.is_zero() {
        return None;
    }
    let used = of(last).checked_sub(of(first))?;
    Some(used.mul_f64((to - from).as_secs_f64() / span.as_secs_f64()))
}

/// Builds keyward in release mode next to this binary and returns its path.
fn build_keyward() -> anyhow::Result<PathBuf> {
    say("building keyward (release)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "keyward",
            "--bin",
            "keyward",
        ])
        .current_dir(workspace())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release -p keyward failed");
    }
    let exe = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join(format!("keyward{}", std::env::consts::EXE_SUFFIX));
    if !exe.exists() {
        bail!(
            "{} not found (pass --keyward PATH when the bench runs from elsewhere)",
            exe.display()
        );
    }
    Ok(exe)
}

/// `npm ci` in bench/peer unless oidc-provider is there already.
fn install_peer(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(());
    }
    say("installing the peer (npm ci in bench/peer)");
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("cannot run npm (is Node.js installed?)")?;
    if !status.success() {
        bail!("npm ci in {} failed", dir.display());
    }
    Ok(())
}

/// keyward's Argon2id parameters, and the least time one hash took on one core of five
/// (the least: the floor is what the work can cost here, and a busy moment only adds).
fn argon2_cost() -> (String, Duration) {
    let password = keyward_proto::Password::new("correct horse battery staple");
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let _ = keyward_server::password::hash_blocking(&password);
            start.elapsed()
        })
        .collect();
    times.sort();
    (keyward_server::password::parameters(), times[0])
}

/// Stores `count` active refresh tokens in keyward the way clients get them: a code
/// flow with `offline_access` on a signed-in session, redeemed. Returns how many.
async fn store_refresh_tokens(
    server: &Server,
    count: u64,
    connections: usize,
) -> anyhow::Result<u64> {
    say(format!(
        "storing {count} refresh tokens in {} (code flows with offline_access)",
        server.site.label
    ));
    let site = server.site.clone();
    let mut conn = Conn::new(site.addr);
    let mut session = target::Browser::default();
    let (path, _) = site.authorize_path("openid offline_access");
    session.authorize(&mut conn, &site, &path, true).await?;
    let started = Instant::now();
    let addr = site.addr;
    let stats = load::run(
        connections,
        Stop::Count(count),
        Pace::Closed,
        |_| (Conn::new(addr), session.clone()),
        move |(mut conn, mut browser)| {
            let site = site.clone();
            async move {
                let result = async {
                    let tokens = scenario::code_flow(
                        &mut conn,
                        &site,
                        &mut browser,
                        "openid offline_access",
                        false,
                    )
                    .await?;
                    if tokens["refresh_token"].as_str().is_none() {
                        bail!("no refresh token");
                    }
                    Ok(())
                }
                .await;
                ((conn, browser), result)
            }
        },
    )
    .await;
    if stats.errors > 0 {
        bail!(
            "storing refresh tokens: {} errors (first: {})",
            stats.errors,
            stats.first_error.unwrap_or_default()
        );
    }
    eprintln!("  {} in {:.1} s", stats.ok, started.elapsed().as_secs_f64());
    Ok(stats.ok)
}

/// Active (not rotated, not expired) refresh tokens in a keyward SQLite file.
async fn active_refresh_tokens(file: &Path) -> anyhow::Result<i64> {
    let url = format!("sqlite://{}?mode=ro", file.display());
    let mut db = sqlx::SqliteConnection::connect(&url).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL AND expires_at > ?",
    )
    .bind(i64::try_from(now).unwrap_or(i64::MAX))
    .fetch_one(&mut db)
    .await?;
    Ok(n)
}

/// A PostgreSQL database made for one run and dropped after it.
struct PostgresDb {
    admin: String,
    name: String,
    url: String,
}

impl PostgresDb {
    async fn create(admin: &str) -> anyhow::Result<Self> {
        let name = format!(
            "keyward_bench_{}",
            keyward_proto::secret::random_urlsafe(8)
                .to_lowercase()
                .replace('-', "_")
        );
        let mut db = sqlx::PgConnection::connect(admin)
            .await
            .context("cannot connect to PostgreSQL")?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut db)
            .await?;
        let mut url = url::Url::parse(admin)?;
        url.set_path(&name);
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url: url.into(),
        })
    }

    async fn drop(self) {
        if let Ok(mut db) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut db)
            .await;
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

/// Everything the report shows.
struct Report<'a> {
    args: &'a Args,
    costs: &'a floor::Costs,
    scenarios: &'a [Scenario],
    seconds: u64,
    pending_devices: usize,
    rows: &'a [Row],
    half_rate: &'a [(String, Stats)],
    argon: (String, Duration),
    idle_keyward: Option<u64>,
    idle_peer: Option<u64>,
    refresh_tokens: u64,
    counted: Option<i64>,
    many_keyward: Option<u64>,
    with_connections: (Option<u64>, usize),
    replicas: &'a [ReplicaRow],
    notes: &'a [String],
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "## Results\n");
        let _ = writeln!(
            out,
            "`cargo run --release -p keyward-bench -- {command}` on {} — {} s per scenario, {} connections, {} pending device authorizations.\n",
            machine(),
            self.seconds,
            self.args.connections,
            self.pending_devices
        );
        let _ = writeln!(
            out,
            "| scenario | server | requests/s | p50 | p99 | errors | peak RSS | server CPU per iteration | load generator | keyward/peer | CPU, peer/keyward | % of floor |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        self.render_rows(&mut out);
        self.render_floors(&mut out);
        self.render_half_rate(&mut out);
        self.render_replicas(&mut out);
        self.render_memory(&mut out);
        let (params, cost) = &self.argon;
        let _ = writeln!(
            out,
            "\nPassword hashing: {params}, {} per hash on one core (the least of 5). The peer's development login does not hash, so its password_login row is reported, not compared.",
            ms(*cost)
        );
        for note in self.notes {
            let _ = writeln!(out, "\nNote: {note}");
        }
        out
    }

    /// The main table, a row per scenario and server.
    fn render_rows(&self, out: &mut String) {
        for r in self.rows {
            let times = |ratio: Option<f64>| match (ratio, r.scenario.as_str()) {
                (Some(ratio), "password_login") => format!("({ratio:.1}×, not compared)"),
                (Some(ratio), _) => format!("{ratio:.1}×"),
                (None, _) => "".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.server,
                r.stats.rate,
                ms(r.stats.p50),
                ms(r.stats.p99),
                r.stats.errors,
                mib(r.peak_rss),
                r.cpu
                    .map_or("-".into(), |c| format!("{:.0} µs", c.as_secs_f64() * 1e6)),
                r.load_cores
                    .map_or("-".into(), |c| format!("{:.0} %", c * 100.0)),
                times(r.ratio),
                times(r.cpu_ratio),
                r.of_floor
                    .map_or(String::new(), |f| format!("{:.0} %", f * 100.0)),
            );
        }
    }

    /// What each scenario must do at the least, its floor, and keyward against it.
    fn render_floors(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nFloors, measured in this run ([`floor.rs`](crates/keyward-bench/src/floor.rs)): {}.\n",
            self.costs.describe()
        );
        let _ = writeln!(
            out,
            "| scenario | requests | signatures made / checked | Argon2id | commits | floor (iterations/s, SQLite) | keyward | % of floor |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for scenario in self.scenarios {
            let (work, _) = floor::minimal_work(*scenario);
            let floor = self.costs.floor(work, false).unwrap_or_default();
            let keyward = self
                .rows
                .iter()
                .find(|r| r.scenario == scenario.name() && r.server == "keyward");
            let _ = writeln!(
                out,
                "| {} | {} | {} / {} | {} | {} | {floor:.0} | {} | {} |",
                scenario.name(),
                work.trips,
                work.signs,
                work.verifies,
                work.hashes,
                work.commits,
                keyward.map_or("-".into(), |r| format!("{:.0}", r.stats.rate)),
                keyward
                    .and_then(|r| r.of_floor)
                    .map_or("-".into(), |f| format!("{:.0} %", f * 100.0)),
            );
        }
    }

    /// Latency at half the maximum rate.
    fn render_half_rate(&self, out: &mut String) {
        if !self.half_rate.is_empty() {
            let _ = writeln!(
                out,
                "\nkeyward at half its own maximum rate (open loop; latency counted from when each request was due):\n"
            );
            let _ = writeln!(out, "| scenario | rate | p50 | p99 | errors |");
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            let bare = &self.costs.http_at_half;
            let _ = writeln!(
                out,
                "| the floor: bare HTTP handler at half its rate | {:.0}/s | {} | {} | 0 |",
                bare.rate,
                ms(bare.p50),
                ms(bare.p99),
            );
            for (name, s) in self.half_rate {
                let _ = writeln!(
                    out,
                    "| {name} | {:.0}/s | {} | {} | {} |",
                    s.rate,
                    ms(s.p50),
                    ms(s.p99),
                    s.errors
                );
            }
        }
    }

    /// Resident memory idle and with many refresh tokens stored.
    /// The writing flows on one replica and on two.
    fn render_replicas(&self, out: &mut String) {
        if self.replicas.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nWriting flows on one keyward replica and on two, one PostgreSQL database, both behind the harness's TCP balancer; the share of the machine's cores PostgreSQL and the replicas used:\n"
        );
        let _ = writeln!(
            out,
            "| scenario | 1 replica | 2 replicas | 2 / 1 | errors | PostgreSQL's share (1 / 2) | keyward's share (1 / 2) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        let pct = |share: Option<f64>| share.map_or("-".into(), |s| format!("{:.0} %", s * 100.0));
        for r in self.replicas {
            let _ = writeln!(
                out,
                "| {} | {:.0}/s | {:.0}/s | {:.2}× | {} | {} / {} | {} / {} |",
                r.scenario.name(),
                r.rates[0],
                r.rates[1],
                r.rates[1] / r.rates[0].max(1.0),
                r.errors[0] + r.errors[1],
                pct(r.postgres_share[0]),
                pct(r.postgres_share[1]),
                pct(r.keyward_share[0]),
                pct(r.keyward_share[1]),
            );
        }
    }

    fn render_memory(&self, out: &mut String) {
        let _ = writeln!(out, "\nMemory (RSS):\n");
        let _ = writeln!(
            out,
            "- keyward idle after start: {}",
            mib(self.idle_keyward)
        );
        let _ = writeln!(
            out,
            "- keyward with {} refresh tokens issued ({} active in the database): {}",
            self.refresh_tokens,
            self.counted.map_or("?".into(), |n| n.to_string()),
            mib(self.many_keyward)
        );
        let (rss, count) = self.with_connections;
        let _ = writeln!(
            out,
            "- keyward with {count} idle keep-alive connections open as well: {}",
            mib(rss)
        );
        if self.idle_peer.is_some() {
            let _ = writeln!(
                out,
                "- oidc-provider idle after start: {}",
                mib(self.idle_peer)
            );
        }
    }
}

/// The CPU model and count, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} × {cpu}")
}
