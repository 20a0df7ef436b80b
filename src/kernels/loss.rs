//! Loss functions with the book's semantics, and the softmax-with-loss gradient
//! (the book's `SoftmaxWithLoss` layer), on arrays and on the fused step's rows.

use multiversion::multiversion;
use ndarray::{Array2, ArrayView2, ArrayViewD, Zip};

use super::{Float, Targets};
use crate::error::{fmt_shape, try_zeros2, KernelError, Result};

/// δ in log(y + δ): keeps the log finite when a predicted probability is 0.
pub const CROSS_ENTROPY_DELTA: f64 = 1e-7;

/// Cross-entropy error, the batch mean.  y: (n, k) probabilities; t: one-hot (n, k)
/// -> −Σ t·log(y + δ) / n, or labels (n,) -> −Σᵢ log(y[i, tᵢ] + δ) / n. δ = 1e-7.
/// Sums in f64 whatever T is.
pub fn cross_entropy_error<T: Float>(y: ArrayView2<'_, T>, t: Targets<'_, T>) -> Result<T> {
    let (n, k) = y.dim();
    t.check("cross_entropy_error", n, k)?;
    if n == 0 {
        return Err(KernelError::shape(
            "cross_entropy_error",
            "y has no rows; the mean of an empty batch is undefined",
        ));
    }
    let delta = T::lit(CROSS_ENTROPY_DELTA);
    let total: f64 = match t {
        Targets::OneHot(t) => {
            let mut acc = 0.0;
            Zip::from(&y).and(&t).for_each(|&y, &t| {
                if t != T::zero() {
                    acc += (t * (y + delta).ln()).to_f64();
                }
            });
            acc
        }
        Targets::Labels(labels) => labels
            .iter()
            .zip(y.rows())
            .map(|(&label, row)| (row[label as usize] + delta).ln().to_f64())
            .sum(),
    };
    Ok(T::lit(-total / n as f64))
}

/// Sum of squares error 0.5·Σ(y − t)² over all elements (no batch mean, as the book).
pub fn sum_squares_error<T: Float>(y: ArrayViewD<'_, T>, t: ArrayViewD<'_, T>) -> Result<T> {
    if y.shape() != t.shape() {
        return Err(KernelError::shape(
            "sum_squares_error",
            format!(
                "y has shape {} but t has shape {}; they must match",
                fmt_shape(y.shape()),
                fmt_shape(t.shape())
            ),
        ));
    }
    let mut acc = 0.0_f64;
    Zip::from(&y).and(&t).for_each(|&y, &t| {
        let d = (y - t).to_f64();
        acc += d * d;
    });
    Ok(T::lit(0.5 * acc))
}

/// Gradient of mean cross-entropy after softmax w.r.t. the logits: (y − t) / n,
/// with integer labels read as one-hot.  y: (n, k) softmax output -> (n, k).
pub fn softmax_cross_entropy_backward<T: Float>(
    y: ArrayView2<'_, T>,
    t: Targets<'_, T>,
) -> Result<Array2<T>> {
    softmax_cross_entropy_backward_of(y, t, y.nrows())
}

/// [`softmax_cross_entropy_backward`] of rows of a batch of `batch` rows: (y − t)/batch.
pub(crate) fn softmax_cross_entropy_backward_of<T: Float>(
    y: ArrayView2<'_, T>,
    t: Targets<'_, T>,
    batch: usize,
) -> Result<Array2<T>> {
    let (n, k) = y.dim();
    t.check("softmax_cross_entropy_backward", n, k)?;
    let inv_n = if batch == 0 {
        T::zero()
    } else {
        T::one() / T::lit(batch as f64)
    };
    let mut dx = try_zeros2("softmax_cross_entropy_backward", n, k)?;
    Ok(match t {
        Targets::OneHot(t) => {
            Zip::from(&mut dx)
                .and(&y)
                .and(&t)
                .for_each(|d, &y, &t| *d = (y - t) * inv_n);
            dx
        }
        Targets::Labels(labels) => {
            dx.assign(&y);
            for (mut row, &label) in dx.rows_mut().into_iter().zip(labels.iter()) {
                row[label as usize] = row[label as usize] - T::one();
            }
            dx.mapv_inplace(|v| v * inv_n);
            dx
        }
    })
}

/// The `SoftmaxWithLoss` layer's forward and backward on a batch of logit rows:
/// y (n, k) ← dy = (softmax(y) − t)/n in place (max-subtracted, so exp cannot
/// overflow), db = Σ_rows dy; returns the batch's summed cross-entropy
/// −Σ t·log(softmax(y) + δ) (δ keeps the log finite). Row q's target is row `batch[q]`
/// of t, already checked.
pub(crate) fn softmax_with_loss_rows<T: Float>(
    y: &mut [T],
    k: usize,
    batch: &[usize],
    t: Targets<'_, T>,
    db: &mut [T],
) -> f64 {
    let n = batch.len();
    for y in y.chunks_exact_mut(k) {
        let max = y
            .iter()
            .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
        for v in y.iter_mut() {
            *v = *v - max;
        }
    }
    exp_in_place(y);
    let delta = T::lit(CROSS_ENTROPY_DELTA);
    let inv_n = T::one() / T::lit(n as f64);
    let mut loss = 0.0_f64;
    db.fill(T::zero());
    for (y, &row) in y.chunks_exact_mut(k).zip(batch) {
        let sum = y.iter().fold(T::zero(), |s, &v| s + v);
        for v in y.iter_mut() {
            *v = *v / sum;
        }
        match t {
            Targets::Labels(labels) => {
                let c = labels[row] as usize;
                loss -= (y[c] + delta).ln().to_f64();
                y[c] = y[c] - T::one();
            }
            Targets::OneHot(oh) => {
                for (v, &tv) in y.iter_mut().zip(oh.row(row)) {
                    if tv != T::zero() {
                        loss -= (tv * (*v + delta).ln()).to_f64();
                    }
                    *v = *v - tv;
                }
            }
        }
        for (v, g) in y.iter_mut().zip(db.iter_mut()) {
            *v = *v * inv_n;
            *g = *g + *v;
        }
    }
    loss
}

/// e^v in place, vectorised.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn exp_in_place<T: Float>(v: &mut [T]) {
    for v in v.iter_mut() {
        *v = v.exp_v();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, array, Array2};

    const Y: [f64; 10] = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0];

    fn one_hot(label: usize) -> Array2<f64> {
        Array2::from_shape_fn((1, 10), |(_, j)| if j == label { 1.0 } else { 0.0 })
    }

    #[test]
    fn book_cross_entropy_examples() -> Result<()> {
        let y = arr1(&Y)
            .into_shape_with_order((1, 10))
            .map_err(|e| KernelError::value("test", e.to_string()))?;
        let t2 = one_hot(2);
        assert!(
            (cross_entropy_error(y.view(), Targets::OneHot(t2.view()))? - 0.510825457099338).abs()
                < 1e-12
        );
        let labels = arr1(&[7_i64]);
        assert!(
            (cross_entropy_error(y.view(), Targets::Labels(labels.view()))? - 2.302584092994546)
                .abs()
                < 1e-12
        );
        Ok(())
    }

    #[test]
    fn book_sum_squares_examples() -> Result<()> {
        let y = arr1(&Y).into_dyn();
        let t = one_hot(2)
            .into_shape_with_order(10)
            .map_err(|e| KernelError::value("test", e.to_string()))?
            .into_dyn();
        assert!((sum_squares_error(y.view(), t.view())? - 0.0975).abs() < 1e-15);
        let y7 = arr1(&[0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]).into_dyn();
        assert!((sum_squares_error(y7.view(), t.view())? - 0.5975).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn labels_are_range_checked() {
        let y = Array2::<f64>::from_elem((2, 3), 1.0 / 3.0);
        for bad in [3_i64, -1] {
            let labels = arr1(&[0, bad]);
            let err = cross_entropy_error(y.view(), Targets::Labels(labels.view())).err();
            assert_eq!(
                err,
                Some(KernelError::Label {
                    op: "cross_entropy_error",
                    index: 1,
                    label: bad,
                    classes: 3
                })
            );
        }
    }

    #[test]
    fn backward_is_y_minus_t_over_n_for_both_target_forms() -> Result<()> {
        let y = array![[0.2, 0.8], [0.6, 0.4]];
        let t = array![[0.0, 1.0], [1.0, 0.0]];
        let labels = arr1(&[1_i64, 0]);
        let want = array![[0.1_f64, -0.1], [-0.2, 0.2]];
        let a = softmax_cross_entropy_backward(y.view(), Targets::OneHot(t.view()))?;
        let b = softmax_cross_entropy_backward(y.view(), Targets::Labels(labels.view()))?;
        for (g, w) in a.iter().chain(b.iter()).zip(want.iter().chain(want.iter())) {
            assert!((g - w).abs() < 1e-15);
        }
        Ok(())
    }
}
