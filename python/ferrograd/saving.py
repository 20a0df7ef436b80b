"""Saved models: one ``.npz`` holding the architecture, the arrays and the training state.

``save(model, path, optimizer=None, trainer=None)`` writes, without pickles:

| entry | what it holds |
| --- | --- |
| ``__ferrograd__`` | JSON as UTF-8 bytes in a uint8 array: format name and version, the model's class and constructor arguments (sizes, activation, init, weight decay, dropout, batch norm, dtype), the optimizer's class, hyperparameters, ``iter`` and state names, the trainer's iterations and epochs, the scalar part of each generator's state |
| ``param/<name>`` | every entry of ``model.params`` (W1, b1, …, gamma1, beta1, …) |
| ``buffer/<layer>/<name>`` | arrays a prediction needs beyond ``params``: batch norm's ``running_mean`` and ``running_var`` |
| ``optimizer/<state>/<name>`` | the optimizer's state (``v``, ``h``, ``m``) per parameter |
| ``rng/key``, ``model_rng/key`` | the Mersenne Twister key of the trainer's (NumPy's global) or the net's generator, when it is one |

``load(path)`` rebuilds the model from that alone; ``load(path, model=net)`` copies into
an existing model after checking class, architecture, names, shapes and dtypes (a
mismatch is a ValueError naming it); ``load_checkpoint(path)`` also rebuilds the
optimizer and the trainer's generator, so a run resumed from it continues bit for bit.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferrograd._random import GlobalGenerator

__all__ = ["Checkpoint", "load", "load_checkpoint", "model_info", "save"]

FORMAT = "ferrograd.model"
VERSION = 1
META_KEY = "__ferrograd__"


# ----------------------------------------------------------------- architecture


def _model_classes() -> dict[str, type]:
    from ferrograd import nets

    return {name: getattr(nets, name) for name in nets.__all__}


def model_config(model: Any) -> dict[str, Any]:
    """The constructor arguments that rebuild ``model``'s architecture (JSON-able)."""
    from ferrograd.nets import (
        DeepConvNet,
        MultiLayerNet,
        MultiLayerNetExtend,
        SimpleConvNet,
        SimpleNet,
        SoftmaxRegression,
        TwoLayerNet,
    )

    cls = type(model)
    if cls is TwoLayerNet:
        return {
            "input_size": model.input_size,
            "hidden_size": int(model.params["W1"].shape[1]),
            "output_size": model.output_size,
            "weight_init_std": model.weight_init_std,
            "activation": model.activation,
            "dtype": str(model.dtype),
        }
    if cls in (MultiLayerNet, MultiLayerNetExtend):
        return {
            "input_size": model.input_size,
            "hidden_size_list": list(model.hidden_size_list),
            "output_size": model.output_size,
            "activation": model.activation,
            "weight_init_std": model.weight_init_std,
            "weight_decay_lambda": model.weight_decay_lambda,
            "use_batchnorm": model.use_batchnorm,
            "use_dropout": model.use_dropout,
            "dropout_ratio": float(model.dropout_ratio),
            "dtype": str(model.dtype),
        }
    if cls is SoftmaxRegression:
        return {
            "input_size": model.input_size,
            "output_size": model.output_size,
            "weight_init_std": model.weight_init_std,
            "dtype": str(model.dtype),
        }
    if cls is SimpleNet:
        return {"shape": list(model.W.shape), "dtype": str(model.W.dtype)}
    if cls is SimpleConvNet:
        return {
            "input_dim": list(model.input_dim),
            "conv_param": dict(model.conv_param),
            "hidden_size": int(model.params["W2"].shape[1]),
            "output_size": int(model.params["W3"].shape[1]),
            "weight_init_std": model.weight_init_std,
            "dtype": str(model.dtype),
        }
    if cls is DeepConvNet:
        config: dict[str, Any] = {"input_dim": list(model.input_dim)}
        for i, conv_param in enumerate(model.conv_params):
            config[f"conv_param_{i + 1}"] = dict(conv_param)
        config["hidden_size"] = int(model.params["W7"].shape[1])
        config["output_size"] = int(model.params["W8"].shape[1])
        config["dtype"] = str(model.dtype)
        return config
    raise TypeError(
        f"save: cannot describe a {cls.__name__}; expected one of {', '.join(_model_classes())}"
    )


def _build(cls_name: str, config: dict[str, Any]) -> Any:
    classes = _model_classes()
    if cls_name not in classes:
        raise ValueError(f"load: unknown model class {cls_name!r}")
    cls = classes[cls_name]
    cfg = dict(config)
    if cls_name == "SimpleNet":
        return cls(np.zeros(cfg["shape"]), dtype=cfg["dtype"])
    if cls_name == "MultiLayerNetExtend":
        cfg["dropout_ration"] = cfg.pop("dropout_ratio")
    if "input_dim" in cfg:  # the conv nets: a tuple, as the book passes it
        cfg["input_dim"] = tuple(cfg["input_dim"])
    # seed=0: building must not draw from NumPy's global generator; params are replaced
    return cls(**cfg, seed=0)


def _params(model: Any) -> dict[str, np.ndarray]:
    if hasattr(model, "params"):
        return dict(model.params)
    return {"W": model.W}  # SimpleNet


def _named_layers(model: Any) -> dict[str, Any]:
    """The model's layers by name (a list of layers, as DeepConvNet's, by position)."""
    layers = getattr(model, "layers", {})
    if isinstance(layers, list):
        return {str(i): layer for i, layer in enumerate(layers)}
    return dict(layers)


def _buffers(model: Any) -> dict[str, np.ndarray]:
    """Batch norm's running statistics, by ``<layer>/<name>`` (only those set)."""
    from ferrograd.layers import BatchNormalization

    out: dict[str, np.ndarray] = {}
    for name, layer in _named_layers(model).items():
        if isinstance(layer, BatchNormalization):
            for attr in ("running_mean", "running_var"):
                value = getattr(layer, attr)
                if value is not None:
                    out[f"{name}/{attr}"] = np.asarray(value)
    return out


# ----------------------------------------------------------------- random generators


def _rng_state(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A generator's state as JSON plus arrays (the global one: ``np.random.get_state``)."""
    if isinstance(rng, GlobalGenerator):
        name, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
        meta = {"global": True, "name": name, "pos": int(pos), "has_gauss": int(has_gauss)}
        meta["cached_gaussian"] = float(gauss)
        return meta, {"key": np.asarray(key)}
    state = rng.bit_generator.state
    if state["bit_generator"] == "MT19937":
        inner = state["state"]
        meta = {**state, "state": {"pos": int(inner["pos"])}}
        return {"global": False, "state": meta}, {"key": np.asarray(inner["key"])}
    json.dumps(state)  # PCG64 and friends: ints only (Python ints keep all 128 bits)
    return {"global": False, "state": state}, {}


def _restore_rng(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.random.Generator:
    """A Generator continuing from a saved state (NumPy's global one is set in place)."""
    if meta["global"]:
        state = (meta["name"], arrays["key"], meta["pos"], meta["has_gauss"])
        np.random.set_state((*state, meta["cached_gaussian"]))  # noqa: NPY002
        return GlobalGenerator()
    state = meta["state"]
    bit_cls = getattr(np.random, state["bit_generator"], None)
    if not isinstance(bit_cls, type) or not issubclass(bit_cls, np.random.BitGenerator):
        raise ValueError(f"load: unknown bit generator {state['bit_generator']!r}")
    bits = bit_cls()
    if state["bit_generator"] == "MT19937":
        state = {**state, "state": {"key": arrays["key"], "pos": state["state"]["pos"]}}
    bits.state = state
    return np.random.Generator(bits)


# ----------------------------------------------------------------- save


def save(
    model: Any,
    path: str | os.PathLike[str],
    optimizer: Any = None,
    trainer: Any = None,
) -> Path:
    """Write ``model`` (and optionally its training state) to one ``.npz`` file, atomically.

    The file holds the architecture, every parameter and batch-norm statistic, and with
    ``optimizer``/``trainer`` the optimizer's state, the trainer's iteration and epoch
    counts and its random generator's state (the table in the module doc); no pickles.

    Parameters
    ----------
    model : network
        A ferrograd net (``TwoLayerNet``, ``MultiLayerNet``, ``SoftmaxRegression``, ...).
    path : str or path-like
        Where to write; ``.npz`` is appended when missing.
    optimizer : Optimizer, optional
        Its hyperparameters and state are saved too.
    trainer : Trainer, optional
        Its progress and generator are saved too; implies its optimizer when
        ``optimizer`` is not given.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileNotFoundError
        The folder of ``path`` does not exist.
    TypeError
        ``model`` or ``optimizer`` is of a class ``save`` cannot describe.
    """
    from ferrograd.trainer import _atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save: directory {path.parent} does not exist")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(model).__name__,
        "config": model_config(model),
    }
    arrays: dict[str, np.ndarray] = {}
    for key, value in _params(model).items():
        arrays[f"param/{key}"] = np.asarray(value)
    for key, value in _buffers(model).items():
        arrays[f"buffer/{key}"] = value
    net_rng = getattr(model, "rng", None)
    if isinstance(net_rng, GlobalGenerator):
        meta["model_rng"] = {"global": True}  # its state is NumPy's, saved with a trainer
    elif isinstance(net_rng, np.random.Generator):
        # the dropout masks' generator: a resumed run draws the same masks
        rng_meta, rng_arrays = _rng_state(net_rng)
        meta["model_rng"] = rng_meta
        arrays.update({f"model_rng/{k}": v for k, v in rng_arrays.items()})
    if optimizer is None and trainer is not None:
        optimizer = trainer.optimizer
    if optimizer is not None:
        meta["optimizer"] = _optimizer_meta(optimizer, arrays)
    if trainer is not None:
        rng_meta, rng_arrays = _rng_state(trainer.rng)
        hist = trainer.history
        meta["trainer"] = {  # counted from the start of the whole run, resumes included
            "iterations": int(trainer.initial_iteration + hist.iterations),
            "epochs": int(trainer.initial_epoch + hist.epochs),
            "mini_batch_size": int(trainer.batch_size),
            "rng": rng_meta,
        }
        arrays.update({f"rng/{k}": v for k, v in rng_arrays.items()})
    blob = json.dumps(meta, sort_keys=True).encode()
    arrays[META_KEY] = np.frombuffer(blob, dtype=np.uint8)
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def _optimizer_meta(optimizer: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    from ferrograd.optimizers import OPTIMIZERS

    cls = type(optimizer)
    if cls not in OPTIMIZERS.values():
        raise TypeError(
            f"save: cannot save optimizer {cls.__name__}; expected one of ferrograd.optimizers"
        )
    out: dict[str, Any] = {"class": cls.__name__, "hyperparameters": optimizer.hyperparameters()}
    if hasattr(optimizer, "iter"):
        out["iter"] = int(optimizer.iter)
    states = []
    for name in cls.state_names:
        state = getattr(optimizer, name)
        if state is None:
            continue
        states.append(name)
        for key, value in state.items():
            arrays[f"optimizer/{name}/{key}"] = np.asarray(value)
    out["states"] = states
    return out


# ----------------------------------------------------------------- load


def _read(
    path: Path, op: str, meta_only: bool = False
) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
    """The metadata (None for a file of the first ``save_params``) and the arrays (none
    with ``meta_only``)."""
    try:
        # our own handle: np.load leaks its file when the zip directory is unreadable
        with open(path, "rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with data:
                keys = [META_KEY] if meta_only else data.files
                arrays = {k: data[k] for k in keys if k in data.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated, corrupt, pickles
        raise ValueError(f"{op}: {path} is not a saved ferrograd model ({exc})") from exc
    blob = arrays.pop(META_KEY, None)
    if blob is None:
        return None, arrays
    try:
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise ValueError(f"{META_KEY} is {blob.dtype}{list(blob.shape)}, not uint8 bytes")
        meta = json.loads(blob.tobytes().decode())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("no ferrograd model header")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{op}: {path}: unreadable metadata ({exc})") from exc
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{op}: {path} has format version {meta.get('version')!r}; this ferrograd reads "
            f"version {VERSION}"
        )
    return meta, arrays


def _section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _copy_into(model: Any, params: dict[str, np.ndarray], path: Path, op: str) -> None:
    """Copy saved params into the model's arrays in place, after checking every one."""
    mine = _params(model)
    if set(params) != set(mine):
        raise ValueError(
            f"{op}: {path} holds parameters {sorted(params)} but the model has {sorted(mine)}"
        )
    for key, arr in params.items():
        p = mine[key]
        if arr.shape != p.shape or arr.dtype != p.dtype:
            raise ValueError(
                f"{op}: {path}: {key} is {arr.dtype}{list(arr.shape)} but the model's "
                f"is {p.dtype}{list(p.shape)}"
            )
    for key, arr in params.items():
        np.copyto(mine[key], arr)


def _set_buffers(model: Any, buffers: dict[str, np.ndarray], path: Path, op: str) -> None:
    from ferrograd.layers import BatchNormalization

    layers = _named_layers(model)
    for key, arr in buffers.items():
        layer_name, _, attr = key.partition("/")
        layer = layers.get(layer_name)
        if not isinstance(layer, BatchNormalization) or attr not in (
            "running_mean",
            "running_var",
        ):
            raise ValueError(f"{op}: {path}: the model has no buffer {key}")
        if arr.shape != layer.gamma.shape or arr.dtype != layer.gamma.dtype:
            raise ValueError(
                f"{op}: {path}: {key} is {arr.dtype}{list(arr.shape)} but the layer's "
                f"is {layer.gamma.dtype}{list(layer.gamma.shape)}"
            )
        setattr(layer, attr, arr.copy())


def load(path: str | os.PathLike[str], model: Any = None) -> Any:
    """The model saved at ``path``, rebuilt from the file alone, or loaded into ``model``.

    Files of ``save_params`` (parameters only) load into a given ``model``.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save` (or ``save_params``).
    model : network, optional
        Copy the saved values into this model instead: it must have the saved class and
        architecture.

    Returns
    -------
    network
        The rebuilt model, or ``model`` itself.

    Raises
    ------
    ValueError
        The file is not a saved model, has another format version, or differs from
        ``model`` (class, architecture, names, shapes, dtypes: the message names the first
        difference); or it holds parameters only and no ``model`` is given.
    FileNotFoundError
        No such file.
    """
    return _load(Path(path), model, "load")[0]


def _load(path: Path, model: Any, op: str) -> tuple[Any, dict[str, Any] | None, dict]:
    meta, arrays = _read(path, op)
    if meta is None:
        if model is None:
            raise ValueError(
                f"{op}: {path} holds parameters only (a save_params file); pass the model "
                f"to load them into: load(path, model=net)"
            )
        _copy_into(model, arrays, path, op)
        return model, None, {}
    built = model is None
    if model is None:
        model = _build(meta["class"], meta["config"])
    else:
        if type(model).__name__ != meta["class"]:
            raise ValueError(
                f"{op}: {path} holds a {meta['class']} but the model is a {type(model).__name__}"
            )
        mine = model_config(model)
        for key, saved in meta["config"].items():
            if key == "weight_init_std":
                continue  # how the weights started; the loaded weights replace them
            if mine.get(key) != saved:
                raise ValueError(
                    f"{op}: {path} has {key}={saved!r} but the model has {key}={mine.get(key)!r}"
                )
    _copy_into(model, _section(arrays, "param/"), path, op)
    _set_buffers(model, _section(arrays, "buffer/"), path, op)
    saved_rng = meta.get("model_rng")
    if saved_rng is not None and isinstance(getattr(model, "rng", None), np.random.Generator):
        if saved_rng["global"]:
            if built:  # the saved net drew its dropout masks from np.random: so does this one
                model.rng = GlobalGenerator()
                for layer in _named_layers(model).values():
                    if hasattr(layer, "rng"):
                        layer.rng = model.rng
        else:
            rng = _restore_rng(saved_rng, _section(arrays, "model_rng/"))
            model.rng.bit_generator.state = rng.bit_generator.state  # dropout layers share it
    return model, meta, arrays


def model_info(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the file at ``path`` holds, read from its header alone.

    Parameters
    ----------
    path : str or PathLike
        A file written by :func:`save` (or by ``save_params``).

    Returns
    -------
    dict or None
        ``{"class", "config", "optimizer", "iterations", "epochs", "mini_batch_size"}``:
        the model's class name and constructor arguments, the optimizer's class name
        (None when not saved), the steps and epochs trained so far and the trainer's
        mini-batch size (0 and None when no trainer was saved); None for a file of
        ``save_params``, which holds parameters only.

    Raises
    ------
    ValueError
        The file is not a saved model (corrupt, truncated, another format or version).
    """
    path = Path(path)
    meta, _ = _read(path, "model_info", meta_only=True)
    if meta is None:
        return None
    trainer = meta.get("trainer", {})
    return {
        "class": meta["class"],
        "config": meta["config"],
        "optimizer": meta.get("optimizer", {}).get("class"),
        "iterations": int(trainer.get("iterations", 0)),
        "epochs": int(trainer.get("epochs", 0)),
        "mini_batch_size": trainer.get("mini_batch_size"),
    }


# ----------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` restores.

    Train on with ``Trainer(ck.model, ..., optimizer=ck.optimizer, seed=ck.rng,
    initial_iteration=ck.iterations, initial_epoch=ck.epochs)``.

    Attributes
    ----------
    model : network
        The model with its saved parameters.
    optimizer : Optimizer or None
        The optimizer with its state (None when none was saved).
    rng : numpy.random.Generator or None
        The trainer's generator, continuing where the saved run stopped (None without a
        trainer).
    iterations : int
        Iterations done when it was saved, from the start of the whole run (earlier
        resumes included).
    epochs : int
        Epochs done when it was saved, counted the same way.
    """

    model: Any
    optimizer: Any
    rng: np.random.Generator | None
    iterations: int
    epochs: int


def load_checkpoint(path: str | os.PathLike[str], model: Any = None) -> Checkpoint:
    """The model, optimizer (with its state) and trainer generator saved at ``path``.

    A run resumed from them continues bit for bit. When the trainer drew from NumPy's
    global generator, its state is restored in place (``np.random.set_state``), as the
    book's scripts expect.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save` with ``trainer`` (or ``optimizer``).
    model : network, optional
        Load into this model instead of rebuilding one.

    Returns
    -------
    Checkpoint
        Model, optimizer, generator and the counts; for a parameters-only file, the
        model with ``optimizer`` and ``rng`` None and zero counts.

    Raises
    ------
    ValueError
        As :func:`load`, or the optimizer or generator saved is unknown.
    """
    path = Path(path)
    model, meta, arrays = _load(path, model, "load_checkpoint")
    if meta is None:
        return Checkpoint(model, None, None, 0, 0)
    optimizer = None
    if "optimizer" in meta:
        optimizer = _build_optimizer(meta["optimizer"], _section(arrays, "optimizer/"), path)
    rng = None
    iterations = epochs = 0
    if "trainer" in meta:
        tr = meta["trainer"]
        rng = _restore_rng(tr["rng"], _section(arrays, "rng/"))
        iterations, epochs = int(tr["iterations"]), int(tr["epochs"])
    return Checkpoint(model, optimizer, rng, iterations, epochs)


def _build_optimizer(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Any:
    from ferrograd.optimizers import OPTIMIZERS

    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    cls = classes.get(meta["class"])
    if cls is None:
        raise ValueError(f"load_checkpoint: {path}: unknown optimizer {meta['class']!r}")
    optimizer = cls(**meta["hyperparameters"])
    if "iter" in meta:
        optimizer.iter = int(meta["iter"])
    for name in meta["states"]:
        if name not in cls.state_names:
            raise ValueError(f"load_checkpoint: {path}: {cls.__name__} has no state {name!r}")
        setattr(optimizer, name, {k: v.copy() for k, v in _section(arrays, f"{name}/").items()})
    return optimizer
