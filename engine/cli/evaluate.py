"""``evaluate``: the test accuracy of a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import _arguments
from engine.cli._common import CliError, named_dataset


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="test accuracy of a saved model")
    parser.add_argument("model", type=Path)
    _arguments.add_dataset(parser, None, help="default: the dataset it was trained on")
    _arguments.add_device(parser)
    parser.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> None:
    from engine.data.images import load_dataset
    from engine.nn.devices import resolve_device
    from engine.train.checkpoint import load_model
    from engine.train.training import DeviceImages, evaluate

    device = resolve_device(args.device)
    loaded = load_model(args.model, device=device)
    # The dataset a model file names is read only inside the data roots: the file is not the command line.
    data = named_dataset(args.dataset) if args.dataset is not None else load_dataset(loaded.meta["dataset"]["name"])
    if tuple(data.info.classes) != loaded.data.classes:
        raise CliError(
            f"{args.model} was trained on classes {list(loaded.data.classes)}, not those of {data.info.name}"
        )
    images = DeviceImages(data.test, device)
    accuracy, rate = evaluate(loaded.model, images, data, loaded.profile, seed=loaded.meta["eval_seed"])
    recorded = loaded.meta.get("accuracy")
    print(f"{args.model}: {loaded.kernel_set} cell {loaded.genotype}, {loaded.meta['params']:,} parameters")
    if recorded is None:
        print(f"test accuracy {accuracy:.2%}, firing rate {rate:.3f}")
    else:
        print(f"test accuracy {accuracy:.2%} (recorded {recorded:.2%}), firing rate {rate:.3f}")
