"""Numerical differentiation and gradient descent (the book's chapter 4).

``numerical_diff`` and ``numerical_gradient`` use the central difference
(f(x + h) − f(x − h)) / 2h with h = 1e-4; ``numerical_gradient`` probes the caller's
array in place (so ``f`` may ignore its argument and read shared parameters, as the
book's networks do) and restores every element afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "H",
    "gradient_descent",
    "numerical_diff",
    "numerical_gradient",
    "numerical_gradient_2d",
]

H = 1e-4
"""Step h of the central difference, as in the book (smaller steps drown in rounding)."""


def numerical_diff(f: Callable[[float], Any], x: float) -> float:
    """Central difference df/dx ≈ (f(x + h) − f(x − h)) / 2h with h = 1e-4 (the book's ch. 4).

    Parameters
    ----------
    f : callable
        A function of one number, returning a number.
    x : float
        The point to differentiate at (a single number).

    Returns
    -------
    float
        The approximate derivative.

    Raises
    ------
    TypeError
        ``x`` is an array: :func:`numerical_gradient` differentiates element by element.
    """
    if np.ndim(x) != 0:
        raise TypeError(
            f"numerical_diff: x must be a single number, got an array of shape {np.shape(x)}; "
            "numerical_gradient(f, x) differentiates with respect to every element of an array"
        )
    h = H
    return float((f(x + h) - f(x - h)) / (2 * h))


def _float_array(x: ArrayLike, func: str) -> NDArray[np.floating]:
    """``x`` itself if it is a writeable float array, else a float64 copy."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        if not arr.flags.writeable:
            raise ValueError(f"{func}: x is read-only; the probes write into it")
        return arr
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{func}: x has dtype {arr.dtype}; expected a real number array")
    return arr.astype(np.float64)


def numerical_gradient(f: Callable[[NDArray], Any], x: ArrayLike) -> NDArray[np.floating]:
    """∂f/∂x for every element of x by central differences (h = 1e-4); same shape as x.

    ``x`` of any shape is probed in place and restored after each probe (also when ``f``
    raises). A float array is used as is, so ``f`` may read it through a shared reference,
    as the book's networks do; integer input is converted to a float64 copy first.

    Parameters
    ----------
    f : callable
        ``f(x)`` → a number; it may ignore its argument and read ``x`` through a reference.
    x : array_like
        The point, any shape; a float array must be writeable.

    Returns
    -------
    numpy.ndarray
        The gradient, x's shape and dtype (float64 for integer x).

    Raises
    ------
    ValueError
        ``x`` is a read-only float array.
    TypeError
        ``x`` is not real numbers.
    """
    arr = _float_array(x, "numerical_gradient")
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        tmp_val = arr[idx]
        try:
            arr[idx] = float(tmp_val) + H
            fxh1 = f(arr)
            arr[idx] = tmp_val - H
            fxh2 = f(arr)
        finally:
            arr[idx] = tmp_val  # restore x even when f raises
        grad[idx] = (fxh1 - fxh2) / (2 * H)
    return grad


def numerical_gradient_2d(f: Callable[[NDArray], Any], X: ArrayLike) -> NDArray[np.floating]:
    """∇f at each row of X (DLFS common/gradient.py); a 1-D X is one point.

    ``f`` takes one point (D,) at a time: the gradient field of ``f(x) = Σ x²`` over a
    grid of points is ``numerical_gradient_2d(f, points)`` (the book's gradient_2d.py).

    Parameters
    ----------
    f : callable
        ``f(x)`` of one point x (D,) → a number.
    X : array_like, shape (N, D) or (D,)
        The points.

    Returns
    -------
    numpy.ndarray
        X's shape: row i is ∇f at X[i].

    Raises
    ------
    ValueError
        ``X`` has more than 2 dimensions, or is a read-only float array.
    """
    arr = _float_array(X, "numerical_gradient_2d")
    if arr.ndim == 1:
        return numerical_gradient(f, arr)
    if arr.ndim != 2:
        raise ValueError(f"numerical_gradient_2d: X must be 1-D or 2-D, got shape {arr.shape}")
    grad = np.zeros_like(arr)
    for i in range(arr.shape[0]):
        grad[i] = numerical_gradient(f, arr[i])
    return grad


@overload
def gradient_descent(
    f: Callable[[NDArray], Any],
    init_x: ArrayLike,
    lr: float = ...,
    step_num: int = ...,
    *,
    return_history: Literal[False] = ...,
) -> NDArray[np.floating]: ...


@overload
def gradient_descent(
    f: Callable[[NDArray], Any],
    init_x: ArrayLike,
    lr: float = ...,
    step_num: int = ...,
    *,
    return_history: Literal[True],
) -> tuple[NDArray[np.floating], NDArray[np.floating]]: ...


def gradient_descent(
    f: Callable[[NDArray], Any],
    init_x: ArrayLike,
    lr: float = 0.01,
    step_num: int = 100,
    *,
    return_history: bool = False,
) -> NDArray[np.floating] | tuple[NDArray[np.floating], NDArray[np.floating]]:
    """``step_num`` steps of x ← x − lr·∇f(x) from ``init_x`` (the book's ch. 4).

    Parameters
    ----------
    f : callable
        ``f(x)`` → a number, differentiated by :func:`numerical_gradient`.
    init_x : array_like
        Starting point, any shape; not modified.
    lr : float, default 0.01
        Learning rate.
    step_num : int, default 100
        Number of steps (0 returns a copy of ``init_x``).
    return_history : bool, default False
        Also return every point visited.

    Returns
    -------
    x : numpy.ndarray
        The last point, init_x's shape (float64 for integer input).
    history : numpy.ndarray
        Only with ``return_history``: x before each step (the book's ``x_history``),
        shape (step_num, *x.shape).

    Raises
    ------
    ValueError
        ``step_num`` is not an int >= 0.
    """
    if isinstance(step_num, bool) or not isinstance(step_num, (int, np.integer)) or step_num < 0:
        raise ValueError(f"gradient_descent: step_num must be an int >= 0, got {step_num!r}")
    x = np.array(init_x, copy=True)
    if x.dtype.kind != "f":
        x = _float_array(x, "gradient_descent")
    history = []
    for _ in range(step_num):
        history.append(x.copy())
        grad = numerical_gradient(f, x)
        x -= lr * grad
    if return_history:
        return x, np.array(history, dtype=x.dtype).reshape((step_num, *x.shape))
    return x
