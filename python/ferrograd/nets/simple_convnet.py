"""The book's simple convolutional network (chapter 7, ch07/simple_convnet.py).

conv (filter_num × filter_size²) → ReLU → 2×2 max pooling, stride 2 → Affine
(hidden_size) → ReLU → Affine (output_size) → softmax, on the Rust convolution and
pooling kernels (conv.rs, pooling.rs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ferrograd._random import make_rng
from ferrograd.layers import Affine, Convolution, Pooling, Relu, SoftmaxWithLoss
from ferrograd.nets._common import check_dtype, check_size
from ferrograd.nets._layered import LayeredNet, conv_args

__all__ = ["SimpleConvNet"]

CONV_PARAM = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
"""The book's default convolution: 30 filters of 5×5, no padding, stride 1."""


class SimpleConvNet(LayeredNet):
    """The book's SimpleConvNet (ch. 7): conv → ReLU → pool → Affine → ReLU → Affine → softmax.

    ``params``: W1 (FN, C, FS, FS), b1 (FN,), W2 (FN·PH·PW, hidden_size), b2, W3
    (hidden_size, output_size), b3; weights ``weight_init_std`` × standard normal draws,
    biases 0, of ``dtype``. ``layers`` is the book's ordered dict Conv1, Relu1, Pool1,
    Affine1, Relu2, Affine2. Odd convolution outputs are pooled to floor(size / 2) (the
    book's sizes assume an even one). Inputs are images (N, C, H, W) or flat rows
    (N, C·H·W).

    Parameters
    ----------
    input_dim : tuple of int, default (1, 28, 28)
        (C, H, W) of one image.
    conv_param : mapping, optional
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of the convolution; None is
        the book's :data:`CONV_PARAM` (30 filters of 5×5, pad 0, stride 1).
    hidden_size : int, default 100
        Width of the hidden Affine layer.
    output_size : int, default 10
        K, the number of classes.
    weight_init_std : float, default 0.01
        Scale of the initial weights.
    seed : int or numpy.random.Generator, optional
        Seed or generator of the draws; None: NumPy's global generator (as the book).
    dtype : dtype_like, default float64
        float64 as the book, or float32.

    Raises
    ------
    ValueError
        ``input_dim`` is not three positive sizes, ``conv_param`` lacks a key or holds a
        bad value, a size is not a positive int, or the filter or the 2×2 pooling does not
        fit the image.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param: Mapping[str, Any] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: DTypeLike = np.float64,
    ) -> None:
        op = "SimpleConvNet"
        if len(tuple(input_dim)) != 3:
            raise ValueError(f"{op}: input_dim must be (C, H, W), got {input_dim!r}")
        c, h, w = (check_size(op, "input_dim", v) for v in input_dim)
        cp = conv_args(op, "conv_param", conv_param, CONV_PARAM)
        hidden = check_size(op, "hidden_size", hidden_size)
        k = check_size(op, "output_size", output_size)
        fn, fs, pad, stride = cp["filter_num"], cp["filter_size"], cp["pad"], cp["stride"]
        if h + 2 * pad < fs or w + 2 * pad < fs:
            raise ValueError(
                f"{op}: a {fs}x{fs} filter does not fit input_dim {input_dim} with pad {pad}"
            )
        conv_h, conv_w = (h + 2 * pad - fs) // stride + 1, (w + 2 * pad - fs) // stride + 1
        if conv_h < 2 or conv_w < 2:
            raise ValueError(
                f"{op}: the convolution output {conv_h}x{conv_w} is too small to pool 2x2"
            )
        pooled = fn * (conv_h // 2) * (conv_w // 2)
        self.input_dim = (c, h, w)
        self.conv_param = cp
        self.weight_init_std = weight_init_std
        self.dtype = check_dtype(op, dtype)
        rng = make_rng(seed)

        def normal(*shape: int) -> np.ndarray:
            return (weight_init_std * rng.standard_normal(shape)).astype(self.dtype)

        self.params = {
            "W1": normal(fn, c, fs, fs),
            "b1": np.zeros(fn, dtype=self.dtype),
            "W2": normal(pooled, hidden),
            "b2": np.zeros(hidden, dtype=self.dtype),
            "W3": normal(hidden, k),
            "b3": np.zeros(k, dtype=self.dtype),
        }
        p = self.params
        self.layers: OrderedDict[str, Any] = OrderedDict(
            [
                ("Conv1", Convolution(p["W1"], p["b1"], stride, pad)),
                ("Relu1", Relu()),
                ("Pool1", Pooling(pool_h=2, pool_w=2, stride=2)),
                ("Affine1", Affine(p["W2"], p["b2"])),
                ("Relu2", Relu()),
                ("Affine2", Affine(p["W3"], p["b3"])),
            ]
        )
        self.last_layer = SoftmaxWithLoss()

    def __repr__(self) -> str:
        cp = self.conv_param
        return (
            f"SimpleConvNet({self.input_dim}, conv {cp['filter_num']}x{cp['filter_size']}"
            f"x{cp['filter_size']}, hidden {self.params['W2'].shape[1]}, {self.dtype})"
        )

    def _float64_copy(self) -> SimpleConvNet:
        net = SimpleConvNet(
            self.input_dim,
            self.conv_param,
            self.params["W2"].shape[1],
            self.output_size,
            seed=0,
            dtype=np.float64,
        )
        for key, value in self.params.items():
            np.copyto(net.params[key], value)
        return net
