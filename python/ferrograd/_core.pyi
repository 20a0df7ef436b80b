"""Native kernels of ferrograd (Rust). float32 or float64 arrays in, new arrays out."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, final

import numpy as np
from numpy.typing import NDArray

__version__: str
MAX_THREADS_PER_CORE: int
MALLOC_TUNED: bool  # glibc keeps array-sized blocks on the heap (FERROGRAD_MALLOC=system: off)

_F = TypeVar("_F", np.float32, np.float64)
_Activation = Literal["sigmoid", "relu"]
_Targets = NDArray[np.float32] | NDArray[np.float64] | NDArray[np.int64]
_Batch = NDArray[np.float32] | NDArray[np.float64]  # either float type, converted inside

def num_threads() -> int: ...
def batch_norm_forward(
    x: NDArray[_F], gamma: NDArray[_F], beta: NDArray[_F], eps: float
) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F], NDArray[_F]]: ...
def batch_norm_backward(
    dout: NDArray[_F], xc: NDArray[_F], xn: NDArray[_F], std: NDArray[_F], gamma: NDArray[_F]
) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F]]: ...
def add_scaled(a: NDArray[_F], b: NDArray[_F], alpha: float) -> NDArray[_F]: ...
def max_abs(a: NDArray[_F]) -> float: ...
def optimizer_update(
    name: Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
    hyperparameters: dict[str, float],
    params: list[Any],
    grads: list[Any],
    states: list[list[Any]],
    iteration: int,
) -> bool: ...
def matmul(
    a: _Batch, b: NDArray[_F], *, trans_a: bool = False, trans_b: bool = False
) -> NDArray[_F]: ...
def affine(x: _Batch, w: NDArray[_F], b: NDArray[_F]) -> NDArray[_F]: ...
def sigmoid(x: NDArray[_F]) -> NDArray[_F]: ...
def sigmoid_grad(x: NDArray[_F]) -> NDArray[_F]: ...
def sigmoid_backward(y: NDArray[_F], dout: NDArray[_F]) -> NDArray[_F]: ...
def relu(x: NDArray[_F]) -> NDArray[_F]: ...
def relu_grad(x: NDArray[_F]) -> NDArray[_F]: ...
def relu_backward(x: NDArray[_F], dout: NDArray[_F]) -> NDArray[_F]: ...
def softmax(x: NDArray[_F]) -> NDArray[_F]: ...
def scaled_pixels(
    pixels: NDArray[np.uint8], dtype: Literal["float32", "float64"]
) -> NDArray[np.float32] | NDArray[np.float64]: ...
def im2col(
    x: NDArray[_F], filter_h: int, filter_w: int, stride: int = 1, pad: int = 0
) -> NDArray[_F]: ...
def col2im(
    col: NDArray[_F],
    input_shape: Sequence[int],
    filter_h: int,
    filter_w: int,
    stride: int = 1,
    pad: int = 0,
) -> NDArray[_F]: ...
def conv_forward(
    x: NDArray[_F], w: NDArray[_F], b: NDArray[_F], stride: int = 1, pad: int = 0
) -> NDArray[_F]: ...
def conv_backward(
    x: NDArray[_F], w: NDArray[_F], dout: NDArray[_F], stride: int = 1, pad: int = 0
) -> tuple[NDArray[_F], NDArray[_F], NDArray[_F]]: ...
def pool_forward(
    x: NDArray[_F], pool_h: int, pool_w: int, stride: int = 1, pad: int = 0
) -> tuple[NDArray[_F], NDArray[np.int64]]: ...
def pool_backward(
    dout: NDArray[_F],
    arg_max: NDArray[np.int64],
    x_shape: Sequence[int],
    pool_h: int,
    pool_w: int,
    stride: int = 1,
    pad: int = 0,
) -> NDArray[_F]: ...
def cross_entropy_error(y: NDArray[_F], t: _Targets) -> float: ...
def sum_squares_error(y: NDArray[_F], t: NDArray[_F]) -> float: ...
def softmax_cross_entropy_backward(y: NDArray[_F], t: _Targets) -> NDArray[_F]: ...
def two_layer_predict(
    w1: NDArray[_F],
    b1: NDArray[_F],
    w2: NDArray[_F],
    b2: NDArray[_F],
    x: _Batch,
    *,
    activation: _Activation = "sigmoid",
) -> NDArray[_F]: ...
def two_layer_loss(
    w1: NDArray[_F],
    b1: NDArray[_F],
    w2: NDArray[_F],
    b2: NDArray[_F],
    x: _Batch,
    t: _Targets,
    *,
    activation: _Activation = "sigmoid",
) -> float: ...
def two_layer_gradient(
    w1: NDArray[_F],
    b1: NDArray[_F],
    w2: NDArray[_F],
    b2: NDArray[_F],
    x: _Batch,
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
def chain_numerical_gradient(
    layers: Sequence[
        tuple[
            NDArray[np.float64],
            NDArray[np.float64],
            NDArray[np.float64] | None,
            NDArray[np.float64] | None,
            NDArray[np.float64] | None,
        ]
    ],
    x: NDArray[np.float64],
    t: _Targets,
    *,
    activation: _Activation,
    weight_decay: float = 0.0,
    method: Literal["fast", "bruteforce"] = "fast",
) -> list[
    tuple[
        NDArray[np.float64],
        NDArray[np.float64],
        NDArray[np.float64] | None,
        NDArray[np.float64] | None,
    ]
]: ...
def accuracy(
    params: Sequence[NDArray[Any]],
    x: NDArray[Any] | SparseRows,
    t: _Targets,
    *,
    activation: _Activation,
) -> float: ...
def predict_labels(
    params: Sequence[NDArray[Any]],
    x: NDArray[Any] | SparseRows,
    *,
    activation: _Activation,
) -> NDArray[np.int64]: ...

@final
class SparseRows:
    """The non-zero entries of a float32/float64 matrix (n, d), compressed once (CSR;
    4 bytes per entry when it has at most 256 distinct non-zero values)."""

    def __new__(cls, x: NDArray[np.float32] | NDArray[np.float64]) -> SparseRows: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def nnz(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

@final
class ConvNetTrainer:
    """Fused training of the book's SimpleConvNet (conv, ReLU, 2x2 max pooling, Affine,
    ReLU, Affine, softmax): forward, backward and update in one call per run of steps."""

    def __new__(
        cls,
        input_dim: tuple[int, int, int],
        filters: tuple[int, int, int],
        *,
        stride: int,
        pad: int,
        hidden_size: int,
        output_size: int,
        dtype: Literal["float32", "float64"],
        optimizer: Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
        hyperparameters: Mapping[str, float],
    ) -> ConvNetTrainer: ...
    @property
    def dtype(self) -> str: ...
    def loss(self, params: Sequence[NDArray[Any]], x: NDArray[Any], t: NDArray[Any]) -> float: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def state_size(self) -> int: ...
    def run(
        self,
        params: Sequence[NDArray[Any]],
        state: Sequence[NDArray[Any]],
        x: NDArray[Any],
        t: NDArray[Any],
        batch_indices: NDArray[np.int64],
        *,
        iter: int = 0,
        hyperparameters: Mapping[str, float] | None = None,
        learning_rates: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]: ...

@final
class FusedTrainer:
    """Fused training of a fully connected net (the two-layer net, MultiLayerNet with
    weight decay): gather, forward, backward and update in one call per run of steps."""

    def __new__(
        cls,
        sizes: Sequence[int],
        *,
        activation: _Activation,
        dtype: Literal["float32", "float64"],
        optimizer: Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
        hyperparameters: Mapping[str, float],
        weight_decay: float,
    ) -> FusedTrainer: ...
    @property
    def dtype(self) -> str: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def state_size(self) -> int: ...
    def run(
        self,
        params: Sequence[NDArray[Any]],
        state: Sequence[NDArray[Any]],
        x: NDArray[Any] | SparseRows,
        t: NDArray[Any],
        batch_indices: NDArray[np.int64],
        *,
        iter: int = 0,
        hyperparameters: Mapping[str, float] | None = None,
        learning_rates: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]: ...
