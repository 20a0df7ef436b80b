"""What the convolutional networks share: a stack of layer objects run forward and back.

``LayeredNet`` holds ``params`` (W1, b1, …), ``layers`` (the layer objects, sharing the
``params`` arrays) and ``last_layer`` (SoftmaxWithLoss), and gives the book's
``predict``, ``loss``, ``accuracy(x, t, batch_size=100)``, ``gradient``,
``numerical_gradient``, ``save_params`` and ``load_params`` (npz files; the book's
pickles are refused).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd.functions import as_float_array
from ferrograd.gradient import numerical_gradient as _numerical_gradient
from ferrograd.layers import Affine, Convolution, Dropout, SoftmaxWithLoss, as_targets
from ferrograd.nets._common import ModelMixin, same_dropout_masks

__all__ = ["LayeredNet", "conv_args"]

FloatArray = NDArray[np.floating]
Grads = dict[str, FloatArray]

_PICKLE_START = b"\x80"  # protocol 2+ pickles begin with the PROTO opcode


def conv_args(
    op: str, name: str, param: Mapping[str, Any] | None, default: Mapping[str, int]
) -> dict[str, int]:
    """A convolution's ``filter_num``, ``filter_size``, ``pad``, ``stride`` (book's keys)."""
    merged = dict(default if param is None else param)
    missing = [k for k in default if k not in merged]
    if missing:
        raise ValueError(f"{op}: {name} lacks {', '.join(missing)}")
    out = {}
    for key, low in (("filter_num", 1), ("filter_size", 1), ("pad", 0), ("stride", 1)):
        v = merged[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{op}: {name}[{key!r}] must be an int >= {low}, got {v!r}")
        out[key] = int(v)
    return out


class LayeredNet(ModelMixin):
    """A network run as its ``layers`` in order, then ``last_layer``.

    Subclasses set ``params``, ``layers`` (a list or an ordered dict of layer objects),
    ``input_dim`` (C, H, W), ``dtype`` and the parameter-holding layer of each key.
    """

    params: dict[str, FloatArray]
    input_dim: tuple[int, int, int]
    _book_trainer: str = "ch07/train_convnet.py"  # the book's script that trains and saves it
    dtype: np.dtype
    last_layer: SoftmaxWithLoss

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        """(layer name, output shape, parameter count) in order, from one zero image."""
        layers = self.layers  # type: ignore[attr-defined]
        named = (
            list(layers.items())
            if isinstance(layers, Mapping)
            else [(f"{type(la).__name__}{i}", la) for i, la in enumerate(layers, start=1)]
        )
        out: NDArray[Any] = np.zeros((1, *self.input_dim), dtype=self.dtype)
        rows: list[tuple[str, str, int]] = []
        for name, layer in named:
            out = layer.forward(out, False) if isinstance(layer, Dropout) else layer.forward(out)
            count = 0
            if isinstance(layer, (Affine, Convolution)):
                count = int(layer.W.size + layer.b.size)
            shape = ", ".join(str(d) for d in out.shape[1:])
            rows.append((f"{name} ({type(layer).__name__})", f"(None, {shape})", count))
        rows.append(("softmax (SoftmaxWithLoss)", f"(None, {out.shape[-1]})", 0))
        return rows

    def _evaluation_loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """The mean loss with dropout off (``loss`` keeps the book's training mode)."""
        y = self.predict(x, train_flg=False)
        t2 = as_targets(f"{type(self).__name__}.evaluate", t, y.shape[0], y.shape[1], self.dtype)
        return float(self.last_layer.forward(y, t2))

    def _layer_list(self) -> list[Any]:
        layers = self.layers  # type: ignore[attr-defined]
        return list(layers.values()) if isinstance(layers, Mapping) else list(layers)

    def _param_layers(self) -> list[Affine | Convolution]:
        """The layers holding W1/b1, W2/b2, … in order."""
        return [la for la in self._layer_list() if isinstance(la, (Affine, Convolution))]

    @property
    def output_size(self) -> int:
        """Number of classes K (columns of the last weight matrix)."""
        return int(self.params[f"W{len(self._param_layers())}"].shape[-1])

    def _images(self, op: str, x: ArrayLike) -> FloatArray:
        """x as (N, C, H, W) of the net's dtype; flat rows (N, C·H·W) are reshaped."""
        name = type(self).__name__
        arr = as_float_array(x, f"{name}.{op}: x", self.dtype)
        dim = self.input_dim
        if arr.ndim == 2 and arr.shape[1] == int(np.prod(dim)):
            arr = arr.reshape(arr.shape[0], *dim)
        if arr.ndim != 4 or arr.shape[1:] != dim or arr.shape[0] == 0:
            raise ValueError(
                f"{name}.{op}: x has shape {arr.shape}; expected (N, {dim[0]}, {dim[1]}, "
                f"{dim[2]}) with N > 0 (or flat rows (N, {int(np.prod(dim))}))"
            )
        return arr

    def predict(self, x: ArrayLike, train_flg: bool = False) -> FloatArray:
        """Scores (N, K) before softmax, through every layer.

        Parameters
        ----------
        x : array_like, shape (N, C, H, W) or (N, C·H·W)
            Images of ``input_dim``; flat rows are reshaped.
        train_flg : bool, default False
            Training mode: dropout layers drop units (and draw new masks).

        Returns
        -------
        numpy.ndarray, shape (N, K)
            The net's dtype.

        Raises
        ------
        ValueError
            ``x`` does not have the shape of ``input_dim`` images.
        """
        out = self._images("predict", x)
        for layer in self._layer_list():
            out = (
                layer.forward(out, train_flg) if isinstance(layer, Dropout) else layer.forward(out)
            )
        return out

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """Mean cross-entropy of softmax(predict(x, train_flg=True)) against t (as ch08's).

        Parameters
        ----------
        x : array_like, shape (N, C, H, W) or (N, C·H·W)
            Images of ``input_dim``; flat rows are reshaped.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            Mean loss per sample.
        """
        y = self.predict(x, train_flg=True)
        t2 = as_targets(f"{type(self).__name__}.loss", t, y.shape[0], y.shape[1], self.dtype)
        return float(self.last_layer.forward(y, t2))

    def accuracy(self, x: ArrayLike, t: ArrayLike, batch_size: int = 100) -> float:
        """Fraction of samples whose top score is the target class, ``batch_size`` at a time.

        Every sample counts (the book's loop skips a last partial batch); inference mode.

        Parameters
        ----------
        x : array_like, shape (N, C, H, W) or (N, C·H·W)
            Images of ``input_dim``; flat rows are reshaped.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).
        batch_size : int, default 100
            Samples per forward pass.

        Returns
        -------
        float
            In [0, 1].

        Raises
        ------
        ValueError
            ``batch_size`` is not a positive int, or x and t do not fit the net.
        """
        name = f"{type(self).__name__}.accuracy"
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"{name}: batch_size must be a positive int, got {batch_size!r}")
        xs = self._images("accuracy", x)
        target = as_targets(name, t, xs.shape[0], self.output_size, self.dtype)
        labels = target if target.ndim == 1 else np.argmax(target, axis=1)
        correct = 0
        for start in range(0, xs.shape[0], batch_size):
            y = self.predict(xs[start : start + batch_size], train_flg=False)
            correct += int(np.sum(np.argmax(y, axis=1) == labels[start : start + batch_size]))
        return correct / xs.shape[0]

    def loss_and_gradient(self, x: ArrayLike, t: ArrayLike) -> tuple[float, Grads]:
        """The loss at the current parameters and its gradient by backprop, in one forward pass.

        Parameters
        ----------
        x : array_like, shape (N, C, H, W) or (N, C·H·W)
            Images of ``input_dim``; flat rows are reshaped.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        loss : float
            As :meth:`loss`.
        grads : dict of str to numpy.ndarray
            ∂loss/∂param under the ``params`` keys (W1, b1, …), each of its parameter's shape.
        """
        loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self._layer_list()):
            dout = layer.backward(dout)
        grads: Grads = {}
        for i, layer in enumerate(self._param_layers(), start=1):
            assert layer.dW is not None and layer.db is not None
            grads[f"W{i}"], grads[f"b{i}"] = layer.dW, layer.db
        return loss, grads

    def gradient(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """∂loss/∂params by backprop through the layers (the book's ``gradient``).

        Parameters
        ----------
        x : array_like, shape (N, C, H, W) or (N, C·H·W)
            Images of ``input_dim``; flat rows are reshaped.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            One array per ``params`` key (W1, b1, …), of that parameter's shape and dtype.
        """
        return self.loss_and_gradient(x, t)[1]

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> Grads:
        """∂loss/∂params by central differences (h = 1e-4), probing each entry in place.

        Slow (two forward passes per parameter): for gradient checks on a few samples.
        float32 networks are probed through a float64 copy (float32 rounding at h = 1e-4 is
        as large as the gradient); the result has the network's dtype. Every probe sees
        the dropout masks the next :meth:`gradient` call draws.

        Parameters
        ----------
        x : array_like, shape (N, C, H, W) or (N, C·H·W)
            Images of ``input_dim``; flat rows are reshaped.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        dict of str to numpy.ndarray
            One array per ``params`` key, of that parameter's shape.
        """
        net = self if self.dtype == np.float64 else self._float64_copy()
        x64 = net._images("numerical_gradient", x)
        rewind = same_dropout_masks(self._layer_list(), net._layer_list())

        def loss(_: object) -> float:
            rewind()  # every probe draws the dropout masks the next gradient() draws
            return net.loss(x64, t)

        grads = {
            key: _numerical_gradient(loss, p).astype(self.dtype, copy=False)
            for key, p in net.params.items()
        }
        rewind()
        return grads

    def _float64_copy(self) -> LayeredNet:
        raise NotImplementedError

    def save_params(self, file_name: str | os.PathLike[str] = "params.pkl") -> None:
        """Write ``params`` to ``file_name`` as an npz archive (under that exact name).

        Parameters
        ----------
        file_name : str or path-like, default "params.pkl"
            The book's default name; the content is npz, not a pickle.
        """
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in self.params.items()}
        with open(file_name, "wb") as fh:
            np.savez(fh, **arrays)

    def load_params(self, file_name: str | os.PathLike[str] = "params.pkl") -> None:
        """Copy the arrays of an npz file written by :meth:`save_params` into ``params``.

        The copy is in place, so the layers see the new values. The book's pickles are not
        read.

        Parameters
        ----------
        file_name : str or path-like, default "params.pkl"
            A file of :meth:`save_params` (or ``ferrograd.save``).

        Raises
        ------
        ValueError
            The file is a pickle, not an npz archive, or its keys, shapes or dtypes differ
            from ``params``.
        FileNotFoundError
            No such file.
        """
        from ferrograd.trainer import load_params

        with open(file_name, "rb") as fh:
            start = fh.read(1)
        if start == _PICKLE_START:
            name = type(self).__name__
            raise ValueError(
                f"{name}.load_params: {os.fspath(file_name)} is a pickle (the book's trained "
                f"parameters), and ferrograd never loads pickles (they can run any code). "
                f"Train the net with ferrograd first: `ferrograd book run {self._book_trainer}`"
                f" saves its parameters under the book's name in ferrograd's npz format (or "
                f'call save_params("{os.fspath(file_name)}") on a trained {self.dtype} '
                f"{name}), then run this again"
            )
        load_params(self, file_name)
