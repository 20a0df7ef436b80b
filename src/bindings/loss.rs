//! Losses for Python.

use numpy::{Element, IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::convert::{batch, dispatch, float_array, run, same_dtype, targets};
use crate::kernels::{loss as k, Float};

/// Mean cross-entropy −Σ t·log(y + 1e-7) / n (the book's ``cross_entropy_error``).
///
/// ``y`` is (n, k) or (k,) (a batch of one); ``t`` is one-hot of y's dtype and shape,
/// or int64 labels (n,) in [0, k).
#[pyfunction]
pub fn cross_entropy_error<'py>(
    py: Python<'py>,
    y: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
) -> PyResult<f64> {
    dispatch!(float_array("cross_entropy_error", "y", y)?, y => cee_t(py, y, t))
}

fn cee_t<'py, T: Float + Element>(
    py: Python<'py>,
    y: PyReadonlyArrayDyn<'py, T>,
    t: &Bound<'py, PyAny>,
) -> PyResult<f64> {
    const OP: &str = "cross_entropy_error";
    let t = targets::<T>(OP, t)?;
    let t = t.view(OP)?;
    let y = batch(OP, "y", y.as_array())?;
    Ok(run(py, y.len(), || k::cross_entropy_error(y, t))?.to_f64())
}

/// Sum of squares error 0.5·Σ(y − t)² over arrays of one shape.
#[pyfunction]
pub fn sum_squares_error<'py>(
    py: Python<'py>,
    y: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
) -> PyResult<f64> {
    dispatch!(float_array("sum_squares_error", "y", y)?, y => sse_t(py, y, t))
}

fn sse_t<'py, T: Float + Element>(
    py: Python<'py>,
    y: PyReadonlyArrayDyn<'py, T>,
    t: &Bound<'py, PyAny>,
) -> PyResult<f64> {
    let t = same_dtype::<T>("sum_squares_error", "t", t)?;
    let (y, t) = (y.as_array(), t.as_array());
    Ok(run(py, y.len(), || k::sum_squares_error(y, t))?.to_f64())
}

/// Gradient of the mean cross-entropy after softmax w.r.t. the logits: (y − t) / n.
///
/// ``y`` (n, k) is the softmax output; ``t`` one-hot (n, k) or int64 labels (n,).
#[pyfunction]
pub fn softmax_cross_entropy_backward<'py>(
    py: Python<'py>,
    y: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("softmax_cross_entropy_backward", "y", y)?, y => scb_t(py, y, t))
}

fn scb_t<'py, T: Float + Element>(
    py: Python<'py>,
    y: PyReadonlyArrayDyn<'py, T>,
    t: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "softmax_cross_entropy_backward";
    let t = targets::<T>(OP, t)?;
    let t = t.view(OP)?;
    let y = super::convert::dims::<T, ndarray::Ix2>(OP, "y", y.as_array())?;
    let dx = run(py, y.len(), || k::softmax_cross_entropy_backward(y, t))?;
    Ok(dx.into_pyarray(py).into_any())
}
