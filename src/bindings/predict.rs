//! The batched prediction and accuracy of any fully connected net for Python.

use ndarray::{Ix1, Ix2};
use numpy::{Element, IntoPyArray, PyArray1, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PySequence;

use super::activation::parse_activation;
use super::convert::{dims, dispatch, float_array, run, same_dtype, targets, SignalCheck};
use super::sparse::{RowsArg, SparseDtype};
use crate::kernels::net::Layer;
use crate::kernels::predict as k;
use crate::kernels::sparse::Rows;

/// The net's parameter arrays [W1, b1, W2, b2, ...], borrowed with W1's dtype.
struct LayerArrays<'py, T: Element> {
    arrays: Vec<PyReadonlyArrayDyn<'py, T>>,
}

impl<'py, T: SparseDtype> LayerArrays<'py, T> {
    fn borrow(
        op: &str,
        w1: PyReadonlyArrayDyn<'py, T>,
        seq: &Bound<'py, PySequence>,
    ) -> PyResult<Self> {
        let mut arrays = vec![w1];
        for i in 1..seq.len()? {
            arrays.push(same_dtype(op, &name(i), &seq.get_item(i)?)?);
        }
        Ok(LayerArrays { arrays })
    }

    fn layers(&self, op: &str) -> PyResult<Vec<Layer<'_, T>>> {
        let mut layers = Vec::with_capacity(self.arrays.len() / 2);
        for (l, pair) in self.arrays.chunks_exact(2).enumerate() {
            layers.push(Layer {
                w: dims::<_, Ix2>(op, &name(2 * l), pair[0].as_array())?,
                b: dims::<_, Ix1>(op, &name(2 * l + 1), pair[1].as_array())?,
            });
        }
        Ok(layers)
    }
}

/// W1, b1, W2, … for list position i.
fn name(i: usize) -> String {
    format!("{}{}", if i % 2 == 0 { "W" } else { "b" }, i / 2 + 1)
}

/// `params` as a sequence of W1, b1, W2, b2, … (an even number, at least 4).
fn layer_list<'a, 'py>(
    op: &str,
    params: &'a Bound<'py, PyAny>,
) -> PyResult<&'a Bound<'py, PySequence>> {
    let seq = params.cast::<PySequence>().map_err(|_| {
        PyTypeError::new_err(format!("{op}: params must be a sequence of numpy arrays"))
    })?;
    let len = seq.len()?;
    if len < 4 || len % 2 != 0 {
        return Err(PyValueError::new_err(format!(
            "{op}: params must hold W1, b1, W2, b2, ... (an even number, at least 4), got {len}"
        )));
    }
    Ok(seq)
}

/// Borrows a call's net (``params`` [W1, b1, W2, b2, ...] of W1's dtype T) and its
/// rows x (dense or ``SparseRows`` of dtype T), and hands both to `f`.
fn with_layers<'py, T: SparseDtype, R>(
    op: &str,
    w1: PyReadonlyArrayDyn<'py, T>,
    seq: &Bound<'py, PySequence>,
    x: &Bound<'py, PyAny>,
    f: impl FnOnce(&[Layer<'_, T>], Rows<'_, T>) -> PyResult<R>,
) -> PyResult<R> {
    let arrays = LayerArrays::borrow(op, w1, seq)?;
    let layers = arrays.layers(op)?;
    let xs = RowsArg::new(op, x)?;
    f(&layers, xs.rows(op, false)?)
}

/// Fraction of rows of x (n, d) whose predicted class (argmax of the output of the net
/// with layers ``params`` = [W1, b1, W2, b2, ...], ``activation`` after each hidden
/// layer) equals t (int64 labels (n,), or the argmax of one-hot rows). x may be a
/// ``SparseRows``. Parallel.
#[pyfunction]
#[pyo3(signature = (params, x, t, *, activation))]
pub fn accuracy<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<f64> {
    const OP: &str = "accuracy";
    let act = parse_activation(OP, activation)?;
    let seq = layer_list(OP, params)?;
    dispatch!(float_array(OP, "W1", &seq.get_item(0)?)?, w1 => {
        with_layers(OP, w1, seq, x, |layers, x| {
            let ts = targets(OP, t)?;
            let t = ts.view(OP)?;
            let work = x.nrows() * layers[0].w.len();
            let signal = SignalCheck::default();
            let acc = run(py, work, || {
                k::accuracy_with(layers, act, x, t, &|| signal.interrupted())
            });
            signal.result(acc)
        })
    })
}

/// Predicted class (int64) of every row of x (n, d): argmax of the output of the net
/// with layers ``params`` = [W1, b1, W2, b2, ...]. x may be a ``SparseRows``. Parallel.
#[pyfunction]
#[pyo3(signature = (params, x, *, activation))]
pub fn predict_labels<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    const OP: &str = "predict_labels";
    let act = parse_activation(OP, activation)?;
    let seq = layer_list(OP, params)?;
    dispatch!(float_array(OP, "W1", &seq.get_item(0)?)?, w1 => {
        with_layers(OP, w1, seq, x, |layers, x| {
            let work = x.nrows() * layers[0].w.len();
            let signal = SignalCheck::default();
            let labels = run(py, work, || {
                k::predict_labels_with(layers, act, x, &|| signal.interrupted())
            });
            let labels = signal.result(labels)?;
            Ok(labels.into_iter().map(|c| c as i64).collect::<Vec<i64>>().into_pyarray(py))
        })
    })
}
