//! The offer flood (`--offer-flood`): participants of another room who do nothing but send
//! the largest offers the protocol allows (256 m-lines, four published tracks, written as
//! Chromium writes its m-lines), each as fast as its budget lets it, while the scenario's
//! own room measures what that costs it. They never connect media: the server removes
//! each after its media timeout, and it joins again.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::ws::{self, Ws, next};

/// M-lines in each offer: the protocol's bound.
const M_LINES: usize = protocol::offer::MAX_MEDIA_LINES;

/// What one flooding participant managed.
#[derive(Debug, Default, Clone)]
pub struct FloodStats {
    /// Offers sent.
    pub sent: u64,
    /// Offers the server answered.
    pub answered: u64,
    /// Offers refused (`rate_limited`, `server_busy`) or answered with another error.
    pub refused: u64,
    /// Bytes of SDP sent.
    pub bytes: u64,
    pub error: Option<String>,
}

/// Floods until `until` with the offers of a participant that joins with `token`.
pub async fn run(ws_url: String, token: String, e2ee: bool, until: Instant) -> FloodStats {
    let sdp = offer_sdp();
    let mut stats = FloodStats::default();
    while Instant::now() < until {
        let session = session(&ws_url, &token, e2ee, &sdp, until, &mut stats);
        if let Err(e) = tokio::time::timeout_at(until.into(), session)
            .await
            .unwrap_or(Ok(()))
        {
            stats.error = Some(format!("{e:#}"));
            break;
        }
    }
    stats
}

/// One socket's life: join, then offers, one after the other's answer, until the server
/// removes it (media timeout) or `until`.
async fn session(
    ws_url: &str,
    token: &str,
    e2ee: bool,
    sdp: &str,
    until: Instant,
    stats: &mut FloodStats,
) -> anyhow::Result<()> {
    let join = json!({"type": "join", "token": token, "e2ee": e2ee});
    let mut ws = ws::join(ws_url, &join).await?.ws;
    let publish: Vec<Value> = ["microphone", "camera", "screen", "camera"]
        .iter()
        .enumerate()
        .map(|(mid, source)| json!({"mid": mid.to_string(), "source": source}))
        .collect();
    let offer = json!({"type": "offer", "sdp": sdp, "publish": publish}).to_string();
    while Instant::now() < until {
        send_text(&mut ws, &offer).await?;
        stats.sent += 1;
        stats.bytes += sdp.len() as u64;
        // Its answer or error; other messages (who joined, tracks) pass by.
        loop {
            let Some(m) = next(&mut ws).await? else {
                return Ok(()); // Removed: joins again.
            };
            match m["type"].as_str() {
                Some("answer") => stats.answered += 1,
                Some("error") if m["request"] == "offer" => {
                    stats.refused += 1;
                    if m["code"] == "rate_limited" {
                        // The budget refills at 5 offers a second.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Some("left") => return Ok(()),
                _ => continue,
            }
            break;
        }
    }
    Ok(())
}

/// Sends text as it is (the offer, written once for all).
async fn send_text(ws: &mut Ws, text: &str) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// An offer of [`M_LINES`] m-lines as Chromium writes them (every codec, its RTX and
/// feedback, on each video m-line): four sendonly (two audio, then two video), the rest
/// recvonly, alternately audio and video. About 560 KB.
fn offer_sdp() -> String {
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE",
    );
    for i in 0..M_LINES {
        s.push_str(&format!(" {i}"));
    }
    s.push_str("\r\na=msid-semantic: WMS\r\n");
    // Mids 0 to 3 are published: microphone, camera, screen, camera.
    let kinds = ["audio", "video", "video", "video"];
    for i in 0..M_LINES {
        let (video, dir) = match kinds.get(i) {
            Some(k) => (*k == "video", "sendonly"),
            None => (i % 2 == 1, "recvonly"),
        };
        m_line(&mut s, i, video, dir);
    }
    s
}

fn m_line(s: &mut String, mid: usize, video: bool, dir: &str) {
    if video {
        s.push_str("m=video 9 UDP/TLS/RTP/SAVPF");
        for pt in 96..122 {
            s.push_str(&format!(" {pt}"));
        }
        s.push_str("\r\n");
    } else {
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n");
    }
    s.push_str(
        "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:fLoD\r\n\
         a=ice-pwd:floodfloodfloodfloodfloo\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:\
         1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\n",
    );
    s.push_str(&format!("a=mid:{mid}\r\n"));
    for (id, uri) in [
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    ]
    .iter()
    .enumerate()
    {
        s.push_str(&format!("a=extmap:{} {uri}\r\n", id + 1));
    }
    s.push_str(&format!("a={dir}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n"));
    if !video {
        s.push_str(
            "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
             a=fmtp:63 111/111\r\n",
        );
        return;
    }
    for (i, pt) in (96..122).step_by(2).enumerate() {
        let codec = ["VP8", "VP9", "H264", "AV1"][i % 4];
        s.push_str(&format!("a=rtpmap:{pt} {codec}/90000\r\n"));
        for fb in ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"] {
            s.push_str(&format!("a=rtcp-fb:{pt} {fb}\r\n"));
        }
        if codec == "H264" {
            s.push_str(&format!(
                "a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;\
                 profile-level-id=42e01f\r\n"
            ));
        }
        let rtx = pt + 1;
        s.push_str(&format!(
            "a=rtpmap:{rtx} rtx/90000\r\na=fmtp:{rtx} apt={pt}\r\n"
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    #[test]
    fn the_flood_offer_is_at_the_protocols_bounds_and_parses() {
        let sdp = offer_sdp();
        let publish: Vec<protocol::Publish> = serde_json::from_value(json!([
            {"mid": "0", "source": "microphone"},
            {"mid": "1", "source": "camera"},
            {"mid": "2", "source": "screen"},
            {"mid": "3", "source": "camera"},
        ]))
        .unwrap();
        assert_eq!(
            sdp.matches("\r\nm=").count(),
            protocol::offer::MAX_MEDIA_LINES
        );
        assert!(protocol::offer::check(&sdp, &publish, &[]).is_ok());
        let read = sfu_core::shard::ReadOffer::read(sdp, publish, Vec::new(), Vec::new());
        assert!(read.is_ok(), "{read:?}");
    }
}
