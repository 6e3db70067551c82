"""Search-speed benchmark: the engine's scorer side by side with a straightforward reference.

What it measures (one process, one run):

1. Equality: for hand-picked and sampled cells, two kernel sets and two score configurations, the engine's
   ``Scorer.score`` and the reference (``reference_search.py``: stepped network, hooks, two-matmul float64
   kernel) get the same weights, the same encoded spikes and the same dropout mask; their scores must
   agree to float rounding. The engine's own ``Scorer.score`` runs unmodified: its network, encoded input
   and dropout mask are recorded on the way (by wrapping the functions it calls) and handed to the
   reference. Per-call spike counts of both are compared too, so a difference can be traced to a layer.
2. Side-by-side timing on the same sampled cells (``RandomSampler(seed)``): the engine's ``Scorer.score``
   in this process, the reference procedure (including its DataLoader rebuild) in a process of its own,
   as the original runs (the default allocator; ``keep_freed_memory`` is the engine's), timed before and
   after the engine's block and averaged; the profile's ScoreConfig; candidates/s and the ratio.
3. Overhead: the same cells' bare convolutions (every Conv2d of the network on inputs of the shapes the
   engine feeds them, T*B folded into the batch, channels-last), as many forwards as scoring does; scoring
   time / bare conv time.
4. The paper profile: one candidate on the CPU, or (``--device cuda``) the mean over ~20 candidates after
   warm-up, synchronised, plus a few reference candidates for the ratio.

Run:  .venv/bin/python bench/bench_search.py [--quick] [--device cuda] [--threads 2] [--profile]
Prints a Markdown report (paste into BENCHMARKS.md); ``--out FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from reference_search import (  # noqa: E402
    ReferenceScorer,
    RefNet,
    SampleZip,
    copy_engine_weights,
    macs_per_forward,
    reference_batch_score,
    train_transform,
)
from torch import nn  # noqa: E402

import engine.search.sampling as search  # noqa: E402
from engine.core.profiles import ScoreConfig, get_profile  # noqa: E402
from engine.core.space import Genotype, KernelSet  # noqa: E402
from engine.data.images import load_dataset  # noqa: E402
from engine.nn.network import build_network  # noqa: E402
from engine.nn.neuron import LIF  # noqa: E402
from engine.search.sampling import RandomSampler, Scorer  # noqa: E402

KERNEL_SETS = (KernelSet(1, 3), KernelSet(3, 5))
# Hand-picked cells for the equality check (pruned): skip + convs with fan-out 2 from nodes 0 and 1;
# avg pools, a zeroize edge and a skip; every edge a conv (node 0 fans out to 3); a skip-only cell
# (no neuron inside the cells); a cell whose node 1 and 2 are pruned away.
EQUALITY_CELLS = (
    "0123 0023 0003 0000",
    "0432 0004 0001 0000",
    "0222 0022 0002 0000",
    "0001 0000 0000 0000",
    "0204 0030 0000 0000",
)


REPORT_FILE: Path | None = None  # set by --out: every report line is appended as soon as it is printed


def out(lines: list[str], text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)
    if REPORT_FILE is not None:
        with REPORT_FILE.open("a") as f:
            f.write(text + "\n")


def mem_available_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def engine_version() -> str:
    """The git commit and the engine files changed since it (other engineers edit the engine concurrently)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--short", "--", "engine"], cwd=ROOT, capture_output=True, text=True
        ).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return f"{head or 'no commit'}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
    except OSError:
        return "unknown (no git)"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ------------------------------------------------------------------------------------ equality check


class EngineRecorder(contextlib.AbstractContextManager):
    """Wraps what ``Scorer.score`` calls (``build_network``, ``encode``, ``F.dropout``) to record, per draw,
    the network's initial state, each encoded batch, each dropout mask and each LIF's spike count per
    timestep. Nothing about the computation changes."""

    def __enter__(self):
        self.states, self.inputs, self.masks, self.counts = [], [], [], []
        self._orig = (search.build_network, search.encode, F.dropout)
        orig_build, orig_encode, orig_dropout = self._orig

        def build(*a, **k):
            net = orig_build(*a, **k)
            self.states.append({n: v.detach().clone() for n, v in net.state_dict().items()})
            self.inputs.append([])
            self.masks.append([])
            self.counts.append([])
            for name, m in net.named_modules():
                if isinstance(m, LIF):
                    m.register_forward_hook(self._counter(name))
            return net

        def encode(*a, **k):
            x = orig_encode(*a, **k)
            self.inputs[-1].append(x.clone())
            self.counts[-1].append({})
            return x

        def dropout(input, p=0.5, training=True, inplace=False):
            y = orig_dropout(input, p, training, inplace)
            self.masks[-1].append(y.clone())
            return y

        search.build_network, search.encode, F.dropout = build, encode, dropout
        return self

    def _counter(self, name):
        def hook(_m, _i, spikes):
            self.counts[-1][-1][name] = [float(s.sum()) for s in spikes]

        return hook

    def __exit__(self, *exc):
        search.build_network, search.encode, F.dropout = self._orig
        return False


def ref_to_engine_layer(name: str) -> str:
    """Reference LIF name -> the engine LIF that fires the same spikes."""
    if name.startswith("cell"):
        cell, _edges, sd, _lif = name.split(".")
        return f"{cell}.fire.{sd[0]}"
    return {"down_lif": "down.1", "head_lif": "head.1", "fc_lif": "head.6"}[name]


def check_equality(genotype, kernel_set, profile, data, config, device, channels_last_options=(False, True)):
    """Engine ``Scorer.score`` vs the reference on the recorded weights, spikes and masks."""
    scorer = Scorer(kernel_set, profile, data, seed=7, device=device, config=config)
    with EngineRecorder() as rec:
        engine_score, _silent, _rate = scorer.score(genotype, index=3)
    results = {}
    for cl in channels_last_options:
        scores, mismatched_calls, total_calls, first_bad = [], 0, 0, None
        for d, state in enumerate(rec.states):
            ref = RefNet(genotype, kernel_set, profile, data.info)
            copy_engine_weights(state, ref)
            ref = ref.to(device)
            if cl:
                ref = ref.to(memory_format=torch.channels_last)
            ref.train(config.train_mode)
            for b, x in enumerate(rec.inputs[d]):
                mask = rec.masks[d][b][0] if rec.masks[d] else None
                reset = config.reset_between_batches or b == 0
                s, counts = reference_batch_score(
                    ref,
                    x,
                    reset_neurons=reset,
                    dropout_mask=mask,
                    channels_last=cl,
                    record_counts=True,
                    count_silent=config.count_silent,
                )
                scores.append(s)
                seen: dict[str, int] = {}
                for name, c in counts:
                    t = seen.get(name, 0)
                    seen[name] = t + 1
                    eng = rec.counts[d][b][ref_to_engine_layer(name)][t]
                    total_calls += 1
                    if eng != c:
                        mismatched_calls += 1
                        if first_bad is None:
                            first_bad = f"draw {d} batch {b} {name} t={t}: engine {eng:.0f} vs ref {c:.0f} spikes"
        ref_score = float(np.mean(scores))
        results["channels_last" if cl else "NCHW"] = dict(
            ref=ref_score,
            diff=abs(ref_score - engine_score),
            rel=abs(ref_score - engine_score) / abs(engine_score),
            bad_calls=mismatched_calls,
            calls=total_calls,
            first_bad=first_bad,
        )
    return engine_score, results


def run_equality(lines, profile, data, device, cells, configs):
    out(lines, "### Equality: engine `Scorer.score` vs the reference (same weights, spikes, dropout mask)")
    out(lines)
    out(
        lines,
        "Reference in NCHW (as the original) and in channels-last (the engine's layout). "
        "'spike calls differing' counts hook calls (layer × timestep × batch) whose spike count differs.",
    )
    out(lines)
    out(
        lines,
        "| config | kernel set | cell | engine score | ref NCHW | abs diff | rel diff | spike calls differing | ref channels-last abs diff | spike calls differing |",
    )
    out(lines, "|---|---|---|---|---|---|---|---|---|---|")
    worst = {"NCHW": 0.0, "channels_last": 0.0}
    notes = []
    for cname, config in configs:
        for ks in KERNEL_SETS:
            for g in cells:
                e, r = check_equality(g, ks, profile, data, config, device)
                a, c = r["NCHW"], r["channels_last"]
                for k in worst:
                    worst[k] = max(worst[k], r[k]["rel"])
                for k, v in r.items():
                    if v["first_bad"]:
                        notes.append(f"{cname} {ks} `{g}` ({k}): first differing call: {v['first_bad']}")
                out(
                    lines,
                    f"| {cname} | {ks} | `{g}` | {e:.12f} | {a['ref']:.12f} | {a['diff']:.2e} | {a['rel']:.2e} | "
                    f"{a['bad_calls']}/{a['calls']} | {c['diff']:.2e} | {c['bad_calls']}/{c['calls']} |",
                )
    out(lines)
    out(
        lines,
        f"Max relative difference: NCHW reference {worst['NCHW']:.2e}, channels-last reference {worst['channels_last']:.2e}.",
    )
    for n in notes:
        out(lines, f"- {n}")
    out(lines)
    return worst


def run_bn_precision(lines, device) -> None:
    """Why an NCHW implementation and the engine (channels-last) part by float rounding on the CPU:
    train-mode BatchNorm2d's error against float64, per memory layout."""
    out(lines, "### Train-mode BatchNorm2d error against float64, by memory layout")
    out(lines)
    out(lines, "| shape [B, C, H, W] | input mean | NCHW max abs error | channels-last max abs error |")
    out(lines, "|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for shape in ((32, 16, 32, 32), (32, 32, 16, 16), (160, 16, 32, 32), (256, 64, 32, 32)):
        for shift in (0.0, 1.0):
            x = (torch.randn(shape, generator=g) * 0.3 + shift).to(device)
            x64 = x.double()
            mean = x64.mean((0, 2, 3), keepdim=True)
            var = x64.var((0, 2, 3), unbiased=False, keepdim=True)
            y64 = (x64 - mean) / torch.sqrt(var + 1e-5)
            errs = []
            for fmt in (torch.contiguous_format, torch.channels_last):
                bn = nn.BatchNorm2d(shape[1]).to(device).train()
                with torch.no_grad():
                    errs.append(float((bn(x.contiguous(memory_format=fmt)).double() - y64).abs().max()))
            out(lines, f"| {list(shape)} | {shift} | {errs[0]:.1e} | {errs[1]:.1e} |")
    out(lines)


# -------------------------------------------------------------------------------------- bare convs


class BareConvs:
    """Every Conv2d of a candidate's engine network, with inputs shaped (and laid out) as the engine feeds them."""

    def __init__(self, genotype, kernel_set, profile, info, device, batch):
        net = build_network(genotype, kernel_set, profile, info, device=device)
        net.train(True)
        self.calls = []

        def pre(m, args):
            x = args[0]
            if x.dim() == 5:  # SeqConv2d: T*B folded into the batch
                x = x.flatten(0, 1)
            fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            inp = torch.bernoulli(torch.full(x.shape, 0.15, device=device)).contiguous(memory_format=fmt)
            self.calls.append((m.weight.detach(), m.stride, m.padding, inp))

        hooks = [m.register_forward_pre_hook(pre) for m in net.modules() if isinstance(m, nn.Conv2d)]
        x = torch.bernoulli(
            torch.full((profile.timesteps, batch, 3, info.image_size, info.image_size), 0.5, device=device)
        )
        if profile.encoding == "direct":
            x = x[:1]
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        del net

    @torch.no_grad()
    def run(self, passes: int) -> None:
        for _ in range(passes):
            for w, stride, padding, inp in self.calls:
                F.conv2d(inp, w, None, stride, padding)

    def time(self, passes: int, device, repeats: int = 2) -> float:
        self.run(1)  # warm-up
        sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.run(passes)
            sync(device)
            times.append(time.perf_counter() - t0)
        return statistics.mean(times)


# ------------------------------------------------------------------------------------------ timing


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    r = fn()
    sync(device)
    return time.perf_counter() - t0, r


def candidate_macs(genotype, ks, profile, info, cfg) -> int:
    """Conv + linear multiply-accumulates of one candidate's scoring (shapes only: runs on the meta device)."""
    with torch.device("meta"):
        ref = RefNet(genotype, ks, profile, info)
        return macs_per_forward(ref, cfg.batch_size, info.image_size, profile.encoding) * cfg.batches * cfg.draws


def run_side_by_side(lines, profile_name, data, device, genotypes, n_ref, with_bare=True):
    """The engine and the bare convolutions interleaved per candidate; the reference on the first ``n_ref``
    candidates in a process of its own (as the original runs), once before and once after the engine's
    block, averaged to even out drifting load."""
    profile = get_profile(profile_name)
    cfg = profile.score
    threads = torch.get_num_threads()
    cells = [str(g) for g in genotypes[:n_ref]]
    rows = []
    for ks in KERNEL_SETS:
        before = reference_in_child(profile_name, str(ks), data.info, cells, str(device), threads)[0] if n_ref else []
        scorer = Scorer(ks, profile, data, seed=0, device=device)
        scorer.score(genotypes[0], 10_000)  # warm-up (allocator, oneDNN/cuDNN primitive caches, compiled kernels)
        te, tb, macs = [], [], []
        for i, g in enumerate(genotypes):
            t, _ = timed(lambda: scorer.score(g, i), device)
            te.append(t)
            if with_bare:
                tb.append(
                    BareConvs(g, ks, profile, data.info, device, cfg.batch_size).time(cfg.draws * cfg.batches, device)
                )
            macs.append(candidate_macs(g, ks, profile, data.info, cfg))
        after = reference_in_child(profile_name, str(ks), data.info, cells, str(device), threads)[0] if n_ref else []
        tr = [(a + b) / 2 for a, b in zip(before, after)]
        rows.append((ks, te, tr, tb, macs))
        print(
            f"  [{profile_name} {ks}] engine {np.mean(te):.3f}s  ref {np.mean(tr) if tr else float('nan'):.3f}s  "
            f"bare {np.mean(tb) if tb else float('nan'):.3f}s  (load {loadavg()})",
            flush=True,
        )
    return cfg, rows


def report_side_by_side(lines, profile_name, cfg, rows, device):
    out(
        lines,
        f"### `{profile_name}` profile on {device.type}: engine vs reference, and overhead over bare convolutions",
    )
    out(lines)
    out(
        lines,
        f"ScoreConfig: batch {cfg.batch_size}, {cfg.batches} batch(es) x {cfg.draws} draw(s), shared={cfg.shared}, "
        f"train_mode={cfg.train_mode}, reset_between_batches={cfg.reset_between_batches}. "
        "Times are per candidate (mean); the speed-up compares the same candidates "
        "(the reference column covers the first N of them).",
    )
    out(lines)
    out(
        lines,
        "| kernel set | candidates (engine / ref) | engine s/cand | engine cand/s | reference s/cand | reference cand/s | speed-up | bare conv s/cand | scoring / bare conv | GMAC/cand | engine GMAC/s |",
    )
    out(lines, "|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for ks, te, tr, tb, macs in rows:
        e = float(np.mean(te))
        r = float(np.mean(tr)) if tr else float("nan")
        e_same = float(np.mean(te[: len(tr)])) if tr else float("nan")
        speed = r / e_same if tr else float("nan")
        b = float(np.mean(tb)) if tb else float("nan")
        gmac = float(np.mean(macs)) / 1e9
        overhead = float(np.sum(te) / np.sum(tb)) if tb else float("nan")
        summary[str(ks)] = dict(engine=e, ref=r, speed=speed, overhead=overhead)
        out(
            lines,
            f"| {ks} | {len(te)} / {len(tr)} | {e:.4f} | {1 / e:.2f} | {r:.4f} | {1 / r:.3f} | {speed:.2f}x | "
            f"{b:.4f} | {overhead:.2f}x | {gmac:.2f} | {gmac / e:.1f} |",
        )
    out(lines)
    return summary


def run_profile(lines, profile_name, data, ref_dataset, device, genotype, ks, with_ref=True):
    from torch.profiler import ProfilerActivity, profile

    prof_cfg = get_profile(profile_name)
    scorer = Scorer(ks, prof_cfg, data, seed=0, device=device)
    scorer.score(genotype, 0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    targets = [("engine Scorer.score", lambda: scorer.score(genotype, 1))]
    if with_ref:
        ref = ReferenceScorer(ks, prof_cfg, data.info, ref_dataset, prof_cfg.score, seed=0, device=str(device))
        ref.score(genotype, 0)
        targets.append(("reference", lambda: ref.score(genotype, 1)))
    for label, fn in targets:
        with profile(activities=acts) as p:
            fn()
            sync(device)
        table = p.key_averages().table(sort_by=sort, row_limit=14, max_name_column_width=36)
        out(
            lines,
            f"#### torch.profiler, one `{profile_name}` candidate ({ks}, `{genotype}`): {label}, top ops by self time",
        )
        out(lines)
        out(lines, "```")
        for line in table.strip().splitlines():
            out(lines, line)
        out(lines, "```")
        out(lines)


def _status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def reset_peak_memory(device) -> float:
    """Start a new peak: freed heap memory goes back to the OS, then the kernel's high-water mark is reset.
    Returns the memory in use at that point (GB), which ``peak_memory_gb`` subtracts."""
    import ctypes
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 1e9
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_gb("VmRSS")


def peak_memory_gb(device, base: float) -> float:
    """Peak GPU memory allocated, or peak resident memory, since ``reset_peak_memory``, above ``base``:
    what the measured work added to the process (its libraries and data excluded)."""
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else _status_gb("VmHWM")
    return peak - base


def timed_with_peak(fn, device):
    base = reset_peak_memory(device)
    t, r = timed(fn, device)
    return t, peak_memory_gb(device, base), r


def reference_in_child(profile: str, kernel_set: str, info, cells: list[str], device: str, threads: int):
    """Reference candidates ``0..len(cells)-1`` in a fresh process, as the original runs: the default
    allocator, nothing of the engine's in memory. Returns ``(seconds per candidate, peak resident GB)``."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_reference_child, (profile, kernel_set, info, cells, device, threads))


def _reference_child(profile_name, kernel_set, info, cells, device, threads):
    torch.set_num_threads(threads)
    profile, dev = get_profile(profile_name), torch.device(device)
    ref = ReferenceScorer(
        KernelSet.parse(kernel_set),
        profile,
        info,
        SampleZip(transform=train_transform(info, "rate")),
        profile.score,
        seed=0,
        device=device,
    )
    if dev.type == "cuda" or profile_name != "paper":
        ref.score(Genotype.from_str(cells[0]), 10_000)  # warm-up (allocator, oneDNN/cuDNN primitive caches)
    base = reset_peak_memory(dev)
    times = [timed(lambda: ref.score(Genotype.from_str(g), i), dev)[0] for i, g in enumerate(cells)]
    return times, peak_memory_gb(dev, base)


def run_paper(lines, data, ref_dataset, device, genotypes, warmup, n_ref, with_bare):
    """Per candidate, interleaved: the engine, the reference (first ``n_ref``), the bare convolutions; each
    with its peak memory (resident memory of this process on the CPU, allocated memory on a GPU)."""
    profile = get_profile("paper")
    cfg = profile.score
    mem = "peak GPU GB" if device.type == "cuda" else "peak RSS GB"
    out(
        lines,
        f"### `paper` profile on {device.type} (macro `{data.info.macro}`: "
        f"C={profile.macro(data.info.macro).channels}, batch {cfg.batch_size} x {cfg.batches}, T={profile.timesteps})",
    )
    out(lines)
    out(
        lines,
        f"| kernel set | cell | engine s | {mem} | reference s | {mem} | speed-up | bare conv s | {mem} | scoring / bare conv | GMAC |",
    )
    out(lines, "|---|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    kernel_sets = KERNEL_SETS if device.type == "cuda" else KERNEL_SETS[:1]
    for ks in kernel_sets:
        scorer = Scorer(ks, profile, data, seed=0, device=device)
        for w in range(warmup):
            scorer.score(genotypes[-1 - w], 10_000 + w)
        te, tr, tb = [], [], []
        for i, g in enumerate(genotypes):
            t, peak, _ = timed_with_peak(lambda: scorer.score(g, i), device)
            te.append(t)
            row = [str(ks), f"`{g}`", f"{t:.3f}", f"{peak:.2f}"]
            if i < n_ref:
                [t], peak = reference_in_child(
                    "paper", str(ks), data.info, [str(g)], str(device), torch.get_num_threads()
                )
                tr.append(t)
                row += [f"{t:.3f}", f"{peak:.2f}", f"{t / te[-1]:.2f}x"]
            else:
                row += ["-", "-", "-"]
            if with_bare and i < 5:
                base = reset_peak_memory(device)
                bc = BareConvs(g, ks, profile, data.info, device, cfg.batch_size)
                t = bc.time(cfg.draws * cfg.batches, device, repeats=1)
                del bc
                tb.append(t)
                row += [f"{t:.3f}", f"{peak_memory_gb(device, base):.2f}", f"{te[-1] / t:.2f}x"]
            else:
                row += ["-", "-", "-"]
            row.append(f"{candidate_macs(g, ks, profile, data.info, cfg) / 1e9:.0f}")
            out(lines, "| " + " | ".join(row) + " |")
            print(f"  (load {loadavg()})", flush=True)
        e = float(np.mean(te))
        speed = float(np.sum(tr) / np.sum(te[: len(tr)])) if tr else float("nan")
        overhead = float(np.sum(te[: len(tb)]) / np.sum(tb)) if tb else float("nan")
        results[str(ks)] = dict(
            engine=e, ref=float(np.mean(tr)) if tr else float("nan"), speed=speed, overhead=overhead
        )
    out(lines)
    out(
        lines,
        "The reference runs in a child process of its own (the default allocator, its own peak memory). "
        "Bare convolutions: every Conv2d of the cell's network on random spikes of the shapes the engine feeds "
        "them, as many forwards as scoring runs. Peak memory is measured per part (freed memory returned and the "
        "high-water mark reset before each) and counted above what the process held before it "
        "(its libraries and data).",
    )
    out(lines)
    return results


# -------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--quick", action="store_true", help="a short run: fewer cells, no paper profile on the CPU")
    ap.add_argument(
        "--candidates", type=int, default=None, help="sampled cells for the laptop timing (default 20, quick 4)"
    )
    ap.add_argument("--seed", type=int, default=0, help="RandomSampler seed for the timed cells")
    ap.add_argument("--paper-candidates", type=int, default=None, help="paper-profile cells timed (CPU 1, cuda 20)")
    ap.add_argument("--paper-ref", type=int, default=None, help="paper-profile reference cells timed (CPU 0, cuda 3)")
    ap.add_argument("--no-paper", action="store_true", help="skip the paper profile")
    ap.add_argument(
        "--paper-macro",
        default="cifar100",
        choices=("cifar10", "cifar100"),
        help="macro network of the paper-profile timing (the sample's images either way)",
    )
    ap.add_argument(
        "--paper-cell",
        action="append",
        default=None,
        help="a cell to time on the paper profile (repeatable; default: sampled cells)",
    )
    ap.add_argument("--no-equality", action="store_true", help="skip the equality check")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler top ops of one candidate")
    ap.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    quick = args.quick
    n_laptop = args.candidates or (4 if quick else 20)
    n_paper = args.paper_candidates if args.paper_candidates is not None else (20 if device.type == "cuda" else 1)
    if quick and device.type == "cuda" and args.paper_candidates is None:
        n_paper = 5
    n_paper_ref = args.paper_ref if args.paper_ref is not None else (3 if device.type == "cuda" else 0)

    started = time.perf_counter()
    lines: list[str] = []
    global REPORT_FILE
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("")
        REPORT_FILE = args.out
    data = load_dataset("sample")
    data.train.tensors()  # decode once, as the app does
    ref_dataset = SampleZip(transform=train_transform(data.info, "rate"))
    sampled = [g for g, _ in zip(RandomSampler(args.seed), range(max(n_laptop, n_paper + 2)))]

    cmd = ".venv/bin/python " + " ".join(shlex.quote(a) for a in ["bench/bench_search.py", *sys.argv[1:]])
    out(lines, f"## Search speed: engine vs reference ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    out(lines)
    out(lines, "| | |")
    out(lines, "|---|---|")
    out(lines, f"| command | `{cmd}` |")
    out(lines, f"| CPU | {cpu_model()}, {os.cpu_count()} logical cores |")
    if device.type == "cuda":
        out(
            lines,
            f"| GPU | {torch.cuda.get_device_name()} (cuDNN TF32 {torch.backends.cudnn.allow_tf32}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32}) |",
        )
    out(lines, f"| engine | git {engine_version()} |")
    out(lines, f"| torch | {torch.__version__}, {torch.get_num_threads()} threads, device {device} |")
    out(
        lines,
        f"| load average at start | {loadavg()} (other processes may share the CPU; compare ratios, not absolute times) |",
    )
    out(lines)

    worst = None
    if not args.no_equality:
        # Laptop widths with the original's average pool (padding counted), as the reference has it: the
        # laptop profile's own pool departs from the original by design (Profile.pool_counts_padding).
        laptop = dataclasses.replace(get_profile("laptop"), pool_counts_padding=True)
        cells = [Genotype.from_str(s).pruned() for s in EQUALITY_CELLS] + sampled[:2]
        if quick:
            cells = cells[:2] + cells[3:4]
        carry = ScoreConfig(
            batch_size=laptop.score.batch_size,
            batches=2,
            draws=1,
            shared=False,
            train_mode=True,
            reset_between_batches=False,
            count_silent=True,
        )
        lc = laptop.score
        configs = [
            (
                f"laptop's ({lc.batches} batch x {lc.draws} draw, shared={lc.shared}, reset={lc.reset_between_batches}, "
                f"count_silent={lc.count_silent})",
                lc,
            ),
            ("SNASNet's quirks (2 batches, carry state, count_silent=True)", carry),
        ]
        worst = run_equality(lines, laptop, data, device, cells, configs[:1])
        worst2 = run_equality(lines, laptop, data, device, cells[:3] if not quick else cells[:1], configs[1:])
        worst = {k: max(worst[k], worst2[k]) for k in worst}
        run_bn_precision(lines, device)

    laptop_cfg, rows = run_side_by_side(lines, "laptop", data, device, sampled[:n_laptop], n_ref=n_laptop)
    summary = report_side_by_side(lines, "laptop", laptop_cfg, rows, device)

    paper = None
    need_gb = 17.0 if args.paper_macro == "cifar10" else 9.0  # ~1.85 GB at batch 32 (cifar10 macro): ~15 GB at 256
    if device.type == "cpu" and not args.no_paper and not quick and mem_available_gb() < need_gb:
        out(
            lines,
            f"Paper profile on the CPU skipped: {mem_available_gb():.1f} GB available, about {need_gb:.0f} GB needed.",
        )
        out(lines)
        args.no_paper = True
    if not args.no_paper and not (quick and device.type == "cpu" and args.paper_candidates is None):
        paper_cells = [Genotype.from_str(c) for c in args.paper_cell] if args.paper_cell else sampled[:n_paper]
        paper_data = dataclasses.replace(
            data,
            info=dataclasses.replace(
                data.info,
                macro=args.paper_macro,
                classes=tuple(f"class{i}" for i in range(100 if args.paper_macro == "cifar100" else 10)),
            ),
        )
        warmup = 2 if device.type == "cuda" else 0
        paper = run_paper(lines, paper_data, ref_dataset, device, paper_cells, warmup, n_paper_ref, with_bare=True)

    if args.profile:
        run_profile(lines, "laptop", data, ref_dataset, device, sampled[0], KERNEL_SETS[0])
        if device.type == "cuda":
            run_profile(lines, "paper", data, ref_dataset, device, sampled[0], KERNEL_SETS[0], with_ref=False)

    out(lines, "### Targets")
    out(lines)
    if worst is not None:
        out(
            lines,
            f"- Same scores for the same weights and batch: max relative difference {worst['NCHW']:.1e} "
            f"(NCHW reference), {worst['channels_last']:.1e} (channels-last reference).",
        )
    for ks, s in summary.items():
        out(
            lines,
            f"- laptop {ks}: engine {s['speed']:.2f}x faster than the reference (target >= 3x: "
            f"{'met' if s['speed'] >= 3 else 'NOT met'}); scoring / bare conv {s['overhead']:.2f}x.",
        )
    if paper:
        for ks, s in paper.items():
            line = f"- paper {ks} on {device.type}: {s['engine']:.3f} s/candidate ({1 / s['engine']:.3f} cand/s)"
            if device.type == "cuda":
                line += f" (target < 0.1 s on an H100: {'met' if s['engine'] < 0.1 else 'NOT met'})"
            if not np.isnan(s["overhead"]):
                line += f"; scoring / bare conv {s['overhead']:.2f}x (target < 1.5x: {'met' if s['overhead'] < 1.5 else 'NOT met'})"
            if not np.isnan(s["speed"]):
                line += f"; {s['speed']:.2f}x faster than the reference" + (
                    f" (target >= 2.5x: {'met' if s['speed'] >= 2.5 else 'NOT met'})" if device.type == "cpu" else ""
                )
            out(lines, line + ".")
    out(lines)
    out(lines, f"Load average at end: {loadavg()}; total bench time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
