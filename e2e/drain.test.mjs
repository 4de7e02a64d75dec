// End-to-end test of the graceful drain (SIGTERM) with Chromium peers, against servers of
// its own (run.sh's stays up for the other suites; lib.mjs, OwnServer): each in namespace
// sfu-srv on HTTP port 8090 and UDP 17000-17009.
//
// 1. A three-party call goes on after SIGTERM, `/readyz` answers 503 and `/healthz` 200,
//    a join that would open a new room gets `server_draining`, and the process exits once
//    the call ends: the drain's length is printed (`E2E drain ... ms`).
// 2. With a drain timeout of 3 s the server ends the call itself: both pages are told
//    (`left`, `server_shutdown`), the process exits, and when a new server takes the port
//    (a restart), both pages join again by themselves and decode each other.
// Run through e2e/run.sh.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  steps, RUN, SFU_URL, waitFor, sleep, Participant, LEAN_ARGS, wsScript, errorCode, tokenFor, OwnServer,
  browserHooks,
} from './lib.mjs';

const HOST = '10.77.0.1';
const BASE = `http://${HOST}:8090`;

/** A server of this file's: `drainTimeoutS` of drain. */
const drainServer = (label, drainTimeoutS) => new OwnServer(`drain-${label}`, [
  '--http-listen', `${HOST}:8090`, '--udp-ports', '17000-17009', '--udp-bind', HOST,
  '--drain-timeout', String(drainTimeoutS),
]);

/** Whether `/readyz` says ready. */
const ready = async () => {
  const res = await fetch(`${BASE}/readyz`).catch(() => null);
  return !!res && res.status === 200;
};

const status = async (path) => {
  const res = await fetch(`${BASE}${path}`).catch(() => null);
  return res ? `${res.status} ${(await res.text()).trim()}` : 'no answer';
};

const cam = (p) => [{ participant: p, source: 'microphone' }, { participant: p, source: 'camera' }];

/** Each participant decodes every other one's microphone and camera. */
async function everyoneDecodes(people, what) {
  for (const p of people) await p.expectMedia(people.filter((o) => o !== p).flatMap(cam), what);
}

/** `people` in `room` on the drain test's server, each decoding the others. */
async function call(room, ...people) {
  // Its origin is plain http on another port: a secure context only when named (the
  // last of a repeated switch wins, so with the main server's).
  const secure = `--unsafely-treat-insecure-origin-as-secure=${SFU_URL},${BASE}`;
  for (const p of people) await p.join(room, { base: BASE, args: [...LEAN_ARGS, secure] });
  await everyoneDecodes(people, 'the call');
}

describe('graceful drain with Chromium peers', { timeout: 300000 }, () => {
  const { step, failed } = steps({ timeout: 120000 });
  const ann = new Participant('Ann');
  const ben = new Participant('Ben');
  const cat = new Participant('Cat');
  const dan = new Participant('Dan');
  const eve = new Participant('Eve');
  const servers = [];

  browserHooks([ann, ben, cat, dan, eve], failed, { servers: () => servers });

  step('after SIGTERM the call goes on, no new room is taken, and the server exits when the call ends', async () => {
    const server = drainServer('first', 120);
    servers.push(server);
    await server.ready(ready);
    const room = `e2e-drain-${RUN}`;
    await call(room, ann, ben, eve);
    const sigterm = Date.now();
    server.child.kill('SIGTERM');
    await waitFor('/readyz to say draining', async () => {
      const s = await status('/readyz');
      return { ok: s === '503 draining', s };
    });
    assert.equal(await status('/healthz'), '200 ok', 'alive while draining');
    // The call goes on, in both directions.
    await sleep(1500);
    await everyoneDecodes([ann, ben, eve], 'the call while draining');
    // A join that would open a room is refused; the socket is closed.
    const token = tokenFor(`e2e-drain-new-${RUN}`, 'Newcomer');
    const { results, closed } = await wsScript(ann.page, [{ send: JSON.stringify({ type: 'join', token, e2ee: true }) }],
      { url: `ws://${HOST}:8090/ws`, awaitCloseMs: 3000 });
    assert.equal(errorCode(results[0]), 'server_draining');
    assert.ok(closed, 'the server closed the socket after server_draining');
    assert.ok(!server.exitedAt, 'still serving the call');
    // The call ends: the server exits.
    const ended = Date.now();
    await Promise.all([ann.close(), ben.close(), eve.close()]);
    await server.exits(10000, 'once the call ended');
    console.log(`E2E drain of a 3-party call: ${server.exitedAt - sigterm} ms from SIGTERM to exit, `
      + `${server.exitedAt - ended} ms after the call ended`);
    assert.match(server.text(), /drained in [0-9.]+ s: no call left/);
  });

  step('a drain that times out tells the clients, which join the restarted server again', async () => {
    const first = drainServer('timeout', 3);
    servers.push(first);
    await first.ready(ready);
    const room = `e2e-drain-restart-${RUN}`;
    await call(room, cat, dan);
    for (const p of [cat, dan]) {
      await p.page.evaluate(() => {
        window.__rejoins = [];
        for (const type of ['rejoining', 'joined']) {
          window.demo.call.addEventListener(type, () => window.__rejoins.push(type));
        }
      });
    }
    first.child.kill('SIGTERM');
    await first.exits(15000, 'when its drain timed out');
    assert.match(first.text(), /drain timeout: ending the calls left/);
    for (const p of [cat, dan]) {
      const told = await p.page.evaluate(() => window.__rejoins.slice());
      assert.deepEqual(told.slice(0, 1), ['rejoining'], `${p.name} was told: ${JSON.stringify(told)}`);
    }
    // The restart: another server on the same address. Both pages join it by themselves.
    const second = drainServer('restarted', 120);
    servers.push(second);
    await second.ready(ready);
    for (const p of [cat, dan]) {
      // (Its participant id may be the old one: the new server counts from 1 again.)
      await waitFor(`${p.name} to join the restarted server`, async () => {
        const st = await p.page.evaluate(() => ({ state: window.demo.call.state, seen: window.__rejoins.slice() }));
        const ok = st.state === 'joined' && st.seen.join() === 'rejoining,joined';
        return { ok, st, fatal: st.state === 'closed' ? 'the call ended' : null };
      }, { timeout: 40000 });
      p.id = await p.page.evaluate(() => window.demo.call.participantId);
    }
    await everyoneDecodes([cat, dan], 'the call after the restart');
  });
});
