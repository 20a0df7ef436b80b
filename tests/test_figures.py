"""ferrograd.figures: each figure is a Figure with the book's numbers in its artists."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from ferrograd import figures
from ferrograd.cli import main as cli_main
from matplotlib.figure import Figure


def test_activation_functions_into_given_axes():
    fig = Figure()
    ax = fig.subplots()
    assert figures.activation_functions(ax=ax) is fig
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    x = lines["sigmoid"].get_xdata()
    i = int(np.argmin(np.abs(x)))
    assert lines["sigmoid"].get_ydata()[i] == pytest.approx(0.5, abs=0.003)
    assert lines["relu"].get_ydata()[-1] == pytest.approx(4.99)
    assert set(lines["step"].get_ydata().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="names must be among"):
        figures.activation_functions(["tanh"])


def test_tangent_line_slope_and_descent_path():
    fig = figures.tangent_line()
    assert "slope 0.2000" in fig.axes[0].get_title()  # f'(5) = 0.02·5 + 0.1
    fig = figures.gradient_descent_path()
    pts = fig.axes[0].get_lines()[-1].get_xydata()
    assert pts.shape == (20, 2)
    np.testing.assert_allclose(pts[:2], [[-3, 4], [-2.4, 3.2]], atol=1e-8)  # x ← 0.8·x


def test_gradient_field_arrows_are_minus_two_x():
    q = figures.gradient_field().axes[0].collections[0]
    offsets = q.get_offsets()
    np.testing.assert_allclose(q.U, -2 * offsets[:, 0], atol=1e-6)
    np.testing.assert_allclose(q.V, -2 * offsets[:, 1], atol=1e-6)


def test_optimizer_paths_first_steps():
    fig = figures.optimizer_paths(steps=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["SGD", "Momentum", "AdaGrad", "Adam"]
    sgd = fig.axes[0].get_lines()[0].get_xydata()
    np.testing.assert_allclose(sgd[:3], [[-7, 2], [-6.335, -1.8], [-5.733175, 1.62]])


def test_weight_init_histograms_std_001_piles_at_half():
    fig = figures.weight_init_histograms("sigmoid", layers=2, n=200)
    assert len(fig.axes) == 8
    counts = [p.get_height() for p in fig.axes[2].patches]  # std 0.01, layer 1
    assert int(np.argmax(counts)) in (14, 15)  # the 30 bins of [0, 1]: the one at 0.5
    with pytest.raises(ValueError, match="activation"):
        figures.weight_init_histograms("softplus")


def test_mnist_figures_on_the_sample_are_quick():
    fig = figures.optimizer_comparison(iters=20, dataset="sample")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["SGD", "Momentum", "AdaGrad", "Adam"]
    assert all(len(ln.get_ydata()) == 20 for ln in fig.axes[0].get_lines())
    fig = figures.batch_norm_comparison(n_scales=2, epochs=2, train_size=200, dataset="sample")
    acc = fig.axes[0].get_lines()[0].get_ydata()
    assert len(acc) == 2 and all(0 <= a <= 1 for a in acc)
    fig = figures.overfitting(epochs=3, train_size=100, dataset="sample")
    assert [ax.get_title() for ax in fig.axes] == [
        "no regularization",
        "weight decay λ=0.1",
        "dropout 0.2",
    ]
    fig = figures.training_curves(epochs=1, dataset="sample")
    assert len(fig.axes) == 2


def test_figures_cli_writes_pngs(tmp_path, capsys):
    assert cli_main(["figures", "--list"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert names == list(figures.FIGURES)
    assert cli_main(["figures", "tangent_line", "gradient_field", "--out", str(tmp_path)]) == 0
    for name in ("tangent_line", "gradient_field"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert cli_main(["figures", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown figure" in capsys.readouterr().err
    new = tmp_path / "new" / "folder"
    assert cli_main(["figures", "activation_functions", "--out", str(new)]) == 0
    assert (new / "activation_functions.png").stat().st_size > 5000
    (tmp_path / "file").write_text("")
    assert cli_main(["figures", "tangent_line", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err


def test_figures_never_switch_the_backend():
    import matplotlib

    before = matplotlib.get_backend()
    figures.tangent_line()
    assert matplotlib.get_backend() == before
    assert "matplotlib.pyplot" not in sys.modules or matplotlib.get_backend() == before


def test_plot_functions_return_figures_without_a_path():
    from ferrograd import plot
    from ferrograd.trainer import History

    hist = History(
        train_loss=[2.3, 1.0, 0.5],
        train_acc=[0.5, 0.8],
        test_acc=[0.4, 0.7],
        epoch_seconds=[0.1, 0.1],
        epoch_iterations=[2, 1],
        iterations=3,
    )
    fig = plot.plot_accuracy(hist)
    assert isinstance(fig, Figure)
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), [0.4, 0.7])
    assert isinstance(plot.plot_history(hist), Figure)


def _panels(fig):
    """The image panels of a figure, in drawing order."""
    return [ax for ax in fig.axes if ax.get_images()]


def test_conv_filters_before_and_after_training():
    from ferrograd.nets import SimpleConvNet

    fig = figures.conv_filters(epochs=1, dataset="sample", train_size=300, seed=0)
    shown = np.array([ax.get_images()[0].get_array() for ax in _panels(fig)])
    assert shown.shape == (60, 5, 5)  # the 30 filters twice
    initial = SimpleConvNet(seed=0, dtype=np.float32).params["W1"][:, 0]
    np.testing.assert_array_equal(shown[:30], initial)
    moved = np.abs(shown[30:] - initial).max(axis=(1, 2))
    assert np.all(moved > 1e-4)  # three Adam steps of lr 0.001 move every filter
    titles = [sub._suptitle.get_text() for sub in fig.subfigs]
    assert titles == ["random initial weights", "after 1 epoch of training"]


def test_conv_filters_and_misclassified_from_a_params_file(tmp_path):
    from ferrograd.datasets import load_mnist
    from ferrograd.nets import SimpleConvNet

    net = SimpleConvNet(seed=7, weight_init_std=0.1)
    path = tmp_path / "params.npz"
    net.save_params(path)
    fig = figures.conv_filters(params=path)
    shown = np.array([ax.get_images()[0].get_array() for ax in _panels(fig)[30:]])
    np.testing.assert_array_equal(shown, net.params["W1"][:, 0])
    assert fig.subfigs[1]._suptitle.get_text() == f"trained ({path})"

    fig = figures.convnet_misclassified(params=path, dataset="sample", max_images=8)
    _, (xt, tt) = load_mnist(dataset="sample", flatten=False)
    pred = np.argmax(net.predict(xt), axis=1)
    wrong = np.flatnonzero(pred != tt)
    assert fig._suptitle.get_text() == f"misclassified: {len(wrong)} of {len(tt)}"
    titles = [ax.get_title() for ax in _panels(fig)]
    assert titles == [f"{tt[i]}→{pred[i]}" for i in wrong[:8]]
    with pytest.raises(ValueError, match="net must be 'simple' or 'deep'"):
        figures.convnet_misclassified(net="resnet", params=path)


def test_deep_convnet_misclassified_from_a_params_file(tmp_path):
    from ferrograd.nets import DeepConvNet

    path = tmp_path / "deep.npz"
    DeepConvNet(seed=1).save_params(path)
    fig = figures.convnet_misclassified(net="deep", params=path, dataset="sample")
    titles = [ax.get_title() for ax in _panels(fig)]
    assert len(titles) == 20  # an untrained net gets far more than 20 wrong
    assert all(a != b for a, b in (t.split("→") for t in titles))


def test_conv_figures_from_the_command_line(tmp_path):
    out = tmp_path / "new" / "figs"
    argv = ["figures", "conv_filters", "convnet_misclassified", "--quick", "--dataset", "sample"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    for name in ("conv_filters", "convnet_misclassified"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
