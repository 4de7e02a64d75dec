//! HTTPS: a listener for [`crate::serve`] that hands it connections once their TLS
//! handshake is done.
//!
//! Handshakes run in tasks of their own, at most [`MAX_HANDSHAKES`] at once and each for
//! at most [`HANDSHAKE_TIMEOUT`], so that a client that opens a connection and sends
//! nothing holds up neither the accept loop nor anyone else's handshake. The certificate
//! is the acceptor's: with `netio::tls::Certificate` it can change while the server runs.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, rustls};
use tracing::debug;

/// Most TLS handshakes under way at once; the accept loop waits for one to end past it.
pub const MAX_HANDSHAKES: usize = 256;
/// How long a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted over TLS, for `axum::serve` (through [`crate::serve`]).
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config` (a task on the current runtime, which
    /// ends with the listener); `failures` counts handshakes that failed or timed out.
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
        let (acceptor, done, failures) = (acceptor.clone(), done.clone(), failures.clone());
        tokio::spawn(async move {
            let _permit = permit;
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
