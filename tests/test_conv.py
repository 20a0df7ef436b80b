"""Chapter 7: im2col/col2im, Convolution and Pooling against the NumPy oracle
(tests/reference.py), and SimpleConvNet's gradient against its numerical gradient."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import reference as ref
from conftest import RTOL, python_output
from ferrograd import _core, util
from ferrograd.layers import Convolution, Pooling
from ferrograd.nets.simple_convnet import SimpleConvNet

DTYPES = [np.float64, np.float32]

# (N, C, H, W, FN, FH, FW, stride, pad): odd sizes, non-square filters, strides, padding.
CASES = [
    (2, 3, 7, 6, 4, 3, 2, 1, 0),
    (3, 2, 9, 8, 5, 3, 3, 2, 1),
    (1, 1, 5, 5, 2, 5, 5, 1, 2),
    (2, 1, 28, 28, 6, 5, 5, 1, 0),
    (4, 3, 11, 13, 3, 4, 3, 3, 2),
    (1, 2, 3, 3, 1, 1, 1, 1, 0),
]


def close(actual, expected, dtype, kind="matmul"):
    """Products and sums: relative tolerance of conftest's kind, absolute one relative to
    the largest entry (entries near 0 are differences of larger products)."""
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape
    rtol = RTOL[kind][np.dtype(dtype).type]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def case_arrays(case, dtype, seed=0):
    n, c, h, w, fn, fh, fw, _, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((fn, c, fh, fw)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_im2col_col2im_equal_reference(case, dtype):
    x, _, _ = case_arrays(case, dtype)
    *_, fh, fw, s, p = case
    col = util.im2col(x, fh, fw, s, p)
    np.testing.assert_array_equal(col, ref.im2col(x, fh, fw, s, p))  # copies: exact
    assert col.dtype == np.dtype(dtype)
    c = np.random.default_rng(1).standard_normal(col.shape).astype(dtype)
    close(util.col2im(c, x.shape, fh, fw, s, p), ref.col2im(c, x.shape, fh, fw, s, p), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_convolution_forward_backward_equal_reference(case, dtype):
    x, W, b = case_arrays(case, dtype)
    *_, s, p = case
    layer = Convolution(W, b, stride=s, pad=p)
    out = layer.forward(x)
    close(out, ref.conv_forward(x, W, b, s, p), dtype)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    keep = dout.copy()
    dx = layer.backward(dout)
    rdx, rdW, rdb = ref.conv_backward(x, W, dout, s, p)
    close(dx, rdx, dtype)
    close(layer.dW, rdW, dtype)
    close(layer.db, rdb, dtype, "reduction")
    np.testing.assert_array_equal(dout, keep)  # backward leaves dout alone
    # The book's attributes: col = im2col(x), col_W = W as (C·FH·FW, FN).
    np.testing.assert_array_equal(layer.col, ref.im2col(x, *W.shape[2:], s, p))
    np.testing.assert_array_equal(layer.col_W, W.reshape(W.shape[0], -1).T)
    assert layer.x is x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_pooling_forward_backward_equal_reference(case, dtype):
    x, _, _ = case_arrays(case, dtype)
    *_, ph, pw, s, p = case
    layer = Pooling(ph, pw, stride=s, pad=p)
    out = layer.forward(x)
    rout, rarg = ref.pool_forward(x, ph, pw, s, p)
    np.testing.assert_array_equal(out, rout)  # a maximum is exact
    # The book's arg_max: argmax of each im2col row cut into windows, (n, i, j, c) order.
    book_arg = ref.im2col(x, ph, pw, s, p).reshape(-1, ph * pw).argmax(axis=1)
    np.testing.assert_array_equal(layer.arg_max, book_arg)
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    close(layer.backward(dout), ref.pool_backward(dout, rarg, x.shape, ph, pw, s, p), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "pad"), [((3, 4, 24, 24), 0), ((2, 3, 9, 7), 0), ((2, 2, 5, 6), 1)]
)
def test_pooling_2x2_stride_2_equals_reference(shape, pad, dtype):
    # The book's pooling (its own code path): ReLU'd small integers make many ties and
    # zeros, where the first maximum must win as in np.argmax; odd sizes drop a last row.
    rng = np.random.default_rng(11)
    x = np.maximum(rng.integers(-3, 4, shape), 0).astype(dtype)
    x[0, 0, 0, :4] = [-0.0, 0.0, 0.0, -0.0]
    layer = Pooling(2, 2, stride=2, pad=pad)
    out = layer.forward(x)
    rout, rarg = ref.pool_forward(x, 2, 2, 2, pad)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(layer._arg, rarg)
    book_arg = ref.im2col(x, 2, 2, 2, pad).reshape(-1, 4).argmax(axis=1)
    np.testing.assert_array_equal(layer.arg_max, book_arg)
    dout = rng.standard_normal(out.shape).astype(dtype)
    close(layer.backward(dout), ref.pool_backward(dout, rarg, x.shape, 2, 2, 2, pad), dtype)


def test_pooling_ties_and_padding_follow_numpy():
    # Ties: the first maximum (np.argmax); padding is a 0 entry that can win.
    x = np.full((1, 1, 4, 4), -1.0)
    x[0, 0, 1, 1] = 2.0
    layer = Pooling(2, 2, stride=2, pad=1)
    out = layer.forward(x)
    rout, rarg = ref.pool_forward(x, 2, 2, 2, 1)
    np.testing.assert_array_equal(out, rout)
    assert out[0, 0].tolist() == [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(layer._arg, rarg)
    dx = layer.backward(np.ones_like(out))
    assert dx.sum() == 1.0 and dx[0, 0, 1, 1] == 1.0  # gradients at padding are dropped


def test_pooling_nan_follows_numpy():
    # np.max gives NaN and np.argmax the first NaN of a window holding one.
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 6))
    x[0, 1, 2, 3] = np.nan
    x[1, 2, 0, 0] = x[1, 2, 0, 1] = np.nan
    out, arg = _core.pool_forward(x, 2, 2, 2, 0)
    rout, rarg = ref.pool_forward(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(arg, rarg)
    assert np.isnan(out[0, 1, 1, 1]) and arg[1, 2, 0, 0] == 0


@pytest.mark.parametrize("layout", ["fortran", "sliced", "transposed"])
def test_layouts_give_the_same_result(layout):
    x, W, b = case_arrays((3, 2, 9, 8, 5, 3, 3, 2, 1), np.float64)
    if layout == "fortran":
        xs, Ws = np.asfortranarray(x), np.asfortranarray(W)
    elif layout == "sliced":
        big = np.zeros((6, 2, 18, 8))
        big[::2, :, ::2] = x
        xs, Ws = big[::2, :, ::2], W
    else:
        xs, Ws = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), W
    assert not xs.flags.c_contiguous
    close(_core.conv_forward(xs, Ws, b, 2, 1), ref.conv_forward(x, W, b, 2, 1), np.float64)
    out, _ = _core.pool_forward(xs, 3, 3, 2, 1)
    np.testing.assert_array_equal(out, ref.pool_forward(x, 3, 3, 2, 1)[0])
    np.testing.assert_array_equal(_core.im2col(xs, 3, 3, 2, 1), ref.im2col(x, 3, 3, 2, 1))
    dout = np.random.default_rng(0).standard_normal((3, 5, 5, 4))
    g = _core.conv_backward(xs, Ws, np.asfortranarray(dout), 2, 1)
    for got, want in zip(g, ref.conv_backward(x, W, dout, 2, 1), strict=True):
        close(got, want, np.float64)


def test_large_batch_runs_in_parallel_and_matches():
    # 64 images × 16 filters × 28² positions: above the threshold for a second thread.
    x, W, b = case_arrays((64, 3, 28, 28, 16, 5, 5, 1, 2), np.float32)
    close(_core.conv_forward(x, W, b, 1, 2), ref.conv_forward(x, W, b, 1, 2), np.float32)
    dout = np.random.default_rng(5).standard_normal((64, 16, 28, 28)).astype(np.float32)
    for got, want in zip(
        _core.conv_backward(x, W, dout, 1, 2), ref.conv_backward(x, W, dout, 1, 2), strict=True
    ):
        close(got, want, np.float32)


THREADS_SCRIPT = """
import hashlib, numpy as np
from ferrograd import _core
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    x = rng.random((100, 3, 28, 28)).astype(dtype)
    W = rng.standard_normal((30, 3, 5, 5)).astype(dtype)
    dout = rng.standard_normal((100, 30, 24, 24)).astype(dtype)
    out = _core.conv_forward(x, W, np.zeros(30, dtype))
    arrays = [out, *_core.conv_backward(x, W, dout), *_core.pool_forward(out, 2, 2, 2)]
    print([hashlib.sha256(a.tobytes()).hexdigest() for a in arrays])
"""


def test_results_do_not_depend_on_the_number_of_threads():
    """dW and db are sums over the batch: each group of images' part is added in image
    order, whichever thread computed it (a batch above the threshold for two threads)."""
    outs = [python_output(THREADS_SCRIPT, FERROGRAD_NUM_THREADS=t) for t in ("1", "2")]
    assert len(outs[0].splitlines()) == 2
    assert outs[0] == outs[1]


def test_errors_are_python_exceptions():
    x, W, b = case_arrays((2, 3, 7, 6, 4, 3, 2, 1, 0), np.float64)
    with pytest.raises(ValueError, match=r"x's channels .* must equal W's"):
        _core.conv_forward(x[:, :2], W, b)
    with pytest.raises(ValueError, match="one bias per filter"):
        _core.conv_forward(x, W, b[:3])
    with pytest.raises(ValueError, match="does not fit"):
        _core.conv_forward(x, np.zeros((4, 3, 9, 9)), b)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        _core.conv_forward(x, W, b, 0)
    with pytest.raises(TypeError, match="W has dtype float32"):
        _core.conv_forward(x, W.astype(np.float32), b)
    with pytest.raises(ValueError, match="must be 4-D"):
        _core.conv_forward(x[0], W, b)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4, 5, 4\) but the forward output"):
        _core.conv_backward(x, W, np.zeros((2, 4, 5, 4)))
    with pytest.raises(OverflowError):
        _core.conv_forward(x, W, b, -1)
    out, arg = _core.pool_forward(x, 2, 2, 2, 0)
    with pytest.raises(ValueError, match=r"arg_max holds 4, outside \[0, 4\)"):
        _core.pool_backward(out, np.full_like(arg, 4), x.shape, 2, 2, 2, 0)
    with pytest.raises(TypeError, match="arg_max must be an int64"):
        _core.pool_backward(out, arg.astype(np.int32), x.shape, 2, 2, 2, 0)
    with pytest.raises(ValueError, match="arg_max has shape"):
        _core.pool_backward(out, arg[:1], x.shape, 2, 2, 2, 0)
    with pytest.raises(ValueError, match=r"col has shape \(3, 4\)"):
        _core.col2im(np.ones((3, 4)), (1, 1, 3, 3), 2, 2)
    # The layers check before the kernels.
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        Convolution(W, b, stride=0)
    with pytest.raises(ValueError, match="pool_h must be an int >= 1"):
        Pooling(0, 2)
    with pytest.raises(TypeError, match="W must be a float32 or float64"):
        Convolution(W.astype(np.int64), b)
    with pytest.raises(ValueError, match=r"expected \(N, 3, H, W\)"):
        Convolution(W, b).forward(x[:, :1])
    with pytest.raises(RuntimeError, match="backward called before forward"):
        Pooling(2, 2).backward(np.ones((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="dout has shape"):
        layer = Convolution(W, b)
        layer.forward(x)
        layer.backward(np.ones((2, 4, 1, 1)))


def test_scalar_bias_as_the_books_apply_filter():
    x, W, _ = case_arrays((1, 1, 9, 9, 1, 3, 3, 1, 0), np.float64)
    x32 = x.astype(np.float32)  # an image read by imread is float32
    out = Convolution(W, 0).forward(x32)  # x follows W's dtype
    close(out, ref.conv_forward(x32.astype(np.float64), W, np.zeros(1), 1, 0), np.float64)


# --- SimpleConvNet --------------------------------------------------------------------


def small_net(**kw):
    conv = {"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1}
    return SimpleConvNet((1, 10, 10), conv, hidden_size=10, output_size=10, **kw)


def reference_loss(params, x, t):
    """conv → ReLU → 2×2 pool → Affine → ReLU → Affine → softmax → cross-entropy."""
    a = ref.relu(ref.conv_forward(x, params["W1"], params["b1"]))
    p, _ = ref.pool_forward(a, 2, 2, 2)
    h = ref.relu(p.reshape(len(x), -1) @ params["W2"] + params["b2"])
    return ref.cross_entropy_error(ref.softmax(h @ params["W3"] + params["b3"]), t)


def test_simple_convnet_shapes_loss_and_accuracy():
    net = SimpleConvNet(seed=0)
    assert {k: v.shape for k, v in net.params.items()} == {
        "W1": (30, 1, 5, 5),
        "b1": (30,),
        "W2": (4320, 100),
        "b2": (100,),
        "W3": (100, 10),
        "b3": (10,),
    }
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert net.layers["Conv1"].W is net.params["W1"]
    rng = np.random.default_rng(1)
    x, t = rng.random((7, 1, 28, 28)), rng.integers(0, 10, 7)
    np.testing.assert_allclose(net.loss(x, t), reference_loss(net.params, x, t), rtol=1e-12)
    y = net.predict(x)
    want = np.mean(np.argmax(y, axis=1) == t)
    assert net.accuracy(x, t, batch_size=3) == want  # the last batch of 1 counts too
    assert net.accuracy(x, np.eye(10)[t]) == want
    assert net.accuracy(x.reshape(7, 784), t) == want  # flat rows are reshaped


def test_simple_convnet_gradient_check():
    """The book's ch07 gradient_check.py: backprop against central differences.

    The two differ by the δ = 1e-7 inside the loss's log (a relative 1e-6 here) and
    O(h²) terms; the bound is 1e-5 of the gradient's mean size per parameter, mean
    absolute difference as the book prints it. (A probe that moved a pooling window's
    maximum across a kink would show as a far larger error.)
    """
    net = small_net(seed=3, weight_init_std=0.1)
    rng = np.random.default_rng(4)
    x, t = rng.random((2, 1, 10, 10)), np.array([[1], [7]])  # labels as a column, as the book's T
    num = net.numerical_gradient(x, t)
    grad = net.gradient(x, t)
    assert set(num) == set(grad) == set(net.params)
    for key in grad:
        err = np.abs(num[key] - grad[key]).mean()
        assert err <= 1e-5 * np.abs(grad[key]).mean(), (key, err)


def test_simple_convnet_float32_gradient_matches_float64():
    n64, n32 = small_net(seed=5), small_net(seed=5, dtype=np.float32)
    rng = np.random.default_rng(6)
    x, t = rng.random((4, 1, 10, 10)), rng.integers(0, 10, 4)
    g64, g32 = n64.gradient(x, t), n32.gradient(x, t)
    for key in g64:
        assert g32[key].dtype == np.float32
        np.testing.assert_allclose(
            g32[key], g64[key], rtol=1e-3, atol=1e-3 * np.abs(g64[key]).max()
        )


def test_simple_convnet_save_load_npz_not_pickles(tmp_path):
    net, other = small_net(seed=1), small_net(seed=2)
    path = tmp_path / "params.pkl"
    net.save_params(path)
    assert path.exists()  # the exact name the book's scripts pass
    w1 = other.params["W1"]
    other.load_params(path)
    assert other.params["W1"] is w1  # copied in place: the layers see it
    for key in net.params:
        np.testing.assert_array_equal(other.params[key], net.params[key])
    path.write_bytes(pickle.dumps(dict(net.params)))
    with pytest.raises(ValueError, match="is a pickle"):
        other.load_params(path)


def test_simple_convnet_bad_arguments():
    with pytest.raises(ValueError, match="filter_size"):
        SimpleConvNet(conv_param={"filter_num": 3, "filter_size": 0, "pad": 0, "stride": 1})
    with pytest.raises(ValueError, match="does not fit"):
        SimpleConvNet((1, 4, 4), {"filter_num": 3, "filter_size": 5, "pad": 0, "stride": 1})
    net = SimpleConvNet(seed=0)
    with pytest.raises(ValueError, match=r"expected \(N, 1, 28, 28\)"):
        net.predict(np.zeros((2, 1, 27, 27)))
    with pytest.raises(ValueError, match="label"):
        net.loss(np.zeros((2, 1, 28, 28)), np.array([0, 10]))
