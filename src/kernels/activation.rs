//! The activation functions of the book's chapter 3 (sigmoid, ReLU) and their
//! gradients: elementwise over arrays of any shape and strides, and the hidden-layer
//! [`Activation`] the networks use, with its forward and backward over row-major slices.

use std::mem::MaybeUninit;
use std::ops::Range;

use multiversion::multiversion;
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

use super::{math, parallel, Float};
use crate::error::{fmt_shape, try_uninit, try_zeros, KernelError, Result};

/// Arrays smaller than this many bytes are mapped on one thread: a map is about as
/// fast as writing its output. Contiguous arrays above it are mapped in pieces of this
/// size by the team's threads ([`parallel::split`], awake between calls); strided ones
/// by the rayon pool.
pub const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Whether mapping `len` elements of `T` is worth a second thread.
fn parallel_worth<T>(len: usize) -> bool {
    len.saturating_mul(std::mem::size_of::<T>()) >= PARALLEL_MIN_BYTES
}

/// `y = f(x)` elementwise, in parallel for large arrays. The output has x's shape
/// (C order, or Fortran order for a Fortran-ordered x).
pub(crate) fn map1<T: Float>(
    op: &'static str,
    x: ArrayViewD<'_, T>,
    f: impl Fn(T) -> T + Sync + Send,
) -> Result<ArrayD<T>> {
    // Contiguous input: map the buffer as one slice with the SIMD build of the loop,
    // straight into the output's memory (no zero fill first).
    if let Some(src) = x.as_slice() {
        return mapped(op, x.raw_dim(), src, &f);
    }
    let xt = x.view().reversed_axes();
    if let Some(src) = xt.as_slice() {
        return Ok(mapped(op, xt.raw_dim(), src, &f)?.reversed_axes());
    }
    let mut y = try_zeros(op, x.raw_dim())?;
    let zip = Zip::from(&mut y).and(&x);
    if !parallel_worth::<T>(x.len()) {
        zip.for_each(|y, &v| *y = f(v));
    } else {
        parallel::install(|threads| {
            if threads > 1 {
                zip.par_for_each(|y, &v| *y = f(v));
            } else {
                zip.for_each(|y, &v| *y = f(v));
            }
        });
    }
    Ok(y)
}

/// The buffer of a new array ([`try_zeros`], [`try_uninit`]: standard layout, hence
/// contiguous).
fn as_slice<T>(y: &mut ArrayD<T>) -> &mut [T] {
    match y.as_slice_mut() {
        Some(dst) => dst,
        None => unreachable!("a fresh array is contiguous"),
    }
}

/// A new array of shape `dim` written once, piece by piece: `write(range, piece)` must
/// write every element of `piece`, the elements `range` of the array (C order); long
/// arrays in pieces shared by the team's threads. [`KernelError::Alloc`] (naming `op`)
/// when memory runs out.
pub(crate) fn written<T: Float>(
    op: &'static str,
    dim: IxDyn,
    write: impl Fn(Range<usize>, &mut [MaybeUninit<T>]) + Sync,
) -> Result<ArrayD<T>> {
    let mut y = try_uninit(op, dim)?;
    let out = as_slice(&mut y);
    let len = out.len();
    if !parallel_worth::<T>(len) {
        write(0..len, out);
    } else {
        let piece = (PARALLEL_MIN_BYTES / std::mem::size_of::<T>()).max(1);
        let pieces: Vec<_> = out.chunks_mut(piece).enumerate().collect();
        parallel::split_items(pieces, |(k, d)| write(k * piece..k * piece + d.len(), d));
    }
    // SAFETY: every piece of the array was given to `write`, which writes all of it.
    Ok(unsafe { y.assume_init() })
}

/// `f` of every element of `src` as a new array of shape `dim` (as many elements, in
/// C order), written once ([`written`]).
fn mapped<T: Float>(
    op: &'static str,
    dim: IxDyn,
    src: &[T],
    f: &(impl Fn(T) -> T + Sync + Send),
) -> Result<ArrayD<T>> {
    written(op, dim, |r, d| math::map_slice_uninit(&src[r], d, f))
}

/// `z = f(x, y)` elementwise over two arrays of one shape.
pub(crate) fn map2<T: Float>(
    op: &'static str,
    names: (&str, &str),
    x: ArrayViewD<'_, T>,
    y: ArrayViewD<'_, T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Result<ArrayD<T>> {
    if x.shape() != y.shape() {
        return Err(KernelError::shape(
            op,
            format!(
                "{} has shape {} but {} has shape {}; they must match",
                names.0,
                fmt_shape(x.shape()),
                names.1,
                fmt_shape(y.shape())
            ),
        ));
    }
    if let (Some(xs), Some(ys)) = (x.as_slice(), y.as_slice()) {
        return zipped(op, x.raw_dim(), xs, ys, &f);
    }
    let mut z = try_zeros(op, x.raw_dim())?;
    let zip = Zip::from(&mut z).and(&x).and(&y);
    if !parallel_worth::<T>(x.len()) {
        zip.for_each(|z, &a, &b| *z = f(a, b));
    } else {
        parallel::install(|threads| {
            if threads > 1 {
                zip.par_for_each(|z, &a, &b| *z = f(a, b));
            } else {
                zip.for_each(|z, &a, &b| *z = f(a, b));
            }
        });
    }
    Ok(z)
}

/// `f` of the elements of `xs` and `ys` (as long as each other) as a new array of
/// shape `dim`, written once ([`written`]).
fn zipped<T: Float>(
    op: &'static str,
    dim: IxDyn,
    xs: &[T],
    ys: &[T],
    f: &(impl Fn(T, T) -> T + Sync + Send),
) -> Result<ArrayD<T>> {
    written(op, dim, |r: Range<usize>, d| {
        math::zip_slice_uninit(&xs[r.clone()], &ys[r], d, f)
    })
}

/// σ(x) = 1 / (1 + e⁻ˣ). Large |x| saturate to exactly 0 or 1 (e⁻ˣ overflows to ∞
/// harmlessly); NaN stays NaN.
#[inline(always)]
pub fn sigmoid_scalar<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_v())
}

/// σ(x) elementwise.  x: any shape -> same shape.
pub fn sigmoid<T: Float>(x: ArrayViewD<'_, T>) -> Result<ArrayD<T>> {
    map1("sigmoid", x, sigmoid_scalar)
}

/// σ'(x) = (1 − σ(x))·σ(x) elementwise (the book's `sigmoid_grad`, taking `x`).
pub fn sigmoid_grad<T: Float>(x: ArrayViewD<'_, T>) -> Result<ArrayD<T>> {
    map1("sigmoid_grad", x, |v| {
        let s = sigmoid_scalar(v);
        (T::one() - s) * s
    })
}

/// Backward pass of the sigmoid layer: dx = dout·(1 − y)·y, with y = σ(x) from forward.
pub fn sigmoid_backward<T: Float>(
    y: ArrayViewD<'_, T>,
    dout: ArrayViewD<'_, T>,
) -> Result<ArrayD<T>> {
    map2("sigmoid_backward", ("y", "dout"), y, dout, |y, d| {
        d * (T::one() - y) * y
    })
}

/// max(0, x) elementwise; NaN propagates as in NumPy's `maximum`.
pub fn relu<T: Float>(x: ArrayViewD<'_, T>) -> Result<ArrayD<T>> {
    map1("relu", x, |v| if v < T::zero() { T::zero() } else { v })
}

/// The book's `relu_grad`: 1 where x ≥ 0, else 0.
pub fn relu_grad<T: Float>(x: ArrayViewD<'_, T>) -> Result<ArrayD<T>> {
    map1("relu_grad", x, |v| {
        if v >= T::zero() {
            T::one()
        } else {
            T::zero()
        }
    })
}

/// Backward pass of the ReLU layer: dx = dout where x > 0, else 0 (the book's mask x ≤ 0).
pub fn relu_backward<T: Float>(x: ArrayViewD<'_, T>, dout: ArrayViewD<'_, T>) -> Result<ArrayD<T>> {
    map2("relu_backward", ("x", "dout"), x, dout, |x, d| {
        if x <= T::zero() {
            T::zero()
        } else {
            d
        }
    })
}

/// The activation after every hidden layer of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The book's chapter 4 network.
    Sigmoid,
    /// The book's chapter 5 network.
    Relu,
}

impl Activation {
    /// act(a) for one pre-activation.
    #[inline(always)]
    pub fn apply<T: Float>(self, a: T) -> T {
        match self {
            Activation::Sigmoid => sigmoid_scalar(a),
            Activation::Relu => {
                if a < T::zero() {
                    T::zero()
                } else {
                    a
                }
            }
        }
    }

    /// d act / d a, given the pre-activation `a` and the activation `z`.
    #[inline(always)]
    pub fn derivative<T: Float>(self, a: T, z: T) -> T {
        match self {
            Activation::Sigmoid => (T::one() - z) * z,
            Activation::Relu => {
                if a > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
        }
    }
}

/// z = act(a), elementwise over slices (sigmoid through the vectorisable `exp_v`).
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(crate) fn activate<T: Float>(act: Activation, a: &[T], z: &mut [T]) {
    match act {
        Activation::Sigmoid => {
            for (z, &a) in z.iter_mut().zip(a.iter()) {
                *z = sigmoid_scalar(a);
            }
        }
        Activation::Relu => {
            for (z, &a) in z.iter_mut().zip(a.iter()) {
                *z = if a > T::zero() { a } else { T::zero() };
            }
        }
    }
}

/// The activation layer's backward over rows of width w = db.len():
/// dz (n, w) ← dz ⊙ act'(a) (dz holding dL/dz on entry, dL/da on exit), and the next
/// bias's gradient db = Σ_rows dL/da.
#[multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub(crate) fn activation_backward<T: Float>(
    act: Activation,
    dz: &mut [T],
    a: &[T],
    z: &[T],
    db: &mut [T],
) {
    let w = db.len();
    db.fill(T::zero());
    for ((d, a), z) in dz
        .chunks_exact_mut(w)
        .zip(a.chunks_exact(w))
        .zip(z.chunks_exact(w))
    {
        for (((g, &a), &z), b) in d.iter_mut().zip(a).zip(z).zip(db.iter_mut()) {
            *g = *g * act.derivative(a, z);
            *b = *b + *g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array};

    #[test]
    fn sigmoid_by_hand() -> Result<()> {
        let y = sigmoid(arr1(&[-1.0_f64, 1.0, 2.0]).into_dyn().view())?;
        // The book's example: sigmoid([-1, 1, 2]) = [0.26894142, 0.73105858, 0.88079708]
        let want = [0.2689414213699951, 0.7310585786300049, 0.8807970779778823];
        for (got, want) in y.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn sigmoid_saturates_without_nan() -> Result<()> {
        let y = sigmoid(arr1(&[-1000.0_f32, 1000.0, 0.0]).into_dyn().view())?;
        assert_eq!(y.as_slice(), Some(&[0.0_f32, 1.0, 0.5][..]));
        let g = sigmoid_grad(arr1(&[0.0_f64, 1000.0]).into_dyn().view())?;
        assert_eq!(g.as_slice(), Some(&[0.25, 0.0][..]));
        Ok(())
    }

    #[test]
    fn relu_and_its_gradients() -> Result<()> {
        let x = arr1(&[-2.0_f64, -0.0, 0.0, 3.0, f64::NAN]).into_dyn();
        let y = relu(x.view())?;
        assert_eq!(&y.as_slice().unwrap_or(&[])[..4], &[0.0, -0.0, 0.0, 3.0]);
        assert!(y[4].is_nan());
        let g = relu_grad(x.view())?;
        assert_eq!(g.as_slice(), Some(&[0.0, 1.0, 1.0, 1.0, 0.0][..]));
        let dout = Array::from_elem(5, 2.0).into_dyn();
        let dx = relu_backward(x.view(), dout.view())?;
        assert_eq!(dx.as_slice(), Some(&[0.0, 0.0, 0.0, 2.0, 2.0][..]));
        Ok(())
    }

    #[test]
    fn large_arrays_take_the_parallel_path_and_agree() -> Result<()> {
        let x = Array::from_shape_fn((300, 300), |(i, j)| (i as f64 - j as f64) / 50.0).into_dyn();
        let y = sigmoid(x.view())?;
        let serial = x.mapv(sigmoid_scalar);
        assert_eq!(y, serial);
        let y_t = sigmoid(x.t())?;
        assert_eq!(y_t, serial.t());
        // Neither C nor Fortran order: the strided path.
        let every_other = x.slice(ndarray::s![..;2, ..;3]).into_dyn();
        assert_eq!(
            sigmoid(every_other.view())?,
            every_other.mapv(sigmoid_scalar)
        );
        Ok(())
    }

    #[test]
    fn impossible_outputs_are_an_error_not_an_abort() {
        let one = Array::from_elem(1, 1.0_f64);
        let huge = one.broadcast(1usize << 62).map(|v| v.into_dyn());
        let err = huge.map(|v| sigmoid(v).err());
        assert!(matches!(
            err,
            Some(Some(KernelError::Alloc { op: "sigmoid", .. }))
        ));
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let y = Array::<f64, _>::zeros((2, 3)).into_dyn();
        let d = Array::<f64, _>::zeros((3, 2)).into_dyn();
        let err = sigmoid_backward(y.view(), d.view())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("sigmoid_backward: y has shape (2, 3) but dout has shape (3, 2); they must match")
        );
    }
}
