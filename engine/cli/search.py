"""``search``: training-free random (or exhaustive) search over one kernel set."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engine.cli import _arguments
from engine.cli._common import CliError, check_output, named_dataset, output_file, table, whole
from engine.core.files import write_json
from engine.core.footprint import format_count
from engine.core.profiles import Profile, ScoreConfig, get_profile
from engine.core.space import MAX_ITERATIONS, Space

DEFAULT_ITERATIONS = 1000


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("search", help="training-free random (or exhaustive) search over one kernel set")
    _arguments.add_dataset(parser)
    _arguments.add_kernel_set(parser, required=True)
    parser.add_argument(
        "--iterations",
        type=whole(1, MAX_ITERATIONS),
        default=None,
        help=f"candidates to score (default {DEFAULT_ITERATIONS}; with --exhaustive, all distinct cells: 7,012 for "
        "two kernel sizes)",
    )
    _arguments.add_profile(parser)
    _arguments.add_seed(parser)
    _arguments.add_device(parser)
    parser.add_argument("--dedupe", action="store_true", help="score each distinct cell once (beyond the paper)")
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="score every distinct cell once (7,012 for two kernel sizes after pruning and merging relabelled "
        "cells; 14,125 raw cells of spikenas) in an order shuffled by --seed, instead of sampling; --iterations N "
        "scores the first N of that order, --max-params passes over the cells above it (beyond the paper)",
    )
    parser.add_argument(
        "--max-params", type=whole(1, 10**12), default=None, help="skip cells over this many parameters"
    )
    parser.add_argument("--score-batch", type=whole(1, 4096), help="images per scoring batch (default: the profile's)")
    parser.add_argument(
        "--score-batches", type=whole(1, 1000), help="scoring batches per draw (default: the profile's)"
    )
    parser.add_argument(
        "--draws", type=whole(1, 1000), help="(init, batch) draws averaged per candidate (default: the profile's)"
    )
    parser.add_argument(
        "--draw-mode", choices=["shared", "fresh"], help="same init and batch for every candidate, or new ones"
    )
    _arguments.add_precision(parser)
    parser.add_argument(
        "--count-silent", choices=["yes", "no"], help="whether layers that never fired add to the kernel"
    )
    _arguments.add_in_flight(parser)
    parser.add_argument("--top", type=whole(1, 10_000), default=10, help="rows in the summary table")
    parser.add_argument("--json", type=output_file, help="write every candidate to this JSON file")
    parser.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> None:
    from engine.nn.devices import resolve_device
    from engine.search.sampling import random_search

    kernel_set = Space.parse(args.kernel_set)
    profile = get_profile(args.profile)
    iterations = iterations_to_score(args, kernel_set)
    if args.json is not None:
        check_output(args.json, args)
    config = score_config(args, profile)
    device = resolve_device(args.device)
    data = named_dataset(args.dataset)
    mode = "exhaustive search" if args.exhaustive else "search"
    with candidate_bar(iterations, f"{kernel_set.name} {mode}") as progress:
        result = random_search(
            kernel_set,
            profile,
            data,
            iterations,
            seed=args.seed,
            device=device,
            config=config,
            dedupe=args.dedupe,
            exhaustive=args.exhaustive,
            max_params=args.max_params,
            in_flight=args.in_flight,
            progress=progress,
        )
    print(best_candidates_table(result.candidates, args.top))
    rate = len(result.candidates) / max(result.seconds, 1e-9)
    print(
        f"\n{result.setting} on {args.dataset} ({profile.name} profile, {device}): "
        f"{len(result.candidates)} candidates in {result.seconds:.1f} s ({rate:.2f}/s); "
        f"best {result.best.genotype} score {result.best.score:.4f}"
    )
    if args.json:
        write_json(args.json, search_record(args, kernel_set, profile, config, device, result))
        print(f"wrote {args.json}")


def iterations_to_score(args: argparse.Namespace, kernel_set: Space) -> int:
    """How many candidates to score: ``--iterations``, or by default 1000 (or, exhaustive, every distinct cell)."""
    if not args.exhaustive:
        return DEFAULT_ITERATIONS if args.iterations is None else args.iterations
    cells = len(kernel_set.distinct_cells())
    if args.dedupe:
        raise CliError("--exhaustive already scores each distinct cell once; leave out --dedupe")
    if args.iterations is not None and args.iterations > cells:
        raise CliError(
            f"--exhaustive scores at most the {cells:,} distinct cells; ask for --iterations {cells:,} or fewer, "
            "or leave --iterations out for all of them"
        )
    return cells if args.iterations is None else args.iterations


def score_config(args: argparse.Namespace, profile: Profile) -> ScoreConfig:
    """The profile's score settings with those the command line overrides."""
    overrides = {
        "batch_size": args.score_batch,
        "batches": args.score_batches,
        "draws": args.draws,
        "shared": {"shared": True, "fresh": False}.get(args.draw_mode),
        "count_silent": {"yes": True, "no": False}.get(args.count_silent),
        "precision": args.precision,
    }
    given = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(profile.score, **given)


@contextmanager
def candidate_bar(total: int, description: str) -> Iterator[Callable]:
    """A progress bar on standard error; yields the search's progress callback, which moves it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="cand", file=sys.stderr)

    def progress(done: int, total: int, best) -> None:
        bar.update(done - bar.n)
        if best is not None:
            bar.set_postfix(best=f"{best.score:.3f}")

    try:
        yield progress
    finally:
        bar.close()


def best_candidates_table(candidates, top: int) -> str:
    """The ``top`` candidates by score, best first."""
    ranked = sorted(candidates, key=lambda candidate: -candidate.score)[:top]
    rows = [
        [
            str(candidate.index),
            candidate.genotype.to_str(),
            f"{candidate.score:.4f}",
            format_count(candidate.params),
            str(candidate.conv_edges),
            str(candidate.silent_layers),
            f"{candidate.firing_rate:.3f}",
        ]
        for candidate in ranked
    ]
    return table(rows, ["#", "genotype", "score", "params", "conv edges", "silent", "firing"])


def search_record(
    args: argparse.Namespace, kernel_set: Space, profile: Profile, config: ScoreConfig, device, result
) -> dict:
    """What ``--json`` writes: the search's settings and every candidate."""
    return {
        "setting": result.setting,
        "kernel_set": kernel_set.name,
        "iterations": result.iterations,
        "exhaustive": args.exhaustive,
        "dataset": args.dataset,
        "profile": profile.to_dict(),
        "score_config": dataclasses.asdict(config),
        "seed": args.seed,
        "device": str(device),
        "dedupe": args.dedupe,
        "max_params": args.max_params,
        "seconds": result.seconds,
        "best": result.best.to_dict(),
        "candidates": [candidate.to_dict() for candidate in result.candidates],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
