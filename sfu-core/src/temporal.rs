//! Temporal layers left out of a simulcast layer for a subscriber whose link cannot
//! carry the whole of it (its floor video's lowest layer): fewer pictures a second, none
//! of them broken. Which layers fit ([`cap_for`]) and which pictures go
//! ([`TemporalCap`]): a picture goes only when everything it references went, told by
//! the dependency descriptor's references where it comes (Chromium sends it for VP8 where
//! it is negotiated; its end-to-end encrypted VP8 names no temporal layer in the payload
//! descriptor), else by the VP8 payload descriptor's layer sync bits.

use crate::recent::Recent;
use crate::svc::Refs;
use crate::vp8::Temporal;

/// Frames left out that are remembered, to leave out those that reference them.
const LEFT_OUT: usize = 16;

/// Pictures whose fate is remembered, so that every packet of one shares it, late
/// ones too (reordered, or repaired upstream) while the cap changed in between.
const FATES: usize = 8;

/// Where a packet's picture sits among its stream's temporal layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    /// From the dependency descriptor: its frame number, its temporal layer and what it
    /// references (`None`: not told).
    Frame {
        frame: u16,
        temporal: u8,
        refs: Option<Refs>,
    },
    /// From the VP8 payload descriptor.
    Vp8(Temporal),
}

impl Picture {
    pub fn temporal(&self) -> u8 {
        match self {
            Picture::Frame { temporal, .. } => *temporal,
            Picture::Vp8(t) => t.tid,
        }
    }
}

/// The highest temporal layer VP8 can name; as a cap, every picture goes (whatever layer
/// a dependency descriptor names).
pub const ALL_TEMPORAL: u8 = 3;

/// Which temporal layers a subscription forwards: all, or up to a cap chosen for a
/// link that cannot carry the whole layer (fewer pictures a second, none of them
/// broken). Going down takes effect at the next picture; going up, at the first picture
/// whose references all went (by the dependency descriptor), or one layer at a time at
/// a picture that syncs it (by the VP8 payload descriptor); a keyframe starts all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalCap {
    /// The highest layer to forward ([`ALL_TEMPORAL`]: all).
    pub target: u8,
    /// The highest forwarded now (by the VP8 payload descriptor).
    current: u8,
    /// By frame references: frames left out lately, oldest first.
    left_out: Recent<LEFT_OUT>,
    /// The latest pictures' fates, by RTP timestamp.
    fates: [Option<(u32, bool)>; FATES],
    fates_at: u8,
}

impl Default for TemporalCap {
    fn default() -> Self {
        TemporalCap {
            target: ALL_TEMPORAL,
            current: ALL_TEMPORAL,
            left_out: Recent::default(),
            fates: [None; FATES],
            fates_at: 0,
        }
    }
}

impl TemporalCap {
    /// Whether a packet of picture `p` (RTP timestamp `time`) is forwarded
    /// (`keyframe`: it starts one). Every packet of a picture shares the fate of the
    /// first that came.
    pub fn pass(&mut self, p: Picture, keyframe: bool, time: u32) -> bool {
        let known = self
            .fates
            .iter()
            .position(|f| f.is_some_and(|(t, _)| t == time));
        if let Some(i) = known
            && !keyframe
            && let Some((_, fate)) = self.fates[i]
        {
            return fate;
        }
        let fate = match p {
            Picture::Vp8(t) => self.pass_vp8(t, keyframe),
            Picture::Frame {
                frame,
                temporal,
                refs,
            } => self.pass_frame(frame, temporal, refs, keyframe),
        };
        let i = known.unwrap_or_else(|| {
            let i = usize::from(self.fates_at) % FATES;
            self.fates_at = self.fates_at.wrapping_add(1);
            i
        });
        self.fates[i] = Some((time, fate));
        fate
    }

    /// The next packet starts another layer's stream (at a keyframe): the frames
    /// remembered were numbered by the last one.
    pub fn switch_source(&mut self) {
        self.left_out.clear();
        self.fates = [None; FATES];
    }

    /// By frame references: a keyframe and the base layer always go; the others while
    /// their layer is wanted and nothing they reference was left out (whatever their
    /// layer, a picture of a layer just taken back references none that went missing).
    fn pass_frame(&mut self, frame: u16, temporal: u8, refs: Option<Refs>, keyframe: bool) -> bool {
        if keyframe {
            return true;
        }
        let left = self.left_out.as_slice();
        if left.contains(&frame) {
            return false;
        }
        let wanted = self.target == ALL_TEMPORAL || temporal <= self.target;
        let ok = temporal == 0
            || (wanted && refs.map_or(left.is_empty(), |r| r.iter().all(|f| !left.contains(&f))));
        if ok {
            // Long past anything left out: nothing references those any more.
            if let Some(&newest) = left.last()
                && frame.wrapping_sub(newest) > 128
                && frame.wrapping_sub(newest) < 0x8000
            {
                self.left_out.clear();
            }
        } else {
            self.left_out.push(frame);
        }
        ok
    }

    /// By the VP8 payload descriptor: down at the next picture; up one layer at a
    /// time, at a picture that syncs it, or at a keyframe.
    fn pass_vp8(&mut self, t: Temporal, keyframe: bool) -> bool {
        if t.starts {
            if keyframe {
                // Whatever layer it names (a keyframe is TL0 from libwebrtc).
                self.current = self.target.max(t.tid);
            } else if self.target < self.current {
                self.current = self.target;
            } else if self.target > self.current && t.sync && t.tid == self.current + 1 {
                self.current = t.tid;
            }
        }
        t.tid <= self.current
    }
}

/// The highest temporal layer of a stream whose pictures' bytes by layer are `bytes`
/// that fits in `budget`, given the whole stream takes `rate`; going up from `now`
/// needs `headroom` times what the layer takes. `None`: no layers known (the stream
/// names none), or all of them fit.
pub fn cap_for(bytes: &[u64; 4], rate: u64, budget: u64, now: u8, headroom: f64) -> Option<u8> {
    let total: u64 = bytes.iter().sum();
    let top = bytes.iter().rposition(|b| *b > 0)? as u8;
    if top == 0 {
        return None;
    }
    let mut cum = 0;
    let mut cap = 0;
    for (tid, b) in bytes.iter().enumerate().take(usize::from(top) + 1) {
        cum += b;
        let takes = rate as f64 * cum as f64 / total as f64;
        let need = if tid as u8 > now {
            takes * headroom
        } else {
            takes
        };
        if tid > 0 && need > budget as f64 {
            break;
        }
        cap = tid as u8;
    }
    (cap < top).then_some(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_goes_down_at_a_picture_and_up_at_a_sync_or_a_keyframe() {
        let at = |tid, sync| Temporal {
            tid,
            sync,
            starts: true,
        };
        let middle = |tid| Temporal {
            tid,
            sync: false,
            starts: false,
        };
        let mut cap = TemporalCap::default();
        assert!(cap.pass_vp8(at(2, false), false));
        cap.target = 0;
        // Within a picture already started nothing changes.
        assert!(cap.pass_vp8(middle(2), false));
        assert!(!cap.pass_vp8(at(2, false), false));
        assert!(!cap.pass_vp8(at(1, true), false));
        assert!(cap.pass_vp8(at(0, false), false));
        // Up: not at a picture that depends on layer 1's last, nor two layers at once.
        cap.target = ALL_TEMPORAL;
        assert!(!cap.pass_vp8(at(1, false), false));
        assert!(!cap.pass_vp8(at(2, true), false));
        assert!(cap.pass_vp8(at(1, true), false));
        assert!(!cap.pass_vp8(at(2, false), false));
        assert!(cap.pass_vp8(at(2, true), false));
        assert!(cap.pass_vp8(at(2, false), false));
        // A keyframe starts every layer at once.
        cap.target = 0;
        assert!(!cap.pass_vp8(at(1, false), false));
        cap.target = 2;
        assert!(cap.pass_vp8(at(0, false), true));
        assert!(cap.pass_vp8(at(2, false), false));
        // A keyframe that names a higher layer goes whole; the next picture is cut.
        cap.target = 0;
        assert!(cap.pass_vp8(at(1, false), true));
        assert!(cap.pass_vp8(middle(1), false));
        assert!(!cap.pass_vp8(at(1, false), false));
    }

    #[test]
    fn a_late_packet_shares_its_pictures_fate() {
        let mut cap = TemporalCap::default();
        let t2 = |starts| {
            Picture::Vp8(Temporal {
                tid: 2,
                sync: true,
                starts,
            })
        };
        assert!(cap.pass(t2(true), false, 3000));
        cap.target = 0;
        assert!(!cap.pass(t2(true), false, 6000));
        // The first picture's last packet, late: it went, so this one goes too; and
        // one of the picture left out stays out when the cap is lifted.
        assert!(cap.pass(t2(false), false, 3000));
        cap.target = ALL_TEMPORAL;
        assert!(!cap.pass(t2(false), false, 6000));
    }

    #[test]
    fn a_cap_is_the_highest_layer_the_budget_carries() {
        // libwebrtc's three layers: 40, 20 and 40 % of the bytes.
        let bytes = [400, 200, 400, 0];
        assert_eq!(cap_for(&bytes, 1000, 2000, 2, 1.15), None);
        assert_eq!(cap_for(&bytes, 1000, 999, 2, 1.15), Some(1));
        assert_eq!(cap_for(&bytes, 1000, 600, 2, 1.15), Some(1));
        assert_eq!(cap_for(&bytes, 1000, 599, 2, 1.15), Some(0));
        // The base layer goes on whatever the budget.
        assert_eq!(cap_for(&bytes, 1000, 10, 2, 1.15), Some(0));
        // Up needs headroom.
        assert_eq!(cap_for(&bytes, 1000, 650, 0, 1.15), Some(0));
        assert_eq!(cap_for(&bytes, 1000, 700, 0, 1.15), Some(1));
        // A stream with one layer, or none seen yet.
        assert_eq!(cap_for(&[500, 0, 0, 0], 1000, 10, 0, 1.15), None);
        assert_eq!(cap_for(&[0; 4], 1000, 10, 0, 1.15), None);
    }

    #[test]
    fn by_references_a_frame_goes_only_with_what_it_references() {
        let refs = |of: &[u16]| {
            let mut r = Refs::default();
            for (i, f) in of.iter().enumerate() {
                r.of[i] = *f;
                r.count += 1;
            }
            Some(r)
        };
        // libwebrtc's L1T3 VP8: 100 T0, 101 T2 (on 100), 102 T1 (on 100), 103 T2 (on
        // 102 and 101), 104 T0 (on 100), ...
        let cycle = |n: u16| {
            let b = 100 + 4 * n;
            [
                (b, 0, refs(&[b.wrapping_sub(4)])),
                (b + 1, 2, refs(&[b])),
                (b + 2, 1, refs(&[b])),
                (b + 3, 2, refs(&[b + 2, b + 1])),
            ]
        };
        let mut cap = TemporalCap::default();
        let went = |cap: &mut TemporalCap, n| {
            cycle(n)
                .iter()
                .map(|&(frame, temporal, refs)| {
                    // Two packets each: the second follows the first.
                    let p = Picture::Frame {
                        frame,
                        temporal,
                        refs,
                    };
                    let time = u32::from(frame) * 3000;
                    let first = cap.pass(p, false, time);
                    assert_eq!(cap.pass(p, false, time), first);
                    first
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(went(&mut cap, 0), [true; 4]);
        cap.target = 0;
        assert_eq!(went(&mut cap, 1), [true, false, false, false]);
        cap.target = 1;
        assert_eq!(went(&mut cap, 2), [true, false, true, false]);
        // All again: 105's T2 goes (on the T0 only); the one on the T1 and that T2 too.
        cap.target = ALL_TEMPORAL;
        assert_eq!(went(&mut cap, 3), [true; 4]);
        // Down in the middle of a cycle: the T2 on a T2 left out goes too.
        let frame = |cap: &mut TemporalCap, frame: u16, temporal, refs| {
            cap.pass(
                Picture::Frame {
                    frame,
                    temporal,
                    refs,
                },
                false,
                u32::from(frame) * 3000,
            )
        };
        let c = cycle(4);
        assert!(frame(&mut cap, c[0].0, 0, c[0].2));
        cap.target = 1;
        assert!(!frame(&mut cap, c[1].0, 2, c[1].2));
        cap.target = ALL_TEMPORAL;
        assert!(frame(&mut cap, c[2].0, 1, c[2].2));
        assert!(!frame(&mut cap, c[3].0, 2, c[3].2));
        // Unknown references: only while nothing is left out that they might name.
        assert!(!frame(&mut cap, 200, 2, None));
        // Long after: forgotten.
        assert!(frame(&mut cap, 400, 2, refs(&[399])));
        assert!(frame(&mut cap, 401, 2, None));
        // Another layer's stream, whose frame numbers may be any: nothing of the last.
        cap.target = 0;
        assert!(!frame(&mut cap, 600, 2, refs(&[599])));
        cap.switch_source();
        cap.target = ALL_TEMPORAL;
        assert!(frame(&mut cap, 601, 2, refs(&[600])));
    }
}
