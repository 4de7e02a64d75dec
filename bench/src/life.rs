//! How a client of a long run (`bench soak`) lives: when and how it goes (a `leave`, a
//! closed socket, or vanishing without a word), and what it changes while in the call
//! (muting its tracks, what it watches and at which quality), as people in a meeting do.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// When and how a client goes, and its habits until then. The default stays until the
/// run ends, changes nothing, and leaves.
#[derive(Debug, Clone, Default)]
pub struct Life {
    /// When it goes (at the latest when the run ends).
    pub ends: Option<Instant>,
    pub exit: Exit,
    /// It mutes, or unmutes, all its tracks this often.
    pub mute_every: Option<Duration>,
    /// It sends a new `view` (a pinned track, a quality per video track) this often.
    pub view_every: Option<Duration>,
}

/// How a client goes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Exit {
    /// `leave`, then the socket closes: a hang-up.
    #[default]
    Leave,
    /// The WebSocket and the media socket close without a word: a closed tab.
    Close,
    /// Nothing more is sent or read, but its sockets stay open this long: a laptop whose
    /// lid closed or a network that went away. The server must time it out.
    Vanish(Duration),
}

/// A client's habits as it runs: what it does next, and when.
pub struct Habits {
    life: Life,
    next_mute: Option<Instant>,
    next_view: Option<Instant>,
    /// Its tracks are muted: a muted microphone sends silence, a muted camera black
    /// frames.
    pub muted: bool,
    views: u64,
}

impl Habits {
    pub fn new(life: Life, now: Instant) -> Habits {
        Habits {
            next_mute: life.mute_every.map(|d| now + d),
            next_view: life.view_every.map(|d| now + d),
            life,
            muted: false,
            views: 0,
        }
    }

    /// When it goes: its end, or the run's.
    pub fn ends(&self, run_until: Instant) -> Instant {
        self.life.ends.map_or(run_until, |e| e.min(run_until))
    }

    pub fn exit(&self) -> Exit {
        self.life.exit
    }

    /// When it next does something.
    pub fn next_wake(&self) -> Option<Instant> {
        [self.next_mute, self.next_view].into_iter().flatten().min()
    }

    /// The messages due at `now`: `mute` for each of `own_tracks` when its mute is due,
    /// a `view` over the others' `video_tracks` when its view is.
    pub fn due(
        &mut self,
        now: Instant,
        own_tracks: impl Iterator<Item = u64>,
        video_tracks: &BTreeSet<u64>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        if let (Some(at), Some(every)) = (self.next_mute, self.life.mute_every)
            && now >= at
        {
            self.muted = !self.muted;
            self.next_mute = Some(now + every);
            for track_id in own_tracks {
                out.push(json!({"type": "mute", "track_id": track_id, "muted": self.muted}));
            }
        }
        if let (Some(at), Some(every)) = (self.next_view, self.life.view_every)
            && now >= at
        {
            self.next_view = Some(now + every);
            self.views += 1;
            out.push(self.view(video_tracks));
        }
        out
    }

    /// A view that cycles through the qualities, and pins one track every other time.
    fn view(&self, video_tracks: &BTreeSet<u64>) -> Value {
        const QUALITIES: [&str; 3] = ["low", "medium", "high"];
        let quality: Vec<Value> = video_tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let q = QUALITIES[(i + self.views as usize) % QUALITIES.len()];
                json!({"track_id": t, "quality": q})
            })
            .collect();
        let pinned: Vec<u64> = if self.views.is_multiple_of(2) {
            video_tracks
                .iter()
                .nth(self.views as usize % video_tracks.len().max(1))
                .copied()
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        json!({"type": "view", "pinned": pinned, "quality": quality})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutes_and_views_when_due() {
        let t0 = Instant::now();
        let life = Life {
            mute_every: Some(Duration::from_secs(10)),
            view_every: Some(Duration::from_secs(4)),
            ..Life::default()
        };
        let mut h = Habits::new(life, t0);
        let videos: BTreeSet<u64> = [5, 9].into();
        assert_eq!(h.next_wake(), Some(t0 + Duration::from_secs(4)));
        assert!(
            h.due(t0 + Duration::from_secs(1), [1, 2].into_iter(), &videos)
                .is_empty()
        );
        let out = h.due(t0 + Duration::from_secs(4), [1, 2].into_iter(), &videos);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["type"], "view");
        assert_eq!(out[0]["quality"].as_array().map(Vec::len), Some(2));
        let out = h.due(t0 + Duration::from_secs(10), [1, 2].into_iter(), &videos);
        let mutes: Vec<&Value> = out.iter().filter(|m| m["type"] == "mute").collect();
        assert_eq!(mutes.len(), 2);
        assert!(h.muted);
        assert_eq!(mutes[1]["track_id"], 2);
        assert_eq!(mutes[1]["muted"], true);
    }
}
