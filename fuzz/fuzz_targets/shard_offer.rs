//! SDP offers through the shard's negotiation (`sfu_core::shard::Shard::request` with
//! `Request::Offer`): a shard holding a publisher (microphone, simulcast camera, screen:
//! tracks 1 to 3) and a participant that joins with the grants of the first offer's head
//! and makes up to three offers. Each offer is a head (`sfu_fuzz::ops::OfferShape`: the
//! publish, subscribe and slot lists, aimed at the mids and rids of the SDP) and the SDP
//! as raw text (a chunk). The shard's outputs are polled to its timeout after each offer
//! and after a tick; an answer it gives must be an SDP answer str0m can read.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use protocol::{Grants, Publish, Request, ServerMessage, Source, Subscribe, TrackId};
use sfu_core::shard::ShardConfig;
use sfu_fuzz::call::Call;
use sfu_fuzz::input::Reader;
use sfu_fuzz::ops::OfferShape;
use sfu_fuzz::sdp::{mids, rids};
use str0m::change::SdpAnswer;
use str0m::net::Protocol;

/// Offers per input.
const MAX_OFFERS: usize = 3;

/// The publisher's offer, made once by a real str0m client.
fn publisher_offer() -> &'static Request {
    static OFFER: OnceLock<Request> = OnceLock::new();
    OFFER.get_or_init(|| {
        let mut call = Call::new(ShardConfig::default());
        let p = call.join("publisher", Grants::default(), Protocol::Udp);
        call.offer(
            p,
            &[
                (Source::Microphone, &[][..]),
                (Source::Camera, &["q", "h", "f"][..]),
                (Source::Screen, &[][..]),
            ],
            false,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    // The shard catches a panic of str0m's while it accepts an offer (and removes that
    // participant), which libFuzzer's own panic hook would turn into an abort first: the
    // default hook prints and unwinds. A panic nothing catches still aborts the run.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let mut r = Reader::new(data);
    let Some(first) = r.head::<OfferShape>() else {
        return;
    };
    let mut call = Call::new(ShardConfig::default());
    let publisher = call.join_bare("publisher", Grants::default());
    call.shard
        .request(call.now, publisher, publisher_offer().clone());
    call.pump();
    let id = call.join_bare("participant", first.grants.grants());
    let mut shape = Some(first);
    for _ in 0..MAX_OFFERS {
        let Some(s) = shape.take().or_else(|| r.head::<OfferShape>()) else {
            break;
        };
        let sdp = String::from_utf8_lossy(r.chunk()).into_owned();
        let (mids, rids) = (mids(&sdp), rids(&sdp));
        let request = Request::Offer {
            publish: s
                .publish
                .iter()
                .map(|p| Publish {
                    mid: p.mid.resolve(&mids),
                    source: p.source.source(),
                    layers: p.layers.iter().map(|l| l.resolve(&rids)).collect(),
                })
                .collect(),
            subscribe: s
                .subscribe
                .iter()
                .map(|x| Subscribe {
                    mid: x.mid.resolve(&mids),
                    track_id: TrackId(u64::from(x.track)),
                })
                .collect(),
            slots: s.slots.iter().map(|m| m.resolve(&mids)).collect(),
            sdp,
        };
        call.signals.clear();
        call.shard.request(call.now, id, request);
        assert!(call.pump(), "the shard never went quiet after an offer");
        call.now += Duration::from_secs(1);
        call.shard.handle_timeout(call.now);
        assert!(call.pump(), "the shard never went quiet after a tick");
        for (to, message) in &call.signals {
            if let ServerMessage::Answer { sdp, .. } = message {
                assert_eq!(*to, id);
                if let Err(e) = SdpAnswer::from_sdp_string(sdp) {
                    panic!("the shard answered with an SDP str0m cannot read: {e}\n{sdp}");
                }
            }
        }
    }
});
