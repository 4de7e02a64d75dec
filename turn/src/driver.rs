//! The tokio driver of the TURN core: one thread with a current-thread runtime owns the
//! core, the client listeners (UDP and TCP) and the relay sockets, so nothing is locked.
//!
//! Stream clients (TCP) are framed here (RFC 8656 §12.5) and get a bounded send queue: a
//! client that does not read loses packets, counted, instead of growing memory or stalling
//! the relay for everyone else.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use netio::stream::{Framing, StreamQueue};
use netio::tls::Certificate;
use netio::udp::{RecvBuffer, SendBatch, Socket};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::server::{Action, Client, Config, Counters, Server, Transport};

/// Largest UDP datagram read.
const DATAGRAM: usize = 65_536;

/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes queued for one stream client before more packets are dropped: about 512 media
/// packets of 1,280 bytes.
const STREAM_QUEUE_BYTES: usize = 512 * 1280;

/// How the relay is reached and where it relays from.
#[derive(Debug)]
pub struct Listeners {
    /// Addresses clients reach over UDP and TCP (each gets both).
    pub listen: Vec<SocketAddr>,
    /// The IP relay sockets bind to. When unspecified, IPv4 relays bind 0.0.0.0 (the relay IP
    /// may be a NAT's public one) and IPv6 relays bind their own IP (binding `[::]` would be
    /// dual-stack on Linux and clash with the IPv4 sockets; IPv6 rarely sits behind NAT).
    pub relay_bind: IpAddr,
    /// The IPs put in XOR-RELAYED-ADDRESS (what peers reach); one of each family at most
    /// is useful: clients choose the family with REQUESTED-ADDRESS-FAMILY.
    pub relay_ips: Vec<IpAddr>,
    /// Relay ports: one socket each, shared by many allocations.
    pub relay_ports: RangeInclusive<u16>,
    /// TURN over TLS (port 443 in deployments where only TLS gets through).
    pub tls: Option<TlsListener>,
}

/// A TLS listener and its certificate (reloaded on SIGHUP and when its files change).
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub certificate: Arc<Certificate>,
}

/// A running relay: its counters, for metrics.
#[derive(Debug, Clone)]
pub struct Handle {
    counters: std::sync::Arc<parking_lot::Mutex<Counters>>,
    /// Allocations alive at the last metrics tick.
    allocations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Handle {
    /// Takes the counters accumulated since the last call.
    pub fn take_counters(&self) -> Counters {
        std::mem::take(&mut *self.counters.lock())
    }

    /// Allocations alive, as of the last second.
    pub fn allocations(&self) -> usize {
        self.allocations.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Binds every socket (failing fast), then runs the relay on a thread of its own.
pub fn start(listeners: Listeners, mut config: Config) -> io::Result<Handle> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for addr in &listeners.listen {
        let u = netio::udp::bind(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("TURN UDP {addr}: {e}")))?;
        let t = netio::tcp::bind(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("TURN TCP {addr}: {e}")))?;
        udp.push(u);
        tcp.push(t);
    }
    let mut relays = Vec::new();
    for ip in &listeners.relay_ips {
        let bind_ip = match (listeners.relay_bind.is_unspecified(), ip) {
            (true, IpAddr::V4(_)) => IpAddr::from([0u8; 4]),
            (true, IpAddr::V6(_)) => *ip,
            (false, _) => listeners.relay_bind,
        };
        for port in listeners.relay_ports.clone() {
            let bind = SocketAddr::new(bind_ip, port);
            let s = netio::udp::bind(bind)
                .map_err(|e| io::Error::new(e.kind(), format!("TURN relay {bind}: {e}")))?;
            relays.push((SocketAddr::new(*ip, port), s));
        }
    }
    let tls = match &listeners.tls {
        Some(t) => {
            let l = netio::tcp::bind(t.listen)
                .map_err(|e| io::Error::new(e.kind(), format!("TURN TLS {}: {e}", t.listen)))?;
            let config = t.certificate.server_config(&[])?;
            Some((
                l,
                t.certificate.clone(),
                TlsAcceptor::from(Arc::new(config)),
            ))
        }
        None => None,
    };
    config.relays = relays.iter().map(|(a, _)| *a).collect();
    info!(
        "TURN on {:?} (UDP+TCP), relaying from {:?} ports {}..={}",
        listeners.listen,
        listeners.relay_ips,
        listeners.relay_ports.start(),
        listeners.relay_ports.end()
    );
    let handle = Handle {
        counters: Default::default(),
        allocations: Default::default(),
    };
    let h = handle.clone();
    netio::runtime::spawn_thread("turn".into(), move || run(config, udp, tcp, tls, relays, h))?;
    Ok(handle)
}

/// Everything the relay thread owns.
struct Relay {
    core: Server,
    /// Client-facing UDP sockets by local address.
    udp: HashMap<SocketAddr, Rc<Socket>>,
    /// Relay sockets by relayed address.
    relays: HashMap<SocketAddr, Rc<Socket>>,
    /// Stream clients' send queues.
    streams: HashMap<Client, Rc<StreamQueue>>,
    out: Vec<u8>,
    sending: SendBatch,
}

impl Relay {
    /// Carries out an action; `input` is the buffer a `Relay` range points into.
    fn act(&mut self, action: Action, input: &[u8]) {
        match action {
            Action::Nothing => {}
            Action::Relay { relay, peer, range } => {
                let Some(socket) = self.relays.get(&relay) else {
                    return;
                };
                if let Err(e) = socket.try_send_to(&input[range], peer) {
                    debug!("relay to {peer}: {e}");
                }
            }
            Action::Reply { to, len } => {
                let data = &self.out[..len];
                match to.transport {
                    Transport::Udp => {
                        // The listener of `to.local`: bound to it, or to every address
                        // (of either family: a dual-stack one takes IPv4 too).
                        let any = |ip: IpAddr| SocketAddr::new(ip, to.local.port());
                        let socket = self
                            .udp
                            .get(&to.local)
                            .or_else(|| self.udp.get(&any(IpAddr::from([0u8; 4]))))
                            .or_else(|| self.udp.get(&any(IpAddr::from([0u16; 8]))));
                        if let Some(socket) = socket {
                            // From the address the client sent to: a listener bound to
                            // every address of a host with several would otherwise
                            // answer from the one its routes pick.
                            let from = Some(to.local.ip());
                            if self.sending.send_one(socket, from, to.remote, data) {
                                debug!("reply to {}: send buffer full", to.remote);
                            }
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        let queue = self.streams.get(&to);
                        if queue.is_some_and(|q| !q.push(data)) {
                            debug!("stream client {} is not reading; dropped", to.remote);
                        }
                    }
                }
            }
        }
    }
}

async fn run(
    config: Config,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    tls: Option<(std::net::TcpListener, Arc<Certificate>, TlsAcceptor)>,
    relays: Vec<(SocketAddr, std::net::UdpSocket)>,
    handle: Handle,
) -> io::Result<()> {
    let now = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let relay = Rc::new(RefCell::new(Relay {
        core: Server::new(config, now, unix),
        udp: HashMap::new(),
        relays: HashMap::new(),
        streams: HashMap::new(),
        out: vec![0; DATAGRAM + 64],
        sending: SendBatch::new(),
    }));
    // One receive buffer for every socket of this thread (a relay port range may have
    // thousands): their tasks run one at a time and hold it only between two awaits.
    let batch = Rc::new(RefCell::new(RecvBuffer::new(DATAGRAM)));
    for socket in udp {
        let socket = Rc::new(Socket::from_std(socket)?);
        let local = socket.local_addr();
        relay.borrow_mut().udp.insert(local, socket.clone());
        let task = client_datagrams(relay.clone(), socket, batch.clone(), local);
        tokio::task::spawn_local(task);
    }
    for (addr, socket) in relays {
        let socket = Rc::new(Socket::from_std(socket)?);
        relay.borrow_mut().relays.insert(addr, socket.clone());
        let task = peer_datagrams(relay.clone(), socket, batch.clone(), addr);
        tokio::task::spawn_local(task);
    }
    for listener in tcp {
        let listener = TcpListener::from_std(listener)?;
        tokio::task::spawn_local(accept(relay.clone(), listener, None));
    }
    if let Some((listener, certificate, acceptor)) = tls {
        let listener = TcpListener::from_std(listener)?;
        tokio::task::spawn_local(certificate.watch("TURN over TLS"));
        tokio::task::spawn_local(accept(relay.clone(), listener, Some(acceptor)));
    }
    loop {
        let deadline = relay.borrow().core.poll_timeout();
        tokio::time::sleep_until(deadline.into()).await;
        let mut r = relay.borrow_mut();
        r.core.handle_timeout(Instant::now());
        let counters = std::mem::take(&mut r.core.counters);
        merge(&mut handle.counters.lock(), counters);
        handle
            .allocations
            .store(r.core.allocations(), std::sync::atomic::Ordering::Relaxed);
    }
}

fn merge(into: &mut Counters, from: Counters) {
    into.allocations_total += from.allocations_total;
    into.relayed_packets += from.relayed_packets;
    into.relayed_bytes += from.relayed_bytes;
    for (r, n) in from.refusals {
        *into.refusals.entry(r).or_default() += n;
    }
}

/// Messages from clients over one UDP listener.
async fn client_datagrams(
    relay: Rc<RefCell<Relay>>,
    socket: Rc<Socket>,
    batch: Rc<RefCell<RecvBuffer>>,
    local: SocketAddr,
) {
    let e = socket
        .receive(&batch, |reads| {
            for read in reads {
                // A listener bound to every address: the client's 5-tuple has the one it
                // sent to, which answers leave from.
                let local = match read.destination_ip {
                    Some(ip) if local.ip().is_unspecified() => SocketAddr::new(ip, local.port()),
                    _ => local,
                };
                let client = Client {
                    transport: Transport::Udp,
                    remote: read.source,
                    local,
                };
                for data in read.datagrams() {
                    let mut r = relay.borrow_mut();
                    let r = &mut *r;
                    let action = r
                        .core
                        .handle_client(Instant::now(), client, data, &mut r.out);
                    r.act(action, data);
                }
            }
        })
        .await;
    warn!("TURN socket {local}: {e}");
}

/// Datagrams from peers on one relay socket.
async fn peer_datagrams(
    relay: Rc<RefCell<Relay>>,
    socket: Rc<Socket>,
    batch: Rc<RefCell<RecvBuffer>>,
    addr: SocketAddr,
) {
    let e = socket
        .receive(&batch, |reads| {
            for read in reads {
                for data in read.datagrams() {
                    let mut r = relay.borrow_mut();
                    let r = &mut *r;
                    let action =
                        r.core
                            .handle_peer(Instant::now(), addr, read.source, data, &mut r.out);
                    r.act(action, data);
                }
            }
        })
        .await;
    warn!("TURN socket {addr}: {e}");
}

/// Accepts stream clients, over TLS when there is an acceptor.
async fn accept(relay: Rc<RefCell<Relay>>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    netio::tcp::accept_each(&listener, "TURN", |stream, remote| {
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let relay = relay.clone();
        match &tls {
            None => {
                let client = Client {
                    transport: Transport::Tcp,
                    remote,
                    local,
                };
                tokio::task::spawn_local(stream_client(relay, stream, client));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::task::spawn_local(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let client = Client {
                                transport: Transport::Tls,
                                remote,
                                local,
                            };
                            stream_client(relay, stream, client).await;
                        }
                        Ok(Err(e)) => debug!("TURN TLS handshake with {remote}: {e}"),
                        Err(_) => debug!("TURN TLS handshake with {remote} timed out"),
                    }
                });
            }
        }
    })
    .await;
}

/// One stream client: frames its messages in, writes its queue out.
async fn stream_client<S>(relay: Rc<RefCell<Relay>>, stream: S, client: Client)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let queue = Rc::new(StreamQueue::new(
        STREAM_QUEUE_BYTES,
        Framing::SelfDelimiting,
    ));
    relay.borrow_mut().streams.insert(client, queue.clone());
    let write = queue.write_to(&mut writer);
    let read = async {
        let mut buf = vec![0u8; 2 * DATAGRAM];
        let mut filled = 0;
        loop {
            match reader.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
            let mut start = 0;
            loop {
                match frame_len(&buf[start..filled]) {
                    Frame::Incomplete => break,
                    Frame::Garbage => return,
                    Frame::Complete(len) => {
                        let frame = &buf[start..start + len];
                        let mut r = relay.borrow_mut();
                        let r = &mut *r;
                        let action =
                            r.core
                                .handle_client(Instant::now(), client, frame, &mut r.out);
                        r.act(action, frame);
                        start += len;
                    }
                }
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let mut r = relay.borrow_mut();
    r.streams.remove(&client);
    r.core.client_closed(client);
    debug!("TURN stream client {} closed", client.remote);
}

/// What the start of a stream buffer holds (public for the fuzz targets in `fuzz/`).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes (ChannelData with its padding).
    Complete(usize),
    Incomplete,
    /// Neither STUN nor ChannelData: the stream cannot be resynchronized.
    Garbage,
}

/// Where the first message of a stream client's buffer ends (RFC 8656 §12.5): a STUN
/// message after its header's length, ChannelData after its length padded to four bytes.
pub fn frame_len(buf: &[u8]) -> Frame {
    if buf.len() < 4 {
        return Frame::Incomplete;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let total = match buf[0] >> 6 {
        0 => 20 + len,
        1 => (4 + len).next_multiple_of(4),
        _ => return Frame::Garbage,
    };
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Complete(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stun_and_padded_channel_data() {
        let stun = [0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
        assert_eq!(frame_len(&stun), Frame::Incomplete);
        let mut whole = stun.to_vec();
        whole.resize(24, 0);
        assert_eq!(frame_len(&whole), Frame::Complete(24));
        assert_eq!(
            frame_len(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0]),
            Frame::Incomplete
        );
        assert_eq!(
            frame_len(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 9]),
            Frame::Complete(12)
        );
        assert_eq!(frame_len(&[0xc0, 0, 0, 0]), Frame::Garbage);
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Frame::Garbage);
    }
}
