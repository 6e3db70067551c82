"""``profile``: parameters and memory of a profile's networks, before any training (arithmetic, no torch)."""

from __future__ import annotations

import argparse

from engine.cli import _arguments
from engine.cli._common import CliError, table
from engine.core.footprint import BIT_WIDTHS, footprint, format_count, layer_counts
from engine.core.profiles import Profile, get_profile
from engine.core.space import TABLE_I, Genotype, Space
from engine.data.catalogue import dataset_shape


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("profile", help="parameters and memory of a profile's networks, before any training")
    _arguments.add_dataset(parser)
    _arguments.add_profile(parser)
    _arguments.add_kernel_set(parser, required=False, help="narrow to one kernel set")
    parser.add_argument("--genotype", help="one cell, e.g. '0302 0030 0003 0000': per-layer breakdown")
    parser.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> None:
    profile = get_profile(args.profile)
    if args.genotype is not None and args.kernel_set is None:
        raise CliError("--genotype needs --kernel-set")
    kernel_sets = [Space.parse(args.kernel_set)] if args.kernel_set is not None else list(TABLE_I)
    genotype = kernel_sets[0].genotype(args.genotype) if args.genotype is not None else None
    if genotype is not None and kernel_sets[0].pruned and not any(genotype.ops):
        raise CliError(
            f"cell {args.genotype!r} has no path from input to output: pruning its dead edges leaves nothing to build"
        )
    shape = dataset_shape(args.dataset)
    print(
        f"{profile.name} profile on {args.dataset} ({shape.num_classes} classes, {shape.image_size} px): "
        f"{profile.description}"
    )
    if genotype is not None:
        print_cell(genotype, kernel_sets[0], profile, shape)
    else:
        print_kernel_sets(kernel_sets, profile, shape)


def print_cell(genotype: Genotype, kernel_set: Space, profile: Profile, shape) -> None:
    """One cell's parameters layer by layer, in total, and its memory at each bit width."""
    rows = [
        [layer.name, layer.shape, f"{layer.weights:,}", f"{layer.biases:,}", f"{layer.norm:,}"]
        for layer in layer_counts(genotype, kernel_set, profile, shape)
    ]
    print(table(rows, ["layer", "shape", "weights", "biases", "BN affine"]))
    counted = footprint(genotype, kernel_set, profile, shape)
    print(f"\nEq. 2-3 parameters: {counted.params:,}   PyTorch trainable: {counted.params_torch:,}")
    print("memory: " + "   ".join(f"{bits}-bit {counted.bytes(bits) / 1e6:.2f} MB" for bits in BIT_WIDTHS))


def print_kernel_sets(kernel_sets: list[Space], profile: Profile, shape) -> None:
    """The smallest and largest network of each kernel set, and the largest one's memory at each bit width."""
    rows = []
    for kernel_set in kernel_sets:
        smallest, largest = (footprint(cell, kernel_set, profile, shape) for cell in kernel_set.extremes())
        memory = [f"{largest.bytes(bits) / 1e6:.1f}" for bits in BIT_WIDTHS]
        rows.append([kernel_set.name, format_count(smallest.params), format_count(largest.params), *memory])
    header = ["kernel set", "params (min)", "params (max)", *[f"max MB @{bits}-bit" for bits in BIT_WIDTHS]]
    print(table(rows, header))
    print("\nmin: a cell without convolutions; max: all six edges convolve with the largest kernel.")
