"""Results: how each setting searched and trained, and which model Alg. 1 picks under a memory budget."""

from __future__ import annotations

import math
from functools import partial

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import studio
from engine import api

OVER_BUDGET_GREY = "#c4c4c4"

st.title("Results")

experiments = api.list_experiments(store=studio.store())
experiments = experiments[experiments["kind"] != "study"]  # a study has no model to choose: the Study page shows it
if experiments.empty:
    st.info("No experiments yet: launch one and its results appear here.", icon=":material/science:")
    st.page_link("views/launch.py", label="Launch an experiment", icon=":material/rocket_launch:")
    st.stop()

names = dict(zip(experiments["id"], experiments["name"]))
done_counts = dict(zip(experiments["id"], experiments["done"].fillna(0).astype(int)))


def experiment_label(experiment_id) -> str:
    if experiment_id is None:
        return "nothing"
    return f"#{experiment_id} · {names[experiment_id]} · {done_counts[experiment_id]} finished"


ids = list(experiments["id"])
with_results = [i for i in ids if done_counts[i]]
pick, compare = st.columns(2)
primary = pick.selectbox(
    "Experiment", ids, index=ids.index(with_results[0]) if with_results else 0, format_func=experiment_label,
    key="results_experiment",
)  # fmt: skip
other = compare.selectbox(
    "Compare side by side with", [None, *(i for i in ids if i != primary)], format_func=experiment_label,
    key="results_compare",
)  # fmt: skip

# Each experiment's runs, read once per page run: the budget fragment below reuses them.
runs = {eid: api.runs_frame([eid], store=studio.store()) for eid in [primary, other] if eid is not None}
for eid, frame in list(runs.items()):
    if not (frame["stage"] == "done").any():
        st.info(f"Experiment #{eid} has no finished runs yet: follow it on the Jobs page.", icon=":material/hourglass:")
        st.page_link("views/jobs.py", label="Open Jobs", icon=":material/monitoring:")
        del runs[eid]
if not runs:
    st.stop()
for frame in runs.values():
    frame["label"] = frame["setting"] + frame["is_baseline"].map({True: " (baseline)", False: ""})


def trained(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs Alg. 1 can pick: finished, with a test accuracy."""
    return frame[(frame["stage"] == "done") & frame["accuracy"].notna()]


def colors(frame: pd.DataFrame) -> dict[str, str]:
    """Colour by kernel set; a baseline shares its kernel set's colour and is told apart by its dash/symbol."""
    return {label: studio.kernel_set_color(ks) for label, ks in zip(frame["label"], frame["kernel_set"])}


def titled(fig: go.Figure, title: str, frame: pd.DataFrame, x: str, y: str) -> go.Figure:
    """Title, axis titles with units, and the profile under the title (reduced profiles say so)."""
    profile = studio.profile_label(frame["profile"].iloc[0], bool(frame["reduced"].iloc[0]))
    return studio.titled(fig, title, f"Experiment #{frame['experiment_id'].iloc[0]} · {profile}", x, y, "Setting")


def dash_baselines(fig: go.Figure) -> go.Figure:
    # Dashed, with diamond markers: a baseline shares its kernel set's colour, and a single epoch has no line.
    fig.for_each_trace(
        lambda t: t.update(line_dash="dash", marker_symbol="diamond") if t.name.endswith("(baseline)") else None
    )
    return fig


def side_by_side():
    """One column per shown experiment, so each section lines the experiments up."""
    return zip(runs.items(), st.columns(len(runs)))


def accuracy_per_epoch(frame: pd.DataFrame, epochs: pd.DataFrame) -> go.Figure:
    data = epochs.dropna(subset=["test_accuracy"]).merge(frame[["run_id", "label"]], on="run_id")
    data["accuracy_pct"] = data["test_accuracy"] * 100
    fig = px.line(
        data, x="epoch", y="accuracy_pct", color="label", color_discrete_map=colors(frame), markers=True,
        hover_data={"train_loss": ":.3f", "firing_rate": ":.3f", "accuracy_pct": ":.1f"},
        labels={"accuracy_pct": "test accuracy (%)", "train_loss": "train loss", "firing_rate": "firing rate"},
    )  # fmt: skip
    fig.update_xaxes(dtick=1)
    return titled(dash_baselines(fig), "Test accuracy per epoch", frame, "Epoch", "Test accuracy (%)")


def speedup_text(row) -> str:
    if row.is_baseline:
        return "baseline"
    return f"{row.speedup:.1f}× speed-up" if not math.isnan(row.speedup) else ""


def search_time(frame: pd.DataFrame) -> go.Figure:
    data = frame[frame["stage"] != "search"].assign(
        speedup_text=lambda f: [speedup_text(r) for r in f.itertuples()],
        duration=lambda f: f["search_seconds"].map(studio.format_seconds),
    )
    fig = px.bar(
        data, x="label", y="search_seconds", color="label", color_discrete_map=colors(frame), text="speedup_text",
        hover_data={"duration": True, "iterations": True, "speedup": ":.2f", "search_seconds": False, "label": False},
        labels={"duration": "search time", "iterations": "cells scored", "speedup": "speed-up over baseline",
                "speedup_text": "vs baseline"},
    )  # fmt: skip
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_layout(showlegend=False)
    return titled(fig, "Search time per setting", frame, "Setting", "Search time (s)")


def score_vs_accuracy(frame: pd.DataFrame) -> tuple[go.Figure, str]:
    data = trained(frame).assign(accuracy_pct=lambda f: f["accuracy"] * 100)
    fig = px.scatter(
        data, x="best_score", y="accuracy_pct", color="label", color_discrete_map=colors(frame),
        symbol="is_baseline", symbol_map={True: "diamond", False: "circle"},
        hover_data={"params": ":,", "is_baseline": False, "best_score": ":.2f", "accuracy_pct": ":.1f"},
    )  # fmt: skip
    fig.update_traces(marker_size=14)
    fig.for_each_trace(lambda t: t.update(name=t.name.split(",")[0]))  # px appends the symbol's value
    titled(fig, "Training-free score vs final accuracy", frame, "Best training-free score of the search",
           "Test accuracy (%)")  # fmt: skip
    if len(data) < 3:
        return fig, "A rank correlation needs at least three finished settings."
    rho = data["best_score"].corr(data["accuracy"], method="spearman")
    if math.isnan(rho):
        return fig, "No rank correlation: every score or every accuracy is the same."
    return fig, (
        f"Spearman rank correlation over {len(data)} settings: **ρ = {rho:+.2f}** "
        "(+1: the score ranks the settings exactly as their accuracy does; 0: it says nothing about accuracy)."
    )


# -------------------------------------------------------------------------------------------- charts

st.header("Training and search")
epochs = api.epochs_frame(list(runs), store=studio.store())
for (eid, frame), column in side_by_side():
    with column:
        # One experiment: its two charts side by side; two experiments: each column stacks its own.
        training, search = st.columns(2) if len(runs) == 1 else (st.container(), st.container())
        mine = epochs[epochs["experiment_id"] == eid] if not epochs.empty else epochs
        if mine.empty:
            training.info("No epochs recorded yet.")
        else:
            training.plotly_chart(accuracy_per_epoch(frame, mine), key=f"epochs_{eid}")
        search.plotly_chart(search_time(frame), key=f"search_{eid}")
        if not frame["is_baseline"].any():
            search.caption("This experiment has no baseline setting, so no speed-up is measured.")


# ---------------------------------------------------------------------------------- memory budget


def per_million(bits: int | None) -> float:
    """What one parameter weighs in the budget's unit: millions of parameters, or MB at ``bits``."""
    return (studio.weight_bytes(1, bits) if bits else 1) / 1e6


def slider_range(values: pd.Series) -> tuple[float, float, float, int]:
    """From half the smallest model to a quarter above the largest (so both "nothing fits" and "all
    fit" are reachable), on a round step; also the decimals that step needs."""
    low, high = values.min() / 2, values.max() * 1.25
    step = 10 ** math.floor(math.log10((high - low) / 100))
    decimals = max(0, -math.floor(math.log10(step)))
    low = max(step, math.floor(low / step) * step)
    return round(low, decimals), round(math.ceil(high / step) * step, decimals), step, decimals


def budget_chart(frame: pd.DataFrame, budget, chosen, x_max: float, y_range: tuple[float, float]) -> go.Figure:
    """Accuracy against memory in the budget's unit: the Pareto front, the budget line, models over it
    greyed out and Alg. 1's choice starred. Axes are shared by the experiments side by side."""
    scale, limit = per_million(budget.bits), budget.limit / 1e6
    x_title = f"Memory at {budget.bits}-bit (MB)" if budget.bits else "Parameters (millions, Eq. 2-3)"
    fig = go.Figure()
    column = api.accuracy_column(budget.bits)  # at 8 or 4 bits: the accuracy measured at that width
    front = api.pareto_models(frame, budget.bits)
    fig.add_trace(go.Scatter(
        x=[m.params * scale for m in front], y=[m.accuracy * 100 for m in front], mode="lines",
        name="Pareto front", line={"color": "#888", "dash": "dot", "shape": "hv"}, hoverinfo="skip",
    ))  # fmt: skip
    palette = colors(frame)
    for row in trained(frame)[lambda f: f[column].notna()].itertuples():
        accuracy = getattr(row, column)
        fits, is_chosen = budget.fits(row.params), chosen is not None and row.run_id == chosen.run_id
        fig.add_trace(go.Scatter(
            x=[row.params * scale], y=[accuracy * 100], mode="markers",
            name=row.label + ("" if fits else " (over budget)"),
            marker={
                "color": palette[row.label] if fits else OVER_BUDGET_GREY, "size": 26 if is_chosen else 13,
                "symbol": "star" if is_chosen else ("diamond" if row.is_baseline else "circle"),
                "line": {"width": 1.5, "color": "#222" if is_chosen else "white"},
            },
            hovertemplate=(
                f"<b>{row.label}</b><br>test accuracy %{{y:.1f}} %<br>{studio.format_count(row.params)} parameters"
                f"<br>{x_title}: %{{x:.3f}}<br>{'fits the budget' if fits else 'over budget'}<extra></extra>"
            ),
        ))  # fmt: skip
        if is_chosen:
            fig.add_annotation(x=row.params * scale, y=accuracy * 100, text=f"<b>Alg. 1 picks {row.setting}</b>",
                               ay=-45, arrowhead=2, bgcolor="rgba(255,255,255,0.85)")  # fmt: skip
    fig.add_vline(x=limit, line={"color": "crimson", "dash": "dash", "width": 2}, annotation_position="top right",
                  annotation_text=f"budget {limit:g} {'MB' if budget.bits else 'M'}")  # fmt: skip
    fig.update_xaxes(range=[0, x_max])
    fig.update_yaxes(range=y_range)
    y_title = f"Test accuracy with {budget.bits}-bit weights (%)" if column != "accuracy" else "Test accuracy (%)"
    return titled(fig, "Accuracy vs memory, with the budget", frame, x_title, y_title)


def energy_chart(frame: pd.DataFrame, energy: float | None, chosen) -> go.Figure:
    """Test accuracy against the estimated energy per inference of each trained model, as an SNN (filled)
    and as the same network run as an ANN (hollow), with the energy budget when one is set."""
    fig = go.Figure()
    palette = colors(frame)
    for row in trained(frame)[lambda f: f["energy_uj"].notna()].itertuples():
        is_chosen = chosen is not None and row.run_id == chosen.run_id
        fig.add_trace(go.Scatter(
            x=[row.energy_uj, row.ann_energy_uj], y=[row.accuracy * 100] * 2, mode="lines+markers",
            name=row.label, line={"color": palette[row.label], "width": 1, "dash": "dot"},
            marker={"color": palette[row.label], "size": [22 if is_chosen else 13, 10],
                    "symbol": ["star" if is_chosen else "circle", "circle-open"]},
            hovertemplate=f"<b>{row.label}</b><br>%{{x:.3g}} µJ per inference<extra></extra>",
        ))  # fmt: skip
    if energy is not None:
        fig.add_vline(x=energy, line={"color": "crimson", "dash": "dash", "width": 2},
                      annotation_text=f"energy budget {energy:g} µJ", annotation_position="top right")  # fmt: skip
    fig.update_xaxes(type="log")
    return titled(fig, "Accuracy vs energy per inference (SNN ●, same network as an ANN ○)", frame,
                  "Estimated energy per inference (µJ, log scale)", "Test accuracy (%)")  # fmt: skip


def launch_budget(experiment_id: int):
    """The budget the experiment was launched with (the slider starts there), or None."""
    config = api.get_experiment(experiment_id, store=studio.store())["config"]
    return api.Budget.parse(config["budget"], config.get("bits")) if config.get("budget") else None


@st.fragment
def budget_section() -> None:
    """Moving the budget reruns only this fragment: Alg. 1 again and its charts, nothing else."""
    models = pd.concat(trained(f) for f in runs.values())
    accuracies = models[["accuracy", "accuracy_8bit", "accuracy_4bit"]]
    low_accuracy, high_accuracy = accuracies.min().min() * 100, accuracies.max().max() * 100
    margin = max(1.0, (high_accuracy - low_accuracy) * 0.15)  # room for the choice's label above the top model
    y_range = (low_accuracy - margin, high_accuracy + 2 * margin)
    launched = launch_budget(primary)
    # 0 stands for a budget in parameters; a bit width for one in megabytes of weights at that width.
    # Keyed per experiment: each opens at the budget it was launched with.
    bits = st.segmented_control(
        "Budget in", [0, *studio.BIT_WIDTHS], default=(launched.bits if launched else None) or 0, required=True,
        format_func=lambda b: f"MB at {b}-bit" if b else "M parameters", key=f"budget_unit_{primary}",
    ) or None  # fmt: skip
    low, high, step, decimals = slider_range(models["params"] * per_million(bits))
    start = launched.limit / 1e6 if launched and launched.bits == bits else high
    limit = st.slider(
        f"Memory budget ({f'MB at {bits}-bit' if bits else 'M parameters'})", min_value=low, max_value=high,
        value=min(max(start, low), high), step=step, format=f"%.{decimals}f",
        key=f"budget_{primary}_{other}_{bits or 'params'}",
        help="Alg. 1 picks the most accurate trained model whose memory (Eq. 2-3 parameters × bit width) fits.",
    )  # fmt: skip
    if launched:
        st.caption(f"Experiment #{primary} was launched with a budget of {launched}.")
    if bits in (8, 4):
        unmeasured = int(models[api.accuracy_column(bits)].isna().sum())
        st.caption(f"At {bits}-bit, Alg. 1 compares the test accuracy each model measured with its weights quantised "
                   f"to {bits} bits, not its fp32 accuracy."
                   + (f" {unmeasured} model(s) without that measurement are left out." if unmeasured else ""))  # fmt: skip
    energy = None
    measured = models["energy_uj"].dropna()
    if st.toggle("Energy budget too (beyond the paper)", key=f"energy_on_{primary}", disabled=measured.empty,
                 help="Alg. 1 then also requires the estimated energy per inference to fit."):  # fmt: skip
        energy = st.number_input("Energy budget (µJ per inference)", min_value=0.001, value=float(measured.max()),
                                 format="%.3f", key=f"energy_{primary}")  # fmt: skip
    budget = api.Budget.parse(limit * 1e6, bits)
    for (eid, frame), column in side_by_side():
        selection = api.choose(frame, budget, energy=energy)  # the runs read above: a slider move costs no query
        chosen = selection.chosen
        if eid == primary:  # what the Model page opens by default
            if chosen:
                st.session_state["chosen_run_id"] = chosen.run_id
            else:
                st.session_state.pop("chosen_run_id", None)
        with column:
            if chosen:
                st.success(
                    f"Alg. 1 picks **{chosen.setting}**: {chosen.accuracy:.1%} test accuracy, "
                    f"{studio.format_count(chosen.params)} parameters ({selection.reason}).",
                    icon=":material/star:",
                )
            else:
                # The reason reads "nothing fits <budget>: <why>"; the heading already says the first part.
                why = selection.reason.split(": ", 1)[-1]
                st.warning(f"**Nothing fits this budget**: {why}.", icon=":material/block:")
            st.plotly_chart(budget_chart(frame, budget, chosen, high * 1.02, y_range), key=f"budget_chart_{eid}")
            if frame["energy_uj"].notna().any():
                st.plotly_chart(energy_chart(frame, energy, chosen), key=f"energy_chart_{eid}")
            if chosen:
                st.page_link("views/model.py", label=f"Open the chosen model ({chosen.setting})",
                             icon=":material/hub:", query_params={"run": chosen.run_id})  # fmt: skip


st.header("Memory budget (Alg. 1)")
budget_section()


# ------------------------------------------------------------------------------------ table, score, export

TABLE_COLUMNS = {
    "setting": st.column_config.TextColumn("Setting"),
    "kernel_set": st.column_config.TextColumn("Kernel set"),
    "iterations": st.column_config.NumberColumn("Iterations", format="%d"),
    "is_baseline": st.column_config.CheckboxColumn("Baseline"),
    "accuracy_pct": st.column_config.NumberColumn("Accuracy", format="%.1f %%"),
    "accuracy_8bit_pct": st.column_config.NumberColumn("8-bit", format="%.1f %%",
                                                       help="test accuracy measured with 8-bit weights"),
    "accuracy_4bit_pct": st.column_config.NumberColumn("4-bit", format="%.1f %%",
                                                       help="test accuracy measured with 4-bit weights"),
    "energy_uj": st.column_config.NumberColumn("Energy (µJ)", format="%.3g",
                                               help="estimated per inference on the test set (0.9 pJ per AC, "
                                               "4.6 pJ per MAC, 45 nm)"),
    "ann_energy_uj": st.column_config.NumberColumn("As ANN (µJ)", format="%.3g",
                                                   help="the same network without spikes: every layer's MACs"),
    "params": st.column_config.NumberColumn("Parameters", format="localized"),
    "memory_mb": st.column_config.NumberColumn("Memory (MB, 32-bit)", format="%.2f"),
    "search_time": st.column_config.TextColumn("Search time"),
    "speedup": st.column_config.NumberColumn("Speed-up", format="%.1f×", help="baseline search time / this one's"),
    "best_score": st.column_config.NumberColumn("Best score", format="%.2f",
                                                help="the search's best training-free score"),  # fmt: skip
    "status": st.column_config.TextColumn("Status"),
}

st.header("Settings")
for (eid, frame), column in side_by_side():
    table = frame.assign(
        accuracy_pct=frame["accuracy"] * 100, search_time=frame["search_seconds"].map(studio.format_seconds),
        accuracy_8bit_pct=frame["accuracy_8bit"] * 100, accuracy_4bit_pct=frame["accuracy_4bit"] * 100,
    )
    column.dataframe(
        table[list(TABLE_COLUMNS)], column_config=TABLE_COLUMNS, hide_index=True, placeholder="–", key=f"table_{eid}"
    )

st.header("Does the training-free score predict accuracy?")
for (eid, frame), column in side_by_side():
    fig, verdict = score_vs_accuracy(frame)
    with column:
        chart, text = st.columns([3, 2]) if len(runs) == 1 else (st.container(), st.container())
        chart.plotly_chart(fig, key=f"score_{eid}")
        text.markdown(verdict)
        text.caption(
            "Each point is a setting's best cell: the score it got before any training (the search keeps the "
            "highest) against the accuracy it reached once trained."
        )

st.header("Export")
for (eid, frame), column in side_by_side():
    experiment = api.get_experiment(eid, store=studio.store())
    with column:
        st.caption(f"Experiment #{eid}: the table of settings (CSV) or everything, with epochs and events (JSON).")
        buttons = st.container(horizontal=True)
        for fmt, mime in (("csv", "text/csv"), ("json", "application/json")):
            buttons.download_button(
                f"Download {fmt.upper()}", partial(api.export_experiment, eid, fmt, store=studio.store()),  # when asked
                file_name=api.export_name(experiment, fmt), mime=mime, on_click="ignore", icon=":material/download:",
                key=f"export_{fmt}_{eid}",
            )  # fmt: skip
