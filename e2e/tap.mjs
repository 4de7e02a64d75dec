// Reading the server's test-only tap (`sfu --tap FILE`, docs/protocol.md): one JSON line
// per RTP packet received from a publisher. Frames are put back together from packets as
// a receiver's depacketizer would, to check what the server forwarded against what the
// senders' workers sealed (e2e/e2ee.test.mjs).

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

/** The tap file's size now: a mark in time to read the lines after. */
export function tapMark(file) {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** The tap's packets between two marks (byte offsets), parsed. */
export function tapPackets(file, from = 0, to = Infinity) {
  const text = readFileSync(file).subarray(from, to === Infinity ? undefined : to).toString('utf8');
  const out = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const p = JSON.parse(line);
      p.payload = Buffer.from(p.payload, 'base64');
      out.push(p);
    } catch {
      // A line cut by a mark: skipped.
    }
  }
  return out;
}

/** Where the VP8 payload starts after its payload descriptor (RFC 7741 section 4.2). */
function vp8Descriptor(b) {
  let at = 1;
  const x = b[0] & 0x80;
  if (x) {
    const ext = b[at++];
    if (ext & 0x80) at += (b[at] & 0x80) ? 2 : 1; // picture id
    if (ext & 0x40) at += 1; // TL0PICIDX
    if (ext & 0x30) at += 1; // TID/KEYIDX
  }
  return { start: (b[0] & 0x10) !== 0 && (b[0] & 0x07) === 0, at };
}

/**
 * The H.264 NAL units of one RTP payload (RFC 6184: a single NAL unit, a STAP-A of several,
 * or an FU-A fragment), as a depacketizer takes them: [{nal} | {fragment, start, end}].
 */
function h264Units(b) {
  const type = b[0] & 0x1f;
  if (type >= 1 && type <= 23) return [{ nal: b }];
  if (type === 24) {
    const out = [];
    for (let at = 1; at + 2 <= b.length;) {
      const len = (b[at] << 8) | b[at + 1];
      out.push({ nal: b.subarray(at + 2, at + 2 + len) });
      at += 2 + len;
    }
    return out;
  }
  if (type === 28 && b.length >= 2) {
    const header = (b[0] & 0xe0) | (b[1] & 0x1f);
    return [{ fragment: b.subarray(2), header, start: !!(b[1] & 0x80), end: !!(b[1] & 0x40) }];
  }
  return [];
}

/** An H.264 frame from its packets' payloads: each NAL unit after a 4-byte start code. */
function h264Frame(payloads) {
  const parts = [];
  let fu = null;
  for (const b of payloads) {
    for (const u of h264Units(b)) {
      if (u.nal) {
        parts.push(Buffer.from([0, 0, 0, 1]), u.nal);
      } else if (u.start) {
        fu = [Buffer.from([0, 0, 0, 1, u.header]), u.fragment];
      } else if (fu) {
        fu.push(u.fragment);
      }
      if (u.fragment && u.end && fu) {
        parts.push(...fu);
        fu = null;
      }
    }
  }
  return Buffer.concat(parts);
}

/**
 * The frames of the packets of one publisher's tracks, by stream, put back together as a
 * receiver's depacketizer would: VP8 frames from their packets (start bit to marker),
 * H.264 frames (the packets of one timestamp up to the marker, NAL units after 4-byte
 * start codes), each with no gap in sequence numbers; audio payloads as they are (one
 * frame a packet). Other video codecs are left out. [{participant_id, track_id, kind,
 * codec, ssrc, frame}]
 */
export function tapFrames(packets) {
  const frames = [];
  const open = new Map(); // ssrc -> {parts, seq, ts, p}
  for (const p of packets) {
    if (p.kind === 'audio') {
      frames.push({ ...meta(p), frame: p.payload });
      continue;
    }
    const codec = p.codec || 'VP8';
    if (codec !== 'VP8' && codec !== 'H264') continue;
    // An H.264 frame starts where the timestamp changes (a frame cut by a gap stays cut).
    const d = codec === 'VP8' ? vp8Descriptor(p.payload) : { start: open.get(p.ssrc)?.ts !== p.ts, at: 0 };
    let cur = open.get(p.ssrc);
    if (d.start) {
      cur = { parts: [], seq: p.seq - 1, ts: p.ts, p };
      open.set(p.ssrc, cur);
    }
    if (!cur || cur.cut || ((cur.seq + 1) & 0xffff) !== p.seq) {
      if (cur) open.set(p.ssrc, { cut: true, ts: p.ts });
      continue;
    }
    cur.seq = p.seq;
    cur.parts.push(p.payload.subarray(d.at));
    if (p.marker) {
      const frame = codec === 'VP8' ? Buffer.concat(cur.parts) : h264Frame(cur.parts);
      frames.push({ ...meta(cur.p), frame });
      open.delete(p.ssrc);
    }
  }
  return frames;
}

const meta = (p) => ({
  participant_id: p.participant_id, track_id: p.track_id, kind: p.kind, codec: p.codec, ssrc: p.ssrc, rid: p.rid,
});

/**
 * The primary block of an audio RED payload (RFC 2198), or null when it is not one: the
 * blocks' headers (4 bytes each, F bit set) end with a 1-byte header.
 */
export function redPrimary(b) {
  let at = 0;
  let skip = 0;
  while (at < b.length && (b[at] & 0x80)) {
    if (at + 4 > b.length) return null;
    skip += ((b[at + 2] & 0x03) << 8) | b[at + 3];
    at += 4;
  }
  if (at === 0 || at >= b.length) return null;
  const start = at + 1 + skip;
  return start <= b.length ? b.subarray(start) : null;
}

/** The hash the worker reports for a frame (e2ee-worker.js): SHA-256, first 16 bytes, hex. */
export const frameHash = (bytes) => createHash('sha256').update(bytes).digest().subarray(0, 16).toString('hex');
