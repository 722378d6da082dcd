//! A TCP forwarder for the fault harness: a round-robin balancer in front of keyward
//! replicas (`replicas`), and a gate in front of PostgreSQL that can be shut and opened
//! again (`outage`).
//!
//! Each accepted connection goes to the next backend in turn; a backend that refuses
//! (a killed replica) is skipped, as a load balancer's health check would, and the
//! connection goes to the next one. [`Proxy::shut`] drops every forwarded connection and
//! stops listening, so that the far side sees its connections close and new ones
//! refused, as when the server behind is stopped; [`Proxy::open`] listens again on the
//! same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// A running forwarder.
pub struct Proxy {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: std::sync::Mutex<Option<AbortHandle>>,
}

/// What the accept loop and the forwarding tasks share.
struct Shared {
    backends: std::sync::RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
    /// The forwarding tasks still running, aborted by [`Proxy::shut`].
    live: std::sync::Mutex<Vec<AbortHandle>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `backends` in turn.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let proxy = Self {
            addr,
            shared: Arc::new(Shared {
                backends: std::sync::RwLock::new(backends),
                next: AtomicUsize::new(0),
                live: std::sync::Mutex::new(Vec::new()),
            }),
            accept: std::sync::Mutex::new(None),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// Forwards new connections to `backends` from now on (a balancer started before
    /// the servers it fronts, so that its address can be their issuer).
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        if let Ok(mut current) = self.shared.backends.write() {
            *current = backends;
        }
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let forward = tokio::spawn(forward(shared.clone(), inbound));
                if let Ok(mut live) = shared.live.lock() {
                    live.retain(|task| !task.is_finished());
                    live.push(forward.abort_handle());
                }
            }
        });
        if let Ok(mut accept) = self.accept.lock() {
            *accept = Some(task.abort_handle());
        }
    }

    /// Closes every forwarded connection and stops listening: new connections are
    /// refused until [`Proxy::open`].
    pub fn shut(&self) {
        if let Some(task) = self.accept.lock().ok().and_then(|mut a| a.take()) {
            task.abort();
        }
        if let Ok(mut live) = self.shared.live.lock() {
            for task in live.drain(..) {
                task.abort();
            }
        }
    }

    /// Listens again on the same port.
    pub async fn open(&self) -> anyhow::Result<()> {
        // The aborted accept task drops its listener when it is next polled.
        for _ in 0..100 {
            match listen(self.addr) {
                Ok(listener) => {
                    self.serve(listener);
                    return Ok(());
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        listen(self.addr).map(|listener| self.serve(listener))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shut();
    }
}

fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("bind {addr}"))?;
    Ok(socket.listen(1024)?)
}

/// Connects `inbound` to the first backend that accepts, starting with the next in
/// turn, and copies both ways until either side closes. Dropped (closed) when none
/// accepts.
async fn forward(shared: Arc<Shared>, mut inbound: TcpStream) {
    let backends = shared
        .backends
        .read()
        .map(|b| b.clone())
        .unwrap_or_default();
    let count = backends.len();
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..count {
        let backend = backends[(first + k) % count];
        if let Ok(mut outbound) = TcpStream::connect(backend).await {
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A backend that answers each connection with its own name.
    async fn named(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    async fn read(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok(text)
    }

    #[tokio::test]
    async fn round_robin_skips_a_dead_backend_and_the_gate_shuts_and_opens() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let proxy = Proxy::start(vec![named("a").await, dead, named("c").await])
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(read(proxy.addr).await.unwrap());
        }
        // 0 → a, 1 → dead, so c, 2 → c, 3 → a.
        assert_eq!(seen, ["a", "c", "c", "a"]);
        proxy.shut();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(proxy.addr).await.is_err(),
            "still listening"
        );
        proxy.open().await.unwrap();
        assert!(!read(proxy.addr).await.unwrap().is_empty());
    }
}
