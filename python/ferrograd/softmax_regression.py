"""The import path ``ferrograd.softmax_regression`` of :class:`ferrograd.nets.SoftmaxRegression`."""

from __future__ import annotations

from ferrograd.nets.softmax_regression import SoftmaxRegression

__all__ = ["SoftmaxRegression"]
