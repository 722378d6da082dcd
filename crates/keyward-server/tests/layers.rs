//! The shape of keyward-server, checked: which module may use which (this test reads
//! the `use` lines and paths of every file under `src/`). Layers point down only:
//!
//! ```text
//! serve                       start-up and the serving loop
//! http/                       endpoints, one module per family
//! operator                    what an administrator does: checked, audited, done
//! state, pages, admin         what handlers share; the page renderer; admin operations
//! grants/, accounts, policy   the rules of each grant; which account an identity is;
//!                             which subject holds which exchanged scopes
//! issuer, keys, throttle      minting and checking tokens; signing keys; throttles
//! store/, upstream/           storage; the upstream providers
//! config, domain, mac, net,   configuration, records and rules, primitives
//! at_rest, password, telemetry
//! ```
//!
//! Nothing below `http/` names it, nothing below the HTTP layer speaks HTTP (axum), and
//! the store knows only the records it stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path, text));
            }
        }
    }
    found
}

/// The lines of `text` that are code (not comments), for matching paths in.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            !line.starts_with("//")
        })
        .map(|(i, line)| (i + 1, line))
}

/// (module path relative to `src/`, forbidden path, why).
const RULES: &[(&str, &str, &str)] = &[
    (
        "",
        "crate::http",
        "only serve.rs and lib.rs sit above the HTTP layer",
    ),
    ("grants/", "axum", "grants are protocol rules, not HTTP"),
    (
        "grants/",
        "crate::state",
        "grants take what they use (issuer::Issuer)",
    ),
    (
        "issuer.rs",
        "crate::state",
        "the issuer takes what it uses (Issuer)",
    ),
    ("issuer.rs", "axum", "minting tokens is not HTTP"),
    ("accounts.rs", "axum", "account rules are not HTTP"),
    ("policy.rs", "axum", "scope policies are not HTTP"),
    (
        "policy.rs",
        "crate::grants",
        "the grants use the policies, not the other way round",
    ),
    ("policy.rs", "crate::state", "policies take what they use"),
    ("store/", "axum", "storage is not HTTP"),
    ("store/", "crate::issuer", "the store knows only records"),
    ("store/", "crate::grants", "the store knows only records"),
    ("store/", "crate::keys", "the store knows only records"),
    ("store/", "crate::state", "the store knows only records"),
    (
        "domain.rs",
        "crate::config",
        "the records sit below the configuration",
    ),
    (
        "domain.rs",
        "crate::store",
        "the records sit below the store",
    ),
    (
        "state.rs",
        "crate::http",
        "the state sits below the HTTP layer",
    ),
    (
        "pages.rs",
        "crate::http",
        "the renderer sits below the HTTP layer",
    ),
    (
        "telemetry.rs",
        "crate::http",
        "telemetry sits below the HTTP layer",
    ),
    (
        "operator.rs",
        "axum",
        "administrative operations are not HTTP: the API and the console share them",
    ),
    (
        "admin.rs",
        "crate::operator",
        "the operator sits on the admin operations, not the other way round",
    ),
    (
        "state.rs",
        "crate::operator",
        "the operator sits on the state",
    ),
];

/// The endpoint modules of `http/`: none of them may use another (what they share
/// sits beside them: browser, login, provider, extract, error, page_error,
/// client_auth, routes).
const ENDPOINTS: &[&str] = &[
    "account",
    "admin_api",
    "authorize",
    "callback",
    "consent",
    "console",
    "device",
    "discovery",
    "health",
    "introspect",
    "logout",
    "openapi",
    "password",
    "pkg",
    "signin",
    "token",
    "userinfo",
];

/// Files allowed to name `crate::http` although outside it.
const ABOVE_HTTP: &[&str] = &["lib.rs", "serve.rs"];

/// What breaks the rules in `files` (path relative to `src/`, text).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (relative, text) in files {
        for (place, forbidden, why) in RULES {
            let applies = if place.is_empty() {
                !relative.starts_with("http/") && !ABOVE_HTTP.contains(&relative.as_str())
            } else {
                relative.starts_with(place)
            };
            if !applies {
                continue;
            }
            for (number, line) in code_lines(text) {
                let named = line.match_indices(forbidden).any(|(at, _)| {
                    let after = line[at + forbidden.len()..].chars().next();
                    !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if named {
                    broken.push(format!("{relative}:{number} uses {forbidden}: {why}"));
                }
            }
        }
    }
    // Endpoint modules use none of their siblings.
    for (relative, text) in files {
        let Some(module) = relative
            .strip_prefix("http/")
            .and_then(|m| m.strip_suffix(".rs"))
            .filter(|m| ENDPOINTS.contains(m))
        else {
            continue;
        };
        for (number, line) in code_lines(text) {
            for other in ENDPOINTS.iter().filter(|o| **o != module) {
                for path in [
                    format!("super::{other}::"),
                    format!("crate::http::{other}::"),
                ] {
                    if line.contains(&path) {
                        broken.push(format!(
                            "{relative}:{number} uses {path}: endpoint modules share only browser, login and the like"
                        ));
                    }
                }
            }
        }
    }
    broken
}

#[test]
fn layers_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files: Vec<(String, String)> = sources(&src)
        .into_iter()
        .map(|(path, text)| {
            let relative = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (relative, text)
        })
        .collect();
    assert!(files.len() > 30, "the sources were not found");
    let broken = violations(&files);
    assert!(
        broken.is_empty(),
        "imports that point up:\n{}",
        broken.join("\n")
    );
}

/// The check sees what it must: upward imports are reported, comments and longer
/// names are not.
#[test]
fn the_check_finds_upward_imports() {
    let files = vec![
        (
            "grants/x.rs".to_owned(),
            "use axum::Json;\n// use crate::state;\n".to_owned(),
        ),
        (
            "store/y.rs".to_owned(),
            "use crate::issuer::Issuer;\nuse crate::issuerx;\n".to_owned(),
        ),
        (
            "accounts.rs".to_owned(),
            "let h = crate::http::app;\n".to_owned(),
        ),
        (
            "http/z.rs".to_owned(),
            "use crate::http::extract;\n".to_owned(),
        ),
        (
            "serve.rs".to_owned(),
            "use crate::http::extract;\n".to_owned(),
        ),
        (
            "http/pkg.rs".to_owned(),
            "use super::device::start;\nuse super::login::x;\n".to_owned(),
        ),
    ];
    let broken = violations(&files);
    assert_eq!(broken.len(), 4, "{broken:?}");
    assert!(broken[3].starts_with("http/pkg.rs:1 uses super::device::"));
    assert!(broken[0].starts_with("grants/x.rs:1 uses axum"));
    assert!(broken[1].starts_with("store/y.rs:1 uses crate::issuer"));
    assert!(broken[2].starts_with("accounts.rs:1 uses crate::http"));
}
