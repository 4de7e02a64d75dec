// What the server imposes on this client's own media: its grants narrowed during the
// call (its group's calling policy changed), and an administrator's mute or unpublish
// of one of its tracks (the admin API). The server has acted already; the client falls
// in line so that its next offer does not ask for what was taken away.

import { negotiateInBackground } from './negotiation.js';
import { removeLocalTrack } from './publishing.js';

/** Whether `grants` let this client publish from `source`. */
function granted(grants, source) {
  if (source === 'microphone') return grants.publish_audio;
  if (source === 'camera') return grants.publish_video;
  return grants.publish_screen;
}

/** Stops a local track the server took away, and idles its sender. */
function dropLocal(call, source, local) {
  call.localTracks.delete(source);
  call._localMuted.delete(source);
  local.track.stop();
  removeLocalTrack(call, source, local);
  call._emit('local_track_removed', { source, track_id: local.track_id, by: 'server' });
}

/**
 * The server's `grants`: what this client may do now. Local tracks it may no longer
 * publish (the server unpublished them) are stopped and their senders idled.
 */
export function onGrants(call, msg) {
  call.grants = { ...call.grants, ...(msg.grants || {}) };
  let dropped = false;
  for (const [source, local] of [...call.localTracks]) {
    if (granted(call.grants, source)) continue;
    dropLocal(call, source, local);
    dropped = true;
  }
  call._emit('grants', { grants: call.grants });
  if (dropped && call._state === 'joined') negotiateInBackground(call);
}

/** `track_unpublished` of one of this client's own tracks; whether it was one. */
export function onOwnTrackUnpublished(call, trackId) {
  for (const [source, local] of [...(call.localTracks || [])]) {
    if (local.track_id !== trackId) continue;
    dropLocal(call, source, local);
    if (call._state === 'joined') negotiateInBackground(call);
    return true;
  }
  return false;
}

/** `track_muted` of one of this client's own tracks; whether it was one. */
export function onOwnTrackMuted(call, msg) {
  for (const [source, local] of call.localTracks || []) {
    if (local.track_id !== msg.track_id) continue;
    const muted = !!msg.muted;
    call._localMuted.set(source, muted);
    local.track.enabled = !muted;
    call._emit('local_track_muted', { source, track_id: msg.track_id, muted, by: 'server' });
    return true;
  }
  return false;
}
