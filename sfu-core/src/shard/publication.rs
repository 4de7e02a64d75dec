//! Publishing: tracks added, changed and removed as offers say, and muting.

use protocol::admin::{CallEvent, TrackEvent};
use protocol::{
    ErrorCode, Kind, ParticipantId, Publish, Published, RequestType, ServerMessage, Source,
    TrackId, TrackInfo,
};
use str0m::media::{MediaKind, Mid};
use tracing::{info, warn};

use super::participant::Publication;
use super::track::Track;
use super::{Shard, ShardOutput};

impl Shard {
    /// Brings the participant's publications in line with `publish`, announcing changes.
    pub(super) fn apply_publish(
        &mut self,
        id: ParticipantId,
        publish: &[Publish],
    ) -> Vec<Published> {
        let Some(p) = self.participants.get_mut(&id) else {
            return Vec::new();
        };
        let mut keep = Vec::new();
        let mut added = Vec::new();
        let mut refused = Vec::new();
        for x in publish {
            let mid = Mid::from(x.mid.as_str());
            let kind_ok = p.rtc.media(mid).is_some_and(|m| {
                let kind = match m.kind() {
                    MediaKind::Audio => Kind::Audio,
                    MediaKind::Video => Kind::Video,
                };
                kind == x.source.kind() && m.direction().is_receiving()
            });
            if !kind_ok {
                refused.push(x.mid.clone());
                continue;
            }
            let existing = p.publications.iter().find(|pb| pb.mid == mid).copied();
            match existing.and_then(|pb| self.tracks.get(&pb.track_id).map(|t| (pb, t))) {
                Some((pb, t)) if t.info.source == x.source && t.info.layers == x.layers => {
                    keep.push(pb)
                }
                _ => added.push((mid, x.source, x.layers.clone())),
            }
        }
        let removed: Vec<TrackId> = p
            .publications
            .iter()
            .filter(|pb| !keep.iter().any(|k| k.track_id == pb.track_id))
            .map(|pb| pb.track_id)
            .collect();
        p.publications = keep;
        for track_id in removed {
            self.unpublish(track_id);
        }
        for (mid, source, layers) in added {
            self.publish(id, mid, source, layers);
        }
        if !refused.is_empty() {
            // check_publish_kinds refused such offers before they were applied.
            warn!(participant = %id, "published mids {refused:?} do not match their m-lines");
        }
        self.participants
            .get(&id)
            .map(|p| {
                p.publications
                    .iter()
                    .map(|pb| Published {
                        mid: pb.mid.to_string(),
                        track_id: pb.track_id,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn publish(
        &mut self,
        id: ParticipantId,
        mid: Mid,
        source: Source,
        layers: Vec<String>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let track_id = TrackId(self.next_track * self.config.count + self.config.index);
        self.next_track += 1;
        p.publications.push(Publication { mid, track_id });
        p.ssrc_tracks.clear();
        let info = TrackInfo {
            track_id,
            participant_id: id,
            kind: source.kind(),
            source,
            muted: false,
            layers,
        };
        let room = p.room.clone();
        let identity = p.info.identity.clone();
        info!(participant = %id, track = %track_id, ?source, layers = ?info.layers, "track published");
        let rank = self
            .rooms
            .get(&room)
            .and_then(|r| r.recent.iter().position(|m| *m == id))
            .unwrap_or(usize::MAX);
        let track = Track::new(info.clone(), room.clone(), mid, rank, self.now);
        self.tracks.insert(track_id, track);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.tracks.push(track_id);
        }
        let event = CallEvent::TrackPublished(TrackEvent {
            room: room.clone(),
            participant_id: id,
            identity,
            track_id,
            source,
        });
        self.outputs.push_back(ShardOutput::Event(event));
        self.broadcast(&room, id, &ServerMessage::TrackPublished(info));
    }

    /// Removes a track, its subscriptions, and tells the room.
    pub(super) fn unpublish(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        info!(track = %track_id, "track unpublished");
        self.end_subscriptions_of(&track);
        if let Some(owner) = self.participants.get_mut(&track.info.participant_id) {
            owner.publications.retain(|pb| pb.track_id != track_id);
            owner.ssrc_tracks.clear();
            let event = CallEvent::TrackUnpublished(TrackEvent {
                room: track.room.clone(),
                participant_id: track.info.participant_id,
                identity: owner.info.identity.clone(),
                track_id,
                source: track.info.source,
            });
            self.outputs.push_back(ShardOutput::Event(event));
        }
        if let Some(r) = self.rooms.get_mut(&track.room) {
            r.tracks.retain(|t| *t != track_id);
        }
        self.broadcast(
            &track.room,
            track.info.participant_id,
            &ServerMessage::TrackUnpublished { track_id },
        );
    }

    pub(super) fn mute(&mut self, id: ParticipantId, track_id: TrackId, muted: bool) {
        match self.tracks.get_mut(&track_id) {
            // Its publisher may lift an administrator's mute.
            Some(t) if t.info.participant_id == id && t.held && !muted => {
                self.hold(track_id, false);
            }
            Some(t) if t.info.participant_id == id => {
                if t.info.muted != muted {
                    t.info.muted = muted;
                    let room = t.room.clone();
                    self.broadcast(&room, id, &ServerMessage::TrackMuted { track_id, muted });
                }
            }
            _ => self.error(
                id,
                RequestType::Mute,
                ErrorCode::Forbidden,
                format!("{track_id} is not yours"),
            ),
        }
    }
}
