//! Compressed input rows (`_core.SparseRows`), and x as the kernels read it: dense or
//! compressed.

use ndarray::Ix2;
use numpy::{Element, PyReadonlyArrayDyn};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::convert::{batch, dims, float_array, same_dtype, FloatArray};
use crate::kernels::sparse::{self as kernel, Rows};
use crate::kernels::Float;

enum SparseInner {
    F32(kernel::SparseRows<f32>),
    F64(kernel::SparseRows<f64>),
}

/// The non-zero entries of a float32 or float64 matrix x (n, d), compressed once (CSR,
/// exact zeros dropped) so that ``FusedTrainer.run`` and ``accuracy`` read
/// only them: 4 bytes per entry when x has at most 256 distinct non-zero values (MNIST
/// pixels), else a column index and the value. A snapshot: later changes to x are not
/// seen.
#[pyclass(module = "ferrograd._core", frozen)]
pub struct SparseRows {
    inner: SparseInner,
}

/// The element types a [`SparseRows`] holds.
pub trait SparseDtype: Float + Element {
    fn pick(s: &SparseRows) -> Option<&kernel::SparseRows<Self>>;
}

impl SparseDtype for f32 {
    fn pick(s: &SparseRows) -> Option<&kernel::SparseRows<f32>> {
        match &s.inner {
            SparseInner::F32(m) => Some(m),
            SparseInner::F64(_) => None,
        }
    }
}

impl SparseDtype for f64 {
    fn pick(s: &SparseRows) -> Option<&kernel::SparseRows<f64>> {
        match &s.inner {
            SparseInner::F64(m) => Some(m),
            SparseInner::F32(_) => None,
        }
    }
}

impl SparseRows {
    fn dtype_name(&self) -> &'static str {
        match self.inner {
            SparseInner::F32(_) => "float32",
            SparseInner::F64(_) => "float64",
        }
    }
}

#[pymethods]
impl SparseRows {
    #[new]
    fn new(py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Self> {
        const OP: &str = "SparseRows";
        let inner = match float_array(OP, "x", x)? {
            FloatArray::F32(a) => {
                let v = dims::<f32, Ix2>(OP, "x", a.as_array())?;
                SparseInner::F32(py.detach(|| kernel::SparseRows::from_dense(v))?)
            }
            FloatArray::F64(a) => {
                let v = dims::<f64, Ix2>(OP, "x", a.as_array())?;
                SparseInner::F64(py.detach(|| kernel::SparseRows::from_dense(v))?)
            }
        };
        Ok(SparseRows { inner })
    }

    /// (n, d) of the compressed matrix.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        match &self.inner {
            SparseInner::F32(m) => (m.nrows(), m.ncols()),
            SparseInner::F64(m) => (m.nrows(), m.ncols()),
        }
    }

    /// 'float32' or 'float64'.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.dtype_name()
    }

    /// Number of stored (non-zero) entries.
    #[getter]
    fn nnz(&self) -> usize {
        match &self.inner {
            SparseInner::F32(m) => m.nnz(),
            SparseInner::F64(m) => m.nnz(),
        }
    }

    /// Bytes held by the compressed rows.
    #[getter]
    fn nbytes(&self) -> usize {
        match &self.inner {
            SparseInner::F32(m) => m.nbytes(),
            SparseInner::F64(m) => m.nbytes(),
        }
    }

    fn __repr__(&self) -> String {
        let (n, d) = self.shape();
        format!(
            "SparseRows(shape=({n}, {d}), dtype={}, nnz={})",
            self.dtype_name(),
            self.nnz()
        )
    }
}

/// x as the kernels read it: a [`SparseRows`] of dtype T, else a 2-D array of dtype T.
pub enum RowsArg<'py, T: Element> {
    Dense(PyReadonlyArrayDyn<'py, T>),
    Sparse(Bound<'py, SparseRows>),
}

impl<'py, T: SparseDtype> RowsArg<'py, T> {
    pub fn new(op: &str, x: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = x.cast::<SparseRows>() {
            if T::pick(s.get()).is_none() {
                return Err(PyTypeError::new_err(format!(
                    "{op}: x has dtype {} but the other arguments are {}; convert it first",
                    s.get().dtype_name(),
                    T::DTYPE
                )));
            }
            return Ok(RowsArg::Sparse(s.clone()));
        }
        Ok(RowsArg::Dense(same_dtype::<T>(op, "x", x)?))
    }

    pub fn rows(&self, op: &str, matrix: bool) -> PyResult<Rows<'_, T>> {
        match self {
            RowsArg::Dense(a) => Ok(Rows::Dense(if matrix {
                dims::<T, Ix2>(op, "x", a.as_array())?
            } else {
                batch(op, "x", a.as_array())?
            })),
            RowsArg::Sparse(s) => T::pick(s.get())
                .map(Rows::Sparse)
                .ok_or_else(|| PyTypeError::new_err(format!("{op}: x has the wrong dtype"))),
        }
    }
}
