"""DLFS common/gradient.py: central-difference gradients (h = 1e-4)."""

import numpy as np

from ferrograd.gradient import numerical_gradient, numerical_gradient_2d

# The book's helper for one point: the same probe loop as numerical_gradient.
_numerical_gradient_1d = numerical_gradient

__all__ = ["np", "numerical_gradient", "numerical_gradient_2d"]
