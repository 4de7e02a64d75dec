// End-to-end encryption with Chromium peers (docs/e2ee.md): a call of three on the demo
// page's defaults decodes everyone, the two ways of transforming frames (one participant
// forces createEncodedStreams, the others get RTCRtpScriptTransform) talk to each other,
// a participant with another room secret receives packets but decodes nothing, and what
// the server saw of the key exchange holds no key.
//
// Run through e2e/run.sh.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  steps, RUN, sleep, waitFor, Participant, browserHooks,
} from './lib.mjs';

const TEST = '?e2eetest=1';

/** `p`'s E2EE status: call.e2ee without its private parts. */
function e2eeOf(p) {
  return p.page.evaluate(() => {
    const e = window.demo.call.e2ee;
    return {
      enabled: e.enabled, transform: e.transform, generation: e.generation, step: e.step,
      kid: e.kid == null ? null : String(e.kid), safetyCode: e.safetyCode, stats: e.stats,
      peers: Object.fromEntries(e.peers),
      label: document.getElementById('e2ee-label').textContent,
    };
  });
}

/** Mean and spread of the colours of the `<video>` of tile `key`, or null before a frame. */
function tilePixels(p, key) {
  return p.page.evaluate((k) => {
    const video = document.querySelector(`.tile[data-key="${k}"] video`);
    if (!video || !video.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = 64;
    c.height = 48;
    const g = c.getContext('2d');
    g.drawImage(video, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const n = d.length / 4;
    const mean = [0, 1, 2].map((ch) => { let s = 0; for (let i = ch; i < d.length; i += 4) s += d[i]; return s / n; });
    let spread = 0;
    for (let i = 0; i < d.length; i += 4) spread += Math.abs(d[i] - mean[0]) + Math.abs(d[i + 1] - mean[1]) + Math.abs(d[i + 2] - mean[2]);
    return { mean: mean.map(Math.round), spread: Math.round(spread / n), w: video.videoWidth, h: video.videoHeight };
  }, key);
}

describe('end-to-end encrypted calls', { timeout: 600000 }, () => {
  const alice = new Participant('Alice');
  const bob = new Participant('Bob');
  const carol = new Participant('Carol');
  const mallory = new Participant('Mallory');
  const everyone = [alice, bob, carol, mallory];
  const three = [alice, bob, carol];
  const { step, failed } = steps({ timeout: 120000 });
  browserHooks(everyone, failed);
  const room = `e2e-e2ee-${RUN}`;
  const cam = (...ps) => ps.flatMap((p) => [{ participant: p, source: 'microphone' }, { participant: p, source: 'camera' }]);

  step('three on the defaults decode each other, encrypted, with one safety code', async () => {
    await alice.join(room, { query: TEST, recordSent: true });
    await bob.join(room, { query: TEST, recordSent: true });
    // Carol encrypts through createEncodedStreams, the others through RTCRtpScriptTransform.
    await carol.join(room, { query: `${TEST}&transform=streams`, recordSent: true });
    await Promise.all([
      alice.expectMedia(cam(bob, carol), 'Bob and Carol'),
      bob.expectMedia(cam(alice, carol), 'Alice and Carol'),
      carol.expectMedia(cam(alice, bob), 'Alice and Bob'),
    ]);
    const status = await waitFor('everyone to hold everyone\'s key and agree on the code', async () => {
      const s = await Promise.all(three.map(e2eeOf));
      const keyed = s.every((x) => Object.values(x.peers).length === 2 && Object.values(x.peers).every((v) => v === 'keyed'));
      const codes = new Set(s.map((x) => x.safetyCode));
      return { ok: keyed && codes.size === 1 && !codes.has(null), s };
    });
    const [a, b, c] = status.s;
    assert.deepEqual([a.transform, b.transform, c.transform], ['script', 'script', 'streams']);
    for (const [p, x] of [[alice, a], [bob, b], [carol, c]]) {
      assert.ok(x.enabled, `${p.name}: E2EE on`);
      assert.match(x.safetyCode, /^\d{4} \d{4} \d{4}$/);
      assert.match(x.label, new RegExp(`End-to-end encrypted · safety code ${x.safetyCode}`), `${p.name}'s lock`);
      assert.ok(x.stats.encrypted > 50 && x.stats.decrypted > 50, `${p.name} seals and opens frames: ${JSON.stringify(x.stats)}`);
      assert.ok(x.stats.bytesAdded / x.stats.encrypted >= 17 && x.stats.bytesAdded / x.stats.encrypted <= 30,
        `${p.name} adds 17 to 30 bytes a frame: ${JSON.stringify(x.stats)}`);
      assert.equal(x.stats.sendDropped, 0, `${p.name} dropped nothing it sent`);
    }
    // The picture decoded is the fake camera's, not a flat or broken one: as colourful as
    // the sender's own preview, in about the same colours.
    for (const [viewer, sender] of [[bob, alice], [alice, carol], [carol, bob]]) {
      const seen = await waitFor(`${viewer.name} to show ${sender.name}'s camera`, async () => {
        const remote = await tilePixels(viewer, `p${sender.id}`);
        const local = await tilePixels(sender, 'local');
        const close = remote && local && remote.mean.every((m, i) => Math.abs(m - local.mean[i]) < 40);
        return { ok: !!close && remote.spread > 10, remote, local };
      });
      assert.ok(seen.remote.w > 0);
    }
  });

  step('every microphone is heard, late joiners\' too (m-lines added by renegotiation)', async () => {
    // Alice's m-lines for Bob and Carol, and Bob's for Carol, came with later offers.
    const energy = async (p) => new Map((await p.stats()).filter((s) => s.kind === 'audio')
      .map((s) => [s.participant_id, { energy: s.totalAudioEnergy || 0, concealed: s.concealedSamples, samples: s.totalSamplesReceived }]));
    const before = await Promise.all(three.map(energy));
    await sleep(3000);
    const after = await Promise.all(three.map(energy));
    three.forEach((p, i) => {
      for (const o of three.filter((x) => x !== p)) {
        const [a, b] = [before[i].get(o.id), after[i].get(o.id)];
        assert.ok(a && b && b.energy > a.energy,
          `${p.name} hears ${o.name}'s microphone: ${JSON.stringify({ before: a, after: b })}`);
      }
    });
  });

  step('a participant with another room secret receives packets and decodes nothing', async () => {
    await mallory.join(room, { query: TEST, secret: `not-the-${RUN}` });
    const seen = await waitFor('Mallory to receive the others, undecrypted', async () => {
      const stats = await mallory.stats();
      const video = stats.filter((s) => s.kind === 'video');
      const m = await e2eeOf(mallory);
      const ok = video.length === 3 && video.every((s) => s.packetsReceived > 50)
        && m.stats.undecryptable > 20;
      return { ok, video, stats: m.stats };
    });
    for (const s of seen.video) assert.equal(s.framesDecoded || 0, 0, `Mallory decodes nothing: ${JSON.stringify(s)}`);
    assert.equal(seen.stats.decrypted, 0, 'Mallory opens no frame');
    // The three mark Mallory as not decryptable, on the page too, and keep decoding each other.
    await waitFor('the three to mark Mallory', async () => {
      const s = await Promise.all(three.map(e2eeOf));
      const badges = await Promise.all(three.map((p) => p.page.evaluate((id) =>
        !!document.querySelector(`.tile[data-key="p${id}"] [data-badge="cannot decrypt"]`), mallory.id)));
      return { ok: s.every((x) => x.peers[mallory.id] === 'failed') && badges.every(Boolean), s, badges };
    });
    for (const [viewer, others] of [[alice, [bob, carol]], [bob, [alice, carol]], [carol, [alice, bob]]]) {
      const before = await viewer.stats();
      await sleep(1500);
      const after = await viewer.stats();
      for (const o of others) {
        const f = (st) => st.find((s) => s.participant_id === o.id && s.source === 'camera')?.framesDecoded || 0;
        assert.ok(f(after) > f(before), `${viewer.name} still decodes ${o.name}: ${f(before)} -> ${f(after)}`);
      }
      const mal = after.find((s) => s.participant_id === mallory.id && s.source === 'camera');
      assert.ok(!mal || !mal.framesDecoded, `${viewer.name} decodes nothing of Mallory: ${JSON.stringify(mal)}`);
    }
    // Mallory's safety code differs: its exchange verified nobody.
    const codes = await Promise.all([alice, mallory].map(e2eeOf));
    assert.notEqual(codes[0].safetyCode, codes[1].safetyCode);
  });

  step('no key appears in what the clients sent or the server relayed', async () => {
    for (const p of three) {
      const keys = await p.page.evaluate(() => window.demo.call.e2ee.testKeys());
      assert.ok(keys.length >= 2, `${p.name} used and received keys`);
      const sent = JSON.stringify(await p.sent());
      const wire = JSON.stringify((await p.state()).wire || []);
      const relays = (await p.sent('e2ee')).length;
      assert.ok(relays >= 2, `${p.name} sent key-exchange messages: ${relays}`);
      // The server's log so far (e2e/run.sh says where it is).
      const log = process.env.E2E_LOG ? readFileSync(process.env.E2E_LOG, 'utf8') : '';
      assert.ok(!process.env.E2E_LOG || log.length > 0, 'the server log is readable');
      for (const { key } of keys) {
        const hex = Buffer.from(key, 'base64').toString('hex');
        for (const text of [sent, wire, log]) {
          assert.ok(!text.includes(key) && !text.includes(hex) && !text.includes(key.replace(/=+$/, '')),
            `${p.name}: a key in the clear on the wire`);
        }
      }
    }
  });
});
