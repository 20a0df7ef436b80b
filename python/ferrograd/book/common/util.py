"""DLFS common/util.py: smooth_curve, shuffle_dataset, conv_output_size, im2col, col2im."""

import numpy as np

from ferrograd.util import col2im, conv_output_size, im2col, shuffle_dataset, smooth_curve

__all__ = ["col2im", "conv_output_size", "im2col", "np", "shuffle_dataset", "smooth_curve"]
