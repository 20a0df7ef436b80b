"""Gradient check: backprop against the numerical gradient (the book's ch05/gradient_check.py).

For each parameter the table gives the largest and mean absolute difference and the
relative error ‖g_num − g_bp‖ / ‖g_bp‖. Backprop differentiates −log(y) where the loss
evaluates −log(y + 1e-7), so even a correct network shows a relative error of about
1e-7 / y_t (y_t: predicted probability of the target class) on top of the O(h²) error
of the central difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["GradCheckRow", "format_table", "gradient_check"]


class Differentiable(Protocol):
    """A network with the book's ``numerical_gradient(x, t)`` and ``gradient(x, t)``."""

    def numerical_gradient(self, x: Any, t: Any) -> dict[str, NDArray[np.floating]]: ...

    def gradient(self, x: Any, t: Any) -> dict[str, NDArray[np.floating]]: ...


@dataclass(frozen=True)
class GradCheckRow:
    """Agreement of one parameter's two gradients.

    ``ok`` holds when ``rel_error <= rtol`` or, for a gradient that is zero by
    construction (a bias before batch normalization), ``max_abs_diff <= atol``.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    mean_abs_diff: float
    rel_error: float
    norm: float
    ok: bool


def gradient_check(
    network: Differentiable,
    x: ArrayLike,
    t: ArrayLike,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-9,
    verbose: bool = True,
) -> list[GradCheckRow]:
    """Compare ``network.numerical_gradient(x, t)`` with ``network.gradient(x, t)``.

    Returns one :class:`GradCheckRow` per parameter (in the network's order) and, with
    ``verbose``, prints them as a table.
    """
    g_num = network.numerical_gradient(x, t)
    g_bp = network.gradient(x, t)
    if set(g_num) != set(g_bp):
        raise ValueError(
            f"gradient_check: numerical_gradient gives {sorted(g_num)} but gradient gives "
            f"{sorted(g_bp)}"
        )
    rows = []
    for key in g_bp:
        bp = np.asarray(g_bp[key], dtype=np.float64)
        num = np.asarray(g_num[key], dtype=np.float64)
        if bp.shape != num.shape:
            raise ValueError(
                f"gradient_check: {key}: numerical gradient has shape {num.shape} but backprop "
                f"has shape {bp.shape}"
            )
        diff = np.abs(num - bp)
        norm = float(np.linalg.norm(bp))
        err = float(np.linalg.norm(num - bp))
        rel = err / norm if norm > 0 else (0.0 if err == 0 else float("inf"))
        max_abs = float(diff.max()) if diff.size else 0.0
        rows.append(
            GradCheckRow(
                name=key,
                shape=bp.shape,
                max_abs_diff=max_abs,
                mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                rel_error=rel,
                norm=norm,
                ok=rel <= rtol or max_abs <= atol,
            )
        )
    if verbose:
        print(format_table(rows))
    return rows


def format_table(rows: list[GradCheckRow]) -> str:
    """The rows as a fixed-width text table."""
    head = f"{'param':<8} {'shape':<12} {'max |diff|':>11} {'mean |diff|':>11} {'rel error':>10} ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<8} {r.shape!s:<12} {r.max_abs_diff:>11.3e} {r.mean_abs_diff:>11.3e} "
            f"{r.rel_error:>10.3e} {'yes' if r.ok else 'NO'}"
        )
    return "\n".join(lines)
