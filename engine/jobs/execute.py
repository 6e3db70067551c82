"""One job: search a setting, train its best cell, save the model; or, for a study, search and then train
a planned subset of the scored cells (``engine.study.studies.plan``), recording each. Resumable at every step.

``execute`` knows nothing of the database: it reads what was already done from a ``RunSpec`` and
reports through a ``Sink``. The local worker's sink writes to the store directly; the Ray backend's
sink sends the same calls back to the driver, which stays the only writer.

Resuming: the search continues after the candidates already recorded and, as candidate ``i`` depends
only on ``(seed, i)``, reaches the same candidates and best cell as an uninterrupted run; training
continues from the checkpoint of its last finished epoch (``train-state.pt`` in the run's folder).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from engine.core.footprint import footprint
from engine.core.profiles import get_profile
from engine.core.space import Genotype, Setting
from engine.data.images import ImageData, load_dataset
from engine.deploy import measure
from engine.search.sampling import Candidate, SearchResult, random_search
from engine.search.scorer import Scorer
from engine.study.benchmark import BENCHMARK_PROFILE, benchmark_records, ops_to_id
from engine.study.estimates import MIN_POINTS
from engine.study.studies import plan, trainings
from engine.train.checkpoint import save_trained
from engine.train.training import EpochRecord, TrainConfig, eval_seed, train

FLUSH_S = 1.0  # scored candidates are recorded at least this often (a kill loses at most this much work)
CHECKPOINT_NAME = "model.safetensors"
STATE_NAME = "train-state.pt"


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, as plain values and frozen dataclasses of them (it travels to Ray tasks)."""

    setting: Setting  # from the run's kernel set and iterations, as recorded
    dataset: str
    profile: str
    epochs: int
    seed: int
    precision: str
    device: str
    folder: str  # the run's files: training state and the model
    stage: str = "search"  # where the run stands: search, train or done
    done: list[dict] = field(default_factory=list)  # candidates recorded so far
    search_seconds: float = 0.0
    best: dict | None = None  # the best candidate, once the search is done
    exhaustive: bool = False  # score every distinct cell (in the seed's order) instead of sampling
    in_flight: int = 1  # candidates scored at once (``engine.search.inflight``)
    study: dict | None = (
        None  # a study's design: ``sample``, ``top``, ``seeds``, ``paired`` (engine.study.studies.plan)
    )
    trained: list[dict] = field(default_factory=list)  # a study's (cell, seed) trainings recorded so far
    epochs_done: int = 0  # training epochs recorded so far (in order: the last one recorded)
    validation: float = TrainConfig.validation  # share of the training images held out to choose on


class Sink(Protocol):
    """Where a running job reports. Every call but ``progress`` and ``should_stop`` is a durable write."""

    def candidates(self, rows: list[dict], search_seconds: float) -> None: ...

    def search_done(self, best: dict, params: int, params_torch: int, seconds: float) -> None: ...

    def epoch(self, record: dict) -> None: ...

    def trained_cell(self, row: dict) -> None: ...

    def progress(self, stage: str, done: int, total: int, note: str, eta_seconds: float | None) -> None: ...

    def should_stop(self) -> bool: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Eta:
    """Time left from the pace of this attempt (work resumed from a previous one does not count)."""

    def __init__(self, done: int) -> None:
        self.start_done, self.start = done, time.monotonic()

    def __call__(self, done: int, total: int) -> float | None:
        if done <= self.start_done:
            return None
        return (total - done) * (time.monotonic() - self.start) / (done - self.start_done)


_DATA: dict[str, ImageData] = {}


def dataset(spec: str) -> ImageData:
    """Datasets are decoded once per process and shared by the jobs that use them."""
    if spec not in _DATA:
        _DATA[spec] = load_dataset(spec)
    return _DATA[spec]


def execute(spec: RunSpec, sink: Sink) -> dict | None:
    """Run (or resume) one job. Returns the run's results once the model is saved, or None if stopped."""
    setting = spec.setting
    profile = get_profile(spec.profile)
    data = dataset(spec.dataset)
    folder = Path(spec.folder)
    best, scored = spec.best, spec.done
    if spec.stage == "search":
        result = _search(spec, setting, profile, data, sink)
        if result is None:
            return None
        best, scored = result.best.to_dict(), [c.to_dict() for c in result.candidates]
    if spec.study is not None:
        return _study(spec, setting, profile, data, scored, folder, sink)
    genotype = Genotype.from_str(best["genotype"])
    records = benchmark_records(setting.kernel_set, spec.dataset)
    if records is not None:
        return _look_up(records, genotype, sink)
    return _train(spec, setting, profile, data, genotype, best["score"], folder, sink)


def _search(spec: RunSpec, setting: Setting, profile, data: ImageData, sink: Sink) -> SearchResult | None:
    done = [Candidate.from_dict(c) for c in spec.done]
    pending: list[dict] = []
    started, last_flush = time.perf_counter(), time.monotonic()
    eta = _Eta(len(done))

    def seconds() -> float:
        return spec.search_seconds + time.perf_counter() - started

    def flush() -> None:
        nonlocal last_flush
        if pending:
            sink.candidates(list(pending), seconds())
            pending.clear()
        last_flush = time.monotonic()

    def record(candidate: Candidate) -> None:
        pending.append(candidate.to_dict())
        if time.monotonic() - last_flush >= FLUSH_S:
            flush()

    def progress(n: int, total: int, best: Candidate | None) -> None:
        note = f"best score {best.score:.2f}" if best else ""
        sink.progress("search", n, total, note, eta(n, total))

    sink.progress("search", len(done), setting.iterations, "", None)
    result = random_search(
        setting.kernel_set,
        profile,
        data,
        setting.iterations,
        seed=spec.seed,
        device=spec.device,
        config=replace(profile.score, precision=spec.precision),  # bf16 speeds up search and training alike
        progress=progress,
        on_candidate=record,
        should_stop=sink.should_stop,
        done=done,
        exhaustive=spec.exhaustive,
        in_flight=spec.in_flight,
    )
    flush()
    if result.stopped:
        return None
    # A benchmarked pick's size is the network the benchmark trained, not the one scored at this profile's width.
    sized = get_profile(BENCHMARK_PROFILE) if benchmark_records(setting.kernel_set, spec.dataset) else profile
    fp = footprint(result.best.genotype, setting.kernel_set, sized, data.info)
    sink.search_done(result.best.to_dict(), fp.params, fp.params_torch, seconds())
    return result


def _look_up(records, genotype: Genotype, sink: Sink) -> dict:
    """The pick's published training record instead of a training: validation accuracy to choose on, test
    accuracy to report (both after the benchmark's 100 or 200 epochs)."""
    row = records.row(ops_to_id(genotype.ops))
    sink.progress("train", 1, 1, f"looked up in {records.source}: {row.epochs} epochs, test {row.test_acc:.2f} %", 0.0)
    return {"accuracy": row.test_acc / 100, "val_accuracy": row.final_val / 100}


def _train(
    spec: RunSpec,
    setting: Setting,
    profile,
    data: ImageData,
    genotype: Genotype,
    score: float,
    folder: Path,
    sink: Sink,
) -> dict | None:
    config = TrainConfig(
        epochs=spec.epochs,
        batch_size=profile.batch_size,
        seed=spec.seed,
        device=spec.device,
        precision=spec.precision,
        validation=spec.validation,
    )
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / STATE_NAME
    eta: _Eta | None = None

    def progress(epoch: int, batch: int, batches: int, loss: float, accuracy: float) -> None:
        nonlocal eta
        done, total = (epoch - 1) * batches + batch, spec.epochs * batches
        eta = eta or _Eta(done - 1)
        note = f"epoch {epoch}/{spec.epochs}, batch {batch}/{batches}, loss {loss:.3f}, accuracy {accuracy:.1%}"
        sink.progress("train", done, total, note, eta(done, total))

    reported: set[int] = set()

    def on_epoch(record: EpochRecord) -> None:
        sink.epoch(asdict(record))
        reported.add(record.epoch)

    sink.progress("train", 0, spec.epochs, "starting training", None)
    trained = train(
        genotype,
        setting.kernel_set,
        profile,
        data,
        config,
        state_path=state,
        progress=progress,
        should_stop=sink.should_stop,
        on_epoch=on_epoch,
    )
    if trained.stopped:
        return None
    for record in trained.epochs:  # epochs a previous attempt finished (checkpointed) but did not get to record
        if record.epoch not in reported and record.epoch > spec.epochs_done:
            on_epoch(record)
    checkpoint = folder / CHECKPOINT_NAME
    save_trained(
        checkpoint,
        trained.model,
        genotype=genotype,
        kernel_set=setting.kernel_set,
        profile=profile,
        info=data.info,
        accuracy=trained.accuracy,
        seed=spec.seed,
        epochs=spec.epochs,
        validation=trained.validation,
        val_accuracy=trained.val_accuracy,
        extra={"setting": setting.name, "search_score": score, "device": trained.device},
    )
    state.unlink(missing_ok=True)
    last: EpochRecord | None = trained.epochs[-1] if trained.epochs else None
    # What the model really does once deployed: accuracy with 8- and 4-bit weights, synaptic operations.
    sink.progress("measure", 0, 1, "measuring 8/4-bit accuracy and synaptic operations on the test set", None)
    measured = measure(trained.model, profile, data, seed=eval_seed(spec.seed, spec.epochs), device=trained.device)
    return {
        "accuracy": trained.accuracy,
        "val_accuracy": trained.val_accuracy,
        "firing_rate": last.firing_rate if last else None,
        "checkpoint_bytes": checkpoint.stat().st_size,
        "checkpoint_sha256": sha256_file(checkpoint),
        **measured,
    }


def _study(
    spec: RunSpec, setting: Setting, profile, data: ImageData, scored: list[dict], folder: Path, sink: Sink
) -> dict | None:
    """Train a study's planned cells, one (cell, seed) at a time, each recorded as soon as it is trained.

    The plan depends only on the scored candidates and the seed, so a resumed job trains the same cells; a
    sampled cell the search did not score is scored (as its own candidate index) before it trains, the same on
    every attempt; a training cut short resumes from its own state file. Returns the run's results: the score's
    top cell, its seeds averaged.
    """
    space, design = setting.kernel_set, spec.study
    top = design["top"]
    sample = design.get("sample", max(design.get("trained", 0) - top, MIN_POINTS))  # a study of an earlier release
    cells = plan(
        space, scored, sample=sample, top=top, seeds=design["seeds"], seed=spec.seed, paired=design.get("paired", False)
    )
    todo = trainings(cells)
    results = {(r["genotype"], r["seed"]): r for r in spec.trained}
    folder.mkdir(parents=True, exist_ok=True)
    eta = _Eta(sum((c.genotype, s) in results for c, s in todo))
    scorer = None
    for n, (cell, seed) in enumerate(todo):
        if (cell.genotype, seed) in results:
            continue
        genotype = Genotype.from_str(cell.genotype)
        if cell.score is None:
            if scorer is None:
                config = replace(profile.score, precision=spec.precision)
                scorer = Scorer(space, profile, data, seed=spec.seed, device=spec.device, config=config)
            cell = replace(
                cell,
                score=scorer.score(genotype, cell.candidate)[0],
                params=footprint(genotype, space, profile, data.info).params,
            )
        what = f"cell {n + 1}/{len(todo)} ({cell.role}, score {cell.score:.2f}, seed {seed})"

        def progress(epoch: int, batch: int, batches: int, loss: float, accuracy: float, _n=n, _what=what) -> None:
            note = f"{_what}: epoch {epoch}/{spec.epochs}, batch {batch}/{batches}, loss {loss:.3f}"
            sink.progress("train", _n, len(todo), note, eta(_n, len(todo)))

        sink.progress("train", n, len(todo), what, eta(n, len(todo)))
        config = TrainConfig(  # evaluated once, at the end: a study records only where each training ends
            epochs=spec.epochs,
            batch_size=profile.batch_size,
            seed=seed,
            device=spec.device,
            precision=spec.precision,
            eval_every=spec.epochs,
        )
        state = folder / f"study-{cell.candidate}-{seed}.pt"
        trained = train(
            genotype,
            space,
            profile,
            data,
            config,
            state_path=state,
            progress=progress,
            should_stop=sink.should_stop,
        )
        if trained.stopped:
            return None
        last = trained.epochs[-1]
        row = {
            "genotype": cell.genotype,
            "seed": seed,
            "role": cell.role,
            "sampled": int(cell.sampled),
            "candidate": cell.candidate,
            "score": cell.score,
            "conv_edges": cell.conv_edges,
            "params": cell.params,
            "accuracy": trained.accuracy,
            "val_accuracy": getattr(trained, "val_accuracy", None),
            "train_accuracy": last.train_accuracy,
            "firing_rate": last.firing_rate,
            "seconds": sum(e.seconds for e in trained.epochs),
        }
        sink.trained_cell(row)
        results[(cell.genotype, seed)] = row
        state.unlink(missing_ok=True)
    pick = cells[0]
    return {"accuracy": sum(results[(pick.genotype, s)]["accuracy"] for s in pick.seeds) / len(pick.seeds)}
