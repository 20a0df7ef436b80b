//! Softmax for Python.

use numpy::{Element, IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::convert::{batch, dispatch, float_array, run};
use crate::kernels::{softmax as k, Float};

/// Softmax over the last axis of a 1-D or 2-D float array, overflow-safe
/// (the row maximum is subtracted first). Returns the same shape.
#[pyfunction]
pub fn softmax<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("softmax", "x", x)?, x => softmax_t(py, x))
}

fn softmax_t<'py, T: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, T>,
) -> PyResult<Bound<'py, PyAny>> {
    let view = x.as_array();
    let one_d = view.ndim() == 1;
    let x2 = batch("softmax", "x", view)?;
    let y = run(py, x2.len(), || k::softmax(x2))?;
    if one_d {
        let y = y
            .into_shape_with_order(x2.ncols())
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        return Ok(y.into_pyarray(py).into_any());
    }
    Ok(y.into_pyarray(py).into_any())
}
