//! The fused training step of the two-layer network (`_core.TwoLayerTrainer`): batch
//! gather, forward, backprop and the optimizer update in one pass over reused buffers.
//!
//! The hidden layer is split into two parts (units 0..⌈h/2⌉ and the rest) that two
//! threads own for a whole run: each keeps its columns of W1 and b1 and its rows of W2
//! (and their optimizer state) in its own core's cache and computes everything of its
//! units. The threads meet twice per step: after the hidden activations, to add up the
//! logits (z1·W2 = Σ_parts z1_p·W2_p, in part order), and at the end of the step. Both
//! compute the softmax and b2's update from the same numbers, so each holds the same b2.
//! The split does not depend on the number of threads (one thread runs both parts in
//! turn), so neither do the results.
//!
//! Per step and part, the input layer reads only the batch's non-zero inputs (MNIST is
//! ~81% zeros), row by row from the compressed rows ([`SparseRows`], 4 bytes per entry):
//! - the update W1[i, :] += (−lr·x[r, i])·da1[r, :] (SGD; other rules: dW1 the same way,
//!   then the rule) is added into W1's rows, batch rows in order;
//! - the next batch's pre-activations a1[r, :] = Σ_i x[r, i]·W1[i, :] are summed in
//!   registers from the updated rows, while the rows of the batch after that start
//!   loading from memory.
//!
//! A part's W1 (d × 32 units: 100 kB, stored in column blocks that a pass over the batch
//! reads) stays in its core's L2 cache and the batch's activations and gradients
//! (batch × 32) in L1; every buffer starts on a cache line ([`Aligned`]). The updates
//! follow the book's `common/optimizer.py` operation by operation ([`Optimizer`]).

use multiversion::multiversion;
use multiversion::target::target_cfg;
use ndarray::ArrayView2;

use super::aligned::Aligned;
use super::math::{has_fma, madd};
use super::numgrad::Activation;
use super::parallel::{self, join_spinning};
use super::sparse::{gather, with_source, Rows, Source, SparseRows};
use super::train::{act_grad, apply, check_batches, softmax_cross_entropy_grad};
use super::train::{Optimizer, ParamsMut};
use super::{Float, Targets};
use crate::error::{fmt_shape, KernelError, Result};

/// Hidden units per register block: 32 (f32: two 512-bit vectors; f64: four).
pub(super) const BLOCK: usize = 32;

/// Output units per padded logit row (one f32 vector, two f64).
const OUT_BLOCK: usize = 16;

/// What a part writes in the first phase of a step and every part reads in the second.
#[derive(Debug, Default)]
struct Shared<T> {
    /// z1_p·W2_p: (n, kp).
    logits: Aligned<T>,
}

/// What one part owns: its hidden units lo..hi (padded to wp, a whole number of
/// blocks) of every parameter and optimizer state, and its activations.
#[derive(Debug)]
struct Part<T> {
    lo: usize,
    hi: usize,
    wp: usize,
    /// W1[:, lo..hi] (d, wp), its gradient (not for SGD) and state.
    w1: Aligned<T>,
    gw1: Aligned<T>,
    sw1: [Aligned<T>; 2],
    /// b1[lo..hi] (wp).
    b1: Aligned<T>,
    gb1: Aligned<T>,
    sb1: [Aligned<T>; 2],
    /// W2[lo..hi, :] (wp, kp) and its transpose (k, wp).
    w2: Aligned<T>,
    w2t: Aligned<T>,
    gw2: Aligned<T>,
    sw2: [Aligned<T>; 2],
    /// b2 (k): every part keeps the same copy.
    b2: Aligned<T>,
    gb2: Aligned<T>,
    sb2: [Aligned<T>; 2],
    /// Pre-activations, activations, their gradient: (n, wp).
    a1: Aligned<T>,
    z1: Aligned<T>,
    da1: Aligned<T>,
    /// Logits → softmax − t (n, k), the same padded (n, kp).
    y: Aligned<T>,
    dy: Aligned<T>,
}

/// A batch's rows: rows `.1` of `.0`.
type Batch<'a, T> = (&'a SparseRows<T>, &'a [usize]);

/// The parameters of a run as flat slices: W1 (d, h), b1 (h), W2 (h, k), b2 (k).
type Flat<'a, T> = [&'a mut [T]; 4];

impl<T: Float> Part<T> {
    /// The part of units lo..hi; None when the memory for it cannot be had.
    fn new(d: usize, k: usize, lo: usize, hi: usize, opt: Optimizer) -> Option<Self> {
        let wp = (hi - lo).div_ceil(BLOCK) * BLOCK;
        let kp = k.div_ceil(OUT_BLOCK) * OUT_BLOCK;
        let slots = opt.state_slots();
        // An array of `len` zeros (if `used`, else empty).
        let z = |len: Option<usize>, used: bool| {
            Aligned::try_filled(if used { len? } else { 0 }, T::zero())
        };
        let (dw, wk, kw) = (d.checked_mul(wp), wp.checked_mul(kp), k.checked_mul(wp));
        let sgd = matches!(opt, Optimizer::Sgd { .. });
        Some(Part {
            lo,
            hi,
            wp,
            w1: z(dw, true)?,
            gw1: z(dw, !sgd)?,
            sw1: [z(dw, slots > 0)?, z(dw, slots > 1)?],
            b1: z(Some(wp), true)?,
            gb1: z(Some(wp), true)?,
            sb1: [z(Some(wp), slots > 0)?, z(Some(wp), slots > 1)?],
            w2: z(wk, true)?,
            w2t: z(kw, true)?,
            gw2: z(wk, true)?,
            sw2: [z(wk, slots > 0)?, z(wk, slots > 1)?],
            b2: z(Some(k), true)?,
            gb2: z(Some(k), true)?,
            sb2: [z(Some(k), slots > 0)?, z(Some(k), slots > 1)?],
            a1: Aligned::default(),
            z1: Aligned::default(),
            da1: Aligned::default(),
            y: Aligned::default(),
            dy: Aligned::default(),
        })
    }

    /// This part's copy of one parameter set (`to_part`) or the way back.
    fn copy(p: [&mut [T]; 4], own: [&mut [T]; 4], lo: usize, hi: usize, k: usize, to_part: bool) {
        let [w1, b1, w2, b2] = p;
        let [pw1, pb1, pw2, pb2] = own;
        let (h, w) = (b1.len(), hi - lo);
        let wp = pb1.len();
        let kp = pw2.len() / wp.max(1);
        w1_columns(w1, pw1, h, lo, hi, to_part);
        let w2rows = w2[lo * k..hi * k]
            .chunks_exact_mut(k)
            .zip(pw2.chunks_exact_mut(kp));
        if to_part {
            pb1[..w].copy_from_slice(&b1[lo..hi]);
            for (src, dst) in w2rows {
                dst[..k].copy_from_slice(src);
            }
            pb2.copy_from_slice(b2);
        } else {
            b1[lo..hi].copy_from_slice(&pb1[..w]);
            for (dst, src) in w2rows {
                dst.copy_from_slice(&src[..k]);
            }
            b2.copy_from_slice(pb2);
        }
    }

    /// Copies the run's parameters (`to_part`) and state sets into this part, or back.
    fn exchange(
        &mut self,
        p: &mut Flat<'_, T>,
        state: &mut [Flat<'_, T>],
        k: usize,
        to_part: bool,
    ) {
        let (lo, hi) = (self.lo, self.hi);
        let [w1, b1, w2, b2] = p;
        Part::copy(
            [&mut **w1, &mut **b1, &mut **w2, &mut **b2],
            [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2],
            lo,
            hi,
            k,
            to_part,
        );
        for (s, set) in state.iter_mut().enumerate() {
            let [w1, b1, w2, b2] = set;
            Part::copy(
                [&mut **w1, &mut **b1, &mut **w2, &mut **b2],
                [
                    &mut self.sw1[s],
                    &mut self.sb1[s],
                    &mut self.sw2[s],
                    &mut self.sb2[s],
                ],
                lo,
                hi,
                k,
                to_part,
            );
        }
        if to_part {
            transpose(&mut self.w2t, &self.w2, k);
        }
    }

    /// Phase 1 of a step: a1 += b1, z1 = act(a1) (zero on the padding), this part's
    /// share of the logits z1_p·W2_p into `logits` (n, kp).
    fn forward(&mut self, logits: &mut Aligned<T>, n: usize, act: Activation) {
        let wp = self.wp;
        self.z1.resize(n * wp, T::zero());
        activate(&mut self.a1, &self.b1, &mut self.z1, self.hi - self.lo, act);
        let kp = self.w2.len() / wp;
        logits.resize(n * kp, T::zero());
        part_logits(logits, &self.z1, &self.w2, self.hi - self.lo, wp, kp);
    }

    /// Phase 2 of a step: softmax and cross-entropy from every part's logits, the
    /// gradients of this part's units, the updates of b1, W2, b2 and W1 (W1 batch row by
    /// batch row), and the next batch's pre-activations when `next` holds it (row q
    /// also starts loading row `after[q]`, of the batch after). Returns the batch's
    /// summed loss.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        shares: &[&[T]],
        cur: Batch<'_, T>,
        next: Option<Batch<'_, T>>,
        after: &[i64],
        batch: &[usize],
        t: Targets<'_, T>,
        act: Activation,
        opt: Optimizer,
        iter: u64,
    ) -> f64 {
        let (n, k, wp) = (batch.len(), self.b2.len(), self.wp);
        let kp = self.w2.len() / wp;
        // y = Σ_p z1_p·W2_p + b2, in part order, the same in every part.
        self.y.resize(n * k, T::zero());
        for (q, y) in self.y.chunks_exact_mut(k).enumerate() {
            for (c, (y, &b)) in y.iter_mut().zip(self.b2.iter()).enumerate() {
                let sum = shares
                    .iter()
                    .fold(T::zero(), |s, share| s + share[q * kp + c]);
                *y = sum + b;
            }
        }
        let loss = softmax_cross_entropy_grad(&mut self.y, k, batch, t, &mut self.gb2);
        self.dy.resize(n * kp, T::zero());
        for (dst, src) in self.dy.chunks_exact_mut(kp).zip(self.y.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
        }
        // dW2_p = z1_pᵀ·dy, da1 = (dy·W2_pᵀ) ⊙ act'(a1), db1 = Σ da1.
        self.da1.resize(n * wp, T::zero());
        small_grads(
            &mut self.gw2,
            &mut self.da1,
            &self.z1,
            &self.dy,
            &self.w2t,
            self.hi - self.lo,
            wp,
            kp,
        );
        act_grad(&mut self.da1, &self.a1, &self.z1, &mut self.gb1, act);
        let [s0, s1] = &mut self.sb1;
        apply(opt, &mut self.b1, &self.gb1, s0, s1, iter);
        let [s0, s1] = &mut self.sw2;
        apply(opt, &mut self.w2, &self.gw2, s0, s1, iter);
        let [s0, s1] = &mut self.sb2;
        apply(opt, &mut self.b2, &self.gb2, s0, s1, iter);
        transpose(&mut self.w2t, &self.w2, k);
        // W1 from this batch, then the next batch's pre-activations from the new W1.
        let (sp, rows) = cur;
        match opt {
            Optimizer::Sgd { lr } => {
                let (w1, da1) = (&mut self.w1, &self.da1);
                with_source!(sp, |src| add_input_grad(w1, da1, src, rows, T::lit(-lr)));
            }
            _ => {
                self.gw1.fill(T::zero());
                let (gw1, da1) = (&mut self.gw1, &self.da1);
                with_source!(sp, |src| add_input_grad(gw1, da1, src, rows, T::one()));
                let [s0, s1] = &mut self.sw1;
                apply(opt, &mut self.w1, &self.gw1, s0, s1, iter);
            }
        }
        if let Some((sp, rows)) = next {
            self.a1.resize(rows.len() * wp, T::zero());
            let (a1, w1) = (&mut self.a1, &self.w1);
            with_source!(sp, |src| forward_rows(a1, w1, src, rows, after));
        }
        loss
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

/// a += b (per row), z = act(a) for the w real units of each wp-wide row, 0 on the
/// padding (so the padded units add nothing to W2's gradient).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn activate<T: Float>(a: &mut [T], b: &[T], z: &mut [T], w: usize, act: Activation) {
    let wp = b.len();
    for (a, z) in a.chunks_exact_mut(wp).zip(z.chunks_exact_mut(wp)) {
        for (a, &b) in a.iter_mut().zip(b) {
            *a = *a + b;
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
        z[w..].fill(T::zero());
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

/// Hidden units per column block of a part's W1 (W1 is stored block by block: the
/// block's d rows of B units, then the next block's). f32: the part's whole 32 units
/// (two 512-bit vectors); f64: 16 (two vectors), so that the W1 rows one pass over the
/// batch reads are 100 kB as in f32 rather than 200 kB.
fn w1_block<T>() -> usize {
    if std::mem::size_of::<T>() == 8 {
        16
    } else {
        BLOCK
    }
}

/// Columns lo..hi of W1 (d, h) into a part's W1 (`to_part`), stored in column blocks of
/// B units ([`w1_block`]): unit l of input i at (l / B)·d·B + i·B + l % B; or back.
pub(super) fn w1_columns<T: Float>(
    w1: &mut [T],
    part: &mut [T],
    h: usize,
    lo: usize,
    hi: usize,
    to_part: bool,
) {
    let (bw, d) = (w1_block::<T>(), w1.len() / h.max(1));
    let at = |i: usize, l: usize| (l / bw) * d * bw + i * bw + l % bw;
    if to_part {
        for (i, src) in w1.chunks_exact(h.max(1)).enumerate() {
            for (l, &v) in src[lo..hi].iter().enumerate() {
                part[at(i, l)] = v;
            }
        }
    } else {
        for (i, dst) in w1.chunks_exact_mut(h.max(1)).enumerate() {
            for (l, v) in dst[lo..hi].iter_mut().enumerate() {
                *v = part[at(i, l)];
            }
        }
    }
}

/// acc + v·s[at..at + B]. The sums pass by value: kept in registers, where sums updated
/// through a reference can stay in memory.
#[inline(always)]
fn axpy<T: Float, const B: usize>(acc: [T; B], v: T, s: &[T], at: usize, fma: bool) -> [T; B] {
    let mut r = acc;
    for (a, &x) in r.iter_mut().zip(&s[at..at + B]) {
        *a = madd(v, x, *a, fma);
    }
    r
}

/// a1 (n, wp) = x·W1 (without b1) for the rows `rows` of sp, from their non-zero
/// entries: each block of units of a row summed in registers (four interleaved sums).
/// W1: d × wp in column blocks of B ([`w1_block`]). Row q also starts loading row
/// `ahead[q]` of sp (a later batch's) into cache.
pub(super) fn forward_rows<T: Float, S: Source<T>>(
    a1: &mut [T],
    w1: &[T],
    sp: S,
    rows: &[usize],
    ahead: &[i64],
) {
    if w1_block::<T>() == 16 {
        forward_blocks::<T, S, 16>(a1, w1, sp, rows, ahead);
    } else {
        forward_blocks::<T, S, BLOCK>(a1, w1, sp, rows, ahead);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn forward_blocks<T: Float, S: Source<T>, const B: usize>(
    a1: &mut [T],
    w1: &[T],
    sp: S,
    rows: &[usize],
    ahead: &[i64],
) {
    let fma = has_fma!();
    let wp = a1.len() / rows.len().max(1);
    let d = w1.len() / wp.max(1);
    for (blk, w1) in w1.chunks_exact(d * B).enumerate() {
        let c0 = blk * B;
        for (q, (a, &r)) in a1.chunks_exact_mut(wp).zip(rows).enumerate() {
            if blk == 0 {
                if let Some(&next) = ahead.get(q) {
                    sp.prefetch_row(next as usize);
                }
            }
            let es = sp.row(r);
            let zero = [T::zero(); B];
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            let quads = es.chunks_exact(4);
            let rest = quads.remainder();
            let at = |e: S::Entry| S::col(e) * B;
            for e in quads {
                a0 = axpy(a0, sp.value(e[0]), w1, at(e[0]), fma);
                a1 = axpy(a1, sp.value(e[1]), w1, at(e[1]), fma);
                a2 = axpy(a2, sp.value(e[2]), w1, at(e[2]), fma);
                a3 = axpy(a3, sp.value(e[3]), w1, at(e[3]), fma);
            }
            for &e in rest {
                a0 = axpy(a0, sp.value(e), w1, at(e), fma);
            }
            for ((((o, &p), &q), &r), &s) in
                a[c0..c0 + B].iter_mut().zip(&a0).zip(&a1).zip(&a2).zip(&a3)
            {
                *o = (p + q) + (r + s);
            }
        }
    }
}

/// g += scale·xᵀ·da1 over the rows `rows` of sp (batch positions in order):
/// g[i, :] += (scale·x[r, i])·da1[r, :] for each non-zero x[r, i]. g: d × wp in column
/// blocks as W1; da1 (n, wp). With g = W1 and scale = −lr this is SGD's update without
/// forming dW1.
pub(super) fn add_input_grad<T: Float, S: Source<T>>(
    g: &mut [T],
    da1: &[T],
    sp: S,
    rows: &[usize],
    scale: T,
) {
    if w1_block::<T>() == 16 {
        input_grad_blocks::<T, S, 16>(g, da1, sp, rows, scale);
    } else {
        input_grad_blocks::<T, S, BLOCK>(g, da1, sp, rows, scale);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn input_grad_blocks<T: Float, S: Source<T>, const B: usize>(
    g: &mut [T],
    da1: &[T],
    sp: S,
    rows: &[usize],
    scale: T,
) {
    let fma = has_fma!();
    let wp = da1.len() / rows.len().max(1);
    let d = g.len() / wp.max(1);
    for (blk, g) in g.chunks_exact_mut(d * B).enumerate() {
        let c0 = blk * B;
        for (dq, &r) in da1.chunks_exact(wp).zip(rows) {
            let mut db = [T::zero(); B];
            db.copy_from_slice(&dq[c0..c0 + B]);
            for &e in sp.row(r) {
                let (sv, at) = (scale * sp.value(e), S::col(e) * B);
                for (o, &x) in g[at..at + B].iter_mut().zip(&db) {
                    *o = madd(sv, x, *o, fma);
                }
            }
        }
    }
}

/// The fused two-layer trainer for one dtype and network size; its buffers are reused
/// across steps and runs, so a step allocates nothing once the first batch has sized
/// them. During [`Trainer::run`] the parameters and optimizer state live in the parts'
/// copies, written back at the end.
#[derive(Debug)]
pub struct Trainer<T> {
    d: usize,
    h: usize,
    k: usize,
    activation: Activation,
    optimizer: Optimizer,
    parts: Vec<Part<T>>,
    shared: Vec<Shared<T>>,
    /// A dense x's rows of this batch and the next, compressed.
    scratch: [SparseRows<T>; 2],
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
        // Two parts unless one block holds the whole hidden layer.
        let bounds: Vec<[usize; 2]> = if h > BLOCK {
            vec![[0, h.div_ceil(2)], [h.div_ceil(2), h]]
        } else {
            vec![[0, h]]
        };
        let wp = bounds
            .iter()
            .map(|[lo, hi]| (hi - lo).div_ceil(BLOCK) * BLOCK)
            .sum::<usize>();
        let mut parts = Vec::new();
        for &[lo, hi] in &bounds {
            let part = Part::new(d, k, lo, hi, optimizer).ok_or_else(|| KernelError::Alloc {
                op: OP,
                shape: format!("({d}, {wp})"),
                bytes: (d as u128) * (wp as u128) * std::mem::size_of::<T>() as u128,
            })?;
            parts.push(part);
        }
        let shared = bounds.iter().map(|_| Shared::default()).collect();
        Ok(Trainer {
            d,
            h,
            k,
            activation,
            optimizer,
            parts,
            shared,
            scratch: Default::default(),
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
    /// x: (N, d) dense or [`SparseRows`]; t: labels (N,) or one-hot (N, k). Errors:
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
        for part in &mut self.parts {
            part.exchange(&mut flat, &mut sets, k, true);
        }
        let total = batches.nrows();
        let mut losses = Vec::with_capacity(total);
        let mut outcome = Ok(());
        let mut s = 0;
        while s < total {
            // Steps for about 50 ms inside the pool, then a look at `interrupt` here.
            let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
            s = parallel::install(|threads| {
                self.steps(x, t, batches, s, first_iter, until, threads, &mut losses)
            });
            if s < total && interrupt() {
                outcome = Err(KernelError::Interrupted { op: OP });
                break;
            }
        }
        for part in &mut self.parts {
            part.exchange(&mut flat, &mut sets, k, false);
        }
        outcome.map(|()| losses)
    }

    /// Steps from s until the batches run out or `until` passes (at least one step);
    /// pushes the mean losses and returns the next step.
    #[allow(clippy::too_many_arguments)]
    fn steps(
        &mut self,
        x: Rows<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        mut s: usize,
        first_iter: u64,
        until: std::time::Instant,
        threads: usize,
        losses: &mut Vec<f64>,
    ) -> usize {
        let (act, opt) = (self.activation, self.optimizer);
        let (total, n) = (batches.nrows(), batches.ncols());
        let count = self.parts.len();
        let two = threads > 1 && count == 2;
        let (parts, shared) = (&mut self.parts[..], &mut self.shared[..]);
        let scratch = &mut self.scratch;
        let mut rows = [Vec::with_capacity(n), Vec::with_capacity(n)];
        let batch_rows = |b: usize| batches.row(b).into_iter().map(|&i| i as usize);
        // This batch's rows, then its pre-activations.
        gather(x, batch_rows(s), &mut scratch[s % 2], &mut rows[s % 2]);
        {
            let sp = source(x, scratch, s % 2);
            let rows = &rows[s % 2][..];
            each(two, parts, &mut [(), ()], |_, part, _| {
                part.a1.resize(n * part.wp, T::zero());
                let (a1, w1) = (&mut part.a1, &part.w1);
                with_source!(sp, |src| forward_rows(a1, w1, src, rows, &[]));
            });
        }
        let mut batch = Vec::with_capacity(n);
        loop {
            let go_on = s + 1 < total && std::time::Instant::now() < until;
            let (cur, nxt) = (s % 2, (s + 1) % 2);
            if go_on {
                gather(x, batch_rows(s + 1), &mut scratch[nxt], &mut rows[nxt]);
            }
            batch.clear();
            batch.extend(batch_rows(s));
            let this = (source(x, scratch, cur), &rows[cur][..]);
            let next = go_on.then(|| (source(x, scratch, nxt), &rows[nxt][..]));
            // Phase 1: activations and shares of the logits; where the rows of the batch
            // after next lie starts loading (the next batch's rows load in phase 2).
            let after: &[i64] = match x {
                Rows::Sparse(_) if s + 2 < total => batches.row(s + 2).to_slice().unwrap_or(&[]),
                _ => &[],
            };
            each(two, parts, shared, |_, part, sh| {
                if let Some((sp, _)) = next {
                    for &r in after {
                        with_source!(sp, |src| src.prefetch_span(r as usize));
                    }
                }
                part.forward(&mut sh.logits, n, act);
            });
            // Phase 2: the rest of the step and the next batch's pre-activations.
            let shares: [&[T]; 2] = [
                shared.first().map_or(&[][..], |sh| &sh.logits[..]),
                shared.get(1).map_or(&[][..], |sh| &sh.logits[..]),
            ];
            let iter = first_iter + s as u64 + 1;
            let loss = each(two, parts, &mut [(), ()], |_, part, _| {
                part.backward(
                    &shares[..count],
                    this,
                    next,
                    after,
                    &batch,
                    t,
                    act,
                    opt,
                    iter,
                )
            });
            losses.push(loss / n as f64);
            s += 1;
            if !go_on {
                return s;
            }
        }
    }
}

/// The compressed rows that a batch's row indices refer to: x's own, or the slot's
/// copy of a dense x's rows.
pub(super) fn source<'s, 'x: 's, T>(
    x: Rows<'x, T>,
    scratch: &'s [SparseRows<T>; 2],
    slot: usize,
) -> &'s SparseRows<T> {
    match x {
        Rows::Sparse(sp) => sp,
        Rows::Dense(_) => &scratch[slot],
    }
}

/// f(i, xs[i], ys[i]) for each part i, on two threads when `two` (and there are two);
/// returns part 0's result.
pub(super) fn each<X: Send, Y: Send, R: Send + Default>(
    two: bool,
    xs: &mut [X],
    ys: &mut [Y],
    f: impl Fn(usize, &mut X, &mut Y) -> R + Sync,
) -> R {
    match (xs, ys) {
        ([x0, x1], [y0, y1]) if two => join_spinning(|| f(0, x0, y0), || f(1, x1, y1)).0,
        (xs, ys) => {
            let mut first = R::default();
            for (i, (x, y)) in xs.iter_mut().zip(ys.iter_mut()).enumerate() {
                let r = f(i, x, y);
                if i == 0 {
                    first = r;
                }
            }
            first
        }
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
