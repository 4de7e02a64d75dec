// End-to-end test of SVC: a Chromium publisher sends its camera as one VP9 stream of three
// spatial and three temporal layers (scalability mode L3T3_KEY: 320x180, 640x360,
// 1280x720), two Chromium receivers pin it, and each gets the spatial layers its network
// carries: the server forwards the layers up to the chosen one and leaves the others out
// of that receiver's stream. One receiver runs in network namespace sfu-tls, whose
// downlink this file caps with a real nftables policer. Run through e2e/run.sh.
//
// Environment (besides those of call.test.mjs):
//   E2E_SVC_CODEC  the camera's codec, VP9 (default) or AV1 (whose software encoder is
//                  slow at 720p: not in CI; its receivers negotiate the dependency
//                  descriptor, which Chromium needs to decode AV1 SVC)
//   E2E_SVC_MAX_STALL_MS  the longest the limited receiver may go without decoding a frame
//                  once capped, the switch included (default 5000)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import {
  steps, serverMetrics,
  SFU_URL, RUN, waitFor, contexts, profileDirs, Participant, LEAN_ARGS, fakeCameraFps,
  nftDeleteTable, nftCounterOf,
} from './lib.mjs';
import { cameraAt, expectHeight, capDownlink, receiveRate, followDownSwitch } from './video.mjs';

const LIMITED_NS = 'sfu-tls';
const LIMITED_IF = 'sfu-v-tls';
const TABLE = 'e2e_svc';
const MODE = 'L3T3_KEY';
const CODEC = (process.env.E2E_SVC_CODEC || 'VP9').toUpperCase();
const DD = CODEC === 'AV1' ? '&dd=1' : '';
const TOP_HEIGHT = 720;
const MAX_STALL_MS = Number(process.env.E2E_SVC_MAX_STALL_MS || 5000);
/** Receivers may publish (so their downlink is estimated) but capture nothing. */
const VIEWER = { publish_audio: true, publish_video: false, publish_screen: false, subscribe: true };

describe('SVC: each receiver gets the spatial layers its network carries', { timeout: 600000 }, () => {
  const room = `e2e-svc-${RUN}`;
  const pam = new Participant('Pam'); // publishes her camera at 1280x720, L3T3_KEY
  const ann = new Participant('Ann'); // receives, open network
  const lou = new Participant('Lou'); // receives, in sfu-tls: capped downlink
  const everyone = [pam, ann, lou];
  const { step, failed } = steps();
  let onTop = false;

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

  /** Pam's camera stream: codec, scalability mode, size, rate, limitation. */
  async function pamCamera() {
    return (await pam.outStats()).filter((s) => s.source === 'camera').map((s) => ({
      codec: s.codec, mode: s.scalabilityMode, height: s.frameHeight, fps: s.framesPerSecond,
      targetBitrate: s.targetBitrate, limitedBy: s.qualityLimitationReason,
    }));
  }

  step(`a publisher sends its 1280x720 camera as one ${CODEC} ${MODE} stream`, async () => {
    await pam.join(room, { query: `?video=1280x720&svc=${MODE}&codec=${CODEC}${DD}`, args: [...LEAN_ARGS, fakeCameraFps(15)] });
    // Keep the publisher's CPU adaptation from scaling the picture down on a busy machine.
    await pam.page.evaluate(async () => {
      const call = window.demo.call;
      const sender = call.pc.getSenders().find((s) => s.track === call.localTracks.get('camera').track);
      const params = sender.getParameters();
      params.degradationPreference = 'maintain-resolution';
      await sender.setParameters(params).catch(() => {});
    });
    const camera = await waitFor(`Pam to send ${CODEC} in layers`, async () => {
      const c = await pamCamera();
      return { ok: c.length === 1 && (c[0].codec || '').toUpperCase() === `VIDEO/${CODEC}` && c[0].height === TOP_HEIGHT, c };
    }, { timeout: 30000 });
    console.log(`E2E svc publisher ${JSON.stringify(camera.c)}`);
  }, 90000);

  step('two receivers, one behind a link that will be capped, pin it and decode 720 lines', async () => {
    const listen = { grants: VIEWER, query: `?media=0${DD}`, args: LEAN_ARGS };
    await ann.join(room, listen);
    await lou.join(room, { ...listen, netns: LIMITED_NS });
    const pamMedia = [{ participant: pam, source: 'microphone' }, { participant: pam, source: 'camera' }];
    await Promise.all([ann, lou].map((p) => p.expectMedia(pamMedia, "Pam's camera and microphone")));
    for (const p of [ann, lou]) {
      await p.page.click(`.tile[data-key="p${pam.id}"] .pin`);
      await p.page.waitForSelector(`#stage .tile.pinned[data-key="p${pam.id}"]`, { timeout: 10000 });
    }
    const seen = await expectHeight([ann, lou], pam, 'both receivers to decode all three layers (720 lines)',
      (h) => h === TOP_HEIGHT, 150000, pamCamera);
    const codecs = await Promise.all([ann, lou].map(async (p) => (await cameraAt(p, pam)).codec));
    assert.ok(codecs.every((c) => (c || '').toUpperCase() === `VIDEO/${CODEC}`), `the receivers decode ${CODEC}: ${codecs}`);
    console.log(`E2E svc top ${JSON.stringify(seen.seen)} publisher=${JSON.stringify(seen.publisher)}`);
    if (DD) {
      // The server forwards the dependency descriptor: negotiated on the receivers' m-lines.
      for (const p of [ann, lou]) {
        const dd = await p.page.evaluate(() => {
          const sdp = window.demo.call.pc.remoteDescription.sdp;
          return sdp.split(/\r?\nm=/).filter((m) => m.startsWith('video'))
            .map((m) => /a=extmap:\d+ https:\/\/aomediacodec.github.io\/av1-rtp-spec\/#dependency-descriptor/.test(m));
        });
        assert.ok(dd.length > 0 && dd.every(Boolean), `${p.name}'s answer negotiates the dependency descriptor on video: ${dd}`);
      }
    }
    onTop = true;
  }, 240000);

  step('with its downlink capped, the limited receiver gets fewer layers and keeps decoding', async () => {
    const before = await serverMetrics();
    const topKBytes = await receiveRate(lou, pam);
    const capKBytes = Math.min(150, Math.max(30, Math.round(topKBytes / 2)));
    const burst = capDownlink(LIMITED_NS, LIMITED_IF, TABLE, capKBytes);
    const cappedAt = performance.now();
    console.log(`E2E svc cap top_kbytes_per_s=${topKBytes.toFixed(1)} cap_kbytes_per_s=${capKBytes} burst_kbytes=${burst}`);
    const { samples, switchedAt, longestStall, compact, fps } = await followDownSwitch(lou, pam, TOP_HEIGHT, cappedAt);
    const dropped = nftCounterOf(LIMITED_NS, TABLE, 'capped');
    const m = await serverMetrics();
    const delta = (k) => (m[k] ?? 0) - (before[k] ?? 0);
    console.log(`E2E svc down-switch switched_after_ms=${switchedAt == null ? 'never' : Math.round(switchedAt)} `
      + `longest_stall_ms=${longestStall} dropped=${JSON.stringify(dropped)} layer_switches=${delta('sfu_layer_switches_total')} `
      + `dd_read=${delta('sfu_dependency_descriptors_read_total')} dd_unreadable=${delta('sfu_dependency_descriptors_unreadable_total')} `
      + `samples(ms:height/frames)=${compact}`);
    assert.ok(dropped.packets > 0, `the cap limited Lou's link (${JSON.stringify(dropped)})`);
    assert.ok(switchedAt != null, `Lou went below 720 lines within 60 s of the cap; publisher: `
      + `${JSON.stringify(await pamCamera())}; samples: ${compact}`);
    // Upgrades are held for 8 s from the server's decision (a little before the receiver
    // shows it); after that the server may try the top again, and a policer's burst lets
    // the estimator's probes through.
    const held = samples.filter((s) => s.at >= switchedAt && s.at < switchedAt + 5000);
    assert.ok(held.every((s) => s.height > 0 && s.height < TOP_HEIGHT), `Lou stays on fewer layers: ${compact}`);
    assert.ok(longestStall <= MAX_STALL_MS, `Lou's video kept decoding through the switch: `
      + `no frame for ${longestStall} ms (at most ${MAX_STALL_MS}); samples: ${compact}`);
    assert.ok(fps >= 5, `Lou decodes at least 5 frames/s on fewer layers (${fps.toFixed(1)}): ${compact}`);
    assert.ok(delta('sfu_layer_switches_total') > 0, 'the server counted the switch');
    // One stream, one encoder: the others still get every layer.
    await expectHeight([ann], pam, 'Ann to keep decoding 720 lines', (h) => h === TOP_HEIGHT, 20000, pamCamera);
  }, 180000, () => onTop);

  step('once the cap is lifted, the limited receiver climbs back to 720 lines', async () => {
    nftDeleteTable(LIMITED_NS, TABLE);
    const seen = await expectHeight([lou], pam, 'Lou to decode 720 lines again', (h) => h === TOP_HEIGHT, 150000, pamCamera);
    console.log(`E2E svc up-switch ${JSON.stringify(seen.seen)}`);
  }, 180000, () => onTop);
});
