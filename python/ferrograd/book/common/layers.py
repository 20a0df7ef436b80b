"""DLFS common/layers.py: the layers, with the functions and im2col in scope as the book's."""

from ferrograd.book.common.functions import *  # noqa: F403  (the book's namespace)
from ferrograd.book.common.functions import __all__ as _functions
from ferrograd.layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from ferrograd.util import col2im, im2col

__all__ = [
    *_functions,
    "Affine",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "Pooling",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "col2im",
    "im2col",
]
