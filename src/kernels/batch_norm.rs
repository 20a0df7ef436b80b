//! The book's BatchNormalization layer (ch. 6, DLFS `common/layers.py`) on (N, D) rows:
//! the training forward and the backward, operation by operation as the book's NumPy
//! lines round them, in the arrays' own dtype.
//!
//! The sums over the batch are NumPy's `np.sum(v, axis=0)` of a C-contiguous (N, D)
//! array with D ≥ 2: zeros, then each row added in order (NumPy adds a single column
//! pairwise instead; the layer keeps its NumPy lines for D = 1). Scalars
//! (ε, 2/N, 0.5, N) are rounded to the dtype first, as NumPy takes Python numbers.

use multiversion::multiversion;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use super::math::add_slice;
use super::Float;
use crate::error::{fmt_shape, KernelError, Result};

/// What the training forward keeps for the backward, and the batch statistics.
#[derive(Debug)]
pub struct BatchNormTrain<T> {
    /// γ·xn + β.
    pub out: Array2<T>,
    /// x − μ.
    pub xc: Array2<T>,
    /// (x − μ) / σ.
    pub xn: Array2<T>,
    /// σ = √(var + ε).
    pub std: Array1<T>,
    /// μ, the batch mean of each column.
    pub mu: Array1<T>,
    /// The batch variance of each column.
    pub var: Array1<T>,
}

/// The backward's results.
#[derive(Debug)]
pub struct BatchNormGrads<T> {
    pub dx: Array2<T>,
    pub dgamma: Array1<T>,
    pub dbeta: Array1<T>,
}

/// `np.sum(v, axis=0)` of the C-contiguous rows `v` (D columns): zeros, then each row
/// added in order (so a column of −0 sums to +0, as in NumPy).
fn column_sums<T: Float>(v: &[T], d: usize) -> Vec<T> {
    let mut acc = vec![T::zero(); d];
    for row in v.chunks_exact(d) {
        add_slice(&mut acc, row);
    }
    acc
}

/// `f(a[i, j], b[i, j], cols[j])` for the C-contiguous (N, D) rows `a` and `b` (D =
/// `cols.len()`), as new rows; compiled for AVX-512, AVX2+FMA and the baseline.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn by_column2<T: Float>(a: &[T], b: &[T], cols: &[T], f: impl Fn(T, T, T) -> T) -> Vec<T> {
    let d = cols.len();
    if d == 0 {
        return Vec::new();
    }
    let len = a.len().min(b.len()) / d * d;
    let mut out = Vec::with_capacity(len);
    for ((o, a), b) in out.spare_capacity_mut()[..len]
        .chunks_exact_mut(d)
        .zip(a.chunks_exact(d))
        .zip(b.chunks_exact(d))
    {
        for (((o, &a), &b), &c) in o.iter_mut().zip(a).zip(b).zip(cols) {
            o.write(f(a, b, c));
        }
    }
    // SAFETY: the loop wrote every one of the first `len` elements (whole rows of d
    // that both `a` and `b` have).
    unsafe { out.set_len(len) };
    out
}

/// `f(v[i, j], cols[j])` for the C-contiguous (N, D) rows `v`, as new rows.
fn by_column<T: Float>(v: &[T], cols: &[T], f: impl Fn(T, T) -> T) -> Vec<T> {
    by_column2(v, v, cols, |a, _, c| f(a, c))
}

/// N rows of D as an array (the length is N·D by construction).
fn rows<T: Float>(v: Vec<T>, n: usize, d: usize) -> Array2<T> {
    Array2::from_shape_vec((n, d), v).unwrap_or_else(|_| Array2::zeros((n, d)))
}

/// Errors unless the rows (`shape`, named `name`) have a row and a column at least and
/// each of `vectors` (name, length) one entry per column.
fn check_rows(
    op: &'static str,
    name: &str,
    shape: &[usize],
    vectors: [(&str, usize); 2],
) -> Result<()> {
    if shape.contains(&0) {
        return Err(KernelError::shape(
            op,
            format!(
                "{name} has shape {}; need at least one row and column",
                fmt_shape(shape)
            ),
        ));
    }
    match vectors.into_iter().find(|&(_, len)| len != shape[1]) {
        None => Ok(()),
        Some((what, len)) => Err(KernelError::shape(
            op,
            format!(
                "{what} has {len} entries but the rows have shape {}; need one per column",
                fmt_shape(shape)
            ),
        )),
    }
}

/// The training forward of the book's BatchNormalization: μ = mean(x, axis=0),
/// xc = x − μ, var = mean(xc², axis=0), σ = √(var + ε), xn = xc / σ, out = γ·xn + β.
/// x (N, D) with N ≥ 1; γ and β (D,). Any strides.
pub fn batch_norm_forward<T: Float>(
    x: ArrayView2<'_, T>,
    gamma: ArrayView1<'_, T>,
    beta: ArrayView1<'_, T>,
    eps: f64,
) -> Result<BatchNormTrain<T>> {
    const OP: &str = "batch_norm_forward";
    let (n, d) = x.dim();
    check_rows(
        OP,
        "x",
        x.shape(),
        [("gamma", gamma.len()), ("beta", beta.len())],
    )?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().unwrap_or_default();
    let (gamma, beta) = (gamma.to_vec(), beta.to_vec());
    let count = T::lit(n as f64);
    let mu: Vec<T> = column_sums(xs, d).into_iter().map(|s| s / count).collect();
    let xc = by_column(xs, &mu, |v, m| v - m);
    let squares: Vec<T> = xc.iter().map(|&v| v * v).collect();
    let var: Vec<T> = column_sums(&squares, d)
        .into_iter()
        .map(|s| s / count)
        .collect();
    let eps = T::lit(eps);
    let std: Vec<T> = var.iter().map(|&v| (v + eps).sqrt()).collect();
    let xn = by_column(&xc, &std, |v, s| v / s);
    let scaled = by_column(&xn, &gamma, |v, g| g * v);
    let out = by_column(&scaled, &beta, |v, b| v + b);
    Ok(BatchNormTrain {
        out: rows(out, n, d),
        xc: rows(xc, n, d),
        xn: rows(xn, n, d),
        std: Array1::from(std),
        mu: Array1::from(mu),
        var: Array1::from(var),
    })
}

/// The book's BatchNormalization backward from the forward's xc, xn and σ (N rows):
/// dβ = Σ dout, dγ = Σ xn·dout, dxn = γ·dout, dxc = dxn / σ,
/// dσ = −Σ (dxn·xc) / (σ·σ), dvar = 0.5·dσ / σ, dxc += (2/N)·xc·dvar, dμ = Σ dxc,
/// dx = dxc − dμ / N (sums over the batch). dout, xc, xn (N, D); σ and γ (D,).
pub fn batch_norm_backward<T: Float>(
    dout: ArrayView2<'_, T>,
    xc: ArrayView2<'_, T>,
    xn: ArrayView2<'_, T>,
    std: ArrayView1<'_, T>,
    gamma: ArrayView1<'_, T>,
) -> Result<BatchNormGrads<T>> {
    const OP: &str = "batch_norm_backward";
    let (n, d) = xc.dim();
    for (name, v) in [("dout", &dout), ("xn", &xn)] {
        if v.dim() != (n, d) {
            return Err(KernelError::shape(
                OP,
                format!(
                    "{name} has shape {} but xc has shape {}",
                    fmt_shape(v.shape()),
                    fmt_shape(xc.shape())
                ),
            ));
        }
    }
    check_rows(
        OP,
        "xc",
        xc.shape(),
        [("std", std.len()), ("gamma", gamma.len())],
    )?;
    let (dout, xc, xn) = (
        dout.as_standard_layout(),
        xc.as_standard_layout(),
        xn.as_standard_layout(),
    );
    let (ds, xcs, xns) = (
        dout.as_slice().unwrap_or_default(),
        xc.as_slice().unwrap_or_default(),
        xn.as_slice().unwrap_or_default(),
    );
    let (std, gamma) = (std.to_vec(), gamma.to_vec());
    let dbeta = column_sums(ds, d);
    let xn_dout: Vec<T> = xns.iter().zip(ds).map(|(&a, &b)| a * b).collect();
    let dgamma = column_sums(&xn_dout, d);
    let dxn = by_column(ds, &gamma, |v, g| g * v);
    let std_sq: Vec<T> = std.iter().map(|&s| s * s).collect();
    let terms = by_column2(&dxn, xcs, &std_sq, |a, c, v| (a * c) / v);
    let dstd: Vec<T> = column_sums(&terms, d).into_iter().map(|s| -s).collect();
    let half = T::lit(0.5);
    let dvar: Vec<T> = dstd
        .iter()
        .zip(&std)
        .map(|(&g, &s)| (half * g) / s)
        .collect();
    let scale = T::lit(2.0 / n as f64);
    let dxc = by_column(&dxn, &std, |v, s| v / s);
    let dxc = by_column2(&dxc, xcs, &dvar, |a, c, v| a + (scale * c) * v);
    let count = T::lit(n as f64);
    let dmu: Vec<T> = column_sums(&dxc, d)
        .into_iter()
        .map(|s| s / count)
        .collect();
    let dx = rows(by_column(&dxc, &dmu, |v, m| v - m), n, d);
    Ok(BatchNormGrads {
        dx,
        dgamma: Array1::from(dgamma),
        dbeta: Array1::from(dbeta),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn three_rows_by_hand() -> Result<()> {
        // Columns 1, 3, 5 and 2, 4, 6: μ = (3, 4), xc = ∓2, 0, ±2, var = 8/3.
        let x = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let (gamma, beta) = (array![2.0, 1.0], array![0.5, -0.5]);
        let f = batch_norm_forward(x.view(), gamma.view(), beta.view(), 1e-6)?;
        assert_eq!(f.mu, array![3.0, 4.0]);
        assert_eq!(f.xc, array![[-2.0, -2.0], [0.0, 0.0], [2.0, 2.0]]);
        assert_eq!(f.var, array![8.0 / 3.0, 8.0 / 3.0]);
        let s = (8.0_f64 / 3.0 + 1e-6).sqrt();
        assert_eq!(f.std, array![s, s]);
        assert_eq!(f.out[[2, 0]], 2.0 * (2.0 / s) + 0.5);
        assert_eq!(f.out[[0, 1]], -2.0 / s - 0.5);
        // A constant dout moves no input (the mean absorbs it): dβ = N, dγ = Σ xn = 0.
        let ones = Array2::from_elem((3, 2), 1.0);
        let g = batch_norm_backward(
            ones.view(),
            f.xc.view(),
            f.xn.view(),
            f.std.view(),
            gamma.view(),
        )?;
        assert_eq!(g.dbeta, array![3.0, 3.0]);
        assert_eq!(g.dgamma, array![0.0, 0.0]);
        assert!(g.dx.iter().all(|v| v.abs() < 1e-15));
        // Shapes are checked.
        assert!(
            batch_norm_forward(x.view(), beta.slice(ndarray::s![..1]), beta.view(), 1e-6).is_err()
        );
        assert!(
            batch_norm_backward(x.t(), f.xc.view(), f.xn.view(), f.std.view(), gamma.view())
                .is_err()
        );
        Ok(())
    }
}
