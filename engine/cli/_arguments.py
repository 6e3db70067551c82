"""The arguments several commands take, each written once: its name, type, default and help."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.api import ExperimentConfig
from engine.cli._common import number, output_file, whole
from engine.core.footprint import BIT_WIDTHS
from engine.core.precision import PRECISIONS
from engine.core.profiles import PROFILES
from engine.core.space import MAX_EPOCHS, MAX_IN_FLIGHT, MAX_ITERATIONS, MAX_SEED, parse_kernel_sets

DATASET_HELP = "sample, cifar10, cifar100, tinyimagenet or folder:<path>"
KERNEL_SET_HELP = "two or more odd kernel sizes (3x3_5x5, 1x1_3x3_5x5), or a benchmark's space (spikenas)"
KERNEL_SETS_HELP = "comma-separated, e.g. 1x1_3x3,3x3_5x5, or 'all' for Table I (default: %(default)s)"
EPOCHS_HELP = "default: the profile's (10 laptop, 300 paper)"
PRECISION_HELP = "bf16: convolutions under bfloat16 autocast, faster and not exact (BENCHMARKS.md)"
DEVICE_HELP = "auto (GPU when present), cpu, cuda or cuda:N"
VALIDATION_HELP = (
    "share of each class's training images held out from training (0: none): models are chosen on the accuracy "
    "measured on them and reported with their test accuracy (default: %(default)s)"
)
IN_FLIGHT_HELP = (
    "candidates scored at once, each in a process of its own: for GPUs, where one small candidate leaves most "
    "of the card idle; the same results as one at a time (default: %(default)s)"
)


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, help="experiment database (default: $SPIKERNEL_DB or data/spikernel.db)")


def add_dataset(
    parser: argparse.ArgumentParser,
    default: str | None = "sample",
    *,
    choices: list[str] | None = None,
    help: str | None = DATASET_HELP,
) -> None:
    parser.add_argument("--dataset", default=default, choices=choices, help=help)


def add_kernel_set(parser: argparse.ArgumentParser, *, required: bool, help: str = KERNEL_SET_HELP) -> None:
    parser.add_argument("--kernel-set", required=required, help=help)


def add_kernel_sets(parser: argparse.ArgumentParser, default: tuple[str, ...]) -> None:
    parser.add_argument("--kernel-sets", default=",".join(default), help=KERNEL_SETS_HELP)


def add_profile(parser: argparse.ArgumentParser, default: str = "laptop") -> None:
    parser.add_argument("--profile", default=default, choices=list(PROFILES))


def add_epochs(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument("--epochs", type=whole(1, MAX_EPOCHS), default=default, help=EPOCHS_HELP)


def add_precision(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    parser.add_argument("--precision", choices=list(PRECISIONS), default=default, help=PRECISION_HELP)


def add_seed(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=whole(0, MAX_SEED), default=default)


def add_validation(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument("--validation", type=number(0, 1, below=True), default=default, help=VALIDATION_HELP)


def add_device(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default, help=DEVICE_HELP)


def add_in_flight(parser: argparse.ArgumentParser, default: int = 1) -> None:
    parser.add_argument("--in-flight", type=whole(1, MAX_IN_FLIGHT), default=default, help=IN_FLIGHT_HELP)


def add_output_file(parser: argparse.ArgumentParser) -> None:
    """``--out`` of a command whose text goes to standard output unless it names a file."""
    parser.add_argument("--out", type=output_file, help="file to write (default: standard output)")


# ------------------------------------------------------------------------------------------ experiments


def add_experiment(parser: argparse.ArgumentParser) -> None:
    """What an exploration is made of: the same for ``explore`` (here, now) and ``submit`` (the worker), with
    ``ExperimentConfig``'s defaults; ``experiment_config`` reads them back."""
    defaults = ExperimentConfig()
    add_dataset(parser, defaults.dataset)
    add_kernel_sets(parser, defaults.kernel_sets)
    parser.add_argument("--iterations", type=whole(1, MAX_ITERATIONS), default=defaults.iterations)
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="score the first --iterations of every distinct cell (7,012) in a seeded order, each once, "
        "instead of sampling (beyond the paper)",
    )
    parser.add_argument(
        "--baseline",
        default=defaults.baseline or "",
        help="setting for the search speed-up, '' for none (default: %(default)s)",
    )
    add_epochs(parser, defaults.epochs)
    add_profile(parser, defaults.profile)
    parser.add_argument(
        "--budget", default=defaults.budget, help="memory budget for Alg. 1: parameters ('10M') or bytes ('40MB')"
    )
    parser.add_argument(
        "--bits", type=int, choices=BIT_WIDTHS, default=defaults.bits, help="bit width for a budget in bytes"
    )
    add_precision(parser, defaults.precision)
    add_seed(parser, defaults.seed)
    add_validation(parser, defaults.validation)
    add_device(parser, defaults.device)
    add_in_flight(parser, defaults.in_flight)


def experiment_config(args: argparse.Namespace) -> ExperimentConfig:
    """The exploration the arguments of ``add_experiment`` describe."""
    return ExperimentConfig(
        dataset=args.dataset,
        kernel_sets=tuple(kernel_set.name for kernel_set in parse_kernel_sets(args.kernel_sets)),
        iterations=args.iterations,
        exhaustive=args.exhaustive,
        baseline=args.baseline or None,
        profile=args.profile,
        epochs=args.epochs,
        seed=args.seed,
        validation=args.validation,
        device=args.device,
        precision=args.precision,
        in_flight=args.in_flight,
        budget=args.budget,
        bits=args.bits,
        name=getattr(args, "name", ""),
    )
