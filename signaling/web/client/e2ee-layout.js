// The layout of an end-to-end encrypted frame (docs/e2ee.md): which leading bytes of each
// codec stay clear, and how a KID names the sender, its key generation and ratchet step.

/** VP8's payload header: 10 bytes on a keyframe (frame tag, start code, dimensions), 3 else. */
const VP8_KEY_CLEAR = 10;
const VP8_DELTA_CLEAR = 3;

/**
 * How many leading bytes of a frame stay clear. VP8 keeps its payload header, which the
 * server reads for keyframes and the receiver's depacketizer for the picture size; VP9
 * and AV1 keep nothing (their layers and keyframes are in the RTP payload descriptor or
 * the dependency descriptor); nor does Opus (audio levels are a header extension).
 * Never the whole frame: at least one byte is encrypted.
 * @param {string} codec 'VP8', 'VP9', 'AV1', 'H264', 'opus', ...
 * @param {Uint8Array} frame
 */
export function clearLength(codec, frame) {
  if (codec !== 'VP8' || frame.length === 0) return 0;
  const keyframe = (frame[0] & 0x01) === 0;
  return Math.min(keyframe ? VP8_KEY_CLEAR : VP8_DELTA_CLEAR, frame.length - 1);
}

// A KID is (sender << 16) | (generation << 8) | step: the sender's participant id (so a
// receiver finds the key from the frame alone, whichever m-line or slot carried it), the
// generation of its key (a fresh random key each time someone leaves; mod 256) and the
// ratchet step within it (each time someone joins). Participant ids stay below 2^37 here,
// so a KID is a safe JavaScript integer; it travels as a BigInt.

/** @returns {bigint} */
export function makeKid(sender, generation, step) {
  return (BigInt(sender) << 16n) | (BigInt(generation & 0xff) << 8n) | BigInt(step & 0xff);
}

/** @param {bigint} kid */
export function kidSender(kid) {
  return Number(kid >> 16n);
}

/** @param {bigint} kid */
export function kidGeneration(kid) {
  return Number((kid >> 8n) & 0xffn);
}

/** @param {bigint} kid */
export function kidStep(kid) {
  return Number(kid & 0xffn);
}
