//! The media-plane seam: what signaling asks of the media server, and how answers return.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use protocol::{ErrorMessage, IceServer, Join, ParticipantId, Request, ServerMessage};
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
pub type Pending = Pin<Box<dyn Future<Output = Result<(), ErrorMessage>> + Send + 'static>>;

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
}
