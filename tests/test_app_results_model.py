"""The Results and Model pages, run in this process by Streamlit's AppTest on the real finished experiment."""

from __future__ import annotations

import hashlib
import json
import math
import re

import pytest
from helpers import SAFE_NAME, app, texts
from streamlit.testing.v1 import AppTest

from engine import api

pytestmark = pytest.mark.usefixtures("no_worker")  # the sidebar would start a worker when jobs wait


def results(experiment_id: int) -> AppTest:
    """The Results page showing ``experiment_id`` (the session's database may hold others)."""
    at = app("pages/results.py")
    at.selectbox(key="results_experiment").set_value(experiment_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_choice(at: AppTest) -> str | None:
    """The setting the page says Alg. 1 picked, or None when it says nothing fits."""
    if any("Nothing fits this budget" in w.value for w in at.warning):
        return None
    (picked,) = [s.value for s in at.success if s.value.startswith("Alg. 1 picks")]
    return re.match(r"Alg\. 1 picks \*\*(\S+)\*\*", picked).group(1)


def test_results_shows_the_table_the_charts_and_the_exports(finished, downloads):
    eid = finished["experiment_id"]
    at = results(eid)
    runs = api.runs_frame([eid])

    (table,) = at.dataframe
    assert list(table.value["kernel_set"]) == list(runs["kernel_set"])
    assert list(table.value["iterations"]) == [6, 3, 3]
    assert list(table.value["status"]) == ["done"] * 3
    assert table.value["speedup"].iloc[0] == pytest.approx(1.0)
    # Both accuracies of each trained run: validation (chosen on) and test (reported).
    assert runs["val_accuracy"].notna().all()
    assert list(table.value["val_accuracy_pct"]) == pytest.approx(list(runs["val_accuracy"] * 100))
    assert list(table.value["accuracy_pct"]) == pytest.approx(list(runs["accuracy"] * 100))
    assert "Alg. 1 and the Pareto front judge the models on validation accuracy" in texts(at)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [c["layout"]["title"]["text"] for c in charts]
    assert titles == [
        "Test accuracy per epoch",
        "Search time per setting",
        "Accuracy vs memory, with the budget",
        "Accuracy vs energy per inference (SNN ●, same network as an ANN ○)",
        "Training-free score vs final accuracy",
    ]
    assert all("laptop profile (reduced scale)" in c["layout"]["title"]["subtitle"]["text"] for c in charts)
    bar_labels = [t for trace in charts[1]["data"] for t in trace["text"]]
    assert bar_labels[0] == "baseline" and all(t.endswith("× speed-up") for t in bar_labels[1:])
    assert [t["name"] for t in charts[0]["data"]] == list(runs["setting"] + [" (baseline)", "", ""])
    assert "Spearman rank correlation over 3 settings" in texts(at)

    experiment = api.get_experiment(eid)
    for fmt in api.EXPORT_FORMATS:
        name = api.export_name(experiment, fmt)
        assert name == f"spikernel-exp{eid}-finished_fixture.{fmt}" and SAFE_NAME.fullmatch(name)
        data = downloads["files"][name]
        assert (data.decode() if isinstance(data, bytes) else data) == api.export_experiment(eid, fmt)


def test_the_budget_slider_reapplies_alg_1(finished):
    eid = finished["experiment_id"]
    at = results(eid)
    params = api.runs_frame([eid])["params"]
    slider = at.slider[0]
    assert slider.value == slider.max  # launched with 10M: beyond every model, so the slider starts at its top

    # All fit, only the smallest fits, none fit: the page shows what Alg. 1 (api.select) picks for each.
    just_the_smallest = round(math.ceil(params.min() / 1e6 / slider.step) * slider.step, 6)
    seen = []
    for value in (slider.max, just_the_smallest, slider.min):
        at.slider[0].set_value(value).run()
        expected = api.select([eid], value * 1e6)
        assert shown_choice(at) == (expected.chosen.setting if expected.chosen else None)
        if expected.chosen:
            assert at.session_state["chosen_run_id"] == expected.chosen.run_id
        else:
            assert "chosen_run_id" not in at.session_state
        seen.append(shown_choice(at))
    assert seen[0] is not None and seen[-1] is None
    assert "Nothing fits this budget" in texts(at) and "the smallest model needs" in texts(at)
    assert all("chosen model" not in link.proto.label for link in at.page_link)

    # A memory budget at 8-bit weights: megabytes, a quarter of the 32-bit size.
    at.segmented_control[0].set_value(8).run()
    assert "MB at 8-bit" in at.slider[0].label
    at.slider[0].set_value(at.slider[0].max).run()
    expected = api.select([eid], at.slider[0].max * 1e6, 8)
    assert shown_choice(at) == expected.chosen.setting
    assert any(f"Open the chosen model ({expected.chosen.setting})" in link.proto.label for link in at.page_link)


def test_empty_database_and_experiment_without_results(studio, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKERNEL_DB", str(tmp_path / "empty.db"))
    at = app("pages/results.py")
    assert "No experiments yet" in texts(at)
    assert [link.proto.page for link in at.page_link if "Launch" in link.proto.label]
    assert not at.get("plotly_chart")
    assert "No model has been searched yet" in texts(app("pages/model.py"))

    api.submit_experiment(
        api.ExperimentConfig(
            dataset=studio["dataset"], kernel_sets=("1x1_3x3",), iterations=2, epochs=1, device="cpu", baseline=None
        )
    )
    at = app("pages/results.py")
    assert "has no finished runs yet" in texts(at)
    assert any("Jobs" in link.proto.label for link in at.page_link)
    assert not at.get("plotly_chart")


def test_model_page_shows_the_cell_layers_and_the_file(finished, downloads):
    runs = api.runs_frame([finished["experiment_id"]])
    run = runs[runs["setting"] == "3x3_5x5_3x"].iloc[0]
    at = app("pages/model.py", chosen_run_id=int(run.run_id))  # as Results leaves it
    assert at.selectbox(key="model_run").value == run.run_id

    details = api.model_details(int(run.run_id))
    page = texts(at)
    for a, b, op, kernel in details["edges"]:
        assert f"**{a} → {b}**: {f'{op} {kernel}x{kernel}' if kernel else op}" in page
    (layers,) = at.dataframe
    assert list(layers.value["params"]) == list(details["layers"]["params"])
    assert f"Total {details['layers']['params'].sum():,} parameters" in page

    name = api.download_name(details["run"])
    assert name == f"spikernel-exp{finished['experiment_id']}-3x3_5x5_3x.safetensors" and SAFE_NAME.fullmatch(name)
    data = downloads["files"][name]
    assert hashlib.sha256(data).hexdigest() == run.checkpoint_sha256 == at.code[0].value
    assert f'load_model("{name}")' in at.code[1].value


def test_model_page_without_a_checkpoint_says_so(finished):
    store = api.get_store()
    run = api.runs_frame([finished["experiment_id"]]).iloc[0]
    with store.write() as db:
        db["runs"].update(int(run.run_id), {"checkpoint": None})
    try:
        at = app("pages/model.py", chosen_run_id=int(run.run_id))
    finally:
        with store.write() as db:
            db["runs"].update(int(run.run_id), {"checkpoint": run.checkpoint})
    assert "has no trained model yet" in texts(at)
    assert not at.get("download_button")
    assert at.get("plotly_chart")  # the cell and the layers still show


def test_results_choice_opens_on_the_model_page(finished):
    at = results(finished["experiment_id"])
    chosen = at.session_state["chosen_run_id"]
    at.switch_page("pages/model.py").run()
    assert at.selectbox(key="model_run").value == chosen


def test_model_page_shows_the_deployed_model_and_its_three_downloads(finished, downloads, tmp_path):
    import nir

    from engine.train.checkpoint import load_model

    run = api.runs_frame([finished["experiment_id"]]).iloc[-1]
    at = app("pages/model.py", chosen_run_id=int(run.run_id))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test accuracy"] == f"{run.accuracy:.1%}"
    assert metrics["Validation accuracy"] == f"{run.val_accuracy:.1%}"
    assert metrics["Accuracy, 8-bit weights"] == f"{run.accuracy_8bit:.1%}"
    assert metrics["Accuracy, 4-bit weights"] == f"{run.accuracy_4bit:.1%}"
    drop = {m.label: m.proto.delta for m in at.metric}["Accuracy, 4-bit weights"]
    assert drop == f"{(run.accuracy_4bit - run.accuracy) * 100:+.1f} pts"
    assert metrics["Energy per inference"] == f"{run.energy_uj:.3g} µJ"
    assert metrics["Same network as an ANN"] == f"{run.ann_energy_uj:.3g} µJ"
    assert len(at.get("plotly_chart")) == 6  # cell, layers, accuracy, firing, and per-layer firing and operations

    details = api.model_details(int(run.run_id))
    names = {fmt: api.download_name(details["run"], fmt) for fmt in ("nir", "int8", "int4")}
    assert all(SAFE_NAME.fullmatch(n) for n in names.values()) and names["nir"].endswith(".nir")
    (tmp_path / "m.nir").write_bytes(downloads["files"][names["nir"]])
    graph = nir.read(str(tmp_path / "m.nir"))
    assert "head.lif2" in graph.nodes and ("head.lif2", "head.fc2") in graph.edges
    for fmt, bits in (("int8", 8), ("int4", 4)):
        (tmp_path / names[fmt]).write_bytes(downloads["files"][names[fmt]])
        loaded = load_model(tmp_path / names[fmt])
        assert loaded.meta["quantization"]["bits"] == bits
        assert loaded.meta["accuracy"] == getattr(run, f"accuracy_{bits}bit")

    assert not [d for d in at.dataframe if "target" in d.value.columns]  # checked only when asked (torch)
    at.button(key="deploy_check").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (targets,) = [d.value for d in at.dataframe if "target" in d.value.columns]  # where the NIR file deploys
    expected = api.deploy_targets(int(run.run_id))
    assert list(targets["deploys"]) == ["as it is" if t.deploys else "no" for t in expected]
    assert list(targets["deploys"]) == ["as it is", "as it is", "no", "no"]  # norse runs it out of order; Speck
    assert "integrate-and-fire neurons without leak" in targets["broken"].iloc[3]
    assert "sinabs" in texts(at)  # where the chip's rules come from


def test_results_shows_energy_and_honours_an_energy_budget(finished):
    eid = finished["experiment_id"]
    runs = api.runs_frame([eid])
    at = results(eid)
    table = at.dataframe[0].value
    assert list(table["energy_uj"]) == pytest.approx(list(runs["energy_uj"]))
    assert list(table["accuracy_4bit_pct"]) == pytest.approx(list(runs["accuracy_4bit"] * 100))
    # An energy budget just below the most frugal model: nothing fits; at the most frugal one, it is picked.
    at.toggle(key=f"energy_on_{eid}").set_value(True).run()
    least = runs.sort_values(["energy_uj"]).iloc[0]
    at.number_input(key=f"energy_{eid}").set_value(float(least.energy_uj) * 0.99).run()
    assert shown_choice(at) is None and "most frugal model" in texts(at)
    at.number_input(key=f"energy_{eid}").set_value(float(least.energy_uj) * 1.0001).run()
    expected = api.select([eid], at.slider[0].value * 1e6, energy=float(least.energy_uj) * 1.0001)
    assert shown_choice(at) == expected.chosen.setting
    assert not at.exception


# ------------------------------------------------------------------------------------ hostile download names

HOSTILE_NAMES = [
    "../../etc/x",
    "..\\..\\windows\\system32\\x",
    "/etc/passwd",
    "..",
    ".hidden",
    "line\nbreak\rreturn",
    'say "hi" it\'s `x`',
    "a; rm -rf ~ && $(reboot) | tee",
    "tab\tbell\x07escape\x1b[31mdel\x7f",
    "\u202etxt.exe",  # right-to-left override: a name that displays reversed
    "名前 ünïcode",
    "con",
    "",
    "x" * 300,
    "%2e%2e%2f" + "/" * 100,
]


def assert_safe_file_name(name: str, suffix: str) -> None:
    """A name a browser saves as given and a shell reads as one word: no folder, no control character, not
    hidden, of bounded length, with the format's ending."""
    assert SAFE_NAME.fullmatch(name), repr(name)
    assert "/" not in name and "\\" not in name and all(" " < c < "\x7f" for c in name), repr(name)
    assert not name.startswith((".", "-")) and name.endswith(suffix) and len(name) <= 120, repr(name)


@pytest.mark.parametrize("hostile", HOSTILE_NAMES, ids=[f"name{i}" for i in range(len(HOSTILE_NAMES))])
def test_download_names_are_safe_whatever_the_experiment_or_setting_is_called(hostile):
    for fmt in api.EXPORT_FORMATS:
        assert_safe_file_name(api.export_name({"id": 12345678, "name": hostile}, fmt), f".{fmt}")
    suffixes = {None: ".safetensors", "nir": ".nir", "int8": "-int8.safetensors", "int4": "-int4.safetensors"}
    for fmt, suffix in suffixes.items():
        assert_safe_file_name(api.download_name({"experiment_id": 12345678, "setting": hostile}, fmt), suffix)


def test_the_results_page_offers_exports_under_safe_names_for_a_hostile_experiment_name(finished, downloads):
    """Through the page: the session's finished experiment renamed for the test (and back, whatever happens)."""
    eid, store = finished["experiment_id"], api.get_store()
    hostile = '../../etc/x\n"; rm -rf ~\x07 ' + "x" * 300
    with store.write() as db:
        db["experiments"].update(eid, {"name": hostile})
    try:
        at = results(eid)
    finally:
        with store.write() as db:
            db["experiments"].update(eid, {"name": "finished fixture"})
    offered = [name for name in downloads["files"] if name.startswith(f"spikernel-exp{eid}-")]
    assert sorted(offered) == sorted(api.export_name({"id": eid, "name": hostile}, f) for f in api.EXPORT_FORMATS)
    for name in offered:
        assert_safe_file_name(name, name[name.rindex(".") :])
    assert at.selectbox(key="results_experiment").format_func(eid).startswith(f"#{eid} · {hostile} · ")
