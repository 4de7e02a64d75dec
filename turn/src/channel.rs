//! The relay's hot path on the wire: ChannelData framing (RFC 8656 §12.4) and Data
//! indications, read and written in place without allocation.

use std::net::SocketAddr;

/// Channel numbers clients may bind. RFC 8656 §12 narrowed them to 0x4000-0x4FFF, but
/// RFC 5766 clients (coturn's own among them) still pick up to 0x7FFE: both are accepted.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7ffe;

/// Length of the ChannelData header.
pub const HEADER: usize = 4;

/// STUN's magic cookie.
const MAGIC_COOKIE: u32 = 0x2112_a442;

/// Whether `data` starts like ChannelData (first two bits 01) rather than STUN (00).
pub fn is_channel_data(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 0xc0 == 0x40)
}

/// Parses a ChannelData message: its channel number and the range of its application
/// data within `data`. Padding after the data (TCP and TLS) is allowed and ignored.
pub fn parse(data: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let header = data.get(..HEADER)?;
    let number = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !CHANNELS.contains(&number) || data.len() < HEADER + len {
        return None;
    }
    Some((number, HEADER..HEADER + len))
}

/// The length of a ChannelData message carrying `len` bytes, padded to a multiple of four
/// on stream transports (RFC 8656 §12.5), unpadded on UDP.
pub fn framed_len(len: usize, padded: bool) -> usize {
    let total = HEADER + len;
    if padded {
        total.next_multiple_of(4)
    } else {
        total
    }
}

/// Writes a ChannelData message for `payload` into `out`; returns its length, or `None`
/// if `out` is too small or `payload` too long.
pub fn write(out: &mut [u8], number: u16, payload: &[u8], padded: bool) -> Option<usize> {
    let len = u16::try_from(payload.len()).ok()?;
    let total = framed_len(payload.len(), padded);
    let out = out.get_mut(..total)?;
    out[..2].copy_from_slice(&number.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    out[HEADER + payload.len()..].fill(0);
    Some(total)
}

/// Writes a Data indication (RFC 8656 §11.4) from `peer` carrying `payload` into `out`,
/// with transaction id `transaction`; returns its length, or `None` if `out` is too small.
pub fn write_data_indication(
    out: &mut [u8],
    transaction: [u8; 12],
    peer: SocketAddr,
    payload: &[u8],
) -> Option<usize> {
    let addr_len = match peer {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    };
    let data_len = u16::try_from(payload.len()).ok()?;
    let padded_data = payload.len().next_multiple_of(4);
    let body = 4 + addr_len + 4 + padded_data;
    let total = 20 + body;
    let out = out.get_mut(..total)?;
    // Header: Data indication (method 0x007, class indication) = 0x0017.
    out[..2].copy_from_slice(&0x0017u16.to_be_bytes());
    out[2..4].copy_from_slice(&u16::try_from(body).ok()?.to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(&transaction);
    // XOR-PEER-ADDRESS (0x0012).
    let a = &mut out[20..24 + addr_len];
    a[..2].copy_from_slice(&0x0012u16.to_be_bytes());
    a[2..4].copy_from_slice(&(addr_len as u16).to_be_bytes());
    a[4] = 0;
    let port = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    a[6..8].copy_from_slice(&port.to_be_bytes());
    match peer {
        SocketAddr::V4(v4) => {
            a[5] = 0x01;
            let ip = u32::from(*v4.ip()) ^ MAGIC_COOKIE;
            a[8..12].copy_from_slice(&ip.to_be_bytes());
        }
        SocketAddr::V6(v6) => {
            a[5] = 0x02;
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(&transaction);
            for (i, (b, k)) in v6.ip().octets().iter().zip(key).enumerate() {
                a[8 + i] = b ^ k;
            }
        }
    }
    // DATA (0x0013).
    let d = &mut out[24 + addr_len..];
    d[..2].copy_from_slice(&0x0013u16.to_be_bytes());
    d[2..4].copy_from_slice(&data_len.to_be_bytes());
    d[4..4 + payload.len()].copy_from_slice(payload);
    d[4 + payload.len()..].fill(0);
    Some(total)
}

#[cfg(test)]
mod tests {
    use stun_types::message::{Message, MessageClass};
    use turn_types::attribute::{Data, XorPeerAddress};
    use turn_types::message::DATA;

    use super::*;

    #[test]
    fn channel_data_round_trips_with_and_without_padding() {
        let mut out = [0xffu8; 64];
        let n = write(&mut out, 0x4001, b"hello", false).unwrap();
        assert_eq!(
            &out[..n],
            &[0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o']
        );
        assert!(is_channel_data(&out[..n]));
        assert_eq!(parse(&out[..n]), Some((0x4001, 4..9)));
        let n = write(&mut out, 0x4fff, b"hello", true).unwrap();
        assert_eq!(n, 12, "padded to four bytes on streams");
        assert_eq!(&out[9..12], &[0, 0, 0]);
        assert_eq!(parse(&out[..n]), Some((0x4fff, 4..9)));
    }

    #[test]
    fn channel_data_refuses_bad_numbers_and_truncation() {
        assert_eq!(parse(&[0x40, 0x00, 0x00, 0x05, 1, 2]), None, "truncated");
        assert_eq!(
            parse(&[0x7f, 0xff, 0x00, 0x00]),
            None,
            "0x7FFF is not a channel"
        );
        assert_eq!(parse(&[0x80, 0x00, 0x00, 0x00]), None);
        assert_eq!(
            parse(&[0x50, 0x00, 0x00, 0x00]),
            Some((0x5000, 4..4)),
            "RFC 5766 range"
        );
        assert_eq!(parse(&[0x3f, 0xff, 0x00, 0x00]), None);
        assert_eq!(parse(&[0x40]), None);
        assert!(!is_channel_data(&[0x00, 0x01]));
        assert!(write(&mut [0u8; 6], 0x4000, b"hello", false).is_none());
    }

    #[test]
    fn data_indications_parse_with_stun_types() {
        let transaction = [7u8; 12];
        for peer in ["203.0.113.5:3478", "[2001:db8::5]:40000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut out = [0u8; 128];
            let n = write_data_indication(&mut out, transaction, peer, b"abcde").unwrap();
            let msg = Message::from_bytes(&out[..n]).unwrap();
            assert!(msg.has_class(MessageClass::Indication));
            assert!(msg.has_method(DATA));
            let addr = msg.attribute::<XorPeerAddress>().unwrap();
            assert_eq!(addr.addr(msg.transaction_id()), peer);
            assert_eq!(msg.attribute::<Data>().unwrap().data(), b"abcde");
        }
    }
}
