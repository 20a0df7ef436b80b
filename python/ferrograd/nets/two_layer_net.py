"""The book's two-layer network (chapters 4 and 5) on the fused Rust kernels.

x → Affine(W1, b1) → sigmoid or ReLU → Affine(W2, b2) → softmax → cross-entropy.
``predict``/``loss``/``gradient`` run as single native calls; ``layers`` and
``gradient_layers`` give the same network as the book's layer objects (chapter 5).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ferrograd import _core
from ferrograd._random import make_rng
from ferrograd.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss, as_targets
from ferrograd.nets._common import (
    ModelMixin,
    accuracy,
    as_batch,
    check_dtype,
    check_size,
    init_scale,
)

__all__ = ["TwoLayerNet"]

FloatArray = NDArray[np.floating]
Grads = dict[str, FloatArray]

_KEYS = ("W1", "b1", "W2", "b2")


class TwoLayerNet(ModelMixin):
    """The book's two-layer net (ch. 4–5): ``params`` W1 (D, H), b1 (H,), W2 (H, K), b2 (K,).

    Weights start as ``weight_init_std`` × standard normal draws, biases at 0, all of
    ``dtype``. ``predict``, ``loss`` and ``gradient`` each run as one native call;
    ``layers`` and ``gradient_layers`` give the same network as the book's layer objects.

    Parameters
    ----------
    input_size : int
        D, e.g. 784 for MNIST.
    hidden_size : int
        H, the book's 50 (ch. 4) or 100.
    output_size : int
        K, 10 classes for MNIST.
    weight_init_std : float or str, default 0.01
        Scale of the initial weights: a number >= 0, or "he"/"relu" (√(2/fan_in)) or
        "xavier"/"sigmoid" (√(1/fan_in)) per layer.
    activation : {"sigmoid", "relu"}, default "sigmoid"
        Hidden activation: sigmoid as chapter 4, ReLU as chapter 5.
    seed : int, optional
        Seed of ``numpy.random.default_rng``; None draws from NumPy's global generator
        (as the book).
    dtype : dtype_like, default float64
        float64 as the book, or float32 (faster).

    Raises
    ------
    ValueError
        A size is not a positive int, ``activation`` is unknown, or ``weight_init_std``
        is negative or an unknown name.
    TypeError
        ``dtype`` is not float32/float64, or ``weight_init_std`` is neither number nor name.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float | str = 0.01,
        *,
        activation: str = "sigmoid",
        seed: int | None = None,
        dtype: DTypeLike = np.float64,
    ) -> None:
        op = "TwoLayerNet"
        d = check_size(op, "input_size", input_size)
        h = check_size(op, "hidden_size", hidden_size)
        k = check_size(op, "output_size", output_size)
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"{op}: activation must be 'sigmoid' or 'relu', got {activation!r}")
        self.dtype = check_dtype(op, dtype)
        self.activation = cast(Literal["sigmoid", "relu"], activation)
        std1, std2 = (init_scale(op, weight_init_std, fan_in) for fan_in in (d, h))
        self.weight_init_std = (
            weight_init_std if isinstance(weight_init_std, str) else float(weight_init_std)
        )
        rng = make_rng(seed)
        self.params: dict[str, FloatArray] = {
            "W1": (std1 * rng.standard_normal((d, h))).astype(self.dtype),
            "b1": np.zeros(h, dtype=self.dtype),
            "W2": (std2 * rng.standard_normal((h, k))).astype(self.dtype),
            "b2": np.zeros(k, dtype=self.dtype),
        }
        self.last_layer = SoftmaxWithLoss()
        self._layers: OrderedDict[str, Affine | Sigmoid | Relu] | None = None

    def __repr__(self) -> str:
        w1, w2 = self.params["W1"].shape, self.params["W2"].shape
        return f"{type(self).__name__}({w1[0]}-{w1[1]}-{w2[1]}, {self.activation}, {self.dtype})"

    @property
    def input_size(self) -> int:
        """D, the number of inputs per sample (rows of W1)."""
        return int(self.params["W1"].shape[0])

    @property
    def output_size(self) -> int:
        """K, the number of classes (columns of W2)."""
        return int(self.params["W2"].shape[1])

    @property
    def layers(self) -> OrderedDict[str, Affine | Sigmoid | Relu]:
        """Affine1, Sigmoid1 or Relu1, Affine2: the book's layer objects (ch. 5).

        They share the ``params`` arrays; rebuilt when a ``params`` entry has been replaced
        by another array.
        """
        p = self.params
        cached = self._layers
        if (
            cached is None
            or cached["Affine1"].W is not p["W1"]  # type: ignore[union-attr]
            or cached["Affine1"].b is not p["b1"]  # type: ignore[union-attr]
            or cached["Affine2"].W is not p["W2"]  # type: ignore[union-attr]
            or cached["Affine2"].b is not p["b2"]  # type: ignore[union-attr]
        ):
            act = ("Sigmoid1", Sigmoid()) if self.activation == "sigmoid" else ("Relu1", Relu())
            cached = OrderedDict(
                [("Affine1", Affine(p["W1"], p["b1"])), act, ("Affine2", Affine(p["W2"], p["b2"]))]
            )
            self._layers = cached
        return cached

    def _params(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        p = self.params
        return p["W1"], p["b1"], p["W2"], p["b2"]

    def _batch(self, op: str, x: ArrayLike) -> FloatArray:
        # float32 and float64 batches go in as they are: the native first layer converts
        # the values it reads, so a float32 MNIST batch costs a float64 net no copy.
        return as_batch(f"TwoLayerNet.{op}", x, self.input_size, None)

    def _targets(self, op: str, t: ArrayLike, n: int, dtype: np.dtype | None = None) -> NDArray:
        return as_targets(f"TwoLayerNet.{op}", t, n, self.output_size, dtype or self.dtype)

    def predict(self, x: ArrayLike) -> FloatArray:
        """Class probabilities softmax(act(x·W1 + b1)·W2 + b2).

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs, e.g. (N, 784) MNIST rows; converted to the net's dtype.

        Returns
        -------
        numpy.ndarray
            (N, K), or (K,) for one sample (D,); the net's dtype, rows summing to 1.
        """
        x2 = self._batch("predict", x)
        y = _core.two_layer_predict(*self._params(), x2, activation=self.activation)
        return y[0] if np.ndim(x) == 1 else y

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """Mean cross-entropy −Σ t·log(y + 1e-7) / N of the predictions.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs, e.g. (N, 784) MNIST rows; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            Mean loss per sample.
        """
        x2 = self._batch("loss", x)
        t2 = self._targets("loss", t, x2.shape[0])
        return _core.two_layer_loss(*self._params(), x2, t2, activation=self.activation)

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of samples whose most probable class is the target's.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs, e.g. (N, 784) MNIST rows; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            In [0, 1].
        """
        x2 = self._batch("accuracy", x)
        y = _core.two_layer_predict(*self._params(), x2, activation=self.activation)
        return accuracy("TwoLayerNet.accuracy", y, t)

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """∂loss/∂(W1, b1, W2, b2) by central differences (h = 1e-4), in float64.

        float32 parameters and inputs are promoted to float64 for the probes (float32 rounding
        at h = 1e-4 is as large as the gradient) and the result cast back.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs, e.g. (N, 784) MNIST rows; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            W1, b1, W2, b2: each of its parameter's shape and the net's dtype.
        """
        x2 = as_batch("TwoLayerNet.numerical_gradient", x, self.input_size, np.dtype(np.float64))
        t2 = self._targets("numerical_gradient", t, x2.shape[0], np.dtype(np.float64))
        w1, b1, w2, b2 = (np.asarray(p, dtype=np.float64) for p in self._params())
        x64 = np.asarray(x2, dtype=np.float64)  # already float64: no copy
        g = _core.numerical_gradient(
            w1, b1, w2, b2, x64, t2, activation=self.activation, method="fast"
        )
        return {key: gi.astype(self.dtype, copy=False) for key, gi in zip(_KEYS, g, strict=True)}

    def gradient(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """∂loss/∂(W1, b1, W2, b2) by backprop, one native call.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs, e.g. (N, 784) MNIST rows; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            W1, b1, W2, b2: each of its parameter's shape and the net's dtype.
        """
        x2 = self._batch("gradient", x)
        t2 = self._targets("gradient", t, x2.shape[0])
        g = _core.two_layer_gradient(*self._params(), x2, t2, activation=self.activation)
        return dict(zip(_KEYS, g, strict=True))

    def gradient_layers(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """The same gradient as :meth:`gradient`, through the layer objects (chapter 5).

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs, e.g. (N, 784) MNIST rows; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            W1, b1, W2, b2: the layers' ``dW`` and ``db``.
        """
        x2 = self._batch("gradient_layers", x)
        t2 = self._targets("gradient_layers", t, x2.shape[0])
        layers = self.layers
        out = x2
        for layer in layers.values():
            out = layer.forward(out)
        self.last_layer.forward(out, t2)
        dout = self.last_layer.backward(1)
        for layer in reversed(layers.values()):
            dout = layer.backward(dout)
        a1, a2 = layers["Affine1"], layers["Affine2"]
        assert isinstance(a1, Affine) and isinstance(a2, Affine)
        assert a1.dW is not None and a1.db is not None and a2.dW is not None and a2.db is not None
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}
