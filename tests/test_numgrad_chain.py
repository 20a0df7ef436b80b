"""The numerical gradient of MultiLayerNet / MultiLayerNetExtend (``_core.
chain_numerical_gradient``): the fast probes against the brute force and the book's
loop, with batch norm, dropout, weight decay, and against backprop."""

from __future__ import annotations

import numpy as np
import pytest
from ferrograd import _core
from ferrograd.gradient import numerical_gradient as book_loop
from ferrograd.nets import MultiLayerNet, MultiLayerNetExtend
from ferrograd.nets._common import same_dropout_masks

CONFIGS = {
    "plain relu": dict(activation="relu"),
    "sigmoid, weight decay": dict(activation="sigmoid", weight_decay_lambda=0.1),
    "batch norm": dict(activation="relu", use_batchnorm=True),
    "dropout": dict(activation="sigmoid", use_dropout=True, dropout_ratio=0.3),
    "everything": dict(
        activation="relu", use_batchnorm=True, use_dropout=True, weight_decay_lambda=0.05
    ),
}


def book_gradient(net, x, t):
    """The book's loop: every parameter probed through the Python layers (the masks
    the next gradient() draws)."""
    rewind = same_dropout_masks(list(net.layers.values()), list(net.layers.values()))
    x2, t2 = net._batch("check", x), net._targets("check", t, len(x))

    def loss(_):
        rewind()
        return net._loss(x2, t2, train_flg=True)

    grads = {key: book_loop(loss, value) for key, value in net.params.items()}
    rewind()
    return grads


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", ["labels", "one-hot"])
def test_native_equals_the_book_loop(config, kind, rng):
    net = MultiLayerNet(12, [7, 6], 4, seed=1, **CONFIGS[config])
    x = rng.standard_normal((6, 12))
    x[:, 3] = 0.0  # an input that is 0 in every row: its W1 row probes move nothing
    labels = rng.integers(0, 4, 6)
    t = labels if kind == "labels" else np.eye(4)[labels]
    native = net.numerical_gradient(x, t)
    book = book_gradient(net, x, t)
    assert list(native) == list(net.params)
    for key, value in book.items():
        np.testing.assert_allclose(native[key], value, rtol=0, atol=1e-9, err_msg=key)
    assert max(np.abs(v).max() for v in book.values()) > 1e-2  # not trivially zero
    decay = CONFIGS[config].get("weight_decay_lambda", 0.0)
    np.testing.assert_allclose(native["W1"][3], decay * net.params["W1"][3], atol=1e-12)
    # and backprop agrees, as the book's gradient check shows
    backprop = net.gradient(x, t)
    for key, value in native.items():
        np.testing.assert_allclose(backprop[key], value, rtol=0, atol=1e-5, err_msg=key)


def test_fast_equals_bruteforce_in_the_kernel(rng):
    """The native brute force (the definition) and the fast probes, layer tuples given."""
    w = [rng.standard_normal(s) for s in ((9, 5), (5, 4), (4, 3))]
    b = [0.1 * rng.standard_normal(s[1]) for s in ((9, 5), (5, 4), (4, 3))]
    mask = (rng.random((4, 4)) > 0.4).astype(np.float64)
    layers = [
        (w[0], b[0], 1.0 + 0.2 * rng.standard_normal(5), 0.1 * rng.standard_normal(5), None),
        (w[1], b[1], None, None, mask),
        (w[2], b[2], None, None, None),
    ]
    x, t = rng.standard_normal((4, 9)), np.array([0, 2, 1, 2])
    fast = _core.chain_numerical_gradient(layers, x, t, activation="sigmoid", weight_decay=0.2)
    brute = _core.chain_numerical_gradient(
        layers, x, t, activation="sigmoid", weight_decay=0.2, method="bruteforce"
    )
    for f, g in zip(fast, brute, strict=True):
        for a, c in zip(f, g, strict=True):
            assert (a is None) == (c is None)
            if a is not None:
                np.testing.assert_allclose(a, c, rtol=0, atol=1e-9)


def test_float32_net_and_the_extend_class(rng):
    net = MultiLayerNetExtend(10, [6], 3, use_batchnorm=True, seed=2, dtype=np.float32)
    x = rng.standard_normal((5, 10)).astype(np.float32)
    t = np.array([0, 1, 2, 1, 0])
    native = net.numerical_gradient(x, t)
    assert all(v.dtype == np.float32 for v in native.values())
    assert list(native) == ["W1", "b1", "gamma1", "beta1", "W2", "b2"]
    backprop = net.gradient(x, t)
    for key, value in native.items():
        np.testing.assert_allclose(backprop[key], value, rtol=0, atol=2e-3, err_msg=key)


def test_running_statistics_and_generator_untouched(rng):
    net = MultiLayerNet(8, [5], 3, use_batchnorm=True, use_dropout=True, seed=4)
    x, t = rng.standard_normal((4, 8)), np.array([0, 1, 2, 0])
    net.predict(x, train_flg=True)  # running statistics exist
    bn = net.layers["BatchNorm1"]
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    state = net.rng.bit_generator.state
    net.numerical_gradient(x, t)
    np.testing.assert_array_equal(bn.running_mean, mean)
    np.testing.assert_array_equal(bn.running_var, var)
    assert net.rng.bit_generator.state == state


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([], "the net has no layers"),
        ([(np.zeros((3, 2)), np.zeros(2), None, None, None)], r"W1 has shape \(3, 2\)"),
        ([(np.zeros((4, 3), np.float32), np.zeros(3), None, None, None)], "W1 must be a float64"),
        ([(np.zeros((4, 3)), np.zeros(3), np.ones(3), None, None)], "needs both"),
        ([(np.zeros((4, 3)), np.zeros(3), None, None, np.ones((2, 3)))], "output layer takes no"),
        ([(np.zeros((4, 3)), np.zeros(3))], r"has 2 items; need \(W, b, gamma, beta, mask\)"),
    ],
)
def test_errors_name_the_problem(layers, message):
    x, t = np.zeros((2, 4)), np.array([0, 1])
    with pytest.raises((ValueError, TypeError), match=message):
        _core.chain_numerical_gradient(layers, x, t, activation="relu")
