//! How the shard steers a subscriber's bandwidth estimator: the padding and the probing
//! it asks str0m for, so that the estimate can find room for the next layer up, without
//! costing a thin link's audio.

use protocol::ParticipantId;
use str0m::bwe::Bitrate;

use super::Shard;
use super::track::NOMINAL_AUDIO_BPS;
use crate::selection::UP_HEADROOM;

/// What one choice of layers left a subscriber with (bit/s).
#[derive(Debug, Clone, Copy)]
pub(super) struct Steering {
    pub(super) audio: u64,
    /// The videos chosen, and what it would receive with bandwidth to spare.
    pub(super) allocated: u64,
    pub(super) ideal: u64,
    /// What the cheapest step up costs, if any video is below what it wants.
    pub(super) step_up: Option<u64>,
    /// The floor holds (else the link could not carry even the floor video).
    pub(super) floor: bool,
    /// The floor is lifted and it is time to probe for it.
    pub(super) probe_floor: bool,
}

impl Shard {
    /// Tells participant `id`'s estimator what to look for: padding up to the next
    /// layer (never above the estimate), probing towards what it would receive with
    /// bandwidth to spare, both with the headroom going up needs (an estimate that stops
    /// at exactly what the next layer takes never lets it go up). A link that could not
    /// carry even the floor video is probed only for that, now and then, and padded no
    /// more than str0m does on its own: its audio must not lose to the probing.
    pub(super) fn steer_estimator(&mut self, id: ParticipantId, s: Steering) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let headroom = |bps: u64| (bps as f64 * UP_HEADROOM) as u64;
        let next = s.step_up.map(|step| s.audio + s.allocated + headroom(step));
        let (minimum, desired) = if s.floor {
            let desired = headroom(s.audio + s.ideal).max(NOMINAL_AUDIO_BPS);
            (next.map_or(0, |n| n.min(desired)), desired)
        } else {
            let desired = next.filter(|_| s.probe_floor).unwrap_or(s.audio);
            (0, desired.max(NOMINAL_AUDIO_BPS))
        };
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
    }
}
