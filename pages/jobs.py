"""Jobs: every run of every experiment, newest first, with its live progress and the controls to steer it.

Everything shown comes from the store, so the page survives a browser reload or an app restart. The
live part refreshes itself only while something is queued or running.
"""

from datetime import datetime

import pandas as pd
import streamlit as st

from engine import api
from ui import widgets
from ui.charts import format_seconds

widgets.frame()

REFRESH_S = 2.0
SHOWN_EXPERIMENTS = 10  # the newest; older ones on request (each refresh redraws every card shown)
badge = widgets.status_badge


def clock(timestamp: float) -> str:
    """A moment as a clock time (with the date when not today): it stays true on a page that no longer
    refreshes, unlike "3 s ago"."""
    moment = datetime.fromtimestamp(timestamp)
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with None for missing values (NaN is truthy and formats badly)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def act(action, *args, done: str) -> None:
    """Run a cancel/retry/delete, keep its outcome for the next run and rerun the whole app: the refresh
    rate and the sidebar follow what changed (the sidebar starts a worker for retried jobs)."""
    try:
        count = action(*args, store=widgets.store())
    except Exception as e:  # e.g. deleting an experiment whose job a worker just claimed
        st.session_state["jobs_flash"] = ("error", str(e))
    else:
        st.session_state["jobs_flash"] = ("success", done.format(count=count))
    st.rerun()


def progress(job: dict) -> tuple[float, str]:
    """The bar's fill and its label: search candidates, training epoch and batch, or the result."""
    if job["status"] == "done":
        accuracy = "n/a" if job["accuracy"] is None else f"{job['accuracy']:.1%}"
        return 1.0, f"Done: test accuracy {accuracy}"
    done, total = job["done"] or 0, job["total"] or 0
    if job["stage"] == "train":
        return min(done / total, 1.0) if total else 0.0, f"Training: {job['note'] or 'starting'}"
    if job["stage"] is None:  # not started by a worker yet (or not since its retry): what the run recorded
        done, total = job["candidates_done"] or 0, job["iterations"]
    note = f" · {job['note']}" if job["note"] else ""
    return (min(done / total, 1.0) if total else 0.0), f"Search: {done:,}/{total:,} cells{note}"


def details(job: dict) -> str:
    """One line under the bar: ETA while running, where it ran, when it ended."""
    parts = []
    if job["status"] == api.JobStatus.RUNNING:
        parts.append("cancelling…" if job["cancel_requested"] else f"ETA {format_seconds(job['eta_seconds'])}")
    elif job["status"] == api.JobStatus.QUEUED:
        parts.append("waiting for the worker")
    if job["device"]:
        parts.append(f"on {job['device']}")
    if (job["attempts"] or 0) > 1:
        parts.append(f"attempt {job['attempts']}")
    if job["status"] not in api.ACTIVE and job["finished"]:
        parts.append(f"ended {clock(job['finished'])}")
    return " · ".join(parts)


def job_row(job: dict) -> None:
    name, bar, buttons = st.columns([2.2, 6, 1.2], vertical_alignment="top")
    name.markdown(f"**{job['setting']}**  \n{badge(job['status'])}")
    fill, label = progress(job)
    bar.progress(fill, text=widgets.escape_markdown(label))
    bar.caption(details(job))
    if job["status"] in api.ACTIVE:
        if buttons.button(
            "Cancel",
            key=f"cancel_job_{job['id']}",
            icon=":material/stop_circle:",
            disabled=bool(job["cancel_requested"]),
        ):
            act(api.cancel, None, [job["id"]], done="Cancelled {count} job(s).")
    elif job["status"] in api.STOPPED:
        if buttons.button("Retry", key=f"retry_job_{job['id']}", icon=":material/replay:"):
            act(api.retry, None, [job["id"]], done="Queued {count} job(s) again; each resumes where it stopped.")
    if job["status"] == api.JobStatus.FAILED:
        bar.error(widgets.escape_markdown(job["error"] or "failed without a message"), icon=":material/error:")
    if job["attempts"]:
        with bar.expander("Log", icon=":material/article:"):
            log = api.job_log(job["id"], store=widgets.store()) or "(nothing logged yet)"
            st.code(log, language=None, wrap_lines=True, height=300 if log.count("\n") > 12 else "content")


def experiment_card(experiment: dict, jobs: list[dict]) -> None:
    active = experiment["running"] + experiment["queued"]
    with st.container(border=True):
        head, controls = st.columns([3, 2], vertical_alignment="top")
        head.markdown(f"#### {widgets.escape_markdown(experiment['name'])} {badge(experiment['status'])}")
        head.caption(
            f"#{experiment['id']} · {widgets.escape_markdown(experiment['dataset'])} · "
            f"{widgets.profile_label(experiment['profile'], bool(experiment['reduced']))} · "
            f"submitted {clock(experiment['created'].timestamp())} · "
            f"{experiment['done']}/{experiment['runs']} runs done"
        )
        cancel, retry, delete = controls.columns(3)
        if cancel.button(
            "Cancel all",
            key=f"cancel_exp_{experiment['id']}",
            icon=":material/stop_circle:",
            disabled=not active,
            width="stretch",
        ):
            act(api.cancel, experiment["id"], done="Cancelled {count} job(s).")
        if retry.button(
            "Retry",
            key=f"retry_exp_{experiment['id']}",
            icon=":material/replay:",
            disabled=not (experiment["failed"] + experiment["cancelled"]),
            width="stretch",
            help="Queue its failed and cancelled runs again.",
        ):
            act(api.retry, experiment["id"], done="Queued {count} job(s) again; each resumes where it stopped.")
        with delete.popover(
            "Delete",
            icon=":material/delete:",
            disabled=bool(experiment["running"]),
            help="Cancel its running jobs first." if experiment["running"] else None,
            width="stretch",
        ):
            st.markdown(f"Delete **{widgets.escape_markdown(experiment['name'])}** with its trained models and logs?")
            st.caption("This cannot be undone.")
            if st.button("Delete for good", key=f"delete_exp_{experiment['id']}", type="primary"):
                act(api.delete_experiment, experiment["id"], done="Deleted the experiment.")
        for job in jobs:
            try:
                job_row(job)
            except Exception as e:  # one odd row must not take the page down (st.rerun is no Exception)
                st.warning(f"Cannot show job {job.get('id')}: {widgets.escape_markdown(e)}")


def active_jobs(experiments: pd.DataFrame) -> int:
    return int(experiments[["running", "queued"]].sum().sum()) if len(experiments) else 0


st.title("Jobs")
refreshing = active_jobs(api.list_experiments(store=widgets.store())) > 0


@st.fragment(run_every=REFRESH_S if refreshing else None)
def live() -> None:
    experiments = api.list_experiments(store=widgets.store())
    active = active_jobs(experiments)
    if bool(active) != refreshing:
        st.rerun()  # work started or ended: a full run sets the refresh rate (and the sidebar) anew
    flash = st.session_state.pop("jobs_flash", None)
    if flash:
        getattr(st, flash[0])(widgets.escape_markdown(flash[1]))
    if experiments.empty:
        st.info("No jobs yet.", icon=":material/inbox:")
        st.page_link("pages/launch.py", label="Launch an exploration", icon=":material/rocket_launch:")
        return
    st.caption(
        f"{active} job(s) queued or running · refreshing every {REFRESH_S:g} s"
        if active
        else "Nothing queued or running."
    )
    jobs = api.jobs_frame(store=widgets.store())
    by_experiment = {key: records(group) for key, group in jobs.groupby("experiment_id")} if len(jobs) else {}
    shown = records(experiments if st.session_state.get("jobs_show_all") else experiments.head(SHOWN_EXPERIMENTS))
    for experiment in shown:
        experiment_card(experiment, by_experiment.get(experiment["id"], []))
    if len(experiments) > SHOWN_EXPERIMENTS:
        st.toggle(f"Show all {len(experiments)} experiments", key="jobs_show_all")


live()
