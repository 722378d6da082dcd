//! End-to-end tests of keyward, through real HTTP on 127.0.0.1 port 0, a real SQLite
//! file or PostgreSQL database per test, and standard client libraries. One test binary
//! (each costs a link); the modules are its parts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin_api;
mod admin_cli;
mod backup;
mod browser_login;
mod browser_security;
mod cli_promises;
mod client;
mod connector_settings;
mod connectors;
mod console;
mod device;
mod email;
mod exchange;
mod exchange_upstream;
mod fake_github;
mod flows;
mod guard;
mod hostile;
mod js;
mod lifetimes;
mod openapi;
mod pkg;
mod replicas;
mod throttles;
mod upgrade;
