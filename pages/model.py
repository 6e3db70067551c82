"""Model: one trained network: its cell, its layers, how it trained, and its file to download."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from engine import api
from ui import widgets
from ui.charts import (
    accuracy_by_split,
    cell_figure,
    edge_name,
    firing_rate_per_epoch,
    firing_rate_per_layer,
    format_seconds,
    operations_per_layer,
    parameters_per_layer,
)

widgets.frame()

TARGET_NAMES = {
    "snntorch": "snntorch",
    "spikingjelly": "SpikingJelly",
    "norse": "Norse",
    "speck": "Speck / DYNAP-CNN (sinabs)",
}


@st.cache_data(max_entries=8, show_spinner="Checking the NIR file against each target…")
def deploy_targets(run_id: int, sha256: str) -> list:
    """Per run and model file (its checksum): the NIR file is made once and read by every check."""
    return api.deploy_targets(run_id, store=widgets.store())


def deploy_targets_section(run_id: int, sha256: str) -> None:
    """Whether the NIR file deploys on each target as it is, and which of the target's rules it breaks."""
    st.subheader("Where it deploys")
    checked = f"deploy_checked_{run_id}"
    if not st.session_state.get(checked):
        st.caption(
            "Whether the NIR file loads as it is in snntorch, SpikingJelly and Norse, and fits Speck / DYNAP-CNN "
            "chips through sinabs, with each rule it breaks (made from the model on first check: a few seconds)."
        )
        if not st.button("Check where it deploys", icon=":material/rule:", key="deploy_check"):
            return
        st.session_state[checked] = True
    reports = deploy_targets(run_id, sha256)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "target": TARGET_NAMES[t.target],
                    "deploys": "as it is" if t.deploys else "no",
                    "broken": "; ".join(f"{r.rule}: {r.detail}" for r in t.broken) or "none",
                    "how": t.how,
                }
                for t in reports
            ]
        ),
        hide_index=True,
        key="deploy_targets_table",
        column_config={
            "target": "Target",
            "deploys": st.column_config.TextColumn("Deploys", width="small"),
            "broken": st.column_config.TextColumn("Rules it breaks", width="large"),
            "how": st.column_config.TextColumn("How to load the NIR file", width="medium"),
        },
    )
    for t in reports:
        with st.expander(f"{TARGET_NAMES[t.target]}: every rule", icon=":material/rule:"):
            for r in t.rules:
                mark = ":green[:material/check_circle:]" if r.ok else ":red[:material/cancel:]"
                st.markdown(f"{mark} {widgets.escape_markdown(r.rule)}: {widgets.escape_markdown(r.detail)}")
            st.caption(widgets.escape_markdown(t.note + (f". Rules from {t.source}." if t.source else ".")))


st.title("Model")

runs = api.runs_frame(store=widgets.store())
experiments = api.list_experiments(store=widgets.store())
studies = experiments.loc[experiments["kind"] == "study", "id"]
runs = runs[~runs["experiment_id"].isin(studies)]  # a study keeps no model: the Study page shows it
searched = runs[runs["best_genotype"].notna()].sort_values(["experiment_id", "run_id"], ascending=[False, True])
if searched.empty:
    st.info("No model has been searched yet: launch an experiment, then follow it on Jobs.", icon=":material/hub:")
    st.page_link("pages/launch.py", label="Launch an experiment", icon=":material/rocket_launch:")
    st.stop()


def default_run() -> int:
    """The run a link asked for, else the one Alg. 1 chose on Results, else the newest experiment's best."""
    wanted = [st.query_params.get("run"), st.session_state.get("chosen_run_id")]
    for run_id in wanted:
        if run_id is not None and str(run_id).isdigit() and int(run_id) in set(searched["run_id"]):
            return int(run_id)
    finished = searched[searched["stage"] == "done"]
    newest = finished[finished["experiment_id"] == finished["experiment_id"].max()] if len(finished) else searched
    return int(newest.sort_values("accuracy", ascending=False)["run_id"].iloc[0])


by_id = searched.set_index("run_id")


def run_label(run_id: int) -> str:
    row = by_id.loc[run_id]
    result = f"{row.accuracy:.1%}" if row.stage == "done" and not math.isnan(row.accuracy) else "training"
    baseline = " (baseline)" if row.is_baseline else ""
    return f"#{row.experiment_id} {row.experiment} · {row.setting}{baseline} · {result}"


options = [int(r) for r in searched["run_id"]]
run_id = st.selectbox("Run", options, index=options.index(default_run()), format_func=run_label, key="model_run")
st.query_params["run"] = str(run_id)  # the address names the model shown: it can be bookmarked or shared
details = api.model_details(run_id, store=widgets.store())
run, experiment = details["run"], details["experiment"]
profile = widgets.profile_label(experiment["profile"], bool(experiment["reduced"]))

# ------------------------------------------------------------------------------------------ summary

memory_lines = " · ".join(
    f"{widgets.weight_bytes(run['params'], bits) / 1e6:.2f} MB at {bits}-bit" for bits in widgets.BIT_WIDTHS
)
cells = st.columns(5)
cells[0].metric(
    "Test accuracy",
    f"{run['accuracy']:.1%}" if run["accuracy"] is not None else "–",
    help="on the test split, never used to choose: what the model's accuracy is reported as",
    border=True,
)
cells[1].metric(
    "Validation accuracy",
    f"{run['val_accuracy']:.1%}" if run.get("val_accuracy") is not None else "–",
    help="on training images held out from its training: what Alg. 1 and the Pareto front choose on "
    "(– when none were held out)",
    border=True,
)
cells[2].metric("Parameters (Eq. 2-3)", widgets.format_count(run["params"]), help=memory_lines, border=True)
cells[3].metric(
    "Firing rate",
    f"{run['firing_rate']:.3f}" if run["firing_rate"] is not None else "–",
    help="the share of neurons that spike per timestep, on the test set",
    border=True,
)
cells[4].metric("Training time", format_seconds(run["train_seconds"]), border=True)
st.caption(f"Memory: {memory_lines}. {profile}, dataset {widgets.escape_markdown(experiment['dataset'])}.")

# ------------------------------------------------------------------------------------------- cell

st.header("Cell")
graph, about = st.columns([3, 2])
graph.plotly_chart(cell_figure(details["edges"], run, experiment), key="cell", config={"staticPlot": True})
with about:
    st.markdown("\n".join(f"- **{a} → {b}**: {edge_name(op, k)}" for a, b, op, k in details["edges"]))
    st.caption(
        "Node 0 is the cell's input and node 3 its output; each node sums its incoming edges and fires "
        "through LIF neurons. Edges not drawn carry no connection. The network uses this cell twice: "
        "cell1 at the stem's width and cell2, after the down-sampling, at twice that width."
    )
    st.caption(f"Genotype `{details['genotype']}` · best training-free score {run['best_score']:.2f}")

# ----------------------------------------------------------------------------------------- layers

st.header("Parameters per layer")
layers = details["layers"]
table, chart = st.columns(2)
table.dataframe(
    layers,
    hide_index=True,
    key="layers",
    height="content",
    column_config={
        "layer": "Layer",
        "shape": "Shape",
        "params": st.column_config.NumberColumn(
            "Parameters", format="localized", help="Eq. 2-3: convolution and linear weights and biases"
        ),
        "batchnorm": st.column_config.NumberColumn(
            "BatchNorm",
            format="localized",
            help="BatchNorm affine parameters: trainable in PyTorch, not counted by Eq. 2-3",
        ),
    },
)
table.caption(
    f"Total {layers['params'].sum():,} parameters (Eq. 2-3) + {layers['batchnorm'].sum():,} BatchNorm affine."
)
chart.plotly_chart(parameters_per_layer(layers, run, experiment), key="layers_chart")

# ---------------------------------------------------------------------------------------- training

st.header("Training")
epochs = details["epochs"]
if epochs.empty:
    st.info("No epoch has finished yet.")
else:
    accuracy, firing = st.columns(2)
    accuracy.plotly_chart(accuracy_by_split(epochs, run, experiment), key="accuracy_chart")
    firing.plotly_chart(firing_rate_per_epoch(epochs, run, experiment), key="firing_chart")

# ---------------------------------------------------------------------------------------- deploy

st.header("Deployed: lower precision and energy")
deployed = details["deploy"]
if run["stage"] != "done":
    st.info("Measured once the model is trained.", icon=":material/hourglass:")
elif deployed is None:
    st.info(
        "This model was trained before the worker measured deployed models: its accuracy with 8- and 4-bit "
        "weights and its synaptic operations are not known yet.",
        icon=":material/straighten:",
    )
    if st.button("Measure now (one pass over the test set per precision)", key="measure_run"):
        with st.spinner("Measuring on the test set…"):
            api.measure_run(run_id, store=widgets.store())
        st.rerun()
else:
    precision, energy = st.columns(2)
    with precision:
        fp32 = run["accuracy"]
        rows = [("fp32", 32, fp32), ("8-bit", 8, run["accuracy_8bit"]), ("4-bit", 4, run["accuracy_4bit"])]
        cells = st.columns(3)
        for cell, (name, bits, acc) in zip(cells, rows):
            cell.metric(
                f"Accuracy, {name} weights",
                f"{acc:.1%}",
                delta=None if bits == 32 else f"{(acc - fp32) * 100:+.1f} pts",
                border=True,
                help=f"{widgets.weight_bytes(run['params'], bits) / 1e6:.2f} MB of weights at {bits}-bit",
            )
        st.caption(
            "Measured on the test set with the weights of every convolution and linear layer quantised "
            "per output channel, symmetric, round to nearest (biases, BatchNorm and neurons in fp32); "
            "the same spike encoding as the fp32 accuracy. Results' memory budget at 8 or 4 bits uses "
            "these accuracies."
        )
    with energy:
        snn, ann = api.ENERGY.snn_uj(run["synops"], run["macs"]), api.ENERGY.ann_uj(run["ann_macs"])
        cells = st.columns(3)
        cells[0].metric(
            "Synaptic ops per image",
            widgets.format_count(run["synops"] + run["macs"]),
            border=True,
            help=f"{run['synops']:,.0f} accumulates (spike-driven) + {run['macs']:,.0f} "
            "multiply-accumulates (analog input)",
        )
        cells[1].metric(
            "Energy per inference",
            f"{snn:.3g} µJ",
            border=True,
            help=f"{api.ENERGY.pj_per_ac} pJ per accumulate, {api.ENERGY.pj_per_mac} pJ per "
            "multiply-accumulate (45 nm)",
        )
        cells[2].metric(
            "Same network as an ANN",
            f"{ann:.3g} µJ",
            delta=f"{ann / snn:.1f}× the SNN" if snn else None,
            delta_color="off",
            border=True,
        )
        st.caption(
            f"Averaged over {deployed['images']:,} test images and every timestep. A layer fed by spikes "
            "costs one accumulate per spike and target; the ANN runs every layer's multiply-accumulates once. "
            "Pooling, sums, BatchNorm and membrane updates are not counted."
        )
    rates, ops = st.columns(2)
    rates.plotly_chart(
        firing_rate_per_layer(pd.DataFrame(deployed["firing"]), run, experiment), key="layer_firing_chart"
    )
    ops.plotly_chart(operations_per_layer(pd.DataFrame(deployed["layers"]), run, experiment), key="layer_ops_chart")

# ------------------------------------------------------------------------------------------ file

st.header("Model file")
path = details["checkpoint"]
if path is None:
    st.info(
        f"Run #{run_id} ({run['setting']}) has no trained model yet: it is still being searched or trained. "
        "Follow it on Jobs.",
        icon=":material/hourglass:",
    )
    st.page_link("pages/jobs.py", label="Open Jobs", icon=":material/monitoring:")
elif not path.is_file():
    st.error(
        f"The model file of run #{run_id} is missing (moved or deleted): it was saved as `{path}`.",
        icon=":material/error:",
    )
else:
    file_name = api.download_name(run)
    megabytes = run["checkpoint_bytes"] / 1e6
    st.markdown(f"`{file_name}` · {megabytes:.2f} MB · safetensors (weights and metadata, nothing executable)")
    st.markdown("SHA-256 of the file:")
    st.code(run["checkpoint_sha256"], language=None)
    st.download_button(
        "Download the model",
        lambda: path.read_bytes(),
        file_name=file_name,
        mime="application/octet-stream",
        on_click="ignore",
        icon=":material/download:",
        type="primary",
        key="download_model",
    )
    st.markdown(
        "**For deployment**: the same model as a [NIR](https://neuroir.org) graph for neuromorphic hardware "
        "and simulators (BatchNorm folded; the input encoding, timestep and readout in its metadata), and "
        "with 8- or 4-bit integer weights and per-channel scales (4-bit integers stored one per byte; "
        "`load_model` reads them back). Each is made on first download."
    )
    deploy_buttons = st.container(horizontal=True)
    for fmt, label in (("nir", "Download NIR"), ("int8", "Download 8-bit"), ("int4", "Download 4-bit")):
        deploy_buttons.download_button(
            label,
            lambda fmt=fmt: api.deploy_file(run_id, fmt, store=widgets.store()).read_bytes(),
            file_name=api.download_name(run, fmt),
            mime="application/octet-stream",
            on_click="ignore",
            icon=":material/memory:",
            key=f"download_{fmt}",
        )
    st.markdown("Load it in Python, from this project's folder:")
    st.code(
        f"""import torch
from engine.train import load_model
from engine.data.encoding import encode

loaded = load_model("{file_name}")  # refuses a file whose weights were changed
size = loaded.data.image_size
images = torch.rand(1, 3, size, size)  # a batch of RGB images in [0, 1]
with torch.no_grad():
    spikes_in = encode(loaded.profile.encoding, images, loaded.profile.timesteps, loaded.data)
    scores = loaded.model(spikes_in)  # the model is in eval mode
print(loaded.data.classes[scores.argmax(1)[0]])""",
        language="python",
    )
    deploy_targets_section(run_id, run["checkpoint_sha256"])
