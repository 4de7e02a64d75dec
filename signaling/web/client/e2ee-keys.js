// The built-in key exchange of end-to-end encryption (docs/e2ee.md, "Keys"): each
// participant has an ephemeral ECDH P-256 key pair; a `hello` carries its public key,
// authenticated with the room secret; each pair of participants derives a pairwise key
// from ECDH and the room secret; a sender's SFrame base keys travel encrypted under it,
// one `e2ee` message per recipient, relayed by the server as an opaque string.
//
// The room secret is what the server does not know (the demo page takes it from the URL
// fragment). Without one (an empty secret) the exchange still encrypts against a passive
// server, and the safety code, the same for everyone in the call when nobody swapped
// public keys, is what catches an active one.
//
// A relayed message may be lost (the server drops relays rather than let them crowd out
// its own messages, or answers `server_busy`). The exchange repairs itself: a hello says
// whether its sender holds the recipient's hello (`have`), and is answered with another
// hello when it does not; `want` asks a verified peer for its current key again (e2ee.js
// sends it when frames come under a key it lacks). Repeats are at most one a second per
// peer. `have` is not authenticated: flipping it costs one more hello, nothing else.

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const VERSION = 1;
/** Least time between two repeats of a hello, or two `want`s, to one peer. */
const REPEAT_MS = 1000;

export const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
export const unb64 = (s) => Uint8Array.from(atob(String(s)), (c) => c.charCodeAt(0));

/** HKDF-SHA-256 of `ikm` to `bits` bits. */
async function hkdf(ikm, salt, info, bits) {
  const key = await subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: encoder.encode(salt), info: encoder.encode(info) },
    key, bits));
}

/**
 * One participant's side of the exchange in one session (a rejoin starts a new one).
 * Keys never leave it but as `e2ee` messages encrypted to one participant.
 */
export class KeyExchange {
  /**
   * @param {object} o
   * @param {string} o.secret the room secret ('' for none)
   * @param {string} o.room
   * @param {number} o.self this participant's id
   * @param {(to: number, data: string) => void} o.send an `e2ee` message to the server
   * @param {(sender: number, kid: bigint, key: Uint8Array) => void} o.onKey a sender's key
   * @param {(peer: number, status: string) => void} o.onPeer `verified` or `failed`
   */
  constructor({ secret, room, self, send, onKey, onPeer }) {
    this.room = room;
    this.self = self;
    this._secret = secret;
    this._send = send;
    this._onKey = onKey;
    this._onPeer = onPeer;
    /** Peers: id -> {pub: string (b64), pair: CryptoKey|null, status, helloSent, and when
     * a repeated hello, an answering one, a `want` and keys asked for by its `want` last
     * went to it (helloAt, answerAt, wantAt, givenAt; ms)} */
    this.peers = new Map();
    this._ready = this._init();
  }

  async _init() {
    const salt = `sfu e2ee v${VERSION} room ${this.room}`;
    const secret = encoder.encode(this._secret);
    this._auth = await subtle.importKey('raw', await hkdf(secret, salt, 'hello mac', 256),
      { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
    this._pairSalt = b64(await hkdf(secret, salt, 'pair salt', 256));
    this._secretId = b64(await hkdf(secret, salt, 'safety code', 128));
    this._pair = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
    this.pub = b64(await subtle.exportKey('raw', this._pair.publicKey));
  }

  /**
   * Greets a participant: sends it our public key, authenticated. Once, unless `again`
   * (a repeat, for a hello that may have been lost: at most one a second).
   */
  async greet(peer, again = false) {
    await this._ready;
    const p = this._peer(peer);
    if (p.helloSent && !(again && this._mayRepeat(p, 'helloAt'))) return;
    p.helloSent = true;
    p.helloAt = again ? Date.now() : 0;
    await this._hello(peer, p);
  }

  async _hello(peer, p) {
    const mac = await subtle.sign('HMAC', this._auth, encoder.encode(`hello|${this.self}|${peer}|${this.pub}`));
    this._send(peer, JSON.stringify({ v: VERSION, t: 'hello', pub: this.pub, mac: b64(mac), have: !!p.pair }));
  }

  /**
   * Asks `peer` for its current key again (its frames come under a key we lack): at most
   * one a second; a hello instead while we do not hold its own.
   */
  async want(peer) {
    await this._ready;
    const p = this._peer(peer);
    if (p.status === 'failed') return;
    if (!p.pair) {
      await this.greet(peer, true);
      return;
    }
    if (!this._mayRepeat(p, 'wantAt')) return;
    p.wantAt = Date.now();
    this._send(peer, JSON.stringify({ v: VERSION, t: 'want' }));
  }

  /** Forgets a participant that left. */
  forget(peer) {
    this.peers.delete(peer);
  }

  /**
   * Sends our current base key to `peer`, encrypted under our pairwise key; false when
   * there is none yet (it is sent once the peer's hello is verified, by the caller).
   */
  async sendKey(peer, kid, key) {
    await this._ready;
    const p = this.peers.get(peer);
    if (!p || !p.pair) return false;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const aad = encoder.encode(`key|${this.self}|${peer}|${kid}`);
    const ct = await subtle.encrypt({ name: 'AES-GCM', iv, additionalData: aad }, p.pair, key);
    this._send(peer, JSON.stringify({ v: VERSION, t: 'key', kid: String(kid), iv: b64(iv), ct: b64(ct) }));
    return true;
  }

  /**
   * An `e2ee` message from `from`. Returns the peer id whose hello was just verified (the
   * caller then sends it our key), or null.
   */
  async receive(from, data) {
    await this._ready;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return null;
    }
    if (!msg || msg.v !== VERSION) return null;
    if (msg.t === 'hello') return this._onHello(from, msg);
    if (msg.t === 'key') await this._onKeyMessage(from, msg);
    if (msg.t === 'want') {
      // A verified peer gets our keys again (at most once a second: a flood of `want`s
      // must not spend our own budget of `e2ee` messages); one whose hello we lack is
      // greeted, so that it answers with its own.
      const p = this.peers.get(from);
      if (p && p.pair) {
        if (!this._mayRepeat(p, 'givenAt')) return null;
        p.givenAt = Date.now();
        return from;
      }
      await this.greet(from, true);
    }
    return null;
  }

  /**
   * The safety code: the same for everyone in the call when all use the same secret and
   * nobody swapped public keys. Over the secret and the public keys of `members` (ids; our
   * own included) that we hold. Twelve digits in three groups.
   */
  async safetyCode(members) {
    await this._ready;
    const entries = [];
    for (const id of members) {
      const pub = id === this.self ? this.pub : this.peers.get(id)?.pub;
      if (pub && (id === this.self || this.peers.get(id).status === 'verified')) entries.push(`${id}:${pub}`);
    }
    entries.sort();
    const digest = new Uint8Array(await subtle.digest('SHA-256',
      encoder.encode(`${this._secretId}\n${entries.join('\n')}`)));
    let n = 0n;
    for (const b of digest.subarray(0, 8)) n = (n << 8n) | BigInt(b);
    const digits = String(n % 10n ** 12n).padStart(12, '0');
    return `${digits.slice(0, 4)} ${digits.slice(4, 8)} ${digits.slice(8)}`;
  }

  _peer(id) {
    let p = this.peers.get(id);
    if (!p) {
      p = {
        pub: null, pair: null, status: 'waiting', helloSent: false, helloAt: 0, answerAt: 0, wantAt: 0, givenAt: 0,
      };
      this.peers.set(id, p);
    }
    return p;
  }

  async _onHello(from, msg) {
    const p = this._peer(from);
    let ok = false;
    try {
      ok = await subtle.verify('HMAC', this._auth, unb64(msg.mac),
        encoder.encode(`hello|${from}|${this.self}|${msg.pub}`));
    } catch {
      ok = false;
    }
    if (!ok) {
      p.status = 'failed';
      this._onPeer(from, 'failed');
      return null;
    }
    if (p.pub === msg.pub && p.pair) {
      // A repeat: it did not get our hello, if it says so.
      if (msg.have === false) await this._answer(from, p);
      return null;
    }
    try {
      const theirs = await subtle.importKey('raw', unb64(msg.pub), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
      const shared = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: theirs }, this._pair.privateKey, 256));
      const [lo, hi] = from < this.self ? [from, this.self] : [this.self, from];
      const bits = await hkdf(shared, this._pairSalt, `pair ${lo} ${hi}`, 256);
      p.pair = await subtle.importKey('raw', bits, 'AES-GCM', false, ['encrypt', 'decrypt']);
      p.pub = msg.pub;
    } catch {
      p.status = 'failed';
      this._onPeer(from, 'failed');
      return null;
    }
    p.status = 'verified';
    this._onPeer(from, 'verified');
    // Answer a hello we have not answered (it joined after us, or we missed its greeting),
    // or whose sender did not get ours.
    if (!p.helloSent) await this.greet(from);
    else if (msg.have === false) await this._answer(from, p);
    return from;
  }

  /** Our hello again, to a peer whose hello says it lacks ours (at most one a second). */
  async _answer(peer, p) {
    if (!this._mayRepeat(p, 'answerAt')) return;
    p.answerAt = Date.now();
    await this._hello(peer, p);
  }

  _mayRepeat(p, field) {
    return Date.now() - p[field] >= REPEAT_MS;
  }

  async _onKeyMessage(from, msg) {
    const p = this.peers.get(from);
    if (!p || !p.pair) return;
    let kid;
    try {
      kid = BigInt(msg.kid);
      // A sender gives only its own keys: a KID names its sender (e2ee-layout.js).
      if (Number(kid >> 16n) !== from) return;
      const aad = encoder.encode(`key|${from}|${this.self}|${kid}`);
      const key = new Uint8Array(await subtle.decrypt(
        { name: 'AES-GCM', iv: unb64(msg.iv), additionalData: aad }, p.pair, unb64(msg.ct)));
      this._onKey(from, kid, key);
    } catch {
      // Not from whom it claims, or damaged: ignored.
    }
  }
}
