"""DLFS ch02/and_gate.py: the AND gate."""

import numpy as np

from ferrograd.perceptron import AND

__all__ = ["AND", "np"]
