//! The latest few ids of a kind (picture ids, frame numbers), in a fixed array: what a
//! subscription remembers of the pictures it left out, without allocating per packet.

/// The latest `N` ids pushed, oldest first; pushing one more forgets the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent<const N: usize> {
    ids: [u16; N],
    len: u8,
}

impl<const N: usize> Default for Recent<N> {
    fn default() -> Self {
        Recent {
            ids: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Recent<N> {
    /// (Its length counts in a byte: a larger `N` does not compile.)
    const FITS: () = assert!(N > 0 && N <= u8::MAX as usize);

    pub fn push(&mut self, id: u16) {
        let () = Self::FITS;
        let n = usize::from(self.len);
        if n == N {
            self.ids.copy_within(1.., 0);
            self.ids[N - 1] = id;
        } else {
            self.ids[n] = id;
            self.len += 1;
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The ids remembered, oldest first.
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_in_order_and_forgets_the_oldest() {
        let mut r = Recent::<3>::default();
        assert!(r.as_slice().is_empty());
        for id in [7, 8, 9, 10] {
            r.push(id);
        }
        assert_eq!(r.as_slice(), [8, 9, 10]);
        r.clear();
        r.push(1);
        assert_eq!(r.as_slice(), [1]);
    }
}
