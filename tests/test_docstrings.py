"""Every public object carries a numpydoc docstring that matches its signature.

The API reference (docs/api, mkdocstrings with ``docstring_style: numpy``) is built from
these docstrings, so this walks what it shows: the names in ``__all__`` of ``ferrograd``
and of each public module (no ``_`` in the dotted name), and the public methods and
properties of those classes, inherited ones included. For each function or method it
asks for

- a ``Parameters`` section naming exactly the parameters of the signature (a class
  documents its ``__init__`` there, as mkdocstrings merges the two; a dataclass may list
  its fields under ``Attributes``),
- a ``Returns`` (or ``Yields``) section when the return annotation is not ``None``,
- a ``Raises`` section naming every exception the body raises itself
  (``raise ValueError(...)``; errors of helpers it calls are not traced),

and a docstring on every property. An override without a docstring inherits its
parent's (as ``inspect.getdoc`` does), which must then fit the override's signature.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import ferrograd
import pytest

NO_RETURN = {"None", "NoReturn", "Never", "typing.NoReturn"}
# Raised by an abstract method: says "override me", not "bad input".
NOT_DOCUMENTED_RAISES = {"NotImplementedError"}


# ----------------------------------------------------------------- numpydoc parsing


def sections(doc: str) -> dict[str, list[str]]:
    """Section title → its lines (numpydoc: a title underlined by dashes)."""
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        underline = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"\s*-{3,}\s*", underline) and not line.startswith(" "):
            current = out.setdefault(line.strip(), [])
            i += 2
            continue
        if current is not None:
            current.append(line)
        i += 1
    return out


def entry_names(lines: list[str]) -> list[str]:
    """The names of a Parameters/Attributes/Raises section: its unindented lines, before
    ``" : "`` (``x, y : array_like`` names two), without ``*``."""
    names = []
    for line in lines:
        if not line.strip() or line[0].isspace():
            continue
        head = line.split(" : ", 1)[0]
        names += [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
    return names


# ----------------------------------------------------------------- the public API


def public_modules() -> list[Any]:
    mods = [ferrograd]
    for info in pkgutil.walk_packages(ferrograd.__path__, "ferrograd."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        mods.append(importlib.import_module(info.name))
    return mods


def _ours(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "") or "").startswith("ferrograd")


def _exported(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and _ours(v)]
    return list(names)


def _init_owner(cls: type) -> tuple[type, Callable[..., Any]] | None:
    """The class whose own ``__init__`` ours runs, when that ``__init__`` is ferrograd's."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if _ours(klass) and (inspect.isfunction(init) and _ours(init)):
            return klass, init
        if _ours(klass) and dataclasses.is_dataclass(klass):
            return klass, init
        return None
    return None


def _members(cls: type) -> Iterator[tuple[str, Any, type]]:
    """(name, raw attribute, defining class) of the public methods and properties."""
    for name in dir(cls):
        if name.startswith("_") and name != "__call__":
            continue
        for klass in cls.__mro__:
            if name in klass.__dict__:
                yield name, klass.__dict__[name], klass
                break


def api_objects() -> dict[str, tuple[str, Any, Any]]:
    """Qualified name → (kind, object, owning class or None), each object once."""
    found: dict[str, tuple[str, Any, Any]] = {}
    seen: set[int] = set()

    def add(key: str, kind: str, obj: Any, owner: Any = None) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            found[key] = (kind, obj, owner)

    for module in public_modules():
        for name in _exported(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and _ours(obj):
                key = f"{obj.__module__}.{obj.__qualname__}"
                add(key, "class", obj)
                for mname, raw, klass in _members(obj):
                    if isinstance(raw, property):
                        if _ours(raw.fget):
                            add(f"{klass.__module__}.{klass.__qualname__}.{mname}", "property", raw)
                        continue
                    func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
                    if inspect.isfunction(func) and _ours(func):
                        kind = "staticmethod" if isinstance(raw, staticmethod) else "method"
                        add(f"{klass.__module__}.{func.__qualname__}", kind, func, obj)
            elif inspect.isfunction(obj) and _ours(obj):
                add(f"{obj.__module__}.{obj.__qualname__}", "function", obj)
    return found


API = api_objects()


# ----------------------------------------------------------------- the checks


def _doc_of(func: Callable[..., Any], owner: type | None) -> str | None:
    """``func``'s docstring, or the one of the method it overrides (inspect.getdoc's rule)."""
    if func.__doc__:
        return func.__doc__
    if owner is not None:
        for klass in owner.__mro__[1:]:
            parent = klass.__dict__.get(func.__name__)
            if parent is not None and getattr(parent, "__doc__", None):
                return parent.__doc__
    return None


def _raised(func: Callable[..., Any]) -> set[str]:
    """Exception classes the body raises by name (not nested functions, not bare raise)."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return set()
    tree = ast.parse(source)
    body = tree.body[0]
    names: set[str] = set()
    stack = list(ast.iter_child_nodes(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", None)
            if name and not name.startswith("_") and name[0].isupper():
                names.add(name)
        stack.extend(ast.iter_child_nodes(node))
    return names - NOT_DOCUMENTED_RAISES


def _parameters(func: Callable[..., Any], bound: bool) -> list[str]:
    params = list(inspect.signature(func).parameters.values())
    return [p.name for p in (params[1:] if bound else params)]


def problems_of_function(
    func: Callable[..., Any], doc: str | None, bound: bool, *, fields: str = "Parameters"
) -> list[str]:
    """What the docstring of ``func`` lacks or gets wrong."""
    if not doc or not doc.strip():
        return ["no docstring"]
    secs = sections(doc)
    out = []
    params = _parameters(func, bound)
    if params:
        titles = [fields] if fields == "Parameters" else ["Parameters", fields]
        documented = [n for t in titles for n in entry_names(secs.get(t, []))]
        if not any(t in secs for t in titles):
            out.append(f"no {' or '.join(titles)} section for {', '.join(params)}")
        else:
            missing = [p for p in params if p not in documented]
            extra = [n for n in documented if n not in params]
            if missing:
                out.append(f"Parameters lacks {', '.join(missing)}")
            if extra:
                out.append(f"Parameters names {', '.join(extra)}, not in the signature")
    elif "Parameters" in secs:
        out.append("a Parameters section, but no parameters")
    ret = inspect.signature(func).return_annotation
    if ret is inspect.Signature.empty:
        out.append("no return annotation")
    elif str(ret) not in NO_RETURN and ret is not None and fields == "Parameters":
        if "Returns" not in secs and "Yields" not in secs:
            out.append(f"no Returns section (returns {ret})")
    raised = _raised(func)
    if raised:
        listed = set(entry_names(secs.get("Raises", [])))
        missing = sorted(raised - listed)
        if missing:
            out.append(f"Raises lacks {', '.join(missing)}")
    return out


def problems(key: str) -> list[str]:
    kind, obj, owner = API[key]
    if kind == "property":
        return [] if (obj.__doc__ or "").strip() else ["property without a docstring"]
    if kind == "class":
        doc = obj.__doc__ or ""
        if not doc.strip() or (
            dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + "(")
        ):
            return ["no class docstring"]
        found = _init_owner(obj)
        if found is None:
            return []
        _, init = found
        # mkdocstrings merges __init__ into the class: its docstring may hold either part
        merged = doc + "\n\n" + (init.__doc__ or "") if init.__doc__ else doc
        fields = "Attributes" if dataclasses.is_dataclass(obj) else "Parameters"
        return problems_of_function(init, merged, bound=True, fields=fields)
    bound = kind == "method"
    return problems_of_function(obj, _doc_of(obj, owner), bound)


def test_the_walk_finds_the_api():
    """The walk reaches every corner the reference documents (a broken walk checks nothing)."""
    for key in (
        "ferrograd.functions.softmax",
        "ferrograd.nets.two_layer_net.TwoLayerNet",
        "ferrograd.nets.two_layer_net.TwoLayerNet.gradient",
        "ferrograd.nets._common.ModelMixin.evaluate",
        "ferrograd.nets._layered.LayeredNet.accuracy",
        "ferrograd.trainer.Trainer.train",
        "ferrograd.trainer.History.history",
        "ferrograd.callbacks.EarlyStopping.on_epoch_end",
        "ferrograd.datasets.load_mnist",
        "ferrograd.search.random_search",
        "ferrograd.figures.overfitting",
        "ferrograd.book.run_script",
        "ferrograd.perceptron.Perceptron.__call__",
    ):
        assert key in API, key
    assert len(API) > 200


@pytest.mark.parametrize("key", sorted(API))
def test_docstring(key):
    assert problems(key) == []


# ----------------------------------------------------------------- the checker can fail


def _sample(doc: str | None) -> Callable[..., Any]:
    def scale(x: Any, factor: float = 2.0) -> float:
        if factor == 0:
            raise ValueError("factor must not be 0")
        return float(x) * factor

    scale.__doc__ = doc
    return scale


GOOD = """Multiply.

Parameters
----------
x : float
    A number.
factor : float, default 2.0
    The factor.

Returns
-------
float
    x·factor.

Raises
------
ValueError
    factor is 0.
"""


def test_checker_accepts_a_complete_docstring():
    assert problems_of_function(_sample(GOOD), GOOD, bound=False) == []


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        (None, "no docstring"),
        ("Multiply.", "no Parameters section for x, factor"),
        (GOOD.replace("factor : float, default 2.0\n    The factor.\n", ""), "lacks factor"),
        (GOOD.replace("x : float", "y : float"), "names y, not in the signature"),
        (GOOD.split("Returns")[0] + "Raises\n------\nValueError\n    0.\n", "no Returns"),
        (GOOD.split("Raises")[0], "Raises lacks ValueError"),
    ],
)
def test_checker_flags_what_is_missing(doc, complaint):
    found = problems_of_function(_sample(doc), doc, bound=False)
    assert any(complaint in p for p in found), found
