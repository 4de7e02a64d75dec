//! The WebSocket session: one task per socket, from join through the request loop to
//! close, writing the media plane's events in batches.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::addresses::SocketPlace;
use crate::budget::Budgets;
use crate::placement::{Placed, websocket_url};
use crate::plane::EVENT_QUEUE;
use crate::state::{AppState, REFUSED_JOINS, REFUSED_SOCKETS};
use protocol::{
    ClientMessage, ErrorCode, ErrorMessage, ParticipantId, RequestType, ServerMessage, Transport,
};
use protocol::{Join, Request};

/// Largest WebSocket frame the transport accepts; larger frames close the socket. Above
/// the largest offer, so that an oversized offer still gets `message_too_large`.
const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// After refusing a frame over [`MAX_FRAME_BYTES`], the socket stays open this long
/// before it is dropped: the rest of that frame is unread, and a socket closed with
/// unread bytes resets the connection, which makes the client discard what it had not
/// read yet, the error that says why among it. (A wait, not a read to the end: the
/// transport reads no more of a socket once a frame was refused.)
const LINGER: Duration = Duration::from_secs(2);

/// A socket that has not joined by then is closed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Most messages written to a socket with one flush.
const WRITE_BATCH: usize = 64;

/// `GET /ws`: upgrades to a WebSocket and runs its session.
/// An address that holds its limit of sockets is answered 429 instead.
pub(crate) async fn websocket(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(place) = state.addresses.open(peer.ip(), Instant::now()) else {
        state
            .metrics
            .refused
            .with_label_values(&[REFUSED_SOCKETS])
            .inc();
        debug!(%peer, "websocket refused: its address holds its limit of sockets");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many open WebSockets from this address\n",
        )
            .into_response();
    };
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            state.metrics.sockets.inc();
            let mut session = Session {
                state: state.clone(),
                socket,
                peer: peer.ip(),
                _place: place,
                joined: None,
                budgets: Budgets::full(Instant::now()),
                refused_frame: false,
            };
            session.run().await;
            state.metrics.sockets.dec();
        })
}

/// One client's WebSocket, from upgrade to close.
struct Session {
    state: Arc<AppState>,
    socket: WebSocket,
    /// The client's address, and its place in that address's count of sockets.
    peer: IpAddr,
    _place: SocketPlace,
    /// The participant and its event queue, once `join` succeeded.
    joined: Option<(ParticipantId, mpsc::Receiver<ServerMessage>)>,
    /// What it may still send now, by kind of request.
    budgets: Budgets,
    /// A frame over [`MAX_FRAME_BYTES`] was refused: the close says so, and the socket
    /// is dropped only [`LINGER`] later.
    refused_frame: bool,
}

/// What the session loop does next.
enum Step {
    Continue,
    Close,
}

impl Session {
    async fn run(&mut self) {
        loop {
            let step = match &mut self.joined {
                None => match tokio::time::timeout(JOIN_TIMEOUT, self.socket.recv()).await {
                    Ok(Some(Ok(message))) => self.on_client_frame(message).await,
                    Ok(Some(Err(e))) => self.on_read_error(e).await,
                    Ok(None) => Step::Close,
                    Err(_) => {
                        debug!("no join within {JOIN_TIMEOUT:?}; closing");
                        Step::Close
                    }
                },
                Some((_, events)) => {
                    tokio::select! {
                        frame = self.socket.recv() => match frame {
                            Some(Ok(message)) => self.on_client_frame(message).await,
                            Some(Err(e)) => self.on_read_error(e).await,
                            None => Step::Close,
                        },
                        event = events.recv() => match event {
                            Some(event) => self.on_events(event).await,
                            None => Step::Close,
                        },
                    }
                }
            };
            if let Step::Close = step {
                break;
            }
        }
        if let Some((participant, mut events)) = self.joined.take() {
            self.state.plane.leave(participant);
            // Deliver what was already queued (a last `left`, say) if the socket still works.
            while let Ok(event) = events.try_recv() {
                if self.send(&event).await.is_err() {
                    break;
                }
            }
        }
        let (code, reason) = if self.refused_frame {
            (close_code::SIZE, "frame too large")
        } else {
            (close_code::NORMAL, "bye")
        };
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        if self.refused_frame {
            tokio::time::sleep(LINGER).await;
        }
    }

    /// A frame that could not be read ends the session: one over [`MAX_FRAME_BYTES`] is
    /// told so first (`message_too_large`), as a large message is.
    async fn on_read_error(&mut self, e: axum::Error) -> Step {
        let inner = e.into_inner();
        if let Some(tungstenite::Error::Capacity(capacity)) =
            inner.downcast_ref::<tungstenite::Error>()
        {
            debug!("frame refused: {capacity}");
            let _ = self
                .send(&ServerMessage::Error(ErrorMessage::new(
                    ErrorCode::MessageTooLarge,
                    format!("a frame holds at most {MAX_FRAME_BYTES} bytes; closing"),
                )))
                .await;
            self.refused_frame = true;
        } else {
            debug!("websocket read failed: {inner}");
        }
        Step::Close
    }

    async fn on_client_frame(&mut self, message: Message) -> Step {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .error(ErrorMessage::new(
                        ErrorCode::BadRequest,
                        "binary frames are not part of the protocol",
                    ))
                    .await;
            }
            Message::Close(_) => return Step::Close,
            Message::Ping(_) | Message::Pong(_) => return Step::Continue,
        };
        let message = match ClientMessage::parse(text.as_str()) {
            Ok(message) => message,
            Err(e) => return self.error(e).await,
        };
        let participant = self.joined.as_ref().map(|(p, _)| *p);
        let request = message.request_type();
        // A joined socket's requests, within its budgets (join and leave always are).
        if participant.is_some()
            && let Err(e) = self.budgets.admit(request, Instant::now())
        {
            return self.error(e.answering(request)).await;
        }
        let step = match (message, participant) {
            (
                ClientMessage::Join {
                    token,
                    transport,
                    audience,
                    e2ee,
                },
                None,
            ) => {
                return self.join(&token, transport, audience, e2ee).await;
            }
            (ClientMessage::Join { .. }, Some(_)) => Err(ErrorMessage::new(
                ErrorCode::AlreadyJoined,
                "this socket has joined already",
            )),
            (_, None) => Err(ErrorMessage::new(
                ErrorCode::NotJoined,
                "send join with a token first",
            )),
            (ClientMessage::Leave, Some(_)) => return Step::Close,
            (
                ClientMessage::Offer {
                    sdp,
                    publish,
                    subscribe,
                    slots,
                },
                Some(p),
            ) => {
                let offer = Request::Offer {
                    sdp,
                    publish,
                    subscribe,
                    slots,
                };
                self.state.plane.offer(p, offer).await
            }
            (ClientMessage::Mute { track_id, muted }, Some(p)) => self
                .state
                .plane
                .request(p, Request::Mute { track_id, muted }),
            (ClientMessage::View { pinned, quality }, Some(p)) => self
                .state
                .plane
                .request(p, Request::View { pinned, quality }),
            (ClientMessage::E2ee { to, data }, Some(p)) => {
                self.state.plane.request(p, Request::E2ee { to, data })
            }
            (ClientMessage::Keyframe { track_id }, Some(p)) => {
                self.state.plane.request(p, Request::Keyframe { track_id })
            }
        };
        match step {
            Ok(()) => Step::Continue,
            Err(e) => self.error(e.answering(request)).await,
        }
    }

    async fn join(
        &mut self,
        token: &str,
        transport: Transport,
        audience: bool,
        e2ee: bool,
    ) -> Step {
        if !self.state.addresses.join(self.peer, Instant::now()) {
            self.state
                .metrics
                .refused
                .with_label_values(&[REFUSED_JOINS])
                .inc();
            let error = ErrorMessage::new(
                ErrorCode::RateLimited,
                "too many joins from this address; try again in a moment",
            );
            return self.error(error.answering(RequestType::Join)).await;
        }
        let claims = match self.state.config.tokens.verify(token) {
            Ok(claims) => claims,
            Err(e) => {
                info!("join refused: {e}");
                let error = ErrorMessage::new(ErrorCode::Unauthorized, e.to_string());
                return self.error(error.answering(RequestType::Join)).await;
            }
        };
        let admitted = match self.state.admit(&claims) {
            Ok(admitted) => admitted,
            Err(error) => {
                info!(identity = %claims.sub, room = %claims.room, group = ?claims.group,
                      "join refused: {}", error.message);
                return self.error(error.answering(RequestType::Join)).await;
            }
        };
        let grants = admitted.grants;
        if !e2ee && !grants.may_join_in_clear() {
            info!(identity = %claims.sub, room = %claims.room, "join refused: e2ee required");
            let error = ErrorMessage::new(
                ErrorCode::E2eeRequired,
                "this room requires end-to-end encryption: join with e2ee, or use a token \
                 with the plaintext grant",
            );
            return self.error(error.answering(RequestType::Join)).await;
        }
        match self.state.place(&claims.room).await {
            Ok(Placed::Here) => {}
            Ok(Placed::Elsewhere { node, url }) => {
                debug!(room = %claims.room, %node, "join redirected");
                let url = websocket_url(&url);
                return self.on_events(ServerMessage::Redirect { node, url }).await;
            }
            Err(error) => {
                info!(room = %claims.room, "join refused: {}", error.message);
                return self.error(error.answering(RequestType::Join)).await;
            }
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let ice_servers = self.state.ice_servers_for(&claims.sub, &grants);
        let join = Join {
            name: claims.display_name().to_owned(),
            room: claims.room,
            identity: claims.sub,
            grants,
            token_grants: admitted.token_grants,
            group: admitted.group,
            max_participants: admitted.max_participants,
            transport,
            ice_servers,
            audience,
            e2ee,
        };
        match self.state.plane.join(join, events_tx) {
            Ok(participant) => {
                debug!(%participant, "joined");
                self.joined = Some((participant, events_rx));
                Step::Continue
            }
            Err(e) => self.error(e.answering(RequestType::Join)).await,
        }
    }

    /// Sends `first` and what else is queued behind it (up to [`WRITE_BATCH`]) with one
    /// flush: a burst of notifications, hundreds of viewers joining say, costs a write
    /// per batch rather than one per message.
    async fn on_events(&mut self, first: ServerMessage) -> Step {
        let mut next = Some(first);
        let mut fed = 0;
        let mut step = Step::Continue;
        while let Some(event) = next.take() {
            if let ServerMessage::Error(e) = &event {
                self.state
                    .metrics
                    .errors
                    .with_label_values(&[e.code.as_str()])
                    .inc();
            }
            if self.feed(&event).await.is_err() || event.closes_socket() {
                step = Step::Close;
                break;
            }
            fed += 1;
            if fed < WRITE_BATCH
                && let Some((_, events)) = &mut self.joined
            {
                next = events.try_recv().ok();
            }
        }
        if let Err(e) = SinkExt::flush(&mut self.socket).await {
            debug!("websocket send failed: {e}");
            step = Step::Close;
        }
        step
    }

    async fn error(&mut self, error: ErrorMessage) -> Step {
        self.on_events(ServerMessage::Error(error)).await
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), ()> {
        self.feed(message).await?;
        SinkExt::flush(&mut self.socket)
            .await
            .map_err(|e| debug!("websocket send failed: {e}"))
    }

    /// Queues one message on the socket, written at the next flush (or when its buffer
    /// fills).
    async fn feed(&mut self, message: &ServerMessage) -> Result<(), ()> {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(e) => {
                warn!("cannot serialize {message:?}: {e}");
                return Err(());
            }
        };
        SinkExt::feed(&mut self.socket, Message::Text(text.into()))
            .await
            .map_err(|e| debug!("websocket send failed: {e}"))
    }
}
