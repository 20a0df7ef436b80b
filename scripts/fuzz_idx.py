"""Fuzz the IDX reader of ``ferrograd.datasets``: parse to the declared shape or raise cleanly.

The contract checked on every input (the bytes of an IDX file, raw or gzip):

- ``parse_idx`` / ``read_idx`` return a uint8 array whose shape is the header's dimensions and
  whose bytes are the file's payload, or raise ``DatasetError`` (a ValueError) or ``OSError``;
- the loader (``_load_folder``, what ``load_mnist`` runs on a folder) returns arrays of the
  book's shapes, or raises one of those two;
- nothing else: no other exception, no hang (``--timeout`` seconds per input), no crash.

Seeds are small valid files built from the real MNIST headers (images 0x00000803 n×28×28,
labels 0x00000801 n) and the first images of the shipped sample, raw and gzip-compressed.
Engines: ``atheris`` (coverage-guided libFuzzer, run in a child process; half of its
mutations are the structured ones below) when ``pip install atheris`` works, else
``mutate``: a seeded structured mutation fuzzer (bit flips, byte insert/delete, header field
edits with boundary values, truncation at every length, gzip wrapping and corruption, counts
inconsistent with the length, splices), keeping inputs that reach a new outcome.

    python scripts/fuzz_idx.py --seconds 600            # atheris if installed, else mutate
    python scripts/fuzz_idx.py --engine mutate --seconds 5 --seed 1

Prints executions, outcome counts and the distinct error messages (numbers replaced by N);
after a contract violation it goes on, and at the end prints each distinct violation (input in
hex, traceback) and exits 1.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Imported under atheris instrumentation when that engine runs (see _atheris_child).
datasets = None  # ferrograd.datasets, set by _import_target

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
ALLOWED = (ValueError, OSError)  # DatasetError is checked separately (a ValueError subclass)
# Header values near every boundary the parser compares against: 0, sizes of the seeds,
# 28, byte and word limits, and products that wrap a 64-bit integer (2^31 · 2^31 · 4 = 2^64).
INTERESTING = [
    0, 1, 2, 3, 9, 10, 27, 28, 29, 255, 256, 784, 10000, 60000, 65535, 65536,
    2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32 - 2, 2**16 + 1,
]  # fmt: skip
MAGICS = [IMAGE_MAGIC, LABEL_MAGIC, 0x00000800, 0x00000802, 0x00000804, 0x00000808,
          0x00000B01, 0x00000D03, 0x01000803, 0x08030000, 0xFFFFFFFF, 0]  # fmt: skip


def _import_target() -> None:
    global datasets
    import ferrograd.datasets as ds

    datasets = ds


# --------------------------------------------------------------------------- seeds


def _sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The first 3 images and 10 labels of the shipped MNIST sample (real MNIST bytes)."""
    assert datasets is not None
    folder = datasets.sample_dir()
    images = datasets.read_idx(folder / "train-images-idx3-ubyte.gz")[:3]
    labels = datasets.read_idx(folder / "train-labels-idx1-ubyte.gz")[:10]
    return np.array(images), np.array(labels)


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of a uint8 array: magic 0x0000080<ndim>, big-endian dims, payload."""
    magic = 0x800 | arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


def make_seeds() -> list[bytes]:
    """Valid small files, raw and gzip, plus real full-size headers over short payloads."""
    images, labels = _sample_arrays()
    raw = [idx_bytes(images[:n]) for n in (1, 2, 3)] + [idx_bytes(labels[:n]) for n in (1, 2, 10)]
    raw.append(idx_bytes(images[:0]))
    raw.append(idx_bytes(labels[:0]))
    # The real headers (60000 and 10000 items) in front of two items: counts disagree.
    for count in (60000, 10000):
        raw.append(
            IMAGE_MAGIC.to_bytes(4, "big")
            + b"".join(v.to_bytes(4, "big") for v in (count, 28, 28))
            + images[:2].tobytes()
        )
        raw.append(LABEL_MAGIC.to_bytes(4, "big") + count.to_bytes(4, "big") + labels[:2].tobytes())
    return raw + [gz(r) for r in raw[:6]]


# --------------------------------------------------------------------------- mutations


def _header_edit(d: bytearray, rng: random.Random) -> bytearray:
    if len(d) < 4:
        return d
    field = rng.randrange(0, max(1, min(4, len(d) // 4)))
    if field == 0 and rng.random() < 0.4:
        value = rng.choice(MAGICS)
    else:
        value = rng.choice(INTERESTING)
        if rng.random() < 0.3:
            value = max(0, min(2**32 - 1, value + rng.choice((-1, 1))))
    d[4 * field : 4 * field + 4] = value.to_bytes(4, "big")
    return d


def _wrapping_dims(d: bytearray, rng: random.Random) -> bytearray:
    """Image dims whose product is a multiple of 2^64 (zero in 64-bit arithmetic)."""
    if len(d) < 16:
        return d
    d[0:4] = IMAGE_MAGIC.to_bytes(4, "big")
    for i, v in enumerate(rng.sample([2**31, 2**31, rng.choice((4, 8, 12))], 3)):
        d[4 + 4 * i : 8 + 4 * i] = v.to_bytes(4, "big")
    if rng.random() < 0.5:
        del d[16:]  # no payload: the length matches the wrapped product
    return d


def _count_vs_length(d: bytearray, rng: random.Random) -> bytearray:
    """Change the count field by a little, or the length by a little, not both."""
    if len(d) < 8:
        return d
    if rng.random() < 0.5:
        count = int.from_bytes(d[4:8], "big")
        d[4:8] = max(0, min(2**32 - 1, count + rng.choice((-2, -1, 1, 2, 100)))).to_bytes(4, "big")
    elif rng.random() < 0.5:
        del d[len(d) - rng.randint(1, min(len(d), 784)) :]
    else:
        d += bytes(rng.randint(1, 784))
    return d


def _gzip_ops(d: bytearray, rng: random.Random) -> bytearray:
    choice = rng.randrange(6)
    if d[:2] == b"\x1f\x8b" and choice < 3:
        data = bytearray(d)
        if choice == 0:  # flip a byte of the deflate stream or its trailer (CRC, size)
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif choice == 1:  # truncate the compressed stream
            del data[rng.randrange(len(data)) :]
        else:  # trailing garbage or a second member
            data += gz(bytes(rng.randbytes(8))) if rng.random() < 0.5 else rng.randbytes(5)
        return data
    if choice == 3:  # FEXTRA / FNAME flags with nonsense lengths
        data = bytearray(gz(bytes(d)))
        data[3] = rng.choice((0x04, 0x08, 0x10, 0x02, 0xE0))
        return data
    if choice == 4:  # a gzip of a gzip
        return bytearray(gz(gz(bytes(d))))
    return bytearray(gz(bytes(d), mtime=rng.randrange(2**32)))


def mutate(data: bytes, rng: random.Random, corpus: list[bytes] | None = None) -> bytes:
    """One to three stacked structured mutations of ``data``."""
    d = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(11)
        n = len(d)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                d[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # random byte insert
            i = rng.randrange(n + 1)
            d[i:i] = rng.randbytes(rng.choice((1, 1, 2, 4, 28, 784)))
        elif op == 2 and n:  # byte delete
            i = rng.randrange(n)
            del d[i : i + rng.choice((1, 1, 2, 4, 28, 784))]
        elif op == 3:
            d = _header_edit(d, rng)
        elif op == 4 and n:  # truncation at a random length (every length: see _truncations)
            del d[rng.randrange(n) :]
        elif op == 5:
            d = _gzip_ops(d, rng)
        elif op == 6:
            d = _count_vs_length(d, rng)
        elif op == 7 and corpus:  # splice with another input
            other = rng.choice(corpus)
            cut = rng.randrange(n + 1)
            d = d[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op == 8 and n:  # overwrite with boundary bytes
            i = rng.randrange(n)
            d[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x08, 0x1F, 0x8B))
        elif op == 9:
            d = _wrapping_dims(d, rng)
        elif op == 10 and n > 16:  # duplicate a chunk (payload longer than declared)
            i = rng.randrange(n)
            d[i:i] = d[i : i + rng.randint(1, 64)]
    return bytes(d)


def _truncations(seeds: list[bytes]) -> list[bytes]:
    """Every prefix of every seed (the raw and the gzip ones)."""
    return [s[:k] for s in seeds for k in range(len(s))]


# --------------------------------------------------------------------------- the target


class Violation(Exception):
    """The contract was broken; the message says how."""


def _declared(data: bytes) -> tuple[int, ...]:
    ndim = int.from_bytes(data[:4], "big") & 0xFF
    return tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def _decompressed(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


class Target:
    """Runs one input through the public readers and the loader; records the outcome."""

    def __init__(self, workdir: Path) -> None:
        assert datasets is not None
        ds = datasets
        self.workdir = workdir
        images, labels = _sample_arrays()
        # Specs of a four-file folder: train 2 images/labels, test 1 (counts the seeds hit).
        self.valid = [idx_bytes(images[:2]), idx_bytes(labels[:2]), idx_bytes(images[:1]),
                      idx_bytes(labels[:1])]  # fmt: skip
        names = [f.name for f in ds.MNIST.files]
        self.specs = tuple(
            ds.IdxFile(name, kind, count, frozenset([hashlib.sha256(v).hexdigest()]))
            for name, kind, count, v in zip(
                names, ("images", "labels") * 2, (2, 2, 1, 1), self.valid, strict=True
            )
        )
        self.folder = workdir / "folder"
        self.folder.mkdir(parents=True, exist_ok=True)
        for spec, data in zip(self.specs, self.valid, strict=True):
            (self.folder / spec.name).write_bytes(data)
        self.path = workdir / "input.idx"
        self.execs = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.messages: set[str] = set()
        # distinct violations: normalized message -> first input and traceback
        self.violations: dict[str, dict[str, str]] = {}

    def run_checked(self, data: bytes) -> tuple[str, ...]:
        """:meth:`run`, recording a violation (first input per message) instead of raising."""
        try:
            return tuple(self.run(data))
        except Violation as exc:
            key = re.sub(r"\d+", "N", str(exc))
            if key not in self.violations and len(self.violations) < 50:
                self.violations[key] = {
                    "message": str(exc),
                    "input_hex": data.hex(),
                    "traceback": traceback.format_exc(),
                }
            return ("violation", key)

    def _record(self, what: str, exc: BaseException) -> str:
        assert datasets is not None
        if isinstance(exc, Violation) or not isinstance(exc, ALLOWED):
            raise Violation(f"{what}: {type(exc).__name__}: {exc}") from exc
        if isinstance(exc, ValueError) and not isinstance(exc, datasets.DatasetError):
            raise Violation(f"{what}: a ValueError that is not a DatasetError: {exc}") from exc
        text = str(exc).replace(str(self.workdir), "<dir>")
        self.messages.add(f"{type(exc).__name__}: {text}")
        template = re.sub(r"[0-9a-f]{64}", "<sha256>", text)
        template = re.sub(r"\b0x[0-9a-f]+\b", "<hex>", template)
        template = re.sub(r"b'[^']*'", "b'...'", template)
        template = re.sub(r"(?<![a-wyz\d])\d+", "N", template)  # not the 10 and 3 of t10k-...idx3
        key = f"{type(exc).__name__}: {template}"
        self.outcomes[key] += 1
        return key

    def _check_array(self, what: str, arr: np.ndarray, raw: bytes) -> str:
        dims = _declared(raw)
        if arr.dtype != np.uint8 or arr.shape != dims:
            raise Violation(f"{what}: got {arr.dtype}{arr.shape}, header declares {dims}")
        if arr.tobytes() != raw[4 + 4 * len(dims) :]:
            raise Violation(f"{what}: array bytes differ from the file's payload")
        key = f"ok: {len(dims)}-d array"
        self.outcomes[key] += 1
        return key

    def run(self, data: bytes) -> list[str]:
        """The outcome keys of the four checks; raises Violation on a broken contract."""
        assert datasets is not None
        ds = datasets
        self.execs += 1
        keys = []
        # 1. parse_idx on the bytes as given (gzip bytes are simply a wrong magic here).
        try:
            keys.append(self._check_array("parse_idx", ds.parse_idx(data), data))
        except Exception as exc:
            keys.append(self._record("parse_idx", exc))
        # 2./3. read_idx from a file, without and with a spec (kind, count, 28x28, SHA-256).
        self.path.write_bytes(data)
        for spec in (None, self.specs[self.execs % 2]):
            what = f"read_idx(spec={spec and spec.kind})"
            try:
                arr = ds.read_idx(self.path, spec)
                keys.append(self._check_array(what, arr, _decompressed(data)))
            except Exception as exc:
                keys.append(self._record(what, exc))
        # 4. the loader, with the input in place of one of the four files.
        slot = self.execs % 4
        target = self.folder / self.specs[slot].name
        target.write_bytes(data)
        flatten, one_hot = bool(self.execs & 4), bool(self.execs & 8)
        try:
            (x, t), (xt, tt) = ds._load_folder(
                self.folder, self.specs, True, flatten, one_hot, np.dtype(np.float32), False
            )
            n_train = x.shape[0]
            want_x = (n_train, 784) if flatten else (n_train, 1, 28, 28)
            want_t = (n_train, 10) if one_hot else (n_train,)
            if x.shape != want_x or t.shape != want_t or xt.shape[1:] != x.shape[1:]:
                raise Violation(f"loader: shapes {x.shape} {t.shape} {xt.shape} {tt.shape}")
            if not (np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1):
                raise Violation("loader: normalized images outside [0, 1]")
            keys.append("ok: loader")
            self.outcomes["ok: loader"] += 1
        except Exception as exc:
            keys.append(self._record("loader", exc))
        finally:
            target.write_bytes(self.valid[slot])
        return keys

    def stats(self) -> dict[str, object]:
        return {
            "execs": self.execs,
            "outcomes": dict(self.outcomes.most_common()),
            "distinct_messages": len(self.messages),
            "distinct_templates": len(self.outcomes),
            "violations": list(self.violations.values()),
        }


# --------------------------------------------------------------------------- engines


def _alarm(seconds: float) -> Callable[[], None]:
    """Raise TimeoutError in the main thread if one input takes longer than ``seconds``."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Violation(f"hang: one input took more than {seconds:g} s")  # caught per input

    signal.signal(signal.SIGALRM, on_alarm)
    return lambda: signal.setitimer(signal.ITIMER_REAL, seconds)


def run_mutate(seconds: float, seed: int, timeout: float, workdir: Path) -> dict[str, object]:
    """The structured mutation fuzzer; returns stats (and ``violation`` if one was found)."""
    rng = random.Random(seed)
    target = Target(workdir)
    seeds = make_seeds()
    corpus = list(seeds)
    seen: set[tuple[str, ...]] = set()
    arm = _alarm(timeout)
    deadline = time.monotonic() + seconds
    # Deterministic phase first: the seeds and every truncation of each (within the time).
    schedule = iter(seeds + _truncations(seeds))
    result: dict[str, object] = {}
    while time.monotonic() < deadline:
        data = next(schedule, None) or mutate(rng.choice(corpus), rng, corpus)
        arm()
        keys = target.run_checked(data)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if keys not in seen:  # a new combination of outcomes: keep it as a parent
            seen.add(keys)
            if len(data) <= 1 << 16:
                corpus.append(data)
    result.update(target.stats())
    result["corpus"] = len(corpus)
    result["messages"] = sorted(target.messages)
    return result


def _atheris_child(args: argparse.Namespace) -> None:
    """Runs under libFuzzer; writes stats to ``args.stats`` every second and at the end."""
    import atheris

    global datasets
    with atheris.instrument_imports(include=["ferrograd"]):
        import ferrograd.datasets as ds
    datasets = ds
    workdir = Path(args.workdir)
    target = Target(workdir)
    stats_path = Path(args.stats)
    started = time.monotonic()
    last = [0.0]
    deadline = started + args.seconds

    def dump() -> None:
        out = target.stats()
        out["messages"] = sorted(target.messages)
        out["seconds"] = time.monotonic() - started
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, stats_path)

    def test_one_input(data: bytes) -> None:
        target.run_checked(data)
        now = time.monotonic()
        if now - last[0] > 1.0 or now > deadline:
            last[0] = now
            dump()

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return mutate(data, rng)[:max_size]

    corpus = workdir / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(make_seeds()):
        (corpus / f"seed{i:02d}").write_bytes(s)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={int(args.seconds)}",
        f"-timeout={int(args.timeout)}",
        "-max_len=8192",
        "-rss_limit_mb=2048",
        f"-seed={args.seed}",
        f"-artifact_prefix={workdir}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def run_atheris(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    stats = workdir / "stats.json"
    cmd = [sys.executable, __file__, "--child", "--seconds", str(args.seconds), "--seed",
           str(args.seed), "--timeout", str(args.timeout), "--workdir", str(workdir), "--stats",
           str(stats)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    result: dict[str, object] = json.loads(stats.read_text()) if stats.exists() else {}
    result["engine_exit_code"] = proc.returncode
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    if m:
        result["libfuzzer_execs"] = int(m.group(1))
    m = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", proc.stderr)
    if m:
        result["coverage_edges"], result["features"], result["corpus"] = map(int, m[-1])
    if proc.returncode != 0:  # a crash, timeout or out-of-memory that libFuzzer caught
        crash = {"message": f"engine exited {proc.returncode}", "traceback": proc.stderr[-4000:]}
        result["violations"] = [*result.get("violations", []), crash]  # type: ignore[list-item]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    parser.add_argument("--json", type=Path, help="also write the stats to this file")
    parser.add_argument("--top", type=int, default=30, help="outcome templates to print")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _atheris_child(args)
        return 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "mutate"
        else:
            engine = "atheris"
    workdir = Path(tempfile.mkdtemp(prefix="fuzz_idx."))
    try:
        if engine == "atheris":
            result = run_atheris(args, workdir)
        else:
            _import_target()
            result = run_mutate(args.seconds, args.seed, args.timeout, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["engine"] = engine
    print(f"engine {engine} | {args.seconds:g} s | {result.get('execs', 0)} executions")
    outcomes: dict[str, int] = result.get("outcomes", {})  # type: ignore[assignment]
    for key, count in list(outcomes.items())[: args.top]:
        print(f"{count:>9}  {key}")
    if len(outcomes) > args.top:
        print(f"{'':>9}  ... {len(outcomes) - args.top} more outcome templates")
    print(
        f"outcome templates: {len(outcomes)} | distinct error messages: "
        f"{result.get('distinct_messages', 0)} | violations: {len(result.get('violations', []))}"  # type: ignore[arg-type]
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    violations: list[dict[str, str]] = result.get("violations", [])  # type: ignore[assignment]
    for v in violations:
        print("CONTRACT VIOLATION:", v["message"], file=sys.stderr)
        print(v.get("traceback", ""), file=sys.stderr)
        print("input:", v.get("input_hex", "")[:2000], file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
