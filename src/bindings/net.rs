//! The two-layer net's `predict`, `loss` and backprop `gradient` for Python.

use ndarray::{ArrayView2, Ix1, Ix2};
use numpy::{Element, IntoPyArray, PyArray1, PyArray2, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::activation::parse_activation;
use super::convert::{batch, dims, dispatch, float_array, run, same_dtype, targets, FloatArray};
use crate::kernels::activation::Activation;
use crate::kernels::net::{Batch, Gradients, TwoLayerNet};
use crate::kernels::Float;

/// The four gradient arrays as Python returns them: (dW1, db1, dW2, db2).
pub type GradTuple<'py, T> = (
    Bound<'py, PyArray2<T>>,
    Bound<'py, PyArray1<T>>,
    Bound<'py, PyArray2<T>>,
    Bound<'py, PyArray1<T>>,
);

pub fn grads_to_py<'py, T: Float + Element>(py: Python<'py>, g: Gradients<T>) -> GradTuple<'py, T> {
    (
        g.w1.into_pyarray(py),
        g.b1.into_pyarray(py),
        g.w2.into_pyarray(py),
        g.b2.into_pyarray(py),
    )
}

/// Typed, borrowed parameters W1, b1, W2, b2 of one dtype.
pub struct Params<'py, T: Element> {
    pub w1: PyReadonlyArrayDyn<'py, T>,
    pub b1: PyReadonlyArrayDyn<'py, T>,
    pub w2: PyReadonlyArrayDyn<'py, T>,
    pub b2: PyReadonlyArrayDyn<'py, T>,
}

impl<'py, T: Float + Element> Params<'py, T> {
    pub fn borrow(
        op: &str,
        w1: PyReadonlyArrayDyn<'py, T>,
        rest: [&Bound<'py, PyAny>; 3],
    ) -> PyResult<Self> {
        Ok(Params {
            w1,
            b1: same_dtype::<T>(op, "b1", rest[0])?,
            w2: same_dtype::<T>(op, "W2", rest[1])?,
            b2: same_dtype::<T>(op, "b2", rest[2])?,
        })
    }

    pub fn net(&self, op: &str, activation: Activation) -> PyResult<TwoLayerNet<'_, T>> {
        Ok(TwoLayerNet {
            w1: dims::<T, Ix2>(op, "W1", self.w1.as_array())?,
            b1: dims::<T, Ix1>(op, "b1", self.b1.as_array())?,
            w2: dims::<T, Ix2>(op, "W2", self.w2.as_array())?,
            b2: dims::<T, Ix1>(op, "b2", self.b2.as_array())?,
            activation,
        })
    }
}

/// Borrows a call's two-layer net (W1 of dtype T, then b1, W2, b2 of the same dtype)
/// and its batch x (n, d) or (d,) of either float dtype, and hands both to `f`.
pub fn with_net_and_batch<'py, T: Float + Element, R>(
    op: &str,
    w1: PyReadonlyArrayDyn<'py, T>,
    rest: [&Bound<'py, PyAny>; 3],
    activation: Activation,
    x: &Bound<'py, PyAny>,
    f: impl FnOnce(TwoLayerNet<'_, T>, Batch<'_>) -> PyResult<R>,
) -> PyResult<R> {
    let p = Params::borrow(op, w1, rest)?;
    let net = p.net(op, activation)?;
    match float_array(op, "x", x)? {
        FloatArray::F32(xs) => f(net, Batch::F32(batch(op, "x", xs.as_array())?)),
        FloatArray::F64(xs) => f(net, Batch::F64(batch(op, "x", xs.as_array())?)),
    }
}

/// Borrows a call's two-layer net (W1 of dtype T, then b1, W2, b2 of the same dtype)
/// and its batch x (n, d) or (d,), and hands both to `f`.
pub fn with_net<'py, T: Float + Element, R>(
    op: &str,
    w1: PyReadonlyArrayDyn<'py, T>,
    rest: [&Bound<'py, PyAny>; 3],
    activation: Activation,
    x: &Bound<'py, PyAny>,
    f: impl FnOnce(TwoLayerNet<'_, T>, ArrayView2<'_, T>) -> PyResult<R>,
) -> PyResult<R> {
    let p = Params::borrow(op, w1, rest)?;
    let net = p.net(op, activation)?;
    let xs = same_dtype(op, "x", x)?;
    f(net, batch(op, "x", xs.as_array())?)
}

/// Softmax output of the two-layer net for a batch x (n, d) or one sample (d,).
#[pyfunction]
#[pyo3(signature = (w1, b1, w2, b2, x, *, activation = "sigmoid"))]
pub fn two_layer_predict<'py>(
    py: Python<'py>,
    w1: &Bound<'py, PyAny>,
    b1: &Bound<'py, PyAny>,
    w2: &Bound<'py, PyAny>,
    b2: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "predict";
    let act = parse_activation(OP, activation)?;
    dispatch!(float_array(OP, "W1", w1)?, w1 => with_net_and_batch(OP, w1, [b1, w2, b2], act, x, |net, x| {
        let y = run(py, x.len() * net.w1.ncols(), || net.predict_batch(x))?;
        Ok(y.into_pyarray(py).into_any())
    }))
}

/// Mean cross-entropy loss of the two-layer net on (x, t).
#[pyfunction]
#[pyo3(signature = (w1, b1, w2, b2, x, t, *, activation = "sigmoid"))]
pub fn two_layer_loss<'py>(
    py: Python<'py>,
    w1: &Bound<'py, PyAny>,
    b1: &Bound<'py, PyAny>,
    w2: &Bound<'py, PyAny>,
    b2: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<f64> {
    const OP: &str = "loss";
    let act = parse_activation(OP, activation)?;
    dispatch!(float_array(OP, "W1", w1)?, w1 => with_net_and_batch(OP, w1, [b1, w2, b2], act, x, |net, x| {
        let ts = targets(OP, t)?;
        let t = ts.view(OP)?;
        Ok(run(py, x.len() * net.w1.ncols(), || net.loss_batch(x, t))?.to_f64())
    }))
}

/// Backprop gradient (dW1, db1, dW2, db2) of the two-layer net's mean loss.
#[pyfunction]
#[pyo3(signature = (w1, b1, w2, b2, x, t, *, activation = "sigmoid"))]
pub fn two_layer_gradient<'py>(
    py: Python<'py>,
    w1: &Bound<'py, PyAny>,
    b1: &Bound<'py, PyAny>,
    w2: &Bound<'py, PyAny>,
    b2: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    t: &Bound<'py, PyAny>,
    activation: &str,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "gradient";
    let act = parse_activation(OP, activation)?;
    dispatch!(float_array(OP, "W1", w1)?, w1 => with_net_and_batch(OP, w1, [b1, w2, b2], act, x, |net, x| {
        let ts = targets(OP, t)?;
        let t = ts.view(OP)?;
        let g = run(py, x.len() * net.w1.ncols(), || net.gradient_batch(x, t))?;
        Ok(grads_to_py(py, g).into_pyobject(py)?.into_any())
    }))
}
