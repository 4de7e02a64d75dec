//! An offer, read already ([`ReadOffer`]): checked against the participant's grants
//! before anything is applied, answered, then its publications and subscriptions applied.

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use protocol::{ErrorCode, LeaveReason, ParticipantId, RequestType, ServerMessage};
use tracing::warn;

use super::Shard;
use super::offer::ReadOffer;

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
    /// Takes a participant's offer, read and checked already ([`ReadOffer::read`]): refuses
    /// what its grants do not allow, answers it, then applies what it publishes and
    /// receives.
    pub fn offer(&mut self, now: Instant, id: ParticipantId, read: ReadOffer) {
        self.advance(now);
        let ReadOffer {
            sdp,
            offer,
            publish,
            subscribe,
            slots,
        } = read;
        let Some(p) = self.participants.get_mut(&id) else {
            return; // Left already; the session is closing.
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
        if let Some(denied) = publish.iter().find(|x| !x.source.is_granted(&p.grants)) {
            let message = format!("token does not grant {}", denied.source.grant_name());
            self.error(id, RequestType::Offer, ErrorCode::Forbidden, message);
            return;
        }
        // str0m asserts on some offers instead of refusing them (a payload type claimed
        // twice, found by fuzzing): a panic here would end the shard's thread and every
        // room on it. The participant's session is then in an unknown state: it goes.
        let accepted =
            panic::catch_unwind(AssertUnwindSafe(|| p.rtc.sdp_api().accept_offer(offer)));
        let answer = match accepted {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.error(
                    id,
                    RequestType::Offer,
                    ErrorCode::BadSdp,
                    format!("cannot accept offer: {e}"),
                );
                return;
            }
            Err(_) => {
                warn!(participant = %id, "accepting its offer panicked in str0m; removing");
                self.error(
                    id,
                    RequestType::Offer,
                    ErrorCode::BadSdp,
                    "cannot accept offer",
                );
                self.remove(now, id, LeaveReason::Error);
                return;
            }
        };
        // An offer gives its media path the whole timeout to come up.
        let by = now + self.config.participant_timeout;
        p.media_deadline = Some(p.media_deadline.map_or(by, |d| d.max(by)));
        let on_slots = !slots.is_empty();
        let published = self.apply_publish(id, &publish);
        if let Some(p) = self.participants.get_mut(&id) {
            p.slot_mids = slots;
            if p.slot_mids.is_empty() {
                p.slots_sent.clear();
            }
        }
        self.signal(
            id,
            ServerMessage::Answer {
                sdp: follow_offer_codec_order(&sdp, &answer.to_sdp_string()),
                published,
            },
        );
        if on_slots {
            // The slots are filled as the choice of what it receives is made.
            self.choose_for(id);
            self.request_awaited_keyframes();
        } else {
            self.apply_subscribe(id, &subscribe);
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
