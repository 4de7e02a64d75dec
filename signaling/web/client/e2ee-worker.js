// The frame-encryption worker of a call: every encoded frame the call sends is sealed here
// and every frame it receives opened, with SFrame (./sframe.js, docs/e2ee.md). One worker
// per call; the main thread (./e2ee.js) hands it the keys and the transforms.
//
// Transforms arrive two ways, the same work behind both: as RTCRtpScriptTransform
// (`rtctransform` events) or as the readable/writable pair of createEncodedStreams
// (posted with op `stream`). Options: {side: 'send'|'receive', id, kind}.
//
// It fails closed: a frame to send without a key, or that does not seal, is dropped; a
// received frame that does not open is dropped (never given to the decoder) and counted.
//
// Messages from the main thread:
//   {op: 'init', test}                      test: allow `record` (tests only)
//   {op: 'record', on}                      test mode: hash the frames sealed from now
//   {op: 'send_key', kid, key}              seal from now on with this base key and KID
//   {op: 'add_key', kid, key}               a sender's base key for its KID (and later
//                                           ratchet steps of it)
//   {op: 'drop_keys', sender}               forget a sender's keys (it left)
//   {op: 'drop_all_keys'}                   forget every sender's keys (a new session:
//                                           participant ids start anew, and a stale key
//                                           of an id's earlier holder, further ratcheted,
//                                           would hide the new holder's)
//   {op: 'codecs', codecs}                  {payloadType: 'VP8'|'VP9'|'AV1'|'H264'|...}
//   {op: 'plaintext', id, on}               receiver `id` carries a sender that does not
//                                           encrypt (a room that allows it): pass through
//   {op: 'stream', options, readable, writable}
// Messages to it:
//   {op: 'stats', stats}                    counters, every STATS_MS
//   {op: 'missing_key', id, sender, kid}    a frame came with a KID it has no key for
//   {op: 'hashes', plain, sealed}           test mode: hashes of frames, in batches

import { deriveKey, ratchet } from './sframe.js';
import { kidGeneration, kidSender, kidStep } from './e2ee-layout.js';
import { openFrame, readFrame, sealFrame } from './e2ee-frame.js';

const STATS_MS = 500;
/** Ratchet steps a receiver derives ahead of the newest it was given (all of them: a
 * sender ratchets once per newcomer, and a burst of joins may pass many at once). */
const MAX_RATCHET_AHEAD = 255;
/** Older ratchet steps whose keys a receiver keeps, for frames still on their way. */
const KEEP_STEPS = 2;
/** Hashes reported per side in test mode, in all. */
const MAX_HASHES = 20000;

let sendKey = null; // {kid: bigint, key, salt}
let sendCtr = 0n;
let sendKeySeq = 0; // the last send_key asked for: an older one that derives late is dropped
/** Receive keys by sender and generation: {step, base: Uint8Array, derived: Map<bigint, key>}. */
const generations = new Map(); // `${sender}/${generation}` -> entry
let codecs = {};
const plaintextReceivers = new Set();
let test = false;
let recording = false;
let hashes = { plain: [], sealed: [] };
let hashed = 0;
const missingReported = new Map(); // `${sender}/${kid}` -> time reported

const stats = {
  encrypted: 0, decrypted: 0, undecryptable: 0, noKey: 0, malformed: 0, authFailed: 0,
  sendDropped: 0, unlaid: 0, plaintextPassed: 0, bytesAdded: 0, kid: null,
  // Frames in by side and kind, whatever became of them.
  sentAudio: 0, sentVideo: 0, receivedAudio: 0, receivedVideo: 0,
  // Frames opened, by receiver id (./audio-watch.js tells a stuck receiver by them).
  openedBy: {},
};

self.onmessage = async ({ data }) => {
  switch (data.op) {
    case 'init':
      test = !!data.test;
      break;
    case 'record':
      recording = test && !!data.on;
      break;
    case 'send_key': {
      const seq = ++sendKeySeq;
      const key = await deriveKey(data.key, BigInt(data.kid));
      if (seq !== sendKeySeq) break;
      sendKey = key;
      sendCtr = 0n;
      stats.kid = String(data.kid);
      break;
    }
    case 'add_key': {
      const kid = BigInt(data.kid);
      const name = `${kidSender(kid)}/${kidGeneration(kid)}`;
      const old = generations.get(name);
      // A newer step of the generation, or the sender's latest word on the same one.
      if (!old || old.step < kidStep(kid) || (old.step === kidStep(kid) && !sameBytes(old.base, data.key))) {
        generations.set(name, { step: kidStep(kid), base: data.key, derived: new Map() });
      }
      break;
    }
    case 'drop_keys':
      for (const name of [...generations.keys()]) {
        if (name.startsWith(`${data.sender}/`)) generations.delete(name);
      }
      break;
    case 'drop_all_keys':
      generations.clear();
      break;
    case 'codecs':
      codecs = data.codecs || {};
      break;
    case 'plaintext':
      if (data.on) plaintextReceivers.add(data.id); else plaintextReceivers.delete(data.id);
      break;
    case 'stream':
      run(data.options, data.readable, data.writable);
      break;
    default:
      break;
  }
};

self.onrtctransform = ({ transformer }) => {
  run(transformer.options, transformer.readable, transformer.writable);
};

setInterval(() => {
  self.postMessage({ op: 'stats', stats: { ...stats, openedBy: { ...stats.openedBy } } });
  if (hashes.plain.length || hashes.sealed.length) {
    self.postMessage({ op: 'hashes', ...hashes });
    hashes = { plain: [], sealed: [] };
  }
}, STATS_MS);

/** Pipes one transform's frames through sealing or opening, in order. */
function run(options, readable, writable) {
  const work = options.side === 'send' ? sealOne : openOne;
  readable
    .pipeThrough(new TransformStream({
      transform: (frame, controller) => work(frame, controller, options),
    }))
    .pipeTo(writable)
    .catch((err) => console.warn('e2ee: transform ended', err));
}

async function sealOne(frame, controller, options) {
  stats[options.kind === 'audio' ? 'sentAudio' : 'sentVideo']++;
  const data = new Uint8Array(frame.data);
  if (data.length === 0) { controller.enqueue(frame); return; }
  if (!sendKey) { stats.sendDropped++; return; }
  try {
    const ctr = sendCtr++;
    const sealed = await sealFrame(codecOf(frame, options.kind), sendKey, ctr, data);
    if (!sealed) { stats.sendDropped++; stats.unlaid++; return; }
    if (recording) await record('plain', data, 'sealed', sealed);
    frame.data = sealed.buffer;
    stats.encrypted++;
    stats.bytesAdded += sealed.length - data.length;
    controller.enqueue(frame);
  } catch (err) {
    stats.sendDropped++;
  }
}

async function openOne(frame, controller, options) {
  stats[options.kind === 'audio' ? 'receivedAudio' : 'receivedVideo']++;
  const data = new Uint8Array(frame.data);
  if (data.length === 0) { controller.enqueue(frame); return; }
  if (plaintextReceivers.has(options.id)) {
    stats.plaintextPassed++;
    stats.openedBy[options.id] = (stats.openedBy[options.id] || 0) + 1;
    controller.enqueue(frame);
    return;
  }
  const read = readFrame(codecOf(frame, options.kind), data);
  if (!read) { fail('malformed'); return; }
  const key = await keyFor(read.kid);
  if (!key) {
    fail('noKey');
    reportMissing(options.id, read.kid);
    return;
  }
  try {
    const plain = await openFrame(key, read);
    frame.data = plain.buffer;
    stats.decrypted++;
    stats.openedBy[options.id] = (stats.openedBy[options.id] || 0) + 1;
    controller.enqueue(frame);
  } catch (err) {
    fail('authFailed');
  }
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function fail(reason) {
  stats.undecryptable++;
  stats[reason]++;
}

/**
 * The key of a KID: its generation's newest base key, ratcheted forward as far as needed.
 * The keys of the last KEEP_STEPS steps before the newest stay, for frames sent before
 * the sender ratcheted and still on their way (or on another layer, sent later).
 */
async function keyFor(kid) {
  const entry = generations.get(`${kidSender(kid)}/${kidGeneration(kid)}`);
  if (!entry) return null;
  let key = entry.derived.get(kid);
  if (key) return key;
  const step = kidStep(kid);
  if (step < entry.step || step > entry.step + MAX_RATCHET_AHEAD) return null;
  let base = entry.base;
  for (let s = entry.step; s < step; s++) base = await ratchet(base);
  if (step > entry.step) {
    // The sender ratcheted (someone joined): follow it, forgetting steps long past.
    entry.step = step;
    entry.base = base;
    for (const k of [...entry.derived.keys()]) {
      if (kidStep(k) < step - KEEP_STEPS) entry.derived.delete(k);
    }
  }
  key = await deriveKey(base, kid);
  entry.derived.set(kid, key);
  return key;
}

function reportMissing(id, kid) {
  const name = `${kidSender(kid)}/${kid}`;
  const now = Date.now();
  if (now - (missingReported.get(name) || 0) < 1000) return;
  missingReported.set(name, now);
  self.postMessage({ op: 'missing_key', id, sender: kidSender(kid), kid: String(kid) });
}

/** The codec of a frame: audio is Opus; video by the payload type's negotiated codec. */
function codecOf(frame, kind) {
  if (kind === 'audio') return 'opus';
  const meta = frame.getMetadata ? frame.getMetadata() : {};
  if (meta.mimeType) return meta.mimeType.replace(/^video\//i, '').toUpperCase();
  return codecs[meta.payloadType] || 'unknown';
}

async function record(...pairs) {
  for (let i = 0; i < pairs.length; i += 2) {
    if (hashed >= 2 * MAX_HASHES) return;
    hashed++;
    const list = hashes[pairs[i]];
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', pairs[i + 1]));
    list.push(Array.from(digest.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join(''));
  }
}
