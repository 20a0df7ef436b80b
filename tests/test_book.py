"""The book's names and semantics (DLFS common/, dataset/mnist.py) and the script runner."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import ferrograd
import numpy as np
import pytest
from ferrograd import book, util
from ferrograd.cli import main as cli_main
from ferrograd.layers import Dropout
from ferrograd.nets import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    SimpleConvNet,
    TwoLayerNet,
)
from ferrograd.optimizers import SGD, AdaGrad, Adam, Momentum
from ferrograd.trainer import Trainer

SCRIPTS = Path(__file__).parent / "book_scripts"


# --------------------------------------------------------------------------- util


def test_smooth_curve_keeps_length_and_constants():
    np.testing.assert_allclose(util.smooth_curve(np.full(20, 3.0)), np.full(20, 3.0))
    # A symmetric window leaves a straight line unchanged away from the mirrored ends.
    ramp = np.arange(30.0)
    y = util.smooth_curve(ramp)
    assert y.shape == (30,)
    np.testing.assert_allclose(y[5:25], ramp[5:25])
    # At index 0 the mirror folds the ramp: the window sees 5,4,...,1,0,1,...,5.
    w = np.kaiser(11, 2)
    w /= w.sum()
    assert y[0] == pytest.approx(float(w @ np.abs(np.arange(-5, 6))))
    with pytest.raises(ValueError, match="at least 11"):
        util.smooth_curve([1.0, 2.0])


def test_shuffle_dataset_follows_numpy_global_permutation():
    x = np.arange(12.0).reshape(6, 2)
    t = np.arange(6)
    np.random.seed(5)
    xs, ts = util.shuffle_dataset(x, t)
    np.random.seed(5)
    perm = np.random.permutation(6)
    np.testing.assert_array_equal(ts, perm)
    np.testing.assert_array_equal(xs, x[perm])
    with pytest.raises(ValueError, match="rows"):
        util.shuffle_dataset(x, t[:3])


def test_conv_output_size_is_the_books_float():
    assert util.conv_output_size(28, 5) == 24.0
    assert util.conv_output_size(7, 3, stride=2, pad=1) == 4.0
    assert util.conv_output_size(6, 3, stride=2) == 2.5


def test_im2col_by_hand():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    col = util.im2col(x, 2, 2)
    np.testing.assert_array_equal(col, [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]])
    # pad 1, stride 2: output 2x2; first patch is the padded corner (0, 0, 0, x[0,0]).
    col = util.im2col(x, 2, 2, stride=2, pad=1)
    np.testing.assert_array_equal(col, [[0, 0, 0, 0], [0, 0, 1, 2], [0, 3, 0, 6], [4, 5, 7, 8]])
    # two channels: each row is channel 0's patch then channel 1's.
    x2 = np.stack([x[0, 0], 10 + x[0, 0]])[None]
    assert util.im2col(x2, 2, 2)[0].tolist() == [0, 1, 3, 4, 10, 11, 13, 14]
    with pytest.raises(ValueError, match="4-D"):
        util.im2col(np.zeros((3, 3)), 2, 2)
    with pytest.raises(ValueError, match="does not fit"):
        util.im2col(x, 4, 4)


def test_col2im_sums_overlaps():
    img = util.col2im(np.ones((4, 4)), (1, 1, 3, 3), 2, 2)
    np.testing.assert_array_equal(img[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    # adjoint of im2col: <im2col(x), c> == <x, col2im(c)>
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4))
    c = rng.standard_normal((2 * 3 * 2, 3 * 3 * 3))  # out 3x2 per image
    lhs = float(np.sum(util.im2col(x, 3, 3, stride=2, pad=1) * c))
    rhs = float(np.sum(x * util.col2im(c, x.shape, 3, 3, stride=2, pad=1)))
    assert lhs == pytest.approx(rhs)
    with pytest.raises(ValueError, match="col has shape"):
        util.col2im(np.ones((3, 4)), (1, 1, 3, 3), 2, 2)


# --------------------------------------------------------------------------- names


def test_book_function_names():
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t = np.eye(10)[2]
    assert ferrograd.sum_squared_error(y, t) == pytest.approx(0.0975)
    x = np.array([[0.3, 2.9, 4.0]])
    assert ferrograd.softmax_loss(x, [2]) == pytest.approx(-np.log(0.7365969137693786 + 1e-7))


def test_numerical_gradient_2d_is_per_row():
    def f(p):
        return np.sum(p**2)

    g = ferrograd.numerical_gradient_2d(f, np.array([[3.0, 4.0], [0.0, 2.0], [3.0, 0.0]]))
    np.testing.assert_allclose(g, [[6, 8], [0, 4], [6, 0]], atol=1e-6)
    np.testing.assert_allclose(ferrograd.numerical_gradient_2d(f, np.array([3.0, 4.0])), [6, 8])


def test_optimizers_accept_plain_floats():
    # the book's optimizer_compare_naive.py: f = x²/20 + y², grads (x/10, 2y)
    for opt, want in [
        (SGD(lr=0.95), (-6.335, -1.8)),
        (Momentum(lr=0.1), (-6.93, 1.6)),
        (AdaGrad(lr=1.5), (-7 + 1.5, 2 - 1.5)),
        (Adam(lr=0.3), (-7 + 0.3, 2 - 0.3)),
    ]:
        params = {"x": -7.0, "y": 2.0}
        opt.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
        assert (float(params["x"]), float(params["y"])) == pytest.approx(want, abs=1e-5)
    with pytest.raises(TypeError, match="or a float"):
        SGD().update({"x": 1}, {"x": 1.0})


def test_dropout_ration_and_multi_layer_net_extend():
    net = MultiLayerNet(4, [3], 2, use_dropout=True, dropout_ration=0.2, seed=0)
    assert net.dropout_ratio == 0.2
    ext = MultiLayerNetExtend(4, [3, 3], 2, "sigmoid", "xavier", 0.1, True, 0.3, True, seed=0)
    assert (ext.use_dropout, ext.dropout_ratio, ext.use_batchnorm) == (True, 0.3, True)
    assert ext.weight_decay_lambda == 0.1 and "gamma2" in ext.params
    with pytest.raises(ValueError, match="not both"):
        MultiLayerNet(4, [3], 2, dropout_ratio=0.1, dropout_ration=0.2)


# --------------------------------------------------------------------------- randomness


def test_seed_none_draws_from_numpy_global_generator():
    np.random.seed(0)
    net = TwoLayerNet(5, 4, 3)
    np.random.seed(0)
    w1 = 0.01 * np.random.randn(5, 4)
    w2 = 0.01 * np.random.randn(4, 3)
    np.testing.assert_array_equal(net.params["W1"], w1)
    np.testing.assert_array_equal(net.params["W2"], w2)
    # ferrograd's own seed= keeps its Generator stream
    a, b = TwoLayerNet(5, 4, 3, seed=1), TwoLayerNet(5, 4, 3, seed=1)
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    assert not np.array_equal(a.params["W1"], net.params["W1"])


def test_dropout_mask_is_the_books_rand():
    np.random.seed(2)
    out = Dropout(0.5).forward(np.ones((3, 4)))
    np.random.seed(2)
    np.testing.assert_array_equal(out, np.random.rand(3, 4) > 0.5)


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6))
    t = (x[:, 0] > 0).astype(np.int64)
    return x, t


@pytest.mark.parametrize("use_fused", [False, None])
def test_trainer_reproduces_a_run_after_np_random_seed(use_fused):
    x, t = _data()

    def run():
        np.random.seed(7)
        net = TwoLayerNet(6, 5, 2, activation="relu")
        tr = Trainer(
            net,
            x,
            t,
            x,
            t,
            epochs=3,
            mini_batch_size=10,
            optimizer="sgd",
            optimizer_param={"lr": 0.5},
            verbose=False,
            use_fused=use_fused,
        )
        tr.train()
        return tr

    a, b = run(), run()
    assert len(a.train_loss_list) == 18 and len(a.test_acc_list) == 3
    assert a.train_loss_list == b.train_loss_list
    assert a.train_acc_list == b.train_acc_list
    # the mini-batches are the book's np.random.choice draws, after the weight init
    np.random.seed(7)
    np.random.randn(6 * 5 + 5 * 2)  # W1 and W2 of the net
    first = np.random.choice(60, 10)
    np.random.seed(7)
    net = TwoLayerNet(6, 5, 2, activation="relu")
    assert a.train_loss_list[0] == pytest.approx(net.loss(x[first], t[first]))


def test_trainer_book_log_lines():
    x, t = _data()
    lines: list[str] = []
    np.random.seed(0)
    tr = Trainer(
        TwoLayerNet(6, 5, 2),
        x,
        t,
        x[:20],
        t[:20],
        epochs=2,
        mini_batch_size=20,
        log=lines.append,
        log_format="book",
    )
    tr.train()
    assert [ln.split(":")[0] for ln in lines[:3]] == ["train loss"] * 3
    assert lines[3] == (
        f"=== epoch:1, train acc:{tr.train_acc_list[0]}, test acc:{tr.test_acc_list[0]} ==="
    )
    assert lines[-2] == "=============== Final Test Accuracy ==============="
    assert lines[-1] == f"test acc:{tr.test_accuracy()}"
    assert float(lines[0].split(":")[1]) == tr.train_loss_list[0]
    with pytest.raises(ValueError, match="log_format"):
        Trainer(TwoLayerNet(6, 5, 2), x, t, x, t, log_format="keras")


# --------------------------------------------------------------------------- runner


@pytest.fixture
def scripts(tmp_path):
    """A copy of tests/book_scripts (scripts write figures beside themselves)."""
    dest = tmp_path / "book"
    shutil.copytree(SCRIPTS, dest)
    return dest


def _run(scripts, capsys, script, *args):
    book.run_script(script, args, book=scripts, dataset="sample")
    return capsys.readouterr().out


def test_runner_chapter_modules_argv_and_cwd(scripts, capsys):
    out = _run(scripts, capsys, "ch02/gates.py")
    assert out.splitlines() == ["(0, 0) -> 0", "(1, 0) -> 1", "(0, 1) -> 1", "(1, 1) -> 0"]
    cwd, argv, path = os.getcwd(), sys.argv[:], sys.path[:]
    out = _run(scripts, capsys, "ch04/descent.py", "a", "b")
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    x = [float(v) for v in lines["x"].split()]
    assert max(abs(v) for v in x) < 1e-8  # 100 steps of lr 0.1 from (-3, 4): (0.8)^100
    assert np.allclose(eval(lines["field"]), [[2, 4], [-1, 0]])
    np.random.seed(0)
    assert float(lines["W1[0,0]"]) == 0.01 * np.random.randn()
    assert eval(lines["predict sums"]) == pytest.approx([1.0, 1.0])  # ch04 predict: softmax
    assert lines["argv"] == "['a', 'b']" and lines["cwd"] == "ch04"
    assert (os.getcwd(), sys.argv, sys.path) == (cwd, argv, path)
    assert "two_layer_net" not in sys.modules and "common" not in sys.modules


def test_runner_chapter5_relu_net_and_sample_mnist(scripts, capsys):
    out = _run(scripts, capsys, "ch05/train_small.py")
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["price"].strip() == "200"
    assert lines["shapes"].strip() == "(5000, 784) (5000, 10) float64"
    for key, bound in (("W1", 1e-8), ("b1", 1e-7), ("W2", 1e-7), ("b2", 1e-6)):
        assert float(lines[key]) < bound
    assert lines["relu"].strip() == "Relu"
    # chapter 5's predict returns scores, not probabilities
    assert abs(float(lines["scores"]) - 3.0) > 0.5
    assert 0.8 < float(lines["test acc"]) <= 1.0


def test_runner_optimizer_star_import_and_floats(scripts, capsys):
    out = _run(scripts, capsys, "ch06/optimizers_small.py")
    lines = out.splitlines()
    sgd = [float(v) for v in lines[0].split()[1:]]
    mom = [float(v) for v in lines[1].split()[1:]]
    assert sgd == pytest.approx([-5.733175, 1.62])
    assert mom == pytest.approx([-6.7977, 0.92])
    sgd_loss = float(lines[2].split()[-1])
    adam_loss = float(lines[3].split()[-1])
    assert adam_loss < sgd_loss < 2.3  # the book's ranking: Adam well ahead of SGD
    assert (scripts / "ch06" / "adam.png").stat().st_size > 1000


def test_runner_book_trainer_is_reproducible(scripts, capsys):
    first = _run(scripts, capsys, "ch06/dropout_small.py", "4")
    again = _run(scripts, capsys, "ch06/dropout_small.py", "4")
    assert first == again
    lines = first.splitlines()
    assert sum(ln.startswith("train loss:") for ln in lines) == 15
    assert sum(ln.startswith("=== epoch:") for ln in lines) == 5
    assert "lists: 5 5 15" in lines
    assert 0.05 < float(lines[-1].split()[-1]) < 1.0


def test_runner_chapter7_convnet_layers_and_params_file(scripts, capsys):
    lines = _run(scripts, capsys, "ch07/convnet_small.py").splitlines()
    assert "grad keys: W1 W2 W3 b1 b2 b3" in lines
    assert sum(ln.startswith("=== epoch:") for ln in lines) == 5
    assert "conv: (1, 1, 24, 24) pool: (1, 1, 12, 12)" in lines
    assert 0.5 < float(lines[-1].split()[-1]) <= 1.0  # 15 Adam steps on 300 images
    assert (scripts / "ch07" / "params.pkl").read_bytes()[:2] == b"PK"  # npz, not a pickle
    assert book.book_modules("ch07")["simple_convnet"].SimpleConvNet is SimpleConvNet


def test_runner_chapter8_deep_convnet(scripts, capsys):
    lines = _run(scripts, capsys, "ch08/deepnet_small.py").splitlines()
    assert lines[:2] == ["params: 16 (1024, 50)", "grads: True"]
    assert 0.0 <= float(lines[2].split()[-1]) <= 1.0


def test_runner_chapter8_params_file_npz_or_a_clear_refusal(scripts, capsys):
    """ch08's scripts load the book's trained pickle: refused with the command that makes
    the npz; with an npz in its place (what train_deepnet.py's save_params writes) the
    book's half-float check runs, float16-rounded weights kept in the float64 arrays."""
    import pickle

    params = scripts / "ch08" / "deep_convnet_params.pkl"
    params.write_bytes(pickle.dumps({"W1": np.zeros(3)}))
    with pytest.raises(ValueError, match=r"never loads pickles .* `ferrograd book run ch08/train"):
        _run(scripts, capsys, "ch08/half_float_small.py")
    DeepConvNet(seed=0).save_params(params)
    lines = _run(scripts, capsys, "ch08/half_float_small.py").splitlines()
    acc64, acc16 = (float(line.split()[-1]) for line in lines[:2])
    assert 0.0 <= acc64 <= 1.0 and abs(acc16 - acc64) <= 0.02  # the book: about equal
    dtype, distinct = lines[2].split()[1:]
    assert dtype == "float64" and int(distinct) > 100


def test_runner_without_a_book_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FERROGRAD_BOOK", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(book.BookNotFoundError, match=r"git clone https://github\.com/oreilly"):
        book.run_script("ch06/optimizer_compare_mnist.py")
    assert cli_main(["book", "run", "ch06/optimizer_compare_mnist.py"]) == 2
    assert "FERROGRAD_BOOK" in capsys.readouterr().err
    with pytest.raises(book.BookNotFoundError, match="not a directory"):
        book.run_script("ch06/x.py", book=tmp_path / "missing")


def test_book_list_and_env(scripts, monkeypatch, capsys):
    monkeypatch.setenv("FERROGRAD_BOOK", str(scripts))
    assert cli_main(["book", "list"]) == 0
    assert capsys.readouterr().out.split() == [
        "ch02/gates.py",
        "ch04/descent.py",
        "ch05/train_small.py",
        "ch06/dropout_small.py",
        "ch06/optimizers_small.py",
        "ch07/convnet_small.py",
        "ch08/deepnet_small.py",
        "ch08/half_float_small.py",
    ]


def test_book_modules_mirror_the_books_tree():
    mods = book.book_modules("ch05")
    assert mods["common.optimizer"].np is np  # `from common.optimizer import *` brings np
    assert mods["common.layers"].im2col is util.im2col
    assert mods["two_layer_net"].TwoLayerNet(4, 3, 2).activation == "relu"
    assert book.book_modules("ch04")["two_layer_net"].TwoLayerNet(4, 3, 2).activation == "sigmoid"
    assert "two_layer_net" not in book.book_modules("ch06")
    assert mods["common.trainer"].Trainer.__init__.__defaults__[:2] == (20, 100)


def test_runner_trainer_follows_the_books_steps():
    """The runner's Trainer does the book's train_step: np.random.choice batch, update,
    loss after the update, accuracies after the first update of each epoch."""
    from ferrograd.book.common.trainer import Trainer as BookTrainer
    from ferrograd.nets import TwoLayerNet
    from ferrograd.optimizers import SGD

    rng = np.random.default_rng(0)
    x = rng.random((200, 20))
    x[x < 0.5] = 0.0
    t = rng.integers(0, 4, size=200)
    xt, tt = x[:50], t[:50]

    np.random.seed(5)
    net = TwoLayerNet(20, 8, 4, seed=1, weight_init_std=0.5)
    tr = BookTrainer(net, x, t, xt, tt, epochs=3, mini_batch_size=40,
                     optimizer_param={"lr": 0.5}, verbose=False)  # fmt: skip
    tr.train()

    np.random.seed(5)
    want = TwoLayerNet(20, 8, 4, seed=1, weight_init_std=0.5)
    opt = SGD(lr=0.5)
    losses, train_acc, test_acc = [], [], []
    for it in range(15):  # 3 epochs of 200 / 40 = 5 iterations
        mask = np.random.choice(200, 40)
        opt.update(want.params, want.gradient(x[mask], t[mask]))
        losses.append(want.loss(x[mask], t[mask]))
        if it % 5 == 0:
            train_acc.append(want.accuracy(x, t))
            test_acc.append(want.accuracy(xt, tt))
    np.testing.assert_allclose(tr.train_loss_list, losses, rtol=1e-9)
    assert tr.train_acc_list == train_acc and tr.test_acc_list == test_acc
    assert tr._fused is not None  # the fused step ran it
    for key, value in want.params.items():
        np.testing.assert_allclose(net.params[key], value, rtol=1e-9, atol=1e-12)
