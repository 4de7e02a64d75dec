//! Control plane of the SFU: join tokens, the HTTP and WebSocket server, WHIP and WHEP,
//! and the browser client it serves. It knows the media plane only through
//! [`MediaPlane`]; the messages it speaks are the `protocol` crate's.
//!
//! The modules form a one-way chain: each imports only those above it.
//!
//! 1. `token.rs`: join tokens, issued and verified ([`TokenKey`], [`Claims`]);
//!    `policy.rs`: the groups' calling policies as they stand ([`Policies`]);
//!    `records.rs`: call records and notices, from the media plane's call events
//!    ([`Ledger`]).
//! 2. `plane.rs`: the media-plane seam: [`MediaPlane`], [`IceServerSource`], and
//!    [`EVENT_QUEUE`], the bound of a participant's event queue; `placement.rs`: the
//!    cluster seam, where a room lives ([`Placement`]).
//! 3. `budget.rs`: what one socket may send, and how fast (token buckets per kind of
//!    request); `addresses.rs`: open sockets and joins per client address.
//! 4. `state.rs`: the shared server state: [`Config`], `AppState` (what every handler
//!    holds: a join's grants under its group's policy too) and the control plane's
//!    metrics.
//! 5. `session.rs`: the WebSocket session (join, the request loop, batched writes);
//!    `whip/`: WHIP and WHEP, its files listed in `whip/mod.rs`; and `admin/`: the
//!    admin API, its files listed in `admin/mod.rs`. None imports another.
//! 6. `router.rs`: the HTTP router, the top of the chain: [`router`], [`metrics_router`],
//!    [`serve`], `/dev/token`, health, metrics, and the static assets of `web.rs`.
//!
//! `web.rs`, the browser client embedded from `web/`, and `tls.rs`, the HTTPS listener
//! [`serve`] takes, import nothing of the crate; `webhooks.rs`, signed notices POSTed to
//! the operator's receivers from bounded queues ([`webhooks::Webhooks`]), only the clock of
//! `token.rs`.

#![forbid(unsafe_code)]

mod addresses;
pub mod admin;
mod budget;
mod placement;
mod plane;
pub mod policy;
pub mod records;
mod router;
mod session;
mod state;
pub mod tls;
pub mod token;
pub mod web;
pub mod webhooks;
mod whip;

pub use addresses::AddressLimits;
pub use axum::Router;
pub use placement::{Placed, Placement, websocket_url};
pub use plane::{Answer, EVENT_QUEUE, IceServerSource, MediaPlane, Pending};
pub use policy::{Policies, PolicyError};
pub use records::Ledger;
pub use router::{metrics_router, router, serve};
pub use state::{Config, Readiness};
pub use token::{Claims, TokenKey};
#[doc(hidden)]
pub use whip::fuzzing;
