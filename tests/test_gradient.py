"""Numerical differentiation: accuracy, restoring x, shapes, dtypes, gradient descent."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
from ferrograd.gradient import H, gradient_descent, numerical_diff, numerical_gradient
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def test_h_is_the_books():
    assert H == 1e-4


def test_numerical_diff_of_cubic_has_h_squared_error():
    # d/dx x³ at 2 is 12; the central difference is exactly 12 + h² for a cubic.
    assert numerical_diff(lambda x: x**3, 2.0) == pytest.approx(12.0 + 1e-8, abs=1e-9)


@given(arrays(np.float64, st.integers(1, 6), elements=st.floats(-10, 10, allow_subnormal=False)))
def test_gradient_of_quadratic_1d(x):
    before = x.copy()
    grad = numerical_gradient(lambda v: np.sum(v**2), x)
    np.testing.assert_allclose(grad, 2 * before, atol=1e-6)
    np.testing.assert_array_equal(x, before)  # restored after every probe


@pytest.mark.parametrize("shape", [(), (3, 4), (2, 3, 2)])
def test_gradient_n_dimensional_matches_reference(shape, rng):
    a = rng.standard_normal(shape)
    x = rng.standard_normal(shape)
    before = x.copy()

    def f(v):
        return float(np.sum(a * np.sin(v)))

    grad = numerical_gradient(f, x)
    assert grad.shape == x.shape
    np.testing.assert_allclose(grad, a * np.cos(before), atol=1e-8)
    np.testing.assert_allclose(grad, ref.numerical_gradient(f, before.copy()), rtol=0, atol=0)
    np.testing.assert_array_equal(x, before)


def test_gradient_of_strided_view_probes_the_parent(rng):
    parent = rng.standard_normal((4, 6))
    view = parent[:, ::2]
    seen = []

    def f(v):
        seen.append(np.shares_memory(v, parent))
        return float(np.sum(v**2))

    grad = numerical_gradient(f, view)
    np.testing.assert_allclose(grad, 2 * parent[:, ::2], atol=1e-7)
    assert all(seen)


def test_gradient_probes_in_place_so_f_may_ignore_its_argument():
    w = np.array([1.0, -2.0, 0.5])

    def loss(_):
        return float(np.sum(w**2))  # reads w through the closure, as the book's nets do

    np.testing.assert_allclose(numerical_gradient(loss, w), 2 * w, atol=1e-7)


def test_x_restored_when_f_raises():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    calls = []

    def f(v):
        calls.append(v.copy())
        if len(calls) == 3:
            raise RuntimeError("boom")
        return float(v.sum())

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [[1.0, 2.0], [3.0, 4.0]])
    x1 = np.array([1.0, 2.0])
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x1)
    np.testing.assert_array_equal(x1, [1.0, 2.0])


def test_integer_input_becomes_float64_copy():
    x = np.array([3, 4])
    grad = numerical_gradient(lambda v: np.sum(v**2), x)
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, [6.0, 8.0], atol=1e-7)
    np.testing.assert_array_equal(x, [3, 4])


def test_float32_input_keeps_dtype():
    x = np.array([3.0, 4.0], dtype=np.float32)
    grad = numerical_gradient(lambda v: float(np.sum(v.astype(np.float64) ** 2)), x)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, [6.0, 8.0], rtol=1e-2)


def test_bad_input_raises():
    with pytest.raises(TypeError, match="numerical_gradient: x has dtype"):
        numerical_gradient(lambda v: 0.0, np.array(["a", "b"]))
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        numerical_gradient(lambda v: 0.0, ro)
    with pytest.raises(ValueError, match="step_num"):
        gradient_descent(lambda v: 0.0, [1.0], step_num=-1)


def test_gradient_descent_does_not_mutate_init_and_returns_history():
    init = np.array([-3.0, 4.0])
    x, history = gradient_descent(
        lambda v: v[0] ** 2 + v[1] ** 2, init, lr=0.1, step_num=20, return_history=True
    )
    np.testing.assert_array_equal(init, [-3.0, 4.0])
    assert history.shape == (20, 2)
    np.testing.assert_array_equal(history[0], [-3.0, 4.0])
    # x_{k+1} = (1 − 2·lr)·x_k for this quadratic: a geometric sequence with ratio 0.8
    np.testing.assert_allclose(history[1:] / history[:-1], 0.8, rtol=1e-8)
    np.testing.assert_allclose(x, 0.8**20 * init, rtol=1e-7)


def test_gradient_descent_integer_start_and_zero_steps():
    x = gradient_descent(lambda v: np.sum(v**2), [1, 2], lr=0.25, step_num=1)
    np.testing.assert_allclose(x, [0.5, 1.0], atol=1e-9)
    x0, hist = gradient_descent(lambda v: 0.0, [1.0, 2.0], step_num=0, return_history=True)
    np.testing.assert_array_equal(x0, [1.0, 2.0])
    assert hist.shape == (0, 2)
