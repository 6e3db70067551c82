"""The Study page (and the Results page's choices), run in this process by Streamlit's AppTest against real
stores; the finished study is run by a real worker."""

from __future__ import annotations

import json
import math
import threading

import pytest
from helpers import APP, SAFE_NAME, app, texts
from streamlit.testing.v1 import AppTest

from engine import api

PAGE = "pages/study.py"
CHART_TITLES = [
    "Training-free score vs trained accuracy",
    "Top-1 accuracy by kernel set (error bars: 95% over seeds)",
    "Accuracy difference between kernel sets (95% interval)",
    "Accuracy at equal conv-edge count",
]


@pytest.fixture(scope="module")
def finished_study(studio):
    """A tiny study run to the end by a real worker on ``folder:mini`` (about 10 s), in its own database."""
    from engine.jobs.worker import serve

    store = api.get_store(studio["root"] / "study.db")
    config = api.StudyConfig(
        dataset=studio["mini"],
        kernel_sets=("1x1_3x3", "3x3_5x5"),
        cells=6,
        sample=3,
        top=1,
        seeds=2,
        epochs=1,
        device="cpu",
        paired=True,
        name="finished study",
    )
    ids = api.submit_study(config, store=store)
    serve(store, devices=["cpu"], idle_exit=0.2, stop=threading.Event())
    assert set(api.runs_frame([ids["experiment_id"]], store=store)["status"]) == {"done"}
    return {**ids, "store": store}


def set_form(at: AppTest, **values) -> AppTest:
    for key, value in values.items():
        at.number_input(key=f"study_{key}").set_value(value)
    return at.run()


def test_empty_state_opens_the_launch_form(own_db):
    at = app(PAGE)
    assert [t.value for t in at.title] == ["Study"]
    assert "No studies yet" in texts(at)
    (expander,) = at.expander
    assert expander.label == "Launch a study" and expander.proto.expanded
    assert not at.button(key="study_launch").disabled  # the defaults are a valid study
    assert not at.get("plotly_chart")


def test_launch_explains_each_problem_and_writes_nothing(own_db):
    at = app(PAGE)
    set_form(at, cells=3, top=4)
    assert "score at least as many cells (3) as the top cells trained (4)" in texts(at)
    assert at.button(key="study_launch").disabled

    set_form(at, cells=10, top=3, seeds=0)
    assert "score at least as many cells" not in texts(at)
    assert "seeds must be from 1 to 100" in texts(at)
    assert at.button(key="study_launch").disabled

    set_form(at, seeds=2)
    at.text_input(key="study_custom_sets").input("4x4,6x6").run()
    assert "kernel size 4 is not allowed" in texts(at)
    assert at.button(key="study_launch").disabled

    at.text_input(key="study_custom_sets").input("").run()
    at.multiselect(key="study_sets").set_value([]).run()
    assert "pick at least one kernel set" in texts(at)
    assert at.button(key="study_launch").disabled

    at.multiselect(key="study_sets").set_value(["1x1_3x3"]).run()
    at.checkbox(key="study_exhaustive").check().run()
    set_form(at, cells=8000, sample=8000)
    assert "only 7,012 distinct cells exist; an exhaustive study" in texts(at)
    assert "only 7,012 distinct cells exist; a uniform sample" in texts(at)
    assert at.button(key="study_launch").disabled
    assert not at.exception
    assert api.list_experiments(store=own_db["store"]).empty
    assert not own_db["worker_starts"]


def test_launch_queues_a_study_and_shows_it(own_db, studio):
    at = app(PAGE)
    at.selectbox(key="study_dataset").select("folder").run()
    at.text_input(key="study_folder").input("mini").run()
    assert "on disk" in texts(at)
    at.multiselect(key="study_sets").set_value(["1x1_3x3", "3x3_5x5"])
    at.text_input(key="study_custom_sets").input("5,9")
    set_form(at, cells=6, sample=4, top=2, seeds=2, epochs=1)
    at.selectbox(key="study_device").select("cpu")
    at.text_input(key="study_name").input("from the study test").run()
    shown = texts(at)
    assert (
        "3 kernel set(s), each: 6 cells searched, the top 2 and 4 sampled cells trained with 2 seed(s) each: " in shown
    )
    assert "up to 12 trainings of 1 epoch(s)" in shown and "Roughly" in shown  # Launch's estimate for the trainings
    assert "With 4 sampled cells per kernel set, a Spearman correlation of 0.9" in shown
    assert at.warning and "Weaker ones mostly go unseen" in at.warning[0].value  # a weak design is warned about
    assert not at.button(key="study_launch").disabled

    at.button(key="study_launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Study #1 queued: 3 kernel set(s)." in texts(at)
    assert own_db["worker_starts"], "launching starts the worker"
    assert at.button(key="study_launch").disabled, "the same study cannot be queued twice by a second click"

    store = own_db["store"]
    (study,) = api.list_experiments(store=store).itertuples()
    assert (study.kind, study.name) == ("study", "from the study test")
    config = api.get_experiment(study.id, store=store)["config"]
    assert tuple(config["kernel_sets"]) == ("1x1_3x3", "3x3_5x5", "5x5_9x9")
    assert (config["cells"], config["sample"], config["top"], config["seeds"], config["epochs"]) == (6, 4, 2, 2, 1)
    assert (config["dataset"], config["device"]) == ("folder:mini", "cpu")
    assert at.selectbox(key="study_pick").value == study.id
    shown = texts(at)
    assert "Scoring: 0/6 cells · waiting for the worker" in shown
    assert "Refreshing every 2 s" in shown and "Nothing trained yet" in shown
    assert not at.get("plotly_chart")
    assert api.cancel(int(study.id), store=store) == 3  # nobody runs them


def test_the_finished_study_shows_its_report_charts_and_downloads(finished_study, downloads, monkeypatch):
    monkeypatch.setenv("SPIKERNEL_DB", str(finished_study["store"].path))
    monkeypatch.setattr(api, "ensure_worker", lambda **kw: None)
    eid, store = finished_study["experiment_id"], finished_study["store"]
    at = app(PAGE)
    assert at.selectbox(key="study_pick").value == eid
    assert not at.expander[0].proto.expanded  # a study exists: the form stays folded
    report = api.study_report(eid, store=store)

    table, picks = [d.value for d in at.dataframe]  # correlations, then the pick (not exhaustive: no search regret)
    assert list(table["kernel_set"]) == ["1x1_3x3", "3x3_5x5"]
    assert list(table["scored"]) == [6, 6] and list(table["sampled"]) == [3, 3]
    for row, k in zip(table.itertuples(), report.kernel_sets):
        if math.isnan(k.spearman.estimate):  # shown as a dash, with why
            assert row.spearman == "—"
            assert "—: not defined" in texts(at)
        else:
            assert row.spearman.startswith(f"{k.spearman.estimate:+.2f}") and "· p " in row.spearman
    for row, k in zip(picks.itertuples(), report.kernel_sets):
        assert row.pick.startswith(f"{k.top1.mean:.1%}") and "(n=2)" in row.pick
        assert row.sample == pytest.approx(k.pick.sample_mean * 100)
    shown = texts(at)
    assert "Done: the score's top cell reached" in shown
    assert "laptop profile (reduced scale)" in shown and "**Scale**" in shown

    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert [c["layout"]["title"]["text"] for c in charts] == CHART_TITLES
    assert all("laptop profile (reduced scale)" in c["layout"]["title"]["subtitle"]["text"] for c in charts)
    points = sum(len(t["x"]) for t in charts[0]["data"])
    assert points == len(report.cells) == 8
    assert {t["marker"]["symbol"] for t in charts[0]["data"]} <= {"star", "circle", "square"}
    assert any("genotype" in t["hovertemplate"] for t in charts[0]["data"])

    experiment = api.get_experiment(eid, store=store)
    for fmt in api.EXPORT_FORMATS:
        name = api.export_name(experiment, fmt)
        assert SAFE_NAME.fullmatch(name) and name.endswith(f".{fmt}")
        assert name in downloads["deferred"], "exports are built when asked, not on every run"
        assert downloads["files"][name] == api.export_study(eid, fmt, store=store)
    rows = downloads["files"][api.export_name(experiment, "csv")].splitlines()
    trained = {tuple(row.split(",")[:2]) for row in rows[1:]}
    assert len(rows) == 1 + 2 * len(trained) and len(trained) in (6, 7, 8)  # per set the pick and 3 sampled, 2 seeds


def test_results_lists_experiments_but_not_studies(own_db, studio):
    store = own_db["store"]
    plain = store.add_experiment(
        "plain",
        {"dataset": "sample"},
        profile="laptop",
        reduced=True,
        runs=[{"setting": "1x1_3x3_3x", "kernel_set": "1x1_3x3", "iterations": 3}],
    )
    study = api.submit_study(api.StudyConfig(kernel_sets=("1x1_3x3",), cells=4, sample=3, top=1, epochs=1), store=store)
    at = app("pages/results.py")
    assert at.selectbox(key="results_experiment").options == [f"#{plain['experiment_id']} · plain · 0 finished"]
    assert study["experiment_id"] not in (at.selectbox(key="results_experiment").value,)

    at = app(PAGE)
    assert at.selectbox(key="study_pick").value == study["experiment_id"]
    assert len(at.selectbox(key="study_pick").options) == 1

    newer = api.submit_study(api.StudyConfig(kernel_sets=("3x3_5x5",), cells=4, sample=3, top=1, epochs=1), store=store)
    assert app(PAGE).selectbox(key="study_pick").value == newer["experiment_id"]  # the newest by default
    linked = AppTest.from_file(APP, default_timeout=60)
    linked.query_params["study"] = str(study["experiment_id"])  # a link to the older one: /study?study=N
    linked.run()
    linked.switch_page(PAGE).run()
    assert linked.selectbox(key="study_pick").value == study["experiment_id"]
    api.cancel(newer["experiment_id"], store=store)
    api.cancel(study["experiment_id"], store=store)
    api.cancel(plain["experiment_id"], store=store)
