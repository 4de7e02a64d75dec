//! The groups' calling policies in the server: read from the config file's
//! `[groups.NAME]` tables, reloaded on SIGHUP, and every change passed on to the calls
//! in progress (and to whoever is told of it: records and webhooks).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use protocol::Policy;
use signaling::{MediaPlane, Policies};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config;

/// The policies of `groups` (the config file's), each change passed on to `plane`'s
/// calls in progress and then to `told`.
pub fn policies(
    groups: BTreeMap<String, Policy>,
    plane: Arc<dyn MediaPlane>,
    told: signaling::policy::PolicyListener,
) -> anyhow::Result<Policies> {
    let names: Vec<&String> = groups.keys().collect();
    info!("calling policies for groups {names:?} (and the default group)");
    let policies = Policies::new(groups)
        .with_context(|| "the config file's [groups]".to_string())?
        .with_listener(Arc::new(move |group: &str, policy: Option<&Policy>| {
            match policy {
                Some(policy) => info!(group, ?policy, "policy set"),
                None => info!(group, "group removed"),
            }
            if let (Some(policy), Ok(runtime)) = (policy, tokio::runtime::Handle::try_current()) {
                let applied = plane.apply_policy(group, *policy);
                let group = group.to_owned();
                runtime.spawn(async move {
                    if let Err(e) = applied.await {
                        warn!(
                            group,
                            "policy not applied to calls in progress: {}", e.message
                        );
                    }
                });
            }
            told(group, policy);
        }));
    Ok(policies)
}

/// Takes SIGHUP for ever: reloads the groups from the config file (a file that does not
/// read keeps the groups as they were, and says why), or says there is nothing to
/// reload. The handler is installed before this returns (call it in the runtime): from
/// then on SIGHUP is safe. `also` says what else SIGHUP reloads (a certificate).
pub fn reload_on_hangup(
    path: Option<PathBuf>,
    policies: Policies,
    also: Option<&'static str>,
) -> impl Future<Output = ()> + Send {
    let hangup = signal(SignalKind::hangup())
        .inspect_err(|e| warn!("cannot listen for SIGHUP: {e}"))
        .ok();
    async move {
        let Some(mut hangup) = hangup else { return };
        while hangup.recv().await.is_some() {
            let Some(path) = &path else {
                if also.is_none() {
                    info!(
                        "SIGHUP: nothing to reload: no config file (--config), no certificate (--http-cert)"
                    );
                }
                continue;
            };
            match config::groups(path).map(|groups| policies.replace(groups)) {
                Ok(Ok(changes)) => info!(
                    "SIGHUP: groups reloaded from {}: {changes} changed",
                    path.display()
                ),
                Ok(Err(e)) => warn!(
                    "SIGHUP: groups of {} refused, the current ones kept: {e}",
                    path.display()
                ),
                Err(e) => warn!("SIGHUP: groups kept as they were: {e:#}"),
            }
        }
    }
}
