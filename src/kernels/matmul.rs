//! Matrix products through the `gemm` crate (AVX-512/AVX2/FMA micro-kernels, rayon).
//!
//! Views of any strides go straight to the GEMM: `Aᵀ·B` is `matmul(a.t(), b)` and
//! costs no transpose copy.
//!
//! `gemm` takes every dense product, the network's small ones too. Measured against it
//! on AMD EPYC Zen 3 (AVX2 + FMA), one thread, medians of 7 or 9 rounds from Rust: a
//! kernel of our own holding 6 × 16 (float32) or 6 × 8 (float64) sums in registers, A
//! read where it lies and B copied into zero-padded panels, took 2.2–3.1 µs against
//! gemm's 2.3–2.9 on 100×50×10, 100×10×50 and 50×100×10 in float32, and 4.1–6.3 µs
//! against 4.0–4.3 in float64; without packing, on 100×784×50 float32 it took 128–130
//! µs against 109–111 (only Aᵀ·B, 784×100×50 float32, gained: 113–122 against
//! 124–128). 1024³ float32 as two independent halves instead of gemm's own two
//! threads: 16.5–23.5 ms against 17.6–22.2 over six rounds, no difference.

use std::mem::MaybeUninit;

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

use super::{math, parallel, sparse_input, Float};
use crate::error::{fmt_shape, try_uninit, KernelError, Result};

/// Where a product goes: memory to overwrite or add into (`Into(c, accumulate)`), or
/// memory not written yet (`Fresh`), which each block of the product writes once on
/// the thread that computes it, no thread clearing the whole first; the product is
/// added to the row `.1` when given (a bias), else written as it is.
pub(crate) enum Out<'a, T> {
    Into(ArrayViewMut2<'a, T>, bool),
    Fresh(ArrayViewMut2<'a, MaybeUninit<T>>, Option<ArrayView1<'a, T>>),
}

impl<'a, T: Float> Out<'a, T> {
    /// (rows, columns).
    pub(crate) fn dim(&self) -> (usize, usize) {
        match self {
            Out::Into(c, _) => c.dim(),
            Out::Fresh(c, _) => c.dim(),
        }
    }

    /// Whether the memory is in row-major order without gaps.
    pub(crate) fn is_standard_layout(&self) -> bool {
        match self {
            Out::Into(c, _) => c.is_standard_layout(),
            Out::Fresh(c, _) => c.is_standard_layout(),
        }
    }

    /// The first k rows (`Axis(0)`) or columns (`Axis(1)`), and the rest.
    pub(crate) fn split_at(self, axis: Axis, k: usize) -> (Self, Self) {
        match self {
            Out::Into(c, acc) => {
                let (x, y) = c.split_at(axis, k);
                (Out::Into(x, acc), Out::Into(y, acc))
            }
            Out::Fresh(c, row) => {
                let (x, y) = c.split_at(axis, k);
                let (rx, ry) = match row {
                    Some(r) if axis == Axis(1) => {
                        let (p, q) = r.split_at(Axis(0), k);
                        (Some(p), Some(q))
                    }
                    r => (r, r),
                };
                (Out::Fresh(x, rx), Out::Fresh(y, ry))
            }
        }
    }

    /// The memory as Ts to add into or overwrite (`.1`: whether to add): fresh memory
    /// gets its starting row (or zeros) first, here, on the calling thread.
    pub(crate) fn ready(self) -> (ArrayViewMut2<'a, T>, bool) {
        match self {
            Out::Into(c, acc) => (c, acc),
            Out::Fresh(mut c, row) => {
                // The starting row as a slice (a strided bias copied once).
                let copy = row.filter(|r| r.as_slice().is_none()).map(|r| r.to_vec());
                let r = copy.as_deref().or_else(|| row.and_then(|r| r.to_slice()));
                for mut line in c.rows_mut() {
                    match (line.as_slice_mut(), r) {
                        (Some(line), Some(r)) => math::map_slice_uninit(r, line, |b| b),
                        (Some(line), None) => line.fill(MaybeUninit::new(T::zero())),
                        (None, _) => line.indexed_iter_mut().for_each(|(j, v)| {
                            v.write(r.map_or(T::zero(), |r| r[j]));
                        }),
                    }
                }
                // SAFETY: every element was written just above (the row has c's width:
                // the caller's check, kept by `split_at`).
                (unsafe { c.assume_init() }, true)
            }
        }
    }

    /// `c ← A·B` (or `c + A·B` into memory to add into) by one `gemm::gemm` call; shapes
    /// checked, none of m, n, k zero.
    fn gemm(self, a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, parallelism: gemm::Parallelism) {
        let (m, k) = a.dim();
        let n = b.ncols();
        let (a_rs, a_cs) = strides(&a);
        let (b_rs, b_cs) = strides(&b);
        let (dst, (c_rs, c_cs), read_dst) = match self {
            Out::Into(mut c, acc) => (c.as_mut_ptr(), strides(&c.view()), acc),
            // Fresh memory is only written (read_dst false), through a raw pointer.
            Out::Fresh(mut c, None) => (c.as_mut_ptr().cast::<T>(), strides(&c.view()), false),
            fresh @ Out::Fresh(_, Some(_)) => {
                let (mut c, acc) = fresh.ready();
                (c.as_mut_ptr(), strides(&c.view()), acc)
            }
        };
        // SAFETY: the pointers and element strides come from live ndarray views of the
        // stated shapes (m×k, k×n, m×n), so every index gemm forms is in bounds; the
        // output is borrowed mutably, hence not aliased by `a` or `b`, and gemm reads it
        // only when `read_dst` (never fresh memory); T is f32 or f64, both supported by
        // gemm (it panics only for other types). gemm's own threads finish before it
        // returns.
        unsafe {
            gemm::gemm(
                /* m = */ m,
                /* n = */ n,
                /* k = */ k,
                /* dst = */ dst,
                /* dst_cs = */ c_cs,
                /* dst_rs = */ c_rs,
                /* read_dst = */ read_dst,
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
}

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
/// ([`sparse_input`]); the result is the dense product's up to rounding order. A may be
/// of the other float type (its values converted as NumPy's `astype` would).
pub fn matmul<T: Float, U: Float>(a: ArrayView2<'_, U>, b: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_inner("matmul", &a, &b)?;
    let mut c = try_uninit("matmul", ndarray::Ix2(a.nrows(), b.ncols()))?;
    product_out(a, b, Out::Fresh(c.view_mut(), None));
    // SAFETY: `product_out` writes every element of a fresh output.
    Ok(unsafe { c.assume_init() })
}

/// `c ← A·B` (or `c + A·B`, or into fresh memory, every element written), skipping
/// A's zeros where that pays: A with contiguous rows through
/// [`sparse_input::product_out`], A = xᵀ of such an x through
/// [`sparse_input::transposed_times_out`] when B is wide enough
/// ([`sparse_input::transposed_pays`]); otherwise the GEMM. Shapes checked.
pub(crate) fn product_out<T: Float, U: Float>(
    a: ArrayView2<'_, U>,
    b: ArrayView2<'_, T>,
    c: Out<'_, T>,
) {
    let (m, k) = a.dim();
    if m > 1 && k > 1 && a.stride_of(Axis(0)) == 1 && a.stride_of(Axis(1)) != 1 {
        let x = a.t();
        let nz = sparse_input::transposed_pays::<T, U>(b.ncols())
            .then(|| sparse_input::compress_for_products::<T, U>(x, b.ncols()))
            .flatten();
        return sparse_input::transposed_times_out(x, nz.as_ref(), b, c);
    }
    sparse_input::product_out(a, b, c)
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
    // Each block of rows starts as the bias and adds the product, on its own thread.
    let mut y = try_uninit("affine", ndarray::Ix2(x.nrows(), w.ncols()))?;
    sparse_input::product_out(x, w, Out::Fresh(y.view_mut(), Some(b)));
    // SAFETY: `product_out` writes every element of a fresh output.
    Ok(unsafe { y.assume_init() })
}

/// `c ← A·B` (or `c + A·B`); shapes already checked.
pub(crate) fn gemm_into<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    gemm_out(a, b, Out::Into(c, accumulate));
}

/// [`gemm_into`] into any [`Out`]; every element of a fresh output is written.
pub(crate) fn gemm_out<T: Float>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, c: Out<'_, T>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: A·B is all zeros.
        let (mut c, accumulate) = c.ready();
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
        c.gemm(a, b, gemm::Parallelism::None);
    } else if macs < SPLIT_MAX_MACS || !parallel_worth::<T>(macs) || thin::<T>(k, n) {
        split_rows_or_cols(a, b, c, MEDIUM_PARTS);
    } else if nested {
        c.gemm(a, b, gemm::Parallelism::None);
    } else {
        parallel::install(|threads| {
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            c.gemm(a, b, par);
        });
    }
}

/// Above this many multiply-adds gemm's own threading (shared packing) wins; below it,
/// independent blocks on each thread do.
pub const SPLIT_MAX_MACS: usize = 1 << 26;

/// Largest B (k × n, in bytes) for which a product of any size is cut into
/// independent blocks of rows rather than run with gemm's threading: a B this small
/// costs each thread little to pack, and gemm's threading of a tall, thin product
/// splits finer than it pays (10,000×100×100 float64 on AMD Zen 2, two threads:
/// 3.6 ms threaded, 2.5 ms in two blocks; 1024³ is not thin).
pub const THIN_B_BYTES: usize = 1 << 20;

/// Whether B (k × n of T) is at most [`THIN_B_BYTES`].
fn thin<T>(k: usize, n: usize) -> bool {
    k.saturating_mul(n).saturating_mul(std::mem::size_of::<T>()) <= THIN_B_BYTES
}

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
    c: Out<'_, T>,
    parts: usize,
) {
    let (m, n) = c.dim();
    // Blocks of rows of (a, c), or of columns of (b, c), in whole 8-element groups.
    let (axis, len) = if m >= n { (Axis(0), m) } else { (Axis(1), n) };
    let size = len.div_ceil(parts).next_multiple_of(8).min(len).max(1);
    let mut blocks = Vec::with_capacity(parts);
    let mut rest = c;
    let mut start = 0;
    while start < len {
        let take = size.min(len - start);
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
        block.gemm(a, b, gemm::Parallelism::None);
    });
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
    fn fresh_outputs_are_written_everywhere() -> Result<()> {
        // matmul and affine write into memory it has not cleared: each path (serial GEMM, blocks
        // of rows and of columns, the zero-skipping x·W and xᵀ·D, an empty inner
        // dimension) must write every element. The heap is first filled with NaN of the
        // same sizes, so an element left unwritten shows.
        let sparse = |m: usize, k: usize| {
            Array::from_shape_fn((m, k), |(i, j)| {
                if (i * 7 + j * 3) % 5 == 0 {
                    ((i + j) % 9) as f64 - 4.0
                } else {
                    0.0
                }
            })
        };
        let dense = |m: usize, k: usize| {
            Array::from_shape_fn((m, k), |(i, j)| ((i * 13 + j * 5) % 23) as f64 - 11.0)
        };
        let cases = [
            (dense(7, 5), dense(5, 3)),
            (dense(420, 180), dense(180, 90)),
            (dense(90, 180), dense(180, 420)),
            (sparse(100, 784), dense(784, 50)),
            (sparse(100, 784), dense(784, 10)), // too narrow to skip zeros: the GEMM
            (dense(3, 0), dense(0, 4)),
        ];
        for (a, b) in &cases {
            let (m, n) = (a.nrows(), b.ncols());
            drop(vec![f64::NAN; m * n].into_boxed_slice());
            assert_eq!(matmul(a.view(), b.view())?, naive(a.view(), b.view()));
            // affine: every row starts as the bias, contiguous or strided.
            let spaced = Array::from_shape_fn(2 * n, |j| j as f64 / 2.0 - 2.5);
            let bias = spaced.slice(ndarray::s![..;2]);
            let want = naive(a.view(), b.view()) + bias;
            for bias in [bias, bias.to_owned().view()] {
                drop(vec![f64::NAN; m * n].into_boxed_slice());
                assert_eq!(affine(a.view(), b.view(), bias)?, want);
            }
        }
        // xᵀ·D through a transposed view of a sparse x: skipping its zeros (D 50 wide),
        // through the GEMM (D 10 wide: rows too narrow to pay), and skipping them for
        // an x of the other float type.
        assert!(sparse_input::rows_times_pays::<f64, f64>(50));
        assert!(!sparse_input::rows_times_pays::<f64, f64>(10));
        assert!(sparse_input::rows_times_pays::<f64, f32>(10));
        for h in [50, 10] {
            let (x, d) = (sparse(100, 784), dense(100, h));
            assert_eq!(sparse_input::transposed_pays::<f64, f64>(h), h == 50);
            drop(vec![f64::NAN; 784 * h].into_boxed_slice());
            assert_eq!(matmul(x.t(), d.view())?, naive(x.t(), d.view()));
            let x32 = x.mapv(|v| v as f32);
            assert!(sparse_input::transposed_pays::<f64, f32>(h));
            drop(vec![f64::NAN; 784 * h].into_boxed_slice());
            assert_eq!(matmul(x32.t(), d.view())?, naive(x.t(), d.view()));
        }
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
        // A tall, thin product above SPLIT_MAX_MACS: two blocks of rows, not gemm's
        // threading.
        let (m, k, n) = (7000, 100, 100);
        assert!(m * k * n >= SPLIT_MAX_MACS && parallel_worth::<f64>(m * k * n));
        assert!(thin::<f64>(k, n) && !thin::<f64>(1024, 1024));
        let a = Array::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 17) as f64 - 8.0);
        let b = Array::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 13) as f64 - 6.0);
        assert_eq!(matmul(a.view(), b.view())?, naive(a.view(), b.view()));
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
