// End-to-end encryption of a call, on by default (docs/e2ee.md): the frame transforms on
// every sender and receiver (in ./e2ee-worker.js), this participant's sender keys, and
// the key exchange with the others (./e2ee-keys.js, or keys the application supplies).
// A call's `e2ee` is an instance of E2ee; its status is public:
//
//   call.e2ee.enabled        whether frames are encrypted
//   call.e2ee.transform      'script' (RTCRtpScriptTransform) or 'streams' (createEncodedStreams)
//   call.e2ee.generation     the generation of this participant's sender key (a fresh
//                            random key each time someone leaves), and .step, its ratchet
//                            step (each time someone joins); .kid, the SFrame KID
//   call.e2ee.safetyCode     twelve digits, the same for everyone in the call when all hold
//                            the same room secret and nobody swapped keys
//   call.e2ee.stats          {encrypted, decrypted, undecryptable, noKey, authFailed, ...}
//   call.e2ee.peers          Map participant_id -> 'waiting' | 'verified' | 'keyed' |
//                            'failed' (its hello did not verify: another secret, or a
//                            swapped key) | 'plaintext' (it does not encrypt)
//   call.addEventListener('e2ee', ...)   whenever one of those changes
//
// With `new Call({ e2ee: { external: true } })` the application brings its own keys:
// `call.e2ee.setSendKey(bytes)` (returns the KID, to hand to the others with the key) and
// `call.e2ee.addKey(kid, bytes)` for each key of the others it received.

import { KeyExchange } from './e2ee-keys.js';
import { kidSender, makeKid } from './e2ee-layout.js';
import { ratchet } from './sframe.js';

/** How long after a leave the senders wait before switching to the fresh key, giving it
 * time to reach everyone (the switch is due within 2 s of the leave). */
const REKEY_DEBOUNCE_MS = 100;
const SWITCH_DELAY_MS = 600;
const KEY_BYTES = 32;

export class E2ee {
  /**
   * @param {object} call the Call
   * @param {boolean|object} options false: off (the token must allow plaintext); true or
   *   {secret, external, transform: 'script'|'streams', test}
   */
  constructor(call, options) {
    const o = options === false ? null : (options === true || options == null ? {} : options);
    this._call = call;
    this.enabled = !!o;
    this.secret = o ? String(o.secret || '') : '';
    this.external = !!(o && o.external);
    this.test = !!(o && o.test);
    this.transform = o ? chooseTransform(o.transform) : null;
    if (this.enabled && !this.transform) {
      throw new Error('end-to-end encryption needs encoded transforms, which this browser lacks');
    }
    this.generation = -1;
    this.step = 0;
    this.kid = null;
    this.safetyCode = null;
    this.stats = { encrypted: 0, decrypted: 0, undecryptable: 0 };
    this.peers = new Map();
    /** Test mode: hashes of the frames sealed here, {plain, sealed} (Sets of hex). */
    this.hashes = { plain: new Set(), sealed: new Set() };
    /** Test mode: every base key this participant used or was given, [{kid, key}]. */
    this._testKeys = [];
    this._attached = new WeakMap(); // sender or receiver -> options
    this._receiverIds = 0;
    this._base = null;
    this._pending = null; // {generation, base} announced, not yet used
    this._missing = new Set(); // senders whose frames came before their key
    this._worker = null;
    // Key changes, one at a time: a ratchet finishes before the newcomer is sent the key.
    this._serial = Promise.resolve();
    if (this.enabled) this._startWorker();
  }

  /** What RTCPeerConnection needs for the transform chosen. */
  peerConnectionConfig() {
    return this.transform === 'streams' ? { encodedInsertableStreams: true } : {};
  }

  /** Puts the sending transform on a transceiver, once, before any frame is sent. */
  attachSender(transceiver, kind) {
    if (!this.enabled) return;
    this._attach(transceiver.sender, { side: 'send', kind, id: `s${++this._receiverIds}` });
  }

  /** Puts the receiving transform on a transceiver, once, before any frame arrives. */
  attachReceiver(transceiver, kind) {
    if (!this.enabled) return;
    this._attach(transceiver.receiver, { side: 'receive', kind, id: `r${++this._receiverIds}` });
  }

  /**
   * What the receiver of `transceiver` carries now comes from `participant` (or nobody):
   * frames of a participant that does not encrypt pass through unopened.
   */
  receiving(transceiver, participant) {
    const options = this._attached.get(transceiver.receiver);
    if (!options) return;
    const plaintext = participant != null && this.peers.get(participant) === 'plaintext';
    if (options.plaintext === plaintext) return;
    options.plaintext = plaintext;
    this._worker.postMessage({ op: 'plaintext', id: options.id, on: plaintext });
  }

  /** Frames opened so far on the receiver of `transceiver` (null: no transform on it). */
  openedOn(transceiver) {
    const options = this._attached.get(transceiver.receiver);
    if (!options) return null;
    return (this.stats.openedBy && this.stats.openedBy[options.id]) || 0;
  }

  /** The payload types of an SDP's video codecs, for the worker's clear-byte rules. */
  onDescription(sdp) {
    if (!this.enabled) return;
    const codecs = {};
    for (const m of String(sdp).matchAll(/^a=rtpmap:(\d+) ([\w-]+)\//gm)) codecs[m[1]] = m[2].toUpperCase();
    this._worker.postMessage({ op: 'codecs', codecs });
  }

  /** A new session (`joined`): a fresh exchange, a fresh sender key, greetings to all. */
  onJoined(joined) {
    if (!this.enabled) return;
    // The last session's keys go: its participant ids may be given to others now (a
    // rejoin on another server or cluster node, which counts from 1 again).
    this._worker.postMessage({ op: 'drop_all_keys' });
    this.peers = new Map();
    this._self = joined.participant_id;
    this._viewer = !!(joined.grants && joined.grants.role === 'viewer');
    this._publishes = !!(joined.grants && (joined.grants.publish_audio || joined.grants.publish_video || joined.grants.publish_screen));
    if (this.external) return;
    this._keys = new KeyExchange({
      secret: this.secret,
      room: joined.room,
      self: joined.participant_id,
      send: (to, data) => this._call._send({ type: 'e2ee', to, data }),
      onKey: (sender, kid, key) => this._onKey(sender, kid, key),
      onPeer: (peer, status) => this._setPeer(peer, status),
    });
    this.generation = -1;
    this._newSendKey();
    for (const p of joined.participants || []) this._meet(p, false);
    this._updateSafetyCode();
  }

  onParticipantJoined(p) {
    if (!this.enabled) return;
    this._meet(p, true);
  }

  onParticipantLeft(id) {
    if (!this.enabled) return;
    this.peers.delete(id);
    this._worker.postMessage({ op: 'drop_keys', sender: id });
    if (this.external || !this._keys) return;
    this._keys.forget(id);
    this._updateSafetyCode();
    // Whoever left holds our key: a fresh one, to everyone else, used within 2 s.
    if (this._publishes) {
      clearTimeout(this._rekeyTimer);
      this._rekeyTimer = setTimeout(() => this._queue(() => this._rekey()), REKEY_DEBOUNCE_MS);
    }
  }

  /** An `e2ee` message the server relayed. */
  async onMessage(msg) {
    if (!this.enabled || !this._keys) return;
    const keys = this._keys;
    const verified = await keys.receive(Number(msg.from), String(msg.data ?? ''));
    if (verified != null && keys === this._keys) {
      this._updateSafetyCode();
      if (this._publishes) this._queue(() => this._sendKeysTo(verified));
    }
  }

  /**
   * The application's own sender key (with `external`), from `joined` on: returns its KID
   * (a BigInt), to give the others with the key. Until the first, nothing is sent.
   */
  setSendKey(key) {
    if (!this.external) throw new Error('setSendKey() needs e2ee.external');
    if (this._self == null) throw new Error('setSendKey() needs the call joined');
    const bytes = toBytes(key);
    this.generation = (this.generation + 1) & 0xff;
    this.step = 0;
    this._base = bytes;
    this._useSendKey();
    return this.kid;
  }

  /** A key of another participant, for its KID (with `external`). */
  addKey(kid, key) {
    if (!this.external) throw new Error('addKey() needs e2ee.external');
    this._onKey(kidSender(BigInt(kid)), BigInt(kid), toBytes(key));
  }

  /**
   * Test mode only: the base keys this participant sent with or received, as
   * [{kid (decimal string), key (base64), own}], to show what a participant could decrypt.
   */
  testKeys() {
    if (!this.test) throw new Error('testKeys() needs e2ee.test');
    return this._testKeys.map(({ kid, key, own }) => ({ kid: String(kid), key: btoa(String.fromCharCode(...key)), own }));
  }

  /**
   * Test mode only: from now (`on`) the worker hashes every frame it seals, before and
   * after, into `hashes` (reported every half second).
   */
  recordHashes(on) {
    if (!this.test) throw new Error('recordHashes() needs e2ee.test');
    this._worker.postMessage({ op: 'record', on: !!on });
  }

  close() {
    clearTimeout(this._rekeyTimer);
    clearTimeout(this._switchTimer);
    if (this._worker) this._worker.terminate();
    this._worker = null;
  }

  // ---------------------------------------------------------------- private

  _startWorker() {
    this._worker = new Worker(new URL('./e2ee-worker.js', import.meta.url), { type: 'module', name: 'e2ee' });
    this._worker.postMessage({ op: 'init', test: this.test });
    this._worker.onmessage = ({ data }) => {
      if (data.op === 'stats') {
        this.stats = data.stats;
      } else if (data.op === 'missing_key') {
        const sender = Number(data.sender);
        this._missing.add(sender);
        // Its key may have been lost on the way: ask again (at most once a second).
        if (this._keys && this.peers.has(sender)) this._keys.want(sender);
      } else if (data.op === 'hashes') {
        for (const h of data.plain) this.hashes.plain.add(h);
        for (const h of data.sealed) this.hashes.sealed.add(h);
      }
    };
  }

  _attach(target, options) {
    if (this._attached.has(target)) return;
    this._attached.set(target, options);
    if (this.transform === 'script') {
      // eslint-disable-next-line no-undef
      target.transform = new RTCRtpScriptTransform(this._worker, options);
    } else {
      const { readable, writable } = target.createEncodedStreams();
      this._worker.postMessage({ op: 'stream', options, readable, writable }, [readable, writable]);
    }
  }

  /** A participant we learn of: greeted, and ratcheted past if it will receive our media. */
  _meet(p, isNew) {
    const id = p.participant_id;
    if (id === this._self) return;
    if (p.e2ee === false) {
      this._setPeer(id, 'plaintext');
    } else if (!this.peers.has(id)) {
      this._setPeer(id, 'waiting');
    }
    if (this.external) return;
    // A newcomer must not decrypt what was sent before it came: ratchet forward first.
    if (isNew && this._publishes) this._queue(() => this._ratchet());
    this._keys.greet(id);
  }

  _queue(work) {
    this._serial = this._serial.then(work).catch((err) => console.warn('e2ee:', err));
  }

  _setPeer(id, status) {
    if (this.peers.get(id) === status) return;
    if (this.peers.get(id) === 'keyed' && status === 'verified') return;
    this.peers.set(id, status);
    this._changed();
  }

  async _ratchet() {
    if (this.step >= 0xff) {
      this._rekey();
      return;
    }
    const next = await ratchet(this._base);
    this.step += 1;
    this._base = next;
    this._useSendKey();
  }

  _newSendKey() {
    this.generation = (this.generation + 1) & 0xff;
    this.step = 0;
    this._base = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
    this._useSendKey();
  }

  /** A fresh key after a leave: sent to everyone, used once it had time to arrive. */
  _rekey() {
    // A leave while an earlier fresh key still waits gets a generation of its own: the
    // receivers hold that earlier key under the earlier number.
    const generation = ((this._pending ? this._pending.generation : this.generation) + 1) & 0xff;
    const base = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
    this._pending = { generation, base };
    for (const [id, status] of this.peers) {
      if (status === 'verified' || status === 'keyed') this._sendPending(id);
    }
    clearTimeout(this._switchTimer);
    // Through the queue, like ratchets: a ratchet in progress must not write its step
    // of the old key over the new generation (frames would go out under a KID whose key
    // nobody has).
    this._switchTimer = setTimeout(() => this._queue(() => {
      if (this._pending?.base !== base) return;
      this._pending = null;
      this.generation = generation;
      this.step = 0;
      this._base = base;
      this._useSendKey();
      // Receivers that dropped frames while the key travelled decode again from here.
      for (const local of this._call.localTracks.values()) {
        if (local.track_id != null) this._call._send({ type: 'keyframe', track_id: local.track_id });
      }
    }), SWITCH_DELAY_MS);
  }

  _useSendKey() {
    this.kid = makeKid(this._self, this.generation, this.step);
    if (this.test) this._testKeys.push({ kid: this.kid, key: this._base, own: true });
    this._worker.postMessage({ op: 'send_key', kid: String(this.kid), key: this._base });
    this._changed();
  }

  async _sendKeysTo(peer) {
    if (!this._base) return;
    await this._keys.sendKey(peer, this.kid, this._base);
    await this._sendPending(peer);
  }

  async _sendPending(peer) {
    if (!this._pending) return;
    await this._keys.sendKey(peer, makeKid(this._self, this._pending.generation, 0), this._pending.base);
  }

  _onKey(sender, kid, key) {
    if (this.test) this._testKeys.push({ kid, key, own: false });
    this._worker.postMessage({ op: 'add_key', kid: String(kid), key });
    const first = this.peers.get(sender) !== 'keyed';
    if (this.peers.get(sender) !== 'plaintext') this._setPeer(sender, 'keyed');
    // Its first key, or frames of it were dropped for want of this key: ask for a
    // keyframe to decode from (what came before the key was dropped, keyframe included).
    if (this._missing.delete(sender) || first) {
      for (const t of this._call.remoteTracks.values()) {
        if (t.participant_id === sender && t.kind === 'video') {
          this._call._send({ type: 'keyframe', track_id: t.track_id });
        }
      }
    }
  }

  async _updateSafetyCode() {
    if (!this._keys) return;
    const keys = this._keys;
    // Viewers are left out: a broadcast's viewers do not all know each other.
    const members = [...(this._viewer ? [] : [this._self]), ...[...this._call.participants.values()]
      .filter((p) => p.role !== 'viewer').map((p) => p.participant_id)];
    const code = await keys.safetyCode(members);
    if (keys !== this._keys || code === this.safetyCode) return;
    this.safetyCode = code;
    this._changed();
  }

  _changed() {
    this._call._emit('e2ee', {
      enabled: this.enabled, generation: this.generation, step: this.step,
      safetyCode: this.safetyCode, peers: new Map(this.peers),
    });
  }
}

/** `script` where RTCRtpScriptTransform exists, else `streams`; or the one asked for. */
function chooseTransform(wanted) {
  const script = typeof globalThis.RTCRtpScriptTransform === 'function';
  const streams = typeof globalThis.RTCRtpSender === 'function'
    && typeof RTCRtpSender.prototype.createEncodedStreams === 'function';
  if (wanted === 'script') return script ? 'script' : null;
  if (wanted === 'streams') return streams ? 'streams' : null;
  return script ? 'script' : (streams ? 'streams' : null);
}

function toBytes(key) {
  const bytes = key instanceof Uint8Array ? key : new Uint8Array(key);
  if (bytes.length < 16) throw new Error('a key has at least 16 bytes');
  return bytes;
}
