"""The book's perceptron logic gates (chapter 2): AND, NAND, OR, and XOR built from them.

Each gate is ``step(w·x + b)`` on two inputs with the book's weights and bias; XOR is
not linearly separable, so it is the two-layer composition ``AND(NAND(x1, x2), OR(x1, x2))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AND", "NAND", "OR", "XOR", "Perceptron"]


def _input(x: ArrayLike, gate: str, name: str) -> NDArray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{gate}: {name} has dtype {arr.dtype}; expected a number such as 0 or 1")
    return arr


@dataclass(frozen=True)
class Perceptron:
    """A two-input perceptron: 1 if w[0]·x1 + w[1]·x2 + b > 0, else 0 (the book's ch. 2).

    Attributes
    ----------
    w : tuple of float
        The weights (w1, w2).
    b : float
        The bias.
    name : str, default "Perceptron"
        The gate's name, used in error messages.
    """

    w: tuple[float, float]
    b: float
    name: str = "Perceptron"

    def __call__(self, x1: ArrayLike, x2: ArrayLike) -> int | NDArray[np.int64]:
        """The gate's output for inputs x1, x2.

        Parameters
        ----------
        x1, x2 : array_like
            Numbers (usually 0 or 1), or arrays that broadcast together.

        Returns
        -------
        int or numpy.ndarray of int64
            0 or 1: an ``int`` for two scalars, else an array of the broadcast shape.

        Raises
        ------
        TypeError
            An input is not a number (e.g. a string).
        """
        a1, a2 = _input(x1, self.name, "x1"), _input(x2, self.name, "x2")
        # Same order of operations as the book: np.sum(w * x) + b.
        tmp = (self.w[0] * a1 + self.w[1] * a2) + self.b
        out = (tmp > 0).astype(np.int64)
        return int(out) if out.ndim == 0 else out


AND = Perceptron(w=(0.5, 0.5), b=-0.7, name="AND")
"""AND gate: w = (0.5, 0.5), b = −0.7."""

NAND = Perceptron(w=(-0.5, -0.5), b=0.7, name="NAND")
"""NAND gate: w = (−0.5, −0.5), b = 0.7."""

OR = Perceptron(w=(0.5, 0.5), b=-0.2, name="OR")
"""OR gate: w = (0.5, 0.5), b = −0.2."""


def XOR(x1: ArrayLike, x2: ArrayLike) -> int | NDArray[np.int64]:
    """XOR as a two-layer perceptron: s1 = NAND(x1, x2), s2 = OR(x1, x2), y = AND(s1, s2).

    Parameters
    ----------
    x1, x2 : array_like
        Numbers (usually 0 or 1), or arrays that broadcast together.

    Returns
    -------
    int or numpy.ndarray of int64
        0 or 1: an ``int`` for two scalars, else an array of the broadcast shape.
    """
    s1 = NAND(x1, x2)
    s2 = OR(x1, x2)
    return AND(s1, s2)
