"""Benchmark ground truth: SpikeNAS-Bench's 15,625 trained SNNs, and what a training-free proxy is worth on them.

SpikeNAS-Bench trained every raw cell of SNASNet's forward-cell space (``space.SPIKENAS``: zero, skip and a
3x3 convolution behind LIFs of threshold 0.5, 1.0 or 1.5) for 100 epochs on CIFAR-10 (200 for 690 of them)
and published each network's record. ``read_published`` reads that layout, ``save``/``load`` keep the figures
in one compact file (the project ships CIFAR-10's in ``data/benchmarks/``), and a search or study over the
benchmarked space looks accuracy up instead of training: validation accuracy to choose on (the second half of
CIFAR-10's training set), test accuracy to report (the 10,000 test images).

The benchmark's id is its six op codes in base 5, least significant first, over the edges (0,1), (0,2),
(0,3), (1,2), (1,3), (2,3): not the engine's edge order (``space.EDGES``).

The statistics at the end compare proxies over thousands of cells: scipy's O(n log n) Kendall, intervals
from the Fisher transform with the Bonett-Wright (Spearman) and Fieller (Kendall) standard errors (a
bootstrap of 15,625 cells would cost minutes per proxy and say the same at this size), and random searches
replayed by the thousand with numpy. A proxy's ties count as random picks among the tied cells: conv edges (and
parameters, a linear function of them) take seven values over 15,625 cells, so any fixed order would decide.
"""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from engine.core.errors import InputError
from engine.core.files import atomic_path
from engine.core.paths import BUNDLED_BENCHMARKS, default_data_root
from engine.core.space import EDGES, SPIKENAS, Genotype, Space

CITATION = (
    'G. Sun, Z. Shang, Y. Li, et al., "SpikeNAS-Bench: Benchmarking NAS Algorithms for Spiking Neural Network '
    'Architecture", IEEE Transactions on Artificial Intelligence 6(6), 2025; records from the repository '
    "tju-sun-lab/SpikeNAS-Bench, folder data/"
)
SOURCE = "SpikeNAS-Bench"
BENCHMARK_PROFILE = "benchmark"  # the profile whose networks are the ones the benchmark trained
FORMAT = 1
CELLS = 5 ** len(EDGES)  # 15,625
FIRING_LAYERS = 16
# Published folder name per engine dataset name (matched without regard to case).
FOLDERS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "tinyimagenet": "TinyImagenet"}
# Datasets whose networks the benchmark's records describe: the bundled sample is a CIFAR-10 subset.
RECORDS_OF = {"sample": "cifar10", "cifar10": "cifar10", "cifar100": "cifar100", "tinyimagenet": "tinyimagenet"}
BUNDLED = BUNDLED_BENCHMARKS
# The benchmark's edge order, as positions in the engine's ``EDGES``.
_BENCH_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_TO_ENGINE = tuple(_BENCH_EDGES.index(e) for e in EDGES)


class BenchmarkError(InputError):
    """A benchmark file that is missing, malformed or disagrees with the engine."""


def ids_to_ops(bench_id: int) -> tuple[int, ...]:
    """The benchmark id's op codes in the engine's edge order (``14067 -> (2, 3, 2, 2, 2, 4)``)."""
    if not 0 <= bench_id < CELLS:
        raise BenchmarkError(f"benchmark id {bench_id} is outside 0..{CELLS - 1}")
    digits = [(bench_id // 5**i) % 5 for i in range(len(EDGES))]
    return tuple(digits[i] for i in _TO_ENGINE)


def ops_to_id(ops: tuple[int, ...]) -> int:
    """The inverse of ``ids_to_ops``."""
    digits = [0] * len(EDGES)
    for engine_pos, bench_pos in enumerate(_TO_ENGINE):
        digits[bench_pos] = ops[engine_pos]
    if any(not 0 <= d < 5 for d in digits):
        raise BenchmarkError(f"op codes {ops} are not a SpikeNAS-Bench cell (codes 0 to 4)")
    return sum(d * 5**i for i, d in enumerate(digits))


@dataclass(frozen=True)
class Record:
    """One network's published figures (accuracies in percent)."""

    id: int
    params: int
    epochs: int
    final_val: float
    test_acc: float
    train_acc: float


@dataclass(frozen=True, eq=False)
class Records:
    """Every published network of one dataset, sorted by id (arrays of equal length)."""

    dataset: str
    ids: np.ndarray  # int32
    params: np.ndarray  # int64
    val_acc: np.ndarray  # float32 [n, max epochs], percent, NaN past a network's last epoch
    epochs: np.ndarray  # int16
    test_acc: np.ndarray  # float32, percent
    train_acc: np.ndarray  # float32, percent, last epoch
    firing: np.ndarray  # float32 [n, 16], NaN where a layer is absent
    hours: np.ndarray  # float32, training time
    source: str = SOURCE

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def final_val(self) -> np.ndarray:
        return self.val_acc[np.arange(len(self)), self.epochs.astype(np.int64) - 1]

    @property
    def ops(self) -> np.ndarray:
        """[n, 6] op codes in the engine's edge order."""
        digits = (self.ids[:, None] // 5 ** np.arange(len(EDGES))) % 5
        return digits[:, list(_TO_ENGINE)].astype(np.int8)

    @property
    def conv_edges(self) -> np.ndarray:
        return (self.ops >= 2).sum(axis=1)

    def index_of(self, bench_id: int) -> int:
        i = int(np.searchsorted(self.ids, bench_id))
        if i >= len(self) or self.ids[i] != bench_id:
            raise BenchmarkError(f"{self.source} has no {self.dataset} record of network {bench_id}")
        return i

    def row(self, bench_id: int) -> Record:
        i = self.index_of(bench_id)
        return Record(
            int(self.ids[i]),
            int(self.params[i]),
            int(self.epochs[i]),
            float(self.final_val[i]),
            float(self.test_acc[i]),
            float(self.train_acc[i]),
        )


# ------------------------------------------------------------------------------------- the published files


def _dataset_folder(root: Path, dataset: str) -> Path:
    if dataset not in FOLDERS:
        raise BenchmarkError(f"unknown benchmark dataset {dataset!r}; choose one of {', '.join(FOLDERS)}")
    for base in (root, root / "data"):
        if base.is_dir():
            for child in sorted(base.iterdir()):
                if child.is_dir() and child.name.lower() == FOLDERS[dataset].lower():
                    return child
    raise BenchmarkError(
        f"{root} holds no {FOLDERS[dataset]}/ folder (nor data/{FOLDERS[dataset]}/) of <id>/train_process.txt records"
    )


def _numbers(text: str, where: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise BenchmarkError(f"{where}: expected numbers separated by commas, got {text.strip()[:60]!r}") from None
    if count is not None and len(values) != count:
        raise BenchmarkError(f"{where}: expected {count} numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise BenchmarkError(f"{where}: numbers must be finite")
    return values


def _hours(text: str, where: str) -> float:
    m = re.fullmatch(r"\s*([\d.]+)hour([\d.]+)minute([\d.]+)second\s*", text)
    if not m:
        raise BenchmarkError(f"{where}: expected a time like '5.0hour22.0minute58.5second', got {text.strip()[:60]!r}")
    return float(m.group(1)) + float(m.group(2)) / 60 + float(m.group(3)) / 3600


def _parse(path: Path, shown: str, folder_id: int) -> tuple:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchmarkError(f"{shown}: cannot be read ({e.__class__.__name__})") from None

    def field(n: int, label: str) -> str:
        if n >= len(lines) or not lines[n].startswith(f"{label}:"):
            got = repr(lines[n][:60]) if n < len(lines) else "the end of the file"
            raise BenchmarkError(f"{shown}, line {n + 1}: expected '{label}: ...', got {got}")
        return lines[n].split(":", 1)[1]

    file_id = _numbers(field(0, "architecture id"), f"{shown}, line 1", 1)[0]
    if file_id != folder_id:
        raise BenchmarkError(f"{shown}, line 1: architecture id {file_id:g} is not its folder's id {folder_id}")
    params = _numbers(field(1, "model parameters"), f"{shown}, line 2", 1)[0]
    if not lines[2:3] or lines[2].replace(" ", "") != "epoch,train_acc,train_loss,val_acc,val_loss":
        raise BenchmarkError(f"{shown}, line 3: expected the header 'epoch, train_acc, train_loss, val_acc, val_loss'")
    rows, n = [], 3
    while n < len(lines) and re.match(r"\s*[-\d]", lines[n]):  # epoch lines start with their number
        row = _numbers(lines[n], f"{shown}, line {n + 1}", 5)
        if row[0] != len(rows):
            raise BenchmarkError(f"{shown}, line {n + 1}: expected epoch {len(rows)}, got {row[0]:g}")
        if not (0 <= row[1] <= 100 and 0 <= row[3] <= 100):
            raise BenchmarkError(f"{shown}, line {n + 1}: expected accuracies between 0 and 100 %")
        rows.append(row)
        n += 1
    if not rows:
        raise BenchmarkError(f"{shown}, line 4: no epoch lines")
    test = _numbers(field(n, "test accuracy"), f"{shown}, line {n + 1}", 1)[0]
    if not 0 <= test <= 100:
        raise BenchmarkError(f"{shown}, line {n + 1}: expected an accuracy between 0 and 100 %, got {test:g}")
    firing = _numbers(field(n + 1, "firing rate of layers"), f"{shown}, line {n + 2}", FIRING_LAYERS)
    if any(not (0 <= f <= 1 or f == -1) for f in firing):  # the compact file keeps them in thousandths (int16)
        raise BenchmarkError(f"{shown}, line {n + 2}: expected firing rates between 0 and 1, or -1 for an absent layer")
    hours = _hours(field(n + 2, "Elapsed time"), f"{shown}, line {n + 3}")
    epochs = np.asarray(rows, dtype=np.float64)
    return int(params), epochs[:, 3], epochs[-1, 1], test, firing, hours


def read_published(root: Path, dataset: str = "cifar10", progress: Callable[[int, int], None] | None = None) -> Records:
    """Every ``<id>/train_process.txt`` of ``dataset`` under ``root`` (or ``root/data``). A partial copy is
    fine; any file that is missing or malformed is a ``BenchmarkError`` naming it and its line."""
    root = Path(root)
    folder = _dataset_folder(root, dataset)
    entries = []
    for child in folder.iterdir():
        if not child.is_dir():
            continue
        if not re.fullmatch(r"0|[1-9]\d{0,4}", child.name) or int(child.name) >= CELLS:  # "07" would repeat 7
            raise BenchmarkError(f"{child.relative_to(root)}: not a benchmark id (0 to {CELLS - 1})")
        entries.append((int(child.name), child / "train_process.txt"))
    if not entries:
        raise BenchmarkError(f"{folder.relative_to(root) if folder != root else folder}: no <id>/ folders")
    entries.sort()
    parsed = []
    for n, (bench_id, path) in enumerate(entries):
        shown = str(path.relative_to(root))
        if not path.is_file():
            raise BenchmarkError(f"{shown}: missing")
        parsed.append(_parse(path, shown, bench_id))
        if progress is not None and (n % 500 == 0 or n == len(entries) - 1):
            progress(n + 1, len(entries))
    width = max(len(p[1]) for p in parsed)
    val = np.full((len(parsed), width), np.nan, dtype=np.float32)
    for i, p in enumerate(parsed):
        val[i, : len(p[1])] = p[1]
    firing = np.asarray([p[4] for p in parsed], dtype=np.float32)
    firing[firing < 0] = np.nan
    return Records(
        dataset=dataset,
        ids=np.asarray([e[0] for e in entries], dtype=np.int32),
        params=np.asarray([p[0] for p in parsed], dtype=np.int64),
        val_acc=val,
        epochs=np.asarray([len(p[1]) for p in parsed], dtype=np.int16),
        test_acc=np.asarray([p[3] for p in parsed], dtype=np.float32),
        train_acc=np.asarray([p[2] for p in parsed], dtype=np.float32),
        firing=firing,
        hours=np.asarray([p[5] for p in parsed], dtype=np.float32),
    )


def check_params(records: Records, count: Callable[[Genotype], int]) -> list[str]:
    """Each network whose published parameter count differs from ``count`` (the engine's for the same cell),
    as one line each; empty when all agree."""
    wrong = []
    for bench_id, published in zip(records.ids.tolist(), records.params.tolist()):
        ours = count(Genotype(ids_to_ops(bench_id)))
        if ours != published:
            wrong.append(f"network {bench_id}: published {published:,} parameters, the engine counts {ours:,}")
    return wrong


# ---------------------------------------------------------------------------------------- the compact file

# Accuracies are published with three decimals: thousandths of a percent as integers keep them exactly.
_MILLI = 1000
# What ``save`` writes, array by array: ``load`` takes nothing else.
_DTYPES = {
    "ids": np.int32,
    "params": np.int64,
    "epochs": np.int16,
    "val_acc": np.int32,
    "test_acc": np.int32,
    "train_acc": np.int32,
    "firing": np.int16,
    "hours": np.float32,
}


def save(records: Records, path: Path) -> None:
    """One compressed ``.npz`` (no pickles) with the citation and a format version, written atomically."""
    arrays = {
        "format": np.asarray(FORMAT),
        "dataset": np.asarray(records.dataset),
        "citation": np.asarray(CITATION),
        "ids": records.ids,
        "params": records.params,
        "epochs": records.epochs,
        "val_acc": np.where(np.isnan(records.val_acc), -1, np.round(records.val_acc * _MILLI)).astype(np.int32),
        "test_acc": np.round(records.test_acc * _MILLI).astype(np.int32),
        "train_acc": np.round(records.train_acc * _MILLI).astype(np.int32),
        "firing": np.where(np.isnan(records.firing), -1, np.round(records.firing * _MILLI)).astype(np.int16),
        "hours": records.hours,
    }
    arrays = {k: np.asarray(v, dtype=_DTYPES.get(k)) for k, v in arrays.items()}

    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load(path: Path) -> Records:
    """A file written by ``save``; anything else is a ``BenchmarkError`` naming it."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a lone .npy array
            raise ValueError("one array, not an .npz archive")
        with archive:
            data = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise BenchmarkError(f"{path}: not a benchmark file ({e.__class__.__name__}: {str(e)[:80]})") from None
    version = data.get("format")
    known = set(data) == {"format", "dataset", "citation", *_DTYPES} and version.shape == ()
    if not known or version.dtype.kind != "i" or int(version) != FORMAT:
        raise BenchmarkError(f"{path}: not a benchmark file of format {FORMAT}")
    for name, dtype in _DTYPES.items():
        if data[name].dtype != dtype:
            raise BenchmarkError(f"{path}: {name} is stored as {data[name].dtype}, not {np.dtype(dtype)}")
    if data["dataset"].dtype.kind != "U" or data["dataset"].shape != () or str(data["dataset"]) not in FOLDERS:
        raise BenchmarkError(f"{path}: its dataset is not one of {', '.join(FOLDERS)}")
    n = len(data["ids"])
    shapes = {
        "params": (n,),
        "epochs": (n,),
        "test_acc": (n,),
        "train_acc": (n,),
        "hours": (n,),
        "firing": (n, FIRING_LAYERS),
    }
    if any(data[k].shape != s for k, s in shapes.items()) or data["val_acc"].ndim != 2 or len(data["val_acc"]) != n:
        raise BenchmarkError(f"{path}: its arrays disagree in length")
    ids, epochs = data["ids"], data["epochs"]
    if n == 0 or ids.min() < 0 or ids.max() >= CELLS or np.any(np.diff(ids) <= 0):
        raise BenchmarkError(f"{path}: ids must be unique, sorted and within 0..{CELLS - 1}")
    if epochs.min() < 1 or epochs.max() > data["val_acc"].shape[1]:
        raise BenchmarkError(f"{path}: epoch counts do not fit its validation curves")
    val = data["val_acc"].astype(np.float32) / _MILLI
    val[data["val_acc"] < 0] = np.nan
    firing = data["firing"].astype(np.float32) / _MILLI
    firing[data["firing"] < 0] = np.nan
    return Records(
        dataset=str(data["dataset"]),
        ids=ids,
        params=data["params"],
        val_acc=val,
        epochs=epochs,
        test_acc=data["test_acc"].astype(np.float32) / _MILLI,
        train_acc=data["train_acc"].astype(np.float32) / _MILLI,
        firing=firing,
        hours=data["hours"],
    )


def records_file(dataset: str, folder: Path = BUNDLED) -> Path:
    return folder / f"spikenas-{dataset}.npz"


def imported_folder() -> Path:
    """Where ``benchmark import`` writes: ``benchmarks/`` in the data root (the bundled folder by default)."""

    return default_data_root() / "benchmarks"


def find_records(dataset: str) -> Path | None:
    """The records file of ``dataset``: an imported one in the data root first, else the bundled one."""
    for folder in (imported_folder(), BUNDLED):
        if records_file(dataset, folder).is_file():
            return records_file(dataset, folder)
    return None


@cache
def _load_cached(path: Path, mtime: float) -> Records:
    return load(path)


def bundled(dataset: str = "cifar10") -> Records:
    """The records of ``dataset`` (``find_records``; CIFAR-10's ship with the project), cached per process."""
    path = find_records(dataset)
    if path is None:
        raise BenchmarkError(
            f"no {SOURCE} records of {dataset} in {imported_folder()}: import them with "
            f"`python -m engine benchmark import PATH --dataset {dataset}`"
        )
    return _load_cached(path, path.stat().st_mtime)


def benchmark_records(space: Space, dataset: str) -> Records | None:
    """The records a search of ``space`` on ``dataset`` looks its accuracy up in, or None when it trains: only
    SpikeNAS-Bench's space has records, for the datasets it was trained on (the sample is CIFAR-10's)."""
    family = RECORDS_OF.get(dataset) if isinstance(dataset, str) else None
    if space != SPIKENAS or family is None or find_records(family) is None:
        return None
    return bundled(family)


# --------------------------------------------------------------------------------------------- statistics


def _fisher_interval(r: float, se: float) -> tuple[float, float]:
    z = math.atanh(max(min(r, 0.999999), -0.999999))
    return math.tanh(z - 1.959964 * se), math.tanh(z + 1.959964 * se)


def rank_agreement(proxy, accuracy) -> dict:
    """Spearman and Kendall (tau-b) with 95 % intervals: Fisher's z with Bonett-Wright's standard error
    ``sqrt((1 + r^2 / 2) / (n - 3))`` for Spearman and Fieller's ``sqrt(0.437 / (n - 4))`` for Kendall."""
    from scipy import stats

    proxy, accuracy = np.asarray(proxy, dtype=float), np.asarray(accuracy, dtype=float)
    n = len(proxy)
    rho = float(stats.spearmanr(proxy, accuracy).statistic)
    tau = float(stats.kendalltau(proxy, accuracy).statistic)
    nan = (math.nan, math.nan)
    out = {"n": n, "spearman": rho, "kendall": tau, "spearman_ci": nan, "kendall_ci": nan}
    if n > 4 and math.isfinite(rho) and math.isfinite(tau):
        out["spearman_ci"] = _fisher_interval(rho, math.sqrt((1 + rho * rho / 2) / (n - 3)))
        out["kendall_ci"] = _fisher_interval(tau, math.sqrt(0.437 / (n - 4)))
    return out


def _in_top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Per cell, the chance that it is among the ``k`` highest when ties are broken at random."""
    threshold = np.sort(values)[-k]
    above, at = values > threshold, values == threshold
    return np.where(above, 1.0, np.where(at, (k - above.sum()) / at.sum(), 0.0))


def precision_at_k(proxy, accuracy, k: int) -> float:
    """The share of the proxy's top ``k`` cells that are among the ``k`` most accurate, in expectation over
    random tie-breaks: a proxy of few distinct values (conv edges: seven) is not judged by the cells' order."""
    proxy, accuracy = np.asarray(proxy, dtype=float), np.asarray(accuracy, dtype=float)
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    k = min(k, len(proxy))
    return float(_in_top_k(proxy, k) @ _in_top_k(accuracy, k) / k)


def top_kendall(proxy, accuracy, fraction: float = 0.1) -> float:
    """Kendall's tau among the truly best ``fraction`` of the cells: does the proxy order the good ones?"""
    from scipy import stats

    proxy, accuracy = np.asarray(proxy, dtype=float), np.asarray(accuracy, dtype=float)
    keep = np.argsort(-accuracy, kind="stable")[: max(2, int(round(fraction * len(accuracy))))]
    return float(stats.kendalltau(proxy[keep], accuracy[keep]).statistic)


def partial_spearman(proxy, accuracy, control) -> float:
    """Spearman's correlation of proxy and accuracy once the control's ranks are regressed out of both."""
    from scipy import stats

    ranks = [stats.rankdata(np.asarray(v, dtype=float)) for v in (proxy, accuracy, control)]
    c = np.column_stack([np.ones(len(ranks[2])), ranks[2]])
    residuals = [r - c @ np.linalg.lstsq(c, r, rcond=None)[0] for r in ranks[:2]]
    if min(np.std(r) for r in residuals) <= 1e-9 * len(c):  # the control explains it all (parameters by conv edges)
        return math.nan
    return float(np.corrcoef(*residuals)[0, 1])


def random_search_regret(proxy, val_acc, test_acc, iterations: int, searches: int = 1000, *, seed: int = 0) -> dict:
    """The paper's random search replayed ``searches`` times: ``iterations`` cells drawn uniformly with
    replacement, the proxy's argmax picked (the first drawn of equal scores). Regret is the space's best test
    accuracy minus the pick's, in accuracy points; ``oracle`` picks by validation accuracy among the same draws,
    what a perfect proxy would reach with as many iterations."""
    proxy, val, test = (np.asarray(v, dtype=float) for v in (proxy, val_acc, test_acc))
    rng = np.random.default_rng(seed)
    best = test.max()
    picks, oracle = np.empty(searches, dtype=np.int64), np.empty(searches, dtype=np.int64)
    chunk = max(1, 2_000_000 // iterations)  # draws held at once: bounded memory at any size
    for start in range(0, searches, chunk):
        draws = rng.integers(0, len(proxy), size=(min(chunk, searches - start), iterations))
        rows = np.arange(len(draws))
        picks[start : start + len(draws)] = draws[rows, np.argmax(proxy[draws], axis=1)]
        oracle[start : start + len(draws)] = draws[rows, np.argmax(val[draws], axis=1)]
    out = {"iterations": iterations, "searches": searches, "pick_test": float(test[picks].mean())}
    for prefix, chosen in (("", picks), ("oracle_", oracle)):
        regret = best - test[chosen]
        out.update(
            {
                f"{prefix}mean": float(regret.mean()),
                f"{prefix}median": float(np.median(regret)),
                f"{prefix}q05": float(np.quantile(regret, 0.05)),
                f"{prefix}q95": float(np.quantile(regret, 0.95)),
                f"{prefix}found_best": float(np.mean(test[chosen] == best)),
            }
        )
    return out


def exhaustive_regret(proxy, test_acc) -> float:
    """The space's best test accuracy minus that of the proxy's argmax over every cell; where several cells
    share the top score, the mean over them (a random pick among them), not whichever comes first."""
    proxy, test = np.asarray(proxy, dtype=float), np.asarray(test_acc, dtype=float)
    return float(test.max() - test[proxy == proxy.max()].mean())


def proxy_table(
    proxies: dict[str, np.ndarray],
    val_acc,
    test_acc,
    conv_edges,
    *,
    ks=(10, 100),
    searches: int = 1000,
    iterations=(1000, 5000),
    seed: int = 0,
) -> list[dict]:
    """One row per proxy over the same cells: rank agreement with validation accuracy (what a search
    chooses on), precision at each k, Kendall within the top 10 %, the partial Spearman given conv edges,
    and the regret in test accuracy of random searches and of scoring every cell."""
    rows = []
    for name, values in proxies.items():
        row = {"proxy": name, **rank_agreement(values, val_acc)}
        row.update({f"p@{k}": precision_at_k(values, val_acc, k) for k in ks})
        row["top10_kendall"] = top_kendall(values, val_acc)
        row["partial_spearman"] = partial_spearman(values, val_acc, conv_edges)
        row["exhaustive_regret"] = exhaustive_regret(values, test_acc)
        row["searches"] = [
            random_search_regret(values, val_acc, test_acc, n, searches, seed=seed)
            for n in iterations
            if n <= 10 * len(values)
        ]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ reports


@cache
def _canonical_ids() -> tuple[str, ...]:
    """Each benchmark id's canonical cell as text: relabelled twins (nodes 1 and 2 swapped) share one score."""
    return tuple(SPIKENAS.canonical(Genotype(ids_to_ops(i))).to_str() for i in range(CELLS))


@cache
def _proposable() -> np.ndarray:
    """Per id, whether SNASNet's sampler can propose the cell: once pruned, its input still feeds its output."""
    return np.asarray([Genotype(ids_to_ops(i)).pruned().op(0, 3) != 0 for i in range(CELLS)])


def proxies_for(
    records: Records, scored: dict[str, tuple[float, float]], label: str, *, proposable: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The records' rows whose cell was scored, and the proxies on them: the score, the spike activation
    rate at initialisation (LightSNN's SAR), conv edges, parameters, and the score and conv edges combined
    (the mean of their ranks). ``scored`` maps a genotype's text to ``(score, firing rate)``. With
    ``proposable``, only the cells SNASNet's sampler can propose (the population SpiKernel's searches draw from)."""
    from scipy import stats

    canonical = {SPIKENAS.canonical(SPIKENAS.genotype(g)).to_str(): v for g, v in scored.items()}
    names, kept = _canonical_ids(), _proposable()
    rows = np.asarray(
        [
            i
            for i, bench_id in enumerate(records.ids.tolist())
            if names[bench_id] in canonical and (kept[bench_id] or not proposable)
        ]
    )
    if len(rows) < 5:
        raise BenchmarkError(f"only {len(rows)} of the scored cells have {records.source} records; a report needs 5")
    values = np.asarray([canonical[names[records.ids[i]]] for i in rows], dtype=float)
    edges = records.conv_edges[rows].astype(float)
    return rows, {
        f"score ({label})": values[:, 0],
        f"SAR ({label})": values[:, 1],
        "conv edges": edges,
        "parameters": records.params[rows].astype(float),
        f"score + conv edges ({label})": (stats.rankdata(values[:, 0]) + stats.rankdata(edges)) / 2,
    }


def budget_pick(records: Records, rows: np.ndarray, proxy: np.ndarray, budget: float) -> dict:
    """Alg. 1 on the benchmark under a parameter budget: the network chosen on validation accuracy among those
    that fit (what training every cell would give), beside the proxy's own pick among them."""
    fits = records.params[rows] <= budget
    if not fits.any():
        return {"budget": budget, "fits": 0}
    inside = rows[fits]
    best = inside[int(np.argmax(records.final_val[inside]))]
    pick = inside[int(np.argmax(proxy[fits]))]
    return {
        "budget": budget,
        "fits": int(fits.sum()),
        "best": {
            "id": int(records.ids[best]),
            "params": int(records.params[best]),
            "val": float(records.final_val[best]),
            "test": float(records.test_acc[best]),
        },
        "proxy_pick": {
            "id": int(records.ids[pick]),
            "params": int(records.params[pick]),
            "val": float(records.final_val[pick]),
            "test": float(records.test_acc[pick]),
        },
    }


def _number(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def format_table(rows: list[dict]) -> str:
    """Proxy rows as a Markdown table (readable as plain text too), then what a perfect proxy would reach."""
    iterations = sorted({s["iterations"] for r in rows for s in r["searches"]})
    ks = [key for key in rows[0] if key.startswith("p@")] if rows else []
    head = [
        "proxy",
        "cells",
        "Spearman [95 %]",
        "Kendall [95 %]",
        *ks,
        "Kendall top 10 %",
        "partial Spearman (given conv edges)",
        *[f"regret {n}x (mean, q95)" for n in iterations],
        "regret all",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        by_n = {s["iterations"]: s for s in r["searches"]}
        cells = [
            r["proxy"],
            f"{r['n']:,}",
            *[
                f"{_number(r[c], '+.3f')} [{_number(r[c + '_ci'][0], '+.3f')}, {_number(r[c + '_ci'][1], '+.3f')}]"
                for c in ("spearman", "kendall")
            ],
            *[_number(r[k], ".2f") for k in ks],
            _number(r["top10_kendall"], "+.3f"),
            _number(r["partial_spearman"], "+.3f"),
            *[f"{by_n[n]['mean']:.2f}, {by_n[n]['q95']:.2f}" if n in by_n else "–" for n in iterations],
            f"{r['exhaustive_regret']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    oracle = {s["iterations"]: s for r in rows[:1] for s in r["searches"]}  # the same draws for every proxy
    if oracle:
        lines += [
            "",
            "Picking on validation accuracy itself among the same draws (a perfect proxy): regret "
            + ", ".join(f"{s['oracle_mean']:.2f} ({n}x)" for n, s in sorted(oracle.items())),
        ]
    return "\n".join(lines)
