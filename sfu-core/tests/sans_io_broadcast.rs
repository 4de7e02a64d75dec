//! Sans-IO tests of broadcast rooms: roles in the token, a receive-only audience counted
//! apart from the presenters, the 501st viewer refused, viewers not told of each other
//! unless they ask, a
//! burst of 500 joining viewers served with a few keyframes, and a viewer on a weak
//! network moved to a lower layer of the screen share by its losses alone.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{
    Net, VideoShape, assert_on_top_layer, assert_switches_at_keyframes, between, everyone,
    layer_runs,
};
use protocol::{ErrorCode, ServerMessage, Source};
use protocol::{Grants, Role};
use sfu_core::shard::ShardConfig;

fn role(role: Role) -> Grants {
    Grants { role, ..everyone() }
}

/// Who a client heard of through `participant_joined` and `joined.participants`.
fn heard_of(net: &Net, i: usize) -> Vec<String> {
    let mut names = Vec::new();
    for m in net.client(i).messages() {
        match m {
            ServerMessage::ParticipantJoined(p) => names.push(p.identity.clone()),
            ServerMessage::Joined { participants, .. } => {
                names.extend(participants.iter().map(|p| p.identity.clone()));
            }
            _ => {}
        }
    }
    names
}

/// How many `participant_left` a client was sent.
fn left(net: &Net, i: usize) -> usize {
    net.client(i)
        .messages()
        .filter(|m| matches!(m, ServerMessage::ParticipantLeft { .. }))
        .count()
}

#[test]
fn the_501st_viewer_is_refused_and_viewers_are_not_told_of_each_other() {
    let mut net = Net::new(ShardConfig::default());
    let presenter = net.join("presenter", role(Role::Presenter));
    let viewers: Vec<usize> = (0..500)
        .map(|v| net.join(&format!("viewer{v}"), role(Role::Viewer)))
        .collect();
    for &v in &viewers {
        assert!(
            net.client(v).error_codes().is_empty(),
            "{}: {:?}",
            net.client(v).name,
            net.client(v).error_codes()
        );
    }
    let late = net.join("viewer500", role(Role::Viewer));
    assert_eq!(net.client(late).error_codes(), vec![ErrorCode::RoomFull]);
    // The audience is counted apart: a participant and a second presenter still get in.
    let guest = net.join("guest", everyone());
    let second = net.join("presenter2", role(Role::Presenter));
    for i in [guest, second] {
        assert!(net.client(i).error_codes().is_empty());
    }
    // Viewers hear of the presenters and participants only; those hear of everyone.
    let first = heard_of(&net, viewers[0]);
    assert_eq!(first, vec!["presenter", "guest", "presenter2"]);
    let last = heard_of(&net, viewers[499]);
    assert_eq!(last, vec!["presenter", "guest", "presenter2"]);
    assert_eq!(heard_of(&net, presenter).len(), 502);
    assert_eq!(heard_of(&net, guest).len(), 502);
    // A viewer leaving is news to the presenters, not to the audience.
    net.shard.leave(net.now, net.client(viewers[7]).id);
    net.pump();
    assert_eq!(left(&net, presenter), 1);
    assert_eq!(left(&net, viewers[8]), 0);
}

#[test]
fn a_viewer_that_asks_hears_of_the_rest_of_the_audience() {
    let mut net = Net::new(ShardConfig::default());
    net.join("presenter", role(Role::Presenter));
    let quiet = net.join("quiet", role(Role::Viewer));
    net.join_audience = true;
    let curious = net.join("curious", role(Role::Viewer));
    let late = net.join("late", role(Role::Viewer));
    assert_eq!(heard_of(&net, curious), vec!["presenter", "quiet", "late"]);
    assert_eq!(heard_of(&net, quiet), vec!["presenter"]);
    assert_eq!(
        heard_of(&net, late),
        vec!["presenter"],
        "asking is per join"
    );
    net.shard.leave(net.now, net.client(quiet).id);
    net.pump();
    assert_eq!((left(&net, curious), left(&net, late)), (1, 0));
}

#[test]
fn a_viewer_may_not_publish_whatever_its_publish_grants_say() {
    let mut net = Net::new(ShardConfig::default());
    let presenter = net.join("presenter", role(Role::Presenter));
    net.negotiate(presenter, &[Source::Microphone, Source::Screen]);
    // The token says publish_* true (the defaults), but the role says viewer.
    let viewer = net.join("viewer", role(Role::Viewer));
    let joined = net.client(viewer).messages().find_map(|m| match m {
        ServerMessage::Joined { grants, .. } => Some(*grants),
        _ => None,
    });
    let grants = joined.unwrap();
    assert!(!grants.publish_audio && !grants.publish_video && !grants.publish_screen);
    assert_eq!(grants.role, Role::Viewer);
    net.negotiate(viewer, &[Source::Camera]);
    assert_eq!(net.client(viewer).error_codes(), vec![ErrorCode::Forbidden]);
    // Receiving is what a viewer is for.
    let watcher = net.join("watcher", role(Role::Viewer));
    net.negotiate(watcher, &[]);
    net.run(Duration::from_secs(3));
    let screen = net.track_of(presenter, Source::Screen);
    assert!(
        net.client(watcher)
            .received
            .get(&screen)
            .is_some_and(|r| r.len() > 10)
    );
}

#[test]
fn five_hundred_viewers_joining_in_ten_seconds_cost_the_presenter_a_few_keyframes() {
    let mut net = Net::new(ShardConfig::default());
    let presenter = net.join("presenter", role(Role::Presenter));
    net.negotiate(presenter, &[Source::Screen]);
    net.run(Duration::from_secs(1));
    let screen = net.track_of(presenter, Source::Screen);
    // One viewer every 20 ms: 500 in 10 s, each subscribing at once (as the client
    // library does on `joined`). The presenter sends a keyframe only when asked.
    let mut joined_at = Vec::new();
    let mut per_second = Vec::new();
    let mut requests = net.client(presenter).keyframe_requests;
    for v in 0..500 {
        let i = net.join(&format!("viewer{v}"), role(Role::Viewer));
        net.negotiate(i, &[]);
        joined_at.push((i, net.now));
        net.run(Duration::from_millis(20));
        if v % 50 == 49 {
            let now = net.client(presenter).keyframe_requests;
            per_second.push(now - requests);
            requests = now;
        }
    }
    net.run(Duration::from_secs(2));
    println!("keyframe requests at the presenter, per second of the burst: {per_second:?}");
    // One request per 200 ms serves every viewer waiting: at most 5 a second (6 where a
    // second's edges both fall on one).
    for (s, n) in per_second.iter().enumerate() {
        assert!(
            *n <= 6,
            "second {s}: {n} keyframe requests ({per_second:?})"
        );
    }
    assert!(per_second.iter().sum::<usize>() < 60, "{per_second:?}");
    // Every viewer gets a keyframe, to start decoding, within 2 s of joining. (A single
    // stream is forwarded from the packet at hand; the frames before the keyframe are
    // dropped by the decoder.)
    let mut waits = Vec::new();
    for (i, at) in joined_at {
        let received = net.client(i).received.get(&screen);
        let first = received.and_then(|r| r.iter().find(|p| p.keyframe));
        let Some(first) = first else {
            panic!("{} received no keyframe of the screen", net.client(i).name);
        };
        let wait = first.at - at;
        assert!(
            wait <= Duration::from_secs(2),
            "{}: first keyframe {wait:?} after joining",
            net.client(i).name
        );
        waits.push(wait);
    }
    waits.sort();
    println!(
        "first keyframe after joining: p50 {:?}, p99 {:?}, max {:?}",
        waits[waits.len() / 2],
        waits[waits.len() * 99 / 100],
        waits[waits.len() - 1]
    );
}

#[test]
fn a_viewer_on_a_weak_network_gets_a_lower_layer_without_touching_the_others() {
    // Viewers have no TWCC estimate (its pacer would cost 500 of them too much): the
    // losses their receiver reports are the estimate.
    let mut net = Net::new(ShardConfig::default());
    let presenter = net.join("presenter", role(Role::Presenter));
    net.negotiate_layers(
        presenter,
        &[
            (Source::Microphone, &[]),
            (Source::Screen, &["q", "h", "f"]),
        ],
    );
    let viewers: Vec<usize> = (0..3)
        .map(|v| {
            let i = net.join(&format!("viewer{v}"), role(Role::Viewer));
            net.negotiate(i, &[]);
            i
        })
        .collect();
    let (weak, others) = (viewers[0], &viewers[1..]);
    let screen = net.track_of(presenter, Source::Screen);
    net.run(Duration::from_secs(4));
    let t0 = net.now;
    net.run(Duration::from_secs(2));
    assert_on_top_layer(&net, &viewers, screen, t0);
    // The weak viewer's downlink carries 600 kbit/s, the top layer needs about 1.
    net.clients[weak].downlink.cap_bps = Some(600_000);
    let capped = net.now;
    net.run(Duration::from_secs(20));
    // In the order it was sent (a retransmission arrives late, on its layer).
    let mut during = between(&net.client(weak).received[&screen], capped, net.now);
    during.sort_by_key(|r| r.seq_no);
    let fell = during
        .iter()
        .position(|r| r.layer < 2)
        .unwrap_or_else(|| panic!("the weak viewer went down: {:?}", layer_runs(&during)));
    assert!(
        during[fell].at - capped < Duration::from_secs(5),
        "down {:?} after the cap",
        during[fell].at - capped
    );
    let settled = between(&during, during[fell].at, net.now);
    assert!(
        settled.len() > 200,
        "the screen keeps flowing under the cap: {} packets ({:?}; per second: {:?})",
        settled.len(),
        layer_runs(&during),
        (0..20)
            .map(|k| between(
                &during,
                capped + Duration::from_secs(k),
                capped + Duration::from_secs(k + 1)
            )
            .len())
            .collect::<Vec<_>>()
    );
    // Having fallen, it stays below the loss it met for a while: one retry at most.
    let ups = during
        .windows(2)
        .filter(|w| w[1].layer > w[0].layer)
        .count();
    assert!(
        ups <= 1,
        "{ups} retries of the top layer under the cap: {:?}",
        layer_runs(&during)
    );
    let dropped = net.client(weak).downlink.dropped;
    // The others never noticed.
    assert_on_top_layer(&net, others, screen, capped);
    for &v in others {
        let got = between(&net.client(v).received[&screen], capped, net.now);
        assert_switches_at_keyframes(&got, 0, &net.client(v).name);
    }
    // The cap lifts: the weak viewer's losses stop, its estimate climbs, it goes back up.
    net.clients[weak].downlink.cap_bps = None;
    let lifted = net.now;
    net.run(Duration::from_secs(40));
    let after = between(&net.client(weak).received[&screen], lifted, net.now);
    assert_eq!(
        after.last().map(|r| r.layer),
        Some(2),
        "back on the top layer: {:?}",
        layer_runs(&after)
    );
    let mut all = between(&net.client(weak).received[&screen], t0, net.now);
    all.sort_by_key(|r| r.seq_no);
    assert_switches_at_keyframes(&all, net.client(weak).downlink.dropped, "the weak viewer");
    println!(
        "weak viewer: layers {:?}, down {:?} after the cap, {} datagrams lost to the cap",
        layer_runs(&all),
        during[fell].at - capped,
        dropped
    );
}

#[test]
fn a_viewers_burst_of_retransmissions_is_paced_and_holds_up_no_one() {
    // A 4 Mbit/s screen share (20 datagrams of 1000 bytes a frame) to four viewers.
    let mut net = Net::new(ShardConfig::default());
    net.video = VideoShape {
        packets: [20, 20, 20],
        bytes: [1000; 3],
        frame_every: 8,
        temporal: false,
        keyframe_scale: 1,
    };
    let presenter = net.join("presenter", role(Role::Presenter));
    net.negotiate(presenter, &[Source::Microphone, Source::Screen]);
    let viewers: Vec<usize> = (0..4)
        .map(|v| {
            let i = net.join(&format!("viewer{v}"), role(Role::Viewer));
            net.negotiate(i, &[]);
            i
        })
        .collect();
    let (burst, others) = (viewers[0], &viewers[1..]);
    let screen = net.track_of(presenter, Source::Screen);
    let mic = net.track_of(presenter, Source::Microphone);
    net.run(Duration::from_secs(3));
    // Its downlink loses everything for 120 ms (three frames, 60 datagrams of video);
    // when it comes back, one NACK asks for them all. (A receiver asks for at most the
    // last 100, str0m's window as libwebrtc's; and the server's retransmissions stop at
    // 30 % of what it sends a stream, which a longer cut would pass.)
    net.longest_run.clear();
    let cut = net.now;
    net.clients[burst].downlink.loss = 1.0;
    net.run(Duration::from_millis(120));
    net.clients[burst].downlink.loss = 0.0;
    let back = net.now;
    net.run(Duration::from_secs(2));
    let end = net.now;

    // What it missed came back: it has every packet another viewer has (the last
    // frames aside, which may still be on their way).
    let seqs = |i: usize| -> std::collections::BTreeSet<u64> {
        between(
            &net.client(i).received[&screen],
            cut,
            end - Duration::from_millis(200),
        )
        .iter()
        .map(|r| r.source_seq)
        .collect()
    };
    let (got, reference) = (seqs(burst), seqs(others[0]));
    let missing = reference.difference(&got).count();
    assert!(
        reference.len() > 400 && missing == 0,
        "{missing} of {} packets never reached it",
        reference.len()
    );

    // Paced: the retransmissions left in small bursts, not all at once. Every viewer
    // gets a frame's datagrams in a row (they reach the server together, and each
    // viewer's copies leave together); the one that asked for 60 more got at most a
    // burst of its pacer (10 ms at its rate: a dozen datagrams) beyond that, so no
    // other viewer's packets waited behind all of them.
    let addr = |i: usize| net.client(i).addr;
    let longest = net.longest_run[&addr(burst)];
    let fanout = others
        .iter()
        .map(|v| net.longest_run.get(&addr(*v)).copied().unwrap_or(0))
        .max()
        .unwrap();
    assert!(
        longest <= fanout + 16,
        "{longest} datagrams in a row to the viewer that asked for 60 ({fanout} to the others)"
    );
    // At a rate: the retransmissions (the packets that arrived after a later one) came
    // at most about 36 kB in any 20 ms (10 Mbit/s, 2.5 times the stream, plus a burst),
    // not 60 kB at once.
    let arrivals = between(&net.client(burst).received[&screen], back, end);
    let mut newest = 0;
    let mut resent = Vec::new();
    for r in &arrivals {
        if r.source_seq < newest {
            resent.push(r.at);
        }
        newest = newest.max(r.source_seq);
    }
    assert!(resent.len() >= 60, "{} retransmissions", resent.len());
    for (k, at) in resent.iter().enumerate() {
        let within = resent[k..]
            .iter()
            .take_while(|x| **x < *at + Duration::from_millis(20))
            .count();
        assert!(
            within <= 40,
            "{within} retransmissions within 20 ms of {:?}",
            *at - back
        );
    }
    let spread = resent[resent.len() - 1] - resent[0];
    // Its audio never waited behind the video: a packet every 20 ms throughout.
    let audio = between(&net.client(burst).received[&mic], back, end);
    let worst = audio.windows(2).map(|w| w[1].at - w[0].at).max().unwrap();
    assert!(
        worst <= Duration::from_millis(25),
        "its audio paused {worst:?} behind the retransmissions"
    );
    // The others kept their stream whole: 25 frames of 20 packets a second, no gap.
    for &v in others {
        let got = between(&net.client(v).received[&screen], cut, end);
        let expected = (end - cut).as_secs_f64() * 25.0 * 20.0;
        assert!(
            got.len() as f64 >= expected - 20.0,
            "{}: {} packets of {expected}",
            net.client(v).name,
            got.len()
        );
        assert!(
            got.windows(2).all(|w| w[1].seq_no == w[0].seq_no + 1),
            "{}: a gap",
            net.client(v).name
        );
    }
    println!(
        "burst of retransmissions: longest run {longest} datagrams ({fanout} to the others), retransmissions over {spread:?}"
    );
}
