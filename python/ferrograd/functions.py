"""Activation and loss functions with the book's names and semantics.

The heavy lifting is done by the Rust kernels in :mod:`ferrograd._core`; this module
only settles dtypes and shapes the way the book's NumPy code does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ferrograd import _core

__all__ = [
    "FLOAT_DTYPES",
    "as_float_array",
    "as_labels",
    "binary_cross_entropy",
    "check_dtype",
    "cross_entropy_error",
    "identity_function",
    "mean_squared_error",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "sum_squared_error",
    "sum_squares_error",
]

FloatArray = NDArray[np.floating]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""The dtypes the kernels compute in."""


def check_dtype(op: str, dtype: DTypeLike) -> np.dtype:
    """``dtype`` as ``np.dtype(float32)`` or ``np.dtype(float64)``, the two the kernels compute in.

    Parameters
    ----------
    op : str
        The caller's name, used in the error message.
    dtype : dtype_like
        Anything ``np.dtype`` takes: ``np.float32``, ``"float64"``, ...

    Returns
    -------
    numpy.dtype
        float32 or float64.

    Raises
    ------
    TypeError
        ``dtype`` is not float32 or float64 (or not a dtype at all).
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype!r}") from err
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dt}")
    return dt


def as_float_array(
    x: ArrayLike, name: str = "x", dtype: np.dtype | type | None = None
) -> FloatArray:
    """``x`` as a float32/float64 array the kernels accept.

    float32 and float64 pass through unchanged (no copy); integers, bools and other
    real floats become float64, as NumPy arithmetic would make them.

    Parameters
    ----------
    x : array_like
        Real numbers of any shape.
    name : str, default "x"
        The argument's name in error messages.
    dtype : dtype_like, optional
        float32 or float64 to convert to; None keeps float32/float64 input as it is.

    Returns
    -------
    numpy.ndarray
        float32 or float64, of x's shape; ``x`` itself when it already fits.

    Raises
    ------
    TypeError
        ``x`` is complex, object or string data, a masked array, or ``dtype`` is not
        float32/float64.
    """
    if type(x) is np.ndarray and x.dtype in FLOAT_DTYPES and (dtype is None or x.dtype == dtype):
        return x  # the common case, before the general checks (~1 µs a call)
    refuse_masked(x, name)
    arr = np.asarray(x)
    if dtype is not None:
        dtype = check_dtype(name, dtype)
    if arr.dtype in FLOAT_DTYPES and (dtype is None or arr.dtype == dtype):
        return arr
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{name} has dtype {arr.dtype}; expected a real number array")
    return arr.astype(dtype or np.float64)


def refuse_masked(x: object, name: str) -> None:
    """TypeError for a masked array: the kernels would read the values under the mask."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; the masked entries would be used as they are. "
            "Fill them first (x.filled(value)) or drop those rows"
        )


def as_labels(t: ArrayLike, classes: int | None = None, name: str = "t") -> NDArray[np.int64]:
    """Integer class labels as int64, range-checked against ``classes`` when given.

    Parameters
    ----------
    t : array_like of int
        Class labels, any shape (usually (N,)).
    classes : int, optional
        Number of classes: every label must lie in [0, classes).
    name : str, default "t"
        The argument's name in error messages.

    Returns
    -------
    numpy.ndarray of int64
        The labels, t's shape (no copy when t is int64 already).

    Raises
    ------
    TypeError
        ``t`` is not integer data, or is a masked array.
    ValueError
        A label lies outside [0, classes).
    """
    refuse_masked(t, name)
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {arr.dtype}; expected integer labels")
    if classes is not None and arr.size:
        # on the labels as given: a uint64 beyond int64 would wrap to a negative one
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: label {bad} is out of range for {classes} classes")
    return arr.astype(np.int64, copy=False)


def _targets(y: FloatArray, t: ArrayLike) -> NDArray:
    """One-hot targets in y's dtype, or int64 labels, as the kernels take them."""
    arr = np.asarray(t)
    if arr.dtype.kind in "iu" and arr.shape != y.shape:
        return as_labels(arr)
    return as_float_array(arr, "t", y.dtype)


def identity_function(x: ArrayLike) -> NDArray:
    """The identity, the output activation of regression (the book's ch. 3).

    Parameters
    ----------
    x : array_like
        Any shape.

    Returns
    -------
    numpy.ndarray
        ``np.asarray(x)``.
    """
    return np.asarray(x)


def step_function(x: ArrayLike) -> NDArray[np.int64]:
    """1 where x > 0, else 0: the perceptron's activation (the book's ch. 3).

    Parameters
    ----------
    x : array_like
        Numbers of any shape.

    Returns
    -------
    numpy.ndarray of int64
        x's shape.
    """
    return (np.asarray(x) > 0).astype(np.int64)


def sigmoid(x: ArrayLike) -> FloatArray:
    """σ(x) = 1 / (1 + exp(−x)) elementwise; saturates to 0/1 without overflow warnings.

    Parameters
    ----------
    x : array_like
        Real numbers of any shape; float32 stays float32, other numbers become float64.

    Returns
    -------
    numpy.ndarray
        x's shape and float dtype, values in [0, 1].

    Raises
    ------
    TypeError
        ``x`` is not real numbers.
    """
    return _core.sigmoid(as_float_array(x))


def sigmoid_grad(x: ArrayLike) -> FloatArray:
    """σ'(x) = (1 − σ(x))·σ(x) elementwise.

    Parameters
    ----------
    x : array_like
        Real numbers of any shape (the sigmoid's input, not its output).

    Returns
    -------
    numpy.ndarray
        x's shape and float dtype (float32 or float64).
    """
    return _core.sigmoid_grad(as_float_array(x))


def relu(x: ArrayLike) -> FloatArray:
    """max(0, x) elementwise (the book's ReLU).

    Parameters
    ----------
    x : array_like
        Real numbers of any shape.

    Returns
    -------
    numpy.ndarray
        x's shape and float dtype (float32 or float64).
    """
    return _core.relu(as_float_array(x))


def relu_grad(x: ArrayLike) -> FloatArray:
    """1 where x ≥ 0, else 0 (the book's convention at 0).

    Parameters
    ----------
    x : array_like
        Real numbers of any shape.

    Returns
    -------
    numpy.ndarray
        x's shape and float dtype, entries 0 or 1.
    """
    return _core.relu_grad(as_float_array(x))


def softmax(x: ArrayLike) -> FloatArray:
    """Softmax over the last axis: exp(x − max) / Σ exp(x − max).

    Parameters
    ----------
    x : array_like, shape (N, K) or (K,)
        Scores of N samples (or one) over K classes.

    Returns
    -------
    numpy.ndarray
        x's shape and float dtype; each row is non-negative and sums to 1.

    Raises
    ------
    ValueError
        ``x`` has more than 2 dimensions.
    """
    return _core.softmax(as_float_array(x))


def sum_squares_error(y: ArrayLike, t: ArrayLike) -> float:
    """0.5·Σ(y − t)² over every entry (no batch mean), as the book's ch. 4.

    Parameters
    ----------
    y : array_like
        Network output, any shape.
    t : array_like
        Targets of y's shape (one-hot rows for classification).

    Returns
    -------
    float
        The loss.

    Raises
    ------
    ValueError
        ``y`` and ``t`` differ in shape.
    """
    y = as_float_array(y, "y")
    return _core.sum_squares_error(y, as_float_array(t, "t", y.dtype))


mean_squared_error = sum_squares_error
"""The course notes' name for :func:`sum_squares_error`."""

sum_squared_error = sum_squares_error
"""The book's name for :func:`sum_squares_error` (DLFS common/functions.py)."""


def cross_entropy_error(y: ArrayLike, t: ArrayLike) -> float:
    """Batch mean of −Σ t·log(y + 1e-7), the book's cross-entropy (ch. 4).

    Parameters
    ----------
    y : array_like, shape (N, K) or (K,)
        Class probabilities of N samples (or one).
    t : array_like
        One-hot rows of y's shape, or integer labels (N,) (one label for one sample).

    Returns
    -------
    float
        Mean loss per sample.

    Raises
    ------
    ValueError
        Shapes do not match, a label is outside [0, K), or y has no rows.
    """
    y = as_float_array(y, "y")
    return _core.cross_entropy_error(y, _targets(y, t))


def binary_cross_entropy(y: ArrayLike, t: ArrayLike) -> float:
    """Mean of −[t·log(y + δ) + (1 − t)·log(1 − y + δ)], δ = 1e-7, for y in [0, 1].

    Parameters
    ----------
    y : array_like
        Predicted probabilities, any shape.
    t : array_like
        Targets in {0, 1} (or [0, 1]) of y's shape.

    Returns
    -------
    float
        Mean loss over every entry.

    Raises
    ------
    ValueError
        ``y`` and ``t`` differ in shape, or ``y`` is empty.
    """
    y = as_float_array(y, "y")
    t = as_float_array(t, "t", y.dtype)
    if y.shape != t.shape:
        raise ValueError(f"binary_cross_entropy: y has shape {y.shape} but t has shape {t.shape}")
    if y.size == 0:
        raise ValueError("binary_cross_entropy: y is empty")
    delta = 1e-7
    return float(-np.mean(t * np.log(y + delta) + (1 - t) * np.log(1 - y + delta)))


def softmax_loss(X: ArrayLike, t: ArrayLike) -> float:
    """``cross_entropy_error(softmax(X), t)``: the loss of scores X (DLFS common/functions.py).

    Parameters
    ----------
    X : array_like, shape (N, K) or (K,)
        Scores before softmax.
    t : array_like
        One-hot rows of X's shape, or integer labels (N,).

    Returns
    -------
    float
        Mean cross-entropy per sample.
    """
    return cross_entropy_error(softmax(X), t)
