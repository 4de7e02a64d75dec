// One encoded frame sealed or opened with SFrame in its codec's layout (docs/e2ee.md):
// `clear || header || ciphertext || tag`, where `clear` is the codec's few readable bytes
// (./e2ee-layout.js), authenticated with the header; for H.264 the part after `clear` is
// escaped so that it holds no start code (./e2ee-h264.js); for AV1 the sealed bytes are
// laid over the frame's OBUs (./e2ee-av1.js). The worker seals and opens frames through
// these; the end-to-end tests open what the server forwarded with them.

import { clearLength } from './e2ee-layout.js';
import { clearLayout, escape, trailingZeros, unescape } from './e2ee-h264.js';
import { openLayout, sealLayout } from './e2ee-av1.js';
import { concat, open, peek, seal } from './sframe.js';

/**
 * A frame sealed: its clear bytes, the SFrame header and the ciphertext. null when the
 * frame cannot be laid out (an H.264 frame without a slice): it is not to be sent.
 * @param {string} codec 'VP8', 'VP9', 'AV1', 'H264', 'opus', ...
 * @param {{kid: bigint, key: CryptoKey, salt: Uint8Array}} key
 * @param {bigint} ctr
 * @param {Uint8Array} data the encoded frame
 * @returns {Promise<Uint8Array | null>}
 */
export async function sealFrame(codec, key, ctr, data) {
  if (codec === 'AV1') {
    const layout = sealLayout(data);
    if (!layout) return null;
    const sealed = await seal(key, ctr, layout.aad, layout.plaintext);
    return layout.assemble(sealed.subarray(layout.aad.length));
  }
  if (codec !== 'H264') {
    const clear = clearLength(codec, data);
    return seal(key, ctr, data.subarray(0, clear), data.subarray(clear));
  }
  const layout = clearLayout(data);
  if (!layout) return null;
  const clear = data.subarray(0, layout.clearEnd);
  const sealed = await seal(key, ctr, layout.aad, data.subarray(layout.clearEnd));
  return concat(clear, escape(sealed.subarray(layout.aad.length), trailingZeros(clear)));
}

/**
 * A received frame read: its SFrame header (`kid`, `ctr`) and what opening it takes.
 * null when it is not a sealed frame of this codec's layout (malformed).
 * @param {string} codec
 * @param {Uint8Array} data
 * @returns {{kid: bigint, ctr: bigint, framed: Uint8Array, aadLength: number, header: object,
 *   finish: ((plaintext: Uint8Array) => Uint8Array) | null} | null} `framed`: what SFrame
 *   opens (authenticated metadata, header, ciphertext); `finish`: the frame from the
 *   plaintext, where it is not `framed`'s clear part followed by the plaintext
 */
export function readFrame(codec, data) {
  if (codec === 'AV1') {
    const layout = openLayout(data);
    if (!layout) return null;
    const framed = concat(layout.aad, layout.sealed);
    const header = peek(framed, layout.aad.length);
    if (!header) return null;
    return { kid: header.kid, ctr: header.ctr, framed, aadLength: layout.aad.length, header, finish: layout.rebuild };
  }
  if (codec !== 'H264') {
    const clear = clearLength(codec, data);
    const header = peek(data, clear);
    if (!header) return null;
    return { kid: header.kid, ctr: header.ctr, framed: data, aadLength: clear, header, finish: null };
  }
  const layout = clearLayout(data);
  if (!layout) return null;
  const clear = data.subarray(0, layout.clearEnd);
  const rest = unescape(data.subarray(layout.clearEnd), trailingZeros(clear));
  if (!rest) return null;
  // Opened as SFrame sees it: the canonical clear bytes, then header and ciphertext.
  const framed = concat(layout.aad, rest);
  const header = peek(framed, layout.aad.length);
  if (!header) return null;
  return {
    kid: header.kid, ctr: header.ctr, framed, aadLength: layout.aad.length, header,
    finish: (plaintext) => concat(clear, plaintext),
  };
}

/**
 * A read frame opened with the key of its KID: the encoded frame as it was sealed.
 * Rejects (OperationError) when it does not authenticate.
 * @param {{kid: bigint, key: CryptoKey, salt: Uint8Array}} key
 * @param {ReturnType<typeof readFrame>} read
 * @returns {Promise<Uint8Array>}
 */
export async function openFrame(key, read) {
  const opened = await open(key, read.framed, read.aadLength, read.header);
  return read.finish ? read.finish(opened.subarray(read.aadLength)) : opened;
}
