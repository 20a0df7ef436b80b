"""Figures of a training run: accuracy per epoch, loss, misclassified digits.

Each function returns a matplotlib ``Figure`` (shown inline by Jupyter), or with a
``path`` writes it as PNG and returns the path. Figures are built without pyplot, so
drawing never changes the user's backend. matplotlib is optional
(``pip install ferrograd[plot]``) and imported only when a figure is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ferrograd.trainer import History

__all__ = ["new_figure", "plot_accuracy", "plot_history", "plot_loss", "plot_misclassified"]


def new_figure(figsize: tuple[float, float] = (6, 4)) -> Any:
    """A matplotlib Figure made without pyplot (no backend switch, no global figure list).

    Parameters
    ----------
    figsize : tuple of float, default (6, 4)
        Width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        An empty figure.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'ferrograd[plot]'``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "ferrograd.plot needs matplotlib: pip install 'ferrograd[plot]' (or matplotlib)"
        ) from err
    return Figure(figsize=figsize)


def _save(fig: Any, path: str | os.PathLike[str] | None, dpi: int) -> Any:
    """``fig`` itself when ``path`` is None, else the path of the PNG written there."""
    if path is None:
        return fig
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"plot: directory {path.parent} does not exist")
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _epochs(history: History) -> np.ndarray:
    """x values: epochs as fractions of a full epoch (the last may be partial)."""
    iters = np.asarray(history.epoch_iterations, dtype=float)
    full = iters.max() if iters.size else 1.0
    return np.cumsum(iters) / full


def _accuracy_axes(ax: Any, history: History) -> None:
    x = _epochs(history)
    ax.plot(x, history.train_acc, marker="o", markersize=3, label="train acc")
    ax.plot(x, history.test_acc, marker="s", markersize=3, linestyle="--", label="test acc")
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    low = min([*history.train_acc, *history.test_acc], default=0.0)
    ax.set_ylim(max(0.0, min(0.9, low) - 0.02), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def plot_accuracy(
    history: History,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 80,
) -> Any:
    """Train vs test accuracy per epoch (the book's figure 4-12).

    Parameters
    ----------
    history : History
        What ``Trainer.train`` returned.
    path : str or path-like, optional
        Write a PNG there (the folder must exist) instead of returning the Figure.
    title : str, optional
        Figure title.
    dpi : int, default 80
        Resolution of the PNG.

    Returns
    -------
    matplotlib.figure.Figure or pathlib.Path
        The Figure, or ``path`` when one is given.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'ferrograd[plot]'``).
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    fig = new_figure((6, 4))
    ax = fig.subplots()
    _accuracy_axes(ax, history)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_loss(
    history: History,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 80,
    smooth: int = 50,
) -> Any:
    """Mini-batch loss per iteration (light) and its ``smooth``-iteration moving mean.

    Parameters
    ----------
    history : History
        What ``Trainer.train`` returned.
    path : str or path-like, optional
        Write a PNG there (the folder must exist) instead of returning the Figure.
    title : str, optional
        Figure title.
    dpi : int, default 80
        Resolution of the PNG.
    smooth : int, default 50
        Iterations per moving mean (no mean drawn for 1 or more than the run has).

    Returns
    -------
    matplotlib.figure.Figure or pathlib.Path
        The Figure, or ``path`` when one is given.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'ferrograd[plot]'``).
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    fig = new_figure((6, 4))
    ax = fig.subplots()
    _loss_axes(ax, history, smooth)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _loss_axes(ax: Any, history: History, smooth: int) -> None:
    loss = np.asarray(history.train_loss, dtype=float)
    ax.plot(np.arange(loss.size), loss, color="tab:blue", alpha=0.3, linewidth=0.5, label="loss")
    if loss.size >= smooth > 1:
        mean = np.convolve(loss, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(smooth - 1, loss.size), mean, color="tab:blue", label=f"mean of {smooth}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")


def plot_history(
    history: History,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 80,
) -> Any:
    """Accuracy (left) and loss (right) side by side.

    Parameters
    ----------
    history : History
        What ``Trainer.train`` returned.
    path : str or path-like, optional
        Write a PNG there (the folder must exist) instead of returning the Figure.
    title : str, optional
        Figure title.
    dpi : int, default 80
        Resolution of the PNG.

    Returns
    -------
    matplotlib.figure.Figure or pathlib.Path
        The Figure, or ``path`` when one is given.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'ferrograd[plot]'``).
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    fig = new_figure((10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    _accuracy_axes(ax1, history)
    _loss_axes(ax2, history, 50)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_misclassified(
    network: Any,
    x: ArrayLike,
    t: ArrayLike,
    path: str | os.PathLike[str] | None = None,
    *,
    max_images: int = 36,
    dpi: int = 80,
) -> Any:
    """A grid of test digits the network gets wrong, each titled "label→prediction".

    Parameters
    ----------
    network : network
        Anything with ``predict(x)`` giving scores (N, 10).
    x : array_like, shape (N, 784) or (N, 1, 28, 28)
        Images.
    t : array_like
        Labels (N,) or one-hot rows (N, 10).
    path : str or path-like, optional
        Write a PNG there (the folder must exist) instead of returning the Figure.
    max_images : int, default 36
        The first this many mistakes are shown, 6 per row.
    dpi : int, default 80
        Resolution of the PNG.

    Returns
    -------
    matplotlib.figure.Figure or pathlib.Path
        The Figure, or ``path`` when one is given.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'ferrograd[plot]'``).
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    x_arr = np.asarray(x)
    labels = np.asarray(t)
    labels = np.argmax(labels, axis=1) if labels.ndim == 2 else labels
    # 1000 images per predict: a conv net's activations of 10,000 would take gigabytes
    pred = np.concatenate(
        [
            np.argmax(network.predict(x_arr[i : i + 1000]), axis=1)
            for i in range(0, len(x_arr), 1000)
        ]
    )
    wrong = np.flatnonzero(pred != labels)[:max_images]
    cols = 6
    rows = max(1, -(-len(wrong) // cols))
    fig = new_figure((cols * 1.2, rows * 1.35))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), wrong, strict=False):
        ax.imshow(x_arr[i].reshape(28, 28), cmap="gray_r", interpolation="nearest")
        ax.set_title(f"{labels[i]}→{pred[i]}", fontsize=9, color="tab:red")
    fig.suptitle(f"misclassified: {int((pred != labels).sum())} of {len(labels)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
