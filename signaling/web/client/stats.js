// Statistics read from the peer connection: inbound and outbound RTP streams by track,
// and the transport media travels over now.

import { SIMULCAST_LAYERS } from './publishing.js';

/** `Call.inboundStats`: the subscribed tracks' inbound RTP streams (fields documented there). */
export async function inboundStats(call) {
  if (!call.pc) return [];
  const report = await call.pc.getStats();
  // Attributed by the current, negotiated mid -> track_id mapping: a reused m-line's
  // stream counts for the track it carries now. `info.mid` is set once an answer
  // covering the subscription is applied, and the track leaves remoteTracks when it is
  // unpublished. (A receiver's MediaStreamTrack outlives reuse: not a key.)
  const byMid = new Map();
  for (const info of call.remoteTracks.values()) {
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
    const info = call.remoteTracks.get(trackId);
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
      totalAudioEnergy: r.totalAudioEnergy ?? null,
      concealedSamples: r.concealedSamples ?? null,
      codec: (r.codecId && report.get(r.codecId) && report.get(r.codecId).mimeType) || null,
    });
  }
  return out;
}

/** `Call.outboundStats`: the local tracks' outbound RTP streams, lowest layer first. */
export async function outboundStats(call) {
  if (!call.pc) return [];
  const report = await call.pc.getStats();
  const byMid = new Map();
  for (const [source, local] of call.localTracks) if (local.mid != null) byMid.set(local.mid, [source, local]);
  const active = new Map(); // "mid rid" -> active, from the senders' parameters
  for (const [t, source] of call._sendTransceivers) {
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

/** `Call.transportInUse`: how media travels now, from the selected ICE candidate pair. */
export async function transportInUse(call) {
  if (!call.pc) return null;
  const report = await call.pc.getStats();
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
