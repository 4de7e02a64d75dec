// RFC 9605's test vectors (appendix C) for the client's SFrame, cipher suite
// AES_256_GCM_SHA512_128: header encoding, key derivation, nonce, sealing, opening. Run
// with `node --test signaling/web/test/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { hkdfSync } from 'node:crypto';

import {
  CIPHER_SUITE, decodeHeader, deriveKey, deriveSecret, encodeHeader, nonce, open, peek, ratchet, seal,
} from '../client/sframe.js';

const vectors = JSON.parse(readFileSync(new URL('./rfc9605-vectors.json', import.meta.url)));
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (a) => Buffer.from(a).toString('hex');

test('every header vector encodes and decodes', () => {
  assert.ok(vectors.header.length > 200);
  for (const v of vectors.header) {
    const kid = BigInt(v.kid);
    const ctr = BigInt(v.ctr);
    assert.equal(toHex(encodeHeader(kid, ctr)), v.encoded, `kid ${v.kid} ctr ${v.ctr}`);
    const bytes = hex(v.encoded);
    assert.deepEqual(decodeHeader(bytes), { kid, ctr, length: bytes.length });
    // Truncated by one byte, it does not decode (unless the header is one byte).
    if (bytes.length > 1) assert.equal(decodeHeader(bytes.subarray(0, bytes.length - 1)), null);
  }
});

const suite = vectors.sframe.filter((v) => v.cipher_suite === CIPHER_SUITE);

test('the vectors of AES_256_GCM_SHA512_128 are there', () => {
  assert.equal(suite.length, 1);
});

for (const v of suite) {
  test(`key derivation, nonce, seal and open: kid ${v.kid} ctr ${v.ctr}`, async () => {
    const kid = BigInt(v.kid);
    const ctr = BigInt(v.ctr);
    const secret = await deriveSecret(hex(v.base_key), kid);
    assert.equal(toHex(secret.key), v.sframe_key);
    assert.equal(toHex(secret.salt), v.sframe_salt);
    assert.equal(toHex(nonce(secret.salt, ctr)), v.nonce);

    // The vectors put the metadata outside the frame; here it is the clear prefix, so the
    // sealed frame is metadata || ct, with the same aad (header || metadata).
    const key = await deriveKey(hex(v.base_key), kid);
    const metadata = hex(v.metadata);
    const sealed = await seal(key, ctr, metadata, hex(v.pt));
    assert.equal(toHex(sealed), v.metadata + v.ct);

    const header = peek(sealed, metadata.length);
    assert.equal(header.kid, kid);
    assert.equal(toHex(await open(key, sealed, metadata.length, header)), v.metadata + v.pt);

    // Any flipped bit, in the clear bytes, the header or the ciphertext, fails to open.
    for (const at of [0, metadata.length, metadata.length + 3, sealed.length - 1]) {
      const bad = Uint8Array.from(sealed);
      bad[at] ^= 0x01;
      const h = peek(bad, metadata.length);
      await assert.rejects(open(key, bad, metadata.length, h ?? header));
    }
  });
}

test('a frame sealed under another key does not open', async () => {
  const a = await deriveKey(new Uint8Array(32).fill(1), 5n);
  const b = await deriveKey(new Uint8Array(32).fill(2), 5n);
  const sealed = await seal(a, 0n, new Uint8Array([0x10, 0x02, 0x00]), new Uint8Array(100));
  await assert.rejects(open(b, sealed, 3, peek(sealed, 3)));
  assert.equal((await open(a, sealed, 3, peek(sealed, 3))).length, 103);
});

test('a ratchet step is RFC 9605 section 5.1: HKDF-SHA-512, "SFrame 1.0 Ratchet", 64 bytes', async () => {
  // Checked against node's own HKDF (OpenSSL), not WebCrypto's.
  const base = Uint8Array.from({ length: 32 }, (_, i) => i);
  const want = Buffer.from(hkdfSync('sha512', base, Buffer.alloc(0), 'SFrame 1.0 Ratchet', 64));
  const once = await ratchet(base);
  assert.equal(toHex(once), want.toString('hex'));
  const twice = await ratchet(once);
  assert.equal(toHex(twice), Buffer.from(hkdfSync('sha512', once, Buffer.alloc(0), 'SFrame 1.0 Ratchet', 64)).toString('hex'));
  assert.notEqual(toHex(twice), toHex(once));
});
