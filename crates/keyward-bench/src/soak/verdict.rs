//! What a soak must show, judged from its counters and samples.
//!
//! Always:
//!
//! - no 5xx, and no answer other than the one expected (every failure on purpose is
//!   checked for its own status and error code);
//! - the load was what the report says: at least 90 % of the asked rate held, and
//!   between 8 and 12 % of the requests failing on purpose;
//! - keyward's log has no panic, and `keyward store check` finds the database
//!   consistent at the end;
//! - SQLite's write-ahead log stays under the bound keyward's checkpointer keeps it to
//!   (a writer's own checkpoint at [`WAL_BACKSTOP`], plus 1 MiB for the frames of the
//!   commit that crosses it and the -shm index).
//!
//! From two purge intervals and the slack on ([`HOUSEKEEPING_MIN`]): **expired rows
//! bounded**. keyward purges every [`PURGE_INTERVAL`] from its start, so a row that
//! became purgeable at `e` is gone by `e + PURGE_INTERVAL (+ PURGE_SLACK)`. At every
//! sample from `PURGE_INTERVAL + PURGE_SLACK` on, the purgeable rows present must be
//! at most those that became purgeable within that last window: no row may be
//! *overdue* (purgeable already at `now - PURGE_INTERVAL - PURGE_SLACK`). Rows kept
//! past their expiry on purpose (a redeemed code until its grant ends, an expired
//! device code an hour) are expired but not purgeable, and not counted against it.
//!
//! From [`GROWTH_MIN`] on: **no growth**, the last third of the run against the middle
//! third. With [`super::LIFETIMES`], the live set grows for the first
//! [`super::LONGEST_TTL`] (10 min), then expired rows pile up until the purge after it
//! and drop; from then on each purge interval repeats the same saw-tooth. The middle
//! third must hold one whole tooth at the steady level: it ends at 2/3 of the run, which
//! must be past `LONGEST_TTL + PURGE_INTERVAL + PURGE_SLACK` (16 min), so a run of at
//! least 24 min. Shorter runs skip these verdicts, saying so, rather than pass them.
//!
//! - RSS: the last third's peak ≤ the middle third's × 1.10 + 4 MiB. A steady server's
//!   memory moves with the allocator's arenas and SQLite's page caches (2 MiB a
//!   connection, filled as the database grows); 10 % and 4 MiB absorb that. At the
//!   ~60 MiB keyward settles at, that allows 10 MiB a third (10 minutes): a leak of
//!   more than about 150 bytes a request at 120 requests/s fails it.
//! - Open descriptors: the last third's peak ≤ the middle third's + 16. Database pools
//!   open connections on demand and close idle ones (PostgreSQL up to 16, SQLite a few
//!   files each), and client connections come and go with the load; a leak of one
//!   descriptor per thousand requests still adds ~70 a third.
//! - Database size (the SQLite file without its log, or PostgreSQL's
//!   `pg_database_size`): the last third's peak ≤ the middle third's × 1.10 × (the live
//!   data's growth: last third's peak rows / middle third's, at least 1) + 2 MiB. Freed
//!   pages are reused, not returned, so the size follows the peak of the saw-tooth; 10 %
//!   absorbs page splits and PostgreSQL's dead rows awaiting autovacuum, 2 MiB a
//!   table's next extent.

use std::fmt::Write as _;
use std::time::Duration;

use super::{LONGEST_TTL, PURGE_INTERVAL, PURGE_SLACK, Sample, SoakRun};

/// The shortest load for which the housekeeping verdict applies.
pub const HOUSEKEEPING_MIN: Duration =
    Duration::from_secs(2 * PURGE_INTERVAL.as_secs() + PURGE_SLACK.as_secs());
/// The shortest load for which the growth verdicts apply (see the module's doc).
pub const GROWTH_MIN: Duration = Duration::from_secs(
    (LONGEST_TTL.as_secs() + PURGE_INTERVAL.as_secs() + PURGE_SLACK.as_secs()) * 3 / 2,
);
/// The write-ahead log size at which keyward's SQLite writer checkpoints by itself
/// (`BACKSTOP_FRAMES` 4 KiB pages in keyward-server's `store/sql.rs`).
pub const WAL_BACKSTOP: u64 = 8192 * 4096;

const MIB: f64 = 1024.0 * 1024.0;

/// How a check came out.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It held.
    Pass,
    /// It did not.
    Fail,
    /// It does not apply to this run, for the reason given.
    Skipped(String),
}

/// One judged check.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// What was checked.
    pub check: &'static str,
    /// What the run showed.
    pub measured: String,
    /// What it had to be.
    pub bound: String,
    /// How it came out.
    pub outcome: Outcome,
}

impl Verdict {
    /// Whether the check failed.
    pub fn failed(&self) -> bool {
        self.outcome == Outcome::Fail
    }

    fn new(check: &'static str, measured: String, bound: String, held: bool) -> Self {
        Self {
            check,
            measured,
            bound,
            outcome: if held { Outcome::Pass } else { Outcome::Fail },
        }
    }

    fn skipped(check: &'static str, bound: String, reason: String) -> Self {
        Self {
            check,
            measured: "-".into(),
            bound,
            outcome: Outcome::Skipped(reason),
        }
    }
}

/// The peaks of `value` over the middle and the last third of a load of length `load`
/// (by each sample's time); `None` when a third has no value.
pub fn thirds(
    samples: &[Sample],
    load: Duration,
    value: impl Fn(&Sample) -> Option<f64>,
) -> Option<(f64, f64)> {
    let (one, two) = (load / 3, load * 2 / 3);
    let peak = |from: Duration, to: Duration| {
        samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .filter_map(&value)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    Some((peak(one, two)?, peak(two, load)?))
}

/// The most the last third may reach: the middle third's peak × `factor` + `slack`.
pub fn allowed(middle: f64, factor: f64, slack: f64) -> f64 {
    middle * factor + slack
}

/// Every verdict on `run`.
pub fn judge(run: &SoakRun) -> Vec<Verdict> {
    let mut verdicts = vec![
        Verdict::new(
            "no 5xx",
            run.server_errors.to_string(),
            "0".into(),
            run.server_errors == 0,
        ),
        Verdict::new(
            "every answer as expected",
            format!("{} unexpected", run.unexpected),
            "0".into(),
            run.unexpected == 0,
        ),
        load_held(run),
        Verdict::new(
            "no panic in keyward's log",
            run.panics.len().to_string(),
            "0".into(),
            run.panics.is_empty(),
        ),
        Verdict::new(
            "keyward store check at the end",
            run.store_check.1.clone(),
            "consistent, no problem".into(),
            run.store_check.0,
        ),
    ];
    if let Some(wal) = run.samples.iter().filter_map(|s| s.wal_bytes).max() {
        let bound = WAL_BACKSTOP + (1 << 20);
        verdicts.push(Verdict::new(
            "SQLite log bounded",
            format!("{:.1} MiB at most", wal as f64 / MIB),
            format!("≤ {:.0} MiB", bound as f64 / MIB),
            wal <= bound,
        ));
    }
    verdicts.push(housekeeping(run));
    verdicts.extend(growth(run));
    verdicts
}

/// The load held the asked rate (90 %) and the share of failures on purpose (8–12 %).
fn load_held(run: &SoakRun) -> Verdict {
    let rate = run.requests as f64 / run.load.as_secs_f64().max(1e-9);
    let share = run.on_purpose as f64 / (run.requests.max(1)) as f64;
    Verdict::new(
        "load as asked",
        format!(
            "{rate:.1} requests/s, {:.1} % failing on purpose",
            share * 100.0
        ),
        format!("≥ {:.0} requests/s, 8–12 % failing", run.plan.rate * 0.9),
        rate >= run.plan.rate * 0.9 && (0.08..=0.12).contains(&share),
    )
}

/// No row overdue for its purge, at any sample from one purge interval and the slack
/// on.
fn housekeeping(run: &SoakRun) -> Verdict {
    const CHECK: &str = "expired rows bounded by housekeeping";
    let from = PURGE_INTERVAL + PURGE_SLACK;
    let bound = format!(
        "0 rows purgeable for over {} s, at every sample from {} s on",
        from.as_secs(),
        from.as_secs()
    );
    if run.load < HOUSEKEEPING_MIN {
        return Verdict::skipped(
            CHECK,
            bound,
            format!(
                "needs a load of at least {} s (keyward purges at start and every {} s; a row must have had a purge after its expiry)",
                HOUSEKEEPING_MIN.as_secs(),
                PURGE_INTERVAL.as_secs()
            ),
        );
    }
    let judged: Vec<&Sample> = run.samples.iter().filter(|s| s.at >= from).collect();
    let worst = judged.iter().max_by_key(|s| s.overdue());
    let purgeable = judged.iter().map(|s| s.purgeable()).max().unwrap_or(0);
    let mut measured = format!(
        "overdue at most {} (in {} samples); purgeable at most {purgeable}",
        worst.map_or(0, |s| s.overdue()),
        judged.len()
    );
    if let Some(worst) = worst.filter(|s| s.overdue() > 0) {
        let tables: Vec<String> = worst
            .tables
            .iter()
            .filter(|t| t.overdue > 0)
            .map(|t| format!("{} {}", t.table, t.overdue))
            .collect();
        let _ = write!(
            measured,
            " — at {:.0} s: {}",
            worst.at.as_secs_f64(),
            tables.join(", ")
        );
    }
    Verdict::new(
        CHECK,
        measured,
        bound,
        worst.is_none_or(|s| s.overdue() == 0),
    )
}

/// RSS, open descriptors and database size: the last third against the middle third.
fn growth(run: &SoakRun) -> Vec<Verdict> {
    let checks: [(&'static str, String); 3] = [
        (
            "RSS does not keep growing",
            "≤ middle × 1.10 + 4 MiB".into(),
        ),
        ("open descriptors bounded", "≤ middle + 16".into()),
        (
            "database size plateaus",
            "≤ middle × 1.10 × row growth + 2 MiB".into(),
        ),
    ];
    if run.load < GROWTH_MIN {
        let reason = format!(
            "needs a load of at least {} s (the middle third must end after the live set's first full cycle: {} s of lifetime, a purge interval and its slack)",
            GROWTH_MIN.as_secs(),
            LONGEST_TTL.as_secs()
        );
        return checks
            .into_iter()
            .map(|(check, bound)| Verdict::skipped(check, bound, reason.clone()))
            .collect();
    }
    let [rss, fds, size] = checks;
    let mut verdicts = Vec::new();
    let mib = |v: f64| format!("{:.1} MiB", v / MIB);
    verdicts.push(
        match thirds(&run.samples, run.load, |s| s.rss.map(|v| v as f64)) {
            Some((middle, last)) => {
                let most = allowed(middle, 1.10, 4.0 * MIB);
                Verdict::new(
                    rss.0,
                    format!("middle {}, last {}", mib(middle), mib(last)),
                    format!("{} (≤ {})", rss.1, mib(most)),
                    last <= most,
                )
            }
            None => Verdict::skipped(rss.0, rss.1, "no reading".into()),
        },
    );
    verdicts.push(
        match thirds(&run.samples, run.load, |s| s.fds.map(|v| v as f64)) {
            Some((middle, last)) => {
                let most = allowed(middle, 1.0, 16.0);
                Verdict::new(
                    fds.0,
                    format!("middle {middle:.0}, last {last:.0}"),
                    format!("{} (≤ {most:.0})", fds.1),
                    last <= most,
                )
            }
            None => Verdict::skipped(fds.0, fds.1, "no reading".into()),
        },
    );
    let file = |s: &Sample| {
        s.db_bytes
            .map(|total| total.saturating_sub(s.wal_bytes.unwrap_or(0)) as f64)
    };
    let rows = thirds(&run.samples, run.load, |s| Some(s.rows() as f64));
    verdicts.push(match (thirds(&run.samples, run.load, file), rows) {
        (Some((middle, last)), Some((rows_middle, rows_last))) => {
            let live = (rows_last / rows_middle.max(1.0)).max(1.0);
            let most = allowed(middle, 1.10 * live, 2.0 * MIB);
            Verdict::new(
                size.0,
                format!(
                    "middle {}, last {} (rows: middle {rows_middle:.0}, last {rows_last:.0})",
                    mib(middle),
                    mib(last)
                ),
                format!("{} (≤ {})", size.1, mib(most)),
                last <= most,
            )
        }
        _ => Verdict::skipped(size.0, size.1, "no reading".into()),
    });
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, value: u64) -> Sample {
        Sample {
            at: Duration::from_secs(seconds),
            rss: Some(value),
            ..Sample::default()
        }
    }

    #[test]
    fn thirds_take_the_peak_of_each() {
        let samples: Vec<Sample> = [
            (0, 50),
            (100, 10),
            (400, 20),
            (500, 30),
            (700, 25),
            (900, 5),
        ]
        .into_iter()
        .map(|(t, v)| at(t, v))
        .collect();
        let load = Duration::from_secs(900);
        let rss = |s: &Sample| s.rss.map(|v| v as f64);
        assert_eq!(thirds(&samples, load, rss), Some((30.0, 25.0)));
        assert_eq!(thirds(&samples[..3], load, rss), None);
    }

    #[test]
    fn the_bound_scales_then_adds() {
        assert!((allowed(100.0, 1.10, 4.0) - 114.0).abs() < 1e-9);
        assert_eq!(allowed(0.0, 1.10, 4.0), 4.0);
    }

    /// A run of `seconds` with a sample every 10 s: RSS from `rss(t)`, 40 descriptors,
    /// a database of 10 MiB and 1000 rows, `overdue(t)` of them overdue.
    fn run(seconds: u64, rss: impl Fn(u64) -> u64, overdue: impl Fn(u64) -> i64) -> SoakRun {
        let samples = (0..=seconds / 10)
            .map(|i| {
                let t = i * 10;
                let overdue = overdue(t);
                Sample {
                    at: Duration::from_secs(t),
                    rss: Some(rss(t)),
                    fds: Some(40),
                    db_bytes: Some(10 << 20),
                    wal_bytes: Some(1 << 20),
                    tables: vec![crate::soak::sample::TableCount {
                        table: "grants",
                        rows: 1000,
                        expired: 10,
                        purgeable: overdue,
                        overdue,
                    }],
                    ..Sample::default()
                }
            })
            .collect();
        SoakRun {
            database: "SQLite".into(),
            plan: crate::soak::SoakPlan {
                seconds,
                rate: 100.0,
                clients: 4,
                sample_every: Duration::from_secs(10),
                seed: 1,
            },
            load: Duration::from_secs(seconds),
            samples,
            steps: Vec::new(),
            requests: seconds * 100,
            on_purpose: seconds * 10,
            server_errors: 0,
            unexpected: 0,
            problems: Vec::new(),
            store_check: (true, "consistent".into()),
            panics: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    fn outcome<'a>(verdicts: &'a [Verdict], check: &str) -> &'a Outcome {
        &verdicts
            .iter()
            .find(|v| v.check == check)
            .expect("the check is judged")
            .outcome
    }

    #[test]
    fn a_steady_run_passes_every_verdict() {
        let verdicts = judge(&run(1800, |_| 50 << 20, |_| 0));
        assert!(
            verdicts.iter().all(|v| v.outcome == Outcome::Pass),
            "{verdicts:?}"
        );
    }

    #[test]
    fn memory_that_keeps_growing_fails() {
        // 50 MiB, plus 30 KiB a second: 17.6 MiB a third, more than the 10 % and 4 MiB
        // the middle third's 85 MiB allow.
        let verdicts = judge(&run(1800, |t| (50 << 20) + t * 30_720, |_| 0));
        assert_eq!(
            outcome(&verdicts, "RSS does not keep growing"),
            &Outcome::Fail
        );
        assert_eq!(
            outcome(&verdicts, "open descriptors bounded"),
            &Outcome::Pass
        );
    }

    #[test]
    fn an_overdue_row_fails_housekeeping() {
        let late = run(1800, |_| 50 << 20, |t| i64::from(t == 900));
        assert_eq!(housekeeping(&late).outcome, Outcome::Fail);
        assert!(housekeeping(&late).measured.contains("at 900 s: grants 1"));
        // Before one purge interval and the slack no row can be overdue: not judged.
        let early = run(1800, |_| 50 << 20, |t| i64::from(t < 360));
        assert_eq!(housekeeping(&early).outcome, Outcome::Pass);
    }

    #[test]
    fn short_runs_skip_what_they_cannot_show() {
        let verdicts = judge(&run(180, |t| (50 << 20) + t * 1_000_000, |_| 1));
        for check in [
            "expired rows bounded by housekeeping",
            "RSS does not keep growing",
            "open descriptors bounded",
            "database size plateaus",
        ] {
            assert!(
                matches!(outcome(&verdicts, check), Outcome::Skipped(_)),
                "{check}"
            );
        }
        assert!(verdicts.iter().all(|v| !v.failed()));
    }

    #[test]
    fn the_minimum_lengths_follow_the_lifetimes() {
        assert_eq!(HOUSEKEEPING_MIN, Duration::from_secs(660));
        assert_eq!(GROWTH_MIN, Duration::from_secs(1440));
        assert!(Duration::from_secs(1800) >= GROWTH_MIN);
    }
}
