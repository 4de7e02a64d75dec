//! The HTTP and WebSocket server: one session task per socket, talking to the media plane.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::protocol::{
    ClientMessage, ErrorCode, ErrorMessage, IceServer, ParticipantId, Publish, RequestType,
    ServerMessage, Subscribe, TrackId, TrackQuality, Transport,
};
use crate::token::{Claims, Grants, MAX_NAME_BYTES, Role, TokenKey};

/// Largest WebSocket frame the transport accepts; larger frames close the socket. Above
/// the largest offer, so that an oversized offer still gets `message_too_large`.
const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// A socket that has not joined by then is closed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many messages may wait for one slow client before the media plane drops it.
pub const EVENT_QUEUE: usize = 256;

/// Most messages written to a socket with one flush.
const WRITE_BATCH: usize = 64;

/// A participant admitted by a valid token, as the media plane receives it.
#[derive(Debug, Clone)]
pub struct Join {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub grants: Grants,
    /// How the client will reach the media server.
    pub transport: Transport,
    /// Handed to the client in `joined` (TURN URLs with credentials minted for it; only
    /// those over TCP and TLS with `force_tcp`).
    pub ice_servers: Vec<IceServer>,
    /// A viewer that asked to hear of the other viewers.
    pub audience: bool,
}

/// Mints the ICE servers (TURN URLs and credentials) for a participant's identity.
pub type IceServerSource = Arc<dyn Fn(&str) -> Vec<IceServer> + Send + Sync>;

/// What a joined participant asks of the media plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Offer {
        sdp: String,
        publish: Vec<Publish>,
        subscribe: Vec<Subscribe>,
        /// Slot m-lines (`offer.slots`): the media plane maps its choice of tracks onto
        /// them.
        slots: Vec<String>,
    },
    Mute {
        track_id: TrackId,
        muted: bool,
    },
    View {
        pinned: Vec<TrackId>,
        quality: Vec<TrackQuality>,
    },
    /// Puts other tracks on m-lines negotiated before, without a new offer (WHEP, whose
    /// clients never offer again): each m-line goes on with its stream, now carrying the
    /// listed track; m-lines not listed go idle.
    Subscribe {
        subscribe: Vec<Subscribe>,
    },
}

/// The media plane as signaling sees it. Every method returns at once: the answers and
/// notifications come back through the participant's event queue.
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

    /// The participant left or its socket closed. Never refused, never lost.
    fn leave(&self, participant: ParticipantId);
}

/// How the signaling server is set up.
pub struct Config {
    /// Verifies join tokens.
    pub tokens: TokenKey,
    /// No secret was configured: `/dev/token` hands out tokens to anyone.
    pub dev_mode: bool,
    /// ICE servers for each joining participant; `None` hands out none.
    pub ice_servers: Option<IceServerSource>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("dev_mode", &self.dev_mode)
            .field("ice_servers", &self.ice_servers.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters of the control plane, on `/metrics`.
#[derive(Clone)]
struct Metrics {
    sockets: IntGauge,
    errors: IntCounterVec,
}

impl Metrics {
    fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let sockets = IntGauge::new("sfu_signaling_sockets", "Open signaling WebSockets")?;
        let errors = IntCounterVec::new(
            Opts::new(
                "sfu_signaling_errors_total",
                "Error messages sent to clients, by code",
            ),
            &["code"],
        )?;
        registry.register(Box::new(sockets.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Metrics { sockets, errors })
    }
}

pub(crate) struct AppState {
    pub(crate) plane: Arc<dyn MediaPlane>,
    pub(crate) config: Config,
    registry: Registry,
    metrics: Metrics,
    /// The open WHIP and WHEP sessions.
    pub(crate) sessions: crate::whip::Sessions,
}

impl AppState {
    /// The ICE servers (TURN credentials) for a joining client: only those over TCP and
    /// TLS when its token forces TCP.
    pub(crate) fn ice_servers_for(&self, claims: &Claims) -> Vec<IceServer> {
        let servers = match &self.config.ice_servers {
            Some(source) => source(&claims.sub),
            None => Vec::new(),
        };
        if claims.grants.force_tcp {
            servers.iter().filter_map(IceServer::tcp_only).collect()
        } else {
            servers
        }
    }
}

/// Builds the HTTP router: demo page, client library, WebSocket, health, metrics, and in
/// dev mode `/dev/token`. Registers the control plane's own metrics in `registry`.
pub fn router(
    plane: Arc<dyn MediaPlane>,
    config: Config,
    registry: Registry,
) -> prometheus::Result<Router> {
    let metrics = Metrics::new(&registry)?;
    let dev_mode = config.dev_mode;
    let state = Arc::new(AppState {
        plane,
        config,
        registry,
        metrics,
        sessions: Default::default(),
    });
    let mut router = Router::new()
        .route("/", get(|| async { Html(crate::web::INDEX_HTML) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/ws", get(websocket))
        .merge(crate::whip::routes());
    for asset in crate::web::ASSETS {
        let response =
            move || async move { ([(header::CONTENT_TYPE, asset.content_type)], asset.body) };
        router = router.route(asset.path, get(response));
    }
    if dev_mode {
        router = router.route("/dev/token", get(dev_token));
    }
    Ok(router.with_state(state))
}

/// A router with only `/healthz` and `/metrics` (of `registry`), for processes that carry
/// no calls (the standalone TURN relay).
pub fn metrics_router(registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { encode_metrics(&registry) }
            }),
        )
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    encode_metrics(&state.registry)
}

fn encode_metrics(registry: &Registry) -> Response {
    let families = registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    identity: String,
    name: Option<String>,
    /// `participant` (default), `presenter` or `viewer`.
    role: Option<Role>,
}

async fn dev_token(State(state): State<Arc<AppState>>, Query(q): Query<DevTokenQuery>) -> Response {
    let too_long = |s: &str| s.is_empty() || s.len() > MAX_NAME_BYTES;
    if too_long(&q.room) || too_long(&q.identity) || q.name.as_deref().is_some_and(too_long) {
        return (
            StatusCode::BAD_REQUEST,
            "room, identity and name must be 1 to 128 bytes\n",
        )
            .into_response();
    }
    let mut claims = TokenKey::claims(
        &q.room,
        &q.identity,
        q.name.as_deref(),
        Duration::from_secs(3600),
    );
    claims.grants.role = q.role.unwrap_or_default();
    match state.config.tokens.issue(&claims) {
        Ok(token) => axum::Json(serde_json::json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn websocket(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            state.metrics.sockets.inc();
            let mut session = Session {
                state: state.clone(),
                socket,
                joined: None,
            };
            session.run().await;
            state.metrics.sockets.dec();
        })
}

/// One client's WebSocket, from upgrade to close.
struct Session {
    state: Arc<AppState>,
    socket: WebSocket,
    /// The participant and its event queue, once `join` succeeded.
    joined: Option<(ParticipantId, mpsc::Receiver<ServerMessage>)>,
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
                    Ok(_) => Step::Close,
                    Err(_) => {
                        debug!("no join within {JOIN_TIMEOUT:?}; closing");
                        Step::Close
                    }
                },
                Some((_, events)) => {
                    tokio::select! {
                        frame = self.socket.recv() => match frame {
                            Some(Ok(message)) => self.on_client_frame(message).await,
                            _ => Step::Close,
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
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: "bye".into(),
            })))
            .await;
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
        let step = match (message, participant) {
            (
                ClientMessage::Join {
                    token,
                    transport,
                    audience,
                },
                None,
            ) => {
                return self.join(&token, transport, audience).await;
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
            ) => self.state.plane.request(
                p,
                Request::Offer {
                    sdp,
                    publish,
                    subscribe,
                    slots,
                },
            ),
            (ClientMessage::Mute { track_id, muted }, Some(p)) => self
                .state
                .plane
                .request(p, Request::Mute { track_id, muted }),
            (ClientMessage::View { pinned, quality }, Some(p)) => self
                .state
                .plane
                .request(p, Request::View { pinned, quality }),
        };
        match step {
            Ok(()) => Step::Continue,
            Err(e) => self.error(e.answering(request)).await,
        }
    }

    async fn join(&mut self, token: &str, transport: Transport, audience: bool) -> Step {
        let claims = match self.state.config.tokens.verify(token) {
            Ok(claims) => claims,
            Err(e) => {
                info!("join refused: {e}");
                let error = ErrorMessage::new(ErrorCode::Unauthorized, e.to_string());
                return self.error(error.answering(RequestType::Join)).await;
            }
        };
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let ice_servers = self.state.ice_servers_for(&claims);
        let join = Join {
            name: claims.display_name().to_owned(),
            room: claims.room,
            identity: claims.sub,
            grants: claims.grants.effective(),
            transport,
            ice_servers,
            audience,
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

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
