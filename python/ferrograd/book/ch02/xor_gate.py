"""DLFS ch02/xor_gate.py: the XOR gate."""

import numpy as np

from ferrograd.perceptron import XOR

__all__ = ["XOR", "np"]
