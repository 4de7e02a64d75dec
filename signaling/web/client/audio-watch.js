// A watchdog for a Chromium fault seen with end-to-end encryption (Chromium 156): an
// audio receiver with an encoded transform whose stream starts after a renegotiation,
// when no other audio came in before (the first joiner's first remote microphone in a
// call of per-track m-lines), decodes nothing. Its frames reach the transform and are
// decrypted, then lost on their way back: the stream counts packets and no samples.
// Re-attaching the transform, or toggling the m-line, does not bring it back; slot
// m-lines, which need no renegotiation, never show it. A track received on a fresh m-line
// decodes, so that is the way around it: a receiver in that state for CHECK_MS gets its
// track moved to a new m-line, and the old one is retired (inactive for good: m-lines
// are reused or idle, never rejected).

import { negotiateInBackground } from './negotiation.js';
import { trackDetail } from './room.js';

const CHECK_MS = 1000;
/** Frames a stuck receiver has decrypted without a sample before it is moved (about 1 s). */
const STUCK_FRAMES = 40;
/** Moves per track, at most. */
const MAX_MOVES = 2;

/** Starts watching the call's audio receivers (with E2EE on); stops when the call ends. */
export function watchAudio(call) {
  if (!call.e2ee.enabled || call._audioWatch) return;
  const seen = new Map(); // RTCRtpTransceiver -> {opened, trackId} at the first look
  const moves = new Map(); // track_id -> times moved
  call._audioWatch = setInterval(async () => {
    if (call._state === 'closed') {
      clearInterval(call._audioWatch);
      return;
    }
    if (call._state !== 'joined' || !call.pc || call._slotsOn) return;
    const report = await call.pc.getStats().catch(() => null);
    if (!report) return;
    const byMid = new Map();
    for (const r of report.values()) {
      if (r.type === 'inbound-rtp' && r.kind === 'audio' && r.mid != null) byMid.set(r.mid, r);
    }
    for (const [t, trackId] of call._recvTransceivers) {
      if (trackId == null || t.mid == null || t.receiver.track.kind !== 'audio') continue;
      const r = byMid.get(t.mid);
      const opened = call.e2ee.openedOn(t);
      if (!r || opened == null) continue;
      const first = seen.get(t);
      if (!first || first.trackId !== trackId) {
        seen.set(t, { opened, trackId });
        continue;
      }
      // Frames decrypted (so not a key problem), and not one sample out of them.
      const stuck = (r.totalSamplesReceived ?? 0) === 0 && opened - first.opened >= STUCK_FRAMES;
      if (!stuck || (moves.get(trackId) || 0) >= MAX_MOVES) continue;
      moves.set(trackId, (moves.get(trackId) || 0) + 1);
      seen.delete(t);
      moveTrack(call, t, trackId);
    }
  }, CHECK_MS);
}

/** Receives `trackId` on a fresh audio m-line; `t`, its stuck one, is retired. */
function moveTrack(call, t, trackId) {
  const info = call.remoteTracks.get(trackId);
  if (!info) return;
  console.warn(`call: audio of track ${trackId} decodes nothing on m-line ${t.mid}; moving it to a new one`);
  call.e2ee.audioMoved = (call.e2ee.audioMoved || 0) + 1;
  call._ops.push(() => {
    if (call._recvTransceivers.get(t) !== trackId || call.remoteTracks.get(trackId) !== info) return;
    // Announced again, with the new m-line's track, after the answer (announceRemoteTracks).
    if (info.track) call._emit('track_removed', trackDetail(info));
    info.track = null;
    info.mid = null;
    t.direction = 'inactive';
    call._recvTransceivers.delete(t);
    call._retiredTransceivers.add(t);
    const fresh = call.pc.addTransceiver('audio', { direction: 'recvonly' });
    call.e2ee.attachReceiver(fresh, 'audio');
    call._recvTransceivers.set(fresh, trackId);
    call.e2ee.receiving(fresh, info.participant_id);
  });
  negotiateInBackground(call);
}
