//! No state lives only in one server's memory: two `keyward serve` processes on one
//! PostgreSQL database finish each other's flows.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;

use crate::support::*;

/// A `keyward serve` child process, killed on drop.
pub struct Replica {
    child: Child,
    pub base: String,
}

impl Replica {
    /// Sends the process `signal` (`TERM`, `HUP`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it is
    /// still running.
    pub fn exit_within(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keyward serve --config <config>` on 127.0.0.1:0 and waits for its banner.
pub fn start_replica(config: &std::path::Path, dir: &std::path::Path) -> Replica {
    start_replica_logging(config, dir, "warn", Stdio::inherit())
}

/// Like [`start_replica`], with the log level and where its log (stderr) goes.
pub fn start_replica_logging(
    config: &std::path::Path,
    dir: &std::path::Path,
    level: &str,
    log: Stdio,
) -> Replica {
    start_replica_env(config, dir, level, log, &[])
}

/// Like [`start_replica_logging`], with environment variables added (a key file).
pub fn start_replica_env(
    config: &std::path::Path,
    dir: &std::path::Path,
    level: &str,
    log: Stdio,
    env: &[(&str, &std::ffi::OsStr)],
) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("KEYWARD_LISTEN", "127.0.0.1:0")
        .env("KEYWARD_LOG", level)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start keyward serve");
    let stdout = child.stdout.take().expect("stdout");
    // stdout is read on a thread of its own, which goes on draining it after the banner
    // (so the child never blocks on a full pipe); the wait for the banner is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
            }
        }
    });
    let base = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(base) => base,
        Err(e) => {
            let _ = child.kill();
            let exit = child.wait().ok();
            panic!(
                "keyward serve printed no \"listening on\" line within a minute ({e}); exit: {exit:?}"
            );
        }
    };
    Replica { child, base }
}

#[tokio::test]
async fn a_flow_started_on_one_replica_finishes_on_another() {
    let dir = temp_dir();
    let Some(database_url) = database_url(Db::Postgres, &dir).await else {
        return;
    };
    let config = dir.join("keyward.toml");
    let text = format!(
        "issuer = \"http://127.0.0.1:9\"\ndatabase_url = \"{database_url}\"\n{}",
        base_config("")
    );
    std::fs::write(&config, text).unwrap();
    let a = start_replica(&config, &dir);
    let b = start_replica(&config, &dir);

    // Authorize on A; the login page, served by B, finds the request A stored.
    let browser = browser();
    let (url, verifier) = authorize_url(&a.base, "demo-app", "openid offline_access", "");
    let response = browser.get(&url).send().await.unwrap();
    let login = location(&response);
    let on_b = format!("{}{}?{}", b.base, login.path(), login.query().unwrap());
    let html = browser
        .get(&on_b)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("req", hidden(&html, "req")),
        ("csrf", hidden(&html, "csrf")),
        ("username", "alice".into()),
        ("password", PASSWORD.into()),
    ];
    let response = browser
        .post(format!("{}/login", b.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    let callback = location(&response);
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    // The code from B is exchanged on A, the refresh token from A is rotated on B.
    let exchange = http()
        .post(format!("{}/token", a.base))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ])
        .send()
        .await
        .unwrap();
    let status = exchange.status();
    let tokens: serde_json::Value = exchange.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh = http()
        .post(format!("{}/token", b.base))
        .basic_auth("demo-app", Some(SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    let status = refresh.status();
    let refreshed: serde_json::Value = refresh.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_ne!(
        refreshed["refresh_token"], tokens["refresh_token"],
        "rotated"
    );

    // A access token signed on B verifies on A: both use the keys in the database.
    let info = http()
        .get(format!("{}/userinfo", a.base))
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    let info: serde_json::Value = info.json().await.unwrap();
    let claims = jwt_payload(refreshed["access_token"].as_str().unwrap());
    assert_eq!(claims["iss"], "http://127.0.0.1:9");
    assert_eq!(info["sub"], claims["sub"], "{info}");
    assert!(info["sub"].as_str().is_some_and(|sub| !sub.is_empty()));
    let jwks_a: serde_json::Value = get_json(&format!("{}/jwks", a.base)).await;
    let jwks_b: serde_json::Value = get_json(&format!("{}/jwks", b.base)).await;
    assert_eq!(jwks_a, jwks_b);
    let _ = std::fs::remove_dir_all(dir);
}
