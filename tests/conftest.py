"""Shared fixtures and the tolerances every numeric test uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Relative tolerances, one place. Elementwise kernels are tighter than reductions
# and products, whose summation order differs from NumPy's.
RTOL = {
    "elementwise": {np.float64: 1e-12, np.float32: 1e-5},
    "reduction": {np.float64: 1e-12, np.float32: 1e-5},
    "matmul": {np.float64: 1e-10, np.float32: 1e-5},
}
# Absolute floor for values that are (nearly) zero, per dtype.
ATOL = {np.float64: 1e-12, np.float32: 1e-6}

# Hypothesis: a CI profile (100 examples each, the same ones every run, so a red run
# can be reproduced) and a slow, random one (1000) chosen with FERROGRAD_HYPOTHESIS=slow.
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FERROGRAD_HYPOTHESIS", "ci"))

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def tol(kind: str, dtype: type) -> dict[str, float]:
    """``rtol``/``atol`` keyword arguments for ``np.testing.assert_allclose``."""
    return {"rtol": RTOL[kind][np.dtype(dtype).type], "atol": ATOL[np.dtype(dtype).type]}


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder named by FERROGRAD_DATA; tests skip with a reason without it."""
    value = os.environ.get("FERROGRAD_DATA")
    if not value:
        pytest.skip("FERROGRAD_DATA is not set: no real MNIST files (e.g. ../shared/data/mnist)")
    path = Path(value)
    missing = [f for f in MNIST_FILES if not (path / f).exists() and not (path / f[:-3]).exists()]
    if missing:
        pytest.skip(f"FERROGRAD_DATA={path} lacks {', '.join(missing)}")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261123)


def python_output(script: str, timeout: float = 120, **env: str) -> str:
    """stdout of ``python -c script`` in a child process with ``env`` added to the
    environment (e.g. FERROGRAD_NUM_THREADS="1"); fails the test if the child fails."""
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout
