"""ferrograd against the book's NumPy code and PyTorch CPU, on the book's network.

    python benches/compare.py [--repeat 5] [--threads 2] [--csv] [--skip-book-numgrad]

One table, everything measured in this run with pinned thread counts, contenders
alternated (A B C A B C ...) so the shared machine's noise hits all of them:

- one numerical gradient of 784-50-10 on a real MNIST batch of 100 (float64):
  the book's loop (benches/book_numpy.py), ferrograd's exact fast kernel and its
  brute force;
- one training epoch (600 iterations of batch 100, SGD lr 0.1, sigmoid): the book's
  NumPy code, PyTorch CPU (when installed) and ferrograd's fused step, float32 and float64;
- one epoch of MultiLayerNet 784-100-100-10 (ReLU, Adam): layer by layer, fused, PyTorch;
- evaluating train and test accuracy on all 70,000 images;
- the kernels on the network's shapes (matmul, softmax, cross-entropy) via bench_numpy.py.

MNIST comes from FERROGRAD_DATA / the cache as `ferrograd.load_mnist` finds it, else the
shipped sample (said in the output).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling reference modules
from bench_numpy import _pin_threads

_THREADS = _pin_threads(sys.argv)

import book_numpy as book  # noqa: E402
import ferrograd as fg  # noqa: E402
import numpy as np  # noqa: E402
from ferrograd import _core  # noqa: E402
from ferrograd.fused import FusedTrainer  # noqa: E402

Timing = dict[str, list[float]]
NOTES: list[str] = []


def alternate(
    contenders: dict[str, Callable[[], object]], repeat: int, pause: float = 0.0
) -> Timing:
    """Seconds per call of each contender, taking turns; one untimed warm-up round.

    ``pause`` idles before each timed call: OpenBLAS and OpenMP threads spin on both
    cores for a while after a call returns, which would slow whoever runs next.
    """
    for call in contenders.values():
        call()
    times: Timing = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, call in contenders.items():
            time.sleep(pause)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    try:
        (x, t), (xt, tt) = fg.load_mnist(normalize=True, dtype=np.float64, download_ok=False)
        source = "MNIST 60,000/10,000"
    except (OSError, ValueError):
        (x, t), (xt, tt) = fg.load_mnist(normalize=True, dtype=np.float64, dataset="sample")
        source = "the shipped 5,000/1,000 sample (no full MNIST found)"
    return x, t.astype(np.int64), xt, tt.astype(np.int64), source


def numerical_gradient_rows(x, t, repeat: int, skip_book: bool) -> list[list[str]]:
    net = book.TwoLayerNet(784, 50, 10, seed=0)
    xb, tb = x[:100], t[:100]
    p = net.params
    args = (p["W1"], p["b1"], p["W2"], p["b2"], xb, tb)
    contenders: dict[str, Callable[[], object]] = {
        "ferrograd fast": lambda: _core.numerical_gradient(*args, method="fast"),
    }
    times = alternate(contenders, repeat * 4)
    rows = []
    base = None
    if not skip_book:
        # The book's loop takes seconds to minutes: one run, after the others.
        start = time.perf_counter()
        net.numerical_gradient(xb, tb)
        base = time.perf_counter() - start
        rows.append(
            row("numerical gradient", "784-50-10, batch 100", "float64", "book NumPy", [base], base)
        )
    brute = alternate({"b": lambda: _core.numerical_gradient(*args, method="bruteforce")}, 1)["b"]
    rows.append(
        row(
            "numerical gradient",
            "784-50-10, batch 100",
            "float64",
            "ferrograd brute force",
            brute,
            base,
        )
    )
    rows.append(
        row(
            "numerical gradient",
            "784-50-10, batch 100",
            "float64",
            "ferrograd fast",
            times["ferrograd fast"],
            base,
        )
    )
    return rows


def torch_epoch(x, t, batches, dtype, hidden=(50,), activation="sigmoid", adam=False):
    """The same network, loss and optimizer (SGD lr 0.1, or Adam lr 0.001) in PyTorch,
    one epoch over the same batches."""
    import torch

    torch.set_num_threads(_THREADS)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    gen = torch.Generator().manual_seed(0)
    sizes = [784, *hidden, 10]
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        layers.append(torch.nn.Sigmoid() if activation == "sigmoid" else torch.nn.ReLU())
    model = torch.nn.Sequential(*layers[:-1]).to(tdtype)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.01, generator=gen)
            torch.nn.init.zeros_(layer.bias)
    opt = (
        torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-7)
        if adam
        else torch.optim.SGD(model.parameters(), lr=0.1)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    xt = torch.from_numpy(x.astype(dtype))
    tt = torch.from_numpy(t)
    idx = torch.from_numpy(batches)

    def epoch():
        for batch in idx:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[batch]), tt[batch])
            loss.backward()
            opt.step()

    return epoch


def epoch_rows(x, t, xt, tt, repeat: int) -> list[list[str]]:
    rng = np.random.default_rng(0)
    iters = max(x.shape[0] // 100, 1)
    batches = rng.integers(0, x.shape[0], size=(iters, 100)).astype(np.int64)
    rows = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        book_net = book.TwoLayerNet(784, 50, 10, seed=0)
        for key in book_net.params:
            book_net.params[key] = book_net.params[key].astype(dtype)
        net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=dtype)
        fused = FusedTrainer(net, fg.SGD(lr=0.1))
        contenders: dict[str, Callable[[], object]] = {
            "book NumPy": lambda xd=xd, n=book_net: book.train_epoch(n, xd, t, batches, 0.1),
            "ferrograd fused": lambda xd=xd, f=fused: f.run_epoch(xd, t, batches),
        }
        if have_torch:
            contenders["PyTorch CPU"] = torch_epoch(x, t, batches, dtype)
        times = alternate(contenders, repeat, pause=0.3)
        name = np.dtype(dtype).name
        base = statistics.median(times["book NumPy"])
        shape = f"784-50-10, {iters} x batch 100"
        for who, ts in times.items():
            rows.append(row("training epoch", shape, name, who, ts, base))
        if "PyTorch CPU" in times:
            ratio = statistics.median(times["PyTorch CPU"]) / statistics.median(
                times["ferrograd fused"]
            )
            NOTES.append(
                f"training epoch {name}: ferrograd fused is {ratio:.1f}x faster than PyTorch CPU"
            )
        # Evaluation of train and test accuracy after an epoch.
        xtd = xt.astype(dtype)
        ev = alternate(
            {
                "book NumPy": lambda n=book_net, xd=xd, xtd=xtd: (
                    n.accuracy(xd, t),
                    n.accuracy(xtd, tt),
                ),
                "ferrograd": lambda f=fused, xd=xd, xtd=xtd: (
                    f.accuracy(xd, t),
                    f.accuracy(xtd, tt),
                ),
            },
            repeat,
            pause=0.3,
        )
        base = statistics.median(ev["book NumPy"])
        shape = f"{x.shape[0] + xt.shape[0]:,} images"
        for who, ts in ev.items():
            rows.append(row("train+test accuracy", shape, name, who, ts, base))
    if not have_torch:
        print("# PyTorch is not installed: its rows are skipped", file=sys.stderr)
    return rows


def multi_layer_rows(x, t, repeat: int) -> list[list[str]]:
    """One epoch of MultiLayerNet 784-100-100-10 (ReLU, Adam), float32: layer by layer
    (the book's loop on ferrograd's kernels), fused, and PyTorch CPU."""
    rng = np.random.default_rng(0)
    iters = max(x.shape[0] // 100, 1)
    batches = rng.integers(0, x.shape[0], size=(iters, 100)).astype(np.int64)
    xd = x.astype(np.float32)
    layered = fg.MultiLayerNet(784, [100, 100], 10, seed=0, dtype=np.float32)
    layered_opt = fg.Adam(lr=0.001)

    def by_layers() -> None:
        for rows in batches:
            layered_opt.update(layered.params, layered.gradient(xd[rows], t[rows]))

    fused = FusedTrainer(fg.MultiLayerNet(784, [100, 100], 10, seed=0, dtype=np.float32),
                         fg.Adam(lr=0.001))  # fmt: skip
    contenders: dict[str, Callable[[], object]] = {
        "ferrograd layer by layer": by_layers,
        "ferrograd fused": lambda: fused.run_epoch(xd, t, batches),
    }
    try:
        contenders["PyTorch CPU"] = torch_epoch(
            x, t, batches, np.float32, hidden=(100, 100), activation="relu", adam=True
        )
    except ImportError:
        pass
    times = alternate(contenders, repeat, pause=0.3)
    base = statistics.median(times["ferrograd layer by layer"])
    shape = f"784-100-100-10 ReLU Adam, {iters} x batch 100"
    return [
        row("MultiLayerNet epoch", shape, "float32", who, ts, base) for who, ts in times.items()
    ]


def kernel_rows(repeat: int) -> list[list[str]]:
    import bench_numpy

    rows = []
    for dtype in (np.float64, np.float32):
        for op, shape, np_call, fg_call in bench_numpy.cases(dtype):
            if "1024" in shape or op in ("relu", "affine"):
                continue
            np_t, fg_t = bench_numpy.measure(np_call, fg_call, repeat * 4)
            base = statistics.median(np_t)
            name = np.dtype(dtype).name
            rows.append(row(op, shape, name, "NumPy", np_t, base))
            rows.append(row(op, shape, name, "ferrograd", fg_t, base))
    return rows


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def row(
    op: str, shape: str, dtype: str, who: str, ts: list[float], base: float | None
) -> list[str]:
    med = statistics.median(ts)
    ratio = "" if base is None else f"{base / med:.1f}x"
    return [op, shape, dtype, who, fmt(med), fmt(min(ts)), ratio]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed rounds per contender (default 5)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads for every contender (default 2)"
    )
    parser.add_argument("--csv", action="store_true", help="CSV instead of a Markdown table")
    parser.add_argument(
        "--skip-book-numgrad",
        action="store_true",
        help="skip the book's numerical gradient loop (minutes)",
    )
    parser.add_argument("--only", choices=["numgrad", "epoch", "kernels"], help="run one section")
    args = parser.parse_args(argv)

    x, t, xt, tt, source = load_data()
    rows: list[list[str]] = []
    if args.only in (None, "numgrad"):
        rows += numerical_gradient_rows(x, t, args.repeat, args.skip_book_numgrad)
    if args.only in (None, "epoch"):
        rows += epoch_rows(x, t, xt, tt, args.repeat)
        rows += multi_layer_rows(x, t, args.repeat)
    if args.only in (None, "kernels"):
        rows += kernel_rows(args.repeat)

    header = ["op", "shape", "dtype", "contender", "median", "best", "speedup vs first"]
    if args.csv:
        print(",".join(header))
        for r in rows:
            print(",".join(f'"{c}"' if "," in c else c for c in r))
    else:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    for note in NOTES:
        print(f"\n# {note}", end="", file=sys.stderr if args.csv else sys.stdout)
    print(
        f"\n# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; data: {source}; "
        f"threads: {_THREADS} (OpenBLAS, torch, ferrograd={_core.num_threads()}); numpy {np.__version__}; "
        f"ferrograd {fg.__version__}; repeats: {args.repeat}",
        file=sys.stderr if args.csv else sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
