import dataclasses

import pytest

from engine.core.footprint import footprint
from engine.core.profiles import ScoreConfig, get_profile
from engine.core.space import KernelSet
from engine.search.sampling import ExhaustiveSampler, RandomSampler, random_search

SNASNET = KernelSet(1, 3)

TINY_SCORE = ScoreConfig(batch_size=8, batches=1, draws=1, shared=True, reset_between_batches=True)
LAPTOP = get_profile("laptop")


def search(sample, iterations=4, **kw):
    kw.setdefault("config", TINY_SCORE)
    return random_search(KernelSet(1, 3), LAPTOP, sample, iterations, **kw)


def test_same_seed_same_candidates_and_scores(sample):
    a, b = search(sample, seed=3), search(sample, seed=3)
    assert [(c.genotype, c.score) for c in a.candidates] == [(c.genotype, c.score) for c in b.candidates]
    c = search(sample, seed=4)
    assert [x.genotype for x in c.candidates] != [x.genotype for x in a.candidates]


def test_candidates_record_what_the_score_rewarded(sample):
    result = search(sample, iterations=5, seed=0)
    assert len(result.candidates) == 5 and result.seconds > 0
    assert result.best.score == max(c.score for c in result.candidates)
    for c in result.candidates:
        assert c.conv_edges == SNASNET.conv_edges(c.genotype)
        assert 0 <= c.firing_rate <= 1 and c.silent_layers >= 0 and c.seconds > 0
        assert c.params < c.params_torch


def test_reference_init_leaves_the_classifier_silent_at_reduced_width(sample):
    """README, "The score at reduced scale": N(0, 0.01) keeps the narrow classifier's neuron silent."""
    reference_init = dataclasses.replace(LAPTOP, linear_gain=None)
    silent = random_search(KernelSet(1, 3), reference_init, sample, 3, config=TINY_SCORE)
    assert all(c.silent_layers >= 1 for c in silent.candidates)
    woken = search(sample, iterations=3)
    assert all(c.silent_layers < s.silent_layers for c, s in zip(woken.candidates, silent.candidates))


def test_progress_reports_each_candidate_with_the_best_so_far(sample):
    seen = []
    result = search(sample, iterations=3, progress=lambda done, total, best: seen.append((done, total, best)))
    assert [(d, t) for d, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert seen[-1][2] == result.best
    assert seen[1][2].score == max(c.score for c in result.candidates[:2])


def test_dedupe_scores_each_distinct_cell_once(sample):
    genotypes = [SNASNET.canonical(g) for g, _ in zip(RandomSampler(SNASNET, 0), range(200))]
    assert len(set(genotypes)) < len(genotypes)  # the plain stream repeats cells
    result = search(sample, iterations=6, dedupe=True, config=dataclasses.replace(TINY_SCORE, batch_size=4))
    keys = [SNASNET.canonical(c.genotype) for c in result.candidates]
    assert len(set(keys)) == len(keys) == 6


def test_parameter_budget_discards_cells_before_building(sample):
    small, large = (footprint(g, KernelSet(1, 3), LAPTOP, sample.info).params for g in SNASNET.extremes())
    budget = (small + large) // 2
    result = search(sample, iterations=4, max_params=budget)
    assert all(c.params <= budget for c in result.candidates)
    with pytest.raises(ValueError, match="below the smallest 1x1_3x3 network"):
        search(sample, max_params=small - 1)


def test_resume_after_a_stop_reaches_the_same_result(sample):
    full = search(sample, iterations=5, seed=1, config=dataclasses.replace(TINY_SCORE, shared=False))
    calls = []
    partial = search(
        sample,
        iterations=5,
        seed=1,
        config=dataclasses.replace(TINY_SCORE, shared=False),
        should_stop=lambda: calls.append(1) or len(calls) > 2,
    )
    assert partial.stopped and len(partial.candidates) == 2
    resumed = search(
        sample, iterations=5, seed=1, config=dataclasses.replace(TINY_SCORE, shared=False), done=partial.candidates
    )
    assert [(c.index, c.genotype, c.score) for c in resumed.candidates] == [
        (c.index, c.genotype, c.score) for c in full.candidates
    ]


def test_reference_quirks_are_options(sample):
    base = dict(iterations=2, seed=0)
    quirky = search(sample, **base, config=dataclasses.replace(TINY_SCORE, batches=2, reset_between_batches=False))
    clean = search(sample, **base, config=dataclasses.replace(TINY_SCORE, batches=2))
    assert [c.genotype for c in quirky.candidates] == [c.genotype for c in clean.candidates]
    assert [c.score for c in quirky.candidates] != [c.score for c in clean.candidates]


def test_batch_larger_than_the_data_is_refused(sample):
    with pytest.raises(ValueError, match="larger than the training split"):
        search(sample, config=dataclasses.replace(TINY_SCORE, batch_size=10**6))


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "carried"])
def test_stepping_through_time_gives_the_folded_scores(sample, reset):
    """One timestep per call (the paper profile's memory saver) against all T at once: same candidates,
    same scores, same firing statistics, with state carried between batches or not and dropout active."""
    folded = ScoreConfig(batch_size=8, batches=2, draws=1, shared=False, reset_between_batches=reset)
    stepped = dataclasses.replace(folded, step_through_time=True)
    a = search(sample, iterations=4, seed=5, config=folded)
    b = search(sample, iterations=4, seed=5, config=stepped)
    for x, y in zip(a.candidates, b.candidates, strict=True):
        assert x.genotype == y.genotype and x.silent_layers == y.silent_layers
        assert y.score == pytest.approx(x.score, rel=1e-9) and y.firing_rate == pytest.approx(x.firing_rate, rel=1e-9)


def test_exhaustive_sampler_yields_the_seeded_order_once_then_stops():
    stream = list(ExhaustiveSampler(SNASNET, 5))
    assert stream == SNASNET.exhaustive_order(5) and len(stream) == len(SNASNET.distinct_cells())
    it = iter(ExhaustiveSampler(SNASNET, 5))
    for _ in stream:
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert list(ExhaustiveSampler(SNASNET, 5)) == stream  # each iteration starts over: a resume replays it


def test_exhaustive_search_scores_the_seeded_order_and_resumes_to_the_same_result(sample):
    fresh = dataclasses.replace(TINY_SCORE, shared=False)
    full = search(sample, iterations=6, seed=2, config=fresh, exhaustive=True)
    assert [c.genotype for c in full.candidates] == SNASNET.exhaustive_order(2)[:6]
    assert [c.index for c in full.candidates] == list(range(6)) and full.iterations == 6
    calls = []
    partial = search(
        sample,
        iterations=6,
        seed=2,
        config=fresh,
        exhaustive=True,
        should_stop=lambda: calls.append(1) or len(calls) > 3,
    )
    assert partial.stopped and len(partial.candidates) == 3
    resumed = search(sample, iterations=6, seed=2, config=fresh, exhaustive=True, done=partial.candidates)
    assert [(c.index, c.genotype, c.score) for c in resumed.candidates] == [
        (c.index, c.genotype, c.score) for c in full.candidates
    ]
    other = search(sample, iterations=6, seed=3, config=fresh, exhaustive=True)
    assert [c.genotype for c in other.candidates] != [c.genotype for c in full.candidates]


def test_exhaustive_search_refuses_more_iterations_than_cells(sample):
    with pytest.raises(ValueError, match="only 7,012 distinct cells exist"):
        search(sample, iterations=7_013, exhaustive=True)


def test_exhaustive_search_under_a_budget_ends_when_the_cells_within_it_run_out(sample, monkeypatch):
    """Cells over ``max_params`` are passed over; when fewer than ``iterations`` fit, the total is how many do.
    (A space of 8 cells stands in for the 7,012, of which 174 fit the smallest budget: too many to score here.)"""

    ks = KernelSet(1, 3)
    cheap = [c for c in ks.distinct_cells() if ks.conv_edges(c) == 0][:3]
    costly = [c for c in ks.distinct_cells() if ks.conv_edges(c) == 6][:5]
    order = [costly[0], cheap[0], costly[1], costly[2], cheap[1], costly[3], cheap[2], costly[4]]
    monkeypatch.setattr(KernelSet, "distinct_cells", lambda self: tuple(order))
    monkeypatch.setattr(KernelSet, "exhaustive_order", lambda self, seed: list(order))
    budget = footprint(ks.extremes()[0], ks, LAPTOP, sample.info).params
    seen = []
    result = search(
        sample,
        iterations=6,
        seed=0,
        exhaustive=True,
        max_params=budget,
        progress=lambda done, total, _best: seen.append((done, total)),
    )
    assert [c.genotype for c in result.candidates] == cheap and result.iterations == 3 and not result.stopped
    assert seen == [(1, 3), (2, 3), (3, 3)]
    first = search(sample, iterations=2, seed=0, exhaustive=True, max_params=budget)
    assert [c.genotype for c in first.candidates] == cheap[:2]


def scored(result):
    return [(c.index, c.genotype, c.score, c.silent_layers, c.firing_rate, c.params) for c in result.candidates]


@pytest.mark.slow
def test_candidates_in_flight_give_one_at_a_times_results_in_order(sample):
    """Slots score candidates in processes of their own and in any order; what the search hands on (and a
    job records as done) is the same candidates, scores and order as one at a time, fresh draws included."""
    fresh = dataclasses.replace(TINY_SCORE, shared=False)
    one = search(sample, iterations=7, seed=2, config=fresh)
    seen = []
    three = search(sample, iterations=7, seed=2, config=fresh, in_flight=3, on_candidate=lambda c: seen.append(c.index))
    assert scored(three) == scored(one) and seen == list(range(7))


@pytest.mark.slow
def test_candidates_in_flight_stop_at_a_prefix_and_resume_to_the_same_result(sample):
    fresh = dataclasses.replace(TINY_SCORE, shared=False)
    # 30 candidates: while one process compiles its first, the other may finish several, all handed on at once
    full = search(sample, iterations=30, seed=5, config=fresh)
    reported = []
    partial = search(
        sample,
        iterations=30,
        seed=5,
        config=fresh,
        in_flight=2,
        on_candidate=reported.append,
        should_stop=lambda: len(reported) >= 3,
    )
    assert partial.stopped and [c.index for c in partial.candidates] == list(range(len(partial.candidates)))
    assert 3 <= len(partial.candidates) < 30  # what was in flight at the stop is dropped, not reported
    resumed = search(sample, iterations=30, seed=5, config=fresh, in_flight=2, done=partial.candidates)
    assert scored(resumed) == scored(full)


def test_a_failing_scoring_process_raises_its_error_in_the_search(sample):
    from engine.search.inflight import ScoringProcessError

    with pytest.raises(ScoringProcessError, match="a scoring process failed:(.|\n)*Traceback"):
        search(sample, iterations=3, in_flight=2, device="meta")  # no process can score on the meta device
    with pytest.raises(ValueError, match="candidates in flight must be at least 1"):
        search(sample, in_flight=0)
