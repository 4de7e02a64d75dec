//! Webhook delivery over real HTTP on 127.0.0.1: notices arrive in order and signed as
//! Standard Webhooks have it, failures are retried and then given up, a dead or hanging
//! receiver holds up no other, a burst past a queue is dropped without waiting, and bad
//! secrets and URLs are refused with the reason.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use prometheus::Registry;
use protocol::admin::{Event, Notice};
use signaling::token::unix_now;
use signaling::webhooks::{
    SecretError, UrlError, WebhookConfig, WebhookError, WebhookSecret, Webhooks,
};
use tokio::net::TcpListener;

/// The Standard Webhooks spec's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn notice(n: usize) -> Notice {
    Notice {
        id: format!("ntc_{n}"),
        timestamp_ms: 1_700_000_000_000 + n as u64,
        node: "node-a".into(),
        event: Event::RoomStarted {
            room: format!("room-{n}"),
            group: "default".into(),
        },
    }
}

/// The defaults, but quick: three attempts 20 and 40 ms apart.
fn config(urls: Vec<String>) -> WebhookConfig {
    let mut config = WebhookConfig::new(urls, SECRET.parse().unwrap()).unwrap();
    config.timeout = Duration::from_secs(2);
    config.attempts = 3;
    config.backoff = Duration::from_millis(20);
    config
}

/// What a test receiver got, and what it answers.
#[derive(Clone, Default)]
struct Inbox {
    /// Each POST's headers and raw body, in order.
    posts: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Statuses to answer first, in order; 200 once they are spent.
    answers: Arc<Mutex<VecDeque<StatusCode>>>,
}

async fn take(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.posts.lock().push((headers, body));
    inbox.answers.lock().pop_front().unwrap_or(StatusCode::OK)
}

/// An HTTP receiver on 127.0.0.1 that answers `answers` first, then 200.
async fn receiver(answers: &[StatusCode]) -> (String, Inbox) {
    let inbox = Inbox::default();
    inbox.answers.lock().extend(answers);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks?token=t", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/hooks", post(take))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, inbox)
}

/// A receiver that takes connections and never answers; counts the connections.
async fn hanging() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

/// A URL where nothing listens: the connection is refused.
fn dead() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/hooks")
}

/// A sample of the webhook metrics; `None` when the series is not registered.
fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .find(|metric| {
            labels.iter().all(|(k, v)| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == *k && label.value() == *v)
            })
        })
        .map(|metric| (metric.get_counter().get_value() + metric.get_gauge().get_value()) as i64)
}

/// `sfu_webhook_notices_total{receiver, result}`.
fn count(registry: &Registry, receiver: usize, result: &str) -> i64 {
    let receiver = receiver.to_string();
    sample(
        registry,
        "sfu_webhook_notices_total",
        &[("receiver", &receiver), ("result", result)],
    )
    .unwrap()
}

/// `sfu_webhook_queue{receiver}`.
fn waiting(registry: &Registry, receiver: usize) -> i64 {
    let receiver = receiver.to_string();
    sample(registry, "sfu_webhook_queue", &[("receiver", &receiver)]).unwrap()
}

/// Waits until `done` holds: at most 1000 looks, 10 ms apart.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still not so after 10 s: {what}");
}

/// Checks a POST's Standard Webhooks headers against its raw body, computing the
/// signature here from the secret's key; returns its `webhook-id`.
fn verify(headers: &HeaderMap, body: &[u8]) -> String {
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let sent_s: u64 = timestamp.parse().unwrap();
    assert!(
        sent_s.abs_diff(unix_now()) <= 5,
        "timestamp {sent_s} is not now"
    );
    let key = BASE64.decode(&SECRET["whsec_".len()..]).unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    let expected = format!("v1,{}", BASE64.encode(hmac::sign(&key, &signed).as_ref()));
    assert_eq!(header("webhook-signature"), expected);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(
        header("user-agent"),
        concat!("sfu/", env!("CARGO_PKG_VERSION"))
    );
    id
}

#[tokio::test]
async fn notices_arrive_in_order_and_signed() {
    let (url, inbox) = receiver(&[]).await;
    let registry = Registry::new();
    let webhooks = Webhooks::start(config(vec![url]), &registry).unwrap();
    for result in ["delivered", "retried", "failed", "dropped"] {
        assert_eq!(
            count(&registry, 0, result),
            0,
            "{result} registered up front"
        );
    }
    assert_eq!(waiting(&registry, 0), 0);

    let sent: Vec<Notice> = (0..5).map(notice).collect();
    for notice in &sent {
        webhooks.send(notice);
    }
    eventually("five posts", || inbox.posts.lock().len() == 5).await;
    eventually("five counted", || count(&registry, 0, "delivered") == 5).await;

    let posts = inbox.posts.lock().clone();
    for ((headers, body), notice) in posts.iter().zip(&sent) {
        assert_eq!(verify(headers, body), notice.id);
        let got: Notice = serde_json::from_slice(body).unwrap();
        assert_eq!(&got, notice);
    }
    assert_eq!(count(&registry, 0, "retried"), 0);
    assert_eq!(count(&registry, 0, "failed"), 0);
    assert_eq!(waiting(&registry, 0), 0);
}

#[tokio::test]
async fn a_notice_is_retried_until_it_is_taken() {
    let error = StatusCode::INTERNAL_SERVER_ERROR;
    let (url, inbox) = receiver(&[error, error]).await;
    let registry = Registry::new();
    let webhooks = Webhooks::start(config(vec![url]), &registry).unwrap();

    webhooks.send(&notice(1));
    eventually("delivered", || count(&registry, 0, "delivered") == 1).await;

    let posts = inbox.posts.lock().clone();
    assert_eq!(posts.len(), 3, "two refusals, then the one taken");
    for (headers, body) in &posts {
        assert_eq!(verify(headers, body), "ntc_1", "one id on every attempt");
    }
    assert!(inbox.answers.lock().is_empty());
    assert_eq!(count(&registry, 0, "retried"), 2);
    assert_eq!(count(&registry, 0, "failed"), 0);
    assert_eq!(count(&registry, 0, "dropped"), 0);
}

#[tokio::test]
async fn a_dead_or_hanging_receiver_holds_up_no_other() {
    let (hanging, connections) = hanging().await;
    let (live, inbox) = receiver(&[]).await;
    let registry = Registry::new();
    let mut config = config(vec![dead(), hanging, live]);
    // The hanging receiver's first attempt outlasts the test.
    config.timeout = Duration::from_secs(30);
    let webhooks = Webhooks::start(config, &registry).unwrap();

    for n in 0..10 {
        webhooks.send(&notice(n));
    }
    eventually("the live receiver has all", || {
        inbox.posts.lock().len() == 10
    })
    .await;
    let ids: Vec<String> = inbox
        .posts
        .lock()
        .iter()
        .map(|(headers, body)| verify(headers, body))
        .collect();
    let sent: Vec<String> = (0..10).map(|n| notice(n).id).collect();
    assert_eq!(ids, sent);
    eventually("the live receiver's counted", || {
        count(&registry, 2, "delivered") == 10
    })
    .await;

    // Meanwhile the hanging receiver is still on its first notice, the rest queued.
    eventually("a connection to the hanging receiver", || {
        connections.load(Ordering::SeqCst) >= 1
    })
    .await;
    for result in ["delivered", "retried", "failed", "dropped"] {
        assert_eq!(count(&registry, 1, result), 0, "hanging: {result}");
    }
    assert_eq!(waiting(&registry, 1), 9);

    // The dead one's notices are each tried three times, then given up.
    eventually("the dead receiver's given up", || {
        count(&registry, 0, "failed") == 10
    })
    .await;
    assert_eq!(count(&registry, 0, "delivered"), 0);
    assert_eq!(count(&registry, 0, "retried"), 20);
    assert_eq!(count(&registry, 0, "dropped"), 0);
    assert_eq!(waiting(&registry, 0), 0);
}

/// On a single-threaded runtime the delivery task cannot run while the test sends: had
/// `send` waited for room, this would never end; had it queued past the bound, fewer
/// would be dropped.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_past_the_queue_is_dropped_without_waiting() {
    let (hanging, connections) = hanging().await;
    let registry = Registry::new();
    let mut config = config(vec![hanging]);
    config.queue = 64;
    config.timeout = Duration::from_secs(30);
    let webhooks = Webhooks::start(config, &registry).unwrap();

    let notice = notice(1);
    for _ in 0..5000 {
        webhooks.send(&notice);
    }
    assert_eq!(count(&registry, 0, "dropped"), 5000 - 64);
    assert_eq!(waiting(&registry, 0), 64);

    // Once the test yields, the task takes the first and hangs on it.
    eventually("a connection", || connections.load(Ordering::SeqCst) >= 1).await;
    assert_eq!(waiting(&registry, 0), 63);
    assert_eq!(count(&registry, 0, "dropped"), 5000 - 64);
}

#[test]
fn bad_secrets_are_refused_with_the_reason() {
    let refused = |text: &str| text.parse::<WebhookSecret>().unwrap_err();
    let key = |bytes: usize| format!("whsec_{}", BASE64.encode(vec![1u8; bytes]));

    let no_prefix = refused("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert!(matches!(no_prefix, SecretError::NoPrefix));
    assert!(no_prefix.to_string().contains("whsec_"), "{no_prefix}");

    let not_base64 = refused("whsec_***");
    assert!(matches!(not_base64, SecretError::Base64(_)));
    assert!(
        not_base64.to_string().contains("not base64"),
        "{not_base64}"
    );

    let short = refused(&key(16));
    assert!(matches!(short, SecretError::TooShort(16)));
    assert!(short.to_string().contains("16 bytes"), "{short}");

    let long = refused(&key(65));
    assert!(matches!(long, SecretError::TooLong(65)));
    assert!(long.to_string().contains("65 bytes"), "{long}");

    let secret: WebhookSecret = key(32).parse().unwrap();
    assert_eq!(secret.to_string(), key(32));
    assert!(!format!("{secret:?}").contains(&key(32)["whsec_".len()..]));
}

#[tokio::test]
async fn bad_urls_and_settings_are_refused_with_the_reason() {
    let secret = || SECRET.parse::<WebhookSecret>().unwrap();
    for (url, expected) in [
        ("example.com/hooks", UrlError::Syntax),
        ("mailto:ops@example.com", UrlError::Syntax),
        ("ftp://example.com/hooks", UrlError::Scheme),
        ("https://", UrlError::Syntax),
        (
            "https://admin:hunter2@example.com/hooks",
            UrlError::Credentials,
        ),
    ] {
        let error = WebhookConfig::new(vec!["https://ok.example/".into(), url.into()], secret())
            .unwrap_err();
        let WebhookError::Url { url: named, reason } = &error else {
            panic!("{url}: {error}");
        };
        assert_eq!((named.as_str(), *reason), (url, expected));
        assert!(error.to_string().contains(url), "{error}");
    }

    // The fields are public: `start` checks them again.
    let registry = Registry::new();
    let mut changed = config(vec!["http://127.0.0.1:9/".into()]);
    changed.urls.push("ws://example.com/hooks".into());
    assert!(matches!(
        Webhooks::start(changed, &registry),
        Err(WebhookError::Url {
            reason: UrlError::Scheme,
            ..
        })
    ));
    let mut empty = config(vec!["http://127.0.0.1:9/".into()]);
    empty.queue = 0;
    assert!(matches!(
        Webhooks::start(empty, &registry),
        Err(WebhookError::EmptyQueue)
    ));
    let mut never = config(vec!["http://127.0.0.1:9/".into()]);
    never.attempts = 0;
    assert!(matches!(
        Webhooks::start(never, &registry),
        Err(WebhookError::NoAttempts)
    ));

    // Nothing above registered a metric; a second start on one registry is refused.
    Webhooks::start(config(vec!["http://127.0.0.1:9/".into()]), &registry).unwrap();
    assert!(matches!(
        Webhooks::start(config(vec!["http://127.0.0.1:9/".into()]), &registry),
        Err(WebhookError::Metrics(_))
    ));
}

#[test]
fn webhooks_start_only_inside_a_runtime() {
    let error = Webhooks::start(config(vec![dead()]), &Registry::new()).unwrap_err();
    assert!(matches!(error, WebhookError::NoRuntime), "{error}");
}
