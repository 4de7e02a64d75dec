//! What the forwarder reads and rewrites of a VP8 payload descriptor (RFC 7741): picture
//! ids and TL0PICIDX continued across simulcast layers and across pictures left out, and
//! the temporal layer of a picture (see `temporal` for what is done with it). (The
//! payload descriptor is outside what end-to-end encryption covers.)

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

use crate::recent::Recent;

/// How many pictures left out are remembered to number a late packet of an earlier one.
const SKIPPED: usize = 8;

/// VP8 picture ids and TL0PICIDX as a subscriber sees them: each layer numbers its own
/// pictures, so a switch of layer would make them jump (backwards, often), and a
/// receiver would take the new pictures for old ones and drop them. Like the sequence
/// numbers, they continue from the newest one sent (a late packet, reordered or repaired
/// upstream, does not pull them back). Pictures left out (temporal layers a link cannot
/// carry) leave no gap either: a receiver waits for a missing picture id before it
/// decodes the next picture of its layer, and would wait forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Continuity {
    picture_offset: u16,
    tl0_offset: u8,
    /// The newest picture id sent, in 15 bits (a 7-bit one went out as its low bits).
    last_picture: Option<u16>,
    /// The newest TL0PICIDX sent.
    last_tl0: Option<u8>,
    /// The source's picture ids of the latest pictures left out.
    skipped: Recent<SKIPPED>,
    /// The newest source picture id seen, sent or left out.
    newest: Option<u16>,
}

impl Vp8Continuity {
    /// The next packet (`d`) starts another layer's stream.
    pub fn switch_source(&mut self, d: &Vp8Descriptor) {
        if let (Some(last), Some(id)) = (self.last_picture, d.picture_id()) {
            self.picture_offset = last.wrapping_add(1).wrapping_sub(id);
        }
        if let (Some(last), Some(idx)) = (self.last_tl0, d.tl0_pic_idx()) {
            self.tl0_offset = last.wrapping_add(1).wrapping_sub(idx);
        }
        self.skipped.clear();
        self.newest = None;
    }

    /// The picture of packet `d` is left out: the pictures after it are numbered one
    /// less. (Every packet of it may be given; it counts once. A picture older than
    /// the newest seen was numbered already: a late packet of it changes nothing.)
    pub fn skip_picture(&mut self, d: &Vp8Descriptor) {
        let Some(id) = d.picture_id() else {
            return;
        };
        if self.skipped.as_slice().contains(&id) || !self.is_new(d, id) {
            return;
        }
        self.picture_offset = self.picture_offset.wrapping_sub(1);
        self.skipped.push(id);
    }

    /// Whether source picture id `id` (of `d`) is newer than any seen; it is the newest
    /// then.
    fn is_new(&mut self, d: &Vp8Descriptor, id: u16) -> bool {
        let mask = if narrow(d) { 0x7f } else { 0x7fff };
        let new = self
            .newest
            .is_none_or(|n| id != n && (id.wrapping_sub(n) & mask) <= mask / 2);
        if new {
            self.newest = Some(id);
        }
        new
    }

    /// The patch for one forwarded packet; `None` while nothing needs rewriting.
    pub fn rewrite(&mut self, d: &Vp8Descriptor) -> Option<Vp8Patch> {
        if let Some(id) = d.picture_id() {
            self.is_new(d, id);
        }
        let mask = if narrow(d) { 0x7f } else { 0x7fff };
        // A late packet of a picture sent before some that were left out: numbered as
        // it was then.
        let late = d.picture_id().map_or(0, |id| {
            let newer = |s: &&u16| **s != id && (s.wrapping_sub(id) & mask) <= mask / 2;
            self.skipped.as_slice().iter().filter(newer).count() as u16
        });
        let wide = d
            .picture_id()
            .map(|id| id.wrapping_add(self.picture_offset).wrapping_add(late) & 0x7fff);
        let picture = wide.map(|w| w & mask);
        let tl0 = d.tl0_pic_idx().map(|i| i.wrapping_add(self.tl0_offset));
        if let Some(w) = wide
            && self
                .last_picture
                .is_none_or(|l| w.wrapping_sub(l) & 0x7fff < 0x4000)
        {
            self.last_picture = Some(w);
        }
        if let Some(t) = tl0
            && self.last_tl0.is_none_or(|l| t.wrapping_sub(l) < 0x80)
        {
            self.last_tl0 = Some(t);
        }
        let shifted = self.picture_offset.wrapping_add(late) != 0 || self.tl0_offset != 0;
        if !shifted || (picture.is_none() && tl0.is_none()) {
            return None;
        }
        let mut patch = d.patch();
        if let Some(p) = picture {
            patch = patch.picture_id(p);
        }
        if let Some(t) = tl0 {
            patch = patch.tl0_pic_idx(t);
        }
        patch.build().ok()
    }
}

/// Whether `d`'s picture id is of the 7-bit form, which wraps at 128 (the builder
/// refuses a wide id for it).
fn narrow(d: &Vp8Descriptor) -> bool {
    d.picture_id().is_some() && d.patch().picture_id(0x7fff).build().is_err()
}

/// Where a VP8 packet's picture sits in its stream's temporal layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    /// Its temporal layer (TID), 0 for the base.
    pub tid: u8,
    /// A layer sync (Y): it depends on base layer pictures only, so a receiver that had
    /// none of its layer can start there.
    pub sync: bool,
    /// The packet starts its picture (S = 1 and partition 0).
    pub starts: bool,
}

/// The temporal layer of a VP8 packet, from its payload descriptor; `None` when it
/// names none (one temporal layer, or a descriptor too short to hold it).
pub fn temporal(payload: &[u8]) -> Option<Temporal> {
    let &b0 = payload.first()?;
    if b0 & 0x80 == 0 {
        return None;
    }
    let &x = payload.get(1)?;
    if x & 0x20 == 0 {
        return None;
    }
    let mut at = 2;
    if x & 0x80 != 0 {
        at += if payload.get(2)? & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        at += 1;
    }
    let &t = payload.get(at)?;
    Some(Temporal {
        tid: t >> 6,
        sync: t & 0x20 != 0,
        starts: b0 & 0x10 != 0 && b0 & 0x0f == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload's start: X=1 S=1; I=1 L=1 T=1: a 15-bit picture id, TL0PICIDX, TID;
    /// then the payload header.
    fn vp8_packet(id: u16, tl0: u8) -> [u8; 7] {
        [
            0x90,
            0xe0,
            0x80 | (id >> 8) as u8,
            id as u8,
            tl0,
            0x20,
            0x00,
        ]
    }
    #[test]
    fn vp8_picture_ids_continue_across_a_switch() {
        let mut c = Vp8Continuity::default();
        let d = Vp8Descriptor::parse(&vp8_packet(1000, 7)).unwrap();
        assert_eq!(c.rewrite(&d), None, "untouched until a switch");
        let d = Vp8Descriptor::parse(&vp8_packet(1001, 8)).unwrap();
        assert_eq!(c.rewrite(&d), None);
        // Another layer, whose numbers are behind.
        let d = Vp8Descriptor::parse(&vp8_packet(20, 200)).unwrap();
        c.switch_source(&d);
        let patch = c.rewrite(&d).expect("rewritten");
        assert_eq!(
            patch,
            d.patch().picture_id(1002).tl0_pic_idx(9).build().unwrap()
        );
        let d = Vp8Descriptor::parse(&vp8_packet(21, 200)).unwrap();
        let patch = c.rewrite(&d).expect("rewritten");
        assert_eq!(
            patch,
            d.patch().picture_id(1003).tl0_pic_idx(9).build().unwrap()
        );
        // Across the 15-bit wrap.
        let d = Vp8Descriptor::parse(&vp8_packet(0x7fff, 1)).unwrap();
        c.switch_source(&d);
        c.rewrite(&d);
        let d = Vp8Descriptor::parse(&vp8_packet(0, 2)).unwrap();
        assert_eq!(
            c.rewrite(&d).expect("rewritten"),
            d.patch().picture_id(1005).tl0_pic_idx(11).build().unwrap()
        );
    }

    #[test]
    fn a_vp8_packet_with_nothing_to_rewrite_gets_no_patch() {
        // Found by the fuzz target payload_descriptor: after a switch, a descriptor with
        // neither a picture id nor a TL0PICIDX got an empty patch.
        let mut c = Vp8Continuity::default();
        c.rewrite(&Vp8Descriptor::parse(&vp8_packet(1000, 7)).unwrap());
        let d = Vp8Descriptor::parse(&vp8_packet(20, 200)).unwrap();
        c.switch_source(&d);
        assert!(c.rewrite(&d).is_some());
        // X=1 with no I, L, T or K; S=1; then the payload header.
        let bare = Vp8Descriptor::parse(&[0x90, 0x00, 0x00]).unwrap();
        assert_eq!(c.rewrite(&bare), None);
        let plain = Vp8Descriptor::parse(&[0x10, 0x00]).unwrap();
        assert_eq!(c.rewrite(&plain), None);
    }

    #[test]
    fn a_late_vp8_packet_does_not_pull_the_numbers_back() {
        let mut c = Vp8Continuity::default();
        for (id, tl0) in [(0x7ffe, 255), (0x7fff, 0), (0, 1)] {
            c.rewrite(&Vp8Descriptor::parse(&vp8_packet(id, tl0)).unwrap());
        }
        // A packet of an earlier picture comes late (reordered, or repaired upstream).
        c.rewrite(&Vp8Descriptor::parse(&vp8_packet(0x7fff, 0)).unwrap());
        // The next layer's keyframe follows the newest picture sent (0 and 1), not the
        // late one: a picture id or TL0PICIDX the receiver has already decoded would make
        // it drop the keyframe, and every picture after it.
        let d = Vp8Descriptor::parse(&vp8_packet(500, 90)).unwrap();
        c.switch_source(&d);
        assert_eq!(
            c.rewrite(&d).expect("rewritten"),
            d.patch().picture_id(1).tl0_pic_idx(2).build().unwrap()
        );
    }
    /// A picture's first packet of layer `tid` (`sync`: Y set), picture id `id`.
    fn picture(id: u16, tid: u8, sync: bool) -> [u8; 7] {
        let mut p = vp8_packet(id, 0);
        p[5] = (tid << 6) | if sync { 0x20 } else { 0 };
        p
    }

    #[test]
    fn pictures_left_out_leave_no_gap_in_picture_ids() {
        let mut c = Vp8Continuity::default();
        let d = |id| Vp8Descriptor::parse(&vp8_packet(id, 0)).unwrap();
        // What packet `id` goes out as.
        let sent = |c: &mut Vp8Continuity, id: u16| -> u16 {
            let patch = c.rewrite(&d(id));
            (0..0x8000)
                .find(|&w| {
                    patch == Some(d(id).patch().picture_id(w).tl0_pic_idx(0).build().unwrap())
                })
                .unwrap_or_else(|| {
                    assert_eq!(patch, None, "an unexpected patch");
                    id
                })
        };
        assert_eq!(sent(&mut c, 100), 100);
        c.skip_picture(&d(101));
        c.skip_picture(&d(101)); // its second packet
        assert_eq!(sent(&mut c, 102), 101);
        c.skip_picture(&d(103));
        assert_eq!(sent(&mut c, 104), 102);
        // A late packet of picture 102 is numbered as it was.
        assert_eq!(sent(&mut c, 102), 101);
        assert_eq!(sent(&mut c, 105), 103);
        // A late packet of picture 104, sent already, left out now: nothing moves.
        c.skip_picture(&d(104));
        assert_eq!(sent(&mut c, 106), 104);
        // Across the 15-bit wrap.
        let mut w = Vp8Continuity::default();
        assert_eq!(sent(&mut w, 0x7ffe), 0x7ffe);
        w.skip_picture(&d(0x7fff));
        assert_eq!(sent(&mut w, 0), 0x7fff);
        assert_eq!(sent(&mut w, 1), 0);
    }

    #[test]
    fn temporal_layers_are_read_from_the_descriptor() {
        assert_eq!(
            temporal(&picture(7, 2, true)),
            Some(Temporal {
                tid: 2,
                sync: true,
                starts: true
            })
        );
        // A 7-bit picture id, no TL0PICIDX: X=1 S=0; I=1 T=1.
        let t = temporal(&[0x80, 0xa0, 0x05, 0x40, 0x00]).unwrap();
        assert_eq!((t.tid, t.sync, t.starts), (1, false, false));
        // No T: one temporal layer.
        assert_eq!(temporal(&[0x90, 0x80, 0x05, 0x00]), None);
        assert_eq!(temporal(&[0x10, 0x00]), None);
        // Cut short.
        assert_eq!(temporal(&[0x90, 0xe0, 0x81]), None);
    }
}
