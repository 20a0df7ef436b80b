"""The course's Keras notebook, softmax regression on MNIST, in ferrograd and in Keras.

    python benches/keras_notebook.py [--epochs 5] [--decay 1e-4] [--repeat 3] [--threads 1]

The notebook's steps, one for one: labels through ``to_categorical``, a 784→10 softmax
layer, SGD at lr 0.01 decaying as lr/(1 + decay·t) per iteration, 5 epochs of batch 100
shuffled without replacement (Keras' ``fit``), then ``evaluate`` on the test set,
printed as loss and accuracy. ferrograd's run is seeded, so two runs print the same
numbers. Keras (any backend) is timed in the same run when it is installed, the two
taking turns (A B A B …); without it the script says so and times ferrograd alone.
Besides Keras' epochs, ``--book`` samples mini-batches with replacement as the book does.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules
from bench_numpy import _pin_threads

# before NumPy starts OpenBLAS; one thread unless --threads says otherwise (see main)
_THREADS = _pin_threads(sys.argv if "--threads" in sys.argv else ["--threads", "1"])

import ferrograd as fg  # noqa: E402
import numpy as np  # noqa: E402
from ferrograd.callbacks import LearningRateScheduler, inverse_time_decay  # noqa: E402

LR = 0.01
BATCH = 100


def load_data(sample: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    if not sample:
        try:
            (x, t), (xt, tt) = fg.load_mnist(normalize=True, dtype=np.float32, download_ok=False)
            return x, t, xt, tt, "MNIST 60,000/10,000"
        except (OSError, ValueError):
            pass
    (x, t), (xt, tt) = fg.load_mnist(normalize=True, dtype=np.float32, dataset="sample")
    return x, t, xt, tt, "the shipped 5,000/1,000 sample"


def ferrograd_run(x, y, xt, yt, epochs: int, decay: float, shuffle: bool, seed: int = 0):
    """The notebook in ferrograd: returns (test loss, test accuracy, seconds of fit)."""
    model = fg.SoftmaxRegression(784, 10, seed=seed, dtype=np.float32)
    callbacks = [LearningRateScheduler(inverse_time_decay(LR, decay), per="iteration")]
    trainer = fg.Trainer(
        model,
        x,
        y,
        epochs=epochs,
        mini_batch_size=BATCH,
        optimizer=fg.SGD(lr=LR),
        seed=seed,
        shuffle=shuffle,
        callbacks=callbacks if decay else [],
        verbose=False,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    loss, acc = model.evaluate(xt, yt)
    return loss, acc, seconds


def keras_run(x, y, xt, yt, epochs: int, decay: float):
    """The notebook in Keras 3 (``decay=`` is now an InverseTimeDecay schedule)."""
    import keras  # type: ignore[import-not-found,unused-ignore]

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    lr = keras.optimizers.schedules.InverseTimeDecay(LR, decay_steps=1, decay_rate=decay)
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=lr if decay else LR),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    loss, acc = model.evaluate(xt, yt, verbose=0)
    return float(loss), float(acc), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--decay", type=float, default=1e-4, help="lr/(1 + decay·t); 0: none")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", action="store_true", help="the shipped sample only")
    parser.add_argument("--book", action="store_true", help="also the book's sampling")
    # one thread: a 100×784·784×10 product is too small to split, and spinning BLAS
    # threads on a busy 2-core machine cost more than they give
    parser.add_argument("--threads", type=int, default=1, help="BLAS and ferrograd threads")
    args = parser.parse_args(argv)
    x, t, xt, tt, source = load_data(args.sample)
    y, yt = fg.to_categorical(t, 10), fg.to_categorical(tt, 10)
    print(
        f"softmax regression 784-10, SGD lr {LR} decay {args.decay:g}, batch {BATCH}, "
        f"{args.epochs} epochs, {source}; {_THREADS} BLAS/ferrograd threads"
    )
    runs = {
        "ferrograd, Keras' epochs": lambda: ferrograd_run(
            x, y, xt, yt, args.epochs, args.decay, True
        ),
    }
    if args.book:
        runs["ferrograd, the book's sampling"] = lambda: ferrograd_run(
            x, y, xt, yt, args.epochs, args.decay, False
        )
    if importlib.util.find_spec("keras") is not None:
        runs["Keras"] = lambda: keras_run(x, y, xt, yt, args.epochs, args.decay)
    else:
        print("Keras is not installed: ferrograd alone (pip install keras and a backend)")
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeat):  # taking turns, so the machine's noise hits all alike
        for name, run in runs.items():
            results[name].append(run())
    print(f"{'run':<32}{'test loss':>10}{'test acc':>10}{'fit s (median)':>16}{'best':>8}")
    for name, rows in results.items():
        loss, acc, _ = rows[-1]
        secs = [r[2] for r in rows]
        print(
            f"{name:<32}{loss:>10.4f}{acc:>10.4f}{statistics.median(secs):>16.2f}{min(secs):>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
