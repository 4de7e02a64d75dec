//! The cluster seam: where a room lives when several nodes serve as one service. A join
//! for a room another node hosts is sent there (a `redirect` on the WebSocket, `307` for
//! WHIP and WHEP); without a cluster every room lives here.

use crate::plane::Answer;

/// Where a room lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// On this node: join it here.
    Here,
    /// On another node.
    Elsewhere {
        /// Its id.
        node: String,
        /// The base URL of its signaling (`https://sfu-2.example.com`).
        url: String,
    },
}

/// Finds (or chooses) the node a room lives on.
pub trait Placement: Send + Sync + 'static {
    /// Where `room` lives, claiming it for a node first if it lives nowhere yet. Refused
    /// with `cluster_unavailable` when that cannot be known now (Redis is out of reach)
    /// and the room is not here, with `server_busy` when no node takes new rooms.
    fn place(&self, room: &str) -> Answer<Placed>;
}

/// The signaling WebSocket of a node whose signaling is at `base` (`http(s)://…`).
pub fn websocket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{base}/ws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(
            websocket_url("https://a.example:8443/"),
            "wss://a.example:8443/ws"
        );
        assert_eq!(
            websocket_url("http://10.0.0.2:8080"),
            "ws://10.0.0.2:8080/ws"
        );
    }
}
