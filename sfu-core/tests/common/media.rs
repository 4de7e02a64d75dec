//! Synthetic media that publishers send: audio with levels, VP8 simulcast frames, SVC
//! pictures marked by VP9 descriptors or dependency descriptors.

use std::time::Instant;

use protocol::Kind;
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};

use super::*;

/// How publishers send video: packets per frame and bytes per packet, per layer.
#[derive(Debug, Clone, Copy)]
pub struct VideoShape {
    pub packets: [usize; 3],
    pub bytes: [usize; 3],
    /// A frame every this many steps of `STEP` (8: 25 frames a second).
    pub frame_every: u64,
    /// Each layer's frames in three temporal layers, as libwebrtc sends VP8 (TL0, TL2,
    /// TL1, TL2, ...; the first TL1 and TL2 after a TL0 sync), a picture id and a
    /// TL0PICIDX each; the frames of TL0 and TL1 twice as large as those of TL2.
    pub temporal: bool,
    /// A keyframe takes this many times a frame's packets (a browser's are several
    /// times larger than the frames that follow).
    pub keyframe_scale: usize,
}

impl Default for VideoShape {
    /// About 200 kbit/s, 400 kbit/s and 1 Mbit/s.
    fn default() -> Self {
        VideoShape {
            packets: [1, 2, 5],
            bytes: [1000, 1000, 1000],
            frame_every: 8,
            temporal: false,
            keyframe_scale: 1,
        }
    }
}

/// Light video: one small packet per frame and layer, so that many cameras fit anywhere.
pub const THUMBNAILS: VideoShape = VideoShape {
    packets: [1, 1, 1],
    bytes: [200, 300, 400],
    frame_every: 8,
    temporal: false,
    keyframe_scale: 1,
};

/// How an SVC publisher marks its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    /// VP9 payload descriptors with layer indices (RFC 9628).
    Vp9,
    /// Dependency descriptors (an L3T1 structure on keyframes); payloads opaque.
    Dd,
}

/// Spatial layers of an SVC publisher.
pub const SVC_LAYERS: u8 = 3;

/// Writes bits, most significant first.
#[derive(Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    pub(crate) fn put(&mut self, n: usize, v: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            *self.bytes.last_mut().expect("a byte") |= bit << (7 - self.bits % 8);
            self.bits += 1;
        }
    }
}

/// A dependency descriptor of an L3T1 stream (template id = spatial layer), with the
/// template structure on a keyframe's first packet.
pub fn dd_l3t1(spatial: u8, start: bool, end: bool, frame: u16, keyframe: bool) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.put(1, start.into());
    w.put(1, end.into());
    w.put(6, spatial.into());
    w.put(16, frame.into());
    if keyframe && start && spatial == 0 {
        w.put(1, 1); // template_dependency_structure_present_flag
        w.put(4, 0); // active decode targets, custom dtis, fdiffs, chains: none
        w.put(6, 0); // template_id_offset
        w.put(5, u32::from(SVC_LAYERS - 1)); // a decode target per spatial layer
        for _ in 1..SVC_LAYERS {
            w.put(2, 2); // the next template is of the next spatial layer
        }
        w.put(2, 3); // no more templates
        for t in 0..SVC_LAYERS {
            for d in 0..SVC_LAYERS {
                w.put(2, if d >= t { 3 } else { 0 }); // required, or not present
            }
        }
        for _ in 0..SVC_LAYERS {
            w.put(1, 0); // no frame diffs
        }
        w.put(2, 0); // ns(DtCnt + 1) = 0: no chains
        w.put(1, 0); // no resolutions
    }
    w.bytes
}

/// One step of a publisher: an audio packet every 20 ms, a video frame on each layer the
/// server wants (all of them before its first `layers`) every `frame_every` steps.
pub(crate) fn send_media(c: &mut Client, now: Instant, step: u64, video: &VideoShape) {
    let opus = c.pt(Codec::Opus);
    let vp8 = c.pt(Codec::Vp8);
    for (mid, source) in c.publish.clone() {
        let audio = source.kind() == Kind::Audio;
        if !step.is_multiple_of(if audio { 4 } else { video.frame_every }) {
            continue;
        }
        if let (false, Some(svc)) = (audio, c.svc) {
            send_svc_picture(c, now, step, video, mid, svc);
            continue;
        }
        let rids = c.layers.get(&mid).cloned().unwrap_or_default();
        let track = c.own_tracks.get(&mid).copied();
        let wanted = track.and_then(|t| c.sending.get(&t)).cloned();
        for layer in 0..rids.len().max(1) {
            let rid = rids.get(layer).map(|r| Rid::from(r.as_str()));
            if let (Some(r), Some(wanted)) = (rids.get(layer), &wanted)
                && !wanted.contains(r)
            {
                continue; // Paused by the server.
            }
            let key = (mid, layer as u8);
            let keyframe = std::mem::replace(c.keyframe_due.entry(key).or_insert(true), false);
            let picture = step / video.frame_every;
            // TL0, TL2, TL1, TL2: the base layer's frames and TL1's twice as large.
            let tid = if keyframe {
                0
            } else {
                [0u8, 2, 1, 2][(picture % 4) as usize]
            };
            let mut count = if audio { 1 } else { video.packets[layer] };
            if !audio && video.temporal && tid < 2 {
                count *= 2;
            }
            if !audio && keyframe {
                count *= video.keyframe_scale;
            }
            for k in 0..count {
                let seq = c.next_seq.entry(key).or_insert(1);
                let mut payload = Vec::new();
                let (pt, clock) = if audio {
                    (opus, 960)
                } else {
                    // X=1, S at a frame's first packet, PID=0; I=1 with a 15-bit picture id;
                    // the payload header's P bit clear on a keyframe.
                    let start = if k == 0 { 0x10 } else { 0 };
                    let p_bit = if keyframe && k == 0 { 0 } else { 1 };
                    if video.temporal {
                        // I=1 L=1 T=1: picture id, TL0PICIDX, TID and Y.
                        let sync = picture % 4 != 3;
                        payload.extend_from_slice(&[
                            0x80 | start,
                            0xe0,
                            0x80 | ((picture >> 8) & 0x7f) as u8,
                            picture as u8,
                            (picture / 4) as u8,
                            (tid << 6) | if sync { 0x20 } else { 0 },
                            p_bit,
                            layer as u8,
                        ]);
                    } else {
                        payload.extend_from_slice(&[
                            0x80 | start,
                            0x80,
                            0x80,
                            0x01,
                            p_bit,
                            layer as u8,
                        ]);
                    }
                    let head = payload.len();
                    payload.resize(video.bytes[layer].saturating_sub(8).max(head), 0);
                    (vp8, 3600)
                };
                payload.extend_from_slice(&seq.to_be_bytes());
                let frame = if audio {
                    *seq
                } else {
                    step / video.frame_every
                };
                let exts = ExtensionValues {
                    audio_level: audio.then_some(c.level),
                    voice_activity: audio.then_some(c.level > -127),
                    ..ExtensionValues::default()
                };
                let mut api = c.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
                    continue;
                };
                tx.write_rtp(
                    RtpWrite::new(pt, SeqNo::from(*seq), (frame as u32) * clock, now, payload)
                        .marker(k + 1 == count)
                        .ext_vals(exts)
                        .nackable(!audio),
                );
                *seq += 1;
            }
        }
    }
}

/// One picture of an SVC camera: a frame of each spatial layer, `video.packets[s]`
/// packets each, in one stream (one sequence); the marker on the picture's last packet.
pub(crate) fn send_svc_picture(
    c: &mut Client,
    now: Instant,
    step: u64,
    video: &VideoShape,
    mid: Mid,
    svc: Svc,
) {
    let pt = c.pt(match svc {
        Svc::Vp9 => Codec::Vp9,
        Svc::Dd => Codec::Vp8,
    });
    let key = (mid, 0);
    let keyframe = std::mem::replace(c.keyframe_due.entry(key).or_insert(true), false);
    let picture = step / video.frame_every;
    for spatial in 0..SVC_LAYERS {
        let count = video.packets[usize::from(spatial)];
        for k in 0..count {
            let (start, end) = (k == 0, k + 1 == count);
            let seq = c.next_seq.entry(key).or_insert(1);
            let mut exts = ExtensionValues::default();
            let mut payload = match svc {
                Svc::Vp9 => {
                    // I=1 (15-bit picture id), P (inter-picture) unless a keyframe, L=1,
                    // B and E at the layer frame's ends; TID 0, SID, D for layers above 0;
                    // TL0PICIDX; byte 5 (our layer mark) is payload.
                    let p = if keyframe { 0 } else { 0x40 };
                    let b = if start { 0x08 } else { 0 };
                    let e = if end { 0x04 } else { 0 };
                    let d = u8::from(spatial > 0);
                    vec![
                        0x80 | p | 0x20 | b | e,
                        0x80 | (picture >> 8) as u8 & 0x7f,
                        picture as u8,
                        (spatial << 1) | d,
                        picture as u8,
                        spatial,
                    ]
                }
                Svc::Dd => {
                    let dd = dd_l3t1(spatial, start, end, picture as u16, keyframe);
                    exts.user_values.set(sfu_core::svc::DdBytes(dd.into()));
                    // Opaque (encrypted) bytes, but for our layer mark in byte 5.
                    vec![0xff, 0xff, 0xff, 0xff, 0xff, spatial]
                }
            };
            payload.resize(
                video.bytes[usize::from(spatial)].saturating_sub(8).max(6),
                0xee,
            );
            payload.extend_from_slice(&seq.to_be_bytes());
            let mut api = c.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return;
            };
            tx.write_rtp(
                RtpWrite::new(pt, SeqNo::from(*seq), (picture as u32) * 3600, now, payload)
                    .marker(end && spatial + 1 == SVC_LAYERS)
                    .ext_vals(exts)
                    .nackable(true),
            );
            *seq += 1;
        }
    }
}
