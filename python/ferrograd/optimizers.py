"""Parameter update rules (the book's chapter 6, DLFS common/optimizer.py).

Each optimizer's ``update(params, grads)`` changes the arrays in ``params`` IN PLACE
(``params[key] -= ...``): the network's layers hold the same arrays, so rebinding a key
would silently detach them. A plain number in ``params`` (the book's
optimizer_compare_naive.py) gets its new value stored under its key instead. State arrays keep the book's names (``v``, ``h``, ``m``,
``iter``) and are created on the first update with each parameter's shape and dtype.
The hyperparameter defaults are the ``__init__`` defaults; code that needs an
instance's values (the fused trainers) reads ``hyperparameters()``, and the names of its
state dicts from ``state_names``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ferrograd import _core

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
]

Params = MutableMapping[str, Any]  # float arrays (in place) or floats (replaced)
Grads = Mapping[str, Any]

EPS = 1e-7
"""Added to √h (AdaGrad, RMSprop) and √v (Adam) so the first steps never divide by 0."""


def _values(g: Any) -> Any:
    """A gradient as NumPy arithmetic takes it: a sequence as an array, a number as it is
    (so a plain-float parameter stays a float)."""
    return g if np.ndim(g) == 0 else np.asarray(g)


def _number(cls: str, name: str, value: object) -> float:
    """``value`` as a float, or TypeError for what is not a real number (a string, a
    list, None, a bool) and ValueError for an int too large for a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"{cls}: {name} must be a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{cls}: {name} is too large for a float: {value!r}") from None


def _check_positive(cls: str, name: str, value: float) -> float:
    number = _number(cls, name, value)
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{cls}: {name} must be a positive number, got {value!r}")
    return number


def _check_rate(cls: str, name: str, value: float) -> float:
    number = _number(cls, name, value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{cls}: {name} must be in [0, 1), got {value!r}")
    return number


class Optimizer:
    """Base class: checks that ``params`` and ``grads`` match before any update."""

    lr: float
    state_names: ClassVar[tuple[str, ...]] = ()
    """Attributes holding the per-parameter state dicts (None before the first update)."""
    hyperparameter_names: ClassVar[tuple[str, ...]] = ("lr",)
    """The update rule's hyperparameters, by the book's names (the ``__init__`` arguments)."""

    def hyperparameters(self) -> dict[str, float]:
        """The rule's hyperparameters as set on this instance now.

        Returns
        -------
        dict of str to float
            By the book's names, e.g. ``{"lr": 0.01}`` for SGD.
        """
        return {name: float(getattr(self, name)) for name in self.hyperparameter_names}

    def _check(self, params: Params, grads: Grads) -> None:
        for key, p in params.items():
            g = grads.get(key)
            if (
                type(p) is np.ndarray
                and type(g) is np.ndarray
                and p.shape == g.shape
                and p.dtype.kind == "f"
                and g.dtype.kind in "biuf"
                and p.flags.writeable
            ):
                continue  # the common case, settled without the general checks
            self._check_one(key, p, grads)

    def _check_one(self, key: str, p: object, grads: Grads) -> None:
        """The general checks of one parameter, raising with the reason."""
        name = type(self).__name__
        if key not in grads:
            raise KeyError(f"{name}.update: grads has no entry for parameter {key!r}")
        # A float array is updated in place; a real scalar (the book's
        # optimizer_compare_naive.py keeps plain floats) is replaced by its new value.
        scalar = isinstance(p, (float, np.floating))
        if not scalar and (not isinstance(p, np.ndarray) or p.dtype.kind != "f"):
            raise TypeError(
                f"{name}.update: params[{key!r}] must be a float numpy.ndarray (updated in "
                f"place) or a float, got {type(p).__name__}"
            )
        if not scalar and not p.flags.writeable:
            raise ValueError(
                f"{name}.update: params[{key!r}] is read-only, but the update changes it "
                f"in place; make it writeable (params[{key!r}].flags.writeable = True, "
                "where it owns its memory), or train a copy of the net "
                "(net = copy.deepcopy(net): its arrays are writeable)"
            )
        g_kind = np.asarray(grads[key]).dtype.kind
        if g_kind not in "biuf":
            raise TypeError(
                f"{name}.update: grads[{key!r}] has dtype {np.asarray(grads[key]).dtype}; "
                "expected real numbers"
            )
        g_shape = np.shape(grads[key])
        if g_shape != np.shape(p):
            raise ValueError(
                f"{name}.update: grads[{key!r}] has shape {g_shape} but params[{key!r}] "
                f"has shape {np.shape(p)}"
            )

    def _update_natively(
        self,
        params: Params,
        grads: Grads,
        states: tuple[dict[str, NDArray[np.floating]], ...] = (),
        iteration: int = 0,
    ) -> bool:
        """Whether the native kernel made this step: the same operations as the NumPy
        lines of ``update``, giving the same bits, in one pass per array without
        temporaries. Only for the library's own classes, when every parameter, gradient
        and state array is a C-contiguous array of the parameters' one float dtype; else
        False, nothing changed, and NumPy makes the step."""
        rule = native_rule(self)
        if rule is None:
            return False
        keys = list(params)
        return _core.optimizer_update(
            rule,
            self.hyperparameters(),
            [params[k] for k in keys],
            [grads[k] for k in keys],
            [[state[k] for k in keys] for state in states],
            iteration,
        )

    def update(self, params: Params, grads: Grads) -> None:
        """Update every array in ``params`` in place from ``grads``.

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent: W ← W − lr·∂L/∂W.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.

    Raises
    ------
    ValueError
        A hyperparameter is out of range.
    TypeError
        A hyperparameter is not a number.
    """

    state_names = ()
    hyperparameter_names = ("lr",)

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = _check_positive("SGD", "lr", lr)

    def update(self, params: Params, grads: Grads) -> None:
        """W ← W − lr·g for every key, in place.

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        self._check(params, grads)
        if self._update_natively(params, grads):
            return
        for key in params:
            params[key] -= self.lr * _values(grads[key])


class Momentum(Optimizer):
    """Momentum SGD: v ← momentum·v − lr·g;  W ← W + v.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    momentum : float, default 0.9
        Decay of the velocity ``v``, in [0, 1).

    Raises
    ------
    ValueError
        A hyperparameter is out of range.
    TypeError
        A hyperparameter is not a number.
    """

    state_names = ("v",)
    hyperparameter_names = ("lr", "momentum")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr = _check_positive("Momentum", "lr", lr)
        self.momentum = _check_rate("Momentum", "momentum", momentum)
        self.v: dict[str, NDArray[np.floating]] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        """One momentum step, in place (params and the velocity ``v``).

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        self._check(params, grads)
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        if self._update_natively(params, grads, (self.v,)):
            return
        for key in params:
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * _values(grads[key])
            params[key] += self.v[key]


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the book's form (DLFS common/optimizer.py).

    v ← momentum·v − lr·g;  W ← W + momentum²·v − (1 + momentum)·lr·g.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    momentum : float, default 0.9
        Decay of the velocity ``v``, in [0, 1).

    Raises
    ------
    ValueError
        A hyperparameter is out of range.
    TypeError
        A hyperparameter is not a number.
    """

    state_names = ("v",)
    hyperparameter_names = ("lr", "momentum")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr = _check_positive("Nesterov", "lr", lr)
        self.momentum = _check_rate("Nesterov", "momentum", momentum)
        self.v: dict[str, NDArray[np.floating]] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        """One Nesterov step, in place (params and ``v``).

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        self._check(params, grads)
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        if self._update_natively(params, grads, (self.v,)):
            return
        for key in params:
            g = _values(grads[key])
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * g
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * g


class AdaGrad(Optimizer):
    """AdaGrad: h ← h + g⊙g;  W ← W − lr·g / (√h + 1e-7).

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.

    Raises
    ------
    ValueError
        A hyperparameter is out of range.
    TypeError
        A hyperparameter is not a number.
    """

    state_names = ("h",)
    hyperparameter_names = ("lr",)

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = _check_positive("AdaGrad", "lr", lr)
        self.h: dict[str, NDArray[np.floating]] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        """One AdaGrad step, in place (params and the squared-gradient sum ``h``).

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        self._check(params, grads)
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        if self._update_natively(params, grads, (self.h,)):
            return
        for key in params:
            g = _values(grads[key])
            self.h[key] += g * g
            params[key] -= self.lr * g / (np.sqrt(self.h[key]) + EPS)


class RMSprop(Optimizer):
    """RMSprop: h ← ρ·h + (1 − ρ)·g⊙g with ρ = decay_rate;  W ← W − lr·g / (√h + 1e-7).

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    decay_rate : float, default 0.99
        ρ, in [0, 1).

    Raises
    ------
    ValueError
        A hyperparameter is out of range.
    TypeError
        A hyperparameter is not a number.
    """

    state_names = ("h",)
    hyperparameter_names = ("lr", "decay_rate")

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        self.lr = _check_positive("RMSprop", "lr", lr)
        self.decay_rate = _check_rate("RMSprop", "decay_rate", decay_rate)
        self.h: dict[str, NDArray[np.floating]] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        """One RMSprop step, in place (params and the running mean square ``h``).

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        self._check(params, grads)
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        if self._update_natively(params, grads, (self.h,)):
            return
        for key in params:
            g = _values(grads[key])
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * g * g
            params[key] -= self.lr * g / (np.sqrt(self.h[key]) + EPS)


class Adam(Optimizer):
    """Adam (http://arxiv.org/abs/1412.6980v8) in the book's form.

    m ← m + (1 − β₁)(g − m);  v ← v + (1 − β₂)(g² − v);
    W ← W − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m / (√v + 1e-7), t = ``iter`` (steps taken).

    Parameters
    ----------
    lr : float, default 0.001
        Learning rate, > 0.
    beta1 : float, default 0.9
        β₁, decay of the first moment ``m``, in [0, 1).
    beta2 : float, default 0.999
        β₂, decay of the second moment ``v``, in [0, 1).

    Raises
    ------
    ValueError
        A hyperparameter is out of range.
    TypeError
        A hyperparameter is not a number.
    """

    state_names = ("m", "v")
    hyperparameter_names = ("lr", "beta1", "beta2")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr = _check_positive("Adam", "lr", lr)
        self.beta1 = _check_rate("Adam", "beta1", beta1)
        self.beta2 = _check_rate("Adam", "beta2", beta2)
        self.iter = 0
        self.m: dict[str, NDArray[np.floating]] | None = None
        self.v: dict[str, NDArray[np.floating]] | None = None

    def update(self, params: Params, grads: Grads) -> None:
        """One Adam step, in place (params and the moments ``m``, ``v``; ``iter`` += 1).

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            The network's parameters, updated in place (float arrays; a plain float is
            replaced under its key instead).
        grads : dict of str to array_like
            A gradient for every key of ``params``, of its shape.

        Raises
        ------
        KeyError
            ``grads`` lacks a key of ``params``.
        TypeError
            A parameter is not a float array or float, or a gradient not real numbers.
        ValueError
            A gradient's shape differs from its parameter's, or a parameter array is
            read-only.
        """
        self._check(params, grads)
        if self.m is None or self.v is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        if self._update_natively(params, grads, (self.m, self.v), self.iter):
            return
        # Bias correction of both moments folded into the step size.
        lr_t = self.lr * float(np.sqrt(1.0 - self.beta2**self.iter)) / (1.0 - self.beta1**self.iter)
        for key in params:
            g = _values(grads[key])
            self.m[key] += (1 - self.beta1) * (g - self.m[key])
            self.v[key] += (1 - self.beta2) * (g**2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + EPS)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}
"""Lower-case name → optimizer class (the trainer's and CLI's ``optimizer=`` values)."""

_NATIVE_RULES: dict[type[Optimizer], str] = {cls: name for name, cls in OPTIMIZERS.items()}


def native_rule(optimizer: object) -> str | None:
    """The native kernels' name for an optimizer's update rule (``"adam"``, …).

    Parameters
    ----------
    optimizer : object
        An optimizer.

    Returns
    -------
    str or None
        The rule's name for one of this module's classes; None for a subclass or an
        optimizer of another library, which may update differently.
    """
    return _NATIVE_RULES.get(type(optimizer))  # type: ignore[arg-type]


def get_optimizer(name: str, **kwargs: float) -> Optimizer:
    """A new optimizer by case-insensitive name, e.g. ``get_optimizer("adam", lr=1e-3)``.

    Parameters
    ----------
    name : str
        sgd, momentum, nesterov, adagrad, rmsprop or adam (keys of :data:`OPTIMIZERS`).
    **kwargs : float
        Hyperparameters of that optimizer (``lr``, ``momentum``, ...).

    Returns
    -------
    Optimizer
        A fresh instance, no state yet.

    Raises
    ------
    ValueError
        Unknown name, or a hyperparameter out of range.
    TypeError
        An argument that optimizer does not take, or not a number.
    """
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(
            f"get_optimizer: unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}"
        )
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"get_optimizer: bad arguments for {cls.__name__}: {err}") from err
