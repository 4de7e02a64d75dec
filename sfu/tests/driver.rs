//! The tokio driver on real loopback sockets: garbage on the media ports is dropped and
//! counted, a join through the media plane gets its `joined` message, a flood of
//! relayed `e2ee` messages stops at the reserve of its recipient's event queue, a queue
//! the others fill falls behind and is caught up (`resync`) rather than removed,
//! offers are read (and bad ones refused) before a shard sees them, and the shards' turns
//! and CPU time reach the metrics.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use prometheus::Registry;
use protocol::{E2eeData, Grants, Join, Request};
use protocol::{ParticipantId, ServerMessage, Transport};
use sfu::metrics::Metrics;
use sfu::plane::{MediaConfig, Plane};
use sfu_core::shard::{RELAY_RESERVE, ShardConfig};
use signaling::MediaPlane;
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

/// A gauge once the shards' metrics flush (once a second) shows `want`, or what it shows
/// after 5 s.
async fn gauge_once(registry: &Registry, name: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(registry, name, None) != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    metric(registry, name, None)
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

/// A two-shard plane on 127.0.0.1, its metrics in `registry`.
fn start_plane(
    registry: &Registry,
    ports: std::ops::RangeInclusive<u16>,
    tcp_port: Option<u16>,
) -> Plane {
    let localhost: IpAddr = [127, 0, 0, 1].into();
    Plane::start(
        MediaConfig {
            bind_ip: localhost,
            ports,
            advertise: vec![localhost],
            tcp_port,
            shards: 2,
            shard: ShardConfig::default(),
            tap: None,
            lifecycle: Default::default(),
            limits: Default::default(),
            node: "test".into(),
            events: None,
        },
        Metrics::new(registry).unwrap(),
    )
    .unwrap()
}

/// Joins one participant and checks it is answered `joined`; returns its id and queue.
async fn join_one(plane: &Plane) -> (ParticipantId, mpsc::Receiver<ServerMessage>) {
    join_with_queue(plane, "a", 16).await
}

/// Joins `identity` to room `r` with an event queue of `capacity`, and checks it is
/// answered `joined`; returns its id and queue.
async fn join_with_queue(
    plane: &Plane,
    identity: &str,
    capacity: usize,
) -> (ParticipantId, mpsc::Receiver<ServerMessage>) {
    let (events, mut rx) = mpsc::channel(capacity);
    let join = Join {
        room: "r".into(),
        identity: identity.into(),
        name: "A".into(),
        grants: Grants::default(),
        token_grants: Grants::default(),
        group: protocol::DEFAULT_GROUP.into(),
        max_participants: None,
        transport: Transport::Auto,
        ice_servers: Vec::new(),
        audience: false,
        e2ee: true,
    };
    let id = plane.join(join, events).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, ServerMessage::Joined { participant_id, .. } if participant_id == id));
    (id, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_and_a_join_is_answered() {
    let registry = Registry::new();
    let ports = free_ports();
    let plane = start_plane(&registry, ports.clone(), None);
    let (id, mut rx) = join_one(&plane).await;

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
    assert_eq!(gauge_once(&registry, "sfu_participants", 0.0).await, 0.0);
    assert_eq!(metric(&registry, "sfu_rooms", None), 0.0);
    // The plane dropped the participant's event queue: the session would close.
    let rest = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert!(rest.is_none());
}

/// The observations of a histogram (summed over its labels).
fn histogram_count(registry: &Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_histogram().get_sample_count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_turns_and_cpu_time_reach_the_metrics() {
    let registry = Registry::new();
    let ports = free_ports();
    let plane = start_plane(&registry, ports.clone(), None);
    let (id, _rx) = join_one(&plane).await;
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for port in ports {
        sender.send_to(b"garbage", ("127.0.0.1", port)).unwrap();
    }
    // The shards flush once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while histogram_count(&registry, "sfu_shard_turn_seconds") < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // At least the join, and the datagrams read on each port.
    assert!(histogram_count(&registry, "sfu_shard_turn_seconds") >= 5);
    let cpu_series = |name: &str| {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .map(|f| f.get_metric().len())
            .sum::<usize>()
    };
    assert_eq!(
        cpu_series("sfu_shard_cpu_seconds_total"),
        4,
        "2 shards, 2 modes"
    );
    assert_eq!(cpu_series("sfu_cpu_seconds_total"), 2, "user and system");
    assert!(metric(&registry, "sfu_cpu_seconds_total", None) > 0.0);
    // Joined, never connected: no delay yet (the sans-IO tests check the delays).
    assert_eq!(histogram_count(&registry, "sfu_join_connected_seconds"), 0);
    assert_eq!(histogram_count(&registry, "sfu_first_media_seconds"), 0);
    plane.leave(id);
}

/// A STUN binding request with USERNAME, PRIORITY and a MESSAGE-INTEGRITY that is
/// present but wrong, framed as RFC 4571 (length first).
fn framed_binding_request(username: &str) -> Vec<u8> {
    let mut attr = Vec::new();
    attr.extend_from_slice(&0x0006u16.to_be_bytes());
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    attr.extend_from_slice(&0x0024u16.to_be_bytes());
    attr.extend_from_slice(&4u16.to_be_bytes());
    attr.extend_from_slice(&1_853_824_767u32.to_be_bytes());
    attr.extend_from_slice(&0x0008u16.to_be_bytes());
    attr.extend_from_slice(&20u16.to_be_bytes());
    attr.extend_from_slice(&[0u8; 20]);
    let mut stun = Vec::new();
    stun.extend_from_slice(&0x0001u16.to_be_bytes());
    stun.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    stun.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    stun.extend_from_slice(&[7u8; 12]);
    stun.extend_from_slice(&attr);
    let mut frame = (stun.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&stun);
    frame
}

/// Whether the server closes `stream` (read returns end of stream or a reset) in time.
fn closed_by_server(mut stream: TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_connections_that_name_no_participant_are_closed_and_counted() {
    let registry = Registry::new();
    let tcp_port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let plane = start_plane(&registry, free_ports(), Some(tcp_port));
    // A participant of shard 0 or 1 exists: the refusals below are not for lack of anyone.
    let _joined = join_one(&plane).await;

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "not_stun",
        ),
        (
            "a frame that is not STUN",
            vec![0, 4, 1, 2, 3, 4],
            "not_stun",
        ),
        (
            "a shard that does not exist",
            framed_binding_request("ffff0123456789abcdef:remote"),
            "unclaimed",
        ),
        (
            "an unknown ufrag on shard 0",
            framed_binding_request("00000123456789abcdef:remote"),
            "unclaimed",
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = metric(&registry, "sfu_tcp_refused_total", Some(("reason", reason)));
        let stream = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
            stream.write_all(&bytes).unwrap();
            closed_by_server(stream)
        })
        .await
        .unwrap();
        assert!(stream, "{what}: the server closes the connection");
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(&registry, "sfu_tcp_refused_total", Some(("reason", reason))) < before + 1.0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            metric(&registry, "sfu_tcp_refused_total", Some(("reason", reason))),
            before + 1.0,
            "{what}: counted as {reason}"
        );
    }
    // Gauges are set once a second: wait for a flush that shows the participant, then
    // read the connection count of that same flush.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&registry, "sfu_participants", None) != 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&registry, "sfu_participants", None), 1.0);
    assert_eq!(
        metric(&registry, "sfu_tcp_connections", None),
        0.0,
        "no refused connection is held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_flood_stops_at_the_reserve_of_a_queue_nobody_reads() {
    let registry = Registry::new();
    let plane = start_plane(&registry, free_ports(), None);
    // The victim's session reads nothing from here on.
    let (victim, mut victim_rx) = join_with_queue(&plane, "victim", signaling::EVENT_QUEUE).await;
    let (mallory, _mallory_rx) = join_with_queue(&plane, "mallory", 16).await;
    let flood = 2 * signaling::EVENT_QUEUE;
    for n in 0..flood {
        let request = || Request::E2ee {
            to: victim,
            data: E2eeData::new(format!("junk {n}")),
        };
        // A full relay queue answers `server_busy`; the sender tries again.
        while plane.request(mallory, request()).is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let relayed = || metric(&registry, "sfu_e2ee_relays_total", None);
    let dropped = |reason| {
        metric(
            &registry,
            "sfu_e2ee_relays_dropped_total",
            Some(("reason", reason)),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while relayed() + dropped("queue_reserve") < flood as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its queue holds mallory's `participant_joined`, then relays up to the reserve.
    let held = signaling::EVENT_QUEUE - RELAY_RESERVE;
    assert_eq!(relayed(), (held - 1) as f64);
    assert_eq!(dropped("queue_reserve"), (flood - held + 1) as f64);
    assert_eq!(
        metric(&registry, "sfu_participants", None),
        2.0,
        "nobody removed"
    );
    let mut queued = Vec::new();
    while let Ok(m) = victim_rx.try_recv() {
        queued.push(m);
    }
    assert_eq!(queued.len(), held);
    assert!(matches!(queued[0], ServerMessage::ParticipantJoined(_)));
    assert!(
        queued[1..]
            .iter()
            .all(|m| matches!(m, ServerMessage::E2ee { from, .. } if *from == mallory))
    );
    // Every reason is registered up front, at zero until it happens.
    let labels: Vec<String> = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "sfu_e2ee_relays_dropped_total")
        .flat_map(|f| f.get_metric().iter())
        .flat_map(|m| m.get_label().iter().map(|l| l.value().to_string()))
        .collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    // Read again, the queue takes relays again.
    plane
        .request(
            mallory,
            Request::E2ee {
                to: victim,
                data: E2eeData::new("a real key"),
            },
        )
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), victim_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(next, ServerMessage::E2ee { data, .. } if data.as_str() == "a real key"));
}

/// An offer a client of ours would send: audio sendonly, from a str0m peer; and its mid.
fn client_offer() -> (String, String) {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    let (offer, _) = api.apply().unwrap();
    let sdp = offer.to_sdp_string();
    let mid = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap()
        .trim()
        .to_string();
    (sdp, mid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_read_and_bad_ones_refused_before_a_shard_sees_them() {
    let registry = Registry::new();
    let plane = start_plane(&registry, free_ports(), None);
    let (id, mut rx) = join_one(&plane).await;
    let offer = |sdp: String, mid: &str| Request::Offer {
        sdp,
        publish: vec![protocol::Publish {
            mid: mid.into(),
            source: protocol::Source::Microphone,
            layers: Vec::new(),
        }],
        subscribe: Vec::new(),
        slots: Vec::new(),
    };
    // What does not parse is refused by the reader, before any shard sees it.
    let e = plane
        .offer(id, offer("v=0\r\nm=nonsense\r\n".into(), "0"))
        .await
        .unwrap_err();
    assert_eq!(e.code, protocol::ErrorCode::BadSdp, "{e:?}");
    // A mid the SDP does not hold: read, and refused as the reader checks it.
    let e = plane
        .offer(id, offer(client_offer().0, "nine"))
        .await
        .unwrap_err();
    assert_eq!(e.code, protocol::ErrorCode::BadRequest, "{e:?}");
    // A good offer reaches the shard, which answers it.
    let (sdp, mid) = client_offer();
    plane.offer(id, offer(sdp, &mid)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let ServerMessage::Answer { sdp, published } = answer else {
        panic!("not an answer: {answer:?}");
    };
    assert!(sdp.contains("m=audio"), "{sdp}");
    assert_eq!(published.len(), 1);
    // (The answer may come before the next flush of the shard's gauges.)
    assert_eq!(gauge_once(&registry, "sfu_participants", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_others_fill_falls_behind_and_is_caught_up_not_removed() {
    let registry = Registry::new();
    let plane = start_plane(&registry, free_ports(), None);
    // The victim reads nothing for now; its queue holds 32 messages.
    let (_victim, mut victim_rx) = join_with_queue(&plane, "victim", 32).await;
    let (mallory, mut mallory_rx) = join_with_queue(&plane, "mallory", 1024).await;
    let (sdp, mid) = client_offer();
    let offer = Request::Offer {
        sdp,
        publish: vec![protocol::Publish {
            mid,
            source: protocol::Source::Microphone,
            layers: Vec::new(),
        }],
        subscribe: Vec::new(),
        slots: Vec::new(),
    };
    plane.offer(mallory, offer).await.unwrap();
    let track = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), mallory_rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let ServerMessage::Answer { published, .. } = m {
            break published[0].track_id;
        }
    };
    // 201 mute changes: each is a `track_muted` for the victim, far more than its queue.
    for n in 0..=200 {
        let request = || Request::Mute {
            track_id: track,
            muted: n % 2 == 0,
        };
        while plane.request(mallory, request()).is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // A barrier: mallory's next request is answered after all of those were handled.
    let bogus = Request::Mute {
        track_id: protocol::TrackId(999_999),
        muted: true,
    };
    plane.request(mallory, bogus).unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), mallory_rx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(m, ServerMessage::Error(_)) {
            break;
        }
    }
    let dropped = || {
        metric(
            &registry,
            "sfu_dropped_total",
            Some(("reason", "signal_queue_full")),
        )
    };
    // Counters reach the metrics once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped() < 150.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dropped() >= 150.0,
        "the messages that did not fit were dropped"
    );
    assert_eq!(
        metric(&registry, "sfu_participants", None),
        2.0,
        "nobody removed"
    );
    // The victim reads again: what its queue held, then the room as it is now.
    let mut seen = Vec::new();
    let resync = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), victim_rx.recv())
            .await
            .expect("a resync once the queue has room")
            .unwrap();
        if let ServerMessage::Resync {
            participants,
            tracks,
            ..
        } = m
        {
            break (participants, tracks);
        }
        seen.push(m);
    };
    assert_eq!(seen.len(), 32, "the queue was full: {seen:?}");
    let (participants, tracks) = resync;
    assert_eq!(
        participants
            .iter()
            .map(|p| p.participant_id)
            .collect::<Vec<_>>(),
        [mallory]
    );
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].track_id, track);
    assert!(
        tracks[0].muted,
        "the last change (muted) is what the resync says"
    );
    // Caught up, it hears of changes one by one again.
    plane
        .request(
            mallory,
            Request::Mute {
                track_id: track,
                muted: false,
            },
        )
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), victim_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next,
        ServerMessage::TrackMuted {
            track_id: track,
            muted: false
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_reads_none_of_its_own_answers_is_removed() {
    let registry = Registry::new();
    let plane = start_plane(&registry, free_ports(), None);
    // Its queue holds 4; it reads nothing, and asks for what gets it an error each time.
    let (id, _rx) = join_with_queue(&plane, "deaf", 4).await;
    // Seen in the gauge first: a 0 read later is then its removal, not a flush to come.
    assert_eq!(gauge_once(&registry, "sfu_participants", 1.0).await, 1.0);
    let errors = 4 + sfu::queues::HELD + 1;
    for _ in 0..errors {
        let mute = || Request::Mute {
            track_id: protocol::TrackId(999_999),
            muted: true,
        };
        while plane.request(id, mute()).is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(
        gauge_once(&registry, "sfu_participants", 0.0).await,
        0.0,
        "removed"
    );
}
