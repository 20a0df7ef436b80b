"""Ctrl-C (SIGINT) during long native work is honoured within about a second.

Each case runs in a child interpreter that prints a marker line right before the long call;
the test waits for it, lets the call run a moment, sends SIGINT and requires the child to be
gone within ``BOUND`` seconds (a liveness bound with generous slack, not a benchmark), with
the outcome the API defines: KeyboardInterrupt from a bare kernel call, a History with
``interrupted`` and a finite, usable model from ``Trainer.train``, exit code 130 from the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")

BOUND = 3.0  # seconds from SIGINT to exit
RUNNING = 0.5  # seconds the long call runs before the signal

PRELUDE = """
import sys, time
import numpy as np
import ferrograd as fg
from ferrograd import _core

def report(t0):
    print(f"interrupted after {time.perf_counter() - t0:.2f} s", flush=True)
"""


def interrupt(code: str, tmp_path: Path, marker: str = "started", argv: list[str] | None = None):
    """Run ``code`` (or ``argv``), SIGINT it RUNNING s after ``marker`` appears in its stdout.

    Returns (return code, stdout, stderr, seconds from SIGINT to exit).
    """
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    cmd = argv or [sys.executable, "-c", PRELUDE + textwrap.dedent(code)]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        deadline = time.monotonic() + 60
        while marker not in out_path.read_text():
            assert proc.poll() is None, f"child exited early: {err_path.read_text()}"
            assert time.monotonic() < deadline, "child never started"
            time.sleep(0.02)
        time.sleep(RUNNING)
        assert proc.poll() is None, f"child finished before the signal: {out_path.read_text()}"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"child still running {BOUND} s after SIGINT: {out_path.read_text()[-500:]}"
            )
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out_path.read_text(), err_path.read_text(), elapsed


def interrupted_after(out: str) -> float:
    line = next(ln for ln in out.splitlines() if ln.startswith("interrupted after"))
    return float(line.split()[2])


def test_bruteforce_numerical_gradient_784_50_10(tmp_path):
    # 784·50 + 50 + 50·10 + 10 = 39,760 parameters, each two full forward passes of
    # a batch of 100: tens of seconds uninterrupted.
    code = """
    rng = np.random.default_rng(0)
    net = fg.TwoLayerNet(784, 50, 10, seed=0)
    x, t = rng.random((100, 784)), rng.integers(0, 10, 100)
    p = net.params
    before = {k: v.copy() for k, v in p.items()}
    print("started", flush=True)
    t0 = time.perf_counter()
    try:
        _core.numerical_gradient(*(p[k] for k in ("W1", "b1", "W2", "b2")), x, t,
                                 method="bruteforce")
    except KeyboardInterrupt:
        report(t0)
        assert all(np.array_equal(p[k], before[k]) for k in p), "parameters changed"
        print("parameters intact", flush=True)
        sys.exit(130)
    print("finished", flush=True)
    """
    code_, out, err, elapsed = interrupt(code, tmp_path)
    assert code_ == 130, err
    assert "parameters intact" in out and "finished" not in out
    assert interrupted_after(out) >= RUNNING  # the signal landed inside the native call
    assert elapsed < BOUND


def test_fast_numerical_gradient_in_a_loop(tmp_path):
    # No handler in the child: the KeyboardInterrupt ends the interpreter the default way
    # (traceback, then death by SIGINT), wherever in the loop the signal lands.
    code = """
    rng = np.random.default_rng(0)
    net = fg.TwoLayerNet(784, 50, 10, seed=0)
    x, t = rng.random((4000, 784)), rng.integers(0, 10, 4000)  # seconds per call
    print("started", flush=True)
    while True:
        g = net.numerical_gradient(x, t)
        assert np.isfinite(g["W1"]).all()
    """
    code_, _, err, elapsed = interrupt(code, tmp_path)
    assert code_ == -signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt") and "PanicException" not in err
    assert elapsed < BOUND


def test_fused_training_epoch_loop(tmp_path):
    code = """
    from ferrograd.fused import FusedTrainer
    (x, t), (xt, tt) = fg.load_mnist(dataset="sample")
    net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
    opt = fg.SGD(lr=0.1)
    fused = FusedTrainer(net, opt)
    rng = np.random.default_rng(0)
    losses = []
    print("started", flush=True)
    t0 = time.perf_counter()
    try:
        while True:  # 10,000 steps per native call
            losses.extend(fused.run_epoch(x, t, rng.integers(0, len(x), (10_000, 100))))
    except KeyboardInterrupt:
        report(t0)
    finite = all(np.isfinite(v).all() for v in net.params.values())
    acc = net.accuracy(xt, tt)
    print(f"finite {finite} steps {len(losses)} acc {acc:.3f}", flush=True)
    """
    code_, out, err, elapsed = interrupt(code, tmp_path)
    assert code_ == 0, err
    assert interrupted_after(out) >= RUNNING
    line = out.splitlines()[-1].split()
    assert line[:2] == ["finite", "True"]
    assert float(line[-1]) > 0.5  # it had learned something before the signal
    assert elapsed < BOUND


@pytest.mark.parametrize(
    ("net", "gradient", "path"),
    [
        ("TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)", "backprop", "fused"),
        ("TwoLayerNet(784, 50, 10, seed=0)", "numerical", "python"),
        ("MultiLayerNet(784, [100, 100], 10, seed=0, activation='relu')", "backprop", "fused"),
        ("MultiLayerNet(784, [100, 100], 10, seed=0, use_dropout=True)", "backprop", "python"),
    ],
)
def test_trainer_train_stops_with_interrupted_history(tmp_path, net, gradient, path):
    code = f"""
    (x, t), (xt, tt) = fg.load_mnist(dataset="sample")
    net = fg.{net}
    trainer = fg.Trainer(net, x, t, xt, tt, iters=10**9, gradient="{gradient}",
                         optimizer_param={{"lr": 0.1}}, seed=0, verbose=False)
    print("started", flush=True)
    t0 = time.perf_counter()
    hist = trainer.train()
    report(t0)
    finite = all(np.isfinite(v).all() for v in net.params.values())
    print(f"interrupted {{hist.interrupted}} fused {{hist.fused}} iterations {{hist.iterations}} "
          f"losses {{len(hist.train_loss)}} finite {{finite}} acc {{trainer.test_accuracy():.3f}}",
          flush=True)
    """
    code_, out, err, elapsed = interrupt(code, tmp_path)
    assert code_ == 0, err
    words = out.splitlines()[-1].split()
    fields = dict(zip(words[::2], words[1::2], strict=True))
    assert fields["interrupted"] == "True" and fields["finite"] == "True"
    assert fields["fused"] == str(path == "fused")
    assert int(fields["iterations"]) > 0 and 0.0 <= float(fields["acc"]) <= 1.0
    assert fields["iterations"] == fields["losses"]
    assert interrupted_after(out) >= RUNNING
    assert elapsed < BOUND


@pytest.mark.parametrize(
    "net_args",
    [
        ["--net", "two-layer", "--gradient", "numerical"],
        ["--net", "multi-layer", "--activation", "relu"],
        ["--net", "two-layer", "--batch-size", "5000"],
    ],
)
def test_cli_train_exits_130_and_saves(tmp_path, net_args):
    save = tmp_path / "m.npz"
    argv = [sys.executable, "-m", "ferrograd", "train", "--dataset", "sample", "--iters",
            "1000000000", "--seed", "0", *net_args, "--save", str(save)]  # fmt: skip
    code_, out, err, elapsed = interrupt("", tmp_path, marker=" train / ", argv=argv)
    assert code_ == 130, err
    assert "[interrupted]" in out and "Traceback" not in err
    assert save.exists()
    assert elapsed < BOUND
