//! The ICE-TCP acceptor: one thread accepts on the TCP media port, reads each
//! connection's first frame (a STUN binding request, RFC 4571 framing) within a few
//! seconds, and hands the connection to the shard the ufrag in its USERNAME names; what
//! it refuses is counted (`sfu_tcp_refused_total`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::ice_tcp::{first_frame_len, first_frame_shard};
use crate::metrics::{Metrics, TcpRefusal};
use crate::plane::Command;

/// ICE-TCP connections waiting for their first frame; more are closed at once.
const TCP_PENDING: usize = 1024;

/// An ICE-TCP connection that sends no complete first frame by then is closed.
const TCP_FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// An accepted ICE-TCP connection on its way to a shard.
pub(crate) struct TcpArrival {
    pub(crate) stream: std::net::TcpStream,
    /// Its first frame (a STUN binding request), already read.
    pub(crate) first: Vec<u8>,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

/// Accepts ICE-TCP connections, reads each one's first frame and hands it to the shard its
/// ufrag names.
pub(crate) async fn accept_tcp(
    listener: std::net::TcpListener,
    shards: Vec<mpsc::Sender<Command>>,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let shards = Rc::new(shards);
    let pending = Rc::new(std::cell::Cell::new(0usize));
    netio::tcp::accept_each(&listener, "ICE-TCP", |stream, remote| {
        if pending.get() >= TCP_PENDING {
            metrics.tcp_refused(TcpRefusal::Busy);
            return;
        }
        pending.set(pending.get() + 1);
        let (shards, pending, metrics) = (shards.clone(), pending.clone(), metrics.clone());
        tokio::task::spawn_local(async move {
            let first = tokio::time::timeout(TCP_FIRST_FRAME_TIMEOUT, first_frame(stream)).await;
            pending.set(pending.get() - 1);
            let (stream, frame, shard) = match first {
                Err(_) => return metrics.tcp_refused(TcpRefusal::Timeout),
                Ok(Err(reason)) => return metrics.tcp_refused(reason),
                Ok(Ok(x)) => x,
            };
            let Some(queue) = usize::try_from(shard).ok().and_then(|i| shards.get(i)) else {
                return metrics.tcp_refused(TcpRefusal::Unclaimed);
            };
            let (Ok(local), Ok(stream)) = (stream.local_addr(), stream.into_std()) else {
                return;
            };
            let command = Command::Tcp(TcpArrival {
                stream,
                first: frame,
                local,
                remote,
            });
            if queue.try_send(command).is_err() {
                metrics.tcp_refused(TcpRefusal::ShardBusy);
            }
        });
    })
    .await;
    Ok(())
}

/// Reads an ICE-TCP connection's first frame: a STUN binding request whose USERNAME
/// starts with one of our ufrags. Returns the frame and the shard the ufrag names.
async fn first_frame(mut stream: TcpStream) -> Result<(TcpStream, Vec<u8>, u64), TcpRefusal> {
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|_| TcpRefusal::NotStun)?;
    let mut frame = vec![0u8; first_frame_len(len)?];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|_| TcpRefusal::NotStun)?;
    let shard = first_frame_shard(&frame)?;
    Ok((stream, frame, shard))
}
