//! Admitting a participant (room capacity, its candidates, its `Rtc`, telling the
//! room) and removing one; draining (no new rooms) and shutting down (everyone out).

use std::net::SocketAddr;
use std::time::Instant;

use protocol::admin::{CallEvent, Joined};
use protocol::{
    ErrorCode, ErrorMessage, Join, LeaveReason, ParticipantId, ParticipantInfo, RequestType,
    ServerMessage,
};
use rand::RngExt;
use str0m::bwe::Bitrate;
use str0m::rtp::Extension;
use str0m::{IceCreds, Rtc};
use tracing::{info, warn};

use super::allocation::INITIAL_ESTIMATE_BPS;
use super::ice::LocalCandidates;
use super::loss::{LOSS_INTERVAL, REPORTS_READ};
use super::milestones::Milestones;
use super::participant::{Downlink, Participant, View, estimates};
use super::room::Room;
use super::subscription::Subscriptions;
use super::{Shard, ShardOutput};
use crate::pacer::Pacer;
use crate::svc::{DD_EXTENSION_ID, DD_URI, DdExtension};

impl Shard {
    /// Admits a participant, offering it those of `available` its transport and grants
    /// call for: a `relay` join only UDP ones (what a TURN relay reaches), a `force_tcp`
    /// one only ICE-TCP ones (so it never waits on UDP), any other all of them.
    pub fn join(
        &mut self,
        now: Instant,
        id: ParticipantId,
        mut join: Join,
        available: &LocalCandidates,
    ) {
        self.advance(now);
        // (Signaling applies it already; a viewer never publishes, whoever calls.)
        join.grants = join.grants.effective();
        let candidates = available.for_client(join.transport, join.grants.force_tcp);
        let viewer = join.grants.is_viewer();
        let (viewers, others) = self.rooms.get(&join.room).map_or((0, 0), |r| {
            let viewers = r
                .members
                .iter()
                .filter(|m| {
                    self.participants
                        .get(m)
                        .is_some_and(|p| p.grants.is_viewer())
                })
                .count();
            (viewers, r.members.len() - viewers)
        });
        // A room's own cap (its opener's group's) within the server's; the room a join
        // would open has the joiner's.
        let cap = match self.rooms.get(&join.room) {
            Some(room) if !room.members.is_empty() => room.max_participants,
            _ => join.max_participants,
        };
        let room_capacity = cap.map_or(self.config.room_capacity, |cap| {
            self.config.room_capacity.min(cap as usize)
        });
        let (count, capacity, what) = if viewer {
            (viewers, self.config.viewer_capacity, "viewers")
        } else {
            (others, room_capacity, "participants")
        };
        if count >= capacity {
            info!(participant = %id, room = %join.room, what, "room full");
            let message = format!("room has its {capacity} {what}");
            return self.refuse_join(id, ErrorCode::RoomFull, message);
        }
        if self.draining
            && self
                .rooms
                .get(&join.room)
                .is_none_or(|r| r.members.is_empty())
        {
            info!(participant = %id, room = %join.room, "join refused: draining, no new room");
            let message = "this server is draining: it takes no new call; join again";
            return self.refuse_join(id, ErrorCode::ServerDraining, message.into());
        }
        let udp_port = candidates.udp.first().map(SocketAddr::port);
        let tcp_port = candidates.tcp.first().map(SocketAddr::port);
        if udp_port.is_none() && tcp_port.is_none() {
            let message = if join.grants.force_tcp && available.tcp.is_empty() {
                "TCP is forced for this client and ICE-TCP is off here: join with transport \"relay\""
            } else {
                "no media address for this transport"
            };
            warn!(participant = %id, "join refused: {message}");
            self.signal(
                id,
                ServerMessage::Error(
                    ErrorMessage::new(ErrorCode::Internal, message).answering(RequestType::Join),
                ),
            );
            self.outputs.push_back(ShardOutput::Closed(id));
            return;
        }
        let ufrag = format!("{:04x}{:016x}", self.config.index, self.rng.random::<u64>());
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: format!("{:032x}", self.rng.random::<u128>()),
        };
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .enable_bwe(estimates(&join.grants).then(|| Bitrate::bps(INITIAL_ESTIMATE_BPS)))
            // Everyone's losses: a receive-only participant's estimate, and for the
            // others whether the link carries the floor video (`Adaptation`).
            .set_stats_interval(Some(if estimates(&join.grants) {
                REPORTS_READ
            } else {
                LOSS_INTERVAL
            }))
            .set_extension(
                DD_EXTENSION_ID,
                Extension::with_serializer(DD_URI, DdExtension),
            )
            .build(now);
        candidates.add_to(&mut rtc);
        let info = ParticipantInfo {
            participant_id: id,
            identity: join.identity,
            name: join.name,
            role: join.grants.role,
            e2ee: join.e2ee,
        };
        let room = self
            .rooms
            .entry(join.room.clone())
            .or_insert_with(|| Room::new(now, join.group.clone(), join.max_participants));
        if room.members.is_empty() {
            self.counters.calls_started += 1;
            info!(room = %join.room, group = %join.group, "call started");
            self.outputs
                .push_back(ShardOutput::Event(CallEvent::RoomStarted {
                    room: join.room.clone(),
                    group: join.group.clone(),
                }));
        }
        room.peak = room.peak.max(room.members.len() + 1);
        let others: Vec<ParticipantId> = room.members.clone();
        room.members.push(id);
        room.recent.push(id);
        let tracks = room
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t).map(|t| t.info.clone()))
            .collect();
        // A viewer learns of the presenters and participants, not of the rest of the
        // audience (hundreds of entries, and of no use to it), unless it asked.
        let hears_audience = !viewer || join.audience;
        let participants = others
            .iter()
            .filter_map(|p| self.participants.get(p))
            .filter(|p| hears_audience || !p.grants.is_viewer())
            .map(|p| p.info.clone())
            .collect();
        info!(participant = %id, identity = %info.identity, room = %join.room, "joined");
        self.outputs
            .push_back(ShardOutput::Event(CallEvent::ParticipantJoined(Joined {
                room: join.room.clone(),
                participant_id: id,
                identity: info.identity.clone(),
                group: join.group.clone(),
                role: info.role,
            })));
        self.signal(
            id,
            ServerMessage::Joined {
                participant_id: id,
                room: join.room.clone(),
                identity: info.identity.clone(),
                name: info.name.clone(),
                grants: join.grants,
                e2ee: join.e2ee,
                participants,
                tracks,
                ice_servers: join.ice_servers,
            },
        );
        for other in others {
            // A viewer is announced to presenters and participants, and to the viewers
            // that asked.
            if viewer
                && self
                    .participants
                    .get(&other)
                    .is_some_and(|p| !p.hears_audience)
            {
                continue;
            }
            self.signal(other, ServerMessage::ParticipantJoined(info.clone()));
        }
        self.by_ufrag.insert(ufrag.clone(), id);
        self.participants.insert(
            id,
            Participant {
                info,
                room: join.room,
                grants: join.grants,
                token_grants: join.token_grants,
                group: join.group,
                estimated: estimates(&join.grants),
                joined: now,
                transports: Vec::new(),
                bytes_received: 0,
                hears_audience,
                rtc,
                ufrag,
                udp_port,
                tcp_port,
                remotes: Vec::new(),
                // Its offer and media path within the timeout, or it is removed: a
                // socket that joins and never offers keeps no place.
                media_deadline: Some(now + self.config.participant_timeout),
                rtc_timeout: None,
                dirty: false,
                pacer: (!estimates(&join.grants)).then(|| Pacer::new(now)),
                pace_at: None,
                publications: Vec::new(),
                subscriptions: Subscriptions::default(),
                ssrc_tracks: Vec::new(),
                dtls_failure_logged: false,
                slot_mids: Vec::new(),
                slots_sent: Vec::new(),
                view: View::default(),
                downlink: Downlink::default(),
                milestones: Milestones::new(now),
            },
        );
        self.mark_dirty(id);
    }

    fn refuse_join(&mut self, id: ParticipantId, code: ErrorCode, message: String) {
        let error = ErrorMessage::new(code, message);
        self.signal(id, ServerMessage::Error(error.answering(RequestType::Join)));
        self.outputs.push_back(ShardOutput::Closed(id));
    }

    /// From now on, takes no new room: a join to a room this shard has not got is
    /// refused with `server_draining` (and its socket closed), while the calls it has go
    /// on and take newcomers (someone rejoining, a late invitee).
    pub fn refuse_new_rooms(&mut self) {
        if !self.draining {
            info!(rooms = self.rooms.len(), "draining: no new rooms");
        }
        self.draining = true;
    }

    /// Ends every call (and takes no new room): each participant is removed and told
    /// (`left`, reason `server_shutdown`), so that it can join again where a load
    /// balancer sends it; no one is told of the others' leaving.
    pub fn shut_down(&mut self, now: Instant) {
        self.advance(now);
        self.draining = true;
        let mut ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        ids.sort_unstable();
        if !ids.is_empty() {
            warn!(
                participants = ids.len(),
                rooms = self.rooms.len(),
                "shutting down: calls cut"
            );
        }
        for id in ids {
            self.remove_participant(id, LeaveReason::ServerShutdown);
        }
    }

    pub(super) fn remove_participant(&mut self, id: ParticipantId, reason: LeaveReason) {
        // Its tracks go first, while it is there to name them in their events.
        let Some(publications) = self.participants.get(&id).map(|p| p.publications.clone()) else {
            return;
        };
        for pb in publications {
            self.unpublish(pb.track_id);
        }
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        info!(participant = %id, ?reason, "removed");
        p.rtc.disconnect();
        self.by_ufrag.remove(&p.ufrag);
        for key in &p.remotes {
            self.by_remote.remove(key);
        }
        self.forget_subscriber(id, &p.subscriptions);
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|m| *m != id);
            room.recent.retain(|m| *m != id);
            if room.dominant == Some(id) {
                room.dominant = None;
            }
        }
        if reason != LeaveReason::Left {
            self.signal(id, ServerMessage::Left { reason });
        }
        // Viewers hear only of presenters and participants; in a shutdown everyone goes
        // and is told so itself (the others' leaving would only set their clients to work).
        if reason != LeaveReason::ServerShutdown {
            self.broadcast_to(
                &p.room,
                id,
                &ServerMessage::ParticipantLeft {
                    participant_id: id,
                    reason,
                },
                !p.grants.is_viewer(),
            );
        }
        self.outputs
            .push_back(ShardOutput::Event(CallEvent::ParticipantLeft {
                room: p.room.clone(),
                participant_id: id,
                identity: p.info.identity.clone(),
                reason,
                transports: p.transports.clone(),
                bytes_received: p.bytes_received,
                bytes_sent: p.downlink.sent.total(),
            }));
        if self
            .rooms
            .get(&p.room)
            .is_some_and(|r| r.members.is_empty())
        {
            info!(room = %p.room, "call ended");
            self.rooms.remove(&p.room);
            self.outputs
                .push_back(ShardOutput::Event(CallEvent::RoomFinished { room: p.room }));
        }
        self.outputs.push_back(ShardOutput::Closed(id));
    }
}
