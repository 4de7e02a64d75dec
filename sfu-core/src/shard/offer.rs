//! An offer read and checked before the shard takes it: its SDP parsed, and what it
//! publishes and receives on slots checked against its m-lines, with nothing that depends
//! on the participant (grants, its `Rtc`).
//!
//! Parsing the largest offer the protocol allows (256 m-lines, about half a megabyte of
//! SDP) takes tens of milliseconds, longer than a media packet may wait. The driver reads
//! offers on a thread of its own ([`ReadOffer::read`]) and hands the shard only the
//! result ([`Shard::offer`](super::Shard)); the sans-IO tests read them in
//! [`Shard::request`](super::Shard::request).

use protocol::{ErrorCode, ErrorMessage, Kind, MAX_LAYERS, Publish, RequestType, Subscribe};
use str0m::change::SdpOffer;
use str0m::media::Mid;

/// Most slot m-lines one offer may list: a grid of 25 videos, the screens, the loudest
/// microphones and the pinned ones fit with room to spare.
pub const MAX_SLOTS: usize = 64;

/// An `offer` request, read: its parsed SDP and what it asks, checked against each other.
#[derive(Debug)]
pub struct ReadOffer {
    /// The SDP as the client wrote it (the answer follows its codec order).
    pub(super) sdp: String,
    pub(super) offer: SdpOffer,
    pub(super) publish: Vec<Publish>,
    pub(super) subscribe: Vec<Subscribe>,
    /// The slot m-lines and their kinds.
    pub(super) slots: Vec<(Mid, Kind)>,
}

impl ReadOffer {
    /// Reads an `offer` request: `bad_request` when what it lists does not fit its SDP or
    /// the protocol, `bad_sdp` when the SDP does not parse.
    pub fn read(
        sdp: String,
        publish: Vec<Publish>,
        subscribe: Vec<Subscribe>,
        slots: Vec<String>,
    ) -> Result<ReadOffer, ErrorMessage> {
        let refuse = |code, message: String| {
            Err(ErrorMessage::new(code, message).answering(RequestType::Offer))
        };
        if !slots.is_empty() && !subscribe.is_empty() {
            return refuse(
                ErrorCode::BadRequest,
                "an offer lists subscribe or slots, not both".into(),
            );
        }
        if slots.len() > MAX_SLOTS {
            return refuse(ErrorCode::BadRequest, format!("at most {MAX_SLOTS} slots"));
        }
        let mut mids: Vec<&str> = publish
            .iter()
            .map(|x| x.mid.as_str())
            .chain(subscribe.iter().map(|x| x.mid.as_str()))
            .chain(slots.iter().map(String::as_str))
            .collect();
        mids.sort_unstable();
        if mids.windows(2).any(|w| w[0] == w[1]) {
            return refuse(ErrorCode::BadRequest, "a mid is listed twice".into());
        }
        let offer = match SdpOffer::from_sdp_string(&sdp) {
            Ok(offer) => offer,
            Err(e) => return refuse(ErrorCode::BadSdp, format!("cannot parse offer: {e}")),
        };
        if let Err(message) = check_publish_kinds(&offer, &sdp, &publish) {
            return refuse(ErrorCode::BadRequest, message);
        }
        let slots = match slot_kinds(&offer, &sdp, &slots) {
            Ok(s) => s,
            Err(message) => return refuse(ErrorCode::BadRequest, message),
        };
        Ok(ReadOffer {
            sdp,
            offer,
            publish,
            subscribe,
            slots,
        })
    }
}

/// The mids of an SDP's BUNDLE group.
fn bundled_mids(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=group:BUNDLE "))
        .flat_map(|l| l.split(' '))
        .collect()
}

/// Checks, before anything is applied, that every published mid is an m-line of the offer,
/// of its source's kind, on which the client sends. `sdp` is the offer's text, for its
/// BUNDLE group: a port-0 m-line in the group is bundle-only (GStreamer's webrtcbin offers
/// those with max-bundle), not rejected.
fn check_publish_kinds(offer: &SdpOffer, sdp: &str, publish: &[Publish]) -> Result<(), String> {
    let bundled = bundled_mids(sdp);
    for x in publish {
        let line = offer
            .media_lines
            .iter()
            .find(|m| m.mid().to_string() == x.mid);
        let Some(line) = line else {
            return Err(format!("mid {:?} is not in the offer", x.mid));
        };
        // str0m's media type is not nameable outside the crate; its Debug form is stable.
        let kind = match format!("{:?}", line.typ).as_str() {
            "Audio" => Some(Kind::Audio),
            "Video" => Some(Kind::Video),
            _ => None,
        };
        if kind != Some(x.source.kind()) {
            return Err(format!(
                "mid {:?} is a {:?} m-line, not {:?} as {:?} needs",
                x.mid,
                line.typ,
                x.source.kind(),
                x.source
            ));
        }
        if !x.layers.is_empty() {
            let rids = line.rids();
            if x.layers.len() > MAX_LAYERS || x.source.kind() != Kind::Video {
                return Err(format!(
                    "mid {:?}: at most {MAX_LAYERS} layers, and only for video",
                    x.mid
                ));
            }
            for (i, layer) in x.layers.iter().enumerate() {
                if x.layers[..i].contains(layer) || !rids.iter().any(|r| **r == **layer) {
                    return Err(format!(
                        "mid {:?}: layer {layer:?} is not one a=rid of the m-line, once",
                        x.mid
                    ));
                }
            }
        }
        let rejected = line.disabled && !bundled.contains(&x.mid.as_str());
        if rejected || !line.direction().is_sending() {
            return Err(format!(
                "mid {:?} is {} in the offer: the client does not send on it",
                x.mid,
                if rejected {
                    "rejected".to_string()
                } else {
                    line.direction().to_string()
                }
            ));
        }
    }
    Ok(())
}

/// The kind of each slot m-line (`offer.slots`), checked before anything is applied: an
/// m-line of the offer, audio or video, on which the client receives.
fn slot_kinds(offer: &SdpOffer, sdp: &str, slots: &[String]) -> Result<Vec<(Mid, Kind)>, String> {
    let bundled = bundled_mids(sdp);
    let mut kinds = Vec::with_capacity(slots.len());
    for mid in slots {
        let line = offer
            .media_lines
            .iter()
            .find(|m| m.mid().to_string() == *mid)
            .ok_or_else(|| format!("slot {mid:?} is not in the offer"))?;
        // str0m's media type is not nameable outside the crate; its Debug form is stable.
        let kind = match format!("{:?}", line.typ).as_str() {
            "Audio" => Kind::Audio,
            "Video" => Kind::Video,
            other => return Err(format!("slot {mid:?} is a {other} m-line")),
        };
        // A port-0 m-line in the BUNDLE group is bundle-only, not rejected.
        let rejected = line.disabled && !bundled.contains(&mid.as_str());
        if rejected || !line.direction().is_receiving() {
            return Err(format!(
                "slot {mid:?} is {} in the offer: the client does not receive on it",
                if rejected {
                    "rejected".to_string()
                } else {
                    line.direction().to_string()
                }
            ));
        }
        kinds.push((Mid::from(mid.as_str()), kind));
    }
    Ok(kinds)
}
