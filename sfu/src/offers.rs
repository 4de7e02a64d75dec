//! Offers read off the media threads. Parsing the SDP of the largest offer the protocol
//! allows takes tens of milliseconds, which a shard thread cannot spend without every
//! room on it missing its packets' deadlines. One thread of its own reads every offer
//! (a flood of them takes at most that one thread, however many sockets send it), at
//! the lowest priority, so that a shard thread that has packets to forward runs first
//! even on the same core; a shard receives only the result ([`ReadOffer`]).
//!
//! Offers wait for the reader in a queue bounded in count and in bytes; when it is full,
//! `server_busy`, which the client library retries.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use protocol::{ErrorCode, ErrorMessage, Publish, RequestType, Subscribe};
use sfu_core::shard::ReadOffer;
use thread_priority::ThreadPriority;
use tokio::sync::oneshot;
use tracing::{error, warn};

/// Offers waiting to be read, server-wide, at most.
const QUEUE: usize = 256;

/// Bytes of SDP waiting to be read, server-wide, at most: everyone of a 70-person call
/// renegotiating at once (69 offers of a few hundred kilobytes) fits; a flood of the
/// largest offers waits at most about a second and a half (25 ms to read each).
const QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// How long a session waits for its offer to be read before it is answered
/// `server_busy` (the reader yields to the media threads, which may leave it little).
const WAIT: Duration = Duration::from_secs(5);

const BUSY: &str = "media server is busy, retry";

/// An offer to read, and where its result goes.
struct Job {
    sdp: String,
    publish: Vec<Publish>,
    subscribe: Vec<Subscribe>,
    slots: Vec<String>,
    reply: oneshot::Sender<Result<ReadOffer, ErrorMessage>>,
}

/// The handle to the reader thread.
#[derive(Debug, Clone)]
pub struct OfferReader {
    jobs: mpsc::SyncSender<Job>,
    /// Bytes of SDP queued and not yet being read.
    waiting: Arc<AtomicUsize>,
}

impl OfferReader {
    /// Starts the reader thread.
    pub fn start() -> std::io::Result<OfferReader> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let waiting = Arc::new(AtomicUsize::new(0));
        let taken = waiting.clone();
        thread::Builder::new()
            .name("offers".into())
            .spawn(move || {
                if let Err(e) = thread_priority::set_current_thread_priority(ThreadPriority::Min) {
                    warn!("the offer reader keeps its priority: {e:?}");
                }
                for job in queue {
                    let Job {
                        sdp,
                        publish,
                        subscribe,
                        slots,
                        reply,
                    } = job;
                    taken.fetch_sub(sdp.len(), Ordering::Relaxed);
                    if reply.is_closed() {
                        continue; // Its session gave up waiting, or is gone.
                    }
                    // A parser's panic on one offer must not stop the reading of others.
                    let read = panic::catch_unwind(AssertUnwindSafe(|| {
                        ReadOffer::read(sdp, publish, subscribe, slots)
                    }))
                    .unwrap_or_else(|_| {
                        error!("reading an offer panicked; refused as internal");
                        Err(
                            ErrorMessage::new(ErrorCode::Internal, "reading the offer failed")
                                .answering(RequestType::Offer),
                        )
                    });
                    let _ = reply.send(read);
                }
            })?;
        Ok(OfferReader { jobs, waiting })
    }

    /// Reads an offer: the read offer, or the error that answers it.
    pub async fn read(
        &self,
        sdp: String,
        publish: Vec<Publish>,
        subscribe: Vec<Subscribe>,
        slots: Vec<String>,
    ) -> Result<ReadOffer, ErrorMessage> {
        let refuse = |code, message: &str| {
            Err(ErrorMessage::new(code, message).answering(RequestType::Offer))
        };
        let size = sdp.len();
        if self.waiting.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.waiting.fetch_sub(size, Ordering::Relaxed);
            return refuse(ErrorCode::ServerBusy, BUSY);
        }
        let (reply, result) = oneshot::channel();
        let job = Job {
            sdp,
            publish,
            subscribe,
            slots,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(e) => {
                self.waiting.fetch_sub(size, Ordering::Relaxed);
                return match e {
                    mpsc::TrySendError::Full(_) => refuse(ErrorCode::ServerBusy, BUSY),
                    mpsc::TrySendError::Disconnected(_) => {
                        refuse(ErrorCode::Internal, "the offer reader is not running")
                    }
                };
            }
        }
        match tokio::time::timeout(WAIT, result).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => refuse(ErrorCode::Internal, "the offer reader stopped"),
            // The media threads leave the reader little time now: the client retries.
            Err(_) => refuse(ErrorCode::ServerBusy, BUSY),
        }
    }
}
