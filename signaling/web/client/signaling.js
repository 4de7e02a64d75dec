// The signaling transport: the WebSocket, its messages in and out, the join and leave
// handshakes, and what a join token grants.

import { CallError } from './error.js';
import { rejoinAfterLoss } from './fallback.js';
import { onOfferError, rejectOffer } from './negotiation.js';

const JOIN_TIMEOUT_MS = 15000;
const LEAVE_TIMEOUT_MS = 3000;

/** How long a WebSocket may take to open. */
const OPEN_TIMEOUT_MS = 5000;

/** Redirects a join follows (a cluster node names the one that hosts the room). */
const MAX_REDIRECTS = 3;

/** The server's WebSocket on the page's own host. */
export function defaultUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/ws`;
}

/**
 * The grants a join token claims (docs/protocol.md: each defaults to true). Read, not
 * verified: only to avoid capturing devices the server would refuse anyway.
 */
export function tokenGrants(token) {
  const all = { publish_audio: true, publish_video: true, publish_screen: true, subscribe: true };
  try {
    const b64 = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    const grants = { ...all, ...(claims.grants || {}) };
    // A viewer (a broadcast's audience) publishes nothing, whatever else its token says.
    if (grants.role === 'viewer') Object.assign(grants, { publish_audio: false, publish_video: false, publish_screen: false });
    return grants;
  } catch {
    return all;
  }
}

/**
 * Opens a socket on `call.url` and joins, following the server's redirects: a node of a
 * cluster answers a join for a room another node hosts with `redirect`, naming that
 * node's socket, where the same join goes next. Resolves with `joined`; rejects with the
 * refusal, or `redirect` after more than MAX_REDIRECTS.
 */
export async function connectAndJoin(call) {
  let url = call.url;
  for (let redirects = 0; ; redirects++) {
    await openSocket(call, url);
    const reply = await sendJoin(call);
    if (reply.type !== 'redirect') return reply;
    if (redirects >= MAX_REDIRECTS) {
      throw new CallError('redirect', `more than ${MAX_REDIRECTS} redirects (last to ${reply.url})`);
    }
    if (!/^wss?:\/\//.test(String(reply.url))) {
      throw new CallError('redirect', `redirected to ${reply.url}, not a WebSocket URL`);
    }
    url = reply.url;
    call._emit('redirected', { node: reply.node, url });
  }
}

/** Opens `call.ws` to `url`; resolves once it is open. */
export function openSocket(call, url = call.url) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      reject(new CallError('network', `cannot open ${url}: ${err.message}`));
      return;
    }
    call.ws = ws;
    let opened = false;
    // A server whose process froze still completes TCP handshakes (its kernel does), and
    // never the WebSocket's: given up on, so that a rejoin tries again elsewhere.
    const timer = setTimeout(() => {
      if (opened) return;
      reject(new CallError('network', `WebSocket to ${url} did not open in ${OPEN_TIMEOUT_MS / 1000} s`));
      ws.close();
    }, OPEN_TIMEOUT_MS);
    ws.addEventListener('open', () => {
      clearTimeout(timer);
      opened = true;
      call.timings.wsOpen = performance.now();
      resolve();
    });
    // A socket replaced by a fallback rejoin is ignored from then on.
    ws.addEventListener('message', (e) => {
      if (call.ws === ws) onMessage(call, e.data);
    });
    ws.addEventListener('close', (e) => {
      clearTimeout(timer);
      if (!opened) {
        // Nothing was joined on it: whoever opened it decides (a join fails, a rejoin
        // after a shutdown tries again).
        reject(new CallError('network', `WebSocket to ${url} failed (code ${e.code})`));
        return;
      }
      if (call.ws === ws) onSocketClose(call, e);
    });
    // 'error' is always followed by 'close', which does the work.
    ws.addEventListener('error', () => console.warn('call: WebSocket error', url));
  });
}

/** Sends one message; throws a CallError `closed` when the socket is not open. */
export function send(call, msg) {
  if (!call.ws || call.ws.readyState !== WebSocket.OPEN) {
    throw new CallError('closed', `cannot send ${msg.type}: socket not open`);
  }
  call.ws.send(JSON.stringify(msg));
}

/** Sends `join`; resolves with the server's `joined`, rejects with its error. */
export function sendJoin(call) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      call._joinWaiter = null;
      reject(new CallError('timeout', 'no reply to join'));
    }, JOIN_TIMEOUT_MS);
    call._joinWaiter = {
      resolve: (m) => { clearTimeout(timer); resolve(m); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    };
    send(call, {
      type: 'join', token: call.token, transport: call.transport, e2ee: call.e2ee.enabled,
      ...(call.audience ? { audience: true } : {}),
    });
  });
}

/**
 * The server's `joined` or `redirect`: the reply to the join in flight, if any. The
 * server closes a redirected socket next: it is the call's no longer from here on.
 */
export function onJoinReply(call, msg) {
  if (msg.type === 'redirect' && call.ws) {
    const ws = call.ws;
    call.ws = null;
    ws.close(1000, 'redirected');
  }
  if (call._joinWaiter) {
    call._joinWaiter.resolve(msg);
    call._joinWaiter = null;
  }
}

/** Sends `leave` on the open socket; resolves when the server closes it, or after a while. */
export async function sendLeave(call) {
  const closed = new Promise((resolve) => {
    call._leaveWaiter = resolve;
    setTimeout(resolve, LEAVE_TIMEOUT_MS);
  });
  send(call, { type: 'leave' });
  await closed;
}

function onMessage(call, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (err) {
    call._reportError('protocol', new Error(`server sent invalid JSON: ${err.message}`));
    return;
  }
  try {
    call._dispatch(msg);
  } catch (err) {
    call._reportError('client', err);
  }
}

/** The server's `error`: fails the join or the offer it answers, else is reported. */
export function onServerError(call, msg) {
  const err = new CallError(msg.code || 'unknown', msg.message || '');
  err.request = msg.request ?? null;
  // Before `joined` only the join is outstanding; an error without `request` (e.g. for a
  // frame the server could not read) then also ends the join.
  if (call._joinWaiter && (msg.request === 'join' || msg.request == null)) {
    call._joinWaiter.reject(err);
    call._joinWaiter = null;
    return;
  }
  if (msg.request === 'offer' && onOfferError(call, err)) return;
  // A key message to a participant who left meanwhile (the only e2ee message the server
  // refuses so): its `participant_left` is on the way, nothing for the application to do.
  if (msg.request === 'e2ee' && msg.code === 'bad_request') {
    console.debug(`call: e2ee message refused: ${err.message}`);
    return;
  }
  call._reportError(err.code, err);
}

function onSocketClose(call, e) {
  if (call._leaveWaiter) {
    call._leaveWaiter();
    call._leaveWaiter = null;
  }
  const err = new CallError('closed', `socket closed (code ${e.code}${e.reason ? `, ${e.reason}` : ''})`);
  if (call._joinWaiter) {
    call._joinWaiter.reject(err);
    call._joinWaiter = null;
  }
  rejectOffer(call, err);
  if (call._state === 'joined' && !call._leftReason && !call._leaving) {
    // The server went away without a word (its process or its machine died): join
    // again, where the URL leads now.
    if (call.rejoinOnShutdown && !call._rejoining) {
      console.warn(`call: ${err.message}: joining again`);
      rejoinAfterLoss(call);
      return;
    }
    call._reportError('closed', err);
  }
  call._teardown(call._leftReason || 'closed', e);
}
