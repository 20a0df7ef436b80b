"""DLFS common/trainer.py: the book's Trainer, step for step, on ferrograd's nets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ferrograd import fused
from ferrograd.book.common.optimizer import *  # noqa: F403  (the book's namespace)
from ferrograd.optimizers import get_optimizer

__all__ = ["SGD", "AdaGrad", "Adam", "Momentum", "Nesterov", "RMSprop", "Trainer", "np"]  # noqa: F405


class Trainer:
    """The book's Trainer (DLFS common/trainer.py) with its signature, defaults, lists and lines.

    Each iteration does what the book's ``train_step`` does, in its order: a mini-batch
    drawn by ``np.random.choice(train_size, batch_size)`` (NumPy's global generator, so
    ``np.random.seed`` reproduces a run), the gradient and the update (one native fused
    step where :func:`ferrograd.fused.supports` the net and optimizer, else
    ``network.gradient`` and ``optimizer.update``), then the loss of the batch after the
    update (``train loss:``). After the first iteration of every epoch it measures train
    and test accuracy (``=== epoch:… ===``); at the end, the test accuracy.

    Parameters
    ----------
    network : network
        A net with ``params``, ``gradient``, ``loss`` and ``accuracy``.
    x_train, t_train, x_test, t_test : numpy.ndarray
        Inputs and targets (labels or one-hot rows).
    epochs : int, default 20
        Epochs of ``train_size / mini_batch_size`` iterations.
    mini_batch_size : int, default 100
        Samples per iteration, drawn with replacement.
    optimizer : str, default "SGD"
        Optimizer name, any case (sgd, momentum, nesterov, adagrad, rmsprop, adam).
    optimizer_param : mapping, optional
        Its hyperparameters; default ``{"lr": 0.01}``.
    evaluate_sample_num_per_epoch : int, optional
        Measure the per-epoch accuracies on the first N samples only.
    verbose : bool, default True
        Print the book's lines.
    """

    def __init__(
        self,
        network: Any,
        x_train: NDArray[Any],
        t_train: NDArray[Any],
        x_test: NDArray[Any],
        t_test: NDArray[Any],
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str = "SGD",
        optimizer_param: Mapping[str, float] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        verbose: bool = True,
    ) -> None:
        self.network = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        params = {"lr": 0.01} if optimizer_param is None else dict(optimizer_param)
        self.optimizer = get_optimizer(optimizer, **params)
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        supported = fused.supports(network, self.optimizer)
        self._fused = fused.FusedTrainer(network, self.optimizer) if supported else None

    def train_step(self) -> None:
        """One iteration of the book's loop (see the class docstring)."""
        batch_mask = np.random.choice(self.train_size, self.batch_size)  # noqa: NPY002 (the book's draw)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]
        if self._fused is not None:
            self._fused.run_epoch(self.x_train, self.t_train, batch_mask[None, :])
            loss = self._fused.loss(x_batch, t_batch)  # the net's loss, natively if it can
        else:
            grads = self.network.gradient(x_batch, t_batch)
            self.optimizer.update(self.network.params, grads)
            loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))
        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            x_tr, t_tr, x_te, t_te = self.x_train, self.t_train, self.x_test, self.t_test
            if self.evaluate_sample_num_per_epoch is not None:
                n = self.evaluate_sample_num_per_epoch
                x_tr, t_tr, x_te, t_te = x_tr[:n], t_tr[:n], x_te[:n], t_te[:n]
            train_acc = self._accuracy(x_tr, t_tr)
            test_acc = self._accuracy(x_te, t_te)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print(
                    f"=== epoch:{self.current_epoch}, train acc:{train_acc}, test acc:{test_acc} ==="
                )
        self.current_iter += 1

    def _accuracy(self, x: NDArray[Any], t: NDArray[Any]) -> float:
        """The net's accuracy (batched natively where the fused path covers the net)."""
        if self._fused is not None:
            return self._fused.accuracy(x, t)
        return float(self.network.accuracy(x, t))

    def train(self) -> None:
        """``max_iter`` iterations, then the final test accuracy."""
        for _ in range(self.max_iter):
            self.train_step()
        test_acc = self._accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
