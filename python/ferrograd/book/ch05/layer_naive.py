"""DLFS ch05/layer_naive.py: the multiply and add layers of the shopping example."""

import numpy as np

from ferrograd.layers import AddLayer, MulLayer

__all__ = ["AddLayer", "MulLayer", "np"]
