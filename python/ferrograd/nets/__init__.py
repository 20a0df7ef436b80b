"""The book's networks: ``SimpleNet`` (ch. 4), ``TwoLayerNet`` (ch. 4–5),
``MultiLayerNet`` (ch. 6, with batch normalization, dropout and weight decay),
``SimpleConvNet`` (ch. 7) and ``DeepConvNet`` (ch. 8), and ``SoftmaxRegression``, the
one-layer linear classifier they are compared with."""

from __future__ import annotations

from ferrograd.nets.deep_convnet import DeepConvNet
from ferrograd.nets.multi_layer_net import MultiLayerNet
from ferrograd.nets.multi_layer_net_extend import MultiLayerNetExtend
from ferrograd.nets.simple_convnet import SimpleConvNet
from ferrograd.nets.simple_net import SimpleNet
from ferrograd.nets.softmax_regression import SoftmaxRegression
from ferrograd.nets.two_layer_net import TwoLayerNet

__all__ = [
    "DeepConvNet",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "SimpleConvNet",
    "SimpleNet",
    "SoftmaxRegression",
    "TwoLayerNet",
]
