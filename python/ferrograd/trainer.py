"""Mini-batch training of a network on (x, t) with a History of loss and accuracy.

The loop is the book's (DLFS ch04/train_neuralnet.py and common/trainer.py): each
iteration draws ``mini_batch_size`` random indices with replacement, computes the
gradient (backprop or numerical), updates ``network.params`` in place, and records the
mini-batch loss (at the parameters before the update: the fused step gets it from its
forward pass for free; the book evaluates it once more after the update); every epoch (max(train_size / batch_size, 1) iterations) it records the epoch's mean
loss, train accuracy and the validation and test accuracy and loss, then calls the
callbacks (:mod:`ferrograd.callbacks`). With backprop, a network and optimizer that ``ferrograd.fused``
supports run one native call per epoch instead of a Python loop; both paths draw the
same mini-batches from the same seeded Generator.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd._random import GlobalGenerator, make_rng

__all__ = ["History", "Network", "Trainer", "load_params", "save_params"]

_EVAL_CHUNK = 10_000  # rows per forward pass when measuring accuracy (bounds memory)
# Iterations per native call: progress updates and Ctrl-C land between calls, and an
# interrupted call loses at most this many loss records (its steps stay applied).
_FUSED_CHUNK = 100


class Network(Protocol):
    """What :class:`Trainer` trains: the book's network interface.

    ``params`` maps names to the parameter arrays, which the optimizer updates in place;
    ``gradient`` (backprop) and ``numerical_gradient`` return arrays under the same names.
    ``TwoLayerNet``, ``MultiLayerNet`` and ``SoftmaxRegression`` are networks.
    """

    @property
    def params(self) -> Mapping[str, NDArray[Any]]:
        """Parameter name (W1, b1, …) → array, updated in place by the optimizer."""
        ...

    def loss(self, x: Any, t: Any) -> float:
        """Mean loss of a mini-batch.

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs.
        t : array_like
            Targets: labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            Mean loss per sample.
        """
        ...

    def accuracy(self, x: Any, t: Any) -> float:
        """Fraction of samples classified correctly.

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs.
        t : array_like
            Targets: labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            In [0, 1].
        """
        ...

    def gradient(self, x: Any, t: Any) -> Mapping[str, NDArray[Any]]:
        """∂loss/∂params by backprop.

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs.
        t : array_like
            Targets: labels (N,) or one-hot rows (N, K).

        Returns
        -------
        Mapping of str to numpy.ndarray
            One array per ``params`` key, of that parameter's shape.
        """
        ...

    def numerical_gradient(self, x: Any, t: Any) -> Mapping[str, NDArray[Any]]:
        """∂loss/∂params by central differences (``Trainer(gradient="numerical")``).

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs.
        t : array_like
            Targets: labels (N,) or one-hot rows (N, K).

        Returns
        -------
        Mapping of str to numpy.ndarray
            One array per ``params`` key, of that parameter's shape.
        """
        ...


@dataclass
class History:
    """What a training run did: loss per iteration, accuracies, losses and seconds per epoch.

    ``Trainer.train`` fills it; ``history.history`` is the Keras dict of the per-epoch
    lists.

    Attributes
    ----------
    train_loss : list of float
        Mini-batch loss of every iteration (the book's ``train_loss_list``).
    train_acc : list of float
        Training accuracy after each epoch (the book's ``train_acc_list``).
    test_acc : list of float
        Test accuracy after each epoch (the book's ``test_acc_list``), when there is a test
        set.
    epoch_seconds : list of float
        Training time of each epoch (evaluation not included).
    epoch_iterations : list of int
        Iterations of each epoch (the last may be partial).
    iterations : int
        Iterations done.
    interrupted : bool
        Ctrl-C stopped the run.
    fused : bool
        The run used the fused native step (whole epochs in one call).
    epoch_loss : list of float
        Mean training (mini-batch) loss of each epoch: Keras' ``loss``.
    val_acc, val_loss : list of float
        Validation accuracy and loss after each epoch, when there is validation data.
    test_loss : list of float
        Test loss after each epoch, when there is a test set.
    lr : list of float
        The learning rate of each epoch's last step.
    stopped_early : bool
        A callback or a diverged loss stopped the run (``trainer.stop_training``).
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_iterations: list[int] = field(default_factory=list)
    iterations: int = 0
    interrupted: bool = False
    fused: bool = False
    epoch_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        """Epochs evaluated (the last may be partial when ``iters`` is not a multiple)."""
        return len(self.epoch_seconds)

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras' ``History.history``: per-epoch lists under ``loss``, ``accuracy``,
        ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy``, ``lr``,
        ``seconds`` (only those measured)."""
        pairs = (
            ("loss", self.epoch_loss),
            ("accuracy", self.train_acc),
            ("val_loss", self.val_loss),
            ("val_accuracy", self.val_acc),
            ("test_loss", self.test_loss),
            ("test_accuracy", self.test_acc),
            ("lr", self.lr),
            ("seconds", self.epoch_seconds),
        )
        return {key: list(values) for key, values in pairs if values}

    @property
    def seconds(self) -> float:
        """Training time of all epochs, in seconds."""
        return float(sum(self.epoch_seconds))

    def __repr__(self) -> str:
        if not self.iterations:
            return "History(no iterations yet)"
        last = f", train acc {self.train_acc[-1]:.4f}" if self.train_acc else ""
        if self.val_acc:
            last += f", val acc {self.val_acc[-1]:.4f}"
        if self.test_acc:
            last += f", test acc {self.test_acc[-1]:.4f}"
        losses = self.epoch_loss or self.train_loss
        loss = f", loss {losses[-1]:.4f}" if losses else ""
        stop = ", interrupted" if self.interrupted else ""
        stop += ", stopped early" if self.stopped_early else ""
        return (
            f"History({self.epochs} epochs, {self.iterations} iterations{last}{loss}, "
            f"{self.seconds:.2f} s{stop})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``epochs`` and ``seconds``, as plain Python lists and numbers.

        Returns
        -------
        dict of str to object
            JSON-able apart from NaN/infinite losses (:meth:`save_json` writes them as null).
        """
        return {**asdict(self), "epochs": self.epochs, "seconds": self.seconds}

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON, atomically; NaN and infinities become null.

        Parameters
        ----------
        path : str or path-like
            The file to write (``-`` is standard output).
        """
        text = json.dumps(_json_ready(self.to_dict()), indent=1, allow_nan=False)
        _atomic_write(Path(path), text.encode())


def _json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinity as None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


class _Terminated(BaseException):
    """SIGTERM arrived during an atomic write: clean up, then die of SIGTERM."""


def _atomic_write(path: Path, data: bytes | Callable[[Any], None]) -> None:
    """Write ``data`` to ``path`` so readers never see half a file.

    A regular file (or a new one) is written to a temp file beside it, then os.replace'd,
    with the permissions the umask gives (an existing file keeps its own); a symlink is
    written through to its target; a device or FIFO (``/dev/null``, ``/dev/stdout``) is
    written directly; ``-`` is standard output. An interruption (Ctrl-C, SIGTERM) leaves
    no temp file behind.
    """
    write = (lambda fh: fh.write(data)) if isinstance(data, bytes) else data
    if str(path) == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    else:
        if not stat.S_ISREG(st.st_mode):  # a device or FIFO: there is nothing to replace
            with open(path, "wb") as fh:
                write(fh)
            return
        mode = stat.S_IMODE(st.st_mode)
    path = Path(os.path.realpath(path))  # through symlinks: replace the target, not the link
    old_handler = _catch_sigterm()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _restore_sigterm(old_handler)
        if isinstance(exc, _Terminated):  # cleaned up: now die of SIGTERM as asked
            os.kill(os.getpid(), signal.SIGTERM)
        raise
    _restore_sigterm(old_handler)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _catch_sigterm() -> Any:
    """Turn SIGTERM into an exception while cleanup is due (a temp file exists, worker
    processes run), in the main thread and when no handler is set; the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def raise_terminated(signum: int, frame: Any) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    return signal.SIG_DFL


def _restore_sigterm(old: Any) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


def save_params(network: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``network.params`` to an ``.npz`` file, atomically (temp file + os.replace).

    Parameters only, under their own names: ``ferrograd.save`` also keeps the architecture,
    batch norm's running statistics and the training state.

    Parameters
    ----------
    network : network
        Any object with a ``params`` dict of arrays.
    path : str or path-like
        Where to write; ``.npz`` is appended when missing (not to ``-``, stdout, or a
        device).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    path = Path(path)
    special = str(path) == "-" or (path.exists() and not path.is_file())  # stdout, a device
    if path.suffix != ".npz" and not special:
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save_params: directory {path.parent} does not exist")
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in network.params.items()}
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def load_params(network: Any, path: str | os.PathLike[str]) -> None:
    """Copy parameters saved by :func:`save_params` or ``ferrograd.save`` into ``network.params``.

    Arrays are copied into the existing ones, so layers that share them see the new values.
    Pickles are never loaded.

    Parameters
    ----------
    network : network
        Any object with a ``params`` dict of writeable arrays.
    path : str or path-like
        A file of :func:`save_params` or :func:`ferrograd.save`.

    Raises
    ------
    ValueError
        The file is not such an archive, or does not hold exactly the network's keys with
        their shapes and dtypes, or a parameter is read-only.
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    params = network.params
    for key, p in params.items():
        if isinstance(p, np.ndarray) and not p.flags.writeable:
            raise ValueError(
                f"load_params: the network's parameter {key} is read-only; the saved values "
                "are copied into it (make it writeable, e.g. params[key] = params[key].copy())"
            )
    from ferrograd.datasets import open_regular
    from ferrograd.saving import META_KEY, load

    with open_regular(path, "a .npz file of save_params") as fh:
        with contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(fh) as zf:
            if f"{META_KEY}.npy" in zf.namelist():
                # a file of ferrograd.save: checked against the architecture too
                load(path, model=network)
                return
    try:
        with open_regular(path, "a .npz file of save_params") as fh:
            saved = _read_npz(fh, path, params)
    except (EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"load_params: {path} is not a file of save_params ({exc})") from exc
    for key, arr in saved.items():
        np.copyto(params[key], arr)


def _read_npz(fh: Any, path: Path, params: Mapping[str, Any]) -> dict[str, NDArray]:
    """The arrays of an .npz archive whose member names, shapes and dtypes (from each
    .npy header, before any data is inflated) are exactly those of ``params``. A
    byte order other than the machine's is accepted; it is converted on copying."""
    bad = f"load_params: {path} is not a file of save_params"
    start = fh.read(6)
    fh.seek(0)
    if start == b"\x93NUMPY":
        raise ValueError(f"{bad} (a single array, not an .npz archive)")
    if start[:1] == b"\x80":
        raise ValueError(f"{bad} (a pickle; load_params never unpickles)")
    with zipfile.ZipFile(fh) as zf:
        members = zf.infolist()
        names = [m.filename for m in members]
        odd = [n for n in names if not n.endswith(".npy")]
        if odd:
            raise ValueError(f"{bad}: member {odd[0]!r} is not .npy data")
        keys = [n[: -len(".npy")] for n in names]
        if sorted(keys) != sorted(params):
            raise ValueError(
                f"load_params: {path} holds parameters {sorted(keys)} but the network has "
                f"{sorted(params)}"
            )
        headers = {}
        for key, member in zip(keys, members, strict=True):
            with zf.open(member) as m:
                try:
                    version = np.lib.format.read_magic(m)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(m)
                except ValueError as exc:
                    raise ValueError(f"{bad}: {key} has no valid .npy header ({exc})") from exc
            p = np.asarray(params[key])
            if dtype.hasobject:
                raise ValueError(f"{bad}: {key} holds Python objects (a pickle; never loaded)")
            if tuple(shape) != p.shape or dtype.newbyteorder("=") != p.dtype.newbyteorder("="):
                raise ValueError(
                    f"load_params: {path}: {key} is {dtype}{list(shape)} but the network's "
                    f"is {p.dtype}{list(p.shape)}"
                )
            headers[key] = member
        saved = {}
        for key, member in headers.items():
            with zf.open(member) as m:
                try:
                    saved[key] = np.lib.format.read_array(m, allow_pickle=False)
                except ValueError as exc:
                    raise ValueError(f"{bad}: {key} ({exc})") from exc
        return saved


def _label_vector(t: ArrayLike) -> NDArray:
    arr = np.asarray(t)
    return np.argmax(arr, axis=1) if arr.ndim == 2 else arr


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is no tty but a bar still shows)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        # the notebook widget in Jupyter, the text bar in a terminal
        from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    return tqdm(total=total, unit="it", leave=False, dynamic_ncols=True)


class Trainer:
    """Train ``network`` with mini-batch gradient descent; :meth:`train` returns a History.

    ``optimizer`` is a name for ``ferrograd.optimizers.get_optimizer`` (with
    ``optimizer_param``, e.g. ``{"lr": 0.1}``) or an object with ``update(params, grads)``.
    ``iters`` sets the number of iterations (the book's ``iters_num``) and overrides
    ``epochs``. ``evaluate_sample_num_per_epoch`` limits the per-epoch accuracy to the
    first N train and test samples (the book's Trainer); the final test accuracy always
    uses the whole test set. With ``verbose``, ``log`` gets one line every ``log_every``
    epochs and after the last.

    ``log_format="book"`` logs as the book's Trainer (DLFS common/trainer.py) does:
    ``train loss:…`` per iteration, ``=== epoch:…, train acc:…, test acc:… ===`` per epoch
    and a final test accuracy block. With ``seed=None`` mini-batches (and the network's
    dropout masks) come from NumPy's global generator, one draw per iteration as the
    book's ``np.random.choice``; ``train_loss_list``, ``train_acc_list`` and
    ``test_acc_list`` are the book's names for the History lists.

    The test set is optional. Per epoch the History records the mean training loss,
    train accuracy, validation and test accuracy and loss, the learning rate and the
    seconds; ``history.history`` is the Keras dict of them.

    Parameters
    ----------
    network
        The network to train (a :class:`Network`); its ``params`` are updated in place.
    x_train, t_train, x_test, t_test
        Inputs (n, d) and targets (labels (n,) or one-hot (n, k)); inputs are converted
        once to the parameters' dtype.
    epochs
        Epochs to run when ``iters`` is not given.
    mini_batch_size
        Samples per iteration, drawn at random with replacement.
    optimizer, optimizer_param
        An optimizer name (sgd, momentum, nesterov, adagrad, rmsprop, adam) with its
        hyperparameters, or an object with ``update(params, grads)``.
    evaluate_sample_num_per_epoch
        Measure the per-epoch accuracies on the first N samples only.
    gradient
        "backprop" or "numerical" (central differences; slow).
    seed
        Seed of the mini-batch draws (None: NumPy's global generator, as the book), or a
        Generator to draw from (``load_checkpoint(path).rng`` resumes a saved run).
    verbose
        Report one line per epoch through ``log``.
    iters
        Iterations to run (the book's ``iters_num``); overrides ``epochs``.
    use_fused
        Force (True) or forbid (False) whole epochs in one native call; default: when
        the network and optimizer support it.
    log
        Where report lines go (default: ``print``).
    progress
        Show a tqdm progress bar; default: with ``verbose`` on a terminal or in a notebook.
    log_format
        "ferrograd" (one line per epoch) or "book" (the book's Trainer's lines).
    log_every
        Report every Nth epoch and the last.
    callbacks
        :mod:`ferrograd.callbacks` objects (``on_train_begin``, ``on_epoch_begin``,
        ``on_epoch_end``, ``on_train_end``) or callables ``fn(epoch, logs)`` called after
        each epoch, on the fused path as on the Python loop.
    validation_split, validation_data
        Hold out that fraction of the training set (shuffled with ``seed`` first, as the
        book's chapter 6 does) or evaluate on the given (x_val, t_val) every epoch.
    shuffle
        Keras' epochs: each epoch visits a fresh permutation of the training set in
        mini-batches, without replacement (``n mod mini_batch_size`` samples wait for the
        next epoch); default: the book's independent draws with replacement.
    initial_epoch, initial_iteration
        Epochs and iterations done before (a resumed run): schedules count on from them.
    stop_on_nan
        When the loss becomes NaN or infinite (the run diverged: lower the learning
        rate), warn and stop after that epoch's steps, as Keras' TerminateOnNaN does
        (default). False: warn once and go on, on the NumPy path, whose IEEE
        arithmetic the compressed-input kernels do not share for non-finite weights.

    Raises
    ------
    ValueError
        An option is out of range (sizes, ``gradient``, ``log_format``, the validation
        options), only one of x_test/t_test is given, or x and t differ in rows.
    TypeError
        ``network`` has no ``params`` dict, or the data are not real numbers.
    """

    def __init__(
        self,
        network: Network,
        x_train: ArrayLike,
        t_train: ArrayLike,
        x_test: ArrayLike | None = None,
        t_test: ArrayLike | None = None,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str | Any = "sgd",
        optimizer_param: Mapping[str, float] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        gradient: str = "backprop",
        seed: int | np.random.Generator | None = None,
        verbose: bool = True,
        iters: int | None = None,
        *,
        use_fused: bool | None = None,
        log: Callable[[str], None] | None = None,
        progress: bool | None = None,
        log_format: str = "ferrograd",
        log_every: int = 1,
        callbacks: Sequence[Any] | None = None,
        validation_split: float | None = None,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        shuffle: bool = False,
        initial_epoch: int = 0,
        initial_iteration: int = 0,
        stop_on_nan: bool = True,
    ) -> None:
        if log_format not in ("ferrograd", "book"):
            raise ValueError(
                f"Trainer: log_format must be 'ferrograd' or 'book', got {log_format!r}"
            )
        self.log_format = log_format
        self.network: Network = network
        params = getattr(network, "params", None)
        if not isinstance(params, Mapping) or not params:
            raise TypeError(f"Trainer: network {type(network).__name__} has no params dict")
        # Inputs in the parameters' dtype, converted once here, not on every mini-batch.
        self.dtype = np.result_type(*params.values())
        self.x_train, self.t_train = self._data("train", x_train, t_train)
        if (x_test is None) != (t_test is None):
            raise ValueError("Trainer: pass both x_test and t_test, or neither")
        self.x_test: NDArray | None = None
        self.t_test: NDArray | None = None
        if x_test is not None:
            self.x_test, self.t_test = self._data("test", x_test, t_test)
        if validation_split is not None and validation_data is not None:
            raise ValueError("Trainer: pass validation_split or validation_data, not both")
        self.x_val: NDArray | None = None
        self.t_val: NDArray | None = None
        if validation_split is not None:
            from ferrograd.search import split_validation

            # the book's ch06: shuffle the training set (np.random.permutation for seed
            # None), the first part validates
            (x_fit, t_fit), (x_val, t_val) = split_validation(
                self.x_train, self.t_train, float(validation_split), seed=make_rng(seed)
            )
            self.x_train, self.t_train = x_fit, t_fit
            self.x_val, self.t_val = x_val, t_val
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("Trainer: validation_data must be a pair (x_val, t_val)")
            self.x_val, self.t_val = self._data("val", *validation_data)
        self.shuffle = bool(shuffle)
        for name, value in (
            ("initial_epoch", initial_epoch),
            ("initial_iteration", initial_iteration),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"Trainer: {name} must be an int >= 0, got {value!r}")
        self.initial_epoch = int(initial_epoch)
        self.initial_iteration = int(initial_iteration)
        if gradient not in ("backprop", "numerical"):
            raise ValueError(
                f"Trainer: gradient must be 'backprop' or 'numerical', got {gradient!r}"
            )
        for name, value in (
            ("epochs", epochs),
            ("mini_batch_size", mini_batch_size),
            ("log_every", log_every),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"Trainer: {name} must be a positive int, got {value!r}")
        if iters is not None and (isinstance(iters, bool) or int(iters) != iters or iters <= 0):
            raise ValueError(f"Trainer: iters must be a positive int, got {iters!r}")
        self.gradient = gradient
        self.batch_size = int(mini_batch_size)
        train_size = self.x_train.shape[0]
        # The book's epoch: train_size / batch_size iterations (600 for MNIST at 100).
        self.iter_per_epoch = max(int(train_size / self.batch_size), 1)
        self.max_iter = int(iters) if iters is not None else int(epochs) * self.iter_per_epoch
        if evaluate_sample_num_per_epoch is not None and (
            isinstance(evaluate_sample_num_per_epoch, bool)
            or not isinstance(evaluate_sample_num_per_epoch, (int, np.integer))
            or evaluate_sample_num_per_epoch <= 0
        ):
            raise ValueError(
                "Trainer: evaluate_sample_num_per_epoch must be a positive int (or None for "
                f"every sample), got {evaluate_sample_num_per_epoch!r}"
            )
        self.evaluate_sample_num = evaluate_sample_num_per_epoch
        self.stop_on_nan = bool(stop_on_nan)
        self._warned_nan = False
        if isinstance(optimizer, str):
            from ferrograd.optimizers import get_optimizer

            self.optimizer = get_optimizer(optimizer, **dict(optimizer_param or {}))
        else:
            if optimizer_param:
                raise ValueError("Trainer: optimizer_param only applies to an optimizer name")
            self.optimizer = optimizer
        self.rng = make_rng(seed)
        self.verbose = verbose
        self.log = log if log is not None else print
        self.log_every = log_every
        if progress is None:
            progress = (
                verbose and log_format == "ferrograd" and (sys.stderr.isatty() or _in_notebook())
            )
        self.progress = progress
        self.use_fused = use_fused
        self._fused_trainer: Any | None = None
        self.history = History()
        from ferrograd.callbacks import as_callback

        self.callbacks = [as_callback(cb) for cb in (callbacks or ())]
        self.stop_training = False

    @property
    def train_loss_list(self) -> list[float]:
        """The book's name for ``history.train_loss`` (one loss per iteration)."""
        return self.history.train_loss

    @property
    def train_acc_list(self) -> list[float]:
        """The book's name for ``history.train_acc`` (one accuracy per epoch)."""
        return self.history.train_acc

    @property
    def test_acc_list(self) -> list[float]:
        """The book's name for ``history.test_acc`` (one accuracy per epoch)."""
        return self.history.test_acc

    def __repr__(self) -> str:
        opt = type(self.optimizer).__name__
        return (
            f"Trainer({type(self.network).__name__}, {opt}(lr={getattr(self.optimizer, 'lr', '?')}), "
            f"batch {self.batch_size}, {self.max_iter} iterations, "
            f"{self.x_train.shape[0]} train"
            + (f" / {self.x_val.shape[0]} val" if self.x_val is not None else "")
            + (f" / {self.x_test.shape[0]} test" if self.x_test is not None else "")
            + ", "
            f"done {self.history.iterations})"
        )

    def _data(self, split: str, x: ArrayLike, t: ArrayLike) -> tuple[NDArray, NDArray]:
        from ferrograd.functions import refuse_masked

        refuse_masked(x, f"Trainer: x_{split}")
        refuse_masked(t, f"Trainer: t_{split}")
        for name, arr in ((f"x_{split}", np.asarray(x)), (f"t_{split}", np.asarray(t))):
            if arr.dtype.kind not in "biuf":  # complex would lose its imaginary part
                raise TypeError(f"Trainer: {name} has dtype {arr.dtype}; expected real numbers")
        x_arr = np.ascontiguousarray(x, dtype=self.dtype)
        t_arr = np.asarray(t)
        if t_arr.ndim == 1 and t_arr.dtype.kind in "iu":
            # (a uint64 beyond int64 stays as it is, for the label check to name it)
            if t_arr.dtype.kind == "i" or t_arr.max(initial=0) <= np.iinfo(np.int64).max:
                t_arr = t_arr.astype(np.int64)
        if x_arr.ndim < 2 or x_arr.shape[0] == 0:
            raise ValueError(f"Trainer: x_{split} has shape {x_arr.shape}; expected (n, ...)")
        if t_arr.shape[:1] != x_arr.shape[:1]:
            raise ValueError(
                f"Trainer: x_{split} has {x_arr.shape[0]} rows but t_{split} has shape "
                f"{t_arr.shape}"
            )
        return x_arr, t_arr

    # ----------------------------------------------------------------- evaluation

    def _accuracy(self, x: NDArray, t: NDArray, limit: int | None = None) -> float:
        if limit is not None:
            x, t = x[:limit], t[:limit]
        if self._fused_trainer is not None:
            # the native accuracy runs in batches itself: one call, no large temporaries
            return float(self._fused_trainer.accuracy(x, t))
        accuracy = self.network.accuracy
        n = x.shape[0]
        correct = 0.0
        for start in range(0, n, _EVAL_CHUNK):
            xs, ts = x[start : start + _EVAL_CHUNK], t[start : start + _EVAL_CHUNK]
            correct += accuracy(xs, ts) * xs.shape[0]
        return correct / n

    def _fused(self) -> Any | None:
        """A FusedTrainer when backprop is asked for and the native step supports the pair."""
        if self.gradient != "backprop" or self.use_fused is False:
            return None
        try:
            fused = importlib.import_module("ferrograd.fused")
        except ImportError:
            if self.use_fused:
                raise
            return None
        if not fused.supports(self.network, self.optimizer):
            if self.use_fused:
                raise ValueError(
                    f"Trainer: the fused step does not support {type(self.network).__name__} "
                    f"with {type(self.optimizer).__name__}"
                )
            return None
        return fused.FusedTrainer(self.network, self.optimizer)

    def _step(self, idx: NDArray[np.int64]) -> float:
        """One iteration of the book's loop: loss and gradient of the mini-batch, update."""
        x_batch, t_batch = self.x_train[idx], self.t_train[idx]
        net = self.network
        # The loss at the parameters the step starts from, as the fused step computes it
        # in its forward pass (the book evaluates it again after the update).
        if self.gradient == "backprop" and hasattr(net, "loss_and_gradient"):
            # The convolutional nets give both from one forward pass.
            loss, grads = net.loss_and_gradient(x_batch, t_batch)
            loss = float(loss)
        elif self.gradient == "numerical":
            loss = float(net.loss(x_batch, t_batch))
            grads = net.numerical_gradient(x_batch, t_batch)
        else:
            loss = float(net.loss(x_batch, t_batch))
            grads = net.gradient(x_batch, t_batch)
        self.optimizer.update(net.params, grads)
        return loss

    # ----------------------------------------------------------------- training

    def _step_rates(self, count: int) -> NDArray[np.float64] | None:
        """The callbacks' learning rates for the next ``count`` steps (None: optimizer.lr)."""
        start = self.initial_iteration + self.history.iterations
        rates = None
        for cb in self.callbacks:
            r = cb.learning_rates(start, count)
            if r is not None:
                rates = np.ascontiguousarray(r, dtype=np.float64)
                if rates.shape != (count,):
                    raise ValueError(
                        f"Trainer: {type(cb).__name__}.learning_rates gave shape {rates.shape} "
                        f"for {count} steps"
                    )
        return rates

    def _batches(self, todo: int, n_train: int) -> NDArray[np.int64]:
        """The epoch's index matrix (todo, batch_size)."""
        if self.shuffle:
            # Keras' epochs: a permutation, so no sample repeats within the epoch; the
            # n mod batch_size samples left over sit this epoch out
            order = self.rng.permutation(n_train)[: todo * self.batch_size]
            return np.asarray(order, dtype=np.int64).reshape(todo, self.batch_size)
        # np.random.choice(train_size, batch_size) per iteration, as the book.
        return self.rng.integers(0, n_train, size=(todo, self.batch_size))

    def train(self) -> History:
        """Run the remaining iterations; Ctrl-C ends the run, keeping the steps done.

        Returns
        -------
        History
            ``self.history``, with ``interrupted`` set when Ctrl-C stopped the run.

        Raises
        ------
        ValueError
            A callback's monitored name is not measured, or a schedule gives a bad rate.
        """
        hist = self.history
        fused = self._fused_trainer = self._fused()
        hist.fused = fused is not None
        n_train = self.x_train.shape[0]
        n_epochs = math.ceil(self.max_iter / self.iter_per_epoch)
        bar = _progress_bar(self.max_iter, self.progress)
        say = bar.write if bar is not None else self.log
        book_log = self.verbose and self.log_format == "book"
        # The global generator also feeds dropout masks: draw each batch just before its
        # step, in the book's order. Nothing else draws on the fused path.
        per_step = fused is None and isinstance(self.rng, GlobalGenerator) and not self.shuffle
        self.stop_training = False
        for cb in self.callbacks:
            cb.set_trainer(self)
        try:
            for cb in self.callbacks:
                cb.on_train_begin({})
            for epoch in range(n_epochs):
                for cb in self.callbacks:
                    cb.on_epoch_begin(epoch, {})
                todo = min(self.iter_per_epoch, self.max_iter - epoch * self.iter_per_epoch)
                batches = None if per_step else self._batches(todo, n_train)
                start = time.perf_counter()
                first = len(hist.train_loss)
                lr = getattr(self.optimizer, "lr", float("nan"))
                python_from = 0  # the first step of this epoch on the Python path
                if fused is not None:
                    python_from = todo
                    for lo in range(0, todo, _FUSED_CHUNK):
                        assert batches is not None
                        part = batches[lo : lo + _FUSED_CHUNK]
                        rates = self._step_rates(len(part))
                        extra = {} if rates is None else {"learning_rates": rates}
                        try:
                            losses = fused.run_epoch(self.x_train, self.t_train, part, **extra)
                        except KeyboardInterrupt as e:
                            # The steps applied before Ctrl-C count, as on the Python path.
                            done = np.asarray(getattr(e, "losses", ()), dtype=float).tolist()
                            hist.train_loss.extend(done)
                            hist.iterations += len(done)
                            raise
                        new = np.asarray(losses, dtype=float).tolist()
                        hist.train_loss.extend(new)
                        if book_log:
                            for loss in new:
                                say(f"train loss:{loss}")
                        hist.iterations += len(part)
                        if rates is not None:
                            lr = float(rates[len(new) - 1])
                        if bar is not None:
                            bar.update(len(part))
                        if new and not math.isfinite(new[-1]):
                            # Diverged: non-finite weights are refused by the native
                            # step; stop, or go on with the NumPy path's IEEE arithmetic.
                            if not self.stop_on_nan:
                                python_from = lo + len(part)
                                fused = self._fused_trainer = None
                                hist.fused = False
                            break
                if fused is None:
                    rates = self._step_rates(todo)
                    base_lr = getattr(self.optimizer, "lr", None)
                    try:
                        for i in range(python_from, todo):
                            row = (
                                self.rng.integers(0, n_train, size=self.batch_size)
                                if batches is None
                                else batches[i]
                            )
                            if rates is not None:
                                lr = self.optimizer.lr = float(rates[i])
                            hist.train_loss.append(self._step(row))
                            if book_log:
                                say(f"train loss:{hist.train_loss[-1]}")
                            hist.iterations += 1
                            if bar is not None:
                                bar.update(1)
                    finally:
                        if rates is not None:
                            # as on the fused path, the schedule leaves optimizer.lr alone
                            self.optimizer.lr = base_lr
                seconds = time.perf_counter() - start
                diverged = self._diverged(hist, epoch + 1)
                if diverged:  # evaluated on the NumPy path (non-finite weights: IEEE NaN)
                    fused = self._fused_trainer = None
                    hist.fused = False
                epoch_loss = float(np.mean(hist.train_loss[first:]))
                self._end_epoch(epoch, n_epochs, todo, seconds, say, epoch_loss, float(lr))
                if diverged and self.stop_on_nan:
                    self.stop_training = True
                if self.stop_training:
                    hist.stopped_early = True
                    if self.verbose and not book_log:
                        say(f"stopped after epoch {epoch + 1}")
                    break
        except KeyboardInterrupt:
            hist.interrupted = True
            if self.verbose:
                say(f"interrupted after {hist.iterations} iterations")
        finally:
            if bar is not None:
                bar.close()
        for cb in self.callbacks:
            cb.on_train_end({})
        if book_log and not hist.interrupted and self.x_test is not None:
            self.log("=============== Final Test Accuracy ===============")
            self.log(f"test acc:{self.test_accuracy()}")
        return hist

    def _diverged(self, hist: History, epoch: int) -> bool:
        """True once per run, when the last loss is not finite; warns (RuntimeWarning)
        unless a TerminateOnNaN callback is there to say it."""
        if not hist.train_loss or math.isfinite(hist.train_loss[-1]) or self._warned_nan:
            return False
        self._warned_nan = True
        from ferrograd.callbacks import TerminateOnNaN

        if any(isinstance(cb, TerminateOnNaN) for cb in self.callbacks):
            return True
        first = next(i for i, v in enumerate(hist.train_loss) if not math.isfinite(v))
        action = (
            "stopping after this epoch (stop_on_nan=False goes on)"
            if self.stop_on_nan
            else "going on as asked (stop_on_nan=False)"
        )
        warnings.warn(
            f"Trainer: the loss is {hist.train_loss[-1]} in epoch {epoch} (first at iteration "
            f"{first + 1}): training diverged, lower the learning rate; {action}",
            RuntimeWarning,
            stacklevel=3,
        )
        return True

    def _end_epoch(
        self,
        epoch: int,
        n_epochs: int,
        iters: int,
        seconds: float,
        say: Callable[[str], None],
        epoch_loss: float,
        lr: float,
    ) -> None:
        hist = self.history
        limit = self.evaluate_sample_num
        logs: dict[str, float] = {"loss": epoch_loss}
        train_acc = self._accuracy(self.x_train, self.t_train, limit)
        logs["accuracy"] = train_acc
        hist.train_acc.append(train_acc)
        shown = [("train acc", train_acc)]
        for split, x, t, accs, losses in (
            ("val", self.x_val, self.t_val, hist.val_acc, hist.val_loss),
            ("test", self.x_test, self.t_test, hist.test_acc, hist.test_loss),
        ):
            if x is None or t is None:
                continue
            acc = self._accuracy(x, t, limit)
            loss = self._loss(x, t, limit)
            accs.append(acc)
            losses.append(loss)
            logs[f"{split}_loss"], logs[f"{split}_accuracy"] = loss, acc
            shown.append((f"{split} acc", acc))
        hist.epoch_loss.append(epoch_loss)
        hist.lr.append(lr)
        hist.epoch_seconds.append(seconds)
        hist.epoch_iterations.append(iters)
        logs["lr"], logs["seconds"] = lr, seconds
        number = epoch + 1
        if self.verbose and self.log_format == "book":
            accs_text = ", ".join(f"{name}:{value}" for name, value in shown)
            say(f"=== epoch:{number}, {accs_text} ===")
        elif self.verbose and (number % self.log_every == 0 or number == n_epochs):
            names = ", ".join(name for name, _ in shown)
            values = ", ".join(f"{value:.4f}" for _, value in shown)
            # a resumed run counts on from where the saved one stopped, as Keras does
            last = self.initial_epoch + n_epochs
            say(
                f"epoch {self.initial_epoch + number:>{len(str(last))}}/{last} | "
                f"iter {self.initial_iteration + hist.iterations} | "
                f"loss {epoch_loss:.4f} | {seconds:.2f} s | {names} | {values}"
            )
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, dict(logs))

    def _loss(self, x: NDArray, t: NDArray, limit: int | None = None) -> float:
        """Mean loss of the network over (x, t), in chunks of rows (inference mode)."""
        if limit is not None:
            x, t = x[:limit], t[:limit]
        loss = self.network.loss
        n = x.shape[0]
        total = 0.0
        for start in range(0, n, _EVAL_CHUNK):
            xs, ts = x[start : start + _EVAL_CHUNK], t[start : start + _EVAL_CHUNK]
            total += float(loss(xs, ts)) * xs.shape[0]
        return total / n

    def test_accuracy(self) -> float:
        """Accuracy on the whole test set.

        Returns
        -------
        float
            In [0, 1].

        Raises
        ------
        ValueError
            The trainer has no test set.
        """
        if self.x_test is None or self.t_test is None:
            raise ValueError("Trainer.test_accuracy: this trainer has no test set")
        return self._accuracy(self.x_test, self.t_test)
