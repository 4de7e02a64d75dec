// End-to-end test of group calling policies, the admin API, webhooks and call records,
// with Chromium peers, against a server of its own (lib.mjs, OwnServer) in namespace
// sfu-srv on HTTP port 8091, UDP 17010-17019 and ICE-TCP 17443, with a config file of
// three groups:
//   audio  video off: may call, may not publish a camera;
//   tcp    force_tcp: offered only TCP paths, though UDP is open;
//   sales  everything, until the test switches its video off through the admin API.
// Webhooks go to three receivers this test runs in namespace sfu-cli (10.77.0.2): one
// that takes everything, one that fails its first two requests, and one that is never
// there (a port with nothing listening). Signatures are checked with the Standard
// Webhooks library (npm `standardwebhooks`), not with the server's own code.
//
// 1. Ann (audio) publishes no camera, and one forced on her is refused (`forbidden`);
//    Ben (tcp) connects over ICE-TCP (the admin API says so); everyone hears everyone.
// 2. `PUT /admin/groups/sales` with video off: Cat's camera leaves the others' pages
//    while her microphone goes on (the delay is printed: `E2E policy-change-ms`).
// 3. `DELETE .../participants/<Ben>`: Ben is told (`removed`), the others too, his media
//    ends; `DELETE /admin/rooms/<room>` ends the call for Ann and Cat (`room_ended`).
// 4. The call's record and its webhook notices match what happened; the flaky receiver
//    got each notice once; the dead one's failures are counted.
// Run through e2e/run.sh.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import {
  steps, RUN, SFU_URL, waitFor, sleep, Participant, LEAN_ARGS, mintToken, OwnServer, browserHooks,
} from './lib.mjs';

const { Webhook } = createRequire(import.meta.url)('standardwebhooks');

const HOST = '10.77.0.1';
const BASE = `http://${HOST}:8091`;
const RECEIVER_HOST = '10.77.0.2';
const ADMIN_SECRET = `e2e-admin-secret-${RUN}`;
// Standard Webhooks' form: whsec_ and the base64 of the key (32 bytes here).
const WEBHOOK_SECRET = `whsec_${Buffer.from(`e2e-webhook-key-${RUN}`.padEnd(32, '.').slice(0, 32)).toString('base64')}`;
const ROOM = `e2e-admin-${RUN}`;

const adminToken = () => mintToken({ sub: 'e2e', aud: 'sfu-admin' }, { secret: ADMIN_SECRET });

/** An admin API request: {status, body (parsed JSON, or null)}. */
async function admin(method, path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken()}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/**
 * A webhook receiver on RECEIVER_HOST: verifies each request with the Standard Webhooks
 * library and keeps what it accepted; answers 500 to its first `failFirst` requests.
 */
async function receiver(failFirst = 0) {
  const verifier = new Webhook(WEBHOOK_SECRET);
  const r = { notices: [], ids: [], attempts: 0, bad: [] };
  r.server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      r.attempts += 1;
      if (r.attempts <= failFirst) {
        res.writeHead(500).end();
        return;
      }
      const body = Buffer.concat(chunks).toString('utf8');
      try {
        verifier.verify(body, req.headers);
      } catch (e) {
        r.bad.push(String(e));
        res.writeHead(400).end();
        return;
      }
      r.ids.push(req.headers['webhook-id']);
      r.notices.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise((resolve) => r.server.listen(0, RECEIVER_HOST, resolve));
  r.url = `http://${RECEIVER_HOST}:${r.server.address().port}/hooks`;
  return r;
}

/** A port on RECEIVER_HOST with nothing listening. */
async function deadUrl() {
  const s = createServer();
  await new Promise((resolve) => s.listen(0, RECEIVER_HOST, resolve));
  const { port } = s.address();
  await new Promise((resolve) => s.close(resolve));
  return `http://${RECEIVER_HOST}:${port}/hooks`;
}

const types = (r) => r.notices.map((n) => n.type);

describe('group policies, admin API, webhooks and records with Chromium peers', { timeout: 420000 }, () => {
  const { step, failed } = steps({ timeout: 150000 });
  const ann = new Participant('Ann');
  const ben = new Participant('Ben');
  const cat = new Participant('Cat');
  const servers = [];
  const receivers = {};
  let dir;

  browserHooks([ann, ben, cat], failed, { servers: () => servers });

  const secure = `--unsafely-treat-insecure-origin-as-secure=${SFU_URL},${BASE}`;
  const joinAs = (p, group) => p.join(ROOM, { base: BASE, args: [...LEAN_ARGS, secure], claims: { group } });
  const mic = (p) => ({ participant: p, source: 'microphone' });
  const cam = (p) => ({ participant: p, source: 'camera' });

  step('a server with three groups, an admin secret and three webhook receivers', async () => {
    receivers.good = await receiver();
    receivers.flaky = await receiver(2);
    receivers.dead = await deadUrl();
    dir = mkdtempSync(join(tmpdir(), 'sfu-e2e-admin-'));
    const config = join(dir, 'sfu.toml');
    writeFileSync(config, [
      '[groups.audio]', 'video = false', '',
      '[groups.tcp]', 'force_tcp = true', '',
      '[groups.sales]', '',
    ].join('\n'));
    writeFileSync(join(dir, 'admin-secret'), `${ADMIN_SECRET}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'webhook-secret'), `${WEBHOOK_SECRET}\n`, { mode: 0o600 });
    const server = new OwnServer('admin', [
      '--config', config,
      '--http-listen', `${HOST}:8091`, '--udp-ports', '17010-17019', '--udp-bind', HOST,
      '--tcp-port', '17443', '--node', 'e2e-node',
      '--admin-secret-file', join(dir, 'admin-secret'),
      '--webhook-secret-file', join(dir, 'webhook-secret'),
      '--webhook-url', receivers.good.url, '--webhook-url', receivers.flaky.url,
      '--webhook-url', receivers.dead,
    ], { iceTcp: true });
    servers.push(server);
    await server.ready(async () => (await fetch(`${BASE}/readyz`).catch(() => null))?.status === 200);
    const groups = await admin('GET', '/admin/groups');
    assert.equal(groups.status, 200);
    assert.deepEqual(Object.keys(groups.body.groups).sort(), ['audio', 'default', 'sales', 'tcp']);
  });

  step('the audio group publishes no camera, the tcp group connects over TCP, all hear each other', async () => {
    await joinAs(ann, 'audio');
    await joinAs(ben, 'tcp');
    await joinAs(cat, 'sales');
    const annState = await ann.state();
    assert.deepEqual(annState.local.map((l) => l.source), ['microphone'], 'Ann publishes her microphone only');
    await ann.expectMedia([mic(ben), cam(ben), mic(cat), cam(cat)], 'Ben and Cat');
    await ben.expectMedia([mic(ann), mic(cat), cam(cat)], 'Ann (audio only) and Cat');
    await cat.expectMedia([mic(ann), mic(ben), cam(ben)], 'Ann (audio only) and Ben');
    // A camera forced onto Ann's connection: the server refuses the offer.
    const refused = await ann.page.evaluate(async () => {
      const call = window.demo.call;
      const { addLocalTrack, removeLocalTrack } = await import('/client/publishing.js');
      const { negotiate } = await import('/client/negotiation.js');
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      addLocalTrack(call, 'camera', stream.getVideoTracks()[0]);
      let code = 'accepted';
      try {
        await negotiate(call);
      } catch (e) {
        code = e.code || String(e);
      }
      // Back to her microphone alone, as the client library would have left her.
      const local = call.localTracks.get('camera');
      call.localTracks.delete('camera');
      local.track.stop();
      removeLocalTrack(call, 'camera', local);
      await negotiate(call);
      return code;
    });
    assert.equal(refused, 'forbidden', 'a camera from the audio-only group is refused');
    // Ben's media path is ICE-TCP though UDP is open; the others' is UDP.
    const members = await waitFor('the admin API to list the three with their transports', async () => {
      const r = await admin('GET', `/admin/rooms/${encodeURIComponent(ROOM)}/participants`);
      const by = Object.fromEntries((r.body?.participants || []).map((p) => [p.identity.split('-')[0], p]));
      const ok = by.ann?.transport === 'udp' && by.ben?.transport === 'tcp' && by.cat?.transport === 'udp';
      return { ok, by };
    });
    assert.equal(members.by.ben.group, 'tcp');
    assert.equal(members.by.ann.tracks.length, 1);
    const rooms = await admin('GET', '/admin/rooms');
    const listed = rooms.body.rooms.find((r) => r.room === ROOM);
    assert.equal(listed.participants, 3);
    assert.equal(listed.node, 'e2e-node');
    assert.equal(listed.group, 'audio', 'the group of who opened it');
  });

  step('switching video off for a group through the admin API removes its camera, audio goes on', async () => {
    const catsCamera = (await cat.state()).local.find((l) => l.source === 'camera').track_id;
    const put = Date.now();
    const r = await admin('PUT', '/admin/groups/sales', { video: false });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.changed, true);
    for (const p of [ann, ben]) {
      await waitFor(`${p.name}'s page to drop Cat's camera`, async () => {
        const st = await p.state();
        return { ok: !st.remote.some((t) => t.track_id === catsCamera), remote: st.remote };
      });
    }
    console.log(`E2E policy-change-ms ms=${Date.now() - put} (PUT to Cat's camera gone from both pages)`);
    const catState = await cat.state();
    assert.deepEqual(catState.local.map((l) => l.source), ['microphone'], 'Cat\'s page stopped her camera');
    assert.ok(catState.events.some((e) => e.type === 'grants'), 'Cat\'s page heard of her new grants');
    await ann.expectMedia([mic(ben), cam(ben), mic(cat)], 'Ben, and Cat\'s microphone after the change');
    await ben.expectMedia([mic(ann), mic(cat)], 'Ann and Cat\'s microphone after the change');
  });

  step('an administrator removes Ben, then ends the call', async () => {
    const benId = ben.id;
    const gone = await admin('DELETE', `/admin/rooms/${encodeURIComponent(ROOM)}/participants/${benId}`);
    assert.equal(gone.status, 204);
    await waitFor('Ben to be told he was removed', async () => {
      const st = await ben.state();
      const left = st.events.find((e) => e.type === 'left');
      return { ok: left?.reason === 'removed', state: st.state, left };
    });
    for (const p of [ann, cat]) {
      await waitFor(`${p.name} to hear Ben left (removed)`, async () => {
        const st = await p.state();
        const left = st.events.find((e) => e.type === 'participant_left');
        return { ok: left?.reason === 'removed' && !st.remote.some((t) => t.participant_id === benId), left };
      });
    }
    assert.equal((await admin('DELETE', `/admin/rooms/${encodeURIComponent(ROOM)}/participants/${benId}`)).status, 404);
    const end = await admin('DELETE', `/admin/rooms/${encodeURIComponent(ROOM)}`);
    assert.equal(end.status, 204);
    for (const p of [ann, cat]) {
      await waitFor(`${p.name} to be told the call ended`, async () => {
        const st = await p.state();
        const left = st.events.find((e) => e.type === 'left');
        return { ok: left?.reason === 'room_ended', left };
      });
    }
    assert.equal((await admin('GET', `/admin/rooms/${encodeURIComponent(ROOM)}`)).status, 404);
  });

  step('the call record and the webhook notices tell what happened', async () => {
    const record = await waitFor('the call record', async () => {
      const r = await admin('GET', `/admin/records?room=${encodeURIComponent(ROOM)}`);
      return { ok: r.body?.records?.length === 1, body: r.body };
    });
    const rec = record.body.records[0];
    const who = Object.fromEntries(rec.participants.map((p) => [p.identity.split('-')[0], p]));
    assert.equal(rec.group, 'audio');
    assert.equal(rec.node, 'e2e-node');
    assert.equal(rec.total_participants, 3);
    assert.equal(rec.peak_participants, 3);
    assert.equal(who.ben.reason, 'removed');
    assert.equal(who.ann.reason, 'room_ended');
    assert.equal(who.cat.reason, 'room_ended');
    assert.deepEqual(who.ben.transports, ['tcp']);
    assert.deepEqual(who.cat.transports, ['udp']);
    for (const p of rec.participants) {
      assert.ok(p.bytes_received > 10000 && p.bytes_sent > 10000, JSON.stringify(p));
      assert.ok(p.joined_at_ms >= rec.started_at_ms && p.left_at_ms <= rec.ended_at_ms, JSON.stringify(p));
    }
    assert.ok(rec.ended_at_ms > rec.started_at_ms, JSON.stringify(rec));
    assert.equal(JSON.stringify(rec).includes('sframe'), false);

    const good = receivers.good;
    await waitFor('the room_finished notice', async () => ({ ok: types(good).includes('room_finished'), seen: types(good) }));
    assert.deepEqual(good.bad, [], 'every signature verifies');
    const seq = types(good);
    console.log(`E2E webhook-sequence ${seq.join(' ')}`);
    assert.equal(seq[0], 'room_started');
    assert.equal(seq.at(-1), 'room_finished');
    assert.equal(seq.filter((t) => t === 'participant_joined').length, 3);
    assert.equal(seq.filter((t) => t === 'participant_left').length, 3);
    assert.ok(seq.includes('policy_changed'));
    // Ann's microphone, Ben's two, Cat's two; Cat's camera unpublished by the policy,
    // then everything else as its owner went.
    assert.equal(seq.filter((t) => t === 'track_published').length, 5);
    assert.equal(seq.filter((t) => t === 'track_unpublished').length, 5);
    const finished = good.notices.at(-1).data;
    assert.deepEqual(finished, rec, 'the room_finished notice carries the record');
    const reasons = good.notices.filter((n) => n.type === 'participant_left').map((n) => n.data.reason);
    assert.deepEqual(reasons, ['removed', 'room_ended', 'room_ended']);

    // The flaky receiver failed twice, then got every notice exactly once.
    const flaky = receivers.flaky;
    await waitFor('the flaky receiver to catch up', async () => ({ ok: flaky.ids.length === good.ids.length, have: flaky.ids.length }));
    assert.equal(new Set(flaky.ids).size, flaky.ids.length, 'no notice twice');
    assert.deepEqual(flaky.ids, good.ids, 'the same notices, in order');
    assert.equal(flaky.attempts, flaky.ids.length + 2);
    // The dead receiver's notices are counted as they fail (retried meanwhile); the call
    // itself went on as the steps above show.
    const metrics = await (await fetch(`${BASE}/metrics`)).text();
    const count = (result) => Number((new RegExp(`sfu_webhook_notices_total\\{receiver="2",result="${result}"\\} (\\d+)`)
      .exec(metrics) || [])[1]);
    assert.ok(count('retried') > 0, metrics.split('\n').filter((l) => l.includes('webhook')).join('\n'));
    assert.equal(count('delivered'), 0);
    assert.ok(/sfu_group_calls_finished_total\{group="audio"\} 1/.test(metrics));
  });

  step('cleanup', async () => {
    for (const r of [receivers.good, receivers.flaky]) r?.server.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await sleep(0);
  });
});
