//! The registry and room placement against a real Redis (Debian's `redis-server`, started
//! by each test on a port of its own), with several [`Cluster`] views as several nodes.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::{Duration, Instant};

use cluster::testing::{RedisServer as Redis, Sentinel};
use cluster::{Cluster, ClusterConfig, LEASE, Node, NodeLoad, NodeState, PlaceError, Placed};

fn node(redis: &Redis, id: &str) -> Cluster {
    Cluster::new(&ClusterConfig {
        redis: redis.url(),
        node: id.into(),
        region: None,
    })
    .unwrap()
}

fn report(id: &str, state: NodeState, rooms: u32) -> Node {
    Node {
        id: id.into(),
        region: None,
        url: format!("http://{id}.test"),
        media: Vec::new(),
        state,
        load: NodeLoad {
            rooms,
            participants: rooms,
            ..NodeLoad::default()
        },
        at_ms: now_ms(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn placed_on(placed: &Placed, me: &str) -> String {
    match placed {
        Placed::Here => me.to_owned(),
        Placed::Elsewhere(node) => node.id.clone(),
    }
}

/// `n` reports itself in `state` with `load` rooms and participants, hosting `hosts`.
async fn beat(n: &Cluster, state: NodeState, load: u32, hosts: &[&str]) {
    let hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
    n.beat(&report(n.id(), state, load), hosts).await.unwrap();
}

/// Every node beats twice: each then sees all the others.
async fn beat_all(nodes: &[&Cluster]) {
    for n in nodes.iter().chain(nodes) {
        beat(n, NodeState::Serving, 0, &[]).await;
    }
}

#[tokio::test]
async fn a_room_lives_on_one_node_whichever_node_is_asked() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    beat_all(&[&a, &b, &c]).await;
    assert_eq!(a.nodes().len(), 3, "every node sees the three");
    let first = a.place("standup", false, now_ms()).await.unwrap();
    let owner = placed_on(&first, "a");
    for n in [&a, &b, &c] {
        let placed = n.place("standup", false, now_ms()).await.unwrap();
        assert_eq!(placed_on(&placed, n.id()), owner, "asked of {}", n.id());
        if let Placed::Elsewhere(node) = placed {
            assert_eq!(node.url, format!("http://{owner}.test"));
        }
    }
}

#[tokio::test]
async fn joins_racing_on_two_nodes_end_on_one() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    beat_all(&[&a, &b]).await;
    for i in 0..50 {
        let room = format!("race-{i}");
        let (x, y) = tokio::join!(
            a.place(&room, false, now_ms()),
            b.place(&room, false, now_ms())
        );
        assert_eq!(
            placed_on(&x.unwrap(), "a"),
            placed_on(&y.unwrap(), "b"),
            "{room}"
        );
    }
}

#[tokio::test]
async fn rooms_placed_through_one_node_spread_by_load() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    beat_all(&[&a, &b, &c]).await;
    let mut count = std::collections::HashMap::<String, u32>::new();
    for i in 0..21 {
        let placed = a
            .place(&format!("room-{i}"), false, now_ms())
            .await
            .unwrap();
        *count.entry(placed_on(&placed, "a")).or_default() += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    assert!(count.values().all(|&n| n == 7), "{count:?}");
    // At once, as a burst of joins reaching one node places them: the same spread.
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    beat_all(&[&a, &b, &c]).await;
    let rooms: Vec<String> = (0..21).map(|i| format!("burst-{i}")).collect();
    let placed =
        futures_util::future::join_all(rooms.iter().map(|r| a.place(r, false, now_ms()))).await;
    let mut count = std::collections::HashMap::<String, u32>::new();
    for placed in placed {
        *count.entry(placed_on(&placed.unwrap(), "a")).or_default() += 1;
    }
    assert!(
        count.len() == 3 && count.values().all(|&n| n == 7),
        "{count:?}"
    );
    // A loaded node gets fewer: b reports 30 participants, the others none.
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    beat_all(&[&a, &c]).await;
    beat(&b, NodeState::Serving, 30, &[]).await;
    beat(&a, NodeState::Serving, 0, &[]).await;
    for i in 0..10 {
        let placed = a
            .place(&format!("room-{i}"), false, now_ms())
            .await
            .unwrap();
        assert_ne!(placed_on(&placed, "a"), "b", "room-{i}");
    }
}

#[tokio::test]
async fn draining_nodes_take_no_new_room_and_hand_theirs_on_once_empty() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    beat(&b, NodeState::Serving, 0, &[]).await;
    beat(&a, NodeState::Draining, 0, &[]).await;
    for i in 0..5 {
        let placed = a.place(&format!("new-{i}"), true, now_ms()).await.unwrap();
        assert_eq!(placed_on(&placed, "a"), "b");
    }
    // A room a hosts stays on a while it drains; once a no longer hosts it, the next
    // join hands it on.
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    beat(&a, NodeState::Serving, 0, &[]).await;
    assert_eq!(
        a.place("call", false, now_ms()).await.unwrap(),
        Placed::Here
    );
    beat(&a, NodeState::Draining, 1, &["call"]).await;
    beat(&b, NodeState::Serving, 0, &[]).await;
    assert_eq!(a.place("call", true, now_ms()).await.unwrap(), Placed::Here);
    assert_eq!(
        placed_on(&b.place("call", false, now_ms()).await.unwrap(), "b"),
        "a"
    );
    // The call ended: released at a's next beat, then placed on b.
    beat(&a, NodeState::Draining, 0, &[]).await;
    beat(&b, NodeState::Serving, 0, &[]).await;
    assert_eq!(
        placed_on(&a.place("call", true, now_ms()).await.unwrap(), "a"),
        "b"
    );
    assert_eq!(
        b.place("call", false, now_ms()).await.unwrap(),
        Placed::Here
    );
}

#[tokio::test]
async fn a_dead_nodes_rooms_go_to_a_live_one_within_the_lease() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    beat_all(&[&a, &b]).await;
    beat(&a, NodeState::Serving, 0, &[]).await;
    // b is busier: the room goes to a, which then stops beating (dies).
    beat(&b, NodeState::Serving, 5, &[]).await;
    assert_eq!(
        b.place("call", false, now_ms()).await.unwrap(),
        Placed::Elsewhere(a.nodes().into_iter().find(|n| n.id == "a").unwrap())
    );
    beat(&a, NodeState::Serving, 1, &["call"]).await;
    let died = Instant::now();
    drop(a);
    loop {
        beat(&b, NodeState::Serving, 5, &[]).await;
        if b.place("call", false, now_ms()).await.unwrap() == Placed::Here {
            break;
        }
        assert!(
            died.elapsed() < LEASE + Duration::from_secs(3),
            "still on the dead node"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !b.nodes().iter().any(|n| n.id == "a"),
        "a left the registry"
    );
}

#[tokio::test]
async fn without_redis_no_new_room_but_hosted_rooms_go_on_then_claims_return() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    beat(&a, NodeState::Serving, 0, &[]).await;
    assert_eq!(
        a.place("call", false, now_ms()).await.unwrap(),
        Placed::Here
    );
    beat(&a, NodeState::Serving, 1, &["call"]).await;
    assert!(a.reachable());
    let port = redis.stop();
    let asked = Instant::now();
    let refused = a.place("other", false, now_ms()).await;
    assert!(
        matches!(refused, Err(PlaceError::Unreachable(_))),
        "{refused:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "a refusal must not hang"
    );
    assert!(
        a.beat(&report("a", NodeState::Serving, 1), vec!["call".into()])
            .await
            .is_err()
    );
    assert!(!a.reachable());
    assert_eq!(
        a.place("call", false, now_ms()).await.unwrap(),
        Placed::Here,
        "its own call"
    );
    // Redis back, empty (no persistence): the next beat claims the hosted room again.
    let redis = Redis::with(port, &[]);
    let b = node(&redis, "b");
    let mut beaten = false;
    for _ in 0..20 {
        if a.beat(&report("a", NodeState::Serving, 1), vec!["call".into()])
            .await
            .is_ok()
        {
            beaten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(beaten && a.reachable(), "a reconnects by itself");
    beat(&b, NodeState::Serving, 0, &[]).await;
    assert_eq!(
        placed_on(&b.place("call", false, now_ms()).await.unwrap(), "b"),
        "a"
    );
    assert!(a.place("other", false, now_ms()).await.is_ok());
}

#[tokio::test]
async fn a_node_finds_redis_through_sentinel() {
    let redis = Redis::start();
    let sentinel = Sentinel::start(&redis);
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let config = |id: &str| ClusterConfig {
        redis: url.clone(),
        node: id.into(),
        region: None,
    };
    let a = Cluster::new(&config("a")).unwrap();
    let b = node(&redis, "b"); // straight to the master: the same keys
    beat_all(&[&a, &b]).await;
    let placed = a.place("call", false, now_ms()).await.unwrap();
    let owner = placed_on(&placed, "a");
    assert_eq!(
        placed_on(&b.place("call", false, now_ms()).await.unwrap(), "b"),
        owner
    );
    // A master with a password: given before the sentinels.
    let guarded = Redis::with(cluster::testing::free_port(), &["--requirepass", "hunter2"]);
    let sentinel = Sentinel::start(&guarded);
    let config = |password: &str| ClusterConfig {
        redis: format!(
            "redis+sentinel://:{password}@127.0.0.1:{}/mymaster",
            sentinel.port()
        ),
        node: "d".into(),
        region: None,
    };
    let d = Cluster::new(&config("hunter2")).unwrap();
    beat(&d, NodeState::Serving, 0, &[]).await;
    assert_eq!(
        d.place("call", false, now_ms()).await.unwrap(),
        Placed::Here
    );
    let wrong = Cluster::new(&config("wrong")).unwrap();
    assert!(
        wrong
            .beat(&report("w", NodeState::Serving, 0), Vec::new())
            .await
            .is_err()
    );
    assert!(
        Cluster::new(&ClusterConfig {
            redis: "redis+sentinel://127.0.0.1:1".into(),
            node: "c".into(),
            region: None,
        })
        .is_err(),
        "a Sentinel URL without the master's name is refused"
    );
}
