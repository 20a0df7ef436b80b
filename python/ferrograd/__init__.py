"""ferrograd: the classic deep-learning-from-scratch network, fast, on real MNIST."""

from ferrograd import _core
from ferrograd._core import __version__

__all__ = ["__version__"]
