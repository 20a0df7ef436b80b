"""MNIST and Fashion-MNIST from their IDX files: parse, verify, find, download, cache.

``load_mnist`` keeps the book's signature and shapes (DLFS dataset/mnist.py):
images (60000, 784) or (60000, 1, 28, 28), labels (60000,) or one-hot (60000, 10).
Unlike the book it checks every file (magic number, declared counts against the byte
length, SHA-256 of the decompressed bytes) and says which file is wrong and how.

Where the files are looked for, first hit wins (a folder holding all four files):
``data_dir`` → ``$FERROGRAD_DATA`` → system folders (Debian's ``dataset-fashion-mnist``)
→ the user cache (``$XDG_CACHE_HOME/ferrograd/<name>`` or ``~/.cache/ferrograd/<name>``)
→ a download into that cache from the mirrors (``$FERROGRAD_MNIST_MIRRORS`` overrides).
A 5,000/1,000 image subset of MNIST ships with the package: ``dataset="sample"``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import signal
import stat
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias, TypeVar, overload

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ferrograd import _core
from ferrograd.functions import check_dtype

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetSpec",
    "DownloadError",
    "IdxFile",
    "MnistData",
    "cache_dir",
    "download",
    "find_data_dir",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_sample",
    "read_idx",
    "sample_dir",
]

_X = TypeVar("_X", bound=np.generic)
_T = TypeVar("_T", bound=np.generic)
#: ``(x_train, t_train), (x_test, t_test)``: images of scalar type _X, targets of _T.
MnistData: TypeAlias = tuple[tuple[NDArray[_X], NDArray[_T]], tuple[NDArray[_X], NDArray[_T]]]

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_CHUNK = 1 << 16


class DatasetError(ValueError):
    """A dataset file is missing, malformed, or fails its checksum; the message names it."""


class DownloadError(DatasetError):
    """No mirror delivered a valid file; the message lists each attempt and what to do."""


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset: its name, kind, expected count and accepted SHA-256 sums.

    A file passes its check when either the sum of its decompressed bytes is in ``sha256``
    or the sum of the file itself in ``gz_sha256``.

    Attributes
    ----------
    name : str
        File name without ``.gz``, e.g. ``train-images-idx3-ubyte``.
    kind : {"images", "labels"}
        What it holds.
    count : int
        Number of images or labels it must declare.
    sha256 : frozenset of str
        Accepted SHA-256 sums of the decompressed bytes (hex).
    gz_sha256 : frozenset of str
        Accepted SHA-256 sums of published ``.gz`` files.
    """

    name: str
    kind: str  # "images" or "labels"
    count: int
    sha256: frozenset[str]
    gz_sha256: frozenset[str] = frozenset()

    @property
    def magic(self) -> int:
        """The IDX magic number its header must hold: 0x0803 for images, 0x0801 for labels."""
        return IMAGE_MAGIC if self.kind == "images" else LABEL_MAGIC

    @property
    def nbytes(self) -> int:
        """Bytes of the decompressed file: the IDX header, then 28x28 pixels or a label each."""
        return 16 + self.count * 784 if self.kind == "images" else 8 + self.count

    @property
    def download_limit(self) -> int:
        """Most bytes a download of this file may take: the decompressed size plus what
        gzip adds at worst (5 bytes per stored 64 KiB block, header and trailer)."""
        return self.nbytes + self.nbytes // 8192 + 4096


@dataclass(frozen=True)
class DatasetSpec:
    """A four-file IDX dataset: the files, its mirrors and extra folders to look in.

    Attributes
    ----------
    name : str
        Key in :data:`DATASETS` and the cache folder's name, e.g. "mnist".
    title : str
        Name for messages, e.g. "MNIST".
    files : tuple of IdxFile
        Train images, train labels, test images, test labels.
    mirrors : tuple of str
        Base URLs to download from, in order.
    mirrors_env : str or None
        Environment variable whose comma-separated URLs replace ``mirrors``.
    system_dirs : tuple of str
        Folders of system packages to look in (Debian's ``dataset-fashion-mnist``).
    license : str
        The data's license and authors.
    """

    name: str
    title: str
    files: tuple[IdxFile, IdxFile, IdxFile, IdxFile]  # train images, train labels, test ...
    mirrors: tuple[str, ...] = ()
    mirrors_env: str | None = None
    system_dirs: tuple[str, ...] = field(default=())
    license: str = ""


def _file(name: str, kind: str, count: int, sha: Sequence[str], gz: Sequence[str] = ()) -> IdxFile:
    return IdxFile(name, kind, count, frozenset(sha), frozenset(gz))


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    files=(
        _file(
            "train-images-idx3-ubyte",
            "images",
            60000,
            ["ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"],
            ["440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"],
        ),
        _file(
            "train-labels-idx1-ubyte",
            "labels",
            60000,
            ["65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"],
            ["3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"],
        ),
        _file(
            "t10k-images-idx3-ubyte",
            "images",
            10000,
            ["0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"],
            ["8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"],
        ),
        _file(
            "t10k-labels-idx1-ubyte",
            "labels",
            10000,
            ["ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"],
            ["f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"],
        ),
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    mirrors_env="FERROGRAD_MNIST_MIRRORS",
    license="CC BY-SA 3.0; Yann LeCun, Corinna Cortes, Christopher J.C. Burges",
)

# Decompressed sums: the Debian package dataset-fashion-mnist (upstream git 55506a9);
# .gz sums: the files published on the zalandoresearch mirror.
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files=(
        _file(
            "train-images-idx3-ubyte",
            "images",
            60000,
            ["c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"],
            ["3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"],
        ),
        _file(
            "train-labels-idx1-ubyte",
            "labels",
            60000,
            ["bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"],
            ["a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"],
        ),
        _file(
            "t10k-images-idx3-ubyte",
            "images",
            10000,
            ["5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"],
            ["346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"],
        ),
        _file(
            "t10k-labels-idx1-ubyte",
            "labels",
            10000,
            ["0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"],
            ["67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"],
        ),
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    mirrors_env="FERROGRAD_FASHION_MNIST_MIRRORS",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    license="MIT; Zalando SE (Han Xiao, Kashif Rasul, Roland Vollgraf)",
)

DATASETS: dict[str, DatasetSpec] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


# --------------------------------------------------------------------------- parsing


def open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` opened for reading, or ValueError when it is not a regular file (a FIFO or
    device would block or never end). Opened without blocking, then checked."""
    if path.is_dir():  # open() itself would say IsADirectoryError
        raise DatasetError(f"{path}: is a directory; expected {what}")
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    fh = open(path, "rb", opener=lambda p, flags: os.open(p, flags | nonblocking))
    try:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise DatasetError(f"{path}: is {kind}; expected {what}")
        if nonblocking:
            os.set_blocking(fh.fileno(), True)
        return fh
    except BaseException:
        fh.close()
        raise


def _read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip by magic bytes, else raw), read no
    further than one byte past the size its IDX header declares (a small file that
    inflates to gigabytes is refused at that point, not after)."""
    with open_regular(path, "an IDX file") as fh:
        try:
            gz = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            if not gz:
                return _read_idx_stream(fh, path)
            with gzip.GzipFile(fileobj=fh, mode="rb") as zf:
                return _read_idx_stream(zf, path)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def _read_idx_stream(fh: Any, path: Path) -> bytes:
    data = fh.read(4)
    magic = int.from_bytes(data, "big") if len(data) == 4 else 0
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        return data + fh.read(64)  # enough for parse_idx to say what is wrong
    ndim = magic & 0xFF
    data += fh.read(4 * ndim)
    if len(data) < 4 + 4 * ndim:
        return data
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + math.prod(dims)
    parts = [data]
    have = len(data)
    while have < expected:  # in pieces: a declared size may exceed what one read can ask
        piece = fh.read(min(expected - have, 1 << 24))
        if not piece:
            break
        parts.append(piece)
        have += len(piece)
    data = b"".join(parts)
    # Past the declared size, read a bounded amount more: a corrupt stream still says so,
    # and a bomb inflates 1 MiB, not gigabytes.
    if len(data) == expected and fh.read(1 << 20):
        raise DatasetError(
            f"{path}: too long: header declares {'x'.join(map(str, dims))} ({expected} bytes) "
            "but the data goes on; stopped reading there"
        )
    return data


def parse_idx(data: bytes, spec: IdxFile | None = None, *, source: str = "<bytes>") -> NDArray:
    """uint8 array of an IDX buffer: (count, rows, cols) images or (count,) labels.

    Checks the magic number (0x0803 images / 0x0801 labels), the declared dimensions
    against the byte length, and, with ``spec``, the kind and count. A view, no copy.
    """
    if len(data) == 0:
        raise DatasetError(f"{source}: file is empty")
    if len(data) < 8:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise DatasetError(
            f"{source}: wrong magic number 0x{magic:08x}; expected 0x{IMAGE_MAGIC:08x} (images) "
            f"or 0x{LABEL_MAGIC:08x} (labels)"
        )
    if spec is not None and magic != spec.magic:
        raise DatasetError(
            f"{source}: wrong magic number 0x{magic:08x}; expected 0x{spec.magic:08x} ({spec.kind})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)  # exact: an int64 product of three u32 dims can wrap
    if len(data) < expected:
        raise DatasetError(
            f"{source}: truncated: header declares {'x'.join(map(str, dims))} "
            f"({expected} bytes) but the file has {len(data)} bytes"
        )
    if len(data) > expected:
        raise DatasetError(
            f"{source}: too long: header declares {'x'.join(map(str, dims))} "
            f"({expected} bytes) but the file has {len(data)} bytes"
        )
    if spec is not None and dims[0] != spec.count:
        raise DatasetError(f"{source}: declares {dims[0]} {spec.kind}; expected {spec.count}")
    if ndim == 3 and spec is not None and dims[1:] != (28, 28):
        raise DatasetError(f"{source}: images are {dims[1]}x{dims[2]}; expected 28x28")
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    except ValueError as exc:  # e.g. 0 x 2^32-1 x 2^32-1: no bytes, but too big for NumPy
        raise DatasetError(
            f"{source}: header declares {'x'.join(map(str, dims))}, a shape NumPy cannot hold"
        ) from exc


def read_idx(
    path: str | os.PathLike[str], spec: IdxFile | None = None, *, checksums: bool = True
) -> NDArray[np.uint8]:
    """Read and check one IDX file (gzip or raw) into a uint8 array.

    Checks the magic number, the declared dimensions against the byte length and, with
    ``spec``, the kind, the count and (with ``checksums``) the SHA-256 sums. A file that
    fails but is a known file of another kind (the other dataset's, the shipped sample's,
    another file of the same set) is named as such, never called corrupt.

    Parameters
    ----------
    path : str or path-like
        The file, gzip-compressed or raw.
    spec : IdxFile, optional
        What the file must be.
    checksums : bool, default True
        Check ``spec``'s SHA-256 sums.

    Returns
    -------
    numpy.ndarray of uint8
        (count, rows, cols) images or (count,) labels; a read-only view of the bytes.

    Raises
    ------
    DatasetError
        The file is missing its header, truncated, too long, corrupt, not a regular file,
        or does not match ``spec`` (the message names the file and the expectation).
    FileNotFoundError
        No such file.
    """
    return _read_idx(Path(path), spec, checksums)


def _read_idx(
    path: Path, spec: IdxFile | None, checksums: bool, *, downloaded: bool = False
) -> NDArray[np.uint8]:
    data = _read_bytes(path)
    try:
        arr = parse_idx(data, spec, source=str(path))
        if spec is not None and checksums:
            _check_sha(path, data, spec)
    except DatasetError as exc:
        known = _known_file_message(path, data, spec, downloaded) if spec is not None else None
        if known is None:
            raise
        raise DatasetError(known) from exc
    return arr


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha(path: Path, data: bytes, spec: IdxFile) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest in spec.sha256:
        return
    file_digest = _sha256_file(path)
    if file_digest in spec.gz_sha256:
        return
    raise DatasetError(
        f"{path}: checksum mismatch: SHA-256 of the decompressed bytes is {digest}, expected "
        f"{' or '.join(sorted(spec.sha256))}"
        + (
            f" (or a published .gz with SHA-256 {' or '.join(sorted(spec.gz_sha256))})"
            if spec.gz_sha256
            else ""
        )
        + "; it is no file of MNIST, Fashion-MNIST or the sample: the file is corrupt or "
        "altered (a download of it: delete it and fetch it again)"
    )


# --------------------------------------------------------------------------- known files

_SAMPLE_TITLE = "the shipped MNIST sample"


def _titles() -> dict[str, str]:
    return {**{name: ds.title for name, ds in DATASETS.items()}, "sample": _SAMPLE_TITLE}


def _known_sets() -> dict[str, Sequence[IdxFile]]:
    """Every dataset whose files are known by checksum, the sample included."""
    return {**{name: ds.files for name, ds in DATASETS.items()}, "sample": _sample_specs()}


def _identify(data: bytes) -> tuple[str, IdxFile] | None:
    """(dataset name, file) of decompressed IDX bytes that are a known file, else None."""
    digest = hashlib.sha256(data).hexdigest()
    for name, files in _known_sets().items():
        for f in files:
            if digest in f.sha256:
                return name, f
    return None


def _dataset_of(spec: IdxFile) -> str | None:
    for name, files in _known_sets().items():
        if spec in files:
            return name
    return None


def _known_file_message(path: Path, data: bytes, spec: IdxFile, downloaded: bool) -> str | None:
    """What a file that is not ``spec`` really is, and what to do, when it is a known file
    (never "delete it": it is a valid file, only in the wrong place); None if unknown."""
    found = _identify(data)
    expected = _dataset_of(spec)
    if found is None or expected is None or found == (expected, spec):
        return None
    name, f = found
    titles = _titles()
    what = f"{path}: is {titles[name]}'s {f.name} ({f.count:,} {f.kind})"
    if downloaded:
        return f"{what}, not {titles[expected]}'s {spec.name}: the mirror serves another file"
    if name == expected:
        return (
            f"{what}, not {spec.name} ({spec.count:,} {spec.kind}): the file is misnamed; "
            f"give it its own name ({f.name}.gz or {f.name})"
        )
    if name == "sample":
        return (
            f"{what}, not the full {titles[expected]} file {spec.name} ({spec.count:,} "
            f"{spec.kind}): load the sample with dataset='sample' (--dataset sample), or point "
            f"data_dir (--data-dir) to a folder with the full {titles[expected]} files"
        )
    folders = " and ".join(f"{n}/" for n in DATASETS)
    return (
        f"{what}, not {titles[expected]}'s {spec.name}: a valid {titles[name]} file, keep "
        f"it. For {titles[expected]}, point data_dir (--data-dir, $FERROGRAD_DATA) to a folder "
        f"with the {titles[expected]} files, or to a parent folder with {folders} subfolders"
    )


def _other_dataset_message(label: str, folder: Path, ds: DatasetSpec, other: str) -> str:
    title = _titles()[other]
    where = "data_dir (--data-dir)" if label == "data_dir" else f"{label} (or data_dir, --data-dir)"
    if other == "sample":
        return (
            f"{label}={folder} holds {title} (5,000 training and 1,000 test images), not the "
            f"full {ds.title}: load it with dataset='sample' (--dataset sample), or point "
            f"{where} to a folder with the full {ds.title} files"
        )
    folders = " and ".join(f"{n}/" for n in DATASETS)
    return (
        f"{label}={folder} holds the {title} files, not {ds.title}'s (they are valid: keep "
        f"them). For {ds.title}, point {where} to a folder with the {ds.title} files, or to "
        f"a parent folder with {folders} subfolders"
    )


def _holds_other_dataset(folder: Path, ds: DatasetSpec) -> str | None:
    """The name of the known dataset other than ``ds`` whose training labels are in
    ``folder`` under ``ds``'s file name (a small file: 60,008 bytes), else None."""
    path = _locate(folder, ds.files[1])
    if path is None:
        return None
    try:
        found = _identify(_read_bytes(path))
    except (OSError, DatasetError):
        return None  # unreadable or malformed: the load says what is wrong with it
    if found is None or found[0] == ds.name:
        return None
    return found[0]


# --------------------------------------------------------------------------- locating


def cache_dir(name: str = "mnist") -> Path:
    """The user cache folder of a dataset: ``$XDG_CACHE_HOME/ferrograd/<name>``.

    Parameters
    ----------
    name : str, default "mnist"
        The dataset's name.

    Returns
    -------
    pathlib.Path
        ``~/.cache/ferrograd/<name>`` when ``XDG_CACHE_HOME`` is not set; not created.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrograd" / name


def sample_dir() -> Path:
    """The folder of the shipped MNIST sample (5,000 train / 1,000 test images).

    Returns
    -------
    pathlib.Path
        Inside the installed package.
    """
    return Path(__file__).resolve().parent / "data" / "mnist-sample"


def _locate(folder: Path, spec: IdxFile) -> Path | None:
    """The file of ``spec`` in ``folder``: ``name.gz`` or ``name``, or as some copies spell
    it (Kaggle's ``train-images.idx3-ubyte``); the checksums say whether it is the one."""
    dotted = spec.name.replace("-idx", ".idx")
    for name in (spec.name, dotted):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.exists():
                return candidate
    return None


def _has_all(folder: Path, ds: DatasetSpec) -> bool:
    return all(_locate(folder, f) is not None for f in ds.files)


def find_data_dir(
    ds: DatasetSpec | str = MNIST, data_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The first folder holding all four files of ``ds``, in the order of the module doc.

    ``data_dir``, then ``$FERROGRAD_DATA`` (or its ``<name>`` subfolder), the system
    folders, the user cache. A folder holding another known dataset under these names
    (MNIST where Fashion-MNIST is asked for, the sample where the full set is) is said:
    at once for ``data_dir``; for ``$FERROGRAD_DATA`` (which may be set for the other
    dataset) when no later folder has the files.

    Parameters
    ----------
    ds : DatasetSpec or str, default MNIST
        The dataset, or its name in :data:`DATASETS`.
    data_dir : str or path-like, optional
        Folder to look in first.

    Returns
    -------
    pathlib.Path or None
        The folder, or None when no folder holds all four files.

    Raises
    ------
    DatasetError
        ``data_dir`` or ``$FERROGRAD_DATA`` is given but is not a folder, or holds
        another dataset's files (the message says which, and where to point it).
    ValueError
        ``ds`` is an unknown name.
    """
    explicit: list[tuple[str, Path]] = []
    if data_dir is not None:
        explicit.append(("data_dir", Path(data_dir)))
    env = os.environ.get("FERROGRAD_DATA")
    if env:
        explicit.append(("FERROGRAD_DATA", Path(env)))
    ds = _spec("find_data_dir", ds)
    passed_over: tuple[str, Path, str] | None = None
    for label, folder in explicit:
        if not folder.is_dir():
            what = "is not a directory" if folder.exists() else "no such directory"
            raise DatasetError(f"{label}={folder}: {what}")
        # $FERROGRAD_DATA may name a parent holding one folder per dataset.
        for candidate in (folder, folder / ds.name):
            if not _has_all(candidate, ds):
                continue
            other = _holds_other_dataset(candidate, ds)
            if other is None:
                return candidate
            if label == "data_dir":  # asked for by name: say what it holds, look no further
                raise DatasetError(_other_dataset_message(label, candidate, ds, other))
            passed_over = passed_over or (label, candidate, other)
    for folder in [*map(Path, ds.system_dirs), cache_dir(ds.name)]:
        if folder.is_dir() and _has_all(folder, ds):
            return folder
    if passed_over is not None:  # rather than a download the user may not expect
        label, candidate, other = passed_over
        raise DatasetError(
            _other_dataset_message(label, candidate, ds, other)
            + f"; or unset {label} to download {ds.title} into {cache_dir(ds.name)}"
        )
    return None


# --------------------------------------------------------------------------- download


def _mirrors(ds: DatasetSpec) -> list[str]:
    env = os.environ.get(ds.mirrors_env or "") if ds.mirrors_env else None
    urls = [u.strip() for u in env.split(",") if u.strip()] if env else list(ds.mirrors)
    return [u if u.endswith("/") else u + "/" for u in urls]


def _progress(total: int | None, desc: str, enabled: bool | None):
    """A tqdm bar on a terminal (when tqdm is installed), else a no-op with ``update``."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        try:
            from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

            return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)
        except ImportError:
            pass
    return contextlib.nullcontext(_NullBar())


class _NullBar:
    def update(self, n: int) -> None:
        pass


class _TransferError(DatasetError):
    """One transfer failed; ``retry`` says whether the same mirror is worth another try."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class _Deadline:
    """The total time one transfer may take. The socket timeout bounds each read only, so
    a server trickling a byte a second never trips it: when the time is up, this shuts
    the transfer's sockets down, which ends a read that is waiting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: Any) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: Any) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(2)  # SHUT_RDWR: a blocked recv returns at once


def _watched_opener(deadline: _Deadline) -> Any:
    """A urllib opener whose HTTP(S) connections ``deadline`` watches (redirects
    included: each new connection is watched). urllib (and with it ssl, http.client
    and email) is imported here, by a download, not with the package."""
    import urllib.request

    class _WatchedHandler(urllib.request.AbstractHTTPHandler):
        def do_open(self, http_class: Any, req: Any, **http_conn_args: Any) -> Any:
            def connection(host: str, **kwargs: Any) -> Any:
                conn = http_class(host, **kwargs)
                connect = conn.connect

                def watched_connect() -> None:
                    connect()
                    deadline.watch(conn.sock)

                conn.connect = watched_connect
                return conn

            return super().do_open(connection, req, **http_conn_args)

    class _HTTPHandler(_WatchedHandler, urllib.request.HTTPHandler):
        pass

    class _HTTPSHandler(_WatchedHandler, urllib.request.HTTPSHandler):
        pass

    return urllib.request.build_opener(_HTTPHandler(), _HTTPSHandler())


def _fetch(
    url: str,
    dest: Path,
    spec: IdxFile,
    timeout: float,
    deadline: float,
    progress: bool | None,
) -> None:
    """Stream ``url`` to a temp file beside ``dest``, verify it, then rename it into place.

    The transfer takes at most ``deadline`` seconds in all (``timeout`` per read) and at
    most ``spec.download_limit`` bytes: a larger Content-Length is refused before reading,
    a stream without one is cut at the limit. Nothing partial stays behind, whatever
    stops it (an error, Ctrl-C, SIGTERM).
    """
    from ferrograd.trainer import _catch_sigterm, _restore_sigterm, _Terminated

    limit = spec.download_limit
    old_handler = _catch_sigterm()
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        with _Deadline(deadline) as clock, os.fdopen(fd, "wb") as out:
            opener = _watched_opener(clock)
            got = 0
            try:
                with opener.open(url, timeout=timeout) as resp:
                    kind = resp.headers.get("Content-Type", "")
                    if kind.startswith("text/html"):
                        raise _TransferError(
                            f"{url}: the server sent a web page ({kind}), not {dest.name} "
                            "(a proxy or a login page in the way?)",
                            retry=False,
                        )
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.strip().isdigit() else None
                    if total is not None and total > limit:
                        raise _TransferError(
                            f"{url}: Content-Length is {total} bytes, more than the {limit} "
                            f"bytes {dest.name} can take ({spec.nbytes} bytes uncompressed); "
                            "not downloaded",
                            retry=False,
                        )
                    with _progress(total, spec.name, progress) as bar:
                        # One byte past the limit at most: enough to know it is too long.
                        while chunk := resp.read(min(_CHUNK, limit + 1 - got)):
                            out.write(chunk)
                            got += len(chunk)
                            bar.update(len(chunk))
                            if got > limit:
                                raise _TransferError(
                                    f"{url}: sent more than {limit} bytes, the most "
                                    f"{dest.name} can take ({spec.nbytes} bytes "
                                    "uncompressed); stopped there",
                                    retry=False,
                                )
                            if clock.expired:
                                break
                    if clock.expired:
                        raise TimeoutError
                    if total is not None and got != total:
                        raise _TransferError(
                            f"{url}: transfer truncated ({got} of {total} bytes)", retry=True
                        )
            except Exception as exc:
                if not clock.expired:
                    raise
                raise _TransferError(
                    f"{url}: not finished within the {deadline:g} s deadline ({got} bytes "
                    "received); a slow mirror or connection (download(..., deadline=...) "
                    "allows more)",
                    retry=False,
                ) from exc
        # magic, sizes and checksum before it may take the real name
        _read_idx(tmp, spec, True, downloaded=True)
        os.replace(tmp, dest)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _restore_sigterm(old_handler)
        if isinstance(exc, _Terminated):  # cleaned up: now die of SIGTERM as asked
            os.kill(os.getpid(), signal.SIGTERM)
        raise
    _restore_sigterm(old_handler)


def _spec(op: str, ds: DatasetSpec | str) -> DatasetSpec:
    """``ds`` itself, or the dataset of that name."""
    if isinstance(ds, DatasetSpec):
        return ds
    if isinstance(ds, str) and ds in DATASETS:
        return DATASETS[ds]
    raise ValueError(f"{op}: unknown dataset {ds!r}; expected one of {', '.join(DATASETS)}")


def _positive_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"download: {name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"download: {name} must be a positive number of seconds, got {value}")
    return float(value)


def download(
    ds: DatasetSpec | str = MNIST,
    dest: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float = 600.0,
    retries: int = 2,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the missing files of ``ds`` into ``dest`` (default: the user cache).

    Each file is tried on each mirror in order (``retries`` extra attempts on timeouts and
    server errors, none on 404), streamed to a temp file, verified, then renamed
    atomically; nothing half-written remains. Each transfer waits at most ``timeout``
    seconds for any read, takes at most ``deadline`` seconds in all and at most the file's
    size (plus gzip's overhead) in bytes.

    Parameters
    ----------
    ds : DatasetSpec or str, default MNIST
        The dataset, or its name in :data:`DATASETS`.
    dest : str or path-like, optional
        Folder to download into (created); default :func:`cache_dir`.
    mirrors : sequence of str, optional
        Base URLs instead of the dataset's (or ``$FERROGRAD_MNIST_MIRRORS``).
    timeout : float, default 30.0
        Seconds a connection or read may stall.
    deadline : float, default 600.0
        Seconds one file's transfer may take in all (a server trickling bytes never
        trips ``timeout``).
    retries : int, default 2
        Extra attempts per mirror after a timeout or server error.
    progress : bool, optional
        Show a progress bar (needs tqdm); default: on a terminal.
    log : callable, optional
        Called with a line before each attempt (``downloading URL``).

    Returns
    -------
    pathlib.Path
        The folder holding the four files.

    Raises
    ------
    DownloadError
        The folder cannot be made, or a file could not be fetched from any mirror (the
        message lists every attempt and what to do instead).
    ValueError
        ``ds`` is an unknown name, ``timeout`` or ``deadline`` is not a positive number
        of seconds, or ``retries`` is not an int >= 0.
    TypeError
        ``timeout`` or ``deadline`` is not a number.
    """
    ds = _spec("download", ds)
    timeout = _positive_seconds("timeout", timeout)
    deadline = _positive_seconds("deadline", deadline)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"download: retries must be an int >= 0, got {retries!r}")
    if isinstance(mirrors, (str, os.PathLike)):
        mirrors = [os.fspath(mirrors)]  # one mirror, not a sequence of characters
    folder = Path(dest) if dest is not None else cache_dir(ds.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the download folder {folder} ({exc.strerror or exc}); put the four "
            f"{ds.title} IDX files in a folder and pass data_dir=... (--data-dir) or set "
            "FERROGRAD_DATA, or use the offline sample (dataset='sample', --dataset sample)."
        ) from exc
    import urllib.error  # with the download, not the package (see _watched_opener)

    urls = list(mirrors) if mirrors is not None else _mirrors(ds)
    urls = [u if u.endswith("/") else u + "/" for u in urls]
    for spec in ds.files:
        target = folder / f"{spec.name}.gz"
        if target.exists():
            continue
        failures: list[str] = []
        for base in urls:
            url = base + target.name
            for attempt in range(retries + 1):
                try:
                    if log is not None:
                        log(f"downloading {url}")
                    _fetch(url, target, spec, timeout, deadline, progress)
                    break
                except urllib.error.HTTPError as exc:
                    failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
                    if exc.code < 500:
                        break  # 404 and friends will not change on retry
                except _TransferError as exc:
                    failures.append(str(exc))
                    if not exc.retry:
                        break  # too slow, too big, a web page: try the next mirror
                except DatasetError as exc:
                    failures.append(f"{url}: {exc}")
                    break  # the mirror serves a different file; try the next one
                except (urllib.error.URLError, OSError) as exc:
                    reason = getattr(exc, "reason", None) or exc
                    if isinstance(reason, TimeoutError):
                        reason = f"timed out after {timeout:g} s"
                    failures.append(f"{url}: {reason}")
                except Exception as exc:  # http.client errors (IncompleteRead, BadStatusLine)
                    failures.append(f"{url}: {type(exc).__name__}: {exc}")
                if attempt < retries:
                    time.sleep(min(0.2 * 2**attempt, 2.0))
            else:
                continue
            if target.exists():
                break
        if not target.exists():
            raise DownloadError(
                f"could not download {ds.title} file {target.name}:\n  "
                + "\n  ".join(failures or ["no mirrors configured"])
                + f"\nPut the four {ds.title} IDX files in a folder and pass data_dir=... "
                "(--data-dir) or set FERROGRAD_DATA, or use the offline sample "
                "(dataset='sample', --dataset sample)."
            )
    return folder


# --------------------------------------------------------------------------- loading


def _convert(
    images: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    dtype: np.dtype,
) -> tuple[NDArray, NDArray]:
    n = images.shape[0]
    if normalize:
        # The book's x.astype(float32) / 255, bit for bit, in one pass over the bytes.
        x = _core.scaled_pixels(images, dtype.name)
    else:
        x = images.copy()  # uint8 like the book; a writeable copy of the read-only buffer
    x = x.reshape(n, -1) if flatten else x.reshape(n, 1, *images.shape[1:])
    if one_hot_label:
        t = np.zeros((n, 10), dtype=dtype)
        t[np.arange(n), labels] = 1
    else:
        t = labels.copy()
    return x, t


def _load_folder(
    folder: Path,
    ds_files: Sequence[IdxFile],
    normalize: bool,
    flatten: bool,
    one_hot_label: bool,
    dtype: np.dtype,
    checksums: bool = True,
) -> tuple[tuple[NDArray, NDArray], tuple[NDArray, NDArray]]:
    arrays = []
    for spec in ds_files:
        path = _locate(folder, spec)
        if path is None:
            raise DatasetError(f"{folder}: missing {spec.name}.gz (or {spec.name})")
        arrays.append(read_idx(path, spec, checksums=checksums))
    out = []
    for images, labels, img_spec in (
        (arrays[0], arrays[1], ds_files[0]),
        (arrays[2], arrays[3], ds_files[2]),
    ):
        if int(labels.max(initial=0)) > 9:
            raise DatasetError(f"{folder}: label {int(labels.max())} is out of range 0-9")
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{folder}: {img_spec.name} has {images.shape[0]} images but "
                f"{labels.shape[0]} labels"
            )
        out.append(_convert(images, labels, normalize, flatten, one_hot_label, dtype))
    return out[0], out[1]


def _sample_specs() -> tuple[IdxFile, ...]:
    folder = sample_dir()
    sums: dict[str, str] = {}
    sums_file = folder / "SHA256SUMS"
    if sums_file.exists():
        for line in sums_file.read_text().splitlines():
            if line.strip():
                digest, name = line.split()
                sums[name.removesuffix(".gz")] = digest
    specs = []
    for f in MNIST.files:
        count = 5000 if f.name.startswith("train") else 1000
        specs.append(IdxFile(f.name, f.kind, count, frozenset([sums.get(f.name, "")])))
    return tuple(specs)


# Precise types for the book's calls: normalized float images with uint8 labels
# (the default), with one-hot float targets, or raw uint8 pixels.
@overload
def load_mnist(
    normalize: Literal[True] = ...,
    flatten: bool = ...,
    one_hot_label: Literal[False] = ...,
    *,
    data_dir: str | os.PathLike[str] | None = ...,
    dtype: DTypeLike = ...,
    dataset: str = ...,
    download_ok: bool = ...,
    progress: bool | None = ...,
) -> MnistData[np.floating[Any], np.uint8]: ...
@overload
def load_mnist(
    normalize: Literal[True] = ...,
    flatten: bool = ...,
    *,
    one_hot_label: Literal[True],
    data_dir: str | os.PathLike[str] | None = ...,
    dtype: DTypeLike = ...,
    dataset: str = ...,
    download_ok: bool = ...,
    progress: bool | None = ...,
) -> MnistData[np.floating[Any], np.floating[Any]]: ...
@overload
def load_mnist(
    normalize: Literal[False],
    flatten: bool = ...,
    one_hot_label: Literal[False] = ...,
    *,
    data_dir: str | os.PathLike[str] | None = ...,
    dtype: DTypeLike = ...,
    dataset: str = ...,
    download_ok: bool = ...,
    progress: bool | None = ...,
) -> MnistData[np.uint8, np.uint8]: ...
@overload
def load_mnist(
    normalize: bool = ...,
    flatten: bool = ...,
    one_hot_label: bool = ...,
    *,
    data_dir: str | os.PathLike[str] | None = ...,
    dtype: DTypeLike = ...,
    dataset: str = ...,
    download_ok: bool = ...,
    progress: bool | None = ...,
) -> MnistData[np.floating[Any] | np.uint8, np.floating[Any] | np.uint8]: ...
def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    dtype: DTypeLike = np.float32,
    dataset: str = "mnist",
    download_ok: bool = True,
    progress: bool | None = None,
) -> MnistData[Any, Any]:
    """MNIST as ``(x_train, t_train), (x_test, t_test)``, the book's shapes.

    x: (N, 784) if ``flatten`` else (N, 1, 28, 28); ``normalize`` maps 0..255 to
    [0, 1] in ``dtype`` (otherwise uint8, as the book). t: uint8 labels (N,), or one-hot
    (N, 10) in ``dtype``. ``dataset``: "mnist", "fashion-mnist" or "sample" (the shipped
    5,000/1,000 subset). Files are found as the module doc says and downloaded when
    missing and ``download_ok``.

    Parameters
    ----------
    normalize
        Pixels as ``dtype`` in [0, 1] (the book's ``x / 255``); else uint8 0..255.
    flatten
        Images as rows of 784; else (N, 1, 28, 28).
    one_hot_label
        Targets as one-hot rows (N, 10) in ``dtype``; else uint8 labels (N,).
    data_dir
        Folder with the four IDX files (``.gz`` or raw); searched first.
    dtype
        float32 (default) or float64, for normalized images and one-hot targets.
    dataset
        "mnist", "fashion-mnist" or "sample".
    download_ok
        Download missing files into the user cache; else raise DatasetError.
    progress
        Show a download progress bar (needs tqdm); default: on a terminal.

    Returns
    -------
    MnistData
        ``(x_train, t_train), (x_test, t_test)``: 60,000 and 10,000 images (5,000 and
        1,000 for the sample).

    Raises
    ------
    DatasetError
        A file is missing, truncated, has a wrong header or checksum (the message names
        the file and the expectation).
    DownloadError
        The files are nowhere on this machine and no mirror could deliver them.
    ValueError
        ``dataset`` is unknown.
    TypeError
        ``dtype`` is not float32 or float64.
    """
    dt = check_dtype("load_mnist", dtype)
    if dataset == "sample":
        return _load_folder(sample_dir(), _sample_specs(), normalize, flatten, one_hot_label, dt)
    if dataset not in DATASETS:
        raise ValueError(
            f"load_mnist: unknown dataset {dataset!r}; expected one of "
            f"{', '.join([*DATASETS, 'sample'])}"
        )
    ds = DATASETS[dataset]
    folder = find_data_dir(ds, data_dir)
    if folder is None:
        if not download_ok:
            raise DatasetError(
                f"{ds.title} files not found (looked in data_dir, $FERROGRAD_DATA, "
                f"{', '.join([*ds.system_dirs, str(cache_dir(ds.name))])}); pass data_dir=... "
                "or set FERROGRAD_DATA, or use dataset='sample'"
            )
        folder = download(ds, progress=progress)
    return _load_folder(folder, ds.files, normalize, flatten, one_hot_label, dt)


def load_fashion_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    dtype: DTypeLike = np.float32,
    download_ok: bool = True,
    progress: bool | None = None,
) -> MnistData[np.floating[Any] | np.uint8, np.floating[Any] | np.uint8]:
    """Fashion-MNIST with :func:`load_mnist`'s format (labels 0-9 are clothing classes).

    Parameters
    ----------
    normalize : bool, default True
        Pixels as ``dtype`` in [0, 1] (the book's ``x / 255``); else uint8 0..255.
    flatten : bool, default True
        Images as rows of 784; else (N, 1, 28, 28).
    one_hot_label : bool, default False
        Targets as one-hot rows (N, 10) in ``dtype``; else uint8 labels (N,).
    data_dir : str or path-like, optional
        Folder with the four IDX files; searched first.
    dtype : dtype_like, default float32
        float32 or float64, for normalized images and one-hot targets.
    download_ok : bool, default True
        Download missing files into the user cache; else raise DatasetError.
    progress : bool, optional
        Show a download progress bar (needs tqdm); default: on a terminal.

    Returns
    -------
    MnistData
        ``(x_train, t_train), (x_test, t_test)`` in :func:`load_mnist`'s shapes and dtypes.

    Raises
    ------
    DatasetError
        A file is missing or fails its checks.
    DownloadError
        The files are nowhere on this machine and no mirror could deliver them.
    """
    return load_mnist(
        normalize,
        flatten,
        one_hot_label,
        data_dir=data_dir,
        dtype=dtype,
        dataset="fashion-mnist",
        download_ok=download_ok,
        progress=progress,
    )


def load_mnist_sample(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    dtype: DTypeLike = np.float32,
) -> MnistData[np.floating[Any] | np.uint8, np.floating[Any] | np.uint8]:
    """The MNIST sample shipped in the package: the first 5,000 training and 1,000 test images.

    Works offline; the same as ``load_mnist(dataset="sample")``.

    Parameters
    ----------
    normalize : bool, default True
        Pixels as ``dtype`` in [0, 1] (the book's ``x / 255``); else uint8 0..255.
    flatten : bool, default True
        Images as rows of 784; else (N, 1, 28, 28).
    one_hot_label : bool, default False
        Targets as one-hot rows (N, 10) in ``dtype``; else uint8 labels (N,).
    dtype : dtype_like, default float32
        float32 or float64, for normalized images and one-hot targets.

    Returns
    -------
    MnistData
        ``(x_train, t_train), (x_test, t_test)`` in :func:`load_mnist`'s shapes and dtypes.
    """
    return load_mnist(normalize, flatten, one_hot_label, dtype=dtype, dataset="sample")
