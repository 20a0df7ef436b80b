"""DLFS ch07/simple_convnet.py: conv → ReLU → pool → Affine → ReLU → Affine → softmax."""

import numpy as np

from ferrograd.nets import SimpleConvNet

__all__ = ["SimpleConvNet", "np"]
