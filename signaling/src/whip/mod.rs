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
//! WHIP ingest sends frames as the tool encoded them, unencrypted: it needs a token with
//! the `plaintext` grant (`403` otherwise). WHEP only receives and needs none.
//!
//! A WHIP session publishes its audio m-line as the microphone and its first video m-line
//! as the screen (`?video=camera` for a camera), a second video m-line as the other one.
//! A WHEP session's video m-lines carry the room's screens first, then cameras, its audio
//! m-lines the microphones of the shown participants first; when tracks come and go the
//! server moves them onto the same m-lines (a WHEP client never offers again).
//!
//! The files, each importing only those above it: `offer.rs` scans an offer's m-lines
//! and says what a WHIP offer publishes; `watch.rs` puts the room's tracks on a WHEP
//! session's m-lines; `sessions.rs` holds the open sessions and the state the handlers
//! share; `refusal.rs` the refused requests and the checks behind them; `open.rs` the
//! POSTs that open a session and the task that follows it; `resource.rs` the DELETE and
//! PATCH on a session's URL; this file the routes.

mod offer;
mod open;
mod refusal;
mod resource;
mod sessions;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Method, header};
use axum::routing::{delete, post};
use protocol::MAX_OFFER_BYTES;
use tower_http::cors::{Any, CorsLayer};

use crate::state::AppState;
use open::{post_whep, post_whip};
use resource::{patch, remove};
use sessions::{Endpoint, Protocol, Sessions};

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

/// What the WHIP and WHEP handlers read of a request body, for the fuzz targets in
/// `fuzz/`: the same functions, called as the handlers call them. Not an API; nothing of
/// the server uses it.
#[doc(hidden)]
pub mod fuzzing {
    use protocol::Publish;

    use super::offer::{VideoSource, scan_offer, whip_publish};
    use super::watch::Watch;

    /// One m-line as the scan saw it.
    #[derive(Debug)]
    pub struct Line {
        pub mid: Option<String>,
        pub sends: bool,
        pub receives: bool,
        /// Its `a=rid:… send`, in the order of its `a=simulcast:send`.
        pub rids: Vec<String>,
    }

    /// What the handlers read of an offer (`POST`) or a trickled fragment (`PATCH`).
    #[derive(Debug)]
    pub struct Reading {
        pub lines: Vec<Line>,
        /// The ICE ufrag (a `PATCH` with another one is an ICE restart).
        pub ufrag: Option<String>,
        /// What a WHIP session publishes (the first video m-line as the camera when
        /// `camera`, else as the screen), or why the offer is refused.
        pub publish: Result<Vec<Publish>, String>,
        /// A WHEP session's receiving audio and video m-lines.
        pub audio: Vec<String>,
        pub video: Vec<String>,
    }

    /// Reads `sdp` as `POST /whip`, `POST /whep` and `PATCH` do.
    pub fn read(sdp: &str, camera: bool) -> Reading {
        let (lines, ufrag) = scan_offer(sdp);
        let first_video = if camera {
            VideoSource::Camera
        } else {
            VideoSource::Screen
        };
        let publish = whip_publish(&lines, first_video);
        let watch = Watch::new(&lines);
        Reading {
            lines: lines
                .into_iter()
                .map(|m| Line {
                    mid: m.mid,
                    sends: m.sends,
                    receives: m.receives,
                    rids: m.rids,
                })
                .collect(),
            ufrag,
            publish,
            audio: watch.audio,
            video: watch.video,
        }
    }
}
