//! Elementwise activations for Python, and the hidden-layer activation by name.

use numpy::{Element, IntoPyArray, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::convert::{dispatch, float_array, run, same_dtype};
use crate::kernels::activation::Activation;
use crate::kernels::{activation as k, Float};

/// The hidden-layer activation named `name` ('sigmoid' or 'relu').
pub fn parse_activation(op: &str, name: &str) -> PyResult<Activation> {
    match name {
        "sigmoid" => Ok(Activation::Sigmoid),
        "relu" => Ok(Activation::Relu),
        other => Err(PyValueError::new_err(format!(
            "{op}: activation must be 'sigmoid' or 'relu', got {other:?}"
        ))),
    }
}

fn unary<'py, T: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, T>,
    f: fn(ndarray::ArrayViewD<'_, T>) -> crate::error::Result<ndarray::ArrayD<T>>,
) -> PyResult<Bound<'py, PyAny>> {
    let x = x.as_array();
    Ok(run(py, x.len(), || f(x))?.into_pyarray(py).into_any())
}

type Binary<T> = fn(
    ndarray::ArrayViewD<'_, T>,
    ndarray::ArrayViewD<'_, T>,
) -> crate::error::Result<ndarray::ArrayD<T>>;

fn binary<'py, T: Float + Element>(
    py: Python<'py>,
    op: &str,
    names: (&str, &str),
    x: PyReadonlyArrayDyn<'py, T>,
    y: &Bound<'py, PyAny>,
    f: Binary<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let y = same_dtype::<T>(op, names.1, y)?;
    let (x, y) = (x.as_array(), y.as_array());
    let out = run(py, x.len(), || f(x, y))?;
    Ok(out.into_pyarray(py).into_any())
}

/// σ(x) = 1 / (1 + exp(−x)) elementwise, any shape.
#[pyfunction]
pub fn sigmoid<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("sigmoid", "x", x)?, x => unary(py, x, k::sigmoid))
}

/// σ'(x) = (1 − σ(x))·σ(x) elementwise, any shape.
#[pyfunction]
pub fn sigmoid_grad<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("sigmoid_grad", "x", x)?, x => unary(py, x, k::sigmoid_grad))
}

/// Sigmoid layer backward: dout·(1 − y)·y, with y the forward output.
#[pyfunction]
pub fn sigmoid_backward<'py>(
    py: Python<'py>,
    y: &Bound<'py, PyAny>,
    dout: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("sigmoid_backward", "y", y)?, y => binary(py, "sigmoid_backward", ("y", "dout"), y, dout, k::sigmoid_backward))
}

/// max(0, x) elementwise, any shape; NaN propagates.
#[pyfunction]
pub fn relu<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("relu", "x", x)?, x => unary(py, x, k::relu))
}

/// 1 where x ≥ 0, else 0 (the book's ``relu_grad``).
#[pyfunction]
pub fn relu_grad<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("relu_grad", "x", x)?, x => unary(py, x, k::relu_grad))
}

/// ReLU layer backward: dout where x > 0, else 0.
#[pyfunction]
pub fn relu_backward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    dout: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("relu_backward", "x", x)?, x => binary(py, "relu_backward", ("x", "dout"), x, dout, k::relu_backward))
}
