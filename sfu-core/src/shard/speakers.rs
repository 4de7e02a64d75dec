//! Who speaks: audio levels into a speaking order, the dominant speaker, and
//! `active_speakers` announcements.

use std::time::{Duration, Instant};

use protocol::{Kind, ParticipantId, ServerMessage};

use super::room::Room;
use super::{Shard, ShardOutput};
use crate::selection;

/// The speaking order and speakers are refreshed this often.
pub(super) const TICK: Duration = Duration::from_millis(selection::SPEECH_WINDOW_MS);

/// `active_speakers` goes out at most this often.
pub(super) const SPEAKERS_INTERVAL: Duration = Duration::from_millis(300);

impl Shard {
    /// Every `TICK`: each room's speaking order, dominant speaker and `active_speakers`
    /// (at most every `SPEAKERS_INTERVAL`); each track learns its publisher's place.
    pub(super) fn tick_speakers(&mut self) {
        let now = self.now;
        let loudest_n = self.config.loudest_n;
        for room in self.rooms.values_mut() {
            let mut scores: Vec<(ParticipantId, f32)> = Vec::new();
            for track_id in &room.tracks {
                let Some(t) = self.tracks.get_mut(track_id) else {
                    continue;
                };
                if t.info.kind != Kind::Audio {
                    continue;
                }
                let score = t.speech.tick();
                let owner = t.info.participant_id;
                match scores.iter_mut().find(|(p, _)| *p == owner) {
                    Some(x) => x.1 = x.1.max(score),
                    None => scores.push((owner, score)),
                }
            }
            if let Some(speakers) = room.hear(&scores, loudest_n, now) {
                for member in &room.members {
                    self.outputs.push_back(ShardOutput::Signal(
                        *member,
                        ServerMessage::ActiveSpeakers {
                            speakers: speakers.clone(),
                        },
                    ));
                }
            }
            for track_id in &room.tracks {
                if let Some(t) = self.tracks.get_mut(track_id) {
                    let owner = t.info.participant_id;
                    t.rank = room
                        .recent
                        .iter()
                        .position(|m| *m == owner)
                        .unwrap_or(usize::MAX);
                    t.dominant = room.dominant == Some(owner);
                }
            }
        }
    }
}

impl Room {
    /// One tick's loudest score of each member who publishes a microphone: the dominant
    /// speaker, and those speaking move to the front of the speaking order, loudest first;
    /// those already among the first `loudest_n + 1` (whom receive-loudest-N picks from)
    /// keep their places, so that steady talkers do not trade places every tick. Returns
    /// the speakers when they changed and `SPEAKERS_INTERVAL` passed since the last
    /// announcement: to be announced now.
    pub(super) fn hear(
        &mut self,
        scores: &[(ParticipantId, f32)],
        loudest_n: usize,
        now: Instant,
    ) -> Option<Vec<ParticipantId>> {
        self.dominant = selection::dominant(self.dominant, scores);
        let mut speaking: Vec<(ParticipantId, f32)> = scores
            .iter()
            .copied()
            .filter(|(_, s)| selection::is_speaking(*s))
            .collect();
        speaking.sort_by(|a, b| b.1.total_cmp(&a.1));
        let speakers: Vec<ParticipantId> = speaking.iter().map(|(p, _)| *p).collect();
        let settled = (loudest_n + 1).min(self.recent.len());
        let moving: Vec<ParticipantId> = speakers
            .iter()
            .copied()
            .filter(|p| !self.recent[..settled].contains(p))
            .collect();
        self.recent.retain(|m| !moving.contains(m));
        self.recent.splice(0..0, moving);
        let due = self
            .speakers_sent
            .is_none_or(|at| now >= at + SPEAKERS_INTERVAL);
        if speakers == self.speakers || !due {
            return None;
        }
        self.speakers = speakers.clone();
        self.speakers_sent = Some(now);
        Some(speakers)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ids(list: &[u64]) -> Vec<ParticipantId> {
        list.iter().map(|i| ParticipantId(*i)).collect()
    }

    #[test]
    fn speakers_move_to_the_front_unless_settled_and_are_announced_at_most_every_interval() {
        let now = Instant::now();
        let mut room = Room {
            recent: ids(&[1, 2, 3, 4, 5, 6]),
            ..Room::new(now, "default".into(), None)
        };
        let loud = |p: u64, score: f32| (ParticipantId(p), score);
        // 2 and 6 speak, 2 louder. 2 is among the first loudest_n + 1 and keeps its
        // place; 6 moves to the front.
        let said = room.hear(&[loud(2, 40.0), loud(6, 30.0), loud(3, 1.0)], 3, now);
        assert_eq!(said, Some(ids(&[2, 6])));
        assert_eq!(room.recent, ids(&[6, 1, 2, 3, 4, 5]));
        assert_eq!(room.dominant, Some(ParticipantId(2)));
        // The same speakers: nothing to say.
        let later = now + Duration::from_millis(100);
        assert_eq!(room.hear(&[loud(2, 40.0), loud(6, 30.0)], 3, later), None);
        // Others speak, but the last announcement is too recent; then it goes out.
        let soon = now + SPEAKERS_INTERVAL - Duration::from_millis(1);
        assert_eq!(room.hear(&[loud(5, 40.0)], 3, soon), None);
        assert_eq!(
            room.hear(&[loud(5, 40.0)], 3, now + SPEAKERS_INTERVAL),
            Some(ids(&[5]))
        );
        assert_eq!(room.recent, ids(&[5, 6, 1, 2, 3, 4]));
        // Nobody speaks: the last speaker stays dominant, and silence is announced.
        let quiet = now + SPEAKERS_INTERVAL * 2;
        assert_eq!(room.hear(&[], 3, quiet), Some(Vec::new()));
        assert_eq!(room.dominant, Some(ParticipantId(5)));
    }
}
