"""DLFS ch02/or_gate.py: the OR gate."""

import numpy as np

from ferrograd.perceptron import OR

__all__ = ["OR", "np"]
