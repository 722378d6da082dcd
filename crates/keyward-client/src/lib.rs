//! keyward's client library: what `keyward login | token | logout | status` are built
//! on, usable against keyward or any OAuth server with device authorization (RFC 8628).
//!
//! - [`login`]: the login state machine ([`login::State`], driven by [`login::Flow`]):
//!   read the token file, refresh it when it is about to expire, or log in (through
//!   the browser or with the device flow), and write the result — once, under a lock, however many processes ask.
//! - [`loopback`]: logging in through the system browser (RFC 8252): the code flow
//!   with PKCE, redirected back to a one-shot listener on 127.0.0.1.
//! - [`exchange`]: short-lived tokens for one service, exchanged from the login
//!   (RFC 8693) and cached per audience and scopes.
//! - [`device`]: the device flow's polling rules as a pure function of the server's
//!   answers.
//! - [`http`]: the requests: discovery, device authorization, polling, refresh,
//!   revocation, with size caps and timeouts.
//! - [`tokenfile`]: the per-server token file (`auth.toml`, in the format the Julia
//!   package client uses), where it lives, and how it is read and written safely by many
//!   processes at once (atomic replace, a cross-process lock, a corrupt or half-written
//!   file read as "no token").
//! - [`ws`]: the client side of keyward guard's WebSocket protocol: authenticate,
//!   tell the guard's answers from the service's traffic, decide when to
//!   re-authenticate.
//! - [`error`]: what can go wrong, as one [`ClientError`].

pub mod device;
pub mod error;
pub mod exchange;
pub mod http;
pub mod login;
pub mod loopback;
pub mod tokenfile;
pub mod ws;

pub use error::ClientError;
pub use login::{Flow, LoginMethod, Options, State};
