//! Fused training of the fully connected net with several hidden layers: the book's
//! MultiLayerNet (Affine → ReLU/Sigmoid per hidden layer → Affine → softmax with
//! cross-entropy, optional L2 weight decay) without dropout or batch norm.
//!
//! One call runs many steps, each the batch gather, forward, backprop and optimizer
//! update in place, with the buffers reused. The first layer works on the non-zero
//! inputs only (rows compressed once, [`super::sparse`]) and is split between two
//! threads by hidden units (`split`); the layers after it are dense
//! products through the GEMM, computed in full by both threads from the same numbers.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ShapeBuilder};

use super::aligned::Aligned;
use super::matmul::gemm_into;
use super::numgrad::Activation;
use super::sparse::{gather, with_source, Rows};
use super::split::{Param, Parts, SplitPart, Units};
use super::train::{
    act_grad, activate, argmax_rows, check_batches, check_width, forward_rows, hit_rate, pad_rows,
    padded, predict_blocks, softmax_cross_entropy_grad, Lanes, Optimizer, EVAL_ROWS,
};
use super::{Float, Targets};
use crate::error::{fmt_shape, KernelError, Result};

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
type Slices<'s, T> = Vec<[&'s mut [T]; 2]>;

/// The fused trainer of a net of widths `sizes` = [d, h1, …, k] (at least one hidden
/// layer).
///
/// As the two-layer trainer ([`super::two_layer`]), it splits the first hidden layer
/// into two parts that two threads own for a whole run: each keeps its units' columns
/// of W1, their b1 and their rows of W2 (with optimizer state) and runs the input layer
/// for them. The threads meet twice per step: to add up the second layer's
/// pre-activations (z1·W2 = Σ_parts z1_p·W2_p, in part order), and at the end of the
/// step. Everything after that — b2, the later layers, the softmax — each part computes
/// in full from the same numbers (dense products through the GEMM), so each holds the
/// same copy of those layers, and the results do not depend on the number of threads.
#[derive(Debug)]
pub struct MultiTrainer<T: Float> {
    sizes: Vec<usize>,
    optimizer: Optimizer,
    split: Parts<T, MultiPart<T>>,
}

/// What a part writes in phase 1 and every part reads in phase 2.
#[derive(Debug, Default)]
struct MultiShared<T> {
    /// z1_p·W2_p: (n, sizes[2]).
    a2: Aligned<T>,
    /// ½·λ·(‖W1_p‖² + ‖W2_p‖²) at the start of the step.
    penalty: f64,
}

/// One layer's weights and bias.
#[derive(Debug, Clone, Default)]
struct Dense<T> {
    w: Param<T>,
    b: Param<T>,
}

/// One part: its units of the first hidden layer, their rows of W2, and its own copy
/// of everything after.
#[derive(Debug)]
struct MultiPart<T> {
    units: Units<T>,
    sizes: Vec<usize>,
    /// W2[lo..hi, :] (hi − lo, sizes[2]).
    w2: Param<T>,
    /// Per layer l ≥ 1: its bias, and for l ≥ 2 its weights (empty for l = 1).
    rest: Vec<Dense<T>>,
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

impl<T: Float> MultiPart<T> {
    /// The part of units lo..hi of a net of `sizes`; None when the memory cannot be had.
    fn new(
        sizes: &[usize],
        span: (usize, usize),
        act: Activation,
        opt: Optimizer,
        decay: f64,
    ) -> Option<Self> {
        let units = Units::new(sizes[0], span, act, opt, decay)?;
        let layers = sizes.len() - 1;
        let rest = (0..layers)
            .map(|l| {
                let w = if l >= 2 {
                    sizes[l].checked_mul(sizes[l + 1])
                } else {
                    Some(0)
                };
                let b = if l >= 1 { sizes[l + 1] } else { 0 };
                Some(Dense {
                    w: Param::new(w, opt, true)?,
                    b: Param::new(Some(b), opt, true)?,
                })
            })
            .collect::<Option<_>>()?;
        let hidden = || vec![Aligned::default(); layers - 1];
        Some(MultiPart {
            w2: Param::new(units.width().checked_mul(sizes[2]), opt, true)?,
            units,
            sizes: sizes.to_vec(),
            rest,
            a: hidden(),
            z: hidden(),
            dz: hidden(),
            y: Aligned::default(),
        })
    }

    /// Copies the run's parameters (`set` None) or state set `set` into this part
    /// (`to_part`), or back (`write`: whether this part writes the layers every part
    /// holds).
    fn copy(
        &mut self,
        set: Option<usize>,
        layers: &mut [[&mut [T]; 2]],
        to_part: bool,
        write: bool,
    ) {
        let (lo, hi) = (self.units.lo, self.units.hi);
        {
            let [w1, b1] = &mut layers[0];
            self.units.copy(set, w1, b1, to_part);
        }
        let w2 = self.w2.set(set);
        let s2 = self.sizes[2];
        let rows = &mut layers[1][0][lo * s2..hi * s2];
        if to_part {
            w2.copy_from_slice(rows);
        } else {
            rows.copy_from_slice(w2);
        }
        for (l, (layer, own)) in layers
            .iter_mut()
            .zip(self.rest.iter_mut())
            .enumerate()
            .skip(1)
        {
            let [lw, lb] = layer;
            let (ow, ob) = (own.w.set(set), own.b.set(set));
            if to_part {
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

    /// Copies the run's parameters and state sets into this part (`to_part`), or back.
    fn exchange(
        &mut self,
        p: &mut Slices<'_, T>,
        st: &mut [Slices<'_, T>],
        to_part: bool,
        write: bool,
    ) {
        self.copy(None, p, to_part, write);
        for (s, set) in st.iter_mut().enumerate() {
            self.copy(Some(s), set, to_part, write);
        }
    }
}

impl<T: Float> SplitPart<T> for MultiPart<T> {
    type Shared = MultiShared<T>;

    fn units(&mut self) -> &mut Units<T> {
        &mut self.units
    }

    /// This part's share of the second layer's pre-activations z1_p·W2_p (n,
    /// sizes[2]) and of the weight penalty.
    fn share(&mut self, sh: &mut MultiShared<T>, n: usize) {
        let (u, s2) = (&self.units, self.sizes[2]);
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

    /// The layers after the first (in full) from every part's share, the loss
    /// (cross-entropy plus the weight penalty), their gradients and updates, dW2_p and
    /// dz1_p.
    fn backward(
        &mut self,
        shares: &[&MultiShared<T>],
        batch: &[usize],
        t: Targets<'_, T>,
        iter: u64,
    ) -> f64 {
        let (act, opt, decay) = (self.units.act, self.units.opt, self.units.decay);
        let sizes = &self.sizes[..];
        let (n, layers, k) = (batch.len(), sizes.len() - 1, sizes[sizes.len() - 1]);
        let MultiPart {
            units,
            w2,
            a,
            z,
            dz,
            y,
            rest,
            ..
        } = self;
        let (wp, w) = (units.wp, units.width());
        y.resize(n * k, T::zero());
        for l in 1..layers - 1 {
            let len = n * sizes[l + 1];
            a[l].resize(len, T::zero());
            z[l].resize(len, T::zero());
            dz[l].resize(len, T::zero());
        }
        // Layer 1's output: Σ_p z1_p·W2_p (in part order) + b2.
        {
            let out: &mut [T] = if layers == 2 { y } else { &mut a[1] };
            let s2 = sizes[2];
            for (q, row) in out.chunks_exact_mut(s2).enumerate() {
                for (c, (o, &b)) in row.iter_mut().zip(rest[1].b.v.iter()).enumerate() {
                    let sum = shares.iter().fold(T::zero(), |s, sh| s + sh.a2[q * s2 + c]);
                    *o = sum + b;
                }
            }
        }
        // The later layers.
        for l in 2..layers {
            let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
            activate(&a[l - 1], &mut z[l - 1], act);
            let out: &mut [T] = if l + 1 == layers { y } else { &mut a[l] };
            for row in out.chunks_exact_mut(fan_out) {
                row.copy_from_slice(&rest[l].b.v);
            }
            let dims = (n, fan_in, fan_out);
            product(out, &z[l - 1], &rest[l].w.v, dims, fan_in, true);
        }
        let penalty = shares.iter().map(|sh| sh.penalty).sum::<f64>()
            + rest.iter().skip(2).map(|d| d.w.penalty(decay)).sum::<f64>();
        let loss = softmax_cross_entropy_grad(y, k, batch, t, &mut rest[layers - 1].b.g);
        // Backward through the later layers: dW_l = z_(l-1)ᵀ·dout (+ λ·W_l),
        // dz_(l-1) = (dout·W_lᵀ) ⊙ act'(a_(l-1)), db_(l-1) = Σ dz_(l-1).
        for l in (2..layers).rev() {
            let dims = (n, sizes[l], sizes[l + 1]);
            let (below, above) = dz.split_at_mut(l);
            let dout: &[T] = if l + 1 == layers { y } else { &above[0] };
            let (lower, upper) = rest.split_at_mut(l);
            let layer = &mut upper[0];
            product_tn(&mut layer.w.g, &z[l - 1], dout, dims, dims.1);
            layer.w.decay(decay);
            product_nt(&mut below[l - 1], dout, &layer.w.v, dims, dims.1);
            act_grad(
                &mut below[l - 1],
                &a[l - 1],
                &z[l - 1],
                &mut lower[l - 1].b.g,
                act,
            );
        }
        // This part's W2 rows and dL/dz1 of its units.
        let dims = (n, w, sizes[2]);
        let dout: &[T] = if layers == 2 { y } else { &dz[1] };
        product_tn(&mut w2.g, &units.z1, dout, dims, wp);
        w2.decay(decay);
        units.da1.resize(n * wp, T::zero());
        product_nt(&mut units.da1, dout, &w2.v, dims, wp);
        // Updates of every layer but the first.
        for (l, layer) in rest.iter_mut().enumerate().skip(1) {
            if l >= 2 {
                layer.w.step(opt, iter);
            }
            layer.b.step(opt, iter);
        }
        w2.step(opt, iter);
        loss / n as f64 + penalty
    }
}

impl<T: Lanes> MultiTrainer<T> {
    /// `decay` is the weight decay λ (0 for none). Errors: fewer than three sizes or a
    /// zero size, bad optimizer rates, λ negative or not finite, a net too large for
    /// memory.
    pub fn new(
        sizes: &[usize],
        activation: Activation,
        optimizer: Optimizer,
        decay: f64,
    ) -> Result<Self> {
        const OP: &str = "MultiLayerTrainer";
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
        let split = Parts::new(OP, sizes[0], sizes[1], |span| {
            MultiPart::new(sizes, span, activation, optimizer, decay)
        })?;
        Ok(MultiTrainer {
            sizes: sizes.to_vec(),
            optimizer,
            split,
        })
    }

    /// The update rule.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
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
        check_width(op, x, [self.sizes[0], self.sizes[1]])?;
        t.check(op, x[0], self.sizes[self.sizes.len() - 1])
    }

    /// Runs one step per row of `batches` (iters, batch) of row indices into (x, t),
    /// updating `params` and `state` (one list of layers per state slot) in place;
    /// returns the per-step mean losses (cross-entropy plus the weight penalty), each
    /// before its update. `first_iter` is Adam's step count before the first step.
    /// About every 50 ms it calls `interrupt` and stops with
    /// [`KernelError::Interrupted`] when that returns true; the steps done so far stay
    /// applied.
    #[allow(clippy::too_many_arguments)]
    pub fn run<'p>(
        &mut self,
        params: &mut [LayerMut<'p, T>],
        state: &mut [Vec<LayerMut<'p, T>>],
        x: Rows<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        first_iter: u64,
        interrupt: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f64>> {
        const OP: &str = "MultiLayerTrainer.run";
        self.check(OP, params, state, [x.nrows(), x.ncols()], &t)?;
        check_batches(OP, batches, x.nrows())?;
        let mut p: Slices<'_, T> = params
            .iter_mut()
            .enumerate()
            .map(|(l, layer)| layer.slices(OP, "", l + 1))
            .collect::<Result<_>>()?;
        let mut st: Vec<Slices<'_, T>> = Vec::with_capacity(state.len());
        for set in state.iter_mut() {
            st.push(
                set.iter_mut()
                    .enumerate()
                    .map(|(l, layer)| layer.slices(OP, "state ", l + 1))
                    .collect::<Result<_>>()?,
            );
        }
        for part in &mut self.split.parts {
            part.exchange(&mut p, &mut st, true, false);
        }
        let losses = self.split.run(OP, x, t, batches, first_iter, interrupt);
        // Every part writes back its units; the first also the layers they all hold.
        for (i, part) in self.split.parts.iter_mut().enumerate() {
            part.exchange(&mut p, &mut st, false, i == 0);
        }
        losses
    }
}

/// A fully connected net's layers (W (fan_in, fan_out), b (fan_out)) for prediction.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a, T> {
    pub w: ArrayView2<'a, T>,
    pub b: ArrayView1<'a, T>,
}

/// Predicted classes (argmax of the output, first maximum on ties as `np.argmax`) of
/// every row of x for the net of `layers` (at least two) with `activation` after every
/// hidden layer. Parallel over blocks of rows. Errors: fewer than two layers, shapes
/// that do not chain, x's width.
pub fn predict_multi<T: Lanes>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
) -> Result<Vec<usize>> {
    const OP: &str = "predict_labels";
    if layers.len() < 2 {
        return Err(KernelError::shape(
            OP,
            format!("need at least two layers, got {}", layers.len()),
        ));
    }
    let mut sizes = vec![layers[0].w.nrows()];
    for (l, layer) in layers.iter().enumerate() {
        let want = [sizes[l], layer.w.ncols()];
        if layer.w.dim() != (want[0], want[1]) || layer.b.len() != want[1] {
            return Err(KernelError::shape(
                OP,
                format!(
                    "W{n} has shape {} and b{n} {}; need ({}, h) and (h,)",
                    fmt_shape(layer.w.shape()),
                    fmt_shape(layer.b.shape()),
                    sizes[l],
                    n = l + 1
                ),
            ));
        }
        sizes.push(want[1]);
    }
    check_width(OP, [x.nrows(), x.ncols()], [sizes[0], sizes[1]])?;
    let (h1, k) = (sizes[1], sizes[sizes.len() - 1]);
    let hp = padded::<T>(h1);
    let mut w1p = Aligned::default();
    pad_rows(
        &mut w1p,
        &layers[0].w.iter().copied().collect::<Vec<T>>(),
        h1,
        hp,
    );
    let mut b1p = vec![T::zero(); hp];
    for (p, &b) in b1p.iter_mut().zip(layers[0].b.iter()) {
        *p = b;
    }
    Ok(predict_blocks(x.nrows(), |ws, (b, out)| {
        let (lo, n) = (b * EVAL_ROWS, out.len());
        let sp = gather(x, lo..lo + n, &mut ws.sp, &mut ws.rows);
        ws.layers.resize(2 * layers.len(), Aligned::default());
        let (first, rest) = ws.layers.split_at_mut(2);
        let [a0, z0] = first else { return };
        a0.resize(n * hp, T::zero());
        z0.resize(n * hp, T::zero());
        let rows = &ws.rows;
        with_source!(sp, |src| forward_rows(a0, src, rows, &w1p, &b1p));
        activate(a0, z0, activation);
        let (mut prev, mut stride): (&[T], usize) = (z0, hp);
        for (l, pair) in (1..layers.len()).zip(rest.chunks_exact_mut(2)) {
            let [a, z] = pair else { return };
            let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
            a.resize(n * fan_out, T::zero());
            for row in a.chunks_exact_mut(fan_out) {
                row.iter_mut()
                    .zip(layers[l].b.iter())
                    .for_each(|(o, &b)| *o = b);
            }
            let views = (
                ArrayView2::from_shape((n, fan_in).strides((stride, 1)), prev),
                ArrayViewMut2::from_shape((n, fan_out), &mut a[..]),
            );
            if let (Ok(zv), Ok(av)) = views {
                gemm_into(zv, layers[l].w, av, true);
            }
            if l + 1 < layers.len() {
                z.resize(a.len(), T::zero());
                activate(a, z, activation);
                prev = z;
            } else {
                prev = a;
            }
            stride = fan_out;
        }
        argmax_rows(prev, k, out);
    }))
}

/// Fraction of rows of x whose predicted class equals the target (labels, or the
/// argmax of one-hot rows): the book's `accuracy` for the net of `layers`.
pub fn accuracy_multi<T: Lanes>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
    t: Targets<'_, T>,
) -> Result<f64> {
    let pred = predict_multi(layers, activation, x)?;
    let k = layers.last().map_or(0, |l| l.b.len());
    t.check("accuracy", x.nrows(), k)?;
    Ok(hit_rate(&pred, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::train::ParamsMut;
    use crate::kernels::two_layer::Trainer;
    use ndarray::{Array1, Array2};

    fn filled(rows: usize, cols: usize, seed: usize, zeros: bool) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            let v = ((i * 31 + j * 17 + seed * 7) % 23) as f64 / 23.0 - 0.45;
            if zeros && v < 0.0 {
                0.0
            } else {
                v * 0.3
            }
        })
    }

    /// A d-h-k net's weights, biases and optimizer state (per slot).
    struct Net {
        w: [Array2<f64>; 2],
        b: [Array1<f64>; 2],
        sw: Vec<[Array2<f64>; 2]>,
        sb: Vec<[Array1<f64>; 2]>,
    }

    fn net(d: usize, h: usize, k: usize, slots: usize) -> Net {
        Net {
            w: [filled(d, h, 2, false), filled(h, k, 3, false)],
            b: [Array1::zeros(h), Array1::zeros(k)],
            sw: vec![[Array2::zeros((d, h)), Array2::zeros((h, k))]; slots],
            sb: vec![[Array1::zeros(h), Array1::zeros(k)]; slots],
        }
    }

    fn layer<'a>((w, b): (&'a mut Array2<f64>, &'a mut Array1<f64>)) -> LayerMut<'a, f64> {
        LayerMut {
            w: w.view_mut(),
            b: b.view_mut(),
        }
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// With one hidden layer the multi-layer step is the two-layer one: both trainers
    /// reach the same parameters (up to summation order) for SGD and Adam.
    #[test]
    fn one_hidden_layer_equals_the_two_layer_trainer() -> Result<()> {
        let (d, h, k, n) = (12, 7, 4, 30);
        let x = filled(n, d, 1, true);
        let t = Array1::from_shape_fn(n, |i| (i * 5 % k) as i64);
        let batches = Array2::from_shape_fn((25, 6), |(s, j)| ((s * 7 + j * 11) % n) as i64);
        let adam = Optimizer::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
        };
        for opt in [Optimizer::Sgd { lr: 0.5 }, adam] {
            let (x, t) = (Rows::Dense(x.view()), Targets::Labels(t.view()));
            let slots = opt.state_slots();
            let (mut a, mut b) = (net(d, h, k, slots), net(d, h, k, slots));
            let [w1, w2] = &mut a.w;
            let [b1, b2] = &mut a.b;
            let mut p = ParamsMut {
                w1: w1.view_mut(),
                b1: b1.view_mut(),
                w2: w2.view_mut(),
                b2: b2.view_mut(),
            };
            let mut state: Vec<ParamsMut<'_, f64>> = (a.sw.iter_mut().zip(a.sb.iter_mut()))
                .map(|([w1, w2], [b1, b2])| ParamsMut {
                    w1: w1.view_mut(),
                    b1: b1.view_mut(),
                    w2: w2.view_mut(),
                    b2: b2.view_mut(),
                })
                .collect();
            let mut two = Trainer::new(d, h, k, Activation::Relu, opt)?;
            let loss_two = two.run(&mut p, &mut state, x, t, batches.view(), 0, &|| false)?;
            let mut layers: Vec<_> = b.w.iter_mut().zip(b.b.iter_mut()).map(layer).collect();
            let mut mstate: Vec<Vec<_>> = (b.sw.iter_mut().zip(b.sb.iter_mut()))
                .map(|(ws, bs)| ws.iter_mut().zip(bs.iter_mut()).map(layer).collect())
                .collect();
            let mut multi = MultiTrainer::new(&[d, h, k], Activation::Relu, opt, 0.0)?;
            let loss_multi =
                multi.run(&mut layers, &mut mstate, x, t, batches.view(), 0, &|| false)?;
            assert!(max_diff(&loss_two, &loss_multi) < 1e-12, "{opt:?}");
            for (wa, wb) in a.w.iter().zip(&b.w) {
                let diff = max_diff(wa.as_slice().unwrap_or(&[]), wb.as_slice().unwrap_or(&[]));
                assert!(diff < 1e-12, "{opt:?}: weights differ by {diff}");
            }
            for (ba, bb) in a.b.iter().zip(&b.b) {
                let diff = max_diff(ba.as_slice().unwrap_or(&[]), bb.as_slice().unwrap_or(&[]));
                assert!(diff < 1e-12, "{opt:?}: biases differ by {diff}");
            }
            assert_ne!(a.w[0], filled(d, h, 2, false), "{opt:?}: W1 did not move");
        }
        Ok(())
    }
}
