"""DeepConvNet (book ch. 8) and the nets with dropout: backprop against the numerical
gradient, with the dropout masks in play (each probe sees the masks gradient() draws)."""

from __future__ import annotations

import numpy as np
import pytest
from ferrograd.nets import DeepConvNet, MultiLayerNet

# Six small 3x3 convolutions (the book's layout: pad 1, pooling after every second).
SMALL = [{"filter_num": n, "filter_size": 3, "pad": 1, "stride": 1} for n in (2, 2, 3, 3, 4, 4)]


def small_deep_convnet(dtype, seed=0):
    return DeepConvNet((1, 8, 8), *SMALL, hidden_size=6, output_size=3, seed=seed, dtype=dtype)


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_deep_convnet_backprop_equals_the_numerical_gradient(dtype):
    """The book's ch07 gradient_check.py, for DeepConvNet: every parameter, dropout on."""
    rng = np.random.default_rng(1)
    net = small_deep_convnet(dtype)
    x = rng.standard_normal((3, 1, 8, 8)).astype(dtype)
    t = np.array([0, 2, 1])
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    assert sorted(numerical) == sorted(net.params) == sorted(backprop)
    tol = 1e-6 if dtype == np.float64 else 2e-3
    for key, value in numerical.items():
        assert value.dtype == dtype and value.shape == net.params[key].shape
        assert relative_error(backprop[key], value) < tol, key
    # dropout really dropped something, so the masks mattered
    assert any(not layer.mask.all() for layer in net.layers if hasattr(layer, "mask"))


def test_numerical_gradient_leaves_the_generator_for_the_next_gradient():
    """numerical_gradient rewinds the dropout generator: the gradient() after it sees
    the same masks as a gradient() before it would have."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 1, 8, 8))
    t = np.array([1, 0])
    a, b = small_deep_convnet(np.float64, seed=5), small_deep_convnet(np.float64, seed=5)
    a.numerical_gradient(x[:1], t[:1])
    after = a.gradient(x, t)
    for key, value in b.gradient(x, t).items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


@pytest.mark.parametrize("seed", [3, None])
def test_multi_layer_net_with_dropout_gradient_check(seed):
    """Seeded generator, and NumPy's global one (seed=None, the book's np.random).
    Sigmoid: a row that dropout zeroes puts a ReLU exactly at its kink (b = 0), where
    central differences see slope 1/2."""
    np.random.seed(0)  # noqa: NPY002
    net = MultiLayerNet(12, [7, 5], 4, "sigmoid", use_dropout=True, dropout_ratio=0.4, seed=seed)
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((5, 12)), np.array([0, 1, 2, 3, 0])
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    for key, value in numerical.items():
        assert relative_error(backprop[key], value) < 1e-5, key


@pytest.mark.parametrize("make", [lambda: small_deep_convnet(np.float64), lambda: None])
def test_conv_nets_summary_evaluate_and_classes(make, rng):
    """Keras' conveniences on the conv nets too; evaluate's loss has dropout off."""
    from ferrograd.nets import SimpleConvNet

    conv = {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}
    net = make() or SimpleConvNet((1, 8, 8), conv, hidden_size=5, output_size=3, seed=0)
    lines: list[str] = []
    net.summary(print_fn=lines.append)
    table = lines[0].splitlines()
    assert table[0] == repr(net)
    assert table[-1] == f"Total params: {sum(v.size for v in net.params.values()):,}"
    assert sum(int(row.split()[-1].replace(",", "")) for row in table[4:-2]) == sum(
        v.size for v in net.params.values()
    )
    assert "(None, 3)" in table[-3]  # the scores' shape
    x = rng.standard_normal((4, *net.input_dim))
    t = np.array([0, 1, 2, 1])
    loss, acc = net.evaluate(x, t)
    scores = net.predict(x, train_flg=False)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), t] + 1e-7)), rel=1e-12)
    np.testing.assert_array_equal(net.predict_classes(x), scores.argmax(axis=1))
    assert acc == np.mean(scores.argmax(axis=1) == t)
