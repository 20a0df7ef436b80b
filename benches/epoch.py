"""Fused training epoch, full accuracy evaluation and numerical gradient of 784-50-10.

    python benches/epoch.py [--repeat 7] [--threads 1,2] [--only epoch,eval,numgrad]

Each thread count runs in its own process (the pool size is read once); contenders take
turns (A B A B ...) and the script prints median and best per contender. Real MNIST from
FERROGRAD_DATA / the cache as ``ferrograd.load_mnist`` finds it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def measure(repeat: int, only: set[str]) -> dict[str, list[float]]:
    import ferrograd as fg
    import numpy as np
    from ferrograd import _core
    from ferrograd.fused import FusedTrainer

    (x, t), (xt, tt) = fg.load_mnist(normalize=True, dtype=np.float64, download_ok=False)
    t, tt = t.astype(np.int64), tt.astype(np.int64)
    rng = np.random.default_rng(0)
    batches = rng.integers(0, x.shape[0], size=(600, 100)).astype(np.int64)
    calls: dict[str, Callable[[], object]] = {}
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        xd, xtd = x.astype(dtype), xt.astype(dtype)
        net = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=dtype)
        fused = FusedTrainer(net, fg.SGD(lr=0.1))

        def epoch(f=fused, xd=xd) -> None:
            for lo in range(0, 600, 100):  # the Trainer's chunks
                f.run_epoch(xd, t, batches[lo : lo + 100])

        if "epoch" in only:
            calls[f"epoch {name}"] = epoch
        if "eval" in only:
            calls[f"eval {name}"] = lambda f=fused, xd=xd, xtd=xtd: (
                f.accuracy(xd, t),
                f.accuracy(xtd, tt),
            )
    if "numgrad" in only:
        for act in ("sigmoid", "relu"):
            net = fg.TwoLayerNet(784, 50, 10, seed=0, activation=act)
            p = net.params
            args = (p["W1"], p["b1"], p["W2"], p["b2"], x[:100], t[:100])
            calls[f"numgrad {act}"] = lambda args=args, act=act: _core.numerical_gradient(
                *args, activation=act, method="fast"
            )
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeat):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--only", default="epoch,eval,numgrad")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    only = set(args.only.split(","))
    if args.child:
        print(json.dumps(measure(args.repeat, only)))
        return 0
    print(f"{'contender':<18} {'threads':>7} {'median ms':>10} {'best ms':>9}")
    for threads in args.threads.split(","):
        env = dict(os.environ, FERROGRAD_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        cmd = [sys.executable, __file__, "--child", "--repeat", str(args.repeat)]
        out = subprocess.run(
            [*cmd, "--only", args.only], env=env, check=True, capture_output=True, text=True
        )
        for key, ts in json.loads(out.stdout).items():
            med, best = statistics.median(ts) * 1e3, min(ts) * 1e3
            print(f"{key:<18} {threads:>7} {med:>10.1f} {best:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
