// Helpers of the tests that watch one camera's layers at several receivers (simulcast,
// SVC, adaptation, aiortc): what each decodes, a real downlink cap with nftables, a
// receiver followed through a switch down, and a picture watched for freezes.

import { sleep, waitFor, nftTable } from './lib.mjs';

/** `p`'s inbound stream of `publisher`'s camera (Call.inboundStats), or null. */
export async function cameraAt(p, publisher) {
  return (await p.stats()).find((s) => s.participant_id === publisher.id && s.source === 'camera') || null;
}

/**
 * Waits until each of `ps` decodes `publisher`'s camera at a height `want(height)`
 * accepts, and goes on decoding it (frames counted twice, a second apart). `extra()`
 * adds to what a timeout reports.
 */
export async function expectHeight(ps, publisher, what, want, timeout, extra = async () => null) {
  return waitFor(what, async () => {
    const seen = {};
    let ok = true;
    for (const p of ps) {
      const s0 = await cameraAt(p, publisher);
      seen[p.name] = s0 && { height: s0.frameHeight, frames: s0.framesDecoded, bytes: s0.bytesReceived };
      ok = ok && !!s0 && want(s0.frameHeight);
    }
    if (ok) {
      await sleep(1000);
      for (const p of ps) {
        const [s0, s1] = [seen[p.name], await cameraAt(p, publisher)];
        seen[p.name].framesLater = s1 && s1.framesDecoded;
        ok = ok && !!s1 && want(s1.frameHeight) && s1.framesDecoded > s0.frames;
      }
    }
    const fatal = (await Promise.all(ps.map((p) => p.alive()))).some((up) => !up) ? 'a call ended' : null;
    return { ok, fatal, seen, publisher: await extra() };
  }, { timeout, interval: 1000 });
}

/**
 * Keeps `p`'s camera encoder on its resolutions (`maintain-resolution`), so that a busy
 * machine's CPU adaptation does not scale its top layer down: these tests are about the
 * server's choice of layers. After the client's own setParameters, which this one must
 * not overlap. Returns the preference the sender ends with.
 */
export async function keepResolution(p) {
  return p.page.evaluate(async () => {
    const call = window.demo.call;
    const sender = call.pc.getSenders().find((s) => s.track === call.localTracks.get('camera').track);
    for (let attempt = 0; attempt < 5; attempt++) {
      await call._layersApplying;
      // Through 'balanced': a switch to or from it clears what the CPU adaptation took
      // already (libwebrtc's VideoStreamAdapter), one from the default straight to
      // 'maintain-resolution' keeps it. (Kept, it once left a 1280x720 camera encoded
      // at 480 lines, in two layers, for good.)
      for (const preference of ['balanced', 'maintain-resolution']) {
        const params = sender.getParameters();
        params.degradationPreference = preference;
        await sender.setParameters(params).catch(() => {});
      }
      if (sender.getParameters().degradationPreference === 'maintain-resolution') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    return sender.getParameters().degradationPreference ?? null;
  });
}

/**
 * Caps the downlink of `ns` (arriving on `iface`) with a real nftables policer in table
 * `table`: what comes over `kbytes` per second is dropped, with a quarter second of burst,
 * as a slow access link would. Its counter is `capped`.
 */
export function capDownlink(ns, iface, table, kbytes) {
  const burst = Math.max(8, Math.round(kbytes / 4));
  nftTable(ns, table, `
    counter capped {}
    chain input {
      type filter hook input priority -10; policy accept;
      iifname "${iface}" limit rate over ${kbytes} kbytes/second burst ${burst} kbytes counter name capped drop
    }`);
  return burst;
}

/** What `p` receives of `publisher`'s camera in kbytes/s, measured over `ms`. */
export async function receiveRate(p, publisher, ms = 4000) {
  const t0 = performance.now();
  const a = await cameraAt(p, publisher);
  await sleep(ms);
  const b = await cameraAt(p, publisher);
  return (b.bytesReceived - a.bytesReceived) / (performance.now() - t0); // bytes/ms = kB/s
}

/**
 * Samples `p`'s decoding of `publisher`'s camera twice a second from `since` until 8 s
 * after it went below `topHeight` (and at least 10 s), or `limitMs`. Returns the samples,
 * when it switched, the longest time without a new decoded frame, the fewest frames
 * decoded in any 2 s after the switch, and a compact text of the samples.
 */
export async function followDownSwitch(p, publisher, topHeight, since, limitMs = 60000) {
  const samples = [];
  let switchedAt = null;
  while (performance.now() - since < limitMs) {
    const s = await cameraAt(p, publisher);
    const at = performance.now() - since;
    samples.push({ at: Math.round(at), height: s && s.frameHeight, frames: s ? s.framesDecoded : 0 });
    if (switchedAt == null && s && s.frameHeight > 0 && s.frameHeight < topHeight) switchedAt = at;
    if (switchedAt != null && at - switchedAt >= 8000 && at >= 10000) break;
    await sleep(500);
  }
  let longestStall = 0;
  let lastGrowth = 0;
  for (let i = 1; i < samples.length; i++) {
    if (samples[i].frames > samples[i - 1].frames) lastGrowth = samples[i].at;
    longestStall = Math.max(longestStall, samples[i].at - lastGrowth);
  }
  let fewest2s = null;
  for (const s0 of samples.filter((s) => switchedAt != null && s.at >= switchedAt)) {
    const s1 = samples.find((s) => s.at >= s0.at + 2000);
    if (s1) fewest2s = Math.min(fewest2s ?? Infinity, s1.frames - s0.frames);
  }
  const compact = samples.map((s) => `${s.at}:${s.height}/${s.frames}`).join(' ');
  // Frames per second decoded from the switch to the end.
  let fps = null;
  if (switchedAt != null) {
    const last = samples[samples.length - 1];
    const first = samples.find((s) => s.at >= switchedAt);
    fps = ((last.frames - first.frames) * 1000) / Math.max(1, last.at - first.at);
  }
  return { samples, switchedAt, longestStall, fewest2s, compact, fps };
}

/**
 * Watches `p`'s decoding of `publisher`'s camera every 200 ms until stopped (or for
 * `limitMs` at most); `stop()` returns the samples and the longest time without a new
 * decoded frame (a freeze).
 */
export function watch(p, publisher, limitMs = 600000) {
  const samples = [];
  const t0 = performance.now();
  const wall = Date.now();
  let on = true;
  const done = (async () => {
    while (on && performance.now() - t0 < limitMs) {
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
