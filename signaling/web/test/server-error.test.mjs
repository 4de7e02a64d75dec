// The client's handling of the server's `error` messages (client/signaling.js): which
// reach the application as an `error` event, and which are part of a call's normal races.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { onServerError } from '../client/signaling.js';

function call() {
  const reported = [];
  return { _joinWaiter: null, _reportError: (code, err) => reported.push([code, err.request]), reported };
}

test('a key message refused because its recipient left is not an error of the call', () => {
  const c = call();
  onServerError(c, { type: 'error', code: 'bad_request', message: 'bad_request: no such participant in this room', request: 'e2ee' });
  assert.deepEqual(c.reported, []);
});

test('other refusals still reach the application', () => {
  const c = call();
  onServerError(c, { type: 'error', code: 'rate_limited', message: 'too many e2ee messages', request: 'e2ee' });
  onServerError(c, { type: 'error', code: 'bad_request', message: 'bad_request: unknown track', request: 'view' });
  onServerError(c, { type: 'error', code: 'bad_request', message: 'unreadable' });
  assert.deepEqual(c.reported, [['rate_limited', 'e2ee'], ['bad_request', 'view'], ['bad_request', null]]);
});
