"""SimpleConvNet's fused training step (``_core.ConvNetTrainer``, ``ferrograd.fused``)
against the layer-by-layer path it replaces: ``loss_and_gradient`` then
``optimizer.update``, itself checked against the NumPy oracle in test_conv.py."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import python_output
from ferrograd import _core, fused
from ferrograd.layers import Pooling
from ferrograd.nets import DeepConvNet, SimpleConvNet
from ferrograd.optimizers import OPTIMIZERS, SGD, Adam
from ferrograd.trainer import Trainer

KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")

# (input_dim, conv_param, hidden, classes): the book's net, and odd sizes with padding,
# a stride, several channels and an odd convolution output (its last row is not pooled).
NETS = {
    "book": ((1, 28, 28), {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}, 100, 10),
    "odd": ((2, 11, 13), {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}, 7, 5),
    "stride": ((3, 12, 9), {"filter_num": 5, "filter_size": 4, "pad": 2, "stride": 2}, 6, 4),
}


def make_net(kind: str, dtype=np.float64, seed: int = 0) -> SimpleConvNet:
    dim, conv, hidden, classes = NETS[kind]
    return SimpleConvNet(dim, conv, hidden, classes, weight_init_std=0.1, seed=seed, dtype=dtype)


def data(kind: str, n: int, seed: int = 1):
    dim, _, _, classes = NETS[kind]
    rng = np.random.default_rng(seed)
    x = rng.random((n, *dim))
    x[x < 0.5] = 0.0  # images are mostly background
    return x, rng.integers(0, classes, n)


def layer_steps(net, opt, x, t, batches):
    """The book's loop: loss and gradient of each batch, then the update."""
    losses = []
    for rows in batches:
        loss, grads = net.loss_and_gradient(x[rows], t[rows])
        opt.update(net.params, grads)
        losses.append(loss)
    return np.array(losses)


def assert_params_close(a, b, rtol, atol):
    for key in KEYS:
        np.testing.assert_allclose(a.params[key], b.params[key], rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("kind", ["odd", "stride"])
def test_fused_steps_equal_the_layers(kind, name):
    """Every optimizer, odd geometries: losses and parameters after five steps, float64."""
    x, t = data(kind, 40)
    batches = np.random.default_rng(2).integers(0, 40, (5, 12))
    want, got = make_net(kind), make_net(kind)
    want_losses = layer_steps(want, OPTIMIZERS[name](lr=0.05), x, t, batches)
    opt = OPTIMIZERS[name](lr=0.05)
    assert fused.supports(got, opt)
    losses = fused.FusedTrainer(got, opt).run_epoch(x, t, batches)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)
    assert_params_close(got, want, rtol=1e-10, atol=1e-13)
    assert getattr(opt, "iter", 5) == 5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_book_net_at_batch_100_equals_the_layers(dtype):
    """The book's sizes: the batch spans several blocks of images (and both threads)."""
    x, t = data("book", 300)
    batches = np.random.default_rng(3).integers(0, 300, (4, 100))
    want, got = make_net("book", dtype), make_net("book", dtype)
    want_losses = layer_steps(want, Adam(lr=0.001), x.astype(dtype), t, batches)
    losses = fused.FusedTrainer(got, Adam(lr=0.001)).run_epoch(x, t, batches)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(losses, want_losses, rtol=tol)
    assert_params_close(got, want, rtol=tol, atol=tol * 0.1)


def test_one_hot_targets_and_learning_rates_per_step():
    x, t = data("odd", 30)
    onehot = np.eye(5)[t]
    batches = np.random.default_rng(4).integers(0, 30, (4, 10))
    lrs = np.array([0.3, 0.2, 0.1, 0.05])
    want, opt = make_net("odd"), SGD(lr=1.0)
    for lr, rows in zip(lrs, batches, strict=True):
        opt.lr = lr
        layer_steps(want, opt, x, t, rows[None, :])
    got, opt2 = make_net("odd"), SGD(lr=1.0)
    fused.FusedTrainer(got, opt2).run_epoch(x, onehot, batches, learning_rates=lrs)
    assert_params_close(got, want, rtol=1e-10, atol=1e-13)
    assert opt2.lr == 1.0  # a schedule within the call leaves the optimizer alone


@pytest.mark.parametrize("kind", ["book", "stride"])
def test_native_loss_equals_the_nets_loss(kind):
    x, t = data(kind, 120)
    net = make_net(kind)
    trainer = fused.FusedTrainer(net, Adam())
    assert trainer.loss(x, t) == pytest.approx(net.loss(x, t), rel=1e-12)
    onehot = np.eye(net.output_size)[t[:7]]
    assert trainer.loss(x[:7], onehot) == pytest.approx(net.loss(x[:7], onehot), rel=1e-12)
    n32 = make_net(kind, np.float32)
    assert fused.FusedTrainer(n32, Adam()).loss(x, t) == pytest.approx(n32.loss(x, t), rel=1e-5)
    core = trainer._core
    params = [net.params[k] for k in KEYS]
    with pytest.raises(ValueError, match="params must hold 6 arrays"):
        core.loss(params[:4], x, t)
    with pytest.raises(TypeError, match="W2 has dtype float32"):
        core.loss([*params[:2], params[2].astype(np.float32), *params[3:]], x, t)
    with pytest.raises(ValueError, match="x holds no images"):
        core.loss(params, x[:0], t[:0])
    with pytest.raises(ValueError, match="x has shape"):
        core.loss(params, np.ascontiguousarray(x[:, :, :-1]), t)


def test_trainer_takes_the_fused_step_and_matches_the_python_loop():
    x, t = data("odd", 60)
    runs = []
    for use_fused in (True, False):
        net = make_net("odd")
        trainer = Trainer(
            net, x, t, x[:20], t[:20], epochs=2, mini_batch_size=15, optimizer="adam",
            optimizer_param={"lr": 0.01}, seed=5, verbose=False, use_fused=use_fused,
        )  # fmt: skip
        hist = trainer.train()
        assert hist.fused is use_fused
        runs.append((net, hist))
    (a, ha), (b, hb) = runs
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-10)
    assert ha.test_acc == hb.test_acc
    assert_params_close(a, b, rtol=1e-9, atol=1e-12)


def test_supports_only_the_books_layers():
    opt = Adam()
    assert fused.supports(make_net("odd"), opt)

    class Custom(SimpleConvNet):
        pass

    custom = Custom((1, 10, 10), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1})
    assert not fused.supports(custom, opt)
    net = make_net("odd")
    net.layers["Pool1"] = Pooling(3, 3, stride=3)
    assert not fused.supports(net, opt)
    net = make_net("odd")
    net.params["W2"] = np.asfortranarray(net.params["W2"])  # the layer no longer holds it
    assert not fused.supports(net, opt)
    assert not fused.supports(make_net("odd"), object())
    assert not fused.supports(DeepConvNet(), opt)
    with pytest.raises(ValueError, match="SimpleConvNet"):
        fused.FusedTrainer(DeepConvNet(), opt)


THREADS_SCRIPT = """
import hashlib, numpy as np
from ferrograd import fused
from ferrograd.nets import SimpleConvNet
from ferrograd.optimizers import Adam
rng = np.random.default_rng(0)
x = rng.random((300, 1, 28, 28)).astype(np.float32)
x[x < 0.5] = 0
t = rng.integers(0, 10, 300)
net = SimpleConvNet(seed=1, dtype=np.float32)
losses = fused.FusedTrainer(net, Adam(lr=0.001)).run_epoch(x, t, rng.integers(0, 300, (6, 100)))
digest = hashlib.sha256(losses.tobytes())
for key in sorted(net.params):
    digest.update(net.params[key].tobytes())
print(digest.hexdigest())
"""


def test_results_do_not_depend_on_the_number_of_threads():
    """Blocks of images are cut by the batch size alone, and their dW1 added in order."""
    outs = [python_output(THREADS_SCRIPT, FERROGRAD_NUM_THREADS=t) for t in ("1", "2")]
    assert len(outs[0].strip()) == 64
    assert outs[0] == outs[1]


def kernel(dtype="float64", **kw):
    args = {
        "stride": 1,
        "pad": 1,
        "hidden_size": 7,
        "output_size": 5,
        "dtype": dtype,
        "optimizer": "sgd",
        "hyperparameters": {"lr": 0.1},
    }
    args.update(kw)
    return _core.ConvNetTrainer((2, 11, 13), (4, 3, 3), **args)


def test_kernel_errors_name_the_problem():
    net = make_net("odd")
    x, t = data("odd", 10)
    idx = np.zeros((2, 3), dtype=np.int64)
    params = [net.params[k] for k in KEYS]
    tr = kernel()
    good = tr.run(params, [], x, t, idx)
    assert good.shape == (2,) and np.all(np.isfinite(good))
    with pytest.raises(
        ValueError, match=r"W2 has 140 entries but the network needs shape \(120, 7\)"
    ):
        tr.run([*params[:2], np.zeros((20, 7)), *params[3:]], [], x, t, idx)
    with pytest.raises(ValueError, match="params must hold 6 arrays"):
        tr.run(params[:5], [], x, t, idx)
    with pytest.raises(ValueError, match="state must hold 0 arrays"):
        tr.run(params, [np.zeros(3)], x, t, idx)
    with pytest.raises(
        TypeError, match=r"params\[0\] \(W1\) must have dtype float32 like the trainer"
    ):
        kernel("float32").run(params, [], x.astype(np.float32), t, idx)
    with pytest.raises(ValueError, match=r"x has shape \(10, 143\) but the network takes images"):
        tr.run(params, [], np.ascontiguousarray(x[:, :1]).reshape(10, -1), t, idx)
    with pytest.raises(ValueError, match=r"got shape \(10, 2, 11, 13\) \(not C-contiguous\)"):
        tr.run(params, [], np.asfortranarray(x), t, idx)
    with pytest.raises(ValueError, match=r"got shape \(10, 2, 143\) \(C-contiguous\)"):
        tr.run(params, [], x.reshape(10, 2, -1), t, idx)
    with pytest.raises(ValueError, match=r"batch_indices\[1, 2\] = 10 is out of range for 10 rows"):
        tr.run(params, [], x, t, np.array([[0, 1, 2], [3, 4, 10]]))
    with pytest.raises(ValueError, match="label"):
        tr.run(params, [], x, t + 5, idx)
    with pytest.raises(ValueError, match="learning_rates has 1 entries for 2 steps"):
        tr.run(params, [], x, t, idx, learning_rates=np.array([0.1]))
    with pytest.raises(ValueError, match=r"params\[1\] \(b1\) cannot be updated in place: its"):
        tr.run([params[0], params[0], *params[2:]], [], x, t, idx)
    with pytest.raises(ValueError, match="does not fit"):
        _core.ConvNetTrainer(
            (1, 4, 4), (2, 7, 7), stride=1, pad=0, hidden_size=3, output_size=2,
            dtype="float64", optimizer="sgd", hyperparameters={"lr": 0.1},
        )  # fmt: skip
    with pytest.raises(ValueError, match="lr must be a positive number"):
        kernel(hyperparameters={"lr": -1.0})
    with pytest.raises(TypeError, match="dtype must be 'float32' or 'float64'"):
        kernel("float16")


def test_kernel_hashes_its_inputs_not():
    """x, t and the indices are read, never written."""
    net = make_net("odd")
    x, t = data("odd", 10)
    idx = np.array([[0, 3, 5]], dtype=np.int64)
    before = hashlib.sha256(x.tobytes() + t.tobytes() + idx.tobytes()).hexdigest()
    kernel().run([net.params[k] for k in KEYS], [], x, t, idx)
    assert hashlib.sha256(x.tobytes() + t.tobytes() + idx.tobytes()).hexdigest() == before
