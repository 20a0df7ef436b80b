"""Make the offline MNIST sample shipped in python/ferrograd/data/mnist-sample.

The first N training and M test images of the full MNIST files (which are close to
class-balanced), written as gzip IDX files (reproducible: no name, mtime 0) plus a
SHA256SUMS of the decompressed bytes that ``ferrograd.datasets`` verifies.

    python scripts/make_mnist_sample.py /path/to/mnist [--train 5000] [--test 1000]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
from ferrograd.datasets import IMAGE_MAGIC, LABEL_MAGIC, MNIST, read_idx, sample_dir


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: big-endian magic, dimensions, then the bytes."""
    magic = IMAGE_MAGIC if arr.ndim == 3 else LABEL_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist_dir", type=Path, help="folder with the four full MNIST files")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=sample_dir())
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    sums = []
    for spec in MNIST.files:
        path = args.mnist_dir / f"{spec.name}.gz"
        if not path.exists():
            path = args.mnist_dir / spec.name
        full = read_idx(path, spec)  # verified against the published checksums
        n = args.train if spec.name.startswith("train") else args.test
        raw = idx_bytes(full[:n])
        (args.out / f"{spec.name}.gz").write_bytes(gzip_bytes(raw))
        sums.append(f"{hashlib.sha256(raw).hexdigest()}  {spec.name}.gz")
        if spec.kind == "labels":
            counts = np.bincount(full[:n], minlength=10)
            print(f"{spec.name}: {n} labels, per class {counts.tolist()}")
    (args.out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    total = sum(p.stat().st_size for p in args.out.glob("*.gz"))
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
