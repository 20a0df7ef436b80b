"""The fast exact numerical gradient of the two-layer net (``_core.numerical_gradient``)
against the brute force, the book's NumPy loop, and backprop on real MNIST."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from ferrograd import _core

KEYS = ("W1", "b1", "W2", "b2")


def small_net(rng: np.random.Generator, activation: str) -> dict[str, np.ndarray]:
    """A 5-4-3 net with weights large enough that every unit matters."""
    params = {
        "W1": rng.standard_normal((5, 4)),
        "b1": 0.1 * rng.standard_normal(4),
        "W2": rng.standard_normal((4, 3)),
        "b2": 0.1 * rng.standard_normal(3),
    }
    if activation == "relu":
        params["b1"] += 0.3  # keep most hidden units alive
    return params


def numgrad(params, x, t, activation, method="fast"):
    g = _core.numerical_gradient(
        *(params[k] for k in KEYS), x, t, activation=activation, method=method
    )
    return dict(zip(KEYS, g, strict=True))


def targets(rng: np.random.Generator, n: int, k: int, kind: str) -> np.ndarray:
    labels = rng.integers(0, k, size=n)
    return labels if kind == "labels" else np.eye(k)[labels]


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("kind", ["labels", "one_hot"])
def test_fast_equals_bruteforce_and_book_loop(rng, activation, kind):
    params = small_net(rng, activation)
    x = rng.standard_normal((7, 5))
    x[rng.random(x.shape) < 0.3] = 0.0  # zero inputs are skipped rows: exercise them
    t = targets(rng, 7, 3, kind)
    fast = numgrad(params, x, t, activation)
    brute = numgrad(params, x, t, activation, method="bruteforce")
    for key in KEYS:
        np.testing.assert_allclose(fast[key], brute[key], rtol=0, atol=1e-9, err_msg=key)
        # The book's loop: perturb one element, two full losses, restore.
        p = {k: v.copy() for k, v in params.items()}
        book = ref.numerical_gradient(
            lambda _, p=p: ref.two_layer_loss(p, x, t, activation), p[key]
        )
        np.testing.assert_allclose(fast[key], book, rtol=0, atol=1e-9, err_msg=key)
    # Not trivially zero: the gradient is of the size backprop says.
    bp = ref.two_layer_backprop(params, x, t, activation)
    for key in KEYS:
        # Central differences are O(h²)-close to backprop (looser where ReLU kinks sit
        # within h of a probe).
        atol = 1e-6 if activation == "sigmoid" else 1e-5
        np.testing.assert_allclose(fast[key], bp[key], rtol=0, atol=atol, err_msg=key)
        assert np.abs(bp[key]).max() > 1e-3


def test_zero_input_column_gives_exact_zero(rng):
    params = small_net(rng, "sigmoid")
    x = rng.standard_normal((7, 5))
    x[:, 3] = 0.0
    g = numgrad(params, x, rng.integers(0, 3, size=7), "sigmoid")
    assert np.all(g["W1"][3] == 0.0)
    assert np.all(g["W1"][[0, 1, 2, 4]] != 0.0)


def test_layouts_do_not_change_the_result(rng):
    params = small_net(rng, "sigmoid")
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 3, size=7)
    want = numgrad(params, x, t, "sigmoid")
    strided = {
        "W1": np.asfortranarray(params["W1"]),
        "b1": np.repeat(params["b1"], 2)[::2],
        "W2": params["W2"].T.copy().T,
        "b2": params["b2"],
    }
    got = numgrad(strided, np.asfortranarray(x), t, "sigmoid")
    for key in KEYS:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12, err_msg=key)


def load_batch(mnist_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n training images (normalised to [0, 1]) and labels."""

    def read(name: str, offset: int) -> np.ndarray:
        path = mnist_dir / name
        raw = gzip.open(path).read() if path.exists() else (mnist_dir / name[:-3]).read_bytes()
        return np.frombuffer(raw, dtype=np.uint8, offset=offset)

    images = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 784)[:n]
    labels = read("train-labels-idx1-ubyte.gz", 8)[:n]
    return images.astype(np.float64) / 255.0, labels.astype(np.int64)


def book_init(seed: int, weight_init_std: float = 0.01) -> dict[str, np.ndarray]:
    """TwoLayerNet(784, 50, 10) initial weights (DLFS ch04), from a seeded generator."""
    rng = np.random.default_rng(seed)
    return {
        "W1": weight_init_std * rng.standard_normal((784, 50)),
        "b1": np.zeros(50),
        "W2": weight_init_std * rng.standard_normal((50, 10)),
        "b2": np.zeros(10),
    }


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_mnist_batch_against_bruteforce_subset_and_backprop(mnist_dir, activation):
    x, t = load_batch(mnist_dir, 100)
    assert 0.7 < np.mean(x == 0) < 0.9  # real MNIST: most pixels are zero
    params = book_init(7)
    if activation == "relu":
        params["b1"] += 0.05
    fast = numgrad(params, x, t, activation)

    # ~300 entries by brute force in NumPy: the book's probe, one element at a time.
    rng = np.random.default_rng(3)
    picks = [
        ("W1", idx)
        for idx in zip(*np.unravel_index(rng.choice(784 * 50, 200), (784, 50)), strict=True)
    ]
    picks += [("b1", (j,)) for j in rng.choice(50, 25, replace=False)]
    picks += [
        ("W2", idx) for idx in zip(*np.unravel_index(rng.choice(500, 65), (50, 10)), strict=True)
    ]
    picks += [("b2", (c,)) for c in range(10)]
    p = {k: v.copy() for k, v in params.items()}
    for key, idx in picks:
        tmp = p[key][idx]
        p[key][idx] = tmp + ref.H
        f1 = ref.two_layer_loss(p, x, t, activation)
        p[key][idx] = tmp - ref.H
        f2 = ref.two_layer_loss(p, x, t, activation)
        p[key][idx] = tmp
        assert abs(fast[key][idx] - (f1 - f2) / (2 * ref.H)) <= 1e-9, (key, idx)

    bp = ref.two_layer_backprop(params, x, t, activation)
    num = np.concatenate([fast[k].ravel() for k in KEYS])
    back = np.concatenate([bp[k].ravel() for k in KEYS])
    # ReLU: pre-activations within h·x of 0 make some probes straddle the kink, where
    # the central difference is not the derivative.
    bound = 2e-6 if activation == "sigmoid" else 2e-2
    assert np.linalg.norm(num - back) / np.linalg.norm(back) < bound
    # Columns of x that are zero in the whole batch: exactly zero, as the definition says.
    dead = np.all(x == 0, axis=0)
    assert dead.sum() > 50
    assert np.all(fast["W1"][dead] == 0.0)


def test_errors_name_the_problem(rng):
    params = small_net(rng, "sigmoid")
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 3, size=7)
    args = [params[k] for k in KEYS]
    with pytest.raises(TypeError, match="float64 only"):
        _core.numerical_gradient(*(a.astype(np.float32) for a in args), x, t)
    with pytest.raises(TypeError, match="x has dtype float32"):
        _core.numerical_gradient(*args, x.astype(np.float32), t)
    with pytest.raises(ValueError, match=r"x has shape \(7, 6\) but W1 has shape \(5, 4\)"):
        _core.numerical_gradient(*args, np.zeros((7, 6)), t)
    with pytest.raises(ValueError, match=r"b1 has shape \(3,\)"):
        _core.numerical_gradient(args[0], np.zeros(3), *args[2:], x, t)
    with pytest.raises(ValueError, match="label 3 at index 2 is out of range for 3 classes"):
        _core.numerical_gradient(*args, x, np.array([0, 1, 3, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="need one label per row"):
        _core.numerical_gradient(*args, x, t[:5])
    with pytest.raises(ValueError, match="method must be 'fast' or 'bruteforce'"):
        _core.numerical_gradient(*args, x, t, method="exact")
    with pytest.raises(ValueError, match="activation must be 'sigmoid' or 'relu'"):
        _core.numerical_gradient(*args, x, t, activation="tanh")
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        _core.numerical_gradient(*args, bad, t)
    with pytest.raises(TypeError, match=r"W1 must be a numpy\.ndarray"):
        _core.numerical_gradient([[1.0]], *args[1:], x, t)
