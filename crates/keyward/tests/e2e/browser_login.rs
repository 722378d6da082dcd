//! `keyward login` through the browser (RFC 8252), run as a user runs it: the
//! "browser" is a `BROWSER` script that hands the page it is asked to open to the test,
//! which signs in over HTTP and lets the redirect reach the login's listener on
//! 127.0.0.1. And when the device flow is used instead: `--device`, over SSH, or when
//! no browser starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use crate::client::{assert_device_connected, keyward};
use crate::support::*;

/// A `BROWSER` that writes the page it is asked to open to the file returned, one line
/// per page.
pub(crate) fn fake_browser(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let opened = dir.join("opened.txt");
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, opened)
}

/// The first page the fake browser was asked to open, within a minute.
pub(crate) async fn opened_page(opened: &Path) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(opened)
            && let Some(line) = text.lines().next()
        {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser was not asked to open a page within a minute");
}

/// `keyward login <issuer> <extra>` with the fake browser, as a user runs it on a
/// desktop (not over SSH).
pub(crate) fn login_with_browser(
    app: &TestApp,
    home: &Path,
    script: &Path,
    extra: &[&str],
) -> Watched {
    let mut args = vec!["login", app.issuer.as_str()];
    args.extend_from_slice(extra);
    let mut command = keyward_cli(home, &args);
    command.env("BROWSER", script).env_remove("SSH_CONNECTION");
    Watched::spawn(command)
}

/// The query parameters of `url`.
fn query(url: &str) -> BTreeMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// The listener's URL with the callback's parameters: where the browser goes next.
fn back_to(redirect_uri: &str, params: &BTreeMap<String, String>) -> String {
    let mut url = Url::parse(redirect_uri).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_the_browser_over_a_loopback_redirect() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let home = temp_dir();
    let (script, opened) = fake_browser(&home);
    let login = login_with_browser(&app, &home, &script, &[]);

    // The page opened is an authorization request of the default client, with PKCE,
    // whose redirect goes to a listener on 127.0.0.1.
    let page = opened_page(&opened).await;
    assert!(
        page.starts_with(&format!("{}/authorize?", app.issuer)),
        "{page}"
    );
    let request = query(&page);
    assert_eq!(request["client_id"], "device");
    assert_eq!(request["response_type"], "code");
    assert_eq!(request["code_challenge_method"], "S256");
    let redirect_uri = request["redirect_uri"].clone();
    let listener = Url::parse(&redirect_uri).unwrap();
    assert_eq!(listener.host_str(), Some("127.0.0.1"));
    assert_eq!(listener.path(), "/callback");

    // Attack: another program on the machine finds the port and sends a code of its
    // own (to log the user in as the attacker), or an error to end the login. Without
    // the login's state both are refused, and the login goes on.
    for forged in ["code=attackers-code&state=guess", "error=access_denied"] {
        let answer = http()
            .get(format!("{redirect_uri}?{forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{forged}");
        assert!(
            answer
                .text()
                .await
                .unwrap()
                .contains("state does not match")
        );
    }
    let elsewhere = http()
        .get(redirect_uri.replace("/callback", "/favicon.ico"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);

    // The user signs in and consents (the command-line client never skips consent);
    // keyward redirects the browser to the listener, which redeems the code and says so.
    let params = drive(&browser(), &page, "alice", PASSWORD, "approve")
        .await
        .callback();
    assert_eq!(params["state"], request["state"]);
    assert_eq!(params["iss"], app.issuer);
    let done = http()
        .get(back_to(&redirect_uri, &params))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.headers()["cache-control"], "no-store");
    let html = done.text().await.unwrap();
    assert!(html.contains("You are logged in to"), "{html}");

    let (status, _, stderr) = login.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("Opened your browser"), "{stderr}");
    assert!(
        stderr.contains(&format!("Logged in to {} as alice", app.issuer)),
        "{stderr}"
    );
    assert!(!stderr.contains("/device"), "no device flow: {stderr}");

    // One request was answered; the listener is closed, so the same redirect again
    // (a replay from the browser's history) reaches no one.
    let again = http().get(back_to(&redirect_uri, &params)).send().await;
    assert!(again.is_err_and(|e| e.is_connect()), "the listener is gone");

    // The login is a real one: `keyward token` prints an active token, refreshable.
    let out = keyward(&home, &["token", &app.issuer]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(is_active(&app, &token).await);
    let out = keyward(&home, &["token", &app.issuer, "--margin", "999999"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(
        text(&out.stdout).trim(),
        token,
        "refreshed with the stored refresh token"
    );
}

/// Attack (RFC 8252 §8.6): another program on the machine, listening on a port of its
/// own, gets the person's browser to open an authorization request of the public
/// command-line client they approved before. They are asked again, every time; a
/// remembered approval would have handed the program a code for their account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_asks_for_consent_every_time() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let browser = browser();
    let (first, _) = authorize_url(&app.issuer, "device", "openid offline_access", "");
    let params = drive(&browser, &first, "alice", PASSWORD, "approve")
        .await
        .callback();
    assert!(params.contains_key("code"), "{params:?}");
    // Signed in, approved before: the same request from another program.
    let (again, _) = authorize_url(&app.issuer, "device", "openid offline_access", "");
    let page = open(&browser, &again).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("name=\"decision\""), "{}", page.html);
    // A confidential client's approval is remembered (third-party asks once).
    let (once, _) = authorize_url(&app.issuer, "third-party", "openid", "");
    drive(&browser, &once, "alice", PASSWORD, "approve")
        .await
        .callback();
    let (twice, _) = authorize_url(&app.issuer, "third-party", "openid", "");
    let response = browser.get(&twice).send().await.unwrap();
    assert!(
        settle(&browser, response).await.is_err(),
        "straight back with a code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_browser_login_fails_and_says_so() {
    let app = spawn_app(Db::Sqlite, "").await.unwrap();
    let home = temp_dir();
    let (script, opened) = fake_browser(&home);
    let login = login_with_browser(&app, &home, &script, &[]);
    let page = opened_page(&opened).await;
    let redirect_uri = query(&page)["redirect_uri"].clone();
    let params = drive(&browser(), &page, "alice", PASSWORD, "deny")
        .await
        .callback();
    assert_eq!(params["error"], "access_denied");
    let answer = http()
        .get(back_to(&redirect_uri, &params))
        .send()
        .await
        .unwrap();
    assert!(answer.text().await.unwrap().contains("Login failed"));
    let (status, _, stderr) = login.finish().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the login was denied"), "{stderr}");
    assert!(no_token(&home, &app));
}

/// Whether no token file was written for `app` under `home`.
fn no_token(home: &Path, app: &TestApp) -> bool {
    let server = Url::parse(&app.issuer).unwrap();
    let store = keyward_client::tokenfile::TokenStore::for_server(home, &server).unwrap();
    store.load().unwrap().is_none()
}

/// The device flow instead of the browser: when asked (`--device`), over SSH (a
/// browser there would open on another screen, if at all), and when the browser
/// command cannot be started. The device page is still shown and, with a browser,
/// opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_flow_when_asked_over_ssh_or_without_a_browser() {
    let app = spawn_app(Db::Sqlite, "device_poll_interval = \"1s\"")
        .await
        .unwrap();
    let device_page = format!("{}/device?user_code=", app.issuer);
    for case in ["--device", "SSH_CONNECTION", "no browser"] {
        let home = temp_dir();
        let (script, opened) = fake_browser(&home);
        let mut login = match case {
            "--device" => login_with_browser(&app, &home, &script, &["--device"]),
            "SSH_CONNECTION" => {
                let mut command = keyward_cli(&home, &["login", &app.issuer]);
                command
                    .env("BROWSER", &script)
                    .env("SSH_CONNECTION", "192.0.2.7 52000 192.0.2.1 22");
                Watched::spawn(command)
            }
            _ => login_with_browser(&app, &home, &home.join("no-such-browser"), &[]),
        };
        let url = login.device_url(&app.issuer).await;
        if case == "no browser" {
            assert!(!opened.exists());
        } else {
            assert!(
                opened_page(&opened).await.starts_with(&device_page),
                "{case}"
            );
        }
        assert_device_connected(approve_device(&browser(), &url, "alice", "approve").await);
        let (status, _, stderr) = login.finish().await;
        assert!(status.success(), "{case}: {stderr}");
        assert!(!stderr.contains("/authorize?"), "{case}: {stderr}");
        if case == "no browser" {
            assert!(
                stderr.contains("Could not start a browser; logging in with a code instead."),
                "{stderr}"
            );
        }
    }
}
