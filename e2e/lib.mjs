// Shared by the browser end-to-end tests: the server's address, tokens, Chromium
// launching (in this network namespace or another), the demo-page participant, polling.
// The environment variables are listed in call.test.mjs.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, it } from 'node:test';
import { chromium } from 'playwright-core';

export const SFU_URL = (process.env.SFU_URL || 'http://10.77.0.1:8080').replace(/\/$/, '');
export const WS_URL = `${SFU_URL.replace(/^http/, 'ws')}/ws`;
export const SECRET = process.env.SFU_SECRET || 'some-test-secret';
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const RUN = `${Date.now().toString(36)}${process.pid.toString(36)}`;
export const ROOM = `e2e-call-${RUN}`;
/** The room secret of end-to-end encryption the demo pages share (their URL fragment). */
export const ROOM_SECRET = `e2e-room-secret-${RUN}`;

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Fake camera + microphone, and every permission prompt (including getDisplayMedia's
  // picker) auto-accepted: getDisplayMedia then returns a fake 1280x720 "screen".
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // The server is plain http on a non-loopback address: let it use getUserMedia.
  `--unsafely-treat-insecure-origin-as-secure=${SFU_URL}`,
  '--autoplay-policy=no-user-gesture-required',
  // Host candidates with real addresses, not mDNS names; and no Local Network Access
  // blocking of the private server address (it bites pages served by E2E_WEB_FROM_TREE).
  '--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks',
  // TURN over TLS to the test server's self-signed certificate (e2e/run.sh makes it).
  '--ignore-certificate-errors',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A suite's steps: `step(name, fn, timeout, needs)` is an `it` (with `timeout` ms, or the
 * suite's default) that skips (instead of piling up timeouts) when `needs()` says an
 * earlier step it depends on did not succeed; `failed()` tells whether any step failed
 * (to print the browsers' consoles).
 */
export function steps({ timeout: suiteTimeout = Infinity } = {}) {
  let failed = false;
  const step = (name, fn, timeout = suiteTimeout, needs = () => true) => it(name, { timeout }, async (t) => {
    if (!needs()) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      throw err;
    }
  });
  return { step, failed: () => failed };
}

export const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'signaling', 'web');
export const WEB_FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/client.js': ['client.js', 'text/javascript; charset=utf-8'],
  '/demo.js': ['demo.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css'],
};

/** The file of signaling/web/ a URL path names: a fixed one, or a module of /client/. */
function webFile(pathname) {
  if (WEB_FILES[pathname]) return WEB_FILES[pathname];
  const m = /^\/client\/([\w-]+\.js)$/.exec(pathname);
  return m ? [`client/${m[1]}`, 'text/javascript; charset=utf-8'] : null;
}

export async function serveWebFromTree(ctx) {
  await ctx.route((url) => url.origin === SFU_URL && webFile(url.pathname), (route) => {
    const [file, contentType] = webFile(new URL(route.request().url()).pathname);
    return route.fulfill({ status: 200, contentType, body: readFileSync(join(WEB_DIR, file)) });
  });
}

// ------------------------------------------------------------------ tokens

export const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT with the claims of docs/protocol.md. */
export function mintToken(claims, { secret = SECRET, alg = 'HS256' } = {}) {
  const header = b64url(JSON.stringify({ alg, typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }));
  if (alg === 'none') return `${header}.${payload}.`;
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

export function tokenFor(room, name, extra = {}) {
  return mintToken({ sub: `${name.toLowerCase()}-${RUN}`, name, room, ...extra });
}

// ------------------------------------------------------------------ polling

/**
 * Polls `probe` until it returns an object with `ok: true`; fails after `timeout` ms with
 * the last value seen, so a failure says what was observed instead of only "timeout".
 * A probe result with `fatal` (a string) fails at once.
 */
export async function waitFor(what, probe, { timeout = 20000, interval = 150 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
    } catch (err) {
      last = { error: err.message };
    }
    if (last && last.ok) return last;
    if (last && last.fatal) assert.fail(`${what}: ${last.fatal}; seen: ${JSON.stringify(last, null, 1)}`);
    if (Date.now() > deadline) {
      assert.fail(`timed out after ${timeout} ms waiting for ${what}; last seen: ${JSON.stringify(last, null, 1)}`);
    }
    await sleep(interval);
  }
}

/** The server's /metrics as {name: value} for unlabelled samples. */
export async function serverMetrics() {
  const res = await fetch(`${SFU_URL}/metrics`);
  assert.equal(res.status, 200, 'GET /metrics');
  const out = {};
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*) ([^ ]+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/**
 * The server process's CPU seconds from /proc, when it runs on this host (run.sh: same PID
 * namespace): a cross-check of process_cpu_seconds_total, which the prometheus crate
 * exports in whole seconds. Null when not found.
 */
export function serverProcCpuSeconds() {
  try {
    const listen = new URL(SFU_URL).host;
    const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      let argv;
      try {
        argv = readFileSync(`/proc/${pid}/cmdline`).toString().split('\0');
      } catch {
        continue;
      }
      const i = argv.indexOf('--http-listen');
      if (i < 0 || argv[i + 1] !== listen) continue;
      const stat = readFileSync(`/proc/${pid}/stat`).toString();
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
      return (Number(fields[11]) + Number(fields[12])) / ticks;
    }
  } catch {
    // Not on this host, or no /proc: no cross-check.
  }
  return null;
}

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ------------------------------------------------------------------ browsers

export const contexts = [];
export const profileDirs = [];

/** Starts Chromium in `netns` (another network namespace) through this wrapper. */
const NETNS_WRAPPER = join(dirname(fileURLToPath(import.meta.url)), 'chromium-in-netns.sh');

/**
 * Switches that make a browser lighter where the test does not need more: no sound
 * output, no extensions, one renderer process. (The machines are small; a test with four
 * browsers encoding and decoding 720p video feels every bit.)
 */
export const LEAN_ARGS = ['--mute-audio', '--disable-extensions', '--renderer-process-limit=1'];

/**
 * The fake camera at `fps` frames per second (default 30), for newBrowser's `args`: it
 * replaces the plain --use-fake-device-for-media-stream of CHROMIUM_ARGS (the last of a
 * repeated switch wins).
 */
export const fakeCameraFps = (fps) => `--use-fake-device-for-media-stream=fps=${fps}`;

/**
 * A fresh Chromium with its own profile; with `netns`, inside that network namespace (its
 * traffic then obeys that namespace's routes and nftables rules). `args` are added to
 * CHROMIUM_ARGS.
 */
export async function newBrowser(label, { netns = null, args = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `sfu-e2e-${label}-`));
  profileDirs.push(dir);
  // A browser told which keys to trust (--ignore-certificate-errors-spki-list) trusts
  // those and no other certificate: it goes without the blanket switch.
  const pinned = args.some((a) => a.startsWith('--ignore-certificate-errors-spki-list='));
  const common = pinned ? CHROMIUM_ARGS.filter((a) => a !== '--ignore-certificate-errors') : CHROMIUM_ARGS;
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: netns ? NETNS_WRAPPER : CHROMIUM,
    env: netns ? { ...process.env, E2E_NETNS: netns, CHROMIUM } : process.env,
    headless: true,
    args: [...common, ...args],
    viewport: { width: 1280, height: 800 },
  });
  contexts.push(ctx);
  if (process.env.E2E_WEB_FROM_TREE) await serveWebFromTree(ctx);
  const page = ctx.pages()[0] || (await ctx.newPage());
  const logs = [];
  page.on('console', (m) => {
    // The demo page asks /dev/token first, a 404 with a secret configured: expected.
    if (/status of 404/.test(m.text()) && /\/dev\/token/.test(m.location().url || '/dev/token')) return;
    logs.push(`[${m.type()}] ${m.text()}`);
  });
  page.on('pageerror', (err) => logs.push(`[pageerror] ${err.message}`));
  return { ctx, page, logs, dir };
}

/** A participant in the demo page. */
export class Participant {
  constructor(name) {
    this.name = name;
    this.firstFrameMs = null;
  }

  /**
   * Opens the demo page and joins through its form (pasting a token: the server has a
   * secret). `query` is the page's (e.g. `?video=1280x720`), `args` extra browser
   * switches; with `recordSent`, the page records what it sends on WebSockets in
   * window.__sent (see sent()). `base`: another server's URL; `claims`: more claims of
   * the join token (a `group`).
   */
  async join(room, {
    expectVideoFrom = false, grants, query = '', netns = null, args = [], recordSent = false,
    secret = ROOM_SECRET, base = SFU_URL, claims = {},
  } = {}) {
    const { ctx, page, logs, dir } = await newBrowser(this.name.toLowerCase(), { netns, args });
    Object.assign(this, { ctx, page, logs, dir });
    if (recordSent) await page.addInitScript(recordSentMessages);
    // The invite link: the room secret in the fragment (end-to-end encryption). (Loaded
    // again on ERR_NETWORK_CHANGED, which Chromium reports now and then while the test's
    // namespaces are made.)
    for (let attempt = 1; ; attempt++) {
      try {
        await page.goto(`${base}/${query}#${secret}`);
        break;
      } catch (e) {
        if (attempt >= 3 || !/ERR_NETWORK_CHANGED/.test(String(e))) throw e;
        await sleep(500);
      }
    }
    await page.fill('#room', room);
    await page.fill('#name', this.name);
    // With a secret configured /dev/token is 404: the page asks for a token. (Clicked
    // again if it does not: Chromium fails a request with ERR_NETWORK_CHANGED now and
    // then while the test's namespaces are made, and the page then shows that error.)
    for (let attempt = 1; ; attempt++) {
      await page.click('#join');
      try {
        await page.waitForSelector('#token-field:not([hidden])', { timeout: attempt < 3 ? 7000 : 20000 });
        break;
      } catch (e) {
        if (attempt === 3) throw e;
      }
    }
    await page.fill('#token', tokenFor(room, this.name, { ...claims, ...(grants ? { grants } : {}) }));
    // Start watching for the first decoded remote video frame before joining.
    const firstFrame = expectVideoFrom ? page.evaluate(firstFrameProbe, 30000) : null;
    await page.click('#join');
    await page.waitForFunction(
      () => window.demo.call && window.demo.call.participantId != null && window.demo.call.timings.firstAnswer != null,
      null, { timeout: 20000 },
    ).catch(async (err) => {
      throw new Error(`${this.name} did not join: ${err.message}\nstatus: ${await this.statusText()}\n${this.logs.join('\n')}`);
    });
    await page.evaluate(installEventLog);
    this.id = await page.evaluate(() => window.demo.call.participantId);
    if (firstFrame) {
      this.firstFrameMs = await firstFrame;
      const t = await page.evaluate(() => {
        const { wsOpen, joined, firstAnswer } = window.demo.call.timings;
        const connected = window.demo.call.timings.connected;
        return { joined: joined - wsOpen, answer: firstAnswer - wsOpen, connected: connected != null ? connected - wsOpen : null };
      });
      console.log(`E2E first-frame-ms participant=${this.name} ms=${this.firstFrameMs.toFixed(0)} `
        + `(joined +${t.joined.toFixed(0)}, answer +${t.answer.toFixed(0)}, connected +${t.connected == null ? '?' : t.connected.toFixed(0)})`);
    }
    return this;
  }

  /** Whether this participant's call is still up. */
  async alive() {
    return !!this.page && (await this.page.evaluate(() => !!window.demo.call && window.demo.call.state === 'joined'));
  }

  statusText() {
    return this.page.evaluate(() => document.getElementById('status').textContent);
  }

  state() {
    return this.page.evaluate(() => {
      const c = window.demo.call;
      return {
        state: c.state,
        participantId: c.participantId,
        participants: [...c.participants.values()],
        remote: [...c.remoteTracks.values()].map(({ track, ...t }) => ({ ...t, readyState: track ? track.readyState : null })),
        local: [...c.localTracks.entries()].map(([source, l]) => ({ source, mid: l.mid, track_id: l.track_id })),
        events: window.__events,
        wire: window.__wire,
      };
    });
  }

  stats() {
    return this.page.evaluate(() => window.demo.call.inboundStats());
  }

  /** The local tracks' outbound RTP streams (one per simulcast layer): Call.outboundStats. */
  outStats() {
    return this.page.evaluate(() => window.demo.call.outboundStats());
  }

  /** What the page sent on its WebSockets (joined with `recordSent`), `type` ones only if given. */
  async sent(type = null) {
    const all = await this.page.evaluate(() => window.__sent || []);
    return type ? all.filter((m) => m.type === type) : all;
  }

  /** The peer connection's m-lines: transceivers, m= lines of the local SDP, per-mid details. */
  mlines() {
    return this.page.evaluate(() => {
      const pc = window.demo.call.pc;
      const sdp = pc.localDescription ? pc.localDescription.sdp : '';
      return {
        transceivers: pc.getTransceivers().length,
        mlines: (sdp.match(/^m=/gm) || []).length,
        stopped: pc.getTransceivers().filter((t) => t.stopped || t.currentDirection === 'stopped').length,
        byMid: Object.fromEntries(pc.getTransceivers().map((t) => [t.mid, {
          kind: t.receiver.track.kind, direction: t.direction, currentDirection: t.currentDirection,
        }])),
      };
    });
  }

  /** The negotiated SRTP cipher and DTLS details of the (single, bundled) transport. */
  transport() {
    return this.page.evaluate(async () => {
      const report = await window.demo.call.pc.getStats();
      const out = [];
      for (const r of report.values()) {
        if (r.type === 'transport') {
          out.push({ srtpCipher: r.srtpCipher, dtlsCipher: r.dtlsCipher, dtlsState: r.dtlsState, tlsVersion: r.tlsVersion });
        }
      }
      return out;
    });
  }

  /**
   * Waits until the remote tracks are exactly `expected` ([{participant, source}]), then
   * until every one of them receives bytes and (video) decodes frames between two samples.
   */
  async expectMedia(expected, what) {
    const want = expected.map((e) => `${e.participant.name}/${e.source}`).sort();
    const names = new Map(expected.map((e) => [e.participant.id, e.participant.name]));
    const label = (t) => `${names.get(t.participant_id) || `#${t.participant_id}`}/${t.source}`;
    const first = await waitFor(`${this.name} to receive ${what}: ${want.join(', ')}`, async () => {
      const st = await this.state();
      const have = st.remote.map(label).sort();
      const stats = await this.stats();
      const ids = new Set(st.remote.map((t) => t.track_id));
      const flowing = new Map(stats.filter((s) => ids.has(s.track_id) && s.packetsReceived > 0).map((s) => [s.track_id, s]));
      const missing = st.remote.filter((t) => !flowing.has(t.track_id)).map(label);
      const ok = JSON.stringify(have) === JSON.stringify(want) && missing.length === 0
        && st.remote.every((t) => t.readyState === 'live');
      const ended = st.events.filter((e) => e.type === 'left' || e.type === 'closed');
      const fatal = st.state === 'closed' ? `${this.name}'s call ended` : null;
      return { ok, fatal, have, want, missing, ended, errors: st.events.filter((e) => e.type === 'error'), stats: [...flowing.values()] };
    });
    const a = new Map(first.stats.map((s) => [s.track_id, s]));
    return waitFor(`${this.name}'s ${what} to keep flowing and decoding`, async () => {
      const stats = await this.stats();
      if ((await this.page.evaluate(() => window.demo.call.state)) === 'closed') return { fatal: `${this.name}'s call ended` };
      const stalled = [];
      for (const [id, s0] of a) {
        const s1 = stats.find((s) => s.track_id === id);
        const grew = s1 && s1.bytesReceived > s0.bytesReceived
          && (s0.kind !== 'video' || s1.framesDecoded > s0.framesDecoded);
        if (!grew) stalled.push({ before: s0, now: s1 || null });
      }
      // With E2EE, what the worker did with the frames tells a stall's cause apart.
      const e2ee = stalled.length ? await this.page.evaluate(() => window.demo.call.e2ee.stats) : null;
      return { ok: stalled.length === 0, stalled, e2ee };
    }, { timeout: 15000 });
  }

  async close() {
    if (this.ctx) await this.ctx.close().catch(() => {});
    this.ctx = null;
  }
}

/**
 * The hooks of a suite of browser steps (call inside `describe`): the server must be up
 * first; at the end, the last browser console lines of `participants` and the logs of
 * the suite's own `servers()` (OwnServer) when a step failed, then those servers stop
 * and every browser and profile goes.
 */
export function browserHooks(participants, failed, { servers = () => [] } = {}) {
  before(async () => {
    const res = await fetch(`${SFU_URL}/healthz`);
    assert.equal(res.status, 200, `server not healthy at ${SFU_URL}`);
  });
  after(async () => {
    if (failed()) {
      for (const p of participants) {
        if (p.logs && p.logs.length) console.log(`--- browser console of ${p.name}:\n${p.logs.slice(-40).join('\n')}`);
      }
      for (const s of servers()) console.log(`--- log of the ${s.label} server ${s.log}:\n${s.text().slice(-4000)}`);
    }
    for (const s of servers()) s.stop({ keepLog: failed() });
    await Promise.all(contexts.map((c) => c.close().catch(() => {})));
    if (!process.env.E2E_KEEP_PROFILES) for (const d of profileDirs) rmSync(d, { recursive: true, force: true });
  });
}

/** In the page: resolves with ms from WebSocket open to the first decoded remote video frame. */
export async function firstFrameProbe(timeoutMs) {
  const start = performance.now();
  for (;;) {
    const call = window.demo && window.demo.call;
    if (call && call.pc && call.timings.wsOpen != null) {
      const stats = await call.inboundStats();
      if (stats.some((s) => s.kind === 'video' && s.framesDecoded > 0)) {
        return performance.now() - call.timings.wsOpen;
      }
    }
    if (performance.now() - start > timeoutMs) throw new Error('no remote video frame decoded');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * In the page, before its scripts (an init script): records each JSON message sent on a
 * WebSocket in window.__sent, without SDP and tokens.
 */
export function recordSentMessages() {
  window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function recordedSend(data) {
    try {
      const { sdp, token, ...rest } = JSON.parse(data);
      window.__sent.push(rest);
    } catch {
      // Not JSON: not ours to record.
    }
    return send.call(this, data);
  };
}

/**
 * In the page: records the call's events (without the MediaStreamTrack objects), and, in
 * window.__wire, the server's messages in arrival order (type and ids only).
 */
export function installEventLog() {
  window.__events = [];
  window.__wire = [];
  const call = window.demo.call;
  const dispatch = call._dispatch.bind(call);
  call._dispatch = (msg) => {
    const { sdp, participants, tracks, ...rest } = msg;
    window.__wire.push(rest);
    return dispatch(msg);
  };
  const types = ['participant_joined', 'participant_left', 'track', 'track_removed', 'track_muted', 'error', 'left', 'closed',
    'grants', 'local_track_removed', 'local_track_muted'];
  for (const type of types) {
    window.demo.call.addEventListener(type, (e) => {
      const { track, error, ...detail } = e.detail || {};
      window.__events.push({ type, ...detail });
    });
  }
}

// ------------------------------------------------------------------ clients in other processes

/**
 * Starts `command` with `args` (a client of another WebRTC stack: gst_whip.py,
 * aiortc_receiver.py) that prints one JSON object per line: `lines` collects them as they
 * come, `done` resolves with {code, signal, lines, stderr} once it exited and its output
 * was read to the end ('close', not 'exit', which may come before the last lines),
 * `stderr()` is the last 4000 characters of its error output.
 */
export function jsonLinesProcess(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  let stderr = '';
  let buffered = '';
  child.stdout.on('data', (d) => {
    buffered += d;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      try { lines.push(JSON.parse(line)); } catch { /* not ours */ }
    }
  });
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const done = new Promise((resolve) => {
    child.on('error', (err) => resolve({ code: null, signal: null, lines, stderr: `${stderr}${err.message}` }));
    child.on('close', (code, signal) => resolve({ code, signal, lines, stderr }));
  });
  return { child, lines, done, stderr: () => stderr };
}

// ------------------------------------------------------------------ raw WebSocket, in a page

/**
 * In a browser page (Node 20 has no WebSocket client): opens a socket to the server and
 * runs `steps`: each sends `send` (a string, sent as is; or `offer`, a real SDP offer made
 * here) and collects the next message (or the close). With `settleMs`, a step then also
 * collects, as `later`, whatever else arrives in that time (an answer that must not come).
 * With `awaitCloseMs`, waits that long at most for the server to close the socket. `url`:
 * another server's WebSocket.
 */
export async function wsScript(page, steps, { awaitCloseMs = 0, url = WS_URL } = {}) {
  return page.evaluate(async ({ url, steps, awaitCloseMs }) => {
    const ws = new WebSocket(url);
    const inbox = [];
    let waiter = null;
    let closed = null;
    const deliver = () => {
      if (waiter && (inbox.length || closed)) {
        const w = waiter;
        waiter = null;
        w();
      }
    };
    ws.onmessage = (e) => { inbox.push(e.data); deliver(); };
    ws.onclose = (e) => { closed = { code: e.code, reason: e.reason }; deliver(); };
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('WebSocket failed to open'));
    });
    const next = (timeoutMs) => new Promise((resolve) => {
      const take = () => {
        clearTimeout(timer);
        if (inbox.length) {
          const raw = inbox.shift();
          try { resolve({ message: JSON.parse(raw) }); } catch { resolve({ raw }); }
        } else resolve({ closed });
      };
      const timer = setTimeout(() => { waiter = null; resolve({ timeout: true }); }, timeoutMs);
      waiter = take;
      deliver();
    });
    const results = [];
    const pcs = [];
    for (const step of steps) {
      let payload = step.send;
      if (step.offer) {
        // A real SDP offer from this browser, declaring its m-lines as `step.offer.publish`.
        const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
        pcs.push(pc);
        for (const kind of step.offer.kinds) pc.addTransceiver(kind, { direction: 'sendonly' });
        await pc.setLocalDescription(await pc.createOffer());
        const mids = pc.getTransceivers().map((t) => t.mid);
        let sdp = pc.localDescription.sdp;
        if (step.offer.padKiB) {
          // Session-level attribute lines, as many as make the SDP that much larger.
          const line = `a=x-e2e-pad:${'p'.repeat(90)}\r\n`;
          const pad = line.repeat(Math.ceil((step.offer.padKiB * 1024) / line.length));
          sdp = sdp.replace(/^(t=.*\r\n)/m, `$1${pad}`);
        }
        payload = JSON.stringify({
          type: 'offer', sdp,
          publish: step.offer.sources.map((source, i) => ({ mid: mids[i], source })),
          subscribe: [],
        });
      }
      if (closed) { results.push({ closed, unsent: true }); continue; }
      ws.send(payload);
      const result = await next(step.timeoutMs || 5000);
      if (step.settleMs) {
        await new Promise((r) => setTimeout(r, step.settleMs));
        result.later = inbox.splice(0).map((raw) => JSON.parse(raw));
      }
      results.push(result);
    }
    // Anything else that arrived, e.g. an answer that must not have been sent.
    await new Promise((r) => setTimeout(r, 300));
    const extra = inbox.splice(0);
    if (!closed && awaitCloseMs) {
      await new Promise((r) => {
        const t = setTimeout(r, awaitCloseMs);
        ws.addEventListener('close', () => { clearTimeout(t); r(); });
      });
    }
    for (const pc of pcs) pc.close();
    ws.close();
    return { results, extra, closed };
  }, { url, steps, awaitCloseMs });
}

/** A page at the server's origin for raw WebSocket checks, independent of the call. */
export let probe = null;
export async function probePage() {
  if (!probe) {
    probe = await newBrowser('probe');
    await probe.page.goto(`${SFU_URL}/healthz`);
  }
  return probe.page;
}

export const errorCode = (r) => (r && r.message && r.message.type === 'error' ? r.message.code : JSON.stringify(r));


/**
 * The PIDs of the Chromium whose profile is `dir`: its main process and every descendant
 * (zygotes, renderers, the network service that owns the sockets).
 */
export function browserPids(dir) {
  const procs = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`).toString();
      const stat = readFileSync(`/proc/${pid}/stat`).toString();
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      procs.push({ pid: Number(pid), ppid, cmdline });
    } catch {
      // Gone meanwhile.
    }
  }
  const found = new Set(procs.filter((p) => p.cmdline.includes(`--user-data-dir=${dir}\0`) && !p.cmdline.includes('--type=')).map((p) => p.pid));
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) {
      if (found.has(p.ppid) && !found.has(p.pid)) {
        found.add(p.pid);
        grew = true;
      }
    }
  }
  return [...found];
}

// ------------------------------------------------------------------ nftables

/**
 * Loads `rules` as table `inet <table>` in network namespace `ns` (as root), replacing
 * that table if it is there.
 */
export function nftTable(ns, table, rules) {
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
    input: `table inet ${table}\ndelete table inet ${table}\ntable inet ${table} {\n${rules}\n}\n`,
  });
}

/** Removes table `inet <table>` from `ns`; false when it was not there (or `ns` is gone). */
export function nftDeleteTable(ns, table) {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', table], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A named counter of table `inet <table>` in `ns`: {packets, bytes}. */
export function nftCounterOf(ns, table, name) {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'counter', 'inet', table, name]).toString();
  const m = /packets (\d+) bytes (\d+)/.exec(out);
  return m ? { packets: Number(m[1]), bytes: Number(m[2]) } : { packets: NaN, bytes: NaN };
}

// ------------------------------------------------------------------ servers of a suite's own

/**
 * A server a suite starts for itself in namespace sfu-srv (beside run.sh's), with the
 * binary run.sh uses (SFU_BIN) and its secret (SFU_SECRET, inherited), without ICE-TCP
 * (unless `iceTcp`: give it a `--tcp-port` of its own), TURN or a load limit (a debug build on a busy machine must not turn joins away for
 * load), plus `args`. Its log goes to a file of its own, named after `label`; `ip netns
 * exec` becomes the server, so signals sent to `child` reach it.
 */
export class OwnServer {
  constructor(label, args, { iceTcp = false } = {}) {
    assert.ok(process.env.SFU_BIN, 'SFU_BIN: the server binary (e2e/run.sh sets it)');
    this.label = label;
    this.log = join(tmpdir(), `sfu-e2e-${label}-${RUN}.log`);
    this.child = spawn('ip', [
      'netns', 'exec', 'sfu-srv', process.env.SFU_BIN,
      ...(iceTcp ? [] : ['--no-ice-tcp']), '--turn', 'false', '--max-load', '0', ...args,
    ], { stdio: ['ignore', openSync(this.log, 'w'), 'inherit'] });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.exitedAt = null;
    this.exited.then(() => { this.exitedAt = Date.now(); });
  }

  /** Waits until `probe()` says the server is up (it failing if the server exits). */
  async ready(probe) {
    await waitFor(`the ${this.label} server`, async () => {
      if (this.exitedAt) return { fatal: `it exited:\n${this.text()}` };
      const seen = await probe();
      return { ok: seen === true, seen };
    });
  }

  text() {
    try { return readFileSync(this.log, 'utf8'); } catch { return ''; }
  }

  /** Exited with status 0 within `ms`. */
  async exits(ms, what) {
    const exit = await Promise.race([this.exited, sleep(ms).then(() => null)]);
    assert.ok(exit, `the server did not exit ${what} (${ms} ms):\n${this.text().slice(-3000)}`);
    assert.equal(exit.code, 0, `exit status:\n${this.text().slice(-3000)}`);
  }

  /** Stops it (if it runs); its log goes too unless `keepLog` (a failed suite's). */
  stop({ keepLog = false } = {}) {
    if (!this.exitedAt) this.child.kill('SIGKILL');
    if (!keepLog) rmSync(this.log, { force: true });
  }
}
