//! The tokio driver on real loopback sockets: garbage on the media ports is dropped and
//! counted, and a join through the media plane gets its `joined` message.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use prometheus::Registry;
use sfu::driver::{MediaConfig, Plane};
use sfu::metrics::Metrics;
use sfu::shard::ShardConfig;
use signaling::protocol::ServerMessage;
use signaling::{Grants, Join, MediaPlane};
use tokio::sync::mpsc;

/// Four consecutive free UDP ports on 127.0.0.1 (bound and released; another process
/// could take one meanwhile, which would fail the test loudly, not silently).
fn free_ports() -> std::ops::RangeInclusive<u16> {
    for _ in 0..50 {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let first = probe.local_addr().unwrap().port();
        drop(probe);
        if first > 65_000 {
            continue;
        }
        let held: Vec<_> = (first..first + 4)
            .map(|p| UdpSocket::bind(("127.0.0.1", p)))
            .collect();
        if held.iter().all(Result::is_ok) {
            return first..=first + 3;
        }
    }
    panic!("no four consecutive free ports");
}

fn metric(registry: &Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_and_a_join_is_answered() {
    let registry = Registry::new();
    let ports = free_ports();
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let plane = Plane::start(
        MediaConfig {
            bind_ip: localhost,
            ports: ports.clone(),
            advertise: vec![localhost],
            shards: 2,
            shard: ShardConfig::default(),
        },
        Metrics::new(&registry).unwrap(),
    )
    .unwrap();

    let (events, mut rx) = mpsc::channel(16);
    let join = Join {
        room: "r".into(),
        identity: "a".into(),
        name: "A".into(),
        grants: Grants::default(),
        ice_servers: Vec::new(),
    };
    let id = plane.join(join, events).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, ServerMessage::Joined { participant_id, .. } if participant_id == id));

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for port in ports.clone() {
        for n in 0..25u8 {
            sender
                .send_to(&[n, 0xde, 0xad, 0xbe, 0xef], ("127.0.0.1", port))
                .unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let dropped = loop {
        let dropped = metric(
            &registry,
            "sfu_dropped_total",
            Some(("reason", "unknown_source")),
        );
        if dropped >= 100.0 || Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dropped, 100.0, "every garbage datagram counted once");
    assert_eq!(metric(&registry, "sfu_udp_rx_packets_total", None), 100.0);
    assert_eq!(metric(&registry, "sfu_participants", None), 1.0);
    assert_eq!(metric(&registry, "sfu_calls_started_total", None), 1.0);

    plane.leave(id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&registry, "sfu_participants", None) != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&registry, "sfu_participants", None), 0.0);
    assert_eq!(metric(&registry, "sfu_rooms", None), 0.0);
    // The plane dropped the participant's event queue: the session would close.
    let rest = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert!(rest.is_none());
}
