//! RFC 5769 ("Test Vectors for Session Traversal Utilities for NAT (STUN)") against the
//! STUN codec the relay uses, `stun-types`: every vector is parsed (which checks FINGERPRINT),
//! every attribute value is checked, MESSAGE-INTEGRITY is validated with the RFC's
//! credentials and rejected with wrong ones, no single-byte corruption of a vector is
//! accepted, and `stun-types`' writer re-creates each vector byte for byte.
//!
//! The vectors are typed in from the RFC's listings; that the FINGERPRINT and
//! MESSAGE-INTEGRITY values in them check out is what proves they were typed correctly.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use stun_types::attribute::{
    Attribute, AttributeExt, AttributeFromRaw, AttributeStaticType, AttributeType, AttributeWrite,
    AttributeWriteExt, Fingerprint, MessageIntegrity, Nonce, RawAttribute, Realm, Software,
    Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageHeader,
    MessageIntegrityCredentials, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    ShortTermCredentials, StunParseError, TransactionId, ValidateError,
};

/// RFC 5769 §2.1 Sample Request: a Binding request as an ICE agent sends it, with
/// short-term credentials and FINGERPRINT. The USERNAME is padded with spaces.
#[rustfmt::skip]
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, //    Request type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x10, //    SOFTWARE attribute header
    0x53, 0x54, 0x55, 0x4e, // }
    0x20, 0x74, 0x65, 0x73, // }  User-agent...
    0x74, 0x20, 0x63, 0x6c, // }  ...name
    0x69, 0x65, 0x6e, 0x74, // }
    0x00, 0x24, 0x00, 0x04, //    PRIORITY attribute header
    0x6e, 0x00, 0x01, 0xff, //    ICE priority value
    0x80, 0x29, 0x00, 0x08, //    ICE-CONTROLLED attribute header
    0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
    0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
    0x00, 0x06, 0x00, 0x09, //    USERNAME attribute header
    0x65, 0x76, 0x74, 0x6a, // }
    0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
    0x59, 0x20, 0x20, 0x20, // }
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0x9a, 0xea, 0xa7, 0x0c, // }
    0xbf, 0xd8, 0xcb, 0x56, // }
    0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
    0xb2, 0xd3, 0xf2, 0x49, // }
    0xc1, 0xb5, 0x71, 0xa2, // }
    0x80, 0x28, 0x00, 0x04, //    FINGERPRINT attribute header
    0xe5, 0x7a, 0x3b, 0xcf, //    CRC32 fingerprint
];

/// RFC 5769 §2.2 Sample IPv4 Response: the Binding success response to §2.1. The
/// SOFTWARE value is "test vector" (11 bytes) and its padding byte is a space.
#[rustfmt::skip]
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, //    Response type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, //    SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x08, //    XOR-MAPPED-ADDRESS attribute header
    0x00, 0x01, 0xa1, 0x47, //    Address family (IPv4) and xor'd mapped port number
    0xe1, 0x12, 0xa6, 0x43, //    Xor'd mapped IPv4 address
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0x2b, 0x91, 0xf5, 0x99, // }
    0xfd, 0x9e, 0x90, 0xc3, // }
    0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
    0x2a, 0xf9, 0xba, 0x53, // }
    0xf0, 0x6b, 0xe7, 0xd7, // }
    0x80, 0x28, 0x00, 0x04, //    FINGERPRINT attribute header
    0xc0, 0x7d, 0x4c, 0x96, //    CRC32 fingerprint
];

/// RFC 5769 §2.3 Sample IPv6 Response: as §2.2 with an IPv6 mapped address.
#[rustfmt::skip]
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, //    Response type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, //    SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x14, //    XOR-MAPPED-ADDRESS attribute header
    0x00, 0x02, 0xa1, 0x47, //    Address family (IPv6) and xor'd mapped port number
    0x01, 0x13, 0xa9, 0xfa, // }
    0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
    0xbc, 0x25, 0xf4, 0xb5, // }
    0xbe, 0xd2, 0xb9, 0xd9, // }
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0xa3, 0x82, 0x95, 0x4e, // }
    0x4b, 0xe6, 0x7b, 0xf1, // }
    0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
    0x82, 0x92, 0xc2, 0x75, // }
    0xbf, 0xe3, 0xed, 0x41, // }
    0x80, 0x28, 0x00, 0x04, //    FINGERPRINT attribute header
    0xc8, 0xfb, 0x0b, 0x4c, //    CRC32 fingerprint
];

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication: no FINGERPRINT, and
/// padding with zero bytes.
#[rustfmt::skip]
const SAMPLE_LONG_TERM_REQUEST: [u8; 116] = [
    0x00, 0x01, 0x00, 0x60, //    Request type and message length
    0x21, 0x12, 0xa4, 0x42, //    Magic cookie
    0x78, 0xad, 0x34, 0x33, // }
    0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
    0x29, 0xda, 0x41, 0x2e, // }
    0x00, 0x06, 0x00, 0x12, //    USERNAME attribute header
    0xe3, 0x83, 0x9e, 0xe3, // }
    0x83, 0x88, 0xe3, 0x83, // }
    0xaa, 0xe3, 0x83, 0x83, // }  Username value (18 bytes) and padding (2 bytes)
    0xe3, 0x82, 0xaf, 0xe3, // }
    0x82, 0xb9, 0x00, 0x00, // }
    0x00, 0x15, 0x00, 0x1c, //    NONCE attribute header
    0x66, 0x2f, 0x2f, 0x34, // }
    0x39, 0x39, 0x6b, 0x39, // }
    0x35, 0x34, 0x64, 0x36, // }
    0x4f, 0x4c, 0x33, 0x34, // }  Nonce value
    0x6f, 0x4c, 0x39, 0x46, // }
    0x53, 0x54, 0x76, 0x79, // }
    0x36, 0x34, 0x73, 0x41, // }
    0x00, 0x14, 0x00, 0x0b, //    REALM attribute header
    0x65, 0x78, 0x61, 0x6d, // }
    0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
    0x6f, 0x72, 0x67, 0x00, // }
    0x00, 0x08, 0x00, 0x14, //    MESSAGE-INTEGRITY attribute header
    0xf6, 0x70, 0x24, 0x65, // }
    0x6d, 0xd6, 0x4a, 0x3e, // }
    0x02, 0xb8, 0xe0, 0x71, // }  HMAC-SHA1 fingerprint
    0x2e, 0x85, 0xc9, 0xa2, // }
    0x8c, 0xa8, 0x96, 0x66, // }
];

/// Transaction ID of §2.1–2.3.
const ICE_TRANSACTION: u128 = 0xb7e7_a701_bc34_d686_fa87_dfae;
/// Transaction ID of §2.4.
const LONG_TERM_TRANSACTION: u128 = 0x78ad_3433_c6ad_72c0_29da_412e;

/// The short-term (ICE) password of §2.1–2.3.
const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// The §2.4 username, "マトリックス" (U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9).
const LONG_TERM_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// The §2.4 password as RFC 5769 gives it: "The<U+00AD>M<U+00AA>tr<U+2168>".
const LONG_TERM_PASSWORD_AS_GIVEN: &str = "The\u{00AD}M\u{00AA}tr\u{2168}";
/// The §2.4 password after SASLprep (RFC 4013), which the key derivation uses: U+00AD SOFT
/// HYPHEN is mapped to nothing, U+00AA FEMININE ORDINAL INDICATOR NFKC-normalises to "a" and
/// U+2168 ROMAN NUMERAL NINE to "IX". `stun-types` does no SASLprep itself (see
/// `wrong_credentials_fail_validation`), so the caller must pass the prepared string.
const LONG_TERM_PASSWORD: &str = "TheMatrIX";
const LONG_TERM_REALM: &str = "example.org";
const LONG_TERM_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";

/// Mapped address of §2.2.
const MAPPED_V4: &str = "192.0.2.1:32853";
/// Mapped address of §2.3.
const MAPPED_V6: &str = "[2001:db8:1234:5678:11:2233:4455:6677]:32853";

fn short_term() -> MessageIntegrityCredentials {
    ShortTermCredentials::new(SHORT_TERM_PASSWORD.to_owned()).into()
}

fn long_term(username: &str, password: &str, realm: &str) -> MessageIntegrityCredentials {
    LongTermKeyCredentials::new(username.to_owned(), password.to_owned(), realm.to_owned()).into()
}

fn long_term_rfc() -> MessageIntegrityCredentials {
    long_term(LONG_TERM_USERNAME, LONG_TERM_PASSWORD, LONG_TERM_REALM)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One RFC 5769 vector and what is needed to check it.
struct Vector {
    section: &'static str,
    bytes: &'static [u8],
    credentials: MessageIntegrityCredentials,
    /// Whether the vector carries FINGERPRINT (all but §2.4).
    fingerprint: bool,
}

fn vectors() -> [Vector; 4] {
    [
        Vector {
            section: "2.1",
            bytes: &SAMPLE_REQUEST,
            credentials: short_term(),
            fingerprint: true,
        },
        Vector {
            section: "2.2",
            bytes: &SAMPLE_IPV4_RESPONSE,
            credentials: short_term(),
            fingerprint: true,
        },
        Vector {
            section: "2.3",
            bytes: &SAMPLE_IPV6_RESPONSE,
            credentials: short_term(),
            fingerprint: true,
        },
        Vector {
            section: "2.4",
            bytes: &SAMPLE_LONG_TERM_REQUEST,
            credentials: long_term_rfc(),
            fingerprint: false,
        },
    ]
}

// ICE attributes (RFC 8445 §16.1) that `stun-types` does not define. They are defined here
// as ordinary `stun-types` attributes so that §2.1 can be parsed and written with the same
// API as everything else.

/// PRIORITY (0x0024): a 32-bit ICE candidate priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Priority(u32);

impl AttributeStaticType for Priority {
    const TYPE: AttributeType = AttributeType::new(0x0024);
}

impl Attribute for Priority {
    fn get_type(&self) -> AttributeType {
        Self::TYPE
    }
    fn length(&self) -> u16 {
        4
    }
}

impl AttributeWrite for Priority {
    fn write_into_unchecked(&self, dest: &mut [u8]) {
        self.write_header_unchecked(dest);
        dest[4..8].copy_from_slice(&self.0.to_be_bytes());
    }
    fn to_raw(&self) -> RawAttribute<'_> {
        RawAttribute::new(Self::TYPE, &self.0.to_be_bytes()).into_owned()
    }
}

impl AttributeFromRaw<'_> for Priority {
    fn from_raw_ref(raw: &RawAttribute) -> Result<Self, StunParseError> {
        raw.check_type_and_len(Self::TYPE, 4..=4)?;
        Ok(Self(u32::from_be_bytes((&*raw.value).try_into().unwrap())))
    }
}

/// ICE-CONTROLLED (0x8029): the controlled agent's 64-bit tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IceControlled(u64);

impl AttributeStaticType for IceControlled {
    const TYPE: AttributeType = AttributeType::new(0x8029);
}

impl Attribute for IceControlled {
    fn get_type(&self) -> AttributeType {
        Self::TYPE
    }
    fn length(&self) -> u16 {
        8
    }
}

impl AttributeWrite for IceControlled {
    fn write_into_unchecked(&self, dest: &mut [u8]) {
        self.write_header_unchecked(dest);
        dest[4..12].copy_from_slice(&self.0.to_be_bytes());
    }
    fn to_raw(&self) -> RawAttribute<'_> {
        RawAttribute::new(Self::TYPE, &self.0.to_be_bytes()).into_owned()
    }
}

impl AttributeFromRaw<'_> for IceControlled {
    fn from_raw_ref(raw: &RawAttribute) -> Result<Self, StunParseError> {
        raw.check_type_and_len(Self::TYPE, 8..=8)?;
        Ok(Self(u64::from_be_bytes((&*raw.value).try_into().unwrap())))
    }
}

/// Writes `inner` exactly as `stun-types` does, then fills its padding with `byte` instead
/// of zeros.
///
/// RFC 5389 §15 lets the sender choose the padding bytes ("the padding bits are ignored,
/// and may be any value"), and RFC 5769 §2.1–2.3 chose spaces (0x20); every `stun-types`
/// attribute zero-fills. The padding is covered by MESSAGE-INTEGRITY and FINGERPRINT, so
/// with zeros those differ too. The writer (`MessageWriteVec::push_attribute_unchecked`)
/// hands the attribute a slice covering its padded length and lets the attribute write all
/// of it, so a wrapper can choose the padding and the vectors come out byte-exact,
/// integrity and fingerprint included.
#[derive(Debug)]
struct PaddedWith<'a, A: AttributeWrite> {
    inner: &'a A,
    byte: u8,
}

impl<A: AttributeWrite> Attribute for PaddedWith<'_, A> {
    fn get_type(&self) -> AttributeType {
        self.inner.get_type()
    }
    fn length(&self) -> u16 {
        self.inner.length()
    }
}

impl<A: AttributeWrite> AttributeWrite for PaddedWith<'_, A> {
    fn write_into_unchecked(&self, dest: &mut [u8]) {
        self.inner.write_into_unchecked(dest);
        let end = 4 + usize::from(self.length());
        dest[end..self.padded_len()].fill(self.byte);
    }
    fn to_raw(&self) -> RawAttribute<'_> {
        // A RawAttribute has no room for padding; only the writer path above uses it.
        self.inner.to_raw()
    }
}

fn space_padded<A: AttributeWrite>(inner: &A) -> PaddedWith<'_, A> {
    PaddedWith { inner, byte: b' ' }
}

/// The types of the attributes in `msg`, in order.
fn attribute_types(msg: &Message<'_>) -> Vec<AttributeType> {
    msg.iter_attributes()
        .map(|(_, raw)| raw.get_type())
        .collect()
}

/// The byte positions where `a` and `b` differ (they must have the same length).
fn differences(a: &[u8], b: &[u8]) -> BTreeSet<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// Asserts that `built` is `vector` byte for byte, pointing at the first difference.
fn assert_byte_exact(section: &str, built: &[u8], vector: &[u8]) {
    if let Some(i) = (0..built.len().min(vector.len())).find(|&i| built[i] != vector[i]) {
        panic!(
            "§{section}: byte {i} is {:#04x}, the RFC has {:#04x}",
            built[i], vector[i]
        );
    }
    assert_eq!(built.len(), vector.len(), "§{section}: length");
}

/// Whether `stun-types` on its own accepts `data`: it parses (FINGERPRINT, where present,
/// is checked by `from_bytes`) and MESSAGE-INTEGRITY validates.
fn stun_types_accepts(data: &[u8], credentials: &MessageIntegrityCredentials) -> bool {
    Message::from_bytes(data).is_ok_and(|msg| msg.validate_integrity(credentials).is_ok())
}

/// Whether a strict receiver accepts `data`: `stun-types` accepts it, and also the header's
/// message length is the datagram's (`stun-types` only rejects a length that is too large,
/// see `stun_types_does_not_enforce_the_message_length`), and FINGERPRINT is present when the
/// usage needs it (`stun-types`, following RFC 5389 §15.4, skips any attribute after
/// MESSAGE-INTEGRITY other than FINGERPRINT, so a FINGERPRINT whose type is damaged is not
/// an error, only absent).
fn strictly_accepts(
    data: &[u8],
    credentials: &MessageIntegrityCredentials,
    fingerprint: bool,
) -> bool {
    let Ok(msg) = Message::from_bytes(data) else {
        return false;
    };
    let Ok(header) = MessageHeader::from_bytes(data) else {
        return false;
    };
    usize::from(header.data_length()) + MessageHeader::LENGTH == data.len()
        && (!fingerprint || msg.has_attribute(Fingerprint::TYPE))
        && msg.validate_integrity(credentials).is_ok()
}

// §2.1 Sample Request.

#[test]
fn sample_request_attributes_and_integrity() {
    let msg = Message::from_bytes(&SAMPLE_REQUEST).unwrap();
    assert_eq!(
        msg.get_type(),
        MessageType::from_class_method(MessageClass::Request, BINDING)
    );
    assert_eq!(msg.transaction_id(), TransactionId::from(ICE_TRANSACTION));
    assert_eq!(
        attribute_types(&msg),
        [
            Software::TYPE,
            Priority::TYPE,
            IceControlled::TYPE,
            Username::TYPE,
            MessageIntegrity::TYPE,
            Fingerprint::TYPE,
        ]
    );
    assert_eq!(
        msg.attribute::<Software>().unwrap().software(),
        "STUN test client"
    );
    assert_eq!(msg.attribute::<Priority>().unwrap(), Priority(0x6e00_01ff));
    assert_eq!(
        msg.attribute::<IceControlled>().unwrap(),
        IceControlled(0x932f_f9b1_5126_3b36)
    );
    // 9 bytes; the three spaces after it are padding, not part of the value.
    assert_eq!(msg.attribute::<Username>().unwrap().username(), "evtj:h6vY");
    assert!(matches!(
        msg.validate_integrity(&short_term()),
        Ok(IntegrityAlgorithm::Sha1)
    ));
}

#[test]
fn sample_request_encodes_byte_exact() {
    let tid = TransactionId::from(ICE_TRANSACTION);
    let build = |space_pad: bool| {
        let mut b = Message::builder(
            MessageType::from_class_method(MessageClass::Request, BINDING),
            tid,
            MessageWriteVec::new(),
        );
        // "STUN test client" is 16 bytes: no padding.
        b.add_attribute(&Software::new("STUN test client").unwrap())
            .unwrap();
        b.add_attribute(&Priority(0x6e00_01ff)).unwrap();
        b.add_attribute(&IceControlled(0x932f_f9b1_5126_3b36))
            .unwrap();
        let username = Username::new("evtj:h6vY").unwrap();
        if space_pad {
            b.add_attribute(&space_padded(&username)).unwrap();
        } else {
            b.add_attribute(&username).unwrap();
        }
        b.add_message_integrity(&short_term(), IntegrityAlgorithm::Sha1)
            .unwrap();
        b.add_fingerprint().unwrap();
        b.finish()
    };

    assert_byte_exact("2.1", &build(true), &SAMPLE_REQUEST);

    // With stock zero padding only the USERNAME padding (73..76) and, as they cover it, the
    // HMAC (80..100) and CRC (104..108) values differ; the result is just as valid.
    let zero_padded = build(false);
    let diff = differences(&zero_padded, &SAMPLE_REQUEST);
    assert!((73..76).all(|i| diff.contains(&i) && zero_padded[i] == 0));
    assert!(
        diff.iter()
            .all(|i| (73..76).contains(i) || (80..100).contains(i) || (104..108).contains(i)),
        "{diff:?}"
    );
    assert!(strictly_accepts(&zero_padded, &short_term(), true));
}

// §2.2 Sample IPv4 Response.

/// §2.2 and §2.3: the attributes of a sample response, its mapped address and integrity.
fn check_sample_response(vector: &[u8], mapped: &str) {
    let msg = Message::from_bytes(vector).unwrap();
    assert_eq!(
        msg.get_type(),
        MessageType::from_class_method(MessageClass::Success, BINDING)
    );
    assert_eq!(msg.transaction_id(), TransactionId::from(ICE_TRANSACTION));
    assert_eq!(
        attribute_types(&msg),
        [
            Software::TYPE,
            XorMappedAddress::TYPE,
            MessageIntegrity::TYPE,
            Fingerprint::TYPE,
        ]
    );
    // The attribute length is 11: the value is "test vector" and the trailing space in the
    // listing is the padding byte.
    assert_eq!(
        msg.attribute::<Software>().unwrap().software(),
        "test vector"
    );
    assert_eq!(
        msg.attribute::<XorMappedAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        addr(mapped)
    );
    assert!(matches!(
        msg.validate_integrity(&short_term()),
        Ok(IntegrityAlgorithm::Sha1)
    ));
}

#[test]
fn sample_ipv4_response_attributes_and_integrity() {
    check_sample_response(&SAMPLE_IPV4_RESPONSE, MAPPED_V4);
}

/// §2.2 and §2.3 differ only in the mapped address.
fn build_sample_response(mapped: SocketAddr, space_pad: bool) -> Vec<u8> {
    let tid = TransactionId::from(ICE_TRANSACTION);
    let mut b = Message::builder(
        MessageType::from_class_method(MessageClass::Success, BINDING),
        tid,
        MessageWriteVec::new(),
    );
    let software = Software::new("test vector").unwrap();
    if space_pad {
        b.add_attribute(&space_padded(&software)).unwrap();
    } else {
        b.add_attribute(&software).unwrap();
    }
    b.add_attribute(&XorMappedAddress::new(mapped, tid))
        .unwrap();
    b.add_message_integrity(&short_term(), IntegrityAlgorithm::Sha1)
        .unwrap();
    b.add_fingerprint().unwrap();
    b.finish()
}

/// With stock zero padding only the SOFTWARE padding byte (35) and the HMAC and CRC values
/// that cover it differ; the message is still valid.
fn assert_only_padding_and_checksums_differ(zero_padded: &[u8], vector: &[u8]) {
    let len = vector.len();
    let hmac = len - 28..len - 8;
    let crc = len - 4..len;
    let diff = differences(zero_padded, vector);
    assert!(diff.contains(&35) && zero_padded[35] == 0);
    assert!(
        diff.iter()
            .all(|i| *i == 35 || hmac.contains(i) || crc.contains(i)),
        "{diff:?}"
    );
    assert!(strictly_accepts(zero_padded, &short_term(), true));
}

#[test]
fn sample_ipv4_response_encodes_byte_exact() {
    assert_byte_exact(
        "2.2",
        &build_sample_response(addr(MAPPED_V4), true),
        &SAMPLE_IPV4_RESPONSE,
    );
    assert_only_padding_and_checksums_differ(
        &build_sample_response(addr(MAPPED_V4), false),
        &SAMPLE_IPV4_RESPONSE,
    );
}

// §2.3 Sample IPv6 Response.

#[test]
fn sample_ipv6_response_attributes_and_integrity() {
    check_sample_response(&SAMPLE_IPV6_RESPONSE, MAPPED_V6);
}

#[test]
fn sample_ipv6_response_encodes_byte_exact() {
    assert_byte_exact(
        "2.3",
        &build_sample_response(addr(MAPPED_V6), true),
        &SAMPLE_IPV6_RESPONSE,
    );
    assert_only_padding_and_checksums_differ(
        &build_sample_response(addr(MAPPED_V6), false),
        &SAMPLE_IPV6_RESPONSE,
    );
}

// §2.4 Sample Request with Long-Term Authentication.

#[test]
fn long_term_request_attributes_and_integrity() {
    let msg = Message::from_bytes(&SAMPLE_LONG_TERM_REQUEST).unwrap();
    assert_eq!(
        msg.get_type(),
        MessageType::from_class_method(MessageClass::Request, BINDING)
    );
    assert_eq!(
        msg.transaction_id(),
        TransactionId::from(LONG_TERM_TRANSACTION)
    );
    assert_eq!(
        attribute_types(&msg),
        [
            Username::TYPE,
            Nonce::TYPE,
            Realm::TYPE,
            MessageIntegrity::TYPE
        ]
    );
    let username = msg.attribute::<Username>().unwrap();
    assert_eq!(username.username(), LONG_TERM_USERNAME);
    assert_eq!(username.username().len(), 18);
    assert_eq!(msg.attribute::<Nonce>().unwrap().nonce(), LONG_TERM_NONCE);
    assert_eq!(msg.attribute::<Realm>().unwrap().realm(), LONG_TERM_REALM);
    assert!(!msg.has_attribute(Fingerprint::TYPE));
    // Key = MD5(username ":" realm ":" SASLprep(password)).
    assert!(matches!(
        msg.validate_integrity(&long_term_rfc()),
        Ok(IntegrityAlgorithm::Sha1)
    ));
}

#[test]
fn long_term_request_encodes_byte_exact() {
    // Zero padding, as stun-types writes it: no wrapper needed.
    let mut b = Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        TransactionId::from(LONG_TERM_TRANSACTION),
        MessageWriteVec::new(),
    );
    b.add_attribute(&Username::new(LONG_TERM_USERNAME).unwrap())
        .unwrap();
    b.add_attribute(&Nonce::new(LONG_TERM_NONCE).unwrap())
        .unwrap();
    b.add_attribute(&Realm::new(LONG_TERM_REALM).unwrap())
        .unwrap();
    b.add_message_integrity(&long_term_rfc(), IntegrityAlgorithm::Sha1)
        .unwrap();
    assert_byte_exact("2.4", &b.finish(), &SAMPLE_LONG_TERM_REQUEST);
}

// All vectors.

#[test]
fn wrong_credentials_fail_validation() {
    let ice = [
        &SAMPLE_REQUEST[..],
        &SAMPLE_IPV4_RESPONSE,
        &SAMPLE_IPV6_RESPONSE,
    ];
    for bytes in ice {
        let msg = Message::from_bytes(bytes).unwrap();
        for password in ["VOkJxbRl1RmTxUk/WvJxBT", "", "TheMatrIX"] {
            let wrong = ShortTermCredentials::new(password.to_owned()).into();
            assert!(
                matches!(
                    msg.validate_integrity(&wrong),
                    Err(ValidateError::IntegrityFailed)
                ),
                "password {password:?}"
            );
        }
        // The right password used as a long-term one hashes to a different key.
        assert!(matches!(
            msg.validate_integrity(&long_term("evtj:h6vY", SHORT_TERM_PASSWORD, "")),
            Err(ValidateError::IntegrityFailed)
        ));
    }

    let msg = Message::from_bytes(&SAMPLE_LONG_TERM_REQUEST).unwrap();
    let wrong = [
        // Off by case.
        long_term(LONG_TERM_USERNAME, "TheMatrix", LONG_TERM_REALM),
        // The password as the RFC gives it, before SASLprep: stun-types hashes what it is
        // handed, so preparing the password is the caller's job.
        long_term(
            LONG_TERM_USERNAME,
            LONG_TERM_PASSWORD_AS_GIVEN,
            LONG_TERM_REALM,
        ),
        long_term(LONG_TERM_USERNAME, LONG_TERM_PASSWORD, "example.com"),
        long_term(
            "\u{30DE}\u{30C8}\u{30EA}",
            LONG_TERM_PASSWORD,
            LONG_TERM_REALM,
        ),
        ShortTermCredentials::new(LONG_TERM_PASSWORD.to_owned()).into(),
    ];
    for credentials in &wrong {
        assert!(
            matches!(
                msg.validate_integrity(credentials),
                Err(ValidateError::IntegrityFailed)
            ),
            "{credentials:?}"
        );
    }
}

/// Replaces each byte of each vector, in turn, by each of the 255 other values. None of the
/// results is accepted by a strict receiver (`strictly_accepts`). `stun-types` alone accepts
/// exactly two families, pinned here so that a change in its strictness is noticed:
///
/// - a message length (byte 3) smaller than the real one: `Message::from_bytes` only rejects
///   a length that runs past the data, parses attributes up to the end of the data anyway,
///   and computes the FINGERPRINT and MESSAGE-INTEGRITY inputs with a length derived from
///   the attribute offsets rather than the header's, so the damaged field is covered by
///   neither check;
/// - a damaged FINGERPRINT type (first two bytes of the last attribute, §2.1–2.3): the
///   attribute is then an unknown one after MESSAGE-INTEGRITY, which RFC 5389 §15.4 says to
///   ignore, and the message reads as integrity-protected without FINGERPRINT.
#[test]
fn every_single_byte_corruption_is_rejected() {
    for vector in vectors() {
        let mut lenient = BTreeSet::new();
        let mut data = vector.bytes.to_vec();
        for i in 0..data.len() {
            for mask in 1..=u8::MAX {
                data[i] ^= mask;
                assert!(
                    !strictly_accepts(&data, &vector.credentials, vector.fingerprint),
                    "§{}: byte {i} {:#04x} -> {:#04x} accepted",
                    vector.section,
                    vector.bytes[i],
                    data[i],
                );
                if stun_types_accepts(&data, &vector.credentials) {
                    lenient.insert((i, data[i]));
                }
                data[i] ^= mask;
            }
        }
        assert_eq!(data, vector.bytes);

        let len = vector.bytes.len();
        let short_length = (0..vector.bytes[3]).map(|b| (3, b));
        let fingerprint_type = (0..=u8::MAX)
            .filter(|&b| b != 0x80)
            .map(|b| (len - 8, b))
            .chain((0..=u8::MAX).filter(|&b| b != 0x28).map(|b| (len - 7, b)));
        let expected: BTreeSet<_> = if vector.fingerprint {
            short_length.chain(fingerprint_type).collect()
        } else {
            short_length.collect()
        };
        assert_eq!(
            lenient, expected,
            "§{}: the corruptions stun-types accepts on its own changed",
            vector.section
        );
    }
}

/// The finding behind `strictly_accepts`' length check: `stun-types` does not hold a message
/// to the length in its header, only refuses a length that runs past the data.
///
/// - With the header's length cut to 0 (the message would be the bare header), every
///   attribute is still parsed and MESSAGE-INTEGRITY (and FINGERPRINT) still validate.
/// - With a whole attribute appended after the message and the header left alone, the
///   message still parses and validates; the extra attribute is skipped as one following
///   MESSAGE-INTEGRITY/FINGERPRINT.
///
/// Both datagrams are malformed (RFC 8489 §5: the length is the size of the message without
/// its header), and a receiver that wants to refuse them has to compare the length with the
/// datagram itself.
#[test]
fn stun_types_does_not_enforce_the_message_length() {
    for vector in vectors() {
        let attributes = attribute_types(&Message::from_bytes(vector.bytes).unwrap());

        let mut short = vector.bytes.to_vec();
        short[3] = 0;
        assert_eq!(MessageHeader::from_bytes(&short).unwrap().data_length(), 0);
        let msg = Message::from_bytes(&short).unwrap();
        assert!(msg.validate_integrity(&vector.credentials).is_ok());
        assert_eq!(attribute_types(&msg), attributes, "§{}", vector.section);
        assert!(!strictly_accepts(
            &short,
            &vector.credentials,
            vector.fingerprint
        ));

        let mut long = vector.bytes.to_vec();
        long.extend(RawAttribute::from(&Software::new("trailer").unwrap()).to_bytes());
        let msg = Message::from_bytes(&long).unwrap();
        assert!(msg.validate_integrity(&vector.credentials).is_ok());
        assert_eq!(attribute_types(&msg), attributes, "§{}", vector.section);
        assert!(!strictly_accepts(
            &long,
            &vector.credentials,
            vector.fingerprint
        ));
    }
}

/// Not a test: writes the vectors as seeds of the fuzz target `turn_datagram`
/// (`fuzz/corpus/`; the seed generator there takes them into other targets' seeds), so
/// that they are typed in one place. Run by `fuzz/seeds.sh`.
#[test]
#[ignore = "writes the fuzz seed corpus; run by fuzz/seeds.sh"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/turn_datagram");
    std::fs::create_dir_all(&dir).unwrap();
    for v in vectors() {
        let name = format!("rfc5769-{}.bin", v.section.replace('.', "_"));
        std::fs::write(dir.join(name), v.bytes).unwrap();
    }
}
