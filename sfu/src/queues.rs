//! The participants' event queues, as a shard's driver fills them. Each is bounded
//! ([`signaling::EVENT_QUEUE`]), and most of what goes into it is of the others' doing:
//! who joins and leaves, publishes, mutes and speaks, and their keys. So a queue that is
//! full is no fault of its participant, and never gets it removed. It has fallen
//! behind: messages about the others are dropped (and counted) until it has room again,
//! then the shard tells it the room as it is (`resync`). Its own answers (`answer`,
//! errors, `left`) are held meanwhile, a few, and go first; a participant whose own
//! answers pile up past [`HELD`] reads nothing at all, and is removed.
//!
//! Relayed `e2ee` messages come from other clients and only ever take what the queue
//! holds beyond [`RELAY_RESERVE`] places ([`relay_fits`]); they are dropped while it is
//! behind. The key exchange repairs lost keys by itself.

use std::collections::HashMap;

use protocol::{ParticipantId, ServerMessage};
use sfu_core::shard::{RELAY_RESERVE, RelayDrop, relay_fits};
use tokio::sync::mpsc::{self, error::TrySendError};

// A participant's event queue holds the relays' share and the server's own reserve.
const _: () = assert!(signaling::EVENT_QUEUE >= 2 * RELAY_RESERVE);

/// A participant's own answers held while it is behind; one more and it is removed.
pub const HELD: usize = 64;

// Its held answers fit when it is caught up (with half its queue free).
const _: () = assert!(HELD <= signaling::EVENT_QUEUE / 2);

/// What became of a message for a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// In its queue, or held for it.
    Queued,
    /// Its queue is full: this message, about the others, was dropped.
    Dropped,
    /// Its queue was full just now: it has fallen behind; this message was dropped, or
    /// held if its own.
    FellBehind { dropped: bool },
    /// Its own answers piled up past [`HELD`]: it reads nothing; remove it.
    NotReading,
    /// Its session is gone.
    Closed,
    /// No such participant (left already).
    Unknown,
}

/// The event queues of a shard's participants.
#[derive(Debug, Default)]
pub struct Queues {
    senders: HashMap<ParticipantId, mpsc::Sender<ServerMessage>>,
    /// Those behind, with their own answers held.
    behind: HashMap<ParticipantId, Vec<ServerMessage>>,
}

/// A message that answers the participant's own request, or ends its session.
fn is_own(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::Answer { .. } | ServerMessage::Error(_) | ServerMessage::Left { .. }
    )
}

impl Queues {
    /// Participants with a queue, and those of them behind.
    pub fn len(&self) -> (usize, usize) {
        (self.senders.len(), self.behind.len())
    }

    pub fn insert(&mut self, id: ParticipantId, events: mpsc::Sender<ServerMessage>) {
        self.senders.insert(id, events);
    }

    /// Forgets a participant's queue. A participant removed while behind still has its
    /// own last messages held (its `left`): they are returned with its queue, to be
    /// delivered as it makes room.
    pub fn remove(
        &mut self,
        id: ParticipantId,
    ) -> Option<(mpsc::Sender<ServerMessage>, Vec<ServerMessage>)> {
        let events = self.senders.remove(&id)?;
        let held = self.behind.remove(&id).filter(|h| !h.is_empty())?;
        Some((events, held))
    }

    /// Queues a message of the server's for `id`.
    pub fn signal(&mut self, id: ParticipantId, message: ServerMessage) -> Delivery {
        let Some(events) = self.senders.get(&id) else {
            return Delivery::Unknown;
        };
        if let Some(held) = self.behind.get_mut(&id) {
            if !is_own(&message) {
                return Delivery::Dropped;
            }
            if held.len() >= HELD {
                return Delivery::NotReading;
            }
            held.push(message);
            return Delivery::Queued;
        }
        match events.try_send(message) {
            Ok(()) => Delivery::Queued,
            Err(TrySendError::Full(message)) => {
                let dropped = !is_own(&message);
                let held = if dropped { Vec::new() } else { vec![message] };
                self.behind.insert(id, held);
                Delivery::FellBehind { dropped }
            }
            Err(TrySendError::Closed(_)) => Delivery::Closed,
        }
    }

    /// Queues an `e2ee` message another client sent `id`, if it fits above the reserve.
    pub fn relay(&mut self, id: ParticipantId, message: ServerMessage) -> Result<(), RelayDrop> {
        let Some(events) = self.senders.get(&id) else {
            return Err(RelayDrop::Gone);
        };
        if self.behind.contains_key(&id) || !relay_fits(events.capacity()) {
            return Err(RelayDrop::QueueReserve);
        }
        match events.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(RelayDrop::QueueReserve),
            Err(TrySendError::Closed(_)) => Err(RelayDrop::Gone),
        }
    }

    /// Those behind whose queues are half empty again: their held answers are queued now;
    /// the shard owes each a `resync`.
    pub fn caught_up(&mut self) -> Vec<ParticipantId> {
        if self.behind.is_empty() {
            return Vec::new();
        }
        let ready: Vec<ParticipantId> = self
            .behind
            .iter()
            .filter(|(id, held)| {
                self.senders.get(id).is_some_and(|e| {
                    e.capacity() >= e.max_capacity() / 2 && e.capacity() >= held.len()
                })
            })
            .map(|(id, _)| id)
            .copied()
            .collect();
        for id in &ready {
            let held = self.behind.remove(id).unwrap_or_default();
            if let Some(events) = self.senders.get(id) {
                for message in held {
                    // There is room for all of them.
                    let _ = events.try_send(message);
                }
            }
        }
        ready
    }
}
