//! How a subscriber's layers follow its bandwidth estimate over time, as pure state: a
//! floor for its most important video (for every video, until losses show the link
//! short), hysteresis in both directions, a bound on how often its layers go up, and
//! why each choice changed. The shard's `choose_for` asks [`Adaptation::plan`] what the
//! allocation ([`crate::selection::allocate`]) may do each time it runs.

use std::time::{Duration, Instant};

use crate::selection::VideoItem;

/// Layers go down only once the budget has stayed below what they take this long: a
/// keyframe's burst or one report of overuse moves the estimate for less.
pub const DOWN_HOLD: Duration = Duration::from_millis(1500);

/// ... unless the budget falls under this share of what they take: then at once. (One
/// overuse report sets a TWCC estimate to 0.85 of the acknowledged rate; a link that
/// really narrowed takes it lower within a second, with its losses.)
pub const DOWN_AT_ONCE: f64 = 0.75;

/// Losses of media over this share (its receiver's last report, while nothing pads
/// above the media) take the layers down at once, to what was sent times one less half
/// the loss (GCC's loss controller): a policed link drops what overshoots it seconds
/// before a TWCC estimate that sees no queue falls. (While padding probes for the next
/// layer, the losses may be the padding's: the estimate answers those.)
pub const DOWN_LOSS: f32 = 0.1;

/// Losses over this share in its receiver's reports show that a subscriber's link is
/// short of what it is sent. Until they do, a delay-based estimate pauses no video: it
/// falls as much for a receiver whose CPU lags (its packets are read late) as for a
/// link that queues, and only the link drops what overruns it. From then on, until every
/// video it is shown flows again within its budget, the budget says what pauses.
pub const PAUSE_LOSS: f32 = 0.05;

/// The floor video keeps its lowest layer until the budget has stayed under this share
/// of that layer's rate for [`FLOOR_HOLD`], with losses over [`FLOOR_LOSS`]: then the
/// link cannot carry it, and it pauses
/// too (audio goes on; the video comes back once the budget carries it again).
pub const STARVED: f64 = 0.5;

pub const FLOOR_HOLD: Duration = Duration::from_secs(4);

/// Once the floor is lifted, the link is probed for it this often, for a second each
/// time (and not in between: every probe costs the audio a packet or two on a link
/// that thin), and on for as long as each second of it raises the estimate by
/// [`FLOOR_PROBE_GAIN`] (a link that recovered: the estimate climbs only so fast).
/// Room that padding may not look for is probed for as often, a second at a time: the
/// whole of a floor video carried only thinned, and the next step up while padding is
/// off ([`Adaptation::probe_unpadded`]).
pub const FLOOR_PROBE_EVERY: Duration = Duration::from_secs(5);

pub const FLOOR_PROBE_GAIN: f64 = 1.1;

/// ... and while its receiver reports more than this share lost (if it reports). An
/// estimate that falls on a link that carries most of the layer only says the layer
/// does not fit whole: GCC's loss controller keeps cutting while the floor overshoots,
/// and the retransmissions of what a link 10 % short drops make it lose a third.
pub const FLOOR_LOSS: f32 = 0.5;

/// ... or was, in a report that a newer one replaced less than this long ago: receiver
/// reports' shares lost swing from one report to the next on a link that drops most of
/// a layer (a retransmission counts as received in the report of when it arrives), and
/// one under [`FLOOR_LOSS`] between two over it does not say the link carries the layer.
pub const FLOOR_LOSS_GAP: Duration = Duration::from_millis(2500);

/// A paused video resumes only once the budget has had room for it this long: a
/// probe's result, or an estimate that overshoots for a moment, is not a link that
/// carries more.
pub const UP_HOLD: Duration = Duration::from_secs(2);

/// A layer goes up only after this long with room for it (and with the padding up to
/// it flowing, which finds out whether the link carries it) ...
pub const LAYER_UP_HOLD: Duration = Duration::from_secs(5);

/// ... twice as long each time a layer goes down within [`UP_FAILED_WITHIN`] of going
/// up (the link did not carry it after all), up to this; back to the start once a
/// minute passed since the last step up.
pub const LAYER_UP_HOLD_MAX: Duration = Duration::from_secs(60);

pub const UP_FAILED_WITHIN: Duration = Duration::from_secs(15);

/// Temporal layers left out of the floor video come back only after the budget has had
/// room for them this long; twice as long each time they are left out again within
/// [`UP_FAILED_WITHIN`] (up to [`LAYER_UP_HOLD_MAX`]); never while padding is off for
/// costing the media. Long, because staying thinned costs only pictures a second, and
/// coming back too soon a freeze: a policer that carries the base layers but not the
/// whole layer drops what overruns it from every layer, and str0m's probes, short
/// bursts, measure its burst rather than its rate.
pub const TEMPORAL_UP_HOLD: Duration = Duration::from_secs(30);

/// Losses over this share, reported while nothing pads above the media, take one
/// temporal layer more out of the floor video at once (a policer that the stream
/// overruns drops pictures of every layer long before an estimate that sees no queue
/// falls; a layer less costs no keyframe).
pub const THIN_LOSS: f32 = 0.03;

/// Losses over [`THIN_LOSS`] that leave nothing out of the floor video (at any layer,
/// down to its base temporal layer, padding on) ask its publisher for a keyframe at
/// most this often: what the link dropped may be a picture every next one references,
/// and Chromium asks only after 3 s without a picture to decode.
pub const LOSS_KEYFRAME_EVERY: Duration = Duration::from_secs(2);

/// ... and losses that thin it ask soon (below), or if they asked less than this long
/// ago, once it is over: that keyframe is still on its way (a base-layer picture, which
/// no thinning leaves out), and on a link this short every keyframe more is losses more.
/// (Thinned twice in 0.3 s, each with its keyframe, a Chromium receiver's picture
/// stopped over 1 s.) But it may have been lost with them: in Chromium runs it was, and
/// the picture came back with the next. A little under 1 s, so that the allocation
/// round 1 s after the last ask is past it, whatever its timer's jitter.
pub const THIN_KEYFRAME_GAP: Duration = Duration::from_millis(950);

/// ... but not before the thinned stream has flowed this long (the next allocation
/// round): the losses that thinned it say a policer has no tokens left, and a keyframe
/// sent at once was cut in Chromium runs (picture back only at the next, 1 to 1.5 s
/// frozen); the thinned stream's spare refills them first (0 to 414 ms frozen). Not
/// where links are shaped: the shaping pacer holds back what would overrun the link.
pub const THIN_KEYFRAME_DELAY: Duration = Duration::from_millis(150);

/// ... once the layer has flowed this long (see [`Adaptation::settled_at_lowest`]).
/// (Not from the second receiver report since it came, which may still follow the
/// higher layer's resends: CI's simulcast suite then saw a link that carries the lowest
/// layer whole thin it to its base temporal layer.)
pub const SETTLE: Duration = Duration::from_millis(2500);

/// Going up a layer for bandwidth takes a token from a bucket of this many, one back
/// every [`UP_REFILL`]: a subscriber's layers go up at most about 6 times a minute,
/// whatever its estimate does. Resuming paused videos takes none: a frozen picture
/// costs more than its keyframe, and videos pause only on losses (or a loss-based
/// estimate, which climbs back slowly on its own).
pub const UP_BURST: f64 = 3.0;

pub const UP_REFILL: Duration = Duration::from_secs(10);

/// Why a subscription's chosen layer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The budget no longer carries it.
    BandwidthDown,
    /// The budget carries more.
    BandwidthUp,
    /// The subscriber's view changed: shown, hidden, pinned, another quality asked for.
    View,
    /// The layer it received stopped arriving (the publisher paused or stalled it).
    Publisher,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::BandwidthDown,
        Cause::BandwidthUp,
        Cause::View,
        Cause::Publisher,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Cause::BandwidthDown => "bandwidth_down",
            Cause::BandwidthUp => "bandwidth_up",
            Cause::View => "view",
            Cause::Publisher => "publisher",
        }
    }
}

/// A subscription as the last choice left it: what the next one's changes are weighed
/// against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// The layer chosen (`None`: paused).
    pub target: Option<u8>,
    /// The layer its view asks for now, and did then (`None`: not shown), before holds.
    pub asked: Option<u8>,
    pub asked_before: Option<u8>,
    /// The layer chosen still arrives.
    pub usable: bool,
}

impl Prior {
    /// Why the choice goes from this to `after`; `None` when nothing changed.
    pub fn cause(&self, after: Option<u8>) -> Option<Cause> {
        if self.target == after {
            return None;
        }
        Some(if self.asked != self.asked_before || self.asked.is_none() {
            Cause::View
        } else if self.target.is_some() && !self.usable {
            Cause::Publisher
        } else if after > self.target {
            Cause::BandwidthUp
        } else {
            Cause::BandwidthDown
        })
    }
}

/// Why a video a subscriber is shown delivers no picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frozen {
    /// Paused for lack of bandwidth.
    Bandwidth,
    /// Chosen, and waiting for a keyframe of its layer.
    Keyframe,
    /// None of its layers arrives.
    Publisher,
}

impl Frozen {
    pub const ALL: [Frozen; 3] = [Frozen::Bandwidth, Frozen::Keyframe, Frozen::Publisher];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Frozen::Bandwidth => "bandwidth",
            Frozen::Keyframe => "keyframe",
            Frozen::Publisher => "publisher",
        }
    }
}

/// What a subscriber's link looks like at one allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// Its budget for video (bit/s); `None`: no estimate.
    pub budget: Option<u64>,
    /// What the current choice takes.
    pub takes: u64,
    /// The lowest layer's rate of the most important video it is shown, if any.
    pub floor: Option<u64>,
    /// Whether its estimate has short dips to hold through (a delay-based one); a
    /// loss-based estimate falls only after a second of losses, reason enough to go down.
    pub dips: bool,
    /// The most its receiver reported lost lately, a fraction, if it reported.
    pub loss: Option<f32>,
    /// Nothing pads above its media now: its losses are the media's.
    pub unpadded: bool,
    /// What the lowest layers of every video it is shown take, and whether one of them
    /// is paused now.
    pub lowest: u64,
    pub paused: bool,
    /// Its budget is a rate its losses proved (its link shaped to it): under the floor,
    /// no losses more need say so (the shaping avoids them).
    pub proven: bool,
}

/// What one allocation may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The budget to allocate (bit/s); `None`: nothing limits it.
    pub budget: Option<u64>,
    /// The most important video keeps its lowest layer whatever the budget.
    pub floor: bool,
    /// Nothing goes up or down: a dip too short to act on. The budget is then what the
    /// current choice takes.
    pub hold: bool,
    /// Every video shown keeps its lowest layer whatever the budget: no losses have
    /// shown the link short of them ([`PAUSE_LOSS`]).
    pub keep_all: bool,
}

/// One subscriber's adaptation state between allocations.
#[derive(Debug, Clone, Default)]
pub struct Adaptation {
    /// Since when the budget has been below what the current choice takes.
    short_since: Option<Instant>,
    /// Since when it has been well under the floor video's lowest layer, and whether
    /// that lasted: the floor is lifted until the budget carries that layer again.
    starved_since: Option<Instant>,
    /// When the losses were last over [`FLOOR_LOSS`].
    lossy_at: Option<Instant>,
    /// Losses over [`PAUSE_LOSS`] showed the link short, and not every video shown has
    /// flowed within the budget since.
    short_link: bool,
    floor_lifted: Option<Instant>,
    /// Since when the budget has had room to go up.
    room_since: Option<Instant>,
    /// When a layer last went up for bandwidth, and how long the next must wait (`None`:
    /// [`LAYER_UP_HOLD`]).
    layer_up: Option<Instant>,
    layer_up_hold: Option<Duration>,
    /// When a paused video last resumed, and the budget then.
    resumed: Option<(Instant, u64)>,
    /// The budget a paused video waits for since one paused again soon after it
    /// resumed, and since when.
    resume_bar: Option<(u64, Instant)>,
    /// Upgrade tokens, and when they were last refilled.
    tokens: Option<(f64, Instant)>,
    /// Until when paused time was last counted.
    counted: Option<Instant>,
    /// While probing for a lifted floor: since when the latest second of it ran, and
    /// the estimate then.
    probing: Option<(Instant, u64)>,
    /// Temporal layers of the floor video: since when there has been room for more,
    /// when they last came back, and how long the next must wait (`None`:
    /// [`TEMPORAL_UP_HOLD`]).
    temporal_room: Option<Instant>,
    temporal_up: Option<Instant>,
    temporal_hold: Option<Duration>,
    /// Since when padding may not look for room: the floor video thinned, or carried
    /// past the budget, or padding off for costing the media.
    unpadded_since: Option<Instant>,
    /// The receiver report whose losses it acted on last.
    loss_report_seen: Option<Instant>,
    /// The floor video's last receiver report that said its link lost next to nothing.
    clean_report_seen: Option<Instant>,
    /// When losses last asked for the floor video's keyframe, and what came since.
    loss_keyframe: Option<LossKeyframe>,
    /// Since when the floor video has flowed at its lowest layer.
    at_lowest: Option<Instant>,
    /// Until when losses that thinned the floor video hold its keyframe back
    /// ([`THIN_KEYFRAME_DELAY`]).
    thin_held: Option<Instant>,
}

/// The floor video's last keyframe asked for losses, and the reports since.
#[derive(Debug, Clone, Copy)]
struct LossKeyframe {
    /// When it was asked.
    at: Instant,
    /// Losses were reported since: that keyframe may be lost with them, and the next
    /// is asked at [`LOSS_KEYFRAME_EVERY`].
    waiting: bool,
    /// ... and then a report said the link is clean again: asked once past
    /// [`THIN_KEYFRAME_GAP`], not waiting for the 2 s.
    cleared: bool,
}

impl Adaptation {
    /// What the allocation at `now` may do, given what its link looks like.
    pub fn plan(&mut self, now: Instant, link: &Reading) -> Plan {
        let Reading {
            budget,
            takes,
            floor,
            dips,
            loss,
            unpadded,
            lowest,
            paused,
            proven,
        } = *link;
        let Some(b) = budget else {
            *self = Adaptation {
                tokens: self.tokens,
                counted: self.counted,
                ..Adaptation::default()
            };
            return Plan {
                budget: None,
                floor: true,
                hold: false,
                keep_all: false,
            };
        };
        if !paused && b >= lowest {
            self.short_link = false;
        }
        if loss.is_some_and(|l| l > PAUSE_LOSS) {
            self.short_link = true;
        }
        if loss.is_some_and(|l| l > FLOOR_LOSS) {
            self.lossy_at = Some(now);
        }
        let lossy_lately = proven
            || loss.is_none()
            || self
                .lossy_at
                .is_some_and(|at| now.saturating_duration_since(at) <= FLOOR_LOSS_GAP);
        match floor {
            Some(rate) if (b as f64) < STARVED * rate as f64 && lossy_lately => {
                let since = *self.starved_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= FLOOR_HOLD {
                    self.floor_lifted.get_or_insert(now);
                }
            }
            Some(rate) if b >= rate => {
                self.starved_since = None;
                self.floor_lifted = None;
            }
            _ => self.starved_since = None,
        }
        let lossy = loss.filter(|l| *l > DOWN_LOSS && dips && unpadded);
        let b = lossy.map_or(b, |l| {
            b.min((takes as f64 * (1.0 - f64::from(l) / 2.0)) as u64)
        });
        let hold = if b < takes && dips && lossy.is_none() {
            let since = *self.short_since.get_or_insert(now);
            now.saturating_duration_since(since) < DOWN_HOLD
                && b as f64 >= DOWN_AT_ONCE * takes as f64
        } else {
            self.short_since = None;
            false
        };
        Plan {
            budget: Some(if hold { takes } else { b }),
            floor: self.floor_lifted.is_none(),
            hold,
            // (A loss-based estimate falls only with losses; without reports, the
            // estimate is all there is.)
            keep_all: dips && loss.is_some() && !self.short_link,
        }
    }

    /// Bounds what goes up for bandwidth in `targets` (the allocation's, for `items`
    /// whose last choices were `priors`): nothing until there has been room for it a
    /// while, and a token left; then one layer at a time, each step checked by the
    /// estimate before the next. A loss-based estimate (`dips` false) already climbs
    /// slowly and waits longer after each fall (`LossEstimate`): its layers wait only
    /// [`UP_HOLD`]. A paused video comes back after [`UP_HOLD`] of room, even while a
    /// layer going up with it waits longer; if it pauses again within
    /// [`UP_FAILED_WITHIN`], only once the budget is a quarter over what it had then
    /// ([`Adaptation::resume_bar`]), where that budget is `probed`: from an estimate
    /// that padding and probes can lift (TWCC; a REMB receiver's climbs only with what
    /// it receives).
    pub fn bound_ups(
        &mut self,
        now: Instant,
        targets: &mut [Option<u8>],
        priors: &[Prior],
        items: &[VideoItem],
        dips: bool,
        probed: Option<u64>,
    ) {
        let cause = |t: &Option<u8>, p: &Prior| p.cause(*t);
        // A layer that went up lately and down again: the link did not carry it.
        let down = targets
            .iter()
            .zip(priors)
            .any(|(t, p)| cause(t, p) == Some(Cause::BandwidthDown));
        if down
            && self
                .layer_up
                .is_some_and(|at| now.saturating_duration_since(at) < UP_FAILED_WITHIN)
        {
            let hold = self.layer_up_hold.unwrap_or(LAYER_UP_HOLD);
            self.layer_up_hold = Some((hold * 2).min(LAYER_UP_HOLD_MAX));
            self.layer_up = None;
        }
        if self
            .layer_up
            .is_some_and(|at| now.saturating_duration_since(at) >= Duration::from_secs(60))
        {
            self.layer_up_hold = None;
        }
        let barred = probed.is_some() && self.resume_bar(now, targets, priors, probed);
        let up = |t: &Option<u8>, p: &Prior| {
            cause(t, p) == Some(Cause::BandwidthUp) && !(barred && p.target.is_none())
        };
        let room = targets.iter().zip(priors).any(|(t, p)| up(t, p));
        // Only resuming paused videos, or a layer going up too.
        let layer = targets
            .iter()
            .zip(priors)
            .any(|(t, p)| up(t, p) && p.target.is_some());
        let hold = if layer && dips {
            self.layer_up_hold.unwrap_or(LAYER_UP_HOLD)
        } else {
            UP_HOLD
        };
        let may = self.may_go_up(now, room, hold, layer);
        if may && layer {
            self.layer_up = Some(now);
        }
        // A paused video comes back once there has been room for UP_HOLD, even while a
        // layer going up with it waits longer: a frozen picture costs more than a lower
        // one. (The layer then waits for room with that video flowing.)
        let resumes = targets
            .iter()
            .zip(priors)
            .any(|(t, p)| up(t, p) && p.target.is_none());
        let resume = resumes
            && (may
                || self
                    .room_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= UP_HOLD));
        if resume {
            self.room_since = Some(now);
            self.resumed = probed.map(|b| (now, b));
        }
        for ((t, p), it) in targets.iter_mut().zip(priors).zip(items) {
            // Down, to a layer the publisher paused: to the best one below it that
            // arrives now instead, if any (the picture would freeze until a paused
            // encoder starts); going up again brings the better one later.
            if let (Some(Cause::BandwidthDown), Some(to)) = (cause(t, p), *t)
                && !it.flowing[usize::from(to)]
                && let Some(l) = (0..to).rev().find(|&l| it.flowing[usize::from(l)])
            {
                *t = Some(l);
            }
            if cause(t, p) == Some(Cause::BandwidthUp) {
                let goes = up(t, p) && (may || (resume && p.target.is_none()));
                *t = if goes {
                    let from = p.target.map_or(0, |l| l + 1);
                    let next = (from..it.layers).find(|&l| it.usable[usize::from(l)]);
                    next.min(*t)
                } else {
                    p.target
                };
            }
        }
    }

    /// The budget a paused video waits for to resume at `now`, if one paused again soon
    /// after it resumed ([`Adaptation::resume_bar`]): what padding and probes look for.
    pub fn resume_needs(&self, now: Instant) -> Option<u64> {
        self.resume_bar
            .filter(|(_, at)| now.saturating_duration_since(*at) < LAYER_UP_HOLD_MAX)
            .map(|(bar, _)| bar)
    }

    /// Whether paused videos must wait for more budget than `budget` to resume: one that
    /// resumed lately and paused again within [`UP_FAILED_WITHIN`] (`targets` say so)
    /// showed that the link did not carry it at the budget it resumed with; the next
    /// waits for a quarter more than that, which a policed link, whose estimate
    /// overshoots only for moments, does not give again soon, and a recovered one does.
    /// Forgotten after [`LAYER_UP_HOLD_MAX`].
    fn resume_bar(
        &mut self,
        now: Instant,
        targets: &[Option<u8>],
        priors: &[Prior],
        budget: Option<u64>,
    ) -> bool {
        let paused_again = targets
            .iter()
            .zip(priors)
            .any(|(t, p)| t.is_none() && p.cause(*t) == Some(Cause::BandwidthDown));
        if paused_again
            && let Some((at, resumed_with)) = self.resumed
            && now.saturating_duration_since(at) < UP_FAILED_WITHIN
        {
            let bar = self.resume_bar.map_or(0, |(b, _)| b).max(resumed_with);
            self.resume_bar = Some((bar.saturating_add(bar / 4), now));
            self.resumed = None;
        }
        if self
            .resume_bar
            .is_some_and(|(_, at)| now.saturating_duration_since(at) >= LAYER_UP_HOLD_MAX)
        {
            self.resume_bar = None;
        }
        self.resume_bar
            .is_some_and(|(bar, _)| budget.is_none_or(|b| b < bar))
    }

    /// Whether layers may go up for bandwidth at `now`, when the allocation would
    /// (`room`): only once it has had room for `hold` (since the last step up), and,
    /// for a `layer` up, with a token left (it takes one); `false` also when layers went
    /// up too often lately.
    fn may_go_up(&mut self, now: Instant, room: bool, hold: Duration, layer: bool) -> bool {
        if !room {
            self.room_since = None;
            return false;
        }
        let since = *self.room_since.get_or_insert(now);
        if now.saturating_duration_since(since) < hold {
            return false;
        }
        if !layer {
            self.room_since = Some(now);
            return true;
        }
        let (tokens, at) = self.tokens.get_or_insert((UP_BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() / UP_REFILL.as_secs_f64();
        *tokens = (*tokens + refill).min(UP_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            // The next step waits for room with this one's layers flowing.
            self.room_since = Some(now);
            true
        } else {
            false
        }
    }

    /// Whether to probe at `now` for the floor video it lifted, its estimate being
    /// `estimate`: for a second every [`FLOOR_PROBE_EVERY`], and on while each second
    /// raises the estimate enough.
    pub fn probe_floor(&mut self, now: Instant, estimate: Option<u64>) -> bool {
        let Some(at) = self.floor_lifted else {
            self.probing = None;
            return false;
        };
        let e = estimate.unwrap_or(0);
        if let Some((since, from)) = self.probing
            && now.saturating_duration_since(since) >= Duration::from_secs(1)
        {
            // A second of probing done: on if it paid.
            let paid = e as f64 >= from as f64 * FLOOR_PROBE_GAIN;
            self.probing = paid.then_some((now, e));
            return paid;
        }
        if self.probing.is_some() {
            return true;
        }
        let every = FLOOR_PROBE_EVERY.as_millis();
        let due = now.saturating_duration_since(at).as_millis() % every >= every - 1000;
        if due {
            self.probing = Some((now, e));
        }
        due
    }

    /// Whether the floor video has flowed at its lowest layer (`now`: `at_lowest`) for
    /// [`SETTLE`]: a receiver report covers up to a second, and those after a switch
    /// still count the higher layer's losses.
    pub fn settled_at_lowest(&mut self, now: Instant, at_lowest: bool) -> bool {
        if !at_lowest {
            self.at_lowest = None;
            return false;
        }
        now.saturating_duration_since(*self.at_lowest.get_or_insert(now)) >= SETTLE
    }

    /// Whether the losses its receiver reported at `at` are news: over [`THIN_LOSS`],
    /// and not acted on yet.
    pub fn new_loss(&mut self, at: Instant, loss: f32) -> bool {
        if loss <= THIN_LOSS || self.loss_report_seen.is_some_and(|t| t >= at) {
            return false;
        }
        self.loss_report_seen = Some(at);
        true
    }

    /// Whether the floor video's receiver report at `at` is news that its link lost next
    /// to nothing (at most [`THIN_LOSS`]).
    pub fn new_clean(&mut self, at: Instant, loss: f32) -> bool {
        if loss > THIN_LOSS || self.clean_report_seen.is_some_and(|t| t >= at) {
            return false;
        }
        self.clean_report_seen = Some(at);
        true
    }

    /// Whether to ask for the floor video's keyframe at `now`, given news of losses
    /// (`new_loss`), whether they thinned it (`thinned`: and how long its keyframe waits,
    /// [`THIN_KEYFRAME_DELAY`] or none where the link is shaped), and news that its link
    /// is clean (`clean`): that long after they thinned it (or once [`THIN_KEYFRAME_GAP`]
    /// since the last ask is over), else at most every [`LOSS_KEYFRAME_EVERY`] (news that
    /// comes sooner asks when it is over); and when the link is clean again after losses
    /// reported since the last ask, once past the gap: that keyframe went out while the
    /// link dropped packets, and may be lost with them.
    pub fn keyframe_for_loss(
        &mut self,
        now: Instant,
        new_loss: bool,
        thinned: Option<Duration>,
        clean: bool,
    ) -> bool {
        let since = self
            .loss_keyframe
            .map(|k| now.saturating_duration_since(k.at));
        let due = since.is_none_or(|d| d >= LOSS_KEYFRAME_EVERY);
        let recent = since.is_some_and(|d| d < THIN_KEYFRAME_GAP);
        if let Some(k) = &mut self.loss_keyframe {
            if new_loss {
                k.waiting = true;
                k.cleared = false;
            } else if clean && k.waiting {
                k.cleared = true;
            }
        }
        let (waiting, cleared) = self
            .loss_keyframe
            .map_or((false, false), |k| (k.waiting, k.cleared));
        if let Some(wait) = thinned
            && self.thin_held.is_none()
        {
            // Within the gap, at its end: the keyframe asked last may be lost with them.
            let gap_end = self.loss_keyframe.map(|k| k.at + THIN_KEYFRAME_GAP);
            self.thin_held = Some(gap_end.map_or(now + wait, |t| t.max(now + wait)));
        }
        let held = self.thin_held;
        let held_over = held.is_some_and(|t| now >= t);
        let ask =
            held_over || (cleared && !recent) || (held.is_none() && due && (new_loss || waiting));
        if ask {
            self.thin_held = None;
            self.loss_keyframe = Some(LossKeyframe {
                at: now,
                waiting: false,
                cleared: false,
            });
        }
        ask
    }

    /// Whether to probe at `now` for room padding may not look for (`unpadded`: none may
    /// now): the whole of a floor video the link carries only thinned (or past its
    /// budget), or the next step up while padding is off for costing the media. For a
    /// second every [`FLOOR_PROBE_EVERY`].
    pub fn probe_unpadded(&mut self, now: Instant, unpadded: bool) -> bool {
        if !unpadded {
            self.unpadded_since = None;
            return false;
        }
        let since = *self.unpadded_since.get_or_insert(now);
        let every = FLOOR_PROBE_EVERY.as_millis();
        now.saturating_duration_since(since).as_millis() % every >= every - 1000
    }

    /// The temporal layers the floor video gets, from `from`, when the budget carries
    /// `wanted`: fewer at once; more only as [`TEMPORAL_UP_HOLD`] says, and only if
    /// `may_rise`.
    pub fn bound_temporal(&mut self, now: Instant, from: u8, wanted: u8, may_rise: bool) -> u8 {
        let since = |at: Instant| now.saturating_duration_since(at);
        if wanted < from {
            let failed = self
                .temporal_up
                .is_some_and(|at| since(at) < UP_FAILED_WITHIN);
            if failed {
                let hold = self.temporal_hold.unwrap_or(TEMPORAL_UP_HOLD);
                self.temporal_hold = Some((hold * 2).min(LAYER_UP_HOLD_MAX));
                self.temporal_up = None;
            } else if from == crate::temporal::ALL_TEMPORAL {
                self.temporal_hold = None;
            }
            self.temporal_room = None;
            return wanted;
        }
        if wanted == from || !may_rise {
            self.temporal_room = None;
            return from;
        }
        let room = *self.temporal_room.get_or_insert(now);
        if since(room) < self.temporal_hold.unwrap_or(TEMPORAL_UP_HOLD) {
            return from;
        }
        self.temporal_room = None;
        self.temporal_up = Some(now);
        wanted
    }

    /// The time since paused time was last counted (none the first time), capped at a
    /// second: choices are made every 200 ms.
    pub fn count_until(&mut self, now: Instant) -> Duration {
        let since = self.counted.replace(now).unwrap_or(now);
        now.saturating_duration_since(since)
            .min(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests;
