//! HTTPS: a listener for [`crate::serve`] that hands it connections once their TLS
//! handshake is done.
//!
//! Handshakes run in tasks of their own, at most [`MAX_HANDSHAKES`] at once, at most
//! [`MAX_HANDSHAKES_PER_ADDRESS`] of them from one client address (past that its next
//! connection is closed at once), and each for at most [`HANDSHAKE_TIMEOUT`]: a client
//! that opens connections and sends nothing holds up neither the accept loop nor the
//! others' handshakes. The certificate is the acceptor's: with `netio::tls::Certificate`
//! it can change while the server runs.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, rustls};
use tracing::debug;

/// Most TLS handshakes under way at once; the accept loop waits for one to end past it.
pub const MAX_HANDSHAKES: usize = 256;
/// Most TLS handshakes under way from one client address (a browser opens a few).
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;
/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The handshakes under way, by client address.
type InFlight = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One handshake of an address counted in [`InFlight`]; uncounted when dropped.
struct Counted(InFlight, IpAddr);

impl Counted {
    /// Counts a handshake of `ip`, unless it has [`MAX_HANDSHAKES_PER_ADDRESS`] already.
    fn of(in_flight: &InFlight, ip: IpAddr) -> Option<Counted> {
        let mut map = in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Counted(in_flight.clone(), ip))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Connections accepted over TLS, for `axum::serve` (through [`crate::serve`]).
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config` (a task on the current runtime, which
    /// ends with the listener); `failures` counts handshakes that failed, timed out or were
    /// refused (too many under way from one address).
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        failures: IntCounter,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (done, ready) = mpsc::channel(64);
        tokio::spawn(accept(listener, acceptor, done, failures));
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ends only once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and runs each one's handshake in a task of its own, until the
/// listener is dropped.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    failures: IntCounter,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let in_flight = InFlight::default();
    loop {
        let next = async {
            // The semaphore is never closed: the permit always comes.
            let permit = handshakes.clone().acquire_owned().await.ok();
            (permit, listener.accept().await)
        };
        let (permit, accepted) = tokio::select! {
            next = next => next,
            () = done.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, mostly: pause rather than spin.
                tracing::warn!("HTTPS accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(counted) = Counted::of(&in_flight, peer.ip()) else {
            failures.inc();
            debug!(%peer, "TLS handshake refused: too many under way from this address");
            continue;
        };
        let (acceptor, done, failures) = (acceptor.clone(), done.clone(), failures.clone());
        tokio::spawn(async move {
            let _held = (permit, counted);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    failures.inc();
                    debug!(%peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    failures.inc();
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}
