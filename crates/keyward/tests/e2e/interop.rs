//! Interop with `openid-client` from npm (tests/interop/openid-client.mjs): discovery,
//! code + PKCE, ID token validation, userinfo and refresh, as a third-party relying
//! party sees them. Skipped when Node.js or the package is missing, unless
//! `KEYWARD_REQUIRE_INTEROP` is set (as .ci/run does).

use std::process::Command;

use crate::support::*;

#[tokio::test]
async fn openid_client_from_npm_logs_in_and_refreshes() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop"));
    let installed = dir.join("node_modules/openid-client").exists();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(installed && node) {
        assert!(
            std::env::var_os("KEYWARD_REQUIRE_INTEROP").is_none(),
            "KEYWARD_REQUIRE_INTEROP is set but node or tests/interop/node_modules is missing"
        );
        eprintln!(
            "SKIPPED: run `npm ci` in tests/interop (with Node.js) for the openid-client interop check"
        );
        return;
    }
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let issuer = app.issuer.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("openid-client.mjs")
            .args([
                issuer.as_str(),
                "demo-app",
                SECRET,
                REDIRECT,
                "alice",
                PASSWORD,
            ])
            .current_dir(dir)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("interop ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
