"""The study job: its plan of cells to train, its validation, a real worker killed mid-study, the report
and the command line. Runs on ``folder:mini`` (real sample images, 2 classes)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from helpers import cli
from test_worker import finish, kill9, start_worker, wait_for

from engine import api
from engine.core.space import KernelSet
from engine.store import Store
from engine.study.studies import plan, report, search_regret, trainings

SNASNET = KernelSet(1, 3)


def candidates(n: int, seed: int = 0) -> list[dict]:
    """``n`` scored candidates with conv-edge counts 1..6 and distinct scores (a few repeated cells)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cells = [g.to_str() for g in SNASNET.distinct_cells()[:n]]
    cells[5] = cells[2]  # the random search can propose a cell twice: it is trained once
    return [
        {
            "index": i,
            "genotype": g,
            "score": float(rng.normal()),
            "conv_edges": int(rng.integers(1, 7)),
            "params": int(1e5 + rng.integers(0, 1e5)),
        }
        for i, g in enumerate(cells)
    ]


def test_the_plan_trains_the_top_cells_with_every_seed_and_spreads_the_rest():
    scored = candidates(60)
    cells = plan(scored, trained=12, top=3, seeds=2, seed=7)
    assert cells == plan(list(reversed(scored)), trained=12, top=3, seeds=2, seed=7)  # the same on a resume
    assert len(cells) == 12 and len({c.genotype for c in cells}) == 12
    by_score = sorted({c["genotype"]: c for c in reversed(scored)}.values(), key=lambda c: -c["score"])
    assert [c.genotype for c in cells if c.role == "top"] == [c["genotype"] for c in by_score[:3]]
    assert [c.seeds for c in cells if c.role == "top"] == [(7, 8)] * 3
    assert sum(c.role == "random" for c in cells) == 3 and all(c.seeds == (7,) for c in cells[3:])
    spread = [c for c in cells if c.role == "spread"]
    assert len({c.conv_edges for c in spread}) >= 4  # across the conv-edge counts
    assert max(c.score for c in spread) > min(c.score for c in spread)
    runs = trainings(cells)
    assert len(runs) == 15 and runs[:12] == [(c, 7) for c in cells]  # every cell once before any second seed


def test_a_plan_never_asks_for_more_cells_than_were_scored():
    cells = plan(candidates(8), trained=12, top=3, seeds=1, seed=0)
    assert len(cells) == 7  # 8 candidates, one cell twice


def report_rows(accuracy) -> tuple[list[dict], list[dict]]:
    scored = candidates(40)
    rows = [
        {
            "kernel_set": "3x3_5x5",
            "genotype": c.genotype,
            "role": c.role,
            "candidate": c.candidate,
            "score": c.score,
            "conv_edges": c.conv_edges,
            "params": c.params,
            "seed": s,
            "accuracy": accuracy(c, s),
        }
        for c, s in trainings(plan(scored, trained=10, top=2, seeds=3, seed=0))
    ]
    return scored, rows


def test_the_report_on_a_score_that_orders_accuracy_perfectly():
    scored, rows = report_rows(lambda c, s: 0.5 + c.score / 10 + s * 1e-3)
    r = report([{"id": 1, "kernel_set": "3x3_5x5"}], rows, {1: scored}, resamples=200)
    (k,) = r.kernel_sets
    assert k.scored == 40 and k.trained == 10
    assert k.correlation.spearman.estimate == pytest.approx(1.0) and k.correlation.kendall.estimate == pytest.approx(
        1.0
    )
    assert k.regret.regret == 0 and k.regret.gain > 0
    assert k.top1.n == 3 and k.top1.mean == pytest.approx(max(c["accuracy"] for c in r.cells))
    assert sum(row["n"] for row in r.by_edges) == 10 and sum(row["n"] for row in r.by_params) == 10
    json.dumps(r.to_dict(), allow_nan=False)  # JSON-ready: undefined values are null


def test_the_report_on_a_score_that_says_nothing():
    scored, rows = report_rows(lambda c, s: 0.5)
    (k,) = report([{"id": 1, "kernel_set": "3x3_5x5"}], rows, {1: scored}, resamples=200).kernel_sets
    assert math.isnan(k.correlation.spearman.estimate)  # constant accuracy: no ordering to measure
    assert k.regret.regret == 0 and k.regret.gain == 0


def test_replayed_random_searches_find_more_with_more_iterations():
    scores = {g.to_str(): float(i % 997) for i, g in enumerate(SNASNET.distinct_cells())}
    small, large = search_regret(SNASNET, scores, sizes=(50, 2000), searches=6)
    assert small.iterations == 50 and large.iterations == 2000
    assert large.score_gap <= small.score_gap and large.percentile >= small.percentile  # the first 50 are within 2000
    assert 0 <= small.percentile <= 1 and 0 <= large.found_top1 <= 1


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (dict(cells=3, trained=4), "cells", "at least as many cells"),
        (dict(seeds=0), "seeds", "at least 1"),
        (dict(kernel_sets=("3x3_4x4",)), "kernel_sets", "odd"),
        (dict(top=5, trained=4), "trained", "top 5"),
        (dict(exhaustive=True, cells=8000), "cells", "7,012 distinct cells"),
    ],
)
def test_bad_study_parameters_are_refused_and_nothing_is_written(tmp_path, studio, changes, field, message):
    store = Store(tmp_path / "s.db")
    config = api.StudyConfig(dataset=studio["mini"], **{**dict(cells=6, trained=4, top=2, seeds=2), **changes})
    with pytest.raises(api.ConfigError) as error:
        api.submit_study(config, store=store)
    assert message in error.value.errors[field]
    assert store.experiments() == []


def test_the_command_line_refuses_a_bad_study_before_making_a_database(tmp_path, studio):
    db = tmp_path / "s.db"
    done = cli("--db", str(db), "study", "--dataset", studio["mini"], "--cells", "3", "--trained", "4")
    assert done.returncode != 0 and "cells: score at least as many cells (3) as are trained (4)" in done.stderr
    assert not db.exists()


STUDY = dict(kernel_sets=("1x1_3x3",), cells=6, trained=4, top=2, seeds=2, epochs=2, device="cpu")


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
    assert len(after) == 6  # 4 cells, the top 2 with 2 seeds
    assert [r for r in after if (r["genotype"], r["seed"]) in {(b["genotype"], b["seed"]) for b in before}] == before

    def outcome(rows):
        return [{k: v for k, v in r.items() if k not in ("run_id", "seconds")} for r in rows]

    assert outcome(after) == outcome(store.trained_cells(twin["run_ids"]))
    mine, theirs = (api.study_report(i["experiment_id"], store=store, resamples=100) for i in (killed, twin))
    assert mine.cells == theirs.cells and mine.kernel_sets[0].regret == theirs.kernel_sets[0].regret
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
        "--trained",
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
    assert first["scored"] == 5 and first["trained"] == 3 and len(first["search_regret"]) == 2
    rows = cli("--db", str(db), "study-report", "1", "--format", "csv").stdout.splitlines()
    assert rows[0].startswith("kernel_set,genotype,seed,role") and len(rows) == 1 + 2 * 4  # 3 cells + a second seed
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
