"""A study: does the training-free score pick good cells, and do larger kernels help?

Per kernel set the search scores N cells (sampled, or every distinct cell in a seeded order), then a
stratified subset is trained (``plan``): the score's top cells with several seeds, cells drawn at random
(what "a random cell" means in the regret) and cells spread over the score range and the conv-edge counts
(so the score is tested where it is hard, not only between extremes). ``report`` turns the stored rows
into the statistics of ``engine.study.statistics``. Plain values only: the dashboard reads reports without torch.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.core.space import Space
from engine.study import statistics as stats

ROLES = ("top", "random", "spread")  # why a cell was trained; see ``plan``
SIMULATED_SEARCHES = 20  # random searches replayed over an exhaustive run's scores, per size
SEARCH_SIZES = (1000, 5000)  # the paper's iterations per kernel set and its baseline's
NO_SUMMARY = stats.Summary(math.nan, math.nan, 0, math.nan, math.nan)  # a kernel set with nothing trained yet


@dataclass(frozen=True)
class StudyConfig:
    """One study: ``cells`` scored per kernel set, ``trained`` of them trained for ``epochs``; the ``top``
    cells by score are trained with ``seeds`` seeds each, the others with one."""

    dataset: str = "sample"
    kernel_sets: tuple[str, ...] = ("1x1_3x3", "3x3_5x5", "5x5_7x7")
    cells: int = 100
    exhaustive: bool = False
    trained: int = 12
    top: int = 3
    seeds: int = 2
    profile: str = "laptop"
    epochs: int | None = None  # None: the profile's
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    in_flight: int = 1  # candidates scored at once (``engine.search.inflight``)
    name: str = ""


def check_counts(cells, trained, top, seeds) -> dict[str, str]:
    """The study's own limits, by field (the fields it shares with an experiment are checked as there)."""
    errors: dict[str, str] = {}
    whole = {
        k: isinstance(v, int) and not isinstance(v, bool)
        for k, v in dict(cells=cells, trained=trained, top=top, seeds=seeds).items()
    }
    for name, ok in whole.items():
        if not ok:
            errors[name] = f"{name} must be a whole number"
    if errors:
        return errors
    if top < 1:
        errors["top"] = "train at least the score's top cell (top >= 1)"
    if seeds < 1:
        errors["seeds"] = "seeds must be at least 1 (each top cell is trained once per seed)"
    if trained < top:
        errors["trained"] = f"the trained subset ({trained}) must include the top {top} cells"
    if cells < trained:
        errors["cells"] = f"score at least as many cells ({cells}) as are trained ({trained})"
    return errors


# ------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class PlannedCell:
    """A cell to train, with why (``role``) and under which training seeds."""

    candidate: int  # its index among the scored candidates (the first, for a cell scored twice)
    genotype: str
    score: float
    conv_edges: int
    params: int
    role: str
    seeds: tuple[int, ...]


def plan(candidates: Sequence[dict], *, trained: int, top: int, seeds: int, seed: int) -> list[PlannedCell]:
    """The cells to train from the scored ``candidates`` (dicts with index, genotype, score, conv_edges,
    params): the same list for the same candidates, so a resumed study trains the same cells.

    - ``top``: the highest scores (earliest first on a tie), each with ``seeds`` seeds;
    - ``random``: a third of the rest drawn uniformly (seeded): what the search's pick is compared with;
    - ``spread``: the rest, one per equal-width slice of the remaining cells ordered by score, in each slice
      the cell whose conv-edge count has been picked least, so both the score range and the counts are covered.
    """
    unique: dict[str, dict] = {}
    for c in sorted(candidates, key=lambda c: c["index"]):
        unique.setdefault(c["genotype"], c)
    pool = sorted(unique.values(), key=lambda c: (-c["score"], c["index"]))
    chosen: list[tuple[dict, str]] = [(c, "top") for c in pool[:top]]
    rest = pool[top:]
    wanted = max(0, min(trained, len(pool)) - len(chosen))
    n_random = wanted // 3 if wanted >= 3 else 0
    rng = np.random.default_rng(seed)
    drawn = sorted(rng.choice(len(rest), size=n_random, replace=False).tolist()) if n_random else []
    chosen += [(rest[i], "random") for i in drawn]
    taken = set(drawn)
    rest = [c for i, c in enumerate(rest) if i not in taken]
    n_spread = wanted - n_random
    picked_edges: dict[int, int] = defaultdict(int)
    for b in range(n_spread):
        lo, hi = b * len(rest) // n_spread, (b + 1) * len(rest) // n_spread
        slice_ = rest[lo:hi] or rest[lo : lo + 1]
        middle = (len(slice_) - 1) / 2
        c = min(enumerate(slice_), key=lambda ic: (picked_edges[ic[1]["conv_edges"]], abs(ic[0] - middle), ic[0]))[1]
        picked_edges[c["conv_edges"]] += 1
        chosen.append((c, "spread"))
    return [
        PlannedCell(
            c["index"],
            c["genotype"],
            float(c["score"]),
            int(c["conv_edges"]),
            int(c["params"]),
            role,
            tuple(range(seed, seed + seeds)) if role == "top" else (seed,),
        )
        for c, role in chosen
    ]


def trainings(cells: Sequence[PlannedCell]) -> list[tuple[PlannedCell, int]]:
    """Every (cell, seed) training, in the order they run: all cells once first, then the extra seeds."""
    first = [(c, c.seeds[0]) for c in cells]
    return first + [(c, s) for c in cells for s in c.seeds[1:]]


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
    kernel_set: str
    scored: int
    trained: int  # distinct cells trained
    correlation: stats.Correlation  # score against accuracy (seed means), over the trained cells
    within_edges: stats.Interval  # the same, ranked within equal conv-edge counts and pooled
    by_edges: dict[int, stats.Correlation]
    top1: stats.Summary  # the score's top cell, over its seeds
    regret: stats.Regret | None
    search_regret: list[SearchRegret] = field(default_factory=list)


@dataclass(frozen=True)
class StudyReport:
    kernel_sets: list[KernelSetReport]
    overall: stats.Correlation | None  # every trained cell of every kernel set
    cells: list[dict]  # one row per trained cell: kernel set, genotype, role, score, conv edges, params, accuracies
    by_edges: list[dict]  # accuracy by kernel set at equal conv-edge count
    by_params: list[dict]  # accuracy by kernel set within shared parameter-count bins

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


def _cell_rows(trained_rows: Sequence[dict]) -> list[dict]:
    """Trained (cell, seed) rows folded into one row per cell of a kernel set, accuracy averaged over seeds."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in trained_rows:
        grouped[(r["kernel_set"], r["genotype"])].append(r)
    cells = []
    for (kernel_set, genotype), rows in grouped.items():
        accuracies = [r["accuracy"] for r in sorted(rows, key=lambda r: r["seed"])]
        first = rows[0]
        cells.append(
            {
                "kernel_set": kernel_set,
                "genotype": genotype,
                "role": first["role"],
                "candidate": first["candidate"],
                "score": first["score"],
                "conv_edges": first["conv_edges"],
                "params": first["params"],
                "accuracy": float(np.mean(accuracies)),
                "seeds": len(accuracies),
                "accuracies": accuracies,
            }
        )
    return sorted(cells, key=lambda c: (c["kernel_set"], -c["score"], c["candidate"]))


def _summary_row(keys: dict, values: Sequence[float]) -> dict:
    return {**keys, **asdict(stats.summarise(values))}


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


def report(
    runs: Sequence[dict],
    trained_rows: Sequence[dict],
    candidates: dict[int, Sequence[dict]],
    *,
    exhaustive: bool = False,
    seed: int = 0,
    resamples: int = 2000,
) -> StudyReport:
    """The study's statistics from its stored rows.

    Args:
        runs: one per kernel set (``id``, ``kernel_set``).
        trained_rows: one per (cell, seed) trained, with ``kernel_set``, ``genotype``, ``role``, ``candidate``,
            ``score``, ``conv_edges``, ``params``, ``seed``, ``accuracy``.
        candidates: each run's scored candidates (``genotype``, ``score``), by run id.
        exhaustive: the runs scored every distinct cell, so random searches can be replayed over them.
    """
    cells = _cell_rows(trained_rows)
    per_set = []
    for run in runs:
        space = Space.parse(run["kernel_set"])
        name = space.name
        mine = [c for c in cells if c["kernel_set"] == name]
        scores = [c["score"] for c in mine]
        accuracy = [c["accuracy"] for c in mine]
        edges = [c["conv_edges"] for c in mine]
        top_cell = mine[0] if mine else None
        scored = candidates.get(run["id"], [])
        per_set.append(
            KernelSetReport(
                kernel_set=name,
                scored=len(scored),
                trained=len(mine),
                correlation=stats.correlation(scores, accuracy, seed=seed, resamples=resamples),
                within_edges=stats.pooled_within_spearman(scores, accuracy, edges, seed=seed, resamples=resamples),
                by_edges=stats.within_groups(scores, accuracy, edges, seed=seed, resamples=resamples),
                top1=stats.summarise(top_cell["accuracies"]) if top_cell else NO_SUMMARY,
                regret=_regret(mine),
                search_regret=search_regret(space, {c["genotype"]: c["score"] for c in scored}) if exhaustive else [],
            )
        )
    overall = None
    if len(cells) >= stats.MIN_POINTS:
        overall = stats.correlation(
            [c["score"] for c in cells], [c["accuracy"] for c in cells], seed=seed, resamples=resamples
        )
    by_edges = [
        _summary_row({"kernel_set": k, "conv_edges": e}, v)
        for (k, e), v in sorted(_grouped(cells, lambda c: (c["kernel_set"], c["conv_edges"])).items())
    ]
    return StudyReport(per_set, overall, cells, by_edges, _by_params(cells))


def _regret(cells: Sequence[dict]) -> stats.Regret | None:
    """The score's top cell against the best trained one and against the cells drawn at random."""
    if not cells:
        return None
    base = stats.regret([(c["score"], c["accuracy"]) for c in cells])
    randoms = [c["accuracy"] for c in cells if c["role"] == "random"]
    if not randoms:
        return base
    mean = float(np.mean(randoms))
    return stats.Regret(
        base.top1_accuracy, base.best_accuracy, base.regret, mean, base.top1_accuracy - mean, base.top1_index, base.n
    )


def _grouped(cells: Sequence[dict], key) -> dict:
    groups: dict = defaultdict(list)
    for c in cells:
        groups[key(c)].append(c["accuracy"])
    return groups


def _by_params(cells: Sequence[dict], bins: int = 4) -> list[dict]:
    """Accuracy by kernel set within parameter-count bins shared by all kernel sets (equal-width in log
    parameters), so a larger kernel is compared with a smaller one of about the same size."""
    if not cells:
        return []
    logs = np.log10([c["params"] for c in cells])
    edges = np.linspace(logs.min(), logs.max(), bins + 1)
    rows = []
    for (kernel_set, b), values in sorted(
        _grouped(
            cells,
            lambda c: (
                c["kernel_set"],
                int(min(np.searchsorted(edges, math.log10(c["params"]), "right") - 1, bins - 1)),
            ),
        ).items()
    ):
        low, high = 10 ** edges[b], 10 ** edges[b + 1]
        rows.append(
            _summary_row(
                {
                    "kernel_set": kernel_set,
                    "params_bin": f"{low / 1e6:.2f}-{high / 1e6:.2f} M",
                    "params_low": int(low),
                    "params_high": int(high),
                },
                values,
            )
        )
    return rows
