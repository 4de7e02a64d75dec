//! `sfu admin rooms` and the other requests of the admin API's command-line client, run
//! against the real server on loopback ports found free: the lists as tables and as
//! `--json` read into protocol's types, a participant joined over the WebSocket removed,
//! a call whose name needs percent-encoding ended, one switch of a group changed alone,
//! refusals (the server's message, the status, exit code 1), usage errors (2), an
//! unreachable server, and a drain that `/readyz` reports; over https, the server's
//! certificate trusted through `--ca-file` only.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, Running};
use protocol::Policy;
use protocol::admin::{CallRecord, ParticipantDetail, RoomDetail, RoomSummary};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const SECRET: &str = "join-secret-of-the-admin-cli-test";
const ADMIN_SECRET: &str = "admin-secret-of-the-admin-cli-test";

/// How long any one process, socket read or wait of this test may take.
const BOUND: Duration = Duration::from_secs(20);

/// A server started for a test, on ports of its own.
struct Server {
    _running: Running,
    port: u16,
    /// The URL the client is given.
    url: String,
    secret: PathBuf,
    admin_secret: PathBuf,
    log: PathBuf,
}

/// The server, with the secrets written in `dir`, plus `extra` arguments; once it
/// accepts connections.
fn start(dir: &Dir, scheme: &str, extra: &[&str]) -> Server {
    let secret = secret_file(dir, "secret", SECRET);
    let admin_secret = secret_file(dir, "admin-secret", ADMIN_SECRET);
    let log = dir.0.join("server.log");
    let port = free_tcp_port();
    let udp = free_udp_ports();
    let mut server = Command::new(env!("CARGO_BIN_EXE_sfu"));
    clear_env(&mut server)
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--udp-ports", &udp, "--udp-bind", "127.0.0.1"])
        .args([
            "--advertise-ip",
            "127.0.0.1",
            "--no-ice-tcp",
            "--turn",
            "false",
        ])
        .args([
            "--shards",
            "1",
            "--participant-timeout",
            "30",
            "--log",
            "info",
        ])
        .arg("--secret-file")
        .arg(&secret)
        .arg("--admin-secret-file")
        .arg(&admin_secret)
        .args(extra)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let mut running = Running(server.spawn().unwrap());
    let deadline = Instant::now() + BOUND;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = running.0.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap();
            panic!("the server exited ({status}):\n{text}");
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        _running: running,
        port,
        url: format!("{scheme}://127.0.0.1:{port}"),
        secret,
        admin_secret,
        log,
    }
}

/// A secret file only its owner may read (else `sfu` warns).
fn secret_file(dir: &Dir, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write(name, &format!("{secret}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `command` without the `SFU_*` variables of whoever runs the test.
fn clear_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SFU_") {
            command.env_remove(name);
        }
    }
    command
}

/// A TCP port on 127.0.0.1 free a moment ago.
fn free_tcp_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Two consecutive UDP ports on 127.0.0.1 free a moment ago, as `FIRST-LAST`.
fn free_udp_ports() -> String {
    for _ in 0..100 {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return format!("{port}-{}", port + 1);
        }
    }
    panic!("no two consecutive free UDP ports");
}

/// What a run of `sfu` left.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its output, once it succeeded.
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "{self:?}");
        self.stdout
    }

    /// Its error output, once it failed with `code`.
    fn failed(self, code: i32) -> String {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        self.stderr
    }
}

/// `sfu <args>`, killed if it takes longer than [`BOUND`].
fn sfu(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sfu"));
    clear_env(&mut command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sfu {args:?} still running after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `sfu admin <args>` of `server`, with its admin secret.
fn admin(server: &Server, args: &[&str]) -> Run {
    let secret = server.admin_secret.to_str().unwrap();
    let common = ["--url", &server.url, "--secret-file", secret];
    sfu(&[&["admin"], args, &common].concat())
}

/// `sfu admin <args> --json` of `server`, read as `T`.
fn admin_json<T: serde::de::DeserializeOwned>(server: &Server, args: &[&str]) -> T {
    let text = admin(server, &[args, &["--json"]].concat()).ok();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// The rooms `sfu admin rooms --json` lists.
fn rooms(server: &Server) -> Vec<RoomSummary> {
    let mut answer: Value = admin_json(server, &["rooms"]);
    serde_json::from_value(answer["rooms"].take()).unwrap()
}

/// Waits up to [`BOUND`] for `ok`, failing with `what` and the server's log.
fn wait_for(server: &Server, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !ok() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            panic!("{what}; the server's log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A participant joined over the signaling WebSocket (it sends no offer: it stays until
/// the server's participant timeout).
struct Member {
    ws: WebSocket<TcpStream>,
    id: u64,
}

impl Member {
    fn join(server: &Server, room: &str, identity: &str) -> Member {
        let secret = server.secret.to_str().unwrap();
        let token = sfu(&[
            "token",
            "--room",
            room,
            "--identity",
            identity,
            "--secret-file",
            secret,
        ])
        .ok();
        let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream.set_read_timeout(Some(BOUND)).unwrap();
        stream.set_write_timeout(Some(BOUND)).unwrap();
        let url = format!("ws://127.0.0.1:{}/ws", server.port);
        let (ws, _) = tungstenite::client(url, stream).unwrap();
        let mut member = Member { ws, id: 0 };
        let join = json!({ "type": "join", "token": token.trim(), "e2ee": true });
        member.ws.send(Message::text(join.to_string())).unwrap();
        let joined = member.until("joined");
        assert_eq!(joined["room"], room, "{joined}");
        member.id = joined["participant_id"].as_u64().unwrap();
        member
    }

    /// The next message of `kind`, skipping others.
    fn until(&mut self, kind: &str) -> Value {
        for _ in 0..100 {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let msg: Value = serde_json::from_str(&text).unwrap();
                    if msg["type"] == kind {
                        return msg;
                    }
                    assert_ne!(msg["type"], "error", "waiting for {kind}: {msg}");
                }
                Ok(_) => {}
                Err(e) => panic!("waiting for {kind}: {e}"),
            }
        }
        panic!("no {kind} in 100 messages");
    }
}

/// `GET path` over plain HTTP: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status.unwrap_or(0), body.to_string())
}

#[test]
fn the_admin_commands_list_and_act_on_calls_and_groups() {
    let dir = Dir::new("admin-cli");
    let server = start(&dir, "http", &[]);

    assert!(rooms(&server).is_empty());
    assert_eq!(
        admin(&server, &["rooms"]).ok().trim(),
        "no call in progress"
    );

    // Alice in "r", Bob in a room whose name is no URL path segment as it is.
    let mut alice = Member::join(&server, "r", "alice");
    let odd = "team/α β?";
    let mut bob = Member::join(&server, odd, "bob");
    let listed = rooms(&server);
    let names: Vec<&str> = listed.iter().map(|r| r.room.as_str()).collect();
    assert_eq!(names, ["r", odd]);
    assert_eq!(
        (listed[0].participants, listed[0].group.as_str()),
        (1, "default")
    );
    let table = admin(&server, &["rooms"]).ok();
    assert!(table.starts_with("ROOM"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("r ")), "{table}");
    assert!(table.contains(odd), "{table}");

    let mut answer: Value = admin_json(&server, &["participants", "r"]);
    let members: Vec<ParticipantDetail> =
        serde_json::from_value(answer["participants"].take()).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].participant_id.0, alice.id);
    assert_eq!(members[0].identity, "alice");
    let table = admin(&server, &["participants", "r"]).ok();
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&format!("p{} ", alice.id)) && row.contains("alice"),
        "{table}"
    );
    let detail: RoomDetail = admin_json(&server, &["room", odd]);
    assert_eq!(detail.summary.room, odd);
    assert_eq!(detail.members[0].identity, "bob");
    assert!(admin(&server, &["room", odd]).ok().contains("bob"));

    // Acting: ending Bob's call, removing Alice.
    let said = admin(&server, &["end", odd]).ok();
    assert_eq!(said.trim(), format!("ended the call in room {odd:?}"));
    assert_eq!(bob.until("left")["reason"], "room_ended");
    // (As the table shows the id; the number alone does too.)
    let id = format!("p{}", alice.id);
    let said = admin(&server, &["remove", "r", &id]).ok();
    assert_eq!(said.trim(), format!("removed {id} from room \"r\""));
    assert_eq!(alice.until("left")["reason"], "removed");
    wait_for(&server, "rooms still listed", || rooms(&server).is_empty());
    let err = admin(&server, &["remove", "r", &id]).failed(1);
    assert!(err.contains("no call in room \"r\"") || err.contains("no participant"));
    assert!(err.contains("404"), "{err}");
    let err = admin(&server, &["mute", "nowhere", "t9"]).failed(1);
    assert!(err.contains("404"), "{err}");

    // Their records.
    wait_for(&server, "no record of r", || {
        let mut answer: Value = admin_json(&server, &["records", "--room", "r"]);
        let records: Vec<CallRecord> = serde_json::from_value(answer["records"].take()).unwrap();
        records.len() == 1 && records[0].participants[0].identity == "alice"
    });
    let mut answer: Value = admin_json(&server, &["records", "--room", odd, "--limit", "5"]);
    let records: Vec<CallRecord> = serde_json::from_value(answer["records"].take()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].room, odd);
    let table = admin(&server, &["records"]).ok();
    assert_eq!(table.lines().count(), 3, "{table}");

    // One switch changes, the others stay: a new group from the default policy, then
    // one switch more.
    let said = admin(&server, &["set-group", "sales", "--video", "off"]).ok();
    assert!(
        said.starts_with("group \"sales\" set: calling on, video off"),
        "{said}"
    );
    let policy: Policy = admin_json(&server, &["group", "sales"]);
    let expected = Policy {
        video: false,
        ..Policy::default()
    };
    assert_eq!(policy, expected);
    admin(&server, &["set-group", "sales", "--max-participants", "4"]).ok();
    let policy: Policy = admin_json(&server, &["group", "sales"]);
    let expected = Policy {
        max_participants: Some(4),
        ..expected
    };
    assert_eq!(policy, expected);
    let said = admin(&server, &["set-group", "sales", "--video", "off"]).ok();
    assert!(said.starts_with("group \"sales\" unchanged"), "{said}");
    let table = admin(&server, &["groups"]).ok();
    assert!(table.lines().any(|l| l.starts_with("default ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("sales ")), "{table}");
    assert!(
        admin(&server, &["remove-group", "sales"])
            .ok()
            .contains("removed group \"sales\"")
    );
    let err = admin(&server, &["group", "sales"]).failed(1);
    assert!(err.contains("no group \"sales\" (404 Not Found)"), "{err}");

    // Refusals: the server's message and status, exit code 1.
    let err = admin(&server, &["remove-group", "default"]).failed(1);
    assert!(
        err.contains("the default group cannot be removed") && err.contains("409"),
        "{err}"
    );
    let err = admin(&server, &["set-group", "a b", "--video", "off"]).failed(1);
    assert!(
        err.contains("is not 1 to 64 letters") && err.contains("400"),
        "{err}"
    );
    let wrong = secret_file(&dir, "wrong", "not-the-admin-secret");
    let wrong = wrong.to_str().unwrap();
    let err = sfu(&[
        "admin",
        "rooms",
        "--url",
        &server.url,
        "--secret-file",
        wrong,
    ])
    .failed(1);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-admin-secret"), "{err}");
    let token = "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl";
    let err = sfu(&["admin", "rooms", "--url", &server.url, "--token", token]).failed(1);
    assert!(err.contains("401") && err.contains("--token"), "{err}");
    assert!(!err.contains(token), "{err}");
    let err = sfu(&["admin", "rooms", "--url", &server.url]).failed(1);
    assert!(err.contains("no admin token and no admin secret"), "{err}");

    // Usage errors are clap's: exit code 2.
    for args in [
        &["mute", "r", "twelve"][..],
        &["set-group", "sales", "--video", "maybe"],
        &["room", ""],
        &["rooms", "--url", "127.0.0.1:1"],
    ] {
        let err = sfu(&[&["admin"], args].concat()).failed(2);
        assert!(err.contains("error:"), "{args:?}: {err}");
    }

    // A server that is not there: the URL.
    let closed = format!("http://127.0.0.1:{}", free_tcp_port());
    let err = sfu(&["admin", "drain", "--url", &closed, "--token", "t"]).failed(1);
    assert!(
        err.contains(&format!("cannot reach {closed}/admin/drain")),
        "{err}"
    );

    // The drain, held open by a call in progress.
    let _carol = Member::join(&server, "hold", "carol");
    assert_eq!(get(server.port, "/readyz"), (200, "ready\n".into()));
    let answer: Value = admin_json(&server, &["drain"]);
    assert_eq!(answer, json!({ "draining": true, "started": true }));
    assert_eq!(get(server.port, "/readyz"), (503, "draining\n".into()));
    assert_eq!(admin(&server, &["drain"]).ok().trim(), "draining already");
}

#[test]
fn https_takes_the_ca_given_and_no_other() {
    let dir = Dir::new("admin-cli-https");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.write("cert.pem", &made.cert.pem());
    let key = dir.write("key.pem", &made.signing_key.serialize_pem());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = start(&dir, "https", &["--http-cert", cert, "--http-key", key]);

    let listed = admin(&server, &["rooms", "--ca-file", cert]).ok();
    assert_eq!(listed.trim(), "no call in progress");
    // The system's roots do not know the test's certificate.
    let err = admin(&server, &["rooms"]).failed(1);
    assert!(
        err.contains(&format!("cannot reach {}", server.url)),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Nor is a CA given for plain HTTP.
    let plain = format!("http://127.0.0.1:{}", server.port);
    let err = sfu(&["admin", "rooms", "--url", &plain, "--ca-file", cert]).failed(1);
    assert!(err.contains("--ca-file is for https"), "{err}");
}
