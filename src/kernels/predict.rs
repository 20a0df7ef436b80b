//! The batched prediction of every fully connected net (the two-layer net, the book's
//! MultiLayerNet): the predicted class of each row (the argmax of the output) and the
//! book's `accuracy`, in parallel over blocks of rows.
//!
//! The first layer is computed from each row's non-zero inputs only
//! ([`super::input_layer`]): `a1[r, :] = b1 + Σ_{i: x[r,i] ≠ 0} x[r, i]·W1[i, :]`, the
//! same sums as the dense product without its zero terms; the later layers are dense
//! products through the GEMM.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use super::activation::{activate, Activation};
use super::aligned::Aligned;
use super::input_layer::{self, copy_columns, padded_width};
use super::math::add_to_rows;
use super::matmul::gemm_into;
use super::net::{check_finite_w1, check_layers, Layer};
use super::parallel;
use super::sparse::{gather, with_layout, Rows, SparseRows};
use super::{Float, Targets};
use crate::error::{fmt_shape, KernelError, Result};

/// Rows per block of the parallel evaluation.
pub const EVAL_ROWS: usize = 256;

/// Per-thread buffers of a prediction: the block's rows ([`gather`]) and the layers'
/// activations.
struct PredictScratch<T> {
    sp: SparseRows<T>,
    rows: Vec<usize>,
    layers: Vec<Aligned<T>>,
}

impl<T: Float> Default for PredictScratch<T> {
    fn default() -> Self {
        PredictScratch {
            sp: SparseRows::default(),
            rows: Vec::new(),
            layers: Vec::new(),
        }
    }
}

/// Multiply-adds between two looks at `interrupt`: tens of milliseconds of work.
const WORK_PER_CHECK: usize = 50_000_000;

/// One prediction per row of an n-row input: `block(scratch, (b, out))` fills `out`
/// for the b-th block of [`EVAL_ROWS`] rows; blocks run in parallel, each thread with
/// its own scratch. `row_work` (multiply-adds per row) sets how many blocks run
/// between calls of `interrupt` (on the calling thread); when it returns true the
/// prediction stops with [`KernelError::Interrupted`].
fn predict_blocks<T: Float>(
    op: &'static str,
    n: usize,
    row_work: usize,
    interrupt: &(dyn Fn() -> bool + Sync),
    block: impl Fn(&mut PredictScratch<T>, (usize, &mut [usize])) -> Result<()> + Send + Sync,
) -> Result<Vec<usize>> {
    let mut pred = Vec::new();
    pred.try_reserve_exact(n).map_err(|_| KernelError::Alloc {
        op,
        shape: fmt_shape(&[n]),
        bytes: (n as u128) * std::mem::size_of::<usize>() as u128,
    })?;
    pred.resize(n, 0usize);
    let per_check = (WORK_PER_CHECK / (EVAL_ROWS * row_work.max(1))).max(1);
    let mut ws = PredictScratch::default();
    let group = per_check.max(parallel::num_threads()) * EVAL_ROWS;
    for (g, part) in pred.chunks_mut(group).enumerate() {
        let first = g * group / EVAL_ROWS;
        // One group inside the pool, then a look at `interrupt` here, on the caller's
        // thread (where Python can run its signal handlers).
        parallel::install(|threads| {
            if threads > 1 && part.len() > EVAL_ROWS {
                part.par_chunks_mut(EVAL_ROWS)
                    .enumerate()
                    .try_for_each_init(PredictScratch::default, |ws, (b, out)| {
                        block(ws, (first + b, out))
                    })
            } else {
                part.chunks_mut(EVAL_ROWS)
                    .enumerate()
                    .try_for_each(|(b, out)| block(&mut ws, (first + b, out)))
            }
        })?;
        if (g + 1) * group < n && interrupt() {
            return Err(KernelError::Interrupted { op });
        }
    }
    Ok(pred)
}

/// Predicted classes (argmax of the output, first maximum on ties as `np.argmax`) of
/// every row of x (dense (n, d) or compressed) for the net of `layers` (at least two)
/// with `activation` after every hidden layer. Parallel over blocks of rows. Errors:
/// fewer than two layers, shapes that do not chain, a layer of width 0, x's width,
/// memory.
pub fn predict_labels<T: Float>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
) -> Result<Vec<usize>> {
    predict_labels_with(layers, activation, x, &|| false)
}

/// The widths [d, h1, …, k] of the net of `layers` after checking what a prediction
/// needs: layers that chain, fit x, have at least one unit each and a finite W1.
fn check_net<T: Float>(
    op: &'static str,
    layers: &[Layer<'_, T>],
    x_shape: [usize; 2],
) -> Result<Vec<usize>> {
    let sizes = check_layers(op, layers, x_shape)?;
    if let Some(l) = sizes.iter().skip(1).position(|&w| w == 0) {
        return Err(KernelError::shape(
            op,
            format!(
                "W{n} has shape {}; a layer needs at least one unit",
                fmt_shape(layers[l].w.shape()),
                n = l + 1
            ),
        ));
    }
    check_finite_w1(op, layers[0].w)?;
    Ok(sizes)
}

/// [`predict_labels`] that calls `interrupt` (on the calling thread) every few tens of
/// milliseconds and stops with [`KernelError::Interrupted`] when it returns true.
pub fn predict_labels_with<T: Float>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<usize>> {
    const OP: &str = "predict_labels";
    let sizes = check_net(OP, layers, x.shape())?;
    let (d, h1, k) = (sizes[0], sizes[1], sizes[sizes.len() - 1]);
    let wp = padded_width::<T>(h1);
    let alloc = |len: usize| KernelError::Alloc {
        op: OP,
        shape: fmt_shape(&[len]),
        bytes: (len as u128) * std::mem::size_of::<T>() as u128,
    };
    // W1 in the input layer's column blocks, b1 padded to whole blocks.
    let mut w1: Vec<T> = Vec::new();
    w1.try_reserve_exact(d * h1).map_err(|_| alloc(d * h1))?;
    w1.extend(layers[0].w.iter().copied());
    let blocks_len = d.checked_mul(wp).ok_or_else(|| alloc(usize::MAX))?;
    let mut w1_blocks =
        Aligned::try_filled(blocks_len, T::zero()).ok_or_else(|| alloc(blocks_len))?;
    copy_columns(&mut w1, &mut w1_blocks, h1, (0, h1), true);
    drop(w1);
    let mut b1 = vec![T::zero(); wp];
    for (p, &b) in b1.iter_mut().zip(layers[0].b.iter()) {
        *p = b;
    }
    let row_work = layers.iter().map(|l| l.w.len()).sum::<usize>();
    predict_blocks(OP, x.nrows(), row_work, interrupt, |ws, (b, out)| {
        let (lo, n) = (b * EVAL_ROWS, out.len());
        let sp = gather(x, lo..lo + n, &mut ws.sp, &mut ws.rows);
        ws.layers.resize(2 * layers.len(), Aligned::default());
        let (first, later) = ws.layers.split_at_mut(2);
        let [a0, z0] = first else { return Ok(()) };
        a0.try_resize(n * wp, T::zero())
            .ok_or_else(|| alloc(n * wp))?;
        z0.try_resize(n * wp, T::zero())
            .ok_or_else(|| alloc(n * wp))?;
        let rows = &ws.rows;
        with_layout!(sp, |src| input_layer::forward(
            a0,
            &w1_blocks,
            src,
            rows,
            &[]
        ));
        add_to_rows(a0, &b1);
        activate(activation, a0, z0);
        let (mut prev, mut stride): (&[T], usize) = (z0, wp);
        for (l, pair) in (1..layers.len()).zip(later.chunks_exact_mut(2)) {
            let [a, z] = pair else { return Ok(()) };
            let (fan_in, fan_out) = (sizes[l], sizes[l + 1]);
            a.try_resize(n * fan_out, T::zero())
                .ok_or_else(|| alloc(n * fan_out))?;
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
                z.try_resize(a.len(), T::zero())
                    .ok_or_else(|| alloc(a.len()))?;
                activate(activation, a, z);
                prev = z;
            } else {
                prev = a;
            }
            stride = fan_out;
        }
        argmax_rows(prev, k, out);
        Ok(())
    })
}

/// Fraction of rows of x whose predicted class ([`predict_labels`]) equals the target
/// (labels, or the argmax of one-hot rows): the book's `accuracy`.
pub fn accuracy<T: Float>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
    t: Targets<'_, T>,
) -> Result<f64> {
    accuracy_with(layers, activation, x, t, &|| false)
}

/// [`accuracy`] that calls `interrupt` as [`predict_labels_with`] does.
pub fn accuracy_with<T: Float>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
    t: Targets<'_, T>,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<f64> {
    let sizes = check_net("accuracy", layers, x.shape())?;
    let k = sizes[sizes.len() - 1];
    t.check("accuracy", x.nrows(), k)?;
    if x.nrows() == 0 {
        return Err(KernelError::shape(
            "accuracy",
            "x has no rows; the accuracy of an empty batch is undefined",
        ));
    }
    let pred = predict_labels_with(layers, activation, x, interrupt)?;
    Ok(hit_rate(&pred, t))
}

/// out[q] = argmax of row q of the logits l (rows of k): the first maximum, as
/// `np.argmax`, and a NaN wins (NumPy's argmax propagates NaN).
fn argmax_rows<T: Float>(l: &[T], k: usize, out: &mut [usize]) {
    // k ≥ 1 (checked by the caller); max(1) keeps chunks_exact from ever panicking.
    for (l, o) in l.chunks_exact(k.max(1)).zip(out.iter_mut()) {
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
fn hit_rate<T: Float>(pred: &[usize], t: Targets<'_, T>) -> f64 {
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
