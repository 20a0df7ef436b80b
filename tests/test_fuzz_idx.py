"""A short seeded run of scripts/fuzz_idx.py and the inputs it has found so far."""

from __future__ import annotations

import gzip
import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest
from ferrograd.datasets import DatasetError, parse_idx, read_idx

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_idx.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_idx", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_idx"] = module
    spec.loader.exec_module(module)
    module._import_target()
    return module


def test_seeds_are_valid_files_of_the_real_headers(fuzz):
    seeds = fuzz.make_seeds()
    assert len(seeds) == 18
    image, label = seeds[1], seeds[4]  # two images, two labels
    assert image[:16].hex() == "00000803000000020000001c0000001c"
    assert parse_idx(image).shape == (2, 28, 28)
    assert label[:8].hex() == "0000080100000002" and parse_idx(label).shape == (2,)
    assert gzip.decompress(seeds[12]) == seeds[0]


def test_mutations_are_deterministic_per_seed(fuzz):
    seed = fuzz.make_seeds()[1]
    a = [fuzz.mutate(seed, random.Random(7)) for _ in range(3)]
    b = [fuzz.mutate(seed, random.Random(7)) for _ in range(3)]
    assert a == b and any(m != seed for m in a)


def test_short_seeded_run_keeps_the_contract(fuzz, tmp_path):
    result = fuzz.run_mutate(seconds=3.0, seed=20261123, timeout=10.0, workdir=tmp_path)
    assert result["violations"] == []
    outcomes = result["outcomes"]
    assert result["execs"] > 200
    # the seeds parse, and the fuzzed inputs reach the parser's error paths
    assert outcomes["ok: 3-d array"] > 0 and outcomes["ok: 1-d array"] > 0
    assert outcomes["ok: loader"] > 0
    assert any("truncated" in k for k in outcomes)
    assert any("wrong magic number" in k for k in outcomes)
    assert all(k.startswith(("ok:", "DatasetError:", "OSError:")) for k in outcomes)


def test_script_exits_zero_with_a_summary(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--engine",
            "mutate",
            "--seconds",
            "1",
            "--seed",
            "3",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("engine mutate | 1 s | ") and "executions" in out.stdout
    assert (tmp_path / "r.json").exists()


# Inputs the fuzzer found, kept as regression cases.
FOUND = [
    # dims 2^31 x 4 x 2^31: their int64 product wrapped to 0 and matched an empty payload,
    # so reshape raised a bare ValueError instead of a DatasetError
    "00000803800000000000000480000000",
    "00000803800000008000000000000008",
]
# dims 2^32-1 x 2^32-265 x 0: no payload, so the sizes agreed, but NumPy cannot hold the shape
FOUND_ZERO = ["00000803ffffffffffffff0900000000", "00000803ffffffffffffffff00000000"]


@pytest.mark.parametrize("hexdata", FOUND)
def test_found_inputs_raise_dataset_error(hexdata, tmp_path):
    data = bytes.fromhex(hexdata)
    with pytest.raises(DatasetError, match=r"<bytes>: truncated: header declares 2147483648x"):
        parse_idx(data)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DatasetError, match=r"x\.idx: truncated: header declares"):
        read_idx(path)


@pytest.mark.parametrize("hexdata", FOUND_ZERO)
def test_found_zero_item_shapes_raise_dataset_error(hexdata):
    with pytest.raises(DatasetError, match=r"<bytes>: header declares \d+x\d+x\d+, a shape NumPy"):
        parse_idx(bytes.fromhex(hexdata))
