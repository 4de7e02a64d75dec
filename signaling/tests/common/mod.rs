//! The harness of the session and admin tests: a real server on 127.0.0.1:0 with a media plane
//! that records what reaches it, and a WebSocket client's few moves.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use prometheus::Registry;
use protocol::admin::{Action, RoomDetail, RoomSummary};
use protocol::{ErrorCode, ErrorMessage, ParticipantId, ServerMessage, Transport};
use protocol::{Join, Policy, Request};
use signaling::admin::AdminKey;
use signaling::{Config, MediaPlane, TokenKey};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const SECRET: &[u8] = b"test-secret";
/// The admin API's key: another secret.
pub const ADMIN_SECRET: &[u8] = b"test-admin-secret";

/// What the session asked of the media plane.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Join(String, String),
    Request(ParticipantId, Request),
    Leave(ParticipantId),
    /// An admin action on a room.
    Act(String, Action),
    /// A group's policy, passed on to calls in progress.
    Policy(String, Policy),
}

/// A media plane that records calls, answers every join with a `left` event (so tests see
/// the event path work), and keeps each event queue for tests to push into.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<Call>>,
    pub events: Mutex<Vec<mpsc::Sender<ServerMessage>>>,
    pub busy: Mutex<bool>,
    /// The transport and ICE server URLs of the last join.
    pub last_join: Mutex<Option<(Transport, Vec<String>)>>,
    /// Each join's `e2ee`, in order.
    pub e2ee: Mutex<Vec<bool>>,
    /// What `/readyz` reads: the server says it is draining.
    pub draining: AtomicBool,
    /// The calls the admin API sees.
    pub rooms: Mutex<Vec<RoomSummary>>,
    /// Every join, as it reached the media plane.
    pub joins: Mutex<Vec<Join>>,
}

impl MediaPlane for Recorder {
    fn join(
        &self,
        join: Join,
        events: mpsc::Sender<ServerMessage>,
    ) -> Result<ParticipantId, ErrorMessage> {
        if *self.busy.lock() {
            return Err(ErrorMessage::new(ErrorCode::ServerBusy, "busy"));
        }
        let urls: Vec<String> = join
            .ice_servers
            .iter()
            .flat_map(|s| s.urls.iter().cloned())
            .collect();
        assert!(
            !urls.is_empty()
                && urls
                    .iter()
                    .all(|u| u.ends_with(&format!("?for={}", join.identity))),
            "ICE servers are minted per identity: {urls:?}"
        );
        *self.last_join.lock() = Some((join.transport, urls));
        self.e2ee.lock().push(join.e2ee);
        self.joins.lock().push(join.clone());
        self.calls.lock().push(Call::Join(join.room, join.identity));
        let _ = events.try_send(ServerMessage::TrackUnpublished {
            track_id: protocol::TrackId(0),
        });
        let mut all = self.events.lock();
        all.push(events);
        Ok(ParticipantId(all.len() as u64))
    }

    fn offer(&self, participant: ParticipantId, offer: Request) -> signaling::Pending {
        Box::pin(std::future::ready(self.request(participant, offer)))
    }

    fn request(&self, participant: ParticipantId, request: Request) -> Result<(), ErrorMessage> {
        if *self.busy.lock() {
            return Err(ErrorMessage::new(ErrorCode::ServerBusy, "busy"));
        }
        self.calls.lock().push(Call::Request(participant, request));
        Ok(())
    }

    fn leave(&self, participant: ParticipantId) {
        self.calls.lock().push(Call::Leave(participant));
    }

    fn rooms(&self) -> signaling::Answer<Vec<RoomSummary>> {
        let rooms = self.rooms.lock().clone();
        Box::pin(std::future::ready(Ok(rooms)))
    }

    fn room(&self, room: &str) -> signaling::Answer<Option<RoomDetail>> {
        let detail = self
            .rooms
            .lock()
            .iter()
            .find(|r| r.room == room)
            .map(|r| RoomDetail {
                summary: r.clone(),
                members: Vec::new(),
            });
        Box::pin(std::future::ready(Ok(detail)))
    }

    /// Acts on the rooms `rooms` holds.
    fn act(&self, room: &str, action: Action) -> signaling::Answer<bool> {
        let found = self.rooms.lock().iter().any(|r| r.room == room);
        self.calls.lock().push(Call::Act(room.to_owned(), action));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn apply_policy(&self, group: &str, policy: Policy) -> signaling::Answer<()> {
        self.calls
            .lock()
            .push(Call::Policy(group.to_owned(), policy));
        Box::pin(std::future::ready(Ok(())))
    }
}

pub async fn start(dev_mode: bool) -> (String, Arc<Recorder>) {
    start_with(dev_mode, signaling::AddressLimits::default()).await
}

pub async fn start_with(
    dev_mode: bool,
    address_limits: signaling::AddressLimits,
) -> (String, Arc<Recorder>) {
    let started = start_server(Options {
        dev_mode,
        address_limits,
        ..Options::default()
    })
    .await;
    (started.addr, started.plane)
}

/// How a test's server differs from the usual one.
#[derive(Default)]
pub struct Options {
    pub dev_mode: bool,
    pub address_limits: signaling::AddressLimits,
    /// No admin key: the admin API is off.
    pub admin_off: bool,
    /// A cluster's placement of rooms; `None`: every room lives here.
    pub placement: Option<Arc<dyn signaling::Placement>>,
}

/// A test's server: where it listens, its media plane, and the ledger its admin API
/// reads the call records from (tests feed it call events).
pub struct Started {
    pub addr: String,
    pub plane: Arc<Recorder>,
    pub ledger: Arc<signaling::Ledger>,
}

pub async fn start_server(options: Options) -> Started {
    let plane = Arc::new(Recorder::default());
    let ledger =
        Arc::new(signaling::Ledger::new("test", 100, &Registry::new(), [].iter(), None).unwrap());
    let admin = (!options.admin_off).then(|| signaling::admin::Admin {
        key: AdminKey::new(ADMIN_SECRET),
        drain: {
            let plane = plane.clone();
            Arc::new(move || !plane.draining.swap(true, Ordering::Relaxed))
        },
    });
    let router = signaling::router(
        plane.clone(),
        Config {
            tokens: TokenKey::new(SECRET),
            dev_mode: options.dev_mode,
            ice_servers: Some(std::sync::Arc::new(|identity: &str| {
                vec![protocol::IceServer {
                    urls: vec![
                        format!("turn:relay.example:3478?for={identity}"),
                        format!("turns:relay.example:443?for={identity}"),
                    ],
                    username: Some(identity.to_owned()),
                    credential: Some("pw".into()),
                }]
            })),
            address_limits: options.address_limits,
            readiness: {
                let plane = plane.clone();
                Arc::new(move || plane.draining.load(Ordering::Relaxed).then_some("draining"))
            },
            admin,
            policies: policies(plane.clone()),
            ledger: ledger.clone(),
            placement: options.placement.clone(),
            admin_relay: None,
        },
        Registry::new(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(signaling::serve(listener, router, std::future::pending()));
    Started {
        addr: format!("127.0.0.1:{}", addr.port()),
        plane,
        ledger,
    }
}

/// The groups of the tests: `audio` may not publish video, `off` may not call, `strict`
/// requires end-to-end encryption and may not present, `branch` is forced to TCP in
/// rooms of 5; their changes reach `plane` as the server passes them on.
fn policies(plane: Arc<Recorder>) -> signaling::Policies {
    let groups = [
        (
            "audio".to_owned(),
            Policy {
                video: false,
                ..Policy::default()
            },
        ),
        (
            "off".to_owned(),
            Policy {
                calling: false,
                ..Policy::default()
            },
        ),
        (
            "strict".to_owned(),
            Policy {
                e2ee_required: true,
                broadcast: false,
                ..Policy::default()
            },
        ),
        (
            "branch".to_owned(),
            Policy {
                force_tcp: true,
                max_participants: Some(5),
                ..Policy::default()
            },
        ),
    ];
    signaling::Policies::new(groups.into_iter().collect())
        .unwrap()
        .with_listener(Arc::new(move |group: &str, policy: Option<&Policy>| {
            if let Some(policy) = policy {
                drop(plane.apply_policy(group, *policy));
            }
        }))
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(addr: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// The next server message, or `None` when the socket closed.
pub async fn next(ws: &mut Ws) -> Option<serde_json::Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("server answers within 5 s");
        match frame {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn expect_error(ws: &mut Ws, code: &str) {
    let msg = next(ws).await.expect("an error message");
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(msg["code"], code, "{msg}");
    assert!(msg["message"].as_str().is_some_and(|m| !m.is_empty()));
}

pub fn token(room: &str, identity: &str) -> String {
    TokenKey::new(SECRET)
        .issue(&TokenKey::claims(
            room,
            identity,
            None,
            Duration::from_secs(60),
        ))
        .unwrap()
}

/// A join that says it encrypts, as the client library's does.
pub fn join_message(identity: &str) -> String {
    format!(
        r#"{{"type":"join","token":"{}","e2ee":true}}"#,
        token("r", identity)
    )
}

/// A token for room `r` with these grants (JSON).
pub fn token_with(identity: &str, grants: serde_json::Value) -> String {
    let mut claims = TokenKey::claims("r", identity, None, Duration::from_secs(60));
    claims.grants = serde_json::from_value(grants).unwrap();
    TokenKey::new(SECRET).issue(&claims).unwrap()
}

/// Joins and reads the recorder's first event; returns the participant id.
pub async fn joined(addr: &str, plane: &Recorder) -> (Ws, ParticipantId) {
    let mut ws = connect(addr).await;
    send(&mut ws, &join_message("alice")).await;
    assert_eq!(next(&mut ws).await.unwrap()["type"], "track_unpublished");
    let id = ParticipantId(plane.events.lock().len() as u64);
    (ws, id)
}

pub async fn http_get(addr: &str, path: &str) -> String {
    http(addr, "GET", path, None).await
}

/// The whole response to `method path`, with `bearer` as its Authorization if given.
pub async fn http(addr: &str, method: &str, path: &str, bearer: Option<&str>) -> String {
    http_body(addr, method, path, bearer, None).await
}

/// The whole response to `method path`, with `bearer` as its Authorization and `json` as
/// its body (`Content-Type: application/json`) if given.
pub async fn http_body(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let kind = if json.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let body = json.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{kind}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("the server answers within 5 s")
        .unwrap();
    out
}

/// POSTs `body` as `application/sdp` to `path` with `token` as its Bearer token, over a
/// connection of its own; the whole answer, status line first.
pub async fn post_sdp(addr: &str, path: &str, token: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
