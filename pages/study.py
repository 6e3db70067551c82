"""Study: does the training-free score pick good cells, and do larger kernels help?

Per kernel set a study searches N cells and trains the score's top cells, plus a uniform random sample of
distinct cells, every one with the same seeds; it reports the score's correlation with accuracy over the
sample, the pick against a random cell, and kernel sets compared (``engine.study.studies``). The page
launches studies, follows a running one live and shows the report of what has been trained so far.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pandas as pd
import streamlit as st

from engine import api
from engine.api import StudyReport
from ui import widgets
from ui.charts import differences_chart, format_seconds, grouped_chart, nan, study_score_chart, top1_chart

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
        sample = right.number_input(
            "Sampled cells per kernel set",
            min_value=0,
            max_value=api.MAX_ITERATIONS,
            value=DEFAULTS.sample,
            key="study_sample",
            help="Distinct cells drawn uniformly from the whole space and trained: the sample the score's "
            "correlation with accuracy is measured on. More cells detect weaker correlations (see below).",
        )
        slots["sample"] = right.empty()
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
        paired = st.checkbox(
            "Paired: the same sampled genotypes in every kernel set",
            value=DEFAULTS.paired,
            key="study_paired",
            help="Kernel sets are then compared cell for cell (same structure, other kernels), which removes "
            "the cells' own spread from the comparison. Off: each kernel set draws its own sample.",
        )
        slots["paired"] = st.empty()
    with how:
        profile = widgets.profile_select("study_profile", "study_epochs", DEFAULTS.profile)
        slots["profile"] = st.empty()
        left, right = st.columns(2)
        top = left.number_input(
            "Top cells",
            min_value=0,
            value=DEFAULTS.top,
            key="study_top",
            help="The score's highest cells among the N searched: the first is the search's pick.",
        )
        slots["top"] = left.empty()
        seeds = right.number_input(
            "Seeds per trained cell",
            min_value=0,
            value=DEFAULTS.seeds,
            key="study_seeds",
            help="Training seeds of every trained cell, top and sampled alike: the pick is compared with the "
            "sample at equal noise, and the seeds tell how much of the accuracy is the cell's.",
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
        sample=int(sample),
        top=int(top),
        seeds=int(seeds),
        paired=paired,
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
        per_set = api.trainings_per_kernel_set(config)
        seconds = estimate_seconds(config, per_set, store)
        st.caption(
            f"{len(kernel_sets)} kernel set(s), each: {config.cells:,} cells searched, the top {config.top} and "
            f"{config.sample:,} sampled cells trained with {config.seeds} seed(s) each: up to {per_set:,} trainings "
            f"of {config.epochs} epoch(s)."
            + (
                f" Roughly {format_seconds(seconds)} in all (from this database's pace when it has one)."
                if seconds is not None
                else ""
            )
        )
        power_notice(config)
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


def power_notice(config: api.StudyConfig) -> None:
    """What the design can detect, before anything runs: a warning when it misses moderate correlations."""
    detectable = api.design_power(config)
    text = (
        f"With {config.sample} sampled cells per kernel set, a Spearman correlation of {detectable:.2f} or more "
        f"is detected {api.POWER:.0%} of the time (two-sided, 5 %)."
    )
    if detectable > api.WEAK_DESIGN:
        st.warning(
            f"{text} Weaker ones mostly go unseen: {api.cells_needed(api.WEAK_DESIGN)} cells detect "
            f"{api.WEAK_DESIGN}, {api.cells_needed(0.3)} detect 0.3.",
            icon=":material/warning:",
        )
    else:
        st.caption(f"{text} {api.cells_needed(0.3)} cells detect 0.3.")


def launch_section(store, first: bool) -> None:
    with st.expander("Launch a study", expanded=first, icon=":material/add_circle:"):
        st.caption(
            "Per kernel set: search N cells without training and train the score's top cells, plus a uniform "
            "random sample of distinct cells that the score's correlation with accuracy is measured on."
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
    sample = plan.get("sample", f"{plan.get('trained', '?')} trained (an earlier design)")
    paired = " (paired across kernel sets)" if plan.get("paired") else ""
    return (
        f"{widgets.escape_markdown(experiment['dataset'])} · "
        f"{widgets.profile_label(experiment['profile'], bool(experiment['reduced']))} · per kernel set "
        f"{config['cells']:,} cells searched ({how}), the top {plan.get('top', '?')} and {sample} sampled "
        f"cells{paired} trained for {config['epochs']} epoch(s) with {plan.get('seeds', '?')} seed(s) · "
        f"seed {config['seed']}"
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
    mine = [c for c in report.cells if c["kernel_set"] == kernel_set and c["sampled"]]
    if len(mine) < 3:
        return f"only {len(mine)} sampled cell(s) trained; a rank correlation needs at least 3"
    if len({c["score"] for c in mine}) == 1:
        return "every sampled cell has the same score (constant values)"
    if len({c["accuracy"] for c in mine}) == 1:
        return f"every sampled cell reached the same accuracy, {mine[0]['accuracy']:.1%} (constant values)"
    return None


def estimate_text(estimate, p: bool = True) -> str:
    """'+0.42 [+0.10, +0.71] · p 0.012'; '—' when the statistic is undefined; no interval below 8 cells."""
    if nan(estimate.estimate):
        return DASH
    text = f"{estimate.estimate:+.2f}"
    if not nan(estimate.low):
        text += f" [{estimate.low:+.2f}, {estimate.high:+.2f}]"
    if p and not nan(estimate.p):
        text += f" · {estimate.p_text(equals=' ')}"
    return text


def kernel_set_table(report: StudyReport) -> None:
    rows = [
        {
            "kernel_set": k.kernel_set,
            "scored": k.scored,
            "sampled": k.sampled,
            "detectable": None if nan(k.detectable) else k.detectable,
            "spearman": estimate_text(k.spearman),
            "kendall": estimate_text(k.kendall),
            "partial": estimate_text(k.partial),
            "edges": estimate_text(k.versus["conv edges"], p=False),
            "params": estimate_text(k.versus["parameters"], p=False),
            "ceiling": None if nan(k.reliability.ceiling) else k.reliability.ceiling,
        }
        for k in report.kernel_sets
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="study_table",
        column_config={
            "kernel_set": "Kernel set",
            "scored": st.column_config.NumberColumn(
                "Searched", format="localized", width="small", help="cells the search scored (its pick's pool)"
            ),
            "sampled": st.column_config.NumberColumn(
                "Sampled", width="small", help="cells of the uniform sample trained so far: the correlations' n"
            ),
            "detectable": st.column_config.NumberColumn(
                "Detects ρ ≥", format="%.2f", help="the smallest correlation this many cells detect 80 % of the time"
            ),
            "spearman": st.column_config.TextColumn(
                "Spearman ρ [CI] · p",
                help="score against trained accuracy (mean over seeds) over the sample; BCa bootstrap interval, "
                "permutation p-value",
            ),
            "kendall": st.column_config.TextColumn(
                "Kendall τ · p", help="the share of pairs ordered alike, tie-corrected"
            ),
            "partial": st.column_config.TextColumn(
                "ρ, conv edges fixed [CI]",
                help="partial rank correlation: does the score order cells beyond counting their conv edges?",
            ),
            "edges": st.column_config.TextColumn(
                "ρ − conv edges' ρ [CI]", help="the score's ρ minus that of counting conv edges (paired interval)"
            ),
            "params": st.column_config.TextColumn(
                "ρ − parameters' ρ [CI]", help="the score's ρ minus that of counting parameters (paired interval)"
            ),
            "ceiling": st.column_config.NumberColumn(
                "Ceiling on ρ",
                format="%.2f",
                help="the most any score could reach with this much seed noise (√ reliability of the seed mean)",
            ),
        },
    )
    notes: dict[str, list[str]] = {}  # reason -> the kernel sets it applies to
    for k in report.kernel_sets:
        reason = undefined_reason(report, k.kernel_set) if nan(k.spearman.estimate) else None
        if reason:
            notes.setdefault(reason, []).append(k.kernel_set)
    legend = (
        "[…]: 95% bootstrap interval (none below 8 cells); p: two-sided. Ceiling: from the seeds' spread within "
        "cells against the cells' spread (ICC)."
    )
    if notes:
        legend += f" {DASH}: not defined. " + " ".join(
            f"{widgets.escape_markdown(', '.join(sets))}: {widgets.escape_markdown(reason)}."
            for reason, sets in notes.items()
        )
    st.caption(legend)
    if not nan(report.pooled.estimate):
        st.caption(
            f"All kernel sets, each ranked within itself: Spearman ρ = {estimate_text(report.pooled)} over "
            f"{report.pooled.n} sampled cells (resampled by genotype; {report.shared} genotype(s) in more than one "
            "kernel set)."
        )


def pick_table(report: StudyReport) -> None:
    """The search's pick against a uniformly drawn cell trained with the same seeds."""
    rows = []
    for k in report.kernel_sets:
        q = k.pick
        rows.append(
            {
                "kernel_set": k.kernel_set,
                "pick": top1_text(k.top1),
                "sample": None if q is None else q.sample_mean * 100,
                "gain": points(q.gain if q else None, signed=True),
                "z": None if q is None or nan(q.z) else q.z,
                "percentile": None if q is None else q.percentile * 100,
                "regret": points(q.regret if q else None, signed=True),
                "chosen_on": None if q is None else q.chosen_on,
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="study_pick_table",
        column_config={
            "kernel_set": "Kernel set",
            "pick": st.column_config.TextColumn(
                "Pick's accuracy", help="the search's top-scored cell: mean over its seeds ± half its 95% t interval"
            ),
            "sample": st.column_config.NumberColumn("Sample mean", format="%.1f %%", help="over the same seeds"),
            "gain": st.column_config.TextColumn("Gain over a random cell", help="pick − the sample's mean"),
            "z": st.column_config.NumberColumn(
                "Gain in SE",
                format="%+.1f",
                help="the gain over the spread of one random cell: a score with no information gives about 0 ± 1",
            ),
            "percentile": st.column_config.NumberColumn("Pick's percentile", format="%.0f %%"),
            "regret": st.column_config.TextColumn(
                "Regret", help="the sample's best cell minus the pick; the best is chosen on validation accuracy"
            ),
            "chosen_on": st.column_config.TextColumn(
                "Best chosen on", help="test: optimistic (chosen and reported alike)"
            ),
        },
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
    """What the numbers support, each claim exactly as strong as its interval, with the scale caveat."""
    lines = []
    for k in report.kernel_sets:
        rho = k.spearman
        if nan(rho.estimate) or nan(rho.low):
            lines.append(
                f"**{k.kernel_set}**: too few (or too uniform) sampled cells to say whether the score orders them."
            )
            continue
        if rho.low > 0:
            text = f"the score orders the sampled cells by accuracy (ρ = {estimate_text(rho)})"
        elif rho.high < 0:
            text = f"the score orders the sampled cells against their accuracy (ρ = {estimate_text(rho)})"
        else:
            text = (
                f"no evidence either way (ρ = {estimate_text(rho)}); at {k.sampled} cells only correlations of "
                f"{k.detectable:.2f} or more are reliably seen"
            )
        partial, versus = k.partial, k.versus["conv edges"]
        if not nan(partial.low) and partial.low > 0:
            text += f"; it orders cells beyond their conv-edge count (partial ρ = {estimate_text(partial)})"
        elif not nan(partial.low) and rho.low > 0:
            text += f"; with conv edges held fixed the evidence is too thin (partial ρ = {estimate_text(partial)})"
        if not nan(versus.low) and versus.high < 0:
            text += "; counting conv edges orders them better than the score"
        q = k.pick
        if q is not None and not nan(q.z):
            text += f". Its pick is {q.gain * 100:+.1f} points from a random cell ({q.z:+.1f} SE)"
        lines.append(f"**{k.kernel_set}**: {text}.")
    for d in report.differences:
        e = d.difference
        if nan(e.low):
            continue
        how = "cell for cell" if d.paired else "over independent samples"
        if e.low > 0 or e.high < 0:
            word = "more" if e.low > 0 else "less"
            text = f"{d.second} is {word} accurate than {d.first} {how}"
        else:
            text = f"{d.second} and {d.first} cannot be told apart {how}"
        agree, text_agree = d.agreement, ""
        if not nan(agree.low):  # paired: does a cell's rank carry from one kernel pair to the other?
            shown = "also trains well" if agree.low > 0 else "may or may not train well"
            text_agree = f" A cell that trains well with one pair {shown} with the other (ρ = {estimate_text(agree)})."
        lines.append(
            f"**{d.second} vs {d.first}**: {text} ({e.estimate * 100:+.1f} points, 95% [{e.low * 100:+.1f}, "
            f"{e.high * 100:+.1f}]), at {d.params_ratio:.2f}× the parameters.{text_agree}"
        )
    profile = widgets.profile_label(experiment["profile"], bool(experiment["reduced"]))
    if experiment["reduced"]:
        lines.append(
            f"**Scale**: {profile}. At this small width the score mostly counts conv edges, so trust the partial ρ "
            "more than the overall ρ, and do not read these numbers as the paper's."
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
    except ValueError:  # a report of rows it cannot read: shown as nothing trained yet
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
    st.header("Does the score order cells by accuracy?")
    kernel_set_table(report)
    st.markdown(verdict(report, experiment))
    left, right = st.columns(2)
    left.plotly_chart(study_score_chart(report, experiment), key="study_score_chart")
    left.caption("Each point is a trained cell: ● the uniform sample (the correlations), ★ the score's top cells.")
    right.plotly_chart(top1_chart(report, experiment), key="study_top1_chart")
    right.caption("Bars: the search's pick, its accuracy averaged over its seeds; dashes: each seed.")

    st.header("Is the search's pick better than a random cell?")
    pick_table(report)

    st.header("Do larger kernels help?")
    left, right = st.columns(2)
    if report.differences:
        left.plotly_chart(differences_chart(report, experiment), key="study_differences_chart")
        left.caption(
            "Mean accuracy of the second kernel set minus the first over their samples, with its 95% interval "
            "(paired by genotype where both sampled the same cells)."
        )
    right.plotly_chart(
        grouped_chart(
            report.by_edges, "conv_edges", "Accuracy at equal conv-edge count", "Conv edges in the cell", experiment
        ),
        key="study_edges_chart",
    )
    right.caption(
        "Each point averages the sampled cells of one kernel set with that many conv edges (error bars: 95% t "
        "interval, none for a single cell; hover for the count)."
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
    "Does the training-free score pick good cells, and do larger kernels help? A study trains the score's top "
    "cells and a uniform sample of the space, and measures both."
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
