"""Layers: forward against the NumPy oracle, backward against numerical gradients."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import tol
from ferrograd.gradient import numerical_gradient
from ferrograd.layers import (
    Affine,
    BatchNormalization,
    Dropout,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)

DTYPES = [np.float64, np.float32]


def frozen(a):
    """A copy of ``a`` to compare against later (dout must come back unchanged)."""
    return np.array(a, copy=True)


def check_backward(layer_forward, layer_backward, x, rng, atol=1e-7):
    """backward(R) equals the numerical gradient of Σ R·forward(x) w.r.t. x."""
    out = layer_forward(x)
    R = rng.standard_normal(np.shape(out))
    R_before = frozen(R)
    dx = layer_backward(R)
    np.testing.assert_array_equal(R, R_before)  # dout untouched
    num = numerical_gradient(lambda _x: float(np.sum(R * layer_forward(x))), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=atol)
    return dx


def test_mul_layer_arrays():
    layer = MulLayer()
    x, y = np.array([1.0, 2.0]), np.array([3.0, -4.0])
    np.testing.assert_array_equal(layer.forward(x, y), [3.0, -8.0])
    dx, dy = layer.backward(np.array([2.0, 0.5]))
    np.testing.assert_array_equal(dx, [6.0, -2.0])
    np.testing.assert_array_equal(dy, [2.0, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(dtype, rng):
    x = rng.standard_normal((4, 5)).astype(dtype)
    x[0, 0] = 0.0
    layer = Relu()
    np.testing.assert_allclose(layer.forward(x), ref.relu(x), **tol("elementwise", dtype))
    np.testing.assert_array_equal(layer.mask, x <= 0)
    dout = rng.standard_normal((4, 5)).astype(dtype)
    dout_before = frozen(dout)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)  # the book's Relu writes into dout
    np.testing.assert_array_equal(dx, np.where(x > 0, dout, 0))
    assert dx[0, 0] == 0.0 and dx.dtype == dtype


def test_relu_backward_numerical(rng):
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-2] = 0.5  # stay away from the kink
    layer = Relu()
    check_backward(layer.forward, layer.backward, x, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid(dtype, rng):
    x = rng.standard_normal((6, 3)).astype(dtype)
    layer = Sigmoid()
    np.testing.assert_allclose(layer.forward(x), ref.sigmoid(x), **tol("elementwise", dtype))
    dout = rng.standard_normal((6, 3)).astype(dtype)
    dout_before = frozen(dout)
    np.testing.assert_allclose(
        layer.backward(dout),
        dout * ref.sigmoid_grad(x),
        rtol=1e-5 if dtype == np.float32 else 1e-12,
    )
    np.testing.assert_array_equal(dout, dout_before)


def test_sigmoid_backward_numerical(rng):
    layer = Sigmoid()
    check_backward(layer.forward, layer.backward, rng.standard_normal((2, 5)), rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_matches_numpy(dtype, rng):
    W = rng.standard_normal((5, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    x = rng.standard_normal((4, 5)).astype(dtype)
    layer = Affine(W, b)
    np.testing.assert_allclose(layer.forward(x), x @ W + b, **tol("matmul", dtype))
    dout = rng.standard_normal((4, 3)).astype(dtype)
    dout_before = frozen(dout)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)
    np.testing.assert_allclose(dx, dout @ W.T, **tol("matmul", dtype))
    np.testing.assert_allclose(layer.dW, x.T @ dout, **tol("matmul", dtype))
    np.testing.assert_allclose(layer.db, dout.sum(axis=0), **tol("reduction", dtype))
    assert layer.W is W and layer.b is b  # shared, not copied


def test_affine_backward_numerical(rng):
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    x = rng.standard_normal((5, 4))
    layer = Affine(W, b)
    check_backward(layer.forward, layer.backward, x, rng)
    R = rng.standard_normal((5, 3))
    layer.forward(x)
    layer.backward(R)
    np.testing.assert_allclose(
        layer.dW, numerical_gradient(lambda _w: float(np.sum(R * layer.forward(x))), W), atol=1e-7
    )
    np.testing.assert_allclose(
        layer.db, numerical_gradient(lambda _b: float(np.sum(R * layer.forward(x))), b), atol=1e-7
    )


def test_affine_reshapes_nd_input_like_the_book(rng):
    W, b = rng.standard_normal((12, 2)), rng.standard_normal(2)
    x = rng.standard_normal((3, 1, 3, 4))
    layer = Affine(W, b)
    out = layer.forward(x)
    np.testing.assert_allclose(out, x.reshape(3, 12) @ W + b, rtol=1e-12)
    dx = layer.backward(np.ones((3, 2)))
    assert dx.shape == (3, 1, 3, 4)
    np.testing.assert_allclose(dx.reshape(3, 12), np.ones((3, 2)) @ W.T, rtol=1e-12)


def test_affine_one_sample_and_strided_input(rng):
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(2)
    layer = Affine(W, b)
    x = rng.standard_normal(3)
    out = layer.forward(x)
    assert out.shape == (2,)
    np.testing.assert_allclose(out, x @ W + b, rtol=1e-12)
    assert layer.backward(np.ones(2)).shape == (3,)
    xs = rng.standard_normal((8, 6))[::2, ::2]
    np.testing.assert_allclose(layer.forward(xs), xs @ W + b, rtol=1e-12)


def test_affine_sees_in_place_parameter_updates(rng):
    W, b = rng.standard_normal((3, 2)), np.zeros(2)
    layer = Affine(W, b)
    x = rng.standard_normal((2, 3))
    W -= 0.5  # what an optimizer does
    np.testing.assert_allclose(layer.forward(x), x @ W, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_loss_labels_and_one_hot_agree(dtype, rng):
    x = rng.standard_normal((5, 4)).astype(dtype)
    labels = np.array([0, 3, 1, 1, 2])
    one_hot = np.eye(4, dtype=dtype)[labels]
    a, c = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss_a, loss_c = a.forward(x, labels), c.forward(x, one_hot)
    expected = ref.cross_entropy_error(ref.softmax(x.astype(np.float64)), labels)
    assert loss_a == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert loss_a == pytest.approx(loss_c, rel=1e-6 if dtype == np.float32 else 1e-14)
    da, dc = a.backward(), c.backward()
    np.testing.assert_allclose(da, dc, **tol("elementwise", dtype))
    np.testing.assert_allclose(
        da, (ref.softmax(x) - one_hot) / 5, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7
    )
    np.testing.assert_allclose(c.backward(2.0), 2 * dc, rtol=1e-6)


def test_softmax_with_loss_backward_numerical(rng):
    x = rng.standard_normal((3, 4))
    t = np.array([2, 0, 3])
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    dx = layer.backward()
    num = numerical_gradient(lambda _x: SoftmaxWithLoss().forward(x, t), x)
    # backprop ignores the 1e-7 inside log(y + 1e-7): relative error about 1e-7 / y_t
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-8)


def test_softmax_with_loss_one_sample():
    layer = SoftmaxWithLoss()
    x = np.array([0.3, 2.9, 4.0])
    loss = layer.forward(x, np.array([0, 0, 1]))
    y = ref.softmax(x)
    assert loss == pytest.approx(-np.log(y[2] + 1e-7), rel=1e-12)
    assert layer.forward(x, 2) == pytest.approx(loss, rel=1e-15)
    np.testing.assert_allclose(layer.backward(), [y - [0, 0, 1]], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_forward_train_and_test(dtype, rng):
    x = (3.0 + 2.0 * rng.standard_normal((50, 4))).astype(dtype)
    gamma, beta = np.array([1.0, 2.0, 0.5, 1.0], dtype), np.array([0.0, 1.0, -1.0, 0.0], dtype)
    bn = BatchNormalization(gamma, beta, momentum=0.9)
    out = bn.forward(x, train_flg=True)
    xn = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-6)
    np.testing.assert_allclose(out, gamma * xn + beta, rtol=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.1 * x.var(axis=0), rtol=1e-5)
    test_out = bn.forward(x, train_flg=False)
    expected = gamma * (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-6) + beta
    np.testing.assert_allclose(test_out, expected, rtol=1e-5)
    assert out.dtype == dtype and test_out.dtype == dtype


def book_batch_norm(x, gamma, beta, dout, eps=10e-7):
    """The book's BatchNormalization lines (DLFS common/layers.py), training forward and
    backward: (out, xc, xn, std, dx, dgamma, dbeta)."""
    mu = x.mean(axis=0)
    xc = x - mu
    var = np.mean(xc**2, axis=0)
    std = np.sqrt(var + eps)
    xn = xc / std
    out = gamma * xn + beta
    n = x.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / n) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    dx = dxc - dmu / n
    return out, xc, xn, std, dx, dgamma, dbeta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(100, 100), (7, 3), (1, 4), (256, 1000), (5, 1), (8, 2, 3, 3)])
def test_batchnorm_is_the_books_lines_bit_for_bit(dtype, shape, rng):
    """The training forward and the backward give the book's NumPy results to the bit (a
    single column, summed pairwise by NumPy, keeps the NumPy lines), and the running
    statistics move as the book's."""
    x = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3], shape)).astype(dtype)
    d = int(np.prod(shape[1:]))
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    bn = BatchNormalization(gamma.copy(), beta.copy(), momentum=0.9)
    out, dx = bn.forward(x, train_flg=True), bn.backward(dout)
    x2, d2 = x.reshape(shape[0], d), dout.reshape(shape[0], d)
    want = book_batch_norm(x2, gamma, beta, d2)
    got = (out.reshape(x2.shape), bn.xc, bn.xn, bn.std, dx.reshape(x2.shape), bn.dgamma, bn.dbeta)
    for name, g, w in zip(
        ("out", "xc", "xn", "std", "dx", "dgamma", "dbeta"), got, want, strict=True
    ):
        assert g.dtype == dtype and g.shape == w.shape, name
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8), err_msg=name)
    mu, var = x2.mean(axis=0), np.mean((x2 - x2.mean(axis=0)) ** 2, axis=0)
    np.testing.assert_array_equal(bn.running_mean, (1 - 0.9) * mu)
    np.testing.assert_array_equal(bn.running_var, (1 - 0.9) * var)
    # A scalar dout broadcasts as in the book's layer.
    np.testing.assert_array_equal(
        bn.backward(1.0).reshape(x2.shape), book_batch_norm(x2, gamma, beta, np.ones_like(x2))[4]
    )


def test_batchnorm_backward_numerical(rng):
    x = rng.standard_normal((6, 3))
    gamma, beta = rng.random(3) + 0.5, rng.standard_normal(3)
    bn = BatchNormalization(gamma, beta)
    R = rng.standard_normal((6, 3))
    check_backward(lambda v: bn.forward(v, train_flg=True), bn.backward, x, rng, atol=1e-7)
    bn.forward(x, train_flg=True)
    bn.backward(R)

    def f(_):
        return float(np.sum(R * bn.forward(x, train_flg=True)))

    np.testing.assert_allclose(bn.dgamma, numerical_gradient(f, gamma), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(bn.dbeta, numerical_gradient(f, beta), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(bn.dbeta, R.sum(axis=0), rtol=1e-12)


def test_dropout_is_seeded_and_follows_the_book(rng):
    x = np.ones((200, 50))
    a, b = Dropout(0.3, seed=7), Dropout(0.3, rng=np.random.default_rng(7))
    out_a, out_b = a.forward(x), b.forward(x)
    np.testing.assert_array_equal(out_a, out_b)
    kept = out_a.mean()
    assert 0.68 < kept < 0.72  # about 1 − ratio of the units survive
    np.testing.assert_array_equal(out_a, a.mask.astype(np.float64))
    np.testing.assert_allclose(a.forward(x, train_flg=False), 0.7 * x, rtol=1e-15)
    a.forward(x)
    dout = rng.standard_normal(x.shape)
    dout_before = frozen(dout)
    np.testing.assert_array_equal(a.backward(dout), dout * a.mask)
    np.testing.assert_array_equal(dout, dout_before)
    assert not np.array_equal(Dropout(0.3, seed=8).forward(x), out_a)
    # the default dout = 1 gives the mask in the input's float dtype, not int64
    for dtype in (np.float32, np.float64):
        layer = Dropout(0.3, seed=1)
        layer.forward(x.astype(dtype))
        dx = layer.backward()
        assert dx.dtype == dtype
        np.testing.assert_array_equal(dx, layer.mask.astype(dtype))


def test_errors_are_clear(rng):
    with pytest.raises(TypeError, match="Affine: W must be a float32 or float64"):
        Affine(np.ones((2, 2), dtype=np.int64), np.ones(2))
    with pytest.raises(TypeError, match=r"Affine: b must be a numpy\.ndarray of W's dtype float64"):
        Affine(np.ones((2, 2)), np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match=r"W has shape \(2, 3\) and b has shape \(2,\)"):
        Affine(np.ones((2, 3)), np.ones(2))
    layer = Affine(np.ones((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\) \(5 features per sample\)"):
        layer.forward(np.ones((4, 5)))
    with pytest.raises(RuntimeError, match=r"Affine\.backward called before forward"):
        layer.backward(np.ones((4, 2)))
    layer.forward(np.ones((4, 3)))
    with pytest.raises(
        ValueError, match=r"dout has shape \(4, 3\) but the forward output has shape \(4, 2\)"
    ):
        layer.backward(np.ones((4, 3)))
    with pytest.raises(TypeError, match="dout has dtype"):
        layer.backward(np.array([["a", "b"]] * 4))
    relu = Relu()
    relu.forward(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Relu.backward: dout has shape \(3,\)"):
        relu.backward(np.ones(3))
    loss = SoftmaxWithLoss()
    with pytest.raises(ValueError, match="label 4 is out of range for 4 classes"):
        loss.forward(np.ones((2, 4)), np.array([0, 4]))
    with pytest.raises(ValueError, match="label -1 is out of range"):
        loss.forward(np.ones((2, 4)), np.array([0, -1]))
    with pytest.raises(ValueError, match=r"t has shape \(3,\); expected 2 integer labels"):
        loss.forward(np.ones((2, 4)), np.array([0, 1, 2]))
    with pytest.raises(
        ValueError, match=r"t has shape \(2, 3\); expected one-hot rows of shape \(2, 4\)"
    ):
        loss.forward(np.ones((2, 4)), np.ones((2, 3)))
    with pytest.raises(TypeError, match="t has dtype <U1"):
        loss.forward(np.ones((2, 4)), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="Dropout: dropout_ratio must be in"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"BatchNormalization.forward: x has shape \(4, 2\)"):
        BatchNormalization(np.ones(3), np.zeros(3)).forward(np.ones((4, 2)))
