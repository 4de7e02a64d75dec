//! The selector: which node a new room goes to. A pure function of the nodes' reports.

use crate::node::Node;

/// Chooses the node for a new room among `nodes`: one that takes rooms (serving, not
/// overloaded), not `exclude`, in `region` if any such node is there, and of those the
/// least loaded. Load is participants plus rooms, plus two for each room placed on it
/// since its last report (`pending`, by node id): reports are up to two seconds old, and a
/// burst of new rooms must not all land on the node that was emptiest then. Ties go to
/// the lowest id, so that every entry node decides alike.
pub fn choose<'a>(
    nodes: &'a [Node],
    region: Option<&str>,
    exclude: Option<&str>,
    pending: impl Fn(&str) -> u32,
) -> Option<&'a Node> {
    let open = |n: &&Node| n.takes_rooms() && Some(n.id.as_str()) != exclude;
    let in_region = |n: &&Node| region.is_none() || n.region.as_deref() == region;
    let local = nodes.iter().filter(open).any(|n| in_region(&n));
    nodes
        .iter()
        .filter(open)
        .filter(|n| !local || in_region(n))
        .min_by(|a, b| {
            let score = |n: &Node| {
                u64::from(n.load.participants)
                    + u64::from(n.load.rooms)
                    + 2 * u64::from(pending(&n.id))
            };
            score(a).cmp(&score(b)).then_with(|| a.id.cmp(&b.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeLoad, NodeState};

    fn node(id: &str, region: Option<&str>, rooms: u32, participants: u32) -> Node {
        Node {
            id: id.into(),
            region: region.map(Into::into),
            url: format!("http://{id}"),
            media: Vec::new(),
            state: NodeState::Serving,
            load: NodeLoad {
                rooms,
                participants,
                ..NodeLoad::default()
            },
            at_ms: 0,
        }
    }

    fn none(_: &str) -> u32 {
        0
    }

    #[test]
    fn the_least_loaded_node_wins_ties_to_the_lowest_id() {
        let nodes = [
            node("c", None, 1, 3),
            node("b", None, 0, 0),
            node("a", None, 0, 0),
        ];
        assert_eq!(choose(&nodes, None, None, none).unwrap().id, "a");
        let nodes = [node("a", None, 2, 10), node("b", None, 1, 2)];
        assert_eq!(choose(&nodes, None, None, none).unwrap().id, "b");
    }

    #[test]
    fn rooms_placed_since_the_last_report_count() {
        let nodes = [node("a", None, 0, 0), node("b", None, 0, 1)];
        let pending = |id: &str| u32::from(id == "a");
        assert_eq!(choose(&nodes, None, None, pending).unwrap().id, "b");
    }

    #[test]
    fn draining_starting_overloaded_and_excluded_nodes_take_nothing() {
        let mut draining = node("a", None, 0, 0);
        draining.state = NodeState::Draining;
        let mut starting = node("b", None, 0, 0);
        starting.state = NodeState::Starting;
        let mut overloaded = node("c", None, 0, 0);
        overloaded.load.overloaded = true;
        let busy = node("d", None, 9, 90);
        let nodes = [draining, starting, overloaded, busy, node("e", None, 0, 0)];
        assert_eq!(choose(&nodes, None, None, none).unwrap().id, "e");
        assert_eq!(choose(&nodes, None, Some("e"), none).unwrap().id, "d");
        assert!(choose(&nodes[..3], None, None, none).is_none());
    }

    #[test]
    fn the_entry_region_comes_first_while_it_has_a_node() {
        let nodes = [node("a", Some("eu"), 5, 50), node("b", Some("us"), 0, 0)];
        assert_eq!(choose(&nodes, Some("eu"), None, none).unwrap().id, "a");
        assert_eq!(choose(&nodes, Some("us"), None, none).unwrap().id, "b");
        // None left in the region: any other.
        assert_eq!(choose(&nodes, Some("eu"), Some("a"), none).unwrap().id, "b");
        assert_eq!(choose(&nodes, Some("ap"), None, none).unwrap().id, "b");
    }
}
