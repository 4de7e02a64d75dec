//! The server (`sfu`, `sfu serve`): the media plane, signaling over HTTP and the embedded
//! TURN relay, composed in one process; runs until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sfu::driver::{MediaConfig, Plane};
use sfu::metrics::{Metrics, TurnMetrics};
use sfu::tap::{TAP_LINES, Tap};
use sfu_core::shard::ShardConfig;
use signaling::TokenKey;
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::host::{default_advertise, shutdown_signal};
use crate::relay;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (tokens, dev_mode) = match &args.secret {
        Some(secret) if !secret.is_empty() => (TokenKey::new(secret.as_bytes()), false),
        _ => {
            warn!(
                "dev mode: no SFU_SECRET set, so tokens are signed with a random secret and \
                 /dev/token gives one to anyone; set SFU_SECRET in production"
            );
            (TokenKey::random(), true)
        }
    };
    let advertise = if args.advertise_ip.is_empty() {
        default_advertise()
    } else {
        args.advertise_ip.clone()
    };
    info!("media candidates advertise {advertise:?}");

    let (ice_servers, relay) = if args.turn {
        let (source, handle) = relay::embedded(&args, &advertise)?;
        (Some(source), Some(handle))
    } else {
        (None, None)
    };

    let registry = prometheus::Registry::new();
    let turn_metrics = match &relay {
        Some(_) => Some(TurnMetrics::new(&registry)?),
        None => None,
    };
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let metrics = Metrics::new(&registry)?;
    let tap = match &args.tap {
        Some(path) => {
            warn!(
                "--tap: recording the payload of every RTP packet publishers send to {} \
                 (at most {TAP_LINES} lines); a test-only tap, never for production",
                path.display()
            );
            let tap = Tap::create(path, TAP_LINES)
                .with_context(|| format!("cannot open the tap {}", path.display()))?;
            Some(Arc::new(tap))
        }
        None => None,
    };
    let plane = Plane::start(
        MediaConfig {
            bind_ip: args.udp_bind,
            ports: args.udp_ports.clone(),
            advertise,
            tcp_port: (!args.no_ice_tcp).then_some(args.tcp_port),
            shards: args.shards,
            shard: ShardConfig {
                participant_timeout: Duration::from_secs(args.participant_timeout.max(1)),
                room_capacity: args.room_capacity.max(1),
                viewer_capacity: args.viewer_capacity,
                loudest_threshold: args.loudest_threshold,
                loudest_n: args.loudest_n,
                last_n: args.last_n,
                tap: tap.is_some().then(|| args.tap_rooms.clone()),
                ..ShardConfig::default()
            },
            tap,
        },
        metrics,
    )?;
    let router = signaling::router(
        Arc::new(plane),
        signaling::Config {
            tokens,
            dev_mode,
            ice_servers,
        },
        registry,
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let (Some(metrics), Some(relay)) = (turn_metrics, relay) {
            tokio::spawn(relay::flush_metrics(metrics, relay));
        }
        let listener = tokio::net::TcpListener::bind(args.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.http_listen))?;
        info!("signaling on http://{}", listener.local_addr()?);
        signaling::serve(listener, router, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}
