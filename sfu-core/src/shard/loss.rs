//! The estimate of a receive-only participant (no TWCC): from the losses its receiver
//! reports, GCC's loss-based controller.

use std::time::{Duration, Instant};

use protocol::ParticipantId;
use str0m::media::Mid;
use tracing::{debug, trace};

use super::Shard;

/// How often a receive-only participant's losses are read, from its receiver reports:
/// the estimate of those without TWCC, which costs nothing per packet.
pub(super) const LOSS_INTERVAL: Duration = Duration::from_secs(1);

/// How often the receiver reports of a participant with TWCC are read: the losses that
/// say its link does not carry a layer (a policer's show nowhere else), acted on within
/// this of their coming. (A browser reports about once a second; read once a second
/// too, a policed top layer froze the picture for up to 1.5 s before the switch down.)
pub(super) const REPORTS_READ: Duration = Duration::from_millis(250);

/// Above this fraction lost, a loss-based estimate falls to what was sent times
/// (1 - loss / 2); below the next, it climbs by an eighth a second (GCC's loss-based
/// controller, draft-ietf-rmcat-gcc section 6). Between, it holds.
pub(super) const LOSS_HIGH: f32 = 0.10;

pub(super) const LOSS_LOW: f32 = 0.02;

/// After losses made a loss-based estimate fall, it climbs back to no more than 0.9 of
/// what was sent then for this long, doubled each time it falls again within twice the
/// wait, up to the maximum: one retry of a layer the network cannot carry, not one every
/// few seconds.
pub(super) const LOSS_BACKOFF_MIN: Duration = Duration::from_secs(10);

pub(super) const LOSS_BACKOFF_MAX: Duration = Duration::from_secs(80);

/// A loss-based estimate never falls below this (the lowest layer of a screen share).
pub(super) const MIN_LOSS_ESTIMATE_BPS: u64 = 100_000;

/// What a receive-only participant's receiver reports said lately: the state of its
/// loss-based estimate between rounds.
#[derive(Debug)]
pub(super) struct LossEstimate {
    /// The stats round being read (str0m reports every m-line at one instant) and the
    /// most any of its m-lines lost: a round decides when the next one begins.
    round: Option<(Instant, f32)>,
    /// After a fall, the rounds until then are not read: their reports still count what
    /// was lost before it.
    hold: Option<Instant>,
    /// What was sent when losses last made the estimate fall, and until when the estimate
    /// stays below that; the wait doubles while falls recur.
    ceiling: Option<(u64, Instant)>,
    backoff: Duration,
}

/// What a participant is sent, as a loss-based estimate weighs it (bit/s).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sending {
    /// What the last choice sends it.
    pub(super) chosen: u64,
    /// The lowest layers of everything it is shown: the estimate's floor (with a tenth
    /// to spare).
    pub(super) lowest: u64,
    /// What it would receive with bandwidth to spare: past twice this, no estimate.
    pub(super) ideal: u64,
}

impl Default for LossEstimate {
    fn default() -> Self {
        LossEstimate {
            round: None,
            hold: None,
            ceiling: None,
            backoff: LOSS_BACKOFF_MIN,
        }
    }
}

impl LossEstimate {
    /// One m-line's report at `now` of `loss` (a fraction). When it starts a new round,
    /// the round before decides (GCC's loss controller): above `LOSS_HIGH` the estimate
    /// falls to what was sent times (1 - loss / 2), held for two rounds and kept under a
    /// ceiling for a wait that doubles while falls recur; below `LOSS_LOW` it climbs by an
    /// eighth, up to the ceiling, and past twice the ideal it is gone (`None`: nothing
    /// limits the choice); between, it holds. Returns the new estimate, or `None` when
    /// this report decides nothing (the same round, or held).
    pub(super) fn report(
        &mut self,
        now: Instant,
        loss: f32,
        estimate: Option<u64>,
        sending: Sending,
    ) -> Option<Option<u64>> {
        let loss = match self.round {
            Some((at, most)) if at == now => {
                self.round = Some((at, most.max(loss)));
                return None;
            }
            Some((_, most)) => {
                self.round = Some((now, loss));
                most
            }
            None => {
                self.round = Some((now, loss));
                return None;
            }
        };
        // The reports just after a fall still count what was lost before it.
        if self.hold.is_some_and(|until| now < until) {
            return None;
        }
        let next = if loss > LOSS_HIGH {
            self.hold = Some(now + LOSS_INTERVAL * 2);
            let sent = estimate.map_or(sending.chosen, |e| e.min(sending.chosen));
            let fallen = (sent as f64 * (1.0 - 0.5 * f64::from(loss))) as u64;
            // Falling again soon after the last fall: wait longer before the next retry.
            self.backoff = match self.ceiling {
                Some((_, until)) if now < until + self.backoff => {
                    (self.backoff * 2).min(LOSS_BACKOFF_MAX)
                }
                _ => LOSS_BACKOFF_MIN,
            };
            self.ceiling = Some((sent, now + self.backoff));
            Some(
                fallen
                    .max(MIN_LOSS_ESTIMATE_BPS)
                    .max(sending.lowest + sending.lowest / 10),
            )
        } else if loss < LOSS_LOW {
            let ceiling = match self.ceiling {
                Some((sent, until)) if now < until => sent / 10 * 9,
                _ => u64::MAX,
            };
            // Climbing past twice what it would receive unlimited, it is unlimited again.
            estimate
                .map(|e| (e + e / 8).min(ceiling.max(e)))
                .filter(|e| *e < sending.ideal.saturating_mul(2))
        } else {
            estimate
        };
        Some(next)
    }
}

impl Shard {
    /// A participant's receiver reports say its m-line `mid` lost `loss` of what it was
    /// sent: what the adaptation reads as the link's losses, and for a receive-only
    /// participant its estimate, which may change when a round ends (its layers follow).
    /// The first report on a video that flows again after a long pause is skipped: it
    /// may count what was lost before the pause, on a link that has recovered since.
    pub(super) fn on_egress_loss(&mut self, id: ParticipantId, mid: Mid, loss: Option<f32>) {
        let now = self.now;
        let Some(loss) = loss else {
            return;
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if let Some((_, s)) = p.subscriptions.iter_mut().find(|(_, s)| s.mid() == mid) {
            if std::mem::take(&mut s.resumed) {
                trace!(participant = %id, %mid, loss, "receiver reports after a pause: skipped");
                return;
            }
            s.reported = Some((now, loss));
        }
        trace!(participant = %id, %mid, loss, "receiver reports");
        // str0m reports every m-line at one instant: the round's most.
        p.downlink.lost = Some(match p.downlink.lost {
            Some((at, most)) if at == now => (at, most.max(loss)),
            _ => (now, loss),
        });
        if p.estimated {
            self.shape_on_loss(id, mid, loss);
            return;
        }
        let sending = Sending {
            chosen: p.downlink.chosen_bps,
            lowest: p.downlink.lowest_bps,
            ideal: p.downlink.ideal_bps,
        };
        let Some(next) = p
            .downlink
            .loss
            .report(now, loss, p.downlink.estimate, sending)
        else {
            return;
        };
        if next != p.downlink.estimate {
            debug!(participant = %id, loss, estimate = ?next, "loss-based estimate");
            p.downlink.estimate = next;
            self.choose_for(id);
            self.request_awaited_keyframes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDING: Sending = Sending {
        chosen: 2_000_000,
        lowest: 300_000,
        ideal: 2_500_000,
    };

    /// Feeds one round of reports (`losses` at `at`; the first ends the round before) and
    /// the first report of the next round (at `next`), which decides this one; returns
    /// that decision.
    fn round(
        e: &mut LossEstimate,
        at: Instant,
        losses: &[f32],
        next: Instant,
        estimate: Option<u64>,
    ) -> Option<Option<u64>> {
        for (i, loss) in losses.iter().enumerate() {
            let decided = e.report(at, *loss, estimate, SENDING);
            if i > 0 {
                assert_eq!(decided, None, "mid-round");
            }
        }
        e.report(next, 0.0, estimate, SENDING)
    }

    #[test]
    fn a_round_decides_by_its_worst_m_line_when_the_next_round_begins() {
        let mut e = LossEstimate::default();
        let t0 = Instant::now();
        let t1 = t0 + LOSS_INTERVAL;
        // 25 % on one m-line, 1 % on another: the round lost 25 %. Nothing to compare it
        // with before: from what was chosen, 2 Mbit/s times (1 - 0.125).
        let fell = round(&mut e, t0, &[0.01, 0.25], t1, None);
        assert_eq!(fell, Some(Some(1_750_000)));
        // The next round is held (its reports still count the old losses) ...
        assert_eq!(
            round(&mut e, t1, &[], t1 + LOSS_INTERVAL, Some(1_750_000)),
            None
        );
        // ... then a clean round climbs by an eighth, but not past 0.9 of what was sent
        // when it fell, while the ceiling lasts.
        let t3 = t1 + LOSS_INTERVAL * 2;
        let climbed = e.report(t3, 0.0, Some(1_750_000), SENDING);
        assert_eq!(climbed, Some(Some(1_800_000)));
        // Losses between 2 and 10 % hold it.
        assert_eq!(e.report(t3, 0.05, Some(1_800_000), SENDING), None);
        let held = e.report(t3 + LOSS_INTERVAL, 0.0, Some(1_800_000), SENDING);
        assert_eq!(held, Some(Some(1_800_000)));
    }

    #[test]
    fn the_estimate_never_falls_below_the_lowest_layers_and_is_gone_past_twice_the_ideal() {
        let mut e = LossEstimate::default();
        let t0 = Instant::now();
        let fell = round(&mut e, t0, &[0.5], t0 + LOSS_INTERVAL, Some(320_000));
        // 320k * 0.75 = 240k, under the lowest layers (300k) with a tenth to spare.
        assert_eq!(fell, Some(Some(330_000)));
        // Past the ceiling's wait, clean rounds climb by an eighth; past twice the ideal
        // (5 Mbit/s), nothing limits the choice.
        let at = t0 + LOSS_BACKOFF_MIN * 2;
        assert_eq!(
            e.report(at, 0.0, Some(4_000_000), SENDING),
            Some(Some(4_500_000))
        );
        let next = at + LOSS_INTERVAL;
        assert_eq!(e.report(next, 0.0, Some(4_500_000), SENDING), Some(None));
    }

    #[test]
    fn falls_that_recur_within_the_wait_double_it() {
        let mut e = LossEstimate::default();
        let t0 = Instant::now();
        let fall = |e: &mut LossEstimate, at: Instant| {
            round(e, at, &[0.5], at + LOSS_INTERVAL, Some(1_000_000));
        };
        fall(&mut e, t0);
        assert_eq!(e.backoff, LOSS_BACKOFF_MIN);
        fall(&mut e, t0 + LOSS_INTERVAL * 4);
        assert_eq!(e.backoff, LOSS_BACKOFF_MIN * 2);
        fall(&mut e, t0 + LOSS_INTERVAL * 8);
        assert_eq!(e.backoff, LOSS_BACKOFF_MIN * 4);
        // Long after the last wait ended, a fall starts from the shortest wait again.
        fall(&mut e, t0 + LOSS_BACKOFF_MAX * 4);
        assert_eq!(e.backoff, LOSS_BACKOFF_MIN);
    }
}
