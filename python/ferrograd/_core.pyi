"""Native kernels of ferrograd (Rust). float32 or float64 arrays in, new arrays out."""

from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

__version__: str

_F = TypeVar("_F", np.float32, np.float64)
_Activation = Literal["sigmoid", "relu"]
_Targets = NDArray[np.float32] | NDArray[np.float64] | NDArray[np.int64]

def num_threads() -> int: ...
def matmul(
    a: NDArray[_F], b: NDArray[_F], *, trans_a: bool = False, trans_b: bool = False
) -> NDArray[_F]: ...
def affine(x: NDArray[_F], w: NDArray[_F], b: NDArray[_F]) -> NDArray[_F]: ...
def sigmoid(x: NDArray[_F]) -> NDArray[_F]: ...
def sigmoid_grad(x: NDArray[_F]) -> NDArray[_F]: ...
def sigmoid_backward(y: NDArray[_F], dout: NDArray[_F]) -> NDArray[_F]: ...
def relu(x: NDArray[_F]) -> NDArray[_F]: ...
def relu_grad(x: NDArray[_F]) -> NDArray[_F]: ...
def relu_backward(x: NDArray[_F], dout: NDArray[_F]) -> NDArray[_F]: ...
def softmax(x: NDArray[_F]) -> NDArray[_F]: ...
def cross_entropy_error(y: NDArray[_F], t: _Targets) -> float: ...
def sum_squares_error(y: NDArray[_F], t: NDArray[_F]) -> float: ...
def softmax_cross_entropy_backward(y: NDArray[_F], t: _Targets) -> NDArray[_F]: ...
def two_layer_predict(
    w1: NDArray[_F],
    b1: NDArray[_F],
    w2: NDArray[_F],
    b2: NDArray[_F],
    x: NDArray[_F],
    *,
    activation: _Activation = "sigmoid",
) -> NDArray[_F]: ...
def two_layer_loss(
    w1: NDArray[_F],
    b1: NDArray[_F],
    w2: NDArray[_F],
    b2: NDArray[_F],
    x: NDArray[_F],
    t: _Targets,
    *,
    activation: _Activation = "sigmoid",
) -> float: ...
def two_layer_gradient(
    w1: NDArray[_F],
    b1: NDArray[_F],
    w2: NDArray[_F],
    b2: NDArray[_F],
    x: NDArray[_F],
    t: _Targets,
    *,
    activation: _Activation = "sigmoid",
) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F]]: ...
def numerical_gradient(
    w1: NDArray[np.float64],
    b1: NDArray[np.float64],
    w2: NDArray[np.float64],
    b2: NDArray[np.float64],
    x: NDArray[np.float64],
    t: _Targets,
    *,
    activation: _Activation = "sigmoid",
    method: Literal["fast", "bruteforce"] = "fast",
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]: ...
