//! The cluster's state in Redis: what keys hold it, the scripts that change it
//! atomically, and the connection (to one Redis, or to the master a Sentinel names).
//!
//! Keys, all under one prefix (`sfu:`):
//! - `sfu:node:{id}`: the node's report ([`Node`] as JSON), expiring 5 s after it was
//!   written: a node that stops refreshing it is gone within 5 s.
//! - `sfu:nodes`: a set of node ids, pruned of ids whose report has expired.
//! - `sfu:room:{room}`: the id of the node the room lives on, expiring like a report:
//!   the owner refreshes it while it hosts the room, so a dead node's rooms are free
//!   within 5 s.
//! - `sfu:inbox:{id}`: the pub/sub channel node `id` listens on for requests from the
//!   others and for their answers ([`crate::relay`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncCommands, RedisResult, Script};

use crate::node::Node;

/// How long a report or a room claim lives unless refreshed.
pub const LEASE: Duration = Duration::from_secs(5);

/// Longest wait for one Redis command: a join waits on it, so a Redis that hangs must
/// fail fast.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

/// The room's owner, or the claim for `ARGV[1]` if it had none (`ARGV[1]` empty: only
/// look). KEYS[1]: the room; ARGV[2]: the lease in ms.
const CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
if ARGV[1] == '' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Hands the room from `ARGV[1]` (dead, or draining without it) to `ARGV[2]`, unless
/// another node holds it by now: returns the owner after. ARGV[3]: the lease in ms.
const MOVE: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
";

/// Renews the lease of each room in KEYS held by `ARGV[1]`, claims those nobody holds
/// (after Redis came back, say), and returns the others' positions in KEYS (from 1) and
/// their owners, flattened. ARGV[2]: the lease in ms.
const REFRESH: &str = r"
local others = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(others, tostring(i))
    table.insert(others, owner)
  end
end
return others
";

/// Frees each room in KEYS that `ARGV[1]` holds; returns how many.
const RELEASE: &str = r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
";

/// Where the Redis connection comes from.
enum Source {
    /// One server (`redis://host:port/db`).
    Direct(redis::Client),
    /// The master that Sentinels name (`redis+sentinel://[:PASSWORD@]h1:26379,h2:26379/name`,
    /// the password the master's), looked up again after a command fails (a failover
    /// moved it).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The cluster's keys in one Redis.
pub struct Store {
    source: Source,
    /// The connection, once made; it reconnects by itself (to the same server).
    connection: Mutex<Option<ConnectionManager>>,
    prefix: &'static str,
    claim: Script,
    moving: Script,
    refresh: Script,
    release: Script,
    /// Commands sent (a script or a pipeline's command counts one each).
    commands: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sentinel", &matches!(self.source, Source::Sentinel(_)))
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store on the Redis `url` names; connects at the first command.
    pub fn new(url: &str) -> RedisResult<Store> {
        let source = match url.strip_prefix("redis+sentinel://") {
            Some(rest) => {
                // The master's password, if any, before the sentinels: `:PASSWORD@`.
                let (password, rest) = match rest.rsplit_once('@') {
                    Some((userinfo, rest)) => (Some(userinfo.trim_start_matches(':')), rest),
                    None => (None, rest),
                };
                let (hosts, name) = rest.split_once('/').unwrap_or((rest, ""));
                if name.is_empty() || hosts.is_empty() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "a Sentinel URL names its sentinels and the master: \
                         redis+sentinel://[:PASSWORD@]host:26379,host:26379/name",
                    )));
                }
                let sentinels: Vec<String> =
                    hosts.split(',').map(|h| format!("redis://{h}")).collect();
                let master = password.map(|password| {
                    let info = redis::RedisConnectionInfo::default().set_password(password);
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info)
                });
                let client = SentinelClient::build(
                    sentinels,
                    name.into(),
                    master,
                    SentinelServerType::Master,
                )?;
                Source::Sentinel(tokio::sync::Mutex::new(client))
            }
            None => Source::Direct(redis::Client::open(url)?),
        };
        Ok(Store {
            source,
            connection: Mutex::new(None),
            prefix: "sfu",
            claim: Script::new(CLAIM),
            moving: Script::new(MOVE),
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
            commands: AtomicU64::new(0),
        })
    }

    /// Writes `node`'s report, alive for [`LEASE`].
    pub async fn register(&self, node: &Node) -> RedisResult<()> {
        let json = serde_json::to_string(node).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "report", e.to_string()))
        })?;
        let mut c = self.connection().await?;
        self.count(2);
        let done = redis::pipe()
            .set_options(
                self.node_key(&node.id),
                json,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(lease_ms())),
            )
            .ignore()
            .sadd(self.nodes_key(), &node.id)
            .ignore()
            .query_async::<()>(&mut c)
            .await;
        self.settle(done)
    }

    /// Removes `id`'s report (a clean exit).
    pub async fn unregister(&self, id: &str) -> RedisResult<()> {
        let mut c = self.connection().await?;
        self.count(2);
        let done = redis::pipe()
            .del(self.node_key(id))
            .ignore()
            .srem(self.nodes_key(), id)
            .ignore()
            .query_async::<()>(&mut c)
            .await;
        self.settle(done)
    }

    /// Every live node's report; ids whose report expired are pruned from the set.
    pub async fn nodes(&self) -> RedisResult<Vec<Node>> {
        let mut c = self.connection().await?;
        self.count(1);
        let ids: Vec<String> = self.settle(c.smembers(self.nodes_key()).await)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        self.count(1);
        let reports: Vec<Option<String>> = self.settle(c.mget(&keys).await)?;
        let mut nodes = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, report) in ids.iter().zip(reports) {
            match report.as_deref().map(serde_json::from_str::<Node>) {
                Some(Ok(node)) => nodes.push(node),
                Some(Err(e)) => tracing::warn!(node = %id, "unreadable node report: {e}"),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            self.count(1);
            self.settle(c.srem::<_, _, ()>(self.nodes_key(), gone).await)?;
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// `id`'s report, if it is alive.
    pub async fn node(&self, id: &str) -> RedisResult<Option<Node>> {
        let mut c = self.connection().await?;
        self.count(1);
        let report: Option<String> = self.settle(c.get(self.node_key(id)).await)?;
        Ok(report.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// The node `room` lives on; if none, claims it for `target` (when given) first.
    pub async fn claim(&self, room: &str, target: Option<&str>) -> RedisResult<Option<String>> {
        let mut c = self.connection().await?;
        self.count(1);
        let done = self
            .claim
            .key(self.room_key(room))
            .arg(target.unwrap_or_default())
            .arg(lease_ms())
            .invoke_async(&mut c)
            .await;
        self.settle(done)
    }

    /// Hands `room` from `from` to `to` unless another node holds it; the owner after.
    pub async fn move_room(&self, room: &str, from: &str, to: &str) -> RedisResult<String> {
        let mut c = self.connection().await?;
        self.count(1);
        let done = self
            .moving
            .key(self.room_key(room))
            .arg(from)
            .arg(to)
            .arg(lease_ms())
            .invoke_async(&mut c)
            .await;
        self.settle(done)
    }

    /// Renews `me`'s claims on `rooms` (claiming those nobody holds); returns the rooms
    /// another node holds, with that node.
    pub async fn refresh(&self, me: &str, rooms: &[String]) -> RedisResult<Vec<(String, String)>> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.connection().await?;
        let mut invocation = self.refresh.prepare_invoke();
        for room in rooms {
            invocation.key(self.room_key(room));
        }
        self.count(1);
        let others: Vec<String> = self.settle(
            invocation
                .arg(me)
                .arg(lease_ms())
                .invoke_async(&mut c)
                .await,
        )?;
        Ok(others
            .chunks_exact(2)
            .filter_map(|pair| {
                let i: usize = pair[0].parse().ok()?;
                Some((rooms.get(i.checked_sub(1)?)?.clone(), pair[1].clone()))
            })
            .collect())
    }

    /// Frees those of `rooms` that `me` holds.
    pub async fn release(&self, me: &str, rooms: &[String]) -> RedisResult<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut c = self.connection().await?;
        let mut invocation = self.release.prepare_invoke();
        for room in rooms {
            invocation.key(self.room_key(room));
        }
        self.count(1);
        let done = invocation.arg(me).invoke_async::<u64>(&mut c).await;
        self.settle(done).map(drop)
    }

    /// Publishes `payload` on `channel`; returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: &str) -> RedisResult<u64> {
        let mut c = self.connection().await?;
        self.count(1);
        let done = c.publish(channel, payload).await;
        self.settle(done)
    }

    /// A connection of its own for subscribing (pub/sub takes a connection over).
    pub async fn subscriber(&self) -> RedisResult<redis::aio::PubSub> {
        let client = self.client().await?;
        tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())?
    }

    /// The channel node `id` listens on.
    pub fn inbox(&self, id: &str) -> String {
        format!("{}:inbox:{id}", self.prefix)
    }

    /// Redis commands sent so far.
    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    /// A client of the server, or of the master the Sentinels name now.
    async fn client(&self) -> RedisResult<redis::Client> {
        match &self.source {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(COMMAND_TIMEOUT, sentinel.async_get_client())
                    .await
                    .map_err(|_| timed_out())?
            }
        }
    }

    async fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let client = self.client().await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        *self.connection.lock() = Some(manager.clone());
        Ok(manager)
    }

    /// After a failed command behind a Sentinel, the master is looked up again at the
    /// next one (a direct connection reconnects by itself).
    fn settle<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if result.is_err() && matches!(self.source, Source::Sentinel(_)) {
            *self.connection.lock() = None;
        }
        result
    }
}

fn lease_ms() -> u64 {
    LEASE.as_millis() as u64
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
}
