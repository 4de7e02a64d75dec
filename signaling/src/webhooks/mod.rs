//! Webhooks: notices about calls, signed and POSTed to the operator's receivers from
//! bounded queues, so that a slow or dead receiver costs the server nothing but the
//! notices it misses.
//!
//! Each notice is signed as Standard Webhooks have it (<https://www.standardwebhooks.com/>):
//! headers `webhook-id` (the notice's id, the same on every attempt), `webhook-timestamp`
//! (Unix seconds of the attempt, fresh on each) and `webhook-signature`
//! (`v1,` then the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret's
//! key), so that a receiver can use any Standard Webhooks library to check them.
//!
//! [`Webhooks::send`] serializes a notice once and puts it on each receiver's queue
//! without waiting: a full queue drops the notice for that receiver. One task per
//! receiver delivers its queue in order, one notice at a time: a 2xx answer is delivered;
//! anything else (another status, a refused connection, no answer within the timeout) is
//! tried again after a delay that doubles from [`WebhookConfig::backoff`] up to
//! [`MAX_BACKOFF`], [`WebhookConfig::attempts`] times in all; then the notice is given up
//! and logged, at most once a minute per receiver. With the defaults a notice is given up
//! about 16 seconds (plus the attempts' own time) after its first attempt; a receiver down
//! for longer misses what was sent meanwhile. Redirects are not followed: a signed notice
//! goes only where the operator said. Receivers share nothing but the HTTP client: one
//! that hangs delays no other.
//!
//! Counted in `sfu_webhook_notices_total{receiver, result}` (result `delivered`,
//! `retried` (one per attempt after the first), `failed` (given up), `dropped` (its queue
//! was full)) and `sfu_webhook_queue{receiver}` (notices waiting); `receiver` is the
//! receiver's place in [`WebhookConfig::urls`], 0 first, never its URL, which may hold a
//! token.
//!
//! `mod.rs` holds the configuration and [`Webhooks`], the queues' sending side;
//! `secret.rs` the key and the signature ([`WebhookSecret`]); `courier.rs` one
//! receiver's delivery task, its metrics and its rate-limited warnings.

mod courier;
mod secret;

pub use secret::{SecretError, WebhookSecret};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{IntCounter, IntGauge, Registry};
use protocol::admin::Notice;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_rustls::rustls;
use tracing::warn;

use courier::{Courier, DELIVERED, DROPPED, FAILED, Metrics, RETRIED, Warnings};

/// The longest delay between two attempts at one notice.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a receiver URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// It does not parse as an absolute URL.
    #[error("not a URL")]
    Syntax,
    /// Its scheme is neither `http` nor `https`.
    #[error("the scheme must be http or https")]
    Scheme,
    /// It names no host.
    #[error("no host")]
    NoHost,
    /// It carries a user name or password, which would not be sent (and would be logged).
    #[error("user names and passwords in the URL are not supported")]
    Credentials,
}

/// Why webhooks could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret is malformed.
    #[error("webhook secret: {0}")]
    Secret(#[from] SecretError),
    /// A receiver URL is malformed.
    #[error("webhook URL `{url}`: {reason}")]
    Url { url: String, reason: UrlError },
    /// [`WebhookConfig::queue`] is 0.
    #[error("a webhook queue must hold at least one notice")]
    EmptyQueue,
    /// [`WebhookConfig::attempts`] is 0.
    #[error("webhooks need at least one attempt per notice")]
    NoAttempts,
    /// A receiver is on HTTPS but the system's store has no CA certificate to trust.
    #[error("no CA certificates in the system's store for HTTPS webhooks: {0}")]
    Roots(std::io::Error),
    /// [`Webhooks::start`] was called outside a tokio runtime.
    #[error("webhooks start inside a tokio runtime")]
    NoRuntime,
    /// The metrics could not be registered (say, webhooks were started twice on one
    /// registry).
    #[error("webhook metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Where notices go and how hard delivery tries.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receivers, each an `http` or `https` URL; each gets every notice.
    pub urls: Vec<String>,
    /// Signs every notice.
    pub secret: WebhookSecret,
    /// Notices that may wait for one receiver (1024): past that they are dropped for it.
    /// The queues share each notice's JSON; tokio allocates their places as they fill.
    pub queue: usize,
    /// How long one attempt may take, from connecting to the answer's status (5 s).
    pub timeout: Duration,
    /// Attempts at one notice in all, the first included (6).
    pub attempts: u32,
    /// The delay before the first retry (500 ms); each next one doubles, up to
    /// [`MAX_BACKOFF`].
    pub backoff: Duration,
}

impl WebhookConfig {
    /// The receivers at `urls`, with the defaults; refuses a URL that is not `http` or
    /// `https` with a host.
    pub fn new(urls: Vec<String>, secret: WebhookSecret) -> Result<WebhookConfig, WebhookError> {
        for url in &urls {
            Target::parse(url)?;
        }
        Ok(WebhookConfig {
            urls,
            secret,
            queue: 1024,
            timeout: Duration::from_secs(5),
            attempts: 6,
            backoff: Duration::from_millis(500),
        })
    }
}

/// The webhook senders: a handle, cheap to clone, on one queue and one delivery task per
/// receiver. The tasks end once every handle is dropped and their queues are delivered.
#[derive(Clone)]
pub struct Webhooks {
    /// One per receiver, in the order of [`WebhookConfig::urls`].
    outboxes: Arc<[Outbox]>,
}

impl Webhooks {
    /// Checks `config`, registers the metrics in `registry` and starts one delivery task
    /// per receiver on the current tokio runtime. With no URLs, [`Webhooks::send`] does
    /// nothing.
    pub fn start(config: WebhookConfig, registry: &Registry) -> Result<Webhooks, WebhookError> {
        if config.queue == 0 {
            return Err(WebhookError::EmptyQueue);
        }
        if config.attempts == 0 {
            return Err(WebhookError::NoAttempts);
        }
        let targets = config
            .urls
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        let https = targets
            .iter()
            .any(|target| target.uri.scheme_str() == Some("https"));
        let client = client(https)?;
        let metrics = Metrics::register(registry, targets.len())?;

        let mut outboxes = Vec::with_capacity(targets.len());
        for (index, target) in targets.into_iter().enumerate() {
            let label = index.to_string();
            let count = |result: &str| metrics.notices.with_label_values(&[&label, result]);
            let waiting = metrics.queue.with_label_values(&[&label]);
            let (sender, queue) = mpsc::channel(config.queue);
            let courier = Courier {
                index,
                target,
                client: client.clone(),
                secret: config.secret.clone(),
                timeout: config.timeout,
                attempts: config.attempts,
                backoff: config.backoff,
                delivered: count(DELIVERED),
                retried: count(RETRIED),
                failed: count(FAILED),
                waiting: waiting.clone(),
                warnings: Warnings::default(),
            };
            runtime.spawn(courier.run(queue));
            outboxes.push(Outbox {
                queue: sender,
                waiting,
                dropped: count(DROPPED),
                failed: count(FAILED),
            });
        }
        Ok(Webhooks {
            outboxes: outboxes.into(),
        })
    }

    /// Queues `notice` for every receiver, serialized once. Never waits: where a queue is
    /// full the notice is dropped for that receiver, and counted.
    pub fn send(&self, notice: &Notice) {
        if self.outboxes.is_empty() {
            return;
        }
        let body = match serde_json::to_vec(notice) {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                // Not for any input: a notice that cannot be JSON is a bug in its maker.
                for outbox in self.outboxes.iter() {
                    outbox.failed.inc();
                }
                warn!(id = %notice.id, %error, "webhook notice cannot be serialized");
                return;
            }
        };
        let id: Arc<str> = Arc::from(notice.id.as_str());
        for outbox in self.outboxes.iter() {
            // Counted before it is queued: the task, which takes it off, never sees the
            // gauge below zero.
            outbox.waiting.inc();
            let queued = Queued {
                id: Arc::clone(&id),
                body: body.clone(),
            };
            match outbox.queue.try_send(queued) {
                Ok(()) => {}
                // Closed: the task is gone with its runtime; the notice is dropped too.
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    outbox.waiting.dec();
                    outbox.dropped.inc();
                }
            }
        }
    }
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("receivers", &self.outboxes.len())
            .finish()
    }
}

/// A notice on its way to one receiver.
struct Queued {
    /// The notice's id, the `webhook-id` header; shared by the receivers' copies.
    id: Arc<str>,
    /// The JSON body, serialized once for every receiver.
    body: Bytes,
}

/// [`Webhooks::send`]'s side of one receiver's queue.
struct Outbox {
    queue: mpsc::Sender<Queued>,
    /// `sfu_webhook_queue{receiver}`: raised here, lowered by the task as it takes one.
    waiting: IntGauge,
    /// `result="dropped"`: the queue was full.
    dropped: IntCounter,
    /// `result="failed"`: here only for a notice that cannot be serialized.
    failed: IntCounter,
}

/// A receiver's URL, parsed once.
struct Target {
    uri: Uri,
    /// What logs show: the URL without its query, which may hold a token.
    shown: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, WebhookError> {
        let refuse = |reason| WebhookError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| refuse(UrlError::Syntax))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            Some(_) => return Err(refuse(UrlError::Scheme)),
            None => return Err(refuse(UrlError::Syntax)),
        };
        let authority = uri.authority().ok_or_else(|| refuse(UrlError::NoHost))?;
        if authority.as_str().contains('@') {
            return Err(refuse(UrlError::Credentials));
        }
        if authority.host().is_empty() {
            return Err(refuse(UrlError::NoHost));
        }
        let shown = format!("{scheme}://{authority}{}", uri.path());
        Ok(Target { uri, shown })
    }
}

/// The HTTP client every receiver shares: HTTP/1.1, over rustls with aws-lc-rs for
/// `https`, trusting the system's CA certificates (read only when some receiver is on
/// `https`).
fn client(https: bool) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, WebhookError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = if https {
        HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(WebhookError::Roots)?
    } else {
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| WebhookError::Roots(std::io::Error::other(error)))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        HttpsConnectorBuilder::new().with_tls_config(config)
    };
    let connector = tls.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_query() {
        let reason = |url: &str| match Target::parse(url) {
            Err(WebhookError::Url { url: named, reason }) => {
                assert_eq!(named, url);
                Some(reason)
            }
            Err(other) => panic!("{other}"),
            Ok(_) => None,
        };
        assert_eq!(reason("not a url"), Some(UrlError::Syntax));
        assert_eq!(reason("/hooks"), Some(UrlError::Syntax));
        assert_eq!(reason("ftp://example.com/hooks"), Some(UrlError::Scheme));
        assert_eq!(reason("http://"), Some(UrlError::Syntax));
        assert_eq!(
            reason("https://user:pw@example.com/"),
            Some(UrlError::Credentials)
        );
        assert_eq!(reason("https://example.com"), None);
        assert_eq!(reason("http://127.0.0.1:8080/hooks?x=1"), None);
        let target = Target::parse("https://example.com:8443/hooks?token=abc").unwrap();
        assert_eq!(target.shown, "https://example.com:8443/hooks");
    }

    #[test]
    fn config_defaults_are_documented_ones() {
        let config = WebhookConfig::new(
            vec!["https://example.com/".into()],
            WebhookSecret::generate(),
        )
        .unwrap();
        assert_eq!(config.queue, 1024);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.attempts, 6);
        assert_eq!(config.backoff, Duration::from_millis(500));
        let refused = WebhookConfig::new(
            vec!["https://example.com/".into(), "gopher://x".into()],
            WebhookSecret::generate(),
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "webhook URL `gopher://x`: the scheme must be http or https"
        );
    }
}
