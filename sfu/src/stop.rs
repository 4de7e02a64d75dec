//! How the server stops. SIGTERM (systemd, Kubernetes, `docker stop`) drains: `/readyz`
//! answers 503, no new room is taken (a join that would open one gets
//! `server_draining`), the calls in progress go on, and the server exits when the last
//! one ends, or when the drain timeout runs out: then every participant left is told
//! (`left`, reason `server_shutdown`) so that its client joins again elsewhere. A second
//! SIGTERM ends the calls at once, telling them so, and stops within seconds; SIGINT
//! (Ctrl-C) at any time stops at once. `POST /admin/drain` begins the same drain as
//! SIGTERM, and the SIGTERM that follows (an orchestrator's) counts as the first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::plane::Plane;
use tracing::{info, warn};

/// How long the participants of a shut-down call have to read that they must leave.
const TOLD_GRACE: Duration = Duration::from_secs(2);

/// Past this, the shards' room counts were all taken after the drain began.
const COUNTED_AFTER: Duration = Duration::from_millis(1100);

/// Resolves when the server should stop serving, having drained `plane` if asked to.
pub async fn until_stopped(plane: Arc<Plane>, drain_timeout: Duration) {
    let Some(mut term) = crate::host::sigterm() else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let (why, mut sigterms) = tokio::select! {
        _ = tokio::signal::ctrl_c() => return info!("SIGINT: stopping now"),
        _ = term.recv() => ("SIGTERM", 1),
        () = plane.lifecycle().drain_asked() => ("asked by the admin API", 0),
    };
    plane.lifecycle().drain();
    info!(
        rooms = plane.rooms(),
        "{why}: draining: no new rooms; stopping when the last call ends, or in {} s \
         (a second SIGTERM: in a few seconds; SIGINT: now)",
        drain_timeout.as_secs()
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The shards count their rooms once a second: no room is believed until two counts
    // in a row, the first taken after the drain began, say so (a room opened or a join
    // queued just before would otherwise be cut without a word).
    let mut empty_counts = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return info!("SIGINT: stopping now"),
            _ = term.recv() => {
                sigterms += 1;
                // A drain the admin API began takes the orchestrator's SIGTERM as its
                // first: the calls go on.
                if sigterms == 1 {
                    info!("SIGTERM: the drain goes on (a second SIGTERM: stop)");
                    continue;
                }
                warn!(rooms = plane.rooms(), "second SIGTERM: ending the calls left now");
                return end_calls(&plane).await;
            }
            _ = tick.tick() => {}
        }
        let rooms = plane.rooms();
        empty_counts = if rooms == 0 { empty_counts + 1 } else { 0 };
        if empty_counts >= 2 && started.elapsed() >= COUNTED_AFTER {
            let secs = started.elapsed().as_secs_f32();
            return info!("drained in {secs:.1} s: no call left; stopping");
        }
        if started.elapsed() >= drain_timeout {
            warn!(rooms, "drain timeout: ending the calls left");
            return end_calls(&plane).await;
        }
    }
}

/// Ends every call, telling its participants to join again (`left`, `server_shutdown`),
/// and gives the messages the time to go out.
async fn end_calls(plane: &Plane) {
    plane.lifecycle().shut_down();
    info!("the participants left are told to join again elsewhere");
    // The shards act on it within a second; then the messages go out.
    tokio::time::sleep(Duration::from_secs(1) + TOLD_GRACE).await;
}
