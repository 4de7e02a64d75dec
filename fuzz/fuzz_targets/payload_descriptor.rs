//! The payload descriptors the forwarder reads (the few bytes end-to-end encrypting
//! clients leave in the clear), over a stream of RTP payloads: each (a chunk after a
//! one-byte head) through `sfu_core::forwarder::keyframe_start` for VP8, VP9, H.264 and
//! AV1, through `sfu_core::svc::vp9_layers`, and through str0m's `Vp8Descriptor` into
//! `sfu_core::vp8::Vp8Continuity` (picture ids and TL0PICIDX continued across layer
//! switches; the head's low bit switches before the payload), past a
//! `sfu_core::temporal::TemporalCap` that leaves pictures out (its target and the
//! picture's timestamp follow the payload's length). The forwarder reads a VP9 descriptor twice (its layers,
//! and whether it starts a keyframe): the two must agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu_core::forwarder::keyframe_start;
use sfu_core::svc::vp9_layers;
use sfu_core::temporal::{Picture, TemporalCap};
use sfu_core::vp8::{Vp8Continuity, temporal};
use sfu_fuzz::input::Reader;
use str0m::format::Codec;
use str0m::rtp::Vp8Descriptor;

/// Payloads per input.
const MAX_PAYLOADS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut vp8 = Vp8Continuity::default();
    let mut cap = TemporalCap::default();
    for _ in 0..MAX_PAYLOADS {
        let Some(switch) = r.head::<bool>() else {
            break;
        };
        let payload = r.chunk();
        for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            keyframe_start(codec, payload);
        }
        if let Some(info) = vp9_layers(payload) {
            assert!(info.spatial < 8 && info.temporal < 8);
            assert!(!info.keyframe || (info.start && info.spatial == 0));
            assert_eq!(
                info.keyframe,
                keyframe_start(Codec::Vp9, payload),
                "the VP9 layer reading and the keyframe reading disagree"
            );
        }
        if let Ok(d) = Vp8Descriptor::parse(payload) {
            if switch {
                vp8.switch_source(&d);
            }
            if let Some(t) = temporal(payload) {
                assert!(t.tid <= 3);
                cap.target = (payload.len() % 4) as u8;
                let time = payload.len() as u32 / 100;
                if !cap.pass(Picture::Vp8(t), keyframe_start(Codec::Vp8, payload), time) {
                    vp8.skip_picture(&d);
                    continue;
                }
            }
            if let Some(patch) = vp8.rewrite(&d) {
                // A patch is only ever built for the descriptor it rewrites.
                let _ = patch;
                assert!(d.picture_id().is_some() || d.tl0_pic_idx().is_some());
            }
        }
    }
});
