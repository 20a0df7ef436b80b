"""Smoke test of an installed ferrograd wheel; run it with the virtualenv's Python,
from a folder outside the checkout, so that the installed package is the one imported.

    /path/to/venv/bin/python scripts/smoke_wheel.py
    PYTHONPATH=DIR python scripts/smoke_wheel.py --from DIR   # a wheel unpacked in DIR
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

import ferrograd as fg
import numpy as np
from ferrograd import _core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from",
        dest="where",
        type=Path,
        help="folder the package must come from (default: the interpreter's site-packages)",
    )
    where = parser.parse_args().where
    site = (where or Path(sysconfig.get_paths()["platlib"])).resolve()
    module = Path(_core.__file__).resolve()
    assert module.is_relative_to(site), f"{module} is not the installed module (in {site})"
    assert module.name.endswith(".abi3.so"), module.name

    y = _core.softmax(np.array([[0.3, 2.9, 4.0]]))
    assert abs(y.sum() - 1) < 1e-12 and abs(y[0, 2] - 0.7365969137693786) < 1e-12, y

    (x, t), (xt, tt) = fg.load_mnist(dataset="sample")
    assert x.shape == (5000, 784) and xt.shape == (1000, 784), (x.shape, xt.shape)
    net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype="float32")
    history = fg.Trainer(
        net, x, t, xt, tt, epochs=4, optimizer_param={"lr": 1.0}, seed=0, verbose=False
    ).train()
    assert history.fused and history.test_acc[-1] > 0.8, history.test_acc

    train = ["train", "--dataset", "sample", "--iters", "100", "--seed", "0", "--quiet"]
    if where is None:  # the console script pip installed
        cli = str(Path(sys.executable).with_name("ferrograd"))
        version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True)
        out = subprocess.run([cli, *train], capture_output=True, text=True, check=True).stdout
        assert version.stdout.strip() == f"ferrograd {fg.__version__}", version.stdout
    else:  # an unpacked wheel, perhaps under an emulator that cannot start a child
        from ferrograd.cli import main as cli_main

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert cli_main(train) == 0
        out = buffer.getvalue()
    assert out.startswith("test acc 0."), out
    print(
        f"wheel ok on Python {sys.version.split()[0]} ({platform.machine()}): "
        f"ferrograd {fg.__version__}, "
        f"NumPy {np.__version__}, {module.name}, sample test acc {history.test_acc[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
