"""The book's fully connected multi-layer network with the chapter 6 extras.

(Affine → [BatchNorm] → ReLU/Sigmoid → [Dropout]) × hidden layers → Affine → softmax,
with L2 weight decay, as DLFS common/multi_layer_net_extend.py. The Affine, activation
and loss layers run on the Rust kernels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ferrograd import _core
from ferrograd._random import make_rng
from ferrograd.layers import (
    Affine,
    BatchNormalization,
    Dropout,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    as_targets,
)
from ferrograd.nets._common import (
    ModelMixin,
    accuracy,
    as_batch,
    check_dtype,
    check_size,
    init_scale,
    same_dropout_masks,
)

__all__ = ["MultiLayerNet"]

FloatArray = NDArray[np.floating]
Grads = dict[str, FloatArray]

_ACTIVATIONS: dict[str, type[Relu] | type[Sigmoid]] = {"relu": Relu, "sigmoid": Sigmoid}


def _init_scale(weight_init_std: str | float, fan_in: int) -> float:
    """He √(2/fan_in) for 'relu'/'he', Xavier √(1/fan_in) for 'sigmoid'/'xavier', or a number."""
    return init_scale("MultiLayerNet", weight_init_std, fan_in)


class MultiLayerNet(ModelMixin):
    """The book's fully connected net with the chapter 6 extras.

    As DLFS common/multi_layer_net_extend.py: (Affine → [BatchNorm] → activation →
    [Dropout]) per hidden layer, then Affine → softmax. ``params``: W1, b1, …, W{L}, b{L}
    (L = len(hidden_size_list) + 1) and, with ``use_batchnorm``, gamma{i}/beta{i} for each
    hidden layer i. ``loss`` adds the weight decay ½·λ·Σ‖W‖².

    Parameters
    ----------
    input_size : int
        D, e.g. 784.
    hidden_size_list : sequence of int
        Width of each hidden layer, e.g. ``[100, 100, 100]``.
    output_size : int
        K, e.g. 10.
    activation : {"relu", "sigmoid"}, default "relu"
        Hidden activation.
    weight_init_std : float or str, default "relu"
        Scale of the initial weights: "relu"/"he" (√(2/fan_in)), "sigmoid"/"xavier"
        (√(1/fan_in)) or a number >= 0.
    weight_decay_lambda : float, default 0
        λ of the L2 weight decay, >= 0.
    use_batchnorm : bool, default False
        Batch normalization after each hidden Affine.
    use_dropout : bool, default False
        Dropout after each hidden activation.
    dropout_ratio : float, default 0.5
        Probability of dropping a unit.
    dropout_ration : float, optional
        The book's spelling of ``dropout_ratio``.
    seed : int, optional
        Seed of ``numpy.random.default_rng`` for the weights and the dropout masks; None
        draws from NumPy's global generator (as the book).
    dtype : dtype_like, default float64
        float64 as the book, or float32.

    Raises
    ------
    ValueError
        A size is not a positive int, ``activation`` is unknown, λ is negative, or
        ``dropout_ratio`` and ``dropout_ration`` disagree.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0,
        *,
        use_batchnorm: bool = False,
        use_dropout: bool = False,
        dropout_ratio: float = 0.5,
        dropout_ration: float | None = None,
        seed: int | None = None,
        dtype: DTypeLike = np.float64,
    ) -> None:
        op = "MultiLayerNet"
        self.input_size = check_size(op, "input_size", input_size)
        self.hidden_size_list = [
            check_size(op, f"hidden_size_list[{i}]", h) for i, h in enumerate(hidden_size_list)
        ]
        self.output_size = check_size(op, "output_size", output_size)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{op}: activation must be 'relu' or 'sigmoid', got {activation!r}")
        if not np.isfinite(weight_decay_lambda) or weight_decay_lambda < 0:
            raise ValueError(f"{op}: weight_decay_lambda must be >= 0, got {weight_decay_lambda!r}")
        self.activation = activation
        self.weight_init_std = weight_init_std
        self.hidden_layer_num = len(self.hidden_size_list)
        self.weight_decay_lambda = float(weight_decay_lambda)
        self.use_batchnorm = bool(use_batchnorm)
        self.use_dropout = bool(use_dropout)
        if dropout_ration is not None:  # the book's spelling of dropout_ratio
            if dropout_ratio != 0.5 and dropout_ratio != dropout_ration:
                raise ValueError(f"{op}: pass dropout_ratio or dropout_ration, not both")
            dropout_ratio = dropout_ration
        self.dropout_ratio = dropout_ratio
        self.dtype = check_dtype(op, dtype)
        self.rng = make_rng(seed)

        sizes = [self.input_size, *self.hidden_size_list, self.output_size]
        self.params: dict[str, FloatArray] = {}
        for idx in range(1, len(sizes)):
            scale = _init_scale(weight_init_std, sizes[idx - 1])
            w = scale * self.rng.standard_normal((sizes[idx - 1], sizes[idx]))
            self.params[f"W{idx}"] = w.astype(self.dtype)
            self.params[f"b{idx}"] = np.zeros(sizes[idx], dtype=self.dtype)
            if self.use_batchnorm and idx <= self.hidden_layer_num:
                self.params[f"gamma{idx}"] = np.ones(sizes[idx], dtype=self.dtype)
                self.params[f"beta{idx}"] = np.zeros(sizes[idx], dtype=self.dtype)
        self._build_layers()

    def __repr__(self) -> str:
        sizes = "-".join(
            str(n) for n in [self.input_size, *self.hidden_size_list, self.output_size]
        )
        extras = [
            f"weight decay {self.weight_decay_lambda:g}" if self.weight_decay_lambda else "",
            "batch norm" if self.use_batchnorm else "",
            f"dropout {self.dropout_ratio:g}" if self.use_dropout else "",
        ]
        more = "".join(f", {e}" for e in extras if e)
        return f"{type(self).__name__}({sizes}, {self.activation}{more}, {self.dtype})"

    def _build_layers(self) -> None:
        """The layer chain over the current ``params`` arrays (shared, not copied)."""
        p = self.params
        self.layers: OrderedDict[str, Any] = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(p[f"W{idx}"], p[f"b{idx}"])
            if self.use_batchnorm:
                bn = BatchNormalization(p[f"gamma{idx}"], p[f"beta{idx}"])
                self.layers[f"BatchNorm{idx}"] = bn
            self.layers[f"Activation_function{idx}"] = _ACTIVATIONS[self.activation]()
            if self.use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(self.dropout_ratio, rng=self.rng)
        last = self.hidden_layer_num + 1
        self.layers[f"Affine{last}"] = Affine(p[f"W{last}"], p[f"b{last}"])
        self.last_layer = SoftmaxWithLoss()

    def _forward(self, x: FloatArray, train_flg: bool) -> FloatArray:
        for layer in self.layers.values():
            if isinstance(layer, (Dropout, BatchNormalization)):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def _batch(self, op: str, x: ArrayLike) -> FloatArray:
        # float32 and float64 go in as they are: the first Affine layer converts the
        # values it reads (a float32 MNIST batch costs a float64 net no copy).
        return as_batch(f"MultiLayerNet.{op}", x, self.input_size, None)

    def _targets(self, op: str, t: ArrayLike, n: int) -> NDArray:
        return as_targets(f"MultiLayerNet.{op}", t, n, self.output_size, self.dtype)

    def _loss(self, x2: FloatArray, t2: NDArray, train_flg: bool) -> float:
        y = self._forward(x2, train_flg)
        weight_decay = 0.0
        for idx in range(1, self.hidden_layer_num + 2):
            w = self.params[f"W{idx}"]
            if self.weight_decay_lambda:
                squares = np.sum(w * w)
            else:
                # λ = 0 (the default) makes the term 0, or NaN where Σw² is not finite,
                # as in the book. n·max|w|² below the largest float settles it without
                # the sum (no order of the additions can overflow); else NumPy's own sum
                # of products tells (not np.vdot: BLAS would wake OpenBLAS's threads,
                # which then spin on the cores the kernels' threads use).
                top = _core.max_abs(w)
                bounded = top * top * w.size <= float(np.finfo(w.dtype).max) / 2
                squares = 0.0 if bounded else np.einsum("ij,ij->", w, w)
            weight_decay += 0.5 * self.weight_decay_lambda * float(squares)
        return self.last_layer.forward(y, t2) + weight_decay

    def predict(self, x: ArrayLike, train_flg: bool = False) -> FloatArray:
        """Scores (logits, before softmax).

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        train_flg : bool, default False
            Training mode: batch statistics and dropout masks.

        Returns
        -------
        numpy.ndarray
            (N, K), or (K,) for one sample (D,).
        """
        y = self._forward(self._batch("predict", x), train_flg)
        return y[0] if np.ndim(x) == 1 else y

    def loss(self, x: ArrayLike, t: ArrayLike, train_flg: bool = False) -> float:
        """Mean cross-entropy of softmax(scores) plus the weight decay ½·λ·Σ‖W‖².

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).
        train_flg : bool, default False
            Training mode: batch statistics and dropout masks (the book's default is False).

        Returns
        -------
        float
            Mean loss per sample plus the weight decay.
        """
        x2 = self._batch("loss", x)
        return self._loss(x2, self._targets("loss", t, x2.shape[0]), train_flg)

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of samples whose top score is the target class (inference mode).

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            In [0, 1].
        """
        y = self._forward(self._batch("accuracy", x), train_flg=False)
        return accuracy("MultiLayerNet.accuracy", y, t)

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """∂loss/∂param for every entry of ``params`` by central differences (h = 1e-4).

        The training-mode loss (batch norm on the batch's statistics, weight decay
        included), as the book's loop computes it, in one native call that re-evaluates
        only what each probe moves (equal to the loop up to rounding, ~1e-12). Every
        probe sees the dropout masks the next :meth:`gradient` call draws; batch norm's
        running statistics are left as they are. A float32 net is probed in float64 and
        the result cast back.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to float64.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            One array per ``params`` key, of that parameter's shape and the net's dtype.
        """
        x2 = self._batch("numerical_gradient", x).astype(np.float64, copy=False)
        t2 = as_targets(
            "MultiLayerNet.numerical_gradient", t, x2.shape[0], self.output_size, np.float64
        )
        rewind = same_dropout_masks(list(self.layers.values()), list(self.layers.values()))
        rewind()
        layers = []
        for idx in range(1, self.hidden_layer_num + 2):
            w, b = (np.asarray(self.params[f"{k}{idx}"], dtype=np.float64) for k in "Wb")
            gamma = beta = mask = None
            if idx <= self.hidden_layer_num:
                if self.use_batchnorm:
                    gamma = np.asarray(self.params[f"gamma{idx}"], dtype=np.float64)
                    beta = np.asarray(self.params[f"beta{idx}"], dtype=np.float64)
                if self.use_dropout:
                    # the mask the layer's next training forward pass draws (rewound)
                    drop = self.layers[f"Dropout{idx}"]
                    mask = drop.forward(np.ones((x2.shape[0], w.shape[1])), train_flg=True)
            layers.append((w, b, gamma, beta, mask))
        rewind()
        out = _core.chain_numerical_gradient(
            layers,
            x2,
            t2,
            activation=self.activation,
            weight_decay=float(self.weight_decay_lambda),
        )
        grads: Grads = {}
        for idx, (dw, db, dgamma, dbeta) in enumerate(out, start=1):
            grads[f"W{idx}"], grads[f"b{idx}"] = dw, db
            if dgamma is not None and dbeta is not None:
                grads[f"gamma{idx}"], grads[f"beta{idx}"] = dgamma, dbeta
        return {key: grads[key].astype(self.dtype, copy=False) for key in self.params}

    def gradient(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """∂loss/∂param by backprop through the layers (training mode), with λ·W added.

        Parameters
        ----------
        x : array_like, shape (N, D) or (D,)
            Inputs; converted to the net's dtype.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            One array per ``params`` key (W, b, and gamma/beta with batch norm).
        """
        x2 = self._batch("gradient", x)
        t2 = self._targets("gradient", t, x2.shape[0])
        # The loss itself is not needed: no weight-decay term (its gradient is λ·W below).
        self.last_layer.forward(self._forward(x2, train_flg=True), t2)
        dout = self.last_layer.backward(1)
        layers = list(self.layers.values())
        for layer in reversed(layers[1:]):
            dout = layer.backward(dout)
        # The first layer's dx (dout·W1ᵀ, 784 wide) has no taker: only dW1 and db1.
        layers[0]._backward_weights(dout)
        grads: Grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            # The book's dW + λ·W (at λ = 0: dW, or NaN where W is not finite), in one
            # pass; a W of another dtype than its layer's (replaced by hand) as NumPy would.
            w, dw = self.params[f"W{idx}"], affine.dW
            if isinstance(w, np.ndarray) and w.dtype == dw.dtype and w.shape == dw.shape:
                grads[f"W{idx}"] = _core.add_scaled(dw, w, self.weight_decay_lambda)
            else:
                grads[f"W{idx}"] = dw + self.weight_decay_lambda * w
            grads[f"b{idx}"] = affine.db
            if self.use_batchnorm and idx <= self.hidden_layer_num:
                bn = self.layers[f"BatchNorm{idx}"]
                grads[f"gamma{idx}"] = bn.dgamma
                grads[f"beta{idx}"] = bn.dbeta
        return grads
