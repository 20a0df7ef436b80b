//! The sharding of the fused step: the first hidden layer split between two threads by
//! units ([`FirstLayerShard`]), and the step driver ([`ShardedFirstLayer`]) around the
//! trainer's shards ([`Shard`]).
//!
//! Each shard owns units lo..hi of the first hidden layer for a whole run: their W1
//! columns, b1 and optimizer state, kept in its core's cache. Per step the input layer
//! reads only the batch's non-zero inputs (MNIST is ~81% zeros), row by row from the
//! compressed rows ([`SparseRows`]):
//! - the update W1[i, :] += (−lr·x[r, i])·da1[r, :] (SGD; other rules: dW1 the same way,
//!   then the rule) is added into W1's rows, batch rows in order;
//! - the next batch's pre-activations a1[r, :] = Σ_i x[r, i]·W1[i, :] are summed in
//!   registers from the updated rows, while the rows of the batch after that start
//!   loading from memory.
//!
//! Each column block of a shard's W1 (d × 32 f32 or 16 f64 units: 100 kB; one pass over
//! the batch reads a block) stays in its core's L2 cache and the batch's activations and
//! gradients (batch × block) in L1; every buffer starts on a cache line ([`Aligned`]).
//! The threads meet twice per step: after phase 1 (each shard's share of what the layer after the
//! first needs) and at the end of phase 2. The split does not depend on the number of
//! threads (one thread runs both shards in turn), so neither do the results.

use ndarray::ArrayView2;

use crate::error::{KernelError, Result};
use crate::kernels::activation::{activate, activation_backward, Activation};
use crate::kernels::aligned::Aligned;
use crate::kernels::input_layer::{self, add_weight_gradient, copy_columns, padded_width};
use crate::kernels::math::add_to_rows;
use crate::kernels::optimizer::{apply, Optimizer};
use crate::kernels::parallel::{self, join_spinning};
use crate::kernels::sparse::{gather, with_layout, RowEntries, Rows, SparseRows};
use crate::kernels::{Float, Targets};

/// A batch's rows: rows `.1` of `.0`.
pub(super) type Batch<'a, T> = (&'a SparseRows<T>, &'a [usize]);

/// Units lo..hi of the first hidden layer (padded to wp, whole 256-bit vectors): their
/// W1 columns, b1, optimizer state and activations.
#[derive(Debug)]
pub(super) struct FirstLayerShard<T> {
    pub(super) lo: usize,
    pub(super) hi: usize,
    pub(super) wp: usize,
    pub(super) act: Activation,
    pub(super) opt: Optimizer,
    /// λ of the L2 weight decay (0 for none): the loss adds ½·λ·Σ‖W‖², each dW λ·W.
    pub(super) decay: f64,
    /// W1[:, lo..hi] (d × wp in column blocks, [`copy_columns`]; no gradient array for
    /// plain SGD) and b1[lo..hi] (wp).
    pub(super) w1: TrainedArray<T>,
    b1: TrainedArray<T>,
    /// Pre-activations, activations and dL/dz1, then dL/da1: (n, wp).
    pub(super) a1: Aligned<T>,
    pub(super) z1: Aligned<T>,
    pub(super) da1: Aligned<T>,
}

impl<T: Float> FirstLayerShard<T> {
    /// Units lo..hi for inputs of width d; None when the memory cannot be had.
    pub(super) fn new(
        d: usize,
        (lo, hi): (usize, usize),
        act: Activation,
        opt: Optimizer,
        decay: f64,
    ) -> Option<Self> {
        let wp = padded_width::<T>(hi - lo);
        let plain_sgd = matches!(opt, Optimizer::Sgd { .. }) && decay == 0.0;
        Some(FirstLayerShard {
            lo,
            hi,
            wp,
            act,
            opt,
            decay,
            w1: TrainedArray::new(d.checked_mul(wp), opt, !plain_sgd)?,
            b1: TrainedArray::new(Some(wp), opt, true)?,
            a1: Aligned::default(),
            z1: Aligned::default(),
            da1: Aligned::default(),
        })
    }

    /// The real units (hi − lo).
    pub(super) fn width(&self) -> usize {
        self.hi - self.lo
    }

    /// Columns lo..hi of W1 (d, h) and entries of b1 (h) into the shard's parameters
    /// (`set` None) or state set `set` (`to_shard`), or back.
    pub(super) fn copy(&mut self, set: Option<usize>, w1: &mut [T], b1: &mut [T], to_shard: bool) {
        let (lo, hi) = (self.lo, self.hi);
        copy_columns(w1, self.w1.set(set), b1.len(), (lo, hi), to_shard);
        let pb1 = self.b1.set(set);
        if to_shard {
            pb1[..hi - lo].copy_from_slice(&b1[lo..hi]);
        } else {
            b1[lo..hi].copy_from_slice(&pb1[..hi - lo]);
        }
    }

    /// a1 = x·W1 (without b1) for a batch's rows; row q also starts loading row
    /// `after[q]` (of a later batch) into cache.
    pub(super) fn forward(&mut self, (sp, rows): Batch<'_, T>, after: &[i64]) {
        self.a1.resize(rows.len() * self.wp, T::zero());
        let (a1, w1) = (&mut self.a1, &self.w1.v);
        with_layout!(sp, |src| input_layer::forward(a1, w1, src, rows, after));
    }

    /// Phase 1's start: a1 += b1, z1 = act(a1), zero on the padding (so the padded
    /// units add nothing to the next layer's gradient).
    pub(super) fn activate(&mut self, n: usize) {
        let (wp, w) = (self.wp, self.width());
        self.z1.resize(n * wp, T::zero());
        add_to_rows(&mut self.a1, &self.b1.v);
        activate(self.act, &self.a1, &mut self.z1);
        for z in self.z1.chunks_exact_mut(wp) {
            z[w..].fill(T::zero());
        }
    }

    /// Phase 2's end, with dL/dz1 in `da1` (n, wp): da1 ⊙= act'(a1), db1 = Σ da1, and
    /// the updates of b1 and of W1 from the batch's rows (SGD without decay: added
    /// into W1 without forming dW1; else dW1 (+ λ·W1), then the rule).
    pub(super) fn update(&mut self, (sp, rows): Batch<'_, T>, iter: u64) {
        let opt = self.opt;
        activation_backward(self.act, &mut self.da1, &self.a1, &self.z1, &mut self.b1.g);
        self.b1.step(opt, iter);
        let (w1, da1) = (&mut self.w1, &self.da1);
        match opt {
            Optimizer::Sgd { lr } if self.decay == 0.0 => {
                with_layout!(sp, |src| add_weight_gradient(
                    &mut w1.v,
                    da1,
                    src,
                    rows,
                    T::lit(-lr)
                ));
            }
            _ => {
                w1.g.fill(T::zero());
                with_layout!(sp, |src| add_weight_gradient(
                    &mut w1.g,
                    da1,
                    src,
                    rows,
                    T::one()
                ));
                w1.decay(self.decay);
                w1.step(opt, iter);
            }
        }
    }

    /// ½·λ·‖W1 shard‖² (the padding is zero).
    pub(super) fn penalty(&self) -> f64 {
        self.w1.penalty(self.decay)
    }
}

/// A parameter's values, their gradient and the optimizer's state sets.
#[derive(Debug, Clone, Default)]
pub(super) struct TrainedArray<T> {
    pub(super) v: Aligned<T>,
    pub(super) g: Aligned<T>,
    s: [Aligned<T>; 2],
}

impl<T: Float> TrainedArray<T> {
    /// `len` zero values, their gradient (if `grad`) and the state `opt` keeps; None
    /// when `len` overflowed (None) or the memory cannot be had.
    pub(super) fn new(len: Option<usize>, opt: Optimizer, grad: bool) -> Option<Self> {
        let slots = opt.state_slots();
        Some(TrainedArray {
            v: zeros(len, true)?,
            g: zeros(len, grad)?,
            s: [zeros(len, slots > 0)?, zeros(len, slots > 1)?],
        })
    }

    /// The values (`set` None) or state set `set`.
    pub(super) fn set(&mut self, set: Option<usize>) -> &mut Aligned<T> {
        match set {
            None => &mut self.v,
            Some(s) => &mut self.s[s],
        }
    }

    /// The rule's update of the values from the gradient (`iter`: Adam's t).
    pub(super) fn step(&mut self, opt: Optimizer, iter: u64) {
        let [s0, s1] = &mut self.s;
        apply(opt, &mut self.v, &self.g, s0, s1, iter);
    }

    /// g += λ·v (L2 weight decay; nothing for λ = 0).
    pub(super) fn decay(&mut self, decay: f64) {
        if decay > 0.0 {
            let lambda = T::lit(decay);
            for (g, &v) in self.g.iter_mut().zip(self.v.iter()) {
                *g = *g + lambda * v;
            }
        }
    }

    /// ½·λ·‖v‖².
    pub(super) fn penalty(&self, decay: f64) -> f64 {
        if decay > 0.0 {
            0.5 * decay * squares(&self.v)
        } else {
            0.0
        }
    }
}

/// `len` zeros if `used`, else none; None when `len` overflowed (None) or the memory
/// cannot be had.
fn zeros<T: Float>(len: Option<usize>, used: bool) -> Option<Aligned<T>> {
    Aligned::try_filled(if used { len? } else { 0 }, T::zero())
}

/// Σ v² in f64.
fn squares<T: Float>(w: &[T]) -> f64 {
    w.iter().fold(0.0_f64, |s, &v| s + (v * v).to_f64())
}

/// One shard of a trainer whose first hidden layer is split by units.
pub(super) trait Shard<T>: Send + std::fmt::Debug {
    /// What the shard writes in phase 1 and every shard reads in phase 2.
    type Partial: Send + Sync + Default + std::fmt::Debug;

    /// The shard's units of the first hidden layer.
    fn first_layer(&mut self) -> &mut FirstLayerShard<T>;

    /// Sizes every per-step buffer of the shard and of its partial sums `sh` for batches
    /// of n rows, so that steps allocate nothing; None when the memory cannot be had.
    fn reserve(&mut self, sh: &mut Self::Partial, n: usize) -> Option<()>;

    /// Phase 1, after z1: this shard's partial sums of the layer after the first (n rows).
    fn partial_sums(&mut self, sh: &mut Self::Partial, n: usize);

    /// Phase 2 from every shard's partial sums up to dL/dz1 in `first_layer().da1`, with every
    /// update but b1's and W1's; returns the batch's mean loss (targets: rows `batch`
    /// of t).
    fn backward(
        &mut self,
        partials: &[&Self::Partial],
        batch: &[usize],
        t: Targets<'_, T>,
        iter: u64,
    ) -> f64;
}

/// A trainer's shards (one per span of the first hidden layer), their partial sums,
/// and the step driver.
#[derive(Debug)]
pub(super) struct ShardedFirstLayer<T, P: Shard<T>> {
    pub(super) shards: Vec<P>,
    partials: Vec<P::Partial>,
    /// A dense x's rows of this batch and the next, compressed.
    scratch: [SparseRows<T>; 2],
}

impl<T: Float, P: Shard<T>> ShardedFirstLayer<T, P> {
    /// The shards of a first hidden layer of h units on inputs of width d: two (units
    /// 0..⌈h/2⌉ and the rest) unless one register block holds them all; `make` builds
    /// the shard of units lo..hi (None: out of memory, reported for `op`).
    pub(super) fn new(
        op: &'static str,
        d: usize,
        h: usize,
        make: impl Fn((usize, usize)) -> Option<P>,
    ) -> Result<Self> {
        let spans = if h > input_layer::BLOCK {
            vec![(0, h.div_ceil(2)), (h.div_ceil(2), h)]
        } else {
            vec![(0, h)]
        };
        let wp: usize = spans
            .iter()
            .map(|(lo, hi)| padded_width::<T>(hi - lo))
            .sum();
        let mut shards = Vec::with_capacity(spans.len());
        for &span in &spans {
            shards.push(make(span).ok_or_else(|| KernelError::Alloc {
                op,
                shape: format!("({d}, {wp})"),
                bytes: (d as u128) * (wp as u128) * std::mem::size_of::<T>() as u128,
            })?);
        }
        Ok(ShardedFirstLayer {
            shards,
            partials: spans.iter().map(|_| P::Partial::default()).collect(),
            scratch: Default::default(),
        })
    }

    /// Runs one step per row of `batches` (iters, batch) of row indices into (x, t) with
    /// the update rule `opt`, at learning rate `learning_rates[s]` in step s when given,
    /// two threads when the pool has them; returns the per-step mean losses.
    /// `first_iter` is Adam's step count before the first step. About every 50 ms it
    /// calls `interrupt` (on the calling thread) and stops with
    /// [`KernelError::Interrupted`] when that returns true; the steps done so far stay
    /// applied and their losses are in `losses` (one per step applied, whatever the
    /// outcome). x, t and the batch indices must be checked already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &mut self,
        op: &'static str,
        x: Rows<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        (opt, learning_rates): (Optimizer, Option<&[f64]>),
        first_iter: u64,
        interrupt: &(dyn Fn() -> bool + Sync),
        losses: &mut Vec<f64>,
    ) -> Result<()> {
        let total = batches.nrows();
        let n = batches.ncols();
        // The first hidden layer's activations of a batch: the largest per-step buffer
        // in nets whose first hidden layer is the widest.
        let wp: usize = self.shards.iter_mut().map(|s| s.first_layer().wp).sum();
        let alloc = || KernelError::Alloc {
            op,
            shape: format!("({n}, {wp})"),
            bytes: (n as u128) * (wp as u128) * std::mem::size_of::<T>() as u128,
        };
        for (shard, partial) in self.shards.iter_mut().zip(self.partials.iter_mut()) {
            shard.reserve(partial, n).ok_or_else(alloc)?;
        }
        losses.clear();
        losses
            .try_reserve_exact(total)
            .map_err(|_| KernelError::Alloc {
                op,
                shape: format!("({total},)"),
                bytes: (total as u128) * 8,
            })?;
        let mut s = 0;
        while s < total {
            // Steps for about 50 ms inside the pool, then a look at `interrupt` here.
            let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
            s = parallel::install(|threads| {
                let run = StepRun {
                    x,
                    t,
                    batches,
                    opt,
                    learning_rates,
                    first_iter,
                    two: threads > 1 && self.shards.len() == 2,
                };
                run.steps(self, s, until, losses)
            });
            if s < total && interrupt() {
                return Err(KernelError::Interrupted { op });
            }
        }
        Ok(())
    }
}

/// What every step of a run shares.
struct StepRun<'x, 't, 'b, T> {
    x: Rows<'x, T>,
    t: Targets<'t, T>,
    batches: ArrayView2<'b, i64>,
    /// The update rule, and the learning rate of each step when it varies.
    opt: Optimizer,
    learning_rates: Option<&'b [f64]>,
    first_iter: u64,
    /// Two threads, one per shard.
    two: bool,
}

impl<T: Float> StepRun<'_, '_, '_, T> {
    /// Steps from s until the batches run out or `until` passes (at least one step);
    /// pushes the mean losses and returns the next step.
    fn steps<P: Shard<T>>(
        &self,
        sharded: &mut ShardedFirstLayer<T, P>,
        mut s: usize,
        until: std::time::Instant,
        losses: &mut Vec<f64>,
    ) -> usize {
        let StepRun {
            x,
            t,
            batches,
            opt,
            learning_rates,
            first_iter,
            two,
        } = *self;
        let ShardedFirstLayer {
            shards,
            partials,
            scratch,
        } = sharded;
        let (total, n, count) = (batches.nrows(), batches.ncols(), shards.len());
        let mut rows = [Vec::with_capacity(n), Vec::with_capacity(n)];
        let batch_rows = |b: usize| batches.row(b).into_iter().map(|&i| i as usize);
        // This batch's rows, then its pre-activations.
        gather(x, batch_rows(s), &mut scratch[s % 2], &mut rows[s % 2]);
        let first = (batch_source(x, scratch, s % 2), &rows[s % 2][..]);
        each(two, shards, &mut [(), ()], |_, shard, _| {
            shard.first_layer().forward(first, &[])
        });
        let mut batch = Vec::with_capacity(n);
        loop {
            let go_on = s + 1 < total && std::time::Instant::now() < until;
            let (cur, nxt) = (s % 2, (s + 1) % 2);
            if go_on {
                gather(x, batch_rows(s + 1), &mut scratch[nxt], &mut rows[nxt]);
            }
            batch.clear();
            batch.extend(batch_rows(s));
            let this = (batch_source(x, scratch, cur), &rows[cur][..]);
            let next = go_on.then(|| (batch_source(x, scratch, nxt), &rows[nxt][..]));
            // Rows of the batch after next (x compressed once): where they lie starts
            // loading in phase 1, their entries in phase 2.
            let after: &[i64] = match x {
                Rows::Sparse(_) if s + 2 < total => batches.row(s + 2).to_slice().unwrap_or(&[]),
                _ => &[],
            };
            // Phase 1: activations and partial sums of the layer after the first.
            each(two, shards, partials, |_, shard, sh| {
                if let Some((sp, _)) = next {
                    for &r in after {
                        with_layout!(sp, |src| src.prefetch_span(r as usize));
                    }
                }
                shard.first_layer().activate(n);
                shard.partial_sums(sh, n);
            });
            // Phase 2: the rest of the step, then the next batch's pre-activations.
            let both: [&P::Partial; 2] = [&partials[0], partials.get(1).unwrap_or(&partials[0])];
            let iter = first_iter + s as u64 + 1;
            let opt = match learning_rates.and_then(|l| l.get(s)) {
                Some(&lr) => opt.with_lr(lr),
                None => opt,
            };
            let loss = each(two, shards, &mut [(), ()], |_, shard, _| {
                shard.first_layer().opt = opt;
                let loss = shard.backward(&both[..count], &batch, t, iter);
                let first = shard.first_layer();
                first.update(this, iter);
                if let Some(next) = next {
                    first.forward(next, after);
                }
                loss
            });
            losses.push(loss);
            s += 1;
            if !go_on {
                return s;
            }
        }
    }
}

/// The compressed rows that a batch's row indices refer to: x's own, or the slot's
/// copy of a dense x's rows.
fn batch_source<'s, 'x: 's, T>(
    x: Rows<'x, T>,
    scratch: &'s [SparseRows<T>; 2],
    slot: usize,
) -> &'s SparseRows<T> {
    match x {
        Rows::Sparse(sp) => sp,
        Rows::Dense(_) => &scratch[slot],
    }
}

/// f(i, xs[i], ys[i]) for each shard i, on two threads when `two` (and there are two);
/// returns shard 0's result.
fn each<X: Send, Y: Send, R: Send + Default>(
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
