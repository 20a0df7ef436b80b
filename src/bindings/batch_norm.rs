//! The book's BatchNormalization layer's training forward and backward for Python.

use ndarray::{Ix1, Ix2};
use numpy::{Element, IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use super::convert::{dims, dispatch, float_array, run, same_dtype};
use crate::kernels::{batch_norm as k, Float};

/// Training forward of the book's BatchNormalization on rows x (N, D), N ≥ 1, of gamma's
/// dtype: ``(out, xc, xn, std, mu, var)`` with μ = mean(x, axis=0), xc = x − μ,
/// var = mean(xc², axis=0), σ = √(var + eps), xn = xc / σ, out = gamma·xn + beta,
/// rounded as the book's NumPy lines (sums over the batch row by row: NumPy's for D ≥ 2).
#[pyfunction]
pub fn batch_norm_forward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    gamma: &Bound<'py, PyAny>,
    beta: &Bound<'py, PyAny>,
    eps: f64,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("batch_norm_forward", "gamma", gamma)?, gamma => forward_t(py, x, gamma, beta, eps))
}

fn forward_t<'py, T: Float + Element>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    gamma: PyReadonlyArrayDyn<'py, T>,
    beta: &Bound<'py, PyAny>,
    eps: f64,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "batch_norm_forward";
    let (x, beta) = (
        same_dtype::<T>(OP, "x", x)?,
        same_dtype::<T>(OP, "beta", beta)?,
    );
    let x = dims::<T, Ix2>(OP, "x", x.as_array())?;
    let gamma = dims::<T, Ix1>(OP, "gamma", gamma.as_array())?;
    let beta = dims::<T, Ix1>(OP, "beta", beta.as_array())?;
    let r = run(py, x.len(), || k::batch_norm_forward(x, gamma, beta, eps))?;
    (
        r.out.into_pyarray(py),
        r.xc.into_pyarray(py),
        r.xn.into_pyarray(py),
        r.std.into_pyarray(py),
        r.mu.into_pyarray(py),
        r.var.into_pyarray(py),
    )
        .into_bound_py_any(py)
}

/// Backward of the book's BatchNormalization from the training forward's xc, xn (N, D)
/// and std (D,): ``(dx, dgamma, dbeta)``, rounded as the book's NumPy lines. All of one
/// dtype.
#[pyfunction]
pub fn batch_norm_backward<'py>(
    py: Python<'py>,
    dout: &Bound<'py, PyAny>,
    xc: &Bound<'py, PyAny>,
    xn: &Bound<'py, PyAny>,
    std: &Bound<'py, PyAny>,
    gamma: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("batch_norm_backward", "gamma", gamma)?, gamma => backward_t(py, dout, xc, xn, std, gamma))
}

fn backward_t<'py, T: Float + Element>(
    py: Python<'py>,
    dout: &Bound<'py, PyAny>,
    xc: &Bound<'py, PyAny>,
    xn: &Bound<'py, PyAny>,
    std: &Bound<'py, PyAny>,
    gamma: PyReadonlyArrayDyn<'py, T>,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "batch_norm_backward";
    let dout = same_dtype::<T>(OP, "dout", dout)?;
    let (xc, xn) = (
        same_dtype::<T>(OP, "xc", xc)?,
        same_dtype::<T>(OP, "xn", xn)?,
    );
    let std = same_dtype::<T>(OP, "std", std)?;
    let dout = dims::<T, Ix2>(OP, "dout", dout.as_array())?;
    let xc = dims::<T, Ix2>(OP, "xc", xc.as_array())?;
    let xn = dims::<T, Ix2>(OP, "xn", xn.as_array())?;
    let std = dims::<T, Ix1>(OP, "std", std.as_array())?;
    let gamma = dims::<T, Ix1>(OP, "gamma", gamma.as_array())?;
    let g = run(py, xc.len(), || {
        k::batch_norm_backward(dout, xc, xn, std, gamma)
    })?;
    (
        g.dx.into_pyarray(py),
        g.dgamma.into_pyarray(py),
        g.dbeta.into_pyarray(py),
    )
        .into_bound_py_any(py)
}
