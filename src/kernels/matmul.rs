//! Matrix products through the `gemm` crate (AVX-512/AVX2/FMA micro-kernels, rayon).
//!
//! Views of any strides go straight to the GEMM: `Aᵀ·B` is `matmul(a.t(), b)` and
//! costs no transpose copy.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

use super::{parallel, sparse_input, Float};
use crate::error::{fmt_shape, try_zeros2, KernelError, Result};

/// Products with fewer multiply-adds × bytes per element than this run on one thread:
/// below it the cost of waking a second thread (tens of µs in a virtual machine)
/// exceeds the work it takes over. 48 MiB: 100×784×50 stays serial in both dtypes.
pub const PARALLEL_MIN_MAC_BYTES: usize = 48 << 20;

/// Whether a product of `macs` multiply-adds of `T` is worth a second thread.
pub fn parallel_worth<T>(macs: usize) -> bool {
    macs.saturating_mul(std::mem::size_of::<T>()) >= PARALLEL_MIN_MAC_BYTES
}

fn check_inner<T, U>(op: &'static str, a: &ArrayView2<'_, U>, b: &ArrayView2<'_, T>) -> Result<()> {
    if a.ncols() != b.nrows() {
        return Err(KernelError::shape(
            op,
            format!(
                "a has shape {} but b has shape {}; inner dimensions differ",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    Ok(())
}

/// `C = A·B`.  a: (m, k), b: (k, n) -> (m, n). Any strides. When A (or Aᵀ, for
/// `xᵀ·D`) is an input batch with mostly exact zeros, its zeros are skipped
/// ([`sparse_input`]); the result is the dense product's up to rounding order.
pub fn matmul<T: Float>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_inner("matmul", &a, &b)?;
    let mut c = try_zeros2("matmul", a.nrows(), b.ncols())?;
    // c is zeros: adding the product into it saves clearing it again.
    product_into(a, b, c.view_mut(), true);
    Ok(c)
}

/// `c ← A·B` (or `c + A·B`), skipping A's zeros where that pays: A with contiguous
/// rows through [`sparse_input::product_into`], A = xᵀ of such an x through
/// [`sparse_input::transposed_times_into`]; otherwise the GEMM. Shapes checked.
pub(crate) fn product_into<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    if m > 1 && k > 1 && a.stride_of(Axis(0)) == 1 && a.stride_of(Axis(1)) != 1 {
        let x = a.t();
        let nz = sparse_input::compress_for_products(x, b.ncols());
        return sparse_input::transposed_times_into(x, nz.as_ref(), b, c, accumulate);
    }
    sparse_input::product_into(a, b, c, accumulate)
}

/// `C ← A·B`, or `C ← C + A·B` with `accumulate`.  a: (m, k), b: (k, n), c: (m, n).
/// Any strides for all three; `c` must not overlap `a` or `b` (Rust's borrows ensure it).
pub fn matmul_into<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) -> Result<()> {
    check_inner("matmul_into", &a, &b)?;
    if c.dim() != (a.nrows(), b.ncols()) {
        return Err(KernelError::shape(
            "matmul_into",
            format!(
                "out has shape {} but a·b has shape {}",
                fmt_shape(c.shape()),
                fmt_shape(&[a.nrows(), b.ncols()])
            ),
        ));
    }
    gemm_into(a, b, c, accumulate);
    Ok(())
}

/// `y = x·W + b`.  x: (n, d), W: (d, h), b: (h,) -> (n, h). Any strides; x may be of
/// the other float type (its values converted as NumPy's `astype` would).
pub fn affine<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    w: ArrayView2<'_, T>,
    b: ArrayView1<'_, T>,
) -> Result<Array2<T>> {
    check_inner("affine", &x, &w)?;
    if b.len() != w.ncols() {
        return Err(KernelError::shape(
            "affine",
            format!(
                "b has shape {} but W has shape {}; need one bias per column",
                fmt_shape(b.shape()),
                fmt_shape(w.shape())
            ),
        ));
    }
    // Fill the output with the bias first, then let the GEMM accumulate onto it.
    let mut y = try_zeros2("affine", x.nrows(), w.ncols())?;
    y.rows_mut().into_iter().for_each(|mut row| row.assign(&b));
    sparse_input::product_into(x, w, y.view_mut(), true);
    Ok(y)
}

/// `c ← A·B` (or `c + A·B`); shapes already checked.
pub(crate) fn gemm_into<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: A·B is all zeros.
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    let macs = m.saturating_mul(n).saturating_mul(k);
    let mac_bytes = macs.saturating_mul(std::mem::size_of::<T>());
    // Inside a rayon loop the other threads are busy: the blocks of a medium product
    // run one after the other right here (`split` sees to it), cut as anywhere else so
    // that the result is the same; a large one runs as one serial GEMM.
    let nested = rayon::current_thread_index().is_some();
    if mac_bytes < TEAM_MIN_MAC_BYTES {
        gemm_serial(a, b, c, accumulate, gemm::Parallelism::None);
    } else if macs < SPLIT_MAX_MACS || !parallel_worth::<T>(macs) {
        split_rows_or_cols(a, b, c, accumulate, MEDIUM_PARTS);
    } else if nested {
        gemm_serial(a, b, c, accumulate, gemm::Parallelism::None);
    } else {
        parallel::install(|threads| {
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            gemm_serial(a, b, c, accumulate, par);
        });
    }
}

/// Above this many multiply-adds gemm's own threading (shared packing) wins; below it,
/// independent blocks on each thread do.
pub const SPLIT_MAX_MACS: usize = 1 << 26;

/// Products with at least this many multiply-adds × bytes per element are split
/// between the team's threads ([`parallel::split`]; 100×784×50 is 31 MB in f64 and
/// 16 MB in f32): at ~20 µs of work per thread the hand-over to a thread that is
/// still awake costs about 1 %.
pub const TEAM_MIN_MAC_BYTES: usize = 2 << 20;

/// Blocks a medium product is cut into, whatever the number of threads: gemm sums a
/// block's terms in an order that depends on the block's shape, so a cut that
/// followed the thread count would make the result depend on it.
pub const MEDIUM_PARTS: usize = 2;

/// Medium products (the network's): the output cut into `parts` blocks of rows (or
/// columns, whichever is longer), each a single-threaded GEMM, shared by the team's
/// threads. gemm's own threading splits finer and synchronises more, which these
/// sizes cannot repay.
fn split_rows_or_cols<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    parts: usize,
) {
    let (m, n) = c.dim();
    // Blocks of rows of (a, c), or of columns of (b, c), in whole 8-element groups.
    let axis = if m >= n { Axis(0) } else { Axis(1) };
    let len = c.len_of(axis);
    let size = len.div_ceil(parts).next_multiple_of(8).min(len).max(1);
    let mut blocks = Vec::with_capacity(parts);
    let mut rest = c;
    let mut start = 0;
    while rest.len_of(axis) > 0 {
        let take = size.min(rest.len_of(axis));
        let (block, tail) = rest.split_at(axis, take);
        rest = tail;
        let range = start..start + take;
        start += take;
        let (a, b) = if axis == Axis(0) {
            (a.slice_move(ndarray::s![range, ..]), b)
        } else {
            (a, b.slice_move(ndarray::s![.., range]))
        };
        blocks.push((a, b, block));
    }
    parallel::split_items(blocks, |(a, b, block)| {
        gemm_serial(a, b, block, accumulate, gemm::Parallelism::None);
    });
}

/// One `gemm::gemm` call: `c ← A·B` (or `c + A·B`); shapes checked, none of m, n, k zero.
fn gemm_serial<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (a_rs, a_cs) = strides(&a);
    let (b_rs, b_cs) = strides(&b);
    let (c_rs, c_cs) = (c.stride_of(Axis(0)), c.stride_of(Axis(1)));
    // SAFETY: the pointers and element strides come from live ndarray views of the
    // stated shapes (m×k, k×n, m×n), so every index gemm forms is in bounds; `c` is
    // borrowed mutably, hence not aliased by `a` or `b`; T is f32 or f64, both
    // supported by gemm (it panics only for other types). gemm's own threads finish
    // before it returns.
    unsafe {
        gemm::gemm(
            /* m = */ m,
            /* n = */ n,
            /* k = */ k,
            /* dst = */ c.as_mut_ptr(),
            /* dst_cs = */ c_cs,
            /* dst_rs = */ c_rs,
            /* read_dst = */ accumulate,
            /* lhs = */ a.as_ptr(),
            /* lhs_cs = */ a_cs,
            /* lhs_rs = */ a_rs,
            /* rhs = */ b.as_ptr(),
            /* rhs_cs = */ b_cs,
            /* rhs_rs = */ b_rs,
            /* alpha (scales dst) = */ T::one(),
            /* beta (scales lhs·rhs) = */ T::one(),
            /* conj_dst = */ false,
            /* conj_lhs = */ false,
            /* conj_rhs = */ false,
            parallelism,
        );
    }
}

/// Row and column strides in elements. A length-1 axis may carry any stride in
/// ndarray; give it a harmless one so the GEMM never sees a zero or huge stride there.
fn strides<T>(v: &ArrayView2<'_, T>) -> (isize, isize) {
    let (rows, cols) = v.dim();
    let rs = if rows <= 1 {
        cols.max(1) as isize
    } else {
        v.stride_of(Axis(0))
    };
    let cs = if cols <= 1 { 1 } else { v.stride_of(Axis(1)) };
    (rs, cs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array};

    fn naive(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols()).map(|p| a[[i, p]] * b[[p, j]]).sum()
        })
    }

    #[test]
    fn two_by_two_by_hand() -> Result<()> {
        let a = array![[1.0, 2.0], [3.0, 4.0]];
        let b = array![[5.0, 6.0], [7.0, 8.0]];
        assert_eq!(
            matmul(a.view(), b.view())?,
            array![[19.0, 22.0], [43.0, 50.0]]
        );
        // Aᵀ·B through a transposed view: [[1,3],[2,4]]·B
        assert_eq!(matmul(a.t(), b.view())?, array![[26.0, 30.0], [38.0, 44.0]]);
        Ok(())
    }

    #[test]
    fn strided_and_transposed_views_match_naive() -> Result<()> {
        let big = Array::from_shape_fn((37, 90), |(i, j)| ((i * 31 + j * 7) % 13) as f64 - 6.0);
        let a = big.slice(ndarray::s![..;2, 1..60;3]); // (19, 20), both strides non-unit
        let b = big.slice(ndarray::s![..20, ..;5]).to_owned(); // (20, 18)
        let c = matmul(a, b.view())?;
        assert_eq!(c, naive(a, b.view()));
        let ct = matmul(b.t(), a.t())?; // (A·B)ᵀ = Bᵀ·Aᵀ
        assert_eq!(ct, naive(a, b.view()).t());
        Ok(())
    }

    #[test]
    fn threaded_splits_match_naive() -> Result<()> {
        // Above TEAM_MIN_MAC_BYTES: rows split (m ≥ n), columns split (n > m), and a
        // transposed operand, each against the naive triple loop.
        let (m, k, n) = (420, 180, 90);
        assert!(m * k * n * 8 >= TEAM_MIN_MAC_BYTES && m * k * n < SPLIT_MAX_MACS);
        let a = Array::from_shape_fn((m, k), |(i, j)| ((i * 13 + j * 5) % 23) as f64 - 11.0);
        let b = Array::from_shape_fn((k, n), |(i, j)| ((i * 3 + j * 17) % 19) as f64 - 9.0);
        assert_eq!(matmul(a.view(), b.view())?, naive(a.view(), b.view()));
        let (bt, at) = (b.t().to_owned(), a.t().to_owned());
        assert_eq!(matmul(bt.view(), at.view())?, naive(bt.view(), at.view()));
        let mut c = Array2::from_elem((m, n), 1.0);
        matmul_into(at.t(), b.view(), c.view_mut(), true)?;
        assert_eq!(c, naive(a.view(), b.view()) + 1.0);
        Ok(())
    }

    #[test]
    fn affine_adds_bias_to_every_row() -> Result<()> {
        let x = array![[1.0_f32, 0.5], [0.0, -1.0], [2.0, 2.0]];
        let w = array![[1.0_f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![0.1_f32, 0.2, 0.3];
        let y = affine(x.view(), w.view(), b.view())?;
        assert_eq!(
            y,
            array![[3.1_f32, 4.7, 6.3], [-3.9, -4.8, -5.7], [10.1, 14.2, 18.3]]
        );
        Ok(())
    }

    #[test]
    fn accumulate_and_empty_inner_dimension() -> Result<()> {
        let a = Array2::<f64>::zeros((3, 0));
        let b = Array2::<f64>::zeros((0, 2));
        assert_eq!(matmul(a.view(), b.view())?, Array2::<f64>::zeros((3, 2)));
        let mut c = Array2::from_elem((2, 2), 1.0);
        let e = array![[1.0, 0.0], [0.0, 1.0]];
        matmul_into(e.view(), e.view(), c.view_mut(), true)?;
        assert_eq!(c, array![[2.0, 1.0], [1.0, 2.0]]);
        Ok(())
    }

    #[test]
    fn shape_errors_name_both_shapes() {
        let a = Array2::<f64>::zeros((100, 783));
        let w = Array2::<f64>::zeros((784, 50));
        let err = matmul(a.view(), w.view()).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "matmul: a has shape (100, 783) but b has shape (784, 50); inner dimensions differ"
            )
        );
    }
}
