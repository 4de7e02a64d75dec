//! One text frame from a client's signaling WebSocket through `protocol::ClientMessage::parse`
//! (which applies the offer bounds of `protocol::offer::check`), and the frame as an
//! offer's SDP through `protocol::offer::check` directly, as the WHIP and WHEP handlers
//! call it. Raw UTF-8 text (WebSocket text frames are UTF-8; other bytes never get here).
//! What parses must hold within the protocol's bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::offer::{MAX_PUBLISH, check};
use protocol::{
    ClientMessage, ErrorCode, MAX_E2EE_DATA_BYTES, MAX_MESSAGE_BYTES, MAX_OFFER_BYTES,
    MAX_VIEW_ENTRIES,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(text) {
        Ok(message) => {
            assert!(text.len() <= MAX_OFFER_BYTES);
            match &message {
                ClientMessage::Offer {
                    sdp,
                    publish,
                    subscribe,
                    ..
                } => {
                    assert!(publish.len() <= MAX_PUBLISH);
                    assert!(check(sdp, publish, subscribe).is_ok());
                }
                other => {
                    assert!(
                        text.len() <= MAX_MESSAGE_BYTES,
                        "{:?}",
                        other.request_type()
                    );
                    if let ClientMessage::View { pinned, quality } = other {
                        assert!(pinned.len() <= MAX_VIEW_ENTRIES);
                        assert!(quality.len() <= MAX_VIEW_ENTRIES);
                    }
                    if let ClientMessage::E2ee { data, .. } = other {
                        assert!(data.len() <= MAX_E2EE_DATA_BYTES);
                    }
                }
            }
        }
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::BadRequest | ErrorCode::UnknownType | ErrorCode::MessageTooLarge
            ));
        }
    }
    if let Err(e) = check(text, &[], &[]) {
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
});
