"""Per-call times of a few ferrograd calls in the build this interpreter imports.

    python benches/call_overhead.py > this-build.json

Run it under two interpreters (say the abi3 wheel's and a version-specific build of the
same source), alternating, and compare the JSON: what a build choice costs in the
binding shows on the tiny calls, what it costs in the kernels on the network-sized ones.
Reads MNIST from FERROGRAD_DATA (else the shipped sample).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import ferrograd as fg
import numpy as np
from ferrograd import _core
from ferrograd.fused import FusedTrainer


def cases() -> dict[str, tuple[Callable[[], object], int]]:
    """name → (call, timed repetitions)."""
    rng = np.random.default_rng(0)
    try:
        (x, t), _ = fg.load_mnist(normalize=True, dtype=np.float32, download_ok=False)
    except (OSError, ValueError):
        (x, t), _ = fg.load_mnist(normalize=True, dtype=np.float32, dataset="sample")
    xb32, tb = x[:100], t[:100].astype(np.int64)
    xb64 = xb32.astype(np.float64)
    small = rng.standard_normal((4, 10))
    w = rng.standard_normal((784, 50))
    net32 = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
    net64 = fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float64)
    fused = FusedTrainer(fg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32), fg.SGD(lr=0.1))
    batches = rng.integers(0, x.shape[0], size=(600, 100)).astype(np.int64)
    return {
        "sigmoid 4x10": (lambda: _core.sigmoid(small), 200),
        "softmax 4x10": (lambda: _core.softmax(small), 200),
        "matmul 100x784x50 float64": (lambda: _core.matmul(xb64, w), 50),
        "TwoLayerNet.gradient float32, batch 100": (lambda: net32.gradient(xb32, tb), 50),
        "TwoLayerNet.gradient float64, batch 100": (lambda: net64.gradient(xb64, tb), 50),
        "TwoLayerNet.predict float64, 100 rows": (lambda: net64.predict(xb64), 50),
        "fused epoch float32, 600 steps": (lambda: fused.run_epoch(x, t, batches), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    out = {}
    for name, (call, reps) in cases().items():
        call()  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        out[name] = {"median_s": statistics.median(times), "best_s": min(times)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
