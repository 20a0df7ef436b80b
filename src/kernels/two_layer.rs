//! The fused training step of the two-layer network (`_core.TwoLayerTrainer`): batch
//! gather, forward, backprop and the optimizer update in one pass over reused buffers.
//!
//! The hidden layer is split into two parts (units 0..⌈h/2⌉ and the rest) that two
//! threads own for a whole run (`split`): each keeps its columns of W1 and b1
//! and its rows of W2 (and their optimizer state) in its own core's cache and computes
//! everything of its units. Each part's share of the logits is z1_p·W2_p; both add the
//! shares up in part order and compute the softmax and b2's update from the same
//! numbers, so each holds the same b2. The updates follow the book's
//! `common/optimizer.py` operation by operation ([`Optimizer`]).

use multiversion::multiversion;
use multiversion::target::target_cfg;
use ndarray::ArrayView2;

use super::aligned::Aligned;
use super::math::{has_fma, madd};
use super::numgrad::Activation;
use super::sparse::Rows;
use super::split::{Param, Parts, SplitPart, Units, BLOCK};
use super::train::{check_batches, softmax_cross_entropy_grad, Optimizer, ParamsMut};
use super::{Float, Targets};
use crate::error::{fmt_shape, KernelError, Result};

/// Output units per padded logit row (one f32 vector, two f64).
const OUT_BLOCK: usize = 16;

/// What a part writes in phase 1 and every part reads in phase 2.
#[derive(Debug, Default)]
struct Shared<T> {
    /// z1_p·W2_p: (n, kp).
    logits: Aligned<T>,
}

/// One part: its units of the hidden layer, their rows of W2, and a copy of b2.
#[derive(Debug)]
struct Part<T> {
    units: Units<T>,
    /// W2[lo..hi, :] (wp, kp) and its transpose (k, wp).
    w2: Param<T>,
    w2t: Aligned<T>,
    /// b2 (k): every part keeps the same copy.
    b2: Param<T>,
    /// Logits → softmax − t (n, k), the same padded (n, kp).
    y: Aligned<T>,
    dy: Aligned<T>,
}

/// The parameters of a run as flat slices: W1 (d, h), b1 (h), W2 (h, k), b2 (k).
type Flat<'a, T> = [&'a mut [T]; 4];

impl<T: Float> Part<T> {
    /// The part of units lo..hi; None when the memory for it cannot be had.
    fn new(
        d: usize,
        k: usize,
        span: (usize, usize),
        act: Activation,
        opt: Optimizer,
    ) -> Option<Self> {
        let units = Units::new(d, span, act, opt, 0.0)?;
        let (wp, kp) = (units.wp, k.div_ceil(OUT_BLOCK) * OUT_BLOCK);
        Some(Part {
            units,
            w2: Param::new(wp.checked_mul(kp), opt, true)?,
            w2t: Aligned::try_filled(k.checked_mul(wp)?, T::zero())?,
            b2: Param::new(Some(k), opt, true)?,
            y: Aligned::default(),
            dy: Aligned::default(),
        })
    }

    /// Copies the run's parameters (`set` None) or state set `set` into this part
    /// (`to_part`), or back.
    fn copy(
        &mut self,
        set: Option<usize>,
        [w1, b1, w2, b2]: &mut Flat<'_, T>,
        k: usize,
        to_part: bool,
    ) {
        self.units.copy(set, w1, b1, to_part);
        let (pw2, pb2) = (self.w2.set(set), self.b2.set(set));
        let (lo, hi) = (self.units.lo, self.units.hi);
        let kp = pw2.len() / self.units.wp;
        let rows = w2[lo * k..hi * k]
            .chunks_exact_mut(k)
            .zip(pw2.chunks_exact_mut(kp));
        if to_part {
            for (src, dst) in rows {
                dst[..k].copy_from_slice(src);
            }
            pb2.copy_from_slice(b2);
        } else {
            for (dst, src) in rows {
                dst.copy_from_slice(&src[..k]);
            }
            b2.copy_from_slice(pb2);
        }
    }

    /// Copies the run's parameters and state sets into this part (`to_part`), or back.
    fn exchange(
        &mut self,
        p: &mut Flat<'_, T>,
        state: &mut [Flat<'_, T>],
        k: usize,
        to_part: bool,
    ) {
        self.copy(None, p, k, to_part);
        for (s, set) in state.iter_mut().enumerate() {
            self.copy(Some(s), set, k, to_part);
        }
        if to_part {
            transpose(&mut self.w2t, &self.w2.v, k);
        }
    }
}

impl<T: Float> SplitPart<T> for Part<T> {
    type Shared = Shared<T>;

    fn units(&mut self) -> &mut Units<T> {
        &mut self.units
    }

    /// This part's share of the logits z1_p·W2_p (n, kp).
    fn share(&mut self, sh: &mut Shared<T>, n: usize) {
        let (wp, w) = (self.units.wp, self.units.width());
        let kp = self.w2.v.len() / wp;
        sh.logits.resize(n * kp, T::zero());
        part_logits(&mut sh.logits, &self.units.z1, &self.w2.v, w, wp, kp);
    }

    /// Softmax and cross-entropy from every part's logits, dW2_p, dz1_p, and the
    /// updates of W2_p and b2.
    fn backward(
        &mut self,
        shares: &[&Shared<T>],
        batch: &[usize],
        t: Targets<'_, T>,
        iter: u64,
    ) -> f64 {
        let (n, k, wp, w) = (
            batch.len(),
            self.b2.v.len(),
            self.units.wp,
            self.units.width(),
        );
        let (kp, opt) = (self.w2.v.len() / wp, self.units.opt);
        // y = Σ_p z1_p·W2_p + b2, in part order, the same in every part.
        self.y.resize(n * k, T::zero());
        for (q, y) in self.y.chunks_exact_mut(k).enumerate() {
            for (c, (y, &b)) in y.iter_mut().zip(self.b2.v.iter()).enumerate() {
                let sum = shares
                    .iter()
                    .fold(T::zero(), |s, sh| s + sh.logits[q * kp + c]);
                *y = sum + b;
            }
        }
        let loss = softmax_cross_entropy_grad(&mut self.y, k, batch, t, &mut self.b2.g);
        self.dy.resize(n * kp, T::zero());
        for (dst, src) in self.dy.chunks_exact_mut(kp).zip(self.y.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
        }
        // dW2_p = z1_pᵀ·dy, dz1_p = dy·W2_pᵀ.
        let units = &mut self.units;
        units.da1.resize(n * wp, T::zero());
        small_grads(
            &mut self.w2.g,
            &mut units.da1,
            &units.z1,
            &self.dy,
            &self.w2t,
            w,
            wp,
            kp,
        );
        self.w2.step(opt, iter);
        self.b2.step(opt, iter);
        transpose(&mut self.w2t, &self.w2.v, k);
        loss / n as f64
    }
}

/// W2 (wp, kp) → W2ᵀ (k, wp).
fn transpose<T: Float>(dst: &mut [T], w2: &[T], k: usize) {
    let wp = dst.len() / k.max(1);
    let kp = w2.len() / wp.max(1);
    for (c, row) in dst.chunks_exact_mut(wp).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = w2[j * kp + c];
        }
    }
}

/// acc + v·s[at..at + N], by value (so the sums stay in registers).
#[inline(always)]
fn axpy_n<T: Float, const N: usize>(acc: [T; N], v: T, s: &[T], at: usize, fma: bool) -> [T; N] {
    let mut r = acc;
    for (a, &x) in r.iter_mut().zip(&s[at..at + N]) {
        *a = madd(v, x, *a, fma);
    }
    r
}

/// logits (n, kp) = z1 (n, wp) · W2 (wp, kp) over the first w hidden units (the rest
/// are padding): per row and block of outputs, four interleaved sums.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn part_logits<T: Float>(logits: &mut [T], z1: &[T], w2: &[T], w: usize, wp: usize, kp: usize) {
    let fma = has_fma!();
    for (l, z) in logits.chunks_exact_mut(kp).zip(z1.chunks_exact(wp)) {
        let z = &z[..w];
        for cb in (0..kp).step_by(OUT_BLOCK) {
            let zero = [T::zero(); OUT_BLOCK];
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            let quads = z.chunks_exact(4);
            let rest = quads.remainder();
            for (j, zq) in quads.enumerate() {
                let at = 4 * j * kp + cb;
                a0 = axpy_n(a0, zq[0], w2, at, fma);
                a1 = axpy_n(a1, zq[1], w2, at + kp, fma);
                a2 = axpy_n(a2, zq[2], w2, at + 2 * kp, fma);
                a3 = axpy_n(a3, zq[3], w2, at + 3 * kp, fma);
            }
            for (j, &zj) in rest.iter().enumerate() {
                a0 = axpy_n(a0, zj, w2, (w - rest.len() + j) * kp + cb, fma);
            }
            for ((((o, &p), &q), &r), &s) in l[cb..cb + OUT_BLOCK]
                .iter_mut()
                .zip(&a0)
                .zip(&a1)
                .zip(&a2)
                .zip(&a3)
            {
                *o = (p + q) + (r + s);
            }
        }
    }
}

/// gW2 (wp, kp) = z1ᵀ·dy and dz1 (n, wp) = dy·W2ᵀ, from z1 (n, wp) (zero past the
/// first w units), dy (n, kp) and W2ᵀ (k, wp). gW2's rows are summed four at a time in
/// registers over the batch; dz1 two rows at a time.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn small_grads<T: Float>(
    gw2: &mut [T],
    dz1: &mut [T],
    z1: &[T],
    dy: &[T],
    w2t: &[T],
    w: usize,
    wp: usize,
    kp: usize,
) {
    let fma = has_fma!();
    let k = w2t.len() / wp;
    gw2.fill(T::zero());
    // Rows of gW2 in fours up to w rounded up (within wp; z1 is zero there).
    let w4 = w.div_ceil(4) * 4;
    for j in (0..w4).step_by(4) {
        for cb in (0..kp).step_by(OUT_BLOCK) {
            let zero = [T::zero(); OUT_BLOCK];
            let (mut g0, mut g1, mut g2, mut g3) = (zero, zero, zero, zero);
            for (z, d) in z1.chunks_exact(wp).zip(dy.chunks_exact(kp)) {
                g0 = axpy_n(g0, z[j], d, cb, fma);
                g1 = axpy_n(g1, z[j + 1], d, cb, fma);
                g2 = axpy_n(g2, z[j + 2], d, cb, fma);
                g3 = axpy_n(g3, z[j + 3], d, cb, fma);
            }
            for (u, g) in [g0, g1, g2, g3].iter().enumerate() {
                let at = (j + u) * kp + cb;
                gw2[at..at + OUT_BLOCK].copy_from_slice(g);
            }
        }
    }
    let mut pairs = dz1.chunks_exact_mut(2 * wp).zip(dy.chunks_exact(2 * kp));
    for (d, g) in &mut pairs {
        let (d0, d1) = d.split_at_mut(wp);
        for c0 in (0..wp).step_by(BLOCK) {
            let zero = [T::zero(); BLOCK];
            let (mut s0, mut s1) = (zero, zero);
            for c in 0..k {
                s0 = axpy_n(s0, g[c], w2t, c * wp + c0, fma);
                s1 = axpy_n(s1, g[kp + c], w2t, c * wp + c0, fma);
            }
            d0[c0..c0 + BLOCK].copy_from_slice(&s0);
            d1[c0..c0 + BLOCK].copy_from_slice(&s1);
        }
    }
    let n = dz1.len() / wp;
    if n % 2 == 1 {
        let (d, g) = (&mut dz1[(n - 1) * wp..], &dy[(n - 1) * kp..]);
        for c0 in (0..wp).step_by(BLOCK) {
            let mut s0 = [T::zero(); BLOCK];
            for (c, &gc) in g[..k].iter().enumerate() {
                s0 = axpy_n(s0, gc, w2t, c * wp + c0, fma);
            }
            d[c0..c0 + BLOCK].copy_from_slice(&s0);
        }
    }
}

/// The fused two-layer trainer for one dtype and network size; its buffers are reused
/// across steps and runs, so a step allocates nothing once the first batch has sized
/// them. During [`Trainer::run`] the parameters and optimizer state live in the parts'
/// copies, written back at the end.
#[derive(Debug)]
pub struct Trainer<T: Float> {
    d: usize,
    h: usize,
    k: usize,
    optimizer: Optimizer,
    split: Parts<T, Part<T>>,
}

impl<T: Float> Trainer<T> {
    /// A trainer for a d-h-k network. Errors if a size is zero or too large, or a rate
    /// is invalid.
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
        let split = Parts::new(OP, d, h, |span| {
            Part::new(d, k, span, activation, optimizer)
        })?;
        Ok(Trainer {
            d,
            h,
            k,
            optimizer,
            split,
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
        super::train::check_width(op, x, [d, h])?;
        t.check(op, x[0], k)
    }

    /// Steps through the rows of `batches` (iters, batch) of row indices into (x, t),
    /// updating `params` and `state` in place; returns the per-step mean losses (before
    /// each update). `first_iter` is Adam's step count before the first step. About
    /// every 50 ms it calls `interrupt` (on the calling thread) and stops with
    /// [`KernelError::Interrupted`] when that returns true; the steps done so far stay
    /// applied.
    ///
    /// x: (N, d) dense or [`super::sparse::SparseRows`]; t: labels (N,) or one-hot (N, k). Errors:
    /// shapes, labels, indices out of [0, N), non-contiguous parameters, wrong number
    /// of state sets.
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
        let k = self.k;
        let mut flat = params.slices(OP, "")?;
        let mut sets = Vec::with_capacity(state.len());
        for set in state.iter_mut() {
            sets.push(set.slices(OP, "state ")?);
        }
        for part in &mut self.split.parts {
            part.exchange(&mut flat, &mut sets, k, true);
        }
        let losses = self.split.run(OP, x, t, batches, first_iter, interrupt);
        for part in &mut self.split.parts {
            part.exchange(&mut flat, &mut sets, k, false);
        }
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

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
