// The peer connection and the rejoins that replace it: the transport fallback (a call
// whose media does not connect rejoins once with `transport: "relay"`, through TURN over
// TCP or TLS only), the rejoin after the server shut down with the call going on
// (`left`, reason `server_shutdown`: it drained for a restart or an upgrade), and the
// rejoin after the server was lost (its socket closed without a word, or the media
// connection, after it had worked, failed or stayed disconnected for MEDIA_LOSS_MS: the
// process or the machine died or froze). Each joins
// with the same token where the URL leads now (the restarted server, another behind a
// load balancer, or the cluster node the room is placed on next), retried while there
// is no server to take it.

import { CallError } from './error.js';
import { negotiate, rejectOffer } from './negotiation.js';
import { addLocalTrack } from './publishing.js';
import { onJoined, removeRemoteTrack } from './room.js';
import { connectAndJoin } from './signaling.js';
import { slotsFromStart } from './slots.js';

const CONNECT_TIMEOUT_MS = 5000;

/** Rejoins after a shutdown: tries, and the wait before the first (doubled each time). */
const SHUTDOWN_REJOIN = { tries: 6, firstWaitMs: 500, factor: 2 };

/**
 * Rejoins after a loss: once a second. A cluster frees a dead node's rooms within 5 s of
 * its death, and a join meanwhile is sent to the dead node (refused at once): a doubling
 * wait would come back seconds later than it needs to.
 */
const LOSS_REJOIN = { tries: 20, firstWaitMs: 1000, factor: 1 };

/** Refusals another try would get again: the call ends at the first. */
const FINAL_REFUSALS = ['unauthorized', 'forbidden', 'e2ee_required'];

/** How long a media connection may stay `disconnected` before the call joins again. */
const MEDIA_LOSS_MS = 3000;

/** How long a rejoin waits for the old session's negotiation to end. */
const OLD_NEGOTIATION_WAIT_MS = 1000;

/** Whether a STUN/TURN URL is reached over TCP or TLS (RFC 7064, RFC 7065). */
function isTcpUrl(url) {
  const u = String(url).toLowerCase();
  const transport = (u.split('?')[1] || '').split('&').find((kv) => kv.startsWith('transport='));
  const value = transport ? transport.slice('transport='.length) : null;
  if (u.startsWith('turns:') || u.startsWith('stuns:')) return value == null || value === 'tcp';
  return (u.startsWith('turn:') || u.startsWith('stun:')) && value === 'tcp';
}

/** The ICE servers with only their TCP and TLS URLs (servers left without any dropped). */
export function tcpOnly(servers) {
  return servers
    .map((s) => ({ ...s, urls: [].concat(s.urls || []).filter(isTcpUrl) }))
    .filter((s) => s.urls.length > 0);
}

/** Creates the session's `call.pc`, watched for a media connection that fails. */
export function createPeerConnection(call) {
  const pc = new RTCPeerConnection({
    iceServers: call._iceServers,
    iceTransportPolicy: call.iceTransportPolicy,
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
    ...call.e2ee.peerConnectionConfig(),
  });
  call.pc = pc;
  call._everConnected = false;
  // No 'track' listener: a reused m-line keeps its receiver's MediaStreamTrack, and the
  // event may not fire again. Remote tracks are announced after each answer instead
  // (announceRemoteTracks).
  pc.addEventListener('connectionstatechange', () => {
    if (call.pc !== pc) return; // replaced by a fallback rejoin
    if (pc.connectionState === 'connected') {
      call._everConnected = true;
      clearTimeout(call._connectTimer);
      clearTimeout(call._lossTimer);
      if (call.timings.connected == null) call.timings.connected = performance.now();
    }
    call._emit('connection_state', { state: pc.connectionState });
    // Media stopped (the server's machine died or froze, its sockets still open): join
    // again if it does not come back soon. ICE says `disconnected` within seconds and
    // `failed` only tens of seconds later.
    if (pc.connectionState === 'disconnected' && call._everConnected) {
      clearTimeout(call._lossTimer);
      call._lossTimer = setTimeout(() => {
        if (call.pc === pc && pc.connectionState !== 'connected' && call.rejoinOnShutdown
          && call._state === 'joined' && !call._rejoining) {
          console.warn(`call: no media for ${MEDIA_LOSS_MS / 1000} s more: joining again`);
          rejoinAfterLoss(call);
        }
      }, MEDIA_LOSS_MS);
    }
    if (pc.connectionState === 'failed') {
      if (!call._everConnected && canFallBack(call)) {
        fallBack(call, 'the media connection failed');
      } else if (call._everConnected && call.rejoinOnShutdown && call._state === 'joined'
        && !call._rejoining) {
        console.warn('call: the media connection failed: joining again');
        rejoinAfterLoss(call);
      } else {
        call._reportError('ice_failed', new Error('media connection failed'));
      }
    }
  });
}

/** Arms the fallback timer once ICE has something to connect (the first answer). */
export function watchConnect(call) {
  if (call._connectTimer != null || call._everConnected || !canFallBack(call)) return;
  const pc = call.pc;
  call._connectTimer = setTimeout(() => {
    if (call.pc === pc && !call._everConnected && canFallBack(call)) {
      fallBack(call, `no media connection ${CONNECT_TIMEOUT_MS / 1000} s after the answer`);
    }
  }, CONNECT_TIMEOUT_MS);
}

function canFallBack(call) {
  return call.fallback && !call.fellBack && call.transport === 'auto' && call._state === 'joined'
    && !call._rejoining;
}

/**
 * Rejoins with `transport: "relay"` through TURN over TCP/TLS, keeping the local tracks.
 * Remote tracks and participants of the old session are removed (with their events) and
 * come back with the new one.
 */
async function fallBack(call, why) {
  call.fellBack = true;
  call.transport = 'relay';
  call.iceTransportPolicy = 'relay';
  console.warn(`call: ${why}: rejoining through TURN over TCP/TLS`);
  call._emit('transport_fallback', { reason: why });
  try {
    await rejoin(call);
  } catch (err) {
    call._reportError(err.code || 'fallback', err);
    call._teardown('error');
  }
}

/**
 * The server shut down with this call going on (`left`, reason `server_shutdown`): joins
 * again with the same token, keeping the local tracks, after a short wait (everyone was
 * told at once: the waits are spread) and again with twice the wait while it fails (no
 * server yet, or one still draining). Emits `rejoining`, then `joined` as a first join
 * does; after the last try, or a refusal no try would change (an expired token), the call
 * ends (`closed`, reason `server_shutdown`). One at a time: another shutdown meanwhile
 * (or a fallback) waits for this one.
 */
export function rejoinAfterShutdown(call) {
  return rejoinOnce(call, 'server_shutdown', SHUTDOWN_REJOIN);
}

/**
 * The server was lost with this call going on (see the top of this file): joins again as
 * after a shutdown, once a second. Emits `rejoining` with reason `connection_lost`; when
 * no try works, the call ends (`closed`, reason `connection_lost`).
 */
export function rejoinAfterLoss(call) {
  return rejoinOnce(call, 'connection_lost', LOSS_REJOIN);
}

async function rejoinOnce(call, reason, schedule) {
  if (call._rejoining) return;
  call._rejoining = true;
  try {
    await rejoinWithBackoff(call, reason, schedule);
  } finally {
    call._rejoining = false;
  }
}

async function rejoinWithBackoff(call, reason, { tries, firstWaitMs, factor }) {
  console.warn(`call: ${reason}: joining again`);
  // The server closes the socket next (or has), and the media is gone: the old session's.
  const [oldWs, oldPc] = [call.ws, call.pc];
  [call.ws, call.pc] = [null, null];
  if (oldWs) oldWs.close(1000, reason);
  if (oldPc) oldPc.close();
  call._state = 'joining';
  call._emit('rejoining', { reason });
  let wait = firstWaitMs;
  for (let attempt = 1; ; attempt++) {
    await new Promise((r) => setTimeout(r, wait * (0.5 + Math.random())));
    if (call._state === 'closed') return; // left meanwhile
    try {
      await rejoin(call);
      return;
    } catch (err) {
      if (call._state === 'closed') return;
      console.warn(`call: rejoin ${attempt} of ${tries} failed: ${err.message}`);
      if (attempt >= tries || FINAL_REFUSALS.includes(err.code)) {
        call._leftReason = reason;
        call._reportError(err.code || 'rejoin', err);
        call._teardown(reason);
        return;
      }
      wait *= factor;
    }
  }
}

/**
 * Leaves the session (if its socket is still open) and joins a new one on `call.url`,
 * keeping the local tracks; throws if the new one cannot be joined.
 */
async function rejoin(call) {
  const oldWs = call.ws;
  const oldPc = call.pc;
  call.ws = null;
  call.pc = null;
  if (oldWs && oldWs.readyState === WebSocket.OPEN) {
    try {
      oldWs.send(JSON.stringify({ type: 'leave' }));
    } catch { /* closing anyway */ }
  }
  if (oldWs) oldWs.close(1000, 'transport fallback');
  if (oldPc) oldPc.close();
  // The others' tracks keep their ids across our rejoin: so does the view, sent again
  // once the new session has joined.
  const [pinned, quality] = [new Set(call._pinned), new Map(call._quality)];
  for (const trackId of [...call.remoteTracks.keys()]) removeRemoteTrack(call, trackId);
  [call._pinned, call._quality] = [pinned, quality];
  for (const p of [...call.participants.values()]) {
    call.participants.delete(p.participant_id);
    call._emit('participant_left', { ...p, reason: 'rejoin' });
  }
  rejectOffer(call, new CallError('closed', 'rejoining'));
  call._answersToSkip = 0;
  call._ops = [];
  call._localOps = [];
  call._sendTransceivers = new Map();
  call._recvTransceivers = new Map();
  call._retiredTransceivers = new Set();
  call._slotTransceivers = [];
  call._slotTrack = new Map();
  call._slotsOn = slotsFromStart(call);
  call._sendLayers = new Map();
  call._sendSvc = new Map();
  call._activeLayers = new Map(); // our tracks get new ids (an application under way finds nothing to do)
  if (call.activeSpeakers.length) {
    call.activeSpeakers = [];
    call._emit('activespeakers', { speakers: [] });
  }
  const locals = [...call.localTracks.entries()];
  call.localTracks = new Map();
  call._connectTimer = null;
  call._state = 'joining';
  try {
    // The old session's negotiation ends on the rejected answer: let it finish first. One
    // waiting on the closed peer connection never ends (a closed connection settles no
    // promise): it is left behind (it stops at its next step, see negotiation.js).
    if (call._negotiating) {
      const late = new Promise((r) => setTimeout(r, OLD_NEGOTIATION_WAIT_MS));
      await Promise.race([call._negotiating.catch(() => {}), late]);
      call._negotiating = null;
    }
    onJoined(call, await connectAndJoin(call));
  } catch (err) {
    // The server closes this try's socket next (a refused join): not the call's any more.
    const ws = call.ws;
    call.ws = null;
    if (ws) ws.close(1000, 'join refused');
    // Kept for the next try, or stopped if the call ended meanwhile (a leave()).
    if (call._state === 'closed') {
      for (const [, local] of locals) local.track.stop();
    } else {
      call.localTracks = new Map(locals);
    }
    throw err;
  }
  for (const [source, local] of locals) addLocalTrack(call, source, local.track);
  await negotiate(call);
}
