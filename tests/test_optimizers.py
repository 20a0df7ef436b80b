"""Optimizers: the book's update rules, in-place updates, the f(x, y) = x²/20 + y² race."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from ferrograd.optimizers import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    get_optimizer,
)


def f(x, y):
    return x**2 / 20.0 + y**2


def df(x, y):
    return x / 10.0, 2.0 * y


def run(optimizer, steps=30):
    """The book's ch06/optimizer_compare_naive.py from (−7, 2), with 0-d arrays as params."""
    params = {"x": np.array(-7.0), "y": np.array(2.0)}
    ids = {k: id(v) for k, v in params.items()}
    for _ in range(steps):
        gx, gy = df(params["x"], params["y"])
        optimizer.update(params, {"x": gx, "y": gy})
    assert {k: id(v) for k, v in params.items()} == ids  # updated in place, never rebound
    return float(params["x"]), float(params["y"])


F0 = f(-7.0, 2.0)


@pytest.mark.parametrize(
    "optimizer",
    [
        SGD(lr=0.95),
        Momentum(lr=0.1),
        Nesterov(lr=0.1),
        AdaGrad(lr=1.5),
        RMSprop(lr=0.3, decay_rate=0.9),
        Adam(lr=0.3),
    ],
    ids=lambda o: type(o).__name__,
)
def test_each_optimizer_lowers_the_books_function_50_fold(optimizer):
    x, y = run(optimizer)
    assert f(x, y) < F0 / 50


def test_sgd_and_momentum_match_hand_computation():
    p = {"w": np.array([1.0, -2.0])}
    g = {"w": np.array([0.5, 0.25])}
    SGD(lr=0.1).update(p, g)
    np.testing.assert_allclose(p["w"], [0.95, -2.025], rtol=1e-15)

    mom = Momentum(lr=0.1, momentum=0.9)
    p = {"w": np.array([1.0])}
    mom.update(p, {"w": np.array([1.0])})  # v = −0.1, w = 0.9
    mom.update(p, {"w": np.array([1.0])})  # v = 0.9·(−0.1) − 0.1 = −0.19, w = 0.71
    np.testing.assert_allclose(mom.v["w"], [-0.19], rtol=1e-15)
    np.testing.assert_allclose(p["w"], [0.71], rtol=1e-15)


def test_nesterov_adagrad_rmsprop_adam_first_steps():
    g = {"w": np.array([2.0])}
    nes = Nesterov(lr=0.1, momentum=0.9)
    p = {"w": np.array([1.0])}
    nes.update(p, g)  # v = −0.2; w = 1 + 0.81·(−0.2) − 1.9·0.1·2 = 0.458
    np.testing.assert_allclose(p["w"], [0.458], rtol=1e-14)

    ada = AdaGrad(lr=0.1)
    p = {"w": np.array([1.0])}
    ada.update(p, g)  # h = 4, w = 1 − 0.1·2/(2 + 1e-7)
    np.testing.assert_allclose(ada.h["w"], [4.0])
    np.testing.assert_allclose(p["w"], [1 - 0.2 / (2 + 1e-7)], rtol=1e-15)

    rms = RMSprop(lr=0.1, decay_rate=0.99)
    p = {"w": np.array([1.0])}
    rms.update(p, g)  # h = 0.01·4 = 0.04, w = 1 − 0.1·2/(0.2 + 1e-7)
    np.testing.assert_allclose(rms.h["w"], [0.04], rtol=1e-15)
    np.testing.assert_allclose(p["w"], [1 - 0.2 / (0.2 + 1e-7)], rtol=0, atol=1e-15)

    adam = Adam(lr=0.001)
    p = {"w": np.array([1.0])}
    adam.update(p, g)  # m = 0.2, v = 0.004, lr_t = 0.001·√0.001/0.1; step ≈ lr
    assert adam.iter == 1
    np.testing.assert_allclose(adam.m["w"], [0.2], rtol=1e-15)
    np.testing.assert_allclose(adam.v["w"], [0.004], rtol=1e-12)
    lr_t = 0.001 * np.sqrt(1 - 0.999) / (1 - 0.9)
    np.testing.assert_allclose(p["w"], [1 - lr_t * 0.2 / (np.sqrt(0.004) + 1e-7)], rtol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_keep_identity_and_dtype_float32(name, rng):
    opt = get_optimizer(name)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    before = W.copy()
    params = {"W": W}
    for _ in range(3):
        opt.update(params, {"W": np.ones((4, 3), dtype=np.float32)})
    assert params["W"] is W
    assert W.dtype == np.float32
    assert np.all(W < before)  # a positive gradient moves every weight down


def test_defaults_and_state_names_are_the_books():
    assert SGD().lr == 0.01
    assert (Momentum().lr, Momentum().momentum) == (0.01, 0.9)
    assert (Nesterov().lr, Nesterov().momentum) == (0.01, 0.9)
    assert AdaGrad().lr == 0.01
    assert (RMSprop().lr, RMSprop().decay_rate) == (0.01, 0.99)
    adam = Adam()
    assert (adam.lr, adam.beta1, adam.beta2, adam.iter, adam.m, adam.v) == (
        0.001,
        0.9,
        0.999,
        0,
        None,
        None,
    )


def test_state_names_and_hyperparameters_by_the_books_names():
    assert SGD.state_names == ()
    assert Momentum.state_names == Nesterov.state_names == ("v",)
    assert AdaGrad.state_names == RMSprop.state_names == ("h",)
    assert Adam.state_names == ("m", "v")
    assert SGD().hyperparameters() == {"lr": 0.01}
    assert Momentum().hyperparameters() == {"lr": 0.01, "momentum": 0.9}
    assert Nesterov().hyperparameters() == {"lr": 0.01, "momentum": 0.9}
    assert AdaGrad().hyperparameters() == {"lr": 0.01}
    assert RMSprop().hyperparameters() == {"lr": 0.01, "decay_rate": 0.99}
    assert Adam().hyperparameters() == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_hyperparameters_are_the_init_arguments_read_at_call_time(name):
    cls = OPTIMIZERS[name]
    opt = cls()
    assert list(opt.hyperparameters()) == list(inspect.signature(cls).parameters)
    same = get_optimizer(name, **opt.hyperparameters())
    assert same.hyperparameters() == opt.hyperparameters()
    opt.lr = 0.5  # e.g. a learning-rate schedule between epochs
    assert opt.hyperparameters()["lr"] == 0.5
    assert all(type(v) is float for v in opt.hyperparameters().values())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_names_are_the_state_dicts_an_update_creates(name):
    opt = get_optimizer(name)
    assert all(getattr(opt, s) is None for s in opt.state_names)
    W = np.ones((2, 3))
    opt.update({"W": W}, {"W": np.ones((2, 3))})
    for s in opt.state_names:
        state = getattr(opt, s)
        assert list(state) == ["W"] and state["W"].shape == W.shape


def test_get_optimizer():
    opt = get_optimizer("Adam", lr=0.01, beta1=0.8)
    assert isinstance(opt, Adam) and (opt.lr, opt.beta1) == (0.01, 0.8)
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        get_optimizer("lbfgs")
    with pytest.raises(TypeError, match="bad arguments for SGD"):
        get_optimizer("sgd", momentum=0.9)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="SGD: lr must be a positive number"):
        SGD(lr=0)
    with pytest.raises(ValueError, match=r"Momentum: momentum must be in \[0, 1\)"):
        Momentum(momentum=1.5)
    with pytest.raises(ValueError, match=r"Adam: beta2 must be in \[0, 1\)"):
        Adam(beta2=1.0)
    params = {"W": np.zeros((2, 3))}
    with pytest.raises(ValueError, match=r"grads\['W'\] has shape \(3, 2\)"):
        SGD().update(params, {"W": np.zeros((3, 2))})
    with pytest.raises(KeyError, match="no entry for parameter 'W'"):
        Adam().update(params, {})
    # a float is the book's scalar parameter (optimizer_compare_naive.py); an int is refused
    with pytest.raises(TypeError, match=r"must be a float numpy\.ndarray"):
        SGD().update({"x": 1}, {"x": 1.0})
    # arrays that pass the quick look of the common case still get every check
    read_only = np.zeros((2, 3))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W'\] is read-only"):
        SGD().update({"W": read_only}, {"W": np.ones((2, 3))})
    with pytest.raises(TypeError, match=r"grads\['W'\] has dtype complex128"):
        SGD().update(params, {"W": np.zeros((2, 3), complex)})
    with pytest.raises(TypeError, match=r"params\['W'\] must be a float numpy\.ndarray"):
        SGD().update({"W": np.zeros((2, 3), np.int64)}, {"W": np.ones((2, 3))})
    assert not read_only.any() and not params["W"].any()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_steps_equal_the_numpy_lines_bit_for_bit(name, dtype, rng):
    # The library's classes step through one native call; a subclass takes the NumPy
    # lines of `update`. Both must give the same bits, step after step, and keep every
    # array (parameters and state) in place.
    cls = OPTIMIZERS[name]
    numpy_cls = type(f"NumPy{cls.__name__}", (cls,), {})
    # 784-100-10: large enough that the native step is shared between threads, in
    # pieces that split W1.
    shapes = {"W1": (784, 100), "b1": (100,), "W2": (100, 10), "b2": (10,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    copies = {k: v.copy() for k, v in params.items()}
    native, reference = cls(lr=0.05), numpy_cls(lr=0.05)
    ids = {k: id(v) for k, v in params.items()}
    for _ in range(5):
        grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        native.update(params, grads)
        reference.update(copies, grads)
    assert {k: id(v) for k, v in params.items()} == ids
    for k in shapes:
        assert params[k].dtype == dtype
        np.testing.assert_array_equal(params[k], copies[k], err_msg=k)
        assert not np.array_equal(params[k], params[k] * 0), k  # it moved
    for state in cls.state_names:
        for k in shapes:
            np.testing.assert_array_equal(getattr(native, state)[k], getattr(reference, state)[k])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_arrays_the_native_step_cannot_take_go_through_numpy(name, rng):
    # Fortran-ordered and strided parameters, gradients given as lists or of another
    # dtype, and a gradient that is its own parameter: the step falls back to NumPy.
    cls = OPTIMIZERS[name]
    numpy_cls = type(f"NumPy{cls.__name__}", (cls,), {})
    big = rng.standard_normal(12)
    params = {
        "W": np.asfortranarray(rng.standard_normal((6, 5))),
        "v": big[::2],  # a view: updated in place inside `big`
        "b": rng.standard_normal(3),
    }
    copies = {"W": params["W"].copy(order="F"), "v": big.copy()[::2], "b": params["b"].copy()}
    grads = {
        "W": rng.standard_normal((6, 5)),
        "v": rng.standard_normal(6).tolist(),
        "b": rng.standard_normal(3).astype(np.float32),
    }
    native, reference = cls(lr=0.1), numpy_cls(lr=0.1)
    for _ in range(3):
        native.update(params, grads)
        reference.update(copies, grads)
    for k in params:
        np.testing.assert_array_equal(params[k], copies[k], err_msg=k)
    same = {"W": rng.standard_normal((4, 4))}
    want = same["W"].copy()
    numpy_cls(lr=0.1).update({"W": want}, {"W": want})
    cls(lr=0.1).update(same, same)  # grads["W"] is params["W"]
    np.testing.assert_array_equal(same["W"], want)
