//! The test-only tap (`sfu --tap FILE`): one JSON line per RTP packet received from a
//! publisher, payload included, so that an end-to-end test can show what the server
//! forwards (for example, that it carries SFrame ciphertext and none of the senders'
//! plaintext). Never for production: it writes media to disk. Bounded: it stops after
//! [`TAP_LINES`] lines and logs that it did.

use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use protocol::Kind;
use sfu_core::shard::TapRecord;
use tracing::warn;

/// Most lines a tap writes; it records nothing after them.
pub const TAP_LINES: u64 = 200_000;

/// A tap file, shared by the shards: each line written whole, under a lock (a test-only
/// cost, paid only with `--tap`).
pub struct Tap {
    file: Mutex<LineWriter<File>>,
    /// Lines claimed so far (at most `cap` are written).
    lines: AtomicU64,
    cap: u64,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("lines", &self.lines.load(Ordering::Relaxed))
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Tap {
    /// Opens `path` for appending (creating it), to write at most `cap` lines.
    pub fn create(path: &Path, cap: u64) -> std::io::Result<Tap> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Tap {
            file: Mutex::new(LineWriter::new(file)),
            lines: AtomicU64::new(0),
            cap,
        })
    }

    /// Writes one packet's line, unless the cap was reached.
    pub fn record(&self, record: &TapRecord) {
        let n = self.lines.fetch_add(1, Ordering::Relaxed);
        if n >= self.cap {
            if n == self.cap {
                warn!(lines = self.cap, "tap: full, recording no more packets");
            }
            return;
        }
        let line = line(record);
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        if let Err(e) = file.write_all(line.as_bytes()) {
            warn!("tap: cannot write: {e}");
        }
    }
}

/// A record's JSON line, newline included.
pub fn line(r: &TapRecord) -> String {
    let mut line = serde_json::json!({
        "track_id": r.track_id.0,
        "participant_id": r.participant_id.0,
        "kind": match r.kind {
            Kind::Audio => "audio",
            Kind::Video => "video",
        },
        "codec": r.codec.map(|c| c.to_string()),
        "ssrc": *r.ssrc,
        "seq": r.seq,
        "ts": r.ts,
        "marker": r.marker,
        "rid": r.rid.as_ref().map(|rid| rid.to_string()),
        "payload": STANDARD.encode(&r.payload),
    })
    .to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use std::sync::Arc;

    use protocol::{ParticipantId, TrackId};
    use str0m::format::Codec;
    use str0m::media::Rid;
    use str0m::rtp::Ssrc;

    use super::*;

    fn record(seq: u16, rid: Option<&str>) -> TapRecord {
        TapRecord {
            track_id: TrackId(7),
            participant_id: ParticipantId(11),
            kind: Kind::Video,
            codec: Some(Codec::H264),
            ssrc: Ssrc::from(0x1234_5678),
            seq,
            ts: 90_000,
            marker: true,
            rid: rid.map(Rid::from),
            payload: Arc::from(&[0x90, 0x80, 0x00, 0xff][..]),
        }
    }

    #[test]
    fn a_line_has_the_documented_fields() {
        let line = line(&record(65_535, Some("q")));
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"track_id": 7, "participant_id": 11, "kind": "video",
                "codec": "H264", "ssrc": 0x1234_5678, "seq": 65_535, "ts": 90_000, "marker": true,
                "rid": "q", "payload": "kIAA/w=="})
        );
        let single: serde_json::Value =
            serde_json::from_str(&super::line(&record(1, None))).unwrap();
        assert_eq!(single["rid"], serde_json::Value::Null);
    }

    #[test]
    fn the_tap_stops_at_its_cap() {
        let path = std::env::temp_dir().join(format!(
            "sfu-tap-test-{}-{:x}.jsonl",
            std::process::id(),
            rand::random::<u64>()
        ));
        let tap = Tap::create(&path, 3).unwrap();
        for seq in 0..10 {
            tap.record(&record(seq, None));
        }
        drop(tap);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
    }
}
