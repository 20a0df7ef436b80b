"""Bad input through the public Python API: a clear exception naming the problem, or NaN.

Kernel-level dtypes, layouts and empty arrays are in test_robustness.py and test_kernels.py;
this file goes through ferrograd.functions, nets, layers, optimizers, trainer and gradcheck.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import reference as ref
from ferrograd import (
    SGD,
    Adam,
    Affine,
    MultiLayerNet,
    Relu,
    SoftmaxRegression,
    SoftmaxWithLoss,
    Trainer,
    TwoLayerNet,
    cross_entropy_error,
    functions,
    gradient_check,
    load_params,
    numerical_gradient,
    save_params,
    sum_squares_error,
)
from ferrograd.fused import FusedTrainer

RNG = np.random.default_rng(7)
X = RNG.random((100, 784))
T = RNG.integers(0, 10, 100)
NET = TwoLayerNet(784, 50, 10, seed=0)
METHODS = ["predict", "accuracy", "loss", "gradient", "gradient_layers", "numerical_gradient"]


def call(net, method, x, t=T[:1]):
    fn = getattr(net, method)
    return fn(x) if method == "predict" else fn(x, t)


# --------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        (X[:1].astype(np.complex128), "complex128"),
        (X[:1].astype(object), "object"),
        (np.full((1, 784), "a"), "<U1"),
    ],
)
def test_unconvertible_x_is_type_error_naming_function_and_argument(method, x, dtype):
    with pytest.raises(TypeError, match=rf"TwoLayerNet\.{method}: x has dtype {dtype}"):
        call(NET, method, x)


@pytest.mark.parametrize(
    "x", [(X[:5] * 255).astype(np.uint8), X[:5] > 0.5, X[:5].astype(np.float16), X[:5].tolist()]
)
def test_convertible_x_gives_the_float64_result(x):
    want = ref.two_layer_loss(NET.params, np.asarray(x, dtype=np.float64), T[:5])
    assert NET.loss(x, T[:5]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (functions.sigmoid, (np.array([1j]),), "x has dtype complex128"),
        (functions.relu_grad, (np.array(["1"]),), "x has dtype <U1"),
        (functions.softmax, (np.array([[None]]),), "x has dtype object"),
        (cross_entropy_error, (np.full((2, 3), 1 / 3), np.eye(3)[:2] * 1j), "t has dtype complex"),
        (sum_squares_error, (np.zeros(3), np.array(["a", "b", "c"])), "t has dtype <U1"),
        (sum_squares_error, (np.zeros(3, complex), np.zeros(3)), "y has dtype complex128"),
    ],
)
def test_functions_refuse_unconvertible_dtypes(fn, args, match):
    with pytest.raises(TypeError, match=match):
        fn(*args)


def test_labels_must_be_integers_or_one_hot():
    # float labels of shape (n,) are neither integer labels nor one-hot rows
    with pytest.raises(ValueError, match=r"TwoLayerNet\.loss: t has shape \(100,\); expected one"):
        NET.loss(X, T.astype(np.float64))
    with pytest.raises(TypeError, match=r"TwoLayerNet\.gradient: t has dtype complex128"):
        NET.gradient(X, np.eye(10)[T].astype(complex))


def test_optimizers_refuse_bad_grads_before_touching_params():
    params = {"W": np.ones(3), "b": np.ones(2)}
    for opt in (SGD(), Adam()):
        for bad, dtype in ((np.zeros(2, complex), "complex128"), (np.array(["a", "b"]), "<U1")):
            with pytest.raises(TypeError, match=rf"update: grads\['b'\] has dtype {dtype}"):
                opt.update(params, {"W": np.ones(3), "b": bad})
            np.testing.assert_array_equal(params["W"], np.ones(3))  # nothing half-applied
    with pytest.raises(TypeError, match=r"SGD\.update: params\['W'\] must be a float"):
        SGD().update({"W": np.zeros(3, int)}, {"W": np.zeros(3)})
    with pytest.raises(ValueError, match=r"grads\['W'\] has shape \(4,\) but params\['W'\] has"):
        SGD().update({"W": np.zeros(3)}, {"W": np.zeros(4)})


def test_trainer_refuses_unconvertible_data():
    with pytest.raises(TypeError, match="Trainer: x_train has dtype complex128"):
        Trainer(NET, X.astype(complex), T, X, T, verbose=False)
    with pytest.raises(TypeError, match="Trainer: t_test has dtype <U21"):
        Trainer(NET, X, T, X, T.astype(str), verbose=False)


def test_fused_batch_indices_must_be_integers():
    with pytest.raises(TypeError, match="batch_index_matrix has dtype float64"):
        FusedTrainer(TwoLayerNet(784, 5, 10), SGD()).run_epoch(X, T, np.array([[0.5, 1.0]]))


# --------------------------------------------------------------------- shapes


@pytest.mark.parametrize("method", METHODS)
def test_x_of_783_features_into_784_50_10(method):
    with pytest.raises(
        ValueError, match=rf"TwoLayerNet\.{method}: x has shape \(100, 783\); expected \(n, 784\)"
    ):
        call(NET, method, X[:, :783], T)


@pytest.mark.parametrize("method", METHODS[1:])
def test_labels_of_wrong_length_and_one_hot_of_wrong_width(method):
    with pytest.raises(
        ValueError, match=rf"{method}: t has shape \(99,\); expected 100 integer labels"
    ):
        call(NET, method, X, T[:99])
    with pytest.raises(
        ValueError, match=rf"{method}: t has shape \(100, 9\); expected one-hot rows of shape"
    ):
        call(NET, method, X, np.eye(9)[T % 9])


@pytest.mark.parametrize("method", METHODS[1:])
@pytest.mark.parametrize("bad", [10, -1, 2**40])
def test_out_of_range_labels(method, bad):
    t = T.copy().astype(np.int64)
    t[37] = bad
    with pytest.raises(ValueError, match=rf"{method}: t: label {bad} is out of range for 10"):
        call(NET, method, X, t)


@pytest.mark.parametrize("method", METHODS[1:])
@pytest.mark.parametrize(("dtype", "bad"), [(np.uint8, 10), (np.uint8, 255), (np.int32, -3)])
def test_out_of_range_labels_of_other_integer_types(method, dtype, bad):
    t = T.astype(dtype)
    t[5] = bad
    with pytest.raises(ValueError, match=rf"{method}: t: label {bad} is out of range for 10"):
        call(NET, method, X, t)
    t[5] = 9  # in range again: the same numbers as int64 labels
    want = call(NET, method, X, t.astype(np.int64))
    got = call(NET, method, X, t)
    if isinstance(want, dict):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ["loss", "gradient", "gradient_layers"])
def test_one_hot_rows_of_either_float_type_and_layout_give_the_same_numbers(method):
    one_hot = np.eye(10)[T]
    want = call(NET, method, X, one_hot)
    for t in (one_hot.astype(np.float32), np.asfortranarray(one_hot), one_hot[:, ::-1][:, ::-1]):
        got = call(NET, method, X, t)
        if isinstance(want, dict):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
        else:
            assert got == want


def test_other_networks_and_layers_name_the_shapes():
    with pytest.raises(ValueError, match=r"MultiLayerNet\.loss: x has shape \(100, 783\)"):
        MultiLayerNet(784, [20], 10, seed=0).loss(X[:, :783], T)
    with pytest.raises(ValueError, match=r"SoftmaxRegression\.gradient: x has shape \(100, 783\)"):
        SoftmaxRegression(784, 10).gradient(X[:, :783], T)
    with pytest.raises(ValueError, match=r"Affine\.forward: x has shape \(4, 4\).*W has shape"):
        Affine(np.zeros((3, 2)), np.zeros(2)).forward(np.zeros((4, 4)))
    relu = Relu()
    relu.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Relu\.backward: dout has shape \(3, 2\) but"):
        relu.backward(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"SoftmaxWithLoss\.forward: t: label 3 is out of range"):
        SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"cross_entropy_error: t has shape \(2,\) but y has"):
        cross_entropy_error(np.full((3, 4), 0.25), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy_error: label -1 at index 1 is out of"):
        cross_entropy_error(np.full((3, 4), 0.25), np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"sum_squares_error: y has shape \(3,\) but t has"):
        sum_squares_error(np.zeros(3), np.zeros(4))


def test_trainer_and_gradcheck_name_the_shapes():
    with pytest.raises(ValueError, match=r"x has shape \(100, 783\) but W1 has shape \(784, 50\)"):
        Trainer(TwoLayerNet(784, 50, 10), X[:, :783], T, X, T, iters=1, verbose=False).train()
    with pytest.raises(ValueError, match="x_train has 100 rows but t_train has shape"):
        Trainer(NET, X, T[:99], X, T, verbose=False)
    # the fused path names the mistake as the Python path does
    with pytest.raises(ValueError, match="t: label 12 is out of range for 10 classes"):
        Trainer(TwoLayerNet(784, 5, 10), X, np.full(100, 12), X, T, iters=1, verbose=False).train()
    with pytest.raises(
        ValueError, match=r"TwoLayerNet\.loss: t: label -1 is out of range for 10 classes"
    ):
        Trainer(
            TwoLayerNet(784, 5, 10), X, -np.ones(100, int), X, T, iters=1, verbose=False,
            use_fused=False,
        ).train()  # fmt: skip
    with pytest.raises(ValueError, match=r"numerical_gradient: x has shape \(2, 4\); expected"):
        gradient_check(TwoLayerNet(5, 3, 2), np.zeros((2, 4)), np.array([0, 1]), verbose=False)


# --------------------------------------------------------------------- sizes


def test_empty_batch_and_batch_of_one():
    for method in METHODS:
        with pytest.raises(ValueError, match=rf"{method}: x has shape \(0, 784\)"):
            call(NET, method, X[:0], T[:0])
    want = ref.two_layer_loss(NET.params, X[:1], T[:1])
    assert NET.loss(X[:1], T[:1]) == pytest.approx(want, rel=1e-12)
    assert NET.loss(X[0], T[0]) == pytest.approx(want, rel=1e-12)  # one sample, one label
    assert NET.predict(X[0]).shape == (10,)
    g = NET.gradient(X[:1], T[:1])
    want_g = ref.two_layer_backprop(NET.params, X[:1], T[:1])
    for k in g:
        np.testing.assert_allclose(g[k], want_g[k], rtol=1e-9, atol=1e-15)
    assert sum_squares_error(np.zeros(0), np.zeros(0)) == 0.0  # an empty sum, as NumPy


def test_bad_sizes_and_dtypes_of_networks():
    with pytest.raises(ValueError, match="TwoLayerNet: input_size must be a positive int, got 0"):
        TwoLayerNet(0, 2, 2)
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int, got 2\.0"):
        TwoLayerNet(2, 2.0, 2)
    with pytest.raises(TypeError, match="TwoLayerNet: dtype must be float32 or float64"):
        TwoLayerNet(2, 2, 2, dtype=np.float16)
    with pytest.raises(ValueError, match="SGD: lr must be a positive number, got nan"):
        SGD(float("nan"))
    with pytest.raises(ValueError, match=r"Adam: beta1 must be in \[0, 1\), got 1.0"):
        Adam(beta1=1.0)


# --------------------------------------------------------------------- NaN and infinity


def test_nan_and_inf_in_inputs_propagate():
    x = X[:4].copy()
    x[1, 3] = np.nan
    y = NET.predict(x)
    assert np.isnan(y[1]).all() and np.isfinite(np.delete(y, 1, axis=0)).all()
    assert np.isnan(NET.loss(x, T[:4]))
    g = NET.gradient(x, T[:4])
    assert np.isnan(g["W2"]).all() and np.isnan(g["b2"]).all()
    assert np.isnan(NET.loss(np.full((2, 784), np.inf), T[:2]))  # inf·0 weights and inf − inf
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(
            functions.sigmoid([np.nan, np.inf, -np.inf]), [np.nan, 1.0, 0.0]
        )
    assert np.isnan(functions.softmax([[1.0, np.nan]])).all()
    assert np.isnan(sum_squares_error([np.nan], [0.0]))


def test_nan_parameters_propagate_or_are_refused_where_documented():
    net = TwoLayerNet(784, 50, 10, seed=0)
    net.params["W1"][5, 7] = np.nan
    assert np.isnan(net.loss(X, T))
    g = net.gradient(X, T)
    assert np.isnan(g["W1"]).any() and np.isnan(g["b2"]).all()
    assert np.isnan(net.predict(X)).all()
    # numerical gradients refuse non-finite parameters: every probe would be NaN
    with pytest.raises(ValueError, match="numerical_gradient: W1 contains NaN or infinity"):
        net.numerical_gradient(X[:2], T[:2])
    # the fused step propagates NaN into the loss and the parameters, like the book's loop
    fnet = TwoLayerNet(784, 5, 10, seed=0, dtype=np.float32)
    fnet.params["b1"][0] = np.nan
    losses = FusedTrainer(fnet, SGD(0.1)).run_epoch(X, T, np.array([[0, 1], [2, 3]]))
    assert np.isnan(losses).all() and np.isnan(fnet.params["W2"]).any()


def test_numerical_gradient_of_a_nan_function_is_nan_and_x_restored():
    x = np.array([1.0, 2.0])
    g = numerical_gradient(lambda v: np.nan, x)
    assert np.isnan(g).all()
    np.testing.assert_array_equal(x, [1.0, 2.0])


# --------------------------------------------------------------------- huge requests

HUGE = """
import numpy as np
import ferrograd as fg
from ferrograd import _core, functions as F
big = lambda shape: np.broadcast_to(np.zeros((1,) * len(shape)), shape)
cases = {
    "sigmoid": lambda: F.sigmoid(big((2**40,))),
    "softmax": lambda: F.softmax(big((2**20, 2**20))),
    "relu_grad": lambda: F.relu_grad(big((2**22, 2**22))),
    "matmul": lambda: _core.matmul(big((2**20, 2**20)), big((2**20, 2**20))),
    "TwoLayerNet": lambda: fg.TwoLayerNet(2**40, 2**40, 2),
    "cross_entropy": lambda: F.cross_entropy_error(big((2**31, 2**31)), np.zeros(2, int)),
    "FusedTrainer": lambda: _core.FusedTrainer(
        [2**36, 2**12, 10], activation="sigmoid", dtype="float32", optimizer="sgd",
        hyperparameters={"lr": 0.01}, weight_decay=0.0,
    ),
}
for name, case in cases.items():
    try:
        case()
        print(name, "returned")
    except (MemoryError, ValueError) as exc:
        print(name, type(exc).__name__, str(exc)[:80])
"""


def test_huge_requests_raise_memory_or_value_error_in_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HUGE)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert set(lines) == {"sigmoid", "softmax", "relu_grad", "matmul", "TwoLayerNet",
                          "cross_entropy", "FusedTrainer"}  # fmt: skip
    assert lines["sigmoid"].startswith("MemoryError sigmoid: cannot allocate a (1099511627776,)")
    assert lines["softmax"].startswith("MemoryError softmax: cannot allocate")
    assert lines["relu_grad"].startswith("MemoryError")
    assert lines["matmul"].startswith("MemoryError matmul: cannot allocate a (1048576, 1048576)")
    assert lines["TwoLayerNet"].startswith(("MemoryError", "ValueError"))
    assert lines["cross_entropy"].startswith(("MemoryError", "ValueError"))
    assert lines["FusedTrainer"].startswith("MemoryError FusedTrainer: cannot allocate")


# --------------------------------------------------------------------- saved models


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    net = TwoLayerNet(4, 3, 2, seed=0)
    path = save_params(net, tmp_path / "m.npz")
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    net.params["W1"] += 1
    with pytest.raises(OSError, match="No space left on device"):
        save_params(net, path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temp file left


def test_load_refuses_pickles_corrupt_files_and_mismatches(tmp_path):
    net = TwoLayerNet(4, 3, 2, seed=0)
    good = save_params(net, tmp_path / "m.npz")
    W1 = net.params["W1"].copy()
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"W1": W1}))
    (tmp_path / "short.npz").write_bytes(good.read_bytes()[:100])
    corrupt = bytearray(good.read_bytes())
    corrupt[200] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(corrupt))
    np.save(tmp_path / "one.npy", W1)
    cases = {
        "pickle.npz": "pickle",
        "short.npz": "not a zip file",
        "crc.npz": "Bad CRC-32",
        "one.npy": "a single array, not an .npz archive",
    }
    for name, match in cases.items():
        with pytest.raises(ValueError, match=rf"load_params: .*{name} is not a file .*{match}"):
            load_params(net, tmp_path / name)
    np.savez(tmp_path / "shape.npz", W1=np.zeros((4, 4)), b1=np.zeros(3), W2=np.zeros((3, 2)),
             b2=np.zeros(2))  # fmt: skip
    with pytest.raises(ValueError, match=r"W1 is float64\[4, 4\] but the network's is float64\[4"):
        load_params(net, tmp_path / "shape.npz")
    with pytest.raises(FileNotFoundError):
        load_params(net, tmp_path / "missing.npz")
    np.testing.assert_array_equal(net.params["W1"], W1)  # nothing was loaded
