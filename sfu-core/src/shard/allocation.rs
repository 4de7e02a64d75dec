//! What flows on each of a participant's subscriptions: which microphones, which
//! cameras at which layer, within its bandwidth estimate.

use std::time::Duration;

use protocol::{Kind, MAX_LAYERS, ParticipantId, Quality, TrackId};
use str0m::bwe::Bitrate;
use tracing::debug;

use super::Shard;
use super::shown::shown;
use super::track::{NOMINAL_AUDIO_BPS, NOMINAL_LAYER_BPS, NOMINAL_VIDEO_BPS};
use crate::selection::{self, VideoItem};

/// Where a subscriber's bandwidth estimate starts: enough for a 2.5 Mbit/s screen share
/// or a speaker and a dozen thumbnails. It grows as the estimator probes, and falls at
/// the first losses. (str0m paces each subscriber at 1.1 times its estimate.)
pub(super) const INITIAL_ESTIMATE_BPS: u64 = 3_000_000;

/// After a subscriber's layer went down for lack of bandwidth, nothing goes up for this
/// long. (Doubling it while falls recur kept receivers off the top layer for minutes
/// after the estimate's start-up swings, in Chromium.)
pub(super) const UPGRADE_HOLD: Duration = Duration::from_secs(8);

impl Shard {
    /// Chooses what flows on each of a participant's subscriptions: which microphones
    /// (all, or the loudest and the pinned in a large room), which cameras and at which
    /// layer (by importance, within its bandwidth estimate). Keyframes are awaited for
    /// the layers it must switch to.
    pub(super) fn choose_for(&mut self, id: ParticipantId) {
        self.fill_slots(id);
        let config = &self.config;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let now = self.now;
        let standing = room.standing(id, config.loudest_threshold);
        let mut items: Vec<VideoItem> = Vec::new();
        let mut slots: Vec<usize> = Vec::new();
        let mut audio_bps = 0;
        let mut ideal_bps = 0;
        for (slot, s) in p.subscriptions.iter_mut() {
            let Some(t) = self.tracks.get(&s.track_id()) else {
                continue;
            };
            let pinned = p.view.pinned.binary_search(&s.track_id()).is_ok();
            let order = shown(t, pinned, standing, config);
            if t.info.kind == Kind::Audio {
                s.target = order.map(|_| 0);
                if order.is_some() {
                    audio_bps += t.layers[0].rate.bps().unwrap_or(NOMINAL_AUDIO_BPS);
                }
                continue;
            }
            let top = t.layers.len() as u8 - 1;
            let cap = match p
                .view
                .quality
                .binary_search_by_key(&s.track_id(), |q| q.track_id)
                .map_or(Quality::High, |i| p.view.quality[i].quality)
            {
                Quality::Low => 0,
                Quality::Medium => top.min(1),
                Quality::High => top,
            };
            // Screens, pinned and the dominant speaker's camera at the top layer; in a
            // large room the other cameras as thumbnails.
            let (large, _) = standing;
            let wanted = order.map(|o| if o > 2 && large { 0 } else { top });
            let priority = order.unwrap_or(u32::MAX);
            let mut wanted = wanted.map(|w| w.min(cap));
            // Holding after a fall for lack of bandwidth: nothing goes up.
            if p.downlink.upgrade_hold.is_some_and(|until| now < until) {
                wanted = wanted.map(|w| w.min(s.current.unwrap_or(0)));
            }
            let mut item = VideoItem {
                priority,
                wanted,
                rates: [0; MAX_LAYERS],
                usable: [false; MAX_LAYERS],
                layers: top + 1,
                current: s.current,
            };
            let mut below = 0;
            for (i, l) in t.layers.iter().enumerate() {
                let rate = l.rate.bps().filter(|b| *b > 0).unwrap_or(if top > 0 {
                    NOMINAL_LAYER_BPS[i]
                } else {
                    NOMINAL_VIDEO_BPS
                });
                // An SVC layer comes with every layer below it.
                item.rates[i] = below + rate;
                if t.svc {
                    below += rate;
                }
                item.usable[i] = top == 0 || l.usable(now);
            }
            if let Some(w) = wanted {
                ideal_bps += item.rates[usize::from(w)];
            }
            items.push(item);
            slots.push(slot);
        }
        let budget = p.downlink.estimate.map(|e| e.saturating_sub(audio_bps));
        let targets = selection::allocate(budget, &items);
        // A video that went down (or paused) while still wanted higher fell for lack of
        // bandwidth: hold every upgrade for a while (an estimate that climbs back only to
        // fall again would otherwise switch up and down).
        let fell = items.iter().zip(&targets).any(|(it, t)| {
            it.current
                .is_some_and(|c| t.is_none_or(|t| t < c) && it.wanted.is_some_and(|w| w >= c))
        });
        if fell {
            p.downlink.upgrade_hold = Some(now + UPGRADE_HOLD);
            debug!(participant = %id, "layer down for bandwidth: upgrades held");
        }
        let (allocated, step_up) = selection::next_step(&items, &targets);
        p.downlink.chosen_bps = audio_bps + allocated;
        p.downlink.ideal_bps = audio_bps + ideal_bps;
        p.downlink.lowest_bps = audio_bps
            + items
                .iter()
                .filter(|it| it.wanted.is_some())
                .map(|it| it.rates[0])
                .sum::<u64>();
        let connected = p.rtc.is_connected();
        let mut awaited: Vec<(TrackId, u8)> = Vec::new();
        for (slot, target) in slots.into_iter().zip(targets) {
            if let Some(s) = p.subscriptions.get_mut(slot) {
                s.target = target;
                // (An SVC stream goes down at any picture; only up needs a keyframe.)
                let svc = self.tracks.get(&s.track_id()).is_some_and(|t| t.svc);
                if let Some(l) = target
                    && connected
                    && s.current != target
                    && (!svc || s.current.is_none_or(|c| l > c))
                {
                    awaited.push((s.track_id(), l));
                }
            }
        }
        // Let the estimator find out whether the next layer up fits: padding up to it
        // (never above the estimate), and probing towards what this subscriber would
        // receive with bandwidth to spare.
        let desired = (audio_bps + ideal_bps).max(NOMINAL_AUDIO_BPS);
        let minimum = step_up.map_or(0, |step| (audio_bps + allocated + step).min(desired));
        let differs = |a: u64, b: u64| a.abs_diff(b) > b / 10;
        if differs(desired, p.downlink.bwe_bitrates.1)
            || differs(minimum, p.downlink.bwe_bitrates.0)
        {
            p.downlink.bwe_bitrates = (minimum, desired);
            p.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            self.mark_dirty(id);
        }
        for (track_id, layer) in awaited {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                let layer = usize::from(t.keyframe_layer(layer));
                if let Some(l) = t.layers.get_mut(layer) {
                    l.waiting = true;
                }
            }
        }
    }
}
