//! Joins for rooms that live on another node of a cluster: the WebSocket is told where
//! (`redirect`), WHIP and WHEP are answered `307`, and a node cut off from the cluster
//! refuses new rooms with `cluster_unavailable`. The placement is a fixed table here; the
//! one on Redis is tested with real nodes in `sfu/tests/cluster.rs`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;

use std::sync::Arc;
use std::time::Duration;

use protocol::{ErrorCode, ErrorMessage};
use signaling::{Answer, Placed, Placement};

/// `here` lives here, `there` on node n2, and `cut` cannot be placed.
struct Table;

impl Placement for Table {
    fn place(&self, room: &str) -> Answer<Placed> {
        let placed = match room {
            "there" => Ok(Placed::Elsewhere {
                node: "n2".into(),
                url: "https://n2.example:8443".into(),
            }),
            "cut" => Err(ErrorMessage::new(
                ErrorCode::ClusterUnavailable,
                "the cluster's Redis cannot be reached",
            )),
            _ => Ok(Placed::Here),
        };
        Box::pin(async move { placed })
    }
}

async fn server() -> Started {
    start_server(Options {
        placement: Some(Arc::new(Table)),
        ..Options::default()
    })
    .await
}

fn join(room: &str) -> String {
    format!(
        r#"{{"type":"join","token":"{}","e2ee":true}}"#,
        token(room, "ann")
    )
}

#[tokio::test]
async fn a_join_for_a_room_elsewhere_is_redirected_and_closed() {
    let started = server().await;
    let mut ws = connect(&started.addr).await;
    send(&mut ws, &join("there")).await;
    let redirect = next(&mut ws).await.unwrap();
    assert_eq!(
        redirect,
        serde_json::json!({"type": "redirect", "node": "n2", "url": "wss://n2.example:8443/ws"})
    );
    assert!(next(&mut ws).await.is_none(), "closed after the redirect");
    assert!(
        started.plane.calls.lock().is_empty(),
        "nothing reached the media plane"
    );

    let mut ws = connect(&started.addr).await;
    send(&mut ws, &join("here")).await;
    assert!(next(&mut ws).await.is_some(), "joined here");
    assert_eq!(started.plane.calls.lock().len(), 1);
}

#[tokio::test]
async fn a_node_cut_off_from_the_cluster_refuses_new_rooms() {
    let started = server().await;
    let mut ws = connect(&started.addr).await;
    send(&mut ws, &join("cut")).await;
    expect_error(&mut ws, "cluster_unavailable").await;
    assert!(next(&mut ws).await.is_none(), "closed after the refusal");
    assert!(started.plane.calls.lock().is_empty());
}

/// POSTs a minimal offer to `path`: one video m-line, sending or receiving.
async fn post(addr: &str, path: &str, token: &str, direction: &str) -> String {
    let body = format!(
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na={direction}\r\n\
         a=rtpmap:96 VP8/90000\r\n"
    );
    post_sdp(addr, path, token, &body).await
}

#[tokio::test]
async fn whep_and_whip_for_a_room_elsewhere_are_answered_307_to_its_node() {
    let started = server().await;
    let answer = post(
        &started.addr,
        "/whep",
        &token("there", "player"),
        "recvonly",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("location: https://n2.example:8443/whep\r\n"),
        "{answer}"
    );
    // WHIP keeps what the first video m-line is.
    let mut claims = signaling::TokenKey::claims("there", "obs", None, Duration::from_secs(60));
    claims.grants = serde_json::from_value(serde_json::json!({"plaintext": true})).unwrap();
    let plaintext = signaling::TokenKey::new(SECRET).issue(&claims).unwrap();
    let answer = post(&started.addr, "/whip?video=camera", &plaintext, "sendonly").await;
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(
        answer.contains("https://n2.example:8443/whip?video=camera\r\n"),
        "{answer}"
    );
    let cut = post(&started.addr, "/whep", &token("cut", "player"), "recvonly").await;
    assert!(cut.starts_with("HTTP/1.1 503"), "{cut}");
    assert!(cut.contains("cluster_unavailable"), "{cut}");
    assert!(started.plane.calls.lock().is_empty());
}
