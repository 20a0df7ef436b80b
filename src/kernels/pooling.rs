//! ch. 7 max pooling: the Pooling layer's forward (with the arg-max of each window) and
//! backward.
//!
//! The book pools through `im2col`: each window becomes a row, `np.argmax`/`np.max`
//! pick its largest entry, and backward scatters `dout` to the arg-max through
//! `col2im`. These kernels walk the windows in place, without the column matrix; the
//! arg-max is the same window index (ky·pool_w + kx, the first largest entry, padding
//! counting as 0 as in the book) and windows that overlap add their gradients as
//! `col2im` does.

use std::ops::Range;

use ndarray::{Array4, ArrayView2, ArrayView4, ArrayViewMut2};

use super::conv::{over_batch, split_images, Window};
use super::Float;
use crate::error::{fmt_shape, try_zeros, KernelError, Result};

type OutView<'a, T> = ndarray::ArrayViewMut4<'a, T>;

/// Max pooling of x (N, C, H, W) by `pool_h`×`pool_w` windows with `stride` and zero
/// padding `pad`: out[n, c, i, j] = max of the window at (i·stride − pad, j·stride − pad)
/// and arg_max[n, c, i, j] = its index ky·pool_w + kx (the first maximum; a NaN wins as
/// in `np.argmax`). Both (N, C, oh, ow). Any strides. Errors: as [`Window::new`].
pub fn pool_forward<T: Float>(
    x: ArrayView4<'_, T>,
    pool_h: usize,
    pool_w: usize,
    stride: usize,
    pad: usize,
    interrupt: &(dyn Fn() -> bool + Sync),
) -> Result<(Array4<T>, Array4<i64>)> {
    const OP: &str = "pool_forward";
    let g = Window::new(OP, x.dim().into(), (pool_h, pool_w), stride, pad)?;
    let dim = ndarray::Ix4(g.n, g.c, g.oh, g.ow);
    let mut out = try_zeros::<T, _>(OP, dim)?;
    let mut arg = try_zeros::<i64, _>(OP, dim)?;
    if out.is_empty() {
        return Ok((out, arg));
    }
    let work = g.c * g.positions() * pool_h * pool_w;
    let (mut rest_out, mut rest_arg) = (Some(out.view_mut()), Some(arg.view_mut()));
    let outputs = |range: Range<usize>, per: usize| {
        let o = split_images(&mut rest_out, range.len(), per);
        let a = split_images(&mut rest_arg, range.len(), per);
        o.into_iter().zip(a).collect::<Vec<_>>()
    };
    let part = |images: Range<usize>, (mut o, mut a): (OutView<'_, T>, OutView<'_, i64>)| {
        let mut padded = vec![T::zero(); (g.h + 2 * g.pad) * (g.w + 2 * g.pad)];
        for (k, n) in images.enumerate() {
            for c in 0..g.c {
                let plane = x.slice(ndarray::s![n, c, .., ..]);
                let oc = o.slice_mut(ndarray::s![k, c, .., ..]);
                let ac = a.slice_mut(ndarray::s![k, c, .., ..]);
                pad_plane(plane, g.pad, &mut padded);
                pool_plane(&padded, &g, oc, ac);
            }
        }
    };
    over_batch::<T, _, _>(OP, g.n, work, interrupt, outputs, part, |()| {})?;
    Ok((out, arg))
}

/// A plane (H, W) copied into `padded` (H + 2·pad, W + 2·pad), zeros around it: then
/// every window lies inside and the loops need no bounds tests.
fn pad_plane<T: Float>(plane: ArrayView2<'_, T>, pad: usize, padded: &mut [T]) {
    let wp = plane.ncols() + 2 * pad;
    for (y, row) in plane.rows().into_iter().enumerate() {
        let at = (y + pad) * wp + pad;
        let dst = &mut padded[at..at + row.len()];
        dst.iter_mut().zip(row.iter()).for_each(|(d, &v)| *d = v);
    }
}

/// The max and arg-max of each window of a zero-padded plane.
fn pool_plane<T: Float>(
    padded: &[T],
    g: &Window,
    mut out: ArrayViewMut2<'_, T>,
    mut arg: ArrayViewMut2<'_, i64>,
) {
    let wp = g.w + 2 * g.pad;
    for i in 0..g.oh {
        for j in 0..g.ow {
            let at = i * g.stride * wp + j * g.stride;
            let mut best = padded[at];
            let mut best_k = 0usize;
            for ky in 0..g.fh {
                let row = &padded[at + ky * wp..at + ky * wp + g.fw];
                for (kx, &v) in row.iter().enumerate() {
                    // The first maximum wins; a NaN wins as in np.argmax.
                    if v > best || (v.is_nan() && !best.is_nan()) {
                        best = v;
                        best_k = ky * g.fw + kx;
                    }
                }
            }
            out[[i, j]] = best;
            arg[[i, j]] = best_k as i64;
        }
    }
}

/// The Pooling layer's backward: dx (N, C, H, W) of `x_shape`, zero except that each
/// dout[n, c, i, j] is added at the input position of its window's arg-max (dropped when
/// that is padding). dout and arg_max: (N, C, oh, ow). Errors: shapes that do not fit,
/// an arg-max outside [0, pool_h·pool_w).
pub fn pool_backward<T: Float>(
    dout: ArrayView4<'_, T>,
    arg_max: ArrayView4<'_, i64>,
    x_shape: [usize; 4],
    pool_h: usize,
    pool_w: usize,
    stride: usize,
    pad: usize,
) -> Result<Array4<T>> {
    const OP: &str = "pool_backward";
    let g = Window::new(OP, x_shape, (pool_h, pool_w), stride, pad)?;
    let want = [g.n, g.c, g.oh, g.ow];
    for (name, shape) in [("dout", dout.shape()), ("arg_max", arg_max.shape())] {
        if shape != want {
            return Err(KernelError::shape(
                OP,
                format!(
                    "{name} has shape {} but pooling an input of shape {} gives {}",
                    fmt_shape(shape),
                    fmt_shape(&x_shape),
                    fmt_shape(&want)
                ),
            ));
        }
    }
    let size = (pool_h * pool_w) as i64;
    if let Some(bad) = arg_max.iter().find(|&&k| !(0..size).contains(&k)) {
        return Err(KernelError::value(
            OP,
            format!("arg_max holds {bad}, outside [0, {size}) for a {pool_h}x{pool_w} window"),
        ));
    }
    let mut dx = try_zeros::<T, _>(OP, ndarray::Ix4(g.n, g.c, g.h, g.w))?;
    let wp = g.w + 2 * pad;
    let mut padded = vec![T::zero(); (g.h + 2 * pad) * wp];
    for n in 0..g.n {
        for c in 0..g.c {
            let d = dout.slice(ndarray::s![n, c, .., ..]);
            let a = arg_max.slice(ndarray::s![n, c, .., ..]);
            padded.fill(T::zero());
            for ((i, j), &v) in d.indexed_iter() {
                let k = a[[i, j]] as usize; // in [0, pool_h·pool_w): checked above
                let at = (i * stride + k / pool_w) * wp + j * stride + k % pool_w;
                padded[at] = padded[at] + v;
            }
            // The interior is dx's plane; what fell on the padding is dropped.
            let mut plane = dx.slice_mut(ndarray::s![n, c, .., ..]);
            for (y, mut row) in plane.rows_mut().into_iter().enumerate() {
                let at = (y + pad) * wp + pad;
                row.iter_mut()
                    .zip(&padded[at..at + g.w])
                    .for_each(|(r, &v)| *r = v);
            }
        }
    }
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn never() -> bool {
        false
    }

    /// The book's fig. 7-14 example: 2x2 windows, stride 2, over a 4x4 plane.
    #[test]
    fn forward_and_backward_by_hand() -> Result<()> {
        let x = Array::from_shape_vec(
            (1, 1, 4, 4),
            vec![
                1., 2., 1., 0., 0., 1., 2., 3., 3., 0., 1., 2., 2., 4., 0., 1.,
            ],
        )
        .map_err(|e| KernelError::value("test", e.to_string()))?;
        let (out, arg) = pool_forward(x.view(), 2, 2, 2, 0, &never)?;
        assert_eq!(out.iter().copied().collect::<Vec<f64>>(), [2., 3., 4., 2.]);
        assert_eq!(arg.iter().copied().collect::<Vec<_>>(), [1, 3, 3, 1]);
        let dout = Array4::from_elem((1, 1, 2, 2), 1.0);
        let dx = pool_backward(dout.view(), arg.view(), [1, 1, 4, 4], 2, 2, 2, 0)?;
        let want = [
            0., 1., 0., 0., 0., 0., 0., 1., 0., 0., 0., 1., 0., 1., 0., 0.,
        ];
        assert_eq!(dx.iter().copied().collect::<Vec<_>>(), want);
        Ok(())
    }

    /// Ties go to the first entry; padding counts as 0; overlapping windows add up.
    #[test]
    fn ties_padding_and_overlap() -> Result<()> {
        let x = Array4::from_elem((1, 1, 2, 2), -1.0_f32);
        // pad 1, 2x2 windows, stride 2: each window holds one pixel and three of padding.
        let (out, arg) = pool_forward(x.view(), 2, 2, 2, 1, &never)?;
        assert_eq!(out.dim(), (1, 1, 2, 2));
        assert!(out.iter().all(|&v| v == 0.0));
        // The last window starts on the pixel (−1), then meets padding (0).
        assert_eq!(arg.iter().copied().collect::<Vec<_>>(), [0, 0, 0, 1]);
        let x = Array4::from_elem((1, 1, 3, 3), 5.0_f32);
        let (_, arg) = pool_forward(x.view(), 2, 2, 1, 0, &never)?;
        assert!(arg.iter().all(|&k| k == 0));
        let dx = pool_backward(
            Array4::ones((1, 1, 2, 2)).view(),
            arg.view(),
            [1, 1, 3, 3],
            2,
            2,
            1,
            0,
        )?;
        assert_eq!(
            dx.iter().copied().collect::<Vec<f32>>(),
            [1., 1., 0., 1., 1., 0., 0., 0., 0.]
        );
        Ok(())
    }

    #[test]
    fn bad_arg_max_and_shapes_are_errors() {
        let dout = Array4::<f64>::ones((1, 1, 2, 2));
        let arg = Array4::from_elem((1, 1, 2, 2), 4_i64);
        let e = pool_backward(dout.view(), arg.view(), [1, 1, 4, 4], 2, 2, 2, 0);
        assert!(matches!(e, Err(KernelError::Value { .. })));
        let arg = Array4::from_elem((1, 1, 2, 2), 0_i64);
        let e = pool_backward(dout.view(), arg.view(), [1, 1, 5, 5], 2, 2, 1, 0);
        assert!(matches!(e, Err(KernelError::Shape { .. })));
        let x = Array4::<f64>::zeros((1, 1, 1, 1));
        assert!(pool_forward(x.view(), 2, 2, 2, 0, &never).is_err());
    }
}
