//! The registry and room placement against a real Redis (Debian's `redis-server`, started
//! by each test on a port of its own), with several [`Cluster`] views as several nodes.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{Cluster, ClusterConfig, LEASE, Node, NodeLoad, NodeState, PlaceError, Placed};

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::on(port)
    }

    fn on(port: u16) -> Redis {
        Redis::with(port, &[])
    }

    /// A server on `port` with more arguments.
    fn with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; the README's test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Every node beats twice: each then sees all the others.
async fn beat_all(nodes: &[&Cluster]) {
    for n in nodes.iter().chain(nodes) {
        n.beat(&report(n.id(), NodeState::Serving, 0), Vec::new())
            .await
            .unwrap();
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
    // A loaded node gets fewer: b reports 30 participants, the others none.
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    beat_all(&[&a, &c]).await;
    b.beat(&report("b", NodeState::Serving, 30), Vec::new())
        .await
        .unwrap();
    a.beat(&report("a", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
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
    b.beat(&report("b", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
    a.beat(&report("a", NodeState::Draining, 0), Vec::new())
        .await
        .unwrap();
    for i in 0..5 {
        let placed = a.place(&format!("new-{i}"), true, now_ms()).await.unwrap();
        assert_eq!(placed_on(&placed, "a"), "b");
    }
    // A room a hosts stays on a while it drains; once a no longer hosts it, the next
    // join hands it on.
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    a.beat(&report("a", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        a.place("call", false, now_ms()).await.unwrap(),
        Placed::Here
    );
    a.beat(&report("a", NodeState::Draining, 1), vec!["call".into()])
        .await
        .unwrap();
    b.beat(&report("b", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
    assert_eq!(a.place("call", true, now_ms()).await.unwrap(), Placed::Here);
    assert_eq!(
        placed_on(&b.place("call", false, now_ms()).await.unwrap(), "b"),
        "a"
    );
    // The call ended: released at a's next beat, then placed on b.
    a.beat(&report("a", NodeState::Draining, 0), Vec::new())
        .await
        .unwrap();
    b.beat(&report("b", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
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
    a.beat(&report("a", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
    // b is busier: the room goes to a, which then stops beating (dies).
    b.beat(&report("b", NodeState::Serving, 5), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        b.place("call", false, now_ms()).await.unwrap(),
        Placed::Elsewhere(a.nodes().into_iter().find(|n| n.id == "a").unwrap())
    );
    a.beat(&report("a", NodeState::Serving, 1), vec!["call".into()])
        .await
        .unwrap();
    let died = Instant::now();
    drop(a);
    loop {
        b.beat(&report("b", NodeState::Serving, 5), Vec::new())
            .await
            .unwrap();
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
    let mut redis = Redis::start();
    let port = redis.port;
    let a = node(&redis, "a");
    a.beat(&report("a", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        a.place("call", false, now_ms()).await.unwrap(),
        Placed::Here
    );
    a.beat(&report("a", NodeState::Serving, 1), vec!["call".into()])
        .await
        .unwrap();
    assert!(a.reachable());
    let _ = redis.child.kill();
    let _ = redis.child.wait();
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
    let redis = Redis::on(port);
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
    b.beat(&report("b", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        placed_on(&b.place("call", false, now_ms()).await.unwrap(), "b"),
        "a"
    );
    assert!(a.place("other", false, now_ms()).await.is_ok());
}

/// A `redis-sentinel` watching `master` as `mymaster`, killed when dropped.
struct Sentinel {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Sentinel {
    fn start(master: &Redis) -> Sentinel {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Sentinel rewrites its config file: one of its own.
        let dir =
            std::env::temp_dir().join(format!("cluster-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n",
            master.port
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-sentinel (Debian's redis-sentinel package; the README's test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-sentinel did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sentinel {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[tokio::test]
async fn a_node_finds_redis_through_sentinel() {
    let redis = Redis::start();
    let sentinel = Sentinel::start(&redis);
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port);
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
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let guarded = Redis::with(port, &["--requirepass", "hunter2"]);
    let sentinel = Sentinel::start(&guarded);
    let config = |password: &str| ClusterConfig {
        redis: format!(
            "redis+sentinel://:{password}@127.0.0.1:{}/mymaster",
            sentinel.port
        ),
        node: "d".into(),
        region: None,
    };
    let d = Cluster::new(&config("hunter2")).unwrap();
    d.beat(&report("d", NodeState::Serving, 0), Vec::new())
        .await
        .unwrap();
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
