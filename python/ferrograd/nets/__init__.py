"""The book's networks: ``SimpleNet`` (ch. 4), ``TwoLayerNet`` (ch. 4–5) and
``MultiLayerNet`` (ch. 6, with batch normalization, dropout and weight decay), and
``SoftmaxRegression``, the one-layer linear classifier they are compared with."""

from __future__ import annotations

from ferrograd.nets.multi_layer_net import MultiLayerNet
from ferrograd.nets.multi_layer_net_extend import MultiLayerNetExtend
from ferrograd.nets.simple_net import SimpleNet
from ferrograd.nets.softmax_regression import SoftmaxRegression
from ferrograd.nets.two_layer_net import TwoLayerNet

__all__ = ["MultiLayerNet", "MultiLayerNetExtend", "SimpleNet", "SoftmaxRegression", "TwoLayerNet"]
