//! SimpleConvNet's fused training step for Python: `_core.ConvNetTrainer`.

use ndarray::{ArrayView2, Ix2};
use numpy::{
    Element, IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySequence};

use super::convert::{borrow_error, dims, same_dtype, targets, Access, SignalCheck};
use super::fused::borrow_list;
use super::optimizer::{parse_optimizer, run_options};
use crate::error::fmt_shape;
use crate::kernels::convnet::{self as kernel, ConvNetShape, ConvNetSlices};
use crate::kernels::Float;

enum Inner {
    F32(kernel::ConvNetTrainer<f32>),
    F64(kernel::ConvNetTrainer<f64>),
}

const NAMES: [&str; 6] = ["W1", "b1", "W2", "b2", "W3", "b3"];

/// Fused training of the book's SimpleConvNet (conv → ReLU → 2×2 max pooling, stride 2
/// → Affine → ReLU → Affine → softmax): each ``run`` call does, per row of
/// ``batch_indices``, forward, backprop and the optimizer's update in place on the
/// caller's arrays, with the GIL released and buffers reused. ``input_dim`` is
/// (C, H, W), ``filters`` (FN, FH, FW); ``optimizer`` one of 'sgd', 'momentum',
/// 'nesterov', 'adagrad', 'rmsprop', 'adam' with exactly its ``hyperparameters``.
#[pyclass(module = "ferrograd._core")]
pub struct ConvNetTrainer {
    inner: Inner,
    dtype: &'static str,
    optimizer: String,
    state_size: usize,
}

/// The six arrays of `list` as flat C-order slices.
fn slices<'a, T: Float + Element>(
    op: &str,
    what: &str,
    arrs: &'a mut [PyReadwriteArrayDyn<'_, T>],
) -> PyResult<Vec<ConvNetSlices<'a, T>>> {
    let mut flat = Vec::with_capacity(arrs.len());
    for (i, a) in arrs.iter_mut().enumerate() {
        let name = NAMES[i % 6];
        let s = a.as_slice_mut().map_err(|_| {
            PyValueError::new_err(format!("{op}: {what}{name} must be C-contiguous"))
        })?;
        flat.push(s);
    }
    let mut sets = Vec::with_capacity(flat.len() / 6);
    let mut it = flat.into_iter();
    while let (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) {
        sets.push([a, b, c, d, e, f]);
    }
    Ok(sets)
}

/// x (N, C, H, W) or (N, C·H·W), C-contiguous, as rows of one image each.
fn image_rows<'a, T: Element>(
    op: &str,
    xs: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<ArrayView2<'a, T>> {
    let xv = xs.as_array();
    let shape = xv.shape().to_vec();
    let n = shape.first().copied().unwrap_or(0);
    let per_image = shape.iter().skip(1).product::<usize>();
    if !(shape.len() == 2 || shape.len() == 4) || !xs.is_c_contiguous() {
        let layout = if xs.is_c_contiguous() {
            "C-contiguous"
        } else {
            "not C-contiguous"
        };
        return Err(PyValueError::new_err(format!(
            "{op}: x must be C-contiguous images (N, C, H, W) or rows (N, C*H*W), got shape \
             {} ({layout})",
            fmt_shape(&shape),
        )));
    }
    xv.into_shape_with_order((n, per_image))
        .map_err(|e| PyValueError::new_err(format!("{op}: x: {e}")))
}

fn loss_typed<'py, T: Float + Element>(
    py: Python<'py>,
    trainer: &mut kernel::ConvNetTrainer<T>,
    params: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
) -> PyResult<f64> {
    const OP: &str = "ConvNetTrainer.loss";
    let xs = same_dtype::<T>(OP, "x", x)?;
    let ts = targets::<T>(OP, t)?;
    let seq = params.cast::<PySequence>().map_err(|_| {
        PyTypeError::new_err(format!("{OP}: params must be a sequence of numpy arrays"))
    })?;
    if seq.len()? != 6 {
        return Err(PyValueError::new_err(format!(
            "{OP}: params must hold 6 arrays (W1, b1, W2, b2, W3, b3), got {}",
            seq.len()?
        )));
    }
    let mut arrs = Vec::with_capacity(6);
    for (i, name) in NAMES.iter().enumerate() {
        arrs.push(same_dtype::<T>(OP, name, &seq.get_item(i)?)?);
    }
    let mut views = Vec::with_capacity(6);
    for (a, name) in arrs.iter().zip(NAMES) {
        views
            .push(a.as_slice().map_err(|_| {
                PyValueError::new_err(format!("{OP}: {name} must be C-contiguous"))
            })?);
    }
    let [w1, b1, w2, b2, w3, b3] = views[..] else {
        return Err(PyValueError::new_err(format!(
            "{OP}: params must hold 6 arrays"
        )));
    };
    let x2 = image_rows(OP, &xs)?;
    let tv = ts.view(OP)?;
    let loss = py.detach(|| trainer.loss([w1, b1, w2, b2, w3, b3], x2, tv));
    Ok(loss?)
}

#[allow(clippy::too_many_arguments)]
fn run_typed<'py, T: Float + Element>(
    py: Python<'py>,
    trainer: &mut kernel::ConvNetTrainer<T>,
    params: &Bound<'py, PyAny>,
    state: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    batch_indices: &Bound<'py, PyAny>,
    (learning_rates, iter): (Option<&[f64]>, u64),
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    const OP: &str = "ConvNetTrainer.run";
    // x, t and the indices first, read-only: parameters aliasing them fail to borrow.
    let xs = same_dtype::<T>(OP, "x", x)?;
    let ts = targets::<T>(OP, t)?;
    let idx_arr = batch_indices
        .cast::<PyArrayDyn<i64>>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{OP}: batch_indices must be an int64 numpy.ndarray"
            ))
        })?
        .try_readonly()
        .map_err(|e| borrow_error(OP, "batch_indices", &e, Access::Read))?;
    let x2 = image_rows(OP, &xs)?;
    let tv = ts.view(OP)?;
    let idx = dims::<i64, Ix2>(OP, "batch_indices", idx_arr.as_array())?;
    let name = |i: usize| NAMES[i % 6].to_owned();
    let mut p_arrs = borrow_list::<T>(OP, "params", params, 6, "W1, b1, W2, b2, W3, b3", &name)?;
    let slots = trainer.optimizer().state_slots();
    let mut s_arrs = borrow_list::<T>(
        OP,
        "state",
        state,
        6 * slots,
        "W1, b1, W2, b2, W3, b3 per state set",
        &name,
    )?;
    let mut p_sets = slices(OP, "", &mut p_arrs)?;
    let mut s_sets = slices(OP, "state ", &mut s_arrs)?;
    let Some(p) = p_sets.first_mut() else {
        return Err(PyValueError::new_err(format!(
            "{OP}: params must hold 6 arrays"
        )));
    };
    let signal = SignalCheck::default();
    let mut losses = Vec::new();
    let done = py.detach(|| {
        let stop = || signal.interrupted();
        let schedule = (learning_rates, iter);
        trainer.run_into(p, &mut s_sets, x2, tv, idx, schedule, &stop, &mut losses)
    });
    match signal.result(done) {
        Ok(()) => Ok(losses.into_pyarray(py)),
        Err(err) => {
            // The steps before the interruption stay applied; the exception says which.
            err.value(py).setattr("losses", losses.into_pyarray(py))?;
            Err(err)
        }
    }
}

#[pymethods]
impl ConvNetTrainer {
    #[new]
    #[pyo3(signature = (input_dim, filters, *, stride, pad, hidden_size, output_size, dtype,
                        optimizer, hyperparameters))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input_dim: [usize; 3],
        filters: [usize; 3],
        stride: usize,
        pad: usize,
        hidden_size: usize,
        output_size: usize,
        dtype: &str,
        optimizer: &str,
        hyperparameters: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        const OP: &str = "ConvNetTrainer";
        let opt = parse_optimizer(OP, optimizer, hyperparameters)?;
        let shape = ConvNetShape {
            input: input_dim,
            filters,
            stride,
            pad,
            hidden: hidden_size,
            classes: output_size,
        };
        let (inner, dtype) = match dtype {
            "float32" => (
                Inner::F32(kernel::ConvNetTrainer::new(shape, opt)?),
                "float32",
            ),
            "float64" => (
                Inner::F64(kernel::ConvNetTrainer::new(shape, opt)?),
                "float64",
            ),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "{OP}: dtype must be 'float32' or 'float64', got {other:?}"
                )))
            }
        };
        Ok(ConvNetTrainer {
            inner,
            dtype,
            optimizer: optimizer.to_owned(),
            state_size: 6 * opt.state_slots(),
        })
    }

    /// The working dtype, 'float32' or 'float64'.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.dtype
    }

    /// The optimizer's name.
    #[getter]
    fn optimizer(&self) -> &str {
        &self.optimizer
    }

    /// Number of state arrays the optimizer needs (6 per state set).
    #[getter]
    fn state_size(&self) -> usize {
        self.state_size
    }

    /// The mean cross-entropy of softmax(predict(x)) against t at ``params`` [W1, b1, W2,
    /// b2, W3, b3] (read only): SimpleConvNet's ``loss`` for a batch x (N, C, H, W) or
    /// (N, C·H·W) of the trainer's dtype, C-contiguous, and t (int64 labels or one-hot
    /// rows). Runs without the GIL.
    fn loss<'py>(
        &mut self,
        py: Python<'py>,
        params: &Bound<'py, PyAny>,
        x: &Bound<'py, PyAny>,
        t: &Bound<'py, PyAny>,
    ) -> PyResult<f64> {
        match &mut self.inner {
            Inner::F32(tr) => loss_typed(py, tr, params, x, t),
            Inner::F64(tr) => loss_typed(py, tr, params, x, t),
        }
    }

    /// Runs one training step per row of ``batch_indices`` (iters, batch) of row
    /// indices into x (N, C, H, W) or (N, C·H·W), C-contiguous of the trainer's dtype,
    /// and t (int64 labels (N,) or one-hot (N, k)), updating ``params`` [W1, b1, W2,
    /// b2, W3, b3] and ``state`` (one such list per state set: momentum/nesterov v;
    /// adagrad/rmsprop h; adam m then v) in place. ``iter`` is Adam's step count before
    /// the first step; ``hyperparameters`` replace the trainer's from this call on;
    /// ``learning_rates`` (float64, one per step) set each step's learning rate.
    /// Returns the float64 loss of every step (iters,), each before its update.
    #[pyo3(signature = (params, state, x, t, batch_indices, *, iter = 0, hyperparameters = None,
                        learning_rates = None))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        params: &Bound<'py, PyAny>,
        state: &Bound<'py, PyAny>,
        x: &Bound<'py, PyAny>,
        t: &Bound<'py, PyAny>,
        batch_indices: &Bound<'py, PyAny>,
        iter: u64,
        hyperparameters: Option<&Bound<'py, PyDict>>,
        learning_rates: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        const OP: &str = "ConvNetTrainer.run";
        let (opt, lrs) = run_options(OP, &self.optimizer, hyperparameters, learning_rates)?;
        let schedule = (lrs.as_deref(), iter);
        match &mut self.inner {
            Inner::F32(tr) => {
                if let Some(opt) = opt {
                    tr.set_optimizer(opt)?;
                }
                run_typed(py, tr, params, state, x, t, batch_indices, schedule)
            }
            Inner::F64(tr) => {
                if let Some(opt) = opt {
                    tr.set_optimizer(opt)?;
                }
                run_typed(py, tr, params, state, x, t, batch_indices, schedule)
            }
        }
    }
}
