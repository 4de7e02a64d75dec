//! How the media plane stops: draining (the calls in progress go on, no new room is
//! taken), then, when the drain runs out of time, shutting down (every participant told
//! to join again). Flags the process's stop sets and each shard thread reads: a shard
//! drains before its next join and shuts down within a second (see the driver).

use std::sync::atomic::{AtomicBool, Ordering};

/// Where the media plane is in its stop; shared by the process and every shard.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    shut_down: AtomicBool,
}

impl Lifecycle {
    /// No new room from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
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
