// End-to-end test of signaling over HTTPS (`--http-cert`, `--http-key`) with Chromium
// peers, against a server of its own (lib.mjs, OwnServer) in namespace sfu-srv on port
// 8443 (standing in for 443) and UDP 17010-17019.
//
// The test makes a CA (openssl) and two certificates it signs for 10.77.0.1, A and B; the
// server serves A's chain (A, then the CA), and the browsers trust the CA through
// Chromium's --ignore-certificate-errors-spki-list (the CA's key, found in the chain the
// server sends): nothing else is trusted, so a page that loads was served by this server
// with a certificate of this CA.
//
// 1. Two pages load the demo page over https:// and call over wss://, decoding each other.
// 2. The files are replaced by B's and the server gets SIGHUP: new connections are served
//    B (checked with node's TLS client, which trusts only the CA), while the call goes
//    on, its WebSockets open: no `left`, `closed` or `error` event on either page, both
//    still decoding. A third page joins over wss:// (a handshake with B) and all three
//    decode one another.
// Run through e2e/run.sh.

import { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  steps, RUN, waitFor, sleep, Participant, LEAN_ARGS, OwnServer, browserHooks,
} from './lib.mjs';

const HOST = '10.77.0.1';
const PORT = 8443;
const BASE = `https://${HOST}:${PORT}`;
const DIR = mkdtempSync(join(tmpdir(), 'sfu-e2e-tls-'));
const file = (name) => join(DIR, name);

const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** The test's CA: its certificate in ca.pem, its key in ca.key. */
function makeCa() {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', `/CN=sfu e2e CA ${RUN}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
}

/** A certificate for HOST signed by the CA: `<name>.key`, and `<name>.chain` (it, then the CA). */
function makeLeaf(name) {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${HOST}`);
  writeFileSync(file(`${name}.ext`), `subjectAltName=IP:${HOST}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-CAcreateserial', '-days', '2', '-out', file(`${name}.pem`), '-extfile', file(`${name}.ext`));
  writeFileSync(file(`${name}.chain`), readFileSync(file(`${name}.pem`), 'utf8') + readFileSync(file('ca.pem'), 'utf8'));
  return new X509Certificate(readFileSync(file(`${name}.pem`))).fingerprint256;
}

/** The CA's key as Chromium's --ignore-certificate-errors-spki-list wants it. */
function caSpkiHash() {
  const spki = new X509Certificate(readFileSync(file('ca.pem'))).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** The fingerprint of the certificate a new TLS connection is served, trusting only the CA. */
function servedFingerprint() {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port: PORT, ca: readFileSync(file('ca.pem')) }, () => {
      const { fingerprint256 } = socket.getPeerCertificate();
      socket.end();
      resolve(fingerprint256);
    });
    socket.on('error', (e) => resolve(`error: ${e.message}`));
    socket.setTimeout(3000, () => { socket.destroy(); resolve('timeout'); });
  });
}

/** GET `path` over HTTPS, trusting only the CA: `<status> <body>`, or `no answer`. */
function get(path) {
  return new Promise((resolve) => {
    const req = request(`${BASE}${path}`, { ca: readFileSync(file('ca.pem')), timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(`${res.statusCode} ${body.trim()}`));
    });
    req.on('error', () => resolve('no answer'));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

describe('signaling over HTTPS with Chromium peers', { timeout: 300000 }, () => {
  const { step, failed } = steps({ timeout: 150000 });
  const ann = new Participant('Ann');
  const ben = new Participant('Ben');
  const cid = new Participant('Cid');
  let server = null;

  browserHooks([ann, ben, cid], failed, { servers: () => (server ? [server] : []) });
  after(() => rmSync(DIR, { recursive: true, force: true }));

  step('a call over wss:// goes on while the certificate is replaced', async () => {
    makeCa();
    const fingerprintA = makeLeaf('a');
    const fingerprintB = makeLeaf('b');
    copyFileSync(file('a.chain'), file('cert.pem'));
    copyFileSync(file('a.key'), file('key.pem'));
    server = new OwnServer('tls', [
      '--http-listen', `${HOST}:${PORT}`, '--udp-ports', '17010-17019', '--udp-bind', HOST,
      '--http-cert', file('cert.pem'), '--http-key', file('key.pem'),
    ]);
    await server.ready(async () => {
      const s = await get('/readyz');
      return s === '200 ready' || s;
    });
    assert.equal(await servedFingerprint(), fingerprintA);

    const trust = `--ignore-certificate-errors-spki-list=${caSpkiHash()}`;
    const room = `e2e-tls-${RUN}`;
    for (const p of [ann, ben]) await p.join(room, { base: BASE, args: [...LEAN_ARGS, trust] });
    for (const p of [ann, ben]) {
      assert.equal(await p.page.evaluate(() => window.location.protocol), 'https:');
    }
    const cam = (p) => [{ participant: p, source: 'microphone' }, { participant: p, source: 'camera' }];
    await ann.expectMedia(cam(ben), 'the call over wss://');
    await ben.expectMedia(cam(ann), 'the call over wss://');

    copyFileSync(file('b.chain'), file('cert.pem'));
    copyFileSync(file('b.key'), file('key.pem'));
    server.child.kill('SIGHUP');
    await waitFor('new connections to be served B', async () => {
      const served = await servedFingerprint();
      return { ok: served === fingerprintB, served };
    });
    assert.match(server.text(), /HTTPS: certificate reloaded from/);

    // The call went on: same participants, sockets never closed, media both ways.
    await sleep(1500);
    for (const p of [ann, ben]) {
      const st = await p.page.evaluate(() => ({
        state: window.demo.call.state,
        id: window.demo.call.participantId,
        broken: window.__events.filter((e) => ['left', 'closed', 'error'].includes(e.type)),
      }));
      assert.deepEqual(st, { state: 'joined', id: p.id, broken: [] }, `${p.name}'s call after the swap`);
    }
    await ann.expectMedia(cam(ben), 'the call after the swap');
    await ben.expectMedia(cam(ann), 'the call after the swap');

    // A newcomer's handshake is with B; the three decode one another.
    await cid.join(room, { base: BASE, args: [...LEAN_ARGS, trust] });
    await cid.expectMedia([...cam(ann), ...cam(ben)], 'the call joined after the swap');
    await ann.expectMedia([...cam(ben), ...cam(cid)], 'the call with the newcomer');
    await ben.expectMedia([...cam(ann), ...cam(cid)], 'the call with the newcomer');
  });
});
