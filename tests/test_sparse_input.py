"""Products that skip an input batch's exact zeros (MNIST-like rows) equal NumPy's.

``matmul``, ``affine``, ``Affine.forward/backward`` and ``TwoLayerNet`` read only the
non-zero inputs when most are zero; the results must be NumPy's dense products within
the matmul tolerances, and NaN/inf must propagate as IEEE arithmetic does in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import python_output, tol
from ferrograd import TwoLayerNet, _core
from ferrograd.layers import Affine
from ferrograd.nets.multi_layer_net import MultiLayerNet
from reference import two_layer_backprop, two_layer_loss

DTYPES = [np.float64, np.float32]


def sparse_rows(rng: np.random.Generator, n: int, d: int, density: float, dtype) -> np.ndarray:
    """(n, d) in [0, 1] with about ``density`` non-zero; row 0 all zeros, row 1 all non-zero."""
    x = rng.random((n, d)) * (rng.random((n, d)) < density)
    x[0] = 0.0
    if n > 1:
        x[1] = rng.random(d) + 0.5
    return x.astype(dtype)


def assert_product_close(got, a, b, dtype, bias=0.0):
    """got == a @ b (+ bias) within the matmul rtol of the sum of |terms| per element: a
    different order of the additions moves a sum with cancellation by that much."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = a64 @ b64 + bias
    bound = tol("matmul", dtype)["rtol"] * (np.abs(a64) @ np.abs(b64) + np.abs(bias))
    err = np.abs(got.astype(np.float64) - want)
    assert got.dtype == dtype and got.shape == want.shape
    assert (err <= bound + tol("matmul", dtype)["atol"]).all(), float((err - bound).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", [1, 7, 50, 53, 104, 121])
@pytest.mark.parametrize("density", [0.05, 0.19, 0.45])
def test_products_equal_numpy(rng, dtype, h, density):
    x = sparse_rows(rng, 100, 784, density, dtype)
    w = rng.standard_normal((784, h)).astype(dtype)
    b = rng.standard_normal(h).astype(dtype)
    d = rng.standard_normal((100, h)).astype(dtype)
    assert_product_close(_core.matmul(x, w), x, w, dtype)
    assert_product_close(_core.affine(x, w, b), x, w, dtype, bias=b.astype(np.float64))
    assert_product_close(_core.matmul(x, d, trans_a=True), x.T, d, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_and_strided_inputs_equal_numpy(rng, dtype):
    """Dense rows (no zeros) and rows that are not contiguous take the GEMM unchanged."""
    x = rng.random((100, 784)).astype(dtype) + 0.1
    w = rng.standard_normal((784, 50)).astype(dtype)
    assert_product_close(_core.matmul(x, w), x, w, dtype)
    xs = sparse_rows(rng, 100, 1568, 0.19, dtype)[:, ::2]
    assert_product_close(_core.matmul(xs, w), xs, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate_as_in_numpy(rng, dtype):
    x = sparse_rows(rng, 100, 784, 0.19, dtype)
    w = (0.1 * rng.standard_normal((784, 50))).astype(dtype)
    x[5, 300] = np.nan
    x[6, 301] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        want = x @ w
    got = _core.matmul(x, w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    # Non-finite weights: 0·inf = NaN in every row whose input there is zero.
    x = sparse_rows(rng, 100, 784, 0.19, dtype)
    w[10, 3] = np.inf
    w[20, 4] = np.nan
    with np.errstate(invalid="ignore"):
        want = x @ w
    got = _core.matmul(x, w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:, 4]).all() and np.isnan(got[0, 3])
    finite = np.isfinite(want)
    scale = np.abs(x.astype(np.float64)) @ np.abs(np.nan_to_num(w.astype(np.float64), posinf=0))
    assert (np.abs(got[finite] - want[finite]) <= 1e-5 * scale[finite] + 1e-6).all()
    # A NaN in D reaches every column of xᵀ·D through the all-zero row 0.
    d = rng.standard_normal((100, 50)).astype(dtype)
    d[0, 2] = np.nan
    got = _core.matmul(x, d, trans_a=True)
    assert np.isnan(got[:, 2]).all() and np.isfinite(np.delete(got, 2, axis=1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_two_layer_net_on_sparse_input_equals_the_book(rng, dtype, activation):
    net = TwoLayerNet(784, 50, 10, weight_init_std=0.1, activation=activation, seed=3, dtype=dtype)
    x = sparse_rows(rng, 100, 784, 0.19, dtype)
    t = rng.integers(0, 10, 100)
    p64 = {k: v.astype(np.float64) for k, v in net.params.items()}
    x64 = x.astype(np.float64)
    want = two_layer_backprop(p64, x64, t, activation)
    got = net.gradient(x, t)
    for key in ("W1", "b1", "W2", "b2"):
        assert got[key].dtype == dtype
        np.testing.assert_allclose(got[key], want[key], **tol("matmul", dtype))
    loss = two_layer_loss(p64, x64, t, activation)
    assert net.loss(x, t) == pytest.approx(loss, rel=tol("matmul", dtype)["rtol"] * 10)
    act = (lambda a: 1 / (1 + np.exp(-a))) if activation == "sigmoid" else (lambda a: a * (a > 0))
    scores = act(x64 @ p64["W1"] + p64["b1"]) @ p64["W2"] + p64["b2"]
    y = np.exp(scores - scores.max(axis=1, keepdims=True))
    y /= y.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.predict(x), y, **tol("matmul", dtype))
    assert net.accuracy(x, t) == pytest.approx(np.mean(scores.argmax(axis=1) == t))


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_of_many_rows_equals_numpy(rng, dtype):
    """10,000 rows: blocks of rows in parallel, each compressed on its own."""
    net = TwoLayerNet(784, 50, 10, weight_init_std=0.1, seed=1, dtype=dtype)
    x = sparse_rows(rng, 10_000, 784, 0.19, dtype)
    x[5000:5100] = rng.random((100, 784)) + 0.1  # one dense block among sparse ones
    p = {k: v.astype(np.float64) for k, v in net.params.items()}
    scores = 1 / (1 + np.exp(-(x.astype(np.float64) @ p["W1"] + p["b1"]))) @ p["W2"] + p["b2"]
    y = np.exp(scores - scores.max(axis=1, keepdims=True))
    y /= y.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.predict(x), y, **tol("matmul", dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_layer_and_multi_layer_net_on_sparse_input(rng, dtype):
    x = sparse_rows(rng, 100, 784, 0.19, dtype)
    w = (0.1 * rng.standard_normal((784, 50))).astype(dtype)
    b = rng.standard_normal(50).astype(dtype)
    layer = Affine(w, b)
    assert_product_close(layer.forward(x), x, w, dtype, bias=b.astype(np.float64))
    dout = rng.standard_normal((100, 50)).astype(dtype)
    dx = layer.backward(dout)
    assert_product_close(layer.dW, x.T, dout, dtype)
    assert_product_close(dx, dout, w.T, dtype)
    net = MultiLayerNet(784, [100, 100], 10, seed=2, dtype=dtype)
    t = rng.integers(0, 10, 100)
    grads = net.gradient(x, t)
    dense = MultiLayerNet(784, [100, 100], 10, seed=2, dtype=np.float64)
    want = dense.gradient(x.astype(np.float64), t)
    for key in grads:
        scale = np.abs(want[key]).max()
        atol = scale * (1e-4 if dtype == np.float32 else 1e-10)
        np.testing.assert_allclose(grads[key], want[key], rtol=0, atol=atol)


THREADS_SCRIPT = """
import hashlib, numpy as np
from ferrograd import TwoLayerNet, _core
rng = np.random.default_rng(3)
out = []
for dtype in (np.float32, np.float64):
    dense = rng.standard_normal((100, 784)).astype(dtype)
    sparse = (rng.random((100, 784)) * (rng.random((100, 784)) < 0.2)).astype(dtype)
    big = (rng.random((1500, 784)) * (rng.random((1500, 784)) < 0.2)).astype(dtype)
    w = rng.standard_normal((784, 50)).astype(dtype)
    d = rng.standard_normal((100, 50)).astype(dtype)
    arrays = []
    for x in (dense, sparse):
        arrays += [_core.matmul(x, w), _core.matmul(x, d, trans_a=True), _core.matmul(d, w.T)]
    net = TwoLayerNet(784, 50, 10, dtype=dtype, seed=1)
    t = rng.integers(0, 10, 100)
    arrays += [*net.gradient(sparse, t).values(), *net.gradient(dense, t).values()]
    arrays += [net.predict(big), _core.matmul(big, w)]
    out.append([hashlib.sha256(a.tobytes()).hexdigest()[:16] for a in arrays])
print(out)
"""


def test_per_call_results_do_not_depend_on_the_number_of_threads():
    """Network-sized products (dense and zero-skipping) are cut by size, not by the
    number of threads, and each output element sums its terms in one order."""
    outs = [python_output(THREADS_SCRIPT, FERROGRAD_NUM_THREADS=t) for t in ("1", "2", "3")]
    assert outs[0].count("'") > 40
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize("net_dtype", DTYPES)
@pytest.mark.parametrize("density", [0.2, 1.0])
def test_a_batch_of_the_other_float_type_equals_converting_it_first(rng, net_dtype, density):
    """A float32 MNIST batch for a float64 net (the book's case) is converted value by
    value inside the kernels: bit for bit what ``x.astype(net dtype)`` gives."""
    other = np.float32 if net_dtype == np.float64 else np.float64
    net = TwoLayerNet(784, 50, 10, dtype=net_dtype, seed=4)
    for n in (1, 100, 1200):
        x = sparse_rows(rng, n, 784, density, np.float64)
        x[min(2, n - 1), 5] = 1 / 3  # rounds when cast to float32
        x = x.astype(other)
        same = x.astype(net_dtype)
        t = rng.integers(0, 10, n)
        np.testing.assert_array_equal(net.predict(x), net.predict(same))
        assert net.predict(x).dtype == net_dtype
        assert net.loss(x, t) == net.loss(same, t)
        assert net.accuracy(x, t) == net.accuracy(same, t)
        if n <= 100:
            got, want = net.gradient(x, t), net.gradient(same, t)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
                assert got[key].dtype == net_dtype
    with pytest.raises(TypeError, match="x has dtype float16; expected float32 or float64"):
        _core.two_layer_predict(*net._params(), x.astype(np.float16))


@pytest.mark.parametrize("density", [0.2, 1.0])
def test_affine_layer_takes_a_float32_batch_as_converting_it_first(rng, density):
    """Affine.forward of a float32 batch in a float64 layer: the same bits as the
    converted batch, forward and backward, and the output in the layer's dtype."""
    w, b = rng.standard_normal((784, 30)), rng.standard_normal(30)
    x = sparse_rows(rng, 64, 784, density, np.float32)
    a, c = Affine(w, b), Affine(w.copy(), b.copy())
    y, want = a.forward(x), c.forward(x.astype(np.float64))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, want)
    dout = rng.standard_normal((64, 30))
    np.testing.assert_array_equal(a.backward(dout), c.backward(dout))
    np.testing.assert_array_equal(a.dW, c.dW)
    np.testing.assert_array_equal(_core.affine(x, w, b), want)


@pytest.mark.parametrize("density", [0.2, 1.0])
def test_matmul_of_a_float32_batch_and_float64_arrays_equals_converting_it_first(rng, density):
    """matmul(x, D, trans_a=True) and matmul(x, W) with a float32 x and float64 W, D:
    the float64 product, the same bits as converting x first (NumPy's promotion)."""
    x = sparse_rows(rng, 100, 784, density, np.float32)
    x64 = x.astype(np.float64)
    w, d = rng.standard_normal((784, 50)), rng.standard_normal((100, 50))
    for got, want in (
        (_core.matmul(x, d, trans_a=True), _core.matmul(x64, d, trans_a=True)),
        (_core.matmul(x, w), _core.matmul(x64, w)),
    ):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="b has dtype float32 but the other arguments are float64"):
        _core.matmul(x64, w.astype(np.float32))


@pytest.mark.parametrize("density", [0.2, 1.0])
def test_affine_with_a_strided_bias_adds_the_bias(rng, density):
    """A bias that is a view with a stride (b[::2]) starts every row as a contiguous
    one does, on the zero-skipping path and the GEMM's."""
    x = sparse_rows(rng, 100, 784, density, np.float64)
    w, spaced = rng.standard_normal((784, 50)), rng.standard_normal(100)
    b = spaced[::2]
    np.testing.assert_allclose(_core.affine(x, w, b), x @ w + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(_core.affine(x, w, b), _core.affine(x, w, b.copy()))
