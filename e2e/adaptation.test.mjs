// End-to-end test of bandwidth adaptation (issue 24): a two-person call in Chromium. Pam
// publishes her camera as three layers (1280x720 down to 320x180) and her microphone; Lou,
// in network namespace sfu-tls, publishes his. Lou's downlink is policed with a real
// nftables rule just under what Pam's top layer takes: his picture of her must never stop
// for a second while he goes down, and hers of him never stops at all.
//
// Then just under what her lowest layer takes, where the server keeps him on that layer
// (its floor) rather than pausing it: that step runs only with E2E_ADAPT_LOWEST=1, and
// fails today. The layer's keyframes, larger than the policer's burst, never arrive
// whole, and the picture stops for most of the 30 s; what would keep it going (dropping
// the layer's temporal layers to fit) is not built yet. Not yet in run.sh's default list
// (its first step passed twice, at 408 and 815 ms against a bound of 1000: too close to
// land in CI); run it with E2E_TESTS=e2e/adaptation.test.mjs bash e2e/run.sh.
//
// Environment (besides those of call.test.mjs):
//   E2E_ADAPT_MAX_FREEZE_MS  the longest either may go without a new decoded frame
//                            (default 1000)
//   E2E_ADAPT_LOWEST         also cap just under the lowest layer (see above)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import {
  steps, SFU_URL, RUN, sleep, contexts, profileDirs, Participant, LEAN_ARGS, fakeCameraFps,
  nftDeleteTable, nftCounterOf,
} from './lib.mjs';
import { cameraAt, expectHeight, capDownlink, receiveRate, keepResolution } from './video.mjs';

const LIMITED_NS = 'sfu-tls';
const LIMITED_IF = 'sfu-v-tls';
const TABLE = 'e2e_adaptation';
const TOP_HEIGHT = 720;
const MAX_FREEZE_MS = Number(process.env.E2E_ADAPT_MAX_FREEZE_MS || 1000);
/** How long each cap is held while both pictures are watched. */
const PHASE_MS = 30000;

/**
 * Watches `p`'s decoding of `publisher`'s camera every 200 ms until stopped; `stop()`
 * returns the samples and the longest time without a new frame.
 */
function watch(p, publisher) {
  const samples = [];
  const t0 = performance.now();
  const wall = Date.now();
  let on = true;
  const done = (async () => {
    while (on) {
      const s = await cameraAt(p, publisher).catch(() => null);
      samples.push({ at: Math.round(performance.now() - t0), height: s && s.frameHeight, frames: s ? s.framesDecoded : 0 });
      await sleep(200);
    }
  })();
  return {
    samples,
    async stop() {
      on = false;
      await done;
      let longest = 0;
      let grew = samples.length ? samples[0].at : 0;
      for (let i = 1; i < samples.length; i++) {
        if (samples[i].frames > samples[i - 1].frames) grew = samples[i].at;
        longest = Math.max(longest, samples[i].at - grew);
      }
      const heights = [];
      for (const s of samples) if (heights[heights.length - 1] !== s.height) heights.push(s.height);
      const compact = samples.map((s) => `${s.at}:${s.height}/${s.frames}`).join(' ');
      return { longest, heights, count: samples.length, compact, start: new Date(wall).toISOString() };
    },
  };
}

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
  async function cappedPhase(what, kbytes) {
    nftDeleteTable(LIMITED_NS, TABLE);
    const burst = capDownlink(LIMITED_NS, LIMITED_IF, TABLE, kbytes);
    const louSees = watch(lou, pam);
    const pamSees = watch(pam, lou);
    await sleep(PHASE_MS);
    const [l, p] = [await louSees.stop(), await pamSees.stop()];
    const dropped = nftCounterOf(LIMITED_NS, TABLE, 'capped');
    const metrics = await (await fetch(`${SFU_URL}/metrics`)).text();
    const lines = metrics.split('\n').filter((x) => /^sfu_(layer_choices_total|video_frozen_ms_total)\{/.test(x));
    phases.push({ what, kbytes, louLongest: l.longest, pamLongest: p.longest });
    console.log(`E2E adaptation ${what}: cap ${kbytes} kB/s (burst ${burst}), dropped ${JSON.stringify(dropped)}; `
      + `Lou's picture of Pam: longest freeze ${l.longest} ms, heights ${JSON.stringify(l.heights)}; `
      + `Pam's of Lou: longest freeze ${p.longest} ms; server: ${lines.join(' ')}`);
    console.log(`E2E adaptation ${what}: Lou's samples from ${l.start} (ms:height/frames): ${l.compact}`);
    assert.ok(dropped.packets > 0, `the cap dropped packets: it limited Lou's link (${JSON.stringify(dropped)})`);
    assert.ok(l.longest < MAX_FREEZE_MS, `Lou's picture of Pam stopped for ${l.longest} ms (${what}); heights ${JSON.stringify(l.heights)}`);
    assert.ok(p.longest < MAX_FREEZE_MS, `Pam's picture of Lou stopped for ${p.longest} ms (${what})`);
    return l;
  }

  step('Lou\'s downlink just under Pam\'s top layer: he goes down, his picture never stops', async () => {
    const top = await receiveRate(lou, pam);
    const l = await cappedPhase('just under the top layer', Math.max(20, Math.round(top * 0.9)));
    assert.ok(l.heights.some((h) => h > 0 && h < TOP_HEIGHT), `Lou went below the top layer: ${JSON.stringify(l.heights)}`);
  }, 120000, () => ready);

  step('Lou\'s downlink just under Pam\'s lowest layer: he keeps it, his picture never stops', async (t) => {
    if (!process.env.E2E_ADAPT_LOWEST) {
      t.skip('fails today (keyframes of the floor layer larger than the policer\'s burst): E2E_ADAPT_LOWEST=1 runs it');
      return;
    }
    // The lowest layer and the microphone, as Lou's link carries them (RTP and SRTP
    // headers on the payloads the stats count: about a tenth more).
    const q = await layerRate(pam, 'q');
    const mic = ((await lou.stats()).find((s) => s.participant_id === pam.id && s.source === 'microphone') || {});
    const audio = mic.bytesReceived ? 6 : 0; // Opus at 32 kbit/s and its headers, kB/s
    const kbytes = Math.max(8, Math.round((q * 1.1 + audio) * 0.9));
    const l = await cappedPhase('just under the lowest layer', kbytes);
    assert.ok(l.heights.filter((h) => h > 0).every((h) => h < TOP_HEIGHT) || l.heights.length > 1,
      `Lou decodes below the top layer: ${JSON.stringify(l.heights)}`);
  }, 120000, () => ready);

  step('the cap lifted, Lou climbs back to the top layer', async () => {
    nftDeleteTable(LIMITED_NS, TABLE);
    await expectHeight([lou], pam, 'Lou to decode Pam\'s camera at 720 lines again', (h) => h === TOP_HEIGHT, 150000);
    console.log(`E2E adaptation phases ${JSON.stringify(phases)}`);
  }, 180000, () => ready);
});
