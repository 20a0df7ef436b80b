"""The training loop's Keras-style side: callbacks, schedules, validation, History."""

from __future__ import annotations

import numpy as np
import pytest
from ferrograd import load
from ferrograd.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    TerminateOnNaN,
    inverse_time_decay,
    step_decay,
)
from ferrograd.datasets import load_mnist_sample
from ferrograd.nets import MultiLayerNet, SoftmaxRegression, TwoLayerNet
from ferrograd.optimizers import SGD
from ferrograd.trainer import Trainer


@pytest.fixture(scope="module")
def sample():
    (x, t), (xt, tt) = load_mnist_sample(dtype=np.float64)
    return x[:1000], t[:1000], xt[:300], tt[:300]


class Recorder(Callback):
    def __init__(self):
        self.calls: list[tuple] = []
        self.params: list[dict[str, np.ndarray]] = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))
        self.params.append({k: v.copy() for k, v in self.trainer.network.params.items()})

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


@pytest.mark.parametrize("fused", [True, False])
def test_callbacks_history_and_log_line(fused, sample):
    x, t, xt, tt = sample
    rec = Recorder()
    plain: list[tuple[int, dict]] = []
    lines: list[str] = []
    net = TwoLayerNet(784, 20, 10, seed=0)
    trainer = Trainer(
        net, x, t, xt, tt, epochs=3, mini_batch_size=100, optimizer_param={"lr": 0.5},
        seed=1, use_fused=fused, log=lines.append,
        callbacks=[rec, lambda epoch, logs: plain.append((epoch, logs))],
        validation_data=(x[:200], t[:200]),
    )  # fmt: skip
    hist = trainer.train()
    assert hist.fused is fused
    kinds = [c[0] if c[0] != "epoch_begin" else f"b{c[1]}" for c in rec.calls]
    assert kinds == [
        "train_begin",
        "b0",
        "epoch_end",
        "b1",
        "epoch_end",
        "b2",
        "epoch_end",
        "train_end",
    ]
    # the epoch's loss is the mean of its 10 mini-batch losses, not the last one
    for e in range(3):
        mean = float(np.mean(hist.train_loss[10 * e : 10 * e + 10]))
        assert hist.epoch_loss[e] == mean
        assert f"loss {mean:.4f} |" in lines[e]
    assert hist.epoch_loss[0] != pytest.approx(hist.train_loss[9], abs=1e-6)
    assert lines[-1].endswith(
        f"train acc, val acc, test acc | {hist.train_acc[-1]:.4f}, {hist.val_acc[-1]:.4f}, "
        f"{hist.test_acc[-1]:.4f}"
    )
    keras = hist.history
    assert list(keras) == [
        "loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "lr",
        "seconds",
    ]  # fmt: skip
    assert all(len(v) == 3 for v in keras.values()) and keras["lr"] == [0.5] * 3
    # the last epoch's numbers are the network's own at the end
    assert keras["val_loss"][-1] == pytest.approx(net.loss(x[:200], t[:200]), rel=1e-12)
    assert keras["test_accuracy"][-1] == net.accuracy(xt, tt)
    assert keras["val_accuracy"][-1] == net.accuracy(x[:200], t[:200])
    logs = rec.calls[-2][2]
    assert logs["val_loss"] == keras["val_loss"][-1] and logs["loss"] == keras["loss"][-1]
    assert [e for e, _ in plain] == [0, 1, 2] and plain[-1][1] == logs
    assert keras["loss"][-1] < keras["loss"][0] < 2.4  # it learned


def test_validation_split_carves_the_training_set_and_test_is_optional(sample):
    x, t, _, _ = sample
    net = SoftmaxRegression(784, 10, seed=0, dtype=np.float64)
    trainer = Trainer(net, x, t, epochs=2, seed=3, verbose=False, validation_split=0.2)
    assert trainer.x_train.shape == (800, 784) and trainer.x_val.shape == (200, 784)
    order = np.random.default_rng(3).permutation(1000)  # the book's shuffle, then the split
    np.testing.assert_array_equal(trainer.t_val, t[order[:200]])
    np.testing.assert_array_equal(trainer.t_train, t[order[200:]])
    assert trainer.iter_per_epoch == 8
    hist = trainer.train()
    assert hist.test_acc == [] and hist.epochs == 2 and len(hist.val_acc) == 2
    assert hist.val_acc[-1] == net.accuracy(trainer.x_val, trainer.t_val)
    assert "test_accuracy" not in hist.history
    with pytest.raises(ValueError, match="no test set"):
        trainer.test_accuracy()
    with pytest.raises(ValueError, match="not both"):
        Trainer(net, x, t, validation_split=0.1, validation_data=(x, t))
    with pytest.raises(ValueError, match="both x_test and t_test"):
        Trainer(net, x, t, x)
    with pytest.raises(ValueError, match="validation_ratio must be in"):
        Trainer(net, x, t, validation_split=1.5)


def test_early_stopping_restores_the_best_weights(sample):
    x, t, xt, tt = sample
    rec = Recorder()
    stop = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    # good steps for two epochs, then a learning rate that wrecks the net
    wreck = LearningRateScheduler(lambda epoch: 0.1 if epoch < 2 else 40.0)
    net = TwoLayerNet(784, 20, 10, seed=0, activation="relu")
    hist = Trainer(
        net, x, t, xt, tt, epochs=10, seed=0, verbose=False, callbacks=[wreck, rec, stop],
        validation_data=(xt, tt),
    ).train()  # fmt: skip
    assert hist.stopped_early and hist.lr == [0.1, 0.1, 40.0, 40.0]
    assert hist.epochs == 4 and stop.stopped_epoch == 3 and stop.best_epoch == 1
    assert stop.best == hist.val_loss[1] == min(hist.val_loss)
    assert hist.val_loss[2] > hist.val_loss[1] and hist.val_loss[3] > hist.val_loss[1]
    for key, value in rec.params[1].items():
        np.testing.assert_array_equal(net.params[key], value)
    assert net.accuracy(xt, tt) == hist.val_acc[1]
    with pytest.raises(ValueError, match="monitor 'val_loss' is not measured"):
        Trainer(net, x, t, epochs=1, verbose=False, callbacks=[EarlyStopping()]).train()


def test_inverse_time_decay_per_iteration_is_the_courses_schedule(sample):
    x, t, _, _ = sample
    lr0, decay = 0.5, 0.01

    def run(fused, callbacks, initial_iteration=0):
        net = SoftmaxRegression(784, 10, seed=0, dtype=np.float64)
        hist = Trainer(
            net, x, t, epochs=2, seed=4, verbose=False, use_fused=fused,
            callbacks=callbacks, initial_iteration=initial_iteration,
        ).train()  # fmt: skip
        return net, hist

    sched = LearningRateScheduler(inverse_time_decay(lr0, decay), per="iteration")
    net, hist = run(False, [sched])
    # the same steps by hand: lr_t = lr0 / (1 + decay·t), t = iterations before the step
    ref = SoftmaxRegression(784, 10, seed=0, dtype=np.float64)
    rng = np.random.default_rng(4)
    opt, step = SGD(), 0
    for _ in range(2):
        for idx in rng.integers(0, 1000, size=(10, 100)):
            opt.lr = lr0 / (1 + decay * step)
            opt.update(ref.params, ref.gradient(x[idx], t[idx]))
            step += 1
    for key in ref.params:
        np.testing.assert_array_equal(net.params[key], ref.params[key])
    assert hist.lr == [lr0 / (1 + decay * 9), lr0 / (1 + decay * 19)]
    # the optimizer's own lr is left as it was (the schedule passes rates per step)
    assert sched.trainer.optimizer.lr == 0.01
    # a resumed run counts on from initial_iteration
    _, later = run(False, [sched], initial_iteration=20)
    assert later.lr == [lr0 / (1 + decay * 29), lr0 / (1 + decay * 39)]


def test_per_iteration_schedule_stays_on_the_fused_path():
    rng = np.random.default_rng(0)
    x, t = rng.random((400, 30)), rng.integers(0, 4, 400)

    def run(fused, callbacks):
        net = MultiLayerNet(30, [16], 4, seed=0)
        hist = Trainer(
            net, x, t, epochs=3, mini_batch_size=20, optimizer_param={"lr": 0.3}, seed=2,
            verbose=False, use_fused=fused, callbacks=callbacks,
        ).train()  # fmt: skip
        return net, hist

    sched = [LearningRateScheduler(inverse_time_decay(0.3, 0.05), per="iteration")]
    fused_net, fused_hist = run(True, sched)
    loop_net, loop_hist = run(False, sched)
    plain_net, _ = run(True, [])
    assert fused_hist.fused and not loop_hist.fused
    assert fused_hist.lr == loop_hist.lr == [0.3 / (1 + 0.05 * t) for t in (19, 39, 59)]
    for key in fused_net.params:
        np.testing.assert_allclose(
            fused_net.params[key], loop_net.params[key], rtol=1e-9, atol=1e-12
        )
    assert np.abs(fused_net.params["W1"] - plain_net.params["W1"]).max() > 1e-3


def test_step_decay_per_epoch():
    rng = np.random.default_rng(0)
    x, t = rng.random((100, 5)), rng.integers(0, 2, 100)
    net = SoftmaxRegression(5, 2, seed=0)
    sched = LearningRateScheduler(step_decay(0.1, drop=0.5, every=2))
    hist = Trainer(
        net, x, t, epochs=5, mini_batch_size=10, verbose=False, callbacks=[sched]
    ).train()
    assert hist.lr == [0.1, 0.1, 0.05, 0.05, 0.025]
    with pytest.raises(ValueError, match=r"lr=-1\.0 at epoch 0"):
        bad = LearningRateScheduler(lambda e: -1.0)
        Trainer(net, x, t, epochs=1, verbose=False, callbacks=[bad]).train()


def test_model_checkpoint_keeps_best_and_last(sample, tmp_path):
    x, t, xt, tt = sample
    rec = Recorder()
    best = ModelCheckpoint(tmp_path / "best.npz", monitor="val_accuracy", save_best_only=True)
    last = ModelCheckpoint(tmp_path / "epoch{epoch}.npz")
    wreck = LearningRateScheduler(lambda epoch: 0.1 if epoch < 2 else 40.0)
    net = TwoLayerNet(784, 20, 10, seed=0, activation="relu")
    hist = Trainer(
        net, x, t, epochs=4, seed=0, verbose=False, callbacks=[wreck, rec, best, last],
        validation_data=(xt, tt),
    ).train()  # fmt: skip
    assert [p.name for p in last.saved] == [f"epoch{e}.npz" for e in range(1, 5)]
    top = int(np.argmax(hist.val_acc))
    assert best.best == hist.val_acc[top] and len(best.saved) == top + 1
    saved = load(tmp_path / "best.npz")
    for key, value in rec.params[top].items():
        np.testing.assert_array_equal(saved.params[key], value)
    final = load(tmp_path / "epoch4.npz")
    for key, value in net.params.items():
        np.testing.assert_array_equal(final.params[key], value)
    with pytest.raises(FileNotFoundError, match="directory"):
        Trainer(
            net, x, t, epochs=1, verbose=False, callbacks=[ModelCheckpoint(tmp_path / "no" / "m")]
        ).train()


def test_terminate_on_nan():
    rng = np.random.default_rng(0)
    x, t = rng.random((100, 5)), rng.integers(0, 2, 100)
    net = SoftmaxRegression(5, 2, seed=0, dtype=np.float64)

    def poison(epoch, logs):
        if epoch == 1:
            net.params["W"][0, 0] = np.nan

    lines: list[str] = []
    hist = Trainer(
        net, x, t, epochs=6, mini_batch_size=10, log=lines.append,
        callbacks=[poison, TerminateOnNaN()],
    ).train()  # fmt: skip
    assert hist.stopped_early and hist.epochs == 3
    assert np.isfinite(hist.epoch_loss[:2]).all() and np.isnan(hist.epoch_loss[2])
    assert "epoch 3: loss nan, terminating training" in lines


def test_shuffled_epochs_draw_without_replacement():
    rng = np.random.default_rng(0)
    x, t = rng.random((105, 5)), rng.integers(0, 2, 105)
    trainer = Trainer(SoftmaxRegression(5, 2), x, t, mini_batch_size=10, seed=7, shuffle=True)
    batches = trainer._batches(trainer.iter_per_epoch, 105)
    assert batches.shape == (10, 10) and len(np.unique(batches)) == 100
    np.testing.assert_array_equal(batches.ravel(), np.random.default_rng(7).permutation(105)[:100])
    book = Trainer(SoftmaxRegression(5, 2), x, t, mini_batch_size=10, seed=7)
    drawn = book._batches(book.iter_per_epoch, 105)
    np.testing.assert_array_equal(drawn, np.random.default_rng(7).integers(0, 105, (10, 10)))
    assert len(np.unique(drawn)) < 100  # with replacement: repeats (63 distinct on average)


def test_bad_callbacks_are_type_errors():
    x, t = np.zeros((10, 3)), np.zeros(10, dtype=int)
    with pytest.raises(TypeError, match="a callback must be"):
        Trainer(SoftmaxRegression(3, 2), x, t, callbacks=[42])
    with pytest.raises(ValueError, match="patience must be"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode must be"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="per must be"):
        LearningRateScheduler(lambda e: 0.1, per="batch")


def test_the_course_notebook_run_is_reproducible(sample):
    """The Keras notebook's softmax regression: to_categorical targets, inverse-time decay
    per iteration, shuffled epochs, evaluate; two runs print the same numbers."""
    from ferrograd import SGD, to_categorical

    x, t, xt, tt = sample
    y, yt = to_categorical(t, 10), to_categorical(tt, 10)

    def run(targets):
        model = SoftmaxRegression(784, 10, seed=0, dtype=np.float32)
        sched = LearningRateScheduler(inverse_time_decay(0.01, 1e-3), per="iteration")
        hist = Trainer(
            model, x.astype(np.float32), targets, epochs=3, optimizer=SGD(lr=0.01),
            seed=0, shuffle=True, callbacks=[sched], verbose=False,
        ).train()  # fmt: skip
        return model, hist

    first, hist = run(y)
    again, _ = run(y)
    labels, _ = run(t)
    for key in first.params:
        np.testing.assert_array_equal(first.params[key], again.params[key])
        np.testing.assert_array_equal(first.params[key], labels.params[key])
    assert hist.lr[-1] == pytest.approx(0.01 / (1 + 1e-3 * 29))
    loss, acc = first.evaluate(xt, yt)
    assert (loss, acc) == again.evaluate(xt, yt) == first.evaluate(xt, tt)
    # 30 small steps from zero: well above chance, far from converged
    assert 0.5 < acc < 0.85 and 1.0 < loss < 2.2


def test_validation_split_with_seed_none_follows_numpys_global_generator():
    x, t = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    net = SoftmaxRegression(2, 2)  # its weights come from np.random too: draw them first
    np.random.seed(4)  # noqa: NPY002
    trainer = Trainer(net, x, t, validation_split=0.25)
    np.random.seed(4)  # noqa: NPY002
    order = np.random.permutation(20)  # noqa: NPY002 (the book's shuffle_dataset)
    np.testing.assert_array_equal(trainer.x_val[:, 0], x[order[:5], 0])
    np.testing.assert_array_equal(trainer.x_train[:, 0], x[order[5:], 0])
