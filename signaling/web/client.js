// Browser client of the SFU: one WebSocket for signaling (docs/protocol.md), one
// RTCPeerConnection for media. Plain ES module, no dependencies.
//
//   import { Call } from '/client.js';
//   const call = new Call({ token });
//   call.addEventListener('track', (e) => attach(e.detail.track));
//   await call.join({ audio: true, video: true });
//
// The client is always the SDP offerer. Every change to the peer connection (adding,
// idling or reusing a transceiver) is queued and applied by one negotiation loop, between
// offers, so that exactly one offer is in flight at a time and each offer carries the full
// `publish` and `subscribe` lists.
//
// M-lines are reused, never rejected (docs/protocol.md): a transceiver is never stopped.
// One that no longer carries a track goes `inactive` and waits, in a pool per direction
// and kind, for the next track of its kind, which takes its mid. (A simulcast sender is
// reused only by a track sent with the same layers, a single-stream one only by a single
// stream: a transceiver's encodings are fixed when it is created.)
//
// Transport fallback: a call joins with `transport: "auto"` (UDP and ICE-TCP candidates,
// every TURN server). If its media connection fails, or is not up CONNECT_TIMEOUT_MS after
// the first answer, the call rejoins once with `transport: "relay"`: media only through
// TURN, and only over TCP or TLS (`turn:...?transport=tcp`, `turns:`), the way through
// networks that pass nothing but TCP or TLS to port 443. The local tracks are kept; the
// participant id changes (others see this one leave and join again).
//
// Simulcast: the camera is sent as three layers, RTP stream ids `q`, `h`, `f` at 1/4, 1/2
// and full resolution (150 kbit/s, 500 kbit/s, 1.5 Mbit/s at most), announced as `layers`
// in its `publish` entry; the server forwards to each subscriber the layer that fits.
// Chrome sends all three only from a capture of 960x540 up (ask for 1280x720 with
// `join({ video: { width: 1280, height: 720 } })`); a smaller camera goes out as the top
// two (`h`, `f`: a 640x480 one, browsers' usual default, as 320x240 and 640x480), one
// under 480x270 as one stream. `new Call({ simulcast: false })` (or
// `join({ simulcast: false })`) sends one stream. A screen share is always one stream.
// When the server says which layers somebody receives (`layers`), the others stop being
// encoded (`RTCRtpEncodingParameters.active`), and that choice is kept across
// renegotiations.
//
// What this client shows, and so what the server sends it (docs/protocol.md, "How a
// subscriber's media is chosen"):
//
//   call.setView({ pinned: [7], quality: [{ track_id: 9, quality: 'low' }] });
//   call.pin(7); call.unpin(7);      // keep the pinned set, resend the view
//   call.view                        // { pinned, quality } as last set
//   call.addEventListener('activespeakers', (e) => highlight(e.detail.speakers[0]));
//   call.activeSpeakers              // participant ids speaking now, loudest first
//
// Slots, for large rooms: `new Call({ slots: { audio: 3, video: 25 } })` receives on that
// many m-lines, added once, which the server fills with the tracks it chose for this
// client (`offer.slots`, docs/protocol.md): no renegotiation as people come and go. With
// `from: N` in `slots`, the call receives one m-line per track until N others (besides
// a broadcast's viewers) are in it, then moves to slots for good (its per-track m-lines
// become slots, the tracks they carried get `track_removed`). When
// a slot changes tracks, the old track gets `track_removed` and the new one `track`, with
// the slot's MediaStreamTrack (the same object: its picture changes at the next
// keyframe). A track not on a slot is known (`remoteTracks`) but has no `track`.
//
// Events (CustomEvent, fields in `detail`): joined, participant_joined, participant_left,
// track_published, track, track_removed, track_muted, local_track, local_track_removed,
// activespeakers {speakers}, layers {track_id, active} (what the server asked of one of
// this client's simulcast tracks), connection_state, transport_fallback, error, left,
// closed.

const ANSWER_TIMEOUT_MS = 20000;
const JOIN_TIMEOUT_MS = 15000;
const LEAVE_TIMEOUT_MS = 3000;
const BUSY_RETRIES = 3;
const BUSY_RETRY_MS = 1000;
const CONNECT_TIMEOUT_MS = 5000;

/**
 * The camera's simulcast encodings, lowest quality first (the order of `layers` in
 * `publish`). Bitrates in bit/s.
 */
const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', maxBitrate: 1500000 },
];
const SIMULCAST_LAYERS = SIMULCAST_ENCODINGS.map((e) => e.rid);

/**
 * The simulcast encodings Chrome really sends for a camera of this size: it sends three
 * layers only from 960x540 pixels up, two from 480x270, and drops the top ones. Sending
 * fewer layers, the top ones, keeps the full resolution: a 640x480 camera goes out as
 * 320x240 and 640x480 (`h`, `f`), not 160x120 and 320x240. Null: one stream.
 */
function simulcastEncodingsFor(track) {
  const { width, height } = track.getSettings ? track.getSettings() : {};
  const pixels = width && height ? width * height : Infinity;
  if (pixels >= 960 * 540) return SIMULCAST_ENCODINGS;
  if (pixels >= 480 * 270) return SIMULCAST_ENCODINGS.slice(1);
  return null;
}

/** The `quality` values of a `view` (docs/protocol.md). */
const QUALITIES = ['low', 'medium', 'high'];
/** Most entries in each list of a `view`; the server refuses more. */
const MAX_VIEW_ENTRIES = 100;

/** Whether a STUN/TURN URL is reached over TCP or TLS (RFC 7064, RFC 7065). */
function isTcpUrl(url) {
  const u = String(url).toLowerCase();
  const transport = (u.split('?')[1] || '').split('&').find((kv) => kv.startsWith('transport='));
  const value = transport ? transport.slice('transport='.length) : null;
  if (u.startsWith('turns:') || u.startsWith('stuns:')) return value == null || value === 'tcp';
  return (u.startsWith('turn:') || u.startsWith('stun:')) && value === 'tcp';
}

/** The ICE servers with only their TCP and TLS URLs (servers left without any dropped). */
function tcpOnly(servers) {
  return servers
    .map((s) => ({ ...s, urls: [].concat(s.urls || []).filter(isTcpUrl) }))
    .filter((s) => s.urls.length > 0);
}

/** `audio` or `video`: every transceiver has a receiver track of its kind, even sendonly. */
function kindOf(transceiver) {
  return transceiver.receiver.track.kind;
}

/** Whether the negotiated direction lets media in (the answer said sendonly/sendrecv). */
function receiving(transceiver) {
  return transceiver.currentDirection === 'recvonly' || transceiver.currentDirection === 'sendrecv';
}

/** The RTP stream ids an SDP sends on the m-line of `mid` (its `a=rid:<id> send` lines). */
function sentRids(sdp, mid) {
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
function negotiateDependencyDescriptor(transceiver) {
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

/** Whether two layer lists (arrays of rids, or null for a single stream) are the same. */
function sameLayers(a, b) {
  return (a || []).join(' ') === (b || []).join(' ');
}

/**
 * A view as a comparable string: pinned ids and quality caps, sorted, without `high`
 * (the default: no cap). Two views with one key mean the same to the server.
 */
function viewKey(pinned, quality) {
  const p = [...pinned].sort((a, b) => a - b);
  const q = [...quality].filter(([, v]) => v !== 'high').sort(([a], [b]) => a - b);
  return JSON.stringify([p, q]);
}
const DEFAULT_VIEW_KEY = viewKey([], []);

/** An Error with a protocol error `code` (e.g. `unauthorized`, `forbidden`). */
export class CallError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'CallError';
    this.code = code;
  }
}

/**
 * The grants a join token claims (docs/protocol.md: each defaults to true). Read, not
 * verified: only to avoid capturing devices the server would refuse anyway.
 */
function tokenGrants(token) {
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

function defaultUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/ws`;
}

export class Call extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.token       join token (JWT)
   * @param {string} [opts.url]       WebSocket URL; default ws(s)://<this host>/ws
   * @param {RTCIceServer[]} [opts.iceServers] added to the server's `ice_servers`
   * @param {'all'|'relay'} [opts.iceTransportPolicy] `relay`: media only through TURN
   *   (joins with `transport: "relay"`)
   * @param {boolean} [opts.fallback] rejoin through TURN over TCP/TLS when the media
   *   connection fails or does not come up in time (default true)
   * @param {boolean} [opts.simulcast] send the camera as three layers (default true)
   * @param {string} [opts.svc] send the camera as one stream of layers instead (SVC), in
   *   this scalability mode (e.g. `L3T3_KEY`: three spatial and three temporal layers),
   *   encoded with `opts.codec`
   * @param {string} [opts.codec] the camera's codec with `svc`: `VP9` (default) or `AV1`
   * @param {boolean} [opts.dependencyDescriptor] negotiate the dependency descriptor on
   *   every video transceiver (needed to receive AV1 SVC in Chrome; default false)
   * @param {boolean} [opts.audience] as a broadcast's viewer, hear of the other viewers too
   *   (default false: a viewer hears only of presenters and participants)
   * @param {{audio:number, video:number, from?:number}} [opts.slots] receive on this many
   *   slot m-lines the server fills, instead of one per track (for large rooms); with
   *   `from`, only once that many others are in the call
   */
  constructor({
    url, token, iceServers = [], iceTransportPolicy = 'all', fallback = true, simulcast = true,
    svc = null, codec = 'VP9', dependencyDescriptor = false, audience = false, slots = null,
  } = {}) {
    super();
    this.url = url || defaultUrl();
    this.token = token;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.fallback = fallback;
    /** Whether the camera is sent as simulcast layers (set before join). */
    this.simulcast = !!simulcast;
    /** The camera's SVC scalability mode and codec, or null (set before join). */
    this.svc = svc || null;
    this.codec = String(codec || 'VP9').toUpperCase();
    /** Whether video transceivers negotiate the dependency descriptor. */
    this.dependencyDescriptor = !!dependencyDescriptor;
    /** A viewer that asks to hear of the rest of the audience. */
    this.audience = !!audience;
    /** Slot m-lines to receive on ({audio, video}), or null: one m-line per track. */
    this.slots = slots && (slots.audio > 0 || slots.video > 0)
      ? { audio: Math.max(0, slots.audio | 0), video: Math.max(0, slots.video | 0), from: Math.max(0, slots.from | 0) }
      : null;
    /** Whether the call receives on slots now. */
    this._slotsOn = !!this.slots && this.slots.from === 0;
    /** `auto` or `relay`: what the join asks for (docs/protocol.md). */
    this.transport = iceTransportPolicy === 'relay' ? 'relay' : 'auto';
    /** Whether this call fell back to TURN over TCP/TLS. */
    this.fellBack = false;

    /** @type {number|null} */
    this.participantId = null;
    this.room = null;
    this.identity = null;
    this.name = null;
    this.grants = null;
    /** @type {Map<number, {participant_id:number, identity:string, name:string}>} */
    this.participants = new Map();
    /**
     * The others' tracks; `layers`: the simulcast rids the publisher sends, lowest first
     * (empty for one stream).
     * @type {Map<number, {track_id:number, participant_id:number, kind:string, source:string, muted:boolean, layers:string[], mid:string|null, track:MediaStreamTrack|null}>}
     */
    this.remoteTracks = new Map();
    /** @type {Map<string, {track:MediaStreamTrack, mid:string|null, track_id:number|null}>} */
    this.localTracks = new Map();
    /** Participant ids speaking now, loudest first (the last `active_speakers`). */
    this.activeSpeakers = [];
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** performance.now() timestamps of the join steps. */
    this.timings = { wsOpen: null, joined: null, firstAnswer: null, connected: null };

    this._state = 'new'; // new | joining | joined | closed
    this._joinWaiter = null; // {resolve, reject}
    this._answerWaiter = null; // {resolve, reject}
    this._answersToSkip = 0; // answers to offers we gave up waiting for
    this._leaveWaiter = null;
    this._ops = []; // pc mutations waiting for the next negotiation
    this._localOps = []; // the same for local tracks: applied first, see _offerOnce
    this._wantNegotiation = false;
    this._negotiating = null; // Promise of the running negotiation loop
    // Every transceiver of the connection is in exactly one of these two maps, for the
    // call's lifetime; the value is null while it is idle (`inactive`, reusable).
    this._sendTransceivers = new Map(); // RTCRtpTransceiver -> source | null
    this._recvTransceivers = new Map(); // RTCRtpTransceiver -> track_id | null
    // With slots: the slot transceivers, in offer order, and the track on each mid.
    this._slotTransceivers = [];
    this._slotTrack = new Map(); // mid -> track_id
    // A sender's simulcast rids (lowest first), fixed at its creation; absent: one stream.
    this._sendLayers = new Map(); // RTCRtpTransceiver -> string[]
    this._sendSvc = new Map(); // RTCRtpTransceiver -> scalability mode of an SVC camera
    // The last `layers` of each simulcast track of ours: rids to keep encoding. Applied to
    // the sender now, and again after every answer and once the track has its id.
    this._activeLayers = new Map(); // track_id -> string[]
    // Applying them, one at a time: in Chrome a setParameters that overlaps another on
    // the same sender fails ("getParameters() has never been called"), the first one's
    // completion having reset the transaction id both were given.
    this._layersApplying = Promise.resolve();
    this._layersQueued = false;
    this._localMuted = new Map(); // source -> muted wished by the user
    // The view (docs/protocol.md `view`) as the application set it, and the key of the
    // last one the server got (a new session starts from the default, an empty view).
    this._pinned = new Set(); // track_id
    this._quality = new Map(); // track_id -> low | medium | high
    this._viewSentKey = DEFAULT_VIEW_KEY;
  }

  // ---------------------------------------------------------------- public API

  /** `new`, `joining`, `joined` or `closed`. */
  get state() {
    return this._state;
  }

  /**
   * Connects, joins the room, publishes local media (what the token grants) and
   * subscribes to everyone. Resolves once the first answer is applied.
   * Rejects with a CallError (`.code`) when the server refuses the join.
   *
   * `audio` and `video` are booleans or getUserMedia constraints for that device (e.g.
   * `video: { width: 1280, height: 720 }`); `simulcast` overrides the constructor's.
   */
  async join({ audio = true, video = true, simulcast } = {}) {
    if (this._state !== 'new') throw new CallError('bad_state', `join() in state ${this._state}`);
    this._state = 'joining';
    if (simulcast != null) this.simulcast = !!simulcast;
    // Start the camera and microphone while the socket joins: device start-up is the
    // slowest step of a join. Only what the token grants is captured (its claims are
    // readable here; the server checks them again).
    const grants = tokenGrants(this.token);
    const capture = this._captureMedia({
      audio: grants.publish_audio ? audio || false : false,
      video: grants.publish_video ? video || false : false,
    });
    try {
      await this._openSocket();
      const joined = await this._sendJoin();
      this._onJoined(joined);
      await this._startMedia(await capture);
      await this._negotiate();
    } catch (err) {
      capture.then((tracks) => tracks.forEach((t) => t.stop()));
      this._teardown(err.code === 'unauthorized' ? 'unauthorized' : 'error');
      throw err;
    }
    return this;
  }

  /** Mutes or unmutes the microphone (track.enabled and `mute` to the server). */
  setMicrophoneMuted(muted) {
    return this._setSourceMuted('microphone', !!muted);
  }

  /** Turns the camera on or off (track.enabled and `mute` to the server). */
  setCameraEnabled(enabled) {
    return this._setSourceMuted('camera', !enabled);
  }

  /** Whether the local track of `source` is muted (or absent). */
  isMuted(source) {
    const local = this.localTracks.get(source);
    return !local || !local.track.enabled;
  }

  /**
   * Says what this client shows (docs/protocol.md `view`), replacing the previous view.
   * `pinned`: track ids always received, at the best layer the network allows (a pinned
   * microphone is heard even when it is not among the loudest). `quality`: caps on video
   * tracks, `[{track_id, quality}]` or a Map / object from track_id to quality, each
   * `low` (the thumbnail layer), `medium` or `high` (no cap, the default).
   * Sent at once when joined, else once joined (and again after a fallback rejoin); a
   * view that means what the last one sent meant is not sent again.
   * Throws a CallError `bad_request` for a quality that is none of those, or more than
   * 100 entries in a list.
   */
  setView({ pinned = [], quality = [] } = {}) {
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
    this._pinned = pins;
    this._quality = caps;
    this._sendView();
  }

  /** Pins a track (adds it to the view's `pinned`) and sends the view. */
  pin(trackId) {
    const pinned = new Set(this._pinned).add(Number(trackId));
    this.setView({ pinned, quality: this._quality });
  }

  /** Unpins a track and sends the view. */
  unpin(trackId) {
    const pinned = new Set(this._pinned);
    pinned.delete(Number(trackId));
    this.setView({ pinned, quality: this._quality });
  }

  /** Whether a track is pinned. */
  isPinned(trackId) {
    return this._pinned.has(Number(trackId));
  }

  /** The view as last set: {pinned: [track_id], quality: [{track_id, quality}]}. */
  get view() {
    return {
      pinned: [...this._pinned],
      quality: [...this._quality].map(([track_id, quality]) => ({ track_id, quality })),
    };
  }

  /** Shares the screen (getDisplayMedia); resolves once the server has accepted it. */
  async startScreenShare() {
    this._assertJoined();
    if (!this.grants.publish_screen) {
      throw new CallError('forbidden', 'the token does not grant publish_screen');
    }
    if (this.localTracks.has('screen')) return this.localTracks.get('screen').track;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const [track] = stream.getVideoTracks();
    if (!track) throw new CallError('media', 'getDisplayMedia returned no video track');
    if (this._state !== 'joined' || this.localTracks.has('screen')) {
      track.stop();
      this._assertJoined();
      return this.localTracks.get('screen').track;
    }
    track.contentHint = 'detail';
    // The user ended the share from the browser's own UI.
    track.addEventListener('ended', () => {
      if (this.localTracks.get('screen')?.track === track) {
        this.stopScreenShare().catch((err) => this._reportError('negotiation', err));
      }
    });
    this._addLocalTrack('screen', track);
    await this._negotiate();
    return track;
  }

  /** Stops sharing the screen. */
  async stopScreenShare() {
    const local = this.localTracks.get('screen');
    if (!local) return;
    this.localTracks.delete('screen');
    this._localMuted.delete('screen');
    local.track.stop();
    this._emit('local_track_removed', { source: 'screen', track_id: local.track_id });
    if (this._state !== 'joined') return;
    this._removeLocalTrack('screen', local);
    await this._negotiate();
  }

  /** Leaves the call: sends `leave`, waits (bounded) for the server, closes everything. */
  async leave() {
    if (this._state === 'closed') return;
    this._leaving = true;
    this._leftReason = this._leftReason || 'left';
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      const closed = new Promise((resolve) => {
        this._leaveWaiter = resolve;
        setTimeout(resolve, LEAVE_TIMEOUT_MS);
      });
      this._send({ type: 'leave' });
      await closed;
    }
    this._teardown('left');
  }

  /**
   * Inbound RTP statistics of the subscribed tracks:
   * [{track_id, kind, source, participant_id, mid, framesDecoded, bytesReceived,
   *   packetsReceived, packetsLost, ssrc, frameWidth, frameHeight, totalSamplesReceived,
   *   codec (its MIME type)}]
   * Chromium reports an inbound stream only once its first packet arrived.
   */
  async inboundStats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    // Attributed by the current, negotiated mid -> track_id mapping: a reused m-line's
    // stream counts for the track it carries now. `info.mid` is set once an answer
    // covering the subscription is applied, and the track leaves remoteTracks when it is
    // unpublished. (A receiver's MediaStreamTrack outlives reuse: not a key.)
    const byMid = new Map();
    for (const info of this.remoteTracks.values()) {
      if (info.mid != null && info.track) byMid.set(info.mid, info.track_id);
    }
    // One inbound-rtp per mid, the one that received last (an SSRC change on a reused
    // m-line may leave the previous stream's report for a while).
    const latest = new Map();
    for (const r of report.values()) {
      if (r.type !== 'inbound-rtp' || r.mid == null || !byMid.has(r.mid)) continue;
      const prev = latest.get(r.mid);
      if (!prev || (r.lastPacketReceivedTimestamp ?? 0) > (prev.lastPacketReceivedTimestamp ?? 0)) latest.set(r.mid, r);
    }
    const out = [];
    for (const [mid, r] of latest) {
      const trackId = byMid.get(mid);
      const info = this.remoteTracks.get(trackId);
      out.push({
        track_id: trackId,
        kind: r.kind,
        source: info.source,
        participant_id: info.participant_id,
        mid: r.mid ?? null,
        framesDecoded: r.kind === 'video' ? (r.framesDecoded ?? 0) : null,
        bytesReceived: r.bytesReceived ?? 0,
        packetsReceived: r.packetsReceived ?? 0,
        packetsLost: r.packetsLost ?? 0,
        ssrc: r.ssrc ?? null,
        frameWidth: r.frameWidth ?? null,
        frameHeight: r.frameHeight ?? null,
        totalSamplesReceived: r.totalSamplesReceived ?? null,
        codec: (r.codecId && report.get(r.codecId) && report.get(r.codecId).mimeType) || null,
      });
    }
    return out;
  }

  /**
   * Outbound RTP statistics of the local tracks, one entry per RTP stream (three for a
   * simulcast camera): [{source, track_id, kind, mid, rid, active, frameWidth,
   * frameHeight, framesEncoded, framesPerSecond, bytesSent, packetsSent, targetBitrate,
   * qualityLimitationReason, codec, scalabilityMode}]. `rid` is null for a single stream; `active` is whether the
   * encoding is on (RTCRtpEncodingParameters.active).
   */
  async outboundStats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const byMid = new Map();
    for (const [source, local] of this.localTracks) if (local.mid != null) byMid.set(local.mid, [source, local]);
    const active = new Map(); // "mid rid" -> active, from the senders' parameters
    for (const [t, source] of this._sendTransceivers) {
      if (source == null || t.mid == null) continue;
      for (const e of t.sender.getParameters().encodings || []) active.set(`${t.mid} ${e.rid ?? ''}`, e.active !== false);
    }
    const out = [];
    for (const r of report.values()) {
      if (r.type !== 'outbound-rtp' || r.mid == null || !byMid.has(r.mid)) continue;
      const [source, local] = byMid.get(r.mid);
      out.push({
        source,
        track_id: local.track_id,
        kind: r.kind,
        mid: r.mid,
        rid: r.rid ?? null,
        active: active.get(`${r.mid} ${r.rid ?? ''}`) ?? r.active ?? null,
        frameWidth: r.frameWidth ?? null,
        frameHeight: r.frameHeight ?? null,
        framesEncoded: r.framesEncoded ?? null,
        framesPerSecond: r.framesPerSecond ?? null,
        bytesSent: r.bytesSent ?? 0,
        packetsSent: r.packetsSent ?? 0,
        targetBitrate: r.targetBitrate ?? null,
        qualityLimitationReason: r.qualityLimitationReason ?? null,
        codec: (r.codecId && report.get(r.codecId) && report.get(r.codecId).mimeType) || null,
        scalabilityMode: r.scalabilityMode ?? null,
      });
    }
    const order = (rid) => (rid == null ? -1 : SIMULCAST_LAYERS.indexOf(rid));
    return out.sort((a, b) => (a.mid === b.mid ? order(a.rid) - order(b.rid) : (a.mid < b.mid ? -1 : 1)));
  }

  // ---------------------------------------------------------------- socket

  _openSocket() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {
        reject(new CallError('network', `cannot open ${this.url}: ${err.message}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.addEventListener('open', () => {
        opened = true;
        this.timings.wsOpen = performance.now();
        resolve();
      });
      // A socket replaced by a fallback rejoin is ignored from then on.
      ws.addEventListener('message', (e) => {
        if (this.ws === ws) this._onMessage(e.data);
      });
      ws.addEventListener('close', (e) => {
        if (!opened) {
          reject(new CallError('network', `WebSocket to ${this.url} failed (code ${e.code})`));
        }
        if (this.ws === ws) this._onSocketClose(e);
      });
      // 'error' is always followed by 'close', which does the work.
      ws.addEventListener('error', () => console.warn('call: WebSocket error', this.url));
    });
  }

  _send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      throw new CallError('closed', `cannot send ${msg.type}: socket not open`);
    }
    this.ws.send(JSON.stringify(msg));
  }

  _sendJoin() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._joinWaiter = null;
        reject(new CallError('timeout', 'no reply to join'));
      }, JOIN_TIMEOUT_MS);
      this._joinWaiter = {
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this._send({ type: 'join', token: this.token, transport: this.transport, ...(this.audience ? { audience: true } : {}) });
    });
  }

  _onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      this._reportError('protocol', new Error(`server sent invalid JSON: ${err.message}`));
      return;
    }
    try {
      this._dispatch(msg);
    } catch (err) {
      this._reportError('client', err);
    }
  }

  _dispatch(msg) {
    switch (msg.type) {
      case 'joined':
        if (this._joinWaiter) {
          this._joinWaiter.resolve(msg);
          this._joinWaiter = null;
        }
        return;
      case 'error':
        return this._onServerError(msg);
      case 'answer':
        return this._onAnswer(msg);
      case 'participant_joined':
        return this._onParticipantJoined(msg);
      case 'participant_left':
        return this._onParticipantLeft(msg);
      case 'track_published':
        return this._onTrackPublished(msg);
      case 'track_unpublished':
        return this._onTrackUnpublished(msg);
      case 'track_muted':
        return this._onTrackMuted(msg);
      case 'active_speakers':
        return this._onActiveSpeakers(msg);
      case 'layers':
        return this._onLayers(msg);
      case 'slots':
        return this._onSlots(msg);
      case 'left':
        this._leftReason = msg.reason || 'left';
        this._teardown(this._leftReason);
        return;
      default:
        // Newer servers may send more; ignore what we do not know.
        console.warn('call: ignoring unknown message type', msg.type);
    }
  }

  _onServerError(msg) {
    const err = new CallError(msg.code || 'unknown', msg.message || '');
    err.request = msg.request ?? null;
    // Before `joined` only the join is outstanding; an error without `request` (e.g. for a
    // frame the server could not read) then also ends the join.
    if (this._joinWaiter && (msg.request === 'join' || msg.request == null)) {
      this._joinWaiter.reject(err);
      this._joinWaiter = null;
      return;
    }
    if (msg.request === 'offer') {
      // An offer gets exactly one reply: this error is the in-flight offer's.
      if (this._answersToSkip > 0) {
        this._answersToSkip--;
        console.warn(`call: dropping a late reply to an offer: ${err.message}`);
        return;
      }
      if (this._answerWaiter) {
        this._answerWaiter.reject(err);
        this._answerWaiter = null;
        return;
      }
    }
    this._reportError(err.code, err);
  }

  _onSocketClose(e) {
    if (this._leaveWaiter) {
      this._leaveWaiter();
      this._leaveWaiter = null;
    }
    const err = new CallError('closed', `socket closed (code ${e.code}${e.reason ? `, ${e.reason}` : ''})`);
    if (this._joinWaiter) {
      this._joinWaiter.reject(err);
      this._joinWaiter = null;
    }
    if (this._answerWaiter) {
      this._answerWaiter.reject(err);
      this._answerWaiter = null;
    }
    if (this._state === 'joined' && !this._leftReason && !this._leaving) {
      this._reportError('closed', err);
    }
    this._teardown(this._leftReason || 'closed', e);
  }

  // ---------------------------------------------------------------- room state

  _onJoined(msg) {
    this.participantId = msg.participant_id;
    this.room = msg.room;
    this.identity = msg.identity;
    this.name = msg.name;
    this.grants = {
      publish_audio: true, publish_video: true, publish_screen: true, subscribe: true,
      ...(msg.grants || {}),
    };
    for (const p of msg.participants || []) {
      this.participants.set(p.participant_id, {
        participant_id: p.participant_id, identity: p.identity, name: p.name, role: p.role || 'participant',
      });
    }
    if (this._slotsDue()) this._slotsOn = true; // already enough others: slots from the start
    for (const t of msg.tracks || []) this._addRemoteTrack(t);
    this._iceServers = [...(msg.ice_servers || []), ...this.iceServers];
    if (this.fellBack) this._iceServers = tcpOnly(this._iceServers);
    this.timings.joined = performance.now();
    this._state = 'joined';
    this._createPeerConnection();
    // A new session (the first, or a fallback rejoin) starts from the default view.
    this._viewSentKey = DEFAULT_VIEW_KEY;
    this._sendView();
    this._emit('joined', {
      participant_id: this.participantId, room: this.room, identity: this.identity, name: this.name,
      grants: this.grants, participants: [...this.participants.values()], tracks: msg.tracks || [],
    });
  }

  _onParticipantJoined(msg) {
    const p = { participant_id: msg.participant_id, identity: msg.identity, name: msg.name, role: msg.role || 'participant' };
    this.participants.set(p.participant_id, p);
    this._emit('participant_joined', p);
    if (this._slotsDue()) {
      this._switchToSlots();
      this._negotiateInBackground();
    }
  }

  /** Whether the call should move to slots now: enough others (viewers aside) are in it. */
  _slotsDue() {
    if (!this.slots || this._slotsOn || !this.grants || !this.grants.subscribe) return false;
    const others = [...this.participants.values()].filter((p) => p.role !== 'viewer').length;
    return others >= this.slots.from;
  }

  /**
   * Moves to slots for good: the tracks shown so far get `track_removed` (each comes back
   * with `track` when the server puts it on a slot), and the per-track m-lines go idle,
   * to become slots at the next offer.
   */
  _switchToSlots() {
    this._slotsOn = true;
    for (const info of this.remoteTracks.values()) {
      if (!info.track) continue;
      this._emit('track_removed', this._trackDetail(info));
      info.track = null;
      info.mid = null;
    }
    // Forgotten at once, so that the answer to an offer already in flight announces
    // none of them again, and no later offer lists them; idled at the next offer.
    for (const t of this._recvTransceivers.keys()) this._recvTransceivers.set(t, null);
    this._ops.push(() => {
      for (const t of this._recvTransceivers.keys()) {
        if (!this._slotTransceivers.includes(t)) t.direction = 'inactive';
      }
    });
  }

  _onParticipantLeft(msg) {
    const p = this.participants.get(msg.participant_id) || { participant_id: msg.participant_id };
    this.participants.delete(msg.participant_id);
    // The server unpublishes a leaver's tracks before participant_left; in case one was
    // missed, drop what is left here.
    let removed = false;
    for (const t of [...this.remoteTracks.values()]) {
      if (t.participant_id === msg.participant_id) removed = this._removeRemoteTrack(t.track_id) || removed;
    }
    this._emit('participant_left', { ...p, reason: msg.reason });
    if (removed && !this._slotsOn) this._negotiateInBackground();
  }

  _onTrackPublished(msg) {
    if (msg.participant_id === this.participantId) return;
    if (this.remoteTracks.has(msg.track_id)) return;
    this._addRemoteTrack(msg);
    this._emit('track_published', this._trackDetail(this.remoteTracks.get(msg.track_id)));
    // On slots the server puts it where it belongs: no new offer.
    if (this.grants.subscribe && !this._slotsOn) this._negotiateInBackground();
  }

  _onTrackUnpublished(msg) {
    if (this._removeRemoteTrack(msg.track_id) && !this._slotsOn) this._negotiateInBackground();
  }

  /**
   * The tracks on our slot m-lines now: a track that left a slot gets `track_removed`
   * (it stays known), one that came gets `track` with the slot's MediaStreamTrack.
   */
  _onSlots(msg) {
    const byMid = new Map(this._slotTransceivers.map((t) => [t.mid, t]));
    const entries = Array.isArray(msg.slots) ? msg.slots : [];
    const gone = [];
    const came = [];
    for (const { mid, track_id: trackId } of entries) {
      const before = this._slotTrack.get(mid) ?? null;
      const now = trackId ?? null;
      if (before === now) continue;
      if (now == null) this._slotTrack.delete(mid);
      else this._slotTrack.set(mid, now);
      if (before != null) gone.push(before);
      if (now != null) came.push([now, mid]);
    }
    // Departures first: a MediaStreamTrack that moves on is detached before it is shown
    // again.
    for (const trackId of gone) {
      const info = this.remoteTracks.get(trackId);
      if (!info || !info.track || came.some(([t]) => t === trackId)) continue;
      this._emit('track_removed', this._trackDetail(info));
      info.track = null;
      info.mid = null;
    }
    for (const [trackId, mid] of came) {
      const info = this.remoteTracks.get(trackId);
      const transceiver = byMid.get(mid);
      if (!info || !transceiver) continue;
      info.track = transceiver.receiver.track;
      info.mid = mid;
      this._emit('track', this._trackDetail(info));
    }
  }

  _onTrackMuted(msg) {
    const t = this.remoteTracks.get(msg.track_id);
    if (!t) return;
    t.muted = !!msg.muted;
    this._emit('track_muted', this._trackDetail(t));
  }

  _onActiveSpeakers(msg) {
    this.activeSpeakers = Array.isArray(msg.speakers) ? [...msg.speakers] : [];
    this._emit('activespeakers', { speakers: [...this.activeSpeakers] });
  }

  /**
   * The layers of one of our simulcast tracks that somebody receives: remembered, and
   * applied at once unless an offer is in flight (its answer may change the sender's
   * encodings; the negotiation applies them after each answer and when it ends).
   */
  _onLayers(msg) {
    const active = Array.isArray(msg.active) ? msg.active.map(String) : [];
    this._activeLayers.set(msg.track_id, active);
    this._emit('layers', { track_id: msg.track_id, active: [...active] });
    if (!this._negotiating) this._applyLayers();
  }

  /**
   * Records a remote track and, with the subscribe grant, queues giving it a recvonly
   * transceiver: an idle one of its kind (its m-line then carries the new track), else a
   * new one.
   */
  _addRemoteTrack(t) {
    const info = {
      track_id: t.track_id, participant_id: t.participant_id, kind: t.kind, source: t.source,
      muted: !!t.muted, layers: Array.isArray(t.layers) ? [...t.layers] : [], mid: null, track: null,
    };
    this.remoteTracks.set(t.track_id, info);
    if (!this.grants.subscribe || this._slotsOn) return;
    this._ops.push(() => {
      if (this.remoteTracks.get(t.track_id) !== info) return; // unpublished meanwhile
      if (this._slotsOn) return; // moved to slots meanwhile
      let transceiver = this._idleTransceiver(this._recvTransceivers, t.kind);
      if (transceiver) {
        transceiver.direction = 'recvonly';
      } else {
        transceiver = this.pc.addTransceiver(t.kind, { direction: 'recvonly' });
        if (t.kind === 'video' && this.dependencyDescriptor) negotiateDependencyDescriptor(transceiver);
      }
      this._recvTransceivers.set(transceiver, t.track_id);
    });
  }

  /**
   * Forgets a remote track and queues idling its transceiver (`inactive`, out of
   * `subscribe`, kept for reuse). Returns whether it existed.
   */
  _removeRemoteTrack(trackId) {
    const info = this.remoteTracks.get(trackId);
    if (!info) return false;
    this.remoteTracks.delete(trackId);
    // Out of the view too (not resent: the server ignores entries of gone tracks).
    this._pinned.delete(trackId);
    this._quality.delete(trackId);
    this._ops.push(() => {
      const transceiver = this._transceiverOfTrack(trackId);
      if (!transceiver) return; // never got one
      transceiver.direction = 'inactive';
      this._recvTransceivers.set(transceiver, null);
    });
    this._emit('track_removed', this._trackDetail(info));
    return true;
  }

  _trackDetail(t) {
    return {
      track_id: t.track_id, participant_id: t.participant_id, kind: t.kind, source: t.source,
      muted: t.muted, layers: [...t.layers], mid: t.mid, track: t.track,
    };
  }

  // ---------------------------------------------------------------- media

  _createPeerConnection() {
    const pc = new RTCPeerConnection({
      iceServers: this._iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    this._everConnected = false;
    // No 'track' listener: a reused m-line keeps its receiver's MediaStreamTrack, and the
    // event may not fire again. Remote tracks are announced after each answer instead
    // (_announceRemoteTracks).
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc !== pc) return; // replaced by a fallback rejoin
      if (pc.connectionState === 'connected') {
        this._everConnected = true;
        clearTimeout(this._connectTimer);
        if (this.timings.connected == null) this.timings.connected = performance.now();
      }
      this._emit('connection_state', { state: pc.connectionState });
      if (pc.connectionState === 'failed') {
        if (!this._everConnected && this._canFallBack()) {
          this._fallBack('the media connection failed');
        } else {
          this._reportError('ice_failed', new Error('media connection failed'));
        }
      }
    });
  }

  /** Arms the fallback timer once ICE has something to connect (the first answer). */
  _watchConnect() {
    if (this._connectTimer != null || this._everConnected || !this._canFallBack()) return;
    const pc = this.pc;
    this._connectTimer = setTimeout(() => {
      if (this.pc === pc && !this._everConnected && this._canFallBack()) {
        this._fallBack(`no media connection ${CONNECT_TIMEOUT_MS / 1000} s after the answer`);
      }
    }, CONNECT_TIMEOUT_MS);
  }

  _canFallBack() {
    return this.fallback && !this.fellBack && this.transport === 'auto' && this._state === 'joined';
  }

  /**
   * Rejoins with `transport: "relay"` through TURN over TCP/TLS, keeping the local tracks.
   * Remote tracks and participants of the old session are removed (with their events) and
   * come back with the new one.
   */
  async _fallBack(why) {
    this.fellBack = true;
    this.transport = 'relay';
    this.iceTransportPolicy = 'relay';
    console.warn(`call: ${why}: rejoining through TURN over TCP/TLS`);
    this._emit('transport_fallback', { reason: why });
    const oldWs = this.ws;
    const oldPc = this.pc;
    this.ws = null;
    this.pc = null;
    if (oldWs && oldWs.readyState === WebSocket.OPEN) {
      try {
        oldWs.send(JSON.stringify({ type: 'leave' }));
      } catch { /* closing anyway */ }
    }
    if (oldWs) oldWs.close(1000, 'transport fallback');
    if (oldPc) oldPc.close();
    // The others' tracks keep their ids across our rejoin: so does the view, sent again
    // once the new session has joined.
    const [pinned, quality] = [new Set(this._pinned), new Map(this._quality)];
    for (const trackId of [...this.remoteTracks.keys()]) this._removeRemoteTrack(trackId);
    [this._pinned, this._quality] = [pinned, quality];
    for (const p of [...this.participants.values()]) {
      this.participants.delete(p.participant_id);
      this._emit('participant_left', { ...p, reason: 'rejoin' });
    }
    if (this._answerWaiter) {
      this._answerWaiter.reject(new CallError('closed', 'rejoining'));
      this._answerWaiter = null;
    }
    this._answersToSkip = 0;
    this._ops = [];
    this._localOps = [];
    this._sendTransceivers = new Map();
    this._recvTransceivers = new Map();
    this._slotTransceivers = [];
    this._slotTrack = new Map();
    this._slotsOn = !!this.slots && this.slots.from === 0;
    this._sendLayers = new Map();
    this._sendSvc = new Map();
    this._activeLayers = new Map(); // our tracks get new ids (an application under way finds nothing to do)
    if (this.activeSpeakers.length) {
      this.activeSpeakers = [];
      this._emit('activespeakers', { speakers: [] });
    }
    const locals = [...this.localTracks.entries()];
    this.localTracks = new Map();
    this._connectTimer = null;
    this._state = 'joining';
    try {
      // The old session's negotiation ends on the rejected answer: let it finish first.
      if (this._negotiating) await this._negotiating.catch(() => {});
      await this._openSocket();
      this._onJoined(await this._sendJoin());
      for (const [source, local] of locals) this._addLocalTrack(source, local.track);
      await this._negotiate();
    } catch (err) {
      this._reportError(err.code || 'fallback', err);
      this._teardown('error');
    }
  }

  /**
   * How media travels now, from the selected ICE candidate pair: `UDP`, `TCP` (ICE-TCP),
   * `TURN/UDP`, `TURN/TCP` or `TURN/TLS` (how this client reaches the relay); null before
   * a pair is selected.
   */
  async transportInUse() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    let pair = null;
    for (const r of report.values()) {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    }
    if (!pair) {
      for (const r of report.values()) {
        if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
      }
    }
    const local = pair && report.get(pair.localCandidateId);
    if (!local) return null;
    // Relayed: a relay candidate, or a peer-reflexive one learnt through the relay (the
    // server host answers the relay's checks from the address they came from, which may
    // be another of its addresses). Chrome gives that one the relay's protocol too.
    if (local.candidateType === 'relay' || local.relayProtocol) {
      return `TURN/${String(local.relayProtocol || 'udp').toUpperCase()}`;
    }
    return String(local.protocol || 'udp').toUpperCase();
  }

  /**
   * Captures microphone and/or camera (`audio`, `video`: false, true or constraints);
   * resolves with the tracks it got (errors reported).
   */
  async _captureMedia({ audio, video }) {
    if (!audio && !video) return [];
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this._reportError('media', new Error('no media devices: the page needs HTTPS or localhost'));
      return [];
    }
    const get = (constraints) => navigator.mediaDevices.getUserMedia(constraints);
    try {
      return (await get({ audio, video })).getTracks();
    } catch (err) {
      if (!(audio && video)) {
        this._reportError('media', err);
        return [];
      }
      // One device may be missing or refused: try each alone.
      const tracks = [];
      for (const c of [{ audio }, { video }]) {
        try {
          tracks.push(...(await get(c)).getTracks());
        } catch (e) {
          this._reportError('media', e);
        }
      }
      return tracks;
    }
  }

  /** Publishes the captured tracks that the server's grants allow; stops the others. */
  async _startMedia(tracks) {
    const granted = (t) => (t.kind === 'audio' ? this.grants.publish_audio : this.grants.publish_video);
    for (const t of tracks) if (!granted(t) || this._state !== 'joined') t.stop();
    if (this._state !== 'joined') return;
    for (const track of tracks.filter(granted)) {
      this._addLocalTrack(track.kind === 'audio' ? 'microphone' : 'camera', track);
    }
  }

  /**
   * Records a local track and queues sending it: on an idle sender of its kind (and of
   * its layers), else a new one. The camera goes out as simulcast layers unless
   * `simulcast` is off.
   */
  _addLocalTrack(source, track) {
    const local = { track, mid: null, track_id: null };
    this.localTracks.set(source, local);
    if (this._localMuted.get(source)) track.enabled = false;
    this._localOps.push(async () => {
      if (this.localTracks.get(source) !== local) return; // removed meanwhile
      const svc = source === 'camera' && this.svc ? this.svc : null;
      const encodings = source === 'camera' && this.simulcast && !svc ? simulcastEncodingsFor(track) : null;
      const layers = encodings && encodings.map((e) => e.rid);
      let transceiver = null;
      for (const [t, s] of this._sendTransceivers) {
        if (s == null && kindOf(t) === track.kind && sameLayers(this._sendLayers.get(t), layers)
          && (this._sendSvc.get(t) || null) === svc) {
          transceiver = t;
          break;
        }
      }
      if (transceiver) {
        await transceiver.sender.replaceTrack(track);
        transceiver.direction = 'sendonly';
      } else if (svc) {
        // One stream of spatial and temporal layers; the server forwards each receiver
        // the layers that fit it. The codec must come first for the encoder to use it.
        transceiver = this.pc.addTransceiver(track, {
          direction: 'sendonly',
          sendEncodings: [{ scalabilityMode: this.svc }],
        });
        const codecs = (RTCRtpSender.getCapabilities('video') || { codecs: [] }).codecs;
        const mime = `video/${this.codec}`;
        const first = codecs.filter((c) => c.mimeType.toUpperCase() === mime.toUpperCase());
        if (first.length === 0) throw new Error(`this browser cannot send ${this.codec}`);
        transceiver.setCodecPreferences([...first, ...codecs.filter((c) => !first.includes(c))]);
        this._sendSvc.set(transceiver, svc);
      } else if (layers) {
        transceiver = this.pc.addTransceiver(track, {
          direction: 'sendonly',
          sendEncodings: encodings.map((e) => ({ ...e })),
        });
        this._sendLayers.set(transceiver, layers);
      } else {
        transceiver = this.pc.addTransceiver(track, { direction: 'sendonly' });
      }
      if (track.kind === 'video' && this.dependencyDescriptor) negotiateDependencyDescriptor(transceiver);
      this._sendTransceivers.set(transceiver, source);
    });
    this._emit('local_track', { source, track });
  }

  /** Queues idling the sender of a stopped local track: no track, `inactive`, out of `publish`. */
  _removeLocalTrack(source, local) {
    if (local.track_id != null) this._activeLayers.delete(local.track_id);
    this._localOps.push(async () => {
      for (const [t, s] of this._sendTransceivers) {
        if (s !== source || t.sender.track !== local.track) continue;
        this._sendTransceivers.set(t, null);
        t.direction = 'inactive';
        await t.sender.replaceTrack(null);
      }
    });
  }

  /**
   * Turns each simulcast encoding of our senders on or off as the track's last `layers`
   * says (setParameters: no renegotiation), once the previous application has finished.
   * Calls while one waits its turn coalesce: it reads the latest `layers` when it runs.
   */
  _applyLayers() {
    if (this._layersQueued) return this._layersApplying;
    this._layersQueued = true;
    this._layersApplying = this._layersApplying.then(() => {
      this._layersQueued = false;
      return this._applyLayersNow();
    }).catch((err) => this._reportError('layers', err)); // the chain must go on
    return this._layersApplying;
  }

  /**
   * One application of the `layers`: reads and writes each sender's parameters in one go,
   * so nothing changes them in between; only touches what differs. Resolves when every
   * setParameters has (never rejects: failures are reported).
   */
  _applyLayersNow() {
    const pending = [];
    for (const [t, source] of this._sendTransceivers) {
      const local = source != null ? this.localTracks.get(source) : null;
      const layers = this._sendLayers.get(t);
      if (!local || !layers || local.track_id == null || t.sender.track !== local.track) continue;
      const active = this._activeLayers.get(local.track_id);
      if (!active) continue;
      let params;
      try {
        params = t.sender.getParameters();
      } catch (err) {
        this._reportError('layers', err);
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
        if (this._state === 'joined' && this._sendTransceivers.get(t) === source) this._reportError('layers', err);
      }));
    }
    return Promise.all(pending);
  }

  /**
   * Sends the view when joined and when it means something else than the last one sent
   * (at the start of a session: the default, nothing pinned and no caps).
   */
  _sendView() {
    if (this._state !== 'joined' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const key = viewKey(this._pinned, this._quality);
    if (key === this._viewSentKey) return;
    this._send({ type: 'view', ...this.view });
    this._viewSentKey = key;
  }

  _setSourceMuted(source, muted) {
    this._localMuted.set(source, muted);
    const local = this.localTracks.get(source);
    if (!local) return false;
    local.track.enabled = !muted;
    // Without a track_id yet, the mute is sent once the answer assigns one.
    if (local.track_id != null && this._state === 'joined') {
      this._send({ type: 'mute', track_id: local.track_id, muted });
    }
    return true;
  }

  /**
   * After an answer: each subscribed track whose m-line now receives gets its mid and its
   * receiver's MediaStreamTrack (the same object a previous track of a reused m-line had),
   * and a 'track' event, once per track_id.
   */
  _announceRemoteTracks() {
    if (this._slotsOn) return; // `slots` messages announce them
    for (const [t, trackId] of this._recvTransceivers) {
      if (trackId == null || t.mid == null) continue;
      const info = this.remoteTracks.get(trackId);
      if (!info || info.track) continue;
      // An m-line the server answered inactive (the track is gone; its
      // track_unpublished is on the way) announces nothing.
      if (!receiving(t)) continue;
      info.track = t.receiver.track;
      info.mid = t.mid;
      this._emit('track', this._trackDetail(info));
    }
  }

  /** An idle transceiver of `kind` in `pool` (_sendTransceivers or _recvTransceivers). */
  _idleTransceiver(pool, kind) {
    for (const [t, v] of pool) if (v == null && kindOf(t) === kind) return t;
    return null;
  }

  _transceiverOfTrack(trackId) {
    for (const [t, id] of this._recvTransceivers) if (id === trackId) return t;
    return null;
  }

  // ---------------------------------------------------------------- negotiation

  /** Requests a negotiation; resolves when an offer with every change so far is answered. */
  _negotiate() {
    this._wantNegotiation = true;
    if (!this._negotiating) {
      this._negotiating = this._negotiationLoop().finally(() => {
        this._negotiating = null;
        // A `layers` that came during the last answer's processing waited for this.
        if (this._state === 'joined') this._applyLayers();
      });
    }
    return this._negotiating;
  }

  _negotiateInBackground() {
    this._negotiate().catch((err) => {
      // Ending the call, or a fallback rejoin, cancels the negotiation: not an error.
      if (this._state !== 'joined' && err.code === 'closed') return;
      this._reportError(err.code || 'negotiation', err);
    });
  }

  async _negotiationLoop() {
    let lastError = null;
    while (this._wantNegotiation && this._state === 'joined') {
      this._wantNegotiation = false;
      lastError = null;
      for (let attempt = 0; ; attempt++) {
        try {
          await this._offerOnce();
          break;
        } catch (err) {
          if (err.code === 'server_busy' && attempt < BUSY_RETRIES && this._state === 'joined') {
            await new Promise((r) => setTimeout(r, BUSY_RETRY_MS * (attempt + 1)));
            continue;
          }
          lastError = err;
          break;
        }
      }
    }
    if (lastError) throw lastError;
    if (this._state !== 'joined') throw new CallError('closed', 'the call ended during negotiation');
  }

  async _offerOnce() {
    const pc = this.pc;
    // Local tracks get their m-lines first, so that at join the participant's own media
    // come first in the SDP. (No m-line is ever rejected, so which one is the BUNDLE tag
    // does not matter.)
    const ops = [...this._localOps.splice(0), ...this._ops.splice(0)];
    for (const op of ops) {
      try {
        await op();
      } catch (err) {
        this._reportError('client', err);
      }
    }
    if (this._state !== 'joined') return;
    if (this._slotsOn && this.grants.subscribe && this._slotTransceivers.length === 0) {
      for (const [kind, n] of [['audio', this.slots.audio], ['video', this.slots.video]]) {
        for (let k = 0; k < n; k++) {
          // An idle per-track m-line (after a move to slots) becomes a slot: m-lines are
          // reused, never rejected.
          let t = this._idleTransceiver(this._recvTransceivers, kind);
          if (t) {
            this._recvTransceivers.delete(t);
            t.direction = 'recvonly';
          } else {
            t = pc.addTransceiver(kind, { direction: 'recvonly' });
            if (kind === 'video' && this.dependencyDescriptor) negotiateDependencyDescriptor(t);
          }
          this._slotTransceivers.push(t);
        }
      }
    }
    if (pc.getTransceivers().length === 0) return; // nothing to negotiate yet (a viewer in an empty room)

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);

    const publish = [];
    const subscribe = [];
    for (const [t, source] of this._sendTransceivers) {
      if (source == null || t.mid == null) continue;
      const entry = { mid: t.mid, source };
      // Only the layers the offer really sends (each must be an `a=rid` of the m-line).
      const layers = this._sendLayers.get(t);
      if (layers) {
        const offered = sentRids(pc.localDescription.sdp, t.mid);
        const sent = layers.filter((rid) => offered.has(rid));
        if (sent.length > 1) entry.layers = sent;
      }
      publish.push(entry);
    }
    for (const [t, trackId] of this._recvTransceivers) {
      if (trackId != null && t.mid != null) subscribe.push({ mid: t.mid, track_id: trackId });
    }

    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this._answerWaiter && this._answerWaiter.resolve === wrappedResolve) {
          this._answerWaiter = null;
          this._answersToSkip++;
          reject(new CallError('timeout', 'no answer to offer'));
        }
      }, ANSWER_TIMEOUT_MS);
      const wrappedResolve = (m) => { clearTimeout(timer); resolve(m); };
      this._answerWaiter = {
        resolve: wrappedResolve,
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });
    let answer;
    try {
      const message = { type: 'offer', sdp: pc.localDescription.sdp, publish, subscribe };
      if (this._slotTransceivers.length) message.slots = this._slotTransceivers.map((t) => t.mid);
      this._send(message);
      answer = await answered;
    } catch (err) {
      this._answerWaiter = null;
      if (pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch((e) => console.warn('call: rollback failed', e));
      }
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    if (this.timings.firstAnswer == null) this.timings.firstAnswer = performance.now();
    this._watchConnect();

    const published = new Map((answer.published || []).map((p) => [String(p.mid), p.track_id]));
    for (const [t, source] of this._sendTransceivers) {
      const local = source != null ? this.localTracks.get(source) : null;
      if (!local || t.mid == null || t.sender.track !== local.track) continue;
      local.mid = t.mid;
      const trackId = published.get(t.mid);
      if (trackId != null && trackId !== local.track_id) {
        local.track_id = trackId;
        // A mute wished before the track had an id.
        if (!local.track.enabled) this._send({ type: 'mute', track_id: trackId, muted: true });
      }
    }
    this._announceRemoteTracks();
    // The layers the server asked for, on the encodings as this answer left them.
    this._applyLayers();
  }

  _onAnswer(msg) {
    if (this._answersToSkip > 0) {
      this._answersToSkip--;
      console.warn('call: dropping a late answer');
      return;
    }
    if (!this._answerWaiter) {
      this._reportError('protocol', new Error('answer without an offer in flight'));
      return;
    }
    this._answerWaiter.resolve(msg);
    this._answerWaiter = null;
  }

  // ---------------------------------------------------------------- teardown, events

  _assertJoined() {
    if (this._state !== 'joined') throw new CallError('bad_state', `not joined (state ${this._state})`);
  }

  _teardown(reason, closeEvent) {
    if (this._state === 'closed') return;
    clearTimeout(this._connectTimer);
    const wasJoined = this._state === 'joined';
    this._state = 'closed';
    this._leaving = true;
    // `left` from the server, or our own leave(): the participant is out of the call.
    if (wasJoined && this._leftReason) this._emit('left', { reason: this._leftReason });
    for (const local of this.localTracks.values()) local.track.stop();
    if (this.pc) this.pc.close();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'leaving');
    if (this._answerWaiter) {
      this._answerWaiter.reject(new CallError('closed', 'the call ended'));
      this._answerWaiter = null;
    }
    this._emit('closed', {
      reason, wasJoined,
      code: closeEvent ? closeEvent.code : null,
    });
  }

  _reportError(code, err) {
    const message = err && err.message ? err.message : String(err);
    console.warn(`call: ${code}: ${message}`);
    this._emit('error', { code, message, error: err });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
