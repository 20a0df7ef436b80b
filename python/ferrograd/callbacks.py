"""Callbacks of :class:`ferrograd.Trainer`, Keras-style, on the fused and Python paths.

A callback is a :class:`Callback` (override any of ``on_train_begin``,
``on_epoch_begin``, ``on_epoch_end``, ``on_train_end``) or a plain callable, called as
``fn(epoch, logs)`` after every epoch. ``epoch`` counts from 0 as in Keras; ``logs`` holds
the epoch's numbers under Keras' names: ``loss`` (mean training loss of the epoch),
``accuracy``, ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy`` (those
measured), ``lr`` and ``seconds``. Setting ``trainer.stop_training = True`` ends the run
after the current epoch.

A learning-rate schedule per iteration reaches the fused step as one learning rate per
step (``Callback.learning_rates``), so it never leaves the native path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Callback",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "TerminateOnNaN",
    "inverse_time_decay",
    "step_decay",
]

Logs = dict[str, float]


class Callback:
    """Base class of the Trainer's callbacks: every hook does nothing until overridden.

    ``trainer`` is set (by :meth:`set_trainer`) before training starts; a hook may set
    ``trainer.stop_training = True`` to end the run after the current epoch.
    """

    trainer: Any = None

    def set_trainer(self, trainer: Any) -> None:
        """Give the callback its Trainer (called by ``Trainer.train`` before any hook).

        Parameters
        ----------
        trainer : Trainer
            The trainer that will call the hooks.
        """
        self.trainer = trainer

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Called before the first epoch of ``Trainer.train``.

        Parameters
        ----------
        logs : dict of str to float, optional
            Empty (Keras passes its logs here; the Trainer has none yet).
        """

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Called before each epoch; a change of ``trainer.optimizer.lr`` here applies to it.

        Parameters
        ----------
        epoch : int
            The epoch of this run, from 0.
        logs : dict of str to float, optional
            Empty (Keras passes its logs here; the Trainer has none yet).
        """

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Called after each epoch was evaluated.

        Parameters
        ----------
        epoch : int
            The epoch of this run, from 0.
        logs : dict of str to float, optional
            The epoch's numbers: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
            ``test_loss``, ``test_accuracy`` (those measured), ``lr``, ``seconds``.
        """

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Called after the last epoch (also after an early stop or Ctrl-C).

        Parameters
        ----------
        logs : dict of str to float, optional
            Empty (Keras passes its logs here; the Trainer has none yet).
        """

    def learning_rates(self, start: int, count: int) -> NDArray[np.float64] | None:
        """One learning rate per step for the next ``count`` steps, or None to leave ``lr`` alone.

        The fused native step takes them as its ``learning_rates``, so a schedule per
        iteration never leaves the native path.

        Parameters
        ----------
        start : int
            Global step of the first of them (iterations done, ``initial_iteration`` included).
        count : int
            Number of steps.

        Returns
        -------
        numpy.ndarray of float64, shape (count,), or None
            The rates; None (the base class) keeps ``optimizer.lr``.
        """
        return None


class LambdaCallback(Callback):
    """A callback made of plain functions (Keras' LambdaCallback).

    Parameters
    ----------
    on_epoch_begin : callable, optional
        ``fn(epoch, logs)`` before each epoch.
    on_epoch_end : callable, optional
        ``fn(epoch, logs)`` after each epoch.
    on_train_begin : callable, optional
        ``fn(logs)`` before training.
    on_train_end : callable, optional
        ``fn(logs)`` after training.
    """

    def __init__(
        self,
        on_epoch_begin: Callable[[int, Logs], Any] | None = None,
        on_epoch_end: Callable[[int, Logs], Any] | None = None,
        on_train_begin: Callable[[Logs], Any] | None = None,
        on_train_end: Callable[[Logs], Any] | None = None,
    ) -> None:
        self._hooks = {
            "epoch_begin": on_epoch_begin,
            "epoch_end": on_epoch_end,
            "train_begin": on_train_begin,
            "train_end": on_train_end,
        }

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if (fn := self._hooks["train_begin"]) is not None:
            fn(logs or {})

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if (fn := self._hooks["epoch_begin"]) is not None:
            fn(epoch, logs or {})

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if (fn := self._hooks["epoch_end"]) is not None:
            fn(epoch, logs or {})

    def on_train_end(self, logs: Logs | None = None) -> None:
        if (fn := self._hooks["train_end"]) is not None:
            fn(logs or {})


def as_callback(obj: Any) -> Callback:
    """A Callback as is; an object with any ``on_*`` hook wrapped; a callable as on_epoch_end."""
    if isinstance(obj, Callback):
        return obj
    hooks = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")
    if any(callable(getattr(obj, h, None)) for h in hooks):
        return LambdaCallback(**{h: getattr(obj, h, None) for h in hooks})
    if callable(obj):
        return LambdaCallback(on_epoch_end=obj)
    raise TypeError(
        f"Trainer: a callback must be a Callback, an object with on_epoch_end(...) or a "
        f"callable fn(epoch, logs), got {type(obj).__name__}"
    )


# ----------------------------------------------------------------- monitoring


def _mode(cls: str, monitor: str, mode: str) -> Callable[[float, float], bool]:
    """``better(a, b)``: a improves on b (min for losses, max for accuracies)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{cls}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)


def _monitored(cls: str, monitor: str, logs: Logs | None) -> float | None:
    value = (logs or {}).get(monitor)
    if value is None:
        raise ValueError(
            f"{cls}: monitor {monitor!r} is not measured; this run logs "
            f"{', '.join(sorted(logs or {}))}"
        )
    return float(value)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    After the run, ``best`` holds the best value, ``best_epoch`` its epoch and
    ``stopped_epoch`` the epoch it stopped at (None if it did not).

    Parameters
    ----------
    monitor : str, default "val_loss"
        A name of the epoch's logs (``loss``, ``accuracy``, ``val_loss``, ...).
    min_delta : float, default 0.0
        Smallest change that counts as an improvement (its absolute value is used).
    patience : int, default 0
        Epochs without improvement to wait before stopping.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; "auto": higher for names with "acc".
    restore_best_weights : bool, default False
        At the end, copy the parameters (and batch-norm statistics) of the best epoch back
        into the network.

    Raises
    ------
    ValueError
        ``patience`` is not an int >= 0, or ``mode`` is unknown. During training: the
        monitored name is not measured in this run.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self._better = _mode("EarlyStopping", monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_state: dict[str, NDArray[Any]] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.best, self.best_epoch, self.stopped_epoch, self.wait = None, None, None, 0
        self._best_state = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        value = _monitored("EarlyStopping", self.monitor, logs)
        assert value is not None
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        else:
            step = self.min_delta if self._better(1.0, 0.0) else -self.min_delta
            improved = self._better(value - step, self.best)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = _snapshot(self.trainer.network)
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.restore_best_weights and self._best_state is not None:
            _restore(self.trainer.network, self._best_state)


def _snapshot(network: Any) -> dict[str, NDArray[Any]]:
    from ferrograd.saving import _buffers

    state = {f"param/{k}": np.array(v, copy=True) for k, v in network.params.items()}
    state.update({f"buffer/{k}": np.array(v, copy=True) for k, v in _buffers(network).items()})
    return state


def _restore(network: Any, state: dict[str, NDArray[Any]]) -> None:
    for key, value in state.items():
        kind, _, name = key.partition("/")
        if kind == "param":
            np.copyto(network.params[name], value)  # in place: the layers hold these arrays
        else:
            layer, _, attr = name.partition("/")
            setattr(network.layers[layer], attr, value.copy())


class TerminateOnNaN(Callback):
    """Stop training after an epoch whose training loss was NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.trainer.stop_training = True
            self.trainer.log(f"epoch {epoch + 1}: loss {loss}, terminating training")


class ModelCheckpoint(Callback):
    """Save the model, optimizer and trainer state with ``ferrograd.save`` after each epoch.

    With ``save_best_only`` a file is written only when ``monitor`` improved: two
    checkpoints, one with ``save_best_only=True`` and one without, keep the best and the
    last epoch. ``saved`` lists the files written.

    Parameters
    ----------
    filepath : str or path-like
        Where to save; may hold ``{epoch}`` (from 1) and any logged name
        (``"ck-{epoch:02d}-{val_loss:.4f}.npz"``).
    monitor : str, default "val_loss"
        The logged number that decides "best".
    save_best_only : bool, default False
        Save only epochs that improve on the best so far.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; "auto": higher for names with "acc".

    Raises
    ------
    ValueError
        ``mode`` is unknown.
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        self.filepath = str(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self._better = _mode("ModelCheckpoint", monitor, mode)
        self.best: float | None = None
        self.saved: list[Path] = []

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Check, before any training, that the folder of ``filepath`` exists.

        Parameters
        ----------
        logs : dict of str to float, optional
            Empty (Keras passes its logs here; the Trainer has none yet).

        Raises
        ------
        FileNotFoundError
            The folder does not exist.
        """
        parent = Path(self.filepath).parent
        if not parent.is_dir():
            raise FileNotFoundError(f"ModelCheckpoint: directory {parent} does not exist")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        from ferrograd.saving import save

        logs = logs or {}
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            assert value is not None
            if math.isnan(value) or (self.best is not None and not self._better(value, self.best)):
                return
            self.best = value
        path = Path(self.filepath.format(epoch=epoch + 1, **logs))
        trainer = self.trainer
        self.saved.append(save(trainer.network, path, trainer=trainer))


# ----------------------------------------------------------------- learning rates


def inverse_time_decay(initial_lr: float, decay: float) -> Callable[[int], float]:
    """The schedule t ↦ initial_lr / (1 + decay·t): Keras' ``decay=`` argument.

    Parameters
    ----------
    initial_lr : float
        The rate at t = 0.
    decay : float
        Decay per iteration.

    Returns
    -------
    callable
        ``f(t)`` → the rate after t iterations; for
        ``LearningRateScheduler(..., per="iteration")``.
    """
    return lambda t: initial_lr / (1.0 + decay * t)


def step_decay(initial_lr: float, drop: float = 0.5, every: int = 10) -> Callable[[int], float]:
    """The schedule epoch ↦ initial_lr · drop^⌊epoch / every⌋.

    Parameters
    ----------
    initial_lr : float
        The rate of the first ``every`` epochs.
    drop : float, default 0.5
        Factor applied every ``every`` epochs.
    every : int, default 10
        Epochs between drops, > 0.

    Returns
    -------
    callable
        ``f(epoch)`` → the rate; for ``LearningRateScheduler(...)``.

    Raises
    ------
    ValueError
        ``every`` is not positive.
    """
    if every <= 0:
        raise ValueError(f"step_decay: every must be a positive int, got {every!r}")
    return lambda epoch: initial_lr * drop ** (epoch // every)


class LearningRateScheduler(Callback):
    """Set the learning rate from ``schedule`` before each epoch, or at every iteration.

    e.g. ``LearningRateScheduler(inverse_time_decay(0.01, 1e-4), per="iteration")``. On
    the fused path a per-iteration schedule reaches the native step as one rate per step.

    Parameters
    ----------
    schedule : callable
        ``f(n)`` → a positive rate: n is the epoch (from the trainer's ``initial_epoch``)
        or, with ``per="iteration"``, the global step (iterations done before the step,
        ``initial_iteration`` included).
    per : {"epoch", "iteration"}, default "epoch"
        What ``n`` counts.

    Raises
    ------
    ValueError
        ``per`` is unknown. During training: the schedule gives a rate that is not a
        positive finite number.
    """

    def __init__(self, schedule: Callable[[int], float], per: str = "epoch") -> None:
        if per not in ("epoch", "iteration"):
            raise ValueError(
                f"LearningRateScheduler: per must be 'epoch' or 'iteration', got {per!r}"
            )
        self.schedule = schedule
        self.per = per

    def _rate(self, n: int) -> float:
        lr = float(self.schedule(n))
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(
                f"LearningRateScheduler: the schedule gave lr={lr!r} at {self.per} {n}; "
                "expected a positive number"
            )
        return lr

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self.per == "epoch":
            self.trainer.optimizer.lr = self._rate(self.trainer.initial_epoch + epoch)

    def learning_rates(self, start: int, count: int) -> NDArray[np.float64] | None:
        if self.per != "iteration":
            return None
        return np.array([self._rate(t) for t in range(start, start + count)], dtype=np.float64)
