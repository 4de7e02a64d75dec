//! One participant's WebRTC session and the state the shard keeps for it.

use std::time::{Duration, Instant};

use protocol::admin::TransportKind;
use protocol::{Grants, Kind, LeaveReason, ParticipantInfo, TrackId, TrackQuality};
use str0m::Rtc;
use str0m::media::Mid;
use str0m::rtp::Ssrc;

use super::ice::Remote;
use super::loss::LossEstimate;
use super::milestones::Milestones;
use super::remb::RembEstimate;
use super::shaping::{LinkShape, SentMeter};
use super::subscription::Subscriptions;
use crate::adaptation::Adaptation;
use crate::pacer::Pacer;

/// One participant's WebRTC session and what it publishes and receives.
pub(super) struct Participant {
    pub(super) info: ParticipantInfo,
    pub(super) room: String,
    /// What it may do now: its token's grants narrowed by its group's policy.
    pub(super) grants: Grants,
    /// Its token's grants, which a change of its group's policy narrows anew.
    pub(super) token_grants: Grants,
    pub(super) group: String,
    /// Its downlink is estimated by TWCC with str0m's pacer ([`estimates`]), as decided
    /// when it joined: a policy that takes its publishing away later keeps it so.
    pub(super) estimated: bool,
    /// When it joined.
    pub(super) joined: Instant,
    /// The ways its media took (by ICE address mapped), in the order first used; the
    /// last is the one it uses now.
    pub(super) transports: Vec<TransportKind>,
    /// Bytes of the datagrams it sent the server (those it was sent:
    /// `downlink.sent`).
    pub(super) bytes_received: u64,
    pub(super) rtc: Rtc,
    /// Our ICE username fragment for this participant, the key of the first STUN request.
    pub(super) ufrag: String,
    /// The local UDP port its candidates are on (datagrams for it must arrive there), and
    /// the TCP one; `None` where it was offered no candidate of that transport.
    pub(super) udp_port: Option<u16>,
    pub(super) tcp_port: Option<u16>,
    /// Remote addresses mapped to it, to unmap on removal.
    pub(super) remotes: Vec<Remote>,
    /// Removed when this passes without a datagram: set at the join (its offer and media
    /// path come within the timeout), moved on by each offer and datagram.
    pub(super) media_deadline: Option<Instant>,
    /// When its `Rtc` wants `Input::Timeout` next, as queued in the shard\'s timers
    /// (`None`: not queued; the next drain queues it).
    pub(super) rtc_timeout: Option<Instant>,
    /// In the shard's dirty queue: its `Rtc` has output to drain.
    pub(super) dirty: bool,
    /// Paces what it is sent, where its `Rtc` does not (no TWCC estimator: a viewer).
    pub(super) pacer: Option<Pacer>,
    /// When its pacer lets the next datagram go, as queued in the shard's timers.
    pub(super) pace_at: Option<Instant>,
    pub(super) publications: Vec<Publication>,
    /// What it receives, on which m-lines.
    pub(super) subscriptions: Subscriptions,
    /// Incoming SSRC to track and layer, filled as packets arrive.
    pub(super) ssrc_tracks: Vec<(Ssrc, TrackId, u8)>,
    /// Hears of the viewers of its room: presenters and participants do, a viewer if it
    /// asked (`join.audience`).
    pub(super) hears_audience: bool,
    /// Its DTLS handshake failed and the log said why (once, not per datagram).
    pub(super) dtls_failure_logged: bool,
    /// Its slot m-lines (`offer.slots`), which the server fills with the tracks it
    /// chose, and what the last `slots` message said they carry. Empty: it subscribes
    /// per track.
    pub(super) slot_mids: Vec<(Mid, Kind)>,
    pub(super) slots_sent: Vec<(Mid, Option<TrackId>)>,
    /// What it asked to see, and how (`view`).
    pub(super) view: View,
    /// What it can receive and what it is sent.
    pub(super) downlink: Downlink,
    /// How long its media path and first media took, once each.
    pub(super) milestones: Milestones,
}

impl Participant {
    /// Why it is removed when its media stops: `network` if its media path was up,
    /// `timeout` if it never was.
    pub(super) fn lost_reason(&self) -> LeaveReason {
        if self.transports.is_empty() {
            LeaveReason::Timeout
        } else {
            LeaveReason::Network
        }
    }
}

/// A track this participant publishes, on one of its m-lines.
#[derive(Debug, Clone, Copy)]
pub(super) struct Publication {
    pub(super) mid: Mid,
    pub(super) track_id: TrackId,
}

/// Whether a participant's downlink is estimated by TWCC, with str0m's pacer: for those
/// who may publish, the members of a conference. Receive-only participants (a
/// broadcast's audience) are not: the pacer's cost per packet would cap a 500-viewer
/// fan-out at a third of its rate on this hardware (`bench broadcast`). Their estimate
/// comes from the losses their receiver reports, read once a second, which costs nothing
/// per packet ([`Shard::on_egress_loss`]): a viewer on a weak network gets a lower layer.
pub(super) fn estimates(grants: &Grants) -> bool {
    grants.publish_audio || grants.publish_video || grants.publish_screen
}

/// What a participant asked to see (`view`), sorted by track for lookups per
/// subscription.
#[derive(Debug, Default)]
pub(super) struct View {
    pub(super) pinned: Vec<TrackId>,
    pub(super) quality: Vec<TrackQuality>,
}

/// A participant's downlink: what it can receive, and what it is sent (bit/s).
#[derive(Debug, Default)]
pub(super) struct Downlink {
    /// Its estimate: transport-wide congestion control, else REMB; for a receive-only
    /// participant (no TWCC), the losses its receiver reports tell (`loss.rs`), `None`
    /// while it has lost nothing to speak of.
    pub(super) estimate: Option<u64>,
    pub(super) estimate_is_twcc: bool,
    /// No layer goes up before this instant (set when one fell for lack of bandwidth).
    pub(super) upgrade_hold: Option<Instant>,
    /// The minimum and desired bitrates last given to its bandwidth estimator.
    pub(super) bwe_bitrates: (u64, u64),
    /// What the last choice sends it, and what it would receive with bandwidth to spare:
    /// where a loss-based estimate starts, and where it stops climbing.
    pub(super) chosen_bps: u64,
    pub(super) ideal_bps: u64,
    /// What the lowest layers of everything it is shown take: a loss-based estimate does
    /// not fall below it (a viewer keeps the screen, at its lowest, rather than nothing).
    pub(super) lowest_bps: u64,
    /// Its loss-based estimate's state (receive-only participants).
    pub(super) loss: LossEstimate,
    /// Its REMB reports (a receiver without TWCC).
    pub(super) remb: RembEstimate,
    /// How its layers follow the estimate over time.
    pub(super) adaptation: Adaptation,
    /// The m-line whose stream bypasses its pacer: the floor video's, kept on while the
    /// estimate is below what it takes (the pacer, at the estimate, would hold it back
    /// until the forwarder cut it).
    pub(super) unpaced: Option<Mid>,
    /// The most any of its m-lines lost in its receiver's last round of reports (a
    /// fraction), and when they came.
    pub(super) lost: Option<(Instant, f32)>,
    /// Its padding is off until then (it cost the media), and for how long next time.
    pub(super) pad_off: Option<(Instant, Duration)>,
    /// The rate its losses proved its link carries, which its video is paced at.
    pub(super) shape: LinkShape,
    /// What it was sent lately (every datagram, as it left).
    pub(super) sent: SentMeter,
    /// The least round trip its receiver reports gave, and the last.
    pub(super) rtt: Option<(Duration, Duration)>,
    /// The m-lines whose streams str0m's pacer paces not, while its link is shaped
    /// (`shaping.rs`).
    pub(super) str0m_unpaced: Vec<Mid>,
}
