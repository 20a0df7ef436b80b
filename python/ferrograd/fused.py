"""Fused training of the book's networks: one call into Rust per run of steps.

``FusedTrainer(network, optimizer).run_epoch(x, t, batch_index_matrix)`` does, for each
row of batch indices, the batch gather, forward, backprop and the optimizer update in
place on ``network.params`` (the same arrays, never rebound), with the GIL released, in
``_core.FusedTrainer``: the two-layer net and MultiLayerNet alike; the book's
SimpleConvNet (chapter 7) goes through ``_core.ConvNetTrainer`` the same way.
The optimizer's state (``v``, ``h``, ``m``, ``iter``) lives in the optimizer object as
in the book, created on first use, so fused and unfused steps can be mixed freely.

The trainer compresses each input matrix once (``_core.SparseRows``: its non-zero
entries, in the working dtype) and reuses that for every later call with the same array
object: a snapshot, so change x in place only between trainers, or pass a new array.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd import _core
from ferrograd.layers import as_targets
from ferrograd.optimizers import Optimizer, native_rule

__all__ = ["FusedTrainer", "supports"]

# Options of a network (MultiLayerNet's) that add terms the fused step does not compute.
EXTRAS = ("use_dropout", "use_batchnorm")


def _keys(params: object) -> tuple[str, ...] | None:
    """W1, b1, …, WL, bL when ``params`` holds exactly those (L >= 2), else None."""
    if not isinstance(params, dict) or len(params) < 4 or len(params) % 2:
        return None
    keys = tuple(f"{kind}{i}" for i in range(1, len(params) // 2 + 1) for kind in "Wb")
    return keys if set(params) == set(keys) else None


_CONV_KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")


def _conv_layers(network: Any) -> tuple[int, int] | None:
    """(stride, pad) of a SimpleConvNet whose layers are the book's, on its params (conv,
    ReLU, 2×2 max pooling with stride 2, Affine, ReLU, Affine), C-contiguous, writeable,
    one float dtype; else None."""
    from ferrograd.layers import Affine, Convolution, Pooling, Relu
    from ferrograd.nets.simple_convnet import SimpleConvNet

    if type(network) is not SimpleConvNet:  # a subclass may change what a step does
        return None
    kinds = {
        "Conv1": Convolution,
        "Relu1": Relu,
        "Pool1": Pooling,
        "Affine1": Affine,
        "Relu2": Relu,
        "Affine2": Affine,
    }
    params, layers = network.params, network.layers
    if _keys(params) != _CONV_KEYS or list(layers) != list(kinds):
        return None
    if not all(type(layers[k]) is cls for k, cls in kinds.items()):
        return None
    conv, pool = layers["Conv1"], layers["Pool1"]
    held = [conv.W, conv.b]
    held += [layers["Affine1"].W, layers["Affine1"].b, layers["Affine2"].W, layers["Affine2"].b]
    if any(a is not params[k] for a, k in zip(held, _CONV_KEYS, strict=True)):
        return None
    if (pool.pool_h, pool.pool_w, pool.stride, pool.pad) != (2, 2, 2, 0):
        return None
    arrays = [params[k] for k in _CONV_KEYS]
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        return None
    ok = all(
        isinstance(a, np.ndarray)
        and a.dtype == dtype
        and a.flags.c_contiguous
        and a.flags.writeable
        for a in arrays
    )
    return (conv.stride, conv.pad) if ok else None


def supports(network: Any, optimizer: object) -> bool:
    """True when the fused step computes what ``gradient`` + ``optimizer.update`` would.

    That is: a fully connected net (``params`` W1, b1, …, WL, bL, C-contiguous, writeable,
    one float dtype, shapes chained; ``activation`` 'sigmoid' or 'relu'; no dropout or
    batch norm, so TwoLayerNet and MultiLayerNet with or without weight decay qualify) and
    an optimizer of ``ferrograd.optimizers`` (not a subclass); or the book's SimpleConvNet
    (its layers as built, on its params) with such an optimizer.

    Parameters
    ----------
    network : network
        The net to train.
    optimizer : object
        The optimizer to update it with.

    Returns
    -------
    bool
        Whether :class:`FusedTrainer` accepts the pair.
    """
    if native_rule(optimizer) is not None and _conv_layers(network) is not None:
        return True
    params = getattr(network, "params", None)
    keys = _keys(params)
    if keys is None or native_rule(optimizer) is None:
        return False
    if any(getattr(network, name, 0) for name in EXTRAS):
        return False
    decay = getattr(network, "weight_decay_lambda", 0.0)
    if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0):
        return False
    if getattr(network, "activation", None) not in ("sigmoid", "relu"):
        return False
    assert isinstance(params, dict)
    arrays = [params[k] for k in keys]
    if not all(isinstance(a, np.ndarray) for a in arrays):
        return False
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        return False
    for i, a in enumerate(arrays):
        nd = 2 if i % 2 == 0 else 1
        if a.dtype != dtype or a.ndim != nd or not a.flags.c_contiguous or not a.flags.writeable:
            return False
    weights, biases = arrays[::2], arrays[1::2]
    chained = all(w.shape[1] == b.shape[0] for w, b in zip(weights, biases, strict=True))
    if not chained or any(a.shape[1] != b.shape[0] for a, b in itertools.pairwise(weights)):
        return False
    # Tied parameters (one array under two keys) get both updates on the Python path;
    # the fused step updates each array as one parameter.
    return _shared_pair(params, keys) is None


def _shared_pair(params: dict[str, Any], keys: Sequence[str]) -> tuple[str, str] | None:
    """Two keys of ``params`` whose arrays share memory, or None."""
    for a, b in itertools.combinations(keys, 2):
        if np.may_share_memory(params[a], params[b]):
            return a, b
    return None


# Arrays a native call of this module is using right now, per call: (thread name, what
# the call does, weak references to its arrays). A call that cannot borrow one of its
# arrays looks here to say what holds it.
_BUSY: dict[int, tuple[str, str, list[weakref.ref[np.ndarray]]]] = {}
# The same, of calls that were running in another thread when this process was forked:
# their borrows never end here.
_ORPHANED: list[tuple[str, str, list[weakref.ref[np.ndarray]]]] = []
_BUSY_LOCK = threading.Lock()


@contextmanager
def _busy(what: str, arrays: Sequence[np.ndarray]) -> Iterator[None]:
    """Record ``arrays`` as in use by this thread's call ``what`` for the duration."""
    token = object()
    entry = (threading.current_thread().name, what, [weakref.ref(a) for a in arrays])
    with _BUSY_LOCK:
        _BUSY[id(token)] = entry
    try:
        yield
    finally:
        with _BUSY_LOCK:
            del _BUSY[id(token)]


def _after_fork_in_child() -> None:
    # Only the forking thread lives on; every other thread's call is orphaned.
    me = threading.current_thread().name
    with _BUSY_LOCK:
        _ORPHANED.extend(entry for entry in _BUSY.values() if entry[0] != me)
        _BUSY.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _holder(arr: np.ndarray) -> tuple[str, str, bool] | None:
    """(thread name, what, orphaned) of a recorded call using memory of ``arr``."""
    with _BUSY_LOCK:
        entries = [(e, False) for e in _BUSY.values()] + [(e, True) for e in _ORPHANED]
    for (thread, what, refs), orphaned in entries:
        for ref in refs:
            other = ref()
            if other is not None and np.may_share_memory(arr, other):
                return thread, what, orphaned
    return None


class FusedTrainer:
    """Trains ``network`` with ``optimizer`` through ``_core.FusedTrainer``, many steps a call.

    ``Trainer`` makes one by itself when :func:`supports` holds.

    Parameters
    ----------
    network : network
        A net :func:`supports` accepts; its ``params`` arrays are updated in place.
    optimizer : Optimizer
        One of ``ferrograd.optimizers``; its state lives in it, as in the book.

    Raises
    ------
    ValueError
        :func:`supports` does not hold for the pair, e.g. two parameters share memory
        (tied parameters train on the Python path).
    """

    def __init__(self, network: Any, optimizer: Any) -> None:
        keys = _keys(getattr(network, "params", None))
        shared = _shared_pair(network.params, keys) if keys is not None else None
        if shared is not None:
            a, b = shared
            raise ValueError(
                f"FusedTrainer: network.params[{b!r}] shares its memory with "
                f"network.params[{a!r}] (tied parameters: the same array, or views of one "
                "array), but the fused step updates each parameter on its own; train tied "
                "parameters on the Python path (Trainer(..., use_fused=False), which Trainer "
                "chooses by itself for them)"
            )
        if not supports(network, optimizer):
            raise ValueError(
                "FusedTrainer: needs a fully connected net (params W1 b1 W2 b2 ... of one "
                "float dtype, C-contiguous; activation 'sigmoid' or 'relu'; no dropout or "
                "batch norm) or the book's SimpleConvNet, and an optimizer from "
                f"ferrograd.optimizers, got {type(network).__name__} and "
                f"{type(optimizer).__name__}"
            )
        rule = native_rule(optimizer)
        assert rule is not None and isinstance(optimizer, Optimizer)
        self.network = network
        self.optimizer = optimizer
        self._state_names = type(optimizer).state_names
        # id(x) -> (x, x as the kernels read it): the training matrix and one other (the
        # last one evaluated). Holding x keeps its id from being reused.
        self._train_rows: tuple[object, Any] | None = None
        self._other_rows: tuple[object, Any] | None = None
        conv = _conv_layers(network)
        self._conv = conv is not None
        if conv is not None:
            self._keys = _CONV_KEYS
            w1 = network.params["W1"]
            self.dtype = w1.dtype
            fn, _, fh, fw = w1.shape
            self._core: Any = _core.ConvNetTrainer(
                network.input_dim,
                (fn, fh, fw),
                stride=conv[0],
                pad=conv[1],
                hidden_size=network.params["W3"].shape[0],
                output_size=network.params["W3"].shape[1],
                dtype=str(self.dtype),
                optimizer=rule,
                hyperparameters=optimizer.hyperparameters(),
            )
            return
        keys = _keys(network.params)
        assert keys is not None
        self._keys = keys
        weights = [network.params[k] for k in self._keys[::2]]
        w1 = weights[0]
        self.dtype = w1.dtype
        self.activation: str = network.activation
        self.input_size: int = w1.shape[0]
        self._core = _core.FusedTrainer(
            [w1.shape[0], *(w.shape[1] for w in weights)],
            activation=self.activation,
            dtype=str(self.dtype),
            optimizer=rule,
            hyperparameters=optimizer.hyperparameters(),
            weight_decay=float(getattr(network, "weight_decay_lambda", 0.0)),
        )

    def _state(self) -> list[NDArray[np.floating]]:
        """The optimizer's state arrays in kernel order, created as the book does."""
        params = self.network.params
        arrays: list[NDArray[np.floating]] = []
        for name in self._state_names:
            if getattr(self.optimizer, name) is None:
                setattr(self.optimizer, name, {k: np.zeros_like(v) for k, v in params.items()})
            state = getattr(self.optimizer, name)
            arrays.extend(state[k] for k in self._keys)
        return arrays

    def _targets(self, t: ArrayLike, n: int) -> NDArray[Any]:
        """t checked as the Python path checks it (one message per mistake): int64 labels
        in range (n,), or one-hot rows (n, k) of the working dtype."""
        k = int(self.network.params[self._keys[-1]].shape[0])
        return as_targets("FusedTrainer", t, n, k, self.dtype)

    def _rows(self, x: ArrayLike, train: bool) -> _core.SparseRows | NDArray[Any]:
        """x as the kernels read it (its compressed rows; images of the working dtype,
        C-contiguous, for the convolutional net), made once per array object."""
        if self._conv:
            return self._images(x, train)
        if not isinstance(x, np.ndarray):
            return np.ascontiguousarray(x, dtype=self.dtype)  # the kernel names the problem
        flat = x
        if x.ndim > 2 and x.shape[0] and math.prod(x.shape[1:]) == self.input_size:
            flat = x.reshape(x.shape[0], -1)  # (n, 1, 28, 28) images, as the nets flatten them
        if not (flat.ndim == 2 and flat.shape[1] == self.input_size):
            return np.ascontiguousarray(x, dtype=self.dtype)  # the kernel names the problem
        for cached in (self._train_rows, self._other_rows):
            if cached is not None and cached[0] is x:
                return cached[1]
        rows = _core.SparseRows(np.ascontiguousarray(flat, dtype=self.dtype))
        if train:
            self._train_rows = (x, rows)
        else:
            self._other_rows = (x, rows)
        return rows

    def _images(self, x: ArrayLike, train: bool) -> NDArray[Any]:
        """x as C-contiguous images of the working dtype, converted once per array."""
        if not isinstance(x, np.ndarray):
            return np.ascontiguousarray(x, dtype=self.dtype)  # the kernel names the problem
        for cached in (self._train_rows, self._other_rows):
            if cached is not None and cached[0] is x:
                return cast(NDArray[Any], cached[1])
        images = np.ascontiguousarray(x, dtype=self.dtype)
        if train:
            self._train_rows = (x, images)
        else:
            self._other_rows = (x, images)
        return images

    def run_epoch(
        self,
        x_train: ArrayLike,
        t_train: ArrayLike,
        batch_index_matrix: ArrayLike,
        *,
        learning_rates: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """One training step per row of ``batch_index_matrix``, in one native call.

        Each step gathers its mini-batch, runs forward and backprop and updates ``params`` (and
        the optimizer's state) in place. The optimizer's hyperparameters are read at every
        call, so a schedule that changes ``optimizer.lr`` between calls is followed. Ctrl-C
        stops between steps: the steps applied stay applied and ``optimizer.iter`` counts them.

        Parameters
        ----------
        x_train : array_like, shape (N, D) (or (N, C, H, W) images)
            Training inputs; compressed (for the convolutional net: converted to the working
            dtype) once per array object and reused (change x in place only between
            trainers).
        t_train : array_like
            Labels (N,) or one-hot rows (N, K).
        batch_index_matrix : array_like of int, shape (iters, batch)
            Row indices into x_train, one row per step.
        learning_rates : array_like, shape (iters,), optional
            One learning rate per step (a schedule); default ``optimizer.lr`` throughout.

        Returns
        -------
        numpy.ndarray of float64, shape (iters,)
            Each step's mean cross-entropy (plus weight decay), before that step's update.

        Raises
        ------
        TypeError
            ``batch_index_matrix`` is not integers.
        ValueError
            A parameter or optimizer-state array cannot be updated in place: read-only,
            sharing memory with another, being trained by another thread, or locked by a
            fork during a training run (the message names it and says what to copy).
        """
        x = self._rows(x_train, train=True)
        t = self._targets(t_train, _row_count(x_train))
        idx = np.asarray(batch_index_matrix)
        if idx.dtype.kind not in "iu":  # NumPy indexing refuses floats too; never truncate
            raise TypeError(f"run_epoch: batch_index_matrix has dtype {idx.dtype}; expected int")
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        lrs = None if learning_rates is None else np.ascontiguousarray(learning_rates, np.float64)
        params = [self.network.params[k] for k in self._keys]
        state = self._state()
        start = int(getattr(self.optimizer, "iter", 0))
        try:
            with _busy("a training run", [*params, *state]):
                losses = self._core.run(
                    params,
                    state,
                    x,
                    t,
                    idx,
                    iter=start,
                    hyperparameters=self.optimizer.hyperparameters(),
                    learning_rates=lrs,
                )
        except ValueError as e:
            where = getattr(e, "array_index", None)
            if where is None:
                raise
            what, index = where
            raise ValueError(self._borrow_message(params, state, what, index, str(e))) from None
        except BaseException as e:
            # Interrupted (Ctrl-C): the steps applied before it stay applied, and the
            # exception's ``losses`` holds one loss per such step. Count exactly those.
            if hasattr(self.optimizer, "iter"):
                self.optimizer.iter = start + len(getattr(e, "losses", ()))
            raise
        if hasattr(self.optimizer, "iter"):
            self.optimizer.iter = start + len(losses)
        return losses

    def _array_name(self, what: str, i: int) -> str:
        """``network.params['W1']`` or ``optimizer.m['W1']``: array i of ``what``."""
        n = len(self._keys)
        if what == "params":
            return f"network.params[{self._keys[i]!r}]"
        return f"optimizer.{self._state_names[i // n]}[{self._keys[i % n]!r}]"

    def _borrow_message(
        self, params: list[np.ndarray], state: list[np.ndarray], what: str, i: int, native: str
    ) -> str:
        """Why array i of ``what`` could not be updated in place, and what to do.

        The advice never rebinds ``network.params[key]``: a layered net's layers hold the
        arrays themselves. ``copy.deepcopy`` copies a net with its layers still sharing
        the copied arrays, and an optimizer with its state.
        """
        op = "FusedTrainer.run_epoch"
        arrays = {("params", j): a for j, a in enumerate(params)}
        arrays.update({("state", j): a for j, a in enumerate(state)})
        arr = arrays[(what, i)]
        name = self._array_name(what, i)
        if not arr.flags.writeable:
            return (
                f"{op}: {name} is read-only, but training updates it in place; make it "
                f"writeable ({name}.flags.writeable = True, where it owns its memory), or "
                "train a copy (net = copy.deepcopy(net): its arrays are writeable)"
            )
        for key, other in arrays.items():
            if key == (what, i) or not np.shares_memory(arr, other):
                continue
            shared = f"{op}: {name} shares its memory with {self._array_name(*key)}"
            if "state" in (what, key[0]):  # the optimizer's state: only it holds those
                state_name = name if what == "state" else self._array_name(*key)
                return (
                    f"{shared}, but parameters and optimizer state are updated on their "
                    f"own; give the state its own array: {state_name} = {state_name}.copy()"
                )
            return (
                f"{shared} (tied parameters), but the fused step updates each parameter "
                "on its own; train tied parameters on the Python path "
                "(Trainer(..., use_fused=False))"
            )
        holder = _holder(arr)
        if holder is not None and holder[2]:
            return (
                f"{op}: {name} is locked: {holder[1]} on it was running in thread "
                f"{holder[0]!r} when this process was forked, and that call never finishes "
                "in this process (its arrays hold whatever it had written by then). Train "
                "copies here (net = copy.deepcopy(net), optimizer = copy.deepcopy(optimizer)),"
                " or fork only while no training runs (or start processes with 'spawn' or "
                "'forkserver')"
            )
        if holder is not None:
            return (
                f"{op}: {name} is being updated by {holder[1]} in thread {holder[0]!r} that "
                "has not finished: nets sharing their parameter arrays (net2.params = "
                "net1.params, or layers built over the same arrays) cannot train at the same "
                "time. Wait for that run, or train a net with arrays of its own "
                "(copy.deepcopy(net))"
            )
        return native

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """``network.loss(x, t)`` at the current parameters.

        One native forward pass for the convolutional net (the same operations as its
        layers, whose state it leaves alone); the network's own ``loss`` otherwise.

        Parameters
        ----------
        x : array_like, shape (N, D) (or (N, C, H, W) images)
            A batch of inputs.
        t : array_like
            Labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            The mean cross-entropy.
        """
        if not self._conv:
            return float(self.network.loss(x, t))
        images = np.ascontiguousarray(x, dtype=self.dtype)
        params = [self.network.params[k] for k in self._keys]
        return float(self._core.loss(params, images, self._targets(t, _row_count(images))))

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of rows of x whose arg-max prediction equals t, in one native call
        (for the convolutional net, its layers' batched forward pass).

        Parameters
        ----------
        x : array_like, shape (N, D) (or (N, C, H, W) images)
            Inputs.
        t : array_like
            Labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            In [0, 1].
        """
        if self._conv:
            return float(self.network.accuracy(x, t))
        p = self.network.params
        params = [p[k] for k in self._keys]
        rows, targets = self._rows(x, train=False), self._targets(t, _row_count(x))
        with _busy("an accuracy evaluation", params):
            return _core.accuracy(params, rows, targets, activation=cast(Any, self.activation))


def _row_count(x: ArrayLike) -> int:
    """Rows of x (the targets must have as many)."""
    shape = np.shape(x)
    return int(shape[0]) if shape else 1
