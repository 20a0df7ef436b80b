//! The fused training step of the two-layer network: batch gather, forward, backprop
//! and the optimizer update in one pass over reused buffers, and a batched accuracy.
//!
//! The input layer is computed from the non-zero entries of each input row only (MNIST
//! is ~81% zeros): a1[r, :] = b1 + Σ_{i: x[r,i] ≠ 0} x[r, i]·W1[i, :] and
//! dW1[i, :] = Σ_{r: x[r,i] ≠ 0} x[r, i]·da1[r, :], the same sums as the dense products
//! without their zero terms. Updates follow the book's `common/optimizer.py` formulas
//! operation by operation, scalars computed in f64 and rounded to T as NumPy does; SGD's
//! W1 update is added straight into W1 during the dW1 pass (W1 − Σ_r lr·x·da1 instead
//! of W1 − lr·dW1: the same sum, rounded per row).
//!
//! Speed comes from: the inputs compressed once ([`SparseRows`]) and the next batch's
//! rows prefetched while a step runs; W1 rows padded to whole register blocks; dW1 and
//! the W1 update column by column (the batch's entries counted during the forward pass
//! and sorted by column, so each W1 row is read and written once per step and summed in
//! registers); the small layers through the GEMM; and two threads that each own half of
//! the inputs (rows of W1) in both the forward pass and the W1 update, so each core keeps
//! its half of W1 in its own cache and starts the next step's forward pass as soon as its
//! half is updated, while the small layers run on one thread and the sort on the other.

use multiversion::multiversion;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use super::matmul::gemm_into;
use super::numgrad::{Activation, TwoLayerNet};
use super::parallel::{self, join_spinning};
use super::{Float, Targets};
use crate::error::{fmt_shape, KernelError, Result};

/// ε added to √h (AdaGrad, RMSprop) and √v (Adam), as the book.
pub const EPS: f64 = 1e-7;

/// A parameter update rule of DLFS `common/optimizer.py` (same names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// W ← W − lr·g.
    Sgd { lr: f64 },
    /// v ← momentum·v − lr·g; W ← W + v.
    Momentum { lr: f64, momentum: f64 },
    /// v ← momentum·v − lr·g; W ← W + momentum²·v − (1 + momentum)·lr·g.
    Nesterov { lr: f64, momentum: f64 },
    /// h ← h + g²; W ← W − lr·g / (√h + 1e-7).
    AdaGrad { lr: f64 },
    /// h ← ρ·h + (1 − ρ)·g²; W ← W − lr·g / (√h + 1e-7).
    RmsProp { lr: f64, decay_rate: f64 },
    /// m ← m + (1 − β₁)(g − m); v ← v + (1 − β₂)(g² − v);
    /// W ← W − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m / (√v + 1e-7).
    Adam { lr: f64, beta1: f64, beta2: f64 },
}

impl Optimizer {
    /// How many state arrays per parameter: 0 (SGD), 1 (v or h), 2 (Adam's m, v).
    pub fn state_slots(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } => 0,
            Optimizer::Adam { .. } => 2,
            _ => 1,
        }
    }

    /// Errors unless `sets` is the number of state sets this rule keeps.
    pub fn check_state_sets(&self, op: &'static str, sets: usize) -> Result<()> {
        if sets == self.state_slots() {
            return Ok(());
        }
        Err(KernelError::value(
            op,
            format!(
                "the optimizer needs {} state sets, got {sets}",
                self.state_slots()
            ),
        ))
    }

    /// Errors unless lr > 0 and the other rates lie in [0, 1).
    pub fn check(&self, op: &'static str) -> Result<()> {
        let (lr, rates): (f64, Vec<(&str, f64)>) = match *self {
            Optimizer::Sgd { lr } | Optimizer::AdaGrad { lr } => (lr, vec![]),
            Optimizer::Momentum { lr, momentum } | Optimizer::Nesterov { lr, momentum } => {
                (lr, vec![("momentum", momentum)])
            }
            Optimizer::RmsProp { lr, decay_rate } => (lr, vec![("decay_rate", decay_rate)]),
            Optimizer::Adam { lr, beta1, beta2 } => (lr, vec![("beta1", beta1), ("beta2", beta2)]),
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(KernelError::value(
                op,
                format!("lr must be a positive number, got {lr}"),
            ));
        }
        for (name, r) in rates {
            if !(0.0..1.0).contains(&r) {
                return Err(KernelError::value(
                    op,
                    format!("{name} must be in [0, 1), got {r}"),
                ));
            }
        }
        Ok(())
    }

    /// Updates `p` in place from `g`; `s0`/`s1` are the state arrays (empty when unused);
    /// `iter` is Adam's step count t after this step's increment.
    #[inline(always)]
    fn update<T: Float>(&self, p: &mut [T], g: &[T], s0: &mut [T], s1: &mut [T], iter: u64) {
        let c = T::lit;
        match *self {
            Optimizer::Sgd { lr } => {
                let lr = c(lr);
                for (p, &g) in p.iter_mut().zip(g) {
                    *p = *p - lr * g;
                }
            }
            Optimizer::Momentum { lr, momentum } => {
                let (lr, mu) = (c(lr), c(momentum));
                for ((p, &g), v) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *v = *v * mu - lr * g;
                    *p = *p + *v;
                }
            }
            Optimizer::Nesterov { lr, momentum } => {
                let (lr_t, mu, mu2, step) = (
                    c(lr),
                    c(momentum),
                    c(momentum * momentum),
                    c((1.0 + momentum) * lr),
                );
                for ((p, &g), v) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *v = *v * mu - lr_t * g;
                    *p = *p + mu2 * *v;
                    *p = *p - step * g;
                }
            }
            Optimizer::AdaGrad { lr } => {
                let (lr, eps) = (c(lr), c(EPS));
                for ((p, &g), h) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *h = *h + g * g;
                    *p = *p - lr * g / (h.sqrt() + eps);
                }
            }
            Optimizer::RmsProp { lr, decay_rate } => {
                let (lr, eps, rho, one_m) = (c(lr), c(EPS), c(decay_rate), c(1.0 - decay_rate));
                for ((p, &g), h) in p.iter_mut().zip(g).zip(s0.iter_mut()) {
                    *h = *h * rho;
                    *h = *h + one_m * g * g;
                    *p = *p - lr * g / (h.sqrt() + eps);
                }
            }
            Optimizer::Adam { lr, beta1, beta2 } => {
                // Bias correction folded into the step size, in f64 as the book's Python.
                let t = iter as f64;
                let lr_t = c(lr * (1.0 - beta2.powf(t)).sqrt() / (1.0 - beta1.powf(t)));
                let (b1, b2, eps) = (c(1.0 - beta1), c(1.0 - beta2), c(EPS));
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(s0.iter_mut()).zip(s1.iter_mut()) {
                    *m = *m + b1 * (g - *m);
                    *v = *v + b2 * (g * g - *v);
                    *p = *p - lr_t * *m / (v.sqrt() + eps);
                }
            }
        }
    }
}

/// The parameters (or one optimizer state set) W1 (d, h), b1 (h,), W2 (h, k), b2 (k,),
/// borrowed mutably. Must be C-contiguous.
#[derive(Debug)]
pub struct ParamsMut<'a, T> {
    pub w1: ArrayViewMut2<'a, T>,
    pub b1: ArrayViewMut1<'a, T>,
    pub w2: ArrayViewMut2<'a, T>,
    pub b2: ArrayViewMut1<'a, T>,
}

impl<T: Float> ParamsMut<'_, T> {
    /// The four arrays as flat slices, or an error naming the first non-contiguous one.
    fn slices(&mut self, op: &'static str, what: &str) -> Result<[&mut [T]; 4]> {
        let not_c =
            |name: &str| KernelError::value(op, format!("{what}{name} must be C-contiguous"));
        Ok([
            self.w1.as_slice_mut().ok_or_else(|| not_c("W1"))?,
            self.b1.as_slice_mut().ok_or_else(|| not_c("b1"))?,
            self.w2.as_slice_mut().ok_or_else(|| not_c("W2"))?,
            self.b2.as_slice_mut().ok_or_else(|| not_c("b2"))?,
        ])
    }

    fn shapes(&self) -> [Vec<usize>; 4] {
        [
            self.w1.shape().to_vec(),
            self.b1.shape().to_vec(),
            self.w2.shape().to_vec(),
            self.b2.shape().to_vec(),
        ]
    }
}

/// The element types of the fused kernels, with the block of hidden units the inner
/// loops keep in registers: four 512-bit vectors (64 f32 or 32 f64). The kernels pad the
/// hidden layer with zero units to whole blocks (50 → 64): rows of W1, a1, z1 and da1
/// are hp = 64 wide inside the step.
pub trait Lanes: Float {
    /// `[Self; WIDTH]`.
    type Block: Copy + Send + Sync + AsRef<[Self]> + AsMut<[Self]>;
    /// Elements per block.
    const WIDTH: usize;
    /// A block of zeros.
    const ZERO_BLOCK: Self::Block;
}

impl Lanes for f32 {
    type Block = [f32; 64];
    const WIDTH: usize = 64;
    const ZERO_BLOCK: [f32; 64] = [0.0; 64];
}

impl Lanes for f64 {
    type Block = [f64; 32];
    const WIDTH: usize = 32;
    const ZERO_BLOCK: [f64; 32] = [0.0; 32];
}

/// `h` rounded up to whole blocks.
pub(super) fn padded<T: Lanes>(h: usize) -> usize {
    h.div_ceil(T::WIDTH) * T::WIDTH
}

/// The block at the start of `s` (at least `WIDTH` long).
#[inline(always)]
fn load<T: Lanes>(s: &[T]) -> T::Block {
    let mut b = T::ZERO_BLOCK;
    b.as_mut().copy_from_slice(&s[..T::WIDTH]);
    b
}

/// acc += v·w[..WIDTH].
#[inline(always)]
fn axpy_block<T: Lanes>(acc: &mut T::Block, v: T, w: &[T]) {
    for (a, &w) in acc.as_mut().iter_mut().zip(&w[..T::WIDTH]) {
        *a = *a + v * w;
    }
}

/// The rows of a matrix in compressed sparse row form: row r's non-zero entries are
/// `idx/val[ptr[r]..ptr[r + 1]]`, columns ascending. Exact zeros are dropped, NaN kept.
///
/// Built once from a dense matrix, it lets every training step and evaluation read
/// only the non-zero inputs (MNIST: ~19% of the pixels) without compressing them again.
#[derive(Debug, Clone)]
pub struct SparseRows<T> {
    cols: usize,
    ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<T>,
}

impl<T: Float> Default for SparseRows<T> {
    fn default() -> Self {
        SparseRows {
            cols: 0,
            ptr: vec![0],
            idx: Vec::new(),
            val: Vec::new(),
        }
    }
}

/// Rows compressed per parallel task when building [`SparseRows`].
const BUILD_ROWS: usize = 2048;

impl<T: Float> SparseRows<T> {
    /// The non-zero entries of x (n, d), any strides. Parallel over blocks of rows.
    /// Errors: d ≥ 2³² columns, or memory for the entries cannot be had.
    pub fn from_dense(x: ArrayView2<'_, T>) -> Result<Self> {
        const OP: &str = "SparseRows";
        let (n, d) = x.dim();
        if u32::try_from(d).is_err() {
            return Err(KernelError::shape(
                OP,
                format!("x has shape {}; at most 2³² columns", fmt_shape(x.shape())),
            ));
        }
        let blocks = n.div_ceil(BUILD_ROWS);
        let block_rows = |b: usize| {
            x.slice(ndarray::s![
                b * BUILD_ROWS..((b + 1) * BUILD_ROWS).min(n),
                ..
            ])
        };
        // Pass 1: non-zeros per row.
        let mut counts = vec![0usize; n];
        parallel::install(|threads| {
            let count = |(b, out): (usize, &mut [usize])| {
                for (c, row) in out.iter_mut().zip(block_rows(b).rows()) {
                    *c = row.iter().filter(|&&v| v != T::zero()).count();
                }
            };
            if threads > 1 && blocks > 1 {
                counts
                    .par_chunks_mut(BUILD_ROWS)
                    .enumerate()
                    .for_each(count);
            } else {
                counts.chunks_mut(BUILD_ROWS).enumerate().for_each(count);
            }
        });
        let mut ptr = Vec::with_capacity(n + 1);
        ptr.push(0usize);
        for &c in &counts {
            ptr.push(ptr[ptr.len() - 1] + c);
        }
        let nnz = ptr[n];
        let fail = || KernelError::Alloc {
            op: OP,
            shape: format!("({nnz},)"),
            bytes: (nnz as u128) * (4 + std::mem::size_of::<T>() as u128),
        };
        let mut idx: Vec<u32> = Vec::new();
        let mut val: Vec<T> = Vec::new();
        idx.try_reserve_exact(nnz).map_err(|_| fail())?;
        val.try_reserve_exact(nnz).map_err(|_| fail())?;
        idx.resize(nnz, 0);
        val.resize(nnz, T::zero());
        // Pass 2: each block writes its own span of idx/val.
        let mut parts = Vec::with_capacity(blocks);
        let (mut irest, mut vrest) = (&mut idx[..], &mut val[..]);
        for b in 0..blocks {
            let len = ptr[((b + 1) * BUILD_ROWS).min(n)] - ptr[b * BUILD_ROWS];
            let (i, ir) = irest.split_at_mut(len);
            let (v, vr) = vrest.split_at_mut(len);
            (irest, vrest) = (ir, vr);
            parts.push((b, i, v));
        }
        parallel::install(|threads| {
            let fill = |(b, i, v): (usize, &mut [u32], &mut [T])| {
                // Branch-free compaction of each row into a row-sized buffer (a branch per
                // pixel would mispredict on every stroke edge), then its non-zeros out.
                let (mut ri, mut rv) = (vec![0u32; d], vec![T::zero(); d]);
                let mut at = 0;
                for row in block_rows(b).rows() {
                    let mut len = 0;
                    for (c, &x) in row.iter().enumerate() {
                        ri[len] = c as u32;
                        rv[len] = x;
                        len += usize::from(x != T::zero());
                    }
                    i[at..at + len].copy_from_slice(&ri[..len]);
                    v[at..at + len].copy_from_slice(&rv[..len]);
                    at += len;
                }
            };
            if threads > 1 && blocks > 1 {
                parts.into_par_iter().for_each(fill);
            } else {
                parts.into_iter().for_each(fill);
            }
        });
        Ok(SparseRows {
            cols: d,
            ptr,
            idx,
            val,
        })
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.ptr.len() - 1
    }

    /// Number of columns.
    pub fn ncols(&self) -> usize {
        self.cols
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    pub(super) fn clear(&mut self, cols: usize) {
        self.cols = cols;
        self.ptr.clear();
        self.ptr.push(0);
        self.idx.clear();
        self.val.clear();
    }

    /// Appends one dense row (length `cols`).
    pub(super) fn push_row(&mut self, row: ArrayView1<'_, T>) {
        // Branch-free compaction: write every entry, advance only past non-zeros (a
        // data-dependent branch per pixel would mispredict on every stroke edge).
        let start = self.idx.len();
        self.idx.resize(start + row.len(), 0);
        self.val.resize(start + row.len(), T::zero());
        let mut end = start;
        for (i, &v) in row.iter().enumerate() {
            self.idx[end] = i as u32;
            self.val[end] = v;
            end += usize::from(v != T::zero());
        }
        self.idx.truncate(end);
        self.val.truncate(end);
        self.ptr.push(end);
    }

    #[inline(always)]
    fn row(&self, r: usize) -> (&[u32], &[T]) {
        let span = self.ptr[r]..self.ptr[r + 1];
        (&self.idx[span.clone()], &self.val[span])
    }

    /// Starts loading row r into cache (the rows of a batch are scattered in memory).
    #[inline(always)]
    fn prefetch_row(&self, r: usize) {
        let (idx, val) = self.row(r);
        prefetch(idx);
        prefetch(val);
    }

    /// Starts loading where row r starts and ends (its data comes later).
    #[inline(always)]
    fn prefetch_span(&self, r: usize) {
        prefetch(&self.ptr[r..r + 2]);
    }
}

/// Input rows of the fused kernels: a dense matrix, compressed as needed, or rows
/// compressed once.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a, T> {
    Dense(ArrayView2<'a, T>),
    Sparse(&'a SparseRows<T>),
}

impl<T: Float> Rows<'_, T> {
    pub fn nrows(&self) -> usize {
        match self {
            Rows::Dense(x) => x.nrows(),
            Rows::Sparse(s) => s.nrows(),
        }
    }

    pub fn ncols(&self) -> usize {
        match self {
            Rows::Dense(x) => x.ncols(),
            Rows::Sparse(s) => s.ncols(),
        }
    }

    fn shape(&self) -> [usize; 2] {
        [self.nrows(), self.ncols()]
    }
}

/// The rows `indices` of x for the kernels: a dense x's rows compressed into `scratch`
/// (then `rows` counts 0, 1, …), a compressed x as it is (then `rows` are `indices`).
pub(super) fn gather<'s, 'x: 's, T: Float>(
    x: Rows<'x, T>,
    indices: impl Iterator<Item = usize>,
    scratch: &'s mut SparseRows<T>,
    rows: &mut Vec<usize>,
) -> &'s SparseRows<T> {
    rows.clear();
    match x {
        Rows::Dense(x) => {
            scratch.clear(x.ncols());
            for i in indices {
                scratch.push_row(x.row(i));
            }
            rows.extend(0..scratch.nrows());
            scratch
        }
        Rows::Sparse(sp) => {
            rows.extend(indices);
            sp
        }
    }
}

impl<'a, T> From<ArrayView2<'a, T>> for Rows<'a, T> {
    fn from(x: ArrayView2<'a, T>) -> Self {
        Rows::Dense(x)
    }
}

impl<'a, T> From<&'a SparseRows<T>> for Rows<'a, T> {
    fn from(x: &'a SparseRows<T>) -> Self {
        Rows::Sparse(x)
    }
}

/// Asks the CPU to start loading `s` into cache; a hint, with no effect on any value.
#[inline(always)]
fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = s.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(s)).step_by(64) {
            // SAFETY: a prefetch reads no value and cannot fault; the address lies
            // inside the live slice `s` (SSE, which provides it, is baseline x86_64).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Rows ahead whose inputs are prefetched in [`forward_rows`].
const PREFETCH_ROWS: usize = 4;

/// Hidden pre-activations of the batch rows `rows` of `sp` from their non-zero entries
/// in columns lo..hi: a[q, ..] = b + Σ_{lo ≤ i < hi} x[rows[q], i]·W1[i, ..]. a: (n, hp);
/// w1: rows lo..hi of W1 (d, hp); b (hp); hp a whole number of blocks. Two interleaved sums per block hide
/// the add latency. Row q also prefetches row `ahead[q]` (the next batch: rows scattered
/// over a large matrix then arrive from memory long before they are needed). Unless
/// `cols` is None, it also counts the entries per column for [`BatchColumns::fill`].
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_rows<T: Lanes>(
    a: &mut [T],
    sp: &SparseRows<T>,
    rows: &[usize],
    ahead: &[usize],
    w1: &[T],
    b: &[T],
    lo: usize,
    hi: usize,
    mut cols: Option<&mut BatchColumns<T>>,
) {
    let hp = b.len();
    if let Some(c) = cols.as_deref_mut() {
        c.start(lo, hi);
    }
    for &r in rows.iter().take(PREFETCH_ROWS) {
        sp.prefetch_row(r);
    }
    let whole = lo == 0 && hi >= sp.ncols();
    for (q, (a, &r)) in a.chunks_exact_mut(hp).zip(rows).enumerate() {
        if let Some(&next) = rows.get(q + PREFETCH_ROWS) {
            sp.prefetch_row(next);
        }
        if let Some(&next) = ahead.get(q) {
            sp.prefetch_row(next);
        }
        let (start, (idx, val)) = (sp.ptr[r], sp.row(r));
        // Column indices ascend: the range is one span of the row.
        let (s, e) = if whole {
            (0, idx.len())
        } else {
            let s = idx.partition_point(|&i| (i as usize) < lo);
            (s, s + idx[s..].partition_point(|&i| (i as usize) < hi))
        };
        let (idx, val) = (&idx[s..e], &val[s..e]);
        if let Some(c) = cols.as_deref_mut() {
            c.count(idx, [start + s, start + e]);
        }
        for c0 in (0..hp).step_by(T::WIDTH) {
            let mut acc0 = load::<T>(&b[c0..]);
            let mut acc1 = T::ZERO_BLOCK;
            let (i2, v2) = (idx.chunks_exact(2), val.chunks_exact(2));
            let (ir, vr) = (i2.remainder(), v2.remainder());
            for (i, v) in i2.zip(v2) {
                axpy_block::<T>(&mut acc0, v[0], &w1[(i[0] as usize - lo) * hp + c0..]);
                axpy_block::<T>(&mut acc1, v[1], &w1[(i[1] as usize - lo) * hp + c0..]);
            }
            for (&i, &v) in ir.iter().zip(vr) {
                axpy_block::<T>(&mut acc0, v, &w1[(i as usize - lo) * hp + c0..]);
            }
            for ((o, &p), &q) in a[c0..c0 + T::WIDTH]
                .iter_mut()
                .zip(acc0.as_ref())
                .zip(acc1.as_ref())
            {
                *o = p + q;
            }
        }
    }
}

/// The inputs of the step after this one, whose forward pass the two threads start as
/// soon as each has updated its half of W1.
struct Next<'a, T> {
    sp: &'a SparseRows<T>,
    rows: &'a [usize],
    ahead: &'a [usize],
}

/// a += part (when given), then z = act(a) (sigmoid through the vectorisable `exp_v`).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn activate<T: Float>(a: &mut [T], part: &[T], z: &mut [T], act: Activation) {
    for (a, &p) in a.iter_mut().zip(part) {
        *a = *a + p;
    }
    match act {
        Activation::Sigmoid => {
            for (z, &a) in z.iter_mut().zip(a.iter()) {
                *z = T::one() / (T::one() + (-a).exp_v());
            }
        }
        Activation::Relu => {
            for (z, &a) in z.iter_mut().zip(a.iter()) {
                *z = if a > T::zero() { a } else { T::zero() };
            }
        }
    }
}

/// Logits l (n, k) = z1·W2 + b2 with z1 (n, hp), W2 with rows padded to kp (hp, kp) and
/// b2 padded (kp): row q's logits are Σ_j z1[q, j]·W2[j, ..] in registers.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn logits<T: Lanes>(l: &mut [T], z: &[T], w2k: &[T], b2: &[T], k: usize) {
    let (kp, w) = (b2.len(), T::WIDTH);
    let hp = w2k.len() / kp;
    for (l, zq) in l.chunks_exact_mut(k).zip(z.chunks_exact(hp)) {
        for c0 in (0..kp).step_by(w) {
            let mut acc0 = load::<T>(&b2[c0..]);
            let mut acc1 = T::ZERO_BLOCK;
            for (pair, wr) in zq.chunks_exact(2).zip(w2k.chunks_exact(2 * kp)) {
                axpy_block::<T>(&mut acc0, pair[0], &wr[c0..]);
                axpy_block::<T>(&mut acc1, pair[1], &wr[kp + c0..]);
            }
            let len = (k - c0.min(k)).min(w);
            for ((o, &p), &q) in l[c0..c0 + len]
                .iter_mut()
                .zip(acc0.as_ref())
                .zip(acc1.as_ref())
            {
                *o = p + q;
            }
        }
    }
}

/// W2 (h, k) with rows padded to kp and zero rows to hp: (hp, kp).
fn w2_rows<T: Lanes>(dst: &mut [T], w2: &[T], k: usize) {
    let kp = padded::<T>(k);
    dst.fill(T::zero());
    for (d, s) in dst.chunks_exact_mut(kp).zip(w2.chunks_exact(k)) {
        d[..k].copy_from_slice(s);
    }
}

/// da1 (n, hp) ← da1 ⊙ act'(a1) (da1 holding dz1), and db1 (hp) = Σ_rows da1.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn act_grad<T: Float>(
    da1: &mut [T],
    a1: &[T],
    z1: &[T],
    gb1: &mut [T],
    act: Activation,
) {
    let hp = gb1.len();
    gb1.fill(T::zero());
    for ((d, a), z) in da1
        .chunks_exact_mut(hp)
        .zip(a1.chunks_exact(hp))
        .zip(z1.chunks_exact(hp))
    {
        for (((g, &a), &z), b) in d.iter_mut().zip(a).zip(z).zip(gb1.iter_mut()) {
            *g = *g * act.derivative(a, z);
            *b = *b + *g;
        }
    }
}

/// The batch's non-zero inputs in columns lo..hi, by column: column lo + c holds
/// `entries[ptr[c]..ptr[c + 1]]`, pairs (batch position, value), positions ascending.
/// Counted while the forward pass reads the rows ([`forward_rows`]), filled before the
/// backward pass; the same buffers every step.
#[derive(Debug, Default)]
pub(super) struct BatchColumns<T> {
    lo: usize,
    /// Entries per column (at c + 1) after counting; column starts after filling.
    ptr: Vec<usize>,
    /// Where each batch row's entries in lo..hi lie in the rows' `idx`/`val`.
    spans: Vec<[usize; 2]>,
    entries: Vec<(u32, T)>,
}

impl<T: Float> BatchColumns<T> {
    /// Starts counting the entries of columns lo..hi.
    fn start(&mut self, lo: usize, hi: usize) {
        self.lo = lo;
        self.ptr.clear();
        self.ptr.resize(hi - lo + 1, 0);
        self.spans.clear();
    }

    /// Counts one row's entries in lo..hi: `idx`, at `span` of the rows' `idx`/`val`.
    #[inline(always)]
    fn count(&mut self, idx: &[u32], span: [usize; 2]) {
        let counts = &mut self.ptr[1..];
        for &i in idx {
            counts[i as usize - self.lo] += 1;
        }
        self.spans.push(span);
    }

    /// Sorts the counted entries of the rows of `sp` by column (stable: each column
    /// lists its rows in batch order).
    pub(super) fn fill(&mut self, sp: &SparseRows<T>) {
        let (lo, cols) = (self.lo, self.ptr.len() - 1);
        let ptr = &mut self.ptr;
        for c in 1..ptr.len() {
            ptr[c] += ptr[c - 1];
        }
        self.entries.resize(ptr[cols], (0, T::zero()));
        // ptr[c] walks forward as column c fills, ending at the start of column c + 1;
        // shifted back by one slot afterwards.
        for (q, &[s, e]) in self.spans.iter().enumerate() {
            scatter(
                ptr,
                &mut self.entries,
                &sp.idx[s..e],
                &sp.val[s..e],
                lo,
                q as u32,
            );
        }
        ptr.copy_within(..cols, 1);
        ptr[0] = 0;
    }
}

/// One batch row's entries (columns `idx`, offset by `lo`, values `val`) into their
/// columns' next slots: entries[cur[c]] = (q, v), cur[c] += 1. Separate slices, so the
/// cursor stays in a register between its load and its store.
#[inline(always)]
fn scatter<T: Copy>(
    cur: &mut [usize],
    entries: &mut [(u32, T)],
    idx: &[u32],
    val: &[T],
    lo: usize,
    q: u32,
) {
    for (&i, &v) in idx.iter().zip(val) {
        let c = i as usize - lo;
        let at = cur[c];
        cur[c] = at + 1;
        entries[at] = (q, v);
    }
}

/// g (rows lo..hi of a (d, hp) matrix) += scale·xᵀ·da1 over the batch's non-zero inputs
/// in those columns: g[c, ..] += (scale·x[q, lo + c])·da1[q, ..], q ascending. With g = W1
/// and scale = −lr this is SGD's update W1 ← W1 − lr·dW1 without forming dW1. Column by
/// column, each row of g is read and written once and summed in registers; the rows of
/// da1 it reads stay in the L1 cache.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn input_grad<T: Lanes>(g: &mut [T], da1: &[T], cols: &BatchColumns<T>, scale: T) {
    let hp = g.len() / (cols.ptr.len() - 1).max(1);
    for (c, gc) in g.chunks_exact_mut(hp).enumerate() {
        let span = cols.ptr[c]..cols.ptr[c + 1];
        if span.is_empty() {
            continue;
        }
        let entries = &cols.entries[span];
        for c0 in (0..hp).step_by(T::WIDTH) {
            let mut acc = load::<T>(&gc[c0..]);
            for &(q, v) in entries {
                let sv = scale * v;
                let at = q as usize * hp + c0;
                for (o, &b) in acc.as_mut().iter_mut().zip(&da1[at..at + T::WIDTH]) {
                    *o = *o + sv * b;
                }
            }
            gc[c0..c0 + T::WIDTH].copy_from_slice(acc.as_ref());
        }
    }
}

/// Logits y (n, k) → dy = (softmax(y) − t)/n in place (max-subtracted, so exp cannot
/// overflow), gb = Σ_rows dy; returns the batch's summed cross-entropy −Σ t·log(y + δ)
/// (δ keeps the log finite). Row q's target is row `batch[q]` of t.
pub(super) fn softmax_cross_entropy_grad<T: Float>(
    y: &mut [T],
    k: usize,
    batch: &[usize],
    t: Targets<'_, T>,
    gb: &mut [T],
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
    let delta = T::lit(super::loss::CROSS_ENTROPY_DELTA);
    let inv_n = T::one() / T::lit(n as f64);
    let mut loss = 0.0_f64;
    gb.fill(T::zero());
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
        for (v, g) in y.iter_mut().zip(gb.iter_mut()) {
            *v = *v * inv_n;
            *g = *g + *v;
        }
    }
    loss
}

/// The optimizer's update of one parameter, compiled for AVX-512 and AVX2.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn apply<T: Float>(
    opt: Optimizer,
    p: &mut [T],
    g: &[T],
    s0: &mut [T],
    s1: &mut [T],
    iter: u64,
) {
    opt.update(p, g, s0, s1, iter);
}

/// e^v in place, vectorised.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn exp_in_place<T: Float>(v: &mut [T]) {
    for v in v.iter_mut() {
        *v = v.exp_v();
    }
}

/// dst (rows, hp) ← src (rows, h), zero padded.
pub(super) fn pad_rows<T: Float>(dst: &mut Vec<T>, src: &[T], h: usize, hp: usize) {
    dst.clear();
    dst.resize(src.len() / h.max(1) * hp, T::zero());
    for (d, s) in dst.chunks_exact_mut(hp).zip(src.chunks_exact(h)) {
        d[..h].copy_from_slice(s);
    }
}

/// dst (rows, h) ← src (rows, hp) without the padding.
pub(super) fn unpad_rows<T: Float>(dst: &mut [T], src: &[T], h: usize, hp: usize) {
    for (d, s) in dst.chunks_exact_mut(h).zip(src.chunks_exact(hp)) {
        d.copy_from_slice(&s[..h]);
    }
}

/// W2ᵀ (k, hp), zero padded, from W2 (h, k).
fn transpose_pad<T: Float>(dst: &mut [T], w2: &[T], k: usize, hp: usize) {
    dst.fill(T::zero());
    for (j, row) in w2.chunks_exact(k).enumerate() {
        for (c, &w) in row.iter().enumerate() {
            dst[c * hp + j] = w;
        }
    }
}

/// Splits `s` after `at` elements (all of it when shorter).
pub(super) fn split<T>(s: &mut [T], at: usize) -> (&mut [T], &mut [T]) {
    let at = at.min(s.len());
    s.split_at_mut(at)
}

/// State arrays number 0 and 1 of one parameter (empty slices when the optimizer has
/// fewer), from per-set arrays.
fn state_pair<'a, T>(sets: &'a mut [[&mut [T]; 3]], which: usize) -> (&'a mut [T], &'a mut [T]) {
    let (first, rest) = sets.split_at_mut(sets.len().min(1));
    let s0: &mut [T] = match first.first_mut() {
        Some(set) => &mut *set[which],
        None => &mut [],
    };
    let s1: &mut [T] = match rest.first_mut() {
        Some(set) => &mut *set[which],
        None => &mut [],
    };
    (s0, s1)
}

/// The workspaces of the fused step for one dtype and network size; reused across
/// steps, so a step allocates nothing once the first batch has sized them. Hidden-sized
/// rows are padded with zero units to hp (whole [`Lanes`] blocks); during
/// [`Trainer::run`] W1 and its optimizer state live in such padded copies, written
/// back at the end.
#[derive(Debug)]
pub struct Trainer<T> {
    d: usize,
    h: usize,
    k: usize,
    hp: usize,
    activation: Activation,
    optimizer: Optimizer,
    /// The batch rows compressed per step when x is dense (this step's and the next's).
    batch: SparseRows<T>,
    batch2: SparseRows<T>,
    a1: Vec<T>,
    /// The second thread's part of a1, and a zero bias for it.
    a1b: Vec<T>,
    zero_b: Vec<T>,
    z1: Vec<T>,
    y: Vec<T>,
    da1: Vec<T>,
    /// W1, dW1 (not for SGD) and W1's optimizer state: (d, hp).
    w1p: Vec<T>,
    gw1p: Vec<T>,
    state_w1p: [Vec<T>; 2],
    b1p: Vec<T>,
    /// W2ᵀ (k, hp); W2 (hp, kp) and b2 (kp) padded for the logits.
    w2t: Vec<T>,
    w2k: Vec<T>,
    b2p: Vec<T>,
    gb1p: Vec<T>,
    gw2: Vec<T>,
    gb2: Vec<T>,
    /// The batch's inputs by column, for each thread's range of W1 rows.
    cols: [BatchColumns<T>; 2],
}

impl<T: Lanes> Trainer<T> {
    /// A trainer for a d-h-k network. Errors if a size is zero or a rate is invalid.
    pub fn new(
        d: usize,
        h: usize,
        k: usize,
        activation: Activation,
        optimizer: Optimizer,
    ) -> Result<Self> {
        const OP: &str = "TwoLayerTrainer";
        if d == 0 || h == 0 || k == 0 {
            return Err(KernelError::shape(
                OP,
                format!("network sizes must be positive, got ({d}, {h}, {k})"),
            ));
        }
        optimizer.check(OP)?;
        let hp = padded::<T>(h);
        let alloc = |len: usize| -> Result<Vec<T>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| KernelError::Alloc {
                op: OP,
                shape: format!("({d}, {hp})"),
                bytes: (len as u128) * std::mem::size_of::<T>() as u128,
            })?;
            v.resize(len, T::zero());
            Ok(v)
        };
        let dhp = d.checked_mul(hp).ok_or_else(|| {
            KernelError::shape(OP, format!("network sizes ({d}, {h}, {k}) are too large"))
        })?;
        Ok(Trainer {
            d,
            h,
            k,
            hp,
            activation,
            optimizer,
            batch: SparseRows::default(),
            batch2: SparseRows::default(),
            a1: Vec::new(),
            a1b: Vec::new(),
            zero_b: Vec::new(),
            z1: Vec::new(),
            y: Vec::new(),
            da1: Vec::new(),
            w1p: alloc(dhp)?,
            // SGD updates W1 in place without forming dW1.
            gw1p: match optimizer {
                Optimizer::Sgd { .. } => Vec::new(),
                _ => alloc(dhp)?,
            },
            state_w1p: [Vec::new(), Vec::new()],
            b1p: vec![T::zero(); hp],
            w2t: vec![T::zero(); k * hp],
            w2k: vec![T::zero(); hp * padded::<T>(k)],
            b2p: vec![T::zero(); padded::<T>(k)],
            gb1p: vec![T::zero(); hp],
            gw2: vec![T::zero(); h * k],
            gb2: vec![T::zero(); k],
            cols: Default::default(),
        })
    }

    /// The update rule.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    fn check(
        &self,
        op: &'static str,
        params: &ParamsMut<'_, T>,
        state: &[ParamsMut<'_, T>],
        x: [usize; 2],
        t: &Targets<'_, T>,
    ) -> Result<()> {
        let (d, h, k) = (self.d, self.h, self.k);
        let want = [vec![d, h], vec![h], vec![h, k], vec![k]];
        let names = ["W1", "b1", "W2", "b2"];
        let sets = std::iter::once(("", params.shapes()))
            .chain(state.iter().map(|s| ("state ", s.shapes())));
        for (what, shapes) in sets {
            for ((got, want), name) in shapes.iter().zip(&want).zip(names) {
                if got != want {
                    return Err(KernelError::shape(
                        op,
                        format!(
                            "{what}{name} has shape {} but the network needs {}",
                            fmt_shape(got),
                            fmt_shape(want)
                        ),
                    ));
                }
            }
        }
        self.optimizer.check_state_sets(op, state.len())?;
        check_width(op, x, [d, h])?;
        t.check(op, x[0], k)
    }

    /// One step on the batch rows `rows` of `sp` (targets: rows `batch` of t): forward,
    /// backprop, update of the padded W1 (and its state) and of b1, W2, b2 (and theirs)
    /// in place. Returns the batch's mean cross-entropy before the update. `iter` is
    /// Adam's t for this step (1 for the first); `ahead` are rows of `sp` to prefetch
    /// for the next step. With `threads` > 1 two threads take half of the batch rows
    /// each in the forward pass and half of the inputs each in dW1 and the W1 update
    /// (two joins per step); the small layers in between run on one.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        b1: &mut [T],
        w2: &mut [T],
        b2: &mut [T],
        state: &mut [[&mut [T]; 3]],
        sp: &SparseRows<T>,
        rows: &[usize],
        ahead: &[usize],
        batch: &[usize],
        t: Targets<'_, T>,
        iter: u64,
        threads: usize,
        forwarded: bool,
        next: Option<Next<'_, T>>,
    ) -> (f64, bool) {
        let (d, h, k, hp, n) = (self.d, self.h, self.k, self.hp, batch.len());
        let (act, opt) = (self.activation, self.optimizer);
        let Trainer {
            a1,
            a1b,
            zero_b,
            z1,
            y,
            da1,
            w1p,
            gw1p,
            state_w1p,
            b1p,
            w2t,
            w2k,
            b2p,
            gb1p,
            gw2,
            gb2,
            cols,
            ..
        } = self;
        a1.resize(n * hp, T::zero());
        z1.resize(n * hp, T::zero());
        da1.resize(n * hp, T::zero());
        y.resize(n * k, T::zero());
        b1p[..h].copy_from_slice(b1);
        let two = threads > 1 && d > 1;
        // Forward: a1 = x·W1 + b1, z1 = act(a1). Two threads take half of the inputs
        // (rows of W1) each, so each keeps to its own half of W1 here and below.
        let m = d / 2;
        if two {
            a1b.resize(n * hp, T::zero());
            zero_b.resize(hp, T::zero());
            if !forwarded {
                let (w0, w1) = w1p.split_at(m * hp);
                let (b1, zb) = (&b1p[..], &zero_b[..]);
                let (ah, bh) = (&mut a1[..], &mut a1b[..]);
                let [c0, c1] = &mut *cols;
                join_spinning(
                    || forward_rows(ah, sp, rows, ahead, w0, b1, 0, m, Some(c0)),
                    || forward_rows(bh, sp, rows, ahead, w1, zb, m, d, Some(c1)),
                );
            }
            activate(a1, a1b, z1, act);
        } else {
            forward_rows(a1, sp, rows, ahead, w1p, b1p, 0, d, Some(&mut cols[0]));
            activate(a1, &[], z1, act);
        }
        // The small layers on this thread. With two threads the other one sorts the
        // batch's inputs by column meanwhile (for dW1); the joins of a step spin rather
        // than sleep ([`join_spinning`]).
        let mut middle = || {
            // y = softmax(z1·W2 + b2), max-subtracted so exp cannot overflow.
            b2p[..k].copy_from_slice(b2);
            {
                // logits = b2 + z1·W2, W2 the first k columns of the padded (hp, kp) copy.
                let kp = b2p.len();
                let (zv, wv, yv) = (
                    ArrayView2::from_shape((n, hp), &z1[..]),
                    ArrayView2::from_shape((hp, k).strides((kp, 1)), &w2k[..]),
                    ndarray::ArrayViewMut2::from_shape((n, k), &mut y[..]),
                );
                if let (Ok(zv), Ok(wv), Ok(mut yv)) = (zv, wv, yv) {
                    for mut row in yv.rows_mut() {
                        row.assign(&ArrayView1::from(&b2[..]));
                    }
                    gemm_into(zv, wv, yv, true);
                }
            }
            let loss = softmax_cross_entropy_grad(y, k, batch, t, gb2);
            // dW2 = z1ᵀ·dy, da1 = (dy·W2ᵀ) ⊙ act'(a1), db1 = Σ da1.
            {
                // dW2 = z1ᵀ·dy (h, k); dz1 = dy·W2ᵀ (n, hp); da1 = dz1 ⊙ act'(a1); db1 = Σ da1.
                let views = (
                    ArrayView2::from_shape((n, hp), &z1[..]),
                    ArrayView2::from_shape((n, k), &y[..]),
                    ArrayView2::from_shape((k, hp), &w2t[..]),
                    ndarray::ArrayViewMut2::from_shape((h, k), &mut gw2[..]),
                    ndarray::ArrayViewMut2::from_shape((n, hp), &mut da1[..]),
                );
                if let (Ok(zv), Ok(dyv), Ok(w2v), Ok(gw2v), Ok(dav)) = views {
                    gemm_into(zv.slice(ndarray::s![.., ..h]).t(), dyv, gw2v, false);
                    gemm_into(dyv, w2v, dav, false);
                }
                act_grad(da1, a1, z1, gb1p, act);
            }
            // The updates of b1, W2, b2 (parameter by parameter as the book's loop over
            // params), before W1's: the next forward pass needs the new b1.
            let (s0, s1) = state_pair(state, 0);
            apply(opt, b1, &gb1p[..h], s0, s1, iter);
            let (s0, s1) = state_pair(state, 1);
            apply(opt, w2, gw2, s0, s1, iter);
            let (s0, s1) = state_pair(state, 2);
            apply(opt, b2, gb2, s0, s1, iter);
            transpose_pad(w2t, w2, k, hp);
            w2_rows(w2k, w2, k);
            b1p[..h].copy_from_slice(b1);
            loss
        };
        let loss = if two {
            let (loss, ()) = join_spinning(middle, || {
                for c in cols.iter_mut() {
                    c.fill(sp);
                }
            });
            loss
        } else {
            cols[0].fill(sp);
            middle()
        };
        // dW1 = xᵀ·da1 and the update of W1 (SGD: fused), by ranges of inputs; with two
        // threads each then starts the next step's forward pass on its half of W1.
        let neg_lr = match opt {
            Optimizer::Sgd { lr } => Some(T::lit(-lr)),
            _ => None,
        };
        let [s0, s1] = state_w1p;
        let da1 = &da1[..];
        let part =
            |w1: &mut [T], g: &mut [T], s0: &mut [T], s1: &mut [T], cols: &BatchColumns<T>| {
                match neg_lr {
                    Some(neg_lr) => input_grad(w1, da1, cols, neg_lr),
                    None => {
                        g.fill(T::zero());
                        input_grad(g, da1, cols, T::one());
                        apply(opt, w1, g, s0, s1, iter);
                    }
                }
            };
        let mut ahead_done = false;
        if two {
            let (w0, w1) = w1p.split_at_mut(m * hp);
            let (g0, g1) = split(gw1p, m * hp);
            let (s00, s01) = split(s0, m * hp);
            let (s10, s11) = split(s1, m * hp);
            let (b1, zb) = (&b1p[..], &zero_b[..]);
            if let Some(nx) = &next {
                let nn = nx.rows.len();
                a1.resize(nn * hp, T::zero());
                a1b.resize(nn * hp, T::zero());
            }
            let (ah, bh) = (&mut a1[..], &mut a1b[..]);
            let next = next.as_ref();
            let [c0, c1] = cols;
            join_spinning(
                || {
                    part(w0, g0, s00, s10, c0);
                    if let Some(nx) = next {
                        forward_rows(ah, nx.sp, nx.rows, nx.ahead, w0, b1, 0, m, Some(c0));
                    }
                },
                || {
                    part(w1, g1, s01, s11, c1);
                    if let Some(nx) = next {
                        forward_rows(bh, nx.sp, nx.rows, nx.ahead, w1, zb, m, d, Some(c1));
                    }
                },
            );
            ahead_done = next.is_some();
        } else {
            part(w1p, gw1p, s0, s1, &mut cols[0]);
        }
        (loss / n as f64, ahead_done)
    }

    /// Runs one step per row of `batches` (iters, batch) of row indices into (x, t),
    /// updating `params` and `state` in place; returns the per-step losses. `first_iter`
    /// is Adam's step count before the first step. About every 50 ms it calls
    /// `interrupt` (on the calling thread) and stops with [`KernelError::Interrupted`]
    /// when that returns true; the steps done so far stay applied.
    ///
    /// x: (N, d) dense (batch rows compressed each step) or [`SparseRows`] (compressed
    /// once); t: labels (N,) or one-hot (N, k). Errors: shapes, labels, indices out of
    /// [0, N), non-contiguous parameters, wrong number of state sets.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        params: &mut ParamsMut<'_, T>,
        state: &mut [ParamsMut<'_, T>],
        x: Rows<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        first_iter: u64,
        interrupt: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f64>> {
        const OP: &str = "TwoLayerTrainer.run";
        self.check(OP, params, state, x.shape(), &t)?;
        check_batches(OP, batches, x.nrows())?;
        let (h, k) = (self.h, self.k);
        let [w1, b1, w2, b2] = params.slices(OP, "")?;
        let mut w1_state = Vec::with_capacity(state.len());
        let mut small_state = Vec::with_capacity(state.len());
        for set in state.iter_mut() {
            let [sw1, sb1, sw2, sb2] = set.slices(OP, "state ")?;
            w1_state.push(sw1);
            small_state.push([sb1, sw2, sb2]);
        }
        // W1 and its state in padded copies for the run; written back below, also when
        // the run stops early.
        let hp = self.hp;
        pad_rows(&mut self.w1p, w1, h, hp);
        for (dst, src) in self.state_w1p.iter_mut().zip(&w1_state) {
            pad_rows(dst, src, h, hp);
        }
        transpose_pad(&mut self.w2t, w2, k, hp);
        w2_rows(&mut self.w2k, w2, k);
        let mut losses = Vec::with_capacity(batches.nrows());
        let mut outcome = Ok(());
        let mut next = 0;
        while next < batches.nrows() {
            // Steps for about 50 ms inside the pool, then a look at `interrupt` here.
            let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
            let (reached, done) = parallel::install(|threads| {
                let mut scratch = [
                    std::mem::take(&mut self.batch),
                    std::mem::take(&mut self.batch2),
                ];
                let mut rows = [Vec::new(), Vec::new()];
                let mut batch = [Vec::new(), Vec::new()];
                let mut ahead = [Vec::new(), Vec::new()];
                let total = batches.nrows();
                let prep = |slot: usize,
                            s: usize,
                            scratch: &mut [SparseRows<T>; 2],
                            batch: &mut [Vec<usize>; 2],
                            rows: &mut [Vec<usize>; 2],
                            ahead: &mut [Vec<usize>; 2]| {
                    prepare(slot, s, batches, x, scratch, batch, rows, ahead)
                };
                let mut step = next;
                let mut forwarded = false;
                prep(
                    step % 2,
                    step,
                    &mut scratch,
                    &mut batch,
                    &mut rows,
                    &mut ahead,
                );
                let mut done = Vec::with_capacity(total - step);
                while step < total {
                    let (cur, nxt) = (step % 2, (step + 1) % 2);
                    let go_on = step + 1 < total && std::time::Instant::now() < until;
                    if go_on {
                        prep(
                            nxt,
                            step + 1,
                            &mut scratch,
                            &mut batch,
                            &mut rows,
                            &mut ahead,
                        );
                    }
                    let (sp, sp_next) = match x {
                        Rows::Dense(_) => (&scratch[cur], &scratch[nxt]),
                        Rows::Sparse(s) => (s, s),
                    };
                    let following = go_on.then(|| Next {
                        sp: sp_next,
                        rows: &rows[nxt],
                        ahead: &ahead[nxt],
                    });
                    let iter = first_iter + step as u64 + 1;
                    let (loss, ahead_done) = self.step(
                        b1,
                        w2,
                        b2,
                        &mut small_state,
                        sp,
                        &rows[cur],
                        &ahead[cur],
                        &batch[cur],
                        t,
                        iter,
                        threads,
                        forwarded,
                        following,
                    );
                    done.push(loss);
                    forwarded = ahead_done;
                    step += 1;
                    if !go_on {
                        break;
                    }
                }
                let [s0, s1] = scratch;
                self.batch = s0;
                self.batch2 = s1;
                (step, done)
            });
            next = reached;
            losses.extend(done);
            if next < batches.nrows() && interrupt() {
                outcome = Err(KernelError::Interrupted { op: OP });
                break;
            }
        }
        unpad_rows(w1, &self.w1p, h, hp);
        for (dst, src) in w1_state.iter_mut().zip(&self.state_w1p) {
            unpad_rows(dst, src, h, hp);
        }
        outcome.map(|()| losses)
    }
}

/// Errors unless x (n, d) has as many columns as W1 (d, h) has rows.
pub(super) fn check_width(op: &'static str, x: [usize; 2], w1: [usize; 2]) -> Result<()> {
    if x[1] == w1[0] {
        return Ok(());
    }
    Err(KernelError::shape(
        op,
        format!(
            "x has shape {} but W1 has shape {}",
            fmt_shape(&x),
            fmt_shape(&w1)
        ),
    ))
}

/// Errors unless `batches` (iters, batch) holds at least one column and only row
/// indices in [0, rows).
pub(super) fn check_batches(
    op: &'static str,
    batches: ArrayView2<'_, i64>,
    rows: usize,
) -> Result<()> {
    if batches.ncols() == 0 {
        return Err(KernelError::shape(
            op,
            format!(
                "batch_indices has shape {}; batches are empty",
                fmt_shape(batches.shape())
            ),
        ));
    }
    for ((it, col), &i) in batches.indexed_iter() {
        if i < 0 || i as u64 >= rows as u64 {
            return Err(KernelError::value(
                op,
                format!("batch_indices[{it}, {col}] = {i} is out of range for {rows} rows"),
            ));
        }
    }
    Ok(())
}

/// Slot `slot` of the run's double buffers takes step s: its row indices, its rows
/// compressed (dense x) or looked up (compressed x), and the next batch's rows to prefetch.
#[allow(clippy::too_many_arguments)]
fn prepare<T: Float>(
    slot: usize,
    s: usize,
    batches: ArrayView2<'_, i64>,
    x: Rows<'_, T>,
    scratch: &mut [SparseRows<T>; 2],
    batch: &mut [Vec<usize>; 2],
    rows: &mut [Vec<usize>; 2],
    ahead: &mut [Vec<usize>; 2],
) {
    let total = batches.nrows();
    let (b, r, a) = (&mut batch[slot], &mut rows[slot], &mut ahead[slot]);
    b.clear();
    b.extend(batches.row(s).iter().map(|&i| i as usize));
    a.clear();
    gather(x, b.iter().copied(), &mut scratch[slot], r);
    if let Rows::Sparse(sp) = x {
        // Where the rows two steps on lie, then the next batch's rows: the memory they
        // come from is slow.
        if s + 2 < total {
            for &i in batches.row(s + 2) {
                sp.prefetch_span(i as usize);
            }
        }
        if s + 1 < total {
            a.extend(batches.row(s + 1).iter().map(|&i| i as usize));
        }
    }
}

/// Rows per block of the parallel evaluation.
pub(super) const EVAL_ROWS: usize = 256;

/// Per-thread buffers of a prediction: the block's rows ([`gather`]) and the layers'
/// activations.
pub(super) struct EvalScratch<T> {
    pub(super) sp: SparseRows<T>,
    pub(super) rows: Vec<usize>,
    pub(super) layers: Vec<Vec<T>>,
}

impl<T: Float> Default for EvalScratch<T> {
    fn default() -> Self {
        EvalScratch {
            sp: SparseRows::default(),
            rows: Vec::new(),
            layers: Vec::new(),
        }
    }
}

/// One prediction per row of an n-row input: `block(scratch, (b, out))` fills `out`
/// for the b-th block of [`EVAL_ROWS`] rows; blocks run in parallel, each thread with
/// its own scratch.
pub(super) fn predict_blocks<T: Float>(
    n: usize,
    block: impl Fn(&mut EvalScratch<T>, (usize, &mut [usize])) + Send + Sync,
) -> Vec<usize> {
    let mut pred = vec![0usize; n];
    parallel::install(|threads| {
        if threads > 1 && n > EVAL_ROWS {
            pred.par_chunks_mut(EVAL_ROWS)
                .enumerate()
                .for_each_init(EvalScratch::default, &block);
        } else {
            let mut ws = EvalScratch::default();
            pred.chunks_mut(EVAL_ROWS)
                .enumerate()
                .for_each(|part| block(&mut ws, part));
        }
    });
    pred
}

/// Predicted classes argmax_k (z1·W2 + b2) of every row of x (n, d) — the argmax of the
/// softmax output, first maximum on ties as `np.argmax`. Parallel over rows.
pub fn predict_labels<T: Lanes>(
    net: &TwoLayerNet<'_, T>,
    x: ArrayView2<'_, T>,
) -> Result<Vec<usize>> {
    predict_rows(net, Rows::Dense(x))
}

/// [`predict_labels`] for dense or compressed rows.
pub fn predict_rows<T: Lanes>(net: &TwoLayerNet<'_, T>, x: Rows<'_, T>) -> Result<Vec<usize>> {
    const OP: &str = "predict_labels";
    if let Rows::Sparse(s) = x {
        // The same checks and messages as for a dense x of this shape.
        let probe = ndarray::Array2::<T>::zeros((s.nrows().min(1), s.ncols()));
        net.check(OP, &probe.view())?;
    } else if let Rows::Dense(x) = x {
        net.check(OP, &x)?;
    }
    let (d, h, k) = net.sizes();
    let hp = padded::<T>(h);
    let mut w1p = Vec::new();
    pad_rows(&mut w1p, &net.w1.iter().copied().collect::<Vec<T>>(), h, hp);
    let mut b1p = vec![T::zero(); hp];
    for (p, &b) in b1p.iter_mut().zip(net.b1.iter()) {
        *p = b;
    }
    let kp = padded::<T>(k);
    let mut w2k = vec![T::zero(); hp * kp];
    w2_rows(&mut w2k, &net.w2.iter().copied().collect::<Vec<T>>(), k);
    let mut b2 = vec![T::zero(); kp];
    for (p, &b) in b2.iter_mut().zip(net.b2.iter()) {
        *p = b;
    }
    let act = net.activation;
    Ok(predict_blocks(x.nrows(), |ws, (b, out)| {
        let (lo, n) = (b * EVAL_ROWS, out.len());
        let sp = gather(x, lo..lo + n, &mut ws.sp, &mut ws.rows);
        ws.layers.resize(3, Vec::new());
        let [a, z, l] = &mut ws.layers[..] else {
            return;
        };
        a.resize(n * hp, T::zero());
        z.resize(n * hp, T::zero());
        l.resize(n * k, T::zero());
        forward_rows(a, sp, &ws.rows, &[], &w1p, &b1p, 0, d, None);
        activate(a, &[], z, act);
        logits(l, z, &w2k, &b2, k);
        argmax_rows(l, k, out);
    }))
}

/// Fraction of rows whose predicted class equals the target (labels, or argmax of
/// one-hot rows), the book's `accuracy`. x dense (n, d) or compressed.
pub fn accuracy<T: Lanes>(
    net: &TwoLayerNet<'_, T>,
    x: Rows<'_, T>,
    t: Targets<'_, T>,
) -> Result<f64> {
    let (_, _, k) = net.sizes();
    let pred = predict_rows(net, x)?;
    t.check("accuracy", x.nrows(), k)?;
    Ok(hit_rate(&pred, t))
}

/// out[q] = argmax of row q of the logits l (rows of k): the first maximum, as
/// `np.argmax`, and a NaN wins (NumPy's argmax propagates NaN).
pub(super) fn argmax_rows<T: Float>(l: &[T], k: usize, out: &mut [usize]) {
    for (l, o) in l.chunks_exact(k).zip(out.iter_mut()) {
        let mut best = 0;
        for (c, &v) in l.iter().enumerate() {
            if v > l[best] || (v.is_nan() && !l[best].is_nan()) {
                best = c;
            }
        }
        *o = best;
    }
}

/// Fraction of predictions equal to the targets (labels, or the argmax of one-hot rows);
/// targets already checked against the predictions' count.
pub(super) fn hit_rate<T: Float>(pred: &[usize], t: Targets<'_, T>) -> f64 {
    let hits = match t {
        Targets::Labels(labels) => pred
            .iter()
            .zip(labels.iter())
            .filter(|(&p, &l)| p as i64 == l)
            .count(),
        Targets::OneHot(oh) => pred
            .iter()
            .zip(oh.rows())
            .filter(|(&p, row)| {
                let mut best = 0;
                for (c, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = c;
                    }
                }
                best == p
            })
            .count(),
    };
    hits as f64 / pred.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    #[test]
    fn sparse_rows_keep_the_non_zeros_in_order() -> Result<()> {
        let x = arr2(&[
            [0.0, 2.0, 0.0, -1.0],
            [0.0, 0.0, 0.0, 0.0],
            [5.0, 0.0, f64::NAN, 0.5],
        ]);
        let sp = SparseRows::from_dense(x.view())?;
        assert_eq!((sp.nrows(), sp.ncols(), sp.nnz()), (3, 4, 5));
        assert_eq!(sp.row(0), (&[1, 3][..], &[2.0, -1.0][..]));
        assert_eq!(sp.row(1).0.len(), 0);
        let (idx, val) = sp.row(2);
        assert_eq!(idx, &[0, 2, 3]);
        assert!(val[0] == 5.0 && val[1].is_nan() && val[2] == 0.5);
        // A transposed (strided) view gives the same as its contiguous copy.
        let t = x.t();
        let a = SparseRows::from_dense(t)?;
        let b = SparseRows::from_dense(t.as_standard_layout().view())?;
        assert_eq!((a.ptr, a.idx), (b.ptr, b.idx));
        Ok(())
    }

    #[test]
    fn padding_round_trips_and_w2_layouts() {
        assert_eq!(
            (padded::<f32>(50), padded::<f64>(50), padded::<f64>(64)),
            (64, 64, 64)
        );
        let src = [1.0_f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // (2, 3)
        let mut p = Vec::new();
        pad_rows(&mut p, &src, 3, 4);
        assert_eq!(p, [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]);
        let mut back = [0.0; 6];
        unpad_rows(&mut back, &p, 3, 4);
        assert_eq!(back, src);
        let mut t = [9.0_f32; 8]; // W2ᵀ of a (3, 2) W2, rows padded to 4
        transpose_pad(&mut t, &src, 2, 4);
        assert_eq!(t, [1.0, 3.0, 5.0, 0.0, 2.0, 4.0, 6.0, 0.0]);
    }

    #[test]
    fn one_sgd_step_by_hand() -> Result<()> {
        // d = 2, h = 1, k = 2; x = [1, 0], label 0; all weights zero.
        // a1 = 0, z1 = σ(0) = 1/2, logits = 0, y = (1/2, 1/2), loss = −ln(1/2 + 1e-7);
        // dy = (−1/2, 1/2); dW2 = z1ᵀ·dy = (−1/4, 1/4); db2 = dy; da1 = dy·W2ᵀ ⊙ σ' = 0.
        let (mut w1, mut b1) = (arr2(&[[0.0], [0.0]]), arr1(&[0.0]));
        let (mut w2, mut b2) = (arr2(&[[0.0, 0.0]]), arr1(&[0.0, 0.0]));
        let x = arr2(&[[1.0, 0.0]]);
        let t = arr1(&[0_i64]);
        let mut tr = Trainer::new(2, 1, 2, Activation::Sigmoid, Optimizer::Sgd { lr: 1.0 })?;
        let mut p = ParamsMut {
            w1: w1.view_mut(),
            b1: b1.view_mut(),
            w2: w2.view_mut(),
            b2: b2.view_mut(),
        };
        let batches = arr2(&[[0_i64]]);
        let loss = tr.run(
            &mut p,
            &mut [],
            Rows::Dense(x.view()),
            Targets::Labels(t.view()),
            batches.view(),
            0,
            &|| false,
        )?;
        assert!((loss[0] + (0.5_f64 + 1e-7).ln()).abs() < 1e-15);
        assert_eq!(w2, arr2(&[[0.25, -0.25]]));
        assert_eq!(b2, arr1(&[0.5, -0.5]));
        assert_eq!((w1, b1), (arr2(&[[0.0], [0.0]]), arr1(&[0.0])));
        Ok(())
    }
}
