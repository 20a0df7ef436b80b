"""Networks: TwoLayerNet and MultiLayerNet against the NumPy oracle, dtypes, labels, errors,
and a short training run on real MNIST."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from ferrograd.nets import MultiLayerNet, SimpleNet, TwoLayerNet
from ferrograd.optimizers import SGD

ACTIVATIONS = ["sigmoid", "relu"]


def small_batch(rng, n=6, d=8, k=4):
    x = rng.random((n, d))
    t = rng.integers(0, k, n)
    return x, t, np.eye(k)[t]


# --- TwoLayerNet ----------------------------------------------------------------------


def test_two_layer_init_is_seeded_and_typed():
    a = TwoLayerNet(784, 50, 10, seed=3)
    b = TwoLayerNet(784, 50, 10, seed=3)
    c = TwoLayerNet(784, 50, 10, seed=4)
    assert {k: v.shape for k, v in a.params.items()} == {
        "W1": (784, 50),
        "b1": (50,),
        "W2": (50, 10),
        "b2": (10,),
    }
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert not np.array_equal(a.params["W1"], c.params["W1"])
    assert 0.009 < a.params["W1"].std() < 0.011  # weight_init_std = 0.01
    assert not a.params["b1"].any() and not a.params["b2"].any()
    f32 = TwoLayerNet(784, 50, 10, seed=3, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in f32.params.values())
    np.testing.assert_allclose(f32.params["W1"], a.params["W1"], rtol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_two_layer_matches_reference(activation, rng):
    net = TwoLayerNet(8, 5, 4, weight_init_std=0.5, activation=activation, seed=1)
    x, t, t_one_hot = small_batch(rng)
    net.params["b1"][:] = rng.standard_normal(5)  # non-zero biases, updated in place
    y = net.predict(x)
    act = ref.sigmoid if activation == "sigmoid" else ref.relu
    p = net.params
    expected = ref.softmax(act(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-14)
    loss = ref.two_layer_loss(p, x, t, activation)
    assert net.loss(x, t) == pytest.approx(loss, rel=1e-12)
    assert net.loss(x, t_one_hot) == pytest.approx(loss, rel=1e-12)
    expected_grads = ref.two_layer_backprop(p, x, t, activation)
    for grads in (net.gradient(x, t), net.gradient(x, t_one_hot)):
        for key in p:
            np.testing.assert_allclose(grads[key], expected_grads[key], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_two_layer_gradient_layers_equals_gradient(activation, rng):
    net = TwoLayerNet(8, 5, 4, weight_init_std=0.5, activation=activation, seed=2)
    x, t, t_one_hot = small_batch(rng)
    fused = net.gradient(x, t)
    for target in (t, t_one_hot):
        layered = net.gradient_layers(x, target)
        for key in fused:
            np.testing.assert_allclose(layered[key], fused[key], rtol=1e-12, atol=1e-12)
    names = list(net.layers)
    assert names == ["Affine1", "Sigmoid1" if activation == "sigmoid" else "Relu1", "Affine2"]


def test_two_layer_layers_share_params_with_optimizer(rng):
    net = TwoLayerNet(8, 5, 4, seed=0)
    layers = net.layers
    assert layers["Affine1"].W is net.params["W1"] and layers["Affine2"].b is net.params["b2"]
    x, t, _ = small_batch(rng)
    before = net.loss(x, t)
    SGD(lr=0.5).update(net.params, net.gradient_layers(x, t))
    assert net.layers is layers  # arrays updated in place, no rebuild needed
    assert net.loss(x, t) < before
    net.params["W1"] = net.params["W1"].copy()  # replacing an array rebuilds the view
    assert net.layers["Affine1"].W is net.params["W1"]


def test_two_layer_accuracy_labels_and_one_hot(rng):
    net = TwoLayerNet(8, 5, 4, weight_init_std=1.0, seed=5)
    x, t, t_one_hot = small_batch(rng, n=40)
    expected = float(np.mean(np.argmax(net.predict(x), axis=1) == t))
    assert net.accuracy(x, t) == expected
    assert net.accuracy(x, t_one_hot) == expected
    assert net.accuracy(x, np.argmax(net.predict(x), axis=1)) == 1.0


def test_two_layer_one_sample(rng):
    net = TwoLayerNet(8, 5, 4, weight_init_std=1.0, seed=5)
    x = rng.random(8)
    y = net.predict(x)
    assert y.shape == (4,)
    np.testing.assert_allclose(y, net.predict(x[None, :])[0], rtol=1e-15)
    assert net.loss(x, 2) == pytest.approx(-np.log(y[2] + 1e-7), rel=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_two_layer_float32_agrees_with_float64(activation, rng):
    n64 = TwoLayerNet(8, 5, 4, weight_init_std=0.5, activation=activation, seed=7)
    n32 = TwoLayerNet(8, 5, 4, weight_init_std=0.5, activation=activation, seed=7, dtype=np.float32)
    x, t, _ = small_batch(rng)
    y32 = n32.predict(x)  # float64 x is converted to the net's dtype
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, n64.predict(x), rtol=1e-5, atol=1e-6)
    assert n32.loss(x, t) == pytest.approx(n64.loss(x, t), rel=1e-5)
    g32, g64 = n32.gradient(x, t), n64.gradient(x, t)
    ng32 = n32.numerical_gradient(x, t)
    for key in g64:
        assert g32[key].dtype == np.float32 and ng32[key].dtype == np.float32
        np.testing.assert_allclose(g32[key], g64[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ng32[key], g64[key], rtol=1e-4, atol=1e-6)


def test_two_layer_errors():
    net = TwoLayerNet(8, 5, 4, seed=0)
    x = np.ones((3, 8))
    with pytest.raises(
        ValueError, match=r"TwoLayerNet.predict: x has shape \(3, 7\); expected \(n, 8\)"
    ):
        net.predict(np.ones((3, 7)))
    with pytest.raises(ValueError, match=r"TwoLayerNet.loss: t has shape \(2,\); expected 3"):
        net.loss(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="label 4 is out of range for 4 classes"):
        net.gradient(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"one-hot rows of shape \(3, 4\)"):
        net.loss(x, np.ones((3, 5)))
    with pytest.raises(TypeError, match=r"TwoLayerNet\.predict: x has dtype complex128"):
        net.predict(np.ones((3, 8), dtype=complex))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        TwoLayerNet(8, 5, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="activation must be 'sigmoid' or 'relu'"):
        TwoLayerNet(8, 5, 4, activation="tanh")
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        TwoLayerNet(8, 0, 4)


# --- SimpleNet ------------------------------------------------------------------------


def test_simple_net_seeded_and_gradients_agree(rng):
    a, b = SimpleNet(seed=1), SimpleNet(seed=1)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.W.shape == (2, 3)
    x, t = rng.random((5, 2)), rng.integers(0, 3, 5)
    np.testing.assert_allclose(a.numerical_gradient(x, t), a.gradient(x, t), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match=r"SimpleNet.loss: x has shape \(5, 3\)"):
        a.loss(np.ones((5, 3)), t)


# --- MultiLayerNet --------------------------------------------------------------------


def test_multi_layer_structure_and_init():
    net = MultiLayerNet(784, [100, 50], 10, use_batchnorm=True, use_dropout=True, seed=0)
    assert list(net.layers) == [
        "Affine1",
        "BatchNorm1",
        "Activation_function1",
        "Dropout1",
        "Affine2",
        "BatchNorm2",
        "Activation_function2",
        "Dropout2",
        "Affine3",
    ]
    assert sorted(net.params) == sorted(
        ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1", "gamma2", "beta2"]
    )
    # He initialization: std √(2 / fan_in)
    assert net.params["W1"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert net.params["W2"].std() == pytest.approx(np.sqrt(2 / 100), rel=0.05)
    xavier = MultiLayerNet(784, [100], 10, activation="sigmoid", weight_init_std="xavier", seed=0)
    assert xavier.params["W1"].std() == pytest.approx(np.sqrt(1 / 784), rel=0.02)
    fixed = MultiLayerNet(784, [100], 10, weight_init_std=0.01, seed=0)
    assert fixed.params["W1"].std() == pytest.approx(0.01, rel=0.02)
    assert net.layers["Affine2"].W is net.params["W2"]
    assert net.layers["BatchNorm1"].gamma is net.params["gamma1"]


def test_multi_layer_matches_two_layer(rng):
    """One hidden layer without extras is the book's two-layer network (predict = logits)."""
    m = MultiLayerNet(8, [5], 4, activation="sigmoid", weight_init_std=0.5, seed=3)
    two = TwoLayerNet(8, 5, 4, seed=0)
    for key in two.params:
        two.params[key][...] = m.params[key]
    x, t, _ = small_batch(rng)
    np.testing.assert_allclose(ref.softmax(m.predict(x)), two.predict(x), rtol=1e-12)
    assert m.loss(x, t) == pytest.approx(two.loss(x, t), rel=1e-12)
    gm, g2 = m.gradient(x, t), two.gradient(x, t)
    for key in g2:
        np.testing.assert_allclose(gm[key], g2[key], rtol=1e-10, atol=1e-15)


def test_multi_layer_weight_decay(rng):
    x, t, _ = small_batch(rng)
    plain = MultiLayerNet(8, [6, 5], 4, seed=1)
    decayed = MultiLayerNet(8, [6, 5], 4, weight_decay_lambda=0.1, seed=1)
    penalty = 0.5 * 0.1 * sum(np.sum(plain.params[f"W{i}"] ** 2) for i in (1, 2, 3))
    assert decayed.loss(x, t) == pytest.approx(plain.loss(x, t) + penalty, rel=1e-12)
    gp, gd = plain.gradient(x, t), decayed.gradient(x, t)
    np.testing.assert_allclose(gd["W2"], gp["W2"] + 0.1 * plain.params["W2"], rtol=1e-12)
    np.testing.assert_allclose(gd["b2"], gp["b2"], rtol=1e-12)


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_multi_layer_gradient_is_the_books_bits_without_the_penalty(rng, monkeypatch, decay):
    """W's gradient is the book's dW + λ·W bit for bit; the forward pass of the gradient
    computes no weight-decay term (its value would be thrown away)."""
    x, t, _ = small_batch(rng)
    net = MultiLayerNet(8, [6, 5], 4, weight_decay_lambda=decay, seed=1)

    def no_penalty(*args, **kwargs):
        raise AssertionError("penalty computed")

    monkeypatch.setattr(np, "einsum", no_penalty)  # λ = 0's term (see the loss test below)
    grads = net.gradient(x, t)
    monkeypatch.undo()
    for i in (1, 2, 3):
        book = net.layers[f"Affine{i}"].dW + decay * net.params[f"W{i}"]
        assert np.array_equal(grads[f"W{i}"], book)


def test_multi_layer_loss_without_decay_calls_no_blas(rng, monkeypatch):
    """λ = 0 adds 0 (NaN when a W is not finite, as the book's 0·Σw²) without NumPy's BLAS:
    a BLAS call wakes OpenBLAS's threads, which then spin on the kernels' cores."""
    x, t, _ = small_batch(rng)
    net = MultiLayerNet(8, [6, 5], 4, seed=1)
    want = net.last_layer.forward(net.predict(x), t)

    def no_blas(*args, **kwargs):
        raise AssertionError("BLAS called")

    for name in ("dot", "vdot", "inner", "matmul", "tensordot"):
        monkeypatch.setattr(np, name, no_blas)
    assert net.loss(x, t) == want
    net.params["W2"][0, 0] = np.inf
    assert np.isnan(net.loss(x, t))
    # Finite weights whose Σw² overflows: the book's 0·inf is NaN too; below that, 0.
    net.params["W2"][0, 0] = 1e200
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(net.loss(x, t))
    net.params["W2"][0, 0] = 1e150
    assert np.isfinite(net.loss(x, t))


def test_multi_layer_labels_one_hot_and_modes(rng):
    net = MultiLayerNet(8, [6, 5], 4, use_batchnorm=True, use_dropout=True, seed=2)
    x, t, t_one_hot = small_batch(rng, n=30)
    assert net.loss(x, t) == pytest.approx(net.loss(x, t_one_hot), rel=1e-14)
    assert net.accuracy(x, t) == net.accuracy(x, t_one_hot)
    # inference is deterministic; training mode draws new dropout masks
    np.testing.assert_array_equal(net.predict(x), net.predict(x))
    assert not np.array_equal(net.predict(x, train_flg=True), net.predict(x, train_flg=True))
    # the same seed gives the same weights and the same dropout masks
    kw = {"use_batchnorm": True, "use_dropout": True, "seed": 2}
    a, b = MultiLayerNet(8, [6, 5], 4, **kw), MultiLayerNet(8, [6, 5], 4, **kw)
    np.testing.assert_array_equal(a.predict(x, train_flg=True), b.predict(x, train_flg=True))


@pytest.mark.parametrize("use_batchnorm", [False, True])
def test_multi_layer_float32_agrees_with_float64(use_batchnorm, rng):
    kw = {"use_batchnorm": use_batchnorm, "seed": 4}
    n64 = MultiLayerNet(8, [6, 5], 4, **kw)
    n32 = MultiLayerNet(8, [6, 5], 4, dtype=np.float32, **kw)
    x, t, _ = small_batch(rng, n=10)
    assert n32.predict(x).dtype == np.float32
    np.testing.assert_allclose(n32.predict(x), n64.predict(x), rtol=1e-5, atol=1e-5)
    assert n32.loss(x, t) == pytest.approx(n64.loss(x, t), rel=1e-5)
    g32, g64 = n32.gradient(x, t), n64.gradient(x, t)
    num32 = n32.numerical_gradient(x, t)
    for key in g64:
        assert g32[key].dtype == np.float32 and num32[key].dtype == np.float32
        np.testing.assert_allclose(g32[key], g64[key], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(num32[key], g64[key], rtol=1e-4, atol=1e-5)


def test_multi_layer_errors():
    with pytest.raises(ValueError, match="activation must be 'relu' or 'sigmoid'"):
        MultiLayerNet(8, [5], 4, activation="tanh")
    with pytest.raises(ValueError, match="weight_init_std must be 'relu', 'he'"):
        MultiLayerNet(8, [5], 4, weight_init_std="lecun")
    with pytest.raises(ValueError, match=r"hidden_size_list\[1\] must be a positive int"):
        MultiLayerNet(8, [5, -1], 4)
    net = MultiLayerNet(8, [5], 4, seed=0)
    with pytest.raises(ValueError, match=r"MultiLayerNet.loss: x has shape \(2, 9\)"):
        net.loss(np.ones((2, 9)), np.array([0, 1]))
    with pytest.raises(ValueError, match="label 7 is out of range for 4 classes"):
        net.gradient(np.ones((2, 8)), np.array([0, 7]))


# --- real MNIST -----------------------------------------------------------------------


def read_idx(path: Path, magic: int, count: int, item: tuple[int, ...]) -> np.ndarray:
    """The first ``count`` records of a gzip IDX file (header checked)."""
    with gzip.open(path, "rb") as f:
        header = f.read(4 * (2 + len(item)))
        fields = np.frombuffer(header, dtype=">u4")
        assert fields[0] == magic and tuple(fields[2:]) == item, f"{path}: bad IDX header"
        data = f.read(count * int(np.prod(item)))
    return np.frombuffer(data, dtype=np.uint8).reshape((count, *item))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_layer_learns_real_mnist(mnist_dir, dtype):
    n_train, n_test = 10000, 1000
    x_train = read_idx(mnist_dir / "train-images-idx3-ubyte.gz", 2051, n_train, (28, 28))
    t_train = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz", 2049, n_train, ())
    x_test = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", 2051, n_test, (28, 28))
    t_test = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", 2049, n_test, ())
    x_train = x_train.reshape(n_train, 784).astype(dtype) / 255
    x_test = x_test.reshape(n_test, 784).astype(dtype) / 255
    net = TwoLayerNet(784, 50, 10, seed=0, dtype=dtype)
    optimizer = SGD(lr=0.5)
    rng = np.random.default_rng(0)
    assert net.accuracy(x_test, t_test) < 0.2  # chance level before training
    for _ in range(300):
        batch = rng.choice(n_train, 100)
        optimizer.update(net.params, net.gradient(x_train[batch], t_train[batch]))
    assert net.accuracy(x_test, t_test) > 0.8
    assert net.params["W1"].dtype == dtype


# --- what every net offers: repr, summary, evaluate, predict_classes --------------------


def test_reprs_name_the_architecture():
    from ferrograd.nets import SoftmaxRegression

    assert repr(TwoLayerNet(784, 50, 10, seed=0)) == "TwoLayerNet(784-50-10, sigmoid, float64)"
    net = MultiLayerNet(784, [100, 50], 10, weight_decay_lambda=0.1, use_batchnorm=True, seed=0)
    assert repr(net) == "MultiLayerNet(784-100-50-10, relu, weight decay 0.1, batch norm, float64)"
    assert repr(SoftmaxRegression(seed=0)) == "SoftmaxRegression(784-10, float32)"
    assert repr(SimpleNet(seed=0)) == "SimpleNet(2-3, float64)"


def test_summary_lists_layers_shapes_and_parameter_counts():
    lines: list[str] = []
    net = MultiLayerNet(784, [100, 50], 10, use_batchnorm=True, use_dropout=True, seed=0)
    net.summary(print_fn=lines.append)
    text = lines[0].splitlines()
    assert text[0] == repr(net)
    rows = [line.split() for line in text[4:-2]]
    assert [(r[0], r[-2], r[-1]) for r in rows] == [
        ("Affine1", "100)", "78,500"),
        ("BatchNorm1", "100)", "200"),
        ("Activation_function1", "100)", "0"),
        ("Dropout1", "100)", "0"),
        ("Affine2", "50)", "5,050"),
        ("BatchNorm2", "50)", "100"),
        ("Activation_function2", "50)", "0"),
        ("Dropout2", "50)", "0"),
        ("Affine3", "10)", "510"),
        ("softmax", "10)", "0"),
    ]
    assert text[-1] == f"Total params: {78_500 + 200 + 5_050 + 100 + 510:,}"
    assert sum(v.size for v in net.params.values()) == 84_360
    lines.clear()
    TwoLayerNet(784, 50, 10, seed=0).summary(print_fn=lines.append)
    assert lines[0].splitlines()[-1] == "Total params: 39,760"
    assert "Sigmoid1 (Sigmoid)" in lines[0]


@pytest.mark.parametrize("n", [7, 10_003])  # one chunk, and rows spread over two
def test_evaluate_is_loss_and_accuracy(rng, n):
    from ferrograd.nets import SoftmaxRegression

    x, t = rng.random((n, 8)), rng.integers(0, 4, n)
    for net in (
        TwoLayerNet(8, 5, 4, 0.5, seed=1),
        MultiLayerNet(8, [6], 4, weight_decay_lambda=0.2, use_batchnorm=True, seed=1),
        SoftmaxRegression(8, 4, 0.5, seed=1, dtype=np.float64),
    ):
        loss, acc = net.evaluate(x, t)
        assert loss == pytest.approx(net.loss(x, t), rel=1e-12)
        assert acc == pytest.approx(net.accuracy(x, t), rel=1e-12)
        assert loss > 1.0 and (n < 1000 or 0.2 < acc < 0.3)  # random data: near chance
        classes = net.predict_classes(x)
        np.testing.assert_array_equal(classes, np.argmax(net.predict(x), axis=1))
        assert classes.dtype == np.int64 and acc == pytest.approx(np.mean(classes == t))
        assert net.evaluate(x, np.eye(4)[t]) == (loss, acc)  # one-hot targets alike
    with pytest.raises(ValueError, match="evaluate: x has shape"):
        net.evaluate(x, t[:3])


def test_to_categorical():
    from ferrograd import to_categorical

    y = to_categorical([2, 0, 1, 2], 4)
    np.testing.assert_array_equal(y, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    assert y.dtype == np.float32
    assert to_categorical(np.array([3.0, 1.0])).shape == (2, 4)  # max + 1 classes
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got values from 0 to 3"):
        to_categorical([0, 3], 3)
    with pytest.raises(TypeError, match="labels must be integers"):
        to_categorical([0.5, 1.0], 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        to_categorical([0, 1], 0)
