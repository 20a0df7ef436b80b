"""ferrograd against the book's NumPy code and PyTorch CPU, on the book's network.

    python benches/compare.py [--repeat 5] [--threads 2] [--csv] [--skip-book-numgrad]

One table, everything measured in this run with pinned thread counts, contenders
alternated (A B C A B C ...) so the shared machine's noise hits all of them:

- one numerical gradient of 784-50-10 on a real MNIST batch of 100 (float64):
  the book's loop (benches/book_numpy.py), ferrograd's exact fast kernel and its
  brute force;
- one training epoch (600 iterations of batch 100, SGD lr 0.1, sigmoid): the book's
  NumPy code, ferrograd's fused step and, when installed, PyTorch CPU (manual loop),
  JAX (`jax.jit` of a `lax.scan` over the epoch's steps) and Keras 3 (`model.fit` over
  the same batches, on whichever backend it finds), float32 and float64;
- one epoch of MultiLayerNet 784-100-100-10 (ReLU, Adam): layer by layer, fused, and the
  same optional contenders;
- evaluating train and test accuracy on all 70,000 images;
- the kernels on the network's shapes (matmul, softmax, cross-entropy) via bench_numpy.py.

MNIST comes from FERROGRAD_DATA / the cache as `ferrograd.load_mnist` finds it, else the
shipped sample (said in the output).
"""

from __future__ import annotations

import argparse
import importlib.util
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
SKIPPED: list[str] = []


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


def jax_epoch(x, t, batches, dtype, hidden=(50,), activation="sigmoid", adam=False):
    """The same network, loss and optimizer in JAX: one ``jax.jit`` of a ``lax.scan``
    over the epoch's batches (the book's Adam formula, eps 1e-7)."""
    import jax
    import jax.numpy as jnp

    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    sizes = [784, *hidden, 10]
    rng = np.random.default_rng(0)
    params = [
        (jnp.asarray((0.01 * rng.standard_normal((a, b))).astype(dtype)), jnp.zeros(b, dtype))
        for a, b in itertools.pairwise(sizes)
    ]
    act = jax.nn.sigmoid if activation == "sigmoid" else jax.nn.relu
    xd, td = jnp.asarray(x.astype(dtype)), jnp.asarray(t.astype(np.int32))
    idx = jnp.asarray(batches.astype(np.int32))

    def loss(p, xb, tb):
        h = xb
        for w, b in p[:-1]:
            h = act(h @ w + b)
        logp = jax.nn.log_softmax(h @ p[-1][0] + p[-1][1])
        return -jnp.mean(jnp.take_along_axis(logp, tb[:, None], axis=1))

    grad = jax.grad(loss)

    def step(state, rows):
        p, m, v, it = state
        g = grad(p, xd[rows], td[rows])
        if not adam:
            return (jax.tree.map(lambda a, d: a - 0.1 * d, p, g), m, v, it), None
        it = it + 1
        lr_t = 0.001 * jnp.sqrt(1 - 0.999**it) / (1 - 0.9**it)
        m = jax.tree.map(lambda a, d: a + 0.1 * (d - a), m, g)
        v = jax.tree.map(lambda a, d: a + 0.001 * (d * d - a), v, g)
        p = jax.tree.map(lambda a, mm, vv: a - lr_t * mm / (jnp.sqrt(vv) + 1e-7), p, m, v)
        return (p, m, v, it), None

    run = jax.jit(lambda state: jax.lax.scan(step, state, idx)[0])
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = [(params, zeros, zeros, jnp.asarray(0, dtype))]

    def epoch():
        state[0] = jax.block_until_ready(run(state[0]))

    return epoch


def keras_epoch(x, t, batches, dtype, hidden=(50,), activation="sigmoid", adam=False):
    """The same network in Keras 3: ``model.fit`` of one epoch over the same batches
    (the gathered rows in order, ``shuffle=False``)."""
    import keras

    keras.config.set_floatx(np.dtype(dtype).name)
    init = keras.initializers.RandomNormal(stddev=0.01, seed=0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            *[
                keras.layers.Dense(h, activation=activation, kernel_initializer=init)
                for h in hidden
            ],
            keras.layers.Dense(10, kernel_initializer=init),
        ]
    )
    opt = keras.optimizers.Adam(0.001, epsilon=1e-7) if adam else keras.optimizers.SGD(0.1)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rows = batches.ravel()
    xe, te = x[rows].astype(dtype), t[rows]

    def epoch():
        model.fit(xe, te, batch_size=batches.shape[1], epochs=1, shuffle=False, verbose=0)

    return epoch


def _keras_backend() -> str | None:
    """Keras' backend, picked as Keras would, or among the installed ones when its
    default (TensorFlow) is not installed; None without Keras or any backend."""
    if importlib.util.find_spec("keras") is None:
        return None
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
        found = [b for b in ("jax", "torch") if importlib.util.find_spec(b) is not None]
        if not found:
            return None
        os.environ["KERAS_BACKEND"] = found[0]
    return os.environ.get("KERAS_BACKEND", "tensorflow")


# name, builder, module it needs
OPTIONAL = (("PyTorch CPU", torch_epoch, "torch"), ("JAX jit", jax_epoch, "jax"))


def optional_contenders(x, t, batches, dtype, **net) -> dict[str, Callable[[], object]]:
    """PyTorch, JAX and Keras epochs of the same network, those installed."""
    out: dict[str, Callable[[], object]] = {}
    for name, build, module in OPTIONAL:
        if importlib.util.find_spec(module) is None:
            _skip(f"{name}: {module} is not installed, its rows are skipped")
        else:
            out[name] = build(x, t, batches, dtype, **net)
    backend = _keras_backend()
    if backend is None:
        _skip("Keras 3: keras (with a backend: jax, torch or tensorflow) is not installed")
    else:
        out[f"Keras 3 ({backend})"] = keras_epoch(x, t, batches, dtype, **net)
    return out


def _skip(note: str) -> None:
    if note not in SKIPPED:
        SKIPPED.append(note)
        print(f"# {note}", file=sys.stderr)


def versus_fused(what: str, times: Timing) -> None:
    """Notes: how much faster the fused epoch is than each other framework, median
    against median, and best against best (each contender's least disturbed run: on a
    shared machine the medians move by tens of percent from one run to the next)."""
    fused = times["ferrograd fused"]
    for who, ts in times.items():
        if who.startswith(("PyTorch", "JAX", "Keras")):
            ratio = statistics.median(ts) / statistics.median(fused)
            best = min(ts) / min(fused)
            NOTES.append(
                f"{what}: {who} time / ferrograd fused time = {ratio:.2f} "
                f"(best against best {best:.2f})"
            )


def epoch_rows(x, t, xt, tt, repeat: int) -> list[list[str]]:
    rng = np.random.default_rng(0)
    iters = max(x.shape[0] // 100, 1)
    batches = rng.integers(0, x.shape[0], size=(iters, 100)).astype(np.int64)
    rows = []
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
        contenders.update(optional_contenders(x, t, batches, dtype))
        times = alternate(contenders, repeat, pause=0.3)
        name = np.dtype(dtype).name
        base = statistics.median(times["book NumPy"])
        shape = f"784-50-10, {iters} x batch 100"
        for who, ts in times.items():
            rows.append(row("training epoch", shape, name, who, ts, base))
        versus_fused(f"training epoch 784-50-10 SGD {name}", times)
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
    contenders.update(
        optional_contenders(
            x, t, batches, np.float32, hidden=(100, 100), activation="relu", adam=True
        )
    )
    times = alternate(contenders, repeat, pause=0.3)
    base = statistics.median(times["ferrograd layer by layer"])
    shape = f"784-100-100-10 ReLU Adam, {iters} x batch 100"
    versus_fused("MultiLayerNet epoch 784-100-100-10 Adam float32", times)
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
