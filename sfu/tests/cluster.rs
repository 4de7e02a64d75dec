//! Three `sfu` nodes on one Redis (Debian's `redis-server`, started by each test on a
//! port of its own), joined over the signaling WebSocket: a room lives on one node
//! whichever node a join reaches, rooms spread by load, racing joins end on one node,
//! a killed node's room is placed again, a draining node takes no new room, and a node
//! cut off from Redis keeps its calls but refuses new rooms until Redis is back. The
//! browsers' side (media, the client library's redirects and rejoins) is in
//! `e2e/cluster.test.mjs`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster::testing::RedisServer as Redis;
use common::Dir;
use common::server::*;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Three nodes of one cluster, `n1` to `n3`, each with its own directory.
struct Cluster {
    nodes: Vec<(Server, Dir)>,
}

impl Cluster {
    fn start(redis: &Redis, tag: &str) -> Cluster {
        let nodes = (1..=3)
            .map(|i| {
                let dir = Dir::new(&format!("cluster-{tag}-n{i}"));
                let port = free_tcp_port();
                let public = format!("http://127.0.0.1:{port}");
                let id = format!("n{i}");
                let extra = [
                    "--redis",
                    &redis.url(),
                    "--node",
                    &id,
                    "--public-url",
                    &public,
                ];
                (start_on(&dir, "http", port, &extra), dir)
            })
            .collect();
        let cluster = Cluster { nodes };
        // Each node has seen the three once every /readyz says ready and a beat passed.
        for (server, _) in &cluster.nodes {
            wait_for(server, "node ready", || {
                get(server.port, "/readyz").0 == 200
            });
        }
        std::thread::sleep(Duration::from_millis(2500));
        cluster
    }

    fn node(&self, i: usize) -> &Server {
        &self.nodes[i].0
    }

    /// Which node listens on `port` (0-based).
    fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|(s, _)| s.port == port).unwrap()
    }
}

/// A participant and the node its join ended on.
struct Joined {
    ws: WebSocket<TcpStream>,
    joined: Value,
    port: u16,
    redirects: usize,
}

/// Joins `room` through `entry`, following redirects (three at most) as the client
/// library does; the server's refusal otherwise (`{"code": "connect"}` when a node
/// cannot be reached).
fn join(entry: &Server, room: &str, identity: &str) -> Result<Joined, Value> {
    let token = join_token(entry, room, identity);
    let mut port = entry.port;
    for redirects in 0..=3 {
        let Some(mut ws) = websocket(port) else {
            return Err(json!({ "code": "connect", "port": port }));
        };
        let join = json!({ "type": "join", "token": token, "e2ee": true });
        ws.send(Message::text(join.to_string())).unwrap();
        let reply = read(&mut ws).expect("an answer to join");
        match reply["type"].as_str() {
            Some("joined") => {
                return Ok(Joined {
                    ws,
                    joined: reply,
                    port,
                    redirects,
                });
            }
            Some("redirect") => {
                let url = reply["url"].as_str().unwrap();
                let rest = url.strip_prefix("ws://127.0.0.1:").unwrap();
                port = rest.strip_suffix("/ws").unwrap().parse().unwrap();
                assert!(read(&mut ws).is_none(), "closed after a redirect");
            }
            _ => return Err(reply),
        }
    }
    panic!("more than three redirects for {room}");
}

/// The next text message, `None` once the socket closed.
fn read(ws: &mut WebSocket<TcpStream>) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The identities a `joined` lists besides the joiner.
fn others(joined: &Value) -> Vec<String> {
    let mut names: Vec<String> = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn joins_through_three_nodes_end_in_one_call_on_one_node() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis, "one");
    let ann = join(cluster.node(0), "standup", "ann").unwrap();
    let bob = join(cluster.node(1), "standup", "bob").unwrap();
    let cat = join(cluster.node(2), "standup", "cat").unwrap();
    assert_eq!(bob.port, ann.port, "bob is on ann's node");
    assert_eq!(cat.port, ann.port, "cat is on ann's node");
    assert_eq!(others(&bob.joined), ["ann"]);
    assert_eq!(others(&cat.joined), ["ann", "bob"]);
    // Two of the three came through another node: redirected once, never more.
    let redirected: Vec<usize> = [&ann, &bob, &cat].iter().map(|j| j.redirects).collect();
    assert_eq!(
        redirected.iter().filter(|&&r| r == 1).count(),
        2,
        "{redirected:?}"
    );
    assert!(redirected.iter().all(|&r| r <= 1), "{redirected:?}");
    drop((ann, bob, cat));
}

#[test]
fn rooms_opened_through_one_node_spread_and_racing_joins_meet() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis, "spread");
    let mut members = Vec::new();
    let mut hosts = HashMap::<usize, usize>::new();
    for i in 0..20 {
        let joined = join(cluster.node(0), &format!("room-{i}"), "host").unwrap();
        *hosts.entry(cluster.index_of(joined.port)).or_default() += 1;
        members.push(joined);
    }
    assert_eq!(hosts.len(), 3, "every node hosts rooms: {hosts:?}");
    assert!(hosts.values().all(|&n| n >= 5), "spread by load: {hosts:?}");
    // Two joins for one new room, through two nodes at once: one node.
    for i in 0..5 {
        let room = format!("race-{i}");
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| join(cluster.node(1), &room, "left").unwrap());
            let b = s.spawn(|| join(cluster.node(2), &room, "right").unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a.port, b.port, "{room}");
        members.extend([a, b]);
    }
    drop(members);
}

#[test]
fn a_killed_nodes_room_is_placed_again_within_the_lease() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis, "kill");
    let ann = join(cluster.node(0), "call", "ann").unwrap();
    let owner = cluster.index_of(ann.port);
    let entry = (owner + 1) % 3;
    cluster.node(owner)._running.signal("KILL");
    let killed = Instant::now();
    let mut ws = ann.ws;
    assert!(read(&mut ws).is_none(), "the killed node's socket closes");
    // Rejoin as the client library does: through the entry node, once a second.
    let again = loop {
        match join(cluster.node(entry), "call", "ann") {
            Ok(joined) => break joined,
            // Redirected to the dead node (its claim not expired yet): try again.
            Err(refused) if refused["code"] == "connect" => {}
            Err(refused) => panic!("refused: {refused}"),
        }
        assert!(killed.elapsed() < BOUND, "no live node took the room");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_ne!(cluster.index_of(again.port), owner);
    eprintln!(
        "rejoined on a live node {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    let third = 3 - owner - entry;
    let bob = join(cluster.node(third), "call", "bob").unwrap();
    assert_eq!(bob.port, again.port);
    assert_eq!(others(&bob.joined), ["ann"]);
}

#[test]
fn a_draining_node_keeps_its_call_and_places_new_rooms_elsewhere() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis, "drain");
    let mut ann = join(cluster.node(0), "call", "ann").unwrap();
    let owner = cluster.index_of(ann.port);
    let server = cluster.node(owner);
    server._running.signal("TERM");
    wait_for(server, "/readyz says draining", || {
        get(server.port, "/readyz") == (503, "draining\n".into())
    });
    std::thread::sleep(Duration::from_millis(2500)); // the others learn it
    for i in 0..4 {
        let joined = join(server, &format!("new-{i}"), "dan").unwrap();
        assert_ne!(cluster.index_of(joined.port), owner, "new-{i}");
    }
    // Its own call still takes joins, there.
    let bob = join(cluster.node((owner + 1) % 3), "call", "bob").unwrap();
    assert_eq!(bob.port, ann.port);
    assert_eq!(read(&mut ann.ws).unwrap()["type"], "participant_joined");
    // When its call ends, it exits.
    drop((ann, bob));
    let deadline = Instant::now() + BOUND;
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(Instant::now() < deadline, "the drained node did not exit");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_redis_calls_go_on_and_new_rooms_wait_for_it() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis, "redis");
    let mut ann = join(cluster.node(0), "call", "ann").unwrap();
    let owner = cluster.node(cluster.index_of(ann.port));
    let port = redis.stop();
    let stopped = Instant::now();
    wait_for(owner, "/readyz says Redis is out of reach", || {
        get(owner.port, "/readyz") == (503, "redis_unreachable\n".into())
    });
    let refused = join(cluster.node(1), "new-room", "dan").err().unwrap();
    assert_eq!(refused["code"], "cluster_unavailable", "{refused}");
    // The call goes on: a new member of it joins on its node, the first one hears of it.
    let bob = join(owner, "call", "bob").unwrap();
    assert_eq!(read(&mut ann.ws).unwrap()["type"], "participant_joined");
    let left = Duration::from_secs(10).saturating_sub(stopped.elapsed());
    std::thread::sleep(left);
    let _redis = Redis::with(port, &[]);
    for (server, _) in &cluster.nodes {
        wait_for(server, "ready again", || {
            get(server.port, "/readyz").0 == 200
        });
    }
    let dan = join(cluster.node(1), "new-room", "dan").unwrap();
    // The call's room was claimed again by its node: joins elsewhere still meet there.
    let cat = join(cluster.node(2), "call", "cat").unwrap();
    assert_eq!(cat.port, ann.port);
    assert_eq!(others(&cat.joined), ["ann", "bob"]);
    drop((ann, bob, cat, dan));
}

/// The calls `sfu admin rooms --json` lists through `server`: (room, node).
fn listed(server: &Server) -> Vec<(String, String)> {
    let answer: Value = admin_json(server, &["rooms"]);
    let rooms = answer["rooms"].as_array().unwrap();
    rooms
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().into(),
                r["node"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn the_admin_api_answers_from_any_node() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis, "admin");
    let mut ann = join(cluster.node(0), "call", "ann").unwrap();
    let _bob = join(cluster.node(0), "other", "bob").unwrap();
    let owner = cluster.index_of(ann.port);
    let owner_id = format!("n{}", owner + 1);
    let elsewhere = cluster.node((owner + 1) % 3);
    // Every node lists every call, with the node it lives on.
    for (server, _) in &cluster.nodes {
        let rooms = listed(server);
        let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["call", "other"], "through {}", server.port);
        assert!(
            rooms.contains(&("call".into(), owner_id.clone())),
            "{rooms:?}"
        );
    }
    // A call's members, and an action on it, through a node that does not host it.
    let detail: Value = admin_json(elsewhere, &["room", "call"]);
    assert_eq!(detail["node"], owner_id.as_str());
    assert_eq!(detail["members"][0]["identity"], "ann");
    let id = format!("p{}", ann.joined["participant_id"]);
    admin(elsewhere, &["remove", "call", &id]).ok();
    let left = loop {
        let message = read(&mut ann.ws).expect("left");
        if message["type"] == "left" {
            break message;
        }
    };
    assert_eq!(left["reason"], "removed");
    // The call's record, through any node.
    wait_for(elsewhere, "the call's record through another node", || {
        let answer: Value = admin_json(elsewhere, &["records", "--room", "call"]);
        answer["records"].as_array().is_some_and(|r| r.len() == 1)
    });
    // A group set through one node is set on every node.
    admin(elsewhere, &["set-group", "sales", "--video", "off"]).ok();
    for (server, _) in &cluster.nodes {
        let policy: Value = admin_json(server, &["group", "sales"]);
        assert_eq!(policy["video"], false, "through {}", server.port);
    }
}
