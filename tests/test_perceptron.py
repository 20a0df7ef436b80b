"""Perceptron gates: weights, truth tables on scalars and arrays, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ferrograd.perceptron import AND, NAND, OR, XOR, Perceptron


def test_book_weights_and_biases():
    assert (AND.w, AND.b) == ((0.5, 0.5), -0.7)
    assert (NAND.w, NAND.b) == ((-0.5, -0.5), 0.7)
    assert (OR.w, OR.b) == ((0.5, 0.5), -0.2)


def test_gates_on_arrays_match_scalars():
    x1 = np.array([0, 1, 0, 1])
    x2 = np.array([0, 0, 1, 1])
    for gate in (AND, NAND, OR, XOR):
        out = gate(x1, x2)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(
            out, [gate(int(a), int(b)) for a, b in zip(x1, x2, strict=True)]
        )


def test_xor_is_not_a_single_perceptron():
    # No linear gate from the three book ones reproduces XOR; the two-layer one does.
    table = [(0, 0), (1, 0), (0, 1), (1, 1)]
    xor = [XOR(a, b) for a, b in table]
    assert xor == [0, 1, 1, 0]
    for gate in (AND, NAND, OR):
        assert [gate(a, b) for a, b in table] != xor


def test_boundary_is_strict():
    # w·x + b == 0 gives 0 (the book's `if tmp <= 0: return 0`).
    gate = Perceptron(w=(1.0, 1.0), b=-1.0)
    assert gate(1, 0) == 0
    assert gate(1, 0.5) == 1


def test_real_inputs():
    assert AND(0.9, 0.9) == 1
    assert AND(0.9, 0.4) == 0


def test_bad_input_raises():
    with pytest.raises(TypeError, match="AND: x1 has dtype"):
        AND("1", 1)
    with pytest.raises(TypeError, match="OR: x2 has dtype"):
        OR(1, None)
