//! Image bytes as floats for Python: the MNIST loader's `normalize=True`.

use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::convert::run;
use crate::kernels::pixels::scaled;

/// `pixels / 255` as a new float32 or float64 array of the same shape (`dtype`: its
/// name), with the bits of NumPy's `pixels.astype(dtype) / 255`.
#[pyfunction]
pub fn scaled_pixels<'py>(
    py: Python<'py>,
    pixels: PyReadonlyArrayDyn<'py, u8>,
    dtype: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let v = pixels.as_array();
    let copy;
    let bytes = match v.as_slice() {
        Some(s) => s,
        None => {
            copy = v.iter().copied().collect::<Vec<u8>>();
            &copy
        }
    };
    let dim = v.raw_dim();
    Ok(match dtype {
        "float32" => run(py, bytes.len(), || scaled::<f32>(bytes, dim))?
            .into_pyarray(py)
            .into_any(),
        "float64" => run(py, bytes.len(), || scaled::<f64>(bytes, dim))?
            .into_pyarray(py)
            .into_any(),
        other => {
            return Err(PyTypeError::new_err(format!(
                "scaled_pixels: dtype must be 'float32' or 'float64', got '{other}'"
            )))
        }
    })
}
