//! This server as one node of a cluster (`--redis`): its heartbeat, which reports its
//! state and load and keeps its rooms' claims alive, and the placement signaling asks
//! before each join (the `cluster` crate does the Redis side).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster::{BEAT, Cluster, ClusterConfig, Node, NodeLoad, NodeState, PlaceError, Placed};
use prometheus::{IntCounter, IntGauge, Registry};
use protocol::{ErrorCode, ErrorMessage};
use sfu::driver::wall_ms;
use sfu::plane::Plane;
use signaling::{Answer, MediaPlane};
use tokio::sync::Notify;
use tracing::{info, warn};

/// How often the heartbeat task looks for a shut-down media plane.
const SHUTDOWN_WATCH: Duration = Duration::from_millis(250);

/// One node's part in the cluster.
pub struct ClusterNode {
    cluster: Arc<Cluster>,
    plane: Arc<Plane>,
    /// What its reports say of where clients reach it.
    url: String,
    media: Vec<String>,
    region: Option<String>,
    metrics: ClusterMetrics,
    /// Its signaling listens: it reports itself serving (`starting` until then).
    serving: AtomicBool,
    /// Asks for a beat now.
    wake: Notify,
}

/// The node's view of the cluster on `/metrics`, updated at each beat.
struct ClusterMetrics {
    /// Redis commands sent (placements and beats).
    commands: IntCounter,
    /// 1 while Redis answers, else 0.
    reachable: IntGauge,
    /// Live nodes, this one included, at the last beat.
    nodes: IntGauge,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> prometheus::Result<ClusterMetrics> {
        let commands = IntCounter::new(
            "sfu_cluster_redis_commands_total",
            "Redis commands this node sent: its placements of joins and its heartbeats (a \
             script counts once, though its first use on a connection also loads it)",
        )?;
        let reachable = IntGauge::new(
            "sfu_cluster_redis_reachable",
            "1 while the cluster's Redis answers this node (it takes new rooms), else 0",
        )?;
        let nodes = IntGauge::new(
            "sfu_cluster_nodes",
            "Live nodes of the cluster, this one included, at its last heartbeat",
        )?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(reachable.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        Ok(ClusterMetrics {
            commands,
            reachable,
            nodes,
        })
    }
}

impl ClusterNode {
    /// The node `id` of the cluster on `redis`, reached at `url`; connects at the first
    /// beat, so that a server whose Redis is down starts (and refuses new rooms).
    pub fn new(
        redis: &str,
        id: &str,
        region: Option<String>,
        url: String,
        advertise: &[IpAddr],
        plane: Arc<Plane>,
        registry: &Registry,
    ) -> anyhow::Result<ClusterNode> {
        let cluster = Cluster::new(&ClusterConfig {
            redis: redis.to_owned(),
            node: id.to_owned(),
            region: region.clone(),
        })
        .map_err(|e| anyhow::anyhow!("--redis: {e}"))?;
        let cluster = Arc::new(cluster);
        info!(node = id, %url, ?region, "cluster node: joins for rooms elsewhere are redirected");
        Ok(ClusterNode {
            cluster,
            plane,
            url,
            media: advertise.iter().map(ToString::to_string).collect(),
            region,
            metrics: ClusterMetrics::new(registry)?,
            serving: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Its signaling listens: from the next beat on it is `serving` (or `draining`).
    pub fn serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether Redis answered the last beat: `/readyz` says 503 otherwise.
    pub fn reachable(&self) -> bool {
        self.cluster.reachable()
    }

    /// Beats every [`BEAT`], and at once when its signaling starts to listen (the others
    /// may place rooms on it without waiting). A drain shows at the next beat; meanwhile
    /// joins for new rooms that reach it are handed on. When the media plane shuts down
    /// (a drain's deadline), the node leaves the cluster at once, freeing its rooms for
    /// the participants it told to join again, and beats no more.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(BEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(SHUTDOWN_WATCH);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.wake.notified() => {}
                _ = watch.tick() => {
                    if self.plane.lifecycle().is_shut_down() {
                        info!("cluster: the media plane shut down: leaving the cluster");
                        self.leave().await;
                        return;
                    }
                    continue;
                }
            }
            self.beat().await;
        }
    }

    /// Runs the admin requests other nodes relay here on `router` (this node's own),
    /// until the process ends.
    pub async fn listen(self: Arc<Self>, router: signaling::Router) {
        let handler: cluster::Handler = Arc::new(move |request: cluster::Relayed| {
            let request = signaling::admin::Relayed {
                method: request.method,
                path: request.path,
                headers: request.headers,
                body: request.body,
            };
            let answer = signaling::admin::answer(router.clone(), request);
            Box::pin(async move {
                let a = answer.await;
                cluster::Answered {
                    status: a.status,
                    content_type: a.content_type,
                    body: a.body,
                }
            })
        });
        self.cluster.clone().listen(handler).await;
    }

    /// Takes this node out of the registry (the process ends).
    pub async fn leave(&self) {
        self.cluster.leave().await;
    }

    async fn beat(&self) {
        let rooms = match MediaPlane::rooms(&*self.plane).await {
            Ok(rooms) => rooms,
            Err(e) => {
                warn!(
                    "cluster: no heartbeat, the media plane did not list its rooms: {}",
                    e.message
                );
                return;
            }
        };
        let load = self.plane.load();
        let figures = load.figures();
        let lifecycle = self.plane.lifecycle();
        let report = Node {
            id: self.cluster.id().to_owned(),
            region: self.region.clone(),
            url: self.url.clone(),
            media: self.media.clone(),
            state: if lifecycle.is_draining() {
                NodeState::Draining
            } else if self.serving.load(Ordering::Relaxed) {
                NodeState::Serving
            } else {
                NodeState::Starting
            },
            load: NodeLoad {
                rooms: rooms.len() as u32,
                participants: rooms.iter().map(|r| r.participants + r.viewers).sum(),
                tracks: figures.tracks as u32,
                egress_pps: figures.egress_pps,
                shard_load: figures.busy as f32,
                overloaded: load.saturated().is_some(),
            },
            at_ms: wall_ms(),
        };
        let hosted = rooms.into_iter().map(|r| r.room).collect();
        // Failures are logged by the cluster when Redis goes out of reach.
        let _ = self.cluster.beat(&report, hosted).await;
        let m = &self.metrics;
        m.commands
            .inc_by(self.cluster.commands().saturating_sub(m.commands.get()));
        m.reachable.set(i64::from(self.cluster.reachable()));
        m.nodes.set(self.cluster.nodes().len() as i64);
    }
}

impl signaling::admin::AdminRelay for ClusterNode {
    fn me(&self) -> String {
        self.cluster.id().to_owned()
    }

    fn owner(&self, room: &str) -> Answer<Option<String>> {
        let (cluster, room) = (self.cluster.clone(), room.to_owned());
        Box::pin(async move {
            cluster.owner(&room).await.map_err(|e| {
                ErrorMessage::new(
                    ErrorCode::ClusterUnavailable,
                    format!("the cluster's Redis: {e}"),
                )
            })
        })
    }

    fn peers(&self) -> Vec<String> {
        let me = self.cluster.id();
        self.cluster
            .nodes()
            .into_iter()
            .map(|n| n.id)
            .filter(|id| id != me)
            .collect()
    }

    fn ask(
        &self,
        node: &str,
        request: signaling::admin::Relayed,
    ) -> Answer<signaling::admin::Answered> {
        let (cluster, node) = (self.cluster.clone(), node.to_owned());
        Box::pin(async move {
            let request = cluster::Relayed {
                method: request.method,
                path: request.path,
                headers: request.headers,
                body: request.body,
            };
            match cluster.ask(&node, request).await {
                Ok(a) => Ok(signaling::admin::Answered {
                    status: a.status,
                    content_type: a.content_type,
                    body: a.body,
                }),
                Err(e) => Err(ErrorMessage::new(
                    ErrorCode::ClusterUnavailable,
                    e.to_string(),
                )),
            }
        })
    }
}

impl signaling::Placement for ClusterNode {
    fn place(&self, room: &str) -> Answer<signaling::Placed> {
        let draining = self.plane.lifecycle().is_draining();
        let (cluster, room) = (self.cluster.clone(), room.to_owned());
        Box::pin(async move {
            match cluster.place(&room, draining, wall_ms()).await {
                Ok(Placed::Here) => Ok(signaling::Placed::Here),
                Ok(Placed::Elsewhere(node)) => Ok(signaling::Placed::Elsewhere {
                    node: node.id,
                    url: node.url,
                }),
                Err(PlaceError::Unreachable(e)) => Err(ErrorMessage::new(
                    ErrorCode::ClusterUnavailable,
                    format!(
                        "this node cannot reach the cluster to place a new room ({e}); try again"
                    ),
                )),
                Err(PlaceError::NoNode) => Err(ErrorMessage::new(
                    ErrorCode::ServerBusy,
                    "no node of the cluster takes new rooms now",
                )),
            }
        })
    }
}
