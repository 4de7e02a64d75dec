//! `sfu admin rooms`, `remove`, `set-group`, `drain` and the rest: a command-line client
//! of the admin API, which makes one request (two for `set-group`) over HTTP(S) and
//! prints the answer.
//!
//! ```text
//! export SFU_URL=https://sfu.example.com SFU_ADMIN_SECRET_FILE=/etc/sfu/admin-secret
//! sfu admin rooms                     # the calls in progress
//! sfu admin participants standup      # who is in one, and their tracks' ids
//! sfu admin mute standup t12          # (--unmute); or: unpublish standup t12
//! sfu admin remove standup p7         # one participant; or: end standup, everyone
//! sfu admin set-group contractors --video off --max-participants 10
//! sfu admin records --room standup --limit 5 --json
//! sfu admin drain
//! ```
//!
//! The token is `--token` (`SFU_ADMIN_TOKEN`) if given, else one made on the spot from
//! the admin secret (`--secret-file`, `--secret`, or their variables, as for
//! `sfu admin token`), valid [`TOKEN_TTL`](api::TOKEN_TTL), in the name of
//! `--identity`. Neither the secret nor the token is ever printed.
//!
//! Lists print as tables ([`print`]), actions as one sentence; `--json` prints the
//! server's answer as it is (pretty), and nothing for an action answered with none
//! (204). A refusal prints the server's message and status and exits with 1; an
//! unreachable server, the URL it could not reach. Names in paths are percent-encoded: a
//! room's name may hold `/`, spaces, anything.
//!
//! `set-group` reads the group's policy first (the default one if the group is new) and
//! puts it back with the switches given changed: another administrator's change in
//! between is overwritten.
//!
//! How requests are sent (HTTPS, `--ca-file`, timeouts): [`api`].

mod api;
mod print;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use http::{Method, StatusCode};
use protocol::Policy;
use protocol::admin::{CallRecord, ParticipantDetail, RoomDetail, RoomSummary};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::cli::AdminRequest;
use api::{Answer, Api, segment};

/// Makes the request, prints its answer.
pub fn run(request: AdminRequest) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(make(request))
}

async fn make(request: AdminRequest) -> anyhow::Result<()> {
    let api = Api::new(request.api())?;
    let json = request.api().json;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let show = |answer: Answer, human: &dyn Fn(&[u8]) -> anyhow::Result<String>| {
        let text = if json {
            pretty(&answer.body)
        } else {
            human(&answer.body)?
        };
        if !text.is_empty() {
            println!("{text}");
        }
        anyhow::Ok(())
    };
    use AdminRequest as R;
    match request {
        R::Rooms { .. } => {
            let answer = api.call(Method::GET, "/admin/rooms", None).await?;
            show(answer, &|body| {
                let Rooms { rooms } = parse(body)?;
                Ok(print::rooms(&rooms, now_ms))
            })
        }
        R::Room { room, .. } => {
            let path = format!("/admin/rooms/{}", segment(&room));
            let answer = api.call(Method::GET, &path, None).await?;
            show(answer, &|body| {
                let detail: RoomDetail = parse(body)?;
                Ok(print::room(&detail, now_ms))
            })
        }
        R::Participants { room, .. } => {
            let path = format!("/admin/rooms/{}/participants", segment(&room));
            let answer = api.call(Method::GET, &path, None).await?;
            show(answer, &|body| {
                let Participants { participants } = parse(body)?;
                Ok(print::participants(&participants))
            })
        }
        R::Remove {
            room,
            participant_id: id,
            ..
        } => {
            let path = format!("/admin/rooms/{}/participants/{}", segment(&room), id.0);
            let answer = api.call(Method::DELETE, &path, None).await?;
            show(answer, &|_| Ok(format!("removed {id} from room {room:?}")))
        }
        R::Mute {
            room,
            track_id: id,
            unmute,
            ..
        } => {
            let path = format!("/admin/rooms/{}/tracks/{}/mute", segment(&room), id.0);
            let body = serde_json::json!({ "muted": !unmute });
            let answer = api.call(Method::POST, &path, Some(body)).await?;
            let done = if unmute { "unmuted" } else { "muted" };
            show(answer, &|_| Ok(format!("{done} {id} in room {room:?}")))
        }
        R::Unpublish {
            room, track_id: id, ..
        } => {
            let path = format!("/admin/rooms/{}/tracks/{}", segment(&room), id.0);
            let answer = api.call(Method::DELETE, &path, None).await?;
            show(answer, &|_| {
                Ok(format!("unpublished {id} in room {room:?}"))
            })
        }
        R::End { room, .. } => {
            let path = format!("/admin/rooms/{}", segment(&room));
            let answer = api.call(Method::DELETE, &path, None).await?;
            show(answer, &|_| Ok(format!("ended the call in room {room:?}")))
        }
        R::Groups { .. } => {
            let answer = api.call(Method::GET, "/admin/groups", None).await?;
            show(answer, &|body| {
                let Groups { groups } = parse(body)?;
                Ok(print::groups(groups.iter()))
            })
        }
        R::Group { group, .. } => {
            let path = format!("/admin/groups/{}", segment(&group));
            let answer = api.call(Method::GET, &path, None).await?;
            show(answer, &|body| {
                let policy: Policy = parse(body)?;
                Ok(print::groups([(&group, &policy)]))
            })
        }
        R::SetGroup {
            group,
            switches,
            policy,
            ..
        } => {
            let path = format!("/admin/groups/{}", segment(&group));
            let base = match policy {
                Some(policy) => policy,
                None => {
                    let answer = api.send(Method::GET, &path, None).await?;
                    if answer.status == StatusCode::NOT_FOUND {
                        Policy::default()
                    } else {
                        parse(&api.accepted(answer)?.body)?
                    }
                }
            };
            let policy = serde_json::to_value(switches.apply(base))?;
            let answer = api.call(Method::PUT, &path, Some(policy)).await?;
            show(answer, &|body| {
                let set: PolicySet = parse(body)?;
                let how = if set.changed { "set" } else { "unchanged" };
                Ok(format!(
                    "group {:?} {how}: {}",
                    set.group,
                    print::policy(&set.policy)
                ))
            })
        }
        R::RemoveGroup { group, .. } => {
            let path = format!("/admin/groups/{}", segment(&group));
            let answer = api.call(Method::DELETE, &path, None).await?;
            show(answer, &|_| Ok(format!("removed group {group:?}")))
        }
        R::Records { room, limit, .. } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(room) = &room {
                query.push(format!("room={}", segment(room)));
            }
            let mut path = "/admin/records".to_string();
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let answer = api.call(Method::GET, &path, None).await?;
            show(answer, &|body| {
                let Records { records } = parse(body)?;
                Ok(print::records(&records, now_ms))
            })
        }
        R::Drain { .. } => {
            let answer = api.call(Method::POST, "/admin/drain", None).await?;
            show(answer, &|body| {
                let Drain { started } = parse(body)?;
                Ok(if started {
                    "draining: no new calls; the server stops once the calls end".into()
                } else {
                    "draining already".into()
                })
            })
        }
    }
}

/// The answers' shapes (see `signaling::admin`).
#[derive(Deserialize)]
struct Rooms {
    rooms: Vec<RoomSummary>,
}

#[derive(Deserialize)]
struct Participants {
    participants: Vec<ParticipantDetail>,
}

#[derive(Deserialize)]
struct Groups {
    groups: std::collections::BTreeMap<String, Policy>,
}

#[derive(Deserialize)]
struct PolicySet {
    group: String,
    policy: Policy,
    changed: bool,
}

#[derive(Deserialize)]
struct Records {
    records: Vec<CallRecord>,
}

#[derive(Deserialize)]
struct Drain {
    started: bool,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(body).context("the server's answer is not what this client reads")
}
/// A JSON answer, pretty (as it came if it is not JSON).
fn pretty(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(body).trim_end().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_print_pretty() {
        assert_eq!(pretty(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(pretty(b""), "");
        assert_eq!(pretty(b"not json\n"), "not json");
    }
}
