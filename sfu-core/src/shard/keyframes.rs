//! Keyframe requests to publishers: awaited per layer, throttled, repeated until the
//! keyframe comes.

use protocol::{Kind, ParticipantId, TrackId};
use str0m::media::KeyframeRequestKind;
use tracing::debug;

use super::Shard;

impl Shard {
    /// A participant asked for a keyframe of a track (`keyframe`, after a key change
    /// say): of the layer it receives, or of every layer its own track sends. Throttled
    /// and repeated like every request. Tracks it neither receives nor publishes,
    /// audio and unknown tracks are ignored.
    pub(super) fn keyframe_asked(&mut self, id: ParticipantId, track_id: TrackId) {
        let (Some(p), Some(track)) = (self.participants.get(&id), self.tracks.get(&track_id))
        else {
            return;
        };
        if track.room != p.room || track.info.kind != Kind::Video {
            return;
        }
        if track.info.participant_id == id {
            // A paused layer sends nothing that could carry a keyframe.
            let sending: Vec<u8> = (0..track.layers.len() as u8)
                .filter(|l| !track.layers[usize::from(*l)].paused)
                .collect();
            for layer in sending {
                self.want_keyframe(track_id, layer);
            }
            return;
        }
        let received = p
            .subscriptions
            .iter()
            .find(|(_, s)| s.track_id() == track_id)
            .and_then(|(_, s)| s.current.or(s.target));
        if let Some(layer) = received {
            self.want_keyframe(track_id, layer);
        }
    }

    /// Marks a layer of `track_id` as awaiting a keyframe and asks its publisher now if
    /// the throttle allows (otherwise a later tick does, until the keyframe arrives).
    pub(super) fn want_keyframe(&mut self, track_id: TrackId, layer: u8) {
        let Some(t) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let layer = t.keyframe_layer(layer);
        if let Some(l) = t.layers.get_mut(usize::from(layer)) {
            l.waiting = true;
        }
        self.request_keyframe(track_id, layer);
    }

    /// Asks for every awaited keyframe whose throttle interval has passed.
    pub(super) fn request_awaited_keyframes(&mut self) {
        let now = self.now;
        let interval = self.config.keyframe_interval;
        let due: Vec<(TrackId, u8)> = self
            .tracks
            .iter()
            .flat_map(|(id, t)| {
                t.layers.iter().enumerate().filter_map(move |(i, l)| {
                    let free = l.last_request.is_none_or(|at| now >= at + interval);
                    (l.waiting && free).then_some((*id, i as u8))
                })
            })
            .collect();
        for (track_id, layer) in due {
            self.request_keyframe(track_id, layer);
        }
    }

    /// Sends a keyframe request (PLI) for one layer of a track, at most one per layer per
    /// `keyframe_interval`.
    pub(super) fn request_keyframe(&mut self, track_id: TrackId, layer: u8) {
        let now = self.now;
        let interval = self.config.keyframe_interval;
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let Some(l) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if l.last_request.is_some_and(|at| now < at + interval) {
            return;
        }
        l.last_request = Some(now);
        let rid = l.rid;
        let owner = track.info.participant_id;
        let mid = track.mid;
        if let Some(p) = self.participants.get_mut(&owner)
            && let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, rid)
        {
            debug!(track = %track_id, layer, "keyframe requested");
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.counters.keyframe_requests += 1;
        }
        self.mark_dirty(owner);
    }
}
