"""DLFS common/optimizer.py: the update rules (``from common.optimizer import *`` brings np)."""

import numpy as np

from ferrograd.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

__all__ = ["SGD", "AdaGrad", "Adam", "Momentum", "Nesterov", "RMSprop", "np"]
