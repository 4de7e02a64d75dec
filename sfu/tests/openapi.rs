//! The admin API against its description, `docs/openapi.yaml`: schemathesis (installed by
//! `scripts/test` in `e2e/.venv`) sends every route requests generated from the
//! description, valid and not, with a call in progress, and checks each answer's status,
//! headers and body against it. The webhook notices the run causes are checked against
//! its `Notice` schema, and a call ended through the API leaves the record it describes.
//!
//! The server runs on 127.0.0.1 on ports free at the start, with an admin secret and a
//! config file of two groups; schemathesis runs with a fixed seed and a bounded number of
//! examples per route (a few seconds in all), and the test fails on any failure it
//! reports, showing its report.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Dir, Running};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/.venv");

/// What schemathesis checks of every answer: all its checks but
/// `object_level_authorization`, which needs two callers of unequal rights (an admin
/// token may do everything).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_headers_conformance,response_schema_conformance,negative_data_rejection,\
    positive_data_acceptance,missing_required_header,unsupported_method,\
    allow_header_conformance,use_after_free,ensure_resource_availability,ignored_auth";
/// The seed of every run: the same requests each time.
const SEED: &str = "7031";
/// Generated requests per route and phase: a few hundred in all, a few seconds.
const EXAMPLES: &str = "25";
/// The longest a schemathesis run may take before it is stopped (it takes seconds).
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// The groups of the config file; `audio-only` is the description's example group.
const CONFIG: &str = "\
[groups.audio-only]
video = false

[groups.tcp-only]
force_tcp = true
max_participants = 8
";

/// The webhooks' key (24 bytes).
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The room the description's examples name: the call in progress during the run.
const EXAMPLE_ROOM: &str = "team-standup";

#[test]
fn the_admin_api_answers_as_its_description_says() {
    let st = Path::new(VENV).join("bin/st");
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: scripts/test installs it from \
         e2e/requirements.txt; by hand: /usr/bin/python3 -m venv e2e/.venv && \
         e2e/.venv/bin/pip install -r e2e/requirements.txt",
        st.display()
    );
    let dir = Dir::new("openapi");
    let secret = dir.write("secret", "join-secret-of-the-openapi-test\n");
    let admin_secret = dir.write("admin-secret", "admin-secret-of-the-openapi-test\n");
    let config = dir.write("sfu.toml", CONFIG);
    let (secret, admin_secret) = (secret.to_str().unwrap(), admin_secret.to_str().unwrap());
    let receiver = Receiver::start();
    let udp = free_udp_port().to_string();
    let server = Server::start(
        &dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--secret-file",
            secret,
            "--admin-secret-file",
            admin_secret,
            "--http-listen",
            "127.0.0.1:0",
            "--udp-ports",
            &format!("{udp}-{udp}"),
            "--udp-bind",
            "127.0.0.1",
            "--advertise-ip",
            "127.0.0.1",
            "--shards",
            "1",
            "--no-ice-tcp",
            "--turn",
            "false",
            "--node",
            "openapi-test",
            // The joined participants send no media: they stay through the test.
            "--participant-timeout",
            "600",
            "--webhook-url",
            &receiver.url,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
    );
    let admin = sfu(
        &["admin", "token", "--identity", "schemathesis"],
        admin_secret,
    );
    let join_token = |room: &str, identity: &str, group: Option<&str>| {
        let mut args = vec!["token", "--room", room, "--identity", identity];
        if let Some(group) = group {
            args.extend(["--group", group]);
        }
        sfu(&args, secret)
    };

    // A call in the description's example room, of a group of the config file.
    let _alice = server.join(&join_token(EXAMPLE_ROOM, "alice", Some("audio-only")));
    let (status, body) = server.request("GET", "/admin/rooms", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    let rooms: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rooms["rooms"][0]["room"], EXAMPLE_ROOM, "{body}");
    assert_eq!(rooms["rooms"][0]["group"], "audio-only", "{body}");
    assert_eq!(rooms["rooms"][0]["node"], "openapi-test", "{body}");

    // Every route but the drain, which would end the server with its last call.
    schemathesis(&dir, &server, &admin, &["--exclude-operation-id", "drain"]);

    // A call ended through the API: its notices and its record. The default group as
    // the config file has it first (the run may have changed it).
    let (status, body) = server.request("PUT", "/admin/groups/default", Some(&admin), Some("{}"));
    assert_eq!(status, 200, "{body}");
    let _bob = server.join(&join_token("retro", "bob", None));
    let (status, body) = server.request("DELETE", "/admin/rooms/retro", Some(&admin), None);
    assert_eq!(status, 204, "{body}");
    let finished =
        receiver.wait_for(|n| n["type"] == "room_finished" && n["data"]["room"] == "retro");
    assert_eq!(finished["data"]["participants"][0]["identity"], "bob");
    assert_eq!(finished["data"]["participants"][0]["reason"], "room_ended");
    let (status, body) = server.request(
        "GET",
        "/admin/records?room=retro&limit=5",
        Some(&admin),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let records: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(records["records"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        records["records"][0], finished["data"],
        "the record is the notice's"
    );
    receiver.check(&dir, WEBHOOK_SECRET);

    // The drain, last, with a call in progress so that the server stays up.
    let _carol = server.join(&join_token("hold", "carol", None));
    schemathesis(&dir, &server, &admin, &["--include-operation-id", "drain"]);
    assert_eq!(server.request("GET", "/readyz", None, None).0, 503);
    assert_eq!(server.request("GET", "/healthz", None, None).0, 200);
}

/// Runs schemathesis against `server` with the admin token `admin` and `args` (which
/// routes); fails the test, showing its report, if it reports a failure.
fn schemathesis(dir: &Dir, server: &Server, admin: &str, args: &[&str]) {
    let st = Path::new(VENV).join("bin/st");
    let report = dir.0.join("schemathesis.txt");
    // One file, one offset: stdout and stderr in the order written.
    let output = std::fs::File::create(&report).unwrap();
    let mut command = Command::new(&st);
    command
        .args(["run", SPEC, "--url", &format!("http://{}", server.addr)])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            CHECKS,
            "--seed",
            SEED,
            "--max-examples",
            EXAMPLES,
        ])
        .args([
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--no-color",
        ])
        .args(["--request-timeout", "10"])
        .args(args)
        .current_dir(&dir.0)
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output);
    let started = Instant::now();
    let mut child = Running(command.spawn().unwrap());
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "schemathesis still running after {RUN_LIMIT:?}:\n{}",
            std::fs::read_to_string(&report).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&report).unwrap();
    eprintln!(
        "schemathesis {args:?}: {status} in {:.1} s\n{text}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "schemathesis (its report above) found the server out of line with \
         docs/openapi.yaml; the server's log ends:\n{}",
        server.log_tail()
    );
}

/// The `sfu` binary under test.
struct Server {
    /// Its HTTP listener, `127.0.0.1:PORT`.
    addr: String,
    log: std::path::PathBuf,
    _process: Running,
}

impl Server {
    /// `sfu` with `args` (which listen on `127.0.0.1:0`), once it says where it listens.
    fn start(dir: &Dir, args: &[&str]) -> Server {
        let log = dir.0.join("server.log");
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
            .args(args)
            .args(["--log", "info"])
            .env_remove("SFU_LOG")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        let mut process = Running(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some((_, rest)) = text.split_once("signaling on http://") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!("the server exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server {
            addr,
            log,
            _process: process,
        }
    }

    /// The last lines of its log (the test's directory goes with the test).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `method path` with `bearer` and a JSON `body`: the status and the body answered.
    fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let json = if body.is_some() {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}{json}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }

    /// A participant joined with `token` over the signaling WebSocket: in its call until
    /// dropped (it sends no media).
    fn join(&self, token: &str) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{}/ws", self.addr), stream).unwrap();
        let join = serde_json::json!({ "type": "join", "token": token, "e2ee": true });
        ws.send(Message::text(join.to_string())).unwrap();
        let answer = ws.read().unwrap();
        let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
        assert_eq!(answer["type"], "joined", "{answer}");
        ws
    }
}

/// What `sfu <args> --secret-file <secret>` prints, trimmed.
fn sfu(args: &[&str], secret: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(args)
        .args(["--secret-file", secret])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A UDP port free on 127.0.0.1 now (the server's media port).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A webhook receiver on 127.0.0.1: keeps every notice POSTed to it with its Standard
/// Webhooks headers, and answers 204.
struct Receiver {
    url: String,
    notices: Arc<Mutex<Vec<Delivery>>>,
}

/// A notice as it arrived: its `webhook-*` headers and its body.
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// The most notices a test's receiver takes (one connection each): a run sends hundreds.
const MAX_NOTICES: usize = 20_000;

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let notices = Arc::new(Mutex::new(Vec::new()));
        let kept = notices.clone();
        // Ends with the test's process, or after MAX_NOTICES.
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_NOTICES) {
                let Ok(stream) = stream else { continue };
                if let Some(delivery) = Receiver::take(stream) {
                    kept.lock().unwrap().push(delivery);
                }
            }
        });
        Receiver { url, notices }
    }

    /// Reads one POST from `stream` and answers it (204, closing the connection).
    fn take(mut stream: TcpStream) -> Option<Delivery> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut length = 0;
        let mut delivery = Delivery {
            id: String::new(),
            timestamp: String::new(),
            signature: String::new(),
            body: String::new(),
        };
        // The request line and at most 100 headers.
        for _ in 0..=100 {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().ok()?,
                    "webhook-id" => delivery.id = value,
                    "webhook-timestamp" => delivery.timestamp = value,
                    "webhook-signature" => delivery.signature = value,
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let _ = stream.write_all(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        delivery.body = String::from_utf8(body).ok()?;
        Some(delivery)
    }

    /// The first notice `matches` accepts, waiting for it up to 10 s.
    fn wait_for(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .notices
                .lock()
                .unwrap()
                .iter()
                .map(|d| serde_json::from_str::<Value>(&d.body).unwrap())
                .find(|n| matches(n));
            if let Some(notice) = found {
                return notice;
            }
            assert!(Instant::now() < deadline, "no such notice within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every notice so far is signed with `secret` as Standard Webhooks have it, and is
    /// as the description's `Notice` says (both checked in Python, with the
    /// `jsonschema_rs` that comes with schemathesis); and some are of each kind the test
    /// caused.
    fn check(&self, dir: &Dir, secret: &str) {
        let notices = self.notices.lock().unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        let mut lines = String::new();
        for delivery in notices.iter() {
            let notice: Value = serde_json::from_str(&delivery.body).unwrap();
            kinds.insert(notice["type"].as_str().unwrap().to_owned());
            let line = serde_json::json!({
                "id": delivery.id,
                "timestamp": delivery.timestamp,
                "signature": delivery.signature,
                "body": delivery.body,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        for kind in [
            "room_started",
            "room_finished",
            "participant_joined",
            "participant_left",
            "policy_changed",
        ] {
            assert!(kinds.contains(kind), "no {kind} notice among {kinds:?}");
        }
        let count = notices.len();
        drop(notices);
        let file = dir.write("notices.jsonl", &lines);
        let out = Command::new(Path::new(VENV).join("bin/python"))
            .args(["-c", NOTICE_CHECK, SPEC, file.to_str().unwrap(), secret])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "webhook notices out of line with docs/openapi.yaml's Notice, or signed \
             otherwise than Standard Webhooks say:\n{text}"
        );
        eprintln!("{count} webhook notices, of kinds {kinds:?}, as described and signed");
    }
}

/// Checks each delivery of a file (argv[2], JSON lines of `Delivery`): its signature
/// under the Standard Webhooks secret argv[3], and its body against the `Notice` schema
/// of an OpenAPI 3.0 description (argv[1]), whose `nullable` is read as JSON Schema has
/// it.
const NOTICE_CHECK: &str = r##"
import base64, hashlib, hmac, json, sys, yaml, jsonschema_rs

def schema(node):
    if isinstance(node, list):
        return [schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: schema(v) for k, v in node.items()}
    if node.pop("nullable", False):
        if "type" in node:
            node["type"] = [node["type"], "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"].append(None)
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node

spec = yaml.safe_load(open(sys.argv[1]))
root = {"$ref": "#/components/schemas/Notice", "components": schema(spec["components"])}
validator = jsonschema_rs.Draft7Validator(root)
key = base64.b64decode(sys.argv[3].removeprefix("whsec_"))
bad = 0
for n, line in enumerate(open(sys.argv[2]), 1):
    d = json.loads(line)
    signed = f"{d['id']}.{d['timestamp']}.{d['body']}".encode()
    mac = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if "v1," + mac not in d["signature"].split(" "):
        bad += 1
        print(f"notice {n}: signature {d['signature']!r}, not v1,{mac}")
    notice = json.loads(d["body"])
    if notice.get("id") != d["id"]:
        bad += 1
        print(f"notice {n}: webhook-id {d['id']!r} is not its id")
    for error in validator.iter_errors(notice):
        bad += 1
        print(f"notice {n}: {error.message}\n  {d['body']}")
sys.exit(1 if bad else 0)
"##;
