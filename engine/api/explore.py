"""The SpiKernel methodology in one call, in this process: ``python -m engine explore``.

An exploration is an experiment in a folder's own store, run by this process as the worker would run
it, one setting after the other::

    out/spikernel.db                                the experiment, its runs, candidates and epochs
    out/experiments/1/<setting>/model.safetensors   each trained model (train-state.pt while training)
    out/logs/job-<id>.log                           each run's log
    out/results.csv, out/results.json               the table of the paper, labelled with the profile

Rerunning with the same folder resumes (the search after its last recorded candidate, training from
its last epoch) and recomputes nothing that is done; other arguments are refused. The folder is an
ordinary experiment database: ``SPIKERNEL_DB=out/spikernel.db`` opens it in the dashboard.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from engine import api
from engine.core.errors import InputError, WorkFailed
from engine.core.files import check_output_folder, write_atomic
from engine.jobs.worker import STALE_S, hold_lock, run_job
from engine.nn.devices import resolve_device
from engine.store import STOPPED, JobStatus, Store, this_host

DB_NAME = "spikernel.db"


class Reporter:
    """Progress of an exploration; the command line draws bars from it. The default says nothing."""

    def stage(self, setting: str, stage: str, total: int, done: int = 0) -> None: ...

    def advance(self, done: int, total: int, note: str = "") -> None: ...

    def finished(self, row: dict) -> None: ...


class ExplorationFailed(WorkFailed):
    """A setting's job failed; its error and log are in the folder, and a rerun retries it."""


def _experiment_id(store: Store, config: api.ExperimentConfig) -> int:
    """The folder's experiment, recorded on the first run; a rerun must ask for the same."""
    existing = store.experiments()
    if not existing:
        return api.submit_experiment(config, store=store)["experiment_id"]
    recorded = store.experiment(existing[-1]["id"])
    errors = api.validate(config)
    if errors:
        raise api.ConfigError(errors)
    wanted = {**asdict(config.with_profile_defaults()), "kernel_sets": list(config.kernel_sets)}
    keys = [k for k in wanted if k not in ("name", "baseline", "budget", "bits")]  # a budget is re-applied freely
    defaults = asdict(api.ExperimentConfig())  # what a folder recorded before a field existed
    if any(recorded["config"].get(k, defaults[k]) != wanted[k] for k in keys) or recorded[
        "baseline"
    ] != api.baseline_name(config):
        raise InputError(f"{store.root} holds an exploration with other arguments; use another --out folder")
    return recorded["id"]


def explore(
    config: api.ExperimentConfig,
    out: Path,
    *,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
) -> pd.DataFrame | None:
    """Run (or resume) an exploration into ``out``; returns its runs (``api.runs_frame``), or None when
    ``stop`` was set before the end (a rerun resumes)."""
    rep, stop = reporter or Reporter(), stop or threading.Event()
    errors = api.validate(config)  # before anything is created
    if errors:
        raise api.ConfigError(errors)
    out = check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / DB_NAME)
    device = str(resolve_device(config.device))
    worker = f"{this_host()}:{os.getpid()}"
    with hold_lock(store):
        store.requeue_orphans(this_host(), alive=worker)  # an earlier run of this folder that was killed
        experiment_id = _experiment_id(store, config)
        store.retry(j["id"] for j in store.jobs(experiment_id) if j["status"] in STOPPED)
        for job in store.jobs(experiment_id, statuses=[JobStatus.DONE]):
            rep.finished(store.run(job["run_id"]))
        while not stop.is_set() and (lease := store.claim(worker, device, stale_after=STALE_S)) is not None:
            setting = store.run(lease.run_id)["setting"]
            shown = {"stage": None}

            def progress(stage: str, done: int, total: int, note: str, _eta) -> None:
                if stage != shown["stage"]:
                    shown["stage"] = stage
                    rep.stage(setting, stage, total, done)
                rep.advance(done, total, note)

            status = run_job(store, lease, device, stop, on_progress=progress)
            if status == JobStatus.FAILED:
                job = store.job(lease.job_id)
                raise ExplorationFailed(f"{setting} failed: {job['error']} (log: {store.log_path(lease.job_id)})")
            if status == JobStatus.DONE:
                rep.finished(store.run(lease.run_id))
    if stop.is_set() and store.active_jobs():
        return None
    runs = api.runs_frame([experiment_id], store=store)
    write_atomic(out / "results.csv", api.export_experiment(experiment_id, "csv", store=store))
    write_atomic(out / "results.json", api.export_experiment(experiment_id, "json", store=store))
    return runs


def load_results(out: Path) -> pd.DataFrame:
    """The runs of an exploration folder (for re-selection without recomputing)."""
    path = Path(out) / DB_NAME
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        found = False
    if not found:
        raise InputError(
            f"{str(out)[:200]!r} holds no exploration ({DB_NAME}): run `python -m engine explore --out <folder>` first"
        )
    return api.runs_frame(store=Store(path, create=False, readonly=True))
