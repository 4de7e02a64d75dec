//! End-to-end encryption's key exchange: `e2ee` messages relayed as they came to a
//! participant of the sender's room, never read; and what a relay may take of its
//! recipient's event queue.
//!
//! A participant whose event queue overflows falls behind: the driver drops what does
//! not fit, then catches it up with `resync` ([`Shard::resync`]). Relays come from other
//! clients, so a flood of them must not even do that: they are a separate output,
//! [`ShardOutput::Relay`], which the driver delivers only while the queue keeps
//! [`RELAY_RESERVE`] places free for the server's own messages ([`relay_fits`]), and
//! otherwise drops and counts ([`RelayDrop::QueueReserve`]).

use protocol::{E2eeData, ErrorCode, ParticipantId, RequestType, ServerMessage};

use super::{Shard, ShardOutput};

/// Places of a participant's event queue that relayed messages never take: the
/// server's own messages always find at least this many free (as many as the whole
/// queue held before relays existed).
pub const RELAY_RESERVE: usize = 256;

/// Whether a relayed message may go into an event queue that has `free` places left:
/// only if [`RELAY_RESERVE`] places stay free after it.
pub fn relay_fits(free: usize) -> bool {
    free > RELAY_RESERVE
}

/// Why a relayed `e2ee` message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDrop {
    /// The recipient's event queue is down to its reserve: it reads too slowly for what
    /// it is sent.
    QueueReserve,
    /// The shard's relay queue was full (the sender is answered `server_busy`).
    ShardBusy,
    /// The recipient left before it could be delivered.
    Gone,
}

impl RelayDrop {
    /// Every reason, in the order of [`RelayDrop::index`].
    pub const ALL: [RelayDrop; 3] = [
        RelayDrop::QueueReserve,
        RelayDrop::ShardBusy,
        RelayDrop::Gone,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayDrop::QueueReserve => "queue_reserve",
            RelayDrop::ShardBusy => "shard_busy",
            RelayDrop::Gone => "gone",
        }
    }
}

impl Shard {
    /// Relays `data` from `from` to `to`, if `to` is another participant of its room
    /// that `from` may know of (a viewer hears only of presenters and participants unless
    /// it asked for the audience); otherwise `bad_request` to the sender.
    pub(super) fn relay(&mut self, from: ParticipantId, to: ParticipantId, data: E2eeData) {
        let Some(sender) = self.participants.get(&from) else {
            return;
        };
        let known = to != from
            && self.participants.get(&to).is_some_and(|recipient| {
                recipient.room == sender.room
                    && (sender.hears_audience || !recipient.grants.is_viewer())
            });
        if !known {
            self.error(
                from,
                RequestType::E2ee,
                ErrorCode::BadRequest,
                "no such participant in this room",
            );
            return;
        }
        self.outputs
            .push_back(ShardOutput::Relay(to, ServerMessage::E2ee { from, data }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_leave_the_reserve_free() {
        assert!(!relay_fits(0));
        assert!(!relay_fits(RELAY_RESERVE));
        assert!(relay_fits(RELAY_RESERVE + 1));
    }

    #[test]
    fn drop_reasons_index_densely() {
        for (i, reason) in RelayDrop::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
