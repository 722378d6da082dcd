//! The client side of keyward guard's WebSocket protocol (WebsockexNova's AuthFlow on
//! the wire), as four decisions a WebSocket client makes: how to authenticate
//! ([`auth_frame`]), what a frame from the guard means ([`GuardMessage::parse`],
//! [`Session::handle`]), whether re-authentication is due given a threshold
//! ([`Session::reauth_due`]), and how to re-authenticate (another [`auth_frame`]).
//!
//! On the wire, as text frames of JSON:
//! - client → guard: `{"type":"auth","token":"…"}`, first (unless the upgrade carried
//!   `Authorization: Bearer …`) and again at any time to re-authenticate;
//! - guard → client: `{"type":"auth_success","expires_at":N}` (N in Unix seconds),
//!   `{"type":"auth_error","reason":"…"}` (followed by close 4401, or 4403 when a
//!   re-authentication named another subject), and `{"type":"reauth_required",
//!   "expires_at":N}` a minute before the token ends; at its end without a new token
//!   the guard closes with 4401 "token expired", and with 4401 "token revoked" when
//!   keyward revoked it.
//!
//! Everything else is the service's own traffic and is passed through untouched.

use serde::{Deserialize, Serialize};

/// Close code: authentication failed, the token expired or was revoked.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code: a re-authentication named another subject.
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// A control message from the guard.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuardMessage {
    /// The token was accepted; the connection lives until `expires_at` unless
    /// re-authenticated.
    AuthSuccess {
        /// When the token ends, Unix seconds.
        expires_at: i64,
    },
    /// The token was refused; the guard closes the connection.
    AuthError {
        /// Why, for the person.
        reason: String,
    },
    /// Re-authenticate before `expires_at`, or the guard closes the connection.
    ReauthRequired {
        /// When the current token ends.
        expires_at: i64,
    },
}

impl GuardMessage {
    /// The control message a text frame is, or `None` for the service's own traffic.
    pub fn parse(text: &str) -> Option<Self> {
        // Cheap test first: a service's frames are mostly not ours.
        if !text.trim_start().starts_with('{') || !text.contains("\"type\"") {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

#[derive(Serialize)]
struct AuthFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    token: &'a str,
}

/// The frame that authenticates (or re-authenticates) with `token`.
pub fn auth_frame(token: &str) -> String {
    serde_json::to_string(&AuthFrame {
        kind: "auth",
        token,
    })
    .unwrap_or_default()
}

/// Where an authenticated connection stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// When the token the guard accepted last ends (None until the first success).
    pub expires_at: Option<i64>,
    /// Whether an auth frame was sent and its answer has not come.
    pub awaiting_answer: bool,
    /// Whether the guard asked for a new token.
    pub reauth_requested: bool,
}

/// What to do after a control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Carry on.
    Continue,
    /// Re-authenticate now (the guard asked).
    Reauthenticate,
    /// The guard refused the token: stop, saying why.
    Refused(String),
}

impl Session {
    /// Notes that an auth frame was sent.
    pub fn sent_auth(&mut self) {
        self.awaiting_answer = true;
    }

    /// Takes in a control message from the guard.
    pub fn handle(&mut self, message: GuardMessage) -> Next {
        match message {
            GuardMessage::AuthSuccess { expires_at } => {
                self.expires_at = Some(expires_at);
                self.awaiting_answer = false;
                self.reauth_requested = false;
                Next::Continue
            }
            GuardMessage::AuthError { reason } => {
                self.awaiting_answer = false;
                Next::Refused(reason)
            }
            GuardMessage::ReauthRequired { expires_at } => {
                self.expires_at = Some(expires_at);
                if self.awaiting_answer {
                    return Next::Continue;
                }
                self.reauth_requested = true;
                Next::Reauthenticate
            }
        }
    }

    /// Whether to re-authenticate now: authenticated, no answer pending, and less than
    /// `threshold` seconds left (or the guard asked).
    pub fn reauth_due(&self, now: i64, threshold: i64) -> bool {
        if self.awaiting_answer {
            return false;
        }
        match self.expires_at {
            Some(end) => self.reauth_requested || end.saturating_sub(now) < threshold,
            None => false,
        }
    }

    /// Seconds until [`Session::reauth_due`] turns true (0 when it is), or `None`
    /// before the first success.
    pub fn reauth_in(&self, now: i64, threshold: i64) -> Option<i64> {
        let end = self.expires_at?;
        Some(end.saturating_sub(threshold).saturating_sub(now).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found while extending the `ws_frame` fuzz target to the session, which reproduces
    /// it with fuzz/corpus/ws_frame/success-long-ago: a guard's `expires_at` of -2^63
    /// overflowed the time left (a panic in a debug build, a re-authentication
    /// centuries away in a release build).
    #[test]
    fn any_expires_at_a_guard_sends_is_counted_without_overflow() {
        for expires_at in [i64::MIN, i64::MAX] {
            let mut session = Session::default();
            session.sent_auth();
            session.handle(GuardMessage::AuthSuccess { expires_at });
            let due = session.reauth_due(1_800_000_000, 60);
            let wait = session.reauth_in(1_800_000_000, 60);
            assert_eq!(due, expires_at == i64::MIN, "{expires_at}");
            assert_eq!(wait == Some(0), expires_at == i64::MIN, "{expires_at}");
        }
    }

    #[test]
    fn the_guards_messages_are_told_from_the_services_traffic() {
        assert_eq!(
            GuardMessage::parse(r#"{"type":"auth_success","expires_at":100}"#),
            Some(GuardMessage::AuthSuccess { expires_at: 100 })
        );
        assert_eq!(
            GuardMessage::parse(r#"{"type":"reauth_required","expires_at":7}"#),
            Some(GuardMessage::ReauthRequired { expires_at: 7 })
        );
        assert_eq!(
            GuardMessage::parse(r#"{"type":"auth_error","reason":"token expired"}"#),
            Some(GuardMessage::AuthError {
                reason: "token expired".into()
            })
        );
        for traffic in [
            "hello",
            r#"{"type":"chat","text":"hi"}"#,
            r#"{"type":"auth_success","expires_at":1,"extra":true}"#,
            r#"{"type":"auth_success"}"#,
            "[1,2]",
        ] {
            assert_eq!(GuardMessage::parse(traffic), None, "{traffic}");
        }
        assert_eq!(auth_frame("a\"b"), r#"{"type":"auth","token":"a\"b"}"#);
    }

    #[test]
    fn reauthentication_is_due_at_the_threshold_or_when_asked() {
        let mut session = Session::default();
        assert!(!session.reauth_due(0, 60));
        session.sent_auth();
        assert_eq!(
            session.handle(GuardMessage::AuthSuccess { expires_at: 1000 }),
            Next::Continue
        );
        assert!(!session.reauth_due(900, 60));
        assert_eq!(session.reauth_in(900, 60), Some(40));
        assert!(session.reauth_due(941, 60));
        // Asked by the guard: due at once, once.
        assert_eq!(
            session.handle(GuardMessage::ReauthRequired { expires_at: 1000 }),
            Next::Reauthenticate
        );
        assert!(session.reauth_due(0, 60));
        session.sent_auth();
        assert!(!session.reauth_due(999, 60), "an answer is pending");
        assert_eq!(
            session.handle(GuardMessage::ReauthRequired { expires_at: 1000 }),
            Next::Continue,
            "already re-authenticating"
        );
        assert_eq!(
            session.handle(GuardMessage::AuthSuccess { expires_at: 2000 }),
            Next::Continue
        );
        assert_eq!(session.expires_at, Some(2000));
        assert!(!session.reauth_due(1000, 60));
        assert_eq!(
            session.handle(GuardMessage::AuthError {
                reason: "another subject".into()
            }),
            Next::Refused("another subject".into())
        );
    }
}
