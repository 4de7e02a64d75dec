//! How `sfu admin` prints the admin API's answers for people: compact tables of calls,
//! participants, groups and records, with ages, sizes and ids as they are typed back
//! (`p7`, `t12`).
//!
//! What users named (rooms, identities, groups) is printed with its control and
//! invisible characters escaped: a name cannot move the cursor, recolour the terminal or
//! fake a row.

use protocol::Policy;
use protocol::admin::{CallRecord, ParticipantDetail, Quality, RoomDetail, RoomSummary};
use serde::Serialize;

/// The calls in progress, one row each.
pub fn rooms(rooms: &[RoomSummary], now_ms: u64) -> String {
    if rooms.is_empty() {
        return "no call in progress".into();
    }
    let mut table = Table::new([
        "ROOM",
        "GROUP",
        "PARTICIPANTS",
        "VIEWERS",
        "TRACKS",
        "STARTED",
    ]);
    for r in rooms {
        table.row([
            cell(&r.room),
            cell(&r.group),
            r.participants.to_string(),
            r.viewers.to_string(),
            r.tracks.to_string(),
            ago(now_ms, r.started_at_ms),
        ]);
    }
    table.render()
}

/// A call: a line about it, then its members.
pub fn room(detail: &RoomDetail, now_ms: u64) -> String {
    let r = &detail.summary;
    format!(
        "room \"{}\": group {}, node {}, started {}; participants {}, viewers {}, tracks {}\n{}",
        cell(&r.room),
        cell(&r.group),
        cell(&r.node),
        ago(now_ms, r.started_at_ms),
        r.participants,
        r.viewers,
        r.tracks,
        participants(&detail.members)
    )
}

/// A call's members, one row each, with their tracks.
pub fn participants(members: &[ParticipantDetail]) -> String {
    if members.is_empty() {
        return "no participant".into();
    }
    let mut table = Table::new([
        "ID",
        "IDENTITY",
        "GROUP",
        "ROLE",
        "TRANSPORT",
        "QUALITY",
        "TRACKS",
    ]);
    for p in members {
        let tracks: Vec<String> = p
            .tracks
            .iter()
            .map(|t| {
                let muted = if t.muted { " (muted)" } else { "" };
                format!("{} {}{muted}", t.track_id, word(&t.source))
            })
            .collect();
        table.row([
            p.participant_id.to_string(),
            cell(&p.identity),
            cell(&p.group),
            word(&p.role),
            p.transport.as_ref().map_or_else(|| "-".into(), word),
            quality(&p.quality),
            if tracks.is_empty() {
                "-".into()
            } else {
                tracks.join(", ")
            },
        ]);
    }
    table.render()
}

/// Groups and their policies, one row each.
pub fn groups<'a>(groups: impl IntoIterator<Item = (&'a String, &'a Policy)>) -> String {
    let mut table = Table::new([
        "GROUP",
        "CALLING",
        "VIDEO",
        "SCREEN-SHARE",
        "BROADCAST",
        "FORCE-TCP",
        "E2EE-REQUIRED",
        "MAX-PARTICIPANTS",
    ]);
    for (name, p) in groups {
        table.row([
            cell(name),
            switch(p.calling),
            switch(p.video),
            switch(p.screen_share),
            switch(p.broadcast),
            switch(p.force_tcp),
            switch(p.e2ee_required),
            limit(p.max_participants),
        ]);
    }
    table.render()
}

/// A policy in one line, as `set-group`'s flags name its switches.
pub fn policy(p: &Policy) -> String {
    format!(
        "calling {}, video {}, screen-share {}, broadcast {}, force-tcp {}, e2ee-required {}, \
         max-participants {}",
        switch(p.calling),
        switch(p.video),
        switch(p.screen_share),
        switch(p.broadcast),
        switch(p.force_tcp),
        switch(p.e2ee_required),
        limit(p.max_participants)
    )
}

/// Finished calls, one row each.
pub fn records(records: &[CallRecord], now_ms: u64) -> String {
    if records.is_empty() {
        return "no finished call recorded".into();
    }
    let mut table = Table::new([
        "ROOM", "GROUP", "ENDED", "LASTED", "PEAK", "JOINS", "SENT", "RECEIVED",
    ]);
    for r in records {
        table.row([
            cell(&r.room),
            cell(&r.group),
            ago(now_ms, r.ended_at_ms),
            span(r.ended_at_ms.saturating_sub(r.started_at_ms)),
            r.peak_participants.to_string(),
            r.total_participants.to_string(),
            size(r.bytes_sent),
            size(r.bytes_received),
        ]);
    }
    table.render()
}

/// `text` with its control and invisible characters (and only those) escaped, as Rust's
/// `escape_debug` has them (combining marks kept).
pub fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // (After another character, as `str::escape_debug` sees all but the first.)
        let probe = format!("a{c}");
        if matches!(c, '"' | '\'' | '\\') || probe.escape_debug().to_string() == probe {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

/// Rows of cells under a header, each column as wide as its widest cell.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new<const N: usize>(header: [&str; N]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    fn render(&self) -> String {
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                let width = |row: &Vec<String>| row.get(i).map_or(0, |c| c.chars().count());
                self.rows.iter().map(width).max().unwrap_or(0)
            })
            .collect();
        let lines: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    if i + 1 == row.len() {
                        line.push_str(cell);
                    } else {
                        let pad = widths[i] - cell.chars().count();
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad + 2));
                    }
                }
                line
            })
            .collect();
        lines.join("\n")
    }
}

/// The word serde gives a unit variant (`presenter`, `udp`, `camera`).
fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn quality(q: &Quality) -> String {
    let mut out = word(&q.rating);
    if let Some(rtt) = q.rtt_ms {
        out.push_str(&format!(" {rtt}ms"));
    }
    if let Some(loss) = q.loss {
        out.push_str(&format!(" {:.1}%", loss * 100.0));
    }
    out
}

fn switch(on: bool) -> String {
    if on { "on" } else { "off" }.into()
}

fn limit(max: Option<u32>) -> String {
    max.map_or_else(|| "none".into(), |n| n.to_string())
}

/// How long before `now_ms` `then_ms` was: `42s ago`, `5m12s ago`, `2h05m ago`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    format!("{} ago", span(now_ms.saturating_sub(then_ms)))
}

/// A time span to the second, its two largest units.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A number of bytes, in decimal units.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use protocol::admin::{Rating, TransportKind};
    use protocol::server::TrackInfo;
    use protocol::{Kind, ParticipantId, Role, Source, TrackId};

    use super::*;

    #[test]
    fn columns_line_up_and_names_cannot_escape() {
        let rooms = [
            RoomSummary {
                room: "team/α β".into(),
                group: "default".into(),
                node: "n".into(),
                started_at_ms: 1_000,
                participants: 12,
                viewers: 0,
                tracks: 3,
            },
            RoomSummary {
                room: "x\u{1b}[2J\n".into(),
                group: "sales".into(),
                node: "n".into(),
                started_at_ms: 0,
                participants: 1,
                viewers: 40,
                tracks: 0,
            },
        ];
        let text = super::rooms(&rooms, 3_725_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "ROOM          GROUP    PARTICIPANTS  VIEWERS  TRACKS  STARTED"
        );
        assert_eq!(
            lines[1],
            "team/α β      default  12            0        3       1h02m ago"
        );
        assert_eq!(
            lines[2],
            "x\\u{1b}[2J\\n  sales    1             40       0       1h02m ago"
        );
        assert_eq!(super::rooms(&[], 0), "no call in progress");
        assert_eq!(cell("a\u{202e}b \"ü\""), "a\\u{202e}b \"ü\"");
        assert_eq!(cell("e\u{301}\t"), "e\u{301}\\t");
    }

    #[test]
    fn participants_show_the_ids_to_type_back() {
        let alice = ParticipantDetail {
            participant_id: ParticipantId(7),
            identity: "alice".into(),
            name: "Alice".into(),
            group: "default".into(),
            role: Role::Presenter,
            joined_at_ms: 0,
            transport: Some(TransportKind::Udp),
            tracks: vec![
                TrackInfo {
                    track_id: TrackId(12),
                    participant_id: ParticipantId(7),
                    kind: Kind::Audio,
                    source: Source::Microphone,
                    muted: true,
                    layers: vec![],
                },
                TrackInfo {
                    track_id: TrackId(13),
                    participant_id: ParticipantId(7),
                    kind: Kind::Video,
                    source: Source::Camera,
                    muted: false,
                    layers: vec![],
                },
            ],
            quality: Quality {
                rating: Rating::Good,
                rtt_ms: Some(40),
                loss: Some(0.005),
                estimate_bps: None,
            },
        };
        let text = super::participants(&[alice]);
        let row = text.lines().nth(1).unwrap();
        assert_eq!(
            row,
            "p7  alice     default  presenter  udp        good 40ms 0.5%  \
             t12 microphone (muted), t13 camera"
        );
    }

    #[test]
    fn policies_read_as_the_flags_that_set_them() {
        let p = Policy {
            video: false,
            max_participants: Some(10),
            ..Policy::default()
        };
        assert_eq!(
            policy(&p),
            "calling on, video off, screen-share on, broadcast on, force-tcp off, \
             e2ee-required off, max-participants 10"
        );
        let name = "sales".to_string();
        let text = groups([(&name, &p)]);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "sales  on       off    on            on         off        off            10"
        );
    }

    #[test]
    fn spans_and_sizes_are_short() {
        assert_eq!(span(999), "0s");
        assert_eq!(span(42_000), "42s");
        assert_eq!(span(312_000), "5m12s");
        assert_eq!(span(7_500_000), "2h05m");
        assert_eq!(span(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(ago(10_000, 20_000), "0s ago");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_234), "1.2 kB");
        assert_eq!(size(3_400_000_000), "3.4 GB");
        assert_eq!(size(u64::MAX), "18446744.1 TB");
    }
}
