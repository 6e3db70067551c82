"""The dashboard's charts built from small hand-made frames and a small study report, without Streamlit: what a
reader of each chart relies on (the budget line and Alg. 1's star, one colour per kernel set on every chart,
titles saying which experiment and profile, axes with units)."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
from helpers import ROOT

from engine import api
from engine.core.space import TABLE_I
from engine.study.estimates import Difference, Estimate
from engine.study.studies import report as study_report
from ui import charts
from ui.charts import kernel_set_color

NAN = float("nan")
EXPERIMENT = {"id": 3, "profile": "laptop", "reduced": True}
RUN = {"setting": "3x3_5x5_3x", "kernel_set": "3x3_5x5"}


def runs_frame(experiment_id: int = 7) -> pd.DataFrame:
    """One experiment's runs as the Results page holds them (``api.runs_frame`` plus its ``label``): a baseline
    and three settings, one of them still searching."""
    rows = [  # setting, kernel set, baseline, stage, params, fp32, 8-bit, 4-bit accuracy, best score, search s
        ("1x1_3x3_6x", "1x1_3x3", True, "done", 1_000_000, 0.60, 0.59, 0.40, 10.0, 120.0),
        ("1x1_3x3_3x", "1x1_3x3", False, "done", 1_200_000, 0.62, 0.61, 0.45, 12.0, 60.0),
        ("3x3_5x5_3x", "3x3_5x5", False, "done", 3_000_000, 0.70, 0.55, 0.30, 15.0, 40.0),
        ("5x5_7x7_3x", "5x5_7x7", False, "done", 8_000_000, 0.72, 0.71, 0.60, 11.0, 30.0),
        ("3x3_7x7_3x", "3x3_7x7", False, "search", 0, NAN, NAN, NAN, NAN, NAN),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "setting",
            "kernel_set",
            "is_baseline",
            "stage",
            "params",
            "accuracy",
            "accuracy_8bit",
            "accuracy_4bit",
            "best_score",
            "search_seconds",
        ],
    )
    frame.insert(0, "run_id", range(1, len(frame) + 1))
    frame["experiment_id"], frame["profile"], frame["reduced"], frame["iterations"] = experiment_id, "laptop", True, 3
    frame["speedup"] = (120.0 / frame["search_seconds"]).where(~frame["is_baseline"], 1.0)  # the baseline took 120 s
    frame["energy_uj"] = [2.0, 2.5, 4.0, 9.0, NAN]
    frame["ann_energy_uj"] = frame["energy_uj"] * 10
    frame["label"] = frame["setting"] + frame["is_baseline"].map({True: " (baseline)", False: ""})
    return frame


def epochs_frame(frame: pd.DataFrame) -> pd.DataFrame:
    done = frame[frame["stage"] == "done"]
    return pd.DataFrame(
        [
            {
                "run_id": r.run_id,
                "epoch": e,
                "test_accuracy": r.accuracy - 0.1 * (2 - e),
                "train_accuracy": 0.5 + 0.1 * e,
                "train_loss": 1.0 / (e + 1),
                "firing_rate": 0.1 + 0.01 * e,
            }
            for r in done.itertuples()
            for e in range(3)
        ]
    )


def small_study():
    """A real report (``engine.study.studies.report``) of two kernel sets with a top cell trained with two seeds, a cell
    drawn at random and two spread over the scores."""
    rows = []
    for kernel_set, shift in (("1x1_3x3", 0.0), ("3x3_5x5", 0.05)):
        for i, (role, score, accuracies) in enumerate(
            [
                ("top", 9.0, [0.70, 0.74]),
                ("random", 5.0, [0.55]),
                ("spread", 3.0, [0.50]),
                ("spread", 7.0, [0.66]),
            ]
        ):
            for seed, accuracy in enumerate(accuracies):
                rows.append(
                    {
                        "kernel_set": kernel_set,
                        "genotype": f"g{i}",
                        "role": role,
                        "candidate": i,
                        "seed": seed,
                        "score": score + shift,
                        "conv_edges": 1 + i % 3,
                        "params": 10_000 * (i + 1),
                        "accuracy": accuracy + shift,
                    }
                )
    runs = [{"id": 1, "kernel_set": "1x1_3x3"}, {"id": 2, "kernel_set": "3x3_5x5"}]
    return study_report(runs, rows, {}, resamples=50)


def small_study_with_one_seed():
    """One kernel set whose top cell was trained with a single seed: no interval over seeds."""
    rows = [
        {
            "kernel_set": "3x3_5x5",
            "genotype": f"g{i}",
            "role": "top" if i == 0 else "spread",
            "candidate": i,
            "seed": 0,
            "score": 9.0 - i,
            "conv_edges": 2,
            "params": 10_000,
            "accuracy": 0.6,
        }
        for i in range(3)
    ]
    return study_report([{"id": 1, "kernel_set": "3x3_5x5"}], rows, {}, resamples=50)


def trace(fig, name: str):
    (found,) = [t for t in fig.data if t.name == name]
    return found


def color(t) -> str:
    """A trace's colour: its markers' (bars, points) or else its line's."""
    return t.marker.color if isinstance(t.marker.color, str) else t.line.color


# ------------------------------------------------------------------------------------------- Results


def test_the_budget_chart_draws_the_budget_greys_what_does_not_fit_and_stars_alg1s_choice():
    frame = runs_frame()
    budget = api.Budget.parse("5M")
    chosen = api.choose(frame, budget).chosen
    assert chosen.setting == "3x3_5x5_3x"
    fig = charts.budget_chart(frame, budget, chosen, x_max=9.0, y_range=(50.0, 80.0))

    (line,) = [s for s in fig.layout.shapes if s.x0 == s.x1]  # the budget: a vertical line at 5 M parameters
    assert line.x0 == 5.0 and line.line.color == "crimson"
    texts = [a.text for a in fig.layout.annotations]
    assert "budget 5 M" in texts and "<b>Alg. 1 picks 3x3_5x5_3x</b>" in texts
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert [t.name for t in stars] == ["3x3_5x5_3x"] and stars[0].marker.color == kernel_set_color("3x3_5x5")
    over = trace(fig, "5x5_7x7_3x (over budget)")
    assert over.marker.color == charts.OVER_BUDGET_GREY and list(over.x) == [8.0]
    assert trace(fig, "1x1_3x3_6x (baseline)").marker.symbol == "diamond"
    assert list(trace(fig, "Pareto front").x) == [1.0, 1.2, 3.0, 8.0]  # in millions of parameters
    assert "3x3_7x7_3x" not in {t.name for t in fig.data}  # still searching: nothing to place
    assert fig.layout.xaxis.title.text == "Parameters (millions, Eq. 2-3)"
    assert fig.layout.yaxis.title.text == "Test accuracy (%)"
    assert list(fig.layout.xaxis.range) == [0, 9.0] and list(fig.layout.yaxis.range) == [50.0, 80.0]


def test_a_budget_in_megabytes_plots_memory_at_that_width_and_its_measured_accuracy():
    frame = runs_frame()
    budget = api.Budget.parse("4MB", 8)  # at 8 bits a parameter weighs a byte
    chosen = api.choose(frame, budget).chosen
    fig = charts.budget_chart(frame, budget, chosen, x_max=9.0, y_range=(50.0, 80.0))
    # 3x3_5x5 loses 15 points at 8 bits: the most accurate fitting model is now 1x1_3x3_3x.
    assert [t.name for t in fig.data if t.marker.symbol == "star"] == [chosen.setting] == ["1x1_3x3_3x"]
    assert trace(fig, "3x3_5x5_3x").y[0] == pytest.approx(55.0)
    assert trace(fig, "5x5_7x7_3x (over budget)").x[0] == pytest.approx(8.0)
    assert "budget 4 MB" in [a.text for a in fig.layout.annotations]
    assert fig.layout.xaxis.title.text == "Memory at 8-bit (MB)"
    assert fig.layout.yaxis.title.text == "Test accuracy with 8-bit weights (%)"


def test_nothing_fits_draws_the_budget_and_no_star():
    frame = runs_frame()
    budget = api.Budget.parse("500k")
    fig = charts.budget_chart(frame, budget, api.choose(frame, budget).chosen, x_max=9.0, y_range=(50.0, 80.0))
    assert not [t for t in fig.data if t.marker.symbol == "star"]
    assert all(t.marker.color == charts.OVER_BUDGET_GREY for t in fig.data if t.name != "Pareto front")
    assert [s.x0 for s in fig.layout.shapes] == [0.5]


def test_the_energy_chart_pairs_each_model_as_snn_and_ann_with_the_energy_budget():
    frame = runs_frame()
    chosen = api.choose(frame, api.Budget.parse("5M"), energy=5.0).chosen
    fig = charts.energy_chart(frame, 5.0, chosen)
    pair = trace(fig, "5x5_7x7_3x")
    assert list(pair.x) == [9.0, 90.0] and list(pair.marker.symbol) == ["circle", "circle-open"]
    assert list(trace(fig, chosen.setting).marker.symbol) == ["star", "circle-open"]
    assert fig.layout.xaxis.type == "log" and [s.x0 for s in fig.layout.shapes] == [5.0]
    assert "energy budget 5 µJ" in [a.text for a in fig.layout.annotations]
    assert not charts.energy_chart(frame, None, None).layout.shapes  # no energy budget, no line


def test_search_time_labels_each_bar_with_its_speedup_and_leaves_out_what_is_still_searching():
    fig = charts.search_time(runs_frame())
    labels = {t.name: t.text[0] for t in fig.data}
    assert labels == {
        "1x1_3x3_6x (baseline)": "baseline",
        "1x1_3x3_3x": "2.0× speed-up",
        "3x3_5x5_3x": "3.0× speed-up",
        "5x5_7x7_3x": "4.0× speed-up",
    }
    assert "2 min 00 s" in list(trace(fig, "1x1_3x3_6x (baseline)").customdata[0])  # the hover's duration
    assert fig.layout.yaxis.title.text == "Search time (s)" and fig.layout.showlegend is False


def test_accuracy_per_epoch_dashes_the_baseline_and_plots_percent():
    frame = runs_frame()
    fig = charts.accuracy_per_epoch(frame, epochs_frame(frame))
    baseline, searched = trace(fig, "1x1_3x3_6x (baseline)"), trace(fig, "1x1_3x3_3x")
    assert baseline.line.dash == "dash" and baseline.marker.symbol == "diamond" and searched.line.dash == "solid"
    assert list(searched.y) == pytest.approx([42.0, 52.0, 62.0])
    assert fig.layout.legend.title.text == "Setting" and fig.layout.xaxis.title.text == "Epoch"


def test_score_vs_accuracy_has_one_point_per_trained_setting_named_after_it():
    fig = charts.score_vs_accuracy(runs_frame())
    assert sorted(t.name for t in fig.data) == ["1x1_3x3_3x", "1x1_3x3_6x (baseline)", "3x3_5x5_3x", "5x5_7x7_3x"]
    assert trace(fig, "1x1_3x3_6x (baseline)").marker.symbol == "diamond"
    assert trace(fig, "3x3_5x5_3x").y[0] == pytest.approx(70.0)


def test_every_results_chart_names_its_experiment_profile_and_axes():
    frame = runs_frame(experiment_id=7)
    budget = api.Budget.parse("5M")
    figures = [
        charts.accuracy_per_epoch(frame, epochs_frame(frame)),
        charts.search_time(frame),
        charts.score_vs_accuracy(frame),
        charts.budget_chart(frame, budget, None, 9.0, (50.0, 80.0)),
        charts.energy_chart(frame, None, None),
    ]
    for fig in figures:
        assert fig.layout.title.subtitle.text == "Experiment #7 · laptop profile (reduced scale)"
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


# --------------------------------------------------------------------------------------------- Model


def test_the_cell_colours_its_convolutions_by_kernel_set_and_names_every_edge():
    edges = [(0, 1, "conv", 3), (1, 2, "skip", None), (0, 2, "conv", 5), (2, 3, "avg pool 3x3", None)]
    fig = charts.cell_figure(edges, RUN, EXPERIMENT)
    labels = {a.text: a.font.color for a in fig.layout.annotations if a.text and not a.text.startswith("<b>")}
    color = kernel_set_color("3x3_5x5")
    assert labels == {
        "conv 3x3": color,
        "skip": charts.OP_COLORS["skip"],
        "conv 5x5": color,
        "avg pool 3x3": charts.OP_COLORS["avg pool 3x3"],
        "input": "#555",
        "output": "#555",
    }
    shapes = [s.type for s in fig.layout.shapes]
    assert shapes.count("path") == len(edges) and shapes.count("circle") == 4  # an arc per edge, four nodes
    assert fig.layout.title.subtitle.text == "3x3_5x5 · laptop profile (reduced scale)"


def test_parameters_per_layer_keeps_network_order_and_greys_the_fixed_layers():
    layers = pd.DataFrame(
        {
            "layer": ["stem", "stem.bn", "cell1.conv", "cell2.conv", "classifier"],
            "shape": ["a", "b", "c", "d", "e"],
            "params": [100, 0, 900, 3600, 50],
            "batchnorm": [0, 32, 0, 0, 0],
        }
    )
    fig = charts.parameters_per_layer(layers, RUN, EXPERIMENT)
    cell, fixed = trace(fig, "cell (3x3_5x5)"), trace(fig, "fixed layers")
    assert list(cell.y) == ["cell1.conv", "cell2.conv"] and cell.marker.color == kernel_set_color("3x3_5x5")
    assert list(fixed.y) == ["stem", "classifier"] and fixed.marker.color == charts.FIXED_GREY  # no BatchNorm-only row
    assert list(fig.layout.yaxis.categoryarray) == ["stem", "cell1.conv", "cell2.conv", "classifier"]
    assert fig.layout.yaxis.autorange == "reversed"  # the first layer on top
    assert fig.layout.title.subtitle.text == "3x3_5x5_3x · experiment #3 · laptop profile (reduced scale)"
    assert fig.layout.xaxis.title.text == "Parameters (Eq. 2-3)"


def test_the_training_charts_show_both_splits_and_a_firing_rate_from_zero():
    epochs = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "test_accuracy": [0.4, 0.5, NAN],
            "train_accuracy": [0.5, 0.6, 0.7],
            "firing_rate": [0.2, NAN, 0.15],
            "val_accuracy": [0.45, 0.55, NAN],
        }
    )
    accuracy = charts.accuracy_by_split(epochs, RUN, EXPERIMENT)
    assert {t.name: list(t.y) for t in accuracy.data} == {
        "test": pytest.approx([40.0, 50.0]),
        "validation": pytest.approx([45.0, 55.0]),  # held-out training images: what models are chosen on
        "train": pytest.approx([50.0, 60.0, 70.0]),
    }
    older = charts.accuracy_by_split(epochs.drop(columns="val_accuracy"), RUN, EXPERIMENT)  # before validation
    assert {t.name for t in older.data} == {"test", "train"}
    assert {t.line.color for t in accuracy.data} == {kernel_set_color("3x3_5x5")}
    firing = charts.firing_rate_per_epoch(epochs, RUN, EXPERIMENT)
    assert list(firing.data[0].x) == [0, 2] and firing.layout.yaxis.rangemode == "tozero"
    assert firing.layout.yaxis.title.text == "Spikes per neuron per timestep"


def test_the_deployed_charts_keep_layer_order_and_compare_snn_with_ann_per_layer():
    firing = pd.DataFrame({"layer": ["stem.lif", "cell1.lif", "cell2.lif"], "firing_rate": [0.3, 0.1, 0.05]})
    fig = charts.firing_rate_per_layer(firing, RUN, EXPERIMENT)
    assert list(fig.layout.yaxis.categoryarray) == ["stem.lif", "cell1.lif", "cell2.lif"]
    assert fig.data[0].marker.color == kernel_set_color("3x3_5x5")
    layer_ops = pd.DataFrame(
        {
            "layer": ["stem", "cell1.conv"],
            "input": ["analog", "spikes"],
            "acs": [0, 4_000],
            "macs": [9_000, 0],
            "ann_macs": [9_000, 40_000],
        }
    )
    fig = charts.operations_per_layer(layer_ops, RUN, EXPERIMENT)
    snn, ann = trace(fig, "SNN (spike-driven ACs; MACs where analog)"), trace(fig, "ANN (MACs)")
    assert list(snn.x) == [9_000, 4_000] and list(ann.x) == [9_000, 40_000]
    assert snn.marker.color == kernel_set_color("3x3_5x5") and ann.marker.color == charts.FIXED_GREY
    assert fig.layout.xaxis.type == "log" and fig.layout.barmode == "group"


# --------------------------------------------------------------------------------------------- Study


def test_the_study_score_chart_has_a_symbol_per_role_and_every_cell_in_its_hover():
    report = small_study()
    fig = charts.study_score_chart(report, EXPERIMENT)
    assert sum(len(t.x) for t in fig.data) == len(report.cells) == 8
    assert {t.name: t.marker.symbol for t in fig.data if t.legendgroup == "3x3_5x5"} == {
        "3x3_5x5 · top": "star",
        "3x3_5x5 · random": "circle",
        "3x3_5x5 · spread": "square",
    }
    top = trace(fig, "1x1_3x3 · top")
    assert top.y[0] == pytest.approx(72.0)  # the mean over its two seeds
    assert top.customdata[0][3] == 2 and "genotype" in top.hovertemplate
    assert fig.layout.title.subtitle.text == "Study #3 · laptop profile (reduced scale)"
    assert fig.layout.yaxis.title.text == "Test accuracy (%, mean over seeds)"


def test_top1_bars_carry_the_interval_over_seeds_and_each_seed():
    fig = charts.top1_chart(small_study(), EXPERIMENT)
    bar = [t for t in fig.data if t.type == "bar" and t.name == "1x1_3x3"][0]
    assert bar.y[0] == pytest.approx(72.0) and bar.error_y.array[0] > 0 and bar.error_y.arrayminus[0] > 0
    seeds = [t for t in fig.data if t.type == "scatter" and t.x[0] == "1x1_3x3"][0]
    assert list(seeds.y) == pytest.approx([70.0, 74.0])
    one_seed = charts.top1_chart(small_study_with_one_seed(), EXPERIMENT).data[0]
    assert one_seed.error_y.array is None  # one seed: no interval to draw


def test_the_differences_chart_shows_each_pair_with_its_interval_and_design():
    paired = Difference(
        "1x1_3x3", "3x3_5x5", True, Estimate(0.02, 0.005, 0.03, 0.01, 30), 1.24, Estimate(0.4, 0.1, 0.6, 0.02, 30)
    )
    unpaired = Difference("1x1_3x3", "5x5_7x7", False, Estimate(0.01, NAN, NAN, NAN, 4), 1.61, Estimate.undefined(0))
    fig = charts.differences_chart(SimpleNamespace(differences=[paired, unpaired]), EXPERIMENT)
    first, second = fig.data
    assert first.y[0] == "3x3_5x5 − 1x1_3x3" and first.x[0] == pytest.approx(2.0)
    assert first.error_x.array[0] == pytest.approx(1.0) and first.error_x.arrayminus[0] == pytest.approx(1.5)
    assert first.marker.symbol == "diamond" and first.customdata[0][0] == "paired by genotype"
    assert second.error_x.array is None and second.customdata[0][0] == "independent samples"
    assert first.marker.color == kernel_set_color("3x3_5x5")


def test_grouped_chart_clips_intervals_to_0_100_and_follows_the_given_order():
    rows = [
        {"kernel_set": "3x3_5x5", "params_bin": "10k-20k", "mean": 0.98, "low": 0.90, "high": 1.06, "n": 3},
        {"kernel_set": "3x3_5x5", "params_bin": "1k-10k", "mean": 0.50, "low": NAN, "high": NAN, "n": 1},
        {"kernel_set": "5x5_7x7", "params_bin": "1k-10k", "mean": 0.03, "low": -0.02, "high": 0.08, "n": 2},
    ]
    fig = charts.grouped_chart(
        rows,
        "params_bin",
        "Accuracy at equal parameter count",
        "Parameters (Eq. 2-3)",
        EXPERIMENT,
        order=["1k-10k", "10k-20k"],
    )
    mine = trace(fig, "3x3_5x5")
    assert list(mine.error_y.array) == pytest.approx([2.0, 0.0])  # up to 100 %, none for a single cell
    assert list(mine.error_y.arrayminus) == pytest.approx([8.0, 0.0])
    assert list(trace(fig, "5x5_7x7").error_y.arrayminus) == pytest.approx([3.0])  # down to 0 %
    assert list(fig.layout.xaxis.categoryarray) == ["1k-10k", "10k-20k"]
    assert fig.layout.xaxis.title.text == "Parameters (Eq. 2-3)" and fig.layout.legend.title.text == "Kernel set"
    edge_rows = [{**r, "conv_edges": e} for r, e in zip(rows, (3, 1, 2))]
    by_edges = charts.grouped_chart(
        edge_rows, "conv_edges", "Accuracy at equal conv-edge count", "Conv edges in the cell", EXPERIMENT
    )
    assert list(by_edges.layout.xaxis.categoryarray) == ["1", "2", "3"]  # sorted when no order is given


# ------------------------------------------------------------------------------------------- shared


def test_a_kernel_set_has_the_same_colour_on_every_chart_and_each_its_own():
    frame = runs_frame()
    budget = api.Budget.parse("100M")  # every model fits: each keeps its colour
    results = [
        charts.accuracy_per_epoch(frame, epochs_frame(frame)),
        charts.search_time(frame),
        charts.score_vs_accuracy(frame),
        charts.budget_chart(frame, budget, None, 9.0, (50.0, 80.0)),
        charts.energy_chart(frame, None, None),
    ]
    report = small_study()
    study = [
        charts.study_score_chart(report, EXPERIMENT),
        charts.top1_chart(report, EXPERIMENT),
        charts.grouped_chart(report.by_edges, "conv_edges", "t", "Conv edges", EXPERIMENT),
    ]
    seen: dict[str, set[str]] = {}
    for fig in results:
        for t in fig.data:
            if t.name != "Pareto front":
                kernel_set = t.name.split(" ")[0].rsplit("_", 1)[0]  # '1x1_3x3_6x (baseline)' -> '1x1_3x3'
                seen.setdefault(kernel_set, set()).add(color(t))
    for fig in study:
        for t in fig.data:
            if t.name is not None:  # not the top-1 chart's black marks of each seed
                seen.setdefault(t.name.split(" ")[0], set()).add(color(t))  # '3x3_5x5 · top' -> '3x3_5x5'
    layers = pd.DataFrame({"layer": ["stem", "cell1.conv"], "shape": ["", ""], "params": [10, 90], "batchnorm": [0, 0]})
    seen["3x3_5x5"].add(color(trace(charts.parameters_per_layer(layers, RUN, EXPERIMENT), "cell (3x3_5x5)")))

    assert set(seen) == {"1x1_3x3", "3x3_5x5", "5x5_7x7"}
    assert all(colors == {kernel_set_color(k)} for k, colors in seen.items()), seen
    assert len({kernel_set_color(k) for k in seen}) == 3
    assert kernel_set_color("1x1_3x3_6x") == kernel_set_color("1x1_3x3")  # a setting takes its kernel set's
    custom = kernel_set_color("5x5_9x9")  # beyond Table I: a colour Table I's six do not use, the same each time
    assert custom == kernel_set_color("5,9") and custom not in {kernel_set_color(ks.name) for ks in TABLE_I}


def test_profile_and_durations_read_the_same_everywhere():
    assert charts.profile_label("paper", False) == "paper profile (paper scale)"
    assert [charts.format_seconds(s) for s in (None, NAN, 42.4, 185, 7620)] == [
        "–",
        "–",
        "42 s",
        "3 min 05 s",
        "2 h 07 min",
    ]
    assert charts.nan(None) and charts.nan(math.nan) and not charts.nan(0.0)


def test_the_charts_need_no_streamlit():
    """The figures can be built where Streamlit is not running (or not installed): a fresh interpreter."""
    code = "import sys, ui.charts; print(sorted({m.split('.')[0] for m in sys.modules} & {'streamlit', 'torch'}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
