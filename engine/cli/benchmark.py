"""``benchmark``: SpikeNAS-Bench's 15,625 trained networks. ``benchmark import`` reads the published records
and checks them against the engine; ``benchmark report`` measures training-free proxies against them."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine import api
from engine.cli import _arguments
from engine.cli._common import MAX_ID, CliError, Parser, check_output, one_line, output_file, whole
from engine.core.files import write_json
from engine.core.footprint import footprint
from engine.core.profiles import get_profile
from engine.core.selection import Budget
from engine.core.space import SPIKENAS
from engine.data.catalogue import dataset_shape
from engine.study import benchmark

DATASETS = list(benchmark.FOLDERS)  # those the benchmark trained on: cifar10, cifar100, tinyimagenet


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="SpikeNAS-Bench's 15,625 trained networks: import them, measure proxies on them"
    )
    commands = parser.add_subparsers(dest="benchmark_command", required=True, parser_class=Parser)

    importing = commands.add_parser(
        "import",
        help="read the published records (PATH/CIFAR10/<id>/train_process.txt or PATH/data/...), check every "
        "parameter count against the engine's, save them compactly",
    )
    importing.add_argument("path", type=Path, help="the folder holding the dataset's folder of records")
    _arguments.add_dataset(importing, "cifar10", choices=DATASETS, help=None)
    importing.add_argument(
        "--out", type=output_file, help="file to write (default: <data root>/benchmarks/spikenas-<dataset>.npz)"
    )
    importing.set_defaults(run_command=run_import)

    report = commands.add_parser(
        "report",
        help="training-free proxies against the benchmark's true accuracies: rank correlations, precision at k, "
        "partial correlation, random-search regret",
    )
    report.add_argument(
        "--scores", type=Path, action="append", help="a `search --kernel-set spikenas --json` file (repeatable)"
    )
    report.add_argument(
        "--run", type=whole(1, MAX_ID), action="append", help="a spikenas run of the database (repeatable)"
    )
    _arguments.add_dataset(report, "cifar10", choices=DATASETS, help=None)
    report.add_argument(
        "--common",
        action="store_true",
        help="only the cells every source scored (compare widths on the same networks)",
    )
    report.add_argument("--searches", type=whole(10, 100_000), default=1000, help="random searches replayed per size")
    report.add_argument("--budget", help="also apply Alg. 1 under this parameter budget ('20M')")
    _arguments.add_seed(report)
    report.add_argument("--out", type=output_file, help="the whole report as JSON")
    report.set_defaults(run_command=run_report)


# ------------------------------------------------------------------------------------------ import


def run_import(args: argparse.Namespace) -> None:
    out = check_output(args.out or benchmark.records_file(args.dataset, benchmark.imported_folder()), args, args.path)
    try:
        folder = args.path.is_dir()
    except OSError as e:  # a name too long: the argument is wrong, not the disk
        raise CliError(f"cannot read {str(args.path)[:80]!r}: {e.strerror}") from None
    if not folder:
        raise CliError(
            f"{args.path} is not a folder: give the folder holding {benchmark.FOLDERS[args.dataset]}/ "
            "(or data/) of the published records"
        )
    started = time.perf_counter()

    def progress(read: int, total: int) -> None:
        print(f"\rread {read:,}/{total:,}", end="\n" if read == total else "", file=sys.stderr)

    records = benchmark.read_published(args.path, args.dataset, progress if sys.stderr.isatty() else None)
    profile, shape = get_profile(benchmark.BENCHMARK_PROFILE), dataset_shape(args.dataset)
    wrong = benchmark.check_params(records, lambda cell: footprint(cell, SPIKENAS, profile, shape).params_torch)
    if wrong:
        raise CliError(
            f"{len(wrong):,} of {len(records):,} published parameter counts differ from the engine's "
            f"({wrong[0]}); nothing was written"
        )
    benchmark.save(records, out)
    seconds = time.perf_counter() - started
    print(
        f"{len(records):,} {args.dataset} networks read in {seconds:.1f} s; every published parameter count "
        f"equals the engine's; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
    )


# ------------------------------------------------------------------------------------------ report

# Each source is reported on twice: over every network, and over those SNASNet's sampler can propose.
POPULATIONS = {"every network": False, "the networks SNASNet's sampler proposes": True}


def run_report(args: argparse.Namespace) -> None:
    out = check_output(args.out, args, *(args.scores or [])) if args.out else None
    records = benchmark.bundled(args.dataset)
    budget = Budget.parse(args.budget).limit if args.budget is not None else None
    sources = scored_sources(args)
    if args.common:  # the cells every source scored: widths compared on the same networks
        shared = set.intersection(*(set(scored) for _, scored in sources))
        sources = [
            (label, {cell: value for cell, value in scored.items() if cell in shared}) for label, scored in sources
        ]
    sections, payload = [], {"dataset": args.dataset, "citation": benchmark.CITATION, "sources": []}
    for (label, scored), (population, proposable) in itertools.product(sources, POPULATIONS.items()):
        text, entry = report_section(args, records, label, scored, population, proposable, budget)
        sections.append(text)
        payload["sources"].append(entry)
    print(
        f"{benchmark.SOURCE} ({args.dataset}): correlations with validation accuracy, regret in test accuracy "
        f"points against the best network scored; {args.searches:,} random searches per size\n"
    )
    print("\n\n".join(sections))
    if out is not None:
        write_json(out, payload)
        print(f"\nwrote {out}")


def report_section(
    args: argparse.Namespace, records, label: str, scored: dict, population: str, proposable: bool, budget
) -> tuple[str, dict]:
    """One source's proxies over one population of networks: the text, and its entry of the JSON report."""
    rows, proxies = benchmark.proxies_for(records, scored, label, proposable=proposable)
    validation, test = records.final_val[rows], records.test_acc[rows]
    proxy_rows = benchmark.proxy_table(
        proxies, validation, test, records.conv_edges[rows], searches=args.searches, seed=args.seed
    )
    lines = [
        f"## {label}, {population}: {len(rows):,} networks ({len(scored):,} cells scored); best test accuracy "
        f"{test.max():.2f} %, median {np.median(test):.2f} %",
        "",
        benchmark.format_table(proxy_rows),
    ]
    picks = None
    if budget is not None:
        picks = benchmark.budget_pick(records, rows, proxies[f"score ({label})"], budget)
        lines += ["", budget_line(args.budget, picks)]
    entry = {"label": label, "population": population, "networks": len(rows), "proxies": proxy_rows, "budget": picks}
    return "\n".join(lines), entry


def budget_line(budget: str, picks: dict) -> str:
    """What Alg. 1 chooses under the budget on validation accuracy, against the score's own pick."""
    if not picks["fits"]:
        return f"Alg. 1 under {budget} parameters: no network fits"
    best, pick = picks["best"], picks["proxy_pick"]
    return (
        f"Alg. 1 under {budget} parameters ({picks['fits']:,} networks fit): chosen on validation, network "
        f"{best['id']} ({best['params']:,} parameters) tests at {best['test']:.2f} %; the score's pick, network "
        f"{pick['id']} ({pick['params']:,}), at {pick['test']:.2f} %"
    )


def scored_sources(args: argparse.Namespace) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """(label, genotype -> (score, firing rate)) of each --scores file and --run of the database."""
    sources = [scores_file(path) for path in args.scores or []]
    if args.run:
        store = api.get_store(args.db, create=False, readonly=True)
        for run_id in args.run:
            run = store.run(run_id)
            if run["kernel_set"] != SPIKENAS.name:
                raise CliError(f"run {run_id} searched {run['kernel_set']}, not the benchmark's space {SPIKENAS.name}")
            profile = store.experiment(run["experiment_id"])["config"]["profile"]
            sources.append((profile, api.scored_cells(run_id, store=store)))
    if not sources:
        raise CliError("name what to report on: --scores FILE (from `search --kernel-set spikenas --json`) or --run ID")
    return sources


def scores_file(path: Path) -> tuple[str, dict[str, tuple[float, float]]]:
    """The profile's name and each cell's (score, firing rate) of a `search --kernel-set spikenas --json` file."""
    try:
        payload = json.loads(Path(path).read_text())
        cells = {cell["genotype"]: (float(cell["score"]), float(cell["firing_rate"])) for cell in payload["candidates"]}
        label = payload["profile"]["name"] if isinstance(payload["profile"], dict) else str(payload["profile"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CliError(
            f"{path} is not a `search --json` file ({type(error).__name__}: {one_line(error)[:80]})"
        ) from None
    if payload.get("kernel_set") != SPIKENAS.name:
        raise CliError(f"{path} scored {payload.get('kernel_set')!r}, not the benchmark's space {SPIKENAS.name}")
    return label, cells
