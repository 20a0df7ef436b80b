"""DLFS ch05/two_layer_net.py: the two-layer net built from layers, with ReLU.

Chapter 4's net (``ferrograd.TwoLayerNet``) uses sigmoid and ``predict`` gives
probabilities; chapter 5's uses ReLU and ``predict`` gives the scores before softmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd.layers import SoftmaxWithLoss
from ferrograd.nets import TwoLayerNet as _TwoLayerNet

__all__ = ["TwoLayerNet", "np"]


class TwoLayerNet(_TwoLayerNet):
    """Chapter 5's net: Affine1 → Relu1 → Affine2 (``layers``) → SoftmaxWithLoss (``lastLayer``).

    ``ferrograd.TwoLayerNet`` with ``activation="relu"``, whose ``predict`` gives the
    scores before softmax, as the book's chapter 5 one does.

    Parameters
    ----------
    input_size : int
        D, e.g. 784.
    hidden_size : int
        H, e.g. 50.
    output_size : int
        K, e.g. 10.
    weight_init_std : float, default 0.01
        Scale of the initial weights.
    seed : int, optional
        Seed of the weights; None: NumPy's global generator (as the book).
    dtype : dtype_like, default float64
        float64 or float32.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float = 0.01,
        *,
        seed: int | None = None,
        dtype: Any = np.float64,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            output_size,
            weight_init_std,
            activation="relu",
            seed=seed,
            dtype=dtype,
        )

    @property
    def lastLayer(self) -> SoftmaxWithLoss:
        """The book's name of ``last_layer``, the SoftmaxWithLoss layer."""
        return self.last_layer

    def predict(self, x: ArrayLike) -> NDArray[np.floating]:
        """Scores x → Affine1 → Relu1 → Affine2, before softmax (the book's chapter 5).

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs.

        Returns
        -------
        numpy.ndarray
            (N, K), or (K,) for one sample (D,).
        """
        out = self._batch("predict", x)
        for layer in self.layers.values():
            out = layer.forward(out)
        return out[0] if np.ndim(x) == 1 else out
