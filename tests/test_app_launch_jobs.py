"""The Launch and Jobs pages, run in this process by Streamlit's AppTest against real stores and workers."""

from __future__ import annotations

import re
import shutil
import threading

import pytest
from helpers import APP, app, texts, write_subset
from streamlit.testing.v1 import AppTest

from engine import api
from engine.jobs.worker import serve
from ui.charts import format_seconds


def test_launch_explains_each_problem_and_disables_launch(own_db):
    at = app()
    assert not at.button(key="launch").disabled
    assert "bundled with the app" in texts(at)

    for name in ("1x1_3x3", "3x3_5x5"):
        at.checkbox(key=f"ks_{name}").uncheck()
    at.run()
    assert "pick at least one kernel set" in texts(at)
    assert at.button(key="launch").disabled

    at.text_input(key="custom_sets").input("4x4,6x6").run()
    assert "kernel size 4 is not allowed: a kernel set is two or more distinct odd kernel sizes" in texts(at)
    assert at.button(key="launch").disabled

    at.text_input(key="custom_sets").input("5x5,9x9; 3,11").run()
    assert "is not allowed" not in texts(at)
    assert not at.button(key="launch").disabled

    at.text_input(key="baseline").input("1x1_3x3").run()
    assert "is not a setting" in texts(at)
    at.toggle(key="baseline_on").set_value(False).run()
    assert not at.button(key="launch").disabled

    at.number_input(key="in_flight").set_value(2).run()  # allowed on a CPU, with a word on what it costs
    assert "On a CPU they share its cores" in texts(at) and not at.button(key="launch").disabled
    at.number_input(key="in_flight").set_value(1).run()
    assert "On a CPU they share its cores" not in texts(at)

    at.selectbox(key="dataset").select("folder").run()
    at.text_input(key="folder").input("/etc").run()
    assert "outside the allowed data roots" in texts(at)
    assert at.button(key="launch").disabled

    at.text_input(key="budget").input("lots").run()
    assert "is not a budget" in texts(at)
    assert not at.exception


def test_training_epochs_follow_the_chosen_profile(own_db, studio):
    at = app()
    assert at.number_input(key="epochs").value == 10  # the laptop profile's
    at.selectbox(key="profile").select("paper").run()
    assert at.number_input(key="epochs").value == 300  # the paper's training length
    at.number_input(key="epochs").set_value(7).run()
    assert at.number_input(key="epochs").value == 7  # a choice of the user's stays
    assert not at.exception


def test_launch_queues_the_experiment(own_db, studio):
    at = app()
    at.selectbox(key="dataset").select("folder").run()
    at.text_input(key="folder").input("tiny").run()
    assert "on disk" in texts(at)
    at.number_input(key="iterations").set_value(3)
    at.toggle(key="baseline_on").set_value(False)
    at.number_input(key="epochs").set_value(1)
    at.selectbox(key="device").select("cpu")
    at.text_input(key="name").input("from the launch test")
    at.text_input(key="budget").input("40MB").run()
    at.selectbox(key="bits").select(8).run()
    shown = api.ExperimentConfig(
        dataset="folder:tiny", kernel_sets=("1x1_3x3", "3x3_5x5"), iterations=3, baseline=None, epochs=1, device="cpu"
    )
    estimate = format_seconds(api.estimate_seconds(shown, store=own_db["store"]))
    assert [(m.label, m.value) for m in at.metric] == [
        ("Runs", "2"),
        ("Cells scored", "6"),
        ("Estimated time", estimate),
    ]
    (sizes,) = [d.value for d in at.dataframe]  # network sizes per kernel set
    expected = api.network_sizes("laptop", "folder:tiny", ("1x1_3x3", "3x3_5x5"))
    assert sizes[["kernel_set", "min_params", "max_params"]].to_dict("records") == expected[
        ["kernel_set", "min_params", "max_params"]
    ].to_dict("records")
    assert not at.button(key="launch").disabled

    at.button(key="launch").click().run()
    assert not at.exception
    assert "queued: 2 run(s)" in texts(at)
    assert [link.value for link in at.get("page_link")] == ["Follow its progress on the Jobs page"]
    assert own_db["worker_starts"], "Launch starts the worker"
    assert at.button(key="launch").disabled, "the same form cannot be queued twice by a second click"
    at.text_input(key="name").input("a second one").run()
    assert not at.button(key="launch").disabled

    store = own_db["store"]
    experiment = api.list_experiments(store=store).iloc[0]
    config = api.get_experiment(int(experiment["id"]), store=store)["config"]
    assert (experiment["name"], config["dataset"], config["device"]) == ("from the launch test", "folder:tiny", "cpu")
    assert (config["budget"], config["bits"], config["iterations"], config["baseline"]) == ("40MB", 8, 3, None)
    assert list(api.jobs_frame(store=store)["status"]) == ["queued", "queued"]
    assert api.cancel(int(experiment["id"]), store=store) == 2  # nobody runs them


def test_jobs_page_shows_the_finished_experiment(finished):
    at = app("pages/jobs.py")
    shown = texts(at)
    assert "finished fixture" in shown and "Nothing queued or running." in shown
    ours = [p for p in at.get("progress") if p.text.replace("\\", "").startswith("Done: test accuracy")]
    assert len(ours) >= 3 and all(p.value == 100 for p in ours)  # baseline and two kernel sets
    for setting in ("1x1_3x3_6x", "1x1_3x3_3x", "3x3_5x5_3x"):
        assert f"**{setting}**" in shown
    logs = [e for e in at.expander if e.label == "Log"]
    assert any("done: accuracy" in code.value for e in logs for code in e.code)


def test_a_failed_job_shows_its_error_and_can_be_retried_cancelled_and_deleted(own_db, studio, sample):
    store = own_db["store"]
    folder = studio["root"] / f"vanishing-{store.path.parent.name}"
    write_subset(sample, folder, classes=2, train_per_class=16, test_per_class=4)  # enough for submit's checks
    config = api.ExperimentConfig(
        dataset=f"folder:{folder.name}",
        kernel_sets=("1x1_3x3",),
        iterations=2,
        epochs=1,
        device="cpu",
        baseline=None,
        name="doomed",
    )
    ids = api.submit_experiment(config, store=store)
    shutil.rmtree(folder)  # the dataset disappears before the worker gets to it: a real failure
    serve(store, devices=["cpu"], idle_exit=0.2, stop=threading.Event())
    assert list(api.jobs_frame(store=store)["status"]) == ["failed"]

    at = app("pages/jobs.py")
    shown = texts(at)
    assert "doomed" in shown and "failed" in shown
    assert "DatasetError" in shown and "does not exist" in shown
    assert [e.label for e in at.expander] == ["Log"]

    at.button(key=f"retry_job_{ids['job_ids'][0]}").click().run()
    assert not at.exception
    assert "Queued 1 job(s) again" in texts(at)
    assert list(api.jobs_frame(store=store)["status"]) == ["queued"]
    assert own_db["worker_starts"]

    at.button(key=f"cancel_exp_{ids['experiment_id']}").click().run()
    assert list(api.jobs_frame(store=store)["status"]) == ["cancelled"]
    assert "Cancelled 1 job(s)" in texts(at)

    at.button(key=f"delete_exp_{ids['experiment_id']}").click().run()
    assert not at.exception
    assert api.list_experiments(store=store).empty
    assert "No jobs yet." in texts(at)


def test_a_running_job_shows_live_progress_and_can_be_cancelled(own_db, studio):
    store = own_db["store"]
    config = api.ExperimentConfig(
        dataset=studio["dataset"],
        kernel_sets=("3x3_5x5",),
        iterations=10,
        epochs=1,
        device="cpu",
        baseline=None,
        name="in flight",
    )
    ids = api.submit_experiment(config, store=store)
    lease = store.claim("test:1", "cpu", stale_after=60)  # as a worker would, without running anything
    store.heartbeat(lease, {"stage": "search", "done": 4, "total": 10, "note": "best score 1.23", "eta_seconds": 75})

    at = app("pages/jobs.py")
    shown = texts(at)
    assert "Search: 4/10 cells · best score 1.23" in shown and "ETA 1 min 15 s" in shown
    assert "refreshing every 2 s" in shown
    assert [p.value for p in at.get("progress")] == [40]
    assert own_db["worker_starts"], "the sidebar starts a worker for queued work"

    at.button(key=f"cancel_job_{ids['job_ids'][0]}").click().run()
    assert "cancelling…" in texts(at)
    assert store.heartbeat(lease, {"stage": "search", "done": 5, "total": 10}), "the worker is told to stop"
    store.end_job(lease, "cancelled")


def test_jobs_page_empty_state(own_db):
    at = app("pages/jobs.py")
    assert "No jobs yet." in texts(at)
    assert [link.value for link in at.get("page_link")] == ["Launch an exploration"]


@pytest.mark.parametrize("kind", ["empty", "damaged", "folder"])
def test_a_database_that_cannot_be_opened_is_a_message_not_a_traceback(studio, tmp_path, monkeypatch, kind):
    path = tmp_path / "bad.db"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"" if kind == "empty" else b"SQLite format 3\x00" + b"\x00" * 84 + b"garbage" * 500)
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setenv("SPIKERNEL_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "experiment database cannot be opened" in texts(at)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "folder, message",
    [("p" * 300, "longer than 255 bytes"), ("pets\x00", "control character")],
)
def test_launch_turns_an_absurd_folder_name_into_a_field_error(own_db, folder, message):
    at = app()
    at.selectbox(key="dataset").select("folder").run()
    at.text_input(key="folder").input(folder).run()
    assert not at.exception, [e.value for e in at.exception]
    assert message in texts(at)
    assert at.button(key="launch").disabled


def test_launch_trims_spaces_around_a_folder_name(own_db):
    """A space typed around the name is the field's, not the folder's: ' tiny' reads folder 'tiny'."""
    at = app()
    at.selectbox(key="dataset").select("folder").run()
    at.text_input(key="folder").input(" tiny ").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "on disk" in texts(at) and "spaces around it" not in texts(at)
    assert not at.button(key="launch").disabled


def test_jobs_page_shows_a_dataset_spec_literally(own_db):
    spec = "folder:[click me](https://example.invalid)"
    own_db["store"].add_experiment(
        "injected",
        {"dataset": spec},
        profile="laptop",
        reduced=True,
        runs=[{"setting": "1x1_3x3_3x", "kernel_set": "1x1_3x3", "iterations": 3}],
    )
    at = app("pages/jobs.py")
    captions = [c.value for c in at.caption]
    assert any("folder\\:\\[click me\\]\\(https\\:" in c for c in captions), captions
    assert not any("[click me](" in c for c in captions)


def test_the_benchmark_preset_fills_the_form_for_spikenas_bench(own_db):
    at = app()
    assert "New here?" in texts(at)
    at.button(key="benchmark_preset").click().run()
    assert not at.exception
    assert not any(at.checkbox(key=f"ks_{name}").value for name in ("1x1_3x3", "3x3_5x5"))
    assert at.text_input(key="custom_sets").value == "spikenas"
    assert (at.number_input(key="iterations").value, at.text_input(key="baseline").value) == (1000, "spikenas_5000x")
    assert at.selectbox(key="profile").value == "laptop" and at.selectbox(key="dataset").value == "sample"
    assert [m.value for m in at.metric[:2]] == ["2", "6,000"]  # runs, cells scored; nothing to train
    assert not at.button(key="launch").disabled
    at.button(key="launch").click().run()
    store = own_db["store"]
    config = api.get_experiment(int(api.list_experiments(store=store).iloc[0]["id"]), store=store)["config"]
    assert (config["kernel_sets"], config["baseline"], config["iterations"]) == (["spikenas"], "spikenas_5000x", 1000)
    api.cancel(int(api.list_experiments(store=store).iloc[0]["id"]), store=store)


# ---------------------------------------------------------------------------- names and errors shown literally

MARKDOWN_NAME = "**bold** [x](http://e) _it_ `code` <b>html</b> $x^2$ :red[red] ~~gone~~ # head"
MARKDOWN_ERROR = "RuntimeError: **boom** [click](https://example.invalid) _it_ $y$ :blue[z]"
MUST_ESCAPE = set("*_[]()`<>$:~#")  # what Markdown (and Streamlit's :colour[] and $math$) would read


def shown_literally(at, text: str) -> list[str]:
    """The page's Markdown bodies (markdown, captions, alerts, progress labels, as sent to the browser) that show
    ``text`` as typed: every character Markdown would read is backslash-escaped. Fails when there are none."""
    bodies = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success") for e in at.get(kind)]
    bodies += [p.text for p in at.get("progress")]
    literal = "".join(rf"\\{re.escape(c)}" if c in MUST_ESCAPE else rf"\\?{re.escape(c)}" for c in text)
    found = [b for b in bodies if re.search(literal, b)]
    assert found, (text, bodies)
    return found


def test_markdown_in_names_and_errors_is_shown_as_typed(own_db):
    store = own_db["store"]
    ids = store.add_experiment(
        MARKDOWN_NAME,
        {"dataset": "sample"},
        profile="laptop",
        reduced=True,
        runs=[{"setting": "1x1_3x3_3x", "kernel_set": "1x1_3x3", "iterations": 3}],
    )
    store.end_job(store.claim("host:1", "cpu", stale_after=60), "failed", MARKDOWN_ERROR)
    at = app("pages/jobs.py")
    assert not at.exception, [e.value for e in at.exception]
    assert len(shown_literally(at, MARKDOWN_NAME)) == 2  # the card's heading and the delete confirmation
    (error,) = shown_literally(at, MARKDOWN_ERROR)
    assert error in [e.value for e in at.error]

    # A picker's options are plain text, never Markdown: there the name reads as typed, without escapes.
    at = app("pages/results.py")
    eid = ids["experiment_id"]
    assert at.selectbox(key="results_experiment").format_func(eid) == f"#{eid} · {MARKDOWN_NAME} · 0 finished"


def test_an_unusable_database_is_named_literally(studio, tmp_path, monkeypatch):
    path = tmp_path / "**bad** [x](y).db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84 + b"garbage" * 500)
    monkeypatch.setenv("SPIKERNEL_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    (shown,) = shown_literally(at, str(path))
    assert shown.startswith("The experiment database cannot be opened: ") and shown in [e.value for e in at.error]
