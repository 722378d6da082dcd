//! `keyward guard` end to end: a keyward in this process issues tokens (token exchange
//! for the audience `echo`, 10 s lifetimes), an echo service started here (HTTP and
//! WebSocket, recording everything it receives) is the upstream, and the real
//! `keyward guard` process stands between. Real time passes (the guard is another
//! process with the system clock), so lifetimes are short and every wait is bounded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message as UpMessage, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Request};
use axum::response::{IntoResponse as _, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const PORTAL_SECRET: &str = "portal-secret-0123456789abcdef";
/// Every bounded wait's bound, unless a test says otherwise.
const WAIT: Duration = Duration::from_secs(15);

const CONFIG: &str = r#"
[exchange]
lifetime = "10s"

[[audiences]]
id = "echo"

[[policies]]
subjects = ["user:alice", "user:bob"]
scopes = ["echo:*"]

[[clients]]
client_id = "portal"
client_secret = "portal-secret-0123456789abcdef"
redirect_uris = ["http://127.0.0.1:5555/callback"]
grant_types = ["authorization_code", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["openid", "profile"]
skip_consent = true
"#;

/// What the echo service received.
#[derive(Default)]
struct Seen {
    /// Every text frame received on any WebSocket.
    frames: Vec<String>,
    /// The headers of every WebSocket upgrade, as JSON.
    upgrades: Vec<serde_json::Value>,
    /// Where the close frames received from the guard go: (code, reason).
    closes: Option<tokio::sync::mpsc::UnboundedSender<(u16, String)>>,
}

/// The upstream: HTTP answers with what it was sent; WebSockets echo text frames.
struct Echo {
    url: String,
    seen: Arc<Mutex<Seen>>,
    closes: tokio::sync::mpsc::UnboundedReceiver<(u16, String)>,
}

fn headers_json(headers: &axum::http::HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<serde_json::Value> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        map.insert(name.as_str().to_owned(), values.into());
    }
    map.into()
}

async fn echo_request(seen: Arc<Mutex<Seen>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if parts.headers.contains_key("upgrade") {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .expect("a WebSocket upgrade");
        seen.lock()
            .unwrap()
            .upgrades
            .push(headers_json(&parts.headers));
        return upgrade.on_upgrade(move |mut socket| async move {
            while let Some(Ok(message)) = socket.recv().await {
                match message {
                    UpMessage::Text(text) => {
                        seen.lock().unwrap().frames.push(text.to_string());
                        if socket.send(UpMessage::Text(text)).await.is_err() {
                            break;
                        }
                    }
                    UpMessage::Close(frame) => {
                        if let (Some(frame), Some(closes)) = (frame, &seen.lock().unwrap().closes) {
                            let _ = closes.send((frame.code, frame.reason.to_string()));
                        }
                        break;
                    }
                    _ => {}
                }
            }
        });
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers_json(&parts.headers),
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

async fn spawn_echo() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, closes) = tokio::sync::mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Seen {
        closes: Some(tx),
        ..Seen::default()
    }));
    let state = Arc::clone(&seen);
    let router = axum::Router::new().fallback(move |request: Request| {
        let seen = Arc::clone(&state);
        echo_request(seen, request)
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Echo { url, seen, closes }
}

/// A running `keyward guard`, killed when dropped.
struct GuardProcess {
    url: String,
    metrics: String,
    _child: tokio::process::Child,
}

async fn spawn_guard(issuer: &str, upstream: &str, extra: &[&str]) -> GuardProcess {
    let mut args = vec!["--issuer", issuer, "--upstream", upstream];
    args.extend(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    args.extend(["--audience", "echo", "--scope", "echo:read"]);
    args.extend(extra);
    start_guard(&args).await
}

/// `keyward guard ARGS`, once it printed its addresses.
async fn start_guard(args: &[&str]) -> GuardProcess {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .arg("guard")
        .args(args)
        .env_remove("KEYWARD_CONFIG")
        .env("KEYWARD_GUARD_CLIENT_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("keyward guard starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let read = async {
        let mut url = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("keyward guard listening on ") {
                url = Some(rest.split(',').next().unwrap().to_owned());
            } else if let Some(metrics) = line.trim().strip_prefix("metrics:") {
                return (
                    url.expect("the listening line first"),
                    metrics.trim().to_owned(),
                );
            }
        }
        panic!("keyward guard ended without printing its addresses");
    };
    let (url, metrics) = tokio::time::timeout(WAIT, read)
        .await
        .expect("keyward guard printed its addresses");
    // Keep reading stdout so that the guard never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    GuardProcess {
        url,
        metrics,
        _child: child,
    }
}

/// `who` signs in to the portal; the portal's access token (audience `portal`).
async fn login(app: &TestApp, who: &str) -> String {
    let tokens = crate::exchange::portal_sign_in(app, who).await;
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// A 10-second token for the audience `echo` with `scope`, exchanged from `login`.
async fn echo_token(app: &TestApp, login: &str, scope: &str) -> String {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", login),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", "echo"),
    ];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    let (status, body) = token_request(app, "portal", Some(PORTAL_SECRET), &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 10, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(guard: &GuardProcess, bearer: Option<&str>) -> Ws {
    let url = format!("{}/live?room=1", guard.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the WebSocket upgrade answered")
        .expect("the WebSocket opens");
    ws
}

/// The next text frame, or the close frame, from the guard.
enum Next {
    Text(String),
    Closed(u16, String),
}

async fn next(ws: &mut Ws, what: &str) -> Next {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Next::Text(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.expect("a close frame with a code");
                    return Next::Closed(u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{what}: the WebSocket failed: {e}"),
                None => panic!("{what}: the WebSocket ended without a close frame"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing came from the guard"))
}

/// The next protocol message (JSON), `reauth_required` notices skipped unless wanted.
async fn message(ws: &mut Ws, what: &str) -> serde_json::Value {
    loop {
        match next(ws, what).await {
            Next::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{what}: not a protocol message: {text}"));
                if value["type"] != "reauth_required" {
                    return value;
                }
            }
            Next::Closed(code, reason) => panic!("{what}: closed with {code} {reason}"),
        }
    }
}

/// The next echoed data frame, protocol notices skipped.
async fn echoed(ws: &mut Ws, what: &str) -> String {
    loop {
        match next(ws, what).await {
            Next::Text(text) if text.contains("reauth_required") => {}
            Next::Text(text) => return text,
            Next::Closed(code, reason) => panic!("{what}: closed with {code} {reason}"),
        }
    }
}

/// Reads until the guard closes; the code and reason. Protocol messages on the way are
/// returned too.
async fn closed(ws: &mut Ws, what: &str) -> (Vec<String>, u16, String) {
    let mut texts = Vec::new();
    loop {
        match next(ws, what).await {
            Next::Text(text) => texts.push(text),
            Next::Closed(code, reason) => return (texts, code, reason),
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("a frame sent");
}

fn auth(token: &str) -> String {
    serde_json::json!({"type": "auth", "token": token}).to_string()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn guard_metric(guard: &GuardProcess, series: &str) -> u64 {
    let text = http()
        .get(&guard.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn http_through_the_guard_is_allowed_refused_or_forbidden_and_carries_the_identity() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let alice = login(&app, "alice").await;
    let alice_sub = jwt_payload(&alice)["sub"].as_str().unwrap().to_owned();
    let url = format!("{}/api/items?x=1", guard.url);

    // No token, a bad one, and one for another audience: 401 invalid_token.
    for (bearer, why) in [
        (None, "no token"),
        (Some("not.a.jwt"), "garbage"),
        (Some(alice.as_str()), "the portal's own token (aud portal)"),
    ] {
        let mut request = http().get(&url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{why}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{why}: {challenge}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{why}: {body}");
    }

    // A good token without the scope: 403 naming it.
    let unscoped = echo_token(&app, &alice, "").await;
    let response = http()
        .get(&url)
        .bearer_auth(&unscoped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\"")
            && challenge.contains("scope=\"echo:read\""),
        "{challenge}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("echo:read"),
        "{body}"
    );

    // Allowed (a wildcard-granted scope narrowed to echo:read): the upstream gets the
    // request with the identity headers, and none of the caller's spoofed ones.
    let token = echo_token(&app, &alice, "echo:read").await;
    let response = http()
        .post(&url)
        .bearer_auth(&token)
        .header("x-keyward-sub", "admin")
        .header("X-Keyward-Act", "root")
        .header("x-keyward-scope", "everything")
        .header("forwarded", "for=6.6.6.6")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/api/items?x=1");
    assert_eq!(seen["body"], "payload");
    let headers = &seen["headers"];
    assert_eq!(headers["x-keyward-sub"], serde_json::json!([alice_sub]));
    assert_eq!(headers["x-keyward-scope"], serde_json::json!(["echo:read"]));
    assert!(headers.get("x-keyward-act").is_none(), "{headers}");
    let forwarded = headers["forwarded"].as_array().unwrap();
    assert_eq!(forwarded.len(), 1, "{headers}");
    let forwarded = forwarded[0].as_str().unwrap();
    assert!(
        forwarded.starts_with("for=\"127.0.0.1:") && !forwarded.contains("6.6.6.6"),
        "{forwarded}"
    );
    let host = guard.url.trim_start_matches("http://");
    assert!(
        forwarded.contains(&format!("host=\"{host}\"")),
        "{forwarded}"
    );

    // A token with an actor (the portal acting for alice): the chain in x-keyward-act.
    let (status, portal) = token_request(
        &app,
        "portal",
        Some(PORTAL_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{portal}");
    let (status, body) = token_request(
        &app,
        "portal",
        Some(PORTAL_SECRET),
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &alice),
            ("subject_token_type", ACCESS_TOKEN),
            ("actor_token", portal["access_token"].as_str().unwrap()),
            ("actor_token_type", ACCESS_TOKEN),
            ("audience", "echo"),
            ("scope", "echo:read"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let acted = body["access_token"].as_str().unwrap();
    let response = http()
        .get(&url)
        .bearer_auth(acted)
        .header("x-keyward-act", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        seen["headers"]["x-keyward-act"],
        serde_json::json!(["portal"])
    );
    assert_eq!(
        seen["headers"]["x-keyward-sub"],
        serde_json::json!([alice_sub])
    );

    assert_eq!(
        guard_metric(
            &guard,
            "keyward_guard_requests_total{outcome=\"unauthorized\"}"
        )
        .await,
        3
    );
    assert_eq!(
        guard_metric(
            &guard,
            "keyward_guard_requests_total{outcome=\"forbidden\"}"
        )
        .await,
        1
    );
    assert_eq!(
        guard_metric(&guard, "keyward_guard_requests_total{outcome=\"allowed\"}").await,
        2
    );
}

#[tokio::test]
async fn a_websocket_authenticates_by_header_or_first_frame_and_nothing_before_reaches_upstream() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let alice = login(&app, "alice").await;
    let alice_sub = jwt_payload(&alice)["sub"].as_str().unwrap().to_owned();

    // A frame before authentication: auth_error, 4401, and the upstream never opened.
    let mut ws = connect(&guard, None).await;
    send(&mut ws, "sneaky early frame").await;
    let (texts, code, _) = closed(&mut ws, "a data frame first").await;
    let error: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(error["type"], "auth_error", "{texts:?}");
    assert!(error["reason"].is_string());
    assert_eq!(code, 4401);

    // A bad token in the first frame: auth_error and 4401.
    let mut ws = connect(&guard, None).await;
    send(&mut ws, &auth("not.a.jwt")).await;
    let (texts, code, _) = closed(&mut ws, "a bad auth frame").await;
    assert!(texts[0].contains("\"type\":\"auth_error\""), "{texts:?}");
    assert_eq!(code, 4401);

    // A bad token in the header: refused at the upgrade, as HTTP.
    let request = format!("{}/live", guard.url.replacen("http", "ws", 1));
    let mut request = request.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer not.a.jwt".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!(
            "a bad header token must be refused: {:?}",
            other.map(|_| ())
        ),
    }
    {
        let seen = echo.seen.lock().unwrap();
        assert!(seen.upgrades.is_empty(), "the upstream was never opened");
        assert!(seen.frames.is_empty(), "{:?}", seen.frames);
    }

    // By the first frame.
    let token = echo_token(&app, &alice, "echo:read").await;
    let exp = jwt_payload(&token)["exp"].as_i64().unwrap();
    let mut ws = connect(&guard, None).await;
    send(&mut ws, &auth(&token)).await;
    let answer = message(&mut ws, "auth by frame").await;
    assert_eq!(
        answer,
        serde_json::json!({"type": "auth_success", "expires_at": exp})
    );
    send(&mut ws, "hello by frame").await;
    assert_eq!(echoed(&mut ws, "echo").await, "hello by frame");
    ws.close(None).await.unwrap();

    // By the header; the lifetime is under a minute, so reauth_required follows at once.
    let mut ws = connect(&guard, Some(&token)).await;
    let answer = message(&mut ws, "auth by header").await;
    assert_eq!(
        answer,
        serde_json::json!({"type": "auth_success", "expires_at": exp})
    );
    match next(&mut ws, "the notice").await {
        Next::Text(text) => assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({"type": "reauth_required", "expires_at": exp})
        ),
        Next::Closed(code, reason) => panic!("closed: {code} {reason}"),
    }
    send(&mut ws, "hello by header").await;
    assert_eq!(echoed(&mut ws, "echo").await, "hello by header");
    ws.close(None).await.unwrap();

    let seen = echo.seen.lock().unwrap();
    assert_eq!(seen.frames, ["hello by frame", "hello by header"]);
    assert_eq!(seen.upgrades.len(), 2);
    for upgrade in &seen.upgrades {
        assert_eq!(upgrade["x-keyward-sub"], serde_json::json!([alice_sub]));
        assert!(upgrade.get("authorization").is_none(), "{upgrade}");
    }
}

#[tokio::test]
async fn reauthentication_in_band_keeps_a_websocket_across_three_token_lifetimes() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let alice = login(&app, "alice").await;

    let token = echo_token(&app, &alice, "echo:read").await;
    let first_exp = jwt_payload(&token)["exp"].as_i64().unwrap();
    let mut ws = connect(&guard, None).await;
    send(&mut ws, &auth(&token)).await;
    let mut expires_at = message(&mut ws, "first auth").await["expires_at"]
        .as_i64()
        .unwrap();
    assert_eq!(expires_at, first_exp);
    let started = unix_now();
    let mut round = 0;
    // Three lifetimes and a bit: past the third token's expiry.
    while unix_now() < started + 31.0 {
        round += 1;
        // Re-authenticate 3 s before the current token expires.
        let due = expires_at as f64 - 3.0 - unix_now();
        tokio::time::sleep(Duration::from_secs_f64(due.max(0.0))).await;
        let fresh = echo_token(&app, &alice, "echo:read").await;
        let fresh_exp = jwt_payload(&fresh)["exp"].as_i64().unwrap();
        send(&mut ws, &auth(&fresh)).await;
        let answer = message(&mut ws, "re-auth").await;
        assert_eq!(
            answer,
            serde_json::json!({"type": "auth_success", "expires_at": fresh_exp}),
            "round {round}"
        );
        assert!(fresh_exp > expires_at);
        expires_at = fresh_exp;
        send(&mut ws, &format!("round {round}")).await;
        assert_eq!(echoed(&mut ws, "echo").await, format!("round {round}"));
    }
    assert!(
        unix_now() > first_exp as f64 + 20.0,
        "held past three lifetimes"
    );
    ws.close(None).await.unwrap();
    let seen = echo.seen.lock().unwrap();
    assert_eq!(seen.upgrades.len(), 1, "one upstream connection throughout");
    assert!(
        seen.frames.iter().all(|f| !f.contains("auth")),
        "no auth frame reached the upstream: {:?}",
        seen.frames
    );
    assert_eq!(seen.frames.len(), round);
}

#[tokio::test]
async fn a_websocket_that_stops_reauthenticating_is_closed_with_4401_at_expiry() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let mut echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let alice = login(&app, "alice").await;
    let token = echo_token(&app, &alice, "echo:read").await;
    let exp = jwt_payload(&token)["exp"].as_i64().unwrap();

    let mut ws = connect(&guard, Some(&token)).await;
    assert_eq!(message(&mut ws, "auth").await["type"], "auth_success");
    send(&mut ws, "still here").await;
    assert_eq!(echoed(&mut ws, "echo").await, "still here");
    let (_, code, reason) = closed(&mut ws, "expiry").await;
    let at = unix_now();
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
    assert!(
        (at - exp as f64).abs() <= 1.0,
        "closed at {at}, the token expired at {exp}"
    );
    // The upstream was closed the same way.
    let close = tokio::time::timeout(WAIT, echo.closes.recv())
        .await
        .expect("the upstream saw a close frame")
        .expect("the echo service runs");
    assert_eq!(close, (4401, "token expired".to_owned()));
    assert_eq!(
        guard_metric(
            &guard,
            "keyward_guard_websocket_closes_total{reason=\"expired\"}"
        )
        .await,
        1
    );
    assert_eq!(guard_metric(&guard, "keyward_guard_websockets").await, 0);
}

#[tokio::test]
async fn a_reauthentication_as_another_user_closes_the_websocket_with_4403() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let alice = login(&app, "alice").await;
    let bob = login(&app, "bob").await;
    let alice_token = echo_token(&app, &alice, "echo:read").await;
    let bob_token = echo_token(&app, &bob, "echo:read").await;

    let mut ws = connect(&guard, None).await;
    send(&mut ws, &auth(&alice_token)).await;
    assert_eq!(message(&mut ws, "auth").await["type"], "auth_success");
    send(&mut ws, &auth(&bob_token)).await;
    let (texts, code, _) = closed(&mut ws, "bob's token").await;
    let last: serde_json::Value = serde_json::from_str(texts.last().unwrap()).unwrap();
    assert_eq!(last["type"], "auth_error", "{texts:?}");
    assert_eq!(code, 4403);
    assert_eq!(
        guard_metric(
            &guard,
            "keyward_guard_websocket_closes_total{reason=\"other_subject\"}"
        )
        .await,
        1
    );
    assert!(echo.seen.lock().unwrap().frames.is_empty());
}

#[tokio::test]
async fn a_token_revoked_at_keyward_closes_the_live_websocket_within_the_recheck() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(
        &app.issuer,
        &echo.url,
        &["--introspect-client", "demo-app", "--recheck", "1s"],
    )
    .await;
    let alice = login(&app, "alice").await;
    let token = echo_token(&app, &alice, "echo:read").await;
    let mut ws = connect(&guard, None).await;
    send(&mut ws, &auth(&token)).await;
    assert_eq!(message(&mut ws, "auth").await["type"], "auth_success");
    send(&mut ws, "before").await;
    assert_eq!(echoed(&mut ws, "echo").await, "before");

    let response = http()
        .post(format!("{}/revoke", app.issuer))
        .basic_auth("portal", Some(PORTAL_SECRET))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let revoked = unix_now();
    let (_, code, reason) = closed(&mut ws, "revocation").await;
    assert_eq!((code, reason.as_str()), (4401, "token revoked"));
    assert!(
        // The next 1 s recheck, plus its introspection round trip on a busy machine;
        // an expiry would come only at 10 s, and with another reason.
        unix_now() - revoked <= 2.5,
        "closed {} s after the revocation",
        unix_now() - revoked
    );

    // A revoked token is refused over HTTP and at a WebSocket's first frame too.
    let response = http()
        .get(format!("{}/x", guard.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["error_description"], "token revoked");

    // Disabling the user ends the tokens exchanged from the user's login.
    let other = echo_token(&app, &alice, "echo:read").await;
    let mut ws = connect(&guard, Some(&other)).await;
    assert_eq!(message(&mut ws, "auth").await["type"], "auth_success");
    keyward_server::admin::set_disabled(app.state.store(), "alice", true)
        .await
        .unwrap();
    let disabled = unix_now();
    let (_, code, reason) = closed(&mut ws, "disabled user").await;
    assert_eq!((code, reason.as_str()), (4401, "token revoked"));
    assert!(
        unix_now() - disabled <= 2.5,
        "closed {} s after disabling",
        unix_now() - disabled
    );
    assert_eq!(
        guard_metric(
            &guard,
            "keyward_guard_websocket_closes_total{reason=\"revoked\"}"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn a_websocket_that_never_authenticates_is_closed_with_4401_after_ten_seconds() {
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let opened = unix_now();
    let mut ws = connect(&guard, None).await;
    let (texts, code, reason) = closed(&mut ws, "the auth timeout").await;
    let after = unix_now() - opened;
    assert_eq!((code, reason.as_str()), (4401, "authentication timed out"));
    assert!(texts[0].contains("\"type\":\"auth_error\""), "{texts:?}");
    assert!((9.5..=12.0).contains(&after), "closed after {after} s");
    assert!(echo.seen.lock().unwrap().upgrades.is_empty());
}

#[tokio::test]
async fn keyward_guard_says_what_is_missing_and_never_starts_half_configured() {
    // The guard runs beside this test's server, so it is awaited, never blocked on.
    async fn run(args: &[&str], env: &[(&str, &str)]) -> String {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .arg("guard")
            .args(args)
            .env_remove("KEYWARD_GUARD_CLIENT_SECRET")
            .env_remove("KEYWARD_GUARD_CLIENT_SECRET_FILE")
            .env_remove("KEYWARD_CONFIG");
        for (name, value) in env {
            command.env(name, value);
        }
        let output = tokio::time::timeout(WAIT, command.output())
            .await
            .expect("keyward guard gave up in time")
            .expect("keyward guard runs");
        assert!(!output.status.success(), "{args:?} must fail");
        text(&output.stderr)
    }
    let app = spawn_app(Db::Sqlite, CONFIG).await.unwrap();
    let base = ["--issuer", &app.issuer, "--upstream", "http://127.0.0.1:9"];
    let stderr = run(
        &[&base[..], &["--introspect-client", "demo-app"]].concat(),
        &[],
    )
    .await;
    assert!(
        stderr.contains("KEYWARD_GUARD_CLIENT_SECRET or KEYWARD_GUARD_CLIENT_SECRET_FILE"),
        "{stderr}"
    );
    let stderr = run(
        &[&base[..], &["--introspect-client", "demo-app"]].concat(),
        &[("KEYWARD_GUARD_CLIENT_SECRET_FILE", "/nonexistent/secret")],
    )
    .await;
    assert!(stderr.contains("/nonexistent/secret"), "{stderr}");
    let stderr = run(&[&base[..], &["--recheck", "soon"]].concat(), &[]).await;
    assert!(stderr.contains("not a duration"), "{stderr}");
    let stderr = run(
        &[
            "--issuer",
            "http://127.0.0.1:9",
            "--upstream",
            "http://127.0.0.1:9",
        ],
        &[],
    )
    .await;
    assert!(stderr.contains("cannot read the issuer"), "{stderr}");
    let stderr = run(
        &["--issuer", &app.issuer, "--upstream", "ftp://127.0.0.1:9"],
        &[],
    )
    .await;
    assert!(stderr.contains("http:// or https://"), "{stderr}");
}

#[tokio::test]
async fn keyward_guard_reads_its_table_from_the_config_file_and_flags_win() {
    // The server takes a file with a [guard] table (and leaves it alone).
    let app = spawn_app(
        Db::Sqlite,
        &format!("{CONFIG}\n[guard]\nissuer = \"http://ignored.example\"\n"),
    )
    .await
    .unwrap();
    let echo = spawn_echo().await;
    let dir = temp_dir();
    let file = dir.join("guard.toml");
    std::fs::write(
        &file,
        format!(
            "issuer = \"http://127.0.0.1:9\"\n\n[guard]\nissuer = \"{}\"\nupstream = \"{}\"\n\
             listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\naudience = \"echo\"\n\
             scopes = [\"echo:write\"]\nrecheck = \"5s\"\n",
            app.issuer, echo.url
        ),
    )
    .unwrap();
    let alice = login(&app, "alice").await;
    let token = echo_token(&app, &alice, "echo:read").await;
    let call = |guard: &GuardProcess| {
        http()
            .get(format!("{}/x", guard.url))
            .bearer_auth(&token)
            .send()
    };

    // From the file alone: echo:write is required, which the token lacks.
    let file_arg = file.to_str().unwrap();
    let guard = start_guard(&["--config", file_arg]).await;
    let response = call(&guard).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("scope=\"echo:write\""), "{challenge}");
    drop(guard);

    // A flag wins over the file.
    let guard = start_guard(&["--config", file_arg, "--scope", "echo:read"]).await;
    assert_eq!(call(&guard).await.unwrap().status(), StatusCode::OK);

    // An unknown key in [guard] is refused, naming the file.
    std::fs::write(&file, "[guard]\nissuer = \"x\"\nupstrem = \"y\"\n").unwrap();
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["guard", "--config", file_arg])
            .env_remove("KEYWARD_CONFIG")
            .output(),
    )
    .await
    .expect("keyward guard gave up in time")
    .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("guard.toml") && stderr.contains("upstrem"),
        "{stderr}"
    );
}

/// `keyward ws`, the reference client: logged in from the terminal as alice, it
/// connects through the guard with a token exchanged for `echo`, pipes stdin and stdout,
/// and re-authenticates in-band by itself, so the connection outlives three 10-second
/// tokens; closing stdin ends it normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_ws_pipes_and_reauthenticates_by_itself() {
    use tokio::io::AsyncWriteExt as _;
    let app = spawn_app(
        Db::Sqlite,
        &format!("device_poll_interval = \"1s\"\n{CONFIG}"),
    )
    .await
    .unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(&app.issuer, &echo.url, &[]).await;
    let home = temp_dir();
    crate::client::cli_login(&app, &home, &[]).await;

    let url = format!("{}/live", guard.url.replacen("http", "ws", 1));
    // No server named: the only one logged in to.
    let mut command = keyward_cli(
        &home,
        &["ws", &url, "--audience", "echo", "--scope", "echo:read"],
    );
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let started = unix_now();
    let mut sent = 0;
    // Past three token lifetimes, a line every two seconds, each echoed back.
    while unix_now() < started + 32.0 {
        sent += 1;
        let line = format!("line {sent}");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let echoed = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no echo of {line:?} within {WAIT:?}"))
            .unwrap();
        assert_eq!(echoed.as_deref(), Some(line.as_str()));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drop(stdin);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("keyward ws ended after stdin closed")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    {
        let seen = echo.seen.lock().unwrap();
        assert_eq!(seen.upgrades.len(), 1, "one connection throughout");
        assert_eq!(seen.frames.len(), sent, "{:?}", seen.frames);
        assert!(seen.frames.iter().all(|f| f.starts_with("line ")));
    }
    assert_eq!(
        guard_metric(
            &guard,
            r#"keyward_guard_websocket_closes_total{reason="token expired"}"#
        )
        .await,
        0
    );
    let _ = std::fs::remove_dir_all(home);
}

/// `keyward logout` in another terminal ends the grant at keyward, and with it the
/// exchanged token a running `keyward ws` holds: the guard's next check closes the
/// connection with 4401 "token revoked", and `keyward ws` exits saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_logout_elsewhere_closes_a_running_keyward_ws() {
    let app = spawn_app(
        Db::Sqlite,
        &format!("device_poll_interval = \"1s\"\n{CONFIG}"),
    )
    .await
    .unwrap();
    let echo = spawn_echo().await;
    let guard = spawn_guard(
        &app.issuer,
        &echo.url,
        &["--introspect-client", "demo-app", "--recheck", "1s"],
    )
    .await;
    let home = temp_dir();
    crate::client::cli_login(&app, &home, &[]).await;
    let url = format!("{}/live", guard.url.replacen("http", "ws", 1));
    // stdin stays open (it is held here), so only the guard can end the connection.
    let mut ws = keyward_cli(
        &home,
        &[
            "ws",
            &url,
            &app.issuer,
            "--audience",
            "echo",
            "--scope",
            "echo:read",
            // Re-authenticating only in a token's last second leaves the guard's 1 s
            // check to notice the logout first.
            "--reauth-before",
            "1",
        ],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let _stdin = ws.stdin.take().unwrap();
    // Connected: the upstream saw the upgrade.
    tokio::time::timeout(WAIT, async {
        while echo.seen.lock().unwrap().upgrades.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("keyward ws connected through the guard");

    let out = crate::client::keyward(&home, &["logout", &app.issuer]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logged_out = unix_now();
    let mut stderr_pipe = ws.stderr.take().unwrap();
    let ended = tokio::time::timeout(WAIT, ws.wait()).await;
    let mut said = String::new();
    if ended.is_err() {
        let _ = ws.start_kill();
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_string(&mut stderr_pipe, &mut said),
    )
    .await;
    let status = ended
        .unwrap_or_else(|_| panic!("keyward ws did not end after the logout:\n{said}"))
        .unwrap();
    let output = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: said.into_bytes(),
    };
    let after = unix_now() - logged_out;
    let (status, stderr) = (output.status, text(&output.stderr));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("4401 token revoked"), "{stderr}");
    // The next 1 s check and its round trip; an expiry would come only at 10 s.
    assert!(after < 5.0, "closed {after} s after the logout");
    let _ = std::fs::remove_dir_all(home);
}
