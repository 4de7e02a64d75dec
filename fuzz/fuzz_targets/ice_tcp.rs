//! An ICE-TCP connection's bytes as the server reads them (RFC 6544, RFC 4571 framing):
//! the first frame through `sfu::ice_tcp::first_frame_len` and `first_frame_shard` (which
//! shard takes the connection, as the acceptor decides), handed to a shard whose
//! participant joined to use ICE-TCP (the shard maps the connection only for a STUN
//! request naming its ufrag; its ICE credentials are the same on every run); then the rest
//! of the stream cut into frames by `sfu::ice_tcp::ice_tcp_codec` into the shard
//! (`Protocol::Tcp`), until the stream ends. What the shard sends back goes through the
//! connection's write queue (`netio::stream::StreamQueue`, RFC 4571) and is read back with
//! the same codec: the frames must come out as they went in. Raw bytes: the stream.

#![no_main]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Waker};

use libfuzzer_sys::fuzz_target;
use netio::stream::{Framing, StreamQueue};
use protocol::{Grants, Request, Source};
use sfu::ice_tcp::{first_frame_len, first_frame_shard, ice_tcp_codec};
use sfu_core::shard::ShardConfig;
use sfu_fuzz::call::{Call, server};
use str0m::net::Protocol;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

/// The driver's write queue per connection.
const QUEUE_BYTES: usize = 256 * 1024;

/// The offer of the participant on ICE-TCP (a str0m client with an active TCP candidate
/// and fixed ICE credentials), made once.
fn tcp_offer() -> &'static Request {
    static OFFER: OnceLock<Request> = OnceLock::new();
    OFFER.get_or_init(|| {
        let mut call = Call::new(ShardConfig::default());
        let p = call.join("tcp", Grants::default(), Protocol::Tcp);
        call.offer(
            p,
            &[(Source::Microphone, &[][..]), (Source::Camera, &[][..])],
            false,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Ok(len) = first_frame_len(*prefix) else {
        return;
    };
    // Shorter: the acceptor waits, then times out.
    let Some((first, rest)) = rest.split_at_checked(len) else {
        return;
    };
    // Another shard's, or none: this server has one shard.
    if first_frame_shard(first) != Ok(0) {
        return;
    }
    let mut call = Call::new(ShardConfig::default());
    let id = call.join_bare("tcp", Grants::default());
    call.shard.request(call.now, id, tcp_offer().clone());
    call.pump();
    let (local, remote) = (server(), SocketAddr::from(([203, 0, 113, 50], 7000)));
    call.shard
        .handle_datagram(call.now, Protocol::Tcp, local, remote, first);
    if call.shard.owner_of(Protocol::Tcp, local, remote).is_none() {
        return; // Not one of ours: the connection is closed.
    }
    call.pump();
    let mut codec = ice_tcp_codec();
    let mut stream = BytesMut::from(rest);
    while let Ok(Some(frame)) = codec.decode(&mut stream) {
        call.shard
            .handle_datagram(call.now, Protocol::Tcp, local, remote, &frame);
        call.pump();
    }
    // The stream ends: a frame cut short is an error, and the connection closes.
    let _ = codec.decode_eof(&mut stream);
    call.shard.forget_remote(Protocol::Tcp, local, remote);
    assert!(call.pump(), "the shard never went quiet");

    // What the shard sent back, through the connection's write queue and read back.
    let queue = StreamQueue::new(QUEUE_BYTES, Framing::Rfc4571);
    let mut sent = Vec::new();
    for w in call
        .elsewhere
        .iter()
        .filter(|w| w.to == remote && w.proto == Protocol::Tcp)
    {
        if queue.push(&w.bytes) {
            sent.push(w.bytes.clone());
        }
    }
    let mut written: Vec<u8> = Vec::new();
    {
        let mut write = pin!(queue.write_to(&mut written));
        // It writes everything queued, then waits for more.
        assert!(
            write
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
    }
    // (A fresh reader: the stream's is left mid-frame.)
    let mut reader = ice_tcp_codec();
    let mut bytes = BytesMut::from(&written[..]);
    let mut read = Vec::new();
    while let Ok(Some(frame)) = reader.decode(&mut bytes) {
        read.push(frame.to_vec());
    }
    assert!(bytes.is_empty(), "the queue wrote a frame cut short");
    assert_eq!(read, sent, "frames come out of the queue as they went in");
});
