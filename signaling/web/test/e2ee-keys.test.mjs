// The built-in key exchange (client/e2ee-keys.js) between participants wired through an
// in-memory relay that plays the server: honest, or swapping public keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { KeyExchange } from '../client/e2ee-keys.js';
import { makeKid } from '../client/e2ee-layout.js';

/** Participants `ids` in one room; `tamper(from, to, data)` may rewrite relayed messages. */
function room(ids, { secrets = {}, tamper = (f, t, d) => d } = {}) {
  const queue = [];
  const got = new Map(ids.map((id) => [id, []])); // keys received: {sender, kid, key}
  const peers = new Map(ids.map((id) => [id, new Map()]));
  const members = new Map();
  for (const id of ids) {
    members.set(id, new KeyExchange({
      secret: secrets[id] ?? 'the room secret',
      room: 'r1',
      self: id,
      send: (to, data) => queue.push({ from: id, to, data: tamper(id, to, data) }),
      onKey: (sender, kid, key) => got.get(id).push({ sender, kid, key }),
      onPeer: (peer, status) => peers.get(id).set(peer, status),
    }));
  }
  /** Delivers until quiet; a verified hello is answered with `key` (as e2ee.js does). */
  const settle = async (keyOf) => {
    for (let rounds = 0; rounds < 50; rounds++) {
      // Let greetings and key sends (async) queue their messages.
      await new Promise((r) => setTimeout(r, 5));
      if (queue.length === 0) return;
      while (queue.length) {
        const m = queue.shift();
        const verified = await members.get(m.to).receive(m.from, m.data);
        if (verified != null && keyOf) {
          const { kid, key } = keyOf(m.to);
          await members.get(m.to).sendKey(verified, kid, key);
        }
      }
    }
    throw new Error('the exchange did not settle');
  };
  return { members, got, peers, queue, settle };
}

const keyOf = (id) => ({ kid: makeKid(id, 0, 0), key: new Uint8Array(32).fill(id) });

test('three with one secret verify each other, exchange keys and agree on the code', async () => {
  const r = room([1, 2, 3]);
  for (const [id, m] of r.members) for (const other of r.members.keys()) if (other !== id) await m.greet(other);
  await r.settle(keyOf);
  for (const [id, got] of r.got) {
    const senders = got.map((g) => g.sender).sort();
    assert.deepEqual(senders, [1, 2, 3].filter((x) => x !== id), `${id} has the others' keys`);
    for (const g of got) assert.deepEqual(g.key, keyOf(g.sender).key);
    assert.deepEqual([...r.peers.get(id).values()], ['verified', 'verified']);
  }
  const codes = await Promise.all([...r.members.values()].map((m) => m.safetyCode([1, 2, 3])));
  assert.equal(new Set(codes).size, 1);
  assert.match(codes[0], /^\d{4} \d{4} \d{4}$/);
});

test('another secret verifies nobody and receives no key', async () => {
  const r = room([1, 2, 3], { secrets: { 3: 'a guess' } });
  for (const [id, m] of r.members) for (const other of r.members.keys()) if (other !== id) await m.greet(other);
  await r.settle(keyOf);
  assert.deepEqual(r.got.get(3), []);
  assert.ok(r.got.get(1).every((g) => g.sender !== 3));
  assert.equal(r.peers.get(1).get(3), 'failed');
  assert.equal(r.peers.get(3).get(1), 'failed');
  const [c1, c3] = await Promise.all([r.members.get(1).safetyCode([1, 2, 3]), r.members.get(3).safetyCode([1, 2, 3])]);
  assert.notEqual(c1, c3);
});

test('a server that swaps public keys is caught: no key goes through it', async () => {
  // The "server" answers each hello with a public key of its own making.
  const { subtle } = globalThis.crypto;
  const mine = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  const forged = Buffer.from(await subtle.exportKey('raw', mine.publicKey)).toString('base64');
  const tamper = (from, to, data) => {
    const msg = JSON.parse(data);
    if (msg.t === 'hello') msg.pub = forged;
    return JSON.stringify(msg);
  };
  const r = room([1, 2], { tamper });
  await r.members.get(1).greet(2);
  await r.members.get(2).greet(1);
  await r.settle(keyOf);
  assert.deepEqual(r.got.get(1), []);
  assert.deepEqual(r.got.get(2), []);
  assert.equal(r.peers.get(1).get(2), 'failed');
  assert.equal(r.peers.get(2).get(1), 'failed');
});

test('a key naming another sender in its KID is ignored', async () => {
  const r = room([1, 2, 3]);
  for (const [id, m] of r.members) for (const other of r.members.keys()) if (other !== id) await m.greet(other);
  await r.settle(null);
  // 3 tries to hand 1 a key for 2's KID.
  await r.members.get(3).sendKey(1, makeKid(2, 0, 0), new Uint8Array(32).fill(9));
  await r.settle(null);
  assert.deepEqual(r.got.get(1), []);
  // Its own KID goes through.
  await r.members.get(3).sendKey(1, makeKid(3, 1, 0), new Uint8Array(32).fill(9));
  await r.settle(null);
  assert.equal(r.got.get(1).length, 1);
  assert.equal(r.got.get(1)[0].kid, makeKid(3, 1, 0));
});

test('a lost hello and a lost key are repaired by repeats', async () => {
  // The server loses 1's first hello to 2, and 2's first key to 1.
  const lost = new Set(['1>2 hello', '2>1 key']);
  const tamper = (from, to, data) => {
    const name = `${from}>${to} ${JSON.parse(data).t}`;
    return lost.delete(name) ? null : data;
  };
  const r = room([1, 2], { tamper });
  const deliver = r.queue.push.bind(r.queue);
  r.queue.push = (m) => (m.data == null ? r.queue.length : deliver(m));
  await r.members.get(1).greet(2);
  await r.members.get(2).greet(1);
  await r.settle(keyOf);
  // 2's hello said it lacked 1's: 1 greeted again, 2 verified it and sent its key
  // (lost); 1 sent its own key, which arrived.
  assert.deepEqual(r.got.get(2).map((g) => g.sender), [1]);
  assert.deepEqual(r.got.get(1), [], 'the key to 1 was lost');
  // 1's frames from 2 come under a key it lacks: it asks, and 2 answers with the key.
  await r.members.get(1).want(2);
  await r.settle(keyOf);
  assert.deepEqual(r.got.get(1).map((g) => g.sender), [2]);
  assert.deepEqual(r.got.get(1)[0].key, keyOf(2).key);
  // Asking again at once sends nothing more: one `want` a second.
  await r.members.get(1).want(2);
  assert.equal(r.queue.length, 0);
  // And `want`s that come faster (a peer flooding them) are answered once a second.
  const answered = [];
  for (let i = 0; i < 5; i++) answered.push(await r.members.get(2).receive(1, JSON.stringify({ v: 1, t: 'want' })));
  assert.deepEqual(answered, [null, null, null, null, null], 'answered a second ago already');
});
