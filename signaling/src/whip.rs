//! WHIP (RFC 9725) ingest and WHEP egress: one HTTP offer and answer instead of the
//! WebSocket protocol, for tools that speak nothing else (OBS, GStreamer, players).
//!
//! `POST /whip` and `POST /whep` take an SDP offer with `Authorization: Bearer <token>`
//! (the same join tokens as the WebSocket; the room is the token's) and answer `201
//! Created` with the SDP answer and the session's URL in `Location`. `DELETE` on that URL
//! leaves; `PATCH` with `application/trickle-ice-sdpfrag` is accepted and needs nothing
//! (the server is ICE-lite: it learns the client's addresses from its checks); an ICE
//! restart is refused with `422`.
//!
//! A WHIP session publishes its audio m-line as the microphone and its first video m-line
//! as the screen (`?video=camera` for a camera), a second video m-line as the other one.
//! A WHEP session's video m-lines carry the room's screens first, then cameras, its audio
//! m-lines the microphones of the shown participants first; when tracks come and go the
//! server moves them onto the same m-lines (a WHEP client never offers again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde::Deserialize;
use tokio::sync::mpsc;
use tower_http::cors::{Any, CorsLayer};
use tracing::{debug, info};

use crate::plane::EVENT_QUEUE;
use crate::state::AppState;
use crate::token::Claims;
use protocol::{
    ErrorCode, ErrorMessage, IceServer, Kind, MAX_OFFER_BYTES, ParticipantId, Publish,
    ServerMessage, Source, Subscribe, TrackId, TrackInfo, Transport,
};
use protocol::{Join, Request};

/// How long a POST waits for the media plane's `joined` and then its answer.
const PLANE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which of the two protocols a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Whip,
    Whep,
}

impl Protocol {
    fn path(self) -> &'static str {
        match self {
            Protocol::Whip => "whip",
            Protocol::Whep => "whep",
        }
    }
}

/// What the WHIP and WHEP handlers share: the server's state and the open sessions.
struct Endpoint {
    app: Arc<AppState>,
    sessions: Sessions,
}

/// The open WHIP and WHEP sessions, by the random id in their URL.
#[derive(Default)]
struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

struct Session {
    protocol: Protocol,
    participant: ParticipantId,
    room: String,
    identity: String,
    etag: String,
    /// The client's ICE username fragment: a PATCH with another one is an ICE restart.
    ice_ufrag: Option<String>,
    /// Reads the participant's events until it leaves.
    task: tokio::task::AbortHandle,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (plain inserts and
        // removes), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The WHIP and WHEP routes, open to pages of any origin (CORS): a player or a
/// broadcasting page elsewhere authenticates with its token, not with cookies. The CORS
/// layer answers every OPTIONS request.
pub(crate) fn routes(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let session = |protocol: Protocol| {
        delete(
            move |State(state): State<Arc<Endpoint>>, Path(id): Path<String>, headers| {
                remove(state, protocol, id, headers)
            },
        )
        .patch(
            move |State(state): State<Arc<Endpoint>>,
                  Path(id): Path<String>,
                  headers,
                  body: String| patch(state, protocol, id, headers, body),
        )
    };
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK]);
    Router::new()
        .route("/whip", post(post_whip))
        .route("/whep", post(post_whep))
        .route("/whip/{id}", session(Protocol::Whip))
        .route("/whep/{id}", session(Protocol::Whep))
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(cors)
        .with_state(Arc::new(Endpoint {
            app,
            sessions: Sessions::default(),
        }))
}

/// A refused request: its status and a plain-text reason. A `401` says how to
/// authenticate, a `503` when to try again.
struct Refused {
    status: StatusCode,
    message: String,
}

fn refused(status: StatusCode, message: impl std::fmt::Display) -> Refused {
    Refused {
        status,
        message: message.to_string(),
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        let h = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The HTTP status for a media-plane error.
fn plane_error(e: &ErrorMessage) -> Refused {
    let status = match e.code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::BadRequest | ErrorCode::BadSdp | ErrorCode::UnknownType => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RoomFull | ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::NotJoined | ErrorCode::AlreadyJoined | ErrorCode::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    refused(status, format_args!("{}: {}", e.code.as_str(), e.message))
}

/// The claims of the request's bearer token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Claims, Refused> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send the join token as a Bearer token",
            )
        })?;
    state.config.tokens.verify(token).map_err(|e| {
        info!("whip/whep refused: {e}");
        refused(StatusCode::UNAUTHORIZED, format_args!("unauthorized: {e}"))
    })
}

/// Whether the request's body is of `media_type` (parameters ignored).
fn content_type_is(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type))
}

/// One m-line of an offer, as far as WHIP and WHEP need it.
#[derive(Debug, PartialEq, Eq)]
struct MLine {
    kind: Option<Kind>,
    mid: Option<String>,
    sends: bool,
    receives: bool,
    /// `a=rid:… send` in the order of `a=simulcast:send` (else of the `a=rid` lines).
    rids: Vec<String>,
}

/// The m-lines of an offer and its ICE username fragment. Only a scan of the attributes
/// that choose the tracks: the media plane parses the offer in full.
fn scan_offer(sdp: &str) -> (Vec<MLine>, Option<String>) {
    let mut lines: Vec<MLine> = Vec::new();
    let mut session_sends = true;
    let mut session_receives = true;
    let mut ufrag = None;
    let mut simulcast: Vec<Option<Vec<String>>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = match rest.split(' ').next() {
                Some("audio") => Some(Kind::Audio),
                Some("video") => Some(Kind::Video),
                _ => None,
            };
            lines.push(MLine {
                kind,
                mid: None,
                sends: session_sends,
                receives: session_receives,
                rids: Vec::new(),
            });
            simulcast.push(None);
            continue;
        }
        let Some(attribute) = line.strip_prefix("a=") else {
            continue;
        };
        let direction = match attribute {
            "sendrecv" => Some((true, true)),
            "sendonly" => Some((true, false)),
            "recvonly" => Some((false, true)),
            "inactive" => Some((false, false)),
            _ => None,
        };
        let Some(m) = lines.last_mut() else {
            if let Some((s, r)) = direction {
                (session_sends, session_receives) = (s, r);
            }
            if let Some(u) = attribute.strip_prefix("ice-ufrag:") {
                ufrag = Some(u.to_owned());
            }
            continue;
        };
        if let Some((s, r)) = direction {
            (m.sends, m.receives) = (s, r);
        } else if let Some(mid) = attribute.strip_prefix("mid:") {
            m.mid = Some(mid.to_owned());
        } else if let Some(u) = attribute.strip_prefix("ice-ufrag:") {
            ufrag.get_or_insert_with(|| u.to_owned());
        } else if let Some(rid) = attribute.strip_prefix("rid:") {
            let mut words = rid.split(' ');
            if let (Some(id), Some("send")) = (words.next(), words.next()) {
                m.rids.push(id.to_owned());
            }
        } else if let Some(rest) = attribute.strip_prefix("simulcast:send ") {
            // `a=simulcast:send q;h;f`, alternatives after commas, paused ones with `~`.
            let order = rest
                .split(' ')
                .next()
                .unwrap_or_default()
                .split(';')
                .filter_map(|alt| alt.split(',').next())
                .map(|id| id.trim_start_matches('~').to_owned())
                .collect();
            if let Some(last) = simulcast.last_mut() {
                *last = Some(order);
            }
        }
    }
    for (m, order) in lines.iter_mut().zip(simulcast) {
        if let Some(order) = order {
            m.rids.sort_by_key(|r| order.iter().position(|o| o == r));
        }
    }
    (lines, ufrag)
}

#[derive(Debug, Default, Deserialize)]
struct WhipQuery {
    /// What the first video m-line is: `screen` (the default) or `camera`.
    video: Option<VideoSource>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum VideoSource {
    Screen,
    Camera,
}

/// What a WHIP offer publishes: its sending m-lines with their sources.
fn whip_publish(lines: &[MLine], first_video: VideoSource) -> Result<Vec<Publish>, String> {
    let (first, second) = match first_video {
        VideoSource::Screen => (Source::Screen, Source::Camera),
        VideoSource::Camera => (Source::Camera, Source::Screen),
    };
    let mut sources = [Source::Microphone].into_iter();
    let mut video = [first, second].into_iter();
    let mut publish = Vec::new();
    for m in lines.iter().filter(|m| m.sends) {
        let Some(mid) = m.mid.clone() else {
            return Err("every m-line needs an a=mid (WHIP bundles them)".into());
        };
        let source = match m.kind {
            Some(Kind::Audio) => sources.next(),
            Some(Kind::Video) => video.next(),
            None => continue,
        };
        let Some(source) = source else {
            return Err("a WHIP offer sends at most one audio and two video m-lines".into());
        };
        publish.push(Publish {
            mid,
            source,
            layers: m.rids.clone(),
        });
    }
    if publish.is_empty() {
        return Err("the offer sends no audio or video".into());
    }
    Ok(publish)
}

/// What a WHEP session shows: the room's tracks, and its receiving m-lines.
struct Watch {
    tracks: Vec<TrackInfo>,
    audio: Vec<String>,
    video: Vec<String>,
    shown: Vec<Subscribe>,
}

impl Watch {
    fn new(lines: &[MLine]) -> Watch {
        let mids = |kind| {
            lines
                .iter()
                .filter(|m| m.receives && m.kind == Some(kind))
                .filter_map(|m| m.mid.clone())
                .collect()
        };
        Watch {
            tracks: Vec::new(),
            audio: mids(Kind::Audio),
            video: mids(Kind::Video),
            shown: Vec::new(),
        }
    }

    /// Follows the room's tracks; true when they changed.
    fn on_event(&mut self, event: &ServerMessage) -> bool {
        match event {
            ServerMessage::Joined { tracks, .. } => self.tracks = tracks.clone(),
            ServerMessage::TrackPublished(t) => {
                self.tracks.retain(|x| x.track_id != t.track_id);
                self.tracks.push(t.clone());
            }
            ServerMessage::TrackUnpublished { track_id } => {
                self.tracks.retain(|x| x.track_id != *track_id);
            }
            ServerMessage::ParticipantLeft { participant_id, .. } => {
                self.tracks.retain(|x| x.participant_id != *participant_id);
            }
            _ => return false,
        }
        true
    }

    /// The m-lines' tracks: screens, then cameras, on the video m-lines (the earliest
    /// published first); microphones of the shown participants, then others, on audio.
    fn wanted(&self) -> Vec<Subscribe> {
        let mut video: Vec<&TrackInfo> = self
            .tracks
            .iter()
            .filter(|t| matches!(t.source, Source::Screen | Source::Camera))
            .collect();
        video.sort_by_key(|t| (t.source != Source::Screen, t.track_id));
        video.truncate(self.video.len());
        let mut audio: Vec<&TrackInfo> = self
            .tracks
            .iter()
            .filter(|t| t.source == Source::Microphone)
            .collect();
        audio.sort_by_key(|t| {
            let shown = video.iter().any(|v| v.participant_id == t.participant_id);
            (!shown, t.track_id)
        });
        let on = |mids: &[String], tracks: Vec<&TrackInfo>| -> Vec<Subscribe> {
            mids.iter()
                .zip(tracks)
                .map(|(mid, t)| Subscribe {
                    mid: mid.clone(),
                    track_id: t.track_id,
                })
                .collect::<Vec<_>>()
        };
        let mut wanted = on(&self.video, video);
        wanted.extend(on(&self.audio, audio));
        wanted
    }

    /// The video tracks shown, pinned so that each gets the best layer the viewer's
    /// network carries.
    fn pinned(&self) -> Vec<TrackId> {
        self.shown
            .iter()
            .filter(|s| self.video.contains(&s.mid))
            .map(|s| s.track_id)
            .collect()
    }
}

/// The next event, or the response to give when there is none in time.
async fn next_event(events: &mut mpsc::Receiver<ServerMessage>) -> Result<ServerMessage, Refused> {
    match tokio::time::timeout(PLANE_TIMEOUT, events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy: the media server dropped the session",
        )),
        Err(_) => Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy: the media server did not answer in time",
        )),
    }
}

/// `POST /whip`: publish.
async fn post_whip(
    State(state): State<Arc<Endpoint>>,
    Query(query): Query<WhipQuery>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refused> {
    open(state, Protocol::Whip, query, headers, body).await
}

/// `POST /whep`: watch.
async fn post_whep(
    State(state): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refused> {
    open(state, Protocol::Whep, WhipQuery::default(), headers, body).await
}

async fn open(
    state: Arc<Endpoint>,
    protocol: Protocol,
    query: WhipQuery,
    headers: HeaderMap,
    offer: String,
) -> Result<Response, Refused> {
    if !content_type_is(&headers, "application/sdp") {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as application/sdp",
        ));
    }
    let claims = authorize(&state.app, &headers)?;
    let grants = claims.grants.effective();
    let (lines, ice_ufrag) = scan_offer(&offer);
    let (publish, mut watch) = match protocol {
        Protocol::Whip => {
            if !(grants.publish_audio || grants.publish_video || grants.publish_screen) {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "forbidden: the token grants no publishing (a viewer's?)",
                ));
            }
            match whip_publish(&lines, query.video.unwrap_or(VideoSource::Screen)) {
                Ok(publish) => (publish, None),
                Err(message) => return Err(refused(StatusCode::BAD_REQUEST, message)),
            }
        }
        Protocol::Whep => {
            if !grants.subscribe {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "forbidden: token does not grant subscribe",
                ));
            }
            let watch = Watch::new(&lines);
            if watch.audio.is_empty() && watch.video.is_empty() {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "the offer receives no audio or video (recvonly m-lines with a=mid)",
                ));
            }
            (Vec::new(), Some(watch))
        }
    };

    let ice_servers = state.app.ice_servers_for(&claims);
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let join = Join {
        room: claims.room.clone(),
        identity: claims.sub.clone(),
        name: claims.display_name().to_owned(),
        grants,
        transport: Transport::Auto,
        ice_servers: ice_servers.clone(),
        audience: false,
    };
    let participant = match state.app.plane.join(join, events_tx) {
        Ok(participant) => participant,
        Err(e) => return Err(plane_error(&e)),
    };
    // From here on, a failure leaves the room again.
    let answer = async {
        loop {
            let event = next_event(&mut events).await?;
            if let Some(w) = watch.as_mut() {
                w.on_event(&event);
            }
            match event {
                ServerMessage::Joined { .. } => break,
                ServerMessage::Error(e) => return Err(plane_error(&e)),
                _ => {}
            }
        }
        let subscribe = watch.as_ref().map(Watch::wanted).unwrap_or_default();
        let request = Request::Offer {
            sdp: offer,
            publish,
            subscribe: subscribe.clone(),
            slots: Vec::new(),
        };
        state
            .app
            .plane
            .request(participant, request)
            .map_err(|e| plane_error(&e))?;
        if let Some(w) = watch.as_mut() {
            w.shown = subscribe;
        }
        loop {
            let event = next_event(&mut events).await?;
            if let Some(w) = watch.as_mut() {
                w.on_event(&event);
            }
            match event {
                ServerMessage::Answer { sdp, .. } => return Ok(sdp),
                ServerMessage::Error(e) => return Err(plane_error(&e)),
                _ => {}
            }
        }
    };
    let answer = match answer.await {
        Ok(sdp) => sdp,
        Err(refusal) => {
            state.app.plane.leave(participant);
            return Err(refusal);
        }
    };

    let id = random_hex();
    let etag = format!("\"{}\"", &random_hex()[..16]);
    info!(%participant, protocol = protocol.path(), session = %id, room = %claims.room, identity = %claims.sub, "session opened");
    // The session is in the map before its task can look for it: a participant removed at
    // once (its task ending before the insert) would otherwise leave an entry behind.
    let mut sessions = state.sessions.lock();
    let task = tokio::spawn(follow(
        state.clone(),
        id.clone(),
        participant,
        events,
        watch,
    ));
    sessions.insert(
        id.clone(),
        Session {
            protocol,
            participant,
            room: claims.room,
            identity: claims.sub,
            etag: etag.clone(),
            ice_ufrag,
            task: task.abort_handle(),
        },
    );
    drop(sessions);

    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/{}/{id}", protocol.path());
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    for link in ice_server_links(&ice_servers) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok(response)
}

/// The `Link` header values that hand a client its ICE servers (RFC 9725, section 4.6).
fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    // Quoted-string values: strip what would end the quote rather than escape it.
    let quoted = |s: &str| s.replace(['"', '\\'], "");
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quoted(user),
                    quoted(credential)
                ));
            }
            links.push(link);
        }
    }
    links
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Reads a session's events until its participant leaves; a WHEP session moves the
/// room's tracks onto its m-lines as they come and go.
async fn follow(
    state: Arc<Endpoint>,
    id: String,
    participant: ParticipantId,
    mut events: mpsc::Receiver<ServerMessage>,
    mut watch: Option<Watch>,
) {
    let mut pinned_once = false;
    loop {
        if let Some(w) = watch.as_mut() {
            let wanted = w.wanted();
            if wanted != w.shown {
                debug!(%participant, ?wanted, "whep: the shown tracks change");
                let request = Request::Subscribe {
                    subscribe: wanted.clone(),
                };
                if state.app.plane.request(participant, request).is_ok() {
                    w.shown = wanted;
                    pinned_once = false;
                }
            }
            if !pinned_once {
                let request = Request::View {
                    pinned: w.pinned(),
                    quality: Vec::new(),
                };
                pinned_once = state.app.plane.request(participant, request).is_ok();
            }
        }
        let Some(event) = events.recv().await else {
            break; // The media plane removed the participant (media timeout, shutdown).
        };
        if let Some(w) = watch.as_mut() {
            w.on_event(&event);
        }
        if event.closes_socket() {
            break;
        }
    }
    if state.sessions.lock().remove(&id).is_some() {
        state.app.plane.leave(participant);
        info!(%participant, session = %id, "session ended by the server");
    }
}

/// The session at `/{protocol}/{id}`, if the request's token is its owner's.
fn owned_session(
    state: &Endpoint,
    protocol: Protocol,
    id: &str,
    headers: &HeaderMap,
) -> Result<(), Refused> {
    let not_found = || refused(StatusCode::NOT_FOUND, "no such session");
    let claims = authorize(&state.app, headers)?;
    let sessions = state.sessions.lock();
    let session = sessions
        .get(id)
        .filter(|s| s.protocol == protocol)
        .ok_or_else(not_found)?;
    if session.room != claims.room || session.identity != claims.sub {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "forbidden: the session is another identity's",
        ));
    }
    Ok(())
}

/// `DELETE /whip/{id}` and `/whep/{id}`: leave.
async fn remove(
    state: Arc<Endpoint>,
    protocol: Protocol,
    id: String,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    owned_session(&state, protocol, &id, &headers)?;
    let Some(session) = state.sessions.lock().remove(&id) else {
        return Err(refused(StatusCode::NOT_FOUND, "no such session"));
    };
    session.task.abort();
    state.app.plane.leave(session.participant);
    info!(participant = %session.participant, session = %id, "session deleted by the client");
    Ok(StatusCode::OK.into_response())
}

/// `PATCH /whip/{id}` and `/whep/{id}`: trickled candidates, which the ICE-lite server
/// does not need; ICE restarts are not supported.
async fn patch(
    state: Arc<Endpoint>,
    protocol: Protocol,
    id: String,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refused> {
    owned_session(&state, protocol, &id, &headers)?;
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a PATCH carries application/trickle-ice-sdpfrag",
        ));
    }
    let (etag, ufrag) = match state.sessions.lock().get(&id) {
        Some(s) => (s.etag.clone(), s.ice_ufrag.clone()),
        None => return Err(refused(StatusCode::NOT_FOUND, "no such session")),
    };
    let (_, fragment_ufrag) = scan_offer(&body);
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let restart = if_match == Some("*") || fragment_ufrag.is_some_and(|u| Some(u) != ufrag);
    if restart {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restarts are not supported: DELETE the session and POST a new offer",
        ));
    }
    if if_match.is_some_and(|m| m != etag) {
        return Err(refused(
            StatusCode::PRECONDITION_FAILED,
            "the ETag does not match the session's",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHIP_OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=ice-ufrag:abcd\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rid:f send\r\n\
a=rid:q send\r\n\
a=rid:h send\r\n\
a=simulcast:send q;h;~f\r\n";

    #[test]
    fn an_offer_is_scanned_for_mids_directions_rids_and_ufrag() {
        let (lines, ufrag) = scan_offer(WHIP_OFFER);
        assert_eq!(ufrag.as_deref(), Some("abcd"));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].kind, Some(Kind::Audio));
        assert_eq!(lines[0].mid.as_deref(), Some("0"));
        assert!(lines[0].sends && !lines[0].receives);
        assert_eq!(
            lines[1].rids,
            ["q", "h", "f"],
            "in the order of a=simulcast"
        );
    }

    #[test]
    fn whip_publishes_the_microphone_and_the_screen_or_camera() {
        let (lines, _) = scan_offer(WHIP_OFFER);
        let publish = whip_publish(&lines, VideoSource::Screen).unwrap();
        assert_eq!(publish[0].source, Source::Microphone);
        assert_eq!(publish[1].source, Source::Screen);
        assert_eq!(publish[1].layers, ["q", "h", "f"]);
        let publish = whip_publish(&lines, VideoSource::Camera).unwrap();
        assert_eq!(publish[1].source, Source::Camera);

        let two_audio = WHIP_OFFER.replace("m=video", "m=audio");
        let (lines, _) = scan_offer(&two_audio);
        assert!(whip_publish(&lines, VideoSource::Screen).is_err());
        let no_mid = WHIP_OFFER.replace("a=mid:1\r\n", "");
        let (lines, _) = scan_offer(&no_mid);
        assert!(whip_publish(&lines, VideoSource::Screen).is_err());
        let receive_only = WHIP_OFFER.replace("sendonly", "recvonly");
        let (lines, _) = scan_offer(&receive_only);
        assert!(whip_publish(&lines, VideoSource::Screen).is_err());
    }

    fn track(id: u64, participant: u64, source: Source) -> TrackInfo {
        TrackInfo {
            track_id: TrackId(id),
            participant_id: ParticipantId(participant),
            kind: source.kind(),
            source,
            muted: false,
            layers: Vec::new(),
        }
    }

    #[test]
    fn whep_shows_screens_first_and_follows_the_tracks() {
        let offer = WHIP_OFFER.replace("sendonly", "recvonly");
        let (lines, _) = scan_offer(&offer);
        let mut watch = Watch::new(&lines);
        assert!(watch.wanted().is_empty(), "nothing published yet");
        watch.on_event(&ServerMessage::TrackPublished(track(
            1,
            7,
            Source::Microphone,
        )));
        watch.on_event(&ServerMessage::TrackPublished(track(
            2,
            8,
            Source::Microphone,
        )));
        watch.on_event(&ServerMessage::TrackPublished(track(3, 7, Source::Camera)));
        let mids = |w: &Watch| -> Vec<(String, u64)> {
            w.wanted()
                .into_iter()
                .map(|s| (s.mid, s.track_id.0))
                .collect()
        };
        assert_eq!(mids(&watch), [("1".into(), 3), ("0".into(), 1)]);
        // A screen share from participant 8 takes the video m-line, and its microphone
        // the audio one.
        watch.on_event(&ServerMessage::TrackPublished(track(4, 8, Source::Screen)));
        assert_eq!(mids(&watch), [("1".into(), 4), ("0".into(), 2)]);
        watch.shown = watch.wanted();
        assert_eq!(watch.pinned(), [TrackId(4)]);
        watch.on_event(&ServerMessage::ParticipantLeft {
            participant_id: ParticipantId(8),
            reason: protocol::LeaveReason::Left,
        });
        assert_eq!(mids(&watch), [("1".into(), 3), ("0".into(), 1)]);
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_server_links(&[IceServer {
            urls: vec!["turn:example.net:3478?transport=udp".into()],
            username: Some("1700000000:alice".into()),
            credential: Some("se\"cret".into()),
        }]);
        assert_eq!(
            links,
            [
                "<turn:example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000000:alice\"; credential=\"secret\"; credential-type=\"password\""
            ]
        );
    }
}
