"""DLFS ch04/gradient_2d.py: gradients at a batch of points, function_2 and tangent_line."""

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ferrograd import gradient as _gradient

numerical_gradient = _gradient.numerical_gradient_2d
_numerical_gradient_no_batch = _gradient.numerical_gradient  # the book's one-point loop

__all__ = ["function_2", "np", "numerical_gradient", "tangent_line"]


def function_2(x: NDArray) -> Any:
    """x0² + x1² (Σ x² per row for a batch of points).

    Parameters
    ----------
    x : numpy.ndarray, shape (D,) or (N, D)
        One point or a batch.

    Returns
    -------
    float or numpy.ndarray, shape (N,)
        f at the point, or at each row.
    """
    return np.sum(x**2) if x.ndim == 1 else np.sum(x**2, axis=1)


def tangent_line(f: Callable[[NDArray], Any], x: NDArray) -> Callable[[Any], Any]:
    """The tangent of f at x as a function of t (prints the slope, as the book does).

    Parameters
    ----------
    f : callable
        A function of one point.
    x : numpy.ndarray
        Where the tangent touches.

    Returns
    -------
    callable
        ``t`` ↦ d·t + (f(x) − d·x), d the numerical gradient at x.
    """
    d = numerical_gradient(f, x)
    print(d)
    y = f(x) - d * x
    return lambda t: d * t + y
