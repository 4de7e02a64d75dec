//! The estimate of a subscriber without TWCC whose receiver sends REMB (aiortc, older
//! SDKs): one link estimate from the reports of all its m-lines, and a re-probe when
//! the reports stop because its video was paused.
//!
//! A receiver with an estimator per video m-line (aiortc) reports each stream's share:
//! about what that stream brings, at first, and at most half as much again later. The
//! link's estimate is their sum, plus the audio, which no report covers; an m-line
//! that has not reported yet counts at what it is sent, and a paused one at its last
//! report (it sends none while it receives nothing; without it the sum would only
//! ever say what still flows, and a paused video would never come back).

use std::time::{Duration, Instant};

use protocol::{Kind, ParticipantId};
use str0m::media::Mid;
use tracing::debug;

use super::Shard;

/// A report older than this no longer counts; once the latest is, the estimate is
/// raised to resume the paused video (a receiver that gets no video sends no REMB, and
/// its estimate would otherwise stay where it fell).
pub(super) const REMB_STALE: Duration = Duration::from_secs(3);

/// After a re-probe, the next one waits this long: a link that still cannot carry the
/// video is tried every few seconds, not every one. Back to [`REMB_STALE`] once reports
/// have flowed for [`REPROBE_FORGOTTEN`] since.
pub(super) const REMB_STALE_AFTER_REPROBE: Duration = Duration::from_secs(6);

const REPROBE_FORGOTTEN: Duration = Duration::from_secs(30);

/// A re-probe gives at least this many times what the lowest layers of everything the
/// subscriber is shown take.
const REPROBE_HEADROOM: f64 = 1.1;

/// What a subscriber's REMB reports said lately.
#[derive(Debug)]
pub(super) struct RembEstimate {
    /// The latest report of each m-line: its value and when it came.
    reports: Vec<(Mid, u64, Instant)>,
    /// Some report named an m-line that carries no video: the receiver's estimate is
    /// the whole link's, audio included (libwebrtc's REMB names every stream).
    covers_audio: bool,
    /// When the estimate was last raised for lack of reports, and how long a silence
    /// must last for the next.
    reprobed: Option<Instant>,
    wait: Duration,
}

impl Default for RembEstimate {
    fn default() -> Self {
        RembEstimate {
            reports: Vec::new(),
            covers_audio: false,
            reprobed: None,
            wait: REMB_STALE,
        }
    }
}

impl RembEstimate {
    /// One m-line's report at `now` (`audio`: an audio m-line's), given the
    /// subscriber's video m-lines and what each is sent now (`None`: paused); returns
    /// the link's estimate. A receiver whose reports name audio m-lines too (libwebrtc's
    /// REMB names every stream) estimates the whole link: its latest report. Else the
    /// estimate is its video's: the sum over those m-lines of their latest reports, or
    /// what they are sent where they have not reported, where the reports one REMB gave
    /// several m-lines (the same value at the same instant) count once.
    pub(super) fn report(
        &mut self,
        now: Instant,
        mid: Mid,
        bps: u64,
        audio: bool,
        video: &[(Mid, Option<u64>)],
    ) -> u64 {
        if self
            .reprobed
            .is_some_and(|at| now.saturating_duration_since(at) >= REPROBE_FORGOTTEN)
        {
            self.reprobed = None;
            self.wait = REMB_STALE;
        }
        if audio {
            self.covers_audio = true;
        }
        match self.reports.iter_mut().find(|(m, _, _)| *m == mid) {
            Some(r) => *r = (mid, bps, now),
            None => self.reports.push((mid, bps, now)),
        }
        // The m-lines that went.
        self.reports
            .retain(|(m, _, _)| *m == mid || video.iter().any(|(v, _)| v == m));
        if self.covers_audio {
            return bps;
        }
        let mut seen: Vec<(u64, Instant)> = Vec::new();
        let mut sum = 0;
        for (line, sent) in video {
            match self.reports.iter().find(|(m, _, _)| m == line) {
                Some((_, bps, at)) => {
                    if !seen.contains(&(*bps, *at)) {
                        seen.push((*bps, *at));
                        sum += bps;
                    }
                }
                None => sum += sent.unwrap_or(0),
            }
        }
        sum
    }

    /// Whether the estimate is the whole link's (else it is the video's: the audio
    /// comes on top).
    pub(super) fn covers_audio(&self) -> bool {
        self.covers_audio
    }

    /// Whether its receiver has sent REMB.
    pub(super) fn reported(&self) -> bool {
        !self.reports.is_empty() || self.reprobed.is_some()
    }

    /// Whether the estimate should be raised at `now`: reports came once, and none
    /// since the wait (longer after a re-probe) passed.
    fn reprobe(&mut self, now: Instant) -> bool {
        let latest = self.reports.iter().map(|(_, _, at)| *at).max();
        let Some(since) = latest.max(self.reprobed) else {
            return false;
        };
        if now.saturating_duration_since(since) < self.wait {
            return false;
        }
        self.wait = REMB_STALE_AFTER_REPROBE;
        self.reprobed = Some(now);
        self.reports.clear();
        true
    }
}

impl Shard {
    /// A REMB report from participant `id` about its m-line `mid`.
    pub(super) fn on_remb(&mut self, id: ParticipantId, mid: Mid, bps: u64) {
        let now = self.now;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if p.downlink.estimate_is_twcc {
            return;
        }
        let mut video: Vec<(Mid, Option<u64>)> = Vec::new();
        let mut audio = false;
        for (_, s) in p.subscriptions.iter() {
            let Some(t) = self.tracks.get(&s.track_id()) else {
                continue;
            };
            audio |= s.mid() == mid && t.info.kind == Kind::Audio;
            if t.info.kind == Kind::Video {
                let sent = s.current.and_then(|l| t.layers.get(usize::from(l)));
                video.push((s.mid(), sent.map(|l| l.rate.bps().unwrap_or(0))));
            }
        }
        p.downlink.estimate = Some(p.downlink.remb.report(now, mid, bps, audio, &video));
    }

    /// Every choice of layers: a REMB subscriber whose reports stopped has its estimate
    /// raised to what the lowest layers of what it is shown take, so that its paused
    /// video resumes and its receiver reports again.
    pub(super) fn age_remb(&mut self, id: ParticipantId) {
        let now = self.now;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let d = &mut p.downlink;
        if d.estimate_is_twcc || d.estimate.is_none() || !d.remb.reprobe(now) {
            return;
        }
        let raised = (d.lowest_bps as f64 * REPROBE_HEADROOM) as u64;
        if d.estimate.is_some_and(|e| e < raised) {
            debug!(participant = %id, from = ?d.estimate, to = raised, "REMB stale: re-probe");
            d.estimate = Some(raised);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_several_m_lines_make_one_estimate() {
        let mut r = RembEstimate::default();
        let t0 = Instant::now();
        let (a, b, c) = (Mid::from("1"), Mid::from("2"), Mid::from("3"));
        let both = [(a, Some(350_000)), (b, Some(250_000))];
        // One estimator per m-line: each reports its share; one that has not reported
        // yet counts at what it is sent.
        assert_eq!(r.report(t0, a, 300_000, false, &both), 550_000);
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(r.report(t1, b, 200_000, false, &both), 500_000);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(r.report(t2, a, 250_000, false, &both), 450_000);
        assert!(!r.covers_audio());
        // B paused: its last report still counts, however old.
        let paused = [(a, Some(350_000)), (b, None)];
        let t3 = t1 + Duration::from_secs(10);
        assert_eq!(r.report(t3, a, 260_000, false, &paused), 460_000);
        // B gone (its m-line carries no video now): only A, and still the video's.
        assert_eq!(r.report(t3, a, 260_000, false, &paused[..1]), 260_000);
        assert_eq!(r.report(t3, b, 90_000, false, &paused[..1]), 260_000);
        assert!(!r.covers_audio());
        // One REMB naming every m-line, audio's (c) too: the whole link's, its latest
        // value, whatever the m-lines paused since reported.
        let mut l = RembEstimate::default();
        for m in [a, b] {
            l.report(t0, m, 900_000, false, &both);
        }
        assert_eq!(l.report(t0, c, 900_000, true, &both), 900_000);
        assert!(l.covers_audio());
        assert_eq!(l.report(t2, a, 500_000, false, &paused), 500_000);
    }

    #[test]
    fn silence_after_reports_reprobes_with_a_growing_wait() {
        let mut r = RembEstimate::default();
        let t0 = Instant::now();
        assert!(!r.reprobe(t0), "never reported: nothing to re-probe");
        let video = [(Mid::from("1"), Some(90_000))];
        r.report(t0, Mid::from("1"), 100_000, false, &video);
        assert!(!r.reprobe(t0 + Duration::from_secs(2)));
        assert!(r.reprobe(t0 + REMB_STALE));
        // Still silent: the next one waits, and longer.
        let t1 = t0 + REMB_STALE;
        assert!(!r.reprobe(t1 + REMB_STALE));
        assert!(r.reprobe(t1 + REMB_STALE_AFTER_REPROBE));
        // Reports came back and stopped again much later: the short wait again.
        let t2 = t1 + Duration::from_secs(60);
        r.report(t2, Mid::from("1"), 100_000, false, &video);
        assert!(r.reprobe(t2 + REMB_STALE));
    }
}
