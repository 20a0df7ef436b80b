"""The fused training step (``_core.FusedTrainer``, ``ferrograd.fused``) on the two-layer net against the
composed path: the book's backprop gradient and optimizer update in NumPy."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import reference as ref
from conftest import python_output
from ferrograd import _core, fused
from fused_helpers import fused_trainer

KEYS = ("W1", "b1", "W2", "b2")
HYPER = {
    "sgd": {"lr": 0.1},
    "momentum": {"lr": 0.05, "momentum": 0.9},
    "nesterov": {"lr": 0.05, "momentum": 0.9},
    "adagrad": {"lr": 0.05},
    "rmsprop": {"lr": 0.01, "decay_rate": 0.99},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999},
}
EPS = 1e-7


def book_update(name: str, hp: dict, params, grads, state: dict, it: int) -> None:
    """DLFS common/optimizer.py, operation by operation (state arrays created lazily)."""
    for key in KEYS:
        p, g = params[key], grads[key]
        if name == "sgd":
            p -= hp["lr"] * g
        elif name in ("momentum", "nesterov"):
            v = state.setdefault(("v", key), np.zeros_like(p))
            v *= hp["momentum"]
            v -= hp["lr"] * g
            if name == "momentum":
                p += v
            else:
                p += hp["momentum"] * hp["momentum"] * v
                p -= (1 + hp["momentum"]) * hp["lr"] * g
        elif name == "adagrad":
            h = state.setdefault(("h", key), np.zeros_like(p))
            h += g * g
            p -= hp["lr"] * g / (np.sqrt(h) + EPS)
        elif name == "rmsprop":
            h = state.setdefault(("h", key), np.zeros_like(p))
            h *= hp["decay_rate"]
            h += (1 - hp["decay_rate"]) * g * g
            p -= hp["lr"] * g / (np.sqrt(h) + EPS)
        else:
            m = state.setdefault(("m", key), np.zeros_like(p))
            v = state.setdefault(("v", key), np.zeros_like(p))
            lr_t = hp["lr"] * float(np.sqrt(1.0 - hp["beta2"] ** it)) / (1.0 - hp["beta1"] ** it)
            m += (1 - hp["beta1"]) * (g - m)
            v += (1 - hp["beta2"]) * (g**2 - v)
            p -= lr_t * m / (np.sqrt(v) + EPS)


def init(rng: np.random.Generator, d: int, h: int, k: int, dtype=np.float64, std=0.01):
    return {
        "W1": (std * rng.standard_normal((d, h))).astype(dtype),
        "b1": np.zeros(h, dtype=dtype),
        "W2": (std * rng.standard_normal((h, k))).astype(dtype),
        "b2": np.zeros(k, dtype=dtype),
    }


SLOTS = {
    "sgd": (),
    "momentum": ("v",),
    "nesterov": ("v",),
    "adagrad": ("h",),
    "rmsprop": ("h",),
    "adam": ("m", "v"),
}


def state_arrays(name: str, params) -> list[np.ndarray]:
    return [np.zeros_like(params[k]) for _ in SLOTS[name] for k in KEYS]


def load_mnist(mnist_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    def read(name: str, offset: int) -> np.ndarray:
        path = mnist_dir / name
        raw = gzip.open(path).read() if path.exists() else (mnist_dir / name[:-3]).read_bytes()
        return np.frombuffer(raw, dtype=np.uint8, offset=offset)

    x = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 784)[:n].astype(np.float64) / 255.0
    return x, read("train-labels-idx1-ubyte.gz", 8)[:n].astype(np.int64)


@pytest.fixture(scope="module")
def mnist_small(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist(mnist_dir, 2000)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("name", list(HYPER))
def test_hundred_steps_equal_the_composed_path(mnist_small, name, activation):
    x, t = mnist_small
    rng = np.random.default_rng(11)
    params = init(rng, 784, 50, 10, std=0.1)
    want = {k: v.copy() for k, v in params.items()}
    batches = rng.integers(0, len(x), size=(100, 100))
    trainer = fused_trainer([784, 50, 10], activation=activation, optimizer=name, **HYPER[name])
    state = state_arrays(name, params)
    losses = trainer.run([params[k] for k in KEYS], state, x, t, batches)
    book_state: dict = {}
    want_losses = []
    for it, rows in enumerate(batches, start=1):
        want_losses.append(ref.two_layer_loss(want, x[rows], t[rows], activation))
        grads = ref.two_layer_backprop(want, x[rows], t[rows], activation)
        book_update(name, HYPER[name], want, grads, book_state, it)
    # Adaptive rules divide by √h: a gradient entry summed with cancellation (rounding
    # differs between NumPy's GEMM and the fused sums) moves its step by more than 1e-12.
    atol = 1e-12 if name in ("sgd", "momentum", "nesterov") else 1e-9
    for key in KEYS:
        np.testing.assert_allclose(params[key], want[key], rtol=0, atol=atol, err_msg=key)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12, atol=0)
    assert want_losses[-1] < want_losses[0]  # it trained
    # State arrays in kernel order (Adam: m then v), as the book's dicts hold them.
    order = [(slot, key) for slot in SLOTS[name] for key in KEYS]
    assert len(order) == len(state)
    for arr, o in zip(state, order, strict=True):
        np.testing.assert_allclose(arr, book_state[o], rtol=1e-9, atol=1e-12, err_msg=str(o))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hidden", [33, 50, 70, 100, 130])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_other_hidden_sizes_equal_the_composed_path(rng, hidden, name, dtype):
    """Uneven parts (33 = 17 + 16) and parts of several register blocks (70, 130), whose
    last block is narrower: 8, 12, 16, 24 units in float32, 4, 8, 12 in float64."""
    x = np.round(rng.random((300, 60)) * 255 * (rng.random((300, 60)) < 0.3)) / 255
    t = rng.integers(0, 10, size=300)
    params = init(rng, 60, hidden, 10, std=0.3)
    want = {k: v.copy() for k, v in params.items()}
    batches = rng.integers(0, 300, size=(20, 50))
    book_state: dict = {}
    for it, b in enumerate(batches, start=1):
        grads = ref.two_layer_backprop(want, x[b], t[b], "sigmoid")
        book_update(name, HYPER[name], want, grads, book_state, it)
    xd = x.astype(dtype)
    atol = 1e-10 if dtype == np.float64 else 1e-5
    for rows in (xd, _core.SparseRows(xd)):
        got = {k: v.astype(dtype) for k, v in params.items()}
        fused_trainer(
            [60, hidden, 10], optimizer=name, dtype=np.dtype(dtype).name, **HYPER[name]
        ).run([got[k] for k in KEYS], state_arrays(name, got), rows, t, batches)
        for key in KEYS:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=atol, err_msg=key)


def test_one_hot_targets_and_float32(rng):
    x = rng.random((300, 20))
    x[x < 0.6] = 0.0
    labels = rng.integers(0, 4, size=300)
    one_hot = np.eye(4)[labels]
    batches = rng.integers(0, 300, size=(30, 16))
    p_lab = init(rng, 20, 8, 4, std=0.5)
    p_oh = {k: v.copy() for k, v in p_lab.items()}
    tr = fused_trainer([20, 8, 4], optimizer="momentum", lr=0.1)
    a = tr.run([p_lab[k] for k in KEYS], state_arrays("momentum", p_lab), x, labels, batches)
    tr = fused_trainer([20, 8, 4], optimizer="momentum", lr=0.1)
    b = tr.run([p_oh[k] for k in KEYS], state_arrays("momentum", p_oh), x, one_hot, batches)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    for key in KEYS:
        np.testing.assert_allclose(p_lab[key], p_oh[key], rtol=0, atol=1e-14)

    p32 = {k: v.astype(np.float32) for k, v in init(rng, 20, 8, 4, std=0.5).items()}
    want = {k: v.copy() for k, v in p32.items()}
    tr = fused_trainer([20, 8, 4], dtype="float32", optimizer="adam", lr=0.01)
    assert tr.dtype == "float32" and tr.state_size == 8
    x32 = x.astype(np.float32)
    tr.run([p32[k] for k in KEYS], state_arrays("adam", p32), x32, labels, batches)
    book_state: dict = {}
    for it, rows in enumerate(batches, start=1):
        grads = ref.two_layer_backprop(want, x32[rows], labels[rows])
        book_update("adam", {"lr": 0.01, "beta1": 0.9, "beta2": 0.999}, want, grads, book_state, it)
    for key in KEYS:
        assert p32[key].dtype == np.float32
        np.testing.assert_allclose(p32[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_errors_name_the_problem(rng):
    params = init(rng, 6, 4, 3)
    plist = [params[k] for k in KEYS]
    x = rng.random((10, 6))
    t = rng.integers(0, 3, size=10)
    idx = rng.integers(0, 10, size=(2, 5))
    tr = fused_trainer([6, 4, 3])
    with pytest.raises(ValueError, match=r"x has shape \(10, 5\) but W1 has shape \(6, 4\)"):
        tr.run(plist, [], x[:, :5], t, idx)
    with pytest.raises(ValueError, match=r"W2 has shape \(4, 2\) but the network needs \(4, 3\)"):
        tr.run([*plist[:2], np.zeros((4, 2)), plist[3]], [], x, t, idx)
    with pytest.raises(TypeError, match=r"x has dtype float32 but the other arguments are float64"):
        tr.run(plist, [], x.astype(np.float32), t, idx)
    with pytest.raises(TypeError, match=r"params\[0\] \(W1\) must have dtype float64"):
        tr.run([plist[0].astype(np.float32), *plist[1:]], [], x, t, idx)
    with pytest.raises(ValueError, match="label 3 at index 1 is out of range for 3 classes"):
        tr.run(plist, [], x, np.array([0, 3, 0, 0, 0, 0, 0, 0, 0, 0]), idx)
    with pytest.raises(ValueError, match=r"batch_indices\[1, 2\] = 10 is out of range for 10"):
        tr.run(plist, [], x, t, np.array([[0, 1, 2, 3, 4], [0, 1, 10, 3, 4]]))
    with pytest.raises(TypeError, match="batch_indices must be an int64"):
        tr.run(plist, [], x, t, idx.astype(np.int32))
    with pytest.raises(ValueError, match="state must hold 8 arrays"):
        fused_trainer([6, 4, 3], optimizer="adam").run(plist, plist, x, t, idx)
    frozen = plist[0].copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] \(W1\) is read-only \(its writeable flag"):
        tr.run([frozen, *plist[1:]], [], x, t, idx)
    with pytest.raises(ValueError, match=r"params\[2\] \(W2\) cannot be updated in place: its"):
        tr.run([plist[0], plist[1], plist[0], plist[3]], [], x, t, idx)
    with pytest.raises(ValueError, match=r"W1\) cannot be updated in place: its memory is in use"):
        sq = rng.random((6, 6))
        fused_trainer([6, 6, 3]).run(
            [sq, np.zeros(6), np.zeros((6, 3)), np.zeros(3)], [], sq, t[:6], idx % 6
        )
    with pytest.raises(ValueError, match="W1 must be C-contiguous"):
        tr.run([np.asfortranarray(plist[0]), *plist[1:]], [], x, t, idx)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fused_trainer([6, 4, 3], optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        fused_trainer([6, 4, 3], optimizer="momentum", momentum=1.5)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        fused_trainer([6, 4, 3], lr=-1.0)
    with pytest.raises(TypeError, match="dtype must be 'float32' or 'float64'"):
        fused_trainer([6, 4, 3], dtype="float16")
    assert np.all(plist[0] == params["W1"])  # failed calls changed nothing


def test_accuracy_and_predict_labels(rng):
    params = init(rng, 30, 12, 5, std=1.0)
    x = rng.standard_normal((700, 30))
    t = rng.integers(0, 5, size=700)
    for activation in ("sigmoid", "relu"):
        act = ref.sigmoid if activation == "sigmoid" else ref.relu
        logits = act(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
        want = np.argmax(logits, axis=1)
        args = [params[k] for k in KEYS]
        got = _core.predict_labels(args, x, activation=activation)
        np.testing.assert_array_equal(got, want)
        acc = _core.accuracy(args, x, t, activation=activation)
        assert acc == np.mean(want == t)
        assert _core.accuracy(args, x, np.eye(5)[t], activation=activation) == acc
    with pytest.raises(ValueError, match="need one label per row"):
        _core.accuracy(args, x, t[:5], activation="sigmoid")


class Net(SimpleNamespace):
    pass


def test_fused_trainer_wrapper_keeps_arrays_and_optimizer_state(rng):
    optimizers = pytest.importorskip("ferrograd.optimizers")
    x = rng.random((200, 10))
    t = rng.integers(0, 3, size=200)
    batches = rng.integers(0, 200, size=(20, 8))
    for name, cls in [("adam", optimizers.Adam), ("momentum", optimizers.Momentum)]:
        net = Net(params=init(rng, 10, 6, 3, std=0.3), activation="relu")
        ref_params = {k: v.copy() for k, v in net.params.items()}
        hp = {k: v for k, v in HYPER[name].items()}
        opt = cls(**hp)
        assert fused.supports(net, opt)
        w1 = net.params["W1"]
        tr = fused.FusedTrainer(net, opt)
        tr.run_epoch(x, t, batches[:10])
        tr.run_epoch(x, t, batches[10:])
        assert net.params["W1"] is w1
        ref_opt = cls(**hp)
        for rows in batches:
            ref_opt.update(ref_params, ref.two_layer_backprop(ref_params, x[rows], t[rows], "relu"))
        for key in KEYS:
            np.testing.assert_allclose(net.params[key], ref_params[key], rtol=0, atol=1e-12)
        if name == "adam":
            assert opt.iter == 20
            np.testing.assert_allclose(opt.m["W2"], ref_opt.m["W2"], rtol=0, atol=1e-14)
        acc = tr.accuracy(x, t)
        logits = ref.relu(x @ ref_params["W1"] + ref_params["b1"]) @ ref_params["W2"]
        assert acc == np.mean(np.argmax(logits + ref_params["b2"], axis=1) == t)
    assert not fused.supports(Net(params={"W1": np.zeros((2, 2))}, activation="relu"), opt)
    assert not fused.supports(Net(params=init(rng, 4, 3, 2), activation="tanh"), opt)
    assert not fused.supports(Net(params=init(rng, 4, 3, 2), activation="relu"), object())
    with pytest.raises(ValueError, match="FusedTrainer: needs a fully connected net"):
        fused.FusedTrainer(Net(params={}, activation="relu"), opt)


@pytest.mark.parametrize("values", ["continuous", "pixels"])
def test_sparse_rows_give_the_dense_results(rng, values):
    x = rng.random((120, 15))
    x[x < 0.7] = 0.0
    x[3] = 0.0  # an all-zero row
    if values == "pixels":  # k/255: few distinct values, kept as 4-byte codes
        x = np.round(x * 255) / 255
    t = rng.integers(0, 4, size=120)
    batches = rng.integers(0, 120, size=(12, 10))
    sp = _core.SparseRows(x)
    assert sp.shape == (120, 15) and sp.dtype == "float64"
    assert sp.nnz == np.count_nonzero(x)
    per_entry, table = (4, 256 * 8) if values == "pixels" else (16, 0)
    assert sp.nbytes == 8 * 121 + per_entry * sp.nnz + table
    assert "nnz=" in repr(sp)
    for name in ("sgd", "adam"):
        dense = init(rng, 15, 9, 4, std=0.5)
        comp = {k: v.copy() for k, v in dense.items()}
        hp = {"lr": 0.1} if name == "sgd" else {"lr": 0.01}
        a = fused_trainer([15, 9, 4], optimizer=name, **hp).run(
            [dense[k] for k in KEYS], state_arrays(name, dense), x, t, batches
        )
        b = fused_trainer([15, 9, 4], optimizer=name, **hp).run(
            [comp[k] for k in KEYS], state_arrays(name, comp), sp, t, batches
        )
        np.testing.assert_array_equal(a, b)
        for key in KEYS:
            np.testing.assert_array_equal(dense[key], comp[key], err_msg=key)
    args = [dense[k] for k in KEYS]
    want = _core.predict_labels(args, x, activation="sigmoid")
    np.testing.assert_array_equal(_core.predict_labels(args, sp, activation="sigmoid"), want)
    assert _core.accuracy(args, sp, t, activation="sigmoid") == np.mean(want == t)
    with pytest.raises(TypeError, match="x has dtype float32 but the other arguments are float64"):
        _core.accuracy(args, _core.SparseRows(x.astype(np.float32)), t, activation="sigmoid")
    with pytest.raises(ValueError, match=r"x has shape \(120, 15\) but W1 has shape \(14, 9\)"):
        fused_trainer([14, 9, 4]).run(
            [np.zeros((14, 9)), np.zeros(9), np.zeros((9, 4)), np.zeros(4)], [], sp, t, batches
        )
    with pytest.raises(ValueError, match="SparseRows: x must be 2-D"):
        _core.SparseRows(x[0])
    with pytest.raises(TypeError, match="SparseRows: x"):
        _core.SparseRows(x.astype(np.int64))


def test_fused_trainer_compresses_each_array_once(rng):
    optimizers = pytest.importorskip("ferrograd.optimizers")
    x = rng.random((50, 6))
    x[x < 0.5] = 0.0
    t = rng.integers(0, 3, size=50)
    net = Net(params=init(rng, 6, 5, 3, std=0.3), activation="sigmoid")
    tr = fused.FusedTrainer(net, optimizers.SGD(lr=0.1))
    tr.run_epoch(x, t, rng.integers(0, 50, size=(3, 5)))
    rows = tr._rows(x, train=True)
    assert isinstance(rows, _core.SparseRows) and tr._rows(x, train=False) is rows
    xt = x[:20].copy()
    assert tr.accuracy(xt, t[:20]) == tr.accuracy(x[:20], t[:20])
    assert tr._rows(xt, train=False) is tr._rows(xt, train=False)
    assert tr._rows(x, train=True) is rows  # evaluating another array keeps the training one
    # Lists and other shapes take the direct path (and the kernel's own errors).
    assert isinstance(tr._rows(x.tolist(), train=False), np.ndarray)


THREADS_SCRIPT = """
import hashlib
import numpy as np
import ferrograd as fg
from ferrograd.fused import FusedTrainer

rng = np.random.default_rng(3)
x = rng.integers(0, 256, (400, 784)) * (rng.random((400, 784)) < 0.2) / 255.0
t = rng.integers(0, 10, 400)
batches = rng.integers(0, 400, (40, 100))
for dtype in (np.float32, np.float64):
    for make_opt in (lambda: fg.SGD(lr=0.1), lambda: fg.Adam(lr=0.001)):
        for net in (
            fg.TwoLayerNet(784, 50, 10, seed=0, dtype=dtype),
            fg.MultiLayerNet(784, [60, 40], 10, activation="relu", seed=0, dtype=dtype),
        ):
            opt = make_opt()
            losses = FusedTrainer(net, opt).run_epoch(x.astype(dtype), t, batches)
            digest = hashlib.sha256(losses.tobytes())
            for key in sorted(net.params):
                digest.update(np.ascontiguousarray(net.params[key]).tobytes())
            print(type(net).__name__, np.dtype(dtype).name, type(opt).__name__, digest.hexdigest())
"""


def test_results_do_not_depend_on_the_number_of_threads():
    """The first hidden layer is split the same way whatever the pool size: bit for bit,
    for the two-layer and the multi-layer trainer."""
    outs = [python_output(THREADS_SCRIPT, FERROGRAD_NUM_THREADS=t) for t in ("1", "2")]
    assert len(outs[0].splitlines()) == 8
    assert outs[0] == outs[1]


def test_learning_rate_changes_are_followed_between_and_within_calls(rng):
    """A schedule that sets ``optimizer.lr`` between calls, or passes one rate per step,
    trains as the book's loop does with the rate set before each update."""
    from ferrograd.nets import TwoLayerNet
    from ferrograd.optimizers import SGD

    x = rng.random((200, 30))
    x[x < 0.6] = 0.0
    t = rng.integers(0, 5, size=200)
    batches = rng.integers(0, 200, size=(8, 20))
    lrs = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01])
    want = TwoLayerNet(30, 12, 5, seed=3, weight_init_std=0.3)
    opt = SGD(lr=1.0)
    for lr, rows in zip(lrs, batches, strict=True):
        opt.lr = lr
        opt.update(want.params, want.gradient(x[rows], t[rows]))

    between = TwoLayerNet(30, 12, 5, seed=3, weight_init_std=0.3)
    opt_between = SGD(lr=1.0)
    trainer = fused.FusedTrainer(between, opt_between)
    for lr, rows in zip(lrs, batches, strict=True):
        opt_between.lr = lr
        trainer.run_epoch(x, t, rows[None, :])

    within = TwoLayerNet(30, 12, 5, seed=3, weight_init_std=0.3)
    fused.FusedTrainer(within, SGD(lr=1.0)).run_epoch(x, t, batches, learning_rates=lrs)
    for key in KEYS:
        np.testing.assert_allclose(between.params[key], want.params[key], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(within.params[key], between.params[key])
    with pytest.raises(ValueError, match=r"learning_rates has 2 entries for 8 steps"):
        fused.FusedTrainer(within, SGD()).run_epoch(x, t, batches, learning_rates=lrs[:2])
    with pytest.raises(ValueError, match=r"learning_rates\[1\] must be a positive number"):
        fused.FusedTrainer(within, SGD()).run_epoch(x, t, batches[:2], learning_rates=[0.1, 0])
