//! Requests from one node to another over Redis pub/sub: the admin API answered by the
//! node that hosts a call, whichever node the request reached. Each node listens on its
//! own channel ([`Store::inbox`]) for requests and for the answers to its own; a request
//! carries an id and the asker's id, its answer the same id.
//!
//! Nothing here is trusted for who asks: a request is an HTTP request to run as it came
//! (its `Authorization` header with it), checked by the node that runs it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::Cluster;

/// An HTTP request passed to another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayed {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The headers that matter to the API: `authorization`, `content-type`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What the node that ran a [`Relayed`] answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// Why a relayed request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the cluster's Redis cannot be reached: {0}")]
    Unreachable(#[from] redis::RedisError),
    /// Nobody listens on the node's channel: it is dead or not started.
    #[error("node {0} does not listen")]
    NotListening(String),
    #[error("node {0} did not answer in time")]
    TimedOut(String),
}

/// Runs a request that came from another node.
pub type Handler =
    Arc<dyn Fn(Relayed) -> Pin<Box<dyn Future<Output = Answered> + Send>> + Send + Sync>;

/// What goes over a node's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Envelope {
    Request {
        id: u64,
        from: String,
        request: Relayed,
    },
    Answer {
        id: u64,
        answer: Answered,
    },
}

/// The requests this node asked and waits for.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    next: AtomicU64,
    answers: Mutex<HashMap<u64, oneshot::Sender<Answered>>>,
}

/// How long an asker waits for the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Runs `request` on node `node` and returns its answer.
    pub async fn ask(&self, node: &str, request: Relayed) -> Result<Answered, RelayError> {
        let id = self.waiting.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.answers.lock().insert(id, tx);
        let envelope = Envelope::Request {
            id,
            from: self.me.clone(),
            request,
        };
        let sent = self.send(node, &envelope).await;
        let answer = match sent {
            Ok(0) => Err(RelayError::NotListening(node.to_owned())),
            Ok(_) => match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                _ => Err(RelayError::TimedOut(node.to_owned())),
            },
            Err(e) => Err(RelayError::Unreachable(e)),
        };
        self.waiting.answers.lock().remove(&id);
        answer
    }

    /// Listens on this node's channel until the process ends: runs the requests that
    /// come with `handler` and answers them, and hands the answers to this node's own
    /// requests to whoever waits. Subscribes again after Redis was lost.
    pub async fn listen(self: Arc<Self>, handler: Handler) {
        let inbox = self.store.inbox(&self.me);
        loop {
            match self.store.subscriber().await {
                Ok(mut pubsub) => match pubsub.subscribe(&inbox).await {
                    Ok(()) => {
                        info!(channel = %inbox, "cluster: listening for the other nodes");
                        let mut messages = pubsub.into_on_message();
                        while let Some(message) = messages.next().await {
                            let Ok(text) = message.get_payload::<String>() else {
                                continue;
                            };
                            self.on_envelope(&text, &handler);
                        }
                        debug!("cluster: subscription lost");
                    }
                    Err(e) => debug!("cluster: cannot subscribe: {e}"),
                },
                Err(e) => debug!("cluster: cannot subscribe: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn on_envelope(self: &Arc<Self>, text: &str, handler: &Handler) {
        match serde_json::from_str::<Envelope>(text) {
            Ok(Envelope::Answer { id, answer }) => {
                if let Some(waiter) = self.waiting.answers.lock().remove(&id) {
                    let _ = waiter.send(answer);
                }
            }
            Ok(Envelope::Request { id, from, request }) => {
                let (cluster, handler) = (self.clone(), handler.clone());
                tokio::spawn(async move {
                    debug!(%from, method = %request.method, path = %request.path, "relayed request");
                    let answer = handler(request).await;
                    let envelope = Envelope::Answer { id, answer };
                    if let Err(e) = cluster.send(&from, &envelope).await {
                        warn!(to = %from, "cluster: could not answer a relayed request: {e}");
                    }
                });
            }
            Err(e) => warn!("cluster: unreadable message on this node's channel: {e}"),
        }
    }

    async fn send(&self, node: &str, envelope: &Envelope) -> Result<u64, redis::RedisError> {
        let text = serde_json::to_string(envelope).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "envelope", e.to_string()))
        })?;
        self.store.publish(&self.store.inbox(node), &text).await
    }
}
