//! How a structured fuzz input is cut, and how the seed generator writes one.
//!
//! An input is a run of records read from the front: a head decoded with `arbitrary`
//! (derived, fixed-size fields and lists), then raw bytes where the parser under test wants
//! bytes: a [`Reader::chunk`] (a two-byte little-endian length, then that many bytes) or
//! [`Reader::rest`]. Raw bytes stay raw, so a captured datagram or SDP is a seed as it is.
//!
//! [`Writer`] writes the same format. Each head type implements [`Encode`] by hand, so
//! the seed generator checks every seed by decoding it again ([`Writer::head`] panics on a
//! mismatch): a seed never silently means something else than it says.

use arbitrary::{Arbitrary, Unstructured};

/// Reads a fuzz input front to back.
pub struct Reader<'a> {
    u: Unstructured<'a>,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader {
            u: Unstructured::new(data),
        }
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// The next head; `None` once the input is used up (a head cut short is completed
    /// with zeros, as `arbitrary` does).
    pub fn head<T: Arbitrary<'a>>(&mut self) -> Option<T> {
        if self.u.is_empty() {
            return None;
        }
        T::arbitrary(&mut self.u).ok()
    }

    /// The next chunk of raw bytes: a two-byte little-endian length, then as many bytes
    /// (fewer where the input ends).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(u16::arbitrary(&mut self.u).unwrap_or(0));
        let len = len.min(self.u.len());
        self.u.bytes(len).unwrap_or_default()
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.u.take_rest()
    }
}

/// A head the seed generator can write: the bytes `arbitrary` decodes back to it.
pub trait Encode {
    fn encode(&self, w: &mut Writer);
}

/// Writes fuzz inputs in the format [`Reader`] reads.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    /// Writes `head`, and checks that it decodes back to itself.
    pub fn head<T>(&mut self, head: &T) -> &mut Self
    where
        T: Encode + for<'a> Arbitrary<'a> + PartialEq + std::fmt::Debug,
    {
        let start = self.bytes.len();
        head.encode(self);
        let decoded = T::arbitrary(&mut Unstructured::new(&self.bytes[start..]));
        assert_eq!(
            decoded.as_ref().ok(),
            Some(head),
            "the seed encoder and arbitrary disagree"
        );
        self
    }

    /// Writes a chunk (see [`Reader::chunk`]).
    pub fn chunk(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u16::try_from(bytes.len()).expect("a chunk holds at most 65,535 bytes");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Writes bytes as they are (the rest of an input).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.bytes.push(u8::from(v));
    }

    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i8(&mut self, v: i8) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// An enum's variant `index` of `count`: the derive reads a `u32` and scales it.
    pub fn variant(&mut self, index: usize, count: usize) {
        assert!(index < count);
        let v = ((index as u64) << 32).div_ceil(count as u64);
        self.u32(u32::try_from(v).expect("below 2^32"));
    }

    /// A list: each element after a true byte, then a false one.
    pub fn list<T: Encode>(&mut self, items: &[T]) {
        for item in items {
            self.bool(true);
            item.encode(self);
        }
        self.bool(false);
    }

    /// An `Option`: a bool, then the value.
    pub fn option<T: Encode>(&mut self, v: &Option<T>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            v.encode(self);
        }
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

impl Encode for u8 {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self);
    }
}

impl Encode for i8 {
    fn encode(&self, w: &mut Writer) {
        w.i8(*self);
    }
}

impl Encode for bool {
    fn encode(&self, w: &mut Writer) {
        w.bool(*self);
    }
}

impl Encode for u16 {
    fn encode(&self, w: &mut Writer) {
        w.u16(*self);
    }
}

impl Encode for u32 {
    fn encode(&self, w: &mut Writer) {
        w.u32(*self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Arbitrary)]
    enum Shape {
        A,
        B { x: u8, on: bool },
        C(Vec<u16>),
    }

    impl Encode for Shape {
        fn encode(&self, w: &mut Writer) {
            match self {
                Shape::A => w.variant(0, 3),
                Shape::B { x, on } => {
                    w.variant(1, 3);
                    w.u8(*x);
                    w.bool(*on);
                }
                Shape::C(v) => {
                    w.variant(2, 3);
                    w.list(v);
                }
            }
        }
    }

    #[test]
    fn heads_and_chunks_read_back_as_written() {
        let mut w = Writer::new();
        for shape in [
            Shape::A,
            Shape::B { x: 7, on: true },
            Shape::C(vec![1, 65535]),
        ] {
            w.head(&shape).chunk(b"datagram");
        }
        let bytes = w.raw(b"v=0").finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.head::<Shape>(), Some(Shape::A));
        assert_eq!(r.chunk(), b"datagram");
        assert_eq!(r.head::<Shape>(), Some(Shape::B { x: 7, on: true }));
        assert_eq!(r.chunk(), b"datagram");
        assert_eq!(r.head::<Shape>(), Some(Shape::C(vec![1, 65535])));
        assert_eq!(r.chunk(), b"datagram");
        assert_eq!(r.rest(), b"v=0");
    }

    #[test]
    fn a_chunk_cut_short_takes_what_is_left() {
        let mut r = Reader::new(&[10, 0, 1, 2]);
        assert_eq!(r.chunk(), [1, 2]);
        assert!(r.is_empty());
        assert_eq!(r.head::<Shape>(), None);
    }
}
