//! ch. 7 max pooling forward and backward for Python.

use ndarray::Ix4;
use numpy::{Element, IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::convert::{dims, dispatch, float_array, readonly, run, SignalCheck};
use crate::kernels::{pooling as k, Float};

/// Max pooling: x (N, C, H, W) → (out, arg_max), both (N, C, oh, ow): the largest entry
/// of each pool_h×pool_w window (stride, zero padding ``pad``) and its index
/// ky·pool_w + kx in the window (int64, the first maximum as ``np.argmax``).
#[pyfunction]
#[pyo3(signature = (x, pool_h, pool_w, stride = 1, pad = 0))]
pub fn pool_forward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    pool_h: usize,
    pool_w: usize,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("pool_forward", "x", x)?, x => {
        let x = dims::<_, Ix4>("pool_forward", "x", x.as_array())?;
        let signal = SignalCheck::default();
        let r = py.detach(|| k::pool_forward(x, pool_h, pool_w, stride, pad, &|| signal.interrupted()));
        let (out, arg) = signal.result(r)?;
        Ok((out.into_pyarray(py), arg.into_pyarray(py)).into_pyobject(py)?.into_any())
    })
}

/// Max pooling backward: dout and arg_max (N, C, oh, ow) → dx of ``x_shape`` (N, C, H,
/// W), each dout entry added where its window's maximum was (overlaps add up).
#[pyfunction]
#[pyo3(signature = (dout, arg_max, x_shape, pool_h, pool_w, stride = 1, pad = 0))]
pub fn pool_backward<'py>(
    py: Python<'py>,
    dout: &Bound<'py, PyAny>,
    arg_max: &Bound<'py, PyAny>,
    x_shape: [usize; 4],
    pool_h: usize,
    pool_w: usize,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let arg = arg_max.cast::<PyArrayDyn<i64>>().map_err(|_| {
        PyTypeError::new_err("pool_backward: arg_max must be an int64 numpy.ndarray")
    })?;
    let arg = readonly("pool_backward", "arg_max", arg)?;
    dispatch!(float_array("pool_backward", "dout", dout)?, d => backward_t(py, d, arg, x_shape, (pool_h, pool_w), stride, pad))
}

fn backward_t<'py, T: Float + Element>(
    py: Python<'py>,
    dout: PyReadonlyArrayDyn<'py, T>,
    arg: PyReadonlyArrayDyn<'py, i64>,
    x_shape: [usize; 4],
    (pool_h, pool_w): (usize, usize),
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "pool_backward";
    let dout = dims::<T, Ix4>(OP, "dout", dout.as_array())?;
    let arg = dims::<i64, Ix4>(OP, "arg_max", arg.as_array())?;
    let dx = run(py, dout.len(), || {
        k::pool_backward(dout, arg, x_shape, pool_h, pool_w, stride, pad)
    })?;
    Ok(dx.into_pyarray(py).into_any())
}
