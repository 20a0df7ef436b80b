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


# ---- chapter 7: convolution and max pooling, one filter offset (ky, kx) at a time ----


def _padded(x, pad):
    return np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])


def _out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _at(a, ky, kx, oh, ow, stride):
    """The entries offset (ky, kx) of every window: a[:, :, ky + stride·i, kx + stride·j]."""
    return a[
        :, :, ky : ky + stride * (oh - 1) + 1 : stride, kx : kx + stride * (ow - 1) + 1 : stride
    ]


def windows(x, fh, fw, stride=1, pad=0):
    """(N, C, oh, ow, fh, fw): the zero-padded window at each output position."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, fh, stride, pad), _out_size(w, fw, stride, pad)
    xp = _padded(x, pad)
    out = np.zeros((n, c, oh, ow, fh, fw), dtype=x.dtype)
    for ky in range(fh):
        for kx in range(fw):
            out[..., ky, kx] = _at(xp, ky, kx, oh, ow, stride)
    return out


def im2col(x, fh, fw, stride=1, pad=0):
    """Rows (n, i, j), columns (c, ky, kx) of the windows."""
    win = windows(x, fh, fw, stride, pad)
    n, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * fh * fw)


def col2im(col, shape, fh, fw, stride=1, pad=0):
    """Σ of every window's entries back at their pixels (the adjoint of im2col)."""
    n, c, h, w = shape
    oh, ow = _out_size(h, fh, stride, pad), _out_size(w, fw, stride, pad)
    win = col.reshape(n, oh, ow, c, fh, fw)
    img = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype)
    for ky in range(fh):
        for kx in range(fw):
            _at(img, ky, kx, oh, ow, stride)[...] += win[:, :, :, :, ky, kx].transpose(0, 3, 1, 2)
    return img[:, :, pad : pad + h, pad : pad + w]


def conv_forward(x, W, b, stride=1, pad=0):
    """out[n, f, i, j] = b[f] + Σ_{c,ky,kx} W[f, c, ky, kx]·xpad[n, c, s·i + ky, s·j + kx]."""
    fn, _, fh, fw = W.shape
    n, _, h, w = x.shape
    oh, ow = _out_size(h, fh, stride, pad), _out_size(w, fw, stride, pad)
    xp = _padded(x, pad)
    out = np.zeros((n, fn, oh, ow), dtype=x.dtype) + b.reshape(1, fn, 1, 1)
    for ky in range(fh):
        for kx in range(fw):
            out += np.einsum("nchw,fc->nfhw", _at(xp, ky, kx, oh, ow, stride), W[:, :, ky, kx])
    return out


def conv_backward(x, W, dout, stride=1, pad=0):
    """(dx, dW, db) of the convolution for upstream gradient dout (N, FN, oh, ow)."""
    _, _, fh, fw = W.shape
    _, _, oh, ow = dout.shape
    xp = _padded(x, pad)
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    for ky in range(fh):
        for kx in range(fw):
            dW[:, :, ky, kx] = np.einsum("nfhw,nchw->fc", dout, _at(xp, ky, kx, oh, ow, stride))
            _at(dxp, ky, kx, oh, ow, stride)[...] += np.einsum(
                "nfhw,fc->nchw", dout, W[:, :, ky, kx]
            )
    h, w = x.shape[2:]
    return dxp[:, :, pad : pad + h, pad : pad + w], dW, dout.sum(axis=(0, 2, 3))


def pool_forward(x, ph, pw, stride=1, pad=0):
    """(out, arg): max of each zero-padded window and its first index ky·pw + kx."""
    win = windows(x, ph, pw, stride, pad)
    flat = win.reshape(*win.shape[:4], ph * pw)
    return flat.max(axis=-1), flat.argmax(axis=-1)


def pool_backward(dout, arg, shape, ph, pw, stride=1, pad=0):
    """dx: each dout entry added at the pixel of its window's maximum."""
    n, c, h, w = shape
    _, _, oh, ow = dout.shape
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dout.dtype)
    for ky in range(ph):
        for kx in range(pw):
            _at(dxp, ky, kx, oh, ow, stride)[...] += np.where(arg == ky * pw + kx, dout, 0)
    return dxp[:, :, pad : pad + h, pad : pad + w]
