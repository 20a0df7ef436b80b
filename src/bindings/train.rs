//! The fused training step (`_core.TwoLayerTrainer`) and the batched accuracy.

use ndarray::{Ix1, Ix2};
use numpy::{
    Element, IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PySequence;

use super::convert::{
    batch, dims, dispatch, float_array, run, same_dtype, targets, FloatArray, TargetArg,
};
use super::numgrad::{activation as parse_activation, Params, SignalCheck};
use crate::kernels::numgrad::Activation;
use crate::kernels::train::{self as k, Lanes, Optimizer, ParamsMut, Rows};
use crate::kernels::train_multi::{self as km, Layer, LayerMut, MultiTrainer};
use crate::kernels::two_layer::Trainer;
use crate::kernels::Float;

const NAMES: [&str; 4] = ["W1", "b1", "W2", "b2"];

enum SparseInner {
    F32(k::SparseRows<f32>),
    F64(k::SparseRows<f64>),
}

/// The non-zero entries of a float32 or float64 matrix x (n, d), compressed once (CSR,
/// exact zeros dropped) so that ``TwoLayerTrainer.run`` and ``two_layer_accuracy`` read
/// only them: 4 bytes per entry when x has at most 256 distinct non-zero values (MNIST
/// pixels), else a column index and the value. A snapshot: later changes to x are not
/// seen.
#[pyclass(module = "ferrograd._core", frozen)]
pub struct SparseRows {
    inner: SparseInner,
}

/// The element types a [`SparseRows`] holds.
trait SparseDtype: Lanes + Element {
    fn pick(s: &SparseRows) -> Option<&k::SparseRows<Self>>;
}

impl SparseDtype for f32 {
    fn pick(s: &SparseRows) -> Option<&k::SparseRows<f32>> {
        match &s.inner {
            SparseInner::F32(m) => Some(m),
            SparseInner::F64(_) => None,
        }
    }
}

impl SparseDtype for f64 {
    fn pick(s: &SparseRows) -> Option<&k::SparseRows<f64>> {
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
                SparseInner::F32(py.detach(|| k::SparseRows::from_dense(v))?)
            }
            FloatArray::F64(a) => {
                let v = dims::<f64, Ix2>(OP, "x", a.as_array())?;
                SparseInner::F64(py.detach(|| k::SparseRows::from_dense(v))?)
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
enum XArg<'py, T: Element> {
    Dense(PyReadonlyArrayDyn<'py, T>),
    Sparse(Bound<'py, SparseRows>),
}

impl<'py, T: SparseDtype> XArg<'py, T> {
    fn new(op: &str, x: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = x.cast::<SparseRows>() {
            if T::pick(s.get()).is_none() {
                return Err(PyTypeError::new_err(format!(
                    "{op}: x has dtype {} but the other arguments are {}; convert it first",
                    s.get().dtype_name(),
                    T::DTYPE
                )));
            }
            return Ok(XArg::Sparse(s.clone()));
        }
        Ok(XArg::Dense(same_dtype::<T>(op, "x", x)?))
    }

    fn rows(&self, op: &str, matrix: bool) -> PyResult<Rows<'_, T>> {
        match self {
            XArg::Dense(a) => Ok(Rows::Dense(if matrix {
                dims::<T, Ix2>(op, "x", a.as_array())?
            } else {
                batch(op, "x", a.as_array())?
            })),
            XArg::Sparse(s) => T::pick(s.get())
                .map(Rows::Sparse)
                .ok_or_else(|| PyTypeError::new_err(format!("{op}: x has the wrong dtype"))),
        }
    }
}

enum Inner {
    F32(Trainer<f32>),
    F64(Trainer<f64>),
}

/// Fused two-layer training: each ``run`` call does, per row of ``batch_indices``, the
/// batch gather, forward, backprop and optimizer update in place on the caller's
/// parameter arrays (and optimizer state arrays), with the GIL released and buffers
/// reused. ``optimizer`` is one of 'sgd', 'momentum', 'nesterov', 'adagrad',
/// 'rmsprop', 'adam' (DLFS common/optimizer.py formulas and defaults).
#[pyclass(module = "ferrograd._core")]
pub struct TwoLayerTrainer {
    inner: Inner,
    setup: Setup,
}

/// What a trainer was built with: activation, update rule, working dtype ('float32' or
/// 'float64'), the optimizer's name and how many state arrays it needs.
struct Setup {
    act: Activation,
    opt: Optimizer,
    dtype: &'static str,
    optimizer: String,
    state_size: usize,
}

impl Setup {
    /// Parses a trainer's options; `per_set` arrays make one optimizer state set.
    #[allow(clippy::too_many_arguments)]
    fn new(
        op: &str,
        activation: &str,
        dtype: &str,
        optimizer: &str,
        lr: Option<f64>,
        rates: [f64; 4],
        per_set: usize,
    ) -> PyResult<Self> {
        let act = parse_activation(op, activation)?;
        let [momentum, decay_rate, beta1, beta2] = rates;
        let opt = parse_optimizer(op, optimizer, lr, momentum, decay_rate, beta1, beta2)?;
        let dtype = match dtype {
            "float32" => "float32",
            "float64" => "float64",
            other => {
                return Err(PyTypeError::new_err(format!(
                    "{op}: dtype must be 'float32' or 'float64', got {other:?}"
                )))
            }
        };
        Ok(Setup {
            act,
            opt,
            dtype,
            optimizer: optimizer.to_owned(),
            state_size: per_set * opt.state_slots(),
        })
    }
}

fn parse_optimizer(
    op: &str,
    name: &str,
    lr: Option<f64>,
    momentum: f64,
    decay_rate: f64,
    beta1: f64,
    beta2: f64,
) -> PyResult<Optimizer> {
    Ok(match name {
        "sgd" => Optimizer::Sgd {
            lr: lr.unwrap_or(0.01),
        },
        "momentum" => Optimizer::Momentum {
            lr: lr.unwrap_or(0.01),
            momentum,
        },
        "nesterov" => Optimizer::Nesterov {
            lr: lr.unwrap_or(0.01),
            momentum,
        },
        "adagrad" => Optimizer::AdaGrad {
            lr: lr.unwrap_or(0.01),
        },
        "rmsprop" => Optimizer::RmsProp {
            lr: lr.unwrap_or(0.01),
            decay_rate,
        },
        "adam" => Optimizer::Adam {
            lr: lr.unwrap_or(0.001),
            beta1,
            beta2,
        },
        other => {
            return Err(PyValueError::new_err(format!(
                "{op}: optimizer must be one of 'sgd', 'momentum', 'nesterov', 'adagrad', \
                 'rmsprop', 'adam', got {other:?}"
            )))
        }
    })
}

/// Borrows a sequence of `want` arrays of dtype T mutably; `layout` says what they are
/// and `name(i)` names array i in errors.
fn borrow_list<'py, T: Float + Element>(
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
        let rw = arr.try_readwrite().map_err(|_| {
            PyValueError::new_err(format!(
                "{op}: {name} must be writeable and must not overlap x, t or another parameter"
            ))
        })?;
        out.push(rw);
    }
    Ok(out)
}

/// Borrows a sequence of 4·m arrays of dtype T mutably (W1, b1, W2, b2 per set).
fn borrow_sets<'py, T: Float + Element>(
    op: &str,
    what: &str,
    seq: &Bound<'py, PyAny>,
    sets: usize,
) -> PyResult<Vec<PyReadwriteArrayDyn<'py, T>>> {
    let layout = if sets > 1 {
        "W1, b1, W2, b2 per state set"
    } else {
        "W1, b1, W2, b2"
    };
    borrow_list(op, what, seq, 4 * sets, layout, &|i| {
        NAMES[i % 4].to_owned()
    })
}

fn views<'a, T: Float + Element>(
    op: &str,
    what: &str,
    arrs: &'a mut [PyReadwriteArrayDyn<'_, T>],
) -> PyResult<Vec<ParamsMut<'a, T>>> {
    let mut sets = Vec::with_capacity(arrs.len() / 4);
    for chunk in arrs.chunks_mut(4) {
        let [w1, b1, w2, b2] = chunk else {
            return Err(PyValueError::new_err(format!(
                "{op}: {what} must hold groups of 4 arrays"
            )));
        };
        let shape_err = |name: &str, nd: usize, got: &[usize]| {
            PyValueError::new_err(format!(
                "{op}: {what} {name} must be {nd}-D, got shape {got:?}"
            ))
        };
        let (s1, s2, s3, s4) = (
            w1.shape().to_vec(),
            b1.shape().to_vec(),
            w2.shape().to_vec(),
            b2.shape().to_vec(),
        );
        sets.push(ParamsMut {
            w1: w1
                .as_array_mut()
                .into_dimensionality::<Ix2>()
                .map_err(|_| shape_err("W1", 2, &s1))?,
            b1: b1
                .as_array_mut()
                .into_dimensionality::<Ix1>()
                .map_err(|_| shape_err("b1", 1, &s2))?,
            w2: w2
                .as_array_mut()
                .into_dimensionality::<Ix2>()
                .map_err(|_| shape_err("W2", 2, &s3))?,
            b2: b2
                .as_array_mut()
                .into_dimensionality::<Ix1>()
                .map_err(|_| shape_err("b2", 1, &s4))?,
        });
    }
    Ok(sets)
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
    XArg<'py, T>,
    TargetArg<'py, T>,
    PyReadonlyArrayDyn<'py, i64>,
)> {
    let xs = XArg::<T>::new(op, x)?;
    let ts = targets::<T>(op, t)?;
    let idx = batch_indices
        .cast::<PyArrayDyn<i64>>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{op}: batch_indices must be an int64 numpy.ndarray"
            ))
        })?
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{op}: cannot read batch_indices: {e}")))?;
    Ok((xs, ts, idx))
}

fn run_typed<'py, T: SparseDtype>(
    py: Python<'py>,
    trainer: &mut Trainer<T>,
    params: &Bound<'py, PyAny>,
    state: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    batch_indices: &Bound<'py, PyAny>,
    iter: u64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    const OP: &str = "TwoLayerTrainer.run";
    // Inputs first (read-only), so parameters aliasing them fail the read-write borrow.
    let (xs, ts, idx_arr) = run_inputs::<T>(OP, x, t, batch_indices)?;
    let (x, t) = (xs.rows(OP, true)?, ts.view(OP)?);
    let idx = dims::<i64, Ix2>(OP, "batch_indices", idx_arr.as_array())?;
    let mut p_arrs = borrow_sets::<T>(OP, "params", params, 1)?;
    let mut s_arrs = borrow_sets::<T>(OP, "state", state, trainer.optimizer().state_slots())?;
    let mut p_sets = views(OP, "params", &mut p_arrs)?;
    let mut s_sets = views(OP, "state", &mut s_arrs)?;
    let Some(p) = p_sets.first_mut() else {
        return Err(PyValueError::new_err(format!(
            "{OP}: params must hold 4 arrays"
        )));
    };
    let signal = SignalCheck::default();
    let losses = py.detach(|| {
        let stop = || signal.interrupted();
        trainer.run(p, &mut s_sets, x, t, idx, iter, &stop)
    });
    Ok(signal.result(losses)?.into_pyarray(py))
}

#[pymethods]
impl TwoLayerTrainer {
    #[new]
    #[pyo3(signature = (input_size, hidden_size, output_size, *, activation = "sigmoid", dtype = "float64",
                        optimizer = "sgd", lr = None, momentum = 0.9, decay_rate = 0.99, beta1 = 0.9, beta2 = 0.999))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        input_size: usize,
        hidden_size: usize,
        output_size: usize,
        activation: &str,
        dtype: &str,
        optimizer: &str,
        lr: Option<f64>,
        momentum: f64,
        decay_rate: f64,
        beta1: f64,
        beta2: f64,
    ) -> PyResult<Self> {
        let rates = [momentum, decay_rate, beta1, beta2];
        let setup = Setup::new(
            "TwoLayerTrainer",
            activation,
            dtype,
            optimizer,
            lr,
            rates,
            4,
        )?;
        let (d, h, k, act, opt) = (input_size, hidden_size, output_size, setup.act, setup.opt);
        let inner = if setup.dtype == "float32" {
            Inner::F32(Trainer::new(d, h, k, act, opt)?)
        } else {
            Inner::F64(Trainer::new(d, h, k, act, opt)?)
        };
        Ok(TwoLayerTrainer { inner, setup })
    }

    /// The working dtype, 'float32' or 'float64'.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.setup.dtype
    }

    /// The optimizer's name.
    #[getter]
    fn optimizer(&self) -> &str {
        &self.setup.optimizer
    }

    /// Number of state arrays the optimizer needs (0 SGD, 4 for v or h, 8 for Adam's m, v).
    #[getter]
    fn state_size(&self) -> usize {
        self.setup.state_size
    }

    /// Runs one training step per row of ``batch_indices`` (iters, batch) of row
    /// indices into x (N, d) and t (int64 labels (N,) or one-hot (N, k)), updating
    /// ``params`` [W1, b1, W2, b2] and ``state`` (momentum/nesterov: v; adagrad/rmsprop:
    /// h; adam: m then v, each as W1, b1, W2, b2) in place. ``iter`` is Adam's step
    /// count before the first step. Returns the float64 loss of every step (iters,).
    #[pyo3(signature = (params, state, x, t, batch_indices, *, iter = 0))]
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
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        match &mut self.inner {
            Inner::F32(tr) => run_typed(py, tr, params, state, x, t, batch_indices, iter),
            Inner::F64(tr) => run_typed(py, tr, params, state, x, t, batch_indices, iter),
        }
    }
}

enum MultiInner {
    F32(MultiTrainer<f32>),
    F64(MultiTrainer<f64>),
}

/// Fused training of the fully connected net (the book's MultiLayerNet, with its L2
/// weight decay λ = ``weight_decay``, without dropout or batch norm): each ``run`` call
/// does, per row of ``batch_indices``, the batch gather, forward, backprop and optimizer
/// update in place on the caller's arrays, with the GIL released and buffers reused.
/// ``sizes`` is [input, hidden..., output]; optimizers as ``TwoLayerTrainer``.
#[pyclass(module = "ferrograd._core")]
pub struct MultiLayerTrainer {
    inner: MultiInner,
    setup: Setup,
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

fn run_multi_typed<'py, T: SparseDtype>(
    py: Python<'py>,
    trainer: &mut MultiTrainer<T>,
    params: &Bound<'py, PyAny>,
    state: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    batch_indices: &Bound<'py, PyAny>,
    iter: u64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    const OP: &str = "MultiLayerTrainer.run";
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
    let losses = py.detach(|| {
        let stop = || signal.interrupted();
        trainer.run(&mut p, &mut s_sets, x, t, idx, iter, &stop)
    });
    Ok(signal.result(losses)?.into_pyarray(py))
}

#[pymethods]
impl MultiLayerTrainer {
    #[new]
    #[pyo3(signature = (sizes, *, activation = "relu", dtype = "float64", optimizer = "sgd",
                        lr = None, momentum = 0.9, decay_rate = 0.99, beta1 = 0.9, beta2 = 0.999,
                        weight_decay = 0.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        sizes: Vec<usize>,
        activation: &str,
        dtype: &str,
        optimizer: &str,
        lr: Option<f64>,
        momentum: f64,
        decay_rate: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
    ) -> PyResult<Self> {
        let rates = [momentum, decay_rate, beta1, beta2];
        let per_set = 2 * sizes.len().saturating_sub(1);
        let setup = Setup::new(
            "MultiLayerTrainer",
            activation,
            dtype,
            optimizer,
            lr,
            rates,
            per_set,
        )?;
        let (act, opt) = (setup.act, setup.opt);
        let inner = if setup.dtype == "float32" {
            MultiInner::F32(MultiTrainer::new(&sizes, act, opt, weight_decay)?)
        } else {
            MultiInner::F64(MultiTrainer::new(&sizes, act, opt, weight_decay)?)
        };
        Ok(MultiLayerTrainer { inner, setup })
    }

    /// The working dtype, 'float32' or 'float64'.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.setup.dtype
    }

    /// The optimizer's name.
    #[getter]
    fn optimizer(&self) -> &str {
        &self.setup.optimizer
    }

    /// Number of state arrays the optimizer needs (2 per layer per state set).
    #[getter]
    fn state_size(&self) -> usize {
        self.setup.state_size
    }

    /// Runs one training step per row of ``batch_indices`` (iters, batch) of row
    /// indices into x (N, d) and t (int64 labels (N,) or one-hot (N, k)), updating
    /// ``params`` [W1, b1, W2, b2, ...] and ``state`` (one such list per state set:
    /// momentum/nesterov v; adagrad/rmsprop h; adam m then v) in place. ``iter`` is
    /// Adam's step count before the first step. Returns the float64 loss of every step.
    #[pyo3(signature = (params, state, x, t, batch_indices, *, iter = 0))]
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
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        match &mut self.inner {
            MultiInner::F32(tr) => {
                run_multi_typed(py, tr, params, state, x, t, batch_indices, iter)
            }
            MultiInner::F64(tr) => {
                run_multi_typed(py, tr, params, state, x, t, batch_indices, iter)
            }
        }
    }
}

/// Fraction of rows of x (n, d) whose predicted class (argmax of the two-layer net's
/// output) equals t (int64 labels (n,), or the argmax of one-hot rows). Parallel.
#[pyfunction]
#[pyo3(signature = (w1, b1, w2, b2, x, t, *, activation = "sigmoid"))]
#[allow(clippy::too_many_arguments)]
pub fn two_layer_accuracy<'py>(
    py: Python<'py>,
    w1: &Bound<'py, PyAny>,
    b1: &Bound<'py, PyAny>,
    w2: &Bound<'py, PyAny>,
    b2: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<f64> {
    const OP: &str = "accuracy";
    let act = parse_activation(OP, activation)?;
    dispatch!(float_array(OP, "W1", w1)?, w1 => {
        let p = Params::borrow(OP, w1, [b1, w2, b2])?;
        let net = p.net(OP, act)?;
        let xs = XArg::new(OP, x)?;
        let x = xs.rows(OP, false)?;
        let ts = targets(OP, t)?;
        let t = ts.view(OP)?;
        let work = x.nrows() * net.w1.len();
        Ok(run(py, work, || k::accuracy(&net, x, t))?)
    })
}

/// Predicted class (int64) of every row of x (n, d): argmax of the two-layer net's output.
#[pyfunction]
#[pyo3(signature = (w1, b1, w2, b2, x, *, activation = "sigmoid"))]
pub fn two_layer_predict_labels<'py>(
    py: Python<'py>,
    w1: &Bound<'py, PyAny>,
    b1: &Bound<'py, PyAny>,
    w2: &Bound<'py, PyAny>,
    b2: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    const OP: &str = "predict_labels";
    let act = parse_activation(OP, activation)?;
    dispatch!(float_array(OP, "W1", w1)?, w1 => {
        let p = Params::borrow(OP, w1, [b1, w2, b2])?;
        let net = p.net(OP, act)?;
        let xs = XArg::new(OP, x)?;
        let x = xs.rows(OP, false)?;
        let labels = run(py, x.nrows() * net.w1.len(), || k::predict_rows(&net, x))?;
        Ok(labels.into_iter().map(|c| c as i64).collect::<Vec<i64>>().into_pyarray(py))
    })
}

/// Fraction of rows of x (n, d) whose predicted class (argmax of the output of the net
/// with layers ``params`` = [W1, b1, W2, b2, ...], ``activation`` after each hidden
/// layer) equals t (int64 labels (n,), or the argmax of one-hot rows). Parallel.
#[pyfunction]
#[pyo3(signature = (params, x, t, *, activation = "relu"))]
pub fn multi_layer_accuracy<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<f64> {
    const OP: &str = "accuracy";
    let act = parse_activation(OP, activation)?;
    let seq = params.cast::<PySequence>().map_err(|_| {
        PyTypeError::new_err(format!("{OP}: params must be a sequence of numpy arrays"))
    })?;
    let len = seq.len()?;
    if len < 4 || len % 2 != 0 {
        return Err(PyValueError::new_err(format!(
            "{OP}: params must hold W1, b1, W2, b2, ... (an even number, at least 4), got {len}"
        )));
    }
    let name = |i: usize| format!("{}{}", if i % 2 == 0 { "W" } else { "b" }, i / 2 + 1);
    dispatch!(float_array(OP, "W1", &seq.get_item(0)?)?, w1 => {
        let mut arrays = vec![w1];
        for i in 1..len {
            arrays.push(same_dtype(OP, &name(i), &seq.get_item(i)?)?);
        }
        let mut layers = Vec::with_capacity(len / 2);
        for (l, pair) in arrays.chunks_exact(2).enumerate() {
            layers.push(Layer {
                w: dims::<_, Ix2>(OP, &name(2 * l), pair[0].as_array())?,
                b: dims::<_, Ix1>(OP, &name(2 * l + 1), pair[1].as_array())?,
            });
        }
        let xs = XArg::new(OP, x)?;
        let x = xs.rows(OP, false)?;
        let ts = targets(OP, t)?;
        let t = ts.view(OP)?;
        let work = x.nrows() * layers[0].w.len();
        Ok(run(py, work, || km::accuracy_multi(&layers, act, x, t))?)
    })
}
