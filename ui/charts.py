"""Every chart of the dashboard, built from what the pages read (``engine.api``'s frames, a model's details, a
study's report) and nothing else: no Streamlit, so a figure can be built and tested on its own.

One colour per kernel set on every chart, the profile under every title (a reduced one says so), axis titles
with units. Sections follow the pages: Results, Model, Study.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine import api
from engine.api import TABLE_I, Setting, Space, SpaceError

if TYPE_CHECKING:
    from engine.api import StudyReport

# ----------------------------------------------------------------------------- what every chart shares

# One colour per kernel set on every page: Table I's six sets first, custom sets after them.
_PALETTE = px.colors.qualitative.D3
_TABLE_I_NAMES = [ks.name for ks in TABLE_I]
FIXED_GREY = "#9e9e9e"  # what is not the kernel set's own: the fixed layers, an ANN's operations


def kernel_set_color(name: str) -> str:
    """The colour of a kernel set (``3x3_5x5``) or of a setting (``3x3_5x5_1000x``) on every chart."""
    try:
        kernel_set = Setting.parse(name).kernel_set.name
    except SpaceError:
        kernel_set = Space.parse(name).name
    if kernel_set in _TABLE_I_NAMES:
        return _PALETTE[_TABLE_I_NAMES.index(kernel_set)]
    return _PALETTE[len(_TABLE_I_NAMES) + sum(map(ord, kernel_set)) % (len(_PALETTE) - len(_TABLE_I_NAMES))]


def profile_label(profile: str, reduced: bool) -> str:
    """Every chart of a reduced profile says so."""
    return f"{profile} profile (reduced scale)" if reduced else f"{profile} profile (paper scale)"


def format_seconds(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 07 min; '–' when unknown."""
    if seconds is None or math.isnan(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def nan(value) -> bool:
    """None or NaN: a statistic that is not defined (too few cells, or constant values)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def titled(fig: go.Figure, title: str, subtitle: str, x: str, y: str, legend: str | None = None) -> go.Figure:
    """A chart's title with what it shows under it (which experiment, which profile), its axes and, when
    given, its legend's title."""
    layout = {
        "title": {"text": title, "subtitle": {"text": subtitle}},
        "xaxis_title": x,
        "yaxis_title": y,
        "margin": {"t": 80},
    }
    if legend is not None:
        layout["legend_title_text"] = legend
    fig.update_layout(**layout)
    return fig


# ------------------------------------------------------------------------------------------ Results
# Each takes one experiment's ``api.runs_frame`` with a ``label`` column: its setting, " (baseline)" added.

OVER_BUDGET_GREY = "#c4c4c4"


def experiment_subtitle(frame: pd.DataFrame) -> str:
    profile = profile_label(frame["profile"].iloc[0], bool(frame["reduced"].iloc[0]))
    return f"Experiment #{frame['experiment_id'].iloc[0]} · {profile}"


def trained(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs Alg. 1 can pick: finished, with a test accuracy."""
    return frame[(frame["stage"] == "done") & frame["accuracy"].notna()]


def colors(frame: pd.DataFrame) -> dict[str, str]:
    """Colour by kernel set; a baseline shares its kernel set's colour and is told apart by its dash/symbol."""
    return {label: kernel_set_color(ks) for label, ks in zip(frame["label"], frame["kernel_set"])}


def dash_baselines(fig: go.Figure) -> go.Figure:
    # Dashed, with diamond markers: a baseline shares its kernel set's colour, and a single epoch has no line.
    fig.for_each_trace(
        lambda t: t.update(line_dash="dash", marker_symbol="diamond") if t.name.endswith("(baseline)") else None
    )
    return fig


def accuracy_per_epoch(frame: pd.DataFrame, epochs: pd.DataFrame) -> go.Figure:
    """Each setting's test accuracy after each epoch (``epochs``: the experiment's ``api.epochs_frame``), with the
    validation accuracy (held-out training images) in its hover."""
    data = epochs.dropna(subset=["test_accuracy"]).merge(frame[["run_id", "label"]], on="run_id")
    data["accuracy_pct"] = data["test_accuracy"] * 100
    data["val_pct"] = data["val_accuracy"].astype(float) * 100 if "val_accuracy" in data else math.nan
    fig = px.line(
        data,
        x="epoch",
        y="accuracy_pct",
        color="label",
        color_discrete_map=colors(frame),
        markers=True,
        hover_data={"train_loss": ":.3f", "firing_rate": ":.3f", "accuracy_pct": ":.1f", "val_pct": ":.1f"},
        labels={
            "accuracy_pct": "test accuracy (%)",
            "val_pct": "validation accuracy (%)",
            "train_loss": "train loss",
            "firing_rate": "firing rate",
        },
    )
    fig.update_xaxes(dtick=1)
    return titled(
        dash_baselines(fig),
        "Test accuracy per epoch",
        experiment_subtitle(frame),
        "Epoch",
        "Test accuracy (%)",
        "Setting",
    )


def speedup_text(row) -> str:
    if row.is_baseline:
        return "baseline"
    return f"{row.speedup:.1f}× speed-up" if not math.isnan(row.speedup) else ""


def search_time(frame: pd.DataFrame) -> go.Figure:
    """A bar per searched setting, labelled with its speed-up over the baseline."""
    data = frame[frame["stage"] != "search"].assign(
        speedup_text=lambda f: [speedup_text(r) for r in f.itertuples()],
        duration=lambda f: f["search_seconds"].map(format_seconds),
    )
    fig = px.bar(
        data,
        x="label",
        y="search_seconds",
        color="label",
        color_discrete_map=colors(frame),
        text="speedup_text",
        hover_data={"duration": True, "iterations": True, "speedup": ":.2f", "search_seconds": False, "label": False},
        labels={
            "duration": "search time",
            "iterations": "cells scored",
            "speedup": "speed-up over baseline",
            "speedup_text": "vs baseline",
        },
    )
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_layout(showlegend=False)
    return titled(fig, "Search time per setting", experiment_subtitle(frame), "Setting", "Search time (s)", "Setting")


def score_vs_accuracy(frame: pd.DataFrame) -> go.Figure:
    """Each trained setting's best training-free score against the accuracy it reached."""
    data = trained(frame).assign(accuracy_pct=lambda f: f["accuracy"] * 100)
    fig = px.scatter(
        data,
        x="best_score",
        y="accuracy_pct",
        color="label",
        color_discrete_map=colors(frame),
        symbol="is_baseline",
        symbol_map={True: "diamond", False: "circle"},
        hover_data={"params": ":,", "is_baseline": False, "best_score": ":.2f", "accuracy_pct": ":.1f"},
    )
    fig.update_traces(marker_size=14)
    fig.for_each_trace(lambda t: t.update(name=t.name.split(",")[0]))  # px appends the symbol's value
    return titled(
        fig,
        "Training-free score vs final accuracy",
        experiment_subtitle(frame),
        "Best training-free score of the search",
        "Test accuracy (%)",
        "Setting",
    )


def truth_chart(cells: pd.DataFrame, setting: str) -> go.Figure:
    """Every scored cell of a benchmarked run: its training-free score against the validation accuracy its
    network reached in the benchmark's 100-epoch training, coloured by conv edges."""
    cells = cells.sort_values("conv_edges").assign(edges=lambda f: f["conv_edges"].astype(str))
    fig = px.scatter(
        cells,
        x="score",
        y="val_accuracy",
        color="edges",
        hover_data={"id": True, "params": ":,", "test_accuracy": ":.2f", "score": ":.3f", "val_accuracy": ":.2f"},
        render_mode="webgl",
        opacity=0.6,
    )
    fig.update_traces(marker_size=5)
    return titled(
        fig,
        "Training-free score vs true accuracy",
        f"{setting}: {len(cells):,} networks, accuracies from SpikeNAS-Bench's records",
        "Training-free score",
        "Validation accuracy after training (%)",
        "Conv edges",
    )


def per_million(bits: int | None) -> float:
    """What one parameter weighs in the budget's unit: millions of parameters, or MB at ``bits``."""
    return (api.weight_bytes(1, bits) if bits else 1) / 1e6


def budget_chart(
    frame: pd.DataFrame,
    budget: api.Budget,
    chosen,
    x_max: float,
    y_range: tuple[float, float],
) -> go.Figure:
    """Accuracy against memory in the budget's unit: the Pareto front, the budget line, models over it
    greyed out and Alg. 1's choice (``chosen``, a selected model or None) starred. Axes are shared by the
    experiments side by side."""
    scale, limit = per_million(budget.bits), budget.limit / 1e6
    x_title = f"Memory at {budget.bits}-bit (MB)" if budget.bits else "Parameters (millions, Eq. 2-3)"
    fig = go.Figure()
    column = api.accuracy_column(budget.bits)  # at 8 or 4 bits: the accuracy measured at that width
    front = api.pareto_models(frame, budget.bits)
    fig.add_trace(
        go.Scatter(
            x=[m.params * scale for m in front],
            y=[m.accuracy * 100 for m in front],
            mode="lines",
            name="Pareto front",
            line={"color": "#888", "dash": "dot", "shape": "hv"},
            hoverinfo="skip",
        )
    )
    palette = colors(frame)
    for row in trained(frame)[lambda f: f[column].notna()].itertuples():
        accuracy = getattr(row, column)
        fits, is_chosen = budget.fits(row.params), chosen is not None and row.run_id == chosen.run_id
        validation = getattr(row, "val_accuracy", math.nan)
        validation = "" if pd.isna(validation) else f"<br>validation accuracy {validation * 100:.1f} %"
        fig.add_trace(
            go.Scatter(
                x=[row.params * scale],
                y=[accuracy * 100],
                mode="markers",
                name=row.label + ("" if fits else " (over budget)"),
                marker={
                    "color": palette[row.label] if fits else OVER_BUDGET_GREY,
                    "size": 26 if is_chosen else 13,
                    "symbol": "star" if is_chosen else ("diamond" if row.is_baseline else "circle"),
                    "line": {"width": 1.5, "color": "#222" if is_chosen else "white"},
                },
                hovertemplate=(
                    f"<b>{row.label}</b><br>test accuracy %{{y:.1f}} %{validation}"
                    f"<br>{api.format_count(row.params)} parameters"
                    f"<br>{x_title}: %{{x:.3f}}<br>{'fits the budget' if fits else 'over budget'}<extra></extra>"
                ),
            )
        )
        if is_chosen:
            fig.add_annotation(
                x=row.params * scale,
                y=accuracy * 100,
                text=f"<b>Alg. 1 picks {row.setting}</b>",
                ay=-45,
                arrowhead=2,
                bgcolor="rgba(255,255,255,0.85)",
            )
    fig.add_vline(
        x=limit,
        line={"color": "crimson", "dash": "dash", "width": 2},
        annotation_position="top right",
        annotation_text=f"budget {limit:g} {'MB' if budget.bits else 'M'}",
    )
    fig.update_xaxes(range=[0, x_max])
    fig.update_yaxes(range=y_range)
    y_title = f"Test accuracy with {budget.bits}-bit weights (%)" if column != "accuracy" else "Test accuracy (%)"
    return titled(fig, "Accuracy vs memory, with the budget", experiment_subtitle(frame), x_title, y_title, "Setting")


def energy_chart(frame: pd.DataFrame, energy: float | None, chosen) -> go.Figure:
    """Test accuracy against the estimated energy per inference of each trained model, as an SNN (filled)
    and as the same network run as an ANN (hollow), with the energy budget when one is set."""
    fig = go.Figure()
    palette = colors(frame)
    for row in trained(frame)[lambda f: f["energy_uj"].notna()].itertuples():
        is_chosen = chosen is not None and row.run_id == chosen.run_id
        fig.add_trace(
            go.Scatter(
                x=[row.energy_uj, row.ann_energy_uj],
                y=[row.accuracy * 100] * 2,
                mode="lines+markers",
                name=row.label,
                line={"color": palette[row.label], "width": 1, "dash": "dot"},
                marker={
                    "color": palette[row.label],
                    "size": [22 if is_chosen else 13, 10],
                    "symbol": ["star" if is_chosen else "circle", "circle-open"],
                },
                hovertemplate=f"<b>{row.label}</b><br>%{{x:.3g}} µJ per inference<extra></extra>",
            )
        )
    if energy is not None:
        fig.add_vline(
            x=energy,
            line={"color": "crimson", "dash": "dash", "width": 2},
            annotation_text=f"energy budget {energy:g} µJ",
            annotation_position="top right",
        )
    fig.update_xaxes(type="log")
    return titled(
        fig,
        "Accuracy vs energy per inference (SNN ●, same network as an ANN ○)",
        experiment_subtitle(frame),
        "Estimated energy per inference (µJ, log scale)",
        "Test accuracy (%)",
        "Setting",
    )


# -------------------------------------------------------------------------------------------- Model
# Each takes the model's ``run`` and ``experiment`` as ``api.model_details`` gives them, and one of its parts.

NODE_X = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
# How far each edge bends: neighbours are joined straight, longer edges arc above or below so that
# no two edges overlap (0->2 and 0->3 above, 1->3 below).
BEND = {(0, 2): 0.9, (1, 3): -0.9, (0, 3): 1.7}
NODE_RADIUS = 0.2
OP_COLORS = {"skip": "#7f7f7f", "avg pool 3x3": "#8c564b"}


def model_subtitle(run: dict, experiment: dict) -> str:
    profile = profile_label(experiment["profile"], bool(experiment["reduced"]))
    return f"{run['setting']} · experiment #{experiment['id']} · {profile}"


def edge_name(op: str, kernel: int | None) -> str:
    return f"{op} {kernel}x{kernel}" if kernel else op


def cell_figure(edges, run: dict, experiment: dict) -> go.Figure:
    """The searched cell drawn as its graph: nodes 0 to 3, each edge (``(a, b, op, kernel)``) an arrow named
    by its operation; convolutions in the kernel set's colour."""
    color = kernel_set_color(run["kernel_set"])
    fig = go.Figure()
    for a, b, op, kernel in edges:
        (x0, x1), bend = (NODE_X[a], NODE_X[b]), BEND.get((a, b), 0.0)
        cx, cy = (x0 + x1) / 2, 2 * bend  # quadratic Bézier control point: the curve peaks at ``bend``
        edge_color = color if kernel else OP_COLORS.get(op, "#444")
        fig.add_shape(type="path", path=f"M {x0},0 Q {cx},{cy} {x1},0", line={"color": edge_color, "width": 2.5})
        # The arrowhead: along the curve's last tangent (control point -> end), stopping at the node's rim.
        dx, dy = x1 - cx, -cy
        norm = (dx * dx + dy * dy) ** 0.5
        tip = (x1 - NODE_RADIUS * dx / norm, -NODE_RADIUS * dy / norm)
        fig.add_annotation(
            x=tip[0],
            y=tip[1],
            ax=tip[0] - 0.12 * dx / norm,
            ay=tip[1] - 0.12 * dy / norm,
            axref="x",
            ayref="y",
            text="",
            showarrow=True,
            arrowhead=2,
            arrowsize=1.3,
            arrowwidth=2.5,
            arrowcolor=edge_color,
        )
        fig.add_annotation(
            x=cx,
            y=bend,
            text=edge_name(op, kernel),
            showarrow=False,
            bgcolor="white",
            bordercolor=edge_color,
            borderpad=3,
            font={"color": edge_color, "size": 13},
        )
    for node, x in NODE_X.items():
        fig.add_shape(
            type="circle",
            x0=x - NODE_RADIUS,
            x1=x + NODE_RADIUS,
            y0=-NODE_RADIUS,
            y1=NODE_RADIUS,
            fillcolor="#f4f4f4",
            line={"color": "#333", "width": 2},
        )
        fig.add_annotation(x=x, y=0, text=f"<b>{node}</b>", showarrow=False, font={"size": 16})
    for node, text in ((0, "input"), (3, "output")):
        fig.add_annotation(x=NODE_X[node], y=-NODE_RADIUS - 0.2, text=text, showarrow=False, font={"color": "#555"})
    fig.update_xaxes(visible=False, range=[-0.5, 3.5])
    fig.update_yaxes(visible=False, range=[-1.3, 2.0], scaleanchor="x")
    profile = profile_label(experiment["profile"], bool(experiment["reduced"]))
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        showlegend=False,
        title={"text": "The searched cell", "subtitle": {"text": f"{run['kernel_set']} · {profile}"}},
    )
    return fig


def parameters_per_layer(layers: pd.DataFrame, run: dict, experiment: dict) -> go.Figure:
    """Eq. 2-3 parameters of each weight layer, in network order: the cell's convolutions carry the kernel
    set's colour, the fixed layers around them are grey."""
    cell_part, fixed_part = f"cell ({run['kernel_set']})", "fixed layers"
    weighted = layers[layers["params"] > 0]  # BatchNorm-only layers have no Eq. 2-3 parameters
    fig = px.bar(
        weighted.assign(part=[cell_part if n.startswith("cell") else fixed_part for n in weighted["layer"]]),
        x="params",
        y="layer",
        color="part",
        orientation="h",
        hover_data=["shape"],
        color_discrete_map={cell_part: kernel_set_color(run["kernel_set"]), fixed_part: FIXED_GREY},
        labels={"params": "parameters", "part": ""},
    )
    fig.update_yaxes(categoryorder="array", categoryarray=list(weighted["layer"]), autorange="reversed")
    return titled(fig, "Parameters per layer", model_subtitle(run, experiment), "Parameters (Eq. 2-3)", "Layer")


def accuracy_by_split(epochs: pd.DataFrame, run: dict, experiment: dict) -> go.Figure:
    """Train, validation (held-out training images, where the training kept some) and test accuracy after each
    epoch (``epochs``: the model's epochs)."""
    splits = {"test_accuracy": "test", "val_accuracy": "validation", "train_accuracy": "train"}
    history = epochs.melt(
        id_vars="epoch", value_vars=[c for c in splits if c in epochs], var_name="split", value_name="accuracy"
    ).dropna()
    history["accuracy"] = history["accuracy"].astype(float) * 100
    history["split"] = history["split"].map(splits)
    fig = px.line(
        history,
        x="epoch",
        y="accuracy",
        line_dash="split",
        markers=True,
        color_discrete_sequence=[kernel_set_color(run["kernel_set"])],
    )
    fig.update_xaxes(dtick=1)
    return titled(fig, "Accuracy per epoch", model_subtitle(run, experiment), "Epoch", "Accuracy (%)")


def firing_rate_per_epoch(epochs: pd.DataFrame, run: dict, experiment: dict) -> go.Figure:
    fig = px.line(
        epochs.dropna(subset=["firing_rate"]),
        x="epoch",
        y="firing_rate",
        markers=True,
        color_discrete_sequence=[kernel_set_color(run["kernel_set"])],
    )
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(rangemode="tozero")  # a rate is never negative
    return titled(
        fig,
        "Firing rate per epoch (test set)",
        model_subtitle(run, experiment),
        "Epoch",
        "Spikes per neuron per timestep",
    )


def firing_rate_per_layer(firing: pd.DataFrame, run: dict, experiment: dict) -> go.Figure:
    """The deployed model's firing rate of each LIF layer (``firing``: ``layer``, ``firing_rate``), in order."""
    fig = px.bar(
        firing,
        x="firing_rate",
        y="layer",
        orientation="h",
        color_discrete_sequence=[kernel_set_color(run["kernel_set"])],
    )
    fig.update_yaxes(categoryorder="array", categoryarray=list(firing["layer"]), autorange="reversed")
    fig.update_xaxes(rangemode="tozero")
    return titled(
        fig,
        "Firing rate per LIF layer (test set)",
        model_subtitle(run, experiment),
        "Spikes per neuron per timestep",
        "LIF layer",
    )


def operations_per_layer(layer_ops: pd.DataFrame, run: dict, experiment: dict) -> go.Figure:
    """Two bars per weight layer (``layer_ops``: ``layer``, ``input``, ``acs``, ``macs``, ``ann_macs``): the SNN's
    operations (accumulates, or MACs where fed by analog values) and the same layer's MACs as an ANN."""
    bars = layer_ops.assign(snn=layer_ops["acs"] + layer_ops["macs"]).melt(
        id_vars=["layer", "input"], value_vars=["snn", "ann_macs"], var_name="network", value_name="operations"
    )
    bars["network"] = bars["network"].map(
        {"snn": "SNN (spike-driven ACs; MACs where analog)", "ann_macs": "ANN (MACs)"}
    )
    fig = px.bar(
        bars,
        x="operations",
        y="layer",
        color="network",
        barmode="group",
        orientation="h",
        hover_data=["input"],
        color_discrete_sequence=[kernel_set_color(run["kernel_set"]), FIXED_GREY],
        log_x=True,
    )
    fig.update_yaxes(categoryorder="array", categoryarray=list(layer_ops["layer"]), autorange="reversed")
    return titled(
        fig,
        "Operations per image, per layer",
        model_subtitle(run, experiment),
        "Operations per image (log scale)",
        "Layer",
    )


# -------------------------------------------------------------------------------------------- Study
# Each takes the study's ``experiment`` (``api.get_experiment``) for its subtitle.

ROLE_SYMBOLS = {"top": "star", "random": "circle", "spread": "square"}
ROLE_NAMES = {
    "top": "score's top cells",
    "random": "uniform sample",
    "spread": "spread over the scores (earlier design)",
}


def study_subtitle(experiment: dict) -> str:
    profile = profile_label(experiment["profile"], bool(experiment["reduced"]))
    return f"Study #{experiment['id']} · {profile}"


def study_score_chart(report: StudyReport, experiment: dict) -> go.Figure:
    """Every trained cell's score against its accuracy (mean over seeds), its role in the symbol."""
    fig = go.Figure()
    for kernel_set in dict.fromkeys(c["kernel_set"] for c in report.cells):
        for role, symbol in ROLE_SYMBOLS.items():
            mine = [c for c in report.cells if c["kernel_set"] == kernel_set and c["role"] == role]
            if not mine:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[c["score"] for c in mine],
                    y=[c["accuracy"] * 100 for c in mine],
                    mode="markers",
                    name=f"{kernel_set} · {role}",
                    legendgroup=kernel_set,
                    marker={
                        "color": kernel_set_color(kernel_set),
                        "symbol": symbol,
                        "size": 13 if role == "top" else 10,
                        "line": {"width": 1, "color": "white"},
                    },
                    customdata=[
                        [c["genotype"], c["conv_edges"], api.format_count(c["params"]), c["seeds"], ROLE_NAMES[role]]
                        for c in mine
                    ],
                    hovertemplate=(
                        f"<b>{kernel_set}</b> · %{{customdata[4]}}<br>genotype %{{customdata[0]}}"
                        "<br>%{customdata[1]} conv edges · %{customdata[2]} parameters"
                        "<br>score %{x:.2f} · accuracy %{y:.1f} % (%{customdata[3]} seed(s))<extra></extra>"
                    ),
                )
            )
    return titled(
        fig,
        "Training-free score vs trained accuracy",
        study_subtitle(experiment),
        "Training-free score",
        "Test accuracy (%, mean over seeds)",
        "Kernel set",
    )


def top1_chart(report: StudyReport, experiment: dict) -> go.Figure:
    """The score's top cell per kernel set: mean over seeds with its 95% interval, and each seed."""
    fig = go.Figure()
    for k in report.kernel_sets:
        if nan(k.top1.mean):
            continue
        color = kernel_set_color(k.kernel_set)
        error = (
            None
            if nan(k.top1.low)
            else {
                "type": "data",
                "array": [(k.top1.high - k.top1.mean) * 100],
                "arrayminus": [(k.top1.mean - k.top1.low) * 100],
            }
        )
        fig.add_trace(
            go.Bar(
                x=[k.kernel_set],
                y=[k.top1.mean * 100],
                name=k.kernel_set,
                marker_color=color,
                error_y=error,
                hovertemplate=f"<b>{k.kernel_set}</b><br>top-1 %{{y:.1f}} % over {k.top1.n} seed(s)<extra></extra>",
            )
        )
        seeds = next((c["accuracies"] for c in report.cells if c["kernel_set"] == k.kernel_set), [])
        fig.add_trace(
            go.Scatter(
                x=[k.kernel_set] * len(seeds),
                y=[a * 100 for a in seeds],
                mode="markers",
                marker={"color": "#222", "size": 7, "symbol": "line-ew-open"},
                showlegend=False,
                hovertemplate="seed: %{y:.1f} %<extra></extra>",
            )
        )
    fig.update_layout(showlegend=False)
    return titled(
        fig,
        "Top-1 accuracy by kernel set (error bars: 95% over seeds)",
        study_subtitle(experiment),
        "Kernel set",
        "Test accuracy (%)",
        "Kernel set",
    )


def differences_chart(report: StudyReport, experiment: dict) -> go.Figure:
    """Each pair of kernel sets: the mean accuracy difference over their samples with its 95% interval."""
    fig = go.Figure()
    for d in report.differences:
        e = d.difference
        label = f"{d.second} − {d.first}"
        error = (
            None
            if nan(e.low)
            else {"type": "data", "array": [(e.high - e.estimate) * 100], "arrayminus": [(e.estimate - e.low) * 100]}
        )
        fig.add_trace(
            go.Scatter(
                x=[e.estimate * 100],
                y=[label],
                mode="markers",
                marker={"color": kernel_set_color(d.second), "size": 12, "symbol": "diamond" if d.paired else "circle"},
                error_x=error,
                name=label,
                customdata=[["paired by genotype" if d.paired else "independent samples", e.n, d.params_ratio]],
                hovertemplate=f"<b>{label}</b><br>%{{x:+.2f}} points (%{{customdata[0]}}, n = %{{customdata[1]}})"
                "<br>%{customdata[2]:.2f}× the parameters<extra></extra>",
            )
        )
    fig.add_vline(x=0, line={"color": "#888", "dash": "dot"})
    fig.update_layout(showlegend=False)
    return titled(
        fig,
        "Accuracy difference between kernel sets (95% interval)",
        study_subtitle(experiment),
        "Mean test accuracy difference (points)",
        "Kernel sets",
    )


def grouped_chart(rows: list[dict], x: str, title: str, x_title: str, experiment: dict, order=None) -> go.Figure:
    """Accuracy by kernel set within groups (conv-edge count, parameter bin): the mean over the group's trained
    cells with its 95% interval (clipped to 0-100 %; none for a single cell), kernel sets side by side."""
    fig = go.Figure()
    for kernel_set in dict.fromkeys(r["kernel_set"] for r in rows):
        mine = [r for r in rows if r["kernel_set"] == kernel_set]
        means = [r["mean"] * 100 for r in mine]
        highs = [m if nan(r["high"]) else min(r["high"] * 100, 100.0) for r, m in zip(mine, means)]
        lows = [m if nan(r["low"]) else max(r["low"] * 100, 0.0) for r, m in zip(mine, means)]
        fig.add_trace(
            go.Scatter(
                x=[str(r[x]) for r in mine],
                y=means,
                name=kernel_set,
                mode="markers",
                marker={"color": kernel_set_color(kernel_set), "size": 11},
                error_y={
                    "type": "data",
                    "array": [h - m for h, m in zip(highs, means)],
                    "arrayminus": [m - lo for lo, m in zip(lows, means)],
                    "thickness": 1.5,
                    "width": 4,
                },
                customdata=[r["n"] for r in mine],
                hovertemplate=f"<b>{kernel_set}</b><br>{x_title}: %{{x}}<br>mean %{{y:.1f}} % over %{{customdata}} "
                "cell(s)<extra></extra>",
            )
        )
    fig.update_layout(scattermode="group", scattergap=0.5)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order or sorted({str(r[x]) for r in rows}))
    return titled(fig, title, study_subtitle(experiment), x_title, "Test accuracy (%, mean over cells)", "Kernel set")
