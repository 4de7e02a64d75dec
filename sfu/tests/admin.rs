//! `POST /admin/drain` on the server, in a network namespace of its own: off (403)
//! without an admin secret (and SIGHUP harmless there); with one, a join token is
//! refused (401) and an admin token from `sfu admin token` (which makes none that lives
//! past 30 days) starts the drain, after which the server, carrying no call, exits by
//! itself.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, Namespace, Running};

const BASE: &str = "http://127.0.0.1:8085";

/// `curl -X POST` (or GET) of `BASE` + `path` in `ns`: the status code and the body.
fn request(ns: &Namespace, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut curl = ns.command("curl");
    curl.args([
        "-s",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    if let Some(token) = bearer {
        curl.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = curl.arg(format!("{BASE}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.trim().to_string())
}

/// The server in `ns` with `args`, its log in `log`, once `/healthz` answers.
fn start(ns: &Namespace, args: &[&str], log: &Path) -> Running {
    let child = ns
        .command(env!("CARGO_BIN_EXE_sfu"))
        .args([
            "--http-listen",
            "127.0.0.1:8085",
            "--udp-ports",
            "17120-17121",
        ])
        .args(["--no-ice-tcp", "--turn", "false", "--log", "info"])
        .args(args)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(ns, "GET", "/healthz", None).0 != 200 {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// What `sfu <args>` prints, trimmed.
fn sfu(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn an_admin_token_drains_the_server_and_nothing_else_does() {
    let ns = Namespace::new("admin");
    let dir = Dir::new("admin");
    let secret = dir.write("secret", "join-secret-of-this-test\n");
    let admin_secret = dir.write("admin-secret", "admin-secret-of-this-test\n");
    let log = dir.0.join("server.log");
    let (secret, admin_secret) = (secret.to_str().unwrap(), admin_secret.to_str().unwrap());

    // Without an admin secret, the API is off.
    let server = start(&ns, &["--secret-file", secret], &log);
    let (code, body) = request(&ns, "POST", "/admin/drain", Some("x"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--admin-secret-file"), "{body}");
    // SIGHUP (a `systemctl reload`, a log rotation) does not end a server without a
    // certificate to reload, as its default action would.
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(&ns, "GET", "/healthz", None), (200, "ok".into()));
    drop(server);

    let mut server = start(
        &ns,
        &["--secret-file", secret, "--admin-secret-file", admin_secret],
        &log,
    );
    let join = sfu(&[
        "token",
        "--room",
        "r",
        "--identity",
        "i",
        "--secret-file",
        secret,
    ]);
    let admin = sfu(&[
        "admin",
        "token",
        "--identity",
        "ops",
        "--secret-file",
        admin_secret,
    ]);
    // None may outlive 30 days: the server would refuse it.
    let long = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(["admin", "token", "--identity", "ops", "--ttl", "31d"])
        .args(["--secret-file", admin_secret])
        .output()
        .unwrap();
    assert!(!long.status.success() && long.stdout.is_empty());
    assert!(String::from_utf8_lossy(&long.stderr).contains("30 days at most"));
    let (code, body) = request(&ns, "POST", "/admin/drain", Some(&join));
    assert_eq!(code, 401, "a join token: {body}");
    let (code, _) = request(&ns, "POST", "/admin/drain", None);
    assert_eq!(code, 401, "no token");
    assert_eq!(request(&ns, "GET", "/readyz", None), (200, "ready".into()));

    let (code, body) = request(&ns, "POST", "/admin/drain", Some(&admin));
    assert_eq!(code, 202, "{body}");
    assert_eq!(body, r#"{"draining":true,"started":true}"#);
    // No call to wait for: it exits once the shards have counted no room twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after the drain");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}:\n{text}");
    assert!(
        text.contains("admin API: drain admin=ops started=true"),
        "{text}"
    );
    assert!(text.contains("asked by the admin API: draining"), "{text}");
    assert!(text.contains("no call left; stopping"), "{text}");
}
