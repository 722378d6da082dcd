//! keyward's client library: what `keyward login | token | logout | status` are built
//! on. This first part holds the token files:
//!
//! - [`tokenfile`]: the per-server token file (`auth.toml`, in the format the Julia
//!   package client uses), where it lives, and how it is read and written safely by many
//!   processes at once (atomic replace, a cross-process lock, a corrupt or half-written
//!   file read as "no token").

pub mod tokenfile;
