"""Every native kernel against the NumPy oracle, in both dtypes, shapes and layouts."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from conftest import tol
from ferrograd import _core
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

DTYPES = [np.float64, np.float32]
SHAPES_2D = [(1, 1), (1, 10), (7, 3), (100, 50), (257, 131), (3000, 10)]


def layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """The same values as C-order, Fortran-order, a strided slice and a transposed view."""
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
    big[::2, 1::3] = a
    return {
        "c": np.ascontiguousarray(a),
        "f": np.asfortranarray(a),
        "strided": big[::2, 1::3],
        "transposed": np.ascontiguousarray(a.T).T,
        "reversed": a[::-1, ::-1].copy()[::-1, ::-1],
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("name", ["sigmoid", "sigmoid_grad", "relu", "relu_grad", "softmax"])
def test_unary_kernels_match_numpy(name, shape, dtype, rng):
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    want = getattr(ref, name)(x.astype(np.float64))
    for layout, xl in layouts(x).items():
        got = getattr(_core, name)(xl)
        assert got.dtype == dtype, layout
        assert got.shape == shape, layout
        np.testing.assert_allclose(got, want, **tol("elementwise", dtype), err_msg=layout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_kernels_take_any_ndim(dtype, rng):
    for shape in [(), (5,), (2, 3, 4), (2, 1, 3, 2)]:
        x = rng.standard_normal(shape).astype(dtype)
        np.testing.assert_allclose(_core.sigmoid(x), ref.sigmoid(x), **tol("elementwise", dtype))
        np.testing.assert_allclose(_core.relu(x), ref.relu(x), **tol("elementwise", dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_backward_kernels(dtype, rng):
    x = rng.standard_normal((64, 33)).astype(dtype)
    dout = rng.standard_normal((64, 33)).astype(dtype)
    y = ref.sigmoid(x)
    np.testing.assert_allclose(
        _core.sigmoid_backward(y, dout), dout * (1.0 - y) * y, **tol("elementwise", dtype)
    )
    want = np.where(x <= 0, 0, dout)
    np.testing.assert_array_equal(_core.relu_backward(x, dout), want)
    with pytest.raises(ValueError, match=r"relu_backward: x has shape \(64, 33\) but dout"):
        _core.relu_backward(x, dout[:, :-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [0.0, 0.1, 1e-3])
def test_add_scaled_is_numpys_weight_decay_bit_for_bit(dtype, lam, rng):
    """dW + λ·W as the book's NumPy rounds it: the product, then the sum (no FMA), λ
    rounded to the dtype; NaN where W is not finite at λ = 0, −0 + 0·W as NumPy; small,
    strided and large (threaded) arrays."""
    for shape in [(7, 3), (784, 100), (2000, 1000)]:
        dw = rng.standard_normal(shape).astype(dtype)
        w = (rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 8, shape)).astype(dtype)
        dw[0, :2] = -0.0
        w[0, 0], w[0, 1], w[1, 0], w[1, 1] = 2.0, -2.0, np.inf, np.nan
        with np.errstate(invalid="ignore"):  # 0·inf
            want, want_t = dw + lam * w, dw.T + lam * w.T
        got = _core.add_scaled(dw, w, lam)
        assert got.dtype == dtype and got.shape == shape
        for a, b in ((got, want), (_core.add_scaled(dw.T, w.T, lam), want_t)):
            bits = [np.ascontiguousarray(v).view(np.uint8) for v in (a, b)]
            np.testing.assert_array_equal(*bits)
    with pytest.raises(ValueError, match=r"add_scaled: a has shape \(7, 3\) but b has shape"):
        _core.add_scaled(np.zeros((7, 3), dtype), np.zeros((3, 7), dtype), 0.1)
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(TypeError, match="add_scaled"):
        _core.add_scaled(np.zeros(3, dtype), np.zeros(3, other), 0.1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_abs_is_the_largest_magnitude_or_inf(dtype, rng):
    for shape in [(0,), (5,), (784, 100), (33, 17)]:
        w = rng.standard_normal(shape).astype(dtype)
        want = float(np.abs(w).max()) if w.size else 0.0
        assert _core.max_abs(w) == want
        assert _core.max_abs(w.T) == want  # strided (for 2-D: not C order)
    w = rng.standard_normal((40, 30)).astype(dtype)
    w[7, 3] = -1e30
    assert _core.max_abs(w) == float(np.abs(w).max())
    for bad in (np.inf, -np.inf, np.nan):
        w[39, 29] = bad  # in the tail after the 16-wide lanes
        assert _core.max_abs(w) == np.inf
        w[39, 29] = 0.0
        w[1, 1] = bad  # in the lanes
        assert _core.max_abs(w) == np.inf and _core.max_abs(w[:, 1::2]) == np.inf
        w[1, 1] = 0.0


def test_batch_norm_kernels_refuse_mismatched_arrays():
    x, g = np.ones((4, 3)), np.ones(3)
    with pytest.raises(ValueError, match=r"batch_norm_forward: gamma has 2 entries but the rows"):
        _core.batch_norm_forward(x, np.ones(2), g, 1e-6)
    with pytest.raises(TypeError, match="batch_norm_forward"):
        _core.batch_norm_forward(x.astype(np.float32), g, g, 1e-6)
    with pytest.raises(ValueError, match=r"batch_norm_forward: x has shape \(0, 3\)"):
        _core.batch_norm_forward(np.ones((0, 3)), g, g, 1e-6)
    _, xc, xn, std, _, _ = _core.batch_norm_forward(x, g, g, 1e-6)
    with pytest.raises(ValueError, match=r"batch_norm_backward: dout has shape \(4, 2\)"):
        _core.batch_norm_backward(np.ones((4, 2)), xc, xn, std, g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_1d_and_extreme_logits(dtype):
    y = _core.softmax(np.array([0.3, 2.9, 4.0], dtype=dtype))
    assert y.shape == (3,)
    np.testing.assert_allclose(y, [0.01821127, 0.24519181, 0.73659691], rtol=1e-6)
    x = np.array([[1000.0, -1000.0, 999.0], [-1000.0, -1000.0, -1000.0]], dtype=dtype)
    y = _core.softmax(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, **tol("reduction", dtype))
    np.testing.assert_allclose(y, ref.softmax(x.astype(np.float64)), **tol("elementwise", dtype))


def test_softmax_undefined_rows_are_nan():
    x = np.array([[-np.inf, -np.inf], [np.nan, 1.0], [1e308, -1e308], [np.inf, 0.0]])
    y = _core.softmax(x)
    assert np.isnan(y[0]).all() and np.isnan(y[1]).all() and np.isnan(y[3]).all()
    np.testing.assert_array_equal(y[2], [1.0, 0.0])


# (m, k, n) for a @ b, including the network's shapes.
MATMUL_SHAPES = [(1, 1, 1), (1, 7, 1), (3, 5, 2), (100, 784, 50), (100, 50, 10), (17, 300, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkn", MATMUL_SHAPES)
def test_matmul_matches_numpy_in_every_layout(mkn, dtype, rng):
    m, k, n = mkn
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    want = a.astype(np.float64) @ b.astype(np.float64)
    # f32 products of k terms: scale the tolerance by the size of the sum, not the result.
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    for la, al in layouts(a).items():
        for lb, bl in layouts(b).items():
            got = _core.matmul(al, bl)
            assert got.dtype == dtype
            err = np.abs(got - want) / np.maximum(scale, 1e-300)
            assert err.max() <= tol("matmul", dtype)["rtol"] * 10, (la, lb, err.max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_transposed_forms(dtype, rng):
    x = rng.standard_normal((100, 784)).astype(dtype)
    dy = rng.standard_normal((100, 50)).astype(dtype)
    w = rng.standard_normal((10, 50)).astype(dtype)
    t = tol("matmul", dtype)
    t["atol"] = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(_core.matmul(x, dy, trans_a=True), x.T @ dy, **t)
    np.testing.assert_allclose(_core.matmul(dy, w, trans_b=True), dy @ w.T, **t)
    dy_t = np.ascontiguousarray(dy.T)
    np.testing.assert_allclose(_core.matmul(x, dy_t, trans_a=True, trans_b=True), x.T @ dy, **t)


def test_matmul_1024_cube_f64(rng):
    a = rng.standard_normal((1024, 1024))
    b = rng.standard_normal((1024, 1024))
    np.testing.assert_allclose(_core.matmul(a, b), a @ b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine(dtype, rng):
    x = rng.standard_normal((100, 784)).astype(dtype)
    w = rng.standard_normal((784, 50)).astype(dtype)
    b = rng.standard_normal(50).astype(dtype)
    t = tol("matmul", dtype)
    t["atol"] = 1e-3 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(_core.affine(x, w, b), x @ w + b, **t)
    with pytest.raises(
        ValueError, match=r"affine: b has shape \(49,\) but W has shape \(784, 50\)"
    ):
        _core.affine(x, w, b[:49])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 100, 1000])
def test_cross_entropy_one_hot_and_labels(n, dtype, rng):
    y = ref.softmax(rng.standard_normal((n, 10))).astype(dtype)
    labels = rng.integers(0, 10, n)
    one_hot = np.eye(10, dtype=dtype)[labels]
    want = ref.cross_entropy_error(y.astype(np.float64), labels)
    got_labels = _core.cross_entropy_error(y, labels)
    got_one_hot = _core.cross_entropy_error(y, one_hot)
    np.testing.assert_allclose(got_labels, want, **tol("reduction", dtype))
    np.testing.assert_allclose(got_one_hot, want, **tol("reduction", dtype))


def test_cross_entropy_book_examples_and_batch_of_one():
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert _core.cross_entropy_error(y, np.array(2)) == pytest.approx(0.510825457099338, abs=1e-15)
    assert _core.cross_entropy_error(y, np.array([7])) == pytest.approx(
        2.302584092994546, abs=1e-15
    )
    t = np.zeros(10)
    t[2] = 1
    assert _core.cross_entropy_error(y, t) == pytest.approx(0.510825457099338, abs=1e-15)
    assert _core.sum_squares_error(y, t) == pytest.approx(0.0975, abs=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_squares_error(dtype, rng):
    y = rng.random((50, 10)).astype(dtype)
    t = rng.random((50, 10)).astype(dtype)
    np.testing.assert_allclose(
        _core.sum_squares_error(y, t),
        ref.sum_squares_error(y.astype(float), t),
        **tol("reduction", dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_backward(dtype, rng):
    y = ref.softmax(rng.standard_normal((9, 4))).astype(dtype)
    labels = rng.integers(0, 4, 9)
    want = (y - np.eye(4, dtype=dtype)[labels]) / 9
    np.testing.assert_allclose(
        _core.softmax_cross_entropy_backward(y, labels), want, **tol("elementwise", dtype)
    )
    np.testing.assert_allclose(
        _core.softmax_cross_entropy_backward(y, np.eye(4, dtype=dtype)[labels]),
        want,
        **tol("elementwise", dtype),
    )


def test_errors_name_function_argument_and_shapes():
    a = np.zeros((100, 783))
    w = np.zeros((784, 50))
    with pytest.raises(
        ValueError, match=r"matmul: a has shape \(100, 783\) but b has shape \(784, 50\)"
    ):
        _core.matmul(a, w)
    with pytest.raises(
        TypeError, match="matmul: b has dtype float32 but the other arguments are float64"
    ):
        _core.matmul(a, w.astype(np.float32))
    with pytest.raises(TypeError, match="sigmoid: x has dtype int64; expected float32 or float64"):
        _core.sigmoid(np.arange(3))
    with pytest.raises(TypeError, match=r"sigmoid: x must be a numpy\.ndarray, got list"):
        _core.sigmoid([1.0, 2.0])
    with pytest.raises(ValueError, match=r"matmul: a must be 2-D, got shape \(3,\)"):
        _core.matmul(np.zeros(3), np.zeros((3, 3)))
    y = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="label 3 at index 1 is out of range for 3 classes"):
        _core.cross_entropy_error(y, np.array([0, 3]))
    with pytest.raises(ValueError, match="label -1 at index 0 is out of range"):
        _core.cross_entropy_error(y, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"t has shape \(3,\) but y has shape \(2, 3\)"):
        _core.cross_entropy_error(y, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="t has dtype complex128"):
        _core.cross_entropy_error(y, np.zeros((2, 3), complex))


finite = st.floats(-50, 50, allow_nan=False, width=32)


@given(
    arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=finite),
)
def test_hypothesis_softmax_rows_are_distributions(x):
    y = _core.softmax(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(y, ref.softmax(x), rtol=1e-12, atol=1e-300)


@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.integers(1, 30),
    st.sampled_from(DTYPES),
    st.booleans(),
    st.booleans(),
)
def test_hypothesis_matmul_shapes(m, k, n, dtype, trans_a, trans_b):
    rng = np.random.default_rng(m * 10007 + k * 101 + n)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    got = _core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
