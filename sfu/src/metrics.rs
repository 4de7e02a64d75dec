//! The media plane's Prometheus metrics, fed by each shard from its plain counters; its
//! histograms and CPU time are in [`timings`](crate::timings) and [`cpu`](crate::cpu).

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use sfu_core::adaptation::{Cause, Frozen};
use sfu_core::forwarder::DropReason;
use sfu_core::shard::{Counters, RelayDrop};

use crate::cpu::ProcessCpu;
use crate::timings::{ShardTimings, Timings};

/// Every media-plane metric, shared by the shards (each updates only its own labels).
#[derive(Clone)]
pub struct Metrics {
    rooms: IntGaugeVec,
    participants: IntGaugeVec,
    tracks: IntGaugeVec,
    rx_packets: IntCounter,
    rx_bytes: IntCounter,
    tx_packets: IntCounter,
    gso_messages: IntCounter,
    gso_datagrams: IntCounter,
    tx_bytes: IntCounter,
    forwarded: IntCounter,
    calls: IntCounter,
    keyframe_requests: IntCounter,
    layer_switches: IntCounter,
    thinned: IntCounter,
    layer_choices: IntCounterVec,
    video_frozen: IntCounterVec,
    dd_read: IntCounter,
    dd_unreadable: IntCounter,
    drops: IntCounterVec,
    tcp_rx_packets: IntCounter,
    tcp_rx_bytes: IntCounter,
    tcp_tx_packets: IntCounter,
    tcp_tx_bytes: IntCounter,
    tcp_connections: IntGaugeVec,
    entries: IntGaugeVec,
    tcp_refused: IntCounterVec,
    e2ee_relays: IntCounter,
    e2ee_relays_dropped: IntCounterVec,
    /// Call events (for records and webhooks) a shard could not queue.
    call_events_dropped: IntCounter,
    /// Join delays, shard turns, shard CPU time.
    timings: Timings,
}

/// Why an ICE-TCP connection was closed before a shard took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRefusal {
    /// Too many connections were waiting for their first STUN request.
    Busy,
    /// No complete first frame in time.
    Timeout,
    /// The first frame was not a STUN binding request with a USERNAME.
    NotStun,
    /// The USERNAME names no participant on its port (unknown, expired, bad integrity,
    /// or its participant has all the remote addresses it may have).
    Unclaimed,
    /// The shard's command queue was full.
    ShardBusy,
}

impl TcpRefusal {
    pub const ALL: [TcpRefusal; 5] = [
        TcpRefusal::Busy,
        TcpRefusal::Timeout,
        TcpRefusal::NotStun,
        TcpRefusal::Unclaimed,
        TcpRefusal::ShardBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TcpRefusal::Busy => "busy",
            TcpRefusal::Timeout => "timeout",
            TcpRefusal::NotStun => "not_stun",
            TcpRefusal::Unclaimed => "unclaimed",
            TcpRefusal::ShardBusy => "shard_busy",
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["shard"]);
        let m = Metrics {
            rooms: gauge("sfu_rooms", "Rooms (calls) in progress")?,
            participants: gauge("sfu_participants", "Participants in calls")?,
            tracks: gauge("sfu_published_tracks", "Tracks being published")?,
            rx_packets: IntCounter::new("sfu_udp_rx_packets_total", "UDP datagrams received")?,
            rx_bytes: IntCounter::new("sfu_udp_rx_bytes_total", "UDP bytes received")?,
            tx_packets: IntCounter::new("sfu_udp_tx_packets_total", "UDP datagrams sent")?,
            tx_bytes: IntCounter::new("sfu_udp_tx_bytes_total", "UDP bytes sent")?,
            gso_messages: IntCounter::new(
                "sfu_udp_gso_messages_total",
                "Segmented UDP sends (GSO): datagrams to one peer sent as one message",
            )?,
            gso_datagrams: IntCounter::new(
                "sfu_udp_gso_datagrams_total",
                "UDP datagrams sent inside segmented messages (GSO)",
            )?,
            forwarded: IntCounter::new(
                "sfu_rtp_forwarded_total",
                "RTP packets forwarded to a subscriber",
            )?,
            calls: IntCounter::new("sfu_calls_started_total", "Calls started (rooms opened)")?,
            keyframe_requests: IntCounter::new(
                "sfu_keyframe_requests_total",
                "Keyframe requests (PLI) sent to publishers",
            )?,
            layer_switches: IntCounter::new(
                "sfu_layer_switches_total",
                "Subscriptions switched to another simulcast or SVC layer, or resumed",
            )?,
            thinned: IntCounter::new(
                "sfu_thinned_packets_total",
                "Packets of temporal layers left out of a subscriber's stream: its link \
                 carries its floor video's lowest layer only at a lower frame rate",
            )?,
            layer_choices: IntCounterVec::new(
                Opts::new(
                    "sfu_layer_choices_total",
                    "Changes of the layer chosen for a subscription, by cause",
                ),
                &["cause"],
            )?,
            video_frozen: IntCounterVec::new(
                Opts::new(
                    "sfu_video_frozen_ms_total",
                    "Milliseconds videos shown to a subscriber delivered no picture, by reason",
                ),
                &["reason"],
            )?,
            dd_read: IntCounter::new(
                "sfu_dependency_descriptors_read_total",
                "Video packets placed in their layers by their dependency descriptor",
            )?,
            dd_unreadable: IntCounter::new(
                "sfu_dependency_descriptors_unreadable_total",
                "Dependency descriptors that could not be read (the payload was used instead)",
            )?,
            drops: IntCounterVec::new(
                Opts::new("sfu_dropped_total", "Packets not forwarded, by reason"),
                &["reason"],
            )?,
            tcp_rx_packets: IntCounter::new(
                "sfu_tcp_rx_packets_total",
                "ICE-TCP frames received (RFC 4571)",
            )?,
            tcp_rx_bytes: IntCounter::new(
                "sfu_tcp_rx_bytes_total",
                "ICE-TCP bytes received, without framing",
            )?,
            tcp_tx_packets: IntCounter::new(
                "sfu_tcp_tx_packets_total",
                "ICE-TCP frames queued to send",
            )?,
            tcp_tx_bytes: IntCounter::new(
                "sfu_tcp_tx_bytes_total",
                "ICE-TCP bytes queued to send, without framing",
            )?,
            tcp_connections: gauge("sfu_tcp_connections", "ICE-TCP connections held")?,
            entries: IntGaugeVec::new(
                Opts::new(
                    "sfu_state_entries",
                    "Entries of a shard's lookup tables and queues, by table: all 0 once it has no participant",
                ),
                &["shard", "table"],
            )?,
            tcp_refused: IntCounterVec::new(
                Opts::new(
                    "sfu_tcp_refused_total",
                    "ICE-TCP connections closed before a participant took them, by reason",
                ),
                &["reason"],
            )?,
            e2ee_relays: IntCounter::new(
                "sfu_e2ee_relays_total",
                "Key-exchange (e2ee) messages relayed to their recipient",
            )?,
            e2ee_relays_dropped: IntCounterVec::new(
                Opts::new(
                    "sfu_e2ee_relays_dropped_total",
                    "Key-exchange (e2ee) messages not relayed, by reason",
                ),
                &["reason"],
            )?,
            call_events_dropped: IntCounter::new(
                "sfu_call_events_dropped_total",
                "Call events (for call records and webhooks) dropped: their queue was full",
            )?,
            timings: Timings::new(registry)?,
        };
        ProcessCpu::register(registry)?;
        for c in [
            &m.rooms,
            &m.participants,
            &m.tracks,
            &m.tcp_connections,
            &m.entries,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        for c in [
            &m.rx_packets,
            &m.rx_bytes,
            &m.tx_packets,
            &m.tx_bytes,
            &m.gso_messages,
            &m.gso_datagrams,
            &m.forwarded,
            &m.calls,
            &m.keyframe_requests,
            &m.layer_switches,
            &m.thinned,
            &m.dd_read,
            &m.dd_unreadable,
            &m.tcp_rx_packets,
            &m.tcp_rx_bytes,
            &m.tcp_tx_packets,
            &m.tcp_tx_bytes,
            &m.e2ee_relays,
            &m.call_events_dropped,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.layer_choices.clone()))?;
        for cause in Cause::ALL {
            m.layer_choices.with_label_values(&[cause.label()]);
        }
        registry.register(Box::new(m.video_frozen.clone()))?;
        for reason in Frozen::ALL {
            m.video_frozen.with_label_values(&[reason.label()]);
        }
        registry.register(Box::new(m.drops.clone()))?;
        for reason in DropReason::ALL {
            m.drops.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(m.tcp_refused.clone()))?;
        for reason in TcpRefusal::ALL {
            m.tcp_refused.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(m.e2ee_relays_dropped.clone()))?;
        for reason in RelayDrop::ALL {
            m.e2ee_relays_dropped.with_label_values(&[reason.as_str()]);
        }
        Ok(m)
    }

    /// What shard `shard`'s thread times itself (its turns, its CPU time); make it on
    /// that thread.
    pub fn shard_timings(&self, shard: &str) -> ShardTimings {
        self.timings.shard(shard)
    }

    /// Counts a call event a shard could not queue.
    pub fn call_event_dropped(&self) {
        self.call_events_dropped.inc();
    }

    /// Counts a relayed message dropped before it reached a shard.
    pub fn relay_dropped(&self, reason: RelayDrop) {
        self.e2ee_relays_dropped
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts an ICE-TCP connection closed before a shard took it.
    pub fn tcp_refused(&self, reason: TcpRefusal) {
        self.tcp_refused.with_label_values(&[reason.as_str()]).inc();
    }

    /// Sets a shard's count of ICE-TCP connections.
    pub fn entries(&self, shard: &str, entries: &[(&'static str, usize)]) {
        for (table, n) in entries {
            self.entries
                .with_label_values(&[shard, table])
                .set(*n as i64);
        }
    }

    /// Adds a shard's segmented sends since the last flush: messages, datagrams.
    pub fn segmented(&self, (messages, datagrams): (u64, u64)) {
        self.gso_messages.inc_by(messages);
        self.gso_datagrams.inc_by(datagrams);
    }

    pub fn tcp_connections(&self, shard: &str, n: usize) {
        self.tcp_connections
            .with_label_values(&[shard])
            .set(n as i64);
    }

    /// Rooms in progress, summed over the shards' gauges.
    pub fn rooms(&self) -> usize {
        use prometheus::core::Collector;
        let rooms: f64 = self
            .rooms
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_gauge().get_value())
            .sum();
        rooms.max(0.0) as usize
    }

    /// Adds a shard's counters since the last flush, and sets its gauges.
    pub fn flush(&self, shard: &str, counters: &Counters, sizes: (usize, usize, usize)) {
        let (rooms, participants, tracks) = sizes;
        self.rooms.with_label_values(&[shard]).set(rooms as i64);
        self.participants
            .with_label_values(&[shard])
            .set(participants as i64);
        self.tracks.with_label_values(&[shard]).set(tracks as i64);
        self.rx_packets.inc_by(counters.rx_packets);
        self.rx_bytes.inc_by(counters.rx_bytes);
        self.tx_packets.inc_by(counters.tx_packets);
        self.tx_bytes.inc_by(counters.tx_bytes);
        self.timings.observe(&counters.milestones);
        self.forwarded.inc_by(counters.rtp_forwarded);
        self.tcp_rx_packets.inc_by(counters.tcp_rx_packets);
        self.tcp_rx_bytes.inc_by(counters.tcp_rx_bytes);
        self.tcp_tx_packets.inc_by(counters.tcp_tx_packets);
        self.tcp_tx_bytes.inc_by(counters.tcp_tx_bytes);
        self.calls.inc_by(counters.calls_started);
        self.keyframe_requests.inc_by(counters.keyframe_requests);
        self.layer_switches.inc_by(counters.layer_switches);
        self.thinned.inc_by(counters.thinned);
        for cause in Cause::ALL {
            let n = counters.layer_choices[cause.index()];
            if n > 0 {
                self.layer_choices
                    .with_label_values(&[cause.label()])
                    .inc_by(n);
            }
        }
        for reason in Frozen::ALL {
            let n = counters.video_frozen_ms[reason.index()];
            if n > 0 {
                self.video_frozen
                    .with_label_values(&[reason.label()])
                    .inc_by(n);
            }
        }
        self.dd_read.inc_by(counters.dd_read);
        self.dd_unreadable.inc_by(counters.dd_unreadable);
        for reason in DropReason::ALL {
            let n = counters.drops[reason.index()];
            if n > 0 {
                self.drops.with_label_values(&[reason.as_str()]).inc_by(n);
            }
        }
        self.e2ee_relays.inc_by(counters.e2ee_relays);
        for reason in RelayDrop::ALL {
            let n = counters.e2ee_relays_dropped[reason.index()];
            if n > 0 {
                self.e2ee_relays_dropped
                    .with_label_values(&[reason.as_str()])
                    .inc_by(n);
            }
        }
    }
}

/// The TURN relay's metrics, fed from its counters once a second.
#[derive(Clone)]
pub struct TurnMetrics {
    allocations: prometheus::IntGauge,
    allocations_total: IntCounter,
    packets: IntCounter,
    bytes: IntCounter,
    refusals: IntCounterVec,
}

impl TurnMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<TurnMetrics> {
        let m = TurnMetrics {
            allocations: prometheus::IntGauge::new(
                "sfu_turn_allocations",
                "TURN allocations alive",
            )?,
            allocations_total: IntCounter::new(
                "sfu_turn_allocations_total",
                "TURN allocations made",
            )?,
            packets: IntCounter::new(
                "sfu_turn_relayed_packets_total",
                "Packets relayed by TURN, both ways",
            )?,
            bytes: IntCounter::new(
                "sfu_turn_relayed_bytes_total",
                "Payload bytes relayed by TURN, both ways",
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "sfu_turn_refusals_total",
                    "TURN requests and packets refused, by reason (auth failures included)",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.allocations.clone()))?;
        registry.register(Box::new(m.allocations_total.clone()))?;
        registry.register(Box::new(m.packets.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.refusals.clone()))?;
        for refusal in turn::report::Refusal::all() {
            m.refusals.with_label_values(&[refusal.as_str()]);
        }
        Ok(m)
    }

    /// Moves the relay's counters into Prometheus.
    pub fn flush(&self, handle: &turn::driver::Handle) {
        let c = handle.take_counters();
        self.allocations.set(handle.allocations() as i64);
        self.allocations_total.inc_by(c.allocations_total);
        self.packets.inc_by(c.relayed_packets);
        self.bytes.inc_by(c.relayed_bytes);
        for (reason, n) in c.refusals {
            self.refusals
                .with_label_values(&[reason.as_str()])
                .inc_by(n);
        }
    }
}
