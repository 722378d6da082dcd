//! The login state machine: PkgAuthentication.jl's states, each owning only what is
//! valid in it, each transition one call of [`Flow::step`].
//!
//! ```text
//! NeedAuthentication ──usable file──▶ HasToken ──fresh──▶ Success
//!        │ (no file, corrupt)             └──expiring──▶ NeedRefresh ──▶ HasNewToken
//!        ▼                                                  │ refused
//! NoAuthentication ◀────────────────────────────────────────┘
//!        │ login allowed            └─ not allowed ─▶ Failure(LoginRequired)
//!        ▼
//! RequestLogin ──▶ ClaimToken ⟲ (pending, slow_down) ──▶ HasNewToken ──▶ Success
//!      │               └── denied, expired, server gone ──▶ Failure
//!      └─ browser ─▶ AwaitRedirect ──▶ HasNewToken | Failure
//! ```
//!
//! `AwaitRedirect` is keyward's addition (RFC 8252): with [`LoginMethod::Browser`] the
//! login is an authorization code request opened in the system browser and redirected
//! back to a one-shot listener on 127.0.0.1 ([`crate::loopback`]). A caller that
//! cannot open a browser turns it into a device login with [`Flow::fall_back_to_device`].
//!
//! Where the original races and stalls, this one does not: the token file is read,
//! refreshed and written under a cross-process lock (so sixteen processes with an
//! expiring token refresh once and print the same new token), written atomically and
//! read back, polled at the server's `interval` (growing on `slow_down`) until
//! `expires_in`, with bounded retries and a request timeout. A refresh the server
//! refuses falls back to logging in; a refresh the server cannot answer keeps the old
//! token while it is still valid.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use keyward_proto::discovery::ProviderEndpoints;
use keyward_proto::error::error_chain;
use keyward_proto::token::TokenResponse;
use url::Url;

use crate::device::{DevicePoll, PollDecision};
use crate::error::ClientError;
use crate::http;
use crate::loopback::{self, BrowserLogin};
use crate::tokenfile::{TokenFile, TokenFileError, TokenLock, TokenStore};

/// The client id used when none is given: the public device client a keyward server
/// registers by default (`[pkg_auth] client_id`), which the Julia package client uses
/// too.
pub const DEFAULT_CLIENT_ID: &str = "device";
/// The scope asked for when none is given.
pub const DEFAULT_SCOPE: &str = "openid profile email offline_access";
/// Refresh when less than this is left of the access token.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);
/// How long to wait for another process holding the token lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Access token lifetime assumed when a server sends no `expires_in` and the token
/// is not a JWT with `exp`.
const ASSUMED_LIFETIME: i64 = 3600;
/// Write-and-read-back attempts before giving up.
const MAX_WRITE_ATTEMPTS: u32 = 3;
/// Attempts at a refresh whose connection could not be made.
const MAX_REFRESH_ATTEMPTS: u32 = 3;

/// What a flow may do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The OAuth client to log in as (a public client allowed the device grant).
    pub client_id: String,
    /// The scope to ask for.
    pub scope: String,
    /// Refresh when less than this is left of the access token.
    pub margin: Duration,
    /// Whether to start a device login when there is no usable token (`keyward login`)
    /// or to fail with [`ClientError::LoginRequired`] (`keyward token`).
    pub login: bool,
    /// How long to wait for the token lock.
    pub lock_timeout: Duration,
    /// How a person logs in.
    pub method: LoginMethod,
}

/// How a person logs in when there is no usable token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoginMethod {
    /// RFC 8628: a code to confirm on a page, in any browser on any device.
    #[default]
    Device,
    /// RFC 8252: the code flow in a browser on this machine, redirected back to a
    /// listener on 127.0.0.1. A server without an authorization endpoint gets a device
    /// login instead.
    Browser,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            client_id: DEFAULT_CLIENT_ID.into(),
            scope: DEFAULT_SCOPE.into(),
            margin: DEFAULT_MARGIN,
            login: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            method: LoginMethod::Device,
        }
    }
}

/// A device login waiting for the user: what to show them and how to poll. Its
/// `Debug` leaves out the device code, which is a credential until the login ends.
pub struct PendingLogin {
    /// The code the user types.
    pub user_code: String,
    /// Where they type it.
    pub verification_uri: String,
    /// The page with the code filled in, when the server offers one.
    pub verification_uri_complete: Option<String>,
    /// The polling schedule.
    pub poll: DevicePoll,
    /// When to poll next.
    pub next_poll: Instant,
    /// Where to poll.
    pub token_endpoint: String,
    device_code: String,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("poll", &self.poll)
            .field("token_endpoint", &self.token_endpoint)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// The page to show and open: the complete URI when there is one, if it is https
    /// (or http to this machine). `None` when the server named neither safely: a
    /// hostile server must not make `keyward login` open `file:`, `javascript:` or
    /// a plain-http page elsewhere in the user's browser.
    pub fn url_to_open(&self) -> Option<&str> {
        [
            self.verification_uri_complete.as_deref(),
            Some(&self.verification_uri),
        ]
        .into_iter()
        .flatten()
        .find(|uri| {
            url::Url::parse(uri)
                .ok()
                .is_some_and(|url| crate::http::check_secure(&url).is_ok())
        })
    }
}

/// A state of the login machine. Each holds what is valid in it.
#[derive(Debug)]
pub enum State {
    /// Start: nothing read yet.
    NeedAuthentication,
    /// A usable token file was read.
    HasToken(TokenFile),
    /// The token expires within the margin and has a refresh token.
    NeedRefresh(TokenFile),
    /// There is no usable token.
    NoAuthentication,
    /// A login is to be started (device, or browser: [`Options::method`]).
    RequestLogin,
    /// A device login is waiting for the user.
    ClaimToken(PendingLogin),
    /// A browser login is waiting for the browser to come back.
    AwaitRedirect(BrowserLogin),
    /// New tokens, not yet written.
    HasNewToken(TokenFile),
    /// Done: a valid token, written to the file.
    Success(TokenFile),
    /// Done: no token.
    Failure(ClientError),
}

impl State {
    /// The state's name, as the seed names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NeedAuthentication => "NeedAuthentication",
            Self::HasToken(_) => "HasToken",
            Self::NeedRefresh(_) => "NeedRefresh",
            Self::NoAuthentication => "NoAuthentication",
            Self::RequestLogin => "RequestLogin",
            Self::ClaimToken(_) => "ClaimToken",
            Self::AwaitRedirect(_) => "AwaitRedirect",
            Self::HasNewToken(_) => "HasNewToken",
            Self::Success(_) => "Success",
            Self::Failure(_) => "Failure",
        }
    }

    /// Whether the machine has stopped.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Success(_) | Self::Failure(_))
    }

    /// Whether the token lock is held in this state: from reading the file to writing
    /// it back, except while a person is logging in (that may take minutes, and other
    /// processes should not wait for them). [`Flow::step`] lets the lock go on entering
    /// any other state, so this match is the one place the rule is written.
    pub fn holds_lock(&self) -> bool {
        match self {
            Self::HasToken(_)
            | Self::NeedRefresh(_)
            | Self::NoAuthentication
            | Self::HasNewToken(_) => true,
            Self::NeedAuthentication
            | Self::RequestLogin
            | Self::ClaimToken(_)
            | Self::AwaitRedirect(_)
            | Self::Success(_)
            | Self::Failure(_) => false,
        }
    }
}

/// One server's login: its token file, the HTTP client, the options, and the lock
/// while it is held.
pub struct Flow {
    server: Url,
    store: TokenStore,
    http: reqwest::Client,
    options: Options,
    provider: Option<ProviderEndpoints>,
    lock: Option<TokenLock>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("server", &self.server.as_str())
            .field("store", &self.store.path())
            .field("locked", &self.lock.is_some())
            .finish_non_exhaustive()
    }
}

impl Flow {
    /// A flow for `server` with its token file under `home`, sending requests with
    /// `http` (see [`http::http_client`]).
    pub fn new(
        home: &Path,
        server: Url,
        http: reqwest::Client,
        options: Options,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            store: TokenStore::for_server(home, &server)?,
            server,
            http,
            options,
            provider: None,
            lock: None,
            warnings: Vec::new(),
        })
    }

    /// The token file.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// The server.
    pub fn server(&self) -> &Url {
        &self.server
    }

    /// What the flow may do.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The HTTP client requests go through.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Runs the machine to a usable token, refreshing when less than `margin` (or the
    /// flow's own margin, if longer) is left of it.
    pub async fn run_with_margin(&mut self, margin: Duration) -> Result<TokenFile, ClientError> {
        let own = self.options.margin;
        self.options.margin = own.max(margin);
        let result = self.run(State::NeedAuthentication, |_| {}).await;
        self.options.margin = own;
        result
    }

    /// What went wrong without stopping the flow (a refresh that failed while the old
    /// token was still valid), to tell the user.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Runs the machine from `state` to the end, calling `observe` with every state
    /// reached (to show the user the code, a spinner, …).
    pub async fn run(
        &mut self,
        mut state: State,
        mut observe: impl FnMut(&State),
    ) -> Result<TokenFile, ClientError> {
        loop {
            state = self.step(state).await;
            observe(&state);
            match state {
                State::Success(token) => return Ok(token),
                State::Failure(error) => return Err(error),
                _ => {}
            }
        }
    }

    /// One transition. The token lock is taken by the transitions that read or write
    /// the file (NeedAuthentication, HasNewToken) and let go as soon as the machine
    /// enters a state that does not hold it ([`State::holds_lock`]).
    pub async fn step(&mut self, state: State) -> State {
        let next = match state {
            State::NeedAuthentication => self.read().await,
            State::HasToken(token) => Ok(self.check(token)),
            State::NeedRefresh(token) => self.refresh(token).await,
            State::NoAuthentication => Ok(self.no_authentication()),
            State::RequestLogin => self.request_login().await,
            State::ClaimToken(pending) => self.claim(pending).await,
            State::AwaitRedirect(login) => self.await_redirect(login).await,
            State::HasNewToken(token) => self.write(token).await,
            done @ (State::Success(_) | State::Failure(_)) => Ok(done),
        };
        let next = next.unwrap_or_else(State::Failure);
        if !next.holds_lock() {
            self.lock = None;
        }
        next
    }

    /// NeedAuthentication → HasToken | NoAuthentication: takes the lock, then reads.
    async fn read(&mut self) -> Result<State, ClientError> {
        self.take_lock().await?;
        Ok(match self.store.load()? {
            Some(token) => State::HasToken(token),
            None => State::NoAuthentication,
        })
    }

    /// HasToken → Success | NeedRefresh | NoAuthentication.
    fn check(&mut self, token: TokenFile) -> State {
        let margin = i64::try_from(self.options.margin.as_secs()).unwrap_or(i64::MAX);
        if token.is_fresh(unix_now(), margin) {
            State::Success(token)
        } else if token.refresh_token.is_some() && token.refresh_url.is_some() {
            State::NeedRefresh(token)
        } else {
            State::NoAuthentication
        }
    }

    /// NeedRefresh → HasNewToken | NoAuthentication (refused) | Success (the server
    /// could not answer, the old token is still valid) | Failure.
    async fn refresh(&mut self, token: TokenFile) -> Result<State, ClientError> {
        let (Some(refresh_token), Some(refresh_url)) =
            (token.refresh_token.as_deref(), token.refresh_url.as_deref())
        else {
            return Ok(State::NoAuthentication);
        };
        let mut attempt = 1;
        let result = loop {
            let result = match token.client_id.as_deref() {
                Some(client_id) => http::refresh(&self.http, refresh_url, client_id, refresh_token)
                    .await
                    .map(|tokens| self.token_file(tokens, Some(&token), refresh_url)),
                None => http::refresh_julia(&self.http, refresh_url, refresh_token).await,
            };
            match result {
                // Only a connection that was never made is safe to retry: a lost answer
                // to a rotating refresh would be a reuse.
                Err(ClientError::Unreachable { ref source, .. })
                    if source.is_connect() && attempt < MAX_REFRESH_ATTEMPTS =>
                {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(new_token) => Ok(State::HasNewToken(new_token)),
            Err(ClientError::Refused { .. }) => Ok(State::NoAuthentication),
            Err(error) if token.is_fresh(unix_now(), 0) => {
                self.warnings.push(format!(
                    "could not refresh the token, using the current one until it expires: {}",
                    error_chain(&error)
                ));
                Ok(State::Success(token))
            }
            Err(error) => Err(error),
        }
    }

    /// NoAuthentication → RequestLogin | Failure(LoginRequired).
    fn no_authentication(&mut self) -> State {
        if self.options.login {
            State::RequestLogin
        } else {
            State::Failure(ClientError::LoginRequired {
                server: server_name(&self.server),
            })
        }
    }

    /// What to do when the caller could not open a browser for an
    /// [`State::AwaitRedirect`] login: from now on this flow logs in with the device
    /// flow; the state returned starts that login. Dropping the browser login closes
    /// its listener.
    pub fn fall_back_to_device(&mut self, abandoned: State) -> State {
        drop(abandoned);
        self.options.method = LoginMethod::Device;
        State::RequestLogin
    }

    /// RequestLogin → AwaitRedirect | ClaimToken | Failure: discovery, then a browser
    /// login (when asked for and the server has an authorization endpoint) or a device
    /// authorization. The lock is let go: the user may take minutes, and other processes
    /// should not wait for them.
    async fn request_login(&mut self) -> Result<State, ClientError> {
        let provider = self.provider().await?.clone();
        if self.options.method == LoginMethod::Browser
            && let Some(authorization) = provider.authorization_endpoint.as_deref()
        {
            let endpoints = loopback::Endpoints {
                issuer: &provider.issuer,
                sends_iss: provider.authorization_response_iss_parameter_supported,
                authorization,
                token: &provider.token_endpoint,
            };
            match BrowserLogin::start(endpoints, &self.options.client_id, &self.options.scope).await
            {
                Ok(login) => return Ok(State::AwaitRedirect(login)),
                Err(error) => self.warnings.push(format!(
                    "logging in with a code instead of the browser: {}",
                    error_chain(&error)
                )),
            }
        }
        let token_endpoint = provider.token_endpoint.clone();
        let Some(endpoint) = provider.device_authorization_endpoint.clone() else {
            return Err(ClientError::NoDeviceFlow {
                server: server_name(&self.server),
            });
        };
        let started = Instant::now();
        let response = http::device_authorization(
            &self.http,
            &endpoint,
            &self.options.client_id,
            &self.options.scope,
        )
        .await?;
        let poll = DevicePoll::new(response.interval, response.expires_in, started);
        Ok(State::ClaimToken(PendingLogin {
            next_poll: started + poll.interval,
            poll,
            user_code: response.user_code,
            verification_uri: response.verification_uri,
            verification_uri_complete: response.verification_uri_complete,
            token_endpoint,
            device_code: response.device_code,
        }))
    }

    /// ClaimToken → ClaimToken | HasNewToken | Failure: waits until the next poll is
    /// due, polls once, and judges the answer.
    async fn claim(&mut self, mut pending: PendingLogin) -> Result<State, ClientError> {
        tokio::time::sleep_until(pending.next_poll.into()).await;
        let answer = http::poll_device(
            &self.http,
            &pending.token_endpoint,
            &self.options.client_id,
            &pending.device_code,
        )
        .await;
        let now = Instant::now();
        Ok(match pending.poll.decide(answer, now) {
            PollDecision::Wait(wait) => {
                pending.next_poll = now + wait;
                State::ClaimToken(pending)
            }
            PollDecision::Done(tokens) => {
                State::HasNewToken(self.logged_in(tokens, &pending.token_endpoint).await)
            }
            PollDecision::Fail(error) => State::Failure(error),
        })
    }

    /// AwaitRedirect → HasNewToken | Failure: waits for the browser's redirect and
    /// redeems its code ([`BrowserLogin::finish`]).
    async fn await_redirect(&mut self, login: BrowserLogin) -> Result<State, ClientError> {
        let token_endpoint = login.token_endpoint().to_owned();
        let tokens = login
            .finish(
                &self.http,
                &self.options.client_id,
                &server_name(&self.server),
            )
            .await?;
        Ok(State::HasNewToken(
            self.logged_in(tokens, &token_endpoint).await,
        ))
    }

    /// The token file of a login that just succeeded, with who logged in.
    async fn logged_in(&mut self, tokens: TokenResponse, token_endpoint: &str) -> TokenFile {
        let mut token = self.token_file(tokens, None, token_endpoint);
        if token.user_name.is_none() && token.user_email.is_none() {
            self.ask_userinfo(&mut token).await;
        }
        token
    }

    /// HasNewToken → Success | Failure: takes the lock if it is not held, writes
    /// atomically, reads back and compares.
    async fn write(&mut self, token: TokenFile) -> Result<State, ClientError> {
        self.take_lock().await?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            self.store.save(&token)?;
            if self.store.load()?.as_ref() == Some(&token) {
                return Ok(State::Success(token));
            }
        }
        Err(ClientError::WriteConflict {
            path: self.store.path().display().to_string(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Fills in who logged in from the userinfo endpoint, for providers whose ID token
    /// carries no name or address (oidc-provider, for one). Best effort: the login
    /// stands without it.
    async fn ask_userinfo(&mut self, token: &mut TokenFile) {
        let Some(endpoint) = self
            .provider
            .as_ref()
            .and_then(|p| p.userinfo_endpoint.clone())
        else {
            return;
        };
        if let Ok(claims) = http::userinfo(&self.http, &endpoint, &token.access_token).await {
            let claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(String::from);
            token.user_name = claim("preferred_username").or_else(|| claim("name"));
            token.user_email = claim("email");
        }
    }

    async fn take_lock(&mut self) -> Result<(), ClientError> {
        if self.lock.is_none() {
            let store = self.store.clone();
            let timeout = self.options.lock_timeout;
            let path = store.path().display().to_string();
            let lock = tokio::task::spawn_blocking(move || store.lock(timeout))
                .await
                .map_err(|e| TokenFileError::Io {
                    action: "cannot lock",
                    path,
                    source: std::io::Error::other(e),
                })??;
            self.lock = Some(lock);
        }
        Ok(())
    }

    /// The server's endpoints, discovered once per flow.
    pub async fn provider(&mut self) -> Result<&ProviderEndpoints, ClientError> {
        if self.provider.is_none() {
            self.provider = Some(http::discover(&self.http, &self.server).await?);
        }
        self.provider
            .as_ref()
            .ok_or_else(|| ClientError::Discovery {
                server: self.server.to_string(),
                reason: "no metadata".into(),
            })
    }

    /// The token file for a token response ([`token_file_for`], now).
    fn token_file(
        &self,
        tokens: TokenResponse,
        previous: Option<&TokenFile>,
        token_endpoint: &str,
    ) -> TokenFile {
        token_file_for(
            tokens,
            previous,
            token_endpoint,
            &self.server,
            &self.options.client_id,
            unix_now(),
        )
    }
}

/// The token file for a token response from `token_endpoint` of `server`, received at
/// `now` by the client `client_id`: what is new replaces what was (`previous`), a
/// refresh token or ID token the response leaves out is kept, and the user's name and
/// address are read from the ID token for `keyward status`.
pub fn token_file_for(
    tokens: TokenResponse,
    previous: Option<&TokenFile>,
    token_endpoint: &str,
    server: &Url,
    client_id: &str,
    now: i64,
) -> TokenFile {
    let expires_at = match tokens.expires_in {
        Some(seconds) => now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX)),
        None => jwt_claims(&tokens.access_token)
            .and_then(|claims| claims.get("exp").and_then(serde_json::Value::as_i64))
            .unwrap_or(now + ASSUMED_LIFETIME),
    };
    let id_token = tokens
        .id_token
        .or_else(|| previous.and_then(|p| p.id_token.clone()));
    let claims = id_token.as_deref().and_then(jwt_claims);
    let claim = |name: &str| {
        claims
            .as_ref()
            .and_then(|c| c.get(name))
            .and_then(serde_json::Value::as_str)
            .map(String::from)
    };
    let scope = tokens.scope.to_string();
    TokenFile {
        access_token: tokens.access_token,
        refresh_token: tokens
            .refresh_token
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        refresh_url: Some(token_endpoint.to_owned()),
        expires_at,
        expires: Some(expires_at),
        expires_in: Some(u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0)),
        user_name: claim("preferred_username")
            .or_else(|| claim("name"))
            .or_else(|| previous.and_then(|p| p.user_name.clone())),
        user_email: claim("email").or_else(|| previous.and_then(|p| p.user_email.clone())),
        server: Some(server_name(server)),
        client_id: Some(
            previous
                .and_then(|p| p.client_id.clone())
                .unwrap_or_else(|| client_id.to_owned()),
        ),
        scope: if scope.is_empty() {
            previous.and_then(|p| p.scope.clone())
        } else {
            Some(scope)
        },
        extra: previous.map(|p| p.extra.clone()).unwrap_or_default(),
        id_token,
    }
}

/// A server URL as people write it: without the trailing slash of an empty path.
pub fn server_name(server: &Url) -> String {
    server.as_str().trim_end_matches('/').to_owned()
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The claims of a JWT, read without verifying it: only for what the client shows the
/// user (who is logged in, when the token expires). Tokens come straight from the
/// token endpoint over TLS (OpenID Connect Core §3.1.3.7, item 6).
fn jwt_claims(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    //! The transitions that need no server: reading, checking, deciding to log in,
    //! writing. Those that talk to a server are tested against a running keyward in
    //! `crates/keyward/tests/e2e/client.rs`.

    use super::*;

    fn temp_home() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keyward-login-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn flow(home: &Path, login: bool) -> Flow {
        let options = Options {
            login,
            ..Options::default()
        };
        let http = http::http_client(Duration::from_secs(5)).unwrap();
        Flow::new(
            home,
            Url::parse("http://127.0.0.1:9/").unwrap(),
            http,
            options,
        )
        .unwrap()
    }

    fn token(expires_in: i64, refresh: bool) -> TokenFile {
        TokenFile {
            access_token: "access".into(),
            id_token: Some("id".into()),
            refresh_token: refresh.then(|| "refresh".into()),
            refresh_url: Some("http://127.0.0.1:9/token".into()),
            expires_at: unix_now() + expires_in,
            client_id: Some("device".into()),
            ..TokenFile::default()
        }
    }

    fn pending(uri: &str, complete: Option<&str>) -> PendingLogin {
        let started = Instant::now();
        let poll = DevicePoll::new(5, 600, started);
        PendingLogin {
            user_code: "BCDF-GHJK".into(),
            verification_uri: uri.into(),
            verification_uri_complete: complete.map(str::to_owned),
            next_poll: started,
            poll,
            token_endpoint: "https://id.example/token".into(),
            device_code: "the-device-code-secret".into(),
        }
    }

    /// Attack: a hostile server names the page `keyward login` opens. Only https (or
    /// http to this machine) is opened; the device code never shows in `Debug`.
    #[test]
    fn only_safe_verification_pages_are_opened() {
        let ok = pending(
            "https://id.example/device",
            Some("https://id.example/device?user_code=BCDF-GHJK"),
        );
        assert_eq!(
            ok.url_to_open(),
            Some("https://id.example/device?user_code=BCDF-GHJK")
        );
        let local = pending("http://127.0.0.1:8080/device", None);
        assert_eq!(local.url_to_open(), Some("http://127.0.0.1:8080/device"));
        // An unsafe complete URI falls back to a safe plain one.
        let fallback = pending("https://id.example/device", Some("javascript:alert(1)"));
        assert_eq!(fallback.url_to_open(), Some("https://id.example/device"));
        for bad in [
            "http://evil.example/device",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert_eq!(pending(bad, Some(bad)).url_to_open(), None, "{bad}");
        }
        assert!(!format!("{ok:?}").contains("the-device-code-secret"));
    }

    #[tokio::test]
    async fn need_authentication_reads_a_usable_file_under_the_lock() {
        let home = temp_home();
        let mut flow = flow(&home, false);
        flow.store().save(&token(900, true)).unwrap();
        let state = flow.step(State::NeedAuthentication).await;
        assert!(matches!(&state, State::HasToken(t) if t.access_token == "access"));
        // The lock is held until the flow ends.
        let other = flow.store().clone();
        assert!(other.lock(Duration::from_millis(20)).is_err());
        let _ = flow.run(state, |_| {}).await.unwrap();
        assert!(other.lock(Duration::from_millis(20)).is_ok());
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn the_lock_is_let_go_before_a_person_logs_in() {
        let home = temp_home();
        let mut flow = flow(&home, true);
        let other = flow.store().clone();
        let state = flow.step(State::NeedAuthentication).await;
        assert!(matches!(state, State::NoAuthentication));
        assert!(other.lock(Duration::from_millis(20)).is_err());
        let state = flow.step(state).await;
        assert!(matches!(state, State::RequestLogin));
        assert!(other.lock(Duration::from_millis(20)).is_ok());
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn need_authentication_without_a_file_or_with_a_corrupt_one() {
        let home = temp_home();
        let mut flow = flow(&home, false);
        let state = flow.step(State::NeedAuthentication).await;
        assert!(matches!(state, State::NoAuthentication));
        std::fs::write(flow.store().path(), "access_token = \"half").unwrap();
        let state = flow.step(State::NeedAuthentication).await;
        assert!(matches!(state, State::NoAuthentication));
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn has_token_keeps_a_margin() {
        let home = temp_home();
        let mut flow = flow(&home, false);
        let state = flow.step(State::HasToken(token(900, true))).await;
        assert!(matches!(state, State::Success(_)));
        // 30 s left, 60 s margin: refresh.
        let state = flow.step(State::HasToken(token(30, true))).await;
        assert!(matches!(state, State::NeedRefresh(_)));
        // Expiring and nothing to refresh with: log in.
        let state = flow.step(State::HasToken(token(30, false))).await;
        assert!(matches!(state, State::NoAuthentication));
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn no_authentication_logs_in_only_when_allowed() {
        let home = temp_home();
        let state = flow(&home, false).step(State::NoAuthentication).await;
        assert!(
            matches!(&state, State::Failure(ClientError::LoginRequired { server }) if server == "http://127.0.0.1:9")
        );
        let state = flow(&home, true).step(State::NoAuthentication).await;
        assert!(matches!(state, State::RequestLogin));
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn need_refresh_with_the_server_down() {
        let home = temp_home();
        let mut flow = flow(&home, false);
        // Still valid for 30 s: keep it, and say so.
        let state = flow.step(State::NeedRefresh(token(30, true))).await;
        assert!(matches!(state, State::Success(_)));
        let warnings = flow.take_warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("cannot reach http://127.0.0.1:9/token"));
        assert!(!warnings[0].contains("refresh\""));
        // Expired: fail, naming the server.
        let state = flow.step(State::NeedRefresh(token(-5, true))).await;
        assert!(matches!(
            state,
            State::Failure(ClientError::Unreachable { .. })
        ));
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn request_login_with_the_server_down_fails() {
        let home = temp_home();
        let state = flow(&home, true).step(State::RequestLogin).await;
        assert!(matches!(
            state,
            State::Failure(ClientError::Unreachable { .. })
        ));
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn has_new_token_writes_and_reads_back() {
        let home = temp_home();
        let mut flow = flow(&home, false);
        let new = token(900, true);
        let state = flow.step(State::HasNewToken(new.clone())).await;
        assert!(matches!(&state, State::Success(t) if *t == new));
        assert_eq!(flow.store().load().unwrap(), Some(new));
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn has_new_token_into_an_unwritable_directory_fails_clearly() {
        let home = temp_home();
        // A file where the servers directory should be: no one, not even root, can
        // create a directory under it.
        std::fs::write(home.join("servers"), "x").unwrap();
        let mut flow = flow(&home, false);
        let state = flow.step(State::HasNewToken(token(900, true))).await;
        let State::Failure(error) = state else {
            panic!("expected a failure, got {state:?}")
        };
        let text = error_chain(&error);
        assert!(text.contains("cannot create directory"), "{text}");
        assert!(!text.contains("access"), "{text}");
        let _ = std::fs::remove_dir_all(home);
    }

    /// Found while writing the `client_answers` fuzz target, which reproduces it with
    /// fuzz/corpus/client_answers/tokens-exp-min: a token answer without `expires_in`
    /// whose access token says `exp` -2^63 overflowed the lifetime left (a panic in a
    /// debug build, a lifetime of centuries in a release build).
    #[test]
    fn an_access_token_from_long_ago_has_no_lifetime_left() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":-9223372036854775808}"#);
        let tokens: TokenResponse = serde_json::from_value(serde_json::json!({
            "access_token": format!("e30.{payload}.c2ln"),
            "token_type": "Bearer",
        }))
        .unwrap();
        let server = Url::parse("https://kw.example").unwrap();
        let file = token_file_for(
            tokens,
            None,
            "https://kw.example/token",
            &server,
            "cli",
            1_800_000_000,
        );
        assert_eq!(file.expires_at, i64::MIN);
        assert_eq!(file.expires_in, Some(0));
        assert!(!file.is_fresh(1_800_000_000, 0));
    }

    #[test]
    fn jwt_claims_are_read_for_display_only() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"u1","email":"a@example.com","exp":42}"#);
        let claims = jwt_claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!(claims["email"], "a@example.com");
        assert!(jwt_claims("opaque-token").is_none());
        assert!(jwt_claims("a.!!!.c").is_none());
    }
}
