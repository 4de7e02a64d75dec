//! Shared server state: the configuration, the control plane's metrics, and what every
//! handler holds.

use std::sync::Arc;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use protocol::{ErrorCode, ErrorMessage, Grants, IceServer};

use crate::addresses::{AddressLimits, Addresses};
use crate::admin::{Admin, AdminRelay};
use crate::placement::{Placed, Placement};
use crate::plane::{IceServerSource, MediaPlane};
use crate::policy::Policies;
use crate::records::Ledger;
use crate::token::{Claims, TokenKey};

/// How the signaling server is set up.
pub struct Config {
    /// Verifies join tokens.
    pub tokens: TokenKey,
    /// No secret was configured: `/dev/token` hands out tokens to anyone.
    pub dev_mode: bool,
    /// ICE servers for each joining participant; `None` hands out none.
    pub ice_servers: Option<IceServerSource>,
    /// Open sockets and joins per client address.
    pub address_limits: AddressLimits,
    /// What `/readyz` answers, asked at each request: `None` when this server takes new
    /// calls (200), else why not (503 with it, say `draining`).
    pub readiness: Readiness,
    /// The admin API (`/admin/...`); `None` turns it off.
    pub admin: Option<Admin>,
    /// The groups' calling policies, which narrow the grants of every join.
    pub policies: Policies,
    /// The records of finished calls (`GET /admin/records`).
    pub ledger: Arc<Ledger>,
    /// Where rooms live when this node is one of a cluster; `None`: every room lives here.
    pub placement: Option<Arc<dyn Placement>>,
    /// The cluster's other nodes, for the admin API; `None`: this node alone.
    pub admin_relay: Option<Arc<dyn AdminRelay>>,
}

/// See [`Config::readiness`].
pub type Readiness = Arc<dyn Fn() -> Option<&'static str> + Send + Sync>;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("dev_mode", &self.dev_mode)
            .field("ice_servers", &self.ice_servers.is_some())
            .field("address_limits", &self.address_limits)
            .field("admin", &self.admin.is_some())
            .field("policies", &self.policies)
            .field("cluster", &self.placement.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters of the control plane, on `/metrics`.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Open WebSockets.
    pub(crate) sockets: IntGauge,
    /// Error messages sent to clients, by code.
    pub(crate) errors: IntCounterVec,
    /// Sockets and joins refused by the per-address limits, by reason.
    pub(crate) refused: IntCounterVec,
}

/// The reasons of `sfu_signaling_refused_total`.
pub(crate) const REFUSED_SOCKETS: &str = "sockets_per_address";
pub(crate) const REFUSED_JOINS: &str = "joins_per_address";

impl Metrics {
    /// Registers the counters in `registry`.
    pub(crate) fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let sockets = IntGauge::new("sfu_signaling_sockets", "Open signaling WebSockets")?;
        let errors = IntCounterVec::new(
            Opts::new(
                "sfu_signaling_errors_total",
                "Error messages sent to clients, by code",
            ),
            &["code"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "sfu_signaling_refused_total",
                "WebSockets and joins refused by the per-address limits, by reason",
            ),
            &["reason"],
        )?;
        for reason in [REFUSED_SOCKETS, REFUSED_JOINS] {
            refused.with_label_values(&[reason]);
        }
        for code in ErrorCode::ALL {
            errors.with_label_values(&[code.as_str()]);
        }
        registry.register(Box::new(sockets.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Metrics {
            sockets,
            errors,
            refused,
        })
    }
}

/// What every handler shares: the media plane, the configuration and the metrics.
pub(crate) struct AppState {
    pub(crate) plane: Arc<dyn MediaPlane>,
    pub(crate) config: Config,
    /// What `/metrics` serves: the control plane's counters and what the caller registered.
    pub(crate) registry: Registry,
    pub(crate) metrics: Metrics,
    /// What each client address holds (`config.address_limits`).
    pub(crate) addresses: Arc<Addresses>,
}

/// A join's token as its group's policy lets it apply.
pub(crate) struct Admitted {
    /// The token's group, or the default group.
    pub(crate) group: String,
    /// The token's grants (for its role), and as the policy narrows them.
    pub(crate) token_grants: Grants,
    pub(crate) grants: Grants,
    /// The policy's `max_participants`, for a room this join opens.
    pub(crate) max_participants: Option<u32>,
}

impl AppState {
    /// What a join with `claims` may do under its group's policy, or why it may not
    /// join: its group is unknown here, or may not call (or present).
    pub(crate) fn admit(&self, claims: &Claims) -> Result<Admitted, ErrorMessage> {
        let Some((group, policy)) = self.config.policies.of(claims.group.as_deref()) else {
            let message = format!(
                "the token names group {:?}, which this server does not have",
                claims.group.as_deref().unwrap_or_default()
            );
            return Err(ErrorMessage::new(ErrorCode::Forbidden, message));
        };
        let token_grants = claims.grants.effective();
        if let Some(why) = policy.refuses(&token_grants) {
            return Err(ErrorMessage::new(ErrorCode::Forbidden, why));
        }
        Ok(Admitted {
            group,
            token_grants,
            grants: policy.narrow(token_grants),
            max_participants: policy.max_participants,
        })
    }

    /// Where `room` lives: here without a cluster, else wherever the cluster says.
    pub(crate) async fn place(&self, room: &str) -> Result<Placed, ErrorMessage> {
        match &self.config.placement {
            Some(placement) => placement.place(room).await,
            None => Ok(Placed::Here),
        }
    }

    /// The ICE servers (TURN credentials) for a joining client: only those over TCP and
    /// TLS when its grants force TCP.
    pub(crate) fn ice_servers_for(&self, identity: &str, grants: &Grants) -> Vec<IceServer> {
        let servers = match &self.config.ice_servers {
            Some(source) => source(identity),
            None => Vec::new(),
        };
        if grants.force_tcp {
            servers.iter().filter_map(IceServer::tcp_only).collect()
        } else {
            servers
        }
    }
}
