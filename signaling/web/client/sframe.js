// SFrame (RFC 9605) with cipher suite AES_256_GCM_SHA512_128 (0x0005), on WebCrypto: the
// header codec, key derivation, ratcheting and the per-frame seal and open. No state: the
// key store and counters live in e2ee-worker.js. Runs in browsers and workers, and in
// node (its test: signaling/web/test/sframe.test.mjs, on RFC 9605's test vectors).
//
// A sealed frame here is `clear || header || ciphertext || tag`: `clear` is the codec's
// few bytes that stay readable (docs/e2ee.md), authenticated as SFrame metadata
// (aad = header || clear).

/** The cipher suite's registry value and sizes (RFC 9605 section 4.5). */
export const CIPHER_SUITE = 0x0005;
const NH = 64; // SHA-512 output, bytes
const NK = 32; // AES-256 key, bytes
const NN = 12; // GCM nonce, bytes
export const NT = 16; // GCM tag, bytes

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();

/**
 * The SFrame header of (kid, ctr), minimal lengths (RFC 9605 section 4.3).
 * @param {bigint} kid
 * @param {bigint} ctr
 * @returns {Uint8Array}
 */
export function encodeHeader(kid, ctr) {
  const kidBytes = kid < 8n ? null : bigEndian(kid);
  const ctrBytes = ctr < 8n ? null : bigEndian(ctr);
  const out = new Uint8Array(1 + (kidBytes?.length ?? 0) + (ctrBytes?.length ?? 0));
  const k = kidBytes ? 0x80 | ((kidBytes.length - 1) << 4) : Number(kid) << 4;
  const c = ctrBytes ? 0x08 | (ctrBytes.length - 1) : Number(ctr);
  out[0] = k | c;
  let at = 1;
  if (kidBytes) { out.set(kidBytes, at); at += kidBytes.length; }
  if (ctrBytes) out.set(ctrBytes, at);
  return out;
}

/**
 * Reads the SFrame header at `offset` of `bytes`.
 * @returns {{kid: bigint, ctr: bigint, length: number} | null} null when truncated
 */
export function decodeHeader(bytes, offset = 0) {
  if (offset >= bytes.length) return null;
  const config = bytes[offset];
  let at = offset + 1;
  const field = (extended, value) => {
    if (!extended) return BigInt(value);
    const len = value + 1;
    if (at + len > bytes.length) return null;
    let v = 0n;
    for (let i = 0; i < len; i++) v = (v << 8n) | BigInt(bytes[at + i]);
    at += len;
    return v;
  };
  const kid = field(config & 0x80, (config >> 4) & 0x07);
  if (kid === null) return null;
  const ctr = field(config & 0x08, config & 0x07);
  if (ctr === null) return null;
  return { kid, ctr, length: at - offset };
}

/**
 * The raw sframe_key and sframe_salt of a base key and KID (RFC 9605 section 4.4.2).
 * @param {Uint8Array} baseKey
 * @param {bigint} kid
 * @returns {Promise<{key: Uint8Array, salt: Uint8Array}>}
 */
export async function deriveSecret(baseKey, kid) {
  const ikm = await subtle.importKey('raw', baseKey, 'HKDF', false, ['deriveBits']);
  const label = (what) => concat(encoder.encode(`SFrame 1.0 Secret ${what} `),
    fixed(kid, 8), fixed(BigInt(CIPHER_SUITE), 2));
  const expand = async (info, bytes) => new Uint8Array(await subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-512', salt: new Uint8Array(0), info }, ikm, bytes * 8));
  return { key: await expand(label('key'), NK), salt: await expand(label('salt'), NN) };
}

/**
 * A key ready to seal and open frames of one KID.
 * @param {Uint8Array} baseKey
 * @param {bigint} kid
 * @returns {Promise<{kid: bigint, key: CryptoKey, salt: Uint8Array}>}
 */
export async function deriveKey(baseKey, kid) {
  const secret = await deriveSecret(baseKey, kid);
  const key = await subtle.importKey('raw', secret.key, 'AES-GCM', false, ['encrypt', 'decrypt']);
  return { kid, key, salt: secret.salt };
}

/**
 * The next ratchet step's base key (RFC 9605 section 5.1):
 * HKDF-Expand(HKDF-Extract("", base_key), "SFrame 1.0 Ratchet", Nh).
 * @param {Uint8Array} baseKey
 * @returns {Promise<Uint8Array>}
 */
export async function ratchet(baseKey) {
  const ikm = await subtle.importKey('raw', baseKey, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await subtle.deriveBits({
    name: 'HKDF', hash: 'SHA-512', salt: new Uint8Array(0),
    info: encoder.encode('SFrame 1.0 Ratchet'),
  }, ikm, NH * 8));
}

/** The nonce of a frame: the salt XOR the counter, big-endian, right-aligned. */
export function nonce(salt, ctr) {
  const out = Uint8Array.from(salt);
  const c = fixed(ctr, NN);
  for (let i = 0; i < NN; i++) out[i] ^= c[i];
  return out;
}

/**
 * Seals one frame: `clear || header || AES-GCM(plaintext)`, aad = header || clear.
 * @param {{kid: bigint, key: CryptoKey, salt: Uint8Array}} key
 * @param {bigint} ctr never reused with this key
 * @param {Uint8Array} clear the bytes left readable
 * @param {Uint8Array} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function seal(key, ctr, clear, plaintext) {
  const header = encodeHeader(key.kid, ctr);
  const sealed = new Uint8Array(await subtle.encrypt(
    { name: 'AES-GCM', iv: nonce(key.salt, ctr), additionalData: concat(header, clear), tagLength: NT * 8 },
    key.key, plaintext));
  return concat(clear, header, sealed);
}

/**
 * Reads the header of a sealed frame whose first `clearLength` bytes are clear.
 * @returns {{kid: bigint, ctr: bigint, length: number} | null}
 */
export function peek(frame, clearLength) {
  if (frame.length < clearLength + 1 + NT) return null;
  return decodeHeader(frame, clearLength);
}

/**
 * Opens a sealed frame with the key of its KID; rejects (OperationError) when it does not
 * authenticate.
 * @param {{kid: bigint, key: CryptoKey, salt: Uint8Array}} key
 * @param {Uint8Array} frame
 * @param {number} clearLength
 * @param {{ctr: bigint, length: number}} header as `peek` read it
 * @returns {Promise<Uint8Array>} clear || plaintext
 */
export async function open(key, frame, clearLength, header) {
  const clear = frame.subarray(0, clearLength);
  const headerBytes = frame.subarray(clearLength, clearLength + header.length);
  const plaintext = new Uint8Array(await subtle.decrypt(
    { name: 'AES-GCM', iv: nonce(key.salt, header.ctr), additionalData: concat(headerBytes, clear), tagLength: NT * 8 },
    key.key, frame.subarray(clearLength + header.length)));
  return concat(clear, plaintext);
}

/** The bytes of `n` big-endian in the fewest bytes (at least one). */
function bigEndian(n) {
  const bytes = [];
  do { bytes.unshift(Number(n & 0xffn)); n >>= 8n; } while (n > 0n);
  return Uint8Array.from(bytes);
}

/** The bytes of `n` big-endian in exactly `len` bytes. */
function fixed(n, len) {
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--) { out[i] = Number(n & 0xffn); n >>= 8n; }
  return out;
}

/** The arrays one after the other, in a new array. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
