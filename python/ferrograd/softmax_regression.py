"""Softmax regression: the one-layer 784→10 linear classifier, for comparison with the nets."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd.functions import as_float_array, as_labels, cross_entropy_error, softmax

__all__ = ["SoftmaxRegression"]

FloatArray = NDArray[np.floating]


class SoftmaxRegression:
    """y = softmax(x·W + b) with ``params`` W (d, k) and b (k,), trained on cross-entropy.

    Weights start as ``weight_init_std`` × standard normal draws (seeded), b at 0.
    Targets ``t`` are integer labels (n,) or one-hot rows (n, k).
    """

    def __init__(
        self,
        input_size: int = 784,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        seed: int | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        for name, value in (("input_size", input_size), ("output_size", output_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"SoftmaxRegression: {name} must be a positive int, got {value!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"SoftmaxRegression: dtype must be float32 or float64, got {dtype}")
        rng = np.random.default_rng(seed)
        self.params: dict[str, FloatArray] = {
            "W": (weight_init_std * rng.standard_normal((input_size, output_size))).astype(
                self.dtype
            ),
            "b": np.zeros(output_size, dtype=self.dtype),
        }

    @property
    def input_size(self) -> int:
        return int(self.params["W"].shape[0])

    @property
    def output_size(self) -> int:
        return int(self.params["W"].shape[1])

    def _batch(self, op: str, x: ArrayLike) -> FloatArray:
        arr = as_float_array(x, f"SoftmaxRegression.{op}: x", self.dtype)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        elif arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)
        if arr.shape[1] != self.input_size or arr.shape[0] == 0:
            raise ValueError(
                f"SoftmaxRegression.{op}: x has shape {np.shape(x)}; "
                f"expected (n, {self.input_size})"
            )
        return arr

    def _labels(self, op: str, t: ArrayLike, n: int) -> NDArray[np.int64]:
        arr = np.asarray(t)
        if arr.ndim == 2:
            if arr.shape != (n, self.output_size):
                raise ValueError(
                    f"SoftmaxRegression.{op}: t has shape {arr.shape}; expected ({n},) labels "
                    f"or ({n}, {self.output_size}) one-hot"
                )
            return np.argmax(arr, axis=1)
        labels = as_labels(arr.reshape(-1), self.output_size, f"SoftmaxRegression.{op}: t")
        if labels.shape != (n,):
            raise ValueError(
                f"SoftmaxRegression.{op}: t has shape {arr.shape}; expected ({n},) labels"
            )
        return labels

    def predict(self, x: ArrayLike) -> FloatArray:
        """Scores x·W + b: (n, d) → (n, k) (before softmax, as the book's predict)."""
        x2 = self._batch("predict", x)
        return x2 @ self.params["W"] + self.params["b"]

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """Mean cross-entropy of softmax(x·W + b) against t."""
        x2 = self._batch("loss", x)
        y = softmax(x2 @ self.params["W"] + self.params["b"])
        return float(cross_entropy_error(y, self._labels("loss", t, x2.shape[0])))

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of rows whose arg-max score is the label."""
        x2 = self._batch("accuracy", x)
        labels = self._labels("accuracy", t, x2.shape[0])
        return float(np.mean(np.argmax(self.predict(x2), axis=1) == labels))

    def gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """∂L/∂W = xᵀ·(y − t)/n, ∂L/∂b = Σ (y − t)/n."""
        x2 = self._batch("gradient", x)
        n = x2.shape[0]
        labels = self._labels("gradient", t, n)
        dy = softmax(x2 @ self.params["W"] + self.params["b"])
        dy[np.arange(n), labels] -= 1  # y − one_hot(t)
        dy /= n
        return {"W": x2.T @ dy, "b": dy.sum(axis=0)}

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, FloatArray]:
        """Central differences (h = 1e-4) of the loss for every parameter, in float64."""
        from ferrograd.gradient import numerical_gradient

        x2 = self._batch("numerical_gradient", x)
        labels = self._labels("numerical_gradient", t, x2.shape[0])
        grads = {}
        for key, p in self.params.items():
            grads[key] = numerical_gradient(lambda _w: self.loss(x2, labels), p)
        return grads
