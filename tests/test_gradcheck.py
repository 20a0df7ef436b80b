"""Gradient check: backprop against numerical gradients for the book's networks.

Backprop differentiates −log(y_t) while the loss evaluates −log(y_t + 1e-7), so the two
gradients differ by a relative 1e-7 / y_t even for a correct network. The checks below keep
y_t large: near-uniform outputs at the book's initial weights (y_t ≈ 1/k), or targets that
are the network's own predicted classes (y_t ≥ 1/k). ReLU probes must not straddle a kink,
which each test asserts for its fixed seed.
"""

from __future__ import annotations

import numpy as np
import pytest
from ferrograd.gradcheck import GradCheckRow, format_table, gradient_check
from ferrograd.nets import MultiLayerNet, TwoLayerNet

REL_BOUND = 2e-6


def relu_inputs(net, x):
    """Every pre-activation a ReLU sees in a training-mode forward pass of ``net``."""
    out, seen = net._batch("predict", x), []
    for layer in net.layers.values():
        if type(layer).__name__ == "Relu":
            seen.append(np.asarray(out).ravel())
        out = layer.forward(out, True) if hasattr(layer, "running_mean") else layer.forward(out)
    return np.concatenate(seen) if seen else np.array([np.inf])


def test_two_layer_net_book_size(rng):
    """ch05/gradient_check.py: 784-50-10 at its initial weights, a batch of 3."""
    net = TwoLayerNet(784, 50, 10, seed=0)
    x = rng.random((3, 784))
    t = np.array([7, 2, 1])
    rows = gradient_check(net, x, t, rtol=REL_BOUND, verbose=False)
    assert [r.name for r in rows] == ["W1", "b1", "W2", "b2"]
    for r in rows:
        assert r.rel_error < REL_BOUND, r
        assert r.mean_abs_diff < 5e-7, r  # the book prints 2e-13 (W1) … 1.2e-7 (b2)
        assert r.ok


def test_two_layer_net_relu(rng):
    net = TwoLayerNet(30, 12, 5, weight_init_std=0.1, activation="relu", seed=1)
    x = rng.random((3, 30))
    t = np.array([0, 4, 2])
    a1 = x @ net.params["W1"] + net.params["b1"]
    assert np.abs(a1).min() > 1e-3  # no probe crosses the ReLU kink
    rows = gradient_check(net, x, t, rtol=REL_BOUND, verbose=False)
    assert max(r.rel_error for r in rows) < REL_BOUND


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_multi_layer_net(activation, rng):
    net = MultiLayerNet(12, [10, 8], 3, activation=activation, weight_decay_lambda=0.1, seed=0)
    x = rng.standard_normal((4, 12))
    t = np.argmax(net.predict(x), axis=1)
    assert np.abs(relu_inputs(net, x)).min() > 1e-3
    rows = gradient_check(net, x, t, rtol=REL_BOUND, verbose=False)
    assert len(rows) == 6
    assert max(r.rel_error for r in rows) < REL_BOUND


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_multi_layer_net_batchnorm(activation):
    rng = np.random.default_rng(11)
    net = MultiLayerNet(12, [10, 8], 3, activation=activation, use_batchnorm=True, seed=0)
    x = rng.standard_normal((5, 12))
    t = np.argmax(net.predict(x, train_flg=True), axis=1)
    assert np.abs(relu_inputs(net, x)).min() > 1e-3
    rows = {r.name: r for r in gradient_check(net, x, t, rtol=REL_BOUND, verbose=False)}
    assert set(rows) == {"W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"}
    for name, r in rows.items():
        if name in ("b1", "b2"):
            # a bias before batch normalization is subtracted out with the batch mean:
            # its gradient is zero, so only the absolute difference means anything
            assert r.norm < 1e-12 and r.max_abs_diff < 1e-9, r
        else:
            assert r.rel_error < REL_BOUND, r
        assert r.ok


class BrokenNet(TwoLayerNet):
    """A net whose backprop forgets the 1/n of the batch mean in dW2."""

    def gradient(self, x, t):
        grads = super().gradient(x, t)
        grads["W2"] = grads["W2"] * len(x)
        return grads


def test_gradient_check_catches_a_wrong_gradient(rng):
    net = BrokenNet(6, 4, 3, weight_init_std=0.5, seed=0)
    rows = gradient_check(net, rng.random((3, 6)), np.array([0, 1, 2]), verbose=False)
    by_name = {r.name: r for r in rows}
    assert by_name["W2"].rel_error == pytest.approx(2 / 3, rel=1e-3)  # |g − 3g| / |3g|
    assert not by_name["W2"].ok
    assert by_name["W1"].ok


def test_verbose_prints_a_table(rng, capsys):
    net = TwoLayerNet(6, 4, 3, seed=0)
    rows = gradient_check(net, rng.random((2, 6)), np.array([0, 2]))
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "param",
        "shape",
        "max",
        "|diff|",
        "mean",
        "|diff|",
        "rel",
        "error",
        "ok",
    ]
    assert out.strip() == format_table(rows)
    assert all(isinstance(r, GradCheckRow) for r in rows)
    assert "W1       (6, 4)" in out


def test_zero_gradient_row():
    class Zero:
        def numerical_gradient(self, x, t):
            return {"w": np.zeros(3)}

        def gradient(self, x, t):
            return {"w": np.zeros(3)}

    (row,) = gradient_check(Zero(), None, None, verbose=False)
    assert (row.rel_error, row.max_abs_diff, row.ok) == (0.0, 0.0, True)


def test_mismatched_gradients_raise():
    class Odd:
        def numerical_gradient(self, x, t):
            return {"w": np.zeros(3)}

        def gradient(self, x, t):
            return {"v": np.zeros(3)}

    with pytest.raises(
        ValueError, match=r"numerical_gradient gives \['w'\] but gradient gives \['v'\]"
    ):
        gradient_check(Odd(), None, None)
