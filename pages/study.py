"""Study: does the training-free score pick good cells, and do larger kernels help?

A study scores N cells per kernel set, trains a stratified subset of them (the score's top cells with
several seeds, cells drawn at random, cells spread over the score range) and reports rank correlations,
regret and accuracy by kernel set (``engine.study.studies``). The page launches studies, follows a running one
live and shows the report of what has been trained so far.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pandas as pd
import streamlit as st

from engine import api
from engine.api import StudyReport
from ui import widgets
from ui.charts import format_seconds, grouped_chart, nan, study_score_chart, top1_chart

widgets.frame()

REFRESH_S = 2.0
DEFAULTS = api.StudyConfig()
DASH = "—"  # a statistic that is not defined (too few cells, or constant values)


# -------------------------------------------------------------------------------------- loaders


@st.cache_resource(show_spinner=False)
def distinct_cell_count() -> int:
    return api.distinct_cell_count()


@st.cache_data(max_entries=16, show_spinner="Computing the study's statistics…")
def study_report(experiment_id: int, progress_key: tuple, database: str, created) -> StudyReport:
    """Cached per study and per ``progress_key``, which changes as trained cells are added; ``database`` and
    ``created`` keep apart two databases' studies of the same id, or a deleted study and one reusing its id."""
    return api.study_report(experiment_id, store=widgets.store())


# ------------------------------------------------------------------------------------ formatting


badge = widgets.status_badge


def interval_text(interval) -> str:
    """'+0.42 [+0.10, +0.71]'; '—' when the statistic is undefined."""
    if nan(interval.estimate):
        return DASH
    if nan(interval.low):
        return f"{interval.estimate:+.2f} [{DASH}]"
    return f"{interval.estimate:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def top1_text(summary) -> str:
    """The top cell's accuracy over its seeds: mean ± half the 95% interval."""
    if nan(summary.mean):
        return DASH
    if summary.n < 2 or nan(summary.low):
        return f"{summary.mean:.1%} (1 seed)"
    return f"{summary.mean:.1%} ± {(summary.high - summary.mean) * 100:.1f} (n={summary.n})"


def points(value: float | None, signed: bool = False) -> str:
    """An accuracy difference in percentage points."""
    if nan(value):
        return DASH
    return f"{value * 100:+.1f} pts" if signed else f"{value * 100:.1f} pts"


def progress_key(jobs: pd.DataFrame) -> tuple:
    """What the report depends on: each job's status and how many trainings it has recorded (its
    progress counts trainings in the train stage; search progress changes nothing the report shows)."""
    if jobs.empty:
        return ()
    return tuple(
        (int(j.id), j.status, j.run_stage, 0 if nan(j.done) or j.stage != "train" else int(j.done))
        for j in jobs.itertuples()
    )


# ------------------------------------------------------------------------------------- launch


def estimate_seconds(config: api.StudyConfig, trainings: int, store) -> float | None:
    """Launch's estimate for the same searches, with each kernel set's training ``trainings`` times as long
    (an experiment trains one cell per kernel set; the estimate is linear in epochs)."""
    try:
        searches = api.study_searches(config).with_profile_defaults()
        return api.estimate_seconds(replace(searches, epochs=searches.epochs * trainings), store=store)
    except Exception:  # an estimate is a nicety: never a reason for the form to fail
        return None


def launch_form(store, roots: tuple[str, ...]) -> None:
    """The study's fields, each checked as it changes (``api.validate_study``); Launch stays disabled
    while any is wrong. On launch the new study is queued, the worker started and the study selected."""
    slots = {}
    what, how = st.columns(2, gap="large")
    with what:
        dataset = widgets.dataset_select("study_dataset", "study_folder", roots)
        dataset_ok, dataset_state = widgets.dataset_status(dataset, roots)
        slots["dataset"] = st.empty()
        chosen = st.multiselect(
            "Kernel sets (Table I)",
            widgets.TABLE_I_NAMES,
            default=list(DEFAULTS.kernel_sets),
            key="study_sets",
            help="Each set is the two convolution kernel sizes a cell may use.",
        )
        kernel_sets = widgets.with_custom_kernel_sets(chosen, "study_custom_sets")
        slots["kernel_sets"] = st.empty()
        left, right = st.columns(2)
        cells = left.number_input(
            "Cells scored per kernel set",
            min_value=0,
            max_value=api.MAX_ITERATIONS,
            value=DEFAULTS.cells,
            step=10,
            key="study_cells",
            help="N: how many cells the training-free score ranks per kernel set.",
        )
        slots["cells"] = left.empty()
        trained = right.number_input(
            "Cells trained per kernel set",
            min_value=0,
            max_value=api.MAX_ITERATIONS,
            value=DEFAULTS.trained,
            key="study_trained",
            help="A stratified subset of the N scored cells: the top cells, some drawn at "
            "random, the rest spread over the score range and the conv-edge counts.",
        )
        slots["trained"] = right.empty()
        exhaustive = st.checkbox(
            "Exhaustive: distinct cells, in a seeded order",
            value=DEFAULTS.exhaustive,
            key="study_exhaustive",
            help=f"N then means the first N of all {distinct_cell_count():,} distinct cells; at N = "
            f"{distinct_cell_count():,} every cell is scored and the true top-1 cell is known.",
        )
        if exhaustive:
            st.caption(
                f"Scores the first N of the {distinct_cell_count():,} distinct cells (in the seed's order); the report "
                "then also replays random searches of 1,000 and 5,000 iterations over those scores."
            )
        slots["exhaustive"] = st.empty()
    with how:
        profile = widgets.profile_select("study_profile", "study_epochs", DEFAULTS.profile)
        slots["profile"] = st.empty()
        left, right = st.columns(2)
        top = left.number_input(
            "Top cells",
            min_value=0,
            value=DEFAULTS.top,
            key="study_top",
            help="The score's highest cells, each trained with every seed: what a search would pick.",
        )
        slots["top"] = left.empty()
        seeds = right.number_input(
            "Seeds per top cell",
            min_value=0,
            value=DEFAULTS.seeds,
            key="study_seeds",
            help="Training seeds for each top cell: the error bars of the top-1 accuracy. Other cells train once.",
        )
        slots["seeds"] = right.empty()
        left, right = st.columns(2)
        epochs = left.number_input(
            "Training epochs",
            min_value=1,
            max_value=api.MAX_EPOCHS,
            value=api.PROFILES[profile].epochs,
            key="study_epochs",
            help=f"Per trained cell (the {profile} profile's own is {api.PROFILES[profile].epochs}).",
        )
        slots["epochs"] = left.empty()
        seed = right.number_input(
            "Seed",
            min_value=0,
            value=DEFAULTS.seed,
            key="study_seed",
            help="Same seed, same cells, same subset and weights.",
        )
        slots["seed"] = right.empty()
        device, in_flight = widgets.device_select("study_device", "study_in_flight", slots, DEFAULTS.in_flight)
        name = st.text_input(
            "Study name (optional)",
            key="study_name",
            placeholder=f"study of {', '.join(kernel_sets) or '…'} on {dataset}",
        )
        slots["name"] = st.empty()

    config = api.StudyConfig(
        dataset=dataset,
        kernel_sets=kernel_sets,
        cells=int(cells),
        exhaustive=exhaustive,
        trained=int(trained),
        top=int(top),
        seeds=int(seeds),
        profile=profile,
        epochs=int(epochs),
        seed=int(seed),
        device=device,
        in_flight=in_flight,
        name=name,
    )
    errors = api.validate_study(config, check_data=False)  # the dataset was checked above
    for field, message in widgets.field_errors(errors, (dataset_ok, dataset_state), slots).items():
        st.markdown(widgets.problem_text(f"{field}: {message}"))

    if errors:
        st.caption(f"Fix the {len(errors)} field(s) marked above to launch.")
    else:
        per_set = min(config.trained, config.cells) + config.top * (config.seeds - 1)
        seconds = estimate_seconds(config, per_set, store)
        st.caption(
            f"{len(kernel_sets)} kernel set(s), each: {config.cells:,} cells scored, {config.trained:,} of them "
            f"trained, {per_set:,} trainings of {config.epochs} epoch(s) (the top {config.top} with "
            f"{config.seeds} seed(s) each)."
            + (
                f" Roughly {format_seconds(seconds)} in all (from this database's pace when it has one)."
                if seconds is not None
                else ""
            )
        )
    widgets.launch_button(
        "Launch study",
        icon=":material/science:",
        key="study_launch",
        state="study_launched",
        config=config,
        errors=errors,
        submit=api.submit_study,
        what="study",
        message=lambda ids: f"Study #{ids['experiment_id']} queued: {len(ids['job_ids'])} kernel set(s).",
        on_launched=lambda ids: st.session_state.update(study_pick=ids["experiment_id"]),  # shown below
    )


def launch_section(store, first: bool) -> None:
    with st.expander("Launch a study", expanded=first, icon=":material/add_circle:"):
        st.caption(
            "Per kernel set: score N cells without training, then train a stratified subset of them: the score's "
            "top cells (several seeds), cells drawn at random, and cells spread over the score range."
        )
        launch_form(store, tuple(str(p) for p in api.data_roots()))
    widgets.launched_notice("study_launched")


# ----------------------------------------------------------------------------------- pick, status


def pick_study(studies: pd.DataFrame) -> int:
    """The study shown: one a link names (``?study=N``), else the newest; the one just launched once it exists."""
    ids = [int(i) for i in studies["id"]]
    labels = {int(r.id): f"#{r.id} · {r.name}" for r in studies.itertuples()}  # its state is shown live below
    linked = st.query_params.get("study")
    if "study_pick" not in st.session_state and linked is not None and linked.isdigit() and int(linked) in ids:
        st.session_state["study_pick"] = int(linked)
    if st.session_state.get("study_pick") not in ids:
        st.session_state.pop("study_pick", None)
    return st.selectbox("Study", ids, format_func=labels.get, key="study_pick")


def config_text(experiment: dict) -> str:
    """One line on what the study does: its data, scale and how many cells it scores and trains."""
    config = experiment["config"]
    plan = config.get("study", {})
    how = "first N of the distinct cells" if config.get("exhaustive") else "sampled"
    return (
        f"{widgets.escape_markdown(experiment['dataset'])} · "
        f"{widgets.profile_label(experiment['profile'], bool(experiment['reduced']))} · per kernel set "
        f"{config['cells']:,} cells scored ({how}), {plan.get('trained', '?')} trained for {config['epochs']} "
        f"epoch(s), the top {plan.get('top', '?')} with {plan.get('seeds', '?')} seed(s) · seed {config['seed']}"
    )


def run_progress(job: dict) -> tuple[float, str]:
    """A kernel set's bar: cells scored, then trainings done, then its top-1 accuracy."""
    if job["status"] == api.JobStatus.DONE:
        accuracy = "n/a" if nan(job["accuracy"]) else f"{job['accuracy']:.1%}"
        return 1.0, f"Done: the score's top cell reached {accuracy} (mean over its seeds)"
    if job["stage"] == "train":
        done, total = int(job["done"] or 0), int(job["total"] or 0)
        fill = min(done / total, 1.0) if total else 0.0
        return fill, f"Training: {done}/{total} trainings done · {job['note'] or 'starting'}"
    scored, total = int(job["candidates_done"] or 0), int(job["iterations"] or 0)
    fill = min(scored / total, 1.0) if total else 0.0
    waiting = " · waiting for the worker" if job["status"] == api.JobStatus.QUEUED else ""
    return fill, f"Scoring: {scored:,}/{total:,} cells{waiting}"


def status_section(experiment_id: int, key: tuple, active: bool, store) -> None:
    """Each kernel set's job, refreshed every few seconds while the study runs; when a training is
    recorded or a job ends, the whole page runs again so the report below follows."""

    @st.fragment(run_every=REFRESH_S if active else None)
    def live() -> None:
        jobs = api.jobs_frame(experiment_id, store=store)
        if progress_key(jobs) != key:
            st.rerun()  # new trained cells or a job ended: a full run redraws the report (and the refresh rate)
        for job in jobs.astype(object).where(jobs.notna(), None).to_dict("records"):
            name, bar = st.columns([1.4, 6], vertical_alignment="top")
            name.markdown(f"**{job['kernel_set']}**  \n{badge(job['status'])}")
            fill, label = run_progress(job)
            bar.progress(fill, text=widgets.escape_markdown(label))
            if job["status"] == api.JobStatus.FAILED:
                bar.error(widgets.escape_markdown(job["error"] or "failed without a message"), icon=":material/error:")
        if active:
            st.caption(
                f"Refreshing every {REFRESH_S:g} s while the study runs · logs, cancel and retry on the Jobs page."
            )

    live()
    if not active:
        st.caption("Nothing of this study is queued or running. Logs, retries and deletion are on the Jobs page.")


# ------------------------------------------------------------------------------------------ report


def undefined_reason(report: StudyReport, kernel_set: str) -> str | None:
    """Why a kernel set's rank correlation is '—', in words (None when it is defined)."""
    mine = [c for c in report.cells if c["kernel_set"] == kernel_set]
    if len(mine) < 3:
        return f"only {len(mine)} cell(s) trained; a rank correlation needs at least 3"
    if len({c["score"] for c in mine}) == 1:
        return "every trained cell has the same score (constant values)"
    if len({c["accuracy"] for c in mine}) == 1:
        return f"every trained cell reached the same accuracy, {mine[0]['accuracy']:.1%} (constant values)"
    return None


def kernel_set_table(report: StudyReport) -> None:
    rows = []
    for k in report.kernel_sets:
        rows.append(
            {
                "kernel_set": k.kernel_set,
                "scored": k.scored,
                "trained": k.trained,
                "spearman": interval_text(k.correlation.spearman),
                "kendall": interval_text(k.correlation.kendall),
                "within": interval_text(k.within_edges),
                "top1": top1_text(k.top1),
                "regret": points(k.regret.regret if k.regret else None),
                "gain": points(k.regret.gain if k.regret else None, signed=True),
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="study_table",
        column_config={
            "kernel_set": "Kernel set",
            "scored": st.column_config.NumberColumn(
                "Scored", format="localized", width="small", help="cells the score ranked"
            ),
            "trained": st.column_config.NumberColumn("Trained", width="small", help="distinct cells trained"),
            "spearman": st.column_config.TextColumn(
                "Spearman ρ [CI]", help="score against trained accuracy (mean over seeds); bootstrap interval"
            ),
            "kendall": st.column_config.TextColumn(
                "Kendall τ [CI]", help="the share of pairs the score orders as accuracy does, corrected for ties"
            ),
            "within": st.column_config.TextColumn(
                "ρ at equal edges [CI]",
                help="ranked inside groups of cells with the same number of "
                "conv edges, pooled: the score beyond counting conv edges",
            ),
            "top1": st.column_config.TextColumn(
                "Top-1 accuracy", help="the highest-scored cell: mean over its seeds ± half its 95% t interval"
            ),
            "regret": st.column_config.TextColumn(
                "Regret",
                help="best − top-1: accuracy the search leaves on the "
                "table: the best trained cell's minus the top-scored cell's",
            ),
            "gain": st.column_config.TextColumn(
                "Gain vs random",
                help="top-1 minus the mean of the cells drawn at random (of all trained cells when none was)",
            ),
        },
    )
    notes: dict[str, list[str]] = {}  # reason -> the kernel sets it applies to
    for k in report.kernel_sets:
        reason = undefined_reason(report, k.kernel_set) if nan(k.correlation.spearman.estimate) else None
        if reason:
            notes.setdefault(reason, []).append(k.kernel_set)
        elif nan(k.within_edges.estimate) and k.trained:
            notes.setdefault(
                "ρ within equal conv edges: no group of cells with the same count varies in both score and accuracy", []
            ).append(k.kernel_set)
    no_random = [
        k.kernel_set
        for k in report.kernel_sets
        if k.regret and not any(c["kernel_set"] == k.kernel_set and c["role"] == "random" for c in report.cells)
    ]
    legend = "[…]: 95% bootstrap interval. Top-1: mean over its seeds ± half the 95% t interval."
    if notes:
        legend += f" {DASH}: not defined. " + " ".join(
            f"{widgets.escape_markdown(', '.join(sets))}: {widgets.escape_markdown(reason)}."
            for reason, sets in notes.items()
        )
    if no_random:
        legend += (
            f" {widgets.escape_markdown(', '.join(no_random))}: no cell was drawn at random (too few trained), "
            "so the gain is over the mean of all trained cells."
        )
    st.caption(legend)
    if report.overall is not None and not nan(report.overall.spearman.estimate):
        st.caption(
            f"All kernel sets together: Spearman ρ = {interval_text(report.overall.spearman)} over "
            f"{report.overall.n} trained cells."
        )


def search_regret_table(report: StudyReport) -> None:
    rows = [
        {
            "kernel_set": k.kernel_set,
            "iterations": s.iterations,
            "searches": s.searches,
            "found": s.found_top1 * 100,
            "gap": s.score_gap,
            "percentile": s.percentile * 100,
        }
        for k in report.kernel_sets
        for s in k.search_regret
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="study_search_regret",
        column_config={
            "kernel_set": "Kernel set",
            "iterations": st.column_config.NumberColumn("Search iterations", format="localized"),
            "searches": st.column_config.NumberColumn("Searches replayed"),
            "found": st.column_config.NumberColumn("Found the true top-1", format="%.0f %%"),
            "gap": st.column_config.NumberColumn("Mean score gap", format="%.3f", help="top score − the pick's score"),
            "percentile": st.column_config.NumberColumn(
                "Pick's percentile", format="%.2f %%", help="share of the scored cells scoring below the pick"
            ),
        },
    )


def verdict(report: StudyReport, experiment: dict) -> str:
    """What the numbers support, in plain words, with the scale caveat."""
    lines = []
    for k in report.kernel_sets:
        rho, within = k.correlation.spearman, k.within_edges
        if nan(rho.estimate) or nan(rho.low):
            lines.append(
                f"**{k.kernel_set}**: too few (or too uniform) trained cells to say whether the score orders them."
            )
            continue
        if rho.low > 0:
            text = f"the score orders the trained cells by accuracy better than chance (ρ = {rho.estimate:+.2f})"
        elif rho.high < 0:
            text = f"the score orders the trained cells against their accuracy (ρ = {rho.estimate:+.2f})"
        else:
            text = f"no evidence either way at {k.trained} cells (ρ = {rho.estimate:+.2f}, its interval includes 0)"
        if nan(within.low):
            pass
        elif within.low > 0:
            text += f"; among cells with the same number of conv edges it orders them too (ρ = {within.estimate:+.2f})"
        elif within.high < 0:
            text += (
                f"; among cells with the same number of conv edges it orders them backwards "
                f"(ρ = {within.estimate:+.2f})"
            )
        elif rho.low > 0:
            text += (
                f"; among cells with the same number of conv edges the evidence is too thin (ρ = "
                f"{within.estimate:+.2f}, its interval includes 0): counting conv edges may be all it does"
            )
        lines.append(f"**{k.kernel_set}**: {text}.")
    ranked = [k for k in report.kernel_sets if not nan(k.top1.mean)]
    if len(ranked) >= 2 and len({k.top1.mean for k in ranked}) == 1:
        lines.append(
            f"**Larger kernels**: every kernel set's top-1 cell reached {ranked[0].top1.mean:.1%}: no "
            "difference to see here."
        )
    elif len(ranked) >= 2:
        best = max(ranked, key=lambda k: k.top1.mean)
        others = [k for k in ranked if k is not best]
        single = [k.kernel_set for k in others if nan(k.top1.high)]
        overlap = [k.kernel_set for k in others if k.kernel_set not in single and k.top1.high >= best.top1.low]
        text = f"**Larger kernels**: the top-1 cell is most accurate with {best.kernel_set} ({best.top1.mean:.1%})"
        if nan(best.top1.low):
            text += ", but from a single seed: no interval to tell it from the others"
        elif overlap:
            text += (
                f", but its 95% interval over seeds overlaps that of {', '.join(overlap)}: this study cannot "
                "tell them apart"
            )
            if single:
                text += f" ({', '.join(single)}: a single seed, no interval)"
        elif single:
            text += f"; {', '.join(single)} had a single seed, so no interval to compare"
        else:
            text += ", and the 95% intervals over seeds do not overlap"
        text += ". Compare at equal conv edges and parameters below."
        lines.append(text)
    profile = widgets.profile_label(experiment["profile"], bool(experiment["reduced"]))
    if experiment["reduced"]:
        lines.append(
            f"**Scale**: {profile}. At this small width the score mostly counts conv edges, so trust ρ at "
            "equal conv edges more than the overall ρ, and do not read these numbers as the "
            "paper's."
        )
    else:
        lines.append(f"**Scale**: {profile}; the intervals still reflect only the cells trained here.")
    return "\n".join(f"- {line}" for line in lines)


def downloads(experiment: dict, store) -> None:
    """CSV (one row per trained cell and seed) and JSON (config and full report), built only when clicked."""
    buttons = st.container(horizontal=True)
    for fmt, mime in (("csv", "text/csv"), ("json", "application/json")):
        buttons.download_button(
            f"Download {fmt.upper()}",
            partial(api.export_study, experiment["id"], fmt, store=store),
            file_name=api.export_name(experiment, fmt),
            mime=mime,
            on_click="ignore",
            icon=":material/download:",
            key=f"study_export_{fmt}_{experiment['id']}",
        )
    st.caption("CSV: one row per trained cell and seed. JSON: the study's configuration and this whole report.")


def report_section(experiment: dict, key: tuple, store) -> None:
    try:
        report = study_report(experiment["id"], key, str(store.path), experiment["created"])
    except ValueError:  # engine.study.studies.report refuses a kernel set with no trained cell yet (stats.summarise)
        report = None
    if report is None or not report.cells:
        trained_any = any(stage == "train" and done or status == api.JobStatus.DONE for _, status, stage, done in key)
        st.info(
            "Cells are being trained, but not yet in every kernel set: the report appears once each kernel set "
            "has trained its first cell."
            if trained_any
            else "Nothing trained yet: the report fills in as each kernel set's cells are trained.",
            icon=":material/hourglass:",
        )
        return
    st.header("Per kernel set")
    kernel_set_table(report)
    st.markdown(verdict(report, experiment))

    st.header("Does the score pick good cells?")
    left, right = st.columns(2)
    left.plotly_chart(study_score_chart(report, experiment), key="study_score_chart")
    left.caption("Each point is a trained cell: ★ the score's top cells, ● drawn at random, ■ spread over the scores.")
    right.plotly_chart(top1_chart(report, experiment), key="study_top1_chart")
    right.caption("Bars: the highest-scored cell's accuracy averaged over its seeds; dashes: each seed.")

    st.header("Do larger kernels help?")
    left, right = st.columns(2)
    left.plotly_chart(
        grouped_chart(
            report.by_edges, "conv_edges", "Accuracy at equal conv-edge count", "Conv edges in the cell", experiment
        ),
        key="study_edges_chart",
    )
    bins = [r["params_bin"] for r in sorted(report.by_params, key=lambda r: r["params_low"])]
    right.plotly_chart(
        grouped_chart(
            report.by_params,
            "params_bin",
            "Accuracy at equal parameter count",
            "Parameters (Eq. 2-3)",
            experiment,
            list(dict.fromkeys(bins)),
        ),
        key="study_params_chart",
    )
    st.caption(
        "Each point averages the trained cells of one kernel set in one group (error bars: 95% t interval, "
        "none for a single cell; hover for the count): the same number of conv edges, or about the same "
        "size, with different kernels."
    )

    if experiment["config"].get("exhaustive"):
        st.header("Search regret (exhaustive scores)")
        if any(k.search_regret for k in report.kernel_sets):
            search_regret_table(report)
            st.caption(
                "Random searches of the paper's sizes replayed over the stored scores: how often the pick is "
                "the true top-1 cell, how far its score falls short and where it ranks among the scored cells."
            )
        else:
            st.info("Shown once the kernel sets have scored their cells.")

    st.header("Export")
    downloads(experiment, store)


# ------------------------------------------------------------------------------------------- page

st.title("Study")
st.caption(
    "Does the training-free score pick good cells, and do larger kernels help? A study trains a subset of "
    "the cells it scores and measures both."
)

store = widgets.store()
experiments = api.list_experiments(store=store)
studies = experiments[experiments["kind"] == "study"]
launch_section(store, first=studies.empty)
if studies.empty:
    st.info("No studies yet: launch one above.", icon=":material/science:")
    st.stop()

experiment_id = pick_study(studies)
experiment = api.get_experiment(experiment_id, store=store)
st.caption(config_text(experiment))
jobs = api.jobs_frame(experiment_id, store=store)
key = progress_key(jobs)
status_section(experiment_id, key, bool(len(jobs) and jobs["status"].isin(api.ACTIVE).any()), store)
report_section(experiment, key, store)
