// What the end-to-end encryption suites check with (e2e/e2ee.test.mjs,
// e2e/e2ee-codecs.test.mjs): a participant's E2EE status, the colours of a decoded
// picture, and whether keys open the frames the server's tap saw.

import { tapFrames, tapPackets, redPrimary } from './tap.mjs';
import { deriveKey, ratchet } from '../signaling/web/client/sframe.js';
import { kidGeneration, kidSender, kidStep } from '../signaling/web/client/e2ee-layout.js';
import { openFrame, readFrame } from '../signaling/web/client/e2ee-frame.js';

/** The server's tap of forwarded payloads (e2e/run.sh starts it with `--tap`). */
export const TAP = process.env.E2E_TAP;

export const TEST = '?e2eetest=1';

/** `p`'s E2EE status: call.e2ee without its private parts. */
export function e2eeOf(p) {
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
export function tilePixels(p, key) {
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

/** The frame a tapped frame is, for its codec: video as tapped; Opus audio, maybe in RED. */
export function candidates(f) {
  if (f.kind === 'video') return [{ codec: f.codec || 'VP8', bytes: f.frame }];
  const red = redPrimary(f.frame);
  return [{ codec: 'opus', bytes: f.frame }, ...(red ? [{ codec: 'opus', bytes: red }] : [])];
}

/** Whether any of `keys` ([{kid, key}] as E2ee.testKeys gives them) opens frame `f`. */
export async function opens(keys, f) {
  for (const { codec, bytes } of candidates(f)) {
    const read = readFrame(codec, bytes);
    if (!read) continue;
    for (const k of keys) {
      const kid = BigInt(k.kid);
      if (kidSender(kid) !== kidSender(read.kid) || kidGeneration(kid) !== kidGeneration(read.kid)) continue;
      const ahead = kidStep(read.kid) - kidStep(kid);
      if (ahead < 0) continue;
      let base = Uint8Array.from(Buffer.from(k.key, 'base64'));
      for (let i = 0; i < ahead; i++) base = await ratchet(base);
      try {
        await openFrame(await deriveKey(base, read.kid), read);
        return true;
      } catch {
        // Not this key.
      }
    }
  }
  return false;
}

/** How many of `frames` `keys` open. */
export async function opened(keys, frames) {
  let n = 0;
  for (const f of frames) if (await opens(keys, f)) n++;
  return n;
}

/** The frames the tap saw between two marks of the participants `ps`, by participant id. */
export function framesOf(ps, from, to) {
  const ids = new Set(ps.map((p) => p.id));
  const frames = tapFrames(tapPackets(TAP, from, to).filter((p) => ids.has(p.participant_id)));
  return new Map(ps.map((p) => [p.id, frames.filter((f) => f.participant_id === p.id)]));
}

export const testKeys = (p) => p.page.evaluate(() => window.demo.call.e2ee.testKeys());
