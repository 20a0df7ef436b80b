"""The book's well-known figures, drawn with ferrograd's own functions.

Each function returns a matplotlib ``Figure`` (Jupyter shows it inline); those with one
panel take ``ax=`` to draw into an existing Axes instead. Figures are made without
pyplot and never switch the backend. The MNIST figures train networks: their size
arguments (``iters``, ``epochs``, ``train_size``, ``dataset="sample"``) keep them quick.
``ferrograd figures [NAME ...] --out DIR`` writes them as PNG; :data:`FIGURES` maps the
names to the functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferrograd.datasets import load_mnist
from ferrograd.functions import relu, sigmoid, step_function
from ferrograd.gradient import gradient_descent, numerical_diff, numerical_gradient_2d
from ferrograd.nets import DeepConvNet, MultiLayerNet, SimpleConvNet, TwoLayerNet
from ferrograd.optimizers import SGD, AdaGrad, Adam, Momentum
from ferrograd.plot import new_figure, plot_history, plot_misclassified
from ferrograd.trainer import Trainer
from ferrograd.util import smooth_curve

__all__ = [
    "FIGURES",
    "activation_functions",
    "batch_norm_comparison",
    "conv_filters",
    "convnet_misclassified",
    "gradient_descent_path",
    "gradient_field",
    "hyperparameter_search",
    "main",
    "misclassified_digits",
    "optimizer_comparison",
    "optimizer_paths",
    "overfitting",
    "tangent_line",
    "training_curves",
    "weight_init_comparison",
    "weight_init_histograms",
]


def _axes(ax: Any, figsize: tuple[float, float] = (6, 4)) -> tuple[Any, Any]:
    """(figure, axes): the given Axes and its figure, or a new one-panel Figure."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.subplots()


def _mnist(dataset: str, train_size: int | None = None) -> tuple[Any, Any, Any, Any]:
    (x, t), (xt, tt) = load_mnist(dataset=dataset, dtype=np.float64)
    if train_size is not None:
        x, t = x[:train_size], t[:train_size]
    return x, t, xt, tt


# --------------------------------------------------------------------------- chapter 3


def activation_functions(
    names: Sequence[str] = ("step", "sigmoid", "relu"), *, ax: Any = None
) -> Any:
    """Step, sigmoid and ReLU over x ∈ [−5, 5] (the book's figures 3-6 to 3-9).

    Parameters
    ----------
    names : sequence of str, default ("step", "sigmoid", "relu")
        Which curves to draw.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).

    Raises
    ------
    ValueError
        ``names`` is empty or holds another name.
    """
    curves: dict[str, tuple[Callable[[Any], Any], str]] = {
        "step": (step_function, "--"),
        "sigmoid": (sigmoid, "-"),
        "relu": (relu, "-."),
    }
    unknown = [n for n in names if n not in curves]
    if unknown or not names:
        raise ValueError(f"activation_functions: names must be among {list(curves)}, got {names}")
    fig, ax = _axes(ax)
    x = np.arange(-5.0, 5.0, 0.01)
    for name in names:
        func, style = curves[name]
        ax.plot(x, func(x), style, label=name)
    ax.set_ylim(-0.1, 5.1 if "relu" in names else 1.1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("activation functions")
    return fig


# --------------------------------------------------------------------------- chapter 4


def _function_1(x: Any) -> Any:
    return 0.01 * x**2 + 0.1 * x


def _function_2(x: Any) -> Any:
    return np.sum(x**2, axis=-1)


def tangent_line(x0: float = 5.0, *, ax: Any = None) -> Any:
    """f(x) = 0.01x² + 0.1x and its tangent at ``x0`` by ``numerical_diff`` (figure 4-7).

    Parameters
    ----------
    x0 : float, default 5.0
        Where the tangent touches.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    fig, ax = _axes(ax)
    x = np.arange(0.0, 20.0, 0.1)
    slope = numerical_diff(_function_1, x0)
    ax.plot(x, _function_1(x), label="f(x) = 0.01x² + 0.1x")
    ax.plot(x, slope * (x - x0) + _function_1(x0), "--", label=f"tangent at x = {x0:g}")
    ax.plot([x0], [_function_1(x0)], "o", color="tab:red")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title(f"numerical_diff: slope {slope:.4f} at x = {x0:g}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def gradient_field(*, ax: Any = None) -> Any:
    """−∇f of f(x0, x1) = x0² + x1² on a grid, by ``numerical_gradient_2d`` (figure 4-9).

    Parameters
    ----------
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    fig, ax = _axes(ax, (6, 6))
    x0, x1 = np.meshgrid(np.arange(-2, 2.5, 0.25), np.arange(-2, 2.5, 0.25))
    points = np.stack([x0.ravel(), x1.ravel()], axis=1)
    grad = numerical_gradient_2d(_function_2, points)
    ax.quiver(points[:, 0], points[:, 1], -grad[:, 0], -grad[:, 1], angles="xy", color="#666666")
    ax.set_xlim(-2, 2)
    ax.set_ylim(-2, 2)
    ax.set_aspect("equal")
    ax.set_xlabel("x0")
    ax.set_ylabel("x1")
    ax.grid(alpha=0.3)
    ax.set_title("−∇(x0² + x1²)")
    return fig


def gradient_descent_path(
    init_x: Sequence[float] = (-3.0, 4.0), lr: float = 0.1, step_num: int = 20, *, ax: Any = None
) -> Any:
    """The points ``gradient_descent`` visits on x0² + x1² from (−3, 4) (figure 4-10).

    Parameters
    ----------
    init_x : sequence of float, default (-3.0, 4.0)
        Starting point.
    lr : float, default 0.1
        Learning rate.
    step_num : int, default 20
        Steps.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    fig, ax = _axes(ax, (6, 6))
    x, history = gradient_descent(
        _function_2, np.array(init_x, dtype=float), lr, step_num, return_history=True
    )
    ax.plot([-5, 5], [0, 0], "--b", linewidth=0.8)
    ax.plot([0, 0], [-5, 5], "--b", linewidth=0.8)
    ax.plot(history[:, 0], history[:, 1], "o")
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-4.5, 4.5)
    ax.set_xlabel("X0")
    ax.set_ylabel("X1")
    ax.set_title(f"gradient descent, lr = {lr:g}: ends at ({x[0]:.3g}, {x[1]:.3g})")
    return fig


def training_curves(
    epochs: int = 17, dataset: str = "mnist", *, seed: int | None = 0, ax: Any = None
) -> Any:
    """Train and test accuracy per epoch of the chapter 4 two-layer net (figure 4-12).

    A 784-50-10 sigmoid net, SGD lr 0.1, batch 100; without ``ax`` accuracy and loss side
    by side, with ``ax`` only the accuracy panel, drawn there.

    Parameters
    ----------
    epochs : int, default 17
        Epochs to train (the book's 10,000 iterations are about 17).
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    x, t, xt, tt = _mnist(dataset)
    net = TwoLayerNet(784, 50, 10, seed=seed)
    hist = Trainer(
        net, x, t, xt, tt, epochs=epochs, optimizer=SGD(lr=0.1), seed=seed, verbose=False
    ).train()
    if ax is None:
        return plot_history(hist, title="two-layer net (ch. 4), SGD lr 0.1")
    from ferrograd.plot import _accuracy_axes

    _accuracy_axes(ax, hist)
    return ax.figure


def misclassified_digits(
    epochs: int = 5, dataset: str = "mnist", *, seed: int | None = 0, max_images: int = 36
) -> Any:
    """Test digits the chapter 5 ReLU two-layer net gets wrong after ``epochs`` epochs.

    Parameters
    ----------
    epochs : int, default 5
        Epochs to train (784-50-10 ReLU, SGD lr 0.1).
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.
    max_images : int, default 36
        Mistakes shown.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    x, t, xt, tt = _mnist(dataset)
    net = TwoLayerNet(784, 50, 10, activation="relu", seed=seed)
    Trainer(
        net, x, t, xt, tt, epochs=epochs, optimizer=SGD(lr=0.1), seed=seed, verbose=False
    ).train()
    return plot_misclassified(net, xt, tt, max_images=max_images)


# --------------------------------------------------------------------------- chapters 7, 8


def _train_convnet(
    net: Any, epochs: int, dataset: str, seed: int | None, train_size: int | None
) -> None:
    """``train_convnet.py``'s run: Adam lr 0.001, batch 100, ``epochs`` epochs (for
    SimpleConvNet the fused native step), on (N, 1, 28, 28) images."""
    x, t, xt, tt = _mnist(dataset, train_size)
    images = (x.reshape(-1, 1, 28, 28), xt.reshape(-1, 1, 28, 28))
    Trainer(
        net, images[0], t, images[1], tt, epochs=epochs, optimizer=Adam(lr=0.001),
        evaluate_sample_num_per_epoch=1000, seed=seed, verbose=False,
    ).train()  # fmt: skip


def conv_filters(
    epochs: int = 1,
    dataset: str = "mnist",
    *,
    seed: int | None = 0,
    train_size: int | None = None,
    params: str | os.PathLike[str] | None = None,
) -> Any:
    """The chapter 7 SimpleConvNet's first-layer filters before and after training (figure 7-24).

    The 30 5×5 filters of W1 as the book's ``visualize_filter.py`` draws them (gray,
    darker = larger): random at first, edge and blob detectors after ``epochs`` epochs
    of ``train_convnet.py``'s training (Adam lr 0.001, batch 100, float32), or, with
    ``params``, the weights of a file written by ``save_params`` (float64, the book's
    dtype) instead of training.

    Parameters
    ----------
    epochs : int, default 1
        Epochs to train (Adam lr 0.001, batch 100, float32) when ``params`` is None.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the initial weights and mini-batches; None: NumPy's global generator.
    train_size : int, optional
        Train on the first ``train_size`` images only (default: all).
    params : path, optional
        An npz file of ``SimpleConvNet.save_params`` (float64) to show instead of training.

    Returns
    -------
    matplotlib.figure.Figure
        Two subfigures: the initial filters and the trained ones.
    """
    dtype = np.float32 if params is None else np.float64
    net = SimpleConvNet(seed=seed, dtype=dtype)
    before = net.params["W1"].copy()
    if params is None:
        _train_convnet(net, epochs, dataset, seed, train_size)
        after_title = f"after {epochs} epoch{'s' if epochs != 1 else ''} of training"
    else:
        net.load_params(params)
        after_title = f"trained ({os.fspath(params)})"
    fig = new_figure((8, 5.6))
    halves = fig.subfigures(2, 1)
    for half, w, title in ((halves[0], before, "random initial weights"), (halves[1], net.params["W1"], after_title)):  # fmt: skip
        columns = 10
        axes = half.subplots(-(-w.shape[0] // columns), columns, squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, f in zip(axes.ravel(), w, strict=False):
            ax.imshow(f[0], cmap="gray_r", interpolation="nearest")
        half.suptitle(title, fontsize=10)
    return fig


def convnet_misclassified(
    epochs: int = 1,
    dataset: str = "mnist",
    *,
    seed: int | None = 0,
    train_size: int | None = None,
    net: str = "simple",
    params: str | os.PathLike[str] | None = None,
    max_images: int = 20,
) -> Any:
    """Test digits a convolutional net gets wrong, as ``ch08/misclassified_mnist.py`` shows them.

    ``net`` "simple" (SimpleConvNet, ch. 7) or "deep" (DeepConvNet, ch. 8, as the book's
    script; no fused step, so training it takes far longer), trained ``epochs`` epochs
    as ``train_convnet.py``, or loaded from ``params`` (an npz written by
    ``save_params``, e.g. by ``ferrograd train --net deep-conv --save FILE``). The first
    ``max_images`` mistakes (the book shows 20), titled "label→prediction".

    Parameters
    ----------
    epochs : int, default 1
        Epochs to train (Adam lr 0.001, batch 100, float32) when ``params`` is None.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the initial weights and mini-batches; None: NumPy's global generator.
    train_size : int, optional
        Train on the first ``train_size`` images only (default: all).
    net : {"simple", "deep"}, default "simple"
        SimpleConvNet (chapter 7) or DeepConvNet (chapter 8).
    params : path, optional
        An npz file of the net's ``save_params`` (float64) to load instead of training.
    max_images : int, default 20
        Mistakes shown.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Raises
    ------
    ValueError
        ``net`` is neither "simple" nor "deep".
    """
    if net not in ("simple", "deep"):
        raise ValueError(f"convnet_misclassified: net must be 'simple' or 'deep', got {net!r}")
    dtype = np.float32 if params is None else np.float64
    model: Any = SimpleConvNet(seed=seed, dtype=dtype) if net == "simple" else DeepConvNet(seed=seed, dtype=dtype)  # fmt: skip
    if params is None:
        _train_convnet(model, epochs, dataset, seed, train_size)
    else:
        model.load_params(params)
    _, _, xt, tt = _mnist(dataset)
    fig = plot_misclassified(model, xt.reshape(-1, 1, 28, 28), tt, max_images=max_images)
    return fig


# --------------------------------------------------------------------------- chapter 6


def optimizer_paths(steps: int = 30) -> Any:
    """SGD, Momentum, AdaGrad and Adam from (−7, 2) on f = x²/20 + y² (figure 6-8).

    Parameters
    ----------
    steps : int, default 30
        Updates per optimizer (the book's learning rates: 0.95, 0.1, 1.5, 0.3).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    optimizers = {
        "SGD": SGD(lr=0.95),
        "Momentum": Momentum(lr=0.1),
        "AdaGrad": AdaGrad(lr=1.5),
        "Adam": Adam(lr=0.3),
    }
    xs, ys = np.meshgrid(np.arange(-10, 10, 0.01), np.arange(-5, 5, 0.01))
    z = xs**2 / 20.0 + ys**2
    z[z > 7] = 0  # the book's contour cut-off
    fig = new_figure((9, 7))
    for ax, (name, opt) in zip(fig.subplots(2, 2).ravel(), optimizers.items(), strict=True):
        params = {"x": -7.0, "y": 2.0}  # plain floats, as the book's script
        path = []
        for _ in range(steps):
            path.append((params["x"], params["y"]))
            opt.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
        px, py = np.array(path).T
        ax.contour(xs, ys, z)
        ax.plot(px, py, "o-", color="red", markersize=3)
        ax.plot(0, 0, "+")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle("f(x, y) = x²/20 + y²")
    fig.tight_layout()
    return fig


def weight_init_histograms(activation: str = "sigmoid", layers: int = 5, n: int = 1000) -> Any:
    """Activation histograms of 5 layers for std 1, 0.01, Xavier, He (figures 6-10 to 6-14).

    One row per initial weight scale, one column per layer of 100 units; inputs are ``n``
    standard-normal samples (seed 0).

    Parameters
    ----------
    activation : {"sigmoid", "tanh", "relu"}, default "sigmoid"
        The layers' activation.
    layers : int, default 5
        Layers (columns).
    n : int, default 1000
        Input samples.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Raises
    ------
    ValueError
        ``activation`` is unknown.
    """
    acts: dict[str, Callable[[Any], Any]] = {"sigmoid": sigmoid, "tanh": np.tanh, "relu": relu}
    if activation not in acts:
        raise ValueError(f"weight_init_histograms: activation must be one of {list(acts)}")
    node_num = 100
    scales = {
        "std 1": 1.0,
        "std 0.01": 0.01,
        "Xavier": np.sqrt(1.0 / node_num),
        "He": np.sqrt(2.0 / node_num),
    }
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((n, node_num))
    fig = new_figure((2.2 * layers, 1.9 * len(scales)))
    axes = fig.subplots(len(scales), layers, squeeze=False)
    for row, (label, scale) in enumerate(scales.items()):
        x = x0
        for i in range(layers):
            w = rng.standard_normal((node_num, node_num)) * scale
            x = np.asarray(acts[activation](x @ w))
            ax = axes[row, i]
            ax.hist(x.ravel(), 30, range=(0, 1) if activation != "tanh" else (-1, 1))
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"layer {i + 1}")
            if i == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"{activation} activations by initial weight scale")
    fig.tight_layout()
    return fig


def _loss_curves(
    nets: dict[str, tuple[Any, Any]], iters: int, dataset: str, seed: int | None, ax: Any
) -> Any:
    x, t, _, _ = _mnist(dataset)
    rng = np.random.default_rng(seed)
    losses: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(iters):
        idx = rng.integers(0, x.shape[0], 128)  # one mini-batch of 128 for every contender
        for key, (net, opt) in nets.items():
            opt.update(net.params, net.gradient(x[idx], t[idx]))
            losses[key].append(net.loss(x[idx], t[idx]))
    fig, ax = _axes(ax)
    for key, loss in losses.items():
        curve = smooth_curve(loss) if len(loss) >= 11 else np.asarray(loss)
        ax.plot(np.arange(len(loss)), curve, label=key)
    ax.set_xlabel("iterations")
    ax.set_ylabel("loss")
    ax.set_ylim(0, max(1.0, min(2.5, float(np.max([lo[0] for lo in losses.values()])))))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def optimizer_comparison(
    iters: int = 2000, dataset: str = "mnist", *, seed: int | None = 0, ax: Any = None
) -> Any:
    """Smoothed MNIST loss of SGD, Momentum, AdaGrad and Adam (figure 6-9).

    A 784-100-100-100-100-10 ReLU net per optimizer (default hyperparameters), the same
    mini-batches of 128.

    Parameters
    ----------
    iters : int, default 2000
        Iterations.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    opts = {"SGD": SGD(), "Momentum": Momentum(), "AdaGrad": AdaGrad(), "Adam": Adam()}
    nets = {
        k: (MultiLayerNet(784, [100] * 4, 10, seed=None if seed is None else seed + i), o)
        for i, (k, o) in enumerate(opts.items())
    }
    fig = _loss_curves(nets, iters, dataset, seed, ax)
    fig.axes[-1].set_title("optimizers on MNIST")
    return fig


def weight_init_comparison(
    iters: int = 2000, dataset: str = "mnist", *, seed: int | None = 0, ax: Any = None
) -> Any:
    """Smoothed MNIST loss for initial weights std 0.01, Xavier and He (figure 6-15).

    A 784-100-100-100-100-10 ReLU net per initialisation, SGD lr 0.01, the same
    mini-batches of 128.

    Parameters
    ----------
    iters : int, default 2000
        Iterations.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    inits: dict[str, str | float] = {"std=0.01": 0.01, "Xavier": "sigmoid", "He": "relu"}
    nets = {
        k: (MultiLayerNet(784, [100] * 4, 10, weight_init_std=w, seed=seed), SGD(lr=0.01))
        for k, w in inits.items()
    }
    fig = _loss_curves(nets, iters, dataset, seed, ax)
    fig.axes[-1].set_title("weight init on MNIST (ReLU, SGD)")
    return fig


def batch_norm_comparison(
    n_scales: int = 16,
    epochs: int = 20,
    train_size: int = 1000,
    dataset: str = "mnist",
    *,
    seed: int | None = 0,
) -> Any:
    """Train accuracy with and without batch norm over weight scales 1 to 1e-4 (figure 6-19).

    5 hidden layers of 100, SGD lr 0.01, batch 100; one panel per weight scale.

    Parameters
    ----------
    n_scales : int, default 16
        Weight scales, log-spaced from 1 to 1e-4.
    epochs : int, default 20
        Epochs per run.
    train_size : int, default 1000
        Training samples used.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    x, t, xt, tt = _mnist(dataset, train_size)
    scales = np.logspace(0, -4, num=n_scales)
    cols = int(np.ceil(np.sqrt(n_scales)))
    rows = int(np.ceil(n_scales / cols))
    fig = new_figure((2.6 * cols, 2.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_scales:]:
        ax.axis("off")
    for ax, w in zip(axes, scales, strict=False):
        for bn, style in ((True, "-"), (False, "--")):
            net = MultiLayerNet(
                784, [100] * 5, 10, weight_init_std=float(w), use_batchnorm=bn, seed=seed
            )
            acc = (
                Trainer(
                    net,
                    x,
                    t,
                    xt,
                    tt,
                    epochs=epochs,
                    optimizer=SGD(lr=0.01),
                    evaluate_sample_num_per_epoch=train_size,
                    seed=seed,
                    verbose=False,
                )
                .train()
                .train_acc
            )
            ax.plot(np.arange(1, len(acc) + 1), acc, style, label="batch norm" if bn else "none")
        ax.set_title(f"W: {w:.2g}", fontsize=9)
        ax.set_ylim(0, 1.0)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("train accuracy: batch norm (solid) vs none (dashed)", fontsize=10)
    fig.tight_layout()
    return fig


def overfitting(
    epochs: int = 201, train_size: int = 300, dataset: str = "mnist", *, seed: int | None = 0
) -> Any:
    """Over-fitting: train vs test accuracy, plain, weight decay, dropout (figs 6-20 to 6-23).

    A 6×100 ReLU net on ``train_size`` samples, SGD lr 0.01: no regularization, weight
    decay λ = 0.1, dropout ratio 0.2.

    Parameters
    ----------
    epochs : int, default 201
        Epochs per run.
    train_size : int, default 300
        Training samples used.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    x, t, xt, tt = _mnist(dataset, train_size)
    variants: dict[str, dict[str, Any]] = {
        "no regularization": {},
        "weight decay λ=0.1": {"weight_decay_lambda": 0.1},
        "dropout 0.2": {"use_dropout": True, "dropout_ratio": 0.2},
    }
    fig = new_figure((13, 3.8))
    for ax, (title, kw) in zip(fig.subplots(1, 3), variants.items(), strict=True):
        net = MultiLayerNet(784, [100] * 6, 10, seed=seed, **kw)
        hist = Trainer(
            net, x, t, xt, tt, epochs=epochs, optimizer=SGD(lr=0.01), seed=seed, verbose=False
        ).train()
        ep = np.arange(1, hist.epochs + 1)
        ax.plot(ep, hist.train_acc, "o-", markevery=10, markersize=3, label="train")
        ax.plot(ep, hist.test_acc, "s-", markevery=10, markersize=3, label="test")
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("epochs")
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def hyperparameter_search(
    trials: int = 100,
    epochs: int = 50,
    dataset: str = "mnist",
    *,
    seed: int | None = 0,
    ax: Any = None,
) -> Any:
    """Random search over lr and weight decay: validation accuracy per trial (section 6.5).

    One point per trial at (lr, λ), coloured by accuracy, the best three labelled; the
    trials run in this process (:func:`ferrograd.search.random_search`).

    Parameters
    ----------
    trials : int, default 100
        Trials.
    epochs : int, default 50
        Epochs per trial.
    dataset : {"mnist", "sample"}, default "mnist"
        Full MNIST or the shipped 5,000/1,000 sample.
    seed : int, optional, default 0
        Seed of the weights and mini-batches; None: NumPy's global generator.
    ax : matplotlib.axes.Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (with ``ax``: the Axes' figure).
    """
    from ferrograd.search import random_search

    x, t, _, _ = _mnist(dataset)
    results = random_search(x, t, trials=trials, epochs=epochs, processes=1, seed=seed)
    fig, ax = _axes(ax, (6.5, 4.5))
    lr = np.array([r.lr for r in results])
    wd = np.array([r.weight_decay for r in results])
    acc = np.array([r.val_acc for r in results])
    points = ax.scatter(lr, wd, c=acc, cmap="viridis", vmin=0, vmax=max(acc.max(), 0.1))
    fig.colorbar(points, ax=ax, label="validation accuracy")
    for i in np.argsort(acc)[::-1][:3]:
        ax.annotate(f"{acc[i]:.2f}", (lr[i], wd[i]), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay λ")
    ax.set_title(f"random search: {trials} trials of {epochs} epochs")
    return fig


FIGURES: dict[str, Callable[..., Any]] = {
    "activation_functions": activation_functions,
    "tangent_line": tangent_line,
    "gradient_field": gradient_field,
    "gradient_descent_path": gradient_descent_path,
    "training_curves": training_curves,
    "misclassified_digits": misclassified_digits,
    "optimizer_paths": optimizer_paths,
    "weight_init_histograms": weight_init_histograms,
    "optimizer_comparison": optimizer_comparison,
    "weight_init_comparison": weight_init_comparison,
    "batch_norm_comparison": batch_norm_comparison,
    "overfitting": overfitting,
    "hyperparameter_search": hyperparameter_search,
    "conv_filters": conv_filters,
    "convnet_misclassified": convnet_misclassified,
}
"""Figure name → function (``ferrograd figures NAME``)."""

# Small runs for ``--quick``: seconds instead of minutes, same figures.
_QUICK: dict[str, dict[str, Any]] = {
    "training_curves": {"epochs": 3},
    "misclassified_digits": {"epochs": 2},
    "optimizer_comparison": {"iters": 200},
    "weight_init_comparison": {"iters": 200},
    "batch_norm_comparison": {"n_scales": 4, "epochs": 5, "train_size": 300},
    "overfitting": {"epochs": 30},
    "hyperparameter_search": {"trials": 10, "epochs": 5},
    "conv_filters": {"epochs": 1, "train_size": 5000},
    "convnet_misclassified": {"epochs": 1, "train_size": 5000},
}
_USES_MNIST = set(_QUICK)


def main(argv: Sequence[str] | None = None, prog: str = "python -m ferrograd.figures") -> int:
    """The ``ferrograd figures`` command: ``[NAME ...] --out DIR [--dataset D] [--quick]``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; default ``sys.argv[1:]``.
    prog : str, default "python -m ferrograd.figures"
        Program name in help and error messages.

    Returns
    -------
    int
        Exit code: 0, or 2 for an unknown name or an unusable ``--out``.
    """
    parser = argparse.ArgumentParser(prog=prog, description="Draw the book's figures as PNG.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="figures to draw (default: all)")
    parser.add_argument("--out", default=".", help="directory for NAME.png (default: .)")
    parser.add_argument("--list", action="store_true", help="list the figure names and exit")
    parser.add_argument(
        "--dataset", choices=("mnist", "sample"), default="mnist", help="data for MNIST figures"
    )
    parser.add_argument("--quick", action="store_true", help="short training runs (seconds)")
    parser.add_argument("--dpi", type=int, default=80)
    ns = parser.parse_args(argv)
    if ns.list:
        for name, func in FIGURES.items():
            print(f"{name:24} {(func.__doc__ or '').splitlines()[0]}")
        return 0
    unknown = [n for n in ns.names if n not in FIGURES]
    if unknown:
        print(f"{prog}: unknown figure(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    out = Path(ns.out)
    try:
        out.mkdir(parents=True, exist_ok=True)  # a new folder is made, as `--out` says
    except OSError as err:
        print(f"{prog}: --out {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    for name in ns.names or list(FIGURES):
        kwargs: dict[str, Any] = dict(_QUICK.get(name, {})) if ns.quick else {}
        if name in _USES_MNIST:
            kwargs["dataset"] = ns.dataset
        fig = FIGURES[name](**kwargs)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=ns.dpi)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
