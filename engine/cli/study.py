"""``study``: does the score pick good cells, do larger kernels help? (queued, then run here unless a worker
serves the database), and ``study-report``: what a study found, as tables, CSV or JSON."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from engine import api
from engine.cli import _arguments
from engine.cli._common import EXIT_INTERRUPTED, MAX_ID, StopOnInterrupt, check_output, print_or_write, table, whole
from engine.core.space import MAX_ITERATIONS, parse_kernel_sets
from engine.study import MAX_SEEDS


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
    study.add_argument(
        "--sample",
        type=whole(3, MAX_ITERATIONS),
        default=defaults.sample,
        help="distinct cells drawn uniformly from each kernel set's space and trained: the correlation's sample. "
        f"Power (80 %%, two-sided 5 %%): {defaults.sample} cells detect a Spearman correlation of "
        f"{api.detectable_correlation(defaults.sample):.2f} or more; {api.cells_needed(0.3)} cells detect 0.3",
    )
    study.add_argument(
        "--paired",
        action="store_true",
        help="draw the same genotypes in every kernel set (one sample shared), so kernel sizes are compared "
        "cell for cell; by default each kernel set draws its own",
    )
    study.add_argument(
        "--top",
        type=whole(1, MAX_ITERATIONS),
        default=defaults.top,
        help="the score's top cells (the first is the search's pick)",
    )
    study.add_argument(
        "--seeds",
        type=whole(1, MAX_SEEDS),
        default=defaults.seeds,
        help="training seeds of every trained cell, top and sampled",
    )
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
    report.add_argument("study", type=whole(1, MAX_ID))
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    _arguments.add_output_file(report)
    report.set_defaults(run_command=run_study_report)


def run_study(args: argparse.Namespace) -> int | None:
    """Submit a study and run it here (unless a worker already serves the database), then report it."""
    from engine.jobs.worker import WorkerBusy, serve

    config = api.StudyConfig(
        dataset=args.dataset,
        kernel_sets=tuple(kernel_set.name for kernel_set in parse_kernel_sets(args.kernel_sets)),
        cells=args.cells,
        exhaustive=args.exhaustive,
        sample=args.sample,
        top=args.top,
        seeds=args.seeds,
        paired=args.paired,
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
    print(power_text(config))
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
    if stop.interrupted:
        print(f"stopped; its jobs wait in the queue for a worker: `python -m engine --db {store.path} worker`")
        return EXIT_INTERRUPTED


def run_study_report(args: argparse.Namespace) -> None:
    if args.out is not None:
        check_output(args.out, args)
    store = api.get_store(args.db, create=False, readonly=True)
    if args.format == "table":
        text = study_text(api.study_report(args.study, store=store)) + "\n"
    else:
        text = api.export_study(args.study, args.format, store=store)
    print_or_write(text, args.out)


# ------------------------------------------------------------------------------------------ the report


def power_text(config: api.StudyConfig) -> str:
    """What the design can detect, said before anything is trained; a warning when that is weak."""
    detectable = api.design_power(config)
    text = (
        f"design: {config.sample} sampled cells per kernel set detect a Spearman correlation of "
        f"{detectable:.2f} or more with {api.POWER:.0%} power; "
        f"{api.trainings_per_kernel_set(config)} trainings per kernel set at most"
    )
    if detectable > api.WEAK_DESIGN:
        text += (
            f"\nwarning: this design misses correlations below {detectable:.2f} most of the time; "
            f"--sample {api.cells_needed(api.WEAK_DESIGN)} detects {api.WEAK_DESIGN}, "
            f"--sample {api.cells_needed(0.3)} detects 0.3"
        )
    return text


def study_text(report) -> str:
    """A study's report as plain-text tables: the score per kernel set, the pick, kernel sets compared."""
    parts = [
        "score against trained accuracy over each kernel set's uniform sample (seed means; 95% BCa bootstrap "
        "intervals, permutation p-values; '-': fewer than 3 cells or no variation)",
        correlations_table(report.kernel_sets),
    ]
    pooled = report.pooled
    if math.isfinite(pooled.estimate):
        parts.append(
            f"all kernel sets, ranked within each: Spearman {estimate_text(pooled)} over {pooled.n} cells "
            f"(resampled by genotype; {report.shared} genotype(s) sampled in more than one kernel set)"
        )
    parts += ["\nthe noise: seeds against cells over the sample", reliability_table(report.kernel_sets)]
    parts += ["\nthe search's pick against the uniform sample, at the same seeds", pick_table(report.kernel_sets)]
    if report.differences:
        parts += [
            "\nmean accuracy between kernel sets, over their samples, at the seeds both were trained with",
            differences_table(report.differences),
        ]
    searches = [(entry.kernel_set, search) for entry in report.kernel_sets for search in entry.search_regret]
    if searches:
        parts += ["\nrandom searches replayed over the exhaustive scores", replayed_searches_table(searches)]
    if report.by_edges:
        parts += [
            "\nthe sample's accuracy at equal conv-edge count (mean over cells, 95% t interval)",
            equal_size_table(report.by_edges, "conv_edges"),
        ]
    return "\n".join(parts)


def number_text(value: float | None, form: str = ".2f") -> str:
    """``value`` in ``form``, or '-' when there is none."""
    return "-" if value is None or math.isnan(value) else format(value, form)


def estimate_text(estimate) -> str:
    """An estimate with its 95% interval and p-value, like '+0.42 [+0.10, +0.70] p=0.012'; '-' when undefined."""
    if math.isnan(estimate.estimate):
        return "-"
    text = f"{estimate.estimate:+.2f}"
    if not math.isnan(estimate.low):
        text += f" [{estimate.low:+.2f}, {estimate.high:+.2f}]"
    if not math.isnan(estimate.p):
        text += f" {estimate.p_text()}"
    return text


def correlations_table(kernel_sets) -> str:
    """Per kernel set: the score's correlations, against what counting conv edges or parameters gives."""
    rows = [
        [
            entry.kernel_set,
            str(entry.scored),
            str(entry.sampled),
            number_text(entry.detectable),
            estimate_text(entry.spearman),
            estimate_text(entry.kendall),
            estimate_text(entry.partial),
            estimate_text(entry.baselines["conv edges"]),
            estimate_text(entry.versus["conv edges"]),
            estimate_text(entry.versus["parameters"]),
        ]
        for entry in kernel_sets
    ]
    header = [
        "kernel set",
        "scored",
        "sampled",
        "detects (80%)",
        "Spearman",
        "Kendall",
        "partial, conv edges fixed",
        "conv edges' Spearman",
        "score minus conv edges",
        "score minus parameters",
    ]
    return table(rows, header)


def reliability_table(kernel_sets) -> str:
    """How much of the accuracy is the cell and how much the seed, and the ceiling on any correlation."""
    rows = [
        [
            entry.kernel_set,
            str(entry.reliability.cells),
            str(entry.reliability.seeds),
            number_text(entry.reliability.icc),
            number_text(entry.reliability.cell_std * 100, ".1f"),
            number_text(entry.reliability.seed_std * 100, ".1f"),
            number_text(entry.reliability.seed_shift * 100, ".1f"),
            number_text(entry.reliability.ceiling),
        ]
        for entry in kernel_sets
    ]
    header = [
        "kernel set",
        "cells",
        "seeds",
        "ICC",
        "cells' spread (pts)",
        "seeds' spread (pts)",
        "shift all share (pts)",
        "ceiling on rho",
    ]
    return table(rows, header)


def pick_table(kernel_sets) -> str:
    """The top-scored cell against a uniformly drawn one: gain in points and in standard errors, and regret."""
    rows = []
    for entry in kernel_sets:
        pick = entry.pick
        rows.append(
            [
                entry.kernel_set,
                f"{number_text(entry.top1.mean, '.1%')} ({entry.top1.n})",
                number_text(pick.sample_mean, ".1%") if pick else "-",
                number_text(pick.gain * 100, "+.1f") if pick else "-",
                number_text(pick.z, "+.1f") if pick else "-",
                number_text(pick.percentile, ".0%") if pick else "-",
                f"{number_text(pick.best, '.1%')} (on {pick.chosen_on})" if pick else "-",
                number_text(pick.regret * 100, "+.1f") if pick else "-",
            ]
        )
    header = [
        "kernel set",
        "pick (seeds)",
        "sample mean",
        "gain (pts)",
        "gain (SE)",
        "pick's percentile",
        "best",
        "regret (pts)",
    ]
    return table(rows, header)


def in_points(estimate):
    """An accuracy estimate (a fraction) in points of accuracy."""
    return replace(estimate, estimate=estimate.estimate * 100, low=estimate.low * 100, high=estimate.high * 100)


def differences_table(differences) -> str:
    """Mean accuracy of each pair of kernel sets, with what the larger kernels cost in parameters."""
    rows = [
        [
            f"{d.second} - {d.first}",
            "paired by genotype" if d.paired else "independent samples",
            str(d.difference.n),
            estimate_text(in_points(d.difference)),
            number_text(d.params_ratio, ".2f"),
            estimate_text(d.agreement),
        ]
        for d in differences
    ]
    header = ["kernel sets", "design", "n", "accuracy difference (pts)", "parameters ratio", "cells agree (Spearman)"]
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
