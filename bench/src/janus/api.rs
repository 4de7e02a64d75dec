//! The Janus API over its WebSocket transport (subprotocol `janus-protocol`), as far as a
//! VideoRoom client needs it: a session, plugin handles, requests to the plugin, with an
//! offer or an answer attached, and the events the plugin sends unasked. Janus answers an
//! asynchronous request with an `ack` and later an `event` of the same transaction; a
//! synchronous one with `success` at once.
//! <https://janus.conf.meetecho.com/docs/rest.html>

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::ws::Ws;

/// Keepalives go out this often: Janus ends a session silent for its `session_timeout`
/// (60 s by default).
const KEEPALIVE: Duration = Duration::from_secs(20);

/// The longest a request waits for its answer (and a connection or a send for Janus).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What a plugin sent back: its `plugindata.data`, and the offer or answer if any.
#[derive(Debug)]
pub struct Reply {
    pub data: Value,
    pub jsep: Option<Value>,
}

/// One Janus session on its own WebSocket.
pub struct Session {
    ws: Ws,
    id: u64,
    transactions: u64,
    /// Events that came while a request awaited its own answer: handed out by
    /// [`Session::next_event`] before the socket is read again.
    queued: VecDeque<Value>,
    pub keepalive_at: Instant,
}

impl Session {
    /// Opens the WebSocket at `url` and creates a session.
    pub async fn create(url: &str) -> anyhow::Result<Session> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let connect = crate::ws::connect(request);
        let ws = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .with_context(|| format!("Janus WebSocket {url}: no answer in {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("Janus WebSocket {url}"))?;
        let mut session = Session {
            ws,
            id: 0,
            transactions: 0,
            queued: VecDeque::new(),
            keepalive_at: Instant::now() + KEEPALIVE,
        };
        let created = session.call(json!({"janus": "create"}), None).await?;
        session.id = created["data"]["id"]
            .as_u64()
            .context("create: no session id")?;
        Ok(session)
    }

    /// Attaches a handle of the VideoRoom plugin; its id.
    pub async fn attach(&mut self) -> anyhow::Result<u64> {
        let message = json!({"janus": "attach", "plugin": "janus.plugin.videoroom"});
        let attached = self.call(message, None).await?;
        attached["data"]["id"]
            .as_u64()
            .context("attach: no handle id")
    }

    /// Sends `body` (and `jsep`) to the plugin through `handle`; its answer, the event
    /// that follows an `ack` for an asynchronous request. A plugin's error is an error.
    pub async fn request(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let mut message = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let answer = self.call(message, Some(handle)).await?;
        let data = answer["plugindata"]["data"].clone();
        if let Some(error) = data.get("error") {
            bail!(
                "Janus refused {}: {error} (code {})",
                body["request"],
                data["error_code"]
            );
        }
        Ok(Reply {
            data,
            jsep: answer.get("jsep").cloned(),
        })
    }

    /// Sends a keepalive if one is due; its `ack` is read as an event and ignored.
    pub async fn keepalive(&mut self) -> anyhow::Result<()> {
        if Instant::now() < self.keepalive_at {
            return Ok(());
        }
        self.keepalive_at = Instant::now() + KEEPALIVE;
        let id = self.next_transaction();
        let message = json!({"janus": "keepalive", "session_id": self.id, "transaction": id});
        self.send(&message).await
    }

    /// The next message Janus sent unasked (a plugin's event, `webrtcup`, `media`,
    /// `hangup`, ...); `None` when the socket closed. Cancel-safe.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Value>> {
        if let Some(e) = self.queued.pop_front() {
            return Ok(Some(e));
        }
        self.read().await
    }

    /// Sends `message` in this session and waits for its answer: `success`, or the
    /// `event` after an `ack`. Other messages meanwhile are queued.
    async fn call(&mut self, mut message: Value, handle: Option<u64>) -> anyhow::Result<Value> {
        let transaction = self.next_transaction();
        message["transaction"] = json!(transaction);
        if self.id != 0 {
            message["session_id"] = json!(self.id);
        }
        self.send(&message).await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let m = tokio::time::timeout_at(deadline.into(), self.read())
                .await
                .with_context(|| {
                    format!(
                        "Janus did not answer {} in {REQUEST_TIMEOUT:?}",
                        message["janus"]
                    )
                })??
                .context("Janus closed the socket")?;
            let mine = m["transaction"].as_str() == Some(transaction.as_str());
            match m["janus"].as_str() {
                Some("success") if mine => return Ok(m),
                Some("event") if mine && m["sender"].as_u64() == handle => return Ok(m),
                Some("ack") if mine => {}
                Some("error") if mine => bail!(
                    "Janus: {} (code {}) for {}",
                    m["error"]["reason"],
                    m["error"]["code"],
                    message["janus"]
                ),
                _ => self.queued.push_back(m),
            }
        }
    }

    fn next_transaction(&mut self) -> String {
        self.transactions += 1;
        format!("t{}", self.transactions)
    }

    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let send = self.ws.send(Message::text(message.to_string()));
        tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .with_context(|| format!("Janus took no message in {REQUEST_TIMEOUT:?}"))??;
        Ok(())
    }

    async fn read(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(Some(serde_json::from_str(&t)?)),
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
}
