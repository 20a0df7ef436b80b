"""The ``ferrograd`` command: train, gradcheck and search on MNIST; ``ferrograd book``
runs the book's own scripts (:mod:`ferrograd.book`), ``ferrograd figures`` draws the
book's figures (:mod:`ferrograd.figures`).

``ferrograd train`` with no options is the book's chapter 4 run (DLFS
ch04/train_neuralnet.py): a 784-50-10 sigmoid network, SGD lr 0.1, batch 100, 10,000
iterations, backprop, full MNIST, one accuracy line per epoch (at most about 20 lines:
on the 5,000-image sample those iterations are 200 epochs, so every 20th is printed).

Exit codes: 0 success, 1 runtime error (bad data, failed download, missing optional
dependency; one line on stderr), 2 usage error (bad or conflicting options), 130
interrupted (Ctrl-C). A closed output pipe (``ferrograd train | head -1``) stops the run
quietly.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["build_network", "main"]

PROG = "ferrograd"
DEFAULT_DTYPE = "float32"
# The book's learning rates where it gives one (ch04 SGD 0.1); otherwise each optimizer's own.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "nesterov": 0.1}
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")


# Epoch lines printed by `train` before it starts printing only every Nth epoch.
MAX_EPOCH_LINES = 20
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """An error reported as one line on stderr; ``code`` is the exit code (2: usage)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise CliError(message, code)


def _say(message: str) -> None:
    # flush each line: progress shows at once through a pipe, and a closed pipe
    # (`| head -1`) stops the run at the next line instead of at exit
    print(message, flush=True)


def _require(module: str, extra: str, flag: str) -> None:
    """Fail before any work when an optional dependency that ``flag`` needs is missing."""
    if importlib.util.find_spec(module) is None:
        _fail(
            f"{flag} needs {module}, which is not installed: pip install 'ferrograd[{extra}]'",
            EXIT_ERROR,
        )


# --------------------------------------------------------------------------- helpers


def _hidden(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes like 50 or 100,100, got {value!r}"
        ) from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {value!r}")
    return sizes


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {n}")
    return n


def _non_negative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not np.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value!r}")
    return x


def _non_negative_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not np.isfinite(x) or x < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
    return x


def _weight_init(value: str) -> str | float:
    name = value.lower()
    if name in ("he", "relu", "xavier", "sigmoid"):
        return name
    try:
        std = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected he, xavier or a standard deviation such as 0.01, got {value!r}"
        ) from None
    if not np.isfinite(std) or std < 0:
        raise argparse.ArgumentTypeError(f"standard deviation must be >= 0, got {value!r}")
    return std


def _init_scale(weight_init: str | float, fan_in: int) -> float:
    """He: √(2/fan_in); Xavier: √(1/fan_in); a number is the standard deviation itself."""
    if weight_init in ("he", "relu"):
        return float(np.sqrt(2.0 / fan_in))
    if weight_init in ("xavier", "sigmoid"):
        return float(np.sqrt(1.0 / fan_in))
    return float(weight_init)


def default_weight_init(net: str, activation: str) -> str | float:
    """The book's 0.01 for the two-layer net, softmax and the conv net; He/Xavier for the
    multi-layer net; He for the deep conv net (built in, as the book's)."""
    if net == "multi-layer":
        return "he" if activation == "relu" else "xavier"
    if net == "deep-conv":
        return "he"
    return 0.01


CONV_NETS = ("conv", "deep-conv")
"""SimpleConvNet (ch. 7) and DeepConvNet (ch. 8): image input, ReLU."""


def default_hidden(net: str) -> list[int]:
    """Hidden sizes when --hidden is not given: the book's for each network."""
    return {"multi-layer": [100, 100], "conv": [100]}.get(net, [50])


def net_shape(net: str, hidden: Sequence[int], input_size: int) -> str:
    """A network's layer sizes for the log line: 784-50-10, conv30x5x5-pool-100-10, ..."""
    if net == "conv":
        return f"conv30x5x5-pool-{hidden[0]}-10"
    if net == "deep-conv":
        return f"conv16,16,32,32,64,64x3x3-{hidden[0]}-10"
    return "-".join(map(str, [input_size, *([] if net == "softmax" else hidden), 10]))


# A saved model's class → the --net that trains it.
SAVED_NETS = {
    "TwoLayerNet": "two-layer",
    "MultiLayerNet": "multi-layer",
    "MultiLayerNetExtend": "multi-layer",
    "SoftmaxRegression": "softmax",
    "SimpleConvNet": "conv",
    "DeepConvNet": "deep-conv",
}


def _resolve_net_options(args: argparse.Namespace) -> None:
    """Fill in the network options left out on the command line with their defaults."""
    args.net = args.net or "two-layer"
    if args.net in CONV_NETS:
        args.activation = "relu"  # the conv nets' only activation
    args.activation = args.activation or args.default_activation


def _saved_net_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The header of the ``--load`` file, its network options put into ``args``; None
    for a file of ``save_params`` (weights only: the options describe the net)."""
    from ferrograd.saving import model_info

    path = args.load
    if not Path(path).is_file():
        _fail(f"--load: no such file {path}")
    try:
        info = model_info(path)
    except (ValueError, OSError) as err:
        _fail(f"--load: {err}", EXIT_ERROR)
    if info is None:
        return None
    net = SAVED_NETS.get(info["class"])
    if net is None:
        _fail(f"--load: {path} holds a {info['class']}, which ferrograd train does not train")
    cfg = info["config"]
    hidden = {
        "two-layer": lambda: [cfg["hidden_size"]],
        "multi-layer": lambda: list(cfg["hidden_size_list"]),
        "softmax": lambda: None,
    }.get(net, lambda: [cfg["hidden_size"]])()
    saved: dict[str, Any] = {
        "--net": net,
        "--hidden": hidden,
        "--activation": "relu" if net in CONV_NETS else cfg.get("activation"),
        "--dtype": cfg["dtype"],
        "--weight-decay": cfg.get("weight_decay_lambda", 0.0),
    }
    given = {
        "--net": args.net,
        "--hidden": args.hidden,
        "--activation": args.activation if net != "softmax" else None,
        "--dtype": args.dtype,
        "--weight-decay": args.weight_decay,
    }
    for flag, value in given.items():
        if value is not None and value != saved[flag]:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            was = saved[flag]
            was = ",".join(map(str, was)) if isinstance(was, list) else was
            _fail(
                f"--load: {path} was saved with {flag} {was}, not {shown}; leave {flag} out "
                "to resume the saved model"
            )
    args.net, args.hidden, args.dtype = net, hidden, cfg["dtype"]
    args.activation = saved["--activation"]
    args.weight_decay = saved["--weight-decay"]
    return info


def _optimizer_name(optimizer: Any) -> str:
    from ferrograd.optimizers import OPTIMIZERS

    return next(name for name, cls in OPTIMIZERS.items() if type(optimizer) is cls)


def build_network(
    net: str = "two-layer",
    hidden: Sequence[int] = (50,),
    *,
    activation: str = "sigmoid",
    weight_init: str | float = 0.01,
    dtype: DTypeLike = np.float64,
    seed: int | None = None,
    input_size: int = 784,
    output_size: int = 10,
    weight_decay: float = 0.0,
) -> Any:
    """A network by the CLI's name for it, as ``ferrograd train --net`` builds it.

    Parameters
    ----------
    net : {"two-layer", "multi-layer", "softmax", "conv", "deep-conv"}, default "two-layer"
        TwoLayerNet, MultiLayerNet, SoftmaxRegression, SimpleConvNet or DeepConvNet.
    hidden : sequence of int, default (50,)
        Hidden widths: one for two-layer, conv and deep-conv, any number for multi-layer;
        unused by softmax.
    activation : {"sigmoid", "relu"}, default "sigmoid"
        Hidden activation of the fully connected nets (the conv nets use ReLU).
    weight_init : str or float, default 0.01
        Standard deviation of the initial weights, or "he"/"relu", "xavier"/"sigmoid"
        (per layer's fan-in); the deep conv net takes only "he".
    dtype : dtype_like, default float64
        float32 or float64.
    seed : int, optional
        Seed of the initial weights; None: NumPy's global generator.
    input_size : int, default 784
        Inputs per sample (784 for the conv nets).
    output_size : int, default 10
        Classes.
    weight_decay : float, default 0.0
        λ of the multi-layer net's weight decay.

    Returns
    -------
    network
        The new network.

    Raises
    ------
    CliError
        The options do not fit the network (reported as a usage error, exit code 2).
    """
    dtype = np.dtype(dtype)
    if net in CONV_NETS:
        if input_size != 784:
            _fail(f"--net {net}: the conv nets take 28x28 images (784 inputs), got {input_size}")
        if len(hidden) != 1:
            _fail(f"--hidden: the {net} net has one hidden layer, got {len(hidden)} sizes")
        if net == "conv":
            from ferrograd.nets import SimpleConvNet

            if isinstance(weight_init, str):
                _fail("--weight-init: the conv net takes a standard deviation (the book's 0.01)")
            return SimpleConvNet(
                hidden_size=hidden[0],
                output_size=output_size,
                weight_init_std=float(weight_init),
                seed=seed,
                dtype=dtype,
            )
        from ferrograd.nets import DeepConvNet

        if weight_init != "he":
            _fail("--weight-init: the deep conv net uses He initial weights, as the book's")
        return DeepConvNet(hidden_size=hidden[0], output_size=output_size, seed=seed, dtype=dtype)
    if net == "softmax":
        from ferrograd.nets import SoftmaxRegression

        std = _init_scale(weight_init, input_size)
        return SoftmaxRegression(input_size, output_size, std, seed=seed, dtype=dtype)
    if net == "multi-layer":
        from ferrograd.nets import MultiLayerNet

        return MultiLayerNet(
            input_size,
            list(hidden),
            output_size,
            activation=activation,
            weight_init_std=weight_init,
            weight_decay_lambda=weight_decay,
            seed=seed,
            dtype=dtype,
        )
    if net == "two-layer":
        from ferrograd.nets import TwoLayerNet

        if len(hidden) != 1:
            _fail(f"--hidden: the two-layer net has one hidden layer, got {len(hidden)} sizes")
        network = TwoLayerNet(
            input_size, hidden[0], output_size, 1.0, activation=activation, seed=seed, dtype=dtype
        )
        # Scale the standard-normal draws per layer (He/Xavier use each layer's fan-in).
        network.params["W1"] *= network.params["W1"].dtype.type(
            _init_scale(weight_init, input_size)
        )
        network.params["W2"] *= network.params["W2"].dtype.type(_init_scale(weight_init, hidden[0]))
        return network
    _fail(f"unknown network {net!r}")


def _fallback_note(err: Exception) -> str:
    """Why the full MNIST could not be had, and what is trained on instead (two lines)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # DownloadError: "could not download ... file X:", then one line per failed attempt
    reason = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return (
        f"{PROG}: MNIST is not on this machine and could not be downloaded ({reason}).\n"
        f"{PROG}: training on the MNIST sample shipped with {PROG} instead (5,000 train / "
        "1,000 test images), so accuracies are not comparable to full MNIST; "
        "--data-dir DIR or FERROGRAD_DATA=DIR uses the full set."
    )


def _load_data(args: argparse.Namespace, dtype_name: str) -> tuple[Any, str]:
    """(data, dataset name); falls back to the shipped sample when MNIST is unavailable."""
    dtype = np.dtype(dtype_name)
    from ferrograd.datasets import DatasetError, DownloadError, load_mnist

    name = args.dataset
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        _fail(f"--data-dir: no such folder {args.data_dir}")
    try:
        data = load_mnist(
            data_dir=args.data_dir,
            dtype=dtype,
            dataset=name,
            progress=False if args.quiet else None,
        )
        return data, name
    except DownloadError as err:
        if name != "mnist":
            _fail(str(err).splitlines()[0] + " (see --data-dir / FERROGRAD_DATA)", EXIT_ERROR)
        if args.data_dir is not None:  # the folder exists (checked above) but lacks the files
            print(
                f"{PROG}: --data-dir {args.data_dir} does not hold the four MNIST IDX files "
                "(train-images-idx3-ubyte[.gz], ...)",
                file=sys.stderr,
                flush=True,
            )
        print(_fallback_note(err), file=sys.stderr, flush=True)
        return load_mnist(dtype=dtype, dataset="sample"), "sample"
    except DatasetError as err:
        _fail(str(err).replace("\n", " "), EXIT_ERROR)
    except OSError as err:
        _fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "), EXIT_ERROR)


DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "sample": "MNIST sample"}


def _log_every(args: argparse.Namespace, epochs: int) -> int:
    """Epochs between two printed epoch lines: all up to MAX_EPOCH_LINES, else about 10."""
    if args.log_every is not None:
        return int(args.log_every)
    return 1 if epochs <= MAX_EPOCH_LINES else math.ceil(epochs / 10)


# --------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    from ferrograd.saving import load_checkpoint, save
    from ferrograd.trainer import Trainer, load_params

    saved = _saved_net_options(args) if args.load is not None else None
    _resolve_net_options(args)
    if args.net == "softmax" and args.hidden:
        _fail("--hidden does not apply to --net softmax (it has no hidden layer)")
    for flag, path in (("--plot", args.plot), ("--plot-errors", args.plot_errors)):
        if path is not None and Path(path).suffix.lower() != ".png":
            _fail(f"{flag}: the figure is a PNG; give a path ending in .png, got {path}")
    hidden = args.hidden or default_hidden(args.net)
    weight_init = args.weight_init
    if weight_init is None:
        weight_init = default_weight_init(args.net, args.activation)
    for flag, path in (("--save", args.save), ("--plot", args.plot), ("--history", args.history)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            _fail(f"{flag}: directory {Path(path).resolve().parent} does not exist")
    if args.dtype is None:
        args.dtype = "float64" if args.gradient == "numerical" else DEFAULT_DTYPE
    if args.weight_decay and args.net != "multi-layer":
        _fail("--weight-decay applies to --net multi-layer only")
    if args.load is not None and not Path(args.load).is_file():
        _fail(f"--load: no such file {args.load}")
    resumed = "" if saved is None else f"resumed from {args.load}"
    if args.plot is not None or args.plot_errors is not None:
        _require("matplotlib", "plot", "--plot" if args.plot is not None else "--plot-errors")
    if args.progress:
        _require("tqdm", "progress", "--progress")
    data, dataset = _load_data(args, args.dtype)
    (x_train, t_train), (x_test, t_test) = data
    checkpoint = None
    if saved is not None:
        try:
            checkpoint = load_checkpoint(args.load)
        except (ValueError, OSError) as err:
            _fail(f"--load: {err}", EXIT_ERROR)
        network = checkpoint.model
        if saved["iterations"]:
            resumed += f" after {saved['iterations']} iterations ({saved['epochs']} epochs)"
    else:
        network = build_network(
            args.net,
            hidden,
            activation=args.activation,
            weight_init=weight_init,
            dtype=args.dtype,
            seed=args.seed,
            weight_decay=args.weight_decay or 0.0,
        )
        if args.load is not None:
            try:
                load_params(network, args.load)
            except (ValueError, OSError) as err:
                _fail(f"--load: {err}", EXIT_ERROR)
            resumed = f"weights from {args.load}"
    saved_optimizer = None if checkpoint is None else checkpoint.optimizer
    optimizer: Any
    if saved_optimizer is not None and args.optimizer in (None, _optimizer_name(saved_optimizer)):
        # resume the saved optimizer, with its state and step count (a new --lr applies)
        args.optimizer = _optimizer_name(saved_optimizer)
        if args.lr is not None:
            saved_optimizer.lr = args.lr
        optimizer, optimizer_param, lr = saved_optimizer, {}, float(saved_optimizer.lr)
        resumed += f", {args.optimizer} state restored"
    else:
        if saved_optimizer is not None:
            resumed += (
                f", a new {args.optimizer} optimizer (the saved "
                f"{_optimizer_name(saved_optimizer)} state is not used)"
            )
        args.optimizer = args.optimizer or "sgd"
        lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.optimizer)
        optimizer, optimizer_param = args.optimizer, {"lr": lr} if lr is not None else {}
    seed: Any = args.seed
    if seed is None and checkpoint is not None and checkpoint.rng is not None:
        seed = checkpoint.rng  # the saved run's mini-batch draws continue
    if args.batch_size is None:
        args.batch_size = (saved or {}).get("mini_batch_size") or 100
    say = (lambda _m: None) if args.quiet else _say
    if resumed:
        say(resumed)
    shape = net_shape(args.net, hidden, x_train.shape[1])
    say(
        f"{args.net} {shape} {'' if args.net == 'softmax' else args.activation + ' '}"
        f"| {args.optimizer} lr {lr if lr is not None else 'default'} | batch {args.batch_size} | "
        f"{args.gradient} | {args.dtype} | {DATASET_TITLES[dataset]}: "
        f"{x_train.shape[0]} train / {x_test.shape[0]} test"
    )
    if args.iters == 0:
        from ferrograd.trainer import History

        history = History()
        trainer = None
    else:
        trainer = Trainer(
            network,
            x_train,
            t_train,
            x_test,
            t_test,
            epochs=args.epochs or 1,
            mini_batch_size=args.batch_size,
            optimizer=optimizer,
            optimizer_param=optimizer_param,
            gradient=args.gradient,
            seed=seed,
            verbose=not args.quiet,
            iters=None if args.epochs else args.iters,
            log=say,
            progress=True if args.progress else None,
            initial_iteration=0 if checkpoint is None else checkpoint.iterations,
            initial_epoch=0 if checkpoint is None else checkpoint.epochs,
        )
        n_epochs = math.ceil(trainer.max_iter / trainer.iter_per_epoch)
        every = _log_every(args, n_epochs)
        if every > 1:
            trainer.log_every = every
            say(f"{n_epochs} epochs: one line every {every} epochs and the last (--log-every)")
        start = time.perf_counter()
        history = trainer.train()
        wall = time.perf_counter() - start
    test_acc = network.accuracy(x_test, t_test) if trainer is None else trainer.test_accuracy()
    if trainer is not None:
        _say(
            f"test acc {test_acc:.4f} after {history.iterations} iterations "
            f"({history.epochs} epochs, {wall:.1f} s, "
            f"{'fused native epochs' if history.fused else 'Python loop'})"
            + (" [interrupted]" if history.interrupted else "")
        )
    else:
        _say(f"test acc {test_acc:.4f}")
    if args.save is not None:
        if trainer is not None:
            path = save(network, args.save, trainer=trainer)
        else:
            path = save(network, args.save, optimizer=saved_optimizer)
        say(f"saved the model to {path}")
    if args.history is not None:
        history.save_json(args.history)
    if args.plot is not None and history.epochs:
        from ferrograd.plot import plot_accuracy

        act = "" if args.net == "softmax" else f" {args.activation}"
        lr_text = f" lr {lr:g}" if lr is not None else ""
        title = f"{args.net} {shape}{act}, {args.optimizer}{lr_text}, {args.dataset}"
        say(f"saved accuracy plot to {plot_accuracy(history, args.plot, title=title)}")
    if args.plot_errors is not None:
        from ferrograd.plot import plot_misclassified

        path = plot_misclassified(network, x_test, t_test, args.plot_errors)
        say(f"saved misclassified digits to {path}")
    return EXIT_INTERRUPTED if history.interrupted else EXIT_OK


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from ferrograd.gradcheck import gradient_check

    _resolve_net_options(args)
    hidden = args.hidden or ([10, 10] if args.net == "multi-layer" else [10])
    (x_train, t_train), _ = _load_data(args, "float64")[0]
    network = build_network(
        args.net,
        hidden,
        activation=args.activation,
        weight_init=(
            args.weight_init
            if args.weight_init is not None
            else default_weight_init(args.net, args.activation)
        ),
        dtype="float64",  # numerical gradients need float64 (h = 1e-4)
        seed=args.seed,
    )
    x, t = x_train[: args.batch], t_train[: args.batch]
    rows = gradient_check(network, x, t, verbose=True)
    return EXIT_OK if all(r.ok for r in rows) else EXIT_ERROR


def _cmd_search(args: argparse.Namespace) -> int:
    from ferrograd.search import format_ranking, random_search, save_results

    (x_train, t_train), _ = _load_data(args, args.dtype)[0]
    hidden = args.hidden or [100] * 6

    def report(trial: Any) -> None:
        if not args.quiet:
            _say(
                f"trial {trial.index:>3}: val acc {trial.val_acc:.4f} | lr {trial.lr:.2e}, "
                f"weight decay {trial.weight_decay:.2e} ({trial.seconds:.1f} s)"
            )

    results = random_search(
        x_train,
        t_train,
        trials=args.trials,
        epochs=args.epochs,
        train_size=args.train_size,
        validation_ratio=args.validation_ratio,
        hidden=hidden,
        activation=args.activation,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        dtype=args.dtype,
        processes=args.processes,
        seed=args.seed,
        on_result=report,
    )
    _say(format_ranking(results, top=args.top))
    if args.output is not None:
        _say(f"saved ranking to {save_results(results, args.output)}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def _data_options(p: argparse.ArgumentParser, default: str = "mnist") -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=("mnist", "fashion-mnist", "sample"),
        default=default,
        help=f"mnist, fashion-mnist or sample (5,000/1,000 MNIST images shipped with the "
        f"package) (default: {default})",
    )
    g.add_argument(
        "--data-dir",
        type=Path,
        help="folder with the four IDX files (.gz or raw); else $FERROGRAD_DATA, the user "
        "cache (~/.cache/ferrograd), then a download; the sample if all fail",
    )


def _net_options(
    p: argparse.ArgumentParser,
    default_activation: str = "sigmoid",
    hidden_help: str = "50 for two-layer and deep-conv, 100,100 for multi-layer, 100 for conv",
) -> None:
    g = p.add_argument_group("network")
    g.add_argument(
        "--net",
        choices=("two-layer", "multi-layer", "softmax", *CONV_NETS),
        help="two-layer (book ch. 4-5), multi-layer (ch. 6), softmax regression, conv "
        "(SimpleConvNet, ch. 7) or deep-conv (DeepConvNet, ch. 8) (default: two-layer)",
    )
    g.add_argument(
        "--hidden",
        type=_hidden,
        help=f"hidden layer sizes: {hidden_help} (the defaults)",
    )
    g.add_argument(
        "--activation",
        choices=("sigmoid", "relu"),
        help=f"hidden activation (default: {default_activation})",
    )
    p.set_defaults(default_activation=default_activation)
    g.add_argument(
        "--weight-init",
        type=_weight_init,
        help="initial weight scale: he (√(2/fan_in)), xavier (√(1/fan_in)) or a standard "
        "deviation (default: 0.01 as the book; multi-layer: he for relu, xavier for sigmoid)",
    )
    g.add_argument("--seed", type=int, help="seed for weights and mini-batches (default: random)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Train the book's networks (Deep Learning from Scratch) on MNIST, fast.",
        epilog="also: ferrograd book (the book's own scripts on ferrograd), ferrograd figures "
        "(the book's figures as PNG); each has --help. "
        "exit codes: 0 ok, 1 runtime error, 2 usage error, 130 interrupted",
    )
    from ferrograd import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train a network and report accuracy per epoch",
        description="Train a network on MNIST. The defaults are the book's chapter 4 run: "
        "784-50-10 sigmoid, SGD lr 0.1, batch 100, 10,000 iterations, backprop; float32 "
        "(same accuracy as float64, half the memory and faster).",
    )
    _net_options(train)
    g = train.add_argument_group("training")
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZER_NAMES,
        help="update rule (book ch. 6) (default: sgd)",
    )
    g.add_argument(
        "--lr",
        type=_positive_float,
        help="learning rate (default: 0.1 for sgd/momentum/nesterov as the book, else the "
        "optimizer's own: adam 0.001, adagrad 0.01, rmsprop 0.01)",
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        help="mini-batch size (default: 100; with --load, the saved run's)",
    )
    it = g.add_mutually_exclusive_group()
    it.add_argument(
        "--iters",
        type=_non_negative_int,
        default=10_000,
        help="iterations (default: 10000; 0 only evaluates, e.g. with --load)",
    )
    it.add_argument(
        "--epochs", type=_positive_int, help="epochs of train_size/batch_size iterations"
    )
    g.add_argument(
        "--gradient",
        choices=("backprop", "numerical"),
        default="backprop",
        help="backprop, or numerical central differences (very slow; float64)",
    )
    g.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        help="L2 weight decay λ (multi-layer only; default 0)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help=f"parameter and data dtype (default: {DEFAULT_DTYPE}; float64 with "
        "--gradient numerical, whose differences float32 cannot resolve)",
    )
    _data_options(train)
    o = train.add_argument_group("output")
    o.add_argument("--plot", type=Path, metavar="PATH", help="save the accuracy plot (PNG)")
    o.add_argument(
        "--plot-errors", type=Path, metavar="PATH", help="save a grid of misclassified test digits"
    )
    o.add_argument("--history", type=Path, metavar="PATH", help="save the History as JSON")
    o.add_argument(
        "--save",
        type=Path,
        metavar="PATH",
        help="save the model, optimizer state and mini-batch generator (.npz) to resume from",
    )
    o.add_argument(
        "--load",
        type=Path,
        metavar="PATH",
        help="resume a model saved with --save: its net, sizes, activation and dtype, "
        "weights, optimizer state and mini-batches continue (files of save_params: "
        "the weights, into the net the options describe)",
    )
    o.add_argument(
        "--log-every",
        type=_positive_int,
        metavar="N",
        help=f"print every Nth epoch line and the last (default: every epoch up to "
        f"{MAX_EPOCH_LINES} epochs, else about 10 lines)",
    )
    o.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar (needs tqdm: pip install 'ferrograd[progress]'; "
        "default: a bar on a terminal when tqdm is installed)",
    )
    o.add_argument("--quiet", action="store_true", help="print only the final accuracy")
    train.set_defaults(func=_cmd_train)

    check = sub.add_parser(
        "gradcheck",
        help="compare backprop with the numerical gradient",
        description="Gradient check (book ch. 5): backprop against central differences "
        "on the first --batch training images, float64, with a small hidden layer.",
    )
    _net_options(check, hidden_help="10 for two-layer, 10,10 for multi-layer")
    check.add_argument("--batch", type=_positive_int, default=3, help="images (default: 3)")
    _data_options(check, default="sample")
    check.set_defaults(func=_cmd_gradcheck, quiet=False)

    search = sub.add_parser(
        "search",
        help="random search over learning rate and weight decay",
        description="Random search (book ch. 6): lr and weight decay drawn log-uniformly, "
        "short trainings of a multi-layer net on a training subset, scored on a validation "
        "split of it; trials run in parallel processes.",
    )
    search.add_argument(
        "--trials",
        type=_positive_int,
        default=20,
        help="random draws of lr and decay (default: 20)",
    )
    search.add_argument(
        "--epochs", type=_positive_int, default=50, help="per trial (default: 50 as the book)"
    )
    search.add_argument(
        "--processes", type=_positive_int, help="parallel processes (default: CPU count)"
    )
    search.add_argument(
        "--train-size",
        type=_positive_int,
        default=500,
        help="training samples used, incl. validation (default: 500 as the book)",
    )
    search.add_argument(
        "--validation-ratio", type=float, default=0.2, help="validation share (default: 0.2)"
    )
    search.add_argument("--hidden", type=_hidden, help="hidden sizes (default: 100 x 6)")
    search.add_argument(
        "--activation",
        choices=("sigmoid", "relu"),
        default="relu",
        help="hidden activation (default: relu)",
    )
    search.add_argument(
        "--optimizer",
        choices=OPTIMIZER_NAMES,
        default="sgd",
        help="update rule whose lr is searched (default: sgd as the book)",
    )
    search.add_argument(
        "--batch-size", type=_positive_int, default=100, help="mini-batch size (default: 100)"
    )
    search.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="parameter and data dtype (default: float64)",
    )
    search.add_argument(
        "--seed", type=int, help="seed for the draws, weights and batches (default: random)"
    )
    search.add_argument(
        "--top", type=_positive_int, help="rows of the ranking to print (default: all)"
    )
    search.add_argument(
        "--output", type=Path, metavar="PATH", help="save the ranking (.csv, or .json)"
    )
    search.add_argument(
        "--quiet", action="store_true", help="print only the ranking, not each trial"
    )
    _data_options(search)
    search.set_defaults(func=_cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ferrograd`` console script.

    Runs the subcommand and turns errors into one line on stderr.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit code: 0 success, 1 runtime error, 2 usage error, 130 interrupted (``--help``,
        ``--version`` and argparse's usage errors exit through ``SystemExit`` with 0 / 2).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["book"]:  # the book's own scripts: ferrograd.book has its own parser
        from ferrograd.book import main as book_main

        return book_main(argv[1:], prog=f"{PROG} book")
    if argv[:1] == ["figures"]:
        from ferrograd.figures import main as figures_main

        return figures_main(argv[1:], prog=f"{PROG} figures")
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`| head`): no message, and no second error when Python
        # flushes stdout at exit
        _silence_stdout()
        return EXIT_ERROR
    except MemoryError as err:
        detail = f": {err}" if str(err) else ""
        print(f"{PROG}: error: out of memory{detail}".replace("\n", " "), file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, TypeError, OSError) as err:
        print(f"{PROG}: error: {err}".replace("\n", " "), file=sys.stderr)
        return EXIT_ERROR


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (captured stdout)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
