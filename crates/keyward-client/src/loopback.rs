//! Terminal login through the system browser (RFC 8252): an authorization code request
//! with PKCE whose redirect comes back to a one-shot listener on `127.0.0.1`, as
//! `gh auth login --web` and `gcloud auth login` do.
//!
//! The listener waits for exactly one request: the redirect carrying the `state` this
//! login sent. Anything else that reaches the port (another path, another or no
//! `state`, another issuer's `iss`) is answered with a refusal page and changes nothing,
//! so another program on the machine can neither inject a code nor end the login. The
//! code is redeemed before the browser is answered, so the page it shows tells the
//! truth; then the listener closes and the port refuses connections.
//!
//! What the listener accepts is decided by [`judge`], a pure function of the request
//! head, unit-tested below; the e2e suite drives the whole login with a `BROWSER`
//! script against a running keyward.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use keyward_proto::pkce::CodeVerifier;
use keyward_proto::secret::{constant_time_eq, random_urlsafe};
use keyward_proto::token::TokenResponse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use url::Url;

use crate::error::{ClientError, sanitize};
use crate::http;

/// The path of the redirect URI, after `http://127.0.0.1:<port>`. keyward registers
/// `http://127.0.0.1/callback` for its default command-line client.
pub const CALLBACK_PATH: &str = "/callback";
/// How long the browser has to come back.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest request head read; a longer one is refused unread.
const MAX_HEAD: usize = 8 * 1024;
/// How long a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing an answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections read at once; more are closed unread, so a flood cannot grow memory.
const MAX_READING: usize = 16;

/// A browser login waiting for its redirect. Its `Debug` leaves out the `state` and
/// the PKCE verifier.
pub struct BrowserLogin {
    listener: TcpListener,
    authorize_url: String,
    redirect_uri: String,
    issuer: String,
    /// RFC 9207: the provider promised to name itself in every answer.
    iss_required: bool,
    token_endpoint: String,
    state: String,
    verifier: CodeVerifier,
    deadline: Instant,
}

impl std::fmt::Debug for BrowserLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserLogin")
            .field("redirect_uri", &self.redirect_uri)
            .field("issuer", &self.issuer)
            .field("token_endpoint", &self.token_endpoint)
            .finish_non_exhaustive()
    }
}

/// Where a provider sends the browser and redeems the code.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints<'a> {
    /// The issuer, which an RFC 9207 `iss` in the redirect must name.
    pub issuer: &'a str,
    /// Whether the provider's metadata promises `iss` in every authorization response
    /// (RFC 9207 `authorization_response_iss_parameter_supported`): then one without
    /// it is refused.
    pub sends_iss: bool,
    /// The authorization endpoint.
    pub authorization: &'a str,
    /// The token endpoint.
    pub token: &'a str,
}

impl BrowserLogin {
    /// Listens on `127.0.0.1` (a port the system picks) and prepares the authorization
    /// request of `client_id` for `scope`, with a fresh `state` and PKCE verifier.
    pub async fn start(
        endpoints: Endpoints<'_>,
        client_id: &str,
        scope: &str,
    ) -> Result<Self, ClientError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|source| ClientError::Listen { source })?;
        let port = listener
            .local_addr()
            .map_err(|source| ClientError::Listen { source })?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        let state = random_urlsafe(32);
        let verifier = CodeVerifier::generate();
        let mut url =
            Url::parse(endpoints.authorization).map_err(|_| ClientError::BadServerUrl {
                url: sanitize(endpoints.authorization),
                reason: "the authorization endpoint is not a URL",
            })?;
        http::check_secure(&url)?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", &redirect_uri);
            if !scope.is_empty() {
                query.append_pair("scope", scope);
            }
            query
                .append_pair("state", &state)
                .append_pair("code_challenge", verifier.challenge().as_str())
                .append_pair("code_challenge_method", "S256");
        }
        Ok(Self {
            listener,
            authorize_url: url.into(),
            redirect_uri,
            issuer: endpoints.issuer.to_owned(),
            iss_required: endpoints.sends_iss,
            token_endpoint: endpoints.token.to_owned(),
            state,
            verifier,
            deadline: Instant::now() + LOGIN_TIMEOUT,
        })
    }

    /// The page to open in the browser.
    pub fn authorize_url(&self) -> &str {
        &self.authorize_url
    }

    /// Where the browser will be sent back: `http://127.0.0.1:<port>/callback`.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The token endpoint the code is redeemed at.
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// When the login gives up waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits for the redirect, redeems its code as `client_id`, answers the browser with
    /// a page saying how it went (naming `server`), and closes the listener.
    pub async fn finish(
        self,
        client: &reqwest::Client,
        client_id: &str,
        server: &str,
    ) -> Result<TokenResponse, ClientError> {
        let mut reading = JoinSet::new();
        let deadline = tokio::time::Instant::from_std(self.deadline);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    // A failed accept (the peer gave up) changes nothing.
                    if let Ok((stream, _)) = accepted
                        && reading.len() < MAX_READING
                    {
                        reading.spawn(read_head(stream));
                    }
                }
                Some(read) = reading.join_next(), if !reading.is_empty() => {
                    let Ok(Some((mut stream, head))) = read else { continue };
                    let expected = Expected {
                        state: &self.state,
                        issuer: &self.issuer,
                        iss_required: self.iss_required,
                    };
                    match judge(&head, &expected) {
                        Callback::Refused { status, reason } => {
                            answer(&mut stream, status, "Not this login", reason).await;
                        }
                        Callback::Error { error, description } => {
                            let failure = if error == "access_denied" {
                                ClientError::AccessDenied
                            } else {
                                ClientError::Refused {
                                    url: self.authorize_url.split('?').next().unwrap_or_default().to_owned(),
                                    error,
                                    description,
                                }
                            };
                            let text = format!("The login to {server} failed: {failure}.");
                            answer(&mut stream, 200, "Login failed", &text).await;
                            return Err(failure);
                        }
                        Callback::Code(code) => {
                            let redeemed = http::redeem_code(
                                client,
                                &self.token_endpoint,
                                client_id,
                                &code,
                                &self.redirect_uri,
                                &self.verifier,
                            )
                            .await;
                            let (title, text) = match &redeemed {
                                Ok(_) => (
                                    "Logged in",
                                    format!("You are logged in to {server}. You can close this tab and go back to the terminal."),
                                ),
                                Err(error) => (
                                    "Login failed",
                                    format!("The login to {server} failed: {error}. The terminal says more."),
                                ),
                            };
                            answer(&mut stream, 200, title, &text).await;
                            return redeemed;
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Err(ClientError::Expired),
            }
        }
    }
}

/// What the listener waits for: the login's `state`, from `issuer`.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The `state` the authorization request carried.
    pub state: &'a str,
    /// The issuer an RFC 9207 `iss` must name.
    pub issuer: &'a str,
    /// Whether `iss` must be there (the issuer's metadata promises it).
    pub iss_required: bool,
}

/// What one request to the listener is.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    /// The redirect this login waits for, with its code.
    Code(String),
    /// The redirect this login waits for, with an error (RFC 6749 §4.1.2.1): the user
    /// declined, or the server refused the request.
    Error {
        /// The error code.
        error: String,
        /// The server's description, cleaned for display.
        description: Option<String>,
    },
    /// Anything else: answered with `status` and the reason, and ignored.
    Refused {
        /// The HTTP status of the answer.
        status: u16,
        /// Why, for the page.
        reason: &'static str,
    },
}

/// Judges a request head that reached the listener of the login that sent `state` to
/// `issuer`: only `GET /callback` with exactly that `state`, each parameter once
/// (RFC 6749 §3.1), and no `iss` naming another issuer (RFC 9207; nor a missing one
/// when the issuer promised it) is the redirect.
pub fn judge(head: &[u8], expected: &Expected<'_>) -> Callback {
    let Expected {
        state,
        issuer,
        iss_required,
    } = *expected;
    let refuse = |status, reason| Callback::Refused { status, reason };
    if head.len() > MAX_HEAD {
        return refuse(431, "The request is too large.");
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return refuse(400, "The request cannot be read.");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refuse(400, "The request cannot be read.");
    };
    if !version.starts_with("HTTP/1.") {
        return refuse(400, "The request cannot be read.");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return refuse(404, "There is nothing here.");
    }
    if method != "GET" {
        return refuse(405, "Only the browser's redirect is expected here.");
    }
    let mut params = std::collections::BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(name, value).is_some() {
            return refuse(400, "A parameter is repeated.");
        }
    }
    let sent = params
        .get("state")
        .map(|s| s.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(sent, state.as_bytes()) {
        return refuse(
            400,
            "This is not the login the terminal is waiting for (its state does not match).",
        );
    }
    match params.get("iss") {
        Some(iss) if iss.trim_end_matches('/') != issuer.trim_end_matches('/') => {
            return refuse(
                400,
                "This answer comes from another server than the one asked.",
            );
        }
        None if iss_required => {
            return refuse(400, "This answer does not name the server it comes from.");
        }
        _ => {}
    }
    if let Some(error) = params.get("error") {
        return Callback::Error {
            error: sanitize(error),
            description: params.get("error_description").map(|d| sanitize(d)),
        };
    }
    match params.remove("code") {
        Some(code) if !code.is_empty() => Callback::Code(code.into_owned()),
        _ => refuse(400, "The redirect carries no code."),
    }
}

/// Reads a request head (up to the blank line, or [`MAX_HEAD`] + 1 bytes) within
/// [`HEAD_TIMEOUT`]; `None` when the peer closes or stalls.
async fn read_head(mut stream: TcpStream) -> Option<(TcpStream, Vec<u8>)> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() <= MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Ok(true) => Some((stream, head)),
        _ => None,
    }
}

/// Answers with a small self-contained page, and closes.
async fn answer(stream: &mut TcpStream, status: u16, title: &str, text: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let body = page(title, text);
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write).await;
}

/// The page the browser shows, everything in it escaped.
fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · keyward</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}</style>\
         </head><body><main><h1>{title}</h1><p>{text}</p></main></body></html>\n",
        title = escape(title),
        text = escape(text)
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "s-0123456789abcdefghijklmnopqrstuvwxyzABCDE";
    const ISSUER: &str = "https://id.example";
    const EXPECTED: Expected<'static> = Expected {
        state: STATE,
        issuer: ISSUER,
        iss_required: false,
    };

    fn request(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n").into_bytes()
    }

    fn refused(head: &[u8]) -> u16 {
        match judge(head, &EXPECTED) {
            Callback::Refused { status, .. } => status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_redirect_with_this_logins_state_carries_the_code() {
        assert_eq!(
            judge(
                &request(&format!(
                    "/callback?code=abc&state={STATE}&iss=https%3A%2F%2Fid.example"
                )),
                &EXPECTED
            ),
            Callback::Code("abc".into())
        );
        // Without `iss` (servers before RFC 9207) too.
        assert_eq!(
            judge(
                &request(&format!("/callback?state={STATE}&code=x%2By")),
                &EXPECTED
            ),
            Callback::Code("x+y".into())
        );
    }

    #[test]
    fn an_error_with_this_logins_state_ends_the_login() {
        assert_eq!(
            judge(
                &request(&format!(
                    "/callback?error=access_denied&error_description=no%1b[2J&state={STATE}"
                )),
                &EXPECTED
            ),
            Callback::Error {
                error: "access_denied".into(),
                description: Some("no[2J".into())
            }
        );
    }

    /// Attack: another program on the machine finds the port and sends its own code
    /// (a login into the attacker's account), or an error to end the login. Without
    /// this login's `state` it is refused and the login goes on waiting.
    #[test]
    fn requests_without_this_logins_state_are_refused() {
        assert_eq!(refused(&request("/callback?code=evil")), 400);
        assert_eq!(refused(&request("/callback?code=evil&state=guess")), 400);
        assert_eq!(
            refused(&request("/callback?error=access_denied&state=")),
            400
        );
        assert_eq!(
            refused(&request(&format!("/callback?code=a&state={STATE}x"))),
            400
        );
        // The right state twice, or the state and a second code: refused.
        assert_eq!(
            refused(&request(&format!(
                "/callback?code=a&state={STATE}&state={STATE}"
            ))),
            400
        );
        assert_eq!(
            refused(&request(&format!("/callback?code=a&code=b&state={STATE}"))),
            400
        );
        // RFC 9207: an answer naming another issuer (mix-up).
        assert_eq!(
            refused(&request(&format!(
                "/callback?code=a&state={STATE}&iss=https%3A%2F%2Fevil.example"
            ))),
            400
        );
        assert_eq!(refused(&request(&format!("/callback?state={STATE}"))), 400);
        assert_eq!(
            refused(&request(&format!("/callback?code=&state={STATE}"))),
            400
        );
    }

    /// Attack (RFC 9207, mix-up): a server that promises `iss` in every answer sent
    /// none; the answer may come from another server the person was sent to.
    #[test]
    fn an_issuer_that_promises_iss_must_send_it() {
        let strict = Expected {
            iss_required: true,
            ..EXPECTED
        };
        let plain = request(&format!("/callback?code=abc&state={STATE}"));
        assert!(matches!(
            judge(&plain, &strict),
            Callback::Refused { status: 400, .. }
        ));
        let named = request(&format!(
            "/callback?code=abc&state={STATE}&iss=https%3A%2F%2Fid.example%2F"
        ));
        assert_eq!(judge(&named, &strict), Callback::Code("abc".into()));
    }

    #[test]
    fn other_paths_methods_and_garbage_are_refused() {
        assert_eq!(refused(&request("/favicon.ico")), 404);
        assert_eq!(
            refused(&request(&format!("/callback/x?code=a&state={STATE}"))),
            404
        );
        assert_eq!(
            refused(format!("POST /callback?code=a&state={STATE} HTTP/1.1\r\n\r\n").as_bytes()),
            405
        );
        assert_eq!(refused(b"\xff\xfe\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /callback\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /callback?code=a HTTP/1.1 extra\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /callback?code=a SPDY/3\r\n\r\n"), 400);
        assert_eq!(refused(&vec![b'a'; MAX_HEAD + 1]), 431);
        assert_eq!(refused(b""), 400);
    }

    #[test]
    fn pages_escape_what_they_show() {
        let html = page("Login failed", "<script>alert('x')</script> & \"more\"");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        );
        assert!(!html.contains("<script>"));
    }

    #[tokio::test]
    async fn the_authorization_request_asks_for_a_code_with_pkce() {
        let endpoints = Endpoints {
            issuer: ISSUER,
            sends_iss: true,
            authorization: "https://id.example/authorize?tenant=a",
            token: "https://id.example/token",
        };
        let login = BrowserLogin::start(endpoints, "device", "openid offline_access")
            .await
            .unwrap();
        let url = Url::parse(login.authorize_url()).unwrap();
        let query: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["tenant"], "a");
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["client_id"], "device");
        assert_eq!(query["scope"], "openid offline_access");
        assert_eq!(query["redirect_uri"], login.redirect_uri());
        assert!(login.redirect_uri().starts_with("http://127.0.0.1:"));
        assert!(login.redirect_uri().ends_with("/callback"));
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"], login.verifier.challenge().as_str());
        assert_eq!(query["state"], login.state);
        assert!(login.state.len() >= 43);
        let shown = format!("{login:?}");
        assert!(!shown.contains(&login.state) && !shown.contains(login.verifier.secret()));
        // A plain-http authorization endpoint elsewhere is refused.
        let plain = Endpoints {
            authorization: "http://id.example/authorize",
            ..endpoints
        };
        assert!(
            BrowserLogin::start(plain, "device", "openid")
                .await
                .is_err()
        );
    }
}
