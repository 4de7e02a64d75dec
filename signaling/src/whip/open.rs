//! `POST /whip` and `POST /whep`: open a session, answer its offer, and follow it until
//! it ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::{IceServer, Join, ParticipantId, Request, ServerMessage, Transport};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::offer::{VideoSource, scan_offer, whip_publish};
use super::refusal::{Refused, authorize, content_type_is, plane_error, refused};
use super::sessions::{Endpoint, Protocol, Session};
use super::watch::Watch;
use crate::placement::Placed;
use crate::plane::{EVENT_QUEUE, MediaPlane};
use crate::state::REFUSED_JOINS;

/// How long a POST waits for the media plane's `joined` and then its answer.
const PLANE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
pub(super) struct WhipQuery {
    /// What the first video m-line is: `screen` (the default) or `camera`.
    video: Option<VideoSource>,
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

/// Leaves the room for a participant when dropped, unless emptied first.
struct LeaveOnDrop(Option<(Arc<dyn MediaPlane>, ParticipantId)>);

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some((plane, participant)) = self.0.take() {
            plane.leave(participant);
        }
    }
}

/// `POST /whip`: publish.
pub(super) async fn post_whip(
    State(state): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WhipQuery>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refused> {
    open(state, peer.ip(), Protocol::Whip, query, headers, body).await
}

/// `POST /whep`: watch.
pub(super) async fn post_whep(
    State(state): State<Arc<Endpoint>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refused> {
    open(
        state,
        peer.ip(),
        Protocol::Whep,
        WhipQuery::default(),
        headers,
        body,
    )
    .await
}

/// `307 Temporary Redirect` to the same endpoint on the node at `base`: the client POSTs
/// its offer there again (RFC 9725, section 4.5).
fn redirect(base: &str, protocol: Protocol, query: &WhipQuery) -> Response {
    let mut location = format!("{}/{}", base.trim_end_matches('/'), protocol.path());
    match query.video {
        Some(VideoSource::Camera) => location.push_str("?video=camera"),
        Some(VideoSource::Screen) => location.push_str("?video=screen"),
        None => {}
    }
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
            "the room lives on another node\n",
        )
            .into_response(),
        Err(_) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal: the room's node has an unusable URL",
        )
        .into_response(),
    }
}

async fn open(
    state: Arc<Endpoint>,
    peer: IpAddr,
    protocol: Protocol,
    query: WhipQuery,
    headers: HeaderMap,
    offer: String,
) -> Result<Response, Refused> {
    // A session is a join: the same per-address budget as the WebSocket's.
    if !state.app.addresses.join(peer, Instant::now()) {
        state
            .app
            .metrics
            .refused
            .with_label_values(&[REFUSED_JOINS])
            .inc();
        return Err(refused(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited: too many joins from this address; try again in a moment",
        ));
    }
    if !content_type_is(&headers, "application/sdp") {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as application/sdp",
        ));
    }
    // The bounds of any offer (m-lines), before the media plane parses it.
    if let Err(e) = protocol::offer::check(&offer, &[], &[]) {
        return Err(refused(StatusCode::BAD_REQUEST, e.message));
    }
    let claims = authorize(&state.app, &headers)?;
    let admitted = state.app.admit(&claims).map_err(|e| {
        info!(identity = %claims.sub, room = %claims.room, "WHIP/WHEP refused: {}", e.message);
        refused(StatusCode::FORBIDDEN, format!("forbidden: {}", e.message))
    })?;
    let grants = admitted.grants;
    let (lines, ice_ufrag) = scan_offer(&offer);
    let (publish, mut watch) = match protocol {
        Protocol::Whip => {
            if !(grants.publish_audio || grants.publish_video || grants.publish_screen) {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "forbidden: the token grants no publishing (a viewer's?)",
                ));
            }
            if !grants.plaintext {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "e2ee_required: WHIP ingest sends frames unencrypted, and this room \
                     requires end-to-end encryption: use a token with the plaintext grant",
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

    match state.app.place(&claims.room).await {
        Ok(Placed::Here) => {}
        Ok(Placed::Elsewhere { node, url }) => {
            debug!(room = %claims.room, %node, "{} redirected", protocol.path());
            return Ok(redirect(&url, protocol, &query));
        }
        Err(e) => return Err(plane_error(&e)),
    }
    let ice_servers = state.app.ice_servers_for(&claims.sub, &grants);
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let join = Join {
        room: claims.room.clone(),
        identity: claims.sub.clone(),
        name: claims.display_name().to_owned(),
        grants,
        token_grants: admitted.token_grants,
        group: admitted.group,
        max_participants: admitted.max_participants,
        transport: Transport::Auto,
        ice_servers: ice_servers.clone(),
        audience: false,
        // WHIP ingest sends frames as the tool encodes them; WHEP sends nothing.
        e2ee: false,
    };
    let participant = match state.app.plane.join(join, events_tx) {
        Ok(participant) => participant,
        Err(e) => return Err(plane_error(&e)),
    };
    // From here on, a failure leaves the room again, as does a client that hangs up
    // meanwhile (hyper then drops this handler): until its session follows it.
    let mut leave = LeaveOnDrop(Some((state.app.plane.clone(), participant)));
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
            .offer(participant, request)
            .await
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
    let answer = answer.await?;

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
    // Its session's task leaves for it now.
    leave.0 = None;

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

#[cfg(test)]
mod tests {
    use super::*;

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
