import math
import re
import subprocess
import sys

import numpy as np
import pytest

from engine.study.statistics import (
    Interval,
    bootstrap_interval,
    correlation,
    kendall,
    pooled_within_spearman,
    regret,
    spearman,
    summarise,
    t_quantile_975,
    within_groups,
)


def test_module_loads_without_torch_or_scipy():
    code = "import sys, engine.study.statistics; print(sorted({'torch', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ known correlations


def test_perfect_monotone_and_reversed():
    x = [1, 2, 3, 4, 5]
    y = [1, 4, 9, 16, 100]  # monotone, not linear
    assert spearman(x, y) == pytest.approx(1.0)
    assert kendall(x, y) == pytest.approx(1.0)
    assert spearman(x, y[::-1]) == pytest.approx(-1.0)
    assert kendall(x, y[::-1]) == pytest.approx(-1.0)


def test_ties_by_hand():
    # pairs: 4 concordant, 0 discordant, one tied in x only, one tied in y only -> 4 / sqrt(5 * 5)
    x, y = [1, 2, 2, 3], [1, 2, 3, 3]
    assert kendall(x, y) == pytest.approx(0.8)
    # average ranks [1, 2.5, 2.5, 4] and [1, 2, 3.5, 3.5]: covariance 3.75 over variance 4.5
    assert spearman(x, y) == pytest.approx(3.75 / 4.5)


def test_textbook_examples():
    # IQ against weekly hours of TV (Wikipedia, "Spearman's rank correlation coefficient"): 1 - 6*194/990
    iq = [106, 86, 100, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 0, 27, 50, 28, 29, 20, 12, 6, 17]
    assert spearman(iq, tv) == pytest.approx(-29 / 165)
    # 7 concordant and 3 discordant pairs of 10
    assert kendall([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.4)


def test_undefined_cases_are_nan():
    assert math.isnan(spearman([1, 2], [2, 1]))
    assert math.isnan(kendall([1, 2], [2, 1]))
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(kendall([4, 4, 4], [1, 2, 3]))


def test_agrees_with_scipy_on_random_data():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for n in (3, 4, 10, 57, 200):
        for _ in range(5):
            x = rng.integers(0, 6, n).astype(float)  # many ties
            y = x + rng.normal(size=n).round(1)
            assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
            assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)


def test_t_quantile_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 29, 30, 31, 45, 100, 10_000):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-6)


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    first = bootstrap_interval(x, y, spearman, resamples=300, seed=11)
    assert first == bootstrap_interval(x, y, spearman, resamples=300, seed=11)
    assert first != bootstrap_interval(x, y, spearman, resamples=300, seed=12)
    assert first.estimate == spearman(x, y) and first.n == 40
    assert first.low < first.estimate < first.high


def test_batched_statistics_match_the_generic_path():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.integers(0, 3, 30)
    for statistic in (spearman, kendall):
        fast = bootstrap_interval(x, y, statistic, resamples=200, seed=5)
        slow = bootstrap_interval(x, y, lambda a, b: statistic(a, b), resamples=200, seed=5)
        assert fast.low == pytest.approx(slow.low) and fast.high == pytest.approx(slow.high)


def test_bootstrap_takes_any_statistic_and_drops_nan_resamples():
    x = [0.0, 0.0, 0.0, 0.0, 1.0]  # many resamples have a constant x, where Spearman is NaN
    y = [1.0, 2.0, 3.0, 4.0, 5.0]
    interval = bootstrap_interval(x, y, spearman, resamples=200)
    assert -1 <= interval.low <= interval.high <= 1
    mean_gap = bootstrap_interval(x, y, lambda a, b: float(np.mean(b - a)), resamples=200)
    assert mean_gap.estimate == pytest.approx(2.8) and mean_gap.low < 2.8 < mean_gap.high


def test_bootstrap_coverage_on_bivariate_normal():
    rho = 0.6
    truth = 6 / math.pi * math.asin(rho / 2)  # population Spearman of a bivariate normal
    rng = np.random.default_rng(2024)
    cov = [[1, rho], [rho, 1]]
    repetitions, hits = 200, 0
    for rep in range(repetitions):
        sample = rng.multivariate_normal([0, 0], cov, size=60)
        interval = bootstrap_interval(sample[:, 0], sample[:, 1], spearman, resamples=200, seed=rep)
        hits += interval.low <= truth <= interval.high
    assert 0.88 <= hits / repetitions <= 0.99


def test_too_few_points_give_a_nan_interval():
    interval = bootstrap_interval([1, 2], [3, 4], spearman)
    assert interval.n == 2 and all(math.isnan(v) for v in (interval.estimate, interval.low, interval.high))


def test_correlation_reports_both_statistics():
    x = np.arange(20.0)
    y = x + np.tile([0.0, 3.0], 10)
    result = correlation(x, y, resamples=200)
    assert result.n == 20
    assert result.spearman.estimate == pytest.approx(spearman(x, y))
    assert result.kendall.estimate == pytest.approx(kendall(x, y))
    assert result.kendall.low <= result.kendall.estimate <= result.kendall.high


# -------------------------------------------------------------------------------------- within groups


def grouped(sizes):
    """Points whose only correlation comes from the group: within each group the ranks are uncorrelated."""
    within = {4: ([1, 2, 3, 4], [2, 4, 1, 3]), 5: ([1, 2, 3, 4, 5], [2, 5, 3, 1, 4])}  # Spearman 0 each
    x, y, groups = [], [], []
    for g, size in enumerate(sizes):
        gx, gy = within[size]
        x += [10 * g + v for v in gx]
        y += [10 * g + v for v in gy]
        groups += [g] * size
    return x, y, groups


def test_pooled_within_group_removes_the_between_group_effect():
    x, y, groups = grouped([4, 5, 4, 5, 4])
    assert spearman(x, y) > 0.9  # only because of the groups
    pooled = pooled_within_spearman(x, y, groups, resamples=300)
    assert pooled.estimate == pytest.approx(0.0, abs=1e-12)  # groups of 4 and 5 add nothing of their own
    assert pooled.low < 0 < pooled.high and pooled.n == 22
    per_group = within_groups(x, y, groups, resamples=100)
    assert list(per_group) == [0, 1, 2, 3, 4]
    assert all(c.spearman.estimate == pytest.approx(0.0, abs=1e-12) for c in per_group.values())


def test_pooled_within_group_sees_a_real_within_group_effect():
    x, y, groups = grouped([4, 4, 4])
    y = [v if i % 4 != 3 else v + 100 for i, v in enumerate(x)]  # y follows x inside groups
    assert pooled_within_spearman(x, y, groups, resamples=100).estimate == pytest.approx(1.0)


def test_small_groups_give_nan_not_errors():
    result = within_groups([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], ["a", "a", "b", "b", "b"], resamples=50)
    assert math.isnan(result["a"].spearman.estimate) and math.isnan(result["a"].kendall.high)
    assert result["a"].n == 2
    assert result["b"].spearman.estimate == pytest.approx(0.5)


# -------------------------------------------------------------------------------------- summary, regret


def test_summarise_t_interval():
    summary = summarise([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, df 4) * s / sqrt(n)
    assert (summary.mean, summary.n) == (3.0, 5)
    assert summary.std == pytest.approx(math.sqrt(2.5))
    assert summary.low == pytest.approx(3 - half) and summary.high == pytest.approx(3 + half)


def test_summarise_one_value():
    summary = summarise([0.7])
    assert summary.mean == 0.7 and summary.n == 1
    assert math.isnan(summary.std) and math.isnan(summary.low) and math.isnan(summary.high)


def test_regret_by_hand():
    result = regret([(0.5, 80.0), (0.9, 70.0), (0.9, 90.0), (0.1, 85.0)])
    assert result.top1_index == 1  # the tie at 0.9 goes to the first
    assert (result.top1_accuracy, result.best_accuracy, result.regret) == (70.0, 90.0, 20.0)
    assert result.random_mean == pytest.approx(81.25) and result.gain == pytest.approx(-11.25)
    assert result.n == 4


def test_regret_of_a_perfect_score_is_zero():
    result = regret([(1.0, 60.0), (3.0, 80.0), (2.0, 70.0)])
    assert result.regret == 0.0 and result.gain == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: spearman([1, 2, 3], [1, 2]), "same length, got 3 and 2"),
        (lambda: kendall([1, math.nan, 3], [1, 2, 3]), "x must be finite, got nan at index 1"),
        (lambda: spearman([1, 2, 3], [1, 2, math.inf]), "y must be finite, got inf at index 2"),
        (lambda: spearman([[1, 2], [3, 4]], [1, 2]), "x must be one-dimensional"),
        (lambda: spearman(["a", "b", "c"], [1, 2, 3]), "x must be numbers"),
        (lambda: bootstrap_interval([1, 2, 3], [1, 2, 3], spearman, level=1.5), "level must be between 0 and 1"),
        (lambda: bootstrap_interval([1, 2, 3], [1, 2, 3], spearman, resamples=0), "resamples must be a positive"),
        (lambda: within_groups([1, 2, 3], [1, 2, 3], [0, 1]), "one label per point, got 2 labels for 3"),
        (lambda: pooled_within_spearman([1, 2, 3], [1, 2, 3], [0, math.nan, 0]), "must not be NaN"),
        (lambda: summarise([]), "at least one value"),
        (lambda: summarise([1.0, math.nan]), "values must be finite"),
        (lambda: regret([]), "at least one trained"),
        (lambda: regret([(1.0, 2.0, 3.0)]), "(score, accuracy) pair"),
        (lambda: regret([(1.0, math.nan)]), "accuracies must be finite"),
    ],
)
def test_validation_errors(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_interval_is_frozen():
    interval = Interval(0.5, 0.1, 0.9, 10)
    with pytest.raises(AttributeError):
        interval.low = 0.0  # type: ignore[misc]
