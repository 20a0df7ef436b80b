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

use multiversion::multiversion;
use ndarray::{Array4, ArrayView4};

use super::conv::{over_batch, Window};
use super::Float;
use crate::error::{fmt_shape, try_zeros, KernelError, Result};

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
    let xs = x.as_standard_layout();
    let (Some(xs), Some(os), Some(as_)) = (xs.as_slice(), out.as_slice_mut(), arg.as_slice_mut())
    else {
        return Err(KernelError::value(OP, "internal: arrays not contiguous"));
    };
    let (plane_in, plane_out) = (g.h * g.w, g.positions());
    let work = g.c * plane_out * pool_h * pool_w;
    // Images in parts (one per thread when it pays), planes of (H, W) inside.
    let mut rest = Some((os, as_));
    let outputs = |range: Range<usize>, per: usize| {
        let mut parts = Vec::new();
        if let Some((o, a)) = rest.take() {
            let len = range.len() * g.c * plane_out;
            let (mut o_head, o_tail) = o.split_at_mut(len);
            let (mut a_head, a_tail) = a.split_at_mut(len);
            rest = Some((o_tail, a_tail));
            let step = per.max(1) * g.c * plane_out;
            while o_head.len() > step {
                let (o1, o2) = o_head.split_at_mut(step);
                let (a1, a2) = a_head.split_at_mut(step);
                parts.push((o1, a1));
                (o_head, a_head) = (o2, a2);
            }
            parts.push((o_head, a_head));
        }
        parts
    };
    let part = |images: Range<usize>, (o, a): (&mut [T], &mut [i64])| {
        let mut padded = vec![T::zero(); (g.h + 2 * g.pad) * (g.w + 2 * g.pad)];
        let first = images.start * g.c;
        let planes = o
            .chunks_exact_mut(plane_out)
            .zip(a.chunks_exact_mut(plane_out));
        for (p, (oc, ac)) in planes.enumerate() {
            let src = &xs[(first + p) * plane_in..(first + p + 1) * plane_in];
            if g.pad == 0 {
                pool_plane(src, &g, oc, ac);
            } else {
                pad_plane(src, &g, &mut padded);
                pool_plane(&padded, &g, oc, ac);
            }
        }
    };
    over_batch::<T, _, _>(OP, g.n, work, 1, interrupt, outputs, part, |()| {})?;
    Ok((out, arg))
}

/// A plane (H, W) copied into `padded` (H + 2·pad, W + 2·pad), zeros around it: then
/// every window lies inside and the loops need no bounds tests.
fn pad_plane<T: Float>(plane: &[T], g: &Window, padded: &mut [T]) {
    let wp = g.w + 2 * g.pad;
    for (y, row) in plane.chunks_exact(g.w).enumerate() {
        let at = (y + g.pad) * wp + g.pad;
        padded[at..at + g.w].copy_from_slice(row);
    }
}

/// The max and arg-max of each window of a plane (padded, or unpadded when pad = 0),
/// out and arg (oh·ow) in row order. 2×2 windows with stride 2 take
/// [`pool_plane_2x2`]; other windows, and planes holding a NaN, go one output row at a
/// time, window offset by window offset.
pub(crate) fn pool_plane<T: Float>(src: &[T], g: &Window, out: &mut [T], arg: &mut [i64]) {
    let wp = g.w + 2 * g.pad;
    let (fw, s, ow) = (g.fw, g.stride, g.ow);
    if (g.fh, fw, s) == (2, 2, 2) && !pool_plane_2x2(src, wp, ow, out, arg) {
        return;
    }
    // Without NaN (the usual case) max and an arithmetic index update; a plane with NaN
    // takes the comparisons that give np.argmax's answer (the first NaN).
    let has_nan = src.iter().fold(false, |acc, v| acc | v.is_nan());
    let rows = out.chunks_exact_mut(ow).zip(arg.chunks_exact_mut(ow));
    for (i, (orow, arow)) in rows.enumerate() {
        let top = i * s * wp;
        for (j, (o, a)) in orow.iter_mut().zip(arow.iter_mut()).enumerate() {
            *o = src[top + j * s];
            *a = 0;
        }
        for k in 1..g.fh * fw {
            let line = &src[top + (k / fw) * wp + k % fw..];
            let kk = k as i64;
            let cells = orow
                .iter_mut()
                .zip(arow.iter_mut())
                .zip(line.iter().step_by(s));
            if has_nan {
                for ((o, a), &v) in cells {
                    // The first maximum wins; a NaN wins as in np.argmax.
                    if v > *o || (v.is_nan() && !o.is_nan()) {
                        *o = v;
                        *a = kk;
                    }
                }
            } else {
                for ((o, a), &v) in cells {
                    let gt = i64::from(v > *o);
                    *a += gt * (kk - *a);
                    *o = o.max(v);
                }
            }
        }
    }
}

/// 2×2 windows with stride 2 (the book's pooling), every output row in one pass: each
/// window's four entries are read once, the max by comparisons that compile to SIMD
/// max and the arg-max as selects on equality with it (the first maximal entry).
/// Returns whether the plane held a NaN, in which case out and arg are not the
/// book's answer and the caller must redo the plane.
fn pool_plane_2x2<T: Float>(
    src: &[T],
    wp: usize,
    ow: usize,
    out: &mut [T],
    arg: &mut [i64],
) -> bool {
    let mut nan = false;
    let rows = out.chunks_exact_mut(ow).zip(arg.chunks_exact_mut(ow));
    for (i, (orow, arow)) in rows.enumerate() {
        let top = &src[2 * i * wp..];
        let (r0, r1) = (&top[..2 * ow], &top[wp..wp + 2 * ow]);
        nan |= pool_row_2x2(r0, r1, orow, arow);
    }
    nan
}

/// One output row of 2×2, stride-2 pooling over input rows `r0`, `r1` (2·ow long);
/// returns whether a NaN was seen.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn pool_row_2x2<T: Float>(r0: &[T], r1: &[T], out: &mut [T], arg: &mut [i64]) -> bool {
    let mut nan = false;
    let cells = out
        .iter_mut()
        .zip(arg.iter_mut())
        .zip(r0.chunks_exact(2).zip(r1.chunks_exact(2)));
    for ((o, a), (p, q)) in cells {
        let (v0, v1, v2, v3) = (p[0], p[1], q[0], q[1]);
        let m01 = if v1 > v0 { v1 } else { v0 };
        let m23 = if v3 > v2 { v3 } else { v2 };
        let m = if m23 > m01 { m23 } else { m01 };
        // The first of the four equal to the max: checked last to first.
        let k = if v2 == m { 2 } else { 3 };
        let k = if v1 == m { 1 } else { k };
        *a = if v0 == m { 0 } else { k };
        *o = m;
        // m is NaN only if v0 is; v1..v3 being NaN leaves m a number.
        nan |= v0.is_nan() | v1.is_nan() | v2.is_nan() | v3.is_nan();
    }
    nan
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
    let (d, a) = (dout.as_standard_layout(), arg_max.as_standard_layout());
    let (Some(ds), Some(args), Some(dxs)) = (d.as_slice(), a.as_slice(), dx.as_slice_mut()) else {
        return Err(KernelError::value(OP, "internal: arrays not contiguous"));
    };
    let wp = g.w + 2 * pad;
    let mut padded = vec![T::zero(); (g.h + 2 * pad) * wp];
    let plane_out = g.positions();
    // Window index k = ky·pool_w + kx → offset ky·wp + kx in the padded plane.
    let offsets: Vec<usize> = (0..pool_h * pool_w)
        .map(|k| (k / pool_w) * wp + k % pool_w)
        .collect();
    let planes = ds.chunks_exact(plane_out).zip(args.chunks_exact(plane_out));
    for ((dp, ap), dxp) in planes.zip(dxs.chunks_exact_mut(g.h * g.w)) {
        // Accumulate into a padded plane (every window inside), then keep its interior.
        let target: &mut [T] = if pad == 0 { dxp } else { &mut padded };
        if pad != 0 {
            target.fill(T::zero());
        }
        for (i, (drow, arow)) in dp.chunks_exact(g.ow).zip(ap.chunks_exact(g.ow)).enumerate() {
            for (j, (&v, &k)) in drow.iter().zip(arow).enumerate() {
                // k < pool_h·pool_w (checked above): its offset in the window
                let at = i * stride * wp + j * stride + offsets[k as usize];
                target[at] = target[at] + v;
            }
        }
        if pad != 0 {
            for (y, row) in dxp.chunks_exact_mut(g.w).enumerate() {
                let at = (y + pad) * wp + pad;
                row.copy_from_slice(&padded[at..at + g.w]);
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
