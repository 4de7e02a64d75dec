//! The bounded write queue of one stream connection (ICE-TCP, TURN over TCP or TLS):
//! packets wait in one byte buffer for the connection's writer, and a packet that does not
//! fit is refused, so a client that reads too slowly loses packets instead of growing
//! memory or stalling the thread that serves everyone else.
//!
//! The queue and its writer live on one thread (`Rc`, not `Arc`). Pushing copies the
//! packet into the buffer; the writer takes the whole buffer at once and gives back an
//! empty one of the same capacity, so the queue allocates nothing once warm.

use std::cell::RefCell;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// How packets are delimited on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each packet is preceded by its length, two bytes big-endian (RFC 4571, as ICE-TCP
    /// uses); longer packets cannot be sent.
    Rfc4571,
    /// Packets carry their own length (TURN's STUN messages and padded ChannelData): sent
    /// as they are.
    SelfDelimiting,
}

/// Packets waiting to be written to one stream, at most `limit` bytes of them.
#[derive(Debug)]
pub struct StreamQueue {
    /// The packets, framed, in order.
    bytes: RefCell<Vec<u8>>,
    /// Wakes the writer when a packet arrives in an empty queue.
    wake: Notify,
    /// Most bytes waiting (framing included); a packet beyond is refused.
    limit: usize,
    framing: Framing,
}

impl StreamQueue {
    pub fn new(limit: usize, framing: Framing) -> StreamQueue {
        StreamQueue {
            bytes: RefCell::new(Vec::new()),
            wake: Notify::new(),
            limit,
            framing,
        }
    }

    /// Queues one packet, or returns false when the queue has no room for it (or, framed
    /// by RFC 4571, it is longer than a frame can say).
    pub fn push(&self, packet: &[u8]) -> bool {
        let header = match self.framing {
            Framing::Rfc4571 => match u16::try_from(packet.len()) {
                Ok(len) => Some(len.to_be_bytes()),
                Err(_) => return false,
            },
            Framing::SelfDelimiting => None,
        };
        let framed = header.map_or(0, |h| h.len()) + packet.len();
        let mut bytes = self.bytes.borrow_mut();
        if bytes.len() + framed > self.limit {
            return false;
        }
        if bytes.is_empty() {
            self.wake.notify_one();
        }
        if let Some(header) = header {
            bytes.extend_from_slice(&header);
        }
        bytes.extend_from_slice(packet);
        true
    }

    /// Writes what is queued to `writer`, as it comes, until a write fails. Run it in the
    /// connection's task, beside the reader.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, writer: &mut W) {
        let mut sending = Vec::new();
        loop {
            std::mem::swap(&mut sending, &mut *self.bytes.borrow_mut());
            if sending.is_empty() {
                self.wake.notified().await;
                continue;
            }
            if writer.write_all(&sending).await.is_err() {
                return;
            }
            sending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    #[test]
    fn rfc4571_frames_each_packet_within_the_limit() {
        let queue = StreamQueue::new(10, Framing::Rfc4571);
        assert!(queue.push(&[1, 2, 3]));
        // 5 bytes queued: a 4-byte packet (6 framed) is over the limit, a 1-byte one is not.
        assert!(!queue.push(&[9; 4]));
        assert!(queue.push(&[4]));
        assert_eq!(*queue.bytes.borrow(), [0x00, 0x03, 1, 2, 3, 0x00, 0x01, 4]);
        // A frame cannot say a length over 65,535.
        assert!(!StreamQueue::new(usize::MAX, Framing::Rfc4571).push(&vec![0; 65_536]));
    }

    #[test]
    fn self_delimiting_packets_go_as_they_are() {
        let queue = StreamQueue::new(6, Framing::SelfDelimiting);
        assert!(queue.push(&[1, 2, 3, 4]));
        assert!(!queue.push(&[5, 6, 7]));
        assert!(queue.push(&[5, 6]));
        assert_eq!(*queue.bytes.borrow(), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn the_writer_sends_what_is_queued_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let queue = StreamQueue::new(1024, Framing::Rfc4571);
            let (mut near, mut far) = tokio::io::duplex(64);
            assert!(queue.push(b"abc"));
            let write = queue.write_to(&mut near);
            let read = async {
                let mut got = vec![0u8; 5];
                tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
                    .await
                    .unwrap();
                assert!(queue.push(b"de"));
                let mut more = vec![0u8; 4];
                tokio::io::AsyncReadExt::read_exact(&mut far, &mut more)
                    .await
                    .unwrap();
                got.extend(more);
                got
            };
            let got = tokio::select! {
                () = write => panic!("the writer stopped"),
                got = read => got,
            };
            assert_eq!(got, b"\x00\x03abc\x00\x02de");
        });
    }
}
