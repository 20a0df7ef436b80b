"""The chapter-5/6 layer objects, book against ferrograd: forward + backward of the same
layer chains built once from the book's ``common.layers`` and once from
``ferrograd.layers``, on a real MNIST batch, contenders alternated in blocks of calls
(``bench_numpy.measure``: a pause, 30 ms of warm-up, ~2 ms timed).

    python benches/book_layers.py --book ~/deep-learning-from-scratch [--repeat 15]

The book's code is not shipped: point ``--book`` (or FERROGRAD_BOOK) at a checkout of
oreilly-japan/deep-learning-from-scratch. Chains (784-100-100-10, batch 100):

- Affine → ReLU → Affine → Sigmoid → Affine → SoftmaxWithLoss (the ch. 5 layers);
- the same with BatchNormalization after each hidden Affine (ch. 6);
- the same with Dropout(0.2) after each activation (ch. 6).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import platform
import statistics
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_numpy import _pin_threads, measure

_THREADS = _pin_threads(sys.argv)

import ferrograd as fg  # noqa: E402
import numpy as np  # noqa: E402
from ferrograd import layers as fg_layers  # noqa: E402

SIZES = (784, 100, 100, 10)


def chain(layers, dtype, rng, batch_norm=False, dropout=False):
    """The layer objects of one net, from ``layers`` (a module with the book's classes)."""
    out: OrderedDict[str, object] = OrderedDict()
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(SIZES), start=1):
        w = (np.sqrt(2.0 / fan_in) * rng.standard_normal((fan_in, fan_out))).astype(dtype)
        out[f"Affine{i}"] = layers.Affine(w, np.zeros(fan_out, dtype))
        if i == len(SIZES) - 1:
            break
        if batch_norm:
            ones, zeros = np.ones(fan_out, dtype), np.zeros(fan_out, dtype)
            out[f"BatchNorm{i}"] = layers.BatchNormalization(ones, zeros)
        out[f"Activation{i}"] = layers.Relu() if i == 1 else layers.Sigmoid()
        if dropout:
            out[f"Dropout{i}"] = layers.Dropout(0.2)
    return out, layers.SoftmaxWithLoss()


def step(net, x, t) -> None:
    """One forward pass with the loss and one backward pass, as the book's gradient()."""
    layers, last = net
    y = x
    for layer in layers.values():
        name = type(layer).__name__
        y = (
            layer.forward(y, True)
            if name in ("BatchNormalization", "Dropout")
            else layer.forward(y)
        )
    last.forward(y, t)
    dout = last.backward(1)
    for layer in reversed(list(layers.values())):
        dout = layer.backward(dout)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--book", type=Path, default=os.environ.get("FERROGRAD_BOOK"))
    parser.add_argument("--repeat", type=int, default=15, help="timed blocks (default 15)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS and ferrograd threads")
    args = parser.parse_args()
    if args.book is None or not (Path(args.book) / "common" / "layers.py").is_file():
        print("book_layers: give --book DIR (a checkout of deep-learning-from-scratch)")
        return 2
    sys.path.insert(0, str(Path(args.book).resolve()))
    book_layers = importlib.import_module("common.layers")
    try:
        (x, t), _ = fg.load_mnist(normalize=True, one_hot_label=True, download_ok=False)
        source = "MNIST"
    except (OSError, ValueError):
        (x, t), _ = fg.load_mnist(normalize=True, one_hot_label=True, dataset="sample")
        source = "the shipped sample"
    print("| layers (784-100-100-10, batch 100) | dtype | book NumPy | ferrograd | speedup |")
    print("| --- | --- | --- | --- | --- |")
    for dtype in (np.float32, np.float64):
        xb, tb = x[:100].astype(dtype), t[:100].astype(dtype)
        for label, kw in (
            ("Affine, ReLU, Sigmoid, SoftmaxWithLoss", {}),
            ("+ BatchNormalization", {"batch_norm": True}),
            ("+ Dropout", {"dropout": True}),
        ):
            np.random.seed(0)  # noqa: NPY002  (the book's Dropout draws from np.random)
            book = chain(book_layers, dtype, np.random.default_rng(0), **kw)
            mine = chain(fg_layers, dtype, np.random.default_rng(0), **kw)
            book_t, fg_t = measure(
                lambda n=book, xb=xb, tb=tb: step(n, xb, tb),
                lambda n=mine, xb=xb, tb=tb: step(n, xb, tb),
                args.repeat,
            )
            b, f = statistics.median(book_t), statistics.median(fg_t)
            bb, fb = min(book_t), min(fg_t)
            name = np.dtype(dtype).name
            print(
                f"| {label} | {name} | {b * 1e6:.0f} µs ({bb * 1e6:.0f}) | "
                f"{f * 1e6:.0f} µs ({fb * 1e6:.0f}) | {b / f:.2f}× |"
            )
    print(
        f"\n# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; data: "
        f"{source}; threads: {_THREADS}; numpy {np.__version__}; ferrograd {fg.__version__}; "
        f"median (best) of {args.repeat}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
