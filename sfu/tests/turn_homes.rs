//! `sfu turn` listening on every address of a host with several: coturn's test client
//! (`turnutils_uclient`, Debian package `coturn`) reaches it at the second one and must
//! be answered from there. Runs in a network namespace of its own (root, as the
//! end-to-end tests), whose loopback has both 127.0.0.1 and 127.0.0.2: nothing listens
//! outside it.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod coturn;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Namespace, Running};
use coturn::tool;

#[test]
fn a_listener_on_every_address_answers_from_the_one_reached() {
    let ns = Namespace::new("turn-homes");
    let log = std::env::temp_dir().join(format!("sfu-turn-homes-{}.log", std::process::id()));
    let relay = ns
        .command(env!("CARGO_BIN_EXE_sfu"))
        .args([
            "turn",
            "--listen",
            "0.0.0.0:3478",
            "--relay-ip",
            "127.0.0.1",
            "--relay-bind",
            "127.0.0.1",
            "--relay-ports",
            "25000-25009",
            "--user",
            "alice:secret",
            "--allow-peer",
            "127.0.0.1/32",
            "--own-peer-ports",
            "24800-24802",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut relay = Running(relay);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("TURN on")
    {
        if let Ok(Some(status)) = relay.0.try_wait() {
            let why = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("sfu turn exited ({status}):\n{why}");
        }
        assert!(Instant::now() < deadline, "sfu turn did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _peer = Running(
        ns.command(&tool("turnutils_peer"))
            .args(["-L", "127.0.0.1", "-p", "24800"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    // Two clients, five messages each, through the relay reached at 127.0.0.2.
    let out: Output = ns
        .command("timeout")
        .args(["--kill-after=5", "30", &tool("turnutils_uclient")])
        .args([
            "-u",
            "alice",
            "-w",
            "secret",
            "-p",
            "3478",
            "-e",
            "127.0.0.1",
        ])
        .args(["-r", "24800", "-c", "-m", "2", "-n", "5", "127.0.0.2"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "uclient failed:\n{text}");
    assert!(
        text.contains("tot_recv_msgs=10") && text.contains("Total lost packets 0"),
        "every message relayed both ways:\n{text}"
    );
    let _ = std::fs::remove_file(&log);
}
