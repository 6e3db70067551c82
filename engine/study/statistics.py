"""The statistics of a study on ``scipy.stats``; only what a study adds to it is written here.

scipy gives the correlations and their p-values (``spearmanr``, ``kendalltau``), the bootstrap with BCa
intervals, permutation tests and the t quantiles. Added here: a Spearman vectorised over resamples (so 10,000
of them cost milliseconds), the correlation pooled from ranks taken within each kernel set with a bootstrap
that resamples whole genotypes (a genotype trained in several kernel sets is one unit, not several), the
partial correlation, the split of variance between cells and seeds, and the pick against a random cell.

Imported only where a report is computed: the pages that show no statistics load without scipy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats

from engine.study.estimates import (
    LEVEL,
    MIN_INTERVAL,
    MIN_POINTS,
    RESAMPLES,
    Estimate,
    PickQuality,
    Reliability,
    Summary,
)


def _vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``values`` as a 1-D float array, refused when it is not one or holds NaN or infinity."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name} must be finite, got {array[bad[0]]} at index {bad[0]}")
    return array


def _same_length(**vectors: Sequence[float]) -> list[np.ndarray]:
    arrays = [_vector(v, name) for name, v in vectors.items()]
    if len({a.size for a in arrays}) > 1:
        sizes = ", ".join(f"{name} {a.size}" for name, a in zip(vectors, arrays))
        raise ValueError(f"the inputs must have the same length, got {sizes}")
    return arrays


def _varies(*arrays: np.ndarray) -> bool:
    return all(a.size >= MIN_POINTS and np.ptp(a) > 0 for a in arrays)


# ------------------------------------------------------------------------------------ correlations


def pearson_rows(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis``, for many rows at once; NaN where either side is constant."""
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    scale = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(scale > 0, (a * b).sum(axis=axis) / scale, np.nan), -1, 1)


def spearman_rows(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (average ranks, then Pearson): many resamples at once. NaN where constant."""
    return pearson_rows(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def _bootstrap(data: tuple, statistic, *, seed: int, resamples: int, paired: bool = True) -> tuple[float, float]:
    """BCa interval of ``statistic`` (vectorised, ``axis`` keyword). Where BCa is undefined (few points, or
    resamples on which the statistic is undefined, such as all-equal scores) the percentile interval of the
    resamples where it is defined stands in for it; NaN when none is, and below ``MIN_INTERVAL`` points, where
    resamples repeat a handful of values and the interval would collapse to a point."""
    if min(np.shape(d)[-1] for d in data) < MIN_INTERVAL:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on the degenerate cases handled here
        result = stats.bootstrap(
            data,
            statistic,
            paired=paired,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=LEVEL,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = (float(v) for v in result.confidence_interval)
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    kept = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
    if kept.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(kept, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def spearman(x: Sequence[float], y: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """Spearman's rho of y on x with a BCa bootstrap interval and a permutation p-value (pairings shuffled).

    Undefined (NaN) below 3 points or when either side is constant."""
    xs, ys = _same_length(x=x, y=y)
    if not _varies(xs, ys):
        return Estimate.undefined(xs.size)
    rho = float(stats.spearmanr(xs, ys).statistic)
    low, high = _bootstrap((xs, ys), spearman_rows, seed=seed, resamples=resamples)
    test = stats.permutation_test(
        (xs, ys),
        spearman_rows,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return Estimate(rho, low, high, float(test.pvalue), xs.size)


def kendall(x: Sequence[float], y: Sequence[float]) -> Estimate:
    """Kendall's tau-b with scipy's p-value (exact without ties); no interval: Spearman's carries the uncertainty."""
    xs, ys = _same_length(x=x, y=y)
    if not _varies(xs, ys):
        return Estimate.undefined(xs.size)
    result = stats.kendalltau(xs, ys)
    return Estimate(float(result.statistic), math.nan, math.nan, float(result.pvalue), xs.size)


def _partial_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray, axis: int = -1) -> np.ndarray:
    rxy, rxz, ryz = spearman_rows(x, y, axis), spearman_rows(x, z, axis), spearman_rows(y, z, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2)), -1, 1)


def partial_spearman(
    x: Sequence[float], y: Sequence[float], z: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES
) -> Estimate:
    """Spearman of y on x with z held fixed (from the three rank correlations), with a BCa interval: does the
    score order cells beyond counting their conv edges?"""
    xs, ys, zs = _same_length(x=x, y=y, z=z)
    if not _varies(xs, ys, zs):
        return Estimate.undefined(xs.size)
    estimate = float(_partial_rows(xs, ys, zs))
    if not math.isfinite(estimate):  # x or y is a function of z: nothing is left to correlate
        return Estimate.undefined(xs.size)
    low, high = _bootstrap((xs, ys, zs), _partial_rows, seed=seed, resamples=resamples)
    return Estimate(estimate, low, high, math.nan, xs.size)


def correlation_difference(
    x: Sequence[float], baseline: Sequence[float], y: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES
) -> Estimate:
    """Spearman of y on x minus Spearman of y on ``baseline``, over the same cells, with a paired BCa interval:
    does the score order cells better than a count anyone can make without it?"""
    xs, bs, ys = _same_length(x=x, baseline=baseline, y=y)
    if not _varies(xs, bs, ys):
        return Estimate.undefined(xs.size)

    def difference(a, b, c, axis=-1):
        return spearman_rows(a, c, axis) - spearman_rows(b, c, axis)

    low, high = _bootstrap((xs, bs, ys), difference, seed=seed, resamples=resamples)
    return Estimate(float(difference(xs, bs, ys)), low, high, math.nan, xs.size)


# ------------------------------------------------------------------- pooled over kernel sets


def _within_ranks(values: np.ndarray, strata: list[np.ndarray]) -> np.ndarray:
    """Ranks taken within each stratum, centred and scaled by its size, so strata of any size share one scale
    and no stratum's level adds a correlation of its own. Works on a batch of rows."""
    out = np.empty(values.shape, dtype=float)
    for idx in strata:
        m = idx.size
        out[..., idx] = (stats.rankdata(values[..., idx], axis=-1) - (m + 1) / 2) / m
    return out


def _labels(labels: Sequence[Hashable], n: int, name: str) -> list[np.ndarray]:
    """Positions of each distinct label, in first-seen order."""
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{name} must have one label per point, got {len(labels)} for {n} points")
    positions: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        positions.setdefault(label, []).append(i)
    return [np.array(p) for p in positions.values()]


def pooled_spearman(
    x: Sequence[float],
    y: Sequence[float],
    strata: Sequence[Hashable],
    clusters: Sequence[Hashable],
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Estimate:
    """One Spearman over every kernel set, from ranks taken within each (``strata``), so differences between
    kernel sets in score or accuracy cannot leak into it.

    The interval is a percentile bootstrap that resamples whole ``clusters`` (genotypes): the same cell trained
    in several kernel sets shares its structure, so it counts as one unit. The p-value shuffles accuracies
    within each stratum."""
    xs, ys = _same_length(x=x, y=y)
    n = xs.size
    stratum_of = _labels(strata, n, "strata")
    groups = _labels(clusters, n, "clusters")
    if n < MIN_POINTS or not any(idx.size >= 2 for idx in stratum_of):
        return Estimate.undefined(n)
    estimate = float(pearson_rows(_within_ranks(xs, stratum_of), _within_ranks(ys, stratum_of)))
    if not math.isfinite(estimate):
        return Estimate.undefined(n)
    rng = np.random.default_rng(seed)
    stratum = np.empty(n, dtype=int)
    for s, idx in enumerate(stratum_of):
        stratum[idx] = s
    draws = []
    for _ in range(resamples if n >= MIN_INTERVAL else 0):  # no interval below MIN_INTERVAL points
        picked = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        parts = [picked[stratum[picked] == s] for s in range(len(stratum_of))]
        parts = [p for p in parts if p.size >= 2]
        if not parts:
            continue
        order = np.concatenate(parts)
        local, start = [], 0
        for p in parts:
            local.append(np.arange(start, start + p.size))
            start += p.size
        draws.append(pearson_rows(_within_ranks(xs[order], local), _within_ranks(ys[order], local)))
    kept = np.array([d for d in draws if np.isfinite(d)])
    low, high = np.quantile(kept, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if kept.size else (math.nan, math.nan)
    shuffled = np.tile(ys, (resamples, 1))
    for idx in stratum_of:
        shuffled[:, idx] = rng.permuted(shuffled[:, idx], axis=1)
    null = pearson_rows(_within_ranks(xs, stratum_of)[None, :], _within_ranks(shuffled, stratum_of))
    p = (1 + np.sum(np.abs(null) >= abs(estimate) - 1e-12)) / (resamples + 1)
    return Estimate(estimate, float(low), float(high), float(p), n)


# ------------------------------------------------------------------------------------ over seeds


def summarise(values: Sequence[float]) -> Summary:
    """Mean with its 95% Student-t interval: few values need t, not 1.96. One value has no spread (NaN)."""
    array = _vector(values, "values")
    n = array.size
    if n == 0:
        raise ValueError("summarise needs at least one value")
    mean = float(array.mean())
    if n == 1:
        return Summary(mean, math.nan, 1, math.nan, math.nan)
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf((1 + LEVEL) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


def reliability(accuracies: Sequence[Sequence[float]]) -> Reliability:
    """The consistency ICC of cells each trained with the same seeds (two-way: cells by seeds, the i-th value of
    every cell from the same seed), and the ceiling it puts on any correlation with the seed mean: a score can
    only rank what the seeds agree on.

    A seed's shift common to every cell (its data order) moves no cell's rank, so it is measured apart
    (``seed_shift``) and not counted as noise, as a one-way ICC would.

    Cells with another number of seeds than the most common (a study in progress) are left out."""
    rows = [list(map(float, a)) for a in accuracies]
    counts = [len(r) for r in rows if len(r) >= 2]
    if not counts:
        return Reliability(math.nan, 1, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    k = max(set(counts), key=lambda c: (counts.count(c), c))
    table = np.array([r for r in rows if len(r) == k])
    cells = len(table)
    if cells < 2:
        return Reliability(math.nan, k, math.nan, math.nan, math.nan, math.nan, math.nan, cells)
    residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    between = k * table.mean(axis=1).var(ddof=1)  # mean square between cells
    noise = (residual**2).sum() / ((cells - 1) * (k - 1))  # mean square of cell-by-seed noise
    shift = cells * table.mean(axis=0).var(ddof=1)  # mean square between seeds
    cell_var = max((between - noise) / k, 0.0)
    total = cell_var + noise
    icc = cell_var / total if total > 0 else math.nan
    mean_reliability = k * icc / (1 + (k - 1) * icc) if math.isfinite(icc) else math.nan
    return Reliability(
        icc=icc,
        seeds=k,
        reliability=mean_reliability,
        ceiling=math.sqrt(mean_reliability) if math.isfinite(mean_reliability) else math.nan,
        cell_std=math.sqrt(cell_var),
        seed_std=math.sqrt(noise),
        seed_shift=math.sqrt(max((shift - noise) / cells, 0.0)),
        cells=cells,
    )


# ------------------------------------------------------------------------------------ the pick


def pick_quality(
    pick: float, sample: Sequence[float], sample_validation: Sequence[float | None] | None = None
) -> PickQuality:
    """The pick's accuracy against the uniform sample's, every accuracy a mean over the same seeds.

    ``se`` is the spread of one more random cell's accuracy (the sample's standard deviation, widened by the
    uncertainty of its mean), so for a score that carries no information ``z`` is a standard normal draw. The
    regret compares the pick with the sample's best cell, chosen on validation accuracy where every sampled
    cell has one and reported on test, so the test images' noise cannot make the best look better than it is.
    """
    values = _vector(sample, "sample")
    n = values.size
    if n == 0:
        raise ValueError("the pick needs at least one sampled cell to be compared with")
    mean = float(values.mean())
    se = float(values.std(ddof=1) * math.sqrt(1 + 1 / n)) if n >= 2 else math.nan
    gain = pick - mean
    validation = list(sample_validation) if sample_validation is not None else []
    if len(validation) == n and all(v is not None and math.isfinite(v) for v in validation):
        best, chosen_on = float(values[int(np.argmax(validation))]), "validation"
    else:
        best, chosen_on = float(values.max()), "test"
    return PickQuality(
        pick=pick,
        sample_mean=mean,
        gain=gain,
        se=se,
        z=gain / se if se and math.isfinite(se) and se > 0 else math.nan,
        percentile=float(np.mean(values < pick)),
        best=best,
        regret=best - pick,
        chosen_on=chosen_on,
        n=n,
    )


# ---------------------------------------------------------------------------- between kernel sets


def mean_difference(
    first: Sequence[float],
    second: Sequence[float],
    *,
    paired: bool,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Estimate:
    """Mean of ``second`` minus mean of ``first`` with a BCa interval and a permutation p-value: over pairs
    (the same genotype in both, labels swapped within pairs) or over two independent samples."""
    a, b = _vector(first, "first"), _vector(second, "second")
    if paired and a.size != b.size:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    if min(a.size, b.size) < 2:
        return Estimate.undefined(min(a.size, b.size))

    def difference(u, v, axis=-1):
        return v.mean(axis=axis) - u.mean(axis=axis)

    estimate = float(difference(a, b))
    if paired and np.ptp(b - a) == 0 or not paired and np.ptp(np.concatenate([a, b])) == 0:
        return Estimate(estimate, estimate, estimate, 1.0 if estimate == 0 else math.nan, a.size)
    low, high = _bootstrap((a, b), difference, seed=seed, resamples=resamples, paired=paired)
    test = stats.permutation_test(
        (a, b),
        difference,
        permutation_type="samples" if paired else "independent",
        vectorized=True,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return Estimate(estimate, low, high, float(test.pvalue), a.size if paired else a.size + b.size)
