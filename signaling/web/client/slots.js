// Slots for large rooms: a fixed set of receiving m-lines the server fills (`offer.slots`,
// `slots` messages), and the one-way move to them once enough others are in the call.

import { idleTransceiver, negotiateDependencyDescriptor } from './mlines.js';
import { trackDetail } from './room.js';

/** The constructor's `slots` option as {audio, video, from}, or null: one m-line per track. */
export function slotsOption(slots) {
  return slots && (slots.audio > 0 || slots.video > 0)
    ? { audio: Math.max(0, slots.audio | 0), video: Math.max(0, slots.video | 0), from: Math.max(0, slots.from | 0) }
    : null;
}

/** Whether a session of the call receives on slots from its start. */
export function slotsFromStart(call) {
  return !!call.slots && call.slots.from === 0;
}

/** Whether the call should move to slots now: enough others (viewers aside) are in it. */
export function slotsDue(call) {
  if (!call.slots || call._slotsOn || !call.grants || !call.grants.subscribe) return false;
  const others = [...call.participants.values()].filter((p) => p.role !== 'viewer').length;
  return others >= call.slots.from;
}

/**
 * Moves to slots for good: the tracks shown so far get `track_removed` (each comes back
 * with `track` when the server puts it on a slot), and the per-track m-lines go idle,
 * to become slots at the next offer.
 */
export function switchToSlots(call) {
  call._slotsOn = true;
  for (const info of call.remoteTracks.values()) {
    if (!info.track) continue;
    call._emit('track_removed', trackDetail(info));
    info.track = null;
    info.mid = null;
  }
  // Forgotten at once, so that the answer to an offer already in flight announces
  // none of them again, and no later offer lists them; idled at the next offer.
  for (const t of call._recvTransceivers.keys()) call._recvTransceivers.set(t, null);
  call._ops.push(() => {
    for (const t of call._recvTransceivers.keys()) {
      if (!call._slotTransceivers.includes(t)) t.direction = 'inactive';
    }
  });
}

/**
 * Before an offer on slots: the slot m-lines of `pc`, once, as many of each kind as the
 * `slots` option says.
 */
export function addSlotTransceivers(call, pc) {
  if (!call._slotsOn || !call.grants.subscribe || call._slotTransceivers.length > 0) return;
  for (const [kind, n] of [['audio', call.slots.audio], ['video', call.slots.video]]) {
    for (let k = 0; k < n; k++) {
      // An idle per-track m-line (after a move to slots) becomes a slot: m-lines are
      // reused, never rejected.
      let t = idleTransceiver(call._recvTransceivers, kind);
      if (t) {
        call._recvTransceivers.delete(t);
        t.direction = 'recvonly';
      } else {
        t = pc.addTransceiver(kind, { direction: 'recvonly' });
        call.e2ee.attachReceiver(t, kind);
        if (kind === 'video' && call.dependencyDescriptor) negotiateDependencyDescriptor(t);
      }
      call._slotTransceivers.push(t);
    }
  }
}

/**
 * The tracks on our slot m-lines now: a track that left a slot gets `track_removed`
 * (it stays known), one that came gets `track` with the slot's MediaStreamTrack.
 */
export function onSlots(call, msg) {
  const byMid = new Map(call._slotTransceivers.map((t) => [t.mid, t]));
  const entries = Array.isArray(msg.slots) ? msg.slots : [];
  const gone = [];
  const came = [];
  for (const { mid, track_id: trackId } of entries) {
    const before = call._slotTrack.get(mid) ?? null;
    const now = trackId ?? null;
    if (before === now) continue;
    if (now == null) call._slotTrack.delete(mid);
    else call._slotTrack.set(mid, now);
    if (before != null) gone.push(before);
    if (now != null) came.push([now, mid]);
  }
  // Departures first: a MediaStreamTrack that moves on is detached before it is shown
  // again.
  for (const trackId of gone) {
    const info = call.remoteTracks.get(trackId);
    if (!info || !info.track || came.some(([t]) => t === trackId)) continue;
    call._emit('track_removed', trackDetail(info));
    info.track = null;
    info.mid = null;
  }
  for (const [trackId, mid] of came) {
    const info = call.remoteTracks.get(trackId);
    const transceiver = byMid.get(mid);
    if (!info || !transceiver) continue;
    call.e2ee.receiving(transceiver, info.participant_id);
    info.track = transceiver.receiver.track;
    info.mid = mid;
    call._emit('track', trackDetail(info));
  }
}
