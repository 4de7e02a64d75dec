//! What a run measured: a table on stdout and a JSON line for bench/results/.

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::Common;
use crate::ceiling::Ceiling;
use crate::client::{RIDS, Role, Stats};
use crate::flood::FloodStats;
use crate::server::Sample;
use crate::target::Target;

pub struct Report {
    json: serde_json::Value,
    lines: Vec<String>,
    /// What makes a run unusable (clients that failed, no media at all).
    problems: Vec<String>,
    /// The load's shape for the ceiling: receivers per packet, packets/s in, bytes each.
    shape: Option<(usize, f64, usize)>,
    /// The server's egress packets/s per core it used.
    server_pps_per_core: f64,
}

/// A part of the report another module works out (the cluster's): its lines, its JSON
/// under `key`, and what makes the run unusable.
pub struct Section {
    pub key: &'static str,
    pub lines: Vec<String>,
    pub json: serde_json::Value,
    pub problems: Vec<String>,
}

fn pct(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

/// Appends one JSON line to a results file, making its directory if need be.
pub fn append_line(path: &Path, line: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &str,
        roles: &[Role],
        stats: Vec<Stats>,
        before: Sample,
        after: Sample,
        generator_cpu_s: f64,
        common: &Common,
        video_layers_bps: &[u64],
    ) -> Report {
        let window = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let d = |name: &str| after.metric(name) - before.metric(name);
        let egress_pps = d("sfu_udp_tx_packets_total") / window;
        let ingress_pps = d("sfu_udp_rx_packets_total") / window;
        let egress_mbps = d("sfu_udp_tx_bytes_total") * 8.0 / window / 1e6;
        let ingress_mbps = d("sfu_udp_rx_bytes_total") * 8.0 / window / 1e6;
        let forwarded = d("sfu_rtp_forwarded_total");
        // Keyframe requests the server sent, and subscriptions it switched to another
        // simulcast layer or resumed.
        let server_keyframe_requests_per_s = d("sfu_keyframe_requests_total") / window;
        let layer_switches_per_s = d("sfu_layer_switches_total") / window;
        let server_cpu = after.cpu_s - before.cpu_s;
        let cpu_per_1000 = if forwarded > 0.0 {
            Some(server_cpu * 1000.0 / forwarded)
        } else {
            None
        };
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let mut join = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
        let mut first_frame = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
        let (mut received, mut lost, mut keyframes, mut failed) = (0u64, 0u64, 0u64, Vec::new());
        let mut audio_keyframes = 0u64;
        let mut layer_keyframes = [0u64; RIDS.len()];
        let mut window_received = 0u64;
        let mut e2ee = crate::frames::E2eeCounts::default();
        let mut subscribers = 0usize;
        let mut silent = 0usize;
        for (i, (s, role)) in stats.iter().zip(roles).enumerate() {
            let _ = latency.add(&s.latency_us);
            if let Some(j) = s.join_to_first_media {
                let _ = join.record((j.as_micros() as u64).max(1));
            }
            if let Some(f) = s.connected_to_first_video {
                let _ = first_frame.record((f.as_micros() as u64).max(1));
            }
            received += s.packets_received;
            window_received += s.window_received;
            e2ee.encrypted += s.e2ee.encrypted;
            e2ee.decrypted += s.e2ee.decrypted;
            e2ee.no_key += s.e2ee.no_key;
            e2ee.failed += s.e2ee.failed;
            e2ee.incomplete += s.e2ee.incomplete;
            lost += s.lost;
            if role.publishes_video() {
                keyframes += s.window_keyframe_requests;
                audio_keyframes += s.window_audio_keyframe_requests;
                for (n, k) in layer_keyframes
                    .iter_mut()
                    .zip(s.window_layer_keyframe_requests)
                {
                    *n += k;
                }
            }
            if role.subscribe {
                subscribers += 1;
                if s.packets_received == 0 {
                    silent += 1;
                }
            }
            if let Some(e) = &s.error {
                failed.push(format!("client {i}: {e}"));
            }
        }
        let loss_pct = if received + lost > 0 {
            100.0 * lost as f64 / (received + lost) as f64
        } else {
            0.0
        };
        let per_subscriber_pps = if subscribers > 0 {
            window_received as f64 / subscribers as f64 / window
        } else {
            0.0
        };
        let generator_cores = generator_cpu_s / window;
        let server_cores = server_cpu / window;
        let (mut in_packets, mut in_bytes, mut window_sent) = (0u64, 0u64, 0u64);
        // Per simulcast layer: publishers sending it at the end.
        let mut layers_sending = vec![0usize; RIDS.len()];
        let mut simulcast_publishers = 0usize;
        for s in &stats {
            in_packets += s.packets_sent;
            in_bytes += s.bytes_sent;
            window_sent += s.window_packets_sent;
            if !s.layers_sending.is_empty() {
                simulcast_publishers += 1;
            }
            for (n, on) in layers_sending.iter_mut().zip(&s.layers_sending) {
                *n += usize::from(*on);
            }
        }
        let in_pps = window_sent as f64 / window;
        // Receivers per packet sent: every viewer in a broadcast; in a conference the
        // server picks for each subscriber (loudest audio, one layer per camera), so what
        // the subscribers received per packet the publishers sent.
        let fanout = if scenario == "broadcast" {
            subscribers
        } else if window_sent > 0 {
            (window_received as f64 / window_sent as f64).round() as usize
        } else {
            0
        };
        let shape = (fanout > 0 && in_packets > 0)
            .then(|| (fanout, in_pps, (in_bytes / in_packets) as usize + 12));
        // Against the raw ceiling: the server's egress, or for Janus, which counts none,
        // what its subscribers received.
        let egress_measured = if common.target == Target::Janus {
            window_received as f64 / window
        } else {
            egress_pps
        };
        let server_pps_per_core = if server_cores > 0.0 {
            egress_measured / server_cores
        } else {
            0.0
        };
        // A labelled counter's increments over the window, by its one label's value.
        let by_label = |prefix: &str| -> Vec<(String, f64)> {
            let mut v: Vec<(String, f64)> = after
                .metrics
                .keys()
                .filter_map(|k| {
                    let label = k.strip_prefix(prefix)?.split_once("=\"")?.1;
                    let label = label.strip_suffix("\"}")?;
                    let n = d(k);
                    (n > 0.0).then(|| (label.to_string(), n))
                })
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        };
        let drops = by_label("sfu_dropped_total{");
        let per_s = |v: Vec<(String, f64)>| -> Vec<(String, f64)> {
            v.into_iter().map(|(k, n)| (k, n / window)).collect()
        };
        // Why chosen layers changed, and how long shown videos gave no picture (summed
        // over every subscription), per second of the window.
        let choices = per_s(by_label("sfu_layer_choices_total{"));
        let frozen = per_s(by_label("sfu_video_frozen_ms_total{"));
        let listed = |v: &[(String, f64)]| -> String {
            if v.is_empty() {
                return "none".into();
            }
            v.iter()
                .map(|(k, n)| format!("{k} {n:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rcvbuf_drops = after.rcvbuf_errors.saturating_sub(before.rcvbuf_errors);
        let server_cores = server_cpu / window;
        let mut problems = failed.clone();
        if silent > 0 {
            problems.push(format!(
                "{silent} of {subscribers} subscribers received no media"
            ));
        }
        if e2ee.failed > 0 {
            problems.push(format!(
                "{} received frames did not decrypt with any key their receiver held",
                e2ee.failed
            ));
        }
        if subscribers > 0 && received > 0 && e2ee.decrypted == 0 {
            problems.push("no received frame could be read".to_string());
        }
        let video = if video_layers_bps.len() > 1 {
            let layers: Vec<String> = RIDS
                .iter()
                .zip(video_layers_bps)
                .map(|(rid, bps)| format!("{rid} {:.2}", *bps as f64 / 1e6))
                .collect();
            format!("video simulcast {} Mbit/s", layers.join(", "))
        } else {
            format!(
                "video {:.2} Mbit/s",
                video_layers_bps.first().copied().unwrap_or(0) as f64 / 1e6
            )
        };
        let slot_counts = roles.iter().find_map(|r| r.slots);
        let slots = slot_counts.map_or(String::new(), |(a, v)| {
            format!(", receiving on {a} audio and {v} video slots")
        });
        let mut lines = vec![
            format!(
                "{scenario}: {} clients, {video}{slots}, {:.0} s measured{}",
                roles.len(),
                window,
                if common.quick {
                    " (--quick: a smoke test, figures mean nothing)"
                } else {
                    ""
                }
            ),
            format!("server egress    {egress_pps:>10.0} packets/s  {egress_mbps:>8.1} Mbit/s"),
            format!("server ingress   {ingress_pps:>10.0} packets/s  {ingress_mbps:>8.1} Mbit/s"),
            format!(
                "server CPU       {server_cores:>10.2} cores      {} ms per 1000 forwarded packets",
                cpu_per_1000.map_or("-".into(), |v| format!("{:.3}", v * 1000.0))
            ),
            format!(
                "server RSS       {:>10.1} MiB",
                after.rss_bytes as f64 / 1048576.0
            ),
            format!(
                "publishers sent  {in_pps:>10.0} packets/s  (the generator's RTP, over the window)"
            ),
            format!("per subscriber   {per_subscriber_pps:>10.0} packets/s received"),
            format!(
                "loss             {loss_pct:>10.3} %  ({lost} of {})",
                received + lost
            ),
            if common.plaintext {
                format!(
                    "e2ee             off (--plaintext): {} frames received whole, read in the clear",
                    e2ee.decrypted
                )
            } else {
                format!(
                    "e2ee             SFrame AES_256_GCM_SHA512_128: {} frames encrypted; received whole: {} decrypted, {} before their key came, {} undecryptable; {} incomplete",
                    e2ee.encrypted, e2ee.decrypted, e2ee.no_key, e2ee.failed, e2ee.incomplete
                )
            },
            format!(
                "dropped          server: {}; kernel, full receive buffers (whole machine): {rcvbuf_drops}  (over the window)",
                if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops
                        .iter()
                        .map(|(r, n)| format!("{r} {n:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            format!(
                "latency          p50 {} ms  p95 {} ms  p99 {} ms  max {} ms  (send to receive, {} packets)",
                fmt_ms(pct(&latency, 0.5)),
                fmt_ms(pct(&latency, 0.95)),
                fmt_ms(pct(&latency, 0.99)),
                fmt_ms(pct(&latency, 1.0)),
                latency.len()
            ),
            format!(
                "join             p50 {} ms  p99 {} ms  (token sent to first media packet)",
                fmt_ms(pct(&join, 0.5)),
                fmt_ms(pct(&join, 0.99))
            ),
            format!(
                "first frame      p50 {} ms  p99 {} ms  max {} ms  (media connected to a keyframe's first packet; {} clients)",
                fmt_ms(pct(&first_frame, 0.5)),
                fmt_ms(pct(&first_frame, 0.99)),
                fmt_ms(pct(&first_frame, 1.0)),
                first_frame.len()
            ),
            format!(
                "keyframe requests {:>9.2} /s seen by publishers, {:.2} /s of them for audio m-lines; {server_keyframe_requests_per_s:.2} /s sent by the server",
                keyframes as f64 / window,
                audio_keyframes as f64 / window
            ),
            format!(
                "layer switches   {layer_switches_per_s:>10.2} /s  (subscriptions the server switched to another layer or resumed, audio included)"
            ),
            format!(
                "layer choices    {:>10.2} /s: {}  (changes of the layer chosen, by cause)",
                choices.iter().map(|(_, n)| n).sum::<f64>(),
                listed(&choices)
            ),
            format!(
                "video frozen     {} ms/s  (shown videos with no picture, by reason, summed over subscriptions)",
                listed(&frozen)
            ),
            format!(
                "generator CPU    {generator_cores:>10.2} cores (CPUs {:?}; server on {:?})",
                common.place.generator_cpus, common.place.server_cpus
            ),
        ];
        if simulcast_publishers > 0 {
            let requests: Vec<String> = RIDS
                .iter()
                .zip(&layer_keyframes)
                .take(video_layers_bps.len())
                .map(|(rid, n)| format!("{rid} {:.2}", *n as f64 / window))
                .collect();
            lines.insert(
                lines.len() - 1,
                format!("keyframe requests by layer, /s: {}", requests.join(", ")),
            );
            let sending: Vec<String> = RIDS
                .iter()
                .zip(&layers_sending)
                .take(video_layers_bps.len())
                .map(|(rid, n)| format!("{rid} {n}"))
                .collect();
            lines.insert(
                lines.len() - 1,
                format!(
                    "layers sending   {} of {simulcast_publishers} publishers at the end (as the server's `layers` asked)",
                    sending.join(", ")
                ),
            );
        }
        // What reached the subscribers, counted where they got it: the one figure of
        // egress that reads the same for any server, ours or Janus.
        let delivered_pps = window_received as f64 / window;
        let cpu_per_1000_delivered =
            (window_received > 0).then(|| server_cpu * 1000.0 / window_received as f64);
        lines.insert(
            4,
            format!(
                "delivered        {delivered_pps:>10.0} packets/s  RTP received by the subscribers; server CPU {} ms per 1000 of them",
                cpu_per_1000_delivered.map_or("-".into(), |v| format!("{:.3}", v * 1000.0))
            ),
        );
        if common.target == Target::Janus {
            // Janus keeps no counters the bench can read: the lines made of ours go.
            let ours = [
                "server egress",
                "server ingress",
                "dropped",
                "layer switches",
                "layer choices",
                "video frozen",
                "layers sending",
            ];
            lines.retain(|l| !ours.iter().any(|o| l.starts_with(o)));
            let at = lines
                .iter()
                .position(|l| l.starts_with("generator CPU"))
                .unwrap_or(lines.len());
            lines.insert(
                at,
                format!("dropped          kernel, full receive buffers (whole machine): {rcvbuf_drops}  (over the window)"),
            );
            lines.insert(
                1,
                "server           Janus VideoRoom (--target janus): its own figures are its CPU and memory; traffic is counted at the clients".to_owned(),
            );
        }
        let gen_limit = common.place.generator_cpus.split(',').count().max(1) as f64;
        if generator_cores > 0.85 * gen_limit {
            lines.push(format!(
                "WARNING: the generator used {generator_cores:.2} of its {gen_limit} CPUs: it, not the server, may be the bottleneck"
            ));
        }
        if !failed.is_empty() {
            lines.push(format!(
                "WARNING: {} clients failed; first: {}",
                failed.len(),
                failed[0]
            ));
        }
        let layers_sending_json: serde_json::Map<String, serde_json::Value> = RIDS
            .iter()
            .zip(&layers_sending)
            .take(video_layers_bps.len())
            .filter(|_| simulcast_publishers > 0)
            .map(|(rid, n)| (rid.to_string(), json!(n)))
            .collect();
        let to_json = |v: &[(String, f64)]| -> serde_json::Map<String, serde_json::Value> {
            v.iter().map(|(r, n)| (r.clone(), json!(n))).collect()
        };
        let (choices_json, frozen_json) = (to_json(&choices), to_json(&frozen));
        let mut json = json!({
            "scenario": scenario,
            "slots": slot_counts.map(|(a, v)| format!("{a}:{v}")),
            "date": chrono_free_now(),
            "clients": roles.len(),
            "video_bps": video_layers_bps.last().copied().unwrap_or(0),
            "video_layers_bps": video_layers_bps,
            "sent_pps": in_pps,
            "layers_sending": layers_sending_json,
            "window_s": window,
            "quick": common.quick,
            "server_cpus": common.place.server_cpus,
            "generator_cpus": common.place.generator_cpus,
            "egress_pps": egress_pps, "egress_mbps": egress_mbps,
            "ingress_pps": ingress_pps, "ingress_mbps": ingress_mbps,
            "forwarded": forwarded,
            "server_cores": server_cores,
            "server_cpu_ms_per_1000_forwarded": cpu_per_1000.map(|v| v * 1000.0),
            "server_rss_bytes": after.rss_bytes,
            "per_subscriber_pps": per_subscriber_pps,
            "loss_pct": loss_pct,
            "server_drops": drops.iter().map(|(r, n)| (r.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "kernel_rcvbuf_drops": rcvbuf_drops,
            "latency_ms": {"p50": pct(&latency, 0.5), "p95": pct(&latency, 0.95), "p99": pct(&latency, 0.99), "max": pct(&latency, 1.0), "samples": latency.len()},
            "join_ms": {"p50": pct(&join, 0.5), "p99": pct(&join, 0.99)},
            "first_frame_ms": {"p50": pct(&first_frame, 0.5), "p99": pct(&first_frame, 0.99), "max": pct(&first_frame, 1.0)},
            "keyframe_requests_per_s": keyframes as f64 / window,
            "audio_keyframe_requests_per_s": audio_keyframes as f64 / window,
            "server_keyframe_requests_per_s": server_keyframe_requests_per_s,
            "layer_switches_per_s": layer_switches_per_s,
            "generator_cores": generator_cores,
            "failed_clients": failed.len(),
            "e2ee": !common.plaintext,
            "frames": {
                "encrypted": e2ee.encrypted,
                "decrypted": e2ee.decrypted,
                "no_key": e2ee.no_key,
                "undecryptable": e2ee.failed,
                "incomplete": e2ee.incomplete,
            },
        });
        json["target"] = json!(format!("{:?}", common.target).to_lowercase());
        json["delivered_pps"] = json!(delivered_pps);
        json["server_cpu_ms_per_1000_delivered"] =
            json!(cpu_per_1000_delivered.map(|v| v * 1000.0));
        json["layer_choices_per_s"] = choices_json.into();
        json["video_frozen_ms_per_s"] = frozen_json.into();
        Report {
            json,
            lines,
            problems,
            shape,
            server_pps_per_core,
        }
    }

    /// Receivers per packet, packets/s in and bytes per packet, for the ceiling run.
    pub fn shape(&self) -> Option<(usize, f64, usize)> {
        self.shape
    }

    /// Adds the raw forwarder's run under the same shape, and the server's ratio to it.
    pub fn add_ceiling(&mut self, c: &Ceiling) {
        let ratio = if c.pps_per_core() > 0.0 {
            self.server_pps_per_core / c.pps_per_core()
        } else {
            0.0
        };
        self.lines.push(format!(
            "raw ceiling      {:>10.0} packets/s on {:.2} cores = {:.0} per core (fanout {}, {:.0} packets/s in); the server's {:.0} per core is {:.1} % of it",
            c.egress_pps,
            c.cores,
            c.pps_per_core(),
            c.fanout,
            c.offered_pps,
            self.server_pps_per_core,
            100.0 * ratio
        ));
        self.json["ceiling"] = json!({
            "fanout": c.fanout,
            "offered_pps": c.offered_pps,
            "egress_pps": c.egress_pps,
            "cores": c.cores,
            "pps_per_core": c.pps_per_core(),
            "loss_pct": c.loss_pct,
        });
        self.json["server_pps_per_core"] = json!(self.server_pps_per_core);
        self.json["ratio_to_ceiling"] = json!(ratio);
    }

    /// Adds what the offer flood's participants managed; a flood the server never
    /// answered makes the run unusable (the flood did not reach the shard).
    pub fn add_flood(&mut self, floods: &[FloodStats]) {
        let sent: u64 = floods.iter().map(|f| f.sent).sum();
        let answered: u64 = floods.iter().map(|f| f.answered).sum();
        let refused: u64 = floods.iter().map(|f| f.refused).sum();
        let mb = floods.iter().map(|f| f.bytes).sum::<u64>() as f64 / 1e6;
        self.lines.push(format!(
            "offer flood      {} sockets: {sent} offers of 256 m-lines ({mb:.1} MB), {answered} answered, {refused} refused",
            floods.len()
        ));
        for (i, f) in floods.iter().enumerate() {
            if let Some(e) = &f.error {
                self.problems.push(format!("flood {i}: {e}"));
            }
        }
        if answered == 0 {
            self.problems
                .push("the server answered no flood offer".into());
        }
        self.json["offer_flood"] = json!({
            "sockets": floods.len(), "sent": sent, "answered": answered, "refused": refused,
        });
    }

    /// Adds `section`: its lines before the generator's CPU line and the warnings.
    pub fn add_section(&mut self, section: Section) {
        let at = self
            .lines
            .iter()
            .position(|l| l.starts_with("generator CPU"))
            .unwrap_or(self.lines.len());
        self.lines.splice(at..at, section.lines);
        self.json[section.key] = section.json;
        self.problems.extend(section.problems);
    }

    pub fn print(&self) {
        for l in &self.lines {
            println!("{l}");
        }
    }

    pub fn append(&self, path: &Path) -> anyhow::Result<()> {
        append_line(path, &self.json)
    }

    /// Fails when the harness itself did not work: a client failed, a subscriber got
    /// nothing, a frame did not decrypt. Never about speed.
    pub fn check_harness(&self) -> anyhow::Result<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("the run is not usable: {}", self.problems.join("; "))
        }
    }
}

/// Seconds since the Unix epoch, as the run's date.
fn chrono_free_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
