//! `bench cost`: the shard's own work per forwarded packet, counted rather than timed.
//! It runs sfu-core's `cost` example (a fixed scenario of the sans-IO harness in virtual
//! time: a broadcast to N viewers, or a conference of N on slots) under
//! `valgrind --tool=callgrind`, collecting only inside `in_shard`, through which the
//! harness makes every call into the shard during the measured window: the clients' own
//! work (str0m peers, the virtual network) is left out. Reports instructions per
//! forwarded packet: the same for the same build and scenario whatever else the machine
//! is doing, which makes it the figure to compare from change to change
//! (bench/README.md). (Not allocations: callgrind counts the calls of an edge such as
//! `__rdl_alloc` -> `malloc` whether collecting or not, so its call counts cannot tell
//! the shard's from its clients'.)

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::report::append_line;

/// What `bench cost` measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum CostScenario {
    /// A presenter's 2.5 Mbit/s screen share to `--viewers` receive-only viewers.
    Broadcast,
    /// `--participants`, each publishing a microphone and a 3-layer simulcast camera and
    /// receiving on `--slots` (three of them talking).
    Conference,
}

#[derive(clap::Args, Debug)]
pub struct CostArgs {
    scenario: CostScenario,
    #[arg(long, default_value_t = 500)]
    viewers: usize,
    #[arg(long, default_value_t = 70)]
    participants: usize,
    /// Slots each conference participant receives on, AUDIO:VIDEO.
    #[arg(long, default_value = "3:25")]
    slots: String,
    /// Virtual seconds before the window (joins settled, first keyframes through).
    #[arg(long, default_value_t = 3.0)]
    warm: f64,
    /// Virtual seconds measured.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// The example binary (`cargo build --release -p sfu-core --example cost`).
    #[arg(long, default_value = "target/release/examples/cost")]
    cost_bin: PathBuf,
    /// A few clients for a virtual second: checks the measure works (CI); its figures
    /// mean nothing.
    #[arg(long)]
    quick: bool,
    /// Where the JSON line of a full run is appended.
    #[arg(long, default_value = "bench/results/cost.json")]
    results: PathBuf,
}

pub fn run(args: CostArgs) -> anyhow::Result<()> {
    if !args.cost_bin.exists() {
        bail!(
            "no cost example at {} (cargo build --release -p sfu-core --example cost, or --cost-bin)",
            args.cost_bin.display()
        );
    }
    let (viewers, participants, slots, warm, seconds) = if args.quick {
        (5, 6, "3:4".to_owned(), 1.0, 1.0)
    } else {
        (
            args.viewers,
            args.participants,
            args.slots.clone(),
            args.warm,
            args.seconds,
        )
    };
    let mut example: Vec<String> = match args.scenario {
        CostScenario::Broadcast => {
            vec!["broadcast".into(), "--viewers".into(), viewers.to_string()]
        }
        CostScenario::Conference => vec![
            "conference".into(),
            "--participants".into(),
            participants.to_string(),
            "--slots".into(),
            slots,
        ],
    };
    example.extend([
        "--warm".into(),
        warm.to_string(),
        "--seconds".into(),
        seconds.to_string(),
    ]);
    let out = std::env::temp_dir().join(format!("bench-cost-{}.callgrind", std::process::id()));
    let ran = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args(["--collect-atstart=no", "--toggle-collect=*in_shard*"])
        .arg(&args.cost_bin)
        .args(&example)
        .stdin(Stdio::null())
        .output()
        .context("running valgrind (Debian: apt-get install valgrind)")?;
    let counted = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    if !ran.status.success() {
        // valgrind's report and the example's panic, if any.
        let stderr = String::from_utf8_lossy(&ran.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "valgrind {}: {}\n{}",
            args.cost_bin.display(),
            ran.status,
            tail.join("\n")
        );
    }
    let line = String::from_utf8_lossy(&ran.stdout);
    let scenario: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the example printed {line:?}"))?;
    let instructions = callgrind_total(&counted?)?;
    let forwarded = scenario["forwarded"].as_u64().unwrap_or(0);
    if forwarded == 0 || instructions == 0 {
        bail!("nothing measured: {forwarded} packets forwarded, {instructions} instructions");
    }
    let per = |n: u64| n as f64 / forwarded as f64;
    println!(
        "cost: {:?}, {}, {seconds} s measured after {warm} s (virtual time){}",
        args.scenario,
        scenario["shape"].as_str().unwrap_or(""),
        if args.quick {
            " (--quick: a smoke test, figures mean nothing)"
        } else {
            ""
        }
    );
    println!("forwarded        {forwarded:>14} packets");
    println!(
        "instructions     {instructions:>14} in the shard = {:.0} per forwarded packet",
        per(instructions)
    );
    if !args.quick {
        let line = json!({
            "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "commit": commit(),
            "scenario": scenario,
            "instructions": instructions,
            "instructions_per_forwarded": per(instructions),
        });
        append_line(&args.results, &line)?;
        println!("appended to {}", args.results.display());
    }
    Ok(())
}

/// The instructions a callgrind output file counts: its `totals` line (what was
/// collected, here inside `in_shard` only).
fn callgrind_total(text: &str) -> anyhow::Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no totals in callgrind's output")
}

/// The commit measured, when run in a git checkout.
fn commit() -> Option<String> {
    let out = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_totals_line() {
        let text = "events: Ir\nfn=(1) cost::common::net::in_shard\n0 10\ncfn=(2) malloc\ncalls=3 0\n0 30\ntotals: 76\n";
        assert_eq!(callgrind_total(text).expect("totals"), 76);
        assert!(callgrind_total("events: Ir\nsummary: 5\n").is_err());
    }
}
