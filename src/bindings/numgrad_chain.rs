//! The numerical gradient of MultiLayerNet's layer chain for Python.

use ndarray::{Ix1, Ix2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PySequence, PyTuple};

use super::activation::parse_activation;
use super::convert::{dims, readonly, targets, SignalCheck};
use super::numgrad::is_fast;
use crate::kernels::numgrad_chain::{self as k, Chain, ChainLayer, LayerGradient};

const OP: &str = "chain_numerical_gradient";

/// One layer's arrays as given: W, b, and optionally γ, β, the dropout mask.
struct LayerArgs<'py> {
    w: PyReadonlyArrayDyn<'py, f64>,
    b: PyReadonlyArrayDyn<'py, f64>,
    gamma: Option<PyReadonlyArrayDyn<'py, f64>>,
    beta: Option<PyReadonlyArrayDyn<'py, f64>>,
    mask: Option<PyReadonlyArrayDyn<'py, f64>>,
}

fn f64_arg<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArrayDyn<'py, f64>> {
    match obj.cast::<PyArrayDyn<f64>>() {
        Ok(a) => readonly(OP, name, a),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{OP}: {name} must be a float64 numpy.ndarray (numerical gradients are float64 \
             only: float32 rounding is as large as the change h = 1e-4 makes)"
        ))),
    }
}

fn optional<'py>(
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<PyReadonlyArrayDyn<'py, f64>>> {
    if obj.is_none() {
        Ok(None)
    } else {
        f64_arg(name, obj).map(Some)
    }
}

impl<'py> LayerArgs<'py> {
    fn parse(l: usize, item: &Bound<'py, PyAny>) -> PyResult<Self> {
        let tuple = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{OP}: layer {l} must be a tuple (W, b, gamma, beta, mask)"
            ))
        })?;
        if tuple.len() != 5 {
            return Err(PyValueError::new_err(format!(
                "{OP}: layer {l} has {} items; need (W, b, gamma, beta, mask), None for absent",
                tuple.len()
            )));
        }
        Ok(LayerArgs {
            w: f64_arg(&format!("W{l}"), &tuple.get_item(0)?)?,
            b: f64_arg(&format!("b{l}"), &tuple.get_item(1)?)?,
            gamma: optional(&format!("gamma{l}"), &tuple.get_item(2)?)?,
            beta: optional(&format!("beta{l}"), &tuple.get_item(3)?)?,
            mask: optional(&format!("mask{l}"), &tuple.get_item(4)?)?,
        })
    }

    fn view(&self, l: usize) -> PyResult<ChainLayer<'_>> {
        let batch_norm = match (&self.gamma, &self.beta) {
            (Some(g), Some(b)) => Some((
                dims::<f64, Ix1>(OP, &format!("gamma{l}"), g.as_array())?,
                dims::<f64, Ix1>(OP, &format!("beta{l}"), b.as_array())?,
            )),
            (None, None) => None,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "{OP}: layer {l} has one of gamma and beta; a batch norm needs both"
                )))
            }
        };
        Ok(ChainLayer {
            w: dims::<f64, Ix2>(OP, &format!("W{l}"), self.w.as_array())?,
            b: dims::<f64, Ix1>(OP, &format!("b{l}"), self.b.as_array())?,
            batch_norm,
            mask: match &self.mask {
                Some(m) => Some(dims::<f64, Ix2>(OP, &format!("mask{l}"), m.as_array())?),
                None => None,
            },
        })
    }
}

type LayerTuple<'py> = (
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray1<f64>>,
    Option<Bound<'py, PyArray1<f64>>>,
    Option<Bound<'py, PyArray1<f64>>>,
);

/// The book's numerical gradient (central differences, h = 1e-4) of the mean
/// softmax cross-entropy (+ ½λ·Σ‖W‖²) of a chain of layers: each layer a tuple
/// (W, b, gamma, beta, mask) — Affine, then (hidden layers) batch norm in training mode
/// when gamma/beta are given, ``activation``, and the dropout mask (n, h) of 0/1 when
/// given. float64 only. Returns one (dW, db, dgamma, dbeta) per layer (None without a
/// batch norm).
///
/// ``method="fast"`` re-evaluates only what each probe moves (equal to brute force up
/// to rounding); ``method="bruteforce"`` runs the whole forward pass for every probe.
/// Parallel, GIL released, Ctrl-C honoured.
#[pyfunction]
#[pyo3(signature = (layers, x, t, *, activation, weight_decay = 0.0, method = "fast"))]
pub fn chain_numerical_gradient<'py>(
    py: Python<'py>,
    layers: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
    weight_decay: f64,
    method: &str,
) -> PyResult<Vec<LayerTuple<'py>>> {
    let act = parse_activation(OP, activation)?;
    let fast = is_fast(OP, method)?;
    if !weight_decay.is_finite() {
        return Err(PyValueError::new_err(format!(
            "{OP}: weight_decay must be finite, got {weight_decay}"
        )));
    }
    let seq = layers
        .cast::<PySequence>()
        .map_err(|_| PyTypeError::new_err(format!("{OP}: layers must be a list of tuples")))?;
    let args = (0..seq.len()?)
        .map(|l| LayerArgs::parse(l + 1, &seq.get_item(l)?))
        .collect::<PyResult<Vec<_>>>()?;
    let views = args
        .iter()
        .enumerate()
        .map(|(l, a)| a.view(l + 1))
        .collect::<PyResult<Vec<_>>>()?;
    let chain = Chain {
        layers: views,
        activation: act,
        weight_decay,
    };
    let xa = f64_arg("x", x)?;
    let xv = dims::<f64, Ix2>(OP, "x", xa.as_array())?;
    let ts = targets::<f64>(OP, t)?;
    let tv = ts.view(OP)?;
    let signal = SignalCheck::default();
    let grads = py.detach(|| {
        let stop = || signal.interrupted();
        if fast {
            k::numerical_gradient_fast(&chain, xv, tv, &stop)
        } else {
            k::numerical_gradient_bruteforce(&chain, xv, tv, &stop)
        }
    });
    Ok(signal
        .result(grads)?
        .into_iter()
        .map(|g: LayerGradient| {
            (
                g.w.into_pyarray(py),
                g.b.into_pyarray(py),
                g.gamma.map(|a| a.into_pyarray(py)),
                g.beta.map(|a| a.into_pyarray(py)),
            )
        })
        .collect())
}
