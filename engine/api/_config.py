"""What an experiment is made of and what the Launch page offers: the configuration, its validation, the choices and
estimates."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import pandas as pd

from engine.api._store import _store
from engine.core import (
    DEFAULT_VALIDATION,
    MAX_EPOCHS,
    MAX_IN_FLIGHT,
    MAX_ITERATIONS,
    MAX_SEED,
    PRECISIONS,
    PROFILES,
    TABLE_I,
    Budget,
    InputError,
    Setting,
    Space,
    SpaceError,
    footprint,
    get_profile,
    validation_error,
)
from engine.data import DatasetError, check_dataset, dataset_shape
from engine.store import Store
from engine.study import benchmark


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
    moves it). ``validation`` is the share of the training images each training holds out: Alg. 1 chooses on
    the accuracy measured on them and reports test accuracy (0: none, then it chooses on test). These defaults
    are the product's: the command line's arguments and the Launch page's fields start from them.
    """

    dataset: str = "sample"
    kernel_sets: tuple[str, ...] = ("1x1_3x3", "3x3_5x5")
    iterations: int = 1000
    exhaustive: bool = False  # score the first ``iterations`` distinct cells in a seeded order instead of sampling
    baseline: str | None = "1x1_3x3_5000x"
    profile: str = "laptop"
    epochs: int | None = None  # None: the profile's (Profile.epochs: 300 for the paper, 10 for the laptop)
    seed: int = 0
    validation: float = DEFAULT_VALIDATION
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
            images = check_dataset(config.dataset).training_images
            known = isinstance(config.profile, str) and config.profile in PROFILES
            batch = get_profile(config.profile).score.batch_size if known else None
            if batch and images is not None and images < batch:  # the search would fail on its first candidate
                errors["dataset"] = (
                    f"the training split holds {images:,} images, fewer than the {config.profile} profile's "
                    f"score batch of {batch}; add images or pick a profile with a smaller batch"
                )
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
    validation_problem = validation_error(config.validation)
    if validation_problem is not None:
        errors["validation"] = validation_problem
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
    name_error = check_name(config.name)
    if name_error:
        errors["name"] = name_error
    return errors


def dataset_status(spec: str) -> tuple[bool, str]:
    """Whether a dataset can be used and how it will be read ("bundled", "on disk", "will download"),
    or why not: the verdict ``submit`` and the worker's loader give (``check_dataset``)."""
    try:
        return True, check_dataset(spec).state
    except DatasetError as e:
        return False, str(e)


def devices() -> list[str]:
    """What a job can run on: ``auto`` then the CPU and each GPU with its name."""
    from engine.nn.devices import available_devices  # torch: only it knows which GPUs this machine has

    return ["auto", *available_devices()]


def benchmark_records_of(kernel_sets, dataset: str) -> list[str]:
    """The spaces among ``kernel_sets`` whose accuracy on ``dataset`` a benchmark gives (searches look it up)."""

    return [k for k in kernel_sets if benchmark.benchmark_records(Space.parse(k), dataset) is not None]


def check_name(name) -> str | None:
    """Why ``name`` cannot name an experiment or a study (None when it can): it is stored as UTF-8 text."""
    if not isinstance(name, str):
        return f"the name is text, got {type(name).__name__}"
    if len(name) > 200:
        return "keep the name under 200 characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes of another encoding on the command line
        return "the name holds bytes that are not UTF-8 text; retype it"
    return None


def distinct_cell_count(kernel_sets=tuple(k.name for k in TABLE_I)) -> int:
    """The fewest distinct cells among ``kernel_sets``' spaces (7,012 for two kernel sizes): the most an
    exhaustive search of each of them can score. Raises SpaceError."""
    return min(len(Space.parse(k).distinct_cells()) for k in kernel_sets)


def network_sizes(profile: str, dataset: str, kernel_sets) -> pd.DataFrame:
    """Eq. 2-3 parameters of the smallest and largest cell of each kernel set, known before any search. A
    benchmarked space's are those of the networks the benchmark trained, which its runs report."""

    shape = dataset_shape(dataset)
    rows = []
    for text in kernel_sets:
        ks = Space.parse(text)
        prof = get_profile(benchmark.BENCHMARK_PROFILE if benchmark_records_of([text], dataset) else profile)
        smallest, largest = ks.extremes()
        rows.append(
            {
                "kernel_set": ks.name,
                "min_params": footprint(smallest, ks, prof, shape).params,
                "max_params": footprint(largest, ks, prof, shape).params,
            }
        )
    return pd.DataFrame(rows, columns=["kernel_set", "min_params", "max_params"])


# Seconds per search candidate and per training image-epoch when this store has no history to go by, per
# profile and kind of device (BENCHMARKS.md: the 2-core CPU after the speed work; an H100 for the GPU).
PACE_DEFAULTS = {
    ("laptop", "cpu"): (0.07, 0.004),
    ("embedded", "cpu"): (2.0, 0.06),
    ("paper", "cpu"): (100.0, 0.5),
    ("laptop", "cuda"): (0.04, 0.0005),
    ("embedded", "cuda"): (0.09, 0.002),
    ("paper", "cuda"): (0.30, 0.02),
}


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
