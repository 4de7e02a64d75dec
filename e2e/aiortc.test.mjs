// End-to-end test with a REMB-only receiver (issue 24): Pam and Lou, two Chromium
// participants, are in a call; an aiortc receiver (PyPI `aiortc`, driven by
// e2e/aiortc_receiver.py over the server's own WebSocket signaling) joins it, subscribes
// to both microphones and both cameras, and decodes them for 30 s. Its first video frame
// must come within 5 s of its joining and no camera may then go a second without a new
// decoded frame; neither browser's picture of the other may stop for a second meanwhile
// (the same 200 ms sampling of framesDecoded as the adaptation test: video.mjs `watch`).
//
// aiortc estimates bandwidth with REMB alone, one estimator per m-line: the server must
// adapt to it from those reports (sfu-core/src/shard/remb.rs). Its token is an ordinary
// participant's (it may publish, so the server keeps a REMB estimate for it rather than
// the loss-based one of a receive-only audience) with the `plaintext` grant: aiortc can
// neither encrypt nor decrypt SFrame, so it joins with `e2ee: false`, and the browsers send
// in the clear (`?e2ee=0`, with `plaintext` too) for it to decode their frames.
//
// aiortc lives in a virtual environment, e2e/.venv, which scripts/test makes from
// e2e/requirements.txt; without it the first step fails. The Python process is a child
// of node, so it runs in node's network namespace (sfu-cli). Run through e2e/run.sh.
//
// Environment (besides those of call.test.mjs):
//   E2E_PYTHON           the Python with aiortc (default e2e/.venv/bin/python)
//   E2E_AIORTC_SECONDS   how long the aiortc receiver stays (default 30)
//   E2E_AIORTC_LOG       a file for aiortc's debug log (its RTP and RTCP packets, ICE)

import { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  steps, browserHooks, SFU_URL, WS_URL, RUN, tokenFor, Participant, LEAN_ARGS, fakeCameraFps, jsonLinesProcess,
} from './lib.mjs';
import { watch } from './video.mjs';

const E2E_DIR = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.E2E_PYTHON || join(E2E_DIR, '.venv', 'bin', 'python');
const RECEIVER = join(E2E_DIR, 'aiortc_receiver.py');
const SECONDS = Number(process.env.E2E_AIORTC_SECONDS || 30);
/** From the receiver's WebSocket opening to its first decoded frame of each camera. */
const MAX_FIRST_FRAME_MS = 5000;
/** The longest any picture (aiortc's, or a browser's) may go without a new decoded frame. */
const MAX_FREEZE_MS = 1000;
/** In the clear: what aiortc decodes must not be SFrame-encrypted (see above). */
const CLEAR = { query: '?e2ee=0&video=640x360', grants: { plaintext: true }, args: [...LEAN_ARGS, fakeCameraFps(15)] };

describe('an aiortc receiver (REMB only) in a two-person Chromium call', { timeout: 600000 }, () => {
  const room = `e2e-aiortc-${RUN}`;
  const pam = new Participant('Pam');
  const lou = new Participant('Lou');
  const { step, failed } = steps();
  let installed = false;
  let inCall = false;
  let receiver = null;

  after(() => {
    if (receiver) {
      receiver.child.kill('SIGKILL');
      if (failed()) console.log(`--- aiortc receiver: ${JSON.stringify(receiver.lines.slice(-8))}\n${receiver.stderr()}`);
    }
  });
  browserHooks([pam, lou], failed);

  step('aiortc is installed (scripts/test makes e2e/.venv from e2e/requirements.txt)', () => {
    let version;
    try {
      version = execFileSync(PYTHON, ['-c', 'import aiortc, websockets; print(aiortc.__version__)'], { timeout: 30000 })
        .toString().trim();
    } catch (err) {
      assert.fail(`no aiortc at ${PYTHON}: run scripts/test, or /usr/bin/python3 -m venv e2e/.venv && `
        + `e2e/.venv/bin/pip install -r e2e/requirements.txt (${err.message.split('\n')[0]})`);
    }
    console.log(`E2E aiortc version=${version} python=${PYTHON}`);
    installed = true;
  }, 60000);

  step('Pam and Lou join in the clear; each decodes the other', async () => {
    await pam.join(room, CLEAR);
    await lou.join(room, CLEAR);
    await pam.expectMedia([{ participant: lou, source: 'microphone' }, { participant: lou, source: 'camera' }], "Lou's media");
    await lou.expectMedia([{ participant: pam, source: 'microphone' }, { participant: pam, source: 'camera' }], "Pam's media");
    inCall = true;
  }, 120000, () => installed);

  step(`aiortc joins: both cameras within ${MAX_FIRST_FRAME_MS} ms, then no gap of ${MAX_FREEZE_MS} ms for ${SECONDS} s; `
    + 'neither browser freezes', async () => {
    const louSees = watch(lou, pam);
    const pamSees = watch(pam, lou);
    const started = performance.now();
    receiver = jsonLinesProcess(PYTHON, [RECEIVER, WS_URL, tokenFor(room, 'Rio', { grants: { plaintext: true } }),
      '--seconds', String(SECONDS), ...(process.env.E2E_AIORTC_LOG ? ['--log', process.env.E2E_AIORTC_LOG] : [])]);
    // The receiver bounds itself (--seconds and about 45 s of setup and teardown); this
    // bounds it again, should it hang.
    let timer;
    const result = await Promise.race([
      receiver.done,
      new Promise((resolve) => { timer = setTimeout(() => resolve(null), (SECONDS + 90) * 1000); }),
    ]);
    clearTimeout(timer);
    const [l, p] = [await louSees.stop(), await pamSees.stop()];
    const elapsed = Math.round(performance.now() - started);
    assert.ok(result, `the aiortc receiver did not exit within ${SECONDS + 90} s: ${JSON.stringify(receiver.lines.slice(-4))}`);
    const done = result.lines.find((x) => x.event === 'done');
    assert.ok(done, `the aiortc receiver said nothing at the end (exit ${result.code} ${result.signal}): ${result.stderr}`);

    const metrics = await (await fetch(`${SFU_URL}/metrics`)).text();
    const server = metrics.split('\n').filter((x) => /^sfu_(layer_choices_total|video_frozen_ms_total)\{/.test(x));
    const videos = done.tracks.filter((t) => t.kind === 'video');
    const audios = done.tracks.filter((t) => t.kind === 'audio');
    const fmt = (t) => `${t.name}/${t.source}: first ${t.first_frame_ms} ms, longest gap ${t.longest_gap_ms} ms, `
      + `${t.frames} frames, ${JSON.stringify(t.size)}, rtp ${JSON.stringify(t.rtp)}`;
    console.log(`E2E aiortc receiver: ${videos.map(fmt).join('; ')}; audio frames `
      + `${audios.map((t) => `${t.name} ${t.frames}`).join(', ')}; REMB ${JSON.stringify(done.remb)}; `
      + `run ${elapsed} ms, exit ${result.code}`);
    console.log(`E2E aiortc browsers: Lou's picture of Pam: longest freeze ${l.longest} ms, heights ${JSON.stringify(l.heights)}; `
      + `Pam's of Lou: longest freeze ${p.longest} ms, heights ${JSON.stringify(p.heights)}; server: ${server.join(' ')}`);
    const perSecond = result.lines.filter((x) => x.event === 'stats')
      .map((x) => `${x.t}:${Object.values(x.frames).join('/')}${x.remb.sum_bps ? `@${Math.round(x.remb.sum_bps / 1000)}k` : ''}`);
    console.log(`E2E aiortc per second (s:frames per m-line@REMB summed over its m-lines): ${perSecond.join(' ')}`);

    assert.ok(done.ok && result.code === 0, `the aiortc receiver's run: ${done.error} (exit ${result.code}) ${result.stderr}`);
    assert.equal(videos.length, 2, `aiortc subscribed both cameras: ${JSON.stringify(done.tracks)}`);
    assert.deepEqual(videos.map((t) => t.participant_id).sort(), [pam.id, lou.id].sort(), 'one camera of each');
    assert.equal(audios.length, 2, `aiortc subscribed both microphones: ${JSON.stringify(done.tracks)}`);
    for (const t of audios) assert.ok(t.frames > 0, `aiortc decoded ${t.name}'s microphone: ${fmt(t)}`);
    for (const t of videos) {
      assert.ok(t.frames > 0, `aiortc decoded frames of ${t.name}'s camera: ${fmt(t)}`);
      assert.ok(t.first_frame_ms <= MAX_FIRST_FRAME_MS, `aiortc's first frame of ${t.name}'s camera: ${fmt(t)}`);
      assert.ok(t.longest_gap_ms < MAX_FREEZE_MS, `aiortc's picture of ${t.name}'s camera stopped: ${fmt(t)}`);
    }
    assert.ok(l.longest < MAX_FREEZE_MS, `Lou's picture of Pam stopped for ${l.longest} ms; samples from ${l.start}: ${l.compact}`);
    assert.ok(p.longest < MAX_FREEZE_MS, `Pam's picture of Lou stopped for ${p.longest} ms; samples from ${p.start}: ${p.compact}`);
    assert.ok(await pam.alive() && await lou.alive(), 'both browsers are still in the call');
  }, (SECONDS + 120) * 1000, () => inCall);
});
