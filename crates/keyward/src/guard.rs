//! `keyward guard`: the reverse proxy of [`keyward_guard::proxy`], set up from flags.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use keyward_guard::proxy::Proxy;
use keyward_guard::{Guard, GuardConfig};
use keyward_proto::ClientSecret;

/// Flags of `keyward guard`.
#[derive(Args, Debug)]
#[command(after_help = "\
HTTP: a request without a good bearer token gets 401 (WWW-Authenticate: Bearer \
error=\"invalid_token\"), one without a required scope 403 (error=\"insufficient_scope\"). \
Forwarded requests carry x-keyward-sub, x-keyward-scope, x-keyward-act and Forwarded; \
such headers sent by the caller are removed.

WebSocket: authenticate with the upgrade's Authorization header or a first text frame \
{\"type\":\"auth\",\"token\":\"...\"} within 10 s; the guard answers \
{\"type\":\"auth_success\",\"expires_at\":N} or {\"type\":\"auth_error\",\"reason\":\"...\"} and \
close 4401. Send another auth frame (same subject, else 4403) before expires_at; \
{\"type\":\"reauth_required\",\"expires_at\":N} comes 60 s before it. At expiry both sides \
are closed with 4401 \"token expired\", on revocation with 4401 \"token revoked\".

With --introspect-client, the client's secret is read from KEYWARD_GUARD_CLIENT_SECRET \
or from the file KEYWARD_GUARD_CLIENT_SECRET_FILE names.")]
pub struct GuardArgs {
    /// The issuer (keyward's URL, as in its tokens' `iss`); its discovery document gives
    /// the keys and the introspection endpoint.
    #[arg(long, value_name = "URL")]
    issuer: String,
    /// The service to protect: `http://host:port[/prefix]` (WebSockets go to ws://).
    #[arg(long, value_name = "URL")]
    upstream: url::Url,
    /// Where to listen (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The audience tokens must name (their `aud`). Without it any audience is accepted,
    /// which lets in tokens issued for other services.
    #[arg(long, value_name = "A")]
    audience: Option<String>,
    /// A scope every request must hold (repeatable; `queue:*` held satisfies `queue:x`).
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// Check at keyward's introspection endpoint, as this client (registered with
    /// `introspect = true`), that tokens were not revoked.
    #[arg(long, value_name = "ID")]
    introspect_client: Option<String>,
    /// How often a live WebSocket's token is checked again at introspection (HTTP
    /// answers are remembered for at most this long, and at most 10 s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = keyward_guard::parse_duration)]
    recheck: Duration,
    /// Serve /metrics on this address (not on --listen).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
}

fn client_secret() -> anyhow::Result<ClientSecret> {
    if let Ok(secret) = std::env::var("KEYWARD_GUARD_CLIENT_SECRET") {
        return Ok(ClientSecret::new(secret));
    }
    if let Ok(path) = std::env::var("KEYWARD_GUARD_CLIENT_SECRET_FILE") {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read KEYWARD_GUARD_CLIENT_SECRET_FILE {path}"))?;
        return Ok(ClientSecret::new(text.trim_end_matches(['\r', '\n'])));
    }
    bail!(
        "--introspect-client needs the client's secret in KEYWARD_GUARD_CLIENT_SECRET or KEYWARD_GUARD_CLIENT_SECRET_FILE"
    )
}

/// Runs the guard until `shutdown`.
pub async fn run(
    args: GuardArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if args.recheck.is_zero() {
        bail!("--recheck must be at least 1s");
    }
    let introspection = match args.introspect_client {
        Some(id) => Some((id, client_secret()?)),
        None => None,
    };
    if args.audience.is_none() {
        tracing::warn!("no --audience: tokens issued for any service are accepted");
    }
    let guard = Guard::start(GuardConfig {
        issuer: args.issuer.clone(),
        audience: args.audience,
        scopes: args.scopes,
        introspection,
        recheck: args.recheck,
    })
    .await
    .with_context(|| format!("cannot read the issuer {}", args.issuer))?;
    let proxy = Proxy::new(guard, args.upstream.clone())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let admin = match args.admin_listen {
        None => None,
        Some(addr) => {
            let admin = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = admin
                .local_addr()
                .context("cannot read the admin address")?;
            Some((admin, local))
        }
    };
    println!(
        "keyward guard listening on http://{listen}, for {} (issuer {})",
        args.upstream, args.issuer
    );
    if let Some((admin, local)) = admin {
        println!("  metrics:    http://{local}/metrics");
        let router = proxy.admin_router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin, router).await {
                tracing::error!(error = %e, "the admin listener stopped");
            }
        });
    }
    axum::serve(
        listener,
        proxy
            .router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("the guard stopped")?;
    Ok(())
}
