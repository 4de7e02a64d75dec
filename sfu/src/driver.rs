//! A shard thread of the media plane: a current-thread tokio runtime that owns its shard
//! core, its UDP sockets and its timer, so the media path takes no lock. Signaling
//! reaches it through the bounded queues of [`crate::plane`].
//!
//! ICE-TCP (RFC 6544, passive candidates, RFC 4571 framing): one thread accepts on the TCP
//! media port, reads each connection's first frame (a STUN binding request), finds the
//! shard from the ufrag in its USERNAME and hands the connection over (`tcp_accept`,
//! started by the plane with the shards); from then on the connection belongs to that
//! shard like a UDP remote address. Each connection has a bounded send queue: a client
//! that reads too slowly loses packets (counted as `tcp_queue_full`) and never stalls its
//! shard or delays anyone else.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use netio::stream::{Framing, StreamQueue};
use netio::udp::{RecvBuffer, SEND_BATCH, SendBatch, Socket};
use protocol::admin::CallEvent;
use protocol::{Join, LeaveReason, ParticipantId, ServerMessage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use str0m::net::{Protocol, Transmit};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tracing::{debug, error, warn};

use crate::ice_tcp::ice_tcp_codec;
use crate::lifecycle::Lifecycle;
use crate::load::{Figures, Load, Place};
use crate::metrics::{Metrics, TcpRefusal};
use crate::plane::Command;
use crate::queues::{Delivery, Queues};
use crate::tap::Tap;
use crate::tcp_accept::TcpArrival;
use crate::timings::ShardTimings;
use sfu_core::forwarder::DropReason;
use sfu_core::shard::{LocalCandidates, RelayDrop, Shard, ShardConfig, ShardOutput};

/// The wall clock, in milliseconds since the Unix epoch: what call events and the admin
/// API's times are told in.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long the last messages of a participant removed while behind wait for room.
const PARTING: Duration = Duration::from_secs(5);

/// Relays a shard takes from its queue in one turn of its loop.
const RELAY_BATCH: usize = 256;

/// The largest media datagram read (an Ethernet MTU); GRO may coalesce several into one
/// read.
const MEDIA_DATAGRAM: usize = 1500;

/// Bytes waiting to be written per ICE-TCP connection; packets beyond are dropped. About
/// a second of a 2 Mbit/s video stream, so a keyframe fits but a stalled reader costs
/// little memory and media never arrives seconds late.
const TCP_QUEUE_BYTES: usize = 256 * 1024;

/// The kernel send buffer asked for per ICE-TCP connection (it doubles it): small, so that
/// a slow reader fills our queue, where drops are counted and chosen per packet, rather
/// than megabytes of stale media in the kernel.
const TCP_SOCKET_SEND_BUFFER: usize = 128 * 1024;

/// The send side of one ICE-TCP connection: framed packets waiting for its writer.
struct TcpConnection {
    /// The participant whose STUN request opened it.
    owner: ParticipantId,
    /// RFC 4571 frames (length, then packet), at most `TCP_QUEUE_BYTES`.
    queue: Rc<StreamQueue>,
    task: JoinHandle<()>,
}

/// Everything a shard thread owns; shared by its tasks through `Rc<RefCell<..>>` on one
/// thread, never across threads.
struct Driver {
    core: Shard,
    /// The shard's UDP sockets, by port.
    sockets: HashMap<u16, Rc<Socket>>,
    advertise: Vec<IpAddr>,
    /// The advertised addresses datagrams came to: on a host with several, each answer
    /// leaves from the one its peer reached (the sockets are bound to all of them).
    reply_ips: Vec<IpAddr>,
    tcp_port: Option<u16>,
    /// ICE-TCP connections by (our advertised address, theirs).
    tcp: HashMap<(SocketAddr, SocketAddr), TcpConnection>,
    /// Each participant's signaling queue.
    queues: Queues,
    /// Each participant's port, and how many participants each port carries.
    ports_of: HashMap<ParticipantId, u16>,
    /// Each participant's place on the server, given back when it goes.
    places: HashMap<ParticipantId, Place>,
    load: HashMap<u16, usize>,
    /// The deadline the timer task sleeps until.
    deadline: Instant,
    /// UDP datagrams to send, in order, sent [`SEND_BATCH`] at a time with sendmmsg: the
    /// fan-out of one packet to hundreds of viewers costs a few system calls, not one each.
    udp_out: Vec<Transmit>,
    sending: SendBatch,
    /// Test only: records what publishers send (`--tap`).
    tap: Option<Arc<Tap>>,
    /// How long its turns take (each ends with `timings.turn(started)`), its CPU time.
    timings: ShardTimings,
    /// Where call events go, stamped with the wall clock (`MediaConfig::events`).
    events: Option<mpsc::Sender<(u64, CallEvent)>>,
    metrics: Metrics,
}

impl Driver {
    /// The entries of the core's tables and of the driver's own, by table.
    fn entries(&self) -> Vec<(&'static str, usize)> {
        let (queues, behind) = self.queues.len();
        let mut all = self.core.entries().to_vec();
        all.extend([
            ("queues", queues),
            ("behind", behind),
            ("ports", self.ports_of.len()),
            ("port_load", self.load.values().sum()),
            ("tcp", self.tcp.len()),
        ]);
        all
    }

    /// Polls the core until it has nothing more to do now; returns whether the deadline
    /// moved earlier (the timer must wake up).
    fn drain(&mut self) -> bool {
        loop {
            match self.core.poll_output() {
                ShardOutput::Transmit(t) if t.proto != Protocol::Udp => {
                    match self.tcp.get(&(t.source, t.destination)) {
                        Some(c) if c.queue.push(&t.contents) => {}
                        Some(_) => self.core.counters.drop(DropReason::TcpQueueFull),
                        None => self.core.counters.drop(DropReason::TcpClosed),
                    }
                }
                ShardOutput::Transmit(t) => {
                    self.udp_out.push(t);
                    if self.udp_out.len() >= SEND_BATCH {
                        self.flush_udp();
                    }
                }
                ShardOutput::Signal(id, message) => match self.queues.signal(id, message) {
                    Delivery::Queued | Delivery::Unknown => {}
                    Delivery::Dropped => self.core.counters.drop(DropReason::SignalQueueFull),
                    Delivery::FellBehind { dropped } => {
                        // Full of the others' messages: not its fault. It hears of the
                        // room again, whole, once it has room (`resync`).
                        debug!(participant = %id, "signaling queue full; behind until it reads");
                        if dropped {
                            self.core.counters.drop(DropReason::SignalQueueFull);
                        }
                    }
                    Delivery::NotReading => {
                        warn!(participant = %id, "reads none of its own answers; removing");
                        self.core.counters.drop(DropReason::SignalQueueFull);
                        let _ = self.queues.remove(id);
                        self.core.remove(Instant::now(), id, LeaveReason::Error);
                    }
                    Delivery::Closed => self.core.leave(Instant::now(), id),
                },
                ShardOutput::Relay(id, message) => match self.queues.relay(id, message) {
                    Ok(()) => self.core.counters.e2ee_relays += 1,
                    Err(RelayDrop::Gone) => {
                        self.core.counters.drop_relay(RelayDrop::Gone);
                        self.core.leave(Instant::now(), id);
                    }
                    Err(reason) => self.core.counters.drop_relay(reason),
                },
                ShardOutput::Event(event) => {
                    if let Some(events) = &self.events
                        && events.try_send((wall_ms(), event)).is_err()
                    {
                        self.metrics.call_event_dropped();
                    }
                }
                ShardOutput::Tap(record) => {
                    if let Some(tap) = &self.tap {
                        tap.record(&record);
                    }
                }
                ShardOutput::Closed(id) => {
                    if let Some((events, held)) = self.queues.remove(id) {
                        // Removed while behind: its last messages (its `left`) go as its
                        // session makes room, if it does soon.
                        tokio::task::spawn_local(async move {
                            for message in held {
                                let send = events.send(message);
                                if tokio::time::timeout(PARTING, send).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    self.tcp.retain(|_, c| {
                        if c.owner == id {
                            c.task.abort();
                        }
                        c.owner != id
                    });
                    self.places.remove(&id);
                    if let Some(port) = self.ports_of.remove(&id)
                        && let Some(n) = self.load.get_mut(&port)
                    {
                        *n = n.saturating_sub(1);
                    }
                }
                ShardOutput::Timeout(at) => {
                    // Those that fell behind and have room again hear of the room anew.
                    let caught_up = self.queues.caught_up();
                    if !caught_up.is_empty() {
                        let now = Instant::now();
                        for id in caught_up {
                            debug!(participant = %id, "caught up: resync");
                            self.core.resync(now, id);
                        }
                        continue;
                    }
                    // Nothing more to do now: what is queued goes out.
                    self.flush_udp();
                    let earlier = at < self.deadline;
                    self.deadline = at;
                    return earlier;
                }
            }
        }
    }

    /// Sends the queued UDP datagrams: each run from one local address with sendmmsg, in
    /// order.
    fn flush_udp(&mut self) {
        let mut out = std::mem::take(&mut self.udp_out);
        let mut start = 0;
        while start < out.len() {
            let source = out[start].source;
            let len = out[start..]
                .iter()
                .take_while(|t| t.source == source)
                .count();
            // From the address the peer reached us at (str0m's local candidate), when
            // datagrams came to it: an advertised address that is not this host's own
            // (behind 1:1 NAT) is left to the kernel's routes.
            let from = Some(source.ip()).filter(|ip| self.reply_ips.contains(ip));
            self.send_run(source.port(), from, &out[start..start + len]);
            start += len;
        }
        out.clear();
        self.udp_out = out;
    }

    /// Sends datagrams from the socket of `port`. One that the kernel cannot take now (a
    /// full send buffer) is counted and dropped, as a router would; the others still go.
    fn send_run(&mut self, port: u16, from: Option<IpAddr>, run: &[Transmit]) {
        let Some(socket) = self.sockets.get(&port) else {
            warn!("no socket for port {port}");
            return;
        };
        let full = self
            .sending
            .send(socket, from, run, |t| (t.destination, &t.contents[..]));
        for _ in 0..full {
            self.core.counters.drop(DropReason::SendBufferFull);
        }
    }

    fn join(
        &mut self,
        id: ParticipantId,
        join: Join,
        events: mpsc::Sender<ServerMessage>,
        place: Place,
    ) {
        // The least loaded port; ties go to the lowest port.
        let port = self
            .load
            .iter()
            .min_by_key(|(port, n)| (**n, **port))
            .map(|(port, _)| *port);
        let Some(port) = port else {
            return;
        };
        *self.load.entry(port).or_default() += 1;
        self.ports_of.insert(id, port);
        self.places.insert(id, place);
        self.queues.insert(id, events);
        // The core picks those the join's transport and grants call for.
        let at = |port: u16| -> Vec<SocketAddr> {
            self.advertise
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        };
        let candidates = LocalCandidates {
            udp: at(port),
            tcp: self.tcp_port.map(at).unwrap_or_default(),
        };
        self.core.join(Instant::now(), id, join, &candidates);
    }

    /// Takes an ICE-TCP connection whose first frame is `first`, if that frame, a STUN
    /// request, is one of our participants'.
    fn adopt_tcp(
        &mut self,
        me: &Rc<RefCell<Driver>>,
        wake_timer: &Rc<Notify>,
        arrival: TcpArrival,
        metrics: &Metrics,
    ) {
        let TcpArrival {
            stream,
            first,
            local,
            remote,
        } = arrival;
        let local = self.local_addr(Some(local.ip()), local.port());
        self.core
            .handle_datagram(Instant::now(), Protocol::Tcp, local, remote, &first);
        let Some(owner) = self.core.owner_of(Protocol::Tcp, local, remote) else {
            debug!(%remote, "ICE-TCP connection names no participant of ours");
            metrics.tcp_refused(TcpRefusal::Unclaimed);
            return;
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(%remote, "ICE-TCP connection lost in hand-over: {e}");
                self.core.forget_remote(Protocol::Tcp, local, remote);
                return;
            }
        };
        if let Some(old) = self.tcp.remove(&(local, remote)) {
            old.task.abort();
        }
        let queue = Rc::new(StreamQueue::new(TCP_QUEUE_BYTES, Framing::Rfc4571));
        let task = tokio::task::spawn_local(tcp_connection(
            me.clone(),
            wake_timer.clone(),
            stream,
            local,
            remote,
            queue.clone(),
        ));
        debug!(participant = %owner, %remote, "ICE-TCP connection taken");
        self.tcp
            .insert((local, remote), TcpConnection { owner, queue, task });
    }

    /// The local address str0m knows for a datagram that arrived on `port` at `dst_ip`.
    fn local_addr(&self, dst_ip: Option<IpAddr>, port: u16) -> SocketAddr {
        let ip = dst_ip
            .filter(|ip| self.advertise.contains(ip))
            .or_else(|| self.advertise.first().copied())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        SocketAddr::new(ip, port)
    }

    /// [`Driver::local_addr`] for a UDP datagram, noting an advertised address it came to:
    /// answers go back from it ([`Driver::reply_ips`]).
    fn udp_local_addr(&mut self, dst_ip: Option<IpAddr>, port: u16) -> SocketAddr {
        let local = self.local_addr(dst_ip, port);
        if dst_ip == Some(local.ip()) && !self.reply_ips.contains(&local.ip()) {
            debug!(ip = %local.ip(), "media arrives at this address; answers leave from it");
            self.reply_ips.push(local.ip());
        }
        local
    }
}

/// What one shard thread starts with.
pub(crate) struct ShardSetup {
    pub(crate) index: usize,
    pub(crate) config: ShardConfig,
    pub(crate) sockets: Vec<std::net::UdpSocket>,
    pub(crate) advertise: Vec<IpAddr>,
    pub(crate) tcp_port: Option<u16>,
    pub(crate) tap: Option<Arc<Tap>>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) load: Arc<Load>,
    /// The server's name, and where call events go (`MediaConfig`).
    pub(crate) node: String,
    pub(crate) events: Option<mpsc::Sender<(u64, CallEvent)>>,
}

pub(crate) async fn run_shard(
    setup: ShardSetup,
    metrics: Metrics,
    mut commands: mpsc::Receiver<Command>,
    mut relays: mpsc::Receiver<Command>,
    mut departures: mpsc::UnboundedReceiver<ParticipantId>,
) -> anyhow::Result<()> {
    let ShardSetup {
        index,
        config,
        sockets,
        advertise,
        tcp_port,
        tap,
        lifecycle,
        load: server_load,
        node,
        events,
    } = setup;
    let mut by_port = HashMap::new();
    let mut load = HashMap::new();
    for socket in sockets {
        let socket = Socket::from_std(socket)?;
        let port = socket.local_addr().port();
        by_port.insert(port, Rc::new(socket));
        load.insert(port, 0usize);
    }
    let now = Instant::now();
    let driver = Rc::new(RefCell::new(Driver {
        core: Shard::new(config, now, StdRng::from_rng(&mut rand::rng())),
        sockets: by_port.clone(),
        advertise,
        reply_ips: Vec::new(),
        tcp_port,
        tcp: HashMap::new(),
        queues: Queues::default(),
        ports_of: HashMap::new(),
        places: HashMap::new(),
        load,
        deadline: now + Duration::from_secs(1),
        udp_out: Vec::with_capacity(SEND_BATCH),
        sending: SendBatch::new(),
        tap,
        timings: metrics.shard_timings(&index.to_string()),
        events,
        metrics: metrics.clone(),
    }));
    let wake = Rc::new(Notify::new());
    for socket in by_port.into_values() {
        tokio::task::spawn_local(receive(driver.clone(), socket, wake.clone()));
    }
    tokio::task::spawn_local(timer(driver.clone(), wake.clone()));
    tokio::task::spawn_local(flush_metrics(
        driver.clone(),
        metrics.clone(),
        (index, server_load),
        (lifecycle.clone(), wake.clone()),
    ));
    // The wall clock at one instant: the admin API's times are told from it, so that
    // they read the same at every request.
    let clock = (Instant::now(), wall_ms());
    let run = |command: Command| {
        let started = Instant::now();
        let mut d = driver.borrow_mut();
        match command {
            Command::Join {
                id,
                join,
                events,
                at,
                place,
            } => {
                if lifecycle.is_draining() {
                    d.core.refuse_new_rooms();
                }
                d.join(id, join, events, place);
                d.core.count_join_from(id, at);
            }
            Command::Request { id, request } => d.core.request(Instant::now(), id, request),
            Command::Offer { id, read } => d.core.offer(Instant::now(), id, *read),
            Command::Tcp(arrival) => d.adopt_tcp(&driver, &wake, arrival, &metrics),
            Command::Probe(reply) => {
                let _ = reply.send(());
            }
            Command::Rooms(reply) => {
                let _ = reply.send(d.core.room_summaries(clock.0, clock.1, &node));
            }
            Command::Room { room, reply } => {
                let detail = d.core.room_detail(clock.0, clock.1, &node, &room);
                let _ = reply.send(detail);
            }
            Command::Act {
                room,
                action,
                reply,
            } => {
                let _ = reply.send(d.core.act(Instant::now(), &room, action));
            }
            Command::Policy { group, policy } => {
                d.core.apply_policy(Instant::now(), &group, &policy);
            }
        }
        if d.drain() {
            wake.notify_one();
        }
        d.timings.turn(started);
    };
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                run(command);
                // One command a turn: the sockets and the timer run before the next one,
                // so a queue of costly commands (offers of hundreds of m-lines, joins)
                // never holds every room's packets back for all of them.
                tokio::task::yield_now().await;
            }
            Some(command) = relays.recv() => {
                run(command);
                // Relays come many at once (each join greets everyone) and cost little:
                // take those already queued in the same turn, so that a shard busy with
                // media still empties its relay queue as fast as clients fill it.
                for _ in 1..RELAY_BATCH {
                    let Ok(command) = relays.try_recv() else { break };
                    run(command);
                }
                tokio::task::yield_now().await;
            }
            Some(id) = departures.recv() => {
                let started = Instant::now();
                let mut d = driver.borrow_mut();
                d.core.leave(started, id);
                if d.drain() {
                    wake.notify_one();
                }
                d.timings.turn(started);
            }
        }
    }
    Ok(())
}

/// Reads a socket in batches and feeds each datagram to the core.
async fn receive(driver: Rc<RefCell<Driver>>, socket: Rc<Socket>, wake: Rc<Notify>) {
    let port = socket.local_addr().port();
    // Each socket has its own buffer: a shard has a few sockets, not thousands.
    let buffer = RefCell::new(RecvBuffer::new(MEDIA_DATAGRAM * socket.gro_segments()));
    let e = socket
        .receive(&buffer, |reads| {
            let now = Instant::now();
            let mut d = driver.borrow_mut();
            for read in reads {
                let local = d.udp_local_addr(read.destination_ip, port);
                for datagram in read.datagrams() {
                    d.core
                        .handle_datagram(now, Protocol::Udp, local, read.source, datagram);
                }
            }
            if d.drain() {
                wake.notify_one();
            }
            d.timings.turn(now);
        })
        .await;
    error!(port, "socket failed: {e}");
}

/// Runs one ICE-TCP connection a shard took: frames in to the core, its queue out to the
/// socket. Ends, and unmaps the remote address, when either side fails or closes.
async fn tcp_connection(
    driver: Rc<RefCell<Driver>>,
    wake_timer: Rc<Notify>,
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    queue: Rc<StreamQueue>,
) {
    let _ = stream.set_nodelay(true);
    if let Err(e) = netio::tcp::set_send_buffer(&stream, TCP_SOCKET_SEND_BUFFER) {
        debug!(%remote, "ICE-TCP send buffer: {e}");
    }
    let (reader, mut writer) = stream.into_split();
    let read = async {
        let mut frames = FramedRead::new(reader, ice_tcp_codec());
        while let Some(frame) = frames.next().await {
            let Ok(frame) = frame else {
                return;
            };
            let now = Instant::now();
            let mut d = driver.borrow_mut();
            d.core
                .handle_datagram(now, Protocol::Tcp, local, remote, &frame);
            if d.drain() {
                wake_timer.notify_one();
            }
            d.timings.turn(now);
        }
    };
    let write = queue.write_to(&mut writer);
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    debug!(%remote, "ICE-TCP connection closed");
    let mut d = driver.borrow_mut();
    d.tcp.remove(&(local, remote));
    d.core.forget_remote(Protocol::Tcp, local, remote);
}

/// Most deadlines served in one wakeup of the timer before it yields to the sockets.
const IMMEDIATE_TIMEOUTS: usize = 64;

/// Wakes the core at its deadline.
async fn timer(driver: Rc<RefCell<Driver>>, wake: Rc<Notify>) {
    loop {
        let deadline = driver.borrow().deadline;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                let started = Instant::now();
                let mut d = driver.borrow_mut();
                // A pacer asks for its next packet a microsecond later; the timer wheel
                // would round that up to a millisecond, so serve what is already due here.
                for _ in 0..IMMEDIATE_TIMEOUTS {
                    d.core.handle_timeout(Instant::now());
                    d.drain();
                    if d.deadline > Instant::now() {
                        break;
                    }
                }
                d.timings.turn(started);
            }
            _ = wake.notified() => {}
        }
    }
}

/// Moves the core's counters into Prometheus once a second, and shuts the core down
/// once the lifecycle says so (then every second, for joins that were under way).
async fn flush_metrics(
    driver: Rc<RefCell<Driver>>,
    metrics: Metrics,
    (index, load): (usize, Arc<Load>),
    (lifecycle, wake): (Arc<Lifecycle>, Rc<Notify>),
) {
    let shard = index.to_string();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let second = now.duration_since(last).as_secs_f64().max(1e-3);
        last = now;
        let mut d = driver.borrow_mut();
        if lifecycle.is_shut_down() && d.core.sizes().1 > 0 {
            d.core.shut_down(Instant::now());
            if d.drain() {
                wake.notify_one();
            }
        }
        let counters = std::mem::take(&mut d.core.counters);
        let sizes = d.core.sizes();
        metrics.flush(&shard, &counters, sizes);
        metrics.tcp_connections(&shard, d.tcp.len());
        metrics.segmented(d.sending.take_segmented());
        metrics.entries(&shard, &d.entries());
        let busy = d.timings.flush();
        load.publish(
            index,
            Figures {
                tracks: sizes.2,
                egress_pps: ((counters.tx_packets + counters.tcp_tx_packets) as f64 / second)
                    as u64,
                busy: busy.as_secs_f64() / second,
            },
        );
    }
}
