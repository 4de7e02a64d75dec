//! Tests of the adaptation rules: holds, floors, bounds on going up, causes.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn r(
    budget: Option<u64>,
    takes: u64,
    floor: Option<u64>,
    dips: bool,
    loss: Option<f32>,
) -> Reading {
    Reading {
        budget,
        takes,
        floor,
        dips,
        loss,
        unpadded: true,
        lowest: 0,
        paused: false,
        proven: false,
    }
}

#[test]
fn a_short_dip_holds_a_long_one_goes_down_a_deep_one_at_once() {
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    let plan = a.plan(t0, &r(Some(900_000), 1_000_000, Some(200_000), true, None));
    assert_eq!(
        plan,
        Plan {
            budget: Some(1_000_000),
            floor: true,
            hold: true,
            keep_all: false,
        }
    );
    assert!(
        a.plan(
            t0 + 1000 * MS,
            &r(Some(900_000), 1_000_000, None, true, None)
        )
        .hold
    );
    let after = a.plan(
        t0 + DOWN_HOLD,
        &r(Some(900_000), 1_000_000, None, true, None),
    );
    assert_eq!((after.budget, after.hold), (Some(900_000), false));
    // Back above: the next dip is held again.
    assert!(
        !a.plan(
            t0 + 2 * DOWN_HOLD,
            &r(Some(1_100_000), 1_000_000, None, true, None)
        )
        .hold
    );
    assert!(
        a.plan(
            t0 + 3 * DOWN_HOLD,
            &r(Some(800_000), 1_000_000, None, true, None)
        )
        .hold
    );
    // Well under: no wait.
    let mut b = Adaptation::default();
    assert!(
        !b.plan(t0, &r(Some(700_000), 1_000_000, None, true, None))
            .hold
    );
    // A loss-based estimate: no wait either.
    let mut c = Adaptation::default();
    assert!(
        !c.plan(t0, &r(Some(900_000), 1_000_000, None, false, None))
            .hold
    );
    // Its receiver losing a quarter of its media: no wait, and down to what was sent
    // less an eighth, however high the estimate...
    let mut d = Adaptation::default();
    let lossy = d.plan(t0, &r(Some(2_000_000), 1_000_000, None, true, Some(0.25)));
    assert_eq!((lossy.budget, lossy.hold), (Some(875_000), false));
    // ...unless padding above the media may be what was lost.
    let mut padded = r(Some(2_000_000), 1_000_000, None, true, Some(0.25));
    padded.unpadded = false;
    assert_eq!(d.plan(t0, &padded).budget, Some(2_000_000));
}

#[test]
fn the_floor_lifts_only_after_seconds_well_under_it_with_losses() {
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    let lowest = Some(200_000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let floor = |a: &mut Adaptation, s, budget, loss| {
        a.plan(at(s), &r(Some(budget), 200_000, lowest, true, loss))
            .floor
    };
    // 0.8 of the floor layer for a minute, losing a tenth: the floor holds.
    assert!((0..60).all(|s| floor(&mut a, s, 160_000, Some(0.1))));
    // An estimate that fell far under it while the link carries most of it (GCC's
    // loss controller cutting and cutting): the floor holds.
    assert!((60..120).all(|s| floor(&mut a, s, 60_000, Some(0.35))));
    // Far under it and losing most: lifted once that lasted.
    assert!((120..124).all(|s| floor(&mut a, s, 60_000, Some(0.7))));
    assert!(!floor(&mut a, 124, 60_000, Some(0.7)));
    // Not back at 0.8 of it; back once the budget carries it.
    assert!(!floor(&mut a, 130, 160_000, Some(0.0)));
    assert!(floor(&mut a, 131, 200_000, Some(0.0)));
    // Far under it, its reports' shares lost swinging about the bar (retransmissions
    // counted when they arrive): lifted all the same, not at the first.
    let swinging = [0.55, 0.7, 0.25, 0.42, 0.51, 0.3, 0.6];
    let held: Vec<bool> = (140..)
        .zip(swinging)
        .map(|(s, l)| floor(&mut a, s, 60_000, Some(l)))
        .collect();
    assert_eq!(held, [true, true, true, true, false, false, false]);
    // Those losses count only so long: back at the floor, then under it again while
    // losing a third, the floor holds.
    assert!(floor(&mut a, 147, 200_000, Some(0.0)));
    assert!((148..160).all(|s| floor(&mut a, s, 60_000, Some(0.35))));
    // A budget its losses proved (a shaped link) far under it needs no losses more.
    let proven = |a: &mut Adaptation, s| {
        let reading = Reading {
            proven: true,
            ..r(Some(60_000), 200_000, lowest, true, Some(0.0))
        };
        a.plan(at(s), &reading).floor
    };
    assert!(floor(&mut a, 170, 200_000, Some(0.0)));
    assert!((171..175).all(|s| proven(&mut a, s)));
    assert!(!proven(&mut a, 175));
    // A receiver that reports no loss: the estimate alone decides.
    let mut b = Adaptation::default();
    assert!((0..4).all(|s| floor(&mut b, s, 60_000, None)));
    assert!(!floor(&mut b, 4, 60_000, None));
}

#[test]
fn going_up_waits_for_lasting_room_and_is_bounded() {
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    // Room for a moment (a probe's result), then none: nothing goes up.
    assert!(!a.may_go_up(t0, true, UP_HOLD, true));
    assert!(!a.may_go_up(t0 + 1000 * MS, true, UP_HOLD, true));
    assert!(!a.may_go_up(t0 + 1200 * MS, false, UP_HOLD, true));
    assert!(!a.may_go_up(t0 + 3000 * MS, true, UP_HOLD, true));
    assert!(a.may_go_up(t0 + 3000 * MS + UP_HOLD, true, UP_HOLD, true));
    // The next step waits as long again.
    assert!(!a.may_go_up(t0 + 4000 * MS + UP_HOLD, true, UP_HOLD, true));
    // Room all along: a burst, then one per refill, about 2 + 60 in 10 minutes.
    let t1 = t0 + Duration::from_secs(10);
    let ups = (0..600)
        .filter(|s| a.may_go_up(t1 + Duration::from_secs(*s), true, UP_HOLD, true))
        .count();
    assert!((60..=63).contains(&ups), "{ups} ups in 10 minutes");
    // Resuming paused videos takes no token: once a hold, whatever went before.
    let t2 = t1 + Duration::from_secs(600);
    let resumes = (0..60)
        .filter(|s| a.may_go_up(t2 + Duration::from_secs(*s), true, UP_HOLD, false))
        .count();
    assert_eq!(resumes, 30, "every {UP_HOLD:?} for a minute");
}

/// A camera of three layers (200 kbit/s, 500 kbit/s, 1.5 Mbit/s), all flowing, wanted
/// at layer `wanted`.
fn camera(wanted: u8) -> crate::selection::VideoItem {
    crate::selection::VideoItem {
        priority: 0,
        wanted: Some(wanted),
        rates: [200_000, 500_000, 1_500_000],
        usable: [true; 3],
        flowing: [true; 3],
        layers: 3,
        current: None,
    }
}

/// Its last choice, `target`, its view asking for layer `asked` then and before.
fn prior_asking(target: Option<u8>, asked: u8) -> Prior {
    Prior {
        target,
        asked: Some(asked),
        asked_before: Some(asked),
        usable: true,
    }
}

#[test]
fn a_layer_that_went_up_and_failed_waits_longer_for_the_next_try() {
    let item = camera(2);
    let prior = |target| prior_asking(target, 2);
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    // The allocation would go from the lowest to the top; `at` seconds in, what is
    // let through.
    let step = |a: &mut Adaptation, at: u64, from, to| {
        let mut targets = [to];
        a.bound_ups(
            t0 + Duration::from_secs(at),
            &mut targets,
            &[prior(from)],
            &[item],
            true,
            None,
        );
        targets[0]
    };
    assert_eq!(step(&mut a, 0, Some(0), Some(2)), Some(0));
    assert_eq!(step(&mut a, 4, Some(0), Some(2)), Some(0));
    // One layer at a time, after LAYER_UP_HOLD.
    assert_eq!(step(&mut a, 5, Some(0), Some(2)), Some(1));
    // It falls back soon: the link did not carry it.
    assert_eq!(step(&mut a, 8, Some(1), Some(0)), Some(0));
    // The next try waits twice as long.
    assert_eq!(step(&mut a, 9, Some(0), Some(2)), Some(0));
    assert_eq!(step(&mut a, 18, Some(0), Some(2)), Some(0));
    assert_eq!(step(&mut a, 19, Some(0), Some(2)), Some(1));
    // A paused video resumes after UP_HOLD only.
    let mut b = Adaptation::default();
    assert_eq!(step(&mut b, 0, None, Some(0)), None);
    assert_eq!(step(&mut b, 2, None, Some(0)), Some(0));
    // After a failed try, a layer waits twice as long; a paused video going up with
    // it comes back after UP_HOLD all the same, and the layer waits on.
    let mut d = Adaptation::default();
    assert_eq!(step(&mut d, 0, Some(0), Some(1)), Some(0));
    assert_eq!(step(&mut d, 5, Some(0), Some(1)), Some(1));
    assert_eq!(step(&mut d, 6, Some(1), Some(0)), Some(0));
    // Two videos, the first asking a layer up, the second (`second`: what it had) back.
    let two = |a: &mut Adaptation, at: u64, second| {
        let mut targets = [Some(1), Some(0)];
        let priors = [prior(Some(0)), prior(second)];
        a.bound_ups(
            t0 + Duration::from_secs(at),
            &mut targets,
            &priors,
            &[item; 2],
            true,
            None,
        );
        targets
    };
    assert_eq!(two(&mut d, 7, None), [Some(0), None]);
    assert_eq!(two(&mut d, 9, None), [Some(0), Some(0)]);
    assert_eq!(
        two(&mut d, 18, Some(0)),
        [Some(0), Some(0)],
        "not 10 s since the resume"
    );
    assert_eq!(two(&mut d, 19, Some(0)), [Some(1), Some(0)]);
    // Down from the top to the middle layer, which the publisher paused: to the
    // lowest, which arrives, at once.
    let mut c = Adaptation::default();
    let mut paused_middle = item;
    paused_middle.flowing = [true, false, true];
    let mut targets = [Some(1)];
    c.bound_ups(
        t0,
        &mut targets,
        &[prior(Some(2))],
        &[paused_middle],
        true,
        None,
    );
    assert_eq!(targets, [Some(0)]);
}

#[test]
fn a_video_that_pauses_again_soon_after_resuming_waits_for_more_budget() {
    let item = camera(0);
    let prior = |target| prior_asking(target, 0);
    let t0 = Instant::now();
    // `at` seconds in, with `budget` (kbit/s) from a TWCC estimate (`probed`) or
    // REMB: from `from` to `to`, what is let through.
    let step = |a: &mut Adaptation, at: u64, from, to, budget: u64, probed: bool| {
        let mut targets = [to];
        let at = t0 + Duration::from_secs(at);
        let probed = probed.then_some(budget * 1000);
        a.bound_ups(at, &mut targets, &[prior(from)], &[item], true, probed);
        targets[0]
    };
    let mut a = Adaptation::default();
    assert_eq!(step(&mut a, 0, None, Some(0), 450, true), None);
    assert_eq!(step(&mut a, 2, None, Some(0), 450, true), Some(0));
    // It pauses again: the budget it resumed with did not carry it. However long
    // the room for it lasts, it waits for a quarter more.
    assert_eq!(step(&mut a, 4, Some(0), None, 300, true), None);
    for at in [5, 8, 20] {
        assert_eq!(step(&mut a, at, None, Some(0), 550, true), None, "{at} s");
    }
    assert_eq!(step(&mut a, 21, None, Some(0), 600, true), None);
    assert_eq!(step(&mut a, 23, None, Some(0), 600, true), Some(0));
    // Again: a quarter over the higher of the two.
    assert_eq!(step(&mut a, 24, Some(0), None, 300, true), None);
    assert_eq!(step(&mut a, 25, None, Some(0), 700, true), None);
    assert_eq!(step(&mut a, 30, None, Some(0), 700, true), None);
    // Forgotten a minute later.
    assert_eq!(step(&mut a, 84, None, Some(0), 450, true), None);
    assert_eq!(step(&mut a, 86, None, Some(0), 450, true), Some(0));
    // A REMB receiver's estimate climbs only with what it receives: no bar.
    let mut b = Adaptation::default();
    assert_eq!(step(&mut b, 0, None, Some(0), 450, false), None);
    assert_eq!(step(&mut b, 2, None, Some(0), 450, false), Some(0));
    assert_eq!(step(&mut b, 3, Some(0), None, 300, false), None);
    assert_eq!(step(&mut b, 4, None, Some(0), 450, false), None);
    assert_eq!(step(&mut b, 6, None, Some(0), 450, false), Some(0));
}

#[test]
fn losses_ask_for_a_keyframe_as_they_thin_every_two_seconds_and_once_the_link_clears() {
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    // News of losses each time, and only once each.
    assert!(a.new_loss(t0, 0.05));
    assert!(!a.new_loss(t0, 0.05), "the same report again");
    assert!(!a.new_loss(t0 + MS, 0.02), "under THIN_LOSS");
    // Losses nothing more can leave out: a keyframe, then not before 2 s...
    assert!(a.keyframe_for_loss(t0, true, None, false));
    assert!(!a.keyframe_for_loss(t0 + 500 * MS, true, None, false));
    assert!(!a.keyframe_for_loss(t0 + 1000 * MS, false, None, false));
    // ... when the news that came meanwhile asks, without news of its own.
    assert!(a.keyframe_for_loss(t0 + LOSS_KEYFRAME_EVERY, false, None, false));
    assert!(!a.keyframe_for_loss(t0 + 2 * LOSS_KEYFRAME_EVERY, false, None, false));
    // Losses that thinned it ask a round later (the policer's tokens refill first),
    // or if they asked just before, once the gap is over: that keyframe is still on its
    // way, and may be lost with them.
    let t1 = t0 + 3 * LOSS_KEYFRAME_EVERY;
    thinned_asks_a_round_later(&mut a, t1 + THIN_KEYFRAME_DELAY);
    assert!(!a.keyframe_for_loss(t1 + 300 * MS, true, Some(THIN_KEYFRAME_DELAY), false));
    assert!(
        !a.keyframe_for_loss(t1 + 900 * MS, true, Some(THIN_KEYFRAME_DELAY), false),
        "within the gap"
    );
    let gap_over = t1 + THIN_KEYFRAME_DELAY + THIN_KEYFRAME_GAP;
    assert!(!a.keyframe_for_loss(gap_over - MS, false, None, false));
    assert!(
        a.keyframe_for_loss(gap_over, false, None, false),
        "once it is over"
    );
    assert!(
        !a.keyframe_for_loss(gap_over + 200 * MS, false, None, false),
        "once"
    );
    // Thinned just before the gap is over: a round later all the same.
    let t1 = gap_over + THIN_KEYFRAME_GAP;
    thinned_asks_a_round_later(&mut a, t1 + THIN_KEYFRAME_DELAY - 10 * MS);
    // Losses after that ask, then a clean report: the keyframe may have been lost with
    // them, and the link carries the next now; not within the gap (but then, without
    // waiting for another clean report), and once.
    let t2 = t1 + 2 * LOSS_KEYFRAME_EVERY;
    thinned_asks_a_round_later(&mut a, t2);
    assert!(!a.keyframe_for_loss(t2 + 300 * MS, true, None, false));
    assert!(a.new_clean(t2 + 500 * MS, 0.0));
    assert!(!a.new_clean(t2 + 500 * MS, 0.0), "the same report again");
    assert!(!a.new_clean(t2 + 600 * MS, 0.2), "lossy");
    assert!(
        !a.keyframe_for_loss(t2 + 500 * MS, false, None, true),
        "within the gap"
    );
    assert!(a.keyframe_for_loss(t2 + THIN_KEYFRAME_GAP, false, None, false));
    assert!(
        !a.keyframe_for_loss(t2 + THIN_KEYFRAME_GAP + 500 * MS, false, None, true),
        "asked once"
    );
    // Clean, then losses again: the link is not clean after all; the 2 s cadence asks.
    let t3 = t2 + 2 * LOSS_KEYFRAME_EVERY;
    thinned_asks_a_round_later(&mut a, t3);
    assert!(!a.keyframe_for_loss(t3 + 300 * MS, true, None, false));
    assert!(!a.keyframe_for_loss(t3 + 500 * MS, false, None, true));
    assert!(!a.keyframe_for_loss(t3 + 700 * MS, true, None, false));
    assert!(!a.keyframe_for_loss(t3 + THIN_KEYFRAME_GAP + 100 * MS, false, None, false));
    assert!(a.keyframe_for_loss(t3 + LOSS_KEYFRAME_EVERY, false, None, false));
}

/// Losses that thin the floor video a round before `asked`: held, then asked.
fn thinned_asks_a_round_later(a: &mut Adaptation, asked: Instant) {
    let thinned = asked - THIN_KEYFRAME_DELAY;
    assert!(
        !a.keyframe_for_loss(thinned, true, Some(THIN_KEYFRAME_DELAY), false),
        "held a round"
    );
    assert!(a.keyframe_for_loss(asked, false, None, false));
}

#[test]
fn temporal_layers_leave_at_once_and_come_back_after_a_growing_hold() {
    const ALL: u8 = crate::temporal::ALL_TEMPORAL;
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let hold = TEMPORAL_UP_HOLD.as_secs();
    assert_eq!(a.bound_temporal(at(0), ALL, 1, true), 1);
    assert_eq!(a.bound_temporal(at(1), 1, ALL, true), 1);
    // Padding off for costing the media: no coming back, and the wait starts over.
    assert_eq!(a.bound_temporal(at(3), 1, ALL, false), 1);
    assert_eq!(a.bound_temporal(at(4), 1, ALL, true), 1);
    assert_eq!(a.bound_temporal(at(3 + hold), 1, ALL, true), 1);
    let up = 4 + hold;
    assert_eq!(a.bound_temporal(at(up), 1, ALL, true), ALL);
    // Left out again soon: the next wait is twice as long.
    assert_eq!(a.bound_temporal(at(up + 2), ALL, 0, true), 0);
    assert_eq!(a.bound_temporal(at(up + 3), 0, 1, true), 0);
    let last = up + 3 + 2 * hold;
    assert_eq!(a.bound_temporal(at(last - 1), 0, 1, true), 0);
    assert_eq!(a.bound_temporal(at(last), 0, 1, true), 1);
}

#[test]
fn videos_pause_for_the_budget_only_once_losses_showed_the_link_short() {
    let mut a = Adaptation::default();
    let t0 = Instant::now();
    // Two lowest layers of 200 kbit/s each, a budget for one.
    let link = |loss: Option<f32>, budget: u64, paused: bool| Reading {
        lowest: 400_000,
        paused,
        ..r(Some(budget), 400_000, Some(200_000), true, loss)
    };
    let keeps =
        |a: &mut Adaptation, s: u64, l: &Reading| a.plan(t0 + Duration::from_secs(s), l).keep_all;
    assert!(
        keeps(&mut a, 0, &link(Some(0.0), 200_000, false)),
        "no losses: kept"
    );
    assert!(
        keeps(&mut a, 1, &link(Some(0.04), 200_000, false)),
        "a few: kept"
    );
    assert!(
        !keeps(&mut a, 2, &link(Some(0.2), 200_000, false)),
        "losses: the budget"
    );
    // One paused: still the budget, also once the losses end and room comes back ...
    assert!(!keeps(&mut a, 3, &link(Some(0.0), 200_000, true)));
    assert!(!keeps(&mut a, 4, &link(Some(0.0), 500_000, true)));
    // ... until both flow within it.
    assert!(keeps(&mut a, 5, &link(Some(0.0), 500_000, false)));
    assert!(keeps(&mut a, 6, &link(Some(0.0), 200_000, false)));
    // Without reports, or with a loss-based estimate, the estimate is all there is.
    assert!(!keeps(&mut a, 7, &link(None, 200_000, false)));
    let loss_based = Reading {
        dips: false,
        ..link(Some(0.0), 200_000, false)
    };
    assert!(!keeps(&mut a, 8, &loss_based));
}

#[test]
fn each_change_has_its_cause() {
    use Cause::*;
    let prior = |target, asked, asked_before, usable| Prior {
        target,
        asked,
        asked_before,
        usable,
    };
    let steady = |target| prior(target, Some(2), Some(2), true);
    assert_eq!(steady(Some(1)).cause(Some(1)), None);
    assert_eq!(steady(Some(2)).cause(Some(1)), Some(BandwidthDown));
    assert_eq!(steady(Some(1)).cause(None), Some(BandwidthDown));
    assert_eq!(steady(None).cause(Some(0)), Some(BandwidthUp));
    assert_eq!(
        prior(Some(2), Some(2), Some(2), false).cause(Some(1)),
        Some(Publisher)
    );
    assert_eq!(prior(None, Some(2), None, true).cause(Some(2)), Some(View));
    assert_eq!(
        prior(Some(2), Some(0), Some(2), true).cause(Some(0)),
        Some(View)
    );
    assert_eq!(prior(Some(0), None, Some(0), true).cause(None), Some(View));
}
