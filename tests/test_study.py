"""The study job: its plan of cells to train, its validation, a real worker killed mid-study, the report
and the command line. Runs on ``folder:mini`` (real sample images, 2 classes)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from helpers import cli, finish, kill9, start_worker, wait_for
from scipy import stats as scipy_stats

from engine import api
from engine.core.space import Genotype, KernelSet
from engine.store import Store
from engine.study.studies import SAMPLE_INDEX, plan, report, sample_cells, search_regret, trainings

SNASNET = KernelSet(1, 3)
LARGER = KernelSet(3, 5)


def candidates(n: int, seed: int = 0) -> list[dict]:
    """``n`` scored candidates with distinct scores, one of them a relabelled copy of another cell."""
    rng = np.random.default_rng(seed)
    cells = [g.to_str() for g in SNASNET.distinct_cells()[:n]]
    unjoined = next(g for g in SNASNET.distinct_cells() if g.op(1, 2) == 0 and g.swapped() != g)
    cells[5], cells[6] = unjoined.to_str(), unjoined.swapped().to_str()  # the same network, nodes 1 and 2 swapped
    return [
        {
            "index": i,
            "genotype": g,
            "score": float(rng.normal()),
            "conv_edges": SNASNET.conv_edges(Genotype.from_str(g)),
            "params": int(1e5 + rng.integers(0, 1e5)),
        }
        for i, g in enumerate(cells)
    ]


def test_the_plan_trains_the_top_cells_and_a_uniform_sample_with_every_seed():
    scored = candidates(60)
    cells = plan(SNASNET, scored, sample=10, top=3, seeds=2, seed=7)
    assert cells == plan(SNASNET, list(reversed(scored)), sample=10, top=3, seeds=2, seed=7)  # the same on a resume
    canonical = {SNASNET.canonical(Genotype.from_str(c["genotype"])).to_str(): c for c in reversed(scored)}
    best = sorted(canonical, key=lambda g: (-canonical[g]["score"], canonical[g]["index"]))[:3]
    assert [c.genotype for c in cells if c.role == "top"] == best
    assert all(c.seeds == (7, 8) for c in cells)  # the sample is trained with the pick's seeds
    sampled = [c for c in cells if c.sampled]
    assert len(sampled) == 10 and all(
        c.score is None and c.candidate >= SAMPLE_INDEX for c in sampled if c.role == "random"
    )
    runs = trainings(cells)
    assert len(runs) == 2 * len(cells) and runs[: len(cells)] == [(c, 7) for c in cells]  # every cell once first


def test_the_plan_never_trains_two_relabelled_copies_of_one_cell():
    scored = candidates(12)
    for c in scored:
        c["score"] = 1.0 if c["index"] in (5, 6) else 0.0  # the copies score highest
    cells = plan(SNASNET, scored, sample=200, top=3, seeds=1, seed=0)
    networks = [SNASNET.canonical(Genotype.from_str(c.genotype)) for c in cells]
    assert len(set(networks)) == len(cells)
    assert cells[0].candidate == 5 and cells[1].score == 0.0  # the copy (index 6) is not the second top cell


def test_the_sample_differs_between_kernel_sets_unless_paired():
    scored = candidates(60)
    small, large = (
        {c.genotype for c in plan(space, scored, sample=20, top=3, seeds=1, seed=0) if c.sampled}
        for space in (SNASNET, LARGER)
    )
    assert len(small & large) < 5  # two independent draws of 20 from 7,012 cells
    small, large = (
        {c.genotype for c in plan(space, scored, sample=20, top=3, seeds=1, seed=0, paired=True) if c.sampled}
        for space in (SNASNET, LARGER)
    )
    assert small == large


def test_the_sample_is_uniform_over_distinct_cells():
    distinct = SNASNET.distinct_cells()
    edges = np.bincount([SNASNET.conv_edges(g) for g in distinct], minlength=7) / len(distinct)
    drawn = [SNASNET.conv_edges(g) for seed in range(150) for g in sample_cells(SNASNET, seed, 40)]
    observed = np.bincount(drawn, minlength=7)
    assert scipy_stats.chisquare(observed, edges * len(drawn)).pvalue > 0.001
    assert len(set(sample_cells(SNASNET, 3, 500))) == 500


def population(seed: int, informative: float) -> dict[str, tuple[float, float]]:
    """Every distinct cell's (score, true accuracy): accuracy rises with conv edges; the score shares
    ``informative`` of the accuracy's own variation and counts conv edges besides."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in SNASNET.distinct_cells():
        edges = SNASNET.conv_edges(g)
        quality = 0.004 * edges + rng.normal(0, 0.01)
        out[g.to_str()] = (informative * quality / 0.01 + 0.2 * edges + rng.normal(), 0.25 + quality)
    return out


def simulated_study(truth: dict, seed: int, sample: int, noise: float = 0.008) -> list[dict]:
    """The rows a study of ``truth`` stores: its plan, each cell trained with two noisy seeds."""
    scored = [
        {"index": i, "genotype": g.to_str(), "score": truth[g.to_str()][0], "conv_edges": 0, "params": 100_000}
        for i, g in enumerate(SNASNET.exhaustive_order(seed)[:100])
    ]
    rng = np.random.default_rng(seed + 1000)
    return [
        {
            "kernel_set": SNASNET.name,
            "genotype": c.genotype,
            "role": c.role,
            "sampled": c.sampled,
            "candidate": c.candidate,
            "score": truth[c.genotype][0],
            "conv_edges": c.conv_edges,
            "params": 100_000 + c.conv_edges,
            "seed": s,
            "accuracy": truth[c.genotype][1] + rng.normal(0, noise),
            "val_accuracy": truth[c.genotype][1] + rng.normal(0, noise),
        }
        for c, s in trainings(plan(SNASNET, scored, sample=sample, top=3, seeds=2, seed=seed))
    ]


def test_the_reported_correlation_is_the_populations_within_its_monte_carlo_error():
    truth = population(0, informative=0.5)
    scores, accuracies = zip(*truth.values())
    target = scipy_stats.spearmanr(scores, accuracies).statistic  # over every distinct cell, measured noiselessly
    reported = [
        report([{"id": 1, "kernel_set": SNASNET.name}], simulated_study(truth, seed, 40, noise=0), {}, resamples=50)
        .kernel_sets[0]
        .spearman.estimate
        for seed in range(120)
    ]
    error = np.std(reported) / math.sqrt(len(reported))
    assert abs(np.mean(reported) - target) < 3 * error + 0.01  # Spearman's own small-sample bias is below 0.01 here


def test_a_useless_score_gives_a_pick_near_zero_standard_errors_above_a_random_cell():
    truth = {g: (float(np.random.default_rng(hash(g) % 2**32).normal()), a) for g, (_, a) in population(1, 0).items()}
    zs = [
        report([{"id": 1, "kernel_set": SNASNET.name}], simulated_study(truth, seed, 30), {}, resamples=50)
        .kernel_sets[0]
        .pick.z
        for seed in range(80)
    ]
    assert abs(np.mean(zs)) < 0.35  # 80 studies: the mean z's standard error is about 0.11
    assert 0.7 < np.std(zs) < 1.4  # and a standard error that is one


def test_the_report_on_a_score_that_orders_accuracy_perfectly():
    truth = {g: (a, a) for g, (_, a) in population(2, 1).items()}
    r = report([{"id": 1, "kernel_set": SNASNET.name}], simulated_study(truth, 0, 20, noise=0), {1: []}, resamples=200)
    (k,) = r.kernel_sets
    assert k.sampled == 20 and k.spearman.estimate == pytest.approx(1.0) and k.spearman.p < 0.01
    assert k.kendall.estimate == pytest.approx(1.0)
    assert k.pick.gain > 0 and k.pick.percentile == 1.0 and k.pick.chosen_on == "validation"
    assert k.top1.n == 2 and k.reliability.seeds == 2
    assert sum(row["n"] for row in r.by_edges) == 20
    json.dumps(r.to_dict(), allow_nan=False)  # JSON-ready: undefined values are null


def test_the_report_on_a_score_that_says_nothing():
    truth = {g: (0.0, 0.5) for g in population(3, 0)}
    (k,) = report(
        [{"id": 1, "kernel_set": SNASNET.name}], simulated_study(truth, 0, 10, noise=0), {}, resamples=50
    ).kernel_sets
    assert math.isnan(k.spearman.estimate)  # constant score and accuracy: no ordering to measure
    assert k.pick.gain == 0 and k.pick.regret == 0


def test_paired_kernel_sets_are_compared_cell_for_cell():
    rows = []
    for space, shift in ((SNASNET, 0.0), (LARGER, 0.01)):
        truth = {g: (s, a + shift) for g, (s, a) in population(4, 0.5).items()}
        for row in simulated_study(truth, 0, 30, noise=0.001):
            if row["sampled"]:
                rows.append({**row, "kernel_set": space.name})
    runs = [{"id": 1, "kernel_set": SNASNET.name}, {"id": 2, "kernel_set": LARGER.name}]
    r = report(runs, rows, {}, resamples=500)
    (difference,) = r.differences
    assert difference.paired and difference.difference.estimate == pytest.approx(0.01, abs=0.001)
    assert difference.difference.low > 0 and r.shared == 30
    assert difference.agreement.estimate > 0.9 and difference.agreement.p < 0.01  # the same cells, shifted
    assert r.pooled.n == 60


def test_kernel_sets_are_compared_at_the_seeds_both_were_trained_with():
    """The second seed lowers every cell by a point; the larger set, one point better, has only its first seed
    so far. Against the smaller set's two-seed mean it would look 1.5 points better."""
    truth = {g: (s, a) for g, (s, a) in population(4, 0.5).items()}
    smaller = [r for r in simulated_study(truth, 0, 30, noise=0) if r["sampled"]]
    for r in smaller:
        r["accuracy"] -= 0.01 * r["seed"]
    larger = [{**r, "kernel_set": LARGER.name, "accuracy": r["accuracy"] + 0.01} for r in smaller if r["seed"] == 0]
    runs = [{"id": 1, "kernel_set": SNASNET.name}, {"id": 2, "kernel_set": LARGER.name}]
    for design in ("paired", "independent"):
        if design == "independent":  # other genotypes: the larger set's cells renamed apart
            larger = [{**r, "genotype": r["genotype"] + " "} for r in larger]
        (difference,) = report(runs, smaller + larger, {}, resamples=200).differences
        assert difference.paired == (design == "paired")
        assert math.isnan(difference.agreement.estimate) == (design == "independent")  # only pairs can agree
        assert difference.difference.estimate == pytest.approx(0.01), design


def test_replayed_random_searches_look_up_the_cells_each_search_would_propose():
    """One cell scores 1, every other 0: a search finds the top cell exactly when its own stream proposes it."""
    first_of_seed_0 = SNASNET.canonical(next(SNASNET.random_cells(0))).to_str()
    scores = {g.to_str(): 0.0 for g in SNASNET.distinct_cells()}
    scores[first_of_seed_0] = 1.0

    def proposes(seed: int, size: int) -> bool:
        stream = itertools.islice(SNASNET.random_cells(seed), size)
        return any(SNASNET.canonical(g).to_str() == first_of_seed_0 for g in stream)

    small, large = search_regret(SNASNET, scores, sizes=(1, 3000), searches=5)
    assert small.found_top1 == pytest.approx(np.mean([proposes(s, 1) for s in range(5)]))
    assert large.found_top1 == pytest.approx(np.mean([proposes(s, 3000) for s in range(5)]))
    assert small.found_top1 >= 0.2  # seed 0's first cell is the top cell
    assert small.score_gap == pytest.approx(1 - small.found_top1)  # the others pick a 0
    below_zero, below_one = 0, (len(scores) - 1) / len(scores)  # share of cells scoring below the pick
    expected = small.found_top1 * below_one + (1 - small.found_top1) * below_zero
    assert small.percentile == pytest.approx(expected)


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (dict(cells=1, top=2), "cells", "at least as many cells"),
        (dict(seeds=0), "seeds", "from 1 to 100"),
        (dict(seeds=101), "seeds", "from 1 to 100"),
        (dict(sample=2), "sample", "at least 3"),
        (dict(sample=8000), "sample", "7,012 distinct cells"),
        (dict(kernel_sets=("3x3_4x4",)), "kernel_sets", "odd"),
        (dict(exhaustive=True, cells=8000), "cells", "7,012 distinct cells"),
        (dict(paired="yes"), "paired", "true or false"),
    ],
)
def test_bad_study_parameters_are_refused_and_nothing_is_written(tmp_path, studio, changes, field, message):
    store = Store(tmp_path / "s.db")
    config = api.StudyConfig(dataset=studio["mini"], **{**dict(cells=6, sample=4, top=2, seeds=2), **changes})
    with pytest.raises(api.ConfigError) as error:
        api.submit_study(config, store=store)
    assert message in error.value.errors[field]
    assert store.experiments() == []


def test_the_command_line_refuses_a_bad_study_before_making_a_database(tmp_path, studio):
    db = tmp_path / "s.db"
    done = cli("--db", str(db), "study", "--dataset", studio["mini"], "--cells", "3", "--top", "4")
    assert (
        done.returncode != 0 and "cells: score at least as many cells (3) as the top cells trained (4)" in done.stderr
    )
    assert not db.exists()


def test_the_command_line_states_the_designs_power_before_launch(tmp_path, studio):
    helped = cli("study", "--help")
    assert f"{api.StudyConfig().sample} cells detect a Spearman correlation of" in " ".join(helped.stdout.split())
    done = cli(
        "--db",
        str(tmp_path / "s.db"),
        "study",
        "--dataset",
        studio["mini"],
        "--cells",
        "4",
        "--sample",
        "5",
        "--top",
        "1",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--kernel-sets",
        "1x1_3x3",
        "--detach",
    )
    assert done.returncode == 0, done.stderr
    assert "5 sampled cells per kernel set detect a Spearman correlation of 0.9" in done.stdout
    assert "warning: this design misses correlations below 0.9" in done.stdout


STUDY = dict(kernel_sets=("1x1_3x3",), cells=6, sample=3, top=1, seeds=2, epochs=2, device="cpu")


@pytest.mark.slow
def test_kill_9_mid_study_resumes_to_the_same_result(tmp_path, studio):
    store = Store(tmp_path / "s.db")
    killed = api.submit_study(api.StudyConfig(dataset=studio["mini"], **STUDY), store=store)
    twin = api.submit_study(api.StudyConfig(dataset=studio["mini"], **STUDY), store=store)
    api.cancel(job_ids=twin["job_ids"], store=store)
    run_id = killed["run_ids"][0]
    worker = start_worker(store.path)
    wait_for(lambda: len(store.trained_cells([run_id])) >= 2, "two trained cells", worker)
    kill9(worker)
    before = store.trained_cells([run_id])
    assert 2 <= len(before) < 6 and store.run(run_id)["stage"] == "train"
    api.retry(job_ids=twin["job_ids"], store=store)

    finish(store.path)
    assert set(api.runs_frame(store=store)["status"]) == {"done"}
    after = store.trained_cells([run_id])
    assert len(after) == 8  # the top cell and 3 sampled cells, each with 2 seeds
    assert [r for r in after if (r["genotype"], r["seed"]) in {(b["genotype"], b["seed"]) for b in before}] == before

    def outcome(rows):
        return [{k: v for k, v in r.items() if k not in ("run_id", "seconds")} for r in rows]

    assert outcome(after) == outcome(store.trained_cells(twin["run_ids"]))
    mine, theirs = (api.study_report(i["experiment_id"], store=store, resamples=100) for i in (killed, twin))
    assert mine.cells == theirs.cells and mine.kernel_sets[0].pick == theirs.kernel_sets[0].pick
    assert store.run(run_id)["accuracy"] == mine.kernel_sets[0].top1.mean
    folder = store.run_folder(killed["experiment_id"], "1x1_3x3_6x")
    assert not list(folder.glob("study-*.pt"))  # the state files of finished trainings are gone


@pytest.mark.slow
def test_the_command_line_runs_a_study_and_reports_it(tmp_path, studio):
    db = tmp_path / "s.db"
    done = cli(
        "--db",
        str(db),
        "study",
        "--dataset",
        studio["mini"],
        "--kernel-sets",
        "1x1_3x3,3x3_5x5",
        "--cells",
        "5",
        "--sample",
        "3",
        "--top",
        "1",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--exhaustive",
    )
    assert done.returncode == 0, done.stderr
    assert "study 1: 2 job(s) queued" in done.stdout and "Spearman" in done.stdout
    assert "random searches replayed" in done.stdout and "3x3_5x5" in done.stdout
    exported = cli("--db", str(db), "study-report", "1", "--format", "json")
    assert exported.returncode == 0, exported.stderr
    payload = json.loads(exported.stdout)
    assert [k["kernel_set"] for k in payload["report"]["kernel_sets"]] == ["1x1_3x3", "3x3_5x5"]
    assert payload["study"]["config"]["exhaustive"] is True
    first = payload["report"]["kernel_sets"][0]
    assert first["scored"] == 5 and first["sampled"] == 3 and len(first["search_regret"]) == 2
    rows = cli("--db", str(db), "study-report", "1", "--format", "csv").stdout.splitlines()
    assert rows[0].startswith("kernel_set,genotype,seed,role")
    trained = {tuple(row.split(",")[:2]) for row in rows[1:]}
    assert len(rows) - 1 == 2 * len(trained) and len(trained) in (7, 8)  # per set: the pick and 3 sampled, 2 seeds
    exhaustive = Store(db).candidates(Store(db).runs([1])[0]["id"])

    assert [c["genotype"] for c in exhaustive] == [g.to_str() for g in SNASNET.exhaustive_order(0)[:5]]


@pytest.mark.slow
def test_an_exhaustive_experiment_scores_distinct_cells_in_the_seeded_order(tmp_path, studio):

    store = Store(tmp_path / "s.db")
    config = api.ExperimentConfig(
        dataset=studio["mini"],
        kernel_sets=("3x3_5x5",),
        iterations=4,
        exhaustive=True,
        epochs=1,
        seed=3,
        device="cpu",
        baseline=None,
    )
    with pytest.raises(api.ConfigError, match="7,012 distinct cells"):
        api.submit_experiment(replace(config, iterations=7013), store=store)
    ids = api.submit_experiment(config, store=store)
    finish(store.path)
    scored = [c["genotype"] for c in store.candidates(ids["run_ids"][0])]
    assert scored == [g.to_str() for g in SNASNET.exhaustive_order(3)[:4]]
    assert api.runs_frame(store=store)["status"].tolist() == ["done"]


def test_a_studys_searches_are_one_experiment_without_a_baseline():
    """What a study's fields are checked as and its time estimated from: its kernel sets' searches only, though
    an experiment's own default measures against the paper's baseline."""
    config = api.StudyConfig(kernel_sets=("1x1_3x3", "5x5_7x7"), cells=40, epochs=3, seed=2)
    searches = api.study_searches(config)
    assert api.ExperimentConfig().baseline == "1x1_3x3_5000x" and searches.baseline is None
    assert [s.name for s in searches.settings()] == ["1x1_3x3_40x", "5x5_7x7_40x"]
    assert (searches.epochs, searches.seed, searches.profile) == (3, 2, config.profile)
    assert api.validate_study(replace(config, in_flight=0), check_data=False) == {
        "in_flight": "candidates in flight must be a whole number from 1 to 32"
    }
