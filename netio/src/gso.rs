//! How a run of datagrams becomes the messages of a send with UDP generic segmentation
//! offload (GSO, `UDP_SEGMENT`): consecutive datagrams to one destination go as one
//! message, which the kernel splits again into the datagrams it was made of, so that a
//! frame's packets to one subscriber cost the stack one pass instead of one each.
//!
//! The kernel splits a message into segments of one size (the message's `segment`): every
//! datagram of a message but the last must be exactly that size, and the last no larger.
//! A message holds at most [`MAX_SEGMENTS`] datagrams and [`MAX_BYTES`] bytes.

use std::net::SocketAddr;

/// The most segments the kernel takes in one message (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;

/// The most bytes of one message: what an IPv4 datagram carries after its headers, with
/// room for IP options to spare.
pub const MAX_BYTES: usize = 65_000;

/// Datagrams `start..start + count` of a run, sent as one message; `segment` is the size
/// of each but the last, `None` for a message of one datagram (sent as it is, without
/// segmentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub start: usize,
    pub count: usize,
    pub segment: Option<u16>,
}

/// Splits a run, given as each datagram's destination and length, into messages, in
/// order; `max_segments` is 1 where the socket has no GSO (every datagram alone).
pub fn messages(
    run: impl ExactSizeIterator<Item = (SocketAddr, usize)>,
    max_segments: usize,
    out: &mut Vec<Message>,
) {
    out.clear();
    let max_segments = max_segments.clamp(1, MAX_SEGMENTS);
    let mut open: Option<(Message, SocketAddr, usize, usize, bool)> = None;
    for (i, (to, len)) in run.enumerate() {
        // The open message: its destination, segment size, bytes, and whether a shorter
        // last datagram closed it.
        if let Some((m, dest, size, bytes, closed)) = &mut open
            && !*closed
            && *dest == to
            && m.count < max_segments
            && *bytes + len <= MAX_BYTES
            && len <= *size
            && u16::try_from(*size).is_ok()
        {
            m.count += 1;
            *bytes += len;
            *closed = len < *size;
            m.segment = u16::try_from(*size).ok();
            continue;
        }
        if let Some((m, ..)) = open.take() {
            out.push(m);
        }
        let m = Message {
            start: i,
            count: 1,
            segment: None,
        };
        open = Some((m, to, len, len, false));
    }
    if let Some((m, ..)) = open {
        out.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn plan(run: &[(u16, usize)], max_segments: usize) -> Vec<(usize, usize, Option<u16>)> {
        let mut out = Vec::new();
        messages(
            run.iter().map(|(p, len)| (addr(*p), *len)),
            max_segments,
            &mut out,
        );
        out.iter().map(|m| (m.start, m.count, m.segment)).collect()
    }

    #[test]
    fn a_frame_to_each_subscriber_is_one_message_each() {
        let mut run = vec![(1, 1040); 12];
        run.extend([(2, 1040); 12]);
        assert_eq!(plan(&run, 64), [(0, 12, Some(1040)), (12, 12, Some(1040))]);
    }

    #[test]
    fn only_the_last_segment_may_be_shorter() {
        // A shorter datagram ends its message; a longer one starts the next.
        let run = [
            (1, 1000),
            (1, 1000),
            (1, 600),
            (1, 1000),
            (1, 1200),
            (1, 1200),
        ];
        assert_eq!(
            plan(&run, 64),
            [(0, 3, Some(1000)), (3, 1, None), (4, 2, Some(1200))]
        );
    }

    #[test]
    fn destinations_that_alternate_are_sent_alone() {
        let run = [(1, 1000), (2, 1000), (1, 1000), (2, 1000)];
        assert_eq!(
            plan(&run, 64),
            [(0, 1, None), (1, 1, None), (2, 1, None), (3, 1, None)]
        );
    }

    #[test]
    fn a_message_holds_at_most_the_kernels_segments_and_bytes() {
        let run = vec![(1, 100); 70];
        assert_eq!(plan(&run, 64), [(0, 64, Some(100)), (64, 6, Some(100))]);
        assert_eq!(plan(&run, 500), [(0, 64, Some(100)), (64, 6, Some(100))]);
        // 1400-byte datagrams: 46 of them fit in 65,000 bytes.
        let run = vec![(1, 1400); 50];
        assert_eq!(plan(&run, 64), [(0, 46, Some(1400)), (46, 4, Some(1400))]);
    }

    #[test]
    fn without_gso_every_datagram_is_alone() {
        let run = [(1, 1000), (1, 1000), (1, 1000)];
        assert_eq!(plan(&run, 1), [(0, 1, None), (1, 1, None), (2, 1, None)]);
        assert_eq!(plan(&[], 64), []);
    }
}
