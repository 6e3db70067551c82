"""Rank stability of the training-free score (SAHD) at reduced scale: which score defaults to ship.

For one profile and kernel set, ``run`` samples distinct cells and scores each one with ``draws=1`` under
several seeds, so every seed is one (init, batch) draw and "the mean of k draws" is the mean of k per-seed
scores. Scoring goes through ``engine.search.scorer.Scorer`` unchanged; three things are patched, in this
script's process only, to see more per forward pass:

* ``KernelAccumulator`` is wrapped so that one forward gives both ``count_silent`` variants (the other
  variant is a second engine accumulator fed the same spikes; ``--self-check`` compares it with a real
  second pass);
* ``spike_layers`` also hooks every LIF by name, to record which layers stay silent and their firing rates;
* ``encode`` can pin the RNG that draws the rate code (mode ``pinned``): with ``shared=True`` the engine
  shares images and the init seed, but the Bernoulli input spikes and dropout masks come from the global
  RNG after the weights were drawn, so they differ between cells of different shapes. ``pinned`` =
  ``shared`` plus the same input spikes and dropout masks for every cell (NASWOT's "same batch");
* ``init_weights`` can re-draw each conv/linear from (draw seed, module name) (mode ``aligned`` = ``pinned``
  plus the same weights in every module two cells have in common: with one init seed, the order of
  initialisation makes all weights after a cell's first differing op differ, the classifier's included).

Metrics (Spearman, scipy) per (mode, batch size, count_silent), over the cells scored:

* ``1 draw``: mean Spearman between two single draws over all disjoint draw pairs;
* ``within``: the same inside groups of equal conv-edge count (groups of >= 4 cells), weighted by size;
* ``vs conv``: Spearman of a single draw's score with the conv-edge count (mean over draws);
* ``k draws``: Spearman between the means of two disjoint sets of k draws (mean over all such splits),
  overall and within equal conv-edge count;
* ``top 10 %``: share of the best 10 % of cells under one set of k draws that are also in the best 10 %
  under a disjoint set (what the argmax of a search depends on), for k = 1 and 3.
* ``± x``: SD of the within-group metric when the cells are bootstrapped (how much 40 cells can tell).

Usage::

    .venv/bin/python bench/rank_stability.py run --profile laptop --kernel-set 3x3_5x5 --out bench/results/x.json
    .venv/bin/python bench/rank_stability.py report bench/results/*.json --md bench/results/rank_stability.md
    .venv/bin/python bench/rank_stability.py timing --profile laptop --threads 1 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import time
import warnings
import zlib  # noqa: E402
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import engine.nn.network as en  # noqa: E402
import engine.search.scorer as es  # noqa: E402
from engine.core.profiles import get_profile  # noqa: E402
from engine.core.seeds import derive_seed  # noqa: E402
from engine.core.space import KernelSet  # noqa: E402
from engine.data.images import load_dataset  # noqa: E402
from engine.search import RandomSampler  # noqa: E402
from engine.search.hamming import KernelAccumulator  # noqa: E402

MODES = ("shared", "fresh", "pinned", "aligned")
MIN_GROUP = 4
TOP_SHARE = 0.1  # "top" columns: overlap of the best 10 % of cells under two disjoint sets of draws


# ------------------------------------------------------------------------------------------- probes


class Probe:
    """What the patched engine reports about the scoring call in progress."""

    def __init__(self) -> None:
        self.pin_seed: int | None = None  # set: rate code and dropout masks drawn from this seed
        self.aligned = False  # set: every conv/linear weight seeded from (draw seed, module name)
        self.reset()

    def reset(self) -> None:
        self.accumulators: list[DualAccumulator] = []
        self.layers: dict[str, list[float]] = {}  # name -> [spikes, neurons, silent calls, calls]
        self.encodes = 0


PROBE = Probe()
_orig_spike_layers = es.spike_layers
_orig_encode = es.encode
_orig_init = en.init_weights


class _Holder(torch.nn.Module):
    """One module with the network's init settings, so the engine's own init_weights can init it alone."""

    def __init__(self, module, net) -> None:
        super().__init__()
        self.only = module
        for name in ("linear_gain", "linear_std"):  # whichever init setting this engine's network has
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))


def aligned_init(net) -> None:
    """Mode ``aligned``: the engine's init, then each conv/linear re-drawn from (draw seed, module name).

    Cells then share the weights of every module they have in common (stem, down, head, and the op on the
    same edge), not just the seed: with one seed, init order makes them differ after the first op.
    """
    if not PROBE.aligned or any(p.is_meta for p in net.parameters()):
        _orig_init(net)
        return
    base = int(torch.randint(0, 2**62, (1,), device="cpu").item())  # the draw's seed: same for every cell
    _orig_init(net)
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.manual_seed(derive_seed(base, zlib.crc32(name.encode())))
            _orig_init(_Holder(m, net))


class DualAccumulator:
    """The engine's accumulator for the configured ``count_silent``, plus one for the other value."""

    def __init__(self, count_silent: bool = True) -> None:
        self.count_silent = count_silent
        self.main = KernelAccumulator(count_silent)
        self.other = KernelAccumulator(not count_silent)
        PROBE.accumulators.append(self)

    def add(self, spikes: torch.Tensor, weight: int = 1) -> torch.Tensor:
        self.other.add(spikes, weight)
        return self.main.add(spikes, weight)

    def score(self) -> float:
        return self.main.score()

    def scores(self) -> dict[bool, float]:
        return {self.count_silent: self.main.score(), not self.count_silent: self.other.score()}


def probing_spike_layers(net):
    layers = _orig_spike_layers(net)
    names = {id(m): n for n, m in net.named_modules()}

    def hook(module, _inputs, out, name):
        per_call = out.reshape(out.shape[0], -1).sum(-1)
        rec = PROBE.layers.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        rec[0] += float(per_call.sum())
        rec[1] += out.numel()
        rec[2] += float((per_call == 0).sum())
        rec[3] += out.shape[0]

    for m in layers:
        m.register_forward_hook(lambda mod, i, o, name=names[id(m)]: hook(mod, i, o, name))
    return layers


def pinning_encode(kind, x, timesteps, info):
    if PROBE.pin_seed is not None:
        torch.manual_seed(derive_seed(PROBE.pin_seed, 5, PROBE.encodes))
    PROBE.encodes += 1
    return _orig_encode(kind, x, timesteps, info)


def install_probes() -> None:
    es.KernelAccumulator = DualAccumulator
    es.spike_layers = probing_spike_layers
    es.encode = pinning_encode
    en.init_weights = aligned_init


def uninstall_probes() -> None:
    es.KernelAccumulator = KernelAccumulator
    es.spike_layers = _orig_spike_layers
    es.encode = _orig_encode
    en.init_weights = _orig_init


# ------------------------------------------------------------------------------------------ scoring


def sample_cells(n: int, seed: int):
    seen, cells = set(), []
    space = KernelSet(1, 3)  # every two-size set samples the same cells
    for g in RandomSampler(space, seed):
        key = space.canonical(g)
        if key in seen:
            continue
        seen.add(key)
        cells.append(g)
        if len(cells) == n:
            return cells
    raise AssertionError("unreachable")


def score_one(scorer: es.Scorer, g, index: int, pin: int | None, aligned: bool = False) -> dict:
    PROBE.reset()
    PROBE.pin_seed = pin
    PROBE.aligned = aligned
    t0, c0 = time.perf_counter(), time.process_time()
    score, silent, rate = scorer.score(g, index)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    per_batch = [a.scores() for a in PROBE.accumulators]
    both = {cs: float(np.mean([s[cs] for s in per_batch])) for cs in (True, False)}
    assert both[scorer.config.count_silent] == score or (np.isinf(score) and np.isinf(both[scorer.config.count_silent]))
    silent_names = sorted(n for n, r in PROBE.layers.items() if r[0] == 0)
    silent_call_frac = sum(r[2] for r in PROBE.layers.values()) / max(sum(r[3] for r in PROBE.layers.values()), 1)
    return {
        "score_cs": both[True],
        "score_nocs": both[False],
        "silent_layers": silent,
        "silent_names": silent_names,
        "silent_call_frac": silent_call_frac,  # unweighted by fanout
        "firing_rate": rate,
        "layer_rates": {n: r[0] / max(r[1], 1) for n, r in PROBE.layers.items()},
        "wall": wall,
        "cpu": cpu,
    }


def self_check(profile, ks, data, cells, device) -> None:
    """The dual accumulator's other variant equals a real pass with that count_silent."""
    uninstall_probes()
    ref = {}
    for cs in (True, False):
        cfg = replace(profile.score, draws=1, count_silent=cs)
        sc = es.Scorer(ks, profile, data, seed=7, device=device, config=cfg)
        ref[cs] = [sc.score(g, i)[0] for i, g in enumerate(cells)]
    install_probes()
    cfg = replace(profile.score, draws=1, count_silent=True)
    sc = es.Scorer(ks, profile, data, seed=7, device=device, config=cfg)
    for i, g in enumerate(cells):
        r = score_one(sc, g, i, None)
        for cs, key in ((True, "score_cs"), (False, "score_nocs")):
            a, b = r[key], ref[cs][i]
            ok = a == b or abs(a - b) < 1e-9 * max(1, abs(b)) or (np.isinf(a) and np.isinf(b))
            print(f"self-check {g} count_silent={cs}: probe {a:.6f} real {b:.6f} {'ok' if ok else 'MISMATCH'}")
            if not ok:
                raise SystemExit("self-check failed")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def with_overrides(profile, settings: list[str]):
    """``--set FIELD=VALUE`` on the profile (VALUE as JSON: ``null``, ``9.0``), e.g. ``linear_gain=null``."""
    for item in settings or []:
        name, _, value = item.partition("=")
        if not hasattr(profile, name):
            raise SystemExit(f"this engine's Profile has no field {name!r}")
        profile = replace(profile, **{name: json.loads(value)})
    return profile


def init_name(profile) -> str:
    """The classifier init, for the tables; the engine's field for it has changed name during development."""
    if hasattr(profile, "linear_gain"):
        g = profile.linear_gain
        return "N(0,0.01)" if g is None else f"N(0,{g:g}/sqrt(fan_in))"
    if hasattr(profile, "linear_std"):
        std = profile.linear_std
        return "N(0,0.01)" if std == 0.01 else ("He" if std is None else f"N(0,{std})")
    return "N(0,0.01)"


def cmd_run(args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profile = with_overrides(get_profile(args.profile), args.set)
    ks = KernelSet.parse(args.kernel_set)
    data = load_dataset(args.dataset)
    data.train.tensors()
    cells = sample_cells(args.cells, args.sampler_seed)
    install_probes()
    if args.self_check:
        self_check(profile, ks, data, cells[:3], device)
    batches = args.batch_sizes or [profile.score.batch_size]
    configs = [(m, batches[0]) for m in args.modes] + [("shared", b) for b in batches[1:]]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out = {
        "profile": profile.name,
        "kernel_set": ks.name,
        "dataset": args.dataset,
        "device": gpu or "cpu",
        "machine": machine(),
        "threads": args.threads,
        "command": " ".join([".venv/bin/python"] + sys.argv),
        "score_config": profile.score.__dict__,
        "classifier_init": init_name(profile),
        "cells": [{"genotype": g.to_str(), "conv_edges": g.conv_edges} for g in cells],
        "configs": [{"mode": m, "batch_size": b} for m, b in configs],
        "draw_seeds": [],
        "results": {f"{m}/{b}": [[] for _ in cells] for m, b in configs},  # [cell][draw] -> record
        "loadavg": [os.getloadavg()],
        "stopped_early": False,
    }
    print(
        f"# {profile.name} {ks.name} on {out['device']} ({out['machine']}), {len(cells)} cells, "
        f"configs {configs}, threads {args.threads}",
        flush=True,
    )
    started = time.perf_counter()
    round_seconds = None
    for d in range(args.draws):
        elapsed = time.perf_counter() - started
        if args.time_box and d >= 2 and round_seconds and elapsed + round_seconds > args.time_box:
            print(f"time box: stopping after {d} draws ({elapsed:.0f} s)", flush=True)
            out["stopped_early"] = True
            break
        seed = args.seed + d
        out["draw_seeds"].append(seed)
        r0 = time.perf_counter()
        for mode, b in configs:
            cfg = replace(profile.score, draws=1, batch_size=b, shared=mode != "fresh")
            scorer = es.Scorer(ks, profile, data, seed=seed, device=device, config=cfg)
            pin = derive_seed(seed, 99) if mode in ("pinned", "aligned") else None
            t0 = time.perf_counter()
            for i, g in enumerate(cells):
                out["results"][f"{mode}/{b}"][i].append(score_one(scorer, g, i, pin, aligned=mode == "aligned"))
            dt = time.perf_counter() - t0
            print(
                f"draw {d} {mode}/{b}: {dt / len(cells):.3f} s per cell ({time.perf_counter() - started:.0f} s total)",
                flush=True,
            )
        round_seconds = time.perf_counter() - r0
        out["loadavg"].append(os.getloadavg())
        out["seconds"] = time.perf_counter() - started
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out))
    print(format_tables([out]))


# ----------------------------------------------------------------------------------------- analysis


def _rho(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or len(set(a.tolist())) < 2 or len(set(b.tolist())) < 2:
        return float("nan")  # a constant ranking (e.g. all -inf) has no rank correlation
    return float(spearmanr(a, b).statistic)


def _within(a, b, groups) -> float:
    tot, w = 0.0, 0
    for gval in np.unique(groups):
        m = groups == gval
        if m.sum() < MIN_GROUP:
            continue
        r = _rho(a[m], b[m])
        if np.isnan(r):
            continue
        tot += r * m.sum()
        w += m.sum()
    return tot / w if w else float("nan")


def splits(n_draws: int, k: int, limit: int = 60, seed: int = 0):
    """Disjoint pairs (A, B) of k-subsets of range(n_draws), each unordered split once."""
    found = []
    for a in itertools.combinations(range(n_draws), k):
        rest = [d for d in range(n_draws) if d not in a]
        for b in itertools.combinations(rest, k):
            if (b, a) not in found:
                found.append((a, b))
    if len(found) > limit:
        found = random.Random(seed).sample(found, limit)
    return found


def analyse(matrix: np.ndarray, conv: np.ndarray, ks=(1, 2, 3)) -> dict:
    """``matrix``: [cells, draws] scores. Returns the metrics of the module docstring."""
    n, d = matrix.shape
    res = {"draws": d, "cells": n}
    for k in ks:
        if 2 * k > d:
            continue
        sp = splits(d, k)
        over, within, top = [], [], []
        ntop = max(1, round(TOP_SHARE * n))
        for a, b in sp:
            ma, mb = matrix[:, a].mean(1), matrix[:, b].mean(1)
            over.append(_rho(ma, mb))
            within.append(_within(ma, mb, conv))
            top.append(len(set(np.argsort(-ma)[:ntop]) & set(np.argsort(-mb)[:ntop])) / ntop)
        res[f"k{k}"] = float(np.nanmean(over))
        res[f"k{k}_top"] = float(np.mean(top))
        res[f"k{k}_within"] = float(np.nanmean(within))
        res[f"k{k}_splits"] = len(sp)
    res["vs_conv"] = float(np.nanmean([_rho(matrix[:, j], conv) for j in range(d)]))
    res["vs_conv_mean"] = _rho(matrix.mean(1), conv)
    return res


def bootstrap_within(matrix, conv, k, reps=200, seed=0) -> float:
    """Spread (SD) of the k-draw within-group metric when the cells are resampled."""
    rng = np.random.default_rng(seed)
    vals = []
    sp = splits(matrix.shape[1], k, limit=10)
    for _ in range(reps):
        idx = rng.integers(0, matrix.shape[0], matrix.shape[0])
        m, c = matrix[idx], conv[idx]
        vals.append(np.nanmean([_within(m[:, a].mean(1), m[:, b].mean(1), c) for a, b in sp]))
    return float(np.nanstd(vals))


def format_tables(runs: list[dict]) -> str:
    lines = []
    head = (
        "| profile | kernel set | device | mode | batch | count_silent | cells x draws | 1 draw | within (1) "
        "| 2 draws | within (2) | 3 draws | within (3) | top 10 % (1 / 3 draws) | vs conv edges "
        "| s per cell-draw (wall / cpu) |"
    )
    lines += [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    notes = []
    for run in runs:
        conv = np.array([c["conv_edges"] for c in run["cells"]])
        for key, per_cell in run["results"].items():
            mode, b = key.split("/")
            nd = min(len(r) for r in per_cell)
            if nd < 2:
                continue
            wall = np.mean([r["wall"] for cell in per_cell for r in cell[:nd]])
            cpu = np.mean([r["cpu"] for cell in per_cell for r in cell[:nd]])
            for cs, field in ((True, "score_cs"), (False, "score_nocs")):
                m = np.array([[r[field] for r in cell[:nd]] for cell in per_cell])
                a = analyse(m, conv)
                sd1 = bootstrap_within(m, conv, 1, reps=100)
                sdk = bootstrap_within(m, conv, 3 if nd >= 6 else 2, reps=100) if nd >= 4 else float("nan")

                def f(x):
                    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.2f}"

                kmax = 3 if nd >= 6 else 2
                lines.append(
                    f"| {run['profile']} ({run.get('classifier_init', 'N(0,0.01)')}) | {run['kernel_set']} | {run['device']} | {mode} | {b} | {cs} | "
                    f"{len(per_cell)} x {nd} | {f(a.get('k1'))} | {f(a.get('k1_within'))} ± {sd1:.2f} | "
                    f"{f(a.get('k2'))} | {f(a.get('k2_within'))}{' ± %.2f' % sdk if kmax == 2 and nd >= 4 else ''} | "
                    f"{f(a.get('k3'))} | {f(a.get('k3_within'))}{' ± %.2f' % sdk if kmax == 3 else ''} | "
                    f"{f(a.get('k1_top'))} / {f(a.get('k3_top'))} | {f(a['vs_conv'])} | {wall:.3f} / {cpu:.3f} |"
                )
        notes.append(describe_run(run))
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def describe_run(run: dict) -> str:
    conv = [c["conv_edges"] for c in run["cells"]]
    sizes = {v: conv.count(v) for v in sorted(set(conv))}
    counted = {v: s for v, s in sizes.items() if s >= MIN_GROUP}
    key = next(iter(run["results"]))
    recs = [r for cell in run["results"][key] for r in cell]
    silent = {}
    for r in recs:
        for n in r["silent_names"]:
            silent[n] = silent.get(n, 0) + 1
    rates = {}
    for r in recs:
        for n, v in r["layer_rates"].items():
            rates.setdefault(n, []).append(v)
    ninf = sum(np.isinf(r["score_nocs"]) for cell in run["results"].values() for c in cell for r in c)
    scf = np.mean([r["silent_call_frac"] for r in recs])
    la = run.get("loadavg", [])
    return (
        f"- {run['profile']} ({run.get('classifier_init', 'N(0,0.01)')} classifier init) {run['kernel_set']} on {run['device']} ({run['machine']}, {run['threads']} thread(s)): "
        f"`{run['command']}`; conv-edge groups {sizes} (within-group metrics use {counted}); "
        f"silent layers in {key} (layer: share of cell-draws silent): "
        + ", ".join(f"{n}: {c / len(recs):.0%}" for n, c in sorted(silent.items(), key=lambda x: -x[1]))
        + "; mean firing rate per layer: "
        + ", ".join(f"{n} {np.mean(v):.3f}" for n, v in rates.items())
        + f"; share of hook calls silent {scf:.2f}; -inf scores without silent calls: {ninf}; "
        f"load average {la[0][0]:.1f} → {la[-1][0]:.1f}; {run.get('seconds', 0):.0f} s"
        + ("; stopped early by the time box" if run.get("stopped_early") else "")
    )


def cmd_report(args) -> None:
    warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over groups too small to count
    runs = [json.loads(Path(p).read_text()) for p in args.files]
    text = format_tables(runs)
    print(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text + "\n")


def cmd_timing(args) -> None:
    profile = get_profile(args.profile)
    ks = KernelSet.parse(args.kernel_set)
    data = load_dataset(args.dataset)
    data.train.tensors()
    cells = sample_cells(args.cells, 0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for b in args.batch_sizes or [profile.score.batch_size]:
            cfg = replace(profile.score, draws=1, batch_size=b)
            sc = es.Scorer(ks, profile, data, seed=1, device=args.device, config=cfg)
            sc.score(cells[0], 0)
            t0, c0 = time.perf_counter(), time.process_time()
            for i, g in enumerate(cells):
                sc.score(g, i)
            n = len(cells)
            print(
                f"{profile.name} {ks.name} batch {b} threads {threads} on {args.device}: "
                f"{(time.perf_counter() - t0) / n:.3f} s wall, {(time.process_time() - c0) / n:.3f} s cpu per "
                f"cell-draw; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--profile", default="laptop")
    r.add_argument("--kernel-set", default="3x3_5x5")
    r.add_argument("--dataset", default="sample")
    r.add_argument("--cells", type=int, default=40)
    r.add_argument("--draws", type=int, default=6)
    r.add_argument("--modes", nargs="+", default=["shared", "fresh"], choices=MODES)
    r.add_argument("--batch-sizes", type=int, nargs="*", help="first: all modes; others: shared only")
    r.add_argument("--seed", type=int, default=100, help="draw d uses seed + d")
    r.add_argument("--sampler-seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--device", default="cpu")
    r.add_argument("--time-box", type=float, default=0, help="seconds; stop adding draws (at least 2) past it")
    r.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a profile field, VALUE as JSON (e.g. linear_gain=null: the reference init)",
    )
    r.add_argument("--self-check", action="store_true")
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_run)
    rep = sub.add_parser("report")
    rep.add_argument("files", nargs="+")
    rep.add_argument("--md")
    rep.set_defaults(fn=cmd_report)
    t = sub.add_parser("timing")
    t.add_argument("--profile", default="laptop")
    t.add_argument("--kernel-set", default="3x3_5x5")
    t.add_argument("--dataset", default="sample")
    t.add_argument("--cells", type=int, default=8)
    t.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    t.add_argument("--batch-sizes", type=int, nargs="*")
    t.add_argument("--device", default="cpu")
    t.set_defaults(fn=cmd_timing)
    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
