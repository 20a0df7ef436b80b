"""ferrograd: the classic deep-learning-from-scratch networks, fast, on real MNIST.

The book's NumPy API (functions, numerical gradients, layers, networks, optimizers,
the MNIST loader and the training loop) over Rust kernels in :mod:`ferrograd._core`.
"""

from ferrograd._core import __version__
from ferrograd.datasets import (
    DatasetError,
    DownloadError,
    load_fashion_mnist,
    load_mnist,
    load_mnist_sample,
)
from ferrograd.functions import (
    binary_cross_entropy,
    cross_entropy_error,
    identity_function,
    mean_squared_error,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    softmax_loss,
    step_function,
    sum_squared_error,
    sum_squares_error,
)
from ferrograd.gradcheck import GradCheckRow, gradient_check
from ferrograd.gradient import (
    gradient_descent,
    numerical_diff,
    numerical_gradient,
    numerical_gradient_2d,
)
from ferrograd.layers import (
    AddLayer,
    Affine,
    BatchNormalization,
    Dropout,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from ferrograd.nets import (
    MultiLayerNet,
    MultiLayerNetExtend,
    SimpleNet,
    SoftmaxRegression,
    TwoLayerNet,
)
from ferrograd.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop, get_optimizer
from ferrograd.perceptron import AND, NAND, OR, XOR
from ferrograd.saving import Checkpoint, load, load_checkpoint, model_info, save
from ferrograd.trainer import History, Trainer, load_params, save_params
from ferrograd.util import to_categorical


def _check_thread_setting() -> None:
    """Warn when FERROGRAD_NUM_THREADS is not used as given, and say what is used."""
    import os
    import warnings

    from ferrograd import _core

    value = os.environ.get("FERROGRAD_NUM_THREADS")
    if value is None:
        return
    try:
        wanted = int(value.strip())
    except ValueError:
        wanted = 0
    cores = os.cpu_count() or 1
    if wanted <= 0:
        why = "is not a positive integer"
    elif wanted > cores * _core.MAX_THREADS_PER_CORE:
        why = f"is more than {_core.MAX_THREADS_PER_CORE} threads per core ({cores} cores)"
    else:
        return
    warnings.warn(
        f"FERROGRAD_NUM_THREADS={value!r} {why}; using {_core.num_threads()} threads",
        RuntimeWarning,
        stacklevel=2,
    )


_check_thread_setting()

__all__ = [
    "AND",
    "NAND",
    "OR",
    "SGD",
    "XOR",
    "AdaGrad",
    "Adam",
    "AddLayer",
    "Affine",
    "BatchNormalization",
    "Checkpoint",
    "DatasetError",
    "DownloadError",
    "Dropout",
    "GradCheckRow",
    "History",
    "Momentum",
    "MulLayer",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Nesterov",
    "RMSprop",
    "Relu",
    "Sigmoid",
    "SimpleNet",
    "SoftmaxRegression",
    "SoftmaxWithLoss",
    "Trainer",
    "TwoLayerNet",
    "__version__",
    "binary_cross_entropy",
    "cross_entropy_error",
    "get_optimizer",
    "gradient_check",
    "gradient_descent",
    "identity_function",
    "load",
    "load_checkpoint",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_sample",
    "load_params",
    "mean_squared_error",
    "model_info",
    "numerical_diff",
    "numerical_gradient",
    "numerical_gradient_2d",
    "relu",
    "relu_grad",
    "save",
    "save_params",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "sum_squared_error",
    "sum_squares_error",
    "to_categorical",
]
