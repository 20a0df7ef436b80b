"""Bad and unusual input to the kernels: clear exceptions or correct results, never a crash."""

from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np
import pytest
import reference as ref
from ferrograd import _core, functions

UNARY = ["sigmoid", "sigmoid_grad", "relu", "relu_grad", "softmax"]


def misaligned(values: np.ndarray) -> np.ndarray:
    """A float array whose buffer starts one byte past an aligned address."""
    buf = bytearray(values.nbytes + 1)
    out = np.frombuffer(buf, dtype=values.dtype, offset=1, count=values.size).reshape(values.shape)
    out[...] = values
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unusual_memory_gives_correct_results(name, dtype, tmp_path, rng):
    x = rng.standard_normal((37, 11)).astype(dtype)
    want = getattr(_core, name)(x)
    readonly = x.copy()
    readonly.flags.writeable = False
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    for label, arr in {
        "read-only": readonly,
        "memory-mapped": mapped,
        "misaligned": misaligned(x),
        "negative strides": x[::-1, ::-1].copy()[::-1, ::-1],
    }.items():
        np.testing.assert_array_equal(getattr(_core, name)(arr), want, err_msg=label)


def test_misaligned_and_readonly_operands_of_products(rng):
    a = rng.standard_normal((20, 30))
    b = rng.standard_normal((30, 7))
    b_ro = b.copy()
    b_ro.flags.writeable = False
    np.testing.assert_allclose(_core.matmul(misaligned(a), b_ro), a @ b, rtol=1e-12)
    labels = misaligned(np.arange(20, dtype=np.int64) % 7)
    y = ref.softmax(a @ b)
    assert _core.cross_entropy_error(y, labels) == pytest.approx(
        ref.cross_entropy_error(y, np.arange(20) % 7), rel=1e-12
    )


def test_empty_arrays():
    assert _core.sigmoid(np.zeros((0, 5))).shape == (0, 5)
    assert _core.softmax(np.zeros((0, 10))).shape == (0, 10)
    assert _core.matmul(np.zeros((0, 3)), np.zeros((3, 4))).shape == (0, 4)
    np.testing.assert_array_equal(
        _core.matmul(np.zeros((2, 0)), np.zeros((0, 4))), np.zeros((2, 4))
    )
    with pytest.raises(ValueError, match="cross_entropy_error: y has no rows"):
        _core.cross_entropy_error(np.zeros((0, 10)), np.zeros(0, dtype=np.int64))


def test_nan_and_inf_propagate_like_numpy():
    x = np.array([[np.nan, np.inf, -np.inf, 0.0]])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(_core.sigmoid(x), ref.sigmoid(x))
        np.testing.assert_array_equal(_core.relu(x), np.maximum(0, x))
    assert np.isnan(_core.softmax(x)).all()  # a NaN row has no softmax
    y = np.array([[0.0, 1.0]])
    # log(0 + 1e-7) is finite: a confident wrong answer costs 16.1, never inf.
    assert _core.cross_entropy_error(y, np.array([0])) == pytest.approx(-np.log(1e-7))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([1 + 2j]), "complex128"),
        (np.array(["a"]), "<U1"),
        (np.array([object()]), "object"),
    ],
)
def test_unconvertible_dtypes_raise_type_error(x, message):
    with pytest.raises(TypeError, match=message):
        functions.sigmoid(x)


@pytest.mark.parametrize(
    "x", [np.array([0, 1, 2]), np.array([True, False]), np.array([0.5], dtype=np.float16)]
)
def test_convertible_dtypes_follow_numpy(x):
    np.testing.assert_allclose(functions.sigmoid(x), ref.sigmoid(x.astype(np.float64)), rtol=1e-12)
    assert _core.sigmoid(x.astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match="sigmoid: x has dtype"):
        _core.sigmoid(x)  # the native layer never guesses


def test_eight_threads_agree_with_serial_calls(rng):
    a = rng.standard_normal((300, 784))
    b = rng.standard_normal((784, 50))
    serial = [_core.matmul(a, b), _core.sigmoid(a), _core.softmax(a)]
    results: list[list[np.ndarray]] = []
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(5):
                results.append([_core.matmul(a, b), _core.sigmoid(a), _core.softmax(a)])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 40
    for got in results:
        for g, s in zip(got, serial, strict=True):
            np.testing.assert_array_equal(g, s)


def _child_matmul(queue) -> None:
    a = np.arange(600.0 * 784).reshape(600, 784) / 1e5
    queue.put(float(_core.matmul(a, a.T.copy()).sum()))


def test_kernels_work_in_a_forked_child():
    # Use the thread pool in this process first, so the child inherits a pool whose
    # threads do not exist there.
    a = np.arange(600.0 * 784).reshape(600, 784) / 1e5
    want = float(_core.matmul(a, a.T.copy()).sum())
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_matmul, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the forked child hung or crashed"
    assert queue.get(timeout=5) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: _core.sigmoid(np.broadcast_to(np.ones(1), (1 << 40,))),
            "sigmoid: cannot allocate",
        ),
        (
            lambda: _core.matmul(
                np.broadcast_to(np.ones((1, 1)), (1 << 40, 1)),
                np.broadcast_to(np.ones((1, 1)), (1, 1 << 40)),
            ),
            r"matmul: cannot allocate a \(1099511627776, 1099511627776\) result",
        ),
        (
            lambda: _core.softmax(np.broadcast_to(np.ones((1, 1)), (1 << 30, 1 << 20))),
            "softmax: cannot allocate",
        ),
    ],
)
def test_results_too_large_for_memory_raise_memory_error(call, message):
    # Zero-stride views cost nothing; their results would need terabytes.
    with pytest.raises(MemoryError, match=message):
        call()
