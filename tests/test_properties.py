"""Hypothesis properties of every public kernel and function, against tests/reference.py.

Random shapes, float32/float64, C/Fortran/strided/reversed layouts, bounded values that
reach ±1e30 where the maths allows. Profiles in conftest.py: 100 examples per test in CI,
1000 with FERROGRAD_HYPOTHESIS=slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import tol
from ferrograd import (
    SGD,
    AdaGrad,
    Adam,
    Affine,
    Momentum,
    Nesterov,
    RMSprop,
    TwoLayerNet,
    _core,
    cross_entropy_error,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    sum_squares_error,
)
from ferrograd.fused import FusedTrainer
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

KEYS = ("W1", "b1", "W2", "b2")
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["C", "F", "strided", "reversed"])


def layout(a: np.ndarray, kind: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout (always a new array)."""
    if kind == "F":
        out = np.array(a, order="F", copy=True)
    elif kind == "strided":  # every other element of a twice-as-large NaN-filled buffer
        big = np.full(tuple(2 * s for s in a.shape), np.nan, dtype=a.dtype)
        out = big[tuple(slice(None, None, 2) for _ in a.shape)]
        out[...] = a
    elif kind == "reversed":  # negative strides on every axis
        out = a[tuple(slice(None, None, -1) for _ in a.shape)].copy()
        out = out[tuple(slice(None, None, -1) for _ in a.shape)]
    else:
        out = np.array(a, order="C", copy=True)
    np.testing.assert_array_equal(out, a)
    return out


def floats(dtype, bound: float) -> st.SearchStrategy[float]:
    if dtype == np.float32:
        bound = float(np.float32(bound))  # the nearest float32 (1e30 is not one)
        return st.floats(-bound, bound, allow_nan=False, width=32)
    return st.floats(-bound, bound, allow_nan=False)


@st.composite
def float_arrays(draw, max_dims=3, bound=1e30, min_side=0, max_side=7, strided_1d=True):
    """(array, dtype) with a random shape, dtype, layout and values in [-bound, bound]."""
    dtype = draw(DTYPES)
    shape = draw(array_shapes(min_dims=1, max_dims=max_dims, min_side=min_side, max_side=max_side))
    a = draw(arrays(dtype, shape, elements=floats(dtype, bound)))
    kind = draw(LAYOUTS) if strided_1d or a.ndim > 1 else draw(st.sampled_from(["C", "F"]))
    return layout(a, kind), dtype


# --------------------------------------------------------------------- activations


@given(float_arrays())
def test_sigmoid_matches_the_book_and_is_a_probability(case):
    x, dtype = case
    y = sigmoid(x)
    assert y.dtype == dtype and y.shape == x.shape
    with np.errstate(over="ignore"):
        want = ref.sigmoid(x.astype(np.float64))
    np.testing.assert_allclose(y, want.astype(dtype), **tol("elementwise", dtype))
    assert ((y >= 0) & (y <= 1)).all()
    # σ(x) + σ(−x) = 1
    np.testing.assert_allclose(y + sigmoid(-x), 1, rtol=0, atol=4 * np.finfo(dtype).eps)


@given(float_arrays())
def test_sigmoid_grad_is_sigma_times_one_minus_sigma(case):
    x, dtype = case
    g = sigmoid_grad(x)
    with np.errstate(over="ignore"):
        want = ref.sigmoid_grad(x.astype(np.float64))
    np.testing.assert_allclose(g, want.astype(dtype), **tol("elementwise", dtype))
    assert ((g >= 0) & (g <= 0.25 + np.finfo(dtype).eps)).all()


@given(float_arrays())
def test_relu_and_relu_grad_are_exact(case):
    x, dtype = case
    np.testing.assert_array_equal(relu(x), np.maximum(0, x))
    np.testing.assert_array_equal(relu_grad(x), ref.relu_grad(x))
    assert relu(x).dtype == relu_grad(x).dtype == dtype


# --------------------------------------------------------------------- softmax


@given(float_arrays(max_dims=2, min_side=1))
def test_softmax_rows_are_distributions_and_match_the_book(case):
    x, dtype = case
    y = softmax(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert ((y >= 0) & (y <= 1)).all()
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=0, atol=x.shape[-1] * np.finfo(dtype).eps)
    want = ref.softmax(x.astype(np.float64)).astype(dtype)
    np.testing.assert_allclose(
        y, want, rtol=tol("reduction", dtype)["rtol"] * 10, atol=tol("reduction", dtype)["atol"]
    )
    # the largest logit of each row gets the largest probability
    rows = y.reshape(-1, x.shape[-1])
    xr = x.reshape(-1, x.shape[-1])
    assert (rows[np.arange(len(rows)), xr.argmax(axis=1)] == rows.max(axis=1)).all()


@given(
    DTYPES,
    st.integers(1, 6),
    st.integers(1, 8),
    st.data(),
)
def test_softmax_is_invariant_to_a_constant_per_row(dtype, n, k, data):
    # Logits on a 2^-10 grid in [-64, 64] and integer shifts up to 1000: x + c is exact in
    # float32 and float64, so the shifted softmax must agree to rounding.
    grid = st.integers(-(2**16), 2**16).map(lambda i: i / 1024)
    x = np.array(data.draw(st.lists(grid, min_size=n * k, max_size=n * k)), dtype=dtype)
    x = x.reshape(n, k)
    c = np.array(data.draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n)), dtype)
    shifted = layout(x + c[:, None], data.draw(LAYOUTS))
    np.testing.assert_allclose(
        softmax(shifted), softmax(x), rtol=10 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny
    )


# --------------------------------------------------------------------- losses


@st.composite
def probabilities_and_labels(draw):
    dtype = draw(DTYPES)
    n, k = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["softmax", "uniform"]))
    if kind == "softmax":
        logits = draw(arrays(np.float64, (n, k), elements=st.floats(-30, 30)))
        y = ref.softmax(logits).astype(dtype)
    else:  # any values in [0, 1], also exact 0 and 1
        y = draw(arrays(dtype, (n, k), elements=st.floats(0, 1, width=32)))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    return layout(y, draw(LAYOUTS)), labels, dtype


@given(probabilities_and_labels())
def test_cross_entropy_labels_equal_one_hot_and_the_book(case):
    y, labels, dtype = case
    one_hot = np.eye(y.shape[1], dtype=dtype)[labels]
    a = cross_entropy_error(y, labels)
    b = cross_entropy_error(y, one_hot)
    want = ref.cross_entropy_error(y.astype(np.float64), labels)
    assert a == pytest.approx(b, rel=tol("reduction", dtype)["rtol"], abs=1e-6)
    assert a == pytest.approx(want, rel=tol("reduction", dtype)["rtol"] * 10, abs=1e-6)
    # −log(y + 1e-7) ≥ −log(1 + 1e-7) ≈ −1e-7: non-negative up to the δ the book adds
    # (−1.19e-7 in float32, where 1 + 1e-7 rounds up to 1 + 2^-23)
    assert a >= -1.2e-7
    assert a <= -np.log(1e-7) * (1 + 1e-6)  # a confident wrong answer costs at most 16.1


@given(float_arrays(bound=1e15), st.data())
def test_sum_squares_error_matches_the_book_and_is_symmetric(case, data):
    y, dtype = case
    t = layout(data.draw(arrays(dtype, y.shape, elements=floats(dtype, 1e15))), data.draw(LAYOUTS))
    got = sum_squares_error(y, t)
    want = ref.sum_squares_error(y.astype(np.float64), t.astype(np.float64))
    assert got >= 0
    assert got == pytest.approx(sum_squares_error(t, y), rel=1e-6 if dtype == np.float32 else 1e-12)
    if np.isfinite(want):
        # squares below the dtype's smallest normal number underflow to 0
        rel = 1e-5 if dtype == np.float32 else 1e-12
        assert got == pytest.approx(want, rel=rel, abs=float(np.finfo(dtype).tiny))


# --------------------------------------------------------------------- affine


@st.composite
def affine_case(draw):
    dtype = draw(DTYPES)
    n, d, h = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    el = floats(dtype, 1e3)
    x = layout(draw(arrays(dtype, (n, d), elements=el)), draw(LAYOUTS))
    w = draw(arrays(dtype, (d, h), elements=el))
    b = draw(arrays(dtype, (h,), elements=el))
    dout = layout(draw(arrays(dtype, (n, h), elements=el)), draw(LAYOUTS))
    return x, w, b, dout, dtype


def close(got, want, dtype, scale):
    """Products of n terms up to 1e3·1e3: an absolute bound from the magnitudes involved
    (plus a few subnormal steps: results below the smallest normal number lose bits)."""
    info = np.finfo(dtype)
    atol = 16 * info.eps * scale + 16 * info.smallest_subnormal
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


@given(affine_case())
def test_affine_forward_and_backward_match_numpy(case):
    x, w, b, dout, dtype = case
    x64, w64, dout64 = x.astype(np.float64), w.astype(np.float64), dout.astype(np.float64)
    scale = (np.abs(x64) @ np.abs(w64)).max() + np.abs(b).max()
    close(_core.affine(x, w, b), x64 @ w64 + b, dtype, scale)
    layer = Affine(w, b)
    close(layer.forward(x), x64 @ w64 + b, dtype, scale)
    dx = layer.backward(dout)
    close(dx, dout64 @ w64.T, dtype, (np.abs(dout64) @ np.abs(w64.T)).max())
    close(layer.dW, x64.T @ dout64, dtype, (np.abs(x64.T) @ np.abs(dout64)).max())
    close(layer.db, dout64.sum(axis=0), dtype, np.abs(dout64).sum(axis=0).max())
    assert dx.dtype == layer.dW.dtype == dtype


# --------------------------------------------------------------------- two-layer network


@st.composite
def tiny_net(draw, dtypes=DTYPES, weight=3.0):
    dtype = draw(dtypes)
    d, h, k, n = (draw(st.integers(1, m)) for m in (6, 5, 5, 6))
    k = max(k, 2)
    activation = draw(st.sampled_from(["sigmoid", "relu"]))
    net = TwoLayerNet(d, h, k, activation=activation, dtype=dtype)
    el = st.floats(-weight, weight, width=32)
    for key, shape in (("W1", (d, h)), ("b1", (h,)), ("W2", (h, k)), ("b2", (k,))):
        net.params[key][...] = draw(arrays(np.float64, shape, elements=el))
    x = layout(draw(arrays(dtype, (n, d), elements=st.floats(-2, 2, width=32))), draw(LAYOUTS))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    t = labels if draw(st.booleans()) else np.eye(k, dtype=dtype)[labels]
    return net, x, t


def delta_backprop(params, x, t, activation):
    """The exact gradient of the loss as evaluated, −Σ t·log(y + δ)/n (δ = 1e-7).

    With w = t·y/(y + δ), ∂loss/∂z = (y·Σw − w)/n; δ = 0 gives the book's (y − t)/n.
    """
    a1 = x @ params["W1"] + params["b1"]
    z1 = ref.sigmoid(a1) if activation == "sigmoid" else ref.relu(a1)
    y = ref.softmax(z1 @ params["W2"] + params["b2"])
    t = np.eye(y.shape[1])[t] if t.ndim == 1 else t
    w = t * y / (y + ref.DELTA)
    dz = (y * w.sum(axis=1, keepdims=True) - w) / x.shape[0]
    da1 = (dz @ params["W2"].T) * (ref.sigmoid_grad(a1) if activation == "sigmoid" else a1 > 0)
    return {"W1": x.T @ da1, "b1": da1.sum(axis=0), "W2": z1.T @ dz, "b2": dz.sum(axis=0)}


def kink_free(net, x) -> bool:
    """No ReLU pre-activation within 1e-3 of 0, where backprop and differences may part."""
    a1 = np.asarray(x, np.float64) @ net.params["W1"].astype(np.float64) + net.params["b1"]
    return net.activation == "sigmoid" or bool((np.abs(a1) > 1e-3).all())


@given(tiny_net())
def test_two_layer_loss_and_gradient_match_the_book(case):
    net, x, t = case
    dtype = net.dtype.type
    p64 = {k: v.astype(np.float64) for k, v in net.params.items()}
    x64 = np.asarray(x, np.float64)
    t64 = t if t.dtype.kind == "i" else t.astype(np.float64)
    want = ref.two_layer_loss(p64, x64, t64, net.activation)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert net.loss(x, t) == pytest.approx(want, rel=rtol, abs=rtol)
    g = net.gradient(x, t)
    g_layers = net.gradient_layers(x, t)
    want_g = ref.two_layer_backprop(p64, x64, t64, net.activation)
    for key in KEYS:
        assert g[key].dtype == dtype and g[key].shape == net.params[key].shape
        np.testing.assert_allclose(g[key], want_g[key], rtol=0, atol=rtol, err_msg=key)
        np.testing.assert_allclose(g_layers[key], want_g[key], rtol=0, atol=rtol, err_msg=key)


@given(tiny_net(dtypes=st.just(np.float64)))
def test_fast_numerical_gradient_equals_bruteforce_and_backprop(case):
    net, x, t = case
    p = [net.params[k] for k in KEYS]
    x64 = np.ascontiguousarray(x)
    t_ = t if t.dtype.kind == "i" else np.ascontiguousarray(t)
    fast = _core.numerical_gradient(*p, x64, t_, activation=net.activation)
    brute = _core.numerical_gradient(*p, x64, t_, activation=net.activation, method="bruteforce")
    public = net.numerical_gradient(x, t)
    for key, f, b in zip(KEYS, fast, brute, strict=True):
        np.testing.assert_allclose(f, b, rtol=0, atol=1e-9, err_msg=key)
        # the public method passes x in its own layout: summation order may differ, and
        # a difference of two losses over 2h carries their rounding (~eps·|f|/h)
        np.testing.assert_allclose(public[key], f, rtol=0, atol=1e-9, err_msg=key)
    if kink_free(net, x):
        exact = delta_backprop(net.params, x64, t, net.activation)
        for key, f in zip(KEYS, fast, strict=True):
            # central differences are O(h²) from the derivative of the loss they difference
            np.testing.assert_allclose(f, exact[key], rtol=0, atol=1e-5, err_msg=key)


OPTIMIZERS = {
    "SGD": lambda: SGD(lr=0.1),
    "Momentum": lambda: Momentum(lr=0.05),
    "Nesterov": lambda: Nesterov(lr=0.05),
    "AdaGrad": lambda: AdaGrad(lr=0.05),
    "RMSprop": lambda: RMSprop(lr=0.01),
    "Adam": lambda: Adam(lr=0.01),
}


@given(tiny_net(weight=1.0), st.sampled_from(sorted(OPTIMIZERS)), st.integers(1, 3), st.data())
def test_fused_steps_equal_gradient_then_update(case, name, steps, data):
    net, x, t = case
    n = x.shape[0]
    batches = np.array(
        data.draw(
            st.lists(
                st.lists(st.integers(0, n - 1), min_size=2, max_size=2),
                min_size=steps,
                max_size=steps,
            )
        )
    )
    twin = TwoLayerNet(*net.params["W1"].shape, net.output_size, activation=net.activation,
                       dtype=net.dtype)  # fmt: skip
    for key in KEYS:
        twin.params[key][...] = net.params[key]
    fused_opt, opt = OPTIMIZERS[name](), OPTIMIZERS[name]()
    arrays_before = {k: v for k, v in net.params.items()}
    losses = FusedTrainer(net, fused_opt).run_epoch(x, t, batches)
    want_losses = []
    for rows in batches:
        want_losses.append(twin.loss(x[rows], t[rows]))
        opt.update(twin.params, twin.gradient(x[rows], t[rows]))
    eps = np.finfo(net.dtype).eps
    # Before any update both paths compute the same loss.
    np.testing.assert_allclose(losses[0], want_losses[0], rtol=1e4 * eps, atol=1e4 * eps)
    if name in ("SGD", "Momentum", "Nesterov"):
        atol = 1e5 * eps
        loss_atol: float | None = 1e4 * eps
    elif net.dtype == np.float64:
        # AdaGrad/RMSprop/Adam scale each step by 1/(√h + 1e-7): a gradient entry that is
        # rounding noise (~1e-15) moves by lr·noise/1e-7, differently in each path
        atol = 1e-8 * steps
        loss_atol = 100 * atol  # the loss moves by at most ~Σ|∂L/∂θ| times that
    else:  # in float32 that noise (~1e-7) makes such a step anything up to lr
        atol = 1.01 * fused_opt.lr * steps
        loss_atol = None  # so the later losses may differ by as much as a step moves them
    if loss_atol is not None:
        np.testing.assert_allclose(losses, want_losses, rtol=1e4 * eps, atol=loss_atol)
    for key in KEYS:
        assert net.params[key] is arrays_before[key]  # updated in place
        np.testing.assert_allclose(
            net.params[key], twin.params[key], rtol=0, atol=atol, err_msg=key
        )
    assert getattr(fused_opt, "iter", steps) == getattr(opt, "iter", steps)


@given(st.sampled_from(sorted(OPTIMIZERS)), DTYPES, LAYOUTS, st.data())
def test_optimizers_update_in_place_in_any_layout(name, dtype, kind, data):
    shape = data.draw(array_shapes(min_dims=1, max_dims=2, max_side=6))
    values = data.draw(arrays(dtype, shape, elements=floats(dtype, 1e3)))
    grad = data.draw(arrays(dtype, shape, elements=floats(dtype, 1e3)))
    assume(np.abs(grad).max() > 1e-3)
    p = layout(values, kind)
    base = p.base
    params = {"W": p}
    opt = OPTIMIZERS[name]()
    opt.update(params, {"W": layout(grad, data.draw(LAYOUTS))})
    assert params["W"] is p and p.base is base and p.dtype == dtype
    moved = p != values
    assert moved[np.abs(grad) > 1e-3].all() or dtype == np.float32
    assert np.isfinite(p).all()
    if name == "SGD":
        # lr·g and the difference each round once in dtype (lr itself too): the error
        # is relative to the operands, which may be far larger than the result.
        v64, g64 = values.astype(np.float64), grad.astype(np.float64)
        bound = 2 * np.finfo(dtype).eps * (np.abs(v64) + np.abs(0.1 * g64)) + 1e-30
        assert (np.abs(p.astype(np.float64) - (v64 - 0.1 * g64)) <= bound).all()
    else:  # first steps of the others move against the gradient's sign
        step = p.astype(np.float64) - values
        assert (np.sign(step)[step != 0] == -np.sign(grad)[step != 0]).all()


@pytest.mark.parametrize("kind", ["strided", "reversed"])
def test_strided_1d_input(kind):
    x = layout(np.array([0.0, 1.0, 2.0]), kind)
    np.testing.assert_allclose(softmax(x), ref.softmax(np.array([0.0, 1.0, 2.0])), rtol=1e-15)
    t = layout(np.array([0.0, 0.0, 1.0]), kind)
    y = ref.softmax(np.array([0.0, 1.0, 2.0]))
    assert cross_entropy_error(y, t) == pytest.approx(-np.log(y[2] + 1e-7), rel=1e-15)
