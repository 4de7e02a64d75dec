//! The scan of an offer for what WHIP and WHEP need: its m-lines, their directions, mids
//! and simulcast layers, and what a WHIP offer publishes.

use protocol::{Kind, Publish, Source};
use serde::Deserialize;

/// One m-line of an offer, as far as WHIP and WHEP need it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MLine {
    pub(super) kind: Option<Kind>,
    pub(super) mid: Option<String>,
    pub(super) sends: bool,
    pub(super) receives: bool,
    /// `a=rid:… send` in the order of `a=simulcast:send` (else of the `a=rid` lines).
    pub(super) rids: Vec<String>,
}

/// The m-lines of an offer and its ICE username fragment. Only a scan of the attributes
/// that choose the tracks: the media plane parses the offer in full.
pub(super) fn scan_offer(sdp: &str) -> (Vec<MLine>, Option<String>) {
    let mut lines: Vec<MLine> = Vec::new();
    let mut session_sends = true;
    let mut session_receives = true;
    let mut ufrag = None;
    let mut simulcast: Vec<Option<Vec<String>>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = match rest.split(' ').next() {
                Some("audio") => Some(Kind::Audio),
                Some("video") => Some(Kind::Video),
                _ => None,
            };
            lines.push(MLine {
                kind,
                mid: None,
                sends: session_sends,
                receives: session_receives,
                rids: Vec::new(),
            });
            simulcast.push(None);
            continue;
        }
        let Some(attribute) = line.strip_prefix("a=") else {
            continue;
        };
        let direction = match attribute {
            "sendrecv" => Some((true, true)),
            "sendonly" => Some((true, false)),
            "recvonly" => Some((false, true)),
            "inactive" => Some((false, false)),
            _ => None,
        };
        let Some(m) = lines.last_mut() else {
            if let Some((s, r)) = direction {
                (session_sends, session_receives) = (s, r);
            }
            if let Some(u) = attribute.strip_prefix("ice-ufrag:") {
                ufrag = Some(u.to_owned());
            }
            continue;
        };
        if let Some((s, r)) = direction {
            (m.sends, m.receives) = (s, r);
        } else if let Some(mid) = attribute.strip_prefix("mid:") {
            m.mid = Some(mid.to_owned());
        } else if let Some(u) = attribute.strip_prefix("ice-ufrag:") {
            ufrag.get_or_insert_with(|| u.to_owned());
        } else if let Some(rid) = attribute.strip_prefix("rid:") {
            let mut words = rid.split(' ');
            if let (Some(id), Some("send")) = (words.next(), words.next()) {
                m.rids.push(id.to_owned());
            }
        } else if let Some(rest) = attribute.strip_prefix("simulcast:send ") {
            // `a=simulcast:send q;h;f`, alternatives after commas, paused ones with `~`.
            let order = rest
                .split(' ')
                .next()
                .unwrap_or_default()
                .split(';')
                .filter_map(|alt| alt.split(',').next())
                .map(|id| id.trim_start_matches('~').to_owned())
                .collect();
            if let Some(last) = simulcast.last_mut() {
                *last = Some(order);
            }
        }
    }
    for (m, order) in lines.iter_mut().zip(simulcast) {
        if let Some(order) = order {
            m.rids.sort_by_key(|r| order.iter().position(|o| o == r));
        }
    }
    (lines, ufrag)
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum VideoSource {
    Screen,
    Camera,
}

/// What a WHIP offer publishes: its sending m-lines with their sources.
pub(super) fn whip_publish(
    lines: &[MLine],
    first_video: VideoSource,
) -> Result<Vec<Publish>, String> {
    let (first, second) = match first_video {
        VideoSource::Screen => (Source::Screen, Source::Camera),
        VideoSource::Camera => (Source::Camera, Source::Screen),
    };
    let mut sources = [Source::Microphone].into_iter();
    let mut video = [first, second].into_iter();
    let mut publish = Vec::new();
    for m in lines.iter().filter(|m| m.sends) {
        let Some(mid) = m.mid.clone() else {
            return Err("every m-line needs an a=mid (WHIP bundles them)".into());
        };
        let source = match m.kind {
            Some(Kind::Audio) => sources.next(),
            Some(Kind::Video) => video.next(),
            None => continue,
        };
        let Some(source) = source else {
            return Err("a WHIP offer sends at most one audio and two video m-lines".into());
        };
        publish.push(Publish {
            mid,
            source,
            layers: m.rids.clone(),
        });
    }
    if publish.is_empty() {
        return Err("the offer sends no audio or video".into());
    }
    Ok(publish)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An offer that sends audio and simulcast video; the tests in watch.rs use it too.
    pub(crate) const WHIP_OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=ice-ufrag:abcd\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rid:f send\r\n\
a=rid:q send\r\n\
a=rid:h send\r\n\
a=simulcast:send q;h;~f\r\n";

    #[test]
    fn an_offer_is_scanned_for_mids_directions_rids_and_ufrag() {
        let (lines, ufrag) = scan_offer(WHIP_OFFER);
        assert_eq!(ufrag.as_deref(), Some("abcd"));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].kind, Some(Kind::Audio));
        assert_eq!(lines[0].mid.as_deref(), Some("0"));
        assert!(lines[0].sends && !lines[0].receives);
        assert_eq!(
            lines[1].rids,
            ["q", "h", "f"],
            "in the order of a=simulcast"
        );
    }

    #[test]
    fn whip_publishes_the_microphone_and_the_screen_or_camera() {
        let (lines, _) = scan_offer(WHIP_OFFER);
        let publish = whip_publish(&lines, VideoSource::Screen).unwrap();
        assert_eq!(publish[0].source, Source::Microphone);
        assert_eq!(publish[1].source, Source::Screen);
        assert_eq!(publish[1].layers, ["q", "h", "f"]);
        let publish = whip_publish(&lines, VideoSource::Camera).unwrap();
        assert_eq!(publish[1].source, Source::Camera);

        let two_audio = WHIP_OFFER.replace("m=video", "m=audio");
        let (lines, _) = scan_offer(&two_audio);
        assert!(whip_publish(&lines, VideoSource::Screen).is_err());
        let no_mid = WHIP_OFFER.replace("a=mid:1\r\n", "");
        let (lines, _) = scan_offer(&no_mid);
        assert!(whip_publish(&lines, VideoSource::Screen).is_err());
        let receive_only = WHIP_OFFER.replace("sendonly", "recvonly");
        let (lines, _) = scan_offer(&receive_only);
        assert!(whip_publish(&lines, VideoSource::Screen).is_err());
    }
}
