"""DLFS common/trainer.py: the Trainer with the book's defaults and log lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ferrograd.book.common.optimizer import *  # noqa: F403  (the book's namespace)
from ferrograd.trainer import Trainer as _Trainer

__all__ = ["SGD", "AdaGrad", "Adam", "Momentum", "Nesterov", "RMSprop", "Trainer", "np"]  # noqa: F405


class Trainer(_Trainer):
    """``ferrograd.Trainer`` with the book's signature, defaults (SGD, lr 0.01) and
    ``train loss:`` / ``=== epoch:… ===`` / ``test acc:`` lines; mini-batches from NumPy's
    global generator."""

    def __init__(
        self,
        network: Any,
        x_train: ArrayLike,
        t_train: ArrayLike,
        x_test: ArrayLike,
        t_test: ArrayLike,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str = "SGD",
        optimizer_param: Mapping[str, float] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__(
            network,
            x_train,
            t_train,
            x_test,
            t_test,
            epochs=epochs,
            mini_batch_size=mini_batch_size,
            optimizer=optimizer,
            optimizer_param={"lr": 0.01} if optimizer_param is None else optimizer_param,
            evaluate_sample_num_per_epoch=evaluate_sample_num_per_epoch,
            verbose=verbose,
            log_format="book",
        )
