//! The book's numerical gradient of the two-layer net for Python.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::activation::parse_activation;
use super::convert::{float_array, targets, FloatArray, SignalCheck};
use super::net::{grads_to_py, with_net, GradTuple};
use crate::kernels::numgrad as k;

/// The book's numerical gradient (central difference, h = 1e-4, δ = 1e-7 in the loss)
/// of the two-layer net's mean loss w.r.t. W1, b1, W2, b2. float64 only. Returns
/// (dW1, db1, dW2, db2).
///
/// ``method="fast"`` (default) evaluates the same perturbed points but re-evaluates only
/// the rows and units each probe moves; ``method="bruteforce"`` recomputes the whole
/// forward pass for every probe (the definition, for checking). Ctrl-C stops both.
#[pyfunction]
#[pyo3(signature = (w1, b1, w2, b2, x, t, *, activation = "sigmoid", method = "fast"))]
pub fn numerical_gradient<'py>(
    py: Python<'py>,
    w1: &Bound<'py, PyAny>,
    b1: &Bound<'py, PyAny>,
    w2: &Bound<'py, PyAny>,
    b2: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
    method: &str,
) -> PyResult<GradTuple<'py, f64>> {
    const OP: &str = "numerical_gradient";
    let act = parse_activation(OP, activation)?;
    let fast = is_fast(OP, method)?;
    let w1 = match float_array(OP, "W1", w1)? {
        FloatArray::F64(w1) => w1,
        FloatArray::F32(_) => {
            return Err(PyTypeError::new_err(format!(
                "{OP}: W1 has dtype float32; numerical gradients are float64 only (float32 \
                 rounding is as large as the change h = 1e-4 makes)"
            )))
        }
    };
    with_net(OP, w1, [b1, w2, b2], act, x, |net, x| {
        let ts = targets::<f64>(OP, t)?;
        let t = ts.view(OP)?;
        let signal = SignalCheck::default();
        let g = py.detach(|| {
            let stop = || signal.interrupted();
            if fast {
                k::numerical_gradient_fast(&net, x, t, &stop)
            } else {
                k::numerical_gradient_bruteforce_with(&net, x, t, &stop)
            }
        });
        Ok(grads_to_py(py, signal.result(g)?))
    })
}

/// True for ``method="fast"``, false for ``"bruteforce"``; ValueError otherwise.
pub(super) fn is_fast(op: &str, method: &str) -> PyResult<bool> {
    match method {
        "fast" => Ok(true),
        "bruteforce" => Ok(false),
        other => Err(PyValueError::new_err(format!(
            "{op}: method must be 'fast' or 'bruteforce', got {other:?}"
        ))),
    }
}
