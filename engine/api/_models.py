"""One trained model: its file, its deployable forms (NIR, 8 and 4 bits) and what the Model page shows of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from engine.api._store import _store
from engine.core import (
    Genotype,
    Space,
    get_profile,
    layer_counts,
)
from engine.data import dataset_shape
from engine.store import Store, StoreError


def checkpoint_path(run_id: int, *, store: Store | None = None) -> Path:
    """The trained model file of a finished run."""
    s = _store(store)
    run = s.run(run_id)
    if not run["checkpoint"]:
        raise StoreError(f"run {run_id} ({run['setting']}) has no trained model yet")
    return s.root / run["checkpoint"]


def measured_accuracy(run_id: int, fmt: str, *, store: Store | None = None) -> float | None:
    """The test accuracy the worker measured for a run's ``int8``/``int4`` weights (None when not measured)."""
    bits = {"int8": 8, "int4": 4}.get(fmt)
    return _store(store).run(run_id).get(f"accuracy_{bits}bit") if bits else None


DEPLOY_FILES = {"nir": "model.nir", "int8": "model-int8.safetensors", "int4": "model-int4.safetensors"}


def deploy_file(run_id: int, fmt: str, *, store: Store | None = None) -> Path:
    """A finished run's model as ``nir`` (the NIR graph) or ``int8``/``int4`` (integer weights), made beside the
    model on first use (and again if the model file is newer, or a NIR file is of an older format)."""
    from engine.deploy import NIR_FORMAT, DeployError, export, read_nir  # torch: the export rebuilds the network

    if fmt not in DEPLOY_FILES:
        raise DeployError(f"unknown format {fmt!r}; choose one of {', '.join(DEPLOY_FILES)}")
    source = checkpoint_path(run_id, store=store)
    out = source.with_name(DEPLOY_FILES[fmt])
    stale = not out.is_file() or out.stat().st_mtime < source.stat().st_mtime
    if not stale and fmt == "nir":  # written before the format changed (other importers could not read it)
        stale = read_nir(out).metadata.get("format") != NIR_FORMAT
    if stale:
        export(source, fmt, out, accuracy=measured_accuracy(run_id, fmt, store=store))
    return out


def deploy_targets(run_id: int, *, store: Store | None = None) -> list:
    """Whether the run's NIR file (the one the Model page hands out) deploys on each target: snntorch,
    spikingjelly, norse and Speck (``engine.deploy.targets``), each with the rules it keeps or breaks."""
    from engine.deploy import deploy_report, read_nir  # torch: the NIR file is made from the model

    return deploy_report(read_nir(deploy_file(run_id, "nir", store=store)))


def measure_run(run_id: int, *, store: Store | None = None) -> dict:
    """Measure a finished run's model now (8/4-bit accuracy, synaptic operations) and store it: for runs
    trained before the worker measured them."""
    # torch: the model runs on the test set (in the caller's process, as the Model page's button asks)
    from engine.data.images import load_dataset
    from engine.deploy import measure
    from engine.train.checkpoint import load_model

    s = _store(store)
    loaded = load_model(checkpoint_path(run_id, store=s))
    values = measure(loaded.model, loaded.profile, load_dataset(loaded.data.name), seed=loaded.meta["eval_seed"])
    s.record_deploy(run_id, values)
    return values


def model_details(run_id: int, *, store: Store | None = None) -> dict:
    """A finished (or searched) run's cell, per-layer parameters and training history, for display.

    ``edges``: (from node, to node, op name, kernel size or None) for every edge that carries an op;
    ``layers``: a frame of per-layer parameters; ``epochs``: its training history.
    """
    s = _store(store)
    run = s.run(run_id)
    if not run["best_genotype"]:
        raise StoreError(f"run {run_id} ({run['setting']}) has not finished its search yet")
    experiment = s.experiment(run["experiment_id"])
    genotype, kernel_set = Genotype.from_str(run["best_genotype"]), Space.parse(run["kernel_set"])
    ops = [(a, b, kernel_set.op(code)) for a, b, code in genotype.edges]
    edges = [(a, b, "conv" if op.is_conv else op.label, op.kernel if op.is_conv else None) for a, b, op in ops]
    layers = layer_counts(
        genotype, kernel_set, get_profile(experiment["profile"]), dataset_shape(experiment["dataset"])
    )
    return {
        "run": run,
        "experiment": experiment,
        "genotype": genotype.to_str(),
        "edges": edges,
        "layers": pd.DataFrame(
            [{"layer": x.name, "shape": x.shape, "params": x.params, "batchnorm": x.norm} for x in layers]
        ),
        "epochs": pd.DataFrame(s.epochs([run_id])),
        "deploy": json.loads(run["deploy"]) if run.get("deploy") else None,
        "checkpoint": s.root / run["checkpoint"] if run["checkpoint"] else None,
    }


def download_name(run: dict, fmt: str | None = None) -> str:
    """A safe file name for a run's model (``fmt``: nir, int8, int4 for its deployable forms): letters,
    digits, dot, dash and underscore only, the setting cut to 60 characters (as read from any database)."""
    stem = f"spikernel-exp{run['experiment_id']}-{str(run['setting'])[:60]}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    suffix = {None: ".safetensors", "nir": ".nir", "int8": "-int8.safetensors", "int4": "-int4.safetensors"}[fmt]
    return f"{stem or 'model'}{suffix}"
