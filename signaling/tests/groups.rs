//! Joins under the groups' calling policies, over a real server on 127.0.0.1:0: a
//! token's `group` claim picks the policy that narrows its grants, and what a policy
//! refuses never reaches the media plane.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{SECRET, connect, expect_error, next, send, start};
use protocol::{Grants, Role};
use signaling::TokenKey;

/// A token for room `r` naming `group`, with `grants`.
fn token(identity: &str, group: Option<&str>, grants: Grants) -> String {
    let mut claims = TokenKey::claims("r", identity, None, Duration::from_secs(60));
    claims.group = group.map(str::to_owned);
    claims.grants = grants;
    TokenKey::new(SECRET).issue(&claims).unwrap()
}

fn join(token: &str, e2ee: bool) -> String {
    serde_json::json!({"type": "join", "token": token, "e2ee": e2ee}).to_string()
}

#[tokio::test]
async fn a_groups_policy_narrows_the_grants_that_reach_the_media_plane() {
    let (addr, plane) = start(false).await;
    // The audio group: no video, the token's own grants kept as they were.
    let mut ws = connect(&addr).await;
    send(
        &mut ws,
        &join(&token("ann", Some("audio"), Grants::default()), true),
    )
    .await;
    assert!(next(&mut ws).await.is_some(), "joined");
    let ann = plane.joins.lock()[0].clone();
    assert_eq!(ann.group, "audio");
    assert!(ann.grants.publish_audio && !ann.grants.publish_video && !ann.grants.publish_screen);
    assert!(
        ann.token_grants.publish_video,
        "the token's grants, for later changes"
    );
    // The branch group: forced to TCP (only TURN over TCP and TLS handed out), rooms of 5.
    let mut ws = connect(&addr).await;
    send(
        &mut ws,
        &join(&token("ben", Some("branch"), Grants::default()), true),
    )
    .await;
    assert!(next(&mut ws).await.is_some(), "joined");
    let ben = plane.joins.lock()[1].clone();
    assert!(ben.grants.force_tcp && !ben.token_grants.force_tcp);
    assert_eq!(ben.max_participants, Some(5));
    let urls: Vec<&String> = ben.ice_servers.iter().flat_map(|s| &s.urls).collect();
    assert!(
        !urls.is_empty() && urls.iter().all(|u| u.starts_with("turns:")),
        "{urls:?}"
    );
    // No group: the default one, which narrows nothing.
    let mut ws = connect(&addr).await;
    send(&mut ws, &join(&token("cat", None, Grants::default()), true)).await;
    assert!(next(&mut ws).await.is_some(), "joined");
    let cat = plane.joins.lock()[2].clone();
    assert_eq!(cat.group, "default");
    assert_eq!(cat.grants, Grants::default());
}

#[tokio::test]
async fn what_a_policy_refuses_never_reaches_the_media_plane() {
    let (addr, plane) = start(false).await;
    let plaintext = Grants {
        plaintext: true,
        ..Grants::default()
    };
    let presenter = Grants {
        role: Role::Presenter,
        ..Grants::default()
    };
    for (what, token, e2ee, code) in [
        (
            "a group that may not call",
            token("a", Some("off"), Grants::default()),
            true,
            "forbidden",
        ),
        (
            "a group the server lacks",
            token("b", Some("nobody"), Grants::default()),
            true,
            "forbidden",
        ),
        (
            "a presenter of a group that may not present",
            token("c", Some("strict"), presenter),
            true,
            "forbidden",
        ),
        // Its token may send in the clear, its group may not.
        (
            "in the clear in a group requiring e2ee",
            token("d", Some("strict"), plaintext),
            false,
            "e2ee_required",
        ),
    ] {
        let mut ws = connect(&addr).await;
        send(&mut ws, &join(&token, e2ee)).await;
        let error = next(&mut ws).await.unwrap();
        assert_eq!(error["code"], code, "{what}: {error}");
        assert_eq!(error["request"], "join", "{what}");
    }
    assert!(
        plane.joins.lock().is_empty(),
        "nothing refused was passed on"
    );
    // The same plaintext token in the default group may.
    let mut ws = connect(&addr).await;
    send(&mut ws, &join(&token("e", None, plaintext), false)).await;
    assert!(next(&mut ws).await.is_some());
    assert_eq!(plane.joins.lock().len(), 1);
    // A token whose group claim no group could have is refused as a token.
    let mut ws = connect(&addr).await;
    send(
        &mut ws,
        &join(&token("f", Some("a b"), Grants::default()), true),
    )
    .await;
    expect_error(&mut ws, "unauthorized").await;
}
