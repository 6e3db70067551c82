"""Launch: pick a dataset, kernel sets and a scale; see network sizes and the time it takes; queue it.

Every field is checked as it changes (``api.validate``), each problem is shown under its field and the
Launch button stays disabled until there is none. No ``st.form``: it would hold the checks back.
"""

import pandas as pd
import streamlit as st

from engine import api
from ui import widgets
from ui.charts import format_seconds

widgets.frame()

DEFAULTS = api.ExperimentConfig()  # the product's defaults, the command line's too


@st.cache_data(ttl=300, show_spinner="Sizing the networks…")
def network_sizes(profile: str, dataset: str, kernel_sets: tuple[str, ...], roots: tuple[str, ...]) -> pd.DataFrame:
    """Cached: a folder dataset is opened to learn its image size and classes."""
    return api.network_sizes(profile, dataset, kernel_sets)


st.title("Launch an exploration")
st.caption(
    "Each kernel set gets a training-free search for its best cell; that cell is trained, and Alg. 1 then "
    "picks the model most accurate on held-out training images that fits your memory budget, reported with "
    "its test accuracy."
)

# The benchmark preset: the methodology on SpikeNAS-Bench's space, whose 15,625 networks were trained for 100
# epochs on CIFAR-10. Searches score at the laptop width; the picks' accuracies are looked up, not trained.
BENCHMARK_PRESET = {
    "dataset": "sample",
    "custom_sets": "spikenas",
    "iterations": 1000,
    "exhaustive": False,
    "baseline_on": True,
    "baseline": "spikenas_5000x",
    "profile": "laptop",
    "epochs": api.PROFILES["laptop"].epochs,
    **{f"ks_{name}": False for name in widgets.TABLE_I_NAMES},
}

with st.container(border=True):
    intro, button = st.columns([4, 1], vertical_alignment="center")
    intro.markdown(
        "**New here?** See the whole methodology on true accuracies in a few minutes, offline: search "
        "SpikeNAS-Bench's space with 1,000 and 5,000 iterations, and Alg. 1 chooses among networks trained for "
        "100 epochs on CIFAR-10 (their records ship with the app). Nothing is trained."
    )
    button.button(
        "Use this preset",
        key="benchmark_preset",
        icon=":material/fact_check:",
        on_click=lambda: st.session_state.update(BENCHMARK_PRESET),
    )

roots = tuple(str(p) for p in api.data_roots())
slots = {}  # field -> the place under its widget where its problem shows, filled once validated
what, how = st.columns(2, gap="large")

with what:
    st.subheader("What to explore")
    dataset = widgets.dataset_select("dataset", "folder", roots)
    dataset_ok, dataset_state = widgets.dataset_status(dataset, roots)
    slots["dataset"] = st.empty()

    st.markdown("**Kernel sets**")
    st.caption("Table I of the paper: each set is the two convolution kernel sizes a cell may use.")
    grid = st.columns(3)
    chosen = [
        name
        for i, name in enumerate(widgets.TABLE_I_NAMES)
        if grid[i % 3].checkbox(name, value=name in DEFAULTS.kernel_sets, key=f"ks_{name}")
    ]
    kernel_sets = widgets.with_custom_kernel_sets(chosen, "custom_sets")
    slots["kernel_sets"] = st.empty()

    iterations = st.number_input(
        "Search iterations per kernel set",
        min_value=1,
        max_value=api.MAX_ITERATIONS,
        value=DEFAULTS.iterations,
        step=100,
        key="iterations",
        help="How many random cells the training-free score ranks for each kernel set.",
    )
    slots["iterations"] = st.empty()
    exhaustive = st.toggle(
        "Exhaustive: each distinct cell once",
        value=DEFAULTS.exhaustive,
        key="exhaustive",
        help=f"Score the first N of all {api.distinct_cell_count():,} distinct cells (of two kernel sizes), in an "
        "order shuffled by the seed, instead of N random draws (which can repeat a cell). Beyond the paper.",
    )
    use_baseline = st.toggle(
        "Measure search speed-up against a baseline", value=DEFAULTS.baseline is not None, key="baseline_on"
    )
    baseline = None
    if use_baseline:
        baseline = st.text_input(
            "Baseline setting",
            value=DEFAULTS.baseline or "",
            key="baseline",
            help="A kernel set and its iterations, like 1x1_3x3_5000x (the paper's). It runs too; every "
            "other set's search time is compared with it.",
        ).strip()
        slots["baseline"] = st.empty()

with how:
    st.subheader("How")
    profile = widgets.profile_select("profile", "epochs", DEFAULTS.profile)
    slots["profile"] = st.empty()
    left, right = st.columns(2)
    epochs = left.number_input(
        "Training epochs",
        min_value=1,
        max_value=api.MAX_EPOCHS,
        value=api.PROFILES[profile].epochs,
        key="epochs",
        help=f"How long each kernel set's best cell is trained (the {profile} profile's own is "
        f"{api.PROFILES[profile].epochs}; the paper trains for 300).",
    )
    slots["epochs"] = left.empty()
    seed = right.number_input(
        "Seed", min_value=0, value=DEFAULTS.seed, key="seed", help="Same seed, same cells and weights."
    )
    slots["seed"] = right.empty()
    validation = st.number_input(
        "Validation share",
        min_value=0.0,
        max_value=0.9,
        value=DEFAULTS.validation,
        step=0.05,
        key="validation",
        help="The share of each class's training images held out from training. Alg. 1 and the Pareto front "
        "choose on the accuracy measured on them and report the test accuracy, which choosing on the test "
        "images would make optimistic. 0 holds none out: models are then chosen on test accuracy.",
    )
    slots["validation"] = st.empty()
    device, in_flight = widgets.device_select("device", "in_flight", slots, DEFAULTS.in_flight)
    default_name = f"{', '.join(kernel_sets) or '…'} on {dataset}"
    name = st.text_input("Experiment name (optional)", key="name", placeholder=default_name)
    slots["name"] = st.empty()
    left, right = st.columns([2, 1])
    budget = (
        left.text_input(
            "Memory budget (optional)",
            key="budget",
            placeholder="10M  or  40MB",
            help="Where the Results page's budget starts: parameters (10M, 500k) or memory (40MB, 3MiB).",
        ).strip()
        or None
    )
    slots["budget"] = st.empty()
    bits = None
    if budget and api.budget_in_bytes(budget):  # '40MB', '3MiB': a budget in bytes needs a bit width
        bits = right.selectbox(
            "Bit width", widgets.BIT_WIDTHS, key="bits", help="Bits per parameter for a budget in bytes."
        )

config = api.ExperimentConfig(
    dataset=dataset,
    kernel_sets=kernel_sets,
    iterations=int(iterations),
    exhaustive=exhaustive,
    baseline=baseline or None,
    profile=profile,
    epochs=int(epochs),
    seed=int(seed),
    validation=float(validation),
    device=device,
    in_flight=in_flight,
    budget=budget,
    bits=bits,
    name=name,
)
errors = api.validate(config, check_data=False)  # the dataset was checked above
unplaced = widgets.field_errors(errors, (dataset_ok, dataset_state), slots)

st.divider()
st.subheader("Before you launch")
try:
    settings = config.settings()
    seconds = api.estimate_seconds(config, store=widgets.store())
except Exception:  # invalid kernel sets, iterations or baseline: their messages are shown above
    settings, seconds = [], None
runs, cells, total, _ = st.columns([1, 1, 1.4, 2])
runs.metric("Runs", len(settings) or "–", help="One per kernel set, plus the baseline.")
cells.metric("Cells scored", f"{sum(s.iterations for s in settings):,}" if settings else "–")
total.metric(
    "Estimated time",
    format_seconds(seconds),
    help="Rough: from this database's finished runs of the profile when it has some, else measured defaults.",
)

st.markdown(f"**Network size per kernel set** · {profile} profile")
if "dataset" in errors or "kernel_sets" in errors or not kernel_sets:
    st.caption("Shown once the dataset and kernel sets are valid.")
else:
    try:
        table = network_sizes(profile, dataset, kernel_sets, roots)
    except Exception as e:  # a folder that cannot be read: say so, keep the page
        st.warning(f"Cannot size the networks: {widgets.escape_markdown(e)}")
    else:
        looked_up = api.benchmark_records_of(kernel_sets, dataset)
        if looked_up:
            st.caption(
                f"{', '.join(looked_up)}: the networks SpikeNAS-Bench trained (width 128), whose accuracy "
                "each pick looks up; the search scores them at this profile's width."
            )
        st.dataframe(
            table.assign(max_mb=widgets.weight_bytes(table["max_params"], 32) / 1e6),
            hide_index=True,
            column_config={
                "kernel_set": "Kernel set",
                "min_params": st.column_config.NumberColumn("Smallest cell (parameters)", format="localized"),
                "max_params": st.column_config.NumberColumn("Largest cell (parameters)", format="localized"),
                "max_mb": st.column_config.NumberColumn("Largest cell at 32-bit", format="%.2f MB"),
            },
        )

for field, message in unplaced.items():
    st.markdown(widgets.problem_text(f"{field}: {message}"))
if errors:
    st.caption(f"Fix the {len(errors)} field(s) marked above to launch.")
widgets.launch_button(
    "Launch",
    icon=":material/rocket_launch:",
    key="launch",
    state="launched",
    config=config,
    errors=errors,
    submit=api.submit_experiment,
    what="exploration",
    message=lambda ids: f"Experiment #{ids['experiment_id']} queued: {len(ids['job_ids'])} run(s).",
)
if widgets.launched_notice("launched"):
    st.page_link("pages/jobs.py", label="Follow its progress on the Jobs page", icon=":material/monitoring:")
