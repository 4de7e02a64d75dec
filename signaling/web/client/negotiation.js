// The negotiation loop: queued changes to the peer connection applied between offers,
// one offer in flight at a time, each answered by the server (or retried, or failed).

import { CallError } from './error.js';
import { watchConnect } from './fallback.js';
import { applyLayers } from './layers.js';
import { assignTrackIds, publishEntries } from './publishing.js';
import { announceRemoteTracks } from './room.js';
import { send } from './signaling.js';
import { addSlotTransceivers } from './slots.js';

const ANSWER_TIMEOUT_MS = 20000;
const BUSY_RETRIES = 3;
const BUSY_RETRY_MS = 1000;

/** Requests a negotiation; resolves when an offer with every change so far is answered. */
export function negotiate(call) {
  call._wantNegotiation = true;
  if (!call._negotiating) {
    const running = negotiationLoop(call).finally(() => {
      // (A rejoin may have left this one behind and started another.)
      if (call._negotiating === running) call._negotiating = null;
      // A `layers` that came during the last answer's processing waited for this.
      if (call._state === 'joined') applyLayers(call);
    });
    call._negotiating = running;
  }
  return call._negotiating;
}

/** Requests a negotiation whose failure is reported as an `error` event. */
export function negotiateInBackground(call) {
  negotiate(call).catch((err) => {
    // Ending the call, or a fallback rejoin, cancels the negotiation: not an error.
    if (call._state !== 'joined' && err.code === 'closed') return;
    call._reportError(err.code || 'negotiation', err);
  });
}

async function negotiationLoop(call) {
  let lastError = null;
  // A rejoin replaces the peer connection: this loop is the old one's, and stops.
  const pc = call.pc;
  const current = () => call._state === 'joined' && call.pc === pc;
  while (call._wantNegotiation && current()) {
    call._wantNegotiation = false;
    lastError = null;
    for (let attempt = 0; ; attempt++) {
      try {
        await offerOnce(call);
        break;
      } catch (err) {
        // Busy, or over the socket's offer rate (docs/protocol.md): the offer was dropped,
        // so it is made again a moment later.
        const retry = err.code === 'server_busy' || err.code === 'rate_limited';
        if (retry && attempt < BUSY_RETRIES && current()) {
          await new Promise((r) => setTimeout(r, BUSY_RETRY_MS * (attempt + 1)));
          continue;
        }
        lastError = err;
        break;
      }
    }
  }
  if (lastError) throw lastError;
  if (!current()) throw new CallError('closed', 'the call ended during negotiation');
}

/** Applies the queued changes, sends one offer and applies its answer. */
async function offerOnce(call) {
  const pc = call.pc;
  // Local tracks get their m-lines first, so that at join the participant's own media
  // come first in the SDP. (No m-line is ever rejected, so which one is the BUNDLE tag
  // does not matter.)
  const ops = [...call._localOps.splice(0), ...call._ops.splice(0)];
  for (const op of ops) {
    try {
      await op();
    } catch (err) {
      call._reportError('client', err);
    }
  }
  if (call._state !== 'joined' || call.pc !== pc) return;
  addSlotTransceivers(call, pc);
  if (pc.getTransceivers().length === 0) return; // nothing to negotiate yet (a viewer in an empty room)

  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);

  const publish = publishEntries(call, pc.localDescription.sdp);
  const subscribe = [];
  for (const [t, trackId] of call._recvTransceivers) {
    if (trackId != null && t.mid != null) subscribe.push({ mid: t.mid, track_id: trackId });
  }

  const answered = expectAnswer(call);
  let answer;
  try {
    const message = { type: 'offer', sdp: pc.localDescription.sdp, publish, subscribe };
    if (call._slotTransceivers.length) message.slots = call._slotTransceivers.map((t) => t.mid);
    send(call, message);
    answer = await answered;
  } catch (err) {
    call._answerWaiter = null;
    if (pc.signalingState === 'have-local-offer') {
      await pc.setLocalDescription({ type: 'rollback' }).catch((e) => console.warn('call: rollback failed', e));
    }
    throw err;
  }
  await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
  call.e2ee.onDescription(answer.sdp);
  if (call.timings.firstAnswer == null) call.timings.firstAnswer = performance.now();
  watchConnect(call);

  assignTrackIds(call, answer);
  announceRemoteTracks(call);
  // The layers the server asked for, on the encodings as this answer left them.
  applyLayers(call);
}

/**
 * Waits for the reply to the offer about to be sent: resolves with the answer, rejects
 * with the server's error, or with a CallError `timeout` (its late reply then skipped).
 */
function expectAnswer(call) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      if (call._answerWaiter && call._answerWaiter.resolve === wrappedResolve) {
        call._answerWaiter = null;
        call._answersToSkip++;
        reject(new CallError('timeout', 'no answer to offer'));
      }
    }, ANSWER_TIMEOUT_MS);
    const wrappedResolve = (m) => { clearTimeout(timer); resolve(m); };
    call._answerWaiter = {
      resolve: wrappedResolve,
      reject: (e) => { clearTimeout(timer); reject(e); },
    };
  });
}

/** The server's `answer`: the reply to the offer in flight. */
export function onAnswer(call, msg) {
  if (call._answersToSkip > 0) {
    call._answersToSkip--;
    console.warn('call: dropping a late answer');
    return;
  }
  if (!call._answerWaiter) {
    call._reportError('protocol', new Error('answer without an offer in flight'));
    return;
  }
  call._answerWaiter.resolve(msg);
  call._answerWaiter = null;
}

/**
 * The server's error for an offer (an offer gets exactly one reply): fails the offer in
 * flight, or is dropped as the late reply to one given up on. Returns whether it was
 * either; if not, the caller reports it.
 */
export function onOfferError(call, err) {
  if (call._answersToSkip > 0) {
    call._answersToSkip--;
    console.warn(`call: dropping a late reply to an offer: ${err.message}`);
    return true;
  }
  if (call._answerWaiter) {
    call._answerWaiter.reject(err);
    call._answerWaiter = null;
    return true;
  }
  return false;
}

/** Fails the offer in flight, if any, with `err`. */
export function rejectOffer(call, err) {
  if (call._answerWaiter) {
    call._answerWaiter.reject(err);
    call._answerWaiter = null;
  }
}
