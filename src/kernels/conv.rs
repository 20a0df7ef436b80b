//! ch. 7 convolution: `im2col`/`col2im` and the Convolution layer's forward and backward.
//!
//! The book lowers a convolution to one matrix product over all filter positions of
//! the batch: `col = im2col(x)` (N·oh·ow, C·FH·FW) times `col_W` (C·FH·FW, FN), then a
//! transpose back to (N, FN, oh, ow). The kernels here take the product the other way
//! round, a few images at a time: `W` (FN, C·FH·FW) · `cols` (C·FH·FW, B·oh·ow), the
//! images' columns side by side, whose rows are already (filter, position) as in the
//! output: each image's part is copied out with the bias added. The columns of a few
//! images (≤ 512 kB) stay in cache between their copy and the product, a product of
//! B·oh·ow columns is long enough for the GEMM's packing to pay (one image's 576 is
//! not: 3–4× slower per multiply-add), and the batch splits between threads image by
//! image. Backward recomputes the columns from x (a copy, cheap beside the two
//! products) instead of keeping the whole matrix from forward. The sums are the
//! book's, in another order.

use std::ops::Range;

use multiversion::multiversion;
use ndarray::{s, Array1, Array2, Array4, ArrayView2, ArrayView4, Axis};
use rayon::prelude::*;

use super::matmul::{gemm_into, parallel_worth};
use super::{parallel, Float};
use crate::error::{fmt_shape, try_zeros, try_zeros2, KernelError, Result};

/// Where a `fh`×`fw` window visits an (n, c, h, w) input with `stride` and zero
/// padding `pad`: `oh` × `ow` positions, oh = (h + 2·pad − fh) / stride + 1 (floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub fh: usize,
    pub fw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// Checks the sizes: a positive window and stride, and a window that fits the padded input.
    pub fn new(
        op: &'static str,
        shape: [usize; 4],
        (fh, fw): (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let [n, c, h, w] = shape;
        if fh == 0 || fw == 0 {
            return Err(KernelError::value(
                op,
                format!("the window must be at least 1x1, got {fh}x{fw}"),
            ));
        }
        if stride == 0 {
            return Err(KernelError::value(op, "stride must be at least 1, got 0"));
        }
        let (ph, pw) = (
            h.checked_add(pad.saturating_mul(2)),
            w.checked_add(pad.saturating_mul(2)),
        );
        let (Some(ph), Some(pw)) = (ph, pw) else {
            return Err(KernelError::value(op, format!("pad {pad} is too large")));
        };
        if ph < fh || pw < fw {
            return Err(KernelError::shape(
                op,
                format!(
                    "a {fh}x{fw} window does not fit input {} with pad {pad}",
                    fmt_shape(&shape)
                ),
            ));
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            fh,
            fw,
            stride,
            pad,
            oh: (ph - fh) / stride + 1,
            ow: (pw - fw) / stride + 1,
        })
    }

    /// Output positions per image and channel: oh·ow.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Entries of one window over all channels: C·FH·FW.
    pub fn patch(&self) -> usize {
        self.c * self.fh * self.fw
    }

    /// The output columns `j` whose input column j·stride + kx − pad lies in [0, w):
    /// a range lo..hi (empty when none does).
    fn valid_cols(&self, kx: usize) -> Range<usize> {
        valid(self.w, self.ow, self.stride, self.pad, kx)
    }

    fn valid_rows(&self, ky: usize) -> Range<usize> {
        valid(self.h, self.oh, self.stride, self.pad, ky)
    }
}

/// The outputs o < `out` with o·stride + k − pad in [0, len).
fn valid(len: usize, out: usize, stride: usize, pad: usize, k: usize) -> Range<usize> {
    let lo = pad.saturating_sub(k).div_ceil(stride);
    // o·stride + k − pad < len  ⇔  o·stride < len + pad − k
    let hi = (len + pad).saturating_sub(k).div_ceil(stride).min(out);
    lo.min(hi)..hi
}

/// Where one image's columns sit in a matrix of columns: rows (c, ky, kx) of length
/// `ld`, this image's oh·ow columns from `at` on.
#[derive(Clone, Copy)]
pub(crate) struct ColumnsAt {
    pub ld: usize,
    pub at: usize,
}

/// The columns of one C-contiguous image `img` (C, H, W) for its convolution: row
/// (c, ky, kx), column (i, j) = x[c, i·stride + ky − pad, j·stride + kx − pad], 0 in the
/// padding (the transpose of the image's rows of [`im2col`]).
pub(crate) fn image_columns<T: Float>(img: &[T], g: &Window, cols: &mut [T], pos: ColumnsAt) {
    let (ow, s, pad, hw) = (g.ow, g.stride, g.pad, g.h * g.w);
    let mut row = 0;
    for c in 0..g.c {
        let plane = &img[c * hw..(c + 1) * hw];
        for ky in 0..g.fh {
            let rows = g.valid_rows(ky);
            for kx in 0..g.fw {
                let jr = g.valid_cols(kx);
                let base = row * pos.ld + pos.at;
                row += 1;
                for i in 0..g.oh {
                    let dst = &mut cols[base + i * ow..base + (i + 1) * ow];
                    if !rows.contains(&i) || jr.is_empty() {
                        dst.fill(T::zero());
                        continue;
                    }
                    let y = i * s + ky - pad;
                    let x0 = jr.start * s + kx - pad;
                    dst[..jr.start].fill(T::zero());
                    dst[jr.end..].fill(T::zero());
                    let src = &plane[y * g.w..(y + 1) * g.w];
                    let dst = &mut dst[jr.start..jr.end];
                    if s == 1 {
                        dst.copy_from_slice(&src[x0..x0 + dst.len()]);
                    } else {
                        for (d, &v) in dst.iter_mut().zip(src[x0..].iter().step_by(s)) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`image_columns`]: the columns added into one image's gradient
/// `dimg` (C, H, W, C-contiguous); entries that fall in the padding are dropped.
fn add_image_columns<T: Float>(dcols: &[T], pos: ColumnsAt, g: &Window, dimg: &mut [T]) {
    let (ow, s, pad, hw) = (g.ow, g.stride, g.pad, g.h * g.w);
    let mut row = 0;
    for c in 0..g.c {
        let plane = &mut dimg[c * hw..(c + 1) * hw];
        for ky in 0..g.fh {
            let rows = g.valid_rows(ky);
            for kx in 0..g.fw {
                let jr = g.valid_cols(kx);
                let base = row * pos.ld + pos.at;
                row += 1;
                if jr.is_empty() {
                    continue;
                }
                for i in rows.clone() {
                    let y = i * s + ky - pad;
                    let x0 = jr.start * s + kx - pad;
                    let src = &dcols[base + i * ow + jr.start..base + i * ow + jr.end];
                    let dst = &mut plane[y * g.w + x0..(y + 1) * g.w];
                    for (d, &v) in dst.iter_mut().step_by(s).zip(src) {
                        *d = *d + v;
                    }
                }
            }
        }
    }
}

/// The book's `im2col`: x (N, C, H, W) → col (N·oh·ow, C·FH·FW), row (n, i, j) the
/// window at output position (i, j) of image n in (c, ky, kx) order, zero-padded by
/// `pad`. Any strides. Errors: a window or stride of 0, a window larger than the
/// padded input, a result too large to allocate.
pub fn im2col<T: Float>(
    x: ArrayView4<'_, T>,
    fh: usize,
    fw: usize,
    stride: usize,
    pad: usize,
) -> Result<Array2<T>> {
    let g = Window::new("im2col", x.dim().into(), (fh, fw), stride, pad)?;
    let rows = g.n.saturating_mul(g.positions());
    let mut col = try_zeros2("im2col", rows, g.patch())?;
    if col.is_empty() {
        return Ok(col);
    }
    let p = g.positions();
    let mut cols = try_zeros2::<T>("im2col", g.patch(), p)?;
    let xs = x.as_standard_layout();
    let chw = g.c * g.h * g.w;
    for (n, mut block) in col.axis_chunks_iter_mut(Axis(0), p).enumerate() {
        let img = contiguous("im2col", xs.as_slice())?;
        let cs = contiguous_mut("im2col", cols.as_slice_mut())?;
        image_columns(
            &img[n * chw..(n + 1) * chw],
            &g,
            cs,
            ColumnsAt { ld: p, at: 0 },
        );
        block.assign(&cols.t());
    }
    Ok(col)
}

/// The book's `col2im`, the adjoint of [`im2col`]: col (N·oh·ow, C·FH·FW) summed back
/// into an image of `shape` (N, C, H, W); overlapping windows add up, the padding is
/// cut off. Any strides. Errors: as [`im2col`], and a `col` of another shape.
pub fn col2im<T: Float>(
    col: ArrayView2<'_, T>,
    shape: [usize; 4],
    fh: usize,
    fw: usize,
    stride: usize,
    pad: usize,
) -> Result<Array4<T>> {
    let g = Window::new("col2im", shape, (fh, fw), stride, pad)?;
    let want = [g.n.saturating_mul(g.positions()), g.patch()];
    if col.shape() != want {
        return Err(KernelError::shape(
            "col2im",
            format!(
                "col has shape {} but an input of shape {} with a {fh}x{fw} window, stride \
                 {stride} and pad {pad} needs {}",
                fmt_shape(col.shape()),
                fmt_shape(&shape),
                fmt_shape(&want)
            ),
        ));
    }
    let mut img = try_zeros("col2im", ndarray::Ix4(g.n, g.c, g.h, g.w))?;
    let p = g.positions();
    let mut cols = try_zeros2::<T>("col2im", g.patch(), p)?;
    let chw = g.c * g.h * g.w;
    for (n, block) in col.axis_chunks_iter(Axis(0), p).enumerate() {
        cols.assign(&block.t());
        let cs = contiguous("col2im", cols.as_slice())?;
        let is = contiguous_mut("col2im", img.as_slice_mut())?;
        add_image_columns(
            cs,
            ColumnsAt { ld: p, at: 0 },
            &g,
            &mut is[n * chw..(n + 1) * chw],
        );
    }
    Ok(img)
}

/// The data of a C-contiguous array (always so for the arrays made here).
fn contiguous<'a, T>(op: &'static str, s: Option<&'a [T]>) -> Result<&'a [T]> {
    s.ok_or_else(|| KernelError::value(op, "internal: an array is not contiguous"))
}

fn contiguous_mut<'a, T>(op: &'static str, s: Option<&'a mut [T]>) -> Result<&'a mut [T]> {
    s.ok_or_else(|| KernelError::value(op, "internal: an array is not contiguous"))
}

/// Gradients of the Convolution layer: dx like x, dW like W, db like b.
#[derive(Debug, Clone)]
pub struct ConvGradients<T> {
    pub dx: Array4<T>,
    pub dw: Array4<T>,
    pub db: Array1<T>,
}

/// Checks x (N, C, H, W) against W (FN, C, FH, FW) and b (FN,) and returns the window.
fn conv_window<T>(
    op: &'static str,
    x: &ArrayView4<'_, T>,
    w: &ArrayView4<'_, T>,
    b_len: usize,
    stride: usize,
    pad: usize,
) -> Result<Window> {
    let (fnum, wc, fh, fw) = w.dim();
    if x.dim().1 != wc {
        return Err(KernelError::shape(
            op,
            format!(
                "x has shape {} but W has shape {}; x's channels (axis 1) must equal W's (axis 1)",
                fmt_shape(x.shape()),
                fmt_shape(w.shape())
            ),
        ));
    }
    if b_len != fnum {
        return Err(KernelError::shape(
            op,
            format!(
                "b has {b_len} entries but W has shape {}; need one bias per filter",
                fmt_shape(w.shape())
            ),
        ));
    }
    Window::new(op, x.dim().into(), (fh, fw), stride, pad)
}

/// Entries of the column matrix one product reads (512 kB of f32): enough images side by
/// side that the GEMM gets a long dimension (one image's oh·ow alone makes it pay its
/// packing overhead per few columns), few enough that they stay in a core's L2 cache.
const COLS_PER_PRODUCT: usize = 1 << 17;

/// Images whose columns go into one product.
pub(crate) fn images_per_product(g: &Window) -> usize {
    (COLS_PER_PRODUCT / g.patch().saturating_mul(g.positions()).max(1)).max(1)
}

/// Multiply-adds per block of images between two interrupt checks (tens of ms).
const BLOCK_MACS: usize = 1 << 27;

/// Runs `part(images, output)` over a batch of `n` images: blocks of images between
/// calls to `interrupt` (on the calling thread), each block cut into one part per
/// thread when its work pays for threads ([`parallel_worth`]). Blocks and parts start at
/// multiples of `align` images (parts that sum over groups of `align` images then sum
/// the same groups whatever the thread count). `outputs(block, per)` hands out the
/// disjoint outputs of a block's parts of `per` images; `collect` takes each part's
/// result in image order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn over_batch<T, O: Send, R: Send>(
    op: &'static str,
    n: usize,
    macs_per_image: usize,
    align: usize,
    interrupt: &(dyn Fn() -> bool + Sync),
    mut outputs: impl FnMut(Range<usize>, usize) -> Vec<O>,
    part: impl Fn(Range<usize>, O) -> R + Sync,
    mut collect: impl FnMut(R),
) -> Result<()> {
    let align = align.max(1);
    let per_block = (BLOCK_MACS / macs_per_image.max(1))
        .max(1)
        .next_multiple_of(align);
    let mut start = 0;
    while start < n {
        let end = n.min(start + per_block);
        let macs = (end - start).saturating_mul(macs_per_image);
        let threads = if parallel_worth::<T>(macs) {
            parallel::num_threads()
        } else {
            1
        };
        let per = (end - start)
            .div_ceil(threads.max(1))
            .next_multiple_of(align);
        let outs = outputs(start..end, per);
        let run = |(p, o): (usize, O)| {
            let lo = start + p * per;
            part(lo..end.min(lo + per), o)
        };
        let results: Vec<R> = if outs.len() > 1 {
            parallel::install(|_| outs.into_par_iter().enumerate().map(run).collect())
        } else {
            outs.into_iter().enumerate().map(run).collect()
        };
        results.into_iter().for_each(&mut collect);
        start = end;
        if start < n && interrupt() {
            return Err(KernelError::Interrupted { op });
        }
    }
    Ok(())
}

/// The next `count` images of `rest` (taken off its front) in parts of `per` images.
pub(crate) fn split_images<'a, T>(
    rest: &mut Option<ndarray::ArrayViewMut4<'a, T>>,
    count: usize,
    per: usize,
) -> Vec<ndarray::ArrayViewMut4<'a, T>> {
    let mut parts = Vec::new();
    if let Some(view) = rest.take() {
        let (mut head, tail) = view.split_at(Axis(0), count);
        *rest = Some(tail);
        while head.len_of(Axis(0)) > per.max(1) {
            let (a, b) = head.split_at(Axis(0), per.max(1));
            parts.push(a);
            head = b;
        }
        parts.push(head);
    }
    parts
}

/// W (FN, C, FH, FW) as the matrix (FN, C·FH·FW), copied only when not C-contiguous.
fn filters<'a, T: Float>(
    w: &'a ArrayView4<'_, T>,
) -> Result<ndarray::CowArray<'a, T, ndarray::Ix2>> {
    let (fnum, c, fh, fw) = w.dim();
    w.as_standard_layout()
        .into_shape_with_order((fnum, c * fh * fw))
        .map_err(|e| KernelError::value("convolution", e.to_string()))
}

/// The Convolution layer's forward: `out[n, f, i, j] = b[f] + Σ_{c,ky,kx}
/// W[f, c, ky, kx]·x[n, c, i·stride + ky − pad, j·stride + kx − pad]` (zero padding).
/// x (N, C, H, W), W (FN, C, FH, FW), b (FN,) → (N, FN, oh, ow). Any strides. Runs
/// images in parallel above [`parallel_worth`]; calls `interrupt` between blocks of
/// images and stops with [`KernelError::Interrupted`] when it returns true.
pub fn conv_forward<T: Float>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    b: ndarray::ArrayView1<'_, T>,
    stride: usize,
    pad: usize,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<Array4<T>> {
    const OP: &str = "conv_forward";
    let g = conv_window(OP, &x, &w, b.len(), stride, pad)?;
    let fnum = w.dim().0;
    let mut out = try_zeros(OP, ndarray::Ix4(g.n, fnum, g.oh, g.ow))?;
    if out.is_empty() {
        return Ok(out);
    }
    let wf = filters(&w)?;
    let (wf, p) = (wf.view(), g.positions());
    let macs = fnum.saturating_mul(g.patch()).saturating_mul(p);
    // Each part gets its own rows of out; the others are untouched.
    let mut rest = Some(out.view_mut());
    let outputs = |range: Range<usize>, per: usize| split_images(&mut rest, range.len(), per);
    let per_gemm = images_per_product(&g);
    let xs = x.as_standard_layout();
    let xs = contiguous(OP, xs.as_slice())?;
    let chw = g.c * g.h * g.w;
    let part = |images: Range<usize>, mut o: ndarray::ArrayViewMut4<'_, T>| -> Result<()> {
        let os = contiguous_mut(OP, o.as_slice_mut())?;
        let width = per_gemm.min(images.len()) * p;
        let mut cols = try_zeros2::<T>(OP, g.patch(), width)?;
        let mut prod = try_zeros2::<T>(OP, fnum, width)?;
        for first in images.clone().step_by(per_gemm) {
            let last = images.end.min(first + per_gemm);
            let w = (last - first) * p;
            let cs = contiguous_mut(OP, cols.as_slice_mut())?;
            for n in first..last {
                let at = ColumnsAt {
                    ld: width,
                    at: (n - first) * p,
                };
                image_columns(&xs[n * chw..(n + 1) * chw], &g, cs, at);
            }
            // prod (FN, B·oh·ow) = W · cols: the images' columns side by side
            gemm_into(
                wf,
                cols.slice(s![.., ..w]),
                prod.slice_mut(s![.., ..w]),
                false,
            );
            let ps = contiguous(OP, prod.as_slice())?;
            for n in first..last {
                let (at, k) = ((n - first) * p, n - images.start);
                for (f, &bf) in b.iter().enumerate() {
                    // out[n, f] = b[f] + prod[f, positions of image n]
                    let dst = &mut os[(k * fnum + f) * p..(k * fnum + f + 1) * p];
                    let src = &ps[f * width + at..f * width + at + p];
                    dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v + bf);
                }
            }
        }
        Ok(())
    };
    let mut status = Ok(());
    over_batch::<T, _, _>(OP, g.n, macs, per_gemm, interrupt, outputs, part, |r| {
        if status.is_ok() {
            status = r;
        }
    })?;
    status?;
    Ok(out)
}

/// The Convolution layer's backward: with dout (N, FN, oh, ow),
/// `dW[f] = Σ_n dout[n, f] · cols[n]ᵀ`, `db[f] = Σ_{n,i,j} dout[n, f, i, j]`,
/// `dx = col2im(Wᵀ · dout[n])` per image (the book's `col2im(dout·col_Wᵀ)`).
/// x (N, C, H, W), W (FN, C, FH, FW) → dx like x, dW like W, db (FN,). Any strides;
/// images in parallel above [`parallel_worth`]; `interrupt` as [`conv_forward`].
pub fn conv_backward<T: Float>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    dout: ArrayView4<'_, T>,
    stride: usize,
    pad: usize,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<ConvGradients<T>> {
    const OP: &str = "conv_backward";
    let fnum = w.dim().0;
    let g = conv_window(OP, &x, &w, fnum, stride, pad)?;
    if dout.dim() != (g.n, fnum, g.oh, g.ow) {
        return Err(KernelError::shape(
            OP,
            format!(
                "dout has shape {} but the forward output has shape {}",
                fmt_shape(dout.shape()),
                fmt_shape(&[g.n, fnum, g.oh, g.ow])
            ),
        ));
    }
    let mut dx = try_zeros(OP, ndarray::Ix4(g.n, g.c, g.h, g.w))?;
    let mut dw = try_zeros2::<T>(OP, fnum, g.patch())?;
    let mut db = Array1::<T>::zeros(fnum);
    let wf = filters(&w)?;
    let (wf, p) = (wf.view(), g.positions());
    let dout = dout.as_standard_layout();
    let dout = dout.view();
    // Two products per image: dW and dcols.
    let macs = fnum
        .saturating_mul(g.patch())
        .saturating_mul(p)
        .saturating_mul(2);
    if g.n > 0 && p > 0 && fnum > 0 {
        let mut rest = Some(dx.view_mut());
        let outputs = |range: Range<usize>, per: usize| split_images(&mut rest, range.len(), per);
        let per_gemm = images_per_product(&g);
        let xs = x.as_standard_layout();
        let xs = contiguous(OP, xs.as_slice())?;
        let ds = contiguous(OP, dout.as_slice())?;
        let chw = g.c * g.h * g.w;
        // dW and db of every group of per_gemm images (groups start at multiples of
        // per_gemm: over_batch aligns the parts), added up in image order afterwards, so
        // the sums do not depend on how many threads shared the batch.
        let part = |images: Range<usize>,
                    mut dxo: ndarray::ArrayViewMut4<'_, T>|
         -> Result<Vec<(Array2<T>, Array1<T>)>> {
            let dxs = contiguous_mut(OP, dxo.as_slice_mut())?;
            let width = per_gemm.min(images.len()) * p;
            let mut cols = try_zeros2::<T>(OP, g.patch(), width)?;
            let mut dcols = try_zeros2::<T>(OP, g.patch(), width)?;
            let mut d = try_zeros2::<T>(OP, fnum, width)?;
            let mut sums = Vec::with_capacity(images.len().div_ceil(per_gemm));
            for first in images.clone().step_by(per_gemm) {
                let last = images.end.min(first + per_gemm);
                let w = (last - first) * p;
                let cs = contiguous_mut(OP, cols.as_slice_mut())?;
                let dd = contiguous_mut(OP, d.as_slice_mut())?;
                for n in first..last {
                    let at = (n - first) * p;
                    let pos = ColumnsAt { ld: width, at };
                    image_columns(&xs[n * chw..(n + 1) * chw], &g, cs, pos);
                    // d (FN, B·oh·ow): the images' dout side by side
                    for f in 0..fnum {
                        let src = &ds[(n * fnum + f) * p..(n * fnum + f + 1) * p];
                        dd[f * width + at..f * width + at + p].copy_from_slice(src);
                    }
                }
                let (cols_b, d_b) = (cols.slice(s![.., ..w]), d.slice(s![.., ..w]));
                let mut dw_group = try_zeros2::<T>(OP, fnum, g.patch())?;
                let mut db_group = Array1::<T>::zeros(fnum);
                gemm_into(d_b, cols_b.t(), dw_group.view_mut(), false); // d·colsᵀ
                gemm_into(wf.t(), d_b, dcols.slice_mut(s![.., ..w]), false); // dcols = Wᵀ·d
                let dcs = contiguous(OP, dcols.as_slice())?;
                for n in first..last {
                    let (at, k) = ((n - first) * p, n - images.start);
                    let pos = ColumnsAt { ld: width, at };
                    add_image_columns(dcs, pos, &g, &mut dxs[k * chw..(k + 1) * chw]);
                }
                row_sums_into(d_b, &mut db_group);
                sums.push((dw_group, db_group));
            }
            Ok(sums)
        };
        let mut status = Ok(());
        over_batch::<T, _, _>(
            OP,
            g.n,
            macs,
            per_gemm,
            interrupt,
            outputs,
            part,
            |r| match r {
                Ok(sums) => {
                    for (dwg, dbg) in sums {
                        dw.zip_mut_with(&dwg, |a, &v| *a = *a + v);
                        db.zip_mut_with(&dbg, |a, &v| *a = *a + v);
                    }
                }
                Err(e) => {
                    if status.is_ok() {
                        status = Err(e);
                    }
                }
            },
        )?;
        status?;
    }
    let dw = dw
        .into_shape_with_order(w.raw_dim())
        .map_err(|e| KernelError::value(OP, e.to_string()))?;
    Ok(ConvGradients { dx, dw, db })
}

/// db[f] += Σ_p d[f, p] for a C-contiguous d (FN, P).
fn row_sums_into<T: Float>(d: ArrayView2<'_, T>, db: &mut Array1<T>) {
    for (row, acc) in d.rows().into_iter().zip(db.iter_mut()) {
        *acc = *acc + row.as_slice().map_or_else(|| row.sum(), sum_slice);
    }
}

/// Σ v, eight interleaved partial sums so the adds vectorise.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(crate) fn sum_slice<T: Float>(v: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = *a + x;
        }
    }
    let tail: T = chunks.remainder().iter().copied().sum();
    acc.iter().copied().sum::<T>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array};

    fn never() -> bool {
        false
    }

    fn ramp(shape: (usize, usize, usize, usize)) -> Array4<f64> {
        Array::from_iter((0..shape.0 * shape.1 * shape.2 * shape.3).map(|v| v as f64))
            .into_shape_with_order(shape)
            .unwrap_or_else(|_| Array4::zeros(shape))
    }

    /// A 3x3 image, 2x2 window, stride 1: four patches read off by hand.
    #[test]
    fn im2col_by_hand() -> Result<()> {
        let x = ramp((1, 1, 3, 3)); // 0 1 2 / 3 4 5 / 6 7 8
        let col = im2col(x.view(), 2, 2, 1, 0)?;
        let want = ndarray::arr2(&[
            [0., 1., 3., 4.],
            [1., 2., 4., 5.],
            [3., 4., 6., 7.],
            [4., 5., 7., 8.],
        ]);
        assert_eq!(col, want);
        Ok(())
    }

    /// Padding 1 and stride 2 on a 2x2 image: each 2x2 window sees one pixel.
    #[test]
    fn im2col_padding_and_stride() -> Result<()> {
        let x = ramp((1, 1, 2, 2)).mapv(|v| v + 1.0); // 1 2 / 3 4
        let col = im2col(x.view(), 2, 2, 2, 1)?;
        let want = ndarray::arr2(&[
            [0., 0., 0., 1.],
            [0., 0., 2., 0.],
            [0., 3., 0., 0.],
            [4., 0., 0., 0.],
        ]);
        assert_eq!(col, want);
        Ok(())
    }

    /// col2im of all ones counts how many windows cover each pixel.
    #[test]
    fn col2im_counts_overlaps() -> Result<()> {
        let col = Array2::<f64>::ones((4, 4));
        let img = col2im(col.view(), [1, 1, 3, 3], 2, 2, 1, 0)?;
        let want = [1., 2., 1., 2., 4., 2., 1., 2., 1.];
        assert_eq!(img.iter().copied().collect::<Vec<_>>(), want);
        Ok(())
    }

    /// A 2x2 filter of ones plus bias 1 over a 3x3 ramp: each output is its window sum + 1.
    #[test]
    fn forward_and_backward_by_hand() -> Result<()> {
        let x = ramp((1, 1, 3, 3));
        let w = Array4::<f64>::ones((1, 1, 2, 2));
        let out = conv_forward(x.view(), w.view(), arr1(&[1.0]).view(), 1, 0, &never)?;
        assert_eq!(out.iter().copied().collect::<Vec<_>>(), [9., 13., 21., 25.]);
        // dout of ones: db = 4; dW[ky, kx] = sum of the pixels the weight saw;
        // dx = how many windows cover each pixel.
        let dout = Array4::<f64>::ones((1, 1, 2, 2));
        let g = conv_backward(x.view(), w.view(), dout.view(), 1, 0, &never)?;
        assert_eq!(g.db, arr1(&[4.0]));
        assert_eq!(
            g.dw.iter().copied().collect::<Vec<_>>(),
            [8., 12., 20., 24.]
        );
        assert_eq!(
            g.dx.iter().copied().collect::<Vec<_>>(),
            [1., 2., 1., 2., 4., 2., 1., 2., 1.]
        );
        Ok(())
    }

    /// Forward equals im2col · Wᵀ for two images, two channels, three filters, padding.
    #[test]
    fn forward_equals_the_books_product() -> Result<()> {
        let x = ramp((2, 2, 4, 5)).mapv(|v| (v * 0.37).sin());
        let w = ramp((3, 2, 3, 2)).mapv(|v| (v * 0.11).cos());
        let b = arr1(&[0.5, -1.0, 2.0]);
        let out = conv_forward(x.view(), w.view(), b.view(), 2, 1, &never)?;
        let col = im2col(x.view(), 3, 2, 2, 1)?;
        let col_w = w
            .view()
            .into_shape_with_order((3, 12))
            .map_err(|e| KernelError::value("t", e.to_string()))?;
        let y = col.dot(&col_w.t()) + &b; // (N·oh·ow, FN)
        let (oh, ow) = (out.dim().2, out.dim().3);
        for n in 0..2 {
            for f in 0..3 {
                for i in 0..oh {
                    for j in 0..ow {
                        let want = y[[(n * oh + i) * ow + j, f]];
                        assert!((out[[n, f, i, j]] - want).abs() < 1e-12);
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn errors_name_the_shapes_and_interrupt_stops() -> Result<()> {
        let x = Array4::<f32>::zeros((2, 3, 5, 5));
        let w = Array4::<f32>::zeros((4, 2, 3, 3));
        let b = Array1::<f32>::zeros(4);
        let e = conv_forward(x.view(), w.view(), b.view(), 1, 0, &never);
        assert!(matches!(e, Err(KernelError::Shape { .. })));
        let w = Array4::<f32>::zeros((4, 3, 7, 7));
        assert!(conv_forward(x.view(), w.view(), b.view(), 1, 0, &never).is_err());
        assert!(im2col(x.view(), 3, 3, 0, 0).is_err());
        // Many images, each its own block: the check between blocks stops the run.
        let x = Array4::<f32>::zeros((4, 64, 64, 64));
        let w = Array4::<f32>::zeros((64, 64, 5, 5));
        let b = Array1::<f32>::zeros(64);
        let e = conv_forward(x.view(), w.view(), b.view(), 1, 2, &|| true);
        assert_eq!(
            e.err(),
            Some(KernelError::Interrupted { op: "conv_forward" })
        );
        Ok(())
    }
}
