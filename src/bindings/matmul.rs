//! `matmul` and `affine` for Python.

use ndarray::{Ix1, Ix2};
use numpy::{Element, IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::convert::{dims, dispatch, float_array, run, same_dtype, FloatArray};
use crate::kernels::{matmul as k, Float};

/// Matrix product a·b of two 2-D float arrays of one dtype (float32 or float64), or of
/// a float32 a and a float64 b (a float32 batch against a float64 layer's arrays: the
/// float64 product, a's values converted as NumPy's promotion converts them).
///
/// ``trans_a`` / ``trans_b`` multiply by aᵀ / bᵀ instead, without copying: the
/// forms backprop needs (xᵀ·dy, dy·Wᵀ). Any strides.
#[pyfunction]
#[pyo3(signature = (a, b, *, trans_a = false, trans_b = false))]
pub fn matmul<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    trans_a: bool,
    trans_b: bool,
) -> PyResult<Bound<'py, PyAny>> {
    match float_array("matmul", "a", a)? {
        FloatArray::F32(a) if b.cast::<numpy::PyArrayDyn<f64>>().is_ok() => {
            matmul_t::<f64, f32>(py, a, b, trans_a, trans_b)
        }
        FloatArray::F32(a) => matmul_t::<f32, f32>(py, a, b, trans_a, trans_b),
        FloatArray::F64(a) => matmul_t::<f64, f64>(py, a, b, trans_a, trans_b),
    }
}

/// `matmul` for b of dtype T and a of dtype U.
fn matmul_t<'py, T: Float + Element, U: Float + Element>(
    py: Python<'py>,
    a: PyReadonlyArrayDyn<'py, U>,
    b: &Bound<'py, PyAny>,
    trans_a: bool,
    trans_b: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let b = same_dtype::<T>("matmul", "b", b)?;
    let a = dims::<U, Ix2>("matmul", "a", a.as_array())?;
    let b = dims::<T, Ix2>("matmul", "b", b.as_array())?;
    let a = if trans_a { a.reversed_axes() } else { a };
    let b = if trans_b { b.reversed_axes() } else { b };
    let work = a.len().saturating_mul(b.ncols());
    let c = run(py, work, || k::matmul(a, b))?;
    Ok(c.into_pyarray(py).into_any())
}

/// Affine map y = x·W + b.  x: (n, d), W: (d, h), b: (h,) -> (n, h).
#[pyfunction]
#[pyo3(name = "affine")]
pub fn affine<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("affine", "W", w)?, w => match float_array("affine", "x", x)? {
        FloatArray::F32(x) => affine_t(py, x, w, b),
        FloatArray::F64(x) => affine_t(py, x, w, b),
    })
}

/// `affine` for W and b of dtype T and x of dtype U (either float type: a float32 batch
/// for a float64 layer is converted value by value inside the product).
fn affine_t<'py, T: Float + Element, U: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, U>,
    w: PyReadonlyArrayDyn<'py, T>,
    b: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let b = same_dtype::<T>("affine", "b", b)?;
    let x = dims::<U, Ix2>("affine", "x", x.as_array())?;
    let w = dims::<T, Ix2>("affine", "W", w.as_array())?;
    let b = dims::<T, Ix1>("affine", "b", b.as_array())?;
    let work = x.len().saturating_mul(w.ncols());
    let y = run(py, work, || k::affine(x, w, b))?;
    Ok(y.into_pyarray(py).into_any())
}
