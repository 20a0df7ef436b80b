"""DLFS ch08/deep_convnet.py: six 3×3 convolutions, He init, dropout."""

import numpy as np

from ferrograd.nets import DeepConvNet

__all__ = ["DeepConvNet", "np"]
