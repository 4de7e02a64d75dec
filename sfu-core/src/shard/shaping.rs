//! A subscriber's link as its losses prove it, and the shard's pacer shaping its video to
//! that rate.
//!
//! A policer drops what overruns it and builds no queue, so a delay-based estimate never
//! sees it: str0m's pacer goes at 1.1 times an estimate far above the link, and each
//! keyframe (several times a frame) leaves in a burst the policer cuts. The picture stays
//! broken until the next keyframe, which the losses ask for, which the policer cuts too.
//!
//! What the link delivered when it lost (what was sent, less what was lost) is about its
//! rate. Where the config asks (`ShardConfig::shape_links`, off by default until the
//! cases the README names are settled), from the first report of heavy losses (a TWCC
//! subscriber's, on a link whose round trip did not grow: one that queues, its estimate
//! sees), the shard paces the
//! subscriber's video, resends and padding under that rate (its pacer, `pacer.rs`, in
//! datagrams of one at a time; str0m's pacer then paces none of its video, and is asked
//! to pad and probe no higher), so that a keyframe arrives whole, later, and chooses its
//! layers within it. What the shard's pacer dropped for waiting too long, numbered
//! already, the receiver reports lost: that share is taken out of the video's losses
//! the shaping reads (the layer choice still reads them: they say its layers are too
//! large). Shaped, lighter losses too say the rate is above the link (a burst at it
//! overran the policer): it falls from itself. It climbs back while what it is sent
//! takes most of it, slowly until a wait after the last fall has passed (doubled while
//! falls recur), then faster and faster; the shaping ends where it would hold nothing
//! back and its pacer holds no backlog, or when every video is paused (the estimate
//! finds when one fits again).

use std::time::{Duration, Instant};

use protocol::{Kind, ParticipantId, TrackId};
use rustc_hash::FxHashMap;
use str0m::media::Mid;
use tracing::debug;

use super::Shard;
use super::loss::{LOSS_HIGH, LOSS_LOW};
use super::participant::Participant;
use super::track::Track;
use crate::pacer::Pacer;

/// The shaping starts (or falls) at this share of what the link delivered, and climbs to
/// no more than [`SHAPE_CEILING`] of it until its wait has passed.
const SHAPE_SHARE: f64 = 0.9;

const SHAPE_CEILING: f64 = 0.95;

/// After a fall, the reports of this long still count the losses of before it (a
/// browser reports every half second to a second).
const SHAPE_HOLD: Duration = Duration::from_millis(1500);

/// How long the rate stays under its ceiling after a fall, doubled while falls recur
/// within twice the wait, up to the maximum (on a link that stays policed, one overrun
/// of its tokens every 20 s, not one every few seconds; one that recovered is found
/// within that).
const SHAPE_WAIT_MIN: Duration = Duration::from_secs(5);

const SHAPE_WAIT_MAX: Duration = Duration::from_secs(20);

/// The rate climbs by this share a second; past its wait, by as much more for each
/// second it has climbed.
const SHAPE_CLIMB: f64 = 0.05;

/// A round trip this much over the least seen says the link queues: heavy losses then do
/// not start the shaping.
const SHAPE_QUEUED: Duration = Duration::from_millis(100);

/// The rate climbs only while what is sent takes this much of it.
const SHAPE_BUSY: f64 = 0.75;

/// The rate never falls below this (bit/s): an audio stream and its headers.
const SHAPE_MIN_BPS: u64 = 50_000;

/// What a participant was sent: bytes in all, and what they were at the last round of
/// receiver reports (whose losses are of what was sent since the round before, about)
/// and at the last rate interval.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SentMeter {
    bytes: u64,
    round: Option<(Instant, u64)>,
    /// Bit/s sent between the last two rounds.
    bps: u64,
    tick: u64,
    /// Its pacer's totals at the last round (`Pacer::totals`), and the share of what it
    /// was to send that it dropped between the last two.
    pacer: (u64, u64),
    dropped: f64,
}

impl SentMeter {
    pub(super) fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Every byte sent so far.
    pub(super) fn total(&self) -> u64 {
        self.bytes
    }

    /// Ends a rate interval of `secs` seconds: bit/s sent in it.
    pub(super) fn tick(&mut self, secs: f64) -> u64 {
        let sent = self.bytes - std::mem::replace(&mut self.tick, self.bytes);
        (sent as f64 * 8.0 / secs.max(0.001)) as u64
    }

    /// A round of reports at `now`, its pacer's totals being `pacer` (`Pacer::totals`):
    /// bit/s sent since the round before (0 for the first, and the same for every report
    /// of one round), and the share of its paced datagrams that the pacer dropped since.
    pub(super) fn round(&mut self, now: Instant, pacer: (u64, u64)) -> (u64, f64) {
        match self.round {
            Some((at, _)) if at == now => return (self.bps, self.dropped),
            Some((at, bytes)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                self.bps = ((self.bytes - bytes) as f64 * 8.0 / secs.max(0.001)) as u64;
            }
            None => self.bps = 0,
        }
        let sent = pacer.0.saturating_sub(self.pacer.0);
        let dropped = pacer.1.saturating_sub(self.pacer.1);
        self.dropped = dropped as f64 / (sent + dropped).max(1) as f64;
        self.pacer = pacer;
        self.round = Some((now, self.bytes));
        (self.bps, self.dropped)
    }
}

/// The rate a subscriber's link proved it carries, while its losses say so.
#[derive(Debug)]
pub(super) struct LinkShape {
    /// Bit/s its video is paced at, all it is sent counted; `None`: not shaped.
    pub(super) rate: Option<u64>,
    /// Reports until then are not read (they count losses of before the last fall),
    /// but for the rest of the round that fell.
    hold: Option<Instant>,
    /// When it last fell, and the rate before.
    fell: Option<(Instant, Option<u64>)>,
    /// The most the rate climbs to, and until when.
    ceiling: Option<(u64, Instant)>,
    wait: Duration,
    /// When it last climbed.
    climbed: Option<Instant>,
    /// Since when it has climbed past its wait without a fall.
    climbing: Option<Instant>,
}

impl Default for LinkShape {
    fn default() -> Self {
        LinkShape {
            rate: None,
            hold: None,
            fell: None,
            ceiling: None,
            wait: SHAPE_WAIT_MIN,
            climbed: None,
            climbing: None,
        }
    }
}

impl LinkShape {
    /// A report at `now` that the link lost `loss` (a fraction) while it was sent
    /// `sent_bps`: above [`LOSS_HIGH`] (above [`LOSS_LOW`] once shaped) the rate falls
    /// to a share of what it delivered (never rises; another m-line of the round may say
    /// it lost more). Returns whether the rate changed.
    pub(super) fn report(&mut self, now: Instant, loss: f32, sent_bps: u64) -> bool {
        // (Another m-line of the round that fell: judged as the first was, from the
        // rate before the round.)
        let again = self.fell.is_some_and(|(at, _)| at == now);
        let held = self.hold.is_some_and(|until| now < until) && !again;
        let before = match self.fell {
            Some((at, before)) if at == now => before,
            _ => self.rate,
        };
        // (Shaped, lighter losses still say the rate is above the link's: a keyframe's
        // burst at it overran the policer.)
        let heavy = if before.is_some() {
            LOSS_LOW
        } else {
            LOSS_HIGH
        };
        if loss <= heavy || held || (before.is_none() && sent_bps == 0) {
            return false;
        }
        // Shaped, what was sent may have been less than the link carries (the losses
        // were of a burst at the rate): the rate falls from itself.
        let kept = 1.0 - f64::from(loss);
        let from = before.unwrap_or(sent_bps);
        let delivered = from as f64 * kept;
        let fallen = ((delivered * SHAPE_SHARE) as u64).max(SHAPE_MIN_BPS);
        if self.rate.is_some_and(|r| r <= fallen) {
            return false;
        }
        if !again {
            self.wait = match self.ceiling {
                Some((_, until)) if now < until + self.wait => (self.wait * 2).min(SHAPE_WAIT_MAX),
                _ => SHAPE_WAIT_MIN,
            };
            self.fell = Some((now, before));
        }
        let ceiling = ((delivered * SHAPE_CEILING) as u64).max(SHAPE_MIN_BPS);
        self.ceiling = Some((ceiling, now + self.wait));
        self.hold = Some(now + SHAPE_HOLD);
        self.rate = Some(fallen);
        self.climbed = Some(now);
        self.climbing = None;
        true
    }

    /// Climbs as time passes while `busy` (what it is sent, all of it counted, takes most
    /// of the rate: a rate climbing with nothing to send would let the next keyframe's
    /// burst overrun the link it protects): to the ceiling while the wait lasts, then faster and
    /// faster. The shaping ends past `unneeded` (bit/s), unless its pacer is `holding` a
    /// backlog (which would then leave at once, in a burst).
    pub(super) fn climb(&mut self, now: Instant, unneeded: u64, busy: bool, holding: bool) {
        let Some(rate) = self.rate else {
            return;
        };
        let secs = self
            .climbed
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.climbed = Some(now);
        if self.hold.is_some_and(|until| now < until) || !busy {
            self.climbing = None;
            return;
        }
        // Past the wait, faster the longer it has climbed without a fall (a link that
        // recovered is found within seconds, one still policed is overrun once a wait).
        let waiting = self.ceiling.filter(|(_, until)| now < *until);
        let pace = match waiting {
            Some(_) => SHAPE_CLIMB,
            None => {
                let since = *self.climbing.get_or_insert(now);
                SHAPE_CLIMB * (1.0 + now.saturating_duration_since(since).as_secs_f64())
            }
        };
        let climbed = (rate as f64 * (1.0 + pace * secs)) as u64;
        let next = match waiting {
            Some((most, _)) => climbed.min(most.max(rate)),
            None => climbed,
        };
        self.rate = Some(next);
        if next > unneeded && !holding {
            self.end();
        }
    }

    /// The shaping ends (its wait is kept for the next).
    pub(super) fn end(&mut self) {
        self.rate = None;
        self.climbing = None;
    }
}

impl Shard {
    /// A receiver report of participant `id` said its m-line `mid` lost `loss`: where
    /// that is heavy, its video is shaped to what the link delivered (its pacer made, or
    /// set to pace all video; str0m's pacer then paces none), and its layers chosen
    /// again within it.
    pub(super) fn shape_on_loss(&mut self, id: ParticipantId, mid: Mid, loss: f32) {
        if !self.config.shape_links {
            return;
        }
        let now = self.now;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        // (Not while the floor video goes past the rate on purpose: its losses are known.)
        if !p.estimated || !p.downlink.estimate_is_twcc || p.downlink.unpaced.is_some() {
            return;
        }
        // A link that queues (its round trip grew) is one the delay-based estimate sees:
        // its losses are its queue's overflow, not a policer's.
        let queues = p
            .downlink
            .rtt
            .is_some_and(|(least, last)| last > least + SHAPE_QUEUED);
        if p.downlink.shape.rate.is_none() && queues {
            return;
        }
        let totals = p.pacer.as_ref().map_or((0, 0), Pacer::totals);
        let (sent, dropped) = p.downlink.sent.round(now, totals);
        // What its pacer dropped, str0m had numbered: the receiver counts it lost, and
        // the report says it with the link's losses (about, the share of the video).
        let video = || {
            p.subscriptions
                .iter()
                .find(|(_, s)| s.mid() == mid)
                .and_then(|(_, s)| self.tracks.get(&s.track_id()))
                .is_some_and(|t| t.info.kind == Kind::Video)
        };
        let loss = if dropped > 0.0 && video() {
            ((f64::from(loss) - dropped) / (1.0 - dropped).max(0.01)).max(0.0) as f32
        } else {
            loss
        };
        if !p.downlink.shape.report(now, loss, sent) {
            return;
        }
        debug!(participant = %id, loss, sent, rate = ?p.downlink.shape.rate,
            "link shaped to what it delivered");
        let pacer = p.pacer.get_or_insert_with(|| Pacer::shaping(now));
        for x in p.rtc.codec_config().params() {
            if x.spec().codec.is_video() {
                pacer.pace_payload_type(*x.pt());
                if let Some(rtx) = x.resend() {
                    pacer.pace_payload_type(*rtx);
                }
            }
        }
        str0m_paces_video(p, &self.tracks);
        self.choose_for(id);
    }

    /// A receiver report's round trip: the least seen, and the last.
    pub(super) fn on_egress_rtt(&mut self, id: ParticipantId, rtt: Option<Duration>) {
        let (Some(p), Some(rtt)) = (self.participants.get_mut(&id), rtt) else {
            return;
        };
        let least = p.downlink.rtt.map_or(rtt, |(least, _)| least.min(rtt));
        p.downlink.rtt = Some((least, rtt));
    }

    /// Every rate interval (`secs` long): the shaped rates climb, the shaping of a
    /// participant with no video flowing ends, str0m's pacer paces its video again once
    /// it does (or not, a stream made meanwhile, while it goes on), and a pacer that
    /// shapes nothing more and holds nothing goes.
    pub(super) fn tick_shaping(&mut self, secs: f64) {
        if !self.config.shape_links {
            return;
        }
        let now = self.now;
        let tracks = &self.tracks;
        for (id, p) in self.participants.iter_mut() {
            if !p.estimated {
                continue;
            }
            let was = p.downlink.shape.rate;
            let sent = p.downlink.sent.tick(secs);
            let busy = was.is_some_and(|r| sent as f64 >= r as f64 * SHAPE_BUSY);
            // Past what it would take with room to spare, the shaping holds nothing back.
            let unneeded = p.downlink.ideal_bps * 3 / 2;
            let holding = p.pacer.as_ref().is_some_and(|x| x.queued() > 0);
            p.downlink.shape.climb(now, unneeded, busy, holding);
            if was.is_some() {
                tracing::trace!(participant = %id, sent, busy, rate = ?p.downlink.shape.rate,
                    "shaped");
            }
            // With every video paused for bandwidth, it has nothing to shape, and its
            // rate would keep them paused: the estimate finds when one fits again.
            let video = p.subscriptions.iter().any(|(_, s)| {
                s.target.is_some()
                    && tracks
                        .get(&s.track_id())
                        .is_some_and(|t| t.info.kind == Kind::Video)
            });
            if !video && p.pacer.as_ref().is_none_or(|x| x.queued() == 0) {
                p.downlink.shape.end();
            }
            if was.is_some() && p.downlink.shape.rate.is_none() {
                debug!(participant = %id, estimate = ?p.downlink.estimate, "link shaping ends");
            }
            // (Its video streams as they are now: one may have been made meanwhile.)
            if was.is_some() {
                str0m_paces_video(p, tracks);
            }
            if p.downlink.shape.rate.is_none() && p.pacer.as_ref().is_some_and(|x| x.queued() == 0)
            {
                p.pacer = None;
            }
        }
    }
}

/// Whether str0m's pacer paces each video stream participant `p` is sent: not while its
/// link is shaped (the shard's pacer paces them at the shaped rate; str0m's, at 1.1 x an
/// estimate that the same losses may have brought far under it, would hold them back
/// until the forwarder cut them), else every one but the floor video sent past it on
/// purpose (`Downlink::unpaced`, `allocation.rs`). Every m-line it took out is put back,
/// whether a subscription still holds it or not (an idle one waits for its next track).
fn str0m_paces_video(p: &mut Participant, tracks: &FxHashMap<TrackId, Track>) {
    let shaped = p.downlink.shape.rate.is_some();
    let floor = p.downlink.unpaced;
    let taken = &mut p.downlink.str0m_unpaced;
    let mut api = p.rtc.direct_api();
    if !shaped {
        for mid in taken.drain(..) {
            if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                tx.set_unpaced(floor == Some(mid));
            }
        }
        return;
    }
    for (_, s) in p.subscriptions.iter() {
        let video = tracks
            .get(&s.track_id())
            .is_some_and(|t| t.info.kind == Kind::Video);
        if let (true, Some(tx)) = (video, api.stream_tx_by_mid(s.mid(), None)) {
            tx.set_unpaced(true);
            if !taken.contains(&s.mid()) {
                taken.push(s.mid());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_losses_shape_the_link_under_what_it_delivered_and_it_climbs_back_later() {
        let mut s = LinkShape::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Light losses: nothing.
        assert!(!s.report(t0, 0.05, 1_000_000));
        assert_eq!(s.rate, None);
        // A quarter lost of 1 Mbit/s: the link delivered 750 kbit/s.
        assert!(s.report(t0, 0.25, 1_000_000));
        assert_eq!(s.rate, Some(675_000));
        // Another m-line of the round lost more: judged from the same.
        assert!(s.report(t0, 0.5, 1_000_000));
        assert_eq!(s.rate, Some(450_000));
        assert!(!s.report(t0, 0.3, 1_000_000));
        assert_eq!(s.rate, Some(450_000));
        // The reports just after still count the losses of before.
        assert!(!s.report(at(1000), 0.5, 700_000));
        // It climbs to 0.95 of what was delivered while the wait lasts, and not while
        // it idles ...
        for i in 2..5 {
            s.climb(at(i * 1000), 10_000_000, true, false);
        }
        assert_eq!(s.rate, Some(475_000));
        s.climb(at(4500), 10_000_000, false, false);
        assert_eq!(s.rate, Some(475_000));
        // ... then faster and faster past the wait while what it is sent takes most of
        // it, and stops shaping past what is no longer needed.
        let after = SHAPE_WAIT_MIN.as_millis() as u64;
        let mut rates = Vec::new();
        for i in 1..6 {
            s.climb(at(after + i * 1000), 10_000_000, true, false);
            rates.push(s.rate.unwrap());
        }
        let gains: Vec<f64> = rates
            .windows(2)
            .map(|w| w[1] as f64 / w[0] as f64)
            .collect();
        assert!(gains.windows(2).all(|g| g[1] > g[0]), "{rates:?}");
        assert!(rates[4] > 700_000, "{rates:?}");
        // (Not while its pacer holds a backlog, which would leave in a burst.)
        s.climb(at(after + 6000), rates[4], true, true);
        assert!(s.rate.is_some());
        s.climb(at(after + 6500), rates[4], true, false);
        assert_eq!(s.rate, None);
    }

    #[test]
    fn falls_that_recur_within_the_wait_double_it() {
        let mut s = LinkShape::default();
        let t0 = Instant::now();
        s.report(t0, 0.2, 1_000_000);
        assert_eq!(s.wait, SHAPE_WAIT_MIN);
        let t1 = t0 + SHAPE_WAIT_MIN + Duration::from_secs(2);
        s.climb(t1, u64::MAX, true, false);
        assert!(s.report(t1, 0.3, 1_000_000));
        assert_eq!(s.wait, SHAPE_WAIT_MIN * 2);
        // Shaped, lighter losses count too, and the rate falls from itself, whatever was
        // sent (less than the link carries: a burst at the rate overran it).
        let rate = s.rate.unwrap();
        let t2 = t1 + SHAPE_HOLD;
        assert!(s.report(t2, 0.05, 100_000));
        assert_eq!(s.rate, Some((rate as f64 * 0.95 * SHAPE_SHARE) as u64));
        // Long after the last wait ended, a fall starts from the shortest again.
        s.end();
        assert!(s.report(t1 + SHAPE_WAIT_MAX * 4, 0.3, 1_000_000));
        assert_eq!(s.wait, SHAPE_WAIT_MIN);
    }

    #[test]
    fn the_meter_says_what_was_sent_between_two_rounds_and_in_an_interval() {
        let mut m = SentMeter::default();
        let t0 = Instant::now();
        m.add(1_000);
        assert_eq!(m.round(t0, (0, 0)), (0, 0.0));
        m.add(25_000);
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(m.round(t1, (30, 10)), (1_000_000, 0.25));
        m.add(5_000);
        assert_eq!(m.round(t1, (40, 10)), (1_000_000, 0.25), "the same round");
        assert_eq!(
            m.round(t1 + Duration::from_millis(400), (50, 10)),
            (100_000, 0.0)
        );
        assert_eq!(m.tick(0.2), 1_240_000);
        m.add(2_500);
        assert_eq!(m.tick(0.2), 100_000);
    }
}
