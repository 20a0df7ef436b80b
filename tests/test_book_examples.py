"""The book's worked examples (chapters 2-6), each against the numbers the book prints."""

from __future__ import annotations

import numpy as np
import pytest
from ferrograd.functions import cross_entropy_error, identity_function, sigmoid, sum_squares_error
from ferrograd.gradient import gradient_descent, numerical_diff, numerical_gradient
from ferrograd.layers import AddLayer, MulLayer
from ferrograd.nets import SimpleNet
from ferrograd.perceptron import AND, NAND, OR, XOR

# --- chapter 2: perceptron gates ---------------------------------------------------

INPUTS = [(0, 0), (1, 0), (0, 1), (1, 1)]


@pytest.mark.parametrize(
    ("gate", "expected"),
    [(AND, [0, 0, 0, 1]), (NAND, [1, 1, 1, 0]), (OR, [0, 1, 1, 1]), (XOR, [0, 1, 1, 0])],
    ids=["AND", "NAND", "OR", "XOR"],
)
def test_gate_truth_tables(gate, expected):
    out = [gate(x1, x2) for x1, x2 in INPUTS]
    assert out == expected
    assert all(type(y) is int for y in out)


# --- chapter 3: the three-layer forward pass (init_network / forward) -------------


def test_three_layer_forward():
    network = {
        "W1": np.array([[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]]),
        "b1": np.array([0.1, 0.2, 0.3]),
        "W2": np.array([[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]]),
        "b2": np.array([0.1, 0.2]),
        "W3": np.array([[0.1, 0.3], [0.2, 0.4]]),
        "b3": np.array([0.1, 0.2]),
    }
    x = np.array([1.0, 0.5])
    z1 = sigmoid(x @ network["W1"] + network["b1"])
    z2 = sigmoid(z1 @ network["W2"] + network["b2"])
    y = identity_function(z2 @ network["W3"] + network["b3"])
    np.testing.assert_allclose(y, [0.31682708, 0.69627909], atol=5e-9)


# --- chapter 4: loss functions ------------------------------------------------------

Y_BOOK = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
Y_WRONG = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])
T_BOOK = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64)


def test_sum_squares_error_book_values():
    assert sum_squares_error(Y_BOOK, T_BOOK) == pytest.approx(0.0975, abs=1e-15)
    assert sum_squares_error(Y_WRONG, T_BOOK) == pytest.approx(0.5975, abs=1e-15)


def test_cross_entropy_error_book_values():
    assert cross_entropy_error(Y_BOOK, T_BOOK) == pytest.approx(0.510825457099338, abs=1e-14)
    assert cross_entropy_error(Y_WRONG, T_BOOK) == pytest.approx(2.302584092994546, abs=1e-14)
    # the same numbers from the label instead of the one-hot row
    assert cross_entropy_error(Y_BOOK, 2) == pytest.approx(0.510825457099338, abs=1e-14)
    assert cross_entropy_error(Y_BOOK, 7) == pytest.approx(2.302584092994546, abs=1e-14)


# --- chapter 4: numerical differentiation and gradient descent ---------------------


def function_1(x):
    return 0.01 * x**2 + 0.1 * x


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


def test_numerical_diff_book_values():
    assert numerical_diff(function_1, 5) == pytest.approx(0.2, abs=1e-9)
    assert numerical_diff(function_1, 10) == pytest.approx(0.3, abs=1e-9)
    # The book prints these two with their rounding error (h = 1e-4 in float64).
    assert numerical_diff(function_1, 5) == pytest.approx(0.1999999999990898, abs=1e-15)
    assert numerical_diff(function_1, 10) == pytest.approx(0.2999999999986347, abs=1e-15)


@pytest.mark.parametrize(
    ("point", "expected"),
    [((3.0, 4.0), (6.0, 8.0)), ((0.0, 2.0), (0.0, 4.0)), ((3.0, 0.0), (6.0, 0.0))],
)
def test_numerical_gradient_book_values(point, expected):
    np.testing.assert_allclose(numerical_gradient(function_2, np.array(point)), expected, atol=1e-7)


def test_gradient_descent_book_values():
    x = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=0.1, step_num=100)
    assert np.max(np.abs(x)) < 1e-8
    np.testing.assert_allclose(x, [-6.11110793e-10, 8.14814391e-10], rtol=1e-6)


def test_gradient_descent_learning_rate_too_large_diverges():
    x = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=10.0, step_num=100)
    assert np.all(np.abs(x) > 1e11)
    # The book's printout: x stops growing once x + h rounds to x (the gradient becomes 0).
    np.testing.assert_allclose(x, [-2.58983747e13, -1.29524862e12], rtol=1e-8)


def test_gradient_descent_learning_rate_too_small_barely_moves():
    x = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=1e-10, step_num=100)
    np.testing.assert_allclose(x, [-2.99999994, 3.99999992], rtol=1e-8)
    assert np.all(x != [-3.0, 4.0])


# --- chapter 4: simpleNet --------------------------------------------------------------

W_BOOK = [[0.47355232, 0.9967396, 0.84668094], [0.85557411, 0.03563661, 0.69422093]]
# The book's printed W[1][1] (0.03563661) does not reproduce its own printed prediction:
# 0.6·0.9967396 + 0.9·0.03563661 = 0.63011671, not 0.63071653. The value consistent with the
# printed prediction, loss and gradient is (0.63071653 − 0.6·0.9967396) / 0.9.
W_CONSISTENT = [
    [0.47355232, 0.9967396, 0.84668094],
    [0.85557411, (0.63071653 - 0.6 * 0.9967396) / 0.9, 0.69422093],
]
X_SIMPLE = np.array([0.6, 0.9])
T_SIMPLE = np.array([0, 0, 1])


def test_simple_net_printed_weights_predict():
    net = SimpleNet(W=W_BOOK)
    np.testing.assert_allclose(
        net.predict(X_SIMPLE), [1.05414809, 0.63011671, 1.1328074], atol=1e-8
    )
    assert np.argmax(net.predict(X_SIMPLE)) == 2


def test_simple_net_book_values():
    net = SimpleNet(W=W_CONSISTENT)
    np.testing.assert_allclose(
        net.predict(X_SIMPLE), [1.05414809, 0.63071653, 1.1328074], atol=1e-8
    )
    assert net.loss(X_SIMPLE, T_SIMPLE) == pytest.approx(0.92806853663411326, abs=1e-6)
    dW = numerical_gradient(lambda _w: net.loss(X_SIMPLE, T_SIMPLE), net.W)
    book_dW = [[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]]
    np.testing.assert_allclose(dW, book_dW, atol=1e-6)
    np.testing.assert_allclose(net.numerical_gradient(X_SIMPLE, T_SIMPLE), book_dW, atol=1e-6)
    np.testing.assert_allclose(net.gradient(X_SIMPLE, T_SIMPLE), book_dW, atol=1e-6)


# --- chapter 5: the shopping graphs ---------------------------------------------------


def test_buy_apple_graph():
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple, mul_tax = MulLayer(), MulLayer()
    apple_price = mul_apple.forward(apple, apple_num)
    price = mul_tax.forward(apple_price, tax)
    assert price == pytest.approx(220.0, abs=1e-12)
    dapple_price, dtax = mul_tax.backward(1)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert (dapple, dapple_num, dtax) == pytest.approx((2.2, 110.0, 200.0), abs=1e-12)


def test_buy_apple_orange_graph():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add_apple_orange, mul_tax = (
        MulLayer(),
        MulLayer(),
        AddLayer(),
        MulLayer(),
    )
    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    all_price = add_apple_orange.forward(apple_price, orange_price)
    price = mul_tax.forward(all_price, tax)
    assert price == pytest.approx(715.0, abs=1e-12)
    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add_apple_orange.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert (dapple_num, dapple, dorange, dorange_num, dtax) == pytest.approx(
        (110.0, 2.2, 3.3, 165.0, 650.0), abs=1e-12
    )
