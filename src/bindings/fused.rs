//! The fused training step for Python: `_core.FusedTrainer`.

use ndarray::{Ix1, Ix2};
use numpy::{
    Element, IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySequence};

use super::activation::parse_activation;
use super::convert::{borrow_error, dims, targets, Access, SignalCheck, TargetArg};
use super::optimizer::{parse_optimizer, run_options};
use super::sparse::{RowsArg, SparseDtype};
use crate::kernels::fused::{self as kernel, LayerMut};
use crate::kernels::Float;

enum Inner {
    F32(kernel::FusedTrainer<f32>),
    F64(kernel::FusedTrainer<f64>),
}

/// Fused training of a fully connected net (the two-layer net, the book's MultiLayerNet
/// with its L2 weight decay λ = ``weight_decay``; no dropout or batch norm): each
/// ``run`` call does, per row of ``batch_indices``, the batch gather, forward, backprop
/// and optimizer update in place on the caller's arrays, with the GIL released and
/// buffers reused. ``sizes`` is [input, hidden..., output]; ``optimizer`` is one of
/// 'sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam' with exactly its
/// ``hyperparameters`` by the book's names (e.g. {'lr': 0.001, 'beta1': 0.9,
/// 'beta2': 0.999}); DLFS common/optimizer.py formulas.
#[pyclass(module = "ferrograd._core")]
pub struct FusedTrainer {
    inner: Inner,
    dtype: &'static str,
    optimizer: String,
    state_size: usize,
}

/// Borrows a sequence of `want` arrays of dtype T mutably; `layout` says what they are
/// and `name(i)` names array i in errors.
pub(super) fn borrow_list<'py, T: Float + Element>(
    op: &str,
    what: &str,
    seq: &Bound<'py, PyAny>,
    want: usize,
    layout: &str,
    name: &dyn Fn(usize) -> String,
) -> PyResult<Vec<PyReadwriteArrayDyn<'py, T>>> {
    let seq = seq.cast::<PySequence>().map_err(|_| {
        PyTypeError::new_err(format!("{op}: {what} must be a sequence of numpy arrays"))
    })?;
    let len = seq.len()?;
    if len != want {
        return Err(PyValueError::new_err(format!(
            "{op}: {what} must hold {want} arrays ({layout}), got {len}"
        )));
    }
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let item = seq.get_item(i)?;
        let name = format!("{what}[{i}] ({})", name(i));
        let arr = item.cast::<PyArrayDyn<T>>().map_err(|_| {
            if item.cast::<numpy::PyUntypedArray>().is_ok() {
                PyTypeError::new_err(format!(
                    "{op}: {name} must have dtype {} like the trainer",
                    T::DTYPE
                ))
            } else {
                PyTypeError::new_err(format!("{op}: {name} must be a numpy.ndarray"))
            }
        })?;
        let rw = arr.try_readwrite().map_err(|e| {
            let err = borrow_error(op, &name, &e, Access::Write);
            // Which array: the Python layer names it by its key and finds what holds it.
            if let Err(set) = err.value(seq.py()).setattr("array_index", (what, i)) {
                return set;
            }
            err
        })?;
        out.push(rw);
    }
    Ok(out)
}

/// (W, b) pairs of 2-D and 1-D arrays as layer views.
fn layer_views<'a, T: Float + Element>(
    op: &str,
    what: &str,
    arrs: &'a mut [PyReadwriteArrayDyn<'_, T>],
) -> PyResult<Vec<LayerMut<'a, T>>> {
    let mut layers = Vec::with_capacity(arrs.len() / 2);
    for (l, pair) in arrs.chunks_mut(2).enumerate() {
        let [w, b] = pair else {
            return Err(PyValueError::new_err(format!(
                "{op}: {what} must hold (W, b) pairs"
            )));
        };
        let n = l + 1;
        let (ws, bs) = (w.shape().to_vec(), b.shape().to_vec());
        layers.push(LayerMut {
            w: w.as_array_mut().into_dimensionality::<Ix2>().map_err(|_| {
                PyValueError::new_err(format!("{op}: {what} W{n} must be 2-D, got shape {ws:?}"))
            })?,
            b: b.as_array_mut().into_dimensionality::<Ix1>().map_err(|_| {
                PyValueError::new_err(format!("{op}: {what} b{n} must be 1-D, got shape {bs:?}"))
            })?,
        });
    }
    Ok(layers)
}

/// A `run` call's x, t and batch indices, borrowed read-only (before the parameters,
/// so parameters aliasing them fail the read-write borrow).
#[allow(clippy::type_complexity)]
fn run_inputs<'py, T: SparseDtype>(
    op: &str,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    batch_indices: &Bound<'py, PyAny>,
) -> PyResult<(
    RowsArg<'py, T>,
    TargetArg<'py, T>,
    PyReadonlyArrayDyn<'py, i64>,
)> {
    let xs = RowsArg::<T>::new(op, x)?;
    let ts = targets::<T>(op, t)?;
    let idx = batch_indices
        .cast::<PyArrayDyn<i64>>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{op}: batch_indices must be an int64 numpy.ndarray"
            ))
        })?
        .try_readonly()
        .map_err(|e| borrow_error(op, "batch_indices", &e, Access::Read))?;
    Ok((xs, ts, idx))
}

fn run_typed<'py, T: SparseDtype>(
    py: Python<'py>,
    trainer: &mut kernel::FusedTrainer<T>,
    params: &Bound<'py, PyAny>,
    state: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    batch_indices: &Bound<'py, PyAny>,
    (learning_rates, iter): (Option<&[f64]>, u64),
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    const OP: &str = "FusedTrainer.run";
    let (xs, ts, idx_arr) = run_inputs::<T>(OP, x, t, batch_indices)?;
    let (x, t) = (xs.rows(OP, true)?, ts.view(OP)?);
    let idx = dims::<i64, Ix2>(OP, "batch_indices", idx_arr.as_array())?;
    let layers = trainer.layers();
    let name = |i: usize| {
        let kind = if i % 2 == 0 { "W" } else { "b" };
        format!("{kind}{}", (i % (2 * layers)) / 2 + 1)
    };
    let mut p_arrs = borrow_list::<T>(OP, "params", params, 2 * layers, "W1, b1, W2, ...", &name)?;
    let slots = trainer.optimizer().state_slots();
    let mut s_arrs = borrow_list::<T>(
        OP,
        "state",
        state,
        2 * layers * slots,
        "W1, b1, W2, ... per state set",
        &name,
    )?;
    let mut p = layer_views(OP, "params", &mut p_arrs)?;
    let mut rest = layer_views(OP, "state", &mut s_arrs)?;
    let mut s_sets = Vec::with_capacity(slots);
    while rest.len() >= layers && !rest.is_empty() {
        let tail = rest.split_off(layers);
        s_sets.push(rest);
        rest = tail;
    }
    let signal = SignalCheck::default();
    let mut losses = Vec::new();
    let done = py.detach(|| {
        let stop = || signal.interrupted();
        let schedule = (learning_rates, iter);
        trainer.run_into(&mut p, &mut s_sets, x, t, idx, schedule, &stop, &mut losses)
    });
    match signal.result(done) {
        Ok(()) => Ok(losses.into_pyarray(py)),
        Err(err) => {
            // The steps before the interruption stay applied: the exception carries
            // their losses, so the caller counts exactly those (Adam's iter, History).
            err.value(py).setattr("losses", losses.into_pyarray(py))?;
            Err(err)
        }
    }
}

#[pymethods]
impl FusedTrainer {
    #[new]
    #[pyo3(signature = (sizes, *, activation, dtype, optimizer, hyperparameters, weight_decay))]
    fn new(
        sizes: Vec<usize>,
        activation: &str,
        dtype: &str,
        optimizer: &str,
        hyperparameters: &Bound<'_, PyDict>,
        weight_decay: f64,
    ) -> PyResult<Self> {
        const OP: &str = "FusedTrainer";
        let act = parse_activation(OP, activation)?;
        let opt = parse_optimizer(OP, optimizer, hyperparameters)?;
        let (inner, dtype) = match dtype {
            "float32" => (
                Inner::F32(kernel::FusedTrainer::new(&sizes, act, opt, weight_decay)?),
                "float32",
            ),
            "float64" => (
                Inner::F64(kernel::FusedTrainer::new(&sizes, act, opt, weight_decay)?),
                "float64",
            ),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "{OP}: dtype must be 'float32' or 'float64', got {other:?}"
                )))
            }
        };
        Ok(FusedTrainer {
            inner,
            dtype,
            optimizer: optimizer.to_owned(),
            state_size: 2 * sizes.len().saturating_sub(1) * opt.state_slots(),
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

    /// Number of state arrays the optimizer needs (2 per layer per state set).
    #[getter]
    fn state_size(&self) -> usize {
        self.state_size
    }

    /// Runs one training step per row of ``batch_indices`` (iters, batch) of row
    /// indices into x (N, d) (or its ``SparseRows``) and t (int64 labels (N,) or
    /// one-hot (N, k)), updating ``params`` [W1, b1, W2, b2, ...] and ``state`` (one
    /// such list per state set: momentum/nesterov v; adagrad/rmsprop h; adam m then v)
    /// in place. ``iter`` is Adam's step count before the first step;
    /// ``hyperparameters`` (the rule's, in full) replace the trainer's from this call
    /// on; ``learning_rates`` (float64, one per step) set each step's learning rate.
    /// Returns the float64 loss of every step (iters,). An array that cannot be updated
    /// in place (read-only, passed twice, or in use by an unfinished call) raises
    /// ValueError with ``array_index`` = ('params' or 'state', its index).
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
        const OP: &str = "FusedTrainer.run";
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
