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
    """Agreement of one parameter's two gradients (a row of :func:`gradient_check`'s table).

    Attributes
    ----------
    name : str
        The parameter's key (W1, b1, ...).
    shape : tuple of int
        Its shape.
    max_abs_diff, mean_abs_diff : float
        Largest and mean |g_num − g_bp| over its entries.
    rel_error : float
        ‖g_num − g_bp‖ / ‖g_bp‖ (0 when both are 0, inf when only g_bp is).
    norm : float
        ‖g_bp‖.
    ok : bool
        ``rel_error <= rtol``, or ``max_abs_diff <= atol`` for a gradient that is zero by
        construction (a bias before batch normalization).
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
    """Compare ``network.numerical_gradient(x, t)`` with ``network.gradient(x, t)`` (ch. 5).

    Parameters
    ----------
    network : object
        A net with the book's ``numerical_gradient(x, t)`` and ``gradient(x, t)``.
    x : array_like
        A few input samples, e.g. (3, 784) (the numerical gradient is slow).
    t : array_like
        Their targets: labels (N,) or one-hot rows (N, K).
    rtol : float, default 1e-5
        Largest relative error that counts as agreement.
    atol : float, default 1e-9
        Largest absolute difference that counts as agreement for a zero gradient.
    verbose : bool, default True
        Print the rows as a table.

    Returns
    -------
    list of GradCheckRow
        One row per parameter, in the network's order.

    Raises
    ------
    ValueError
        The two gradients have different keys, or a parameter's two shapes differ.
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
    """The rows as a fixed-width text table, one line per parameter under a header.

    Parameters
    ----------
    rows : list of GradCheckRow
        As :func:`gradient_check` returns them.

    Returns
    -------
    str
        The table (no trailing newline).
    """
    head = f"{'param':<8} {'shape':<12} {'max |diff|':>11} {'mean |diff|':>11} {'rel error':>10} ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<8} {r.shape!s:<12} {r.max_abs_diff:>11.3e} {r.mean_abs_diff:>11.3e} "
            f"{r.rel_error:>10.3e} {'yes' if r.ok else 'NO'}"
        )
    return "\n".join(lines)
