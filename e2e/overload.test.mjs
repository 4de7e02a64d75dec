// End-to-end test of overload refusal with Chromium peers, against a server of its own
// (lib.mjs, OwnServer) in namespace sfu-srv (HTTP 8092, UDP 17020-17029) that takes at
// most two participants (`--max-participants 2`).
//
// Two pages call; a third join over the WebSocket gets `server_busy`, a WHEP session 503
// with Retry-After, and `/readyz` answers 503 `overloaded`; meanwhile the call in progress
// loses nothing: every stream keeps decoding, and no packet is lost (at most 1 % late).
// The refusals are counted (`sfu_load_refused_total`). Once one of the two leaves, its
// place is free again: the third page joins and the two left decode each other.
// Run through e2e/run.sh.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  steps, RUN, SFU_URL, waitFor, sleep, Participant, LEAN_ARGS, wsScript, errorCode, tokenFor, OwnServer,
  browserHooks,
} from './lib.mjs';

const HOST = '10.77.0.1';
const BASE = `http://${HOST}:8092`;

const get = async (path) => {
  const res = await fetch(`${BASE}${path}`).catch(() => null);
  return res ? `${res.status} ${(await res.text()).trim()}` : 'no answer';
};

/** The value of `name` (a metric line's name and labels) on the server's /metrics. */
async function metric(name) {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

/** Received packets and packets lost, summed over the streams a participant receives. */
async function received(p) {
  const stats = await p.stats();
  return {
    packets: stats.reduce((n, s) => n + s.packetsReceived, 0),
    lost: stats.reduce((n, s) => n + s.packetsLost, 0),
  };
}

describe('overload refusal with Chromium peers', { timeout: 240000 }, () => {
  const { step, failed } = steps({ timeout: 150000 });
  const ann = new Participant('Ann');
  const ben = new Participant('Ben');
  const cid = new Participant('Cid');
  let server = null;

  browserHooks([ann, ben, cid], failed, { servers: () => (server ? [server] : []) });

  step('past the limit joins get server_busy and the call in progress loses nothing', async () => {
    // The participants' limit alone (OwnServer sets no load limit).
    server = new OwnServer('overload', [
      '--http-listen', `${HOST}:8092`, '--udp-ports', '17020-17029', '--udp-bind', HOST,
      '--max-participants', '2',
    ]);
    await server.ready(async () => {
      const s = await get('/readyz');
      return s === '200 ready' || s;
    });
    assert.equal(await metric('sfu_load_limit{limit="participants"}'), 2);

    const room = `e2e-overload-${RUN}`;
    // Its origin is plain http on another port: a secure context only when named (the
    // last of a repeated switch wins, so with the main server's).
    const secure = `--unsafely-treat-insecure-origin-as-secure=${SFU_URL},${BASE}`;
    for (const p of [ann, ben]) await p.join(room, { base: BASE, args: [...LEAN_ARGS, secure] });
    const cam = (p) => [{ participant: p, source: 'microphone' }, { participant: p, source: 'camera' }];
    await ann.expectMedia(cam(ben), 'the call');
    await ben.expectMedia(cam(ann), 'the call');
    assert.equal(await metric('sfu_load_participants'), 2);
    const before = { ann: await received(ann), ben: await received(ben) };

    // A third participant, over the WebSocket: server_busy.
    const token = tokenFor(room, 'Cid');
    const { results } = await wsScript(ann.page, [{ send: JSON.stringify({ type: 'join', token, e2ee: true }) }],
      { url: `ws://${HOST}:8092/ws` });
    assert.equal(errorCode(results[0]), 'server_busy', JSON.stringify(results[0]));
    assert.match(results[0].message.message, /limit of participants/);
    // A WHEP viewer: 503, to be tried again later.
    const offer = await ann.page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const { sdp } = await pc.createOffer();
      pc.close();
      return sdp;
    });
    const whep = await fetch(`${BASE}/whep`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${tokenFor(room, 'Wes')}` },
      body: offer,
    });
    const whepBody = (await whep.text()).trim();
    assert.equal(whep.status, 503, whepBody);
    assert.ok(whep.headers.get('retry-after'), 'Retry-After');
    assert.match(whepBody, /server_busy/);
    assert.equal(await get('/readyz'), '503 overloaded');
    assert.equal(await metric('sfu_load_refused_total{limit="participants"}'), 2);

    // The call went on meanwhile, losing nothing.
    await sleep(2000);
    await ann.expectMedia(cam(ben), 'the call after the refusals');
    await ben.expectMedia(cam(ann), 'the call after the refusals');
    for (const [p, b] of [[ann, before.ann], [ben, before.ben]]) {
      const now = await received(p);
      const got = now.packets - b.packets;
      assert.ok(got > 100, `${p.name} kept receiving: ${JSON.stringify({ b, now })}`);
      // The veth loses nothing; a packet late on a busy machine counts as lost until
      // it comes: at most 1 % of the window's.
      assert.ok(now.lost - b.lost <= got / 100, `${p.name} lost nothing: ${JSON.stringify({ b, now })}`);
    }

    // One leaves: its place is free again, and the newcomer gets it.
    await ben.close();
    await waitFor('the place to be given back', async () => {
      const n = await metric('sfu_load_participants');
      return { ok: n === 1, n };
    });
    assert.equal(await get('/readyz'), '200 ready');
    await cid.join(room, { base: BASE, args: [...LEAN_ARGS, secure] });
    await cid.expectMedia(cam(ann), 'the call after a place came free');
    await ann.expectMedia(cam(cid), 'the call after a place came free');
  });
});
