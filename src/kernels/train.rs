//! The fused training step of the two-layer network: batch gather, forward, backprop
//! and the optimizer update in one pass over reused buffers, and a batched accuracy.
//!
//! The input layer is computed from the non-zero entries of each input row only (MNIST
//! is ~81% zeros): a1[r, :] = b1 + Σ_{i: x[r,i] ≠ 0} x[r, i]·W1[i, :] and
//! dW1[i, :] = Σ_{r: x[r,i] ≠ 0} x[r, i]·da1[r, :], the same sums as the dense products
//! without their zero terms. Updates follow the book's `common/optimizer.py` formulas
//! operation by operation, scalars computed in f64 and rounded to T as NumPy does.

use multiversion::multiversion;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rayon::prelude::*;

use super::numgrad::{Activation, TwoLayerNet};
use super::{parallel, Float, Targets};
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

    /// Updates `p` in place from `g`; `s0`/`s1` are the state arrays (empty when unused);
    /// `iter` is Adam's step count t after this step's increment.
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

    /// Array number `which` (0 W1, 1 b1, 2 W2, 3 b2) of a state set, flat.
    fn slice(&mut self, op: &'static str, which: usize) -> Result<&mut [T]> {
        let (name, s) = match which {
            0 => ("W1", self.w1.as_slice_mut()),
            1 => ("b1", self.b1.as_slice_mut()),
            2 => ("W2", self.w2.as_slice_mut()),
            _ => ("b2", self.b2.as_slice_mut()),
        };
        s.ok_or_else(|| KernelError::value(op, format!("state {name} must be C-contiguous")))
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

/// The non-zero entries of a batch of input rows (row r: `idx/val[ptr[r]..ptr[r + 1]]`).
#[derive(Debug, Default)]
struct Sparse<T> {
    ptr: Vec<usize>,
    idx: Vec<usize>,
    val: Vec<T>,
}

impl<T: Float> Sparse<T> {
    fn clear(&mut self) {
        self.ptr.clear();
        self.idx.clear();
        self.val.clear();
        self.ptr.push(0);
    }

    fn push_row(&mut self, row: ArrayView1<'_, T>) {
        // Branch-free compaction: write every entry, advance only past non-zeros (a
        // data-dependent branch per pixel would mispredict on every stroke edge).
        let start = self.idx.len();
        self.idx.resize(start + row.len(), 0);
        self.val.resize(start + row.len(), T::zero());
        let mut end = start;
        for (i, &v) in row.iter().enumerate() {
            self.idx[end] = i;
            self.val[end] = v;
            end += usize::from(v != T::zero());
        }
        self.idx.truncate(end);
        self.val.truncate(end);
        self.ptr.push(end);
    }

    fn row(&self, r: usize) -> (&[usize], &[T]) {
        let span = self.ptr[r]..self.ptr[r + 1];
        (&self.idx[span.clone()], &self.val[span])
    }
}

/// out[..] += v·w[..] (both length h).
#[inline(always)]
fn axpy<T: Float>(out: &mut [T], v: T, w: &[T]) {
    for (o, &w) in out.iter_mut().zip(w) {
        *o = *o + v * w;
    }
}

/// Hidden pre-activations of a batch from its non-zero entries, a (n·h) row-major, then
/// the activation in place: z = act(a) (sigmoid through the vectorisable `exp_v`).
/// Compiled for AVX-512 and AVX2+FMA and chosen at run time.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn hidden_layer<T: Float>(
    a: &mut [T],
    z: &mut [T],
    b1: &[T],
    w1: &[T],
    sp: &Sparse<T>,
    act: Activation,
) {
    let h = b1.len();
    for (r, a) in a.chunks_exact_mut(h).enumerate() {
        let (idx, val) = sp.row(r);
        hidden_row(a, b1, w1, idx, val);
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

/// dW1 = xᵀ·da1 over the non-zero entries of x: gw1[i, :] += x[r, i]·da1[r, :].
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn input_grad<T: Float>(gw1: &mut [T], da1: &[T], sp: &Sparse<T>, h: usize) {
    gw1.fill(T::zero());
    for (r, da) in da1.chunks_exact(h).enumerate() {
        let (idx, val) = sp.row(r);
        for (&i, &v) in idx.iter().zip(val) {
            axpy(&mut gw1[i * h..(i + 1) * h], v, da);
        }
    }
}

/// Hidden pre-activations of one input row from its non-zero entries:
/// a[..] = b1 + Σ x_i·W1[i, ..].  W1 flat (d·h), row-major.
#[inline(always)]
fn hidden_row<T: Float>(a: &mut [T], b1: &[T], w1: &[T], idx: &[usize], val: &[T]) {
    let h = a.len();
    a.copy_from_slice(b1);
    for (&i, &v) in idx.iter().zip(val) {
        axpy(a, v, &w1[i * h..(i + 1) * h]);
    }
}

/// Logits of one row: l[..] = b2 + Σ_j z_j·W2[j, ..].
#[inline(always)]
fn logit_row<T: Float>(l: &mut [T], b2: &[T], w2: &[T], z: &[T]) {
    let k = l.len();
    l.copy_from_slice(b2);
    for (j, &zj) in z.iter().enumerate() {
        axpy(l, zj, &w2[j * k..(j + 1) * k]);
    }
}

/// The workspaces of the fused step for one dtype and network size; reused across
/// steps, so a step allocates nothing once the first batch has sized them.
#[derive(Debug)]
pub struct Trainer<T> {
    d: usize,
    h: usize,
    k: usize,
    activation: Activation,
    optimizer: Optimizer,
    sparse: Sparse<T>,
    a1: Vec<T>,
    z1: Vec<T>,
    y: Vec<T>,
    da1: Vec<T>,
    grads: [Vec<T>; 4],
}

impl<T: Float> Trainer<T> {
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
        let (lr, rates): (f64, Vec<(&str, f64)>) = match optimizer {
            Optimizer::Sgd { lr } | Optimizer::AdaGrad { lr } => (lr, vec![]),
            Optimizer::Momentum { lr, momentum } | Optimizer::Nesterov { lr, momentum } => {
                (lr, vec![("momentum", momentum)])
            }
            Optimizer::RmsProp { lr, decay_rate } => (lr, vec![("decay_rate", decay_rate)]),
            Optimizer::Adam { lr, beta1, beta2 } => (lr, vec![("beta1", beta1), ("beta2", beta2)]),
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(KernelError::value(
                OP,
                format!("lr must be a positive number, got {lr}"),
            ));
        }
        for (name, r) in rates {
            if !(0.0..1.0).contains(&r) {
                return Err(KernelError::value(
                    OP,
                    format!("{name} must be in [0, 1), got {r}"),
                ));
            }
        }
        Ok(Trainer {
            d,
            h,
            k,
            activation,
            optimizer,
            sparse: Sparse::default(),
            a1: Vec::new(),
            z1: Vec::new(),
            y: Vec::new(),
            da1: Vec::new(),
            grads: [
                vec![T::zero(); d * h],
                vec![T::zero(); h],
                vec![T::zero(); h * k],
                vec![T::zero(); k],
            ],
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
        x: &ArrayView2<'_, T>,
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
        if state.len() != self.optimizer.state_slots() {
            return Err(KernelError::value(
                op,
                format!(
                    "the optimizer needs {} state sets, got {}",
                    self.optimizer.state_slots(),
                    state.len()
                ),
            ));
        }
        if x.ncols() != d {
            return Err(KernelError::shape(
                op,
                format!(
                    "x has shape {} but W1 has shape {}",
                    fmt_shape(x.shape()),
                    fmt_shape(&[d, h])
                ),
            ));
        }
        t.check(op, x.nrows(), k)
    }

    /// One step on the rows `batch` of (x, t): forward, backprop, update of `params`
    /// (and `state`) in place. Returns the batch's mean cross-entropy before the update.
    /// `iter` is Adam's t for this step (1 for the first). Inputs already checked.
    fn step(
        &mut self,
        params: &mut ParamsMut<'_, T>,
        state: &mut [ParamsMut<'_, T>],
        x: ArrayView2<'_, T>,
        t: Targets<'_, T>,
        batch: &[usize],
        iter: u64,
    ) -> Result<f64> {
        const OP: &str = "TwoLayerTrainer.run";
        let (h, k, n) = (self.h, self.k, batch.len());
        self.sparse.clear();
        for &r in batch {
            self.sparse.push_row(x.row(r));
        }
        self.a1.resize(n * h, T::zero());
        self.z1.resize(n * h, T::zero());
        self.da1.resize(n * h, T::zero());
        self.y.resize(n * k, T::zero());
        let act = self.activation;
        let [w1, b1, w2, b2] = params.slices(OP, "")?;
        // Forward: a1 = x·W1 + b1, z1 = act(a1), y = softmax(z1·W2 + b2), loss.
        let delta = T::lit(super::loss::CROSS_ENTROPY_DELTA);
        let inv_n = T::one() / T::lit(n as f64);
        let mut loss = 0.0_f64;
        hidden_layer(&mut self.a1, &mut self.z1, b1, w1, &self.sparse, act);
        for (r, &row) in batch.iter().enumerate() {
            let z = &self.z1[r * h..(r + 1) * h];
            let y = &mut self.y[r * k..(r + 1) * k];
            logit_row(y, b2, w2, z);
            let max = y
                .iter()
                .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
            let mut sum = T::zero();
            for v in y.iter_mut() {
                *v = (*v - max).exp();
                sum = sum + *v;
            }
            for v in y.iter_mut() {
                *v = *v / sum;
            }
            // Cross-entropy −Σ t·log(y + δ) (δ keeps the log finite), then dy = (y − t)/n.
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
            for v in y.iter_mut() {
                *v = *v * inv_n;
            }
        }
        let [gw1, gb1, gw2, gb2] = &mut self.grads;
        // dW2 = z1ᵀ·dy, db2 = Σ_rows dy, da1 = (dy·W2ᵀ) ⊙ act'(a1), db1 = Σ_rows da1.
        gw2.fill(T::zero());
        gb2.fill(T::zero());
        gb1.fill(T::zero());
        for r in 0..n {
            let dy = &self.y[r * k..(r + 1) * k];
            let z = &self.z1[r * h..(r + 1) * h];
            for (j, &zj) in z.iter().enumerate() {
                axpy(&mut gw2[j * k..(j + 1) * k], zj, dy);
            }
            axpy(gb2, T::one(), dy);
            let a = &self.a1[r * h..(r + 1) * h];
            let da = &mut self.da1[r * h..(r + 1) * h];
            for (j, ((g, &a), &z)) in da.iter_mut().zip(a).zip(z).enumerate() {
                let w = &w2[j * k..(j + 1) * k];
                let dz = dy.iter().zip(w).fold(T::zero(), |s, (&d, &w)| s + d * w);
                *g = dz * act.derivative(a, z);
            }
            axpy(gb1, T::one(), da);
        }
        // dW1 = xᵀ·da1 over the non-zero entries of x.
        input_grad(gw1, &self.da1, &self.sparse, h);
        // The update, parameter by parameter as the book's loop over params.
        let grads = [&gw1[..], &gb1[..], &gw2[..], &gb2[..]];
        for (which, (p, g)) in [w1, b1, w2, b2].into_iter().zip(grads).enumerate() {
            let (mut e0, mut e1): ([T; 0], [T; 0]) = ([], []);
            let (first, rest) = state.split_at_mut(state.len().min(1));
            let s0: &mut [T] = match first.first_mut() {
                Some(set) => set.slice(OP, which)?,
                None => &mut e0,
            };
            let s1: &mut [T] = match rest.first_mut() {
                Some(set) => set.slice(OP, which)?,
                None => &mut e1,
            };
            self.optimizer.update(p, g, s0, s1, iter);
        }
        Ok(loss / n as f64)
    }

    /// Runs one step per row of `batches` (iters, batch) of row indices into (x, t),
    /// updating `params` and `state` in place; returns the per-step losses. `first_iter`
    /// is Adam's step count before the first step. About every 50 ms it calls
    /// `interrupt` (on the calling thread) and stops with [`KernelError::Interrupted`]
    /// when that returns true; the steps done so far stay applied.
    ///
    /// x: (N, d); t: labels (N,) or one-hot (N, k). Errors: shapes, labels, indices out of
    /// [0, N), non-contiguous parameters, wrong number of state sets.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        params: &mut ParamsMut<'_, T>,
        state: &mut [ParamsMut<'_, T>],
        x: ArrayView2<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        first_iter: u64,
        interrupt: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f64>> {
        const OP: &str = "TwoLayerTrainer.run";
        self.check(OP, params, state, &x, &t)?;
        let rows = x.nrows();
        if batches.ncols() == 0 {
            return Err(KernelError::shape(
                OP,
                format!(
                    "batch_indices has shape {}; batches are empty",
                    fmt_shape(batches.shape())
                ),
            ));
        }
        for ((it, col), &i) in batches.indexed_iter() {
            if i < 0 || i as u64 >= rows as u64 {
                return Err(KernelError::value(
                    OP,
                    format!("batch_indices[{it}, {col}] = {i} is out of range for {rows} rows"),
                ));
            }
        }
        let mut losses = Vec::with_capacity(batches.nrows());
        let mut batch = Vec::with_capacity(batches.ncols());
        let mut last = std::time::Instant::now();
        for (step, b) in batches.rows().into_iter().enumerate() {
            batch.clear();
            batch.extend(b.iter().map(|&i| i as usize));
            losses.push(self.step(params, state, x, t, &batch, first_iter + step as u64 + 1)?);
            if last.elapsed().as_millis() >= 50 {
                if interrupt() {
                    return Err(KernelError::Interrupted { op: OP });
                }
                last = std::time::Instant::now();
            }
        }
        Ok(losses)
    }
}

/// Predicted classes argmax_k (z1·W2 + b2) of every row of x (n, d) — the argmax of the
/// softmax output, first maximum on ties as `np.argmax`. Parallel over rows.
pub fn predict_labels<T: Float>(
    net: &TwoLayerNet<'_, T>,
    x: ArrayView2<'_, T>,
) -> Result<Vec<usize>> {
    net.check("predict_labels", &x)?;
    let (_, h, k) = net.sizes();
    let (w1, b1, w2, b2) = (
        net.w1.as_standard_layout(),
        net.b1.to_vec(),
        net.w2.as_standard_layout(),
        net.b2.to_vec(),
    );
    let (w1, w2) = match (w1.as_slice(), w2.as_slice()) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(KernelError::value(
                "predict_labels",
                "internal: parameters not contiguous",
            ))
        }
    };
    let act = net.activation;
    // Blocks of rows: sparse hidden layer (multiversioned), then logits and argmax.
    const BLOCK: usize = 256;
    let block = |rows: ArrayView2<'_, T>, out: &mut [usize]| {
        let mut sp = Sparse::default();
        sp.clear();
        for row in rows.rows() {
            sp.push_row(row);
        }
        let n = rows.nrows();
        let (mut a, mut z) = (vec![T::zero(); n * h], vec![T::zero(); n * h]);
        hidden_layer(&mut a, &mut z, &b1, w1, &sp, act);
        let mut l = vec![T::zero(); k];
        for (zr, o) in z.chunks_exact(h).zip(out.iter_mut()) {
            logit_row(&mut l, &b2, w2, zr);
            let mut best = 0;
            for (c, &v) in l.iter().enumerate() {
                if v > l[best] || (v.is_nan() && !l[best].is_nan()) {
                    best = c;
                }
            }
            *o = best;
        }
    };
    let n = x.nrows();
    let mut pred = vec![0usize; n];
    parallel::install(|threads| {
        let run = |(b, out): (usize, &mut [usize])| {
            let rows = x.slice(ndarray::s![b * BLOCK..(b * BLOCK + out.len()), ..]);
            block(rows, out);
        };
        if threads > 1 && n > BLOCK {
            pred.par_chunks_mut(BLOCK).enumerate().for_each(run);
        } else {
            pred.chunks_mut(BLOCK).enumerate().for_each(run);
        }
    });
    Ok(pred)
}

/// Fraction of rows whose predicted class equals the target (labels, or argmax of
/// one-hot rows), the book's `accuracy`.
pub fn accuracy<T: Float>(
    net: &TwoLayerNet<'_, T>,
    x: ArrayView2<'_, T>,
    t: Targets<'_, T>,
) -> Result<f64> {
    let (_, _, k) = net.sizes();
    let pred = predict_labels(net, x)?;
    t.check("accuracy", x.nrows(), k)?;
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
    Ok(hits as f64 / x.nrows() as f64)
}
