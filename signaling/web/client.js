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
// track_published, track, track_removed, track_muted, local_track, local_track_removed
// (`by: 'server'` when the server took it away), local_track_muted (an administrator
// muted it), grants (what this client may do changed: its group's policy),
// activespeakers {speakers}, layers {track_id, active} (what the server asked of one of
// this client's simulcast tracks), connection_state, transport_fallback, redirected
// {node, url} (a cluster node sent the join to the node that hosts the room), rejoining
// {reason} (`server_shutdown`: the server shut down with the call going on;
// `connection_lost`: it was lost; the call joins again by itself, and `joined` follows),
// error, left, closed.
//
// A cluster (docs/cluster.md): `url` may lead to any node; a join for a room another node
// hosts is redirected there (at most three times), and every rejoin starts again from
// `url`, so that a room re-placed after its node died is found where it lives now.
//
// Layout: this module holds the Call class, its state and public API; the work is done by
// the functions of ./client/, each taking the call: signaling.js (the WebSocket),
// negotiation.js (offers and answers), mlines.js (transceivers), publishing.js (local
// tracks, simulcast and SVC), layers.js (the server's `layers`), room.js (participants and
// remote tracks), moderation.js (what the server imposes on the local tracks), slots.js, view.js, fallback.js (the peer connection, the rejoins of the
// TURN/TCP fallback and after a server shutdown),
// stats.js, error.js; e2ee.js (end-to-end encryption, with e2ee-keys.js, e2ee-layout.js,
// sframe.js and the worker e2ee-worker.js) and audio-watch.js. They report back through
// _emit, _reportError and _teardown.

import { E2ee } from './client/e2ee.js';
import { CallError } from './client/error.js';
import { rejoinAfterShutdown } from './client/fallback.js';
import { onLayers } from './client/layers.js';
import { onGrants } from './client/moderation.js';
import { negotiate, onAnswer, rejectOffer } from './client/negotiation.js';
import {
  captureMedia, setSourceMuted, startMedia, startScreenShare, stopScreenShare,
} from './client/publishing.js';
import {
  onActiveSpeakers, onJoined, onParticipantJoined, onParticipantLeft, onResync, onTrackMuted,
  onTrackPublished, onTrackUnpublished,
} from './client/room.js';
import {
  connectAndJoin, defaultUrl, onJoinReply, onServerError, send, sendLeave, tokenGrants,
} from './client/signaling.js';
import { onSlots, slotsFromStart, slotsOption } from './client/slots.js';
import { inboundStats, outboundStats, transportInUse } from './client/stats.js';
import { DEFAULT_VIEW_KEY, parseView, sendView } from './client/view.js';

export { CallError };

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
   * @param {boolean} [opts.rejoinOnShutdown] join again when the server shuts down with
   *   the call going on, or is lost (its socket closes without a word, or the media
   *   connection, after it had worked, fails or stays disconnected for 3 s) (default true;
   *   `false`: the call ends, `left` with reason `server_shutdown`, or `closed`)
   * @param {boolean} [opts.simulcast] send the camera as three layers (default true)
   * @param {string} [opts.svc] send the camera as one stream of layers instead (SVC), in
   *   this scalability mode (e.g. `L3T3_KEY`: three spatial and three temporal layers),
   *   encoded with `opts.codec`
   * @param {string} [opts.codec] the camera's codec: with `svc`, `VP9` (default) or `AV1`;
   *   without, any the browser sends (`VP8`, `VP9`, `AV1`, `H264`), else its own choice
   * @param {boolean} [opts.dependencyDescriptor] negotiate the dependency descriptor on
   *   every video transceiver (needed to receive AV1 SVC in Chrome; default false)
   * @param {boolean} [opts.audience] as a broadcast's viewer, hear of the other viewers too
   *   (default false: a viewer hears only of presenters and participants)
   * @param {{audio:number, video:number, from?:number}} [opts.slots] receive on this many
   *   slot m-lines the server fills, instead of one per track (for large rooms); with
   *   `from`, only once that many others are in the call
   * @param {boolean|{secret?:string, external?:boolean, transform?:string, test?:boolean}} [opts.e2ee]
   *   end-to-end encryption (./client/e2ee.js, docs/e2ee.md), on unless `false` (which
   *   the server accepts only from a token with the `plaintext` grant): `secret`, the room
   *   secret that authenticates the key exchange; `external`, keys come from the
   *   application; `transform`, force `script` or `streams`; `test`, record frame hashes
   */
  constructor({
    url, token, iceServers = [], iceTransportPolicy = 'all', fallback = true,
    rejoinOnShutdown = true, simulcast = true,
    svc = null, codec = null, dependencyDescriptor = false, audience = false, slots = null,
    e2ee = true,
  } = {}) {
    super();
    /** End-to-end encryption: its status and keys (./client/e2ee.js). */
    this.e2ee = new E2ee(this, e2ee);
    this.url = url || defaultUrl();
    this.token = token;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.fallback = fallback;
    this.rejoinOnShutdown = rejoinOnShutdown;
    /** Whether the camera is sent as simulcast layers (set before join). */
    this.simulcast = !!simulcast;
    /** The camera's SVC scalability mode, or null; its codec, or null for the browser's
     * choice (set before join). */
    this.svc = svc || null;
    this.codec = codec ? String(codec).toUpperCase() : (this.svc ? 'VP9' : null);
    /** Whether video transceivers negotiate the dependency descriptor. */
    this.dependencyDescriptor = !!dependencyDescriptor;
    /** A viewer that asks to hear of the rest of the audience. */
    this.audience = !!audience;
    /** Slot m-lines to receive on ({audio, video}), or null: one m-line per track. */
    this.slots = slotsOption(slots);
    /** Whether the call receives on slots now. */
    this._slotsOn = slotsFromStart(this);
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
    this._localOps = []; // the same for local tracks: applied first, see offerOnce
    this._wantNegotiation = false;
    this._negotiating = null; // Promise of the running negotiation loop
    // Every transceiver of the connection is in exactly one of these two maps, for the
    // call's lifetime (or, rarely, retired: see below); the value is null while it is
    // idle (`inactive`, reusable).
    this._sendTransceivers = new Map(); // RTCRtpTransceiver -> source | null
    this._recvTransceivers = new Map(); // RTCRtpTransceiver -> track_id | null
    // Receiving m-lines taken out of use for good (./client/audio-watch.js): inactive.
    this._retiredTransceivers = new Set();
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
    // completion having reset the transaction id both were given. (e2e/simulcast.test.mjs
    // awaits it before a setParameters of its own.)
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
    const capture = captureMedia(this, {
      audio: grants.publish_audio ? audio || false : false,
      video: grants.publish_video ? video || false : false,
    });
    try {
      onJoined(this, await connectAndJoin(this));
      await startMedia(this, await capture);
      await negotiate(this);
    } catch (err) {
      capture.then((tracks) => tracks.forEach((t) => t.stop()));
      this._teardown(err.code === 'unauthorized' ? 'unauthorized' : 'error');
      throw err;
    }
    return this;
  }

  /** Mutes or unmutes the microphone (track.enabled and `mute` to the server). */
  setMicrophoneMuted(muted) {
    return setSourceMuted(this, 'microphone', !!muted);
  }

  /** Turns the camera on or off (track.enabled and `mute` to the server). */
  setCameraEnabled(enabled) {
    return setSourceMuted(this, 'camera', !enabled);
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
    const view = parseView({ pinned, quality });
    this._pinned = view.pinned;
    this._quality = view.quality;
    sendView(this);
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
  startScreenShare() {
    return startScreenShare(this);
  }

  /** Stops sharing the screen. */
  stopScreenShare() {
    return stopScreenShare(this);
  }

  /** Leaves the call: sends `leave`, waits (bounded) for the server, closes everything. */
  async leave() {
    if (this._state === 'closed') return;
    this._leaving = true;
    this._leftReason = this._leftReason || 'left';
    if (this.ws && this.ws.readyState === WebSocket.OPEN) await sendLeave(this);
    this._teardown('left');
  }

  /**
   * Inbound RTP statistics of the subscribed tracks:
   * [{track_id, kind, source, participant_id, mid, framesDecoded, bytesReceived,
   *   packetsReceived, packetsLost, ssrc, frameWidth, frameHeight, totalSamplesReceived,
   *   totalAudioEnergy, concealedSamples (audio), codec (its MIME type)}]
   * Chromium reports an inbound stream only once its first packet arrived.
   */
  inboundStats() {
    return inboundStats(this);
  }

  /**
   * Outbound RTP statistics of the local tracks, one entry per RTP stream (three for a
   * simulcast camera): [{source, track_id, kind, mid, rid, active, frameWidth,
   * frameHeight, framesEncoded, framesPerSecond, bytesSent, packetsSent, targetBitrate,
   * qualityLimitationReason, codec, scalabilityMode}]. `rid` is null for a single stream;
   * `active` is whether the encoding is on (RTCRtpEncodingParameters.active).
   */
  outboundStats() {
    return outboundStats(this);
  }

  /**
   * How media travels now, from the selected ICE candidate pair: `UDP`, `TCP` (ICE-TCP),
   * `TURN/UDP`, `TURN/TCP` or `TURN/TLS` (how this client reaches the relay); null before
   * a pair is selected.
   */
  transportInUse() {
    return transportInUse(this);
  }

  // ---------------------------------------------------------------- for ./client/

  /**
   * One server message, to the module that handles its type. Called through the instance:
   * e2e/lib.mjs wraps `call._dispatch` to record what the server sent.
   */
  _dispatch(msg) {
    switch (msg.type) {
      case 'joined':
      case 'redirect':
        return onJoinReply(this, msg);
      case 'error':
        return onServerError(this, msg);
      case 'answer':
        return onAnswer(this, msg);
      case 'participant_joined':
        return onParticipantJoined(this, msg);
      case 'participant_left':
        return onParticipantLeft(this, msg);
      case 'track_published':
        return onTrackPublished(this, msg);
      case 'track_unpublished':
        return onTrackUnpublished(this, msg);
      case 'track_muted':
        return onTrackMuted(this, msg);
      case 'grants':
        return onGrants(this, msg);
      case 'active_speakers':
        return onActiveSpeakers(this, msg);
      case 'layers':
        return onLayers(this, msg);
      case 'slots':
        return onSlots(this, msg);
      case 'resync':
        return onResync(this, msg);
      case 'e2ee':
        return this.e2ee.onMessage(msg);
      case 'left':
        if (msg.reason === 'server_shutdown' && this.rejoinOnShutdown && this._state === 'joined'
          && !this._rejoining) {
          rejoinAfterShutdown(this);
          return;
        }
        this._leftReason = msg.reason || 'left';
        this._teardown(this._leftReason);
        return;
      default:
        // Newer servers may send more; ignore what we do not know.
        console.warn('call: ignoring unknown message type', msg.type);
    }
  }

  _assertJoined() {
    if (this._state !== 'joined') throw new CallError('bad_state', `not joined (state ${this._state})`);
  }

  /** Ends the call for good: stops local tracks, closes the connection and the socket. */
  _teardown(reason, closeEvent) {
    if (this._state === 'closed') return;
    clearTimeout(this._connectTimer);
    clearTimeout(this._lossTimer);
    const wasJoined = this._state === 'joined';
    this._state = 'closed';
    this._leaving = true;
    // `left` from the server, or our own leave(): the participant is out of the call.
    if (wasJoined && this._leftReason) this._emit('left', { reason: this._leftReason });
    for (const local of this.localTracks.values()) local.track.stop();
    if (this.pc) this.pc.close();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'leaving');
    rejectOffer(this, new CallError('closed', 'the call ended'));
    this.e2ee.close();
    this._emit('closed', {
      reason, wasJoined,
      code: closeEvent ? closeEvent.code : null,
    });
  }

  /** Sends a message if the socket is open; a closed one drops it (the call is ending). */
  _send(msg) {
    try {
      send(this, msg);
    } catch (err) {
      console.warn(`call: ${err.message}`);
    }
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
