//! The fused trainer of a fully connected net: the two-layer net and the book's
//! MultiLayerNet (Affine → ReLU/Sigmoid per hidden layer → Affine → softmax with
//! cross-entropy, optional L2 weight decay) without dropout or batch norm.

use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2, ShapeBuilder};

use super::shard::{FirstLayerShard, Shard, ShardedFirstLayer, TrainedArray};
use crate::error::{fmt_shape, KernelError, Result};
use crate::kernels::activation::{activate, activation_backward, Activation};
use crate::kernels::aligned::Aligned;
use crate::kernels::loss::softmax_with_loss_rows;
use crate::kernels::math::{add_slice, add_to_rows};
use crate::kernels::matmul::gemm_into;
use crate::kernels::net::{check_finite_w1, check_input_width};
use crate::kernels::optimizer::Optimizer;
use crate::kernels::sparse::Rows;
use crate::kernels::{Float, Targets};

/// One layer's weights (fan_in, fan_out) and bias (fan_out), or their optimizer state,
/// borrowed mutably. Must be C-contiguous.
#[derive(Debug)]
pub struct LayerMut<'a, T> {
    pub w: ArrayViewMut2<'a, T>,
    pub b: ArrayViewMut1<'a, T>,
}

impl<T: Float> LayerMut<'_, T> {
    fn slices(&mut self, op: &'static str, what: &str, l: usize) -> Result<[&mut [T]; 2]> {
        let not_c =
            |name: &str| KernelError::value(op, format!("{what}{name}{l} must be C-contiguous"));
        Ok([
            self.w.as_slice_mut().ok_or_else(|| not_c("W"))?,
            self.b.as_slice_mut().ok_or_else(|| not_c("b"))?,
        ])
    }
}

/// Per layer: [weights, bias] as flat slices.
type LayerSlices<'s, T> = Vec<[&'s mut [T]; 2]>;

/// The fused trainer of a net of widths `sizes` = [d, h1, …, k] (at least one hidden
/// layer): each [`FusedTrainer::run`] call does, per batch, the gather, forward,
/// backprop and optimizer update in place, with buffers reused across steps and runs.
///
/// The first hidden layer is split into two shards (`fused/shard.rs`) that two threads
/// own for a whole run: each keeps its units' columns of W1, their b1 and their rows of
/// W2 (with optimizer state) and runs the input layer for them on the batch's non-zero
/// inputs. The threads meet twice per step: to add up the second layer's
/// pre-activations (z1·W2 = Σ_p z1_p·W2_p over the shards p, in shard order), and at
/// the end of the step. Everything after that — b2, the later layers, the softmax —
/// each shard computes in full from the same numbers (dense products through the
/// GEMM), so each holds the same copy of those layers, and the results do not depend
/// on the number of threads.
#[derive(Debug)]
pub struct FusedTrainer<T: Float> {
    sizes: Vec<usize>,
    optimizer: Optimizer,
    sharded: ShardedFirstLayer<T, NetShard<T>>,
}

/// What a shard writes in phase 1 and every shard reads in phase 2.
#[derive(Debug, Default)]
struct PartialSums<T> {
    /// z1_p·W2_p: (n, sizes[2]).
    a2: Aligned<T>,
    /// ½·λ·(‖W1_p‖² + ‖W2_p‖²) at the start of the step.
    penalty: f64,
}

/// One layer's weights and bias.
#[derive(Debug, Clone, Default)]
struct DenseLayer<T> {
    w: TrainedArray<T>,
    b: TrainedArray<T>,
}

/// One shard: its units of the first hidden layer, their rows of W2, and its own copy
/// of everything after.
#[derive(Debug)]
struct NetShard<T> {
    first: FirstLayerShard<T>,
    sizes: Vec<usize>,
    /// W2[lo..hi, :] (hi − lo, sizes[2]).
    w2: TrainedArray<T>,
    /// Per layer l ≥ 1: its bias, and for l ≥ 2 its weights (empty for l = 1).
    later: Vec<DenseLayer<T>>,
    /// Per later hidden layer l (1 ≤ l < layers − 1): pre-activations, activations,
    /// gradient (n × sizes[l + 1]); index 0 unused.
    a: Vec<Aligned<T>>,
    z: Vec<Aligned<T>>,
    dz: Vec<Aligned<T>>,
    /// Logits, then dL/dlogits (n × k).
    y: Aligned<T>,
}

/// c (n, m) ← a·b or c + a·b, with a's rows `stride` apart.
fn product<T: Float>(
    c: &mut [T],
    a: &[T],
    b: &[T],
    (n, k, m): (usize, usize, usize),
    stride: usize,
    accumulate: bool,
) {
    let views = (
        ArrayView2::from_shape((n, k).strides((stride, 1)), a),
        ArrayView2::from_shape((k, m), b),
        ArrayViewMut2::from_shape((n, m), c),
    );
    if let (Ok(a), Ok(b), Ok(c)) = views {
        gemm_into(a, b, c, accumulate);
    }
}

/// g (k, m) ← aᵀ·d for a (n, k) with rows `stride` apart and d (n, m).
fn product_tn<T: Float>(
    g: &mut [T],
    a: &[T],
    d: &[T],
    (n, k, m): (usize, usize, usize),
    stride: usize,
) {
    let views = (
        ArrayView2::from_shape((n, k).strides((stride, 1)), a),
        ArrayView2::from_shape((n, m), d),
        ArrayViewMut2::from_shape((k, m), g),
    );
    if let (Ok(a), Ok(d), Ok(g)) = views {
        gemm_into(a.t(), d, g, false);
    }
}

/// c (n, k) with rows `stride` apart ← d·wᵀ for d (n, m) and w (k, m).
fn product_nt<T: Float>(
    c: &mut [T],
    d: &[T],
    w: &[T],
    (n, k, m): (usize, usize, usize),
    stride: usize,
) {
    let views = (
        ArrayView2::from_shape((n, m), d),
        ArrayView2::from_shape((k, m), w),
        ArrayViewMut2::from_shape((n, k).strides((stride, 1)), c),
    );
    if let (Ok(d), Ok(w), Ok(c)) = views {
        gemm_into(d, w.t(), c, false);
    }
}

impl<T: Float> NetShard<T> {
    /// The shard of units lo..hi of a net of `sizes`; None when the memory cannot be had.
    fn new(
        sizes: &[usize],
        span: (usize, usize),
        act: Activation,
        opt: Optimizer,
        decay: f64,
    ) -> Option<Self> {
        let first = FirstLayerShard::new(sizes[0], span, act, opt, decay)?;
        let layers = sizes.len() - 1;
        let later = (0..layers)
            .map(|l| {
                let w = if l >= 2 {
                    sizes[l].checked_mul(sizes[l + 1])
                } else {
                    Some(0)
                };
                let b = if l >= 1 { sizes[l + 1] } else { 0 };
                Some(DenseLayer {
                    w: TrainedArray::new(w, opt, true)?,
                    b: TrainedArray::new(Some(b), opt, true)?,
                })
            })
            .collect::<Option<_>>()?;
        let hidden = || vec![Aligned::default(); layers - 1];
        Some(NetShard {
            w2: TrainedArray::new(first.width().checked_mul(sizes[2]), opt, true)?,
            first,
            sizes: sizes.to_vec(),
            later,
            a: hidden(),
            z: hidden(),
            dz: hidden(),
            y: Aligned::default(),
        })
    }

    /// Copies the run's parameters (`set` None) or state set `set` into this shard
    /// (`to_shard`), or back (`write`: whether this shard writes the layers every shard
    /// holds).
    fn copy(
        &mut self,
        set: Option<usize>,
        layers: &mut [[&mut [T]; 2]],
        to_shard: bool,
        write: bool,
    ) {
        let (lo, hi) = (self.first.lo, self.first.hi);
        {
            let [w1, b1] = &mut layers[0];
            self.first.copy(set, w1, b1, to_shard);
        }
        let w2 = self.w2.set(set);
        let s2 = self.sizes[2];
        let rows = &mut layers[1][0][lo * s2..hi * s2];
        if to_shard {
            w2.copy_from_slice(rows);
        } else {
            rows.copy_from_slice(w2);
        }
        for (l, (layer, own)) in layers
            .iter_mut()
            .zip(self.later.iter_mut())
            .enumerate()
            .skip(1)
        {
            let [lw, lb] = layer;
            let (ow, ob) = (own.w.set(set), own.b.set(set));
            if to_shard {
                ob.copy_from_slice(lb);
                if l >= 2 {
                    ow.copy_from_slice(lw);
                }
            } else if write {
                lb.copy_from_slice(ob);
                if l >= 2 {
                    lw.copy_from_slice(ow);
                }
            }
        }
    }

    /// Copies the run's parameters and state sets into this shard (`to_shard`), or back.
    fn exchange(
        &mut self,
        p: &mut LayerSlices<'_, T>,
        st: &mut [LayerSlices<'_, T>],
        to_shard: bool,
        write: bool,
    ) {
        self.copy(None, p, to_shard, write);
        for (s, set) in st.iter_mut().enumerate() {
            self.copy(Some(s), set, to_shard, write);
        }
    }
}

impl<T: Float> Shard<T> for NetShard<T> {
    type Partial = PartialSums<T>;

    fn first_layer(&mut self) -> &mut FirstLayerShard<T> {
        &mut self.first
    }

    /// This shard's partial sums of the second layer's pre-activations z1_p·W2_p (n,
    /// sizes[2]) and of the weight penalty.
    fn reserve(&mut self, sh: &mut PartialSums<T>, n: usize) -> Option<()> {
        let (sizes, wp) = (&self.sizes, self.first.wp);
        let row = |w: usize| n.checked_mul(w);
        let zero = T::zero();
        for buf in [&mut self.first.a1, &mut self.first.z1, &mut self.first.da1] {
            buf.try_resize(row(wp)?, zero)?;
        }
        sh.a2.try_resize(row(sizes[2])?, zero)?;
        self.y.try_resize(row(sizes[sizes.len() - 1])?, zero)?;
        for l in 1..sizes.len() - 2 {
            let len = row(sizes[l + 1])?;
            self.a[l].try_resize(len, zero)?;
            self.z[l].try_resize(len, zero)?;
            self.dz[l].try_resize(len, zero)?;
        }
        Some(())
    }

    fn partial_sums(&mut self, sh: &mut PartialSums<T>, n: usize) {
        let (u, s2) = (&self.first, self.sizes[2]);
        sh.a2.resize(n * s2, T::zero());
        product(
            &mut sh.a2,
            &u.z1,
            &self.w2.v,
            (n, u.width(), s2),
            u.wp,
            false,
        );
        sh.penalty = u.penalty() + self.w2.penalty(u.decay);
    }

    /// The layers after the first (in full) from every shard's partial sums, the loss
    /// (cross-entropy plus the weight penalty), their gradients and updates, dW2_p and
    /// dz1_p.
    fn backward(
        &mut self,
        partials: &[&PartialSums<T>],
        batch: &[usize],
        t: Targets<'_, T>,
        iter: u64,
    ) -> f64 {
        let (act, opt, decay) = (self.first.act, self.first.opt, self.first.decay);
        let sizes = &self.sizes[..];
        let (n, layers, k) = (batch.len(), sizes.len() - 1, sizes[sizes.len() - 1]);
        let NetShard {
            first,
            w2,
            a,
            z,
            dz,
            y,
            later,
            ..
        } = self;
        let (wp, w) = (first.wp, first.width());
        y.resize(n * k, T::zero());
        for l in 1..layers - 1 {
            let len = n * sizes[l + 1];
            a[l].resize(len, T::zero());
            z[l].resize(len, T::zero());
            dz[l].resize(len, T::zero());
        }
        // Layer 1's output: Σ_p z1_p·W2_p (in shard order) + b2.
        {
            let out: &mut [T] = if layers == 2 { y } else { &mut a[1] };
            out.fill(T::zero());
            for sh in partials {
                add_slice(out, &sh.a2);
            }
            add_to_rows(out, &later[1].b.v);
        }
        // The later layers.
        for l in 2..layers {
            let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
            activate(act, &a[l - 1], &mut z[l - 1]);
            let out: &mut [T] = if l + 1 == layers { y } else { &mut a[l] };
            for row in out.chunks_exact_mut(fan_out) {
                row.copy_from_slice(&later[l].b.v);
            }
            let dims = (n, fan_in, fan_out);
            product(out, &z[l - 1], &later[l].w.v, dims, fan_in, true);
        }
        let penalty = partials.iter().map(|sh| sh.penalty).sum::<f64>()
            + later
                .iter()
                .skip(2)
                .map(|d| d.w.penalty(decay))
                .sum::<f64>();
        let loss = softmax_with_loss_rows(y, k, batch, t, &mut later[layers - 1].b.g);
        // Backward through the later layers: dW_l = z_(l-1)ᵀ·dout (+ λ·W_l),
        // dz_(l-1) = (dout·W_lᵀ) ⊙ act'(a_(l-1)), db_(l-1) = Σ dz_(l-1).
        for l in (2..layers).rev() {
            let dims = (n, sizes[l], sizes[l + 1]);
            let (below, above) = dz.split_at_mut(l);
            let dout: &[T] = if l + 1 == layers { y } else { &above[0] };
            let (lower, upper) = later.split_at_mut(l);
            let layer = &mut upper[0];
            product_tn(&mut layer.w.g, &z[l - 1], dout, dims, dims.1);
            layer.w.decay(decay);
            product_nt(&mut below[l - 1], dout, &layer.w.v, dims, dims.1);
            activation_backward(
                act,
                &mut below[l - 1],
                &a[l - 1],
                &z[l - 1],
                &mut lower[l - 1].b.g,
            );
        }
        // This shard's W2 rows and dL/dz1 of its units.
        let dims = (n, w, sizes[2]);
        let dout: &[T] = if layers == 2 { y } else { &dz[1] };
        product_tn(&mut w2.g, &first.z1, dout, dims, wp);
        w2.decay(decay);
        first.da1.resize(n * wp, T::zero());
        product_nt(&mut first.da1, dout, &w2.v, dims, wp);
        // Updates of every layer but the first.
        for (l, layer) in later.iter_mut().enumerate().skip(1) {
            if l >= 2 {
                layer.w.step(opt, iter);
            }
            layer.b.step(opt, iter);
        }
        w2.step(opt, iter);
        loss / n as f64 + penalty
    }
}

impl<T: Float> FusedTrainer<T> {
    /// `decay` is the weight decay λ (0 for none). Errors: fewer than three sizes or a
    /// zero size, bad optimizer rates, λ negative or not finite, a net too large for
    /// memory.
    pub fn new(
        sizes: &[usize],
        activation: Activation,
        optimizer: Optimizer,
        decay: f64,
    ) -> Result<Self> {
        const OP: &str = "FusedTrainer";
        if sizes.len() < 3 || sizes.contains(&0) {
            return Err(KernelError::shape(
                OP,
                format!(
                    "sizes must be [input, hidden..., output] with at least one hidden layer, \
                     all positive; got {sizes:?}"
                ),
            ));
        }
        optimizer.check(OP)?;
        if !(decay.is_finite() && decay >= 0.0) {
            return Err(KernelError::value(
                OP,
                format!("weight_decay must be >= 0, got {decay}"),
            ));
        }
        let sharded = ShardedFirstLayer::new(OP, sizes[0], sizes[1], |span| {
            NetShard::new(sizes, span, activation, optimizer, decay)
        })?;
        Ok(FusedTrainer {
            sizes: sizes.to_vec(),
            optimizer,
            sharded,
        })
    }

    /// The update rule.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Replaces the update rule's hyperparameters (a schedule changing the learning
    /// rate between runs, say). Errors: another rule (its state would not fit), or
    /// invalid rates.
    pub fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        self.optimizer = self.optimizer.replaced_by("FusedTrainer", optimizer)?;
        Ok(())
    }

    /// Number of weight layers (hidden layers + 1).
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    fn check<'p>(
        &self,
        op: &'static str,
        params: &[LayerMut<'p, T>],
        state: &[Vec<LayerMut<'p, T>>],
        x: [usize; 2],
        t: &Targets<'_, T>,
    ) -> Result<()> {
        let layers = self.layers();
        let sets = std::iter::once(("", params)).chain(state.iter().map(|s| ("state ", &s[..])));
        for (what, set) in sets {
            if set.len() != layers {
                return Err(KernelError::value(
                    op,
                    format!("{what}params must hold {layers} layers, got {}", set.len()),
                ));
            }
            for (l, layer) in set.iter().enumerate() {
                let (fan_in, fan_out) = (self.sizes[l], self.sizes[l + 1]);
                for (name, got, want) in [
                    ("W", layer.w.shape(), &[fan_in, fan_out][..]),
                    ("b", layer.b.shape(), &[fan_out][..]),
                ] {
                    if got != want {
                        return Err(KernelError::shape(
                            op,
                            format!(
                                "{what}{name}{} has shape {} but the network needs {}",
                                l + 1,
                                fmt_shape(got),
                                fmt_shape(want)
                            ),
                        ));
                    }
                }
            }
        }
        self.optimizer.check_state_sets(op, state.len())?;
        check_input_width(op, x, [self.sizes[0], self.sizes[1]])?;
        t.check(op, x[0], self.sizes[self.sizes.len() - 1])
    }

    /// Runs one step per row of `batches` (iters, batch) of row indices into (x, t),
    /// updating `params` and `state` (one list of layers per state slot) in place;
    /// returns the per-step mean losses (cross-entropy plus the weight penalty), each
    /// before its update. Step s uses the learning rate `learning_rates[s]` when given
    /// (one per step, each positive), else the optimizer's. `first_iter` is Adam's step
    /// count before the first step. About every 50 ms it calls `interrupt` and stops
    /// with [`KernelError::Interrupted`] when that returns true; the steps done so far
    /// stay applied ([`FusedTrainer::run_into`] tells how many).
    #[allow(clippy::too_many_arguments)]
    pub fn run<'p>(
        &mut self,
        params: &mut [LayerMut<'p, T>],
        state: &mut [Vec<LayerMut<'p, T>>],
        x: Rows<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        learning_rates: Option<&[f64]>,
        first_iter: u64,
        interrupt: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f64>> {
        let mut losses = Vec::new();
        let schedule = (learning_rates, first_iter);
        self.run_into(
            params,
            state,
            x,
            t,
            batches,
            schedule,
            interrupt,
            &mut losses,
        )?;
        Ok(losses)
    }

    /// [`FusedTrainer::run`] that leaves the loss of every step applied in `losses`,
    /// also when it stops early (interrupted: exactly the steps applied, which the
    /// caller counts).
    #[allow(clippy::too_many_arguments)]
    pub fn run_into<'p>(
        &mut self,
        params: &mut [LayerMut<'p, T>],
        state: &mut [Vec<LayerMut<'p, T>>],
        x: Rows<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        (learning_rates, first_iter): (Option<&[f64]>, u64),
        interrupt: &(dyn Fn() -> bool + Sync),
        losses: &mut Vec<f64>,
    ) -> Result<()> {
        const OP: &str = "FusedTrainer.run";
        losses.clear();
        self.check(OP, params, state, [x.nrows(), x.ncols()], &t)?;
        check_batches(OP, batches, x.nrows())?;
        if let Some(first) = params.first() {
            check_finite_w1(OP, first.w.view())?;
        }
        if let Some(lrs) = learning_rates {
            check_learning_rates(OP, lrs, batches.nrows())?;
        }
        let mut p: LayerSlices<'_, T> = params
            .iter_mut()
            .enumerate()
            .map(|(l, layer)| layer.slices(OP, "", l + 1))
            .collect::<Result<_>>()?;
        let mut st: Vec<LayerSlices<'_, T>> = Vec::with_capacity(state.len());
        for set in state.iter_mut() {
            st.push(
                set.iter_mut()
                    .enumerate()
                    .map(|(l, layer)| layer.slices(OP, "state ", l + 1))
                    .collect::<Result<_>>()?,
            );
        }
        for shard in &mut self.sharded.shards {
            shard.exchange(&mut p, &mut st, true, false);
        }
        let schedule = (self.optimizer, learning_rates);
        let done = self
            .sharded
            .run(OP, x, t, batches, schedule, first_iter, interrupt, losses);
        // Every shard writes back its units; the first also the layers they all hold.
        for (i, shard) in self.sharded.shards.iter_mut().enumerate() {
            shard.exchange(&mut p, &mut st, false, i == 0);
        }
        done
    }
}

/// Errors unless there is one learning rate per step, each positive and finite.
pub(crate) fn check_learning_rates(op: &'static str, lrs: &[f64], steps: usize) -> Result<()> {
    if lrs.len() != steps {
        return Err(KernelError::shape(
            op,
            format!(
                "learning_rates has {} entries for {steps} steps; need one per step",
                lrs.len()
            ),
        ));
    }
    match lrs.iter().position(|lr| !(lr.is_finite() && *lr > 0.0)) {
        Some(s) => Err(KernelError::value(
            op,
            format!(
                "learning_rates[{s}] must be a positive number, got {}",
                lrs[s]
            ),
        )),
        None => Ok(()),
    }
}

/// Errors unless `batches` (iters, batch) holds at least one column and only row
/// indices in [0, rows).
pub(crate) fn check_batches(
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
        let opt = Optimizer::Sgd { lr: 1.0 };
        let mut tr = FusedTrainer::new(&[2, 1, 2], Activation::Sigmoid, opt, 0.0)?;
        let mut layers = [
            LayerMut {
                w: w1.view_mut(),
                b: b1.view_mut(),
            },
            LayerMut {
                w: w2.view_mut(),
                b: b2.view_mut(),
            },
        ];
        let batches = arr2(&[[0_i64]]);
        let loss = tr.run(
            &mut layers,
            &mut [],
            Rows::Dense(x.view()),
            Targets::Labels(t.view()),
            batches.view(),
            None,
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
