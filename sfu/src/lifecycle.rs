//! How the media plane stops: draining (the calls in progress go on, no new room is
//! taken), then, when the drain runs out of time, shutting down (every participant told
//! to join again). Flags the process's stop sets and each shard thread reads: a shard
//! drains before its next join and shuts down within a second (see the driver). A drain
//! asked of the admin API wakes the process's stop ([`Lifecycle::drain_asked`]).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Where the media plane is in its stop; shared by the process and every shard.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    shut_down: AtomicBool,
    /// Told when a drain begins.
    began: Notify,
}

impl Lifecycle {
    /// No new room from now on; whether this call began the drain.
    pub fn drain(&self) -> bool {
        let began = !self.draining.swap(true, Ordering::Relaxed);
        if began {
            self.began.notify_one();
        }
        began
    }

    /// Resolves once a drain has begun (at once if one has).
    pub async fn drain_asked(&self) {
        if !self.is_draining() {
            // A drain that begins after the check leaves a permit: no wake is lost.
            self.began.notified().await;
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// End every call now, telling its participants (`left`, `server_shutdown`).
    pub fn shut_down(&self) {
        self.drain();
        self.shut_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }
}
