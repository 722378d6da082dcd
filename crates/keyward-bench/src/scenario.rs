//! The scenarios: what one iteration sends, what answer counts as right, and what each
//! needs prepared first. Every iteration checks its answer (status and the fields that
//! matter), so a server that answers fast but wrong shows up as errors, not speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use hyper::header;

use crate::load::{Conn, Pace, Stats, Stop, expect, run};
use crate::target::{Browser, Kind, Site, enc};

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `client_credentials` at the token endpoint (Basic client authentication).
    ClientCredentials,
    /// Single sign-on: a full code flow with PKCE on an established browser session
    /// (authorize → redirect with code → token with verifier).
    SsoCodeFlow,
    /// A password login: authorize, the login page, the form posted (a fresh browser
    /// each time).
    PasswordLogin,
    /// Refresh-token rotation: each connection redeems its refresh token and keeps the
    /// new one.
    RefreshRotation,
    /// Introspection (RFC 7662) of a valid access token by a confidential client.
    Introspection,
    /// Device-code polling (RFC 8628) over many pending device authorizations.
    DevicePolling,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 6] = [
        Scenario::ClientCredentials,
        Scenario::SsoCodeFlow,
        Scenario::PasswordLogin,
        Scenario::RefreshRotation,
        Scenario::Introspection,
        Scenario::DevicePolling,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ClientCredentials => "client_credentials",
            Scenario::SsoCodeFlow => "sso_code_flow",
            Scenario::PasswordLogin => "password_login",
            Scenario::RefreshRotation => "refresh_rotation",
            Scenario::Introspection => "introspection",
            Scenario::DevicePolling => "device_polling",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What the iterations of a scenario share, prepared once.
struct Shared {
    scenario: Scenario,
    site: Site,
    /// The signed-in browser (single sign-on).
    session: Browser,
    /// The token introspected.
    introspected: String,
    /// Pending device codes, polled round-robin.
    device_codes: Vec<String>,
    next_device: AtomicUsize,
}

/// One connection's state.
struct Worker {
    conn: Conn,
    browser: Browser,
    refresh_token: Option<String>,
}

/// Options of a measurement.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Concurrent connections.
    pub connections: usize,
    /// How long or how many.
    pub stop: Stop,
    /// How fast.
    pub pace: Pace,
    /// Pending device authorizations for [`Scenario::DevicePolling`].
    pub pending_devices: usize,
}

/// Prepares `scenario` on `site` and runs it with `load`.
pub async fn measure(site: &Site, scenario: Scenario, load: Load) -> anyhow::Result<Stats> {
    let mut conn = Conn::new(site.addr);
    let mut session = Browser::default();
    let mut introspected = String::new();
    let mut device_codes = Vec::new();
    let mut refresh_tokens = Vec::new();
    match scenario {
        Scenario::SsoCodeFlow => {
            // Sign in once; the iterations reuse the session.
            let (path, _) = site.authorize_path(sso_scope());
            session
                .authorize(&mut conn, site, &path, true)
                .await
                .with_context(|| format!("{}: signing in", site.label))?;
        }
        Scenario::RefreshRotation => {
            for _ in 0..load.connections {
                let tokens = sign_in(&mut conn, site, "openid offline_access api:read").await?;
                let refresh = tokens["refresh_token"]
                    .as_str()
                    .with_context(|| format!("{}: no refresh token issued", site.label))?;
                refresh_tokens.push(refresh.to_owned());
            }
        }
        Scenario::Introspection => {
            // keyward introspects its JWT access tokens; oidc-provider cannot introspect
            // its JWTs, so it is given the opaque kind it stores.
            let form = match site.kind {
                Kind::Keyward => "grant_type=client_credentials&scope=api%3Aread",
                Kind::Peer => "grant_type=client_credentials",
            };
            let reply = conn
                .post(&site.endpoints.token, &site.client_auth(), form.into())
                .await?;
            expect(&reply, reply.status == StatusCode::OK, "client_credentials")?;
            introspected = reply.json()?["access_token"]
                .as_str()
                .context("no access token")?
                .to_owned();
            let reply = conn
                .post(
                    &site.endpoints.introspect,
                    &site.client_auth(),
                    format!("token={}", enc(&introspected)),
                )
                .await?;
            if reply.json()?["active"] != true {
                bail!("{}: the introspected token is not active", site.label);
            }
        }
        Scenario::DevicePolling => {
            device_codes = start_device_authorizations(site, load.pending_devices).await?;
        }
        Scenario::ClientCredentials | Scenario::PasswordLogin => {}
    }
    let shared = Arc::new(Shared {
        scenario,
        site: site.clone(),
        session,
        introspected,
        device_codes,
        next_device: AtomicUsize::new(0),
    });
    let addr = site.addr;
    let workers = shared.clone();
    let stats = run(
        load.connections,
        load.stop,
        load.pace,
        move |index| Worker {
            conn: Conn::new(addr),
            browser: workers.session.clone(),
            refresh_token: refresh_tokens.get(index).cloned(),
        },
        move |worker| iteration(shared.clone(), worker),
    )
    .await;
    Ok(stats)
}

/// The scope of the single-sign-on flow: an ID token and a JWT access token for the API.
pub fn sso_scope() -> &'static str {
    "openid api:read"
}

async fn iteration(shared: Arc<Shared>, mut worker: Worker) -> (Worker, anyhow::Result<()>) {
    let result = once(&shared, &mut worker).await;
    (worker, result)
}

async fn once(shared: &Shared, worker: &mut Worker) -> anyhow::Result<()> {
    let site = &shared.site;
    let auth = site.client_auth();
    let conn = &mut worker.conn;
    match shared.scenario {
        Scenario::ClientCredentials => {
            let reply = conn
                .post(
                    &site.endpoints.token,
                    &auth,
                    "grant_type=client_credentials&scope=api%3Aread".into(),
                )
                .await?;
            expect(&reply, reply.status == StatusCode::OK, "client_credentials")?;
            has_access_token(&reply.json()?)
        }
        Scenario::SsoCodeFlow => {
            let tokens = code_flow(conn, site, &mut worker.browser, sso_scope(), false).await?;
            if tokens["id_token"].as_str().is_none() {
                bail!("no ID token");
            }
            Ok(())
        }
        Scenario::PasswordLogin => {
            let (path, _) = site.authorize_path("openid");
            Browser::default()
                .authorize(conn, site, &path, true)
                .await?;
            Ok(())
        }
        Scenario::RefreshRotation => rotate(shared, worker).await,
        Scenario::Introspection => {
            let reply = conn
                .post(
                    &site.endpoints.introspect,
                    &auth,
                    format!("token={}", enc(&shared.introspected)),
                )
                .await?;
            expect(&reply, reply.status == StatusCode::OK, "introspection")?;
            if reply.json()?["active"] != true {
                bail!("token reported inactive");
            }
            Ok(())
        }
        Scenario::DevicePolling => poll_device(shared, worker).await,
    }
}

/// One refresh: the worker's refresh token for new tokens, checking it rotated.
async fn rotate(shared: &Shared, worker: &mut Worker) -> anyhow::Result<()> {
    let site = &shared.site;
    let old = worker
        .refresh_token
        .take()
        .context("no refresh token left")?;
    let reply = worker
        .conn
        .post(
            &site.endpoints.token,
            &site.client_auth(),
            format!("grant_type=refresh_token&refresh_token={}", enc(&old)),
        )
        .await?;
    expect(&reply, reply.status == StatusCode::OK, "refresh")?;
    let tokens = reply.json()?;
    has_access_token(&tokens)?;
    let new = tokens["refresh_token"]
        .as_str()
        .context("refresh token not rotated")?;
    if new == old {
        bail!("refresh token not rotated");
    }
    worker.refresh_token = Some(new.to_owned());
    Ok(())
}

/// One poll of the next pending device code: the answer must be that it is pending.
async fn poll_device(shared: &Shared, worker: &mut Worker) -> anyhow::Result<()> {
    let site = &shared.site;
    let n = shared.next_device.fetch_add(1, Ordering::Relaxed);
    let code = &shared.device_codes[n % shared.device_codes.len()];
    let reply = worker
        .conn
        .post(
            &site.endpoints.token,
            &site.client_auth(),
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code={}",
                enc(code)
            ),
        )
        .await?;
    let error = reply
        .json()
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    let pending = matches!(
        error.as_deref(),
        Some("authorization_pending" | "slow_down")
    );
    expect(
        &reply,
        reply.status == StatusCode::BAD_REQUEST && pending,
        "device polling",
    )
}

fn has_access_token(tokens: &serde_json::Value) -> anyhow::Result<()> {
    match tokens["access_token"].as_str() {
        Some(token) if token.split('.').count() == 3 => Ok(()),
        Some(_) => bail!("the access token is not a JWT"),
        None => bail!("no access token"),
    }
}

/// Signs in with a fresh browser and redeems the code: the token response.
pub async fn sign_in(
    conn: &mut Conn,
    site: &Site,
    scope: &str,
) -> anyhow::Result<serde_json::Value> {
    code_flow(conn, site, &mut Browser::default(), scope, true)
        .await
        .with_context(|| format!("{}: signing in", site.label))
}

/// One authorization-code flow with PKCE in `browser` (signing in on the pages when
/// `interactive`, on its session alone otherwise), the code redeemed: the token
/// response.
pub async fn code_flow(
    conn: &mut Conn,
    site: &Site,
    browser: &mut Browser,
    scope: &str,
    interactive: bool,
) -> anyhow::Result<serde_json::Value> {
    let (path, verifier) = site.authorize_path(scope);
    let code = browser.authorize(conn, site, &path, interactive).await?;
    let reply = conn
        .post(
            &site.endpoints.token,
            &site.client_auth(),
            Site::code_form(&code, &verifier),
        )
        .await?;
    expect(&reply, reply.status == StatusCode::OK, "code redemption")?;
    let tokens = reply.json()?;
    has_access_token(&tokens)?;
    Ok(tokens)
}

/// Starts `count` device authorizations (16 at a time) and returns their device codes.
async fn start_device_authorizations(site: &Site, count: usize) -> anyhow::Result<Vec<String>> {
    let path = Arc::new(site.endpoints.device.clone());
    let basic = Arc::new(site.credentials.basic.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (path, basic, next) = (path.clone(), basic.clone(), next.clone());
        let mut conn = Conn::new(site.addr);
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let reply = conn
                    .post(
                        &path,
                        &[(header::AUTHORIZATION, basic.as_str())],
                        "scope=openid".into(),
                    )
                    .await?;
                expect(
                    &reply,
                    reply.status == StatusCode::OK,
                    "device authorization",
                )?;
                let code = reply.json()?["device_code"]
                    .as_str()
                    .context("no device_code")?
                    .to_owned();
                codes.push(code);
            }
            Ok::<_, anyhow::Error>(codes)
        }));
    }
    let mut codes = Vec::with_capacity(count);
    for task in tasks {
        codes.extend(task.await.context("device authorizations")??);
    }
    Ok(codes)
}
