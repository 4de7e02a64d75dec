//! Sans-IO tests of what the media core does for end-to-end encryption: the `e2ee` flags
//! everyone is told, key-exchange messages relayed to the participant named and no one
//! else (never into another room, never to a viewer another viewer may not know of), a
//! relay flood that never gets its recipient removed, keyframe requests asked by
//! clients, which reach the publisher through the usual throttle; and the test-only tap,
//! which records every packet publishers send.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{EVENT_QUEUE, Net, everyone};
use protocol::{
    E2eeData, ErrorCode, Grants, Kind, ParticipantId, Request, RequestType, Role, ServerMessage,
    Source, TrackId,
};
use sfu_core::forwarder::DropReason;
use sfu_core::shard::{RELAY_RESERVE, RelayDrop, ShardConfig};

fn role(role: Role) -> Grants {
    Grants { role, ..everyone() }
}

/// Client `from` sends `data` to participant `to`.
fn send_e2ee(net: &mut Net, from: usize, to: ParticipantId, data: &str) {
    let id = net.client(from).id;
    let request = Request::E2ee {
        to,
        data: E2eeData::new(data),
    };
    net.shard.request(net.now, id, request);
    net.pump();
}

/// The `e2ee` messages client `i` received: sender and data.
fn relayed_to(net: &Net, i: usize) -> Vec<(ParticipantId, String)> {
    net.client(i)
        .messages()
        .filter_map(|m| match m {
            ServerMessage::E2ee { from, data } => Some((*from, data.as_str().to_owned())),
            _ => None,
        })
        .collect()
}

/// The errors client `i` got in answer to `e2ee` messages.
fn e2ee_errors(net: &Net, i: usize) -> Vec<(ErrorCode, String)> {
    net.client(i)
        .messages()
        .filter_map(|m| match m {
            ServerMessage::Error(e) if e.request == Some(RequestType::E2ee) => {
                Some((e.code, e.message.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn everyone_is_told_who_encrypts() {
    let mut net = Net::new(ShardConfig::default());
    let alice = net.join("alice", everyone());
    net.join_in_clear = true;
    let obs = net.join("obs", everyone());
    let carol = net.join("carol", everyone());
    let e2ee_of = |net: &Net, i: usize| {
        net.client(i).messages().find_map(|m| match m {
            ServerMessage::Joined {
                e2ee, participants, ..
            } => Some((
                *e2ee,
                participants
                    .iter()
                    .map(|p| (p.identity.clone(), p.e2ee))
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        })
    };
    assert_eq!(e2ee_of(&net, alice), Some((true, vec![])));
    assert_eq!(
        e2ee_of(&net, obs),
        Some((false, vec![("alice".into(), true)]))
    );
    assert_eq!(
        e2ee_of(&net, carol),
        Some((true, vec![("alice".into(), true), ("obs".into(), false)]))
    );
    let announced: Vec<(String, bool)> = net
        .client(alice)
        .messages()
        .filter_map(|m| match m {
            ServerMessage::ParticipantJoined(p) => Some((p.identity.clone(), p.e2ee)),
            _ => None,
        })
        .collect();
    assert_eq!(announced, [("obs".into(), false), ("carol".into(), true)]);
}

#[test]
fn a_relay_reaches_the_participant_it_names_and_no_one_else() {
    let mut net = Net::new(ShardConfig::default());
    let alice = net.join("alice", everyone());
    let bob = net.join("bob", everyone());
    let carol = net.join("carol", everyone());
    net.join_room = Some("elsewhere".into());
    let dave = net.join("dave", everyone());
    let (alice_id, bob_id, dave_id) = (
        net.client(alice).id,
        net.client(bob).id,
        net.client(dave).id,
    );

    send_e2ee(&mut net, alice, bob_id, "key-for-bob");
    send_e2ee(&mut net, bob, alice_id, "key-for-alice");
    assert_eq!(relayed_to(&net, bob), [(alice_id, "key-for-bob".into())]);
    assert_eq!(relayed_to(&net, alice), [(bob_id, "key-for-alice".into())]);
    assert!(relayed_to(&net, carol).is_empty());
    assert!(relayed_to(&net, dave).is_empty());

    // Another room's participant, itself, and no one at all: refused, delivered nowhere.
    send_e2ee(&mut net, alice, dave_id, "across rooms");
    send_e2ee(&mut net, alice, alice_id, "to itself");
    send_e2ee(&mut net, alice, ParticipantId(999), "to no one");
    send_e2ee(&mut net, dave, alice_id, "from elsewhere");
    let refusal = (
        ErrorCode::BadRequest,
        "no such participant in this room".to_string(),
    );
    assert_eq!(e2ee_errors(&net, alice), vec![refusal.clone(); 3]);
    assert_eq!(e2ee_errors(&net, dave), vec![refusal]);
    assert!(relayed_to(&net, dave).is_empty());
    assert_eq!(relayed_to(&net, alice).len(), 1);
    assert_eq!(relayed_to(&net, bob).len(), 1);
    assert!(relayed_to(&net, carol).is_empty());
    assert_eq!(net.shard.counters.e2ee_relays, 2);
    assert!(e2ee_errors(&net, bob).is_empty() && e2ee_errors(&net, carol).is_empty());
}

#[test]
fn a_viewer_addresses_only_those_it_may_know_of() {
    let mut net = Net::new(ShardConfig::default());
    let presenter = net.join("presenter", role(Role::Presenter));
    let v1 = net.join("v1", role(Role::Viewer));
    let v2 = net.join("v2", role(Role::Viewer));
    net.join_audience = true;
    let curious = net.join("curious", role(Role::Viewer));
    let id = |net: &Net, i: usize| net.client(i).id;

    // The presenter gives each viewer its key; a viewer may answer the presenter.
    let (v1_id, v2_id, presenter_id) = (id(&net, v1), id(&net, v2), id(&net, presenter));
    send_e2ee(&mut net, presenter, v1_id, "key");
    send_e2ee(&mut net, v1, presenter_id, "hello");
    assert_eq!(relayed_to(&net, v1), [(presenter_id, "key".into())]);
    assert_eq!(relayed_to(&net, presenter), [(v1_id, "hello".into())]);
    // A viewer that did not ask for the audience knows of no other viewer.
    send_e2ee(&mut net, v1, v2_id, "psst");
    assert!(relayed_to(&net, v2).is_empty());
    assert_eq!(e2ee_errors(&net, v1).len(), 1);
    // One that asked does.
    send_e2ee(&mut net, curious, v2_id, "hi");
    assert_eq!(relayed_to(&net, v2), [(id(&net, curious), "hi".into())]);
    assert!(e2ee_errors(&net, curious).is_empty());
}

#[test]
fn a_relay_flood_never_gets_its_recipient_removed() {
    let mut net = Net::new(ShardConfig::default());
    let mallory = net.join("mallory", everyone());
    let victim = net.join("victim", everyone());
    let victim_id = net.client(victim).id;
    // The victim's session stops reading its queue for a while (a slow network).
    net.clients[victim].reading = false;
    let flood = 5 * EVENT_QUEUE;
    for n in 0..flood {
        send_e2ee(&mut net, mallory, victim_id, &format!("junk {n}"));
    }
    let room_for_relays = EVENT_QUEUE - RELAY_RESERVE;
    assert_eq!(net.client(victim).queued, room_for_relays);
    assert_eq!(net.shard.counters.e2ee_relays, room_for_relays as u64);
    assert_eq!(
        net.shard.counters.e2ee_relays_dropped[RelayDrop::QueueReserve.index()],
        (flood - room_for_relays) as u64
    );
    // The server's own messages still find their places: people come and publish.
    let mut newcomers = Vec::new();
    for n in 0..20 {
        let i = net.join(&format!("guest{n}"), everyone());
        net.negotiate(i, &[Source::Microphone, Source::Camera]);
        newcomers.push(i);
    }
    net.run(Duration::from_millis(500));
    assert!(!net.closed.contains(&victim_id), "the victim is still in");
    assert!(net.client(victim).queued <= EVENT_QUEUE);
    assert_eq!(net.shard.sizes().1, 22);
    // Reading again, it has every message of the room, in order, and relays flow again.
    net.clients[victim].reading = true;
    net.clients[victim].queued = 0;
    let joined: Vec<String> = net
        .client(victim)
        .messages()
        .filter_map(|m| match m {
            ServerMessage::ParticipantJoined(p) => Some(p.identity.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..20).map(|n| format!("guest{n}")).collect();
    assert_eq!(joined, expected);
    let published = net
        .client(victim)
        .messages()
        .filter(|m| matches!(m, ServerMessage::TrackPublished(_)))
        .count();
    assert_eq!(published, 40);
    send_e2ee(&mut net, newcomers[0], victim_id, "a real key");
    assert_eq!(
        relayed_to(&net, victim).last().map(|(_, d)| d.as_str()),
        Some("a real key")
    );
}

#[test]
fn a_queue_the_others_overflow_falls_behind_then_hears_the_room_anew() {
    // The others' messages fill a client's queue (the relays' rule aside): it is not
    // removed; what does not fit is dropped, and once it reads again it gets `resync`.
    let mut net = Net::new(ShardConfig::default());
    let slow = net.join("slow", everyone());
    let slow_id = net.client(slow).id;
    let talker = net.join("talker", everyone());
    net.negotiate(talker, &[Source::Microphone]);
    let microphone = net.track_of(talker, Source::Microphone);
    net.clients[slow].reading = false;
    let id = net.client(talker).id;
    let mute = |net: &mut Net, muted: bool| {
        let request = Request::Mute {
            track_id: microphone,
            muted,
        };
        net.shard.request(net.now, id, request);
        net.pump();
    };
    for n in 0..=EVENT_QUEUE {
        mute(&mut net, n % 2 == 0);
    }
    assert!(!net.closed.contains(&slow_id), "not removed");
    assert!(net.client(slow).behind);
    assert!(net.shard.counters.drops[DropReason::SignalQueueFull.index()] > 0);
    let before = net.client(slow).inbox.len();
    // It reads again: the room as it is now, the microphone muted (the last change).
    net.clients[slow].reading = true;
    net.clients[slow].queued = 0;
    net.pump();
    assert!(!net.client(slow).behind);
    let resync = net.client(slow).inbox[before..]
        .iter()
        .find_map(|m| match m {
            ServerMessage::Resync {
                participants,
                tracks,
                ..
            } => Some((participants.clone(), tracks.clone())),
            _ => None,
        })
        .expect("a resync");
    assert_eq!(
        resync
            .0
            .iter()
            .map(|p| p.participant_id)
            .collect::<Vec<_>>(),
        [id]
    );
    assert_eq!(resync.1.len(), 1);
    assert_eq!(
        (resync.1[0].track_id, resync.1[0].muted),
        (microphone, true)
    );
    // And changes one by one again.
    mute(&mut net, false);
    assert!(matches!(
        net.client(slow).inbox.last(),
        Some(ServerMessage::TrackMuted { muted: false, .. })
    ));
}

/// Alice, bob and carol publish a microphone and a camera each and receive each
/// other; dave is in the room and receives nothing.
fn call() -> Net {
    let mut net = Net::new(ShardConfig::default());
    for name in ["alice", "bob", "carol"] {
        let i = net.join(name, everyone());
        net.negotiate(i, &[Source::Microphone, Source::Camera]);
    }
    net.negotiate(0, &[]);
    net.negotiate(1, &[]);
    net.join("dave", everyone());
    net.run(Duration::from_secs(3));
    net
}

/// Client `i` asks for a keyframe of `track_id`; 20 ms pass (str0m sends the PLI with
/// its next RTCP).
fn ask_keyframe(net: &mut Net, i: usize, track_id: TrackId) {
    let id = net.client(i).id;
    net.shard
        .request(net.now, id, Request::Keyframe { track_id });
    net.run(Duration::from_millis(20));
}

#[test]
fn a_keyframe_request_reaches_the_publisher_through_the_throttle() {
    let mut net = call();
    let camera = net.track_of(0, Source::Camera);
    let before = net.client(0).keyframe_requests;
    net.run(Duration::from_millis(300));
    assert_eq!(net.client(0).keyframe_requests, before, "a quiet call");

    // Bob asks eight times in 160 ms: alice is asked once.
    for _ in 0..8 {
        ask_keyframe(&mut net, 1, camera);
    }
    assert_eq!(net.client(0).keyframe_requests, before + 1);
    // At most once per 200 ms: those asked after the keyframe came may bring one more.
    net.run(Duration::from_millis(300));
    let repeated = net.client(0).keyframe_requests;
    assert!(repeated <= before + 2, "{} requests", repeated - before);
    // Past the throttle interval, carol's request goes through.
    ask_keyframe(&mut net, 2, camera);
    assert_eq!(net.client(0).keyframe_requests, repeated + 1);
    // The keyframes came: nothing repeats.
    net.run(Duration::from_secs(1));
    assert_eq!(net.client(0).keyframe_requests, repeated + 1);
    for c in &net.clients[1..3] {
        assert!(
            c.error_codes().is_empty(),
            "{}: {:?}",
            c.name,
            c.error_codes()
        );
    }
}

#[test]
fn a_publisher_may_ask_for_its_own_keyframe_and_nothing_else_is_asked() {
    let mut net = call();
    let camera = net.track_of(0, Source::Camera);
    let microphone = net.track_of(0, Source::Microphone);
    let before = net.client(0).keyframe_requests;
    ask_keyframe(&mut net, 0, camera);
    assert_eq!(
        net.client(0).keyframe_requests,
        before + 1,
        "its own camera"
    );
    net.run(Duration::from_millis(300));
    let before = net.client(0).keyframe_requests;
    // Audio has no keyframes; dave receives nothing; no such track; nobody answers.
    ask_keyframe(&mut net, 1, microphone);
    ask_keyframe(&mut net, 3, camera);
    ask_keyframe(&mut net, 1, TrackId(999_999));
    net.run(Duration::from_millis(300));
    assert_eq!(net.client(0).keyframe_requests, before);
    assert!(net.clients.iter().all(|c| c.error_codes().is_empty()));
    assert!(net.tapped.is_empty(), "no tap unless configured");
}

#[test]
fn the_tap_records_every_packet_publishers_send_payload_and_all() {
    let mut net = Net::new(ShardConfig {
        tap: Some("ro".into()),
        ..ShardConfig::default()
    });
    // Carol's room does not start with the prefix: the tap leaves it out.
    net.join_room = Some("elsewhere".into());
    let carol = net.join("carol", everyone());
    net.negotiate_layers(carol, &[(Source::Microphone, &[])]);
    let alice = net.join("alice", everyone());
    net.negotiate_layers(
        alice,
        &[
            (Source::Microphone, &[]),
            (Source::Camera, &["q", "h", "f"]),
        ],
    );
    let bob = net.join("bob", everyone());
    net.negotiate(bob, &[]);
    net.run(Duration::from_secs(2));
    let (microphone, camera) = (
        net.track_of(alice, Source::Microphone),
        net.track_of(alice, Source::Camera),
    );
    let alice_id = net.client(alice).id;
    assert!(!net.tapped.is_empty());
    let mut rids = Vec::new();
    for r in &net.tapped {
        assert_eq!(
            r.participant_id, alice_id,
            "only alice publishes in a tapped room"
        );
        assert!(r.track_id == microphone || r.track_id == camera);
        assert_eq!(r.kind == Kind::Audio, r.track_id == microphone);
        // Each payload as alice sent it: it ends in her own sequence number.
        let tail = u64::from_be_bytes(r.payload[r.payload.len() - 8..].try_into().unwrap());
        assert_eq!(tail as u16, r.seq, "payload and header of one packet");
        let rid = r.rid.as_ref().map(|rid| rid.to_string());
        assert_eq!(rid.is_some(), r.track_id == camera);
        if !rids.contains(&rid) {
            rids.push(rid);
        }
    }
    rids.sort();
    assert_eq!(
        rids,
        [None, Some("f".into()), Some("h".into()), Some("q".into())]
    );
    // At least what bob got of each track went through the tap.
    for track in [microphone, camera] {
        let got = net.client(bob).received[&track].len();
        let tapped = net.tapped.iter().filter(|r| r.track_id == track).count();
        assert!(
            got > 20 && tapped >= got,
            "{track}: {tapped} tapped, {got} forwarded"
        );
    }
}
