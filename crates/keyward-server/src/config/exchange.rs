//! Token exchange (RFC 8693) settings: `[exchange]` (the issued tokens' lifetime),
//! `[[audiences]]` (the services an exchanged token may be for), `[[policies]]`
//! (which subjects may hold which scopes) and `[[trusted_issuers]]` (whose JWTs name
//! machine subjects, such as CI workload identities), as written and as validated.
//!
//! ```toml
//! [exchange]
//! lifetime = "15m"
//!
//! [[audiences]]
//! id = "queue"
//! max_lifetime = "5m"
//!
//! [[policies]]
//! subjects = ["group:corp:sre", "user:alice", "client:ci", "connector:github"]
//! scopes = ["queue:create-task:proj-infra/*", "secrets:get:infra/*"]
//!
//! [[trusted_issuers]]
//! id = "gha"
//! issuer = "https://token.actions.githubusercontent.com"
//! audience = "https://id.example.com"
//! subject_claims = ["repository", "ref"]
//! ```

use std::time::Duration;

use keyward_proto::ScopeSet;
use serde::Deserialize;

use url::Url;

use super::{ConfigError, invalid, parse_duration};
use crate::net::is_loopback_host;

/// The kinds of subject a policy may name, as the prefix before the first `:`.
pub const SUBJECT_KINDS: [&str; 5] = ["user", "group", "client", "connector", "trusted"];

/// The default lifetime of an exchanged token.
const DEFAULT_LIFETIME: u64 = 15 * 60;
/// The shortest and longest lifetimes that may be configured.
const LIFETIME_RANGE: (u64, u64) = (10, 24 * 3600);

/// `[exchange]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExchangeFile {
    lifetime: Option<String>,
}

/// An `[[audiences]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AudienceFile {
    id: String,
    max_lifetime: Option<String>,
}

/// A `[[policies]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    subjects: Vec<String>,
    scopes: Vec<String>,
}

/// A `[[trusted_issuers]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrustedIssuerFile {
    id: String,
    issuer: String,
    audience: String,
    subject_claims: Vec<String>,
}

/// The validated token exchange settings.
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    /// How long an exchanged token lives, unless its audience allows less.
    pub lifetime: Duration,
    /// The services exchanged tokens may be for.
    pub audiences: Vec<AudienceConfig>,
    /// Which subjects hold which scopes.
    pub policies: Vec<Policy>,
    /// Issuers whose JWTs are accepted as subject tokens naming machine subjects.
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
}

/// An issuer of JWTs about machines (a CI system's workload identities): a JWT it
/// signed, for `audience`, is a subject token naming the machine subject
/// `trusted:<id>:<values of subject_claims joined by ':'>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedIssuerConfig {
    /// Its name in subject names (no `:`).
    pub id: String,
    /// Its `iss`, exactly; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` its tokens must have to be exchanged here.
    pub audience: String,
    /// The claims whose values name the machine, in order.
    pub subject_claims: Vec<String>,
}

/// A service an exchanged token may be for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudienceConfig {
    /// Its name: the `audience` or `resource` a client asks for, and the token's `aud`.
    pub id: String,
    /// The longest an exchanged token for it may live.
    pub max_lifetime: Option<Duration>,
}

/// Subjects and the scopes they hold (a scope ending in `*` holds every scope with
/// that prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `user:NAME`, `group:GROUP`, `client:ID`, `connector:ID` or `trusted:ID:VALUES`.
    pub subjects: Vec<String>,
    /// The scopes they hold.
    pub scopes: Vec<String>,
}

impl ExchangeConfig {
    /// The audience named `id`, if registered.
    pub fn audience(&self, id: &str) -> Option<&AudienceConfig> {
        self.audiences.iter().find(|a| a.id == id)
    }
}

/// The sections of the file this module validates.
pub(super) struct Sections {
    pub exchange: ExchangeFile,
    pub audiences: Vec<AudienceFile>,
    pub policies: Vec<PolicyFile>,
    pub trusted_issuers: Vec<TrustedIssuerFile>,
}

/// Validates the four sections.
pub(super) fn validate(sections: Sections) -> Result<ExchangeConfig, ConfigError> {
    let Sections {
        exchange,
        audiences,
        policies,
        trusted_issuers,
    } = sections;
    let default = lifetime("exchange.lifetime", exchange.lifetime)?
        .unwrap_or(Duration::from_secs(DEFAULT_LIFETIME));
    let mut seen = std::collections::BTreeSet::new();
    let mut checked = Vec::new();
    for (i, audience) in audiences.into_iter().enumerate() {
        let key = |field: &str| format!("audiences[{i}].{field}");
        let id = audience.id.trim();
        if id.is_empty() || id.len() > 255 || id.chars().any(char::is_whitespace) {
            return Err(invalid(
                key("id"),
                "must be 1 to 255 characters without spaces",
            ));
        }
        if !seen.insert(id.to_owned()) {
            return Err(invalid(key("id"), format!("{id:?} is declared twice")));
        }
        checked.push(AudienceConfig {
            id: id.to_owned(),
            max_lifetime: lifetime(&key("max_lifetime"), audience.max_lifetime)?,
        });
    }
    let mut rules = Vec::new();
    for (i, policy) in policies.into_iter().enumerate() {
        for (j, subject) in policy.subjects.iter().enumerate() {
            match subject.split_once(':') {
                Some((kind, rest)) if SUBJECT_KINDS.contains(&kind) && !rest.is_empty() => {}
                _ => {
                    return Err(invalid(
                        format!("policies[{i}].subjects[{j}]"),
                        format!(
                            "must be KIND:NAME with KIND one of {}",
                            SUBJECT_KINDS.join(", ")
                        ),
                    ));
                }
            }
        }
        for (j, scope) in policy.scopes.iter().enumerate() {
            let parsed = ScopeSet::parse(scope).ok();
            if scope.is_empty() || parsed.is_none_or(|set| set.iter().count() != 1) {
                return Err(invalid(
                    format!("policies[{i}].scopes[{j}]"),
                    "must be one scope (RFC 6749 §3.3 characters, no spaces)",
                ));
            }
        }
        rules.push(Policy {
            subjects: policy.subjects,
            scopes: policy.scopes,
        });
    }
    Ok(ExchangeConfig {
        lifetime: default,
        audiences: checked,
        policies: rules,
        trusted_issuers: trusted(trusted_issuers)?,
    })
}

/// Validates `[[trusted_issuers]]`: ids fit in a subject name and are unique, issuers
/// are https (http only on this machine) and unique, audiences and claims are named.
fn trusted(entries: Vec<TrustedIssuerFile>) -> Result<Vec<TrustedIssuerConfig>, ConfigError> {
    let mut checked: Vec<TrustedIssuerConfig> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let key = |field: &str| format!("trusted_issuers[{i}].{field}");
        let id = entry.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                key("id"),
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if checked.iter().any(|t| t.id == id) {
            return Err(invalid(key("id"), format!("{id:?} is declared twice")));
        }
        let url = Url::parse(&entry.issuer).map_err(|e| {
            invalid(
                key("issuer"),
                format!("{:?} is not a URL: {e}", entry.issuer),
            )
        })?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(url.host_str()) => {}
            _ => {
                return Err(invalid(
                    key("issuer"),
                    "must be https (http only for localhost)",
                ));
            }
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(invalid(
                key("issuer"),
                "must not have a query, fragment or user info",
            ));
        }
        if checked.iter().any(|t| t.issuer == entry.issuer) {
            return Err(invalid(
                key("issuer"),
                format!("{:?} is declared twice", entry.issuer),
            ));
        }
        if entry.audience.trim().is_empty() {
            return Err(invalid(key("audience"), "must not be empty"));
        }
        if entry.subject_claims.is_empty() {
            return Err(invalid(
                key("subject_claims"),
                "must name at least one claim (such as \"repository\")",
            ));
        }
        if let Some(j) = entry
            .subject_claims
            .iter()
            .position(|c| c.trim().is_empty())
        {
            return Err(invalid(
                format!("trusted_issuers[{i}].subject_claims[{j}]"),
                "must not be empty",
            ));
        }
        checked.push(TrustedIssuerConfig {
            id,
            issuer: entry.issuer,
            audience: entry.audience,
            subject_claims: entry.subject_claims,
        });
    }
    Ok(checked)
}

/// A lifetime within [`LIFETIME_RANGE`], if given.
fn lifetime(key: &str, value: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let duration = parse_duration(&text).map_err(|message| invalid(key, message))?;
    let (least, most) = LIFETIME_RANGE;
    if duration.as_secs() < least || duration.as_secs() > most {
        return Err(invalid(key, "must be between 10s and 24h"));
    }
    Ok(Some(duration))
}
