//! How fast a participant without str0m's pacer (a viewer) is sent to.

use std::cmp::Reverse;

use protocol::ParticipantId;

use super::Shard;
use super::output::{Counters, emit};
use super::participant::Downlink;
use crate::forwarder::DropReason;
use crate::pacer::Pacer;

/// How fast a participant without a str0m pacer is sent to: this many times what it
/// should receive (its loss-based estimate, else everything it is shown at the best
/// layer), so that a burst of retransmissions goes out over a few frame intervals, not
/// at once. (libwebrtc paces at 2.5 times its estimate too.)
pub(super) const PACE_FACTOR: f64 = 2.5;

/// What a participant is paced at, however little it is shown (its first keyframe is
/// not held back before its layers are known).
pub(super) const PACE_MIN_BPS: u64 = 1_000_000;

/// The rate its pacer lets a participant's video through (bit/s), from its estimate and
/// what it should get.
pub(super) fn pace_rate(downlink: &Downlink) -> u64 {
    // (A link whose losses proved its rate: at that rate, `shaping.rs`.)
    if let Some(rate) = downlink.shape.rate {
        return rate;
    }
    let should_get = downlink
        .estimate
        .unwrap_or(downlink.ideal_bps)
        .max(downlink.chosen_bps);
    (should_get.max(PACE_MIN_BPS) as f64 * PACE_FACTOR) as u64
}

/// Counts what `pacer` (participant `id`'s) dropped for waiting too long since asked.
pub(super) fn count_expired(counters: &mut Counters, pacer: &mut Pacer, id: ParticipantId) {
    let expired = pacer.take_expired();
    if expired > 0 {
        tracing::trace!(participant = %id, expired, "shaping pacer: dropped what waited");
        counters.drop_many(DropReason::PacerBacklog, expired);
    }
}

impl Shard {
    /// Its pacer's time came: what may leave now goes, and the next release is queued.
    pub(super) fn release_paced(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let rate = pace_rate(&p.downlink);
        let Some(pacer) = p.pacer.as_mut() else {
            return;
        };
        let (counters, outputs) = (&mut self.counters, &mut self.outputs);
        let sent = &mut p.downlink.sent;
        p.pace_at = pacer.release(self.now, rate, |t| {
            sent.add(t.contents.len());
            emit(counters, outputs, t);
        });
        count_expired(counters, pacer, id);
        if let Some(at) = p.pace_at {
            self.timers.push(Reverse((at, id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_are_paced_at_two_and_a_half_times_what_they_should_get() {
        let mut downlink = Downlink {
            ideal_bps: 2_000_000,
            chosen_bps: 1_500_000,
            ..Downlink::default()
        };
        // No estimate: what it would get with bandwidth to spare.
        assert_eq!(pace_rate(&downlink), 5_000_000);
        // An estimate below what was chosen: what was chosen.
        downlink.estimate = Some(1_000_000);
        assert_eq!(pace_rate(&downlink), 3_750_000);
        // Shown little: at least the minimum, so a first keyframe is not held back.
        let idle = Downlink::default();
        assert_eq!(pace_rate(&idle), (PACE_MIN_BPS as f64 * PACE_FACTOR) as u64);
    }
}
