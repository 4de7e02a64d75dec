//! Sans-IO integration tests: real str0m clients (full ICE, DTLS-SRTP, RTP) and the shard
//! core wired together in virtual time, with no socket and no clock.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Net, assert_receives_exactly, assert_well_forwarded, everyone};
use protocol::{ErrorCode, Kind, LeaveReason, Publish, ServerMessage, Source, TrackId, Transport};
use protocol::{Grants, Request};
use sfu_core::forwarder::DropReason;
use sfu_core::shard::ShardConfig;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::Protocol;
use str0m::rtp::{RtpWrite, SeqNo};

/// Three participants in one room each receive the others' audio and video.
fn three_party_call() -> Net {
    let mut net = Net::new(ShardConfig::default());
    let sources = [Source::Microphone, Source::Camera];
    for name in ["alice", "bob", "carol"] {
        let i = net.join(name, everyone());
        net.negotiate(i, &sources);
    }
    // Earlier joiners learned of later tracks: they renegotiate to receive them.
    net.negotiate(0, &[]);
    net.negotiate(1, &[]);
    net.run(Duration::from_secs(3));
    net
}

#[test]
fn three_clients_receive_each_others_audio_and_video() {
    let net = three_party_call();
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|o| *o != i).collect();
        let tracks = assert_receives_exactly(&net, i, &others);
        assert_eq!(tracks, 4, "two others publish two tracks each");
    }
    assert_eq!(net.shard.sizes(), (1, 3, 6));
}

#[test]
fn a_leaving_participant_is_announced_and_its_tracks_go() {
    let mut net = three_party_call();
    let carol = net.client(2).id;
    let carol_tracks: Vec<TrackId> = net.client(2).own_tracks.values().copied().collect();
    net.shard.leave(net.now, carol);
    net.clients[2].online = false;
    net.pump();
    assert!(net.closed.contains(&carol));
    for i in 0..2 {
        let c = net.client(i);
        assert!(c.messages().any(|m| matches!(m,
            ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Left }
                if *participant_id == carol)));
        for t in &carol_tracks {
            assert!(c.messages().any(|m| matches!(m,
                ServerMessage::TrackUnpublished { track_id } if track_id == t)));
        }
    }
    assert_eq!(net.shard.sizes(), (1, 2, 4));
    // The two who stay keep receiving each other.
    let before = net.client(0).received.values().map(Vec::len).sum::<usize>();
    net.run(Duration::from_secs(1));
    assert!(net.client(0).received.values().map(Vec::len).sum::<usize>() > before);
}

/// Once the last participant has gone, one by leaving and the others by vanishing, the
/// shard holds nothing: no room, no lookup entry, no timer, no queued output.
#[test]
fn a_shard_whose_participants_all_went_holds_nothing() {
    let timeout = ShardConfig::default().participant_timeout;
    let mut net = three_party_call();
    assert!(net.shard.entries().iter().any(|(_, n)| *n > 0));
    let alice = net.client(0).id;
    net.shard.leave(net.now, alice);
    net.clients[0].online = false;
    net.clients[1].online = false;
    net.clients[2].online = false;
    net.run(timeout + Duration::from_secs(5));
    assert_eq!(net.shard.sizes(), (0, 0, 0));
    for (table, n) in net.shard.entries() {
        assert_eq!(n, 0, "{table} still holds {n} entries");
    }
}

#[test]
fn a_vanished_participant_times_out_and_everyone_is_told() {
    let config = ShardConfig::default();
    let timeout = config.participant_timeout;
    let mut net = three_party_call();
    let bob = net.client(1).id;
    net.clients[1].online = false; // Its network drops everything from now on.
    net.run(timeout + Duration::from_secs(2));
    assert!(net.closed.contains(&bob), "bob removed within the timeout");
    for i in [0, 2] {
        assert!(net.client(i).messages().any(|m| matches!(m,
            ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Network }
                if *participant_id == bob)));
    }
    assert_eq!(net.shard.sizes().1, 2);
}

/// A participant that joins and never offers keeps no place (a server's participant
/// limit counts it): it is removed once the timeout has passed since its join.
#[test]
fn a_participant_that_never_offers_is_removed_after_the_timeout() {
    let timeout = ShardConfig::default().participant_timeout;
    let mut net = three_party_call();
    let dave = net.join("dave", everyone());
    let id = net.client(dave).id;
    net.run(timeout - Duration::from_secs(1));
    assert!(!net.closed.contains(&id), "dave is given the whole timeout");
    net.run(Duration::from_secs(2));
    assert!(net.closed.contains(&id), "dave removed once it passed");
    assert_eq!(net.shard.sizes().1, 3);
    assert!(
        net.client(0).messages().any(|m| matches!(m,
        ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Timeout }
            if *participant_id == id)),
        "it never connected: timeout, not network"
    );
}

#[test]
fn a_late_joiner_gets_existing_tracks_and_its_keyframe_request_reaches_publishers() {
    let mut net = three_party_call();
    let kf_before: Vec<usize> = net.clients.iter().map(|c| c.keyframe_requests).collect();
    let dave = net.join("dave", everyone());
    let joined_tracks = match net.client(dave).inbox.first() {
        Some(ServerMessage::Joined {
            tracks,
            participants,
            ice_servers,
            ..
        }) => {
            assert_eq!(ice_servers[0].username.as_deref(), Some("9999999999:dave"));
            assert_eq!(participants.len(), 3);
            tracks.len()
        }
        other => panic!("first message {other:?}"),
    };
    assert_eq!(joined_tracks, 6);
    net.negotiate(dave, &[]);
    net.run(Duration::from_secs(2));
    let d = net.client(dave);
    assert_eq!(d.received.len(), 6, "dave receives all six tracks");
    for (track, received) in &d.received {
        assert_well_forwarded(received, &format!("dave <- {track}"));
    }
    for (i, before) in kf_before.iter().enumerate().take(3) {
        assert!(
            net.client(i).keyframe_requests > *before,
            "{} was asked for a keyframe when dave subscribed",
            net.client(i).name
        );
    }
}

#[test]
fn keyframe_requests_are_throttled_per_source_and_repeated_until_the_keyframe_comes() {
    let mut net = three_party_call();
    let alice_video = net.track_of(0, Source::Camera);
    // Alice's encoder is slow: it answers no request for a while.
    net.clients[0].ignore_keyframe_requests = true;
    let before = net.client(0).keyframe_requests;
    // Five late joiners within 50 ms all subscribe to alice's camera.
    for n in 0..5 {
        let i = net.join(&format!("late{n}"), everyone());
        net.negotiate(i, &[]);
        net.run(Duration::from_millis(10));
    }
    assert!(
        net.clients[3..]
            .iter()
            .all(|c| c.subscribe.iter().any(|(_, t)| *t == alice_video))
    );
    net.run(Duration::from_millis(150));
    let during = net.client(0).keyframe_requests - before;
    assert!(during <= 1, "one request in the first 200 ms, got {during}");
    net.run(Duration::from_millis(850));
    let unanswered = net.client(0).keyframe_requests - before;
    assert!(
        (3..=6).contains(&unanswered),
        "repeated about every 200 ms while no keyframe comes, got {unanswered} in 1 s"
    );
    // The keyframe comes: the requests stop, and every late joiner gets alice's video.
    net.clients[0].ignore_keyframe_requests = false;
    net.run(Duration::from_millis(300));
    let answered = net.client(0).keyframe_requests;
    net.run(Duration::from_secs(1));
    assert_eq!(
        net.client(0).keyframe_requests,
        answered,
        "no request once the keyframe arrived"
    );
    for c in &net.clients[3..] {
        let got = c.received.get(&alice_video).map_or(0, Vec::len);
        assert!(got > 20, "{} receives alice's video: {got} packets", c.name);
        assert!(
            c.received[&alice_video][0].keyframe,
            "{} starts at a keyframe",
            c.name
        );
    }
}

#[test]
fn publishing_what_the_token_does_not_grant_is_forbidden() {
    let mut net = Net::new(ShardConfig::default());
    let grants = Grants {
        publish_video: false,
        ..Grants::default()
    };
    let i = net.join("eve", grants);
    net.negotiate(i, &[Source::Microphone, Source::Camera]);
    let c = net.client(i);
    assert_eq!(c.error_codes(), vec![ErrorCode::Forbidden]);
    assert!(
        !c.messages()
            .any(|m| matches!(m, ServerMessage::Answer { .. }))
    );
    assert_eq!(net.shard.sizes().2, 0, "nothing published");
}

#[test]
fn bad_sdp_is_refused_and_the_participant_stays() {
    let mut net = Net::new(ShardConfig::default());
    let i = net.join("mallory", everyone());
    let id = net.client(i).id;
    net.shard.request(
        net.now,
        id,
        Request::Offer {
            sdp: "v=0\r\nthis is not sdp".into(),
            publish: vec![],
            subscribe: vec![],
            slots: vec![],
        },
    );
    net.pump();
    assert_eq!(net.client(i).error_codes(), vec![ErrorCode::BadSdp]);
    // Still in the call: a valid offer now works.
    net.negotiate(i, &[Source::Microphone]);
    assert!(
        net.client(i)
            .messages()
            .any(|m| matches!(m, ServerMessage::Answer { .. }))
    );
}

#[test]
fn an_offer_str0m_cannot_reconcile_is_refused_and_the_shard_goes_on() {
    // Found by the fuzz targets whip_offer and shard_offer: in one bundled m-line, an
    // H.264 payload type lost its parameters, so the offer gave it two codec
    // configurations, and str0m panicked accepting it ("Pt locked multiple times"),
    // which took down the shard with every call on it.
    let mut net = Net::new(ShardConfig::default());
    let alice = net.join("alice", everyone());
    net.negotiate(alice, &[Source::Microphone]);
    let mallory = net.join("mallory", everyone());
    let c = &mut net.clients[mallory];
    let mut api = c.rtc.sdp_api();
    for _ in 0..2 {
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    }
    let (offer, _pending) = api.apply().expect("an offer");
    let id = c.id;
    let sdp = offer.to_sdp_string();
    let fmtp = sdp
        .lines()
        .find(|l| l.starts_with("a=fmtp:") && l.contains("profile-level-id=64001f"))
        .expect("an H.264 High profile payload type");
    let at = sdp.find(fmtp).expect("the line");
    // Only its first occurrence, in the first video m-line, goes.
    let sdp = format!("{}{}", &sdp[..at], &sdp[at + fmtp.len() + 2..]);
    net.shard.request(
        net.now,
        id,
        Request::Offer {
            sdp,
            publish: vec![],
            subscribe: vec![],
            slots: vec![],
        },
    );
    net.pump();
    assert_eq!(net.client(mallory).error_codes(), vec![ErrorCode::BadSdp]);
    assert!(net.closed.contains(&id), "its session may be half-changed");
    // The shard goes on: alice renegotiates and is answered.
    net.negotiate(alice, &[Source::Camera]);
    let answers = net
        .client(alice)
        .messages()
        .filter(|m| matches!(m, ServerMessage::Answer { .. }))
        .count();
    assert_eq!(answers, 2);
    assert_eq!(net.shard.sizes().1, 1);
}

#[test]
fn a_payload_too_large_to_forward_is_dropped_and_the_shard_goes_on() {
    // A publisher that negotiates no header extensions sends a 1980-byte payload, in a
    // 1992-byte RTP packet (over ICE-TCP nothing bounds a frame below 64 KiB). With the
    // subscriber's header extensions it was over str0m's 2000 bytes, and str0m panicked
    // sending it, in the shard (found following the shard_datagram fuzz target, whose
    // client str0m panicked the same way on a payload it was asked to send).
    let mut net = Net::new(ShardConfig::default());
    net.join_without_extensions = true;
    let p = net.join_with("bare", everyone(), Transport::Auto, Protocol::Tcp);
    net.negotiate(p, &[Source::Camera]);
    let s = net.join("viewer", everyone());
    net.negotiate(s, &[]);
    net.run(Duration::from_secs(1));
    let track = net.track_of(p, Source::Camera);
    let before = net.client(s).received.get(&track).map_or(0, Vec::len);
    assert!(before > 0, "media flows");
    let c = &mut net.clients[p];
    let (mid, _) = c.publish[0];
    let pt = c.pt(Codec::Vp8);
    let seq = *c.next_seq.get(&(mid, 0)).expect("sending");
    // A VP8 keyframe's first packet, ending in its sequence number as the harness's do.
    let mut payload = vec![0x90, 0x80, 0x80, 0x01, 0x00, 0x00];
    payload.resize(1980 - 8, 0xa5);
    payload.extend_from_slice(&seq.to_be_bytes());
    let now = net.now;
    let mut api = c.rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None).expect("a stream");
    tx.write_rtp(RtpWrite::new(pt, SeqNo::from(seq), 0, now, payload).marker(true));
    c.next_seq.insert((mid, 0), seq + 1);
    net.pump();
    net.run(Duration::from_millis(500));
    let drops = net.shard.counters.drops[DropReason::Oversized.index()];
    assert_eq!(drops, 1);
    let after = net.client(s).received.get(&track).map_or(0, Vec::len);
    assert!(after > before, "media goes on after it");
    assert!(net.closed.is_empty());
}

#[test]
fn the_room_refuses_a_participant_over_capacity() {
    let mut net = Net::new(ShardConfig {
        room_capacity: 2,
        ..ShardConfig::default()
    });
    net.join("a", everyone());
    net.join("b", everyone());
    let c = net.join("c", everyone());
    assert_eq!(net.client(c).error_codes(), vec![ErrorCode::RoomFull]);
    assert!(net.closed.contains(&net.client(c).id));
    assert_eq!(net.shard.sizes().1, 2);
    // The others were not told about the refused one.
    assert!(!net.client(0).messages().any(|m| matches!(m,
        ServerMessage::ParticipantJoined(p) if p.identity == "c")));
}

#[test]
fn a_draining_shard_keeps_its_calls_takes_no_new_room_then_shuts_down() {
    let mut net = three_party_call();
    net.shard.refuse_new_rooms();
    // A newcomer to the call in progress gets in; one opening another room does not.
    let dave = net.join("dave", everyone());
    assert!(net.client(dave).error_codes().is_empty());
    net.join_room = Some("other".into());
    let erin = net.join("erin", everyone());
    assert_eq!(
        net.client(erin).error_codes(),
        vec![ErrorCode::ServerDraining]
    );
    assert!(net.closed.contains(&net.client(erin).id));
    assert_eq!(net.shard.sizes().0, 1, "no second room");
    // The call goes on while draining.
    let before = net.client(0).received.values().map(Vec::len).sum::<usize>();
    net.run(Duration::from_secs(1));
    let after = net.client(0).received.values().map(Vec::len).sum::<usize>();
    assert!(
        after > before + 50,
        "media still flows: {before} -> {after}"
    );
    // Shut down: everyone is told to join again, and the shard is empty.
    net.shard.shut_down(net.now);
    net.pump();
    for i in [0, 1, 2, dave] {
        let told = net.client(i).messages().any(|m| {
            matches!(m, ServerMessage::Left { reason } if *reason == LeaveReason::ServerShutdown)
        });
        assert!(told, "client {i} told of the shutdown");
        assert!(net.closed.contains(&net.client(i).id));
        let others_left = net.client(i).messages().any(|m| {
            matches!(m, ServerMessage::ParticipantLeft { reason, .. } if *reason == LeaveReason::ServerShutdown)
        });
        assert!(
            !others_left,
            "client {i} is not told of each other's leaving"
        );
    }
    assert_eq!(net.shard.sizes(), (0, 0, 0));
}

#[test]
fn garbage_datagrams_are_counted_and_harm_no_call() {
    let mut net = three_party_call();
    let before = net.client(0).received.values().map(Vec::len).sum::<usize>();
    let server = Net::server();
    let stranger: SocketAddr = "203.0.113.9:4000".parse().expect("address");
    let alice = net.client(0).addr;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for n in 0..500 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1200) as usize;
        let data: Vec<u8> = (0..len).map(|k| (seed >> (k % 56)) as u8).collect();
        // From a stranger, and spoofed from a participant's own address.
        let from = if n % 2 == 0 { stranger } else { alice };
        net.shard
            .handle_datagram(net.now, Protocol::Udp, server, from, &data);
    }
    net.pump();
    let drops = net.shard.counters.drops;
    assert!(drops[DropReason::UnknownSource.index()] >= 250);
    net.run(Duration::from_secs(1));
    let after = net.client(0).received.values().map(Vec::len).sum::<usize>();
    assert!(
        after > before + 50,
        "media still flows: {before} -> {after}"
    );
    assert_eq!(net.shard.sizes(), (1, 3, 6));
}

#[test]
fn a_reused_m_line_continues_its_stream_across_tracks() {
    let mut net = three_party_call();
    let carol = net.client(2).id;
    let track_of = |c: &Client, source: Source| {
        c.publish
            .iter()
            .find(|(_, s)| *s == source)
            .and_then(|(mid, _)| c.own_tracks.get(mid).copied())
            .expect("published")
    };
    let carol_audio = track_of(net.client(2), Source::Microphone);
    let carol_video = track_of(net.client(2), Source::Camera);
    let mid = net
        .client(0)
        .subscribe
        .iter()
        .find(|(_, t)| *t == carol_audio)
        .map(|(m, _)| *m)
        .expect("alice receives carol's audio");
    net.shard.leave(net.now, carol);
    net.clients[2].online = false;
    net.pump();
    let dave = net.join("dave", everyone());
    net.negotiate(dave, &[Source::Microphone, Source::Camera]);
    let dave_id = net.client(dave).id;
    let dave_audio = net
        .client(0)
        .tracks_announced()
        .iter()
        .find(|t| t.participant_id == dave_id && t.kind == Kind::Audio)
        .map(|t| t.track_id)
        .expect("alice was told of dave's audio");
    net.run(Duration::from_millis(500));
    // Alice receives dave's audio on the m-line that carried carol's, like the browser
    // client does, and leaves carol's video m-line idle.
    let alice = &mut net.clients[0];
    alice.subscribe.retain(|(_, t)| *t != carol_video);
    for entry in &mut alice.subscribe {
        if entry.0 == mid {
            entry.1 = dave_audio;
        }
    }
    net.negotiate(0, &[]);
    net.run(Duration::from_secs(2));
    let alice = net.client(0);
    let old = alice.received.get(&carol_audio).expect("carol's audio");
    let new = alice.received.get(&dave_audio).expect("dave's audio");
    let (last, first) = (old.last().expect("packets"), &new[0]);
    assert_eq!(
        first.seq_no,
        last.seq_no + 1,
        "the m-line's sequence goes on"
    );
    let advance = first.time.wrapping_sub(last.time);
    assert!(
        (48_000 / 2..48_000 * 2).contains(&advance),
        "timestamp advanced by the ~1 s between the tracks, in 48 kHz ticks: {advance}"
    );
    assert_well_forwarded(new, "alice <- dave's audio on a reused m-line");
    assert_eq!(
        alice.subscribe.len(),
        4,
        "one m-line reused, one new for dave's video, carol's video idle and out of the list"
    );
}

#[test]
fn a_publish_of_the_wrong_kind_is_refused_before_anything_is_applied() {
    let mut net = Net::new(ShardConfig::default());
    let i = net.join("trudy", everyone());
    let c = &mut net.clients[i];
    let mut api = c.rtc.sdp_api();
    let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let id = c.id;
    let sdp = offer.to_sdp_string();
    for (mid, source) in [
        (video.to_string(), Source::Microphone),
        ("nope".into(), Source::Camera),
    ] {
        net.shard.request(
            net.now,
            id,
            Request::Offer {
                sdp: sdp.clone(),
                publish: vec![Publish {
                    mid,
                    source,
                    layers: Vec::new(),
                }],
                subscribe: vec![],
                slots: vec![],
            },
        );
        net.pump();
    }
    let c = net.client(i);
    let replies: Vec<&ServerMessage> = c
        .messages()
        .filter(|m| matches!(m, ServerMessage::Error(_) | ServerMessage::Answer { .. }))
        .collect();
    assert_eq!(replies.len(), 2, "exactly one reply per offer: {replies:?}");
    for r in replies {
        assert!(matches!(r, ServerMessage::Error(e)
            if e.code == ErrorCode::BadRequest
                && e.request == Some(protocol::RequestType::Offer)));
    }
    assert_eq!(net.shard.sizes().2, 0, "nothing published");
}

#[test]
fn bad_slots_are_refused_before_anything_is_applied() {
    let mut net = Net::new(ShardConfig::default());
    let i = net.join("trudy", everyone());
    let c = &mut net.clients[i];
    let mut api = c.rtc.sdp_api();
    let sending = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let receiving = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let id = c.id;
    let sdp = offer.to_sdp_string();
    let many: Vec<String> = (0..65).map(|k| format!("m{k}")).collect();
    let cases: Vec<(Vec<String>, Vec<protocol::Subscribe>, ErrorCode)> = vec![
        // An m-line the client sends on, one not in the offer, too many, and slots
        // with a subscribe.
        (vec![sending.to_string()], vec![], ErrorCode::BadRequest),
        (vec!["nope".into()], vec![], ErrorCode::BadRequest),
        (many, vec![], ErrorCode::BadRequest),
        (
            vec![receiving.to_string()],
            vec![protocol::Subscribe {
                mid: "x".into(),
                track_id: TrackId(1),
            }],
            ErrorCode::BadRequest,
        ),
    ];
    let expected: Vec<ErrorCode> = cases.iter().map(|c| c.2).collect();
    for (slots, subscribe, _) in cases {
        let request = Request::Offer {
            sdp: sdp.clone(),
            publish: vec![],
            subscribe,
            slots,
        };
        net.shard.request(net.now, id, request);
        net.pump();
    }
    // Without the subscribe grant: forbidden.
    let j = net.join(
        "mallory",
        Grants {
            subscribe: false,
            ..everyone()
        },
    );
    let c = &mut net.clients[j];
    let mut api = c.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let request = Request::Offer {
        sdp: offer.to_sdp_string(),
        publish: vec![],
        subscribe: vec![],
        slots: vec![mid.to_string()],
    };
    let id = c.id;
    net.shard.request(net.now, id, request);
    net.pump();
    let codes = |k: usize| -> Vec<ErrorCode> {
        net.client(k)
            .messages()
            .filter_map(|m| match m {
                ServerMessage::Error(e) => Some(e.code),
                ServerMessage::Answer { .. } => panic!("an answer to a bad offer"),
                _ => None,
            })
            .collect()
    };
    assert_eq!(codes(i), expected);
    assert_eq!(codes(j), vec![ErrorCode::Forbidden]);
}

/// The transports of the candidates in the answer a client got.
fn answered_candidate_transports(c: &Client) -> Vec<String> {
    let sdp = c
        .messages()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .expect("an answer");
    let mut transports: Vec<String> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| {
            let transport = l.split_whitespace().nth(2).expect("transport field");
            let tcptype = l
                .split(" tcptype ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .map(|t| format!(" {t}"));
            format!(
                "{}{}",
                transport.to_lowercase(),
                tcptype.unwrap_or_default()
            )
        })
        .collect();
    transports.sort();
    transports.dedup();
    transports
}

#[test]
fn offered_candidates_follow_the_transport_and_the_force_tcp_grant() {
    let mut net = Net::new(ShardConfig::default());
    let forced = Grants {
        force_tcp: true,
        ..everyone()
    };
    let auto = net.join("auto", everyone());
    let tcp = net.join_with("tcp", forced, Transport::Auto, Protocol::Tcp);
    let relay = net.join_with("relay", everyone(), Transport::Relay, Protocol::Udp);
    let forced_relay = net.join_with("forced-relay", forced, Transport::Relay, Protocol::Udp);
    for i in [auto, tcp, relay, forced_relay] {
        net.negotiate(i, &[Source::Microphone]);
    }
    assert_eq!(
        answered_candidate_transports(net.client(auto)),
        ["tcp passive", "udp"],
        "UDP and passive ICE-TCP; UDP ranks first by priority"
    );
    assert_eq!(
        answered_candidate_transports(net.client(tcp)),
        ["tcp passive"],
        "force_tcp: no UDP candidate at all"
    );
    assert_eq!(answered_candidate_transports(net.client(relay)), ["udp"]);
    assert_eq!(
        answered_candidate_transports(net.client(forced_relay)),
        ["udp"],
        "force_tcp falling back to TURN over TCP/TLS: the relay reaches UDP"
    );
    // Candidate priorities: the UDP host candidate outranks the TCP one.
    let sdp = net
        .client(auto)
        .messages()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .unwrap();
    let priority = |transport: &str| -> u32 {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .find(|l| {
                l.split_whitespace()
                    .nth(2)
                    .unwrap()
                    .eq_ignore_ascii_case(transport)
            })
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(priority("udp") > priority("tcp"), "{sdp}");
}

#[test]
fn a_call_between_an_ice_tcp_client_and_a_udp_client_carries_media_both_ways() {
    let mut net = Net::new(ShardConfig::default());
    let sources = [Source::Microphone, Source::Camera];
    let forced = Grants {
        force_tcp: true,
        ..everyone()
    };
    let udp = net.join("udp", everyone());
    net.negotiate(udp, &sources);
    let tcp = net.join_with("tcp", forced, Transport::Auto, Protocol::Tcp);
    net.negotiate(tcp, &sources);
    net.negotiate(udp, &[]);
    net.run(Duration::from_secs(3));
    for (i, other) in [(udp, tcp), (tcp, udp)] {
        assert_receives_exactly(&net, i, &[other]);
    }
    // The TCP client's packets went both ways over TCP (`pump` checks each transmit's
    // transport against its client's).
    let counters = &net.shard.counters;
    assert!(counters.tcp_rx_packets > 100, "{counters:?}");
    assert!(counters.tcp_tx_packets > 100, "{counters:?}");
    assert!(counters.rx_packets > 100, "{counters:?}");
}
