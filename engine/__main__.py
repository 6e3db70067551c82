"""Command line: ``python -m engine <command> ...`` (``python -m engine -h`` lists the commands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .profiles import PROFILES, get_profile
from .space import TABLE_I, Genotype, KernelSet

EXIT_USAGE = 2


class CliError(Exception):
    """A bad argument or input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise CliError(message)


def write_json(path: Path, payload: dict) -> None:
    """Write to a temporary name, then rename: a kill never leaves half a file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# ------------------------------------------------------------------------------------------ search


def cmd_search(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from .data import load_dataset
    from .memory import format_count
    from .search import random_search
    from .devices import resolve_device

    kernel_set = KernelSet.parse(args.kernel_set)
    profile = get_profile(args.profile)
    if args.iterations < 1:
        raise CliError(f"--iterations must be at least 1, got {args.iterations}")
    device = resolve_device(args.device)
    data = load_dataset(args.dataset)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bar = tqdm(total=args.iterations, desc=f"{kernel_set.name} search", unit="cand", file=sys.stderr)

    def progress(done: int, total: int, best) -> None:
        bar.update(done - bar.n)
        if best is not None:
            bar.set_postfix(best=f"{best.score:.3f}")

    result = random_search(
        kernel_set,
        profile,
        data,
        args.iterations,
        seed=args.seed,
        device=device,
        dedupe=args.dedupe,
        max_params=args.max_params,
        progress=progress,
    )
    bar.close()
    ranked = sorted(result.candidates, key=lambda c: -c.score)[: args.top]
    rows = [
        [
            str(c.index),
            c.genotype.to_str(),
            f"{c.score:.4f}",
            format_count(c.params),
            str(c.conv_edges),
            str(c.silent_layers),
            f"{c.firing_rate:.3f}",
        ]
        for c in ranked
    ]
    print(table(rows, ["#", "genotype", "score", "params", "conv edges", "silent", "firing"]))
    print(
        f"\n{result.setting} on {args.dataset} ({profile.name} profile, {device}): "
        f"{len(result.candidates)} candidates in {result.seconds:.1f} s "
        f"({len(result.candidates) / max(result.seconds, 1e-9):.2f}/s); best {result.best.genotype} "
        f"score {result.best.score:.4f}"
    )
    if args.json:
        write_json(
            args.json,
            {
                "setting": result.setting,
                "kernel_set": kernel_set.name,
                "iterations": args.iterations,
                "dataset": args.dataset,
                "profile": profile.to_dict(),
                "seed": args.seed,
                "device": str(device),
                "dedupe": args.dedupe,
                "max_params": args.max_params,
                "seconds": result.seconds,
                "best": result.best.to_dict(),
                "candidates": [c.to_dict() for c in result.candidates],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        print(f"wrote {args.json}")


# ----------------------------------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> None:
    from .data import dataset_info
    from .memory import BIT_WIDTHS, footprint, format_count, layer_counts
    from .space import extreme_genotypes

    profile = get_profile(args.profile)
    info = dataset_info(args.dataset)
    print(f"{profile.name} profile on {args.dataset} ({info.num_classes} classes, {info.image_size} px): {profile.description}")
    if args.genotype:
        if not args.kernel_set:
            raise CliError("--genotype needs --kernel-set")
        genotype = Genotype.from_str(args.genotype)
        kernel_set = KernelSet.parse(args.kernel_set)
        layers = layer_counts(genotype, kernel_set, profile, info)
        rows = [[l.name, l.shape, f"{l.weights:,}", f"{l.biases:,}", f"{l.norm:,}"] for l in layers]
        print(table(rows, ["layer", "shape", "weights", "biases", "BN affine"]))
        fp = footprint(genotype, kernel_set, profile, info)
        print(f"\nEq. 2-3 parameters: {fp.params:,}   PyTorch trainable: {fp.params_torch:,}")
        print("memory: " + "   ".join(f"{b}-bit {fp.bytes(b) / 2**20:.2f} MiB" for b in BIT_WIDTHS))
        return
    sets = [KernelSet.parse(args.kernel_set)] if args.kernel_set else list(TABLE_I)
    rows = []
    for ks in sets:
        small, large = (footprint(g, ks, profile, info) for g in extreme_genotypes())
        rows.append(
            [ks.name, format_count(small.params), format_count(large.params)]
            + [f"{large.bytes(b) / 2**20:.1f}" for b in BIT_WIDTHS]
        )
    print(table(rows, ["kernel set", "params (min)", "params (max)", *[f"max MiB @{b}-bit" for b in BIT_WIDTHS]]))
    print("\nmin: a cell without convolutions; max: all six edges convolve with the larger kernel.")


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> Parser:
    parser = Parser(prog="python -m engine", description="SpiKernel: kernel-size exploration for spiking networks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("search", help="training-free random search over one kernel set")
    s.add_argument("--dataset", default="sample", help="sample, cifar10, cifar100, tinyimagenet or folder:<path>")
    s.add_argument("--kernel-set", required=True, help="two odd kernel sizes, e.g. 3x3_5x5")
    s.add_argument("--iterations", type=int, default=1000, help="candidates to score (default 1000)")
    s.add_argument("--profile", default="laptop", choices=list(PROFILES))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    s.add_argument("--dedupe", action="store_true", help="score each distinct cell once (beyond the paper)")
    s.add_argument("--max-params", type=int, default=None, help="skip cells over this many parameters")
    s.add_argument("--top", type=int, default=10, help="rows in the summary table")
    s.add_argument("--json", type=Path, help="write every candidate to this JSON file")
    s.set_defaults(func=cmd_search)

    p = sub.add_parser("profile", help="parameters and memory of a profile's networks, before any training")
    p.add_argument("--dataset", default="sample")
    p.add_argument("--profile", default="laptop", choices=list(PROFILES))
    p.add_argument("--kernel-set", help="narrow to one kernel set")
    p.add_argument("--genotype", help="one cell, e.g. '0302 0030 0003 0000': per-layer breakdown")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.func(args)
    except (CliError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
