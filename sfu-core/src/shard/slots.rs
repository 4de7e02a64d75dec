//! Slots: a participant's fixed receiving m-lines, filled with the tracks chosen for it.

use protocol::{Kind, ParticipantId, ServerMessage, SlotTrack, TrackId};
use str0m::media::Mid;

use super::Shard;
use super::shown::shown;

impl Shard {
    /// Puts on a slotted participant's slot m-lines the tracks it should receive, by the
    /// order `choose_for` serves them: microphones pinned, then by speaking order (in a
    /// large room only the loudest `loudest_n` and the pinned); videos screens first,
    /// then pinned, the dominant speaker's camera, the cameras of the last `last_n` to
    /// speak. A track keeps its slot while it stays chosen; one newly chosen takes a free
    /// slot. The client hears of changes in a `slots` message.
    pub(super) fn fill_slots(&mut self, id: ParticipantId) {
        let config = &self.config;
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        if p.slot_mids.is_empty() {
            return;
        }
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let standing = room.standing(id, config.loudest_threshold);
        // (order, track) of the tracks it should receive, per kind: microphones pinned
        // first, then by speaking order.
        let mut audio: Vec<(usize, TrackId)> = Vec::new();
        let mut video: Vec<(usize, TrackId)> = Vec::new();
        for track_id in &room.tracks {
            let Some(t) = self.tracks.get(track_id) else {
                continue;
            };
            if t.info.participant_id == id {
                continue;
            }
            let pinned = p.view.pinned.binary_search(track_id).is_ok();
            let Some(order) = shown(t, pinned, standing, config) else {
                continue;
            };
            if t.info.kind == Kind::Audio {
                let order = if pinned { 0 } else { t.rank.saturating_add(1) };
                audio.push((order, *track_id));
            } else {
                video.push((order as usize, *track_id));
            }
        }
        audio.sort_unstable();
        video.sort_unstable();
        let count = |kind: Kind| p.slot_mids.iter().filter(|(_, k)| *k == kind).count();
        audio.truncate(count(Kind::Audio));
        video.truncate(count(Kind::Video));
        let chosen = |kind: Kind| -> Vec<TrackId> {
            let list = if kind == Kind::Audio { &audio } else { &video };
            list.iter().map(|(_, t)| *t).collect()
        };
        let (audio, video) = (chosen(Kind::Audio), chosen(Kind::Video));
        let on = |mid: Mid| p.subscriptions.on(mid).map(|(_, s)| s.track_id());
        let mapping = place(&p.slot_mids, on, &audio, &video);
        let wanted: Vec<(Mid, TrackId)> = mapping
            .iter()
            .filter_map(|(mid, t)| t.map(|t| (*mid, t)))
            .collect();
        let changed = mapping != p.slots_sent;
        self.set_subscriptions(id, &wanted);
        if changed {
            if let Some(p) = self.participants.get_mut(&id) {
                p.slots_sent = mapping.clone();
            }
            let slots = mapping
                .into_iter()
                .map(|(mid, track_id)| SlotTrack {
                    mid: mid.to_string(),
                    track_id,
                })
                .collect();
            self.signal(id, ServerMessage::Slots { slots });
        }
    }
}

/// What each slot m-line (`slot_mids`, of a kind each) carries, given the `audio` and
/// `video` tracks chosen, most important first, and the track `on` each m-line now.
/// Chosen tracks keep their slots (one each: a track a per-track offer had put on two
/// m-lines keeps the first); the others fill the free ones, in slot order. `None`: the
/// slot is free.
pub(super) fn place(
    slot_mids: &[(Mid, Kind)],
    on: impl Fn(Mid) -> Option<TrackId>,
    audio: &[TrackId],
    video: &[TrackId],
) -> Vec<(Mid, Option<TrackId>)> {
    let list = |kind: Kind| if kind == Kind::Audio { audio } else { video };
    let mut kept: Vec<TrackId> = Vec::new();
    let mut mapping: Vec<(Mid, Option<TrackId>)> = slot_mids
        .iter()
        .map(|(mid, kind)| {
            let on = on(*mid).filter(|t| list(*kind).contains(t) && !kept.contains(t));
            kept.extend(on);
            (*mid, on)
        })
        .collect();
    for kind in [Kind::Audio, Kind::Video] {
        let placed: Vec<TrackId> = mapping.iter().filter_map(|(_, on)| *on).collect();
        let mut waiting = list(kind).iter().filter(|t| !placed.contains(t));
        for (i, (mid, k)) in slot_mids.iter().enumerate() {
            if *k == kind && mapping[i].1.is_none() {
                match waiting.next() {
                    Some(t) => mapping[i] = (*mid, Some(*t)),
                    None => break,
                }
            }
        }
    }
    mapping
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mids(kinds: &[Kind]) -> Vec<(Mid, Kind)> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, k)| (Mid::from(i.to_string().as_str()), *k))
            .collect()
    }

    fn tracks(mapping: &[(Mid, Option<TrackId>)]) -> Vec<Option<u64>> {
        mapping.iter().map(|(_, t)| t.map(|t| t.0)).collect()
    }

    const A: Kind = Kind::Audio;
    const V: Kind = Kind::Video;

    #[test]
    fn new_tracks_fill_free_slots_of_their_kind_in_slot_order() {
        let slots = mids(&[A, V, A, V, V]);
        let mapping = place(&slots, |_| None, &[TrackId(1)], &[TrackId(7), TrackId(8)]);
        assert_eq!(tracks(&mapping), [Some(1), Some(7), None, Some(8), None]);
    }

    #[test]
    fn chosen_tracks_keep_their_slots_and_the_dropped_ones_free_theirs() {
        let slots = mids(&[V, V, V]);
        // Slot 0 carries 7, slot 1 carries 8, slot 2 carries 9; now 9, 10 and 7 are
        // chosen (8 dropped): 7 and 9 stay where they are, 10 takes 8's slot.
        let on = |mid: Mid| match mid.to_string().as_str() {
            "0" => Some(TrackId(7)),
            "1" => Some(TrackId(8)),
            "2" => Some(TrackId(9)),
            _ => None,
        };
        let chosen = [TrackId(9), TrackId(10), TrackId(7)];
        let mapping = place(&slots, on, &[], &chosen);
        assert_eq!(tracks(&mapping), [Some(7), Some(10), Some(9)]);
    }

    #[test]
    fn a_track_on_two_m_lines_keeps_the_first_and_fewer_slots_than_tracks_fill_all() {
        let slots = mids(&[A, A]);
        let mapping = place(&slots, |_| Some(TrackId(3)), &[TrackId(3), TrackId(4)], &[]);
        assert_eq!(tracks(&mapping), [Some(3), Some(4)]);
        // A track of the other kind is never put on an audio slot.
        let mapping = place(&slots, |_| None, &[], &[TrackId(5)]);
        assert_eq!(tracks(&mapping), [None, None]);
    }
}
