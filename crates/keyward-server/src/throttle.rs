//! What slows down guessing: passwords, device user codes, emailed sign-in links.
//!
//! Every attempt is counted before it is checked, in one atomic step of the store
//! ([`ThrottleStore::throttle_attempt`](crate::store::ThrottleStore::throttle_attempt)), so parallel guesses cannot all slip past a check made
//! before any of them was counted. There are no hard lock-outs: a throttle makes the
//! next attempt wait, doubling the wait each time ([`ThrottlePolicy`]). Passwords are
//! throttled three ways:
//!
//! | key | policy | against |
//! |---|---|---|
//! | account and client address | [`PASSWORD_PER_ACCOUNT_AND_ADDRESS`] | one guesser at one account |
//! | account | [`PASSWORD_PER_ACCOUNT`], not for browsers that signed in to it before | guessers spread over many addresses |
//! | client address | [`PASSWORD_PER_ADDRESS`] | one guesser trying many accounts |
//!
//! so an attacker elsewhere slows down only their own attempts at the owner's account:
//! the owner's address has its own count, and the owner's browser, which signed in
//! before, is exempt from the account-wide one. Addresses are grouped as
//! [`crate::net::throttle_group`] says (IPv6 by /64). Keys are SHA-256 hashes of what
//! they count, so a 64 KiB "username" costs a row of the same size as any other.

use std::net::IpAddr;

use keyward_proto::TokenHash;

use crate::domain::{ThrottleAttempt, ThrottlePolicy};
use crate::store::{Store, StoreResult};

const DAY: i64 = 86_400;

/// Passwords for one account from one address: 5 at once, then 30 s, 1 min, 2 min, …
/// up to 15 minutes between attempts.
pub const PASSWORD_PER_ACCOUNT_AND_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 5,
    first_delay: 30,
    max_delay: 15 * 60,
    forget_after: DAY,
};

/// Passwords for one account from browsers that never signed in to it: 50 at once,
/// then 1 min, 2 min, … up to 15 minutes.
pub const PASSWORD_PER_ACCOUNT: ThrottlePolicy = ThrottlePolicy {
    free: 50,
    first_delay: 60,
    max_delay: 15 * 60,
    forget_after: DAY,
};

/// Passwords for any account from one address: 50 at once, then 30 s, 1 min, … up to
/// 15 minutes.
pub const PASSWORD_PER_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 50,
    first_delay: 30,
    max_delay: 15 * 60,
    forget_after: DAY,
};

/// User codes typed on `/device` from one address: 10 at once, then 30 s, 1 min, … up
/// to 15 minutes. (A user code has 20^8 values and lives 10 minutes.)
pub const USER_CODE_PER_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 10,
    first_delay: 30,
    max_delay: 15 * 60,
    forget_after: DAY,
};

/// Sign-in links mailed to one address: 5 at once, then one a minute, doubling, up to
/// one every 15 minutes.
pub const EMAIL_LINKS_PER_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 5,
    first_delay: 60,
    max_delay: 15 * 60,
    forget_after: DAY,
};

/// Sign-in links asked for from one client address: 30 at once, then 10 s, doubling,
/// up to 15 minutes.
pub const EMAIL_LINKS_PER_CLIENT: ThrottlePolicy = ThrottlePolicy {
    free: 30,
    first_delay: 10,
    max_delay: 15 * 60,
    forget_after: DAY,
};

/// A throttle key: the SHA-256 of what is counted, so its size is bounded whatever a
/// caller typed.
fn key(kind: &str, parts: &[&str]) -> TokenHash {
    let mut text = String::from(kind);
    for part in parts {
        text.push('\0');
        text.push_str(part);
    }
    TokenHash::of(&text)
}

/// The name an account is throttled under: what was typed, trimmed, without case.
fn account_name(username: &str) -> String {
    username.trim().to_lowercase()
}

/// The group of a client address (`unknown` when the server does not know it).
fn address(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), crate::net::throttle_group)
}

/// A password attempt that every throttle allowed; report how it ended.
#[derive(Debug)]
#[must_use = "report how the attempt ended"]
pub struct PasswordAttempt {
    pair: TokenHash,
    others: Vec<TokenHash>,
}

/// Counts a password attempt for `username` from `addr`; `known_browser` when the
/// browser signed in to that account before (see [`crate::mac::Purpose::KnownBrowser`]).
/// `Err(retry_after)` when a throttle makes it wait; nothing stays counted then.
pub async fn password_attempt(
    store: &dyn Store,
    username: &str,
    addr: Option<IpAddr>,
    known_browser: bool,
    now: i64,
) -> StoreResult<Result<PasswordAttempt, i64>> {
    let account = account_name(username);
    let address = address(addr);
    let mut checks = vec![(
        key("password-pair", &[&account, &address]),
        PASSWORD_PER_ACCOUNT_AND_ADDRESS,
    )];
    if !known_browser {
        checks.push((key("password-account", &[&account]), PASSWORD_PER_ACCOUNT));
    }
    checks.push((key("password-address", &[&address]), PASSWORD_PER_ADDRESS));
    let mut counted: Vec<TokenHash> = Vec::new();
    for (key, policy) in checks {
        match store.throttle_attempt(&key, &policy, now).await? {
            ThrottleAttempt::Allowed => counted.push(key),
            ThrottleAttempt::Refused { retry_after } => {
                // The attempt is not made: take back what was counted for it.
                for key in &counted {
                    store.throttle_undo(key).await?;
                }
                return Ok(Err(retry_after));
            }
        }
    }
    let pair = counted.remove(0);
    Ok(Ok(PasswordAttempt {
        pair,
        others: counted,
    }))
}

impl PasswordAttempt {
    /// The password was right: this account and address start over, and the attempt is
    /// taken back from the wider counts.
    pub async fn succeeded(self, store: &dyn Store) -> StoreResult<()> {
        store.throttle_clear(&self.pair).await?;
        for key in &self.others {
            store.throttle_undo(key).await?;
        }
        Ok(())
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {}
}

/// Counts a user code typed on `/device` from `addr`. `Err(retry_after)` when the
/// address must wait.
pub async fn user_code_attempt(
    store: &dyn Store,
    addr: Option<IpAddr>,
    now: i64,
) -> StoreResult<Result<UserCodeAttempt, i64>> {
    let key = key("user-code", &[&address(addr)]);
    Ok(
        match store
            .throttle_attempt(&key, &USER_CODE_PER_ADDRESS, now)
            .await?
        {
            ThrottleAttempt::Allowed => Ok(UserCodeAttempt { key }),
            ThrottleAttempt::Refused { retry_after } => Err(retry_after),
        },
    )
}

/// A counted user code attempt.
#[derive(Debug)]
#[must_use = "report whether the code was right"]
pub struct UserCodeAttempt {
    key: TokenHash,
}

impl UserCodeAttempt {
    /// The code was right: it does not count against the address.
    pub async fn succeeded(self, store: &dyn Store) -> StoreResult<()> {
        store.throttle_undo(&self.key).await
    }
}

/// Counts a request for a sign-in link to `email` from `addr`; false when either must
/// wait (the link is then silently not sent).
pub async fn email_link_allowed(
    store: &dyn Store,
    email: &str,
    addr: Option<IpAddr>,
    now: i64,
) -> StoreResult<bool> {
    let per_address = store
        .throttle_attempt(
            &key("email-link", &[&email.to_lowercase()]),
            &EMAIL_LINKS_PER_ADDRESS,
            now,
        )
        .await?;
    let per_client = store
        .throttle_attempt(
            &key("email-link-from", &[&address(addr)]),
            &EMAIL_LINKS_PER_CLIENT,
            now,
        )
        .await?;
    Ok(per_address == ThrottleAttempt::Allowed && per_client == ThrottleAttempt::Allowed)
}

/// Limits what unauthenticated callers can make the server store (logins in progress,
/// sign-ins at providers, device codes of public clients, Julia challenges): a token
/// bucket per address group, `unauthenticated_writes_per_minute` a minute (default
/// [`crate::config::DEFAULT_UNAUTHENTICATED_WRITES_PER_MINUTE`]) with bursts of as
/// many.
/// Kept in memory (per replica): it sits on the first request of every login, where a
/// write to the store would cost as much as what it guards. What it lets through
/// expires within minutes and is purged by the housekeeping, so storage stays bounded.
/// At most [`MAX_TRACKED`] address groups are tracked; past that, idle ones are
/// forgotten first, then all (an address flood makes the limiter forget, never refuse
/// everyone).
#[derive(Debug)]
pub struct CreationLimiter {
    per_minute: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

/// The most address groups tracked at once.
pub const MAX_TRACKED: usize = 100_000;

impl CreationLimiter {
    /// A limiter of `per_minute` creations per address group.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: std::sync::Mutex::default(),
        }
    }

    /// Takes one creation for `addr`; `Err(retry_after)` when its bucket is empty.
    pub fn allow(&self, addr: Option<IpAddr>) -> Result<(), i64> {
        self.allow_at(addr, std::time::Instant::now())
    }

    fn allow_at(&self, addr: Option<IpAddr>, now: std::time::Instant) -> Result<(), i64> {
        let capacity = self.per_minute;
        let per_second = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < capacity
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(address(addr)).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // Seconds until one token is back, rounded up.
            let wait = ((1.0 - bucket.tokens) / per_second).ceil();
            Err(wait.max(1.0) as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_are_forgotten_later() {
        let p = PASSWORD_PER_ACCOUNT_AND_ADDRESS;
        let mut delay = 0;
        let mut delays = Vec::new();
        for attempt in 1..=16 {
            delay = p.next_delay(attempt, delay);
            delays.push(delay);
        }
        assert_eq!(
            delays,
            [
                0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900, 900, 900, 900, 900, 900
            ]
        );
        for policy in [
            PASSWORD_PER_ACCOUNT_AND_ADDRESS,
            PASSWORD_PER_ACCOUNT,
            PASSWORD_PER_ADDRESS,
            USER_CODE_PER_ADDRESS,
            EMAIL_LINKS_PER_ADDRESS,
            EMAIL_LINKS_PER_CLIENT,
        ] {
            assert!(policy.forget_after > policy.max_delay, "{policy:?}");
            assert!(policy.free >= 1 && policy.first_delay >= 1, "{policy:?}");
            // The store purges throttles quiet for a day.
            assert!(policy.forget_after <= DAY, "{policy:?}");
        }
    }

    #[test]
    fn creations_are_limited_per_address_group_and_refill() {
        let limiter = CreationLimiter::new(120);
        let start = std::time::Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..120 {
            assert!(limiter.allow_at(Some(a), start).is_ok());
        }
        assert_eq!(limiter.allow_at(Some(same_64), start), Err(1));
        assert!(limiter.allow_at(Some(b), start).is_ok(), "another address");
        let later = start + std::time::Duration::from_secs(1);
        assert!(limiter.allow_at(Some(a), later).is_ok(), "refilled");
        assert!(limiter.allow_at(Some(a), later).is_ok());
        assert!(limiter.allow_at(Some(a), later).is_err());
    }

    #[test]
    fn keys_are_bounded_and_distinct() {
        let long = "x".repeat(65_536);
        assert_eq!(key("password-account", &[&long]).as_str().len(), 64);
        assert_ne!(key("a", &["b", "c"]), key("a", &["bc"]));
        assert_ne!(key("a", &["b"]), key("b", &["b"]));
        assert_eq!(account_name(" Alice "), "alice");
    }
}
