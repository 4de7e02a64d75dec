//! A server started by a test: the `sfu` binary on loopback ports found free, its
//! secrets in files, its log kept; runs of `sfu`'s other commands; a participant joined
//! over the signaling WebSocket; plain HTTP requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::{Dir, Running};

pub const SECRET: &str = "join-secret-of-the-server-tests";
pub const ADMIN_SECRET: &str = "admin-secret-of-the-server-tests";

/// How long any one process, socket read or wait of this test may take.
pub const BOUND: Duration = Duration::from_secs(20);

/// A server started for a test, on ports of its own.
pub struct Server {
    pub _running: Running,
    pub port: u16,
    /// The URL the client is given.
    pub url: String,
    pub secret: PathBuf,
    pub admin_secret: PathBuf,
    pub log: PathBuf,
}

/// The server, with the secrets written in `dir`, plus `extra` arguments; once it
/// accepts connections.
pub fn start(dir: &Dir, scheme: &str, extra: &[&str]) -> Server {
    start_on(dir, scheme, free_tcp_port(), extra)
}

/// As [`start`], with signaling on `port`.
pub fn start_on(dir: &Dir, scheme: &str, port: u16, extra: &[&str]) -> Server {
    let secret = secret_file(dir, "secret", SECRET);
    let admin_secret = secret_file(dir, "admin-secret", ADMIN_SECRET);
    let log = dir.0.join("server.log");
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
pub fn secret_file(dir: &Dir, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write(name, &format!("{secret}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `command` without the `SFU_*` variables of whoever runs the test.
pub fn clear_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SFU_") {
            command.env_remove(name);
        }
    }
    command
}

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_tcp_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Two consecutive UDP ports on 127.0.0.1 free a moment ago, as `FIRST-LAST`.
pub fn free_udp_ports() -> String {
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
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its output, once it succeeded.
    pub fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "{self:?}");
        self.stdout
    }

    /// Its error output, once it failed with `code`.
    pub fn failed(self, code: i32) -> String {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        self.stderr
    }
}

/// `sfu <args>`, killed if it takes longer than [`BOUND`].
pub fn sfu(args: &[&str]) -> Run {
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

/// Waits up to [`BOUND`] for `ok`, failing with `what` and the server's log.
pub fn wait_for(server: &Server, what: &str, mut ok: impl FnMut() -> bool) {
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
pub struct Member {
    pub ws: WebSocket<TcpStream>,
    pub id: u64,
}

/// A join token of `server`'s for `identity` in `room`, from `sfu token`.
pub fn join_token(server: &Server, room: &str, identity: &str) -> String {
    let secret = server.secret.to_str().unwrap();
    let args = [
        "token",
        "--room",
        room,
        "--identity",
        identity,
        "--secret-file",
        secret,
    ];
    sfu(&args).ok().trim().to_owned()
}

/// The signaling WebSocket of the server on `port`; `None` when nothing listens there.
pub fn websocket(port: u16) -> Option<WebSocket<TcpStream>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.set_write_timeout(Some(BOUND)).unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    Some(tungstenite::client(url, stream).unwrap().0)
}

impl Member {
    pub fn join(server: &Server, room: &str, identity: &str) -> Member {
        let token = join_token(server, room, identity);
        let ws = websocket(server.port).expect("the server listens");
        let mut member = Member { ws, id: 0 };
        let join = json!({ "type": "join", "token": token, "e2ee": true });
        member.ws.send(Message::text(join.to_string())).unwrap();
        let joined = member.until("joined");
        assert_eq!(joined["room"], room, "{joined}");
        member.id = joined["participant_id"].as_u64().unwrap();
        member
    }

    /// The next message of `kind`, skipping others.
    pub fn until(&mut self, kind: &str) -> Value {
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
pub fn get(port: u16, path: &str) -> (u16, String) {
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

/// `sfu admin <args>` of `server`, with its admin secret.
pub fn admin(server: &Server, args: &[&str]) -> Run {
    let secret = server.admin_secret.to_str().unwrap();
    let common = ["--url", &server.url, "--secret-file", secret];
    sfu(&[&["admin"], args, &common].concat())
}

/// `sfu admin <args> --json` of `server`, read as `T`.
pub fn admin_json<T: serde::de::DeserializeOwned>(server: &Server, args: &[&str]) -> T {
    let text = admin(server, &[args, &["--json"]].concat()).ok();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}
