"""Argument checks shared by the networks: inputs, sizes, dtypes and accuracy."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd.functions import as_float_array, check_dtype
from ferrograd.layers import as_targets

__all__ = ["accuracy", "as_batch", "check_dtype", "check_size"]

FloatArray = NDArray[np.floating]


def check_size(op: str, name: str, value: object) -> int:
    """A layer width: a positive int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def as_batch(op: str, x: ArrayLike, input_size: int, dtype: np.dtype) -> FloatArray:
    """x as a (n, input_size) array of ``dtype``: (d,) is one sample, N-D is flattened."""
    arr = as_float_array(x, f"{op}: x", dtype)
    shape = arr.shape
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim > 2 and arr.size:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != input_size:
        raise ValueError(
            f"{op}: x has shape {shape}; expected (n, {input_size}) with n > 0, "
            f"or ({input_size},) for one sample"
        )
    return arr


def accuracy(op: str, scores: FloatArray, t: ArrayLike) -> float:
    """Fraction of rows whose arg-max score matches t (labels or one-hot rows)."""
    n, k = scores.shape
    target = as_targets(op, t, n, k, scores.dtype)
    labels = target if target.ndim == 1 else np.argmax(target, axis=1)
    return float(np.mean(np.argmax(scores, axis=1) == labels))
