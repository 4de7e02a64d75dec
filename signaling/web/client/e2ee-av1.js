// AV1's layout under SFrame (docs/e2ee.md): a sealed AV1 frame is still a sequence of
// OBUs, because the sender's RTP packetizer splits a frame at its OBUs and the receiver's
// depacketizer rebuilds them (RFC-to-be "RTP Payload Format for AV1").
//
// Each OBU keeps its header (and extension byte) in the clear; their payloads, one after
// the other, are the SFrame plaintext. The SFrame header goes at the start of the first
// OBU's payload and the tag at the end of the last one, each OBU's size grown to match.
// The packetizer drops temporal delimiters, tile lists and padding, and the depacketizer
// rewrites every OBU with a size field of its own encoding, so neither is sealed: SFrame
// authenticates each kept OBU's header (size flag cleared), extension byte and plaintext
// size.

import { concat, decodeHeader, NT } from './sframe.js';

const HAS_SIZE = 0x02;
const HAS_EXTENSION = 0x04;
/** OBU types the packetizer leaves out: temporal delimiter, tile list, padding. */
const DROPPED = new Set([2, 8, 15]);

const obuType = (header) => (header >> 3) & 0x0f;

/**
 * The OBUs of a frame as [{header, ext, payload}] (`ext` null without an extension), or
 * null when they do not parse.
 * @param {Uint8Array} data
 */
export function parseObus(data) {
  const obus = [];
  let at = 0;
  while (at < data.length) {
    const header = data[at++];
    let ext = null;
    if (header & HAS_EXTENSION) {
      if (at >= data.length) return null;
      ext = data[at++];
    }
    let size = data.length - at;
    if (header & HAS_SIZE) {
      const leb = readLeb128(data, at);
      if (!leb || leb.value > data.length - leb.end) return null;
      size = leb.value;
      at = leb.end;
    }
    obus.push({ header, ext, payload: data.subarray(at, at + size) });
    at += size;
  }
  return obus;
}

/** The OBUs the packetizer sends, or null when there are none (or they do not parse). */
function sentObus(data) {
  const obus = parseObus(data);
  const kept = obus && obus.filter((o) => !DROPPED.has(obuType(o.header)));
  return kept && kept.length > 0 ? kept : null;
}

/** What SFrame authenticates: each OBU's header (size flag cleared), extension, size. */
function metadata(obus, sizes) {
  const out = [];
  obus.forEach((o, i) => {
    out.push(o.header & ~HAS_SIZE);
    if (o.ext !== null) out.push(o.ext);
    out.push((sizes[i] >>> 24) & 0xff, (sizes[i] >>> 16) & 0xff, (sizes[i] >>> 8) & 0xff, sizes[i] & 0xff);
  });
  return Uint8Array.from(out);
}

/** One OBU with a size field. */
function obuBytes(o, payload) {
  const head = [o.header | HAS_SIZE, ...(o.ext !== null ? [o.ext] : []), ...leb128(payload.length)];
  return concat(Uint8Array.from(head), payload);
}

/**
 * What sealing a frame takes: the plaintext (its OBUs' payloads), the metadata SFrame
 * authenticates, and `assemble`, which lays out the sealed bytes (header, ciphertext,
 * tag) over the OBUs. null when the frame holds no OBU to send.
 * @param {Uint8Array} data
 */
export function sealLayout(data) {
  const obus = sentObus(data);
  if (!obus) return null;
  const sizes = obus.map((o) => o.payload.length);
  return {
    plaintext: concat(...obus.map((o) => o.payload)),
    aad: metadata(obus, sizes),
    /** @param {Uint8Array} sealed header || ciphertext || tag */
    assemble(sealed) {
      const headerLength = sealed.length - NT - sizes.reduce((a, b) => a + b, 0);
      let at = 0;
      return concat(...obus.map((o, i) => {
        const n = sizes[i] + (i === 0 ? headerLength : 0) + (i === obus.length - 1 ? NT : 0);
        const part = obuBytes(o, sealed.subarray(at, at + n));
        at += n;
        return part;
      }));
    },
  };
}

/**
 * What opening a received frame takes: the sealed bytes (its OBUs' payloads), the
 * metadata SFrame authenticates, and `rebuild`, which lays the plaintext back over the
 * OBUs. null when the frame is not laid out so.
 * @param {Uint8Array} data
 */
export function openLayout(data) {
  const obus = sentObus(data);
  if (!obus) return null;
  const sealed = concat(...obus.map((o) => o.payload));
  const header = decodeHeader(sealed, 0);
  if (!header) return null;
  const last = obus.length - 1;
  const sizes = obus.map((o, i) => o.payload.length - (i === 0 ? header.length : 0) - (i === last ? NT : 0));
  if (sizes.some((n) => n < 0)) return null;
  return {
    sealed,
    aad: metadata(obus, sizes),
    /** @param {Uint8Array} plaintext */
    rebuild(plaintext) {
      let at = 0;
      return concat(...obus.map((o, i) => {
        const part = obuBytes(o, plaintext.subarray(at, at + sizes[i]));
        at += sizes[i];
        return part;
      }));
    },
  };
}

/** leb128 of `n`, in the fewest bytes. */
export function leb128(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

/** The leb128 at `at` (at most 8 bytes), and where it ends; null when cut short. */
function readLeb128(data, at) {
  let value = 0;
  for (let i = 0; i < 8; i++) {
    if (at + i >= data.length) return null;
    const b = data[at + i];
    value += (b & 0x7f) * 2 ** (7 * i);
    if (!(b & 0x80)) return { value, end: at + i + 1 };
  }
  return null;
}
