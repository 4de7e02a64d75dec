//! The media-plane seam: what signaling asks of the media server (joins and requests
//! for participants; for the admin API, what calls are going on and actions on them),
//! and how answers return.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use protocol::admin::{Action, RoomDetail, RoomSummary};
use protocol::{ErrorMessage, IceServer, Join, ParticipantId, Policy, Request, ServerMessage};
use tokio::sync::mpsc;

/// How many messages may wait for one slow client. Past that it has fallen behind: the
/// media plane drops the messages about the others until it has room again, then sends
/// it `resync`, the room as it is. Messages other clients send it (`e2ee` relays) take
/// at most three quarters of it: the media plane keeps a reserve of places (256) for its
/// own messages, and drops relays rather than fill it. (tokio allocates the queue as it
/// fills.)
pub const EVENT_QUEUE: usize = 1024;

/// Mints the ICE servers (TURN URLs and credentials) for a participant's identity.
pub type IceServerSource = Arc<dyn Fn(&str) -> Vec<IceServer> + Send + Sync>;

/// What [`MediaPlane::offer`] returns: settles once the offer is read and queued, or
/// refused.
pub type Pending = Answer<()>;

/// What the media plane answers the admin API, once it has: `server_busy` when it
/// cannot take the question now, `internal` when a shard stopped.
pub type Answer<T> = Pin<Box<dyn Future<Output = Result<T, ErrorMessage>> + Send + 'static>>;

/// The media plane as signaling sees it. Every method but `offer` returns at once: the
/// answers and notifications come back through the participant's event queue.
pub trait MediaPlane: Send + Sync + 'static {
    /// Admits a participant. Its `joined` message (or `room_full`) arrives on `events`;
    /// when the media plane drops `events`, the session closes the socket.
    fn join(
        &self,
        join: Join,
        events: mpsc::Sender<ServerMessage>,
    ) -> Result<ParticipantId, ErrorMessage>;

    /// Passes on a request; `server_busy` when the media plane cannot queue it now.
    fn request(&self, participant: ParticipantId, request: Request) -> Result<(), ErrorMessage>;

    /// Passes on an `offer` request (any other is passed on as by [`MediaPlane::request`]).
    /// Reading the SDP of a large offer takes tens of milliseconds, which the media
    /// plane spends off its media threads: the result settles when the offer is read and
    /// queued, or refused (`bad_sdp`, `bad_request`, `server_busy`, `internal`; within 5 s
    /// at most). A session awaits it before it reads its next message, so a participant's
    /// requests keep their order.
    fn offer(&self, participant: ParticipantId, offer: Request) -> Pending;

    /// The participant left or its socket closed. Never refused, never lost.
    fn leave(&self, participant: ParticipantId);

    /// Every call in progress.
    fn rooms(&self) -> Answer<Vec<RoomSummary>>;

    /// One call and its members; `None` when no call has that name.
    fn room(&self, room: &str) -> Answer<Option<RoomDetail>>;

    /// Acts on a call (the admin API); `false` when the room, or the participant or
    /// track the action names in it, is not there.
    fn act(&self, room: &str, action: Action) -> Answer<bool>;

    /// A group's policy changed: its members in calls have their grants narrowed anew
    /// (tracks no longer allowed unpublished; with `calling` off, they are removed).
    /// Settles once every shard has it queued.
    fn apply_policy(&self, group: &str, policy: Policy) -> Answer<()>;
}
