//! Authentication on a WebSocket: WebsockexNova's AuthFlow on the wire, as a state
//! machine with no I/O. The proxy ([`crate::proxy`]) — or any axum or tokio-tungstenite
//! service — classifies each client frame with [`classify`], checks the tokens it
//! carries, feeds the outcomes and the clock to a [`Session`], and carries out the
//! [`Action`]s it returns.
//!
//! The protocol, all messages JSON text frames:
//! - The client authenticates with the upgrade's `Authorization: Bearer` header, or
//!   else with its first text frame `{"type":"auth","token":"…"}` within
//!   [`AUTH_TIMEOUT`].
//! - The guard answers `{"type":"auth_success","expires_at":<unix seconds>}`, or
//!   `{"type":"auth_error","reason":"…"}` and close code [`close::UNAUTHORIZED`] (4401).
//!   The upstream is opened only after success; nothing the client sends before it is
//!   forwarded (a frame other than `auth` before success is an `auth_error` and 4401).
//! - At any time the client may send another `auth` frame: a valid token for the same
//!   `sub` gives `auth_success` with the new `expires_at`; a valid token for another
//!   subject gives `auth_error` and close [`close::FORBIDDEN`] (4403); an invalid one
//!   `auth_error` and 4401. Neither frame reaches the upstream.
//! - [`REAUTH_NOTICE`] seconds before `expires_at` the guard sends
//!   `{"type":"reauth_required","expires_at":…}`, once per token.
//! - At `expires_at` without re-authentication both sides are closed with 4401
//!   `token expired`; a token keyward no longer holds active is closed with 4401
//!   `token revoked`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a connection without an `Authorization` header has to send its `auth`
/// frame.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many seconds before expiry `reauth_required` is sent.
pub const REAUTH_NOTICE: i64 = 60;

/// Close codes (RFC 6455 §7.4.2 leaves 4000–4999 to applications; these mirror HTTP).
pub mod close {
    /// Not authenticated: no, a bad, an expired or a revoked token.
    pub const UNAUTHORIZED: u16 = 4401;
    /// Re-authenticated as someone else.
    pub const FORBIDDEN: u16 = 4403;
    /// The upstream could not be reached (RFC 6455 "bad gateway").
    pub const BAD_GATEWAY: u16 = 1014;
}

/// Close reasons the guard sends.
pub mod reason {
    /// The token's `exp` passed without re-authentication.
    pub const EXPIRED: &str = "token expired";
    /// keyward no longer holds the token active.
    pub const REVOKED: &str = "token revoked";
    /// No `auth` frame within [`super::AUTH_TIMEOUT`].
    pub const AUTH_TIMEOUT: &str = "authentication timed out";
    /// An `auth_error` was sent.
    pub const AUTH_FAILED: &str = "authentication failed";
    /// A re-authentication named another subject.
    pub const OTHER_SUBJECT: &str = "another subject";
}

/// A message from the guard to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The token was accepted; it is good until `expires_at` (unix seconds).
    AuthSuccess {
        /// The token's `exp`.
        expires_at: i64,
    },
    /// The token was refused; a close follows.
    AuthError {
        /// Why, for a person.
        reason: String,
    },
    /// Re-authenticate before `expires_at` or be closed.
    ReauthRequired {
        /// The current token's `exp`.
        expires_at: i64,
    },
}

impl ServerMessage {
    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a client text frame is to the protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `{"type":"auth","token":"…"}`.
    Auth(String),
    /// `{"type":"auth",…}` without a string `token`.
    BadAuth,
    /// Anything else: data for the upstream.
    Data(&'a str),
}

/// Reads a client text frame: a JSON object whose `type` is `auth` is the protocol's;
/// everything else is data.
pub fn classify(text: &str) -> Frame<'_> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
        token: Option<serde_json::Value>,
    }
    // Cheap test first: most data frames are not auth frames.
    if !text.trim_start().starts_with('{') || !text.contains("auth") {
        return Frame::Data(text);
    }
    match serde_json::from_str::<Probe>(text) {
        Ok(Probe {
            kind: Some(serde_json::Value::String(kind)),
            token,
        }) if kind == "auth" => match token {
            Some(serde_json::Value::String(token)) => Frame::Auth(token),
            _ => Frame::BadAuth,
        },
        _ => Frame::Data(text),
    }
}

/// A checked token, as far as the session needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The subject.
    pub sub: String,
    /// The token's `exp`, unix seconds.
    pub expires_at: i64,
}

/// What the I/O around the session must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to the upstream (before anything else is sent).
    OpenUpstream,
    /// Send this to the client.
    Send(ServerMessage),
    /// Forward the frame just received to the upstream.
    Forward,
    /// Close the client (and the upstream, if open) with this code and reason.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for an `auth` frame until `deadline_ms`.
    Pending { deadline_ms: i64 },
    /// Authenticated as `sub` until `expires_at`; `notified` once `reauth_required` went
    /// out for this `expires_at`.
    Open {
        sub: String,
        expires_at: i64,
        notified: bool,
    },
    /// Closed: nothing more happens.
    Closed,
}

/// One connection's place in the protocol. Times are unix milliseconds (`now_ms`), so
/// that a test can drive it with any clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    state: State,
}

impl Session {
    /// A connection that must still authenticate, opened at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            state: State::Pending {
                deadline_ms: now_ms + millis(AUTH_TIMEOUT),
            },
        }
    }

    /// A connection whose upgrade carried a good token: the upstream is opened and the
    /// client told at once.
    pub fn with_header(identity: Identity, now_ms: i64) -> (Self, Vec<Action>) {
        let mut session = Self::new(now_ms);
        let actions = session.on_auth(Ok(identity), now_ms);
        (session, actions)
    }

    /// The subject, once authenticated.
    pub fn sub(&self) -> Option<&str> {
        match &self.state {
            State::Open { sub, .. } => Some(sub),
            _ => None,
        }
    }

    /// Whether the connection is authenticated (frames go upstream).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The outcome of checking an `auth` frame's token (or the header's): the identity,
    /// or why it was refused and the close code for a refusal.
    pub fn on_auth(&mut self, outcome: Result<Identity, String>, now_ms: i64) -> Vec<Action> {
        let identity = match outcome {
            Ok(identity) if identity.expires_at * 1000 > now_ms => identity,
            Ok(_) => return self.fail(close::UNAUTHORIZED, "token expired".into()),
            Err(reason) => return self.fail(close::UNAUTHORIZED, reason),
        };
        match &self.state {
            State::Closed => Vec::new(),
            State::Pending { .. } => {
                let expires_at = identity.expires_at;
                self.state = State::Open {
                    sub: identity.sub,
                    expires_at,
                    notified: false,
                };
                vec![
                    Action::OpenUpstream,
                    Action::Send(ServerMessage::AuthSuccess { expires_at }),
                ]
            }
            State::Open { sub, .. } if *sub != identity.sub => self.fail(
                close::FORBIDDEN,
                "the token is for another subject than this connection's".into(),
            ),
            State::Open { sub, .. } => {
                let expires_at = identity.expires_at;
                self.state = State::Open {
                    sub: sub.clone(),
                    expires_at,
                    notified: false,
                };
                vec![Action::Send(ServerMessage::AuthSuccess { expires_at })]
            }
        }
    }

    /// An `auth` frame without a token.
    pub fn on_bad_auth(&mut self) -> Vec<Action> {
        self.fail(
            close::UNAUTHORIZED,
            "an auth message needs a string token".into(),
        )
    }

    /// A data frame (text that is not `auth`, or binary) from the client.
    pub fn on_data(&mut self) -> Vec<Action> {
        match self.state {
            State::Open { .. } => vec![Action::Forward],
            State::Pending { .. } => self.fail(
                close::UNAUTHORIZED,
                "authenticate first: send {\"type\":\"auth\",\"token\":\"…\"}".into(),
            ),
            State::Closed => Vec::new(),
        }
    }

    /// The clock reached `now_ms` (call it at [`Session::next_wakeup`]).
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<Action> {
        match &mut self.state {
            State::Pending { deadline_ms } if now_ms >= *deadline_ms => {
                self.state = State::Closed;
                vec![
                    Action::Send(ServerMessage::AuthError {
                        reason: "no auth message in time".into(),
                    }),
                    Action::Close {
                        code: close::UNAUTHORIZED,
                        reason: reason::AUTH_TIMEOUT,
                    },
                ]
            }
            State::Open { expires_at, .. } if now_ms >= *expires_at * 1000 => {
                self.state = State::Closed;
                vec![Action::Close {
                    code: close::UNAUTHORIZED,
                    reason: reason::EXPIRED,
                }]
            }
            State::Open {
                expires_at,
                notified,
                ..
            } if !*notified && now_ms >= (*expires_at - REAUTH_NOTICE) * 1000 => {
                *notified = true;
                vec![Action::Send(ServerMessage::ReauthRequired {
                    expires_at: *expires_at,
                })]
            }
            _ => Vec::new(),
        }
    }

    /// keyward says the current token is no longer active.
    pub fn on_revoked(&mut self) -> Vec<Action> {
        if self.state == State::Closed {
            return Vec::new();
        }
        self.state = State::Closed;
        vec![Action::Close {
            code: close::UNAUTHORIZED,
            reason: reason::REVOKED,
        }]
    }

    /// When [`Session::on_tick`] next has something to do (unix ms), if ever.
    pub fn next_wakeup(&self) -> Option<i64> {
        match &self.state {
            State::Pending { deadline_ms } => Some(*deadline_ms),
            State::Open {
                expires_at,
                notified: false,
                ..
            } => Some((*expires_at - REAUTH_NOTICE) * 1000),
            State::Open { expires_at, .. } => Some(*expires_at * 1000),
            State::Closed => None,
        }
    }

    fn fail(&mut self, code: u16, why: String) -> Vec<Action> {
        if self.state == State::Closed {
            return Vec::new();
        }
        self.state = State::Closed;
        vec![
            Action::Send(ServerMessage::AuthError { reason: why }),
            Action::Close {
                code,
                reason: if code == close::FORBIDDEN {
                    reason::OTHER_SUBJECT
                } else {
                    reason::AUTH_FAILED
                },
            },
        ]
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn alice(expires_at: i64) -> Identity {
        Identity {
            sub: "alice".into(),
            expires_at,
        }
    }

    fn close_of(actions: &[Action]) -> Option<(u16, &'static str)> {
        actions.iter().find_map(|a| match a {
            Action::Close { code, reason } => Some((*code, *reason)),
            _ => None,
        })
    }

    #[test]
    fn the_wire_format_is_the_issues() {
        assert_eq!(
            ServerMessage::AuthSuccess { expires_at: 5 }.to_json(),
            r#"{"type":"auth_success","expires_at":5}"#
        );
        assert_eq!(
            ServerMessage::AuthError { reason: "x".into() }.to_json(),
            r#"{"type":"auth_error","reason":"x"}"#
        );
        assert_eq!(
            ServerMessage::ReauthRequired { expires_at: 7 }.to_json(),
            r#"{"type":"reauth_required","expires_at":7}"#
        );
        assert_eq!(
            classify(r#"{"type":"auth","token":"abc"}"#),
            Frame::Auth("abc".into())
        );
        assert_eq!(
            classify(r#" {"token":"abc", "type":"auth"}"#),
            Frame::Auth("abc".into())
        );
        assert_eq!(classify(r#"{"type":"auth"}"#), Frame::BadAuth);
        assert_eq!(classify(r#"{"type":"auth","token":3}"#), Frame::BadAuth);
        for data in [
            "hello",
            r#"{"type":"chat","text":"auth"}"#,
            r#"["auth"]"#,
            "{auth",
        ] {
            assert_eq!(classify(data), Frame::Data(data), "{data}");
        }
    }

    #[test]
    fn nothing_is_forwarded_before_authentication() {
        let mut session = Session::new(T0);
        assert!(!session.is_open());
        let actions = session.on_data();
        assert!(!actions.contains(&Action::Forward));
        assert!(!actions.contains(&Action::OpenUpstream));
        assert_eq!(
            close_of(&actions),
            Some((close::UNAUTHORIZED, reason::AUTH_FAILED))
        );
        assert!(matches!(
            &actions[0],
            Action::Send(ServerMessage::AuthError { .. })
        ));
        assert!(session.is_closed());
        assert_eq!(session.on_data(), []);
    }

    #[test]
    fn a_first_frame_authenticates_and_opens_the_upstream_then_data_flows() {
        let mut session = Session::new(T0);
        let exp = T0 / 1000 + 600;
        assert_eq!(
            session.on_auth(Ok(alice(exp)), T0 + 5),
            [
                Action::OpenUpstream,
                Action::Send(ServerMessage::AuthSuccess { expires_at: exp })
            ]
        );
        assert_eq!(session.sub(), Some("alice"));
        assert_eq!(session.on_data(), [Action::Forward]);
    }

    #[test]
    fn a_refused_or_expired_token_is_an_auth_error_and_4401() {
        let mut session = Session::new(T0);
        let actions = session.on_auth(Err("bad signature".into()), T0);
        assert_eq!(
            actions[0],
            Action::Send(ServerMessage::AuthError {
                reason: "bad signature".into()
            })
        );
        assert_eq!(
            close_of(&actions),
            Some((close::UNAUTHORIZED, reason::AUTH_FAILED))
        );
        // A token whose exp has passed (but within the verifier's skew) is not taken.
        let mut session = Session::new(T0);
        let actions = session.on_auth(Ok(alice(T0 / 1000)), T0);
        assert_eq!(close_of(&actions).map(|c| c.0), Some(close::UNAUTHORIZED));
        assert!(!actions.contains(&Action::OpenUpstream));
    }

    #[test]
    fn no_auth_frame_within_ten_seconds_closes_with_4401() {
        let mut session = Session::new(T0);
        assert_eq!(session.next_wakeup(), Some(T0 + 10_000));
        assert_eq!(session.on_tick(T0 + 9_999), []);
        let actions = session.on_tick(T0 + 10_000);
        assert_eq!(
            close_of(&actions),
            Some((close::UNAUTHORIZED, reason::AUTH_TIMEOUT))
        );
        assert_eq!(session.next_wakeup(), None);
    }

    #[test]
    fn reauthentication_extends_the_same_subject_and_is_never_forwarded() {
        let exp = T0 / 1000 + 100;
        let (mut session, actions) = Session::with_header(alice(exp), T0);
        assert_eq!(actions[0], Action::OpenUpstream);
        // 60 s before expiry: one notice.
        assert_eq!(session.next_wakeup(), Some((exp - 60) * 1000));
        assert_eq!(session.on_tick((exp - 61) * 1000), []);
        assert_eq!(
            session.on_tick((exp - 60) * 1000),
            [Action::Send(ServerMessage::ReauthRequired {
                expires_at: exp
            })]
        );
        assert_eq!(session.on_tick((exp - 30) * 1000), []);
        assert_eq!(session.next_wakeup(), Some(exp * 1000));
        // A new token for alice: a new expiry, a new notice later, nothing forwarded.
        let later = exp + 100;
        let actions = session.on_auth(Ok(alice(later)), (exp - 10) * 1000);
        assert_eq!(
            actions,
            [Action::Send(ServerMessage::AuthSuccess {
                expires_at: later
            })]
        );
        assert_eq!(session.on_tick(exp * 1000), [], "the old expiry is gone");
        assert_eq!(session.next_wakeup(), Some((later - 60) * 1000));
        // Another subject: 4403.
        let bob = Identity {
            sub: "bob".into(),
            expires_at: later + 100,
        };
        let actions = session.on_auth(Ok(bob), exp * 1000);
        assert!(matches!(
            &actions[0],
            Action::Send(ServerMessage::AuthError { .. })
        ));
        assert_eq!(
            close_of(&actions),
            Some((close::FORBIDDEN, reason::OTHER_SUBJECT))
        );
        assert!(session.is_closed());
    }

    #[test]
    fn a_bad_reauthentication_closes_with_4401() {
        let exp = T0 / 1000 + 100;
        let (mut session, _) = Session::with_header(alice(exp), T0);
        let actions = session.on_auth(Err("expired".into()), T0 + 1);
        assert_eq!(close_of(&actions).map(|c| c.0), Some(close::UNAUTHORIZED));
        let (mut session, _) = Session::with_header(alice(exp), T0);
        assert_eq!(
            close_of(&session.on_bad_auth()).map(|c| c.0),
            Some(close::UNAUTHORIZED)
        );
    }

    #[test]
    fn expiry_and_revocation_close_with_4401_and_their_reason() {
        let exp = T0 / 1000 + 20;
        let (mut session, _) = Session::with_header(alice(exp), T0);
        // Within a minute of expiry from the start: the notice is due at once.
        assert_eq!(session.next_wakeup(), Some((exp - 60) * 1000));
        assert_eq!(
            session.on_tick(T0),
            [Action::Send(ServerMessage::ReauthRequired {
                expires_at: exp
            })]
        );
        assert_eq!(session.on_tick(exp * 1000 - 1), []);
        assert_eq!(
            session.on_tick(exp * 1000),
            [Action::Close {
                code: close::UNAUTHORIZED,
                reason: reason::EXPIRED
            }]
        );
        assert_eq!(session.on_revoked(), []);

        let (mut session, _) = Session::with_header(alice(exp), T0);
        assert_eq!(
            session.on_revoked(),
            [Action::Close {
                code: close::UNAUTHORIZED,
                reason: reason::REVOKED
            }]
        );
        assert_eq!(session.on_data(), []);
    }
}
