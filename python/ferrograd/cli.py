"""The ``ferrograd`` command: train, gradcheck and search on MNIST; ``ferrograd book``
runs the book's own scripts (:mod:`ferrograd.book`), ``ferrograd figures`` draws the
book's figures (:mod:`ferrograd.figures`).

``ferrograd train`` with no options is the book's chapter 4 run (DLFS
ch04/train_neuralnet.py): a 784-50-10 sigmoid network, SGD lr 0.1, batch 100, 10,000
iterations, backprop, full MNIST, one accuracy line per epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

__all__ = ["build_network", "main"]

PROG = "ferrograd"
DEFAULT_DTYPE = "float32"
# The book's learning rates where it gives one (ch04 SGD 0.1); otherwise each optimizer's own.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "nesterov": 0.1}
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")


class CliError(Exception):
    """A user error reported as one line and exit code 2."""


def _fail(message: str) -> NoReturn:
    raise CliError(message)


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
    """The book's 0.01 for the two-layer net and softmax; He/Xavier for the multi-layer net."""
    if net == "multi-layer":
        return "he" if activation == "relu" else "xavier"
    return 0.01


def build_network(
    net: str = "two-layer",
    hidden: Sequence[int] = (50,),
    *,
    activation: str = "sigmoid",
    weight_init: str | float = 0.01,
    dtype: str | np.dtype | type = np.float64,
    seed: int | None = None,
    input_size: int = 784,
    output_size: int = 10,
    weight_decay: float = 0.0,
) -> Any:
    """A network by name: "two-layer" (hidden[0]), "multi-layer" (hidden list) or "softmax"."""
    dtype = np.dtype(dtype)
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


def _load_data(args: argparse.Namespace, dtype_name: str) -> tuple[Any, str]:
    """(data, description); falls back to the shipped sample when MNIST is unavailable."""
    dtype = np.dtype(dtype_name)
    from ferrograd.datasets import DatasetError, DownloadError, load_mnist

    name = args.dataset
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
            _fail(str(err).splitlines()[0] + " (see --data-dir / FERROGRAD_DATA)")
        print(
            f"{PROG}: MNIST is not available here ({str(err).splitlines()[0]}); training on the "
            "shipped sample instead (5,000 train / 1,000 test images): accuracy figures are "
            "not comparable to full MNIST. Use --data-dir or FERROGRAD_DATA for the full set.",
            file=sys.stderr,
        )
        return load_mnist(dtype=dtype, dataset="sample"), "sample"
    except DatasetError as err:
        _fail(str(err).replace("\n", " "))
    except OSError as err:
        _fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))


# --------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace) -> int:
    from ferrograd.trainer import Trainer, load_params, save_params

    hidden = args.hidden or ([100, 100] if args.net == "multi-layer" else [50])
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
    (x_train, t_train), (x_test, t_test) = _load_data(args, args.dtype)[0]
    network = build_network(
        args.net,
        hidden,
        activation=args.activation,
        weight_init=weight_init,
        dtype=args.dtype,
        seed=args.seed,
        weight_decay=args.weight_decay,
    )
    if args.load is not None:
        try:
            load_params(network, args.load)
        except (ValueError, OSError) as err:
            _fail(f"--load: {err}")
    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.optimizer)
    optimizer_param = {"lr": lr} if lr is not None else {}
    say = (lambda _m: None) if args.quiet else print
    shape = "-".join(map(str, [x_train.shape[1], *([] if args.net == "softmax" else hidden), 10]))
    say(
        f"{args.net} {shape} {'' if args.net == 'softmax' else args.activation + ' '}"
        f"| {args.optimizer} lr {lr if lr is not None else 'default'} | batch {args.batch_size} | "
        f"{args.gradient} | {args.dtype} | {x_train.shape[0]} train / {x_test.shape[0]} test"
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
            optimizer=args.optimizer,
            optimizer_param=optimizer_param,
            gradient=args.gradient,
            seed=args.seed,
            verbose=not args.quiet,
            iters=None if args.epochs else args.iters,
            log=say,
        )
        start = time.perf_counter()
        history = trainer.train()
        wall = time.perf_counter() - start
    test_acc = network.accuracy(x_test, t_test) if trainer is None else trainer.test_accuracy()
    if trainer is not None:
        print(
            f"test acc {test_acc:.4f} after {history.iterations} iterations "
            f"({history.epochs} epochs, {wall:.1f} s, "
            f"{'fused native epochs' if history.fused else 'Python loop'})"
            + (" [interrupted]" if history.interrupted else "")
        )
    else:
        print(f"test acc {test_acc:.4f}")
    if args.save is not None:
        path = save_params(network, args.save)
        say(f"saved parameters to {path}")
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
    return 130 if history.interrupted else 0


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from ferrograd.gradcheck import gradient_check

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
    return 0 if all(r.ok for r in rows) else 1


def _cmd_search(args: argparse.Namespace) -> int:
    from ferrograd.search import format_ranking, random_search, save_results

    (x_train, t_train), _ = _load_data(args, args.dtype)[0]
    hidden = args.hidden or [100] * 6

    def report(trial: Any) -> None:
        if not args.quiet:
            print(
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
    print(format_ranking(results, top=args.top))
    if args.output is not None:
        print(f"saved ranking to {save_results(results, args.output)}")
    return 0


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


def _net_options(p: argparse.ArgumentParser, default_activation: str = "sigmoid") -> None:
    g = p.add_argument_group("network")
    g.add_argument(
        "--net",
        choices=("two-layer", "multi-layer", "softmax"),
        default="two-layer",
        help="two-layer (book ch. 4-5), multi-layer (ch. 6) or softmax regression "
        "(default: two-layer)",
    )
    g.add_argument(
        "--hidden",
        type=_hidden,
        help="hidden layer sizes: 50 for two-layer, 100,100 for multi-layer (the defaults)",
    )
    g.add_argument(
        "--activation",
        choices=("sigmoid", "relu"),
        default=default_activation,
        help=f"hidden activation (default: {default_activation})",
    )
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
    )
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
    g.add_argument("--optimizer", choices=OPTIMIZER_NAMES, default="sgd", help="(default: sgd)")
    g.add_argument(
        "--lr",
        type=_positive_float,
        help="learning rate (default: 0.1 for sgd/momentum/nesterov as the book, else the "
        "optimizer's own: adam 0.001, adagrad 0.01, rmsprop 0.01)",
    )
    g.add_argument("--batch-size", type=_positive_int, default=100, help="(default: 100)")
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
        default=0.0,
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
    o.add_argument("--save", type=Path, metavar="PATH", help="save the parameters (.npz)")
    o.add_argument("--load", type=Path, metavar="PATH", help="start from saved parameters (resume)")
    o.add_argument("--quiet", action="store_true", help="print only the final accuracy")
    train.set_defaults(func=_cmd_train)

    check = sub.add_parser(
        "gradcheck",
        help="compare backprop with the numerical gradient",
        description="Gradient check (book ch. 5): backprop against central differences "
        "on the first --batch training images, float64, with a small hidden layer.",
    )
    _net_options(check)
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
    search.add_argument("--trials", type=_positive_int, default=20, help="(default: 20)")
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
    search.add_argument("--activation", choices=("sigmoid", "relu"), default="relu")
    search.add_argument("--optimizer", choices=OPTIMIZER_NAMES, default="sgd")
    search.add_argument("--batch-size", type=_positive_int, default=100)
    search.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    search.add_argument("--seed", type=int)
    search.add_argument("--top", type=_positive_int, help="rows of the ranking to print")
    search.add_argument(
        "--output", type=Path, metavar="PATH", help="save the ranking (.csv, or .json)"
    )
    search.add_argument("--quiet", action="store_true")
    _data_options(search)
    search.set_defaults(func=_cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ferrograd`` console script; returns the exit code."""
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
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as err:
        print(f"{PROG}: error: {err}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
