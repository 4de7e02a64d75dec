//! An offer: checked before anything is applied (grants, mids, kinds, slots), answered,
//! then its publications and subscriptions applied.

use std::time::Instant;

use protocol::{
    ErrorCode, Kind, MAX_LAYERS, ParticipantId, Publish, RequestType, ServerMessage, Subscribe,
};
use str0m::change::SdpOffer;
use str0m::media::Mid;

use super::Shard;

/// The mids of an SDP's BUNDLE group.
pub(super) fn bundled_mids(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=group:BUNDLE "))
        .flat_map(|l| l.split(' '))
        .collect()
}

/// Checks, before anything is applied, that every published mid is an m-line of the offer,
/// of its source's kind, on which the client sends. `sdp` is the offer's text, for its
/// BUNDLE group: a port-0 m-line in the group is bundle-only (GStreamer's webrtcbin offers
/// those with max-bundle), not rejected.
pub(super) fn check_publish_kinds(
    offer: &SdpOffer,
    sdp: &str,
    publish: &[Publish],
) -> Result<(), String> {
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

/// Most slot m-lines one offer may list: a grid of 25 videos, the screens, the loudest
/// microphones and the pinned ones fit with room to spare.
pub(super) const MAX_SLOTS: usize = 64;

/// The kind of each slot m-line (`offer.slots`), checked before anything is applied: an
/// m-line of the offer, audio or video, on which the client receives.
pub(super) fn slot_kinds(
    offer: &SdpOffer,
    sdp: &str,
    slots: &[String],
) -> Result<Vec<(Mid, Kind)>, String> {
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

/// The answer with each m-line's payload types in the order the offer gave them. str0m
/// answers in its own preference order, but a sender encodes with the first codec of the
/// answer: a client that put VP9 or AV1 first for its SVC camera
/// (`setCodecPreferences`) must get it first back. Video m-lines only. M-lines pair up by position (an
/// answer has the offer's m-lines, in order); payload types the offer did not list, and
/// anything unexpected, stay as they were.
pub fn follow_offer_codec_order(offer: &str, answer: &str) -> String {
    let formats = |line: &str| -> Option<Vec<String>> {
        let rest = line.strip_prefix("m=")?;
        Some(
            rest.split_whitespace()
                .skip(3)
                .map(str::to_string)
                .collect(),
        )
    };
    let offered: Vec<Vec<String>> = offer.lines().filter_map(formats).collect();
    let mut index = 0;
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive("\r\n") {
        let bare = line.trim_end_matches(['\r', '\n']);
        if let Some(mut pts) = formats(bare) {
            // (Audio keeps str0m's order, which puts RED before its codec as libwebrtc
            // needs.)
            if let Some(order) = offered.get(index).filter(|_| bare.starts_with("m=video")) {
                pts.sort_by_key(|pt| order.iter().position(|o| o == pt).unwrap_or(usize::MAX));
                let head: Vec<&str> = bare.split_whitespace().take(3).collect();
                out.push_str(&head.join(" "));
                for pt in &pts {
                    out.push(' ');
                    out.push_str(pt);
                }
                out.push_str(&line[bare.len()..]);
                index += 1;
                continue;
            }
            index += 1;
        }
        out.push_str(line);
    }
    out
}

impl Shard {
    pub(super) fn offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        sdp: &str,
        publish: Vec<Publish>,
        subscribe: Vec<Subscribe>,
        slots: Vec<String>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        // Refuse what is not granted before applying anything.
        if !p.grants.subscribe && (!subscribe.is_empty() || !slots.is_empty()) {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::Forbidden,
                "token does not grant subscribe",
            );
            return;
        }
        if !slots.is_empty() && !subscribe.is_empty() {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::BadRequest,
                "an offer lists subscribe or slots, not both",
            );
            return;
        }
        if slots.len() > MAX_SLOTS {
            let message = format!("at most {MAX_SLOTS} slots");
            self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
            return;
        }
        if let Some(denied) = publish.iter().find(|x| !x.source.is_granted(&p.grants)) {
            let message = format!("token does not grant {}", denied.source.grant_name());
            self.error(id, RequestType::Offer, ErrorCode::Forbidden, message);
            return;
        }
        let mut mids: Vec<&str> = publish
            .iter()
            .map(|x| x.mid.as_str())
            .chain(subscribe.iter().map(|x| x.mid.as_str()))
            .chain(slots.iter().map(String::as_str))
            .collect();
        mids.sort_unstable();
        if mids.windows(2).any(|w| w[0] == w[1]) {
            self.error(
                id,
                RequestType::Offer,
                ErrorCode::BadRequest,
                "a mid is listed twice",
            );
            return;
        }
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(offer) => offer,
            Err(e) => {
                self.error(
                    id,
                    RequestType::Offer,
                    ErrorCode::BadSdp,
                    format!("cannot parse offer: {e}"),
                );
                return;
            }
        };
        if let Err(message) = check_publish_kinds(&offer, sdp, &publish) {
            self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
            return;
        }
        let slot_mids = match slot_kinds(&offer, sdp, &slots) {
            Ok(s) => s,
            Err(message) => {
                self.error(id, RequestType::Offer, ErrorCode::BadRequest, message);
                return;
            }
        };
        let answer = match p.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => answer,
            Err(e) => {
                self.error(
                    id,
                    RequestType::Offer,
                    ErrorCode::BadSdp,
                    format!("cannot accept offer: {e}"),
                );
                return;
            }
        };
        if p.media_deadline.is_none() {
            p.media_deadline = Some(now + self.config.participant_timeout);
        }
        let published = self.apply_publish(id, &publish);
        if let Some(p) = self.participants.get_mut(&id) {
            p.slot_mids = slot_mids;
            if p.slot_mids.is_empty() {
                p.slots_sent.clear();
            }
        }
        self.signal(
            id,
            ServerMessage::Answer {
                sdp: follow_offer_codec_order(sdp, &answer.to_sdp_string()),
                published,
            },
        );
        if slots.is_empty() {
            self.apply_subscribe(id, &subscribe);
        } else {
            // The slots are filled as the choice of what it receives is made.
            self.choose_for(id);
            self.request_awaited_keyframes();
        }
        self.mark_dirty(id);
    }
}

#[cfg(test)]
mod tests {
    use super::follow_offer_codec_order;

    #[test]
    fn the_answer_keeps_the_offers_codec_order_per_m_line() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 45\r\na=mid:1\r\n";
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 45 127\r\na=mid:1\r\n";
        assert_eq!(
            follow_offer_codec_order(offer, answer),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 45 127\r\na=mid:1\r\n"
        );
        // An answer with more m-lines than the offer keeps the extra ones as they are.
        let extra = format!("{answer}m=video 9 UDP/TLS/RTP/SAVPF 96 98\r\n");
        assert!(follow_offer_codec_order(offer, &extra).ends_with("SAVPF 96 98\r\n"));
    }
}
