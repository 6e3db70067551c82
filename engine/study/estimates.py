"""What a study's statistics return, and the power of its design: plain values on the standard library alone.

The statistics themselves (``engine.study.statistics``) need scipy, which is imported only where a report is
computed; these types and the power figures are what a page shows before any report exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

MIN_POINTS = 3  # a rank correlation of fewer points is 1, -1 or undefined: it says nothing
MIN_INTERVAL = 8  # fewer points give a bootstrap interval that collapses onto a few values: none is given
RESAMPLES = 10_000  # bootstrap and permutation draws: intervals move by about 0.003 between seeds
LEVEL = 0.95
POWER = 0.8  # the power at which a design's detectable correlation is stated
WEAK_DESIGN = 0.5  # a design that cannot detect a correlation below this is warned about
_SPEARMAN_VARIANCE = 1.06  # Fieller, Hartley & Pearson (1957): var(atanh(r_s)) ~ 1.06 / (n - 3)


@dataclass(frozen=True)
class Estimate:
    """A statistic on ``n`` points, its ``LEVEL`` interval and its two-sided p-value (NaN where not computed)."""

    estimate: float
    low: float
    high: float
    p: float
    n: int

    @classmethod
    def undefined(cls, n: int) -> Estimate:
        return cls(math.nan, math.nan, math.nan, math.nan, n)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def p_text(self, equals: str = "=") -> str:
        """'p=0.012', or 'p<0.001' below what three decimals show (a permutation p is never 0)."""
        return "p<0.001" if self.p < 0.001 else f"p{equals}{self.p:.3f}"


@dataclass(frozen=True)
class Summary:
    """A mean over ``n`` values (seeds, or cells), its sample standard deviation and 95% Student-t interval."""

    mean: float
    std: float
    n: int
    low: float
    high: float


@dataclass(frozen=True)
class Reliability:
    """How much of the accuracy's spread is the cell and how much the seed (two-way consistency ICC: every
    cell trained with the same seeds), and the ceiling this puts on any score's correlation with a mean over
    ``seeds`` seeds."""

    icc: float  # share of one training's variance that is between cells
    seeds: int  # seeds per cell the accuracies are averaged over
    reliability: float  # Spearman-Brown: the share of a ``seeds``-seed mean's variance that is the cell's
    ceiling: float  # sqrt(reliability): a perfect predictor of the cell's accuracy correlates this much
    cell_std: float  # spread of the cells' true accuracies (points of accuracy as a fraction)
    seed_std: float  # spread of one cell's accuracy between seeds, beyond the shift every cell shares
    seed_shift: float  # spread of the seeds' shift common to every cell (moves no rank: not noise)
    cells: int


@dataclass(frozen=True)
class PickQuality:
    """The search's pick (the top-scored cell) against a cell drawn uniformly, both trained with the same seeds:
    a score that carries no information puts ``z`` near 0 whatever the noise."""

    pick: float  # the pick's accuracy, mean over its seeds
    sample_mean: float  # mean accuracy of the uniform sample's cells, over the same seeds
    gain: float  # pick - sample_mean
    se: float  # standard error of ``gain`` for a pick that is one more random cell
    z: float  # gain / se
    percentile: float  # share of the sampled cells below the pick
    best: float  # test accuracy of the best sampled cell, chosen on validation accuracy (on test where none)
    regret: float  # best - pick
    chosen_on: str  # "validation" or "test" (optimistic: chosen and reported on the same images)
    n: int  # sampled cells


@dataclass(frozen=True)
class Difference:
    """Mean accuracy of one kernel set minus another's over the uniform samples: paired by genotype where both
    sampled the same cells, otherwise as two independent samples."""

    first: str
    second: str
    paired: bool
    difference: Estimate  # second - first, in accuracy (fraction)
    params_ratio: float  # mean parameters of second over first: what the difference costs in memory
    agreement: Estimate  # Spearman of a cell's accuracy in one set with the same cell's in the other (paired)


# ------------------------------------------------------------------------------------------ power


def _z(probability: float) -> float:
    return NormalDist().inv_cdf(probability)


def correlation_power(n: int, rho: float, *, alpha: float = 0.05) -> float:
    """The chance that a two-sided test at ``alpha`` over ``n`` cells finds a Spearman correlation of ``rho``
    (Fisher's z with Spearman's variance; NaN below 4 cells)."""
    if n < MIN_POINTS + 1:
        return math.nan
    shift = math.atanh(min(abs(rho), 0.999999)) / math.sqrt(_SPEARMAN_VARIANCE / (n - 3))
    critical = _z(1 - alpha / 2)
    normal = NormalDist()
    return normal.cdf(shift - critical) + normal.cdf(-shift - critical)


def detectable_correlation(n: int, *, power: float = POWER, alpha: float = 0.05) -> float:
    """The smallest Spearman correlation ``n`` cells detect with ``power`` at ``alpha`` (two-sided); NaN below 4."""
    if n < MIN_POINTS + 1:
        return math.nan
    return math.tanh((_z(1 - alpha / 2) + _z(power)) * math.sqrt(_SPEARMAN_VARIANCE / (n - 3)))


def cells_needed(rho: float, *, power: float = POWER, alpha: float = 0.05) -> int:
    """How many cells detect a Spearman correlation of ``rho`` with ``power``."""
    if not 0 < abs(rho) < 1:
        raise ValueError(f"the correlation to detect must lie strictly between 0 and 1 in size, got {rho!r}")
    return math.ceil(_SPEARMAN_VARIANCE * ((_z(1 - alpha / 2) + _z(power)) / math.atanh(abs(rho))) ** 2 + 3)
