//! What an ICE-TCP connection's bytes mean (RFC 6544, RFC 4571 framing), apart from the
//! sockets that carry them: the checks of its first frame, which say which shard takes the
//! connection, and the framing of everything after. Pure, so the fuzz targets in `fuzz/`
//! drive exactly what the driver runs.

use sfu_core::shard::shard_of_ufrag;
use str0m::ice::StunMessage;
use tokio_util::codec::LengthDelimitedCodec;

use crate::metrics::TcpRefusal;

/// The largest first frame: a STUN binding request is a few hundred bytes.
pub const FIRST_FRAME_MAX: usize = 2048;

/// The length of an ICE-TCP connection's first frame from its RFC 4571 prefix: a STUN
/// request is never empty and never longer than [`FIRST_FRAME_MAX`].
pub fn first_frame_len(prefix: [u8; 2]) -> Result<usize, TcpRefusal> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len == 0 || len > FIRST_FRAME_MAX {
        return Err(TcpRefusal::NotStun);
    }
    Ok(len)
}

/// The shard an ICE-TCP connection's first frame (without its length) names: it must be
/// a STUN binding request whose USERNAME starts with one of our ufrags.
pub fn first_frame_shard(frame: &[u8]) -> Result<u64, TcpRefusal> {
    let stun = StunMessage::parse(frame).map_err(|_| TcpRefusal::NotStun)?;
    if !stun.is_binding_request() {
        return Err(TcpRefusal::NotStun);
    }
    let (ours, _) = stun.split_username().ok_or(TcpRefusal::NotStun)?;
    shard_of_ufrag(ours).ok_or(TcpRefusal::Unclaimed)
}

/// The framing of an ICE-TCP connection after its first frame (RFC 4571): each packet
/// after its length, two bytes big-endian.
pub fn ice_tcp_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(usize::from(u16::MAX))
        .new_codec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use str0m::ice::TransId;
    use tokio_util::bytes::BytesMut;
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn a_first_frame_is_between_one_byte_and_the_limit() {
        assert_eq!(first_frame_len([0, 0]), Err(TcpRefusal::NotStun));
        assert_eq!(first_frame_len([0, 1]), Ok(1));
        assert_eq!(first_frame_len([0x08, 0x00]), Ok(FIRST_FRAME_MAX));
        assert_eq!(first_frame_len([0x08, 0x01]), Err(TcpRefusal::NotStun));
    }

    #[test]
    fn a_first_frame_that_is_not_a_binding_request_is_refused() {
        assert_eq!(
            first_frame_shard(b"GET / HTTP/1.1"),
            Err(TcpRefusal::NotStun)
        );
        assert_eq!(first_frame_shard(&[]), Err(TcpRefusal::NotStun));
    }

    #[test]
    fn a_binding_request_names_the_shard_of_its_ufrag() {
        let request = |username| {
            let stun = StunMessage::binding_request(username, TransId::new(), true, 0, 1, false);
            let mut buf = [0u8; 256];
            // The integrity is the shard's to check, not the acceptor's: any will do here.
            let n = stun
                .to_bytes(Some(b"pw"), &mut buf, |_, _| [0; 20])
                .unwrap();
            buf[..n].to_vec()
        };
        assert_eq!(first_frame_shard(&request("0007abcd:theirs")), Ok(7));
        assert_eq!(
            first_frame_shard(&request("zzzzabcd:theirs")),
            Err(TcpRefusal::Unclaimed)
        );
    }

    #[test]
    fn frames_are_read_after_their_two_byte_length() {
        let mut codec = ice_tcp_codec();
        let mut buf = BytesMut::from(&[0x00, 0x03, 1, 2, 3, 0x00, 0x02, 4][..]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], [1, 2, 3]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "incomplete");
        buf.extend_from_slice(&[5]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], [4, 5]);
    }
}
