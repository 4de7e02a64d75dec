//! Sans-IO tests of the delays a call takes to come up (`Milestone`): real str0m clients
//! and the shard in virtual time, so every delay is exact and repeatable.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{Net, everyone};
use protocol::{Grants, Role, Source};
use sfu_core::shard::{Milestone, ShardConfig};

const WAIT_BEFORE_OFFER: Duration = Duration::from_millis(400);

/// Alice joins and waits before she offers; Bob joins and offers at once; Vera, a viewer,
/// publishes nothing.
fn call_with_a_slow_offer_and_a_viewer() -> Net {
    let mut net = Net::new(ShardConfig::default());
    let sources = [Source::Microphone, Source::Camera];
    let alice = net.join("alice", everyone());
    net.run(WAIT_BEFORE_OFFER);
    net.negotiate(alice, &sources);
    let bob = net.join("bob", everyone());
    net.negotiate(bob, &sources);
    let viewer = Grants {
        role: Role::Viewer,
        ..everyone()
    };
    let vera = net.join("vera", viewer);
    net.negotiate(vera, &[]);
    net.negotiate(alice, &[]);
    net.run(Duration::from_secs(3));
    net
}

#[test]
fn each_participant_records_each_milestone_it_reaches_once() {
    let mut net = call_with_a_slow_offer_and_a_viewer();
    let delays = net.shard.counters.milestones.clone();
    let connected = delays.of(Milestone::Connected);
    assert_eq!(
        connected.len(),
        3,
        "everyone's media path is up: {delays:?}"
    );
    // Alice's path came up only after her offer: her wait counts.
    assert!(
        connected.iter().any(|d| *d >= WAIT_BEFORE_OFFER),
        "{connected:?}"
    );
    assert!(
        connected.iter().all(|d| *d < Duration::from_secs(1)),
        "{connected:?}"
    );
    // Vera publishes nothing: two first packets received, three forwarded.
    let received = delays.of(Milestone::FirstReceived);
    let forwarded = delays.of(Milestone::FirstForwarded);
    assert_eq!(received.len(), 2, "{delays:?}");
    assert_eq!(forwarded.len(), 3, "{delays:?}");
    // Media flows only once a path is up.
    let first_up = connected.iter().min().copied().unwrap();
    assert!(received.iter().chain(forwarded).all(|d| *d >= first_up));
    assert!(
        received
            .iter()
            .chain(forwarded)
            .all(|d| *d < Duration::from_secs(2)),
        "{delays:?}"
    );
    assert_eq!(delays.lost, 0);
    // Reached once: a call that goes on records nothing more.
    net.shard.counters = Default::default();
    net.run(Duration::from_secs(1));
    for m in Milestone::ALL {
        assert!(net.shard.counters.milestones.of(m).is_empty(), "{m:?}");
    }
}

#[test]
fn a_participant_alone_never_receives_media() {
    let mut net = Net::new(ShardConfig::default());
    let alice = net.join("alice", everyone());
    net.negotiate(alice, &[Source::Microphone, Source::Camera]);
    net.run(Duration::from_secs(2));
    let delays = &net.shard.counters.milestones;
    assert_eq!(delays.of(Milestone::Connected).len(), 1);
    assert_eq!(delays.of(Milestone::FirstReceived).len(), 1);
    assert!(delays.of(Milestone::FirstForwarded).is_empty());
}
