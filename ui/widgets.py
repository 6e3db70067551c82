"""What every dashboard page shares: the store, the sidebar, colours per kernel set, formatting.

Pages talk to the engine only through ``engine.api``; this module holds presentation, nothing else. The charts
themselves are in ``ui.charts``, which needs no Streamlit.
"""

from __future__ import annotations

import re

import streamlit as st

from engine import api
from engine.api import TABLE_I

# Defined with the charts (they need no Streamlit).
from ui.charts import profile_label

TABLE_I_NAMES = tuple(ks.name for ks in TABLE_I)  # the paper's six kernel sets, in its order
BIT_WIDTHS = api.BIT_WIDTHS  # the weight bit widths a memory budget is given at
format_count = api.format_count  # 19886452 -> '19.89 M', as the command line shows counts
weight_bytes = api.weight_bytes  # bytes of a parameter count at a bit width: params x bits / 8


def frame() -> None:
    """First thing on every page: the page setup, the database check and the sidebar with the worker.

    Each page draws its own frame rather than ``app.py``: Streamlit remembers, once per process, that the app
    has a ``pages/`` folder and, until some run has called ``st.navigation``, runs a page visited straight by
    its address (a bookmark, a reload after a restart) on its own, without ``app.py`` and with a page list
    of its own making. The frame is drawn all the same; the flag is cleared as ``st.navigation`` would, and
    a session's first run reruns at once (nothing clicked yet, so nothing lost) through ``app.py``.
    """
    from streamlit.runtime.pages_manager import PagesManager

    without_app = PagesManager.uses_pages_directory
    PagesManager.uses_pages_directory = False
    first_run = "frame_drawn" not in st.session_state
    st.session_state["frame_drawn"] = True
    if without_app and first_run:
        st.rerun()
    st.set_page_config(page_title="SpiKernel Studio", page_icon=":material/neurology:", layout="wide")
    try:
        store()
    except api.StoreError as e:  # damaged, foreign, unreadable: say so on every page, change nothing
        st.error(f"The experiment database cannot be opened: {escape_markdown(e)}", icon=":material/error:")
        st.caption("Point `SPIKERNEL_DB` at a SpiKernel Studio database (or a new file) and restart the app.")
        st.stop()
    sidebar()


def store():
    """The experiment database (``$SPIKERNEL_DB`` or the data root's ``spikernel.db``), opened once."""
    return api.get_store()


def profile_select(key: str, epochs_key: str, default: str = "laptop") -> str:
    """The profile picker of a launch form, its description under it; choosing one resets the form's epochs
    (``epochs_key``) to that profile's."""
    profile = st.selectbox(
        "Profile",
        list(api.PROFILES),
        index=list(api.PROFILES).index(default),
        key=key,
        format_func=lambda name: profile_label(name, api.PROFILES[name].reduced),
        on_change=lambda: st.session_state.update({epochs_key: api.PROFILES[st.session_state[key]].epochs}),
    )
    st.caption(api.PROFILES[profile].description)
    return profile


def escape_markdown(text: str) -> str:
    """Show ``text`` (an error, a path, a user's name) literally inside Markdown: no emphasis, math or links."""
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|$~:])", r"\\\1", str(text))


def sidebar() -> None:
    """The worker's state; a worker that is not running is started when there is work for it."""
    active = store().active_jobs()
    if active:
        api.ensure_worker(store=store())  # does nothing while one runs or is starting

    # Refreshed on its own while there is work: a worker takes a moment to start and stops when idle.
    @st.fragment(run_every=2.0 if active else None)
    def worker_state() -> None:
        state = api.worker_status(store=store())
        if state["running"]:
            st.success(f"Worker running (pid {state['pid']})", icon=":material/memory:")
        elif state["starting"]:
            st.info(f"Worker starting (pid {state['pid']})…", icon=":material/hourglass_top:")
        else:
            st.info("Worker idle: it starts when you launch work.", icon=":material/bedtime:")
        st.caption(f"{store().active_jobs()} job(s) queued or running · database `{store().path.name}`")

    with st.sidebar:
        worker_state()


STATUS_BADGES = {  # a job's or an experiment's status -> (colour, icon)
    api.JobStatus.QUEUED: ("gray", ":material/schedule:"),
    api.JobStatus.RUNNING: ("blue", ":material/progress_activity:"),
    api.JobStatus.DONE: ("green", ":material/check_circle:"),
    api.JobStatus.FAILED: ("red", ":material/error:"),
    api.JobStatus.CANCELLED: ("orange", ":material/block:"),
    "empty": ("gray", ":material/remove:"),  # an experiment without runs
}


def status_badge(status: str) -> str:
    """``:blue-badge[icon running]``, the same on every page."""
    color, icon = STATUS_BADGES.get(status, ("gray", ":material/help:"))
    return f":{color}-badge[{icon} {status}]"


# ----------------------------------------------------------------------------- launching (Launch, Study)

DATASETS = {  # the dataset choices, in the order they are offered
    "sample": "Bundled CIFAR-10 sample",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "tinyimagenet": "TinyImageNet",
    "folder": "A folder of images",
}
DATASET_STATES = {
    "bundled": ":green[:material/check_circle: bundled with the app: ready]",
    "on disk": ":green[:material/check_circle: on disk]",
    "will download": ":blue[:material/download: not on disk yet: it will download when the first job starts]",
}


@st.cache_data(ttl=30, show_spinner=False)
def dataset_status(spec: str, roots: tuple[str, ...]) -> tuple[bool, str]:
    """Cached: CIFAR's status may probe the network (seconds). ``roots`` keys the cache to the data roots."""
    return api.dataset_status(spec)


@st.cache_data(ttl=300, show_spinner=False)
def devices() -> list[str]:
    """The CPU and each GPU (asking torch takes a second or more, once)."""
    return api.devices()


def dataset_select(key: str, folder_key: str, roots: tuple[str, ...]) -> str:
    """The dataset picker of a launch form: a named dataset, or a folder under the data roots. Returns its spec."""
    choice = st.selectbox("Dataset", list(DATASETS), format_func=DATASETS.get, key=key)
    if choice != "folder":
        return choice
    folder = st.text_input(
        "Folder",
        key=folder_key,
        placeholder="pets  or  /absolute/path/to/pets",
        help="An image tree with train/<class>/ and test/<class>/ (or val/). A relative path is read from the "
        f"data root ({roots[0]}).",
    )
    st.caption("Allowed under: " + ", ".join(f"`{r}`" for r in roots))
    return f"folder:{folder.strip()}"


def device_select(key: str, in_flight_key: str, problems: dict, default_in_flight: int = 1) -> tuple[str, int]:
    """The device picker of a launch form, and how many candidates it scores at once. Returns both; the places
    under them for their problems go into ``problems`` (``device``, ``in_flight``)."""
    left, right = st.columns(2)
    device = left.selectbox("Device", devices(), format_func=device_label, key=key).split(" ")[0]
    problems["device"] = left.empty()
    in_flight = right.number_input(
        "Candidates in flight",
        min_value=1,
        max_value=api.MAX_IN_FLIGHT,
        value=default_in_flight,
        key=in_flight_key,
        help="Candidates scored at once, each in a process of its own: for a GPU, where one small candidate "
        "leaves most of it idle. The same results as one at a time; on a CPU keep 1.",
    )
    problems["in_flight"] = right.empty()
    on_cpu = device == "cpu" or (device == "auto" and not any(d.startswith("cuda") for d in devices()))
    if in_flight > 1 and on_cpu:  # allowed (the same results), but rarely what anyone wants
        right.caption("On a CPU they share its cores: slower than one at a time.")
    return device, int(in_flight)


def device_label(device: str) -> str:
    return {"auto": "auto (the GPU when there is one)", "cpu": "CPU"}.get(device, device)


def with_custom_kernel_sets(chosen: list[str], key: str) -> tuple[str, ...]:
    """``chosen`` and the sets typed into a launch form's "Custom kernel sets" field (one per ';' or line:
    '5x5_9x9; 3,11' is two sets), in order, each once."""
    text = st.text_input(
        "Custom kernel sets",
        key=key,
        placeholder="5x5_9x9; 3,11",
        help="Two or more distinct odd kernel sizes from 1 to 11 per set, written 5x5_9x9, 1x1_3x3_5x5, 5x5,9x9 or "
        "5,9; or spikenas, SpikeNAS-Bench's space. Separate several sets with ';'.",
    )
    custom = [part.strip() for part in re.split(r"[;\n]+", text) if part.strip()]
    return tuple(dict.fromkeys([*chosen, *custom]))


def field_errors(errors: dict[str, str], dataset: tuple[bool, str], slots: dict) -> dict[str, str]:
    """A launch form's problems, each under its field: ``errors`` from ``api.validate*(..., check_data=False)``
    plus the dataset's verdict (``dataset_status``, cached: CIFAR's check may probe the network), which shows
    under the dataset field either way. Returns the fields without a slot of their own, to show below."""
    dataset_ok, dataset_state = dataset
    if dataset_ok:
        slots["dataset"].markdown(DATASET_STATES.get(dataset_state, dataset_state))
    else:
        errors["dataset"] = dataset_state
    for field, message in errors.items():
        if field in slots:
            slots[field].markdown(problem_text(message))
    return {field: message for field, message in errors.items() if field not in slots}


def problem_text(message: str) -> str:
    """A field's problem, under the field."""
    return f":red[:material/error: {escape_markdown(message)}]"


def launch_button(
    label: str, *, icon: str, key: str, state: str, config, errors: dict, submit, what: str, message, on_launched=None
) -> None:
    """A form's launch button: disabled while a field is wrong or this very config was just launched (a second
    click would queue a duplicate). It submits, starts a worker unless one runs and reruns the page, leaving
    ``{config, message, warning}`` in ``st.session_state[state]`` for ``launched_notice``; every failure is a
    message, never a traceback."""
    launched = st.session_state.get(state)
    again = launched is not None and launched["config"] == config
    if again:
        st.caption(f"This {what} was just launched; change a field to launch another.")
    if not st.button(label, type="primary", icon=icon, disabled=bool(errors) or again, key=key):
        return
    try:
        ids = submit(config, store=store())
    except api.ConfigError as e:
        for field, problem in e.errors.items():
            st.error(f"{field}: {escape_markdown(problem)}")
        return
    except Exception as e:  # a database or disk problem
        st.error(f"Could not launch: {escape_markdown(e)}")
        return
    warning = None
    try:
        api.ensure_worker(store=store())
    except Exception as e:
        warning = f"The {what} is queued but the worker did not start: {e}. Run `python -m engine worker`."
    st.session_state[state] = {"config": config, "message": message(ids), "warning": warning}
    if on_launched is not None:
        on_launched(ids)
    st.rerun()  # the sidebar shows the worker that just started


def launched_notice(state: str) -> bool:
    """What the last launch did (``launch_button``), if anything; returns whether there was one."""
    launched = st.session_state.get(state)
    if launched:
        st.success(launched["message"], icon=":material/check_circle:")
        if launched["warning"]:
            st.warning(escape_markdown(launched["warning"]))
    return bool(launched)
