//! What each subscriber receives in a large call, as pure functions: who speaks (from
//! RFC 6464 audio levels), and which layer of each video fits its bandwidth.

use protocol::MAX_LAYERS;

/// Louder than this (dBov, RFC 6464: 0 is loudest, -127 silence) counts as voice.
const VOICE_DBOV: i8 = -50;

/// Audio packets per scoring window of [`SPEECH_WINDOW_MS`] (20 ms Opus frames).
const PACKETS_PER_WINDOW: u32 = 5;

/// The scoring window, the interval of [`Speech::tick`].
pub const SPEECH_WINDOW_MS: u64 = 100;

/// A smoothed score above this means speaking (about a third of the windows voiced at
/// -40 dBov).
const SPEAKING: f32 = 20.0;

/// How loud one audio track has been lately.
#[derive(Debug, Clone, Copy, Default)]
pub struct Speech {
    /// Loudness summed over the voiced packets of the current window.
    sum: u32,
    /// Smoothed score of past windows, 0 (silent) to 127 (as loud as can be, every packet).
    score: f32,
}

impl Speech {
    /// One audio packet with its level extension (`None`: the extension is absent).
    pub fn packet(&mut self, level: Option<i8>) {
        if let Some(level) = level
            && level > VOICE_DBOV
        {
            self.sum += u32::from(127 - level.unsigned_abs().min(127));
        }
    }

    /// Ends a window (call every [`SPEECH_WINDOW_MS`]); returns the smoothed score.
    /// Missing packets (DTX, loss) count as silence.
    pub fn tick(&mut self) -> f32 {
        let window = (self.sum as f32 / PACKETS_PER_WINDOW as f32).min(127.0);
        self.sum = 0;
        // About 300 ms to rise, a little longer to fall.
        let alpha = if window > self.score { 0.4 } else { 0.25 };
        self.score += alpha * (window - self.score);
        self.score
    }

    pub fn score(&self) -> f32 {
        self.score
    }

    pub fn speaking(&self) -> bool {
        is_speaking(self.score)
    }
}

/// Whether a smoothed score means speaking.
pub fn is_speaking(score: f32) -> bool {
    score > SPEAKING
}

/// A new loudest speaker takes over only when this much louder than the current one, or
/// when the current one stops speaking: no flapping between two people talking at once.
const DOMINANT_MARGIN: f32 = 1.3;

/// The room's dominant speaker after a tick, given each participant's loudest score.
pub fn dominant<P: Copy + PartialEq>(current: Option<P>, scores: &[(P, f32)]) -> Option<P> {
    let loudest = scores
        .iter()
        .filter(|(_, s)| *s > SPEAKING)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some(&(loudest, top)) = loudest else {
        return current; // Nobody speaks: whoever spoke last stays the speaker.
    };
    let held = current.and_then(|c| scores.iter().find(|(p, _)| *p == c).map(|(_, s)| *s));
    match (current, held) {
        (Some(c), Some(s)) if s > SPEAKING && top < s * DOMINANT_MARGIN => Some(c),
        _ => Some(loudest),
    }
}

/// One video track a subscriber may receive, as [`allocate`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoItem {
    /// Lower is more important: it gets bandwidth first and pauses last.
    pub priority: u32,
    /// The highest layer it should get with bandwidth to spare; `None`: not shown.
    pub wanted: Option<u8>,
    /// Bitrate of each layer (bit/s); only the first `layers` count.
    pub rates: [u64; MAX_LAYERS],
    /// Which layers can be chosen (received lately, or paused and resumable).
    pub usable: [bool; MAX_LAYERS],
    /// Which arrive now (not paused at the publisher): going down to one of them waits
    /// for no encoder to start.
    pub flowing: [bool; MAX_LAYERS],
    pub layers: u8,
    /// The layer forwarded now.
    pub current: Option<u8>,
}

/// Going up past the current layer needs this much headroom, so that an estimate close to
/// a layer's rate does not switch up and down.
pub const UP_HEADROOM: f64 = 1.15;

/// Chooses each item's layer: with `budget` (bit/s) `None`, the wanted layer (or the
/// nearest usable below it, else above); with a budget, the most important items first at
/// their lowest layer, those that do not fit paused, then upgrades in order of importance
/// while the budget lasts. The `keep` most important items shown keep their lowest layer
/// even when it does not fit (and leave nothing for the rest), as a single stream always
/// does: with 1 (the floor), a dip of the estimate pauses the others, never the last
/// picture; with `usize::MAX`, nothing pauses.
pub fn allocate(budget: Option<u64>, items: &[VideoItem], keep: usize) -> Vec<Option<u8>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].priority);
    let mut targets: Vec<Option<u8>> = vec![None; items.len()];
    let usable = |it: &VideoItem, l: u8| l < it.layers && it.usable[usize::from(l)];
    let Some(budget) = budget else {
        for (i, it) in items.iter().enumerate() {
            targets[i] = it.wanted.and_then(|w| {
                (0..=w.min(it.layers.saturating_sub(1)))
                    .rev()
                    .find(|&l| usable(it, l))
                    .or_else(|| (w..it.layers).find(|&l| usable(it, l)))
            });
        }
        return targets;
    };
    let mut left = budget;
    let mut kept = 0;
    for &i in &order {
        let it = &items[i];
        if it.wanted.is_none() {
            continue;
        }
        let Some(lowest) = (0..it.layers).find(|&l| usable(it, l)) else {
            continue;
        };
        let rate = it.rates[usize::from(lowest)];
        if rate <= left {
            left -= rate;
            targets[i] = Some(lowest);
        } else if it.layers == 1 || kept < keep {
            // A single stream has nothing lower to fall back to, and the floor is the
            // picture this subscriber needs most (and each kept one, a picture the link
            // was not shown to lack room for): pausing it would be worse than the
            // congestion. It goes on and leaves nothing for the rest.
            left = 0;
            targets[i] = Some(lowest);
        }
        kept += 1;
    }
    for &i in &order {
        let it = &items[i];
        let (Some(mut at), Some(wanted)) = (targets[i], it.wanted) else {
            continue;
        };
        while let Some(next) = (at + 1..=wanted.min(it.layers - 1)).find(|&l| usable(it, l)) {
            let extra = it.rates[usize::from(next)].saturating_sub(it.rates[usize::from(at)]);
            let needed = if it.current.is_some_and(|c| next > c) {
                (extra as f64 * UP_HEADROOM) as u64
            } else {
                extra
            };
            if needed > left {
                break;
            }
            left -= extra;
            at = next;
        }
        targets[i] = Some(at);
    }
    targets
}

/// What the chosen `targets` of `items` cost (bit/s), and the cost of the cheapest step
/// up towards a wanted layer, if any item is below its wanted one.
pub fn next_step(items: &[VideoItem], targets: &[Option<u8>]) -> (u64, Option<u64>) {
    let mut allocated = 0;
    let mut step: Option<u64> = None;
    for (it, target) in items.iter().zip(targets) {
        let rate = |l: u8| it.rates[usize::from(l)];
        if let Some(t) = target {
            allocated += rate(*t);
        }
        let Some(wanted) = it.wanted else {
            continue;
        };
        let from = target.map_or(0, |t| t + 1);
        let next =
            (from..=wanted.min(it.layers.saturating_sub(1))).find(|&l| it.usable[usize::from(l)]);
        if let Some(next) = next {
            let cost = rate(next) - target.map_or(0, rate).min(rate(next));
            step = Some(step.map_or(cost, |s| s.min(cost)));
        }
    }
    (allocated, step)
}

/// Intervals a [`RateMeter`] keeps: 1.6 s of the shard's 200 ms rate ticks.
pub const RATE_WINDOW: usize = 8;

/// The sustained bitrate of one stream, fed the bytes of each interval: the median of
/// its last [`RATE_WINDOW`] intervals (the lower one of an even count). A keyframe's
/// burst, which fills one or two intervals, does not move it, so a layer's rate for
/// allocation is what the layer takes, not what its last keyframe took.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateMeter {
    bytes: u64,
    recent: [u64; RATE_WINDOW],
    filled: usize,
    next: usize,
}

impl RateMeter {
    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Ends an interval of `secs` seconds.
    pub fn tick(&mut self, secs: f64) {
        self.recent[self.next] = (self.bytes as f64 * 8.0 / secs) as u64;
        self.bytes = 0;
        self.next = (self.next + 1) % RATE_WINDOW;
        self.filled = (self.filled + 1).min(RATE_WINDOW);
    }

    /// Bit/s; `None` before the first interval ends.
    pub fn bps(&self) -> Option<u64> {
        if self.filled == 0 {
            return None;
        }
        let mut sorted = self.recent;
        let sorted = &mut sorted[..self.filled];
        sorted.sort_unstable();
        Some(sorted[(self.filled - 1) / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_rises_with_voice_and_falls_with_silence() {
        let mut s = Speech::default();
        for _ in 0..5 {
            for _ in 0..5 {
                s.packet(Some(-30));
            }
            s.tick();
        }
        assert!(s.speaking(), "score {}", s.score());
        let loud = s.score();
        for _ in 0..3 {
            for _ in 0..5 {
                s.packet(Some(-127)); // Comfort noise.
            }
            s.tick();
        }
        assert!(s.score() < loud);
        for _ in 0..10 {
            s.tick(); // DTX: no packets at all.
        }
        assert!(!s.speaking(), "score {}", s.score());
    }

    #[test]
    fn quiet_noise_is_not_speech() {
        let mut s = Speech::default();
        for _ in 0..20 {
            for _ in 0..5 {
                s.packet(Some(-60));
            }
            s.packet(None);
            s.tick();
        }
        assert_eq!(s.score(), 0.0);
    }

    #[test]
    fn the_dominant_speaker_holds_until_clearly_beaten_or_silent() {
        assert_eq!(dominant(None, &[(1, 5.0), (2, 10.0)]), None);
        assert_eq!(dominant(None, &[(1, 50.0), (2, 60.0)]), Some(2));
        // 2 speaks, 1 is a little louder: 2 holds.
        assert_eq!(dominant(Some(2), &[(1, 70.0), (2, 60.0)]), Some(2));
        // Much louder: 1 takes over.
        assert_eq!(dominant(Some(2), &[(1, 90.0), (2, 60.0)]), Some(1));
        // 2 stopped: 1 takes over at once.
        assert_eq!(dominant(Some(2), &[(1, 25.0), (2, 3.0)]), Some(1));
        // Nobody speaks, or 2 left: the last speaker stays, or the loudest takes over.
        assert_eq!(dominant(Some(2), &[(1, 3.0), (2, 3.0)]), Some(2));
        assert_eq!(dominant(Some(2), &[(1, 30.0)]), Some(1));
    }

    const RATES: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn item(priority: u32, wanted: Option<u8>) -> VideoItem {
        VideoItem {
            priority,
            wanted,
            rates: RATES,
            usable: [true; 3],
            flowing: [true; 3],
            layers: 3,
            current: None,
        }
    }

    /// Without the floor, as before it existed.
    fn allocate_(budget: Option<u64>, items: &[VideoItem]) -> Vec<Option<u8>> {
        allocate(budget, items, 0)
    }

    #[test]
    fn the_floor_keeps_the_most_important_video_at_its_lowest_layer() {
        let items = [item(3, Some(0)), item(1, Some(2)), item(2, Some(0))];
        // Under even one lowest layer: the speaker stays on its lowest, the rest pause.
        assert_eq!(
            allocate(Some(100_000), &items, 1),
            vec![None, Some(0), None]
        );
        // Room for the speaker's lowest and one thumbnail: as without the floor.
        assert_eq!(
            allocate(Some(310_000), &items, 1),
            allocate_(Some(310_000), &items)
        );
        // The floor goes to the most important video shown, not to one hidden.
        let hidden = [item(0, None), item(5, Some(2))];
        assert_eq!(allocate(Some(10_000), &hidden, 1), vec![None, Some(0)]);
        // Kept all: every one shown on its lowest, nothing higher.
        assert_eq!(
            allocate(Some(100_000), &items, usize::MAX),
            vec![Some(0), Some(0), Some(0)]
        );
        assert_eq!(
            allocate(Some(100_000), &hidden, usize::MAX),
            vec![None, Some(0)]
        );
    }

    #[test]
    fn without_a_budget_each_gets_what_it_wants() {
        let mut b = item(2, Some(1));
        b.usable = [true, false, true]; // The middle layer is not arriving.
        let mut c = item(3, Some(2));
        c.usable = [true, false, false];
        let items = [item(1, Some(2)), b, c, item(4, None)];
        assert_eq!(
            allocate_(None, &items),
            vec![Some(2), Some(0), Some(0), None]
        );
    }

    #[test]
    fn a_short_budget_goes_to_the_most_important_first() {
        let items = [item(3, Some(0)), item(1, Some(2)), item(2, Some(0))];
        // Everything fits.
        assert_eq!(
            allocate_(Some(2_000_000), &items),
            vec![Some(0), Some(2), Some(0)]
        );
        // Thumbnails first, then the speaker up as far as it goes.
        assert_eq!(
            allocate_(Some(900_000), &items),
            vec![Some(0), Some(1), Some(0)]
        );
        // Not even every thumbnail: the least important pauses.
        assert_eq!(
            allocate_(Some(310_000), &items),
            vec![None, Some(0), Some(0)]
        );
        assert_eq!(allocate_(Some(100_000), &items), vec![None, None, None]);
    }

    #[test]
    fn a_single_stream_is_never_paused_for_bandwidth() {
        let mut screen = item(0, Some(0));
        screen.layers = 1;
        screen.rates = [2_500_000, 0, 0];
        let items = [screen, item(1, Some(2))];
        assert_eq!(allocate_(Some(1_000_000), &items), vec![Some(0), None]);
    }

    #[test]
    fn going_up_needs_headroom_staying_does_not() {
        let mut it = item(1, Some(2));
        it.current = Some(1);
        // Exactly enough for the top layer: not enough to go up to it...
        assert_eq!(allocate_(Some(1_500_000), &[it]), vec![Some(1)]);
        // ...but enough to stay on it.
        it.current = Some(2);
        assert_eq!(allocate_(Some(1_500_000), &[it]), vec![Some(2)]);
        it.current = Some(1);
        assert_eq!(allocate_(Some(1_700_000), &[it]), vec![Some(2)]);
    }

    #[test]
    fn the_next_step_is_the_cheapest_upgrade() {
        let mut speaker = item(1, Some(2));
        speaker.current = Some(1);
        let items = [speaker, item(2, Some(0)), item(3, Some(0))];
        // All there: nothing to step up to.
        assert_eq!(
            next_step(&items, &[Some(2), Some(0), Some(0)]),
            (1_800_000, None)
        );
        // The speaker one below, a thumbnail paused: resuming the thumbnail is cheaper.
        assert_eq!(
            next_step(&items, &[Some(1), Some(0), None]),
            (650_000, Some(150_000))
        );
        assert_eq!(
            next_step(&items, &[Some(1), Some(0), Some(0)]),
            (800_000, Some(1_000_000))
        );
    }

    #[test]
    fn a_rate_is_sustained_a_keyframe_burst_does_not_move_it() {
        let mut m = RateMeter::default();
        assert_eq!(m.bps(), None);
        let interval = |m: &mut RateMeter, bytes| {
            m.add(bytes);
            m.tick(0.2);
        };
        interval(&mut m, 5_000); // 200 kbit/s
        assert_eq!(m.bps(), Some(200_000));
        for _ in 0..6 {
            interval(&mut m, 5_000);
        }
        // A keyframe four times a frame's size: one interval at 350 kbit/s, and a layer
        // switch it causes would be its own doing.
        interval(&mut m, 8_750);
        assert_eq!(m.bps(), Some(200_000));
        interval(&mut m, 5_000);
        assert_eq!(m.bps(), Some(200_000));
        // The stream really halves: the rate follows within half the window.
        for _ in 0..RATE_WINDOW / 2 + 1 {
            interval(&mut m, 2_500);
        }
        assert_eq!(m.bps(), Some(100_000));
    }
}
