//! `keyward ws URL`: a WebSocket client for services behind keyward guard, like
//! websocat: lines from stdin go out as text frames, text frames come out as lines on
//! stdout. It authenticates with the stored login (or, with `--audience`, a token
//! exchanged for that service), and re-authenticates in-band before the token ends,
//! so the connection outlives any one token. The protocol's decisions live in
//! [`keyward_client::ws`]; this module is the I/O around them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use keyward_client::exchange::{Target, exchanged_token};
use keyward_client::login::unix_now;
use keyward_client::ws::{GuardMessage, Next, Session, auth_frame};
use keyward_client::{Flow, Options};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::terminal::{ClientArgs, ServerArg};

/// `keyward ws`.
#[derive(Args)]
pub struct WsArgs {
    /// The guarded WebSocket, ws:// or wss://.
    url: String,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    client: ClientArgs,
    /// Authenticate with a token exchanged for this service (the guard's --audience).
    #[arg(long, value_name = "AUDIENCE")]
    audience: Option<String>,
    /// A scope to ask for in the exchanged token (repeatable; needs --audience).
    #[arg(long = "scope", value_name = "SCOPE", requires = "audience")]
    scopes: Vec<String>,
    /// Re-authenticate when less than this many seconds are left of the token (at
    /// most half its lifetime).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    reauth_before: u64,
}

/// Where the tokens come from: the login, or an exchange for one service.
struct Tokens {
    flow: Flow,
    home: PathBuf,
    target: Option<Target>,
}

impl Tokens {
    /// A token with more than `margin` seconds left.
    async fn fresh(&mut self, margin: u64) -> anyhow::Result<String> {
        let margin = Duration::from_secs(margin);
        let token = match &self.target {
            Some(target) => exchanged_token(&mut self.flow, &self.home, target, margin).await?,
            None => self.flow.run_with_margin(margin).await?,
        };
        Ok(token.access_token)
    }
}

/// Runs `keyward ws`: connects, authenticates, pipes until either side ends.
pub async fn ws(args: WsArgs) -> anyhow::Result<()> {
    let url = url::Url::parse(&args.url).context("the WebSocket URL is not a URL")?;
    if !matches!(url.scheme(), "ws" | "wss") {
        bail!("the WebSocket URL must start with ws:// or wss://");
    }
    let home = args.client.home()?;
    let server = args.server.resolve(&home)?;
    let options = Options {
        login: false,
        ..Options::default()
    };
    let flow = Flow::new(&home, server, args.client.http()?, options)?;
    let target = args
        .audience
        .clone()
        .map(|audience| Target::new(audience, args.scopes.iter().cloned()));
    let mut tokens = Tokens { flow, home, target };
    let first = tokens.fresh(args.reauth_before + 5).await?;

    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(args.client.timeout.max(1)),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .with_context(|| format!("no answer from {url}"))?
    .with_context(|| format!("cannot connect to {url}"))?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::text(auth_frame(&first))).await?;
    let mut session = Session::default();
    session.sent_auth();
    let mut threshold = i64::try_from(args.reauth_before).unwrap_or(60);

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut stdout = tokio::io::stdout();
    loop {
        // Until re-authentication is due; nothing to wait for while an answer is pending
        // or once this side has closed.
        let wait = session
            .reauth_in(unix_now(), threshold)
            .filter(|_| !session.awaiting_answer && stdin_open)
            .map(|s| Duration::from_secs(s.unsigned_abs()));
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else {
                    if stdin_open {
                        bail!("the connection ended without a close frame");
                    }
                    return Ok(());
                };
                match frame.context("the connection failed")? {
                    Message::Text(text) => match GuardMessage::parse(&text) {
                        Some(message) => {
                            let success = matches!(message, GuardMessage::AuthSuccess { .. });
                            match session.handle(message) {
                                Next::Refused(reason) => bail!("the guard refused the token: {reason}"),
                                Next::Reauthenticate if stdin_open => {
                                    reauthenticate(&mut tokens, &mut sink, &mut session, threshold).await?;
                                }
                                Next::Reauthenticate => {}
                                Next::Continue => {}
                            }
                            if success && let Some(end) = session.expires_at {
                                // Never wait past half the token's life.
                                let half = end.saturating_sub(unix_now()) / 2;
                                threshold = i64::try_from(args.reauth_before).unwrap_or(60).min(half).max(1);
                            }
                        }
                        None => write_line(&mut stdout, text.as_bytes()).await?,
                    },
                    Message::Binary(bytes) => write_line(&mut stdout, &bytes).await?,
                    Message::Close(frame) => return closed(frame),
                    _ => {}
                }
            }
            line = stdin.next_line(), if stdin_open && session.expires_at.is_some() => {
                match line.context("cannot read stdin")? {
                    Some(line) => sink.send(Message::text(line)).await?,
                    None => {
                        stdin_open = false;
                        sink.send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        })))
                        .await?;
                    }
                }
            }
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                if session.reauth_due(unix_now(), threshold) {
                    reauthenticate(&mut tokens, &mut sink, &mut session, threshold).await?;
                }
            }
        }
    }
}

/// Sends a fresh token in-band.
async fn reauthenticate<S>(
    tokens: &mut Tokens,
    sink: &mut S,
    session: &mut Session,
    threshold: i64,
) -> anyhow::Result<()>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let margin = u64::try_from(threshold).unwrap_or(60) + 5;
    let token = tokens.fresh(margin).await?;
    sink.send(Message::text(auth_frame(&token))).await?;
    session.sent_auth();
    Ok(())
}

async fn write_line(stdout: &mut tokio::io::Stdout, bytes: &[u8]) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    stdout.write_all(bytes).await?;
    stdout.write_all(b"\n").await?;
    stdout.flush().await.context("cannot write to stdout")
}

/// The end: a normal close is success, anything else says why.
fn closed(frame: Option<CloseFrame>) -> anyhow::Result<()> {
    match frame {
        None => Ok(()),
        Some(frame) if frame.code == CloseCode::Normal => Ok(()),
        Some(frame) => bail!(
            "the connection was closed: {} {}",
            u16::from(frame.code),
            frame.reason
        ),
    }
}
