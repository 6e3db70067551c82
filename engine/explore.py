"""The SpiKernel methodology in one call: per setting search, train the best cell, save it; then Alg. 1.

Everything lands in an output folder, one sub-folder per setting::

    out/config.json                    the exploration's arguments (a rerun must match them)
    out/<setting>/search.json          candidates so far ("complete": false while searching)
    out/<setting>/train-state.pt       resume state after each epoch
    out/<setting>/model.safetensors    the trained model (written last, atomically)
    out/<setting>/result.json          the setting's row of the results table
    out/results.csv, out/results.json  the table of the paper and Alg. 1's choice

A rerun with the same folder skips what is done and resumes what is not.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .checkpoint import save_trained
from .data import ImageData, load_dataset
from .devices import resolve_device
from .memory import footprint
from .profiles import Profile, get_profile
from .search import Candidate, random_search
from .space import Setting
from .train import TrainConfig, train

SAVE_EVERY_S = 5.0


def write_text(path: Path, text: str) -> None:
    """Write to a temporary name, then rename: a kill never leaves half a file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, payload) -> None:
    write_text(path, json.dumps(payload, indent=1) + "\n")


@dataclass(frozen=True)
class ExploreConfig:
    dataset: str
    settings: tuple[str, ...]  # like "3x3_5x5_1000x"
    profile: str
    epochs: int
    baseline: str | None = None  # the setting speed-ups are measured against
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"

    def all_settings(self) -> list[Setting]:
        """The settings in order, the baseline first when it is not already listed; validated."""
        names = list(dict.fromkeys(self.settings))
        if not names:
            raise ValueError("give at least one kernel set")
        if self.baseline and self.baseline not in names:
            names.insert(0, self.baseline)
        return [Setting.parse(n) for n in names]


@dataclass
class SettingResult:
    """One row of the paper's table."""

    setting: str
    kernel_set: str
    iterations: int
    genotype: str
    best_score: float
    search_seconds: float
    params: int
    params_torch: int
    accuracy: float | None
    epochs: int
    train_seconds: float
    checkpoint: str
    speedup: float | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def memory_mb(self) -> float:
        """fp32 memory of the Eq. 2-3 parameters, in MB."""
        return self.params * 4 / 1e6


@dataclass
class ExploreResult:
    rows: list[SettingResult]
    stopped: bool = False


@dataclass(frozen=True)
class _Work:
    """What every setting of one exploration shares."""

    profile: Profile
    data: ImageData
    device: torch.device


class Reporter:
    """Progress of an exploration; the command line draws bars from it. The default says nothing."""

    def stage(self, setting: str, stage: str, total: int, done: int = 0) -> None: ...

    def advance(self, done: int, note: str = "") -> None: ...

    def finished(self, row: SettingResult) -> None: ...


def _search(setting: Setting, folder: Path, cfg: ExploreConfig, work: _Work, rep: Reporter, stop) -> tuple[list, float]:
    """Search one setting, resuming from ``search.json``; returns (candidates, seconds) or ([], s) if stopped."""
    path = folder / "search.json"
    previous = json.loads(path.read_text()) if path.exists() else {"complete": False, "seconds": 0.0, "candidates": []}
    candidates = [Candidate.from_dict(c) for c in previous["candidates"]]
    if previous["complete"]:
        return candidates, previous["seconds"]
    spent, started, last_save = previous["seconds"], time.perf_counter(), time.monotonic()

    def save(complete: bool) -> None:
        payload = {"setting": setting.name, "complete": complete, "seconds": spent + time.perf_counter() - started}
        write_json(path, {**payload, "candidates": [c.to_dict() for c in candidates]})

    def record(candidate: Candidate) -> None:
        nonlocal last_save
        candidates.append(candidate)
        if time.monotonic() - last_save > SAVE_EVERY_S:
            save(False)
            last_save = time.monotonic()

    rep.stage(setting.name, "search", setting.iterations, len(candidates))
    result = random_search(
        setting.kernel_set,
        work.profile,
        work.data,
        setting.iterations,
        seed=cfg.seed,
        device=work.device,
        progress=lambda n, _t, best: rep.advance(n, f"best score {best.score:.3f}"),
        on_candidate=record,
        should_stop=stop,
        done=list(candidates),
    )
    save(not result.stopped)
    return ([] if result.stopped else candidates), spent + time.perf_counter() - started


def _train(setting: Setting, folder: Path, best: Candidate, cfg: ExploreConfig, work: _Work, rep: Reporter, stop):
    tcfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, device=cfg.device, precision=cfg.precision)
    rep.stage(setting.name, "train", cfg.epochs)

    def progress(epoch, batch, batches, loss, acc):
        rep.advance(epoch - 1, f"epoch {epoch} batch {batch}/{batches} loss {loss:.3f} acc {acc:.1%}")

    result = train(
        best.genotype,
        setting.kernel_set,
        work.profile,
        work.data,
        tcfg,
        state_path=folder / "train-state.pt",
        progress=progress,
        should_stop=stop,
    )
    rep.advance(len(result.epochs))
    return result


def explore(
    cfg: ExploreConfig,
    out: Path,
    *,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExploreResult:
    """Run (or resume) an exploration into ``out``."""
    rep = reporter or Reporter()
    settings = cfg.all_settings()
    profile = get_profile(cfg.profile)
    out = Path(out)
    config_path = out / "config.json"
    arguments = json.loads(json.dumps(asdict(cfg)))
    if config_path.exists() and json.loads(config_path.read_text()) != arguments:
        raise ValueError(f"{out} holds an exploration with other arguments ({config_path}); use another --out folder")
    work = _Work(profile, load_dataset(cfg.dataset), resolve_device(cfg.device))
    write_json(config_path, arguments)
    rows: list[SettingResult] = []
    for setting in settings:
        folder = out / setting.name
        result_path = folder / "result.json"
        if result_path.exists():
            rows.append(SettingResult(**json.loads(result_path.read_text())))
            rep.finished(rows[-1])
            continue
        candidates, search_seconds = _search(setting, folder, cfg, work, rep, should_stop)
        if not candidates:
            return ExploreResult(rows, stopped=True)
        best = max(candidates, key=lambda c: c.score)
        trained = _train(setting, folder, best, cfg, work, rep, should_stop)
        if trained.stopped:
            return ExploreResult(rows, stopped=True)
        fp = footprint(best.genotype, setting.kernel_set, profile, work.data.info)
        checkpoint = folder / "model.safetensors"
        save_trained(
            checkpoint,
            trained.model,
            genotype=best.genotype,
            kernel_set=setting.kernel_set,
            profile=profile,
            info=work.data.info,
            accuracy=trained.accuracy,
            seed=cfg.seed,
            epochs=cfg.epochs,
            extra={"setting": setting.name, "search_score": best.score, "device": str(work.device)},
        )
        row = SettingResult(
            setting=setting.name,
            kernel_set=setting.kernel_set.name,
            iterations=setting.iterations,
            genotype=best.genotype.to_str(),
            best_score=best.score,
            search_seconds=search_seconds,
            params=fp.params,
            params_torch=fp.params_torch,
            accuracy=trained.accuracy,
            epochs=len(trained.epochs),
            train_seconds=sum(e.seconds for e in trained.epochs),
            checkpoint=str(checkpoint.relative_to(out)),
            history=[asdict(e) for e in trained.epochs],
        )
        write_json(result_path, asdict(row))
        (folder / "train-state.pt").unlink(missing_ok=True)
        rows.append(row)
        rep.finished(row)
    add_speedups(rows, cfg.baseline)
    write_results(out, rows, profile)
    return ExploreResult(rows)


def add_speedups(rows: list[SettingResult], baseline: str | None) -> None:
    """Search speed-up of each setting over the baseline setting's search time."""
    base = next((r for r in rows if r.setting == baseline), None)
    for r in rows:
        r.speedup = base.search_seconds / r.search_seconds if base and r.search_seconds > 0 else None


TABLE_COLUMNS = [
    "setting", "kernel_set", "iterations", "accuracy", "params", "memory_mb", "search_seconds", "speedup",
    "best_score", "genotype", "checkpoint",
]  # fmt: skip


def write_results(out: Path, rows: list[SettingResult], profile: Profile) -> None:
    """The table as JSON and CSV; both say which profile made it and whether it is a reduced one."""
    label = {"profile": profile.name, "reduced_profile": profile.reduced}
    write_json(out / "results.json", {**label, "rows": [asdict(r) for r in rows]})
    tmp = out / ".results.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*TABLE_COLUMNS, *label])
        writer.writeheader()
        writer.writerows({**{c: getattr(r, c) for c in TABLE_COLUMNS}, **label} for r in rows)
    os.replace(tmp, out / "results.csv")


def load_results(out: Path) -> list[SettingResult]:
    """The finished rows of an exploration folder (for re-selection without recomputing)."""
    path = Path(out) / "results.json"
    if not path.exists():
        raise ValueError(f"{out} has no results.json: run `python -m engine explore --out {out}` first")
    names = {f.name for f in fields(SettingResult)}
    return [SettingResult(**{k: v for k, v in r.items() if k in names}) for r in json.loads(path.read_text())["rows"]]
