"""DLFS ch04/two_layer_net.py: the sigmoid two-layer net with numerical and backprop gradients."""

import numpy as np

from ferrograd.nets import TwoLayerNet

__all__ = ["TwoLayerNet", "np"]
