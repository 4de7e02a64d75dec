//! A group's calling policy: what the administrator allows a security group of users,
//! which narrows the grants of every token that names the group.

use serde::{Deserialize, Serialize};

use crate::grants::{Grants, Role};

/// The group of a token that names none.
pub const DEFAULT_GROUP: &str = "default";

/// Longest group name, in bytes.
pub const MAX_GROUP_BYTES: usize = 64;

/// What a group of users may do in calls. Every switch allows when absent but
/// `force_tcp` and `e2ee_required`, restrictions that are off when absent: a group
/// written as `{}` is what a token alone grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// May take part in calls at all. Off: joins are refused (`forbidden`) and members
    /// in calls are removed (`left`, reason `removed`).
    #[serde(default = "yes")]
    pub calling: bool,
    /// May publish video: the camera and the screen. Off: those tracks are unpublished
    /// and further video publishes refused (`forbidden`); audio goes on.
    #[serde(default = "yes")]
    pub video: bool,
    /// May share the screen (with `video` on).
    #[serde(default = "yes")]
    pub screen_share: bool,
    /// May present to an audience (join with the `presenter` role). Off: a presenter's
    /// join is refused, and one in a call has its tracks unpublished.
    #[serde(default = "yes")]
    pub broadcast: bool,
    /// Clients are offered only TCP paths (ICE-TCP, TURN over TCP or TLS), from their
    /// next join on.
    #[serde(default)]
    pub force_tcp: bool,
    /// Most participants (viewers apart) in a room a member of the group opens; `None`:
    /// the server's `--room-capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    /// No member may send media in the clear, whatever its token's `plaintext` grant:
    /// such joins are refused (`e2ee_required`), and a member publishing in the clear
    /// when it is switched on is removed.
    #[serde(default)]
    pub e2ee_required: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            calling: true,
            video: true,
            screen_share: true,
            broadcast: true,
            force_tcp: false,
            max_participants: None,
            e2ee_required: false,
        }
    }
}

impl Policy {
    /// A token's (effective) grants as this policy lets them apply: every permission it
    /// does not allow taken away, every restriction it sets added. Narrowing never
    /// widens: `narrow(narrow(g)) == narrow(g)`, and a grant off in `grants` stays off.
    pub fn narrow(&self, mut grants: Grants) -> Grants {
        let present = self.calling && (self.broadcast || grants.role != Role::Presenter);
        grants.publish_audio &= present;
        grants.publish_video &= present && self.video;
        grants.publish_screen &= present && self.video && self.screen_share;
        grants.subscribe &= self.calling;
        grants.force_tcp |= self.force_tcp;
        grants.plaintext &= !self.e2ee_required;
        grants
    }

    /// Why a member of this group may not join with `grants` (as its token has them);
    /// `None`: it may.
    pub fn refuses(&self, grants: &Grants) -> Option<&'static str> {
        if !self.calling {
            Some("your group may not take part in calls")
        } else if grants.role == Role::Presenter && !self.broadcast {
            Some("your group may not present to an audience")
        } else {
            None
        }
    }
}

/// Whether `name` may name a group: 1 to [`MAX_GROUP_BYTES`] bytes of letters, digits,
/// `-`, `_` and `.`, the first a letter or digit (it appears in URLs of the admin API,
/// where `.` and `..` would be taken for path steps, and in metric labels).
pub fn valid_group_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= MAX_GROUP_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_changes_nothing() {
        let p: Policy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, Policy::default());
        let g = Grants {
            plaintext: true,
            ..Grants::default()
        };
        assert_eq!(p.narrow(g), g);
        assert_eq!(p.refuses(&g), None);
    }

    #[test]
    fn narrowing_takes_away_and_never_gives() {
        let audio_only = Policy {
            video: false,
            e2ee_required: true,
            ..Policy::default()
        };
        let g = audio_only.narrow(Grants {
            plaintext: true,
            ..Grants::default()
        });
        assert!(g.publish_audio && !g.publish_video && !g.publish_screen && g.subscribe);
        assert!(!g.plaintext);
        let no_screen = Policy {
            screen_share: false,
            force_tcp: true,
            ..Policy::default()
        };
        let g = no_screen.narrow(Grants::default());
        assert!(g.publish_video && !g.publish_screen && g.force_tcp);
        // A grant the token lacks stays off; narrowing twice is narrowing once.
        let listener = Grants {
            publish_audio: false,
            ..Grants::default()
        };
        assert!(!Policy::default().narrow(listener).publish_audio);
        assert_eq!(
            no_screen.narrow(no_screen.narrow(listener)),
            no_screen.narrow(listener)
        );
    }

    #[test]
    fn presenters_need_broadcast_and_everyone_calling() {
        let no_broadcast = Policy {
            broadcast: false,
            ..Policy::default()
        };
        let presenter = Grants {
            role: Role::Presenter,
            ..Grants::default()
        };
        assert!(no_broadcast.refuses(&presenter).is_some());
        assert!(!no_broadcast.narrow(presenter).may_publish());
        assert!(no_broadcast.refuses(&Grants::default()).is_none());
        assert!(no_broadcast.narrow(Grants::default()).publish_video);
        let off = Policy {
            calling: false,
            ..Policy::default()
        };
        assert!(off.refuses(&Grants::default()).is_some());
        let g = off.narrow(Grants::default());
        assert!(!g.may_publish() && !g.subscribe);
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        assert!(serde_json::from_str::<Policy>(r#"{"vidoe": false}"#).is_err());
        assert!(valid_group_name("sales-emea_2.b"));
        for bad in ["", "a/b", "a b", "ü", ".", "..", "-a", &"x".repeat(65)] {
            assert!(!valid_group_name(bad), "{bad:?}");
        }
    }
}
