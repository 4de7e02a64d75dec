//! Many SFU nodes as one service, coordinated through Redis: each node registers itself
//! and its load ([`Node`]), a room lives on one node, claimed atomically by the first
//! join anywhere, and a join that reaches another node is sent to the owner.
//!
//! - `node.rs`: what a node reports of itself.
//! - `select.rs`: which node a new room goes to ([`choose`]), a pure function.
//! - `store.rs`: the keys and Lua scripts in Redis ([`Store`]).
//! - `relay.rs`: requests from node to node over pub/sub ([`Cluster::ask`],
//!   [`Cluster::listen`]).
//! - this file: [`Cluster`], one node's view of the cluster: where a room goes
//!   ([`Cluster::place`]), and the heartbeat that keeps its report and its rooms' claims
//!   alive ([`Cluster::beat`]).
//!
//! No media crosses nodes here: a room lives wholly on its node. (`testing.rs` starts
//! Redis for tests.)

#![forbid(unsafe_code)]

mod node;
mod relay;
mod select;
mod store;
#[doc(hidden)]
pub mod testing;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{info, warn};

pub use node::{Node, NodeLoad, NodeState};
pub use redis::RedisError;
pub use relay::{Answered, Handler, RelayError, Relayed};
pub use select::choose;
pub use store::{LEASE, Store};

/// How often a node refreshes its report and its rooms' claims.
pub const BEAT: Duration = Duration::from_secs(2);

/// How one node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where Redis is: `redis://host:6379/0`, or
    /// `redis+sentinel://[:password@]h1:26379,h2:26379/name`.
    pub redis: String,
    /// This node's id, unique in the cluster.
    pub node: String,
    /// Its region, if regions are set.
    pub region: Option<String>,
}

/// Where a room lives, as [`Cluster::place`] found it.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// On this node.
    Here,
    /// On another: send the client there.
    Elsewhere(Node),
}

/// Why a room could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// Redis did not answer: this node cannot claim a room now.
    #[error("the cluster's Redis cannot be reached: {0}")]
    Unreachable(#[from] RedisError),
    /// No live node takes new rooms (all draining or overloaded).
    #[error("no node of the cluster takes new rooms now")]
    NoNode,
}

/// One node's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    store: Store,
    me: String,
    region: Option<String>,
    view: Mutex<View>,
    /// The last exchange with Redis succeeded.
    reachable: AtomicBool,
    /// The requests to other nodes waiting for their answers.
    waiting: relay::Waiting,
}

/// What a node knows of the others and of its own rooms, between beats.
#[derive(Debug, Default)]
struct View {
    /// The live nodes at the last beat (or fetch), by id.
    nodes: Vec<Node>,
    fetched: Option<Instant>,
    /// When this node placed a room on each node (ms since the epoch): counted as load
    /// until that node's report is newer.
    placed: HashMap<String, Vec<u64>>,
    /// The rooms this node hosted at its last beat.
    hosted: HashSet<String>,
    /// Rooms placed here since, and when: not released before they had time to start.
    arriving: HashMap<String, Instant>,
}

impl Cluster {
    /// This node's view; connects to Redis at the first beat or placement.
    pub fn new(config: &ClusterConfig) -> Result<Cluster, RedisError> {
        Ok(Cluster {
            store: Store::new(&config.redis)?,
            me: config.node.clone(),
            region: config.region.clone(),
            view: Mutex::new(View::default()),
            reachable: AtomicBool::new(false),
            waiting: relay::Waiting::default(),
        })
    }

    /// Where `room` lives: here or on another node, claiming it first if nobody holds it
    /// (for the least loaded node). A room this node hosts stays here without asking
    /// Redis. A room held by a dead node, or by this node `draining` without it, is handed
    /// to another. `now_ms`: the wall clock, ms since the epoch.
    pub async fn place(
        &self,
        room: &str,
        draining: bool,
        now_ms: u64,
    ) -> Result<Placed, PlaceError> {
        if self.hosts(room) {
            return Ok(Placed::Here);
        }
        let nodes = self.fresh_nodes().await?;
        let exclude = draining.then_some(self.me.as_str());
        let target = self.reserve(&nodes, exclude, now_ms);
        let claimed = self
            .store
            .claim(room, target.as_ref().map(|n| n.id.as_str()))
            .await;
        let owner = self.settle(target.as_ref(), self.watch(claimed), now_ms)?;
        let Some(owner) = owner else {
            return Err(PlaceError::NoNode);
        };
        if owner == self.me {
            if draining {
                return self.hand_off(room, &owner, &nodes, now_ms, true).await;
            }
            self.arrive(room);
            return Ok(Placed::Here);
        }
        match self.node(&nodes, &owner).await? {
            Some(node) => Ok(Placed::Elsewhere(node)),
            None => self.hand_off(room, &owner, &nodes, now_ms, draining).await,
        }
    }

    /// The heartbeat: writes this node's `report`, renews the claims on the rooms it
    /// `hosts` (releasing those it no longer does), and reads the others' reports.
    /// Returns the rooms it hosts that another node holds (after a split from Redis).
    pub async fn beat(
        &self,
        report: &Node,
        hosts: Vec<String>,
    ) -> Result<Vec<(String, String)>, RedisError> {
        let result = self.exchange(report, &hosts).await;
        let reachable = result.is_ok();
        if self.reachable.swap(reachable, Ordering::Relaxed) != reachable {
            match &result {
                Ok(_) => info!("cluster: Redis reachable; taking new rooms"),
                Err(e) => warn!("cluster: Redis unreachable, no new room until it is back: {e}"),
            }
        }
        result
    }

    /// Takes this node out of the registry and frees the rooms it held (a clean exit:
    /// their participants, told to join again, find them free at once).
    pub async fn leave(&self) {
        // Forgotten here too: a join that still reaches this node is placed elsewhere.
        let held: Vec<String> = {
            let mut view = self.view.lock();
            let arriving: Vec<String> = view.arriving.drain().map(|(room, _)| room).collect();
            view.hosted.drain().chain(arriving).collect()
        };
        let left = async {
            self.store.release(&self.me, &held).await?;
            self.store.unregister(&self.me).await
        };
        if let Err(e) = left.await {
            warn!("cluster: could not leave the registry: {e}");
        }
    }

    /// Whether the last exchange with Redis worked: a node cut off takes no new room.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Redis commands this node sent so far.
    pub fn commands(&self) -> u64 {
        self.store.commands()
    }

    /// The live nodes as of the last beat.
    pub fn nodes(&self) -> Vec<Node> {
        self.view.lock().nodes.clone()
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The node `room` lives on, if any (no claim is made).
    pub async fn owner(&self, room: &str) -> Result<Option<String>, RedisError> {
        if self.hosts(room) {
            return Ok(Some(self.me.clone()));
        }
        self.watch(self.store.claim(room, None).await)
    }

    async fn exchange(
        &self,
        report: &Node,
        hosts: &[String],
    ) -> Result<Vec<(String, String)>, RedisError> {
        self.store.register(report).await?;
        let others = self.store.refresh(&self.me, hosts).await?;
        let gone: Vec<String> = {
            let mut view = self.view.lock();
            view.arriving.retain(|_, at| at.elapsed() < LEASE);
            let hosted: HashSet<String> = hosts.iter().cloned().collect();
            let gone = view
                .hosted
                .iter()
                .filter(|r| !hosted.contains(*r) && !view.arriving.contains_key(*r))
                .cloned()
                .collect();
            for room in hosts {
                view.arriving.remove(room);
            }
            view.hosted = hosted;
            gone
        };
        self.store.release(&self.me, &gone).await?;
        let nodes = self.store.nodes().await?;
        let mut view = self.view.lock();
        for node in &nodes {
            if let Some(times) = view.placed.get_mut(&node.id) {
                times.retain(|at| *at > node.at_ms);
            }
        }
        // A node gone from the registry takes its pending placements with it: the map
        // holds live nodes only.
        view.placed
            .retain(|id, times| !times.is_empty() && nodes.iter().any(|n| &n.id == id));
        view.nodes = nodes;
        view.fetched = Some(Instant::now());
        for (room, owner) in &others {
            warn!(%room, %owner, "cluster: this node hosts a room another node holds (a split \
                  from Redis); the two calls stay apart until one ends");
        }
        Ok(others)
    }

    fn hosts(&self, room: &str) -> bool {
        let view = self.view.lock();
        view.hosted.contains(room) || view.arriving.contains_key(room)
    }

    /// The nodes as of the last beat; fetched now if that is older than two beats.
    async fn fresh_nodes(&self) -> Result<Vec<Node>, RedisError> {
        {
            let view = self.view.lock();
            if view.fetched.is_some_and(|at| at.elapsed() < 2 * BEAT) {
                return Ok(view.nodes.clone());
            }
        }
        let nodes = self.watch(self.store.nodes().await)?;
        let mut view = self.view.lock();
        view.nodes = nodes.clone();
        view.fetched = Some(Instant::now());
        Ok(nodes)
    }

    /// Chooses the node for a new room and counts the room as placed there at once,
    /// before the claim's round trip: placements under way at the same moment see it, and
    /// spread instead of all going to the node that was emptiest.
    fn reserve(&self, nodes: &[Node], exclude: Option<&str>, now_ms: u64) -> Option<Node> {
        let mut view = self.view.lock();
        let pending = |id: &str| view.placed.get(id).map_or(0, |t| t.len() as u32);
        let target = choose(nodes, self.region.as_deref(), exclude, pending).cloned()?;
        view.placed
            .entry(target.id.clone())
            .or_default()
            .push(now_ms);
        Some(target)
    }

    /// The claim came back: a reservation for another node than the owner is undone.
    fn settle<T: AsRef<str>>(
        &self,
        reserved: Option<&Node>,
        owner: Result<Option<T>, RedisError>,
        now_ms: u64,
    ) -> Result<Option<T>, RedisError> {
        let kept = matches!((&owner, reserved), (Ok(Some(o)), Some(r)) if o.as_ref() == r.id);
        if let Some(reserved) = reserved.filter(|_| !kept) {
            let mut view = self.view.lock();
            if let Some(times) = view.placed.get_mut(&reserved.id)
                && let Some(i) = times.iter().position(|t| *t == now_ms)
            {
                times.swap_remove(i);
            }
        }
        owner
    }

    /// A room placed here: not released before its first participant had time to come.
    fn arrive(&self, room: &str) {
        self.view
            .lock()
            .arriving
            .insert(room.to_owned(), Instant::now());
    }

    /// `id`'s report: from the last beat, else from Redis; `None` if it is dead.
    async fn node(&self, nodes: &[Node], id: &str) -> Result<Option<Node>, RedisError> {
        if let Some(node) = nodes.iter().find(|n| n.id == id) {
            return Ok(Some(node.clone()));
        }
        self.watch(self.store.node(id).await)
    }

    /// Moves `room` from `from` (dead, or this node draining) to the node the selector
    /// picks (not this one while `draining`), unless another node took it meanwhile.
    async fn hand_off(
        &self,
        room: &str,
        from: &str,
        nodes: &[Node],
        now_ms: u64,
        draining: bool,
    ) -> Result<Placed, PlaceError> {
        let live: Vec<Node> = nodes
            .iter()
            .filter(|n| n.id != from && !(draining && n.id == self.me))
            .cloned()
            .collect();
        let Some(target) = self.reserve(&live, Some(from), now_ms) else {
            return Err(PlaceError::NoNode);
        };
        let moved = self.store.move_room(room, from, &target.id).await;
        let owner = self
            .settle(Some(&target), self.watch(moved).map(Some), now_ms)?
            .unwrap_or_default();
        if owner == target.id {
            info!(%room, from, to = %owner, "cluster: room handed to another node");
        }
        if owner == self.me {
            self.arrive(room);
            return Ok(Placed::Here);
        }
        match self.node(&live, &owner).await? {
            Some(node) => Ok(Placed::Elsewhere(node)),
            None => Err(PlaceError::NoNode),
        }
    }

    /// Notes whether a command reached Redis.
    fn watch<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if result.is_err() && self.reachable.swap(false, Ordering::Relaxed) {
            warn!("cluster: Redis unreachable, no new room until it is back");
        }
        result
    }
}
