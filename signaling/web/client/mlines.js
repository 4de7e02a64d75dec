// M-lines and their transceivers: kind, negotiated direction, the rids an SDP sends, the
// dependency descriptor, and finding an idle transceiver to reuse.

/** `audio` or `video`: every transceiver has a receiver track of its kind, even sendonly. */
export function kindOf(transceiver) {
  return transceiver.receiver.track.kind;
}

/** Whether the negotiated direction lets media in (the answer said sendonly/sendrecv). */
export function receiving(transceiver) {
  return transceiver.currentDirection === 'recvonly' || transceiver.currentDirection === 'sendrecv';
}

/** The RTP stream ids an SDP sends on the m-line of `mid` (its `a=rid:<id> send` lines). */
export function sentRids(sdp, mid) {
  const sections = String(sdp).split(/\r?\n(?=m=)/);
  const midLine = new RegExp(`^a=mid:${String(mid).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`, 'm');
  const section = sections.find((s) => s.startsWith('m=') && midLine.test(s));
  if (!section) return new Set();
  const rids = [...section.matchAll(/^a=rid:([^\s]+) send\b/gm)].map((m) => m[1]);
  return new Set(rids);
}

/** The dependency descriptor RTP header extension (AV1 RTP spec, appendix A). */
const DEPENDENCY_DESCRIPTOR = 'https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension';

/**
 * Negotiates the dependency descriptor on a video transceiver (Chrome leaves it off unless
 * asked, but for SVC senders): with it the server finds layers and keyframes without
 * reading payloads, and a receiver of an SVC stream (AV1 above all) knows which frames
 * it can decode when the server leaves layers out. Browsers without the API go without.
 * Off unless `dependencyDescriptor` is set: with it on every transceiver, Chromium
 * receivers of VP8 simulcast took far longer to reach the top layer in our tests.
 */
export function negotiateDependencyDescriptor(transceiver) {
  if (typeof transceiver.getHeaderExtensionsToNegotiate !== 'function') return;
  try {
    const exts = transceiver.getHeaderExtensionsToNegotiate();
    const dd = exts.find((e) => e.uri === DEPENDENCY_DESCRIPTOR);
    if (!dd || dd.direction !== 'stopped') return;
    dd.direction = 'sendrecv';
    transceiver.setHeaderExtensionsToNegotiate(exts);
  } catch (err) {
    // An older implementation of the API: the stream works without it.
  }
}

/** An idle transceiver of `kind` in `pool` (a call's _sendTransceivers or _recvTransceivers). */
export function idleTransceiver(pool, kind) {
  for (const [t, v] of pool) if (v == null && kindOf(t) === kind) return t;
  return null;
}
