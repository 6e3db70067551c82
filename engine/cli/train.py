"""``train``: train one cell and save it as a .safetensors model (Ctrl-C stops after the current step)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import _arguments
from engine.cli._common import (
    EXIT_INTERRUPTED,
    StopOnInterrupt,
    check_output,
    named_dataset,
    number,
    output_file,
    table,
    whole,
)
from engine.core.profiles import get_profile
from engine.core.space import DEFAULT_VALIDATION, Genotype, Space


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train one cell and save it as a .safetensors model")
    parser.add_argument("--genotype", required=True, help="e.g. '0302 0030 0003 0000'")
    _arguments.add_kernel_set(parser, required=True)
    _arguments.add_dataset(parser)
    _arguments.add_profile(parser)
    _arguments.add_epochs(parser)
    parser.add_argument("--batch-size", type=whole(1, 4096), default=None, help="default: the profile's (64)")
    parser.add_argument("--lr", type=number(0, 10, above=True), default=0.1)
    parser.add_argument("--weight-decay", type=number(0, 1), default=5e-4)
    _arguments.add_precision(parser)
    _arguments.add_seed(parser)
    _arguments.add_validation(parser, DEFAULT_VALIDATION)
    _arguments.add_device(parser)
    parser.add_argument("--out", type=output_file, default=Path("runs/model.safetensors"))
    parser.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> int | None:
    from tqdm import tqdm

    from engine.nn.devices import resolve_device
    from engine.train.checkpoint import save_trained
    from engine.train.training import TrainConfig, train

    kernel_set = Space.parse(args.kernel_set)
    genotype = kernel_set.check(Genotype.from_str(args.genotype, kernel_set.genotype_rule))
    profile = get_profile(args.profile)
    config = TrainConfig(
        epochs=args.epochs or profile.epochs,
        batch_size=args.batch_size or profile.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        precision=args.precision,
        seed=args.seed,
        device=args.device,
        validation=args.validation,
    )
    resolve_device(args.device)  # every argument checked before any work or output
    state = check_output(args.out.with_name(args.out.name + ".state.pt"), args)
    check_output(args.out, args)  # before any work: a bad --out is found now, not after training
    data = named_dataset(args.dataset)
    bar = None  # drawn at the first batch: a refusal before it (a state file of another training) is one line

    def progress(epoch, batch, batches, loss, accuracy):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=config.epochs, desc="train", unit="epoch", file=sys.stderr)
        bar.n = epoch - 1 + batch / batches
        bar.set_postfix_str(f"epoch {epoch} loss {loss:.3f} acc {accuracy:.1%}")

    with StopOnInterrupt() as stop:
        result = train(
            genotype, kernel_set, profile, data, config, state_path=state, progress=progress, should_stop=stop
        )
    if bar is not None:
        bar.close()
    print(epochs_table(result.epochs))
    if result.stopped:
        print(f"stopped after epoch {len(result.epochs)}; rerun the same command to resume from {state}")
        return EXIT_INTERRUPTED
    save_trained(
        args.out,
        result.model,
        genotype=genotype,
        kernel_set=kernel_set,
        profile=profile,
        info=data.info,
        accuracy=result.accuracy,
        seed=args.seed,
        epochs=config.epochs,
        validation=result.validation,
        val_accuracy=result.val_accuracy,
        extra={"device": result.device},
    )
    state.unlink(missing_ok=True)
    held = result.validation["images"]
    validation = f", validation accuracy {result.val_accuracy:.2%} ({held:,} held-out images)" if held else ""
    print(f"test accuracy {result.accuracy:.2%}{validation} on {result.device}; wrote {args.out}")


def epochs_table(epochs) -> str:
    """One row per epoch trained: loss, accuracies, firing rate and time."""

    def optional(value: float | None, form: str) -> str:
        return "" if value is None else format(value, form)

    rows = [
        [
            str(epoch.epoch),
            f"{epoch.train_loss:.4f}",
            f"{epoch.train_accuracy:.2%}",
            optional(epoch.val_accuracy, ".2%"),
            optional(epoch.test_accuracy, ".2%"),
            optional(epoch.firing_rate, ".3f"),
            f"{epoch.seconds:.1f}",
        ]
        for epoch in epochs
    ]
    return table(rows, ["epoch", "loss", "train acc", "val acc", "test acc", "firing", "seconds"])
