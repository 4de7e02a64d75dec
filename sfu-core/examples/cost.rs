//! The shard's own work per forwarded packet, for `bench cost` (bench/README.md, "The
//! shard's work per packet"). A fixed scenario of the sans-IO harness (`tests/common`:
//! real str0m clients, no sockets, virtual time), warmed up, then a measured window in
//! which every call into the shard goes through `common::in_shard`, the one function
//! `bench cost` has callgrind count: what the shard does for those packets, its clients'
//! work left out. Prints one JSON line: the scenario and the packets forwarded in the
//! window.
//!
//! ```text
//! cost broadcast --viewers 500 [--warm 3] [--seconds 2]
//! cost conference --participants 70 --slots 3:25 [--warm 3] [--seconds 2]
//! ```

#![allow(clippy::unwrap_used)] // A measuring tool over the test harness: a panic is its report.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Net, VideoShape, everyone};
use protocol::{Grants, Role, Source};
use sfu_core::shard::ShardConfig;

/// A screen share of about 2.5 Mbit/s: 12 packets of 1000 bytes, 25 frames a second.
const SCREEN: VideoShape = VideoShape {
    packets: [12, 12, 12],
    bytes: [1000, 1000, 1000],
    frame_every: 8,
    temporal: false,
    keyframe_scale: 4,
};

/// A camera's simulcast layers, lowest first.
const SIMULCAST: &[&str] = &["q", "h", "f"];

/// The value after `--name` on the command line, parsed; `default` without one.
fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot read {v:?}"))
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().unwrap_or_default();
    let warm = Duration::from_secs_f64(arg(&args, "--warm", 3.0));
    let seconds = arg(&args, "--seconds", 2.0);
    let (mut net, clients, shape) = match scenario.as_str() {
        "broadcast" => {
            let viewers: usize = arg(&args, "--viewers", 500);
            (
                broadcast(viewers),
                viewers + 1,
                format!("{viewers} viewers"),
            )
        }
        "conference" => {
            let n: usize = arg(&args, "--participants", 70);
            let slots: String = arg(&args, "--slots", "3:25".to_owned());
            let (a, v) = slots
                .split_once(':')
                .and_then(|(a, v)| Some((a.parse().ok()?, v.parse().ok()?)))
                .expect("--slots AUDIO:VIDEO");
            (
                conference(n, a, v),
                n,
                format!("{n} participants on slots {a}:{v}"),
            )
        }
        _ => {
            eprintln!(
                "usage: cost broadcast --viewers N | cost conference --participants N --slots A:V  [--warm S] [--seconds S]"
            );
            std::process::exit(2);
        }
    };
    net.run(warm);
    let before = net.shard.counters.rtp_forwarded;
    net.measure = true;
    net.run(Duration::from_secs_f64(seconds));
    net.measure = false;
    let forwarded = net.shard.counters.rtp_forwarded - before;
    println!(
        "{{\"scenario\": \"{scenario}\", \"shape\": \"{shape}\", \"clients\": {clients}, \"warm_s\": {}, \"seconds\": {seconds}, \"forwarded\": {forwarded}}}",
        warm.as_secs_f64()
    );
}

/// A presenter sharing a screen to `viewers` receive-only viewers.
fn broadcast(viewers: usize) -> Net {
    let mut net = Net::new(ShardConfig::default());
    net.video = SCREEN;
    let role = |role| Grants { role, ..everyone() };
    let presenter = net.join("presenter", role(Role::Presenter));
    net.negotiate(presenter, &[Source::Screen]);
    for v in 0..viewers {
        let i = net.join(&format!("viewer{v}"), role(Role::Viewer));
        net.negotiate(i, &[]);
    }
    net
}

/// `n` participants, each publishing a microphone and a simulcast camera and receiving
/// on `audio` and `video` slots; three of them talk, at -20, -30 and -35 dBov.
fn conference(n: usize, audio: usize, video: usize) -> Net {
    let mut net = Net::new(ShardConfig::default());
    net.video = VideoShape::default();
    for k in 0..n {
        let i = net.join(&format!("p{k}"), everyone());
        net.negotiate_slots(
            i,
            &[(Source::Microphone, &[]), (Source::Camera, SIMULCAST)],
            audio,
            video,
        );
    }
    for (i, level) in [(0, -20), (1, -30), (2, -35)] {
        if let Some(c) = net.clients.get_mut(i) {
            c.level = level;
        }
    }
    net
}
