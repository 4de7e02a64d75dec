//! What flows on each of a participant's subscriptions: which microphones, which
//! cameras at which layer, within its bandwidth estimate as `adaptation` plans it.

use std::time::Duration;

use protocol::{Kind, MAX_LAYERS, ParticipantId, Quality, TrackId};
use str0m::bwe::Bitrate;
use tracing::debug;

use super::Shard;
use super::forward::{backlogged, shaped_since};
use super::shown::shown;
use super::steer::Steering;
use super::track::{NOMINAL_AUDIO_BPS, NOMINAL_LAYER_BPS, NOMINAL_VIDEO_BPS};
use crate::adaptation::{DOWN_LOSS, Frozen, Prior, Reading, THIN_KEYFRAME_DELAY};
use crate::selection::{self, UP_HEADROOM, VideoItem};
use crate::temporal::{ALL_TEMPORAL, cap_for};

/// Where a subscriber's bandwidth estimate starts: enough for a 2.5 Mbit/s screen share
/// or a speaker and a dozen thumbnails. It grows as the estimator probes, and falls at
/// the first losses. (str0m paces each subscriber at 1.1 times its estimate.)
pub(super) const INITIAL_ESTIMATE_BPS: u64 = 3_000_000;

/// After a subscriber's layer went down for lack of bandwidth, nothing goes up for this
/// long. (Doubling it while falls recur kept receivers off the top layer for minutes
/// after the estimate's start-up swings, in Chromium.)
pub(super) const UPGRADE_HOLD: Duration = Duration::from_secs(8);

/// Where a transport-wide estimate restarts once losses thinned the floor video: this
/// share of what flows then (room for the audio's and the keyframes' swings); only an
/// estimate over 1.5 times that restarts.
const ESTIMATE_RESTART: f64 = 1.25;

/// A receiver's loss report counts for the floor this long (they come every second).
const LOSS_FRESH: Duration = Duration::from_secs(3);

impl Shard {
    /// Chooses what flows on each of a participant's subscriptions: which microphones
    /// (all, or the loudest and the pinned in a large room), which cameras and at which
    /// layer (by importance, within its bandwidth estimate). Keyframes are awaited for
    /// the layers it must switch to.
    pub(super) fn choose_for(&mut self, id: ParticipantId) {
        self.fill_slots(id);
        let config = &self.config;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let now = self.now;
        let standing = room.standing(id, config.loudest_threshold);
        let mut frozen = [0u64; Frozen::ALL.len()];
        let mut items: Vec<VideoItem> = Vec::new();
        let mut slots: Vec<usize> = Vec::new();
        // Per item: how the last choice left it.
        let mut priors: Vec<Prior> = Vec::new();
        // Per item: its lowest usable layer's bytes by temporal layer, and the temporal
        // cap it has.
        let mut temporal: Vec<([u64; 4], u8, u8)> = Vec::new();
        let mut audio_bps = 0;
        let mut ideal_bps = 0;
        for (slot, s) in p.subscriptions.iter_mut() {
            let Some(t) = self.tracks.get(&s.track_id()) else {
                continue;
            };
            let pinned = p.view.pinned.binary_search(&s.track_id()).is_ok();
            let order = shown(t, pinned, standing, config);
            if t.info.kind == Kind::Audio {
                s.target = order.map(|_| 0);
                if order.is_some() {
                    audio_bps += t.layers[0].rate.bps().unwrap_or(NOMINAL_AUDIO_BPS);
                }
                continue;
            }
            let top = t.layers.len() as u8 - 1;
            let cap = match p
                .view
                .quality
                .binary_search_by_key(&s.track_id(), |q| q.track_id)
                .map_or(Quality::High, |i| p.view.quality[i].quality)
            {
                Quality::Low => 0,
                Quality::Medium => top.min(1),
                Quality::High => top,
            };
            // Screens, pinned and the dominant speaker's camera at the top layer; in a
            // large room the other cameras as thumbnails.
            let (large, _) = standing;
            let wanted = order.map(|o| if o > 2 && large { 0 } else { top });
            let priority = order.unwrap_or(u32::MAX);
            let asked = wanted.map(|w| w.min(cap));
            let mut wanted = asked;
            // Holding after a fall for lack of bandwidth: nothing goes up from where it
            // was chosen (it may not flow yet, waiting for its keyframe).
            if p.downlink.upgrade_hold.is_some_and(|until| now < until) {
                wanted = wanted.map(|w| w.min(s.target.unwrap_or(0)));
            }
            let mut item = VideoItem {
                priority,
                wanted,
                rates: [0; MAX_LAYERS],
                usable: [false; MAX_LAYERS],
                flowing: [false; MAX_LAYERS],
                layers: top + 1,
                current: s.current,
            };
            let mut below = 0;
            for (i, l) in t.layers.iter().enumerate() {
                let rate = l.rate.bps().filter(|b| *b > 0).unwrap_or(if top > 0 {
                    NOMINAL_LAYER_BPS[i]
                } else {
                    NOMINAL_VIDEO_BPS
                });
                // An SVC layer comes with every layer below it.
                item.rates[i] = below + rate;
                if t.svc {
                    below += rate;
                }
                item.usable[i] = top == 0 || l.usable(now);
                item.flowing[i] = !l.paused && l.arriving(now);
            }
            if let Some(w) = wanted {
                ideal_bps += item.rates[usize::from(w)];
            }
            // Since the last choice: paused (for bandwidth, or nothing arrives), or chosen
            // and waiting for its keyframe. Nothing counts before the first choice.
            if asked.is_some() && s.wanted.is_some() {
                let reason = if s.target.is_none() {
                    Some(if item.usable[..usize::from(top) + 1].contains(&true) {
                        Frozen::Bandwidth
                    } else {
                        Frozen::Publisher
                    })
                } else {
                    s.current.is_none().then_some(Frozen::Keyframe)
                };
                if let Some(r) = reason {
                    frozen[r.index()] += 1;
                }
            }
            priors.push(Prior {
                target: s.target,
                asked,
                asked_before: s.wanted,
                usable: s.target.is_none_or(|l| item.usable[usize::from(l)]),
            });
            s.wanted = asked;
            let lowest = (0..=top)
                .find(|&l| item.usable[usize::from(l)])
                .unwrap_or(0);
            let bytes = t.layers[usize::from(lowest)].temporal_bytes;
            temporal.push((bytes, s.temporal.target, lowest));
            items.push(item);
            slots.push(slot);
        }
        // (A REMB receiver with an estimator per video m-line estimates the video only.)
        let video_only = !p.downlink.estimate_is_twcc
            && p.estimated
            && p.downlink.remb.reported()
            && !p.downlink.remb.covers_audio();
        // (What its losses proved its link carries, if they did: an estimate that fell
        // with those losses would long stay below it.)
        let estimate = p.downlink.shape.rate.or(p.downlink.estimate);
        let budget = estimate.map(|e| {
            if video_only {
                e
            } else {
                e.saturating_sub(audio_bps)
            }
        });
        let rate_of = |it: &VideoItem, l: Option<u8>| l.map_or(0, |l| it.rates[usize::from(l)]);
        let takes = items
            .iter()
            .zip(&priors)
            .map(|(it, p)| rate_of(it, p.target))
            .sum();
        // The floor video (its index and its lowest layer's rate): the most important
        // shown with layers to choose from (a single stream is never paused anyway).
        let floor = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.wanted.is_some() && it.layers > 1)
            .min_by_key(|(_, it)| it.priority)
            .and_then(|(i, it)| {
                let lowest = (0..it.layers).find(|&l| it.usable[usize::from(l)])?;
                Some((i, it.rates[usize::from(lowest)]))
            });
        let lost = p
            .downlink
            .lost
            .filter(|(at, _)| now.saturating_duration_since(*at) < LOSS_FRESH);
        // The lowest layers of the videos shown, and whether one of them is paused.
        let lowest_of = |it: &VideoItem| (0..it.layers).find(|&l| it.usable[usize::from(l)]);
        let shown_lowest = items
            .iter()
            .filter(|it| it.wanted.is_some())
            .filter_map(|it| lowest_of(it).map(|l| it.rates[usize::from(l)]))
            .sum();
        let paused = items
            .iter()
            .zip(&priors)
            .any(|(it, p)| it.wanted.is_some() && p.target.is_none() && lowest_of(it).is_some());
        let reading = Reading {
            budget,
            takes,
            floor: floor.map(|(_, rate)| rate),
            dips: p.estimated,
            loss: lost.map(|(_, l)| l),
            unpadded: p.downlink.bwe_bitrates.0
                <= p.downlink.chosen_bps + p.downlink.chosen_bps / 20,
            lowest: shown_lowest,
            paused,
            proven: p.downlink.shape.rate.is_some(),
        };
        let plan = p.downlink.adaptation.plan(now, &reading);
        tracing::trace!(participant = %id, estimate = ?p.downlink.estimate, ?budget, takes,
            loss = ?reading.loss, floor = plan.floor, "reading");
        if plan.hold {
            // A dip too short to act on: everything stays where it is.
            for (it, prior) in items.iter_mut().zip(&priors) {
                it.wanted = it.wanted.and_then(|w| prior.target.map(|t| t.min(w)));
            }
        }
        let keep = if plan.keep_all {
            usize::MAX
        } else {
            usize::from(plan.floor)
        };
        let mut targets = selection::allocate(plan.budget, &items, keep);
        // (Not a rate its losses proved: no bar for what its overshoot let resume.)
        let probed =
            budget.filter(|_| p.downlink.estimate_is_twcc && p.downlink.shape.rate.is_none());
        p.downlink
            .adaptation
            .bound_ups(now, &mut targets, &priors, &items, reading.dips, probed);
        if plan.keep_all {
            // (What the budget does not carry is not going up: it is kept.)
            for (t, it) in targets.iter_mut().zip(&items) {
                if t.is_none() && it.wanted.is_some() {
                    *t = lowest_of(it);
                }
            }
        }
        // A floor video thinned now goes up a layer only once it flows whole again.
        if let Some((f, _)) = floor
            && let (_, from, lowest) = temporal[f]
            && from < ALL_TEMPORAL
            && targets[f].is_some_and(|t| t > lowest)
        {
            targets[f] = Some(lowest);
        }
        for ((t, prior), slot) in targets.iter().zip(&priors).zip(&slots) {
            if let Some(c) = prior.cause(*t) {
                self.counters.layer_choices[c.index()] += 1;
                let track = p.subscriptions.get(*slot).map(|s| s.track_id());
                debug!(participant = %id, ?track, from = ?prior.target, to = ?t,
                    cause = c.label(), estimate = ?p.downlink.estimate,
                    budget = ?plan.budget, takes, loss = ?reading.loss, "layer chosen");
            }
        }
        let elapsed = p.downlink.adaptation.count_until(now).as_millis() as u64;
        for (count, total) in frozen.iter().zip(&mut self.counters.video_frozen_ms) {
            *total += count * elapsed;
        }
        // A video that went down (or paused) while still wanted higher fell for lack of
        // bandwidth: hold every upgrade for a while (an estimate that climbs back only to
        // fall again would otherwise switch up and down).
        let fell = items.iter().zip(&targets).any(|(it, t)| {
            it.current
                .is_some_and(|c| t.is_none_or(|t| t < c) && it.wanted.is_some_and(|w| w >= c))
        });
        if fell {
            p.downlink.upgrade_hold = Some(now + UPGRADE_HOLD);
            debug!(participant = %id, "layer down for bandwidth: upgrades held");
        }
        let (mut allocated, mut step_up) = selection::next_step(&items, &targets);
        // A paused video that waits for a higher budget to resume: padding and probes
        // look for that much.
        let barred = items
            .iter()
            .zip(&targets)
            .any(|(it, t)| t.is_none() && it.wanted.is_some());
        if let Some(bar) = p.downlink.adaptation.resume_needs(now).filter(|_| barred) {
            step_up = step_up.map(|s| s.max(bar.saturating_sub(allocated)));
        }
        // The floor video carried below what its lowest layer takes: thinned to the
        // temporal layers the budget carries (whole again only with headroom), and past
        // the pacer if even that does not fit (its queue would grow until cut).
        let mut caps: Vec<u8> = vec![ALL_TEMPORAL; items.len()];
        let mut floor_takes = None;
        let padding_off = p.downlink.pad_off.is_some_and(|(until, _)| now < until);
        // Thinning starts only on losses of the layer itself, once it has flowed a
        // while: on its way down from a higher one, the losses and the fallen estimate
        // are the higher layer's (an estimate that fell with them climbs back slowly).
        // (Asked also without a floor video, which ends the time counted.)
        // (Cut at its pacer's backlog at that layer, it is still there: were it not, a
        // pacer at an estimate fallen under the floor video would cut it again and again,
        // never sending it past the pacer, which is for just that.)
        let at_lowest = floor.is_some_and(|(f, _)| {
            let (_, _, lowest) = temporal[f];
            p.subscriptions
                .get(slots[f])
                .is_some_and(|s| s.current.or(s.cut) == Some(lowest))
        });
        let settled = p.downlink.adaptation.settled_at_lowest(now, at_lowest);
        // The floor video as it flows and stays (its track and layer), and news of
        // losses on its link.
        let flowing = floor.and_then(|(f, _)| {
            let s = p.subscriptions.get(slots[f])?;
            s.current
                .filter(|c| targets[f] == Some(*c))
                .map(|c| (s.track_id(), c))
        });
        let news = flowing.is_some()
            && lost.is_some_and(|(at, loss)| p.downlink.adaptation.new_loss(at, loss));
        let mut thinned = false;
        // Losses over 10 % (the worst m-line's), where links are not shaped: the floor
        // video thins at once, below.
        let heavy_loss = reading
            .loss
            .filter(|l| *l > DOWN_LOSS && !config.shape_links);
        // The floor video going down to its lowest layer from a higher one that flows,
        // with heavy losses that say its link delivered less than that layer takes (what
        // flows, less what was lost): the layer starts thinned to that (bit/s), rather
        // than lose as much for the seconds until its own losses are known (and every
        // keyframe asked meanwhile).
        let falling = floor.and_then(|(f, rate)| {
            let flows = items[f].current.filter(|c| *c > temporal[f].2)?;
            let sent_bps = items[f].rates[usize::from(flows)] as f64;
            let delivered_bps = (sent_bps * (1.0 - f64::from(heavy_loss?))) as u64;
            (delivered_bps < rate).then_some(delivered_bps)
        });
        if let Some((f, rate)) = floor
            && plan.floor
            && let (bytes, from, lowest) = temporal[f]
            && targets[f] == Some(lowest)
            && (from < ALL_TEMPORAL || settled || falling.is_some())
        {
            // Once thinned, the budget as it is says how far (a hold keeps layers, not
            // pictures); more as `adaptation` lets.
            let b = if plan.hold { budget } else { plan.budget };
            let mut wanted = b
                .filter(|b| from < ALL_TEMPORAL && (*b as f64) < rate as f64 * UP_HEADROOM)
                .and_then(|b| cap_for(&bytes, rate, b, from, UP_HEADROOM))
                .unwrap_or(ALL_TEMPORAL);
            let top = bytes.iter().rposition(|b| *b > 0).unwrap_or(0) as u8;
            if let Some(d) = falling
                && top > 0
            {
                wanted = wanted.min(cap_for(&bytes, rate, d, ALL_TEMPORAL, 1.0).unwrap_or(0));
                thinned = true;
                debug!(participant = %id, delivered_bps = d, lowest_layer_bps = rate,
                    cap = wanted, "down for losses to the lowest layer: starts thinned");
            }
            // Losses of what flows now: a layer less, at each report that says so
            // (unless padding may have caused them); heavy ones, straight to the base
            // layer: each step asks for a keyframe, which a link that short loses too.
            // (Not where links are shaped: the shaping pacer holds back what overruns
            // the link. Straight to the base layer there, keyframes five frames large
            // broke the picture 4.9 s of 30 in sans-IO at 1.0 x the lowest layer.)
            let for_loss = news && settled && reading.unpadded && top > 0;
            if for_loss {
                wanted = wanted.min(if heavy_loss.is_some() {
                    0
                } else {
                    from.min(top).saturating_sub(1)
                });
            }
            caps[f] = p
                .downlink
                .adaptation
                .bound_temporal(now, from, wanted, !padding_off);
            thinned = thinned || (for_loss && caps[f] < from.min(top));
            let total: u64 = bytes.iter().sum();
            if caps[f] < ALL_TEMPORAL && total > 0 {
                let kept: u64 = bytes.iter().take(usize::from(caps[f]) + 1).sum();
                let takes = (rate as f64 * kept as f64 / total as f64) as u64;
                allocated -= rate - takes.min(rate);
                floor_takes = Some((f, takes));
            } else {
                floor_takes = Some((f, rate));
            }
        }
        // What the link dropped likely held a picture the next ones reference (resends
        // may be refused, or lost too), and Chromium asks for a keyframe only after 3 s
        // without one to decode: the floor video's publisher is asked when losses left
        // layers out (the thinned stream carries it; a round later, once its spare has
        // refilled a policer's tokens, unless links are shaped), else at most every 2 s,
        // and again once its own receiver reports say its link is clean after losses.
        let keyframe_wait = if config.shape_links {
            Duration::ZERO
        } else {
            THIN_KEYFRAME_DELAY
        };
        let clean = floor
            .and_then(|(f, _)| p.subscriptions.get(slots[f])?.reported)
            .filter(|(at, _)| flowing.is_some() && now.saturating_duration_since(*at) < LOSS_FRESH)
            .is_some_and(|(at, loss)| p.downlink.adaptation.new_clean(at, loss));
        let keyframe_for_loss = flowing.filter(|_| {
            p.downlink.adaptation.keyframe_for_loss(
                now,
                news,
                thinned.then_some(keyframe_wait),
                clean,
            )
        });
        let unpaced_floor = floor_takes
            .filter(|(_, takes)| budget.is_some_and(|b| b < *takes))
            .map(|(f, _)| f);
        // What the floor video lacks to flow whole within the budget, if it does.
        let short = floor.and_then(|(f, rate)| {
            let (_, takes) = floor_takes?;
            if caps[f] < ALL_TEMPORAL {
                Some(rate.saturating_sub(takes))
            } else {
                budget.filter(|b| *b < rate).map(|_| step_up.unwrap_or(0))
            }
        });
        p.downlink.chosen_bps = audio_bps + allocated;
        p.downlink.ideal_bps = audio_bps + ideal_bps;
        // Losses left pictures out of the floor video: its link carries less than a
        // transport-wide estimate far above what flows says (a policer builds no queue
        // for a delay-based estimate to see). Its pacer goes at that estimate, where a
        // keyframe leaves in a burst that the policer cuts, and the picture stays broken
        // until the next: the estimate starts again from what flows now.
        // (Never under what steering asks at least: an estimator started near zero
        // would climb back from nothing.)
        let restart =
            ((p.downlink.chosen_bps as f64 * ESTIMATE_RESTART) as u64).max(NOMINAL_AUDIO_BPS);
        if thinned
            && p.downlink.shape.rate.is_none()
            && p.downlink.estimate_is_twcc
            && p.downlink.estimate.is_some_and(|e| e > restart * 3 / 2)
        {
            debug!(participant = %id, estimate = ?p.downlink.estimate, restart,
                "losses thinned the floor video: estimate restarted");
            p.rtc.bwe().reset(Bitrate::bps(restart));
            p.downlink.estimate = Some(restart);
        }
        p.downlink.lowest_bps = audio_bps
            + items
                .iter()
                .filter(|it| it.wanted.is_some())
                .map(|it| it.rates[0])
                .sum::<u64>();
        let unpaced = unpaced_floor
            .and_then(|f| p.subscriptions.get(slots[f]))
            .map(|s| s.mid());
        if unpaced != p.downlink.unpaced {
            // By m-line: a subscription that ends leaves its stream to the next track.
            // (A stream not made yet is tried again at the next choice.)
            // (While its link is shaped, str0m paces none of its video: `shaping.rs`.)
            let shaped = p.downlink.shape.rate.is_some();
            let mut api = p.rtc.direct_api();
            if let Some((m, tx)) = p
                .downlink
                .unpaced
                .and_then(|m| Some((m, api.stream_tx_by_mid(m, None)?)))
            {
                tx.set_unpaced(shaped);
                if shaped && !p.downlink.str0m_unpaced.contains(&m) {
                    p.downlink.str0m_unpaced.push(m);
                }
            }
            let set = match unpaced.map(|m| api.stream_tx_by_mid(m, None)) {
                Some(Some(tx)) => {
                    tx.set_unpaced(true);
                    unpaced
                }
                _ => None,
            };
            // (And the shard's pacer, where it shapes the link.)
            let ssrcs: Vec<u32> = set
                .and_then(|m| api.stream_tx_by_mid(m, None))
                .map(|tx| {
                    [Some(tx.ssrc()), tx.rtx()]
                        .into_iter()
                        .flatten()
                        .map(|s| *s)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(pacer) = p.pacer.as_mut() {
                pacer.exempt(&ssrcs);
            }
            debug!(participant = %id, unpaced = ?set, "floor video bypasses the pacer");
            p.downlink.unpaced = set;
        }
        let connected = p.rtc.is_connected();
        let mut awaited: Vec<(TrackId, u8)> = Vec::new();
        let lossy = reading.loss.is_some_and(|l| l > DOWN_LOSS);
        for ((slot, target), cap) in slots.into_iter().zip(targets).zip(caps) {
            if let Some(s) = p.subscriptions.get_mut(slot) {
                s.target = target;
                if s.temporal.target != cap {
                    debug!(participant = %id, track = %s.track_id(), cap, "temporal layers");
                    s.temporal.target = cap;
                }
                // (An SVC stream goes down at any picture; only up needs a keyframe.)
                let svc = self.tracks.get(&s.track_id()).is_some_and(|t| t.svc);
                // Down for losses: the layer the link drops stops at once (its picture is
                // broken already), and the link drains before the lower layer's keyframe
                // comes through it whole.
                if lossy && !svc && target.is_some_and(|t| s.current.is_some_and(|c| t < c)) {
                    s.current = None;
                }
                // (Not for the layer its pacer's backlog was cut at while it drains: the
                // keyframe would be cut too, and asked again and again, at a cost to every
                // subscriber of the track. A lower layer is asked at once.)
                let shaped = shaped_since(&p.pacer, &p.downlink, s.mid());
                let mut draining = || {
                    s.cut == target
                        && p.rtc
                            .direct_api()
                            .stream_tx_by_mid(s.mid(), None)
                            .is_some_and(|tx| backlogged(tx, shaped, now))
                };
                if let Some(l) = target
                    && connected
                    && s.current != target
                    && (!svc || s.current.is_none_or(|c| l > c))
                    && !draining()
                {
                    awaited.push((s.track_id(), l));
                }
            }
        }
        let estimate = p.downlink.estimate;
        // (Asked every time, so that its state is dropped once the floor is back.)
        let probe_floor = p.downlink.adaptation.probe_floor(now, estimate) && !plan.floor;
        let probe = p
            .downlink
            .adaptation
            .probe_unpadded(now, short.is_some() || (padding_off && step_up.is_some()));
        self.steer_estimator(
            id,
            Steering {
                audio: audio_bps,
                allocated,
                ideal: ideal_bps,
                step_up,
                floor: plan.floor,
                probe_floor,
                short,
                probe,
                loss: reading.loss,
            },
        );
        awaited.extend(keyframe_for_loss);
        for (track_id, layer) in awaited {
            if let Some(t) = self.tracks.get_mut(&track_id) {
                let layer = usize::from(t.keyframe_layer(layer));
                if let Some(l) = t.layers.get_mut(layer) {
                    l.waiting = true;
                }
            }
        }
    }
}
