//! The media plane as signaling sees it ([`Plane`], signaling's `MediaPlane`): it binds
//! the ports, starts one shard thread per share of them ([`crate::driver`]), places each
//! room on a shard by its name and routes each call to the shard that owns the
//! participant, through bounded queues: a join (once [`crate::load`] gives it a place),
//! a request, an offer read off the media threads ([`crate::offers`]), a relayed `e2ee`
//! message (a queue of their own), a departure (never refused).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use netio::runtime::spawn_thread;
use protocol::admin::{Action, CallEvent, RoomDetail, RoomSummary};
use protocol::{ErrorCode, ErrorMessage, Join, ParticipantId, Policy, Request, ServerMessage};
use signaling::{Answer, MediaPlane, Pending};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::driver::{ShardSetup, run_shard};
use crate::lifecycle::Lifecycle;
use crate::load::{Limits, Load, Place};
use crate::metrics::Metrics;
use crate::offers::OfferReader;
use crate::tap::Tap;
use crate::tcp_accept::{TcpArrival, accept_tcp};
use sfu_core::shard::{ReadOffer, RelayDrop, ShardConfig};

/// Commands queued per shard before `join` and requests answer `server_busy`.
const COMMAND_QUEUE: usize = 1024;

/// Relayed `e2ee` messages queued per shard, apart from the commands: a flood of them
/// never takes the places of joins and offers. A call of 70 that starts at once relays
/// 2 x 70 x 69 messages (a hello and a key each way) within a few seconds, while its
/// shard is busy with 70 handshakes; taken 256 a turn (`driver.rs`), the queue holds
/// that burst.
const RELAY_QUEUE: usize = 4096;

/// How the media plane is set up.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The IP the UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// One socket per port; each carries many participants.
    pub ports: RangeInclusive<u16>,
    /// The addresses put in ICE candidates (with the participant's port).
    pub advertise: Vec<IpAddr>,
    /// The ICE-TCP port (passive candidates on every advertised address); `None` turns
    /// ICE-TCP off.
    pub tcp_port: Option<u16>,
    /// How many shard threads.
    pub shards: usize,
    pub shard: ShardConfig,
    /// Test only: where the shards record what publishers send (`--tap`); `None` (the
    /// default) records nothing. Set `shard.tap` with it.
    pub tap: Option<Arc<Tap>>,
    /// Draining and shutting down, which every shard follows.
    pub lifecycle: Arc<Lifecycle>,
    /// The server's limits, which each join must fit.
    pub limits: Limits,
    /// This server's name in the admin API and call records (its host name by default).
    pub node: String,
    /// Where the shards report what happens in calls ([`CallEvent`]s with the wall
    /// clock's milliseconds), for records and webhooks; `None` reports nothing. Bounded:
    /// a shard never waits on it, and counts what it could not queue.
    pub events: Option<mpsc::Sender<(u64, CallEvent)>>,
}

/// What a shard's control task receives from signaling (and the ICE-TCP acceptor).
pub(crate) enum Command {
    Join {
        id: ParticipantId,
        join: Join,
        events: mpsc::Sender<ServerMessage>,
        /// When signaling handed it over: its delays count from then.
        at: Instant,
        /// Its place on the server, given back with its entry in the shard.
        place: Place,
    },
    Request {
        id: ParticipantId,
        request: Request,
    },
    /// An offer, read off the shard's thread.
    Offer {
        id: ParticipantId,
        read: Box<ReadOffer>,
    },
    /// An ICE-TCP connection whose first frame names a participant of this shard.
    Tcp(TcpArrival),
    /// Answered by the shard's loop when it takes it: proof that the shard still runs.
    Probe(oneshot::Sender<()>),
    /// The admin API: the shard's calls; one call and its members; an action on a call.
    Rooms(oneshot::Sender<Vec<RoomSummary>>),
    Room {
        room: String,
        reply: oneshot::Sender<Option<RoomDetail>>,
    },
    Act {
        room: String,
        action: Action,
        reply: oneshot::Sender<bool>,
    },
    /// A group's new policy, for its members in calls.
    Policy {
        group: String,
        policy: Policy,
    },
}

/// The handle signaling uses: routes each call to the shard that owns it.
pub struct Plane {
    shards: Vec<ShardHandle>,
    /// Participant ids are `counter * shards + shard`, so the id names its shard.
    next_participant: AtomicU64,
    /// Counts the relays a full relay queue refused.
    metrics: Metrics,
    offers: OfferReader,
    lifecycle: Arc<Lifecycle>,
    load: Arc<Load>,
}

struct ShardHandle {
    commands: mpsc::Sender<Command>,
    /// `e2ee` relays (as `Command::Request`), queued apart from the other commands.
    relays: mpsc::Sender<Command>,
    /// Leaves never wait and are never refused; at most one per participant.
    departures: mpsc::UnboundedSender<ParticipantId>,
}

impl Plane {
    /// Binds every port and starts the shard threads. Fails if a port cannot be bound.
    pub fn start(config: MediaConfig, metrics: Metrics) -> anyhow::Result<Plane> {
        anyhow::ensure!(!config.advertise.is_empty(), "no address to advertise");
        let ports: Vec<u16> = config.ports.clone().collect();
        anyhow::ensure!(!ports.is_empty(), "the UDP port range is empty");
        let count = config.shards.clamp(1, ports.len());
        let tcp_listener = match config.tcp_port {
            Some(port) => {
                let addr = SocketAddr::new(config.bind_ip, port);
                let listener = netio::tcp::bind(addr)
                    .with_context(|| format!("cannot bind ICE-TCP {addr}"))?;
                Some(listener)
            }
            None => None,
        };
        let load = Load::new(config.limits, count);
        let mut shards = Vec::with_capacity(count);
        for index in 0..count {
            let mine: Vec<u16> = ports.iter().copied().skip(index).step_by(count).collect();
            let mut sockets = Vec::with_capacity(mine.len());
            for port in &mine {
                let addr = SocketAddr::new(config.bind_ip, *port);
                let socket =
                    netio::udp::bind(addr).with_context(|| format!("cannot bind UDP {addr}"))?;
                sockets.push(socket);
            }
            let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
            let (relays, relays_rx) = mpsc::channel(RELAY_QUEUE);
            let (departures, departures_rx) = mpsc::unbounded_channel();
            let mut shard_config = config.shard.clone();
            shard_config.index = index as u64;
            shard_config.count = count as u64;
            let advertise = config.advertise.clone();
            let tcp_port = config.tcp_port;
            let metrics = metrics.clone();
            let tap = config.tap.clone();
            let lifecycle = config.lifecycle.clone();
            let load = load.clone();
            let node = config.node.clone();
            let events = config.events.clone();
            spawn_thread(format!("shard-{index}"), move || {
                let setup = ShardSetup {
                    index,
                    config: shard_config,
                    sockets,
                    advertise,
                    tcp_port,
                    tap,
                    lifecycle,
                    load,
                    node,
                    events,
                };
                run_shard(setup, metrics, commands_rx, relays_rx, departures_rx)
            })?;
            info!(
                "shard {index}: UDP ports {} ({} sockets)",
                describe_ports(&mine),
                mine.len()
            );
            shards.push(ShardHandle {
                commands,
                relays,
                departures,
            });
        }
        if let Some(listener) = tcp_listener {
            let queues: Vec<mpsc::Sender<Command>> =
                shards.iter().map(|s| s.commands.clone()).collect();
            let addr = listener.local_addr()?;
            let metrics = metrics.clone();
            spawn_thread("ice-tcp".into(), move || {
                accept_tcp(listener, queues, metrics)
            })?;
            info!("ICE-TCP on {addr}");
        } else {
            info!("ICE-TCP off: clients that cannot use UDP need TURN over TCP or TLS");
        }
        Ok(Plane {
            shards,
            next_participant: AtomicU64::new(1),
            metrics,
            offers: OfferReader::start().context("cannot start the offer reader")?,
            lifecycle: config.lifecycle,
            load,
        })
    }

    /// Calls in progress, as the shards last counted them (once a second).
    pub fn rooms(&self) -> usize {
        self.metrics.rooms()
    }

    /// The server's limits and what it carries against them.
    pub fn load(&self) -> &Arc<Load> {
        &self.load
    }

    /// How it stops: drain, or shut down.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Whether every shard still runs, judged within `within`: it takes a probe from its
    /// command queue, or (when a burst of joins and offers is queued ahead of the probe)
    /// its once-a-second report of its load comes meanwhile. A shard that hangs or died
    /// does neither.
    pub async fn answers(&self, within: Duration) -> bool {
        let alive = |index: usize, shard: &ShardHandle| {
            let beat = self.load.beats(index);
            let commands = shard.commands.clone();
            async move {
                let probe = async {
                    let (reply, answered) = oneshot::channel();
                    commands.send(Command::Probe(reply)).await.is_ok() && answered.await.is_ok()
                };
                let reported = async {
                    while self.load.beats(index) == beat {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    true
                };
                tokio::select! {
                    ok = probe => ok,
                    ok = reported => ok,
                }
            }
        };
        let every_shard = async {
            for (index, shard) in self.shards.iter().enumerate() {
                if !alive(index, shard).await {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(within, every_shard)
            .await
            .unwrap_or(false)
    }

    /// The shard a room lives on (from its name).
    fn shard_of_room(&self, room: &str) -> &ShardHandle {
        &self.shards[(fnv1a(room.as_bytes()) % self.shards.len() as u64) as usize]
    }

    fn shard_of(&self, id: ParticipantId) -> &ShardHandle {
        &self.shards[(id.0 % self.shards.len() as u64) as usize]
    }
}

impl MediaPlane for Plane {
    fn join(
        &self,
        join: Join,
        events: mpsc::Sender<ServerMessage>,
    ) -> Result<ParticipantId, ErrorMessage> {
        let n = self.shards.len() as u64;
        // A room lives on one shard: pick it from the room name.
        let shard = fnv1a(join.room.as_bytes()) % n;
        let place = self.load.admit(shard as usize).map_err(|limit| {
            debug!(room = %join.room, limit = limit.as_str(), "join refused: server at its limit");
            let message = format!(
                "this server is at its limit of {}: try again later, or another server",
                limit.as_str()
            );
            ErrorMessage::new(ErrorCode::ServerBusy, message)
        })?;
        let id = ParticipantId(self.next_participant.fetch_add(1, Ordering::Relaxed) * n + shard);
        self.shards[shard as usize]
            .commands
            .try_send(Command::Join {
                id,
                join,
                events,
                at: Instant::now(),
                place,
            })
            .map_err(busy)?;
        Ok(id)
    }

    fn request(&self, participant: ParticipantId, request: Request) -> Result<(), ErrorMessage> {
        let shard = self.shard_of(participant);
        let relay = matches!(request, Request::E2ee { .. });
        let command = Command::Request {
            id: participant,
            request,
        };
        if relay {
            return shard.relays.try_send(command).map_err(|e| {
                self.metrics.relay_dropped(RelayDrop::ShardBusy);
                busy(e)
            });
        }
        shard.commands.try_send(command).map_err(busy)
    }

    fn offer(&self, participant: ParticipantId, offer: Request) -> Pending {
        let Request::Offer {
            sdp,
            publish,
            subscribe,
            slots,
        } = offer
        else {
            return Box::pin(std::future::ready(self.request(participant, offer)));
        };
        let commands = self.shard_of(participant).commands.clone();
        let offers = self.offers.clone();
        Box::pin(async move {
            let read = offers.read(sdp, publish, subscribe, slots).await?;
            let command = Command::Offer {
                id: participant,
                read: Box::new(read),
            };
            commands.try_send(command).map_err(busy)
        })
    }

    fn leave(&self, participant: ParticipantId) {
        let _ = self.shard_of(participant).departures.send(participant);
    }

    fn rooms(&self) -> Answer<Vec<RoomSummary>> {
        let queues: Vec<mpsc::Sender<Command>> =
            self.shards.iter().map(|s| s.commands.clone()).collect();
        Box::pin(async move {
            let mut rooms = Vec::new();
            for commands in queues {
                rooms.extend(ask(&commands, Command::Rooms).await?);
            }
            Ok(rooms)
        })
    }

    fn room(&self, room: &str) -> Answer<Option<RoomDetail>> {
        let commands = self.shard_of_room(room).commands.clone();
        let room = room.to_owned();
        Box::pin(async move { ask(&commands, |reply| Command::Room { room, reply }).await })
    }

    fn act(&self, room: &str, action: Action) -> Answer<bool> {
        let commands = self.shard_of_room(room).commands.clone();
        let room = room.to_owned();
        Box::pin(async move {
            ask(&commands, |reply| Command::Act {
                room,
                action,
                reply,
            })
            .await
        })
    }

    fn apply_policy(&self, group: &str, policy: Policy) -> Answer<()> {
        let queues: Vec<mpsc::Sender<Command>> =
            self.shards.iter().map(|s| s.commands.clone()).collect();
        let group = group.to_owned();
        Box::pin(async move {
            for commands in queues {
                let command = Command::Policy {
                    group: group.clone(),
                    policy,
                };
                // Waits for room rather than refuse: a policy change must not be lost.
                commands.send(command).await.map_err(|_| not_running())?;
            }
            Ok(())
        })
    }
}

/// How long an admin question waits for a shard's answer: its command queue may hold a
/// burst of joins and offers ahead of it.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks a shard something through its command queue and waits for the answer.
async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ErrorMessage> {
    let (reply, answer) = oneshot::channel();
    let asked = async {
        commands
            .send(command(reply))
            .await
            .map_err(|_| not_running())?;
        answer.await.map_err(|_| not_running())
    };
    tokio::time::timeout(ASK_TIMEOUT, asked)
        .await
        .map_err(|_| {
            ErrorMessage::new(
                ErrorCode::ServerBusy,
                "the media shard did not answer in time",
            )
        })?
}

fn not_running() -> ErrorMessage {
    ErrorMessage::new(ErrorCode::Internal, "media shard is not running")
}

fn busy<T>(e: mpsc::error::TrySendError<T>) -> ErrorMessage {
    match e {
        mpsc::error::TrySendError::Full(_) => {
            ErrorMessage::new(ErrorCode::ServerBusy, "media server is busy, retry")
        }
        mpsc::error::TrySendError::Closed(_) => {
            ErrorMessage::new(ErrorCode::Internal, "media shard is not running")
        }
    }
}

/// FNV-1a: a stable, dependency-free hash to place rooms on shards.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn describe_ports(ports: &[u16]) -> String {
    match ports {
        [] => "none".into(),
        [one] => one.to_string(),
        [first, second, ..] => format!(
            "{first}, {second}, .. {}",
            ports.last().copied().unwrap_or(*second)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
