//! Datagrams into a shard with live participants (`sfu_core::shard::Shard::handle_datagram`):
//! a publisher on UDP (microphone, camera in three simulcast layers) and a subscriber on
//! ICE-TCP receiving both, real str0m clients connected over ICE and DTLS-SRTP
//! (`sfu_fuzz::call::Call::two_party`). Then the input's steps (`sfu_fuzz::ops::CallOp`):
//! raw datagrams from a client's own address (STUN, DTLS, SRTP, SRTCP, garbage) and from
//! unknown addresses (only a STUN request naming a participant's ufrag is taken; the
//! shard's ICE credentials are the same on every run, so captured requests authenticate);
//! RTP packets the publisher's own session encrypts, with fuzzed header fields, payload
//! and dependency descriptor, so that the forwarding path reads them; keyframe requests
//! and views from the subscriber; time. After each step the network is pumped until quiet
//! (every output polled to `Timeout`; links delay datagrams by `sfu_fuzz::call::LATENCY`),
//! and the server must never send a datagram a WebRTC stack cannot classify.

#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use protocol::{Quality, Request, TrackQuality};
use sfu_fuzz::call::{Call, LATENCY, RtpOut, STEP, send_rtp, server};
use sfu_fuzz::input::Reader;
use sfu_fuzz::ops::CallOp;
use str0m::media::{KeyframeRequestKind, Rid};
use str0m::net::Protocol;

/// Steps per input.
const MAX_STEPS: usize = 32;

/// The longest wait of one step, and of all steps together: a second of a call is about
/// a thousand events (its bandwidth probes pad at a few milliseconds), so waits bound
/// what an input costs.
const MAX_WAIT: Duration = Duration::from_secs(5);
const MAX_WAITED: Duration = Duration::from_secs(30);

/// The largest RTP payload the publisher's str0m session can send (it panics beyond:
/// its packets are at most 2000 bytes with their headers), less room for those headers.
const MAX_PAYLOAD: usize = 1800;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    if r.is_empty() {
        return;
    }
    let mut call = Call::two_party(false);
    let mut waited = Duration::ZERO;
    let (publisher, subscriber) = (0, 1);
    for _ in 0..MAX_STEPS {
        let Some(op) = r.head::<CallOp>() else {
            break;
        };
        let now = call.now;
        match op {
            CallOp::FromPeer { peer } => {
                let chunk = r.chunk();
                let p = &call.peers[usize::from(peer) % 2];
                let (proto, addr) = (p.proto, p.addr);
                call.shard
                    .handle_datagram(now, proto, server(), addr, chunk);
            }
            CallOp::FromStranger { host, tcp } => {
                let chunk = r.chunk();
                let addr = SocketAddr::from(([203, 0, 113, host], 6000));
                let proto = if tcp { Protocol::Tcp } else { Protocol::Udp };
                call.shard
                    .handle_datagram(now, proto, server(), addr, chunk);
            }
            CallOp::Rtp(shape) => {
                // A descriptor is at most 255 bytes (an extension's length is one byte).
                let dd = shape.dd.then(|| r.chunk()).map(|d| &d[..d.len().min(255)]);
                let payload = r.chunk();
                let payload =
                    &payload[..payload.len().min(MAX_PAYLOAD - dd.map_or(0, <[u8]>::len))];
                let p = &mut call.peers[publisher];
                let (mid, _, rids) = &p.publish[usize::from(shape.mid) % p.publish.len()];
                let rid = (!rids.is_empty())
                    .then(|| Rid::from(rids[usize::from(shape.layer) % rids.len()].as_str()));
                let params = p.rtc.codec_config().params();
                let pt = params[usize::from(shape.pt) % params.len()].pt();
                let packet = RtpOut {
                    mid: *mid,
                    rid,
                    pt,
                    seq: u64::from(shape.seq),
                    time: shape.time,
                    marker: shape.marker,
                    audio_level: shape.level,
                    dd,
                    payload,
                };
                send_rtp(p, now, &packet);
                // The client's pacer releases it within a step.
                call.advance(STEP);
            }
            CallOp::KeyframeRequest { fir } => {
                let kind = if fir {
                    KeyframeRequestKind::Fir
                } else {
                    KeyframeRequestKind::Pli
                };
                let p = &mut call.peers[subscriber];
                let mids: Vec<_> = p.subscribe.iter().map(|(mid, _)| *mid).collect();
                let mut api = p.rtc.direct_api();
                for mid in mids {
                    if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                        rx.request_keyframe(kind);
                    }
                }
            }
            CallOp::View { quality, pinned } => {
                let p = &call.peers[subscriber];
                let tracks: Vec<_> = p.subscribe.iter().map(|(_, t)| *t).collect();
                let quality = match quality {
                    0 => Some(Quality::Low),
                    1 => Some(Quality::Medium),
                    2 => Some(Quality::High),
                    _ => None,
                };
                let request = Request::View {
                    pinned: if pinned { tracks.clone() } else { Vec::new() },
                    quality: quality
                        .map(|quality| {
                            tracks
                                .iter()
                                .map(|t| TrackQuality {
                                    track_id: *t,
                                    quality,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let id = p.id;
                call.shard.request(now, id, request);
            }
            CallOp::Wait { ms } => {
                let wait = Duration::from_millis(ms.into())
                    .min(MAX_WAIT)
                    .min(MAX_WAITED - waited);
                waited += wait;
                call.advance(wait);
            }
        }
        assert!(call.pump(), "the network never went quiet");
        assert_eq!(
            call.malformed_from_server, 0,
            "the server sent a datagram nothing reads"
        );
    }
    // What is still on its way arrives, and what it causes.
    call.advance(4 * LATENCY);
    assert!(!call.never_quiet, "the network never went quiet");
    assert_eq!(
        call.malformed_from_server, 0,
        "the server sent a datagram nothing reads"
    );
});
