//! The synthetic media frames of the load generator, made and read the way a browser's
//! are: a publisher makes a whole frame (a VP8 frame or an Opus packet, stamped with its
//! send time), encrypts it end to end (SFrame, [`crate::e2ee`]) unless the run is
//! `--plaintext`, and only then splits it into RTP payloads; a subscriber puts a frame's
//! packets back together, decrypts it with the key its sender gave it, and reads the
//! stamp. Keys travel in `e2ee` messages ([`key_message`]).

use std::time::Instant;

use crate::e2ee::{BASE_KEY_BYTES, Codec, FrameError, ReceiverKeys, SenderKey};

/// Marks our synthetic frames: magic, then the send time in ns since the run's epoch.
const MAGIC: u32 = 0x5346_5542; // "SFUB"
/// The stamp: magic and send time.
pub const STAMP: usize = 12;
/// The VP8 payload descriptor (RFC 7741) at the start of every video packet: X=1, I=1
/// with a 15-bit picture id.
pub const VP8_DESCRIPTOR: usize = 4;
/// A VP8 keyframe's first bytes (frame tag, start code, dimensions) and a delta frame's
/// (frame tag): the stamp follows them.
const VP8_KEY_HEADER: usize = 10;
const VP8_DELTA_HEADER: usize = 3;
/// Largest video packet payload.
pub const MTU_PAYLOAD: usize = 1100;
/// What an `e2ee` message of the load generator carries: its sender's base key, in the
/// clear. (The browser client encrypts keys to each recipient; the load generator
/// measures the server, which relays either without reading it.)
const KEY_PREFIX: &str = "bench-sframe-key";

/// An Opus-sized audio frame of `size` bytes (at least a stamp's), stamped with `ns`.
pub fn audio_frame(size: usize, ns: u64) -> Vec<u8> {
    let mut frame = vec![0u8; size.max(STAMP)];
    write_stamp(&mut frame, ns);
    frame
}

/// A VP8 frame of `bytes` (at least its header and a stamp): the frame tag, with P clear
/// on a keyframe (RFC 6386, section 9.1), a keyframe's start code and 640x360, then the
/// stamp `ns`.
pub fn vp8_frame(keyframe: bool, bytes: usize, ns: u64) -> Vec<u8> {
    let mut frame = if keyframe {
        // size0 0, show_frame 1, version 0, P 0; start code; 640 and 360, no scaling.
        vec![0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
    } else {
        vec![0x11, 0x00, 0x00]
    };
    let header = frame.len();
    frame.resize(bytes.max(header + STAMP), 0);
    write_stamp(&mut frame[header..], ns);
    frame
}

/// The RTP payloads of one (maybe encrypted) VP8 frame: each a payload descriptor (the
/// frame's first with S set) and at most `MTU_PAYLOAD` bytes in all.
pub fn vp8_packets(frame: &[u8], picture_id: u16) -> impl Iterator<Item = Vec<u8>> + '_ {
    frame
        .chunks(MTU_PAYLOAD - VP8_DESCRIPTOR)
        .enumerate()
        .map(move |(i, part)| {
            let mut payload = Vec::with_capacity(VP8_DESCRIPTOR + part.len());
            payload.extend_from_slice(&vp8_descriptor(i == 0, picture_id));
            payload.extend_from_slice(part);
            payload
        })
}

/// A VP8 payload descriptor (RFC 7741, section 4.2) as a browser's packetizer writes it.
fn vp8_descriptor(first: bool, picture_id: u16) -> [u8; VP8_DESCRIPTOR] {
    [
        // X = 1 (extensions follow), N = 0, S = 1 on a frame's first packet, PID = 0.
        if first { 0x90 } else { 0x80 },
        // I = 1: a picture id follows; no TL0PICIDX, TID or KEYIDX.
        0x80,
        // M = 1: the picture id has 15 bits.
        0x80 | ((picture_id >> 8) as u8 & 0x7f),
        picture_id as u8,
    ]
}

/// Whether a VP8 RTP payload starts a keyframe: its descriptor starts a frame, and the
/// frame tag after it (in the clear, end-to-end encrypted or not) has P clear.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    matches!(parse_vp8_descriptor(payload), Some((len, true)) if payload.get(len).is_some_and(|tag| tag & 0x01 == 0))
}

/// The length of a VP8 payload descriptor (RFC 7741, section 4.2), and whether it starts
/// a frame (S = 1, PID = 0).
fn parse_vp8_descriptor(payload: &[u8]) -> Option<(usize, bool)> {
    let b0 = *payload.first()?;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        // X: I | L | T | K | reserved.
        let ext = *payload.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            // I: a 7-bit picture id, or 15 bits when M is set.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // L: TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // T or K: TID | Y | KEYIDX
        }
    }
    (at <= payload.len()).then_some((at, b0 & 0x1f == 0x10))
}

/// Writes MAGIC and the send time (ns since the run's epoch) at the start of `frame`.
fn write_stamp(frame: &mut [u8], ns: u64) {
    frame[..4].copy_from_slice(&MAGIC.to_be_bytes());
    frame[4..STAMP].copy_from_slice(&ns.to_be_bytes());
}

/// The send time stamped in a frame as it was made (decrypted): after the VP8 header,
/// at the start of audio. `None` when it is not one of ours.
pub fn stamp_of(codec: Codec, frame: &[u8]) -> Option<u64> {
    let at = match codec {
        Codec::Vp8 if frame.first()? & 0x01 == 0 => VP8_KEY_HEADER,
        Codec::Vp8 => VP8_DELTA_HEADER,
        Codec::Opus => 0,
    };
    let stamp = frame.get(at..at + STAMP)?;
    (stamp[..4] == MAGIC.to_be_bytes())
        .then(|| u64::from_be_bytes(stamp[4..].try_into().unwrap_or_default()))
}

/// The `data` of the `e2ee` message that hands a sender's key to another participant.
pub fn key_message(key: &SenderKey) -> String {
    let hex: String = key.base_key().iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_PREFIX} {} {hex}", key.kid())
}

/// The KID and base key of a [`key_message`].
pub fn parse_key_message(data: &str) -> Option<(u64, [u8; BASE_KEY_BYTES])> {
    let mut words = data.split(' ');
    if words.next()? != KEY_PREFIX {
        return None;
    }
    let kid = words.next()?.parse().ok()?;
    let hex = words.next()?;
    if hex.len() != 2 * BASE_KEY_BYTES || words.next().is_some() {
        return None;
    }
    let mut key = [0u8; BASE_KEY_BYTES];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((kid, key))
}

/// What a client counted of end-to-end encryption.
#[derive(Debug, Default, Clone, Copy)]
pub struct E2eeCounts {
    /// Frames it encrypted.
    pub encrypted: u64,
    /// Frames it received whole and decrypted (or, in a plaintext run, read).
    pub decrypted: u64,
    /// Received frames of a sender whose key had not come yet, or that no key it holds
    /// decrypts while it cannot tell their sender (a slot's new track, announced after
    /// its first packets) or some publisher's key has not come.
    pub no_key: u64,
    /// Received frames of a sender whose key it holds that did not decrypt with any key,
    /// while no publisher's key was missing: never, if all works.
    pub failed: u64,
    /// Video frames that lost a packet on the way, not tried.
    pub incomplete: u64,
}

/// One client's frame keys: its own (when it encrypts and publishes) and those others
/// gave it, with what it counted.
pub struct Crypt {
    /// `None` in a plaintext run, or for a client that publishes nothing.
    sender: Option<SenderKey>,
    /// Frames are encrypted end to end (not a `--plaintext` run).
    e2ee: bool,
    keys: ReceiverKeys,
    /// Participants whose keys it holds, to try when a frame's sender is not known.
    senders: Vec<u64>,
    pub counts: E2eeCounts,
    /// The last frame encrypted or decrypted.
    scratch: Vec<u8>,
}

impl Crypt {
    /// With `e2ee`, a fresh random key when it `publishes`.
    pub fn new(e2ee: bool, publishes: bool) -> anyhow::Result<Crypt> {
        let sender = if e2ee && publishes {
            Some(SenderKey::random(0)?)
        } else {
            None
        };
        Ok(Crypt {
            sender,
            e2ee,
            keys: ReceiverKeys::default(),
            senders: Vec::new(),
            counts: E2eeCounts::default(),
            scratch: Vec::new(),
        })
    }

    /// The `e2ee` data handing its key to another participant; `None` when it has none.
    pub fn key_message(&self) -> Option<String> {
        self.sender.as_ref().map(key_message)
    }

    /// Takes a key another participant sent; false if the data is not one.
    pub fn take_key(&mut self, from: u64, data: &str) -> bool {
        let Some((kid, key)) = parse_key_message(data) else {
            return false;
        };
        if self.keys.insert(from, kid, &key).is_err() {
            return false;
        }
        if !self.senders.contains(&from) {
            self.senders.push(from);
        }
        true
    }

    /// The frame to packetize: `frame` encrypted, or as it is in a plaintext run.
    pub fn seal<'a>(&'a mut self, codec: Codec, frame: &'a [u8]) -> anyhow::Result<&'a [u8]> {
        let Some(sender) = self.sender.as_mut() else {
            return Ok(frame);
        };
        sender.encrypt(codec, frame, &mut self.scratch)?;
        self.counts.encrypted += 1;
        Ok(&self.scratch)
    }

    /// Whether it holds a key of `sender`.
    pub fn knows(&self, sender: u64) -> bool {
        self.keys.knows(sender)
    }

    /// A whole received frame from `sender` (if known): its stamp once decrypted, or
    /// `None` (counted) when it does not decrypt. `waiting` tells, when no key it holds
    /// decrypts the frame, whether a publisher's key has not come yet.
    pub fn open(
        &mut self,
        codec: Codec,
        sender: Option<u64>,
        frame: &[u8],
        waiting: impl FnOnce(&Crypt) -> bool,
    ) -> Option<u64> {
        if !self.e2ee {
            self.counts.decrypted += 1;
            return stamp_of(codec, frame);
        }
        // The sender its m-line carries, then the others: a slot's track may have changed
        // a moment before the `slots` message says so.
        let first = sender.filter(|s| self.keys.knows(*s));
        let others = self.senders.iter().copied().filter(|s| Some(*s) != first);
        let mut error = FrameError::NoKey;
        for s in first.into_iter().chain(others) {
            match self.keys.decrypt(s, codec, frame, &mut self.scratch) {
                Ok(()) => {
                    self.counts.decrypted += 1;
                    return stamp_of(codec, &self.scratch);
                }
                Err(FrameError::NoKey) => {}
                Err(e) => error = e,
            }
        }
        // Undecryptable only if it came from a sender whose key it holds while no key is
        // missing: media may overtake the signaling that announces its track, its slot
        // or its key.
        if error == FrameError::NoKey || first.is_none() || waiting(self) {
            self.counts.no_key += 1;
        } else {
            self.counts.failed += 1;
        }
        None
    }
}

/// The frame an incoming VP8 stream is assembling from its packets.
#[derive(Default)]
pub struct Assembly {
    /// The frame's RTP timestamp and the next sequence number it expects; `None` between
    /// frames.
    at: Option<(u32, u64)>,
    /// A packet is missing: the frame is dropped at its end.
    broken: bool,
    data: Vec<u8>,
    /// When each of its packets arrived.
    pub arrivals: Vec<Instant>,
}

impl Assembly {
    /// Adds a packet; returns the frame when this packet completed it whole (its
    /// packets' arrival times are in `arrivals`). A frame that lost a packet is counted in
    /// `incomplete`.
    pub fn push(
        &mut self,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: &[u8],
        at: Instant,
        incomplete: &mut u64,
    ) -> Option<&[u8]> {
        let (len, start) = parse_vp8_descriptor(payload)?;
        if start {
            if self.at.is_some() {
                *incomplete += 1; // The previous frame's end never came.
            }
            self.at = Some((ts, seq));
            self.broken = false;
            self.data.clear();
            self.arrivals.clear();
        }
        let Some((frame_ts, next)) = self.at else {
            return None; // The middle of a frame whose start was lost.
        };
        if frame_ts != ts || seq != next {
            self.broken = true;
        }
        self.at = Some((frame_ts, seq + 1));
        self.data.extend_from_slice(&payload[len..]);
        self.arrivals.push(at);
        if !marker {
            return None;
        }
        self.at = None;
        if self.broken {
            *incomplete += 1;
            return None;
        }
        Some(&self.data)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    #[test]
    fn the_first_packet_of_a_keyframe_is_one_for_the_server_even_encrypted() {
        let frame = vp8_frame(true, 3000, 42);
        let mut crypt = Crypt::new(true, true).unwrap();
        let sealed = crypt.seal(Codec::Vp8, &frame).unwrap().to_vec();
        assert_ne!(
            sealed[VP8_KEY_HEADER..][..20],
            frame[VP8_KEY_HEADER..][..20]
        );
        let packets: Vec<Vec<u8>> = vp8_packets(&sealed, 0x1234).collect();
        assert_eq!(packets.len(), 3);
        assert!(packets.iter().all(|p| p.len() <= MTU_PAYLOAD));
        assert_eq!(
            packets[0][..VP8_DESCRIPTOR + 1],
            [
                0x90, // X = 1, S = 1, PID = 0
                0x80, // I = 1
                0x92, 0x34, // M = 1, picture id 0x1234
                0x10, // the frame tag, in the clear: P = 0 (keyframe)
            ]
        );
        assert!(str0m::format::detect_vp8_keyframe(&packets[0]));
        assert!(!str0m::format::detect_vp8_keyframe(&packets[1]));
        let delta = vp8_frame(false, 500, 43);
        let sealed = crypt.seal(Codec::Vp8, &delta).unwrap().to_vec();
        let first = vp8_packets(&sealed, 0x1235).next().unwrap();
        assert!(!str0m::format::detect_vp8_keyframe(&first));
    }

    #[test]
    fn a_frame_goes_out_in_packets_and_comes_back_decrypted() {
        let mut alice = Crypt::new(true, true).unwrap();
        let mut bob = Crypt::new(true, false).unwrap();
        assert!(bob.key_message().is_none(), "bob publishes nothing");
        let now = Instant::now();
        let frame = vp8_frame(true, 2500, 4242);
        let sealed = alice.seal(Codec::Vp8, &frame).unwrap().to_vec();
        let mut assembly = Assembly::default();
        let mut incomplete = 0;
        let packets: Vec<Vec<u8>> = vp8_packets(&sealed, 9).collect();
        let n = packets.len();
        let mut whole = None;
        for (i, p) in packets.iter().enumerate() {
            whole = assembly
                .push(100 + i as u64, 9000, i + 1 == n, p, now, &mut incomplete)
                .map(<[u8]>::to_vec);
        }
        let whole = whole.unwrap();
        assert_eq!(whole, sealed);
        assert_eq!(assembly.arrivals.len(), n);
        // No key yet: counted, nothing read.
        assert_eq!(bob.open(Codec::Vp8, Some(11), &whole, |_| false), None);
        assert_eq!(bob.counts.no_key, 1);
        assert!(bob.take_key(11, &alice.key_message().unwrap()));
        assert_eq!(
            bob.open(Codec::Vp8, Some(11), &whole, |_| false),
            Some(4242)
        );
        // Sent by someone the receiver did not expect (a slot that changed tracks).
        assert_eq!(
            bob.open(Codec::Vp8, Some(99), &whole, |_| false),
            Some(4242)
        );
        assert_eq!(bob.counts.decrypted, 2);
        let mut altered = whole.clone();
        altered[VP8_KEY_HEADER + 30] ^= 1;
        assert_eq!(bob.open(Codec::Vp8, Some(11), &altered, |_| true), None);
        assert_eq!(
            (bob.counts.failed, bob.counts.no_key),
            (0, 2),
            "while a key is missing, maybe that one's"
        );
        assert_eq!(bob.open(Codec::Vp8, None, &altered, |_| false), None);
        assert_eq!(
            (bob.counts.failed, bob.counts.no_key),
            (0, 3),
            "from a sender it cannot tell"
        );
        assert_eq!(bob.open(Codec::Vp8, Some(11), &altered, |_| false), None);
        assert_eq!(bob.counts.failed, 1);
        // Audio: one packet, one frame.
        let sealed = alice
            .seal(Codec::Opus, &audio_frame(80, 77))
            .unwrap()
            .to_vec();
        assert_eq!(
            bob.open(Codec::Opus, Some(11), &sealed, |_| false),
            Some(77)
        );
        assert_eq!(alice.counts.encrypted, 2);
    }

    #[test]
    fn a_frame_that_lost_a_packet_is_not_tried() {
        let frame = vp8_frame(false, 3000, 1);
        let packets: Vec<Vec<u8>> = vp8_packets(&frame, 3).collect();
        let mut assembly = Assembly::default();
        let mut incomplete = 0;
        let now = Instant::now();
        assert!(
            assembly
                .push(1, 10, false, &packets[0], now, &mut incomplete)
                .is_none()
        );
        // Packet 2 is lost.
        assert!(
            assembly
                .push(3, 10, true, &packets[2], now, &mut incomplete)
                .is_none()
        );
        assert_eq!(incomplete, 1);
        // The next frame comes whole.
        let next: Vec<Vec<u8>> = vp8_packets(&frame, 4).collect();
        let mut got = None;
        for (i, p) in next.iter().enumerate() {
            got = assembly
                .push(4 + i as u64, 20, i == 2, p, now, &mut incomplete)
                .map(<[u8]>::to_vec);
        }
        assert_eq!(got.unwrap(), frame);
        assert_eq!(stamp_of(Codec::Vp8, &frame), Some(1));
    }

    #[test]
    fn a_plaintext_run_reads_frames_as_they_are() {
        let mut crypt = Crypt::new(false, true).unwrap();
        assert!(crypt.key_message().is_none());
        let frame = audio_frame(80, 5);
        assert_eq!(crypt.seal(Codec::Opus, &frame).unwrap(), &frame[..]);
        assert_eq!(crypt.open(Codec::Opus, None, &frame, |_| false), Some(5));
        assert_eq!(stamp_of(Codec::Vp8, &vp8_frame(false, 50, 6)), Some(6));
        assert_eq!(stamp_of(Codec::Opus, &[0u8; 30]), None);
    }

    #[test]
    fn key_messages_round_trip_and_refuse_anything_else() {
        let key = SenderKey::random(3).unwrap();
        let data = key_message(&key);
        assert_eq!(parse_key_message(&data), Some((0x300, *key.base_key())));
        assert_eq!(parse_key_message("hello"), None);
        assert_eq!(parse_key_message("bench-sframe-key 1 abcd"), None);
        assert_eq!(parse_key_message(&format!("{data} more")), None);
    }
}
