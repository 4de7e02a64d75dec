//! What the tests check of what clients received.

use std::time::{Duration, Instant};

use protocol::TrackId;

use super::*;

/// Checks that a subscriber's stream of one track has gap-free rewritten sequence numbers
/// that follow the source's, and unchanged timestamps.
pub fn assert_well_forwarded(received: &[Received], what: &str) {
    assert!(
        received.len() > 10,
        "{what}: only {} packets",
        received.len()
    );
    let first = &received[0];
    for pair in received.windows(2) {
        assert_eq!(pair[1].seq_no, pair[0].seq_no + 1, "{what}: sequence gap");
    }
    for r in received {
        assert_eq!(
            r.seq_no - first.seq_no,
            r.source_seq - first.source_seq,
            "{what}: rewritten sequence does not follow the source"
        );
    }
    assert!(first.seq_no < 65_536, "{what}: must start with ROC 0");
    assert!(
        received.windows(2).all(|w| w[1].time > w[0].time),
        "{what}: timestamps must advance"
    );
}

/// Checks that client `i` got no error and receives exactly the tracks `others` publish,
/// each well forwarded; returns how many tracks that is.
pub fn assert_receives_exactly(net: &Net, i: usize, others: &[usize]) -> usize {
    let c = net.client(i);
    assert!(
        c.error_codes().is_empty(),
        "{}: {:?}",
        c.name,
        c.error_codes()
    );
    let mut expected: Vec<TrackId> = others
        .iter()
        .flat_map(|o| net.client(*o).own_tracks.values().copied())
        .collect();
    expected.sort();
    let mut got: Vec<TrackId> = c.received.keys().copied().collect();
    got.sort();
    assert_eq!(
        got, expected,
        "{} receives exactly the others' tracks",
        c.name
    );
    for (track, received) in &c.received {
        assert_well_forwarded(received, &format!("{} <- {track}", c.name));
    }
    expected.len()
}

/// The layers a subscriber received in the window, each once per run, in the order the
/// server sent them: by sequence number (the packets of a layer left behind that arrive
/// late, resent, are no switch back to it).
pub fn layer_runs(received: &[Received]) -> Vec<u8> {
    let mut in_order = received.to_vec();
    in_order.sort_by_key(|r| r.seq_no);
    let mut runs: Vec<u8> = Vec::new();
    for r in &in_order {
        if runs.last() != Some(&r.layer) {
            runs.push(r.layer);
        }
    }
    runs
}

pub fn between(received: &[Received], from: Instant, to: Instant) -> Vec<Received> {
    received
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .cloned()
        .collect()
}

/// Every switch from one layer to another (or a resumption) lands on a keyframe's first
/// packet, and the subscriber's sequence numbers have no gap beyond what its link lost.
pub fn assert_switches_at_keyframes(received: &[Received], link_losses: u64, what: &str) {
    let mut in_order = received.to_vec();
    in_order.sort_by_key(|r| r.seq_no);
    in_order.dedup_by_key(|r| r.seq_no);
    // Where the link lost the packets before, the keyframe's first may be among them.
    for pair in in_order
        .windows(2)
        .filter(|w| w[1].seq_no == w[0].seq_no + 1)
    {
        if pair[1].layer != pair[0].layer {
            assert!(
                pair[1].keyframe,
                "{what}: switched {} -> {} off a keyframe",
                pair[0].layer, pair[1].layer
            );
        }
    }
    let mut seqs: Vec<u64> = received.iter().map(|r| r.seq_no).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
    let missing = span - seqs.len() as u64;
    assert!(
        missing <= link_losses,
        "{what}: {missing} sequence numbers never arrived, the link lost only {link_losses}"
    );
}

/// Each of `clients` received nothing but the top layer (2) of `track` since `from`.
pub fn assert_on_top_layer(net: &Net, clients: &[usize], track: TrackId, from: Instant) {
    for &i in clients {
        let got = between(&net.client(i).received[&track], from, net.now);
        assert_eq!(
            layer_runs(&got),
            vec![2],
            "{} on the top layer",
            net.client(i).name
        );
    }
}

/// Where one stream, as its subscriber received it, could not be decoded: from the packet
/// before one missing for good (a gap in the subscriber's numbering that no retransmission
/// filled) to the next keyframe, or to `end`. Each as when it began and how long it
/// lasted. (Left out on purpose, a packet leaves no gap: the server numbers over it.)
pub fn undecodable(received: &[Received], end: Instant) -> Vec<(Instant, Duration)> {
    let mut in_order = received.to_vec();
    in_order.sort_by_key(|r| r.seq_no);
    in_order.dedup_by_key(|r| r.seq_no);
    let mut broken: Option<Instant> = None;
    let mut stretches = Vec::new();
    for w in in_order.windows(2) {
        if w[1].keyframe {
            if let Some(at) = broken.take() {
                stretches.push((at, w[1].at.saturating_duration_since(at)));
            }
        } else if broken.is_none() && w[1].seq_no != w[0].seq_no + 1 {
            broken = Some(w[0].at);
        }
    }
    if let Some(at) = broken {
        stretches.push((at, end - at));
    }
    stretches
}
