// End-to-end encryption beyond the demo page's defaults, with Chromium peers
// (docs/e2ee.md): cameras that send H.264 (its NAL units laid out as the packetizer and
// depacketizer need, the ciphertext escaped) and AV1 decode each other, and the server's
// tap holds sealed frames only; a call whose keys come from the application
// (`e2ee: {external: true}`) sends nothing before it has a key, decodes once the keys
// are given, exchanges none through the server, and follows the application's rotation.
//
// Run through e2e/run.sh.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  steps, RUN, sleep, waitFor, Participant, browserHooks,
} from './lib.mjs';
import { frameHash, tapMark } from './tap.mjs';
import { kidSender } from '../signaling/web/client/e2ee-layout.js';
import { readFrame } from '../signaling/web/client/e2ee-frame.js';
import { nalUnits } from '../signaling/web/client/e2ee-h264.js';
import {
  TAP, TEST, e2eeOf, framesOf, opened, testKeys, tilePixels,
} from './e2ee-check.mjs';

describe('end-to-end encryption: H.264, AV1 and keys from the application', { timeout: 600000 }, () => {
  const hal = new Participant('Hal');
  const ida = new Participant('Ida');
  const ava = new Participant('Ava');
  const ben = new Participant('Ben');
  const jay = new Participant('Jay');
  const kim = new Participant('Kim');
  const everyone = [hal, ida, ava, ben, jay, kim];
  const { step, failed } = steps({ timeout: 120000 });
  browserHooks(everyone, failed);
  const room = `e2e-e2ee-codecs-${RUN}`;
  const cam = (...ps) => ps.flatMap((p) => [{ participant: p, source: 'microphone' }, { participant: p, source: 'camera' }]);
  const cameraOf = async (viewer, sender) => (await viewer.stats())
    .find((s) => s.participant_id === sender.id && s.source === 'camera') || {};

  /** `viewer` shows `sender`'s camera: decoded, as colourful as the sender's preview. */
  async function showsCamera(viewer, sender) {
    await waitFor(`${viewer.name} to show ${sender.name}'s camera`, async () => {
      const remote = await tilePixels(viewer, `p${sender.id}`);
      const local = await tilePixels(sender, 'local');
      const close = remote && local && remote.mean.every((m, i) => Math.abs(m - local.mean[i]) < 40);
      return { ok: !!close && remote.spread > 10, remote, local };
    });
  }

  /** Two join `name`'s room with `query` and decode each other's camera in `codec`. */
  async function pairDecodes(a, b, name, query, codec) {
    await a.join(`${room}-${name}`, { query });
    await b.join(`${room}-${name}`, { query });
    await Promise.all([a.expectMedia(cam(b), b.name), b.expectMedia(cam(a), a.name)]);
    for (const [viewer, sender] of [[a, b], [b, a]]) {
      const s = await cameraOf(viewer, sender);
      assert.equal((s.codec || '').toUpperCase(), `VIDEO/${codec}`, `${viewer.name} receives ${codec}: ${JSON.stringify(s)}`);
      await showsCamera(viewer, sender);
    }
    const { status } = await waitFor('both to have sealed and opened video frames', async () => {
      const s = await Promise.all([a, b].map(e2eeOf));
      return { ok: s.every((x) => x.stats.sentVideo > 50 && x.stats.receivedVideo > 50 && x.stats.decrypted > 50), status: s };
    });
    for (const x of status) {
      assert.ok(x.enabled, 'E2EE on');
      assert.equal(x.stats.sendDropped, 0, `nothing dropped: ${JSON.stringify(x.stats)}`);
      assert.equal(x.stats.undecryptable, 0, `everything opened: ${JSON.stringify(x.stats)}`);
    }
  }

  step('H.264 cameras decode each other, their NAL units laid out for SFrame', async () => {
    await pairDecodes(hal, ida, 'h264', `${TEST}&codec=H264`, 'H264');
    // What the server forwarded: H.264 frames whose NAL headers it can read, each one
    // sealed by its sender (no start code hides in the escaped part: readFrame refuses
    // one), none of them a frame before encryption.
    await Promise.all([hal, ida].map((p) => p.page.evaluate(() => window.demo.call.e2ee.recordHashes(true))));
    const from = tapMark(TAP);
    await sleep(3000);
    const to = tapMark(TAP);
    await Promise.all([hal, ida].map((p) => p.page.evaluate(() => window.demo.call.e2ee.recordHashes(false))));
    await sleep(1200);
    const byId = framesOf([hal, ida], from, to);
    for (const p of [hal, ida]) {
      const hashes = await p.page.evaluate(() => {
        const h = window.demo.call.e2ee.hashes;
        return { plain: [...h.plain], sealed: [...h.sealed] };
      });
      const plain = new Set(hashes.plain);
      const sealed = new Set(hashes.sealed);
      assert.ok(plain.size > 50, `${p.name}'s worker hashed its frames: ${plain.size}`);
      const video = byId.get(p.id).filter((f) => f.kind === 'video');
      assert.ok(video.length > 30, `the tap saw ${p.name}'s H.264 frames: ${video.length}`);
      assert.ok(video.every((f) => f.codec === 'H264'), 'tapped as H.264');
      let matched = 0;
      for (const f of video) {
        assert.ok(!plain.has(frameHash(f.frame)), `a plaintext frame of ${p.name} reached the server`);
        const read = readFrame('H264', f.frame);
        assert.ok(read && kidSender(read.kid) === p.id, `${p.name}'s frame carries its SFrame header: ${f.frame.subarray(0, 24).toString('hex')}`);
        const types = nalUnits(f.frame).map((u) => f.frame[u.payload] & 0x1f);
        assert.ok(types.some((t) => t === 1 || t === 5), `a slice's NAL header in the clear: ${types}`);
        if (sealed.has(frameHash(f.frame))) matched++;
      }
      assert.ok(matched >= 0.8 * video.length, `${p.name}: ${matched} of ${video.length} tapped frames are ones its worker sealed`);
      const own = (await testKeys(p)).filter((k) => k.own);
      assert.ok(await opened(own, video) >= 0.8 * video.length, `${p.name}'s keys open its frames`);
    }
    await Promise.all([hal.close(), ida.close()]);
  });

  step('AV1 cameras decode each other', async () => {
    await pairDecodes(ava, ben, 'av1', `${TEST}&codec=AV1&simulcast=0`, 'AV1');
    await Promise.all([ava.close(), ben.close()]);
  });

  step('keys from the application: nothing sent before them, decoded after, rotated', async () => {
    const query = `${TEST}&e2eekeys=app`;
    await jay.join(`${room}-app`, { query, recordSent: true });
    await kim.join(`${room}-app`, { query, recordSent: true });
    // Without a key nothing leaves: every frame is dropped before the packetizer.
    const before = await waitFor('Jay to drop frames for want of a key', async () => {
      const x = await e2eeOf(jay);
      return { ok: x.stats.sendDropped > 20, x };
    });
    assert.equal(before.x.stats.encrypted, 0, 'nothing sealed without a key');
    assert.match(before.x.label, /keys from the application/);
    const setKey = (p) => p.page.evaluate(() => {
      const key = crypto.getRandomValues(new Uint8Array(32));
      const kid = window.demo.call.e2ee.setSendKey(key);
      return { kid: String(kid), key: btoa(String.fromCharCode(...key)) };
    });
    const addKey = (p, k) => p.page.evaluate(({ kid, key }) => {
      window.demo.call.e2ee.addKey(BigInt(kid), Uint8Array.from(atob(key), (c) => c.charCodeAt(0)));
    }, k);
    const jays = await setKey(jay);
    const kims = await setKey(kim);
    await addKey(kim, jays);
    await addKey(jay, kims);
    await Promise.all([jay.expectMedia(cam(kim), 'Kim'), kim.expectMedia(cam(jay), 'Jay')]);
    await showsCamera(kim, jay);
    for (const p of [jay, kim]) {
      assert.equal((await p.sent('e2ee')).length, 0, `${p.name} exchanged no key through the server`);
    }
    // Jay rotates; Kim cannot open the new frames until the application gives it the key,
    // then decodes Jay again (a keyframe asked for), and Jay's old key opens none of them.
    const rotated = await setKey(jay);
    assert.notEqual(rotated.kid, jays.kid);
    await waitFor('Kim to miss Jay\'s new key', async () => {
      const x = await e2eeOf(kim);
      return { ok: x.stats.noKey > 0, stats: x.stats };
    });
    await addKey(kim, rotated);
    const decoded = (await cameraOf(kim, jay)).framesDecoded || 0;
    await waitFor('Kim to decode Jay under the new key', async () => {
      const s = await cameraOf(kim, jay);
      return { ok: (s.framesDecoded || 0) > decoded + 10, s };
    }, { timeout: 15000 });
    const from = tapMark(TAP);
    await sleep(2000);
    const frames = framesOf([jay], from, tapMark(TAP)).get(jay.id);
    assert.ok(frames.length > 50, `frames after the rotation: ${frames.length}`);
    assert.equal(await opened([jays], frames), 0, 'the old key opens none of them');
    assert.ok(await opened([rotated], frames) >= 0.8 * frames.length, 'the new key opens them');
  });
});
