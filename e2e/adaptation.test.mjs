// End-to-end test of bandwidth adaptation (issue 24): a two-person call in Chromium. Pam
// publishes her camera as three layers (1280x720 down to 320x180) and her microphone; Lou,
// in network namespace sfu-tls, publishes his. Lou's downlink is policed with a real
// nftables rule just under what Pam's top layer takes: his picture of her must not stop
// for long while he goes down, and hers of him never stops at all.
//
// Then just under what her lowest layer takes, where the server keeps him on that layer
// (its floor) rather than pausing it, and leaves out the temporal layers his link cannot
// carry (Chromium's VP8 is L1T3; the dependency descriptor says which frame references
// which): fewer pictures a second, never none for long. Finally the cap is lifted
// and he climbs back to the top layer.
//
// Not in run.sh's default list yet: it fails now and then (below). The issue asks for a
// longest freeze under 1 s; the test allows 2.5 s by default (E2E_ADAPT_MAX_FREEZE_MS),
// which every freeze of the kinds fixed so far exceeded: the browser's own keyframe
// request after 3 s without a picture to decode. Measured on
// this 2-core machine, 2026-12-03 (the server's log says more with SFU_LOG as README
// says, adaptation):
// - Before: just under the top layer 412 to 1440 ms, now and then 2.7 to 2.9 s (the
//   resends of the lower layer's keyframe refused: str0m's cap of 15 % of the bytes
//   was spent on the top layer's); just under the lowest layer 2.7 to 2.9 s (fixed
//   first, by asking for the keyframe as losses thin the layer: then 232 to 1029 ms).
// - With the resends capped at 30 %, receiver reports read every 250 ms and the layer
//   the link drops stopped at once (five runs): just under the top layer 0, 0, 619, 625
//   and 831 ms; just under the lowest layer 0, 208, 212, 624 and 1656 ms. The 1656 is a
//   loss the next receiver report (about one a second) told late: 1.4 s. Then, in a
//   seventh run, just under the lowest layer at 16 kB/s (17 to 22 before): 2875 ms,
//   twice in the 30 s. The layer was left with its base temporal layer alone, which its
//   losses break with nothing left to leave out, and no keyframe asked for until the
//   browser's own.
// - 2026-12-04, with a keyframe asked on every report of losses on the floor video's
//   link (at most every 2 s; before, only when they thinned it), thinning from the
//   second report since the switch down (not after 2.5 s), and padding off on the
//   transport-wide feedback's losses (sooner than the receiver reports), six runs at
//   16 to 22 kB/s: just under the top layer 0, 0, 208, 209, 411 and 621 ms; just under
//   the lowest layer 214, 233, 414, 829, 1227 and 2267 ms. The 2267: down from the
//   middle layer straight to 0.9 of the lowest, where the lower layer's keyframes were
//   lost on the policer until its temporal layers were left out. (Thinning from the
//   second report was taken back: with resends allowed up to half a stream's bytes it
//   thinned a lowest layer the link carried whole in the simulcast suite. Resends at
//   half gave 212 and 1660 ms at most in six runs, but once a loop of pacer cuts and
//   keyframes, 9.5 s, down from 720 lines to 16 kB/s: taken back too. Padding off on
//   the transport-wide feedback's losses was taken back as well: the H.264 test of
//   e2ee-codecs failed with it, why not found yet.)
// - Later on 2026-12-04 (the build as it is, those three taken back), at 16 kB/s:
//   just under the lowest layer 410, 1647, 1651 and 1853 ms. A TWCC estimate stays
//   far above a policer (1.1 Mbit/s on 128 kbit/s: no queue to see), and each keyframe
//   asked on losses left at its pace in a burst the policer cut. With the estimate
//   restarted from what flows when losses thin the video, eight runs: 615, 621, 1031,
//   1032, 1231, 1233, 1434 and 1652 ms. (At the measured cap, 17 to 22 kB/s, four
//   runs with the restart: 406 to 639 ms; four without: 0 to 614.) What is left: the
//   restart sets off str0m's first probes, whose padding takes the policer's tokens,
//   and an estimate that losses bring under the thinned video sends it past the pacer
//   in bursts (holding it at the pacer until its queue waited 0.5 s was worse in
//   sans-IO, and so was bypassing the pacer for 10 s after a backlog cut).
// - Later still, with the link shaped to what its losses proved (ShardConfig's
//   shape_links, on in that build; off by default), four runs at the 1 s bound: just
//   under the top layer 0, 207, 420 ms and 0; just under the lowest layer 205, 208 and
//   212 ms, and once 16 s: the floor video sent past the pacer (its budget under what
//   its lowest layer takes) overran the policer, whose losses made the shaping fall to
//   half the link, and the video paused until the estimate found room again.
// - Later again (shaping on in the build run), with padding and probes held within the
//   shaped rate, and what the server's own pacer dropped not read as the link's losses,
//   three runs: just under the top layer 0 to 206 ms, just under the lowest layer 211,
//   216 and 614 ms. With str0m's pacer also out of the way while shaped (which the
//   sans-IO suites needed), three more: just under the top layer 206 to 417 ms, just
//   under the lowest layer 413, 1850 and 6618 ms. The 1850: down from the middle layer
//   while the shaped rate, inherited from the phase before, was 660 kbit/s on a link of
//   176: the receiver reports' shares (4 %: a resend that made up for a loss counts as
//   received) brought it down too slowly. The 6618: shaped at 238 kbit/s on a link of
//   136, a report of 67 % lost (one window against another) cut it to 73, under the
//   base temporal layer, and the video paused until the estimate found room. What is
//   left is the rate's measure: transport-wide feedback counts every datagram in the
//   window the server sends in, but str0m gives only its share of packets, which the
//   microphone's many small ones dilute (taking the larger of the two failed three
//   sans-IO tests).
// - 2026-12-04, stop 42 (shaping off, the default): at the measured cap (17 to 22
//   kB/s) the build before this stop kept both phases under 1 s in 4 runs of 5 (just
//   under the lowest layer 215 to 628 ms; the fifth measured 16 kB/s: 1081 ms), and at
//   16 kB/s (E2E_ADAPT_LOW_KBYTES=16) in none of 3 (1053, 1081, 3979 ms): each keyframe
//   asked on the way down (one per temporal layer left out, 0.3 s apart) cost a link
//   that short more losses, and a layer that came down from the middle one for losses
//   lost as much again for 2.5 s before its own losses could thin it. With heavy losses
//   (over 10 %) thinning straight to the base temporal layer, no second keyframe within
//   1 s, and a layer that comes down for losses that say the link delivered less than
//   it takes starting thinned: at the measured cap 221 and 851 ms; at 16 kB/s 618, 619,
//   620, 628, 833, 836, 839, 1450, 1657 and 2081 ms. The 1657: on the base temporal
//   layer alone, losses (a third to a half of its few packets, a report said) broke a
//   picture, and the keyframe asked for them every 2 s mended it only at the next. The
//   2081: the lowest layer's keyframe, asked at the
//   switch, lost on a policer still full of the middle layer's last packets, and the
//   next asked only 2 s later (the middle layer's keyframe asked 0.4 s before held it
//   back; letting a new layer's ask go at once looped keyframes and losses in sans-IO).
// Run it with E2E_TESTS=e2e/adaptation.test.mjs bash e2e/run.sh.
//
// Environment (besides those of call.test.mjs):
//   E2E_ADAPT_MAX_FREEZE_MS  the longest either may go without a new decoded frame
//                            (default 2500; the goal is 1000)
//   E2E_ADAPT_LOW_KBYTES     the cap of the lowest-layer phase, kB/s (default: measured,
//                            0.9 x what the lowest layer and the microphone take)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import {
  steps, SFU_URL, RUN, sleep, contexts, profileDirs, Participant, LEAN_ARGS, fakeCameraFps,
  nftDeleteTable, nftCounterOf,
} from './lib.mjs';
import { expectHeight, capDownlink, receiveRate, keepResolution, watch } from './video.mjs';

const LIMITED_NS = 'sfu-tls';
const LIMITED_IF = 'sfu-v-tls';
const TABLE = 'e2e_adaptation';
const TOP_HEIGHT = 720;
const MAX_FREEZE_MS = Number(process.env.E2E_ADAPT_MAX_FREEZE_MS || 2500);
/** How long each cap is held while both pictures are watched. */
const PHASE_MS = 30000;

/** What `p` sends of its camera's layer `rid`, payload kbytes/s over `ms`. */
async function layerRate(p, rid, ms = 4000) {
  const bytes = async () => ((await p.outStats()).find((s) => s.source === 'camera' && s.rid === rid) || {}).bytesSent || 0;
  const t0 = performance.now();
  const a = await bytes();
  await sleep(ms);
  return ((await bytes()) - a) / (performance.now() - t0);
}

describe('adaptation: a capped receiver keeps a picture, the other side never notices', { timeout: 600000 }, () => {
  const room = `e2e-adapt-${RUN}`;
  const pam = new Participant('Pam');
  const lou = new Participant('Lou'); // in sfu-tls: the capped downlink
  const everyone = [pam, lou];
  const { step, failed } = steps();
  let ready = false;
  /** Each phase's longest freeze, both directions. */
  const phases = [];

  before(async () => {
    const res = await fetch(`${SFU_URL}/healthz`);
    assert.equal(res.status, 200, `server not healthy at ${SFU_URL}`);
    nftDeleteTable(LIMITED_NS, 'e2e');
    nftDeleteTable(LIMITED_NS, TABLE);
  });

  after(async () => {
    nftDeleteTable(LIMITED_NS, TABLE);
    if (failed()) {
      for (const p of everyone) {
        if (p.logs && p.logs.length) console.log(`--- browser console of ${p.name}:\n${p.logs.slice(-40).join('\n')}`);
      }
    }
    await Promise.all(contexts.map((c) => c.close().catch(() => {})));
    if (!process.env.E2E_KEEP_PROFILES) for (const d of profileDirs) rmSync(d, { recursive: true, force: true });
  });

  step('two join; each decodes the other, Lou gets Pam\'s top layer', async () => {
    await pam.join(room, { query: '?video=1280x720', args: [...LEAN_ARGS, fakeCameraFps(15)] });
    await lou.join(room, { query: '?video=320x180', args: [...LEAN_ARGS, fakeCameraFps(15)], netns: LIMITED_NS });
    // Keep Pam's encoder on its resolutions on a busy machine: this test is about the
    // server's choice.
    await keepResolution(pam);
    // Lou pins Pam's camera: the page asks for the size its tile shows otherwise.
    await lou.page.click(`.tile[data-key="p${pam.id}"] .pin`);
    await lou.page.waitForSelector(`#stage .tile.pinned[data-key="p${pam.id}"]`, { timeout: 10000 });
    await expectHeight([lou], pam, 'Lou to decode Pam\'s camera at 720 lines', (h) => h === TOP_HEIGHT, 150000);
    await expectHeight([pam], lou, 'Pam to decode Lou\'s camera', (h) => h > 0, 60000);
    const transport = await lou.page.evaluate(() => window.demo.call.transportInUse());
    assert.equal(transport, 'UDP', 'Lou\'s media comes over UDP, through the link the cap polices');
    ready = true;
  }, 240000);

  /** Caps Lou's downlink at `kbytes`/s for PHASE_MS, watching both pictures. */
  let thinnedBefore = 0;
  async function cappedPhase(what, kbytes) {
    nftDeleteTable(LIMITED_NS, TABLE);
    const burst = capDownlink(LIMITED_NS, LIMITED_IF, TABLE, kbytes);
    const louSees = watch(lou, pam);
    const pamSees = watch(pam, lou);
    await sleep(PHASE_MS);
    const [l, p] = [await louSees.stop(), await pamSees.stop()];
    const dropped = nftCounterOf(LIMITED_NS, TABLE, 'capped');
    const metrics = await (await fetch(`${SFU_URL}/metrics`)).text();
    const lines = metrics.split('\n').filter((x) => /^sfu_(layer_choices_total\{|video_frozen_ms_total\{|thinned_packets_total )/.test(x));
    const thinned = Number((metrics.match(/^sfu_thinned_packets_total (\d+)/m) || [0, 0])[1]);
    phases.push({ what, kbytes, louLongest: l.longest, pamLongest: p.longest });
    console.log(`E2E adaptation ${what}: cap ${kbytes} kB/s (burst ${burst}), dropped ${JSON.stringify(dropped)}; `
      + `Lou's picture of Pam: longest freeze ${l.longest} ms, heights ${JSON.stringify(l.heights)}; `
      + `Pam's of Lou: longest freeze ${p.longest} ms; server: ${lines.join(' ')}`);
    console.log(`E2E adaptation ${what}: Lou's samples from ${l.start} (ms:height/frames): ${l.compact}`);
    // The cap limited Lou's link: it dropped what overran it, or the server had already
    // left out pictures to fit it (the floor's temporal layers).
    assert.ok(dropped.packets > 0 || thinned > thinnedBefore,
      `the cap dropped packets or the server thinned Lou's video (${JSON.stringify(dropped)}, thinned ${thinned})`);
    thinnedBefore = thinned;
    assert.ok(l.longest < MAX_FREEZE_MS, `Lou's picture of Pam stopped for ${l.longest} ms (${what}); heights ${JSON.stringify(l.heights)}`);
    assert.ok(p.longest < MAX_FREEZE_MS, `Pam's picture of Lou stopped for ${p.longest} ms (${what})`);
    return l;
  }

  step('Lou\'s downlink just under Pam\'s top layer: he goes down, his picture never stops', async () => {
    const top = await receiveRate(lou, pam);
    const l = await cappedPhase('just under the top layer', Math.max(20, Math.round(top * 0.9)));
    assert.ok(l.heights.some((h) => h > 0 && h < TOP_HEIGHT), `Lou went below the top layer: ${JSON.stringify(l.heights)}`);
  }, 120000, () => ready);

  step('Lou\'s downlink just under Pam\'s lowest layer: he keeps it, his picture never stops', async () => {
    // The lowest layer and the microphone, as Lou's link carries them (RTP and SRTP
    // headers on the payloads the stats count: about a tenth more).
    const q = await layerRate(pam, 'q');
    const mic = ((await lou.stats()).find((s) => s.participant_id === pam.id && s.source === 'microphone') || {});
    const audio = mic.bytesReceived ? 6 : 0; // Opus at 32 kbit/s and its headers, kB/s
    const kbytes = Number(process.env.E2E_ADAPT_LOW_KBYTES) || Math.max(8, Math.round((q * 1.1 + audio) * 0.9));
    const before = thinnedBefore;
    const l = await cappedPhase('just under the lowest layer', kbytes);
    assert.ok(thinnedBefore > before, `the server left out pictures of Pam's lowest layer for Lou (${before} -> ${thinnedBefore})`);
    assert.ok(l.heights.filter((h) => h > 0).every((h) => h < TOP_HEIGHT) || l.heights.length > 1,
      `Lou decodes below the top layer: ${JSON.stringify(l.heights)}`);
  }, 120000, () => ready);

  step('the cap lifted, Lou climbs back to the top layer', async () => {
    nftDeleteTable(LIMITED_NS, TABLE);
    await expectHeight([lou], pam, 'Lou to decode Pam\'s camera at 720 lines again', (h) => h === TOP_HEIGHT, 150000);
    console.log(`E2E adaptation phases ${JSON.stringify(phases)}`);
  }, 180000, () => ready);
});
