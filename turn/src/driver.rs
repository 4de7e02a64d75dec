//! The tokio driver of the TURN core: one thread with a current-thread runtime owns the
//! core, the client listeners (UDP and TCP) and the relay sockets, so nothing is locked.
//!
//! Stream clients (TCP) are framed here (RFC 8656 §12.5) and get a bounded send queue: a
//! client that does not read loses packets, counted, instead of growing memory or stalling
//! the relay for everyone else.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use quinn_udp::{RecvMeta, UdpSocketState};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, rustls};
use tracing::{debug, info, warn};

use crate::server::{Action, Client, Config, Counters, Server, Transport};

/// Socket buffers asked for (the kernel caps them at net.core.rmem_max / wmem_max): the
/// default 208 KiB overflows, and drops, under bursts of tens of thousands of packets/s.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Asks for large send and receive buffers; a smaller grant is logged, not fatal.
fn enlarge_buffers(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    if let Err(e) = s
        .set_recv_buffer_size(SOCKET_BUFFER)
        .and_then(|()| s.set_send_buffer_size(SOCKET_BUFFER))
    {
        warn!("cannot enlarge UDP socket buffers: {e}");
    }
}

/// Largest UDP datagram read.
const DATAGRAM: usize = 65_536;

/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Packets queued for one stream client before more are dropped.
const STREAM_QUEUE: usize = 512;

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

/// A TLS listener and its server configuration.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub config: Arc<rustls::ServerConfig>,
}

/// A TLS server configuration from a PEM certificate chain and a PEM private key.
pub fn tls_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(&format!("certificate {}", cert.display()), &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("certificate {}", cert.display()), &e))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(&format!("private key {}", key.display()), &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate and key", &e))?;
    Ok(Arc::new(config))
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
        let u = std::net::UdpSocket::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("TURN UDP {addr}: {e}")))?;
        u.set_nonblocking(true)?;
        enlarge_buffers(&u);
        let t = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("TURN TCP {addr}: {e}")))?;
        t.set_nonblocking(true)?;
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
            let s = std::net::UdpSocket::bind(bind)
                .map_err(|e| io::Error::new(e.kind(), format!("TURN relay {bind}: {e}")))?;
            s.set_nonblocking(true)?;
            enlarge_buffers(&s);
            relays.push((SocketAddr::new(*ip, port), s));
        }
    }
    let tls = match &listeners.tls {
        Some(t) => {
            let l = std::net::TcpListener::bind(t.listen)
                .map_err(|e| io::Error::new(e.kind(), format!("TURN TLS {}: {e}", t.listen)))?;
            l.set_nonblocking(true)?;
            Some((l, TlsAcceptor::from(t.config.clone())))
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
    std::thread::Builder::new()
        .name("turn".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!("TURN runtime: {e}");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            if let Err(e) = local.block_on(&runtime, run(config, udp, tcp, tls, relays, h)) {
                warn!("TURN stopped: {e}");
            }
        })?;
    Ok(handle)
}

/// Everything the relay thread owns.
struct Relay {
    core: Server,
    /// Client-facing UDP sockets by local address.
    udp: HashMap<SocketAddr, Rc<UdpSocket>>,
    /// Relay sockets by relayed address.
    relays: HashMap<SocketAddr, Rc<UdpSocket>>,
    /// Stream clients' send queues.
    streams: HashMap<Client, mpsc::Sender<Vec<u8>>>,
    out: Vec<u8>,
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
                        let socket = self.udp.get(&to.local);
                        if let Some(Err(e)) = socket.map(|s| s.try_send_to(data, to.remote)) {
                            debug!("reply to {}: {e}", to.remote);
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        let queue = self.streams.get(&to);
                        if queue.is_some_and(|q| q.try_send(data.to_vec()).is_err()) {
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
    tls: Option<(std::net::TcpListener, TlsAcceptor)>,
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
    }));
    let batch = Batch::new();
    for socket in udp {
        let local = socket.local_addr()?;
        let state = UdpSocketState::new((&socket).into())?;
        let socket = Rc::new(UdpSocket::from_std(socket)?);
        relay.borrow_mut().udp.insert(local, socket.clone());
        let task = client_datagrams(relay.clone(), socket, state, batch.clone(), local);
        tokio::task::spawn_local(task);
    }
    for (addr, socket) in relays {
        let state = UdpSocketState::new((&socket).into())?;
        let socket = Rc::new(UdpSocket::from_std(socket)?);
        relay.borrow_mut().relays.insert(addr, socket.clone());
        let task = peer_datagrams(relay.clone(), socket, state, batch.clone(), addr);
        tokio::task::spawn_local(task);
    }
    for listener in tcp {
        let listener = TcpListener::from_std(listener)?;
        tokio::task::spawn_local(accept(relay.clone(), listener, None));
    }
    if let Some((listener, acceptor)) = tls {
        let listener = TcpListener::from_std(listener)?;
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

/// Datagrams read per receive call (recvmmsg, through quinn-udp).
const RECV_BATCH: usize = 32;

/// The receive buffer of the relay thread, shared by all its socket tasks: they run one at
/// a time on this thread and hold it only between two awaits, so one buffer serves every
/// socket (a relay port range may have thousands).
struct Batch {
    buf: Vec<u8>,
    meta: Vec<RecvMeta>,
}

impl Batch {
    fn new() -> Rc<RefCell<Batch>> {
        Rc::new(RefCell::new(Batch {
            buf: vec![0; RECV_BATCH * DATAGRAM],
            meta: vec![RecvMeta::default(); RECV_BATCH],
        }))
    }
}

/// Reads a UDP socket in batches until it fails, handing each datagram (GRO-coalesced
/// ones split apart) and its source to `each`.
async fn receive(
    socket: Rc<UdpSocket>,
    state: UdpSocketState,
    batch: Rc<RefCell<Batch>>,
    name: SocketAddr,
    mut each: impl FnMut(SocketAddr, &[u8]),
) {
    loop {
        if let Err(e) = socket.readable().await {
            warn!("TURN socket {name}: {e}");
            return;
        }
        loop {
            let mut b = batch.borrow_mut();
            let Batch { buf, meta } = &mut *b;
            let mut slices: Vec<IoSliceMut<'_>> =
                buf.chunks_mut(DATAGRAM).map(IoSliceMut::new).collect();
            let result = socket.try_io(Interest::READABLE, || {
                state.recv((&*socket).into(), &mut slices, meta)
            });
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here (a peer's port closed): not the socket's end.
                    debug!("TURN socket {name}: {e}");
                    continue;
                }
            };
            for (m, slice) in meta.iter().zip(slices.iter()).take(n) {
                for datagram in slice[..m.len].chunks(m.stride.max(1)) {
                    each(m.addr, datagram);
                }
            }
        }
    }
}

/// Messages from clients over one UDP listener.
async fn client_datagrams(
    relay: Rc<RefCell<Relay>>,
    socket: Rc<UdpSocket>,
    state: UdpSocketState,
    batch: Rc<RefCell<Batch>>,
    local: SocketAddr,
) {
    receive(socket, state, batch, local, |remote, data| {
        let client = Client {
            transport: Transport::Udp,
            remote,
            local,
        };
        let mut r = relay.borrow_mut();
        let r = &mut *r;
        let action = r
            .core
            .handle_client(Instant::now(), client, data, &mut r.out);
        r.act(action, data);
    })
    .await;
}

/// Datagrams from peers on one relay socket.
async fn peer_datagrams(
    relay: Rc<RefCell<Relay>>,
    socket: Rc<UdpSocket>,
    state: UdpSocketState,
    batch: Rc<RefCell<Batch>>,
    addr: SocketAddr,
) {
    receive(socket, state, batch, addr, |peer, data| {
        let mut r = relay.borrow_mut();
        let r = &mut *r;
        let action = r
            .core
            .handle_peer(Instant::now(), addr, peer, data, &mut r.out);
        r.act(action, data);
    })
    .await;
}

/// Accepts stream clients, over TLS when there is an acceptor.
async fn accept(relay: Rc<RefCell<Relay>>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("TURN accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
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
    }
}

/// One stream client: frames its messages in, writes its queue out.
async fn stream_client<S>(relay: Rc<RefCell<Relay>>, stream: S, client: Client)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    relay.borrow_mut().streams.insert(client, tx);
    let write = async move {
        while let Some(data) = rx.recv().await {
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
    };
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

/// What the start of a stream buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A whole message of this many bytes (ChannelData with its padding).
    Complete(usize),
    Incomplete,
    /// Neither STUN nor ChannelData: the stream cannot be resynchronized.
    Garbage,
}

fn frame_len(buf: &[u8]) -> Frame {
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
