//! A call: who is in it, what they publish, and who spoke last.

use std::time::Instant;

use protocol::{ParticipantId, TrackId};

/// A call: who is in it and what they publish.
pub(super) struct Room {
    /// When it started, and the group of who opened it.
    pub(super) started: Instant,
    pub(super) group: String,
    /// Most participants (viewers apart): the opener's group's `max_participants`.
    pub(super) max_participants: Option<u32>,
    /// The most members at once.
    pub(super) peak: usize,
    pub(super) members: Vec<ParticipantId>,
    pub(super) tracks: Vec<TrackId>,
    /// Members, who spoke most recently first; those who never spoke in joining order.
    pub(super) recent: Vec<ParticipantId>,
    pub(super) dominant: Option<ParticipantId>,
    /// The last `active_speakers` sent, and when.
    pub(super) speakers: Vec<ParticipantId>,
    pub(super) speakers_sent: Option<Instant>,
}

impl Room {
    pub(super) fn new(started: Instant, group: String, max_participants: Option<u32>) -> Room {
        Room {
            started,
            group,
            max_participants,
            peak: 0,
            members: Vec::new(),
            tracks: Vec::new(),
            recent: Vec::new(),
            dominant: None,
            speakers: Vec::new(),
            speakers_sent: None,
        }
    }

    /// Whether the room is large (above `loudest_threshold`: only the loudest microphones
    /// are forwarded, other cameras as thumbnails), and `id`'s place in the speaking order.
    pub(super) fn standing(&self, id: ParticipantId, loudest_threshold: usize) -> (bool, usize) {
        let large = self.members.len() > loudest_threshold;
        let rank = self
            .recent
            .iter()
            .position(|m| *m == id)
            .unwrap_or(usize::MAX);
        (large, rank)
    }
}
