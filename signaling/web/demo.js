// The demo page: join a room, see and hear the others, mute, camera off, share screen, leave.
//
// Layout: a grid of at most MAX_GRID_TILES video tiles (the most recent speakers first
// when there are more people), the active speaker's tile highlighted (`speaking`), and a
// stage above it for what is shown large: shared screens and pinned tiles (each remote
// tile has a pin button). With a stage, the grid becomes a strip of thumbnails. Whenever
// the layout changes the page tells the server what it shows (`view`): pinned tiles'
// tracks as `pinned`, and per video track the quality its tile needs: `high` on the
// stage, else from the tile's size on screen (`low` for thumbnails).
//
// URL parameters: room, name (prefill the form); transport=relay (media only through
// TURN); video=WIDTHxHEIGHT (camera capture size, e.g. 1280x720: Chrome sends all three
// simulcast layers only from 960x540 up); simulcast=0 (send the camera as one stream);
// svc=MODE (send the camera as one SVC stream in that scalability mode, e.g. L3T3_KEY);
// codec=VP8|VP9|AV1|H264 (the camera's codec; with svc, VP9 or AV1, VP9 by default); dd=1 (negotiate the dependency
// descriptor on every video transceiver: needed to receive AV1 SVC); role=presenter|viewer (with the dev
// tokens: a broadcast's presenter, or a viewer, who watches and listens only); audience=1
// (a viewer that counts the rest of the audience too); e2ee=0 (send in the clear: the
// token needs the plaintext grant, which the dev tokens then ask for); transform=script|
// streams (force one way of encrypting frames); e2eetest=1 (record frame hashes, tests);
// e2eekeys=app (no key exchange: keys come from the application, here whoever calls
// demo.call.e2ee.setSendKey and addKey from the console or a test).
//
// End-to-end encryption: the room secret is the URL's fragment (`#...`), which browsers
// never send to a server. A page opened without one makes one up and puts it in its URL,
// so the page's address is the invite link: whoever opens it joins with the same secret.
// The header shows a lock and the safety code; a tile says when its media cannot be
// decrypted (another secret) or is not encrypted.
import { Call } from '/client.js';

const $ = (id) => document.getElementById(id);
const form = $('join-form');
const grid = $('grid');
const stage = $('stage');
const more = $('more');
const statusLine = $('status');
const buttons = { join: $('join'), mute: $('mute'), camera: $('camera'), screen: $('screen'), leave: $('leave') };

/** Most tiles in the grid; the server forwards the cameras of the 25 latest speakers. */
const MAX_GRID_TILES = 25;
/**
 * Tile heights in device pixels up to which a lower layer is enough: the layers of a
 * 1280x720 camera are 180, 360 and 720 lines high.
 */
const LOW_MAX_PX = 240;
const MEDIUM_MAX_PX = 480;

/** For tests and the console: the current Call. */
window.demo = { call: null };

/** The room secret: the URL fragment, made up (and put there) when absent. */
function roomSecret() {
  let secret = decodeURIComponent(location.hash.replace(/^#/, ''));
  if (!secret) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    secret = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    history.replaceState(null, '', `${location.pathname}${location.search}#${secret}`);
  }
  return secret;
}

/**
 * Tiles by key: `local`, `local-screen`, `p<participant_id>`, `s<track_id>`; each
 * {key, kind: local | local-screen | camera | screen, participantId, screenTrackId, el,
 * video, nameEl, badges, pinButton, videoTrackId, seq}.
 */
const tiles = new Map();
/** Keys of the tiles the user pinned. */
const pinnedKeys = new Set();
/** When each participant was last among the speakers (performance.now()), for the order. */
const spokeAt = new Map();
/** The loudest speaker's participant id (the first of `active_speakers`), or null. */
let loudest = null;
/** <audio> elements by remote track_id. */
const audios = new Map();
let tileSeq = 0;

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', isError);
}

function showError(prefix, err) {
  const message = err && err.message ? err.message : String(err);
  console.warn(prefix, err);
  setStatus(`${prefix}: ${message}`, true);
}

// ------------------------------------------------------------------ tiles

function initials(name) {
  return (name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || '?';
}

function tile(key, { name, screen = false, local = false }) {
  let t = tiles.get(key);
  if (t) return t;
  const el = $('tile-template').content.firstElementChild.cloneNode(true);
  el.dataset.key = key;
  el.classList.toggle('screen', screen);
  el.classList.toggle('local', local && !screen);
  el.classList.add('no-video');
  const video = el.querySelector('video');
  video.muted = true; // sound goes through <audio> elements
  let kind = key.startsWith('p') ? 'camera' : 'screen';
  if (key === 'local' || key === 'local-screen') kind = key;
  t = {
    key, kind, el, video,
    participantId: kind === 'camera' ? Number(key.slice(1)) : null,
    screenTrackId: kind === 'screen' ? Number(key.slice(1)) : null,
    nameEl: el.querySelector('.name'),
    badges: el.querySelector('.badges'),
    pinButton: el.querySelector('.pin'),
    videoTrackId: null,
    seq: tileSeq++,
  };
  t.el.querySelector('.placeholder').textContent = initials(name);
  t.nameEl.textContent = name;
  // Only what comes from the server can be pinned.
  t.pinButton.hidden = kind === 'local' || kind === 'local-screen';
  t.pinButton.addEventListener('click', () => togglePin(key));
  tiles.set(key, t);
  grid.append(el);
  scheduleLayout();
  return t;
}

function removeTile(key) {
  const t = tiles.get(key);
  if (!t) return;
  t.video.srcObject = null;
  t.el.remove();
  tiles.delete(key);
  pinnedKeys.delete(key);
  scheduleLayout();
}

function togglePin(key) {
  if (!tiles.has(key)) return;
  if (pinnedKeys.has(key)) pinnedKeys.delete(key);
  else pinnedKeys.add(key);
  scheduleLayout();
}

function showVideo(t, track, trackId = null) {
  t.videoTrackId = trackId;
  t.video.srcObject = track ? new MediaStream([track]) : null;
  t.el.classList.toggle('no-video', !track);
  // A newer srcObject interrupts a pending play() with AbortError: not an error.
  if (track) t.video.play().catch((err) => err.name !== 'AbortError' && showError('Cannot play video', err));
}

function setBadge(t, name, on) {
  let badge = t.badges.querySelector(`[data-badge="${name}"]`);
  if (on && !badge) {
    badge = document.createElement('span');
    badge.className = 'badge';
    badge.dataset.badge = name;
    badge.textContent = name;
    t.badges.append(badge);
  } else if (!on && badge) {
    badge.remove();
  }
}

function participantName(call, participantId) {
  const p = call.participants.get(participantId);
  return p ? p.name || p.identity : `#${participantId}`;
}

/** The viewers of a broadcast this page was told of (a presenter's: all of them). */
const audience = new Set();

/** Shows how many watch, on a presenter's page (and wherever viewers are known). */
function showAudience(show) {
  const label = $('audience-label');
  label.hidden = !show && audience.size === 0;
  label.textContent = `Audience: ${audience.size} viewer${audience.size === 1 ? '' : 's'}`;
}

function participantTile(call, participantId) {
  return tile(`p${participantId}`, { name: participantName(call, participantId) });
}

// ------------------------------------------------------------------ layout and view

let layoutTimer = null;

/** Lays the tiles out (and sends the view) soon: changes of one moment coalesce. */
function scheduleLayout() {
  if (layoutTimer != null) return;
  layoutTimer = setTimeout(() => {
    layoutTimer = null;
    layout();
  }, 30);
}

const onStage = (t) => t.kind === 'screen' || pinnedKeys.has(t.key);

/** The grid's order: your own tiles first, then (in a big call) the latest speakers. */
function gridOrder(a, b, bySpeech) {
  const own = (t) => (t.kind === 'local' || t.kind === 'local-screen' ? 0 : 1);
  if (own(a) !== own(b)) return own(a) - own(b);
  if (bySpeech) {
    const spoke = (t) => (t.participantId != null ? spokeAt.get(t.participantId) ?? -1 : -1);
    if (spoke(a) !== spoke(b)) return spoke(b) - spoke(a);
  }
  return a.seq - b.seq;
}

function moveTile(t, parent) {
  if (t.el.parentNode === parent) return;
  parent.append(t.el);
  // A moved <video> keeps playing; make sure of it.
  if (t.video.srcObject && t.video.paused) t.video.play().catch(() => {});
}

function layout() {
  const all = [...tiles.values()];
  const staged = all.filter(onStage).sort((a, b) => a.seq - b.seq);
  const rest = all.filter((t) => !onStage(t));
  // Small calls keep their order; in a big one the grid shows the latest speakers, as
  // the server forwards their cameras (last-N).
  rest.sort((a, b) => gridOrder(a, b, rest.length > MAX_GRID_TILES));
  for (const t of staged) {
    moveTile(t, stage);
    t.el.hidden = false;
  }
  rest.forEach((t, i) => {
    moveTile(t, grid);
    t.el.style.order = String(i);
    t.el.hidden = i >= MAX_GRID_TILES;
  });
  markSpeaker();
  for (const t of all) {
    const pinned = pinnedKeys.has(t.key);
    t.el.classList.toggle('pinned', pinned);
    t.pinButton.textContent = pinned ? 'Unpin' : 'Pin';
    t.pinButton.setAttribute('aria-pressed', String(pinned));
    t.pinButton.title = pinned ? 'Unpin: back to the grid' : 'Pin: show large and always receive';
  }
  const shown = Math.min(rest.length, MAX_GRID_TILES);
  const hiddenCount = rest.length - shown;
  more.hidden = hiddenCount === 0;
  more.textContent = `+${hiddenCount} more`;
  stage.hidden = staged.length === 0;
  $('call').classList.toggle('has-stage', staged.length > 0);
  stage.style.setProperty('--cols', String(Math.min(staged.length, 2) || 1));
  stage.style.setProperty('--rows', String(Math.ceil(staged.length / 2) || 1));
  const cols = Math.max(1, Math.ceil(Math.sqrt(shown)));
  grid.style.setProperty('--cols', String(cols));
  grid.style.setProperty('--rows', String(Math.max(1, Math.ceil(shown / cols))));
  sendView();
}

/** The quality a video tile needs: `high` on the stage, else by its height on screen. */
function tileQuality(t) {
  if (onStage(t)) return 'high';
  if (t.el.hidden) return 'low';
  const px = t.el.getBoundingClientRect().height * (window.devicePixelRatio || 1);
  if (px <= LOW_MAX_PX) return 'low';
  return px <= MEDIUM_MAX_PX ? 'medium' : 'high';
}

/** The remote tracks a tile shows: a participant's camera and microphone, or a screen. */
function tileTracks(call, t) {
  if (t.kind === 'screen') return { video: t.screenTrackId, audio: null };
  if (t.kind !== 'camera') return { video: null, audio: null };
  let video = null;
  let audio = null;
  for (const r of call.remoteTracks.values()) {
    if (r.participant_id !== t.participantId) continue;
    if (r.source === 'camera') video = r.track_id;
    if (r.source === 'microphone') audio = r.track_id;
  }
  return { video, audio };
}

/** Tells the server what the page shows now (the client sends it only when it changed). */
function sendView() {
  const call = window.demo.call;
  if (!call || call.state !== 'joined') return;
  const pinned = [];
  const quality = [];
  for (const t of tiles.values()) {
    const { video, audio } = tileTracks(call, t);
    if (pinnedKeys.has(t.key)) pinned.push(...[video, audio].filter((id) => id != null));
    if (video != null) quality.push({ track_id: video, quality: tileQuality(t) });
  }
  try {
    call.setView({ pinned, quality });
  } catch (err) {
    showError('Cannot send the view', err);
  }
}

/** Highlights the loudest speaker's camera tile (`speaking`). */
function markSpeaker() {
  const call = window.demo.call;
  for (const t of tiles.values()) {
    const id = t.kind === 'local' ? call && call.participantId : t.participantId;
    t.el.classList.toggle('speaking', loudest != null && id === loudest);
  }
}

/** Highlights the loudest speaker; remembers who spoke, for the grid's order. */
function onActiveSpeakers(speakers) {
  const now = performance.now();
  speakers.forEach((id, i) => spokeAt.set(id, now - i)); // the loudest counts as latest
  loudest = speakers.length ? speakers[0] : null;
  markSpeaker();
  // The order only matters when the grid cannot show everyone.
  if (tiles.size > MAX_GRID_TILES) scheduleLayout();
}

// ------------------------------------------------------------------ remote media

/** `A:V` or `A:V:N` (audio and video slots, from N others on) as the client's `slots`. */
function parseSlots(text) {
  if (text == null) return { audio: 7, video: 25, from: 8 };
  const m = /^(\d+):(\d+)(?::(\d+))?$/.exec(text);
  return m ? { audio: Number(m[1]), video: Number(m[2]), from: Number(m[3] || 0) } : null;
}

function onTrack(call, t) {
  scheduleLayout();
  if (t.kind === 'audio') {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.srcObject = new MediaStream([t.track]);
    audio.dataset.trackId = t.track_id;
    document.body.append(audio);
    audios.set(t.track_id, audio);
    audio.play().catch((err) => err.name !== 'AbortError'
      && showError('Cannot play audio (click the page to allow sound)', err));
    setBadge(participantTile(call, t.participant_id), 'muted', t.muted);
    return;
  }
  if (t.source === 'screen') {
    const st = tile(`s${t.track_id}`, { name: `${participantName(call, t.participant_id)} — screen`, screen: true });
    showVideo(st, t.track, t.track_id);
    return;
  }
  const pt = participantTile(call, t.participant_id);
  showVideo(pt, t.track, t.track_id);
  pt.el.classList.toggle('no-video', t.muted);
}

function onTrackRemoved(call, t) {
  scheduleLayout();
  if (t.kind === 'audio') {
    const audio = audios.get(t.track_id);
    if (audio) {
      audio.srcObject = null;
      audio.remove();
      audios.delete(t.track_id);
    }
    const pt = tiles.get(`p${t.participant_id}`);
    if (pt) setBadge(pt, 'muted', false);
    return;
  }
  if (t.source === 'screen') {
    removeTile(`s${t.track_id}`);
    return;
  }
  const pt = tiles.get(`p${t.participant_id}`);
  if (pt && pt.videoTrackId === t.track_id) showVideo(pt, null);
}

function onTrackMuted(call, t) {
  const pt = tiles.get(`p${t.participant_id}`);
  if (t.kind === 'audio') {
    if (pt) setBadge(pt, 'muted', t.muted);
  } else if (t.source === 'screen') {
    const st = tiles.get(`s${t.track_id}`);
    if (st) st.el.classList.toggle('no-video', t.muted);
  } else if (pt && pt.videoTrackId === t.track_id) {
    pt.el.classList.toggle('no-video', t.muted);
  }
}

// ------------------------------------------------------------------ controls

function updateButtons(call) {
  const joined = !!call;
  const mic = joined && call.localTracks.get('microphone');
  const cam = joined && call.localTracks.get('camera');
  const micMuted = joined && call.isMuted('microphone');
  const camOff = joined && call.isMuted('camera');
  buttons.mute.disabled = !mic;
  buttons.mute.textContent = micMuted && mic ? 'Unmute' : 'Mute';
  buttons.mute.classList.toggle('on', !!mic && micMuted);
  buttons.camera.disabled = !cam;
  buttons.camera.textContent = camOff && cam ? 'Camera on' : 'Camera off';
  buttons.camera.classList.toggle('on', !!cam && camOff);
  const sharing = joined && call.localTracks.has('screen');
  buttons.screen.disabled = !joined || !call.grants || !call.grants.publish_screen
    || !navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia;
  buttons.screen.textContent = sharing ? 'Stop sharing' : 'Share screen';
  buttons.screen.classList.toggle('on', sharing);
  const local = tiles.get('local');
  if (local) {
    setBadge(local, 'muted', !!mic && micMuted);
    local.el.classList.toggle('no-video', !cam || camOff);
  }
}

buttons.mute.addEventListener('click', () => {
  const call = window.demo.call;
  if (!call) return;
  try {
    call.setMicrophoneMuted(!call.isMuted('microphone'));
  } catch (err) {
    showError('Mute failed', err);
  }
  updateButtons(call);
});

buttons.camera.addEventListener('click', () => {
  const call = window.demo.call;
  if (!call) return;
  try {
    call.setCameraEnabled(call.isMuted('camera'));
  } catch (err) {
    showError('Camera failed', err);
  }
  updateButtons(call);
});

buttons.screen.addEventListener('click', async () => {
  const call = window.demo.call;
  if (!call) return;
  buttons.screen.disabled = true;
  try {
    if (call.localTracks.has('screen')) await call.stopScreenShare();
    else await call.startScreenShare();
  } catch (err) {
    showError('Screen share failed', err);
  }
  updateButtons(call);
});

buttons.leave.addEventListener('click', async () => {
  const call = window.demo.call;
  if (!call) return;
  buttons.leave.disabled = true;
  try {
    await call.leave();
  } catch (err) {
    showError('Leave failed', err);
  }
});

// ------------------------------------------------------------------ join

async function fetchToken(room, name) {
  const pasted = $('token').value.trim();
  if (!$('token-field').hidden && pasted) return pasted;
  const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'guest'}-${
    crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
  const query = new URLSearchParams({ room, identity, name });
  // ?role=presenter|viewer: a broadcast's presenter, or one of its audience.
  const role = new URLSearchParams(location.search).get('role');
  if (role) query.set('role', role);
  if (new URLSearchParams(location.search).get('e2ee') === '0') query.set('plaintext', '1');
  const res = await fetch(`/dev/token?${query}`);
  if (res.status === 404) {
    $('token-field').hidden = false;
    $('token').focus();
    return null;
  }
  if (!res.ok) throw new Error(`token request failed: ${res.status} ${(await res.text()).trim()}`);
  return (await res.json()).token;
}

function wire(call) {
  call.addEventListener('joined', (e) => {
    $('room-label').textContent = `Room ${e.detail.room}`;
    audience.clear();
    // A viewer captures nothing: no tile of its own.
    if (e.detail.grants.role !== 'viewer') {
      const local = tile('local', { name: `${e.detail.name} (you)`, local: true });
      local.el.classList.add('no-video');
    }
    for (const p of e.detail.participants) {
      if (p.role === 'viewer') audience.add(p.participant_id);
      else participantTile(call, p.participant_id);
    }
    showAudience(e.detail.grants.role === 'presenter');
  });
  call.addEventListener('local_track', (e) => {
    const { source, track } = e.detail;
    if (source === 'camera') showVideo(tile('local', { name: 'You', local: true }), track);
    if (source === 'screen') showVideo(tile('local-screen', { name: 'Your screen', screen: true }), track);
    updateButtons(call);
  });
  call.addEventListener('local_track_removed', (e) => {
    if (e.detail.source === 'screen') removeTile('local-screen');
    if (e.detail.by === 'server') setStatus(`Your ${e.detail.source} was turned off by the server`, true);
    updateButtons(call);
  });
  call.addEventListener('local_track_muted', (e) => {
    if (e.detail.muted) setStatus(`An administrator muted your ${e.detail.source}`, true);
    updateButtons(call);
  });
  call.addEventListener('grants', () => updateButtons(call));
  call.addEventListener('participant_joined', (e) => {
    // A broadcast's viewers are an audience, counted, not tiles (there may be hundreds).
    if (e.detail.role === 'viewer') {
      audience.add(e.detail.participant_id);
      showAudience(true);
      return;
    }
    participantTile(call, e.detail.participant_id).nameEl.textContent = e.detail.name || e.detail.identity;
    setStatus(`${e.detail.name || e.detail.identity} joined`);
  });
  call.addEventListener('participant_left', (e) => {
    if (audience.delete(e.detail.participant_id)) {
      showAudience(true);
      return;
    }
    removeTile(`p${e.detail.participant_id}`);
    setStatus(`${e.detail.name || e.detail.identity || 'someone'} left`);
  });
  call.addEventListener('track_published', () => scheduleLayout());
  call.addEventListener('e2ee', () => showE2ee(call));
  call.addEventListener('activespeakers', (e) => onActiveSpeakers(e.detail.speakers));
  call.addEventListener('track', (e) => onTrack(call, e.detail));
  call.addEventListener('track_removed', (e) => onTrackRemoved(call, e.detail));
  call.addEventListener('track_muted', (e) => onTrackMuted(call, e.detail));
  call.addEventListener('error', (e) => setStatus(`Error (${e.detail.code}): ${e.detail.message}`, true));
  call.addEventListener('transport_fallback', (e) => setStatus(`${e.detail.reason}: trying the TURN relay over TCP/TLS…`));
  call.addEventListener('rejoining', () => setStatus('The server restarted: joining the call again…'));
  call.addEventListener('left', (e) => setStatus(`Removed from the call (${e.detail.reason})`, e.detail.reason !== 'left'));
  call.addEventListener('closed', (e) => {
    if (window.demo.call !== call) return;
    endCall(e.detail.reason === 'left' ? 'You left the call' : null);
  });
}

/**
 * The lock and safety code in the header; on each tile, whether its media can be
 * decrypted (`cannot decrypt`: another secret, or keys that did not verify) or is sent in
 * the clear (`not encrypted`).
 */
function showE2ee(call) {
  const label = $('e2ee-label');
  const e2ee = call.e2ee;
  const clear = [...call.participants.values()].filter((p) => p.e2ee === false && p.role !== 'viewer');
  if (!e2ee.enabled || clear.length > 0) {
    label.textContent = '⚠ Not end-to-end encrypted';
    label.title = e2ee.enabled ? `sent in the clear by ${clear.map((p) => p.name || p.identity).join(', ')}` : 'this page sends in the clear';
    label.classList.add('insecure');
  } else {
    label.textContent = e2ee.external ? '🔒 End-to-end encrypted · keys from the application'
      : `🔒 End-to-end encrypted · safety code ${e2ee.safetyCode || '…'}`;
    label.title = 'Compare the safety code with the others: the same code means nobody, not even the server, can listen in';
    label.classList.remove('insecure');
  }
  for (const [id, status] of e2ee.peers) {
    const t = tiles.get(`p${id}`);
    if (!t) continue;
    setBadge(t, 'cannot decrypt', status === 'failed');
    setBadge(t, 'not encrypted', status === 'plaintext');
  }
}

/** Shows how media travels (UDP, TCP, TURN/UDP, TURN/TCP, TURN/TLS) while in a call. */
function watchTransport(call) {
  const label = $('transport-label');
  const update = async () => {
    if (window.demo.call !== call || call.state === 'closed') {
      clearInterval(timer);
      label.textContent = '';
      return;
    }
    const transport = await call.transportInUse().catch(() => null);
    label.textContent = transport ? `Media: ${transport}` : 'Media: connecting…';
    label.title = transport && transport.startsWith('TURN') ? 'through the TURN relay' : '';
  };
  const timer = setInterval(update, 1000);
  update();
}

function endCall(message) {
  for (const key of [...tiles.keys()]) removeTile(key);
  pinnedKeys.clear();
  spokeAt.clear();
  loudest = null;
  for (const audio of audios.values()) audio.remove();
  audios.clear();
  $('call').hidden = true;
  form.hidden = false;
  buttons.join.disabled = false;
  buttons.leave.disabled = false;
  $('room-label').textContent = '';
  $('e2ee-label').textContent = '';
  if (message) setStatus(message);
  updateButtons(null);
}

async function join(room, name) {
  buttons.join.disabled = true;
  setStatus('Joining…');
  let call = null;
  try {
    const token = await fetchToken(room, name);
    if (!token) {
      setStatus('This server issues no tokens itself: paste a join token.', true);
      buttons.join.disabled = false;
      return null;
    }
    const query = new URLSearchParams(location.search);
    // ?transport=relay: media only through the TURN relay (to try restricted networks).
    const relayOnly = query.get('transport') === 'relay';
    call = new Call({
      token,
      iceTransportPolicy: relayOnly ? 'relay' : 'all',
      simulcast: query.get('simulcast') !== '0',
      svc: query.get('svc'),
      codec: query.get('codec') || null,
      dependencyDescriptor: query.get('dd') === '1',
      audience: query.get('audience') === '1',
      // Slot m-lines for large rooms: 7 audio (every other microphone of a room up to 8,
      // the loudest three and pins above) and 25 video once 8 others are in the call;
      // ?slots=A:V always, ?slots=A:V:N from N others on, ?slots=0 never.
      slots: parseSlots(query.get('slots')),
      e2ee: query.get('e2ee') === '0' ? false : {
        secret: roomSecret(),
        external: query.get('e2eekeys') === 'app',
        transform: query.get('transform') || undefined,
        test: query.get('e2eetest') === '1',
      },
    });
    window.demo.call = call;
    wire(call);
    watchTransport(call);
    form.hidden = true;
    $('call').hidden = false;
    // ?media=0 joins without capturing anything: to watch and listen only.
    const capture = query.get('media') !== '0';
    await call.join({ audio: capture, video: capture && videoConstraints(query.get('video')) });
    const role = call.grants && call.grants.role;
    setStatus(`Joined as ${call.name}${role && role !== 'participant' ? ` (${role})` : ''}`);
    showE2ee(call);
    updateButtons(call);
    return call;
  } catch (err) {
    showError('Could not join', err);
    if (call) window.demo.call = null;
    endCall(null);
    return null;
  }
}

/** `?video=1280x720`: capture the camera at that size; otherwise the browser's default. */
function videoConstraints(param) {
  const m = /^(\d+)x(\d+)$/.exec(param || '');
  return m ? { width: { ideal: Number(m[1]) }, height: { ideal: Number(m[2]) } } : true;
}

window.addEventListener('resize', () => scheduleLayout());

form.addEventListener('submit', (e) => {
  e.preventDefault();
  join($('room').value.trim(), $('name').value.trim());
});

// Prefill from ?room=..&name=..
const params = new URLSearchParams(location.search);
if (params.get('room')) $('room').value = params.get('room');
if (params.get('name')) $('name').value = params.get('name');
// The invite link (this page's URL) carries the room secret from the start.
if (params.get('e2ee') !== '0') roomSecret();
if (!navigator.mediaDevices) {
  setStatus('Camera and microphone need HTTPS (or localhost): you can only watch.', true);
}
updateButtons(null);
window.demo.join = join;
