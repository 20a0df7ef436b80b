//! Fused training of the fully connected net with several hidden layers: the book's
//! MultiLayerNet (Affine → ReLU/Sigmoid per hidden layer → Affine → softmax with
//! cross-entropy, optional L2 weight decay) without dropout or batch norm.
//!
//! One call runs many steps, each the batch gather, forward, backprop and optimizer
//! update in place, with the buffers reused. The first layer works on the non-zero
//! inputs only (rows compressed once, [`super::sparse`]), W1 padded to whole register
//! blocks, dW1 and the W1 update column by column. The layers after it
//! are dense products through the GEMM. With two threads each takes half of the inputs
//! (rows of W1) in the first layer's forward pass and update, and one sorts the batch's
//! inputs by column while the other runs the dense layers.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ShapeBuilder};

use super::aligned::Aligned;
use super::matmul::gemm_into;
use super::numgrad::Activation;
use super::parallel::{self, join_spinning};
use super::sparse::with_source;
use super::train::{
    act_grad, activate, apply, argmax_rows, check_batches, check_width, forward_rows, gather,
    hit_rate, input_grad, pad_rows, padded, predict_blocks, softmax_cross_entropy_grad, split,
    unpad_rows, BatchColumns, Lanes, Optimizer, Rows, SparseRows, EVAL_ROWS,
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
/// layer; the book's `TwoLayerNet` shape has a faster two-thread path in
/// [`super::two_layer::Trainer`]).
#[derive(Debug)]
pub struct MultiTrainer<T> {
    sizes: Vec<usize>,
    /// h1 rounded up to whole register blocks: the row length of W1's padded copy.
    hp: usize,
    activation: Activation,
    optimizer: Optimizer,
    /// λ of the L2 weight decay: the loss adds ½·λ·Σ‖W‖², each dW adds λ·W.
    decay: f64,
    w1p: Aligned<T>,
    gw1p: Aligned<T>,
    state_w1p: [Aligned<T>; 2],
    b1p: Vec<T>,
    /// The second thread's partial first-layer sums (n, hp), and its zero bias.
    a0b: Aligned<T>,
    zero_b: Vec<T>,
    /// Per hidden layer j: pre-activations, activations and dL/d(pre-activation),
    /// (n, hp) for j = 0 and (n, sizes[j + 1]) after it.
    a: Vec<Aligned<T>>,
    z: Vec<Aligned<T>>,
    dz: Vec<Aligned<T>>,
    /// Logits, then dL/dlogits (n, k).
    y: Vec<T>,
    /// Per weight layer l ≥ 1: dW (sizes[l], sizes[l + 1]); per layer: db (hp for l = 0).
    gw: Vec<Vec<T>>,
    gb: Vec<Vec<T>>,
    /// The batch's inputs by column, for each thread's half of them.
    cols: [BatchColumns<T>; 2],
    /// A dense x's batch rows, compressed each step.
    scratch: SparseRows<T>,
}

impl<T: Lanes> MultiTrainer<T> {
    /// `decay` is the weight decay λ (0 for none). Errors: fewer than three sizes or a
    /// zero size, bad optimizer rates, λ negative or not finite.
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
        let layers = sizes.len() - 1;
        let hp = padded::<T>(sizes[1]);
        let mut gb: Vec<Vec<T>> = sizes[1..].iter().map(|&n| vec![T::zero(); n]).collect();
        gb[0] = vec![T::zero(); hp];
        Ok(MultiTrainer {
            sizes: sizes.to_vec(),
            hp,
            activation,
            optimizer,
            decay,
            w1p: Aligned::default(),
            gw1p: Aligned::default(),
            state_w1p: Default::default(),
            b1p: vec![T::zero(); hp],
            a0b: Aligned::default(),
            zero_b: vec![T::zero(); hp],
            a: vec![Aligned::default(); layers - 1],
            z: vec![Aligned::default(); layers - 1],
            dz: vec![Aligned::default(); layers - 1],
            y: Vec::new(),
            gw: (0..layers)
                .map(|l| {
                    if l == 0 {
                        Vec::new()
                    } else {
                        vec![T::zero(); sizes[l] * sizes[l + 1]]
                    }
                })
                .collect(),
            gb,
            cols: Default::default(),
            scratch: SparseRows::default(),
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
    /// returns the per-step mean cross-entropies, each before its update. `first_iter`
    /// is Adam's step count before the first step. About every 50 ms it calls
    /// `interrupt` and stops with [`KernelError::Interrupted`] when that returns true;
    /// the steps done so far stay applied.
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
        // W1 and its state in padded copies for the run; written back below, also when
        // the run stops early.
        let (h1, hp) = (self.sizes[1], self.hp);
        pad_rows(&mut self.w1p, p[0][0], h1, hp);
        for (dst, src) in self.state_w1p.iter_mut().zip(&st) {
            pad_rows(dst, src[0][0], h1, hp);
        }
        if !matches!(self.optimizer, Optimizer::Sgd { .. }) || self.decay > 0.0 {
            self.gw1p.resize(self.w1p.len(), T::zero());
        }
        self.b1p[..h1].copy_from_slice(p[0][1]);
        let mut losses = Vec::with_capacity(batches.nrows());
        let mut outcome = Ok(());
        let (mut batch, mut rows) = (Vec::new(), Vec::new());
        let mut scratch = std::mem::take(&mut self.scratch);
        let total = batches.nrows();
        let mut next = 0;
        while next < total {
            // Steps for about 50 ms inside the pool, then a look at `interrupt` here.
            let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
            next = parallel::install(|threads| {
                let mut s = next;
                while s < total {
                    batch.clear();
                    batch.extend(batches.row(s).iter().map(|&i| i as usize));
                    let sp = gather(x, batch.iter().copied(), &mut scratch, &mut rows);
                    let iter = first_iter + s as u64 + 1;
                    losses.push(self.step(&mut p, &mut st, sp, &rows, &batch, t, iter, threads));
                    s += 1;
                    if std::time::Instant::now() >= until {
                        break;
                    }
                }
                s
            });
            if next < total && interrupt() {
                outcome = Err(KernelError::Interrupted { op: OP });
                break;
            }
        }
        self.scratch = scratch;
        unpad_rows(p[0][0], &self.w1p, h1, hp);
        for (dst, src) in st.iter_mut().zip(&self.state_w1p) {
            unpad_rows(dst[0][0], src, h1, hp);
        }
        outcome.map(|()| losses)
    }

    /// One step on the batch rows `rows` of `sp` (targets: rows `batch` of t); returns
    /// the batch's mean cross-entropy before the update.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        p: &mut [[&mut [T]; 2]],
        st: &mut [Slices<'_, T>],
        sp: &SparseRows<T>,
        rows: &[usize],
        batch: &[usize],
        t: Targets<'_, T>,
        iter: u64,
        threads: usize,
    ) -> f64 {
        let n = batch.len();
        let (act, opt, hp, decay) = (self.activation, self.optimizer, self.hp, self.decay);
        let MultiTrainer {
            sizes,
            w1p,
            gw1p,
            state_w1p,
            b1p,
            a0b,
            zero_b,
            a,
            z,
            dz,
            y,
            gw,
            gb,
            cols,
            ..
        } = self;
        let (layers, k) = (sizes.len() - 1, sizes[sizes.len() - 1]);
        // Row length of hidden layer j's buffers.
        let stride = |j: usize| if j == 0 { hp } else { sizes[j + 1] };
        for j in 0..layers - 1 {
            let len = n * stride(j);
            a[j].resize(len, T::zero());
            z[j].resize(len, T::zero());
            dz[j].resize(len, T::zero());
        }
        y.resize(n * k, T::zero());
        // Forward: the first layer from the non-zero inputs (two threads: half of the
        // inputs each), then the dense layers.
        let d = sizes[0];
        let (two, m) = (threads > 1 && d > 1, d / 2);
        if two {
            a0b.resize(n * hp, T::zero());
            let (w0, w1) = w1p.split_at(m * hp);
            let (ah, bh) = (&mut a[0][..], &mut a0b[..]);
            let [c0, c1] = &mut *cols;
            let (b1, zb) = (&b1p[..], &zero_b[..]);
            with_source!(sp, |src| join_spinning(
                || forward_rows(ah, src, rows, &[], w0, b1, 0, m, Some(c0)),
                || forward_rows(bh, src, rows, &[], w1, zb, m, d, Some(c1)),
            ));
            activate(&mut a[0], a0b, &mut z[0], act);
        } else {
            let (a0, c0) = (&mut a[0], Some(&mut cols[0]));
            with_source!(sp, |src| forward_rows(
                a0,
                src,
                rows,
                &[],
                w1p,
                b1p,
                0,
                d,
                c0
            ));
            activate(&mut a[0], &[], &mut z[0], act);
        }
        let mut middle = || {
            // ½·λ·Σ‖W‖² at the parameters this step starts from (W1's padding is zero).
            let penalty = if decay > 0.0 {
                let sq = |w: &[T]| w.iter().fold(0.0_f64, |s, &v| s + (v * v).to_f64());
                let total = sq(w1p) + p[1..].iter().map(|l| sq(l[0])).sum::<f64>();
                0.5 * decay * total
            } else {
                0.0
            };
            for l in 1..layers {
                let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
                let out: &mut [T] = if l + 1 == layers {
                    &mut y[..]
                } else {
                    &mut a[l]
                };
                for row in out.chunks_exact_mut(fan_out) {
                    row.copy_from_slice(p[l][1]);
                }
                let views = (
                    ArrayView2::from_shape((n, fan_in).strides((stride(l - 1), 1)), &z[l - 1][..]),
                    ArrayView2::from_shape((fan_in, fan_out), &p[l][0][..]),
                    ArrayViewMut2::from_shape((n, fan_out), &mut out[..]),
                );
                if let (Ok(zv), Ok(wv), Ok(ov)) = views {
                    gemm_into(zv, wv, ov, true);
                }
                if l + 1 < layers {
                    activate(&mut a[l], &[], &mut z[l], act);
                }
            }
            let loss = softmax_cross_entropy_grad(y, k, batch, t, &mut gb[layers - 1]);
            // Backward: dW_l = z_(l-1)ᵀ·dout, dz_(l-1) = (dout·W_lᵀ) ⊙ act'(a_(l-1)).
            for l in (1..layers).rev() {
                let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
                let (below, above) = dz.split_at_mut(l);
                let dout: &[T] = if l + 1 == layers { &y[..] } else { &above[0] };
                let views = (
                    ArrayView2::from_shape((n, fan_in).strides((stride(l - 1), 1)), &z[l - 1][..]),
                    ArrayView2::from_shape((n, fan_out), dout),
                    ArrayView2::from_shape((fan_in, fan_out), &p[l][0][..]),
                    ArrayViewMut2::from_shape((fan_in, fan_out), &mut gw[l][..]),
                    ArrayViewMut2::from_shape(
                        (n, fan_in).strides((stride(l - 1), 1)),
                        &mut below[l - 1][..],
                    ),
                );
                if let (Ok(zv), Ok(dv), Ok(wv), Ok(gv), Ok(dzv)) = views {
                    gemm_into(zv.t(), dv, gv, false);
                    gemm_into(dv, wv.t(), dzv, false);
                }
                if decay > 0.0 {
                    let lambda = T::lit(decay);
                    for (g, &w) in gw[l].iter_mut().zip(p[l][0].iter()) {
                        *g = *g + lambda * w;
                    }
                }
                act_grad(&mut below[l - 1], &a[l - 1], &z[l - 1], &mut gb[l - 1], act);
            }
            // Updates, layer by layer; W1 column by column (SGD: without forming dW1).
            let h1 = sizes[1];
            for (l, layer) in p.iter_mut().enumerate() {
                let [w, b] = layer;
                if l > 0 {
                    let (s0, s1) = state_of(st, l, 0);
                    apply(opt, w, &gw[l], s0, s1, iter);
                }
                let (s0, s1) = state_of(st, l, 1);
                apply(opt, b, &gb[l][..b.len()], s0, s1, iter);
            }
            b1p[..h1].copy_from_slice(p[0][1]);
            (loss, penalty)
        };
        // The other thread sorts the batch's inputs by column meanwhile.
        let (loss, penalty) = if two {
            join_spinning(middle, || {
                for c in cols.iter_mut() {
                    with_source!(sp, |src| c.fill(src));
                }
            })
            .0
        } else {
            with_source!(sp, |src| cols[0].fill(src));
            middle()
        };
        // dW1 = xᵀ·dz1 and the update of W1 (SGD: without forming dW1), by halves of the
        // inputs with two threads.
        let dz0 = &dz[0][..];
        let part =
            |w: &mut [T], g: &mut [T], s0: &mut [T], s1: &mut [T], c: &BatchColumns<T>| match opt {
                Optimizer::Sgd { lr } if decay == 0.0 => input_grad(w, dz0, c, T::lit(-lr)),
                _ => {
                    g.fill(T::zero());
                    input_grad(g, dz0, c, T::one());
                    if decay > 0.0 {
                        let lambda = T::lit(decay);
                        for (g, &w) in g.iter_mut().zip(w.iter()) {
                            *g = *g + lambda * w;
                        }
                    }
                    apply(opt, w, g, s0, s1, iter);
                }
            };
        let [s0, s1] = state_w1p;
        if two {
            let (w0, w1) = w1p.split_at_mut(m * hp);
            let (g0, g1) = split(gw1p, m * hp);
            let (s00, s01) = split(s0, m * hp);
            let (s10, s11) = split(s1, m * hp);
            let [c0, c1] = &*cols;
            join_spinning(|| part(w0, g0, s00, s10, c0), || part(w1, g1, s01, s11, c1));
        } else {
            part(w1p, gw1p, s0, s1, &cols[0]);
        }
        loss / n as f64 + penalty
    }
}

/// State arrays 0 and 1 (empty when the optimizer has fewer) of layer l's weights
/// (`which` = 0) or bias (1).
fn state_of<'a, T>(
    st: &'a mut [Slices<'_, T>],
    l: usize,
    which: usize,
) -> (&'a mut [T], &'a mut [T]) {
    let (first, rest) = st.split_at_mut(st.len().min(1));
    let s0: &mut [T] = match first.first_mut() {
        Some(set) => &mut *set[l][which],
        None => &mut [],
    };
    let s1: &mut [T] = match rest.first_mut() {
        Some(set) => &mut *set[l][which],
        None => &mut [],
    };
    (s0, s1)
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
    let (d, h1, k) = (sizes[0], sizes[1], sizes[sizes.len() - 1]);
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
        with_source!(sp, |src| forward_rows(
            a0,
            src,
            rows,
            &[],
            &w1p,
            &b1p,
            0,
            d,
            None
        ));
        activate(a0, &[], z0, activation);
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
                activate(a, &[], z, activation);
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
