//! What a join token lets a participant do: its grants and its role in the room.

use serde::{Deserialize, Serialize};

/// What a participant may do in its room. Every grant defaults to `true` when absent,
/// but `force_tcp`, a restriction, and `plaintext`, an exception to end-to-end
/// encryption, which default to `false`.
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
    /// The participant may send media frames in the clear (`join` with `e2ee: false`):
    /// for WHIP ingest from tools that cannot encrypt frames. Without it, a join that
    /// may publish must say it encrypts (`e2ee_required`).
    #[serde(default)]
    pub plaintext: bool,
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

    /// Whether these grants let the participant publish anything (audio, video or
    /// screen). Apply to [`Grants::effective`] ones: a viewer's say nothing.
    pub fn may_publish(&self) -> bool {
        self.publish_audio || self.publish_video || self.publish_screen
    }

    /// Whether a participant with these (effective) grants may join saying it sends
    /// media in the clear (`e2ee: false`): only one that publishes nothing, or whose
    /// token has `plaintext`.
    pub fn may_join_in_clear(&self) -> bool {
        !self.may_publish() || self.plaintext
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
            plaintext: false,
            role: Role::Participant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_publishers_without_plaintext_must_encrypt() {
        let all = Grants::default();
        assert!(!all.plaintext, "plaintext is off unless granted");
        assert!(!all.may_join_in_clear());
        let plaintext = Grants {
            plaintext: true,
            ..all
        };
        assert!(plaintext.may_join_in_clear());
        let listener = Grants {
            publish_audio: false,
            publish_video: false,
            publish_screen: false,
            ..all
        };
        assert!(listener.may_join_in_clear(), "receive-only sends nothing");
        let viewer = Grants {
            role: Role::Viewer,
            ..all
        };
        assert!(
            !viewer.may_join_in_clear(),
            "as written, before effective()"
        );
        assert!(viewer.effective().may_join_in_clear());
    }

    #[test]
    fn grants_read_from_json_default_plaintext_off() {
        let g: Grants = serde_json::from_str(r#"{"publish_video": false}"#).unwrap();
        assert!(!g.plaintext && g.publish_audio && !g.publish_video);
        let g: Grants = serde_json::from_str(r#"{"plaintext": true}"#).unwrap();
        assert!(g.plaintext);
    }
}
