"""The ferrograd command line: train, gradcheck and search; errors as one line, exit codes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import MNIST_FILES
from ferrograd import load_checkpoint
from ferrograd.cli import CliError, build_network, main

EPOCH_LINE = re.compile(
    r"^epoch +\d+/\d+ \| iter \d+ \| loss [\d.]+ \| [\d.]+ s \| train acc, test acc \| "
    r"(0\.\d{4}|1\.0000), (0\.\d{4}|1\.0000)$"
)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "ferrograd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_train_on_sample_subprocess(tmp_path):
    save = tmp_path / "m.npz"
    res = run(
        "train",
        "--dataset",
        "sample",
        "--iters",
        "300",
        "--activation",
        "relu",
        "--weight-init",
        "he",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--seed",
        "0",
        "--save",
        str(save),
        "--history",
        str(tmp_path / "h.json"),
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    epochs = [ln for ln in lines if ln.startswith("epoch")]
    assert len(epochs) == 6 and all(EPOCH_LINE.match(ln) for ln in epochs), lines
    final = float(re.search(r"test acc (\d\.\d+) after 300 iterations", res.stdout).group(1))
    assert final > 0.85
    assert save.exists()
    # --load with --iters 0 only evaluates, and gives the same accuracy
    res2 = run(
        "train",
        "--dataset",
        "sample",
        "--activation",
        "relu",
        "--load",
        str(save),
        "--iters",
        "0",
        "--quiet",
    )
    assert res2.returncode == 0, res2.stderr
    assert res2.stdout.strip() == f"test acc {final:.4f}"


def test_main_in_process_softmax(tmp_path, capsys):
    code = main(
        [
            "train",
            "--net",
            "softmax",
            "--dataset",
            "sample",
            "--epochs",
            "2",
            "--seed",
            "1",
            "--lr",
            "0.5",
            "--plot",
            str(tmp_path / "acc.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("softmax 784-10 | sgd lr 0.5 | batch 100")
    assert float(re.search(r"test acc (\d\.\d+)", out).group(1)) > 0.85
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multi_layer_and_quiet(capsys):
    code = main(
        [
            "train",
            "--net",
            "multi-layer",
            "--hidden",
            "40,30",
            "--activation",
            "relu",
            "--optimizer",
            "momentum",
            "--lr",
            "0.05",
            "--dataset",
            "sample",
            "--iters",
            "100",
            "--seed",
            "0",
            "--quiet",
            "--dtype",
            "float64",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1 and out[0].startswith("test acc 0.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--optimizer", "adamw"], "argument --optimizer: invalid choice: 'adamw'"),
        (["train", "--lr", "-1"], "argument --lr: must be a positive number"),
        (["train", "--hidden", "50,x"], "argument --hidden: expected sizes like 50"),
        (["train", "--iters", "5", "--epochs", "2"], "not allowed with argument"),
        (["train", "--data-dir", "/nonexistent/mnist"], "--data-dir: no such folder"),
        (["train", "--load", "/nonexistent/m.npz", "--dataset", "sample"], "--load: no such file"),
        (["train", "--save", "/nonexistent/dir/m.npz"], "--save: directory /nonexistent/dir"),
        (["train", "--hidden", "10,10", "--dataset", "sample"], "two-layer net has one hidden"),
        (["train", "--weight-decay", "0.1"], "--weight-decay applies to --net multi-layer"),
        (["train", "--weight-decay", "nan"], "argument --weight-decay: must be >= 0"),
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_flags_one_line_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        code = main(args)
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ferrograd: error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)


def test_load_mismatch_is_one_line(tmp_path, capsys):
    from ferrograd.trainer import save_params

    save_params(build_network("two-layer", [20]), tmp_path / "m.npz")
    code = main(["train", "--dataset", "sample", "--load", str(tmp_path / "m.npz"), "--iters", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("ferrograd: error: --load:") and "W1" in err


def test_corrupt_data_dir_is_one_line(tmp_path, capsys):
    from ferrograd.datasets import MNIST

    for spec in MNIST.files:
        (tmp_path / f"{spec.name}.gz").write_bytes(b"not gzip at all")
    code = main(["train", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("ferrograd: error: ") and "wrong magic number" in err


def test_falls_back_to_sample_when_mnist_is_unavailable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FERROGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # a closed local port: the download fails at once, no outside address is contacted
    monkeypatch.setenv("FERROGRAD_MNIST_MIRRORS", "http://127.0.0.1:9/")
    code = main(["train", "--iters", "20", "--seed", "0"])
    captured = capsys.readouterr()
    assert code == 0
    assert "training on the MNIST sample shipped with ferrograd" in captured.err
    assert "MNIST sample: 5000 train / 1000 test" in captured.out


def test_main_job_without_data_fits_a_screen(tmp_path, monkeypatch, capsys):
    """`ferrograd train` with no MNIST and no network: the sample, 200 epochs, ~a screenful."""
    monkeypatch.delenv("FERROGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FERROGRAD_MNIST_MIRRORS", "http://127.0.0.1:9/")
    code = main(["train", "--seed", "1"])
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    assert code == 0
    # why: the reason of the failed download, whole; what: the sample and its size
    assert len(err) == 2 and "could not be downloaded (http://127.0.0.1:9/" in err[0], err
    assert err[0].endswith(").") and "5,000 train / 1,000 test" in err[1]
    assert out[0].endswith("| MNIST sample: 5000 train / 1000 test")
    assert out[1] == "200 epochs: one line every 20 epochs and the last (--log-every)"
    epochs = [ln for ln in out if ln.startswith("epoch")]
    assert [ln.split()[1] for ln in epochs] == [f"{e}/200" for e in range(20, 201, 20)]
    assert all(EPOCH_LINE.match(ln) for ln in epochs)
    assert re.match(r"test acc 0\.9\d{3} after 10000 iterations \(200 epochs, ", out[-1]), out
    assert len(out) + len(err) <= 24


def test_log_every(capsys):
    code = main(["train", "--dataset", "sample", "--iters", "350", "--log-every", "3"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [ln.split()[1] for ln in out if ln.startswith("epoch")] == ["3/7", "6/7", "7/7"]


def test_version(capsys):
    from ferrograd import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ferrograd {__version__}"


def _options(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for option, help_text in _options(sub):
                    yield f"{name} {option}", help_text
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_help():
    from ferrograd.cli import make_parser

    options = dict(_options(make_parser()))
    assert len(options) > 40
    assert not [name for name, text in options.items() if not text], options


def test_cli_reference_lists_every_option():
    from pathlib import Path

    from ferrograd.cli import make_parser

    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    flags = {name.split()[-1].split("/")[-1] for name in dict(_options(make_parser()))}
    assert not [flag for flag in sorted(flags) if f"`{flag}" not in page]


@pytest.mark.parametrize(
    ("args", "module", "extra"),
    [
        (["--plot", "acc.png"], "matplotlib", "plot"),
        (["--plot-errors", "err.png"], "matplotlib", "plot"),
        (["--progress"], "tqdm", "progress"),
    ],
)
def test_missing_extra_fails_before_work(tmp_path, monkeypatch, capsys, args, module, extra):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--dataset", "sample", *args])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""  # nothing trained, nothing loaded
    assert captured.err == (
        f"ferrograd: error: {args[0]} needs {module}, which is not installed: "
        f"pip install 'ferrograd[{extra}]'\n"
    )


def test_exit_codes_subprocess(tmp_path):
    assert run("train", "--dataset", "sample", "--iters", "1", "--quiet").returncode == 0
    usage = run("train", "--lr", "zero")
    assert usage.returncode == 2 and usage.stderr.count("\n") <= 3  # argparse usage + error
    for name in MNIST_FILES:  # all four present, none readable
        (tmp_path / name).write_bytes(b"\0" * 16)
    broken = run("train", "--data-dir", str(tmp_path))
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1, broken.stderr
    assert "Traceback" not in broken.stderr


@pytest.mark.skipif(os.name != "posix", reason="pipes and SIGPIPE")
def test_quiet_on_broken_pipe():
    """`ferrograd train | head -1`: the run stops at the next line, with nothing on stderr."""
    with subprocess.Popen(
        [sys.executable, "-m", "ferrograd", "train", "--dataset", "sample", "--iters", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            assert "MNIST sample" in proc.stdout.readline()
            proc.stdout.close()  # like `head -1` exiting
            err = proc.stderr.read()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert err == "" and proc.returncode == 1


def test_build_network_weight_init():
    he = build_network("two-layer", [100], activation="relu", weight_init="he", seed=0)
    std1, std2 = he.params["W1"].std(), he.params["W2"].std()
    assert std1 == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert std2 == pytest.approx(np.sqrt(2 / 100), rel=0.1)
    book = build_network("two-layer", [50], seed=0)
    assert book.params["W1"].std() == pytest.approx(0.01, rel=0.02)
    soft = build_network("softmax", [], weight_init=0.0)
    assert not soft.params["W"].any()


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        ([], ["W1", "b1", "W2", "b2"]),
        (["--net", "multi-layer", "--activation", "relu"], ["W1", "b1", "W2", "b2", "W3", "b3"]),
        (["--net", "multi-layer", "--activation", "sigmoid"], ["W1", "W3", "b3"]),
    ],
)
def test_gradcheck_command(capsys, args, keys):
    code = main(["gradcheck", "--seed", "0", *args])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out  # exit 1 when any parameter disagrees
    rows = {ln.split()[0]: ln.split()[-1] for ln in out[2:]}
    assert all(rows[k] == "yes" for k in keys)


def test_search_command(tmp_path, capsys):
    out_csv = tmp_path / "rank.csv"
    code = main(
        [
            "search",
            "--dataset",
            "sample",
            "--trials",
            "3",
            "--epochs",
            "2",
            "--train-size",
            "300",
            "--hidden",
            "20",
            "--processes",
            "1",
            "--seed",
            "0",
            "--output",
            str(out_csv),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("rank | val acc")
    rows = out_csv.read_text().splitlines()
    assert rows[0] == "rank,index,lr,weight_decay,val_acc,train_acc,seconds" and len(rows) == 4


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
@pytest.mark.parametrize(
    ("net_args", "header", "keys", "path"),
    [
        (
            ["--net", "softmax", "--gradient", "numerical"],
            "| numerical | float64 |",
            ["W", "b"],
            "Python loop",
        ),
        (
            ["--net", "two-layer"],
            "| backprop | float32 |",
            ["W1", "W2", "b1", "b2"],
            "fused native epochs",
        ),
    ],
)
def test_ctrl_c_saves_and_exits_130(tmp_path, net_args, header, keys, path):
    if "two-layer" in net_args:
        pytest.importorskip("ferrograd.fused")
    save = tmp_path / "m.npz"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferrograd",
            "train",
            "--dataset",
            "sample",
            "--iters",
            "100000000",
            *net_args,
            "--save",
            str(save),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until training has started (the header line is printed first)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert header in first
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "[interrupted]" in out and path in out and "Traceback" not in err
    saved = load_checkpoint(save)  # the model, its optimizer and the steps really applied
    assert sorted(saved.model.params) == keys
    printed = int(re.search(r"after (\d+) iterations", out).group(1))
    assert saved.optimizer is not None and saved.iterations == printed


def test_fashion_mnist_unavailable_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FERROGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FERROGRAD_FASHION_MNIST_MIRRORS", "http://127.0.0.1:9/")
    from dataclasses import replace

    from ferrograd import datasets

    # without the Debian folder, even where dataset-fashion-mnist is installed
    fm = replace(datasets.FASHION_MNIST, system_dirs=())
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", fm)
    code = main(["train", "--dataset", "fashion-mnist", "--iters", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("ferrograd: error: could not download Fashion-MNIST file")


@pytest.mark.slow
def test_book_default_run_on_full_mnist(mnist_dir, capsys):
    """`ferrograd train` with the book's defaults reaches >= 94 % test accuracy."""
    code = main(["train", "--data-dir", str(mnist_dir), "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].endswith("| backprop | float32 | MNIST: 60000 train / 10000 test")
    assert sum(ln.startswith("epoch") for ln in out.splitlines()) == 17
    assert float(re.search(r"test acc (\d\.\d+) after 10000 iterations", out).group(1)) >= 0.94


def test_train_conv_net_on_sample(capsys, tmp_path):
    """SimpleConvNet (ch. 7) through `ferrograd train --net conv`: 150 Adam steps on the
    shipped sample learn well beyond chance (10 %)."""
    save = tmp_path / "conv.npz"
    code = main(
        [
            "train",
            "--net",
            "conv",
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--dataset",
            "sample",
            "--iters",
            "150",
            "--seed",
            "0",
            "--dtype",
            "float32",
            "--save",
            str(save),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("conv conv30x5x5-pool-100-10 relu | adam lr 0.001")
    assert float(re.search(r"test acc (\d\.\d+)", out).group(1)) > 0.7
    saved = load_checkpoint(save)
    assert type(saved.model).__name__ == "SimpleConvNet" and saved.iterations == 150
    assert saved.model.params["W1"].shape == (30, 1, 5, 5)
    assert saved.model.params["W2"].shape == (4320, 100)


def test_build_deep_conv_net_and_its_errors():
    net = build_network("deep-conv", [50], weight_init="he", seed=0, dtype=np.float32)
    assert net.params["W7"].shape == (1024, 50) and net.params["W1"].dtype == np.float32
    x = np.random.default_rng(0).random((3, 784)).astype(np.float32)
    assert net.predict(x).shape == (3, 10)
    with pytest.raises(CliError, match="He initial weights"):
        build_network("deep-conv", [50], weight_init=0.01)
    with pytest.raises(CliError, match="one hidden layer"):
        build_network("conv", [100, 10])


# ----------------------------------------------------------------- --save / --load: resume


@pytest.mark.parametrize(
    "net_args",
    [
        ["--optimizer", "adam", "--dtype", "float32"],  # fused epochs, Adam's state resumed
        ["--net", "multi-layer", "--hidden", "30,20", "--activation", "relu",
         "--optimizer", "momentum", "--weight-decay", "0.01", "--dtype", "float64"],
        ["--optimizer", "sgd", "--batch-size", "70"],  # epochs of 71 iterations: not whole
    ],
)  # fmt: skip
def test_resume_continues_bit_for_bit(tmp_path, capsys, net_args):
    """train 2N == train N, --save, then --load (no network options) and N more."""
    common = ["train", "--dataset", "sample", "--seed", "7", "--quiet"]
    assert main([*common, *net_args, "--iters", "142", "--save", str(tmp_path / "full")]) == 0
    assert main([*common, *net_args, "--iters", "71", "--save", str(tmp_path / "half")]) == 0
    capsys.readouterr()
    code = main(["train", "--dataset", "sample", "--load", str(tmp_path / "half.npz"),
                 "--iters", "71", "--save", str(tmp_path / "resumed")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith(f"resumed from {tmp_path / 'half.npz'} after 71 iter")
    assert "state restored" in out.splitlines()[0]
    assert "| iter 142 |" in out  # the epoch lines count on from the saved run
    full = load_checkpoint(tmp_path / "full.npz")
    resumed = load_checkpoint(tmp_path / "resumed.npz")
    assert resumed.iterations == full.iterations == 142
    assert getattr(resumed.optimizer, "iter", 0) == getattr(full.optimizer, "iter", 0)
    half = load_checkpoint(tmp_path / "half.npz").model.params
    for key, value in full.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[key], value, err_msg=key)
        assert not np.array_equal(half[key], value) or key.startswith("b")
    for name in full.optimizer.state_names:
        for key, value in getattr(full.optimizer, name).items():
            np.testing.assert_array_equal(getattr(resumed.optimizer, name)[key], value)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hidden", "40"], "was saved with --hidden 50, not 40; leave --hidden out"),
        (["--net", "multi-layer"], "was saved with --net two-layer, not multi-layer"),
        (["--activation", "relu"], "was saved with --activation sigmoid, not relu"),
        (["--dtype", "float64"], "was saved with --dtype float32, not float64"),
    ],
)
def test_load_refuses_options_that_contradict_the_file(tmp_path, capsys, flags, message):
    assert main(["train", "--dataset", "sample", "--iters", "0", "--quiet",
                 "--save", str(tmp_path / "m")]) == 0  # fmt: skip
    capsys.readouterr()
    code = main(["train", "--dataset", "sample", "--load", str(tmp_path / "m.npz"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_load_with_another_optimizer_says_the_state_is_not_used(tmp_path, capsys):
    common = ["train", "--dataset", "sample", "--iters", "50", "--seed", "1"]
    assert main([*common, "--optimizer", "adam", "--quiet", "--save", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    code = main([*common, "--load", str(tmp_path / "a.npz"), "--optimizer", "sgd", "--lr", "0.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "a new sgd optimizer (the saved adam state is not used)" in out.splitlines()[0]
    assert "| sgd lr 0.1 |" in out.splitlines()[1]


def test_load_a_save_params_file_into_the_net_the_options_describe(tmp_path, capsys):
    from ferrograd.trainer import save_params

    net = build_network("two-layer", [20], seed=0)
    save_params(net, tmp_path / "w.npz")
    code = main(["train", "--dataset", "sample", "--hidden", "20", "--dtype", "float64",
                 "--load", str(tmp_path / "w.npz"), "--iters", "0"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0] == f"weights from {tmp_path / 'w.npz'}"
    from ferrograd import load_mnist_sample

    (_, _), (x_test, t_test) = load_mnist_sample()
    assert out.splitlines()[-1] == f"test acc {net.accuracy(x_test, t_test):.4f}"
