//! The outage harness (`keyward-bench outage`): the database goes away under load, and
//! comes back, while keyward keeps running.
//!
//! - **PostgreSQL away.** keyward reaches PostgreSQL through a gate ([`crate::proxy`]);
//!   the gate is shut for [`OUTAGE`] (every connection closed, new ones refused, as
//!   when the server is stopped) and opened again. While it is shut `/readyz` answers
//!   503, and token requests are answered fast ([`FAST`]) with a JSON 503
//!   `temporarily_unavailable`, never a 500, never a hang; once it is open everything
//!   works again without a restart, and every refresh chain goes on with the last token
//!   its client was handed.
//! - **SQLite, disk full.** keyward's database is on a small tmpfs (mounting one needs
//!   root: CI runs as root; elsewhere the check is skipped with the reason, and under
//!   `CI=true` it fails unless the machine forbids mounting altogether); a file fills
//!   the rest. Writes are answered with a JSON 503, reads
//!   go on; when the file is removed writes go on; then keyward is killed with SIGKILL
//!   and started again: every chain goes on with the last token handed (nothing
//!   committed was lost), `PRAGMA integrity_check` says ok, `keyward store check` finds
//!   the database consistent.
//!
//! The clients rotate refresh chains and take client-credentials tokens that they
//! introspect. A 503 leaves a client's chain as it was: it keeps its token and tries
//! again a little later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::StatusCode;
use sqlx::Connection as _;

use crate::load::{Conn, Reply};
use crate::proxy::Proxy;
use crate::target::{Browser, Credentials, Server, Site, enc};

/// How long the database is away.
pub const OUTAGE: Duration = Duration::from_secs(10);
/// The longest a request may take to be answered while the database is away (keyward
/// waits 2 s for a PostgreSQL connection; a full disk fails at once).
pub const FAST: Duration = Duration::from_secs(3);
/// How long after the database is back a 503 is still expected (reconnecting).
const SETTLE: Duration = Duration::from_secs(5);
/// Load before the fault, and after the database is back.
const AROUND: Duration = Duration::from_secs(5);
/// The size of the tmpfs the SQLite database is put on: room for what the load writes
/// on a fast machine once the filler is gone (a 32 MiB one filled up again by itself
/// under CI's load, so the chains could not go on after the restart).
const TMPFS_SIZE: &str = "256m";
/// How long the load may run on a full disk before a write fails.
const FILL_PATIENCE: Duration = Duration::from_secs(30);

/// What one outage run saw.
#[derive(Debug, Default)]
pub struct OutageRun {
    /// "PostgreSQL away 10 s" or "SQLite disk full".
    pub fault: String,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
    /// Requests answered 200 before, during and after the fault.
    pub ok: [u64; 3],
    /// JSON 503 `temporarily_unavailable` answers during the fault (and while settling).
    pub unavailable: u64,
    /// The slowest answer while the fault lasted.
    pub slowest_in_fault: Duration,
    /// The slowest 503.
    pub slowest_503: Duration,
    /// `/readyz`: from the fault to its first 503, and from the end of the fault to its
    /// first 200 (PostgreSQL).
    pub readyz: Option<(Duration, Duration)>,
    /// From the end of the fault to the first token issued.
    pub recovered_in: Option<Duration>,
    /// Chains that went on at the end with the last token handed / broken.
    pub chains: [u64; 2],
    /// Whether the same keyward process served throughout (PostgreSQL).
    pub same_process: bool,
    /// Answers that were 5xx other than the expected 503.
    pub server_errors: u64,
    /// Problems `keyward store check` reported.
    pub store_problems: u64,
    /// What went wrong.
    pub violations: Vec<String>,
}

/// Where the run is (the phase a reply is judged in).
const BEFORE: u8 = 0;
const FAULT: u8 = 1;
const AFTER: u8 = 2;

/// What the clients share.
struct Shared {
    site: Site,
    phase: AtomicU8,
    /// When the fault ended (its end is the start of the settling time).
    ended: std::sync::Mutex<Option<Instant>>,
    /// Set at the first 200 after the fault: the recovery time.
    recovered_in: std::sync::Mutex<Option<Duration>>,
    stop: AtomicBool,
    sign_in: tokio::sync::Mutex<()>,
    ok: [AtomicU64; 3],
    unavailable: AtomicU64,
    server_errors: AtomicU64,
    slowest_in_fault: std::sync::Mutex<Duration>,
    slowest_503: std::sync::Mutex<Duration>,
    violations: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn new(site: Site) -> Self {
        Self {
            site,
            phase: AtomicU8::new(BEFORE),
            ended: std::sync::Mutex::new(None),
            recovered_in: std::sync::Mutex::new(None),
            stop: AtomicBool::new(false),
            sign_in: tokio::sync::Mutex::new(()),
            ok: Default::default(),
            unavailable: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            slowest_in_fault: std::sync::Mutex::new(Duration::ZERO),
            slowest_503: std::sync::Mutex::new(Duration::ZERO),
            violations: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn violation(&self, what: String) {
        if let Ok(mut list) = self.violations.lock()
            && list.len() < 50
        {
            list.push(what);
        }
    }

    fn end_fault(&self) {
        if let Ok(mut ended) = self.ended.lock() {
            *ended = Some(Instant::now());
        }
        self.phase.store(AFTER, Ordering::Relaxed);
    }

    /// Whether the database is away, or came back less than [`SETTLE`] ago.
    fn settling(&self) -> bool {
        match self.phase.load(Ordering::Relaxed) {
            FAULT => true,
            AFTER => self
                .ended
                .lock()
                .ok()
                .and_then(|e| *e)
                .is_some_and(|e| e.elapsed() < SETTLE),
            _ => false,
        }
    }

    /// Sends a token-endpoint request and judges the answer: `Some(reply)` when it is
    /// a 200, `None` after a 503 that the moment allows (the caller tries again later).
    async fn send(
        &self,
        conn: &mut Conn,
        path: &str,
        form: String,
    ) -> anyhow::Result<Option<Reply>> {
        let started = Instant::now();
        let phase = self.phase.load(Ordering::Relaxed);
        let reply = conn
            .post(path, &self.site.client_auth(), form)
            .await
            .context("keyward gave no answer")?;
        let took = started.elapsed();
        if phase == FAULT
            && let Ok(mut slowest) = self.slowest_in_fault.lock()
        {
            *slowest = (*slowest).max(took);
        }
        if took > FAST && self.settling() {
            self.violation(format!(
                "{path} took {:.1} s while the database was away",
                took.as_secs_f64()
            ));
        }
        if reply.status == StatusCode::OK {
            self.ok[usize::from(phase)].fetch_add(1, Ordering::Relaxed);
            if phase == AFTER
                && let (Ok(mut recovered), Ok(ended)) =
                    (self.recovered_in.lock(), self.ended.lock())
                && recovered.is_none()
                && let Some(ended) = *ended
            {
                *recovered = Some(ended.elapsed());
            }
            return Ok(Some(reply));
        }
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            let error = reply
                .json()
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            if error.as_deref() != Some("temporarily_unavailable") {
                self.violation(format!(
                    "a 503 without a JSON temporarily_unavailable: {}",
                    reply.describe()
                ));
            }
            if reply.headers.get(hyper::header::RETRY_AFTER).is_none() {
                self.violation("a 503 without Retry-After".into());
            }
            if let Ok(mut slowest) = self.slowest_503.lock() {
                *slowest = (*slowest).max(took);
            }
            self.unavailable.fetch_add(1, Ordering::Relaxed);
            if !self.settling() {
                self.violation(format!(
                    "{path} answered 503 with the database there ({})",
                    if phase == BEFORE {
                        "before the fault"
                    } else {
                        "after it settled"
                    }
                ));
            }
            return Ok(None);
        }
        if reply.status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        bail!("{path} answered {}", reply.describe())
    }
}

/// One client: its connection, its chain.
struct Client {
    index: usize,
    conn: Conn,
    refresh: Option<String>,
    step: u64,
}

/// Runs clients until `shared.stop`: each signs in once, then rotates its chain (three
/// steps in four) or takes a client-credentials token and introspects it.
fn spawn_clients(shared: &Arc<Shared>, count: usize) -> Vec<tokio::task::JoinHandle<Client>> {
    (0..count)
        .map(|index| {
            let shared = shared.clone();
            let client = Client {
                index,
                conn: Conn::new(shared.site.addr),
                refresh: None,
                step: 0,
            };
            tokio::spawn(client_loop(shared, client))
        })
        .collect()
}

async fn client_loop(shared: Arc<Shared>, mut client: Client) -> Client {
    while !shared.stop.load(Ordering::Relaxed) {
        client.step += 1;
        let result = match (&client.refresh, client.step % 4) {
            (None, _) => sign_in(&shared, &mut client).await,
            (Some(_), 0) => client_credentials(&shared, &mut client.conn).await,
            (Some(_), _) => rotate(&shared, &mut client).await,
        };
        match result {
            Ok(true) => {}
            // A 503: the same step again a little later.
            Ok(false) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                shared.violation(format!("client {}: {e:#}", client.index));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    client
}

/// Signs in (one client at a time: the password form throttles parallel sign-ins) and
/// starts the chain. `Ok(false)` when the database was away.
async fn sign_in(shared: &Shared, client: &mut Client) -> anyhow::Result<bool> {
    if shared.phase.load(Ordering::Relaxed) != BEFORE {
        // Chains start before the fault; a client that has none by then waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(true);
    }
    let _turn = shared.sign_in.lock().await;
    let site = &shared.site;
    let (path, verifier) = site.authorize_path("openid offline_access");
    let mut browser = Browser::default();
    let code = browser
        .authorize(&mut client.conn, site, &path, true)
        .await?;
    let Some(reply) = shared
        .send(
            &mut client.conn,
            &site.endpoints.token,
            Site::code_form(&code, &verifier),
        )
        .await?
    else {
        return Ok(false);
    };
    client.refresh = Some(
        reply.json()?["refresh_token"]
            .as_str()
            .context("no refresh token")?
            .to_owned(),
    );
    Ok(true)
}

/// One rotation with the last token handed; `Ok(false)` on a 503 (the token is kept).
async fn rotate(shared: &Shared, client: &mut Client) -> anyhow::Result<bool> {
    let current = client.refresh.as_deref().context("no chain")?;
    let form = format!("grant_type=refresh_token&refresh_token={}", enc(current));
    let Some(reply) = shared
        .send(&mut client.conn, &shared.site.endpoints.token, form)
        .await
        .with_context(|| format!("rotating (step {})", client.step))?
    else {
        return Ok(false);
    };
    client.refresh = Some(
        reply.json()?["refresh_token"]
            .as_str()
            .context("no refresh token in a rotation")?
            .to_owned(),
    );
    Ok(true)
}

/// A client-credentials token, introspected; `Ok(false)` on a 503.
async fn client_credentials(shared: &Shared, conn: &mut Conn) -> anyhow::Result<bool> {
    let site = &shared.site;
    let Some(reply) = shared
        .send(
            conn,
            &site.endpoints.token,
            "grant_type=client_credentials".into(),
        )
        .await?
    else {
        return Ok(false);
    };
    let token = reply.json()?["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let Some(reply) = shared
        .send(
            conn,
            &site.endpoints.introspect,
            format!("token={}", enc(&token)),
        )
        .await?
    else {
        return Ok(false);
    };
    if reply.json()?["active"] != true {
        bail!("a token just issued is not active");
    }
    Ok(true)
}

/// Stops the clients and rotates every chain once more with the last token handed
/// (retrying 503s for a while): [kept, broken].
async fn finish(
    shared: &Arc<Shared>,
    clients: Vec<tokio::task::JoinHandle<Client>>,
) -> anyhow::Result<(Vec<Client>, [u64; 2])> {
    shared.stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for client in clients {
        done.push(client.await.context("a client panicked")?);
    }
    let chains = check_chains(shared, &mut done).await;
    Ok((done, chains))
}

async fn check_chains(shared: &Shared, clients: &mut [Client]) -> [u64; 2] {
    let mut chains = [0, 0];
    for client in clients.iter_mut().filter(|c| c.refresh.is_some()) {
        let mut kept = false;
        for _ in 0..50 {
            match rotate(shared, client).await {
                Ok(true) => {
                    kept = true;
                    break;
                }
                Ok(false) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    shared.violation(format!("client {}: at the end: {e:#}", client.index));
                    break;
                }
            }
        }
        chains[usize::from(!kept)] += 1;
    }
    chains
}

/// Polls `/readyz` every 100 ms until `stop`: (elapsed since start, status; `None` for
/// no answer within [`FAST`]).
fn poll_readyz(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, Option<StatusCode>)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut conn = Conn::new(addr);
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let status = match tokio::time::timeout(FAST, conn.get("/readyz", &[])).await {
                Ok(Ok(reply)) => Some(reply.status),
                _ => {
                    conn = Conn::new(addr);
                    None
                }
            };
            seen.push((at, status));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

/// PostgreSQL away for [`OUTAGE`] under `clients` clients; `database_url` is a fresh
/// database.
pub async fn postgres_away(
    exe: &Path,
    database_url: &str,
    clients: usize,
) -> anyhow::Result<OutageRun> {
    crate::say(format!(
        "outage: PostgreSQL away for {} s under {clients} clients",
        OUTAGE.as_secs()
    ));
    let mut url = url::Url::parse(database_url)?;
    let upstream: SocketAddr = format!(
        "{}:{}",
        url.host_str()
            .unwrap_or("127.0.0.1")
            .replace("localhost", "127.0.0.1"),
        url.port().unwrap_or(5432)
    )
    .parse()
    .context("the PostgreSQL address")?;
    let gate = Proxy::start(vec![upstream]).await?;
    url.set_port(Some(gate.addr.port()))
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
    let credentials = Credentials::generate();
    let mut server = Server::keyward_logged(exe, Some(url.as_str()), &credentials).await?;
    let shared = Arc::new(Shared::new(server.site.clone()));
    let readyz_stop = Arc::new(AtomicBool::new(false));
    let readyz = poll_readyz(server.site.addr, readyz_stop.clone());
    let clients = spawn_clients(&shared, clients);

    tokio::time::sleep(AROUND).await;
    gate.shut();
    let shut_at = Instant::now();
    shared.phase.store(FAULT, Ordering::Relaxed);
    eprintln!("  PostgreSQL gate shut");
    tokio::time::sleep(OUTAGE).await;
    gate.open().await?;
    let opened_at = Instant::now();
    shared.end_fault();
    eprintln!("  PostgreSQL gate open again");
    tokio::time::sleep(AROUND + SETTLE).await;
    let (_, chains) = finish(&shared, clients).await?;
    readyz_stop.store(true, Ordering::Relaxed);
    let seen = readyz.await.context("the readyz poller panicked")?;

    let first = |from: Instant, want: StatusCode| {
        seen.iter()
            .find(|(at, status)| *at >= from && *status == Some(want))
            .map(|(at, _)| at.duration_since(from))
    };
    let down = first(shut_at, StatusCode::SERVICE_UNAVAILABLE);
    let up = first(opened_at, StatusCode::OK);
    let hung = seen
        .iter()
        .filter(|(at, status)| status.is_none() && *at >= shut_at)
        .count();
    if hung > 0 {
        shared.violation(format!(
            "/readyz gave no answer within {} s {hung} times",
            FAST.as_secs()
        ));
    }
    match down {
        Some(d) if d <= FAST => {}
        Some(d) => shared.violation(format!(
            "/readyz answered 503 only {:.1} s into the outage",
            d.as_secs_f64()
        )),
        None => shared.violation("/readyz never answered 503 while PostgreSQL was away".into()),
    }
    if up.is_none() {
        shared.violation("/readyz did not answer 200 after PostgreSQL came back".into());
    }
    let same_process = server.is_running();
    if !same_process {
        shared.violation("keyward exited during the outage".into());
    }
    finish_checks(&shared, &server).await?;
    let mut run = collect(&shared, "PostgreSQL away 10 s", chains, &server).await?;
    run.readyz = down.zip(up);
    run.same_process = same_process;
    server.kill_hard().await.ok();
    Ok(run)
}

/// The SQLite database on a full disk: see the module documentation.
pub async fn sqlite_disk_full(exe: &Path, clients: usize) -> anyhow::Result<OutageRun> {
    crate::say(format!(
        "outage: SQLite on a full disk ({TMPFS_SIZE} tmpfs) under {clients} clients"
    ));
    let mount = match Tmpfs::mount(TMPFS_SIZE) {
        Ok(mount) => mount,
        Err(e) => {
            let reason = format!("{e:#}");
            let mut run = OutageRun {
                fault: "SQLite disk full".into(),
                skipped: Some(reason.clone()),
                ..OutageRun::default()
            };
            // Under CI a failure to mount fails the run, unless the machine forbids
            // mounting altogether (a container without the capability, even as root):
            // then the check cannot exist there, and the unit test
            // `sqlite_full_disk_is_unavailable_and_loses_nothing` covers the answer.
            let forbidden = ["permission denied", "not permitted", "must be superuser"]
                .iter()
                .any(|words| reason.to_lowercase().contains(words));
            if std::env::var("CI").as_deref() == Ok("true") && !forbidden {
                run.violations.push(format!(
                    "the disk-full check could not run under CI: {reason}"
                ));
            }
            return Ok(run);
        }
    };
    let db_file = mount.dir.join("keyward.db");
    let url = format!("sqlite://{}", db_file.display());
    let credentials = Credentials::generate();
    let mut server = Server::keyward_logged(exe, Some(&url), &credentials).await?;
    let shared = Arc::new(Shared::new(server.site.clone()));
    let clients = spawn_clients(&shared, clients);
    tokio::time::sleep(AROUND).await;

    let filler = mount.dir.join("filler");
    let filled = fill(&filler)?;
    shared.phase.store(FAULT, Ordering::Relaxed);
    eprintln!("  disk filled ({} MiB of filler)", filled >> 20);
    let full_at = Instant::now();
    while shared.unavailable.load(Ordering::Relaxed) == 0 && full_at.elapsed() < FILL_PATIENCE {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if shared.unavailable.load(Ordering::Relaxed) == 0 {
        shared.violation(format!(
            "no request was refused in {} s on a full disk: the check did not reach the fault",
            FILL_PATIENCE.as_secs()
        ));
    }
    // Some more of it: every client meets the full disk.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(&filler).context("remove the filler")?;
    shared.end_fault();
    eprintln!("  filler removed");
    tokio::time::sleep(AROUND + SETTLE).await;
    let (mut done, _) = {
        shared.stop.store(true, Ordering::Relaxed);
        let mut done = Vec::new();
        for client in clients {
            done.push(client.await.context("a client panicked")?);
        }
        (done, ())
    };

    // kill -9 and start again: everything handed out is still there.
    server.kill_hard().await?;
    server.restart().await?;
    let chains = check_chains(&shared, &mut done).await;
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db_file.display()))
            .await
            .context("open the database read-only")?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .context("PRAGMA integrity_check")?;
    drop(db);
    if integrity != "ok" {
        shared.violation(format!("PRAGMA integrity_check: {integrity}"));
    }
    finish_checks(&shared, &server).await?;
    let run = collect(&shared, "SQLite disk full", chains, &server).await?;
    server.kill_hard().await.ok();
    drop(mount);
    Ok(run)
}

/// Writes `path` until the disk is full; returns how many bytes went in.
fn fill(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e).context("fill the disk"),
        }
    }
    // Whatever a partial block leaves.
    let _ = file.flush();
    Ok(written)
}

/// Store check and panics in the log.
async fn finish_checks(shared: &Shared, server: &Server) -> anyhow::Result<()> {
    let (passed, output) = crate::crash::run_store_check(server).await?;
    if !passed {
        shared.violation(format!("keyward store check: {}", output.trim()));
    }
    if let Some(log) = server.log_file()
        && let Ok(text) = std::fs::read_to_string(log)
    {
        for line in text.lines().filter(|l| l.contains("panicked")) {
            shared.violation(format!("keyward panicked: {line}"));
        }
    }
    Ok(())
}

async fn collect(
    shared: &Shared,
    fault: &str,
    chains: [u64; 2],
    server: &Server,
) -> anyhow::Result<OutageRun> {
    let (_, output) = crate::crash::run_store_check(server).await?;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let server_errors = get(&shared.server_errors);
    if chains[1] > 0 {
        shared.violation(format!("{} chains broken", chains[1]));
    }
    Ok(OutageRun {
        fault: fault.to_owned(),
        skipped: None,
        ok: [get(&shared.ok[0]), get(&shared.ok[1]), get(&shared.ok[2])],
        unavailable: get(&shared.unavailable),
        slowest_in_fault: shared
            .slowest_in_fault
            .lock()
            .map(|d| *d)
            .unwrap_or_default(),
        slowest_503: shared.slowest_503.lock().map(|d| *d).unwrap_or_default(),
        readyz: None,
        recovered_in: shared.recovered_in.lock().ok().and_then(|r| *r),
        chains,
        same_process: true,
        server_errors,
        store_problems: u64::try_from(
            output
                .lines()
                .filter(|l| l.starts_with("problem: "))
                .count(),
        )
        .unwrap_or(u64::MAX),
        violations: shared
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    })
}

/// A tmpfs mounted on a fresh directory, unmounted and removed when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "keyward-full-{}",
            keyward_proto::secret::random_urlsafe(6)
        ));
        std::fs::create_dir_all(&dir)?;
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .context("run mount")?;
        if !output.status.success() {
            let _ = std::fs::remove_dir(&dir);
            bail!(
                "cannot mount a tmpfs (it needs root): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
