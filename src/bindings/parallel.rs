//! The kernels' thread pool, as Python sees it.

use pyo3::prelude::*;

/// Number of threads the kernels use (``FERROGRAD_NUM_THREADS``, read once).
#[pyfunction]
pub fn num_threads() -> usize {
    crate::kernels::parallel::num_threads()
}
