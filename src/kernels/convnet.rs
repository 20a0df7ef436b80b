//! ch. 7 SimpleConvNet's training step in one call: conv → ReLU → 2×2 max pooling →
//! Affine → ReLU → Affine → SoftmaxWithLoss, forward, backprop and the optimizer's
//! update, for whole runs of batches, on the parameter arrays in place.
//!
//! The layer objects compute the same numbers one layer at a time; here the layers
//! meet inside each block of images, so the large intermediate arrays never leave the
//! cache: the convolution's product of a few images (`conv`'s columns · W1) gets its
//! bias, ReLU and pooling right away, and only the pooled maxima (a quarter) and their
//! window positions are kept. Backward needs no ReLU mask and no pooling pass of its
//! own: the gradient reaches a convolution output only at its window's arg-max, and
//! passes the ReLU there exactly when the pooled maximum is positive. The input
//! layer's dx, which the step never uses, is not computed.
//!
//! The batch is cut into blocks of images whose sizes depend only on the batch size
//! (never on the thread count); the threads take whole blocks, each block's dW1, db1
//! are added up in block order afterwards, and the dense products split rows or
//! columns only: results do not depend on the number of threads.

use std::ops::Range;
use std::time::{Duration, Instant};

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::conv::{image_columns, images_per_product, sum_slice, ColumnsAt, Window};
use super::fused::{check_batches, check_learning_rates};
use super::loss::softmax_with_loss_rows;
use super::matmul::gemm_into;
use super::optimizer::{apply, Optimizer};
use super::pooling::pool_plane;
use super::{parallel, Float, Targets};
use crate::error::{fmt_shape, try_zeros, try_zeros2, KernelError, Result};

/// The sizes of a SimpleConvNet: input (C, H, W), FN filters of FH×FW with `stride`
/// and `pad`, 2×2 pooling with stride 2, `hidden` units, `classes` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvNetShape {
    pub input: [usize; 3],
    pub filters: [usize; 3],
    pub stride: usize,
    pub pad: usize,
    pub hidden: usize,
    pub classes: usize,
}

/// The parameters W1, b1, W2, b2, W3, b3 (or one optimizer state set shaped like them)
/// as flat C-order slices: W1 (FN, C, FH, FW), W2 (FN·ph·pw, hidden), W3 (hidden,
/// classes).
pub type ConvNetSlices<'a, T> = [&'a mut [T]; 6];

/// Sizes derived from [`ConvNetShape`] for a batch.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// The convolution's window over a batch of one image.
    conv: Window,
    /// 2×2, stride 2 over one convolution output plane (oh, ow).
    pool: Window,
    fnum: usize,
    /// C·H·W: one input image.
    image: usize,
    /// oh·ow: one output plane.
    plane: usize,
    /// ph·pw: one pooled plane.
    pooled: usize,
    /// FN·ph·pw: the first Affine's fan-in.
    flat: usize,
    hidden: usize,
    classes: usize,
}

impl Sizes {
    fn new(op: &'static str, s: &ConvNetShape) -> Result<Self> {
        let [c, h, w] = s.input;
        let [fnum, fh, fw] = s.filters;
        if [c, h, w, fnum, fh, fw, s.hidden, s.classes].contains(&0) {
            return Err(KernelError::shape(
                op,
                format!("every size must be positive, got {s:?}"),
            ));
        }
        let conv = Window::new(op, [1, c, h, w], (fh, fw), s.stride, s.pad)?;
        let pool = Window::new(op, [1, 1, conv.oh, conv.ow], (2, 2), 2, 0)?;
        let pooled = pool.positions();
        Ok(Sizes {
            conv,
            pool,
            fnum,
            image: c * h * w,
            plane: conv.positions(),
            pooled,
            flat: fnum * pooled,
            hidden: s.hidden,
            classes: s.classes,
        })
    }

    /// The parameters' lengths in the order W1, b1, W2, b2, W3, b3, and their shapes.
    fn params(&self) -> [(usize, Vec<usize>); 6] {
        let g = &self.conv;
        let (fnum, flat, h, k) = (self.fnum, self.flat, self.hidden, self.classes);
        [
            (fnum * g.patch(), vec![fnum, g.c, g.fh, g.fw]),
            (fnum, vec![fnum]),
            (flat * h, vec![flat, h]),
            (h, vec![h]),
            (h * k, vec![h, k]),
            (k, vec![k]),
        ]
    }
}

const NAMES: [&str; 6] = ["W1", "b1", "W2", "b2", "W3", "b3"];

/// Blocks of a batch of `n` images: as many as [`images_per_product`] asks for, sizes
/// differing by at most one; they depend on `n` only.
fn blocks(n: usize, per_product: usize) -> Vec<Range<usize>> {
    let count = n.div_ceil(per_product.max(1)).max(1);
    (0..count)
        .map(|i| i * n / count..(i + 1) * n / count)
        .collect()
}

/// One thread's buffers for a block of images.
#[derive(Debug)]
struct Scratch<T> {
    /// The block's columns (C·FH·FW, images·oh·ow).
    cols: Array2<T>,
    /// W1 · cols, then the block's gradient at the convolution output (FN, images·oh·ow).
    prod: Array2<T>,
    /// One output plane after bias and ReLU.
    plane: Vec<T>,
}

impl<T: Float> Scratch<T> {
    /// Fills `cols` with the columns of the images `rows` of x (one output plane's
    /// worth per image, side by side); returns the leading dimension of `cols`. The
    /// forward pass and dW1 both need them; rebuilding them per block costs less than
    /// keeping a batch's worth.
    fn block_columns(&mut self, z: &Sizes, x: &[T], rows: &[usize]) -> Result<usize> {
        let ld = self.cols.ncols();
        let cs = self
            .cols
            .as_slice_mut()
            .ok_or_else(|| KernelError::value("ConvNetTrainer.run", "internal: cols"))?;
        for (k, &row) in rows.iter().enumerate() {
            let img = &x[row * z.image..(row + 1) * z.image];
            image_columns(
                img,
                &z.conv,
                cs,
                ColumnsAt {
                    ld,
                    at: k * z.plane,
                },
            );
        }
        Ok(ld)
    }
}

/// Buffers of a step at one batch size, reused from step to step.
#[derive(Debug)]
struct Buffers<T> {
    batch: usize,
    blocks: Vec<Range<usize>>,
    scratch: Vec<Scratch<T>>,
    /// Pooled maxima (batch, FN·ph·pw), the first Affine's input.
    z: Array2<T>,
    /// zᵀ (FN·ph·pw, batch), for dW2 = zᵀ·dr2 (a product with a transposed operand
    /// of this shape is twice as slow as the copy and the product).
    zt: Array2<T>,
    /// Window index of each pooled maximum, as z.
    arg: Vec<i64>,
    /// The first Affine's output (batch, hidden), then its gradient.
    a2: Array2<T>,
    /// ReLU of a2.
    r2: Array2<T>,
    /// Scores (batch, classes), then (softmax − t)/batch.
    y: Array2<T>,
    /// ∂loss/∂z.
    dz: Array2<T>,
    /// Gradients shaped as the parameters, in their order.
    grads: [Vec<T>; 6],
    /// dW1 and db1 of each block, added up in block order.
    block_dw1: Vec<T>,
    block_db1: Vec<T>,
}

impl<T: Float> Buffers<T> {
    fn new(op: &'static str, z: &Sizes, batch: usize) -> Result<Self> {
        let per = images_per_product(&z.conv);
        let blocks = blocks(batch, per);
        let widest = blocks.iter().map(ExactSizeIterator::len).max().unwrap_or(0) * z.plane;
        let threads = parallel::num_threads().min(blocks.len()).max(1);
        let mut scratch = Vec::with_capacity(threads);
        for _ in 0..threads {
            scratch.push(Scratch {
                cols: try_zeros2(op, z.conv.patch(), widest)?,
                prod: try_zeros2(op, z.fnum, widest)?,
                plane: vec![T::zero(); z.plane],
            });
        }
        let vec = |len: usize| try_vec::<T>(op, len);
        let lens = z.params().map(|(len, _)| len);
        let buffers = Buffers {
            batch,
            scratch,
            z: try_zeros2(op, batch, z.flat)?,
            zt: try_zeros2(op, z.flat, batch)?,
            arg: try_vec(op, batch * z.flat)?,
            a2: try_zeros2(op, batch, z.hidden)?,
            r2: try_zeros2(op, batch, z.hidden)?,
            y: try_zeros2(op, batch, z.classes)?,
            dz: try_zeros2(op, batch, z.flat)?,
            grads: [
                vec(lens[0])?,
                vec(lens[1])?,
                vec(lens[2])?,
                vec(lens[3])?,
                vec(lens[4])?,
                vec(lens[5])?,
            ],
            block_dw1: vec(blocks.len() * lens[0])?,
            block_db1: vec(blocks.len() * lens[1])?,
            blocks,
        };
        Ok(buffers)
    }
}

/// A zero-filled vector, or [`KernelError::Alloc`].
fn try_vec<T: Clone + num_traits::Zero>(op: &'static str, len: usize) -> Result<Vec<T>> {
    Ok(try_zeros(op, ndarray::Ix1(len))?
        .into_raw_vec_and_offset()
        .0)
}

/// SimpleConvNet's fused trainer: each [`ConvNetTrainer::run_into`] call runs one step
/// per batch of row indices, the parameters updated in place between steps.
#[derive(Debug)]
pub struct ConvNetTrainer<T: Float> {
    shape: ConvNetShape,
    sizes: Sizes,
    optimizer: Optimizer,
    buffers: Option<Buffers<T>>,
}

/// How often a run calls its `interrupt` check.
const CHECK_EVERY: Duration = Duration::from_millis(50);

impl<T: Float> ConvNetTrainer<T> {
    /// Errors: a zero size, a filter larger than the padded input, a convolution output
    /// smaller than 2×2 (nothing to pool), invalid optimizer rates.
    pub fn new(shape: ConvNetShape, optimizer: Optimizer) -> Result<Self> {
        const OP: &str = "ConvNetTrainer";
        let sizes = Sizes::new(OP, &shape)?;
        optimizer.check(OP)?;
        Ok(ConvNetTrainer {
            shape,
            sizes,
            optimizer,
            buffers: None,
        })
    }

    /// The network's sizes.
    pub fn shape(&self) -> ConvNetShape {
        self.shape
    }

    /// The update rule.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Replaces the update rule's hyperparameters. Errors: another rule, invalid rates.
    pub fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        self.optimizer = self.optimizer.replaced_by("ConvNetTrainer", optimizer)?;
        Ok(())
    }

    /// Errors unless every parameter and state array has its parameter's length.
    fn check_lengths(
        &self,
        op: &'static str,
        what: &str,
        set: &ConvNetSlices<'_, T>,
    ) -> Result<()> {
        for ((arr, (len, shape)), name) in set.iter().zip(self.sizes.params()).zip(NAMES) {
            if arr.len() != len {
                return Err(KernelError::shape(
                    op,
                    format!(
                        "{what}{name} has {} entries but the network needs shape {} ({len})",
                        arr.len(),
                        fmt_shape(&shape)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The buffers for `batch` images, made on the first step at that batch size.
    fn buffers(&mut self, op: &'static str, batch: usize) -> Result<&mut Buffers<T>> {
        if self.buffers.as_ref().is_none_or(|b| b.batch != batch) {
            self.buffers = None; // free the old ones first
            self.buffers = Some(Buffers::new(op, &self.sizes, batch)?);
        }
        self.buffers
            .as_mut()
            .ok_or_else(|| KernelError::value(op, "internal: no buffers"))
    }

    /// The mean cross-entropy of softmax(predict(x)) against t at `params` (W1, b1, …,
    /// b3), x (n, C·H·W) C-contiguous images: SimpleConvNet's `loss`, forward only.
    /// Errors: lengths or shapes that do not fit, labels out of range.
    pub fn loss(
        &mut self,
        params: [&[T]; 6],
        x: ArrayView2<'_, T>,
        t: Targets<'_, T>,
    ) -> Result<f64> {
        const OP: &str = "ConvNetTrainer.loss";
        for ((arr, (len, shape)), name) in params.iter().zip(self.sizes.params()).zip(NAMES) {
            if arr.len() != len {
                return Err(KernelError::shape(
                    OP,
                    format!(
                        "{name} has {} entries but the network needs shape {} ({len})",
                        arr.len(),
                        fmt_shape(&shape)
                    ),
                ));
            }
        }
        let xs = self.images(OP, x)?;
        let n = x.nrows();
        t.check(OP, n, self.sizes.classes)?;
        if n == 0 {
            return Err(KernelError::shape(OP, "x holds no images"));
        }
        let sizes = self.sizes;
        let rows: Vec<usize> = (0..n).collect();
        let bufs = self.buffers(OP, n)?;
        forward(&sizes, bufs, &params, xs, &rows)?;
        let ys = bufs
            .y
            .as_slice_mut()
            .ok_or_else(|| KernelError::value(OP, "internal: y"))?;
        let mut db = vec![T::zero(); sizes.classes];
        Ok(softmax_with_loss_rows(ys, sizes.classes, &rows, t, &mut db) / n as f64)
    }

    /// x's data: C-contiguous rows of C·H·W values.
    fn images<'x>(&self, op: &'static str, x: ArrayView2<'x, T>) -> Result<&'x [T]> {
        if x.ncols() != self.sizes.image {
            let [c, h, w] = self.shape.input;
            return Err(KernelError::shape(
                op,
                format!(
                    "x has shape {} but the network takes images ({c}, {h}, {w}), {} values each",
                    fmt_shape(x.shape()),
                    self.sizes.image
                ),
            ));
        }
        x.to_slice()
            .ok_or_else(|| KernelError::value(op, "x must be C-contiguous"))
    }

    /// Runs one step per row of `batches` (iters, batch) of row indices into x (N, C·H·W,
    /// C-contiguous images) and t (labels or one-hot rows), updating `params` and
    /// `state` (one set per optimizer state slot) in place; `losses` gets each step's
    /// mean cross-entropy, computed before its update. Step s uses `learning_rates[s]`
    /// when given; `first_iter` is Adam's step count before the first step. About every
    /// 50 ms it calls `interrupt` and stops with [`KernelError::Interrupted`] when that
    /// returns true; the steps whose losses are in `losses` stay applied.
    #[allow(clippy::too_many_arguments)]
    pub fn run_into(
        &mut self,
        params: &mut ConvNetSlices<'_, T>,
        state: &mut [ConvNetSlices<'_, T>],
        x: ArrayView2<'_, T>,
        t: Targets<'_, T>,
        batches: ArrayView2<'_, i64>,
        (learning_rates, first_iter): (Option<&[f64]>, u64),
        interrupt: &(dyn Fn() -> bool + Sync),
        losses: &mut Vec<f64>,
    ) -> Result<()> {
        const OP: &str = "ConvNetTrainer.run";
        losses.clear();
        self.check_lengths(OP, "", params)?;
        for set in state.iter() {
            self.check_lengths(OP, "state ", set)?;
        }
        self.optimizer.check_state_sets(OP, state.len())?;
        let xs = self.images(OP, x)?;
        t.check(OP, x.nrows(), self.sizes.classes)?;
        check_batches(OP, batches, x.nrows())?;
        if let Some(lrs) = learning_rates {
            check_learning_rates(OP, lrs, batches.nrows())?;
        }
        let sizes = self.sizes;
        let base = self.optimizer;
        let bufs = self.buffers(OP, batches.ncols())?;
        let mut rows = vec![0_usize; batches.ncols()];
        let mut checked = Instant::now();
        for (s, idx) in batches.rows().into_iter().enumerate() {
            // In range: check_batches above.
            rows.iter_mut().zip(idx).for_each(|(r, &i)| *r = i as usize);
            let opt = learning_rates.map_or(base, |lrs| base.with_lr(lrs[s]));
            let loss = step(&sizes, bufs, params, xs, &rows, t)?;
            update(opt, params, state, &bufs.grads, first_iter + s as u64 + 1);
            losses.push(loss);
            if checked.elapsed() >= CHECK_EVERY && s + 1 < batches.nrows() {
                checked = Instant::now();
                if interrupt() {
                    return Err(KernelError::Interrupted { op: OP });
                }
            }
        }
        Ok(())
    }
}

/// Forward to the scores: b.z, b.arg, b.a2, b.r2 and b.y (scores) for the images `rows`
/// of x.
fn forward<T: Float>(
    z: &Sizes,
    b: &mut Buffers<T>,
    p: &[&[T]; 6],
    x: &[T],
    rows: &[usize],
) -> Result<()> {
    const OP: &str = "ConvNetTrainer";
    let shape_err = |e: ndarray::ShapeError| KernelError::value(OP, e.to_string());
    let w1 = ArrayView2::from_shape((z.fnum, z.conv.patch()), p[0]).map_err(shape_err)?;
    let w2 = ArrayView2::from_shape((z.flat, z.hidden), p[2]).map_err(shape_err)?;
    let w3 = ArrayView2::from_shape((z.hidden, z.classes), p[4]).map_err(shape_err)?;
    conv_relu_pool(z, b, w1, p[1], x, rows)?;
    // Affine1 and ReLU: a2 = z·W2 + b2, r2 = max(a2, 0).
    fill_rows(&mut b.a2, p[3]);
    gemm_into(b.z.view(), w2, b.a2.view_mut(), true);
    b.r2.zip_mut_with(&b.a2, |r, &a| {
        *r = if a > T::zero() { a } else { T::zero() }
    });
    // Affine2: y = r2·W3 + b3.
    fill_rows(&mut b.y, p[5]);
    gemm_into(b.r2.view(), w3, b.y.view_mut(), true);
    Ok(())
}

/// One step's forward and backward: fills `b.grads`, returns the mean loss.
fn step<T: Float>(
    z: &Sizes,
    b: &mut Buffers<T>,
    p: &ConvNetSlices<'_, T>,
    x: &[T],
    rows: &[usize],
    t: Targets<'_, T>,
) -> Result<f64> {
    const OP: &str = "ConvNetTrainer.run";
    let n = rows.len();
    let shape_err = |e: ndarray::ShapeError| KernelError::value(OP, e.to_string());
    let pr: [&[T]; 6] = p.each_ref().map(|s| &**s);
    forward(z, b, &pr, x, rows)?;
    let w2 = ArrayView2::from_shape((z.flat, z.hidden), pr[2]).map_err(shape_err)?;
    let w3 = ArrayView2::from_shape((z.hidden, z.classes), pr[4]).map_err(shape_err)?;
    transpose_into(b.z.view(), &mut b.zt);
    // SoftmaxWithLoss: y → (softmax(y) − t)/n, db3.
    let loss = {
        let [_, _, gw2, gb2, gw3, gb3] = &mut b.grads;
        let ys =
            b.y.as_slice_mut()
                .ok_or_else(|| KernelError::value(OP, "internal: y"))?;
        let loss = softmax_with_loss_rows(ys, z.classes, rows, t, gb3) / n as f64;
        let dy = b.y.view();
        // dW3 = r2ᵀ·dy; dr2 = dy·W3ᵀ where a2 > 0 (where r2 > 0); db2 = Σ_rows dr2.
        let mut gw3v =
            ArrayViewMut2::from_shape((z.hidden, z.classes), &mut gw3[..]).map_err(shape_err)?;
        gemm_into(b.r2.t(), dy, gw3v.view_mut(), false);
        gemm_into(dy, w3.t(), b.a2.view_mut(), false);
        b.a2.zip_mut_with(&b.r2, |d, &r| {
            if r <= T::zero() {
                *d = T::zero();
            }
        });
        gb2.fill(T::zero());
        for row in b.a2.rows() {
            gb2.iter_mut().zip(row).for_each(|(g, &v)| *g = *g + v);
        }
        // dW2 = zᵀ·dr2; dz = dr2·W2ᵀ.
        let mut gw2v =
            ArrayViewMut2::from_shape((z.flat, z.hidden), &mut gw2[..]).map_err(shape_err)?;
        gemm_into(b.zt.view(), b.a2.view(), gw2v.view_mut(), false);
        gemm_into(b.a2.view(), w2.t(), b.dz.view_mut(), false);
        loss
    };
    conv_weight_gradient(z, b, x, rows)?;
    // dW1, db1: the blocks' parts added in block order.
    let (fk, fnum) = (z.fnum * z.conv.patch(), z.fnum);
    let [gw1, gb1, ..] = &mut b.grads;
    gw1.fill(T::zero());
    gb1.fill(T::zero());
    for (dw, db) in b
        .block_dw1
        .chunks_exact(fk)
        .zip(b.block_db1.chunks_exact(fnum))
    {
        gw1.iter_mut().zip(dw).for_each(|(g, &v)| *g = *g + v);
        gb1.iter_mut().zip(db).for_each(|(g, &v)| *g = *g + v);
    }
    Ok(loss)
}

/// `dst` ← `src`ᵀ, in tiles that stay in cache on both sides.
fn transpose_into<T: Float>(src: ArrayView2<'_, T>, dst: &mut Array2<T>) {
    const TILE: usize = 32;
    let (rows, cols) = src.dim();
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..rows.min(r0 + TILE) {
                for c in c0..cols.min(c0 + TILE) {
                    dst[[c, r]] = src[[r, c]];
                }
            }
        }
    }
}

/// Every row of `m` set to `bias`.
fn fill_rows<T: Float>(m: &mut Array2<T>, bias: &[T]) {
    for mut row in m.rows_mut() {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v = b);
    }
}

/// What a thread does with one block of images, its scratch buffers and its outputs.
type BlockWork<'w, T, O> = dyn Fn(Range<usize>, &mut Scratch<T>, O) -> Result<()> + Sync + 'w;

/// Runs `work(block, scratch, its outputs)` for every block, blocks split between the
/// scratch buffers' threads in contiguous runs.
fn over_blocks<T: Float, O: Send>(
    blocks: &[Range<usize>],
    scratch: &mut [Scratch<T>],
    mut outputs: Vec<O>,
    work: &BlockWork<'_, T, O>,
) -> Result<()> {
    let groups = scratch.len().min(blocks.len()).max(1);
    let mut parts = Vec::with_capacity(groups);
    let mut rest = blocks;
    let mut scratch = scratch.iter_mut();
    for g in 0..groups {
        let take = rest.len() / (groups - g);
        let (mine, tail) = rest.split_at(take);
        rest = tail;
        let outs: Vec<O> = outputs.drain(..take).collect();
        if let Some(sc) = scratch.next() {
            parts.push((mine, sc, outs));
        }
    }
    let run = |(mine, sc, outs): (&[Range<usize>], &mut Scratch<T>, Vec<O>)| -> Result<()> {
        for (block, out) in mine.iter().zip(outs) {
            work(block.clone(), sc, out)?;
        }
        Ok(())
    };
    if parts.len() > 1 {
        parallel::install(|_| parts.into_par_iter().map(run).collect::<Result<Vec<()>>>())?;
        Ok(())
    } else {
        parts.into_iter().try_for_each(run)
    }
}

/// Forward through conv, ReLU and pooling: b.z (pooled maxima) and b.arg (their window
/// indices) for the images `rows` of x, block by block.
fn conv_relu_pool<T: Float>(
    z: &Sizes,
    b: &mut Buffers<T>,
    w1: ArrayView2<'_, T>,
    b1: &[T],
    x: &[T],
    rows: &[usize],
) -> Result<()> {
    const OP: &str = "ConvNetTrainer.run";
    let (p, flat) = (z.plane, z.flat);
    let zs =
        b.z.as_slice_mut()
            .ok_or_else(|| KernelError::value(OP, "internal: z"))?;
    let mut outputs = Vec::with_capacity(b.blocks.len());
    let (mut zr, mut ar) = (zs, &mut b.arg[..]);
    for block in &b.blocks {
        let (z1, z2) = zr.split_at_mut(block.len() * flat);
        let (a1, a2) = ar.split_at_mut(block.len() * flat);
        outputs.push((z1, a1));
        (zr, ar) = (z2, a2);
    }
    let work = |block: Range<usize>, sc: &mut Scratch<T>, (zo, ao): (&mut [T], &mut [i64])| {
        let width = block.len() * p;
        let ld = sc.block_columns(z, x, &rows[block.clone()])?;
        // prod (FN, images·oh·ow) = W1 · cols
        gemm_into(
            w1,
            sc.cols.slice(s![.., ..width]),
            sc.prod.slice_mut(s![.., ..width]),
            false,
        );
        let ps = sc
            .prod
            .as_slice()
            .ok_or_else(|| KernelError::value(OP, "internal: prod"))?;
        let outs = zo
            .chunks_exact_mut(z.pooled)
            .zip(ao.chunks_exact_mut(z.pooled));
        for (q, (zq, aq)) in outs.enumerate() {
            // plane q of the block: image q / FN, filter q % FN
            let (k, f) = (q / z.fnum, q % z.fnum);
            let src = &ps[f * ld + k * p..f * ld + (k + 1) * p];
            let bf = b1[f];
            // The layer path's conv output (prod + b), then its ReLU (x ≤ 0 → 0).
            for (d, &v) in sc.plane.iter_mut().zip(src) {
                let a = v + bf;
                *d = if a > T::zero() { a } else { T::zero() };
            }
            pool_plane(&sc.plane, &z.pool, zq, aq);
        }
        Ok(())
    };
    over_blocks(&b.blocks, &mut b.scratch, outputs, &work)
}

/// Each block's dW1 = d·colsᵀ and db1 = Σ d, d the gradient at the convolution output:
/// dz at each window's arg-max where its pooled maximum is positive (the ReLU passes
/// it), 0 elsewhere.
fn conv_weight_gradient<T: Float>(
    z: &Sizes,
    b: &mut Buffers<T>,
    x: &[T],
    rows: &[usize],
) -> Result<()> {
    const OP: &str = "ConvNetTrainer.run";
    let (p, fk) = (z.plane, z.fnum * z.conv.patch());
    let (zs, ds) = (
        b.z.as_slice()
            .ok_or_else(|| KernelError::value(OP, "internal: z"))?,
        b.dz.as_slice()
            .ok_or_else(|| KernelError::value(OP, "internal: dz"))?,
    );
    let arg = &b.arg[..];
    let outputs: Vec<(&mut [T], &mut [T])> = b
        .block_dw1
        .chunks_exact_mut(fk)
        .zip(b.block_db1.chunks_exact_mut(z.fnum))
        .collect();
    let (ow, pw) = (z.conv.ow, z.pool.ow);
    let work = |block: Range<usize>, sc: &mut Scratch<T>, (dw, db): (&mut [T], &mut [T])| {
        let width = block.len() * p;
        let ld = sc.block_columns(z, x, &rows[block.clone()])?;
        let d = sc
            .prod
            .as_slice_mut()
            .ok_or_else(|| KernelError::value(OP, "internal: d"))?;
        for f in 0..z.fnum {
            d[f * ld..f * ld + width].fill(T::zero());
        }
        for (k, n) in block.clone().enumerate() {
            for f in 0..z.fnum {
                let at = (n * z.fnum + f) * z.pooled;
                let dst = &mut d[f * ld + k * p..f * ld + (k + 1) * p];
                let (zc, dc, ac) = (
                    &zs[at..at + z.pooled],
                    &ds[at..at + z.pooled],
                    &arg[at..at + z.pooled],
                );
                for i in 0..z.pool.oh {
                    let cells = (i * pw..(i + 1) * pw).map(|c| (zc[c], dc[c], ac[c]));
                    for (j, (zv, dv, a)) in cells.enumerate() {
                        // window (i, j), entry a = ky·2 + kx; 0 where the ReLU
                        // stopped it (a select: the sign is random, a branch slow)
                        let a = a as usize;
                        let v = if zv > T::zero() { dv } else { T::zero() };
                        dst[(2 * i + a / 2) * ow + 2 * j + a % 2] = v;
                    }
                }
            }
        }
        let dmat = sc.prod.slice(s![.., ..width]);
        let mut dwv = ArrayViewMut2::from_shape((z.fnum, z.conv.patch()), dw)
            .map_err(|e| KernelError::value(OP, e.to_string()))?;
        gemm_into(
            dmat,
            sc.cols.slice(s![.., ..width]).t(),
            dwv.view_mut(),
            false,
        );
        for (g, row) in db.iter_mut().zip(dmat.rows()) {
            *g = row.as_slice().map_or_else(|| row.sum(), sum_slice);
        }
        Ok(())
    };
    over_blocks(&b.blocks, &mut b.scratch, outputs, &work)
}

/// The optimizer's update of every parameter; W2, the largest, in two halves on two
/// threads (elementwise: the same numbers either way).
fn update<T: Float>(
    opt: Optimizer,
    params: &mut ConvNetSlices<'_, T>,
    state: &mut [ConvNetSlices<'_, T>],
    grads: &[Vec<T>; 6],
    iter: u64,
) {
    for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
        let (s0, s1): (&mut [T], &mut [T]) = match &mut *state {
            [] => (&mut [], &mut []),
            [a] => (&mut a[i][..], &mut []),
            [a, b, ..] => (&mut a[i][..], &mut b[i][..]),
        };
        if i == 2 && p.len() >= 1 << 16 && parallel::num_threads() > 1 {
            let half = p.len() / 2;
            let (p0, p1) = p.split_at_mut(half);
            let (g0, g1) = g.split_at(half);
            let (a0, a1) = s0.split_at_mut(half.min(s0.len()));
            let (b0, b1) = s1.split_at_mut(half.min(s1.len()));
            parallel::install(|_| {
                parallel::join_spinning(
                    || apply(opt, p0, g0, a0, b0, iter),
                    || apply(opt, p1, g1, a1, b1, iter),
                )
            });
        } else {
            apply(opt, p, g, s0, s1, iter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array2};

    #[test]
    fn blocks_cover_the_batch_evenly() {
        let b = blocks(100, 9);
        assert_eq!(b.len(), 12);
        assert_eq!(b.first().map(|r| r.start), Some(0));
        assert_eq!(b.last().map(|r| r.end), Some(100));
        assert!(b.windows(2).all(|w| w[0].end == w[1].start));
        assert!(b.iter().all(|r| r.len() == 8 || r.len() == 9));
        assert_eq!(blocks(3, 9), vec![0..3]);
    }

    /// All weights zero: every score is 0, softmax uniform, the loss −ln(1/k + 1e-7); only
    /// b3 has a gradient, Σ_rows (1/k − t)/n, and SGD moves it by −lr times that.
    #[test]
    fn one_sgd_step_from_zero_weights_by_hand() -> Result<()> {
        let shape = ConvNetShape {
            input: [1, 6, 6],
            filters: [2, 3, 3],
            stride: 1,
            pad: 0,
            hidden: 3,
            classes: 4,
        };
        let mut tr = ConvNetTrainer::<f64>::new(shape, Optimizer::Sgd { lr: 0.5 })?;
        let mut store: Vec<Vec<f64>> = [2 * 9, 2, 2 * 2 * 2 * 3, 3, 3 * 4, 4]
            .iter()
            .map(|&len| vec![0.0; len])
            .collect();
        let mut it = store.iter_mut();
        let mut params: ConvNetSlices<'_, f64> = [(); 6].map(|()| match it.next() {
            Some(v) => &mut v[..],
            None => &mut [],
        });
        let x = Array2::<f64>::ones((2, 36));
        let labels = arr1(&[1_i64, 3]);
        let batches = ndarray::arr2(&[[0_i64, 1]]);
        let mut losses = Vec::new();
        tr.run_into(
            &mut params,
            &mut [],
            x.view(),
            Targets::Labels(labels.view()),
            batches.view(),
            (None, 0),
            &|| false,
            &mut losses,
        )?;
        assert!((losses[0] + (0.25_f64 + 1e-7).ln()).abs() < 1e-15);
        // db3 = Σ_rows (1/4 − t)/2 = (1/4, 1/4 − 1/2, 1/4, 1/4 − 1/2)
        let want = [-0.125, 0.125, -0.125, 0.125];
        assert!(params[5]
            .iter()
            .zip(want)
            .all(|(&b, w)| (b - w).abs() < 1e-15));
        assert!(params[..5].iter().all(|p| p.iter().all(|&v| v == 0.0)));
        Ok(())
    }
}
