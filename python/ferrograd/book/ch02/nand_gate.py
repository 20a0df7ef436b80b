"""DLFS ch02/nand_gate.py: the NAND gate."""

import numpy as np

from ferrograd.perceptron import NAND

__all__ = ["NAND", "np"]
