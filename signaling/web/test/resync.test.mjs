// The client's handling of `resync` (client/room.js), on a call object that holds only
// what the room handlers touch: the room as the server says it is replaces what the
// client knew, through the handlers of the messages it missed.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { onResync } from '../client/room.js';

/** A call that knows participants 11 and 12, and tracks 21 (11's, unmuted) and 22 (12's). */
function call() {
  const events = [];
  const c = {
    participantId: 10,
    grants: { subscribe: false },
    slots: null,
    _slotsOn: false,
    participants: new Map([
      [11, { participant_id: 11, identity: 'bob', name: 'Bob', role: 'participant', e2ee: true }],
      [12, { participant_id: 12, identity: 'cy', name: 'Cy', role: 'participant', e2ee: true }],
    ]),
    remoteTracks: new Map(),
    _pinned: new Set(),
    _quality: new Map(),
    _ops: [],
    _recvTransceivers: new Map(),
    activeSpeakers: [],
    e2ee: {
      joined: [], left: [],
      onParticipantJoined(m) { this.joined.push(m.participant_id); },
      onParticipantLeft(id) { this.left.push(id); },
    },
    _emit: (type, detail) => events.push([type, detail]),
    events,
  };
  for (const [id, owner] of [[21, 11], [22, 12]]) {
    c.remoteTracks.set(id, {
      track_id: id, participant_id: owner, kind: 'audio', source: 'microphone', muted: false,
      layers: [], mid: null, track: null,
    });
  }
  return c;
}

test('a resync brings what was missed: departures, arrivals, tracks gone and new, mutes', () => {
  const c = call();
  onResync(c, {
    type: 'resync',
    participants: [
      { participant_id: 11, identity: 'bob', name: 'Bob', role: 'participant', e2ee: true },
      { participant_id: 13, identity: 'di', name: 'Di', role: 'participant', e2ee: true },
    ],
    tracks: [
      { track_id: 21, participant_id: 11, kind: 'audio', source: 'microphone', muted: true, layers: [] },
      { track_id: 23, participant_id: 13, kind: 'video', source: 'camera', muted: false, layers: ['q'] },
    ],
    speakers: [13],
  });
  assert.deepEqual([...c.participants.keys()].sort(), [11, 13]);
  assert.deepEqual([...c.remoteTracks.keys()].sort(), [21, 23]);
  assert.equal(c.remoteTracks.get(21).muted, true);
  assert.deepEqual(c.activeSpeakers, [13]);
  assert.deepEqual(c.e2ee.left, [12], "Cy's keys are dropped");
  assert.deepEqual(c.e2ee.joined, [13], 'Di gets our key');
  const types = c.events.map(([type, d]) => `${type}:${type.startsWith('track') ? d.track_id : d.participant_id}`);
  for (const e of ['participant_left:12', 'track_removed:22', 'participant_joined:13',
    'track_published:23', 'track_muted:21']) {
    assert.ok(types.includes(e), `${e} in ${types.join(', ')}`);
  }
});

test('a resync that says what the client knew changes nothing', () => {
  const c = call();
  onResync(c, {
    type: 'resync',
    participants: [...c.participants.values()],
    tracks: [...c.remoteTracks.values()],
    speakers: [],
  });
  assert.deepEqual(c.events.map(([type]) => type), ['activespeakers']);
  assert.deepEqual([...c.remoteTracks.keys()], [21, 22]);
});
