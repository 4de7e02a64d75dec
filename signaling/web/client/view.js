// The view (docs/protocol.md `view`): what this client shows, checked, and sent to the
// server only when it means something else than the last one sent.

import { CallError } from './error.js';
import { send } from './signaling.js';

/** The `quality` values of a `view` (docs/protocol.md). */
const QUALITIES = ['low', 'medium', 'high'];
/** Most entries in each list of a `view`; the server refuses more. */
const MAX_VIEW_ENTRIES = 100;

/**
 * A view as a comparable string: pinned ids and quality caps, sorted, without `high`
 * (the default: no cap). Two views with one key mean the same to the server.
 */
function viewKey(pinned, quality) {
  const p = [...pinned].sort((a, b) => a - b);
  const q = [...quality].filter(([, v]) => v !== 'high').sort(([a], [b]) => a - b);
  return JSON.stringify([p, q]);
}
/** The key of the default view: nothing pinned, no caps. */
export const DEFAULT_VIEW_KEY = viewKey([], []);

/**
 * The arguments of `setView` as {pinned: Set of track ids, quality: Map from track id to
 * quality}. Throws a CallError `bad_request` for an unknown quality or too long a list.
 */
export function parseView({ pinned, quality }) {
  const entries = quality instanceof Map ? [...quality]
    : Array.isArray(quality) ? quality.map((q) => [q.track_id, q.quality])
      : Object.entries(quality);
  const caps = new Map();
  for (const [id, q] of entries) {
    if (!QUALITIES.includes(q)) throw new CallError('bad_request', `quality ${JSON.stringify(q)} is none of ${QUALITIES.join(', ')}`);
    caps.set(Number(id), q);
  }
  const pins = new Set([...pinned].map(Number));
  if (pins.size > MAX_VIEW_ENTRIES || caps.size > MAX_VIEW_ENTRIES) {
    throw new CallError('bad_request', `a view lists at most ${MAX_VIEW_ENTRIES} tracks in each list`);
  }
  return { pinned: pins, quality: caps };
}

/**
 * Sends the view when joined and when it means something else than the last one sent
 * (at the start of a session: the default, nothing pinned and no caps).
 */
export function sendView(call) {
  if (call._state !== 'joined' || !call.ws || call.ws.readyState !== WebSocket.OPEN) return;
  const key = viewKey(call._pinned, call._quality);
  if (key === call._viewSentKey) return;
  send(call, { type: 'view', ...call.view });
  call._viewSentKey = key;
}
