"""Computational-graph layers with ``forward`` / ``backward`` (the book's chapters 5 and 6).

``MulLayer`` and ``AddLayer`` are the book's scalar nodes (chapter 5's shopping graph);
``Affine``, ``Relu``, ``Sigmoid``, ``SoftmaxWithLoss`` and chapter 7's ``Convolution`` and
``Pooling`` run on the Rust kernels of :mod:`ferrograd._core`; ``BatchNormalization`` and
``Dropout`` follow DLFS common/layers.py in NumPy. Every ``backward`` leaves its ``dout``
argument untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ferrograd import _core
from ferrograd._random import make_rng
from ferrograd.functions import FLOAT_DTYPES, as_float_array, as_labels, refuse_masked

__all__ = [
    "AddLayer",
    "Affine",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "MulLayer",
    "Pooling",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "as_targets",
]

FloatArray = NDArray[np.floating]


def _not_run(layer: str) -> RuntimeError:
    return RuntimeError(f"{layer}.backward called before forward")


def _dout(layer: str, dout: ArrayLike, shape: tuple[int, ...], dtype: np.dtype) -> FloatArray:
    """Upstream gradient with the forward output's shape and dtype (a scalar broadcasts)."""
    d = as_float_array(dout, "dout", dtype)
    if d.ndim == 0:
        return np.broadcast_to(d, shape)
    if d.shape != shape:
        raise ValueError(
            f"{layer}.backward: dout has shape {d.shape} but the forward output has shape {shape}"
        )
    return d


def as_targets(op: str, t: ArrayLike, n: int, classes: int, dtype: np.dtype) -> NDArray:
    """Targets as the kernels take them: int64 labels (n,) or one-hot rows (n, classes).

    Integer arrays hold class labels (n,) or (n, 1) (checked to lie in [0, classes)) unless
    they are shaped like one-hot rows ((n, classes), or (classes,) for a single sample, as
    the book's ``t = np.array([0, 0, 1])``); one-hot rows are converted to ``dtype``.

    Parameters
    ----------
    op : str
        The caller's name, used in error messages.
    t : array_like
        Integer labels or one-hot rows.
    n : int
        Number of samples.
    classes : int
        Number of classes.
    dtype : numpy.dtype
        float32 or float64, for one-hot rows.

    Returns
    -------
    numpy.ndarray
        int64 labels (n,), or one-hot rows (n, classes) of ``dtype``, C-contiguous.

    Raises
    ------
    TypeError
        ``t`` is neither integer labels nor real numbers, or is a masked array.
    ValueError
        ``t`` has neither shape, or a label is outside [0, classes).
    """
    if type(t) is np.ndarray and t.ndim == 1 and t.dtype.kind in "iu" and t.shape[0] == n > 1:
        # The common case, n labels, checked in one or two reductions (unsigned labels
        # cannot be negative); a label out of range takes the general path's error.
        if (t.dtype.kind == "u" or np.minimum.reduce(t) >= 0) and np.maximum.reduce(t) < classes:
            return t.astype(np.int64, copy=False)
    elif type(t) is np.ndarray and t.dtype.kind == "f" and t.shape == (n, classes):
        if t.flags.c_contiguous:
            return t.astype(dtype, copy=False)  # one-hot rows, converted in one copy at most
    refuse_masked(t, f"{op}: t")
    arr = np.asarray(t)
    one_hot_shape = arr.shape == (n, classes) or (n == 1 and arr.shape == (classes,))
    if arr.dtype.kind in "iu" and not one_hot_shape and arr.shape == (n, 1):
        arr = arr.reshape(n)  # a column of labels (the book's ch07 gradient_check.py)
    if arr.dtype.kind in "iu" and not one_hot_shape:
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.shape != (n,):
            raise ValueError(
                f"{op}: t has shape {arr.shape}; expected {n} integer labels (shape ({n},)) "
                f"or one-hot rows of shape ({n}, {classes})"
            )
        return as_labels(arr, classes, name=f"{op}: t")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: t has dtype {arr.dtype}; expected integer labels or one-hot rows")
    if not one_hot_shape:
        raise ValueError(
            f"{op}: t has shape {arr.shape}; expected one-hot rows of shape ({n}, {classes}) "
            f"or {n} integer labels"
        )
    return np.ascontiguousarray(arr.reshape(n, classes), dtype=dtype)


class MulLayer:
    """The book's multiplication node (ch. 5): out = x·y; backward: dx = dout·y, dy = dout·x."""

    def __init__(self) -> None:
        self.x: Any = None
        self.y: Any = None

    def forward(self, x: Any, y: Any) -> Any:
        """out = x·y, remembering x and y for backward.

        Parameters
        ----------
        x, y : float or array_like
            Scalars or broadcastable arrays (the book's apple price and count).

        Returns
        -------
        float or numpy.ndarray
            ``x * y``.
        """
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout: Any = 1) -> tuple[Any, Any]:
        """Each input's gradient is the other input times dout.

        Parameters
        ----------
        dout : float or array_like, default 1
            Upstream gradient ∂L/∂out.

        Returns
        -------
        dx, dy : float or numpy.ndarray
            ``dout * y`` and ``dout * x``.

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        """
        if self.x is None:
            raise _not_run("MulLayer")
        dx = dout * self.y  # the inputs are swapped
        dy = dout * self.x
        return dx, dy


class AddLayer:
    """The book's addition node (ch. 5): out = x + y; backward passes dout to both inputs."""

    def forward(self, x: Any, y: Any) -> Any:
        """out = x + y.

        Parameters
        ----------
        x, y : float or array_like
            Scalars or broadcastable arrays.

        Returns
        -------
        float or numpy.ndarray
            ``x + y``.
        """
        return x + y

    def backward(self, dout: Any = 1) -> tuple[Any, Any]:
        """Both inputs get dout unchanged.

        Parameters
        ----------
        dout : float or array_like, default 1
            Upstream gradient ∂L/∂out.

        Returns
        -------
        dx, dy : float or numpy.ndarray
            ``dout * 1`` twice.
        """
        return dout * 1, dout * 1


class Relu:
    """The ReLU layer (ch. 5): out = max(0, x); backward: dout where x > 0, else 0."""

    def __init__(self) -> None:
        self.x: FloatArray | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        """max(0, x) elementwise, remembering x for backward.

        Parameters
        ----------
        x : array_like
            Any shape; float32/float64 kept, other numbers become float64.

        Returns
        -------
        numpy.ndarray
            x's shape and float dtype.
        """
        self.x = as_float_array(x, "x")
        return _core.relu(self.x)

    @property
    def mask(self) -> NDArray[np.bool_] | None:
        """The book's mask: True where the input was ≤ 0 (gradient blocked)."""
        return None if self.x is None else self.x <= 0

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx = dout · [x > 0].

        Parameters
        ----------
        dout : array_like, default 1
            Upstream gradient of the forward output's shape (a scalar broadcasts).

        Returns
        -------
        numpy.ndarray
            The forward input's shape and dtype.

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        ValueError
            ``dout`` has another shape than the forward output.
        """
        if self.x is None:
            raise _not_run("Relu")
        return _core.relu_backward(self.x, _dout("Relu", dout, self.x.shape, self.x.dtype))


class Sigmoid:
    """The sigmoid layer (ch. 5): out = 1 / (1 + exp(−x)); backward: dout·(1 − out)·out."""

    def __init__(self) -> None:
        self.out: FloatArray | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        """σ(x) elementwise, remembering the output for backward.

        Parameters
        ----------
        x : array_like
            Any shape; float32/float64 kept, other numbers become float64.

        Returns
        -------
        numpy.ndarray
            x's shape and float dtype.
        """
        self.out = _core.sigmoid(as_float_array(x, "x"))
        return self.out

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx = dout·(1 − y)·y with y the forward output.

        Parameters
        ----------
        dout : array_like, default 1
            Upstream gradient of the forward output's shape (a scalar broadcasts).

        Returns
        -------
        numpy.ndarray
            The forward output's shape and dtype.

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        ValueError
            ``dout`` has another shape than the forward output.
        """
        if self.out is None:
            raise _not_run("Sigmoid")
        d = _dout("Sigmoid", dout, self.out.shape, self.out.dtype)
        return _core.sigmoid_backward(self.out, d)


class Affine:
    """The Affine layer (ch. 5): out = x·W + b, N-D input flattened to (N, D) as in the book.

    ``W`` and ``b`` are held by reference (not copied), so an optimizer that updates the
    network's ``params`` in place updates this layer too. ``backward`` stores ``dW`` = xᵀ·dout
    and ``db`` = Σₙ dout and returns dx = dout·Wᵀ in x's original shape. A 1-D x (D,) is one
    sample and gives a 1-D output (H,).

    Parameters
    ----------
    W : numpy.ndarray, shape (D, H)
        Weights, float32 or float64.
    b : numpy.ndarray, shape (H,)
        Bias, W's dtype.

    Raises
    ------
    TypeError
        ``W`` is not a float32/float64 ndarray, or ``b`` not an ndarray of W's dtype.
    ValueError
        ``W`` is not 2-D or ``b`` is not (H,).
    """

    def __init__(self, W: NDArray[np.floating], b: NDArray[np.floating]) -> None:
        if not isinstance(W, np.ndarray) or W.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"Affine: W must be a float32 or float64 numpy.ndarray, got "
                f"{getattr(W, 'dtype', type(W).__name__)}"
            )
        if not isinstance(b, np.ndarray) or b.dtype != W.dtype:
            raise TypeError(
                f"Affine: b must be a numpy.ndarray of W's dtype {W.dtype}, got "
                f"{getattr(b, 'dtype', type(b).__name__)}"
            )
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(
                f"Affine: W has shape {W.shape} and b has shape {b.shape}; expected W (d, h) "
                f"and b (h,)"
            )
        self.W = W
        self.b = b
        self.x: FloatArray | None = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: FloatArray | None = None
        self.db: FloatArray | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        """x·W + b in W's dtype; x is flattened to (N, D) if N-D.

        A float32 batch for a float64 layer (the book's MNIST and nets) goes in as it
        is: the product converts the values it reads, as ``astype`` would.

        Parameters
        ----------
        x : array_like, shape (N, D), (N, ...) with D values per sample, or (D,)
            Inputs, e.g. (N, 784) images.

        Returns
        -------
        numpy.ndarray
            (N, H), or (H,) for one sample (D,), in W's dtype.

        Raises
        ------
        ValueError
            ``x`` is empty or a scalar, or does not hold D values per sample.
        """
        arr = as_float_array(x, "x")
        self.original_x_shape = arr.shape
        if arr.ndim == 0 or arr.size == 0:
            raise ValueError(
                f"Affine.forward: x must be a non-empty array of samples, got shape {arr.shape}"
            )
        x2 = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
        if x2.shape[1] != self.W.shape[0]:
            raise ValueError(
                f"Affine.forward: x has shape {arr.shape} ({x2.shape[1]} features per sample) "
                f"but W has shape {self.W.shape}"
            )
        self.x = x2
        out = _core.affine(x2, self.W, self.b)
        return out[0] if arr.ndim == 1 else out

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx = dout·Wᵀ in x's shape; sets ``dW`` = xᵀ·dout and ``db`` = Σₙ dout.

        Parameters
        ----------
        dout : array_like, default 1
            Upstream gradient (N, H) (or (H,) for one sample; a scalar broadcasts).

        Returns
        -------
        numpy.ndarray
            The forward input's original shape, W's dtype.

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        ValueError
            ``dout`` has another shape than the forward output.
        """
        d, x_shape = self._backward_weights(dout)
        dx = _core.matmul(d, self.W, trans_b=True)  # dx = dout · Wᵀ
        return dx.reshape(x_shape)

    def _backward_weights(self, dout: ArrayLike = 1) -> tuple[FloatArray, tuple[int, ...]]:
        """Sets ``dW`` and ``db`` as :meth:`backward` does, without dx (a net's first
        layer: nothing takes its dx, a 784-wide product). Returns dout as (N, H) and
        the forward input's shape."""
        if self.x is None or self.original_x_shape is None:
            raise _not_run("Affine")
        n, h = self.x.shape[0], self.W.shape[1]
        out_shape = (h,) if len(self.original_x_shape) == 1 else (n, h)
        d = _dout("Affine", dout, out_shape, self.W.dtype).reshape(n, h)
        # A float32 batch goes in as it is against float64 arrays (converted inside).
        same = self.x.dtype == self.W.dtype or self.x.dtype == np.float32
        x = self.x if same else self.x.astype(self.W.dtype)
        self.dW = _core.matmul(x, d, trans_a=True)  # dW = xᵀ · dout
        self.db = np.add.reduce(d, axis=0)  # db = Σₙ dout (np.sum without its wrapper)
        return d, self.original_x_shape


class SoftmaxWithLoss:
    """The output layer (ch. 5): loss = cross_entropy_error(softmax(x), t); backward: (y − t)/N.

    ``t`` is one-hot rows (N, K) or integer labels (N,); a 1-D x (K,) is one sample. After
    ``forward``, ``y`` holds the probabilities (N, K), ``t`` the targets and ``loss`` the loss.
    """

    def __init__(self) -> None:
        self.loss: float | None = None
        self.y: FloatArray | None = None
        self.t: NDArray | None = None

    def forward(self, x: ArrayLike, t: ArrayLike) -> float:
        """Mean cross-entropy of softmax(x) against t (δ = 1e-7 inside the log).

        Parameters
        ----------
        x : array_like, shape (N, K) or (K,)
            Scores before softmax.
        t : array_like
            Integer labels (N,) or one-hot rows (N, K).

        Returns
        -------
        float
            The mean loss per sample.

        Raises
        ------
        ValueError
            ``x`` is not a non-empty (N, K) or (K,) array, or ``t`` does not fit it.
        """
        arr = as_float_array(x, "x")
        if arr.ndim not in (1, 2) or arr.shape[-1] == 0 or arr.size == 0:
            raise ValueError(
                f"SoftmaxWithLoss.forward: x must be (n, k) or (k,) with n, k > 0, got shape "
                f"{arr.shape}"
            )
        x2 = arr.reshape(1, -1) if arr.ndim == 1 else arr
        self.t = as_targets("SoftmaxWithLoss.forward", t, x2.shape[0], x2.shape[1], x2.dtype)
        self.y = _core.softmax(x2)
        self.loss = _core.cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout: float = 1) -> FloatArray:
        """dx = dout·(y − t)/N.

        Parameters
        ----------
        dout : float, default 1
            Upstream gradient of the (scalar) loss.

        Returns
        -------
        numpy.ndarray, shape (N, K)
            x's dtype ((1, K) for one sample (K,)).

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        ValueError
            ``dout`` is not a scalar.
        """
        if self.y is None or self.t is None:
            raise _not_run("SoftmaxWithLoss")
        dx = _core.softmax_cross_entropy_backward(self.y, self.t)
        if np.ndim(dout) != 0:
            raise ValueError(
                f"SoftmaxWithLoss.backward: dout must be a scalar (the loss is), got shape "
                f"{np.shape(dout)}"
            )
        if dout != 1:
            dx *= dout
        return dx


def _window_arg(layer: str, name: str, value: object, low: int) -> int:
    """A window size, stride or padding: an int of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{layer}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _image_batch(layer: str, x: ArrayLike, channels: int, dtype: np.dtype) -> FloatArray:
    """x as an (N, C, H, W) array of ``dtype`` with ``channels`` channels."""
    arr = as_float_array(x, "x", dtype)
    if arr.ndim != 4 or arr.shape[1] != channels or 0 in arr.shape:
        raise ValueError(
            f"{layer}.forward: x has shape {arr.shape}; expected (N, {channels}, H, W) with "
            f"N, H, W > 0"
        )
    return arr


class Convolution:
    """The convolution of chapter 7: out[n, f] = Σ_c W[f, c] ⋆ x[n, c] + b[f].

    x (N, C, H, W) → out (N, FN, OH, OW) with OH = (H + 2·pad − FH) // stride + 1 (OW
    alike). ``W`` and ``b`` are held by reference. ``backward`` sets ``dW`` (like W) and
    ``db`` (FN,) and returns dx like x. The book's ``col`` (im2col of the last input,
    (N·OH·OW, C·FH·FW)) and ``col_W`` (W as (C·FH·FW, FN)) are computed on access; the
    kernels do not need them whole.

    Parameters
    ----------
    W : numpy.ndarray, shape (FN, C, FH, FW)
        Filters, float32 or float64.
    b : array_like, shape (FN,) or scalar
        Bias per filter; a scalar (as the book's apply_filter.py passes) becomes one value
        per filter.
    stride : int, default 1
        Step between filter positions, >= 1.
    pad : int, default 0
        Zero padding on each side, >= 0.

    Raises
    ------
    TypeError
        ``W`` is not a float32/float64 ndarray, or ``b`` has another dtype.
    ValueError
        ``W`` is not 4-D, ``b`` has not one value per filter, or ``stride``/``pad`` are
        out of range.
    """

    def __init__(
        self, W: NDArray[np.floating], b: ArrayLike, stride: int = 1, pad: int = 0
    ) -> None:
        if not isinstance(W, np.ndarray) or W.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"Convolution: W must be a float32 or float64 numpy.ndarray, got "
                f"{getattr(W, 'dtype', type(W).__name__)}"
            )
        if W.ndim != 4 or 0 in W.shape:
            raise ValueError(f"Convolution: W has shape {W.shape}; expected (FN, C, FH, FW)")
        if isinstance(b, np.ndarray) and b.ndim == 1:
            if b.dtype != W.dtype:
                raise TypeError(f"Convolution: b has dtype {b.dtype} but W has {W.dtype}")
        else:
            b = np.full(W.shape[0], as_float_array(b, "b", W.dtype), dtype=W.dtype)
        if b.shape != (W.shape[0],):
            raise ValueError(
                f"Convolution: b has shape {b.shape} but W has shape {W.shape}; "
                f"need one bias per filter"
            )
        self.W = W
        self.b = b
        self.stride = _window_arg("Convolution", "stride", stride, 1)
        self.pad = _window_arg("Convolution", "pad", pad, 0)
        self.x: FloatArray | None = None
        self.dW: FloatArray | None = None
        self.db: FloatArray | None = None

    @property
    def col(self) -> FloatArray | None:
        """im2col of the last forward input: (N·oh·ow, C·FH·FW)."""
        if self.x is None:
            return None
        _, _, fh, fw = self.W.shape
        return _core.im2col(self.x, fh, fw, self.stride, self.pad)

    @property
    def col_W(self) -> FloatArray:
        """W as the matrix (C·FH·FW, FN) that im2col's rows multiply."""
        return self.W.reshape(self.W.shape[0], -1).T

    def forward(self, x: ArrayLike) -> FloatArray:
        """The convolution of a batch of images; x is converted to W's dtype.

        Parameters
        ----------
        x : array_like, shape (N, C, H, W)
            Images with W's C channels.

        Returns
        -------
        numpy.ndarray, shape (N, FN, OH, OW)
            W's dtype.

        Raises
        ------
        ValueError
            ``x`` is not (N, C, H, W) with C channels, or the filter does not fit it.
        """
        arr = _image_batch("Convolution", x, self.W.shape[1], self.W.dtype)
        _, _, fh, fw = self.W.shape
        _, _, h, w = arr.shape
        if h + 2 * self.pad < fh or w + 2 * self.pad < fw:
            raise ValueError(
                f"Convolution.forward: x has shape {arr.shape}; a {fh}x{fw} filter does not "
                f"fit it with pad {self.pad}"
            )
        self.x = arr
        return _core.conv_forward(arr, self.W, self.b, self.stride, self.pad)

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx like x; sets dW = Σ_n dout[n]·colsᵀ (like W) and db = Σ dout over n, i, j (FN,).

        Parameters
        ----------
        dout : array_like, shape (N, FN, OH, OW), default 1
            Upstream gradient (a scalar broadcasts).

        Returns
        -------
        numpy.ndarray, shape (N, C, H, W)
            W's dtype.

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        ValueError
            ``dout`` has another shape than the forward output.
        """
        if self.x is None:
            raise _not_run("Convolution")
        n, _, h, w = self.x.shape
        fn, _, fh, fw = self.W.shape
        out_shape = (
            n,
            fn,
            (h + 2 * self.pad - fh) // self.stride + 1,
            (w + 2 * self.pad - fw) // self.stride + 1,
        )
        d = _dout("Convolution", dout, out_shape, self.W.dtype)
        dx, self.dW, self.db = _core.conv_backward(self.x, self.W, d, self.stride, self.pad)
        return dx


class Pooling:
    """Max pooling of chapter 7: the largest entry of each pool_h×pool_w window.

    x (N, C, H, W) → (N, C, OH, OW), OH = (H + 2·pad − pool_h) // stride + 1 (zero padding
    counts as an entry, as in the book's im2col). ``arg_max`` is the book's: the index
    ky·pool_w + kx of each window's maximum, flat in (n, i, j, c) order; backward routes dout
    there (overlapping windows add up) and returns dx like x.

    Parameters
    ----------
    pool_h, pool_w : int
        Window height and width, >= 1.
    stride : int, default 1
        Step between windows, >= 1 (the book's nets pool 2×2 with stride 2).
    pad : int, default 0
        Zero padding on each side, >= 0.

    Raises
    ------
    ValueError
        A size is not an int in range.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 1, pad: int = 0) -> None:
        self.pool_h = _window_arg("Pooling", "pool_h", pool_h, 1)
        self.pool_w = _window_arg("Pooling", "pool_w", pool_w, 1)
        self.stride = _window_arg("Pooling", "stride", stride, 1)
        self.pad = _window_arg("Pooling", "pad", pad, 0)
        self.x: FloatArray | None = None
        self._arg: NDArray[np.int64] | None = None  # (N, C, oh, ow), the kernels' order

    @property
    def arg_max(self) -> NDArray[np.int64] | None:
        """Window index of each maximum, (N·oh·ow·C,) in the book's (n, i, j, c) order."""
        return None if self._arg is None else self._arg.transpose(0, 2, 3, 1).ravel()

    def forward(self, x: ArrayLike) -> FloatArray:
        """The window maxima.

        Parameters
        ----------
        x : array_like, shape (N, C, H, W)
            Images; float32/float64 kept, other numbers become float64.

        Returns
        -------
        numpy.ndarray, shape (N, C, OH, OW)
            x's float dtype.

        Raises
        ------
        ValueError
            ``x`` is not 4-D and non-empty, or the window does not fit it.
        """
        arr = as_float_array(x, "x")
        if arr.ndim != 4 or 0 in arr.shape:
            raise ValueError(f"Pooling.forward: x has shape {arr.shape}; expected (N, C, H, W)")
        _, _, h, w = arr.shape
        if h + 2 * self.pad < self.pool_h or w + 2 * self.pad < self.pool_w:
            raise ValueError(
                f"Pooling.forward: x has shape {arr.shape}; a {self.pool_h}x{self.pool_w} "
                f"window does not fit it with pad {self.pad}"
            )
        out, self._arg = _core.pool_forward(arr, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x = arr
        return out

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx like x: each dout entry at its window's maximum, 0 elsewhere.

        Parameters
        ----------
        dout : array_like, shape (N, C, OH, OW), default 1
            Upstream gradient (a scalar broadcasts).

        Returns
        -------
        numpy.ndarray, shape (N, C, H, W)
            The forward input's dtype.

        Raises
        ------
        RuntimeError
            Called before ``forward``.
        ValueError
            ``dout`` has another shape than the forward output.
        """
        if self.x is None or self._arg is None:
            raise _not_run("Pooling")
        d = _dout("Pooling", dout, self._arg.shape, self.x.dtype)
        return _core.pool_backward(
            d, self._arg, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad
        )


def _rng(rng: np.random.Generator | None, seed: int | None, layer: str) -> np.random.Generator:
    if rng is not None and seed is not None:
        raise ValueError(f"{layer}: pass rng or seed, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{layer}: rng must be a numpy.random.Generator, got {type(rng)}")
        return rng
    return make_rng(seed)


class Dropout:
    """Dropout (ch. 6): training keeps each unit with probability 1 − ratio; inference
    scales by 1 − ratio.

    Parameters
    ----------
    dropout_ratio : float, default 0.5
        Probability of dropping a unit, in [0, 1).
    rng : numpy.random.Generator, optional
        Where the masks come from.
    seed : int, optional
        Seed of a new ``default_rng`` for the masks. With neither ``rng`` nor ``seed``,
        NumPy's global generator (``np.random.rand``, as the book).

    Raises
    ------
    ValueError
        ``dropout_ratio`` is outside [0, 1), or both ``rng`` and ``seed`` are given.
    TypeError
        ``rng`` is not a Generator.
    """

    def __init__(
        self,
        dropout_ratio: float = 0.5,
        *,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = dropout_ratio
        self.rng = _rng(rng, seed, "Dropout")
        self.mask: NDArray[np.bool_] | None = None
        self._dtype: np.dtype = np.dtype(np.float64)

    def forward(self, x: ArrayLike, train_flg: bool = True) -> FloatArray:
        """Training: x·mask, mask = U[0, 1) > ratio (new each call); inference: x·(1 − ratio).

        Parameters
        ----------
        x : array_like
            Any shape.
        train_flg : bool, default True
            Training (drop units) or inference (scale).

        Returns
        -------
        numpy.ndarray
            x's shape and float dtype.
        """
        arr = as_float_array(x, "x")
        if train_flg:
            self.mask = self.rng.random(arr.shape) > self.dropout_ratio
            self._dtype = arr.dtype
            return arr * self.mask
        return arr * (1.0 - self.dropout_ratio)

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx = dout·mask: the units dropped in the last training forward get 0.

        Parameters
        ----------
        dout : array_like, default 1
            Upstream gradient of the mask's shape (a scalar broadcasts).

        Returns
        -------
        numpy.ndarray
            The mask's shape; the forward input's float dtype for an integer ``dout``
            (the default 1), else ``dout``'s.

        Raises
        ------
        RuntimeError
            Called before a training ``forward``.
        ValueError
            ``dout`` has another shape than the mask.
        """
        if self.mask is None:
            raise _not_run("Dropout")
        d = np.asarray(dout)
        if d.dtype.kind not in "fc":
            d = d.astype(self._dtype)
        if d.ndim and d.shape != self.mask.shape:
            raise ValueError(
                f"Dropout.backward: dout has shape {d.shape} but the mask has shape "
                f"{self.mask.shape}"
            )
        return d * self.mask


class BatchNormalization:
    """Batch normalization (ch. 6): y = γ·(x − μ)/√(σ² + ε) + β per feature.

    ε = 1e-6 (the book's ``10e-7``). Training uses the batch mean/variance and updates
    the running averages with ``momentum``; inference uses the running ones.
    ``gamma``/``beta`` are held by reference; ``backward`` sets ``dgamma`` and ``dbeta``.
    N-D x is flattened to (N, D).

    Parameters
    ----------
    gamma, beta : numpy.ndarray, shape (D,)
        Scale and shift (the network's ``params``), one dtype.
    momentum : float, default 0.9
        Weight of the old value in the running averages.
    running_mean, running_var : numpy.ndarray, shape (D,), optional
        Inference statistics; zeros of gamma's dtype at the first forward when None.

    Raises
    ------
    TypeError
        ``gamma`` or ``beta`` is not an ndarray.
    ValueError
        ``gamma`` and ``beta`` are not 1-D arrays of one length.
    """

    EPS = 10e-7

    def __init__(
        self,
        gamma: NDArray[np.floating],
        beta: NDArray[np.floating],
        momentum: float = 0.9,
        running_mean: NDArray[np.floating] | None = None,
        running_var: NDArray[np.floating] | None = None,
    ) -> None:
        if not isinstance(gamma, np.ndarray) or not isinstance(beta, np.ndarray):
            raise TypeError("BatchNormalization: gamma and beta must be numpy.ndarray")
        if gamma.ndim != 1 or gamma.shape != beta.shape:
            raise ValueError(
                f"BatchNormalization: gamma has shape {gamma.shape} and beta {beta.shape}; "
                f"expected two 1-D arrays of one length"
            )
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape: tuple[int, ...] | None = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size: int | None = None
        self.xc: FloatArray | None = None
        self.xn: FloatArray | None = None
        self.std: FloatArray | None = None
        self.dgamma: FloatArray | None = None
        self.dbeta: FloatArray | None = None

    def forward(self, x: ArrayLike, train_flg: bool = True) -> FloatArray:
        """Normalised, scaled and shifted x.

        Parameters
        ----------
        x : array_like, shape (N, D) or (N, ...) with D values per sample
            Inputs, converted to gamma's dtype.
        train_flg : bool, default True
            Batch statistics (and update the running ones) or the running statistics.

        Returns
        -------
        numpy.ndarray
            x's shape, gamma's dtype.

        Raises
        ------
        ValueError
            ``x`` has no rows or not D values per sample.
        """
        arr = as_float_array(x, "x", self.gamma.dtype)
        self.input_shape = arr.shape
        if arr.ndim != 2:
            arr = arr.reshape(arr.shape[0] if arr.ndim else 1, -1)
        if arr.shape[1] != self.gamma.shape[0] or arr.shape[0] == 0:
            raise ValueError(
                f"BatchNormalization.forward: x has shape {self.input_shape} but gamma has "
                f"shape {self.gamma.shape}"
            )
        return self._forward(arr, train_flg).reshape(self.input_shape)

    def _forward(self, x: FloatArray, train_flg: bool) -> FloatArray:
        if self.running_mean is None or self.running_var is None:
            _, d = x.shape
            self.running_mean = np.zeros(d, dtype=x.dtype)
            self.running_var = np.zeros(d, dtype=x.dtype)
        if train_flg:
            if x.shape[1] > 1 and self.gamma.dtype == self.beta.dtype:
                # The lines below in one native pass, the same bits (NumPy sums a single
                # column pairwise, so D = 1 keeps them).
                out, xc, xn, std, mu, var = _core.batch_norm_forward(
                    x, self.gamma, self.beta, self.EPS
                )
            else:
                mu = x.mean(axis=0)
                xc = x - mu
                var = np.mean(xc**2, axis=0)
                std = np.sqrt(var + self.EPS)
                xn = xc / std
                out = self.gamma * xn + self.beta
            self.batch_size = x.shape[0]
            self.xc, self.xn, self.std = xc, xn, std
            # Running statistics for inference, updated in place.
            self.running_mean *= self.momentum
            self.running_mean += (1 - self.momentum) * mu
            self.running_var *= self.momentum
            self.running_var += (1 - self.momentum) * var
            return out
        xc = x - self.running_mean
        xn = xc / np.sqrt(self.running_var + self.EPS)
        return self.gamma * xn + self.beta

    def backward(self, dout: ArrayLike = 1) -> FloatArray:
        """dx through the batch statistics; sets dgamma = Σ xn·dout and dbeta = Σ dout.

        Parameters
        ----------
        dout : array_like, default 1
            Upstream gradient of the forward input's size (a scalar broadcasts).

        Returns
        -------
        numpy.ndarray
            The forward input's shape, gamma's dtype.

        Raises
        ------
        RuntimeError
            Called before a training ``forward``.
        ValueError
            ``dout`` has another size than the forward input.
        """
        if self.xc is None or self.input_shape is None:
            raise RuntimeError("BatchNormalization.backward called before a training forward")
        d = np.asarray(dout, dtype=self.gamma.dtype)
        if d.ndim and d.size != self.xc.size:
            raise ValueError(
                f"BatchNormalization.backward: dout has shape {d.shape} but the forward input "
                f"had shape {self.input_shape}"
            )
        d = np.broadcast_to(d, self.xc.shape) if d.ndim == 0 else d.reshape(self.xc.shape)
        return self._backward(d).reshape(self.input_shape)

    def _backward(self, dout: FloatArray) -> FloatArray:
        assert self.xc is not None and self.xn is not None and self.std is not None
        assert self.batch_size is not None
        native = {a.dtype for a in (dout, self.xc, self.xn, self.std, self.gamma)} == {dout.dtype}
        if native and self.xc.shape[1] > 1 and self.xc.shape[0] == self.batch_size:
            # The lines below in one native pass, the same bits (D = 1 as in forward).
            dx, self.dgamma, self.dbeta = _core.batch_norm_backward(
                dout, self.xc, self.xn, self.std, self.gamma
            )
            return dx
        dbeta = np.add.reduce(dout, axis=0)
        # np.add.reduce is np.sum without its Python wrapper (2 µs a call).
        dgamma = np.add.reduce(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.add.reduce((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar  # dxc is a fresh array: dout untouched
        dmu = np.add.reduce(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx
