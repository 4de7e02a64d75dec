//! A WHEP client that hangs up while its POST waits for the media plane leaves no
//! participant behind: the handler, dropped, leaves the room for it at once (not when
//! the media plane's answer would have timed out).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::{Duration, Instant};

use common::{Call, start, token};
use tokio::io::AsyncWriteExt;

/// A receive-only offer, as a WHEP player sends.
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\n";

#[tokio::test]
async fn a_whep_client_that_hangs_up_leaves_the_room() {
    let (addr, plane) = start(false).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /whep HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        token("r", "player"),
        OFFER.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    // The recording plane never says `joined`: the POST waits.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !plane
        .calls
        .lock()
        .iter()
        .any(|c| matches!(c, Call::Join(..)))
    {
        assert!(
            Instant::now() < deadline,
            "no join: {:?}",
            plane.calls.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !plane
        .calls
        .lock()
        .iter()
        .any(|c| matches!(c, Call::Leave(..)))
    {
        assert!(
            Instant::now() < deadline,
            "no leave 2 s after the hang-up: {:?}",
            plane.calls.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
