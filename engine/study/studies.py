"""A study: does the training-free score pick good cells, and do larger kernels help?

The design, per kernel set:

- the search scores ``cells`` candidates as the paper's does (or every distinct cell, ``exhaustive``); its
  ``top`` distinct cells by score are trained: the first is the search's pick;
- a uniform random sample of ``sample`` distinct canonical cells, drawn from the whole space by the kernel
  set's own stream (or, ``paired``, one draw shared by every kernel set, so each genotype is trained with each
  set's kernels), is scored and trained: the correlation between score and accuracy is about this sample alone,
  so it estimates the space's, never mixing in the score's extremes;
- every trained cell gets the same ``seeds`` training seeds, so the pick is compared with the sample at equal
  noise, and the sample's seeds split accuracy's variance between cells and seeds.

``report`` turns the stored rows into the statistics of ``engine.study.statistics`` (imported there: scipy
loads only when a report is computed). Plain values only: the dashboard reads reports without torch.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.core.seeds import StudyStream, derive_seed
from engine.core.space import Genotype, Space
from engine.study.estimates import (
    MIN_POINTS,
    RESAMPLES,
    Difference,
    Estimate,
    PickQuality,
    Reliability,
    Summary,
    detectable_correlation,
)

ROLES = ("top", "random", "spread")  # why a cell was trained ("spread": a study of an earlier release)
SAMPLE_INDEX = 1 << 40  # sampled cells are scored as candidates from this index on, apart from the search's
SIMULATED_SEARCHES = 20  # random searches replayed over an exhaustive run's scores, per size
SEARCH_SIZES = (1000, 5000)  # the paper's iterations per kernel set and its baseline's
MAX_SEEDS = 100  # training seeds per cell: beyond this the seeds' spread is known far better than it matters
NO_SUMMARY = Summary(math.nan, math.nan, 0, math.nan, math.nan)  # a kernel set with nothing trained yet


@dataclass(frozen=True)
class StudyConfig:
    """One study: per kernel set, ``cells`` searched and their ``top`` trained, plus a uniform ``sample`` of
    distinct cells; every trained cell trained with ``seeds`` seeds for ``epochs``."""

    dataset: str = "sample"
    kernel_sets: tuple[str, ...] = ("1x1_3x3", "3x3_5x5", "5x5_7x7")
    cells: int = 100
    exhaustive: bool = False
    sample: int = 32
    top: int = 3
    seeds: int = 2
    paired: bool = False
    profile: str = "laptop"
    epochs: int | None = None  # None: the profile's
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    in_flight: int = 1  # candidates scored at once (``engine.search.inflight``)
    name: str = ""


def check_counts(cells, sample, top, seeds) -> dict[str, str]:
    """The study's own limits, by field (the fields it shares with an experiment are checked as there)."""
    errors: dict[str, str] = {}
    for name, value in dict(cells=cells, sample=sample, top=top, seeds=seeds).items():
        if isinstance(value, bool) or not isinstance(value, int):
            errors[name] = f"{name} must be a whole number"
    if errors:
        return errors
    if top < 1:
        errors["top"] = "train at least the score's top cell (top >= 1)"
    if not 1 <= seeds <= MAX_SEEDS:
        errors["seeds"] = f"seeds must be from 1 to {MAX_SEEDS} (every trained cell is trained once per seed)"
    if sample < MIN_POINTS:
        errors["sample"] = f"sample at least {MIN_POINTS} cells: a rank correlation of fewer says nothing"
    if cells < top:
        errors["cells"] = f"score at least as many cells ({cells}) as the top cells trained ({top})"
    return errors


def trainings_per_kernel_set(config: StudyConfig) -> int:
    """At most this many trainings per kernel set (fewer where a top cell is also in the sample)."""
    return (config.top + config.sample) * config.seeds


def design_power(config: StudyConfig) -> float:
    """The smallest correlation each kernel set's sample detects with 80 % power (two-sided, 5 %)."""
    return detectable_correlation(config.sample)


# ------------------------------------------------------------------------------------------ plan


def _space_key(space: Space) -> int:
    """A kernel set's own stream key, stable across releases and machines (Python's hash is neither)."""
    return int.from_bytes(hashlib.sha256(space.name.encode()).digest()[:8], "big") >> 1


def sample_cells(space: Space, seed: int, count: int, *, paired: bool = False) -> list[Genotype]:
    """``count`` distinct canonical cells drawn uniformly without replacement from the whole space: from the
    kernel set's own stream, or with ``paired`` from one stream shared by every kernel set (spaces with the same
    cells then draw the same genotypes)."""
    distinct = space.distinct_cells()
    if not 0 <= count <= len(distinct):
        raise ValueError(f"a sample of {count} cells from {len(distinct):,} distinct ones")
    key = derive_seed(seed, StudyStream.SAMPLE) if paired else derive_seed(seed, StudyStream.SAMPLE, _space_key(space))
    return [distinct[i] for i in np.random.default_rng(key).choice(len(distinct), size=count, replace=False)]


@dataclass(frozen=True)
class PlannedCell:
    """A cell to train, why (``role``, ``sampled``) and under which seeds. A sampled cell the search did not
    score has no ``score`` or ``params`` yet: the job scores it (as candidate ``candidate``) when it trains it."""

    candidate: int  # its index among the scored candidates (the first, for a cell scored twice), or SAMPLE_INDEX + k
    genotype: str  # canonical
    score: float | None
    conv_edges: int
    params: int | None
    role: str  # "top" or "random"
    sampled: bool  # in the uniform sample (a top cell may be too)
    seeds: tuple[int, ...]


def plan(
    space: Space, candidates: Sequence[dict], *, sample: int, top: int, seeds: int, seed: int, paired: bool = False
) -> list[PlannedCell]:
    """The cells to train: the ``top`` distinct cells of the scored ``candidates`` (dicts with index, genotype,
    score, conv_edges, params; the highest scores, earliest first on a tie), then the uniform sample's others.
    Relabelled copies are one cell (canonical forms). The same inputs give the same plan, so a resumed study
    trains the same cells."""
    training_seeds = tuple(range(seed, seed + seeds))
    drawn = [g.to_str() for g in sample_cells(space, seed, sample, paired=paired)]
    in_sample = set(drawn)
    best: dict[str, dict] = {}
    for c in sorted(candidates, key=lambda c: (-c["score"], c["index"])):
        best.setdefault(space.canonical(Genotype.from_str(c["genotype"])).to_str(), c)
    cells = [
        PlannedCell(
            c["index"],
            genotype,
            float(c["score"]),
            int(c["conv_edges"]),
            int(c["params"]),
            "top",
            genotype in in_sample,
            training_seeds,
        )
        for genotype, c in itertools.islice(best.items(), top)
    ]
    topped = {c.genotype for c in cells}
    cells += [
        PlannedCell(
            SAMPLE_INDEX + k,
            genotype,
            None,
            space.conv_edges(Genotype.from_str(genotype)),
            None,
            "random",
            True,
            training_seeds,
        )
        for k, genotype in enumerate(drawn)
        if genotype not in topped
    ]
    return cells


def trainings(cells: Sequence[PlannedCell]) -> list[tuple[PlannedCell, int]]:
    """Every (cell, seed) training, in the order they run: every cell with the first seed, then the next seed..."""
    return [
        (c, s) for i in range(max((len(c.seeds) for c in cells), default=0)) for c in cells for s in c.seeds[i : i + 1]
    ]


# ---------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class SearchRegret:
    """Random searches of ``iterations`` candidates replayed over an exhaustive run's scores: how far the
    pick's score falls below the true top score, and how often the pick is the true top-1 cell."""

    iterations: int
    searches: int
    found_top1: float  # fraction of searches whose pick is the exhaustive top-1 cell
    score_gap: float  # mean (top score - pick's score)
    percentile: float  # mean share of all distinct cells scoring below the pick


@dataclass(frozen=True)
class KernelSetReport:
    """One kernel set: the score against accuracy over its uniform sample, and its pick against the sample."""

    kernel_set: str
    scored: int  # candidates the search scored
    sampled: int  # cells of the uniform sample trained so far (the correlations' n)
    detectable: float  # the smallest correlation this many cells detect with 80 % power
    spearman: Estimate  # score against accuracy (seed means): BCa interval, permutation p
    kendall: Estimate  # tau-b, scipy's p
    baselines: dict[str, Estimate]  # what counting alone gives: "conv edges", "parameters"
    versus: dict[str, Estimate]  # the score's Spearman minus each baseline's, paired interval
    partial: Estimate  # the score's Spearman with conv edges held fixed
    reliability: Reliability  # seeds against cells, and the ceiling on any correlation
    top1: Summary  # the pick (the score's top cell) over its seeds
    pick: PickQuality | None  # the pick against the sample, over the seeds both have
    search_regret: list[SearchRegret] = field(default_factory=list)


@dataclass(frozen=True)
class StudyReport:
    kernel_sets: list[KernelSetReport]
    pooled: Estimate  # every kernel set's sample, ranked within its set, resampled by genotype
    shared: int  # genotypes sampled in more than one kernel set
    differences: list[Difference]  # mean accuracy between kernel sets, over their samples, at shared seeds
    cells: list[dict]  # one row per trained cell: kernel set, genotype, role, sampled, score, accuracies...
    by_edges: list[dict]  # the samples' accuracy by kernel set at equal conv-edge count

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(value):
    """JSON-ready: NaN becomes None, dict keys become text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    return float(np.mean(values)) if values and all(v is not None for v in values) else None


def _cell_rows(trained_rows: Sequence[dict]) -> list[dict]:
    """Trained (cell, seed) rows folded into one row per cell of a kernel set, accuracies averaged over seeds."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in trained_rows:
        grouped[(r["kernel_set"], r["genotype"])].append(r)
    cells = []
    for (kernel_set, genotype), rows in grouped.items():
        rows = sorted(rows, key=lambda r: r["seed"])
        first = rows[0]
        accuracies = [r["accuracy"] for r in rows]
        cells.append(
            {
                "kernel_set": kernel_set,
                "genotype": genotype,
                "role": first["role"],
                "sampled": bool(first.get("sampled", first["role"] == "random")),
                "candidate": first["candidate"],
                "score": first["score"],
                "conv_edges": first["conv_edges"],
                "params": first["params"],
                "accuracy": float(np.mean(accuracies)),
                "val_accuracy": _mean_or_none([r.get("val_accuracy") for r in rows]),
                "seeds": len(rows),
                "seed_list": [r["seed"] for r in rows],
                "accuracies": accuracies,
                "val_accuracies": [r.get("val_accuracy") for r in rows],
            }
        )
    return sorted(cells, key=lambda c: (c["kernel_set"], c["role"] != "top", -c["score"], c["candidate"]))


@functools.cache
def replayed_cells(space: Space, seed: int, size: int) -> tuple[str, ...]:
    """The canonical cells a random search of ``seed`` proposes first, ``size`` of them (kept: a report is
    recomputed as a study goes on, and canonical forms cost more than the lookups)."""
    return tuple(space.canonical(g).to_str() for g in itertools.islice(space.random_cells(seed), size))


def search_regret(
    space: Space, scores: dict[str, float], sizes: Sequence[int] = SEARCH_SIZES, searches: int = SIMULATED_SEARCHES
) -> list[SearchRegret]:
    """Random searches replayed over every distinct cell's score (canonical genotype -> score): each seed's
    sampled cells, in the search's order, are looked up instead of scored."""
    if not scores:
        return []
    ranked = np.sort(np.fromiter(scores.values(), float))
    top = ranked[-1]
    out = []
    for size in sizes:
        found, gaps, percentiles = [], [], []
        for s in range(searches):
            pick = max(scores.get(cell, -math.inf) for cell in replayed_cells(space, s, max(sizes))[:size])  # a prefix
            found.append(pick == top)
            gaps.append(top - pick)
            percentiles.append(np.searchsorted(ranked, pick, side="left") / len(ranked))
        out.append(
            SearchRegret(size, searches, float(np.mean(found)), float(np.mean(gaps)), float(np.mean(percentiles)))
        )
    return out


def _canonical_scores(space: Space, scored: Sequence[dict]) -> dict[str, float]:
    return {space.canonical(Genotype.from_str(c["genotype"])).to_str(): c["score"] for c in scored}


def _at_seeds(cell: dict, seeds: set[int], key: str = "accuracies") -> float | None:
    values = [v for s, v in zip(cell["seed_list"], cell[key]) if s in seeds]
    return float(np.mean(values)) if values and all(v is not None for v in values) else None


def _pick_quality(stats, pick: dict | None, sample: list[dict]) -> PickQuality | None:
    """The pick against the sample over the seeds the pick and every sampled cell have (noise-matched)."""
    if pick is None or not sample:
        return None
    common = set(pick["seed_list"]).intersection(*(c["seed_list"] for c in sample))
    if not common:
        return None
    validation = [_at_seeds(c, common, "val_accuracies") for c in sample]
    return stats.pick_quality(
        _at_seeds(pick, common), [_at_seeds(c, common) for c in sample], validation if None not in validation else None
    )


def _kernel_set_report(
    stats, run: dict, mine: list[dict], scored: Sequence[dict], seed: int, resamples: int, exhaustive: bool
) -> KernelSetReport:
    space = Space.parse(run["kernel_set"])
    sample = [c for c in mine if c["sampled"]]
    score = [c["score"] for c in sample]
    accuracy = [c["accuracy"] for c in sample]
    edges = [c["conv_edges"] for c in sample]
    params = [c["params"] for c in sample]
    options = dict(seed=seed, resamples=resamples)
    pick = next((c for c in mine if c["role"] == "top"), None)
    return KernelSetReport(
        kernel_set=space.name,
        scored=len(scored),
        sampled=len(sample),
        detectable=detectable_correlation(len(sample)),
        spearman=stats.spearman(score, accuracy, **options),
        kendall=stats.kendall(score, accuracy),
        baselines={
            "conv edges": stats.spearman(edges, accuracy, **options),
            "parameters": stats.spearman(params, accuracy, **options),
        },
        versus={
            "conv edges": stats.correlation_difference(score, edges, accuracy, **options),
            "parameters": stats.correlation_difference(score, params, accuracy, **options),
        },
        partial=stats.partial_spearman(score, accuracy, edges, **options),
        reliability=stats.reliability([c["accuracies"] for c in sample]),
        top1=stats.summarise(pick["accuracies"]) if pick else NO_SUMMARY,
        pick=_pick_quality(stats, pick, sample),
        search_regret=search_regret(space, _canonical_scores(space, scored)) if exhaustive else [],
    )


def _differences(stats, cells: list[dict], order: list[str], seed: int, resamples: int) -> list[Difference]:
    """Each pair of kernel sets: paired over the genotypes both sampled (where at least 3), otherwise independent;
    always at the seeds both sides were trained with. A seed shifts every cell's accuracy alike (its data order),
    so a set still missing a seed compared with another set's mean over both would carry half that shift."""
    samples = {k: {c["genotype"]: c for c in cells if c["kernel_set"] == k and c["sampled"]} for k in order}
    out = []
    for first, second in itertools.combinations(order, 2):
        a, b = samples[first], samples[second]
        shared = [g for g in a if g in b]
        paired = len(shared) >= MIN_POINTS
        if paired:
            pairs = [(a[g], b[g], set(a[g]["seed_list"]) & set(b[g]["seed_list"])) for g in shared]
            pairs = [(x, y, seeds) for x, y, seeds in pairs if seeds]
            xs = [_at_seeds(x, seeds) for x, _, seeds in pairs]
            ys = [_at_seeds(y, seeds) for _, y, seeds in pairs]
            first_params, second_params = [x["params"] for x, _, _ in pairs], [y["params"] for _, y, _ in pairs]
        else:
            both = [*a.values(), *b.values()]
            seeds = set.intersection(*(set(c["seed_list"]) for c in both)) if both else set()
            xs = [_at_seeds(c, seeds) for c in a.values()] if seeds else []
            ys = [_at_seeds(c, seeds) for c in b.values()] if seeds else []
            first_params, second_params = [c["params"] for c in a.values()], [c["params"] for c in b.values()]
        if not xs or not ys:
            continue
        difference = stats.mean_difference(xs, ys, paired=paired, seed=seed, resamples=resamples)
        ratio = float(np.mean(second_params) / np.mean(first_params))
        # Does a cell that trains well with one kernel pair train well with the other? Only pairs can say.
        agreement = stats.spearman(xs, ys, seed=seed, resamples=resamples) if paired else Estimate.undefined(0)
        out.append(Difference(first, second, paired, difference, ratio, agreement))
    return out


def report(
    runs: Sequence[dict],
    trained_rows: Sequence[dict],
    candidates: dict[int, Sequence[dict]],
    *,
    exhaustive: bool = False,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> StudyReport:
    """The study's statistics from its stored rows.

    Args:
        runs: one per kernel set (``id``, ``kernel_set``).
        trained_rows: one per (cell, seed) trained, with ``kernel_set``, ``genotype``, ``role``, ``sampled``,
            ``candidate``, ``score``, ``conv_edges``, ``params``, ``seed``, ``accuracy``, ``val_accuracy``.
        candidates: each run's scored candidates (``genotype``, ``score``), by run id.
        exhaustive: the runs scored every distinct cell, so random searches can be replayed over them.
    """
    from engine.study import statistics as stats  # scipy: loaded when a report is computed, not with the pages

    cells = _cell_rows(trained_rows)
    order = [Space.parse(r["kernel_set"]).name for r in runs]
    per_set = [
        _kernel_set_report(
            stats,
            run,
            [c for c in cells if c["kernel_set"] == name],
            candidates.get(run["id"], []),
            seed,
            resamples,
            exhaustive,
        )
        for run, name in zip(runs, order)
    ]
    sample = [c for c in cells if c["sampled"]]
    pooled = stats.pooled_spearman(
        [c["score"] for c in sample],
        [c["accuracy"] for c in sample],
        [c["kernel_set"] for c in sample],
        [c["genotype"] for c in sample],
        seed=seed,
        resamples=resamples,
    )
    sets_of: dict[str, set[str]] = defaultdict(set)
    for c in sample:
        sets_of[c["genotype"]].add(c["kernel_set"])
    by_edges = [
        {"kernel_set": k, "conv_edges": e, **asdict(stats.summarise(v))}
        for (k, e), v in sorted(_grouped(sample, lambda c: (c["kernel_set"], c["conv_edges"])).items())
    ]
    return StudyReport(
        kernel_sets=per_set,
        pooled=pooled,
        shared=sum(len(s) > 1 for s in sets_of.values()),
        differences=_differences(stats, cells, order, seed, resamples),
        cells=cells,
        by_edges=by_edges,
    )


def _grouped(cells: Sequence[dict], key) -> dict:
    groups: dict = defaultdict(list)
    for c in cells:
        groups[key(c)].append(c["accuracy"])
    return groups
