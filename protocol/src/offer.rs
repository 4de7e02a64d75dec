//! What one `offer` may hold: bounds on its m-lines and published tracks, checked where
//! the message is parsed, before the media plane (which parses the SDP on the thread that
//! forwards media) sees it.
//!
//! The bounds come from the largest call the server hosts: in a 70-person room without
//! slots, a client receives up to 69 microphones, cameras and screens (207 m-lines) and
//! sends its own three. Larger rooms receive on slots (at most 64 m-lines).

use crate::error::{ErrorCode, ErrorMessage};
use crate::message::{Publish, Subscribe};

/// Most m-lines (`m=` lines) in an offer's SDP.
pub const MAX_MEDIA_LINES: usize = 256;

/// Most tracks one offer may publish: a microphone, a camera, a screen, and a screen's
/// audio.
pub const MAX_PUBLISH: usize = 4;

/// Checks an offer against the bounds: `bad_request` naming the one it is over.
pub fn check(sdp: &str, publish: &[Publish], subscribe: &[Subscribe]) -> Result<(), ErrorMessage> {
    let over = |what: String| Err(ErrorMessage::new(ErrorCode::BadRequest, what));
    if publish.len() > MAX_PUBLISH {
        return over(format!(
            "an offer publishes at most {MAX_PUBLISH} tracks, not {}",
            publish.len()
        ));
    }
    if subscribe.len() > MAX_MEDIA_LINES {
        return over(format!(
            "an offer subscribes at most {MAX_MEDIA_LINES} tracks, not {}",
            subscribe.len()
        ));
    }
    let lines = media_lines(sdp);
    if lines > MAX_MEDIA_LINES {
        return over(format!(
            "an offer holds at most {MAX_MEDIA_LINES} m-lines, not {lines} (larger calls \
             receive on slots)"
        ));
    }
    Ok(())
}

/// How many m-lines an SDP holds: lines that start with `m=`.
fn media_lines(sdp: &str) -> usize {
    sdp.split('\n').filter(|l| l.starts_with("m=")).count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;
    use crate::message::Source;

    fn sdp(m_lines: usize) -> String {
        let mut s = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
        for i in 0..m_lines {
            s.push_str(&format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n"));
        }
        s
    }

    fn publish(n: usize) -> Vec<Publish> {
        (0..n)
            .map(|i| Publish {
                mid: i.to_string(),
                source: Source::Microphone,
                layers: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn an_offer_at_the_bounds_passes_and_one_over_them_does_not() {
        assert_eq!(media_lines(&sdp(3)), 3);
        assert!(check(&sdp(MAX_MEDIA_LINES), &publish(MAX_PUBLISH), &[]).is_ok());
        let e = check(&sdp(MAX_MEDIA_LINES + 1), &[], &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("257"), "{}", e.message);
        let e = check(&sdp(1), &publish(MAX_PUBLISH + 1), &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        // "m=" inside another line is not an m-line.
        assert_eq!(media_lines("v=0\r\na=x:m=audio\r\nm=video 9 X 96\r\n"), 1);
    }
}
