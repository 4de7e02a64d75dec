// End-to-end tests: real Chromium peers in a call through the SFU.
//
// Run through e2e/run.sh, which starts the server in network namespace sfu-srv and runs
//   ip netns exec sfu-cli node --test e2e/call.test.mjs
// Chromium gathers no ICE candidates on `lo`, hence the namespaces and their veth pair.
//
// Environment:
//   SFU_URL     the server's HTTP base URL (default http://10.77.0.1:8080)
//   SFU_SECRET  the server's token secret (default some-test-secret); tokens are signed here
//   CHROMIUM    the browser binary (default /usr/bin/chromium)
//   E2E_KEEP_PROFILES=1 keeps the browser profile directories
//   E2E_WEB_FROM_TREE=1 serves /, /client.js, /demo.js, /style.css to the browsers from
//               signaling/web/ instead of the server (which embeds them at build time), to
//               try client changes without rebuilding the server
//   E2E_IDLE_SECONDS  how long the lone viewer idles with no active m-line (default 24,
//               past the server's default participant timeout of 20 s)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import {
  steps,
  SFU_URL,
  RUN,
  ROOM,
  sleep,
  b64url,
  mintToken,
  tokenFor,
  waitFor,
  serverMetrics,
  serverProcCpuSeconds,
  median,
  contexts,
  profileDirs,
  Participant,
  wsScript,
  probePage,
  errorCode,
} from './lib.mjs';

/**
 * The sum of the samples of `name` on /metrics whose labels include `labels` (e.g.
 * 'direction="received"'); 0 when there are none.
 */
async function metricSum(name, labels = '') {
  const res = await fetch(`${SFU_URL}/metrics`);
  assert.equal(res.status, 200, 'GET /metrics');
  let sum = 0;
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([^ ]+)/.exec(line);
    if (m && m[1] === name && (m[2] || '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

// ------------------------------------------------------------------ the call

describe('a call through the SFU with Chromium peers', { timeout: 420000 }, () => {
  const alice = new Participant('Alice');
  const bob = new Participant('Bob');
  const carol = new Participant('Carol');
  const vera = new Participant('Vera'); // receive-only viewer
  const dave = new Participant('Dave');
  const erin = new Participant('Erin');
  const frank = new Participant('Frank'); // a fifth timed join
  const rita = new Participant('Rita'); // media through the TURN relay only
  const sam = new Participant('Sam');
  const everyone = [alice, bob, carol, vera, dave, erin, frank, rita, sam];
  const { step, failed } = steps({ timeout: 60000 });
  let callUp = false;

  const cam = (p) => [{ participant: p, source: 'microphone' }, { participant: p, source: 'camera' }];
  const camOf = (...ps) => ps.flatMap(cam);

  before(async () => {
    const res = await fetch(`${SFU_URL}/healthz`);
    assert.equal(res.status, 200, `server not healthy at ${SFU_URL}`);
  });

  after(async () => {
    const joins = [bob, carol, vera, dave, frank].map((p) => p.firstFrameMs).filter((v) => v != null);
    if (joins.length) {
      console.log(`E2E first-frame-ms median=${median(joins).toFixed(0)} joins=${joins.length} values=${joins.map((v) => v.toFixed(0)).join(',')}`);
    }
    if (failed()) {
      for (const p of everyone) {
        if (p.logs && p.logs.length) console.log(`--- browser console of ${p.name}:\n${p.logs.slice(-40).join('\n')}`);
      }
    }
    await Promise.all(contexts.map((c) => c.close().catch(() => {})));
    if (!process.env.E2E_KEEP_PROFILES) for (const d of profileDirs) rmSync(d, { recursive: true, force: true });
  });

  step('three participants each receive two audio and two video tracks, decoding', async () => {
    await alice.join(ROOM);
    await bob.join(ROOM, { expectVideoFrom: true });
    await carol.join(ROOM, { expectVideoFrom: true });
    await Promise.all([
      alice.expectMedia(camOf(bob, carol), 'Bob and Carol'),
      bob.expectMedia(camOf(alice, carol), 'Alice and Carol'),
      carol.expectMedia(camOf(alice, bob), 'Alice and Bob'),
    ]);
    // Everyone knows everyone, by the ids the server gave.
    for (const p of [alice, bob, carol]) {
      const st = await p.state();
      const others = st.participants.map((x) => x.participant_id).sort();
      const want = [alice, bob, carol].filter((x) => x !== p).map((x) => x.id).sort();
      assert.deepEqual(others, want, `${p.name}'s participants`);
    }
    callUp = true;
  }, 120000);

  step('media is protected with an AEAD GCM SRTP suite', async () => {
    for (const p of [alice, bob, carol]) {
      const transports = await p.transport();
      assert.equal(transports.length, 1, `${p.name}: one bundled transport, got ${JSON.stringify(transports)}`);
      assert.match(String(transports[0].srtpCipher), /GCM/, `${p.name}'s SRTP cipher: ${JSON.stringify(transports[0])}`);
      console.log(`E2E srtp participant=${p.name} srtpCipher=${transports[0].srtpCipher} dtlsCipher=${transports[0].dtlsCipher}`);
    }
  }, 30000, () => callUp);

  step('server CPU and memory during the three-party call (measured, not asserted)', async () => {
    const t0 = performance.now();
    const p0 = serverProcCpuSeconds();
    const m0 = await serverMetrics();
    await sleep(5000);
    const m1 = await serverMetrics();
    const p1 = serverProcCpuSeconds();
    const secs = (performance.now() - t0) / 1000;
    const cpu0 = m0.process_cpu_seconds_total;
    const cpu1 = m1.process_cpu_seconds_total;
    const rss = m1.process_resident_memory_bytes;
    const cpuPercent = cpu0 != null && cpu1 != null ? (((cpu1 - cpu0) / secs) * 100).toFixed(1) : 'n/a';
    const rssMb = rss != null ? (rss / (1024 * 1024)).toFixed(1) : 'n/a';
    // process_cpu_seconds_total counts whole seconds (prometheus crate): over 5 s its
    // resolution is 20 points; the /proc figure, when available, is to 1/100 s.
    const procPercent = p0 != null && p1 != null ? (((p1 - p0) / secs) * 100).toFixed(1) : 'n/a';
    console.log(`E2E server-3party cpu_percent=${cpuPercent} rss_mb=${rssMb} interval_s=${secs.toFixed(1)} `
      + `cpu_seconds=${cpu0}->${cpu1} proc_cpu_percent=${procPercent}`);
    // Still three in the call while measuring.
    for (const p of [alice, bob, carol]) assert.ok(await p.alive(), `${p.name} still in the call`);
  }, 30000, () => callUp);

  step('join and first-media histograms count the call; CPU time to the microsecond', async () => {
    // Alice, Bob and Carol: each media path up, each sent media and was sent some.
    const connected = await metricSum('sfu_join_connected_seconds_count');
    const received = await metricSum('sfu_first_media_seconds_count', 'direction="received"');
    const forwarded = await metricSum('sfu_first_media_seconds_count', 'direction="forwarded"');
    const sum = await metricSum('sfu_join_connected_seconds_sum');
    const within30s = await metricSum('sfu_join_connected_seconds_bucket', 'le="30"');
    const medianBound = await metricSum('sfu_join_connected_seconds_bucket', 'le="2"');
    console.log(`E2E join-histograms connected=${connected} mean_s=${(sum / connected).toFixed(3)} `
      + `within_2s=${medianBound} first_media_received=${received} first_media_forwarded=${forwarded}`);
    assert.ok(connected >= 3, `media paths up: ${connected}`);
    assert.ok(received >= 3, `first media received: ${received}`);
    assert.ok(forwarded >= 3, `first media forwarded: ${forwarded}`);
    assert.ok(sum > 0, 'joins take time');
    assert.equal(within30s, connected, 'every join up within 30 s');
    // The shards' loops turn and are timed; the process's CPU time matches /proc's.
    const turns0 = await metricSum('sfu_shard_turn_seconds_count');
    const [cpu0, proc0] = [await metricSum('sfu_cpu_seconds_total'), serverProcCpuSeconds()];
    await sleep(3000);
    const [cpu1, proc1] = [await metricSum('sfu_cpu_seconds_total'), serverProcCpuSeconds()];
    const turns1 = await metricSum('sfu_shard_turn_seconds_count');
    const shardCpu = await metricSum('sfu_shard_cpu_seconds_total');
    console.log(`E2E shard-turns per_s=${((turns1 - turns0) / 3).toFixed(0)} cpu_s=${(cpu1 - cpu0).toFixed(4)} `
      + `proc_cpu_s=${proc0 != null ? (proc1 - proc0).toFixed(2) : 'n/a'} shard_cpu_total_s=${shardCpu.toFixed(3)}`);
    assert.ok(turns1 > turns0, `shard turns observed: ${turns0} -> ${turns1}`);
    assert.ok(cpu1 > cpu0 && shardCpu > 0, `CPU time counted: ${cpu0} -> ${cpu1}, shards ${shardCpu}`);
    // Not whole seconds: a 3-party call takes a fraction of a core.
    assert.notEqual(cpu1 - cpu0, Math.round(cpu1 - cpu0), `sub-second CPU time: ${cpu0} -> ${cpu1}`);
    if (proc0 != null && proc1 != null) {
      // /proc counts 1/100 s; the two readings are a scrape apart.
      assert.ok(Math.abs((cpu1 - cpu0) - (proc1 - proc0)) < 0.1 + 0.1 * (proc1 - proc0),
        `sfu_cpu_seconds_total ${(cpu1 - cpu0).toFixed(3)} s against /proc ${(proc1 - proc0).toFixed(3)} s`);
    }
  }, 30000, () => callUp);

  step('a receive-only viewer receives all three and publishes nothing', async () => {
    await vera.join(ROOM, {
      expectVideoFrom: true,
      grants: { publish_audio: false, publish_video: false, publish_screen: false, subscribe: true },
    });
    const st = await vera.state();
    assert.deepEqual(st.local, [], 'a viewer publishes nothing');
    await Promise.all([
      vera.expectMedia(camOf(alice, bob, carol), 'Alice, Bob and Carol'),
      // The others see her join, and get no track from her.
      ...[alice, bob, carol].map((p) => waitFor(`${p.name} to see Vera`, async () => {
        const s = await p.state();
        return { ok: s.participants.some((x) => x.participant_id === vera.id), participants: s.participants };
      })),
    ]);
    await Promise.all([
      alice.expectMedia(camOf(bob, carol), 'Bob and Carol, still'),
      bob.expectMedia(camOf(alice, carol), 'Alice and Carol, still'),
    ]);
  }, 60000, () => callUp);

  /** Bob shares his screen until the others decode it; returns the screen's track_id. */
  async function shareScreen(what) {
    await bob.page.click('#screen');
    const { screen } = await waitFor(`Bob's ${what} to be published`, async () => {
      const st = await bob.state();
      const screen = st.local.find((l) => l.source === 'screen');
      return { ok: !!(screen && screen.track_id != null), screen, local: st.local, status: await bob.statusText() };
    });
    const s = { participant: bob, source: 'screen' };
    await Promise.all([
      alice.expectMedia([...camOf(bob, carol), s], `Bob's ${what}`),
      carol.expectMedia([...camOf(alice, bob), s], `Bob's ${what}`),
      vera.expectMedia([...camOf(alice, bob, carol), s], `Bob's ${what}`),
    ]);
    return screen.track_id;
  }

  async function stopScreen(trackId) {
    await bob.page.click('#screen'); // Stop sharing
    for (const p of [alice, carol, vera]) {
      await waitFor(`${p.name} to lose Bob's screen ${trackId}`, async () => {
        const st = await p.state();
        const removed = st.events.some((e) => e.type === 'track_removed' && e.track_id === trackId);
        const still = st.remote.filter((t) => t.source === 'screen');
        return { ok: removed && still.length === 0, still };
      });
    }
    const st = await bob.state();
    assert.equal(st.local.find((l) => l.source === 'screen'), undefined, 'Bob shares no screen');
  }

  // Transceiver counts at the largest point of the call (Bob sharing his screen).
  const peak = new Map();

  step('a shared screen reaches the others as a video track with source screen', async () => {
    const trackId = await shareScreen('screen');
    // The demo page shows it as a screen tile with decoded pixels.
    await vera.page.waitForFunction(() => {
      const v = document.querySelector('.tile.screen video');
      return v && v.videoWidth > 0;
    }, null, { timeout: 10000 });
    for (const p of [alice, bob, carol, vera]) peak.set(p, await p.mlines());
    await stopScreen(trackId);
  }, 60000, () => callUp);

  step('a second screen share reuses the m-lines of the first, on both sides', async () => {
    const before = new Map();
    for (const p of [alice, bob, carol, vera]) before.set(p, await p.mlines());
    // Stopping the share rejected nothing: its m-lines stay, inactive.
    for (const [p, m] of before) {
      assert.equal(m.stopped, 0, `${p.name} has no stopped transceiver: ${JSON.stringify(m.byMid)}`);
      assert.equal(m.transceivers, peak.get(p).transceivers, `${p.name}'s transceivers after stopping the share`);
    }
    const first = (await alice.state()).events.find((e) => e.type === 'track' && e.source === 'screen');
    const trackId = await shareScreen('second screen');
    assert.notEqual(trackId, first && first.track_id, 'the second share is a new track');
    for (const p of [alice, bob, carol, vera]) {
      const m = await p.mlines();
      assert.ok(m.transceivers <= before.get(p).transceivers,
        `${p.name}: the second share must reuse the idle m-line, transceivers ${before.get(p).transceivers} -> ${m.transceivers}`);
      assert.equal(m.mlines, m.transceivers, `${p.name}: one m-line per transceiver`);
    }
    // On a receiver, the new screen track arrives on the m-line the first one had.
    const st = await alice.state();
    const screen = st.remote.find((t) => t.source === 'screen');
    assert.equal(screen.mid, first.mid, `Alice receives the second share on the first one's mid ${first.mid}`);
    await stopScreen(trackId);
  }, 60000, () => callUp);

  // Alice joined first: in the viewer's connection her microphone holds the first m-line,
  // the BUNDLE tag, so her leaving also checks that idling that m-line keeps the
  // connection up.
  const beforeLeave = new Map(); // participant -> {mlines, aliceMids, aliceTracks}
  step('a participant who leaves disappears with its tracks, the others keep receiving', async () => {
    for (const p of [bob, carol, vera]) {
      const st = await p.state();
      beforeLeave.set(p, {
        mlines: await p.mlines(),
        aliceMids: st.remote.filter((t) => t.participant_id === alice.id).map((t) => t.mid),
        aliceTracks: st.remote.filter((t) => t.participant_id === alice.id).map((t) => t.track_id),
        stats: await p.stats(),
      });
    }
    await alice.page.click('#leave');
    await waitFor('Alice\'s call to close', async () => {
      const closed = await alice.page.evaluate(() => window.demo.call.state === 'closed'
        && window.demo.call.pc.connectionState === 'closed');
      return { ok: closed };
    });
    for (const p of [bob, carol, vera]) {
      await waitFor(`${p.name} to see Alice leave`, async () => {
        const st = await p.state();
        const leftEvent = st.events.find((e) => e.type === 'participant_left' && e.participant_id === alice.id);
        const known = st.participants.some((x) => x.participant_id === alice.id);
        const tracks = st.remote.filter((t) => t.participant_id === alice.id);
        return { ok: !!leftEvent && !known && tracks.length === 0, leftEvent, known, tracks };
      });
    }
    await Promise.all([
      bob.expectMedia(camOf(carol), 'Carol after Alice left'),
      carol.expectMedia(camOf(bob), 'Bob after Alice left'),
      vera.expectMedia(camOf(bob, carol), 'Bob and Carol after Alice left'),
    ]);
    for (const p of [bob, carol, vera]) {
      const st = await p.state();
      assert.deepEqual(st.events.filter((e) => ['left', 'closed', 'error'].includes(e.type)), [], `${p.name} stays in the call`);
      // The server unpublished each of Alice's tracks before saying she left.
      const { aliceTracks } = beforeLeave.get(p);
      const leftAt = st.wire.findIndex((m) => m.type === 'participant_left' && m.participant_id === alice.id);
      const unpublished = st.wire.map((m, i) => [m, i]).filter(([m]) => m.type === 'track_unpublished' && aliceTracks.includes(m.track_id));
      assert.ok(leftAt >= 0, `${p.name} got participant_left for Alice: ${JSON.stringify(st.wire.slice(-12))}`);
      assert.deepEqual(unpublished.map(([m]) => m.track_id).sort(), [...aliceTracks].sort(),
        `${p.name} got track_unpublished for each of Alice's tracks: ${JSON.stringify(st.wire.slice(-12))}`);
      assert.ok(unpublished.every(([, i]) => i < leftAt), `${p.name}: track_unpublished before participant_left: ${JSON.stringify(st.wire.slice(-12))}`);
      // Her m-lines stay, idle: none rejected, no transceiver stopped.
      const m = await p.mlines();
      await waitFor(`${p.name}'s m-lines of Alice to be inactive`, async () => {
        const now = await p.mlines();
        const dirs = beforeLeave.get(p).aliceMids.map((mid) => now.byMid[mid]);
        return { ok: dirs.every((d) => d && d.currentDirection === 'inactive'), dirs };
      });
      assert.equal(m.stopped, 0, `${p.name} stopped no transceiver`);
      assert.equal(m.transceivers, beforeLeave.get(p).mlines.transceivers, `${p.name}'s transceivers stay`);
    }
  }, 60000, () => callUp);

  step('a late joiner receives everyone, and everyone receives it on reused m-lines', async () => {
    await dave.join(ROOM, { expectVideoFrom: true });
    // Vera's own failures are the previous step's; do not repeat them here.
    const veraUp = await vera.alive();
    await Promise.all([
      dave.expectMedia(camOf(bob, carol), 'Bob and Carol'),
      bob.expectMedia(camOf(carol, dave), 'Carol and Dave'),
      carol.expectMedia(camOf(bob, dave), 'Bob and Dave'),
      ...(veraUp ? [vera.expectMedia(camOf(bob, carol, dave), 'Bob, Carol and Dave')] : []),
    ]);
    // Same number of remote tracks as before Alice left (Dave replaced her): no more
    // m-lines than then, and Dave's tracks arrive on m-lines that already existed.
    for (const p of [bob, carol, ...(veraUp ? [vera] : [])]) {
      const before = beforeLeave.get(p);
      if (!before) continue;
      const now = await p.mlines();
      const top = peak.get(p);
      console.log(`E2E mlines participant=${p.name} peak=${top ? top.transceivers : 'n/a'} before_leave=${before.mlines.transceivers} after_late_join=${now.transceivers}`);
      assert.ok(now.transceivers <= before.mlines.transceivers,
        `${p.name}: transceivers grew from ${before.mlines.transceivers} (before Alice left) to ${now.transceivers} after Dave joined`);
      if (top) assert.ok(now.transceivers <= top.transceivers, `${p.name}: transceivers ${now.transceivers} over the peak ${top.transceivers}`);
      assert.equal(now.mlines, now.transceivers, `${p.name}: one m-line per transceiver`);
      const st = await p.state();
      const daves = st.remote.filter((t) => t.participant_id === dave.id);
      for (const t of daves) {
        assert.ok(t.mid in before.mlines.byMid, `${p.name} receives Dave's ${t.source} on mid ${t.mid}, which existed before (reused): ${JSON.stringify(before.mlines.byMid)}`);
      }
      // Dave's video decodes on the reused m-line (attributed to his track_id).
      const cam = daves.find((t) => t.source === 'camera');
      const s0 = (await p.stats()).find((x) => x.track_id === cam.track_id);
      await waitFor(`${p.name} to decode Dave's camera on mid ${cam.mid}`, async () => {
        const s1 = (await p.stats()).find((x) => x.track_id === cam.track_id);
        return { ok: !!(s0 && s1 && s1.mid === cam.mid && s1.framesDecoded > s0.framesDecoded), s0, s1 };
      });
      // The server continues the m-line's sequence numbers across the switch: a jump
      // would show as thousands of packets lost (or a negative count) on that stream.
      for (const x of (await p.stats()).filter((y) => y.participant_id === dave.id)) {
        const prev = before.stats.find((y) => y.mid === x.mid) || {};
        console.log(`E2E reused-mline participant=${p.name} mid=${x.mid} kind=${x.kind} ssrc=${prev.ssrc}->${x.ssrc} `
          + `packetsReceived=${prev.packetsReceived}->${x.packetsReceived} packetsLost=${prev.packetsLost}->${x.packetsLost}`);
        // (A client.js without packetsLost, e.g. an older one embedded in the server: no check.)
        if (x.packetsLost != null) assert.ok(Math.abs(x.packetsLost) < 100,
          `${p.name}: Dave's ${x.kind} on reused mid ${x.mid} shows ${x.packetsLost} packets lost: the stream is not continuous: ${JSON.stringify(x)}`);
      }
    }
  }, 90000, () => callUp);

  step('a fifth participant decodes everyone promptly, and its leaving is seen', async () => {
    await frank.join(ROOM, { expectVideoFrom: true });
    assert.ok(frank.firstFrameMs != null, 'Frank decoded a remote video frame');
    await frank.expectMedia(camOf(bob, carol, dave), 'Bob, Carol and Dave');
    await frank.page.click('#leave');
    await waitFor('Bob and Carol to see Frank leave', async () => {
      const states = await Promise.all([bob.state(), carol.state()]);
      const gone = states.every((st) => !st.participants.some((x) => x.participant_id === frank.id)
        && !st.remote.some((t) => t.participant_id === frank.id));
      return { ok: gone };
    });
    await frank.close();
  }, 60000, () => callUp);

  step('mute reaches the others as track_muted', async () => {
    await bob.page.click('#mute');
    await waitFor('Carol to see Bob muted', async () => {
      const st = await carol.state();
      const mic = st.remote.find((t) => t.participant_id === bob.id && t.source === 'microphone');
      return { ok: !!mic && mic.muted === true && st.events.some((e) => e.type === 'track_muted' && e.track_id === mic.track_id), mic };
    });
    await bob.page.click('#mute');
    await waitFor('Carol to see Bob unmuted', async () => {
      const st = await carol.state();
      const mic = st.remote.find((t) => t.participant_id === bob.id && t.source === 'microphone');
      return { ok: !!mic && mic.muted === false, mic };
    });
  }, 60000, () => callUp);

  // With every subscription ended, all of a viewer's m-lines are inactive: its offers
  // carry no active m-line at all, and its connection lives on STUN consent alone, past
  // the server's participant timeout (20 s by default).
  step('a viewer left alone stays in the call and receives the next publisher on idle m-lines', async (t) => {
    if (!(await vera.alive())) {
      t.skip('Vera is not in the call');
      return;
    }
    const before = await vera.mlines();
    for (const p of [bob, carol, dave]) if (p.page) await p.page.click('#leave');
    await waitFor('Vera to be alone, every m-line inactive', async () => {
      const st = await vera.state();
      const m = await vera.mlines();
      const active = Object.entries(m.byMid).filter(([, d]) => d.currentDirection !== 'inactive');
      return { ok: st.participants.length === 0 && st.remote.length === 0 && active.length === 0, participants: st.participants, remote: st.remote, active };
    });
    const idleSeconds = Number(process.env.E2E_IDLE_SECONDS || 24);
    await sleep(idleSeconds * 1000);
    const idle = await vera.page.evaluate(() => ({ state: window.demo.call.state, pc: window.demo.call.pc.connectionState }));
    const st = await vera.state();
    assert.deepEqual(idle, { state: 'joined', pc: 'connected' }, `Vera, alone and receiving nothing for ${idleSeconds} s, is still connected`);
    assert.deepEqual(st.events.filter((e) => ['left', 'closed', 'error'].includes(e.type)), [], 'Vera stays in the call');

    await erin.join(ROOM);
    await vera.expectMedia(cam(erin), 'Erin, after being alone');
    const after = await vera.mlines();
    assert.ok(after.transceivers <= before.transceivers, `Vera's transceivers grew: ${before.transceivers} -> ${after.transceivers}`);
    assert.equal(after.stopped, 0, 'no transceiver stopped');
  }, 90000, () => callUp);

  step('a participant whose media may only go through the TURN relay sees and is seen', async () => {
    const room = `e2e-relay-${RUN}`;
    await sam.join(room);
    await rita.join(room, { query: '?transport=relay', expectVideoFrom: true });
    await Promise.all([
      rita.expectMedia(cam(sam), 'Sam, through the relay'),
      sam.expectMedia(cam(rita), 'Rita, through the relay'),
    ]);
    const pair = await rita.page.evaluate(async () => {
      const call = window.demo.call;
      const stats = [...(await call.pc.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport');
      const selected = stats.find((s) => s.id === transport.selectedCandidatePairId);
      const local = stats.find((s) => s.id === selected.localCandidateId);
      const servers = call.pc.getConfiguration().iceServers;
      return { policy: call.pc.getConfiguration().iceTransportPolicy, local: { type: local.candidateType, protocol: local.protocol, relayProtocol: local.relayProtocol, address: local.address }, urls: servers.flatMap((s) => [].concat(s.urls)) };
    });
    console.log(`E2E relay participant=Rita ${JSON.stringify(pair)}`);
    assert.equal(pair.policy, 'relay');
    // A relayed pair, its local candidate 'relay', or 'prflx' with the relay's protocol:
    // the server answers the relay's checks with the address they came from, which is
    // another of the server host's addresses when the relay reaches the SFU through it,
    // and Chrome may select the pair of that peer-reflexive candidate (seen once, 11-24).
    // With the relay policy nothing else can be gathered; the relay's counters below show
    // the media went through it.
    const relayed = pair.local.type === 'relay' || (pair.local.type === 'prflx' && pair.local.relayProtocol != null);
    assert.ok(relayed, `Rita's selected candidate is a relayed one: ${JSON.stringify(pair)}`);
    assert.ok(pair.urls.some((u) => u.startsWith('turn:')), `the server handed out TURN URLs: ${JSON.stringify(pair.urls)}`);
    // The relay's work shows on /metrics (flushed once a second).
    const m = await waitFor('TURN counters on /metrics', async () => {
      const m = await serverMetrics();
      return { ok: m.sfu_turn_allocations >= 1 && m.sfu_turn_relayed_packets_total > 100, m: {
        allocations: m.sfu_turn_allocations, total: m.sfu_turn_allocations_total, packets: m.sfu_turn_relayed_packets_total } };
    });
    console.log(`E2E relay metrics ${JSON.stringify(m.m)}`);
    await Promise.all([rita.close(), sam.close()]);
  }, 90000);

  step('forged, expired, unsigned and malformed tokens are refused with unauthorized', async () => {
    const room = `e2e-auth-${RUN}`;
    const claims = { sub: `mallory-${RUN}`, room };
    const cases = {
      forged: mintToken(claims, { secret: 'not-the-secret' }),
      tampered: (() => {
        const [h, , s] = mintToken(claims).split('.');
        return `${h}.${b64url(JSON.stringify({ ...claims, room: 'other', exp: Math.floor(Date.now() / 1000) + 3600 }))}.${s}`;
      })(),
      expired: mintToken({ ...claims, exp: Math.floor(Date.now() / 1000) - 5 }),
      unsigned: mintToken(claims, { alg: 'none' }),
      garbage: 'not-a-jwt',
    };
    for (const [kind, token] of Object.entries(cases)) {
      const { results, closed } = await wsScript(await probePage(), [
        { send: JSON.stringify({ type: 'join', token, e2ee: true }) },
        { send: JSON.stringify({ type: 'leave' }), timeoutMs: 3000 },
      ]);
      assert.equal(errorCode(results[0]), 'unauthorized', `${kind} token`);
      assert.equal(results[0].message.request, 'join', `${kind}: the error answers the join: ${JSON.stringify(results[0])}`);
      // The socket is closed after the error.
      assert.ok(results[1].closed || closed, `${kind}: socket must close after unauthorized, got ${JSON.stringify(results[1])}`);
    }
    // And a good token for the same room works, so the refusals were about the tokens;
    // its `leave` is answered by the socket closing, without a `left` message.
    const { results, extra } = await wsScript(await probePage(), [
      { send: JSON.stringify({ type: 'join', token: mintToken(claims), e2ee: true }) },
      { send: JSON.stringify({ type: 'leave' }), timeoutMs: 3000 },
    ]);
    assert.equal(results[0].message && results[0].message.type, 'joined', JSON.stringify(results[0]));
    assert.ok(results[1].closed, `the server closes the socket after leave, got ${JSON.stringify(results[1])}`);
    assert.deepEqual(extra, [], 'nothing after leave');
  });

  step('bad input gets the documented errors and leaves the socket usable', async () => {
    const room = `e2e-input-${RUN}`;
    const token = tokenFor(room, 'Eve', { grants: { publish_video: false } });
    const probe = { send: JSON.stringify({ type: 'join', token, e2ee: true }) }; // answered by already_joined once joined
    // A non-offer message over 64 KiB; an offer over 1 MiB (but a frame under 2 MiB); a frame over 2 MiB.
    const big = JSON.stringify({ type: 'mute', track_id: 1, muted: true, pad: 'x'.repeat(70 * 1024) });
    const bigOffer = JSON.stringify({ type: 'offer', sdp: `v=0\r\n${'a=x-e2e-pad:p\r\n'.repeat(Math.ceil((1100 * 1024) / 15))}`, publish: [], subscribe: [] });
    const huge = JSON.stringify({ type: 'mute', track_id: 1, muted: true, pad: 'x'.repeat(2200 * 1024) });
    const { results, extra, closed } = await wsScript(await probePage(), [
      /* 0 */ { send: JSON.stringify({ type: 'mute', track_id: 1, muted: true }) },
      /* 1 */ { send: JSON.stringify({ type: 'join', token, e2ee: true }) },
      /* 2 */ { send: '{"type": "offer", "sdp": ' },
      /* 3 */ probe,
      /* 4 */ { send: JSON.stringify({ type: 'dance' }) },
      /* 5 */ { send: big },
      /* 6 */ probe,
      /* 7 */ { send: JSON.stringify({ type: 'offer', sdp: 'this is not sdp', publish: [], subscribe: [] }), settleMs: 1000 },
      /* 8 */ { offer: { kinds: ['video'], sources: ['camera'] }, settleMs: 1000 },
      /* 9 */ probe,
      /* 10 */ { send: JSON.stringify({ type: 'offer', publish: [] }), settleMs: 500 },
      /* 11 */ { offer: { kinds: ['video'], sources: ['microphone'] }, settleMs: 1000 },
      /* 12 */ { offer: { kinds: ['audio'], sources: ['microphone'], padKiB: 100 }, settleMs: 1000, timeoutMs: 10000 },
      /* 13 */ { send: bigOffer, settleMs: 500 },
      /* 14 */ probe,
      /* 15 */ { send: huge, settleMs: 500 },
      // (The server closes 2 s after refusing a frame: time to read why before the reset.)
    ], { awaitCloseMs: 5000 });
    const request = (i) => results[i].message && results[i].message.request;
    assert.equal(errorCode(results[0]), 'not_joined', 'mute before join');
    assert.equal(request(0), 'mute', `not_joined answers the mute: ${JSON.stringify(results[0])}`);
    assert.equal(results[1].message && results[1].message.type, 'joined', `join: ${JSON.stringify(results[1])}`);
    assert.equal(results[1].message.grants.publish_video, false, 'grants in joined');
    assert.equal(errorCode(results[2]), 'bad_request', 'malformed JSON');
    assert.equal(request(2), undefined, `malformed JSON: no request: ${JSON.stringify(results[2])}`);
    assert.equal(errorCode(results[3]), 'already_joined', 'socket usable after bad_request');
    assert.equal(request(3), 'join', `already_joined answers the join: ${JSON.stringify(results[3])}`);
    assert.equal(errorCode(results[4]), 'unknown_type', 'unknown type');
    assert.equal(request(4), undefined, `unknown_type: no request: ${JSON.stringify(results[4])}`);
    assert.equal(errorCode(results[5]), 'message_too_large', 'a mute over 64 KiB');
    assert.equal(request(5), undefined, `message_too_large: no request: ${JSON.stringify(results[5])}`);
    assert.equal(errorCode(results[6]), 'already_joined', 'socket usable after message_too_large');
    assert.equal(errorCode(results[7]), 'bad_sdp', 'unparseable SDP');
    assert.equal(errorCode(results[8]), 'forbidden', 'camera publish without publish_video');
    assert.equal(errorCode(results[9]), 'already_joined', 'socket usable after forbidden');
    assert.equal(errorCode(results[10]), 'bad_request', 'offer without sdp');
    // A published m-line's kind must match its source: bad_request (publish_audio is
    // granted, so forbidden would be the wrong reason), one reply, no answer.
    assert.equal(errorCode(results[11]), 'bad_request', `a video m-line declared microphone, got ${JSON.stringify(results[11])}`);
    for (const i of [7, 8, 10, 11]) {
      assert.equal(request(i), 'offer', `the error #${i} answers the offer: ${JSON.stringify(results[i])}`);
    }
    // An offer gets exactly one reply: an offer refused with an error gets nothing else.
    for (const [i, what] of [[7, 'bad SDP'], [8, 'forbidden publish'], [10, 'offer without sdp'], [11, 'kind/source mismatch']]) {
      const answers = results[i].later.filter((m) => m.type === 'answer');
      assert.equal(answers.length, 0, `an offer refused for ${what} (${errorCode(results[i])}) must get no answer, `
        + `got ${answers.length}: ${JSON.stringify(answers.map((a) => ({ published: a.published, directions: a.sdp.match(/a=(sendrecv|sendonly|recvonly|inactive)/g) })))}`);
      assert.deepEqual(results[i].later, [], `an offer refused for ${what} gets one reply only`);
    }
    // A ~100 KiB offer is within the offer limit: answered, or refused for its content, not its size.
    const r12 = results[12].message || {};
    assert.ok(r12.type === 'answer' || (r12.type === 'error' && r12.code !== 'message_too_large' && r12.request === 'offer'),
      `a 100 KiB offer must not be refused for size, got ${JSON.stringify(results[12]).slice(0, 400)}`);
    assert.deepEqual(results[12].later, [], 'the 100 KiB offer gets one reply only');
    console.log(`E2E offer-100KiB reply=${r12.type === 'error' ? `error ${r12.code}` : r12.type}`);
    assert.equal(errorCode(results[13]), 'message_too_large', 'an offer over 1 MiB');
    assert.equal(errorCode(results[14]), 'already_joined', 'socket usable after an offer over 1 MiB');
    assert.equal(errorCode(results[15]), 'message_too_large', `a frame over 2 MiB is told so, got ${JSON.stringify(results[15])}`);
    assert.ok(closed, 'then the socket closes');
    assert.deepEqual(extra, [], 'nothing else arrives');
  });
});
