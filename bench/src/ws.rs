//! The signaling WebSocket of a simulated client: JSON messages out and in, and the join,
//! which follows a cluster's redirects as the browser client library does.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Redirects a join follows, as the browser client library (`MAX_REDIRECTS` of
/// signaling/web/client/signaling.js): a node of a cluster names the node that hosts the
/// room, and that one hosts it, so one is all a join ever needs.
pub(crate) const MAX_REDIRECTS: u32 = 3;

/// What a socket's reader zeroes at each read attempt (tungstenite resizes its buffer to
/// this before each read, 128 KiB by default). A client's loop polls its socket at every
/// packet it receives: at the default, zeroing that buffer took a quarter of the
/// generator's time in `bench broadcast` (perf, 500 viewers). Larger messages still come
/// whole, in more reads.
pub(crate) const READ_BUFFER: usize = 4096;

/// Opens a WebSocket with the generator's settings ([`READ_BUFFER`]).
pub(crate) async fn connect<R>(request: R) -> anyhow::Result<Ws>
where
    R: tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
{
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
    Ok(ws)
}

/// A join the server accepted.
pub(crate) struct Joined {
    /// The socket it was accepted on: the room's node's.
    pub ws: Ws,
    /// The server's `joined` message.
    pub joined: Value,
    /// The URL of that socket.
    pub url: String,
    /// Redirects followed to get there.
    pub redirects: u32,
    /// From opening the first socket to `joined`, redirects included.
    pub took: Duration,
}

pub(crate) async fn send(ws: &mut Ws, v: Value) -> anyhow::Result<()> {
    ws.send(Message::text(v.to_string())).await?;
    Ok(())
}

/// The next JSON message; `None` when the socket closed.
pub(crate) async fn next(ws: &mut Ws) -> anyhow::Result<Option<Value>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Some(serde_json::from_str(&t)?)),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Opens a socket on `url` and sends `join` (a `join` message), following the server's
/// `redirect`s: a node of a cluster answers a join for a room another node hosts with
/// the URL of that node's socket, and closes this one; the same join goes there. Fails
/// on a refusal, or after more than [`MAX_REDIRECTS`].
pub(crate) async fn join(url: &str, join: &Value) -> anyhow::Result<Joined> {
    let started = Instant::now();
    let mut url = url.to_owned();
    let mut redirects = 0;
    loop {
        let mut ws = connect(url.as_str())
            .await
            .with_context(|| format!("WebSocket {url}"))?;
        send(&mut ws, join.clone()).await?;
        let reply = loop {
            let m = next(&mut ws)
                .await?
                .context("socket closed before joined")?;
            if matches!(m["type"].as_str(), Some("joined" | "redirect" | "error")) {
                break m;
            }
        };
        match reply["type"].as_str() {
            Some("joined") => {
                return Ok(Joined {
                    ws,
                    joined: reply,
                    url,
                    redirects,
                    took: started.elapsed(),
                });
            }
            Some("redirect") => {
                let to = reply["url"].as_str().unwrap_or_default();
                if redirects >= MAX_REDIRECTS {
                    bail!("more than {MAX_REDIRECTS} redirects (last to {to})");
                }
                if !(to.starts_with("ws://") || to.starts_with("wss://")) {
                    bail!("redirected to {to:?}, not a WebSocket URL");
                }
                // The server closes this socket: it is done with.
                url = to.to_owned();
                redirects += 1;
            }
            _ => bail!("join refused: {reply}"),
        }
    }
}

/// The `host:port` of a `ws://host:port/path` URL.
pub(crate) fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}
