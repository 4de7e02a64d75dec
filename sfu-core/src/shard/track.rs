//! A published track and its layers: rates, pauses, stalls and keyframe waits.

use std::time::{Duration, Instant};

use protocol::{MAX_LAYERS, TrackInfo};
use str0m::media::{Mid, Rid};
use tracing::debug;

use super::subscription::Subscribers;
use crate::selection::{RateMeter, Speech};
use crate::svc::{DdStructure, LayerInfo};

/// A published track and who receives it.
pub(super) struct Track {
    pub(super) info: TrackInfo,
    pub(super) room: String,
    /// The publisher's m-line.
    pub(super) mid: Mid,
    /// Subscribers and their subscription's slot.
    pub(super) subscribers: Subscribers,
    /// One per simulcast layer, lowest first; one for a single stream; one per spatial
    /// layer of an SVC stream.
    pub(super) layers: Vec<Layer>,
    /// One stream of spatial layers (SVC), learnt from its packets: a subscriber receives
    /// the layers up to the one chosen for it, and they cannot be paused one by one.
    pub(super) svc: bool,
    /// Audio: how loud it has been lately.
    pub(super) speech: Speech,
    /// The publisher's place in the room's speaking order (0: spoke last), and whether it
    /// is the dominant speaker; refreshed every tick.
    pub(super) rank: usize,
    pub(super) dominant: bool,
    /// The layers last announced to the publisher as received (`layers`), a bit each.
    pub(super) announced: Option<u8>,
    /// An administrator muted it: nothing of it is forwarded until it is unmuted.
    pub(super) held: bool,
}

/// One simulcast layer (or the single stream) of a track.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) rid: Option<Rid>,
    pub(super) rate: RateMeter,
    pub(super) last_packet: Option<Instant>,
    /// The publisher was told nobody receives it.
    pub(super) paused: bool,
    /// Since when it is expected (published, or resumed): it may take a moment to start.
    pub(super) expected_since: Instant,
    /// Someone waits for its keyframe: ask the publisher, throttled, until it comes.
    pub(super) waiting: bool,
    pub(super) last_request: Option<Instant>,
    /// When a subscriber last received it or switched to it.
    pub(super) needed_at: Option<Instant>,
    /// Expected but silent since then (the publisher stopped sending it on its own, for
    /// lack of uplink or CPU): not chosen again for a while even when paused.
    pub(super) stalled_at: Option<Instant>,
    /// The dependency descriptor structure its stream last sent (the first layer's, for
    /// an SVC stream).
    pub(super) dd: Option<DdStructure>,
    /// Its pictures' bytes by temporal layer (halved now and then: the recent share of
    /// each), if its packets name their layers.
    pub(super) temporal_bytes: [u64; 4],
}

/// Default bitrates of simulcast layers not measured yet, lowest first, and of a single
/// video stream.
pub(super) const NOMINAL_LAYER_BPS: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000];

pub(super) const NOMINAL_VIDEO_BPS: u64 = 1_000_000;

pub(super) const NOMINAL_AUDIO_BPS: u64 = 40_000;

/// A layer's bytes by temporal layer are halved past this total: about 10 s of a
/// lowest layer, whose shares are the ones that matter (see `Layer::temporal_bytes`).
const TEMPORAL_BYTES_KEPT: u64 = 1 << 18;

/// A layer that sent nothing for this long is not chosen (unless paused by us).
pub(super) const LAYER_SILENCE: Duration = Duration::from_millis(1500);

/// A layer nobody receives is paused only after this long.
pub(super) const PAUSE_AFTER: Duration = Duration::from_secs(3);

/// A layer that stalled is tried again (resumed if someone wants it) after this long.
pub(super) const STALLED_RETRY: Duration = Duration::from_secs(10);

impl Track {
    /// A track just published by `info.participant_id` on its m-line `mid`, whose place
    /// in the room's speaking order is `rank`: its layers are `info.layers` (rids), or
    /// one stream.
    pub(super) fn new(info: TrackInfo, room: String, mid: Mid, rank: usize, now: Instant) -> Self {
        let layers = if info.layers.is_empty() {
            vec![Layer::new(None, now)]
        } else {
            info.layers
                .iter()
                .map(|r| Layer::new(Some(Rid::from(r.as_str())), now))
                .collect()
        };
        Track {
            info,
            room,
            mid,
            subscribers: Subscribers::default(),
            layers,
            svc: false,
            speech: Speech::default(),
            rank,
            dominant: false,
            announced: None,
            held: false,
        }
    }

    /// The layer whose keyframe a subscriber of `layer` waits for: an SVC stream's
    /// keyframes start in its first layer (and one request serves them all).
    pub(super) fn keyframe_layer(&self, layer: u8) -> u8 {
        if self.svc { 0 } else { layer }
    }

    /// Learns an SVC stream's layers from one of its packets: a single stream (no rids)
    /// that shows a spatial layer above the first is SVC, with that many layers (at most
    /// [`MAX_LAYERS`]).
    pub(super) fn learn_layers(&mut self, info: &LayerInfo, now: Instant) {
        if (self.layers.len() > 1 && !self.svc) || self.layers[0].rid.is_some() {
            return;
        }
        let described = self.layers[0]
            .dd
            .as_ref()
            .map_or(1, DdStructure::spatial_layers);
        let count = usize::from(described.max(info.spatial + 1)).min(MAX_LAYERS);
        if count > self.layers.len() {
            self.svc = true;
            while self.layers.len() < count {
                self.layers.push(Layer::new(None, now));
            }
            debug!(track = %self.info.track_id, layers = count, "SVC stream");
        }
    }
}

impl Layer {
    pub(super) fn new(rid: Option<Rid>, now: Instant) -> Self {
        Layer {
            rid,
            rate: RateMeter::default(),
            last_packet: None,
            paused: false,
            expected_since: now,
            waiting: false,
            last_request: None,
            stalled_at: None,
            needed_at: None,
            dd: None,
            temporal_bytes: [0; 4],
        }
    }

    /// A packet of `len` bytes of temporal layer `tid` arrived (the few streams with
    /// more than four count their upper layers as the fourth).
    pub(super) fn count_temporal(&mut self, tid: u8, len: usize) {
        let bytes = &mut self.temporal_bytes;
        bytes[usize::from(tid.min(3))] += len as u64;
        if bytes.iter().sum::<u64>() > TEMPORAL_BYTES_KEPT {
            for b in bytes.iter_mut() {
                *b /= 2;
            }
        }
    }

    /// Every other `TICK` (`secs` apart): its rate is measured, and one expected but
    /// silent for `LAYER_SILENCE` is marked stalled.
    pub(super) fn tick(&mut self, now: Instant, secs: f64) {
        if self.paused {
            return;
        }
        self.rate.tick(secs);
        let silent = |at: Instant| now.saturating_duration_since(at) >= LAYER_SILENCE;
        if self.last_packet.is_none_or(silent)
            && silent(self.expected_since)
            && self.stalled_at.is_none()
        {
            self.stalled_at = Some(now);
        }
    }

    /// Whether its packets arrive now.
    pub(super) fn arriving(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_SILENCE)
    }

    /// Whether a subscriber may be given this layer: it arrives, or will once asked.
    pub(super) fn usable(&self, now: Instant) -> bool {
        let recent = |t: Instant| now.saturating_duration_since(t) < LAYER_SILENCE;
        let resumable = self
            .stalled_at
            .is_none_or(|at| now.saturating_duration_since(at) >= STALLED_RETRY);
        (self.paused && resumable)
            || self.last_packet.is_some_and(recent)
            || recent(self.expected_since)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use protocol::{ParticipantId, Source, TrackId, TrackInfo};

    use super::*;

    /// A track of `source` by participant `owner`, with these rids (none: one stream),
    /// at place `rank` in its room's speaking order.
    pub(in crate::shard) fn track(owner: u64, source: Source, rids: &[&str], rank: usize) -> Track {
        let info = TrackInfo {
            track_id: TrackId(owner * 10 + source as u64),
            participant_id: ParticipantId(owner),
            kind: source.kind(),
            source,
            muted: false,
            layers: rids.iter().map(|r| r.to_string()).collect(),
        };
        Track::new(info, "room".into(), Mid::from("0"), rank, Instant::now())
    }

    #[test]
    fn a_layer_silent_for_a_while_is_marked_stalled_unless_paused() {
        let mut t = track(1, Source::Camera, &["q", "h", "f"], 0);
        let start = t.layers[0].expected_since;
        let secs = 0.2;
        t.layers[0].last_packet = Some(start);
        t.layers[2].paused = true;
        let later = start + LAYER_SILENCE;
        for l in &mut t.layers {
            l.tick(later, secs);
        }
        // Expected since it was published at `start`, silent since: stalled. A paused
        // layer is not expected to send.
        assert!(t.layers.iter().take(2).all(|l| l.stalled_at == Some(later)));
        assert_eq!(t.layers[2].stalled_at, None);
        // A stalled layer is not usable until STALLED_RETRY passed, and then only if
        // paused (resumable on request).
        assert!(!t.layers[1].usable(later));
        assert!(t.layers[2].usable(later));
    }
}
