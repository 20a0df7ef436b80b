//! Softmax over the last axis, overflow-safe.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

use super::{math, parallel, Float};
use crate::error::{fmt_shape, try_zeros2, KernelError, Result};

/// Batches with fewer elements than this run on one thread.
pub const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// One row: yᵢ = exp(xᵢ − max x) / Σⱼ exp(xⱼ − max x).
///
/// Subtracting the row maximum keeps every exponent ≤ 0, so logits like ±1000 give
/// finite probabilities summing to 1. A row containing NaN, or whose maximum is +∞ or
/// which is all −∞, has no defined softmax and comes out NaN (as NumPy's book formula).
pub fn softmax_row<T: Float>(x: ArrayView1<'_, T>, mut y: ArrayViewMut1<'_, T>) {
    let max = x.fold(
        T::neg_infinity(),
        |m, &v| if v > m || v.is_nan() { v } else { m },
    );
    let sum = match (x.as_slice(), y.as_slice_mut()) {
        (Some(src), Some(dst)) => {
            math::map_slice(src, dst, |v| (v - max).exp_v());
            sum_lanes(dst)
        }
        _ => {
            Zip::from(&mut y)
                .and(&x)
                .for_each(|y, &v| *y = (v - max).exp_v());
            // The same eight-lane order as the slice path, so layouts agree bit for bit.
            let mut acc = [T::zero(); 8];
            for (i, &e) in y.iter().enumerate() {
                acc[i % 8] = acc[i % 8] + e;
            }
            acc.iter().copied().sum()
        }
    };
    let inv = T::one() / sum;
    y.mapv_inplace(|e| e * inv);
}

/// Σ v with eight running sums, so the loop vectorises (float addition is not
/// associative, so the compiler will not reorder a single running sum itself).
fn sum_lanes<T: Float>(v: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = *a + x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = *a + x;
    }
    acc.iter().copied().sum()
}

/// Softmax of every row.  x: (n, k) -> (n, k). Any strides.
pub fn softmax<T: Float>(x: ArrayView2<'_, T>) -> Result<Array2<T>> {
    let mut y = try_zeros2("softmax", x.nrows(), x.ncols())?;
    rows_into(x, y.view_mut());
    Ok(y)
}

/// Softmax of every row written into `y`.  x, y: (n, k).
pub fn softmax_into<T: Float>(x: ArrayView2<'_, T>, y: ArrayViewMut2<'_, T>) -> Result<()> {
    if x.dim() != y.dim() {
        return Err(KernelError::shape(
            "softmax_into",
            format!(
                "out has shape {} but x has shape {}",
                fmt_shape(y.shape()),
                fmt_shape(x.shape())
            ),
        ));
    }
    rows_into(x, y);
    Ok(())
}

fn rows_into<T: Float>(x: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) {
    let zip = Zip::from(x.axis_iter(Axis(0))).and(y.axis_iter_mut(Axis(0)));
    if x.len() < PARALLEL_MIN_ELEMS {
        zip.for_each(softmax_row);
        return;
    }
    parallel::install(|threads| {
        if threads > 1 {
            zip.par_for_each(softmax_row);
        } else {
            zip.for_each(softmax_row);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array};

    #[test]
    fn book_example() -> Result<()> {
        // The book: softmax([0.3, 2.9, 4.0]) = [0.01821127, 0.24519181, 0.73659691]
        let y = softmax(array![[0.3_f64, 2.9, 4.0]].view())?;
        let want = [0.01821127329554753, 0.24519181293507392, 0.7365969137693786];
        for (got, want) in y.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn huge_logits_stay_finite() -> Result<()> {
        let y = softmax(array![[1010.0_f32, 1000.0, 990.0], [-1000.0, -1000.0, 1000.0]].view())?;
        assert!(y.iter().all(|v| v.is_finite()));
        for row in y.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
        }
        assert_eq!(y[[1, 2]], 1.0);
        Ok(())
    }

    #[test]
    fn undefined_rows_are_nan_and_do_not_leak() -> Result<()> {
        let x = array![
            [f64::NEG_INFINITY, f64::NEG_INFINITY],
            [f64::NAN, 0.0],
            [0.0, 0.0]
        ];
        let y = softmax(x.view())?;
        assert!(y.row(0).iter().all(|v| v.is_nan()));
        assert!(y.row(1).iter().all(|v| v.is_nan()));
        assert_eq!(y.row(2).to_vec(), vec![0.5, 0.5]);
        Ok(())
    }

    #[test]
    fn parallel_and_transposed_agree_with_serial_rows() -> Result<()> {
        let x = Array::from_shape_fn((400, 100), |(i, j)| ((i * 7 + j * 3) % 17) as f64 - 8.0);
        let y = softmax(x.view())?;
        let xt = x.t().to_owned();
        let y2 = softmax(xt.t())?;
        assert_eq!(y, y2);
        let mut row = Array::zeros(100);
        softmax_row(x.row(5), row.view_mut());
        assert_eq!(row, y.row(5));
        Ok(())
    }
}
