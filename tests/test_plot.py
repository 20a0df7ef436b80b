"""PNG figures of a History and of misclassified digits."""

from __future__ import annotations

import builtins
import struct

import numpy as np
import pytest
from ferrograd.nets import SoftmaxRegression
from ferrograd.trainer import History

pytest.importorskip("matplotlib")

from ferrograd import plot


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def history() -> History:
    rng = np.random.default_rng(0)
    return History(
        train_loss=list(np.linspace(2.3, 0.2, 170) + 0.05 * rng.random(170)),
        train_acc=list(np.linspace(0.8, 0.95, 17)),
        test_acc=list(np.linspace(0.79, 0.945, 17)),
        epoch_seconds=[0.1] * 17,
        epoch_iterations=[10] * 16 + [5],
        iterations=165,
    )


def test_accuracy_loss_and_history_pngs(tmp_path, history):
    for func, name, size in [
        (plot.plot_accuracy, "acc.png", (480, 320)),
        (plot.plot_loss, "loss.png", (480, 320)),
        (plot.plot_history, "both.png", (800, 304)),
    ]:
        path = func(history, tmp_path / name, title="t")
        assert path == tmp_path / name
        assert png_size(path) == size
        assert path.stat().st_size < 100_000


def test_partial_last_epoch_x_values(history):
    x = plot._epochs(history)
    assert x[0] == 1.0 and x[15] == 16.0 and x[16] == 16.5


def test_misclassified_grid(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((50, 784))
    t = rng.integers(0, 10, 50)
    net = SoftmaxRegression(seed=0, dtype=np.float64)
    wrong = int((np.argmax(net.predict(x), axis=1) != t).sum())
    path = plot.plot_misclassified(
        net, x.reshape(50, 1, 28, 28), np.eye(10)[t], tmp_path / "e.png", max_images=12
    )
    w, h = png_size(path)
    assert wrong > 12 and (w, h) == (576, 2 * 108)


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path, history):
    real_import = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(ImportError, match=r"pip install 'ferrograd\[plot\]'"):
        plot.plot_accuracy(history, tmp_path / "a.png")


def test_missing_directory(tmp_path, history):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot.plot_accuracy(history, tmp_path / "no" / "a.png")
