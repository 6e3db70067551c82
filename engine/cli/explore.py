"""``explore``: the SpiKernel methodology here and now (search, train and select per kernel set), and ``select``:
Alg. 1 applied again to a finished exploration."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from engine.api import choose
from engine.cli import _arguments
from engine.cli._common import EXIT_INTERRUPTED, StopOnInterrupt, table
from engine.core.files import check_output_folder
from engine.core.footprint import BIT_WIDTHS, format_count
from engine.core.selection import Budget, parse_energy_budget


def add_parser(subparsers) -> None:
    explore = subparsers.add_parser(
        "explore", help="the SpiKernel methodology: search, train and select per kernel set"
    )
    _arguments.add_experiment(explore)
    explore.add_argument("--out", type=Path, default=Path("runs/explore"))
    explore.set_defaults(run_command=run_explore)

    select = subparsers.add_parser("select", help="re-apply Alg. 1 to a finished exploration")
    select.add_argument("folder", type=Path)
    select.add_argument("--budget", required=True)
    select.add_argument(
        "--bits",
        type=int,
        choices=BIT_WIDTHS,
        help="at 8 or 4 bits, Alg. 1 uses the accuracy measured with weights of that width",
    )
    select.add_argument("--energy-budget", help="also an energy budget per inference, like '5uJ' (beyond the paper)")
    select.set_defaults(run_command=run_select)


def run_explore(args: argparse.Namespace) -> int | None:
    from engine.api.explore import explore

    budget = Budget.parse(args.budget, args.bits) if args.budget else None
    config = _arguments.experiment_config(args)
    check_output_folder(args.out)
    with StopOnInterrupt() as stop:
        runs = explore(config, args.out, reporter=BarReporter(), stop=stop.event)
    if runs is None:
        print(f"stopped; rerun the same command to resume from {args.out}")
        return EXIT_INTERRUPTED
    print_results(runs, budget, args.out)
    print(f"\nwrote {args.out / 'results.csv'} and {args.out / 'results.json'}")


def run_select(args: argparse.Namespace) -> None:
    from engine.api.explore import load_results

    budget = Budget.parse(args.budget, args.bits)  # the arguments before the folder they apply to
    parse_energy_budget(args.energy_budget)
    print_results(load_results(args.folder), budget, args.folder, args.energy_budget)


class BarReporter:
    """Draws one progress bar per stage of an exploration, and a line per kernel set it finished."""

    def __init__(self) -> None:
        self.bar = None

    def stage(self, setting: str, stage: str, total: int, done: int = 0) -> None:
        from tqdm import tqdm

        if self.bar is not None:
            self.bar.close()
        unit = "cand" if stage == "search" else "batch"
        self.bar = tqdm(total=total, initial=done, desc=f"{setting} {stage}", unit=unit, file=sys.stderr)

    def advance(self, done: int, total: int, note: str = "") -> None:
        self.bar.total = total  # training's total is known in batches only once its first batch ran
        self.bar.n = done
        self.bar.set_postfix_str(note, refresh=False)
        self.bar.refresh()

    def finished(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        accuracy = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        validation = "" if row.get("val_accuracy") is None else f" (validation {row['val_accuracy']:.2%})"
        print(
            f"{row['setting']}: test accuracy {accuracy}{validation}, {row['params']:,} parameters, "
            f"search {row['search_seconds']:.1f} s",
            file=sys.stderr,
        )


def print_results(runs, budget: Budget | None, out: Path, energy: str | None = None) -> None:
    """The table of the paper with each model's validation accuracy, its measured 8/4-bit accuracy and energy and,
    with a budget, Alg. 1's choice (on validation accuracy, or the test accuracy measured at the budget's bit width;
    within ``energy`` when given), reported with its test accuracy."""
    print(results_table(runs))
    if budget is None:
        return
    selection = choose(runs, budget, energy=energy)
    if selection.chosen is None:
        print(f"\nAlg. 1: {selection.reason}")
        return
    checkpoint = runs.set_index("run_id").loc[selection.chosen.run_id, "checkpoint"]
    where = out / checkpoint if isinstance(checkpoint, str) else "accuracy from the benchmark, no model file"
    print(
        f"\nAlg. 1 picks {selection.chosen.setting}: {selection.reason}; test accuracy "
        f"{selection.chosen.accuracy:.2%} ({where})"
    )


def results_table(runs) -> str:
    """One row per kernel set explored."""

    def percent(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.2%}"

    def unless_nan(value: float, text: str) -> str:
        return "" if math.isnan(value) else text

    rows = [
        [
            run.setting,
            percent(run.val_accuracy),
            percent(run.accuracy),
            percent(run.accuracy_8bit),
            percent(run.accuracy_4bit),
            format_count(run.params),
            f"{run.memory_mb:.2f}",
            unless_nan(run.energy_uj, f"{run.energy_uj:.3g}"),
            f"{run.search_seconds:.1f}",
            unless_nan(run.speedup, f"{run.speedup:.2f}x"),
            run.best_genotype,
        ]
        for run in runs.itertuples()
    ]
    header = [
        "setting",
        "val acc",
        "test acc",
        "8-bit",
        "4-bit",
        "params",
        "MB (fp32)",
        "µJ/image",
        "search s",
        "speed-up",
        "genotype",
    ]
    return table(rows, header)
