"""Statistics for the study: does the training-free score predict trained accuracy, and do larger kernels help?

Rank correlations (Spearman, Kendall tau-b) with percentile-bootstrap intervals, the same within groups
of equal conv-edge count, a t interval for a mean over seeds, and the regret of picking the top-scored cell.

Only the standard library and numpy: the dashboard imports this module without torch or scipy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 3  # a rank correlation of fewer points is 1, -1 or undefined: it says nothing
Statistic = Callable[[np.ndarray, np.ndarray], float]

# Student's t quantile at 0.975 (two-sided 95%) for 1..30 degrees of freedom.
_T975 = (
    12.706205,
    4.302653,
    3.182446,
    2.776445,
    2.570582,
    2.446912,
    2.364624,
    2.306004,
    2.262157,
    2.228139,
    2.200985,
    2.178813,
    2.160369,
    2.144787,
    2.131450,
    2.119905,
    2.109816,
    2.100922,
    2.093024,
    2.085963,
    2.079614,
    2.073873,
    2.068658,
    2.063899,
    2.059539,
    2.055529,
    2.051831,
    2.048407,
    2.045230,
    2.042272,
)
_Z975 = 1.959963984540054
_KENDALL_CHUNK = 4_000_000  # sign-matrix entries per batch, so a bootstrap of Kendall stays within ~100 MB


# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Interval:
    """A statistic on all ``n`` points and its bootstrap interval (NaN where it is undefined)."""

    estimate: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Correlation:
    """How well x orders y: Spearman and Kendall tau-b, each with its bootstrap interval."""

    spearman: Interval
    kendall: Interval
    n: int


@dataclass(frozen=True)
class Summary:
    """A mean over ``n`` seeds, its sample standard deviation and 95% Student-t interval."""

    mean: float
    std: float
    n: int
    low: float
    high: float


@dataclass(frozen=True)
class Regret:
    """What trusting the score costs: the top-scored cell against the best and against a random cell."""

    top1_accuracy: float  # trained accuracy of the cell with the highest score
    best_accuracy: float  # best trained accuracy among the cells
    regret: float  # best - top1: accuracy the search leaves on the table
    random_mean: float  # expected accuracy of a cell drawn at random
    gain: float  # top1 - random_mean: what the score buys over picking at random
    top1_index: int  # position of the top-scored cell in the input
    n: int


# ---------------------------------------------------------------------------------------- validation


def _finite_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
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


def _paired(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two finite vectors of equal length: points (x[i], y[i])."""
    xs, ys = _finite_vector(x, "x"), _finite_vector(y, "y")
    if xs.size != ys.size:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    return xs, ys


def _check_bootstrap(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive whole number, got {resamples!r}")


# ------------------------------------------------------------------------------- rank correlations


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties sharing the mean of their positions (works on a batch of rows)."""
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    n = values.shape[-1]
    position = np.arange(n)
    edge = np.ones(values.shape[:-1] + (1,), dtype=bool)
    changes = ordered[..., 1:] != ordered[..., :-1]
    starts = np.concatenate([edge, changes], axis=-1)  # first of a run of equal values
    ends = np.concatenate([changes, edge], axis=-1)  # last of a run
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.minimum.accumulate(np.where(ends, position, n)[..., ::-1], axis=-1)[..., ::-1]
    ranks = np.empty(values.shape, dtype=float)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either side is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    scale = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(scale > 0, (a * b).sum(axis=-1) / scale, np.nan)
    return np.clip(r, -1.0, 1.0)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.shape[-1] < MIN_POINTS:
        return np.full(x.shape[:-1], np.nan)
    return _pearson_rows(_average_ranks(x), _average_ranks(y))


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tau-b along the last axis: (concordant - discordant) over the geometric mean of untied pairs."""
    n = x.shape[-1]
    if n < MIN_POINTS:
        return np.full(x.shape[:-1], np.nan)
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    chunk = max(1, _KENDALL_CHUNK // (n * n))
    taus = np.concatenate([_kendall_batch(x2[i : i + chunk], y2[i : i + chunk]) for i in range(0, len(x2), chunk)])
    return taus.reshape(x.shape[:-1])


def _kendall_batch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    sx = np.sign(x[:, :, None] - x[:, None, :])  # every ordered pair, so each pair counts twice
    sy = np.sign(y[:, :, None] - y[:, None, :])
    score = (sx * sy).sum(axis=(1, 2)) / 2
    pairs = n * (n - 1) / 2
    untied_x = pairs - ((sx == 0).sum(axis=(1, 2)) - n) / 2  # the diagonal is no pair
    untied_y = pairs - ((sy == 0).sum(axis=(1, 2)) - n) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where((untied_x > 0) & (untied_y > 0), score / np.sqrt(untied_x * untied_y), np.nan)
    return np.clip(tau, -1.0, 1.0)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson on average ranks): does a higher x go with a higher y, at any scale?

    NaN with fewer than 3 points or when either input is constant.
    """
    xs, ys = _paired(x, y)
    return float(_spearman_rows(xs, ys))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: the share of pairs x orders like y, corrected for ties (scores often tie).

    NaN with fewer than 3 points or when either input is constant. O(n^2), fine for a few hundred cells.
    """
    xs, ys = _paired(x, y)
    return float(_kendall_rows(xs, ys))


# Batched forms of the public statistics, so a bootstrap computes all resamples at once.
_ROW_STATISTICS: dict[Callable, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    spearman: _spearman_rows,
    kendall: _kendall_rows,
}


# ------------------------------------------------------------------------------------------ bootstrap


def _percentile_interval(estimate: float, resampled: np.ndarray, level: float, n: int) -> Interval:
    """The interval from the resampled statistics; resamples where the statistic is undefined are dropped."""
    kept = resampled[~np.isnan(resampled)]
    if kept.size == 0:
        return Interval(estimate, math.nan, math.nan, n)
    tail = (1 - level) / 2
    low, high = np.quantile(kept, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), n)


def _nan_interval(n: int) -> Interval:
    return Interval(math.nan, math.nan, math.nan, n)


def bootstrap_interval(
    x: Sequence[float],
    y: Sequence[float],
    statistic: Statistic,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of ``statistic(x, y)``, resampling (x, y) points with replacement.

    How sure the estimate is, with no assumption on the distribution. Resamples where the statistic is
    NaN (e.g. all one value) are dropped. Fewer than 3 points give a NaN interval. Same seed, same interval.
    """
    xs, ys = _paired(x, y)
    _check_bootstrap(level, resamples)
    n = xs.size
    if n < MIN_POINTS:
        return _nan_interval(n)
    estimate = float(statistic(xs, ys))
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    rows = _ROW_STATISTICS.get(statistic)
    if rows is not None:
        resampled = rows(xs[picks], ys[picks])
    else:
        resampled = np.array([float(statistic(xs[p], ys[p])) for p in picks])
    return _percentile_interval(estimate, resampled, level, n)


def correlation(
    x: Sequence[float], y: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Correlation:
    """Spearman and Kendall of y on x, each with a bootstrap interval over the same resamples."""
    xs, ys = _paired(x, y)
    options = dict(level=level, resamples=resamples, seed=seed)
    return Correlation(
        spearman=bootstrap_interval(xs, ys, spearman, **options),
        kendall=bootstrap_interval(xs, ys, kendall, **options),
        n=xs.size,
    )


# ------------------------------------------------------------------------------------- within groups


def _group_members(groups: Sequence[Hashable], n: int) -> dict[Hashable, np.ndarray]:
    """Each group label (in sorted order) to the positions holding it."""
    labels = list(groups)
    if len(labels) != n:
        raise ValueError(f"groups must have one label per point, got {len(labels)} labels for {n} points")
    for i, label in enumerate(labels):
        if isinstance(label, float) and math.isnan(label):  # NaN never equals itself: it cannot group
            raise ValueError(f"group labels must not be NaN, got one at index {i}")
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    return {label: np.array(members[label]) for label in sorted(members)}


def within_groups(
    x: Sequence[float],
    y: Sequence[float],
    groups: Sequence[Hashable],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[Hashable, Correlation]:
    """The correlation inside each group (e.g. cells with the same number of conv edges), by sorted label.

    Answers whether the score ranks cells beyond what the grouping already explains. A group of fewer
    than 3 points gets NaN intervals.
    """
    xs, ys = _paired(x, y)
    members = _group_members(groups, xs.size)
    return {
        label: correlation(xs[idx], ys[idx], level=level, resamples=resamples, seed=seed)
        for label, idx in members.items()
    }


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, centred on 0 and divided by the group size, so groups of any size
    share one scale and no group's mean rank can add a correlation of its own."""
    m = values.shape[-1]
    return (_average_ranks(values) - (m + 1) / 2) / m


def _pooled_rows(x: np.ndarray, y: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Pooled within-group Spearman for each row of picks; ``blocks`` holds each group's (rows, size) picks."""
    if sum(block.shape[-1] for block in blocks) < MIN_POINTS:
        return np.full(blocks[0].shape[:-1], np.nan)
    xr = np.concatenate([_centred_ranks(x[block]) for block in blocks], axis=-1)
    yr = np.concatenate([_centred_ranks(y[block]) for block in blocks], axis=-1)
    return _pearson_rows(xr, yr)


def pooled_within_spearman(
    x: Sequence[float],
    y: Sequence[float],
    groups: Sequence[Hashable],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """One Spearman over all groups from ranks taken within each group, with a stratified bootstrap interval.

    Ranking inside each group removes the between-group effect: at small width the score mostly counts
    conv edges, and so does accuracy, which alone makes the overall correlation high. What remains is
    whether the score orders cells with the same edge count. Resamples draw within each group, keeping
    its size. NaN with fewer than 3 points or when nothing varies within groups.
    """
    xs, ys = _paired(x, y)
    _check_bootstrap(level, resamples)
    n = xs.size
    if n < MIN_POINTS:
        return _nan_interval(n)
    members = list(_group_members(groups, n).values())
    estimate = float(_pooled_rows(xs, ys, [idx[None, :] for idx in members])[0])
    rng = np.random.default_rng(seed)
    picks = [idx[rng.integers(0, idx.size, size=(resamples, idx.size))] for idx in members]
    return _percentile_interval(estimate, _pooled_rows(xs, ys, picks), level, n)


# ---------------------------------------------------------------------------------------- over seeds


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile: a table to 30 degrees of freedom, a Cornish-Fisher series beyond
    (A&S 26.7.5, within 1e-6 there), so a 95% interval over few seeds is as wide as it should be."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def summarise(values: Sequence[float]) -> Summary:
    """Mean over seeds with its 95% Student-t interval: few seeds need t, not 1.96, to be honest.

    One value has no spread: std and interval are NaN.
    """
    array = _finite_vector(values, "values")
    n = array.size
    if n == 0:
        raise ValueError("summarise needs at least one value")
    mean = float(array.mean())
    if n == 1:
        return Summary(mean, math.nan, 1, math.nan, math.nan)
    std = float(array.std(ddof=1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


# -------------------------------------------------------------------------------------------- regret


def _is_pair(item: object) -> bool:
    try:
        return len(item) == 2  # type: ignore[arg-type]
    except TypeError:
        return False


def regret(trained: Sequence[tuple[float, float]]) -> Regret:
    """What a search that trains only its top-scored cell gives up, and what it gains over a random pick.

    ``trained`` holds (score, accuracy) of every trained cell. Equal top scores go to the first one.
    """
    pairs = list(trained)
    if not pairs:
        raise ValueError("regret needs at least one trained (score, accuracy) pair, got none")
    for i, pair in enumerate(pairs):
        if not _is_pair(pair):
            raise ValueError(f"each trained entry must be a (score, accuracy) pair, got {pair!r} at index {i}")
    scores = _finite_vector([pair[0] for pair in pairs], "scores")
    accuracies = _finite_vector([pair[1] for pair in pairs], "accuracies")
    top = int(np.argmax(scores))  # argmax returns the first of equal maxima
    top1, best, random_mean = float(accuracies[top]), float(accuracies.max()), float(accuracies.mean())
    return Regret(
        top1_accuracy=top1,
        best_accuracy=best,
        regret=best - top1,
        random_mean=random_mean,
        gain=top1 - random_mean,
        top1_index=top,
        n=len(pairs),
    )
