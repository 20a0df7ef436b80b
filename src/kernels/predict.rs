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
use super::matmul::gemm_into;
use super::net::{check_layers, Layer};
use super::parallel;
use super::sparse::{gather, with_layout, Rows, SparseRows};
use super::{Float, Targets};
use crate::error::Result;

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

/// One prediction per row of an n-row input: `block(scratch, (b, out))` fills `out`
/// for the b-th block of [`EVAL_ROWS`] rows; blocks run in parallel, each thread with
/// its own scratch.
fn predict_blocks<T: Float>(
    n: usize,
    block: impl Fn(&mut PredictScratch<T>, (usize, &mut [usize])) + Send + Sync,
) -> Vec<usize> {
    let mut pred = vec![0usize; n];
    parallel::install(|threads| {
        if threads > 1 && n > EVAL_ROWS {
            pred.par_chunks_mut(EVAL_ROWS)
                .enumerate()
                .for_each_init(PredictScratch::default, &block);
        } else {
            let mut ws = PredictScratch::default();
            pred.chunks_mut(EVAL_ROWS)
                .enumerate()
                .for_each(|part| block(&mut ws, part));
        }
    });
    pred
}

/// Predicted classes (argmax of the output, first maximum on ties as `np.argmax`) of
/// every row of x (dense (n, d) or compressed) for the net of `layers` (at least two)
/// with `activation` after every hidden layer. Parallel over blocks of rows. Errors:
/// fewer than two layers, shapes that do not chain, x's width.
pub fn predict_labels<T: Float>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
) -> Result<Vec<usize>> {
    const OP: &str = "predict_labels";
    let sizes = check_layers(OP, layers, x.shape())?;
    let (d, h1, k) = (sizes[0], sizes[1], sizes[sizes.len() - 1]);
    let wp = padded_width(h1);
    // W1 in the input layer's column blocks, b1 padded to whole blocks.
    let mut w1: Vec<T> = layers[0].w.iter().copied().collect();
    let mut w1_blocks = Aligned::filled(d * wp, T::zero());
    copy_columns(&mut w1, &mut w1_blocks, h1, (0, h1), true);
    let mut b1 = vec![T::zero(); wp];
    for (p, &b) in b1.iter_mut().zip(layers[0].b.iter()) {
        *p = b;
    }
    Ok(predict_blocks(x.nrows(), |ws, (b, out)| {
        let (lo, n) = (b * EVAL_ROWS, out.len());
        let sp = gather(x, lo..lo + n, &mut ws.sp, &mut ws.rows);
        ws.layers.resize(2 * layers.len(), Aligned::default());
        let (first, later) = ws.layers.split_at_mut(2);
        let [a0, z0] = first else { return };
        a0.resize(n * wp, T::zero());
        z0.resize(n * wp, T::zero());
        let rows = &ws.rows;
        with_layout!(sp, |src| input_layer::forward(
            a0,
            &w1_blocks,
            src,
            rows,
            &[]
        ));
        for row in a0.chunks_exact_mut(wp) {
            for (a, &b) in row.iter_mut().zip(&b1) {
                *a = *a + b;
            }
        }
        activate(activation, a0, z0);
        let (mut prev, mut stride): (&[T], usize) = (z0, wp);
        for (l, pair) in (1..layers.len()).zip(later.chunks_exact_mut(2)) {
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
                activate(activation, a, z);
                prev = z;
            } else {
                prev = a;
            }
            stride = fan_out;
        }
        argmax_rows(prev, k, out);
    }))
}

/// Fraction of rows of x whose predicted class ([`predict_labels`]) equals the target
/// (labels, or the argmax of one-hot rows): the book's `accuracy`.
pub fn accuracy<T: Float>(
    layers: &[Layer<'_, T>],
    activation: Activation,
    x: Rows<'_, T>,
    t: Targets<'_, T>,
) -> Result<f64> {
    let pred = predict_labels(layers, activation, x)?;
    let k = layers.last().map_or(0, |l| l.b.len());
    t.check("accuracy", x.nrows(), k)?;
    Ok(hit_rate(&pred, t))
}

/// out[q] = argmax of row q of the logits l (rows of k): the first maximum, as
/// `np.argmax`, and a NaN wins (NumPy's argmax propagates NaN).
fn argmax_rows<T: Float>(l: &[T], k: usize, out: &mut [usize]) {
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
