"""DLFS common/multi_layer_net_extend.py: with dropout and batch normalization."""

import numpy as np

from ferrograd.nets import MultiLayerNetExtend

__all__ = ["MultiLayerNetExtend", "np"]
