"""Run the book's own scripts on ferrograd: ``ferrograd book run ch06/optimizer_compare_mnist.py``.

The book (*Deep Learning from Scratch*, code at BOOK_URL) keeps shared code in
``common/`` and ``dataset/`` and a few modules beside the scripts (``two_layer_net``,
``layer_naive``, ...). :func:`run_script` runs one of its script files unchanged with
those imports answered by this package's modules, which mirror the book's tree
(``common.layers`` → :mod:`ferrograd.book.common.layers`, ``ch05``'s ``two_layer_net`` →
:mod:`ferrograd.book.ch05.two_layer_net`), and MNIST read by ferrograd's loader. The
mapping lives in ``sys.modules`` only while the script runs. As when the book's scripts
are run from their folder (``cd ch06; python script.py``), the working directory is the
script's folder, ``sys.path[0]`` is that folder and ``sys.argv`` is ``[script, *args]``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import runpy
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

__all__ = [
    "BOOK_URL",
    "BookNotFoundError",
    "book_modules",
    "find_script",
    "list_scripts",
    "main",
    "run_script",
]

BOOK_URL = "https://github.com/oreilly-japan/deep-learning-from-scratch"
BOOK_ENV = "FERROGRAD_BOOK"
_SHARED = ("common", "dataset")  # the book's packages beside the chapter folders


class BookNotFoundError(FileNotFoundError):
    """No book checkout holds the script; the message says where to get one."""


def _submodules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [m.name for m in pkgutil.iter_modules(pkg.__path__)]


def book_modules(chapter: str | None = None) -> dict[str, ModuleType]:
    """The ``sys.modules`` entries a script of ``chapter`` is run with.

    ``common``, ``common.*``, ``dataset``, ``dataset.mnist`` and, for a chapter with modules
    of its own, their plain names (``two_layer_net``, ``layer_naive``, ...).

    Parameters
    ----------
    chapter : str, optional
        The script's folder, e.g. "ch05"; None gives the shared packages only.

    Returns
    -------
    dict of str to module
        Module name as the book imports it → ferrograd's module.
    """
    mapping: dict[str, ModuleType] = {}
    for package in _SHARED:
        mapping[package] = importlib.import_module(f"{__name__}.{package}")
        for name in _submodules(f"{__name__}.{package}"):
            mapping[f"{package}.{name}"] = importlib.import_module(f"{__name__}.{package}.{name}")
    if chapter and chapter.startswith("ch") and chapter[2:].isdigit():
        try:
            local = _submodules(f"{__name__}.{chapter}")
        except ModuleNotFoundError:
            local = []
        for name in local:
            mapping[name] = importlib.import_module(f"{__name__}.{chapter}.{name}")
    return mapping


def find_script(script: str | os.PathLike[str], book: str | os.PathLike[str] | None = None) -> Path:
    """The script file: ``script`` inside ``book`` (or ``$FERROGRAD_BOOK``), else as given.

    Parameters
    ----------
    script : str or path-like
        e.g. ``ch06/optimizer_compare_mnist.py``, or a path to any script.
    book : str or path-like, optional
        The book's checkout; default ``$FERROGRAD_BOOK``.

    Returns
    -------
    pathlib.Path
        The script's absolute path.

    Raises
    ------
    BookNotFoundError
        ``book`` is not a folder, or no such script exists (the message says where to get
        the book's code).
    """
    root = book if book is not None else os.environ.get(BOOK_ENV) or None
    candidates = []
    if root is not None:
        if not Path(root).is_dir():
            raise BookNotFoundError(
                f"book checkout {root} is not a directory; get the book's code with "
                f"`git clone {BOOK_URL}` and pass its folder with --book or ${BOOK_ENV}"
            )
        candidates.append(Path(root) / script)
    candidates.append(Path(script))
    for path in candidates:
        if path.is_file():
            return path.resolve()
    where = f" in the book checkout {root}" if root is not None else ""
    raise BookNotFoundError(
        f"no script {script}{where}. The book's scripts are in its repository: "
        f"`git clone {BOOK_URL}`, then pass the checkout with --book DIR or "
        f"${BOOK_ENV}=DIR (e.g. `ferrograd book run --book DIR ch06/optimizer_compare_mnist.py`)"
    )


@contextlib.contextmanager
def _book_imports(chapter: str, dataset: str | None) -> Iterator[None]:
    """Install the book's module names in sys.modules; restore everything after."""
    mapping = book_modules(chapter)
    mnist = mapping["dataset.mnist"]
    saved = {name: sys.modules.get(name) for name in mapping}
    saved_dataset = mnist.DATASET
    sys.modules.update(mapping)
    if dataset is not None:
        mnist.DATASET = dataset
    try:
        yield
    finally:
        mnist.DATASET = saved_dataset
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def run_script(
    script: str | os.PathLike[str],
    args: Sequence[str] = (),
    *,
    book: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
) -> dict[str, object]:
    """Run a book script unchanged on ferrograd, as ``cd chNN; python script.py`` would.

    Parameters
    ----------
    script : str or path-like
        e.g. ``ch05/train_neuralnet.py`` (see :func:`find_script`).
    args : sequence of str, default ()
        The script's ``sys.argv[1:]``.
    book : str or path-like, optional
        The book's checkout; default ``$FERROGRAD_BOOK``.
    dataset : {"mnist", "sample"}, optional
        What ``dataset.mnist.load_mnist`` reads: full MNIST (default) or the shipped
        sample (5,000 training and 1,000 test images).

    Returns
    -------
    dict of str to object
        The script's globals after it ran.

    Raises
    ------
    BookNotFoundError
        The script is not found.
    """
    path = find_script(script, book)
    folder = path.parent
    saved_argv, saved_path, saved_cwd = sys.argv[:], sys.path[:], os.getcwd()
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(folder))
    try:
        with _book_imports(folder.name, dataset):
            os.chdir(folder)
            return runpy.run_path(str(path), run_name="__main__")
    finally:
        os.chdir(saved_cwd)
        sys.argv, sys.path[:] = saved_argv, saved_path


def list_scripts(book: str | os.PathLike[str] | None = None) -> list[str]:
    """The script files of chapters 2–8 in the book checkout, e.g. ``ch06/overfit_dropout.py``.

    Parameters
    ----------
    book : str or path-like, optional
        The book's checkout; default ``$FERROGRAD_BOOK``.

    Returns
    -------
    list of str
        Sorted ``chNN/name.py`` paths.

    Raises
    ------
    BookNotFoundError
        No checkout is given or it is not a folder.
    """
    root = book if book is not None else os.environ.get(BOOK_ENV) or None
    if root is None or not Path(root).is_dir():
        raise BookNotFoundError(
            f"no book checkout: `git clone {BOOK_URL}`, then pass it with --book DIR or "
            f"${BOOK_ENV}=DIR"
        )
    return sorted(
        f"{chapter}/{path.name}"
        for chapter in ("ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08")
        for path in (Path(root) / chapter).glob("*.py")
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m ferrograd.book") -> int:
    """``ferrograd book``: ``run [--book DIR] [--dataset NAME] SCRIPT [ARGS...]`` or ``list``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; default ``sys.argv[1:]``.
    prog : str, default "python -m ferrograd.book"
        Program name in help and error messages.

    Returns
    -------
    int
        Exit code: 0, or 2 when the book or script is not found.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description="Run the book's own scripts (chapters 2-8) on ferrograd."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run one of the book's script files, unchanged")
    lst = sub.add_parser("list", help="list the book's scripts of chapters 2-8")
    for p in (run, lst):
        p.add_argument("--book", metavar="DIR", help=f"the book's checkout (default: ${BOOK_ENV})")
    run.add_argument(
        "--dataset",
        choices=("mnist", "sample"),
        help="what dataset.mnist.load_mnist reads: full MNIST (default) or the shipped sample",
    )
    run.add_argument("script", help="e.g. ch06/optimizer_compare_mnist.py")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "list":
            print("\n".join(list_scripts(ns.book)))
        else:
            run_script(ns.script, ns.args, book=ns.book, dataset=ns.dataset)
    except BookNotFoundError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    return 0
