"""ferrograd.save / load / load_checkpoint: the file format, checks, and exact resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from ferrograd import load, load_checkpoint, model_info, save
from ferrograd._random import GlobalGenerator
from ferrograd.datasets import load_mnist_sample
from ferrograd.nets import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    SimpleConvNet,
    SimpleNet,
    SoftmaxRegression,
    TwoLayerNet,
)
from ferrograd.optimizers import Adam, Momentum
from ferrograd.trainer import Trainer, load_params, save_params


@pytest.fixture(scope="module")
def sample():
    (x, t), (xt, tt) = load_mnist_sample(dtype=np.float64)
    return x[:600], t[:600], xt[:200], tt[:200]


def entries(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def header(path) -> dict:
    return json.loads(entries(path)["__ferrograd__"].tobytes().decode())


NETS = [
    lambda: TwoLayerNet(6, 5, 3, 0.5, activation="relu", seed=1),
    lambda: TwoLayerNet(6, 5, 3, seed=1, dtype=np.float32),
    lambda: MultiLayerNet(6, [5, 4], 3, "sigmoid", "xavier", 0.1, seed=1),
    lambda: MultiLayerNet(6, [5], 3, use_batchnorm=True, use_dropout=True, dropout_ratio=0.3),
    lambda: MultiLayerNetExtend(6, [5], 3, use_dropout=True, dropout_ration=0.2, seed=3),
    lambda: SoftmaxRegression(6, 3, 0.5, seed=1, dtype=np.float64),
    lambda: SimpleNet(np.arange(6.0).reshape(2, 3)),
]


@pytest.mark.parametrize("make", NETS)
def test_round_trip_rebuilds_the_model_without_sizes(make, tmp_path, rng):
    net = make()
    path = save(net, tmp_path / "m")
    assert path.name == "m.npz"
    back = load(path)
    assert type(back) is type(net) and repr(back) == repr(net)
    params = getattr(net, "params", {"W": getattr(net, "W", None)})
    back_params = getattr(back, "params", {"W": getattr(back, "W", None)})
    assert list(back_params) == list(params)
    for key, value in params.items():
        assert back_params[key].dtype == value.dtype
        np.testing.assert_array_equal(back_params[key], value)
    x = rng.standard_normal((4, 2 if isinstance(net, SimpleNet) else 6))
    np.testing.assert_array_equal(back.predict(x), net.predict(x))


SMALL_CONV = {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}
CONV_NETS = [
    lambda: SimpleConvNet((1, 10, 10), SMALL_CONV, 8, 3, 0.1, seed=2, dtype=np.float32),
    lambda: DeepConvNet((1, 16, 16), hidden_size=12, output_size=3, seed=2),
]


@pytest.mark.parametrize("make", CONV_NETS)
def test_conv_nets_round_trip(make, tmp_path, rng):
    net = make()
    path = save(net, tmp_path / "conv", optimizer=Adam(lr=0.01))
    info = model_info(path)
    assert info is not None and info["class"] == type(net).__name__
    assert info["optimizer"] == "Adam" and info["iterations"] == 0
    back = load(path)
    assert type(back) is type(net) and repr(back) == repr(net)
    for key, value in net.params.items():
        assert back.params[key].dtype == value.dtype
        np.testing.assert_array_equal(back.params[key], value, err_msg=key)
    x = rng.standard_normal((3, *net.input_dim)).astype(net.dtype)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    # the dropout masks (DeepConvNet's) continue from the saved generator
    np.testing.assert_array_equal(back.predict(x, train_flg=True), net.predict(x, train_flg=True))
    if isinstance(net, SimpleConvNet):
        other = SimpleConvNet((1, 10, 10), SMALL_CONV, 9, 3, dtype=np.float32)
    else:
        other = DeepConvNet((1, 16, 16), hidden_size=13, output_size=3)
    with pytest.raises(ValueError, match=r"has hidden_size=(12|8) but the model has hidden_size"):
        load(path, model=other)


def test_model_info_reads_the_header_alone(tmp_path, sample):
    x, t = sample[0], sample[1]
    net = TwoLayerNet(784, 10, 10, seed=0)
    trainer = Trainer(net, x, t, epochs=1, mini_batch_size=60, seed=0, verbose=False)
    trainer.train()
    info = model_info(save(net, tmp_path / "m", trainer=trainer))
    assert info == {
        "class": "TwoLayerNet",
        "config": {"input_size": 784, "hidden_size": 10, "output_size": 10,
                   "weight_init_std": 0.01, "activation": "sigmoid", "dtype": "float64"},
        "optimizer": "SGD",
        "iterations": 10,
        "epochs": 1,
        "mini_batch_size": 60,
    }  # fmt: skip
    assert model_info(save_params(net, tmp_path / "p.npz")) is None
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"model_info: .*bad\.npz is not a saved ferrograd model"):
        model_info(tmp_path / "bad.npz")


def test_file_entries_and_header(tmp_path):
    net = MultiLayerNet(6, [5], 3, "sigmoid", 0.05, 0.01, use_batchnorm=True, seed=0)
    x = np.random.default_rng(0).standard_normal((8, 6))
    net.gradient(x, np.arange(8) % 3)  # a training pass sets the running statistics
    opt = Adam(lr=0.002)
    opt.update(net.params, net.gradient(x, np.arange(8) % 3))
    path = save(net, tmp_path / "m.npz", optimizer=opt)
    arrays = entries(path)
    assert sorted(arrays) == sorted(
        ["__ferrograd__"]
        + [f"param/{k}" for k in ("W1", "b1", "gamma1", "beta1", "W2", "b2")]
        + ["buffer/BatchNorm1/running_mean", "buffer/BatchNorm1/running_var"]
        + [f"optimizer/{s}/{k}" for s in "mv" for k in ("W1", "b1", "gamma1", "beta1", "W2", "b2")]
    )
    assert arrays["__ferrograd__"].dtype == np.uint8
    meta = header(path)
    assert meta["format"] == "ferrograd.model" and meta["version"] == 1
    assert meta["class"] == "MultiLayerNet"
    assert meta["config"] == {
        "input_size": 6,
        "hidden_size_list": [5],
        "output_size": 3,
        "activation": "sigmoid",
        "weight_init_std": 0.05,
        "weight_decay_lambda": 0.01,
        "use_batchnorm": True,
        "use_dropout": False,
        "dropout_ratio": 0.5,
        "dtype": "float64",
    }
    assert meta["optimizer"] == {
        "class": "Adam",
        "hyperparameters": {"lr": 0.002, "beta1": 0.9, "beta2": 0.999},
        "iter": 1,
        "states": ["m", "v"],
    }
    # no pickles anywhere: every entry loads with allow_pickle=False as a plain number array
    assert all(a.dtype.kind in "uif" for a in arrays.values())


def test_batchnorm_running_statistics_survive(tmp_path, sample):
    x, t, xt, tt = sample
    net = MultiLayerNet(784, [30], 10, use_batchnorm=True, seed=0)
    Trainer(net, x, t, epochs=2, optimizer="adam", seed=0, verbose=False).train()
    bn = net.layers["BatchNorm1"]
    assert abs(bn.running_mean).max() > 0.1  # trained: far from the initial 0
    back = load(save(net, tmp_path / "bn.npz"))
    np.testing.assert_array_equal(back.layers["BatchNorm1"].running_mean, bn.running_mean)
    np.testing.assert_array_equal(back.layers["BatchNorm1"].running_var, bn.running_var)
    assert back.accuracy(xt, tt) == net.accuracy(xt, tt)
    np.testing.assert_array_equal(back.predict(xt), net.predict(xt))


def test_load_into_a_model_refuses_mismatches_by_name(tmp_path):
    path = save(TwoLayerNet(6, 5, 3, activation="sigmoid", seed=0), tmp_path / "m.npz")
    with pytest.raises(
        ValueError, match="activation='sigmoid' but the model has activation='relu'"
    ):
        load(path, model=TwoLayerNet(6, 5, 3, activation="relu"))
    with pytest.raises(ValueError, match="hidden_size=5 but the model has hidden_size=7"):
        load(path, model=TwoLayerNet(6, 7, 3, activation="sigmoid"))
    with pytest.raises(ValueError, match="dtype='float64' but the model has dtype='float32'"):
        load(path, model=TwoLayerNet(6, 5, 3, activation="sigmoid", dtype=np.float32))
    with pytest.raises(ValueError, match="holds a TwoLayerNet but the model is a MultiLayerNet"):
        load(path, model=MultiLayerNet(6, [5], 3))
    with pytest.raises(
        ValueError, match="use_batchnorm=False but the model has use_batchnorm=True"
    ):
        load(
            save(MultiLayerNet(6, [5], 3, seed=0), tmp_path / "mln.npz"),
            model=MultiLayerNet(6, [5], 3, use_batchnorm=True),
        )
    # the same architecture: values copied in place (layers keep their arrays)
    target = TwoLayerNet(6, 5, 3, activation="sigmoid", seed=9)
    w1 = target.params["W1"]
    assert load(path, model=target) is target and target.params["W1"] is w1
    np.testing.assert_array_equal(w1, load(path).params["W1"])
    # load_params reads the new files too, with the same checks
    with pytest.raises(ValueError, match="activation"):
        load_params(TwoLayerNet(6, 5, 3, activation="relu"), path)


def test_files_of_the_first_save_params_still_load(tmp_path):
    net = TwoLayerNet(6, 5, 3, seed=0)
    old = tmp_path / "old.npz"
    # exactly what the first save_params wrote: the params under their own names
    np.savez(old, **net.params)
    assert sorted(entries(old)) == ["W1", "W2", "b1", "b2"]
    fresh = TwoLayerNet(6, 5, 3, seed=1)
    load_params(fresh, old)
    np.testing.assert_array_equal(fresh.params["W2"], net.params["W2"])
    other = TwoLayerNet(6, 5, 3, seed=2)
    assert load(old, model=other) is other
    np.testing.assert_array_equal(other.params["W1"], net.params["W1"])
    with pytest.raises(ValueError, match=r"parameters only .*load\(path, model=net\)"):
        load(old)
    save_params(net, tmp_path / "sp.npz")  # save_params still writes that format
    assert sorted(entries(tmp_path / "sp.npz")) == ["W1", "W2", "b1", "b2"]


def test_bad_files_are_value_errors(tmp_path):
    pickled = tmp_path / "p.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"not a saved ferrograd model.*pickle"):
        load(pickled)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a saved ferrograd model"):
        load(tmp_path / "junk.npz")
    path = save(TwoLayerNet(6, 5, 3, seed=0), tmp_path / "m.npz")
    arrays = entries(path)
    meta = header(path)
    meta["version"] = 99
    arrays["__ferrograd__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(ValueError, match="format version 99"):
        load(tmp_path / "v99.npz")
    del arrays["param/b2"]
    arrays["__ferrograd__"] = np.frombuffer(json.dumps(header(path)).encode(), np.uint8)
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match=r"holds parameters \['W1', 'W2', 'b1'\]"):
        load(tmp_path / "short.npz")
    with pytest.raises(FileNotFoundError, match="directory"):
        save(TwoLayerNet(6, 5, 3), tmp_path / "no" / "m.npz")
    with zipfile.ZipFile(path) as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())


def test_optimizer_state_round_trip(tmp_path, rng):
    net = TwoLayerNet(6, 5, 3, seed=0)
    x, t = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    opt = Momentum(lr=0.05, momentum=0.8)
    for _ in range(3):
        opt.update(net.params, net.gradient(x, t))
    ck = load_checkpoint(save(net, tmp_path / "m.npz", optimizer=opt))
    assert type(ck.optimizer) is Momentum and ck.optimizer.hyperparameters() == {
        "lr": 0.05,
        "momentum": 0.8,
    }
    for key in net.params:
        np.testing.assert_array_equal(ck.optimizer.v[key], opt.v[key])
    assert ck.rng is None and ck.iterations == 0
    # the next step is the same from the original and the restored pair
    opt.update(net.params, net.gradient(x, t))
    ck.optimizer.update(ck.model.params, ck.model.gradient(x, t))
    for key in net.params:
        np.testing.assert_array_equal(ck.model.params[key], net.params[key])


# ----------------------------------------------------------------- exact resume

RESUME = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ferrograd import load_checkpoint, save
    from ferrograd.trainer import Trainer

    ck_path, data_path, out_path, use_fused = sys.argv[1:5]
    with np.load(data_path) as d:
        x, t = d["x"], d["t"]
    ck = load_checkpoint(ck_path)
    trainer = Trainer(
        ck.model, x, t, epochs=2, mini_batch_size=50, optimizer=ck.optimizer, seed=ck.rng,
        verbose=False, use_fused=use_fused == "1", initial_iteration=ck.iterations,
        initial_epoch=ck.epochs,
    )
    hist = trainer.train()
    assert hist.fused == (use_fused == "1")
    save(ck.model, out_path, trainer=trainer)
    """
)

CASES = {
    "two-layer fused": (lambda dt, seed: TwoLayerNet(784, 20, 10, seed=seed, dtype=dt), True),
    "multi-layer weight decay fused": (
        lambda dt, seed: MultiLayerNet(
            784, [20, 15], 10, weight_decay_lambda=0.01, seed=seed, dtype=dt
        ),
        True,
    ),
    "batch norm + dropout, Python loop": (
        lambda dt, seed: MultiLayerNet(
            784,
            [20],
            10,
            use_batchnorm=True,
            use_dropout=True,
            dropout_ratio=0.2,
            seed=seed,
            dtype=dt,
        ),
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_resume_in_a_new_process_continues_bit_for_bit(case, optimizer, dtype, tmp_path, sample):
    make, fused = CASES[case]
    x, t = sample[0].astype(dtype), sample[1]
    np.savez(tmp_path / "data.npz", x=x, t=t)
    lr = {"sgd": 0.1, "adam": 0.01}[optimizer]

    def trainer(net, epochs):
        return Trainer(
            net, x, t, epochs=epochs, mini_batch_size=50, optimizer=optimizer,
            optimizer_param={"lr": lr}, seed=5, verbose=False, use_fused=fused,
        )  # fmt: skip

    straight = make(dtype, 0)
    trainer(straight, 4).train()
    first = make(dtype, 0)
    half = trainer(first, 2)
    half.train()
    save(first, tmp_path / "half.npz", trainer=half)
    subprocess.run(
        [
            sys.executable,
            "-c",
            RESUME,
            str(tmp_path / "half.npz"),
            str(tmp_path / "data.npz"),
            str(tmp_path / "resumed.npz"),
            "1" if fused else "0",
        ],
        check=True,
        timeout=120,
    )
    resumed = load_checkpoint(tmp_path / "resumed.npz")
    assert (resumed.iterations, resumed.epochs) == (48, 4)  # counted across the resume
    moved = 0.0
    for key, value in straight.params.items():
        got = resumed.model.params[key]
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, value, err_msg=key)
        moved = max(moved, float(np.abs(value - first.params[key]).max()))
    assert moved > 1e-3  # the last two epochs did change the parameters
    if "batch norm" in case:
        np.testing.assert_array_equal(
            resumed.model.layers["BatchNorm1"].running_var,
            straight.layers["BatchNorm1"].running_var,
        )


def test_resume_from_numpys_global_generator(tmp_path, sample):
    """seed=None (the book's np.random): the generator state rides along and is restored."""
    x, t = sample[0][:300], sample[1][:300]

    def run(net, epochs):
        tr = Trainer(
            net, x, t, epochs=epochs, mini_batch_size=30, optimizer="momentum", verbose=False
        )
        tr.train()
        return tr

    np.random.seed(3)  # noqa: NPY002
    straight = MultiLayerNet(784, [12], 10, use_dropout=True, dropout_ratio=0.3)
    run(straight, 4)
    np.random.seed(3)  # noqa: NPY002
    net = MultiLayerNet(784, [12], 10, use_dropout=True, dropout_ratio=0.3)
    tr = run(net, 2)
    save(net, tmp_path / "g.npz", trainer=tr)
    # whatever is drawn meanwhile, load_checkpoint restores the saved state
    np.random.seed(12345)  # noqa: NPY002
    ck = load_checkpoint(tmp_path / "g.npz")
    assert isinstance(ck.model.rng, GlobalGenerator)  # dropout masks from np.random, as saved
    Trainer(
        ck.model, x, t, epochs=2, mini_batch_size=30, optimizer=ck.optimizer, seed=ck.rng,
        verbose=False,
    ).train()  # fmt: skip
    for key, value in straight.params.items():
        np.testing.assert_array_equal(ck.model.params[key], value, err_msg=key)
