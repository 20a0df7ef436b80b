"""The book's formulas in plain NumPy: the oracle every kernel is tested against."""

from __future__ import annotations

import numpy as np

DELTA = 1e-7
H = 1e-4


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_grad(x):
    return (1.0 - sigmoid(x)) * sigmoid(x)


def relu(x):
    return np.maximum(0, x)


def relu_grad(x):
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)  # overflow guard
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """−Σ t·log(y + δ) / n, with integer labels read as one-hot."""
    if y.ndim == 1:
        t = np.reshape(t, (1, -1)) if np.asarray(t).ndim else np.reshape(t, (1,))
        y = y.reshape(1, y.size)
    batch_size = y.shape[0]
    t = np.asarray(t)
    if t.ndim == 1 and t.dtype.kind in "iu":
        return -np.sum(np.log(y[np.arange(batch_size), t] + DELTA)) / batch_size
    return -np.sum(t * np.log(y + DELTA)) / batch_size


def sum_squares_error(y, t):
    return 0.5 * np.sum((y - t) ** 2)


def two_layer_loss(params, x, t, activation="sigmoid"):
    act = sigmoid if activation == "sigmoid" else relu
    z1 = act(x @ params["W1"] + params["b1"])
    y = softmax(z1 @ params["W2"] + params["b2"])
    return cross_entropy_error(y, t)


def numerical_gradient(f, x):
    """The book's central difference over every element of x (restored after each probe)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        tmp = x[idx]
        x[idx] = tmp + H
        fxh1 = f(x)
        x[idx] = tmp - H
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * H)
        x[idx] = tmp
        it.iternext()
    return grad


def two_layer_backprop(params, x, t, activation="sigmoid"):
    """The book's TwoLayerNet.gradient (chapter 4 with sigmoid, chapter 5 with ReLU)."""
    n = x.shape[0]
    a1 = x @ params["W1"] + params["b1"]
    z1 = sigmoid(a1) if activation == "sigmoid" else relu(a1)
    y = softmax(z1 @ params["W2"] + params["b2"])
    t = np.asarray(t)
    if t.ndim == 1:
        t = np.eye(y.shape[1], dtype=y.dtype)[t]
    dy = (y - t) / n
    grads = {"W2": z1.T @ dy, "b2": dy.sum(axis=0)}
    dz1 = dy @ params["W2"].T
    da1 = dz1 * (sigmoid_grad(a1) if activation == "sigmoid" else (a1 > 0))
    grads["W1"] = x.T @ da1
    grads["b1"] = da1.sum(axis=0)
    return grads
