// The server's `layers` for our simulcast tracks, applied to the senders' encodings
// (`RTCRtpEncodingParameters.active`, no renegotiation), one application at a time.

/**
 * The layers of one of our simulcast tracks that somebody receives: remembered, and
 * applied at once unless an offer is in flight (its answer may change the sender's
 * encodings; the negotiation applies them after each answer and when it ends).
 */
export function onLayers(call, msg) {
  const active = Array.isArray(msg.active) ? msg.active.map(String) : [];
  call._activeLayers.set(msg.track_id, active);
  call._emit('layers', { track_id: msg.track_id, active: [...active] });
  if (!call._negotiating) applyLayers(call);
}

/**
 * Turns each simulcast encoding of our senders on or off as the track's last `layers`
 * says (setParameters: no renegotiation), once the previous application has finished.
 * Calls while one waits its turn coalesce: it reads the latest `layers` when it runs.
 */
export function applyLayers(call) {
  if (call._layersQueued) return call._layersApplying;
  call._layersQueued = true;
  call._layersApplying = call._layersApplying.then(() => {
    call._layersQueued = false;
    return applyLayersNow(call);
  }).catch((err) => call._reportError('layers', err)); // the chain must go on
  return call._layersApplying;
}

/**
 * One application of the `layers`: reads and writes each sender's parameters in one go,
 * so nothing changes them in between; only touches what differs. Resolves when every
 * setParameters has (never rejects: failures are reported).
 */
function applyLayersNow(call) {
  const pending = [];
  for (const [t, source] of call._sendTransceivers) {
    const local = source != null ? call.localTracks.get(source) : null;
    const layers = call._sendLayers.get(t);
    if (!local || !layers || local.track_id == null || t.sender.track !== local.track) continue;
    const active = call._activeLayers.get(local.track_id);
    if (!active) continue;
    let params;
    try {
      params = t.sender.getParameters();
    } catch (err) {
      call._reportError('layers', err);
      continue;
    }
    let changed = false;
    for (const e of params.encodings || []) {
      if (e.rid == null || !layers.includes(e.rid)) continue;
      const on = active.includes(e.rid);
      if ((e.active !== false) !== on) {
        e.active = on;
        changed = true;
      }
    }
    if (!changed) continue;
    pending.push(t.sender.setParameters(params).catch((err) => {
      // A sender idled or replaced meanwhile: the next apply covers its new state.
      if (call._state === 'joined' && call._sendTransceivers.get(t) === source) call._reportError('layers', err);
    }));
  }
  return Promise.all(pending);
}
