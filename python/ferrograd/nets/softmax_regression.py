"""Softmax regression: the one-layer 784→10 linear classifier, for comparison with the nets."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ferrograd._random import make_rng
from ferrograd.functions import cross_entropy_error, softmax
from ferrograd.gradient import numerical_gradient
from ferrograd.layers import as_targets
from ferrograd.nets._common import (
    ModelMixin,
    accuracy,
    as_batch,
    check_dtype,
    check_size,
    init_scale,
)

__all__ = ["SoftmaxRegression"]

FloatArray = NDArray[np.floating]


class SoftmaxRegression(ModelMixin):
    """Softmax regression y = softmax(x·W + b), the linear classifier the nets are compared with.

    ``params`` W (D, K) and b (K,), trained on cross-entropy. Weights start as
    ``weight_init_std`` × standard normal draws, b at 0.

    Parameters
    ----------
    input_size : int, default 784
        D.
    output_size : int, default 10
        K.
    weight_init_std : float or str, default 0.01
        A number >= 0, or "he"/"relu", "xavier"/"sigmoid" (scaled by fan-in D).
    seed : int, optional
        Seed of ``numpy.random.default_rng``; None: NumPy's global generator.
    dtype : dtype_like, default float32
        float32 or float64.
    """

    def __init__(
        self,
        input_size: int = 784,
        output_size: int = 10,
        weight_init_std: float | str = 0.01,
        seed: int | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        op = "SoftmaxRegression"
        d = check_size(op, "input_size", input_size)
        k = check_size(op, "output_size", output_size)
        self.dtype = check_dtype(op, dtype)
        std = init_scale(op, weight_init_std, d)
        self.weight_init_std = (
            weight_init_std if isinstance(weight_init_std, str) else float(weight_init_std)
        )
        rng = make_rng(seed)
        self.params: dict[str, FloatArray] = {
            "W": (std * rng.standard_normal((d, k))).astype(self.dtype),
            "b": np.zeros(k, dtype=self.dtype),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.input_size}-{self.output_size}, {self.dtype})"

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        k = self.output_size
        return [
            (
                "Affine (x·W + b)",
                f"(None, {k})",
                int(self.params["W"].size + self.params["b"].size),
            ),
            ("softmax (SoftmaxWithLoss)", f"(None, {k})", 0),
        ]

    @property
    def input_size(self) -> int:
        """D, the number of inputs per sample (rows of W)."""
        return int(self.params["W"].shape[0])

    @property
    def output_size(self) -> int:
        """K, the number of classes (columns of W)."""
        return int(self.params["W"].shape[1])

    def _batch(self, op: str, x: ArrayLike) -> FloatArray:
        return as_batch(f"SoftmaxRegression.{op}", x, self.input_size, self.dtype)

    def _labels(self, op: str, t: ArrayLike, n: int) -> NDArray[np.intp]:
        target = as_targets(f"SoftmaxRegression.{op}", t, n, self.output_size, self.dtype)
        return target if target.ndim == 1 else np.argmax(target, axis=1)

    def predict(self, x: ArrayLike) -> FloatArray:
        """Scores x·W + b (before softmax).

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.

        Returns
        -------
        numpy.ndarray, shape (N, K)
            The net's dtype; one sample (D,) gives (1, K).
        """
        x2 = self._batch("predict", x)
        return x2 @ self.params["W"] + self.params["b"]

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """Mean cross-entropy of softmax(x·W + b) against t.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K) (a row counts as its largest entry).

        Returns
        -------
        float
            Mean loss per sample.
        """
        x2 = self._batch("loss", x)
        y = softmax(x2 @ self.params["W"] + self.params["b"])
        return float(cross_entropy_error(y, self._labels("loss", t, x2.shape[0])))

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of samples whose arg-max score is the label.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K) (a row counts as its largest entry).

        Returns
        -------
        float
            In [0, 1].
        """
        x2 = self._batch("accuracy", x)
        return accuracy("SoftmaxRegression.accuracy", self.predict(x2), t)

    def gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """∂L/∂W = xᵀ·(y − t)/N and ∂L/∂b = Σ (y − t)/N.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K) (a row counts as its largest entry).

        Returns
        -------
        dict of str to numpy.ndarray
            W (D, K) and b (K,), the net's dtype.
        """
        x2 = self._batch("gradient", x)
        n = x2.shape[0]
        labels = self._labels("gradient", t, n)
        dy = softmax(x2 @ self.params["W"] + self.params["b"])
        dy[np.arange(n), labels] -= 1  # y − one_hot(t)
        dy /= n
        return {"W": x2.T @ dy, "b": dy.sum(axis=0)}

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """Central differences (h = 1e-4) of the loss for every parameter, in its dtype.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K) (a row counts as its largest entry).

        Returns
        -------
        dict of str to numpy.ndarray
            W (D, K) and b (K,).
        """
        x2 = self._batch("numerical_gradient", x)
        labels = self._labels("numerical_gradient", t, x2.shape[0])
        return {
            key: numerical_gradient(lambda _w: self.loss(x2, labels), p)
            for key, p in self.params.items()
        }
