"""The study's statistics: scipy's where scipy has them, and what the study adds checked by simulation."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from engine.study.estimates import Estimate, cells_needed, correlation_power, detectable_correlation
from engine.study.statistics import (
    correlation_difference,
    kendall,
    mean_difference,
    partial_spearman,
    pick_quality,
    pooled_spearman,
    reliability,
    spearman,
    spearman_rows,
    summarise,
)


def test_the_pages_load_the_design_without_scipy_or_torch():
    code = "import sys, engine.study, engine.study.estimates; print(sorted({'torch', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def bivariate(n: int, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)


def test_spearman_and_kendall_are_scipys_with_a_permutation_p_value():
    x, y = bivariate(30, 0.5, np.random.default_rng(1))
    rho = spearman(x, y, resamples=2000)
    assert rho.estimate == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    assert rho.low < rho.estimate < rho.high
    # the permutation p-value agrees with scipy's t approximation at this size
    assert rho.p == pytest.approx(scipy_stats.spearmanr(x, y).pvalue, abs=0.02)
    tau = kendall(x, y)
    assert (tau.estimate, tau.p) == pytest.approx(tuple(scipy_stats.kendalltau(x, y)))
    assert math.isnan(tau.low)


def test_the_vectorised_spearman_matches_scipy_row_by_row():
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 5, size=(50, 12)).astype(float), rng.normal(size=(50, 12))  # ties in x
    expected = [scipy_stats.spearmanr(a, b).statistic for a, b in zip(x, y)]
    assert spearman_rows(x, y) == pytest.approx(expected)


def test_an_interval_is_the_same_for_a_seed_and_covers_at_its_level():
    rng = np.random.default_rng(3)
    x, y = bivariate(40, 0.4, rng)
    assert spearman(x, y, seed=5, resamples=1000) == spearman(x, y, seed=5, resamples=1000)
    population = 6 / math.pi * math.asin(0.4 / 2)  # Spearman's rho of a bivariate normal
    covered = [
        (lambda e: e.low <= population <= e.high)(spearman(*bivariate(40, 0.4, rng), seed=i, resamples=1000))
        for i in range(120)
    ]
    assert 0.87 <= np.mean(covered) <= 0.99


def test_undefined_statistics_are_nan_and_small_samples_get_no_interval():
    assert math.isnan(spearman([1, 2], [3, 4]).estimate)
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]).estimate)
    few = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert not math.isnan(few.estimate) and not math.isnan(few.p)
    assert math.isnan(few.low) and math.isnan(few.high)  # five points: no interval that collapses to a point


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: spearman([1, 2, 3], [1, 2]), "same length"),
        (lambda: spearman([1, 2, float("nan")], [1, 2, 3]), "finite"),
        (lambda: spearman([[1, 2]], [[1, 2]]), "one-dimensional"),
        (lambda: spearman(["a", "b", "c"], [1, 2, 3]), "numbers"),
        (lambda: summarise([]), "at least one"),
        (lambda: pick_quality(0.3, []), "at least one sampled cell"),
        (lambda: mean_difference([1, 2], [1, 2, 3], paired=True), "same length"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_partial_correlation_removes_what_conv_edges_explain():
    rng = np.random.default_rng(4)
    edges = rng.integers(0, 7, size=200).astype(float)
    accuracy = edges + rng.normal(size=200)
    score = edges + rng.normal(size=200)  # knows only the edges
    assert spearman(score, accuracy, resamples=500).estimate > 0.6
    partial = partial_spearman(score, accuracy, edges, resamples=1000)
    assert partial.low < 0 < partial.high
    better = partial_spearman(score + accuracy, accuracy, edges, resamples=1000)
    assert better.low > 0.3


def test_the_difference_against_a_baseline_is_paired():
    rng = np.random.default_rng(5)
    edges = rng.integers(0, 7, size=60).astype(float)
    accuracy = edges + rng.normal(size=60)
    same = correlation_difference(edges + 1e-3 * rng.normal(size=60), edges, accuracy, resamples=1000)
    assert same.low < 0 < same.high and same.high - same.low < 0.2  # paired: the shared noise cancels
    worse = correlation_difference(rng.normal(size=60), edges, accuracy, resamples=1000)
    assert worse.high < 0


def test_pooling_within_kernel_sets_keeps_their_difference_out():
    rng = np.random.default_rng(6)
    sets = np.repeat([0, 1, 2], 20)
    score = sets * 10 + rng.normal(size=60)  # sets differ in score and accuracy, nothing within them
    accuracy = sets * 10 + rng.normal(size=60)
    assert spearman(score, accuracy, resamples=200).estimate > 0.8
    pooled = pooled_spearman(score, accuracy, sets, list(range(60)), resamples=2000)
    assert pooled.low < 0 < pooled.high and pooled.p > 0.05


def test_resampling_by_genotype_widens_the_interval_when_kernel_sets_share_cells():
    rng = np.random.default_rng(7)
    genotypes = np.tile(np.arange(20), 3)  # the same 20 genotypes in three kernel sets
    quality = rng.normal(size=20)
    # a genotype scores and trains about alike whatever its kernels: three near-copies of 20 points, not 60
    score = (quality + rng.normal(size=20))[genotypes] + 0.1 * rng.normal(size=60)
    accuracy = (quality + rng.normal(size=20))[genotypes] + 0.1 * rng.normal(size=60)
    sets = np.repeat([0, 1, 2], 20)
    clustered = pooled_spearman(score, accuracy, sets, genotypes, resamples=2000)
    naive = pooled_spearman(score, accuracy, sets, list(range(60)), resamples=2000)
    assert clustered.estimate == naive.estimate
    assert clustered.high - clustered.low > 1.4 * (naive.high - naive.low)  # about sqrt(3) in theory


def test_reliability_recovers_the_split_between_cells_and_seeds():
    rng = np.random.default_rng(8)
    cells = rng.normal(0.25, 0.02, size=400)
    runs = cells[:, None] + rng.normal(0, 0.02, size=(400, 2))  # ICC 0.5
    r = reliability(runs)
    assert r.icc == pytest.approx(0.5, abs=0.08)
    assert r.reliability == pytest.approx(2 * r.icc / (1 + r.icc))
    assert r.ceiling == pytest.approx(math.sqrt(r.reliability))
    assert (r.cell_std, r.seed_std) == pytest.approx((0.02, 0.02), abs=0.003)
    assert math.isnan(reliability([[0.3], [0.4]]).icc)  # one seed each: no split


def test_a_shift_every_cell_shares_is_no_noise():
    """The second seed lowers every cell by 3 points (its data order): no cell's rank moves, so the ICC and the
    ceiling are those without it, and the shift is reported apart."""
    rng = np.random.default_rng(9)
    cells = rng.normal(0.25, 0.02, size=400)
    runs = cells[:, None] + rng.normal(0, 0.02, size=(400, 2))
    shifted = reliability(runs + [0.0, -0.03])
    assert (shifted.icc, shifted.ceiling, shifted.seed_std) == pytest.approx(
        (reliability(runs).icc, reliability(runs).ceiling, reliability(runs).seed_std)
    )
    assert shifted.seed_shift == pytest.approx(0.03 / math.sqrt(2), abs=0.003)  # two seeds 3 points apart
    assert reliability(runs).seed_shift < 0.003


def test_a_useless_score_puts_the_pick_at_zero_standard_errors():
    rng = np.random.default_rng(9)
    zs = []
    for _ in range(400):
        true = rng.normal(0.25, 0.02, size=31)
        measured = true + rng.normal(0, 0.015, size=31)  # one seed each, the pick's too
        zs.append(pick_quality(measured[0], measured[1:]).z)  # the "pick" is one more random cell
    assert abs(np.mean(zs)) < 0.15 and 0.85 < np.std(zs) < 1.15


def test_the_pick_s_best_comparison_is_chosen_on_validation():
    q = pick_quality(0.30, [0.20, 0.35, 0.25], [0.40, 0.10, 0.20])
    assert (q.best, q.chosen_on) == (0.20, "validation") and q.regret == pytest.approx(-0.10)
    assert pick_quality(0.30, [0.20, 0.35, 0.25]).chosen_on == "test"


def test_mean_differences_paired_and_independent():
    rng = np.random.default_rng(10)
    base = rng.normal(0.25, 0.03, size=30)
    larger = base + 0.01 + rng.normal(0, 0.002, size=30)
    paired = mean_difference(base, larger, paired=True, resamples=2000)
    assert paired.low > 0 and paired.p < 0.01
    independent = mean_difference(base, larger, paired=False, resamples=2000)
    assert independent.low < 0 < independent.high  # the cells' spread hides it without the pairing


def test_the_power_figure_matches_a_simulation():
    rng = np.random.default_rng(11)
    n, rho_s = 20, 0.5
    rho = 2 * math.sin(math.pi * rho_s / 6)  # the normal correlation whose Spearman is rho_s
    found = [scipy_stats.spearmanr(*bivariate(n, rho, rng)).pvalue < 0.05 for _ in range(3000)]
    assert correlation_power(n, rho_s) == pytest.approx(np.mean(found), abs=0.04)
    assert correlation_power(12, 0.3) == pytest.approx(0.15, abs=0.01)
    assert cells_needed(0.3) in (89, 90)
    assert correlation_power(cells_needed(0.3), 0.3) >= 0.8
    assert correlation_power(32, detectable_correlation(32)) == pytest.approx(0.8, abs=0.005)


def test_summarise_uses_students_t():
    s = summarise([0.2, 0.3])
    assert s.mean == pytest.approx(0.25)
    assert s.high - s.mean == pytest.approx(scipy_stats.t.ppf(0.975, 1) * s.std / math.sqrt(2))
    assert math.isnan(summarise([0.4]).std)


def test_a_p_value_too_small_for_three_decimals_reads_as_a_bound():
    """A permutation p is never 0: 10,000 shuffles bound it below by about 1e-4, which '0.000' would hide."""
    assert Estimate(1.4, 0.8, 2.0, 1e-4, 30).p_text() == "p<0.001"
    assert Estimate(1.4, 0.8, 2.0, 0.012, 30).p_text() == "p=0.012"
    assert Estimate(1.4, 0.8, 2.0, 0.012, 30).p_text(equals=" ") == "p 0.012"
