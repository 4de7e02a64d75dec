//! What a node says of itself in the registry: where clients reach it, what state it is
//! in, and how loaded it is.

use serde::{Deserialize, Serialize};

/// One server of the cluster, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Its id (`--node`), unique in the cluster.
    pub id: String,
    /// Its region, when regions are set: placement prefers the entry node's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The base URL of its signaling, as clients reach it (`https://sfu-2.example.com`).
    pub url: String,
    /// The public addresses its media candidates advertise.
    #[serde(default)]
    pub media: Vec<String>,
    pub state: NodeState,
    pub load: NodeLoad,
    /// When it made this report, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Up, but not serving yet: no room is placed on it.
    Starting,
    /// Takes new rooms.
    Serving,
    /// Its calls go on; no new room is placed on it.
    Draining,
}

/// How loaded a node is, as it measured itself at its last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Calls it hosts.
    pub rooms: u32,
    /// Participants and viewers in them.
    pub participants: u32,
    /// Tracks published in them.
    pub tracks: u32,
    /// Media packets it sends a second.
    pub egress_pps: u64,
    /// The busy share of its busiest shard thread, 0 to 1.
    pub shard_load: f32,
    /// It refuses new calls now (its limits are reached): no room is placed on it.
    pub overloaded: bool,
}

impl Node {
    /// Whether a new room may be placed on it.
    pub fn takes_rooms(&self) -> bool {
        self.state == NodeState::Serving && !self.load.overloaded
    }
}
