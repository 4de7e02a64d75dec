//! UDP sockets with large kernel buffers, read in batches (recvmmsg with GRO, through
//! quinn-udp) and written in batches (sendmmsg, with GSO for runs to one destination).
//!
//! A driver thread binds its sockets with [`bind`] (where it can fail fast), turns each
//! into a [`Socket`] on its runtime, and runs [`Socket::receive`] in a task per socket
//! with a closure that hands each batch of reads to its core. [`SendBatch`] sends the
//! datagrams a core queued, a run per socket.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::iter::Zip;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::slice::Chunks;

use nix::cmsg_space;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tracing::{debug, warn};

use crate::gso;

/// Socket buffers asked for, per socket. The default 208 KiB overflows, and drops, under
/// bursts (a keyframe to hundreds of viewers, tens of thousands of relayed packets/s); the
/// kernel caps what it grants at net.core.{r,w}mem_max.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Datagrams (or GRO-coalesced runs of datagrams) read per receive call.
pub const RECV_BATCH: usize = 32;

/// Most datagrams sent with one sendmmsg.
pub const SEND_BATCH: usize = 64;

/// Binds a non-blocking UDP socket and asks for [`SOCKET_BUFFER`]-sized buffers; a
/// smaller grant is logged, not fatal. Needs no runtime: call it where a bind failure
/// should stop the start.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    let s = socket2::SockRef::from(&socket);
    for result in [
        s.set_recv_buffer_size(SOCKET_BUFFER),
        s.set_send_buffer_size(SOCKET_BUFFER),
    ] {
        if let Err(e) = result {
            warn!(local = %addr, "cannot enlarge UDP socket buffers: {e}");
        }
    }
    Ok(socket)
}

/// A bound UDP socket on a tokio runtime, with the state quinn-udp keeps for it (GRO and
/// the destination address of each datagram).
#[derive(Debug)]
pub struct Socket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// The address it is bound to, for logs and for callers that key sockets by it.
    local: SocketAddr,
}

impl Socket {
    /// Takes a socket from [`bind`]; must run inside the tokio runtime that will drive it.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Socket> {
        let local = socket.local_addr()?;
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Socket { io, state, local })
    }

    /// Reads the socket in batches of up to [`RECV_BATCH`] reads until it fails, handing
    /// each batch to `each`. Returns the error that ended it; a failed receive (an ICMP
    /// error from a peer whose port closed, mostly) is logged and is not the socket's end.
    ///
    /// `buffer` is borrowed only between two awaits, so the sockets of one thread may
    /// share one.
    pub async fn receive(
        &self,
        buffer: &RefCell<RecvBuffer>,
        mut each: impl FnMut(Reads<'_>),
    ) -> io::Error {
        loop {
            if let Err(e) = self.io.readable().await {
                return e;
            }
            loop {
                let mut b = buffer.borrow_mut();
                let RecvBuffer { bytes, meta, slot } = &mut *b;
                // On the stack, per call: no allocation, and no borrow of a shared buffer
                // held across an await.
                let mut chunks = bytes.chunks_mut(*slot);
                let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                let result = self.io.try_io(Interest::READABLE, || {
                    self.state.recv((&self.io).into(), &mut slices, meta)
                });
                let n = match result {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // Back through `readable`, which yields to other tasks now and
                        // then, so an error that repeats cannot starve them.
                        debug!(local = %self.local, "receive failed: {e}");
                        break;
                    }
                };
                each(Reads {
                    received: meta[..n].iter().zip(slices[..n].iter()),
                });
            }
        }
    }

    /// Sends one datagram now, or fails (`WouldBlock` when the send buffer is full).
    pub fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.io.try_send_to(datagram, to)
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many datagrams the kernel may coalesce into one read (GRO); 1 without GRO.
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments().max(1)
    }
}

/// Where [`Socket::receive`] reads to: [`RECV_BATCH`] slots of `slot` bytes each.
#[derive(Debug)]
pub struct RecvBuffer {
    bytes: Vec<u8>,
    meta: Vec<RecvMeta>,
    /// Bytes per read: one datagram, or as many as GRO coalesces.
    slot: usize,
}

impl RecvBuffer {
    /// Room for [`RECV_BATCH`] reads of up to `slot` bytes each.
    pub fn new(slot: usize) -> RecvBuffer {
        let slot = slot.max(1);
        RecvBuffer {
            bytes: vec![0; RECV_BATCH * slot],
            meta: vec![RecvMeta::default(); RECV_BATCH],
            slot,
        }
    }
}

/// The reads of one receive call, in order.
#[derive(Debug)]
pub struct Reads<'a> {
    received: Zip<std::slice::Iter<'a, RecvMeta>, std::slice::Iter<'a, IoSliceMut<'a>>>,
}

impl<'a> Iterator for Reads<'a> {
    type Item = Read<'a>;

    fn next(&mut self) -> Option<Read<'a>> {
        let (meta, slice) = self.received.next()?;
        let bytes: &'a [u8] = slice;
        Some(Read {
            source: meta.addr,
            destination_ip: meta.dst_ip,
            bytes: &bytes[..meta.len],
            stride: meta.stride.max(1),
        })
    }
}

/// One read: a datagram, or several that GRO coalesced (same source, same destination).
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// Who sent it.
    pub source: SocketAddr,
    /// The IP it was sent to, when the kernel says (a socket bound to 0.0.0.0 serves
    /// every address of the machine).
    pub destination_ip: Option<IpAddr>,
    bytes: &'a [u8],
    /// The size of each datagram but the last.
    stride: usize,
}

impl<'a> Read<'a> {
    /// Its datagrams, in order.
    pub fn datagrams(&self) -> Chunks<'a, u8> {
        self.bytes.chunks(self.stride)
    }
}

/// Sends runs of datagrams from one socket with sendmmsg: the fan-out of one packet to
/// hundreds of receivers costs a few system calls, not one each. Consecutive datagrams to
/// one destination (a frame's packets to one subscriber) go as one message that the
/// kernel splits again (UDP GSO, [`crate::gso`]), where the socket has it: the stack's
/// work per datagram is then done once per message. Keeps its message headers between
/// calls.
///
/// A run may name the local IP it leaves from. A socket bound to every address (0.0.0.0
/// or ::) serves every address of a host that has several (public, private, IPv6), and
/// without that the kernel would choose the source by its routes, not by where the
/// request came: a peer that checks who answers (ICE does) would not recognise the
/// answer. The source goes in an `IP_PKTINFO` (or `IPV6_PKTINFO`) control message, the
/// same for every datagram of the call; each layout of control messages (source or not,
/// segmented or not) has headers of its own whose control buffer is exactly its size, as
/// the kernel reads a header's whole control buffer.
#[derive(Debug)]
pub struct SendBatch {
    plain: MultiHeaders<SockaddrStorage>,
    from_v4: MultiHeaders<SockaddrStorage>,
    from_v6: MultiHeaders<SockaddrStorage>,
    segmented: MultiHeaders<SockaddrStorage>,
    segmented_v4: MultiHeaders<SockaddrStorage>,
    segmented_v6: MultiHeaders<SockaddrStorage>,
    /// The messages of the run being sent (kept for its allocation).
    plan: Vec<gso::Message>,
    /// The kernel refused a segmented message (a device that cannot checksum it, mostly):
    /// every datagram goes alone from then on.
    gso_refused: bool,
    /// Messages sent segmented, and the datagrams they carried.
    gso_messages: u64,
    gso_datagrams: u64,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            plain: MultiHeaders::preallocate(SEND_BATCH, None),
            from_v4: MultiHeaders::preallocate(SEND_BATCH, Some(cmsg_space!(libc::in_pktinfo))),
            from_v6: MultiHeaders::preallocate(SEND_BATCH, Some(cmsg_space!(libc::in6_pktinfo))),
            segmented: MultiHeaders::preallocate(SEND_BATCH, Some(cmsg_space!(u16))),
            segmented_v4: MultiHeaders::preallocate(
                SEND_BATCH,
                Some(cmsg_space!(libc::in_pktinfo, u16)),
            ),
            segmented_v6: MultiHeaders::preallocate(
                SEND_BATCH,
                Some(cmsg_space!(libc::in6_pktinfo, u16)),
            ),
            plan: Vec::new(),
            gso_refused: false,
            gso_messages: 0,
            gso_datagrams: 0,
        }
    }

    /// Sends `run` from `socket`, in order for each destination, [`SEND_BATCH`] messages
    /// per system call; `parts` tells each one's destination and bytes. `from` is the
    /// local IP they leave from, honoured when the socket is bound to every address
    /// (otherwise they leave from the one it is bound to); it must be an address of this
    /// host. A message that the kernel cannot take now (a full send buffer) is dropped,
    /// as a router would, and the others still go. Returns how many datagrams were
    /// dropped so; other failures are logged.
    pub fn send<T>(
        &mut self,
        socket: &Socket,
        from: Option<IpAddr>,
        run: &[T],
        parts: impl Fn(&T) -> (SocketAddr, &[u8]),
    ) -> usize {
        let datagrams: Vec<(SocketAddr, &[u8])> = run.iter().map(parts).collect();
        self.send_datagrams(socket, from, &datagrams)
    }

    /// Sends one datagram as [`SendBatch::send`] does, without allocating (a relay's
    /// per-packet path); whether the kernel's send buffer was full.
    pub fn send_one(
        &mut self,
        socket: &Socket,
        from: Option<IpAddr>,
        to: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        let source = from.and_then(|ip| Source::new(socket.local, ip));
        let addrs = [Some(SockaddrStorage::from(to))];
        let iov = [IoSlice::new(datagram)];
        let messages = [&iov[..]];
        let (full, _) = self.send_messages(socket, source.as_ref(), None, &messages, &addrs, &[1]);
        full > 0
    }

    /// Messages sent segmented (GSO) since the last call, and the datagrams they carried.
    pub fn take_segmented(&mut self) -> (u64, u64) {
        let taken = (self.gso_messages, self.gso_datagrams);
        (self.gso_messages, self.gso_datagrams) = (0, 0);
        taken
    }

    fn send_datagrams(
        &mut self,
        socket: &Socket,
        from: Option<IpAddr>,
        datagrams: &[(SocketAddr, &[u8])],
    ) -> usize {
        let mut full = 0;
        let mut rest = datagrams;
        while !rest.is_empty() {
            let segments = if self.gso_refused {
                1
            } else {
                socket.state.max_gso_segments()
            };
            let (dropped, refused) = self.send_planned(socket, from, rest, segments);
            full += dropped;
            let Some((start, count, errno)) = refused else {
                break;
            };
            if errno == Errno::EIO {
                // The device cannot segment (checksum offload off, mostly): every
                // datagram alone from now on, from the refused message's on.
                warn!(local = %socket.local, "segmented send (GSO) refused: {errno}; \
                    sending each datagram alone from now on");
                self.gso_refused = true;
                rest = &rest[start..];
            } else {
                // That message only (its segments larger than the path's MTU, mostly):
                // its datagrams alone, and the rest as before.
                debug!(local = %socket.local, "segmented send refused: {errno}");
                let (dropped, _) = self.send_planned(socket, from, &rest[start..start + count], 1);
                full += dropped;
                rest = &rest[start + count..];
            }
        }
        full
    }

    /// Sends `datagrams` as messages of up to `max_segments` each. Returns the datagrams
    /// dropped for a full send buffer, and a segmented message the kernel refused (its
    /// first datagram, their count, the error), where sending stopped.
    fn send_planned(
        &mut self,
        socket: &Socket,
        from: Option<IpAddr>,
        datagrams: &[(SocketAddr, &[u8])],
        max_segments: usize,
    ) -> (usize, Option<(usize, usize, Errno)>) {
        let source = from.and_then(|ip| Source::new(socket.local, ip));
        let mut plan = std::mem::take(&mut self.plan);
        gso::messages(
            datagrams.iter().map(|(to, d)| (*to, d.len())),
            max_segments,
            &mut plan,
        );
        let iov: Vec<IoSlice<'_>> = datagrams.iter().map(|(_, d)| IoSlice::new(d)).collect();
        let mut full = 0;
        let mut refusal = None;
        let mut first = 0;
        while first < plan.len() {
            let segment = plan[first].segment;
            let end = first
                + plan[first..]
                    .iter()
                    .take_while(|m| m.segment == segment)
                    .count();
            let group = &plan[first..end];
            let messages: Vec<&[IoSlice<'_>]> = group
                .iter()
                .map(|m| &iov[m.start..m.start + m.count])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = group
                .iter()
                .map(|m| Some(SockaddrStorage::from(datagrams[m.start].0)))
                .collect();
            let counts: Vec<usize> = group.iter().map(|m| m.count).collect();
            let (dropped, refused) =
                self.send_messages(socket, source.as_ref(), segment, &messages, &addrs, &counts);
            full += dropped;
            let sent = refused.map_or(group.len(), |(at, _)| at);
            if segment.is_some() {
                self.gso_messages += sent as u64;
                self.gso_datagrams += counts[..sent].iter().sum::<usize>() as u64;
            }
            if let Some((at, errno)) = refused {
                refusal = Some((group[at].start, group[at].count, errno));
                break;
            }
            first = end;
        }
        self.plan = plan;
        (full, refusal)
    }

    /// Sends `messages` (each its datagrams' slices, to its address), segmented at
    /// `segment` bytes when given, in order. Returns the datagrams dropped for a full
    /// send buffer, and the index of a segmented message the kernel refused and why
    /// (sending stopped there).
    fn send_messages(
        &mut self,
        socket: &Socket,
        source: Option<&Source>,
        segment: Option<u16>,
        messages: &[&[IoSlice<'_>]],
        addrs: &[Option<SockaddrStorage>],
        counts: &[usize],
    ) -> (usize, Option<(usize, Errno)>) {
        let fd = socket.io.as_raw_fd();
        let (headers, cmsgs) = self.headers(source, segment.as_ref());
        let mut full = 0;
        let mut offset = 0;
        while offset < messages.len() {
            let sent = sendmmsg(
                fd,
                headers,
                messages[offset..].iter(),
                &addrs[offset..],
                &cmsgs,
                MsgFlags::empty(),
            );
            match sent {
                Ok(results) => offset += results.count().max(1),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    full += counts[offset];
                    offset += 1;
                }
                Err(e) if segment.is_some() => return (full, Some((offset, e))),
                Err(e) => {
                    let to = addrs[offset].as_ref().map(ToString::to_string);
                    debug!(?to, "send failed: {e}");
                    offset += 1;
                }
            }
        }
        (full, None)
    }

    /// The headers and control messages for a source and a segment size.
    fn headers<'a>(
        &mut self,
        source: Option<&'a Source>,
        segment: Option<&'a u16>,
    ) -> (&mut MultiHeaders<SockaddrStorage>, Vec<ControlMessage<'a>>) {
        let mut cmsgs = Vec::with_capacity(2);
        match source {
            Some(Source::V4(info)) => cmsgs.push(ControlMessage::Ipv4PacketInfo(info)),
            Some(Source::V6(info)) => cmsgs.push(ControlMessage::Ipv6PacketInfo(info)),
            None => {}
        }
        if let Some(size) = segment {
            cmsgs.push(ControlMessage::UdpGsoSegments(size));
        }
        let headers = match (source, segment.is_some()) {
            (None, false) => &mut self.plain,
            (Some(Source::V4(_)), false) => &mut self.from_v4,
            (Some(Source::V6(_)), false) => &mut self.from_v6,
            (None, true) => &mut self.segmented,
            (Some(Source::V4(_)), true) => &mut self.segmented_v4,
            (Some(Source::V6(_)), true) => &mut self.segmented_v6,
        };
        (headers, cmsgs)
    }
}

/// The control message that picks a datagram's source IP.
enum Source {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

impl Source {
    /// The source `ip` for a socket bound to `local`; `None` when the socket is bound to
    /// one address (its datagrams leave from it) or `ip` is of a family it cannot send
    /// from.
    fn new(local: SocketAddr, ip: IpAddr) -> Option<Source> {
        if !local.ip().is_unspecified() {
            return None;
        }
        match (local, ip) {
            (SocketAddr::V4(_), IpAddr::V4(ip)) => Some(Source::V4(libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            })),
            (SocketAddr::V6(_), ip) => {
                let ip = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                Some(Source::V6(libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                }))
            }
            (SocketAddr::V4(_), IpAddr::V6(_)) => None,
        }
    }
}

impl Default for SendBatch {
    fn default() -> SendBatch {
        SendBatch::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn read(len: usize, stride: usize) -> RecvMeta {
        let mut meta = RecvMeta::default();
        meta.addr = SocketAddr::from(([192, 0, 2, 1], 5000));
        meta.len = len;
        meta.stride = stride;
        meta
    }

    #[test]
    fn coalesced_reads_split_at_their_stride() {
        let mut a = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 0, 0];
        let mut b = [7, 7, 7, 0];
        let mut c = [9];
        let slices = [
            IoSliceMut::new(&mut a),
            IoSliceMut::new(&mut b),
            IoSliceMut::new(&mut c),
        ];
        // Ten bytes of GRO at a stride of 4, one plain datagram, an empty read.
        let meta = [read(10, 4), read(3, 3), read(0, 0)];
        let reads = Reads {
            received: meta.iter().zip(slices.iter()),
        };
        let got: Vec<&[u8]> = reads.flat_map(|r| r.datagrams()).collect();
        assert_eq!(got, [&[1, 1, 1, 1][..], &[2, 2, 2, 2], &[3, 3], &[7, 7, 7]]);
    }

    #[test]
    fn a_batch_sent_arrives_in_order_and_whole() {
        runtime().block_on(async {
            let a = Socket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
            let b = Socket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
            let to = b.local_addr();
            let run: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
            let mut batch = SendBatch::new();
            assert_eq!(batch.send(&a, None, &run, |d| (to, &d[..])), 0);
            let buffer = RefCell::new(RecvBuffer::new(1500 * b.gro_segments()));
            let mut got = Vec::new();
            let receive = b.receive(&buffer, |reads| {
                for read in reads {
                    assert_eq!(read.source, a.local_addr());
                    got.extend(read.datagrams().map(<[u8]>::to_vec));
                }
            });
            // The receive loop runs until its socket fails: stop it once all is in.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(300), receive).await;
            assert_eq!(got, run);
        });
    }

    #[test]
    fn a_frame_to_each_receiver_goes_segmented_and_arrives_whole() {
        runtime().block_on(async {
            let a = Socket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
            assert!(
                a.state.max_gso_segments() > 1,
                "this kernel sends no UDP GSO (Linux 4.18 and later do)"
            );
            let receivers: Vec<Socket> = (0..2)
                .map(|_| Socket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap())
                .collect();
            // Per receiver: a frame of eleven 1000-byte packets and a shorter last one,
            // each packet numbered; then a packet alone.
            let mut run: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
            for r in &receivers {
                for i in 0..12u8 {
                    let len = if i == 11 { 400 } else { 1000 };
                    run.push((r.local_addr(), vec![i; len]));
                }
            }
            run.push((receivers[0].local_addr(), vec![99; 1200]));
            let mut batch = SendBatch::new();
            assert_eq!(batch.send(&a, None, &run, |(to, d)| (*to, &d[..])), 0);
            assert_eq!(
                batch.take_segmented(),
                (2, 24),
                "two messages of twelve datagrams"
            );
            assert_eq!(batch.take_segmented(), (0, 0));
            for (n, r) in receivers.iter().enumerate() {
                let got: Vec<Vec<u8>> = arrivals(r).await.into_iter().map(|(_, d)| d).collect();
                let sent: Vec<Vec<u8>> = run
                    .iter()
                    .filter(|(to, _)| *to == r.local_addr())
                    .map(|(_, d)| d.clone())
                    .collect();
                assert_eq!(got, sent, "receiver {n}");
            }
        });
    }

    /// Reads what arrives at `socket` within 300 ms: each datagram's source and bytes.
    async fn arrivals(socket: &Socket) -> Vec<(SocketAddr, Vec<u8>)> {
        let buffer = RefCell::new(RecvBuffer::new(1500 * socket.gro_segments()));
        let mut got = Vec::new();
        let receive = socket.receive(&buffer, |reads| {
            for read in reads {
                got.extend(read.datagrams().map(|d| (read.source, d.to_vec())));
            }
        });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), receive).await;
        got
    }

    #[test]
    fn a_socket_bound_to_every_address_sends_from_the_one_it_is_told() {
        runtime().block_on(async {
            let any = Socket::from_std(bind("0.0.0.0:0".parse().unwrap()).unwrap()).unwrap();
            let port = any.local_addr().port();
            let peer = Socket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
            let to = peer.local_addr();
            let second: IpAddr = [127, 0, 0, 2].into();
            let mut batch = SendBatch::new();
            // From the second address, then as the kernel routes (127.0.0.1 to itself),
            // then from the second again: each call's control messages are its own.
            let run = |tag: u8| vec![vec![tag; 10]; 3];
            assert_eq!(batch.send(&any, Some(second), &run(1), |d| (to, &d[..])), 0);
            assert_eq!(batch.send(&any, None, &run(2), |d| (to, &d[..])), 0);
            assert_eq!(batch.send(&any, Some(second), &run(3), |d| (to, &d[..])), 0);
            let got = arrivals(&peer).await;
            let sources: Vec<(IpAddr, u8)> = got.iter().map(|(a, d)| (a.ip(), d[0])).collect();
            let first: IpAddr = [127, 0, 0, 1].into();
            let expected: Vec<(IpAddr, u8)> = [(second, 1), (first, 2), (second, 3)]
                .iter()
                .flat_map(|x| [*x; 3])
                .collect();
            assert_eq!(sources, expected);
            assert!(got.iter().all(|(a, _)| a.port() == port));

            // A socket bound to one address sends from it, whatever it is told.
            let one = Socket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
            assert_eq!(batch.send(&one, Some(second), &run(4), |d| (to, &d[..])), 0);
            let got = arrivals(&peer).await;
            assert_eq!(got.len(), 3);
            assert!(got.iter().all(|(a, _)| *a == one.local_addr()));
        });
    }
}
