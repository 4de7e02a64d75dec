//! The shard's timers: participants' `Rtc` deadlines and pacer releases in one heap, the
//! periodic tick (speakers, layer rates, choices, announcements, keyframe retries), the
//! removal of participants whose media stopped, and the next deadline the driver waits
//! for.

use std::cmp::Reverse;
use std::time::Instant;

use protocol::{LeaveReason, ParticipantId};
use tracing::{debug, info};

use super::Shard;
use super::speakers::TICK;

impl Shard {
    /// Hands each participant whose deadline (its `Rtc`'s or its pacer's) is due its
    /// timeout.
    pub(super) fn fire_due_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if p.pace_at == Some(at) {
                p.pace_at = None;
                self.release_paced(id);
            }
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if p.rtc_timeout != Some(at) {
                continue; // Stale: its deadline moved since (or a pacer's).
            }
            p.rtc_timeout = None;
            if let Err(e) = p.rtc.handle_input(str0m::Input::Timeout(now)) {
                debug!(participant = %id, "timeout refused: {e}");
            }
            self.mark_dirty(id);
        }
    }

    /// Removes the participants whose media sent nothing for `participant_timeout`.
    pub(super) fn expire_silent(&mut self, now: Instant) {
        let expired: Vec<(ParticipantId, LeaveReason)> = self
            .participants
            .iter()
            .filter(|(_, p)| p.media_deadline.is_some_and(|d| d <= now))
            .map(|(id, p)| (*id, p.lost_reason()))
            .collect();
        for (id, reason) in expired {
            info!(participant = %id, "no media for {:?}", self.config.participant_timeout);
            self.remove_participant(id, reason);
        }
    }

    /// Every `TICK`: who speaks and the speaking order; every other tick the layer rates,
    /// each participant's choice of what it receives and the layers announced to
    /// publishers; then awaited keyframes.
    pub(super) fn tick(&mut self) {
        self.ticks += 1;
        self.tick_speakers();
        if self.ticks.is_multiple_of(2) {
            let (now, secs) = (self.now, 2.0 * TICK.as_secs_f64());
            for t in self.tracks.values_mut() {
                for l in &mut t.layers {
                    l.tick(now, secs);
                }
            }
            self.tick_shaping(secs);
            let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
            for id in ids {
                self.age_remb(id);
                self.choose_for(id);
            }
            self.announce_layers();
        }
        self.request_awaited_keyframes();
    }

    /// Drops the stale entries of the timer heap (deadlines that moved since they were
    /// queued), which otherwise wait there until their time.
    pub(super) fn rebuild_timers(&mut self) {
        self.timers = self
            .participants
            .iter()
            .flat_map(|(id, p)| {
                [p.rtc_timeout, p.pace_at]
                    .into_iter()
                    .flatten()
                    .map(|at| Reverse((at, *id)))
            })
            .collect();
    }

    /// The earliest of the next tick (which also removes participants whose media
    /// stopped) and the participants' `Rtc` deadlines; stale timer entries are dropped.
    pub(super) fn next_deadline(&mut self) -> Instant {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self
                .participants
                .get(&id)
                .is_some_and(|p| p.rtc_timeout == Some(at) || p.pace_at == Some(at))
            {
                return at.min(self.next_tick);
            }
            self.timers.pop();
        }
        self.next_tick
    }
}
