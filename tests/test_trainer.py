"""Trainer, History, save/load of parameters and SoftmaxRegression."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from conftest import tol
from ferrograd.datasets import load_mnist_sample
from ferrograd.nets import MultiLayerNet, SoftmaxRegression, TwoLayerNet
from ferrograd.optimizers import SGD
from ferrograd.trainer import History, Trainer, load_params, save_params
from reference import cross_entropy_error, numerical_gradient, softmax


@pytest.fixture(scope="module")
def sample():
    return load_mnist_sample()


def small_data(rng, n=40, d=6, k=3):
    x = rng.standard_normal((n, d))
    t = rng.integers(0, k, n)
    return x, t


# --------------------------------------------------------------------- SoftmaxRegression


def test_softmax_regression_matches_reference(rng):
    x, t = small_data(rng)
    net = SoftmaxRegression(6, 3, weight_init_std=0.5, seed=1, dtype=np.float64)
    W, b = net.params["W"], net.params["b"]
    np.testing.assert_allclose(net.predict(x), x @ W + b, **tol("matmul", np.float64))
    y = softmax(x @ W + b)
    assert net.loss(x, t) == pytest.approx(cross_entropy_error(y, t), rel=1e-10)
    assert net.accuracy(x, t) == np.mean(np.argmax(y, axis=1) == t)
    grads = net.gradient(x, t)

    def f(_w):
        return cross_entropy_error(softmax(x @ W + b), t)

    # numerical check in float64: central difference error is O(h²)
    np.testing.assert_allclose(grads["W"], numerical_gradient(f, W), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grads["b"], numerical_gradient(f, b), rtol=1e-5, atol=1e-8)
    onehot = np.eye(3)[t]
    np.testing.assert_allclose(net.gradient(x, onehot)["W"], grads["W"], rtol=1e-12)


def test_softmax_regression_errors():
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        SoftmaxRegression(0)
    with pytest.raises(TypeError, match="float32 or float64"):
        SoftmaxRegression(dtype=np.int32)
    net = SoftmaxRegression(4, 3, seed=0)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\); expected \(n, 4\)"):
        net.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="label 3 is out of range"):
        net.loss(np.zeros((2, 4)), np.array([0, 3]))


# --------------------------------------------------------------------- Trainer on the sample


def test_trainer_learns_the_sample(sample):
    (x, t), (xt, tt) = sample
    net = TwoLayerNet(784, 50, 10, 0.01, activation="sigmoid", seed=0, dtype=np.float32)
    trainer = Trainer(
        net,
        x,
        t,
        xt,
        tt,
        epochs=8,
        optimizer="sgd",
        optimizer_param={"lr": 0.5},
        seed=0,
        verbose=False,
    )
    hist = trainer.train()
    assert trainer.iter_per_epoch == 50 and hist.iterations == 400 and hist.epochs == 8
    assert len(hist.train_loss) == 400 and len(hist.epoch_seconds) == 8
    assert hist.epoch_iterations == [50] * 8 and not hist.interrupted
    assert hist.test_acc[-1] > 0.85
    assert hist.test_acc[-1] == pytest.approx(net.accuracy(xt, tt))
    assert np.mean(hist.train_loss[-50:]) < 0.5 * np.mean(hist.train_loss[:50])


def test_softmax_regression_trains_on_sample(sample):
    (x, t), (xt, tt) = sample
    net = SoftmaxRegression(seed=0)
    hist = Trainer(
        net, x, t, xt, tt, epochs=5, optimizer_param={"lr": 0.5}, seed=0, verbose=False
    ).train()
    assert hist.test_acc[-1] > 0.85


def _book_loop(net, x, t, iters, batch, lr, seed):
    """The book's ch04 loop with the same Generator draws as the Trainer.

    The loss is recorded before the update (the Trainer's convention, shared with the
    fused step); the book records it after.
    """
    rng = np.random.default_rng(seed)
    per_epoch = max(x.shape[0] // batch, 1)
    losses = []
    done = 0
    while done < iters:
        todo = min(per_epoch, iters - done)
        for idx in rng.integers(0, x.shape[0], size=(todo, batch)):
            losses.append(net.loss(x[idx], t[idx]))
            grads = net.gradient(x[idx], t[idx])
            for key in net.params:
                net.params[key] -= lr * grads[key]
        done += todo
    return losses


def test_iters_and_partial_epoch_match_book_loop(rng):
    x, t = small_data(rng, n=50, d=6, k=3)
    a = SoftmaxRegression(6, 3, seed=3, dtype=np.float64)
    b = SoftmaxRegression(6, 3, seed=3, dtype=np.float64)
    hist = Trainer(
        a, x, t, x, t, mini_batch_size=20, iters=7, optimizer=SGD(lr=0.3), seed=5, verbose=False
    ).train()
    # an epoch is int(50 / 20) = 2 iterations: 3 full epochs and one of 1 iteration
    assert hist.epoch_iterations == [2, 2, 2, 1] and hist.iterations == 7
    ref = _book_loop(b, x, t, 7, 20, 0.3, 5)
    np.testing.assert_allclose(hist.train_loss, ref, rtol=1e-12)
    for key in a.params:
        np.testing.assert_allclose(a.params[key], b.params[key], rtol=1e-12)


def test_evaluate_sample_num_and_log_line(rng):
    x, t = small_data(rng, n=30)
    lines: list[str] = []
    net = SoftmaxRegression(6, 3, seed=0, dtype=np.float64)
    Trainer(
        net,
        x,
        t,
        x,
        t,
        epochs=2,
        mini_batch_size=10,
        optimizer_param={"lr": 0.1},
        evaluate_sample_num_per_epoch=10,
        seed=0,
        log=lines.append,
    ).train()
    assert len(lines) == 2
    assert lines[1].startswith("epoch 2/2 | iter 6 |")
    acc = net.accuracy(x[:10], t[:10])
    assert lines[1].endswith(f"train acc, test acc | {acc:.4f}, {acc:.4f}")


def test_numerical_gradient_path_agrees_with_backprop(rng):
    x, t = small_data(rng, n=20, d=4, k=3)
    nets = [SoftmaxRegression(4, 3, 0.5, seed=2, dtype=np.float64) for _ in range(2)]
    hists = [
        Trainer(
            n,
            x,
            t,
            x,
            t,
            iters=3,
            mini_batch_size=5,
            optimizer=SGD(0.5),
            gradient=g,
            seed=1,
            verbose=False,
        ).train()
        for n, g in zip(nets, ["backprop", "numerical"], strict=True)
    ]
    # The loss takes log(y + 1e-7), backprop differentiates log(y): they differ by
    # about 1e-7 / y per sample, so the two paths agree to ~1e-4, not to rounding.
    np.testing.assert_allclose(hists[0].train_loss, hists[1].train_loss, rtol=1e-3)
    np.testing.assert_allclose(nets[0].params["W"], nets[1].params["W"], rtol=1e-3, atol=1e-5)
    assert hists[0].train_loss[-1] < 0.5 * hists[0].train_loss[0]


def test_keyboard_interrupt_stops_cleanly(rng):
    x, t = small_data(rng, n=40)
    net = SoftmaxRegression(6, 3, seed=0, dtype=np.float64)
    trainer = Trainer(
        net, x, t, x, t, epochs=5, mini_batch_size=10, optimizer=SGD(0.1), seed=0, verbose=False
    )
    calls = {"n": 0}
    real = net.gradient

    def gradient(xb, tb):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(xb, tb)

    net.gradient = gradient  # type: ignore[method-assign]
    hist = trainer.train()
    assert hist.interrupted and hist.iterations == 6 and hist.epochs == 1
    assert np.isfinite(net.accuracy(x, t))  # still usable


def test_trainer_argument_errors(rng):
    x, t = small_data(rng)
    net = SoftmaxRegression(6, 3, seed=0)
    with pytest.raises(ValueError, match="gradient must be 'backprop' or 'numerical'"):
        Trainer(net, x, t, x, t, gradient="adjoint")
    with pytest.raises(ValueError, match="mini_batch_size must be a positive int"):
        Trainer(net, x, t, x, t, mini_batch_size=0)
    with pytest.raises(ValueError, match="iters must be a positive int"):
        Trainer(net, x, t, x, t, iters=-1)
    with pytest.raises(ValueError, match="x_train has 40 rows but t_train has shape"):
        Trainer(net, x, t[:5], x, t)
    with pytest.raises(ValueError, match="unknown optimizer 'sgdx'"):
        Trainer(net, x, t, x, t, optimizer="sgdx")
    with pytest.raises(TypeError, match="has no params"):
        Trainer(object(), x, t, x, t)


# --------------------------------------------------------------------- save / load / resume


def test_save_load_roundtrip_and_resume(tmp_path, sample):
    (x, t), (xt, tt) = sample
    net = SoftmaxRegression(seed=0)
    Trainer(net, x, t, xt, tt, epochs=1, optimizer_param={"lr": 0.5}, seed=0, verbose=False).train()
    path = save_params(net, tmp_path / "model")
    assert path.name == "model.npz" and [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    other = SoftmaxRegression(seed=9)
    W_before = other.params["W"]
    load_params(other, path)
    assert other.params["W"] is W_before  # copied in place, layers keep their arrays
    np.testing.assert_array_equal(other.params["W"], net.params["W"])
    acc0 = other.accuracy(xt, tt)
    assert acc0 == net.accuracy(xt, tt)
    hist = Trainer(
        other, x, t, xt, tt, epochs=2, optimizer_param={"lr": 0.5}, seed=1, verbose=False
    ).train()
    assert hist.train_acc[-1] >= 0.88


def test_load_refuses_mismatch(tmp_path):
    net = SoftmaxRegression(4, 3, seed=0)
    path = save_params(net, tmp_path / "m.npz")
    with pytest.raises(
        ValueError, match=r"W is float32\[4, 3\] but the network's is float32\[5, 3\]"
    ):
        load_params(SoftmaxRegression(5, 3), path)
    with pytest.raises(ValueError, match=r"float32.*float64"):
        load_params(SoftmaxRegression(4, 3, dtype=np.float64), path)
    with pytest.raises(ValueError, match="holds parameters"):
        load_params(TwoLayerNet(4, 2, 3), path)
    np.savez(tmp_path / "obj.npz", W=np.array([object()], dtype=object), b=np.zeros(3))
    with pytest.raises(ValueError, match="pickle"):
        load_params(net, tmp_path / "obj.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_params(net, tmp_path / "nope" / "m.npz")


def test_history_json(tmp_path):
    import json

    h = History(
        train_loss=[1.0, 0.5],
        train_acc=[0.9],
        test_acc=[0.8],
        epoch_seconds=[0.25],
        epoch_iterations=[2],
        iterations=2,
    )
    h.save_json(tmp_path / "h.json")
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["epochs"] == 1 and data["seconds"] == 0.25 and data["test_acc"] == [0.8]


# --------------------------------------------------------------------- the fused path


class _FakeFused:
    """Stands in for ferrograd.fused: records the calls, runs the book's steps in Python."""

    calls: ClassVar[list[tuple[int, int]]] = []

    class FusedTrainer:
        def __init__(self, network, optimizer):
            self.network, self.optimizer = network, optimizer

        def run_epoch(self, x, t, batch_index_matrix):
            assert batch_index_matrix.dtype == np.int64 and x.flags.c_contiguous
            _FakeFused.calls.append(batch_index_matrix.shape)
            losses = []
            for idx in batch_index_matrix:
                losses.append(self.network.loss(x[idx], t[idx]))
                grads = self.network.gradient(x[idx], t[idx])
                self.optimizer.update(self.network.params, grads)
            return np.asarray(losses)

        def accuracy(self, x, t):
            return self.network.accuracy(x, t)

    @staticmethod
    def supports(network, optimizer):
        return isinstance(network, SoftmaxRegression)


def test_trainer_uses_fused_when_supported(monkeypatch, rng):
    import sys

    _FakeFused.calls = []
    monkeypatch.setitem(sys.modules, "ferrograd.fused", _FakeFused)
    x, t = small_data(rng, n=50)
    a = SoftmaxRegression(6, 3, seed=3, dtype=np.float64)
    b = SoftmaxRegression(6, 3, seed=3, dtype=np.float64)
    kw = dict(mini_batch_size=20, iters=7, seed=5, verbose=False)
    fused = Trainer(a, x, t, x, t, optimizer=SGD(lr=0.3), **kw).train()
    loop = Trainer(b, x, t, x, t, optimizer=SGD(lr=0.3), use_fused=False, **kw).train()
    assert fused.fused and not loop.fused
    assert _FakeFused.calls == [(2, 20), (2, 20), (2, 20), (1, 20)]  # one call per epoch
    np.testing.assert_allclose(fused.train_loss, loop.train_loss, rtol=1e-12)
    assert fused.test_acc == loop.test_acc and fused.iterations == loop.iterations == 7
    # numerical gradients never take the fused path; unsupported networks fall back
    num = Trainer(a, x, t, x, t, optimizer=SGD(0.1), gradient="numerical", **kw)
    assert num._fused() is None
    two = TwoLayerNet(6, 4, 3, seed=0)
    assert Trainer(two, x, t, x, t, optimizer=SGD(0.1), **kw)._fused() is None
    with pytest.raises(ValueError, match="fused step does not support TwoLayerNet"):
        Trainer(two, x, t, x, t, optimizer=SGD(0.1), use_fused=True, **kw)._fused()


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.1), ("adam", 0.001)])
def test_fused_and_python_paths_agree(sample, optimizer, lr):
    pytest.importorskip("ferrograd.fused")
    (x, t), (xt, tt) = sample
    x, xt = x[:1000].astype(np.float64), xt[:300].astype(np.float64)
    t, tt = t[:1000], tt[:300]
    hists, nets = [], []
    for use_fused in (True, False):
        net = TwoLayerNet(784, 30, 10, 0.01, activation="relu", seed=4, dtype=np.float64)
        hist = Trainer(
            net,
            x,
            t,
            xt,
            tt,
            iters=25,
            optimizer=optimizer,
            optimizer_param={"lr": lr},
            seed=2,
            verbose=False,
            use_fused=use_fused,
        ).train()
        hists.append(hist)
        nets.append(net)
    assert hists[0].fused and not hists[1].fused
    assert hists[0].epoch_iterations == [10, 10, 5]
    # Same mini-batches, same updates: only the summation order differs (float64).
    np.testing.assert_allclose(hists[0].train_loss, hists[1].train_loss, rtol=1e-9)
    for key in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(nets[0].params[key], nets[1].params[key], rtol=1e-7, atol=1e-12)
    assert hists[0].test_acc == hists[1].test_acc


def test_multilayernet_trains_fused_unless_it_has_extras(sample):
    """MultiLayerNet trains fused (one hidden layer: the two-layer kernel; more: the
    multi-layer one) to the same parameters as its layer-by-layer backprop. Dropout adds
    a term the fused step does not compute: such nets keep the Python loop."""
    fused = pytest.importorskip("ferrograd.fused")
    (x, t), (xt, tt) = sample
    x, xt = x[:1000].astype(np.float64), xt[:300].astype(np.float64)
    t, tt = t[:1000], tt[:300]
    kw = dict(iters=25, optimizer="adam", optimizer_param={"lr": 0.001}, seed=2, verbose=False)
    for hidden in ([30], [30, 20]):
        hists, nets = [], []
        for use_fused in (True, False):
            net = MultiLayerNet(784, hidden, 10, activation="relu", seed=4)
            hists.append(Trainer(net, x, t, xt, tt, use_fused=use_fused, **kw).train())
            nets.append(net)
        assert hists[0].fused and not hists[1].fused
        np.testing.assert_allclose(hists[0].train_loss, hists[1].train_loss, rtol=1e-9)
        assert hists[0].test_acc == hists[1].test_acc
        for key, value in nets[1].params.items():
            np.testing.assert_allclose(nets[0].params[key], value, rtol=1e-7, atol=1e-12)
    for extra in ({"use_dropout": True},):
        net = MultiLayerNet(784, [30], 10, seed=4, **extra)
        assert not fused.supports(net, SGD())
        assert not Trainer(net, x, t, xt, tt, **kw).train().fused
        with pytest.raises(ValueError, match="fused step does not support MultiLayerNet"):
            Trainer(net, x, t, xt, tt, use_fused=True, **kw)._fused()
    assert fused.supports(MultiLayerNet(784, [30, 20], 10, seed=4), SGD())
