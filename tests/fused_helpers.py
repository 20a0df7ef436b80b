"""``_core.FusedTrainer`` for the tests: the book's optimizer defaults filled in for the
hyperparameters a test does not set (the kernel takes every one explicitly)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from ferrograd import _core
from ferrograd.optimizers import OPTIMIZERS


def fused_trainer(
    sizes: Sequence[int],
    *,
    activation: str = "sigmoid",
    dtype: str = "float64",
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    **hyperparameters: float,
) -> _core.FusedTrainer:
    """A kernel trainer for ``sizes`` with ``optimizer``'s defaults (unchecked, so the
    kernel's own checks are what a test sees) updated by ``hyperparameters``."""
    cls = OPTIMIZERS.get(optimizer)
    defaults = {} if cls is None else {
        name: p.default for name, p in inspect.signature(cls).parameters.items()
    }  # fmt: skip
    return _core.FusedTrainer(
        list(sizes),
        activation=activation,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        optimizer=optimizer,  # type: ignore[arg-type]
        hyperparameters={**defaults, **hyperparameters},
        weight_decay=weight_decay,
    )
