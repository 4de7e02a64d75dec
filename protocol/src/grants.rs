//! What a join token lets a participant do: its grants and its role in the room.

use serde::{Deserialize, Serialize};

/// What a participant may do in its room. Every grant defaults to `true` when absent,
/// but `force_tcp`, a restriction, which defaults to `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default = "yes")]
    pub publish_audio: bool,
    #[serde(default = "yes")]
    pub publish_video: bool,
    #[serde(default = "yes")]
    pub publish_screen: bool,
    #[serde(default = "yes")]
    pub subscribe: bool,
    /// The administrator's "TCP calling" switch: the client is offered only ICE-TCP
    /// candidates and TURN over TCP or TLS, so it never waits on UDP.
    #[serde(default)]
    pub force_tcp: bool,
    /// What the participant is in its room; `participant` when absent.
    #[serde(default)]
    pub role: Role,
}

/// A participant's part in its room. A conference has participants; a broadcast has
/// presenters and a large receive-only audience of viewers, counted apart (see the
/// server's `--room-capacity` and `--viewer-capacity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Participant,
    Presenter,
    /// Receives only: whatever the publish grants say, it may publish nothing. Not
    /// announced to other viewers, and told only of the others.
    Viewer,
}

impl Grants {
    /// The grants as they apply: a viewer publishes nothing.
    pub fn effective(mut self) -> Grants {
        if self.role == Role::Viewer {
            self.publish_audio = false;
            self.publish_video = false;
            self.publish_screen = false;
        }
        self
    }

    pub fn is_viewer(&self) -> bool {
        self.role == Role::Viewer
    }
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            publish_audio: true,
            publish_video: true,
            publish_screen: true,
            subscribe: true,
            force_tcp: false,
            role: Role::Participant,
        }
    }
}
