//! The book's fully connected networks as borrowed parameters: the two-layer net of
//! chapters 4–5 (forward, `predict`, `loss` and the backprop `gradient`), and the
//! layers of any fully connected net for the batched prediction ([`super::predict`]).

use std::mem::MaybeUninit;
use std::sync::PoisonError;

use ndarray::{
    Array1, Array2, ArrayView, ArrayView1, ArrayView2, ArrayViewMut, ArrayViewMut2, Axis, Ix2,
};

use super::activation::{activation_backward, Activation};
use super::loss::{cross_entropy_error, softmax_cross_entropy_backward_of};
use super::math::{add_slice, map_slice_uninit};
use super::matmul::{gemm_into, Out};
use super::parallel;
use super::softmax::softmax_into;
use super::sparse_input::{self, CompressedRows, TransposedProduct};
use super::{Float, Targets};
use crate::error::{fmt_shape, try_uninit, try_zeros2, KernelError, Result};

/// An input batch of either float type. A net takes either: its first layer
/// converts the values it reads (only the non-zeros of a sparse batch), as NumPy's
/// `astype` would, so a float32 batch costs a float64 net no copy of the batch.
#[derive(Debug, Clone, Copy)]
pub enum Batch<'a> {
    F32(ArrayView2<'a, f32>),
    F64(ArrayView2<'a, f64>),
}

impl Batch<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Batch::F32(x) => x.len(),
            Batch::F64(x) => x.len(),
        }
    }

    /// Whether the batch has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Borrowed parameters of `x → Affine(W1, b1) → activation → Affine(W2, b2) → softmax`.
///
/// Shapes: W1 (d, h), b1 (h,), W2 (h, k), b2 (k,).
#[derive(Debug, Clone, Copy)]
pub struct TwoLayerNet<'a, T> {
    pub w1: ArrayView2<'a, T>,
    pub b1: ArrayView1<'a, T>,
    pub w2: ArrayView2<'a, T>,
    pub b2: ArrayView1<'a, T>,
    pub activation: Activation,
}

/// Gradients (or any values) shaped like the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    pub w1: Array2<T>,
    pub b1: Array1<T>,
    pub w2: Array2<T>,
    pub b2: Array1<T>,
}

/// The forward pass kept for backprop: a1 = x·W1 + b1, z1 = act(a1), y = softmax(z1·W2 + b2).
#[derive(Debug, Clone)]
pub struct Forward<T> {
    pub a1: Array2<T>,
    pub z1: Array2<T>,
    pub y: Array2<T>,
}

impl<'a, T: Float> TwoLayerNet<'a, T> {
    /// Input width d, hidden width h, outputs k.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.w1.nrows(), self.w1.ncols(), self.w2.ncols())
    }

    /// Checks the parameters against each other and against a batch `x` (n, d).
    pub fn check<U: Float>(&self, op: &'static str, x: &ArrayView2<'_, U>) -> Result<()> {
        let (d, h, k) = self.sizes();
        let bad = |what: String| Err(KernelError::shape(op, what));
        if self.b1.len() != h {
            return bad(format!(
                "b1 has shape {} but W1 has shape {}",
                fmt_shape(self.b1.shape()),
                fmt_shape(self.w1.shape())
            ));
        }
        if self.w2.nrows() != h {
            return bad(format!(
                "W2 has shape {} but W1 has shape {}",
                fmt_shape(self.w2.shape()),
                fmt_shape(self.w1.shape())
            ));
        }
        if self.b2.len() != k {
            return bad(format!(
                "b2 has shape {} but W2 has shape {}",
                fmt_shape(self.b2.shape()),
                fmt_shape(self.w2.shape())
            ));
        }
        if x.ncols() != d {
            return bad(format!(
                "x has shape {} but W1 has shape {}",
                fmt_shape(x.shape()),
                fmt_shape(self.w1.shape())
            ));
        }
        if x.nrows() == 0 {
            return bad(format!(
                "x has shape {}; the batch is empty",
                fmt_shape(x.shape())
            ));
        }
        Ok(())
    }

    /// Forward pass; shapes already checked. x·W1 skips x's zero inputs when there
    /// are enough of them (`sparse_input::product_out`). Errors only when memory
    /// runs out ([`KernelError::Alloc`] naming `op`).
    pub fn forward<U: Float>(&self, op: &'static str, x: ArrayView2<'_, U>) -> Result<Forward<T>> {
        self.forward_with(op, x.nrows(), |a1| {
            sparse_input::product_out(x, self.w1, a1)
        })
    }

    /// Forward pass with `first(a1)` writing b1 + x·W1 into a1 (fresh, every row
    /// starting as b1).
    fn forward_with(
        &self,
        op: &'static str,
        n: usize,
        first: impl FnOnce(Out<'_, T>),
    ) -> Result<Forward<T>> {
        let (_, h, k) = self.sizes();
        let mut a1 = try_uninit(op, Ix2(n, h))?;
        first(Out::Fresh(a1.view_mut(), Some(self.b1)));
        // SAFETY: `first` writes every element of the fresh a1 (its contract).
        let a1 = unsafe { a1.assume_init() };
        let act = self.activation;
        let mut z1 = try_uninit(op, Ix2(n, h))?;
        match (a1.as_slice(), z1.as_slice_mut()) {
            (Some(a), Some(z)) => map_slice_uninit(a, z, |a| act.apply(a)),
            _ => ndarray::Zip::from(&mut z1).and(&a1).for_each(|z, &a| {
                z.write(act.apply(a));
            }),
        }
        // SAFETY: every element of z1 was written just above.
        let z1 = unsafe { z1.assume_init() };
        let mut a2 = bias_rows(op, self.b2, n)?;
        gemm_into(z1.view(), self.w2, a2.view_mut(), true);
        let mut y = try_zeros2(op, n, k)?;
        let _ = softmax_into(a2.view(), y.view_mut());
        Ok(Forward { a1, z1, y })
    }

    /// Softmax output y (n, k) for a batch x (n, d).
    pub fn predict<U: Float>(&self, x: ArrayView2<'_, U>) -> Result<Array2<T>> {
        self.check("predict", &x)?;
        self.output("predict", x)
    }

    /// Mean cross-entropy of the batch.
    pub fn loss<U: Float>(&self, x: ArrayView2<'_, U>, t: Targets<'_, T>) -> Result<T> {
        self.check("loss", &x)?;
        cross_entropy_error(self.output("loss", x)?.view(), t)
    }

    /// The softmax output y; shapes checked. A batch of more than
    /// [`sparse_input::BLOCK_ROWS`] rows goes through the whole net in blocks of that
    /// many rows, shared by the team's threads, so no hidden layer of the whole batch
    /// is ever stored (a 60,000-row pass made 50 MB of them); a smaller one worth two
    /// threads in two halves of rows, each on one thread from start to end.
    fn output<U: Float>(&self, op: &'static str, x: ArrayView2<'_, U>) -> Result<Array2<T>> {
        let (n, (d, h, _)) = (x.nrows(), self.sizes());
        let rows = if n > sparse_input::BLOCK_ROWS {
            sparse_input::BLOCK_ROWS
        } else if n >= HALVES_MIN_ROWS && sparse_input::worth_the_team::<T>(n, d, h) {
            n.div_ceil(2)
        } else {
            return Ok(self.forward(op, x)?.y);
        };
        let mut y = try_zeros2(op, n, self.w2.ncols())?;
        let blocks: Vec<_> = x
            .axis_chunks_iter(Axis(0), rows)
            .zip(y.axis_chunks_iter_mut(Axis(0), rows))
            .collect();
        let failure = std::sync::Mutex::new(None);
        parallel::split_items(blocks, |(xb, mut yb)| match self.forward(op, xb) {
            Ok(f) => yb.assign(&f.y),
            Err(e) => {
                if let Ok(mut first) = failure.lock() {
                    first.get_or_insert(e);
                }
            }
        });
        match failure.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(y),
        }
    }

    /// Backprop gradient of the mean cross-entropy (the book's `gradient`).
    ///
    /// A batch worth two threads ([`HALVES_MIN_ROWS`] rows or more) goes through in two
    /// halves of rows, each half's whole forward and backward pass on one thread, so
    /// its rows, activations and gradients stay in that core's cache. Each half adds
    /// its dW1 terms into the one dW1 range by range of inputs (`HalvesSum`); the
    /// small gradients are added after. The cut depends on the batch only, so the
    /// result is the same with any number of threads.
    pub fn gradient<U: Float>(
        &self,
        x: ArrayView2<'_, U>,
        t: Targets<'_, T>,
    ) -> Result<Gradients<T>> {
        const OP: &str = "gradient";
        self.check(OP, &x)?;
        let (n, (d, h, k)) = (x.nrows(), self.sizes());
        // Before any work, and before the targets are cut into halves.
        t.check(OP, n, k)?;
        if n < HALVES_MIN_ROWS || !sparse_input::worth_the_team::<T>(n, d, h) {
            return self.gradient_of_rows(x, t, n);
        }
        let cut = n.div_ceil(2);
        let halves = [(0, cut), (cut, n)];
        let mut w1 = try_uninit(OP, Ix2(d, h))?;
        let sum = HalvesSum::new(w1.view_mut());
        let slots: Vec<std::sync::Mutex<Option<Result<Half<T>>>>> =
            halves.iter().map(|_| std::sync::Mutex::new(None)).collect();
        parallel::split(halves.len(), &|i| {
            let (lo, hi) = halves[i];
            let rows = x.slice(ndarray::s![lo..hi, ..]);
            let half = self
                .backward_of_rows(rows, t.rows(lo, hi), n)
                .and_then(|b| {
                    // From the non-zeros into the shared dW1; else a product of its own.
                    let own = match TransposedProduct::of(rows, b.nz.as_ref(), b.da1.view()) {
                        Some(product) => {
                            sum.add(i, &product);
                            None
                        }
                        None => Some(dw1_of(rows, None, b.da1.view())?),
                    };
                    Ok(Half { own, back: b })
                });
            if let Ok(mut slot) = slots[i].lock() {
                *slot = Some(half);
            }
        });
        sum.finish();
        // SAFETY: `finish` has written every range no half wrote.
        let mut w1 = unsafe { w1.assume_init() };
        let mut parts = slots
            .into_iter()
            .filter_map(|s| s.into_inner().ok().flatten());
        let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
            return self.gradient_of_rows(x, t, n);
        };
        let (first, second) = (first?, second?);
        for own in [&first.own, &second.own].into_iter().flatten() {
            add(w1.view_mut(), own.view());
        }
        let (mut g, other) = (first.back, second.back);
        add(g.w2.view_mut(), other.w2.view());
        add(g.b1.view_mut(), other.b1.view());
        add(g.b2.view_mut(), other.b2.view());
        Ok(g.with_w1(w1))
    }

    /// The gradient's terms of the rows x (targets t) of a batch of `batch` rows:
    /// shapes checked.
    fn gradient_of_rows<U: Float>(
        &self,
        x: ArrayView2<'_, U>,
        t: Targets<'_, T>,
        batch: usize,
    ) -> Result<Gradients<T>> {
        let b = self.backward_of_rows(x, t, batch)?;
        let w1 = dw1_of(x, b.nz.as_ref(), b.da1.view())?;
        Ok(b.with_w1(w1))
    }

    /// The backward pass of the rows x of a batch of `batch` rows up to dA1: every
    /// gradient term but dW1 = xᵀ·dA1, and what that is made of.
    fn backward_of_rows<U: Float>(
        &self,
        x: ArrayView2<'_, U>,
        t: Targets<'_, T>,
        batch: usize,
    ) -> Result<Backward<T>> {
        const OP: &str = "gradient";
        // x's non-zero inputs, found once for x·W1 and xᵀ·da1, when W1 is wide enough for
        // skipping them to pay in x·W1 (the lower of the two products' bounds: a 784-10-10
        // net's gradient on 100 MNIST rows, AMD EPYC Zen 2, float32 121 → 63 µs and
        // float64 185 → 99 with dense products); None: dense products.
        let h = self.w1.ncols();
        let nz: Option<CompressedRows<T>> = sparse_input::rows_times_pays::<T, U>(h)
            .then(|| sparse_input::compress_for_products(x, h))
            .flatten();
        let Forward { a1, z1, y } = self.forward_with(OP, x.nrows(), |a1| {
            sparse_input::times_out(x, nz.as_ref(), self.w1, a1)
        })?;
        let dy = softmax_cross_entropy_backward_of(y.view(), t, batch)?; // (y − t) / n
        let (_, h, k) = self.sizes();
        let mut w2 = try_zeros2(OP, h, k)?;
        gemm_into(z1.t(), dy.view(), w2.view_mut(), false); // dW2 = z1ᵀ·dy
        let b2 = dy.sum_axis(Axis(0)); // db2 = Σ_rows dy
        let mut da1 = try_zeros2(OP, x.nrows(), h)?;
        gemm_into(dy.view(), self.w2.t(), da1.view_mut(), false); // dz1 = dy·W2ᵀ
        let mut b1 = Array1::zeros(h);
        // da1 = dz1 ⊙ act'(a1), db1 = Σ_rows da1 (all four arrays are fresh and contiguous).
        if let (Some(g), Some(a), Some(z), Some(db)) = (
            da1.as_slice_mut(),
            a1.as_slice(),
            z1.as_slice(),
            b1.as_slice_mut(),
        ) {
            activation_backward(self.activation, g, a, z, db);
        }
        Ok(Backward {
            nz,
            da1,
            b1,
            w2,
            b2,
        })
    }
}

/// dW1 = xᵀ·dA1 (x's non-zeros in `nz`, or None for the GEMM), each range of inputs
/// written once by the thread that sums it.
fn dw1_of<T: Float, U: Float>(
    x: ArrayView2<'_, U>,
    nz: Option<&CompressedRows<T>>,
    da1: ArrayView2<'_, T>,
) -> Result<Array2<T>> {
    let mut w1 = try_uninit("gradient", Ix2(x.ncols(), da1.ncols()))?;
    sparse_input::transposed_times_out(x, nz, da1, Out::Fresh(w1.view_mut(), None));
    // SAFETY: `transposed_times_out` writes every element of a fresh output.
    Ok(unsafe { w1.assume_init() })
}

/// [`TwoLayerNet::gradient`]'s backward pass of some rows, up to dA1.
struct Backward<T: Float> {
    nz: Option<CompressedRows<T>>,
    da1: Array2<T>,
    b1: Array1<T>,
    w2: Array2<T>,
    b2: Array1<T>,
}

impl<T: Float> Backward<T> {
    /// The gradients, with dW1.
    fn with_w1(self, w1: Array2<T>) -> Gradients<T> {
        Gradients {
            w1,
            b1: self.b1,
            w2: self.w2,
            b2: self.b2,
        }
    }
}

/// One half's part of [`TwoLayerNet::gradient`]: its small gradients, and its dW1 when
/// it could not add it into the shared one.
struct Half<T: Float> {
    back: Backward<T>,
    own: Option<Array2<T>>,
}

/// Ranges of inputs dW1 is cut into for [`HalvesSum`] (about 100 rows of 50 or 100
/// columns each for MNIST: 40–80 KB in float64).
const DW1_RANGES: usize = 8;

/// The halves' dW1 summed range by range of inputs, in the one array: each range is
/// written by the first half to come (zeros, then its terms added) and added to by the
/// other. Half 0 goes through the ranges from the first, half 1 from the middle, so
/// the two threads work on different ranges and meet only if one is a range or more
/// behind (it then waits for the other to leave that range). A sum of two terms is
/// the same in either order, so the result does not depend on which half came first;
/// each half reads only its own rows, on its own core.
struct HalvesSum<'g, T> {
    ranges: Vec<InputRange<'g, T>>,
}

/// A range of inputs (lo, hi) and dW1's rows for them.
type InputRange<'g, T> = ((usize, usize), std::sync::Mutex<RangeState<'g, T>>);

enum RangeState<'g, T> {
    Unwritten(ArrayViewMut2<'g, MaybeUninit<T>>),
    Written(ArrayViewMut2<'g, T>),
    /// Between taking the range and writing it back (only seen after a panic).
    Taken,
}

impl<'g, T: Float> HalvesSum<'g, T> {
    fn new(g: ArrayViewMut2<'g, MaybeUninit<T>>) -> Self {
        let d = g.nrows();
        let per = d.div_ceil(DW1_RANGES).max(1);
        let mut ranges = Vec::with_capacity(DW1_RANGES);
        let (mut rest, mut lo) = (g, 0);
        while lo < d {
            let hi = (lo + per).min(d);
            let (part, tail) = rest.split_at(Axis(0), hi - lo);
            ranges.push(((lo, hi), std::sync::Mutex::new(RangeState::Unwritten(part))));
            (rest, lo) = (tail, hi);
        }
        HalvesSum { ranges }
    }

    /// Adds half `half`'s terms (`product`) to every range, from the first range (half
    /// 0) or the middle one (half 1) on, wrapping around.
    fn add(&self, half: usize, product: &TransposedProduct<'_, T>) {
        let k = self.ranges.len();
        let mid = k / 2;
        let spans: &[(usize, usize)] = if half == 0 || mid == 0 {
            &[(0, k)]
        } else {
            &[(mid, k), (0, mid)]
        };
        for &(a, b) in spans {
            let inputs = (self.ranges[a].0 .0, self.ranges[b - 1].0 .1);
            let mut span = product.span(inputs);
            for (range, state) in &self.ranges[a..b] {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                let mut g = match std::mem::replace(&mut *state, RangeState::Taken) {
                    RangeState::Unwritten(c) => Out::Fresh(c, None).ready().0,
                    RangeState::Written(g) => g,
                    // The other half panicked inside this range; `split` raises it.
                    RangeState::Taken => return,
                };
                if let Some(g) = g.as_slice_mut() {
                    product.add_next(&mut span, range.1, g);
                }
                *state = RangeState::Written(g);
            }
        }
    }

    /// Writes zeros into the ranges no half wrote.
    fn finish(self) {
        for (_, state) in self.ranges {
            let state = state.into_inner().unwrap_or_else(PoisonError::into_inner);
            if let RangeState::Unwritten(c) = state {
                Out::Fresh(c, None).ready();
            }
        }
    }
}

/// a += b, elementwise (same shapes).
fn add<T: Float, D: ndarray::Dimension>(mut a: ArrayViewMut<'_, T, D>, b: ArrayView<'_, T, D>) {
    match (a.as_slice_mut(), b.as_slice()) {
        (Some(a), Some(b)) => add_slice(a, b),
        _ => ndarray::Zip::from(&mut a)
            .and(&b)
            .for_each(|a, &b| *a = *a + b),
    }
}

/// Batches of at least this many rows (and worth the team's threads) go through
/// [`TwoLayerNet::gradient`], `predict` and `loss` in two halves of rows.
pub const HALVES_MIN_ROWS: usize = 64;

impl<T: Float> TwoLayerNet<'_, T> {
    /// [`TwoLayerNet::predict`] of a batch of either float type.
    pub fn predict_batch(&self, x: Batch<'_>) -> Result<Array2<T>> {
        match x {
            Batch::F32(x) => self.predict(x),
            Batch::F64(x) => self.predict(x),
        }
    }

    /// [`TwoLayerNet::loss`] of a batch of either float type.
    pub fn loss_batch(&self, x: Batch<'_>, t: Targets<'_, T>) -> Result<T> {
        match x {
            Batch::F32(x) => self.loss(x, t),
            Batch::F64(x) => self.loss(x, t),
        }
    }

    /// [`TwoLayerNet::gradient`] of a batch of either float type.
    pub fn gradient_batch(&self, x: Batch<'_>, t: Targets<'_, T>) -> Result<Gradients<T>> {
        match x {
            Batch::F32(x) => self.gradient(x, t),
            Batch::F64(x) => self.gradient(x, t),
        }
    }
}

/// n copies of the row b, or [`KernelError::Alloc`] naming `op`.
pub(crate) fn bias_rows<T: Float>(
    op: &'static str,
    b: ArrayView1<'_, T>,
    n: usize,
) -> Result<Array2<T>> {
    let mut rows = try_zeros2(op, n, b.len())?;
    rows.rows_mut().into_iter().for_each(|mut r| r.assign(&b));
    Ok(rows)
}

/// One Affine layer of a fully connected net: W (fan_in, fan_out), b (fan_out).
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a, T> {
    pub w: ArrayView2<'a, T>,
    pub b: ArrayView1<'a, T>,
}

impl<'a, T: Float> TwoLayerNet<'a, T> {
    /// The net's two Affine layers.
    pub fn layers(&self) -> [Layer<'a, T>; 2] {
        [
            Layer {
                w: self.w1,
                b: self.b1,
            },
            Layer {
                w: self.w2,
                b: self.b2,
            },
        ]
    }
}

/// The widths [d, h1, …, k] of a net of `layers` (at least two), after checking that
/// the layers chain and that an input of `x_cols` columns fits the first.
pub fn check_layers<T: Float>(
    op: &'static str,
    layers: &[Layer<'_, T>],
    x_shape: [usize; 2],
) -> Result<Vec<usize>> {
    if layers.len() < 2 {
        return Err(KernelError::shape(
            op,
            format!("need at least two layers, got {}", layers.len()),
        ));
    }
    let mut sizes = vec![layers[0].w.nrows()];
    for (l, layer) in layers.iter().enumerate() {
        let want = [sizes[l], layer.w.ncols()];
        if layer.w.dim() != (want[0], want[1]) || layer.b.len() != want[1] {
            return Err(KernelError::shape(
                op,
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
    check_input_width(op, x_shape, [sizes[0], sizes[1]])?;
    Ok(sizes)
}

/// Errors when W1 holds NaN or ±inf. The first layer of the batched prediction and of
/// the fused step reads only the non-zero inputs, so it would skip the 0·inf (= NaN)
/// terms IEEE arithmetic gives the dense product: such weights are refused instead of
/// giving results that differ from `x @ W1`.
pub fn check_finite_w1<T: Float>(op: &'static str, w1: ArrayView2<'_, T>) -> Result<()> {
    if sparse_input::all_finite(w1) {
        return Ok(());
    }
    let ((i, j), v) = w1
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
        .map_or(((0, 0), T::zero()), |(ij, &v)| (ij, v));
    Err(KernelError::value(
        op,
        format!(
            "W1[{i}, {j}] is {v:?}: the weights of the first layer must be finite (a diverged \
             run? lower the learning rate); the compressed-input kernels skip zero inputs, so \
             they cannot give the NaN a dense product would"
        ),
    ))
}

/// Errors unless x (n, d) has as many columns as W1 (d, h) has rows.
pub fn check_input_width(op: &'static str, x: [usize; 2], w1: [usize; 2]) -> Result<()> {
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
