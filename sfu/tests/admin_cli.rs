//! `sfu admin rooms` and the other requests of the admin API's command-line client, run
//! against the real server on loopback ports found free: the lists as tables and as
//! `--json` read into protocol's types, a participant joined over the WebSocket removed,
//! a call whose name needs percent-encoding ended, one switch of a group changed alone,
//! refusals (the server's message, the status, exit code 1), usage errors (2), an
//! unreachable server, and a drain that `/readyz` reports; over https, the server's
//! certificate trusted through `--ca-file` only.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::Dir;
use common::server::*;
use protocol::Policy;
use protocol::admin::{CallRecord, ParticipantDetail, RoomDetail, RoomSummary};
use serde_json::{Value, json};

/// The rooms `sfu admin rooms --json` lists.
fn rooms(server: &Server) -> Vec<RoomSummary> {
    let mut answer: Value = admin_json(server, &["rooms"]);
    serde_json::from_value(answer["rooms"].take()).unwrap()
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
