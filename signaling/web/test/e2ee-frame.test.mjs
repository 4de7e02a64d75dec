// The frame layouts of the client's E2EE (docs/e2ee.md): H.264's clear NAL units, its
// canonical authenticated form and the escaping that keeps start codes out of the
// ciphertext; AV1's OBUs around the sealed bytes; and a sealed frame of each codec
// opening to the frame it was. Run with `node --test signaling/web/test/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { deriveKey } from '../client/sframe.js';
import { openFrame, readFrame, sealFrame } from '../client/e2ee-frame.js';
import { clearLayout, escape, nalUnits, unescape } from '../client/e2ee-h264.js';
import { leb128, parseObus } from '../client/e2ee-av1.js';

const bytes = (...parts) => Uint8Array.from(parts.flat());
const START4 = [0, 0, 0, 1];
const START3 = [0, 0, 1];
// An SPS (type 7), a PPS (type 8) and an IDR slice (type 5) whose payload holds an
// emulation prevention byte (00 00 03) and zeros, as an encoder writes them.
const SPS = [0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0];
const PPS = [0x68, 0xce, 0x3c, 0x80];
const IDR = [0x65, 0x88, 0x84, 0x00, 0x33, 0x00, 0x00, 0x03, 0x01, 0xff, 0x00, 0x00, 0x00, 0x07, 0x12, 0x00];
const P_SLICE = [0x41, 0x9a, 0x02, 0x04, 0x00, 0x00, 0x03, 0x00, 0x5c, 0x41];
const keyframe = bytes(START4, SPS, START4, PPS, START4, IDR);

/** An AV1 OBU: its header byte (size flag added), extension byte if any, payload. */
const obu = (type, payload, ext = null) => bytes(
  [(type << 3) | 0x02 | (ext !== null ? 0x04 : 0)], ext !== null ? [ext] : [], leb128(payload.length), [...payload],
);
const TD = obu(2, []);
const SEQUENCE_HEADER = obu(1, [0x00, 0x00, 0x00, 0x02, 0xaf, 0xff, 0x9b, 0x5f, 0x30, 0x08]);
const av1Frame = (n) => bytes([...TD], [...SEQUENCE_HEADER], [...obu(6, randomBytes(n), 0x28)]);

/** A frame's OBUs as the AV1 depacketizer writes them: sizes in two-byte leb128. */
function depacketized(frame) {
  return bytes(...parseObus(frame).map((o) => [o.header | 0x02, ...(o.ext !== null ? [o.ext] : []),
    0x80 | (o.payload.length & 0x7f), o.payload.length >> 7, ...o.payload]));
}

/** Whether `data` holds a start code (00 00 01) or 00 00 00 / 00 00 02 after `from`. */
function hasStartCodeAfter(data, from) {
  for (let i = Math.max(0, from - 2); i + 2 < data.length; i++) {
    if (i + 2 < from) continue;
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] <= 2) return true;
  }
  return false;
}

async function someKey() {
  return deriveKey(randomBytes(64), 0x12_0103n);
}

test('NAL units are found at 3- and 4-byte start codes', () => {
  const units = nalUnits(bytes(START4, SPS, START3, PPS, START4, IDR));
  assert.deepEqual(units.map((u) => u.payload - u.start), [4, 3, 4]);
  assert.deepEqual(units.map((u) => u.end - u.payload), [SPS.length, PPS.length, IDR.length]);
});

test('escaping leaves no start code and undoes exactly', () => {
  for (let round = 0; round < 300; round++) {
    // Random bytes rich in zeros and small values, where start codes hide.
    const data = Uint8Array.from(randomBytes(1 + (round % 97)), (b) => (b < 160 ? b % 4 : b));
    for (const zeros of [0, 1, 2]) {
      const escaped = escape(data, zeros);
      const withBefore = bytes(new Array(zeros).fill(0), [...escaped]);
      assert.ok(!hasStartCodeAfter(withBefore, zeros), `a start code in ${Buffer.from(withBefore).toString('hex')}`);
      assert.deepEqual(unescape(escaped, zeros), data);
    }
  }
  assert.deepEqual([...escape(bytes(0, 0, 1, 0, 0, 3))], [0, 0, 3, 1, 0, 0, 3, 3]);
  // A start code in what should be escaped is refused.
  assert.equal(unescape(bytes(5, 0, 0, 1, 7)), null);
});

test('an H.264 keyframe keeps its parameter sets and slice header clear', async () => {
  const layout = clearLayout(keyframe);
  // SPS and PPS whole, the slice's NAL header and four bytes of its slice header.
  assert.equal(layout.clearEnd, 4 + SPS.length + 4 + PPS.length + 4 + 5);
  const sealed = await sealFrame('H264', await someKey(), 300n, keyframe);
  assert.deepEqual(sealed.subarray(0, layout.clearEnd), keyframe.subarray(0, layout.clearEnd));
  // The packetizer sees the same three NAL units, the slice still an IDR, and nothing
  // after the clear part looks like a start code.
  const units = nalUnits(sealed);
  assert.deepEqual(units.map((u) => sealed[u.payload] & 0x1f), [7, 8, 5]);
  assert.ok(!hasStartCodeAfter(sealed, layout.clearEnd));
  // The plaintext after the clear part is not there.
  const secret = keyframe.subarray(layout.clearEnd);
  assert.ok(!Buffer.from(sealed).includes(Buffer.from(secret)));
});

test('sealed frames of every codec open to the frame they were', async () => {
  const key = await someKey();
  const vp8Key = bytes([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01], [...randomBytes(200)]);
  const frames = [
    ['H264', keyframe], ['H264', bytes(START4, P_SLICE)], ['H264', bytes(START4, [0x09, 0xf0], START4, P_SLICE)],
    ['VP8', vp8Key], ['VP9', randomBytes(300)], ['opus', randomBytes(80)],
    ['AV1', bytes([...SEQUENCE_HEADER], [...obu(6, randomBytes(300))])], ['AV1', obu(6, randomBytes(3))],
  ];
  let ctr = 0n;
  for (const [codec, frame] of frames) {
    const sealed = await sealFrame(codec, key, ctr++, Uint8Array.from(frame));
    const read = readFrame(codec, sealed);
    assert.ok(read, `${codec}: reads`);
    assert.equal(read.kid, key.kid);
    assert.deepEqual(await openFrame(key, read), Uint8Array.from(frame), `${codec}: opens`);
  }
});

test('an H.264 frame opens after the receiver rewrites its start codes', async () => {
  // The depacketizer writes 4-byte start codes whatever the sender's were.
  const sent = bytes(START3, SPS, START3, PPS, START3, IDR);
  const key = await someKey();
  const sealed = await sealFrame('H264', key, 9n, sent);
  const rebuilt = bytes(...nalUnits(sealed).map((u) => [...START4, ...sealed.subarray(u.payload, u.end)]));
  assert.notEqual(rebuilt.length, sealed.length);
  const opened = await openFrame(key, readFrame('H264', rebuilt));
  assert.deepEqual(opened, bytes(START4, SPS, START4, PPS, START4, IDR));
});

test('a changed clear byte of an H.264 frame does not open', async () => {
  const key = await someKey();
  const sealed = await sealFrame('H264', key, 1n, keyframe);
  for (const at of [5, 4 + SPS.length + 5, clearLayout(keyframe).clearEnd - 1]) {
    const forged = Uint8Array.from(sealed);
    forged[at] ^= 0x10;
    const read = readFrame('H264', forged);
    assert.ok(read, 'still laid out');
    await assert.rejects(openFrame(key, read), `byte ${at} is authenticated`);
  }
});

test('H.264 frames without a slice are neither sealed nor read', async () => {
  const key = await someKey();
  for (const frame of [bytes(START4, SPS, START4, PPS), bytes(SPS), bytes(START4, [0x41, 0x9a, 0x02])]) {
    assert.equal(await sealFrame('H264', key, 0n, frame), null);
    assert.equal(readFrame('H264', frame), null);
  }
});

test('a sealed AV1 frame is the same OBUs, their payloads sealed', async () => {
  const key = await someKey();
  const frame = av1Frame(500);
  const sealed = await sealFrame('AV1', key, 77n, frame);
  // The temporal delimiter goes (the packetizer drops it); the others keep their headers
  // and extension, and their payloads are not there in the clear.
  const before = parseObus(frame).slice(1);
  const after = parseObus(sealed);
  assert.deepEqual(after.map((o) => [o.header, o.ext]), before.map((o) => [o.header, o.ext]));
  assert.ok(!Buffer.from(sealed).includes(Buffer.from(before[1].payload.subarray(0, 32))));
  // The receiver's depacketizer writes the sizes its own way: it still opens, to the
  // frame without its temporal delimiter.
  const opened = await openFrame(key, readFrame('AV1', depacketized(sealed)));
  assert.deepEqual(opened, frame.subarray(TD.length));
});

test('an AV1 frame whose last OBU has no size field is sealed too', async () => {
  const key = await someKey();
  const payload = randomBytes(64);
  const frame = bytes([...SEQUENCE_HEADER], [6 << 3], [...payload]);
  const opened = await openFrame(key, readFrame('AV1', await sealFrame('AV1', key, 5n, frame)));
  assert.deepEqual(opened, bytes([...SEQUENCE_HEADER], [...obu(6, payload)]));
});

test('a changed AV1 OBU header, or bytes moved between OBUs, does not open', async () => {
  const key = await someKey();
  const sealed = await sealFrame('AV1', key, 6n, av1Frame(100));
  const obus = parseObus(sealed);
  const forged = [
    // The frame OBU's extension byte (its layer ids) changed.
    bytes([...obuBytesOf(obus[0])], [obus[1].header, 0x30, ...leb128(obus[1].payload.length), ...obus[1].payload]),
    // A byte of the second OBU's payload moved into the first.
    bytes([...obu(1, [...obus[0].payload, obus[1].payload[0]])], [...obu(6, obus[1].payload.subarray(1), 0x28)]),
  ];
  for (const f of forged) {
    const read = readFrame('AV1', f);
    assert.ok(read, 'still laid out');
    await assert.rejects(openFrame(key, read));
  }
  // Not OBUs at all: not read.
  assert.equal(readFrame('AV1', bytes([0x0a, 0x7f, 1, 2])), null);
  assert.equal(readFrame('AV1', TD), null);
});

function obuBytesOf(o) {
  return bytes([o.header], o.ext !== null ? [o.ext] : [], leb128(o.payload.length), [...o.payload]);
}
