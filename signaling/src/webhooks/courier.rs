//! One receiver's delivery: its task takes its queue in order and posts each notice,
//! signed, retrying with backoff; and the metrics and rate-limited warnings it keeps.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::mpsc;
use tracing::warn;

use super::{MAX_BACKOFF, Queued, Target, WebhookSecret};
use crate::token::unix_now;

/// At most one warning per receiver in this time; the failures in between are counted
/// into the next.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(60);
/// The most of a receiver's answer that is read (and thrown away): reading it to its end
/// lets the connection carry the next notice.
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub(super) const USER_AGENT_VALUE: &str = concat!("sfu/", env!("CARGO_PKG_VERSION"));
pub(super) const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub(super) const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub(super) const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The `result` label values of `sfu_webhook_notices_total`.
pub(super) const DELIVERED: &str = "delivered";
pub(super) const RETRIED: &str = "retried";
pub(super) const FAILED: &str = "failed";
pub(super) const DROPPED: &str = "dropped";
pub(super) const RESULTS: [&str; 4] = [DELIVERED, RETRIED, FAILED, DROPPED];

/// The webhook metrics, label values registered up front.
pub(super) struct Metrics {
    /// `sfu_webhook_notices_total{receiver, result}`.
    pub(super) notices: IntCounterVec,
    /// `sfu_webhook_queue{receiver}`.
    pub(super) queue: IntGaugeVec,
}

impl Metrics {
    pub(super) fn register(registry: &Registry, receivers: usize) -> prometheus::Result<Metrics> {
        let notices = IntCounterVec::new(
            Opts::new(
                "sfu_webhook_notices_total",
                "Webhook notices by receiver (its place in the configuration) and result: \
                 delivered, retried (one per attempt after the first), failed (given up), \
                 dropped (queue full)",
            ),
            &["receiver", "result"],
        )?;
        let queue = IntGaugeVec::new(
            Opts::new(
                "sfu_webhook_queue",
                "Webhook notices waiting for their receiver",
            ),
            &["receiver"],
        )?;
        for index in 0..receivers {
            let label = index.to_string();
            for result in RESULTS {
                notices.with_label_values(&[label.as_str(), result]);
            }
            queue.with_label_values(&[label.as_str()]);
        }
        registry.register(Box::new(notices.clone()))?;
        registry.register(Box::new(queue.clone()))?;
        Ok(Metrics { notices, queue })
    }
}

/// One receiver's delivery task: takes its queue in order, one notice at a time.
pub(super) struct Courier {
    /// The receiver's place in the configuration, for logs.
    pub(super) index: usize,
    pub(super) target: Target,
    pub(super) client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub(super) secret: WebhookSecret,
    /// See [`WebhookConfig`].
    pub(super) timeout: Duration,
    pub(super) attempts: u32,
    pub(super) backoff: Duration,
    /// `result` = `delivered`, `retried`, `failed`.
    pub(super) delivered: IntCounter,
    pub(super) retried: IntCounter,
    pub(super) failed: IntCounter,
    /// `sfu_webhook_queue{receiver}`, lowered as a notice is taken.
    pub(super) waiting: IntGauge,
    /// Keeps the warnings of a receiver that is down to one a minute.
    pub(super) warnings: Warnings,
}

impl Courier {
    /// Delivers until every [`Webhooks`] handle is dropped and the queue is empty.
    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
        while let Some(notice) = queue.recv().await {
            self.waiting.dec();
            self.deliver(&notice).await;
        }
    }

    /// Tries `notice` until it is delivered or its attempts are spent.
    async fn deliver(&mut self, notice: &Queued) {
        let mut delay = self.backoff.min(MAX_BACKOFF);
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(notice).await {
                Ok(()) => {
                    self.delivered.inc();
                    return;
                }
                Err(failure) => failure,
            };
            if attempt >= self.attempts || matches!(failure, Failure::BadId) {
                self.failed.inc();
                if let Some(not_logged) = self.warnings.admit(Instant::now()) {
                    warn!(
                        receiver = self.index,
                        url = %self.target.shown,
                        id = %notice.id,
                        attempts = attempt,
                        error = %failure,
                        not_logged,
                        "webhook notice given up"
                    );
                }
                return;
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(MAX_BACKOFF);
            attempt += 1;
            self.retried.inc();
        }
    }

    /// One POST of `notice`, signed now.
    async fn attempt(&self, notice: &Queued) -> Result<(), Failure> {
        let timestamp_s = unix_now();
        let signature = self.secret.sign(&notice.id, timestamp_s, &notice.body);
        let request = Request::post(self.target.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header(WEBHOOK_ID, &*notice.id)
            .header(WEBHOOK_TIMESTAMP, timestamp_s)
            .header(WEBHOOK_SIGNATURE, signature)
            .body(Full::new(notice.body.clone()))
            // The signature is base64 and the URI was parsed: only the id can be amiss.
            .map_err(|_| Failure::BadId)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(error)) => return Err(Failure::Http(error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect();
        // The status decides; an answer too long or too slow only costs the connection.
        let _ = tokio::time::timeout_at(deadline, answer).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    }
}

/// Why an attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The receiver answered, but not 2xx.
    Status(StatusCode),
    /// No answer within the timeout.
    Timeout,
    /// No connection, or it broke.
    Http(hyper_util::client::legacy::Error),
    /// The notice's id is not a valid header value: no attempt can succeed.
    BadId,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "answered {status}"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Http(error) => {
                // hyper's errors say little at the top ("client error (Connect)"); the
                // cause ("Connection refused") is further down.
                write!(f, "{error}")?;
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Failure::BadId => f.write_str("the notice's id cannot be a header value"),
        }
    }
}

/// Lets a warning through at most once per [`WARN_EVERY`], and counts those it holds
/// back.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    /// When the last warning was let through.
    pub(super) last: Option<Instant>,
    /// Warnings held back since.
    pub(super) held: u64,
}

impl Warnings {
    /// Whether to log a warning at `now`: if so, how many were held back before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARN_EVERY => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    #[test]
    fn warnings_come_once_a_minute_with_a_count_of_the_rest() {
        let start = Instant::now();
        let mut warnings = Warnings::default();
        assert_eq!(warnings.admit(start), Some(0));
        assert_eq!(warnings.admit(start + Duration::from_secs(1)), None);
        assert_eq!(warnings.admit(start + Duration::from_secs(59)), None);
        assert_eq!(warnings.admit(start + Duration::from_secs(60)), Some(2));
        assert_eq!(warnings.admit(start + Duration::from_secs(61)), None);
        assert_eq!(warnings.admit(start + Duration::from_secs(200)), Some(1));
    }
}
