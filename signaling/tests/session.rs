//! The WebSocket session against a real server on 127.0.0.1:0 and a recording media plane
//! (the harness is in `common`): every bad-input case of docs/protocol.md, and what
//! reaches the media plane.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::Request;
use protocol::{
    E2eeData, ErrorCode, ErrorMessage, LeaveReason, ParticipantId, ServerMessage, Transport,
};
use signaling::TokenKey;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn forged_expired_and_garbage_tokens_are_unauthorized_and_closed() {
    let (addr, plane) = start(false).await;
    let forged = TokenKey::new(b"not-the-secret")
        .issue(&TokenKey::claims(
            "r",
            "mallory",
            None,
            Duration::from_secs(60),
        ))
        .unwrap();
    let mut expired = TokenKey::claims("r", "old", None, Duration::from_secs(60));
    expired.exp = signaling::token::unix_now() - 5;
    let expired = TokenKey::new(SECRET).issue(&expired).unwrap();
    let joins = [forged.as_str(), expired.as_str(), "garbage", ""]
        .map(|t| format!(r#"{{"type":"join","token":"{t}"}}"#));
    // A join without a token is one with a token that does not verify.
    for join in joins
        .iter()
        .map(String::as_str)
        .chain([r#"{"type":"join"}"#])
    {
        let mut ws = connect(&addr).await;
        send(&mut ws, join).await;
        expect_error(&mut ws, "unauthorized").await;
        assert!(
            next(&mut ws).await.is_none(),
            "socket closed after unauthorized"
        );
    }
    assert!(
        plane.calls.lock().is_empty(),
        "nothing reached the media plane"
    );
}

#[tokio::test]
async fn bad_messages_get_codes_and_the_socket_stays_usable() {
    let (addr, plane) = start(false).await;
    let mut ws = connect(&addr).await;
    send(&mut ws, "{not json").await;
    expect_error(&mut ws, "bad_request").await;
    send(&mut ws, r#"{"type":"dance"}"#).await;
    expect_error(&mut ws, "unknown_type").await;
    let big = format!(r#"{{"type":"leave","pad":"{}"}}"#, "x".repeat(70_000));
    send(&mut ws, &big).await;
    expect_error(&mut ws, "message_too_large").await;
    send(&mut ws, r#"{"type":"offer","sdp":"v=0"}"#).await;
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(
        (msg["code"].as_str(), msg["request"].as_str()),
        (Some("not_joined"), Some("offer"))
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    expect_error(&mut ws, "bad_request").await;
    // Still usable: a valid join goes through.
    send(&mut ws, &join_message("bob")).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
    assert_eq!(plane.calls.lock()[0], Call::Join("r".into(), "bob".into()));
}

#[tokio::test]
async fn offers_may_be_large_but_not_over_a_mebibyte() {
    let (addr, plane) = start(false).await;
    let (mut ws, id) = joined(&addr, &plane).await;
    let sdp = "a".repeat(300 * 1024);
    send(&mut ws, &format!(r#"{{"type":"offer","sdp":"{sdp}"}}"#)).await;
    let sdp = "a".repeat(1536 * 1024);
    send(&mut ws, &format!(r#"{{"type":"offer","sdp":"{sdp}"}}"#)).await;
    expect_error(&mut ws, "message_too_large").await;
    send(&mut ws, r#"{"type":"mute","track_id":1,"muted":false}"#).await;
    for _ in 0..200 {
        if plane.calls.lock().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = plane.calls.lock().clone();
    assert!(
        matches!(&calls[1], Call::Request(p, Request::Offer { sdp, .. })
        if *p == id && sdp.len() == 300 * 1024)
    );
    assert!(
        matches!(&calls[2], Call::Request(_, Request::Mute { .. })),
        "socket still usable"
    );
}

#[tokio::test]
async fn requests_reach_the_media_plane_and_close_means_leave() {
    let (addr, plane) = start(false).await;
    let (mut ws, id) = joined(&addr, &plane).await;
    send(
        &mut ws,
        r#"{"type":"offer","sdp":"v=0","publish":[{"mid":"0","source":"camera"}]}"#,
    )
    .await;
    send(&mut ws, r#"{"type":"mute","track_id":4,"muted":true}"#).await;
    send(&mut ws, &join_message("again")).await;
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(
        (msg["code"].as_str(), msg["request"].as_str()),
        (Some("already_joined"), Some("join"))
    );
    ws.close(None).await.unwrap();
    for _ in 0..200 {
        if plane.calls.lock().contains(&Call::Leave(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = plane.calls.lock().clone();
    assert!(
        matches!(&calls[1], Call::Request(p, Request::Offer { publish, .. })
        if *p == id && publish.len() == 1),
        "{calls:?}"
    );
    assert_eq!(
        calls[2],
        Call::Request(
            id,
            Request::Mute {
                track_id: protocol::TrackId(4),
                muted: true
            }
        )
    );
    assert_eq!(calls.last(), Some(&Call::Leave(id)));
    assert_eq!(
        calls.len(),
        4,
        "one join, two requests, one leave: {calls:?}"
    );
}

#[tokio::test]
async fn leave_message_means_leave_and_close() {
    let (addr, plane) = start(false).await;
    let (mut ws, id) = joined(&addr, &plane).await;
    send(&mut ws, r#"{"type":"leave"}"#).await;
    assert!(next(&mut ws).await.is_none(), "socket closes after leave");
    assert_eq!(plane.calls.lock().last(), Some(&Call::Leave(id)));
}

#[tokio::test]
async fn events_are_delivered_and_a_closing_message_closes_the_socket() {
    let (addr, plane) = start(false).await;
    let (mut ws, _id) = joined(&addr, &plane).await;
    let events = plane.events.lock()[0].clone();
    events
        .send(ServerMessage::TrackMuted {
            track_id: protocol::TrackId(9),
            muted: true,
        })
        .await
        .unwrap();
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(msg["type"], "track_muted");
    assert_eq!(msg["track_id"], 9);
    events
        .send(ServerMessage::Left {
            reason: LeaveReason::Timeout,
        })
        .await
        .unwrap();
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(
        (msg["type"].as_str(), msg["reason"].as_str()),
        (Some("left"), Some("timeout"))
    );
    assert!(next(&mut ws).await.is_none());

    // A closing error code closes too.
    let (mut ws, _) = joined(&addr, &plane).await;
    let events = plane.events.lock()[1].clone();
    events
        .send(ServerMessage::Error(ErrorMessage::new(
            ErrorCode::RoomFull,
            "full",
        )))
        .await
        .unwrap();
    expect_error(&mut ws, "room_full").await;
    assert!(next(&mut ws).await.is_none());
}

#[tokio::test]
async fn a_burst_of_events_arrives_whole_and_in_order() {
    // Queued faster than the socket writes them: written in batches, none lost or moved.
    let (addr, plane) = start(false).await;
    let (mut ws, _id) = joined(&addr, &plane).await;
    let events = plane.events.lock()[0].clone();
    for i in 0..200 {
        events
            .try_send(ServerMessage::TrackMuted {
                track_id: protocol::TrackId(i),
                muted: i % 2 == 0,
            })
            .unwrap();
    }
    for i in 0..200 {
        let msg = next(&mut ws).await.unwrap();
        assert_eq!(
            (msg["type"].as_str(), msg["track_id"].as_u64()),
            (Some("track_muted"), Some(i))
        );
    }
}

#[tokio::test]
async fn dropping_the_event_queue_closes_the_socket() {
    let (addr, plane) = start(false).await;
    let (mut ws, _id) = joined(&addr, &plane).await;
    plane.events.lock().clear();
    assert!(next(&mut ws).await.is_none());
}

#[tokio::test]
async fn a_busy_media_plane_answers_server_busy() {
    let (addr, plane) = start(false).await;
    *plane.busy.lock() = true;
    let mut ws = connect(&addr).await;
    send(&mut ws, &join_message("a")).await;
    expect_error(&mut ws, "server_busy").await;
    *plane.busy.lock() = false;
    send(&mut ws, &join_message("a")).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
}

#[tokio::test]
async fn dev_token_exists_only_in_dev_mode() {
    let (addr, _) = start(true).await;
    let body = http_get(&addr, "/dev/token?room=r&identity=i&name=N").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let json = body.split("\r\n\r\n").nth(1).unwrap();
    let token: serde_json::Value = serde_json::from_str(json).unwrap();
    let claims = TokenKey::new(SECRET)
        .verify(token["token"].as_str().unwrap())
        .unwrap();
    assert_eq!((claims.room.as_str(), claims.sub.as_str()), ("r", "i"));
    let long = format!("/dev/token?room={}&identity=i", "r".repeat(200));
    assert!(http_get(&addr, &long).await.starts_with("HTTP/1.1 400"));

    let (addr, plane) = start(false).await;
    let body = http_get(&addr, "/dev/token?room=r&identity=i").await;
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");
    let health = http_get(&addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"));
    let ready = http_get(&addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready\n"),
        "{ready}"
    );
    plane.draining.store(true, Ordering::Relaxed);
    let ready = http_get(&addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.ends_with("draining\n"),
        "{ready}"
    );
    let health = http_get(&addr, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "still alive while draining"
    );
    let metrics = http_get(&addr, "/metrics").await;
    assert!(metrics.contains("sfu_signaling_sockets"), "{metrics}");
    let page = http_get(&addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<html"));
    let js = http_get(&addr, "/client.js").await;
    assert!(js.contains("text/javascript") && js.contains("export"));
}

#[tokio::test]
async fn a_socket_that_never_joins_is_closed() {
    let (addr, _plane) = start(false).await;
    let mut ws = connect(&addr).await;
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), ws.next()).await;
    assert!(
        matches!(
            closed,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_)))
        ),
        "closed, not answered: {closed:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
}

#[tokio::test]
async fn the_transport_reaches_the_plane_and_force_tcp_keeps_only_tcp_turn_urls() {
    let (addr, plane) = start(false).await;
    let mut ws = connect(&addr).await;
    send(&mut ws, &join_message("alice")).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
    assert_eq!(
        plane.last_join.lock().clone(),
        Some((
            Transport::Auto,
            vec![
                "turn:relay.example:3478?for=alice".to_string(),
                "turns:relay.example:443?for=alice".to_string(),
            ]
        )),
        "no transport means auto; every URL without force_tcp"
    );
    let mut claims = TokenKey::claims("r", "bob", None, Duration::from_secs(60));
    claims.grants.force_tcp = true;
    let forced = TokenKey::new(SECRET).issue(&claims).unwrap();
    let mut ws = connect(&addr).await;
    send(
        &mut ws,
        &format!(r#"{{"type":"join","token":"{forced}","transport":"relay","e2ee":true}}"#),
    )
    .await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
    assert_eq!(
        plane.last_join.lock().clone(),
        Some((
            Transport::Relay,
            vec!["turns:relay.example:443?for=bob".to_string()]
        )),
        "force_tcp: only TURN over TCP or TLS"
    );
}

#[tokio::test]
async fn a_join_that_may_publish_in_the_clear_needs_the_plaintext_grant() {
    let (addr, plane) = start(false).await;
    // Full grants, no e2ee: refused and closed, and the media plane never hears of it.
    for join in [
        format!(r#"{{"type":"join","token":"{}"}}"#, token("r", "eve")),
        format!(
            r#"{{"type":"join","token":"{}","e2ee":false}}"#,
            token_with(
                "eve",
                serde_json::json!({"publish_video": false, "publish_screen": false})
            )
        ),
    ] {
        let mut ws = connect(&addr).await;
        send(&mut ws, &join).await;
        let msg = next(&mut ws).await.unwrap();
        assert_eq!(
            (msg["code"].as_str(), msg["request"].as_str()),
            (Some("e2ee_required"), Some("join")),
            "{msg}"
        );
        assert!(msg["message"].as_str().unwrap().contains("plaintext grant"));
        assert!(next(&mut ws).await.is_none(), "socket closed");
    }
    assert!(plane.calls.lock().is_empty(), "{:?}", plane.calls.lock());

    // In the clear with the plaintext grant, receive-only, a viewer, or with e2ee: admitted.
    let joins = [
        token_with("whip", serde_json::json!({"plaintext": true})),
        token_with(
            "listener",
            serde_json::json!({"publish_audio": false, "publish_video": false, "publish_screen": false}),
        ),
        token_with("viewer", serde_json::json!({"role": "viewer"})),
    ];
    for token in &joins {
        let mut ws = connect(&addr).await;
        send(&mut ws, &format!(r#"{{"type":"join","token":"{token}"}}"#)).await;
        assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
    }
    let mut ws = connect(&addr).await;
    send(&mut ws, &join_message("alice")).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
    assert_eq!(*plane.e2ee.lock(), [false, false, false, true]);
    let metrics = http_get(&addr, "/metrics").await;
    assert!(
        metrics.contains(r#"sfu_signaling_errors_total{code="e2ee_required"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn e2ee_and_keyframe_messages_reach_the_media_plane() {
    let (addr, plane) = start(false).await;
    let (mut ws, id) = joined(&addr, &plane).await;
    send(&mut ws, r#"{"type":"e2ee","to":7,"data":"opaque-blob"}"#).await;
    send(&mut ws, r#"{"type":"keyframe","track_id":9}"#).await;
    let big = format!(r#"{{"type":"e2ee","to":7,"data":"{}"}}"#, "b".repeat(4097));
    send(&mut ws, &big).await;
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(
        (msg["code"].as_str(), msg["request"].as_str()),
        (Some("message_too_large"), Some("e2ee"))
    );
    let calls = plane.calls.lock().clone();
    assert_eq!(
        calls[1..],
        [
            Call::Request(
                id,
                Request::E2ee {
                    to: ParticipantId(7),
                    data: E2eeData::new("opaque-blob")
                }
            ),
            Call::Request(
                id,
                Request::Keyframe {
                    track_id: protocol::TrackId(9)
                }
            ),
        ]
    );
}

#[tokio::test]
async fn e2ee_messages_over_the_rate_are_refused_and_the_socket_stays() {
    let (addr, plane) = start(false).await;
    let (mut ws, _id) = joined(&addr, &plane).await;
    let sent = 1400;
    let started = std::time::Instant::now();
    for _ in 0..sent {
        send(&mut ws, r#"{"type":"e2ee","to":7,"data":"k"}"#).await;
    }
    let mut limited = 0;
    let relayed = || {
        plane
            .calls
            .lock()
            .iter()
            .filter(|c| matches!(c, Call::Request(_, Request::E2ee { .. })))
            .count()
    };
    // Every message is either relayed or answered `rate_limited`.
    while relayed() + limited < sent {
        let msg = next(&mut ws).await.unwrap();
        assert_eq!(
            (msg["code"].as_str(), msg["request"].as_str()),
            (Some("rate_limited"), Some("e2ee")),
            "{msg}"
        );
        limited += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let relayed = relayed();
    assert!(
        relayed >= 1024 && relayed as f64 <= 1024.0 + 256.0 * elapsed + 1.0,
        "a burst of 1024, then 256/s: {relayed} relayed in {elapsed:.2} s"
    );
    assert!(limited > 0);
    // Still open and usable.
    send(&mut ws, r#"{"type":"mute","track_id":1,"muted":true}"#).await;
    for _ in 0..200 {
        if plane
            .calls
            .lock()
            .iter()
            .any(|c| matches!(c, Call::Request(_, Request::Mute { .. })))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        plane.calls.lock().last(),
        Some(Call::Request(_, Request::Mute { .. }))
    ));
    let metrics = http_get(&addr, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            r#"sfu_signaling_errors_total{{code="rate_limited"}} {limited}"#
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn dev_tokens_carry_the_plaintext_grant_only_when_asked() {
    let (addr, _) = start(true).await;
    let grants = |body: String| {
        let json = body.split("\r\n\r\n").nth(1).unwrap().to_string();
        let token: serde_json::Value = serde_json::from_str(&json).unwrap();
        TokenKey::new(SECRET)
            .verify(token["token"].as_str().unwrap())
            .unwrap()
            .grants
    };
    let plain = grants(http_get(&addr, "/dev/token?room=r&identity=i&plaintext=1").await);
    assert!(plain.plaintext);
    let default = grants(http_get(&addr, "/dev/token?room=r&identity=i").await);
    assert!(!default.plaintext);
    let off = grants(http_get(&addr, "/dev/token?room=r&identity=i&plaintext=0").await);
    assert!(!off.plaintext);
    let bad = http_get(&addr, "/dev/token?room=r&identity=i&plaintext=maybe").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
}

#[tokio::test]
async fn whip_ingest_needs_the_plaintext_grant_and_whep_does_not() {
    let (addr, plane) = start(false).await;
    let post = |path: &'static str, token: String| {
        let addr = addr.clone();
        async move { post_sdp(&addr, path, &token, "v=0\r\n").await }
    };
    let refused = post("/whip", token("r", "obs")).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("e2ee_required") && refused.contains("plaintext grant"),
        "{refused}"
    );
    // Past that check, the offer (which sends nothing) is what is refused.
    let plaintext = token_with("obs", serde_json::json!({"plaintext": true}));
    let past = post("/whip", plaintext).await;
    assert!(past.starts_with("HTTP/1.1 400"), "{past}");
    let watch = post("/whep", token("r", "player")).await;
    assert!(watch.starts_with("HTTP/1.1 400"), "{watch}");
    assert!(plane.calls.lock().is_empty());
}

#[tokio::test]
async fn a_frame_over_the_limit_is_told_then_closed() {
    let (addr, plane) = start(false).await;
    // 3 MiB in one frame: over the transport's 2 MiB, so never read as a message.
    let huge = format!(r#"{{"type":"leave","pad":"{}"}}"#, "x".repeat(3 << 20));
    for joined_first in [false, true] {
        let mut ws = if joined_first {
            joined(&addr, &plane).await.0
        } else {
            connect(&addr).await
        };
        // The server may close while the frame is still being written.
        let _ = ws.send(Message::text(huge.as_str())).await;
        expect_error(&mut ws, "message_too_large").await;
        assert!(next(&mut ws).await.is_none(), "closed after it");
    }
}

#[tokio::test]
async fn an_offer_over_the_m_line_bound_never_reaches_the_media_plane() {
    let (addr, plane) = start(false).await;
    let (mut ws, _) = joined(&addr, &plane).await;
    // 2,000 m-lines (as a probe sent them): about 70 KB, far under the size limit.
    let lines: String = (0..2000)
        .map(|i| format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\\r\\na=mid:{i}\\r\\n"))
        .collect();
    send(
        &mut ws,
        &format!(r#"{{"type":"offer","sdp":"v=0\r\n{lines}"}}"#),
    )
    .await;
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(
        (msg["code"].as_str(), msg["request"].as_str()),
        (Some("bad_request"), Some("offer")),
        "{msg}"
    );
    assert!(
        msg["message"].as_str().unwrap().contains("m-lines"),
        "{msg}"
    );
    // The socket stays usable, and the plane saw the join and the mute, no offer.
    send(&mut ws, r#"{"type":"mute","track_id":1,"muted":false}"#).await;
    for _ in 0..200 {
        if plane.calls.lock().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = plane.calls.lock().clone();
    assert!(matches!(
        calls[..],
        [Call::Join(..), Call::Request(_, Request::Mute { .. })]
    ));
}

#[tokio::test]
async fn offers_beyond_their_budget_are_rate_limited_and_dropped() {
    let (addr, plane) = start(false).await;
    let (mut ws, _) = joined(&addr, &plane).await;
    for _ in 0..25 {
        send(&mut ws, r#"{"type":"offer","sdp":"v=0"}"#).await;
    }
    // The burst (20) reaches the plane; the other five are answered and dropped.
    for _ in 0..5 {
        let msg = next(&mut ws).await.unwrap();
        assert_eq!(
            (msg["code"].as_str(), msg["request"].as_str()),
            (Some("rate_limited"), Some("offer")),
            "{msg}"
        );
    }
    // Other requests have their own budget.
    send(&mut ws, r#"{"type":"mute","track_id":1,"muted":true}"#).await;
    for _ in 0..200 {
        if plane.calls.lock().len() >= 22 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = plane.calls.lock().clone();
    let offers = calls
        .iter()
        .filter(|c| matches!(c, Call::Request(_, Request::Offer { .. })))
        .count();
    assert_eq!(offers, 20);
    assert!(matches!(
        calls.last(),
        Some(Call::Request(_, Request::Mute { .. }))
    ));
}

#[tokio::test]
async fn an_address_holds_at_most_its_sockets_and_joins_at_its_rate() {
    let limits = signaling::AddressLimits {
        sockets: 2,
        joins_per_second: 0.2, // a burst of one
    };
    let (addr, plane) = start_with(false, limits).await;
    let mut first = connect(&addr).await;
    let second = connect(&addr).await;
    // The third from 127.0.0.1 is refused before the upgrade.
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third socket: {other:?}"),
    }
    // One closed, its place is free again.
    drop(second);
    let mut third = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            third = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = third.expect("a socket once one closed");
    // One join at once: the second is rate_limited and its socket stays open.
    send(&mut first, &join_message("alice")).await;
    assert_eq!(next(&mut first).await.unwrap()["type"], "track_unpublished");
    send(&mut third, &join_message("bob")).await;
    let msg = next(&mut third).await.unwrap();
    assert_eq!(
        (msg["code"].as_str(), msg["request"].as_str()),
        (Some("rate_limited"), Some("join")),
        "{msg}"
    );
    assert_eq!(
        plane.calls.lock().len(),
        1,
        "only alice's join reached the plane"
    );
    // Both refusals are counted.
    let metrics = http_get(&addr, "/metrics").await;
    for reason in ["sockets_per_address", "joins_per_address"] {
        let line = format!("sfu_signaling_refused_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn whip_and_whep_sessions_spend_the_address_join_budget() {
    let limits = signaling::AddressLimits {
        sockets: 0,
        joins_per_second: 0.2, // a burst of one
    };
    let (addr, _plane) = start_with(false, limits).await;
    let post = |path: &'static str, sdp: String| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Authorization: Bearer {}\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{sdp}",
                token("r", "player"),
                sdp.len()
            );
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    // The first spends the budget (its offer of 300 m-lines is over the bound: 400); the
    // next is refused for the rate before anything else.
    let lines: String = (0..300)
        .map(|i| format!("m=audio 9 X 111\r\na=mid:{i}\r\n"))
        .collect();
    let first = post("/whep", format!("v=0\r\n{lines}")).await;
    assert!(
        first.starts_with("HTTP/1.1 400") && first.contains("m-lines"),
        "{first}"
    );
    let second = post("/whip", "v=0\r\n".into()).await;
    assert!(second.starts_with("HTTP/1.1 429"), "{second}");
    assert!(second.contains("rate_limited"), "{second}");
}
