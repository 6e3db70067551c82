"""Results: how each setting searched and trained, and which model Alg. 1 picks under a memory budget."""

from __future__ import annotations

import math
from functools import partial

import pandas as pd
import streamlit as st

from engine import api
from ui import widgets
from ui.charts import (
    accuracy_per_epoch,
    budget_chart,
    energy_chart,
    format_seconds,
    per_million,
    score_vs_accuracy,
    search_time,
    trained,
    truth_chart,
)

widgets.frame()

st.title("Results")

experiments = api.list_experiments(store=widgets.store())
experiments = experiments[experiments["kind"] != "study"]  # a study has no model to choose: the Study page shows it
if experiments.empty:
    st.info("No experiments yet: launch one and its results appear here.", icon=":material/science:")
    st.page_link("pages/launch.py", label="Launch an experiment", icon=":material/rocket_launch:")
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
    "Experiment",
    ids,
    index=ids.index(with_results[0]) if with_results else 0,
    format_func=experiment_label,
    key="results_experiment",
)
other = compare.selectbox(
    "Compare side by side with",
    [None, *(i for i in ids if i != primary)],
    format_func=experiment_label,
    key="results_compare",
)

# Each experiment's runs, read once per page run: the budget fragment below reuses them.
runs = {eid: api.runs_frame([eid], store=widgets.store()) for eid in [primary, other] if eid is not None}
for eid, frame in list(runs.items()):
    if not (frame["stage"] == "done").any():
        st.info(f"Experiment #{eid} has no finished runs yet: follow it on the Jobs page.", icon=":material/hourglass:")
        st.page_link("pages/jobs.py", label="Open Jobs", icon=":material/monitoring:")
        del runs[eid]
if not runs:
    st.stop()
for frame in runs.values():
    frame["label"] = frame["setting"] + frame["is_baseline"].map({True: " (baseline)", False: ""})


def side_by_side(runs: dict[int, pd.DataFrame]):
    """One column per shown experiment, so each section lines the experiments up."""
    return zip(runs.items(), st.columns(len(runs)))


def score_verdict(frame: pd.DataFrame) -> str:
    """How well the best training-free score ranks the trained settings by accuracy, in words."""
    data = trained(frame)
    if len(data) < 3:
        return "A rank correlation needs at least three finished settings."
    rho = data["best_score"].corr(data["accuracy"], method="spearman")
    if math.isnan(rho):
        return "No rank correlation: every score or every accuracy is the same."
    return (
        f"Spearman rank correlation over {len(data)} settings: **ρ = {rho:+.2f}** "
        "(+1: the score ranks the settings exactly as their accuracy does; 0: it says nothing about accuracy)."
    )


# -------------------------------------------------------------------------------------------- charts

st.header("Training and search")
epochs = api.epochs_frame(list(runs), store=widgets.store())
for (eid, frame), column in side_by_side(runs):
    with column:
        # One experiment: its two charts side by side; two experiments: each column stacks its own.
        training, search = st.columns(2) if len(runs) == 1 else (st.container(), st.container())
        mine = epochs[epochs["experiment_id"] == eid] if not epochs.empty else epochs
        if mine.empty and frame["val_accuracy"].notna().any():
            training.info(
                "Nothing was trained here: each pick's accuracy is SpikeNAS-Bench's record of the same "
                "network, trained 100 epochs on CIFAR-10 (test accuracy reported, validation kept beside it).",
                icon=":material/fact_check:",
            )
        elif mine.empty:
            training.info("No epochs recorded yet.")
        else:
            training.plotly_chart(accuracy_per_epoch(frame, mine), key=f"epochs_{eid}")
        search.plotly_chart(search_time(frame), key=f"search_{eid}")
        if not frame["is_baseline"].any():
            search.caption("This experiment has no baseline setting, so no speed-up is measured.")


# ---------------------------------------------------------------------------------- memory budget


def slider_range(values: pd.Series) -> tuple[float, float, float, int]:
    """From half the smallest model to a quarter above the largest (so both "nothing fits" and "all
    fit" are reachable), on a round step; also the decimals that step needs."""
    low, high = values.min() / 2, values.max() * 1.25
    step = 10 ** math.floor(math.log10((high - low) / 100))
    decimals = max(0, -math.floor(math.log10(step)))
    low = max(step, math.floor(low / step) * step)
    return round(low, decimals), round(math.ceil(high / step) * step, decimals), step, decimals


def launch_budget(experiment_id: int):
    """The budget the experiment was launched with (the slider starts there), or None."""
    config = api.get_experiment(experiment_id, store=widgets.store())["config"]
    return api.Budget.parse(config["budget"], config.get("bits")) if config.get("budget") else None


@st.fragment
def budget_section(runs: dict[int, pd.DataFrame], primary: int, other: int | None) -> None:
    """Moving the budget reruns only this fragment: Alg. 1 again and its charts, nothing else. ``runs``: the
    shown experiments' runs, ``primary`` first (its launch budget sets the slider, its choice the Model page's)."""
    models = pd.concat(trained(f) for f in runs.values())
    accuracies = models[["accuracy", "accuracy_8bit", "accuracy_4bit"]]
    low_accuracy, high_accuracy = accuracies.min().min() * 100, accuracies.max().max() * 100
    margin = max(1.0, (high_accuracy - low_accuracy) * 0.15)  # room for the choice's label above the top model
    y_range = (low_accuracy - margin, high_accuracy + 2 * margin)
    launched = launch_budget(primary)
    # 0 stands for a budget in parameters; a bit width for one in megabytes of weights at that width.
    # Keyed per experiment: each opens at the budget it was launched with.
    bits = (
        st.segmented_control(
            "Budget in",
            [0, *widgets.BIT_WIDTHS],
            default=(launched.bits if launched else None) or 0,
            required=True,
            format_func=lambda b: f"MB at {b}-bit" if b else "M parameters",
            key=f"budget_unit_{primary}",
        )
        or None
    )
    low, high, step, decimals = slider_range(models["params"] * per_million(bits))
    start = launched.limit / 1e6 if launched and launched.bits == bits else high
    limit = st.slider(
        f"Memory budget ({f'MB at {bits}-bit' if bits else 'M parameters'})",
        min_value=low,
        max_value=high,
        value=min(max(start, low), high),
        step=step,
        format=f"%.{decimals}f",
        key=f"budget_{primary}_{other}_{bits or 'params'}",
        help="Alg. 1 picks the trained model most accurate on validation (training images held out) whose memory "
        "(Eq. 2-3 parameters × bit width) fits, and reports its test accuracy.",
    )
    if launched:
        st.caption(f"Experiment #{primary} was launched with a budget of {launched}.")
    if bits in (8, 4):
        unmeasured = int(models[api.accuracy_column(bits)].isna().sum())
        st.caption(
            f"At {bits}-bit, Alg. 1 compares the test accuracy each model measured with its weights quantised "
            f"to {bits} bits, not its fp32 accuracy."
            + (f" {unmeasured} model(s) without that measurement are left out." if unmeasured else "")
        )
    energy = None
    measured = models["energy_uj"].dropna()
    if st.toggle(
        "Energy budget too (beyond the paper)",
        key=f"energy_on_{primary}",
        disabled=measured.empty,
        help="Alg. 1 then also requires the estimated energy per inference to fit.",
    ):
        energy = st.number_input(
            "Energy budget (µJ per inference)",
            min_value=0.001,
            value=float(measured.max()),
            format="%.3f",
            key=f"energy_{primary}",
        )
    budget = api.Budget.parse(limit * 1e6, bits)
    for (eid, frame), column in side_by_side(runs):
        selection = api.choose(frame, budget, energy=energy)  # the runs read above: a slider move costs no query
        chosen = selection.chosen
        if eid == primary:  # what the Model page opens by default
            if chosen:
                st.session_state["chosen_run_id"] = chosen.run_id
            else:
                st.session_state.pop("chosen_run_id", None)
        with column:
            if chosen:
                validation = "" if chosen.validation is None else f" ({chosen.validation:.1%} on validation)"
                st.success(
                    f"Alg. 1 picks **{chosen.setting}**: {chosen.accuracy:.1%} test accuracy{validation}, "
                    f"{widgets.format_count(chosen.params)} parameters ({selection.reason}).",
                    icon=":material/star:",
                )
            else:
                # The reason reads "nothing fits <budget>: <why>"; the heading already says the first part.
                why = selection.reason.split(": ", 1)[-1]
                st.warning(f"**Nothing fits this budget**: {why}.", icon=":material/block:")
            st.plotly_chart(budget_chart(frame, budget, chosen, high * 1.02, y_range), key=f"budget_chart_{eid}")
            if api.judged_on_validation(api.trained_models(frame, bits)):
                st.caption(
                    "Alg. 1 and the Pareto front judge the models on validation accuracy (images held out of "
                    "the training set) and the chart shows their test accuracy, which stays unbiased."
                )
            else:
                st.caption(
                    "Judged on test accuracy: "
                    + (
                        f"at {bits}-bit only the test accuracy is measured."
                        if bits in (8, 4)
                        else "some models have no validation accuracy (trained before validation splits, or "
                        "with none held out), so the accuracy reported is also the one chosen on: optimistic."
                    )
                )
            if frame["energy_uj"].notna().any():
                st.plotly_chart(energy_chart(frame, energy, chosen), key=f"energy_chart_{eid}")
            if chosen:
                st.page_link(
                    "pages/model.py",
                    label=f"Open the chosen model ({chosen.setting})",
                    icon=":material/hub:",
                    query_params={"run": chosen.run_id},
                )


st.header("Memory budget (Alg. 1)")
budget_section(runs, primary, other)


# ------------------------------------------------------------------------------------ table, score, export

TABLE_COLUMNS = {
    "setting": st.column_config.TextColumn("Setting"),
    "kernel_set": st.column_config.TextColumn("Kernel set"),
    "iterations": st.column_config.NumberColumn("Iterations", format="%d"),
    "is_baseline": st.column_config.CheckboxColumn("Baseline"),
    "val_accuracy_pct": st.column_config.NumberColumn(
        "Validation accuracy",
        format="%.1f %%",
        help="on training images held out from training: what Alg. 1 and the Pareto front choose on",
    ),
    "accuracy_pct": st.column_config.NumberColumn(
        "Test accuracy", format="%.1f %%", help="on the test split: what a model's accuracy is reported as"
    ),
    "accuracy_8bit_pct": st.column_config.NumberColumn(
        "8-bit", format="%.1f %%", help="test accuracy measured with 8-bit weights"
    ),
    "accuracy_4bit_pct": st.column_config.NumberColumn(
        "4-bit", format="%.1f %%", help="test accuracy measured with 4-bit weights"
    ),
    "energy_uj": st.column_config.NumberColumn(
        "Energy (µJ)",
        format="%.3g",
        help="estimated per inference on the test set (0.9 pJ per AC, 4.6 pJ per MAC, 45 nm)",
    ),
    "ann_energy_uj": st.column_config.NumberColumn(
        "As ANN (µJ)", format="%.3g", help="the same network without spikes: every layer's MACs"
    ),
    "params": st.column_config.NumberColumn("Parameters", format="localized"),
    "memory_mb": st.column_config.NumberColumn("Memory (MB, 32-bit)", format="%.2f"),
    "search_time": st.column_config.TextColumn("Search time"),
    "speedup": st.column_config.NumberColumn("Speed-up", format="%.1f×", help="baseline search time / this one's"),
    "best_score": st.column_config.NumberColumn(
        "Best score", format="%.2f", help="the search's best training-free score"
    ),
    "status": st.column_config.TextColumn("Status"),
}

st.header("Settings")
for (eid, frame), column in side_by_side(runs):
    table = frame.assign(
        val_accuracy_pct=frame["val_accuracy"].astype(float) * 100,
        accuracy_pct=frame["accuracy"] * 100,
        search_time=frame["search_seconds"].map(format_seconds),
        accuracy_8bit_pct=frame["accuracy_8bit"] * 100,
        accuracy_4bit_pct=frame["accuracy_4bit"] * 100,
    )
    column.dataframe(
        table[list(TABLE_COLUMNS)], column_config=TABLE_COLUMNS, hide_index=True, placeholder="–", key=f"table_{eid}"
    )

st.header("Does the training-free score predict accuracy?")
for (eid, frame), column in side_by_side(runs):
    with column:
        chart, text = st.columns([3, 2]) if len(runs) == 1 else (st.container(), st.container())
        chart.plotly_chart(score_vs_accuracy(frame), key=f"score_{eid}")
        text.markdown(score_verdict(frame))
        text.caption(
            "Each point is a setting's best cell: the score it got before any training (the search keeps the "
            "highest) against the accuracy it reached once trained."
        )


@st.cache_data(max_entries=8, show_spinner="Comparing the score with the benchmark's accuracies…")
def ground_truth(run_id: int, database: str, candidates: int) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Cached per run and per number of scored candidates (a running search adds some)."""
    cells = api.benchmark_cells(run_id, store=widgets.store())
    return cells, (api.benchmark_proxies(cells) if cells is not None and len(cells) >= 5 else None)


benchmarked = [
    (eid, r)
    for eid, frame in runs.items()
    for r in frame.itertuples()
    if api.benchmark_records_of([r.kernel_set], r.dataset) and r.candidates_done
]
if benchmarked:
    st.header("Ground truth: the score against 100-epoch accuracies")
    st.caption(
        "Every cell these searches scored, against the validation accuracy SpikeNAS-Bench measured for "
        "the same network (Sun et al., 2025). A proxy worth using beats counting convolutions."
    )
    for eid, run in benchmarked:
        cells, table = ground_truth(int(run.run_id), str(widgets.store().path), int(run.candidates_done))
        if cells is None or table is None:
            continue
        chart, numbers = st.container(), st.container()
        chart.plotly_chart(truth_chart(cells, run.setting), key=f"truth_{eid}_{run.run_id}")
        numbers.dataframe(
            table,
            hide_index=True,
            key=f"proxies_{eid}_{run.run_id}",
            column_config={
                "proxy": "Proxy",
                "spearman": st.column_config.NumberColumn("Spearman", format="%+.3f"),
                "kendall": st.column_config.NumberColumn("Kendall", format="%+.3f"),
                "p_at_10": st.column_config.NumberColumn("p@10", format="%.2f"),
                "p_at_100": st.column_config.NumberColumn("p@100", format="%.2f"),
                "partial": st.column_config.NumberColumn(
                    "Given conv edges", format="%+.3f", help="partial Spearman: what the proxy says beyond the count"
                ),
                "regret_1000": st.column_config.NumberColumn(
                    "Regret 1000x",
                    format="%.2f",
                    help="points of test accuracy a 1,000-iteration random "
                    "search loses against the best network here (mean of 200)",
                ),
                "regret_all": st.column_config.NumberColumn("Regret all", format="%.2f"),
            },
        )
        numbers.caption(
            f"{len(cells):,} networks. Correlations with validation accuracy; regret in test accuracy "
            "points. `python -m engine benchmark report --run "
            f"{run.run_id}` gives intervals and both populations."
        )

st.header("Export")
for (eid, _frame), column in side_by_side(runs):
    experiment = api.get_experiment(eid, store=widgets.store())
    with column:
        st.caption(f"Experiment #{eid}: the table of settings (CSV) or everything, with epochs and events (JSON).")
        buttons = st.container(horizontal=True)
        for fmt, mime in (("csv", "text/csv"), ("json", "application/json")):
            buttons.download_button(
                f"Download {fmt.upper()}",
                partial(api.export_experiment, eid, fmt, store=widgets.store()),  # when asked
                file_name=api.export_name(experiment, fmt),
                mime=mime,
                on_click="ignore",
                icon=":material/download:",
                key=f"export_{fmt}_{eid}",
            )
