//! The forwarding hot path: one received RTP packet to every subscriber of its track
//! that receives its layer now, or switches to it at this packet.

use std::time::{Duration, Instant};

use protocol::{Kind, ParticipantId};
use str0m::format::{Codec, PayloadParams};
use str0m::media::Mid;
use str0m::rtp::StreamTx;
use str0m::rtp::{RtpPacket, RtpWrite, Vp8Descriptor};
use tracing::debug;

use super::Shard;
use super::milestones::Milestone;
use super::output::{ShardOutput, TapRecord};
use super::participant::Downlink;
use super::subscription::STALE_PAUSE;
use crate::forwarder::{Decision, DropReason, Select, keyframe_start, select, select_svc};
use crate::pacer::Pacer;
use crate::svc::{DdBytes, LayerInfo, dd_frame_number, frame_deps, parse_dd, vp9_layers};
use crate::temporal::Picture;
use crate::vp8::temporal;

/// A subscriber whose oldest unsent packet waited this long in its pacer (a keyframe
/// burst at a low estimate takes a good part of it) gets nothing
/// more until a keyframe after its queue drained.
pub(super) const MAX_PACER_DELAY: Duration = Duration::from_secs(1);

/// The same for a stream whose oldest packet waits in the shard's pacer of a shaped link
/// (`shaping.rs`): at a rate a policer allows, a browser's keyframe alone takes over a
/// second (20 kB at 144 kbit/s), and cut at 1 s it was asked again and again.
pub(super) const SHAPED_MAX_DELAY: Duration = Duration::from_secs(2);

/// How long forwarded packets are kept for retransmission on NACK: later than this a
/// resent packet arrives too late to be played. str0m keeps 3 s (1024 packets) by default,
/// about 1 MiB per subscriber of a 2.5 Mbit/s stream.
pub(super) const RTX_MAX_AGE: Duration = Duration::from_secs(1);

pub(super) const RTX_MAX_PACKETS: usize = 512;

/// The most of what a subscriber is sent that may be retransmissions (bytes over the last
/// second); past it, str0m drops the resends asked for. At str0m's default, 0.15, a
/// policer losing a quarter of the top layer stopped the resends for the second after:
/// the lower layer's first packets with them, and the picture stayed broken until the
/// browser asked for a keyframe, 3 s later. At 0.5, the resends of a floor video thinned
/// under a policer overran it more than the video sent whole. It also bounds what a
/// receiver's NACKs can make the server send.
pub(super) const RTX_MAX_RATIO: f32 = 0.3;

/// The largest RTP payload forwarded (bytes): what a UDP datagram of an Ethernet MTU
/// (1500 bytes) carries after the smallest RTP header. Senders stay well below it
/// (browsers packetize to about 1200 bytes). A larger one is dropped (`Oversized`): str0m
/// cannot send it behind a subscriber's header extensions (its packets are at most 2000
/// bytes and it panics beyond), and ICE-TCP frames, up to 64 KiB, do not bound it.
/// Forwarded, a payload of this size leaves 512 bytes for the subscriber's RTP header and
/// a retransmission's original sequence number: a dependency descriptor (at most 255
/// bytes), a mid (at most 16) and the other extensions fit.
pub(super) const MAX_FORWARDED_PAYLOAD: usize = 1500 - 12;

/// When the oldest datagram waiting in the shard's pacer of a shaped link came (it holds
/// the video of all its streams), for its stream on m-line `mid`; not the floor video's
/// sent past the pacers, which never waits there.
pub(super) fn shaped_since(
    pacer: &Option<Pacer>,
    downlink: &Downlink,
    mid: Mid,
) -> Option<Instant> {
    pacer
        .as_ref()
        .filter(|_| downlink.shape.rate.is_some() && downlink.unpaced != Some(mid))
        .and_then(Pacer::oldest)
}

/// Whether a subscriber's stream holds a packet unsent too long: longer than
/// [`MAX_PACER_DELAY`] in str0m's pacer, or than [`SHAPED_MAX_DELAY`] in the shard's
/// since `shaped` (its link shaped).
pub(super) fn backlogged(tx: &mut StreamTx, shaped: Option<Instant>, now: Instant) -> bool {
    let waited = |at: Instant| now.saturating_duration_since(at);
    let unsent = tx.queue_info().and_then(|q| q.first_unsent());
    unsent.is_some_and(|at| waited(at) > MAX_PACER_DELAY)
        || shaped.is_some_and(|at| waited(at) > SHAPED_MAX_DELAY)
}

impl Shard {
    /// Sends one incoming RTP packet to every subscriber of its track that receives its
    /// layer now, or switches to it at this packet (a keyframe's first).
    pub(super) fn forward(&mut self, from: ParticipantId, packet: RtpPacket) {
        if packet.payload.len() > MAX_FORWARDED_PAYLOAD {
            self.counters.drop(DropReason::Oversized);
            return;
        }
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let delays = &mut self.counters.milestones;
        p.milestones
            .reach(Milestone::FirstReceived, self.now, delays);
        let ssrc = packet.header.ssrc;
        let found = match p.ssrc_tracks.iter().find(|(s, _, _)| *s == ssrc) {
            Some((_, t, l)) => Some((*t, *l)),
            None => {
                let rx = p
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|rx| (rx.mid(), rx.rid()));
                let found = rx.and_then(|(mid, rid)| {
                    let pb = p.publications.iter().find(|pb| pb.mid == mid)?;
                    let track = self.tracks.get(&pb.track_id)?;
                    let layer = if track.layers.len() == 1 {
                        0
                    } else {
                        // A rid the client did not list in `layers` is not forwarded.
                        track
                            .layers
                            .iter()
                            .position(|l| l.rid.is_some() && l.rid == rid)?
                    };
                    Some((pb.track_id, layer as u8))
                });
                if let Some((t, l)) = found {
                    p.ssrc_tracks.push((ssrc, t, l));
                }
                found
            }
        };
        let Some((track_id, layer)) = found else {
            self.counters.drop(DropReason::Undeclared);
            return;
        };
        let Some(track) = self.tracks.get_mut(&track_id) else {
            self.counters.drop(DropReason::Undeclared);
            return;
        };
        if track.held {
            self.counters.drop(DropReason::Muted);
            return;
        }
        let pt_in = packet.header.payload_type;
        let params: Option<PayloadParams> = p
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|x| x.pt() == pt_in)
            .copied();
        let clock_hz = params.map_or(90_000, |x| x.spec().clock_rate.get());
        let video = track.info.kind == Kind::Video;
        let codec = params.map(|x| x.spec().codec);
        if let Some(prefix) = &self.config.tap
            && p.room.starts_with(prefix.as_str())
        {
            self.outputs.push_back(ShardOutput::Tap(TapRecord {
                track_id,
                participant_id: from,
                kind: track.info.kind,
                codec,
                ssrc,
                seq: packet.header.sequence_number,
                ts: packet.header.timestamp,
                marker: packet.header.marker,
                rid: track.layers.get(usize::from(layer)).and_then(|l| l.rid),
                payload: packet.payload.clone(),
            }));
        }
        // str0m hands the payload over shared (an `Arc`): every subscriber's write clones
        // the pointer, not the bytes.
        let payload = packet.payload;
        // Where the packet sits in its stream's layers: from the dependency descriptor
        // where negotiated (nothing of the payload read), else from a VP9 descriptor.
        let dd = packet.header.ext_vals.user_values.get::<DdBytes>().cloned();
        let mut info: Option<LayerInfo> = None;
        if video {
            if let Some(dd) = &dd {
                match parse_dd(&dd.0, &mut track.layers[usize::from(layer)].dd) {
                    Ok(i) => {
                        self.counters.dd_read += 1;
                        info = Some(i);
                    }
                    Err(e) => {
                        self.counters.dd_unreadable += 1;
                        debug!(track = %track_id, ?e, "dependency descriptor not understood");
                    }
                }
            }
            if info.is_none() && codec == Some(Codec::Vp9) {
                info = vp9_layers(&payload);
            }
            if let Some(i) = &info {
                track.learn_layers(i, self.now);
            }
        }
        // From the descriptor's attached structure, or from the payload where it can be
        // read (a publisher need not attach the structure to every keyframe).
        let payload_keyframe = video && codec.is_some_and(|c| keyframe_start(c, &payload));
        let keyframe = !video || payload_keyframe || info.is_some_and(|i| i.keyframe);
        if payload_keyframe && dd.is_some() && !info.is_some_and(|i| i.keyframe) {
            debug!(track = %track_id, layer, "keyframe without a dependency structure");
        }
        let vp8 = (codec == Some(Codec::Vp8))
            .then(|| Vp8Descriptor::parse(&payload).ok())
            .flatten();
        // Its temporal layer in a simulcast layer (an SVC stream's are not thinned): by
        // the dependency descriptor, else by the VP8 payload descriptor.
        let picture = if !video || track.svc {
            None
        } else if let (Some(dd), Some(i)) = (&dd, info) {
            dd_frame_number(&dd.0).map(|frame| Picture::Frame {
                frame,
                temporal: i.temporal,
                refs: track.layers[usize::from(layer)]
                    .dd
                    .as_ref()
                    .and_then(|s| frame_deps(&dd.0, s))
                    .map(|f| f.refs),
            })
        } else {
            vp8.and_then(|_| temporal(&payload)).map(Picture::Vp8)
        };
        if !video {
            track.speech.packet(packet.header.ext_vals.audio_level);
        }
        let svc = track.svc;
        // An SVC packet's layer is its spatial layer (its stream is the first's).
        let spatial = info.map_or(0, |i| i.spatial.min(track.layers.len() as u8 - 1));
        let layer = if svc { spatial } else { layer };
        let l = &mut track.layers[usize::from(layer)];
        l.rate.add(payload.len());
        l.last_packet = Some(self.now);
        l.stalled_at = None;
        if let Some(p) = &picture {
            l.count_temporal(p.temporal(), payload.len());
        }
        if keyframe {
            let k = usize::from(track.keyframe_layer(layer));
            if std::mem::take(&mut track.layers[k].waiting) {
                debug!(track = %track_id, layer = k, "awaited keyframe arrived");
            }
        }
        let mut ext_vals = packet.header.ext_vals.clone();
        ext_vals.mid = None;
        ext_vals.rid = None;
        let svc_info = info.unwrap_or(LayerInfo {
            spatial,
            temporal: 0,
            start: false,
            end: false,
            keyframe,
        });
        for (sub_id, slot) in track.subscribers.iter() {
            let Some(sub) = self.participants.get_mut(sub_id) else {
                continue;
            };
            let Some(s) = sub.subscriptions.get_mut(*slot) else {
                continue;
            };
            let paused = s.current.is_none();
            let choice = if svc {
                select_svc(&mut s.current, s.target, &svc_info)
            } else {
                select(&mut s.current, s.target, layer, keyframe)
            };
            match (paused, s.current) {
                (true, None) => {
                    s.paused_at.get_or_insert(self.now);
                }
                (true, Some(_)) => {
                    let since = s.paused_at.take().unwrap_or(self.now);
                    s.resumed |= self.now.saturating_duration_since(since) > STALE_PAUSE;
                }
                (false, _) => {}
            }
            match choice {
                Select::Skip => {
                    if svc {
                        // Left out on purpose: the subscriber's numbering closes over it.
                        s.forwarder.skip(packet.seq_no);
                    }
                    continue;
                }
                Select::Forward => {}
                Select::Switch if svc => self.counters.layer_switches += 1,
                Select::Switch => {
                    debug!(participant = %sub_id, track = %track_id, layer, "switched");
                    s.forwarder.switch_source();
                    if let Some(d) = &vp8 {
                        s.vp8.switch_source(d);
                    }
                    s.frames.switch_source();
                    s.temporal.switch_source();
                    self.counters.layer_switches += 1;
                }
            }
            // A picture of a temporal layer its link cannot carry now: left out whole.
            if let Some(p) = picture
                && !s.temporal.pass(p, keyframe, packet.header.timestamp)
            {
                s.forwarder.skip(packet.seq_no);
                if let Some(d) = &vp8 {
                    s.vp8.skip_picture(d);
                }
                self.counters.thinned += 1;
                continue;
            }
            if !sub.rtc.is_connected() {
                self.counters.drop(DropReason::NotConnected);
                continue;
            }
            let pt_out = match s.pts.iter().find(|(i, _)| *i == pt_in) {
                Some((_, o)) => Some(*o),
                None => {
                    let matched = params.and_then(|x| sub.rtc.codec_config().match_params(x));
                    if let Some(m) = matched {
                        s.pts.push((pt_in, m.pt()));
                        if let (Some(rtx), Some(pacer)) = (m.resend(), sub.pacer.as_mut()) {
                            pacer.pace_payload_type(*rtx);
                        }
                    }
                    matched.map(|m| m.pt())
                }
            };
            let Some(pt_out) = pt_out else {
                self.counters.drop(DropReason::NoCodec);
                continue;
            };
            let shaped = shaped_since(&sub.pacer, &sub.downlink, s.mid()).filter(|_| video);
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(s.mid(), None) else {
                self.counters.drop(DropReason::NoStream);
                continue;
            };
            // Its pacer holds more than it can send (the estimate fell below a stream
            // that has no lower layer, or it stopped reading): stop feeding it; it
            // resumes at a keyframe once its queue has drained. (Before the forwarder
            // numbers the packet: a cut leaves no gap.)
            if backlogged(tx, shaped, self.now) {
                if let Some(cut) = s.current.take() {
                    debug!(participant = %sub_id, track = %track_id, "pacer backlog: cut");
                    s.cut = Some(cut);
                }
                self.counters.drop(DropReason::PacerBacklog);
                continue;
            }
            let decision = s.forwarder.decide(
                packet.seq_no,
                packet.header.timestamp,
                packet.timestamp,
                clock_hz,
            );
            let (seq_no, time) = match decision {
                Decision::Forward { seq_no, time } => (seq_no, time),
                Decision::Drop(reason) => {
                    self.counters.drop(reason);
                    continue;
                }
            };
            if !s.rtx_sized {
                s.rtx_sized = true;
                tx.set_rtx_cache(RTX_MAX_PACKETS, RTX_MAX_AGE, Some(RTX_MAX_RATIO));
            }

            // Above the layers it receives, the frame ends with the highest one it gets.
            let marker = packet.header.marker
                || (svc && svc_info.end && s.current == Some(svc_info.spatial));
            let mut ext = ext_vals.clone();
            if let Some(d) = dd.as_ref().and_then(|d| s.frames.rewrite(&d.0)) {
                ext.user_values.set(d);
            }
            let mut write = RtpWrite::new(pt_out, seq_no, time, packet.timestamp, payload.clone())
                .marker(marker)
                .ext_vals(ext)
                .nackable(video);
            if let Some(patch) = vp8.as_ref().and_then(|d| s.vp8.rewrite(d)) {
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            self.counters.rtp_forwarded += 1;
            let delays = &mut self.counters.milestones;
            sub.milestones
                .reach(Milestone::FirstForwarded, self.now, delays);
            if !sub.dirty {
                sub.dirty = true;
                self.dirty.push_back(*sub_id);
            }
        }
    }
}
