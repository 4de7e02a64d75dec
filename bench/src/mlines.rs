//! A simulated client's m-lines: what it publishes (one sendonly m-line per source, its
//! simulcast layers), what it receives (one recvonly m-line per track, or slots), and the
//! `offer` message that carries them.

use std::collections::HashMap;

use serde_json::{Value, json};
use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};

/// One of our published m-lines, as the offer announces it.
pub struct Publication {
    pub mid: Mid,
    pub source: &'static str,
    pub kind: MediaKind,
    /// Simulcast rids, lowest first; empty for a single stream.
    pub layers: Vec<&'static str>,
}

/// The client's m-lines: what it publishes, and the track each receiving one carries.
pub struct MLines<'a> {
    pub publish: &'a mut Vec<Publication>,
    pub subscribed: &'a mut HashMap<u64, Mid>,
    /// Slot m-lines, added at the first offer when `want_slots` (audio, video) says so.
    pub slots: &'a mut Vec<Mid>,
    pub want_slots: Option<(usize, usize)>,
}

impl MLines<'_> {
    /// Adds sendonly m-lines for `new_publish` (kind, source, simulcast rids) and a
    /// recvonly one per track of `announced` (emptied), then makes the offer: its `offer`
    /// message and pending state, or `None` when nothing changed.
    pub fn offer(
        &mut self,
        rtc: &mut Rtc,
        new_publish: &[(MediaKind, &'static str, Vec<&'static str>)],
        announced: &mut Vec<(u64, MediaKind)>,
    ) -> Option<(Value, SdpPendingOffer)> {
        let mut api = rtc.sdp_api();
        for (kind, source, layers) in new_publish {
            let simulcast = (!layers.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in layers {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(*kind, Direction::SendOnly, None, None, simulcast);
            self.publish.push(Publication {
                mid,
                source,
                kind: *kind,
                layers: layers.clone(),
            });
        }
        if let Some((audio, video)) = self.want_slots {
            announced.clear();
            if self.slots.is_empty() {
                for (kind, n) in [(MediaKind::Audio, audio), (MediaKind::Video, video)] {
                    for _ in 0..n {
                        let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                        self.slots.push(mid);
                    }
                }
            }
        }
        for (id, kind) in announced.drain(..) {
            let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
            self.subscribed.insert(id, mid);
        }
        let (offer, pending) = api.apply()?;
        let mut message = offer_message(offer.to_sdp_string(), self.publish, self.subscribed);
        if !self.slots.is_empty() {
            message["slots"] = json!(self.slots.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        }
        Some((message, pending))
    }
}

fn offer_message(sdp: String, publish: &[Publication], subscribed: &HashMap<u64, Mid>) -> Value {
    let publish: Vec<Value> = publish
        .iter()
        .map(|p| {
            let mut entry = json!({"mid": p.mid.to_string(), "source": p.source});
            if !p.layers.is_empty() {
                entry["layers"] = json!(p.layers);
            }
            entry
        })
        .collect();
    json!({
        "type": "offer",
        "sdp": sdp,
        "publish": publish,
        "subscribe": subscribed.iter().map(|(id, mid)| json!({"mid": mid.to_string(), "track_id": id})).collect::<Vec<_>>(),
    })
}
