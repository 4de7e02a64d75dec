//! What the admin API sees of a shard's calls and does to them: rooms and their members
//! listed, a participant removed, a track muted or unpublished, a call ended, and a
//! group's new policy applied to its members in calls.

use std::time::{Duration, Instant};

use protocol::admin::{Action, ParticipantDetail, Quality, RoomDetail, RoomSummary};
use protocol::{Kind, LeaveReason, ParticipantId, Policy, ServerMessage, TrackId};
use tracing::info;

use super::Shard;
use super::room::Room;

impl Shard {
    /// Every call of this shard. `wall_ms` is the wall clock at instant `now`
    /// (milliseconds since the Unix epoch), which start times are told in: pass the same
    /// pair every time (say, the shard's start) and a time reads the same at every
    /// request. `node` names the server.
    pub fn room_summaries(&self, now: Instant, wall_ms: u64, node: &str) -> Vec<RoomSummary> {
        self.rooms
            .iter()
            .map(|(name, room)| self.summary(name, room, now, wall_ms, node))
            .collect()
    }

    /// One call and its members; `None` if this shard has no call of that name.
    pub fn room_detail(
        &self,
        now: Instant,
        wall_ms: u64,
        node: &str,
        name: &str,
    ) -> Option<RoomDetail> {
        let room = self.rooms.get(name)?;
        let members = room
            .members
            .iter()
            .filter_map(|id| self.participants.get(id).map(|p| (id, p)))
            .map(|(id, p)| ParticipantDetail {
                participant_id: *id,
                identity: p.info.identity.clone(),
                name: p.info.name.clone(),
                group: p.group.clone(),
                role: p.info.role,
                joined_at_ms: wall_at(p.joined, now, wall_ms),
                transport: p.transports.last().copied(),
                tracks: p
                    .publications
                    .iter()
                    .filter_map(|pb| self.tracks.get(&pb.track_id).map(|t| t.info.clone()))
                    .collect(),
                quality: Quality::rated(
                    p.downlink.rtt.map(|(_, last)| millis(last)),
                    p.downlink.lost.map(|(_, lost)| lost),
                    p.downlink.estimate,
                ),
            })
            .collect();
        Some(RoomDetail {
            summary: self.summary(name, room, now, wall_ms, node),
            members,
        })
    }

    /// Acts on call `room` for an administrator; `false` if the call, or the
    /// participant or track the action names in it, is not here.
    pub fn act(&mut self, now: Instant, room: &str, action: Action) -> bool {
        self.advance(now);
        let Some(members) = self.rooms.get(room).map(|r| r.members.clone()) else {
            return false;
        };
        let in_room = |track_id: TrackId, shard: &Shard| {
            shard.tracks.get(&track_id).is_some_and(|t| t.room == room)
        };
        match action {
            Action::Remove(id) => {
                if !members.contains(&id) {
                    return false;
                }
                info!(participant = %id, room, "removed by an administrator");
                self.remove_participant(id, LeaveReason::Removed);
            }
            Action::End => {
                info!(
                    room,
                    members = members.len(),
                    "call ended by an administrator"
                );
                for id in members {
                    self.remove_participant(id, LeaveReason::RoomEnded);
                }
            }
            Action::Unpublish(track_id) => {
                if !in_room(track_id, self) {
                    return false;
                }
                let owner = self.tracks.get(&track_id).map(|t| t.info.participant_id);
                self.unpublish(track_id);
                if let Some(owner) = owner {
                    // Its publisher is told too (the room was told by `unpublish`).
                    self.signal(owner, ServerMessage::TrackUnpublished { track_id });
                }
            }
            Action::Mute { track_id, muted } => {
                if !in_room(track_id, self) {
                    return false;
                }
                self.hold(track_id, muted);
            }
        }
        true
    }

    /// Applies a group's new policy to its members in calls: their grants narrowed anew
    /// from their tokens' (its `force_tcp` waits for their next join), each told
    /// (`grants`) if they changed, and the tracks they may no longer publish
    /// unpublished; with `calling` off they are removed, and with `e2ee_required` those
    /// that publish in the clear (WHIP ingest). Returns how many members it touched.
    pub fn apply_policy(&mut self, now: Instant, group: &str, policy: &Policy) -> usize {
        self.advance(now);
        let mut members: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.group == group)
            .map(|(id, _)| *id)
            .collect();
        members.sort_unstable();
        for id in &members {
            if !policy.calling {
                info!(participant = %id, group, "removed: its group may no longer call");
                self.remove_participant(*id, LeaveReason::Removed);
                continue;
            }
            let Some(p) = self.participants.get_mut(id) else {
                continue;
            };
            if policy.e2ee_required && !p.info.e2ee && p.grants.may_publish() {
                info!(participant = %id, group, "removed: it sends in the clear, and its group now requires end-to-end encryption");
                self.remove_participant(*id, LeaveReason::Removed);
                continue;
            }
            let mut grants = policy.narrow(p.token_grants);
            grants.force_tcp = p.grants.force_tcp;
            if grants == p.grants {
                continue;
            }
            p.grants = grants;
            let denied: Vec<TrackId> = p
                .publications
                .iter()
                .filter_map(|pb| self.tracks.get(&pb.track_id))
                .filter(|t| !t.info.source.is_granted(&grants))
                .map(|t| t.info.track_id)
                .collect();
            info!(participant = %id, group, ?grants, unpublished = denied.len(), "grants narrowed by its group's policy");
            self.signal(*id, ServerMessage::Grants { grants });
            for track_id in denied {
                self.unpublish(track_id);
                self.signal(*id, ServerMessage::TrackUnpublished { track_id });
            }
        }
        members.len()
    }

    /// An administrator mutes (or unmutes) a track: while muted nothing of it is
    /// forwarded; unmuted, each subscriber's stream goes on where it stopped (as after a
    /// pause), a video's at its next keyframe, which is asked for. Everyone is told,
    /// its publisher too.
    pub(super) fn hold(&mut self, track_id: TrackId, muted: bool) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        let changed = track.held != muted || track.info.muted != muted;
        track.held = muted;
        track.info.muted = muted;
        let (owner, room, video) = (
            track.info.participant_id,
            track.room.clone(),
            track.info.kind == Kind::Video,
        );
        let subscribers: Vec<(ParticipantId, usize)> = track.subscribers.iter().copied().collect();
        if !changed {
            return;
        }
        info!(track = %track_id, muted, "muted by an administrator");
        if !muted {
            for (id, slot) in subscribers {
                let s = self
                    .participants
                    .get_mut(&id)
                    .and_then(|p| p.subscriptions.get_mut(slot));
                if let Some(s) = s {
                    s.forwarder.switch_source();
                    if video {
                        s.current = None;
                    }
                }
            }
            if video {
                self.keyframe_asked(owner, track_id);
            }
        }
        let message = ServerMessage::TrackMuted { track_id, muted };
        self.broadcast(&room, owner, &message);
        self.signal(owner, message);
    }

    fn summary(
        &self,
        name: &str,
        room: &Room,
        now: Instant,
        wall_ms: u64,
        node: &str,
    ) -> RoomSummary {
        let viewers = room
            .members
            .iter()
            .filter(|m| {
                self.participants
                    .get(m)
                    .is_some_and(|p| p.grants.is_viewer())
            })
            .count();
        RoomSummary {
            room: name.to_owned(),
            group: room.group.clone(),
            node: node.to_owned(),
            started_at_ms: wall_at(room.started, now, wall_ms),
            participants: (room.members.len() - viewers) as u32,
            viewers: viewers as u32,
            tracks: room.tracks.len() as u32,
        }
    }
}

/// The wall clock (ms since the Unix epoch) at `then`, given it is `wall_ms` at `at`
/// (before or after `then`: a driver passes one fixed pair, so that a time reads the
/// same at every request).
fn wall_at(then: Instant, at: Instant, wall_ms: u64) -> u64 {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if then >= at {
        wall_ms.saturating_add(ms(then - at))
    } else {
        wall_ms.saturating_sub(ms(at - then))
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
