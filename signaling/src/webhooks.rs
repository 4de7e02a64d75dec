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

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use protocol::admin::Notice;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_rustls::rustls;
use tracing::warn;

use crate::token::unix_now;

/// The longest delay between two attempts at one notice.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What precedes the base64 key in a secret's text form.
const SECRET_PREFIX: &str = "whsec_";
/// The shortest and longest key the Standard Webhooks spec allows, in bytes.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
/// The size of a key [`WebhookSecret::generate`] makes.
const GENERATED_KEY_BYTES: usize = 32;

/// At most one warning per receiver in this time; the failures in between are counted
/// into the next.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The most of a receiver's answer that is read (and thrown away): reading it to its end
/// lets the connection carry the next notice.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

const USER_AGENT_VALUE: &str = concat!("sfu/", env!("CARGO_PKG_VERSION"));
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The `result` label values of `sfu_webhook_notices_total`.
const DELIVERED: &str = "delivered";
const RETRIED: &str = "retried";
const FAILED: &str = "failed";
const DROPPED: &str = "dropped";
const RESULTS: [&str; 4] = [DELIVERED, RETRIED, FAILED, DROPPED];

/// Why a webhook secret was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// It does not start with `whsec_`.
    #[error("a webhook secret starts with `whsec_`")]
    NoPrefix,
    /// What follows `whsec_` is not standard base64.
    #[error("the part of a webhook secret after `whsec_` is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The key is shorter than 24 bytes.
    #[error("a webhook secret's key is {0} bytes, under the least of {MIN_KEY_BYTES}")]
    TooShort(usize),
    /// The key is longer than 64 bytes.
    #[error("a webhook secret's key is {0} bytes, over the most of {MAX_KEY_BYTES}")]
    TooLong(usize),
}

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

/// The key that signs notices, written `whsec_<base64 key>` as Standard Webhooks have it.
/// Its `Display` gives that form (the secret itself: print it only for the operator);
/// its `Debug` hides the key.
#[derive(Clone)]
pub struct WebhookSecret {
    /// The HMAC-SHA256 key, 24 to 64 bytes.
    key: Vec<u8>,
}

impl WebhookSecret {
    /// A new secret of 32 random bytes, for the operator to give the receivers.
    pub fn generate() -> WebhookSecret {
        let mut key = vec![0; GENERATED_KEY_BYTES];
        rand::fill(&mut key[..]);
        WebhookSecret { key }
    }

    /// The `webhook-signature` value of a notice: `v1,` then the base64 HMAC-SHA256 of
    /// `{id}.{timestamp_s}.{body}`.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp_s.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", BASE64.encode(context.sign().as_ref()))
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = BASE64.decode(encoded)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretError::TooShort(key.len()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(SecretError::TooLong(key.len()));
        }
        Ok(WebhookSecret { key })
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("key_bytes", &self.key.len())
            .finish_non_exhaustive()
    }
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

/// The webhook metrics, label values registered up front.
struct Metrics {
    /// `sfu_webhook_notices_total{receiver, result}`.
    notices: IntCounterVec,
    /// `sfu_webhook_queue{receiver}`.
    queue: IntGaugeVec,
}

impl Metrics {
    fn register(registry: &Registry, receivers: usize) -> prometheus::Result<Metrics> {
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
struct Courier {
    /// The receiver's place in the configuration, for logs.
    index: usize,
    target: Target,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    secret: WebhookSecret,
    /// See [`WebhookConfig`].
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    /// `result` = `delivered`, `retried`, `failed`.
    delivered: IntCounter,
    retried: IntCounter,
    failed: IntCounter,
    /// `sfu_webhook_queue{receiver}`, lowered as a notice is taken.
    waiting: IntGauge,
    /// Keeps the warnings of a receiver that is down to one a minute.
    warnings: Warnings,
}

impl Courier {
    /// Delivers until every [`Webhooks`] handle is dropped and the queue is empty.
    async fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
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
enum Failure {
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
struct Warnings {
    /// When the last warning was let through.
    last: Option<Instant>,
    /// Warnings held back since.
    held: u64,
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

    /// The test vector of the Standard Webhooks reference libraries (the Python and PHP
    /// libraries' `sign` tests).
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// The Rust reference library's own vector.
    #[test]
    fn signs_the_rust_reference_vector() {
        let secret: WebhookSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
        assert_eq!(
            secret.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_generated_secret_reads_back_and_hides_in_debug() {
        let secret = WebhookSecret::generate();
        let text = secret.to_string();
        assert!(text.starts_with("whsec_"));
        let back: WebhookSecret = text.parse().unwrap();
        assert_eq!(back.key, secret.key);
        assert_eq!(back.key.len(), GENERATED_KEY_BYTES);
        assert_ne!(WebhookSecret::generate().key, secret.key);
        let debug = format!("{secret:?}");
        assert!(!debug.contains(&text["whsec_".len()..]), "{debug}");
        assert_eq!(debug, "WebhookSecret { key_bytes: 32, .. }");
    }

    #[test]
    fn secrets_are_refused_with_the_reason() {
        let key = |bytes: usize| format!("whsec_{}", BASE64.encode(vec![7u8; bytes]));
        assert!(matches!(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse::<WebhookSecret>(),
            Err(SecretError::NoPrefix)
        ));
        assert!(matches!(
            "whsec_not base64!".parse::<WebhookSecret>(),
            Err(SecretError::Base64(_))
        ));
        assert!(matches!(
            key(23).parse::<WebhookSecret>(),
            Err(SecretError::TooShort(23))
        ));
        assert!(matches!(
            key(65).parse::<WebhookSecret>(),
            Err(SecretError::TooLong(65))
        ));
        assert!(key(24).parse::<WebhookSecret>().is_ok());
        assert!(key(64).parse::<WebhookSecret>().is_ok());
    }

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
