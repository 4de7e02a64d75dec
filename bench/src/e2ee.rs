//! End-to-end encryption of media frames as the browser client does it, for the load
//! generator: SFrame (RFC 9605) with cipher suite AES_256_GCM_SHA512_128, through the
//! `sframe` crate. The frame layout (docs/e2ee.md):
//!
//! ```text
//! encrypted frame = clear || sframe_header || ciphertext || tag (16 bytes)
//! aad             = sframe_header || clear
//! ```
//!
//! `clear` is the frame's first bytes, which the server and the receiver's depacketizer
//! need: for VP8 10 on a keyframe (frame tag, start code, dimensions), 3 otherwise (frame
//! tag), never more than the frame has minus one; for Opus none. (VP9 and AV1 keep none
//! either; they and H.264, whose NAL headers stay clear and whose ciphertext is escaped
//! against start codes, are not done here: the load generator sends VP8 and Opus only.)
//! The key and salt are derived per RFC 9605 section 4.4.2 from a 32-byte base key and the
//! KID, `(epoch << 8) | ratchet_step`; the nonce is the salt XOR the frame counter (CTR),
//! which counts frames per sender and KID from 0, across all the sender's tracks.

use std::collections::HashMap;
use std::fmt;

use sframe::CipherSuite;
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};

/// AES_256_GCM_SHA512_128 (0x0005): 256-bit keys, as the product promises.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm256Sha512;

/// The authentication tag at the end of every encrypted frame.
pub const TAG_BYTES: usize = 16;

/// A sender's base key, from which each KID's key and salt are derived.
pub const BASE_KEY_BYTES: usize = 32;

/// A frame's codec, which decides how many of its first bytes stay in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Opus,
}

/// Why a frame was not encrypted or decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No key of this sender with the frame's KID.
    NoKey,
    /// A key was there but the frame did not authenticate (altered, or another key).
    Unauthentic,
    /// Too short, or no SFrame header where it should be.
    Malformed,
    /// The crypto library refused (a counter exhausted, a key that cannot be derived).
    Crypto,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::NoKey => "no key for the frame's KID",
            FrameError::Unauthentic => "the frame does not authenticate",
            FrameError::Malformed => "not an SFrame frame",
            FrameError::Crypto => "the crypto library refused",
        })
    }
}

impl std::error::Error for FrameError {}

/// The KID of a sender's key: `epoch` counts its fresh random keys (0, 1, 2, ...),
/// `ratchet_step` the ratchets of that key.
pub fn kid(epoch: u64, ratchet_step: u8) -> u64 {
    (epoch << 8) | u64::from(ratchet_step)
}

/// How many first bytes of `frame` a sender leaves in the clear.
pub fn clear_bytes(codec: Codec, frame: &[u8]) -> usize {
    let wanted = match codec {
        Codec::Vp8 if frame.first().is_some_and(|b| vp8_keyframe(*b)) => 10,
        Codec::Vp8 => 3,
        Codec::Opus => 0,
    };
    wanted.min(frame.len().saturating_sub(1))
}

/// Whether a VP8 frame whose first byte is `tag0` is a keyframe (RFC 6386, section 9.1:
/// the frame tag's P bit, 0 on a keyframe).
fn vp8_keyframe(tag0: u8) -> bool {
    tag0 & 0x01 == 0
}

/// Encrypts `clear || payload` with `key` and frame counter `ctr` into `out` (replaced):
/// `clear || header || ciphertext || tag`, the clear bytes authenticated.
pub fn encrypt_frame(
    key: &EncryptionKey,
    ctr: u64,
    clear: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let mut counter = MonotonicCounter::with_start_value(ctr, ctr);
    let frame = MediaFrameView::try_with_meta_data(&mut counter, payload, clear)
        .map_err(|_| FrameError::Crypto)?;
    frame
        .encrypt_into(key, out)
        .map_err(|_| FrameError::Crypto)?;
    Ok(())
}

/// Decrypts an encrypted frame whose first `clear` bytes are in the clear into `out`
/// (replaced): the frame as it was sent, clear bytes first.
pub fn decrypt_frame(
    key: &DecryptionKey,
    clear: usize,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let (meta, sframe) = frame.split_at_checked(clear).ok_or(FrameError::Malformed)?;
    let view =
        EncryptedFrameView::try_with_meta_data(sframe, meta).map_err(|_| FrameError::Malformed)?;
    if view.header().key_id() != key.key_id() {
        return Err(FrameError::NoKey);
    }
    view.decrypt_into(key, out)
        .map_err(|_| FrameError::Unauthentic)?;
    Ok(())
}

/// The SFrame header of an encrypted frame whose first `clear` bytes are in the clear.
fn header_at(frame: &[u8], clear: usize) -> Option<SframeHeader> {
    SframeHeader::deserialize(frame.get(clear..)?).ok()
}

/// Where an encrypted frame's clear bytes may end: the codec's count, or for a frame
/// shorter than that, one less than its plaintext length (which the header and tag
/// lengths give). In order of likelihood.
fn clear_candidates(codec: Codec, frame: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let full = match codec {
        Codec::Vp8 if frame.first().is_some_and(|b| vp8_keyframe(*b)) => 10,
        Codec::Vp8 => 3,
        Codec::Opus => 0,
    };
    let long = header_at(frame, full)
        .is_some_and(|h| frame.len() > full + h.len() + TAG_BYTES)
        .then_some(full);
    // A short frame of n bytes keeps n - 1 clear and encrypts one.
    let short = (0..full).rev().filter(move |&c| {
        header_at(frame, c).is_some_and(|h| frame.len() == c + h.len() + TAG_BYTES + 1)
    });
    long.into_iter().chain(short)
}

/// One sender's current key (of one KID) and its frame counter.
pub struct SenderKey {
    base: [u8; BASE_KEY_BYTES],
    epoch: u64,
    key: EncryptionKey,
    /// The next frame's CTR: per KID, from 0, shared by all the sender's tracks.
    next_ctr: u64,
}

impl SenderKey {
    /// A fresh random base key for `epoch`.
    pub fn random(epoch: u64) -> Result<SenderKey, FrameError> {
        let mut base = [0u8; BASE_KEY_BYTES];
        rand::fill(&mut base);
        SenderKey::new(base, epoch)
    }

    pub fn new(base: [u8; BASE_KEY_BYTES], epoch: u64) -> Result<SenderKey, FrameError> {
        let key = EncryptionKey::derive_from(CIPHER_SUITE, kid(epoch, 0), base)
            .map_err(|_| FrameError::Crypto)?;
        Ok(SenderKey {
            base,
            epoch,
            key,
            next_ctr: 0,
        })
    }

    pub fn kid(&self) -> u64 {
        kid(self.epoch, 0)
    }

    pub fn base_key(&self) -> &[u8; BASE_KEY_BYTES] {
        &self.base
    }

    /// Encrypts one frame of `codec` into `out` (replaced).
    pub fn encrypt(
        &mut self,
        codec: Codec,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let clear = clear_bytes(codec, frame);
        let ctr = self.next_ctr;
        self.next_ctr += 1;
        encrypt_frame(&self.key, ctr, &frame[..clear], &frame[clear..], out)
    }
}

/// The keys a receiver was given, by sender (participant id) and KID.
#[derive(Default)]
pub struct ReceiverKeys {
    keys: HashMap<(u64, u64), DecryptionKey>,
}

impl ReceiverKeys {
    /// Takes `sender`'s base key of KID `kid`.
    pub fn insert(&mut self, sender: u64, kid: u64, base: &[u8]) -> Result<(), FrameError> {
        let key =
            DecryptionKey::derive_from(CIPHER_SUITE, kid, base).map_err(|_| FrameError::Crypto)?;
        self.keys.insert((sender, kid), key);
        Ok(())
    }

    /// Whether it holds a key of `sender`.
    pub fn knows(&self, sender: u64) -> bool {
        self.keys.keys().any(|(s, _)| *s == sender)
    }

    /// Decrypts a frame of `codec` from `sender` into `out` (replaced): the frame as it
    /// was sent.
    pub fn decrypt(
        &self,
        sender: u64,
        codec: Codec,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let mut error = FrameError::Malformed;
        for clear in clear_candidates(codec, frame) {
            let Some(header) = header_at(frame, clear) else {
                continue;
            };
            let Some(key) = self.keys.get(&(sender, header.key_id())) else {
                error = error.max_with(FrameError::NoKey);
                continue;
            };
            match decrypt_frame(key, clear, frame, out) {
                Ok(()) => return Ok(()),
                Err(e) => error = error.max_with(e),
            }
        }
        Err(error)
    }
}

impl FrameError {
    /// The more telling of two failures: a frame that did not authenticate over one with
    /// no key, over one that is malformed.
    fn max_with(self, other: FrameError) -> FrameError {
        let rank = |e: FrameError| match e {
            FrameError::Malformed => 0,
            FrameError::NoKey => 1,
            FrameError::Crypto => 2,
            FrameError::Unauthentic => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use ring::{hkdf, hmac};
    use sframe::crypto::{get_hkdf_key_expand_label, get_hkdf_salt_expand_label};

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9605, appendix C, the vector of cipher suite 0x0005 (AES_256_GCM_SHA512_128),
    /// as in the sframe-wg/sframe repository's test-vectors/sframe.md.
    struct Vector {
        kid: u64,
        ctr: u64,
        base_key: &'static str,
        sframe_key_label: &'static str,
        sframe_salt_label: &'static str,
        sframe_secret: &'static str,
        sframe_key: &'static str,
        sframe_salt: &'static str,
        metadata: &'static str,
        nonce: &'static str,
        aad: &'static str,
        pt: &'static str,
        ct: &'static str,
    }

    const RFC9605_0005: Vector = Vector {
        kid: 0x0000_0000_0000_0123,
        ctr: 0x0000_0000_0000_4567,
        base_key: "000102030405060708090a0b0c0d0e0f",
        sframe_key_label: "534672616d6520312e30205365637265 74206b65792000000000000001230005",
        sframe_salt_label: "534672616d6520312e30205365637265 742073616c7420000000000000012300 05",
        sframe_secret: "0fc3ea6de6aac97a35f194cf9bed94d4 b5230f1cb45a785c9fe5dce9c188938a \
                        b6ba005bc4c0a19181599e9d1bcf7b74 aca48b60bf5e254e546d809313e083a3",
        sframe_key: "d3e27b0d4a5ae9e55df01a70e6d4d28d 969b246e2936f4b7a5d9b494da6b9633",
        sframe_salt: "84991c167b8cd23c93708ec7",
        metadata: "4945544620534672616d65205747",
        nonce: "84991c167b8cd23c9370cba0",
        aad: "99012345674945544620534672616d65 205747",
        pt: "64726166742d696574662d736672616d 652d656e63",
        ct: "990123456794f509d36e9beacb0e261d 99c7d1e972f1fed787d4049f17ca2135 \
             3c1cc24d56ceabced279",
    };

    struct Len(usize);

    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn rfc_9605_vector_of_aes_256_gcm_sha512_128() {
        let v = RFC9605_0005;
        assert_eq!(CIPHER_SUITE as u16, 0x0005);
        // Key derivation (section 4.4.2), recomputed with ring's HMAC and HKDF, apart
        // from sframe: HKDF-Extract with an empty salt, then Expand with the labels.
        let key_label = get_hkdf_key_expand_label(v.kid, CIPHER_SUITE);
        let salt_label = get_hkdf_salt_expand_label(v.kid, CIPHER_SUITE);
        assert_eq!(key_label, hex(v.sframe_key_label));
        assert_eq!(salt_label, hex(v.sframe_salt_label));
        let secret = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, b""), &hex(v.base_key));
        assert_eq!(secret.as_ref(), hex(v.sframe_secret));
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA512, secret.as_ref());
        let expand = |label: &[u8], len: usize| {
            let mut out = vec![0u8; len];
            prk.expand(&[label], Len(len))
                .unwrap()
                .fill(&mut out)
                .unwrap();
            out
        };
        let salt = expand(&salt_label, 12);
        assert_eq!(expand(&key_label, 32), hex(v.sframe_key));
        assert_eq!(salt, hex(v.sframe_salt));
        // The nonce (section 4.4.3): the salt XOR the counter, right-aligned.
        let mut nonce = salt.clone();
        for (n, c) in nonce.iter_mut().rev().zip(v.ctr.to_be_bytes().iter().rev()) {
            *n ^= c;
        }
        assert_eq!(nonce, hex(v.nonce));
        // The header and the AAD: header || metadata.
        let header: Vec<u8> = Vec::from(&SframeHeader::new(v.kid, v.ctr));
        assert_eq!([header.as_slice(), &hex(v.metadata)].concat(), hex(v.aad));
        // Encryption through this module's layout, the metadata as the clear bytes:
        // sframe derives the same key and salt (the ciphertext says so).
        let key = EncryptionKey::derive_from(CIPHER_SUITE, v.kid, hex(v.base_key)).unwrap();
        let mut out = Vec::new();
        encrypt_frame(&key, v.ctr, &hex(v.metadata), &hex(v.pt), &mut out).unwrap();
        assert_eq!(out, [hex(v.metadata), hex(v.ct)].concat());
        // And back.
        let key = DecryptionKey::derive_from(CIPHER_SUITE, v.kid, hex(v.base_key)).unwrap();
        let mut back = Vec::new();
        decrypt_frame(&key, hex(v.metadata).len(), &out, &mut back).unwrap();
        assert_eq!(back, [hex(v.metadata), hex(v.pt)].concat());
        out[3] ^= 1; // A clear byte: authenticated.
        assert_eq!(
            decrypt_frame(&key, hex(v.metadata).len(), &out, &mut back),
            Err(FrameError::Unauthentic)
        );
    }

    #[test]
    fn rfc_9605_header_vectors() {
        // (KID, CTR, encoded header), from the RFC's appendix C.1.
        let vectors: [(u64, u64, &str); 9] = [
            (0, 0, "00"),
            (0, 1, "01"),
            (0, 0xff, "08ff"),
            (0, 0x100, "090100"),
            (1, 0, "10"),
            (0x100, 0, "900100"),
            (0x100, 0xff, "980100ff"),
            (0x100, 0x100, "9901000100"),
            (u64::MAX, 0, "f0ffffffffffffffff"),
        ];
        for (k, c, encoded) in vectors {
            let header = SframeHeader::new(k, c);
            assert_eq!(Vec::from(&header), hex(encoded), "kid {k:#x} ctr {c:#x}");
            let back = SframeHeader::deserialize(hex(encoded)).unwrap();
            assert_eq!((back.key_id(), back.counter()), (k, c));
        }
        assert_eq!(kid(1, 0), 0x100, "a new epoch");
        assert_eq!(kid(2, 3), 0x203, "ratchets in the low byte");
    }

    /// A VP8 frame as the bench makes it: frame tag (P bit clear on a keyframe), then a
    /// start code and dimensions on a keyframe, then `len` bytes in all.
    fn vp8_frame(keyframe: bool, len: usize) -> Vec<u8> {
        let mut frame = if keyframe {
            vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
        } else {
            vec![0x11, 0x02, 0x00]
        };
        frame.resize(len.max(frame.len()), 0xab);
        frame.truncate(len);
        frame
    }

    #[test]
    fn frames_keep_their_clear_bytes_and_round_trip() {
        let mut sender = SenderKey::random(0).unwrap();
        let mut keys = ReceiverKeys::default();
        keys.insert(11, sender.kid(), sender.base_key()).unwrap();
        let mut enc = Vec::new();
        let mut dec = Vec::new();
        let cases = [
            (Codec::Vp8, vp8_frame(true, 1200), 10),
            (Codec::Vp8, vp8_frame(false, 300), 3),
            (Codec::Opus, vec![0x78; 80], 0),
            (Codec::Vp8, vp8_frame(true, 5), 4), // short: all but one byte clear
            (Codec::Vp8, vp8_frame(false, 2), 1),
            (Codec::Opus, vec![0x5a; 1], 0),
        ];
        for (ctr, (codec, frame, clear)) in cases.iter().enumerate() {
            assert_eq!(clear_bytes(*codec, frame), *clear);
            sender.encrypt(*codec, frame, &mut enc).unwrap();
            assert_eq!(
                enc[..*clear],
                frame[..*clear],
                "{codec:?}: clear bytes first"
            );
            let header = header_at(&enc, *clear).unwrap();
            assert_eq!(
                (header.key_id(), header.counter()),
                (0, ctr as u64),
                "CTR per sender"
            );
            assert_eq!(enc.len(), frame.len() + header.len() + TAG_BYTES);
            // (A byte or two may come out as they went in, with a random key: one run in
            // a hundred did; four may not.)
            if frame.len() - clear >= 4 {
                assert_ne!(
                    enc[*clear + header.len()..][..frame.len() - clear],
                    frame[*clear..]
                );
            }
            keys.decrypt(11, *codec, &enc, &mut dec).unwrap();
            assert_eq!(&dec, frame, "{codec:?}");
        }
    }

    #[test]
    fn frames_from_others_or_altered_do_not_decrypt() {
        let mut sender = SenderKey::random(0).unwrap();
        let other = SenderKey::random(0).unwrap();
        let mut keys = ReceiverKeys::default();
        keys.insert(11, sender.kid(), sender.base_key()).unwrap();
        keys.insert(12, other.kid(), other.base_key()).unwrap();
        let frame = vp8_frame(true, 500);
        let mut enc = Vec::new();
        let mut dec = Vec::new();
        sender.encrypt(Codec::Vp8, &frame, &mut enc).unwrap();
        assert_eq!(
            keys.decrypt(12, Codec::Vp8, &enc, &mut dec),
            Err(FrameError::Unauthentic),
            "another sender's key, same KID"
        );
        assert_eq!(
            keys.decrypt(13, Codec::Vp8, &enc, &mut dec),
            Err(FrameError::NoKey)
        );
        let mut next = SenderKey::new(*sender.base_key(), 1).unwrap();
        next.encrypt(Codec::Vp8, &frame, &mut enc).unwrap();
        assert_eq!(
            keys.decrypt(11, Codec::Vp8, &enc, &mut dec),
            Err(FrameError::NoKey),
            "a KID it was not given"
        );
        sender.encrypt(Codec::Vp8, &frame, &mut enc).unwrap();
        for at in [4, 20, enc.len() - 1] {
            let mut altered = enc.clone();
            altered[at] ^= 0x40;
            assert_eq!(
                keys.decrypt(11, Codec::Vp8, &altered, &mut dec),
                Err(FrameError::Unauthentic),
                "byte {at} altered"
            );
        }
        assert!(
            keys.decrypt(11, Codec::Vp8, &frame, &mut dec).is_err(),
            "a frame in the clear"
        );
        assert!(keys.decrypt(11, Codec::Opus, &[], &mut dec).is_err());
    }
}
