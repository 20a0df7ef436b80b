"""The book's helpers (DLFS common/util.py): loss-curve smoothing, shuffling, im2col.

The book's signatures and results (and Keras' ``to_categorical``): ``smooth_curve`` (a
Kaiser-window moving average, same length as its input), ``shuffle_dataset`` (one
permutation from NumPy's global generator for x and t), ``conv_output_size`` in NumPy,
and the ``im2col``/``col2im`` pair that turns convolution into one matrix product, on the
Rust kernels (conv.rs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike, NDArray

from ferrograd import _core
from ferrograd.functions import as_float_array

__all__ = [
    "col2im",
    "conv_output_size",
    "im2col",
    "shuffle_dataset",
    "smooth_curve",
    "to_categorical",
]

_WINDOW = 11  # the book's window: 11 points, Kaiser β = 2


def smooth_curve(x: ArrayLike) -> NDArray[np.float64]:
    """x smoothed by a normalised 11-point Kaiser window (β = 2), reflected at both ends.

    The book uses it to draw the per-iteration loss of the optimizer and weight-init
    comparisons.

    Parameters
    ----------
    x : array_like, shape (N,)
        A curve of at least 11 points.

    Returns
    -------
    numpy.ndarray of float64, shape (N,)
        The smoothed curve, x's length.

    Raises
    ------
    ValueError
        ``x`` is not 1-D or has fewer than 11 points.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size < _WINDOW:
        raise ValueError(
            f"smooth_curve: x must be 1-D with at least {_WINDOW} points, got shape {arr.shape}"
        )
    # Mirror the 10 points next to each end so the window fits at every position.
    s = np.r_[arr[_WINDOW - 1 : 0 : -1], arr, arr[-1:-_WINDOW:-1]]
    w = np.kaiser(_WINDOW, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5 : len(y) - 5]


def shuffle_dataset(x: NDArray, t: NDArray) -> tuple[NDArray, NDArray]:
    """x and t reordered by one ``np.random.permutation(len(x))`` (NumPy's global generator).

    Parameters
    ----------
    x : numpy.ndarray, shape (N, D) or (N, C, H, W)
        Inputs.
    t : numpy.ndarray, shape (N, ...)
        Targets, one per row of x.

    Returns
    -------
    x, t : numpy.ndarray
        The shuffled copies.

    Raises
    ------
    ValueError
        ``x`` is neither 2-D nor 4-D, or t has another number of rows.
    """
    x_arr, t_arr = np.asarray(x), np.asarray(t)
    if x_arr.ndim not in (2, 4):
        raise ValueError(f"shuffle_dataset: x must be 2-D or 4-D, got shape {x_arr.shape}")
    if t_arr.shape[:1] != x_arr.shape[:1]:
        raise ValueError(
            f"shuffle_dataset: x has {x_arr.shape[0]} rows but t has shape {t_arr.shape}"
        )
    permutation = np.random.permutation(x_arr.shape[0])
    return x_arr[permutation], t_arr[permutation]


def conv_output_size(input_size: int, filter_size: int, stride: int = 1, pad: int = 0) -> float:
    """(input_size + 2·pad − filter_size) / stride + 1, a float as in the book.

    Parameters
    ----------
    input_size : int
        Height (or width) of the input.
    filter_size : int
        Height (or width) of the filter.
    stride : int, default 1
        Step between filter positions, > 0.
    pad : int, default 0
        Zero padding on each side.

    Returns
    -------
    float
        The output size (not an integer when the filter does not tile the input).

    Raises
    ------
    ValueError
        ``stride`` is not positive.
    """
    if stride <= 0:
        raise ValueError(f"conv_output_size: stride must be positive, got {stride!r}")
    return (input_size + 2 * pad - filter_size) / stride + 1


def _out_hw(
    op: str, shape: Sequence[int], filter_h: int, filter_w: int, stride: int, pad: int
) -> tuple[int, int]:
    if len(shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(shape)}")
    for name, v, low in (("filter_h", filter_h, 1), ("filter_w", filter_w, 1)):
        if v < low:
            raise ValueError(f"{op}: {name} must be positive, got {v!r}")
    if stride < 1 or pad < 0:
        raise ValueError(f"{op}: stride must be >= 1 and pad >= 0, got {stride!r}, {pad!r}")
    _, _, h, w = shape
    out_h = (h + 2 * pad - filter_h) // stride + 1
    out_w = (w + 2 * pad - filter_w) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{op}: a {filter_h}x{filter_w} filter does not fit a {h}x{w} input with pad {pad}"
        )
    return out_h, out_w


def im2col(
    input_data: ArrayLike, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0
) -> NDArray[np.floating]:
    """Images to rows, one per filter position, so convolution is one matrix product (ch. 7).

    Row ``(n, i, j)`` holds the C×filter_h×filter_w patch under the filter at output
    position (i, j) of image n, zero-padded by ``pad``, in C order.

    Parameters
    ----------
    input_data : array_like, shape (N, C, H, W)
        Images.
    filter_h, filter_w : int
        Filter height and width, >= 1.
    stride : int, default 1
        Step between filter positions, >= 1.
    pad : int, default 0
        Zero padding on each side, >= 0.

    Returns
    -------
    numpy.ndarray, shape (N·OH·OW, C·filter_h·filter_w)
        OH = (H + 2·pad − filter_h) // stride + 1 (OW alike); float32 input gives float32
        (the book's is always float64), anything else float64.

    Raises
    ------
    ValueError
        ``input_data`` is not 4-D, a size is out of range, or the filter does not fit.
    """
    img = as_float_array(input_data, "im2col: input_data")
    _out_hw("im2col", img.shape, filter_h, filter_w, stride, pad)
    return _core.im2col(img, int(filter_h), int(filter_w), int(stride), int(pad))


def col2im(
    col: ArrayLike,
    input_shape: Sequence[int],
    filter_h: int,
    filter_w: int,
    stride: int = 1,
    pad: int = 0,
) -> NDArray[np.floating]:
    """The adjoint of :func:`im2col`: patches summed back into (N, C, H, W) images.

    Where filter positions overlap, their entries add up (so ``col2im(im2col(x))`` is x
    times how many patches cover each pixel); padding is cut off.

    Parameters
    ----------
    col : array_like, shape (N·OH·OW, C·filter_h·filter_w)
        Rows as :func:`im2col` makes them.
    input_shape : sequence of int
        (N, C, H, W) of the images.
    filter_h, filter_w : int
        Filter height and width, >= 1.
    stride : int, default 1
        Step between filter positions, >= 1.
    pad : int, default 0
        Zero padding on each side, >= 0.

    Returns
    -------
    numpy.ndarray, shape input_shape
        col's dtype (float32 or float64; other numbers become float64).

    Raises
    ------
    ValueError
        ``input_shape`` is not 4 sizes, a size is out of range, the filter does not fit,
        or ``col`` has not the shape those give.
    """
    shape = tuple(int(v) for v in input_shape)
    n, c, _, _ = shape if len(shape) == 4 else (0, 0, 0, 0)
    out_h, out_w = _out_hw("col2im", shape, filter_h, filter_w, stride, pad)
    arr = as_float_array(col, "col2im: col")
    want = (n * out_h * out_w, c * filter_h * filter_w)
    if arr.shape != want:
        raise ValueError(f"col2im: col has shape {arr.shape}; expected {want} for {input_shape}")
    if min(shape) < 0:
        raise ValueError(f"col2im: input_shape {input_shape} has a negative size")
    return _core.col2im(arr, shape, int(filter_h), int(filter_w), int(stride), int(pad))


def to_categorical(
    labels: ArrayLike, num_classes: int | None = None, dtype: npt.DTypeLike = np.float32
) -> NDArray[Any]:
    """One-hot rows of integer labels, as Keras' ``to_categorical``: a 1 in column labels[i].

    Parameters
    ----------
    labels : array_like of int, shape (N,) or (N, 1)
        Class labels (floats with integer values, such as 3.0, are accepted).
    num_classes : int, optional
        Number of columns; default max(labels) + 1.
    dtype : dtype_like, default float32
        The result's dtype.

    Returns
    -------
    numpy.ndarray, shape (N, num_classes)
        Zeros with one 1 per row.

    Raises
    ------
    TypeError
        ``labels`` are not integers.
    ValueError
        ``labels`` is not (N,), ``num_classes`` is not a positive int, or a label lies
        outside [0, num_classes).
    """
    arr = np.asarray(labels)
    if (
        arr.dtype.kind == "f"
        and arr.size
        and np.all(np.isfinite(arr))
        and np.all(arr == np.round(arr))
    ):
        arr = arr.astype(np.int64)  # 3.0 is label 3, as Keras accepts it
    if arr.dtype.kind not in "iu":
        raise TypeError(f"to_categorical: labels must be integers, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"to_categorical: labels must have shape (n,), got {arr.shape}")
    if num_classes is None:
        num_classes = int(arr.max()) + 1 if arr.size else 0
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes <= 0
    ):
        raise ValueError(f"to_categorical: num_classes must be a positive int, got {num_classes!r}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"to_categorical: labels must be in [0, {num_classes}), got values from "
            f"{arr.min()} to {arr.max()}"
        )
    out = np.zeros((arr.shape[0], int(num_classes)), dtype=dtype)
    out[np.arange(arr.shape[0]), arr] = 1
    return out
