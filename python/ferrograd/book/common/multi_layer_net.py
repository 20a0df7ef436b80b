"""DLFS common/multi_layer_net.py: the fully connected net (ReLU or sigmoid, weight decay)."""

import numpy as np

from ferrograd.nets import MultiLayerNet

__all__ = ["MultiLayerNet", "np"]
