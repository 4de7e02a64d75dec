//! Tells systemd how the server is doing (sd_notify, for `Type=notify` units): `READY=1`
//! once signaling listens and the media plane runs, `STOPPING=1` when a drain begins, and
//! `WATCHDOG=1` at half the unit's `WatchdogSec=`, sent only while every shard still runs
//! (it takes a probe from its command queue, or reports its load meanwhile:
//! [`Plane::answers`]), so a hung or dead shard thread gets the process restarted. Without `NOTIFY_SOCKET` (not under systemd) it does nothing.
//!
//! The `sd-notify` crate writes the datagrams; this module only decides what to say when.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use sfu::plane::Plane;
use tracing::{debug, info, warn};

/// How often a drain is looked for, to say `STOPPING=1` within this of its start.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// Tells systemd the server is ready, then follows it until the process ends: run it as a
/// task once signaling listens. Returns at once when systemd does not listen.
pub async fn watch(plane: Arc<Plane>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    say(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let watchdog = sd_notify::watchdog_enabled();
    let (ping_every, probe_within) = watchdog.map_or((None, Duration::ZERO), |w| {
        let (every, within) = watchdog_periods(w);
        (Some(every), within)
    });
    if let Some(every) = ping_every {
        info!("systemd watchdog: a ping every {every:?} while every shard answers");
    }
    let mut drain_check = tokio::time::interval(DRAIN_CHECK);
    // Without a watchdog this timer never fires (a year is as good as never).
    let mut ping = tokio::time::interval(ping_every.unwrap_or(NEVER));
    let mut told_stopping = false;
    loop {
        tokio::select! {
            _ = drain_check.tick(), if !told_stopping => {
                if plane.lifecycle().is_draining() {
                    say(&[NotifyState::Stopping, NotifyState::Status("draining")]);
                    told_stopping = true;
                }
            }
            _ = ping.tick(), if ping_every.is_some() => {
                if plane.answers(probe_within).await {
                    say(&[NotifyState::Watchdog]);
                } else {
                    warn!("a media shard did not answer within {probe_within:?}: no watchdog ping");
                }
            }
        }
    }
}

/// For a watchdog of `timeout`: how often to ping (half of it, as sd_watchdog_enabled(3)
/// advises) and how long a probe of the shards may take (half of that, so that a slow
/// answer still leaves the next ping in time).
pub fn watchdog_periods(timeout: Duration) -> (Duration, Duration) {
    let every = (timeout / 2).max(MIN_PING);
    (every, every / 2)
}

/// The shortest ping period, whatever `WatchdogSec=` asks.
const MIN_PING: Duration = Duration::from_millis(100);

const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

fn say(states: &[NotifyState]) {
    match sd_notify::notify(states) {
        Ok(()) => debug!("sd_notify: {states:?}"),
        Err(e) => warn!("sd_notify {states:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::watchdog_periods;

    #[test]
    fn pings_at_half_the_watchdog_and_probes_within_a_quarter() {
        let (every, within) = watchdog_periods(Duration::from_secs(30));
        assert_eq!(every, Duration::from_secs(15));
        assert_eq!(within, Duration::from_millis(7500));
        // A watchdog of a few microseconds is not a reason to spin.
        let (every, within) = watchdog_periods(Duration::from_micros(10));
        assert_eq!(every, Duration::from_millis(100));
        assert_eq!(within, Duration::from_millis(50));
    }
}
