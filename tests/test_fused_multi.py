"""The fused multi-layer training step (``_core.FusedTrainer``, used by
``ferrograd.fused`` for nets with two or more hidden layers) against MultiLayerNet's
layer-by-layer backprop and the book's optimizers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ferrograd import _core, fused
from ferrograd.datasets import load_mnist_sample
from ferrograd.nets import MultiLayerNet
from ferrograd.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from fused_helpers import fused_trainer

OPTIMIZERS = {
    "sgd": SGD(lr=0.1),
    "momentum": Momentum(lr=0.05),
    "nesterov": Nesterov(lr=0.05),
    "adagrad": AdaGrad(lr=0.05),
    "rmsprop": RMSprop(lr=0.01),
    "adam": Adam(lr=0.001),
}


@pytest.fixture(scope="module")
def sample():
    (x, t), _ = load_mnist_sample()
    return x[:2000].astype(np.float64), t[:2000].astype(np.int64)


def layer_by_layer(net, optimizer, x, t, batches):
    """The book's loop: loss, gradient by backprop through the layers, update."""
    losses = []
    for rows in batches:
        losses.append(net.loss(x[rows], t[rows]))
        optimizer.update(net.params, net.gradient(x[rows], t[rows]))
    return np.array(losses)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_hundred_steps_equal_the_layer_by_layer_path(sample, name, activation):
    x, t = sample
    batches = np.random.default_rng(3).integers(0, len(x), size=(100, 50))
    net = MultiLayerNet(784, [40, 30, 20], 10, activation=activation, seed=1)
    want = copy.deepcopy(net)
    opt, want_opt = copy.deepcopy(OPTIMIZERS[name]), copy.deepcopy(OPTIMIZERS[name])
    assert fused.supports(net, opt)
    trainer = fused.FusedTrainer(net, opt)
    assert isinstance(trainer._core, _core.FusedTrainer)
    losses = trainer.run_epoch(x, t, batches)
    want_losses = layer_by_layer(want, want_opt, x, t, batches)
    # Only the summation order differs (the first layer's sums run over non-zero
    # inputs, column by column); adaptive rules amplify that where √h is small.
    atol = 1e-12 if name in ("sgd", "momentum", "nesterov") else 1e-9
    for key, value in want.params.items():
        np.testing.assert_allclose(net.params[key], value, rtol=1e-10, atol=atol, err_msg=key)
    # The losses follow the parameters: as close as they are.
    np.testing.assert_allclose(losses, want_losses, rtol=1e-11 if atol < 1e-9 else 1e-9, atol=0)
    assert want_losses[-10:].mean() < want_losses[:10].mean()  # it trained
    for slot in ("v", "h", "m"):  # the optimizer's state, as the book's dicts hold it
        if getattr(want_opt, slot, None) is not None:
            for key, value in getattr(want_opt, slot).items():
                got = getattr(opt, slot)[key]
                np.testing.assert_allclose(got, value, rtol=1e-9, atol=1e-12, err_msg=slot + key)
    if hasattr(opt, "iter"):
        assert opt.iter == want_opt.iter == len(batches)


@pytest.mark.parametrize("hidden", [[30], [30, 20]])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_equals_the_layer_by_layer_path(sample, name, hidden):
    """λ·W joins every dW and ½·λ·Σ‖W‖² the loss, as MultiLayerNet.gradient/loss do;
    with one hidden layer too (the multi-layer kernel then takes the two-layer net)."""
    x, t = sample
    batches = np.random.default_rng(6).integers(0, len(x), size=(60, 50))
    net = MultiLayerNet(784, hidden, 10, seed=2, weight_decay_lambda=0.1)
    want = copy.deepcopy(net)
    opt, want_opt = copy.deepcopy(OPTIMIZERS[name]), copy.deepcopy(OPTIMIZERS[name])
    trainer = fused.FusedTrainer(net, opt)
    assert isinstance(trainer._core, _core.FusedTrainer)
    losses = trainer.run_epoch(x, t, batches)
    want_losses = layer_by_layer(want, want_opt, x, t, batches)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-11, atol=0)
    for key, value in want.params.items():
        np.testing.assert_allclose(net.params[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    # The decay term is there: without it the loss and the weights come out otherwise.
    plain = MultiLayerNet(784, hidden, 10, seed=2)
    plain_losses = fused.FusedTrainer(plain, copy.deepcopy(OPTIMIZERS[name])).run_epoch(
        x, t, batches
    )
    assert losses[0] - plain_losses[0] > 1e-3
    assert not np.allclose(plain.params["W1"], net.params["W1"], rtol=1e-6, atol=0)


def test_float32_one_hot_and_compressed_rows(sample):
    x, t = sample
    batches = np.random.default_rng(4).integers(0, len(x), size=(30, 40))
    one_hot = np.eye(10)[t]
    results = []
    for xs, ts in ((x, t), (_core.SparseRows(x), t), (x, one_hot)):
        net = MultiLayerNet(784, [32, 16], 10, seed=2)
        tr = fused_trainer([784, 32, 16, 10], activation="relu", optimizer="adam", lr=0.001)
        assert tr.state_size == 12 and tr.dtype == "float64" and tr.optimizer == "adam"
        params = [net.params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3")]
        state = [np.zeros_like(p) for _ in range(2) for p in params]
        results.append((tr.run(params, state, xs, ts, batches), params))
    for losses, params in results[1:]:
        np.testing.assert_allclose(losses, results[0][0], rtol=1e-12)
        for got, want in zip(params, results[0][1], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # float32 follows float64 to float32 rounding.
    net32 = MultiLayerNet(784, [32, 16], 10, seed=2, dtype=np.float32)
    ref = MultiLayerNet(784, [32, 16], 10, seed=2)
    f32 = fused.FusedTrainer(net32, Adam(lr=0.001)).run_epoch(x.astype(np.float32), t, batches)
    f64 = fused.FusedTrainer(ref, Adam(lr=0.001)).run_epoch(x, t, batches)
    np.testing.assert_allclose(f32, f64, rtol=2e-4)
    assert net32.params["W1"].dtype == np.float32
    np.testing.assert_allclose(net32.params["W3"], ref.params["W3"], rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accuracy_matches_the_network(sample, dtype):
    x, t = sample
    x = x.astype(dtype)
    net = MultiLayerNet(784, [30, 20, 16], 10, seed=5, dtype=dtype)
    trainer = fused.FusedTrainer(net, SGD(lr=0.1))
    trainer.run_epoch(x, t, np.random.default_rng(0).integers(0, len(x), size=(40, 50)))
    want = net.accuracy(x, t)
    assert 0.5 < want < 1.0
    assert trainer.accuracy(x, t) == want  # compressed rows, labels
    params = [net.params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4")]
    assert _core.accuracy(params, x, np.eye(10, dtype=dtype)[t], activation="relu") == want
    # Row by row it is the network's own argmax, also on a few rows.
    pred = np.argmax(net.predict(x[:7]), axis=1)
    assert _core.accuracy(params, x[:7], pred, activation="relu") == 1.0
    with pytest.raises(ValueError, match="an even number, at least 4"):
        _core.accuracy(params[:3], x, t, activation="relu")
    with pytest.raises(ValueError, match=r"W2 has shape \(30, 20\) and b2 \(16,\)"):
        _core.accuracy([*params[:3], params[5], *params[4:]], x, t, activation="relu")
    with pytest.raises(ValueError, match=r"x has shape \(2000, 700\) but W1 has shape"):
        _core.accuracy(params, x[:, :700], t, activation="relu")
    with pytest.raises(TypeError, match=r"b3 has dtype .* but the other arguments are"):
        other = np.float32 if dtype == np.float64 else np.float64
        _core.accuracy([*params[:5], params[5].astype(other), *params[6:]], x, t, activation="relu")
    with pytest.raises(ValueError, match="label 10"):
        _core.accuracy(params, x[:3], np.array([1, 10, 2]), activation="relu")


def test_errors_name_the_problem(rng):
    net = MultiLayerNet(6, [5, 4], 3, seed=0)
    keys = ("W1", "b1", "W2", "b2", "W3", "b3")
    plist = [net.params[k] for k in keys]
    before = [p.copy() for p in plist]
    x, t = rng.random((10, 6)), rng.integers(0, 3, size=10)
    idx = rng.integers(0, 10, size=(2, 5))
    tr = fused_trainer([6, 5, 4, 3], activation="relu")
    with pytest.raises(ValueError, match=r"params must hold 6 arrays \(W1, b1, W2, ...\), got 4"):
        tr.run(plist[:4], [], x, t, idx)
    with pytest.raises(ValueError, match=r"W2 has shape \(5, 3\) but the network needs \(5, 4\)"):
        tr.run([*plist[:2], np.zeros((5, 3)), *plist[3:]], [], x, t, idx)
    with pytest.raises(ValueError, match=r"params b2 must be 1-D"):
        tr.run([*plist[:3], np.zeros((4, 1)), *plist[4:]], [], x, t, idx)
    with pytest.raises(ValueError, match=r"x has shape \(10, 5\) but W1 has shape \(6, 5\)"):
        tr.run(plist, [], x[:, :5], t, idx)
    with pytest.raises(TypeError, match=r"params\[4\] \(W3\) must have dtype float64"):
        tr.run([*plist[:4], plist[4].astype(np.float32), plist[5]], [], x, t, idx)
    with pytest.raises(ValueError, match=r"batch_indices\[0, 1\] = 10 is out of range for 10"):
        tr.run(plist, [], x, t, np.array([[0, 10, 2]]))
    with pytest.raises(ValueError, match="state must hold 12 arrays"):
        state = [np.zeros_like(p) for p in plist]
        fused_trainer([6, 5, 4, 3], activation="relu", optimizer="adam").run(
            plist, state, x, t, idx
        )
    with pytest.raises(ValueError, match="label 3 at index 0 is out of range for 3 classes"):
        tr.run(plist, [], x, np.full(10, 3), idx)
    with pytest.raises(ValueError, match=r"params\[2\] \(W2\) cannot be updated in place: its"):
        tr.run([plist[0], plist[1], plist[0], *plist[3:]], [], x, t, idx)
    with pytest.raises(ValueError, match="W1 must be C-contiguous"):
        tr.run([np.asfortranarray(plist[0]), *plist[1:]], [], x, t, idx)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        fused_trainer([6, 3], activation="relu")
    with pytest.raises(ValueError, match="all positive"):
        fused_trainer([6, 0, 3], activation="relu")
    with pytest.raises(ValueError, match="FusedTrainer: optimizer must be one of"):
        fused_trainer([6, 5, 3], activation="relu", optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr must be a positive number"):
        fused_trainer([6, 5, 3], activation="relu", lr=0.0)
    with pytest.raises(TypeError, match="dtype must be 'float32' or 'float64'"):
        fused_trainer([6, 5, 3], activation="relu", dtype="int8")
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        fused_trainer([6, 5, 3], activation="relu", weight_decay=-0.1)
    assert all(np.array_equal(p, b) for p, b in zip(plist, before, strict=True))  # untouched
    tr.run(plist, [], x, t, idx)
    assert not np.array_equal(plist[0], before[0])  # a valid call does train


def test_supports_only_what_it_computes():
    plain = MultiLayerNet(784, [30, 20], 10, seed=0)
    assert fused.supports(plain, SGD()) and fused.supports(plain, Adam())
    assert fused.supports(MultiLayerNet(784, [30], 10, seed=0, weight_decay_lambda=0.1), SGD())
    for extra in ({"use_dropout": True}, {"use_batchnorm": True}):
        assert not fused.supports(MultiLayerNet(784, [30, 20], 10, seed=0, **extra), SGD())

    class OwnSGD(SGD):
        pass

    assert not fused.supports(plain, OwnSGD())
    odd = MultiLayerNet(784, [30, 20], 10, seed=0)
    odd.params["W2"] = np.asfortranarray(odd.params["W2"])
    assert not fused.supports(odd, SGD())
    odd.params["W2"] = np.zeros((30, 21))  # widths no longer chain
    assert not fused.supports(odd, SGD())
