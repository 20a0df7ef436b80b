"""Random search over learning rate and weight decay (DLFS ch06/hyperparameter_optimization.py).

Each trial draws lr and λ log-uniformly, trains a fresh network for a few epochs on a
training subset and scores it on a validation split carved from the training set (never
on the test set). Trials run in parallel processes, one native thread each.

The worker processes are started fresh ("spawn") and do not run the caller's script
again: they need nothing from it (the trial function and its data come from here), and a
script written as the book writes its scripts, with no ``if __name__ == "__main__":``
guard, would otherwise start the search again in every worker.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["Trial", "random_search", "save_results", "split_validation"]


@dataclass(frozen=True)
class Trial:
    """One search trial: its hyperparameters and final accuracies.

    Attributes
    ----------
    index : int
        Trial number, from 0, in drawing order.
    lr : float
        Learning rate.
    weight_decay : float
        λ of the weight decay.
    val_acc : float
        Validation accuracy after the last epoch (NaN if none was measured).
    train_acc : float
        Training accuracy after the last epoch.
    seconds : float
        Wall time of the trial.
    """

    index: int
    lr: float
    weight_decay: float
    val_acc: float
    train_acc: float
    seconds: float


def split_validation(
    x: NDArray,
    t: NDArray,
    validation_ratio: float = 0.2,
    seed: int | np.random.Generator | None = None,
) -> tuple[tuple[NDArray, NDArray], tuple[NDArray, NDArray]]:
    """Shuffle (x, t) and split off the first ``validation_ratio`` as validation data (ch. 6).

    Parameters
    ----------
    x : numpy.ndarray, shape (N, ...)
        Inputs.
    t : numpy.ndarray, shape (N, ...)
        Targets, one per row of x.
    validation_ratio : float, default 0.2
        Fraction held out, in (0, 1).
    seed : int or numpy.random.Generator, optional
        As ``numpy.random.default_rng`` takes it; a Generator is drawn from.

    Returns
    -------
    (x_train, t_train), (x_val, t_val) : tuple of numpy.ndarray
        N − ⌊N·ratio⌋ and ⌊N·ratio⌋ rows.

    Raises
    ------
    ValueError
        ``validation_ratio`` is outside (0, 1), or leaves one part empty.
    """
    if not 0.0 < validation_ratio < 1.0:
        raise ValueError(
            f"split_validation: validation_ratio must be in (0, 1), got {validation_ratio}"
        )
    n = x.shape[0]
    n_val = int(n * validation_ratio)
    if n_val == 0 or n_val == n:
        raise ValueError(f"split_validation: {n} samples are too few for ratio {validation_ratio}")
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    return (x[train], t[train]), (x[val], t[val])


_DATA: dict[str, Any] = {}

# Held while ``__main__`` is swapped out: one swap at a time, across threads.
_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """``sys.modules["__main__"]`` replaced by an empty module for the duration: a process
    spawned meanwhile is told of no main script or module to run again (multiprocessing
    reads ``__main__.__file__`` and ``__spec__`` when it starts one)."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = main


class _WorkerProcess(SpawnProcess):
    """A spawned worker that starts without importing the caller's ``__main__``."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with _without_main():
            return SpawnProcess._Popen(process_obj)


class _WorkerContext(SpawnContext):
    """The spawn start method, with :class:`_WorkerProcess` workers."""

    Process = _WorkerProcess


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now (Ctrl-C): a trial already queued would otherwise run to
    its end, as each worker goes on to its next call after an interrupted one."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _worker_count(processes: int | None, trials: int) -> int:
    """Processes to start: ``processes`` (default: the CPU count), no more than trials;
    1 (this process) inside a daemonic process, which may not start any."""
    if processes is not None and (
        isinstance(processes, bool) or not isinstance(processes, int) or processes < 1
    ):
        raise ValueError(
            f"random_search: processes must be a positive int or None, got {processes!r}"
        )
    if multiprocessing.current_process().daemon:
        return 1
    return min(processes or os.cpu_count() or 1, trials)


def _init_worker(data: tuple[NDArray, NDArray, NDArray, NDArray]) -> None:
    # One native thread per process: the trials themselves are the parallelism.
    os.environ["FERROGRAD_NUM_THREADS"] = "1"
    _DATA["data"] = data


def _run_trial(args: tuple[int, float, float, dict[str, Any]]) -> Trial:
    index, lr, weight_decay, cfg = args
    from ferrograd.nets import MultiLayerNet
    from ferrograd.trainer import Trainer

    x_tr, t_tr, x_val, t_val = _DATA["data"]
    net = MultiLayerNet(
        input_size=x_tr.shape[1],
        hidden_size_list=cfg["hidden"],
        output_size=cfg["output_size"],
        activation=cfg["activation"],
        weight_init_std=cfg["weight_init"],
        weight_decay_lambda=weight_decay,
        seed=cfg["seed"] + index if cfg["seed"] is not None else None,
        dtype=cfg["dtype"],
    )
    start = time.perf_counter()
    trainer = Trainer(
        net,
        x_tr,
        t_tr,
        x_val,
        t_val,
        epochs=cfg["epochs"],
        mini_batch_size=cfg["batch_size"],
        optimizer=cfg["optimizer"],
        optimizer_param={"lr": lr},
        seed=cfg["seed"] + index if cfg["seed"] is not None else None,
        verbose=False,
    )
    hist = trainer.train()
    return Trial(
        index=index,
        lr=lr,
        weight_decay=weight_decay,
        val_acc=hist.test_acc[-1] if hist.test_acc else float("nan"),
        train_acc=hist.train_acc[-1] if hist.train_acc else float("nan"),
        seconds=time.perf_counter() - start,
    )


def _check_config(cfg: dict[str, Any], input_size: int, lr: float) -> None:
    """Build a trial's net and optimizer once here: a mistake in them is one error from
    this process, not one per worker after the pool has started."""
    from ferrograd.nets import MultiLayerNet
    from ferrograd.optimizers import get_optimizer

    batch = cfg["batch_size"]
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch <= 0:
        raise ValueError(f"random_search: batch_size must be a positive int, got {batch!r}")
    MultiLayerNet(
        input_size=input_size,
        hidden_size_list=cfg["hidden"],
        output_size=cfg["output_size"],
        activation=cfg["activation"],
        weight_init_std=cfg["weight_init"],
        seed=0,
        dtype=cfg["dtype"],
    )
    get_optimizer(cfg["optimizer"], lr=lr)


def random_search(
    x_train: NDArray,
    t_train: NDArray,
    *,
    trials: int = 20,
    epochs: int = 20,
    train_size: int | None = 500,
    validation_ratio: float = 0.2,
    lr_range: tuple[float, float] = (1e-6, 1e-2),
    weight_decay_range: tuple[float, float] = (1e-8, 1e-4),
    hidden: Sequence[int] = (100, 100, 100, 100, 100, 100),
    activation: str = "relu",
    weight_init: str | float = "relu",
    optimizer: str = "sgd",
    batch_size: int = 100,
    dtype: DTypeLike = np.float64,
    processes: int | None = None,
    seed: int | None = None,
    on_result: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Random search over lr and weight decay, as the book's hyperparameter_optimization.py.

    Each trial draws lr = 10^U(log lr_range) and λ = 10^U(log weight_decay_range), trains a
    fresh MultiLayerNet for ``epochs`` epochs and scores it on the validation split. The
    book's setting by default: the first 500 training samples, 20 % of them for validation,
    a 6×100 ReLU net with SGD. Safe to call at the top level of a script without an
    ``if __name__ == "__main__":`` guard (as the book writes its scripts): the worker
    processes do not run the script again.

    Parameters
    ----------
    x_train : numpy.ndarray, shape (N, D)
        Training inputs (the test set is never used); images (N, 1, 28, 28) are
        flattened as the nets do.
    t_train : numpy.ndarray
        Labels (N,) or one-hot rows (N, K).
    trials : int, default 20
        Trials to run, > 0.
    epochs : int, default 20
        Epochs per trial, > 0.
    train_size : int or None, default 500
        Use the first this many samples (None: all).
    validation_ratio : float, default 0.2
        Fraction of them held out for validation.
    lr_range, weight_decay_range : tuple of float
        (low, high) of the log-uniform draws, 0 < low <= high.
    hidden : sequence of int, default six 100s
        Hidden layer widths.
    activation : str, default "relu"
        Hidden activation.
    weight_init : str or float, default "relu"
        The nets' ``weight_init_std``.
    optimizer : str, default "sgd"
        Optimizer name (``lr`` is the drawn one).
    batch_size : int, default 100
        Mini-batch size.
    dtype : dtype_like, default float64
        The nets' dtype.
    processes : int, optional
        Worker processes (one native thread each), no more than ``trials``; default one
        per core; 1 runs in this process, without a pool, as does a call from a daemonic
        process (a ``multiprocessing.Pool`` worker).
    seed : int, optional
        Seed of the split, the draws and each trial's net (seed + index); None: not
        reproducible.
    on_result : callable, optional
        Called with each Trial as it finishes.

    Returns
    -------
    list of Trial
        Best validation accuracy first.

    Raises
    ------
    ValueError
        ``trials``, ``epochs``, ``train_size``, ``batch_size`` or ``processes`` is not a
        positive int, a range is not 0 < low <= high, x and t differ in rows, or the net
        or optimizer cannot be made (all checked before any worker starts).
    """
    for name, value in (("trials", trials), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"random_search: {name} must be a positive int, got {value!r}")
    if train_size is not None and (
        isinstance(train_size, bool)
        or not isinstance(train_size, (int, np.integer))
        or train_size <= 0
    ):
        raise ValueError(
            f"random_search: train_size must be a positive int (the first samples used) or "
            f"None (all of them), got {train_size!r}"
        )
    for name, (lo, hi) in (("lr_range", lr_range), ("weight_decay_range", weight_decay_range)):
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"random_search: {name} must be 0 < low <= high, got {(lo, hi)}")
    workers = _worker_count(processes, trials)
    x_all, t_all = np.asarray(x_train), np.asarray(t_train)
    if x_all.ndim < 2 or t_all.ndim not in (1, 2) or x_all.shape[0] != t_all.shape[0]:
        raise ValueError(
            f"random_search: x_train (n, ...) and t_train (n,) or (n, k) must have as many "
            f"rows, got shapes {x_all.shape} and {t_all.shape}"
        )
    # Images (n, 1, 28, 28) as rows of 784, as the nets flatten them.
    x = x_all[:train_size].reshape(min(train_size or len(x_all), len(x_all)), -1)
    t = t_all[:train_size]
    (x_tr, t_tr), (x_val, t_val) = split_validation(x, t, validation_ratio, seed)
    rng = np.random.default_rng(seed)
    lrs = 10 ** rng.uniform(np.log10(lr_range[0]), np.log10(lr_range[1]), trials)
    wds = 10 ** rng.uniform(
        np.log10(weight_decay_range[0]), np.log10(weight_decay_range[1]), trials
    )
    output_size = int(t.shape[1]) if t.ndim == 2 else int(t.max()) + 1
    cfg = {
        "hidden": list(hidden),
        "activation": activation,
        "weight_init": weight_init,
        "optimizer": optimizer,
        "batch_size": batch_size,
        "epochs": epochs,
        "dtype": np.dtype(dtype).name,
        "seed": seed,
        "output_size": max(output_size, 10),
    }
    _check_config(cfg, x_tr.shape[1], float(lrs[0]))
    jobs = [(i, float(lrs[i]), float(wds[i]), cfg) for i in range(trials)]
    data = (x_tr, t_tr, x_val, t_val)
    results: list[Trial] = []
    if workers == 1:
        saved = dict(_DATA)
        _DATA["data"] = data
        try:
            for job in jobs:
                results.append(_run_trial(job))
                if on_result:
                    on_result(results[-1])
        finally:
            _DATA.clear()
            _DATA.update(saved)
    else:
        from ferrograd.trainer import _catch_sigterm, _restore_sigterm, _Terminated

        old_handler = _catch_sigterm()  # SIGTERM, as Ctrl-C, ends the workers too
        try:
            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=_WorkerContext(),
                initializer=_init_worker,
                initargs=(data,),
            ) as pool:
                try:
                    for trial in pool.map(_run_trial, jobs):
                        results.append(trial)
                        if on_result:
                            on_result(trial)
                except BaseException:
                    _stop_workers(pool)
                    raise
        except _Terminated:
            _restore_sigterm(old_handler)
            old_handler = None
            os.kill(os.getpid(), signal.SIGTERM)  # the workers are gone: now die of it
            raise
        finally:
            _restore_sigterm(old_handler)
    return sorted(results, key=lambda r: (-np.nan_to_num(r.val_acc, nan=-1.0), r.index))


def format_ranking(results: Sequence[Trial], top: int | None = None) -> str:
    """The ranking as text: rank, validation accuracy, lr and weight decay."""
    lines = ["rank | val acc | train acc |       lr | weight decay | trial"]
    for rank, r in enumerate(results[:top] if top else results, start=1):
        lines.append(
            f"{rank:>4} | {r.val_acc:7.4f} | {r.train_acc:9.4f} | {r.lr:8.2e} | "
            f"{r.weight_decay:12.2e} | {r.index:>5}"
        )
    return "\n".join(lines)


def save_results(results: Sequence[Trial], path: str | os.PathLike[str]) -> Path:
    """Write the ranking (best first) as CSV, or JSON when ``path`` ends in ``.json``; atomically.

    Parameters
    ----------
    results : sequence of Trial
        As :func:`random_search` returns them.
    path : str or path-like
        The file (``-`` is standard output).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    rows = [{"rank": i, **asdict(r)} for i, r in enumerate(results, start=1)]
    if path.suffix == ".json":
        text = json.dumps(rows, indent=1)
    else:
        buf = io.StringIO()
        fields = ["rank", *Trial.__dataclass_fields__]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    from ferrograd.trainer import _atomic_write

    _atomic_write(path, text.encode())
    return path
