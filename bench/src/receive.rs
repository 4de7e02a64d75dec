//! What a simulated client does with what comes back to it: each RTP packet it receives
//! is counted, its stream's sequence numbers tracked (loss), VP8 frames reassembled and
//! opened (decrypted, unless the run is in the clear), and the forwarding latency of
//! their packets recorded; a keyframe request for what it sends is counted and honoured.
//! Shared by the clients of our server (`client`) and of Janus (`janus::client`).

use std::collections::HashMap;
use std::time::Instant;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{KeyframeRequest, MediaKind};
use str0m::rtp::{RtpPacket, Ssrc};

use crate::client::{RIDS, Shared, Stats};
use crate::e2ee::Codec as FrameCodec;
use crate::frames::{Assembly, Crypt, starts_keyframe};
use crate::mlines::Publication;
use crate::outgoing::Outgoing;

/// Sequence tracking of one incoming stream: lowest and highest seen, and how many came.
struct SeqTrack {
    first: u64,
    highest: u64,
    received: u64,
}

/// The receiving side of one client (of one peer connection, for Janus's two).
pub struct Receiving {
    tracks: HashMap<Ssrc, SeqTrack>,
    assemblies: HashMap<Ssrc, Assembly>,
    /// When the client sent its join: first media is timed from it.
    started: Instant,
    /// When its media connected (ICE and DTLS): first video is timed from it.
    pub connected_at: Option<Instant>,
}

impl Receiving {
    pub fn new(started: Instant) -> Receiving {
        Receiving {
            tracks: HashMap::new(),
            assemblies: HashMap::new(),
            started,
            connected_at: None,
        }
    }

    /// Records a received packet in `stats`; its frame, once whole, is opened by `crypt`
    /// as `sender`'s (`waiting`: see [`Crypt::open`]). Returns the packet's codec.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        rtc: &Rtc,
        p: &RtpPacket,
        shared: &Shared,
        stats: &mut Stats,
        crypt: &mut Crypt,
        sender: Option<u64>,
        waiting: impl FnOnce(&Crypt) -> bool,
    ) -> Option<Codec> {
        let at = Instant::now();
        let pt = p.header.payload_type;
        let codec = rtc
            .codec_config()
            .params()
            .iter()
            .find(|x| x.pt() == pt)
            .map(|x| x.spec().codec);
        if stats.join_to_first_media.is_none() {
            stats.join_to_first_media = Some(at - self.started);
        }
        // The first picture it can decode: a keyframe's first packet (a server may forward
        // from any frame, though ours starts each subscriber at a keyframe).
        if let (None, Some(connected)) = (stats.connected_to_first_video, self.connected_at)
            && codec == Some(Codec::Vp8)
            && starts_keyframe(&p.payload)
        {
            stats.connected_to_first_video = Some(at - connected);
        }
        stats.packets_received += 1;
        if at >= shared.measure_from {
            stats.window_received += 1;
        }
        stats.bytes_received += p.payload.len() as u64;
        let seq = *p.seq_no;
        let t = self
            .tracks
            .entry(p.header.ssrc)
            .or_insert_with(|| SeqTrack {
                first: seq,
                highest: seq,
                received: 0,
            });
        t.received += 1;
        t.highest = t.highest.max(seq);
        t.first = t.first.min(seq);
        // The frame this packet completes, opened: its send time.
        let (sent, arrivals) = match codec {
            Some(Codec::Opus) => (
                crypt.open(FrameCodec::Opus, sender, &p.payload, waiting),
                std::slice::from_ref(&at),
            ),
            Some(Codec::Vp8) => {
                let assembly = self.assemblies.entry(p.header.ssrc).or_default();
                let sent = assembly
                    .push(
                        seq,
                        p.header.timestamp,
                        p.header.marker,
                        &p.payload,
                        at,
                        &mut crypt.counts.incomplete,
                    )
                    .and_then(|frame| crypt.open(FrameCodec::Vp8, sender, frame, waiting));
                (sent, &assembly.arrivals[..])
            }
            _ => (None, &[][..]),
        };
        if let Some(sent) = sent {
            for arrived in arrivals.iter().filter(|a| **a >= shared.measure_from) {
                let ns = arrived.duration_since(shared.epoch).as_nanos() as u64;
                let us = ns.saturating_sub(sent) / 1000;
                let _ = stats.latency_us.record(us.max(1));
            }
        }
        codec
    }

    /// Packets missing from the sequence numbers of every stream it received.
    pub fn lost(&self) -> u64 {
        self.tracks
            .values()
            .map(|t| (t.highest - t.first + 1).saturating_sub(t.received))
            .sum()
    }
}

/// A keyframe request for one of our streams: counted in `stats`, and the stream's next
/// frame made a keyframe.
pub fn keyframe_requested(
    r: &KeyframeRequest,
    publish: &[Publication],
    outgoing: &mut [Outgoing],
    shared: &Shared,
    stats: &mut Stats,
) {
    stats.keyframe_requests += 1;
    if Instant::now() >= shared.measure_from {
        stats.window_keyframe_requests += 1;
        let audio = publish
            .iter()
            .any(|p| p.mid == r.mid && p.kind == MediaKind::Audio);
        if audio {
            stats.window_audio_keyframe_requests += 1;
        }
        let layer = r.rid.and_then(|rid| RIDS.iter().position(|x| *x == &*rid));
        if let Some(i) = layer {
            stats.window_layer_keyframe_requests[i] += 1;
        }
    }
    if let Some(o) = outgoing
        .iter_mut()
        .find(|o| o.mid == r.mid && o.rid == r.rid)
    {
        o.keyframe_due = true;
    }
}
