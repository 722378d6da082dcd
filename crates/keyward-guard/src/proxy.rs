//! The reverse proxy `keyward guard` runs: every HTTP request checked with the
//! [`Guard`] and forwarded to the upstream with the caller's identity in
//! `x-keyward-sub`, `x-keyward-scope` and `x-keyward-act` (any such headers the caller
//! sent are removed first) and RFC 7239 `Forwarded`; every WebSocket run through the
//! [`ws`] protocol and piped to the upstream once authenticated; and the counters
//! [`Metrics`] serves at `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{self as axum_ws, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

use crate::http::{Rejection, authenticate, bearer};
use crate::ws::{self, Action, Frame, Identity, Session};
use crate::{Guard, Principal, VerifyError, unix_now_ms};

/// The read and write buffers of each WebSocket (both sides of a connection). An idle
/// connection costs little more than these; the library's default (128 KiB each) made
/// an idle proxied connection cost about 290 KiB.
pub const WS_BUFFER: usize = 8 * 1024;

/// The upstream side's WebSocket settings: small buffers, and messages and frames no
/// larger than an HTTP body ([`MAX_BODY`]).
fn upstream_ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .max_message_size(Some(MAX_BODY))
        .max_frame_size(Some(MAX_BODY))
}

/// The largest request or response body forwarded, in bytes (and the largest WebSocket
/// message or frame, either way).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The headers that carry the caller's identity to the upstream.
pub mod identity_header {
    /// The subject.
    pub const SUB: &str = "x-keyward-sub";
    /// The granted scopes, space-separated.
    pub const SCOPE: &str = "x-keyward-scope";
    /// The actor chain (RFC 8693 §4.1), outermost first, space-separated; absent without
    /// an actor.
    pub const ACT: &str = "x-keyward-act";
    /// The prefix removed from every incoming request.
    pub const PREFIX: &str = "x-keyward-";
}

/// Counters for `/metrics` (Prometheus text format).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<&'static str, u64>>,
    closes: Mutex<BTreeMap<&'static str, u64>>,
    live: AtomicI64,
    upgrades: AtomicU64,
}

impl Metrics {
    fn request(&self, outcome: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    fn close(&self, reason: &'static str) {
        *self
            .closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// The live WebSockets.
    pub fn live_websockets(&self) -> i64 {
        self.live.load(Ordering::Relaxed)
    }

    /// The exposition text, with the guard's JWKS refetches.
    pub fn render(&self, guard: &Guard) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# TYPE keyward_guard_requests_total counter\n# HELP keyward_guard_requests_total HTTP requests and WebSocket upgrades by outcome."
        );
        for (outcome, n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                text,
                "keyward_guard_requests_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            text,
            "# TYPE keyward_guard_websockets gauge\nkeyward_guard_websockets {}",
            self.live_websockets()
        );
        let _ = writeln!(
            text,
            "# TYPE keyward_guard_websockets_opened_total counter\nkeyward_guard_websockets_opened_total {}",
            self.upgrades.load(Ordering::Relaxed)
        );
        let _ = writeln!(text, "# TYPE keyward_guard_websocket_closes_total counter");
        for (reason, n) in self.closes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                text,
                "keyward_guard_websocket_closes_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            text,
            "# TYPE keyward_guard_jwks_refetches_total counter\nkeyward_guard_jwks_refetches_total {}",
            guard.jwks_refetches()
        );
        text
    }
}

/// The proxy: a guard, an upstream, counters.
#[derive(Debug)]
pub struct Proxy {
    guard: Arc<Guard>,
    upstream: url::Url,
    http: reqwest::Client,
    metrics: Metrics,
}

/// Why the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream is not an http(s) URL.
    #[error("the upstream must be an http:// or https:// URL, not {0}")]
    Upstream(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port[/prefix]`) in front of which `guard`
    /// stands.
    pub fn new(guard: Arc<Guard>, upstream: url::Url) -> Result<Arc<Self>, ProxyError> {
        if !matches!(upstream.scheme(), "http" | "https") || upstream.host().is_none() {
            return Err(ProxyError::Upstream(upstream.to_string()));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(ProxyError::Client)?;
        Ok(Arc::new(Self {
            guard,
            upstream,
            http,
            metrics: Metrics::default(),
        }))
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The guard.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// The public router: every path is proxied. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so that `Forwarded`
    /// names the caller.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(proxy_request)
            .with_state(Arc::clone(self))
    }

    /// The admin router: `GET /metrics`.
    pub fn admin_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/metrics",
                axum::routing::get(|State(proxy): State<Arc<Proxy>>| async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        proxy.metrics.render(&proxy.guard),
                    )
                }),
            )
            .with_state(Arc::clone(self))
    }

    /// The upstream URL for `uri`.
    fn target(&self, uri: &Uri, websocket: bool) -> String {
        target_url(&self.upstream, uri, websocket)
    }
}

/// The upstream URL for a request to `uri`: the upstream's path prefix, then the
/// request's path and query; `ws`/`wss` for a WebSocket.
pub fn target_url(upstream: &url::Url, uri: &Uri, websocket: bool) -> String {
    let scheme = match (upstream.scheme(), websocket) {
        ("https", true) => "wss",
        (_, true) => "ws",
        (scheme, false) => scheme,
    };
    let base = &upstream[url::Position::AfterScheme..url::Position::AfterPath];
    let base = base.trim_end_matches('/');
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{scheme}{base}{path_and_query}")
}

/// Headers that describe one hop (RFC 9110 §7.6.1) and are not forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The request's headers as the upstream gets them: hop-by-hop headers (and those the
/// `Connection` header names), `Host`,
/// `Content-Length`, the caller's `Forwarded` and every `x-keyward-*` removed; then the
/// identity of `principal` and a `Forwarded` for this hop added.
pub fn upstream_headers(
    incoming: &HeaderMap,
    principal: &Principal,
    peer: Option<SocketAddr>,
) -> HeaderMap {
    let named: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::new();
    for (name, value) in incoming {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || named.iter().any(|n| n == lower)
            || lower.starts_with(identity_header::PREFIX)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::FORWARDED
            || lower.starts_with("sec-websocket-")
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let mut add = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    add(identity_header::SUB, &principal.sub);
    add(identity_header::SCOPE, &principal.scopes.join(" "));
    if let Some(act) = principal.act_header() {
        add(identity_header::ACT, &act);
    }
    let mut forwarded = Vec::new();
    if let Some(peer) = peer {
        forwarded.push(format!("for=\"{peer}\""));
    }
    if let Some(host) = incoming.get(header::HOST).and_then(|h| h.to_str().ok())
        && !host.contains(['"', '\\'])
    {
        forwarded.push(format!("host=\"{host}\""));
    }
    forwarded.push("proto=http".into());
    add("forwarded", &forwarded.join(";"));
    headers
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn outcome(error: &VerifyError) -> &'static str {
    match error {
        VerifyError::InsufficientScope(_) => "forbidden",
        VerifyError::Unavailable => "unavailable",
        _ => "unauthorized",
    }
}

async fn proxy_request(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if is_upgrade(&parts.headers) {
        return upgrade(proxy, parts, peer).await;
    }
    let principal = match authenticate(&proxy.guard, &parts.headers).await {
        Ok(principal) => principal,
        Err(rejection) => {
            proxy.metrics.request(outcome(&rejection.0));
            return rejection.into_response();
        }
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        proxy.metrics.request("too_large");
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let headers = upstream_headers(&parts.headers, &principal, peer);
    let answer = proxy
        .http
        .request(parts.method.clone(), proxy.target(&parts.uri, false))
        .headers(headers)
        .body(bytes)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            proxy.metrics.request("upstream_error");
            return bad_gateway();
        }
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else {
        proxy.metrics.request("upstream_error");
        return bad_gateway();
    };
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
    proxy.metrics.request("allowed");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn bad_gateway() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(serde_json::json!({"error": "bad_gateway",
            "error_description": "the upstream did not answer"})),
    )
        .into_response()
}

async fn upgrade(proxy: Arc<Proxy>, mut parts: Parts, peer: Option<SocketAddr>) -> Response {
    // With an Authorization header the token is checked before the upgrade, and a bad
    // one is refused as any HTTP request is.
    let header_auth = match bearer(&parts.headers) {
        None => None,
        Some(token) => match proxy.guard.verify(token).await {
            Ok(principal) => Some((principal, token.to_owned())),
            Err(error) => {
                proxy.metrics.request(outcome(&error));
                return Rejection(error).into_response();
            }
        },
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade
            .read_buffer_size(WS_BUFFER)
            .write_buffer_size(WS_BUFFER)
            .max_message_size(MAX_BODY)
            .max_frame_size(MAX_BODY),
        Err(rejection) => return rejection.into_response(),
    };
    proxy.metrics.request("websocket");
    let target = proxy.target(&parts.uri, true);
    let headers = parts.headers;
    upgrade.on_upgrade(move |socket| async move {
        proxy.metrics.live.fetch_add(1, Ordering::Relaxed);
        proxy.metrics.upgrades.fetch_add(1, Ordering::Relaxed);
        let reason = Connection {
            proxy: Arc::clone(&proxy),
            target,
            headers,
            peer,
        }
        .run(socket, header_auth)
        .await;
        proxy.metrics.close(reason);
        proxy.metrics.live.fetch_sub(1, Ordering::Relaxed);
    })
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One proxied WebSocket: the I/O around a [`Session`].
struct Connection {
    proxy: Arc<Proxy>,
    target: String,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
}

fn identity(principal: &Principal) -> Identity {
    Identity {
        sub: principal.sub.clone(),
        expires_at: principal.exp,
    }
}

/// The metrics label of a close the guard made.
fn close_label(reason: &str) -> &'static str {
    match reason {
        ws::reason::EXPIRED => "expired",
        ws::reason::REVOKED => "revoked",
        ws::reason::AUTH_TIMEOUT => "auth_timeout",
        ws::reason::OTHER_SUBJECT => "other_subject",
        _ => "auth_failed",
    }
}

fn to_upstream(message: axum_ws::Message) -> Option<tungstenite::Message> {
    Some(match message {
        axum_ws::Message::Text(text) => tungstenite::Message::text(text.as_str()),
        axum_ws::Message::Binary(bytes) => tungstenite::Message::Binary(bytes),
        _ => return None,
    })
}

fn close_frame(code: u16, reason: &str) -> axum_ws::Message {
    axum_ws::Message::Close(Some(axum_ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn upstream_close(code: u16, reason: &str) -> tungstenite::Message {
    tungstenite::Message::Close(Some(tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

impl Connection {
    async fn open_upstream(&self, principal: &Principal) -> Option<Upstream> {
        let mut request = self.target.as_str().into_client_request().ok()?;
        let headers = upstream_headers(&self.headers, principal, self.peer);
        for (name, value) in &headers {
            if name != header::AUTHORIZATION {
                request.headers_mut().append(name.clone(), value.clone());
            }
        }
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(request, Some(upstream_ws_config()), true),
        )
        .await
        {
            Ok(Ok((stream, _))) => Some(stream),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot open the upstream WebSocket");
                None
            }
            Err(_) => {
                tracing::warn!("the upstream WebSocket did not open in time");
                None
            }
        }
    }

    /// Runs the connection to its end; returns the metrics label of how it ended.
    async fn run(
        self,
        socket: WebSocket,
        header_auth: Option<(Principal, String)>,
    ) -> &'static str {
        let guard = Arc::clone(&self.proxy.guard);
        let (mut client_tx, mut client_rx) = socket.split();
        let mut upstream_tx = None;
        let mut upstream_rx = None;
        let now = unix_now_ms();
        let (mut session, mut actions, mut token, mut principal) = match header_auth {
            Some((principal, token)) => {
                let (session, actions) = Session::with_header(identity(&principal), now);
                (session, actions, Some(token), Some(principal))
            }
            None => (Session::new(now), Vec::new(), None, None),
        };
        let mut recheck = tokio::time::interval_at(
            tokio::time::Instant::now() + guard.recheck(),
            guard.recheck(),
        );
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The frame that the last event carried, for Action::Forward.
        let mut current: Option<axum_ws::Message> = None;
        loop {
            for action in std::mem::take(&mut actions) {
                match action {
                    Action::OpenUpstream => {
                        let Some(who) = principal.as_ref() else {
                            return "auth_failed";
                        };
                        match self.open_upstream(who).await {
                            Some(stream) => {
                                let (tx, rx) = stream.split();
                                upstream_tx = Some(tx);
                                upstream_rx = Some(rx);
                            }
                            None => {
                                let _ = client_tx
                                    .send(close_frame(
                                        ws::close::BAD_GATEWAY,
                                        "upstream unavailable",
                                    ))
                                    .await;
                                return "upstream_unavailable";
                            }
                        }
                    }
                    Action::Send(message) => {
                        if client_tx
                            .send(axum_ws::Message::Text(message.to_json().into()))
                            .await
                            .is_err()
                        {
                            return "client_gone";
                        }
                    }
                    Action::Forward => {
                        if let (Some(tx), Some(message)) =
                            (upstream_tx.as_mut(), current.take().and_then(to_upstream))
                            && tx.send(message).await.is_err()
                        {
                            let _ = client_tx
                                .send(close_frame(ws::close::BAD_GATEWAY, "upstream gone"))
                                .await;
                            return "upstream_closed";
                        }
                    }
                    Action::Close { code, reason } => {
                        let _ = client_tx.send(close_frame(code, reason)).await;
                        if let Some(tx) = upstream_tx.as_mut() {
                            let _ = tx.send(upstream_close(code, reason)).await;
                            let _ = tx.close().await;
                        }
                        return close_label(reason);
                    }
                }
            }
            current = None;
            let wake = session.next_wakeup();
            let check_now = guard.introspects() && session.is_open();
            tokio::select! {
                message = client_rx.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        _ => {
                            if let Some(tx) = upstream_tx.as_mut() {
                                let _ = tx.close().await;
                            }
                            return "client_gone";
                        }
                    };
                    match &message {
                        axum_ws::Message::Text(text) => match ws::classify(text.as_str()) {
                            Frame::Auth(new_token) => {
                                let checked = guard.verify(&new_token).await;
                                let now = unix_now_ms();
                                match checked {
                                    Ok(checked) => {
                                        actions = session.on_auth(Ok(identity(&checked)), now);
                                        if session.is_open() {
                                            token = Some(new_token);
                                            principal.get_or_insert(checked);
                                        }
                                    }
                                    Err(e) => actions = session.on_auth(Err(e.to_string()), now),
                                }
                            }
                            Frame::BadAuth => actions = session.on_bad_auth(),
                            Frame::Data(_) => actions = session.on_data(),
                        },
                        axum_ws::Message::Binary(_) => actions = session.on_data(),
                        axum_ws::Message::Ping(_) | axum_ws::Message::Pong(_) => {}
                        axum_ws::Message::Close(frame) => {
                            if let Some(tx) = upstream_tx.as_mut() {
                                let close = frame.as_ref().map_or(
                                    tungstenite::Message::Close(None),
                                    |f| upstream_close(f.code, f.reason.as_str()),
                                );
                                let _ = tx.send(close).await;
                                let _ = tx.close().await;
                            }
                            // Complete the closing handshake (RFC 6455 §5.5.1): the
                            // client's close frame is answered, not met with a reset.
                            let _ = client_tx.send(axum_ws::Message::Close(frame.clone())).await;
                            let _ = client_tx.close().await;
                            return "client_closed";
                        }
                    }
                    current = Some(message);
                }
                message = async {
                    match upstream_rx.as_mut() {
                        Some(rx) => rx.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let forwarded = match message {
                        Some(Ok(tungstenite::Message::Text(text))) => {
                            axum_ws::Message::Text(text.as_str().into())
                        }
                        Some(Ok(tungstenite::Message::Binary(bytes))) => {
                            axum_ws::Message::Binary(bytes)
                        }
                        Some(Ok(tungstenite::Message::Close(frame))) => {
                            let close = frame.map_or(axum_ws::Message::Close(None), |f| {
                                close_frame(f.code.into(), f.reason.as_str())
                            });
                            let _ = client_tx.send(close).await;
                            return "upstream_closed";
                        }
                        Some(Ok(_)) => continue,
                        _ => {
                            let _ = client_tx
                                .send(close_frame(ws::close::BAD_GATEWAY, "upstream gone"))
                                .await;
                            return "upstream_closed";
                        }
                    };
                    if client_tx.send(forwarded).await.is_err() {
                        if let Some(tx) = upstream_tx.as_mut() {
                            let _ = tx.close().await;
                        }
                        return "client_gone";
                    }
                }
                () = async {
                    match wake {
                        Some(at) => {
                            let delay = u64::try_from(at - unix_now_ms()).unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    actions = session.on_tick(unix_now_ms());
                }
                _ = recheck.tick(), if check_now => {
                    if let Some(token) = token.as_deref()
                        && guard.still_active(token).await == Some(false)
                    {
                        // A token that has just expired is inactive too: that is an
                        // expiry, not a revocation.
                        let expired = session.on_tick(unix_now_ms());
                        actions = if session.is_closed() {
                            expired
                        } else {
                            session.on_revoked()
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_headers_carry_the_identity_and_drop_what_the_caller_should_not_set() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("host", "guard.example"),
            ("x-keyward-sub", "admin"),
            ("x-keyward-act", "root"),
            ("X-Keyward-Other", "x"),
            ("forwarded", "for=6.6.6.6"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hop"),
            ("accept", "text/plain"),
            ("authorization", "Bearer t"),
        ] {
            incoming.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let principal = Principal {
            sub: "alice".into(),
            scopes: vec!["a".into(), "b:*".into()],
            act: Some(keyward_proto::exchange::Actor {
                sub: "ci".into(),
                act: Some(Box::new(keyward_proto::exchange::Actor {
                    sub: "bot".into(),
                    act: None,
                })),
            }),
            client_id: "portal".into(),
            exp: 0,
            jti: "j".into(),
            aud: "queue".into(),
        };
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let out = upstream_headers(&incoming, &principal, Some(peer));
        let get = |name: &str| {
            out.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("x-keyward-sub"), ["alice"]);
        assert_eq!(get("x-keyward-scope"), ["a b:*"]);
        assert_eq!(get("x-keyward-act"), ["ci bot"]);
        assert!(get("x-keyward-other").is_empty());
        assert_eq!(
            get("forwarded"),
            ["for=\"127.0.0.1:4000\";host=\"guard.example\";proto=http"]
        );
        for gone in ["host", "connection", "x-secret"] {
            assert!(get(gone).is_empty(), "{gone}");
        }
        assert_eq!(get("accept"), ["text/plain"]);
        assert_eq!(get("authorization"), ["Bearer t"]);

        // Without an actor, no x-keyward-act at all (a caller's is still removed).
        let alone = Principal {
            act: None,
            ..principal
        };
        assert!(
            upstream_headers(&incoming, &alone, None)
                .get("x-keyward-act")
                .is_none()
        );
    }

    #[test]
    fn the_upstream_url_keeps_the_prefix_path_and_query() {
        let upstream = url::Url::parse("http://127.0.0.1:9000/api/").unwrap();
        let target = |base: &url::Url, uri: &str, websocket| {
            target_url(base, &uri.parse().unwrap(), websocket)
        };
        assert_eq!(
            target(&upstream, "/items?x=1", false),
            "http://127.0.0.1:9000/api/items?x=1"
        );
        assert_eq!(
            target(&upstream, "/live", true),
            "ws://127.0.0.1:9000/api/live"
        );
        let tls = url::Url::parse("https://svc.example").unwrap();
        assert_eq!(target(&tls, "/", true), "wss://svc.example/");
        assert_eq!(target(&tls, "/a/b", false), "https://svc.example/a/b");
    }
}
