"""The Python API over the store and the worker: everything the dashboard and the command line do.

    from engine import api
    config = api.ExperimentConfig(kernel_sets=("1x1_3x3", "3x3_5x5"), iterations=100, baseline="1x1_3x3_500x")
    ids = api.submit_experiment(config)
    api.ensure_worker()                      # a detached worker, unless one runs
    api.runs_frame([ids["experiment_id"]])   # pandas, one row per setting
    api.select([ids["experiment_id"]], "10M")

Each function takes ``store=`` to work on another database than ``default_db_path()``.

No torch at import, nor in what the dashboard reads (frames, Alg. 1, sizes, checks of a config): the
model stack is imported inside the few functions that compute with a model (``measure_run``,
``deploy_file``) or ask torch about devices (``devices``, ``estimate_seconds`` and ``validate`` of a GPU's
name). Jobs run in the worker's own process.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pandas as pd

from engine.core import (
    BIT_WIDTHS,
    MAX_EPOCHS,
    MAX_IN_FLIGHT,
    MAX_ITERATIONS,
    MAX_SEED,
    PRECISIONS,
    PROFILES,
    TABLE_I,
    Budget,
    EnergyModel,
    Genotype,
    InputError,
    KernelSet,
    Selection,
    Setting,
    Space,
    SpaceError,
    SpikernelError,
    budget_in_bytes,
    footprint,
    format_count,
    get_profile,
    layer_counts,
    pareto_front,
    parse_energy_budget,
    select_model,
    weight_bytes,
)
from engine.data import DatasetError, check_dataset, data_roots, dataset_shape
from engine.jobs import start_worker, worker_state
from engine.store import ACTIVE, STOPPED, TRAINED_CELL_COLUMNS, JobStatus, Store, StoreError, default_db_path
from engine.study import StudyConfig, StudyReport, check_counts
from engine.study import report as study_statistics

LOG_TAIL_BYTES = 64 * 1024


class ConfigError(InputError):
    """An invalid experiment; ``errors`` maps each field at fault to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ExperimentConfig:
    """One exploration: each kernel set searched for ``iterations`` cells, its best trained for ``epochs``.

    ``baseline`` is an extra setting that speed-ups are measured against (the paper's 5000-iteration search;
    None for none); ``budget``/``bits`` are the memory budget Alg. 1 starts from (the dashboard's slider
    moves it). These defaults are the product's: the command line's arguments and the Launch page's fields
    start from them.
    """

    dataset: str = "sample"
    kernel_sets: tuple[str, ...] = ("1x1_3x3", "3x3_5x5")
    iterations: int = 1000
    exhaustive: bool = False  # score the first ``iterations`` distinct cells in a seeded order instead of sampling
    baseline: str | None = "1x1_3x3_5000x"
    profile: str = "laptop"
    epochs: int | None = None  # None: the profile's (Profile.epochs: 300 for the paper, 10 for the laptop)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    in_flight: int = 1  # candidates scored at once, each in a process of its own (for GPUs; the same results)
    budget: str | None = None
    bits: int | None = None
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> ExperimentConfig:
        return _from_dict(cls, d)

    def with_profile_defaults(self) -> ExperimentConfig:
        """Unset epochs filled in from the profile (call on a valid config)."""
        return self if self.epochs is not None else replace(self, epochs=get_profile(self.profile).epochs)

    def settings(self) -> list[Setting]:
        """The runs in order: the baseline first (unless listed), then each kernel set. Raises SpaceError."""
        names = [Setting(Space.parse(k), self.iterations).name for k in self.kernel_sets]
        if self.baseline:
            baseline = Setting.parse(self.baseline).name
            if baseline not in names:
                names.insert(0, baseline)
        return [Setting.parse(n) for n in dict.fromkeys(names)]


def _from_dict(cls, d: dict):
    """An experiment's or a study's config from a dict (JSON, a form): unknown fields are errors."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError({k: "unknown field" for k in unknown})
    kernel_sets = d.get("kernel_sets", cls.kernel_sets)
    if isinstance(kernel_sets, list):  # JSON has no tuples
        kernel_sets = tuple(kernel_sets)
    return cls(**{**d, "kernel_sets": kernel_sets})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(config: ExperimentConfig, *, check_data: bool = True) -> dict[str, str]:
    """Every problem of ``config``, by field; empty when it can be submitted. Any value of any type gives
    a field error at worst, never an exception."""
    errors: dict[str, str] = {}
    if check_data:
        try:
            check_dataset(config.dataset)
        except DatasetError as e:
            errors["dataset"] = str(e)
    if not isinstance(config.kernel_sets, (tuple, list)) or not config.kernel_sets:
        errors["kernel_sets"] = "pick at least one kernel set"
    else:
        for text in config.kernel_sets:
            try:
                if not isinstance(text, str):
                    raise SpaceError(f"a kernel set is text like '3x3_5x5', got {type(text).__name__}")
                Space.parse(text)
            except SpaceError as e:
                errors["kernel_sets"] = str(e)
                break
    if not _is_int(config.iterations) or not 1 <= config.iterations <= MAX_ITERATIONS:
        errors["iterations"] = f"iterations must be a whole number from 1 to {MAX_ITERATIONS:,}"
    if config.baseline is not None and config.baseline != "":
        try:
            Setting.parse(config.baseline)
        except SpaceError as e:
            errors["baseline"] = str(e)
    if not isinstance(config.exhaustive, bool):
        errors["exhaustive"] = "exhaustive is true or false"
    elif config.exhaustive:
        distinct = distinct_cell_count(config.kernel_sets) if "kernel_sets" not in errors else None
        if distinct is not None and "iterations" not in errors and config.iterations > distinct:
            errors["iterations"] = f"only {distinct:,} distinct cells exist; an exhaustive search scores at most that"
        if config.baseline and "baseline" not in errors:
            baseline = Setting.parse(config.baseline)
            cells = len(baseline.kernel_set.distinct_cells())
            if baseline.iterations > cells:
                errors["baseline"] = f"an exhaustive baseline scores at most the {cells:,} distinct cells"
    if config.epochs is not None and (not _is_int(config.epochs) or not 1 <= config.epochs <= MAX_EPOCHS):
        errors["epochs"] = f"epochs must be a whole number from 1 to {MAX_EPOCHS:,}"
    if not _is_int(config.seed) or not 0 <= config.seed <= MAX_SEED:
        errors["seed"] = f"the seed must be a whole number from 0 to {MAX_SEED:,}"
    if not _is_int(config.in_flight) or not 1 <= config.in_flight <= MAX_IN_FLIGHT:
        errors["in_flight"] = f"candidates in flight must be a whole number from 1 to {MAX_IN_FLIGHT}"
    if not isinstance(config.profile, str) or config.profile not in PROFILES:
        errors["profile"] = f"unknown profile {str(config.profile)[:40]!r}; choose one of {', '.join(PROFILES)}"
    if not isinstance(config.precision, str) or config.precision not in PRECISIONS:
        errors["precision"] = "precision must be fp32 or bf16"
    try:
        if not isinstance(config.device, str):
            raise InputError(f"a device is text like 'auto', 'cpu' or 'cuda:0', got {type(config.device).__name__}")
        if config.device.strip().lower() not in ("", "auto", "cpu"):  # these always resolve
            from engine.nn.devices import resolve_device  # torch: only it knows which GPUs this machine has

            resolve_device(config.device)
    except ValueError as e:
        errors["device"] = str(e)
    if config.budget is not None:
        try:
            if not isinstance(config.budget, (str, int, float)) or isinstance(config.budget, bool):
                raise InputError("a budget is text like '10M' or '40MB'")
            Budget.parse(config.budget, config.bits)
        except (ValueError, TypeError) as e:
            errors["budget"] = str(e)
    elif config.bits is not None:
        errors["bits"] = "a bit width goes with a budget in bytes"
    if not isinstance(config.name, str):
        errors["name"] = f"the name is text, got {type(config.name).__name__}"
    elif len(config.name) > 200:
        errors["name"] = "keep the name under 200 characters"
    return errors


# ------------------------------------------------------------------------------------------ store

_STORES: dict[tuple[Path, bool], Store] = {}


def get_store(path: str | Path | None = None, *, create: bool = True, readonly: bool = False) -> Store:
    """The store at ``path`` (default ``default_db_path()``), opened once per process.

    ``create``: a new database may be made where there is none (in an existing folder; the default
    database's folder is made when missing). ``readonly``: nothing is created or changed, not even the schema.
    """
    if path is None:
        path = default_db_path()
        if create and not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = (Path(path).expanduser().resolve(), readonly)
    except (OSError, ValueError) as e:
        raise StoreError(f"{str(path)!r} is not a usable database path: {e}") from None
    if key not in _STORES:
        _STORES[key] = Store(key[0], create=create, readonly=readonly)
    return _STORES[key]


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else get_store(store)


# ---------------------------------------------------------------------------------------- actions


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
        {"setting": s.name, "kernel_set": s.kernel_set.name, "iterations": s.iterations, "is_baseline": int(s.name == baseline)}
        for s in settings
    ]
    payload = {**asdict(config), "name": name, "baseline": baseline, "kernel_sets": list(config.kernel_sets)}
    return _store(store).add_experiment(name, payload, profile=profile.name, reduced=profile.reduced, runs=runs)


def study_searches(config: StudyConfig) -> ExperimentConfig:
    """The experiment a study's searches amount to (no baseline, one training per kernel set): what the
    fields they share are checked as, and what a time estimate starts from."""
    return ExperimentConfig(dataset=config.dataset, kernel_sets=config.kernel_sets, iterations=config.cells,
                            baseline=None, profile=config.profile, epochs=config.epochs, seed=config.seed,
                            device=config.device, precision=config.precision, in_flight=config.in_flight)  # fmt: skip


def validate_study(config: StudyConfig, *, check_data: bool = True) -> dict[str, str]:
    """Every problem of a study, by field; empty when it can be submitted. The fields it shares with an
    experiment are checked by ``validate`` (its ``iterations`` are the study's ``cells``)."""
    shared = validate(study_searches(config), check_data=check_data)
    errors = {("cells" if k == "iterations" else k): v for k, v in shared.items()}
    for name, message in check_counts(config.cells, config.trained, config.top, config.seeds).items():
        errors.setdefault(name, message)
    benchmarked = benchmark_records_of(config.kernel_sets, config.dataset) if "kernel_sets" not in errors else []
    if benchmarked:
        errors["kernel_sets"] = (f"{', '.join(benchmarked)} on {config.dataset} has true accuracies already: explore "
                                 "it (exhaustive for every cell) and compare the score with them by `benchmark "
                                 "report`, instead of training")  # fmt: skip
    if not isinstance(config.exhaustive, bool):
        errors["exhaustive"] = "exhaustive is true or false"
    elif config.exhaustive and not {"cells", "kernel_sets"} & set(errors):
        distinct = distinct_cell_count(config.kernel_sets)
        if config.cells > distinct:
            errors["cells"] = f"only {distinct:,} distinct cells exist; an exhaustive study scores at most that"
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
        **asdict(config), "name": name, "kernel_sets": [s.kernel_set.name for s in settings],
        "study": {"trained": config.trained, "top": config.top, "seeds": config.seeds},
    }  # fmt: skip
    return _store(store).add_experiment(name, payload, profile=profile.name, reduced=profile.reduced, runs=runs,
                                        kind="study")  # fmt: skip


def study_report(experiment_id: int, *, resamples: int = 2000, store: Store | None = None) -> StudyReport:
    """The statistics of a study from what it has trained so far (``engine.study.studies.report``)."""
    s = _store(store)
    experiment = s.experiment(experiment_id)
    if experiment["kind"] != "study":
        raise StoreError(f"experiment {experiment_id} is not a study")
    runs = s.runs([experiment_id])
    candidates = {r["id"]: s.candidates(r["id"]) for r in runs}
    config = experiment["config"]
    return study_statistics(runs, s.trained_cells(r["id"] for r in runs), candidates,
                        exhaustive=config.get("exhaustive", False), seed=config["seed"], resamples=resamples)  # fmt: skip


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


# ------------------------------------------------------------------------------------------ worker


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


# ------------------------------------------------------------------------------------------ frames

RUN_COLUMNS = [
    "experiment_id", "experiment", "run_id", "job_id", "setting", "kernel_set", "iterations", "is_baseline",
    "status", "stage", "accuracy", "val_accuracy", "params", "params_torch", "memory_mb", "search_seconds", "speedup",
    "best_score", "best_genotype", "candidates_done", "epochs_done", "train_seconds", "firing_rate",
    "accuracy_8bit", "accuracy_4bit", "synops", "macs", "ann_macs", "energy_uj", "ann_energy_uj",
    "checkpoint", "checkpoint_bytes", "checkpoint_sha256", "profile", "reduced", "dataset", "error",
]  # fmt: skip
# Energy per operation for the energy columns (engine.core.energy.EnergyModel: 45 nm, 0.9 pJ per AC, 4.6 pJ per MAC).
ENERGY = EnergyModel()


def runs_frame(experiment_ids=None, *, store: Store | None = None) -> pd.DataFrame:
    """One row per run (setting): status, results, fp32 memory and the search speed-up over its
    experiment's baseline."""
    rows = _store(store).runs(experiment_ids)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    frame = frame.rename(columns={"id": "run_id"})
    frame["memory_mb"] = weight_bytes(frame["params"].astype("float"), 32) / 1e6
    frame["is_baseline"] = frame["is_baseline"].astype(bool)
    frame["reduced"] = frame["reduced"].astype(bool)
    # Vectorised (a loop over experiments cost ~2 ms each): each experiment's first searched baseline.
    seconds = frame["search_seconds"].astype("float").where(frame["stage"] != "search")
    base = seconds.where(frame["is_baseline"]).groupby(frame["experiment_id"]).transform("first")
    frame["speedup"] = base / seconds
    # Energy per inference from the measured operation counts (None until measured).
    frame["energy_uj"] = ENERGY.snn_uj(frame["synops"].astype("float"), frame["macs"].astype("float"))
    frame["ann_energy_uj"] = ENERGY.ann_uj(frame["ann_macs"].astype("float"))
    return frame[RUN_COLUMNS]


def candidates_frame(run_id: int, *, store: Store | None = None) -> pd.DataFrame:
    """Every scored cell of a run, in search order."""
    return pd.DataFrame(_store(store).candidates(run_id))


def epochs_frame(experiment_ids, *, store: Store | None = None) -> pd.DataFrame:
    """Per run and epoch: loss, accuracies, firing rate, seconds; with the run's setting and experiment."""
    s = _store(store)
    runs = {r["id"]: r for r in s.runs(experiment_ids)}
    frame = pd.DataFrame(s.epochs(runs))
    if frame.empty:
        return frame
    frame["setting"] = frame["run_id"].map(lambda r: runs[r]["setting"])
    frame["kernel_set"] = frame["run_id"].map(lambda r: runs[r]["kernel_set"])
    frame["experiment_id"] = frame["run_id"].map(lambda r: runs[r]["experiment_id"])
    return frame


def jobs_frame(experiment_id: int | None = None, *, store: Store | None = None) -> pd.DataFrame:
    """Every job with its live progress, newest experiment first."""
    frame = pd.DataFrame(_store(store).jobs(experiment_id))
    if frame.empty:
        return frame
    return frame.sort_values(["experiment_id", "id"], ascending=[False, True]).reset_index(drop=True)


def events_frame(experiment_id: int | None = None, *, limit: int = 200, store: Store | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(_store(store).events(experiment_id, limit))
    if not frame.empty:
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
    return frame


# ------------------------------------------------------------------------------------ selection


@dataclass(frozen=True)
class Model:
    """A trained run as Alg. 1 sees it."""

    run_id: int
    setting: str
    accuracy: float
    params: int
    energy_uj: float | None = None
    validation: float | None = None  # a benchmarked run's validation accuracy: what Alg. 1 chooses on


def accuracy_column(bits: int | None) -> str:
    """The accuracy a model has at a weight width: measured with 8- and 4-bit weights; fp32's otherwise (a
    16-bit model is taken to keep it: not measured)."""
    return {8: "accuracy_8bit", 4: "accuracy_4bit"}.get(bits, "accuracy")


def trained_models(runs: pd.DataFrame, bits: int | None = None) -> list[Model]:
    """The finished runs with an accuracy at ``bits`` (runs not measured at 8 or 4 bits are left out)."""
    column = accuracy_column(bits)
    done = runs[(runs["stage"] == "done") & runs[column].notna()]
    energy = done["energy_uj"] if "energy_uj" in done else pd.Series(float("nan"), index=done.index)
    # Benchmarked runs carry a validation accuracy to choose on; at 8 or 4 bits the measured accuracy decides.
    unmeasured = pd.Series(math.nan, index=done.index)
    validation = done["val_accuracy"] if "val_accuracy" in done and bits is None else unmeasured
    return [Model(int(r.run_id), r.setting, float(getattr(r, column)), int(r.params), None if math.isnan(e) else float(e),
                  None if math.isnan(v) else float(v))
            for r, e, v in zip(done.itertuples(), energy.astype(float), validation.astype(float))]  # fmt: skip


def select(experiment_ids, budget: Budget | str | float, bits: int | None = None, *,
           energy: float | str | None = None, store: Store | None = None) -> Selection:  # fmt: skip
    """Alg. 1 over the trained runs of the given experiments; ``chosen`` is a ``Model`` or None."""
    return choose(runs_frame(experiment_ids, store=store), budget, bits, energy=energy)


def choose(runs: pd.DataFrame, budget: Budget | str | float, bits: int | None = None, *,
           energy: float | str | None = None) -> Selection:  # fmt: skip
    """Alg. 1 over the trained runs of a ``runs_frame`` already in hand (the budget slider's path).

    A budget in bytes at 8 or 4 bits picks by the accuracy measured with weights of that width; ``energy``
    (microjoules per inference) adds an energy budget (beyond the paper)."""
    if not isinstance(budget, Budget):
        budget = Budget.parse(budget, bits)
    return select_model(trained_models(runs, budget.bits), budget, parse_energy_budget(energy))


def checkpoint_path(run_id: int, *, store: Store | None = None) -> Path:
    """The trained model file of a finished run."""
    s = _store(store)
    run = s.run(run_id)
    if not run["checkpoint"]:
        raise StoreError(f"run {run_id} ({run['setting']}) has no trained model yet")
    return s.root / run["checkpoint"]


def measured_accuracy(run_id: int, fmt: str, *, store: Store | None = None) -> float | None:
    """The test accuracy the worker measured for a run's ``int8``/``int4`` weights (None when not measured)."""
    bits = {"int8": 8, "int4": 4}.get(fmt)
    return _store(store).run(run_id).get(f"accuracy_{bits}bit") if bits else None


DEPLOY_FILES = {"nir": "model.nir", "int8": "model-int8.safetensors", "int4": "model-int4.safetensors"}


def deploy_file(run_id: int, fmt: str, *, store: Store | None = None) -> Path:
    """A finished run's model as ``nir`` (the NIR graph) or ``int8``/``int4`` (integer weights), made beside the
    model on first use (and again if the model file is newer)."""
    from engine.deploy import DeployError, export  # torch: the export rebuilds the network from its weights

    if fmt not in DEPLOY_FILES:
        raise DeployError(f"unknown format {fmt!r}; choose one of {', '.join(DEPLOY_FILES)}")
    source = checkpoint_path(run_id, store=store)
    out = source.with_name(DEPLOY_FILES[fmt])
    if not out.is_file() or out.stat().st_mtime < source.stat().st_mtime:
        export(source, fmt, out, accuracy=measured_accuracy(run_id, fmt, store=store))
    return out


def measure_run(run_id: int, *, store: Store | None = None) -> dict:
    """Measure a finished run's model now (8/4-bit accuracy, synaptic operations) and store it: for runs
    trained before the worker measured them."""
    # torch: the model runs on the test set (in the caller's process, as the Model page's button asks)
    from engine.train.checkpoint import load_model
    from engine.data.images import load_dataset
    from engine.deploy import measure

    s = _store(store)
    loaded = load_model(checkpoint_path(run_id, store=s))
    values = measure(loaded.model, loaded.profile, load_dataset(loaded.data.name), seed=loaded.meta["eval_seed"])
    s.record_deploy(run_id, values)
    return values


# ------------------------------------------------------------------------------------------ export

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


# ------------------------------------------------------------------------------ launch: choices


def dataset_status(spec: str) -> tuple[bool, str]:
    """Whether a dataset can be used and how it will be read ("bundled", "on disk", "will download"),
    or why not."""
    try:
        return True, check_dataset(spec)
    except DatasetError as e:
        return False, str(e)


def devices() -> list[str]:
    """What a job can run on: ``auto`` then the CPU and each GPU with its name."""
    from engine.nn.devices import available_devices  # torch: only it knows which GPUs this machine has

    return ["auto", *available_devices()]


def benchmark_records_of(kernel_sets, dataset: str) -> list[str]:
    """The spaces among ``kernel_sets`` whose accuracy on ``dataset`` a benchmark gives (searches look it up)."""
    from engine.study import benchmark

    return [k for k in kernel_sets if benchmark.benchmark_records(Space.parse(k), dataset) is not None]


def scored_cells(run_id: int, *, store: Store | None = None) -> dict[str, tuple[float, float]]:
    """A run's scored cells: genotype -> (score, firing rate at initialisation)."""
    return {c["genotype"]: (c["score"], c["firing_rate"]) for c in _store(store).candidates(run_id)}


def benchmark_cells(run_id: int, *, store: Store | None = None) -> pd.DataFrame | None:
    """Every cell a run of a benchmarked space scored, with the true accuracies of its networks (a cell and its
    relabelled twin are two networks with one score), or None when the run's space has no benchmark."""
    from engine.study import benchmark

    s = _store(store)
    run = s.run(run_id)
    dataset = s.experiment(run["experiment_id"])["dataset"]
    records = benchmark.benchmark_records(Space.parse(run["kernel_set"]), dataset)
    scored = scored_cells(run_id, store=s)
    if records is None or not scored:
        return None
    rows, proxies = benchmark.proxies_for(records, scored, "score")
    return pd.DataFrame({
        "id": records.ids[rows], "score": proxies["score (score)"], "firing_rate": proxies["SAR (score)"],
        "conv_edges": records.conv_edges[rows], "params": records.params[rows],
        "val_accuracy": records.final_val[rows], "test_accuracy": records.test_acc[rows],
    })  # fmt: skip


def benchmark_proxies(cells: pd.DataFrame, searches: int = 200) -> pd.DataFrame:
    """The proxy table of ``benchmark_cells``: rank agreement with validation accuracy, precision at 10 and
    100, the partial correlation given conv edges and the regret of 1,000-iteration random searches."""
    from engine.study import benchmark

    proxies = {name: cells[column].to_numpy(float) for name, column in
               (("training-free score", "score"), ("spike rate (SAR)", "firing_rate"), ("conv edges", "conv_edges"))}
    rows = benchmark.proxy_table(proxies, cells["val_accuracy"], cells["test_accuracy"], cells["conv_edges"],
                                 searches=searches, iterations=(1000,))  # fmt: skip
    return pd.DataFrame([{
        "proxy": r["proxy"], "spearman": r["spearman"], "kendall": r["kendall"], "p_at_10": r["p@10"],
        "p_at_100": r["p@100"], "partial": r["partial_spearman"],
        "regret_1000": r["searches"][0]["mean"] if r["searches"] else math.nan, "regret_all": r["exhaustive_regret"],
    } for r in rows])  # fmt: skip


def distinct_cell_count(kernel_sets=tuple(k.name for k in TABLE_I)) -> int:
    """The fewest distinct cells among ``kernel_sets``' spaces (7,012 for two kernel sizes): the most an
    exhaustive search of each of them can score. Raises SpaceError."""
    return min(len(Space.parse(k).distinct_cells()) for k in kernel_sets)


def network_sizes(profile: str, dataset: str, kernel_sets) -> pd.DataFrame:
    """Eq. 2-3 parameters of the smallest and largest cell of each kernel set, known before any search. A
    benchmarked space's are those of the networks the benchmark trained, which its runs report."""
    from engine.study.benchmark import BENCHMARK_PROFILE

    shape = dataset_shape(dataset)
    rows = []
    for text in kernel_sets:
        ks = Space.parse(text)
        prof = get_profile(BENCHMARK_PROFILE if benchmark_records_of([text], dataset) else profile)
        smallest, largest = ks.extremes()
        rows.append({"kernel_set": ks.name, "min_params": footprint(smallest, ks, prof, shape).params,
                     "max_params": footprint(largest, ks, prof, shape).params})  # fmt: skip
    return pd.DataFrame(rows, columns=["kernel_set", "min_params", "max_params"])


# Seconds per search candidate and per training image-epoch when this store has no history to go by, per
# profile and kind of device (BENCHMARKS.md: the 2-core CPU after the speed work; an H100 for the GPU).
PACE_DEFAULTS = {
    ("laptop", "cpu"): (0.07, 0.004), ("embedded", "cpu"): (2.0, 0.06), ("paper", "cpu"): (100.0, 0.5),
    ("laptop", "cuda"): (0.04, 0.0005), ("embedded", "cuda"): (0.09, 0.002), ("paper", "cuda"): (0.30, 0.02),
}  # fmt: skip
TRAIN_IMAGES = {"sample": 5_000, "cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000}


def estimate_seconds(config: ExperimentConfig, *, store: Store | None = None) -> float:
    """A rough duration of the whole experiment on the device it will run on: this store's pace for the
    profile, dataset and kind of device when it has finished runs of them, else the measured defaults,
    scaled by the dataset's training set."""
    from engine.nn.devices import resolve_device  # torch: "auto" means the GPU when there is one

    try:
        device_type = resolve_device(config.device).type
    except ValueError:
        device_type = "cpu"
    config = config.with_profile_defaults()
    past = _store(store).pace(config.profile, config.dataset, device_type)
    per_candidate, per_image = PACE_DEFAULTS.get((config.profile, device_type), PACE_DEFAULTS["embedded", device_type])
    per_candidate = past["per_candidate"] or per_candidate
    images = TRAIN_IMAGES.get(config.dataset.partition(":")[0], 10_000)
    per_epoch = past["per_epoch"] or per_image * images
    settings = config.settings()
    trained = [s for s in settings if not benchmark_records_of([s.kernel_set.name], config.dataset)]  # others look up
    return sum(s.iterations for s in settings) * per_candidate + len(trained) * config.epochs * per_epoch


# ------------------------------------------------------------------------------------ model page


def model_details(run_id: int, *, store: Store | None = None) -> dict:
    """A finished (or searched) run's cell, per-layer parameters and training history, for display.

    ``edges``: (from node, to node, op name, kernel size or None) for every edge that carries an op;
    ``layers``: a frame of per-layer parameters; ``epochs``: its training history.
    """
    s = _store(store)
    run = s.run(run_id)
    if not run["best_genotype"]:
        raise StoreError(f"run {run_id} ({run['setting']}) has not finished its search yet")
    experiment = s.experiment(run["experiment_id"])
    genotype, kernel_set = Genotype.from_str(run["best_genotype"]), Space.parse(run["kernel_set"])
    ops = [(a, b, kernel_set.op(code)) for a, b, code in genotype.edges]
    edges = [(a, b, "conv" if op.is_conv else op.label, op.kernel if op.is_conv else None) for a, b, op in ops]
    layers = layer_counts(genotype, kernel_set, get_profile(experiment["profile"]), dataset_shape(experiment["dataset"]))
    return {
        "run": run,
        "experiment": experiment,
        "genotype": genotype.to_str(),
        "edges": edges,
        "layers": pd.DataFrame(
            [{"layer": x.name, "shape": x.shape, "params": x.params, "batchnorm": x.norm} for x in layers]
        ),
        "epochs": pd.DataFrame(s.epochs([run_id])),
        "deploy": json.loads(run["deploy"]) if run.get("deploy") else None,
        "checkpoint": s.root / run["checkpoint"] if run["checkpoint"] else None,
    }


def download_name(run: dict, fmt: str | None = None) -> str:
    """A safe file name for a run's model (``fmt``: nir, int8, int4 for its deployable forms): letters,
    digits, dot, dash and underscore only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"spikernel-exp{run['experiment_id']}-{run['setting']}").strip("._")
    suffix = {None: ".safetensors", "nir": ".nir", "int8": "-int8.safetensors", "int4": "-int4.safetensors"}[fmt]
    return f"{stem or 'model'}{suffix}"


# ---------------------------------------------------------------------------------- results page


def pareto_models(runs: pd.DataFrame, bits: int | None = None) -> list[Model]:
    """The trained runs no other beats on both accuracy (at ``bits``, see ``trained_models``) and
    parameters, by rising parameter count: the models Alg. 1 can pick as the budget grows."""
    return pareto_front(trained_models(runs, bits))


def export_name(experiment: dict, fmt: str) -> str:
    """A safe file name for an experiment's export, like ``download_name`` (the name cut to 60 characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"spikernel-exp{experiment['id']}-{experiment['name'][:60]}").strip("._")
    return f"{stem or 'experiment'}.{fmt}"
