//! What a simulated client sends: one synthetic RTP stream per audio m-line and per
//! simulcast layer, paced at 20 ms (audio) and 30 frames/s (video), each frame stamped
//! with its send time and sealed end to end before it is split into packets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};

use crate::client::{Role, Shared, Stats};
use crate::e2ee::Codec as FrameCodec;
use crate::frames::{Crypt, audio_frame, vp8_frame, vp8_packets};
use crate::mlines::Publication;

/// One synthetic RTP stream we send: an audio m-line, or one layer of a video m-line.
pub struct Outgoing {
    pub mid: Mid,
    /// The simulcast layer; `None` for audio and single-stream video.
    pub rid: Option<Rid>,
    pub pt: Pt,
    pub kind: MediaKind,
    /// Video bitrate of this stream, bits/s (unused for audio).
    pub bps: u64,
    pub seq: u64,
    pub frame: u64,
    /// The next video frame's VP8 picture id (15 bits).
    pub picture_id: u16,
    /// Video frames sent since the last keyframe.
    pub since_keyframe: u64,
    pub keyframe_due: bool,
    /// Whether it sends: a layer the server's `layers` message leaves out is paused, as
    /// a browser pauses an encoding (`RTCRtpEncodingParameters.active`).
    pub active: bool,
    /// Its track is muted: audio sends silence (as DTX does), video black frames, a tenth
    /// of the size.
    pub muted: bool,
    /// Where its RTP clock is zero.
    t0: Instant,
    pub next_send: Instant,
}

impl Outgoing {
    /// The streams of our published m-lines, once the media is connected: one per audio
    /// m-line and per simulcast layer (a single stream has no rid), those the server's
    /// last `layers` message left out paused.
    pub fn streams(
        rtc: &Rtc,
        publish: &[Publication],
        wanted_layers: &HashMap<Mid, Vec<Rid>>,
        role: &Role,
    ) -> Vec<Outgoing> {
        let mut streams = Vec::new();
        let params: Vec<(Pt, Codec)> = rtc
            .codec_config()
            .params()
            .iter()
            .map(|p| (p.pt(), p.spec().codec))
            .collect();
        let pt_of = |c: Codec| params.iter().find(|(_, x)| *x == c).map(|(pt, _)| *pt);
        let t0 = Instant::now();
        for p in publish {
            let pt = match p.kind {
                MediaKind::Audio => pt_of(Codec::Opus),
                MediaKind::Video => pt_of(Codec::Vp8),
            };
            let Some(pt) = pt else { continue };
            // One stream per layer; a single stream has no rid.
            let rids: Vec<Option<Rid>> = if p.layers.is_empty() {
                vec![None]
            } else {
                p.layers.iter().map(|r| Some(Rid::from(*r))).collect()
            };
            for (i, rid) in rids.into_iter().enumerate() {
                let active = match (rid, wanted_layers.get(&p.mid)) {
                    (Some(rid), Some(wanted)) => wanted.contains(&rid),
                    _ => true,
                };
                streams.push(Outgoing {
                    mid: p.mid,
                    rid,
                    pt,
                    kind: p.kind,
                    bps: role.video_layers_bps.get(i).copied().unwrap_or(0),
                    seq: 1,
                    frame: 0,
                    picture_id: rand::random::<u16>() & 0x7fff,
                    since_keyframe: 0,
                    keyframe_due: true,
                    active,
                    muted: false,
                    t0,
                    next_send: t0,
                });
            }
        }
        streams
    }
}

/// Sends what is due at `now` on every active stream (see [`send_media`]), counted in
/// `stats`.
#[allow(clippy::too_many_arguments)]
pub fn send_due(
    rtc: &mut Rtc,
    outgoing: &mut [Outgoing],
    role: &Role,
    talking: bool,
    shared: &Shared,
    now: Instant,
    crypt: &mut Crypt,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    for o in outgoing
        .iter_mut()
        .filter(|o| o.active && o.next_send <= now)
    {
        let (packets, bytes) = send_media(rtc, o, role, talking, shared.epoch, now, crypt)?;
        stats.packets_sent += packets;
        stats.bytes_sent += bytes;
        if now >= shared.measure_from {
            stats.window_packets_sent += packets;
        }
    }
    Ok(())
}

/// Sends what is due on one outgoing stream, each frame encrypted by `crypt` (unless the
/// run is in the clear) before it is split into packets; returns how many packets and
/// payload bytes.
fn send_media(
    rtc: &mut Rtc,
    o: &mut Outgoing,
    role: &Role,
    talking: bool,
    epoch: Instant,
    now: Instant,
    crypt: &mut Crypt,
) -> anyhow::Result<(u64, u64)> {
    let mut api = rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(o.mid, o.rid) else {
        o.next_send = now + Duration::from_millis(20);
        return Ok((0, 0));
    };
    let ns = now.duration_since(epoch).as_nanos() as u64;
    let talking = talking && !o.muted;
    match o.kind {
        MediaKind::Audio => {
            // Opus at 20 ms; while silent, DTX: one packet in 20.
            let ext = ExtensionValues {
                audio_level: Some(if talking {
                    role.voice.unwrap_or(-127)
                } else {
                    -127
                }),
                voice_activity: Some(talking),
                ..ExtensionValues::default()
            };
            let size = if talking { 80 } else { 10 };
            let time = (o.frame * 960) as u32;
            o.frame += if talking { 1 } else { 20 };
            o.next_send = now + Duration::from_millis(if talking { 20 } else { 400 });
            let frame = audio_frame(size, ns);
            let payload = crypt.seal(FrameCodec::Opus, &frame)?.to_vec();
            let bytes = payload.len() as u64;
            let write = RtpWrite::new(o.pt, SeqNo::from(o.seq), time, now, payload)
                .marker(true)
                .ext_vals(ext);
            tx.write_rtp(write);
            o.seq += 1;
            Ok((1, bytes))
        }
        MediaKind::Video => {
            let frames_between = (role.keyframe_interval.as_millis() as u64 * 30 / 1000).max(1);
            let keyframe = o.keyframe_due || o.since_keyframe >= frames_between;
            o.keyframe_due = false;
            o.since_keyframe = if keyframe { 1 } else { o.since_keyframe + 1 };
            let mut bytes = (o.bps / 8 / 30) as usize;
            if o.muted {
                bytes /= 10;
            }
            if keyframe {
                bytes *= 4;
            }
            let frame = vp8_frame(keyframe, bytes, ns);
            let sealed = crypt.seal(FrameCodec::Vp8, &frame)?;
            // 90 kHz from the frame's scheduled capture time: all layers of a frame share it.
            let time = (o.next_send.duration_since(o.t0).as_micros() * 9 / 100) as u32;
            let (mut packets, mut sent) = (0u64, 0u64);
            let mut payloads = vp8_packets(sealed, o.picture_id).peekable();
            while let Some(payload) = payloads.next() {
                sent += payload.len() as u64;
                let last = payloads.peek().is_none();
                let write = RtpWrite::new(o.pt, SeqNo::from(o.seq), time, now, payload)
                    .marker(last)
                    .nackable(true);
                tx.write_rtp(write);
                o.seq += 1;
                packets += 1;
            }
            o.frame += 1;
            o.picture_id = (o.picture_id + 1) & 0x7fff;
            o.next_send += Duration::from_micros(33_333);
            if o.next_send < now {
                o.next_send = now + Duration::from_micros(33_333);
            }
            Ok((packets, sent))
        }
    }
}
