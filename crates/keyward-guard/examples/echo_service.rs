//! A service protected by the keyward-guard library itself, without the proxy: an HTTP
//! endpoint behind the `Authenticated` extractor and a WebSocket echo speaking the
//! guard's protocol (authentication in the first frame or the upgrade's header,
//! re-authentication in-band, closed at expiry) through `ws::Session`.
//!
//! ```bash
//! cargo run -p keyward-guard --example echo_service -- http://127.0.0.1:8080 echo 127.0.0.1:9000
//! curl -H "Authorization: Bearer $(keyward token --audience echo)" http://127.0.0.1:9000/hello
//! keyward ws ws://127.0.0.1:9000/echo --audience echo
//! ```

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use keyward_guard::http::{Authenticated, bearer};
use keyward_guard::ws::{Action, Frame, Identity, Session, classify};
use keyward_guard::{Guard, GuardConfig, unix_now_ms};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let issuer = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let audience = args.next().unwrap_or_else(|| "echo".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let guard = Guard::start(GuardConfig {
        issuer,
        audience: Some(audience),
        scopes: Vec::new(),
        introspection: None,
        recheck: Duration::from_secs(30),
    })
    .await?;
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/echo", get(echo))
        .with_state(guard);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("echo service on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Only a valid token gets here; anyone else gets the RFC 6750 401 or 403.
async fn hello(Authenticated(principal): Authenticated) -> String {
    format!(
        "hello {}, you hold: {}\n",
        principal.sub,
        principal.scopes.join(" ")
    )
}

async fn echo(
    State(guard): State<Arc<Guard>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    // A token in the upgrade's header authenticates at once; a bad one is refused
    // before the upgrade.
    let identity = match bearer(&headers) {
        Some(token) => match guard.verify(token).await {
            Ok(principal) => Some(Identity {
                sub: principal.sub,
                expires_at: principal.exp,
            }),
            Err(e) => return (axum::http::StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        },
        None => None,
    };
    upgrade.on_upgrade(move |socket| serve(socket, guard, identity))
}

/// The I/O around the protocol's state machine: frames and the clock in, its actions
/// carried out.
async fn serve(mut socket: WebSocket, guard: Arc<Guard>, identity: Option<Identity>) {
    let (mut session, mut actions) = match identity {
        Some(identity) => Session::with_header(identity, unix_now_ms()),
        None => (Session::new(unix_now_ms()), Vec::new()),
    };
    loop {
        for action in actions.drain(..) {
            match action {
                Action::OpenUpstream => {} // this service is its own upstream
                Action::Send(message) => {
                    if socket
                        .send(Message::Text(message.to_json().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Action::Forward => {} // data frames are answered where they arrive
                Action::Close { code, reason } => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
        }
        let wake = session
            .next_wakeup()
            .map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(u64::try_from(at - unix_now_ms()).unwrap_or(0))
            });
        tokio::select! {
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) => {
                        // The reply to the client's close is queued by the library;
                        // reading on until the end sends it.
                        while let Some(Ok(_)) = socket.recv().await {}
                        return;
                    }
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                actions = match classify(&text) {
                    Frame::Auth(token) => {
                        let checked = guard.verify(&token).await.map(|p| Identity {
                            sub: p.sub,
                            expires_at: p.exp,
                        });
                        session.on_auth(checked.map_err(|e| e.to_string()), unix_now_ms())
                    }
                    Frame::BadAuth => session.on_bad_auth(),
                    Frame::Data(_) => {
                        let actions = session.on_data();
                        if actions.contains(&Action::Forward) {
                            // The echo: the service's answer to the data frame.
                            if socket.send(Message::Text(text.clone())).await.is_err() {
                                return;
                            }
                        }
                        actions.into_iter().filter(|a| *a != Action::Forward).collect()
                    }
                };
            }
            () = tokio::time::sleep(wake) => actions = session.on_tick(unix_now_ms()),
        }
    }
}
