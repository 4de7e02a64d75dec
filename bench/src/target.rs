//! The server a run loads: ours (`sfu`, alone or the nodes of a cluster) or, with
//! `--target janus`, Janus's VideoRoom, under the same clients and the same measurement.

use crate::cluster::Deployment;
use crate::janus::Janus;
use crate::server::Sample;

/// Which server a run loads.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Our server, `--sfu-bin`.
    Sfu,
    /// Janus's VideoRoom plugin, `--janus-bin` (Debian's `janus`).
    Janus,
}

/// The servers a run loads.
pub enum Servers {
    Ours(Deployment),
    Janus(Janus),
}

impl Servers {
    /// Every server's sample.
    pub async fn sample(&self) -> anyhow::Result<Vec<Sample>> {
        match self {
            Servers::Ours(d) => d.sample().await,
            Servers::Janus(j) => Ok(vec![j.sample()?]),
        }
    }

    /// Our cluster, if the run loads one.
    pub fn cluster(&self) -> Option<&Deployment> {
        match self {
            Servers::Ours(d) if d.is_cluster() => Some(d),
            _ => None,
        }
    }

    /// Where clients send their join.
    pub fn entry_url(&self) -> String {
        match self {
            Servers::Ours(d) => d.entry().ws_url(),
            Servers::Janus(j) => j.ws_url(),
        }
    }
}
