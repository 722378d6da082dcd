//! The store's consistency check ([`Store::check_consistency`](super::Store::check_consistency),
//! behind `keyward store check`): the ways the records can contradict each other, and
//! the queries that find them.
//!
//! Each of keyward's writes leaves the records agreeing; a write cut in half (a
//! transaction that was not one, a process killed between two statements, a database
//! that lost a commit) or a hand edit can leave them disagreeing. What "half-written"
//! means for each table:
//!
//! | table | half-written |
//! |---|---|
//! | `grants` | its user or its client missing |
//! | `refresh_tokens` | naming a grant that is missing; two never-rotated tokens in one grant (the chain forked); a live grant whose tokens are all rotated (a rotation marked the old token and never stored its successor: the chain is cut) |
//! | `auth_codes` | naming a grant that is missing (the grant and its code are written together), or issued to another client than its grant's |
//! | `device_codes` | naming a grant that is missing; approved or collected without a grant, pending or denied with one (approval writes both at once) |
//! | `sessions`, `identities`, `consents` | their user (or client) missing |
//!
//! The check reports ids (grant, user and client ids, device statuses) and counts,
//! never token material, not even hashes.

use std::fmt;
use std::sync::LazyLock;

use crate::domain::DeviceStatus;

/// One way the records contradict each other, with the ids it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inconsistency {
    /// Refresh tokens name a grant that does not exist.
    RefreshTokensWithoutGrant {
        /// The missing grant.
        grant_id: String,
        /// How many tokens name it.
        count: u64,
    },
    /// A grant has more than one refresh token that was never rotated: its chain forked.
    ForkedChain {
        /// The grant.
        grant_id: String,
        /// How many of its tokens are unrotated.
        live: u64,
    },
    /// A grant that is neither revoked nor expired has refresh tokens, all of them
    /// rotated: a rotation marked the old token without storing its successor, and the
    /// chain is cut.
    CutChain {
        /// The grant.
        grant_id: String,
    },
    /// Authorization codes name a grant that does not exist.
    CodesWithoutGrant {
        /// The missing grant.
        grant_id: String,
        /// How many codes name it.
        count: u64,
    },
    /// Authorization codes were issued to another client than their grant was.
    CodesOfAnotherClient {
        /// The grant.
        grant_id: String,
        /// How many of its codes.
        count: u64,
    },
    /// Device authorizations name a grant that does not exist.
    DeviceCodesWithoutGrant {
        /// The missing grant.
        grant_id: String,
        /// How many name it.
        count: u64,
    },
    /// Device authorizations whose status and grant disagree: approved or collected
    /// without a grant, pending or denied with one, or a status keyward does not know.
    DeviceCodesInBadState {
        /// The stored status.
        status: String,
        /// How many.
        count: u64,
    },
    /// A grant's user does not exist.
    GrantWithoutUser {
        /// The grant.
        grant_id: String,
        /// The missing user.
        user_id: String,
    },
    /// A grant's client does not exist.
    GrantWithoutClient {
        /// The grant.
        grant_id: String,
        /// The missing client.
        client_id: String,
    },
    /// Sessions of a user that does not exist.
    SessionsWithoutUser {
        /// The missing user.
        user_id: String,
        /// How many sessions.
        count: u64,
    },
    /// Upstream identities linked to a user that does not exist.
    IdentitiesWithoutUser {
        /// The missing user.
        user_id: String,
        /// How many identities.
        count: u64,
    },
    /// Consents of a user that does not exist.
    ConsentsWithoutUser {
        /// The missing user.
        user_id: String,
        /// How many consents.
        count: u64,
    },
    /// Consents to a client that does not exist.
    ConsentsWithoutClient {
        /// The missing client.
        client_id: String,
        /// How many consents.
        count: u64,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RefreshTokensWithoutGrant { grant_id, count } => {
                write!(
                    f,
                    "grant {grant_id} is missing, {count} refresh token(s) name it"
                )
            }
            Self::ForkedChain { grant_id, live } => write!(
                f,
                "grant {grant_id} has {live} unrotated refresh tokens: its rotation chain forked"
            ),
            Self::CutChain { grant_id } => write!(
                f,
                "grant {grant_id} is live but all its refresh tokens are rotated: its rotation chain is cut"
            ),
            Self::CodesWithoutGrant { grant_id, count } => write!(
                f,
                "grant {grant_id} is missing, {count} authorization code(s) name it"
            ),
            Self::CodesOfAnotherClient { grant_id, count } => write!(
                f,
                "grant {grant_id} has {count} authorization code(s) issued to another client"
            ),
            Self::DeviceCodesWithoutGrant { grant_id, count } => write!(
                f,
                "grant {grant_id} is missing, {count} device authorization(s) name it"
            ),
            Self::DeviceCodesInBadState { status, count } => write!(
                f,
                "{count} device authorization(s) with status {status:?} disagree with their grant (approved or used without one, pending or denied with one, or an unknown status)"
            ),
            Self::GrantWithoutUser { grant_id, user_id } => {
                write!(f, "grant {grant_id} names user {user_id}, who is missing")
            }
            Self::GrantWithoutClient {
                grant_id,
                client_id,
            } => write!(
                f,
                "grant {grant_id} names client {client_id}, which is missing"
            ),
            Self::SessionsWithoutUser { user_id, count } => {
                write!(f, "user {user_id} is missing, {count} session(s) name them")
            }
            Self::IdentitiesWithoutUser { user_id, count } => write!(
                f,
                "user {user_id} is missing, {count} linked identit(y/ies) name them"
            ),
            Self::ConsentsWithoutUser { user_id, count } => {
                write!(f, "user {user_id} is missing, {count} consent(s) name them")
            }
            Self::ConsentsWithoutClient { client_id, count } => write!(
                f,
                "client {client_id} is missing, {count} consent(s) name it"
            ),
        }
    }
}

/// What the check looked at, so that a check of an empty (or the wrong) database does
/// not pass unnoticed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Users.
    pub users: u64,
    /// Clients.
    pub clients: u64,
    /// Grants.
    pub grants: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
    /// Authorization codes.
    pub auth_codes: u64,
    /// Device authorizations.
    pub device_codes: u64,
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} users, {} clients, {} grants, {} refresh tokens, {} authorization codes, {} device authorizations",
            self.users,
            self.clients,
            self.grants,
            self.refresh_tokens,
            self.auth_codes,
            self.device_codes
        )
    }
}

/// The outcome of a consistency check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consistency {
    /// What was looked at.
    pub checked: Checked,
    /// What disagrees; empty when the store is consistent.
    pub problems: Vec<Inconsistency>,
}

/// The counts of [`Checked`], in its field order, as one row.
pub(super) const COUNTS: &str =
    "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM clients),
    (SELECT COUNT(*) FROM grants), (SELECT COUNT(*) FROM refresh_tokens),
    (SELECT COUNT(*) FROM auth_codes), (SELECT COUNT(*) FROM device_codes)";

/// Which [`Inconsistency`] a query's rows are.
#[derive(Clone, Copy, Debug)]
pub(super) enum Finding {
    RefreshTokensWithoutGrant,
    ForkedChain,
    CutChain,
    CodesWithoutGrant,
    CodesOfAnotherClient,
    DeviceCodesWithoutGrant,
    DeviceCodesInBadState,
    GrantWithoutUser,
    GrantWithoutClient,
    SessionsWithoutUser,
    IdentitiesWithoutUser,
    ConsentsWithoutUser,
    ConsentsWithoutClient,
}

impl Finding {
    /// The inconsistency a row `(a, b, n)` of this finding's query stands for.
    pub(super) fn of(self, a: String, b: Option<String>, n: i64) -> Inconsistency {
        let count = u64::try_from(n).unwrap_or(0);
        let b = b.unwrap_or_default();
        match self {
            Self::RefreshTokensWithoutGrant => {
                Inconsistency::RefreshTokensWithoutGrant { grant_id: a, count }
            }
            Self::ForkedChain => Inconsistency::ForkedChain {
                grant_id: a,
                live: count,
            },
            Self::CutChain => Inconsistency::CutChain { grant_id: a },
            Self::CodesWithoutGrant => Inconsistency::CodesWithoutGrant { grant_id: a, count },
            Self::CodesOfAnotherClient => {
                Inconsistency::CodesOfAnotherClient { grant_id: a, count }
            }
            Self::DeviceCodesWithoutGrant => {
                Inconsistency::DeviceCodesWithoutGrant { grant_id: a, count }
            }
            Self::DeviceCodesInBadState => {
                Inconsistency::DeviceCodesInBadState { status: a, count }
            }
            Self::GrantWithoutUser => Inconsistency::GrantWithoutUser {
                grant_id: a,
                user_id: b,
            },
            Self::GrantWithoutClient => Inconsistency::GrantWithoutClient {
                grant_id: a,
                client_id: b,
            },
            Self::SessionsWithoutUser => Inconsistency::SessionsWithoutUser { user_id: a, count },
            Self::IdentitiesWithoutUser => {
                Inconsistency::IdentitiesWithoutUser { user_id: a, count }
            }
            Self::ConsentsWithoutUser => Inconsistency::ConsentsWithoutUser { user_id: a, count },
            Self::ConsentsWithoutClient => Inconsistency::ConsentsWithoutClient {
                client_id: a,
                count,
            },
        }
    }
}

/// One query of the check: its rows are `(a TEXT, b TEXT or NULL, n BIGINT)`, read by
/// [`Finding::of`]; `$1`, where a query uses it, is the time now.
pub(super) struct Query {
    /// What its rows mean.
    pub(super) finding: Finding,
    /// The SQL (the same for SQLite and PostgreSQL).
    pub(super) sql: String,
    /// Whether it takes the time now as `$1`.
    pub(super) takes_now: bool,
}

/// A query counting the rows of `table` whose `column` names a row of `target` (by
/// `key`) that does not exist, per missing id.
fn dangling(finding: Finding, table: &str, column: &str, target: &str, key: &str) -> Query {
    Query {
        finding,
        sql: format!(
            "SELECT t.{column}, CAST(NULL AS TEXT), COUNT(*) FROM {table} t
             LEFT JOIN {target} x ON x.{key} = t.{column}
             WHERE t.{column} IS NOT NULL AND x.{key} IS NULL
             GROUP BY t.{column} ORDER BY t.{column}"
        ),
        takes_now: false,
    }
}

/// Every query of the check, in report order.
pub(super) static QUERIES: LazyLock<Vec<Query>> = LazyLock::new(|| {
    let (pending, approved, denied, used) = (
        DeviceStatus::Pending.as_str(),
        DeviceStatus::Approved.as_str(),
        DeviceStatus::Denied.as_str(),
        DeviceStatus::Used.as_str(),
    );
    vec![
        Query {
            finding: Finding::GrantWithoutUser,
            sql: "SELECT g.id, g.user_id, COUNT(*) FROM grants g LEFT JOIN users u ON u.id = g.user_id
                  WHERE u.id IS NULL GROUP BY g.id, g.user_id ORDER BY g.id"
                .into(),
            takes_now: false,
        },
        Query {
            finding: Finding::GrantWithoutClient,
            sql: "SELECT g.id, g.client_id, COUNT(*) FROM grants g LEFT JOIN clients c ON c.client_id = g.client_id
                  WHERE c.client_id IS NULL GROUP BY g.id, g.client_id ORDER BY g.id"
                .into(),
            takes_now: false,
        },
        dangling(
            Finding::RefreshTokensWithoutGrant,
            "refresh_tokens",
            "grant_id",
            "grants",
            "id",
        ),
        Query {
            finding: Finding::ForkedChain,
            sql: "SELECT grant_id, CAST(NULL AS TEXT), COUNT(*) FROM refresh_tokens WHERE rotated_at IS NULL
                  GROUP BY grant_id HAVING COUNT(*) > 1 ORDER BY grant_id"
                .into(),
            takes_now: false,
        },
        Query {
            finding: Finding::CutChain,
            sql: "SELECT g.id, CAST(NULL AS TEXT), COUNT(*) FROM grants g JOIN refresh_tokens r ON r.grant_id = g.id
                  WHERE g.revoked = FALSE AND g.expires_at > $1
                  GROUP BY g.id HAVING COUNT(r.rotated_at) = COUNT(*) ORDER BY g.id"
                .into(),
            takes_now: true,
        },
        dangling(
            Finding::CodesWithoutGrant,
            "auth_codes",
            "grant_id",
            "grants",
            "id",
        ),
        Query {
            finding: Finding::CodesOfAnotherClient,
            sql: "SELECT c.grant_id, CAST(NULL AS TEXT), COUNT(*) FROM auth_codes c JOIN grants g ON g.id = c.grant_id
                  WHERE c.client_id <> g.client_id GROUP BY c.grant_id ORDER BY c.grant_id"
                .into(),
            takes_now: false,
        },
        dangling(
            Finding::DeviceCodesWithoutGrant,
            "device_codes",
            "grant_id",
            "grants",
            "id",
        ),
        Query {
            finding: Finding::DeviceCodesInBadState,
            sql: format!(
                "SELECT status, CAST(NULL AS TEXT), COUNT(*) FROM device_codes
                 WHERE NOT ((status IN ('{pending}', '{denied}') AND grant_id IS NULL)
                         OR (status IN ('{approved}', '{used}') AND grant_id IS NOT NULL))
                 GROUP BY status ORDER BY status"
            ),
            takes_now: false,
        },
        dangling(
            Finding::SessionsWithoutUser,
            "sessions",
            "user_id",
            "users",
            "id",
        ),
        dangling(
            Finding::IdentitiesWithoutUser,
            "identities",
            "user_id",
            "users",
            "id",
        ),
        dangling(
            Finding::ConsentsWithoutUser,
            "consents",
            "user_id",
            "users",
            "id",
        ),
        dangling(
            Finding::ConsentsWithoutClient,
            "consents",
            "client_id",
            "clients",
            "client_id",
        ),
    ]
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_ids_only() {
        let problem = Finding::GrantWithoutUser.of("g1".into(), Some("u1".into()), 1);
        assert_eq!(
            problem.to_string(),
            "grant g1 names user u1, who is missing"
        );
        let problem = Finding::ForkedChain.of("g2".into(), None, 2);
        assert_eq!(
            problem,
            Inconsistency::ForkedChain {
                grant_id: "g2".into(),
                live: 2
            }
        );
    }
}
