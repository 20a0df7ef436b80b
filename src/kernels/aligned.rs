//! Buffers whose data starts on a cache-line boundary.
//!
//! A `Vec<f32>` is only 4-byte aligned: a 512-bit load from it can straddle two cache
//! lines, which costs the hot loops of the fused step up to a third of their speed
//! (and made the speed of a buffer depend on where the allocator happened to put it).

use std::ops::{Deref, DerefMut};

/// Bytes per cache line (and per 512-bit vector).
const LINE: usize = 64;

/// A resizable buffer of `T` whose first element lies on a 64-byte boundary.
#[derive(Debug, Clone, Default)]
pub struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: T) -> Self {
        let mut a = Aligned {
            buf: Vec::new(),
            off: 0,
            len: 0,
        };
        a.resize(len, value);
        a
    }

    /// `len` copies of `value`, or None when the memory cannot be had.
    pub fn try_filled(len: usize, value: T) -> Option<Self> {
        let pad = LINE / std::mem::size_of::<T>().max(1);
        let mut buf = Vec::new();
        buf.try_reserve_exact(len.checked_add(pad)?).ok()?;
        buf.resize(len + pad, value);
        let off = (LINE - buf.as_ptr() as usize % LINE) % LINE / std::mem::size_of::<T>().max(1);
        Some(Aligned { buf, off, len })
    }

    /// [`Aligned::resize`], or None (and the buffer unchanged) when the memory cannot
    /// be had.
    pub fn try_resize(&mut self, len: usize, value: T) -> Option<()> {
        if self.off + len > self.buf.len() {
            let mut grown = Self::try_filled(len, value)?;
            let keep = self.len.min(len);
            grown[..keep].copy_from_slice(&self[..keep]);
            *self = grown;
        } else {
            self.resize(len, value);
        }
        Some(())
    }

    /// Like `Vec::resize`: keeps the first min(len, old len) elements, fills the rest
    /// with `value`.
    pub fn resize(&mut self, len: usize, value: T) {
        let size = std::mem::size_of::<T>().max(1);
        let pad = LINE / size;
        if self.off + len > self.buf.len() {
            let mut buf = vec![value; len + pad];
            let off = (LINE - buf.as_ptr() as usize % LINE) % LINE / size;
            let keep = self.len.min(len);
            buf[off..off + keep].copy_from_slice(&self.buf[self.off..self.off + keep]);
            (self.buf, self.off) = (buf, off);
        } else if len > self.len {
            self.buf[self.off + self.len..self.off + len].fill(value);
        }
        self.len = len;
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_resizes_like_a_vec() {
        let mut a = Aligned::filled(5, 1.0_f32);
        assert_eq!(a.as_ptr() as usize % LINE, 0);
        assert_eq!(&a[..], &[1.0; 5]);
        a[4] = 7.0;
        a.resize(3, 0.0);
        assert_eq!(&a[..], &[1.0; 3]);
        a.resize(6, 2.0);
        assert_eq!(&a[..], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        a.resize(10_000, 3.0);
        assert_eq!(a.as_ptr() as usize % LINE, 0);
        assert_eq!(
            (&a[..4], a[9_999], a.len()),
            (&[1.0, 1.0, 1.0, 2.0][..], 3.0, 10_000)
        );
        let b: Aligned<f64> = Aligned::default();
        assert!(b.is_empty());
        let c = Aligned::try_filled(3, 2.0_f64).map(|c| (c.as_ptr() as usize % LINE, c.to_vec()));
        assert_eq!(c, Some((0, vec![2.0; 3])));
        assert!(Aligned::<f64>::try_filled(usize::MAX / 16, 0.0).is_none());
        let mut d = Aligned::filled(2, 4.0_f64);
        assert!(d.try_resize(usize::MAX / 16, 0.0).is_none());
        assert_eq!(&d[..], &[4.0, 4.0]);
        assert_eq!(d.try_resize(100, 5.0), Some(()));
        assert_eq!(
            (d[1], d[2], d.len(), d.as_ptr() as usize % LINE),
            (4.0, 5.0, 100, 0)
        );
    }
}
