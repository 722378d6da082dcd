//! keyward as JavaScript sees it (tests/js): `openid-client` from npm as a third-party
//! relying party (discovery, code + PKCE, ID token validation, userinfo, refresh), and
//! the pages in headless Chromium driven by `playwright-core`.
//!
//! Each check is skipped when Node.js, the npm packages (`npm ci` in tests/js) or
//! Chromium are missing, unless `KEYWARD_REQUIRE_JS` is set, as .ci/run does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::StatusCode;

use crate::support::*;

fn js_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/js")).to_path_buf()
}

/// Whether `packages` are installed and Node.js runs; panics when missing but required.
fn available(packages: &[&str], also: &[&str]) -> bool {
    let dir = js_dir();
    let mut missing: Vec<String> = packages
        .iter()
        .filter(|p| !dir.join("node_modules").join(p).exists())
        .map(|p| format!("npm package {p}"))
        .collect();
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("node".into());
    }
    missing.extend(
        also.iter()
            .filter(|f| !Path::new(f).exists())
            .map(|f| (*f).to_owned()),
    );
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("KEYWARD_REQUIRE_JS").is_none(),
        "KEYWARD_REQUIRE_JS is set but {missing:?} are missing"
    );
    eprintln!("SKIPPED: {missing:?} missing (run `npm ci` in tests/js; install Chromium)");
    false
}

async fn node(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(args)
            .current_dir(js_dir())
            .output()
            .expect("run node")
    })
    .await
    .unwrap()
}

fn check(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn openid_client_from_npm_logs_in_and_refreshes() {
    if !available(&["openid-client"], &[]) {
        return;
    }
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let args = [
        "openid-client.mjs",
        &app.issuer,
        "demo-app",
        SECRET,
        REDIRECT,
        "alice",
        PASSWORD,
    ];
    let stdout = check(&node(args.iter().map(|a| (*a).to_owned()).collect()).await);
    assert!(stdout.contains("interop ok"), "{stdout}");
}

#[tokio::test]
async fn pages_work_in_chromium() {
    if !available(&["playwright-core"], &["/usr/bin/chromium"]) {
        return;
    }
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let (url, verifier) = authorize_url(&app.issuer, "third-party", "openid email", "");
    let device: serde_json::Value = http()
        .post(format!("{}/device/code", app.issuer))
        .form(&[("client_id", "cli"), ("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_code = device["user_code"].as_str().unwrap();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let args = [
        "browser.mjs",
        &app.issuer,
        &url,
        REDIRECT,
        "alice",
        PASSWORD,
        &artifacts.display().to_string(),
        user_code,
    ];
    let stdout = check(&node(args.iter().map(|a| (*a).to_owned()).collect()).await);
    let response: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(response["state"], "st");
    for shot in [
        "01-login",
        "02-login-error",
        "03-consent",
        "05-logout",
        "07-error",
    ] {
        assert!(
            artifacts.join(format!("{shot}.png")).exists(),
            "{shot} screenshot"
        );
    }
    // The code the browser carried back is genuine.
    let (status, body) = token_request(
        &app,
        "third-party",
        Some("third-party-secret-0123456789abcdef"),
        &[
            ("grant_type", "authorization_code"),
            ("code", response["code"].as_str().unwrap()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The device approved in the browser collects its tokens.
    let (status, body) = token_request(
        &app,
        "cli",
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "cli"),
            ("device_code", device["device_code"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
