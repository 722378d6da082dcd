//! `scale`: how keyward's cost grows with the size of its store. For each size (by
//! default none, then 1 million, then 10 million grants), a fresh database is filled
//! directly (not through HTTP: grants, each with an unused refresh token, spread over
//! one user per ten grants), keyward is started on it, and refresh_rotation,
//! introspection and the code flow run as in `all` (as fast as keyward answers, then
//! at half that rate): rate, p99, RSS, and the database's size on disk. Then, on the
//! largest store, a million expired grants with their refresh tokens are added and
//! keyward restarted with `purge_interval = "15s"`: its first housekeeping pass deletes
//! them while refresh rotations run at half their rate, and the pass's length and the
//! p99 of the requests answered during it are measured (the pass is read from
//! `/metrics`).
//!
//! The verdicts: rate, server CPU per iteration and p99 at half rate within 20 % of the
//! empty store's at every size; keyward's RSS under 64 MiB; every request answered
//! right, during the purge too.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::Connection as _;

use crate::load::{Conn, Pace, Stats, Stop};
use crate::scenario::{Load, Scenario};
use crate::target::{CLIENT_ID, Credentials, Server};
use crate::{Database, PostgresDb, Usage, measured, mib, ms, say};

/// The scenarios whose cost may grow with the store.
const SCENARIOS: [Scenario; 3] = [
    Scenario::RefreshRotation,
    Scenario::Introspection,
    Scenario::SsoCodeFlow,
];

/// Rows written per statement while filling.
const FILL_BATCH: u64 = 200_000;

/// How much slower than on the empty store a size may be (rate and p99).
const TOLERANCE: f64 = 0.20;

/// No housekeeping pass while the sizes are measured.
const QUIET: &str = "purge_interval = \"24h\"";

/// When the measured pass begins, after keyward's start: the load (its setup and
/// warm-up done) runs from well before until well after.
const PASS_AFTER: Duration = Duration::from_secs(15);

/// The most RSS keyward may hold at any size.
const RSS_BOUND: u64 = 64 << 20;

/// What `scale` runs.
pub struct Plan {
    /// Live grants stored, one size after the other (0: the empty store).
    pub sizes: Vec<u64>,
    /// Expired grants the purge pass deletes (each with its refresh token).
    pub expired: u64,
    /// The load of each measurement.
    pub load: Load,
    /// The database keyward runs on.
    pub database: Database,
    /// The PostgreSQL server, for [`Database::Postgres`].
    pub postgres: String,
}

/// One scenario at one size.
struct Measured {
    scenario: Scenario,
    full: Stats,
    usage: Usage,
    half: Stats,
}

/// One size of the store.
struct Size {
    grants: u64,
    fill: Duration,
    on_disk: Option<u64>,
    idle_rss: Option<u64>,
    measured: Vec<Measured>,
}

/// The purge pass under load.
struct Purge {
    grants: u64,
    expired: u64,
    /// Rows the pass deleted, and how long it took (from `/metrics`).
    deleted: u64,
    took: Duration,
    /// How much of the pass the measured load covered.
    covered: Duration,
    rate: f64,
    /// Refresh rotations answered during the pass: how many, p99, longest.
    during: Option<(usize, Duration, Duration)>,
    /// The same at the same rate on the same store without a pass.
    baseline: Duration,
    peak_rss: Option<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs every size, then the purge; the report and whether every verdict held.
pub async fn run(exe: &Path, plan: &Plan) -> anyhow::Result<(String, bool)> {
    let credentials = Credentials::generate();
    let mut sizes = Vec::new();
    let mut purge = None;
    let largest = plan.sizes.iter().copied().max().unwrap_or(0);
    let mut done_largest = false;
    for &grants in &plan.sizes {
        let postgres = match plan.database {
            Database::Postgres => Some(PostgresDb::create(&plan.postgres).await?),
            Database::Sqlite => None,
        };
        let result = async {
            let mut server = Server::keyward_with(
                exe,
                postgres.as_ref().map(|db| db.url.as_str()),
                &credentials,
                QUIET,
            )
            .await?;
            let url = database_url(&server)?;
            server.kill_hard().await?;
            say(format!("filling the store with {grants} grants"));
            let started = Instant::now();
            fill(&url, "live", grants, Expiry::Future).await?;
            let fill = started.elapsed();
            let size = measure_size(&mut server, &url, grants, fill, plan.load).await?;
            let mut purged = None;
            if grants == largest && !done_largest && plan.expired > 0 {
                done_largest = true;
                purged = Some(measure_purge(&mut server, &url, &size, plan).await?);
            }
            anyhow::Ok((size, purged))
        }
        .await;
        if let Some(db) = postgres {
            db.drop().await;
        }
        let (size, purged) = result?;
        sizes.push(size);
        purge = purge.or(purged);
    }
    Ok(report(plan, &sizes, purge.as_ref()))
}

/// The database URL keyward runs on.
fn database_url(server: &Server) -> anyhow::Result<String> {
    server
        .database_url()
        .map(str::to_owned)
        .context("keyward's database URL")
}

/// Starts keyward on the filled store and measures each scenario.
async fn measure_size(
    server: &mut Server,
    url: &str,
    grants: u64,
    fill: Duration,
    load: Load,
) -> anyhow::Result<Size> {
    server.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = server.rss();
    let on_disk = size_on_disk(url).await?;
    let mut measured_rows = Vec::new();
    for scenario in SCENARIOS {
        let (full, usage) = measured(server, scenario, load).await?;
        let half = Load {
            pace: Pace::Rate((full.rate / 2.0).max(1.0)),
            ..load
        };
        let (half, _) = measured(server, scenario, half).await?;
        measured_rows.push(Measured {
            scenario,
            full,
            usage,
            half,
        });
    }
    Ok(Size {
        grants,
        fill,
        on_disk,
        idle_rss,
        measured: measured_rows,
    })
}

/// Adds `plan.expired` expired grants, restarts keyward (whose first housekeeping pass
/// then deletes them) and runs refresh rotations at half their rate meanwhile.
async fn measure_purge(
    server: &mut Server,
    url: &str,
    size: &Size,
    plan: &Plan,
) -> anyhow::Result<Purge> {
    let refresh = size
        .measured
        .iter()
        .find(|m| m.scenario == Scenario::RefreshRotation)
        .context("refresh_rotation was measured")?;
    server.kill_hard().await?;
    say(format!("adding {} expired grants", plan.expired));
    fill(url, "expired", plan.expired, Expiry::Past).await?;
    // The first pass comes one interval after start: the load is running by then.
    let config = server
        .config_file()
        .context("keyward's configuration")?
        .to_owned();
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replace(
            QUIET,
            &format!("purge_interval = \"{}s\"", PASS_AFTER.as_secs()),
        ),
    )?;
    server.restart().await?;
    let addr = server.site.addr;
    // Watch /metrics for the pass's end while the load runs.
    let watcher = tokio::spawn(async move {
        let mut conn = Conn::new(addr);
        let deadline = Instant::now() + Duration::from_secs(900);
        while Instant::now() < deadline {
            if let Ok(reply) = conn.get("/metrics", &[]).await {
                let text = reply.text();
                let deleted = counter(&text, "keyward_purged_rows_total");
                if counter(&text, "keyward_purge_passes_total") >= 1 && deleted > 0 {
                    let took = counter(&text, "keyward_purge_milliseconds_total");
                    return Some((Instant::now(), deleted, Duration::from_millis(took)));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    });
    let rate = refresh.full.rate / 2.0;
    let load = Load {
        pace: Pace::Rate(rate.max(1.0)),
        stop: Stop::After(Duration::from_secs(30)),
        ..plan.load
    };
    // Runs of 30 s, one after the other, until the pass is over.
    let mut runs = Vec::new();
    let mut peak_rss = None;
    let give_up = Instant::now() + Duration::from_secs(900);
    while !watcher.is_finished() && Instant::now() < give_up {
        let (stats, usage) = measured(server, Scenario::RefreshRotation, load).await?;
        peak_rss = peak_rss.max(usage.peak_rss);
        runs.push(stats);
    }
    let (ended, deleted, took) = watcher
        .await
        .context("the /metrics watcher")?
        .context("no purge pass ended within fifteen minutes")?;
    let began = ended.checked_sub(took).unwrap_or(ended);
    let mut during = Vec::new();
    let mut covered = Duration::ZERO;
    let (mut errors, mut first_error) = (0, None);
    for stats in &runs {
        during.extend(stats.latencies_within(began, ended));
        if let Some((from, to)) = stats.window {
            covered += to.min(ended).saturating_duration_since(from.max(began));
        }
        errors += stats.errors;
        first_error = first_error.or_else(|| stats.first_error.clone());
    }
    during.sort_unstable();
    let during = (!during.is_empty()).then(|| {
        let at = |q: f64| {
            let index = ((during.len() as f64 * q).ceil() as usize).clamp(1, during.len()) - 1;
            Duration::from_micros(u64::from(during[index]))
        };
        (during.len(), at(0.99), at(1.0))
    });
    Ok(Purge {
        grants: size.grants,
        expired: plan.expired,
        deleted,
        took,
        covered,
        rate,
        during,
        baseline: refresh.half.p99,
        peak_rss,
        errors,
        first_error,
    })
}

/// A counter's value in Prometheus text (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (series, value) = line.split_once(' ')?;
            (series == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// When filled grants expire.
#[derive(Clone, Copy)]
enum Expiry {
    /// In 30 days: live.
    Future,
    /// Two days ago: for the next purge.
    Past,
}

/// Stores `n` grants of the bench client, each with an unused refresh token (a random
/// 43-character hash, as real ones are), over `n / 10` users of their own; `tag` keeps
/// the ids of two fills apart.
async fn fill(url: &str, tag: &str, n: u64, expiry: Expiry) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let expires_at = match expiry {
        Expiry::Future => now + 30 * 86_400,
        Expiry::Past => now - 2 * 86_400,
    };
    let users = (n / 10).max(1);
    let n = i64::try_from(n)?;
    let users_count = i64::try_from(users)?;
    // $1, $2: the first and last number of the batch; $3: now; $4: expiry; $5: users.
    let (series, token) = if url.starts_with("postgres") {
        (
            "SELECT i FROM generate_series($1::BIGINT, $2::BIGINT) AS n(i)",
            "substr(md5(random()::text) || md5(random()::text), 1, 43)",
        )
    } else {
        (
            "SELECT i FROM (WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) SELECT i FROM n)",
            "substr(hex(randomblob(22)), 1, 43)",
        )
    };
    let statements = [
        (
            users_count,
            format!(
                "INSERT INTO users (id, username, email, email_verified, name, password_hash, disabled, created_at) \
                 SELECT 'fill-{tag}-u' || i, 'fill-{tag}-u' || i, NULL, FALSE, NULL, NULL, FALSE, $3 FROM ({series}) AS s \
                 WHERE $4 = $4 AND $5 = $5"
            ),
        ),
        (
            n,
            format!(
                "INSERT INTO grants (id, client_id, user_id, scope, auth_time, nonce, created_at, expires_at, revoked) \
                 SELECT 'fill-{tag}-g' || i, '{CLIENT_ID}', 'fill-{tag}-u' || (i % $5), 'openid offline_access', $3, NULL, $3, $4, FALSE \
                 FROM ({series}) AS s"
            ),
        ),
        (
            n,
            format!(
                "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at, rotated_at) \
                 SELECT {token}, 'fill-{tag}-g' || i, $3, $4, NULL FROM ({series}) AS s WHERE $5 = $5"
            ),
        ),
    ];
    let batch = i64::try_from(FILL_BATCH)?;
    let mut db = Db::connect(url).await?;
    for (count, sql) in &statements {
        let mut first = 0;
        while first < *count {
            let last = (first + batch).min(*count) - 1;
            db.execute(sql, [first, last, now, expires_at, users_count])
                .await
                .with_context(|| format!("fill: {}", &sql[..sql.find('(').unwrap_or(20)]))?;
            first = last + 1;
        }
    }
    db.close().await;
    Ok(())
}

/// A connection to keyward's database, for filling it.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres") {
            return Ok(Db::Postgres(sqlx::PgConnection::connect(url).await?));
        }
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        // A bulk load: keyward is stopped, and a crash only loses the fill.
        for pragma in ["PRAGMA synchronous = OFF", "PRAGMA cache_size = -1000000"] {
            sqlx::query(pragma).execute(&mut conn).await?;
        }
        Ok(Db::Sqlite(conn))
    }

    async fn execute(&mut self, sql: &str, binds: [i64; 5]) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(conn) => {
                let mut query = sqlx::query(sql);
                for value in binds {
                    query = query.bind(value);
                }
                query.execute(&mut *conn).await?;
            }
            Db::Postgres(conn) => {
                let mut query = sqlx::query(sql);
                for value in binds {
                    query = query.bind(value);
                }
                query.execute(&mut *conn).await?;
            }
        }
        Ok(())
    }

    async fn close(self) {
        let _ = match self {
            Db::Sqlite(conn) => conn.close().await,
            Db::Postgres(conn) => conn.close().await,
        };
    }
}

/// The database's size on disk: the SQLite file and its log, or PostgreSQL's
/// `pg_database_size`.
async fn size_on_disk(url: &str) -> anyhow::Result<Option<u64>> {
    if url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(url).await?;
        let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&mut db)
            .await?;
        let _ = db.close().await;
        return Ok(u64::try_from(bytes).ok());
    }
    let path = url.trim_start_matches("sqlite://");
    let path = path.split('?').next().unwrap_or(path);
    let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(Some(size(path.to_owned()) + size(format!("{path}-wal"))))
}

/// The report, and whether every verdict held.
fn report(plan: &Plan, sizes: &[Size], purge: Option<&Purge>) -> (String, bool) {
    let mut out = String::new();
    let mut problems = Vec::new();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let _ = writeln!(
        out,
        "`cargo run --release -p keyward-bench -- {command}` on {}, {}, keyward on {}: {} s per scenario, {} connections.\n",
        crate::machine(),
        crate::utc_now(),
        plan.database.name(),
        match plan.load.stop {
            Stop::After(d) => d.as_secs(),
            Stop::Count(_) => 0,
        },
        plan.load.connections,
    );
    let _ = writeln!(
        out,
        "| grants stored | fill | on disk | RSS idle | scenario | requests/s | against the empty store | server CPU per iteration | against the empty store | p99 | p99 at half rate | against the empty store | peak RSS | errors |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let empty = sizes.iter().find(|s| s.grants == 0);
    for size in sizes {
        for (i, m) in size.measured.iter().enumerate() {
            let base = empty.and_then(|e| e.measured.iter().find(|b| b.scenario == m.scenario));
            let mut against =
                |what: &str, now: Option<f64>, empty: Option<f64>, higher_is_worse| {
                    let (Some(now), Some(empty), true) = (now, empty, size.grants > 0) else {
                        return String::new();
                    };
                    let ratio = now / empty.max(1e-9);
                    let worse = if higher_is_worse {
                        ratio > 1.0 + TOLERANCE
                    } else {
                        ratio < 1.0 - TOLERANCE
                    };
                    if worse {
                        problems.push(format!(
                            "{} at {} grants: {what} {:.0} % of the empty store's",
                            m.scenario.name(),
                            size.grants,
                            ratio * 100.0
                        ));
                    }
                    format!("{:.0} %", ratio * 100.0)
                };
            let secs = |d: Duration| Some(d.as_secs_f64());
            let rate_vs = against("rate", Some(m.full.rate), base.map(|b| b.full.rate), false);
            let cpu_vs = against(
                "CPU per iteration",
                m.usage.cpu.and_then(secs),
                base.and_then(|b| b.usage.cpu).and_then(secs),
                true,
            );
            let p99_vs = against(
                "p99 at half rate",
                secs(m.half.p99),
                base.and_then(|b| secs(b.half.p99)),
                true,
            );
            let cpu = m
                .usage
                .cpu
                .map_or("-".to_owned(), |c| format!("{} µs", c.as_micros()));
            let errors = m.full.errors + m.half.errors;
            if errors > 0 {
                problems.push(format!(
                    "{} at {} grants: {errors} errors ({})",
                    m.scenario.name(),
                    size.grants,
                    m.full
                        .first_error
                        .as_deref()
                        .or(m.half.first_error.as_deref())
                        .unwrap_or("")
                ));
            }
            if let Some(peak) = m.usage.peak_rss
                && peak > RSS_BOUND
            {
                problems.push(format!(
                    "{} at {} grants: peak RSS {}",
                    m.scenario.name(),
                    size.grants,
                    mib(Some(peak))
                ));
            }
            let (grants, fill, disk, idle) = if i == 0 {
                (
                    size.grants.to_string(),
                    format!("{:.0} s", size.fill.as_secs_f64()),
                    mib(size.on_disk),
                    mib(size.idle_rss),
                )
            } else {
                Default::default()
            };
            let _ = writeln!(
                out,
                "| {grants} | {fill} | {disk} | {idle} | {} | {:.0} | {rate_vs} | {cpu} | {cpu_vs} | {} | {} | {p99_vs} | {} | {errors} |",
                m.scenario.name(),
                m.full.rate,
                ms(m.full.p99),
                ms(m.half.p99),
                mib(m.usage.peak_rss),
            );
        }
    }
    if let Some(p) = purge {
        let _ = writeln!(
            out,
            "\nOne housekeeping pass deleting {} expired grants, each with its refresh token, from a store of {} live grants, while refresh rotations run at {:.0}/s (half their rate on that store):\n",
            p.expired, p.grants, p.rate
        );
        let _ = writeln!(
            out,
            "| rows deleted | pass took | of it under load | rotations answered meanwhile | p99 | longest | p99 without a pass | peak RSS | errors |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let (count, p99, longest) = p.during.unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {:.1} s | {:.1} s | {count} | {} | {} | {} | {} | {} |",
            p.deleted,
            p.took.as_secs_f64(),
            p.covered.as_secs_f64(),
            ms(p99),
            ms(longest),
            ms(p.baseline),
            mib(p.peak_rss),
            p.errors
        );
        if p.errors > 0 {
            problems.push(format!(
                "{} errors during the purge ({})",
                p.errors,
                p.first_error.as_deref().unwrap_or("")
            ));
        }
        if p.deleted < 2 * p.expired {
            problems.push(format!(
                "the pass deleted {} rows of the {} expired",
                p.deleted,
                2 * p.expired
            ));
        }
        if p.during.is_none() {
            problems.push("no request was answered during the pass".into());
        }
    }
    let ok = problems.is_empty();
    let _ = writeln!(
        out,
        "\n{}",
        if ok {
            "Every verdict held: rate, CPU per iteration and p99 at half rate within 20 % of the empty store's, RSS under 64 MiB, no errors.".to_owned()
        } else {
            format!("Verdicts not met:\n- {}", problems.join("\n- "))
        }
    );
    (out, ok)
}
