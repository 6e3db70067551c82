"""``study``: does the score pick good cells, do larger kernels help? (queued, then run here unless a worker
serves the database), and ``study-report``: what a study found, as tables, CSV or JSON."""

from __future__ import annotations

import argparse
import math

from engine import api
from engine.cli import _arguments
from engine.cli._common import StopOnInterrupt, print_or_write, table, whole
from engine.core.files import check_output_file
from engine.core.space import MAX_ITERATIONS, parse_kernel_sets


def add_parser(subparsers) -> None:
    study = subparsers.add_parser(
        "study",
        help="does the score pick good cells, do larger kernels help? score N cells per kernel set, train a "
        "stratified subset, report rank correlations and regret",
    )
    defaults = api.StudyConfig()
    _arguments.add_dataset(study, defaults.dataset)
    _arguments.add_kernel_sets(study, defaults.kernel_sets)
    study.add_argument(
        "--cells", type=whole(1, MAX_ITERATIONS), default=defaults.cells, help="cells scored per kernel set"
    )
    study.add_argument(
        "--exhaustive",
        action="store_true",
        help="score the first --cells of every distinct cell (7,012) in a seeded order, and replay the paper's "
        "1000- and 5000-iteration random searches over those scores",
    )
    study.add_argument("--trained", type=whole(1), default=defaults.trained, help="cells trained per kernel set")
    study.add_argument(
        "--top", type=whole(1), default=defaults.top, help="the score's top cells, trained with every seed"
    )
    study.add_argument("--seeds", type=whole(1), default=defaults.seeds, help="training seeds of each top cell")
    _arguments.add_epochs(study, defaults.epochs)
    _arguments.add_profile(study, defaults.profile)
    _arguments.add_precision(study, defaults.precision)
    _arguments.add_seed(study, defaults.seed)
    _arguments.add_device(study, defaults.device)
    _arguments.add_in_flight(study, defaults.in_flight)
    study.add_argument("--name", default="")
    study.add_argument("--detach", action="store_true", help="only queue it for the worker")
    study.set_defaults(run_command=run_study)

    report = subparsers.add_parser(
        "study-report", help="a study's statistics as tables, or its cells (CSV) or report (JSON)"
    )
    report.add_argument("study", type=whole(1))
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    _arguments.add_output_file(report)
    report.set_defaults(run_command=run_study_report)


def run_study(args: argparse.Namespace) -> None:
    """Submit a study and run it here (unless a worker already serves the database), then report it."""
    from engine.jobs.worker import WorkerBusy, serve

    config = api.StudyConfig(
        dataset=args.dataset,
        kernel_sets=tuple(kernel_set.name for kernel_set in parse_kernel_sets(args.kernel_sets)),
        cells=args.cells,
        exhaustive=args.exhaustive,
        trained=args.trained,
        top=args.top,
        seeds=args.seeds,
        profile=args.profile,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        in_flight=args.in_flight,
        name=args.name,
    )
    errors = api.validate_study(config)  # before the database is opened (or made)
    if errors:
        raise api.ConfigError(errors)
    store = api.get_store(args.db)
    ids = api.submit_study(config, store=store)
    study_id = ids["experiment_id"]
    print(f"study {study_id}: {len(ids['job_ids'])} job(s) queued, one per kernel set")
    report_later = f"`python -m engine study-report {study_id}` shows what it found so far"
    if args.detach:
        print(f"the worker runs it; {report_later}")
        return
    with StopOnInterrupt() as stop:
        try:
            serve(store, devices=[args.device] if args.device != "auto" else None, idle_exit=0.5, stop=stop.event)
        except WorkerBusy:
            print(f"a worker already serves {store.path}: it runs the study; {report_later}")
            return
    print(study_text(api.study_report(study_id, store=store)))


def run_study_report(args: argparse.Namespace) -> None:
    if args.out is not None:
        check_output_file(args.out)
    store = api.get_store(args.db, create=False, readonly=True)
    if args.format == "table":
        text = study_text(api.study_report(args.study, store=store)) + "\n"
    else:
        text = api.export_study(args.study, args.format, store=store)
    print_or_write(text, args.out)


# ------------------------------------------------------------------------------------------ the report


def study_text(report) -> str:
    """A study's report as plain-text tables: one row per kernel set, then the cross-tabulations."""
    parts = [
        "score against trained accuracy (95% bootstrap intervals; '-': fewer than 3 cells or no variation)",
        kernel_sets_table(report.kernel_sets),
    ]
    all_kernel_sets = {cell["kernel_set"] for cell in report.cells}
    drawn_at_random = {cell["kernel_set"] for cell in report.cells if cell["role"] == "random"}
    unsampled = sorted(all_kernel_sets - drawn_at_random)
    if unsampled:
        parts.append(
            f"(no cell was drawn at random for {', '.join(unsampled)}: train at least top + 3 cells; "
            "its gain is over the mean of all its trained cells)"
        )
    if report.overall is not None:
        parts.append(
            f"all kernel sets together: Spearman {interval_text(report.overall.spearman)}, "
            f"Kendall {interval_text(report.overall.kendall)}"
        )
    searches = [(entry.kernel_set, search) for entry in report.kernel_sets for search in entry.search_regret]
    if searches:
        parts += ["\nrandom searches replayed over the exhaustive scores", replayed_searches_table(searches)]
    for title, rows, key in (
        ("accuracy at equal conv-edge count", report.by_edges, "conv_edges"),
        ("accuracy at equal parameter count", report.by_params, "params_bin"),
    ):
        if rows:
            parts += [f"\n{title} (mean over cells, 95% t interval)", equal_size_table(rows, key)]
    return "\n".join(parts)


def number_text(value: float | None, form: str = ".2f") -> str:
    """``value`` in ``form``, or '-' when there is none."""
    return "-" if value is None or math.isnan(value) else format(value, form)


def interval_text(interval) -> str:
    """A correlation with its 95% interval, like '+0.42 [+0.10, +0.70]'."""
    if math.isnan(interval.estimate):
        return "-"
    return f"{interval.estimate:+.2f} [{number_text(interval.low, '+.2f')}, {number_text(interval.high, '+.2f')}]"


def kernel_sets_table(kernel_sets) -> str:
    """Per kernel set: cells scored and trained, rank correlations, the top cell's accuracy and the regret."""
    rows = []
    for entry in kernel_sets:
        regret = entry.regret
        rows.append(
            [
                entry.kernel_set,
                str(entry.scored),
                str(entry.trained),
                interval_text(entry.correlation.spearman),
                interval_text(entry.correlation.kendall),
                interval_text(entry.within_edges),
                f"{number_text(entry.top1.mean, '.1%')} ({entry.top1.n})",
                number_text(regret.best_accuracy, ".1%") if regret else "-",
                number_text(regret.regret, "+.1%") if regret else "-",
                number_text(regret.gain, "+.1%") if regret else "-",
            ]
        )
    header = [
        "kernel set",
        "scored",
        "trained",
        "Spearman",
        "Kendall",
        "within equal conv edges",
        "top-1 acc (seeds)",
        "best",
        "regret",
        "gain vs random",
    ]
    return table(rows, header)


def replayed_searches_table(searches) -> str:
    """The paper's random searches replayed over the exhaustive scores: how often each found the top cell."""
    rows = [
        [
            kernel_set,
            f"{search.iterations}",
            f"{search.found_top1:.0%}",
            number_text(search.score_gap, ".3f"),
            f"{search.percentile:.2%}",
        ]
        for kernel_set, search in searches
    ]
    return table(rows, ["kernel set", "iterations", "found top-1", "score gap", "pick's percentile"])


def equal_size_table(rows: list[dict], key: str) -> str:
    """Mean accuracy of the cells of equal size (by ``key``) with its interval, per kernel set."""
    body = [
        [
            row["kernel_set"],
            str(row[key]),
            str(row["n"]),
            number_text(row["mean"], ".1%"),
            f"[{number_text(row['low'], '.1%')}, {number_text(row['high'], '.1%')}]",
        ]
        for row in rows
    ]
    return table(body, ["kernel set", key.replace("_", " "), "cells", "accuracy", "interval"])
