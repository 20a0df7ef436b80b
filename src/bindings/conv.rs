//! ch. 7 im2col, col2im and the Convolution layer's forward and backward for Python.

use ndarray::{Ix1, Ix2, Ix4};
use numpy::{Element, IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use super::convert::{dims, dispatch, float_array, run, same_dtype, SignalCheck};
use crate::kernels::{conv as k, Float};

/// The book's im2col: x (N, C, H, W) → (N·oh·ow, C·filter_h·filter_w), one row per
/// window position (n, i, j) holding the window in (c, ky, kx) order, zero-padded by
/// ``pad``. float32 or float64; the result has x's dtype.
#[pyfunction]
#[pyo3(signature = (x, filter_h, filter_w, stride = 1, pad = 0))]
pub fn im2col<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    filter_h: usize,
    filter_w: usize,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("im2col", "x", x)?, x => {
        let x = dims::<_, Ix4>("im2col", "x", x.as_array())?;
        let work = x.len().saturating_mul(filter_h).saturating_mul(filter_w);
        let col = run(py, work, || k::im2col(x, filter_h, filter_w, stride, pad))?;
        Ok(col.into_pyarray(py).into_any())
    })
}

/// The book's col2im, the adjoint of im2col: col (N·oh·ow, C·filter_h·filter_w) summed
/// back into an array of ``input_shape`` (N, C, H, W); overlapping windows add up and
/// the padding is cut off.
#[pyfunction]
#[pyo3(signature = (col, input_shape, filter_h, filter_w, stride = 1, pad = 0))]
pub fn col2im<'py>(
    py: Python<'py>,
    col: &Bound<'py, PyAny>,
    input_shape: [usize; 4],
    filter_h: usize,
    filter_w: usize,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("col2im", "col", col)?, col => {
        let col = dims::<_, Ix2>("col2im", "col", col.as_array())?;
        let img = run(py, col.len(), || {
            k::col2im(col, input_shape, filter_h, filter_w, stride, pad)
        })?;
        Ok(img.into_pyarray(py).into_any())
    })
}

/// Convolution forward: out[n, f, i, j] = b[f] + Σ W[f, c, ky, kx]·x[n, c, i·stride + ky
/// − pad, j·stride + kx − pad]. x (N, C, H, W), W (FN, C, FH, FW), b (FN,) → (N, FN,
/// oh, ow), all of one dtype. Runs without the GIL; Ctrl-C stops it.
#[pyfunction]
#[pyo3(signature = (x, w, b, stride = 1, pad = 0))]
pub fn conv_forward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("conv_forward", "x", x)?, x => forward_t(py, x, w, b, stride, pad))
}

fn forward_t<'py, T: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, T>,
    w: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "conv_forward";
    let (w, b) = (same_dtype::<T>(OP, "W", w)?, same_dtype::<T>(OP, "b", b)?);
    let x = dims::<T, Ix4>(OP, "x", x.as_array())?;
    let w = dims::<T, Ix4>(OP, "W", w.as_array())?;
    let b = dims::<T, Ix1>(OP, "b", b.as_array())?;
    let signal = SignalCheck::default();
    let out = py.detach(|| k::conv_forward(x, w, b, stride, pad, &|| signal.interrupted()));
    Ok(signal.result(out)?.into_pyarray(py).into_any())
}

/// Convolution backward: from x, W and dout (N, FN, oh, ow), returns (dx, dW, db) with
/// dx like x, dW like W, db (FN,) (the book's dW = colᵀ·dout, db = Σ dout,
/// dx = col2im(dout·col_Wᵀ)). Runs without the GIL; Ctrl-C stops it.
#[pyfunction]
#[pyo3(signature = (x, w, dout, stride = 1, pad = 0))]
pub fn conv_backward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    dout: &Bound<'py, PyAny>,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("conv_backward", "x", x)?, x => backward_t(py, x, w, dout, stride, pad))
}

fn backward_t<'py, T: Float + Element>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, T>,
    w: &Bound<'py, PyAny>,
    dout: &Bound<'py, PyAny>,
    stride: usize,
    pad: usize,
) -> PyResult<Bound<'py, PyAny>> {
    const OP: &str = "conv_backward";
    let (w, dout) = (
        same_dtype::<T>(OP, "W", w)?,
        same_dtype::<T>(OP, "dout", dout)?,
    );
    let x = dims::<T, Ix4>(OP, "x", x.as_array())?;
    let w = dims::<T, Ix4>(OP, "W", w.as_array())?;
    let dout = dims::<T, Ix4>(OP, "dout", dout.as_array())?;
    let signal = SignalCheck::default();
    let g = py.detach(|| k::conv_backward(x, w, dout, stride, pad, &|| signal.interrupted()));
    let g = signal.result(g)?;
    let grads = (
        g.dx.into_pyarray(py),
        g.dw.into_pyarray(py),
        g.db.into_pyarray(py),
    );
    Ok(grads.into_pyobject(py)?.into_any())
}
