//! A simulated client's link to the media server: its own UDP socket, or an ICE-TCP
//! connection (an RFC 6544 active candidate, RFC 4571 framing) that it may read slowly;
//! and the loss its downlink simulates, counted, so that a run can tell the losses it
//! made itself from those the server made.

use std::net::SocketAddr;

use anyhow::Context;
use str0m::Candidate;
use str0m::net::{Protocol, TcpType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

/// Receive buffer asked for per client UDP socket: a browser's are larger than the
/// default 208 KiB, and losses at the generator's own sockets would be charged to the
/// server.
const SOCKET_BUFFER: usize = 1024 * 1024;
/// The address of an active TCP candidate: it never receives a connection, so its port
/// is the discard port, as browsers write it (RFC 6544).
const TCP_CANDIDATE: &str = "127.0.0.1:9";
/// Frames read off the TCP connection and not yet taken by the client.
const TCP_INBOX: usize = 64;

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Transport {
    /// Its own UDP socket on loopback.
    #[default]
    Udp,
    /// ICE-TCP to the server's passive candidate, read at most this fast (bytes/s) when
    /// set: a reader slower than what it is sent.
    Tcp { read_bytes_per_s: Option<u64> },
}

/// The link a client asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkConfig {
    pub transport: Transport,
    /// The share (0 to 1) of the datagrams coming to it that a UDP link drops, as a
    /// lossy network would. TCP links lose nothing.
    pub downlink_loss: f64,
}

/// An open link.
pub struct Link {
    inner: Inner,
    local: SocketAddr,
    loss: f64,
    buf: Vec<u8>,
    /// Datagrams its downlink dropped on purpose.
    pub dropped: u64,
}

enum Inner {
    Udp(UdpSocket),
    Tcp {
        /// Frames to send, and where: the connection opens at the first one.
        out: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
        inbox: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        task: JoinHandle<()>,
    },
}

impl Link {
    pub async fn open(config: LinkConfig) -> anyhow::Result<Link> {
        let (inner, local) = match config.transport {
            Transport::Udp => {
                let socket = UdpSocket::bind("127.0.0.1:0").await?;
                let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER);
                let local = socket.local_addr()?;
                (Inner::Udp(socket), local)
            }
            Transport::Tcp { read_bytes_per_s } => {
                let (out, to_send) = mpsc::unbounded_channel();
                let (received, inbox) = mpsc::channel(TCP_INBOX);
                let task = tokio::spawn(tcp_connection(to_send, received, read_bytes_per_s));
                let local = TCP_CANDIDATE.parse().expect("a socket address");
                (Inner::Tcp { out, inbox, task }, local)
            }
        };
        Ok(Link {
            inner,
            local,
            loss: config.downlink_loss.clamp(0.0, 1.0),
            buf: vec![0; 2000],
            dropped: 0,
        })
    }

    /// The local candidate str0m offers for it.
    pub fn candidate(&self) -> anyhow::Result<Candidate> {
        Ok(match self.inner {
            Inner::Udp(_) => Candidate::host(self.local, "udp")?,
            Inner::Tcp { .. } => Candidate::builder()
                .tcp()
                .host(self.local)
                .tcptype(TcpType::Active)
                .build()?,
        })
    }

    pub fn protocol(&self) -> Protocol {
        match self.inner {
            Inner::Udp(_) => Protocol::Udp,
            Inner::Tcp { .. } => Protocol::Tcp,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Sends what str0m transmits; a full socket buffer drops it, as a browser's does.
    pub fn send(&mut self, destination: SocketAddr, contents: &[u8]) {
        match &self.inner {
            Inner::Udp(socket) => {
                let _ = socket.try_send_to(contents, destination);
            }
            Inner::Tcp { out, .. } => {
                let _ = out.send((destination, contents.to_vec()));
            }
        }
    }

    /// The next datagram (or TCP frame) that its downlink lets through, and where it came
    /// from. Cancel safe.
    pub async fn recv(&mut self) -> anyhow::Result<(SocketAddr, &[u8])> {
        loop {
            let (from, n) = match &mut self.inner {
                Inner::Udp(socket) => {
                    let (n, from) = socket.recv_from(&mut self.buf).await?;
                    if self.loss > 0.0 && rand::random::<f64>() < self.loss {
                        self.dropped += 1;
                        continue;
                    }
                    (from, n)
                }
                Inner::Tcp { inbox, .. } => {
                    let (from, frame) = inbox.recv().await.context("ICE-TCP connection closed")?;
                    self.buf.clear();
                    self.buf.extend_from_slice(&frame);
                    (from, frame.len())
                }
            };
            return Ok((from, &self.buf[..n]));
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Inner::Tcp { task, .. } = &self.inner {
            task.abort();
        }
    }
}

/// Opens the connection to where the first frame goes, then writes every frame with its
/// RFC 4571 length, and reads the other way, at most `read_bytes_per_s` when set.
async fn tcp_connection(
    mut to_send: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    received: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    read_bytes_per_s: Option<u64>,
) {
    let Some((server, first)) = to_send.recv().await else {
        return;
    };
    let Ok(stream) = TcpStream::connect(server).await else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let reading = async move {
        let started = Instant::now();
        let mut read: u64 = 0;
        loop {
            let Ok(len) = reader.read_u16().await else {
                return;
            };
            let mut frame = vec![0; usize::from(len)];
            if reader.read_exact(&mut frame).await.is_err() {
                return;
            }
            read += 2 + u64::from(len);
            if let Some(rate) = read_bytes_per_s.filter(|r| *r > 0) {
                // As slow as the rate: the kernel's buffers fill, then the server's queue.
                let due = started + Duration::from_secs_f64(read as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
            if received.send((server, frame)).await.is_err() {
                return;
            }
        }
    };
    let writing = async move {
        let mut next = Some((server, first));
        while let Some((to, frame)) = next {
            if let (true, Ok(len)) = (to == server, u16::try_from(frame.len())) {
                let mut framed = Vec::with_capacity(2 + frame.len());
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&frame);
                if writer.write_all(&framed).await.is_err() {
                    return;
                }
            }
            next = to_send.recv().await;
        }
    };
    // Either direction ending ends the connection.
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
}
