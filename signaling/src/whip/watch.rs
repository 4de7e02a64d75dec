//! What a WHEP session shows: the room's tracks on its receiving m-lines, screens first.

use protocol::{Kind, ServerMessage, Source, Subscribe, TrackId, TrackInfo};

use super::offer::MLine;

/// What a WHEP session shows: the room's tracks, and its receiving m-lines.
pub(super) struct Watch {
    tracks: Vec<TrackInfo>,
    pub(super) audio: Vec<String>,
    pub(super) video: Vec<String>,
    /// The tracks last asked for, on their m-lines.
    pub(super) shown: Vec<Subscribe>,
}

impl Watch {
    pub(super) fn new(lines: &[MLine]) -> Watch {
        let mids = |kind| {
            lines
                .iter()
                .filter(|m| m.receives && m.kind == Some(kind))
                .filter_map(|m| m.mid.clone())
                .collect()
        };
        Watch {
            tracks: Vec::new(),
            audio: mids(Kind::Audio),
            video: mids(Kind::Video),
            shown: Vec::new(),
        }
    }

    /// Follows the room's tracks; true when they changed.
    pub(super) fn on_event(&mut self, event: &ServerMessage) -> bool {
        match event {
            ServerMessage::Joined { tracks, .. } | ServerMessage::Resync { tracks, .. } => {
                self.tracks = tracks.clone()
            }
            ServerMessage::TrackPublished(t) => {
                self.tracks.retain(|x| x.track_id != t.track_id);
                self.tracks.push(t.clone());
            }
            ServerMessage::TrackUnpublished { track_id } => {
                self.tracks.retain(|x| x.track_id != *track_id);
            }
            ServerMessage::ParticipantLeft { participant_id, .. } => {
                self.tracks.retain(|x| x.participant_id != *participant_id);
            }
            _ => return false,
        }
        true
    }

    /// The m-lines' tracks: screens, then cameras, on the video m-lines (the earliest
    /// published first); microphones of the shown participants, then others, on audio.
    pub(super) fn wanted(&self) -> Vec<Subscribe> {
        let mut video: Vec<&TrackInfo> = self
            .tracks
            .iter()
            .filter(|t| matches!(t.source, Source::Screen | Source::Camera))
            .collect();
        video.sort_by_key(|t| (t.source != Source::Screen, t.track_id));
        video.truncate(self.video.len());
        let mut audio: Vec<&TrackInfo> = self
            .tracks
            .iter()
            .filter(|t| t.source == Source::Microphone)
            .collect();
        audio.sort_by_key(|t| {
            let shown = video.iter().any(|v| v.participant_id == t.participant_id);
            (!shown, t.track_id)
        });
        let on = |mids: &[String], tracks: Vec<&TrackInfo>| -> Vec<Subscribe> {
            mids.iter()
                .zip(tracks)
                .map(|(mid, t)| Subscribe {
                    mid: mid.clone(),
                    track_id: t.track_id,
                })
                .collect::<Vec<_>>()
        };
        let mut wanted = on(&self.video, video);
        wanted.extend(on(&self.audio, audio));
        wanted
    }

    /// The video tracks shown, pinned so that each gets the best layer the viewer's
    /// network carries.
    pub(super) fn pinned(&self) -> Vec<TrackId> {
        self.shown
            .iter()
            .filter(|s| self.video.contains(&s.mid))
            .map(|s| s.track_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whip::offer::scan_offer;
    use crate::whip::offer::tests::WHIP_OFFER;
    use protocol::ParticipantId;

    fn track(id: u64, participant: u64, source: Source) -> TrackInfo {
        TrackInfo {
            track_id: TrackId(id),
            participant_id: ParticipantId(participant),
            kind: source.kind(),
            source,
            muted: false,
            layers: Vec::new(),
        }
    }

    #[test]
    fn whep_shows_screens_first_and_follows_the_tracks() {
        let offer = WHIP_OFFER.replace("sendonly", "recvonly");
        let (lines, _) = scan_offer(&offer);
        let mut watch = Watch::new(&lines);
        assert!(watch.wanted().is_empty(), "nothing published yet");
        watch.on_event(&ServerMessage::TrackPublished(track(
            1,
            7,
            Source::Microphone,
        )));
        watch.on_event(&ServerMessage::TrackPublished(track(
            2,
            8,
            Source::Microphone,
        )));
        watch.on_event(&ServerMessage::TrackPublished(track(3, 7, Source::Camera)));
        let mids = |w: &Watch| -> Vec<(String, u64)> {
            w.wanted()
                .into_iter()
                .map(|s| (s.mid, s.track_id.0))
                .collect()
        };
        assert_eq!(mids(&watch), [("1".into(), 3), ("0".into(), 1)]);
        // A screen share from participant 8 takes the video m-line, and its microphone
        // the audio one.
        watch.on_event(&ServerMessage::TrackPublished(track(4, 8, Source::Screen)));
        assert_eq!(mids(&watch), [("1".into(), 4), ("0".into(), 2)]);
        watch.shown = watch.wanted();
        assert_eq!(watch.pinned(), [TrackId(4)]);
        watch.on_event(&ServerMessage::ParticipantLeft {
            participant_id: ParticipantId(8),
            reason: protocol::LeaveReason::Left,
        });
        assert_eq!(mids(&watch), [("1".into(), 3), ("0".into(), 1)]);
        // Behind, it missed that 7 left and 9 shared a screen: the resync says so.
        let resync = ServerMessage::Resync {
            participants: Vec::new(),
            tracks: vec![track(5, 9, Source::Screen)],
            speakers: Vec::new(),
        };
        assert!(watch.on_event(&resync));
        assert_eq!(mids(&watch), [("1".into(), 5)]);
    }
}
