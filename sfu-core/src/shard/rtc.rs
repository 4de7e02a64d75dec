//! What a participant's str0m `Rtc` yields: datagrams to send (paced for viewers),
//! its deadline, and events (packets to forward, keyframe requests, estimates, ICE).

use std::cmp::Reverse;
use std::time::Duration;

use protocol::{LeaveReason, ParticipantId};
use str0m::bwe::BweKind;
use str0m::net::Transmit;
use str0m::{Event, IceConnectionState, Output, Reason};
use tracing::{debug, info, trace, warn};

use super::Shard;
use super::milestones::Milestone;
use super::output::emit;
use super::pacing::{count_expired, pace_rate};
use crate::forwarder::DropReason;

/// The soonest a participant's `Rtc` is woken again for its delay-based estimator
/// (`Reason::BweDelayControl`), whose own period is 25 ms. Between two TWCC reports it
/// asks for a wake one smoothed RTT later, microseconds on a LAN; in the room of 70 in
/// virtual time it asked for one at once, again and again, in every session: a million
/// wakes a second, each walking every send stream of the session. (Whatever else of the
/// session falls due within that millisecond waits for it, as it does for the driver's
/// tokio timer, which rounds a deadline up to the millisecond.)
const BWE_WAKE_MIN: Duration = Duration::from_millis(1);

impl Shard {
    /// Polls one participant's `Rtc` until its timeout: transmits are queued, events
    /// handled (forwarding marks subscribers dirty).
    pub(super) fn drain_rtc(&mut self, id: ParticipantId) {
        loop {
            let Some(p) = self.participants.get_mut(&id) else {
                return;
            };
            if !p.rtc.is_alive() {
                info!(participant = %id, "WebRTC session ended");
                let reason = p.lost_reason();
                self.remove_participant(id, reason);
                return;
            }
            match p.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let Some(pacer) = p.pacer.as_mut() else {
                        p.downlink.sent.add(t.contents.len());
                        emit(&mut self.counters, &mut self.outputs, t);
                        continue;
                    };
                    let rate = pace_rate(&p.downlink);
                    let (counters, outputs) = (&mut self.counters, &mut self.outputs);
                    let sent = &mut p.downlink.sent;
                    let send = |t: Transmit| {
                        sent.add(t.contents.len());
                        emit(counters, outputs, t);
                    };
                    if !pacer.offer(self.now, rate, t, send) {
                        self.counters.drop(DropReason::PacerBacklog);
                    }
                    count_expired(&mut self.counters, pacer, id);
                    if p.pace_at.is_none() {
                        p.pace_at = pacer.next_release(self.now, rate);
                        if let Some(at) = p.pace_at {
                            self.timers.push(Reverse((at, id)));
                        }
                    }
                }
                Ok(Output::Timeout(at)) => {
                    let at = if p.rtc.last_timeout_reason() == Reason::BweDelayControl {
                        at.max(self.now + BWE_WAKE_MIN)
                    } else {
                        at
                    };
                    p.dirty = false;
                    if p.rtc_timeout != Some(at) {
                        p.rtc_timeout = Some(at);
                        self.timers.push(Reverse((at, id)));
                        if self.timers.len() > 8 * self.participants.len() + 1024 {
                            self.rebuild_timers();
                        }
                    }
                    return;
                }
                Ok(Output::Event(event)) => self.on_event(id, event),
                Err(e) => {
                    warn!(participant = %id, "WebRTC error: {e}");
                    self.remove_participant(id, LeaveReason::Error);
                    return;
                }
            }
        }
    }

    pub(super) fn on_event(&mut self, id: ParticipantId, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, packet),
            Event::KeyframeRequest(req) => {
                // The subscriber lost a picture: the layer it receives needs a keyframe.
                let wanted = self
                    .participants
                    .get(&id)
                    .and_then(|p| p.subscriptions.on(req.mid))
                    .and_then(|(_, s)| s.current.map(|l| (s.track_id(), l)));
                if let Some((track_id, layer)) = wanted {
                    debug!(participant = %id, track = %track_id, layer,
                        "keyframe asked by its receiver");
                    self.want_keyframe(track_id, layer);
                }
            }
            Event::MediaEgressStats(stats) => {
                self.on_egress_rtt(id, stats.rtt);
                self.on_egress_loss(id, stats.mid, stats.loss);
            }
            Event::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe,
            }) => {
                // Before TWCC works (a receiver without it never makes it work), the
                // estimate is only the configured start: its REMB, if any, tells more.
                if let Some(p) = self.participants.get_mut(&id)
                    && (can_probe || p.downlink.estimate_is_twcc)
                {
                    trace!(participant = %id, estimate = estimate.as_u64(), "TWCC estimate");
                    p.downlink.estimate = Some(estimate.as_u64());
                    p.downlink.estimate_is_twcc = true;
                }
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, mid }) => {
                self.on_remb(id, mid, estimate.as_u64());
            }
            Event::IceConnectionStateChange(state) => {
                debug!(participant = %id, ?state, "ICE state");
                if state == IceConnectionState::Disconnected
                    && let Some(p) = self.participants.get_mut(&id)
                {
                    // Consent lost: give it the usual grace to come back, then remove.
                    let deadline = self.now + self.config.participant_timeout;
                    p.media_deadline = Some(p.media_deadline.map_or(deadline, |d| d.min(deadline)));
                }
            }
            Event::Connected => {
                info!(participant = %id, "media connected");
                self.reach(id, Milestone::Connected);
                self.choose_for(id);
                self.request_awaited_keyframes();
            }
            _ => {}
        }
    }
}
