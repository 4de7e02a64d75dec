//! `sfu turn` against coturn's own test client, `turnutils_uclient`, with `turnutils_peer`
//! as the peer (Debian package `coturn`, installed by `scripts/test`). Everything runs on
//! loopback, on non-default ports; loopback peers are allowed explicitly with --allow-peer.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod coturn;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Running;
use coturn::tool;

// Fixed loopback ports, below the kernel's ephemeral range (32768-60999) where any
// outgoing connection of the machine may hold one.
const LISTEN_PORT: u16 = 24_780;
const PEER_PORT: u16 = 24_800;
const TLS_PORT: u16 = 24_791;
const PEER6_PORT: u16 = 24_801;
const METRICS_PORT: u16 = 24_790;

fn relay(extra: &[&str]) -> Running {
    relay_with(
        extra,
        &["--relay-ip", "127.0.0.1", "--relay-bind", "127.0.0.1"],
    )
}

/// The peers' ports: on the relay's own address (loopback here), so they must be opened
/// (uclient also binds a channel to the port after the peer's).
const OWN_PEER_PORTS: [&str; 2] = ["--own-peer-ports", "24800-24802"];

fn relay_with(extra: &[&str], relay_addrs: &[&str]) -> Running {
    let port = LISTEN_PORT.to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["turn", "--listen", &listen, "--relay-ports", "25000-25009"];
    args.extend_from_slice(relay_addrs);
    args.extend_from_slice(extra);
    let log = std::env::temp_dir().join(format!("sfu-turn-test-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Ready when the TCP listener accepts; a relay that exits says why in its log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", LISTEN_PORT)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let why = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("sfu turn exited ({status}):\n{why}");
        }
        assert!(Instant::now() < deadline, "sfu turn did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running(child)
}

fn peer() -> Running {
    peer_at("127.0.0.1", PEER_PORT)
}

fn peer_at(ip: &str, port: u16) -> Running {
    let child = Command::new(tool("turnutils_peer"))
        .args(["-L", ip, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Running(child)
}

/// Runs turnutils_uclient with `args` (bounded by `timeout`), 2 clients x `n` messages.
fn uclient(args: &[&str], n: u32) -> Output {
    uclient_at(LISTEN_PORT, args, n)
}

fn uclient_at(port: u16, args: &[&str], n: u32) -> Output {
    uclient_to(port, "127.0.0.1", PEER_PORT, args, n)
}

fn uclient_to(port: u16, peer: &str, peer_port: u16, args: &[&str], n: u32) -> Output {
    uclient_clients(port, peer, peer_port, args, n, 2)
}

/// Runs turnutils_uclient with `clients` clients.
fn uclient_clients(
    port: u16,
    peer: &str,
    peer_port: u16,
    args: &[&str],
    n: u32,
    clients: u32,
) -> Output {
    let n = n.to_string();
    let clients = clients.to_string();
    let port = port.to_string();
    let peer_port = peer_port.to_string();
    let bin = tool("turnutils_uclient");
    let mut all = vec!["--kill-after=5", "30", bin.as_str()];
    let local = local_address(peer);
    if let Some(local) = &local {
        all.extend_from_slice(&["-L", local]);
    }
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "-p",
        &port,
        "-e",
        peer,
        "-r",
        &peer_port,
        "-c",
        "-m",
        &clients,
        "-n",
        &n,
        "127.0.0.1",
    ]);
    Command::new("timeout").args(&all).output().unwrap()
}

/// A loopback address of its own for each IPv4 run of uclient. A run whose allocation
/// was refused a peer (403) leaves it behind, as a client that vanishes does, for its
/// whole lifetime; a later run from the same address and port would be answered 437 or,
/// under another username, 441. Ports alone are left to the kernel, which may hand the
/// same one on.
fn local_address(peer: &str) -> Option<String> {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);
    if peer.contains(':') {
        return None;
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert!(n < 255, "more uclient runs than loopback addresses");
    Some(format!("127.0.0.{n}"))
}

/// The messages sent and received, and the lost packets, read from uclient's report.
fn report(out: &Output) -> (u64, u64, u64) {
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let number_after = |key: &str| {
        text.lines()
            .rev()
            .find_map(|l| l.split(key).nth(1))
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
            })
    };
    match (
        number_after("tot_send_msgs="),
        number_after("tot_recv_msgs="),
        number_after("Total lost packets"),
    ) {
        (Some(s), Some(r), Some(l)) => (s, r, l),
        _ => panic!("no report in uclient output:\n{text}"),
    }
}

fn assert_relays_without_loss(out: &Output, n: u64, what: &str) {
    assert!(out.status.success(), "{what}: uclient failed: {out:?}");
    let (sent, received, lost) = report(out);
    assert_eq!((sent, received, lost), (2 * n, 2 * n, 0), "{what}");
}

fn assert_fails(out: &Output, expect: &str, what: &str) {
    assert!(!out.status.success(), "{what}: uclient succeeded");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(expect),
        "{what}: expected {expect:?} in:\n{text}"
    );
}

/// One test, so that the fixed ports are never used by two at once.
#[test]
fn coturn_client_relays_through_sfu_turn() {
    let _peer = peer();
    {
        let _relay = relay(&[
            "--user",
            "alice:secret",
            "--auth-secret",
            "old-secret",
            "--auth-secret",
            "north",
            "--allow-peer",
            "127.0.0.1/32",
            "--metrics-listen",
            "127.0.0.1:24790",
            OWN_PEER_PORTS[0],
            OWN_PEER_PORTS[1],
        ]);
        let creds = ["-u", "alice", "-w", "secret"];
        // Its own listener and relay ports are not peers, whatever --allow-peer says.
        for (port, what) in [(LISTEN_PORT, "its own listener"), (25_000, "a relay port")] {
            assert_fails(
                &uclient_to(LISTEN_PORT, "127.0.0.1", port, &creds, 5),
                "403",
                what,
            );
        }
        assert_relays_without_loss(&uclient(&creds, 50), 50, "UDP, channels");
        assert_relays_without_loss(
            &uclient(&[&creds[..], &["-s"]].concat(), 50),
            50,
            "UDP, Send",
        );
        assert_relays_without_loss(
            &uclient(&[&creds[..], &["-t"]].concat(), 50),
            50,
            "TCP, channels",
        );
        assert_relays_without_loss(
            &uclient(&[&creds[..], &["-t", "-s"]].concat(), 50),
            50,
            "TCP, Send",
        );
        // REST credentials from the second of two secrets (rotation).
        assert_relays_without_loss(&uclient(&["-W", "north", "-u", "carol"], 20), 20, "REST");
        assert_fails(
            &uclient(&["-u", "alice", "-w", "wrong"], 5),
            "Cannot complete Allocation",
            "wrong password",
        );
        assert_fails(
            &uclient(&["-W", "not-a-secret", "-u", "carol"], 5),
            "Cannot complete Allocation",
            "wrong REST secret",
        );
        // The standalone relay's /metrics carries what it did (flushed once a second).
        std::thread::sleep(Duration::from_millis(1500));
        let text = http_get(METRICS_PORT, "/metrics");
        let value = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        };
        assert!(
            value("sfu_turn_relayed_packets_total ") >= 2.0 * 220.0,
            "relayed packets on /metrics:\n{text}"
        );
        assert!(value("sfu_turn_allocations_total ") >= 5.0, "{text}");
        assert!(
            value("sfu_turn_refusals_total{") >= 2.0,
            "auth failures counted:\n{text}"
        );
        assert_eq!(http_get(METRICS_PORT, "/healthz").trim(), "ok");
    }
    {
        // An IPv6 relay address (REQUESTED-ADDRESS-FAMILY) beside the IPv4 one.
        let _relay = relay_with(
            &[
                "--user",
                "alice:secret",
                "--allow-peer",
                "::1/128",
                OWN_PEER_PORTS[0],
                OWN_PEER_PORTS[1],
            ],
            &["--relay-ip", "127.0.0.1", "--relay-ip", "::1"],
        );
        let _peer6 = peer_at("::1", PEER6_PORT);
        let out = uclient_to(
            LISTEN_PORT,
            "::1",
            PEER6_PORT,
            &["-x", "-u", "alice", "-w", "secret"],
            50,
        );
        assert_relays_without_loss(&out, 50, "IPv6 relay, channels");
        // (A family mismatch cannot be provoked with uclient: it asks for the peer's family
        // whatever -X says. turn/tests/core.rs checks the 443.)
    }
    {
        // TURN over TLS, with a certificate made for the test.
        let dir = std::env::temp_dir().join(format!("sfu-turn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "openssl: {made:?}");
        let tls = format!("127.0.0.1:{TLS_PORT}");
        let _relay = relay(&[
            "--user",
            "alice:secret",
            "--allow-peer",
            "127.0.0.1/32",
            "--tls-listen",
            &tls,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            OWN_PEER_PORTS[0],
            OWN_PEER_PORTS[1],
        ]);
        let out = uclient_at(TLS_PORT, &["-t", "-S", "-u", "alice", "-w", "secret"], 50);
        assert_relays_without_loss(&out, 50, "TLS, channels");
        let out = uclient_at(
            TLS_PORT,
            &["-t", "-S", "-s", "-u", "alice", "-w", "secret"],
            50,
        );
        assert_relays_without_loss(&out, 50, "TLS, Send");
        // Plain TCP to the TLS port is not TURN.
        let out = uclient_at(TLS_PORT, &["-t", "-u", "alice", "-w", "secret"], 5);
        assert!(!out.status.success(), "plain TCP on the TLS port must fail");
        let _ = std::fs::remove_dir_all(&dir);
    }
    {
        // Without --allow-peer, a loopback peer is refused.
        let _relay = relay(&["--user", "alice:secret"]);
        assert_fails(
            &uclient(&["-u", "alice", "-w", "secret"], 5),
            "403",
            "forbidden peer",
        );
    }
    {
        // With it, the relay's own address is still refused without --own-peer-ports.
        let _relay = relay(&["--user", "alice:secret", "--allow-peer", "127.0.0.1/32"]);
        assert_fails(
            &uclient(&["-u", "alice", "-w", "secret"], 5),
            "403",
            "the relay's own address",
        );
    }
}

/// The relay embedded in the server reaches the server's media ports and nothing else of
/// its own: not its TURN listener, its relay ports or signaling (coturn's client, with the
/// REST credentials a join would hand out).
#[test]
fn embedded_relay_reaches_only_the_media_ports() {
    const HTTP: u16 = 24_820;
    const TURN: u16 = 24_821;
    let log = std::env::temp_dir().join(format!("sfu-embedded-turn-{}.log", std::process::id()));
    let turn_listen = format!("127.0.0.1:{TURN}");
    let http_listen = format!("127.0.0.1:{HTTP}");
    let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(["--http-listen", &http_listen, "--udp-ports", "24826-24827"])
        .args([
            "--udp-bind",
            "127.0.0.1",
            "--advertise-ip",
            "127.0.0.1",
            "--no-ice-tcp",
        ])
        .args([
            "--turn-listen",
            &turn_listen,
            "--turn-relay-ports",
            "25020-25029",
        ])
        .args([
            "--turn-auth-secret",
            "embedded-secret",
            "--secret",
            "signaling",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _server = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", TURN)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server's relay did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let creds = ["-W", "embedded-secret", "-u", "someone"];
    for (port, what) in [
        (TURN, "its TURN listener"),
        (25_020, "its relay ports"),
        (HTTP, "signaling"),
        (24_828, "a port next to the media ports"),
    ] {
        assert_fails(&uclient_to(TURN, "127.0.0.1", port, &creds, 3), "403", what);
    }
    // A media port is a peer it may have: the channel is bound (the server does not echo
    // what is relayed, so nothing comes back, but nothing is refused either). One client:
    // two would bind the same peer from the shared relay port. (uclient also binds the
    // port after each peer's: the ports above are chosen so that none of those is a media
    // port, which an earlier allocation would then hold.)
    let out = uclient_clients(TURN, "127.0.0.1", 24_826, &creds, 3, 1);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("403"), "a media port refused:\n{text}");
    assert!(
        text.contains("Total transmit time"),
        "uclient did not get to send:\n{text}"
    );
}

/// A plain HTTP GET on 127.0.0.1; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_string()
}
