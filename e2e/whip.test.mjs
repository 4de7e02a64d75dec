// End-to-end test of WHIP (RFC 9725) and WHEP with a WebRTC stack not written here:
// GStreamer's webrtcbin from Debian's packages, driven by e2e/gst_whip.py (which only does
// the HTTP exchange). A GStreamer viewer watches through WHEP before anyone presents; a
// GStreamer presenter publishes a test pattern and a tone through WHIP; the WHEP viewer
// and a Chromium viewer on the demo page decode it. Then the session URL: PATCH and
// DELETE. Run through e2e/run.sh.

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  steps, tokenFor, mintToken, SFU_URL, RUN, waitFor, sleep, contexts, profileDirs, Participant, LEAN_ARGS,
  jsonLinesProcess,
} from './lib.mjs';

const GST_WHIP = join(dirname(fileURLToPath(import.meta.url)), 'gst_whip.py');
const PRESENTER = { role: 'presenter' };
const VIEWER = { role: 'viewer' };
const OFFER_SECONDS = 40;

/** Runs gst_whip.py (lib.mjs: jsonLinesProcess). */
function gstClient(mode, token, seconds, extra = []) {
  return jsonLinesProcess('/usr/bin/python3', [GST_WHIP, mode, `${SFU_URL}/${mode}`, token, '--seconds', String(seconds), ...extra]);
}

const http = (path, { method = 'POST', token, type, body, headers = {} } = {}) => fetch(`${SFU_URL}${path}`, {
  method,
  headers: {
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...(type ? { 'content-type': type } : {}),
    ...headers,
  },
  body,
});

describe('WHIP and WHEP with GStreamer', { timeout: 600000 }, () => {
  const room = `e2e-whip-${RUN}`;
  // WHIP ingest is plaintext: its token needs the plaintext grant.
  const gusToken = tokenFor(room, 'Gus', { grants: { ...PRESENTER, plaintext: true } });
  const vicky = new Participant('Vicky'); // Chromium viewer
  const { step, failed } = steps();
  let presenter = null;
  let watcher = null;
  let session = null;

  before(async () => {
    const res = await fetch(`${SFU_URL}/healthz`);
    assert.equal(res.status, 200, `server not healthy at ${SFU_URL}`);
  });

  after(async () => {
    for (const c of [presenter, watcher]) if (c) c.child.kill('SIGKILL');
    if (failed()) {
      for (const [name, c] of [['presenter', presenter], ['watcher', watcher]]) {
        if (c) console.log(`--- ${name}: ${JSON.stringify(c.lines.slice(-12))}\n${c.stderr()}`);
      }
      if (vicky.logs) console.log(`--- browser console of Vicky:\n${vicky.logs.slice(-40).join('\n')}`);
    }
    await Promise.all(contexts.map((c) => c.close().catch(() => {})));
    if (!process.env.E2E_KEEP_PROFILES) for (const d of profileDirs) rmSync(d, { recursive: true, force: true });
  });

  step('the endpoints refuse what they must, with the status RFC 9725 names', async () => {
    const offer = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n';
    let r = await http('/whip', { type: 'application/sdp', body: offer });
    assert.equal(r.status, 401, 'no token');
    assert.match(r.headers.get('www-authenticate') || '', /^Bearer/);
    r = await http('/whip', { type: 'application/sdp', body: offer, token: mintToken({ sub: 'x', room }, { secret: 'wrong' }) });
    assert.equal(r.status, 401, 'forged token');
    r = await http('/whip', { type: 'application/sdp', body: offer, token: tokenFor(room, 'Vera', { grants: VIEWER }) });
    assert.equal(r.status, 403, "a viewer's WHIP");
    assert.match(await r.text(), /forbidden/);
    r = await http('/whip', { type: 'application/sdp', body: offer, token: tokenFor(room, 'Gus', { grants: PRESENTER }) });
    assert.equal(r.status, 403, 'WHIP without the plaintext grant');
    assert.match(await r.text(), /e2ee_required/);
    r = await http('/whip', { type: 'text/plain', body: offer, token: gusToken });
    assert.equal(r.status, 415, 'not application/sdp');
    r = await http('/whep', { type: 'application/sdp', body: offer, token: tokenFor(room, 'Vera', { grants: VIEWER }) });
    assert.equal(r.status, 400, 'an offer that receives nothing');
    r = await http('/whep', { method: 'OPTIONS', headers: { origin: 'https://player.example', 'access-control-request-method': 'POST' } });
    assert.equal(r.status, 200, 'CORS preflight from a player elsewhere');
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    assert.match(r.headers.get('access-control-allow-methods') || '', /PATCH/);
    r = await http('/whep', { type: 'application/sdp', body: offer, headers: { origin: 'https://player.example' } });
    assert.equal(r.status, 401);
    assert.match(r.headers.get('access-control-expose-headers') || '', /location/i, 'a page elsewhere may read Location');
    r = await http('/whip/0123456789abcdef', { method: 'DELETE', token: gusToken });
    assert.equal(r.status, 404, 'no such session');
  }, 30000);

  step('a GStreamer WHEP viewer waits; a GStreamer WHIP presenter comes; the viewer decodes it', async () => {
    watcher = gstClient('whep', tokenFor(room, 'Walt', { grants: VIEWER }), OFFER_SECONDS);
    await waitFor('the WHEP viewer to be connected', async () => {
      const ice = watcher.lines.filter((l) => l.event === 'ice').map((l) => l.state);
      const http201 = watcher.lines.some((l) => l.event === 'http' && l.status === 201);
      return { ok: http201 && (ice.includes('connected') || ice.includes('completed')), lines: watcher.lines.slice(-3) };
    }, { timeout: 20000, interval: 250 });
    presenter = gstClient('whip', gusToken, 120, ['--verbose']);
    const posted = await waitFor('the WHIP presenter to be answered', async () => {
      const answer = presenter.lines.find((l) => l.event === 'http');
      if (answer && answer.status !== 201) return { fatal: JSON.stringify(answer) };
      return { ok: !!answer, answer };
    }, { timeout: 20000, interval: 250 });
    const a = posted.answer;
    assert.match(a.location, /^\/whip\/[0-9a-f]{32}$/, 'Location: the session URL');
    assert.match(a.content_type, /^application\/sdp/);
    assert.ok(a.etag, 'an ETag');
    session = { location: a.location, etag: a.etag, offer: presenter.lines.find((l) => l.event === 'offer').sdp };

    const result = await watcher.done;
    const done = result.lines.find((l) => l.event === 'done');
    console.log(`E2E whep-viewer ${JSON.stringify(done)}`);
    assert.ok(done && done.ok, `the WHEP exchange: ${JSON.stringify(result.lines.slice(-4))} ${result.stderr}`);
    assert.deepEqual(done.size, [640, 360], 'decoded 640x360 frames');
    assert.ok(done.audio_buffers > 100, `decoded audio (${done.audio_buffers} buffers)`);
    assert.equal(done.delete_status, 200, 'DELETE of its session');
    // Frames kept coming to the end, past the 15 s in which an ICE-lite server drops a
    // pair that sends no consent checks.
    const stats = result.lines.filter((l) => l.event === 'stats');
    const at = (t) => (stats.find((s) => s.t >= t) || stats[stats.length - 1]).video_frames;
    const late = at(OFFER_SECONDS - 1) - at(OFFER_SECONDS - 11);
    assert.ok(late >= 50, `frames in the last 10 s: ${late} (15 frames/s sent)`);
  }, 120000);

  step('a Chromium viewer on the demo page decodes the GStreamer presenter', async () => {
    await vicky.join(room, { grants: VIEWER, args: LEAN_ARGS });
    const gus = { name: 'Gus' };
    const st = await waitFor('Vicky to know Gus', async () => {
      const s = await vicky.state();
      return { ok: s.participants.some((p) => p.name === 'Gus'), participants: s.participants };
    });
    gus.id = st.participants.find((p) => p.name === 'Gus').participant_id;
    await vicky.expectMedia([{ participant: gus, source: 'microphone' }, { participant: gus, source: 'screen' }], "Gus's tone and test pattern");
    const pixels = await vicky.page.evaluate(() => {
      const video = document.querySelector('#stage .tile.screen video');
      return video ? { w: video.videoWidth, h: video.videoHeight } : null;
    });
    assert.deepEqual(pixels, { w: 640, h: 360 }, "the stage shows Gus's 640x360 screen");
  }, 90000, () => session != null);

  step('the session URL: PATCH trickles (204), refuses an ICE restart (422) and a stale ETag (412); DELETE leaves', async () => {
    const ufrag = /a=ice-ufrag:(\S+)/.exec(session.offer)[1];
    const pwd = /a=ice-pwd:(\S+)/.exec(session.offer)[1];
    const fragment = (u, p) => `a=ice-ufrag:${u}\r\na=ice-pwd:${p}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:video0\r\n`
      + 'a=candidate:1 1 UDP 2015363327 192.0.2.9 54962 typ host\r\n';
    const patch = (body, ifMatch, token = gusToken) => http(session.location, {
      method: 'PATCH', token, type: 'application/trickle-ice-sdpfrag', body, headers: ifMatch ? { 'if-match': ifMatch } : {},
    });
    assert.equal((await patch(fragment(ufrag, pwd), session.etag)).status, 204, 'trickled candidates');
    assert.equal((await patch(fragment('restart1', 'restartrestartrestartrestart'), '*')).status, 422, 'an ICE restart');
    assert.equal((await patch(fragment(ufrag, pwd), '"stale"')).status, 412, 'a stale ETag');
    assert.equal((await patch(fragment(ufrag, pwd), session.etag, tokenFor(room, 'Mallory', { grants: PRESENTER }))).status, 403,
      "another identity's token");

    assert.equal((await http(session.location, { method: 'DELETE', token: gusToken })).status, 200, 'DELETE');
    await waitFor("Vicky to see Gus leave", async () => {
      const s = await vicky.state();
      return { ok: !s.participants.some((p) => p.name === 'Gus') && s.remote.length === 0, participants: s.participants };
    }, { timeout: 10000 });
    assert.equal((await http(session.location, { method: 'DELETE', token: gusToken })).status, 404, 'DELETE again');
    presenter.child.kill('SIGTERM');
    await sleep(100);
  }, 60000, () => session != null);
});
