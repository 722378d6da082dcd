//! What the soak reads every few seconds: keyward's memory and open files from /proc,
//! the database's size, and the rows of every table keyward purges, counted live,
//! expired, purgeable and overdue by the rules of its purge (`purge_expired` in
//! keyward-server's `store/sql.rs`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::{Connection as _, Row as _};

/// One reading.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Time since the load started.
    pub at: Duration,
    /// Requests sent so far.
    pub requests: u64,
    /// Requests meant to fail, so far.
    pub on_purpose: u64,
    /// 5xx answers so far.
    pub server_errors: u64,
    /// Steps that met an unexpected answer, so far.
    pub unexpected: u64,
    /// keyward's resident set size, bytes.
    pub rss: Option<u64>,
    /// keyward's open file descriptors.
    pub fds: Option<u64>,
    /// The database's size, bytes (SQLite: the file, its -wal and -shm; PostgreSQL:
    /// `pg_database_size`).
    pub db_bytes: Option<u64>,
    /// Of those, SQLite's write-ahead log and its index (-wal, -shm); none on
    /// PostgreSQL, whose log is the server's, not the database's.
    pub wal_bytes: Option<u64>,
    /// The tables keyward purges, in [`RULES`] order.
    pub tables: Vec<TableCount>,
}

/// The rows of one table at one reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableCount {
    /// The table.
    pub table: &'static str,
    /// Every row.
    pub rows: i64,
    /// Rows past their own expiry (some are kept longer on purpose: a redeemed code
    /// until its grant ends, a device code an hour).
    pub expired: i64,
    /// Rows keyward's purge would delete now.
    pub purgeable: i64,
    /// Rows its purge would already have deleted at `now - (interval + slack)`, and so
    /// should be gone: a purge ran since.
    pub overdue: i64,
}

impl Sample {
    /// Rows in all the tables.
    pub fn rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Expired rows in all the tables.
    pub fn expired(&self) -> i64 {
        self.tables.iter().map(|t| t.expired).sum()
    }

    /// Purgeable rows in all the tables.
    pub fn purgeable(&self) -> i64 {
        self.tables.iter().map(|t| t.purgeable).sum()
    }

    /// Overdue rows in all the tables.
    pub fn overdue(&self) -> i64 {
        self.tables.iter().map(|t| t.overdue).sum()
    }
}

/// A table keyward purges: when a row has expired, and when its purge deletes it.
struct Rule {
    table: &'static str,
    /// The time (Unix seconds) a row expires.
    expiry: &'static str,
    /// The condition under which a purge running at `$N` deletes a row (`$N` stands for
    /// the purge's time, filled in per count).
    purged: &'static str,
}

/// keyward's purge, table by table (`purge_expired`): what names an expired grant goes
/// with it; redeemed codes are kept a day, expired device codes an hour, quiet
/// throttles a day.
const RULES: [Rule; 9] = [
    Rule {
        table: "auth_requests",
        expiry: "expires_at",
        purged: "expires_at < $N",
    },
    Rule {
        table: "sessions",
        expiry: "expires_at",
        purged: "expires_at < $N",
    },
    Rule {
        table: "grants",
        expiry: "expires_at",
        purged: "expires_at < $N",
    },
    Rule {
        table: "auth_codes",
        expiry: "expires_at",
        purged: "expires_at < $N - 86400 OR grant_id IN (SELECT id FROM grants WHERE expires_at < $N)",
    },
    Rule {
        table: "refresh_tokens",
        expiry: "expires_at",
        purged: "expires_at < $N OR grant_id IN (SELECT id FROM grants WHERE expires_at < $N)",
    },
    Rule {
        table: "revoked_tokens",
        expiry: "expires_at",
        purged: "expires_at < $N",
    },
    Rule {
        table: "device_codes",
        expiry: "expires_at",
        purged: "expires_at < $N - 3600 OR grant_id IN (SELECT id FROM grants WHERE expires_at < $N)",
    },
    Rule {
        table: "connector_logins",
        expiry: "expires_at",
        purged: "expires_at < $N",
    },
    Rule {
        table: "throttles",
        expiry: "last_at + 86400",
        purged: "last_at < $N - 86400",
    },
];

/// One query for every count: per table its rows, expired rows (`$1` is now),
/// purgeable rows (purged at `$1`) and overdue rows (purged at `$2`), in that order.
fn counts_query() -> String {
    let mut columns = Vec::new();
    for rule in &RULES {
        let t = rule.table;
        columns.push(format!("(SELECT count(*) FROM {t})"));
        columns.push(format!(
            "(SELECT count(*) FROM {t} WHERE {} < $1)",
            rule.expiry
        ));
        columns.push(format!(
            "(SELECT count(*) FROM {t} WHERE {})",
            rule.purged.replace("$N", "$1")
        ));
        columns.push(format!(
            "(SELECT count(*) FROM {t} WHERE {})",
            rule.purged.replace("$N", "$2")
        ));
    }
    let mut sql = String::from("SELECT ");
    let _ = write!(sql, "{}", columns.join(", "));
    sql
}

/// keyward's database, as the sampler reads it.
pub enum Database {
    /// A SQLite file (read through a read-only connection opened per reading, so that
    /// no long read holds back keyward's checkpoints).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

impl Database {
    /// The size and the row counts now (`now` and `cutoff` in Unix seconds: the
    /// purge times of the purgeable and the overdue counts).
    pub async fn read(&self, now: i64, cutoff: i64) -> anyhow::Result<Reading> {
        let sql = counts_query();
        let (size, wal, values) = match self {
            Database::Sqlite(file) => {
                let url = format!("sqlite://{}?mode=ro", file.display());
                let mut db = sqlx::SqliteConnection::connect(&url)
                    .await
                    .with_context(|| format!("open {} read-only", file.display()))?;
                let row = sqlx::query(&sql)
                    .bind(now)
                    .bind(cutoff)
                    .fetch_one(&mut db)
                    .await
                    .context("count rows")?;
                let values: Vec<i64> = (0..RULES.len() * 4)
                    .map(|i| row.try_get::<i64, _>(i))
                    .collect::<Result<_, _>>()?;
                let _ = db.close().await;
                let [main, wal, shm] = ["", "-wal", "-shm"].map(|suffix| {
                    let mut path = file.clone().into_os_string();
                    path.push(suffix);
                    std::fs::metadata(&path).map_or(0, |m| m.len())
                });
                (Some(main + wal + shm), Some(wal + shm), values)
            }
            Database::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url)
                    .await
                    .context("connect to keyward's PostgreSQL database")?;
                let row = sqlx::query(&sql)
                    .bind(now)
                    .bind(cutoff)
                    .fetch_one(&mut db)
                    .await
                    .context("count rows")?;
                let values: Vec<i64> = (0..RULES.len() * 4)
                    .map(|i| row.try_get::<i64, _>(i))
                    .collect::<Result<_, _>>()?;
                let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut db)
                    .await
                    .context("pg_database_size")?;
                let _ = db.close().await;
                (u64::try_from(size).ok(), None, values)
            }
        };
        let tables = RULES
            .iter()
            .zip(values.chunks(4))
            .map(|(rule, v)| TableCount {
                table: rule.table,
                rows: v[0],
                expired: v[1],
                purgeable: v[2],
                overdue: v[3],
            })
            .collect();
        Ok(Reading {
            db_bytes: size,
            wal_bytes: wal,
            tables,
        })
    }
}

/// What one reading of the database found.
pub struct Reading {
    /// [`Sample::db_bytes`].
    pub db_bytes: Option<u64>,
    /// [`Sample::wal_bytes`].
    pub wal_bytes: Option<u64>,
    /// [`Sample::tables`].
    pub tables: Vec<TableCount>,
}

/// The open file descriptors of process `pid`, from /proc (Linux).
pub fn open_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// The CSV of `samples`: a header, then a line per sample.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "seconds,requests,failing_on_purpose,server_errors,unexpected,rss_bytes,open_fds,database_bytes,wal_bytes,rows,expired,purgeable,overdue",
    );
    for rule in &RULES {
        let t = rule.table;
        let _ = write!(out, ",{t}_rows,{t}_expired,{t}_purgeable,{t}_overdue");
    }
    out.push('\n');
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        let _ = write!(
            out,
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.at.as_secs_f64(),
            s.requests,
            s.on_purpose,
            s.server_errors,
            s.unexpected,
            opt(s.rss),
            opt(s.fds),
            opt(s.db_bytes),
            opt(s.wal_bytes),
            s.rows(),
            s.expired(),
            s.purgeable(),
            s.overdue()
        );
        for t in &s.tables {
            let _ = write!(
                out,
                ",{},{},{},{}",
                t.rows, t.expired, t.purgeable, t.overdue
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_query_binds_now_before_the_cutoff() {
        let sql = counts_query();
        assert!(sql.find("$1").unwrap() < sql.find("$2").unwrap());
        assert!(!sql.contains("$N"));
        assert_eq!(
            sql.matches("(SELECT count(*) FROM").count(),
            RULES.len() * 4
        );
    }

    #[test]
    fn csv_lines_match_the_header() {
        let sample = Sample {
            at: Duration::from_secs(10),
            rss: Some(1),
            tables: RULES
                .iter()
                .map(|r| TableCount {
                    table: r.table,
                    rows: 3,
                    expired: 2,
                    purgeable: 1,
                    overdue: 0,
                })
                .collect(),
            ..Sample::default()
        };
        let text = csv(&[sample]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[1].starts_with("10.0,0,0,0,0,1,,,,27,18,9,0,3,2,1,0"));
    }
}
