//! What the server keeps and tells of its calls: it reads the media plane's call events
//! in order, keeps a record of each finished call (the last `keep`, newest first, for
//! `GET /admin/records`), counts calls per group, and hands every event, and each policy
//! change, to whoever listens (the webhooks) as a [`Notice`].
//!
//! Records carry names, times, transports and byte counts: no media and no key material,
//! which the server never has.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounterVec, Opts, Registry};
use protocol::admin::{CallEvent, CallRecord, Event, Notice, ParticipantRecord};
use protocol::{LeaveReason, Policy};
use tokio::sync::mpsc;
use tracing::debug;

/// Who hears of each notice (the webhooks); it must not wait.
pub type NoticeSink = Arc<dyn Fn(&Notice) + Send + Sync>;

/// Call events queued between the media plane and the ledger; past it the shards drop
/// them (and count them). Ample: a shard emits a few per join, leave and publish.
pub const EVENT_QUEUE: usize = 16_384;

/// The call records and the per-group call counters, fed by call events.
pub struct Ledger {
    node: String,
    keep: usize,
    /// The calls in progress, by room, and the finished ones, newest first.
    state: Mutex<Books>,
    started: IntCounterVec,
    finished: IntCounterVec,
    sink: Option<NoticeSink>,
    /// Notice ids: this run's random prefix, then a count.
    boot: u64,
}

#[derive(Default)]
struct Books {
    open: HashMap<String, Open>,
    finished: VecDeque<CallRecord>,
    next_notice: u64,
}

/// A call in progress as the events told it.
struct Open {
    group: String,
    started_at_ms: u64,
    participants: Vec<ParticipantRecord>,
    /// Members now, and the most at once.
    present: u32,
    peak: u32,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("node", &self.node)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger for server `node` that keeps the last `keep` records and registers its
    /// counters in `registry`, by group (those of `groups` and the default group shown
    /// from the start).
    pub fn new<'a>(
        node: &str,
        keep: usize,
        registry: &Registry,
        groups: impl IntoIterator<Item = &'a String>,
        sink: Option<NoticeSink>,
    ) -> prometheus::Result<Ledger> {
        let started = IntCounterVec::new(
            Opts::new(
                "sfu_group_calls_started_total",
                "Calls started, by the group of who opened them",
            ),
            &["group"],
        )?;
        let finished = IntCounterVec::new(
            Opts::new(
                "sfu_group_calls_finished_total",
                "Calls finished, by the group of who opened them",
            ),
            &["group"],
        )?;
        let names = groups.into_iter().map(String::as_str);
        for group in names.chain([protocol::DEFAULT_GROUP]) {
            started.with_label_values(&[group]);
            finished.with_label_values(&[group]);
        }
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(finished.clone()))?;
        Ok(Ledger {
            node: node.to_owned(),
            keep,
            state: Mutex::new(Books::default()),
            started,
            finished,
            sink,
            boot: rand::random(),
        })
    }

    /// Reads call events (stamped with the wall clock's milliseconds) until every sender
    /// is gone.
    pub async fn run(self: Arc<Self>, mut events: mpsc::Receiver<(u64, CallEvent)>) {
        while let Some((at_ms, event)) = events.recv().await {
            self.record(at_ms, event);
        }
    }

    /// Takes one call event.
    pub fn record(&self, at_ms: u64, event: CallEvent) {
        let notice = {
            let mut books = self.books();
            match books.take(at_ms, event, &self.node) {
                Taken::Event(event) => Some(event),
                Taken::Finished(record) => {
                    self.finished
                        .with_label_values(&[record.group.as_str()])
                        .inc();
                    books.finished.push_front(record.clone());
                    books.finished.truncate(self.keep);
                    Some(Event::RoomFinished(record))
                }
                Taken::Nothing => None,
            }
            .map(|event| {
                if let Event::RoomStarted { group, .. } = &event {
                    self.started.with_label_values(&[group.as_str()]).inc();
                }
                books.notice(self.boot, at_ms, &self.node, event)
            })
        };
        if let (Some(notice), Some(sink)) = (notice, &self.sink) {
            sink(&notice);
        }
    }

    /// A group's policy was set (or removed): heard like a call event.
    pub fn policy_changed(&self, at_ms: u64, group: &str, policy: Option<&Policy>) {
        let event = Event::PolicyChanged {
            group: group.to_owned(),
            policy: policy.copied(),
        };
        let notice = self.books().notice(self.boot, at_ms, &self.node, event);
        if let Some(sink) = &self.sink {
            sink(&notice);
        }
    }

    /// The last `limit` finished calls, newest first; of room `room` only, if given.
    pub fn records(&self, limit: usize, room: Option<&str>) -> Vec<CallRecord> {
        self.books()
            .finished
            .iter()
            .filter(|r| room.is_none_or(|room| r.room == room))
            .take(limit)
            .cloned()
            .collect()
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        // A poisoned lock means a panic elsewhere; the books stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an event came to.
enum Taken {
    /// Tell it as it is.
    Event(Event),
    /// A call finished: its record.
    Finished(CallRecord),
    /// Nothing to tell (an event of a call it never heard start).
    Nothing,
}

impl Books {
    fn take(&mut self, at_ms: u64, event: CallEvent, node: &str) -> Taken {
        match event {
            CallEvent::RoomStarted { room, group } => {
                if let Some(stale) = self.open.remove(&room) {
                    // Its end was lost (the event queue was full): close it now.
                    debug!(room, "a call started again before its end was heard");
                    let record = stale.close(&room, at_ms, node);
                    self.finished.push_front(record);
                }
                self.open.insert(
                    room.clone(),
                    Open {
                        group: group.clone(),
                        started_at_ms: at_ms,
                        participants: Vec::new(),
                        present: 0,
                        peak: 0,
                    },
                );
                Taken::Event(Event::RoomStarted { room, group })
            }
            CallEvent::RoomFinished { room } => match self.open.remove(&room) {
                Some(open) => Taken::Finished(open.close(&room, at_ms, node)),
                None => Taken::Nothing,
            },
            CallEvent::ParticipantJoined(joined) => {
                if let Some(open) = self.open.get_mut(&joined.room) {
                    open.present += 1;
                    open.peak = open.peak.max(open.present);
                    open.participants.push(ParticipantRecord {
                        participant_id: joined.participant_id,
                        identity: joined.identity.clone(),
                        group: joined.group.clone(),
                        role: joined.role,
                        joined_at_ms: at_ms,
                        left_at_ms: 0,
                        // Until it leaves.
                        reason: LeaveReason::Left,
                        transports: Vec::new(),
                        bytes_received: 0,
                        bytes_sent: 0,
                    });
                }
                Taken::Event(Event::ParticipantJoined(joined))
            }
            CallEvent::ParticipantLeft {
                room,
                participant_id,
                identity,
                reason,
                transports,
                bytes_received,
                bytes_sent,
            } => {
                if let Some(open) = self.open.get_mut(&room) {
                    open.present = open.present.saturating_sub(1);
                    if let Some(p) = open
                        .participants
                        .iter_mut()
                        .find(|p| p.participant_id == participant_id)
                    {
                        p.left_at_ms = at_ms;
                        p.reason = reason;
                        p.transports = transports;
                        p.bytes_received = bytes_received;
                        p.bytes_sent = bytes_sent;
                    }
                }
                Taken::Event(Event::ParticipantLeft {
                    room,
                    participant_id,
                    identity,
                    reason,
                })
            }
            CallEvent::TrackPublished(track) => Taken::Event(Event::TrackPublished(track)),
            CallEvent::TrackUnpublished(track) => Taken::Event(Event::TrackUnpublished(track)),
        }
    }

    fn notice(&mut self, boot: u64, at_ms: u64, node: &str, event: Event) -> Notice {
        self.next_notice += 1;
        Notice {
            id: format!("msg_{boot:016x}{:08x}", self.next_notice),
            timestamp_ms: at_ms,
            node: node.to_owned(),
            event,
        }
    }
}

impl Open {
    fn close(self, room: &str, at_ms: u64, node: &str) -> CallRecord {
        let mut participants = self.participants;
        for p in &mut participants {
            if p.left_at_ms == 0 {
                p.left_at_ms = at_ms;
            }
        }
        CallRecord {
            room: room.to_owned(),
            group: self.group,
            node: node.to_owned(),
            started_at_ms: self.started_at_ms,
            ended_at_ms: at_ms,
            peak_participants: self.peak,
            total_participants: participants.len() as u32,
            bytes_sent: participants.iter().map(|p| p.bytes_sent).sum(),
            bytes_received: participants.iter().map(|p| p.bytes_received).sum(),
            participants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::admin::{Joined, TrackEvent, TransportKind};
    use protocol::{ParticipantId, Role, Source, TrackId};

    fn joined(room: &str, id: u64, who: &str) -> CallEvent {
        CallEvent::ParticipantJoined(Joined {
            room: room.into(),
            participant_id: ParticipantId(id),
            identity: who.into(),
            group: "default".into(),
            role: Role::Participant,
        })
    }

    fn left(room: &str, id: u64, who: &str, reason: LeaveReason, bytes: u64) -> CallEvent {
        CallEvent::ParticipantLeft {
            room: room.into(),
            participant_id: ParticipantId(id),
            identity: who.into(),
            reason,
            transports: vec![TransportKind::Udp],
            bytes_received: bytes,
            bytes_sent: 2 * bytes,
        }
    }

    #[test]
    fn a_finished_call_leaves_its_record_and_every_event_a_notice() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let heard = heard.clone();
            Arc::new(move |n: &Notice| heard.lock().unwrap().push(n.clone())) as NoticeSink
        };
        let registry = Registry::new();
        let ledger = Ledger::new(
            "node-a",
            2,
            &registry,
            ["sales".to_string()].iter(),
            Some(sink),
        )
        .unwrap();
        let room = |name: &str, group: &str| CallEvent::RoomStarted {
            room: name.into(),
            group: group.into(),
        };
        ledger.record(1000, room("r", "sales"));
        ledger.record(1000, joined("r", 1, "alice"));
        ledger.record(1100, joined("r", 2, "bob"));
        ledger.record(
            1200,
            CallEvent::TrackPublished(TrackEvent {
                room: "r".into(),
                participant_id: ParticipantId(1),
                identity: "alice".into(),
                track_id: TrackId(5),
                source: Source::Camera,
            }),
        );
        ledger.record(1500, left("r", 1, "alice", LeaveReason::Left, 10));
        ledger.record(1600, joined("r", 3, "carol"));
        ledger.record(1700, left("r", 2, "bob", LeaveReason::Removed, 20));
        ledger.record(1800, left("r", 3, "carol", LeaveReason::Network, 30));
        ledger.record(1800, CallEvent::RoomFinished { room: "r".into() });
        ledger.policy_changed(1900, "sales", None);

        let records = ledger.records(10, None);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.started_at_ms, r.ended_at_ms), (1000, 1800));
        assert_eq!((r.peak_participants, r.total_participants), (2, 3));
        assert_eq!((r.bytes_received, r.bytes_sent), (60, 120));
        assert_eq!(r.group, "sales");
        assert_eq!(r.node, "node-a");
        let bob = &r.participants[1];
        assert_eq!((bob.joined_at_ms, bob.left_at_ms), (1100, 1700));
        assert_eq!(bob.reason, LeaveReason::Removed);
        assert_eq!(bob.transports, vec![TransportKind::Udp]);

        let kinds: Vec<String> = heard
            .lock()
            .unwrap()
            .iter()
            .map(|n| {
                serde_json::to_value(n).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "room_started",
                "participant_joined",
                "participant_joined",
                "track_published",
                "participant_left",
                "participant_joined",
                "participant_left",
                "participant_left",
                "room_finished",
                "policy_changed",
            ]
        );
        let ids: std::collections::HashSet<String> =
            heard.lock().unwrap().iter().map(|n| n.id.clone()).collect();
        assert_eq!(ids.len(), 10, "notice ids are unique");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"sfu_group_calls_started_total{group="sales"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sfu_group_calls_finished_total{group="sales"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn only_the_last_records_are_kept_and_a_lost_end_closes_the_call() {
        let ledger = Ledger::new("n", 2, &Registry::new(), [].iter(), None).unwrap();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let at = 1000 * i as u64;
            ledger.record(
                at,
                CallEvent::RoomStarted {
                    room: name.into(),
                    group: "default".into(),
                },
            );
            ledger.record(at + 1, CallEvent::RoomFinished { room: name.into() });
        }
        let rooms: Vec<String> = ledger
            .records(10, None)
            .into_iter()
            .map(|r| r.room)
            .collect();
        assert_eq!(rooms, ["c", "b"]);
        assert_eq!(ledger.records(10, Some("b")).len(), 1);
        // "d" starts, its end is lost, it starts again: the first call is closed.
        ledger.record(
            5000,
            CallEvent::RoomStarted {
                room: "d".into(),
                group: "default".into(),
            },
        );
        ledger.record(5001, joined("d", 9, "zed"));
        ledger.record(
            6000,
            CallEvent::RoomStarted {
                room: "d".into(),
                group: "default".into(),
            },
        );
        let last = &ledger.records(1, None)[0];
        assert_eq!((last.room.as_str(), last.ended_at_ms), ("d", 6000));
        assert_eq!(last.participants[0].left_at_ms, 6000);
    }
}
