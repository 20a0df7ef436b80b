//! What the fused trainers ([`super::two_layer`], [`super::train_multi`]) and the
//! predictions share: the optimizer rules, the parameter views, the small dense steps
//! (activation, softmax and cross-entropy gradient), and the batched prediction and
//! accuracy of the two-layer network, whose input layer is computed from the non-zero
//! entries of each input row only: `a1[r, :] = b1 + Σ_{i: x[r,i] ≠ 0} x[r, i]·W1[i, :]`,
//! the same sums as the dense product without its zero terms. Updates follow the book's `common/optimizer.py` formulas
//! operation by operation, scalars computed in f64 and rounded to T as NumPy does.

use multiversion::multiversion;
use multiversion::target::target_cfg;
use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rayon::prelude::*;

use super::aligned::Aligned;
use super::math::{has_fma, madd};
use super::numgrad::{Activation, TwoLayerNet};
use super::parallel;
pub(super) use super::sparse::gather;
use super::sparse::{with_source, Source};
pub use super::sparse::{Rows, SparseRows};
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
    pub(super) fn slices(&mut self, op: &'static str, what: &str) -> Result<[&mut [T]; 4]> {
        let not_c =
            |name: &str| KernelError::value(op, format!("{what}{name} must be C-contiguous"));
        Ok([
            self.w1.as_slice_mut().ok_or_else(|| not_c("W1"))?,
            self.b1.as_slice_mut().ok_or_else(|| not_c("b1"))?,
            self.w2.as_slice_mut().ok_or_else(|| not_c("W2"))?,
            self.b2.as_slice_mut().ok_or_else(|| not_c("b2"))?,
        ])
    }

    pub(super) fn shapes(&self) -> [Vec<usize>; 4] {
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

/// acc + v·w[..WIDTH], by value (so the sums stay in registers).
#[inline(always)]
fn axpy_block<T: Lanes>(acc: T::Block, v: T, w: &[T], fma: bool) -> T::Block {
    let mut r = acc;
    for (a, &w) in r.as_mut().iter_mut().zip(&w[..T::WIDTH]) {
        *a = madd(v, w, *a, fma);
    }
    r
}

/// Rows ahead whose inputs are prefetched in [`forward_rows`].
const PREFETCH_ROWS: usize = 4;

/// Hidden pre-activations of the rows `rows` of `sp` from their non-zero entries:
/// a[q, ..] = b + Σ_i x[rows[q], i]·W1[i, ..]. a: (n, hp); W1 (d, hp); b (hp); hp a whole
/// number of blocks. Two interleaved sums per block hide the add latency; the rows a few
/// ahead are prefetched.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn forward_rows<T: Lanes, S: Source<T>>(
    a: &mut [T],
    sp: S,
    rows: &[usize],
    w1: &[T],
    b: &[T],
) {
    let (hp, fma) = (b.len(), has_fma!());
    for &r in rows.iter().take(PREFETCH_ROWS) {
        sp.prefetch_row(r);
    }
    for (q, (a, &r)) in a.chunks_exact_mut(hp).zip(rows).enumerate() {
        if let Some(&next) = rows.get(q + PREFETCH_ROWS) {
            sp.prefetch_row(next);
        }
        let es = sp.row(r);
        let at = |e: S::Entry| S::col(e) * hp;
        for c0 in (0..hp).step_by(T::WIDTH) {
            let mut acc0 = load::<T>(&b[c0..]);
            let mut acc1 = T::ZERO_BLOCK;
            let pairs = es.chunks_exact(2);
            let rest = pairs.remainder();
            for e in pairs {
                acc0 = axpy_block::<T>(acc0, sp.value(e[0]), &w1[at(e[0]) + c0..], fma);
                acc1 = axpy_block::<T>(acc1, sp.value(e[1]), &w1[at(e[1]) + c0..], fma);
            }
            for &e in rest {
                acc0 = axpy_block::<T>(acc0, sp.value(e), &w1[at(e) + c0..], fma);
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

/// z = act(a), elementwise (sigmoid through the vectorisable `exp_v`).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn activate<T: Float>(a: &[T], z: &mut [T], act: Activation) {
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
    let (kp, w, fma) = (b2.len(), T::WIDTH, has_fma!());
    let hp = w2k.len() / kp;
    for (l, zq) in l.chunks_exact_mut(k).zip(z.chunks_exact(hp)) {
        for c0 in (0..kp).step_by(w) {
            let mut acc0 = load::<T>(&b2[c0..]);
            let mut acc1 = T::ZERO_BLOCK;
            for (pair, wr) in zq.chunks_exact(2).zip(w2k.chunks_exact(2 * kp)) {
                acc0 = axpy_block::<T>(acc0, pair[0], &wr[c0..], fma);
                acc1 = axpy_block::<T>(acc1, pair[1], &wr[kp + c0..], fma);
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
pub(super) fn pad_rows<T: Float>(dst: &mut Aligned<T>, src: &[T], h: usize, hp: usize) {
    dst.resize(0, T::zero());
    dst.resize(src.len() / h.max(1) * hp, T::zero());
    for (d, s) in dst.chunks_exact_mut(hp).zip(src.chunks_exact(h)) {
        d[..h].copy_from_slice(s);
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

/// Rows per block of the parallel evaluation.
pub(super) const EVAL_ROWS: usize = 256;

/// Per-thread buffers of a prediction: the block's rows ([`gather`]) and the layers'
/// activations.
pub(super) struct EvalScratch<T> {
    pub(super) sp: SparseRows<T>,
    pub(super) rows: Vec<usize>,
    pub(super) layers: Vec<Aligned<T>>,
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
    let (_, h, k) = net.sizes();
    let hp = padded::<T>(h);
    let mut w1p = Aligned::default();
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
        ws.layers.resize(3, Aligned::default());
        let [a, z, l] = &mut ws.layers[..] else {
            return;
        };
        a.resize(n * hp, T::zero());
        z.resize(n * hp, T::zero());
        l.resize(n * k, T::zero());
        let rows = &ws.rows;
        with_source!(sp, |src| forward_rows(a, src, rows, &w1p, &b1p));
        activate(a, z, act);
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

    #[test]
    fn padding_round_trips() {
        assert_eq!(
            (padded::<f32>(50), padded::<f64>(50), padded::<f64>(64)),
            (64, 64, 64)
        );
        let src = [1.0_f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // (2, 3)
        let mut p = Aligned::default();
        pad_rows(&mut p, &src, 3, 4);
        assert_eq!(&p[..], [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]);
    }
}
