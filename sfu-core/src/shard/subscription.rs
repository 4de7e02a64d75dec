//! Subscriptions: which track each of a participant's m-lines carries, and the
//! forwarder state that keeps an m-line's stream continuous across tracks.

use std::time::{Duration, Instant};

use protocol::{Kind, ParticipantId, Subscribe, TrackId};
use str0m::media::{MediaKind, Mid, Pt};

use rand::{Rng, RngExt};

use super::Shard;
use super::track::Track;
use crate::forwarder::Forwarder;
use crate::svc::FrameNumbers;
use crate::temporal::TemporalCap;
use crate::vp8::Vp8Continuity;

/// What an m-line's stream was at when its track went: continued by its next track.
pub(super) struct IdleStream {
    pub(super) forwarder: Forwarder,
    pub(super) vp8: Vp8Continuity,
    pub(super) frames: FrameNumbers,
}

/// A track this participant receives, on one of its m-lines.
pub(super) struct Subscription {
    /// Its m-line and track: fixed while it lives (the index names it by both).
    mid: Mid,
    track_id: TrackId,
    pub(super) forwarder: Forwarder,
    /// The publisher's payload type to ours, filled as packets arrive.
    pub(super) pts: Vec<(Pt, Pt)>,
    /// Its send stream's retransmission cache is sized (on the first packet forwarded).
    pub(super) rtx_sized: bool,
    /// The layer forwarded now (`None`: nothing flows), and the one chosen for it, which
    /// it switches to at that layer's next keyframe.
    pub(super) current: Option<u8>,
    pub(super) target: Option<u8>,
    /// The layer its view asked for at the last choice (`None`: not shown), before any
    /// hold: a change of it is the subscriber's doing, not the bandwidth's.
    pub(super) wanted: Option<u8>,
    /// VP8 picture ids and TL0PICIDX, continued across layers like sequence numbers.
    pub(super) vp8: Vp8Continuity,
    /// The temporal layers it forwards of its layer (all, unless the link is too thin
    /// for the floor video's whole lowest layer).
    pub(super) temporal: TemporalCap,
    /// Dependency descriptor frame numbers, likewise.
    pub(super) frames: FrameNumbers,
    /// Since when nothing of its track flows (`current` is `None`), as its packets
    /// passing by first found.
    pub(super) paused_at: Option<Instant>,
    /// It flows again after a pause longer than [`STALE_PAUSE`], and no receiver report
    /// came since: the next one may count what was lost before the pause (a receiver
    /// reports on a stream only while it receives it).
    pub(super) resumed: bool,
    /// The layer its pacer's backlog was last cut at: that layer's keyframe is asked for
    /// again only once the backlog drained.
    pub(super) cut: Option<u8>,
    /// Its receiver's latest report (when read, share lost): whether this stream's link
    /// is clean again (a round of reports may hold the audio's alone, over 5 s).
    pub(super) reported: Option<(Instant, f32)>,
}

/// A pause after which the first receiver report is not read (see
/// [`Subscription::resumed`]). Over a shorter one, the receiver goes on reporting.
pub(super) const STALE_PAUSE: Duration = Duration::from_secs(2);

impl Subscription {
    pub(super) fn mid(&self) -> Mid {
        self.mid
    }

    pub(super) fn track_id(&self) -> TrackId {
        self.track_id
    }
}

/// A participant's subscriptions, each in a slot that stays put while it lives (a track's
/// [`Subscribers`] name it by slot), and the streams of its idle m-lines. Only this
/// module adds or ends subscriptions, changing both sides of the index together.
#[derive(Default)]
pub(super) struct Subscriptions {
    slots: Vec<Option<Subscription>>,
    /// Forwarders of m-lines that carry nothing now, kept so that the stream continues
    /// when the m-line is given another track. At most one per m-line.
    idle: Vec<(Mid, IdleStream)>,
}

impl Subscriptions {
    pub(super) fn get(&self, slot: usize) -> Option<&Subscription> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut Subscription> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The subscriptions with their slots.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Subscription)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Subscription)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (i, s)))
    }

    /// The subscription on m-line `mid`, with its slot.
    pub(super) fn on(&self, mid: Mid) -> Option<(usize, &Subscription)> {
        self.iter().find(|(_, s)| s.mid == mid)
    }

    /// Adds a subscription of `track_id` on `mid`, going on with the stream the m-line
    /// carried before if it did; returns its slot.
    fn add(&mut self, mid: Mid, track_id: TrackId, rng: &mut impl Rng) -> usize {
        // An m-line that carried another track before goes on with its stream. Its VP8
        // picture ids and descriptor frame numbers go on too: a receiver takes pictures
        // numbered behind the last it decoded for old ones, and drops them (for minutes,
        // until the numbers catch up).
        let idle = match self.idle.iter().position(|(m, _)| *m == mid) {
            Some(i) => {
                let mut idle = self.idle.swap_remove(i).1;
                idle.forwarder.switch_source();
                idle.frames.switch_source();
                idle
            }
            None => IdleStream {
                forwarder: Forwarder::new(rng.random::<u16>() & 0x7fff),
                vp8: Vp8Continuity::default(),
                frames: FrameNumbers::default(),
            },
        };
        let s = Subscription {
            mid,
            track_id,
            forwarder: idle.forwarder,
            pts: Vec::new(),
            rtx_sized: false,
            paused_at: None,
            resumed: false,
            cut: None,
            reported: None,
            current: None,
            target: None,
            wanted: None,
            vp8: idle.vp8,
            temporal: TemporalCap::default(),
            frames: idle.frames,
        };
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(s);
                i
            }
            None => {
                self.slots.push(Some(s));
                self.slots.len() - 1
            }
        }
    }

    /// Ends the subscription in `slot`, keeping its stream for the m-line's next track.
    fn retire(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        self.idle.retain(|(m, _)| *m != s.mid);
        let idle = IdleStream {
            forwarder: s.forwarder,
            vp8: s.vp8,
            frames: s.frames,
        };
        self.idle.push((s.mid, idle));
    }
}

/// A track's subscribers, with the slot of each one's subscription: what the forwarding
/// hot path walks. Changed only in this module, with the subscribers' [`Subscriptions`].
#[derive(Default)]
pub(super) struct Subscribers(Vec<(ParticipantId, usize)>);

impl Subscribers {
    pub(super) fn iter(&self) -> std::slice::Iter<'_, (ParticipantId, usize)> {
        self.0.iter()
    }
}

impl Shard {
    /// Brings the participant's subscriptions in line with `subscribe`.
    pub(super) fn apply_subscribe(&mut self, id: ParticipantId, subscribe: &[Subscribe]) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let mut wanted: Vec<(Mid, TrackId)> = Vec::new();
        if !p.slot_mids.is_empty() {
            return; // The server fills its slots.
        }
        for x in subscribe {
            let mid = Mid::from(x.mid.as_str());
            let Some(track) = self.tracks.get(&x.track_id) else {
                continue; // Unpublished meanwhile; the m-line stays idle.
            };
            let sendable = p.rtc.media(mid).is_some_and(|m| {
                m.direction().is_sending()
                    && matches!(
                        (m.kind(), track.info.kind),
                        (MediaKind::Audio, Kind::Audio) | (MediaKind::Video, Kind::Video)
                    )
            });
            if track.room == p.room && track.info.participant_id != id && sendable {
                wanted.push((mid, x.track_id));
            }
        }
        self.set_subscriptions(id, &wanted);
        // Choose what flows; a subscriber whose transport is up gets keyframes asked for
        // now, one still connecting when it connects (a keyframe sent before is lost).
        self.choose_for(id);
        self.request_awaited_keyframes();
    }

    /// Makes the participant's subscriptions `wanted` (m-line, track), which must be
    /// m-lines it receives on of the track's kind. One no longer wanted ends, its
    /// forwarder kept for its m-line's next track; a new one goes on with the stream its
    /// m-line carried before.
    pub(super) fn set_subscriptions(&mut self, id: ParticipantId, wanted: &[(Mid, TrackId)]) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let dropped: Vec<(TrackId, usize)> = p
            .subscriptions
            .iter()
            .filter(|(_, s)| !wanted.contains(&(s.mid, s.track_id)))
            .map(|(slot, s)| (s.track_id, slot))
            .collect();
        for (track_id, slot) in dropped {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                t.subscribers.0.retain(|s| *s != (id, slot));
            }
            p.subscriptions.retire(slot);
        }
        for &(mid, track_id) in wanted {
            if p.subscriptions.on(mid).is_none() {
                let slot = p.subscriptions.add(mid, track_id, &mut self.rng);
                if let Some(t) = self.tracks.get_mut(&track_id) {
                    t.subscribers.0.push((id, slot));
                }
            }
        }
    }

    /// A track went: its subscribers' subscriptions of it end.
    pub(super) fn end_subscriptions_of(&mut self, track: &Track) {
        for (sub, slot) in track.subscribers.iter() {
            if let Some(s) = self.participants.get_mut(sub) {
                s.subscriptions.retire(*slot);
            }
        }
    }

    /// A participant went: the tracks it received no longer list it.
    pub(super) fn forget_subscriber(&mut self, id: ParticipantId, subscriptions: &Subscriptions) {
        for (slot, s) in subscriptions.iter() {
            if let Some(t) = self.tracks.get_mut(&s.track_id) {
                t.subscribers.0.retain(|x| *x != (id, slot));
            }
        }
    }
}
