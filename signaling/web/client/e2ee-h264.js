// H.264's layout under SFrame (docs/e2ee.md): which NAL units of an Annex B frame stay
// clear, the canonical form of those bytes that SFrame authenticates, and the escaping
// that keeps start codes out of the encrypted part.
//
// The sender's RTP packetizer splits a frame into NAL units at its start codes, and the
// receiver's depacketizer reads the parameter sets and the first slice's header (its
// picture parameter set id) before the frame is decrypted, then rebuilds the frame with
// its own start codes. So:
// - every NAL unit before the first slice (SPS, PPS, AUD, SEI) stays clear, and the first
//   slice's NAL header and the next SLICE_HEADER_CLEAR bytes (first_mb_in_slice,
//   slice_type and pic_parameter_set_id need at most 25 bits in a first slice);
// - SFrame authenticates those NAL units without their start codes, each length-prefixed,
//   so that a receiver whose depacketizer wrote other start codes still opens the frame;
// - what follows (the SFrame header, the ciphertext and the tag) is escaped as H.264
//   escapes a NAL unit's payload: 0x03 after any two zero bytes that a byte up to 0x03
//   follows. It then holds no start code, and the packetizer sends it as the rest of the
//   first slice's NAL unit.

/** Bytes of the first slice's header after its NAL header that stay clear. */
export const SLICE_HEADER_CLEAR = 4;
/** The clear part of the first slice (NAL header and slice header bytes). */
const SLICE_CLEAR = 1 + SLICE_HEADER_CLEAR;

/**
 * The NAL units of an Annex B frame, as {start, payload, end}: where its start code
 * begins, where its NAL header is, and where it ends. A start code is 00 00 01, or
 * 00 00 00 01 (a zero before a three-byte one belongs to the start code), as libwebrtc's
 * packetizer reads them.
 * @param {Uint8Array} data
 */
export function nalUnits(data) {
  const units = [];
  for (let i = 0; i + 3 <= data.length; i++) {
    if (data[i] !== 0 || data[i + 1] !== 0 || data[i + 2] !== 1) continue;
    const start = i > 0 && data[i - 1] === 0 ? i - 1 : i;
    if (units.length > 0) units[units.length - 1].end = start;
    units.push({ start, payload: i + 3, end: data.length });
    i += 2;
  }
  return units;
}

/** Whether a NAL unit type is a slice of a picture (types 1 to 5). */
function isSlice(header) {
  const type = header & 0x1f;
  return type >= 1 && type <= 5;
}

/**
 * The clear layout of a frame: `clearEnd`, how many leading bytes stay clear, and `aad`,
 * the canonical form of those bytes that SFrame authenticates. null when the frame has no
 * slice, or a first slice too short to keep its header clear and encrypt a byte of it:
 * such a frame is not sent (the sender) or not opened (the receiver).
 * @param {Uint8Array} data
 * @returns {{clearEnd: number, aad: Uint8Array} | null}
 */
export function clearLayout(data) {
  const units = nalUnits(data);
  const first = units.findIndex((u) => u.payload < u.end && isSlice(data[u.payload]));
  if (first < 0) return null;
  const slice = units[first];
  if (slice.end - slice.payload <= SLICE_CLEAR) return null;
  const clearEnd = slice.payload + SLICE_CLEAR;
  const parts = units.slice(0, first).map((u) => data.subarray(u.payload, u.end));
  parts.push(data.subarray(slice.payload, clearEnd));
  const aad = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(aad.buffer);
  let at = 0;
  for (const p of parts) {
    view.setUint32(at, p.length);
    aad.set(p, at + 4);
    at += 4 + p.length;
  }
  return { clearEnd, aad };
}

/** How many zero bytes end `data` (at most two: all that escaping needs to know). */
export function trailingZeros(data) {
  let n = 0;
  while (n < 2 && n < data.length && data[data.length - 1 - n] === 0) n++;
  return n;
}

/**
 * `data` escaped: 0x03 after every two zero bytes followed by a byte up to 0x03.
 * @param {Uint8Array} data
 * @param {number} zeros zero bytes just before `data` (0, 1 or 2)
 */
export function escape(data, zeros = 0) {
  const out = new Uint8Array(data.length + Math.ceil(data.length / 2) + 1);
  let n = 0;
  for (const b of data) {
    if (zeros >= 2 && b <= 3) {
      out[n++] = 3;
      zeros = 0;
    }
    out[n++] = b;
    zeros = b === 0 ? zeros + 1 : 0;
  }
  return out.slice(0, n);
}

/**
 * `data` unescaped: every 0x03 after two zero bytes dropped. null when `data` holds a
 * start code or another sequence that escaping never makes (00 00 then 00, 01 or 02).
 * @param {Uint8Array} data
 * @param {number} zeros zero bytes just before `data` (0, 1 or 2)
 */
export function unescape(data, zeros = 0) {
  const out = new Uint8Array(data.length);
  let n = 0;
  for (const b of data) {
    if (zeros >= 2) {
      if (b < 3) return null;
      if (b === 3) {
        zeros = 0;
        continue;
      }
    }
    out[n++] = b;
    zeros = b === 0 ? zeros + 1 : 0;
  }
  return out.slice(0, n);
}
