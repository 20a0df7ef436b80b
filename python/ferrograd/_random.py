"""Where random draws come from: a seeded Generator, or NumPy's global generator.

With ``seed=None`` ferrograd draws from NumPy's global generator (``np.random.seed``,
``np.random.randn``, ...) exactly as the book's code does, so ``np.random.seed(0)``
before building a network and training reproduces a run, and a book script gets the
book's weights and mini-batches. With an int seed it uses ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GlobalGenerator", "make_rng"]


def _global_bit_generator() -> np.random.BitGenerator:
    get = getattr(np.random, "get_bit_generator", None)  # NumPy >= 1.25
    if get is not None:
        return get()
    return np.random.mtrand._rand._bit_generator  # type: ignore[attr-defined]


class GlobalGenerator(np.random.Generator):
    """A ``numpy.random.Generator`` whose draws are the legacy global ones.

    ``standard_normal``, ``random``, ``integers``, ``uniform``, ``normal``, ``choice`` and
    ``permutation`` call ``np.random.randn``/``rand``/``randint``/... (the book's calls, same
    numbers); every other method draws from the same global bit generator.
    """

    def __init__(self) -> None:
        super().__init__(_global_bit_generator())

    def __repr__(self) -> str:
        return "GlobalGenerator(numpy.random global state)"

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        # np.random.randn(*shape) is standard_normal(shape): the book's weight init
        y = np.random.standard_normal(size)
        return np.asarray(y, dtype=dtype) if out is None else np.copyto(out, y) or out

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return np.random.normal(loc, scale, size)

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        # np.random.rand(*shape): the book's dropout masks
        y = np.random.random_sample(size)
        return np.asarray(y, dtype=dtype) if out is None else np.copyto(out, y) or out

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        return np.random.uniform(low, high, size)

    def integers(
        self,
        low: Any,
        high: Any = None,
        size: Any = None,
        dtype: Any = np.int64,
        endpoint: bool = False,
    ) -> Any:
        # np.random.choice(n, size) draws randint(0, n, size): the book's mini-batches
        if high is None:
            low, high = 0, low
        if endpoint:
            high = high + 1
        drawn = np.random.randint(low, high, size=size)
        return drawn if size is None else drawn.astype(dtype, copy=False)

    def choice(
        self, a: Any, size: Any = None, replace: bool = True, p: Any = None, **_: Any
    ) -> Any:
        return np.random.choice(a, size, replace, p)

    def permutation(self, x: Any, axis: int = 0) -> Any:
        return np.random.permutation(x)


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """``default_rng(seed)`` for an int seed (or the Generator itself); the global one for None."""
    if seed is None:
        return GlobalGenerator()
    return np.random.default_rng(seed)
