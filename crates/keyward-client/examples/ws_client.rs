//! A WebSocket client of a service behind keyward guard (or the `echo_service` example
//! of keyward-guard), using `keyward_client::ws` for the protocol's decisions and
//! `keyward token --audience` for its tokens: it authenticates in its first frame,
//! sends a line every few seconds, and re-authenticates in-band before each token ends.
//!
//! ```bash
//! keyward login http://127.0.0.1:8080
//! cargo run -p keyward-client --example ws_client -- ws://127.0.0.1:9000/echo echo
//! ```

#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use keyward_client::login::unix_now;
use keyward_client::ws::{GuardMessage, Next, Session, auth_frame};
use tokio_tungstenite::tungstenite::Message;

/// A fresh token for `audience`, from the stored login.
fn token(audience: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("keyward")
        .args(["token", "--audience", audience, "--margin", "30"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keyward token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9000/echo".into());
    let audience = args.next().unwrap_or_else(|| "echo".into());
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;

    // 1. Authenticate.
    socket
        .send(Message::text(auth_frame(&token(&audience)?)))
        .await?;
    let mut session = Session::default();
    session.sent_auth();
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut sent = 0;
    loop {
        tokio::select! {
            frame = socket.next() => {
                let Some(frame) = frame else { return Ok(()) };
                match frame? {
                    // 2. Handle the guard's answers; everything else is the service's.
                    Message::Text(text) => match GuardMessage::parse(&text) {
                        Some(message) => match session.handle(message) {
                            Next::Refused(reason) => anyhow::bail!("refused: {reason}"),
                            Next::Reauthenticate => {
                                socket.send(Message::text(auth_frame(&token(&audience)?))).await?;
                                session.sent_auth();
                            }
                            Next::Continue => println!("authenticated until {:?}", session.expires_at),
                        },
                        None => println!("service: {text}"),
                    },
                    Message::Close(frame) => {
                        println!("closed: {frame:?}");
                        return Ok(());
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                // 3. Is re-authentication due (less than 30 s left)? 4. Re-authenticate.
                if session.reauth_due(unix_now(), 30) {
                    socket.send(Message::text(auth_frame(&token(&audience)?))).await?;
                    session.sent_auth();
                } else if session.expires_at.is_some() {
                    sent += 1;
                    socket.send(Message::text(format!("hello {sent}"))).await?;
                }
            }
        }
    }
}
