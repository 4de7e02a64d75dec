//! Dependency descriptors (AV1 RTP payload format, appendix A) as the forwarder reads
//! them, over a stream of packets, each a head (`sfu_fuzz::ops::DdHead`) and a descriptor
//! (a chunk): through `sfu_core::svc::parse_dd` against the template structure the stream
//! last sent; through the str0m extension serializer `sfu_core::svc::DdExtension` (what
//! it parses it writes back byte for byte); through a subscriber's
//! `sfu_core::svc::FrameNumbers` (frame numbers continued across the layer switches the
//! head asks for); the layer it places the packet in through
//! `sfu_core::forwarder::select_svc` for the head's target layer; and its frame's
//! references (`sfu_core::svc::frame_deps`) through a `sfu_core::temporal::TemporalCap`
//! capped by the head's target layer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu_core::forwarder::{Select, select_svc};
use sfu_core::svc::{
    DdBytes, DdExtension, FrameNumbers, MAX_REFS, dd_frame_number, dd_with_frame_number,
    frame_deps, parse_dd,
};
use sfu_core::temporal::{ALL_TEMPORAL, Picture, TemporalCap};
use sfu_fuzz::input::Reader;
use sfu_fuzz::ops::DdHead;
use str0m::rtp::{ExtensionSerializer, ExtensionValues};

/// Descriptors per input.
const MAX_PACKETS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut structure = None;
    let mut frames = FrameNumbers::default();
    let mut current: Option<u8> = None;
    let mut cap = TemporalCap::default();
    for _ in 0..MAX_PACKETS {
        let Some(head) = r.head::<DdHead>() else {
            break;
        };
        let dd = r.chunk();

        // The extension as str0m reads it off the wire and writes it again.
        let mut ev = ExtensionValues::default();
        let parsed = DdExtension.parse_value(dd, &mut ev);
        assert_eq!(parsed, dd.len() >= 3);
        if parsed {
            let mut buf = [0u8; 1024];
            let n = DdExtension.write_to(&mut buf, &ev);
            if dd.len() <= buf.len() {
                assert_eq!(&buf[..n], dd, "a descriptor is forwarded as it came");
            }
            assert_eq!(DdExtension.requires_two_byte_form(&ev), dd.len() > 16);
        }

        if head.switch {
            frames.switch_source();
        }
        if let Some(DdBytes(rewritten)) = frames.rewrite(dd) {
            // Only the frame number changes.
            assert_eq!(rewritten.len(), dd.len());
            assert_eq!(rewritten[0], dd[0]);
            assert_eq!(rewritten[3..], dd[3..]);
        }
        if let Some(n) = dd_frame_number(dd) {
            let moved = dd_with_frame_number(dd, n.wrapping_add(1));
            assert_eq!(dd_frame_number(&moved.0), Some(n.wrapping_add(1)));
        }

        let Ok(info) = parse_dd(dd, &mut structure) else {
            continue;
        };
        assert!(info.spatial < 64 && info.temporal < 64);
        assert!(!info.keyframe || (info.start && info.spatial == 0));
        if let Some(s) = &structure {
            assert!(info.spatial < s.spatial_layers());
            if let Some(deps) = frame_deps(dd, s) {
                assert_eq!(deps.temporal, info.temporal);
                assert_eq!(Some(deps.frame), dd_frame_number(dd));
                assert!(usize::from(deps.refs.count) <= MAX_REFS);
                assert!(deps.refs.iter().all(|f| f != deps.frame));
                cap.target = head.target.unwrap_or(ALL_TEMPORAL);
                let p = Picture::Frame {
                    frame: deps.frame,
                    temporal: deps.temporal,
                    refs: Some(deps.refs),
                };
                let time = u32::from(deps.frame);
                let fate = cap.pass(p, info.keyframe, time);
                assert!(!info.keyframe || fate, "a keyframe always goes");
                assert_eq!(cap.pass(p, false, time), fate, "a picture has one fate");
            }
        }
        let before = current;
        match select_svc(&mut current, head.target, &info) {
            Select::Skip => {
                assert!(head.target.is_some() || current.is_none());
            }
            Select::Forward => {
                assert_eq!(current, before);
                assert!(current.is_some_and(|c| info.spatial <= c));
            }
            Select::Switch => {
                assert_eq!(current, head.target);
                assert!(current.is_some_and(|c| info.spatial <= c));
            }
        }
    }
});
