//! Sans-IO tests of how a subscriber's layers follow its bandwidth (issue 24): the most
//! important video keeps its lowest layer through a link just under it, pauses only on
//! a link far under it while the audio goes on, comes back when the link does (also for
//! a receiver that reports only REMB), and switches layers a few times a minute at most;
//! no video pauses before the link loses packets; just under the top layer, the picture
//! breaks only until the switch down; on a policer, keyframes several frames large
//! arrive whole (the link shaped to what it proved to carry).
//! Virtual time, real str0m clients, links policed in the harness.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::{Duration, Instant};

use common::{
    Net, Received, THUMBNAILS, VideoShape, between, everyone, large_room, layer_runs, undecodable,
};
use protocol::{Quality, Source, TrackId, TrackQuality};
use sfu_core::adaptation::Frozen;
use sfu_core::shard::ShardConfig;
use str0m::bwe::Bitrate;
use str0m::media::Mid;

const SIMULCAST: &[&str] = &["q", "h", "f"];

/// Alice publishes a microphone and a three-layer camera (about 200 kbit/s, 400 kbit/s
/// and 1 Mbit/s); Bob only receives, with TWCC unless `remb_only`.
fn two_party(remb_only: bool) -> Net {
    two_party_with(remb_only, VideoShape::default())
}

fn two_party_with(remb_only: bool, video: VideoShape) -> Net {
    two_party_in(ShardConfig::default(), remb_only, video)
}

fn two_party_in(config: ShardConfig, remb_only: bool, video: VideoShape) -> Net {
    let mut net = Net::new(config);
    net.video = video;
    let alice = net.join("alice", everyone());
    net.negotiate_layers(
        alice,
        &[(Source::Microphone, &[]), (Source::Camera, SIMULCAST)],
    );
    net.join_without_twcc = remb_only;
    let bob = net.join("bob", everyone());
    net.negotiate(bob, &[]);
    net
}

/// The longest time between two packets of `received` from `from` to `to` (the ends
/// count as packets).
fn longest_gap(received: &[Received], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = between(received, from, to).iter().map(|r| r.at).collect();
    times.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for t in times.into_iter().chain([to]) {
        longest = longest.max(t - last);
        last = t;
    }
    longest
}

/// How long after `from` the video in `received` came back for good: the start of its
/// last run of packets less than a second apart, if that lasts until `to`. (Packets of
/// before, resent, that arrive later are not the video coming back.)
fn back_for_good(received: &[Received], from: Instant, to: Instant) -> Option<Duration> {
    let mut times: Vec<Instant> = between(received, from, to).iter().map(|r| r.at).collect();
    times.sort();
    let last = *times.last()?;
    if to - last > Duration::from_secs(1) {
        return None;
    }
    let mut start = times[0];
    for w in times.windows(2) {
        if w[1] - w[0] > Duration::from_secs(1) {
            start = w[1];
        }
    }
    Some(start - from)
}

/// What bob's link delivered, bit/s, while `net` ran for `secs` seconds.
fn delivered_bps(net: &mut Net, bob: usize, secs: u64) -> u64 {
    let before = net.client(bob).downlink.delivered;
    net.run(Duration::from_secs(secs));
    (net.client(bob).downlink.delivered - before) * 8 / secs
}

/// Bob's view of alice's camera at `quality`.
fn bob_views(net: &mut Net, camera: TrackId, quality: Quality) {
    net.view(
        1,
        vec![],
        vec![TrackQuality {
            track_id: camera,
            quality,
        }],
    );
}

/// What the lowest layer of `camera` and the audio take on bob's wire, bit/s: he views
/// it low for a while, then high again.
fn lowest_on_the_wire(net: &mut Net, bob: usize, camera: TrackId) -> u64 {
    bob_views(net, camera, Quality::Low);
    net.run(Duration::from_secs(3));
    let lowest = delivered_bps(net, bob, 5);
    bob_views(net, camera, Quality::High);
    net.run(Duration::from_secs(4));
    lowest
}

#[test]
fn on_a_link_just_under_its_lowest_layer_the_only_video_keeps_that_layer() {
    let mut net = two_party(false);
    let (bob, camera, mic) = (
        1,
        net.track_of(0, Source::Camera),
        net.track_of(0, Source::Microphone),
    );
    net.run(Duration::from_secs(4));
    let lowest = lowest_on_the_wire(&mut net, bob, camera);
    // The link falls to 0.9 of that, for two minutes.
    net.clients[bob].downlink.cap_bps = Some(lowest * 9 / 10);
    let capped = net.now;
    net.run(Duration::from_secs(120));
    let video = &net.client(bob).received[&camera];
    let settled = capped + Duration::from_secs(10);
    let during = between(video, settled, net.now);
    let runs = layer_runs(&during);
    assert_eq!(runs, vec![0], "bob keeps the lowest layer, nothing else");
    let gap = longest_gap(video, settled, net.now);
    assert!(
        gap < Duration::from_secs(1),
        "bob's video stopped for {gap:?} on a link of {} kbit/s (the lowest layer takes {})",
        lowest * 9 / 10000,
        lowest / 1000
    );
    // From the top layer down, and then not one switch more in two minutes.
    let all = between(video, capped, net.now);
    let switches = layer_runs(&all).len() - 1;
    assert!(switches <= 2, "{switches} switches: {:?}", layer_runs(&all));
    assert!(
        longest_gap(&net.client(bob).received[&mic], settled, net.now) < Duration::from_millis(500)
    );
    println!(
        "link at {} kbit/s, lowest layer and audio {} kbit/s: layers {:?}, longest video gap {gap:?}, {} datagrams dropped",
        lowest * 9 / 10000,
        lowest / 1000,
        layer_runs(&all),
        net.client(bob).downlink.dropped
    );
}

#[test]
fn just_under_its_top_layer_the_picture_breaks_only_until_the_switch_down() {
    for share in [85, 90, 95] {
        let mut net = two_party(false);
        let (bob, camera) = (1, net.track_of(0, Source::Camera));
        net.run(Duration::from_secs(8));
        let top = delivered_bps(&mut net, bob, 4);
        // The link falls to `share` % of what the top layer and the audio take.
        net.clients[bob].downlink.cap_bps = Some(top * share / 100);
        let capped = net.now;
        net.run(Duration::from_secs(30));
        let video = between(&net.client(bob).received[&camera], capped, net.now);
        let down = video
            .iter()
            .find(|r| r.layer < 2 && r.keyframe)
            .expect("bob goes down a layer")
            .at;
        // The top layer breaks until the switch. Below it, what the link loses (as the
        // estimate climbs back, and padding and probes take its tokens) is all resent,
        // however much of the top layer was resent just before: until bob tries the
        // top layer again (those lost in the last second may still be on their way).
        let again = video.iter().find(|r| r.at > down && r.layer == 2);
        let until = again
            .map_or(net.now, |r| r.at)
            .min(net.now - Duration::from_secs(1));
        let stretches: Vec<_> = undecodable(&video, net.now)
            .iter()
            .map(|(at, long)| (*at - capped, *long))
            .collect();
        let below: Vec<_> = stretches
            .iter()
            .filter(|(at, _)| *at >= down - capped && *at < until - capped)
            .collect();
        assert!(
            below.is_empty(),
            "at {share} %: the picture broke below the top layer (down {:?} after the cap, \
             up again {:?}), (when, how long): {below:?}",
            down - capped,
            until - capped
        );
        println!(
            "link at {share} % of {} kbit/s: layers {:?}, down {:?} and up {:?} after the \
             cap, undecodable (when, how long) {stretches:?}, {} datagrams dropped",
            top / 1000,
            layer_runs(&video),
            down - capped,
            again.map(|r| r.at - capped),
            net.client(bob).downlink.dropped
        );
    }
}

/// What bob's link does for 60 s at `share` of what alice's lowest layer and audio take,
/// her camera sent as `video`: the video packets it delivered after the first 10 s,
/// the datagrams it dropped then, the longest gaps of video and audio, and the layers.
struct UnderTheFloor {
    video: Vec<Received>,
    dropped: u64,
    sent: u64,
    video_gap: Duration,
    audio_gap: Duration,
    layers: Vec<u8>,
    thinned: u64,
    /// How far from the first picture left out the publisher was asked for a keyframe
    /// (the nearest request in the first 10 s of the cap).
    keyframe_near_thinning: Option<Duration>,
}

fn under_the_floor(video: VideoShape, share: f64) -> UnderTheFloor {
    let mut net = two_party_with(false, video);
    let (bob, camera, mic) = (
        1,
        net.track_of(0, Source::Camera),
        net.track_of(0, Source::Microphone),
    );
    net.run(Duration::from_secs(4));
    let lowest = lowest_on_the_wire(&mut net, bob, camera);
    net.clients[bob].downlink.cap_bps = Some((lowest as f64 * share) as u64);
    let capped = net.now;
    let (mut thinned_at, mut asked_at) = (None, Vec::new());
    let mut asked = net.client(0).keyframe_requests;
    for _ in 0..100 {
        net.run(Duration::from_millis(100));
        if thinned_at.is_none() && net.shard.counters.thinned > 0 {
            thinned_at = Some(net.now);
        }
        if net.client(0).keyframe_requests > asked {
            asked = net.client(0).keyframe_requests;
            asked_at.push(net.now);
        }
    }
    let keyframe_near_thinning = thinned_at.and_then(|t| {
        asked_at
            .iter()
            .map(|a| {
                a.saturating_duration_since(t)
                    .max(t.saturating_duration_since(*a))
            })
            .min()
    });
    let settled = net.now;
    let (dropped, delivered) = {
        let l = &net.client(bob).downlink;
        (l.dropped, l.packets)
    };
    net.run(Duration::from_secs(50));
    let l = &net.client(bob).downlink;
    let received = &net.client(bob).received;
    UnderTheFloor {
        video: between(&received[&camera], settled, net.now),
        dropped: l.dropped - dropped,
        sent: l.dropped + l.packets - dropped - delivered,
        video_gap: longest_gap(&received[&camera], settled, net.now),
        audio_gap: longest_gap(&received[&mic], settled, net.now),
        layers: layer_runs(&between(&received[&camera], capped, net.now)),
        thinned: net.shard.counters.thinned,
        keyframe_near_thinning,
    }
}

#[test]
fn under_its_lowest_layer_the_floor_video_leaves_out_temporal_layers_not_packets() {
    let temporal = VideoShape {
        temporal: true,
        ..VideoShape::default()
    };
    // A link at 0.75 of the lowest layer and the audio: the floor holds that layer.
    let thinned = under_the_floor(temporal, 0.75);
    let whole = under_the_floor(VideoShape::default(), 0.75);
    let loss = |u: &UnderTheFloor| u.dropped as f64 / u.sent.max(1) as f64;
    let tl2 = thinned
        .video
        .iter()
        .filter(|r| r.temporal.is_some_and(|(tid, _)| tid == 2))
        .count();
    println!(
        "link at 0.75 of the lowest layer: with temporal layers {} of {} datagrams dropped, \
         {} packets left out, {tl2} of {} video packets received of TL2, longest video gap \
         {:?}, audio {:?}; a single temporal layer: {} of {} dropped, video gap {:?}, \
         audio {:?}",
        thinned.dropped,
        thinned.sent,
        thinned.thinned,
        thinned.video.len(),
        thinned.video_gap,
        thinned.audio_gap,
        whole.dropped,
        whole.sent,
        whole.video_gap,
        whole.audio_gap,
    );
    assert_eq!(thinned.layers.last(), Some(&0), "{:?}", thinned.layers);
    assert!(thinned.layers.len() <= 2, "{:?}", thinned.layers);
    assert!(thinned.thinned > 0, "pictures of the upper layers left out");
    // What the link dropped before the thinning may be a picture the next ones need: the
    // publisher is asked for a keyframe at once (a browser would wait 3 s to ask).
    assert!(
        thinned
            .keyframe_near_thinning
            .is_some_and(|d| d <= Duration::from_millis(300)),
        "keyframe asked {:?} from the first picture left out",
        thinned.keyframe_near_thinning
    );
    assert!(
        tl2 * 5 < thinned.video.len(),
        "TL2 mostly left out: {tl2} of {}",
        thinned.video.len()
    );
    assert!(thinned.video_gap < Duration::from_millis(700));
    assert!(thinned.audio_gap < Duration::from_millis(500));
    assert!(
        loss(&thinned) * 1.5 < loss(&whole),
        "thinned, the link drops {:.3}; whole, {:.3}",
        loss(&thinned),
        loss(&whole)
    );
    // The picture ids a receiver sees go on without a gap: for each packet that follows
    // the one before it, a new picture is the next picture id.
    let mut packets: Vec<&Received> = thinned.video.iter().collect();
    packets.sort_by_key(|r| r.seq_no);
    packets.dedup_by_key(|r| r.seq_no);
    let mut new_pictures = 0;
    for w in packets.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.seq_no == a.seq_no + 1 && b.time != a.time {
            let (pa, pb) = (a.temporal.unwrap().1, b.temporal.unwrap().1);
            assert_eq!(pb, (pa + 1) & 0x7fff, "picture ids at {a:?} and {b:?}");
            new_pictures += 1;
        }
    }
    assert!(new_pictures > 100, "{new_pictures} pictures checked");
}

#[test]
fn down_from_the_top_layer_for_losses_under_the_lowest_the_floor_video_comes_thinned() {
    let temporal = VideoShape {
        temporal: true,
        ..VideoShape::default()
    };
    let mut net = two_party_with(false, temporal);
    let (bob, camera) = (1, net.track_of(0, Source::Camera));
    net.run(Duration::from_secs(8));
    let top = delivered_bps(&mut net, bob, 4);
    let layers = layer_runs(&net.client(bob).received[&camera]);
    assert_eq!(layers.last(), Some(&2), "bob at the top layer: {layers:?}");
    // The link falls to an eighth of what the top layer and the audio take (0.7 of what
    // the lowest and the audio take): the losses of the layer above say it delivers
    // less than the lowest layer takes whole.
    net.clients[bob].downlink.cap_bps = Some(top / 8);
    let capped = net.now;
    net.run(Duration::from_secs(10));
    let video = between(&net.client(bob).received[&camera], capped, net.now);
    let down = video
        .iter()
        .find(|r| r.layer == 0 && r.keyframe)
        .expect("bob comes down to the lowest layer")
        .at;
    // From its keyframe on, the lowest layer leaves its top temporal layer out at once,
    // not after 2.5 s of losing as much (and a keyframe more, asked for those).
    let first = between(&video, down, down + Duration::from_millis(2500));
    let tl2 = first
        .iter()
        .filter(|r| r.layer == 0 && r.temporal.is_some_and(|(tid, _)| tid == 2))
        .count();
    let stretches: Vec<_> = undecodable(&video, net.now)
        .iter()
        .map(|(at, long)| (*at - capped, *long))
        .collect();
    println!(
        "{} kbit/s to an eighth: layers {:?}, down {:?} after the cap, {tl2} of {} packets \
         in the 2.5 s after of TL2, undecodable (when, how long) {stretches:?}",
        top / 1000,
        layer_runs(&video),
        down - capped,
        first.len()
    );
    assert_eq!(tl2, 0, "TL2 of the lowest layer in its first 2.5 s");
    let tl0 = first
        .iter()
        .filter(|r| r.layer == 0 && r.temporal.is_some_and(|(tid, _)| tid == 0))
        .count();
    assert!(tl0 > 10, "{tl0} packets of its base temporal layer then");
    // Below the top layer the picture hardly breaks (started whole, it broke 5.2 s of
    // the rest, measured 2026-12-04).
    let after: Duration = stretches
        .iter()
        .filter(|(at, _)| *at >= down - capped)
        .map(|(_, long)| *long)
        .sum();
    assert!(
        after < Duration::from_secs(1),
        "broken {after:?} after the switch down"
    );
}

#[test]
fn on_a_link_far_under_any_layer_the_video_pauses_the_audio_goes_on_and_both_come_back() {
    let mut net = two_party(false);
    let (bob, camera, mic) = (
        1,
        net.track_of(0, Source::Camera),
        net.track_of(0, Source::Microphone),
    );
    net.run(Duration::from_secs(6));
    let flowing = between(
        &net.client(bob).received[&camera],
        net.now - Duration::from_secs(1),
        net.now,
    );
    assert!(flowing.len() > 100, "the video flows before the cap");
    net.clients[bob].downlink.cap_bps = Some(60_000);
    net.clients[bob].downlink.queue = Some(Duration::from_millis(500));
    let capped = net.now;
    let frozen_before = net.shard.counters.video_frozen_ms[Frozen::Bandwidth.index()];
    net.run(Duration::from_secs(30));
    let video = &net.client(bob).received[&camera];
    let quiet = capped + Duration::from_secs(15);
    assert!(
        between(video, quiet, net.now).is_empty(),
        "the video paused: {} packets in the last 15 s",
        between(video, quiet, net.now).len()
    );
    let frozen = net.shard.counters.video_frozen_ms[Frozen::Bandwidth.index()] - frozen_before;
    assert!(frozen >= 14_000, "counted {frozen} ms frozen for bandwidth");
    // The audio arrives whole once the video is out of its way.
    let mut audio: Vec<u64> = between(&net.client(bob).received[&mic], quiet, net.now)
        .iter()
        .map(|r| r.seq_no)
        .collect();
    audio.sort_unstable();
    audio.dedup();
    assert!(
        audio.len() >= 15 * 50 * 93 / 100,
        "{} audio packets in 15 s",
        audio.len()
    );
    // Not none, yet: str0m pads on its own (about 40 kbit/s of RTX padding here, on top
    // of the 21 kbit/s of audio, which no setting turns off), and the probes for the
    // video, a second every 5 s, and a resumption that fails fill the bottleneck's queue
    // now and then: 3 to 7 packets of 750 lost in most runs, 37 in one of five.
    let missing = audio.last().unwrap() - audio.first().unwrap() + 1 - audio.len() as u64;
    assert!(
        missing * 100 <= 7 * audio.len() as u64,
        "{missing} audio packets of {} lost while the video was paused",
        audio.len()
    );
    println!(
        "60 kbit/s: the video paused, {missing} audio packets of {} lost in 15 s of it",
        audio.len() as u64 + missing
    );
    // The link comes back: so does the video, by probing.
    net.clients[bob].downlink.cap_bps = None;
    let lifted = net.now;
    net.run(Duration::from_secs(20));
    let back = between(&net.client(bob).received[&camera], lifted, net.now);
    let first = back_for_good(&back, lifted, net.now);
    assert!(
        first.is_some_and(|d| d < Duration::from_secs(10)),
        "the video came back {first:?} after the link did"
    );
    println!(
        "video back {first:?} after the link, layers then {:?}",
        layer_runs(&back)
    );
}

/// Bob's receiver reports, as aiortc's does once a second, per m-line that received
/// video in that second: a link of `cap` carries what it says (its audio aside), an
/// open one half again what arrived.
fn send_remb(net: &mut Net, bob: usize, since: Instant) {
    let cap = net.client(bob).downlink.cap_bps;
    let mut per_mid: Vec<(Mid, u64)> = Vec::new();
    for (track, received) in &net.client(bob).received {
        let got = between(received, since, net.now);
        let Some(mid) = got.first().and_then(|r| r.mid) else {
            continue;
        };
        if *track == net.track_of(0, Source::Microphone) {
            continue;
        }
        per_mid.push((mid, got.len() as u64 * 1000 * 8));
    }
    for (mid, rate) in per_mid {
        let value = cap.map_or(rate * 3 / 2, |c| c.saturating_sub(30_000));
        if let Some(rx) = net.clients[bob]
            .rtc
            .direct_api()
            .stream_rx_by_mid(mid, None)
        {
            rx.request_remb(Bitrate::bps(value));
        }
    }
}

/// As aiortc's receiver reports, once a second: per video m-line that received in the
/// last second, what it received (its estimator starts at the throughput it measured
/// over its first 3 s), growing 8 % a second since `first` (the increase of its rate
/// control while nothing overuses), at most half as much again. In the first round
/// only one m-line reports (its estimator started first).
fn send_estimator_per_line_remb(net: &mut Net, bob: usize, since: Instant, first: Instant) {
    let growth = (1.0 + 0.08 * (net.now - first).as_secs_f64()).min(1.5);
    let mut per_mid: Vec<(Mid, u64)> = Vec::new();
    for received in net.client(bob).received.values() {
        let got = between(received, since, net.now);
        match got.first() {
            Some(r) if r.layer > 0 || r.temporal.is_some() || got.len() > 60 => {}
            _ => continue, // audio, or nothing
        }
        let bytes: u64 = got.len() as u64 * 1000;
        per_mid.push((got[0].mid.unwrap(), bytes * 8));
    }
    per_mid.sort_by_key(|(m, _)| m.to_string());
    if net.now - first < Duration::from_millis(1500) {
        per_mid.truncate(1);
    }
    for (mid, rate) in per_mid {
        let value = (rate as f64 * growth) as u64;
        if let Some(rx) = net.clients[bob]
            .rtc
            .direct_api()
            .stream_rx_by_mid(mid, None)
        {
            rx.request_remb(Bitrate::bps(value));
        }
    }
}

#[test]
fn a_remb_receiver_with_an_estimator_per_m_line_keeps_both_videos() {
    let mut net = Net::new(ShardConfig::default());
    for name in ["alice", "carol"] {
        let p = net.join(name, everyone());
        net.negotiate_layers(p, &[(Source::Microphone, &[]), (Source::Camera, SIMULCAST)]);
    }
    net.join_without_twcc = true;
    let bob = net.join("bob", everyone());
    net.negotiate(bob, &[]);
    let cameras = [
        net.track_of(0, Source::Camera),
        net.track_of(1, Source::Camera),
    ];
    // aiortc's estimators say nothing for their first 3 s.
    net.run(Duration::from_secs(3));
    let first = net.now;
    for _ in 0..40 {
        let since = net.now;
        net.run(Duration::from_secs(1));
        send_estimator_per_line_remb(&mut net, bob, since, first);
    }
    for camera in cameras {
        let video = &net.client(bob).received[&camera];
        let gap = longest_gap(video, first, net.now);
        println!(
            "estimator per m-line: camera {camera:?}, longest gap {gap:?}, layers {:?}",
            layer_runs(&between(video, first, net.now))
        );
        assert!(
            gap < Duration::from_secs(1),
            "bob's video of {camera:?} stopped for {gap:?}"
        );
    }
}

#[test]
fn a_remb_only_receiver_gets_its_paused_video_back_when_the_link_recovers() {
    let mut net = two_party(true);
    let (bob, camera) = (1, net.track_of(0, Source::Camera));
    let run = |net: &mut Net, secs: u64| {
        for _ in 0..secs {
            let since = net.now;
            net.run(Duration::from_secs(1));
            send_remb(net, bob, since);
        }
    };
    run(&mut net, 8);
    assert!(
        !between(
            &net.client(bob).received[&camera],
            net.now - Duration::from_secs(2),
            net.now
        )
        .is_empty(),
        "bob receives video before the cap"
    );
    net.clients[bob].downlink.cap_bps = Some(60_000);
    net.clients[bob].downlink.queue = Some(Duration::from_millis(500));
    run(&mut net, 20);
    // Then the link recovers while the video is paused (between two re-probes).
    let mut waited = 0;
    while !between(
        &net.client(bob).received[&camera],
        net.now - Duration::from_secs(2),
        net.now,
    )
    .is_empty()
    {
        run(&mut net, 1);
        waited += 1;
        assert!(waited < 30, "the video never paused on a link of 60 kbit/s");
    }
    net.clients[bob].downlink.cap_bps = None;
    let lifted = net.now;
    run(&mut net, 30);
    let video = &net.client(bob).received[&camera];
    let back = between(video, lifted, net.now);
    let first = back_for_good(video, lifted, net.now);
    assert!(
        first.is_some_and(|d| d < Duration::from_secs(10)),
        "the video came back {first:?} after the link did, for good"
    );
    println!(
        "REMB only: video back {first:?} after the link, layers {:?}",
        layer_runs(&back)
    );
}

#[test]
fn in_a_room_of_twenty_a_capped_subscriber_loses_only_its_least_important_videos() {
    let n = 20;
    let mut net = large_room(n, THUMBNAILS);
    // 0 speaks: the dominant speaker. The others never do: they follow in joining order.
    net.clients[0].level = -20;
    net.run(Duration::from_secs(4));
    let (capped, other) = (n - 1, n - 2);
    net.clients[capped].downlink.cap_bps = Some(500_000);
    net.clients[capped].downlink.queue = Some(Duration::from_millis(500));
    net.run(Duration::from_secs(20));
    let from = net.now - Duration::from_secs(5);
    let seen = |net: &Net, i: usize| -> Vec<usize> {
        (0..n)
            .filter(|o| *o != i)
            .filter(|o| {
                let camera = net.track_of(*o, Source::Camera);
                net.client(i)
                    .received
                    .get(&camera)
                    .is_some_and(|r| r.iter().any(|p| p.at >= from))
            })
            .collect()
    };
    let got = seen(&net, capped);
    // The speaker's camera and the first in line; the rest, from the end, paused.
    assert!(
        got.len() >= 3 && got.len() < n - 1,
        "the capped subscriber receives some cameras, not all: {got:?}"
    );
    assert_eq!(
        got,
        (0..got.len()).collect::<Vec<_>>(),
        "only the least important cameras pause"
    );
    assert_eq!(
        seen(&net, other).len(),
        n - 1,
        "the others receive every camera"
    );
    println!("room of {n}: at 500 kbit/s, cameras of {got:?} arrive");
}

/// Alice and carol publishing a simulcast camera each, bob receiving both.
fn three_party() -> Net {
    let mut net = Net::new(ShardConfig::default());
    for name in ["alice", "carol"] {
        let p = net.join(name, everyone());
        net.negotiate_layers(p, &[(Source::Microphone, &[]), (Source::Camera, SIMULCAST)]);
    }
    let bob = net.join("bob", everyone());
    net.negotiate(bob, &[]);
    net
}

#[test]
fn a_video_paused_on_a_policed_link_comes_back_by_probing_when_the_link_does() {
    let mut net = three_party();
    let bob = 2;
    let cameras = [
        net.track_of(0, Source::Camera),
        net.track_of(1, Source::Camera),
    ];
    net.run(Duration::from_secs(6));
    // A policer with room for one lowest layer, not two: padding that looks for room for
    // the second overruns it and costs the first its packets, so the padding goes off
    // (for longer each time it comes back to the same).
    net.clients[bob].downlink.cap_bps = Some(330_000);
    let capped = net.now;
    net.run(Duration::from_secs(60));
    let late = capped + Duration::from_secs(40);
    let flowing = cameras.map(|c| between(&net.client(bob).received[&c], late, net.now).len());
    // (Each try to resume it costs a few pictures of the other; one that fails makes the
    // next wait for a higher estimate, which the policer does not give.)
    assert!(
        flowing.iter().any(|n| *n > 400) && flowing.iter().any(|n| *n < 100),
        "one video flows under the policer, the other is paused most of the time: \
         {flowing:?} packets in 20 s"
    );
    for m in [0, 1].map(|p| net.track_of(p, Source::Microphone)) {
        let heard = between(&net.client(bob).received[&m], late, net.now).len();
        assert!(heard >= 970, "{heard} audio packets of 1000 in 20 s");
    }
    // The link recovers: the paused video comes back, and stays. Mostly within a few
    // seconds; at worst once padding is on again (it stays off up to 20 s, and while it
    // is off, str0m's probes do not lift an estimate its loss-based controller holds).
    // Measured in 30 runs: 2.8 to 10 s, 22 s in 10.
    net.clients[bob].downlink.cap_bps = None;
    let lifted = net.now;
    net.run(Duration::from_secs(30));
    for c in cameras {
        let video = &net.client(bob).received[&c];
        let back = back_for_good(video, lifted, net.now);
        assert!(
            back.is_some_and(|d| d < Duration::from_secs(30)),
            "a video came back {back:?} after the link did, for good"
        );
        println!("back for good after {back:?}");
    }
}

#[test]
fn no_video_pauses_before_the_link_loses_packets() {
    let mut net = three_party();
    let bob = 2;
    let cameras = [
        net.track_of(0, Source::Camera),
        net.track_of(1, Source::Camera),
    ];
    // Bob views both low: their lowest layers and the audio flow, nothing pads.
    let low = cameras.map(|track_id| TrackQuality {
        track_id,
        quality: Quality::Low,
    });
    net.view(bob, vec![], low.to_vec());
    net.run(Duration::from_secs(6));
    let lowest = delivered_bps(&mut net, bob, 4);
    // A bottleneck a tenth under that, which queues a second before it drops: Bob's
    // estimate falls as soon as the queue grows (as it does for a receiver whose CPU
    // lags), his link loses nothing for seconds.
    net.clients[bob].downlink.cap_bps = Some(lowest * 9 / 10);
    net.clients[bob].downlink.queue = Some(Duration::from_secs(1));
    let capped = net.now;
    let mut first_drop = None;
    for _ in 0..400 {
        net.run(Duration::from_millis(100));
        if first_drop.is_none() && net.client(bob).downlink.dropped > 0 {
            first_drop = Some(net.now);
        }
    }
    let dropped = first_drop.unwrap_or(net.now);
    for c in cameras {
        let video = &net.client(bob).received[&c];
        let gap = longest_gap(video, capped, dropped);
        assert!(
            gap < Duration::from_millis(600),
            "a video stopped for {gap:?} before the link lost a packet, {:?} after the cap",
            dropped - capped
        );
    }
    assert!(first_drop.is_some(), "the link dropped packets at last");
    let late = net.now - Duration::from_secs(10);
    let flowing = cameras.map(|c| between(&net.client(bob).received[&c], late, net.now).len());
    assert!(
        flowing.iter().any(|n| *n < 50),
        "once it lost packets, one video paused: {flowing:?} packets in the last 10 s"
    );
    println!(
        "{lowest} bit/s capped to 0.9: first loss {:?} after; then {flowing:?} packets in 10 s",
        dropped - capped
    );
}

#[test]
fn losses_that_nothing_more_can_leave_out_ask_for_a_keyframe() {
    let temporal = VideoShape {
        temporal: true,
        ..VideoShape::default()
    };
    for share in [1.3, 1.6] {
        let mut net = two_party_with(false, temporal);
        let (bob, camera) = (1, net.track_of(0, Source::Camera));
        net.run(Duration::from_secs(4));
        let lowest = lowest_on_the_wire(&mut net, bob, camera);
        // Room for the lowest layer, not the next, for a while; then the link falls
        // under the lowest layer, which is thinned to its base temporal layer. Probes
        // for the rest cost it packets now and then, which no resend brings back.
        net.clients[bob].downlink.cap_bps = Some((lowest as f64 * share) as u64);
        net.run(Duration::from_secs(25));
        net.clients[bob].downlink.cap_bps = Some(lowest * 9 / 10);
        let capped = net.now;
        net.run(Duration::from_secs(20));
        let video = between(&net.client(bob).received[&camera], capped, net.now);
        let stretches: Vec<_> = undecodable(&video, net.now)
            .iter()
            .map(|(at, long)| (*at - capped, *long))
            .collect();
        // A keyframe ends the breaks after the reports of their losses (a str0m receiver
        // never asks; Chromium does after 3 s without a picture to decode), and it
        // leaves at the pace of an estimate restarted from what flows (a policer shows
        // the delay-based estimate no queue: at its pace, a keyframe's burst lost what
        // the policer's burst did not hold). Measured 2026-12-04 in 16 runs: 5.2 s of
        // the 20 broken after 1.3 x, 3.8 to 3.9 s after 1.6 x; 6.9 s and 5.0 to 5.4 s
        // without the restart; 18 to 19 s without the keyframes.
        let broken: Duration = stretches.iter().map(|(_, long)| *long).sum();
        println!(
            "after {share} x the lowest layer, 0.9 x: layers {:?}, undecodable (when, how \
             long) {stretches:?}, {broken:?} in all, {} datagrams dropped",
            layer_runs(&video),
            net.client(bob).downlink.dropped
        );
        assert!(
            broken < Duration::from_secs(6),
            "after {share} x: the picture was broken {broken:?} of 20 s: {stretches:?}"
        );
    }
}

#[test]
fn on_a_policer_under_the_lowest_layer_keyframes_five_frames_large_arrive_whole() {
    // Alice's camera as a browser sends it: three temporal layers, each keyframe five
    // times a frame; bob's link shaped to what its losses prove (`shape_links`, off by
    // default yet). Without the shaping, the keyframes asked on losses left in bursts
    // the policer cut (str0m's pacer at an estimate the policer does not show), and the
    // picture broke again and again: measured 2026-12-04, at 0.8 x 2.5 s of 30 broken
    // and the video stopped for 12.6 s; at 0.9 x 18.3 s broken; at 1.0 x none.
    let shaped = ShardConfig {
        shape_links: true,
        ..ShardConfig::default()
    };
    let video = VideoShape {
        temporal: true,
        keyframe_scale: 5,
        ..VideoShape::default()
    };
    for share in [0.8, 0.9, 1.0] {
        let mut net = two_party_in(shaped.clone(), false, video);
        let (bob, camera) = (1, net.track_of(0, Source::Camera));
        net.run(Duration::from_secs(4));
        let lowest = lowest_on_the_wire(&mut net, bob, camera);
        net.clients[bob].downlink.cap_bps = Some((lowest as f64 * share) as u64);
        let capped = net.now;
        let asked = net.client(0).keyframe_requests;
        net.run(Duration::from_secs(40));
        let settled = capped + Duration::from_secs(10);
        let received = &net.client(bob).received[&camera];
        let video = between(received, settled, net.now);
        let stretches: Vec<_> = undecodable(&video, net.now)
            .iter()
            .map(|(at, long)| (*at - capped, *long))
            .collect();
        let broken: Duration = stretches.iter().map(|(_, long)| *long).sum();
        let gap = longest_gap(received, settled, net.now);
        println!(
            "at {share} x the lowest layer ({} kbit/s): layers {:?}, undecodable \
             {stretches:?}, {broken:?} in all, longest gap {gap:?}, {} keyframes asked, {} \
             datagrams dropped",
            lowest / 1000,
            layer_runs(&between(received, capped, net.now)),
            net.client(0).keyframe_requests - asked,
            net.client(bob).downlink.dropped
        );
        assert!(
            broken < Duration::from_secs(1),
            "at {share} x: the picture was broken {broken:?} of 30 s: {stretches:?}"
        );
        assert!(
            gap < Duration::from_secs(1),
            "at {share} x: video stopped {gap:?}"
        );
    }
}
