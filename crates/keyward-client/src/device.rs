//! The device flow's polling rules (RFC 8628 §3.5) as a pure function of the server's
//! answer: wait `interval` while the authorization is pending, five seconds more after
//! each `slow_down`, stop at `access_denied`, `expired_token` or when `expires_in` has
//! passed, and back off exponentially — a bounded number of times — when the server is
//! unreachable or failing.

use std::time::{Duration, Instant};

use keyward_proto::token::TokenResponse;

use crate::error::ClientError;

/// How much `slow_down` adds to the interval (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Consecutive transient failures (unreachable, 5xx, 429) tolerated before giving up.
pub const MAX_TRANSIENT_FAILURES: u32 = 5;
/// The longest back-off after transient failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest `interval` taken from a server: a longer one is taken as this.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest a device code is polled for, whatever its `expires_in` says.
pub const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

/// The polling schedule of one device authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePoll {
    /// The current interval between polls.
    pub interval: Duration,
    /// When the device code expires (`expires_in` after it was issued).
    pub deadline: Instant,
    /// Transient failures in a row.
    pub transient_failures: u32,
}

/// What to do after a poll.
#[derive(Debug)]
pub enum PollDecision {
    /// Poll again after this long.
    Wait(Duration),
    /// The user approved: here are the tokens.
    Done(TokenResponse),
    /// The login is over without tokens.
    Fail(ClientError),
}

impl DevicePoll {
    /// The schedule for a device code issued at `now` with the server's `interval` and
    /// `expires_in`, in seconds. A zero interval is taken as one second, one over
    /// [`MAX_INTERVAL`] as that, and the code is polled for at most [`MAX_LIFETIME`]:
    /// whatever numbers a server sends, the schedule stays countable.
    pub fn new(interval: u64, expires_in: u64, now: Instant) -> Self {
        Self {
            interval: Duration::from_secs(interval.max(1)).min(MAX_INTERVAL),
            deadline: now + Duration::from_secs(expires_in).min(MAX_LIFETIME),
            transient_failures: 0,
        }
    }

    /// Judges one poll's answer, received at `now`, and updates the schedule.
    pub fn decide(
        &mut self,
        answer: Result<TokenResponse, ClientError>,
        now: Instant,
    ) -> PollDecision {
        let error = match answer {
            Ok(tokens) => return PollDecision::Done(tokens),
            Err(error) => error,
        };
        let wait = match &error {
            ClientError::Refused { error: code, .. } => match code.as_str() {
                "authorization_pending" => {
                    self.transient_failures = 0;
                    self.interval
                }
                "slow_down" => {
                    self.transient_failures = 0;
                    self.interval += SLOW_DOWN_STEP;
                    self.interval
                }
                "access_denied" => return PollDecision::Fail(ClientError::AccessDenied),
                "expired_token" => return PollDecision::Fail(ClientError::Expired),
                _ => return PollDecision::Fail(error),
            },
            transient if transient.is_transient() => {
                self.transient_failures += 1;
                if self.transient_failures > MAX_TRANSIENT_FAILURES {
                    return PollDecision::Fail(error);
                }
                let factor = 1u32 << self.transient_failures.min(6);
                (self.interval * factor).min(MAX_BACKOFF)
            }
            _ => return PollDecision::Fail(error),
        };
        if now + wait >= self.deadline {
            return PollDecision::Fail(ClientError::Expired);
        }
        PollDecision::Wait(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> Result<TokenResponse, ClientError> {
        Err(ClientError::Refused {
            url: "https://kw.example/token".into(),
            error: code.into(),
            description: None,
        })
    }

    fn unavailable() -> Result<TokenResponse, ClientError> {
        Err(ClientError::Status {
            url: "https://kw.example/token".into(),
            status: 503,
        })
    }

    fn wait(decision: PollDecision) -> Duration {
        match decision {
            PollDecision::Wait(d) => d,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    /// Found while writing the `client_answers` fuzz target, which reproduces it with
    /// fuzz/corpus/client_answers/device-huge-*: a server's `expires_in` or `interval`
    /// of 2^63 seconds or more made `keyward login` panic ("overflow when adding
    /// duration to instant"), in release builds too.
    #[test]
    fn a_server_cannot_make_the_schedule_overflow() {
        let now = Instant::now();
        for (interval, expires_in) in [(5, u64::MAX), (u64::MAX, 600), (i64::MAX as u64, 600)] {
            let mut poll = DevicePoll::new(interval, expires_in, now);
            assert!(poll.interval <= MAX_INTERVAL, "{interval}");
            assert!(poll.deadline <= now + MAX_LIFETIME, "{expires_in}");
            let next = now + poll.interval;
            for answer in [refused("slow_down"), unavailable(), unavailable()] {
                let _ = poll.decide(answer, next);
            }
        }
        // What a real server says is kept as it is.
        let poll = DevicePoll::new(5, 1800, now);
        assert_eq!(poll.interval, Duration::from_secs(5));
        assert_eq!(poll.deadline, now + Duration::from_secs(1800));
    }

    #[test]
    fn pending_waits_the_interval_and_slow_down_adds_five_seconds_each_time() {
        let now = Instant::now();
        let mut poll = DevicePoll::new(5, 600, now);
        assert_eq!(
            wait(poll.decide(refused("authorization_pending"), now)),
            Duration::from_secs(5)
        );
        assert_eq!(
            wait(poll.decide(refused("slow_down"), now)),
            Duration::from_secs(10)
        );
        assert_eq!(
            wait(poll.decide(refused("slow_down"), now)),
            Duration::from_secs(15)
        );
        // The longer interval stays.
        assert_eq!(
            wait(poll.decide(refused("authorization_pending"), now)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn tokens_end_the_polling() {
        let now = Instant::now();
        let mut poll = DevicePoll::new(5, 600, now);
        let tokens = TokenResponse {
            access_token: "a".into(),
            token_type: "Bearer".into(),
            expires_in: Some(900),
            refresh_token: None,
            id_token: None,
            scope: Default::default(),
            issued_token_type: None,
        };
        assert!(matches!(
            poll.decide(Ok(tokens), now),
            PollDecision::Done(t) if t.access_token == "a"
        ));
    }

    #[test]
    fn denial_expiry_and_other_errors_end_the_login() {
        let now = Instant::now();
        let mut poll = DevicePoll::new(5, 600, now);
        assert!(matches!(
            poll.decide(refused("access_denied"), now),
            PollDecision::Fail(ClientError::AccessDenied)
        ));
        assert!(matches!(
            poll.decide(refused("expired_token"), now),
            PollDecision::Fail(ClientError::Expired)
        ));
        assert!(matches!(
            poll.decide(refused("invalid_client"), now),
            PollDecision::Fail(ClientError::Refused { error, .. }) if error == "invalid_client"
        ));
        let bad = Err(ClientError::BadResponse {
            url: "u".into(),
            reason: "r".into(),
        });
        assert!(matches!(
            poll.decide(bad, now),
            PollDecision::Fail(ClientError::BadResponse { .. })
        ));
    }

    #[test]
    fn expires_in_is_a_hard_stop() {
        let now = Instant::now();
        let mut poll = DevicePoll::new(5, 12, now);
        assert!(matches!(
            poll.decide(refused("authorization_pending"), now),
            PollDecision::Wait(_)
        ));
        // The next poll would land after the deadline: give up now, not after it.
        assert!(matches!(
            poll.decide(
                refused("authorization_pending"),
                now + Duration::from_secs(8)
            ),
            PollDecision::Fail(ClientError::Expired)
        ));
    }

    #[test]
    fn transient_failures_back_off_and_are_bounded() {
        let now = Instant::now();
        let mut poll = DevicePoll::new(1, 3600, now);
        let mut waits = Vec::new();
        for _ in 0..MAX_TRANSIENT_FAILURES {
            waits.push(wait(poll.decide(unavailable(), now)).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32]);
        assert!(matches!(
            poll.decide(unavailable(), now),
            PollDecision::Fail(ClientError::Status { status: 503, .. })
        ));

        // A pending answer in between resets the count.
        let mut poll = DevicePoll::new(1, 3600, now);
        for _ in 0..MAX_TRANSIENT_FAILURES {
            let _ = poll.decide(unavailable(), now);
        }
        let _ = wait(poll.decide(refused("authorization_pending"), now));
        assert_eq!(wait(poll.decide(unavailable(), now)).as_secs(), 2);
    }
}
