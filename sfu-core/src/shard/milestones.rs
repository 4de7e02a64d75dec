//! How long a participant's call took to come up: from its join to its media path up (ICE
//! and DTLS connected), to the first media packet received from it, and to the first
//! forwarded to it. Each delay is recorded once per participant, in virtual time like
//! everything in the core, into [`Delays`], which the driver moves into its histograms.
//!
//! The clock starts when signaling handed the join to the media plane, if the driver says
//! when that was ([`Shard::count_join_from`]), so that the wait in the shard's command
//! queue counts; otherwise when the shard took the join.

use std::time::{Duration, Instant};

use protocol::ParticipantId;

use super::Shard;

/// A moment in a participant's call coming up, counted from its join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// ICE and DTLS connected: its media path is up (str0m's `Event::Connected`).
    Connected,
    /// The first RTP packet received (decrypted) from it: the others can start to hear
    /// or see it. Never reached by a participant that publishes nothing.
    FirstReceived,
    /// The first RTP packet forwarded to it: it starts to hear or see someone. Never
    /// reached by a participant alone in its call, or that subscribes to nothing.
    FirstForwarded,
}

impl Milestone {
    pub const ALL: [Milestone; 3] = [
        Milestone::Connected,
        Milestone::FirstReceived,
        Milestone::FirstForwarded,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Its flag in [`Milestones::pending`].
    fn bit(self) -> u8 {
        1 << self.index()
    }
}

/// The delays to milestones reached since the driver last took them, by milestone.
#[derive(Debug, Default, Clone)]
pub struct Delays {
    by_milestone: [Vec<Duration>; Milestone::ALL.len()],
    /// Delays not kept: more than [`MAX_DELAYS`] of one milestone between two takes.
    pub lost: u64,
}

/// The most delays of one milestone kept between two takes by the driver (once a
/// second): joins come at most a few hundred a second, and a flood of them costs no more
/// than this much memory.
pub const MAX_DELAYS: usize = 4096;

impl Delays {
    /// The delays to `milestone` recorded, in the order reached.
    pub fn of(&self, milestone: Milestone) -> &[Duration] {
        &self.by_milestone[milestone.index()]
    }

    /// Keeps a delay to `milestone`, if fewer than [`MAX_DELAYS`] are kept.
    pub fn record(&mut self, milestone: Milestone, delay: Duration) {
        let delays = &mut self.by_milestone[milestone.index()];
        if delays.len() < MAX_DELAYS {
            delays.push(delay);
        } else {
            self.lost += 1;
        }
    }
}

/// When a participant's clock started, and which of its milestones are still to come.
#[derive(Debug, Clone, Copy)]
pub(super) struct Milestones {
    since: Instant,
    /// One bit per [`Milestone`] not reached yet: on the forwarding path, a participant
    /// whose milestones are all behind costs one test of a byte per packet.
    pending: u8,
}

impl Milestones {
    /// Every milestone ahead, counted from `joined`.
    pub(super) fn new(joined: Instant) -> Self {
        let pending = Milestone::ALL.iter().fold(0, |bits, m| bits | m.bit());
        Milestones {
            since: joined,
            pending,
        }
    }

    /// Counts from `at` instead, if earlier: when the join was handed over.
    pub(super) fn count_from(&mut self, at: Instant) {
        self.since = self.since.min(at);
    }

    /// Records the delay to `milestone` at `now` if it is the first time it is reached.
    #[inline]
    pub(super) fn reach(&mut self, milestone: Milestone, now: Instant, delays: &mut Delays) {
        if self.pending & milestone.bit() != 0 {
            self.pending &= !milestone.bit();
            delays.record(milestone, now.saturating_duration_since(self.since));
        }
    }
}

impl Shard {
    /// Starts `id`'s milestones' clock at `at`, when signaling handed its join to the
    /// media plane (before it waited in the shard's queue), if that is earlier than when
    /// the shard took it. Nothing for a participant not admitted.
    pub fn count_join_from(&mut self, id: ParticipantId, at: Instant) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.milestones.count_from(at);
        }
    }

    /// Records `id`'s delay to `milestone` if it is the first time it gets there.
    pub(super) fn reach(&mut self, id: ParticipantId, milestone: Milestone) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.milestones
                .reach(milestone, self.now, &mut self.counters.milestones);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_milestone_is_recorded_once_from_the_join() {
        let t0 = Instant::now();
        let mut delays = Delays::default();
        let mut m = Milestones::new(t0);
        let ms = Duration::from_millis;
        m.reach(Milestone::Connected, t0 + ms(300), &mut delays);
        m.reach(Milestone::Connected, t0 + ms(900), &mut delays);
        m.reach(Milestone::FirstForwarded, t0 + ms(500), &mut delays);
        m.reach(Milestone::FirstForwarded, t0 + ms(600), &mut delays);
        assert_eq!(delays.of(Milestone::Connected), [ms(300)]);
        assert_eq!(delays.of(Milestone::FirstForwarded), [ms(500)]);
        assert!(delays.of(Milestone::FirstReceived).is_empty());
        m.reach(Milestone::FirstReceived, t0 + ms(700), &mut delays);
        assert_eq!(delays.of(Milestone::FirstReceived), [ms(700)]);
        assert_eq!(delays.lost, 0);
    }

    #[test]
    fn the_clock_starts_at_the_earlier_of_the_hand_over_and_the_join() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut delays = Delays::default();
        let mut handed_over = Milestones::new(t0 + ms(40));
        handed_over.count_from(t0);
        handed_over.reach(Milestone::Connected, t0 + ms(100), &mut delays);
        // A hand-over "after" the join (clocks of two threads) never shortens it below 0.
        let mut later = Milestones::new(t0);
        later.count_from(t0 + ms(40));
        later.reach(Milestone::Connected, t0 + ms(100), &mut delays);
        assert_eq!(delays.of(Milestone::Connected), [ms(100), ms(100)]);
    }

    #[test]
    fn delays_past_the_cap_are_counted_lost() {
        let t0 = Instant::now();
        let mut delays = Delays::default();
        for _ in 0..MAX_DELAYS + 3 {
            Milestones::new(t0).reach(Milestone::Connected, t0, &mut delays);
        }
        assert_eq!(delays.of(Milestone::Connected).len(), MAX_DELAYS);
        assert_eq!(delays.lost, 3);
        assert!(delays.of(Milestone::FirstReceived).is_empty());
    }
}
