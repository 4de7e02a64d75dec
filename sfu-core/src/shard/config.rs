//! How a shard behaves: its limits and the sizes of what a subscriber is shown.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// How a shard behaves; the same for every shard of a server.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// A participant whose media sent nothing for this long is removed.
    pub participant_timeout: Duration,
    /// At most one keyframe request per source in this interval.
    pub keyframe_interval: Duration,
    /// Most participants in one room (presenters count among them; viewers do not).
    pub room_capacity: usize,
    /// Most viewers (receive-only audience of a broadcast) in one room.
    pub viewer_capacity: usize,
    /// In rooms of more participants than this, each subscriber receives only the
    /// `loudest_n` loudest microphones (and the pinned ones), and cameras other than the
    /// speaker's as thumbnails.
    pub loudest_threshold: usize,
    pub loudest_n: usize,
    /// Most cameras a subscriber receives (besides pinned ones), by speaking order.
    pub last_n: usize,
    /// This shard's index and the number of shards, to make track ids unique server-wide.
    pub index: u64,
    pub count: u64,
    /// Test only: yield a [`ShardOutput::Tap`](super::ShardOutput::Tap) for every RTP
    /// packet received from a publisher, payload included (`sfu --tap`), so that a test
    /// can show what the server forwards; only of rooms whose name starts with this
    /// prefix (`sfu --tap-rooms`; empty: every room). Off by default; when off it costs a
    /// branch.
    pub tap: Option<String>,
    /// Shape a conference member's link to the rate its losses proved once a policer
    /// drops what it is sent (`shaping.rs`): a browser's keyframes then cross the
    /// policer whole. Off by default: the rate is measured from receiver reports, whose
    /// shares lost count another window than the server's sending and count a resend
    /// that made up for a loss as received, and a rate measured far from the link's
    /// still costs other cases (a 1.6 x to 0.9 x fall broken 6.7 s of 20 in one sans-IO
    /// run of five, against 3.9 off; Chromium's picture stopped 1.9 and 6.6 s in two
    /// runs of six); see the README.
    pub shape_links: bool,
    /// The relay addresses of this server's own TURN relay (an address and its relay
    /// ports): a participant whose media comes from one goes through it (the admin
    /// API's `turn` transport).
    pub turn_relays: Vec<(IpAddr, RangeInclusive<u16>)>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            participant_timeout: Duration::from_secs(20),
            keyframe_interval: Duration::from_millis(200),
            room_capacity: 70,
            viewer_capacity: 500,
            loudest_threshold: 8,
            loudest_n: 3,
            last_n: 25,
            index: 0,
            count: 1,
            tap: None,
            shape_links: false,
            turn_relays: Vec::new(),
        }
    }
}
