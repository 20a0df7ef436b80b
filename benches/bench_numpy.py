"""Each kernel in NumPy and in ferrograd, side by side in one process.

    python benches/bench_numpy.py [--repeat 30] [--csv] [--threads 2] [--only net]

Contenders alternate (NumPy, ferrograd, NumPy, ...) so machine noise hits both; each
timed block of calls follows a pause and 30 ms of the same calls (the steady state of
a loop). The table gives the median and best of the repeats and the ratio of medians.

The ``net ...`` rows time the per-call methods a learner types (``TwoLayerNet``
``gradient``, ``predict``, ``loss``, ``accuracy``) against the book's NumPy
``TwoLayerNet`` (benches/book_numpy.py, its formulas run in the same dtype) on a batch
of 100 and on 10,000 rows, for dense input (uniform, no zeros) and for real MNIST rows
(from ``FERROGRAD_DATA``; skipped with a note when the files are not there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable


def _pin_threads(argv: list[str]) -> int:
    """Set thread counts before NumPy/OpenBLAS and the Rust pool start."""
    threads = 2
    if "--threads" in argv:
        threads = int(argv[argv.index("--threads") + 1])
    for var in (
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "FERROGRAD_NUM_THREADS",
    ):
        os.environ[var] = str(threads)
    return threads


_THREADS = _pin_threads(sys.argv)

import numpy as np  # noqa: E402
from ferrograd import _core  # noqa: E402


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _cross_entropy(y, t):
    return -np.sum(np.log(y[np.arange(y.shape[0]), t] + 1e-7)) / y.shape[0]


def _mnist_rows() -> np.ndarray | None:
    """Normalised MNIST training images (60000, 784) float64, or None without the files."""
    try:
        from ferrograd.datasets import load_mnist

        (x, _), _ = load_mnist(normalize=True, data_dir=os.environ.get("FERROGRAD_DATA"))
    except (OSError, ValueError) as exc:
        print(f"# MNIST not found ({exc}); the net rows use dense input only", file=sys.stderr)
        return None
    return np.asarray(x, dtype=np.float64)


def net_cases(dtype: type) -> list[tuple[str, str, Callable[[], object], Callable[[], object]]]:
    """The per-call TwoLayerNet methods against the book's NumPy network, one dtype."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import book_numpy
    from ferrograd import TwoLayerNet

    rng = np.random.default_rng(0)
    book = book_numpy.TwoLayerNet(784, 50, 10, seed=0)
    book.params = {k: v.astype(dtype) for k, v in book.params.items()}
    # Trained-like weights: the book's initial 0.01 scale, then a few steps of noise.
    for v in book.params.values():
        v += (0.05 * rng.standard_normal(v.shape)).astype(dtype)
    net = TwoLayerNet(784, 50, 10, dtype=dtype)
    for key, v in book.params.items():
        net.params[key][...] = v
    mnist = _mnist_rows()
    out = []
    for n in (100, 10_000):
        inputs = [("dense", rng.random((n, 784)))]
        if mnist is not None:
            inputs.append(("mnist", mnist[rng.choice(len(mnist), n, replace=False)]))
        t = rng.integers(0, 10, n)
        if mnist is not None and dtype == np.float64:
            # The book's case: its load_mnist gives float32 rows, its nets are float64.
            inputs.append(("mnist f32 rows", inputs[-1][1].astype(np.float32)))
        for kind, x in inputs:
            x = np.ascontiguousarray(x, dtype=x.dtype if kind.endswith("f32 rows") else dtype)
            for op in ("gradient", "predict", "loss", "accuracy"):
                if op == "gradient" and n > 100:
                    continue
                args = (x,) if op == "predict" else (x, t)
                out.append(
                    (
                        f"net {op}",
                        f"{n}x784 {kind}",
                        lambda op=op, args=args: getattr(book, op)(*args),
                        lambda op=op, args=args: getattr(net, op)(*args),
                    )
                )
    return out


def cases(dtype: type) -> list[tuple[str, str, Callable[[], object], Callable[[], object]]]:
    """(op, shape, numpy call, ferrograd call) for one dtype."""
    rng = np.random.default_rng(0)
    out = []
    for m, k, n, form in [
        (100, 784, 50, "a@b"),
        (100, 50, 10, "a@b"),
        (784, 100, 50, "aT@b"),
        (100, 10, 50, "a@bT"),
        (1024, 1024, 1024, "a@b"),
    ]:
        a = rng.standard_normal((k, m) if form == "aT@b" else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if form == "a@bT" else (k, n)).astype(dtype)
        if form == "aT@b":
            np_call, fg_call = (
                (lambda a=a, b=b: a.T @ b),
                (lambda a=a, b=b: _core.matmul(a, b, trans_a=True)),
            )
        elif form == "a@bT":
            np_call, fg_call = (
                (lambda a=a, b=b: a @ b.T),
                (lambda a=a, b=b: _core.matmul(a, b, trans_b=True)),
            )
        else:
            np_call, fg_call = (lambda a=a, b=b: a @ b), (lambda a=a, b=b: _core.matmul(a, b))
        out.append((f"matmul {form}", f"{m}x{k}x{n}", np_call, fg_call))
    x = rng.standard_normal((100, 784)).astype(dtype)
    w = rng.standard_normal((784, 50)).astype(dtype)
    bias = rng.standard_normal(50).astype(dtype)
    out.append(
        ("affine", "100x784 @ 784x50", lambda: x @ w + bias, lambda: _core.affine(x, w, bias))
    )
    for shape in [(100, 50), (10000, 50)]:
        z = rng.standard_normal(shape).astype(dtype)
        shp = "x".join(map(str, shape))
        out.append(("sigmoid", shp, lambda z=z: 1 / (1 + np.exp(-z)), lambda z=z: _core.sigmoid(z)))
        out.append(("relu", shp, lambda z=z: np.maximum(0, z), lambda z=z: _core.relu(z)))
    for shape in [(100, 10), (10000, 10)]:
        z = rng.standard_normal(shape).astype(dtype)
        y = _softmax(z)
        t = rng.integers(0, 10, shape[0])
        shp = "x".join(map(str, shape))
        out.append(("softmax", shp, lambda z=z: _softmax(z), lambda z=z: _core.softmax(z)))
        out.append(
            (
                "cross_entropy",
                shp,
                lambda y=y, t=t: _cross_entropy(y, t),
                lambda y=y, t=t: _core.cross_entropy_error(y, t),
            )
        )
    return out


# Idle time before each timed block: OpenBLAS's threads spin for up to ~0.1 s after a
# call returns (and rayon's briefly), which would take the second core from whoever
# runs next.
PAUSE = 0.15

# Calls before each timed block, for this long: back to the steady state of a loop of
# calls. After an idle pause a virtual machine's CPUs come back slowly, and the system
# may wake a contender's second thread on the core of its first, where the two take
# turns until the scheduler moves one (seen on the 2-core AMD VM: 2 ms of calls left
# about half of the blocks at one thread's speed, 30 ms none).
WARM_UP = 0.03


def measure(np_call, fg_call, repeat: int) -> tuple[list[float], list[float]]:
    """Alternate the two contenders; seconds per call for each repeat."""
    for call in (np_call, fg_call, np_call, fg_call):  # warm-up
        call()
    # Calls per timing sample: enough for ~2 ms so the clock's resolution does not matter.
    start = time.perf_counter()
    np_call()
    inner = max(1, int(2e-3 / max(time.perf_counter() - start, 1e-7)))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for slot, call in enumerate((np_call, fg_call)):
            time.sleep(PAUSE)
            start = time.perf_counter()
            while time.perf_counter() - start < WARM_UP:
                call()
            start = time.perf_counter()
            for _ in range(inner):
                call()
            times[slot].append((time.perf_counter() - start) / inner)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=30, help="timed repeats per contender (default 30)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads for OpenBLAS and ferrograd (default 2)"
    )
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--only", default="", help="run only ops whose name contains this text")
    args = parser.parse_args(argv)

    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} x{i.get('num_threads')}"
            for i in threadpool_info()
        )
    except ImportError:
        blas = "threadpoolctl not installed"
    header = [
        "op",
        "shape",
        "dtype",
        "numpy us (median/best)",
        "ferrograd us (median/best)",
        "speedup",
    ]
    rows = []
    for dtype in (np.float64, np.float32):
        kernel_cases = cases(dtype) if "net" not in args.only else []
        net_rows = net_cases(dtype) if args.only in "net" or "net" in args.only else []
        for op, shape, np_call, fg_call in kernel_cases + net_rows:
            if args.only not in op:
                continue
            np_t, fg_t = measure(
                np_call, fg_call, args.repeat if "1024" not in shape else max(5, args.repeat // 5)
            )
            np_med, fg_med = statistics.median(np_t), statistics.median(fg_t)
            rows.append(
                [
                    op,
                    shape,
                    np.dtype(dtype).name,
                    f"{np_med * 1e6:.1f} / {min(np_t) * 1e6:.1f}",
                    f"{fg_med * 1e6:.1f} / {min(fg_t) * 1e6:.1f}",
                    f"{np_med / fg_med:.2f}x",
                ]
            )
            if not args.csv:
                print(" | ".join(rows[-1]), flush=True)
    if args.csv:
        print(",".join(header))
        for row in rows:
            print(",".join(row))
    print(
        f"# threads: OpenBLAS/OMP={os.environ['OPENBLAS_NUM_THREADS']}, ferrograd={_core.num_threads()}; "
        f"numpy {np.__version__} ({blas}); OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}",
        file=sys.stderr if args.csv else sys.stdout,
    )
    if not args.csv:
        print("# columns: " + " | ".join(header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
