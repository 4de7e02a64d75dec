// End-to-end test of a broadcast: a Chromium presenter shares a screen, three Chromium
// viewers (role `viewer` in their tokens) watch it on the demo page, capture nothing, are
// not told of each other, and a viewer that tries to publish is refused. Run through
// e2e/run.sh.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  steps, browserHooks, wsScript, probePage, errorCode, tokenFor,
  RUN, waitFor, Participant, LEAN_ARGS,
} from './lib.mjs';

const PRESENTER = { role: 'presenter' };
// A viewer's token may say it publishes: the role overrides it.
const VIEWER = { role: 'viewer', publish_audio: true, publish_video: true, publish_screen: true, subscribe: true };

describe('broadcast: a presenter shares a screen with viewers', { timeout: 600000 }, () => {
  const room = `e2e-broadcast-${RUN}`;
  const pia = new Participant('Pia'); // presents
  const viewers = ['Vic', 'Val', 'Vera'].map((n) => new Participant(n));
  const everyone = [pia, ...viewers];
  const { step, failed } = steps();
  let sharing = false;

  browserHooks(everyone, failed);

  step('the presenter joins with camera and microphone and shares a screen', async () => {
    await pia.join(room, { grants: PRESENTER, args: LEAN_ARGS });
    await pia.page.click('#screen');
    await waitFor("Pia's screen to be published", async () => {
      const st = await pia.state();
      const screen = st.local.find((l) => l.source === 'screen');
      return { ok: !!(screen && screen.track_id != null), local: st.local };
    });
    sharing = true;
  }, 60000);

  step('three viewers join, capture nothing, and decode the screen on the stage', async () => {
    for (const v of viewers) await v.join(room, { grants: VIEWER, args: LEAN_ARGS });
    const media = ['microphone', 'camera', 'screen'].map((source) => ({ participant: pia, source }));
    await Promise.all(viewers.map((v) => v.expectMedia(media, "Pia's microphone, camera and screen")));
    for (const v of viewers) {
      const st = await v.state();
      assert.deepEqual(st.local, [], `${v.name} publishes nothing: ${JSON.stringify(st.local)}`);
      const pixels = await v.page.evaluate(() => {
        const video = document.querySelector('#stage .tile.screen video');
        return video ? { w: video.videoWidth, h: video.videoHeight } : null;
      });
      assert.ok(pixels && pixels.w > 0 && pixels.h > 0, `${v.name}'s stage shows the screen: ${JSON.stringify(pixels)}`);
      const share = await v.page.evaluate(() => document.querySelector('#screen').disabled);
      assert.ok(share, `${v.name}'s Share screen button is off`);
      assert.match(await v.statusText(), /\(viewer\)/, `${v.name}'s status names the role`);
    }
  }, 180000, () => sharing);

  step('viewers are told of the presenter, not of each other; the presenter of all', async () => {
    for (const v of viewers) {
      const st = await v.state();
      const names = st.participants.map((p) => p.name).sort();
      assert.deepEqual(names, ['Pia'], `${v.name} knows only the presenter: ${JSON.stringify(names)}`);
    }
    const st = await pia.state();
    assert.deepEqual(st.participants.map((p) => p.name).sort(), ['Val', 'Vera', 'Vic'], 'Pia knows her audience');
    assert.deepEqual(st.participants.map((p) => p.role), ['viewer', 'viewer', 'viewer'], 'as viewers');
  }, 30000, () => sharing);

  step("the presenter's page counts its audience (no tile per viewer); a viewer's page has no tile of its own", async () => {
    const view = (p) => p.page.evaluate(() => ({
      tiles: [...document.querySelectorAll('.tile')].map((t) => t.dataset.key).sort(),
      audience: document.getElementById('audience-label').hidden ? null : document.getElementById('audience-label').textContent,
    }));
    const piaView = await waitFor("Pia's page to count three viewers", async () => {
      const v = await view(pia);
      return { ok: v.audience === 'Audience: 3 viewers', ...v };
    }, { timeout: 5000 });
    assert.deepEqual(piaView.tiles, ['local', 'local-screen'], "Pia's tiles: her camera and her screen");
    for (const v of viewers) {
      const vv = await view(v);
      assert.ok(!vv.tiles.includes('local'), `${v.name} shows no tile of its own: ${JSON.stringify(vv.tiles)}`);
      assert.equal(vv.tiles.filter((k) => k.startsWith('p')).length, 1, `${v.name} shows Pia's camera tile: ${JSON.stringify(vv.tiles)}`);
    }
    // A viewer leaving is counted down.
    await viewers[2].close();
    await waitFor("Pia's count to go down", async () => {
      const v = await view(pia);
      return { ok: v.audience === 'Audience: 2 viewers', ...v };
    }, { timeout: 10000 });
  }, 30000, () => sharing);

  step('a viewer that tries to publish gets forbidden', async () => {
    const token = tokenFor(room, 'Vince', { grants: VIEWER });
    const { results } = await wsScript(await probePage(), [
      { send: JSON.stringify({ type: 'join', token }) },
      { offer: { kinds: ['video'], sources: ['screen'] }, settleMs: 1000 },
    ]);
    const joined = results[0].message;
    assert.equal(joined && joined.type, 'joined', JSON.stringify(results[0]));
    assert.equal(joined.grants.role, 'viewer');
    assert.equal(joined.grants.publish_screen, false, 'the role overrides the publish grants');
    // The room's notifications (the presenter's active_speakers, its key-exchange hello)
    // may come first.
    const replies = [results[1].message, ...(results[1].later || [])].filter(Boolean);
    const reply = replies.find((m) => m.type !== 'active_speakers' && m.type !== 'e2ee');
    assert.equal(errorCode({ message: reply }), 'forbidden', `a viewer's screen publish: ${JSON.stringify(results[1])}`);
  }, 30000);
});
