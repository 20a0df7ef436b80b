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
    """Affine1 → Relu1 → Affine2 (``layers``) → SoftmaxWithLoss (``lastLayer``)."""

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
        return self.last_layer

    def predict(self, x: ArrayLike) -> NDArray[np.floating]:
        """Scores x → Affine1 → Relu1 → Affine2, before softmax (the book's chapter 5)."""
        out = self._batch("predict", x)
        for layer in self.layers.values():
            out = layer.forward(out)
        return out[0] if np.ndim(x) == 1 else out
