//! How the shard steers a subscriber's bandwidth estimator: the padding and the probing
//! it asks str0m for, so that the estimate can find room for the next layer up, without
//! costing a thin link's audio, or its media when the padding overruns a policer.

use std::time::Duration;

use protocol::ParticipantId;
use str0m::bwe::Bitrate;
use tracing::debug;

use super::Shard;
use super::track::NOMINAL_AUDIO_BPS;
use crate::adaptation::DOWN_LOSS;
use crate::selection::UP_HEADROOM;

/// Padding that comes with losses of the media over [`DOWN_LOSS`] stops for this long,
/// twice as long each time it does so again, up to [`PAD_OFF_MAX`]; back to this once
/// [`PAD_OFF_MAX`] passed without. (A policer drops what overruns it, and small padding
/// packets use up its tokens before a picture's large ones come: the media loses a
/// third while the link as a whole loses a few percent, too few for the estimate.)
pub(super) const PAD_OFF: Duration = Duration::from_secs(10);

/// While padding is off, nothing finds out that the link recovered (str0m's probes do
/// not lift an estimate its loss-based controller holds): a video paused meanwhile waits
/// this long at worst. (At 80 s, one paused on a policed link stayed paused half a
/// minute after the policer went.)
pub(super) const PAD_OFF_MAX: Duration = Duration::from_secs(20);

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
    /// What the floor video lacks to flow whole, if the link carries it only thinned
    /// (or past the budget).
    pub(super) short: Option<u64>,
    /// Time to probe for room that padding may not look for: what the floor video lacks,
    /// or the next step up while padding is off.
    pub(super) probe: bool,
    /// The most its receiver reported its media lost lately.
    pub(super) loss: Option<f32>,
}

impl Shard {
    /// Tells participant `id`'s estimator what to look for: padding up to the next
    /// layer (never above the estimate), probing towards what it would receive with
    /// bandwidth to spare, both with the headroom going up needs (an estimate that stops
    /// at exactly what the next layer takes never lets it go up). A link that could not
    /// carry even the floor video is probed only for that, now and then, and padded no
    /// more than str0m does on its own: its audio must not lose to the probing.
    pub(super) fn steer_estimator(&mut self, id: ParticipantId, s: Steering) {
        let now = self.now;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let media = s.audio + s.allocated;
        let padded = p.downlink.bwe_bitrates.0 > media + media / 20;
        let pad_off = &mut p.downlink.pad_off;
        if let Some((until, _)) = *pad_off
            && now.saturating_duration_since(until) >= PAD_OFF_MAX
        {
            *pad_off = None;
        }
        // (Armed only where it takes effect, and not again while it runs.)
        let running = pad_off.is_some_and(|(until, _)| now < until);
        if s.floor && padded && !running && s.loss.is_some_and(|l| l > DOWN_LOSS) {
            let off = pad_off.map_or(PAD_OFF, |(_, next)| next);
            *pad_off = Some((now + off, (off * 2).min(PAD_OFF_MAX)));
            debug!(participant = %id, ?off, loss = ?s.loss, "padding costs the media: off");
        }
        // (A link that could not carry the floor is probed on its own terms, below.)
        let quiet = s.floor && pad_off.is_some_and(|(until, _)| now < until);
        let headroom = |bps: u64| (bps as f64 * UP_HEADROOM) as u64;
        let next = s.step_up.map(|step| media + headroom(step));
        let (minimum, desired) = if quiet || (s.floor && s.short.is_some()) {
            // No padding: it cost the media, or it would take a policer's tokens from
            // the pictures of a floor video the link carries only thinned. str0m's
            // probes alone look for room, now and then: for the whole of that video if
            // thinned, else for the next step (a video paused meanwhile would otherwise
            // wait for the padding).
            let desired = s
                .short
                .or(s.step_up)
                .filter(|_| s.probe)
                .map_or(media, |step| media + headroom(step));
            (0, desired.max(NOMINAL_AUDIO_BPS))
        } else if s.floor {
            let desired = headroom(s.audio + s.ideal).max(NOMINAL_AUDIO_BPS);
            (next.map_or(0, |n| n.min(desired)), desired)
        } else {
            let probe = next.filter(|_| s.probe_floor);
            let desired = probe.unwrap_or(s.audio).max(NOMINAL_AUDIO_BPS);
            (probe.map_or(0, |_| desired), desired)
        };
        // A shaped link (`shaping.rs`) is padded and probed up to its rate alone: above
        // it, what a policer drops is the media's room, and the shaping climbs on its own.
        // (Padded to all of it: padded to 0.9 of it, a shaped rate climbed less, and a
        // fall from 1.6 to 0.9 x the lowest layer broke 6.5 s of 20 in half the sans-IO
        // runs, against one in five.)
        let (minimum, desired) = match p.downlink.shape.rate {
            Some(rate) => (minimum.min(rate), desired.min(rate).max(NOMINAL_AUDIO_BPS)),
            None => (minimum, desired),
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
