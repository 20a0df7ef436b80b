//! Image bytes as floats in [0, 1]: the book's `x.astype(np.float32) / 255.0` of
//! `load_mnist(normalize=True)` in one pass over the bytes.

use ndarray::{ArrayD, Dimension, IxDyn};

use super::activation::written;
use super::{math, Float};
use crate::error::{KernelError, Result};

/// `p / 255` in T for every byte p of `pixels`, as a new array of shape `dim` (as many
/// elements, C order). Each value is the byte converted to T, then divided by 255 in T
/// (one correctly rounded division, as NumPy's cast and `/ 255`), so the bits are
/// NumPy's. Long arrays are written in pieces by the team's threads.
pub fn scaled<T: Float>(pixels: &[u8], dim: IxDyn) -> Result<ArrayD<T>> {
    if dim.size() != pixels.len() {
        return Err(KernelError::shape(
            "scaled_pixels",
            format!("{} bytes for {} elements", pixels.len(), dim.size()),
        ));
    }
    let max = T::lit(255.0);
    written("scaled_pixels", dim, |r, out| {
        math::map_slice_uninit(&pixels[r], out, |p| {
            <T as num_traits::NumCast>::from(p).unwrap_or(max) / max
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_divide_as_numpy_does() -> Result<()> {
        let bytes: Vec<u8> = (0..=255).chain([0, 255, 1]).collect();
        let y = scaled::<f32>(&bytes, IxDyn(&[bytes.len()]))?;
        for (&b, &v) in bytes.iter().zip(y.iter()) {
            assert_eq!(v.to_bits(), (f32::from(b) / 255.0_f32).to_bits());
        }
        // Worked values: 255 → 1 exactly, 1 → 1/255 rounded once, 128 → 0.5019608.
        assert_eq!(y[255], 1.0);
        assert_eq!(y[128], 0.501_960_8);
        let y = scaled::<f64>(&bytes, IxDyn(&[1, bytes.len()]))?;
        for (&b, &v) in bytes.iter().zip(y.iter()) {
            assert_eq!(v.to_bits(), (f64::from(b) / 255.0).to_bits());
        }
        assert_eq!(y.shape(), [1, bytes.len()]);
        Ok(())
    }

    #[test]
    fn a_long_array_is_written_everywhere() -> Result<()> {
        // Above the team's threshold: every piece written, in order.
        let bytes: Vec<u8> = (0..3_000_000_u32).map(|i| (i * 7 % 256) as u8).collect();
        drop(vec![f32::NAN; bytes.len()].into_boxed_slice());
        let y = scaled::<f32>(&bytes, IxDyn(&[3000, 1000]))?;
        assert!(y
            .iter()
            .zip(&bytes)
            .all(|(&v, &b)| v == f32::from(b) / 255.0));
        Ok(())
    }

    #[test]
    fn a_shape_of_another_size_is_an_error() {
        let err = scaled::<f32>(&[1, 2, 3], IxDyn(&[2, 2]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("scaled_pixels: 3 bytes for 4 elements")
        );
    }
}
