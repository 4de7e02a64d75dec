//! Limits per client address: how many WebSockets one IP may hold open, and how fast it
//! may join. One machine (or one attacker) cannot then take every socket the server can
//! afford (each costs about 136 KB) or start sessions faster than the media plane sets
//! them up. Refusals are counted (`sfu_signaling_refused_total{reason}`).
//!
//! Behind a reverse proxy every client has the proxy's address: raise the limits, or turn
//! them off (0), there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::budget::{Bucket, Rate};

/// The limits; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct AddressLimits {
    /// Open WebSockets per address.
    pub sockets: usize,
    /// Joins per second per address, in bursts of five seconds' worth.
    pub joins_per_second: f64,
}

impl Default for AddressLimits {
    /// 256 sockets (an office behind one NAT, in calls) and 10 joins a second.
    fn default() -> Self {
        AddressLimits {
            sockets: 256,
            joins_per_second: 10.0,
        }
    }
}

/// Entries beyond which addresses with no open socket are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// What each address holds and may still do.
pub(crate) struct Addresses {
    limits: AddressLimits,
    by_ip: Mutex<HashMap<IpAddr, Entry>>,
}

struct Entry {
    sockets: usize,
    joins: Bucket,
}

/// An open socket's place in its address's count, given back when dropped.
pub(crate) struct SocketPlace {
    addresses: Arc<Addresses>,
    ip: IpAddr,
}

impl Addresses {
    pub(crate) fn new(limits: AddressLimits) -> Addresses {
        Addresses {
            limits,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more socket from `ip`, or `None` when it holds its limit.
    pub(crate) fn open(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<SocketPlace> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = self.entry_of(&mut by_ip, ip, now);
        if self.limits.sockets > 0 && entry.sockets >= self.limits.sockets {
            return None;
        }
        entry.sockets += 1;
        Some(SocketPlace {
            addresses: self.clone(),
            ip,
        })
    }

    /// Whether `ip` may join now (a token of its join budget).
    pub(crate) fn join(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limits.joins_per_second <= 0.0 {
            return true;
        }
        let mut by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
        self.entry_of(&mut by_ip, ip, now).joins.take(now)
    }

    /// The entry of `ip`, made if new. Past [`PRUNE_ABOVE`] entries, those of addresses
    /// with no open socket are forgotten first (joins over WHIP and WHEP hold none), so
    /// the map stays bounded whatever mix of requests comes.
    fn entry_of<'a>(
        &self,
        by_ip: &'a mut HashMap<IpAddr, Entry>,
        ip: IpAddr,
        now: Instant,
    ) -> &'a mut Entry {
        if by_ip.len() > PRUNE_ABOVE && !by_ip.contains_key(&ip) {
            by_ip.retain(|_, e| e.sockets > 0);
        }
        by_ip.entry(ip).or_insert_with(|| self.entry(now))
    }

    fn entry(&self, now: Instant) -> Entry {
        let rate = self.limits.joins_per_second.max(0.0);
        Entry {
            sockets: 0,
            joins: Bucket::full(
                Rate {
                    burst: (rate * 5.0).max(1.0),
                    per_second: rate,
                },
                now,
            ),
        }
    }
}

impl Drop for SocketPlace {
    fn drop(&mut self) {
        let mut by_ip = self
            .addresses
            .by_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = by_ip.get_mut(&self.ip) {
            e.sockets = e.sockets.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_address_holds_its_sockets_and_gets_them_back() {
        let now = Instant::now();
        let a = Arc::new(Addresses::new(AddressLimits {
            sockets: 2,
            joins_per_second: 1.0,
        }));
        let ip: IpAddr = [192, 0, 2, 1].into();
        let first = a.open(ip, now).unwrap();
        let _second = a.open(ip, now).unwrap();
        assert!(a.open(ip, now).is_none(), "the third");
        assert!(
            a.open([192, 0, 2, 2].into(), now).is_some(),
            "another address"
        );
        drop(first);
        assert!(a.open(ip, now).is_some(), "a place given back");
        // Joins: five seconds' worth at once, then one a second.
        assert_eq!((0..10).filter(|_| a.join(ip, now)).count(), 5);
        assert!(a.join(ip, now + Duration::from_secs(1)));
    }

    #[test]
    fn addresses_that_only_join_are_forgotten_past_the_bound() {
        let now = Instant::now();
        let a = Arc::new(Addresses::new(AddressLimits::default()));
        let held = a.open([192, 0, 2, 1].into(), now).unwrap();
        for n in 0..3 * PRUNE_ABOVE as u32 {
            assert!(a.join(IpAddr::from((0x0a00_0000 + n).to_be_bytes()), now));
        }
        let len = a.by_ip.lock().unwrap().len();
        assert!(len <= PRUNE_ABOVE + 1, "{len} entries");
        // The address with an open socket is kept.
        assert!(
            a.by_ip
                .lock()
                .unwrap()
                .contains_key(&IpAddr::from([192, 0, 2, 1]))
        );
        drop(held);
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let now = Instant::now();
        let a = Arc::new(Addresses::new(AddressLimits {
            sockets: 0,
            joins_per_second: 0.0,
        }));
        let ip: IpAddr = [192, 0, 2, 1].into();
        let held: Vec<_> = (0..1000).map(|_| a.open(ip, now).unwrap()).collect();
        assert_eq!(held.len(), 1000);
        assert!((0..1000).all(|_| a.join(ip, now)));
    }
}
