//! The admin API over a real server on 127.0.0.1:0 with a recording media plane: every
//! route takes an admin token of the admin key and nothing else (and none at all when
//! the server has no admin key), reads nothing of a request it refuses, and passes what
//! it is asked on to the media plane, the groups' policies and the call records as
//! docs/admin.md says.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    ADMIN_SECRET, Call, Options, Recorder, SECRET, http, http_body, http_get, start, start_server,
    token,
};
use protocol::admin::{Action, CallEvent, RoomSummary};
use protocol::{ParticipantId, Policy, TrackId};
use serde_json::{Value, json};
use signaling::TokenKey;
use signaling::admin::AdminKey;
use signaling::token::unix_now;

fn admin_token(secret: &[u8], exp_offset: i64) -> String {
    let mut claims = AdminKey::claims("ops", Duration::from_secs(60));
    claims.exp = unix_now().saturating_add_signed(exp_offset);
    AdminKey::new(secret).issue(&claims).unwrap()
}

/// A response's status, head (lowercased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn of(response: &str) -> Answer {
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Answer {
            status,
            head: head.to_lowercase(),
            body: body.to_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `error` code of an error body, which also has a message.
    fn error(&self) -> String {
        let json = self.json();
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert_eq!(json.as_object().unwrap().len(), 2, "{json}");
        json["error"].as_str().unwrap().to_owned()
    }
}

/// `method path` with `bearer` and a JSON `body`.
async fn ask(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Answer {
    Answer::of(&http_body(addr, method, path, bearer, body).await)
}

/// Every route, with a request its success answers: method, path, JSON body, status.
/// Room `r` is a call in progress; group `off` is the harness's.
const ROUTES: [(&str, &str, Option<&str>, u16); 13] = [
    ("GET", "/admin/rooms", None, 200),
    ("GET", "/admin/rooms/r", None, 200),
    ("GET", "/admin/rooms/r/participants", None, 200),
    ("DELETE", "/admin/rooms/r/participants/7", None, 204),
    ("DELETE", "/admin/rooms/r/tracks/3", None, 204),
    (
        "POST",
        "/admin/rooms/r/tracks/3/mute",
        Some(r#"{"muted":true}"#),
        204,
    ),
    ("DELETE", "/admin/rooms/r", None, 204),
    ("GET", "/admin/records", None, 200),
    ("GET", "/admin/groups", None, 200),
    ("GET", "/admin/groups/audio", None, 200),
    ("PUT", "/admin/groups/new", Some(r#"{"video":false}"#), 200),
    ("DELETE", "/admin/groups/off", None, 204),
    ("POST", "/admin/drain", None, 202),
];

/// A call in progress in room `name`, as the recorder shows it to the admin API.
fn call(plane: &Recorder, name: &str) {
    plane.rooms.lock().push(RoomSummary {
        room: name.to_owned(),
        group: "default".into(),
        node: "test".into(),
        started_at_ms: 1_700_000_000_000,
        participants: 2,
        viewers: 0,
        tracks: 1,
    });
}

/// What the admin API asked of the media plane (actions and policies), in order.
fn asked(plane: &Recorder) -> Vec<Call> {
    plane
        .calls
        .lock()
        .iter()
        .filter(|c| matches!(c, Call::Act(..) | Call::Policy(..)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_route_takes_an_admin_token_and_nothing_else() {
    let server = start_server(Options::default()).await;
    let (addr, plane) = (server.addr.as_str(), &server.plane);
    call(plane, "r");
    let join_with_admin_key = TokenKey::new(ADMIN_SECRET)
        .issue(&TokenKey::claims("r", "a", None, Duration::from_secs(60)))
        .unwrap();
    let refused = [
        ("no token", None),
        (
            "an expired admin token",
            Some(admin_token(ADMIN_SECRET, -1)),
        ),
        ("a join token", Some(token("r", "alice"))),
        (
            "a join token signed with the admin key",
            Some(join_with_admin_key),
        ),
        (
            "an admin token of the join key",
            Some(admin_token(SECRET, 60)),
        ),
        ("garbage", Some("x.y.z".into())),
    ];
    for (method, path, body, _) in ROUTES {
        for (what, bearer) in &refused {
            let answer = ask(addr, method, path, bearer.as_deref(), body).await;
            assert_eq!(
                answer.status, 401,
                "{method} {path}, {what}: {}",
                answer.body
            );
            assert!(
                answer.head.contains("\r\nwww-authenticate: bearer"),
                "{method} {path}, {what}: {}",
                answer.head
            );
            assert!(answer.head.contains("content-type: application/json"));
            assert_eq!(answer.error(), "unauthorized", "{method} {path}, {what}");
        }
    }
    // Refused before anything else of the request is read: its path, query or body.
    for (method, path, body) in [
        ("DELETE", "/admin/rooms/r/participants/abc", None),
        ("GET", "/admin/records?limit=x", None),
        ("PUT", "/admin/groups/a%20b", Some(r#"{"vidoe":false}"#)),
        ("POST", "/admin/rooms/r/tracks/3/mute", Some("{")),
    ] {
        let answer = ask(addr, method, path, None, body).await;
        assert_eq!(answer.status, 401, "{method} {path}: {}", answer.body);
    }
    assert!(
        asked(plane).is_empty(),
        "nothing refused reached the media plane"
    );
    assert!(!plane.draining.load(Ordering::Relaxed));

    let good = admin_token(ADMIN_SECRET, 60);
    for (method, path, body, status) in ROUTES {
        let answer = ask(addr, method, path, Some(&good), body).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        if status == 204 {
            assert_eq!(answer.body, "", "{method} {path}");
        } else {
            assert!(answer.head.contains("content-type: application/json"));
            assert!(
                answer.json().is_object(),
                "{method} {path}: {}",
                answer.body
            );
        }
    }
    assert!(plane.draining.load(Ordering::Relaxed));
    // And what names nothing answers 404, JSON too.
    for (method, path, body) in [
        ("GET", "/admin/rooms/nope", None),
        ("GET", "/admin/rooms/nope/participants", None),
        ("DELETE", "/admin/rooms/nope", None),
        ("DELETE", "/admin/rooms/nope/participants/7", None),
        ("DELETE", "/admin/rooms/nope/tracks/3", None),
        (
            "POST",
            "/admin/rooms/nope/tracks/3/mute",
            Some(r#"{"muted":false}"#),
        ),
        ("GET", "/admin/groups/nope", None),
        ("DELETE", "/admin/groups/nope", None),
    ] {
        let answer = ask(addr, method, path, Some(&good), body).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
        assert_eq!(answer.error(), "not_found", "{method} {path}");
    }
    // No such route, or not its method: told in the API's shape, token or not.
    for bearer in [None, Some(good.as_str())] {
        let answer = ask(addr, "GET", "/admin/room", bearer, None).await;
        assert_eq!(answer.status, 404, "{}", answer.body);
        assert_eq!(answer.error(), "not_found");
        let answer = ask(addr, "PATCH", "/admin/groups/audio", bearer, None).await;
        assert_eq!(answer.status, 405, "{}", answer.body);
        assert_eq!(answer.error(), "method_not_allowed");
        assert!(
            answer.head.contains("\r\nallow: get,head,put,delete"),
            "{}",
            answer.head
        );
    }
}

#[tokio::test]
async fn with_no_admin_key_every_route_is_off() {
    let server = start_server(Options {
        admin_off: true,
        ..Options::default()
    })
    .await;
    call(&server.plane, "r");
    let good = admin_token(ADMIN_SECRET, 60);
    for (method, path, body, _) in ROUTES {
        for bearer in [None, Some(good.as_str())] {
            let answer = ask(&server.addr, method, path, bearer, body).await;
            assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
            assert_eq!(answer.error(), "admin_api_off", "{method} {path}");
            assert!(
                answer.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("--admin-secret-file")
            );
        }
    }
    assert!(asked(&server.plane).is_empty());
    assert!(!server.plane.draining.load(Ordering::Relaxed));
}

#[tokio::test]
async fn actions_reach_the_media_plane_as_asked() {
    let (addr, plane) = start(false).await;
    call(&plane, "r");
    call(&plane, "a/b c");
    call(&plane, "b");
    let good = admin_token(ADMIN_SECRET, 60);
    let ask = |method: &'static str, path: &'static str, body: Option<&'static str>| {
        let (addr, good) = (addr.clone(), good.clone());
        async move { ask(&addr, method, path, Some(&good), body).await }
    };

    // Listed by name; a name percent-encoded in the path.
    let rooms = ask("GET", "/admin/rooms", None).await.json();
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a/b c", "b", "r"]);
    assert_eq!(rooms["rooms"][2]["participants"], 2);
    let detail = ask("GET", "/admin/rooms/a%2Fb%20c", None).await.json();
    assert_eq!(detail["room"], "a/b c");
    assert_eq!(detail["started_at_ms"], 1_700_000_000_000_u64);
    assert_eq!(detail["members"], json!([]));
    let members = ask("GET", "/admin/rooms/r/participants", None).await.json();
    assert_eq!(members, json!({ "participants": [] }));

    assert_eq!(
        ask("DELETE", "/admin/rooms/r/participants/7", None)
            .await
            .status,
        204
    );
    assert_eq!(
        ask("DELETE", "/admin/rooms/r/tracks/3", None).await.status,
        204
    );
    let mute = ask(
        "POST",
        "/admin/rooms/r/tracks/18446744073709551615/mute",
        Some(r#"{"muted":true}"#),
    );
    assert_eq!(mute.await.status, 204);
    let unmute = ask(
        "POST",
        "/admin/rooms/b/tracks/3/mute",
        Some(r#"{"muted":false}"#),
    );
    assert_eq!(unmute.await.status, 204);
    assert_eq!(
        ask("DELETE", "/admin/rooms/a%2Fb%20c", None).await.status,
        204
    );
    assert_eq!(
        asked(&plane),
        [
            Call::Act("r".into(), Action::Remove(ParticipantId(7))),
            Call::Act("r".into(), Action::Unpublish(TrackId(3))),
            Call::Act(
                "r".into(),
                Action::Mute {
                    track_id: TrackId(u64::MAX),
                    muted: true
                }
            ),
            Call::Act(
                "b".into(),
                Action::Mute {
                    track_id: TrackId(3),
                    muted: false
                }
            ),
            Call::Act("a/b c".into(), Action::End),
        ]
    );

    // What does not read is refused before the media plane hears of it.
    plane.calls.lock().clear();
    for (method, path, body, status) in [
        // Not an unsigned 64-bit id.
        ("DELETE", "/admin/rooms/r/participants/abc", None, 400),
        ("DELETE", "/admin/rooms/r/participants/-1", None, 400),
        (
            "DELETE",
            "/admin/rooms/r/tracks/18446744073709551616",
            None,
            400,
        ),
        // Not UTF-8 once decoded.
        ("GET", "/admin/rooms/%FF", None, 400),
        // A body that is not JSON, or JSON of another shape.
        (
            "POST",
            "/admin/rooms/r/tracks/3/mute",
            Some(r#"{"muted":"#),
            400,
        ),
        (
            "POST",
            "/admin/rooms/r/tracks/3/mute",
            Some(r#"{"muted":1}"#),
            422,
        ),
        (
            "POST",
            "/admin/rooms/r/tracks/3/mute",
            Some(r#"{"muted":true,"x":1}"#),
            422,
        ),
        ("POST", "/admin/rooms/r/tracks/3/mute", Some("{}"), 422),
        // No body, so no `Content-Type: application/json`.
        ("POST", "/admin/rooms/r/tracks/3/mute", None, 415),
    ] {
        let answer = ask(method, path, body).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body:?}: {}",
            answer.body
        );
        assert_eq!(answer.error(), "bad_request", "{method} {path} {body:?}");
    }
    assert!(asked(&plane).is_empty());
}

#[tokio::test]
async fn groups_policies_are_read_and_changed() {
    let (addr, plane) = start(false).await;
    let good = admin_token(ADMIN_SECRET, 60);
    let ask = |method: &'static str, path: &'static str, body: Option<&'static str>| {
        let (addr, good) = (addr.clone(), good.clone());
        async move { ask(&addr, method, path, Some(&good), body).await }
    };

    let groups = ask("GET", "/admin/groups", None).await.json();
    let names: Vec<&String> = groups["groups"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["audio", "branch", "default", "off", "strict"]);
    assert_eq!(groups["groups"]["off"]["calling"], false);
    let audio = ask("GET", "/admin/groups/audio", None).await.json();
    assert_eq!(
        audio,
        json!({"calling": true, "video": false, "screen_share": true, "broadcast": true,
               "force_tcp": false, "e2ee_required": false})
    );

    // A new group: set, told to the media plane, and read back.
    let set = ask(
        "PUT",
        "/admin/groups/tcp",
        Some(r#"{"force_tcp":true,"max_participants":5}"#),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let tcp = Policy {
        force_tcp: true,
        max_participants: Some(5),
        ..Policy::default()
    };
    assert_eq!(
        set.json(),
        json!({"group": "tcp", "policy": tcp, "changed": true})
    );
    assert_eq!(asked(&plane), [Call::Policy("tcp".into(), tcp)]);
    assert_eq!(
        ask("GET", "/admin/groups/tcp", None).await.json(),
        serde_json::to_value(tcp).unwrap()
    );
    // The same again changes nothing, and the media plane hears nothing.
    let again = ask(
        "PUT",
        "/admin/groups/tcp",
        Some(r#"{"max_participants":5,"force_tcp":true}"#),
    )
    .await;
    assert_eq!(again.json()["changed"], false);
    assert_eq!(asked(&plane).len(), 1);

    // Refused: an unknown key, no room, a bad name, the default group removed.
    for (method, path, body, status, code) in [
        (
            "PUT",
            "/admin/groups/tcp",
            Some(r#"{"vidoe":false}"#),
            422,
            "bad_request",
        ),
        (
            "PUT",
            "/admin/groups/tcp",
            Some(r#"{"video":"no"}"#),
            422,
            "bad_request",
        ),
        (
            "PUT",
            "/admin/groups/tcp",
            Some(r#"{"max_participants":0}"#),
            400,
            "bad_request",
        ),
        ("PUT", "/admin/groups/tcp", Some("{"), 400, "bad_request"),
        // An array is not a policy (serde would read one field by field).
        (
            "PUT",
            "/admin/groups/tcp",
            Some("[false, false]"),
            422,
            "bad_request",
        ),
        ("PUT", "/admin/groups/tcp", Some("[]"), 422, "bad_request"),
        ("PUT", "/admin/groups/..", Some("{}"), 400, "bad_request"),
        ("PUT", "/admin/groups/tcp", None, 415, "bad_request"),
        ("PUT", "/admin/groups/a%20b", Some("{}"), 400, "bad_request"),
        ("PUT", "/admin/groups/a%2Fb", Some("{}"), 400, "bad_request"),
        ("GET", "/admin/groups/a%20b", None, 400, "bad_request"),
        ("DELETE", "/admin/groups/a%20b", None, 400, "bad_request"),
        ("DELETE", "/admin/groups/default", None, 409, "conflict"),
    ] {
        let answer = ask(method, path, body).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body:?}: {}",
            answer.body
        );
        assert_eq!(answer.error(), code, "{method} {path} {body:?}");
    }
    assert_eq!(asked(&plane).len(), 1, "nothing refused was passed on");
    assert_eq!(
        ask("GET", "/admin/groups/tcp", None).await.json(),
        serde_json::to_value(tcp).unwrap(),
        "the refused changes changed nothing"
    );
    assert_eq!(ask("GET", "/admin/groups/default", None).await.status, 200);

    // Removed: gone, and a second removal finds nothing.
    assert_eq!(ask("DELETE", "/admin/groups/tcp", None).await.status, 204);
    assert_eq!(ask("GET", "/admin/groups/tcp", None).await.status, 404);
    assert_eq!(ask("DELETE", "/admin/groups/tcp", None).await.status, 404);
}

#[tokio::test]
async fn records_are_listed_newest_first() {
    let server = start_server(Options::default()).await;
    for (at_ms, room) in [(1000, "a"), (2000, "b"), (3000, "a")] {
        server.ledger.record(
            at_ms,
            CallEvent::RoomStarted {
                room: room.into(),
                group: "audio".into(),
            },
        );
        server
            .ledger
            .record(at_ms + 500, CallEvent::RoomFinished { room: room.into() });
    }
    let good = admin_token(ADMIN_SECRET, 60);
    let records = |path: &'static str| {
        let (addr, good) = (server.addr.clone(), good.clone());
        async move {
            let answer = ask(&addr, "GET", path, Some(&good), None).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            let json = answer.json();
            json["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["room"].as_str().unwrap().to_owned(),
                        r["started_at_ms"].as_u64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let all = records("/admin/records").await;
    assert_eq!(
        all,
        [
            ("a".to_owned(), 3000),
            ("b".to_owned(), 2000),
            ("a".to_owned(), 1000)
        ]
    );
    assert_eq!(
        records("/admin/records?limit=1").await,
        [("a".to_owned(), 3000)]
    );
    assert!(records("/admin/records?limit=0").await.is_empty());
    assert_eq!(
        records("/admin/records?room=a&limit=5").await,
        [("a".to_owned(), 3000), ("a".to_owned(), 1000)]
    );
    assert!(records("/admin/records?room=nope").await.is_empty());
    let one = ask(
        &server.addr,
        "GET",
        "/admin/records?room=b",
        Some(&good),
        None,
    )
    .await
    .json();
    assert_eq!(
        one["records"][0],
        json!({"room": "b", "group": "audio", "node": "test", "started_at_ms": 2000,
               "ended_at_ms": 2500, "peak_participants": 0, "total_participants": 0,
               "bytes_sent": 0, "bytes_received": 0, "participants": []})
    );
    for path in [
        "/admin/records?limit=x",
        "/admin/records?limit=-1",
        "/admin/records?romo=a",
    ] {
        let answer = ask(&server.addr, "GET", path, Some(&good), None).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert_eq!(answer.error(), "bad_request", "{path}");
    }
}

#[tokio::test]
async fn drain_takes_an_admin_token_and_nothing_else() {
    let (addr, plane) = start(false).await;
    let post = |bearer: Option<String>| {
        let addr = addr.clone();
        async move { http(&addr, "POST", "/admin/drain", bearer.as_deref()).await }
    };
    assert!(http_get(&addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(
        http_get(&addr, "/admin/drain")
            .await
            .starts_with("HTTP/1.1 405")
    );

    let good = admin_token(ADMIN_SECRET, 60);
    let response = post(Some(good.clone())).await;
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    assert!(
        response.ends_with(r#"{"draining":true,"started":true}"#),
        "{response}"
    );
    assert!(plane.draining.load(Ordering::Relaxed));
    let ready = http_get(&addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.ends_with("draining\n"),
        "{ready}"
    );
    // Asked again: under way already.
    let response = post(Some(good)).await;
    assert!(
        response.ends_with(r#"{"draining":true,"started":false}"#),
        "{response}"
    );
}
