// Room state as the server reports it: the join's result, participants, the others'
// tracks and the per-track m-line (transceiver) that receives each.

import { watchAudio } from './audio-watch.js';
import { createPeerConnection, tcpOnly } from './fallback.js';
import { idleTransceiver, negotiateDependencyDescriptor, receiving } from './mlines.js';
import { onOwnTrackMuted, onOwnTrackUnpublished } from './moderation.js';
import { negotiateInBackground } from './negotiation.js';
import { slotsDue, switchToSlots } from './slots.js';
import { DEFAULT_VIEW_KEY, sendView } from './view.js';

/** The server's `joined`: the session starts, with a new peer connection. */
export function onJoined(call, msg) {
  call.participantId = msg.participant_id;
  call.room = msg.room;
  call.identity = msg.identity;
  call.name = msg.name;
  call.grants = {
    publish_audio: true, publish_video: true, publish_screen: true, subscribe: true,
    ...(msg.grants || {}),
  };
  for (const p of msg.participants || []) {
    call.participants.set(p.participant_id, {
      participant_id: p.participant_id, identity: p.identity, name: p.name, role: p.role || 'participant',
      e2ee: p.e2ee !== false,
    });
  }
  if (slotsDue(call)) call._slotsOn = true; // already enough others: slots from the start
  for (const t of msg.tracks || []) addRemoteTrack(call, t);
  call._iceServers = [...(msg.ice_servers || []), ...call.iceServers];
  if (call.fellBack) call._iceServers = tcpOnly(call._iceServers);
  call.timings.joined = performance.now();
  call._state = 'joined';
  createPeerConnection(call);
  call.e2ee.onJoined(msg);
  watchAudio(call);
  // A new session (the first, or a fallback rejoin) starts from the default view.
  call._viewSentKey = DEFAULT_VIEW_KEY;
  sendView(call);
  call._emit('joined', {
    participant_id: call.participantId, room: call.room, identity: call.identity, name: call.name,
    grants: call.grants, participants: [...call.participants.values()], tracks: msg.tracks || [],
  });
}

export function onParticipantJoined(call, msg) {
  const p = {
    participant_id: msg.participant_id, identity: msg.identity, name: msg.name,
    role: msg.role || 'participant', e2ee: msg.e2ee !== false,
  };
  call.participants.set(p.participant_id, p);
  call.e2ee.onParticipantJoined(msg);
  call._emit('participant_joined', p);
  if (slotsDue(call)) {
    switchToSlots(call);
    negotiateInBackground(call);
  }
}

export function onParticipantLeft(call, msg) {
  const p = call.participants.get(msg.participant_id) || { participant_id: msg.participant_id };
  call.participants.delete(msg.participant_id);
  call.e2ee.onParticipantLeft(msg.participant_id);
  // The server unpublishes a leaver's tracks before participant_left; in case one was
  // missed, drop what is left here.
  let removed = false;
  for (const t of [...call.remoteTracks.values()]) {
    if (t.participant_id === msg.participant_id) removed = removeRemoteTrack(call, t.track_id) || removed;
  }
  call._emit('participant_left', { ...p, reason: msg.reason });
  if (removed && !call._slotsOn) negotiateInBackground(call);
}

export function onTrackPublished(call, msg) {
  if (msg.participant_id === call.participantId) return;
  if (call.remoteTracks.has(msg.track_id)) return;
  addRemoteTrack(call, msg);
  call._emit('track_published', trackDetail(call.remoteTracks.get(msg.track_id)));
  // On slots the server puts it where it belongs: no new offer.
  if (call.grants.subscribe && !call._slotsOn) negotiateInBackground(call);
}

export function onTrackUnpublished(call, msg) {
  if (onOwnTrackUnpublished(call, msg.track_id)) return;
  if (removeRemoteTrack(call, msg.track_id) && !call._slotsOn) negotiateInBackground(call);
}

export function onTrackMuted(call, msg) {
  if (onOwnTrackMuted(call, msg)) return;
  const t = call.remoteTracks.get(msg.track_id);
  if (!t) return;
  t.muted = !!msg.muted;
  call._emit('track_muted', trackDetail(t));
}

/**
 * The server's `resync`: this client fell behind and missed messages about the others.
 * The room as it is now replaces what it knew, through the handlers of the messages it
 * missed: who left and who came, tracks gone and new, mutes, who speaks.
 */
export function onResync(call, msg) {
  const people = new Map((msg.participants || []).map((p) => [p.participant_id, p]));
  for (const id of [...call.participants.keys()]) {
    if (!people.has(id)) onParticipantLeft(call, { participant_id: id, reason: 'left' });
  }
  for (const p of people.values()) {
    if (!call.participants.has(p.participant_id)) onParticipantJoined(call, p);
  }
  const tracks = new Map((msg.tracks || []).map((t) => [t.track_id, t]));
  for (const id of [...call.remoteTracks.keys()]) {
    if (!tracks.has(id)) onTrackUnpublished(call, { track_id: id });
  }
  for (const t of tracks.values()) {
    const known = call.remoteTracks.get(t.track_id);
    if (!known) onTrackPublished(call, t);
    else if (known.muted !== !!t.muted) onTrackMuted(call, { track_id: t.track_id, muted: t.muted });
  }
  onActiveSpeakers(call, { speakers: msg.speakers || [] });
}

export function onActiveSpeakers(call, msg) {
  call.activeSpeakers = Array.isArray(msg.speakers) ? [...msg.speakers] : [];
  call._emit('activespeakers', { speakers: [...call.activeSpeakers] });
}

/**
 * Records a remote track and, with the subscribe grant, queues giving it a recvonly
 * transceiver: an idle one of its kind (its m-line then carries the new track), else a
 * new one.
 */
function addRemoteTrack(call, t) {
  const info = {
    track_id: t.track_id, participant_id: t.participant_id, kind: t.kind, source: t.source,
    muted: !!t.muted, layers: Array.isArray(t.layers) ? [...t.layers] : [], mid: null, track: null,
  };
  call.remoteTracks.set(t.track_id, info);
  if (!call.grants.subscribe || call._slotsOn) return;
  call._ops.push(() => {
    if (call.remoteTracks.get(t.track_id) !== info) return; // unpublished meanwhile
    if (call._slotsOn) return; // moved to slots meanwhile
    let transceiver = idleTransceiver(call._recvTransceivers, t.kind);
    if (transceiver) {
      transceiver.direction = 'recvonly';
    } else {
      transceiver = call.pc.addTransceiver(t.kind, { direction: 'recvonly' });
      call.e2ee.attachReceiver(transceiver, t.kind);
      if (t.kind === 'video' && call.dependencyDescriptor) negotiateDependencyDescriptor(transceiver);
    }
    call._recvTransceivers.set(transceiver, t.track_id);
    call.e2ee.receiving(transceiver, t.participant_id);
  });
}

/**
 * Forgets a remote track and queues idling its transceiver (`inactive`, out of
 * `subscribe`, kept for reuse). Returns whether it existed.
 */
export function removeRemoteTrack(call, trackId) {
  const info = call.remoteTracks.get(trackId);
  if (!info) return false;
  call.remoteTracks.delete(trackId);
  // Out of the view too (not resent: the server ignores entries of gone tracks).
  call._pinned.delete(trackId);
  call._quality.delete(trackId);
  call._ops.push(() => {
    const transceiver = transceiverOfTrack(call, trackId);
    if (!transceiver) return; // never got one
    transceiver.direction = 'inactive';
    call._recvTransceivers.set(transceiver, null);
  });
  call._emit('track_removed', trackDetail(info));
  return true;
}

function transceiverOfTrack(call, trackId) {
  for (const [t, id] of call._recvTransceivers) if (id === trackId) return t;
  return null;
}

/**
 * After an answer: each subscribed track whose m-line now receives gets its mid and its
 * receiver's MediaStreamTrack (the same object a previous track of a reused m-line had),
 * and a 'track' event, once per track_id.
 */
export function announceRemoteTracks(call) {
  if (call._slotsOn) return; // `slots` messages announce them
  for (const [t, trackId] of call._recvTransceivers) {
    if (trackId == null || t.mid == null) continue;
    const info = call.remoteTracks.get(trackId);
    if (!info || info.track) continue;
    // An m-line the server answered inactive (the track is gone; its
    // track_unpublished is on the way) announces nothing.
    if (!receiving(t)) continue;
    info.track = t.receiver.track;
    info.mid = t.mid;
    call._emit('track', trackDetail(info));
  }
}

/** A remote track as the `detail` of its events (a copy). */
export function trackDetail(t) {
  return {
    track_id: t.track_id, participant_id: t.participant_id, kind: t.kind, source: t.source,
    muted: t.muted, layers: [...t.layers], mid: t.mid, track: t.track,
  };
}
