// The client's handling of what the server imposes on its own tracks (client/moderation.js),
// on a call object that holds only what those handlers touch: new grants stop the local
// tracks taken away, an administrator's unpublish stops one, a mute mutes one.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { onGrants, onOwnTrackMuted, onOwnTrackUnpublished } from '../client/moderation.js';

/** A local track that records being stopped. */
function track(kind) {
  return { kind, enabled: true, stopped: false, stop() { this.stopped = true; } };
}

/** A call (not joined: no renegotiation) publishing microphone 1, camera 2 and screen 3. */
function call() {
  const events = [];
  const locals = [['microphone', 1, 'audio'], ['camera', 2, 'video'], ['screen', 3, 'video']];
  return {
    _state: 'closed',
    grants: { publish_audio: true, publish_video: true, publish_screen: true, subscribe: true },
    localTracks: new Map(locals.map(([s, id, kind]) => [s, { track: track(kind), mid: String(id), track_id: id }])),
    _localMuted: new Map(),
    _localOps: [],
    _activeLayers: new Map(),
    _sendTransceivers: new Map(),
    _emit: (type, detail) => events.push([type, detail]),
    events,
  };
}

test('grants without video stop the camera and the screen, and keep the microphone', () => {
  const c = call();
  const camera = c.localTracks.get('camera').track;
  onGrants(c, { type: 'grants', grants: { publish_audio: true, publish_video: false, publish_screen: false } });
  assert.deepEqual([...c.localTracks.keys()], ['microphone']);
  assert.ok(camera.stopped);
  assert.equal(c.grants.publish_video, false);
  assert.equal(c.grants.subscribe, true, 'what the message leaves out stays');
  const removed = c.events.filter(([t]) => t === 'local_track_removed').map(([, d]) => [d.source, d.by]);
  assert.deepEqual(removed, [['camera', 'server'], ['screen', 'server']]);
  assert.equal(c.events.at(-1)[0], 'grants');
  assert.equal(c._localOps.length, 2, 'each sender is queued to go idle');
});

test('an unpublish or a mute of one of its own tracks is taken; others are not its', () => {
  const c = call();
  assert.equal(onOwnTrackUnpublished(c, 99), false, 'not a local track');
  assert.equal(onOwnTrackUnpublished(c, 3), true);
  assert.ok(!c.localTracks.has('screen'));
  assert.equal(onOwnTrackMuted(c, { track_id: 1, muted: true }), true);
  assert.equal(c.localTracks.get('microphone').track.enabled, false);
  assert.equal(c._localMuted.get('microphone'), true);
  assert.equal(onOwnTrackMuted(c, { track_id: 42, muted: true }), false);
  // A call object without local tracks (a viewer's) ignores them.
  assert.equal(onOwnTrackMuted({}, { track_id: 1, muted: true }), false);
  assert.equal(onOwnTrackUnpublished({}, 1), false);
});
