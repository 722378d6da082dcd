//! keyward's OAuth 2.0 / OpenID Connect authorization server, as a library.
//!
//! The binary (`keyward serve`) does config → [`state::AppState`] → [`http::app`] →
//! serve. Modules:
//! - [`config`]: typed configuration (TOML file and `KEYWARD_*` environment).
//! - [`upstream`]: the connectors: upstream OpenID Connect providers, GitHub, emailed
//!   links.
//! - [`accounts`]: which account an upstream identity signs in to; linking.
//! - [`policy`]: which subjects hold which scopes in a token exchange.
//! - [`domain`]: the records the server keeps and their validation rules.
//! - [`store`]: the storage trait, its SQLite and PostgreSQL implementations.
//! - [`keys`]: signing keys: generation, rotation, JWKS, signing and verification.
//! - [`password`]: Argon2id password hashing.
//! - [`clock`]: the time keyward decides by (settable in tests).
//! - [`mac`]: the server's MAC key, for values it hands out and must recognise.
//! - [`at_rest`]: encryption of the stored signing keys and MAC key
//!   (`KEYWARD_KEY_ENCRYPTION_KEY_FILE`).
//! - [`throttle`]: what slows down guessing (passwords, user codes, emailed links).
//! - [`net`]: client addresses behind trusted proxies; address groups for throttles.
//! - [`issuer`]: minting and checking access tokens, ID tokens and refresh tokens.
//! - [`grants`]: the rules of each grant of the token endpoint, with no HTTP types.
//! - [`serve`]: start-up, housekeeping and serving.
//! - [`memory`]: giving the memory a burst of requests freed back to the system.
//! - [`admin`]: operations behind `keyward client|user|key` and start-up sync.
//! - [`operator`]: what an administrator does through the admin API or console:
//!   checked, written to the audit log, then done; who is an administrator.
//! - [`pages`]: the page renderer (templates compiled in).
//! - [`state`]: the shared state of the HTTP handlers.
//! - [`telemetry`]: the per-server counters behind `/metrics` and the logging of
//!   internal failures.
//! - [`http`]: the endpoints, one module per family.
//!
//! The layers point down only (http → grants, accounts → issuer, keys, throttle →
//! store, upstream → config, domain and the primitives); `tests/layers.rs` fails when a
//! module imports upward.

pub mod accounts;
pub mod admin;
pub mod at_rest;
pub mod clock;
pub mod config;
pub mod domain;
pub mod grants;
pub mod http;
pub mod issuer;
pub mod keys;
pub mod mac;
pub mod memory;
pub mod net;
pub mod operator;
pub mod pages;
pub mod password;
pub mod policy;
pub mod serve;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod upstream;
