"""Model: one trained network: its cell, its layers, how it trained, and its file to download."""

from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import studio
from engine import api

st.title("Model")

runs = api.runs_frame(store=studio.store())
experiments = api.list_experiments(store=studio.store())
studies = experiments.loc[experiments["kind"] == "study", "id"]
runs = runs[~runs["experiment_id"].isin(studies)]  # a study keeps no model: the Study page shows it
searched = runs[runs["best_genotype"].notna()].sort_values(["experiment_id", "run_id"], ascending=[False, True])
if searched.empty:
    st.info("No model has been searched yet: launch an experiment, then follow it on Jobs.", icon=":material/hub:")
    st.page_link("views/launch.py", label="Launch an experiment", icon=":material/rocket_launch:")
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
details = api.model_details(run_id, store=studio.store())
run, experiment = details["run"], details["experiment"]
color = studio.kernel_set_color(run["kernel_set"])
profile = studio.profile_label(experiment["profile"], bool(experiment["reduced"]))


def titled(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title={"text": title, "subtitle": {"text": f"{run['setting']} · experiment #{experiment['id']} · {profile}"}},
        xaxis_title=x, yaxis_title=y, margin={"t": 80},
    )  # fmt: skip
    return fig


# ------------------------------------------------------------------------------------------ summary

memory_lines = " · ".join(f"{studio.weight_bytes(run['params'], bits) / 1e6:.2f} MB at {bits}-bit"
                          for bits in studio.BIT_WIDTHS)
cells = st.columns(4)
cells[0].metric("Test accuracy", f"{run['accuracy']:.1%}" if run["accuracy"] is not None else "–", border=True)
cells[1].metric("Parameters (Eq. 2-3)", studio.format_count(run["params"]), help=memory_lines, border=True)
cells[2].metric("Firing rate", f"{run['firing_rate']:.3f}" if run["firing_rate"] is not None else "–",
                help="the share of neurons that spike per timestep, on the test set", border=True)  # fmt: skip
cells[3].metric("Training time", studio.format_seconds(run["train_seconds"]), border=True)
st.caption(f"Memory: {memory_lines}. {profile}, dataset {studio.escape_markdown(experiment['dataset'])}.")

# ------------------------------------------------------------------------------------------- cell

NODE_X = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
# How far each edge bends: neighbours are joined straight, longer edges arc above or below so that
# no two edges overlap (0->2 and 0->3 above, 1->3 below).
BEND = {(0, 2): 0.9, (1, 3): -0.9, (0, 3): 1.7}
NODE_RADIUS = 0.2
OP_COLORS = {"skip": "#7f7f7f", "avg pool 3x3": "#8c564b"}


def edge_name(op: str, kernel: int | None) -> str:
    return f"{op} {kernel}x{kernel}" if kernel else op


def cell_figure(edges) -> go.Figure:
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
        fig.add_annotation(x=tip[0], y=tip[1], ax=tip[0] - 0.12 * dx / norm, ay=tip[1] - 0.12 * dy / norm,
                           axref="x", ayref="y", text="", showarrow=True, arrowhead=2, arrowsize=1.3,
                           arrowwidth=2.5, arrowcolor=edge_color)  # fmt: skip
        fig.add_annotation(x=cx, y=bend, text=edge_name(op, kernel), showarrow=False, bgcolor="white",
                           bordercolor=edge_color, borderpad=3, font={"color": edge_color, "size": 13})  # fmt: skip
    for node, x in NODE_X.items():
        fig.add_shape(type="circle", x0=x - NODE_RADIUS, x1=x + NODE_RADIUS, y0=-NODE_RADIUS, y1=NODE_RADIUS,
                      fillcolor="#f4f4f4", line={"color": "#333", "width": 2})  # fmt: skip
        fig.add_annotation(x=x, y=0, text=f"<b>{node}</b>", showarrow=False, font={"size": 16})
    for node, text in ((0, "input"), (3, "output")):
        fig.add_annotation(x=NODE_X[node], y=-NODE_RADIUS - 0.2, text=text, showarrow=False, font={"color": "#555"})
    fig.update_xaxes(visible=False, range=[-0.5, 3.5])
    fig.update_yaxes(visible=False, range=[-1.3, 2.0], scaleanchor="x")
    fig.update_layout(
        height=380, margin={"l": 10, "r": 10, "t": 60, "b": 10}, showlegend=False,
        title={"text": "The searched cell", "subtitle": {"text": f"{run['kernel_set']} · {profile}"}},
    )  # fmt: skip
    return fig


st.header("Cell")
graph, about = st.columns([3, 2])
graph.plotly_chart(cell_figure(details["edges"]), key="cell", config={"staticPlot": True})
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
    layers, hide_index=True, key="layers", height="content",
    column_config={
        "layer": "Layer", "shape": "Shape",
        "params": st.column_config.NumberColumn("Parameters", format="localized",
                                                help="Eq. 2-3: convolution and linear weights and biases"),
        "batchnorm": st.column_config.NumberColumn("BatchNorm", format="localized",
                                                   help="BatchNorm affine parameters: trainable in PyTorch, "
                                                   "not counted by Eq. 2-3"),
    },
)  # fmt: skip
table.caption(
    f"Total {layers['params'].sum():,} parameters (Eq. 2-3) + {layers['batchnorm'].sum():,} BatchNorm affine."
)
# The cell's convolutions carry the kernel set's colour; the fixed layers around them are grey.
cell_part, fixed_part = f"cell ({run['kernel_set']})", "fixed layers"
weighted = layers[layers["params"] > 0]  # BatchNorm-only layers have no Eq. 2-3 parameters
fig = px.bar(
    weighted.assign(part=[cell_part if n.startswith("cell") else fixed_part for n in weighted["layer"]]),
    x="params", y="layer", color="part", orientation="h", hover_data=["shape"],
    color_discrete_map={cell_part: color, fixed_part: "#9e9e9e"}, labels={"params": "parameters", "part": ""},
)  # fmt: skip
fig.update_yaxes(categoryorder="array", categoryarray=list(weighted["layer"]), autorange="reversed")
chart.plotly_chart(titled(fig, "Parameters per layer", "Parameters (Eq. 2-3)", "Layer"), key="layers_chart")

# ---------------------------------------------------------------------------------------- training

st.header("Training")
epochs = details["epochs"]
if epochs.empty:
    st.info("No epoch has finished yet.")
else:
    accuracy, firing = st.columns(2)
    history = epochs.melt(id_vars="epoch", value_vars=["test_accuracy", "train_accuracy"], var_name="split",
                          value_name="accuracy").dropna()  # fmt: skip
    history["accuracy"] *= 100
    history["split"] = history["split"].map({"train_accuracy": "train", "test_accuracy": "test"})
    fig = px.line(history, x="epoch", y="accuracy", line_dash="split", markers=True, color_discrete_sequence=[color])
    fig.update_xaxes(dtick=1)
    accuracy.plotly_chart(titled(fig, "Accuracy per epoch", "Epoch", "Accuracy (%)"), key="accuracy_chart")
    fig = px.line(epochs.dropna(subset=["firing_rate"]), x="epoch", y="firing_rate", markers=True,
                  color_discrete_sequence=[color])  # fmt: skip
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(rangemode="tozero")  # a rate is never negative
    firing.plotly_chart(titled(fig, "Firing rate per epoch (test set)", "Epoch", "Spikes per neuron per timestep"),
                        key="firing_chart")  # fmt: skip

# ---------------------------------------------------------------------------------------- deploy

st.header("Deployed: lower precision and energy")
deployed = details["deploy"]
if run["stage"] != "done":
    st.info("Measured once the model is trained.", icon=":material/hourglass:")
elif deployed is None:
    st.info("This model was trained before the worker measured deployed models: its accuracy with 8- and 4-bit "
            "weights and its synaptic operations are not known yet.", icon=":material/straighten:")  # fmt: skip
    if st.button("Measure now (one pass over the test set per precision)", key="measure_run"):
        with st.spinner("Measuring on the test set…"):
            api.measure_run(run_id, store=studio.store())
        st.rerun()
else:
    precision, energy = st.columns(2)
    with precision:
        fp32 = run["accuracy"]
        rows = [("fp32", 32, fp32), ("8-bit", 8, run["accuracy_8bit"]), ("4-bit", 4, run["accuracy_4bit"])]
        cells = st.columns(3)
        for cell, (name, bits, acc) in zip(cells, rows):
            cell.metric(f"Accuracy, {name} weights", f"{acc:.1%}",
                        delta=None if bits == 32 else f"{(acc - fp32) * 100:+.1f} pts", border=True,
                        help=f"{studio.weight_bytes(run['params'], bits) / 1e6:.2f} MB of weights at {bits}-bit")  # fmt: skip
        st.caption("Measured on the test set with the weights of every convolution and linear layer quantised "
                   "per output channel, symmetric, round to nearest (biases, BatchNorm and neurons in fp32); "
                   "the same spike encoding as the fp32 accuracy. Results' memory budget at 8 or 4 bits uses "
                   "these accuracies.")  # fmt: skip
    with energy:
        snn, ann = api.ENERGY.snn_uj(run["synops"], run["macs"]), api.ENERGY.ann_uj(run["ann_macs"])
        cells = st.columns(3)
        cells[0].metric("Synaptic ops per image", studio.format_count(run["synops"] + run["macs"]), border=True,
                        help=f"{run['synops']:,.0f} accumulates (spike-driven) + {run['macs']:,.0f} "
                        "multiply-accumulates (analog input)")  # fmt: skip
        cells[1].metric("Energy per inference", f"{snn:.3g} µJ", border=True,
                        help=f"{api.ENERGY.pj_per_ac} pJ per accumulate, {api.ENERGY.pj_per_mac} pJ per "
                        "multiply-accumulate (45 nm)")  # fmt: skip
        cells[2].metric("Same network as an ANN", f"{ann:.3g} µJ", delta=f"{ann / snn:.1f}× the SNN" if snn else None,
                        delta_color="off", border=True)  # fmt: skip
        st.caption(f"Averaged over {deployed['images']:,} test images and every timestep. A layer fed by spikes "
                   "costs one accumulate per spike and target; the ANN runs every layer's multiply-accumulates once. "
                   "Pooling, sums, BatchNorm and membrane updates are not counted.")  # fmt: skip
    rates, ops = st.columns(2)
    firing = pd.DataFrame(deployed["firing"])
    fig = px.bar(firing, x="firing_rate", y="layer", orientation="h", color_discrete_sequence=[color])
    fig.update_yaxes(categoryorder="array", categoryarray=list(firing["layer"]), autorange="reversed")
    fig.update_xaxes(rangemode="tozero")
    rates.plotly_chart(titled(fig, "Firing rate per LIF layer (test set)", "Spikes per neuron per timestep", "LIF layer"),
                       key="layer_firing_chart")  # fmt: skip
    layer_ops = pd.DataFrame(deployed["layers"])
    # One bar per weight layer: the SNN's operations (accumulates, or MACs where fed by analog values) and the
    # same layer's MACs as an ANN.
    bars = layer_ops.assign(snn=layer_ops["acs"] + layer_ops["macs"]).melt(
        id_vars=["layer", "input"], value_vars=["snn", "ann_macs"], var_name="network", value_name="operations")
    bars["network"] = bars["network"].map({"snn": "SNN (spike-driven ACs; MACs where analog)", "ann_macs": "ANN (MACs)"})
    fig = px.bar(bars, x="operations", y="layer", color="network", barmode="group", orientation="h",
                 hover_data=["input"], color_discrete_sequence=[color, "#9e9e9e"], log_x=True)
    fig.update_yaxes(categoryorder="array", categoryarray=list(layer_ops["layer"]), autorange="reversed")
    ops.plotly_chart(titled(fig, "Operations per image, per layer", "Operations per image (log scale)", "Layer"),
                     key="layer_ops_chart")  # fmt: skip

# ------------------------------------------------------------------------------------------ file

st.header("Model file")
path = details["checkpoint"]
if path is None:
    st.info(f"Run #{run_id} ({run['setting']}) has no trained model yet: it is still being searched or trained. "
            "Follow it on Jobs.", icon=":material/hourglass:")  # fmt: skip
    st.page_link("views/jobs.py", label="Open Jobs", icon=":material/monitoring:")
elif not path.is_file():
    st.error(f"The model file of run #{run_id} is missing (moved or deleted): it was saved as `{path}`.",
             icon=":material/error:")  # fmt: skip
else:
    file_name = api.download_name(run)
    megabytes = run["checkpoint_bytes"] / 1e6
    st.markdown(f"`{file_name}` · {megabytes:.2f} MB · safetensors (weights and metadata, nothing executable)")
    st.markdown("SHA-256 of the file:")
    st.code(run["checkpoint_sha256"], language=None)
    st.download_button(
        "Download the model", lambda: path.read_bytes(), file_name=file_name, mime="application/octet-stream",
        on_click="ignore", icon=":material/download:", type="primary", key="download_model",
    )  # fmt: skip
    st.markdown("**For deployment**: the same model as a [NIR](https://neuroir.org) graph for neuromorphic hardware "
                "and simulators (BatchNorm folded; the input encoding, timestep and readout in its metadata), and "
                "with 8- or 4-bit integer weights and per-channel scales (4-bit integers stored one per byte; "
                "`load_model` reads them back). Each is made on first download.")  # fmt: skip
    deploy_buttons = st.container(horizontal=True)
    for fmt, label in (("nir", "Download NIR"), ("int8", "Download 8-bit"), ("int4", "Download 4-bit")):
        deploy_buttons.download_button(
            label, lambda fmt=fmt: api.deploy_file(run_id, fmt, store=studio.store()).read_bytes(),
            file_name=api.download_name(run, fmt), mime="application/octet-stream", on_click="ignore",
            icon=":material/memory:", key=f"download_{fmt}",
        )  # fmt: skip
    st.markdown("Load it in Python, from this project's folder:")
    st.code(
        f"""import torch
from engine.checkpoint import load_model
from engine.encoding import encode

loaded = load_model("{file_name}")  # refuses a file whose weights were changed
size = loaded.data.image_size
images = torch.rand(1, 3, size, size)  # a batch of RGB images in [0, 1]
with torch.no_grad():
    spikes_in = encode(loaded.profile.encoding, images, loaded.profile.timesteps, loaded.data)
    scores = loaded.model(spikes_in)  # the model is in eval mode
print(loaded.data.classes[scores.argmax(1)[0]])""",
        language="python",
    )
