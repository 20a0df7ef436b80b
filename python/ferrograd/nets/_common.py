"""Argument checks shared by the networks: inputs, sizes, dtypes and accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd.functions import as_float_array, check_dtype
from ferrograd.layers import as_targets

__all__ = [
    "ModelMixin",
    "accuracy",
    "as_batch",
    "check_dtype",
    "check_size",
    "init_scale",
    "same_dropout_masks",
]

FloatArray = NDArray[np.floating]


def same_dropout_masks(layers: list[Any], probed: list[Any]) -> Callable[[], None]:
    """For a numerical gradient through dropout: ``probed`` (a float64 copy's layers, or
    ``layers`` themselves) draws its masks from ``layers``' generators, and the function
    returned rewinds those generators to where they are now. Called before each probe
    and at the end, every probe and the next ``gradient`` call see the same masks, as a
    gradient check needs (the book's nets draw fresh masks on every forward pass)."""
    from ferrograd._random import GlobalGenerator
    from ferrograd.layers import Dropout

    mine = [la for la in layers if isinstance(la, Dropout)]
    theirs = [la for la in probed if isinstance(la, Dropout)]
    generators = {id(la.rng): la.rng for la in mine}
    for src, dst in zip(mine, theirs, strict=True):
        dst.rng = src.rng
    rewinds: list[Callable[[], None]] = []
    for rng in generators.values():
        if isinstance(rng, GlobalGenerator):
            state = np.random.get_state()  # noqa: NPY002
            rewinds.append(lambda state=state: np.random.set_state(state))  # noqa: NPY002
        else:
            bits, saved = rng.bit_generator, rng.bit_generator.state
            rewinds.append(lambda bits=bits, saved=saved: setattr(bits, "state", saved))

    def rewind() -> None:
        for step in rewinds:
            step()

    return rewind


def check_size(op: str, name: str, value: object) -> int:
    """A layer width: a positive int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def init_scale(op: str, weight_init_std: object, fan_in: int) -> float:
    """The standard deviation of a layer's initial weights: He √(2/fan_in) for
    'relu'/'he', Xavier √(1/fan_in) for 'sigmoid'/'xavier' (the book's ch. 6), or a
    number >= 0."""
    if isinstance(weight_init_std, str):
        name = weight_init_std.lower()
        if name in ("relu", "he"):
            return float(np.sqrt(2.0 / fan_in))
        if name in ("sigmoid", "xavier"):
            return float(np.sqrt(1.0 / fan_in))
        raise ValueError(
            f"{op}: weight_init_std must be 'relu', 'he', 'sigmoid', 'xavier' or a "
            f"number, got {weight_init_std!r}"
        )
    if isinstance(weight_init_std, (bool, np.bool_)) or not isinstance(
        weight_init_std, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"{op}: weight_init_std must be a number or 'he'/'xavier', got "
            f"{type(weight_init_std).__name__}"
        )
    try:
        scale = float(weight_init_std)
    except OverflowError:
        scale = float("inf")
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"{op}: weight_init_std must be >= 0, got {weight_init_std!r}")
    return scale


def as_batch(op: str, x: ArrayLike, input_size: int, dtype: np.dtype | None) -> FloatArray:
    """x as a (n, input_size) array of ``dtype`` (None: float32 or float64 as given, other
    numbers as float64): (d,) is one sample, N-D is flattened."""
    arr = as_float_array(x, f"{op}: x", dtype)
    shape = arr.shape
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim > 2 and arr.size:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != input_size:
        raise ValueError(
            f"{op}: x has shape {shape}; expected (n, {input_size}) with n > 0, "
            f"or ({input_size},) for one sample"
        )
    return arr


def accuracy(op: str, scores: FloatArray, t: ArrayLike) -> float:
    """Fraction of rows whose arg-max score matches t (labels or one-hot rows)."""
    n, k = scores.shape
    target = as_targets(op, t, n, k, scores.dtype)
    labels = target if target.ndim == 1 else np.argmax(target, axis=1)
    # The count over n is np.mean's value (an exact integer over n, rounded once), 5 µs sooner.
    return int(np.count_nonzero(np.argmax(scores, axis=1) == labels)) / n


_EVAL_CHUNK = 10_000  # rows per forward pass in evaluate (bounds memory)


class ModelMixin:
    """What every net offers beside the book's methods, as Keras models do:
    ``evaluate`` (loss and accuracy), ``predict_classes`` and ``summary``."""

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        """(layer name, output shape, parameter count) in order, input to output."""
        from ferrograd.layers import Affine, BatchNormalization

        rows: list[tuple[str, str, int]] = []
        width = int(self.input_size)  # type: ignore[attr-defined]
        for name, layer in self.layers.items():  # type: ignore[attr-defined]
            count = 0
            if isinstance(layer, Affine):
                width = int(layer.W.shape[1])
                count = int(layer.W.size + layer.b.size)
            elif isinstance(layer, BatchNormalization):
                count = int(layer.gamma.size + layer.beta.size)
            rows.append((f"{name} ({type(layer).__name__})", f"(None, {width})", count))
        rows.append(("softmax (SoftmaxWithLoss)", f"(None, {width})", 0))
        return rows

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> None:
        """Print the layers, their output shapes and parameter counts (Keras' ``summary()``).

        Parameters
        ----------
        print_fn : callable, optional
            Called once with the whole table as one string; default ``print``.
        """
        rows = self._summary_rows()
        params = getattr(self, "params", None)
        total = sum(int(np.size(v)) for v in params.values()) if params else sum(r[2] for r in rows)
        w0 = max(len("Layer (type)"), *(len(r[0]) for r in rows)) + 2
        w1 = max(len("Output Shape"), *(len(r[1]) for r in rows)) + 2
        rule = "=" * (w0 + w1 + 10)
        lines = [repr(self), rule, f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>10}"]
        lines.append(rule)
        lines += [f"{name:<{w0}}{shape:<{w1}}{count:>10,}" for name, shape, count in rows]
        lines.append(rule)
        lines.append(f"Total params: {total:,}")
        (print_fn or print)("\n".join(lines))

    def _evaluation_loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """The mean loss ``evaluate`` reports: the net's ``loss`` (inference mode)."""
        return float(self.loss(x, t))  # type: ignore[attr-defined]

    def predict_classes(self, x: ArrayLike) -> NDArray[np.int64]:
        """The arg-max class of each sample.

        Parameters
        ----------
        x : array_like, shape (N, D)
            Inputs, as ``predict`` takes them.

        Returns
        -------
        numpy.ndarray of int64, shape (N,)
            Class indices (a 0-d array when ``predict`` gives one sample's scores (K,)).
        """
        scores = self.predict(x)  # type: ignore[attr-defined]
        return np.argmax(scores, axis=-1).astype(np.int64)

    def evaluate(self, x: ArrayLike, t: ArrayLike) -> tuple[float, float]:
        """(loss, accuracy) over all of (x, t), as Keras' ``model.evaluate`` gives them.

        The loss is the mean loss the net trains on (weight decay included), computed in
        chunks of 10,000 rows.

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs, N > 0.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        loss : float
            Mean loss per sample.
        accuracy : float
            Fraction of samples classified correctly, in [0, 1].

        Raises
        ------
        ValueError
            ``x`` is not at least 2-D with N > 0 rows, or ``t`` has another number of rows.
        """
        x_arr = np.asarray(x)
        t_arr = np.asarray(t)
        if x_arr.ndim < 2 or t_arr.shape[:1] != x_arr.shape[:1] or x_arr.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__}.evaluate: x has shape {x_arr.shape} and t "
                f"{t_arr.shape}; expected n > 0 rows in both"
            )
        n = x_arr.shape[0]
        loss = correct = 0.0
        for start in range(0, n, _EVAL_CHUNK):
            xs, ts = x_arr[start : start + _EVAL_CHUNK], t_arr[start : start + _EVAL_CHUNK]
            rows = xs.shape[0]
            loss += self._evaluation_loss(xs, ts) * rows
            scores = self.predict(xs)  # type: ignore[attr-defined]
            correct += accuracy(f"{type(self).__name__}.evaluate", scores, ts) * rows
        return loss / n, correct / n
