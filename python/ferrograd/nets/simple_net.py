"""The book's ``simpleNet`` (chapter 4): one 2×3 weight matrix, softmax, cross-entropy."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ferrograd import _core
from ferrograd._random import make_rng
from ferrograd.gradient import numerical_gradient
from ferrograd.layers import as_targets
from ferrograd.nets._common import ModelMixin, as_batch, check_dtype

__all__ = ["SimpleNet"]


class SimpleNet(ModelMixin):
    """The book's ch. 4 example: z = x·W, loss = cross_entropy_error(softmax(z), t).

    Parameters
    ----------
    W : array_like, shape (D, K), optional
        Fixed weights (copied); default a (2, 3) standard-normal draw.
    seed : int, optional
        Seed of the draw; None draws from NumPy's global generator (as the book).
    dtype : dtype_like, default float64
        float32 or float64.

    Raises
    ------
    ValueError
        ``W`` is not a non-empty 2-D array.
    """

    def __init__(
        self,
        W: ArrayLike | None = None,
        *,
        seed: int | None = None,
        dtype: DTypeLike = np.float64,
    ) -> None:
        dt = check_dtype("SimpleNet", dtype)
        if W is None:
            W = make_rng(seed).standard_normal((2, 3))
        arr = np.array(W, dtype=dt)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"SimpleNet: W must be a non-empty 2-D array, got shape {arr.shape}")
        self.W: NDArray[np.floating] = arr

    def __repr__(self) -> str:
        d, k = self.W.shape
        return f"{type(self).__name__}({d}-{k}, {self.W.dtype})"

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        k = self.W.shape[1]
        return [("MatMul (x·W)", f"(None, {k})", int(self.W.size)), ("softmax", f"(None, {k})", 0)]

    def predict(self, x: ArrayLike) -> NDArray[np.floating]:
        """Scores z = x·W.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs (D = 2 for the default W).

        Returns
        -------
        numpy.ndarray
            (N, K), or (K,) for one sample (D,).
        """
        x2 = as_batch("SimpleNet.predict", x, self.W.shape[0], self.W.dtype)
        z = _core.matmul(x2, self.W)
        return z[0] if np.ndim(x) == 1 else z

    def _forward(self, x: ArrayLike, t: ArrayLike, op: str) -> tuple:
        x2 = as_batch(op, x, self.W.shape[0], self.W.dtype)
        y = _core.softmax(_core.matmul(x2, self.W))
        return x2, y, as_targets(op, t, y.shape[0], y.shape[1], y.dtype)

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """Mean cross-entropy of softmax(x·W) against t.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K) ((K,) for one sample).

        Returns
        -------
        float
            Mean loss per sample.
        """
        _, y, target = self._forward(x, t, "SimpleNet.loss")
        return _core.cross_entropy_error(y, target)

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> NDArray[np.floating]:
        """∂loss/∂W by central differences over W (h = 1e-4), as the book computes it.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        numpy.ndarray
            W's shape and dtype.
        """
        return numerical_gradient(lambda _w: self.loss(x, t), self.W)

    def gradient(self, x: ArrayLike, t: ArrayLike) -> NDArray[np.floating]:
        """∂loss/∂W by backprop: xᵀ·(y − t)/N.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        numpy.ndarray
            W's shape and dtype.
        """
        x2, y, target = self._forward(x, t, "SimpleNet.gradient")
        dz = _core.softmax_cross_entropy_backward(y, target)
        return _core.matmul(x2, dz, trans_a=True)  # dW = xᵀ · dz
