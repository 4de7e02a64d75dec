//! Catching up a participant that fell behind: its event queue overflowed, so the driver
//! dropped what did not fit rather than remove it (the others' messages that filled it
//! were not its doing). Once its queue has room again, it is told the room as it is now.

use std::time::Instant;

use protocol::{ParticipantId, ServerMessage};

use super::Shard;

impl Shard {
    /// Sends a participant that fell behind `resync`: everyone else in its room, their
    /// tracks and who speaks; then its slots and its own tracks' layers anew, as they are
    /// now.
    pub fn resync(&mut self, now: Instant, id: ParticipantId) {
        self.advance(now);
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        // As `joined` lists them: a viewer hears of the audience only if it asked.
        let participants = room
            .members
            .iter()
            .filter(|m| **m != id)
            .filter_map(|m| self.participants.get(m))
            .filter(|o| p.hears_audience || !o.grants.is_viewer())
            .map(|o| o.info.clone())
            .collect();
        let tracks = room
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t))
            .filter(|t| t.info.participant_id != id)
            .map(|t| t.info.clone())
            .collect();
        let speakers = room.speakers.clone();
        self.signal(
            id,
            ServerMessage::Resync {
                participants,
                tracks,
                speakers,
            },
        );
        if let Some(p) = self.participants.get_mut(&id) {
            p.slots_sent.clear();
        }
        self.fill_slots(id);
        for t in self.tracks.values_mut() {
            if t.info.participant_id == id {
                t.announced = None;
            }
        }
        self.announce_layers();
    }
}
