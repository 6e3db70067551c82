"""Command line: ``python -m engine <command> ...`` (``python -m engine -h`` lists the commands)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from engine.core.profiles import PROFILES, get_profile
from engine.core.files import check_output_file, check_output_folder
from engine.core.footprint import BIT_WIDTHS
from engine.core.space import MAX_EPOCHS, MAX_ITERATIONS, MAX_SEED, MAX_IN_FLIGHT, SPIKENAS, TABLE_I, Genotype, Space, parse_kernel_sets
from engine.study.studies import StudyConfig

EXIT_USAGE = 2


class CliError(Exception):
    """A bad argument or input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise CliError(message)


def whole(low: int, high: int | None = None):
    """An argument type: a whole number from ``low`` (to ``high``), refused with the range it takes."""
    span = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"

    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"\s*[-+]?\d{1,19}\s*", text) else None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, got {text[:40]!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(low: float, *, above: bool = False):
    """An argument type: a finite number of at least ``low`` (above it with ``above``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"expected a finite number {'above' if above else 'of at least'} {low:g}, "
                                             f"got {text[:40]!r}")  # fmt: skip
        return value

    parse.__name__ = "number"
    return parse


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def named_dataset(spec: str):
    """A dataset this command line names: a ``folder:`` path on it may lie outside the data roots (it is
    read because it was typed here, and we say so); nothing under it may lead elsewhere."""
    from engine.data.images import load_dataset
    from engine.data import outside_roots

    where = outside_roots(spec)
    data = load_dataset(spec, named_path=True)
    if where is not None:
        print(f"note: read {where}, outside the data roots, because this command line names it", file=sys.stderr)
    return data


# ------------------------------------------------------------------------------------------ search


def cmd_search(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from engine.nn.devices import resolve_device
    from engine.core.files import write_json
    from engine.core.footprint import format_count
    from engine.search.sampling import random_search

    kernel_set = Space.parse(args.kernel_set)
    profile = get_profile(args.profile)
    iterations = args.iterations
    if args.exhaustive:
        cells = len(kernel_set.distinct_cells())
        if args.dedupe:
            raise CliError("--exhaustive already scores each distinct cell once; leave out --dedupe")
        if iterations is not None and iterations > cells:
            raise CliError(f"--exhaustive scores at most the {cells:,} distinct cells; ask for --iterations {cells:,} "
                           f"or fewer, or leave --iterations out for all of them")  # fmt: skip
        iterations = cells if iterations is None else iterations
    elif iterations is None:
        iterations = 1000
    if args.json is not None:
        check_output_file(args.json)
    overrides = {
        "batch_size": args.score_batch,
        "batches": args.score_batches,
        "draws": args.draws,
        "shared": {"shared": True, "fresh": False}.get(args.draw_mode),
        "count_silent": {"yes": True, "no": False}.get(args.count_silent),
        "precision": args.precision,
    }
    config = dataclasses.replace(profile.score, **{k: v for k, v in overrides.items() if v is not None})
    device = resolve_device(args.device)
    data = named_dataset(args.dataset)
    mode = "exhaustive search" if args.exhaustive else "search"
    bar = tqdm(total=iterations, desc=f"{kernel_set.name} {mode}", unit="cand", file=sys.stderr)

    def progress(done: int, total: int, best) -> None:
        bar.update(done - bar.n)
        if best is not None:
            bar.set_postfix(best=f"{best.score:.3f}")

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
                "candidates": [c.to_dict() for c in result.candidates],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        print(f"wrote {args.json}")


# ----------------------------------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> None:
    from engine.data.catalogue import dataset_shape
    from engine.core.footprint import footprint, format_count, layer_counts

    profile = get_profile(args.profile)
    if args.genotype is not None and args.kernel_set is None:
        raise CliError("--genotype needs --kernel-set")
    sets = [Space.parse(args.kernel_set)] if args.kernel_set is not None else list(TABLE_I)
    genotype = sets[0].genotype(args.genotype) if args.genotype is not None else None
    if genotype is not None and sets[0].pruned and not any(genotype.ops):
        raise CliError(f"cell {args.genotype!r} has no path from input to output: pruning its dead edges leaves "
                       "nothing to build")  # fmt: skip
    info = dataset_shape(args.dataset)
    print(f"{profile.name} profile on {args.dataset} ({info.num_classes} classes, {info.image_size} px): {profile.description}")
    if genotype is not None:
        kernel_set = sets[0]
        layers = layer_counts(genotype, kernel_set, profile, info)
        rows = [[l.name, l.shape, f"{l.weights:,}", f"{l.biases:,}", f"{l.norm:,}"] for l in layers]
        print(table(rows, ["layer", "shape", "weights", "biases", "BN affine"]))
        fp = footprint(genotype, kernel_set, profile, info)
        print(f"\nEq. 2-3 parameters: {fp.params:,}   PyTorch trainable: {fp.params_torch:,}")
        print("memory: " + "   ".join(f"{b}-bit {fp.bytes(b) / 1e6:.2f} MB" for b in BIT_WIDTHS))
        return
    rows = []
    for ks in sets:
        small, large = (footprint(g, ks, profile, info) for g in ks.extremes())
        rows.append(
            [ks.name, format_count(small.params), format_count(large.params)]
            + [f"{large.bytes(b) / 1e6:.1f}" for b in BIT_WIDTHS]
        )
    print(table(rows, ["kernel set", "params (min)", "params (max)", *[f"max MB @{b}-bit" for b in BIT_WIDTHS]]))
    print("\nmin: a cell without convolutions; max: all six edges convolve with the largest kernel.")


# ------------------------------------------------------------------------------- train / evaluate


class StopOnInterrupt:
    """First Ctrl-C asks the work to stop at the next safe point; a second one aborts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\nstopping after the current step (Ctrl-C again to abort)...", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def __call__(self) -> bool:
        return self.event.is_set()


def cmd_train(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from engine.train.checkpoint import save_trained
    from engine.nn.devices import resolve_device
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
    )
    resolve_device(args.device)  # every argument checked before any work or output
    state = check_output_file(args.out.with_name(args.out.name + ".state.pt"))
    check_output_file(args.out)  # before any work: a bad --out is found now, not after training
    data = named_dataset(args.dataset)
    bar = tqdm(total=config.epochs, desc="train", unit="epoch", file=sys.stderr)

    def progress(epoch, batch, batches, loss, acc):
        bar.n = epoch - 1 + batch / batches
        bar.set_postfix_str(f"epoch {epoch} loss {loss:.3f} acc {acc:.1%}")

    with StopOnInterrupt() as stop:
        result = train(genotype, kernel_set, profile, data, config, state_path=state, progress=progress, should_stop=stop)
    bar.close()
    rows = [
        [str(e.epoch), f"{e.train_loss:.4f}", f"{e.train_accuracy:.2%}", "" if e.test_accuracy is None else f"{e.test_accuracy:.2%}",
         "" if e.firing_rate is None else f"{e.firing_rate:.3f}", f"{e.seconds:.1f}"]
        for e in result.epochs
    ]  # fmt: skip
    print(table(rows, ["epoch", "loss", "train acc", "test acc", "firing", "seconds"]))
    if result.stopped:
        print(f"stopped after epoch {len(result.epochs)}; rerun the same command to resume from {state}")
        return
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
        extra={"device": result.device},
    )
    state.unlink(missing_ok=True)
    print(f"test accuracy {result.accuracy:.2%} on {result.device}; wrote {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from engine.train.checkpoint import load_model
    from engine.data.images import load_dataset
    from engine.nn.devices import resolve_device
    from engine.train.training import DeviceImages, evaluate

    device = resolve_device(args.device)
    loaded = load_model(args.model, device=device)
    # The dataset a model file names is read only inside the data roots: the file is not the command line.
    data = named_dataset(args.dataset) if args.dataset else load_dataset(loaded.meta["dataset"]["name"])
    if tuple(data.info.classes) != loaded.data.classes:
        raise CliError(f"{args.model} was trained on classes {list(loaded.data.classes)}, not those of {data.info.name}")
    accuracy, rate = evaluate(
        loaded.model, DeviceImages(data.test, device), data, loaded.profile, seed=loaded.meta["eval_seed"]
    )
    recorded = loaded.meta.get("accuracy")
    print(f"{args.model}: {loaded.kernel_set} cell {loaded.genotype}, {loaded.meta['params']:,} parameters")
    print(f"test accuracy {accuracy:.2%} (recorded {recorded:.2%}), firing rate {rate:.3f}" if recorded is not None
          else f"test accuracy {accuracy:.2%}, firing rate {rate:.3f}")  # fmt: skip


# ------------------------------------------------------------------------------- explore / select


class BarReporter:
    """Draws one progress bar per stage of an exploration."""

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
        acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        print(f"{row['setting']}: accuracy {acc}, {row['params']:,} parameters, search {row['search_seconds']:.1f} s",
              file=sys.stderr)  # fmt: skip


def print_results(runs, budget, out: Path, energy: str | None = None) -> None:
    """The table of the paper with each model's measured 8/4-bit accuracy and energy and, with a budget,
    Alg. 1's choice (by the accuracy measured at the budget's bit width; within ``energy`` when given)."""
    from engine.api import choose
    from engine.core.footprint import format_count

    def pct(v) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.2%}"

    body = [
        [r.setting, pct(r.accuracy), pct(r.accuracy_8bit), pct(r.accuracy_4bit), format_count(r.params),
         f"{r.memory_mb:.2f}", "" if math.isnan(r.energy_uj) else f"{r.energy_uj:.3g}", f"{r.search_seconds:.1f}",
         "" if math.isnan(r.speedup) else f"{r.speedup:.2f}x", r.best_genotype]
        for r in runs.itertuples()
    ]  # fmt: skip
    print(table(body, ["setting", "accuracy", "8-bit", "4-bit", "params", "MB (fp32)", "µJ/image", "search s",
                       "speed-up", "genotype"]))  # fmt: skip
    if budget is not None:
        selection = choose(runs, budget, energy=energy)
        if selection.chosen is None:
            print(f"\nAlg. 1: {selection.reason}")
        else:
            checkpoint = runs.set_index("run_id").loc[selection.chosen.run_id, "checkpoint"]
            where = out / checkpoint if isinstance(checkpoint, str) else "accuracy from the benchmark, no model file"
            print(f"\nAlg. 1 picks {selection.chosen.setting}: {selection.reason} ({where})")


def cmd_explore(args: argparse.Namespace) -> None:
    from engine.api.explore import explore
    from engine.core.selection import Budget

    budget = Budget.parse(args.budget, args.bits) if args.budget else None
    config = experiment_config(args)
    check_output_folder(args.out)
    with StopOnInterrupt() as stop:
        runs = explore(config, args.out, reporter=BarReporter(), stop=stop.event)
    if runs is None:
        print(f"stopped; rerun the same command to resume from {args.out}")
        return
    print_results(runs, budget, args.out)
    print(f"\nwrote {args.out / 'results.csv'} and {args.out / 'results.json'}")


def cmd_select(args: argparse.Namespace) -> None:
    from engine.api.explore import load_results
    from engine.core.selection import Budget

    print_results(load_results(args.folder), Budget.parse(args.budget, args.bits), args.folder, args.energy_budget)


# ----------------------------------------------------------------------------- store and worker


def cmd_submit(args: argparse.Namespace) -> None:
    from engine import api

    config = experiment_config(args)
    errors = api.validate(config)  # before the database is opened (or made)
    if errors:
        raise api.ConfigError(errors)
    ids = api.submit_experiment(config, store=api.get_store(args.db))
    print(f"experiment {ids['experiment_id']}: {len(ids['job_ids'])} job(s) queued ({', '.join(map(str, ids['job_ids']))})")
    if args.start_worker:
        pid = api.ensure_worker(store=api.get_store(args.db))
        print(f"started a worker (pid {pid})" if pid else "a worker is already running")
    elif not api.worker_status(store=api.get_store(args.db))["running"]:
        print("no worker is running: start one with `python -m engine worker`")


def cmd_study(args: argparse.Namespace) -> None:
    """Submit a study and run it here (unless a worker already serves the database), then report it."""
    from engine import api
    from engine.jobs.worker import WorkerBusy, serve

    config = api.StudyConfig(
        dataset=args.dataset, kernel_sets=tuple(ks.name for ks in parse_kernel_sets(args.kernel_sets)),
        cells=args.cells, exhaustive=args.exhaustive, trained=args.trained, top=args.top, seeds=args.seeds,
        profile=args.profile, epochs=args.epochs, seed=args.seed, device=args.device, precision=args.precision,
        in_flight=args.in_flight, name=args.name,
    )  # fmt: skip
    errors = api.validate_study(config)  # before the database is opened (or made)
    if errors:
        raise api.ConfigError(errors)
    store = api.get_store(args.db)
    ids = api.submit_study(config, store=store)
    study_id = ids["experiment_id"]
    print(f"study {study_id}: {len(ids['job_ids'])} job(s) queued, one per kernel set")
    if args.detach:
        print(f"the worker runs it; `python -m engine study-report {study_id}` shows what it found so far")
        return
    with StopOnInterrupt() as stop:
        try:
            serve(store, devices=[args.device] if args.device != "auto" else None, idle_exit=0.5, stop=stop.event)
        except WorkerBusy:
            print(f"a worker already serves {store.path}: it runs the study; "
                  f"`python -m engine study-report {study_id}` shows what it found so far")  # fmt: skip
            return
    print(study_text(api.study_report(study_id, store=store)))


def cmd_study_report(args: argparse.Namespace) -> None:
    from engine import api
    from engine.core.files import write_atomic

    store = api.get_store(args.db, create=False, readonly=True)
    if args.format == "table":
        text = study_text(api.study_report(args.study, store=store)) + "\n"
    else:
        text = api.export_study(args.study, args.format, store=store)
    if args.out is None:
        sys.stdout.write(text)
    else:
        check_output_file(args.out)
        write_atomic(args.out, text)
        print(f"wrote {args.out}")


def study_text(report) -> str:
    """A study's report as plain-text tables: one row per kernel set, then the cross-tabulations."""

    def num(value: float, fmt: str = ".2f") -> str:
        return "-" if value is None or math.isnan(value) else format(value, fmt)

    def ci(interval) -> str:
        if math.isnan(interval.estimate):
            return "-"
        return f"{interval.estimate:+.2f} [{num(interval.low, '+.2f')}, {num(interval.high, '+.2f')}]"

    rows = []
    for k in report.kernel_sets:
        r = k.regret
        rows.append([k.kernel_set, str(k.scored), str(k.trained), ci(k.correlation.spearman), ci(k.correlation.kendall),
                     ci(k.within_edges), f"{num(k.top1.mean, '.1%')} ({k.top1.n})",
                     num(r.best_accuracy, ".1%") if r else "-", num(r.regret, "+.1%") if r else "-",
                     num(r.gain, "+.1%") if r else "-"])  # fmt: skip
    parts = ["score against trained accuracy (95% bootstrap intervals; '-': fewer than 3 cells or no variation)",
             table(rows, ["kernel set", "scored", "trained", "Spearman", "Kendall", "within equal conv edges",
                          "top-1 acc (seeds)", "best", "regret", "gain vs random"])]  # fmt: skip
    unsampled = sorted({c["kernel_set"] for c in report.cells} - {c["kernel_set"] for c in report.cells
                                                                  if c["role"] == "random"})  # fmt: skip
    if unsampled:
        parts.append(f"(no cell was drawn at random for {', '.join(unsampled)}: train at least top + 3 cells; "
                     "its gain is over the mean of all its trained cells)")  # fmt: skip
    if report.overall is not None:
        parts.append(f"all kernel sets together: Spearman {ci(report.overall.spearman)}, "
                     f"Kendall {ci(report.overall.kendall)}")  # fmt: skip
    searches = [(k.kernel_set, s) for k in report.kernel_sets for s in k.search_regret]
    if searches:
        parts += ["\nrandom searches replayed over the exhaustive scores",
                  table([[name, f"{s.iterations}", f"{s.found_top1:.0%}", num(s.score_gap, ".3f"), f"{s.percentile:.2%}"]
                         for name, s in searches],
                        ["kernel set", "iterations", "found top-1", "score gap", "pick's percentile"])]  # fmt: skip
    for title, rows_, key in (("accuracy at equal conv-edge count", report.by_edges, "conv_edges"),
                              ("accuracy at equal parameter count", report.by_params, "params_bin")):  # fmt: skip
        if rows_:
            body = [[r["kernel_set"], str(r[key]), str(r["n"]), num(r["mean"], ".1%"),
                     f"[{num(r['low'], '.1%')}, {num(r['high'], '.1%')}]"] for r in rows_]  # fmt: skip
            parts += [f"\n{title} (mean over cells, 95% t interval)",
                      table(body, ["kernel set", key.replace("_", " "), "cells", "accuracy", "interval"])]
    return "\n".join(parts)


def cmd_jobs(args: argparse.Namespace) -> None:
    from engine import api

    store = api.get_store(args.db, create=False, readonly=True)
    jobs = api.jobs_frame(args.experiment, store=store)
    state = api.worker_status(store=store)
    print(f"worker: {'running (pid %d on %s)' % (state['pid'], state['host']) if state['running'] else 'not running'}")
    if jobs.empty:
        print("no jobs yet: submit one with `python -m engine submit`")
        return
    body = []
    jobs = jobs.astype(object).where(jobs.notna(), None)  # a missing stage or note is empty, never 'nan'
    for j in jobs.itertuples():
        progress = f"{j.done}/{j.total}" if j.stage else ""
        detail = j.error if j.status == "failed" else (j.note or "")
        body.append([str(j.id), str(j.experiment_id), j.setting, j.status, j.stage or "", progress, detail[:70]])
    print(table(body, ["job", "exp", "setting", "status", "stage", "progress", "detail"]))


def _job_target(args: argparse.Namespace) -> dict:
    if (args.experiment is None) == (not args.job):
        raise CliError("name either an experiment (--experiment N) or job ids")
    return {"experiment_id": args.experiment, "job_ids": args.job or None}


def cmd_cancel(args: argparse.Namespace) -> None:
    from engine import api

    n = api.cancel(**_job_target(args), store=api.get_store(args.db, create=False))
    print(f"cancelled {n} job(s)" if n else "nothing to cancel: no queued or running job matched")


def cmd_retry(args: argparse.Namespace) -> None:
    from engine import api

    n = api.retry(**_job_target(args), store=api.get_store(args.db, create=False))
    print(f"queued {n} job(s) again" if n else "nothing to retry: no failed or cancelled job matched")


def cmd_export(args: argparse.Namespace) -> None:
    from engine import api
    from engine.core.files import write_atomic

    if args.out is not None:
        check_output_file(args.out)
    text = api.export_experiment(args.experiment, args.format, store=api.get_store(args.db, create=False, readonly=True))
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
        print(f"wrote {args.out}")


def cmd_export_model(args: argparse.Namespace) -> None:
    """A trained model (a run of the database, or a model file) as NIR or with 8/4-bit integer weights."""
    from engine import api
    from engine import deploy

    if args.model.isdigit():
        store = api.get_store(args.db)
        run_id = int(args.model)
        source, accuracy = api.checkpoint_path(run_id, store=store), api.measured_accuracy(run_id, args.format, store=store)
    else:
        source, accuracy = Path(args.model), None
    out = deploy.export(source, args.format, args.out, accuracy=accuracy)
    print(f"wrote {out} ({args.format}, {out.stat().st_size / 1e6:.2f} MB)")
    if args.format == "nir" and args.check:
        print(deploy.check_file(source, out, images=args.check))


# ------------------------------------------------------------------------------------------ benchmark


def cmd_benchmark_import(args: argparse.Namespace) -> None:
    from engine.study import benchmark
    from engine.data.catalogue import dataset_shape
    from engine.core.footprint import footprint

    out = check_output_file(args.out or benchmark.records_file(args.dataset, benchmark.imported_folder()))
    if not args.path.is_dir():
        raise CliError(f"{args.path} is not a folder: give the folder holding {benchmark.FOLDERS[args.dataset]}/ "
                       "(or data/) of the published records")  # fmt: skip
    started = time.perf_counter()

    def progress(n: int, total: int) -> None:
        print(f"\rread {n:,}/{total:,}", end="\n" if n == total else "", file=sys.stderr)

    records = benchmark.read_published(args.path, args.dataset, progress if sys.stderr.isatty() else None)
    profile, shape = get_profile(benchmark.BENCHMARK_PROFILE), dataset_shape(args.dataset)
    wrong = benchmark.check_params(records, lambda g: footprint(g, SPIKENAS, profile, shape).params_torch)
    if wrong:
        raise CliError(f"{len(wrong):,} of {len(records):,} published parameter counts differ from the engine's "
                       f"({wrong[0]}); nothing was written")  # fmt: skip
    benchmark.save(records, out)
    print(f"{len(records):,} {args.dataset} networks read in {time.perf_counter() - started:.1f} s; every published "
          f"parameter count equals the engine's; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")  # fmt: skip


def _scored_sources(args: argparse.Namespace) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """(label, genotype -> (score, firing rate)) of each --scores file and --run of the database."""
    import json

    sources = []
    for path in args.scores or []:
        try:
            payload = json.loads(Path(path).read_text())
            cells = {c["genotype"]: (float(c["score"]), float(c["firing_rate"])) for c in payload["candidates"]}
            label = payload["profile"]["name"] if isinstance(payload["profile"], dict) else str(payload["profile"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CliError(f"{path} is not a `search --json` file ({type(e).__name__}: {one_line(e)[:80]})") from None
        if payload.get("kernel_set") != SPIKENAS.name:
            raise CliError(f"{path} scored {payload.get('kernel_set')!r}, not the benchmark's space {SPIKENAS.name}")
        sources.append((label, cells))
    if args.run:
        from engine import api

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


def cmd_benchmark_report(args: argparse.Namespace) -> None:
    import itertools

    import numpy as np

    from engine.study import benchmark
    from engine.core.files import write_json
    from engine.core.selection import Budget

    out = check_output_file(args.out) if args.out else None
    records = benchmark.bundled(args.dataset)
    budget = Budget.parse(args.budget).limit if args.budget else None
    sections, payload = [], {"dataset": args.dataset, "citation": benchmark.CITATION, "sources": []}
    sources = _scored_sources(args)
    if args.common:  # the cells every source scored: widths compared on the same networks
        shared = set.intersection(*(set(scored) for _, scored in sources))
        sources = [(label, {g: v for g, v in scored.items() if g in shared}) for label, scored in sources]
    populations = {"every network": False, "the networks SNASNet's sampler proposes": True}
    for (label, scored), (population, proposable) in itertools.product(sources, populations.items()):
        rows, proxies = benchmark.proxies_for(records, scored, label, proposable=proposable)
        val, test = records.final_val[rows], records.test_acc[rows]
        table_rows = benchmark.proxy_table(proxies, val, test, records.conv_edges[rows], searches=args.searches,
                                           seed=args.seed)  # fmt: skip
        text = [f"## {label}, {population}: {len(rows):,} networks ({len(scored):,} cells scored); best test "
                f"accuracy {test.max():.2f} %, median {np.median(test):.2f} %", "",
                benchmark.format_table(table_rows)]  # fmt: skip
        picks = None
        if budget is not None:
            picks = benchmark.budget_pick(records, rows, proxies[f"score ({label})"], budget)
            if picks["fits"]:
                b, p = picks["best"], picks["proxy_pick"]
                text += ["", f"Alg. 1 under {args.budget} parameters ({picks['fits']:,} networks fit): chosen on "
                         f"validation, network {b['id']} ({b['params']:,} parameters) tests at {b['test']:.2f} %; the "
                         f"score's pick, network {p['id']} ({p['params']:,}), at {p['test']:.2f} %"]  # fmt: skip
            else:
                text += ["", f"Alg. 1 under {args.budget} parameters: no network fits"]
        sections.append("\n".join(text))
        payload["sources"].append({"label": label, "population": population, "networks": len(rows),
                                   "proxies": table_rows, "budget": picks})  # fmt: skip
    print(f"{benchmark.SOURCE} ({args.dataset}): correlations with validation accuracy, regret in test accuracy "
          f"points against the best network scored; {args.searches:,} random searches per size\n")  # fmt: skip
    print("\n\n".join(sections))
    if out is not None:
        write_json(out, payload)
        print(f"\nwrote {out}")


def cmd_worker(args: argparse.Namespace) -> None:
    from engine import api
    from engine.jobs.worker import WorkerBusy, serve

    store = api.get_store(args.db)
    if args.ray is not None:
        from engine.jobs.ray_driver import import_ray, serve_ray

        import_ray()  # one line of error when Ray is missing
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.ray is not None:
        print(f"Ray worker serving {store.path} on {args.ray} (Ctrl-C stops; running jobs resume later)", file=sys.stderr)
        try:
            serve_ray(store, address=args.ray, stale_after=args.stale_after, idle_exit=args.idle_exit, stop=stop)
        except WorkerBusy as e:
            raise CliError(str(e)) from None
        return
    print(f"worker serving {store.path} (Ctrl-C stops; running jobs resume later)", file=sys.stderr)
    try:
        serve(store, stale_after=args.stale_after, idle_exit=args.idle_exit, stop=stop)
    except WorkerBusy as e:
        raise CliError(str(e)) from None


# ------------------------------------------------------------------------------------------ parser


IN_FLIGHT_HELP = ("candidates scored at once, each in a process of its own: for GPUs, where one small candidate "
              "leaves most of the card idle; the same results as one at a time (default: %(default)s)")


def add_experiment_arguments(p: argparse.ArgumentParser) -> None:
    """What an exploration is made of: the same for ``explore`` (here, now) and ``submit`` (the worker), with
    ``api.ExperimentConfig``'s defaults."""
    from engine.api import ExperimentConfig

    defaults = ExperimentConfig()
    p.add_argument("--dataset", default=defaults.dataset, help="sample, cifar10, cifar100, tinyimagenet or folder:<path>")
    p.add_argument("--kernel-sets", default=",".join(defaults.kernel_sets),
                   help="comma-separated, e.g. 1x1_3x3,3x3_5x5, or 'all' for Table I (default: %(default)s)")
    p.add_argument("--iterations", type=whole(1, MAX_ITERATIONS), default=defaults.iterations)
    p.add_argument("--exhaustive", action="store_true",
                   help="score the first --iterations of every distinct cell (7,012) in a seeded order, each once, "
                   "instead of sampling (beyond the paper)")
    p.add_argument("--baseline", default=defaults.baseline or "",
                   help="setting for the search speed-up, '' for none (default: %(default)s)")
    p.add_argument("--epochs", type=whole(1, MAX_EPOCHS), default=defaults.epochs,
                   help="default: the profile's (10 laptop, 300 paper)")
    p.add_argument("--profile", default=defaults.profile, choices=list(PROFILES))
    p.add_argument("--budget", default=defaults.budget, help="memory budget for Alg. 1: parameters ('10M') or bytes ('40MB')")
    p.add_argument("--bits", type=int, choices=BIT_WIDTHS, default=defaults.bits, help="bit width for a budget in bytes")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=defaults.precision)
    p.add_argument("--seed", type=whole(0, MAX_SEED), default=defaults.seed)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--in-flight", type=whole(1, MAX_IN_FLIGHT), default=defaults.in_flight, help=IN_FLIGHT_HELP)


def experiment_config(args: argparse.Namespace):
    from engine.api import ExperimentConfig

    return ExperimentConfig(
        dataset=args.dataset,
        kernel_sets=tuple(ks.name for ks in parse_kernel_sets(args.kernel_sets)),
        iterations=args.iterations,
        exhaustive=args.exhaustive,
        baseline=args.baseline or None,
        profile=args.profile,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        in_flight=args.in_flight,
        budget=args.budget,
        bits=args.bits,
        name=getattr(args, "name", ""),
    )


def build_parser() -> Parser:
    parser = Parser(prog="python -m engine", description="SpiKernel: kernel-size exploration for spiking networks")
    parser.add_argument("--db", type=Path, help="experiment database (default: $SPIKERNEL_DB or data/spikernel.db)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("search", help="training-free random (or exhaustive) search over one kernel set")
    s.add_argument("--dataset", default="sample", help="sample, cifar10, cifar100, tinyimagenet or folder:<path>")
    s.add_argument("--kernel-set", required=True,
                   help="two or more odd kernel sizes (3x3_5x5, 1x1_3x3_5x5), or a benchmark's space (spikenas)")
    s.add_argument("--iterations", type=whole(1, MAX_ITERATIONS), default=None,
                   help="candidates to score (default 1000; with --exhaustive, all distinct cells: 7,012 for two "
                   "kernel sizes)")
    s.add_argument("--profile", default="laptop", choices=list(PROFILES))
    s.add_argument("--seed", type=whole(0, MAX_SEED), default=0)
    s.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    s.add_argument("--dedupe", action="store_true", help="score each distinct cell once (beyond the paper)")
    s.add_argument("--exhaustive", action="store_true",
                   help="score every distinct cell once (7,012 for two kernel sizes after pruning and merging "
                   "relabelled cells; 14,125 raw cells of spikenas) in an order shuffled by --seed, instead of "
                   "sampling; --iterations N scores the first N of that order, "
                   "--max-params passes over the cells above it (beyond the paper)")
    s.add_argument("--max-params", type=whole(1), default=None, help="skip cells over this many parameters")
    s.add_argument("--score-batch", type=whole(1), help="images per scoring batch (default: the profile's)")
    s.add_argument("--score-batches", type=whole(1), help="scoring batches per draw (default: the profile's)")
    s.add_argument("--draws", type=whole(1), help="(init, batch) draws averaged per candidate (default: the profile's)")
    s.add_argument("--draw-mode", choices=["shared", "fresh"], help="same init and batch for every candidate, or new ones")
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: convolutions under bfloat16 autocast, faster and not exact (BENCHMARKS.md)")
    s.add_argument("--count-silent", choices=["yes", "no"], help="whether layers that never fired add to the kernel")
    s.add_argument("--in-flight", type=whole(1, MAX_IN_FLIGHT), default=1, help=IN_FLIGHT_HELP)
    s.add_argument("--top", type=whole(1), default=10, help="rows in the summary table")
    s.add_argument("--json", type=Path, help="write every candidate to this JSON file")
    s.set_defaults(func=cmd_search)

    p = sub.add_parser("profile", help="parameters and memory of a profile's networks, before any training")
    p.add_argument("--dataset", default="sample")
    p.add_argument("--profile", default="laptop", choices=list(PROFILES))
    p.add_argument("--kernel-set", help="narrow to one kernel set")
    p.add_argument("--genotype", help="one cell, e.g. '0302 0030 0003 0000': per-layer breakdown")
    p.set_defaults(func=cmd_profile)

    t = sub.add_parser("train", help="train one cell and save it as a .safetensors model")
    t.add_argument("--genotype", required=True, help="e.g. '0302 0030 0003 0000'")
    t.add_argument("--kernel-set", required=True)
    t.add_argument("--dataset", default="sample")
    t.add_argument("--profile", default="laptop", choices=list(PROFILES))
    t.add_argument("--epochs", type=whole(1, MAX_EPOCHS), default=None, help="default: the profile's")
    t.add_argument("--batch-size", type=whole(1), default=None, help="default: the profile's (64)")
    t.add_argument("--lr", type=number(0, above=True), default=0.1)
    t.add_argument("--weight-decay", type=number(0), default=5e-4)
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    t.add_argument("--seed", type=whole(0, MAX_SEED), default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", type=Path, default=Path("runs/model.safetensors"))
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy of a saved model")
    e.add_argument("model", type=Path)
    e.add_argument("--dataset", help="default: the dataset it was trained on")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("explore", help="the SpiKernel methodology: search, train and select per kernel set")
    add_experiment_arguments(x)
    x.add_argument("--out", type=Path, default=Path("runs/explore"))
    x.set_defaults(func=cmd_explore)

    c = sub.add_parser("select", help="re-apply Alg. 1 to a finished exploration")
    c.add_argument("folder", type=Path)
    c.add_argument("--budget", required=True)
    c.add_argument("--bits", type=int, choices=BIT_WIDTHS,
                   help="at 8 or 4 bits, Alg. 1 uses the accuracy measured with weights of that width")
    c.add_argument("--energy-budget", help="also an energy budget per inference, like '5uJ' (beyond the paper)")
    c.set_defaults(func=cmd_select)

    m = sub.add_parser("submit", help="queue an exploration in the experiment database for the worker")
    add_experiment_arguments(m)
    m.add_argument("--name", default="")
    m.add_argument("--start-worker", action="store_true", help="start a background worker unless one runs")
    m.set_defaults(func=cmd_submit)

    y = sub.add_parser("study", help="does the score pick good cells, do larger kernels help? score N cells per "
                       "kernel set, train a stratified subset, report rank correlations and regret")
    defaults = StudyConfig()
    y.add_argument("--dataset", default=defaults.dataset, help="sample, cifar10, cifar100, tinyimagenet or folder:<path>")
    y.add_argument("--kernel-sets", default=",".join(defaults.kernel_sets), help="comma-separated, or 'all' (Table I)")
    y.add_argument("--cells", type=whole(1, MAX_ITERATIONS), default=defaults.cells, help="cells scored per kernel set")
    y.add_argument("--exhaustive", action="store_true",
                   help="score the first --cells of every distinct cell (7,012) in a seeded order, and replay the "
                   "paper's 1000- and 5000-iteration random searches over those scores")
    y.add_argument("--trained", type=whole(1), default=defaults.trained, help="cells trained per kernel set")
    y.add_argument("--top", type=whole(1), default=defaults.top, help="the score's top cells, trained with every seed")
    y.add_argument("--seeds", type=whole(1), default=defaults.seeds, help="training seeds of each top cell")
    y.add_argument("--epochs", type=whole(1, MAX_EPOCHS), default=None, help="default: the profile's")
    y.add_argument("--profile", default=defaults.profile, choices=list(PROFILES))
    y.add_argument("--precision", choices=["fp32", "bf16"], default=defaults.precision)
    y.add_argument("--seed", type=whole(0, MAX_SEED), default=defaults.seed)
    y.add_argument("--device", default=defaults.device)
    y.add_argument("--in-flight", type=whole(1, MAX_IN_FLIGHT), default=defaults.in_flight, help=IN_FLIGHT_HELP)
    y.add_argument("--name", default="")
    y.add_argument("--detach", action="store_true", help="only queue it for the worker")
    y.set_defaults(func=cmd_study)

    r = sub.add_parser("study-report", help="a study's statistics as tables, or its cells (CSV) or report (JSON)")
    r.add_argument("study", type=whole(1))
    r.add_argument("--format", choices=["table", "csv", "json"], default="table")
    r.add_argument("--out", type=Path, help="file to write (default: standard output)")
    r.set_defaults(func=cmd_study_report)

    j = sub.add_parser("jobs", help="every job with its status and progress")
    j.add_argument("--experiment", type=whole(1))
    j.set_defaults(func=cmd_jobs)

    for name, func, what in (("cancel", cmd_cancel, "cancel queued and running jobs"),
                             ("retry", cmd_retry, "queue failed or cancelled jobs again (they resume)")):  # fmt: skip
        a = sub.add_parser(name, help=what)
        a.add_argument("job", type=whole(1), nargs="*", help="job ids")
        a.add_argument("--experiment", type=whole(1), help="all jobs of this experiment")
        a.set_defaults(func=func)

    o = sub.add_parser("export", help="an experiment's results as CSV (table) or JSON (everything)")
    o.add_argument("experiment", type=whole(1))
    o.add_argument("--format", choices=["csv", "json"], default="csv")
    o.add_argument("--out", type=Path, help="file to write (default: standard output)")
    o.set_defaults(func=cmd_export)

    e = sub.add_parser("export-model", help="a trained model as NIR (neuromorphic hardware) or with 8/4-bit weights")
    e.add_argument("model", help="a run id of the database, or a model file (.safetensors)")
    e.add_argument("--format", required=True, choices=["nir", "int8", "int4"])
    e.add_argument("--out", type=Path, required=True, help="file to write")
    e.add_argument("--check", type=int, default=8, metavar="IMAGES",
                   help="NIR: read the file back (snntorch) and compare it with the engine on this many test "
                   "images (0: skip)")
    e.set_defaults(func=cmd_export_model)

    b = sub.add_parser("benchmark", help="SpikeNAS-Bench's 15,625 trained networks: import them, measure proxies on them")
    bsub = b.add_subparsers(dest="benchmark_command", required=True, parser_class=Parser)
    bi = bsub.add_parser("import", help="read the published records (PATH/CIFAR10/<id>/train_process.txt or "
                         "PATH/data/...), check every parameter count against the engine's, save them compactly")
    bi.add_argument("path", type=Path, help="the folder holding the dataset's folder of records")
    bi.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "tinyimagenet"])
    bi.add_argument("--out", type=Path, help="file to write (default: <data root>/benchmarks/spikenas-<dataset>.npz)")
    bi.set_defaults(func=cmd_benchmark_import)
    br = bsub.add_parser("report", help="training-free proxies against the benchmark's true accuracies: rank "
                         "correlations, precision at k, partial correlation, random-search regret")
    br.add_argument("--scores", type=Path, action="append", help="a `search --kernel-set spikenas --json` file "
                    "(repeatable)")
    br.add_argument("--run", type=whole(1), action="append", help="a spikenas run of the database (repeatable)")
    br.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "tinyimagenet"])
    br.add_argument("--common", action="store_true", help="only the cells every source scored (compare widths on "
                    "the same networks)")
    br.add_argument("--searches", type=whole(10, 100_000), default=1000, help="random searches replayed per size")
    br.add_argument("--budget", help="also apply Alg. 1 under this parameter budget ('20M')")
    br.add_argument("--seed", type=whole(0, MAX_SEED), default=0)
    br.add_argument("--out", type=Path, help="the whole report as JSON")
    br.set_defaults(func=cmd_benchmark_report)

    w = sub.add_parser("worker", help="run queued jobs (foreground); one job per GPU, else one on the CPU")
    w.add_argument("--idle-exit", type=number(0), help="exit after this many seconds without work")
    w.add_argument("--stale-after", type=number(0, above=True), default=60.0, help="take over running jobs silent this long (s)")
    w.add_argument("--ray", nargs="?", const="auto", help="run jobs as Ray tasks: 'auto' (the cluster this machine joined), 'local' or a cluster address")
    w.set_defaults(func=cmd_worker)
    return parser


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def work_failures() -> tuple[type[Exception], ...]:
    """How training and an exploration fail (``TrainingDiverged``, ``ExplorationFailed``), among the modules
    this command imported: one that never imported them cannot raise them, and importing them here would
    load torch for commands that only read the database."""
    found = []
    for module, name in (("train", "TrainingDiverged"), ("explore", "ExplorationFailed")):
        loaded = sys.modules.get(f"{__package__ or 'engine'}.{module}")
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    from engine.store import StoreError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.func(args)
    except (CliError, ValueError, FileNotFoundError, StoreError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as exc:  # a disk, permission or database problem met during the work
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not isinstance(exc, work_failures()):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
