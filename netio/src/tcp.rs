//! TCP listeners and the loop that accepts their connections.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// How long the accept loop waits after a failed accept before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds a non-blocking TCP listener. Needs no runtime: call it where a bind failure
/// should stop the start.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts connections for ever, handing each one and its remote address to `each`. A
/// failed accept (out of file descriptors, mostly) is logged as `"{name} accept: .."`
/// and retried after a pause rather than in a spin.
pub async fn accept_each(
    listener: &TcpListener,
    name: &str,
    mut each: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => each(stream, remote),
            Err(e) => {
                warn!("{name} accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Asks the kernel for a send buffer of `bytes` for `stream` (Linux doubles it).
pub fn set_send_buffer(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    socket2::SockRef::from(stream).set_send_buffer_size(bytes)
}
