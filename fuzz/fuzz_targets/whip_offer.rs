//! A WHIP or WHEP request body as the handlers read it: `protocol::offer::check` first,
//! as `open` calls it, then `signaling::fuzzing::read` (the handlers' `scan_offer`,
//! `whip_publish` and `Watch::new`). What a WHIP offer publishes must name its sending
//! m-lines and their rids, and a WHEP session's m-lines its receiving ones. A WHIP offer
//! that is accepted then goes to a shard as the media plane receives it
//! (`Request::Offer`), whose answer str0m must read. Raw SDP text; the first byte's low
//! bit chooses `?video=camera`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Grants, Request, Source};
use sfu_core::shard::ShardConfig;
use sfu_fuzz::call::Call;
use str0m::change::SdpAnswer;

fuzz_target!(|data: &[u8]| {
    // The shard catches a panic of str0m's while it accepts an offer (and removes that
    // participant), which libFuzzer's own panic hook would turn into an abort first: the
    // default hook prints and unwinds. A panic nothing catches still aborts the run.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(body) else {
        return; // axum's `String` extractor refuses it.
    };
    if protocol::offer::check(sdp, &[], &[]).is_err() {
        return;
    }
    let reading = signaling::fuzzing::read(sdp, flags & 1 == 1);
    for mid in reading.audio.iter().chain(&reading.video) {
        assert!(
            reading
                .lines
                .iter()
                .any(|l| l.receives && l.mid.as_ref() == Some(mid)),
            "a WHEP m-line that does not receive"
        );
    }
    let Ok(publish) = reading.publish else {
        return;
    };
    assert!(!publish.is_empty());
    for source in [Source::Microphone, Source::Camera, Source::Screen] {
        assert!(publish.iter().filter(|p| p.source == source).count() <= 1);
    }
    for p in &publish {
        assert!(
            reading
                .lines
                .iter()
                .any(|l| l.sends && l.mid.as_ref() == Some(&p.mid) && l.rids == p.layers),
            "a published mid that is no sending m-line with these rids"
        );
    }
    let mut call = Call::new(ShardConfig::default());
    let grants = Grants {
        plaintext: true,
        ..Grants::default()
    };
    let id = call.join_bare("whip", grants);
    let request = Request::Offer {
        sdp: sdp.to_owned(),
        publish,
        subscribe: Vec::new(),
        slots: Vec::new(),
    };
    call.shard.request(call.now, id, request);
    assert!(call.pump(), "the shard never went quiet");
    for (_, message) in &call.signals {
        if let protocol::ServerMessage::Answer { sdp, .. } = message
            && let Err(e) = SdpAnswer::from_sdp_string(sdp)
        {
            panic!("the shard answered with an SDP str0m cannot read: {e}\n{sdp}");
        }
    }
});
