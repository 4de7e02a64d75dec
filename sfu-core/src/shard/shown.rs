//! The one rule for what a subscriber receives of each track of its room.

use protocol::{Kind, Source};

use super::ShardConfig;
use super::track::Track;

/// What a subscriber (`large` room, its own place `my_rank` in the speaking order)
/// receives of the track `t`, `pinned` or not: for a microphone, `Some(0)` if it hears
/// it (every one in a small room; in a large one the loudest `loudest_n` and the pinned);
/// for a video, its importance, most important first (screens, pinned, the dominant
/// speaker's camera, then the cameras of the last `last_n` to speak, in speaking order).
/// `None`: not received. The one rule both `fill_slots` and `choose_for` follow.
pub(super) fn shown(
    t: &Track,
    pinned: bool,
    (large, my_rank): (bool, usize),
    config: &ShardConfig,
) -> Option<u32> {
    // The publisher's place among the others (this subscriber left out).
    let rank = if t.rank > my_rank { t.rank - 1 } else { t.rank };
    if t.info.kind == Kind::Audio {
        (!large || pinned || rank < config.loudest_n).then_some(0)
    } else if t.info.source == Source::Screen {
        Some(0)
    } else if pinned {
        Some(1)
    } else if t.dominant {
        Some(2)
    } else if rank < config.last_n {
        u32::try_from(rank).ok().map(|r| r.saturating_add(3))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use protocol::Source;

    use super::*;
    use crate::shard::track::tests::track;

    fn config() -> ShardConfig {
        ShardConfig {
            loudest_threshold: 8,
            loudest_n: 3,
            last_n: 5,
            ..ShardConfig::default()
        }
    }

    #[test]
    fn in_a_small_room_every_microphone_is_heard_in_a_large_one_the_loudest_and_pinned() {
        let config = config();
        let quiet = track(9, Source::Microphone, &[], 7);
        assert_eq!(shown(&quiet, false, (false, 0), &config), Some(0));
        assert_eq!(shown(&quiet, false, (true, 0), &config), None);
        assert_eq!(shown(&quiet, true, (true, 0), &config), Some(0));
        // The subscriber's own place is left out of the order: the fourth to speak is
        // the third loudest of the others when the subscriber is among the first three.
        let fourth = track(4, Source::Microphone, &[], 3);
        assert_eq!(shown(&fourth, false, (true, 1), &config), Some(0));
        assert_eq!(shown(&fourth, false, (true, 5), &config), None);
    }

    #[test]
    fn videos_go_screens_pinned_dominant_then_the_last_n_to_speak() {
        let config = config();
        let screen = track(1, Source::Screen, &[], 40);
        assert_eq!(shown(&screen, false, (true, 0), &config), Some(0));
        let camera = |rank| track(2, Source::Camera, &["q", "h", "f"], rank);
        assert_eq!(shown(&camera(40), true, (true, 0), &config), Some(1));
        let mut dominant = camera(40);
        dominant.dominant = true;
        assert_eq!(shown(&dominant, false, (true, 0), &config), Some(2));
        // Rank 2 among the others (the subscriber spoke later): third in line.
        assert_eq!(shown(&camera(2), false, (true, 50), &config), Some(5));
        assert_eq!(shown(&camera(4), false, (true, 50), &config), Some(7));
        // Past the last five to speak: not received, in small rooms too.
        assert_eq!(shown(&camera(5), false, (true, 50), &config), None);
        assert_eq!(shown(&camera(5), false, (false, 50), &config), None);
    }
}
