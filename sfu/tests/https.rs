//! Signaling over HTTPS (`--http-cert`, `--http-key`): the server in a network namespace of
//! its own, reached with curl, which trusts exactly one certificate at a time. A client
//! that connects and stays silent holds up no one's handshake, and one address's silent
//! connections past eight no other address's; the certificate replaced on disk is served
//! after SIGHUP, and a broken replacement keeps the last good one.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Dir, Namespace, Running};

const URL: &str = "https://127.0.0.1:8443";

/// A self-signed certificate for 127.0.0.1 and its key, in PEM.
fn pair() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// `curl` of `URL` + `path` in `ns`, trusting only `ca`: the status code (0 when no
/// connection was made, as when the certificate is not the trusted one) and the body.
fn get(ns: &Namespace, ca: &Path, path: &str) -> (u16, String) {
    get_from(ns, ca, path, "127.0.0.1")
}

/// `get`, from the source address `from`.
fn get_from(ns: &Namespace, ca: &Path, path: &str, from: &str) -> (u16, String) {
    let out = ns
        .command("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            "--interface",
            from,
        ])
        .arg("--cacert")
        .arg(ca)
        .arg(format!("{URL}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Waits up to 10 s for `ok`, failing with `what` and the server's log.
fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{what}; the server's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn https_serves_the_certificate_on_disk_as_it_is_replaced() {
    let ns = Namespace::new("https");
    let dir = Dir::new("https");
    let (cert_a, key_a) = pair();
    let (cert_b, key_b) = pair();
    let trust_a = dir.write("a.pem", &cert_a);
    let trust_b = dir.write("b.pem", &cert_b);
    let cert = dir.write("cert.pem", &cert_a);
    let key = dir.write("key.pem", &key_a);
    let log = dir.0.join("server.log");
    // `ip netns exec` becomes the server: its pid is the server's (for SIGHUP).
    let server = ns
        .command(env!("CARGO_BIN_EXE_sfu"))
        .args([
            "--http-listen",
            "127.0.0.1:8443",
            "--udp-ports",
            "17110-17111",
        ])
        .args(["--no-ice-tcp", "--turn", "false", "--log", "info"])
        .arg("--http-cert")
        .arg(&cert)
        .arg("--http-key")
        .arg(&key)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Running(server);
    wait_for("HTTPS with the first certificate", &log, || {
        get(&ns, &trust_a, "/healthz").0 == 200
    });
    assert_eq!(get(&ns, &trust_b, "/healthz").0, 0, "only A is served");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("signaling on https://127.0.0.1:8443"),
        "{text}"
    );

    // Plain HTTP on the port is a failed handshake, and counted (as was B's untrusted
    // one).
    let failures = || {
        let (_, metrics) = get(&ns, &trust_a, "/metrics");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("sfu_https_handshake_failures_total "));
        line.and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
            .unwrap()
    };
    // (B's failure is counted when the server reads curl's alert: let it arrive.)
    std::thread::sleep(Duration::from_millis(200));
    let before = failures();
    let plain = ns
        .command("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("http://127.0.0.1:8443/healthz")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
    assert_eq!(failures(), before + 1);

    // A client that connects and says nothing, for longer than curl waits.
    let silent = ns
        .command("bash")
        .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/8443; sleep 8"])
        .spawn()
        .unwrap();
    let quiet = Running(silent);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&ns, &trust_a, "/healthz").0, 200, "not held up");
    drop(quiet);

    // Eight silent connections from one address: its next one is closed at once, while
    // another address's goes through; once they are gone, the first's does again.
    let silent = ns
        .command("bash")
        .args([
            "-c",
            "for fd in 3 4 5 6 7 8 9 10; do eval \"exec $fd<>/dev/tcp/127.0.0.1/8443\"; done; \
             sleep 4",
        ])
        .spawn()
        .unwrap();
    let silent = Running(silent);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(&ns, &trust_a, "/healthz").0,
        0,
        "a ninth from 127.0.0.1"
    );
    assert_eq!(
        get_from(&ns, &trust_a, "/healthz", "127.0.0.2").0,
        200,
        "another address"
    );
    drop(silent);
    wait_for("the address's handshakes to end", &log, || {
        get(&ns, &trust_a, "/healthz").0 == 200
    });

    // The files replaced, then SIGHUP: B from the next connection on.
    dir.write("cert.pem", &cert_b);
    dir.write("key.pem", &key_b);
    server.signal("HUP");
    wait_for("HTTPS with the second certificate", &log, || {
        get(&ns, &trust_b, "/healthz").0 == 200
    });
    assert_eq!(get(&ns, &trust_a, "/healthz").0, 0, "A is no longer served");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("HTTPS: certificate reloaded from"), "{text}");

    // A renewal that went wrong (the key of another certificate) keeps B.
    dir.write("key.pem", &key_a);
    server.signal("HUP");
    wait_for("the failed reload logged", &log, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("HTTPS: certificate not reloaded, the previous one stays")
    });
    assert_eq!(get(&ns, &trust_b, "/healthz").0, 200);
}
