//! What one socket may send, and how fast: a token bucket per kind of request, so that one
//! participant cannot flood the media plane (offers are parsed on the thread that forwards
//! media, and each may announce tracks to every member) or other participants (`e2ee`
//! relays). Beyond its budget a request gets `rate_limited` and is dropped; the socket
//! stays open.

use std::time::Instant;

use protocol::{ErrorCode, ErrorMessage, RequestType};

/// A bucket's size (what may come at once) and refill rate (per second).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) burst: f64,
    pub(crate) per_second: f64,
}

/// `e2ee` messages: a 70-person call's key changes (one to each other participant) fit in
/// the burst many times over.
pub(crate) const E2EE: Rate = Rate {
    burst: 1024.0,
    per_second: 256.0,
};

/// `offer`s: a client renegotiates when people come and go, one offer at a time; a burst
/// of 20 and 5 a second leave room for a call filling up.
pub(crate) const OFFERS: Rate = Rate {
    burst: 20.0,
    per_second: 5.0,
};

/// `mute`, `view` and `keyframe`: a newcomer may ask for a keyframe of every track of a
/// 70-person call at once.
pub(crate) const OTHERS: Rate = Rate {
    burst: 200.0,
    per_second: 50.0,
};

/// A token bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: Rate,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    pub(crate) fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes a token if there is one at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A socket's budgets, one bucket per kind of request.
#[derive(Debug)]
pub(crate) struct Budgets {
    e2ee: Bucket,
    offers: Bucket,
    others: Bucket,
}

impl Budgets {
    pub(crate) fn full(now: Instant) -> Budgets {
        Budgets {
            e2ee: Bucket::full(E2EE, now),
            offers: Bucket::full(OFFERS, now),
            others: Bucket::full(OTHERS, now),
        }
    }

    /// Admits a request of a joined socket at `now`, or says `rate_limited`. `join` and
    /// `leave` are always admitted.
    pub(crate) fn admit(&mut self, request: RequestType, now: Instant) -> Result<(), ErrorMessage> {
        let (bucket, rate, what) = match request {
            RequestType::Join | RequestType::Leave => return Ok(()),
            RequestType::E2ee => (&mut self.e2ee, E2EE, "e2ee messages"),
            RequestType::Offer => (&mut self.offers, OFFERS, "offers"),
            RequestType::Mute | RequestType::View | RequestType::Keyframe => {
                (&mut self.others, OTHERS, "mute, view and keyframe requests")
            }
        };
        if bucket.take(now) {
            return Ok(());
        }
        Err(ErrorMessage::new(
            ErrorCode::RateLimited,
            format!(
                "over {} {what} a second (bursts of {}); this one was dropped",
                rate.per_second, rate.burst
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::full(E2EE, start);
        let taken = (0..2000).filter(|_| bucket.take(start)).count();
        assert_eq!(taken, 1024, "the burst, at one instant");
        let later = start + Duration::from_millis(500);
        let taken = (0..2000).filter(|_| bucket.take(later)).count();
        assert_eq!(taken, 128, "256 a second");
        // Idle for long: back to the burst, no more.
        let much_later = later + Duration::from_secs(3600);
        let taken = (0..2000).filter(|_| bucket.take(much_later)).count();
        assert_eq!(taken, 1024);
        // Time that goes backwards takes nothing and gives nothing.
        assert!(!bucket.take(start));
    }

    #[test]
    fn each_kind_of_request_has_its_own_budget() {
        let now = Instant::now();
        let mut budgets = Budgets::full(now);
        let offers = (0..100)
            .filter(|_| budgets.admit(RequestType::Offer, now).is_ok())
            .count();
        assert_eq!(offers, 20);
        let e = budgets.admit(RequestType::Offer, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        // Offers spent, the others are not.
        assert!(budgets.admit(RequestType::Keyframe, now).is_ok());
        assert!(budgets.admit(RequestType::E2ee, now).is_ok());
        assert!(budgets.admit(RequestType::Leave, now).is_ok());
        let others = (0..1000)
            .filter(|_| budgets.admit(RequestType::View, now).is_ok())
            .count();
        assert_eq!(others, 199, "one keyframe request took a token of the 200");
        assert!(
            budgets
                .admit(RequestType::Offer, now + Duration::from_millis(200))
                .is_ok()
        );
    }
}
