// Publishing local media: capture, a sender per track (reused when idle), simulcast and
// SVC encodings, mutes, and the `publish` entries of an offer and their track ids.

import { CallError } from './error.js';
import { kindOf, negotiateDependencyDescriptor, sentRids } from './mlines.js';
import { negotiate } from './negotiation.js';
import { send } from './signaling.js';

/**
 * The camera's simulcast encodings, lowest quality first (the order of `layers` in
 * `publish`). Bitrates in bit/s.
 */
const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', maxBitrate: 1500000 },
];
/** The camera's simulcast rids, lowest quality first. */
export const SIMULCAST_LAYERS = SIMULCAST_ENCODINGS.map((e) => e.rid);

/**
 * The simulcast encodings Chrome really sends for a camera of this size: it sends three
 * layers only from 960x540 pixels up, two from 480x270, and drops the top ones. Sending
 * fewer layers, the top ones, keeps the full resolution: a 640x480 camera goes out as
 * 320x240 and 640x480 (`h`, `f`), not 160x120 and 320x240. Null: one stream.
 */
function simulcastEncodingsFor(track) {
  const { width, height } = track.getSettings ? track.getSettings() : {};
  const pixels = width && height ? width * height : Infinity;
  if (pixels >= 960 * 540) return SIMULCAST_ENCODINGS;
  if (pixels >= 480 * 270) return SIMULCAST_ENCODINGS.slice(1);
  return null;
}

/** Whether two layer lists (arrays of rids, or null for a single stream) are the same. */
function sameLayers(a, b) {
  return (a || []).join(' ') === (b || []).join(' ');
}

/**
 * Captures microphone and/or camera (`audio`, `video`: false, true or constraints);
 * resolves with the tracks it got (errors reported).
 */
export async function captureMedia(call, { audio, video }) {
  if (!audio && !video) return [];
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    call._reportError('media', new Error('no media devices: the page needs HTTPS or localhost'));
    return [];
  }
  const get = (constraints) => navigator.mediaDevices.getUserMedia(constraints);
  try {
    return (await get({ audio, video })).getTracks();
  } catch (err) {
    if (!(audio && video)) {
      call._reportError('media', err);
      return [];
    }
    // One device may be missing or refused: try each alone.
    const tracks = [];
    for (const c of [{ audio }, { video }]) {
      try {
        tracks.push(...(await get(c)).getTracks());
      } catch (e) {
        call._reportError('media', e);
      }
    }
    return tracks;
  }
}

/** Publishes the captured tracks that the server's grants allow; stops the others. */
export async function startMedia(call, tracks) {
  const granted = (t) => (t.kind === 'audio' ? call.grants.publish_audio : call.grants.publish_video);
  for (const t of tracks) if (!granted(t) || call._state !== 'joined') t.stop();
  if (call._state !== 'joined') return;
  for (const track of tracks.filter(granted)) {
    addLocalTrack(call, track.kind === 'audio' ? 'microphone' : 'camera', track);
  }
}

/**
 * Records a local track and queues sending it: on an idle sender of its kind (and of
 * its layers), else a new one. The camera goes out as simulcast layers unless
 * `simulcast` is off.
 */
export function addLocalTrack(call, source, track) {
  const local = { track, mid: null, track_id: null };
  call.localTracks.set(source, local);
  if (call._localMuted.get(source)) track.enabled = false;
  call._localOps.push(async () => {
    if (call.localTracks.get(source) !== local) return; // removed meanwhile
    const svc = source === 'camera' && call.svc ? call.svc : null;
    const encodings = source === 'camera' && call.simulcast && !svc ? simulcastEncodingsFor(track) : null;
    const layers = encodings && encodings.map((e) => e.rid);
    let transceiver = null;
    for (const [t, s] of call._sendTransceivers) {
      if (s == null && kindOf(t) === track.kind && sameLayers(call._sendLayers.get(t), layers)
        && (call._sendSvc.get(t) || null) === svc) {
        transceiver = t;
        break;
      }
    }
    if (transceiver) {
      await transceiver.sender.replaceTrack(track);
      transceiver.direction = 'sendonly';
    } else if (svc) {
      // One stream of spatial and temporal layers; the server forwards each receiver
      // the layers that fit it. The codec must come first for the encoder to use it.
      transceiver = call.pc.addTransceiver(track, {
        direction: 'sendonly',
        sendEncodings: [{ scalabilityMode: call.svc }],
      });
      call._sendSvc.set(transceiver, svc);
    } else if (layers) {
      transceiver = call.pc.addTransceiver(track, {
        direction: 'sendonly',
        sendEncodings: encodings.map((e) => ({ ...e })),
      });
      call._sendLayers.set(transceiver, layers);
    } else {
      transceiver = call.pc.addTransceiver(track, { direction: 'sendonly' });
    }
    // The camera's codec first, for the encoder to use it (screen shares: the browser's).
    if (source === 'camera' && call.codec) preferCodec(transceiver, call.codec);
    if (track.kind === 'video' && call.dependencyDescriptor) negotiateDependencyDescriptor(transceiver);
    // Encrypted from its first frame: the transform goes on before any negotiation.
    call.e2ee.attachSender(transceiver, track.kind);
    call._sendTransceivers.set(transceiver, source);
  });
  call._emit('local_track', { source, track });
}

/** Shares the screen (getDisplayMedia); resolves once the server has accepted it. */
export async function startScreenShare(call) {
  call._assertJoined();
  if (!call.grants.publish_screen) {
    throw new CallError('forbidden', 'the token does not grant publish_screen');
  }
  if (call.localTracks.has('screen')) return call.localTracks.get('screen').track;
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  const [track] = stream.getVideoTracks();
  if (!track) throw new CallError('media', 'getDisplayMedia returned no video track');
  if (call._state !== 'joined' || call.localTracks.has('screen')) {
    track.stop();
    call._assertJoined();
    return call.localTracks.get('screen').track;
  }
  track.contentHint = 'detail';
  // The user ended the share from the browser's own UI.
  track.addEventListener('ended', () => {
    if (call.localTracks.get('screen')?.track === track) {
      call.stopScreenShare().catch((err) => call._reportError('negotiation', err));
    }
  });
  addLocalTrack(call, 'screen', track);
  await negotiate(call);
  return track;
}

/** Stops sharing the screen. */
export async function stopScreenShare(call) {
  const local = call.localTracks.get('screen');
  if (!local) return;
  call.localTracks.delete('screen');
  call._localMuted.delete('screen');
  local.track.stop();
  call._emit('local_track_removed', { source: 'screen', track_id: local.track_id });
  if (call._state !== 'joined') return;
  removeLocalTrack(call, 'screen', local);
  await negotiate(call);
}

/** Queues idling the sender of a stopped local track: no track, `inactive`, out of `publish`. */
export function removeLocalTrack(call, source, local) {
  if (local.track_id != null) call._activeLayers.delete(local.track_id);
  call._localOps.push(async () => {
    for (const [t, s] of call._sendTransceivers) {
      if (s !== source || t.sender.track !== local.track) continue;
      call._sendTransceivers.set(t, null);
      t.direction = 'inactive';
      await t.sender.replaceTrack(null);
    }
  });
}

/** Mutes or unmutes the local track of `source`; returns whether there is one. */
export function setSourceMuted(call, source, muted) {
  call._localMuted.set(source, muted);
  const local = call.localTracks.get(source);
  if (!local) return false;
  local.track.enabled = !muted;
  // Without a track_id yet, the mute is sent once the answer assigns one.
  if (local.track_id != null && call._state === 'joined') {
    send(call, { type: 'mute', track_id: local.track_id, muted });
  }
  return true;
}

/** The `publish` entries of an offer whose SDP is `sdp`: each sending m-line's source and layers. */
export function publishEntries(call, sdp) {
  const publish = [];
  for (const [t, source] of call._sendTransceivers) {
    if (source == null || t.mid == null) continue;
    const entry = { mid: t.mid, source };
    // Only the layers the offer really sends (each must be an `a=rid` of the m-line).
    const layers = call._sendLayers.get(t);
    if (layers) {
      const offered = sentRids(sdp, t.mid);
      const sent = layers.filter((rid) => offered.has(rid));
      if (sent.length > 1) entry.layers = sent;
    }
    publish.push(entry);
  }
  return publish;
}

/** After an answer: each local track learns its mid and the track id its `published` gave. */
export function assignTrackIds(call, answer) {
  const published = new Map((answer.published || []).map((p) => [String(p.mid), p.track_id]));
  for (const [t, source] of call._sendTransceivers) {
    const local = source != null ? call.localTracks.get(source) : null;
    if (!local || t.mid == null || t.sender.track !== local.track) continue;
    local.mid = t.mid;
    const trackId = published.get(t.mid);
    if (trackId != null && trackId !== local.track_id) {
      local.track_id = trackId;
      // A mute wished before the track had an id.
      if (!local.track.enabled) send(call, { type: 'mute', track_id: trackId, muted: true });
    }
  }
}

/** Puts `codec` ('VP9', 'H264', ...) first in a video transceiver's codec preferences. */
function preferCodec(transceiver, codec) {
  const codecs = (RTCRtpSender.getCapabilities('video') || { codecs: [] }).codecs;
  const first = codecs.filter((c) => c.mimeType.toUpperCase() === `VIDEO/${codec}`);
  if (first.length === 0) throw new Error(`this browser cannot send ${codec}`);
  transceiver.setCodecPreferences([...first, ...codecs.filter((c) => !first.includes(c))]);
}
