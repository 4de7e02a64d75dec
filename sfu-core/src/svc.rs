//! Where a video packet sits in its stream's layers: spatial and temporal layer, frame
//! boundaries, keyframes. Read from the dependency descriptor RTP header extension where
//! it was negotiated (so end-to-end encrypted payloads need not be read at all), else
//! from the VP9 payload descriptor (RFC 9628, the few bytes E2EE clients leave clear).
//!
//! The dependency descriptor is specified in the AV1 RTP payload format, appendix A
//! (<https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension>);
//! Chromium sends it for AV1, and for VP8 and VP9 where the extension is negotiated.

use std::sync::Arc;

use str0m::rtp::{ExtensionSerializer, ExtensionValues};

/// The dependency descriptor's extension URI.
pub const DD_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// The extension id we offer it under (browsers' offers pick their own; str0m follows).
pub const DD_EXTENSION_ID: u8 = 12;

/// Most templates one structure may define (the template id is 6 bits).
const MAX_TEMPLATES: usize = 64;

/// Most frames one frame may reference and be placed by [`frame_deps`] (libwebrtc's
/// structures reference at most three).
pub const MAX_REFS: usize = 4;

/// A dependency descriptor's bytes as received, forwarded as they are (but for the frame
/// number, which a subscriber's stream continues across simulcast switches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdBytes(pub Arc<[u8]>);

/// Reads and writes the dependency descriptor as raw bytes for str0m.
#[derive(Debug)]
pub struct DdExtension;

impl ExtensionSerializer for DdExtension {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        let Some(DdBytes(bytes)) = ev.user_values.get::<DdBytes>() else {
            return 0;
        };
        if bytes.len() > buf.len() {
            return 0;
        }
        buf[..bytes.len()].copy_from_slice(bytes);
        bytes.len()
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        // The mandatory fields take three bytes; anything shorter is not one.
        if buf.len() < 3 {
            return false;
        }
        ev.user_values.set(DdBytes(buf.into()));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        // The one-byte form holds at most 16 bytes; a descriptor carrying its template
        // structure (every keyframe) is longer.
        ev.user_values
            .get::<DdBytes>()
            .is_some_and(|d| d.0.len() > 16)
    }
}

/// The template dependency structure a stream last sent (on its latest keyframe): which
/// spatial and temporal layer each template id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdStructure {
    template_id_offset: u8,
    /// `(spatial, temporal)` of each template, by index from the offset.
    layers: Vec<(u8, u8)>,
    /// How many decode targets it has.
    decode_targets: u8,
    /// The frames each template's frame references, as differences of frame numbers
    /// (`None`: more than [`MAX_REFS`]); empty where the structure was not read that
    /// far.
    fdiffs: Vec<Option<Refs>>,
}

/// Frame number differences (or frame numbers) of the frames one frame references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refs {
    pub count: u8,
    pub of: [u16; MAX_REFS],
}

impl Refs {
    fn push(&mut self, v: u16) -> Option<()> {
        *self.of.get_mut(usize::from(self.count))? = v;
        self.count += 1;
        Some(())
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.of[..usize::from(self.count)].iter().copied()
    }
}

/// A frame's number and the frames it references, from its dependency descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDeps {
    pub frame: u16,
    /// Its temporal layer.
    pub temporal: u8,
    /// The frame numbers of the frames it references (none for a keyframe).
    pub refs: Refs,
}

impl DdStructure {
    /// How many spatial layers the structure describes.
    pub fn spatial_layers(&self) -> u8 {
        self.layers.iter().map(|(s, _)| s + 1).max().unwrap_or(1)
    }
}

/// What one packet says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    pub spatial: u8,
    pub temporal: u8,
    /// First packet of its (layer) frame.
    pub start: bool,
    /// Last packet of its (layer) frame.
    pub end: bool,
    /// First packet of a keyframe: decodable without any earlier frame.
    pub keyframe: bool,
}

/// Why a dependency descriptor was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdError {
    /// Shorter than its fields say.
    Truncated,
    /// A template id with no structure to look it up in (none received yet).
    NoStructure,
    /// A template id outside the structure.
    UnknownTemplate,
}

/// Reads bits, most significant first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, DdError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8).ok_or(DdError::Truncated)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.at += 1;
        }
        Ok(v)
    }
}

/// Parses a dependency descriptor. A descriptor carrying a template structure replaces
/// `structure` (it comes with keyframes); others are read against it.
pub fn parse_dd(data: &[u8], structure: &mut Option<DdStructure>) -> Result<LayerInfo, DdError> {
    let mut b = Bits { data, at: 0 };
    let start = b.read(1)? == 1;
    let end = b.read(1)? == 1;
    let template_id = b.read(6)? as u8;
    let _frame_number = b.read(16)?;
    let mut attached = false;
    if data.len() > 3 {
        let structure_present = b.read(1)? == 1;
        // active_decode_targets_present, custom dtis, fdiffs and chains: not needed to
        // place the frame.
        b.read(4)?;
        if structure_present {
            *structure = Some(parse_structure(&mut b)?);
            attached = true;
        }
    }
    let s = structure.as_ref().ok_or(DdError::NoStructure)?;
    let index = usize::from((template_id + 64 - s.template_id_offset) % 64);
    let &(spatial, temporal) = s.layers.get(index).ok_or(DdError::UnknownTemplate)?;
    Ok(LayerInfo {
        spatial,
        temporal,
        start,
        end,
        // The structure is attached to keyframes; the first packet of one starts it.
        keyframe: attached && start && spatial == 0,
    })
}

/// `template_dependency_structure()` up to the templates' frame references, all that is
/// needed here.
fn parse_structure(b: &mut Bits) -> Result<DdStructure, DdError> {
    let template_id_offset = b.read(6)? as u8;
    let decode_targets = b.read(5)? as u8 + 1;
    let (mut spatial, mut temporal) = (0u8, 0u8);
    let mut layers = Vec::new();
    loop {
        if layers.len() == MAX_TEMPLATES {
            return Err(DdError::UnknownTemplate);
        }
        layers.push((spatial, temporal));
        match b.read(2)? {
            0 => {}
            1 => temporal = temporal.saturating_add(1),
            2 => {
                temporal = 0;
                spatial = spatial.saturating_add(1);
            }
            _ => break,
        }
    }
    // The references of each template, after its decode target indications. A
    // structure cut short there is still good for placing frames in their layers.
    let fdiffs = template_fdiffs(b, layers.len(), decode_targets).unwrap_or_default();
    Ok(DdStructure {
        template_id_offset,
        layers,
        decode_targets,
        fdiffs,
    })
}

/// `template_dtis()` (skipped) and `template_fdiffs()`.
fn template_fdiffs(b: &mut Bits, templates: usize, dts: u8) -> Result<Vec<Option<Refs>>, DdError> {
    for _ in 0..templates * usize::from(dts) {
        b.read(2)?;
    }
    let mut all = Vec::with_capacity(templates);
    for _ in 0..templates {
        let mut refs = Some(Refs::default());
        while b.read(1)? == 1 {
            let fdiff = b.read(4)? as u16 + 1;
            refs = refs.and_then(|mut r| r.push(fdiff).map(|()| r));
        }
        all.push(refs);
    }
    Ok(all)
}

/// The frame number and references of the frame a dependency descriptor belongs to,
/// read against the stream's `structure`; `None` where they cannot be told (the
/// structure's references were not read, or the frame has more than [`MAX_REFS`]). A
/// descriptor that attaches a structure is a keyframe's: it references nothing.
pub fn frame_deps(data: &[u8], structure: &DdStructure) -> Option<FrameDeps> {
    let mut b = Bits { data, at: 0 };
    b.read(2).ok()?;
    let template_id = b.read(6).ok()? as u8;
    let frame = b.read(16).ok()? as u16;
    let index = usize::from((template_id + 64 - structure.template_id_offset) % 64);
    let &(_, temporal) = structure.layers.get(index)?;
    let (mut custom_dtis, mut custom_fdiffs) = (false, false);
    if data.len() > 3 {
        let flags = b.read(5).ok()?;
        if flags & 0x10 != 0 {
            return Some(FrameDeps {
                frame,
                temporal,
                refs: Refs::default(),
            });
        }
        if flags & 0x08 != 0 {
            b.read(usize::from(structure.decode_targets)).ok()?;
        }
        custom_dtis = flags & 0x04 != 0;
        custom_fdiffs = flags & 0x02 != 0;
    }
    let fdiffs = if custom_fdiffs {
        if custom_dtis {
            b.read(2 * usize::from(structure.decode_targets)).ok()?;
        }
        let mut refs = Refs::default();
        loop {
            let size = b.read(2).ok()? as usize;
            if size == 0 {
                break;
            }
            refs.push(b.read(4 * size).ok()? as u16 + 1)?;
        }
        refs
    } else {
        (*structure.fdiffs.get(index)?)?
    };
    let mut refs = Refs::default();
    for d in fdiffs.iter() {
        refs.push(frame.wrapping_sub(d))?;
    }
    Some(FrameDeps {
        frame,
        temporal,
        refs,
    })
}

/// The descriptor's frame number.
pub fn dd_frame_number(data: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(1)?, *data.get(2)?]))
}

/// The descriptor with another frame number.
pub fn dd_with_frame_number(data: &[u8], frame_number: u16) -> DdBytes {
    let mut v = data.to_vec();
    if v.len() >= 3 {
        v[1..3].copy_from_slice(&frame_number.to_be_bytes());
    }
    DdBytes(v.into())
}

/// The layers of a VP9 packet from its payload descriptor (RFC 9628): `None` without
/// layer indices (a stream of one layer) or when too short.
pub fn vp9_layers(payload: &[u8]) -> Option<LayerInfo> {
    let &b0 = payload.first()?;
    let has_picture_id = b0 & 0x80 != 0;
    let inter_picture = b0 & 0x40 != 0;
    let has_layers = b0 & 0x20 != 0;
    let start = b0 & 0x08 != 0;
    let end = b0 & 0x04 != 0;
    if !has_layers {
        return None;
    }
    let mut at = 1;
    if has_picture_id {
        let long = payload.get(1)? & 0x80 != 0;
        at += if long { 2 } else { 1 };
    }
    // TID (3) | U | SID (3) | D.
    let l = *payload.get(at)?;
    let (temporal, spatial) = (l >> 5, (l >> 1) & 0x07);
    Some(LayerInfo {
        spatial,
        temporal,
        start,
        end,
        keyframe: start && !inter_picture && spatial == 0,
    })
}

/// Continuity of the dependency descriptor's frame numbers for one subscriber: each
/// simulcast layer numbers its own frames, and a receiver that sees the numbers jump
/// back takes the new frames for old ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameNumbers {
    offset: u16,
    last: Option<u16>,
    /// The next packet starts another layer's stream.
    switching: bool,
}

impl FrameNumbers {
    pub fn switch_source(&mut self) {
        self.switching = true;
    }

    /// The descriptor to send for `dd`: `None` when it goes unchanged.
    pub fn rewrite(&mut self, dd: &[u8]) -> Option<DdBytes> {
        let n = dd_frame_number(dd)?;
        if self.switching {
            self.switching = false;
            if let Some(last) = self.last {
                self.offset = last.wrapping_add(1).wrapping_sub(n);
            }
        }
        let out = n.wrapping_add(self.offset);
        if self.last.is_none_or(|l| out.wrapping_sub(l) < 0x8000) {
            self.last = Some(out);
        }
        (self.offset != 0).then(|| dd_with_frame_number(dd, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits, most significant first (to build descriptors for the tests).
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl Writer {
        fn put(&mut self, n: usize, v: u32) {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((v >> i) & 1) as u8;
                *self.bytes.last_mut().unwrap() |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
        }
    }

    /// An L3T1 structure as libwebrtc writes it: three templates, one per spatial layer,
    /// at offset `offset`.
    fn l3t1_keyframe(offset: u32, frame: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, 1); // start_of_frame
        w.put(1, 0); // end_of_frame
        w.put(6, offset); // template id: the first template
        w.put(16, frame);
        w.put(1, 1); // structure present
        w.put(4, 0);
        w.put(6, offset); // template_id_offset
        w.put(5, 2); // three decode targets
        w.put(2, 2); // next: spatial + 1
        w.put(2, 2);
        w.put(2, 3); // end of layers
        // (dtis, fdiffs, chains and resolutions would follow; not read.)
        w.bytes
    }

    fn mandatory(start: bool, end: bool, template: u32, frame: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, start.into());
        w.put(1, end.into());
        w.put(6, template);
        w.put(16, frame);
        w.bytes
    }

    /// An L1T3 structure with the references libwebrtc's VP8 gives its frames: a
    /// keyframe; TL0 on the last TL0 (4 back); TL1 on it (2 back); TL2 on the TL0 (1
    /// back); TL2 on the TL1 and on the first TL2 (1 and 2 back).
    fn l1t3_keyframe(frame: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(1, 0);
        w.put(6, 0);
        w.put(16, frame);
        w.put(1, 1); // structure present
        w.put(4, 0);
        w.put(6, 0); // template_id_offset
        w.put(5, 2); // three decode targets
        for idc in [0, 1, 1, 0, 3] {
            w.put(2, idc); // T0, T0, T1, T2, T2
        }
        for _ in 0..5 * 3 {
            w.put(2, 3); // decode target indications: not read
        }
        for fdiffs in [&[][..], &[4], &[2], &[1], &[1, 2]] {
            for f in fdiffs {
                w.put(1, 1);
                w.put(4, f - 1);
            }
            w.put(1, 0);
        }
        w.put(1, 0); // (chains and the rest: not read)
        w.bytes
    }

    #[test]
    fn frames_name_what_they_reference() {
        let mut s = None;
        let key = l1t3_keyframe(100);
        parse_dd(&key, &mut s).unwrap();
        let s = s.unwrap();
        let deps = |d: &[u8]| {
            frame_deps(d, &s).map(|f| (f.frame, f.temporal, f.refs.iter().collect::<Vec<_>>()))
        };
        assert_eq!(deps(&key), Some((100, 0, vec![])));
        assert_eq!(
            deps(&mandatory(true, true, 3, 101)),
            Some((101, 2, vec![100]))
        );
        assert_eq!(
            deps(&mandatory(true, true, 2, 102)),
            Some((102, 1, vec![100]))
        );
        assert_eq!(
            deps(&mandatory(false, true, 4, 103)),
            Some((103, 2, vec![102, 101]))
        );
        assert_eq!(
            deps(&mandatory(true, true, 1, 104)),
            Some((104, 0, vec![100]))
        );
        // Custom references (after custom indications for the three decode targets).
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(1, 1);
        w.put(6, 3);
        w.put(16, 0);
        w.put(5, 0b00110); // custom dtis and fdiffs
        w.put(6, 0);
        w.put(2, 1);
        w.put(4, 0); // 1 back
        w.put(2, 3);
        w.put(12, 299); // 300 back
        w.put(2, 0);
        assert_eq!(
            deps(&w.bytes),
            Some((0, 2, vec![0xffff, 0u16.wrapping_sub(300)]))
        );
        // A structure that stops after its layers places frames, but not their references.
        let mut l3 = None;
        parse_dd(&l3t1_keyframe(0, 5), &mut l3).unwrap();
        assert_eq!(frame_deps(&mandatory(true, true, 1, 6), &l3.unwrap()), None);
    }

    #[test]
    fn reads_layers_from_the_structure_of_the_last_keyframe() {
        let mut s = None;
        // A delta frame before any structure cannot be placed.
        assert_eq!(
            parse_dd(&mandatory(true, true, 1, 7), &mut s),
            Err(DdError::NoStructure)
        );
        let key = parse_dd(&l3t1_keyframe(60, 100), &mut s).unwrap();
        assert!(key.keyframe && key.start && !key.end);
        assert_eq!((key.spatial, key.temporal), (0, 0));
        assert_eq!(s.as_ref().unwrap().spatial_layers(), 3);
        // Template ids wrap at 64 from the offset: 61 is index 1, 62 index 2.
        let l1 = parse_dd(&mandatory(true, false, 61, 101), &mut s).unwrap();
        assert_eq!((l1.spatial, l1.keyframe), (1, false));
        let l2 = parse_dd(&mandatory(false, true, 62, 101), &mut s).unwrap();
        assert_eq!((l2.spatial, l2.start, l2.end), (2, false, true));
        assert_eq!(
            parse_dd(&mandatory(true, true, 63, 102), &mut s),
            Err(DdError::UnknownTemplate)
        );
        assert_eq!(parse_dd(&[0x80], &mut s), Err(DdError::Truncated));
    }

    #[test]
    fn temporal_layers_count_up_within_a_spatial_layer() {
        // L1T3: templates T0, T1, T2, T2 (next_layer_idc 1, 1, 0, 3).
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(1, 1);
        w.put(6, 0);
        w.put(16, 5);
        w.put(1, 1);
        w.put(4, 0);
        w.put(6, 0);
        w.put(5, 2);
        for idc in [1, 1, 0, 3] {
            w.put(2, idc);
        }
        let mut s = None;
        parse_dd(&w.bytes, &mut s).unwrap();
        let at = |t| parse_dd(&mandatory(true, true, t, 6), &mut s.clone()).unwrap();
        assert_eq!((at(1).temporal, at(2).temporal, at(3).temporal), (1, 2, 2));
        assert_eq!(s.unwrap().spatial_layers(), 1);
    }

    #[test]
    fn a_structure_of_endless_templates_is_refused() {
        let mut w = Writer::default();
        w.put(1, 1);
        w.put(1, 1);
        w.put(6, 0);
        w.put(16, 5);
        w.put(1, 1);
        w.put(4, 0);
        w.put(6, 0);
        w.put(5, 0);
        for _ in 0..100 {
            w.put(2, 0);
        }
        assert!(parse_dd(&w.bytes, &mut None).is_err());
    }

    #[test]
    fn frame_numbers_continue_across_a_switch() {
        let mut f = FrameNumbers::default();
        assert_eq!(f.rewrite(&mandatory(true, true, 0, 500)), None);
        assert_eq!(f.rewrite(&mandatory(true, true, 0, 501)), None);
        f.switch_source();
        let moved = f.rewrite(&mandatory(true, true, 0, 20)).unwrap();
        assert_eq!(dd_frame_number(&moved.0), Some(502));
        let moved = f.rewrite(&mandatory(true, true, 0, 21)).unwrap();
        assert_eq!(dd_frame_number(&moved.0), Some(503));
    }

    #[test]
    fn vp9_layer_indices() {
        // I=1 (7-bit picture id) L=1 B=1, P=0: a keyframe's first packet, SID 0 TID 0.
        let key = vp9_layers(&[0xa8, 0x05, 0x00, 0x00]).unwrap();
        assert!(key.keyframe && key.start && !key.end);
        // P=1, E=1; 15-bit picture id; TID 2, SID 1.
        let p = vp9_layers(&[0xe4, 0x81, 0x05, (2 << 5) | (1 << 1), 0x00]).unwrap();
        assert_eq!(
            (p.spatial, p.temporal, p.keyframe, p.end),
            (1, 2, false, true)
        );
        // No layer indices: nothing to say.
        assert_eq!(vp9_layers(&[0x88, 0x05]), None);
        assert_eq!(vp9_layers(&[0xa8]), None);
    }
}
