//! Sans-IO tests of what an administrator does to calls in progress: a group's policy
//! changed mid-call, a track muted, a participant removed, a call ended; and the call
//! events and listings the admin API is built on. Real str0m clients and the shard in
//! virtual time.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::{Duration, Instant};

use common::{Net, everyone};
use protocol::admin::{Action, CallEvent, TransportKind};
use protocol::{ErrorCode, LeaveReason, Policy, ServerMessage, Source};
use sfu_core::shard::ShardConfig;

/// Alice (group `sales`) and Bob (the default group) publish microphone and camera and
/// receive each other's.
fn call() -> (Net, usize, usize) {
    let mut net = Net::new(ShardConfig::default());
    let sources = [Source::Microphone, Source::Camera];
    net.join_group = Some("sales".into());
    let alice = net.join("alice", everyone());
    net.negotiate(alice, &sources);
    let bob = net.join("bob", everyone());
    net.negotiate(bob, &sources);
    net.negotiate(alice, &[]);
    net.run(Duration::from_secs(2));
    (net, alice, bob)
}

/// Packets of `track` bob has received so far.
fn received(net: &Net, who: usize, track: protocol::TrackId) -> usize {
    net.client(who).received.get(&track).map_or(0, Vec::len)
}

#[test]
fn switching_video_off_for_a_group_unpublishes_its_cameras_while_audio_goes_on() {
    let (mut net, alice, bob) = call();
    let camera = net.track_of(alice, Source::Camera);
    let microphone = net.track_of(alice, Source::Microphone);
    let bobs_camera = net.track_of(bob, Source::Camera);
    assert!(received(&net, bob, camera) > 20, "bob sees alice first");

    let audio_only = Policy {
        video: false,
        ..Policy::default()
    };
    let now = net.now;
    assert_eq!(net.shard.apply_policy(now, "sales", &audio_only), 1);
    net.pump();
    // Bob is told the camera went; alice learns her grants and that her camera went.
    assert!(
        net.client(bob).messages().any(
            |m| matches!(m, ServerMessage::TrackUnpublished { track_id } if *track_id == camera)
        )
    );
    let alice_heard: Vec<&ServerMessage> = net.client(alice).messages().collect();
    assert!(alice_heard.iter().any(|m| matches!(m,
        ServerMessage::Grants { grants } if !grants.publish_video && grants.publish_audio)));
    assert!(
        alice_heard.iter().any(
            |m| matches!(m, ServerMessage::TrackUnpublished { track_id } if *track_id == camera)
        )
    );
    let (video_then, audio_then) = (received(&net, bob, camera), received(&net, bob, microphone));
    let alice_sees_bob = received(&net, alice, bobs_camera);
    net.run(Duration::from_secs(2));
    assert_eq!(
        received(&net, bob, camera),
        video_then,
        "no more of the camera"
    );
    assert!(
        received(&net, bob, microphone) > audio_then + 50,
        "audio goes on"
    );
    assert!(
        received(&net, alice, bobs_camera) > alice_sees_bob + 20,
        "the default group's camera is untouched"
    );
    // Publishing video again (her camera still listed, a screen added) is refused.
    net.negotiate(alice, &[Source::Screen]);
    assert!(
        net.client(alice)
            .error_codes()
            .contains(&ErrorCode::Forbidden)
    );
    let events = &net.events;
    assert!(events.iter().any(|e| matches!(e,
        CallEvent::TrackUnpublished(t) if t.track_id == camera && t.source == Source::Camera)));
}

#[test]
fn a_group_that_may_no_longer_call_is_removed() {
    let (mut net, alice, bob) = call();
    let off = Policy {
        calling: false,
        ..Policy::default()
    };
    let now = net.now;
    net.shard.apply_policy(now, "sales", &off);
    net.pump();
    assert!(net.client(alice).messages().any(|m| matches!(
        m,
        ServerMessage::Left {
            reason: LeaveReason::Removed
        }
    )));
    assert!(net.client(bob).messages().any(|m| matches!(
        m,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::Removed,
            ..
        }
    )));
    assert_eq!(net.shard.sizes().1, 1, "bob stays");
}

#[test]
fn an_administrator_mutes_removes_and_ends() {
    let (mut net, alice, bob) = call();
    let microphone = net.track_of(alice, Source::Microphone);
    let now = net.now;
    assert!(net.shard.act(
        now,
        "room",
        Action::Mute {
            track_id: microphone,
            muted: true
        }
    ));
    assert!(!net.shard.act(now, "nowhere", Action::End));
    assert!(
        !net.shard
            .act(now, "room", Action::Remove(protocol::ParticipantId(999)))
    );
    net.pump();
    for who in [alice, bob] {
        assert!(net.client(who).messages().any(|m| matches!(m,
            ServerMessage::TrackMuted { track_id, muted: true } if *track_id == microphone)));
    }
    net.run(Duration::from_millis(500));
    let held = received(&net, bob, microphone);
    net.run(Duration::from_secs(1));
    assert_eq!(
        received(&net, bob, microphone),
        held,
        "nothing of a muted track"
    );
    let now = net.now;
    net.shard.act(
        now,
        "room",
        Action::Mute {
            track_id: microphone,
            muted: false,
        },
    );
    net.run(Duration::from_secs(1));
    let after = &net.client(bob).received[&microphone][held..];
    assert!(after.len() > 20, "unmuted, it flows again");
    // Gap-free: the subscriber's sequence numbers go on where they stopped.
    let before = net.client(bob).received[&microphone][held - 1].seq_no;
    assert_eq!(after[0].seq_no, before + 1);

    let detail = net
        .shard
        .room_detail(net.now, 1_000_000, "node", "room")
        .unwrap();
    assert_eq!(detail.summary.participants, 2);
    assert_eq!(detail.summary.tracks, 4);
    assert_eq!(detail.summary.group, "sales", "the opener's group");
    assert!(detail.summary.started_at_ms < 1_000_000);
    let a = &detail.members[0];
    assert_eq!((a.identity.as_str(), a.group.as_str()), ("alice", "sales"));
    assert_eq!(a.transport, Some(TransportKind::Udp));
    assert_eq!(a.tracks.len(), 2);

    let bob_id = net.client(bob).id;
    let now = net.now;
    assert!(net.shard.act(now, "room", Action::Remove(bob_id)));
    net.pump();
    assert!(net.client(bob).messages().any(|m| matches!(
        m,
        ServerMessage::Left {
            reason: LeaveReason::Removed
        }
    )));
    let now = net.now;
    assert!(net.shard.act(now, "room", Action::End));
    net.pump();
    assert!(net.client(alice).messages().any(|m| matches!(
        m,
        ServerMessage::Left {
            reason: LeaveReason::RoomEnded
        }
    )));
    assert_eq!(net.shard.sizes(), (0, 0, 0));
    assert!(
        net.shard
            .room_summaries(Instant::now(), 0, "node")
            .is_empty()
    );

    let left: Vec<LeaveReason> = net
        .events
        .iter()
        .filter_map(|e| match e {
            CallEvent::ParticipantLeft {
                reason,
                bytes_received,
                bytes_sent,
                transports,
                ..
            } => {
                assert!(*bytes_received > 10_000 && *bytes_sent > 10_000, "{e:?}");
                assert_eq!(transports, &[TransportKind::Udp]);
                Some(*reason)
            }
            _ => None,
        })
        .collect();
    assert_eq!(left, [LeaveReason::Removed, LeaveReason::RoomEnded]);
    assert!(
        matches!(net.events.first(), Some(CallEvent::RoomStarted { group, .. }) if group == "sales")
    );
    assert!(matches!(
        net.events.last(),
        Some(CallEvent::RoomFinished { .. })
    ));
}

#[test]
fn a_room_takes_its_openers_group_cap() {
    let mut net = Net::new(ShardConfig::default());
    net.join_group = Some("small".into());
    net.join_max_participants = Some(2);
    let alice = net.join("alice", everyone());
    let bob = net.join("bob", everyone());
    // Carol's group allows more, but the room is Alice's group's.
    net.join_max_participants = Some(10);
    let carol = net.join("carol", everyone());
    assert!(net.client(alice).error_codes().is_empty());
    assert!(net.client(bob).error_codes().is_empty());
    assert_eq!(net.client(carol).error_codes(), vec![ErrorCode::RoomFull]);
    assert_eq!(net.shard.sizes().1, 2);
}

#[test]
fn requiring_e2ee_removes_who_publishes_in_the_clear() {
    let mut net = Net::new(ShardConfig::default());
    net.join_group = Some("ingest".into());
    net.join_in_clear = true;
    let plaintext = protocol::Grants {
        plaintext: true,
        ..everyone()
    };
    let whip = net.join("whip", plaintext);
    net.negotiate(whip, &[Source::Microphone]);
    net.join_group = Some("ingest".into());
    let viewer = net.join("viewer", everyone());
    net.negotiate(viewer, &[]);
    net.run(Duration::from_secs(1));
    let strict = Policy {
        e2ee_required: true,
        ..Policy::default()
    };
    let now = net.now;
    net.shard.apply_policy(now, "ingest", &strict);
    net.pump();
    assert!(net.client(whip).messages().any(|m| matches!(
        m,
        ServerMessage::Left {
            reason: LeaveReason::Removed
        }
    )));
    assert_eq!(net.shard.sizes().1, 1, "the encrypting member stays");
}
