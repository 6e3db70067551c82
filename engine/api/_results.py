"""What the Results page reads: frames of runs, candidates, epochs, jobs and events; the models and Alg. 1 over
them; the ground truth of benchmarked runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from engine.api._store import _store
from engine.core import (
    Budget,
    EnergyModel,
    Selection,
    Space,
    pareto_front,
    parse_energy_budget,
    select_model,
    weight_bytes,
)
from engine.store import Store
from engine.study import benchmark

RUN_COLUMNS = [
    "experiment_id",
    "experiment",
    "run_id",
    "job_id",
    "setting",
    "kernel_set",
    "iterations",
    "is_baseline",
    "status",
    "stage",
    "accuracy",
    "val_accuracy",
    "params",
    "params_torch",
    "memory_mb",
    "search_seconds",
    "speedup",
    "best_score",
    "best_genotype",
    "candidates_done",
    "epochs_done",
    "train_seconds",
    "firing_rate",
    "accuracy_8bit",
    "accuracy_4bit",
    "synops",
    "macs",
    "ann_macs",
    "energy_uj",
    "ann_energy_uj",
    "checkpoint",
    "checkpoint_bytes",
    "checkpoint_sha256",
    "profile",
    "reduced",
    "dataset",
    "error",
]


# Energy per operation for the energy columns (engine.core.energy.EnergyModel: 45 nm, 0.9 pJ per AC, 4.6 pJ per MAC).
ENERGY = EnergyModel()


def runs_frame(experiment_ids=None, *, store: Store | None = None) -> pd.DataFrame:
    """One row per run (setting): status, results, fp32 memory and the search speed-up over its
    experiment's baseline."""
    rows = _store(store).runs(experiment_ids)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    frame = frame.rename(columns={"id": "run_id"})
    frame["memory_mb"] = weight_bytes(frame["params"].astype("float"), 32) / 1e6
    frame["is_baseline"] = frame["is_baseline"].astype(bool)
    frame["reduced"] = frame["reduced"].astype(bool)
    # Vectorised (a loop over experiments cost ~2 ms each): each experiment's first searched baseline.
    seconds = frame["search_seconds"].astype("float").where(frame["stage"] != "search")
    base = seconds.where(frame["is_baseline"]).groupby(frame["experiment_id"]).transform("first")
    frame["speedup"] = base / seconds
    # Energy per inference from the measured operation counts (None until measured).
    frame["energy_uj"] = ENERGY.snn_uj(frame["synops"].astype("float"), frame["macs"].astype("float"))
    frame["ann_energy_uj"] = ENERGY.ann_uj(frame["ann_macs"].astype("float"))
    return frame[RUN_COLUMNS]


def candidates_frame(run_id: int, *, store: Store | None = None) -> pd.DataFrame:
    """Every scored cell of a run, in search order."""
    return pd.DataFrame(_store(store).candidates(run_id))


def epochs_frame(experiment_ids, *, store: Store | None = None) -> pd.DataFrame:
    """Per run and epoch: loss, accuracies, firing rate, seconds; with the run's setting and experiment."""
    s = _store(store)
    runs = {r["id"]: r for r in s.runs(experiment_ids)}
    frame = pd.DataFrame(s.epochs(runs))
    if frame.empty:
        return frame
    if "val_accuracy" not in frame:  # a database of a release before validation splits, opened read-only
        frame["val_accuracy"] = math.nan
    frame["setting"] = frame["run_id"].map(lambda r: runs[r]["setting"])
    frame["kernel_set"] = frame["run_id"].map(lambda r: runs[r]["kernel_set"])
    frame["experiment_id"] = frame["run_id"].map(lambda r: runs[r]["experiment_id"])
    return frame


def jobs_frame(experiment_id: int | None = None, *, store: Store | None = None) -> pd.DataFrame:
    """Every job with its live progress, newest experiment first."""
    frame = pd.DataFrame(_store(store).jobs(experiment_id))
    if frame.empty:
        return frame
    return frame.sort_values(["experiment_id", "id"], ascending=[False, True]).reset_index(drop=True)


def events_frame(experiment_id: int | None = None, *, limit: int = 200, store: Store | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(_store(store).events(experiment_id, limit))
    if not frame.empty:
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
    return frame


@dataclass(frozen=True)
class Model:
    """A trained run as Alg. 1 sees it."""

    run_id: int
    setting: str
    accuracy: float
    params: int
    energy_uj: float | None = None
    validation: float | None = None  # validation accuracy (held-out training images, a benchmark's): chosen on


def accuracy_column(bits: int | None) -> str:
    """The accuracy a model has at a weight width: measured with 8- and 4-bit weights; fp32's otherwise (a
    16-bit model is taken to keep it: not measured)."""
    return {8: "accuracy_8bit", 4: "accuracy_4bit"}.get(bits, "accuracy")


def trained_models(runs: pd.DataFrame, bits: int | None = None) -> list[Model]:
    """The finished runs with an accuracy at ``bits`` (runs not measured at 8 or 4 bits are left out)."""
    column = accuracy_column(bits)
    done = runs[(runs["stage"] == "done") & runs[column].notna()]
    energy = done["energy_uj"] if "energy_uj" in done else pd.Series(float("nan"), index=done.index)
    # Runs carry a validation accuracy to choose on (trained since validation splits, or benchmarked); at 8 or 4
    # bits the accuracy measured at that width (on the test split) decides; 16 bits keeps fp32's, both of them.
    unmeasured = pd.Series(math.nan, index=done.index)
    validation = done["val_accuracy"] if "val_accuracy" in done and column == "accuracy" else unmeasured
    return [
        Model(
            int(r.run_id),
            r.setting,
            float(getattr(r, column)),
            int(r.params),
            None if math.isnan(e) else float(e),
            None if math.isnan(v) else float(v),
        )
        for r, e, v in zip(done.itertuples(), energy.astype(float), validation.astype(float))
    ]


def select(
    experiment_ids,
    budget: Budget | str | float,
    bits: int | None = None,
    *,
    energy: float | str | None = None,
    store: Store | None = None,
) -> Selection:
    """Alg. 1 over the trained runs of the given experiments; ``chosen`` is a ``Model`` or None."""
    return choose(runs_frame(experiment_ids, store=store), budget, bits, energy=energy)


def choose(
    runs: pd.DataFrame, budget: Budget | str | float, bits: int | None = None, *, energy: float | str | None = None
) -> Selection:
    """Alg. 1 over the trained runs of a ``runs_frame`` already in hand (the budget slider's path).

    A budget in bytes at 8 or 4 bits picks by the accuracy measured with weights of that width; ``energy``
    (microjoules per inference) adds an energy budget (beyond the paper)."""
    if not isinstance(budget, Budget):
        budget = Budget.parse(budget, bits)
    return select_model(trained_models(runs, budget.bits), budget, parse_energy_budget(energy))


def scored_cells(run_id: int, *, store: Store | None = None) -> dict[str, tuple[float, float]]:
    """A run's scored cells: genotype -> (score, firing rate at initialisation)."""
    return {c["genotype"]: (c["score"], c["firing_rate"]) for c in _store(store).candidates(run_id)}


def benchmark_cells(run_id: int, *, store: Store | None = None) -> pd.DataFrame | None:
    """Every cell a run of a benchmarked space scored, with the true accuracies of its networks (a cell and its
    relabelled twin are two networks with one score), or None when the run's space has no benchmark."""

    s = _store(store)
    run = s.run(run_id)
    dataset = s.experiment(run["experiment_id"])["dataset"]
    records = benchmark.benchmark_records(Space.parse(run["kernel_set"]), dataset)
    scored = scored_cells(run_id, store=s)
    if records is None or not scored:
        return None
    rows, proxies = benchmark.proxies_for(records, scored, "score")
    return pd.DataFrame(
        {
            "id": records.ids[rows],
            "score": proxies["score (score)"],
            "firing_rate": proxies["SAR (score)"],
            "conv_edges": records.conv_edges[rows],
            "params": records.params[rows],
            "val_accuracy": records.final_val[rows],
            "test_accuracy": records.test_acc[rows],
        }
    )


def benchmark_proxies(cells: pd.DataFrame, searches: int = 200) -> pd.DataFrame:
    """The proxy table of ``benchmark_cells``: rank agreement with validation accuracy, precision at 10 and
    100, the partial correlation given conv edges and the regret of 1,000-iteration random searches."""

    proxies = {
        name: cells[column].to_numpy(float)
        for name, column in (
            ("training-free score", "score"),
            ("spike rate (SAR)", "firing_rate"),
            ("conv edges", "conv_edges"),
        )
    }
    rows = benchmark.proxy_table(
        proxies,
        cells["val_accuracy"],
        cells["test_accuracy"],
        cells["conv_edges"],
        searches=searches,
        iterations=(1000,),
    )
    return pd.DataFrame(
        [
            {
                "proxy": r["proxy"],
                "spearman": r["spearman"],
                "kendall": r["kendall"],
                "p_at_10": r["p@10"],
                "p_at_100": r["p@100"],
                "partial": r["partial_spearman"],
                "regret_1000": r["searches"][0]["mean"] if r["searches"] else math.nan,
                "regret_all": r["exhaustive_regret"],
            }
            for r in rows
        ]
    )


def pareto_models(runs: pd.DataFrame, bits: int | None = None) -> list[Model]:
    """The trained runs no other beats on both accuracy (at ``bits``, see ``trained_models``) and
    parameters, by rising parameter count: the models Alg. 1 can pick as the budget grows."""
    return pareto_front(trained_models(runs, bits))
