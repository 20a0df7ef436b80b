"""Aborts, hangs, silently wrong results, destroyed files and unclear errors, each class
proved on the inputs that once showed it. Crashes and hangs run in child interpreters with
a timeout (and an address-space limit where memory runs out), so a regression fails the
test instead of killing or stalling the suite."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import ferrograd as fg
import numpy as np
import pytest
from conftest import python_output
from ferrograd import _core
from ferrograd.trainer import _atomic_write

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX signals, FIFOs and rlimits")

# Address space of a child that must meet a failed allocation: the interpreter and NumPy
# fit, the results asked for do not (and the machine is never at risk).
CHILD_MEMORY = 3 << 30


def run_child(code: str, timeout: float = 60, env: dict | None = None, limit: bool = False):
    """Run ``code`` in a new interpreter; returns (returncode, stdout, stderr)."""
    prelude = "import numpy as np\nimport ferrograd as fg\nfrom ferrograd import _core\n"
    if limit:
        prelude = (
            "import resource\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({CHILD_MEMORY}, {CHILD_MEMORY}))\n"
        ) + prelude
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


# ------------------------------------------------------------------------------- aborts

NET = """
rng = np.random.default_rng(0)
w1, b1 = rng.random((784, 50)), np.zeros(50)
w2, b2 = rng.random((50, 10)), np.zeros(10)
huge = np.broadcast_to(np.ones((1, 784)), (1 << 26, 784))  # costs nothing; results do
labels = np.broadcast_to(np.zeros(1, np.int64), (1 << 26,))
"""

ALLOCATING_CALLS = {
    "two_layer_predict": "_core.two_layer_predict(w1, b1, w2, b2, huge)",
    "two_layer_loss": "_core.two_layer_loss(w1, b1, w2, b2, huge, labels)",
    "two_layer_gradient": "_core.two_layer_gradient(w1, b1, w2, b2, huge, labels)",
    # (fewer rows: the kernel first checks every x for NaN; a wide layer instead)
    "numerical_gradient": (
        "_core.numerical_gradient(rng.random((784, 2000)), np.zeros(2000), "
        "rng.random((2000, 10)), b2, huge[: 1 << 20], labels[: 1 << 20])"
    ),
    "softmax_cross_entropy_backward": (
        "_core.softmax_cross_entropy_backward(np.broadcast_to(np.ones((1, 10)), (1 << 28, 10)),"
        " np.broadcast_to(np.zeros(1, np.int64), (1 << 28,)))"
    ),
    "accuracy": (
        "_core.accuracy([w1, b1, w2, b2], np.broadcast_to(np.ones((1, 784)), (1 << 29, 784)),"
        " np.broadcast_to(np.zeros(1, np.int64), (1 << 29,)), activation='relu')"
    ),
    "predict_labels": (
        "_core.predict_labels([np.broadcast_to(np.ones((4, 1)), (4, 1 << 27)),"
        " np.broadcast_to(np.zeros(1), (1 << 27,)), np.broadcast_to(np.ones((1, 2)), (1 << 27, 2)),"
        " np.zeros(2)], np.ones((300, 4)), activation='relu')"
    ),
    "TwoLayerNet.predict": ("fg.TwoLayerNet(784, 50, 10, seed=0).predict(huge)"),
    "FusedTrainer.run_epoch": """
        from ferrograd.fused import FusedTrainer
        net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
        fused = FusedTrainer(net, fg.Adam())
        x, t = np.ones((10, 784), np.float32), np.zeros(10, np.int64)
        fused.run_epoch(x, t, np.zeros((1, 1 << 25), np.int64))
    """,
}


@posix
@pytest.mark.parametrize("name", sorted(ALLOCATING_CALLS))
def test_allocation_failure_in_a_kernel_is_a_memory_error(name):
    call = textwrap.indent(textwrap.dedent(ALLOCATING_CALLS[name]).strip(), "    ")
    code = NET + f"try:\n{call}\nexcept MemoryError as e:\n    print('MemoryError:', e)\n"
    rc, out, err = run_child(code, limit=True)
    assert rc == 0, f"child died ({rc}): {err[-800:]}"
    assert "MemoryError:" in out and "cannot allocate" in out, out + err


@posix
def test_cli_out_of_memory_is_one_line(tmp_path):
    rc, _, err = run_child(
        "from ferrograd.cli import main\n"
        "raise SystemExit(main(['train', '--dataset', 'sample', '--epochs', '1',"
        " '--batch-size', '100000000']))",
        limit=True,
    )
    assert rc == 1, err
    assert err.startswith("ferrograd: error: out of memory") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("shapes", [((4, 0), (0, 3)), ((4, 3), (3, 0))])
def test_zero_width_layers_are_a_value_error_not_a_panic(shapes):
    (a, b), (c, d) = shapes
    params = [np.ones((a, b)), np.zeros(b), np.ones((c, d)), np.zeros(d)]
    x = np.ones((5, 4))
    with pytest.raises(ValueError, match="a layer needs at least one unit"):
        _core.predict_labels(params, x, activation="relu")
    with pytest.raises(ValueError, match="a layer needs at least one unit"):
        _core.accuracy(params, x, np.zeros(5, np.int64), activation="relu")


def test_accuracy_of_no_rows_is_a_value_error():
    params = [np.ones((4, 3)), np.zeros(3), np.ones((3, 2)), np.zeros(2)]
    with pytest.raises(ValueError, match="no rows"):
        _core.accuracy(params, np.ones((0, 4)), np.zeros(0, np.int64), activation="relu")


# -------------------------------------------------------------------------------- hangs


@posix
def test_ctrl_c_in_the_batched_accuracy_within_a_second(tmp_path):
    code = """
    import sys, time, signal, threading, os
    rng = np.random.default_rng(0)
    h = 1024  # 256-row blocks of about 0.5 G multiply-adds; the whole call takes a minute
    params = [rng.random((784, h)), np.zeros(h), rng.random((h, h)), np.zeros(h),
              rng.random((h, 10)), np.zeros(10)]
    x = rng.random((100_000, 784))
    t = np.zeros(100_000, np.int64)
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        _core.accuracy(params, x, t, activation="relu")
        print("finished", time.perf_counter() - t0)
    except KeyboardInterrupt:
        print("interrupted after", time.perf_counter() - t0)
    """
    rc, out, err = run_child(code, timeout=120)
    assert rc == 0, err
    assert out.startswith("interrupted after"), out
    assert float(out.split()[-1]) < 2.0, out  # 0.5 s running + under a second to stop


@posix
@pytest.mark.parametrize(
    ("value", "why"),
    [("100000", "threads per core"), ("lots", "not a positive integer"), ("0", "positive")],
)
def test_thread_count_setting_is_validated_and_capped(value, why):
    code = """
    print(_core.num_threads(), _core.MAX_THREADS_PER_CORE)
    net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
    (x, t), _ = fg.load_mnist(dataset="sample")
    fg.Trainer(net, x, t, x, t, epochs=1, seed=0).train()
    print("trained")
    """
    rc, out, err = run_child(code, timeout=60, env={"FERROGRAD_NUM_THREADS": value})
    assert rc == 0, err
    threads, per_core = map(int, out.split()[:2])
    assert threads <= (os.cpu_count() or 1) * per_core
    assert "trained" in out
    assert f"FERROGRAD_NUM_THREADS={value!r}" in err and why in err
    assert f"using {threads} threads" in err


@posix
def test_non_regular_files_are_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "params.npz"
    os.mkfifo(fifo)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        os.mkfifo(data / name)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        os.mkfifo(data / name)
    code = f"""
    net = fg.TwoLayerNet(4, 3, 2, seed=0)
    for call in (lambda: fg.load_params(net, {str(fifo)!r}),
                 lambda: fg.load_mnist(data_dir={str(data)!r})):
        try:
            call()
        except ValueError as e:
            print("refused:", e)
    """
    rc, out, err = run_child(code, timeout=30)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all("not a regular file" in ln for ln in lines), out


def test_gzip_bomb_stops_at_the_declared_size(tmp_path):
    import gzip

    header = (0x0801).to_bytes(4, "big") + (10).to_bytes(4, "big")
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(header + bytes(10))
        fh.write(bytes(50 << 20))  # 50 MB of zeros past the declared 10 labels
    assert path.stat().st_size < 1 << 20
    with pytest.raises(fg.DatasetError, match=r"too long: header declares 10 .* stopped reading"):
        from ferrograd.datasets import read_idx

        read_idx(path)


# ------------------------------------------------------------------------ silently wrong


@posix
def test_interrupted_fused_run_counts_exactly_the_steps_applied():
    code = """
    import os, signal, threading
    from ferrograd.fused import FusedTrainer
    (x, t), _ = fg.load_mnist(dataset="sample")
    net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
    opt = fg.Adam()
    fused = FusedTrainer(net, opt)
    idx = np.random.default_rng(0).integers(0, len(x), (1_000_000, 100))
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        fused.run_epoch(x, t, idx)
    except KeyboardInterrupt as e:
        applied = len(e.losses)
        print(applied, opt.iter)
        # The same steps from the start give the same parameters: exactly those ran.
        net2 = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
        opt2 = fg.Adam()
        FusedTrainer(net2, opt2).run_epoch(x, t, idx[:applied])
        same = all(np.array_equal(net.params[k], net2.params[k]) for k in net.params)
        print(same, opt2.iter)
    """
    rc, out, err = run_child(code, timeout=120)
    assert rc == 0, err
    first, second = out.splitlines()
    applied, counted = map(int, first.split())
    assert applied > 0 and counted == applied
    assert second == f"True {applied}"


@posix
def test_interrupted_training_history_counts_the_steps_applied():
    code = """
    import os, signal, threading
    (x, t), (xt, tt) = fg.load_mnist(dataset="sample")
    net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
    opt = fg.Adam()
    trainer = fg.Trainer(net, x, t, xt, tt, optimizer=opt, iters=10_000_000, seed=0,
                         verbose=False)
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    h = trainer.train()
    print(h.interrupted, h.iterations, len(h.train_loss), opt.iter)
    """
    rc, out, err = run_child(code, timeout=120)
    assert rc == 0, err
    interrupted, iterations, losses, iters = out.splitlines()[-1].split()
    assert interrupted == "True" and int(iterations) > 0
    assert int(iterations) == int(losses) == int(iters)


# ----------------------------------------------------------------------- files destroyed


def test_atomic_write_goes_through_a_symlink(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    _atomic_write(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"


@posix
def test_atomic_write_writes_a_fifo_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    _atomic_write(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_atomic_write_dash_is_stdout():
    rc, out, err = run_child(
        "from ferrograd.trainer import _atomic_write\n_atomic_write('-', b'to stdout')"
    )
    assert rc == 0 and out == "to stdout", err


@posix
def test_written_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        _atomic_write(tmp_path / "new.json", b"{}")
        fg.save_params(fg.TwoLayerNet(4, 3, 2, seed=0), tmp_path / "p.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "p.npz").stat().st_mode) == 0o640
    existing = tmp_path / "kept.json"
    existing.write_text("x")
    existing.chmod(0o604)
    _atomic_write(existing, b"y")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o604


@posix
def test_sigterm_during_a_save_leaves_no_temp_file(tmp_path):
    code = f"""
    import time
    from pathlib import Path
    from ferrograd.trainer import _atomic_write
    def slow(fh):
        fh.write(b"x" * 1000)
        fh.flush()
        print("writing", flush=True)
        time.sleep(30)
    _atomic_write(Path({str(tmp_path / "out.npz")!r}), slow)
    """
    prelude = "import numpy as np\nimport ferrograd as fg\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------- confusing errors


def _npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_load_params_checks_headers_before_inflating(tmp_path):
    net = fg.TwoLayerNet(4, 3, 2, seed=0)
    members = {f"{k}.npy": _npy(v) for k, v in net.params.items()}
    # W1's header declares 10⁵ x 10⁴ float64 (8 GB); only the header is there.
    big = _npy(np.zeros((1, 1)))
    header = big.replace(b"(1, 1)", b"(100000, 10000)")[: len(big) - 8]
    bomb = _npz(tmp_path / "bomb.npz", {**members, "W1.npy": header})
    with pytest.raises(ValueError, match=r"W1 is float64\[100000, 10000\] but the network's"):
        fg.load_params(net, bomb)
    text = _npz(tmp_path / "text.npz", {**members, "W1.txt": b"hello"})
    with pytest.raises(ValueError, match=r"member 'W1\.txt' is not \.npy data"):
        fg.load_params(net, text)
    junk = _npz(tmp_path / "junk.npz", {**members, "W1.npy": b"not npy at all"})
    with pytest.raises(ValueError, match=r"W1 has no valid \.npy header"):
        fg.load_params(net, junk)


def test_load_params_accepts_the_other_byte_order(tmp_path):
    net = fg.TwoLayerNet(4, 3, 2, seed=0)
    want = {k: v * 2 for k, v in net.params.items()}
    path = tmp_path / "big_endian.npz"
    np.savez(path, **{k: v.astype(v.dtype.newbyteorder(">")) for k, v in want.items()})
    fg.load_params(net, path)
    for k, v in want.items():
        np.testing.assert_array_equal(net.params[k], v)


def test_load_params_names_a_read_only_parameter(tmp_path):
    net = fg.TwoLayerNet(4, 3, 2, seed=0)
    path = fg.save_params(net, tmp_path / "p.npz")
    net.params["b2"].flags.writeable = False
    with pytest.raises(ValueError, match="parameter b2 is read-only"):
        fg.load_params(net, path)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: fg.Adam(lr="0.1"), TypeError, "Adam: lr must be a number, got str"),
        (lambda: fg.Adam(lr=None), TypeError, "lr must be a number, got NoneType"),
        (lambda: fg.Adam(lr=[0.1]), TypeError, "lr must be a number, got list"),
        (lambda: fg.SGD(lr=True), TypeError, "SGD: lr must be a number, got bool"),
        (lambda: fg.Adam(lr=10**400), ValueError, "lr is too large for a float"),
        (lambda: fg.Momentum(momentum="0.9"), TypeError, "momentum must be a number"),
        (lambda: fg.RMSprop(decay_rate=None), TypeError, "decay_rate must be a number"),
    ],
)
def test_optimizer_arguments_of_the_wrong_type(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_optimizer_accepts_numpy_numbers():
    assert fg.SGD(lr=np.float32(0.5)).lr == 0.5 and fg.Adam(lr=np.int64(1)).lr == 1.0


def test_weight_init_std_he_and_xavier_on_every_net():
    net = fg.TwoLayerNet(800, 200, 10, weight_init_std="he", seed=0)
    assert np.std(net.params["W1"]) == pytest.approx(math.sqrt(2 / 800), rel=0.05)
    assert np.std(net.params["W2"]) == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    net = fg.SoftmaxRegression(800, 10, weight_init_std="xavier", seed=0)
    assert np.std(net.params["W"]) == pytest.approx(math.sqrt(1 / 800), rel=0.05)
    with pytest.raises(ValueError, match="TwoLayerNet: weight_init_std must be 'relu', 'he'"):
        fg.TwoLayerNet(4, 3, 2, weight_init_std="kaiming")
    with pytest.raises(TypeError, match="TwoLayerNet: weight_init_std must be a number"):
        fg.TwoLayerNet(4, 3, 2, weight_init_std=[0.1])
    with pytest.raises(ValueError, match="SoftmaxRegression: weight_init_std must be >= 0"):
        fg.SoftmaxRegression(4, 2, weight_init_std=float("nan"))


def test_numerical_diff_on_an_array_says_what_to_use():
    with pytest.raises(TypeError, match=r"single number.*numerical_gradient"):
        fg.numerical_diff(lambda x: x**2, np.array([1.0, 2.0]))
    assert fg.numerical_diff(lambda x: x**2, np.float64(3.0)) == pytest.approx(6.0)


def test_history_json_is_valid_json_with_a_diverged_loss(tmp_path):
    h = fg.History(train_loss=[1.0, float("nan"), float("inf")], iterations=3)
    path = tmp_path / "h.json"
    h.save_json(path)

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data["train_loss"] == [1.0, None, None]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--net", "softmax", "--hidden", "10,10"], "--hidden does not apply to --net softmax"),
        (["--plot", "acc.txt"], "--plot: the figure is a PNG"),
        (["--plot-errors", "e.jpg"], "--plot-errors: the figure is a PNG"),
    ],
)
def test_cli_refuses_options_it_would_ignore(argv, message, tmp_path, capsys, monkeypatch):
    from ferrograd.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "sample", "--epochs", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and not list(tmp_path.iterdir())


# ------------------------------------------------- non-finite weights, diverging runs


def test_non_finite_first_layer_weights_are_refused_on_every_compressed_path():
    # inf in W1's row of a pixel that is always 0: x @ W1 is NaN (0·inf), a kernel that
    # skips zero inputs would see a finite net. Both must not disagree silently.
    from ferrograd.fused import FusedTrainer

    (x, t), _ = fg.load_mnist(dataset="sample")
    t = t.astype(np.int64)
    net = fg.TwoLayerNet(784, 20, 10, seed=0, dtype=np.float32)
    assert not x[:, 0].any()
    net.params["W1"][0, :] = np.inf
    assert np.isnan(net.loss(x[:10], t[:10]))  # the dense path: IEEE NaN
    params = [net.params[k] for k in ("W1", "b1", "W2", "b2")]
    with pytest.raises(ValueError, match=r"W1\[0, 0\] is inf: the weights of the first layer"):
        _core.accuracy(params, x, t, activation="sigmoid")
    with pytest.raises(ValueError, match=r"predict_labels: W1\[0, 0\] is inf"):
        _core.predict_labels(params, x, activation="sigmoid")
    fused = FusedTrainer(net, fg.SGD())
    with pytest.raises(ValueError, match=r"FusedTrainer.run: W1\[0, 0\] is inf"):
        fused.run_epoch(x, t, np.zeros((1, 10), np.int64))
    with pytest.raises(ValueError, match=r"accuracy: W1\[0, 0\] is inf"):
        fused.accuracy(x, t)


@pytest.mark.parametrize("use_fused", [True, False])
def test_a_diverging_run_is_warned_about_and_stopped(use_fused):
    (x, t), (xt, tt) = fg.load_mnist(dataset="sample")
    # float32 weights overflow to inf within two steps at this rate: the loss is NaN
    net = fg.TwoLayerNet(784, 20, 10, seed=0, activation="relu", dtype=np.float32)
    trainer = fg.Trainer(
        net, x, t, xt, tt, epochs=5, optimizer="sgd", optimizer_param={"lr": 1e38},
        seed=0, verbose=False, use_fused=use_fused,
    )  # fmt: skip
    with pytest.warns(
        RuntimeWarning, match="training diverged, lower the learning rate; stopping after"
    ):
        hist = trainer.train()
    assert not math.isfinite(hist.train_loss[-1])
    assert hist.iterations < 5 * trainer.iter_per_epoch  # stopped in the first epoch
    assert hist.iterations == len(hist.train_loss) and hist.stopped_early
    assert hist.epochs == 1 and not hist.fused  # the NaN epoch evaluated, on the NumPy path


def test_a_diverging_run_goes_on_when_asked():
    (x, t), (xt, tt) = fg.load_mnist(dataset="sample")
    net = fg.TwoLayerNet(784, 20, 10, seed=0, activation="relu", dtype=np.float32)
    trainer = fg.Trainer(
        net, x, t, xt, tt, epochs=2, optimizer="sgd", optimizer_param={"lr": 1e38},
        seed=0, verbose=False, stop_on_nan=False,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="going on as asked"):
        hist = trainer.train()
    assert hist.iterations == 2 * trainer.iter_per_epoch and hist.epochs == 2


def test_evaluate_sample_num_per_epoch_must_be_positive():
    x, t = np.ones((10, 4)), np.zeros(10, np.int64)
    net = fg.TwoLayerNet(4, 3, 2, seed=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="evaluate_sample_num_per_epoch must be a positive"):
            fg.Trainer(net, x, t, x, t, evaluate_sample_num_per_epoch=bad, verbose=False)


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (np.zeros(100, np.float64), ValueError, r"t has shape \(100,\); expected one-hot rows"),
        (np.zeros(100, bool), ValueError, r"t has shape \(100,\); expected one-hot rows"),
        (np.full(100, 2**63 + 5, np.uint64), ValueError, "label 9223372036854775813 is out"),
    ],
)
@pytest.mark.parametrize("use_fused", [True, False])
def test_wrong_labels_get_one_message_on_both_paths(labels, error, message, use_fused):
    x = np.random.default_rng(0).random((100, 4))
    net = fg.TwoLayerNet(4, 3, 10, seed=0)
    trainer = fg.Trainer(net, x, labels, x, labels, iters=1, verbose=False, use_fused=use_fused)
    with pytest.raises(error, match=message):
        trainer.train()


def test_unflattened_images_train_on_the_fused_path():
    hists = []
    for flatten in (True, False):
        (x, t), (xt, tt) = fg.load_mnist(dataset="sample", flatten=flatten)
        net = fg.TwoLayerNet(784, 20, 10, seed=0, dtype=np.float32)
        hists.append(fg.Trainer(net, x, t, xt, tt, epochs=1, seed=0, verbose=False).train())
    assert x.shape[1:] == (1, 28, 28) and hists[1].fused
    assert hists[1].train_loss == hists[0].train_loss and hists[1].test_acc == hists[0].test_acc


def test_masked_arrays_are_refused():
    x = np.ma.masked_array(np.ones((3, 4)), mask=np.eye(3, 4, dtype=bool))
    net = fg.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(TypeError, match="x is a masked array"):
        net.predict(x)
    with pytest.raises(TypeError, match="x_train is a masked array"):
        fg.Trainer(net, x, np.zeros(3, np.int64), np.ones((3, 4)), np.zeros(3, np.int64))
    labels = np.ma.masked_array(np.zeros(3, np.int64), mask=[0, 1, 0])
    with pytest.raises(TypeError, match="t is a masked array"):
        net.loss(np.ones((3, 4)), labels)


def test_an_empty_data_dir_is_said_before_the_fallback(tmp_path, monkeypatch, capsys):
    from ferrograd.cli import main

    monkeypatch.delenv("FERROGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FERROGRAD_MNIST_MIRRORS", "http://127.0.0.1:9/")  # closed local port
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--iters", "1", "--data-dir", str(empty)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"ferrograd: --data-dir {empty} does not hold the four MNIST IDX files " + (
        "(train-images-idx3-ubyte[.gz], ...)"
    )
    assert "training on the MNIST sample" in err[-1]


def test_gradcheck_help_states_the_hidden_size_it_uses(capsys):
    from ferrograd.cli import main

    with pytest.raises(SystemExit):
        main(["gradcheck", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens too
    assert "10fortwo-layer,10,10formulti-layer(thedefaults)" in help_text
    assert "50fortwo-layer" not in help_text


# ------------------------------------------------ arrays a native call cannot borrow


def _fused_setup(hidden: int = 8, seed: int = 0):
    from ferrograd.fused import FusedTrainer

    rng = np.random.default_rng(seed)
    x, t = rng.random((60, 20)), rng.integers(0, 5, 60)
    net = fg.TwoLayerNet(20, hidden, 5, seed=seed)
    return FusedTrainer, net, x, t, np.arange(60).reshape(3, 20)


def test_the_same_array_twice_is_named_at_the_native_boundary():
    net = fg.TwoLayerNet(4, 4, 4, seed=0)
    p = net.params
    core = _core.FusedTrainer(
        [4, 4, 4], activation="relu", dtype="float64", optimizer="sgd",
        hyperparameters={"lr": 0.1}, weight_decay=0.0,
    )  # fmt: skip
    x, t, idx = np.ones((2, 4)), np.zeros(2, np.int64), np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match=r"params\[2\] \(W2\) cannot be updated in place: its "
                       r"memory is in use, by another array of this call") as info:  # fmt: skip
        core.run([p["W1"], p["b1"], p["W1"], p["b2"]], [], x, t, idx)
    assert info.value.array_index == ("params", 2)  # type: ignore[attr-defined]
    p["b1"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] \(b1\) is read-only"):
        core.run([p["W1"], p["b1"], p["W2"], p["b2"]], [], x, t, idx)


def test_tied_parameters_train_on_the_python_path_and_the_fused_step_says_why():
    FusedTrainer, net, x, t, idx = _fused_setup()
    fused = FusedTrainer(net, fg.SGD())
    net.params["W2"] = np.zeros((8, 5))
    net.params["b2"] = net.params["b1"][:5]  # a view of b1: tied after the trainer was made
    tied = r"network.params\['b2'\] shares its memory with network.params\['b1'\] \(tied"
    with pytest.raises(ValueError, match=tied + r".*Python path \(Trainer\(\.\.\., use_fused"):
        fused.run_epoch(x, t, idx)
    with pytest.raises(ValueError, match=tied):
        FusedTrainer(net, fg.SGD())
    trainer = fg.Trainer(net, x, t, x, t, epochs=1, mini_batch_size=20, seed=1, verbose=False)
    assert trainer._fused() is None  # the Python path: both updates reach the one array
    trainer.train()
    assert np.shares_memory(net.params["b1"], net.params["b2"])


def test_optimizer_state_over_the_parameters_is_named():
    FusedTrainer, net, x, t, idx = _fused_setup()
    opt = fg.Adam()
    fused = FusedTrainer(net, opt)
    opt.m = net.params  # state built over the parameters themselves
    with pytest.raises(ValueError, match=r"optimizer.m\['W1'\] shares its memory with "
                       r"network.params\['W1'\].*optimizer.m\['W1'\] = optimizer.m\['W1'\]"):  # fmt: skip
        fused.run_epoch(x, t, idx)
    # the convolutional net's trainer says the same of two state arrays over one
    from ferrograd.nets import SimpleConvNet

    conv = SimpleConvNet(
        input_dim=(1, 8, 8),
        conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=4, output_size=5, seed=0,
    )  # fmt: skip
    images = np.random.default_rng(0).random((60, 1, 8, 8))
    opt = fg.Adam()
    fused = FusedTrainer(conv, opt)
    fused.run_epoch(images, t, idx)
    opt.v["W3"] = opt.m["W3"]
    with pytest.raises(ValueError, match=r"optimizer.v\['W3'\] shares its memory with "
                       r"optimizer.m\['W3'\].*optimizer.v\['W3'\] = optimizer.v\['W3'\]"):  # fmt: skip
        fused.run_epoch(images, t, idx)


def test_read_only_parameters_are_named_on_both_paths_and_the_advice_works():
    """The advice never rebinds params[key] (a layered net's layers hold the arrays):
    copy.deepcopy(net) gives writeable arrays its layers still share."""
    from ferrograd.fused import FusedTrainer

    rng = np.random.default_rng(0)
    x, t, idx = rng.random((60, 20)), rng.integers(0, 5, 60), np.arange(60).reshape(3, 20)
    net = fg.MultiLayerNet(20, [8, 8], 5, seed=0)
    fused = FusedTrainer(net, fg.SGD())
    net.params["W2"].flags.writeable = False
    with pytest.raises(ValueError, match=r"network.params\['W2'\] is read-only, but training "
                       r"updates it in place.*net = copy.deepcopy\(net\)"):  # fmt: skip
        fused.run_epoch(x, t, idx)
    for opt in (fg.SGD(), fg.Momentum(), fg.AdaGrad(), fg.Adam()):
        with pytest.raises(ValueError, match=rf"{type(opt).__name__}.update: params\['W2'\] is "
                           r"read-only.*copy.deepcopy\(net\)"):  # fmt: skip
            opt.update(net.params, net.gradient(x[:5], t[:5]))
    fresh = copy.deepcopy(net)
    want = copy.deepcopy(fresh)
    FusedTrainer(fresh, fg.SGD(lr=0.5)).run_epoch(x, t, idx)
    opt = fg.SGD(lr=0.5)
    for row in idx:  # the Python path on the other copy: its layers see its arrays
        opt.update(want.params, want.gradient(x[row], t[row]))
    for key in want.params:
        np.testing.assert_allclose(fresh.params[key], want.params[key], rtol=1e-10, atol=1e-12)
    assert not np.allclose(fresh.params["W2"], net.params["W2"])  # it trained


# A net training in a thread (a long run: steps of a 784-300-10 net), then a second net
# sharing its params dict, a fork while it runs, and the advice followed in the child.
SHARED_PARAMS = """
import copy, os, threading, time
from ferrograd import fused
from ferrograd.fused import FusedTrainer
rng = np.random.default_rng(0)
x, t = rng.random((2000, 784)), rng.integers(0, 10, 2000)
idx = rng.integers(0, 2000, (300, 100))
net1 = fg.TwoLayerNet(784, 300, 10, seed=0)
net2 = fg.TwoLayerNet(784, 300, 10, seed=1)
net2.params = net1.params
runner = threading.Thread(target=FusedTrainer(net1, fg.SGD()).run_epoch, args=(x, t, idx),
                          name="trainer")
runner.start()
while not fused._BUSY:
    time.sleep(0.001)

def attempt(label, call):
    try:
        call()
        print(label, "ok", sep="|")
    except ValueError as e:
        print(label, e, sep="|")

attempt("thread", lambda: FusedTrainer(net2, fg.SGD()).run_epoch(x, t, idx[:1]))
pid = os.fork()
if pid == 0:
    attempt("child", lambda: FusedTrainer(net1, fg.SGD()).run_epoch(x, t, idx[:1]))
    attempt("child predict", lambda: net1.predict(x[:1]))
    net1 = copy.deepcopy(net1)  # the advice
    attempt("child after copy", lambda: FusedTrainer(net1, fg.SGD()).run_epoch(x, t, idx[:1]))
    os._exit(0)
os.waitpid(pid, 0)
runner.join()
attempt("after join", lambda: FusedTrainer(net2, fg.SGD()).run_epoch(x, t, idx[:1]))
"""


@posix
def test_shared_params_in_another_thread_and_after_a_fork_are_explained():
    rc, out, err = run_child(SHARED_PARAMS, timeout=240)
    assert rc == 0, err
    lines = dict(line.split("|", 1) for line in out.splitlines())
    assert lines["thread"].startswith(
        "FusedTrainer.run_epoch: network.params['W1'] is being updated by a training run in "
        "thread 'trainer' that has not finished: nets sharing their parameter arrays"
    )
    assert "train a net with arrays of its own (copy.deepcopy(net))" in lines["thread"]
    assert lines["child"].startswith(
        "FusedTrainer.run_epoch: network.params['W1'] is locked: a training run on it was "
        "running in thread 'trainer' when this process was forked"
    )
    assert "net = copy.deepcopy(net), optimizer = copy.deepcopy(optimizer)" in lines["child"]
    assert lines["child predict"].startswith(
        "predict: cannot read W1: it is being updated in place by a native call that has not "
        "finished"
    )
    assert lines["child after copy"] == "ok" and lines["after join"] == "ok"


MALLOC_SCRIPT = """
import resource, sys
import numpy as np
from ferrograd import _core
x = np.ones((10_000, 100))
for _ in range(3):
    ys = [_core.relu(x) for _ in range(6)]
    del ys
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    ys = [_core.relu(x) for _ in range(6)]  # a pass through six layers: 8 MB each
    del ys
print(_core.MALLOC_TUNED, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_array_sized_blocks_are_reused_not_faulted_in_again():
    """With the allocator tuned at import, 20 passes that make six 8 MB outputs and free
    them cost no fresh pages; FERROGRAD_MALLOC=system leaves glibc as it is (it gives
    the freed 48 MB back to the system after each pass and faults it in again)."""
    faults = {}
    for setting in ("", "system"):
        tuned, count = python_output(MALLOC_SCRIPT, FERROGRAD_MALLOC=setting).split()
        faults[setting] = (tuned, int(count))
    assert faults[""][0] == "True" and faults["system"][0] == "False"
    assert faults[""][1] < 200, faults
    assert faults["system"][1] > 10 * max(faults[""][1], 100), faults
