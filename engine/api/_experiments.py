"""Experiments and studies in the store: submit, list, cancel, retry, delete, export; the worker's state and logs."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, replace

import pandas as pd

from engine.api._config import (
    ConfigError,
    ExperimentConfig,
    _from_dict,
    benchmark_records_of,
    check_name,
    distinct_cell_count,
    validate,
)
from engine.api._results import epochs_frame, events_frame, runs_frame
from engine.api._store import _store
from engine.core import (
    MAX_SEED,
    InputError,
    Setting,
    Space,
    get_profile,
)
from engine.jobs import start_worker, worker_state
from engine.store import TRAINED_CELL_COLUMNS, JobStatus, Store, StoreError
from engine.study import RESAMPLES, StudyConfig, StudyReport, check_counts
from engine.study import report as study_statistics

LOG_TAIL_BYTES = 64 * 1024


def submit_experiment(config: ExperimentConfig | dict, *, store: Store | None = None) -> dict:
    """Validate, then record the experiment with one queued job per setting, all or nothing.

    Returns ``{"experiment_id", "run_ids", "job_ids"}``; raises ``ConfigError`` and writes nothing when
    anything is invalid.
    """
    if isinstance(config, dict):
        config = ExperimentConfig.from_dict(config)
    errors = validate(config)
    if errors:
        raise ConfigError(errors)
    config = config.with_profile_defaults()
    settings = config.settings()
    baseline = baseline_name(config)
    profile = get_profile(config.profile)
    kernel_sets = ", ".join(dict.fromkeys(s.kernel_set.name for s in settings))
    name = config.name.strip() or f"{kernel_sets} on {config.dataset}"
    runs = [
        {
            "setting": s.name,
            "kernel_set": s.kernel_set.name,
            "iterations": s.iterations,
            "is_baseline": int(s.name == baseline),
        }
        for s in settings
    ]
    payload = {**asdict(config), "name": name, "baseline": baseline, "kernel_sets": list(config.kernel_sets)}
    return _store(store).add_experiment(name, payload, profile=profile.name, reduced=profile.reduced, runs=runs)


def study_searches(config: StudyConfig) -> ExperimentConfig:
    """The experiment a study's searches amount to (no baseline, one training per kernel set): what the
    fields they share are checked as, and what a time estimate starts from."""
    return ExperimentConfig(
        dataset=config.dataset,
        kernel_sets=config.kernel_sets,
        iterations=config.cells,
        baseline=None,
        profile=config.profile,
        epochs=config.epochs,
        seed=config.seed,
        device=config.device,
        precision=config.precision,
        in_flight=config.in_flight,
    )


def validate_study(config: StudyConfig, *, check_data: bool = True) -> dict[str, str]:
    """Every problem of a study, by field; empty when it can be submitted. The fields it shares with an
    experiment are checked by ``validate`` (its ``iterations`` are the study's ``cells``)."""
    shared = validate(study_searches(config), check_data=check_data)
    errors = {("cells" if k == "iterations" else k): v for k, v in shared.items()}
    for name, message in check_counts(config.cells, config.sample, config.top, config.seeds).items():
        errors.setdefault(name, message)
    if not isinstance(config.paired, bool):
        errors["paired"] = "paired is true or false"
    name_error = check_name(config.name)
    if name_error:
        errors["name"] = name_error
    benchmarked = benchmark_records_of(config.kernel_sets, config.dataset) if "kernel_sets" not in errors else []
    if benchmarked:
        errors["kernel_sets"] = (
            f"{', '.join(benchmarked)} on {config.dataset} has true accuracies already: explore "
            "it (exhaustive for every cell) and compare the score with them by `benchmark "
            "report`, instead of training"
        )
    if not isinstance(config.exhaustive, bool):
        errors["exhaustive"] = "exhaustive is true or false"
    elif config.exhaustive and not {"cells", "kernel_sets"} & set(errors):
        distinct = distinct_cell_count(config.kernel_sets)
        if config.cells > distinct:
            errors["cells"] = f"only {distinct:,} distinct cells exist; an exhaustive study scores at most that"
    if not {"sample", "kernel_sets"} & set(errors):
        distinct = distinct_cell_count(config.kernel_sets)
        if config.sample > distinct:
            errors["sample"] = f"only {distinct:,} distinct cells exist; a uniform sample takes at most that many"
    if "seed" not in errors and "seeds" not in errors and config.seed + config.seeds - 1 > MAX_SEED:
        errors["seeds"] = f"the training seeds run from the seed up; keep seed + seeds - 1 within {MAX_SEED:,}"
    return errors


def submit_study(config: StudyConfig | dict, *, store: Store | None = None) -> dict:
    """Validate, then record the study with one queued job per kernel set, all or nothing (``engine.study.studies``).

    Returns ``{"experiment_id", "run_ids", "job_ids"}``; raises ``ConfigError`` and writes nothing when
    anything is invalid.
    """
    if isinstance(config, dict):
        config = _from_dict(StudyConfig, config)
    errors = validate_study(config)
    if errors:
        raise ConfigError(errors)
    if config.epochs is None:
        config = replace(config, epochs=get_profile(config.profile).epochs)
    profile = get_profile(config.profile)
    settings = [Setting(Space.parse(k), config.cells) for k in dict.fromkeys(config.kernel_sets)]
    kernel_sets = ", ".join(s.kernel_set.name for s in settings)
    name = config.name.strip() or f"study of {kernel_sets} on {config.dataset}"
    runs = [{"setting": s.name, "kernel_set": s.kernel_set.name, "iterations": s.iterations} for s in settings]
    payload = {
        **asdict(config),
        "name": name,
        "kernel_sets": [s.kernel_set.name for s in settings],
        "study": {"sample": config.sample, "top": config.top, "seeds": config.seeds, "paired": config.paired},
    }
    return _store(store).add_experiment(
        name, payload, profile=profile.name, reduced=profile.reduced, runs=runs, kind="study"
    )


def study_report(experiment_id: int, *, resamples: int = RESAMPLES, store: Store | None = None) -> StudyReport:
    """The statistics of a study from what it has trained so far (``engine.study.studies.report``)."""
    s = _store(store)
    experiment = s.experiment(experiment_id)
    if experiment["kind"] != "study":
        raise StoreError(f"experiment {experiment_id} is not a study")
    runs = s.runs([experiment_id])
    candidates = {r["id"]: s.candidates(r["id"]) for r in runs}
    config = experiment["config"]
    return study_statistics(
        runs,
        s.trained_cells(r["id"] for r in runs),
        candidates,
        exhaustive=config.get("exhaustive", False),
        seed=config["seed"],
        resamples=resamples,
    )


def export_study(experiment_id: int, fmt: str = "csv", *, store: Store | None = None) -> str:
    """A study's trained cells as CSV (one row per cell and seed), or its config and full report as JSON."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    s = _store(store)
    experiment = s.experiment(experiment_id)
    if fmt == "csv":
        rows = s.trained_cells(r["id"] for r in s.runs([experiment_id]))
        columns = ["kernel_set", *TRAINED_CELL_COLUMNS]
        return pd.DataFrame(rows, columns=columns).to_csv(index=False)
    payload = {
        "study": {k: experiment[k] for k in ("id", "name", "config", "profile", "dataset", "created")},
        "reduced_profile": bool(experiment["reduced"]),
        "report": study_report(experiment_id, store=s).to_dict(),
    }
    return json.dumps(payload, indent=1)


def baseline_name(config: ExperimentConfig) -> str | None:
    """The baseline setting in its canonical spelling (``1x1,3x3_500x`` -> ``1x1_3x3_500x``)."""
    return Setting.parse(config.baseline).name if config.baseline else None


def list_experiments(*, store: Store | None = None) -> pd.DataFrame:
    """One row per experiment, newest first, with counts of its jobs by status and an overall status."""
    frame = pd.DataFrame(_store(store).experiments())
    if frame.empty:
        return pd.DataFrame(columns=["id", "name", "kind", "dataset", "profile", "status", "runs", "done", "created"])
    frame["status"] = frame.apply(_experiment_status, axis=1)
    frame["created"] = pd.to_datetime(frame["created"], unit="s")
    return frame


def _experiment_status(row) -> str:
    for status in (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED):
        if row[status]:
            return status
    return "done" if row["done"] == row["runs"] else "empty"


def get_experiment(experiment_id: int, *, store: Store | None = None) -> dict:
    """The experiment's row with its config (a dict)."""
    return _store(store).experiment(experiment_id)


def _job_ids(s: Store, experiment_id: int | None, job_ids) -> list[int]:
    if job_ids is not None:
        return list(job_ids)
    if experiment_id is None:
        raise InputError("name an experiment or the jobs")
    s.experiment(experiment_id)
    return [j["id"] for j in s.jobs(experiment_id)]


def cancel(experiment_id: int | None = None, job_ids=None, *, store: Store | None = None) -> int:
    """Cancel an experiment's (or the given) queued and running jobs; returns how many were affected."""
    s = _store(store)
    return s.request_cancel(_job_ids(s, experiment_id, job_ids))


def retry(experiment_id: int | None = None, job_ids=None, *, store: Store | None = None) -> int:
    """Queue failed or cancelled jobs again; each resumes from what it recorded."""
    s = _store(store)
    return s.retry(_job_ids(s, experiment_id, job_ids))


def delete_experiment(experiment_id: int, *, store: Store | None = None) -> None:
    """Delete an experiment, its rows and its files (models, logs); refused while a job of it runs."""
    s = _store(store)
    folder = s.experiment_folder(experiment_id)
    logs = [s.log_path(job["id"]) for job in s.jobs(experiment_id)]
    s.delete_experiment(experiment_id)
    shutil.rmtree(folder, ignore_errors=True)
    for log in logs:
        if log is not None:
            log.unlink(missing_ok=True)


def worker_status(*, store: Store | None = None) -> dict:
    """``{"running": bool, "pid", "host", "since"}`` of the local worker serving this database."""
    return worker_state(_store(store))


def ensure_worker(*, store: Store | None = None, idle_exit: float | None = 300.0) -> int | None:
    """Start a detached worker unless one serves this database; returns its pid when one was started."""
    return start_worker(_store(store), idle_exit=idle_exit)


def job_log(job_id: int, *, lines: int = 40, store: Store | None = None) -> str:
    """The last ``lines`` lines of a job's log ('' before it starts)."""
    path = _store(store).log_path(job_id)
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


EXPORT_FORMATS = ("csv", "json")


def export_experiment(experiment_id: int, fmt: str = "csv", *, store: Store | None = None) -> str:
    """The experiment's table of settings as CSV, or everything (config, runs, epochs, events) as JSON.

    Both carry the profile and whether it is a reduced one.
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    s = _store(store)
    experiment = s.experiment(experiment_id)
    runs = runs_frame([experiment_id], store=s)
    if fmt == "csv":
        return runs.drop(columns=["experiment"]).to_csv(index=False)
    epochs = epochs_frame([experiment_id], store=s)
    payload = {
        "experiment": {k: experiment[k] for k in ("id", "name", "config", "profile", "dataset", "created")},
        "reduced_profile": bool(experiment["reduced"]),
        "runs": json.loads(runs.to_json(orient="records")),
        "epochs": json.loads(epochs.to_json(orient="records")) if not epochs.empty else [],
        "events": json.loads(events_frame(experiment_id, store=s).to_json(orient="records", date_format="iso")),
    }
    return json.dumps(payload, indent=1)


def export_name(experiment: dict, fmt: str) -> str:
    """A safe file name for an experiment's export, like ``download_name`` (the name cut to 60 characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"spikernel-exp{experiment['id']}-{experiment['name'][:60]}").strip("._")
    return f"{stem or 'experiment'}.{fmt}"
