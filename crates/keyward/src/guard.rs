//! `keyward guard`: the reverse proxy of [`keyward_guard::proxy`], set up from flags
//! and the `[guard]` table of the configuration file (flags win).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
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

Every flag but the secret may also be set in the [guard] table of the --config file (issuer, upstream, listen, audience, scopes, introspect_client, recheck, admin_listen); flags win. keyward serve ignores that table, so one file can hold both.

With --introspect-client, the client's secret is read from KEYWARD_GUARD_CLIENT_SECRET \
or from the file KEYWARD_GUARD_CLIENT_SECRET_FILE names.")]
pub struct GuardArgs {
    /// The issuer (keyward's URL, as in its tokens' `iss`); its discovery document gives
    /// the keys and the introspection endpoint.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// The service to protect: `http://host:port[/prefix]` (WebSockets go to ws://).
    #[arg(long, value_name = "URL")]
    upstream: Option<url::Url>,
    /// Where to listen (port 0: any free port, printed at start) [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
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
    /// answers are remembered for at most this long, and at most 10 s) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = keyward_guard::parse_duration)]
    recheck: Option<Duration>,
    /// Serve /metrics on this address (not on --listen).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
}

/// The `[guard]` table of the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFile {
    issuer: Option<String>,
    upstream: Option<url::Url>,
    listen: Option<SocketAddr>,
    audience: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    introspect_client: Option<String>,
    recheck: Option<String>,
    admin_listen: Option<SocketAddr>,
}

/// Reads `[guard]` from `path`; the rest of the file is the server's.
fn guard_file(path: &Path) -> anyhow::Result<GuardFile> {
    #[derive(serde::Deserialize)]
    struct Whole {
        #[serde(default)]
        guard: GuardFile,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let whole: Whole =
        toml::from_str(&text).with_context(|| format!("bad [guard] in {}", path.display()))?;
    Ok(whole.guard)
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

/// Runs the guard until `shutdown`, with flags over the `[guard]` table of `config`.
pub async fn run(
    args: GuardArgs,
    config: Option<&Path>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let file = match config {
        Some(path) => guard_file(path)?,
        None => GuardFile::default(),
    };
    let Some(issuer) = args.issuer.or(file.issuer) else {
        bail!("the issuer is needed: --issuer URL, or issuer in [guard]");
    };
    let Some(upstream) = args.upstream.or(file.upstream) else {
        bail!("the upstream is needed: --upstream URL, or upstream in [guard]");
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081)));
    let recheck = match (args.recheck, file.recheck) {
        (Some(recheck), _) => recheck,
        (None, Some(text)) => keyward_guard::parse_duration(&text)
            .map_err(|e| anyhow::anyhow!("[guard] recheck: {e}"))?,
        (None, None) => Duration::from_secs(30),
    };
    if recheck.is_zero() {
        bail!("--recheck must be at least 1s");
    }
    let audience = args.audience.or(file.audience);
    let scopes = if args.scopes.is_empty() {
        file.scopes
    } else {
        args.scopes
    };
    let admin_listen = args.admin_listen.or(file.admin_listen);
    let introspection = match args.introspect_client.or(file.introspect_client) {
        Some(id) => Some((id, client_secret()?)),
        None => None,
    };
    if audience.is_none() {
        tracing::warn!("no --audience: tokens issued for any service are accepted");
    }
    let guard = Guard::start(GuardConfig {
        issuer: issuer.clone(),
        audience,
        scopes,
        introspection,
        recheck,
    })
    .await
    .with_context(|| format!("cannot read the issuer {issuer}"))?;
    let proxy = Proxy::new(guard, upstream.clone())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let listen = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let admin = match admin_listen {
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
    println!("keyward guard listening on http://{listen}, for {upstream} (issuer {issuer})");
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
