"""The book's deep convolutional network (chapter 8, ch08/deep_convnet.py).

conv-ReLU-conv-ReLU-pool three times (3×3 filters: 16, 16, 32, 32, 64, 64), then
Affine (hidden_size) → ReLU → Dropout(0.5) → Affine (output_size) → Dropout(0.5) →
softmax, with He initial weights √(2 / fan-in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ferrograd._random import make_rng
from ferrograd.layers import Affine, Convolution, Dropout, Pooling, Relu, SoftmaxWithLoss
from ferrograd.nets._common import check_dtype, check_size
from ferrograd.nets._layered import LayeredNet, conv_args

__all__ = ["DeepConvNet"]

CONV_PARAMS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)
"""The book's six convolutions (the fourth pads by 2: 14 → 16, so three poolings end at 4×4)."""


class DeepConvNet(LayeredNet):
    """The book's DeepConvNet (ch. 8): about 99.4 % on MNIST in the book.

    conv-ReLU-conv-ReLU-pool three times, then Affine → ReLU → Dropout(0.5) → Affine →
    Dropout(0.5) → softmax. ``params`` W1…W6 (convolutions), W7 (64·4·4 → hidden_size for
    28×28 input: its rows follow the last pooling's output size), W8 (hidden_size →
    output_size) and their biases; He-scaled standard normal weights √(2 / fan-in), biases
    0, of ``dtype``. ``layers`` is the book's list. Inputs are images (N, C, H, W) or flat
    rows (N, C·H·W).

    Parameters
    ----------
    input_dim : tuple of int, default (1, 28, 28)
        (C, H, W) of one image.
    conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6
        One mapping per convolution: ``filter_num``, ``filter_size``, ``pad``, ``stride``;
        None is the book's entry of :data:`CONV_PARAMS` (3×3 filters: 16, 16, 32, 32, 64,
        64).
    hidden_size : int, default 50
        Width of the hidden Affine layer.
    output_size : int, default 10
        K, the number of classes.
    seed : int or numpy.random.Generator, optional
        Seed or generator of the weights and the dropout masks; None: NumPy's global
        generator (as the book).
    dtype : dtype_like, default float64
        float64 as the book, or float32.

    Raises
    ------
    ValueError
        ``input_dim`` is not three positive sizes or too small for the layers, a
        ``conv_param_i`` lacks a key or holds a bad value, or a size is not a positive int.
    """

    _book_trainer = "ch08/train_deepnet.py"

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param_1: Mapping[str, Any] | None = None,
        conv_param_2: Mapping[str, Any] | None = None,
        conv_param_3: Mapping[str, Any] | None = None,
        conv_param_4: Mapping[str, Any] | None = None,
        conv_param_5: Mapping[str, Any] | None = None,
        conv_param_6: Mapping[str, Any] | None = None,
        hidden_size: int = 50,
        output_size: int = 10,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: DTypeLike = np.float64,
    ) -> None:
        op = "DeepConvNet"
        if len(tuple(input_dim)) != 3:
            raise ValueError(f"{op}: input_dim must be (C, H, W), got {input_dim!r}")
        c, h, w = (check_size(op, "input_dim", v) for v in input_dim)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        convs = [
            conv_args(op, f"conv_param_{i + 1}", p, d)
            for i, (p, d) in enumerate(zip(given, CONV_PARAMS, strict=True))
        ]
        hidden = check_size(op, "hidden_size", hidden_size)
        k = check_size(op, "output_size", output_size)
        self.input_dim = (c, h, w)
        self.conv_params = convs
        self.dtype = check_dtype(op, dtype)
        rng = make_rng(seed)
        self.rng = rng  # the dropout layers' masks (saved with the model)

        # Sizes through the stack: each conv, and a 2×2 pooling after every second one.
        size_h, size_w, channels = h, w, c
        fan_in: list[int] = []
        for i, cp in enumerate(convs):
            fs, pad, stride = cp["filter_size"], cp["pad"], cp["stride"]
            fan_in.append(channels * fs * fs)
            size_h = (size_h + 2 * pad - fs) // stride + 1
            size_w = (size_w + 2 * pad - fs) // stride + 1
            channels = cp["filter_num"]
            if i % 2 == 1:
                size_h, size_w = size_h // 2, size_w // 2
            if size_h < 1 or size_w < 1:
                raise ValueError(f"{op}: input_dim {input_dim} is too small for the layers")
        flat = channels * size_h * size_w
        fan_in += [flat, hidden]
        scales = np.sqrt(2.0 / np.array(fan_in))  # He: recommended with ReLU

        def normal(scale: float, *shape: int) -> np.ndarray:
            return (scale * rng.standard_normal(shape)).astype(self.dtype)

        self.params = {}
        prev = c
        for i, cp in enumerate(convs):
            fn, fs = cp["filter_num"], cp["filter_size"]
            self.params[f"W{i + 1}"] = normal(scales[i], fn, prev, fs, fs)
            self.params[f"b{i + 1}"] = np.zeros(fn, dtype=self.dtype)
            prev = fn
        self.params["W7"] = normal(scales[6], flat, hidden)
        self.params["b7"] = np.zeros(hidden, dtype=self.dtype)
        self.params["W8"] = normal(scales[7], hidden, k)
        self.params["b8"] = np.zeros(k, dtype=self.dtype)

        p = self.params
        layers: list[Any] = []
        for i, cp in enumerate(convs):
            layers += [Convolution(p[f"W{i + 1}"], p[f"b{i + 1}"], cp["stride"], cp["pad"]), Relu()]
            if i % 2 == 1:
                layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        layers += [
            Affine(p["W7"], p["b7"]),
            Relu(),
            Dropout(0.5, rng=rng),
            Affine(p["W8"], p["b8"]),
            Dropout(0.5, rng=rng),
        ]
        self.layers = layers
        self.last_layer = SoftmaxWithLoss()

    def __repr__(self) -> str:
        return f"DeepConvNet({self.input_dim}, hidden {self.params['W7'].shape[1]}, {self.dtype})"

    def _float64_copy(self) -> DeepConvNet:
        c = self.conv_params
        net = DeepConvNet(
            self.input_dim,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            hidden_size=self.params["W7"].shape[1],
            output_size=self.output_size,
            seed=0,
            dtype=np.float64,
        )
        for key, value in self.params.items():
            np.copyto(net.params[key], value)
        return net
