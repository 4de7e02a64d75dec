//! Which layers each publisher is told somebody receives (`layers`): the others pause.

use std::time::Instant;

use protocol::ServerMessage;
use tracing::debug;

use super::track::{PAUSE_AFTER, Track};
use super::{Shard, ShardOutput};

impl Shard {
    /// Tells each publisher of a simulcast track which of its layers somebody receives
    /// (or is switching to), when that changes; the others may be paused.
    pub(super) fn announce_layers(&mut self) {
        let now = self.now;
        for (track_id, t) in &mut self.tracks {
            if t.layers.len() < 2 || t.svc {
                continue;
            }
            let mut mask = 0u8;
            for (sub, slot) in t.subscribers.iter() {
                let s = self
                    .participants
                    .get(sub)
                    .and_then(|p| p.subscriptions.get(*slot));
                if let Some(s) = s {
                    for l in [s.current, s.target].into_iter().flatten() {
                        mask |= 1 << l;
                    }
                }
            }
            let Some(active) = t.announce(mask, now) else {
                continue;
            };
            debug!(track = %track_id, ?active, "layers received");
            self.outputs.push_back(ShardOutput::Signal(
                t.info.participant_id,
                ServerMessage::Layers {
                    track_id: *track_id,
                    active,
                },
            ));
        }
    }
}

impl Track {
    /// The layers to announce to the publisher, given those `received` (a bit each) by a
    /// subscriber now or switching to them: a layer stays on for `PAUSE_AFTER` after its
    /// last receiver left it (resuming costs a keyframe, and choices near a bandwidth
    /// limit come and go), and the lowest stays on while anyone receives one: it is
    /// every subscriber's floor, and falling to it must not wait for a paused encoder to
    /// start (seconds in Chromium, during which the picture freezes). The others are
    /// paused. `None` when that is what was announced last: nothing to say.
    pub(super) fn announce(&mut self, received: u8, now: Instant) -> Option<Vec<String>> {
        let mut mask = if received != 0 { received | 1 } else { 0 };
        for (i, l) in self.layers.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                l.needed_at = Some(now);
            } else if l.needed_at.is_some_and(|at| now < at + PAUSE_AFTER) {
                mask |= 1 << i;
            }
        }
        if self.announced == Some(mask) {
            return None;
        }
        self.announced = Some(mask);
        let mut active = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let on = mask & (1 << i) != 0;
            if on && l.paused {
                l.expected_since = now;
            }
            l.paused = !on;
            if on {
                active.push(self.info.layers[i].clone());
            }
        }
        Some(active)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::Source;

    use crate::shard::track::PAUSE_AFTER;
    use crate::shard::track::tests::track;

    #[test]
    fn layers_nobody_receives_pause_after_a_while_but_the_lowest_and_changes_are_said_once() {
        let mut t = track(1, Source::Camera, &["q", "h", "f"], 0);
        let start = t.layers[0].expected_since;
        // Only the top layer is received: the middle one pauses at once (never needed),
        // the lowest stays on, the floor to fall to.
        assert_eq!(
            t.announce(0b100, start),
            Some(vec!["q".to_string(), "f".to_string()])
        );
        assert!(!t.layers[0].paused && t.layers[1].paused && !t.layers[2].paused);
        let last = start + Duration::from_millis(200);
        assert_eq!(t.announce(0b100, last), None);
        // A receiver moves to the middle layer and back: each stays on until PAUSE_AFTER
        // passed since it was last received.
        let moved = start + Duration::from_secs(1);
        assert_eq!(
            t.announce(0b010, moved),
            Some(vec!["q".to_string(), "h".to_string(), "f".to_string()])
        );
        // Resumed: expected from now, so not taken for stalled at once.
        assert_eq!(t.layers[1].expected_since, moved);
        let back = moved + Duration::from_millis(200);
        assert_eq!(t.announce(0b100, back), None);
        let before = moved + PAUSE_AFTER - Duration::from_millis(1);
        assert_eq!(t.announce(0b100, before), None);
        assert_eq!(
            t.announce(0b100, moved + PAUSE_AFTER),
            Some(vec!["q".to_string(), "f".to_string()])
        );
        // Nobody receives anything: everything pauses, once its wait is over.
        let gone = back + PAUSE_AFTER * 2;
        assert_eq!(t.announce(0, gone), Some(vec![]));
        assert!(t.layers.iter().all(|l| l.paused));
    }
}
