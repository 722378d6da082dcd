//! A soak's report: the Markdown tables it prints (and writes to report.md), and the
//! chart of its samples.

use std::fmt::Write as _;

use super::svg::{Chart, Panel, Series};
use super::verdict::Outcome;
use super::{PURGE_INTERVAL, Sample, SoakRun};

const MIB: f64 = 1024.0 * 1024.0;

/// The report of `run`, started at `when` by `command` on `machine`.
pub fn render(run: &SoakRun, command: &str, machine: &str, when: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo run --release -p keyward-bench -- {command}` on {machine}, {when}, seed {}.\n",
        run.plan.seed
    );
    let _ = writeln!(
        out,
        "| database | load | clients | rate asked / held | requests | failing on purpose | 5xx | unexpected | RSS start / middle / end | open fds start / middle / end | database start / middle / end | rows at most (expired) | purgeable at most | store check | result |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let (first, middle, last) = (run.samples.first(), middle_sample(run), run.samples.last());
    let three = |f: &dyn Fn(&Sample) -> String| {
        [first, middle, last]
            .map(|s| s.map_or("-".into(), f))
            .join(" / ")
    };
    let mib = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1}", v as f64 / MIB));
    let held = run.requests as f64 / run.load.as_secs_f64().max(1e-9);
    let rows_max = run.samples.iter().map(|s| s.rows()).max().unwrap_or(0);
    let expired_max = run.samples.iter().map(|s| s.expired()).max().unwrap_or(0);
    let purgeable_max = run.samples.iter().map(|s| s.purgeable()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "| {} | {:.1} min | {} | {:.0} / {held:.1} /s | {} | {} ({:.1} %) | {} | {} | {} MiB | {} | {} MiB | {rows_max} ({expired_max}) | {purgeable_max} | {} | {} |",
        run.database,
        run.load.as_secs_f64() / 60.0,
        run.plan.clients,
        run.plan.rate,
        run.requests,
        run.on_purpose,
        run.on_purpose as f64 * 100.0 / run.requests.max(1) as f64,
        run.server_errors,
        run.unexpected,
        three(&|s| mib(s.rss)),
        three(&|s| s.fds.map_or("-".into(), |n| n.to_string())),
        three(&|s| mib(s.db_bytes)),
        if run.store_check.0 {
            "consistent"
        } else {
            "INCONSISTENT"
        },
        if run.passed() { "pass" } else { "FAIL" },
    );
    let _ = writeln!(out, "\nSteps completed:\n");
    let _ = writeln!(out, "| step | fails on purpose | completed |");
    let _ = writeln!(out, "|---|---|---:|");
    for (step, count) in &run.steps {
        let purpose = if step.failing() { "yes" } else { "" };
        let _ = writeln!(out, "| {} | {purpose} | {count} |", step.name());
    }
    let _ = writeln!(out, "\nVerdicts:\n");
    let _ = writeln!(out, "| check | measured | bound | result |");
    let _ = writeln!(out, "|---|---|---|---|");
    for v in &run.verdicts {
        let result = match &v.outcome {
            Outcome::Pass => "pass".to_owned(),
            Outcome::Fail => "FAIL".to_owned(),
            Outcome::Skipped(reason) => format!("skipped: {reason}"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {result} |",
            v.check, v.measured, v.bound
        );
    }
    if let Some(end) = last {
        let _ = writeln!(out, "\nRows at the end (live / expired / purgeable):\n");
        let tables: Vec<String> = end
            .tables
            .iter()
            .filter(|t| t.rows > 0)
            .map(|t| format!("{} {} / {} / {}", t.table, t.rows, t.expired, t.purgeable))
            .collect();
        let _ = writeln!(out, "{}", tables.join("; "));
    }
    if !run.problems.is_empty() || !run.panics.is_empty() {
        let _ = writeln!(out, "\nProblems (the first few):\n");
        for problem in run.problems.iter().chain(&run.panics) {
            let _ = writeln!(out, "- {problem}");
        }
    }
    out
}

/// The sample nearest the middle of the load.
fn middle_sample(run: &SoakRun) -> Option<&Sample> {
    let half = run.load / 2;
    run.samples.iter().min_by_key(|s| s.at.abs_diff(half))
}

/// The chart of `run`'s samples: RSS, open descriptors, database size, rows.
pub fn chart(run: &SoakRun, when: &str) -> Chart {
    let series =
        |label: &str, colour: &'static str, value: &dyn Fn(&Sample) -> Option<f64>| Series {
            label: label.to_owned(),
            colour,
            points: run
                .samples
                .iter()
                .filter_map(|s| value(s).map(|v| (s.at.as_secs_f64() / 60.0, v)))
                .collect(),
        };
    let mib = |v: Option<u64>| v.map(|v| v as f64 / MIB);
    let mut database = vec![series("database", "#2ca02c", &|s| mib(s.db_bytes))];
    if run.samples.iter().any(|s| s.wal_bytes.is_some()) {
        database.push(series("of which -wal and -shm", "#98df8a", &|s| {
            mib(s.wal_bytes)
        }));
    }
    let held = run.requests as f64 / run.load.as_secs_f64().max(1e-9);
    // The axis follows the plan; the last sample, taken after the load, may lie a
    // little past it.
    let minutes = run.plan.seconds as f64 / 60.0;
    let purge = PURGE_INTERVAL.as_secs_f64() / 60.0;
    Chart {
        title: format!("keyward soak on {}, {when}", run.database),
        subtitle: format!(
            "{minutes:.0} min, {} clients, {:.0} requests/s asked, {held:.1} held, {} requests, {:.1} % failing on purpose, {} 5xx, {} unexpected",
            run.plan.clients,
            run.plan.rate,
            run.requests,
            run.on_purpose as f64 * 100.0 / run.requests.max(1) as f64,
            run.server_errors,
            run.unexpected
        ),
        panels: vec![
            Panel {
                title: "keyward RSS (MiB)".into(),
                series: vec![series("RSS", "#1f77b4", &|s| mib(s.rss))],
            },
            Panel {
                title: "keyward open file descriptors".into(),
                series: vec![series("descriptors", "#ff7f0e", &|s| {
                    s.fds.map(|v| v as f64)
                })],
            },
            Panel {
                title: "database size (MiB)".into(),
                series: database,
            },
            Panel {
                title: "rows in the tables keyward purges".into(),
                series: vec![
                    series("all rows", "#9467bd", &|s| Some(s.rows() as f64)),
                    series("expired", "#d62728", &|s| Some(s.expired() as f64)),
                    series("purgeable", "#8c564b", &|s| Some(s.purgeable() as f64)),
                ],
            },
        ],
        minutes,
        marks: (0..)
            .map(|k| f64::from(k) * purge)
            .take_while(|m| *m <= minutes)
            .collect(),
        marks_label: format!(
            "Dashed lines: keyward's purges of expired rows (at its start, then every {purge:.0} min). Samples every 10 s."
        ),
    }
}
