//! The book's fully connected networks as borrowed parameters: the two-layer net of
//! chapters 4–5 (forward, `predict`, `loss` and the backprop `gradient`), and the
//! layers of any fully connected net for the batched prediction ([`super::predict`]).

use ndarray::{Array1, Array2, ArrayView, ArrayView1, ArrayView2, ArrayViewMut, Axis, Ix2};

use super::activation::{activation_backward, Activation};
use super::loss::{cross_entropy_error, softmax_cross_entropy_backward_of};
use super::math::{add_slice, map_slice_uninit};
use super::matmul::{gemm_into, Out};
use super::parallel;
use super::softmax::softmax_into;
use super::sparse_input::{self, CompressedRows};
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
    /// its rows, activations and gradients stay in that core's cache; the halves'
    /// gradients are then added (dW1 by ranges of inputs on both threads). The cut
    /// depends on the batch only, so the result is the same with any number of threads.
    pub fn gradient<U: Float>(
        &self,
        x: ArrayView2<'_, U>,
        t: Targets<'_, T>,
    ) -> Result<Gradients<T>> {
        self.check("gradient", &x)?;
        let (n, (d, h, k)) = (x.nrows(), self.sizes());
        // Before any work, and before the targets are cut into halves.
        t.check("gradient", n, k)?;
        if n < HALVES_MIN_ROWS || !sparse_input::worth_the_team::<T>(n, d, h) {
            return self.gradient_of_rows(x, t, n);
        }
        let cut = n.div_ceil(2);
        let halves = [(0, cut), (cut, n)];
        let slots: Vec<std::sync::Mutex<Option<Result<Gradients<T>>>>> =
            halves.iter().map(|_| std::sync::Mutex::new(None)).collect();
        parallel::split(halves.len(), &|i| {
            let (lo, hi) = halves[i];
            let rows = x.slice(ndarray::s![lo..hi, ..]);
            let g = self.gradient_of_rows(rows, t.rows(lo, hi), n);
            if let Ok(mut slot) = slots[i].lock() {
                *slot = Some(g);
            }
        });
        let mut parts = slots
            .into_iter()
            .filter_map(|s| s.into_inner().ok().flatten());
        let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
            return self.gradient_of_rows(x, t, n);
        };
        let (mut sum, other) = (first?, second?);
        // dW1 += the second half's, by ranges of inputs on the team's threads.
        let per = d.div_ceil(2).max(1);
        let pairs: Vec<_> = sum
            .w1
            .axis_chunks_iter_mut(Axis(0), per)
            .zip(other.w1.axis_chunks_iter(Axis(0), per))
            .collect();
        parallel::split_items(pairs, |(mut a, b)| add(a.view_mut(), b));
        add(sum.w2.view_mut(), other.w2.view());
        add(sum.b1.view_mut(), other.b1.view());
        add(sum.b2.view_mut(), other.b2.view());
        Ok(sum)
    }

    /// The gradient's terms of the rows x (targets t) of a batch of `batch` rows:
    /// shapes checked.
    fn gradient_of_rows<U: Float>(
        &self,
        x: ArrayView2<'_, U>,
        t: Targets<'_, T>,
        batch: usize,
    ) -> Result<Gradients<T>> {
        const OP: &str = "gradient";
        // x's non-zero inputs, found once for x·W1 and xᵀ·da1 (None: dense products).
        let nz: Option<CompressedRows<T>> = sparse_input::compress_for_products(x, self.w1.ncols());
        let Forward { a1, z1, y } = self.forward_with(OP, x.nrows(), |a1| {
            sparse_input::times_out(x, nz.as_ref(), self.w1, a1)
        })?;
        let dy = softmax_cross_entropy_backward_of(y.view(), t, batch)?; // (y − t) / n
        let (d, h, k) = self.sizes();
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
        // dW1 = xᵀ·da1, each range of inputs written once by the thread that sums it.
        let mut w1 = try_uninit(OP, Ix2(d, h))?;
        sparse_input::transposed_times_out(
            x,
            nz.as_ref(),
            da1.view(),
            Out::Fresh(w1.view_mut(), None),
        );
        // SAFETY: `transposed_times_out` writes every element of a fresh output.
        let w1 = unsafe { w1.assume_init() };
        Ok(Gradients { w1, b1, w2, b2 })
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
