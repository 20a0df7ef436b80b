//! Turning Python arguments into kernel views, and kernel errors into Python ones.

use ndarray::{ArrayViewD, Dimension, Ix1, Ix2};
use numpy::{
    BorrowError, Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::error::{fmt_shape, KernelError};
use crate::kernels::{Float, Targets};

impl From<KernelError> for PyErr {
    fn from(err: KernelError) -> PyErr {
        match err {
            KernelError::Interrupted { .. } => PyKeyboardInterrupt::new_err(err.to_string()),
            KernelError::Alloc { .. } => PyMemoryError::new_err(err.to_string()),
            _ => PyValueError::new_err(err.to_string()),
        }
    }
}

/// Work (in elements or multiply-adds) below which the GIL is kept: releasing and
/// retaking it costs more than such a call.
pub const DETACH_MIN_WORK: usize = 1 << 14;

/// Runs `f` with the GIL released when the work is large enough to pay for it.
pub fn run<T: Send>(py: Python<'_>, work: usize, f: impl FnOnce() -> T + Send) -> T {
    if work >= DETACH_MIN_WORK {
        py.detach(f)
    } else {
        f()
    }
}

/// A float32 or float64 array argument.
pub enum FloatArray<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .qualname()
        .map_or_else(|_| "object".to_owned(), |s| s.to_string())
}

fn untyped<'a, 'py>(
    op: &str,
    name: &str,
    obj: &'a Bound<'py, PyAny>,
) -> PyResult<&'a Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{op}: {name} must be a numpy.ndarray, got {}",
            type_name(obj)
        ))
    })
}

fn dtype_name(arr: &Bound<'_, PyUntypedArray>) -> String {
    arr.dtype()
        .str()
        .map_or_else(|_| "?".to_owned(), |s| s.to_string())
}

/// Borrows `obj` as a float32 or float64 array, or raises TypeError naming its dtype.
pub fn float_array<'py>(
    op: &str,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<FloatArray<'py>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<f64>>() {
        return Ok(FloatArray::F64(readonly(op, name, a)?));
    }
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        return Ok(FloatArray::F32(readonly(op, name, a)?));
    }
    let arr = untyped(op, name, obj)?;
    Err(PyTypeError::new_err(format!(
        "{op}: {name} has dtype {}; expected float32 or float64",
        dtype_name(arr)
    )))
}

pub fn readonly<'py, T: Element>(
    op: &str,
    name: &str,
    a: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    // Rust views need aligned elements; a misaligned buffer (np.frombuffer at an odd
    // offset, a packed record field) is read through an aligned copy.
    let owned;
    let a = if a.is_aligned() {
        a
    } else {
        owned = a.call_method0("copy")?.cast_into::<PyArrayDyn<T>>()?;
        &owned
    };
    a.try_readonly()
        .map_err(|e| borrow_error(op, name, &e, Access::Read))
}

/// How a call uses an array it borrows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The ValueError for an array the call cannot borrow: what is wrong and what to do, in
/// place of rust-numpy's "already borrowed" / "not writeable".
pub fn borrow_error(op: &str, name: &str, err: &BorrowError, access: Access) -> PyErr {
    // A borrow that never ends: the thread holding it does not exist in a forked child.
    const BUSY: &str = "a native call that has not finished (in another thread, or in a \
                        thread that was running when this process was forked: that call \
                        never finishes here)";
    let msg = match (err, access) {
        (BorrowError::NotWriteable, _) => format!(
            "{op}: {name} is read-only (its writeable flag is off) but this call updates it \
             in place; give it a writeable copy (arr.copy())"
        ),
        (_, Access::Write) => format!(
            "{op}: {name} cannot be updated in place: its memory is in use, by another array \
             of this call (one array, or views of one array, passed twice) or by {BUSY}; \
             give each array memory of its own (arr.copy(); a net's parameters: \
             copy.deepcopy(net))"
        ),
        (_, Access::Read) => format!(
            "{op}: cannot read {name}: it is being updated in place by {BUSY}; wait for that \
             call to end, or use copies (arr.copy(); a net's parameters: copy.deepcopy(net))"
        ),
    };
    PyValueError::new_err(msg)
}

/// Borrows `obj` as an array of the same dtype `T` as the first argument.
pub fn same_dtype<'py, T: Float + Element>(
    op: &str,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    match obj.cast::<PyArrayDyn<T>>() {
        Ok(a) => readonly(op, name, a),
        Err(_) => {
            let arr = untyped(op, name, obj)?;
            Err(PyTypeError::new_err(format!(
                "{op}: {name} has dtype {} but the other arguments are {}; convert it first",
                dtype_name(arr),
                T::DTYPE
            )))
        }
    }
}

/// Reinterprets a dynamic view as `D`-dimensional, or raises ValueError with the shape.
pub fn dims<'a, T, D: Dimension>(
    op: &str,
    name: &str,
    v: ArrayViewD<'a, T>,
) -> PyResult<ndarray::ArrayView<'a, T, D>> {
    let shape = fmt_shape(v.shape());
    let ndim = v.ndim();
    v.into_dimensionality::<D>().map_err(|_| {
        PyValueError::new_err(format!(
            "{op}: {name} must be {}-D, got shape {shape} ({ndim}-D)",
            D::NDIM.unwrap_or(0)
        ))
    })
}

/// A 1-D or 2-D view as 2-D: a 1-D array is a batch of one row (the book's reshape).
pub fn batch<'a, T>(
    op: &str,
    name: &str,
    v: ArrayViewD<'a, T>,
) -> PyResult<ndarray::ArrayView2<'a, T>> {
    match v.ndim() {
        // insert_axis keeps any stride (a reshape would need a contiguous row).
        1 => Ok(dims::<T, Ix1>(op, name, v)?.insert_axis(ndarray::Axis(0))),
        _ => dims::<T, Ix2>(op, name, v),
    }
}

/// Loss targets: an array of the predictions' float dtype is one-hot; an int64 array
/// holds class labels. 1-D one-hot (or a 0-D label) is a batch of one.
pub enum TargetArg<'py, T: Element> {
    OneHot(PyReadonlyArrayDyn<'py, T>),
    Labels(PyReadonlyArrayDyn<'py, i64>),
}

pub fn targets<'py, T: Float + Element>(
    op: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<TargetArg<'py, T>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<i64>>() {
        return Ok(TargetArg::Labels(readonly(op, "t", a)?));
    }
    if obj.cast::<PyArrayDyn<T>>().is_ok() {
        return Ok(TargetArg::OneHot(same_dtype(op, "t", obj)?));
    }
    let arr = untyped(op, "t", obj)?;
    Err(PyTypeError::new_err(format!(
        "{op}: t has dtype {}; expected int64 labels or {} one-hot rows",
        dtype_name(arr),
        T::DTYPE
    )))
}

impl<'py, T: Float + Element> TargetArg<'py, T> {
    /// The kernel view of the targets, with 1-D one-hot and 0-D labels as batches of one.
    pub fn view(&self, op: &str) -> PyResult<Targets<'_, T>> {
        Ok(match self {
            TargetArg::OneHot(t) => Targets::OneHot(batch(op, "t", t.as_array())?),
            TargetArg::Labels(t) => {
                let v = t.as_array();
                if v.ndim() == 0 {
                    Targets::Labels(
                        v.into_shape_with_order(1)
                            .map_err(|e| PyValueError::new_err(e.to_string()))?,
                    )
                } else {
                    Targets::Labels(dims::<i64, Ix1>(op, "t", v)?)
                }
            }
        })
    }
}

/// Dispatches on the dtype of a [`FloatArray`], binding the typed array to `$x`.
macro_rules! dispatch {
    ($arr:expr, $x:ident => $body:expr) => {
        match $arr {
            $crate::bindings::convert::FloatArray::F32($x) => $body,
            $crate::bindings::convert::FloatArray::F64($x) => $body,
        }
    };
}
pub(crate) use dispatch;

/// Polls Python's signal handlers from inside a detached kernel (between its chunks of
/// work, on the calling thread) and keeps the exception a handler raised.
#[derive(Default)]
pub struct SignalCheck {
    err: std::sync::Mutex<Option<PyErr>>,
}

impl SignalCheck {
    /// True once a handler raised (Ctrl-C: KeyboardInterrupt); the kernel then stops.
    pub fn interrupted(&self) -> bool {
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => false,
            Err(e) => {
                if let Ok(mut slot) = self.err.lock() {
                    *slot = Some(e);
                }
                true
            }
        }
    }

    /// The kernel's result, with an interruption replaced by the handler's exception.
    pub fn result<T>(&self, r: Result<T, KernelError>) -> PyResult<T> {
        match r {
            Err(KernelError::Interrupted { .. }) => {
                let saved = self.err.lock().ok().and_then(|mut slot| slot.take());
                Err(saved.unwrap_or_else(|| PyKeyboardInterrupt::new_err("interrupted")))
            }
            other => Ok(other?),
        }
    }
}
